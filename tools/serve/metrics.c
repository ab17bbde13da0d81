/* Counters under one mutex: requests by endpoint and status, tokens, prompt-cache hits, and a
 * ring of per-second token counts for the recent generation rate. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STATUSES 16
#define RATE_WINDOW 10 /* seconds */

typedef struct status_count { int status; uint64_t count; } status_count;

struct serve_metrics {
    pthread_mutex_t mu;
    status_count requests[SERVE_EP_COUNT][MAX_STATUSES];
    uint64_t prompt_tokens, generated_tokens, cache_hits, cache_misses, steps, step_sequences;
    size_t active_slots, queued, cache_bytes;
    double seconds[SERVE_T_COUNT];
    uint64_t per_second[RATE_WINDOW];
    int64_t second[RATE_WINDOW]; /* which second each bucket counts */
};

static const char *const paths[SERVE_EP_COUNT] = {
    "/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/detokenize", "/health", "/metrics", "other",
};

const char *serve_endpoint_path(serve_endpoint e) { return e < SERVE_EP_COUNT ? paths[e] : paths[SERVE_EP_OTHER]; }

serve_metrics *serve_metrics_create(void)
{
    serve_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    for (int i = 0; i < RATE_WINDOW; i++) m->second[i] = -1;
    return m;
}

