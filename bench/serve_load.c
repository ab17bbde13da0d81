/* mamba-bench --mode=serve: a load generator for a running `mamba serve`. N clients at once,
 * each sending streamed completions of random token-id prompts over plain sockets, one after
 * another until R requests are done; reported: the aggregate generated tokens/s, time to the
 * first token (median, p95), each request's own decoding rate after its first token, and
 * (--probe) the time to the first token of single requests sent while the N stream. */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "bench.h"
#include "http_client.h"

static const char usage[] =
    "usage: mamba-bench --mode=serve --url http://HOST:PORT [--clients N] [--requests R]\n"
    "                   [--prompt-tokens P] [--max-tokens T] [--temperature X] [--api-key KEY]\n"
    "                   [--timeout S] [--seed S] [--probe P] [--probes K] [--json]\n"
    "\n"
    "Load a running `mamba serve`: N concurrent clients (default 8) send R streamed completions\n"
    "(default N) of P random prompt token ids (default 128) and T generated tokens each (default\n"
    "128, ignore_eos), over plain sockets. Reports the aggregate generated tokens/s (all tokens\n"
    "over the wall time), the time to the first token (median, p95), and per request its tokens/s\n"
    "after the first token (median, p5), and the streaming rate: N times that median, the rate\n"
    "of N sequences decoding together (what `--mode=decode --batch=N` measures without a server).\n"
    "--probe P: once all N clients stream, one more client sends K (--probes, default 5) requests\n"
    "of P prompt tokens and 1 generated token one after another; their time to the first token\n"
    "(median, max) is the wait of a new prompt while the others stream.\n"
    "--json adds one JSON line with the figures. The prompts\n"
    "come from --seed (default: the clock), so that runs do not hit the server's prompt cache.\n"
    "Exit status: 0 when every request (and probe) succeeded, 1 otherwise, 2 usage error.\n";

typedef struct load {
    char host[256];
    int port;
    int clients, requests, prompt_tokens, max_tokens, probe_tokens, probes;
    int concurrent;             /* requests at once: the fewer of clients and requests */
    double temperature, timeout_s;
    unsigned long long seed;
    const char *api_key;
    char hdr[512];              /* its Authorization header line, or empty */
    int json;
    size_t vocab;
    /* shared */
    pthread_mutex_t mu;
    int next;
    double *ttft_ms, *rate, *probe_ms;
    int *tokens, *ok;
    int streaming;              /* requests that have had their first token */
    int finished;               /* the clients are done: a waiting probe gives up */
    int probes_done;
    char error[256];
} load;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_url(const char *url, load *L)
{
    if (strncmp(url, "http://", 7) != 0) return 0;
    const char *h = url + 7, *colon;
    if (*h == '[') {
        const char *end = strchr(h, ']');
        if (!end || end[1] != ':') return 0;
        snprintf(L->host, sizeof L->host, "%.*s", (int)(end - h - 1), h + 1);
        colon = end + 1;
    } else {
        colon = strchr(h, ':');
        if (!colon) return 0;
        snprintf(L->host, sizeof L->host, "%.*s", (int)(colon - h), h);
    }
    char *end;
    const long p = strtol(colon + 1, &end, 10);
    if (p <= 0 || p > 65535 || (*end && strcmp(end, "/") != 0)) return 0;
    L->port = (int)p;
    return L->host[0] != 0;
}

/* The model's vocabulary from GET /v1/models (its vocab_size), to draw prompt ids from. */
static int model_vocab(load *L)
{
    char *body = NULL;
    const int status = http_fetch(L->host, L->port, "GET", "/v1/models", L->hdr[0] ? L->hdr : NULL, NULL, 0, &body, NULL, L->timeout_s);
    cJSON *j = status == 200 ? cJSON_Parse(body) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "data"), 0),
                                                      "vocab_size");
    L->vocab = cJSON_IsNumber(v) && v->valuedouble >= 2 ? (size_t)v->valuedouble : 0;
    cJSON_Delete(j);
    free(body);
    if (status != 200) fprintf(stderr, "mamba-bench: GET /v1/models on %s:%d: %s %d\n", L->host, L->port,
                               status < 0 ? "no answer" : "status", status);
    return status == 200;
}

/* One streamed request of prompt_tokens random ids and max_tokens new ones: 1 when it
 * completed. */
