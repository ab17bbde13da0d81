/* The growable buffer: doubling, always NUL-terminated. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(serve_buf *b, size_t extra)
{
    if (b->cap - b->len > extra) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > ((size_t)-1) / 2) return 0;
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) return 0;
    b->data = d;
    b->cap = cap;
    return 1;
}

int serve_buf_add(serve_buf *b, const void *data, size_t n)
{
    if (!reserve(b, n)) return 0;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
    return 1;
}

int serve_buf_addf(serve_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n)) return 0;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 1;
}

void serve_buf_free(serve_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
