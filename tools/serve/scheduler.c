/* The decoding loop and its queue. Positions of the state: [0, n_dec) decoding sequences,
 * [n_dec, n_dec + n_pre) sequences whose prompt is being prefilled, the rest free. A sequence
 * that ends is replaced by the last of its group (one state copy), so both groups stay runs.
 * A turn: the step begun in the last turn waited for, its tokens drawn and taken (jobs that
 * end leave the layout here, and only here or before the step starts); cancelled jobs dropped,
 * queued ones admitted, prompts prefilled; the next step begun (mamba_step_seqs_begin), and
 * while the device runs it, the text of the tokens just taken sent to the clients. */
#include "scheduler.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "prompt_cache.h"
#include "stop.h"

typedef struct job {
    struct job *next;           /* in the queue                                            */
    serve_channel *ch;
    int32_t *prompt;
    size_t n_prompt;
    int max_tokens;
    mamba_sampler_params_t sampling;
    char *stops[SERVE_MAX_JOB_STOPS];
    size_t n_stops;
    int ignore_eos;
    /* the loop's */
    size_t fed;                 /* prompt tokens in the state                               */
    size_t cached;              /* of them restored from the prompt cache                   */
    mamba_sampler_t *sampler;
    mamba_detok_stream_t *detok;
    serve_buf text;             /* generated text, cut at a stop string                     */
    size_t sent, checked;       /* text sent to the client; searched for stop strings       */
    int32_t *gen;               /* sampled tokens (not the EOS)                              */
    size_t n_gen, gen_cap, gen_fed;
    int32_t next_id;            /* the last sampled token, which the next step feeds        */
    /* text taken before the step began, sent while it runs: text up to emit_to, emit_tok */
    size_t emit_to;
    int32_t emit_tok;
    int emit_pending, emit_failed;
    /* a step's draw, made in parallel with the other jobs' before any is taken */
    int32_t drawn;
    mamba_status_t draw_status;
    char draw_error[200];
} job;

