/* The runner: the Mamba LM graph, embedding -> n_layer x [residual += x; h = RMSNorm(residual);
 * x = Mixer(h)] -> residual += x; RMSNorm -> lm_head, as backend ops over a chunk of
 * (batch x T) time-major rows, the layers' mixers enqueued by the model's architecture
 * (core/arch/), the states carried between chunks. */
#include <stdlib.h>
#include <string.h>

#include "runner.h"
#include "arch/arch.h"
#include "api/alloc.h"

/* Rows in one chunk are capped so that a large batch does not need a huge workspace. */
#define MB_MAX_CHUNK_ROWS 8192
/* Recorded steps kept: one per (state, first sequence, count) in use (a server's count of
 * active sequences takes every value up to its slots). */
#define MB_MAX_GRAPHS 64
/* Capability answers kept: one per row count in use. */
#define MB_MAX_PLANS 16

typedef struct step_graph {
    uint64_t state;
    size_t seq0, k;
    void *graph;      /* NULL with failed: this step cannot be recorded */
    int failed;
    int warmed;       /* run once directly: the scratch the step's ops grow exists before a
                         recording, which cannot allocate */
    uint64_t used;
} step_graph;

/* How a chunk of rows runs, from the backend's answers to supports(). */
typedef struct plan {
    size_t rows;
    int fold;        /* few rows: the norms and residual adds fold into in_proj/out_proj GEMVs */
    int fused_step;  /* a one-token chunk through mixer_step                                 */
    int x16_in;      /* in_proj's input from add_rmsnorm16, for gemm_x16                      */
    int x16_out;     /* out_proj's from the fused step's y16 (with fused_step only)           */
} plan;

struct mb_runner {
    mamba_model_t *model;
    mb_buffer *work;           /* activations of one chunk                                  */
    size_t work_bytes;
    mb_buffer *logits;         /* logits of one chunk, grown on demand                      */
    size_t logits_bytes;
    int32_t *host_ids;         /* ids staging of one chunk                                   */
    size_t host_ids_len;
    step_graph graphs[MB_MAX_GRAPHS];
    uint64_t clock;
    plan plans[MB_MAX_PLANS];
    size_t n_plans;
    /* mamba_forward's state and its chunking, kept for the next call of the same batch
     * (allocating and freeing ~1 GB of device memory cost the 130m's 2048-token forward
     * milliseconds a call) */
    mamba_state_t *fwd_state;
    mamba_state_t *gather;     /* scratch state for subsets that are not a run              */
    int pending;               /* a step begun by mb_runner_step_begin may still be running  */
    size_t part_rows;          /* its logits copied in parts of part_rows rows, each marked   */
    unsigned parts;            /* (download_mark i after part i); 0: one copy               */
    mamba_status_t lost;       /* the begun step's failure, found where nothing could report
                                  it (freeing a state): mb_runner_wait returns it           */
};

/* The chunking of one run. */
typedef struct run_plan {
    size_t chunk;           /* tokens per sequence per pass                                  */
    size_t last_chunk;      /* > 0: the last last_chunk (<= chunk) tokens run as a chunk of
                               their own, the ones before in even chunks                      */
    int overlap_logits;     /* all-position logits go to page-locked host memory with
                               download_async, overlapping the next chunk; the chunks' logits
                               alternate between two regions of the logits buffer            */
    size_t overlap_chunks;  /* chunks whose logits copies have been enqueued so far          */
} run_plan;

/* Offsets (bytes) of a chunk of R rows in the workspace. */
typedef struct work_layout {
    size_t ids, residual, hn, mo, mixer, total;
} work_layout;

static size_t up(size_t v) { return (v + 255) / 256 * 256; }

static work_layout layout(const mamba_model_t *m, size_t rows)
{
    work_layout w;
    const size_t dm = (size_t)m->cfg.d_model;
    size_t o = 0;
    w.ids = o;      o += up(rows * 4);
    w.residual = o; o += up(rows * dm * 4);
    w.hn = o;       o += up(rows * dm * 4);
    w.mo = o;       o += up(rows * dm * 4);
    w.mixer = o;    o += up(m->arch->mixer_work_bytes(&m->cfg, rows));
    w.total = o;
    return w;
}

static mb_ptr at(mb_buffer *b, size_t off) { return (mb_ptr){b, off}; }
static const mb_ptr none = {NULL, 0};

mamba_status_t mb_check_ids(mamba_context_t *ctx, const int32_t *ids, size_t n, int vocab)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                             "token id %d at index %zu is out of range [0, %d)", ids[i], i, vocab);
    return MAMBA_OK;
}

