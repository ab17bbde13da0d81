/* The Mamba graph: embedding -> n_layer x [residual += x; h = RMSNorm(residual);
 * x = Mixer(h)] -> residual += x; RMSNorm -> lm_head, as a sequence of backend ops over a
 * chunk of (batch x T) time-major rows, with the conv and SSM states carried between chunks. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Offsets (bytes) of the activations of a chunk of R rows in the workspace. */
typedef struct work_layout {
    size_t ids, residual, hn, mo, xz, xc, xdbl, delta, y, total;
} work_layout;

static size_t up(size_t v) { return (v + 255) / 256 * 256; }

static work_layout layout(const mamba_config_t *c, size_t rows)
{
    work_layout w;
    size_t o = 0;
    const size_t dm = (size_t)c->d_model, di = (size_t)c->d_inner;
    const size_t nd = (size_t)c->dt_rank + 2 * (size_t)c->d_state;
    w.ids = o;      o += up(rows * 4);
    w.residual = o; o += up(rows * dm * 4);
    w.hn = o;       o += up(rows * dm * 4);
    w.mo = o;       o += up(rows * dm * 4);
    w.xz = o;       o += up(rows * 2 * di * 4);
    w.xc = o;       o += up(rows * di * 4);
    w.xdbl = o;     o += up(rows * nd * 4);
    w.delta = o;    o += up(rows * di * 4);
    w.y = o;        o += up(rows * di * 4);
    w.total = o;
    return w;
}

size_t mb_work_bytes(const mamba_config_t *c, size_t rows) { return layout(c, rows).total; }

mamba_status_t mb_check_ids(mamba_context_t *ctx, const int32_t *ids, size_t n, int vocab)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                             "token id %d at index %zu is out of range [0, %d)", ids[i], i, vocab);
    return MAMBA_OK;
}

static mb_ptr at(mb_buffer *b, size_t off) { return (mb_ptr){b, off}; }
static const mb_ptr none = {NULL, 0};

/* One Mamba block on rows = batch*T rows: from hn to mo, or (fold) from the residual back
 * into it. A one-token chunk goes through the backend's fused mixer_step where it has one. */