static int one_request(load *L, int index, int prompt_tokens, int max_tokens, double *ttft_ms, double *rate,
                       int *tokens)
{
    const size_t cap = 256 + 12 * (size_t)prompt_tokens;
    char *body = malloc(cap);
    if (!body) return 0;
    size_t at = (size_t)snprintf(body, cap, "{\"prompt\": [");
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1) ^ L->seed * 0xbf58476d1ce4e5b9ULL;
    const size_t range = L->vocab < 50000 ? L->vocab : 50000;
    for (int i = 0; i < prompt_tokens; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        at += (size_t)snprintf(body + at, cap - at, "%s%u", i ? "," : "", (unsigned)((x >> 33) % range));
    }
    snprintf(body + at, cap - at,
             "], \"max_tokens\": %d, \"temperature\": %g, \"seed\": %d, \"ignore_eos\": true, \"return_tokens\": true, "
             "\"stream\": true, \"stream_options\": {\"include_usage\": true}}",
             max_tokens, L->temperature, index);
    char err[256];
    const double t0 = now_s();
    http_conn *c = http_send(L->host, L->port, "POST", "/v1/completions", L->hdr[0] ? L->hdr : NULL, body, strlen(body), L->timeout_s, err, sizeof err);
    free(body);
    int status = c ? http_read_head(c) : -1, done = 0, n = -1;
    double first = 0, last = 0;
    char *data;
    while (status == 200 && http_next_event(c, &data) == 1) {
        if (strcmp(data, "[DONE]") == 0) {
            done = 1;
            last = now_s();
        } else {
            cJSON *j = cJSON_Parse(data);
            const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
            const cJSON *toks = cJSON_GetObjectItemCaseSensitive(choice, "tokens");
            if (!first && cJSON_GetArraySize(toks) > 0) {
                first = now_s();
                pthread_mutex_lock(&L->mu);
                L->streaming++;
                pthread_mutex_unlock(&L->mu);
            }
            const cJSON *u = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "usage"), "completion_tokens");
            if (cJSON_IsNumber(u)) n = (int)u->valuedouble;
            if (cJSON_GetObjectItemCaseSensitive(j, "error")) status = -2;
            cJSON_Delete(j);
        }
        free(data);
    }
    http_close(c);
    if (!c || status != 200 || !done || n < 0 || !first) {
        pthread_mutex_lock(&L->mu);
        if (!L->error[0])
            snprintf(L->error, sizeof L->error, "request %d: %s", index,
                     !c ? err : status == -2 ? "an error event" : status != 200 ? "a failed status" : "no usage or [DONE]");
        pthread_mutex_unlock(&L->mu);
        return 0;
    }
    *ttft_ms = 1e3 * (first - t0);
    *rate = n > 1 && last > first ? (n - 1) / (last - first) : 0;
    *tokens = n;
    return 1;
}

static void *client(void *arg)
{
    load *L = arg;
    for (;;) {
        pthread_mutex_lock(&L->mu);
        const int i = L->next < L->requests ? L->next++ : -1;
        pthread_mutex_unlock(&L->mu);
        if (i < 0) break;
        L->ok[i] = one_request(L, i, L->prompt_tokens, L->max_tokens, &L->ttft_ms[i], &L->rate[i], &L->tokens[i]);
    }
    return NULL;
}

/* --probe: once every client has a request streaming (the first N requests have had their
 * first token), the probes one after another while the load lasts. */
