/* Request bodies to validated requests: every field's type and range checked, OpenAI's fields
 * that the server does not implement accepted only at their neutral values, unknown fields
 * ignored. */
#include "request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define MAX_DEPTH 64
#define INVALID "invalid_request_error"

int serve_fail(serve_error *err, int status, const char *type, const char *param, const char *code, const char *fmt,
               ...)
{
    err->status = status;
    err->type = type;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return 0;
}

int serve_utf8_valid(const char *str, size_t len, size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        const unsigned c = s[i];
        size_t n;
        unsigned cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; min = 0x10000; }
        else break;
        if (len - i <= n) break;
        size_t k = 1;
        for (; k <= n && (s[i + k] & 0xc0) == 0x80; k++) cp = cp << 6 | (s[i + k] & 0x3f);
        if (k <= n || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) break;
        i += n + 1;
    }
    if (i < len) {
        if (bad) *bad = i;
        return 0;
    }
    return 1;
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

/* The deepest nesting of objects and arrays outside strings, counted up to limit + 1. */
static int nesting_depth(const char *s, size_t len, int limit)
{
    int depth = 0, deepest = 0, in_string = 0;
    for (size_t i = 0; i < len && deepest <= limit; i++) {
        const char c = s[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > deepest) deepest = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return deepest;
}

static cJSON *parse_object(const char *body, size_t len, serve_error *err)
{
    if (len == 0) {
        serve_fail(err, 400, INVALID, NULL, NULL, "the request body is empty: expected a JSON object");
        return NULL;
    }
    if (nesting_depth(body, len, MAX_DEPTH) > MAX_DEPTH) {
        serve_fail(err, 400, INVALID, NULL, NULL, "the request body is JSON nested more than %d levels deep", MAX_DEPTH);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        const size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        serve_fail(err, 400, INVALID, NULL, NULL, "the request body is not valid JSON (at byte %zu)", at);
        return NULL;
    }
    while (end && end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n' || *end == 0)) end++;
    if (end && end < body + len) {
        cJSON_Delete(root);
        serve_fail(err, 400, INVALID, NULL, NULL, "the request body has text after its JSON value (at byte %zu)",
                   (size_t)(end - body));
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        serve_fail(err, 400, INVALID, NULL, NULL, "the request body is %s: expected a JSON object", type_name(root));
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* A string field's text, checked as UTF-8; NULL with err filled when it is not. */
static const char *utf8_text(const cJSON *v, const char *param, serve_error *err)
{
    size_t bad;
    const size_t n = strlen(v->valuestring);
    if (!serve_utf8_valid(v->valuestring, n, &bad)) {
        serve_fail(err, 400, INVALID, param, NULL, "%s: invalid UTF-8 at byte %zu", param, bad);
        return NULL;
    }
    return v->valuestring;
}

/* Number fields: absent or null keep the default. */
static int get_number(const cJSON *obj, const char *name, double lo, double hi, double *out, serve_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsNumber(v)) return serve_fail(err, 400, INVALID, name, NULL, "%s: expected a number, found %s", name, type_name(v));
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return serve_fail(err, 400, INVALID, name, NULL, "%s: %g is out of range: expected %g to %g", name, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 1;
}

static int is_integer(const cJSON *v) { return cJSON_IsNumber(v) && floor(v->valuedouble) == v->valuedouble; }

static int get_int(const cJSON *obj, const char *name, double lo, double hi, double *out, serve_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!is_integer(v))
        return serve_fail(err, 400, INVALID, name, NULL, "%s: expected an integer, found %s", name,
                          cJSON_IsNumber(v) ? "a fraction" : type_name(v));
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return serve_fail(err, 400, INVALID, name, NULL, "%s: %.0f is out of range: expected %.0f to %.0f", name,
                          v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 1;
}

static int get_bool(const cJSON *obj, const char *name, int *out, serve_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsBool(v)) return serve_fail(err, 400, INVALID, name, NULL, "%s: expected a boolean, found %s", name, type_name(v));
    *out = cJSON_IsTrue(v);
    return 1;
}

/* OpenAI fields the server does not implement: accepted with their types, at neutral values. */
enum { T_NULL = 1, T_BOOL = 2, T_NUM = 4, T_STR = 8, T_ARR = 16, T_OBJ = 32 };
typedef struct ignored_field {
    const char *name;
    int types;
    int (*neutral)(const cJSON *v); /* NULL: any value of those types */
} ignored_field;

static int zero(const cJSON *v) { return !cJSON_IsNumber(v) || v->valuedouble == 0; }
static int one(const cJSON *v) { return !cJSON_IsNumber(v) || v->valuedouble == 1; }
static int falsy(const cJSON *v) { return cJSON_IsNull(v) || cJSON_IsFalse(v) || (cJSON_IsNumber(v) && v->valuedouble == 0); }
static int empty(const cJSON *v) { return cJSON_IsNull(v) || cJSON_GetArraySize(v) == 0; }
static int empty_string(const cJSON *v) { return cJSON_IsNull(v) || (cJSON_IsString(v) && !*v->valuestring); }
static int text_format(const cJSON *v)
{
    if (cJSON_IsNull(v)) return 1;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, "text") == 0;
}

static const ignored_field ignored[] = {
    {"user", T_NULL | T_STR, NULL},
    {"frequency_penalty", T_NULL | T_NUM, zero},
    {"presence_penalty", T_NULL | T_NUM, zero},
    {"logit_bias", T_NULL | T_OBJ, empty},
    {"logprobs", T_NULL | T_BOOL | T_NUM, falsy},
    {"top_logprobs", T_NULL | T_NUM, zero},
    {"echo", T_NULL | T_BOOL, falsy},
    {"best_of", T_NULL | T_NUM, one},
    {"suffix", T_NULL | T_STR, empty_string},
    {"response_format", T_NULL | T_OBJ, text_format},
    {"tools", T_NULL | T_ARR, empty},
    {"functions", T_NULL | T_ARR, empty},
    {"tool_choice", T_NULL | T_STR | T_OBJ, NULL},
    {"function_call", T_NULL | T_STR | T_OBJ, NULL},
    {"parallel_tool_calls", T_NULL | T_BOOL, NULL},
    {"metadata", T_NULL | T_OBJ, NULL},
    {"store", T_NULL | T_BOOL, NULL},
    {"service_tier", T_NULL | T_STR, NULL},
};

static int type_bit(const cJSON *v)
{
    if (cJSON_IsNull(v)) return T_NULL;
    if (cJSON_IsBool(v)) return T_BOOL;
    if (cJSON_IsNumber(v)) return T_NUM;
    if (cJSON_IsString(v)) return T_STR;
    if (cJSON_IsArray(v)) return T_ARR;
    return T_OBJ;
}

static int check_ignored(const cJSON *root, serve_error *err)
{
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        const ignored_field *f = &ignored[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, f->name);
        if (!v) continue;
        if (!(type_bit(v) & f->types))
            return serve_fail(err, 400, INVALID, f->name, NULL, "%s: %s is not a valid type for it", f->name, type_name(v));
        if (f->neutral && !f->neutral(v))
            return serve_fail(err, 400, INVALID, f->name, "unsupported_parameter", "%s: this server supports only its default",
                              f->name);
    }
    return 1;
}

static char *dup_text(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int out_of_memory(serve_error *err)
{
    return serve_fail(err, 500, "server_error", NULL, NULL, "out of memory reading the request");
}

/* Token ids: an array of integers 0 .. INT32_MAX. */
static int read_ids(const cJSON *arr, const char *param, int32_t **ids, size_t *n, serve_error *err)
{
    const int count = cJSON_GetArraySize(arr);
    if ((size_t)count > SERVE_MAX_PROMPT_IDS)
        return serve_fail(err, 400, INVALID, param, NULL, "%s: %d token ids, at most %u are accepted", param, count,
                          SERVE_MAX_PROMPT_IDS);
    int32_t *v = malloc(((size_t)count + 1) * sizeof *v);
    if (!v) return out_of_memory(err);
    size_t k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!is_integer(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX) {
            free(v);
            return serve_fail(err, 400, INVALID, param, NULL, "%s[%zu]: expected a token id (an integer >= 0), found %s",
                              param, k, cJSON_IsNumber(e) ? "another number" : type_name(e));
        }
        v[k++] = (int32_t)e->valuedouble;
    }
    *ids = v;
    *n = k;
    return 1;
}

static int read_prompt(const cJSON *root, serve_request *req, serve_error *err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p)) return serve_fail(err, 400, INVALID, "prompt", NULL, "prompt: required");
    if (cJSON_IsArray(p)) {
        const int n = cJSON_GetArraySize(p);
        const cJSON *first = cJSON_GetArrayItem(p, 0);
        if (n >= 1 && (cJSON_IsString(first) || cJSON_IsArray(first))) {
            if (n > 1) return serve_fail(err, 400, INVALID, "prompt", NULL, "prompt: %d prompts; only one a request is supported", n);
            p = first;
        }
    }
    if (cJSON_IsString(p)) {
        const char *s = utf8_text(p, "prompt", err);
        if (!s) return 0;
        if (!*s) return serve_fail(err, 400, INVALID, "prompt", NULL, "prompt: empty; expected at least one character");
        req->prompt_len = strlen(s);
        if (!(req->prompt = dup_text(s, req->prompt_len))) return out_of_memory(err);
        return 1;
    }
    if (!cJSON_IsArray(p))
        return serve_fail(err, 400, INVALID, "prompt", NULL, "prompt: expected a string or an array of token ids, found %s",
                          type_name(p));
    if (!read_ids(p, "prompt", &req->prompt_ids, &req->n_prompt_ids, err)) return 0;
    if (req->n_prompt_ids == 0) return serve_fail(err, 400, INVALID, "prompt", NULL, "prompt: empty; expected at least one token id");
    return 1;
}