static mamba_status_t mixer(mamba_state_t *s, const work_layout *w, int l, size_t T, int fold)
{
    mamba_model_t *m = s->model;
    mamba_context_t *ctx = m->ctx;
    const mb_backend *be = ctx->be;
    mb_device *dev = ctx->dev;
    const mamba_config_t *c = &m->cfg;
    const mb_layer_weights *lw = &m->layers[l];
    const size_t B = s->batch, R = B * T, dm = (size_t)c->d_model, di = (size_t)c->d_inner;
    const size_t layer_off = (size_t)l * (s->conv_bytes + s->ssm_bytes);
    mb_buffer *wk = s->work;

    /* in_proj: from hn, or (fold) from the residual with the layer's RMSNorm folded into the
     * backend's fused GEMV; a shape that one does not take runs as add_rmsnorm + gemm */
    int rc = fold ? be->gemv_fused(dev, R, 2 * di, dm, at(wk, w->residual), dm, lw->norm, c->norm_eps, lw->in_proj.p,
                                   lw->in_proj.dt, lw->in_proj_bias, at(wk, w->xz), 2 * di, 0)
                  : MAMBA_ERR_UNSUPPORTED;
    if (rc == MAMBA_ERR_UNSUPPORTED) {
        rc = fold ? be->add_rmsnorm(dev, at(wk, w->residual), none, lw->norm, R, dm, c->norm_eps, at(wk, w->hn)) : 0;
        if (rc == 0)
            rc = be->gemm(dev, R, 2 * di, dm, at(wk, w->hn), dm, lw->in_proj.p, lw->in_proj.dt, lw->in_proj_bias,
                          at(wk, w->xz), 2 * di);
    }
    MB_TRY_BE(ctx, rc, "in_proj");
    int fused = 0;
    if (T == 1 && be->mixer_step) {
        mb_mixer_step_op ms = {
            .batch = B, .dim = di, .d_state = (size_t)c->d_state, .dt_rank = (size_t)c->dt_rank,
            .width = (size_t)c->d_conv,
            .xz = at(wk, w->xz), .xz_sb = 2 * di,
            .conv_w = lw->conv_w, .conv_b = lw->conv_b, .conv_state = at(s->state, layer_off),
            .x_proj = lw->x_proj.p, .x_proj_dt = lw->x_proj.dt,
            .dt_proj = lw->dt_proj.p, .dt_proj_dt = lw->dt_proj.dt,
            .dt_bias = lw->dt_bias, .A = lw->A, .D = lw->D,
            .ssm_state = at(s->state, layer_off + s->conv_bytes),
            .xdbl = at(wk, w->xdbl), .y = at(wk, w->y), .y_sb = di,
            /* delta is not used by a fused step */
            .scratch = at(wk, w->delta), .scratch_bytes = R * di * 4,
        };
        /* a shape the fused kernels do not take runs as separate ops */
        rc = be->mixer_step(dev, &ms);
        if (rc != 0 && rc != MAMBA_ERR_UNSUPPORTED) return mb_backend_fail(ctx, rc, "mixer step");
        fused = rc == 0;
        if (!fused && l == 0) mb_log(ctx, MAMBA_LOG_DEBUG, "mixer step runs as separate ops: %s", be->last_error(dev));
    }
    if (!fused) {
        /* conv, x_proj, dt_proj and the scan as separate ops, for any chunk length: xz -> y */
        const size_t N = (size_t)c->d_state, rk = (size_t)c->dt_rank, nd = rk + 2 * N;
        mb_conv_op cv = {
            .batch = B, .len = T, .channels = di, .width = (size_t)c->d_conv,
            .x = at(wk, w->xz), .x_sb = (ptrdiff_t)(T * 2 * di), .x_st = (ptrdiff_t)(2 * di),
            .weight = lw->conv_w, .bias = lw->conv_b,
            .state = at(s->state, layer_off),
            .out = at(wk, w->xc), .out_sb = (ptrdiff_t)(T * di), .out_st = (ptrdiff_t)di,
        };
        MB_TRY_BE(ctx, be->conv_silu(dev, &cv), "conv1d");

        MB_TRY_BE(ctx, be->gemm(dev, R, nd, di, at(wk, w->xc), di, lw->x_proj.p, lw->x_proj.dt, none,
                                at(wk, w->xdbl), nd), "x_proj");
        MB_TRY_BE(ctx, be->gemm(dev, R, di, rk, at(wk, w->xdbl), nd, lw->dt_proj.p, lw->dt_proj.dt, none,
                                at(wk, w->delta), di), "dt_proj");

        mb_ptr ssm = at(s->state, layer_off + s->conv_bytes);
        const ptrdiff_t bc_sb = (ptrdiff_t)(T * nd), bc_st = (ptrdiff_t)nd;
        mb_scan_op sc = {
            .batch = B, .dim = di, .len = T, .d_state = N, .n_groups = 1,
            .u = at(wk, w->xc), .u_sb = (ptrdiff_t)(T * di), .u_st = (ptrdiff_t)di, .u_sd = 1,
            .delta = at(wk, w->delta), .delta_sb = (ptrdiff_t)(T * di), .delta_st = (ptrdiff_t)di, .delta_sd = 1,
            .A = lw->A,
            .B = at(wk, w->xdbl + rk * 4), .B_sb = bc_sb, .B_st = bc_st, .B_sg = 0, .B_sn = 1,
            .C = at(wk, w->xdbl + (rk + N) * 4), .C_sb = bc_sb, .C_st = bc_st, .C_sg = 0, .C_sn = 1,
            .D = lw->D,
            .z = at(wk, w->xz + di * 4), .z_sb = (ptrdiff_t)(T * 2 * di), .z_st = (ptrdiff_t)(2 * di), .z_sd = 1,
            .delta_bias = lw->dt_bias, .delta_softplus = 1,
            .state_in = ssm, .state_out = ssm,
            .out = at(wk, w->y), .out_sb = (ptrdiff_t)(T * di), .out_st = (ptrdiff_t)di, .out_sd = 1,
        };
        MB_TRY_BE(ctx, be->scan(dev, &sc), "selective scan");
    }
    /* out_proj: to mo, or (fold) added straight into the residual; the fallback adds with
     * add_rmsnorm, whose normalized output is not used */
    rc = fold ? be->gemv_fused(dev, R, dm, di, at(wk, w->y), di, none, 0.0f, lw->out_proj.p, lw->out_proj.dt,
                               lw->out_proj_bias, at(wk, w->residual), dm, 1)
              : MAMBA_ERR_UNSUPPORTED;
    if (rc == MAMBA_ERR_UNSUPPORTED) {
        rc = be->gemm(dev, R, dm, di, at(wk, w->y), di, lw->out_proj.p, lw->out_proj.dt, lw->out_proj_bias,
                      at(wk, w->mo), dm);
        if (rc == 0 && fold)
            rc = be->add_rmsnorm(dev, at(wk, w->residual), at(wk, w->mo), lw->norm, R, dm, c->norm_eps, at(wk, w->hn));
    }
    MB_TRY_BE(ctx, rc, "out_proj");
    return MAMBA_OK;
}

