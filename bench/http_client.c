/* The HTTP client: a buffered socket reader with a deadline per read, the head parsed into a
 * status and headers, chunked bodies decoded, SSE events gathered from "data:" lines. */
#include "http_client.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

struct http_conn {
    int fd;
    int timeout_ms;
    char buf[65536];
    size_t at, len;
    char head[16384];
    int chunked, ended;
    long long remaining;       /* of the current chunk, or of the body when its length is known; -1: until EOF */
    char *sse;                 /* body bytes not yet split into events */
    size_t sse_len, sse_cap;
    char held;                 /* the body's last byte, not sent yet (http_send_held) */
    int holding;
};

static http_conn *send_request(const char *host, int port, const char *method, const char *path,
                               const char *extra_headers, const void *body, size_t len, double timeout_s, int hold,
                               char *err, size_t err_len)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(err, err_len, "%s: %s", host, gai_strerror(gai));
        return NULL;
    }
    int fd = -1;
    for (const struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, err_len, "cannot connect to %s:%d: %s", host, port, strerror(errno));
        return NULL;
    }
    http_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->timeout_ms = (int)(timeout_s * 1000);
    char head[2048];
    const int n = snprintf(head, sizeof head,
                           "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s%s%s", method, path, host, port,
                           extra_headers ? extra_headers : "", body ? "Content-Type: application/json\r\n" : "", "");
    char length[64] = "";
    if (body) snprintf(length, sizeof length, "Content-Length: %zu\r\n", len);
    int ok = n > 0 && (size_t)n < sizeof head && send(fd, head, (size_t)n, MSG_NOSIGNAL) == n &&
             send(fd, length, strlen(length), MSG_NOSIGNAL) == (ssize_t)strlen(length) &&
             send(fd, "\r\n", 2, MSG_NOSIGNAL) == 2;
    /* a server may answer (413) and close before the whole body is sent: its answer is read */
    const size_t to_send = hold && body && len ? len - 1 : len;
    if (to_send < len) {
        c->held = ((const char *)body)[len - 1];
        c->holding = 1;
    }
    for (size_t sent = 0; ok && body && sent < to_send;) {
        const ssize_t k = send(fd, (const char *)body + sent, to_send - sent, MSG_NOSIGNAL);
        if (k <= 0) break;
        sent += (size_t)k;
    }
    if (!ok) {
        snprintf(err, err_len, "sending the request failed: %s", strerror(errno));
        http_close(c);
        return NULL;
    }
    return c;
}

http_conn *http_send(const char *host, int port, const char *method, const char *path, const char *extra_headers,
                     const void *body, size_t len, double timeout_s, char *err, size_t err_len)
{
    return send_request(host, port, method, path, extra_headers, body, len, timeout_s, 0, err, err_len);
}

http_conn *http_send_held(const char *host, int port, const char *method, const char *path, const char *extra_headers,
                          const void *body, size_t len, double timeout_s, char *err, size_t err_len)
{
    return send_request(host, port, method, path, extra_headers, body, len, timeout_s, 1, err, err_len);
}

int http_release(http_conn *c)
{
    if (!c->holding) return 1;
    c->holding = 0;
    return send(c->fd, &c->held, 1, MSG_NOSIGNAL) == 1;
}

/* More bytes into the buffer: 1, 0 at EOF, -1 on an error or timeout. */
static int fill(http_conn *c)
{
    if (c->at > 0) {
        memmove(c->buf, c->buf + c->at, c->len - c->at);
        c->len -= c->at;
        c->at = 0;
    }
    if (c->len == sizeof c->buf) return -1;
    struct pollfd p = {c->fd, POLLIN, 0};
    const int pr = poll(&p, 1, c->timeout_ms);
    if (pr <= 0) return -1;
    const ssize_t k = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (k < 0) return -1;
    c->len += (size_t)k;
    return k > 0;
}

/* A CRLF-ended line without its end (NUL-terminated in line): its length, or -1. */
static long read_line(http_conn *c, char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf + c->at, '\n', c->len - c->at);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->at));
            const size_t take = n + 1;
            if (n && c->buf[c->at + n - 1] == '\r') n--;
            if (n >= cap) return -1;
            memcpy(line, c->buf + c->at, n);
            line[n] = 0;
            c->at += take;
            return (long)n;
        }
        if (fill(c) <= 0) return -1;
    }
}

int http_read_head(http_conn *c)
{
    char line[8192];
    if (read_line(c, line, sizeof line) < 0) return -1;
    const char *sp = strchr(line, ' ');
    if (strncmp(line, "HTTP/", 5) != 0 || !sp) return -1;
    char *end;
    const long status = strtol(sp + 1, &end, 10);
    if (end == sp + 1 || status < 100 || status > 999) return -1;
    size_t h = 0;
    c->remaining = -1;
    for (;;) {
        const long n = read_line(c, line, sizeof line);
        if (n < 0) return -1;
        if (n == 0) break;
        if (h + (size_t)n + 2 < sizeof c->head) {
            memcpy(c->head + h, line, (size_t)n);
            h += (size_t)n;
            c->head[h++] = '\n';
        }
        if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strstr(line, "chunked")) c->chunked = 1;
        if (strncasecmp(line, "Content-Length:", 15) == 0) c->remaining = strtoll(line + 15, NULL, 10);
    }
    c->head[h] = 0;
    if (c->chunked) c->remaining = 0;
    else if (c->remaining == 0) c->ended = 1;
    return (int)status;
}

