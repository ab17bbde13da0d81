/* POST /v1/completions and /v1/chat/completions: the request validated, its prompt tokenized
 * (chat messages through the chat format: markup with special tokens, content with special
 * tokens as text), queued on the scheduler, then answered whole or streamed as server-sent
 * events while the decoding loop produces it. A client that goes away cancels its request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "response.h"

/* How long a handler waits on its channel before it looks at the connection again. */
#define POLL_S 0.02

typedef struct prompt_builder {
    const mamba_tokenizer_t *tok;
    int32_t *ids;
    size_t n, cap;
    mamba_status_t st;
} prompt_builder;

static int add_text(void *user, const char *text, size_t len, int is_content)
{
    prompt_builder *b = user;
    const int flags = is_content ? MAMBA_TOKENIZE_SPECIAL_AS_TEXT : 0;
    size_t need = len + 1;
    for (;;) {
        if (b->n + need > b->cap) {
            int32_t *ids = realloc(b->ids, (b->n + need) * sizeof *ids);
            if (!ids) {
                b->st = MAMBA_ERR_OUT_OF_MEMORY;
                return 1;
            }
            b->ids = ids;
            b->cap = b->n + need;
        }
        size_t k = 0;
        b->st = mamba_tokenize(b->tok, text, len, flags, b->ids + b->n, b->cap - b->n, &k);
        if (b->st != MAMBA_OK) return 1;
        if (k <= b->cap - b->n) {
            b->n += k;
            return 0;
        }
        need = k; /* NFC lengthened the text: once more with room for all */
    }
}

/* The prompt's token ids, checked against the model's range; 0 with err filled. */
static int prompt_ids(serve_server *srv, serve_request *req, int32_t **ids, size_t *n, serve_error *err)
{
    const char *param = req->kind == SERVE_CHAT ? "messages" : "prompt";
    if (req->prompt_ids) {
        *ids = req->prompt_ids;
        *n = req->n_prompt_ids;
        req->prompt_ids = NULL;
    } else {
        prompt_builder b = {srv->tok, NULL, 0, 0, MAMBA_OK};
        if (req->kind == SERVE_CHAT) chat_format_render(&srv->chat, req->messages, req->n_messages, 1, add_text, &b);
        else add_text(&b, req->prompt, req->prompt_len, 1);
        if (b.st != MAMBA_OK) {
            free(b.ids);
            if (b.st == MAMBA_ERR_OUT_OF_MEMORY) return serve_fail(err, 500, "server_error", NULL, NULL, "out of memory tokenizing the prompt");
            return serve_fail(err, 400, "invalid_request_error", param, NULL, "%s: %s", param, mamba_last_error(NULL));
        }
        *ids = b.ids;
        *n = b.n;
    }
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return serve_fail(err, 400, "invalid_request_error", param, NULL, "%s: no tokens (the tokenizer dropped all of the text)", param);
    }
    for (size_t i = 0; i < *n; i++)
        if ((size_t)(*ids)[i] >= srv->model_vocab) {
            serve_fail(err, 400, "invalid_request_error", param, NULL, "%s: token id %d at index %zu is out of the model's range [0, %zu)",
                       param, (*ids)[i], i, srv->model_vocab);
            free(*ids);
            *ids = NULL;
            return 0;
        }
    return 1;
}

static uint64_t fresh_seed(void)
{
    static unsigned long long counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const unsigned long long k = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    return (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec ^ k << 32;
}

static void new_id(serve_kind kind, char *id, size_t cap)
{
    static unsigned long long counter;
    const unsigned long long k = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    snprintf(id, cap, "%s-%016llx%08llx", kind == SERVE_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)time(NULL), k);
}

/* ---- a streamed answer -------------------------------------------------------------------- */

typedef struct stream {
    serve_server *srv;
    serve_channel *ch;
    struct MHD_Connection *conn;
    serve_reply_info info;
    char id[48];
    int include_usage, role_sent, ended;
    serve_channel_reader rd;
    serve_buf out;
    size_t out_at;
} stream;

