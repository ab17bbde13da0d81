/* What one request's generation sends from the decoding loop to the HTTP thread that answers
 * it: text and token ids as they come, then the end (finish reason and usage) or an error; and
 * back, a cancellation when the client is gone. Shared by reference counts: the HTTP thread's
 * and the loop's. */
#ifndef MAMBA_SERVE_CHANNEL_H
#define MAMBA_SERVE_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "request.h"

typedef struct serve_channel serve_channel;

typedef struct serve_result {
    const char *finish_reason;     /* "stop" or "length"; NULL while running or on failure */
    size_t prompt_tokens, completion_tokens, cached_tokens;
    int failed;
    serve_error error;
} serve_result;

/* A channel with one reference; NULL when out of memory. */
serve_channel *serve_channel_create(void);
void serve_channel_ref(serve_channel *ch);
void serve_channel_unref(serve_channel *ch);

/* The loop's side. emit: 0 when out of memory (the loop then ends the request). */
int serve_channel_emit(serve_channel *ch, const char *text, size_t len, const int32_t *tokens, size_t n_tokens);
void serve_channel_finish(serve_channel *ch, const char *finish_reason, size_t prompt_tokens, size_t completion_tokens,
                          size_t cached_tokens);
void serve_channel_fail(serve_channel *ch, const serve_error *err);
int serve_channel_cancelled(serve_channel *ch);

/* The HTTP thread's side. */
void serve_channel_cancel(serve_channel *ch);

typedef struct serve_channel_reader {
    size_t text_at, tokens_at;     /* how much has been taken                               */
    serve_buf text;                /* the text taken by the last read                        */
    int32_t *tokens;               /* the token ids taken by the last read                   */
    size_t n_tokens, tokens_cap;
    int done;                      /* the end has been taken: result is final                */
    serve_result result;
} serve_channel_reader;

/* Wait up to timeout_s for output past the reader's position or the end; take what is new
 * (replacing the reader's text and tokens). 1 when something was taken, 0 on timeout, -1 when
 * out of memory. */
int serve_channel_read(serve_channel *ch, serve_channel_reader *r, double timeout_s);
void serve_channel_reader_free(serve_channel_reader *r);

#endif