void serve_metrics_free(serve_metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void serve_metrics_request(serve_metrics *m, serve_endpoint e, int status)
{
    if (e >= SERVE_EP_COUNT) e = SERVE_EP_OTHER;
    pthread_mutex_lock(&m->mu);
    status_count *row = m->requests[e];
    for (int i = 0; i < MAX_STATUSES; i++) {
        if (row[i].status == status || row[i].status == 0 || i == MAX_STATUSES - 1) {
            row[i].status = row[i].status ? row[i].status : status;
            row[i].count++;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_prompt_tokens(serve_metrics *m, uint64_t n)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += n;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_generated(serve_metrics *m, uint64_t n, double now)
{
    const int64_t s = (int64_t)floor(now);
    const int b = (int)(s % RATE_WINDOW);
    pthread_mutex_lock(&m->mu);
    m->generated_tokens += n;
    if (m->second[b] != s) {
        m->second[b] = s;
        m->per_second[b] = 0;
    }
    m->per_second[b] += n;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_cache(serve_metrics *m, int hit)
{
    pthread_mutex_lock(&m->mu);
    if (hit) m->cache_hits++;
    else m->cache_misses++;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_step(serve_metrics *m, size_t n)
{
    pthread_mutex_lock(&m->mu);
    m->steps++;
    m->step_sequences += n;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_time(serve_metrics *m, serve_timer t, double seconds)
{
    if (t >= SERVE_T_COUNT) return;
    pthread_mutex_lock(&m->mu);
    m->seconds[t] += seconds;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_gauges(serve_metrics *m, size_t active_slots, size_t queued, size_t cache_bytes)
{
    pthread_mutex_lock(&m->mu);
    m->active_slots = active_slots;
    m->queued = queued;
    m->cache_bytes = cache_bytes;
    pthread_mutex_unlock(&m->mu);
}

/* Tokens of the full seconds of the window before the current one, per second. */
static double rate(const serve_metrics *m, double now)
{
    const int64_t s = (int64_t)floor(now);
    uint64_t sum = 0;
    for (int i = 0; i < RATE_WINDOW; i++)
        if (m->second[i] >= s - (RATE_WINDOW - 1) && m->second[i] < s) sum += m->per_second[i];
    return (double)sum / (RATE_WINDOW - 1);
}

void serve_metrics_read(serve_metrics *m, double now, serve_metrics_snapshot *out)
{
    pthread_mutex_lock(&m->mu);
    out->prompt_tokens = m->prompt_tokens;
    out->generated_tokens = m->generated_tokens;
    out->cache_hits = m->cache_hits;
    out->cache_misses = m->cache_misses;
    out->active_slots = m->active_slots;
    out->queued = m->queued;
    out->cache_bytes = m->cache_bytes;
    out->tokens_per_s = rate(m, now);
    pthread_mutex_unlock(&m->mu);
}

typedef struct text_buf { char *s; size_t len, cap; int failed; } text_buf;

static void add(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text_buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        char *s = realloc(b->s, 2 * b->cap + (size_t)n);
        if (!s) {
            b->failed = 1;
            return;
        }
        b->s = s;
        b->cap = 2 * b->cap + (size_t)n;
    }
}

char *serve_metrics_text(serve_metrics *m, double now, size_t slots)
{
    text_buf b = {malloc(4096), 0, 4096, 0};
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    add(&b, "# HELP mamba_requests_total HTTP requests answered, by endpoint and status.\n"
            "# TYPE mamba_requests_total counter\n");
    for (int e = 0; e < SERVE_EP_COUNT; e++)
        for (int i = 0; i < MAX_STATUSES && m->requests[e][i].status; i++)
            add(&b, "mamba_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", paths[e], m->requests[e][i].status,
                (unsigned long long)m->requests[e][i].count);
    add(&b, "# HELP mamba_prompt_tokens_total Prompt tokens of admitted requests.\n"
            "# TYPE mamba_prompt_tokens_total counter\nmamba_prompt_tokens_total %llu\n",
        (unsigned long long)m->prompt_tokens);
    add(&b, "# HELP mamba_generated_tokens_total Tokens generated.\n"
            "# TYPE mamba_generated_tokens_total counter\nmamba_generated_tokens_total %llu\n",
        (unsigned long long)m->generated_tokens);
    add(&b, "# HELP mamba_tokens_per_second Tokens generated per second over the last %d full seconds.\n"
            "# TYPE mamba_tokens_per_second gauge\nmamba_tokens_per_second %.3f\n",
        RATE_WINDOW - 1, rate(m, now));
    add(&b, "# HELP mamba_decode_steps_total Batched decoding steps.\n"
            "# TYPE mamba_decode_steps_total counter\nmamba_decode_steps_total %llu\n",
        (unsigned long long)m->steps);
    add(&b, "# HELP mamba_decode_step_sequences_total Sequences of the batched decoding steps (over the steps: the mean batch).\n"
            "# TYPE mamba_decode_step_sequences_total counter\nmamba_decode_step_sequences_total %llu\n",
        (unsigned long long)m->step_sequences);
    add(&b, "# HELP mamba_model_prefill_seconds_total Time in the model's prompt prefills.\n"
            "# TYPE mamba_model_prefill_seconds_total counter\nmamba_model_prefill_seconds_total %.6f\n",
        m->seconds[SERVE_T_PREFILL]);
    add(&b, "# HELP mamba_model_step_seconds_total Time the loop spent starting the model's batched decoding steps "
            "and waiting for them (the device's time beyond that overlaps the sending of the previous tokens).\n"
            "# TYPE mamba_model_step_seconds_total counter\nmamba_model_step_seconds_total %.6f\n",
        m->seconds[SERVE_T_STEP]);
    add(&b, "# HELP mamba_sample_seconds_total Time in drawing the decoding steps' tokens from their logits, with the "
            "waits for the parts of the logits after the first, which the draws overlap.\n"
            "# TYPE mamba_sample_seconds_total counter\nmamba_sample_seconds_total %.6f\n",
        m->seconds[SERVE_T_SAMPLE]);
    add(&b, "# HELP mamba_emit_seconds_total Time in taking the decoding steps' tokens before the next step starts: "
            "detokenizing, stop strings, ending requests.\n"
            "# TYPE mamba_emit_seconds_total counter\nmamba_emit_seconds_total %.6f\n",
        m->seconds[SERVE_T_TAKE]);
    add(&b, "# HELP mamba_send_seconds_total Time in handing the tokens' text to the connections, while the next step "
            "runs.\n"
            "# TYPE mamba_send_seconds_total counter\nmamba_send_seconds_total %.6f\n",
        m->seconds[SERVE_T_SEND]);
    add(&b, "# HELP mamba_loop_busy_seconds_total Time the decoding loop worked (the model's calls included; the rest "
            "is sampling, detokenizing and streaming).\n"
            "# TYPE mamba_loop_busy_seconds_total counter\nmamba_loop_busy_seconds_total %.6f\n",
        m->seconds[SERVE_T_TURN]);
    add(&b, "# HELP mamba_active_slots Sequences being prefilled or decoded.\n"
            "# TYPE mamba_active_slots gauge\nmamba_active_slots %zu\n", m->active_slots);
    add(&b, "# HELP mamba_slots Sequences the server decodes at once (--slots).\n"
            "# TYPE mamba_slots gauge\nmamba_slots %zu\n", slots);
    add(&b, "# HELP mamba_queue_length Requests waiting for a slot.\n"
            "# TYPE mamba_queue_length gauge\nmamba_queue_length %zu\n", m->queued);
    add(&b, "# HELP mamba_prompt_cache_hits_total Requests that restored a saved prompt state.\n"
            "# TYPE mamba_prompt_cache_hits_total counter\nmamba_prompt_cache_hits_total %llu\n",
        (unsigned long long)m->cache_hits);
    add(&b, "# HELP mamba_prompt_cache_misses_total Requests that found no saved prompt state.\n"
            "# TYPE mamba_prompt_cache_misses_total counter\nmamba_prompt_cache_misses_total %llu\n",
        (unsigned long long)m->cache_misses);
    add(&b, "# HELP mamba_prompt_cache_bytes Bytes held by the prompt-state cache.\n"
            "# TYPE mamba_prompt_cache_bytes gauge\nmamba_prompt_cache_bytes %zu\n", m->cache_bytes);
    pthread_mutex_unlock(&m->mu);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