static int event(stream *s, char *json)
{
    const int ok = json && serve_buf_add(&s->out, "data: ", 6) && serve_buf_add(&s->out, json, strlen(json)) &&
                   serve_buf_add(&s->out, "\n\n", 2);
    free(json);
    return ok;
}

/* The events for what the last read took. */
static int events(stream *s)
{
    const serve_channel_reader *rd = &s->rd;
    int ok = 1;
    if (!s->role_sent && s->info.kind == SERVE_CHAT) {
        ok = event(s, serve_json_chunk(&s->info, "", 0, NULL, 0, NULL, 1));
        s->role_sent = 1;
    }
    if (ok && (rd->text.len || (s->info.return_tokens && rd->n_tokens)))
        ok = event(s, serve_json_chunk(&s->info, rd->text.data, rd->text.len, rd->tokens, rd->n_tokens, NULL, 0));
    if (!ok || !rd->done) return ok;
    if (rd->result.failed) ok = event(s, serve_json_error(&rd->result.error));
    else ok = event(s, serve_json_chunk(&s->info, "", 0, NULL, 0, rd->result.finish_reason, 0));
    if (ok && !rd->result.failed && s->include_usage) ok = event(s, serve_json_usage_chunk(&s->info, &rd->result));
    s->ended = 1;
    return ok && serve_buf_add(&s->out, "data: [DONE]\n\n", 14);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream *s = cls;
    while (s->out_at == s->out.len) {
        if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        s->out.len = s->out_at = 0;
        if (serve_client_gone(s->conn)) {
            serve_channel_cancel(s->ch);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        const int rc = serve_channel_read(s->ch, &s->rd, POLL_S);
        if (rc < 0 || (rc > 0 && !events(s))) {
            serve_channel_cancel(s->ch);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    const size_t n = s->out.len - s->out_at < max ? s->out.len - s->out_at : max;
    memcpy(buf, s->out.data + s->out_at, n);
    s->out_at += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream *s = cls;
    if (!s->rd.done) serve_channel_cancel(s->ch);
    serve_channel_unref(s->ch);
    serve_channel_reader_free(&s->rd);
    serve_buf_free(&s->out);
    free(s);
}

static enum MHD_Result start_stream(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, const serve_request *req,
                                    serve_channel *ch, const char *id)
{
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        serve_channel_cancel(ch);
        serve_channel_unref(ch);
        return serve_reply(c, srv, ep, 500, "application/json", NULL);
    }
    s->srv = srv;
    s->ch = ch;
    s->conn = c;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->info = (serve_reply_info){req->kind, s->id, (long long)time(NULL), srv->model_name, req->return_tokens};
    s->include_usage = req->include_usage;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, s, stream_free);
    if (!r) {
        stream_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    const enum MHD_Result rc = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    serve_metrics_request(srv->metrics, ep, 200);
    return rc;
}

/* ---- a whole answer ------------------------------------------------------------------------- */

static enum MHD_Result wait_whole(struct MHD_Connection *c, serve_server *srv, serve_endpoint ep, const serve_request *req,
                                  serve_channel *ch, const char *id)
{
    serve_channel_reader rd = {0};
    serve_buf text = {0};
    int32_t *tokens = NULL;
    size_t n_tokens = 0, cap = 0;
    int ok = 1;
    while (ok && !rd.done) {
        const int rc = serve_channel_read(ch, &rd, POLL_S);
        if (rc < 0) ok = 0;
        if (rc > 0 && rd.text.len) ok = serve_buf_add(&text, rd.text.data, rd.text.len);
        if (rc > 0 && ok && rd.n_tokens) {
            if (n_tokens + rd.n_tokens > cap) {
                cap = 2 * (n_tokens + rd.n_tokens);
                int32_t *t = realloc(tokens, cap * sizeof *t);
                if (t) tokens = t;
                else ok = 0;
            }
            if (ok) memcpy(tokens + n_tokens, rd.tokens, rd.n_tokens * sizeof *tokens);
            n_tokens += ok ? rd.n_tokens : 0;
        }
        if (ok && !rd.done && serve_client_gone(c)) {
            serve_channel_cancel(ch);
            serve_channel_unref(ch);
            serve_channel_reader_free(&rd);
            serve_buf_free(&text);
            free(tokens);
            serve_metrics_request(srv->metrics, ep, 499);
            return MHD_NO;
        }
    }
    if (!ok) serve_channel_cancel(ch);
    serve_channel_unref(ch);
    enum MHD_Result rc;
    if (!ok) {
        rc = serve_reply(c, srv, ep, 500, "application/json", NULL);
    } else if (rd.result.failed) {
        rc = serve_reply_error(c, srv, ep, &rd.result.error);
    } else {
        const serve_reply_info info = {req->kind, id, (long long)time(NULL), srv->model_name, req->return_tokens};
        rc = serve_reply(c, srv, ep, 200, "application/json",
                         serve_json_completion(&info, text.data ? text.data : "", text.len, tokens, n_tokens, &rd.result));
    }
    serve_channel_reader_free(&rd);
    serve_buf_free(&text);
    free(tokens);
    return rc;
}

enum MHD_Result serve_completions(struct MHD_Connection *c, serve_server *srv, serve_kind kind, const char *body,
                                  size_t len)
{
    const serve_endpoint ep = kind == SERVE_CHAT ? SERVE_EP_CHAT : SERVE_EP_COMPLETIONS;
    serve_request req;
    serve_error err;
    if (!serve_request_parse(body, len, kind, &srv->limits, &req, &err)) return serve_reply_error(c, srv, ep, &err);
    int ok = 1;
    if (!srv->tok && (kind == SERVE_CHAT || req.prompt))
        ok = serve_fail(&err, 501, "invalid_request_error", kind == SERVE_CHAT ? "messages" : "prompt", "no_tokenizer",
                        "the server has no tokenizer: send the prompt as an array of token ids, or start the server with --tokenizer");
    else if (!srv->tok && req.n_stops)
        ok = serve_fail(&err, 400, "invalid_request_error", "stop", NULL, "stop: stop strings need a tokenizer, which the server has not");
    serve_job_params p;
    memset(&p, 0, sizeof p);
    if (ok) ok = prompt_ids(srv, &req, &p.prompt, &p.n_prompt, &err);
    if (!ok) {
        serve_request_free(&req);
        return serve_reply_error(c, srv, ep, &err);
    }
    p.max_tokens = req.max_tokens;
    mamba_sampler_params_init(&p.sampling);
    p.sampling.temperature = (float)req.temperature;
    p.sampling.top_k = req.top_p == 0 ? 1 : req.top_k;
    p.sampling.top_p = (float)req.top_p;
    p.sampling.seed = req.has_seed ? req.seed : fresh_seed();
    p.sampling.min_p = (float)req.min_p;
    p.ignore_eos = req.ignore_eos;
    for (size_t i = 0; i < req.n_stops; i++) p.stops[p.n_stops++] = req.stops[i];
    if (kind == SERVE_CHAT) p.n_stops += chat_format_stops(&srv->chat, p.stops + p.n_stops, SERVE_MAX_JOB_STOPS - p.n_stops);
    if (p.n_stops > SERVE_MAX_JOB_STOPS) p.n_stops = SERVE_MAX_JOB_STOPS;
    serve_channel *ch = serve_channel_create();
    if (!ch || !serve_scheduler_submit(srv->sched, &p, ch, &err)) {
        if (!ch) serve_fail(&err, 500, "server_error", NULL, NULL, "out of memory");
        serve_channel_unref(ch);
        free(p.prompt);
        serve_request_free(&req);
        return serve_reply_error(c, srv, ep, &err);
    }
    char id[48];
    new_id(kind, id, sizeof id);
    const enum MHD_Result rc = req.stream ? start_stream(c, srv, ep, &req, ch, id) : wait_whole(c, srv, ep, &req, ch, id);
    serve_request_free(&req);
    return rc;
}