struct serve_scheduler {
    mamba_context_t *ctx;
    mamba_model_t *model;
    const mamba_tokenizer_t *tok;
    serve_metrics *metrics;
    serve_scheduler_options o;
    mamba_state_t *state;
    size_t vocab, seq_bytes;
    mamba_state_t *pool;        /* the prompt cache's states, one sequence an entry           */
    int32_t *key;               /* a cache key being built                                  */
    size_t key_cap;
    float *logits, *prefill_logits; /* page-locked where the device has it (mamba_alloc_host) */
    int threads;
    job **slot;
    size_t n_dec, n_pre;
    size_t *seqs, *lens;
    const int32_t **ids;
    int32_t *step_ids;
    job **batch;               /* the jobs of the step begun (its logits' rows), or of a prefill */
    size_t in_flight;          /* rows of the step begun and not yet waited for             */
    unsigned failures;          /* fail_all calls: a turn stops touching its jobs after one  */
    prompt_cache *cache;
    /* shared with the HTTP threads */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    size_t queued, active;
    int stopping;
    double deadline;
    pthread_t thread;
    int started;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void job_free(job *j)
{
    if (!j) return;
    serve_channel_unref(j->ch);
    free(j->prompt);
    for (size_t i = 0; i < j->n_stops; i++) free(j->stops[i]);
    mamba_sampler_free(j->sampler);
    mamba_detok_stream_free(j->detok);
    serve_buf_free(&j->text);
    free(j->gen);
    free(j);
}

static void fail_job(job *j, int status, const char *type, const char *fmt, const char *detail)
{
    serve_error e;
    serve_fail(&e, status, type, NULL, NULL, fmt, detail);
    serve_channel_fail(j->ch, &e);
    job_free(j);
}

int serve_scheduler_create(mamba_context_t *ctx, mamba_model_t *m, const mamba_tokenizer_t *tok,
                           const serve_scheduler_options *o, serve_metrics *metrics, serve_scheduler **out, char *err,
                           size_t err_len)
{
    *out = NULL;
    serve_scheduler *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return 0;
    }
    s->ctx = ctx;
    s->model = m;
    s->tok = tok;
    s->metrics = metrics;
    s->o = *o;
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    s->vocab = (size_t)info.config.vocab_size;
    if (s->o.sample_vocab == 0 || s->o.sample_vocab > s->vocab) s->o.sample_vocab = s->vocab;
    if (s->o.prefill_budget == 0) s->o.prefill_budget = 512;
    const size_t S = o->slots;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        snprintf(err, err_len, "cannot create a mutex");
        return 0;
    }
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        snprintf(err, err_len, "cannot create a condition variable");
        return 0;
    }
    if (mamba_state_create(m, S, &s->state) != MAMBA_OK || mamba_state_seq_size(s->state, &s->seq_bytes) != MAMBA_OK) {
        snprintf(err, err_len, "a state of %zu sequences: %s", S, mamba_last_error(ctx));
        serve_scheduler_free(s);
        return 0;
    }
    /* the cache's pool: a sequence for each entry its bytes can hold */
    const size_t pool_n = prompt_cache_max_entries(o->cache_bytes, s->seq_bytes, s->vocab);
    if (pool_n && mamba_state_create(m, pool_n, &s->pool) != MAMBA_OK) {
        snprintf(err, err_len, "the prompt cache's %zu states (--cache-mb): %s", pool_n, mamba_last_error(ctx));
        serve_scheduler_free(s);
        return 0;
    }
    /* a 64-sequence step's logits are 13 MB with the GPT-NeoX vocabulary: from the GPU into
     * malloc'd memory they cross the bus at a fraction of its rate */
    s->logits = mamba_alloc_host(ctx, S * s->vocab * sizeof *s->logits);
    s->prefill_logits = mamba_alloc_host(ctx, S * s->vocab * sizeof *s->prefill_logits);
    s->threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    s->slot = calloc(S, sizeof(job *));
    s->seqs = malloc(S * sizeof *s->seqs);
    s->lens = malloc(S * sizeof *s->lens);
    s->ids = malloc(S * sizeof(const int32_t *));
    s->step_ids = malloc(S * sizeof *s->step_ids);
    s->batch = malloc(S * sizeof(job *));
    s->cache = prompt_cache_create(o->cache_bytes, pool_n);
    if (!s->logits || !s->prefill_logits || !s->slot || !s->seqs || !s->lens || !s->ids ||
        !s->step_ids || !s->batch || !s->cache) {
        snprintf(err, err_len, "out of memory for %zu slots of a vocabulary of %zu", S, s->vocab);
        serve_scheduler_free(s);
        return 0;
    }
    *out = s;
    return 1;
}