/* A message's content: a string, or an array of {"type": "text", "text": string} parts. */
static int read_content(const cJSON *c, size_t i, const char *role, chat_message *m, serve_error *err)
{
    char param[48];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (!c || cJSON_IsNull(c)) {
        if (strcmp(role, "assistant") != 0) return serve_fail(err, 400, INVALID, param, NULL, "%s: required", param);
        m->content = dup_text("", 0);
        return m->content ? 1 : out_of_memory(err);
    }
    if (cJSON_IsString(c)) {
        const char *s = utf8_text(c, param, err);
        if (!s) return 0;
        m->content_len = strlen(s);
        m->content = dup_text(s, m->content_len);
        return m->content ? 1 : out_of_memory(err);
    }
    if (!cJSON_IsArray(c))
        return serve_fail(err, 400, INVALID, param, NULL, "%s: expected a string or an array of text parts, found %s", param,
                          type_name(c));
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(text))
            return serve_fail(err, 400, INVALID, param, NULL, "%s: expected parts {\"type\": \"text\", \"text\": string}", param);
        if (!utf8_text(text, param, err)) return 0;
        total += strlen(text->valuestring);
    }
    char *s = malloc(total + 1);
    if (!s) return out_of_memory(err);
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        const size_t n = strlen(t);
        memcpy(s + at, t, n);
        at += n;
    }
    s[at] = 0;
    m->content = s;
    m->content_len = at;
    return 1;
}

