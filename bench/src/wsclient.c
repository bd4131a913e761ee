/* WebSocket load client (RFC 6455 client side: upgrade with Sec-WebSocket-Key, 101 and accept-key
 * check, masked frames), optionally over TLS (full handshake every connection, no resumption).
 *
 *   wsclient echo HOST:PORT CONC SIZE SECS MAXCOUNT [tls]
 *        CONC connections, each sends a SIZE-byte binary message and waits for its echo, repeatedly.
 *   wsclient conn HOST:PORT CONC SECS MAXCOUNT [tls]
 *        new connections: connect (+TLS handshake), upgrade, one 64-byte echo, close; CONC at a time.
 *   wsclient hold HOST:PORT N SECS [tls]
 *        open N tunnels (one echo each), print "READY N", hold them until stdin closes or SECS pass.
 *
 * Every mode stops by itself (time and count bounded) and prints one JSON line.
 */
#include "common.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>

enum { MODE_ECHO, MODE_CONN, MODE_HOLD };
enum { S_CONNECTING, S_TLS, S_UPGRADE_SEND, S_UPGRADE_RECV, S_SEND, S_RECV, S_IDLE, S_DEAD };

typedef struct {
    int fd;
    int state;
    SSL *ssl;
    unsigned interest;
    char req[512];
    size_t req_len, wpos;
    char head[1024];
    size_t head_len;
    char accept[64];
    size_t expect, got;
    uint64_t t_msg, t_conn;
    int echoes;
} conn_t;

static int mode, use_tls;
static struct sockaddr_in sa;
static int epfd;
static SSL_CTX *ctx;
static unsigned char *frame;
static size_t frame_len, echo_len;
static char scratch[256 * 1024];
static uint64_t errors, completed, opened_total;
static int all_open;
static hist_t hist;
static uint64_t key_counter;

static void b64(const unsigned char *in, int n, char *out) { EVP_EncodeBlock((unsigned char *)out, in, n); }

static void set_interest(conn_t *c, unsigned ev) {
    if (c->interest == ev) return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, c->interest ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
    c->interest = ev;
}

static void conn_close(conn_t *c) {
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->interest = 0;
    c->state = S_DEAD;
}

static void conn_open(conn_t *c) {
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    set_nodelay(c->fd);
    c->t_conn = now_ns();
    opened_total++;
    int r = connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
    if (r < 0 && errno != EINPROGRESS) errors++;
    c->state = S_CONNECTING;
    /* upgrade request with a fresh key */
    unsigned char raw[16];
    uint64_t k = ++key_counter * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 16; i++) raw[i] = (unsigned char)(k >> ((i % 8) * 8)) ^ (unsigned char)(i * 37);
    char key[32];
    b64(raw, 16, key);
    c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                  "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n",
                                  key);
    char cat[128];
    int cl = snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char dig[SHA_DIGEST_LENGTH];
    SHA1((unsigned char *)cat, (size_t)cl, dig);
    b64(dig, SHA_DIGEST_LENGTH, c->accept);
    set_interest(c, EPOLLOUT);
}

/* >0 bytes, 0 EOF, -1 would block (interest set), -2 error */
static ssize_t io_read(conn_t *c, void *buf, size_t n) {
    if (!c->ssl) {
        ssize_t r = read(c->fd, buf, n);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                set_interest(c, EPOLLIN);
                return -1;
            }
            return -2;
        }
        return r;
    }
    int r = SSL_read(c->ssl, buf, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { set_interest(c, EPOLLIN); return -1; }
    if (e == SSL_ERROR_WANT_WRITE) { set_interest(c, EPOLLOUT); return -1; }
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    return -2;
}

static ssize_t io_write(conn_t *c, const void *buf, size_t n) {
    if (!c->ssl) {
        ssize_t r = write(c->fd, buf, n);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                set_interest(c, EPOLLOUT);
                return -1;
            }
            return -2;
        }
        return r;
    }
    int r = SSL_write(c->ssl, buf, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { set_interest(c, EPOLLIN); return -1; }
    if (e == SSL_ERROR_WANT_WRITE) { set_interest(c, EPOLLOUT); return -1; }
    return -2;
}

