/* TCP connection rate: connect, send 64 bytes, receive the 64-byte echo, close; CONC at a time.
 *
 *   connrate HOST:PORT CONC SECS MAXCOUNT
 *
 * Stops after SECS or MAXCOUNT completed connections, whichever first. Prints one JSON line.
 */
#include "common.h"

#include <sys/epoll.h>

#define MSG 64

typedef struct {
    int fd;
    int state; /* 0 connecting, 1 waiting echo */
    int got;
    uint64_t t0;
} slot_t;

static struct sockaddr_in sa;
static int epfd;
static uint64_t errors;

static void start(slot_t *s) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) die("socket");
    set_nodelay(s->fd);
    s->state = 0;
    s->got = 0;
    s->t0 = now_ns();
    int r = connect(s->fd, (struct sockaddr *)&sa, sizeof sa);
    if (r < 0 && errno != EINPROGRESS) {
        errors++;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: connrate HOST:PORT CONC SECS MAXCOUNT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    parse_addr(argv[1], &sa);
    int conc = atoi(argv[2]);
    double secs = atof(argv[3]);
    uint64_t maxcount = strtoull(argv[4], NULL, 10);
    alarm((unsigned)secs + 20);
    epfd = epoll_create1(0);
    slot_t *slots = calloc((size_t)conc, sizeof *slots);
    hist_t h;
    hist_init(&h);
    char msg[MSG], buf[MSG];
    memset(msg, 'c', MSG);
    double t0 = now_s(), deadline = t0 + secs;
    for (int i = 0; i < conc; i++) start(&slots[i]);
    uint64_t done = 0;
    int live = conc;
    int stopping = 0;
    struct epoll_event evs[512];
    while (live > 0) {
        int n = epoll_wait(epfd, evs, 512, 1000);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        if (!stopping && (now_s() > deadline || done >= maxcount)) stopping = 1;
        if (stopping && n <= 0) break;
        for (int i = 0; i < n; i++) {
            slot_t *s = evs[i].data.ptr;
            int fail = 0;
            if (s->state == 0) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || write(s->fd, msg, MSG) != MSG) {
                    fail = 1;
                } else {
                    s->state = 1;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
                    epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
                    continue;
                }
            } else {
                ssize_t r = read(s->fd, buf, MSG - s->got);
                if (r < 0 && errno == EAGAIN) continue;
                if (r <= 0) {
                    fail = 1;
                } else {
                    s->got += (int)r;
                    if (s->got < MSG) continue;
                    hist_add(&h, now_ns() - s->t0);
                    done++;
                }
            }
            if (fail) errors++;
            close(s->fd); /* epoll forgets closed fds */
            if (stopping) {
                live--;
                s->fd = -1;
            } else {
                start(s);
            }
        }
    }
    double dt = now_s() - t0;
    printf("{\"connections\": %llu, \"errors\": %llu, \"seconds\": %.4f, \"per_s\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f}\n",
           (unsigned long long)done, (unsigned long long)errors, dt, (double)done / dt, hist_pct(&h, 50),
           hist_pct(&h, 99));
    return 0;
}