static void drop_step_graph(mamba_state_t *s)
{
    mamba_context_t *ctx = s->model->ctx;
    if (s->step_graph) ctx->be->graph_free(ctx->dev, s->step_graph);
    s->step_graph = NULL;
}

static mamba_status_t ensure_logits(mamba_state_t *s, size_t bytes)
{
    mamba_context_t *ctx = s->model->ctx;
    if (s->logits_bytes >= bytes) return MAMBA_OK;
    drop_step_graph(s); /* it wrote into the old buffer */
    if (s->logits) ctx->be->free(ctx->dev, s->logits);
    s->logits = NULL;
    s->logits_bytes = 0;
    if (mb_dev_alloc(ctx, bytes, &s->logits) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate %zu bytes for logits: %s",
                         ctx->backend_name, bytes, mb_dev_alloc_error(ctx));
    s->logits_bytes = bytes;
    return MAMBA_OK;
}

/* Enqueue every layer for the ids already on the device (T per sequence) and, when
 * logits_wanted, the final RMSNorm; with MAMBA_LOGITS_LAST also the last position's logits
 * into s->logits (every position's are run_chunk's, beside their copies to the host). No host
 * transfer, so that a one-token step can be recorded as a graph. */
static mamba_status_t enqueue_chunk(mamba_state_t *s, size_t T, mamba_logits_mode_t mode, int logits_wanted)
{
    mamba_model_t *m = s->model;
    mamba_context_t *ctx = m->ctx;
    const mb_backend *be = ctx->be;
    mb_device *dev = ctx->dev;
    const mamba_config_t *c = &m->cfg;
    const size_t B = s->batch, R = B * T, dm = (size_t)c->d_model, V = (size_t)c->vocab_size;
    const work_layout w = layout(c, R);
    mb_buffer *wk = s->work;
    MB_TRY_BE(ctx, be->embed(dev, at(wk, w.ids), R, m->embedding.p, m->embedding.dt, dm, at(wk, w.residual)),
              "embedding");
    /* a few rows (decoding): each layer's add + RMSNorm folds into its in_proj and out_proj */
    const int fold = R <= 8 && be->gemv_fused != NULL;
    for (int l = 0; l < c->n_layer; l++) {
        if (!fold)
            MB_TRY_BE(ctx, be->add_rmsnorm(dev, at(wk, w.residual), l ? at(wk, w.mo) : none, m->layers[l].norm, R, dm,
                                           c->norm_eps, at(wk, w.hn)), "add + rmsnorm");
        mamba_status_t st = mixer(s, &w, l, T, fold);
        if (st != MAMBA_OK) return st;
    }
    if (!logits_wanted) return MAMBA_OK;
    MB_TRY_BE(ctx, be->add_rmsnorm(dev, at(wk, w.residual), fold ? none : at(wk, w.mo), m->norm_f, R, dm, c->norm_eps,
                                   at(wk, w.hn)), "final rmsnorm");
    if (mode == MAMBA_LOGITS_LAST) /* row T-1 of each sequence, a stride of T rows apart */
        MB_TRY_BE(ctx, be->gemm(dev, B, V, dm, at(wk, w.hn + (T - 1) * dm * 4), T * dm, m->lm_head.p, m->lm_head.dt,
                                none, at(s->logits, 0), V), "lm_head");
    return MAMBA_OK;
}

