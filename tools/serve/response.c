/* JSON bodies built with cJSON and printed unformatted. */
#include "response.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Print and free root; NULL when anything on the way failed. */
static char *print(cJSON *root, int ok)
{
    char *s = ok && root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return s;
}

/* A string of len bytes (text may hold no NUL: cJSON strings end at the first one). */
static cJSON *string_n(const char *text, size_t len)
{
    char *t = malloc(len + 1);
    if (!t) return NULL;
    if (len) memcpy(t, text, len);
    t[len] = 0;
    cJSON *s = cJSON_CreateString(t);
    free(t);
    return s;
}

static int put(cJSON *obj, const char *name, cJSON *v)
{
    if (!v) return 0;
    return cJSON_AddItemToObject(obj, name, v) ? 1 : (cJSON_Delete(v), 0);
}

static cJSON *nullable(const char *s) { return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull(); }

char *serve_json_error(const serve_error *e)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_CreateObject();
    int ok = root && err && put(err, "message", cJSON_CreateString(e->message)) &&
             put(err, "type", cJSON_CreateString(e->type ? e->type : "server_error")) && put(err, "param", nullable(e->param)) &&
             put(err, "code", nullable(e->code));
    if (ok) ok = put(root, "error", err);
    else cJSON_Delete(err);
    return print(root, ok);
}

static cJSON *id_array(const int32_t *ids, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *v = cJSON_CreateNumber(ids[i]);
        if (!v || !cJSON_AddItemToArray(a, v)) {
            cJSON_Delete(v);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static cJSON *head(const serve_reply_info *info, const char *object)
{
    cJSON *root = cJSON_CreateObject();
    if (root && put(root, "id", cJSON_CreateString(info->id)) && put(root, "object", cJSON_CreateString(object)) &&
        put(root, "created", cJSON_CreateNumber((double)info->created)) && put(root, "model", cJSON_CreateString(info->model)))
        return root;
    cJSON_Delete(root);
    return NULL;
}

static cJSON *usage(const serve_result *r)
{
    cJSON *u = cJSON_CreateObject(), *details = cJSON_CreateObject();
    int ok = u && details && put(u, "prompt_tokens", cJSON_CreateNumber((double)r->prompt_tokens)) &&
             put(u, "completion_tokens", cJSON_CreateNumber((double)r->completion_tokens)) &&
             put(u, "total_tokens", cJSON_CreateNumber((double)(r->prompt_tokens + r->completion_tokens))) &&
             put(details, "cached_tokens", cJSON_CreateNumber((double)r->cached_tokens));
    if (ok) return put(u, "prompt_tokens_details", details) ? u : (cJSON_Delete(u), NULL);
    cJSON_Delete(details);
    cJSON_Delete(u);
    return NULL;
}

/* A choice: chat puts the text in "message" (whole) or "delta" (chunks), completions in "text". */
static cJSON *choice(const serve_reply_info *info, const char *text, size_t len, const int32_t *tokens, size_t n_tokens,
                     const char *finish_reason, int chunk, int role_delta)
{
    cJSON *c = cJSON_CreateObject();
    int ok = c && put(c, "index", cJSON_CreateNumber(0));
    if (ok && info->kind == SERVE_CHAT) {
        cJSON *m = cJSON_CreateObject();
        ok = m != NULL;
        if (ok && (!chunk || role_delta)) ok = put(m, "role", cJSON_CreateString("assistant"));
        if (ok && (!chunk || role_delta || len || !finish_reason)) ok = put(m, "content", string_n(text, len));
        if (ok) ok = put(c, chunk ? "delta" : "message", m);
        else cJSON_Delete(m);
    } else if (ok) {
        ok = put(c, "text", string_n(text, len));
    }
    if (ok && info->return_tokens) ok = put(c, "tokens", id_array(tokens, n_tokens));
    ok = ok && put(c, "logprobs", cJSON_CreateNull()) && put(c, "finish_reason", nullable(finish_reason));
    if (ok) return c;
    cJSON_Delete(c);
    return NULL;
}

static int add_choice(cJSON *root, cJSON *c)
{
    cJSON *choices = cJSON_CreateArray();
    if (!choices || !c || !cJSON_AddItemToArray(choices, c)) {
        cJSON_Delete(choices);
        cJSON_Delete(c);
        return 0;
    }
    return put(root, "choices", choices);
}

char *serve_json_completion(const serve_reply_info *info, const char *text, size_t len, const int32_t *tokens,
                            size_t n_tokens, const serve_result *r)
{
    cJSON *root = head(info, info->kind == SERVE_CHAT ? "chat.completion" : "text_completion");
    const int ok = root && add_choice(root, choice(info, text, len, tokens, n_tokens, r->finish_reason, 0, 0)) &&
                   put(root, "usage", usage(r));
    return print(root, ok);
}

char *serve_json_chunk(const serve_reply_info *info, const char *text, size_t len, const int32_t *tokens,
                       size_t n_tokens, const char *finish_reason, int role_delta)
{
    cJSON *root = head(info, info->kind == SERVE_CHAT ? "chat.completion.chunk" : "text_completion");
    const int ok = root && add_choice(root, choice(info, text, len, tokens, n_tokens, finish_reason, 1, role_delta));
    return print(root, ok);
}

char *serve_json_usage_chunk(const serve_reply_info *info, const serve_result *r)
{
    cJSON *root = head(info, info->kind == SERVE_CHAT ? "chat.completion.chunk" : "text_completion");
    const int ok = root && put(root, "choices", cJSON_CreateArray()) && put(root, "usage", usage(r));
    return print(root, ok);
}

char *serve_json_models(const char *model, long long created, size_t vocab, size_t slots)
{
    cJSON *root = cJSON_CreateObject(), *data = cJSON_CreateArray(), *m = cJSON_CreateObject();
    int ok = root && data && m && put(m, "id", cJSON_CreateString(model)) && put(m, "object", cJSON_CreateString("model")) &&
             put(m, "created", cJSON_CreateNumber((double)created)) && put(m, "owned_by", cJSON_CreateString("libmamba")) &&
             put(m, "vocab_size", cJSON_CreateNumber((double)vocab)) && put(m, "slots", cJSON_CreateNumber((double)slots));
    if (ok && cJSON_AddItemToArray(data, m)) m = NULL;
    else ok = 0;
    if (ok && put(root, "object", cJSON_CreateString("list")) && cJSON_AddItemToObject(root, "data", data)) data = NULL;
    else ok = 0;
    cJSON_Delete(m);
    cJSON_Delete(data);
    return print(root, ok);
}

char *serve_json_tokens(const int32_t *ids, size_t n)
{
    cJSON *root = cJSON_CreateObject();
    return print(root, root && put(root, "tokens", id_array(ids, n)));
}

char *serve_json_content(const char *text, size_t len)
{
    cJSON *root = cJSON_CreateObject();
    return print(root, root && put(root, "content", string_n(text, len)));
}
