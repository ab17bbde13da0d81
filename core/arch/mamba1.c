/* Mamba-1 (model_type "mamba"): the parameters of a layer, its state, and the mixer as a
 * sequence of backend ops:
 *   xz = in_proj(h); x = silu(conv1d(x) + conv_b); x_dbl = x_proj(x) = (dt, B, C);
 *   delta = dt_proj(dt); y = scan(x, delta + dt_bias, A, B, C, D) * silu(z); out = out_proj(y).
 * Falcon-Mamba (falcon_mamba.c) is the same layer with dt, B and C normalized after x_proj. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch/mamba1.h"

size_t mb_mamba1_specs_count(const mamba_config_t *c) { return 3 + (size_t)c->n_layer * 12; }

/* The parameters, in the order they are loaded. Pointers into m are bound. */
void mb_mamba1_specs_build(mamba_model_t *m, mb_spec *specs, size_t *n)
{
    const mamba_config_t *c = &m->cfg;
    const int64_t di = c->d_inner, dm = c->d_model, N = c->d_state;
    mb_mamba1_layer *layers = m->layers;
    size_t k = 0;
    char name[MB_NAME_LEN];
    mb_spec *s;
    s = &specs[k++];
    mb_spec_set(s, "backbone.embeddings.weight", 2, c->vocab_size, dm, MB_INIT_UNIFORM, 0.02f * 1.7320508f, 1);
    s->mat = &m->embedding;
    s->q8_ok = 1;
    for (int l = 0; l < c->n_layer; l++) {
        mb_mamba1_layer *w = &layers[l];
        const size_t first = k;
#define LNAME(suffix) (snprintf(name, sizeof name, "backbone.layers.%d.%s", l, suffix), name)
        s = &specs[k++];
        mb_spec_set(s, LNAME("norm.weight"), 1, dm, 0, MB_INIT_ONES, 0, 0);
        s->vec = &w->norm;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.in_proj.weight"), 2, 2 * di, dm, MB_INIT_UNIFORM, 1.0f / sqrtf((float)dm), 1);
        s->mat = &w->in_proj;
        s->q8_ok = 1;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.in_proj.bias"), 1, 2 * di, 0, MB_INIT_ZEROS, 0, 0);
        s->vec = &w->in_proj_bias;
        s->skip = !c->use_bias;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.conv1d.weight"), 3, di, 1, MB_INIT_UNIFORM, 1.0f / sqrtf((float)c->d_conv), 0);
        s->shape[2] = c->d_conv;
        s->vec = &w->conv_w;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.conv1d.bias"), 1, di, 0, MB_INIT_UNIFORM, 1.0f / sqrtf((float)c->d_conv), 0);
        s->vec = &w->conv_b;
        s->skip = !c->use_conv_bias;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.x_proj.weight"), 2, c->dt_rank + 2 * N, di, MB_INIT_UNIFORM,
                    1.0f / sqrtf((float)di), 1);
        s->mat = &w->x_proj;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.dt_proj.weight"), 2, di, c->dt_rank, MB_INIT_UNIFORM,
                    1.0f / sqrtf((float)c->dt_rank), 1);
        s->mat = &w->dt_proj;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.dt_proj.bias"), 1, di, 0, MB_INIT_DT_BIAS, 0, 0);
        s->vec = &w->dt_bias;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.A_log"), 2, di, N, MB_INIT_A_LOG, 0, 0);
        s->vec = &w->A;
        s->neg_exp = 1;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.D"), 1, di, 0, MB_INIT_ONES, 0, 0);
        s->vec = &w->D;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.out_proj.weight"), 2, dm, di, MB_INIT_UNIFORM,
                    1.0f / sqrtf((float)di) / sqrtf((float)c->n_layer), 1);
        s->mat = &w->out_proj;
        s->q8_ok = 1;
        s = &specs[k++];
        mb_spec_set(s, LNAME("mixer.out_proj.bias"), 1, dm, 0, MB_INIT_ZEROS, 0, 0);
        s->vec = &w->out_proj_bias;
        s->skip = !c->use_bias;
