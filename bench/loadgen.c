// loadgen: an HTTP/1.1 load generator for Unix sockets (one thread, epoll), and a trivial server to measure its
// own ceiling. Built by scripts/bench with `gcc -O2 -o loadgen bench/loadgen.c`.
//
//   loadgen --socket PATH [--path /v1/tokens/x] [--connections N] [--duration S] [--warmup S]
//           [--mode keepalive|close] [--expect SUBSTRING] [--label TEXT]
//       Keeps N connections busy for S seconds (after S warm-up seconds that are not counted), one request in
//       flight per connection. keepalive: requests follow each other on the same connection; close: a new
//       connection per request ("Connection: close"; the latency then includes connect). Every response is
//       validated: status 200, a Content-Length, a complete body, and SUBSTRING in the body. Prints one JSON
//       object: requests, req/s, latency percentiles (p50/p99/p99.9/max, µs, exact: every sample is kept), errors
//       by kind, and the client's own CPU use (a client near 1.0 of its core would be the bottleneck).
//
//   loadgen --serve PATH [--body TEXT]
//       Answers every request on a Unix socket with a fixed 200 JSON response (keep-alive unless the request says
//       "Connection: close") until SIGTERM/SIGINT: the ceiling of the generator against a server that does nothing.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 65536

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static struct sockaddr_un unix_address(const char *path) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "socket path too long: %s\n", path);
        exit(2);
    }
    strcpy(a.sun_path, path);
    return a;
}

// ---------------------------------------------------------------------------------------------------- server --

static volatile sig_atomic_t stopping;
static void on_stop(int sig) { (void)sig; stopping = 1; }

#define SERVE_BUF_SIZE 8192

struct sconn {
    int fd;
    size_t len;
    struct sconn *next_free; // closed connections are reused: no allocation per connection
    char buf[SERVE_BUF_SIZE];
};

static struct sconn *free_sconns;

static void close_sconn(struct sconn *c) {
    close(c->fd);
    c->next_free = free_sconns;
    free_sconns = c;
}

static int serve(const char *path, const char *body) {
    char response[8192];
    int rlen = snprintf(response, sizeof response,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                        strlen(body), body);
    if (rlen <= 0 || rlen >= (int)sizeof response) die("response too long");
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    unlink(path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = unix_address(path);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1024) < 0) die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening\n");
    fflush(stdout);
    struct epoll_event events[256];
    while (!stopping) {
        int n = epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < n; i++) {
            struct sconn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct sconn *nc = free_sconns;
                    if (nc) free_sconns = nc->next_free;
                    else if (!(nc = malloc(sizeof *nc))) die("malloc");
                    nc->fd = fd;
                    nc->len = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, SERVE_BUF_SIZE - 1 - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close_sconn(c);
                continue;
            }
            c->len += (size_t)r;
            c->buf[c->len] = 0;
            int close_after = 0;
            char *end;
            while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) { // requests without bodies
                *end = 0;
                if (strcasestr(c->buf, "\r\nconnection: close") != NULL) close_after = 1;
                if (write(c->fd, response, (size_t)rlen) != rlen) close_after = 1;
                size_t used = (size_t)(end + 4 - c->buf);
                memmove(c->buf, end + 4, c->len - used + 1);
                c->len -= used;
            }
            if (close_after || c->len >= SERVE_BUF_SIZE - 1) close_sconn(c);
        }
    }
    unlink(path);
    return 0;
}

// ---------------------------------------------------------------------------------------------------- client --

enum { E_CONNECT, E_IO, E_EOF, E_PARSE, E_STATUS, E_BODY, E_KINDS };
static const char *error_names[E_KINDS] = {"connect", "io", "eof", "parse", "status", "body"};

struct conn {
    int fd;
    uint64_t started; // when the request began (before connect in close mode)
    size_t sent;
    size_t len;
    char buf[BUF_SIZE];
};

