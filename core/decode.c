/* The public calls that run the model: states made and freed, prefill, steps and forward of
 * whole batches or of chosen sequences, all through the model's runner. */
#include <stdlib.h>

#include "runner.h"
#include "api/alloc.h"

/* The model's runner, or NULL with the message in ctx->err. */
static mb_runner *runner_of(mamba_model_t *m, mamba_status_t *st)
{
    mb_runner *r = NULL;
    *st = mb_runner_get(m, &r);
    return r;
}

mamba_status_t mamba_state_create(mamba_model_t *m, size_t batch, mamba_state_t **out)
{
    if (!m) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "model is NULL");
    if (!out) return mb_seterr(m->ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_create: out is NULL");
    return mb_state_new(m, batch, out);
}

void mamba_state_free(mamba_state_t *s)
{
    if (!s) return;
    mb_runner_forget(s->model->runner, s->id);
    mb_state_destroy(s);
}

/* The whole batch of s: ids (batch, len) as rows. */
static mamba_status_t run_batch(mamba_state_t *s, const int32_t *ids, size_t len, mamba_logits_mode_t mode, float *logits)
{
    mamba_context_t *ctx = s->model->ctx;
    mamba_status_t st;
    mb_runner *r = runner_of(s->model, &st);
    if (!r) return st;
    const int32_t **rows = mb_malloc(s->batch * sizeof *rows);
    if (!rows) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory for %zu sequences", s->batch);
    for (size_t b = 0; b < s->batch; b++) rows[b] = ids + b * len;
    st = mb_runner_run(r, s, 0, s->batch, rows, len, mode, logits);
    free(rows);
    return st;
}

mamba_status_t mamba_prefill(mamba_state_t *s, const int32_t *ids, size_t len, float *last_logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (!ids) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill: ids is NULL");
    if (len == 0) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill: len = 0, expected > 0");
    return run_batch(s, ids, len, MAMBA_LOGITS_LAST, last_logits);
}

mamba_status_t mamba_prefill_all(mamba_state_t *s, const int32_t *ids, size_t len, float *logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (!ids || !logits) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill_all: ids or logits is NULL");
    if (len == 0) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill_all: len = 0, expected > 0");
    return run_batch(s, ids, len, MAMBA_LOGITS_ALL, logits);
}

mamba_status_t mamba_step(mamba_state_t *s, const int32_t *ids, float *logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (!ids || !logits) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_step: ids or logits is NULL");
    return run_batch(s, ids, 1, MAMBA_LOGITS_LAST, logits);
}

mamba_status_t mamba_prefill_seqs(mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *const *ids,
                                  const size_t *lens, float *last_logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (n == 0 || !seqs || !ids || !lens)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill_seqs: n = %zu%s, expected n > 0 and arrays",
                         n, seqs && ids && lens ? "" : " or a NULL array");
    mamba_status_t st;
    mb_runner *r = runner_of(s->model, &st);
    return r ? mb_runner_prefill_seqs(r, s, n, seqs, ids, lens, last_logits) : st;
}

mamba_status_t mamba_step_seqs(mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *ids, float *logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (n == 0 || !seqs || !ids || !logits)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_step_seqs: n = %zu%s, expected n > 0 and arrays", n,
                         seqs && ids && logits ? "" : " or a NULL array");
    mamba_status_t st;
    mb_runner *r = runner_of(s->model, &st);
    return r ? mb_runner_step_seqs(r, s, n, seqs, ids, logits) : st;
}

mamba_status_t mamba_step_seqs_begin(mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *ids, float *logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (n == 0 || !seqs || !ids || !logits)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_step_seqs_begin: n = %zu%s, expected n > 0 and arrays", n,
                         seqs && ids && logits ? "" : " or a NULL array");
    mamba_status_t st;
    mb_runner *r = runner_of(s->model, &st);
    return r ? mb_runner_step_begin(r, s, n, seqs, ids, logits) : st;
}

mamba_status_t mamba_step_wait(mamba_state_t *s)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    return s->model->runner ? mb_runner_wait(s->model->runner) : MAMBA_OK;
}

mamba_status_t mamba_step_wait_rows(mamba_state_t *s, size_t rows)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    return s->model->runner ? mb_runner_wait_rows(s->model->runner, rows) : MAMBA_OK;
}

mamba_status_t mamba_forward(mamba_model_t *m, const int32_t *ids, size_t batch, size_t len, mamba_logits_mode_t mode,
                             float *logits)
{
    if (!m) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "model is NULL");
    mamba_context_t *ctx = m->ctx;
    if (!ids || !logits) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: ids or logits is NULL");
    if (batch == 0 || len == 0)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: batch = %zu, len = %zu; both must be > 0",
                         batch, len);
    if (batch > (1u << 20))
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: batch = %zu, expected 1..%u", batch, 1u << 20);
    if (mode != MAMBA_LOGITS_ALL && mode != MAMBA_LOGITS_LAST)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: unknown logits mode %d", (int)mode);
    mamba_status_t st = mb_check_ids(ctx, ids, batch * len, m->cfg.vocab_size);
    if (st != MAMBA_OK) return st;
    mb_runner *r = runner_of(m, &st);
    return r ? mb_runner_forward(r, ids, batch, len, mode, logits) : st;
}
