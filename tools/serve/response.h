/* The JSON bodies the server answers with, in OpenAI's shapes: errors, completions and chat
 * completions (whole, or as server-sent-event chunks), the model list, tokenize/detokenize.
 * Each returns a malloc'd NUL-terminated string, or NULL when out of memory. */
#ifndef MAMBA_SERVE_RESPONSE_H
#define MAMBA_SERVE_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "request.h"

/* What every completion object carries. */
typedef struct serve_reply_info {
    serve_kind kind;
    const char *id;           /* "cmpl-..." or "chatcmpl-..."                               */
    long long created;        /* Unix seconds                                               */
    const char *model;
    int return_tokens;        /* add the token ids (extension)                              */
} serve_reply_info;

/* {"error": {"message", "type", "param", "code"}} */
char *serve_json_error(const serve_error *e);
/* The whole answer: one choice with the text, its finish reason, and the usage. */
char *serve_json_completion(const serve_reply_info *info, const char *text, size_t len, const int32_t *tokens,
                            size_t n_tokens, const serve_result *r);
/* One streamed chunk: text (and tokens); finish_reason NULL until the last. Chat chunks carry a
 * delta; role_delta: the first, {"role": "assistant", "content": ""}. */
char *serve_json_chunk(const serve_reply_info *info, const char *text, size_t len, const int32_t *tokens,
                       size_t n_tokens, const char *finish_reason, int role_delta);
/* The usage chunk of stream_options.include_usage: no choices, the usage. */
char *serve_json_usage_chunk(const serve_reply_info *info, const serve_result *r);
char *serve_json_models(const char *model, long long created, size_t vocab, size_t slots);
char *serve_json_tokens(const int32_t *ids, size_t n);
char *serve_json_content(const char *text, size_t len);

#endif