void serve_scheduler_free(serve_scheduler *s)
{
    if (!s) return;
    if (s->in_flight && s->state) (void)mamba_step_wait(s->state);
    for (size_t i = 0; s->slot && i < s->o.slots; i++) job_free(s->slot[i]);
    while (s->head) {
        job *j = s->head;
        s->head = j->next;
        job_free(j);
    }
    mamba_state_free(s->state);
    prompt_cache_free(s->cache);
    mamba_state_free(s->pool);
    free(s->key);
    mamba_free_host(s->ctx, s->logits);
    mamba_free_host(s->ctx, s->prefill_logits);
    free(s->slot);
    free(s->seqs);
    free(s->lens);
    free(s->ids);
    free(s->step_ids);
    free(s->batch);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int serve_scheduler_submit(serve_scheduler *s, serve_job_params *p, serve_channel *ch, serve_error *err)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return serve_fail(err, 500, "server_error", NULL, NULL, "out of memory queueing the request");
    for (size_t i = 0; i < p->n_stops && i < SERVE_MAX_JOB_STOPS; i++) {
        const size_t n = strlen(p->stops[i]);
        if (!(j->stops[i] = malloc(n + 1))) {
            job_free(j);
            return serve_fail(err, 500, "server_error", NULL, NULL, "out of memory queueing the request");
        }
        memcpy(j->stops[i], p->stops[i], n + 1);
        j->n_stops = i + 1;
    }
    j->n_prompt = p->n_prompt;
    j->max_tokens = p->max_tokens;
    j->sampling = p->sampling;
    j->ignore_eos = p->ignore_eos;
    pthread_mutex_lock(&s->mu);
    const size_t free_slots = s->o.slots - s->active;
    int ok = 0;
    if (s->stopping) {
        serve_fail(err, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    } else if (s->queued >= s->o.queue + free_slots) {
        serve_fail(err, 503, "server_error", NULL, "overloaded",
                   "the server is busy: %zu requests are waiting for %zu slots (--queue %zu); try again later", s->queued,
                   s->o.slots, s->o.queue);
    } else {
        ok = 1;
        j->prompt = p->prompt;
        p->prompt = NULL;
        serve_channel_ref(ch);
        j->ch = ch;
        if (s->tail) s->tail->next = j;
        else s->head = j;
        s->tail = j;
        s->queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (!ok) job_free(j);
    return ok;
}

/* ---- positions ---------------------------------------------------------------------- */

static size_t position_of(const serve_scheduler *s, const job *j)
{
    for (size_t i = 0; i < s->n_dec + s->n_pre; i++)
        if (s->slot[i] == j) return i;
    return (size_t)-1;
}

/* The sequence at src takes position dst (whose sequence is done with). */
static int move_seq(serve_scheduler *s, size_t dst, size_t src)
{
    if (dst != src) {
        if (mamba_state_copy_seq(s->state, dst, s->state, src) != MAMBA_OK) return 0;
        s->slot[dst] = s->slot[src];
    }
    s->slot[src] = NULL;
    return 1;
}

static void fail_all(serve_scheduler *s, const char *what);

/* Take the job at pos out of the layout (the job itself is the caller's). */
static void vacate(serve_scheduler *s, size_t pos)
{
    s->slot[pos] = NULL;
    if (pos < s->n_dec) {
        if (!move_seq(s, pos, s->n_dec - 1) || (s->n_pre && !move_seq(s, s->n_dec - 1, s->n_dec + s->n_pre - 1))) {
            fail_all(s, "moving a sequence in the state");
            return;
        }
        s->n_dec--;
    } else {
        if (!move_seq(s, pos, s->n_dec + s->n_pre - 1)) {
            fail_all(s, "moving a sequence in the state");
            return;
        }
        s->n_pre--;
    }
}

/* A prefilled job at pos joins the decoding ones. */
static int promote(serve_scheduler *s, size_t pos)
{
    const size_t to = s->n_dec;
    if (pos != to) {
        if (mamba_state_swap_seqs(s->state, pos, to) != MAMBA_OK) return 0;
        job *t = s->slot[pos];
        s->slot[pos] = s->slot[to];
        s->slot[to] = t;
    }
    s->n_dec++;
    s->n_pre--;
    return 1;
}

/* Every active job ends with a server error (a failed model call leaves the state unknown). */
static void fail_all(serve_scheduler *s, const char *what)
{
    s->failures++;
    char msg[300];
    snprintf(msg, sizeof msg, "%s: %s", what, mamba_last_error(s->ctx));
    const size_t n = s->n_dec + s->n_pre;
    for (size_t i = 0; i < n; i++) {
        job *j = s->slot[i];
        s->slot[i] = NULL;
        if (j) fail_job(j, 500, "server_error", "the model failed: %s", msg);
        mamba_state_reset_seq(s->state, i);
    }
    s->n_dec = s->n_pre = 0;
}

/* ---- the prompt cache ----------------------------------------------------------------- */

/* Save the state of the job at pos, after its prompt and gen_fed generated tokens, with the
 * logits that followed them. */
static void cache_save(serve_scheduler *s, const job *j, size_t pos, const float *row)
{
    if (!s->pool) return;
    const size_t n = j->n_prompt + j->gen_fed;
    if (n > s->key_cap) {
        int32_t *k = realloc(s->key, n * sizeof *k);
        if (!k) return;
        s->key = k;
        s->key_cap = n;
    }
    memcpy(s->key, j->prompt, j->n_prompt * sizeof *s->key);
    if (j->gen_fed) memcpy(s->key + j->n_prompt, j->gen, j->gen_fed * sizeof *s->key);
    const prompt_cache_entry e = {s->key, n, 0, s->seq_bytes, row, s->vocab};
    size_t slot;
    if (prompt_cache_put(s->cache, &e, &slot) && mamba_state_copy_seq(s->pool, slot, s->state, pos) != MAMBA_OK)
        prompt_cache_forget(s->cache, slot);
}

/* ---- one sampled token ------------------------------------------------------------------ */

static void finish(serve_scheduler *s, job *j, const char *reason, const float *row, int save)
{
    const size_t pos = position_of(s, j);
    if (save) cache_save(s, j, pos, row);
    vacate(s, pos);
    serve_channel_finish(j->ch, reason, j->n_prompt, j->n_gen, j->cached);
    job_free(j);
}

static int add_gen(job *j, int32_t t)
{
    if (j->n_gen == j->gen_cap) {
        const size_t cap = j->gen_cap ? 2 * j->gen_cap : 64;
        int32_t *g = realloc(j->gen, cap * sizeof *g);
        if (!g) return 0;
        j->gen = g;
        j->gen_cap = cap;
    }
    j->gen[j->n_gen++] = t;
    return 1;
}

/* The job's next token from row into j->drawn, the status and (on failure) the message into
 * the job: this runs on a sampling thread, whose error message is its own. */
static void draw_token(const serve_scheduler *s, job *j, const float *row)
{
    j->draw_status = mamba_sample(j->sampler, row, s->o.sample_vocab, &j->drawn);
    if (j->draw_status != MAMBA_OK) snprintf(j->draw_error, sizeof j->draw_error, "%s", mamba_last_error(NULL));
}

/* Take the job's drawn token and send what it adds (defer: a job that goes on keeps the text
 * for send_pending, after the next step has begun); row (the logits it was drawn from) goes
 * into the prompt cache when the job ends. 1 when the job has ended (and is freed). */
static int take_token(serve_scheduler *s, job *j, const float *row, int defer)
{
    const int32_t t = j->drawn;
    if (j->emit_failed) {
        vacate(s, position_of(s, j));
        fail_job(j, 500, "server_error", "%s", "out of memory for the generated text");
        return 1;
    }
    if (j->draw_status != MAMBA_OK) {
        const size_t pos = position_of(s, j);
        vacate(s, pos);
        fail_job(j, 500, "server_error", "sampling failed: %s", j->draw_error);
        return 1;
    }
    if (t == s->o.eos && !j->ignore_eos) {
        finish(s, j, "stop", row, 1);
        return 1;
    }
    serve_metrics_generated(s->metrics, 1, now_s());
    if (!add_gen(j, t)) {
        vacate(s, position_of(s, j));
        fail_job(j, 500, "server_error", "%s", "out of memory for the generated tokens");
        return 1;
    }
    const int last = j->n_gen == (size_t)j->max_tokens;
    int ok = 1;
    if (j->detok) {
        const char *piece;
        size_t len;
        ok = mamba_detok_stream_push(j->detok, t, &piece, &len) == MAMBA_OK && serve_buf_add(&j->text, piece, len);
        if (ok && last)
            ok = mamba_detok_stream_flush(j->detok, &piece, &len) == MAMBA_OK && serve_buf_add(&j->text, piece, len);
    }
    const char *const *stops = (const char *const *)j->stops;
    const size_t at = ok ? stop_find(stops, j->n_stops, j->text.data, j->text.len, j->checked) : 0;
    const int stopped = ok && at < j->text.len;
    if (stopped) j->text.len = at;
    j->checked = j->text.len;
    const size_t safe = stopped || last ? j->text.len : j->text.len - stop_partial(stops, j->n_stops, j->text.data, j->text.len);
    if (ok && safe >= j->sent && defer && !stopped && !last) {
        j->emit_to = safe;
        j->emit_tok = t;
        j->emit_pending = 1;
    } else if (ok && safe >= j->sent) {
        ok = serve_channel_emit(j->ch, j->text.data ? j->text.data + j->sent : "", safe - j->sent, &t, 1);
        j->sent = safe;
    }
    if (!ok) {
        vacate(s, position_of(s, j));
        fail_job(j, 500, "server_error", "%s", "out of memory for the generated text");
        return 1;
    }
    if (stopped || last) {
        finish(s, j, stopped ? "stop" : "length", row, 1);
        return 1;
    }
    j->next_id = t;
    return 0;
}

/* ---- one turn ----------------------------------------------------------------------------- */

static void drop_cancelled(serve_scheduler *s)
{
    for (size_t i = 0; i < s->n_dec + s->n_pre;) {
        job *j = s->slot[i];
        if (!serve_channel_cancelled(j->ch)) {
            i++;
            continue;
        }
        vacate(s, i);
        fail_job(j, 499, "invalid_request_error", "%s", "the client closed the connection");
        /* position i now holds another job (or is past the end) */
    }
}

static job *pop_queued(serve_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    job *j = s->head;
    if (j) {
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        j->next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    return j;
}

/* A queued job into the first free position: its state from the cache or empty. */
static void admit(serve_scheduler *s, job *j)
{
    const size_t pos = s->n_dec + s->n_pre;
    if (serve_channel_cancelled(j->ch)) {
        job_free(j);
        return;
    }
    if (mamba_sampler_create(&j->sampling, &j->sampler) != MAMBA_OK ||
        (s->tok && mamba_detok_stream_create(s->tok, &j->detok) != MAMBA_OK)) {
        fail_job(j, 500, "server_error", "cannot start the request: %s", mamba_last_error(NULL));
        return;
    }
    serve_metrics_prompt_tokens(s->metrics, j->n_prompt);
    prompt_cache_entry e;
    memset(&e, 0, sizeof e);
    const int hit = s->pool && prompt_cache_lookup(s->cache, j->prompt, j->n_prompt, &e) &&
                    (e.n_ids < j->n_prompt || e.logits);
    if (s->pool) serve_metrics_cache(s->metrics, hit);
    mamba_status_t st = hit ? mamba_state_copy_seq(s->state, pos, s->pool, e.slot) : mamba_state_reset_seq(s->state, pos);
    if (st != MAMBA_OK) {
        fail_job(j, 500, "server_error", "cannot set up a slot: %s", mamba_last_error(s->ctx));
        return;
    }
    j->fed = j->cached = hit ? e.n_ids : 0;
    s->slot[pos] = j;
    s->n_pre++;
    if (j->fed < j->n_prompt) return;
    /* the whole prompt was saved, with the logits that followed it (copied: a put may evict
     * the entry) */
    if (e.logits) memcpy(s->prefill_logits, e.logits, s->vocab * sizeof *s->prefill_logits);
    if (!promote(s, pos)) {
        fail_all(s, "moving a sequence in the state");
        return;
    }
    draw_token(s, j, s->prefill_logits);
    take_token(s, j, s->prefill_logits, 0);
}

static void admit_queued(serve_scheduler *s)
{
    while (s->n_dec + s->n_pre < s->o.slots) {
        job *j = pop_queued(s);
        if (!j) break;
        admit(s, j);
    }
}

/* Up to the budget of new prompt tokens, for the prefilling jobs in order. */
static void prefill(serve_scheduler *s)
{
    if (!s->n_pre) return;
    size_t budget = s->n_dec ? s->o.prefill_budget : 4 * s->o.prefill_budget, k = 0;
    for (size_t pos = s->n_dec; pos < s->n_dec + s->n_pre && budget; pos++) {
        job *j = s->slot[pos];
        const size_t n = j->n_prompt - j->fed < budget ? j->n_prompt - j->fed : budget;
        s->seqs[k] = pos;
        s->ids[k] = j->prompt + j->fed;
        s->lens[k] = n;
        s->batch[k++] = j;
        budget -= n;
    }
    const double t0 = now_s();
    const mamba_status_t st = mamba_prefill_seqs(s->state, k, s->seqs, s->ids, s->lens, s->prefill_logits);
    serve_metrics_time(s->metrics, SERVE_T_PREFILL, now_s() - t0);
    if (st != MAMBA_OK) {
        fail_all(s, "prefill");
        return;
    }
    for (size_t i = 0; i < k; i++) s->batch[i]->fed += s->lens[i];
    const unsigned failures = s->failures;
    for (size_t i = 0; i < k && s->failures == failures; i++) {
        job *j = s->batch[i];
        if (j->fed < j->n_prompt) continue;
        const float *row = s->prefill_logits + i * s->vocab;
        const size_t pos = position_of(s, j);
        cache_save(s, j, pos, row);
        if (!promote(s, pos)) {
            fail_all(s, "moving a sequence in the state");
            return;
        }
        draw_token(s, j, row);
        take_token(s, j, row, 0);
    }
}

/* The step begun in the last turn: every job's draw in parallel, each as soon as its row of
 * logits has crossed the bus (the logits come in parts, so the first rows are drawn while the
 * rest copy; each job has its own sampler; a draw with temperature reads the whole vocabulary,
 * and 64 of them one after another took longer than the GPU's step), then the tokens taken in
 * order, which moves jobs in the state. */
static void finish_step(serve_scheduler *s)
{
    const size_t n = s->in_flight;
    if (!n) return;
    s->in_flight = 0;
    const double t0 = now_s();
    mamba_status_t st = mamba_step_wait_rows(s->state, 1);
    const double t1 = now_s();
    if (st == MAMBA_OK) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->threads) if (n >= 4)
        for (size_t i = 0; i < n; i++) {
            job *j = s->batch[i];
            j->draw_status = mamba_step_wait_rows(s->state, i + 1);
            if (j->draw_status == MAMBA_OK)
                draw_token(s, j, s->logits + i * s->vocab);
            else
                snprintf(j->draw_error, sizeof j->draw_error, "%s", "waiting for the step's logits failed");
        }
    }
    const double t_drawn = now_s();
    if (st == MAMBA_OK) st = mamba_step_wait(s->state);
    serve_metrics_time(s->metrics, SERVE_T_STEP, t1 - t0 + now_s() - t_drawn);
    serve_metrics_time(s->metrics, SERVE_T_SAMPLE, t_drawn - t1);
    if (st != MAMBA_OK) {
        (void)mamba_step_wait(s->state);
        fail_all(s, "decoding step");
        return;
    }
    serve_metrics_step(s->metrics, n);
    for (size_t i = 0; i < n; i++) s->batch[i]->gen_fed++;
    const double t2 = now_s();
    const unsigned failures = s->failures;
    for (size_t i = 0; i < n && s->failures == failures; i++) take_token(s, s->batch[i], s->logits + i * s->vocab, 1);
    serve_metrics_time(s->metrics, SERVE_T_TAKE, now_s() - t2);
}

/* The text the last step's tokens added, to the clients: the jobs are the step's (begun, so
 * none leaves the layout before finish_step); a failed send ends its job there. */
static void send_pending(serve_scheduler *s, size_t n)
{
    const double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        job *j = s->batch[i];
        if (!j->emit_pending) continue;
        j->emit_pending = 0;
        if (!serve_channel_emit(j->ch, j->text.data ? j->text.data + j->sent : "", j->emit_to - j->sent, &j->emit_tok, 1))
            j->emit_failed = 1;
        j->sent = j->emit_to;
    }
    serve_metrics_time(s->metrics, SERVE_T_SEND, now_s() - t0);
}