/* Advance one connection as far as it can go without blocking. Returns 0 = alive, -1 = failed. */
static int drive(conn_t *c) {
    for (;;) {
        switch (c->state) {
        case S_CONNECTING: {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) return -1;
            if (use_tls) {
                c->ssl = SSL_new(ctx);
                SSL_set_fd(c->ssl, c->fd);
                SSL_set_tlsext_host_name(c->ssl, "localhost");
                SSL_set_connect_state(c->ssl);
                c->state = S_TLS;
            } else {
                c->state = S_UPGRADE_SEND;
            }
            break;
        }
        case S_TLS: {
            int r = SSL_do_handshake(c->ssl);
            if (r == 1) {
                c->state = S_UPGRADE_SEND;
                break;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) { set_interest(c, EPOLLIN); return 0; }
            if (e == SSL_ERROR_WANT_WRITE) { set_interest(c, EPOLLOUT); return 0; }
            return -1;
        }
        case S_UPGRADE_SEND: {
            ssize_t r = io_write(c, c->req + c->wpos, c->req_len - c->wpos);
            if (r == -1) return 0;
            if (r < 0) return -1;
            c->wpos += (size_t)r;
            if (c->wpos == c->req_len) {
                c->state = S_UPGRADE_RECV;
                c->head_len = 0;
            }
            break;
        }
        case S_UPGRADE_RECV: {
            /* read byte-exact up to the end of the head: the server sends nothing after the 101 unprompted */
            ssize_t r = io_read(c, c->head + c->head_len, sizeof c->head - 1 - c->head_len);
            if (r == -1) return 0;
            if (r <= 0) return -1;
            c->head_len += (size_t)r;
            c->head[c->head_len] = 0;
            char *end = strstr(c->head, "\r\n\r\n");
            if (!end) {
                if (c->head_len >= sizeof c->head - 1) return -1;
                break;
            }
            if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "wsclient: upgrade refused: %.60s\n", c->head);
                return -1;
            }
            if (!strcasestr(c->head, c->accept)) {
                fprintf(stderr, "wsclient: bad Sec-WebSocket-Accept\n");
                return -1;
            }
            if ((size_t)(end + 4 - c->head) != c->head_len) return -1; /* unexpected bytes after 101 */
            c->state = S_SEND;
            c->wpos = 0;
            c->t_msg = now_ns();
            break;
        }
        case S_SEND: {
            ssize_t r = io_write(c, frame + c->wpos, frame_len - c->wpos);
            if (r == -1) return 0;
            if (r < 0) return -1;
            c->wpos += (size_t)r;
            if (c->wpos == frame_len) {
                c->state = S_RECV;
                c->got = 0;
            }
            break;
        }
        case S_RECV: {
            size_t want = echo_len - c->got;
            if (want > sizeof scratch) want = sizeof scratch;
            ssize_t r = io_read(c, scratch, want);
            if (r == -1) return 0;
            if (r <= 0) return -1;
            if (c->got == 0 && (unsigned char)scratch[0] != 0x82) {
                fprintf(stderr, "wsclient: unexpected frame byte 0x%02x\n", (unsigned char)scratch[0]);
                return -1;
            }
            c->got += (size_t)r;
            if (c->got < echo_len) break;
            uint64_t t = now_ns();
            c->echoes++;
            if (mode == MODE_ECHO) {
                if (all_open) {
                    hist_add(&hist, t - c->t_msg);
                    completed++;
                }
                c->state = S_SEND;
                c->wpos = 0;
                c->t_msg = t;
                break;
            }
            if (mode == MODE_CONN) {
                hist_add(&hist, t - c->t_conn);
                completed++;
                if (c->ssl) SSL_shutdown(c->ssl); /* one close_notify, no wait */
                conn_close(c);
                return 1; /* finished cleanly */
            }
            /* hold */
            completed++;
            c->state = S_IDLE;
            set_interest(c, EPOLLIN);
            return 0;
        }
        case S_IDLE: {
            ssize_t r = io_read(c, scratch, sizeof scratch);
            if (r == -1) return 0;
            return -1; /* the peer closed or sent something: a held tunnel must stay silent */
        }
        default:
            return -1;
        }
    }
}

