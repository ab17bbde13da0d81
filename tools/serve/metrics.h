/* The server's counters and gauges, shared by the HTTP threads and the decoding loop, and
 * their Prometheus text exposition (GET /metrics). */
#ifndef MAMBA_SERVE_METRICS_H
#define MAMBA_SERVE_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct serve_metrics serve_metrics;

/* The endpoints requests are counted by; other paths count as SERVE_EP_OTHER. */
typedef enum serve_endpoint {
    SERVE_EP_COMPLETIONS = 0, SERVE_EP_CHAT, SERVE_EP_MODELS, SERVE_EP_TOKENIZE, SERVE_EP_DETOKENIZE,
    SERVE_EP_HEALTH, SERVE_EP_METRICS, SERVE_EP_OTHER, SERVE_EP_COUNT
} serve_endpoint;

serve_metrics *serve_metrics_create(void);
void serve_metrics_free(serve_metrics *m);
const char *serve_endpoint_path(serve_endpoint e);

void serve_metrics_request(serve_metrics *m, serve_endpoint e, int status);
void serve_metrics_prompt_tokens(serve_metrics *m, uint64_t n);
/* Generated tokens, now (seconds on a monotonic clock) for the rate over the last seconds. */
void serve_metrics_generated(serve_metrics *m, uint64_t n, double now);
void serve_metrics_cache(serve_metrics *m, int hit);
/* One batched decoding step over n sequences. */
void serve_metrics_step(serve_metrics *m, size_t n);
/* Seconds the decoding loop spent in the model's prefill and step calls, and on its turns in
 * all (the difference is the loop's own work: sampling, detokenizing, streaming). */
typedef enum serve_timer { SERVE_T_PREFILL = 0, SERVE_T_STEP, SERVE_T_SAMPLE, SERVE_T_TAKE, SERVE_T_SEND, SERVE_T_TURN, SERVE_T_COUNT } serve_timer;
void serve_metrics_time(serve_metrics *m, serve_timer t, double seconds);
void serve_metrics_gauges(serve_metrics *m, size_t active_slots, size_t queued, size_t cache_bytes);

typedef struct serve_metrics_snapshot {
    uint64_t prompt_tokens, generated_tokens, cache_hits, cache_misses;
    size_t active_slots, queued, cache_bytes;
    double tokens_per_s;
} serve_metrics_snapshot;
void serve_metrics_read(serve_metrics *m, double now, serve_metrics_snapshot *out);

/* The Prometheus text (malloc'd, NUL-terminated); NULL when out of memory. */
char *serve_metrics_text(serve_metrics *m, double now, size_t slots);

#endif