mamba_status_t mb_runner_get(mamba_model_t *m, mb_runner **out)
{
    if (!m->runner) {
        mb_runner *r = mb_calloc(1, sizeof *r);
        if (!r) return mb_seterr(m->ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating the model's runner");
        r->model = m;
        m->runner = r;
    }
    *out = m->runner;
    return MAMBA_OK;
}

/* Wait for a begun step: before its buffers or graphs are freed or replaced. */
static mamba_status_t settle(mb_runner *r)
{
    if (!r->pending) return MAMBA_OK;
    r->pending = 0;
    r->parts = 0;
    mamba_context_t *ctx = r->model->ctx;
    MB_TRY_BE(ctx, ctx->dv->sync(ctx->dev), "wait for the decoding step");
    return MAMBA_OK;
}

/* settle where the caller has no status to return: a failure is kept for mb_runner_wait */
static void settle_quietly(mb_runner *r)
{
    const mamba_status_t st = settle(r);
    if (st != MAMBA_OK && r->lost == MAMBA_OK) r->lost = st;
}

static void drop_graphs(mb_runner *r)
{
    mamba_context_t *ctx = r->model->ctx;
    settle_quietly(r);
    for (int i = 0; i < MB_MAX_GRAPHS; i++) {
        if (r->graphs[i].graph) ctx->fused->graph_free(ctx->dev, r->graphs[i].graph);
        memset(&r->graphs[i], 0, sizeof r->graphs[i]);
    }
}

void mb_runner_forget(mb_runner *r, uint64_t state_id)
{
    if (!r) return;
    mamba_context_t *ctx = r->model->ctx;
    settle_quietly(r); /* the step may be this state's */
    for (int i = 0; i < MB_MAX_GRAPHS; i++) {
        step_graph *g = &r->graphs[i];
        if (g->state != state_id) continue;
        if (g->graph) ctx->fused->graph_free(ctx->dev, g->graph);
        memset(g, 0, sizeof *g);
    }
}

void mb_runner_free(mb_runner *r)
{
    if (!r) return;
    mamba_context_t *ctx = r->model->ctx;
    drop_graphs(r);
    mb_state_destroy(r->fwd_state);
    mb_state_destroy(r->gather);
    if (r->work) ctx->dv->free(ctx->dev, r->work);
    if (r->logits) ctx->dv->free(ctx->dev, r->logits);
    free(r->host_ids);
    r->model->runner = NULL;
    free(r);
}

/* The workspace for chunks of rows rows. Growing it moves the buffers recorded graphs use. */
static mamba_status_t ensure_work(mb_runner *r, size_t rows)
{
    mamba_context_t *ctx = r->model->ctx;
    const size_t bytes = layout(r->model, rows).total;
    if (r->host_ids_len < rows) {
        int32_t *ids = mb_malloc(rows * sizeof *ids);
        if (!ids) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory staging %zu token ids", rows);
        free(r->host_ids);
        r->host_ids = ids;
        r->host_ids_len = rows;
    }
    if (r->work_bytes >= bytes) return MAMBA_OK;
    drop_graphs(r);
    if (r->work) ctx->dv->free(ctx->dev, r->work);
    r->work = NULL;
    r->work_bytes = 0;
    if (mb_dev_alloc(ctx, bytes, &r->work) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY,
                         "%s backend: cannot allocate the workspace (%zu bytes) for chunks of %zu rows: %s",
                         ctx->backend_name, bytes, rows, mb_dev_alloc_error(ctx));
    r->work_bytes = bytes;
    return MAMBA_OK;
}

static mamba_status_t ensure_logits(mb_runner *r, size_t bytes)
{
    mamba_context_t *ctx = r->model->ctx;
    if (r->logits_bytes >= bytes) return MAMBA_OK;
    drop_graphs(r); /* they wrote into the old buffer */
    if (r->logits) ctx->dv->free(ctx->dev, r->logits);
    r->logits = NULL;
    r->logits_bytes = 0;
    if (mb_dev_alloc(ctx, bytes, &r->logits) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate %zu bytes for logits: %s",
                         ctx->backend_name, bytes, mb_dev_alloc_error(ctx));
    r->logits_bytes = bytes;
    return MAMBA_OK;
}

/* The backend's answers for chunks of R rows of k sequences, asked once per row count. */
static plan plan_for(mb_runner *r, size_t k, size_t T)
{
    const mamba_model_t *m = r->model;
    const mb_fused_ops *f = m->ctx->fused;
    const size_t R = k * T;
    for (size_t i = 0; i < r->n_plans; i++)
        if (r->plans[i].rows == R) {
            plan p = r->plans[i];
            p.fused_step &= T == 1;
            p.x16_out &= p.fused_step;
            return p;
        }
    plan p = {R, 0, 0, 0, 0};
    if (f && f->supports) {
        mb_fused_query in_q, out_q, step_q;
        m->arch->fold_queries(m, R, &in_q, &out_q);
        p.fold = f->supports(m->ctx->dev, MB_FUSED_GEMV, &in_q) && f->supports(m->ctx->dev, MB_FUSED_GEMV, &out_q);
        /* the step's answer is for R sequences of one token each */
        m->arch->step_query(m, R, &step_q);
        p.fused_step = f->supports(m->ctx->dev, MB_FUSED_MIXER_STEP, &step_q);
        if (f->add_rmsnorm16 && f->gemm_x16 && !p.fold) {
            p.x16_in = f->supports(m->ctx->dev, MB_FUSED_GEMM16, &in_q);
            p.x16_out = p.fused_step && f->supports(m->ctx->dev, MB_FUSED_GEMM16, &out_q);
        }
    }
    r->plans[r->n_plans < MB_MAX_PLANS ? r->n_plans++ : (size_t)(R % MB_MAX_PLANS)] = p;
    p.fused_step &= T == 1;
    p.x16_out &= p.fused_step;
    return p;
}

/* Enqueue every layer for the ids already on the device (T per sequence) and, when
 * logits_wanted, the final RMSNorm; with MAMBA_LOGITS_LAST also the last position's logits
 * into r->logits (every position's are all_logits', beside their copies to the host). No
 * host transfer, so that a one-token step can be recorded as a graph. */
static mamba_status_t enqueue_chunk(mb_runner *r, mamba_state_t *s, size_t seq0, size_t k, size_t T,
                                    mamba_logits_mode_t mode, int logits_wanted)
{
    mamba_model_t *m = r->model;
    mamba_context_t *ctx = m->ctx;
    const mb_model_ops *ops = ctx->ops;
    mb_device *dev = ctx->dev;
    const mamba_config_t *c = &m->cfg;
    const size_t R = k * T, dm = (size_t)c->d_model, V = (size_t)c->vocab_size;
    const work_layout w = layout(m, R);
    mb_buffer *wk = r->work;
    const plan p = plan_for(r, k, T);
    MB_TRY_BE(ctx, ops->embed(dev, at(wk, w.ids), R, m->embedding.p, m->embedding.dt, (size_t)m->cfg.vocab_size, dm,
                              at(wk, w.residual)),
              "embedding");
    const mb_layer_io base = {
        .ctx = ctx, .model = m, .batch = k, .T = T,
        .residual = at(wk, w.residual), .hn = at(wk, w.hn), .mo = at(wk, w.mo), .scratch = at(wk, w.mixer),
        .fold = p.fold, .fused_step = p.fused_step, .x16_in = p.x16_in, .x16_out = p.x16_out,
    };
    for (int l = 0; l < c->n_layer; l++) {
        mb_layer_io io = base;
        io.layer = l;
        io.conv_state = mb_state_conv(s, l, seq0);
        io.ssm_state = mb_state_ssm(s, l, seq0);
        const mamba_status_t st = m->arch->enqueue_layer(&io);
        if (st != MAMBA_OK) return st;
    }
    if (!logits_wanted) return MAMBA_OK;
    MB_TRY_BE(ctx, ops->add_rmsnorm(dev, at(wk, w.residual), p.fold ? none : at(wk, w.mo), m->norm_f, R, dm, c->norm_eps,
                                    at(wk, w.hn)), "final rmsnorm");
    if (mode == MAMBA_LOGITS_LAST) /* row T-1 of each sequence, a stride of T rows apart */
        MB_TRY_BE(ctx, ops->gemm(dev, k, V, dm, at(wk, w.hn + (T - 1) * dm * 4), T * dm, m->lm_head.p, m->lm_head.dt,
                                 none, at(r->logits, 0), V), "lm_head");
    return MAMBA_OK;
}

/* A one-token step of sequences [seq0, seq0 + k) through its recorded graph, recording it on
 * first use. MAMBA_ERR_UNSUPPORTED (remembered) when the backend cannot record this step. */
static mamba_status_t enqueue_step_graph(mb_runner *r, mamba_state_t *s, size_t seq0, size_t k)
{
    mamba_context_t *ctx = r->model->ctx;
    const mb_fused_ops *f = ctx->fused;
    static const mb_fused_query q0 = {0};
    if (!f || !f->supports || !f->supports(ctx->dev, MB_FUSED_GRAPHS, &q0)) return MAMBA_ERR_UNSUPPORTED;
    step_graph *g = NULL, *victim = &r->graphs[0];
    for (int i = 0; i < MB_MAX_GRAPHS; i++) {
        step_graph *e = &r->graphs[i];
        if ((e->graph || e->failed || e->warmed) && e->state == s->id && e->seq0 == seq0 && e->k == k) { g = e; break; }
        if (e->used < victim->used) victim = e;
    }
    if (!g) {
        g = victim;
        if (g->graph) {
            const mamba_status_t st = settle(r);
            if (st != MAMBA_OK) return st;
            f->graph_free(ctx->dev, g->graph);
        }
        *g = (step_graph){s->id, seq0, k, NULL, 0, 1, ++r->clock};
        return MAMBA_ERR_UNSUPPORTED; /* this once, directly */
    }
    if (!g->graph && !g->failed) {
        void *graph = NULL;
        mamba_status_t st = MAMBA_ERR_UNSUPPORTED;
        int rc = f->graph_begin(ctx->dev);
        if (rc == 0) {
            st = enqueue_chunk(r, s, seq0, k, 1, MAMBA_LOGITS_LAST, 1);
            rc = f->graph_end(ctx->dev, &graph);
        }
        if (st != MAMBA_OK || rc != 0 || !graph) {
            mb_log(ctx, MAMBA_LOG_DEBUG, "decode step not recorded as a graph: %s",
                   st != MAMBA_OK && st != MAMBA_ERR_UNSUPPORTED ? ctx->err : ctx->dv->last_error(ctx->dev));
            ctx->err[0] = 0;
            g->failed = 1;
        }
        g->graph = graph;
    }
    g->used = ++r->clock;
    if (g->failed) return MAMBA_ERR_UNSUPPORTED;
    MB_TRY_BE(ctx, f->graph_launch(ctx->dev, g->graph), "decode step graph");
    return MAMBA_OK;
}

/* A one-token step of sequences [seq0, seq0 + k) with its last logits into r->logits: the
 * recorded graph, or the ops directly where the step cannot be recorded (or this once). */
static mamba_status_t enqueue_step(mb_runner *r, mamba_state_t *s, size_t seq0, size_t k)
{
    const mamba_status_t st = enqueue_step_graph(r, s, seq0, k);
    return st == MAMBA_ERR_UNSUPPORTED ? enqueue_chunk(r, s, seq0, k, 1, MAMBA_LOGITS_LAST, 1) : st;
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
 * between two regions of the logits buffer, so that a chunk's lm_head need not wait for the
 * previous chunk's copies; from the third chunk on, it waits for all earlier copies (the
 * region it reuses is among them). */
static mamba_status_t all_logits(mb_runner *r, run_plan *rp, size_t k, size_t T, size_t len, size_t c0,
                                 float *logits)
{
    mamba_model_t *m = r->model;
    mamba_context_t *ctx = m->ctx;
    mb_device *dev = ctx->dev;
    const size_t V = (size_t)m->cfg.vocab_size, dm = (size_t)m->cfg.d_model;
    const work_layout w = layout(m, k * T);
    if (!rp->overlap_logits) {
        MB_TRY_BE(ctx, ctx->ops->gemm(dev, k * T, V, dm, at(r->work, w.hn), dm, m->lm_head.p, m->lm_head.dt, none,
                                      at(r->logits, 0), V), "lm_head");
        for (size_t b = 0; b < k; b++)
            MB_TRY_BE(ctx, ctx->dv->download(dev, logits + (b * len + c0) * V, at(r->logits, b * T * V * 4), T * V * 4),
                      "download of logits");
        return MAMBA_OK;
    }
    if (rp->overlap_chunks >= 2)
        MB_TRY_BE(ctx, ctx->dv->download_fence(dev), "wait for the earlier chunks' logits copies");
    const size_t region = (rp->overlap_chunks++ % 2) * k * rp->chunk;
    for (size_t b = 0; b < k; b++) {
        for (size_t t0 = 0; t0 < T; t0 += MB_OVERLAP_SLICE) {
            const size_t n = T - t0 < MB_OVERLAP_SLICE ? T - t0 : MB_OVERLAP_SLICE, row = b * T + t0;
            const mb_ptr out = at(r->logits, (region + row) * V * 4);
            MB_TRY_BE(ctx, ctx->ops->gemm(dev, n, V, dm, at(r->work, w.hn + row * dm * 4), dm, m->lm_head.p,
                                          m->lm_head.dt, none, out, V), "lm_head");
            MB_TRY_BE(ctx, ctx->dv->download_async(dev, logits + (b * len + c0 + t0) * V, out, n * V * 4),
                      "download of logits");
        }
    }
    return MAMBA_OK;
}

/* Run ids[b][c0 .. c0+T) of sequences [seq0, seq0 + k) through the model. */
static mamba_status_t run_chunk(mb_runner *r, run_plan *rp, mamba_state_t *s, size_t seq0, size_t k,
                                const int32_t *const *ids, size_t len, size_t c0, size_t T, mamba_logits_mode_t mode,
                                float *logits, int last_chunk)
{
    mamba_model_t *m = r->model;
    mamba_context_t *ctx = m->ctx;
    const size_t R = k * T, V = (size_t)m->cfg.vocab_size;
    const work_layout w = layout(m, R);
    const int want = logits && (mode == MAMBA_LOGITS_ALL || last_chunk);
    mamba_status_t st;
    if (want && (st = ensure_logits(r, (mode == MAMBA_LOGITS_ALL ? R : k) * V * 4)) != MAMBA_OK) return st;
    for (size_t b = 0; b < k; b++) memcpy(r->host_ids + b * T, ids[b] + c0, T * sizeof **ids);
    MB_TRY_BE(ctx, ctx->dv->upload(ctx->dev, at(r->work, w.ids), r->host_ids, R * 4), "upload of token ids");
    st = T == 1 && want && mode == MAMBA_LOGITS_LAST ? enqueue_step(r, s, seq0, k)
                                                     : enqueue_chunk(r, s, seq0, k, T, mode, want);
    if (st != MAMBA_OK || !want) return st;
    if (mode == MAMBA_LOGITS_ALL) return all_logits(r, rp, k, T, len, c0, logits);
    MB_TRY_BE(ctx, ctx->dv->download(ctx->dev, logits, at(r->logits, 0), k * V * 4), "download of logits");
    return MAMBA_OK;
}

/* The length of the chunk that starts at c0 of len tokens */
static size_t chunk_len(const run_plan *rp, size_t len, size_t c0)
{
    const size_t left = len - c0, tail = rp->last_chunk;
    if (tail && left > tail) {
        const size_t body = left - tail, n = (body + rp->chunk - 1) / rp->chunk;
        return (body + n - 1) / n;
    }
    return left < rp->chunk ? left : rp->chunk;
}

/* Tokens per sequence per pass for k sequences: the context's prefill chunk, fewer when k
 * sequences of it would pass MB_MAX_CHUNK_ROWS rows; at most cap (0: none). */
static size_t chunk_for(const mamba_context_t *ctx, size_t k, size_t cap)
{
    const size_t rows = ctx->prefill_chunk > MB_MAX_CHUNK_ROWS ? ctx->prefill_chunk : MB_MAX_CHUNK_ROWS;
    size_t chunk = rows / k;
    if (chunk > ctx->prefill_chunk) chunk = ctx->prefill_chunk;
    if (cap && chunk > cap) chunk = cap;
    return chunk ? chunk : 1;
}

static mamba_status_t run_planned(mb_runner *r, run_plan *rp, mamba_state_t *s, size_t seq0, size_t k,
                                  const int32_t *const *ids, size_t len, mamba_logits_mode_t mode, float *logits)
{
    mamba_context_t *ctx = r->model->ctx;
    mamba_status_t st = MAMBA_OK;
    for (size_t b = 0; b < k && st == MAMBA_OK; b++) st = mb_check_ids(ctx, ids[b], len, r->model->cfg.vocab_size);
    if (st == MAMBA_OK) st = ensure_work(r, k * (rp->chunk < len ? rp->chunk : len));
    for (size_t c0 = 0, T; c0 < len && st == MAMBA_OK; c0 += T) {
        T = chunk_len(rp, len, c0);
        st = run_chunk(r, rp, s, seq0, k, ids, len, c0, T, mode, logits, c0 + T == len);
    }
    if (st == MAMBA_OK) MB_TRY_BE(ctx, ctx->dv->sync(ctx->dev), "synchronize");
    return st;
}

mamba_status_t mb_runner_run(mb_runner *r, mamba_state_t *s, size_t seq0, size_t k, const int32_t *const *ids,
                             size_t len, mamba_logits_mode_t mode, float *logits)
{
    run_plan rp = {chunk_for(r->model->ctx, k, 0), 0, 0, 0};
    return run_planned(r, &rp, s, seq0, k, ids, len, mode, logits);
}

mamba_status_t mb_runner_forward(mb_runner *r, const int32_t *ids, size_t batch, size_t len, mamba_logits_mode_t mode,
                                 float *logits)
{
    mamba_model_t *m = r->model;
    mamba_context_t *ctx = m->ctx;
    const size_t V = (size_t)m->cfg.vocab_size;
    /* All logits into page-locked memory: each chunk's logits copied to the host while the
     * next chunk runs (see MB_OVERLAP_CHUNK) */
    const int overlap = mode == MAMBA_LOGITS_ALL && ctx->dv->download_async && ctx->dv->download_fence &&
                        len > 2 * MB_OVERLAP_LAST && mb_host_pinned(ctx, logits, batch * len * V * sizeof *logits);
    run_plan rp = {chunk_for(ctx, batch, overlap ? MB_OVERLAP_CHUNK : 0), 0, overlap, 0};
    if (overlap) rp.last_chunk = MB_OVERLAP_LAST < rp.chunk ? MB_OVERLAP_LAST : rp.chunk;
    mamba_status_t st = MAMBA_OK;
    if (r->fwd_state && r->fwd_state->batch != batch) {
        mb_runner_forget(r, r->fwd_state->id);
        mb_state_destroy(r->fwd_state);
        r->fwd_state = NULL;
    }
    if (r->fwd_state) st = mamba_state_reset(r->fwd_state);
    else st = mb_state_new(m, batch, &r->fwd_state);
    if (st == MAMBA_OK && overlap) {
        /* both regions up front: a buffer reallocated later could still be read by copies */
        size_t second = 0, i = 0;
        for (size_t c0 = 0, T; c0 < len; c0 += T, i++) {
            T = chunk_len(&rp, len, c0);
            if (i % 2 && T > second) second = T;
        }
        st = ensure_logits(r, batch * (rp.chunk + second) * V * 4);
    }
    const int32_t **rows = st == MAMBA_OK ? mb_malloc(batch * sizeof *rows) : NULL;
    if (st == MAMBA_OK && !rows) st = mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_forward: out of memory");
    for (size_t b = 0; rows && b < batch; b++) rows[b] = ids + b * len;
    if (st == MAMBA_OK) st = run_planned(r, &rp, r->fwd_state, 0, batch, rows, len, mode, logits);
    free(rows);
    if (st != MAMBA_OK) {
        /* an error may leave copies in flight into the caller's buffer */
        if (overlap) (void)ctx->dv->sync(ctx->dev);
        if (r->fwd_state) mb_runner_forget(r, r->fwd_state->id);
        mb_state_destroy(r->fwd_state); /* NULL when it could not be created */
        r->fwd_state = NULL;
    }
    return st;
}

/* ---- subsets of a state's sequences ---- */

static mamba_status_t check_seqs(const mamba_state_t *s, size_t n, const size_t *seqs, const char *what)
{
    mamba_context_t *ctx = s->model->ctx;
    for (size_t i = 0; i < n; i++) {
        mamba_status_t st = mb_state_check_seq(s, seqs[i], what);
        if (st != MAMBA_OK) return st;
        for (size_t j = 0; j < i; j++)
            if (seqs[j] == seqs[i])
                return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: sequence %zu is listed twice (entries %zu and %zu)",
                                 what, seqs[i], j, i);
    }
    return MAMBA_OK;
}

