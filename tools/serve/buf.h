/* A growable byte buffer (text under construction, token ids). */
#ifndef MAMBA_SERVE_BUF_H
#define MAMBA_SERVE_BUF_H

#include <stddef.h>

typedef struct serve_buf {
    char *data;
    size_t len, cap;
} serve_buf;

/* Append n bytes (keeping a NUL after them); 0 when out of memory. */
int serve_buf_add(serve_buf *b, const void *data, size_t n);
int serve_buf_addf(serve_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void serve_buf_free(serve_buf *b);

#endif
