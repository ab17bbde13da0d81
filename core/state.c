/* Recurrent states: creation, reset, copies between sequences, and (de)serialization, of a
 * whole batch or of one sequence. */
#include <stdlib.h>
#include <string.h>

#include "state.h"
#include "arch/arch.h"
#include "api/alloc.h"

#define STATE_MAGIC 0x5453424du /* "MBST" */
#define STATE_VERSION 2u        /* 2: the layer's conv then SSM states of the batch, unpadded */
typedef struct state_header {
    uint32_t magic, version;
    uint32_t n_layer, batch, d_inner, d_conv, d_state, pad;
} state_header;

static size_t up256(size_t v) { return (v + 255) / 256 * 256; }

mamba_status_t mb_state_new(mamba_model_t *m, size_t batch, mamba_state_t **out)
{
    mamba_context_t *ctx = m->ctx;
    *out = NULL;
    if (batch == 0 || batch > (1u << 20))
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "state batch = %zu, expected 1..%u", batch, 1u << 20);
    const mamba_config_t *c = &m->cfg;
    mamba_state_t *s = mb_calloc(1, sizeof *s);
    if (!s) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a state");
    s->model = m;
    s->id = ++m->next_state_id;
    s->batch = batch;
    const mb_state_shape sh = m->arch->state_shape(c);
    s->conv_seq = sh.conv * 4;
    s->ssm_seq = sh.ssm * 4;
    s->conv_block = up256((batch + 1) * s->conv_seq);
    s->layer_bytes = s->conv_block + up256((batch + 1) * s->ssm_seq);
    const size_t bytes = (size_t)c->n_layer * s->layer_bytes;
    m->n_states++;
    mamba_status_t st = MAMBA_OK;
    if (mb_dev_alloc(ctx, bytes, &s->buf) != 0)
        st = mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate the state (%zu bytes) for batch %zu: %s",
                       ctx->backend_name, bytes, batch, mb_dev_alloc_error(ctx));
    if (st == MAMBA_OK) st = mamba_state_reset(s);
    if (st != MAMBA_OK) {
        mb_state_destroy(s);
        return st;
    }
    *out = s;
    return MAMBA_OK;
}

void mb_state_destroy(mamba_state_t *s)
{
    if (!s) return;
    mamba_context_t *ctx = s->model->ctx;
    if (s->buf) ctx->dv->free(ctx->dev, s->buf);
    s->model->n_states--;
    free(s);
}

mb_ptr mb_state_conv(const mamba_state_t *s, int layer, size_t seq)
{
    return (mb_ptr){s->buf, (size_t)layer * s->layer_bytes + seq * s->conv_seq};
}

mb_ptr mb_state_ssm(const mamba_state_t *s, int layer, size_t seq)
{
    return (mb_ptr){s->buf, (size_t)layer * s->layer_bytes + s->conv_block + seq * s->ssm_seq};
}

mamba_status_t mb_state_check_seq(const mamba_state_t *s, size_t seq, const char *what)
{
    if (seq < s->batch) return MAMBA_OK;
    return mb_seterr(s->model->ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: sequence %zu of a state of batch %zu", what,
                     seq, s->batch);
}

mamba_status_t mb_state_copy_run(mamba_state_t *dst, size_t dst_seq, const mamba_state_t *src, size_t src_seq,
                                 size_t n)
{
    mamba_context_t *ctx = dst->model->ctx;
    const size_t layers = (size_t)dst->model->cfg.n_layer;
    if (ctx->dv->copy_2d) { /* a row per layer */
        MB_TRY_BE(ctx, ctx->dv->copy_2d(ctx->dev, mb_state_conv(dst, 0, dst_seq), dst->layer_bytes,
                                        mb_state_conv(src, 0, src_seq), src->layer_bytes, n * dst->conv_seq, layers),
                  "state copy");
        MB_TRY_BE(ctx, ctx->dv->copy_2d(ctx->dev, mb_state_ssm(dst, 0, dst_seq), dst->layer_bytes,
                                        mb_state_ssm(src, 0, src_seq), src->layer_bytes, n * dst->ssm_seq, layers),
                  "state copy");
        return MAMBA_OK;
    }
    for (int l = 0; l < dst->model->cfg.n_layer; l++) {
        MB_TRY_BE(ctx, ctx->dv->copy(ctx->dev, mb_state_conv(dst, l, dst_seq), mb_state_conv(src, l, src_seq),
                                     n * dst->conv_seq), "state copy");
        MB_TRY_BE(ctx, ctx->dv->copy(ctx->dev, mb_state_ssm(dst, l, dst_seq), mb_state_ssm(src, l, src_seq),
                                     n * dst->ssm_seq), "state copy");
    }
    return MAMBA_OK;
}