/* The scratch state for n gathered sequences. */
static mamba_status_t gather_state(mb_runner *r, size_t n, mamba_state_t **out)
{
    if (!r->gather || r->gather->batch < n) {
        if (r->gather) mb_runner_forget(r, r->gather->id);
        mb_state_destroy(r->gather);
        r->gather = NULL;
        mamba_status_t st = mb_state_new(r->model, n, &r->gather);
        if (st != MAMBA_OK) return st;
    }
    *out = r->gather;
    return MAMBA_OK;
}

/* Copy sequences order[i] of s (for i < n) into sequence i of g (to_g) or back, a run of
 * consecutive numbers in one copy. */
static mamba_status_t move_seqs(mamba_state_t *s, mamba_state_t *g, size_t n, const size_t *seq_of, int to_g)
{
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && seq_of[j] == seq_of[i] + (j - i); j++) {}
        mamba_status_t st = to_g ? mb_state_copy_run(g, i, s, seq_of[i], j - i) : mb_state_copy_run(s, seq_of[i], g, i, j - i);
        if (st != MAMBA_OK) return st;
    }
    return MAMBA_OK;
}

/* st, or after it succeeded the status of waiting for the device (the scatter's copies). */
static mamba_status_t synced(mamba_context_t *ctx, mamba_status_t st)
{
    const int rc = st == MAMBA_OK ? ctx->dv->sync(ctx->dev) : 0;
    return rc ? mb_backend_fail(ctx, rc, "synchronize") : st;
}