static int read_messages(const cJSON *root, serve_request *req, serve_error *err)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs || cJSON_IsNull(msgs)) return serve_fail(err, 400, INVALID, "messages", NULL, "messages: required");
    if (!cJSON_IsArray(msgs))
        return serve_fail(err, 400, INVALID, "messages", NULL, "messages: expected an array, found %s", type_name(msgs));
    const int n = cJSON_GetArraySize(msgs);
    if (n == 0) return serve_fail(err, 400, INVALID, "messages", NULL, "messages: empty; expected at least one message");
    if (n > SERVE_MAX_MESSAGES)
        return serve_fail(err, 400, INVALID, "messages", NULL, "messages: %d, at most %d are accepted", n, SERVE_MAX_MESSAGES);
    if (!(req->messages = calloc((size_t)n, sizeof *req->messages))) return out_of_memory(err);
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!cJSON_IsObject(m)) return serve_fail(err, 400, INVALID, param, NULL, "%s: expected an object, found %s", param, type_name(m));
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsString(role))
            return serve_fail(err, 400, INVALID, param, NULL, "%s: expected a string, found %s", param,
                              role ? type_name(role) : "nothing");
        const char *r = strcmp(role->valuestring, "developer") == 0 ? "system" : role->valuestring;
        if (!chat_role_known(r))
            return serve_fail(err, 400, INVALID, param, NULL, "%s: '%.40s' is not supported: expected system, user or assistant",
                              param, r);
        req->messages[i].role = strcmp(r, "system") == 0 ? "system" : strcmp(r, "user") == 0 ? "user" : "assistant";
        req->n_messages = i + 1;
        if (!read_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, r, &req->messages[i], err)) return 0;
        i++;
    }
    return 1;
}

static int read_stops(const cJSON *root, serve_request *req, serve_error *err)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return 1;
    if (!cJSON_IsString(s) && !cJSON_IsArray(s))
        return serve_fail(err, 400, INVALID, "stop", NULL, "stop: expected a string or an array of strings, found %s", type_name(s));
    const int n = cJSON_IsString(s) ? 1 : cJSON_GetArraySize(s);
    if (n > SERVE_MAX_STOPS)
        return serve_fail(err, 400, INVALID, "stop", NULL, "stop: %d strings, at most %d are accepted", n, SERVE_MAX_STOPS);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_IsString(s) ? s : cJSON_GetArrayItem(s, i);
        if (!cJSON_IsString(e)) return serve_fail(err, 400, INVALID, "stop", NULL, "stop[%d]: expected a string, found %s", i, type_name(e));
        const char *t = utf8_text(e, "stop", err);
        if (!t) return 0;
        const size_t len = strlen(t);
        if (len == 0 || len > SERVE_MAX_STOP_BYTES)
            return serve_fail(err, 400, INVALID, "stop", NULL, "stop[%d]: %zu bytes; expected 1 to %d", i, len, SERVE_MAX_STOP_BYTES);
        if (!(req->stops[req->n_stops] = dup_text(t, len))) return out_of_memory(err);
        req->n_stops++;
    }
    return 1;
}

