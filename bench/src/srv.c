/* Fast single-threaded epoll real server for the benchmarks.
 *
 *   srv MODE PORT LIFETIME_SECS
 *
 * MODE: echo  - TCP echo
 *       http  - HTTP/1.1 keep-alive, answers every request head with a small 200 (pipelining ok)
 *       ws    - HTTP/1.1 WebSocket upgrade (RFC 6455 accept key), then echoes every frame unmasked
 * Exits by itself after LIFETIME_SECS.
 */
#include "common.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <strings.h>
#include <sys/epoll.h>

enum { M_ECHO, M_HTTP, M_WS };
#define MAX_IN (4 * 1024 * 1024)
#define READ_SZ (256 * 1024)

static const char HTTP_RESP[] =
    "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world\n";

typedef struct {
    int fd;
    int upgraded;
    int closing; /* close after output drains */
    int want_out;
    char *in;
    size_t in_start, in_end, in_cap;
    char *out;
    size_t out_start, out_end, out_cap;
} conn_t;

static int mode;
static int epfd;

static void reserve(char **buf, size_t *start, size_t *end, size_t *cap, size_t more) {
    if (*start > 0 && *end + more > *cap) {
        memmove(*buf, *buf + *start, *end - *start);
        *end -= *start;
        *start = 0;
    }
    if (*end + more > *cap) {
        size_t nc = *cap ? *cap : 16384;
        while (nc < *end + more) nc *= 2;
        *buf = realloc(*buf, nc);
        if (!*buf) die("realloc");
        *cap = nc;
    }
}

static void out_append(conn_t *c, const void *p, size_t n) {
    reserve(&c->out, &c->out_start, &c->out_end, &c->out_cap, n);
    memcpy(c->out + c->out_end, p, n);
    c->out_end += n;
}

static void conn_free(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static void set_interest(conn_t *c) {
    int want_out = c->out_end > c->out_start;
    if (want_out == c->want_out) return;
    c->want_out = want_out;
    struct epoll_event ev = {.events = want_out ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Returns -1 on error (close), 0 otherwise. */
static int flush_out(conn_t *c) {
    while (c->out_end > c->out_start) {
        ssize_t n = write(c->fd, c->out + c->out_start, c->out_end - c->out_start);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            return -1;
        }
        c->out_start += (size_t)n;
    }
    c->out_start = c->out_end = 0;
    return 0;
}

static char *find_head_end(char *p, size_t n) { return memmem(p, n, "\r\n\r\n", 4); }

static int ws_handshake(conn_t *c, char *head, size_t len) {
    const char *guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char *line = head, *end = head + len;
    char key[128] = {0};
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) break;
        size_t ll = (size_t)(nl - line);
        if (ll > 18 && strncasecmp(line, "Sec-WebSocket-Key:", 18) == 0) {
            char *v = line + 18;
            while (*v == ' ') v++;
            size_t vl = (size_t)(nl - v);
            while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' ')) vl--;
            if (vl < 100) memcpy(key, v, vl);
        }
        line = nl + 1;
    }
    if (!key[0]) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        out_append(c, bad, sizeof bad - 1);
        c->closing = 1;
        return 0;
    }
    char cat[200];
    int cl = snprintf(cat, sizeof cat, "%s%s", key, guid);
    unsigned char dig[SHA_DIGEST_LENGTH];
    SHA1((unsigned char *)cat, (size_t)cl, dig);
    char acc[64];
    EVP_EncodeBlock((unsigned char *)acc, dig, SHA_DIGEST_LENGTH);
    char resp[256];
    int rl = snprintf(resp, sizeof resp,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: %s\r\n\r\n",
                      acc);
    out_append(c, resp, (size_t)rl);
    c->upgraded = 1;
    return 0;
}