static int is_run(const size_t *seq_of, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (seq_of[i] != seq_of[0] + i) return 0;
    return 1;
}

mamba_status_t mb_runner_step_seqs(mb_runner *r, mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *ids,
                                   float *logits)
{
    mamba_context_t *ctx = s->model->ctx;
    mamba_status_t st = check_seqs(s, n, seqs, "mamba_step_seqs");
    if (st != MAMBA_OK) return st;
    const int32_t **rows = mb_malloc(n * sizeof *rows);
    if (!rows) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_step_seqs: out of memory");
    for (size_t i = 0; i < n; i++) rows[i] = ids + i;
    if (is_run(seqs, n)) {
        st = mb_runner_run(r, s, seqs[0], n, rows, 1, MAMBA_LOGITS_LAST, logits);
    } else {
        mamba_state_t *g = NULL;
        if ((st = gather_state(r, n, &g)) == MAMBA_OK && (st = move_seqs(s, g, n, seqs, 1)) == MAMBA_OK &&
            (st = mb_runner_run(r, g, 0, n, rows, 1, MAMBA_LOGITS_LAST, logits)) == MAMBA_OK)
            st = move_seqs(s, g, n, seqs, 0);
        st = synced(ctx, st);
    }
    free(rows);
    return st;
}

/* Parts of a begun step's logits copy: a server draws a part's tokens while the next part
 * crosses the bus (64 rows of 50,280 logits: 13 MB, 0.32 ms at the H200's 40 GB/s, about the
 * time its 16 threads take to draw them). */