/* A one-token step through the recorded graph, recording it on first use. Returns
 * MAMBA_ERR_UNSUPPORTED (and remembers it) when the backend cannot record this step. */
static mamba_status_t enqueue_step_graph(mamba_state_t *s)
{
    mamba_context_t *ctx = s->model->ctx;
    const mb_backend *be = ctx->be;
    if (!be->graph_begin || s->graph_failed) return MAMBA_ERR_UNSUPPORTED;
    if (!s->step_graph) {
        if (be->graph_begin(ctx->dev) != 0) {
            s->graph_failed = 1;
            return MAMBA_ERR_UNSUPPORTED;
        }
        mamba_status_t st = enqueue_chunk(s, 1, MAMBA_LOGITS_LAST, 1);
        void *g = NULL;
        int rc = be->graph_end(ctx->dev, &g);
        if (st != MAMBA_OK || rc != 0 || !g) {
            mb_log(ctx, MAMBA_LOG_DEBUG, "decode step not recorded as a graph: %s",
                   st != MAMBA_OK ? ctx->err : be->last_error(ctx->dev));
            ctx->err[0] = 0;
            s->graph_failed = 1;
            return MAMBA_ERR_UNSUPPORTED;
        }
        s->step_graph = g;
    }
    MB_TRY_BE(ctx, be->graph_launch(ctx->dev, s->step_graph), "decode step graph");
    return MAMBA_OK;
}

/* mamba_forward's logits of every position into page-locked memory: chunks of at most
 * MB_OVERLAP_CHUNK tokens, the last MB_OVERLAP_LAST tokens a chunk of their own, the lm_head
 * in slices of MB_OVERLAP_SLICE rows. The copies (412 MB for the 130m's 2048 tokens, 7.5 ms at
 * PCIe 5's 55 GB/s) should start early and leave little after the computation, and each extra
 * chunk costs the layers time (smaller GEMMs, shorter scans): a long first chunk, a short last
 * one. Measured on the H100 (130m, 2048 tokens, tensor-core GEMMs): 1536 + 512 130k tokens/s,
 * 1280 + 768 126k, 1792 + 256 123k, 1536 + 256 121k, 1024 + 768 115k, 1024 + 1024 107k,
 * 1024 + 512 + 512 115k; slices of 128 or 256 the same, of 1024 6% slower. */
#ifndef MB_OVERLAP_CHUNK
#define MB_OVERLAP_CHUNK ((size_t)1536)
#endif
#ifndef MB_OVERLAP_LAST
#define MB_OVERLAP_LAST ((size_t)512)
#endif
#ifndef MB_OVERLAP_SLICE
#define MB_OVERLAP_SLICE 256
#endif

/* The logits of every position of a chunk (hn after the final RMSNorm) into logits[b, c0 + t]
 * (sequences len rows apart): one GEMM, then a download per sequence. Into page-locked memory
 * (overlap_logits) the GEMM goes in slices of rows, each slice's copy to the host starting as
 * soon as it is computed, beside the next slices and the next chunk's layers. Chunks alternate
 * between two regions of s->logits, so that a chunk's lm_head need not wait for the previous
 * chunk's copies; from the third chunk on, it waits for all earlier copies (the region it
 * reuses is among them). */