struct run {
    struct sockaddr_un addr;
    int ep;
    int close_mode;
    const char *request;
    size_t request_len;
    const char *expect;
    uint64_t measure_from, measure_until;
    uint32_t *samples; // latency in ns (clamped to ~4.29 s), measured requests only
    size_t nsamples, capacity;
    uint64_t errors[E_KINDS];
    uint64_t bytes;
};

static void record(struct run *r, uint64_t started, uint64_t done) {
    if (started < r->measure_from || done > r->measure_until) return;
    if (r->nsamples == r->capacity) {
        r->capacity = r->capacity ? r->capacity * 2 : 1 << 20;
        r->samples = realloc(r->samples, r->capacity * sizeof *r->samples);
        if (!r->samples) die("realloc");
    }
    uint64_t d = done - started;
    r->samples[r->nsamples++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void error(struct run *r, int kind, uint64_t t) {
    if (t >= r->measure_from && t <= r->measure_until) r->errors[kind]++;
}

static int open_conn(struct run *r, struct conn *c) {
    // A blocking connect (it completes at once on a Unix socket unless the backlog is full), then non-blocking.
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    if (connect(c->fd, (struct sockaddr *)&r->addr, sizeof r->addr) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void drop_conn(struct conn *c) {
    if (c->fd >= 0) close(c->fd); // closing removes it from the epoll set
    c->fd = -1;
}

// Starts the next request on c (opening a connection when there is none); 0 when it was sent or is being sent.
static int start_request(struct run *r, struct conn *c) {
    c->started = now_ns();
    c->sent = 0;
    c->len = 0;
    if (c->fd < 0 && open_conn(r, c) < 0) {
        error(r, E_CONNECT, c->started);
        return -1;
    }
    ssize_t w = write(c->fd, r->request, r->request_len);
    if (w < 0 && errno != EAGAIN) {
        error(r, E_IO, c->started);
        drop_conn(c);
        return -1;
    }
    c->sent = w > 0 ? (size_t)w : 0;
    if (c->sent < r->request_len) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

// 1: a complete valid response (2: and the server closes the connection after it); 0: incomplete; negative: an
// error kind (negated).
static int parse_response(struct run *r, struct conn *c) {
    c->buf[c->len] = 0;
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) return c->len >= BUF_SIZE - 1 ? -E_PARSE : 0;
    size_t header_len = (size_t)(end + 4 - c->buf);
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    if (cl == NULL || cl > end) return -E_PARSE;
    size_t body_len = strtoul(cl + 17, NULL, 10);
    if (header_len + body_len > BUF_SIZE - 1) return -E_PARSE;
    if (c->len < header_len + body_len) return 0;
    if (c->len > header_len + body_len) return -E_PARSE; // nothing was pipelined, so nothing may follow
    if (strncmp(c->buf, "HTTP/1.1 200 ", 13) != 0) return -E_STATUS;
    if (r->expect && memmem(end + 4, body_len, r->expect, strlen(r->expect)) == NULL) return -E_BODY;
    *end = 0;
    return strcasestr(c->buf, "\r\nconnection: close") ? 2 : 1;
}

static void on_event(struct run *r, struct conn *c, uint32_t events, int running) {
    if (events & EPOLLOUT) {
        ssize_t w = write(c->fd, r->request + c->sent, r->request_len - c->sent);
        if (w > 0) c->sent += (size_t)w;
        if (c->sent == r->request_len) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    ssize_t n = read(c->fd, c->buf + c->len, BUF_SIZE - 1 - c->len);
    if (n < 0 && errno == EAGAIN) return;
    uint64_t t = now_ns();
    int result;
    if (n < 0) result = -E_IO;
    else if (n == 0) result = -E_EOF;
    else {
        c->len += (size_t)n;
        r->bytes += (uint64_t)n;
        result = parse_response(r, c);
        if (result == 0) return;
    }
    if (result > 0) record(r, c->started, t);
    else error(r, -result, c->started);
    if (result != 1 || r->close_mode) drop_conn(c);
    if (running) start_request(r, c);
    else drop_conn(c);
}

static int compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(struct run *r, double p) {
    if (r->nsamples == 0) return 0;
    size_t i = (size_t)(p * (double)(r->nsamples - 1) + 0.5);
    return r->samples[i] / 1000.0;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static int load(const char *socket_path, const char *path, int connections, double duration, double warmup,
                int close_mode, const char *expect, const char *label) {
    signal(SIGPIPE, SIG_IGN);
    struct run r = {.addr = unix_address(socket_path), .close_mode = close_mode, .expect = expect};
    char request[2048];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", path,
             close_mode ? "Connection: close\r\n" : "");
    r.request = request;
    r.request_len = strlen(request);
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *conns = calloc((size_t)connections, sizeof *conns);
    uint64_t start = now_ns();
    r.measure_from = start + (uint64_t)(warmup * 1e9);
    r.measure_until = r.measure_from + (uint64_t)(duration * 1e9);
    double cpu_at_start = 0;
    int measuring = 0;
    for (int i = 0; i < connections; i++) {
        conns[i].fd = -1;
        start_request(&r, &conns[i]);
    }
    struct epoll_event events[1024];
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= r.measure_from) {
            cpu_at_start = cpu_seconds();
            measuring = 1;
        }
        int running = t < r.measure_until;
        if (!running) break;
        int n = epoll_wait(r.ep, events, 1024, 100);
        for (int i = 0; i < n; i++) on_event(&r, events[i].data.ptr, events[i].events, 1);
        for (int i = 0; i < connections; i++) // connections whose connect failed: try again (after 100 ms at most)
            if (conns[i].fd < 0 && n == 0) start_request(&r, &conns[i]);
    }
    double cpu = cpu_seconds() - cpu_at_start;
    for (int i = 0; i < connections; i++) drop_conn(&conns[i]);
    qsort(r.samples, r.nsamples, sizeof *r.samples, compare_u32);
    uint64_t errors = 0;
    for (int k = 0; k < E_KINDS; k++) errors += r.errors[k];
    printf("{\"label\": \"%s\", \"mode\": \"%s\", \"connections\": %d, \"duration_s\": %.3f, \"requests\": %zu, "
           "\"rps\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"errors\": %llu, \"error_kinds\": {",
           label, close_mode ? "close" : "keepalive", connections, duration, r.nsamples, r.nsamples / duration,
           percentile_us(&r, 0.50), percentile_us(&r, 0.99), percentile_us(&r, 0.999),
           r.nsamples ? r.samples[r.nsamples - 1] / 1000.0 : 0, (unsigned long long)errors);
    for (int k = 0; k < E_KINDS; k++)
        printf("%s\"%s\": %llu", k ? ", " : "", error_names[k], (unsigned long long)r.errors[k]);
    printf("}, \"client_cpu\": %.3f}\n", cpu / duration);
    free(r.samples);
    free(conns);
    return 0;
}

int main(int argc, char **argv) {
    const char *socket_path = NULL, *serve_path = NULL, *path = "/", *expect = NULL, *label = "";
    const char *body = "{\"access_token\":\"x\",\"token_type\":\"Bearer\",\"expires_in\":3600}";
    int connections = 1, close_mode = 0;
    double duration = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) goto usage;
        if (!strcmp(a, "--socket")) socket_path = v;
        else if (!strcmp(a, "--serve")) serve_path = v;
        else if (!strcmp(a, "--body")) body = v;
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--expect")) expect = v;
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--connections")) connections = atoi(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--mode") && !strcmp(v, "keepalive")) close_mode = 0;
        else if (!strcmp(a, "--mode") && !strcmp(v, "close")) close_mode = 1;
        else goto usage;
        i++;
    }
    if (serve_path) return serve(serve_path, body);
    if (socket_path && connections > 0 && duration > 0)
        return load(socket_path, path, connections, duration, warmup, close_mode, expect, label);
usage:
    fprintf(stderr, "usage: loadgen --socket PATH [--path P] [--connections N] [--duration S] [--warmup S] "
                    "[--mode keepalive|close] [--expect TEXT] [--label TEXT]\n       loadgen --serve PATH [--body TEXT]\n");
    return 2;
}