#define MB_STEP_COPY_PARTS 4u

/* mb_runner_step_seqs without waiting for the device: the ids uploaded, the step (its graph)
 * and the copy of its logits into page-locked memory enqueued (in marked parts where the
 * backend has marks), then a fence, so that what is enqueued next (a prefill's lm_head)
 * cannot overwrite the logits before they are copied.
 * Anything that frees or replaces the runner's buffers or graphs settles first. Where the
 * backend has no asynchronous copy, the sequences are not a run or the logits are not
 * page-locked, it is mb_runner_step_seqs. */
mamba_status_t mb_runner_step_begin(mb_runner *r, mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *ids,
                                    float *logits)
{
    mamba_model_t *m = r->model;
    mamba_context_t *ctx = m->ctx;
    const size_t V = (size_t)m->cfg.vocab_size;
    mamba_status_t st = check_seqs(s, n, seqs, "mamba_step_seqs_begin");
    if (st != MAMBA_OK) return st;
    if (!ctx->dv->download_async || !ctx->dv->download_fence || !is_run(seqs, n) ||
        !mb_host_pinned(ctx, logits, n * V * sizeof *logits))
        return mb_runner_step_seqs(r, s, n, seqs, ids, logits);
    if ((st = settle(r)) != MAMBA_OK || (st = mb_check_ids(ctx, ids, n, m->cfg.vocab_size)) != MAMBA_OK ||
        (st = ensure_work(r, n)) != MAMBA_OK || (st = ensure_logits(r, n * V * 4)) != MAMBA_OK)
        return st;
    const work_layout w = layout(m, n);
    memcpy(r->host_ids, ids, n * sizeof *ids);
    MB_TRY_BE(ctx, ctx->dv->upload(ctx->dev, at(r->work, w.ids), r->host_ids, n * 4), "upload of token ids");
    st = enqueue_step(r, s, seqs[0], n);
    const int marks = ctx->dv->download_mark && ctx->dv->download_wait_mark;
    r->part_rows = marks ? (n + MB_STEP_COPY_PARTS - 1) / MB_STEP_COPY_PARTS : n;
    r->parts = 0;
    int rc = 0;
    for (size_t row = 0; st == MAMBA_OK && row < n; row += r->part_rows) {
        const size_t rows = n - row < r->part_rows ? n - row : r->part_rows;
        rc = ctx->dv->download_async(ctx->dev, logits + row * V, at(r->logits, row * V * 4), rows * V * 4);
        if (rc == 0 && marks) rc = ctx->dv->download_mark(ctx->dev, r->parts++);
        if (rc) st = mb_backend_fail(ctx, rc, "download of logits");
    }
    if (st == MAMBA_OK && (rc = ctx->dv->download_fence(ctx->dev)) != 0) st = mb_backend_fail(ctx, rc, "download fence");
    r->pending = 1;
    if (st != MAMBA_OK) (void)settle(r); /* nothing of it may run on past the error */
    return st;
}