static mamba_status_t all_logits(mamba_state_t *s, const work_layout *w, size_t T, size_t len, size_t c0,
                                 float *logits)
{
    mamba_model_t *m = s->model;
    mamba_context_t *ctx = m->ctx;
    const mb_backend *be = ctx->be;
    mb_device *dev = ctx->dev;
    const size_t B = s->batch, V = (size_t)m->cfg.vocab_size, dm = (size_t)m->cfg.d_model;
    if (!s->overlap_logits) {
        MB_TRY_BE(ctx, be->gemm(dev, B * T, V, dm, at(s->work, w->hn), dm, m->lm_head.p, m->lm_head.dt, none,
                                at(s->logits, 0), V), "lm_head");
        for (size_t b = 0; b < B; b++)
            MB_TRY_BE(ctx, be->download(dev, logits + (b * len + c0) * V, at(s->logits, b * T * V * 4), T * V * 4),
                      "download of logits");
        return MAMBA_OK;
    }
    if (s->overlap_chunks >= 2)
        MB_TRY_BE(ctx, be->download_fence(dev), "wait for the earlier chunks' logits copies");
    const size_t region = (s->overlap_chunks++ % 2) * B * s->chunk;
    for (size_t b = 0; b < B; b++) {
        for (size_t t0 = 0; t0 < T; t0 += MB_OVERLAP_SLICE) {
            const size_t n = T - t0 < MB_OVERLAP_SLICE ? T - t0 : MB_OVERLAP_SLICE, row = b * T + t0;
            const mb_ptr out = at(s->logits, (region + row) * V * 4);
            MB_TRY_BE(ctx, be->gemm(dev, n, V, dm, at(s->work, w->hn + row * dm * 4), dm, m->lm_head.p, m->lm_head.dt,
                                    none, out, V), "lm_head");
            MB_TRY_BE(ctx, be->download_async(dev, logits + (b * len + c0 + t0) * V, out, n * V * 4),
                      "download of logits");
        }
    }
    return MAMBA_OK;
}

/* Run ids[b, c0 .. c0+T) (row stride len) through the model. */
static mamba_status_t run_chunk(mamba_state_t *s, const int32_t *ids, size_t len, size_t c0, size_t T,
                                mamba_logits_mode_t mode, float *logits, int last_chunk)
{
    mamba_model_t *m = s->model;
    mamba_context_t *ctx = m->ctx;
    const mb_backend *be = ctx->be;
    mb_device *dev = ctx->dev;
    const size_t B = s->batch, R = B * T, V = (size_t)m->cfg.vocab_size;
    const work_layout w = layout(&m->cfg, R);
    const int want = logits && (mode == MAMBA_LOGITS_ALL || last_chunk);
    mamba_status_t st;
    if (want && (st = ensure_logits(s, (mode == MAMBA_LOGITS_ALL ? R : B) * V * 4)) != MAMBA_OK) return st;
    for (size_t b = 0; b < B; b++) memcpy(s->host_ids + b * T, ids + b * len + c0, T * sizeof *ids);
    MB_TRY_BE(ctx, be->upload(dev, at(s->work, w.ids), s->host_ids, R * 4), "upload of token ids");
    st = T == 1 && want && mode == MAMBA_LOGITS_LAST ? enqueue_step_graph(s) : MAMBA_ERR_UNSUPPORTED;
    if (st == MAMBA_ERR_UNSUPPORTED) st = enqueue_chunk(s, T, mode, want);
    if (st != MAMBA_OK || !want) return st;
    if (mode == MAMBA_LOGITS_ALL) return all_logits(s, &w, T, len, c0, logits);
    MB_TRY_BE(ctx, be->download(dev, logits, at(s->logits, 0), B * V * 4), "download of logits");
    return MAMBA_OK;
}

/* The length of the chunk that starts at c0 of len tokens */
static size_t chunk_len(const mamba_state_t *s, size_t len, size_t c0)
{
    const size_t left = len - c0, tail = s->last_chunk;
    if (tail && left > tail) {
        const size_t body = left - tail, n = (body + s->chunk - 1) / s->chunk;
        return (body + n - 1) / n;
    }
    return left < s->chunk ? left : s->chunk;
}