static void *probe(void *arg)
{
    load *L = arg;
    for (;;) {
        pthread_mutex_lock(&L->mu);
        const int ready = L->streaming >= L->concurrent, over = L->finished;
        pthread_mutex_unlock(&L->mu);
        if (over) return NULL;
        if (ready) break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    for (int k = 0; k < L->probes; k++) {
        pthread_mutex_lock(&L->mu);
        const int over = L->finished;
        pthread_mutex_unlock(&L->mu);
        double rate;
        int tokens;
        if (over || !one_request(L, L->requests + k, L->probe_tokens, 1, &L->probe_ms[k], &rate, &tokens))
            break;
        L->probes_done = k + 1;
    }
    return NULL;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (nearest rank) of v[0..n), sorted in place. */
static double quantile(double *v, int n, double q)
{
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, by_value);
    int k = (int)ceil(q * n) - 1;
    if (k < 0) k = 0;
    return v[k];
}

static int parse(int argc, char **argv, load *L)
{
    static const struct option opts[] = {
        {"mode", required_argument, 0, 'M'}, {"url", required_argument, 0, 'u'},
        {"clients", required_argument, 0, 'c'}, {"requests", required_argument, 0, 'r'},
        {"prompt-tokens", required_argument, 0, 'p'}, {"max-tokens", required_argument, 0, 't'},
        {"temperature", required_argument, 0, 'T'}, {"api-key", required_argument, 0, 'k'},
        {"timeout", required_argument, 0, 'o'}, {"json", no_argument, 0, 'j'}, {"seed", required_argument, 0, 's'},
        {"probe", required_argument, 0, 'P'}, {"probes", required_argument, 0, 'K'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    L->clients = 8;
    L->requests = -1;
    L->prompt_tokens = 128;
    L->max_tokens = 128;
    L->timeout_s = 300;
    L->probes = 5;
    L->seed = (unsigned long long)time(NULL);
    const char *url = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        long v = 0;
        if (optarg && c != 'M' && c != 'u' && c != 'k' && c != 'T' && c != 's') v = strtol(optarg, &end, 10);
        const int bad_int = end && (*end || v < 1 || v > 1000000);
        switch (c) {
        case 'M':
            if (!optarg || strcmp(optarg, "serve") != 0) return fprintf(stderr, "mamba-bench: --mode=serve takes no other mode\n"), 2;
            break;
        case 'u': url = optarg; break;
        case 'k': L->api_key = optarg; break;
        case 'c': if (bad_int) goto bad; L->clients = (int)v; break;
        case 'r': if (bad_int) goto bad; L->requests = (int)v; break;
        case 'p': if (bad_int) goto bad; L->prompt_tokens = (int)v; break;
        case 't': if (bad_int) goto bad; L->max_tokens = (int)v; break;
        case 'o': if (bad_int) goto bad; L->timeout_s = (double)v; break;
        case 'P': if (bad_int) goto bad; L->probe_tokens = (int)v; break;
        case 'K': if (bad_int) goto bad; L->probes = (int)v; break;
        case 'T':
            if (!optarg) goto bad;
            L->temperature = strtod(optarg, &end);
            if (*end || !(L->temperature >= 0 && L->temperature <= 2)) goto bad;
            break;
        case 'j': L->json = 1; break;
        case 's':
            if (!optarg) goto bad;
            L->seed = strtoull(optarg, &end, 10);
            if (*end) goto bad;
            break;
        case 'h': fputs(usage, stdout); return -1;
        default: fputs(usage, stderr); return 2;
        }
        continue;
    bad:
        fprintf(stderr, "mamba-bench: '%s' is out of range for its option (integers 1..1000000; temperature 0..2)\n", optarg ? optarg : "");
        return 2;
    }
    if (!url || !parse_url(url, L)) {
        fputs(usage, stderr);
        fprintf(stderr, "mamba-bench: --url http://HOST:PORT is required%s\n", url ? " (as http://HOST:PORT)" : "");
        return 2;
    }
    if (L->requests < 0) L->requests = L->clients;
    L->concurrent = L->clients < L->requests ? L->clients : L->requests;
    if (L->api_key) snprintf(L->hdr, sizeof L->hdr, "Authorization: Bearer %s\r\n", L->api_key);
    return 0;
}

int bench_serve(int argc, char **argv)
{
    load L;
    memset(&L, 0, sizeof L);
    const int prc = parse(argc, argv, &L);
    if (prc) return prc < 0 ? 0 : prc;
    if (!model_vocab(&L)) return 1;
    if (!L.vocab) {
        fprintf(stderr, "mamba-bench: /v1/models did not give the model's vocab_size\n");
        return 1;
    }
    pthread_mutex_init(&L.mu, NULL);
    L.ttft_ms = calloc((size_t)L.requests, sizeof *L.ttft_ms);
    L.rate = calloc((size_t)L.requests, sizeof *L.rate);
    L.tokens = calloc((size_t)L.requests, sizeof *L.tokens);
    L.ok = calloc((size_t)L.requests, sizeof *L.ok);
    L.probe_ms = calloc((size_t)L.probes, sizeof *L.probe_ms);
    pthread_t *th = calloc((size_t)L.clients, sizeof *th), prober;
    if (!L.ttft_ms || !L.rate || !L.tokens || !L.ok || !L.probe_ms || !th) {
        fprintf(stderr, "mamba-bench: out of memory\n");
        free(L.ttft_ms);
        free(L.rate);
        free(L.tokens);
        free(L.ok);
        free(L.probe_ms);
        free(th);
        return 1;
    }
    const double t0 = now_s();
    int started = 0;
    for (int i = 0; i < L.clients; i++) started += pthread_create(&th[i], NULL, client, &L) == 0;
    const int probing = L.probe_tokens > 0 && pthread_create(&prober, NULL, probe, &L) == 0;
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    const double wall = now_s() - t0;
    pthread_mutex_lock(&L.mu);
    L.finished = 1;
    pthread_mutex_unlock(&L.mu);
    if (probing) pthread_join(prober, NULL);
    int done = 0;
    long long generated = 0;
    double *ttft = calloc((size_t)L.requests, sizeof *ttft), *rates = calloc((size_t)L.requests, sizeof *rates);
    for (int i = 0; i < L.requests; i++) {
        if (!L.ok[i]) continue;
        ttft[done] = L.ttft_ms[i];
        rates[done] = L.rate[i];
        generated += L.tokens[i];
        done++;
    }
    const double agg = generated / wall;
    const double ttft_med = quantile(ttft, done, 0.5), ttft_p95 = quantile(ttft, done, 0.95);
    const double rate_med = quantile(rates, done, 0.5), rate_p5 = quantile(rates, done, 0.05);
    const double streaming = L.concurrent * rate_med;
    const double probe_med = quantile(L.probe_ms, L.probes_done, 0.5), probe_max = quantile(L.probe_ms, L.probes_done, 1.0);
    printf("serve %s:%d: %d clients, %d requests (%d ok) of %d prompt + %d generated tokens in %.2f s\n", L.host, L.port,
           L.clients, L.requests, done, L.prompt_tokens, L.max_tokens, wall);
    printf("  generated        %lld tokens, %.1f tokens/s aggregate\n", generated, agg);
    printf("  first token      median %.1f ms, p95 %.1f ms\n", ttft_med, ttft_p95);
    printf("  per request      median %.1f tokens/s, p5 %.1f tokens/s (after the first token)\n", rate_med, rate_p5);
    printf("  streaming        %.1f tokens/s (%d x the median request's)\n", streaming, L.concurrent);
    if (L.probe_tokens)
        printf("  probe            first token median %.1f ms, max %.1f ms: %d of %d requests of %d prompt tokens while %d "
               "clients streamed\n", probe_med, probe_max, L.probes_done, L.probes, L.probe_tokens, L.clients);
    if (done < L.requests) fprintf(stderr, "mamba-bench: %d requests failed; the first: %s\n", L.requests - done, L.error);
    if (L.probe_tokens && L.probes_done < L.probes)
        fprintf(stderr, "mamba-bench: %d of %d probes done (a probe failed, or the load ended first)%s%s\n",
                L.probes_done, L.probes, done == L.requests && L.error[0] ? ": " : "", done == L.requests ? L.error : "");
    if (L.json)
        printf("{\"mode\": \"serve\", \"host\": \"%s\", \"port\": %d, \"clients\": %d, \"requests\": %d, \"completed\": %d, "
               "\"prompt_tokens\": %d, \"max_tokens\": %d, \"wall_s\": %.3f, \"generated_tokens\": %lld, "
               "\"tokens_per_s\": %.2f, \"ttft_ms_median\": %.2f, \"ttft_ms_p95\": %.2f, "
               "\"request_tokens_per_s_median\": %.2f, \"request_tokens_per_s_p5\": %.2f, "
               "\"streaming_tokens_per_s\": %.2f, \"probe_prompt_tokens\": %d, \"probes\": %d, "
               "\"probe_ttft_ms_median\": %.2f, \"probe_ttft_ms_max\": %.2f}\n",
               L.host, L.port, L.clients, L.requests, done, L.prompt_tokens, L.max_tokens, wall, generated, agg, ttft_med,
               ttft_p95, rate_med, rate_p5, streaming, L.probe_tokens, L.probes_done, probe_med, probe_max);
    free(ttft);
    free(rates);
    free(L.ttft_ms);
    free(L.rate);
    free(L.tokens);
    free(L.ok);
    free(L.probe_ms);
    free(th);
    pthread_mutex_destroy(&L.mu);
    return done == L.requests && (!L.probe_tokens || L.probes_done == L.probes) ? 0 : 1;
}