mamba_status_t mb_runner_wait(mb_runner *r)
{
    mamba_status_t st = settle(r);
    if (st == MAMBA_OK && r->lost != MAMBA_OK) {
        st = r->lost;
        mb_seterr(r->model->ctx->err, st, "the decoding step failed (found while a state was freed)");
    }
    r->lost = MAMBA_OK;
    return st;
}

/* Only reads the runner, so that several threads may wait at once (each for the rows it
 * draws); mb_runner_wait then settles. (On a failure each thread's message goes into the
 * context's buffer: the first call that waits after them has the step's error.) */
mamba_status_t mb_runner_wait_rows(mb_runner *r, size_t rows)
{
    if (!r->pending || rows == 0) return MAMBA_OK;
    mamba_context_t *ctx = r->model->ctx;
    if (!r->parts) {
        MB_TRY_BE(ctx, ctx->dv->sync(ctx->dev), "wait for the decoding step");
        return MAMBA_OK;
    }
    size_t part = (rows - 1) / r->part_rows;
    if (part >= r->parts) part = r->parts - 1;
    MB_TRY_BE(ctx, ctx->dv->download_wait_mark(ctx->dev, (unsigned)part), "wait for a part of the step's logits");
    return MAMBA_OK;
}

/* Prefill of prompts of different lengths: sorted longest first (order), the first m
 * sequences advance together while m of them still have tokens, m shrinking as the shorter
 * ones end; each sequence's last logits are taken in the pass where it ends. */
