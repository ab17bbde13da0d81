/* Decoding: each token's bytes (the ByteLevel decoder's), joined, then made UTF-8 the way Rust's
 * String::from_utf8_lossy makes it (each maximal invalid subpart becomes one U+FFFD). The same
 * converter runs incrementally for the streaming detokenizer: it holds back a trailing
 * sequence that may still complete, so that the pieces join to the one-shot result. */
#include <stdlib.h>
#include <string.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
static const uint8_t nothing[1]; /* the input of a flush */

/* Where converted text goes: a caller's buffer (counting past cap), or a growable one. */
typedef struct writer {
    char *buf;
    size_t cap, len;
    mb_buf *grow;
    int oom;
} writer;

static void put(writer *w, const void *p, size_t n)
{
    if (w->grow) {
        if (!mb_buf_put(w->grow, p, n)) w->oom = 1;
        return;
    }
    if (w->len < w->cap) memcpy(w->buf + w->len, p, n < w->cap - w->len ? n : w->cap - w->len);
    w->len += n;
}

/* At s (n > 0 bytes): > 0, a valid character of that many bytes; < 0, a maximal invalid
 * subpart of that many bytes; 0, a valid beginning that reaches the end of the bytes. */
static int utf8_step(const uint8_t *s, size_t n)
{
    const uint8_t b = s[0];
    if (b < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) need = 3;
    else if (b >= 0xF0 && b <= 0xF4) need = 4;
    else return -1;
    if (b == 0xE0) lo = 0xA0;
    else if (b == 0xED) hi = 0x9F;
    else if (b == 0xF0) lo = 0x90;
    else if (b == 0xF4) hi = 0x8F;
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) return 0;
        if (s[k] < lo || s[k] > hi) return -k;
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

typedef struct utf8_state {
    uint8_t hold[4];
    size_t n_hold;
} utf8_state;

/* Convert in[0, n) after what st holds; with final, what stays incomplete becomes U+FFFD. */
static void feed(utf8_state *st, const uint8_t *in, size_t n, writer *w, int final)
{
    size_t i = 0;
    if (st->n_hold) {
        uint8_t tmp[8];
        const size_t held = st->n_hold, extra = n < 4 ? n : 4;
        memcpy(tmp, st->hold, held);
        if (extra) memcpy(tmp + held, in, extra);
        const size_t tn = held + extra;
        size_t p = 0;
        while (p < held) {
            const int r = utf8_step(tmp + p, tn - p);
            if (r == 0) {
                /* only when all of in (fewer than 4 bytes) has joined the held ones */
                if (!final) {
                    memmove(st->hold, tmp + p, tn - p);
                    st->n_hold = tn - p;
                    return;
                }
                put(w, replacement, 3);
                p = tn;
                break;
            }
            if (r > 0) put(w, tmp + p, (size_t)r);
            else put(w, replacement, 3);
            p += (size_t)(r > 0 ? r : -r);
        }
        i = p - held;
        st->n_hold = 0;
    }
    while (i < n) {
        size_t a = i;
        while (a < n && in[a] < 0x80) a++;
        if (a > i) put(w, in + i, a - i);
        i = a;
        if (i >= n) break;
        const int r = utf8_step(in + i, n - i);
        if (r == 0) {
            if (final) {
                put(w, replacement, 3);
            } else {
                memcpy(st->hold, in + i, n - i);
                st->n_hold = n - i;
            }
            return;
        }
        if (r > 0) put(w, in + i, (size_t)r);
        else put(w, replacement, 3);
        i += (size_t)(r > 0 ? r : -r);
    }
}

static mamba_status_t bad_id(const mamba_tokenizer_t *tok, const char *what, size_t index, int32_t id)
{
    return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "%s: ids[%zu] = %d is not a token id (the vocab has %zu ids%s)",
                     what, index, (int)id, tok->n_ids,
                     id >= 0 && (size_t)id < tok->n_ids ? "; this one has no token" : "");
}

mamba_status_t mamba_detokenize(const mamba_tokenizer_t *tok, const int32_t *ids, size_t n, char *text, size_t cap,
                                size_t *len)
{
    if (len) *len = 0;
    if (!tok || !len || (!ids && n) || (!text && cap))
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_detokenize: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!mamba_token_bytes(tok, ids[i], NULL)) return bad_id(tok, "mamba_detokenize", i, ids[i]);
    writer w = {.buf = text, .cap = cap};
    utf8_state st = {{0}, 0};
    for (size_t i = 0; i < n; i++) {
        size_t bl;
        const char *b = mamba_token_bytes(tok, ids[i], &bl);
        feed(&st, (const uint8_t *)b, bl, &w, 0);
    }
    feed(&st, nothing, 0, &w, 1);
    *len = w.len;
    return MAMBA_OK;
}

struct mamba_detok_stream {
    const mamba_tokenizer_t *tok;
    utf8_state st;
    mb_buf out;
    size_t pushed;     /* ids pushed since the last flush, for messages */
};

mamba_status_t mamba_detok_stream_create(const mamba_tokenizer_t *tok, mamba_detok_stream_t **out)
{
    if (!tok || !out) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_detok_stream_create: NULL argument");
    *out = mb_calloc(1, sizeof **out);
    if (!*out) return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "mamba_detok_stream_create: out of memory");
    (*out)->tok = tok;
    return MAMBA_OK;
}

static mamba_status_t stream_feed(mamba_detok_stream_t *s, const char *b, size_t n, int final, const char **text,
                                  size_t *len)
{
    s->out.len = 0;
    /* room for everything: the output is at most 3 bytes per input byte, plus the held ones */
    if (!mb_buf_reserve(&s->out, 3 * (n + 4) + 1))
        return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "mamba_detok_stream: out of memory");
    writer w = {.grow = &s->out};
    feed(&s->st, (const uint8_t *)b, n, &w, final);
    *text = s->out.p;
    *len = s->out.len;
    return MAMBA_OK;
}

mamba_status_t mamba_detok_stream_push(mamba_detok_stream_t *s, int32_t id, const char **text, size_t *len)
{
    if (!s || !text || !len) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_detok_stream_push: NULL argument");
    *text = "";
    *len = 0;
    size_t n;
    const char *b = mamba_token_bytes(s->tok, id, &n);
    if (!b) return bad_id(s->tok, "mamba_detok_stream_push", s->pushed, id);
    s->pushed++;
    return stream_feed(s, b, n, 0, text, len);
}

mamba_status_t mamba_detok_stream_flush(mamba_detok_stream_t *s, const char **text, size_t *len)
{
    if (!s || !text || !len) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_detok_stream_flush: NULL argument");
    s->pushed = 0;
    return stream_feed(s, (const char *)nothing, 0, 1, text, len);
}

void mamba_detok_stream_free(mamba_detok_stream_t *s)
{
    if (!s) return;
    free(s->out.p);
    free(s);
}
