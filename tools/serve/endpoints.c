/* The endpoints that do not generate: health, metrics, the model list, tokenize, detokenize. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "response.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *dup_str(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

enum MHD_Result serve_health(struct MHD_Connection *c, serve_server *srv)
{
    return serve_reply(c, srv, SERVE_EP_HEALTH, 200, "application/json", dup_str("{\"status\":\"ok\"}"));
}

enum MHD_Result serve_metrics_endpoint(struct MHD_Connection *c, serve_server *srv)
{
    return serve_reply(c, srv, SERVE_EP_METRICS, 200, "text/plain; version=0.0.4; charset=utf-8",
                       serve_metrics_text(srv->metrics, now_s(), srv->slots));
}

enum MHD_Result serve_models(struct MHD_Connection *c, serve_server *srv)
{
    return serve_reply(c, srv, SERVE_EP_MODELS, 200, "application/json",
                       serve_json_models(srv->model_name, srv->started, srv->model_vocab, srv->slots));
}

static enum MHD_Result no_tokenizer(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep)
{
    serve_error e;
    serve_fail(&e, 501, "invalid_request_error", NULL, "no_tokenizer",
               "the server has no tokenizer: start it with --tokenizer FILE or a checkpoint holding tokenizer.json");
    return serve_reply_error(c, srv, ep, &e);
}

enum MHD_Result serve_tokenize(struct MHD_Connection *c, serve_server *srv, const char *body, size_t len)
{
    if (!srv->tok) return no_tokenizer(c, srv, SERVE_EP_TOKENIZE);
    serve_error e;
    char *text;
    size_t n_text, n_ids = 0;
    int special;
    if (!serve_parse_tokenize(body, len, &text, &n_text, &special, &e)) return serve_reply_error(c, srv, SERVE_EP_TOKENIZE, &e);
    size_t cap = n_text + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    const int flags = special ? 0 : MAMBA_TOKENIZE_SPECIAL_AS_TEXT;
    mamba_status_t st = ids ? mamba_tokenize(srv->tok, text, n_text, flags, ids, cap, &n_ids) : MAMBA_ERR_OUT_OF_MEMORY;
    if (st == MAMBA_OK && n_ids > cap) {
        int32_t *more = realloc(ids, n_ids * sizeof *ids);
        cap = n_ids;
        if (more) ids = more;
        st = more ? mamba_tokenize(srv->tok, text, n_text, flags, ids, cap, &n_ids) : MAMBA_ERR_OUT_OF_MEMORY;
    }
    free(text);
    enum MHD_Result rc;
    if (st == MAMBA_OK) {
        rc = serve_reply(c, srv, SERVE_EP_TOKENIZE, 200, "application/json", serve_json_tokens(ids, n_ids));
    } else {
        serve_fail(&e, st == MAMBA_ERR_OUT_OF_MEMORY ? 500 : 400, st == MAMBA_ERR_OUT_OF_MEMORY ? "server_error" : "invalid_request_error",
                   "content", NULL, "content: %s", mamba_last_error(NULL));
        rc = serve_reply_error(c, srv, SERVE_EP_TOKENIZE, &e);
    }
    free(ids);
    return rc;
}

enum MHD_Result serve_detokenize(struct MHD_Connection *c, serve_server *srv, const char *body, size_t len)
{
    if (!srv->tok) return no_tokenizer(c, srv, SERVE_EP_DETOKENIZE);
    serve_error e;
    int32_t *ids;
    size_t n, text_len = 0;
    if (!serve_parse_detokenize(body, len, &ids, &n, &e)) return serve_reply_error(c, srv, SERVE_EP_DETOKENIZE, &e);
    const size_t vocab = mamba_tokenizer_vocab_size(srv->tok);
    for (size_t i = 0; i < n; i++)
        if ((size_t)ids[i] >= vocab) {
            serve_fail(&e, 400, "invalid_request_error", "tokens", NULL, "tokens[%zu]: %d is out of the tokenizer's range [0, %zu)",
                       i, ids[i], vocab);
            free(ids);
            return serve_reply_error(c, srv, SERVE_EP_DETOKENIZE, &e);
        }
    mamba_status_t st = mamba_detokenize(srv->tok, ids, n, NULL, 0, &text_len);
    char *text = st == MAMBA_OK ? malloc(text_len + 1) : NULL;
    if (st == MAMBA_OK && !text) st = MAMBA_ERR_OUT_OF_MEMORY;
    if (st == MAMBA_OK) st = mamba_detokenize(srv->tok, ids, n, text, text_len, &text_len);
    free(ids);
    enum MHD_Result rc;
    if (st == MAMBA_OK) {
        rc = serve_reply(c, srv, SERVE_EP_DETOKENIZE, 200, "application/json", serve_json_content(text, text_len));
    } else {
        serve_fail(&e, 500, "server_error", NULL, NULL, "detokenize: %s", mamba_last_error(NULL));
        rc = serve_reply_error(c, srv, SERVE_EP_DETOKENIZE, &e);
    }
    free(text);
    return rc;
}