static mamba_status_t prefill_sorted(mb_runner *r, mamba_state_t *t, size_t base, size_t n, const size_t *order,
                                     const int32_t *const *ids, const size_t *lens, float *last_logits)
{
    mamba_context_t *ctx = r->model->ctx;
    const size_t V = (size_t)r->model->cfg.vocab_size;
    const int32_t **rows = mb_malloc(n * sizeof *rows);
    float *tmp = last_logits ? mb_malloc(n * V * sizeof *tmp) : NULL;
    if (!rows || (last_logits && !tmp)) {
        free(rows);
        free(tmp);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_prefill_seqs: out of memory");
    }
    mamba_status_t st = MAMBA_OK;
    for (size_t m = n, done = 0; m > 0 && st == MAMBA_OK; m--) {
        const size_t end = lens[order[m - 1]];
        if (end == done) continue;
        for (size_t i = 0; i < m; i++) rows[i] = ids[order[i]] + done;
        st = mb_runner_run(r, t, base, m, rows, end - done, MAMBA_LOGITS_LAST, tmp);
        for (size_t i = 0; st == MAMBA_OK && tmp && i < m; i++)
            if (lens[order[i]] == end) memcpy(last_logits + order[i] * V, tmp + i * V, V * sizeof *tmp);
        done = end;
    }
    free(rows);
    free(tmp);
    return st;
}

