/* A load generator that takes little CPU an answer, for the workers rows.

   On a 2-core machine the load generator shares the cores with the workers
   it drives: what it takes, two workers cannot use. wrk reads 8 KiB at a
   time and keeps a latency histogram; this keeps each connection's
   pipelined requests in flight, reads up to 1 MiB a system call, checks
   every answer's status line and frames it by its Content-Length (nothing
   else: the servers measured send no chunked answers), and counts.

   Built by bench/http/run.py (cc -O2); run by hand:
     loadgen HOST PORT CONNECTIONS SECONDS PIPELINE REQUEST_FILE NAP_US
   REQUEST_FILE holds one request's bytes, written PIPELINE times at once on
   each connection, again when all are answered. NAP_US: a pause before
   each wait for answers, in microseconds, so that answers gather and one
   read takes many (0: none). Prints one line:
     answers N errors E seconds S p50_ms A p99_ms B
      (latency: from a batch's write to the read that completed an answer,
   naps included).
   Exits 1 on a connection error or an answer it cannot frame. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (1 << 20)
#define HEAD_MAX 16384
#define SAMPLES_MAX (1 << 24)

typedef struct {
    int fd;
    int pending;           /* answers not yet complete */
    long body_left;        /* bytes of the current body still to come */
    int head_len;          /* bytes of the current head kept */
    char head[HEAD_MAX];
    double sent_at;
} Conn;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static char *batch;
static size_t batch_len;
static int pipeline;
static long answers, errors;
static float *samples;
static long sample_count;

static void send_batch(Conn *c) {
    size_t done = 0;
    while (done < batch_len) {
        ssize_t n = write(c->fd, batch + done, batch_len - done);
        if (n < 0) {
            if (errno == EAGAIN) continue; /* small batches: rare, brief */
            die("write");
        }
        done += (size_t)n;
    }
    c->pending = pipeline;
    c->sent_at = now();
}

/* The head is complete: check its status, find its Content-Length. */
static void head_done(Conn *c) {
    c->head[c->head_len] = 0;
    if (strncmp(c->head, "HTTP/1.1 2", 10) != 0) errors++;
    char *p = strcasestr(c->head, "\r\ncontent-length:");
    if (p == NULL) {
        fprintf(stderr, "answer without Content-Length:\n%s\n", c->head);
        exit(1);
    }
    c->body_left = strtol(p + 17, NULL, 10);
    c->head_len = 0;
}

static void answered(Conn *c, double at) {
    answers++;
    if (sample_count < SAMPLES_MAX) samples[sample_count++] = (float)(at - c->sent_at);
    if (--c->pending == 0) send_batch(c);
}

static void consume(Conn *c, const char *data, ssize_t n, double at) {
    while (n > 0) {
        if (c->body_left > 0) {
            long take = c->body_left < n ? c->body_left : n;
            c->body_left -= take;
            data += take;
            n -= take;
            if (c->body_left == 0) answered(c, at);
            continue;
        }
        /* In a head: keep bytes until the blank line (looked for from
           three bytes before the join, where it may straddle two reads). */
        int old = c->head_len;
        long take = HEAD_MAX - 1 - old;
        if (take > n) take = n;
        if (take > 2048) take = 2048; /* a head is short; a body is not kept */
        memcpy(c->head + old, data, (size_t)take);
        c->head_len = old + (int)take;
        int from = old >= 3 ? old - 3 : 0;
        char *end = memmem(c->head + from, (size_t)(c->head_len - from), "\r\n\r\n", 4);
        if (end == NULL) {
            if (c->head_len >= HEAD_MAX - 1) {
                fprintf(stderr, "head over %d bytes\n", HEAD_MAX);
                exit(1);
            }
            data += take;
            n -= take;
            continue;
        }
        int head_end = (int)(end - c->head) + 4;
        data += head_end - old;
        n -= head_end - old;
        c->head_len = head_end;
        head_done(c);
        if (c->body_left == 0) answered(c, at);
    }
}

static int compare(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: loadgen HOST PORT CONNECTIONS SECONDS PIPELINE REQUEST_FILE NAP_US\n");
        return 2;
    }
    int connections = atoi(argv[3]);
    double seconds = atof(argv[4]);
    pipeline = atoi(argv[5]);
    long nap_us = atol(argv[7]);
    FILE *file = fopen(argv[6], "rb");
    if (file == NULL) die("request file");
    char one[65536];
    size_t one_len = fread(one, 1, sizeof one, file);
    fclose(file);
    batch_len = one_len * (size_t)pipeline;
    batch = malloc(batch_len);
    for (int i = 0; i < pipeline; i++) memcpy(batch + one_len * (size_t)i, one, one_len);
    samples = malloc(sizeof(float) * SAMPLES_MAX);
    char *buffer = malloc(READ_SIZE);

    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1) die("host");
    int poll = epoll_create1(0);
    Conn *conns = calloc((size_t)connections, sizeof(Conn));
    for (int i = 0; i < connections; i++) {
        Conn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
        int yes = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(poll, EPOLL_CTL_ADD, c->fd, &event);
    }
    double began = now();
    for (int i = 0; i < connections; i++) send_batch(&conns[i]);
    struct epoll_event ready[256];
    double ended = began;
    struct timespec nap = {0, nap_us * 1000L};
    while ((ended = now()) - began < seconds) {
        if (nap_us > 0) nanosleep(&nap, NULL);
        int count = epoll_wait(poll, ready, 256, 100);
        double at = now();
        for (int i = 0; i < count; i++) {
            Conn *c = ready[i].data.ptr;
            ssize_t n = read(c->fd, buffer, READ_SIZE);
            if (n <= 0) {
                fprintf(stderr, "connection %s\n", n == 0 ? "closed by the server" : strerror(errno));
                return 1;
            }
            consume(c, buffer, n, at);
        }
    }
    qsort(samples, (size_t)sample_count, sizeof(float), compare);
    double p50 = sample_count ? samples[sample_count / 2] * 1e3 : 0;
    double p99 = sample_count ? samples[(long)(sample_count * 0.99)] * 1e3 : 0;
    printf("answers %ld errors %ld seconds %.3f p50_ms %.3f p99_ms %.3f\n", answers, errors,
           ended - began, p50, p99);
    return 0;
}
