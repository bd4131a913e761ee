/* Shared helpers for the benchmark clients and servers (loopback only). */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void die(const char *what) {
    perror(what);
    exit(2);
}

static inline void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static inline void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Parse "host:port"; only 127.0.0.0/8 is accepted: traffic stays on loopback. */
static inline void parse_addr(const char *s, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) {
        fprintf(stderr, "bad address %s\n", s);
        exit(2);
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        exit(2);
    }
    if ((ntohl(sa->sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "refusing non-loopback address %s\n", host);
        exit(2);
    }
}

static inline int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

/* Latency histogram: 1 microsecond buckets up to 1 s, everything slower in the last bucket. */
#define HIST_BUCKETS 1000001
typedef struct {
    uint32_t *b;
    uint64_t n;
} hist_t;

static inline void hist_init(hist_t *h) {
    h->b = calloc(HIST_BUCKETS, sizeof(uint32_t));
    if (!h->b) die("calloc");
    h->n = 0;
}

static inline void hist_add(hist_t *h, uint64_t ns) {
    uint64_t us = ns / 1000;
    if (us >= HIST_BUCKETS) us = HIST_BUCKETS - 1;
    h->b[us]++;
    h->n++;
}

/* Percentile in microseconds. */
static inline double hist_pct(const hist_t *h, double p) {
    if (h->n == 0) return 0.0;
    uint64_t want = (uint64_t)((double)h->n * p / 100.0);
    if (want >= h->n) want = h->n - 1;
    uint64_t seen = 0;
    for (uint64_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > want) return (double)i + 0.5;
    }
    return (double)(HIST_BUCKETS - 1);
}

#endif
