/* mamba serve's request parser on arbitrary bodies, as each of its endpoints reads them
 * (completions, chat, tokenize, detokenize): a request it accepts must be within the limits it
 * promises (lengths, ranges, valid UTF-8, known roles), and one it refuses must carry a 4xx/5xx
 * status and a message. No model is needed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

static void check_text(const char *s, size_t n)
{
    if (!s || strlen(s) != n || !serve_utf8_valid(s, n, NULL)) abort();
}

static void check_refusal(const serve_error *e)
{
    if (e->status < 400 || e->status > 599 || !e->type || !e->message[0]) abort();
}

static void check_request(const serve_request *r, const serve_limits *lim)
{
    if (r->max_tokens < 1 || r->max_tokens > lim->max_tokens) abort();
    if (!(r->temperature >= 0 && r->temperature <= 2) || !(r->top_p >= 0 && r->top_p <= 1)) abort();
    if (!(r->min_p >= 0 && r->min_p <= 1) || r->top_k < 0) abort();
    if (r->n_stops > SERVE_MAX_STOPS) abort();
    for (size_t i = 0; i < r->n_stops; i++) {
        const size_t n = strlen(r->stops[i]);
        if (n == 0 || n > SERVE_MAX_STOP_BYTES) abort();
        check_text(r->stops[i], n);
    }
    if (r->kind == SERVE_CHAT) {
        if (r->n_messages == 0 || r->n_messages > SERVE_MAX_MESSAGES) abort();
        for (size_t i = 0; i < r->n_messages; i++) {
            if (!chat_role_known(r->messages[i].role)) abort();
            check_text(r->messages[i].content, r->messages[i].content_len);
        }
    } else if (r->prompt) {
        if (r->prompt_len == 0 || r->prompt_ids) abort();
        check_text(r->prompt, r->prompt_len);
    } else {
        if (r->n_prompt_ids == 0 || r->n_prompt_ids > SERVE_MAX_PROMPT_IDS) abort();
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] < 0) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    const serve_limits lim = {64};
    for (int kind = SERVE_COMPLETION; kind <= SERVE_CHAT; kind++) {
        serve_request r;
        serve_error e;
        if (serve_request_parse(body, size, (serve_kind)kind, &lim, &r, &e)) {
            if (r.kind != (serve_kind)kind) abort();
            check_request(&r, &lim);
            serve_request_free(&r);
        } else {
            check_refusal(&e);
        }
    }
    serve_error e;
    char *content;
    size_t len;
    int special;
    if (serve_parse_tokenize(body, size, &content, &len, &special, &e)) {
        check_text(content, len);
        free(content);
    } else {
        check_refusal(&e);
    }
    int32_t *ids;
    size_t n;
    if (serve_parse_detokenize(body, size, &ids, &n, &e)) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0) abort();
        free(ids);
    } else {
        check_refusal(&e);
    }
    return 0;
}