static void build_frame(size_t size) {
    size_t hl = size < 126 ? 2 : size < 65536 ? 4 : 10;
    frame_len = hl + 4 + size;
    echo_len = hl + size;
    frame = malloc(frame_len);
    frame[0] = 0x82; /* FIN + binary */
    if (size < 126) {
        frame[1] = 0x80 | (unsigned char)size;
    } else if (size < 65536) {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(size >> 8);
        frame[3] = (unsigned char)size;
    } else {
        frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) frame[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    }
    unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(frame + hl, mask, 4);
    for (size_t i = 0; i < size; i++) frame[hl + 4 + i] = (unsigned char)('a' + i % 26) ^ mask[i & 3];
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: see the comment at the top of wsclient.c\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int conc, maxcount = 0;
    size_t size = 64;
    double secs;
    int argi;
    if (!strcmp(argv[1], "echo") && argc >= 7) {
        mode = MODE_ECHO;
        conc = atoi(argv[3]);
        size = (size_t)atol(argv[4]);
        secs = atof(argv[5]);
        maxcount = atoi(argv[6]);
        argi = 7;
    } else if (!strcmp(argv[1], "conn") && argc >= 6) {
        mode = MODE_CONN;
        conc = atoi(argv[3]);
        secs = atof(argv[4]);
        maxcount = atoi(argv[5]);
        argi = 6;
    } else if (!strcmp(argv[1], "hold") && argc >= 5) {
        mode = MODE_HOLD;
        conc = atoi(argv[3]);
        secs = atof(argv[4]);
        argi = 5;
    } else {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    use_tls = argc > argi && !strcmp(argv[argi], "tls");
    parse_addr(argv[2], &sa);
    alarm((unsigned)secs + 60);
    if (use_tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    build_frame(size);
    hist_init(&hist);
    epfd = epoll_create1(0);
    conn_t *conns = calloc((size_t)conc, sizeof *conns);
    if (!conns) die("calloc");
    double t0 = now_s(), deadline = t0 + secs, t_open = t0;
    /* hold mode: open in waves so the listen backlog never overflows */
    int opened = 0, wave = mode == MODE_HOLD ? 200 : conc;
    int in_flight = 0;
    while (opened < conc && opened < wave) {
        conn_open(&conns[opened++]);
        in_flight++;
    }
    if (mode == MODE_CONN) all_open = 1;
    int live = opened, stopping = 0, ready_printed = 0, idle = 0;
    struct epoll_event evs[512];
    if (mode == MODE_HOLD) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &e);
    }
    while (live > 0) {
        int n = epoll_wait(epfd, evs, 512, 200);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        double t = now_s();
        if (!stopping && (t > deadline || (maxcount && completed >= (uint64_t)maxcount))) stopping = 1;
        if (stopping) break;
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) { /* stdin readable: EOF means release the tunnels */
                char b[64];
                if (read(0, b, sizeof b) <= 0) stopping = 1;
                continue;
            }
            if (c->state == S_DEAD) continue;
            int before = c->state;
            int r = drive(c);
            if (r == 0) {
                if (mode == MODE_HOLD && before != S_IDLE && c->state == S_IDLE) {
                    idle++;
                    in_flight--;
                    if (opened < conc) {
                        conn_open(&conns[opened++]);
                        in_flight++;
                        live++;
                    }
                }
                if (mode == MODE_ECHO && !all_open && before <= S_UPGRADE_RECV && c->state >= S_SEND) {
                    if (++idle == conc) {
                        all_open = 1;
                        t_open = now_s();
                    }
                }
                continue;
            }
            if (r < 0) {
                errors++;
                if (before == S_IDLE) idle--;
            }
            if (c->state != S_DEAD) conn_close(c);
            if (mode == MODE_CONN) {
                conn_open(c);
            } else if (mode == MODE_ECHO && r < 0) {
                if (errors > 1000) { fprintf(stderr, "wsclient: too many errors\n"); stopping = 1; break; }
                if (before <= S_UPGRADE_RECV) { live--; continue; }
                conn_open(c); /* reconnect; the echo loop resumes after the upgrade */
            } else {
                live--;
                if (before != S_IDLE) in_flight--;
                if (opened < conc) {
                    conn_open(&conns[opened++]);
                    in_flight++;
                    live++;
                }
            }
        }
        if (mode == MODE_HOLD && !ready_printed && opened == conc && in_flight == 0) {
            printf("READY %d\n", idle);
            fflush(stdout);
            ready_printed = 1;
        }
        if (mode == MODE_ECHO && !all_open && t - t0 > 10) {
            fprintf(stderr, "wsclient: only %d of %d connections upgraded in 10 s\n", idle, conc);
            break;
        }
    }
    double t_end = now_s();
    double span = t_end - (mode == MODE_ECHO ? t_open : t0);
    for (int i = 0; i < opened; i++)
        if (conns[i].state != S_DEAD && conns[i].fd >= 0) conn_close(&conns[i]);
    if (mode == MODE_HOLD) {
        printf("{\"held\": %d, \"errors\": %llu, \"seconds\": %.3f}\n", idle, (unsigned long long)errors,
               t_end - t0);
    } else {
        double rate = span > 0 ? (double)completed / span : 0;
        printf("{\"count\": %llu, \"errors\": %llu, \"seconds\": %.4f, \"per_s\": %.1f, "
               "\"mib_per_s\": %.2f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"connections\": %llu}\n",
               (unsigned long long)completed, (unsigned long long)errors, span, rate,
               mode == MODE_ECHO ? rate * (double)size * 2 / (1024.0 * 1024.0) : 0.0, hist_pct(&hist, 50),
               hist_pct(&hist, 99), (unsigned long long)opened_total);
    }
    return 0;
}