/* The next step of every decoding job, begun; the text of the tokens taken before it sent
 * while the device runs it. */
static void begin_step(serve_scheduler *s)
{
    const size_t n = s->n_dec;
    if (!n) return;
    for (size_t i = 0; i < n; i++) {
        s->seqs[i] = i;
        s->step_ids[i] = s->slot[i]->next_id;
        s->batch[i] = s->slot[i];
    }
    const double t0 = now_s();
    const mamba_status_t st = mamba_step_seqs_begin(s->state, n, s->seqs, s->step_ids, s->logits);
    serve_metrics_time(s->metrics, SERVE_T_STEP, now_s() - t0);
    if (st != MAMBA_OK) {
        fail_all(s, "decoding step");
        return;
    }
    s->in_flight = n;
    send_pending(s, n);
}

static void publish(serve_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    s->active = s->n_dec + s->n_pre;
    const size_t queued = s->queued;
    pthread_mutex_unlock(&s->mu);
    serve_metrics_gauges(s->metrics, s->n_dec + s->n_pre, queued, prompt_cache_bytes(s->cache));
}

/* Shutting down: queued requests are refused; past the deadline running ones end. */
static void drain(serve_scheduler *s, int past_deadline)
{
    job *j;
    while ((j = pop_queued(s)) != NULL) fail_job(j, 503, "server_error", "%s", "the server is shutting down");
    if (!past_deadline) return;
    const size_t n = s->n_dec + s->n_pre;
    for (size_t i = 0; i < n; i++) {
        fail_job(s->slot[i], 503, "server_error", "%s", "the server shut down before the request was finished");
        s->slot[i] = NULL;
    }
    s->n_dec = s->n_pre = 0;
}