size_t mamba_state_batch(const mamba_state_t *s) { return s ? s->batch : 0; }

mamba_status_t mamba_state_reset(mamba_state_t *s)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    MB_TRY_BE(ctx, ctx->dv->fill_zero(ctx->dev, (mb_ptr){s->buf, 0}, (size_t)s->model->cfg.n_layer * s->layer_bytes),
              "state reset");
    return MAMBA_OK;
}

mamba_status_t mamba_state_reset_seq(mamba_state_t *s, size_t seq)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    mamba_status_t st = mb_state_check_seq(s, seq, "mamba_state_reset_seq");
    if (st == MAMBA_OK && ctx->dv->fill_zero_2d) { /* a row per layer */
        const size_t layers = (size_t)s->model->cfg.n_layer;
        MB_TRY_BE(ctx, ctx->dv->fill_zero_2d(ctx->dev, mb_state_conv(s, 0, seq), s->layer_bytes, s->conv_seq, layers),
                  "state reset");
        MB_TRY_BE(ctx, ctx->dv->fill_zero_2d(ctx->dev, mb_state_ssm(s, 0, seq), s->layer_bytes, s->ssm_seq, layers),
                  "state reset");
        return MAMBA_OK;
    }
    for (int l = 0; st == MAMBA_OK && l < s->model->cfg.n_layer; l++) {
        MB_TRY_BE(ctx, ctx->dv->fill_zero(ctx->dev, mb_state_conv(s, l, seq), s->conv_seq), "state reset");
        MB_TRY_BE(ctx, ctx->dv->fill_zero(ctx->dev, mb_state_ssm(s, l, seq), s->ssm_seq), "state reset");
    }
    return st;
}

mamba_status_t mamba_state_copy_seq(mamba_state_t *dst, size_t dst_seq, const mamba_state_t *src, size_t src_seq)
{
    if (!dst || !src) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_copy_seq: NULL state");
    mamba_context_t *ctx = dst->model->ctx;
    if (src->model != dst->model)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_copy_seq: the states belong to different models");
    mamba_status_t st = mb_state_check_seq(dst, dst_seq, "mamba_state_copy_seq (destination)");
    if (st == MAMBA_OK) st = mb_state_check_seq(src, src_seq, "mamba_state_copy_seq (source)");
    if (st != MAMBA_OK || (dst == src && dst_seq == src_seq)) return st;
    return mb_state_copy_run(dst, dst_seq, src, src_seq, 1);
}

mamba_status_t mamba_state_swap_seqs(mamba_state_t *s, size_t a, size_t b)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_status_t st = mb_state_check_seq(s, a, "mamba_state_swap_seqs");
    if (st == MAMBA_OK) st = mb_state_check_seq(s, b, "mamba_state_swap_seqs");
    if (st != MAMBA_OK || a == b) return st;
    /* through the spare sequence after the batch */
    const size_t spare = s->batch;
    if ((st = mb_state_copy_run(s, spare, s, a, 1)) == MAMBA_OK && (st = mb_state_copy_run(s, a, s, b, 1)) == MAMBA_OK)
        st = mb_state_copy_run(s, b, s, spare, 1);
    return st;
}

static state_header header_of(const mamba_state_t *s, size_t batch)
{
    const mamba_config_t *c = &s->model->cfg;
    return (state_header){STATE_MAGIC, STATE_VERSION, (uint32_t)c->n_layer, (uint32_t)batch, (uint32_t)c->d_inner,
                          (uint32_t)c->d_conv, (uint32_t)c->d_state, 0};
}

static size_t serialized_bytes(const mamba_state_t *s, size_t n)
{
    return sizeof(state_header) + (size_t)s->model->cfg.n_layer * n * (s->conv_seq + s->ssm_seq);
}