#undef LNAME
        /* a layer's vectors share a buffer: the fused step kernels read them from one */
        for (size_t i = first; i < k; i++) specs[i].group = l + 1;
    }
    s = &specs[k++];
    mb_spec_set(s, "backbone.norm_f.weight", 1, dm, 0, MB_INIT_ONES, 0, 0);
    s->vec = &m->norm_f;
    s = &specs[k++];
    mb_spec_set(s, "lm_head.weight", 2, c->vocab_size, dm, MB_INIT_UNIFORM, 0.02f * 1.7320508f, 1);
    s->mat = &m->lm_head;
    s->q8_ok = 1;
    s->skip = c->tie_embeddings;
    *n = k;
}

mb_state_shape mb_mamba1_state_shape(const mamba_config_t *c)
{
    return (mb_state_shape){(size_t)(c->d_conv - 1) * (size_t)c->d_inner, (size_t)c->d_inner * (size_t)c->d_state};
}

/* Offsets (bytes) of the mixer's activations of a chunk of R rows in its working space. */
typedef struct mixer_layout {
    size_t xz, xc, xdbl, delta, y, total;
} mixer_layout;

static size_t up(size_t v) { return (v + 255) / 256 * 256; }

static mixer_layout layout(const mamba_config_t *c, size_t rows)
{
    mixer_layout w;
    size_t o = 0;
    const size_t di = (size_t)c->d_inner, nd = (size_t)c->dt_rank + 2 * (size_t)c->d_state;
    w.xz = o;       o += up(rows * 2 * di * 4);
    w.xc = o;       o += up(rows * di * 4);
    w.xdbl = o;     o += up(rows * nd * 4);
    w.delta = o;    o += up(rows * di * 4);
    w.y = o;        o += up(rows * di * 4);
    w.total = o;
    return w;
}

size_t mb_mamba1_work_bytes(const mamba_config_t *c, size_t rows) { return layout(c, rows).total; }

void mb_mamba1_fold_queries(const mamba_model_t *m, size_t rows, mb_fused_query *in_q, mb_fused_query *out_q)
{
    const mb_mamba1_layer *lw = m->layers;
    const mamba_config_t *c = &m->cfg;
    *in_q = (mb_fused_query){.rows = rows, .n = 2 * (size_t)c->d_inner, .k = (size_t)c->d_model,
                             .wdtype = lw->in_proj.dt, .norm = 1};
    *out_q = (mb_fused_query){.rows = rows, .n = (size_t)c->d_model, .k = (size_t)c->d_inner,
                              .wdtype = lw->out_proj.dt, .norm = 0};
}

void mb_mamba1_step_query(const mamba_model_t *m, size_t batch, int bc_norm, mb_fused_query *q)
{
    const mb_mamba1_layer *lw = m->layers;
    const mamba_config_t *c = &m->cfg;
    *q = (mb_fused_query){.rows = batch, .dim = (size_t)c->d_inner, .d_state = (size_t)c->d_state,
                          .dt_rank = (size_t)c->dt_rank, .width = (size_t)c->d_conv,
                          .x_proj_dt = lw->x_proj.dt, .dt_proj_dt = lw->dt_proj.dt, .bc_norm = bc_norm};
}

static mb_ptr at(mb_ptr base, size_t off) { return (mb_ptr){base.buf, base.offset + off}; }
static const mb_ptr none = {NULL, 0};