static int read_sampling(const cJSON *root, const serve_limits *lim, serve_request *req, serve_error *err)
{
    double v = lim->max_tokens;
    const char *mt = cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (!get_int(root, mt, 1, lim->max_tokens, &v, err)) return 0;
    req->max_tokens = (int)v;
    req->temperature = 1;
    req->top_p = 1;
    if (!get_number(root, "temperature", 0, 2, &req->temperature, err)) return 0;
    if (!get_number(root, "top_p", 0, 1, &req->top_p, err)) return 0;
    if (!get_number(root, "min_p", 0, 1, &req->min_p, err)) return 0;
    v = 0;
    if (!get_int(root, "top_k", 0, 1 << 20, &v, err)) return 0;
    req->top_k = (int)v;
    v = 0;
    if (!get_int(root, "seed", -9007199254740992.0, 9007199254740992.0, &v, err)) return 0;
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
    req->has_seed = seed && !cJSON_IsNull(seed);
    req->seed = (uint64_t)(int64_t)v;
    v = 1;
    if (!get_int(root, "n", 1, 1e9, &v, err)) return 0;
    if (v != 1) return serve_fail(err, 400, INVALID, "n", "unsupported_parameter", "n: %.0f; only n = 1 is supported", v);
    return 1;
}

static int read_flags(const cJSON *root, serve_request *req, serve_error *err)
{
    if (!get_bool(root, "stream", &req->stream, err) || !get_bool(root, "return_tokens", &req->return_tokens, err) ||
        !get_bool(root, "ignore_eos", &req->ignore_eos, err))
        return 0;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so))
            return serve_fail(err, 400, INVALID, "stream_options", NULL, "stream_options: expected an object, found %s", type_name(so));
        if (!get_bool(so, "include_usage", &req->include_usage, err)) return 0;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model))
        return serve_fail(err, 400, INVALID, "model", NULL, "model: expected a string, found %s", type_name(model));
    return 1;
}

int serve_request_parse(const char *body, size_t len, serve_kind kind, const serve_limits *lim, serve_request *req,
                        serve_error *err)
{
    memset(req, 0, sizeof *req);
    req->kind = kind;
    cJSON *root = parse_object(body, len, err);
    if (!root) return 0;
    int ok = (kind == SERVE_CHAT ? read_messages(root, req, err) : read_prompt(root, req, err)) &&
             read_sampling(root, lim, req, err) && read_stops(root, req, err) && read_flags(root, req, err) &&
             check_ignored(root, err);
    cJSON_Delete(root);
    if (!ok) serve_request_free(req);
    return ok;
}

void serve_request_free(serve_request *req)
{
    free(req->prompt);
    free(req->prompt_ids);
    for (size_t i = 0; i < req->n_messages; i++) free((char *)req->messages[i].content);
    free(req->messages);
    for (size_t i = 0; i < req->n_stops; i++) free(req->stops[i]);
    memset(req, 0, sizeof *req);
}

int serve_parse_tokenize(const char *body, size_t len, char **content, size_t *content_len, int *parse_special,
                         serve_error *err)
{
    *content = NULL;
    *parse_special = 0;
    cJSON *root = parse_object(body, len, err);
    if (!root) return 0;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "content");
    int ok = 1;
    const char *s = NULL;
    if (!cJSON_IsString(c))
        ok = serve_fail(err, 400, INVALID, "content", NULL, "content: expected a string, found %s", c ? type_name(c) : "nothing");
    else if (!(s = utf8_text(c, "content", err)))
        ok = 0;
    ok = ok && get_bool(root, "parse_special", parse_special, err);
    if (ok && s) {
        *content_len = strlen(s);
        if (!(*content = dup_text(s, *content_len))) ok = out_of_memory(err);
    }
    cJSON_Delete(root);
    return ok;
}

int serve_parse_detokenize(const char *body, size_t len, int32_t **ids, size_t *n, serve_error *err)
{
    *ids = NULL;
    *n = 0;
    cJSON *root = parse_object(body, len, err);
    if (!root) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    int ok;
    if (!cJSON_IsArray(t))
        ok = serve_fail(err, 400, INVALID, "tokens", NULL, "tokens: expected an array of token ids, found %s",
                        t ? type_name(t) : "nothing");
    else
        ok = read_ids(t, "tokens", ids, n, err);
    cJSON_Delete(root);
    return ok;
}
