/* Request bodies of the server's endpoints: JSON in, a validated request out, or the
 * OpenAI-style error (status, type, param, message) that answers it. No model is needed:
 * token ids are checked against the model's range later, when the prompt is tokenized. */
#ifndef MAMBA_SERVE_REQUEST_H
#define MAMBA_SERVE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "chat_format.h"

#define SERVE_MAX_STOPS 4
#define SERVE_MAX_STOP_BYTES 256
#define SERVE_MAX_MESSAGES 4096
#define SERVE_MAX_PROMPT_IDS (1u << 20)

typedef enum serve_kind { SERVE_COMPLETION = 0, SERVE_CHAT } serve_kind;

typedef struct serve_error {
    int status;             /* the HTTP status: 400, 401, 404, 405, 413, 500, 501, 503   */
    const char *type;       /* "invalid_request_error", "authentication_error", ...      */
    char param[64];         /* the field at fault; "" for none (null in the JSON)         */
    char code[48];          /* "" for none                                                 */
    char message[320];
} serve_error;

/* Fill err; returns 0 so that callers can `return serve_fail(...)`. */
int serve_fail(serve_error *err, int status, const char *type, const char *param, const char *code,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

typedef struct serve_limits {
    int max_tokens;         /* the most max_tokens a request may ask for (and the default) */
} serve_limits;

typedef struct serve_request {
    serve_kind kind;
    /* completions: a text prompt (NUL-terminated, valid UTF-8) or token ids */
    char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids;
    size_t n_prompt_ids;
    /* chat: the messages (roles "system", "user", "assistant"; "developer" is read as system) */
    chat_message *messages;
    size_t n_messages;
    int max_tokens;
    double temperature, top_p, min_p;
    int top_k;
    int has_seed;
    uint64_t seed;
    char *stops[SERVE_MAX_STOPS];
    size_t n_stops;
    int stream;
    int include_usage;      /* stream_options.include_usage                               */
    int return_tokens;      /* extension: the generated token ids in each choice          */
    int ignore_eos;         /* extension: generate max_tokens even past the EOS token     */
} serve_request;

/* Parse and validate the body of POST /v1/completions or /v1/chat/completions. 1 on success
 * (free req with serve_request_free), 0 with err filled (req holds nothing). */
int serve_request_parse(const char *body, size_t len, serve_kind kind, const serve_limits *lim, serve_request *req,
                        serve_error *err);
void serve_request_free(serve_request *req);

/* POST /tokenize: {"content": string, "parse_special": bool?}. *content is malloc'd. */
int serve_parse_tokenize(const char *body, size_t len, char **content, size_t *content_len, int *parse_special,
                         serve_error *err);
/* POST /detokenize: {"tokens": [int, ...]}, ids >= 0 (their range is the tokenizer's). */
int serve_parse_detokenize(const char *body, size_t len, int32_t **ids, size_t *n, serve_error *err);

/* 1 when s[0..len) is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF);
 * else 0 with *bad the offset of the first invalid byte. */
int serve_utf8_valid(const char *s, size_t len, size_t *bad);

#endif