/* Sequences [seq, seq + n) to or from bytes after the header: per layer, their conv then
 * their SSM states. */
static mamba_status_t transfer(mamba_state_t *s, size_t seq, size_t n, void *buf, int to_host)
{
    mamba_context_t *ctx = s->model->ctx;
    unsigned char *p = (unsigned char *)buf + sizeof(state_header);
    for (int l = 0; l < s->model->cfg.n_layer; l++) {
        const mb_ptr part[2] = {mb_state_conv(s, l, seq), mb_state_ssm(s, l, seq)};
        const size_t bytes[2] = {n * s->conv_seq, n * s->ssm_seq};
        for (int i = 0; i < 2; i++) {
            const int rc = to_host ? ctx->dv->download(ctx->dev, p, part[i], bytes[i])
                                   : ctx->dv->upload(ctx->dev, part[i], p, bytes[i]);
            if (rc) return mb_backend_fail(ctx, rc, to_host ? "state download" : "state upload");
            p += bytes[i];
        }
    }
    if (!to_host) MB_TRY_BE(ctx, ctx->dv->sync(ctx->dev), "synchronize");
    return MAMBA_OK;
}

static mamba_status_t read_run(mamba_state_t *s, size_t seq, size_t n, void *buf, size_t bytes, const char *what)
{
    mamba_context_t *ctx = s->model->ctx;
    const size_t need = serialized_bytes(s, n);
    if (!buf || bytes < need)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: buffer of %zu bytes, %zu needed", what,
                         buf ? bytes : 0, need);
    const state_header h = header_of(s, n);
    memcpy(buf, &h, sizeof h);
    return transfer(s, seq, n, buf, 1);
}

static mamba_status_t write_run(mamba_state_t *s, size_t seq, size_t n, const void *buf, size_t bytes, const char *what)
{
    mamba_context_t *ctx = s->model->ctx;
    const size_t need = serialized_bytes(s, n);
    if (!buf || bytes != need)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: %zu bytes given, %zu expected", what,
                         buf ? bytes : 0, need);
    const state_header want = header_of(s, n);
    state_header got;
    memcpy(&got, buf, sizeof got);
    if (memcmp(&want, &got, sizeof got) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "%s: saved state (format %u) is for n_layer %u, batch %u, d_inner %u, d_conv %u, d_state %u; "
                         "this state takes format %u, %u, %u, %u, %u, %u",
                         what, got.version, got.n_layer, got.batch, got.d_inner, got.d_conv, got.d_state, want.version,
                         want.n_layer, want.batch, want.d_inner, want.d_conv, want.d_state);
    return transfer(s, seq, n, (void *)buf, 0);
}

mamba_status_t mamba_state_size(const mamba_state_t *s, size_t *bytes)
{
    if (!s || !bytes) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_size: NULL argument");
    *bytes = serialized_bytes(s, s->batch);
    return MAMBA_OK;
}

mamba_status_t mamba_state_seq_size(const mamba_state_t *s, size_t *bytes)
{
    if (!s || !bytes) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_state_seq_size: NULL argument");
    *bytes = serialized_bytes(s, 1);
    return MAMBA_OK;
}

mamba_status_t mamba_state_read(mamba_state_t *s, void *buf, size_t bytes)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    return read_run(s, 0, s->batch, buf, bytes, "mamba_state_read");
}

mamba_status_t mamba_state_write(mamba_state_t *s, const void *buf, size_t bytes)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    return write_run(s, 0, s->batch, buf, bytes, "mamba_state_write");
}

mamba_status_t mamba_state_read_seq(mamba_state_t *s, size_t seq, void *buf, size_t bytes)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_status_t st = mb_state_check_seq(s, seq, "mamba_state_read_seq");
    return st != MAMBA_OK ? st : read_run(s, seq, 1, buf, bytes, "mamba_state_read_seq");
}

mamba_status_t mamba_state_write_seq(mamba_state_t *s, size_t seq, const void *buf, size_t bytes)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_status_t st = mb_state_check_seq(s, seq, "mamba_state_write_seq");
    return st != MAMBA_OK ? st : write_run(s, seq, 1, buf, bytes, "mamba_state_write_seq");
}
