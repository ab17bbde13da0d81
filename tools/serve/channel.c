/* The channel: the whole output so far under a mutex, a condition variable on the monotonic
 * clock for the reader, and the reader's offsets into it. */
#include "channel.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct serve_channel {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    serve_buf text;
    int32_t *tokens;
    size_t n_tokens, tokens_cap;
    int done, cancelled;
    serve_result result;
};

serve_channel *serve_channel_create(void)
{
    serve_channel *ch = calloc(1, sizeof *ch);
    if (!ch) return NULL;
    pthread_condattr_t a;
    int ok = pthread_condattr_init(&a) == 0;
    if (ok) {
        ok = pthread_condattr_setclock(&a, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&ch->cv, &a) == 0;
        pthread_condattr_destroy(&a);
    }
    if (!ok) {
        free(ch);
        return NULL;
    }
    if (pthread_mutex_init(&ch->mu, NULL) != 0) {
        pthread_cond_destroy(&ch->cv);
        free(ch);
        return NULL;
    }
    ch->refs = 1;
    return ch;
}

void serve_channel_ref(serve_channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    ch->refs++;
    pthread_mutex_unlock(&ch->mu);
}

void serve_channel_unref(serve_channel *ch)
{
    if (!ch) return;
    pthread_mutex_lock(&ch->mu);
    const int last = --ch->refs == 0;
    pthread_mutex_unlock(&ch->mu);
    if (!last) return;
    pthread_mutex_destroy(&ch->mu);
    pthread_cond_destroy(&ch->cv);
    serve_buf_free(&ch->text);
    free(ch->tokens);
    free(ch);
}

static int add_tokens(int32_t **v, size_t *n, size_t *cap, const int32_t *ids, size_t k)
{
    if (*n + k > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *n + k) c *= 2;
        int32_t *t = realloc(*v, c * sizeof *t);
        if (!t) return 0;
        *v = t;
        *cap = c;
    }
    if (k && ids) memcpy(*v + *n, ids, k * sizeof *ids);
    *n += k;
    return 1;
}

int serve_channel_emit(serve_channel *ch, const char *text, size_t len, const int32_t *tokens, size_t n_tokens)
{
    pthread_mutex_lock(&ch->mu);
    const int ok = serve_buf_add(&ch->text, text, len) && add_tokens(&ch->tokens, &ch->n_tokens, &ch->tokens_cap, tokens, n_tokens);
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
    return ok;
}

void serve_channel_finish(serve_channel *ch, const char *finish_reason, size_t prompt_tokens, size_t completion_tokens,
                          size_t cached_tokens)
{
    pthread_mutex_lock(&ch->mu);
    ch->result.finish_reason = finish_reason;
    ch->result.prompt_tokens = prompt_tokens;
    ch->result.completion_tokens = completion_tokens;
    ch->result.cached_tokens = cached_tokens;
    ch->done = 1;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
}

void serve_channel_fail(serve_channel *ch, const serve_error *err)
{
    pthread_mutex_lock(&ch->mu);
    ch->result.failed = 1;
    ch->result.error = *err;
    ch->done = 1;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
}

int serve_channel_cancelled(serve_channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    const int c = ch->cancelled;
    pthread_mutex_unlock(&ch->mu);
    return c;
}

void serve_channel_cancel(serve_channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    ch->cancelled = 1;
    pthread_mutex_unlock(&ch->mu);
}

int serve_channel_read(serve_channel *ch, serve_channel_reader *r, double timeout_s)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    const long long ns = until.tv_nsec + (long long)(timeout_s * 1e9);
    until.tv_sec += (time_t)(ns / 1000000000LL);
    until.tv_nsec = (long)(ns % 1000000000LL);
    r->text.len = 0;
    if (r->text.data) r->text.data[0] = 0;
    r->n_tokens = 0;
    pthread_mutex_lock(&ch->mu);
    while (!ch->done && ch->text.len == r->text_at && ch->n_tokens == r->tokens_at)
        if (pthread_cond_timedwait(&ch->cv, &ch->mu, &until) != 0) break;
    int rc = 0;
    if (ch->text.len > r->text_at || ch->n_tokens > r->tokens_at || ch->done) {
        rc = 1;
        if (!serve_buf_add(&r->text, ch->text.data ? ch->text.data + r->text_at : "", ch->text.len - r->text_at) ||
            !add_tokens(&r->tokens, &r->n_tokens, &r->tokens_cap, ch->tokens ? ch->tokens + r->tokens_at : NULL,
                        ch->n_tokens - r->tokens_at)) {
            rc = -1;
        } else {
            r->text_at = ch->text.len;
            r->tokens_at = ch->n_tokens;
            if (ch->done) {
                r->done = 1;
                r->result = ch->result;
            }
        }
    }
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

void serve_channel_reader_free(serve_channel_reader *r)
{
    serve_buf_free(&r->text);
    free(r->tokens);
    r->tokens = NULL;
    r->n_tokens = r->tokens_cap = 0;
}