/* Consume complete frames from the input; echo them unmasked. */
static void ws_frames(conn_t *c) {
    for (;;) {
        unsigned char *p = (unsigned char *)c->in + c->in_start;
        size_t avail = c->in_end - c->in_start;
        if (avail < 2) return;
        int op = p[0] & 0x0f;
        int masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (avail < 4) return;
            plen = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (plen == 127) {
            if (avail < 10) return;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | p[2 + i];
            hl = 10;
        }
        size_t mk = hl;
        if (masked) hl += 4;
        if (plen > MAX_IN) {
            c->closing = 1;
            return;
        }
        if (avail < hl + plen) {
            reserve(&c->in, &c->in_start, &c->in_end, &c->in_cap, hl + plen - avail);
            return;
        }
        unsigned char *pl = p + hl;
        if (masked) { /* eight bytes at a time: the echo server must stay cheaper than the proxy under test */
            uint32_t m32;
            memcpy(&m32, p + mk, 4);
            uint64_t m64 = ((uint64_t)m32 << 32) | m32, w, i = 0;
            for (; i + 8 <= plen; i += 8) {
                memcpy(&w, pl + i, 8);
                w ^= m64;
                memcpy(pl + i, &w, 8);
            }
            for (; i < plen; i++) pl[i] ^= p[mk + (i & 3)];
        }
        unsigned char h[10];
        size_t ohl;
        h[0] = p[0];
        if (plen < 126) {
            h[1] = (unsigned char)plen;
            ohl = 2;
        } else if (plen < 65536) {
            h[1] = 126;
            h[2] = (unsigned char)(plen >> 8);
            h[3] = (unsigned char)plen;
            ohl = 4;
        } else {
            h[1] = 127;
            for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)(plen >> (56 - 8 * i));
            ohl = 10;
        }
        out_append(c, h, ohl);
        out_append(c, pl, (size_t)plen);
        c->in_start += hl + (size_t)plen;
        if (op == 8) {
            c->closing = 1;
            return;
        }
    }
}

static void process(conn_t *c) {
    if (mode == M_ECHO) {
        out_append(c, c->in + c->in_start, c->in_end - c->in_start);
        c->in_start = c->in_end = 0;
        return;
    }
    if (mode == M_HTTP || !c->upgraded) {
        for (;;) {
            char *s = c->in + c->in_start;
            size_t avail = c->in_end - c->in_start;
            char *e = find_head_end(s, avail);
            if (!e) {
                if (avail > 65536) c->closing = 1;
                break;
            }
            size_t hl = (size_t)(e - s) + 4;
            if (mode == M_HTTP) {
                out_append(c, HTTP_RESP, sizeof HTTP_RESP - 1);
            } else {
                ws_handshake(c, s, hl);
            }
            c->in_start += hl;
            if (mode == M_WS) break;
        }
    }
    if (mode == M_WS && c->upgraded) ws_frames(c);
    if (c->in_start == c->in_end) c->in_start = c->in_end = 0;
}

static void on_readable(conn_t *c) {
    for (int rounds = 0; rounds < 4; rounds++) {
        reserve(&c->in, &c->in_start, &c->in_end, &c->in_cap, READ_SZ);
        ssize_t n = read(c->fd, c->in + c->in_end, c->in_cap - c->in_end);
        if (n == 0) {
            conn_free(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            conn_free(c);
            return;
        }
        c->in_end += (size_t)n;
        process(c);
        if (c->out_end > c->out_start) break;
        if ((size_t)n < READ_SZ) break;
    }
    if (flush_out(c) < 0 || (c->closing && c->out_end == c->out_start)) {
        conn_free(c);
        return;
    }
    set_interest(c);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: srv echo|http|ws PORT LIFETIME_SECS\n");
        return 2;
    }
    if (!strcmp(argv[1], "echo")) mode = M_ECHO;
    else if (!strcmp(argv[1], "http")) mode = M_HTTP;
    else if (!strcmp(argv[1], "ws")) mode = M_WS;
    else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)atoi(argv[3]));
    int lfd = listen_on(atoi(argv[2]));
    set_nonblock(lfd);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening %s %s\n", argv[1], argv[2]);
    fflush(stdout);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                for (int k = 0; k < 256; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    set_nodelay(fd);
                    c = calloc(1, sizeof *c);
                    if (!c) die("calloc");
                    c->fd = fd;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c) < 0 || (c->closing && c->out_end == c->out_start)) {
                    conn_free(c);
                    continue;
                }
                set_interest(c);
                if (c->out_end == c->out_start) on_readable(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
}
