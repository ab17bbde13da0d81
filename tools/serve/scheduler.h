/* Continuous batching: one thread owns the model and a state of --slots sequences and runs
 * every admitted request on it. Each turn it admits queued requests into free slots (from the
 * prompt cache where a saved state is a prefix of the prompt), prefills a bounded number of
 * new prompt tokens, and steps every decoding sequence at once, sampling, detokenizing and
 * checking stop strings per request. Decoding sequences are kept at the state's first
 * positions, prefilling ones right after them, so that steps and prefills run in place. */
#ifndef MAMBA_SERVE_SCHEDULER_H
#define MAMBA_SERVE_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "metrics.h"
#include "request.h"
#include "mamba.h"

#define SERVE_MAX_JOB_STOPS (SERVE_MAX_STOPS + 2) /* the request's and the chat format's */

typedef struct serve_scheduler serve_scheduler;

typedef struct serve_scheduler_options {
    size_t slots;           /* sequences decoded at once                                   */
    size_t queue;           /* requests that may wait beyond the free slots                */
    size_t cache_bytes;     /* prompt-state cache cap; 0: no cache                          */
    size_t prefill_budget;  /* new prompt tokens prefilled per turn while others decode    */
    int32_t eos;            /* the token that ends a generation; -1: none                   */
    size_t sample_vocab;    /* tokens are sampled from ids [0, sample_vocab)                */
    int threads;            /* threads drawing a step's tokens; 0: OpenMP's default         */
} serve_scheduler_options;

typedef struct serve_job_params {
    int32_t *prompt;        /* taken over by a successful submit                           */
    size_t n_prompt;
    int max_tokens;
    mamba_sampler_params_t sampling;   /* min_p included: the library's, after temperature */
    const char *stops[SERVE_MAX_JOB_STOPS]; /* copied */
    size_t n_stops;
    int ignore_eos;
} serve_job_params;

/* The scheduler over ctx's model m with a state of o->slots sequences; tok may be NULL (token
 * ids only). 0 with the message in err. */
int serve_scheduler_create(mamba_context_t *ctx, mamba_model_t *m, const mamba_tokenizer_t *tok,
                           const serve_scheduler_options *o, serve_metrics *metrics, serve_scheduler **out, char *err,
                           size_t err_len);
/* Start the decoding thread. 0 when it cannot be started. */
int serve_scheduler_start(serve_scheduler *s);
/* Queue a generation whose output goes to ch (the scheduler holds its own reference). 0 with
 * err filled: 503 when the queue is full or the server is shutting down. */
int serve_scheduler_submit(serve_scheduler *s, serve_job_params *p, serve_channel *ch, serve_error *err);
/* Stop admitting (queued requests fail with 503), let running ones finish for up to grace_s
 * seconds, end the rest with an error, and join the thread. */
void serve_scheduler_shutdown(serve_scheduler *s, double grace_s);
void serve_scheduler_free(serve_scheduler *s);

#endif