mamba_status_t mb_mamba1_enqueue(const mb_layer_io *io, float bc_eps)
{
    const mamba_model_t *m = io->model;
    mamba_context_t *ctx = io->ctx;
    const mb_model_ops *ops = ctx->ops;
    mb_device *dev = ctx->dev;
    const mamba_config_t *c = &m->cfg;
    const mb_mamba1_layer *lw = (const mb_mamba1_layer *)m->layers + io->layer;
    const size_t B = io->batch, T = io->T, R = B * T, dm = (size_t)c->d_model, di = (size_t)c->d_inner;
    const size_t N = (size_t)c->d_state, rk = (size_t)c->dt_rank, nd = rk + 2 * N;
    const mixer_layout w = layout(c, R);
    const mb_ptr wk = io->scratch;
    /* 16-bit GEMM inputs (x16_in / x16_out) in the xc region, which the fused step leaves
     * unused and the generic path fills only after in_proj has read hn16: hn16 (R, d_model)
     * there, then y16 (R, d_inner) after it */
    const mb_ptr hn16 = at(wk, w.xc), y16 = at(wk, w.xc + up(R * dm * 2));
    const int x16_in = io->x16_in && up(R * dm * 2) + R * di * 2 <= R * di * 4;
    const int x16_out = io->x16_out && x16_in;

    /* in_proj: from hn, or (fold) from the residual with the layer's RMSNorm folded in */
    if (x16_in)
        MB_TRY_BE(ctx, ctx->fused->add_rmsnorm16(dev, io->residual, io->layer ? io->mo : none, lw->norm, R, dm,
                                                 c->norm_eps, hn16, lw->in_proj.dt), "add + rmsnorm");
    else if (!io->fold)
        MB_TRY_BE(ctx, ops->add_rmsnorm(dev, io->residual, io->layer ? io->mo : none, lw->norm, R, dm, c->norm_eps,
                                        io->hn), "add + rmsnorm");
    if (x16_in)
        MB_TRY_BE(ctx, ctx->fused->gemm_x16(dev, R, 2 * di, dm, hn16, dm, lw->in_proj.p, lw->in_proj.dt,
                                            lw->in_proj_bias, at(wk, w.xz), 2 * di), "in_proj");
    else if (io->fold)
        MB_TRY_BE(ctx, ctx->fused->gemv_fused(dev, R, 2 * di, dm, io->residual, dm, lw->norm, c->norm_eps,
                                              lw->in_proj.p, lw->in_proj.dt, lw->in_proj_bias, at(wk, w.xz), 2 * di, 0),
                  "in_proj");
    else
        MB_TRY_BE(ctx, ops->gemm(dev, R, 2 * di, dm, io->hn, dm, lw->in_proj.p, lw->in_proj.dt, lw->in_proj_bias,
                                 at(wk, w.xz), 2 * di), "in_proj");
    if (io->fused_step) {
        const mb_mixer_step_op ms = {
            .batch = B, .dim = di, .d_state = N, .dt_rank = rk, .width = (size_t)c->d_conv,
            .xz = at(wk, w.xz), .xz_sb = 2 * di,
            .conv_w = lw->conv_w, .conv_b = lw->conv_b, .conv_state = io->conv_state,
            .x_proj = lw->x_proj.p, .x_proj_dt = lw->x_proj.dt,
            .dt_proj = lw->dt_proj.p, .dt_proj_dt = lw->dt_proj.dt,
            .dt_bias = lw->dt_bias, .A = lw->A, .D = lw->D,
            .ssm_state = io->ssm_state,
            .xdbl = at(wk, w.xdbl), .y = at(wk, w.y), .y_sb = di,
            .y16 = x16_out ? y16 : none, .y16_dt = lw->out_proj.dt,
            /* delta is not used by a fused step */
            .scratch = at(wk, w.delta), .scratch_bytes = R * di * 4,
            .bc_norm = bc_eps > 0, .bc_norm_eps = bc_eps,
        };
        MB_TRY_BE(ctx, ctx->fused->mixer_step(dev, &ms), "mixer step");
    } else {
        /* conv, x_proj, dt_proj and the scan as separate ops, for any chunk length: xz -> y */
        const mb_conv_op cv = {
            .batch = B, .len = T, .channels = di, .width = (size_t)c->d_conv,
            .x = at(wk, w.xz), .x_sb = (ptrdiff_t)(T * 2 * di), .x_st = (ptrdiff_t)(2 * di),
            .weight = lw->conv_w, .bias = lw->conv_b,
            .state = io->conv_state,
            .out = at(wk, w.xc), .out_sb = (ptrdiff_t)(T * di), .out_st = (ptrdiff_t)di,
        };
        MB_TRY_BE(ctx, ops->conv_silu(dev, &cv), "conv1d");
        MB_TRY_BE(ctx, ops->gemm(dev, R, nd, di, at(wk, w.xc), di, lw->x_proj.p, lw->x_proj.dt, none,
                                 at(wk, w.xdbl), nd), "x_proj");
        if (bc_eps > 0) {
            const mb_segments dbc = {3, {rk, N, N, 0}};
            MB_TRY_BE(ctx, ops->rmsnorm_segments(dev, at(wk, w.xdbl), R, nd, &dbc, bc_eps), "dt, B and C norms");
        }
        MB_TRY_BE(ctx, ops->gemm(dev, R, di, rk, at(wk, w.xdbl), nd, lw->dt_proj.p, lw->dt_proj.dt, none,
                                 at(wk, w.delta), di), "dt_proj");
        const ptrdiff_t bc_sb = (ptrdiff_t)(T * nd), bc_st = (ptrdiff_t)nd;
        const mb_scan_op sc = {
            .batch = B, .dim = di, .len = T, .d_state = N, .n_groups = 1,
            .u = at(wk, w.xc), .u_sb = (ptrdiff_t)(T * di), .u_st = (ptrdiff_t)di, .u_sd = 1,
            .delta = at(wk, w.delta), .delta_sb = (ptrdiff_t)(T * di), .delta_st = (ptrdiff_t)di, .delta_sd = 1,
            .A = lw->A,
            .B = at(wk, w.xdbl + rk * 4), .B_sb = bc_sb, .B_st = bc_st, .B_sg = 0, .B_sn = 1,
            .C = at(wk, w.xdbl + (rk + N) * 4), .C_sb = bc_sb, .C_st = bc_st, .C_sg = 0, .C_sn = 1,
            .D = lw->D,
            .z = at(wk, w.xz + di * 4), .z_sb = (ptrdiff_t)(T * 2 * di), .z_st = (ptrdiff_t)(2 * di), .z_sd = 1,
            .delta_bias = lw->dt_bias, .delta_softplus = 1,
            .state_in = io->ssm_state, .state_out = io->ssm_state,
            .out = at(wk, w.y), .out_sb = (ptrdiff_t)(T * di), .out_st = (ptrdiff_t)di, .out_sd = 1,
        };
        MB_TRY_BE(ctx, ops->scan(dev, &sc), "selective scan");
    }
    /* out_proj: to mo, or (fold) added straight into the residual */
    if (x16_out)
        MB_TRY_BE(ctx, ctx->fused->gemm_x16(dev, R, dm, di, y16, di, lw->out_proj.p, lw->out_proj.dt,
                                            lw->out_proj_bias, io->mo, dm), "out_proj");
    else if (io->fold)
        MB_TRY_BE(ctx, ctx->fused->gemv_fused(dev, R, dm, di, at(wk, w.y), di, none, 0.0f, lw->out_proj.p,
                                              lw->out_proj.dt, lw->out_proj_bias, io->residual, dm, 1), "out_proj");
    else
        MB_TRY_BE(ctx, ops->gemm(dev, R, dm, di, at(wk, w.y), di, lw->out_proj.p, lw->out_proj.dt,
                                 lw->out_proj_bias, io->mo, dm), "out_proj");
    return MAMBA_OK;
}

static mamba_status_t enqueue(const mb_layer_io *io) { return mb_mamba1_enqueue(io, 0.0f); }

static void step_query(const mamba_model_t *m, size_t batch, mb_fused_query *q) { mb_mamba1_step_query(m, batch, 0, q); }

const mb_arch mb_arch_mamba1 = {
    .model_type = "mamba",
    MB_MAMBA1_FAMILY,
    .step_query = step_query,
    .enqueue_layer = enqueue,
};
