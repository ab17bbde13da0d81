/* Recurrent state of a batch of sequences: per layer the last d_conv-1 conv inputs and the
 * SSM state, O(1) in sequence length; plus the workspace of one chunk. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "fault.h"


/* Rows in one chunk are capped so that a large batch does not need a huge workspace. */
#define MB_MAX_CHUNK_ROWS 8192

#define STATE_MAGIC 0x5453424du /* "MBST" */
typedef struct state_header {
    uint32_t magic, version;
    uint32_t n_layer, batch, d_inner, d_conv, d_state, pad;
} state_header;

mamba_status_t mamba_state_create(mamba_model_t *m, size_t batch, mamba_state_t **out)
{
    return mb_state_new(m, batch, 0, out);
}

mamba_status_t mb_state_new(mamba_model_t *m, size_t batch, size_t chunk, mamba_state_t **out)
{
    if (!m) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "model is NULL");
    mamba_context_t *ctx = m->ctx;
    if (!out) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_create: out is NULL");
    *out = NULL;
    if (batch == 0 || batch > (1u << 20))
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "state batch = %zu, expected 1..%u", batch, 1u << 20);
    const mamba_config_t *c = &m->cfg;
    mamba_state_t *s = mb_calloc(1, sizeof *s);
    if (!s) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a state");
    s->model = m;
    s->batch = batch;
    size_t cap = ctx->prefill_chunk > MB_MAX_CHUNK_ROWS ? ctx->prefill_chunk : MB_MAX_CHUNK_ROWS;
    s->chunk = cap / batch;
    if (s->chunk > ctx->prefill_chunk) s->chunk = ctx->prefill_chunk;
    if (chunk && s->chunk > chunk) s->chunk = chunk;
    if (s->chunk == 0) s->chunk = 1;
    s->conv_bytes = batch * (size_t)(c->d_conv - 1) * (size_t)c->d_inner * 4;
    s->ssm_bytes = batch * (size_t)c->d_inner * (size_t)c->d_state * 4;
    s->conv_bytes = (s->conv_bytes + 255) / 256 * 256;
    s->work_bytes = mb_work_bytes(c, batch * s->chunk);
    size_t state_bytes = (size_t)c->n_layer * (s->conv_bytes + s->ssm_bytes);
    s->host_ids = mb_malloc(batch * s->chunk * sizeof *s->host_ids);
    mamba_status_t st = MAMBA_OK;
    if (!s->host_ids) {
        st = mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a state");
    } else if (mb_dev_alloc(ctx, state_bytes, &s->state) != 0 ||
               mb_dev_alloc(ctx, s->work_bytes, &s->work) != 0) {
        st = mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY,
                       "%s backend: cannot allocate the state (%zu bytes) and workspace (%zu bytes) for batch %zu: %s",
                       ctx->backend_name, state_bytes, s->work_bytes, batch, mb_dev_alloc_error(ctx));
    }
    m->n_states++;
    if (st == MAMBA_OK) st = mamba_state_reset(s);
    if (st != MAMBA_OK) {
        mamba_state_free(s);
        return st;
    }
    *out = s;
    return MAMBA_OK;
}

void mamba_state_free(mamba_state_t *s)
{
    if (!s) return;
    mamba_context_t *ctx = s->model->ctx;
    mb_state_drop_graph(s);
    if (s->state) ctx->be->free(ctx->dev, s->state);
    if (s->work) ctx->be->free(ctx->dev, s->work);
    if (s->logits) ctx->be->free(ctx->dev, s->logits);
    free(s->host_ids);
    s->model->n_states--;
    free(s);
}

static size_t state_bytes(const mamba_state_t *s)
{
    return (size_t)s->model->cfg.n_layer * (s->conv_bytes + s->ssm_bytes);
}

mamba_status_t mamba_state_reset(mamba_state_t *s)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    MB_TRY_BE(ctx, ctx->be->fill_zero(ctx->dev, (mb_ptr){s->state, 0}, state_bytes(s)), "state reset");
    return MAMBA_OK;
}

mamba_status_t mamba_prefill(mamba_state_t *s, const int32_t *ids, size_t len, float *last_logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (!ids) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill: ids is NULL");
    if (len == 0) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill: len = 0, expected > 0");
    return mb_model_run(s, ids, len, MAMBA_LOGITS_LAST, last_logits);
}

mamba_status_t mamba_step(mamba_state_t *s, const int32_t *ids, float *logits)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (!ids || !logits) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_step: ids or logits is NULL");
    return mb_model_run(s, ids, 1, MAMBA_LOGITS_LAST, logits);
}

mamba_status_t mamba_state_size(const mamba_state_t *s, size_t *bytes)
{
    if (!s || !bytes) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_size: NULL argument");
    *bytes = sizeof(state_header) + state_bytes(s);
    return MAMBA_OK;
}

static state_header header_of(const mamba_state_t *s)
{
    const mamba_config_t *c = &s->model->cfg;
    state_header h = {STATE_MAGIC, 1, (uint32_t)c->n_layer, (uint32_t)s->batch, (uint32_t)c->d_inner,
                      (uint32_t)c->d_conv, (uint32_t)c->d_state, 0};
    return h;
}

mamba_status_t mamba_state_read(mamba_state_t *s, void *buf, size_t bytes)
{
    size_t need;
    mamba_status_t st = mamba_state_size(s, &need);
    if (st != MAMBA_OK) return st;
    mamba_context_t *ctx = s->model->ctx;
    if (!buf || bytes < need)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_read: buffer of %zu bytes, %zu needed",
                         buf ? bytes : 0, need);
    state_header h = header_of(s);
    memcpy(buf, &h, sizeof h);
    MB_TRY_BE(ctx, ctx->be->download(ctx->dev, (char *)buf + sizeof h, (mb_ptr){s->state, 0}, state_bytes(s)),
              "state download");
    return MAMBA_OK;
}

mamba_status_t mamba_state_write(mamba_state_t *s, const void *buf, size_t bytes)
{
    size_t need;
    mamba_status_t st = mamba_state_size(s, &need);
    if (st != MAMBA_OK) return st;
    mamba_context_t *ctx = s->model->ctx;
    if (!buf || bytes != need)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_write: %zu bytes given, %zu expected",
                         buf ? bytes : 0, need);
    state_header want = header_of(s), got;
    memcpy(&got, buf, sizeof got);
    if (memcmp(&want, &got, sizeof got) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_state_write: saved state is for n_layer %u, batch %u, d_inner %u, d_conv %u, d_state %u; "
                         "this state has %u, %u, %u, %u, %u",
                         got.n_layer, got.batch, got.d_inner, got.d_conv, got.d_state, want.n_layer, want.batch,
                         want.d_inner, want.d_conv, want.d_state);
    MB_TRY_BE(ctx, ctx->be->upload(ctx->dev, (mb_ptr){s->state, 0}, (const char *)buf + sizeof got, state_bytes(s)),
              "state upload");
    MB_TRY_BE(ctx, ctx->be->sync(ctx->dev), "synchronize");
    return MAMBA_OK;
}
