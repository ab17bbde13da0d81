/* A small HTTP/1.1 client over plain sockets, for the server's load generator
 * (mamba-bench --mode=serve) and its tests: one request a connection (Connection: close),
 * bodies de-chunked, server-sent events split into their data. */
#ifndef MAMBA_HTTP_CLIENT_H
#define MAMBA_HTTP_CLIENT_H

#include <stddef.h>

typedef struct http_conn http_conn;

/* Connect and send the request; extra_headers: "Name: value\r\n" lines, or NULL. NULL with the
 * reason in err when it cannot. Every later read waits at most timeout_s. */
http_conn *http_send(const char *host, int port, const char *method, const char *path, const char *extra_headers,
                     const void *body, size_t len, double timeout_s, char *err, size_t err_len);
/* The same, holding back the body's last byte until http_release (for tests that start many
 * requests at the same moment). */
http_conn *http_send_held(const char *host, int port, const char *method, const char *path, const char *extra_headers,
                          const void *body, size_t len, double timeout_s, char *err, size_t err_len);
int http_release(http_conn *c);
/* The status line and headers: the status, or -1. */
int http_read_head(http_conn *c);
/* A response header's value (case-insensitive name), or NULL; after http_read_head. */
const char *http_header(const http_conn *c, const char *name, char *buf, size_t cap);
/* Body bytes, de-chunked: the number read, 0 at the end, -1 on an error or timeout. */
long http_read_body(http_conn *c, char *buf, size_t cap);
/* The data of the next server-sent event (malloc'd, NUL-terminated): 1, or 0 at the end, -1 on
 * an error. */
int http_next_event(http_conn *c, char **data);
/* The socket, for tests that cut the connection. */
int http_fd(const http_conn *c);
void http_close(http_conn *c);

/* A whole exchange: the status (or -1) and the body (malloc'd, NUL-terminated). */
int http_fetch(const char *host, int port, const char *method, const char *path, const char *extra_headers,
               const char *body, size_t len, char **out, size_t *out_len, double timeout_s);

#endif