const char *http_header(const http_conn *c, const char *name, char *buf, size_t cap)
{
    const size_t n = strlen(name);
    for (const char *l = c->head; *l;) {
        const char *end = strchr(l, '\n');
        if (!end) break;
        if (strncasecmp(l, name, n) == 0 && l[n] == ':') {
            const char *v = l + n + 1;
            while (*v == ' ') v++;
            snprintf(buf, cap, "%.*s", (int)(end - v), v);
            return buf;
        }
        l = end + 1;
    }
    return NULL;
}

long http_read_body(http_conn *c, char *out, size_t cap)
{
    if (c->ended) return 0;
    if (c->chunked && c->remaining == 0) {
        char line[256];
        long n = read_line(c, line, sizeof line);
        if (n == 0) n = read_line(c, line, sizeof line); /* the CRLF after the previous chunk */
        if (n < 0) return -1;
        c->remaining = strtoll(line, NULL, 16);
        if (c->remaining == 0) {
            while (read_line(c, line, sizeof line) > 0) {
            }
            c->ended = 1;
            return 0;
        }
    }
    if (c->at == c->len) {
        const int f = fill(c);
        if (f < 0) return -1;
        if (f == 0) {
            c->ended = 1;
            return c->remaining > 0 ? -1 : 0;
        }
    }
    size_t n = c->len - c->at;
    if (n > cap) n = cap;
    if (c->remaining >= 0 && (long long)n > c->remaining) n = (size_t)c->remaining;
    memcpy(out, c->buf + c->at, n);
    c->at += n;
    if (c->remaining > 0) {
        c->remaining -= (long long)n;
        if (!c->chunked && c->remaining == 0) c->ended = 1;
    }
    return (long)n;
}

int http_next_event(http_conn *c, char **data)
{
    for (;;) {
        char *end = NULL;
        for (size_t i = 0; c->sse && i + 1 < c->sse_len; i++)
            if (c->sse[i] == '\n' && c->sse[i + 1] == '\n') {
                end = c->sse + i;
                break;
            }
        if (end) {
            const size_t n = (size_t)(end - c->sse);
            char *ev = malloc(n + 1);
            if (!ev) return -1;
            size_t k = 0;
            /* the data of every "data:" line, joined by newlines */
            for (const char *l = c->sse; l < end;) {
                const char *nl = memchr(l, '\n', (size_t)(end - l));
                const char *le = nl ? nl : end;
                if (le - l >= 5 && strncmp(l, "data:", 5) == 0) {
                    const char *v = l + 5;
                    if (v < le && *v == ' ') v++;
                    if (k) ev[k++] = '\n';
                    memcpy(ev + k, v, (size_t)(le - v));
                    k += (size_t)(le - v);
                }
                l = le + 1;
            }
            ev[k] = 0;
            memmove(c->sse, end + 2, c->sse_len - n - 2);
            c->sse_len -= n + 2;
            *data = ev;
            return 1;
        }
        char chunk[16384];
        const long k = http_read_body(c, chunk, sizeof chunk);
        if (k <= 0) return (int)k;
        if (c->sse_len + (size_t)k > c->sse_cap) {
            const size_t cap = 2 * (c->sse_len + (size_t)k);
            char *s = realloc(c->sse, cap);
            if (!s) return -1;
            c->sse = s;
            c->sse_cap = cap;
        }
        memcpy(c->sse + c->sse_len, chunk, (size_t)k);
        c->sse_len += (size_t)k;
    }
}

int http_fd(const http_conn *c) { return c->fd; }

void http_close(http_conn *c)
{
    if (!c) return;
    close(c->fd);
    free(c->sse);
    free(c);
}

int http_fetch(const char *host, int port, const char *method, const char *path, const char *extra_headers,
               const char *body, size_t len, char **out, size_t *out_len, double timeout_s)
{
    char err[256];
    *out = NULL;
    if (out_len) *out_len = 0;
    http_conn *c = http_send(host, port, method, path, extra_headers, body, len, timeout_s, err, sizeof err);
    if (!c) return -1;
    const int status = http_read_head(c);
    size_t n = 0, cap = 4096;
    char *b = malloc(cap);
    if (!b) {
        http_close(c);
        return -1;
    }
    long k = 0;
    while (status > 0) {
        if (n + 4096 > cap) {
            char *bigger = realloc(b, 2 * cap);
            if (!bigger) break;
            b = bigger;
            cap *= 2;
        }
        if ((k = http_read_body(c, b + n, cap - n - 1)) <= 0) break;
        n += (size_t)k;
    }
    http_close(c);
    b[n] = 0;
    *out = b;
    if (out_len) *out_len = n;
    return k < 0 ? -1 : status;
}