mamba_status_t mb_runner_prefill_seqs(mb_runner *r, mamba_state_t *s, size_t n, const size_t *seqs,
                                      const int32_t *const *ids, const size_t *lens, float *last_logits)
{
    mamba_context_t *ctx = s->model->ctx;
    mamba_status_t st = check_seqs(s, n, seqs, "mamba_prefill_seqs");
    for (size_t i = 0; i < n && st == MAMBA_OK; i++)
        if (!ids[i] || lens[i] == 0)
            st = mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_prefill_seqs: entry %zu (sequence %zu) has %s", i,
                           seqs[i], ids[i] ? "length 0" : "no ids");
    if (st != MAMBA_OK || n == 0) return st;
    size_t *order = mb_malloc(2 * n * sizeof *order);
    if (!order) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_prefill_seqs: out of memory");
    size_t *seq_of = order + n;
    /* longest first, ties in the caller's order (insertion sort: n is a batch) */
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        for (; j > 0 && lens[order[j - 1]] < lens[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    for (size_t i = 0; i < n; i++) seq_of[i] = seqs[order[i]];
    if (is_run(seq_of, n)) {
        st = prefill_sorted(r, s, seq_of[0], n, order, ids, lens, last_logits);
    } else {
        mamba_state_t *g = NULL;
        if ((st = gather_state(r, n, &g)) == MAMBA_OK && (st = move_seqs(s, g, n, seq_of, 1)) == MAMBA_OK &&
            (st = prefill_sorted(r, g, 0, n, order, ids, lens, last_logits)) == MAMBA_OK)
            st = move_seqs(s, g, n, seq_of, 0);
        st = synced(ctx, st);
    }
    free(order);
    return st;
}

/* ---- greedy decoding on the device ---- */

mamba_status_t mb_runner_step_ids(mb_runner *r, const mamba_state_t *s, mb_ptr *ids)
{
    mamba_status_t st = ensure_work(r, s->batch);
    *ids = at(r->work, layout(r->model, s->batch).ids);
    return st;
}

mamba_status_t mb_runner_step_enqueue(mb_runner *r, mamba_state_t *s, mb_ptr *logits)
{
    const size_t V = (size_t)r->model->cfg.vocab_size;
    mamba_status_t st = ensure_logits(r, s->batch * V * 4);
    if (st != MAMBA_OK) return st;
    *logits = at(r->logits, 0);
    return enqueue_step(r, s, 0, s->batch);
}