mamba_status_t mb_model_run(mamba_state_t *s, const int32_t *ids, size_t len, mamba_logits_mode_t mode,
                            float *logits)
{
    mamba_context_t *ctx = s->model->ctx;
    mamba_status_t st = mb_check_ids(ctx, ids, s->batch * len, s->model->cfg.vocab_size);
    if (st != MAMBA_OK) return st;
    for (size_t c0 = 0, T; c0 < len; c0 += T) {
        T = chunk_len(s, len, c0);
        st = run_chunk(s, ids, len, c0, T, mode, logits, c0 + T == len);
        if (st != MAMBA_OK) return st;
    }
    MB_TRY_BE(ctx, ctx->be->sync(ctx->dev), "synchronize");
    return MAMBA_OK;
}

void mb_state_drop_graph(mamba_state_t *s) { drop_step_graph(s); }

mb_ptr mb_model_step_ids(const mamba_state_t *s) { return at(s->work, layout(&s->model->cfg, s->batch).ids); }

mamba_status_t mb_model_step_enqueue(mamba_state_t *s, mb_ptr *logits)
{
    const size_t V = (size_t)s->model->cfg.vocab_size;
    mamba_status_t st = ensure_logits(s, s->batch * V * 4);
    if (st != MAMBA_OK) return st;
    *logits = at(s->logits, 0);
    st = enqueue_step_graph(s);
    return st == MAMBA_ERR_UNSUPPORTED ? enqueue_chunk(s, 1, MAMBA_LOGITS_LAST, 1) : st;
}

mamba_status_t mamba_forward(mamba_model_t *m, const int32_t *ids, size_t batch, size_t len,
                             mamba_logits_mode_t mode, float *logits)
{
    if (!m) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "model is NULL");
    mamba_context_t *ctx = m->ctx;
    if (!ids || !logits) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: ids or logits is NULL");
    if (batch == 0 || len == 0)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: batch = %zu, len = %zu; both must be > 0",
                         batch, len);
    if (mode != MAMBA_LOGITS_ALL && mode != MAMBA_LOGITS_LAST)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_forward: unknown logits mode %d", (int)mode);
    mamba_status_t st = mb_check_ids(ctx, ids, batch * len, m->cfg.vocab_size);
    if (st != MAMBA_OK) return st;
    /* All logits into page-locked memory: each chunk's logits copied to the host while the
     * next chunk runs (see MB_OVERLAP_CHUNK) */
    const int overlap = mode == MAMBA_LOGITS_ALL && ctx->be->download_async && ctx->be->download_fence &&
                        len > 2 * MB_OVERLAP_LAST &&
                        mb_host_pinned(ctx, logits, batch * len * (size_t)m->cfg.vocab_size * sizeof *logits);
    const size_t chunk = overlap ? MB_OVERLAP_CHUNK : 0;
    mamba_state_t *s = m->forward_state;
    if (s && (s->batch != batch || m->forward_chunk != chunk)) {
        mamba_state_free(s);
        s = m->forward_state = NULL;
    }
    if (s) st = mamba_state_reset(s);
    else if ((st = mb_state_new(m, batch, chunk, &s)) == MAMBA_OK) {
        m->forward_state = s;
        m->forward_chunk = chunk;
    }
    if (st == MAMBA_OK) {
        s->overlap_logits = overlap;
        s->overlap_chunks = 0;
        s->last_chunk = overlap ? (MB_OVERLAP_LAST < s->chunk ? MB_OVERLAP_LAST : s->chunk) : 0;
    }
    if (st == MAMBA_OK && overlap) {
        /* both regions up front: a buffer reallocated later could still be read by copies */
        size_t second = 0, i = 0;
        for (size_t c0 = 0, T; c0 < len; c0 += T, i++) {
            T = chunk_len(s, len, c0);
            if (i % 2 && T > second) second = T;
        }
        st = ensure_logits(s, batch * (s->chunk + second) * (size_t)m->cfg.vocab_size * 4);
    }
    if (st == MAMBA_OK) st = mb_model_run(s, ids, len, mode, logits);
    if (st != MAMBA_OK) {
        /* an error may leave copies in flight into the caller's buffer */
        if (overlap) (void)ctx->be->sync(ctx->dev);
        mamba_state_free(m->forward_state); /* NULL when it could not be created */
        m->forward_state = NULL;
    }
    return st;
}
