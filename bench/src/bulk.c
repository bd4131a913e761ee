/* Bulk TCP throughput through one connection.
 *
 *   bulk sink PORT MAXCONNS          accept, read to EOF, answer the byte count (8 bytes), close;
 *                                    exits after MAXCONNS connections
 *   bulk send HOST:PORT BYTES SECS   send BYTES (or stop after SECS), half-close, wait for the count;
 *                                    prints one JSON line
 */
#include "common.h"

#define CHUNK (256 * 1024)

static int sink(int port, int maxconns) {
    int lfd = listen_on(port);
    char *buf = malloc(CHUNK);
    if (!buf) die("malloc");
    printf("listening %d\n", port);
    fflush(stdout);
    for (int i = 0; i < maxconns; i++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) die("accept");
        uint64_t total = 0;
        for (;;) {
            ssize_t n = read(fd, buf, CHUNK);
            if (n > 0) {
                total += (uint64_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            break;
        }
        (void)!write(fd, &total, sizeof total);
        close(fd);
    }
    return 0;
}

static void on_alarm(int sig) {
    (void)sig;
    fprintf(stderr, "bulk: time limit reached before the sink answered\n");
    _exit(3);
}

static int send_bulk(const char *addr, uint64_t bytes, double secs) {
    struct sockaddr_in sa;
    parse_addr(addr, &sa);
    char *buf = malloc(CHUNK);
    if (!buf) die("malloc");
    memset(buf, 'x', CHUNK);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)secs + 10);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    double t0 = now_s();
    double deadline = t0 + secs;
    uint64_t sent = 0;
    unsigned iter = 0;
    while (sent < bytes) {
        size_t want = CHUNK;
        if (bytes - sent < want) want = (size_t)(bytes - sent);
        ssize_t n = write(fd, buf, want);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        sent += (uint64_t)n;
        if ((++iter & 63) == 0 && now_s() > deadline) break;
    }
    shutdown(fd, SHUT_WR);
    uint64_t got = 0;
    size_t have = 0;
    while (have < sizeof got) {
        ssize_t n = read(fd, (char *)&got + have, sizeof got - have);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            fprintf(stderr, "bulk: connection closed before the count arrived\n");
            return 1;
        }
        have += (size_t)n;
    }
    double dt = now_s() - t0;
    close(fd);
    printf("{\"bytes\": %llu, \"received\": %llu, \"seconds\": %.6f, \"gib_per_s\": %.4f}\n",
           (unsigned long long)sent, (unsigned long long)got, dt,
           (double)got / dt / (1024.0 * 1024.0 * 1024.0));
    return got == sent ? 0 : 1;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 4 && strcmp(argv[1], "sink") == 0) return sink(atoi(argv[2]), atoi(argv[3]));
    if (argc == 5 && strcmp(argv[1], "send") == 0)
        return send_bulk(argv[2], strtoull(argv[3], NULL, 10), atof(argv[4]));
    fprintf(stderr, "usage: bulk sink PORT MAXCONNS | bulk send HOST:PORT BYTES SECS\n");
    return 2;
}
