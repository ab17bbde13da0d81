/* mamba serve, run as the built binary on loopback with --port 0 over the small fixture model
 * and the GPT-2-style test tokenizer: every endpoint whole and streamed; greedy answers against
 * a decoding of the same prompt alone through the library (an independent path: no server, no
 * batching, the argmax written here); concurrent clients past --slots; stop strings; the prompt
 * cache; every kind of bad input with its status and OpenAI-style error; a client that leaves
 * mid-stream; SIGTERM. Plus the chat formats, stop-string search and the cache on their own. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "chat_format.h"
#include "http_client.h"
#include "prompt_cache.h"
#include "stop.h"
#include "testutil.h"

#ifndef MAMBA_CLI
#error "MAMBA_CLI must name the mamba executable"
#endif

#define HOST "127.0.0.1"
#define TIMEOUT_S 60.0
#define TINY_EOS 127 /* <|endoftext|> of gpt2_tiny.json, made the model's eos_token_id */

/* ---- the fixture checkpoint: the small model, the test tokenizer, a ChatML template ------------- */

static char *dir;
static char model_dir[4200];

static void write_text(const char *path, const char *text) { write_file(path, text, strlen(text)); }

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    const long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    const size_t got = fread(s, 1, (size_t)n, fp);
    fclose(fp);
    s[got] = 0;
    if (len) *len = got;
    return s;
}

static void setup(void)
{
    dir = tmpdir_new();
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    ck_assert_int_eq(mkdir(model_dir, 0755), 0);
    char path[4400];
    snprintf(path, sizeof path, "%s/model.safetensors", model_dir);
    copy_file(data_path(0, "models/small/model.safetensors"), path);
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    copy_file(data_path(0, "tokenizer/gpt2_tiny.json"), path);
    char *config = slurp(data_path(0, "models/small/config.json"), NULL);
    ck_assert_ptr_nonnull(config);
    char *eos = strstr(config, "\"eos_token_id\": 0");
    ck_assert_ptr_nonnull(eos);
    char *fixed = malloc(strlen(config) + 8);
    snprintf(fixed, strlen(config) + 8, "%.*s\"eos_token_id\": %d%s", (int)(eos - config), config, TINY_EOS,
             eos + strlen("\"eos_token_id\": 0"));
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    write_text(path, fixed);
    free(fixed);
    free(config);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    write_text(path, "{\"eos_token\": \"<|endoftext|>\", \"chat_template\": \"{% for message in messages %}"
                     "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\"}");
}

static void teardown(void)
{
    tmpdir_remove(dir);
    dir = NULL;
}

/* ---- the server process --------------------------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
    char log[4400];
} server;

/* Start `mamba serve --model DIR --port 0 ...` with the extra arguments (NULL-terminated) and
 * wait for its "listening on" line. */
static server start_server(const char *model, ...)
{
    server s;
    memset(&s, 0, sizeof s);
    static int n_started;
    snprintf(s.log, sizeof s.log, "%s/server%d.log", dir, n_started++);
    const char *argv[40] = {MAMBA_CLI, "serve", "--model", model, "--port", "0", "--backend", "cpu", "--threads", "1"};
    int n = 10;
    va_list ap;
    va_start(ap, model);
    for (const char *a = va_arg(ap, const char *); a && n < 38; a = va_arg(ap, const char *)) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    s.pid = fork();
    ck_assert_int_ge(s.pid, 0);
    if (s.pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen(s.log, "w", stderr)) _exit(127);
        setenv("OMP_NUM_THREADS", "1", 1);
        execv(MAMBA_CLI, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 600 && !s.port; i++) {
        char *text = slurp(s.log, NULL);
        const char *at = text ? strstr(text, "listening on http://" HOST ":") : NULL;
        if (at) s.port = (int)strtol(at + strlen("listening on http://" HOST ":"), NULL, 10);
        free(text);
        int status;
        if (!s.port && waitpid(s.pid, &status, WNOHANG) == s.pid) {
            char *t = slurp(s.log, NULL);
            ck_abort_msg("mamba serve exited before listening: %s", t ? t : "");
        }
        if (!s.port) usleep(50000);
    }
    ck_assert_msg(s.port > 0, "mamba serve did not print its port within 30 s");
    return s;
}