static void *loop(void *arg)
{
    serve_scheduler *s = arg;
    for (;;) {
        double t0 = now_s();
        finish_step(s);
        if (s->n_dec + s->n_pre == 0) publish(s); /* the last jobs may have ended: no slot busy */
        const double t_finished = now_s();
        pthread_mutex_lock(&s->mu);
        int idle = 0;
        while (!s->stopping && !s->head && s->n_dec + s->n_pre == 0) {
            idle = 1;
            pthread_cond_wait(&s->cv, &s->mu);
        }
        const int stopping = s->stopping;
        const double deadline = s->deadline;
        pthread_mutex_unlock(&s->mu);
        if (stopping) {
            drain(s, now_s() >= deadline);
            if (s->n_dec + s->n_pre == 0) break;
        }
        if (idle) { /* a turn's time is its work, not the wait for a request */
            serve_metrics_time(s->metrics, SERVE_T_TURN, t_finished - t0);
            t0 = now_s();
        }
        drop_cancelled(s);
        if (!stopping) admit_queued(s);
        prefill(s);
        begin_step(s);
        publish(s);
        serve_metrics_time(s->metrics, SERVE_T_TURN, now_s() - t0);
    }
    publish(s);
    return NULL;
}

int serve_scheduler_start(serve_scheduler *s)
{
    if (pthread_create(&s->thread, NULL, loop, s) != 0) return 0;
    s->started = 1;
    return 1;
}

void serve_scheduler_shutdown(serve_scheduler *s, double grace_s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    s->deadline = now_s() + grace_s;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->started) pthread_join(s->thread, NULL);
    s->started = 0;
}