/* SIGTERM, and the exit status (-1 when it did not exit within timeout_s). */
static int stop_server(server *s, double timeout_s)
{
    kill(s->pid, SIGTERM);
    for (int i = 0; i < (int)(timeout_s * 20); i++) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(50000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    return -1;
}

/* ---- requests ------------------------------------------------------------------------------------ */

typedef struct reply {
    int status;
    char *body;
    cJSON *json;
} reply;

static reply request(const server *s, const char *method, const char *path, const char *headers, const char *body)
{
    reply r = {0, NULL, NULL};
    r.status = http_fetch(HOST, s->port, method, path, headers, body, body ? strlen(body) : 0, &r.body, NULL, TIMEOUT_S);
    if (r.body) r.json = cJSON_Parse(r.body);
    return r;
}

static reply post(const server *s, const char *path, const char *body) { return request(s, "POST", path, NULL, body); }

static void reply_free(reply *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

static const cJSON *get(const cJSON *obj, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *v = obj;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
        v = k[0] >= '0' && k[0] <= '9' ? cJSON_GetArrayItem(v, (int)strtol(k, NULL, 10)) : cJSON_GetObjectItemCaseSensitive(v, k);
    return v;
}

static const char *get_str(const cJSON *obj, const char *path)
{
    const cJSON *v = get(obj, path);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double get_num(const cJSON *obj, const char *path)
{
    const cJSON *v = get(obj, path);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static size_t get_ids(const cJSON *obj, const char *path, int32_t *ids, size_t cap)
{
    const cJSON *a = get(obj, path), *e;
    size_t n = 0;
    cJSON_ArrayForEach(e, a) if (n < cap) ids[n++] = (int32_t)e->valuedouble;
    return n;
}

/* The status is want and the body an OpenAI error: {"error": {message, type, param, code}}. */
static void assert_error(const reply *r, int want, const char *what)
{
    ck_assert_msg(r->status == want, "%s: status %d, expected %d (%s)", what, r->status, want, r->body ? r->body : "");
    const cJSON *e = get(r->json, "error");
    ck_assert_msg(cJSON_IsObject(e), "%s: no error object in '%s'", what, r->body ? r->body : "");
    ck_assert_msg(get_str(e, "message") && *get_str(e, "message"), "%s: no message", what);
    ck_assert_msg(get_str(e, "type") != NULL, "%s: no type", what);
    ck_assert_msg(cJSON_GetObjectItemCaseSensitive(e, "param") && cJSON_GetObjectItemCaseSensitive(e, "code"),
                  "%s: param or code missing in '%s'", what, r->body);
}

/* A streamed request: the concatenated text of its chunks, the token ids, the finish reason
 * (of the chunk that has one), the usage chunk's completion_tokens, and whether [DONE] came. */
typedef struct streamed {
    int status;
    char text[65536];
    int32_t tokens[4096];
    size_t n_tokens;
    char finish[16];
    int completion_tokens, done, events, error;
} streamed;

/* The events of a request sent on c (closed here). */
static void read_stream(http_conn *c, streamed *out)
{
    memset(out, 0, sizeof *out);
    out->completion_tokens = -1;
    out->status = http_read_head(c);
    char *data;
    size_t at = 0;
    while (http_next_event(c, &data) == 1) {
        out->events++;
        if (strcmp(data, "[DONE]") == 0) {
            out->done = 1;
            free(data);
            continue;
        }
        cJSON *j = cJSON_Parse(data);
        ck_assert_msg(j != NULL, "an event that is not JSON: '%s'", data);
        if (get(j, "error")) out->error = 1;
        const char *t = get_str(j, "choices.0.text");
        if (!t) t = get_str(j, "choices.0.delta.content");
        if (t) {
            const size_t n = strlen(t);
            ck_assert_uint_lt(at + n, sizeof out->text);
            memcpy(out->text + at, t, n);
            at += n;
        }
        out->n_tokens += get_ids(j, "choices.0.tokens", out->tokens + out->n_tokens, 4096 - out->n_tokens);
        const char *f = get_str(j, "choices.0.finish_reason");
        if (f) snprintf(out->finish, sizeof out->finish, "%s", f);
        if (get(j, "usage")) out->completion_tokens = (int)get_num(j, "usage.completion_tokens");
        cJSON_Delete(j);
        free(data);
    }
    out->text[at] = 0;
    http_close(c);
}

static void stream_request(const server *s, const char *path, const char *body, streamed *out)
{
    char err[256];
    http_conn *c = http_send(HOST, s->port, "POST", path, NULL, body, strlen(body), TIMEOUT_S, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    read_stream(c, out);
}

/* ---- the reference: the prompt alone through the library ------------------------------------------ */

typedef struct reference {
    mamba_context_t *ctx;
    mamba_model_t *m;
    mamba_tokenizer_t *tok;
    size_t vocab, tok_vocab;
} reference;

static reference open_reference(void)
{
    reference r;
    r.ctx = cpu_context(0);
    ck_assert_int_eq(mamba_model_load(r.ctx, data_path(0, "models/small"), &r.m), MAMBA_OK);
    ck_assert_int_eq(mamba_tokenizer_load(data_path(1, "tokenizer/gpt2_tiny.json"), &r.tok), MAMBA_OK);
    mamba_model_info_t info;
    mamba_model_info(r.m, &info);
    r.vocab = (size_t)info.config.vocab_size;
    r.tok_vocab = mamba_tokenizer_vocab_size(r.tok);
    return r;
}

static void close_reference(reference *r)
{
    mamba_tokenizer_free(r->tok);
    mamba_model_free(r->m);
    mamba_context_free(r->ctx);
}

static size_t tokenize(const reference *r, const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    ck_assert_int_eq(mamba_tokenize(r->tok, text, strlen(text), MAMBA_TOKENIZE_SPECIAL_AS_TEXT, ids, cap, &n), MAMBA_OK);
    ck_assert_uint_le(n, cap);
    return n;
}

/* Greedy decoding of n tokens after the prompt, over the tokenizer's ids (the server never
 * samples the model's padding rows); stops after the EOS when stop_at_eos (not included). */
static size_t greedy(const reference *r, const int32_t *prompt, size_t n_prompt, size_t n, int stop_at_eos, int32_t *out)
{
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(r->m, 1, &s), MAMBA_OK);
    float *logits = malloc(r->vocab * sizeof *logits);
    ck_assert_int_eq(mamba_prefill(s, prompt, n_prompt, logits), MAMBA_OK);
    size_t k = 0;
    while (k < n) {
        int32_t best = 0;
        for (size_t v = 1; v < r->tok_vocab; v++)
            if (logits[v] > logits[best]) best = (int32_t)v;
        if (stop_at_eos && best == TINY_EOS) break;
        out[k++] = best;
        if (k < n) ck_assert_int_eq(mamba_step(s, &best, logits), MAMBA_OK);
    }
    free(logits);
    mamba_state_free(s);
    return k;
}

static char *detokenize(const reference *r, const int32_t *ids, size_t n)
{
    size_t len = 0;
    ck_assert_int_eq(mamba_detokenize(r->tok, ids, n, NULL, 0, &len), MAMBA_OK);
    char *t = malloc(len + 1);
    ck_assert_int_eq(mamba_detokenize(r->tok, ids, n, t, len, &len), MAMBA_OK);
    t[len] = 0;
    return t;
}

static void assert_same_ids(const int32_t *got, size_t n_got, const int32_t *want, size_t n_want, const char *what)
{
    ck_assert_msg(n_got == n_want, "%s: %zu tokens, expected %zu", what, n_got, n_want);
    for (size_t i = 0; i < n_want; i++)
        ck_assert_msg(got[i] == want[i], "%s: token %zu is %d, expected %d", what, i, got[i], want[i]);
}

/* A JSON string literal of text (ASCII test texts: only quotes and backslashes escaped). */
static const char *quoted(const char *text, char *buf, size_t cap)
{
    size_t k = 0;
    buf[k++] = '"';
    for (const char *p = text; *p && k + 3 < cap; p++) {
        if (*p == '"' || *p == '\\') buf[k++] = '\\';
        if (*p == '\n') {
            buf[k++] = '\\';
            buf[k++] = 'n';
            continue;
        }
        buf[k++] = *p;
    }
    buf[k++] = '"';
    buf[k] = 0;
    return buf;
}

static double metric(const server *s, const char *name)
{
    reply r = request(s, "GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    double v = -1;
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *at = r.body ? strstr(r.body, key) : NULL;
    if (at) v = strtod(at + strlen(key), NULL);
    reply_free(&r);
    return v;
}

/* A gauge after the server's loop has caught up: a request's slot is freed by the decoding
 * thread just after its last token went out, so the value is read until it is want (at most
 * 2 s) and returned as last read. */
static double metric_settled(const server *s, const char *name, double want)
{
    double v = metric(s, name);
    for (int i = 0; i < 400 && v != want; i++) {
        usleep(5000);
        v = metric(s, name);
    }
    return v;
}

/* ---- the endpoints ----------------------------------------------------------------------------------- */

START_TEST(endpoints_answer_in_openai_shapes)
{
    server s = start_server(model_dir, "--name", "tiny-test", NULL);
    reply r = request(&s, "GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get_str(r.json, "status"), "ok");
    reply_free(&r);
    r = request(&s, "GET", "/v1/models", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get_str(r.json, "object"), "list");
    ck_assert_str_eq(get_str(r.json, "data.0.id"), "tiny-test");
    ck_assert_str_eq(get_str(r.json, "data.0.object"), "model");
    reply_free(&r);
    /* /tokenize against the tokenizer fixture's ids (Hugging Face tokenizers' output) */
    int32_t ids[64];
    r = post(&s, "/tokenize", "{\"content\": \"hello world\"}");
    ck_assert_int_eq(r.status, 200);
    const int32_t hello[] = {94, 97, 109, 107};
    assert_same_ids(ids, get_ids(r.json, "tokens", ids, 64), hello, 4, "/tokenize 'hello world'");
    reply_free(&r);
    /* special tokens in user text are text unless asked for */
    r = post(&s, "/tokenize", "{\"content\": \"<|endoftext|>hello\", \"parse_special\": true}");
    const int32_t special[] = {127, 94, 97, 109};
    assert_same_ids(ids, get_ids(r.json, "tokens", ids, 64), special, 4, "/tokenize with parse_special");
    reply_free(&r);
    r = post(&s, "/tokenize", "{\"content\": \"<|endoftext|>hello\"}");
    const size_t n_plain = get_ids(r.json, "tokens", ids, 64);
    ck_assert_uint_gt(n_plain, 4);
    for (size_t i = 0; i < n_plain; i++) ck_assert_int_ne(ids[i], 127);
    reply_free(&r);
    r = post(&s, "/detokenize", "{\"tokens\": [94, 97, 109, 107]}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get_str(r.json, "content"), " hello world");
    reply_free(&r);
    /* a completion, whole */
    r = post(&s, "/v1/completions", "{\"model\": \"x\", \"prompt\": \"hello world\", \"max_tokens\": 6, \"temperature\": 0, "
                                    "\"ignore_eos\": true}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get_str(r.json, "object"), "text_completion");
    ck_assert_str_eq(get_str(r.json, "model"), "tiny-test");
    ck_assert_ptr_nonnull(strstr(get_str(r.json, "id"), "cmpl-"));
    ck_assert_double_gt(get_num(r.json, "created"), 1.5e9);
    ck_assert_str_eq(get_str(r.json, "choices.0.finish_reason"), "length");
    ck_assert_ptr_nonnull(get_str(r.json, "choices.0.text"));
    ck_assert_double_eq(get_num(r.json, "usage.prompt_tokens"), 4);
    ck_assert_double_eq(get_num(r.json, "usage.completion_tokens"), 6);
    ck_assert_double_eq(get_num(r.json, "usage.total_tokens"), 10);
    reply_free(&r);
    /* a chat completion: the ChatML prompt of the checkpoint's template */
    r = post(&s, "/v1/chat/completions", "{\"model\": \"x\", \"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, "
                                         "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi there\"}]}], "
                                         "\"max_tokens\": 5, \"temperature\": 0}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get_str(r.json, "object"), "chat.completion");
    ck_assert_ptr_nonnull(strstr(get_str(r.json, "id"), "chatcmpl-"));
    ck_assert_str_eq(get_str(r.json, "choices.0.message.role"), "assistant");
    ck_assert_ptr_nonnull(get_str(r.json, "choices.0.message.content"));
    reference ref = open_reference();
    const char *pieces[] = {"<|im_start|>system\n", "be brief", "<|im_end|>\n", "<|im_start|>user\n", "hi there", "<|im_end|>\n",
                            "<|im_start|>assistant\n"};
    size_t n_chat = 0;
    for (size_t i = 0; i < 7; i++) n_chat += tokenize(&ref, pieces[i], ids, 64);
    close_reference(&ref);
    ck_assert_double_eq(get_num(r.json, "usage.prompt_tokens"), (double)n_chat);
    const double chat_tokens = get_num(r.json, "usage.completion_tokens");
    ck_assert(chat_tokens >= 0 && chat_tokens <= 5);
    reply_free(&r);
    /* the metrics count what happened */
    r = request(&s, "GET", "/metrics", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "mamba_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "mamba_requests_total{endpoint=\"/tokenize\",status=\"200\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "# TYPE mamba_tokens_per_second gauge"));
    reply_free(&r);
    ck_assert_double_eq(metric(&s, "mamba_generated_tokens_total"), 6 + chat_tokens);
    ck_assert_double_eq(metric(&s, "mamba_prompt_tokens_total"), 4 + (double)n_chat);
    ck_assert_double_eq(metric_settled(&s, "mamba_active_slots", 0), 0);
    ck_assert_double_eq(metric_settled(&s, "mamba_queue_length", 0), 0);
    /* the loop's time: prompts were prefilled and steps made (a turn's own time is added when
     * it ends, so it is only known to be counted too) */
    ck_assert_double_gt(metric(&s, "mamba_model_prefill_seconds_total"), 0);
    ck_assert_double_gt(metric(&s, "mamba_model_step_seconds_total"), 0);
    ck_assert_double_gt(metric(&s, "mamba_loop_busy_seconds_total"), 0);
    ck_assert_double_gt(metric(&s, "mamba_sample_seconds_total"), 0);
    ck_assert_double_gt(metric(&s, "mamba_emit_seconds_total"), 0);
    ck_assert_double_gt(metric(&s, "mamba_send_seconds_total"), 0);
    /* the README's curl example */
    char url[128], out_path[4400];
    snprintf(url, sizeof url, "http://" HOST ":%d/v1/completions", s.port);
    snprintf(out_path, sizeof out_path, "%s/curl.out", dir);
    const pid_t curl = fork();
    if (curl == 0) {
        if (!freopen(out_path, "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(127);
        execlp("curl", "curl", "-s", url, "-H", "Content-Type: application/json", "-d",
               "{\"prompt\": \"hello world\", \"max_tokens\": 8, \"temperature\": 0}", (char *)NULL);
        _exit(127);
    }
    int curl_status;
    waitpid(curl, &curl_status, 0);
    if (WIFEXITED(curl_status) && WEXITSTATUS(curl_status) == 0) {
        char *out = slurp(out_path, NULL);
        cJSON *j = cJSON_Parse(out);
        ck_assert_msg(get_str(j, "choices.0.text") != NULL, "curl got '%s'", out ? out : "");
        cJSON_Delete(j);
        free(out);
    } else {
        printf("curl is not installed: the README's example was not run\n");
    }
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* Greedy answers, whole and streamed, equal the prompt decoded alone. */
START_TEST(greedy_equals_the_prompt_alone)
{
    server s = start_server(model_dir, NULL);
    reference ref = open_reference();
    const char *prompt = "the hello world 123 it's";
    int32_t ids[256], want[64], got[64];
    const size_t n_prompt = tokenize(&ref, prompt, ids, 256);
    const size_t n_want = greedy(&ref, ids, n_prompt, 40, 0, want);
    char *want_text = detokenize(&ref, want, n_want);
    char body[1024], q[256];
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, \"ignore_eos\": true, \"return_tokens\": true}",
             quoted(prompt, q, sizeof q));
    reply r = post(&s, "/v1/completions", body);
    ck_assert_int_eq(r.status, 200);
    assert_same_ids(got, get_ids(r.json, "choices.0.tokens", got, 64), want, n_want, "whole");
    ck_assert_str_eq(get_str(r.json, "choices.0.text"), want_text);
    reply_free(&r);
    snprintf(body, sizeof body,
             "{\"prompt\": %s, \"max_tokens\": 40, \"temperature\": 0, \"ignore_eos\": true, \"return_tokens\": true, "
             "\"stream\": true, \"stream_options\": {\"include_usage\": true}}",
             quoted(prompt, q, sizeof q));
    streamed *st = malloc(sizeof *st);
    stream_request(&s, "/v1/completions", body, st);
    ck_assert_int_eq(st->status, 200);
    ck_assert_msg(st->done, "no [DONE] event");
    ck_assert_uint_ge(st->events, 4);
    assert_same_ids(st->tokens, st->n_tokens, want, n_want, "streamed");
    ck_assert_str_eq(st->text, want_text);
    ck_assert_str_eq(st->finish, "length");
    ck_assert_int_eq(st->completion_tokens, 40);
    /* the same prompt as token ids */
    char list[2048];
    size_t at = 0;
    for (size_t i = 0; i < n_prompt; i++) at += (size_t)snprintf(list + at, sizeof list - at, "%s%d", i ? "," : "", ids[i]);
    snprintf(body, sizeof body, "{\"prompt\": [%s], \"max_tokens\": 40, \"temperature\": 0, \"ignore_eos\": true, \"return_tokens\": true}", list);
    r = post(&s, "/v1/completions", body);
    assert_same_ids(got, get_ids(r.json, "choices.0.tokens", got, 64), want, n_want, "token-id prompt");
    reply_free(&r);
    /* without ignore_eos the answer ends where the reference meets the EOS */
    int32_t until_eos[512];
    const size_t n_eos = greedy(&ref, ids, n_prompt, 512, 1, until_eos);
    snprintf(body, sizeof body, "{\"prompt\": %s, \"max_tokens\": 512, \"temperature\": 0, \"return_tokens\": true}", quoted(prompt, q, sizeof q));
    r = post(&s, "/v1/completions", body);
    int32_t *long_got = malloc(600 * sizeof *long_got);
    assert_same_ids(long_got, get_ids(r.json, "choices.0.tokens", long_got, 600), until_eos, n_eos, "up to the EOS");
    ck_assert_str_eq(get_str(r.json, "choices.0.finish_reason"), n_eos < 512 ? "stop" : "length");
    printf("greedy: %zu tokens before the EOS\n", n_eos);
    reply_free(&r);
    free(long_got);
    free(st);
    free(want_text);
    close_reference(&ref);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* Sampled with a seed: the streamed text assembles to the whole answer's, for completions and
 * chat; the same seed gives the same text again. */
START_TEST(streamed_text_equals_whole_text)
{
    server s = start_server(model_dir, NULL);
    static const char *const bodies[2][2] = {
        {"/v1/completions", "{\"prompt\": \"hello world the\", \"max_tokens\": 48, \"temperature\": 0.9, \"top_k\": 50, "
                            "\"top_p\": 0.95, \"min_p\": 0.02, \"seed\": 1234, \"ignore_eos\": true%s}"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"max_tokens\": 48, "
                                 "\"temperature\": 1.1, \"seed\": 99%s}"},
    };
    streamed *st = malloc(sizeof *st);
    for (int k = 0; k < 2; k++) {
        char body[512];
        snprintf(body, sizeof body, bodies[k][1], "");
        reply a = post(&s, bodies[k][0], body), b = post(&s, bodies[k][0], body);
        ck_assert_int_eq(a.status, 200);
        const char *ta = get_str(a.json, k ? "choices.0.message.content" : "choices.0.text");
        ck_assert_ptr_nonnull(ta);
        ck_assert_str_eq(ta, get_str(b.json, k ? "choices.0.message.content" : "choices.0.text"));
        snprintf(body, sizeof body, bodies[k][1], ", \"stream\": true");
        stream_request(&s, bodies[k][0], body, st);
        ck_assert_int_eq(st->status, 200);
        ck_assert(st->done);
        ck_assert_str_eq(st->text, ta);
        ck_assert_str_eq(st->finish, get_str(a.json, "choices.0.finish_reason"));
        printf("%s sampled: %zu bytes in %d events\n", bodies[k][0], strlen(ta), st->events);
        reply_free(&a);
        reply_free(&b);
    }
    free(st);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* ---- concurrency ------------------------------------------------------------------------------------ */

#define N_CLIENTS 8

typedef struct client {
    http_conn *conn;      /* sent but for its last byte                                   */
    char body[16384];
    int stream;
    int32_t got[128];
    size_t n_got;
    int status;
} client;

static void *run_client(void *arg)
{
    client *c = arg;
    if (c->stream) {
        streamed *st = malloc(sizeof *st);
        read_stream(c->conn, st);
        c->status = st->status;
        c->n_got = st->n_tokens < 128 ? st->n_tokens : 128;
        memcpy(c->got, st->tokens, c->n_got * sizeof *c->got);
        free(st);
    } else {
        c->status = http_read_head(c->conn);
        char body[65536];
        size_t n = 0;
        long k;
        while (n + 1 < sizeof body && (k = http_read_body(c->conn, body + n, sizeof body - n - 1)) > 0) n += (size_t)k;
        body[n] = 0;
        http_close(c->conn);
        cJSON *j = cJSON_Parse(body);
        c->n_got = get_ids(j, "choices.0.tokens", c->got, 128);
        cJSON_Delete(j);
    }
    return NULL;
}

/* 8 clients at once on 3 slots (5 wait in the queue), prompts of 3 to ~1500 tokens (prefilled
 * in chunks between the others' steps), half of them streamed: each gets exactly the tokens of
 * its prompt decoded alone. The requests are sent but for their last bytes, then completed
 * together, so that they overlap however slow this process runs (valgrind, sanitizers). */
START_TEST(concurrent_clients_get_their_own_tokens)
{
    server s = start_server(model_dir, "--slots", "3", "--queue", "16", "--cache-mb", "0", NULL);
    reference ref = open_reference();
    static const char *const words[] = {"the", "hello", "world", "it's", "123", "aaaa", "hi", "x"};
    client *cl = calloc(N_CLIENTS, sizeof *cl);
    pthread_t th[N_CLIENTS];
    int32_t *want = malloc((size_t)N_CLIENTS * 64 * sizeof *want), *ids = malloc(4096 * sizeof *ids);
    size_t n_want[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        char prompt[8192] = "";
        const int n_words = i == 5 ? 700 : 2 + 5 * i;
        size_t at = 0;
        for (int w = 0; w < n_words; w++)
            at += (size_t)snprintf(prompt + at, sizeof prompt - at, "%s%s", w ? " " : "", words[(w * 7 + i) % 8]);
        const size_t n_prompt = tokenize(&ref, prompt, ids, 4096);
        const size_t max_tokens = 24 + 4 * (size_t)i;
        n_want[i] = greedy(&ref, ids, n_prompt, max_tokens, 0, want + (size_t)i * 64);
        cl[i].stream = i % 2;
        snprintf(cl[i].body, sizeof cl[i].body,
                 "{\"prompt\": \"%s\", \"max_tokens\": %zu, \"temperature\": 0, \"ignore_eos\": true, \"return_tokens\": true, "
                 "\"stream\": %s}",
                 prompt, max_tokens, cl[i].stream ? "true" : "false");
    }
    char err[256];
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i].conn = http_send_held(HOST, s.port, "POST", "/v1/completions", NULL, cl[i].body, strlen(cl[i].body), TIMEOUT_S,
                                    err, sizeof err);
        ck_assert_msg(cl[i].conn != NULL, "%s", err);
    }
    for (int i = 0; i < N_CLIENTS; i++) ck_assert(http_release(cl[i].conn));
    for (int i = 0; i < N_CLIENTS; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, run_client, &cl[i]), 0);
    for (int i = 0; i < N_CLIENTS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N_CLIENTS; i++) {
        char what[64];
        snprintf(what, sizeof what, "client %d (%s)", i, cl[i].stream ? "streamed" : "whole");
        ck_assert_msg(cl[i].status == 200, "%s: status %d", what, cl[i].status);
        assert_same_ids(cl[i].got, cl[i].n_got, want + (size_t)i * 64, n_want[i], what);
    }
    ck_assert_double_eq(metric(&s, "mamba_generated_tokens_total"), 8 * 24 + 4 * 28);
    /* they ran together: steps of more than one sequence */
    const double mean_batch = metric(&s, "mamba_decode_step_sequences_total") / metric(&s, "mamba_decode_steps_total");
    printf("8 clients on 3 slots: a mean batch of %.2f sequences a step\n", mean_batch);
    ck_assert_double_gt(mean_batch, 1.5);
    free(want);
    free(ids);
    free(cl);
    close_reference(&ref);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* ---- stop strings and the prompt cache ------------------------------------------------------------ */

START_TEST(stop_strings_end_the_text_before_them)
{
    server s = start_server(model_dir, NULL);
    reference ref = open_reference();
    int32_t ids[64], want[64];
    const size_t n_prompt = tokenize(&ref, "hello the world", ids, 64);
    const size_t n_want = greedy(&ref, ids, n_prompt, 48, 0, want);
    char *full = detokenize(&ref, want, n_want);
    const size_t len = strlen(full);
    ck_assert_uint_gt(len, 24);
    /* a stop string from the middle of the reference text, and one that never comes */
    char stop[8], q[64], q2[64];
    snprintf(stop, sizeof stop, "%.3s", full + len / 2);
    const size_t cut = (size_t)(strstr(full, stop) - full);
    streamed *st = malloc(sizeof *st);
    for (int streamed_too = 0; streamed_too < 2; streamed_too++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"prompt\": \"hello the world\", \"max_tokens\": 48, \"temperature\": 0, \"ignore_eos\": true, "
                 "\"stop\": [%s, %s], \"stream\": %s}",
                 quoted("~~never~~", q2, sizeof q2), quoted(stop, q, sizeof q), streamed_too ? "true" : "false");
        const char *text, *finish;
        reply r = {0, NULL, NULL};
        if (streamed_too) {
            stream_request(&s, "/v1/completions", body, st);
            text = st->text;
            finish = st->finish;
        } else {
            r = post(&s, "/v1/completions", body);
            ck_assert_int_eq(r.status, 200);
            text = get_str(r.json, "choices.0.text");
            finish = get_str(r.json, "choices.0.finish_reason");
        }
        ck_assert_msg(strlen(text) == cut && strncmp(text, full, cut) == 0, "stop '%s': got '%s', expected the first %zu bytes of '%s'",
                      stop, text, cut, full);
        ck_assert_str_eq(finish, "stop");
        reply_free(&r);
    }
    /* a single string works too */
    char body[512];
    snprintf(body, sizeof body, "{\"prompt\": \"hello the world\", \"max_tokens\": 48, \"temperature\": 0, \"ignore_eos\": true, \"stop\": %s}",
             quoted(stop, q, sizeof q));
    reply r = post(&s, "/v1/completions", body);
    ck_assert_uint_eq(strlen(get_str(r.json, "choices.0.text")), cut);
    reply_free(&r);
    free(st);
    free(full);
    close_reference(&ref);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* A prompt that extends an earlier prompt and its answer restores the saved state: a hit in the
 * metrics, cached tokens in the usage, and still the tokens of the whole prompt decoded alone. */
START_TEST(prompt_cache_resumes_a_conversation)
{
    server s = start_server(model_dir, "--cache-mb", "8", NULL);
    reference ref = open_reference();
    int32_t got[64], want[64], *ids = malloc(1024 * sizeof *ids);
    reply a = post(&s, "/v1/completions", "{\"prompt\": \"hello the world\", \"max_tokens\": 16, \"temperature\": 0, "
                                          "\"ignore_eos\": true, \"return_tokens\": true}");
    ck_assert_int_eq(a.status, 200);
    ck_assert_double_eq(metric(&s, "mamba_prompt_cache_misses_total"), 1);
    /* the next turn as token ids: the first prompt, the answer, and more */
    int32_t turn[256];
    size_t n = tokenize(&ref, "hello the world", turn, 256);
    const size_t first = n;
    n += get_ids(a.json, "choices.0.tokens", turn + n, 256 - n);
    n += tokenize(&ref, " hi the 123", turn + n, 256 - n);
    char list[4096], body[8192];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) at += (size_t)snprintf(list + at, sizeof list - at, "%s%d", i ? "," : "", turn[i]);
    snprintf(body, sizeof body, "{\"prompt\": [%s], \"max_tokens\": 20, \"temperature\": 0, \"ignore_eos\": true, \"return_tokens\": true}", list);
    reply b = post(&s, "/v1/completions", body);
    ck_assert_int_eq(b.status, 200);
    ck_assert_double_eq(metric(&s, "mamba_prompt_cache_hits_total"), 1);
    /* the state after the prompt and all but the last answer token was saved */
    ck_assert_double_eq(get_num(b.json, "usage.prompt_tokens_details.cached_tokens"), (double)(first + 15));
    const size_t n_want = greedy(&ref, turn, n, 20, 0, want);
    assert_same_ids(got, get_ids(b.json, "choices.0.tokens", got, 64), want, n_want, "after a cache hit");
    ck_assert_double_gt(metric(&s, "mamba_prompt_cache_bytes"), 0);
    /* the same request again: the whole prompt is saved, nothing is prefilled */
    reply c = post(&s, "/v1/completions", body);
    ck_assert_double_eq(get_num(c.json, "usage.prompt_tokens_details.cached_tokens"), (double)n);
    assert_same_ids(got, get_ids(c.json, "choices.0.tokens", got, 64), want, n_want, "the whole prompt from the cache");
    reply_free(&a);
    reply_free(&b);
    reply_free(&c);
    free(ids);
    close_reference(&ref);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* ---- bad input ---------------------------------------------------------------------------------------- */

START_TEST(bad_requests_get_openai_errors)
{
    server s = start_server(model_dir, "--max-tokens", "100", NULL);
    static const struct { const char *path, *body; const char *param; } bad[] = {
        {"/v1/completions", "{\"prompt\": \"x\"", NULL},
        {"/v1/completions", "", NULL},
        {"/v1/completions", "[1, 2]", NULL},
        {"/v1/completions", "{\"prompt\": \"x\"} trailing", NULL},
        {"/v1/completions", "{\"max_tokens\": 4}", "prompt"},
        {"/v1/completions", "{\"prompt\": 7}", "prompt"},
        {"/v1/completions", "{\"prompt\": \"\"}", "prompt"},
        {"/v1/completions", "{\"prompt\": [1, -2]}", "prompt"},
        {"/v1/completions", "{\"prompt\": [1, 100000]}", "prompt"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 101}", "max_tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 2.5}", "max_tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": \"4\"}", "max_tokens"},
        {"/v1/completions", "{\"prompt\": \"x\", \"temperature\": -1}", "temperature"},
        {"/v1/completions", "{\"prompt\": \"x\", \"top_p\": 1.5}", "top_p"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stream\": \"yes\"}", "stream"},
        {"/v1/completions", "{\"prompt\": \"x\", \"seed\": \"s\"}", "seed"},
        {"/v1/completions", "{\"prompt\": \"x\", \"n\": 3}", "n"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "stop"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stop\": [\"\"]}", "stop"},
        {"/v1/completions", "{\"prompt\": \"x\", \"user\": 5}", "user"},
        {"/v1/completions", "{\"prompt\": \"x\", \"logit_bias\": [1]}", "logit_bias"},
        {"/v1/completions", "{\"prompt\": \"x\", \"frequency_penalty\": 0.5}", "frequency_penalty"},
        {"/v1/completions", "{\"prompt\": \"x\", \"model\": 1}", "model"},
        {"/v1/completions", "{\"prompt\": [\"a\", \"b\"]}", "prompt"},
        {"/v1/chat/completions", "{\"messages\": []}", "messages"},
        {"/v1/chat/completions", "{\"messages\": {}}", "messages"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", "messages[0].role"},
        {"/v1/chat/completions", "{\"messages\": [{\"content\": \"x\"}]}", "messages[0].role"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", "messages[0].content"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "messages[0].content"},
        {"/tokenize", "{\"text\": \"x\"}", "content"},
        {"/detokenize", "{\"tokens\": [1, \"a\"]}", "tokens"},
        {"/detokenize", "{\"tokens\": [100000]}", "tokens"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        reply r = post(&s, bad[i].path, bad[i].body);
        char what[300];
        snprintf(what, sizeof what, "%s %s", bad[i].path, bad[i].body);
        assert_error(&r, 400, what);
        if (bad[i].param) ck_assert_msg(get_str(r.json, "error.param") && strcmp(get_str(r.json, "error.param"), bad[i].param) == 0,
                                        "%s: param %s, expected %s", what, get_str(r.json, "error.param"), bad[i].param);
        reply_free(&r);
    }
    /* invalid UTF-8 in a prompt and in a message; JSON nested too deep */
    reply r = post(&s, "/v1/completions", "{\"prompt\": \"ab\xc3\x28\"}");
    assert_error(&r, 400, "invalid UTF-8 in the prompt");
    ck_assert_ptr_nonnull(strstr(get_str(r.json, "error.message"), "UTF-8"));
    reply_free(&r);
    r = post(&s, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]}");
    assert_error(&r, 400, "a surrogate in a message");
    reply_free(&r);
    char deep[400];
    const int open = snprintf(deep, sizeof deep, "{\"prompt\": \"x\", \"a\": ");
    memset(deep + open, '[', 100);
    deep[open + 100] = 0;
    r = post(&s, "/v1/completions", deep);
    assert_error(&r, 400, "nested too deep");
    reply_free(&r);
    /* a body over 1 MiB: declared, and sent chunked */
    const size_t big = (1u << 20) + 10;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[big] = 0;
    huge[0] = '{';
    r = post(&s, "/v1/completions", huge);
    assert_error(&r, 413, "a 1 MiB body");
    reply_free(&r);
    char err[256];
    http_conn *c = http_send(HOST, s.port, "POST", "/v1/completions", "Transfer-Encoding: chunked\r\n", NULL, 0, TIMEOUT_S, err, sizeof err);
    ck_assert_ptr_nonnull(c);
    char head[32];
    for (size_t sent = 0; sent < big; sent += 65536) {
        snprintf(head, sizeof head, "10000\r\n");
        if (send(http_fd(c), head, strlen(head), MSG_NOSIGNAL) < 0 || send(http_fd(c), huge, 65536, MSG_NOSIGNAL) < 0 ||
            send(http_fd(c), "\r\n", 2, MSG_NOSIGNAL) < 0)
            break; /* the server may answer and close before all of it is sent */
    }
    send(http_fd(c), "0\r\n\r\n", 5, MSG_NOSIGNAL);
    ck_assert_int_eq(http_read_head(c), 413);
    http_close(c);
    free(huge);
    /* unknown path, wrong method */
    r = request(&s, "GET", "/v1/nothing", NULL, NULL);
    assert_error(&r, 404, "unknown path");
    reply_free(&r);
    r = request(&s, "DELETE", "/v1/models", NULL, NULL);
    assert_error(&r, 405, "DELETE /v1/models");
    reply_free(&r);
    r = request(&s, "GET", "/v1/completions", NULL, NULL);
    assert_error(&r, 405, "GET /v1/completions");
    reply_free(&r);
    /* still serving */
    r = post(&s, "/v1/completions", "{\"prompt\": \"hello\", \"max_tokens\": 3, \"temperature\": 0, \"ignore_eos\": true}");
    ck_assert_int_eq(r.status, 200);
    ck_assert_double_eq(get_num(r.json, "usage.completion_tokens"), 3);
    reply_free(&r);
    ck_assert_double_eq(metric_settled(&s, "mamba_active_slots", 0), 0);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

START_TEST(api_key_is_required_when_set)
{
    server s = start_server(model_dir, "--api-key", "sekrit-123", NULL);
    const char *body = "{\"prompt\": \"hello\", \"max_tokens\": 2}";
    reply r = post(&s, "/v1/completions", body);
    assert_error(&r, 401, "no key");
    ck_assert_str_eq(get_str(r.json, "error.code"), "invalid_api_key");
    reply_free(&r);
    r = request(&s, "POST", "/v1/completions", "Authorization: Bearer sekrit-12\r\n", body);
    assert_error(&r, 401, "a wrong key");
    reply_free(&r);
    r = request(&s, "GET", "/v1/models", "Authorization: Basic c2Vrcml0LTEyMw==\r\n", NULL);
    assert_error(&r, 401, "another scheme");
    reply_free(&r);
    r = request(&s, "POST", "/v1/completions", "Authorization: Bearer sekrit-123\r\n", body);
    ck_assert_int_eq(r.status, 200);
    reply_free(&r);
    r = request(&s, "GET", "/health", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    reply_free(&r);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* ---- load and faults ------------------------------------------------------------------------------- */

/* Open a stream that would run long and read until its first token; the connection stays open. */
static http_conn *long_stream(const server *s)
{
    const char *body = "{\"prompt\": \"hello\", \"max_tokens\": 1000000, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true}";
    char err[256];
    http_conn *c = http_send(HOST, s->port, "POST", "/v1/completions", NULL, body, strlen(body), TIMEOUT_S, err, sizeof err);
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(http_read_head(c), 200);
    char *data;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(http_next_event(c, &data), 1);
        free(data);
    }
    return c;
}

START_TEST(full_queue_answers_503)
{
    server s = start_server(model_dir, "--slots", "1", "--queue", "0", "--max-tokens", "1000000", NULL);
    http_conn *c = long_stream(&s);
    reply r = post(&s, "/v1/completions", "{\"prompt\": \"hello\", \"max_tokens\": 2}");
    assert_error(&r, 503, "a request past --slots 1 --queue 0");
    ck_assert_str_eq(get_str(r.json, "error.code"), "overloaded");
    reply_free(&r);
    http_close(c);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* A client that leaves mid-stream frees its slot at once: the only slot serves the next request. */
START_TEST(disconnect_frees_the_slot)
{
    server s = start_server(model_dir, "--slots", "1", "--queue", "0", "--max-tokens", "1000000", NULL);
    http_conn *c = long_stream(&s);
    ck_assert_double_eq(metric(&s, "mamba_active_slots"), 1);
    http_close(c);
    int freed = 0;
    for (int i = 0; i < 100 && !freed; i++) {
        freed = metric(&s, "mamba_active_slots") == 0;
        if (!freed) usleep(10000);
    }
    ck_assert_msg(freed, "the slot was still busy 1 s after the client left");
    const double generated = metric(&s, "mamba_generated_tokens_total");
    usleep(100000);
    ck_assert_double_eq(metric(&s, "mamba_generated_tokens_total"), generated);
    reply r = post(&s, "/v1/completions", "{\"prompt\": \"hello\", \"max_tokens\": 2, \"ignore_eos\": true}");
    ck_assert_int_eq(r.status, 200);
    reply_free(&r);
    /* the same for a whole (not streamed) answer */
    const char *body = "{\"prompt\": \"hello\", \"max_tokens\": 1000000, \"ignore_eos\": true}";
    char err[256];
    c = http_send(HOST, s.port, "POST", "/v1/completions", NULL, body, strlen(body), TIMEOUT_S, err, sizeof err);
    ck_assert_ptr_nonnull(c);
    for (int i = 0; i < 200 && metric(&s, "mamba_active_slots") != 1; i++) usleep(5000);
    http_close(c);
    freed = 0;
    for (int i = 0; i < 100 && !freed; i++) {
        freed = metric(&s, "mamba_active_slots") == 0;
        if (!freed) usleep(10000);
    }
    ck_assert_msg(freed, "the slot of a whole answer was still busy 1 s after the client left");
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

/* SIGTERM with a stream running: it ends (an error event, then [DONE]) and the server exits 0. */
START_TEST(sigterm_ends_requests_and_exits_0)
{
    server s = start_server(model_dir, "--max-tokens", "1000000", NULL);
    http_conn *c = long_stream(&s);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kill(s.pid, SIGTERM);
    char *data;
    int events = 0, done = 0, error = 0;
    while (http_next_event(c, &data) == 1) {
        events++;
        done |= strcmp(data, "[DONE]") == 0;
        error |= strstr(data, "\"error\"") != NULL;
        free(data);
    }
    http_close(c);
    ck_assert_msg(done && error, "the stream ended without an error and [DONE] (%d events)", events);
    int status;
    ck_assert_int_eq(waitpid(s.pid, &status, 0), s.pid);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double took = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("SIGTERM to exit: %.2f s\n", took);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_double_lt(took, 8);
}
END_TEST

/* Without a tokenizer the server takes token ids and answers with token ids. */
START_TEST(token_ids_without_a_tokenizer)
{
    server s = start_server(data_path(0, "models/tiny"), NULL);
    reply r = post(&s, "/v1/completions", "{\"prompt\": [1, 2, 3], \"max_tokens\": 5, \"temperature\": 0, \"return_tokens\": true, \"ignore_eos\": true}");
    ck_assert_int_eq(r.status, 200);
    int32_t got[16];
    ck_assert_uint_eq(get_ids(r.json, "choices.0.tokens", got, 16), 5);
    reply_free(&r);
    r = post(&s, "/v1/completions", "{\"prompt\": \"text\"}");
    assert_error(&r, 501, "a text prompt without a tokenizer");
    reply_free(&r);
    r = post(&s, "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}");
    assert_error(&r, 501, "chat without a tokenizer");
    reply_free(&r);
    r = post(&s, "/tokenize", "{\"content\": \"x\"}");
    assert_error(&r, 501, "/tokenize without a tokenizer");
    reply_free(&r);
    ck_assert_int_eq(stop_server(&s, 10), 0);
}
END_TEST

START_TEST(usage_errors)
{
    static const char *const cases[][6] = {
        {"serve", "--help", NULL},
        {"serve", NULL},
        {"serve", "--model", "x", "--port", "70000", NULL},
        {"serve", "--model", "x", "--slots", "0", NULL},
        {"serve", "--model", "x", "--chat-template", "jinja", NULL},
        {"serve", "--model", "/nonexistent/model", "--port", "0", NULL},
    };
    static const int want[] = {0, 2, 2, 2, 2, 1};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const pid_t pid = fork();
        if (pid == 0) {
            if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(127);
            const char *argv[8] = {MAMBA_CLI};
            for (int k = 0; k < 6 && cases[i][k]; k++) argv[k + 1] = cases[i][k];
            execv(MAMBA_CLI, (char *const *)argv);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == want[i], "case %zu: status %d, expected %d", i,
                      WEXITSTATUS(status), want[i]);
    }
}
END_TEST

/* ---- the parts on their own ------------------------------------------------------------------------- */

typedef struct rendered { char text[1024]; size_t len; char marks[1024]; } rendered;

static int collect(void *user, const char *text, size_t len, int is_content)
{
    rendered *r = user;
    memcpy(r->text + r->len, text, len);
    memset(r->marks + r->len, is_content ? 'c' : 'm', len);
    r->len += len;
    r->text[r->len] = r->marks[r->len] = 0;
    return 0;
}

START_TEST(chat_formats_render_and_are_recognized)
{
    const chat_message msgs[] = {{"system", "S", 1}, {"user", "hi <|im_end|>", 13}, {"assistant", "yo", 2}, {"user", "q", 1}};
    chat_format f;
    ck_assert(chat_format_by_name("chatml", &f));
    rendered r = {0};
    chat_format_render(&f, msgs, 4, 1, collect, &r);
    ck_assert_str_eq(r.text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi <|im_end|><|im_end|>\n"
                             "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
    /* the user's "<|im_end|>" is content, the format's is markup */
    const char *users = strstr(r.text, "hi <|im_end|>");
    for (size_t i = 0; i < 13; i++) ck_assert_int_eq(r.marks[users - r.text + (long)i], 'c');
    ck_assert_int_eq(r.marks[users - r.text + 13], 'm');
    const char *stops[4];
    ck_assert_uint_eq(chat_format_stops(&f, stops, 4), 1);
    ck_assert_str_eq(stops[0], "<|im_end|>");
    /* the template of the Mamba chat checkpoints (havenhq/mamba-chat), with its eos_token */
    const char *zephyr_tpl =
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
    chat_format_detect(zephyr_tpl, "<|endoftext|>", &f);
    ck_assert_str_eq(chat_format_name(&f), "zephyr");
    memset(&r, 0, sizeof r);
    chat_format_render(&f, msgs + 1, 1, 1, collect, &r);
    ck_assert_str_eq(r.text, "<|user|>\nhi <|im_end|><|endoftext|>\n<|assistant|>\n");
    ck_assert_uint_eq(chat_format_stops(&f, stops, 4), 2);
    ck_assert_str_eq(stops[0], "<|endoftext|>");
    chat_format_detect("{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}", "</s>", &f);
    ck_assert_str_eq(chat_format_name(&f), "plain");
    memset(&r, 0, sizeof r);
    chat_format_render(&f, msgs, 2, 1, collect, &r);
    ck_assert_str_eq(r.text, "System: S\nUser: hi <|im_end|>\nAssistant:");
    ck_assert(!chat_format_by_name("jinja", &f));
    /* from a checkpoint directory */
    char err[256];
    ck_assert_int_eq(chat_format_from_dir(model_dir, &f, err, sizeof err), 1);
    ck_assert_str_eq(chat_format_name(&f), "chatml");
    ck_assert_int_eq(chat_format_from_dir(dir, &f, err, sizeof err), 0);
    char path[4400];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_text(path, "{\"chat_template\": ");
    ck_assert_int_eq(chat_format_from_dir(dir, &f, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "tokenizer_config.json"));
}
END_TEST

START_TEST(stop_search_and_hold_back)
{
    const char *stops[] = {"abc", "bd", "\n\n"};
    ck_assert_uint_eq(stop_find(stops, 3, "xxabd", 5, 0), 3);
    ck_assert_uint_eq(stop_find(stops, 3, "xab", 3, 0), 3);
    ck_assert_uint_eq(stop_find(stops, 3, "xabc", 4, 3), 1);   /* straddles what was searched before */
    ck_assert_uint_eq(stop_find(stops, 3, "q\n\nabc", 6, 0), 1); /* the earliest wins */
    ck_assert_uint_eq(stop_partial(stops, 3, "xxab", 4), 2);
    ck_assert_uint_eq(stop_partial(stops, 3, "xxb", 3), 1);
    ck_assert_uint_eq(stop_partial(stops, 3, "xx\n", 3), 1);
    ck_assert_uint_eq(stop_partial(stops, 3, "xyz", 3), 0);
    ck_assert_uint_eq(stop_partial(stops, 3, "", 0), 0);
}
END_TEST

START_TEST(prompt_cache_keeps_the_longest_prefix_and_evicts_lru)
{
    const size_t state_bytes = 1000;
    float logits[4] = {1, 2, 3, 4};
    const int32_t a[] = {1, 2, 3}, b[] = {1, 2, 3, 4, 5}, c[] = {9, 9};
    /* room for two entries of this size, in bytes and in a pool of 3 slots */
    const size_t entry = 1000 + 16 + 5 * 4 + 200;
    prompt_cache *pc = prompt_cache_create(2 * entry + 200, 3);
    /* a pool's slots: the entries of one key token its bytes hold, each counted as put counts it */
    const size_t one = prompt_cache_entry_bytes(1, state_bytes, 4);
    ck_assert_uint_eq(one, prompt_cache_entry_bytes(3, state_bytes, 4) - 2 * sizeof(int32_t));
    ck_assert_uint_eq(prompt_cache_max_entries(10 * one, state_bytes, 4), 10);
    ck_assert_uint_eq(prompt_cache_max_entries(10 * one - 1, state_bytes, 4), 9);
    ck_assert_uint_eq(prompt_cache_max_entries(one - 1, state_bytes, 4), 0);
    size_t sa, sb, sc;
    ck_assert(prompt_cache_put(pc, &(prompt_cache_entry){a, 3, 0, state_bytes, logits, 4}, &sa));
    ck_assert(prompt_cache_put(pc, &(prompt_cache_entry){b, 5, 0, state_bytes, logits, 4}, &sb));
    ck_assert_uint_ne(sa, sb);
    ck_assert_uint_lt(sa, 3);
    ck_assert_uint_lt(sb, 3);
    prompt_cache_entry e;
    const int32_t q[] = {1, 2, 3, 4, 5, 6};
    ck_assert(prompt_cache_lookup(pc, q, 6, &e));
    ck_assert_uint_eq(e.n_ids, 5);
    ck_assert_uint_eq(e.slot, sb);
    ck_assert(prompt_cache_lookup(pc, q, 4, &e)); /* only a fits */
    ck_assert_uint_eq(e.n_ids, 3);
    ck_assert_uint_eq(e.slot, sa);
    ck_assert(!prompt_cache_lookup(pc, c, 2, &e));
    /* a third entry evicts the least recently used, b (a was just used), and takes its slot */
    ck_assert(prompt_cache_put(pc, &(prompt_cache_entry){c, 2, 0, state_bytes, logits, 4}, &sc));
    ck_assert_uint_eq(sc, sb);
    ck_assert_uint_eq(prompt_cache_count(pc), 2);
    ck_assert(prompt_cache_lookup(pc, q, 6, &e));
    ck_assert_uint_eq(e.n_ids, 3);
    ck_assert(prompt_cache_lookup(pc, c, 2, &e));
    ck_assert_float_eq(e.logits[3], 4);
    /* an entry larger than the cap is refused */
    ck_assert(!prompt_cache_put(pc, &(prompt_cache_entry){c, 2, 0, 10000, logits, 4}, &sc));
    ck_assert_uint_le(prompt_cache_bytes(pc), 2 * entry + 200);
    /* an entry whose state could not be stored leaves */
    prompt_cache_forget(pc, sa);
    ck_assert(!prompt_cache_lookup(pc, q, 6, &e));
    ck_assert_uint_eq(prompt_cache_count(pc), 1);
    prompt_cache_free(pc);
    /* the slots bound the entries too: one slot, small entries */
    pc = prompt_cache_create(100000, 1);
    ck_assert(prompt_cache_put(pc, &(prompt_cache_entry){a, 3, 0, 10, logits, 4}, &sa));
    ck_assert(prompt_cache_put(pc, &(prompt_cache_entry){c, 2, 0, 10, logits, 4}, &sc));
    ck_assert_uint_eq(sa, 0);
    ck_assert_uint_eq(sc, 0);
    ck_assert_uint_eq(prompt_cache_count(pc), 1);
    ck_assert(!prompt_cache_lookup(pc, a, 3, &e));
    prompt_cache_free(pc);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("serve");
    TCase *tc = tcase_create("serve");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, chat_formats_render_and_are_recognized);
    tcase_add_test(tc, stop_search_and_hold_back);
    tcase_add_test(tc, prompt_cache_keeps_the_longest_prefix_and_evicts_lru);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, endpoints_answer_in_openai_shapes);
    tcase_add_test(tc, greedy_equals_the_prompt_alone);
    tcase_add_test(tc, streamed_text_equals_whole_text);
    tcase_add_test(tc, concurrent_clients_get_their_own_tokens);
    tcase_add_test(tc, stop_strings_end_the_text_before_them);
    tcase_add_test(tc, prompt_cache_resumes_a_conversation);
    tcase_add_test(tc, bad_requests_get_openai_errors);
    tcase_add_test(tc, api_key_is_required_when_set);
    tcase_add_test(tc, full_queue_answers_503);
    tcase_add_test(tc, disconnect_frees_the_slot);
    tcase_add_test(tc, sigterm_ends_requests_and_exits_0);
    tcase_add_test(tc, token_ids_without_a_tokenizer);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
