/* mamba_trainer_accumulate: the forward over a batch keeping, per layer, the residual stream
 * R_l (rows x d_model), xz_l = in_proj's output (rows x 2 d_inner) and xdbl_l = x_proj's output
 * (rows x (dt_rank + 2N)), then the backward, which recomputes each layer's normalized input,
 * conv output, delta and scan output from them (as mamba_ssm's MambaInnerFn recomputes).
 * Memory kept per token per layer: d_model + 2 d_inner + dt_rank + 2N floats; the rest is
 * scratch of one layer (and the logits of the batch). Rows are r = b * len + t, time-major per
 * sequence; every sequence starts from the zero state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"
#include "api/alloc.h"

static size_t up(size_t bytes) { return (bytes + 255) / 256 * 256; }

static mb_train_act act_layout(const mamba_config_t *c, size_t R, size_t B)
{
    const size_t dm = (size_t)c->d_model, di = (size_t)c->d_inner, L = (size_t)c->n_layer;
    const size_t nd = (size_t)c->dt_rank + 2 * (size_t)c->d_state, V = (size_t)c->vocab_size;
    mb_train_act a;
    memset(&a, 0, sizeof a);
    a.rows = R;
    a.batch = B;
    size_t o = 0;
#define REGION(field, bytes) (a.field = o, o += up(bytes))
    REGION(ids, R * 4);
    REGION(labels, R * 4);
    REGION(loss, R * 4);
    REGION(correct, R * 4);
    REGION(ones, R * 4);
    a.res_stride = up(R * dm * 4);
    a.res = o;
    o += (L + 1) * a.res_stride;
    a.xz_stride = up(R * 2 * di * 4);
    a.xz = o;
    o += L * a.xz_stride;
    a.xdbl_stride = up(R * nd * 4);
    a.xdbl = o;
    o += L * a.xdbl_stride;
    REGION(xn, R * dm * 4);
    REGION(dR, R * dm * 4);
    a.mo = a.dR; /* the forward's layer output; dR lives in the backward only */
    REGION(xc, R * di * 4);
    REGION(dt, R * di * 4);
    REGION(y, R * di * 4);   /* the backward's dy too, once out_proj's gradient has read y */
    REGION(logits, R * V * 4);
    REGION(dxc, R * di * 4);
    REGION(ddt, R * di * 4);
    REGION(dxdbl, R * nd * 4);
    REGION(dxz, R * 2 * di * 4);
    REGION(conv_state, B * (size_t)(c->d_conv > 1 ? c->d_conv - 1 : 1) * di * 4);
    REGION(dA, di * (size_t)c->d_state * 4);
    REGION(dD, di * 4);
    REGION(ddb, di * 4);
#undef REGION
    a.total = o;
    return a;
}

/* Activations for R rows of B sequences: the largest batch seen is kept and reused. */
static mamba_status_t ensure_act(mamba_trainer_t *tr, size_t R, size_t B)
{
    mamba_context_t *ctx = tr->ctx;
    if (tr->host_rows < R) {
        float *loss = mb_malloc(R * sizeof *loss);
        int32_t *correct = mb_malloc(R * sizeof *correct);
        if (!loss || !correct) {
            free(loss);
            free(correct);
            return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_trainer_accumulate: out of memory for %zu rows", R);
        }
        free(tr->host_loss);
        free(tr->host_correct);
        tr->host_loss = loss;
        tr->host_correct = correct;
        tr->host_rows = R;
    }
    if (tr->act && tr->act_layout.rows >= R && tr->act_layout.batch >= B) return MAMBA_OK;
    const size_t rows = tr->act && tr->act_layout.rows > R ? tr->act_layout.rows : R;
    const size_t batch = tr->act && tr->act_layout.batch > B ? tr->act_layout.batch : B;
    const mb_train_act a = act_layout(&tr->cfg, rows, batch);
    if (tr->act) ctx->dv->free(ctx->dev, tr->act);
    tr->act = NULL;
    if (mb_dev_alloc(ctx, a.total, &tr->act) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY,
                         "%s backend: cannot allocate %zu bytes of training activations for %zu rows: %s",
                         ctx->backend_name, a.total, rows, mb_dev_alloc_error(ctx));
    tr->act_layout = a;
    /* a row of ones: the bias gradients are column sums, ones^T dY, through the GEMM */
    float *ones = mb_malloc(rows * sizeof *ones);
    if (!ones) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_trainer_accumulate: out of memory");
    for (size_t i = 0; i < rows; i++) ones[i] = 1.0f;
    const int rc = ctx->dv->upload(ctx->dev, (mb_ptr){tr->act, a.ones}, ones, rows * 4);
    free(ones);
    if (rc != 0) return mb_backend_fail(ctx, rc, "upload of the training activations' ones");
    return MAMBA_OK;
}

/* ---- the pass ---- */

typedef struct pass {
    mamba_trainer_t *tr;
    mamba_context_t *ctx;
    const mb_model_ops *ops;
    const mb_train_ops *t;
    mb_device *dev;
    mb_train_act a;
    size_t B, T, R, dm, di, N, rk, nd, V;
    float eps;
} pass;

static const mb_ptr none = {NULL, 0};

static mb_ptr act(const pass *p, size_t off) { return (mb_ptr){p->tr->act, off}; }
static mb_ptr param(const pass *p, size_t i) { return i == MB_TRAIN_NONE ? none : (mb_ptr){p->tr->param, p->tr->params[i].off * 4}; }
static mb_ptr grad(const pass *p, size_t i) { return i == MB_TRAIN_NONE ? none : (mb_ptr){p->tr->grad, p->tr->params[i].off * 4}; }
static mb_ptr res(const pass *p, size_t l) { return act(p, p->a.res + l * p->a.res_stride); }
static mb_ptr xz(const pass *p, size_t l, size_t col) { return act(p, p->a.xz + l * p->a.xz_stride + col * 4); }
static mb_ptr xdbl(const pass *p, size_t l, size_t col) { return act(p, p->a.xdbl + l * p->a.xdbl_stride + col * 4); }

/* The scan of layer l as the inference forward runs it: u = xc, delta = dt (+ dt_proj.bias,
 * softplus), B and C the columns of xdbl_l, z = xz_l's second half, zero initial state. */
static mb_scan_op scan_of(const pass *p, size_t l)
{
    const mb_train_layer *ly = &p->tr->layers[l];
    const ptrdiff_t T = (ptrdiff_t)p->T, di = (ptrdiff_t)p->di, nd = (ptrdiff_t)p->nd;
    return (mb_scan_op){
        .batch = p->B, .dim = p->di, .len = p->T, .d_state = p->N, .n_groups = 1,
        .u = act(p, p->a.xc), .u_sb = T * di, .u_st = di, .u_sd = 1,
        .delta = act(p, p->a.dt), .delta_sb = T * di, .delta_st = di, .delta_sd = 1,
        .A = {p->tr->A, l * p->tr->A_stride * 4},
        .B = xdbl(p, l, p->rk), .B_sb = T * nd, .B_st = nd, .B_sg = 0, .B_sn = 1,
        .C = xdbl(p, l, p->rk + p->N), .C_sb = T * nd, .C_st = nd, .C_sg = 0, .C_sn = 1,
        .D = param(p, ly->D),
        .z = xz(p, l, p->di), .z_sb = T * 2 * di, .z_st = 2 * di, .z_sd = 1,
        .delta_bias = param(p, ly->dt_b), .delta_softplus = 1,
        .state_in = none,
        .out = act(p, p->a.y), .out_sb = T * di, .out_st = di, .out_sd = 1,
        .state_out = none,
    };
}

/* Layer l from R_l to y: xn = RMSNorm(R_l) (the forward first adds the previous layer's output
 * mo into R_l), and in the forward xz_l and xdbl_l, which the backward has kept. */
static mamba_status_t mixer_to_y(const pass *p, size_t l, int forward)
{
    mamba_context_t *ctx = p->ctx;
    const mb_train_layer *ly = &p->tr->layers[l];
    const ptrdiff_t T = (ptrdiff_t)p->T, di = (ptrdiff_t)p->di;
    MB_TRY_BE(ctx, p->ops->add_rmsnorm(p->dev, res(p, l), forward && l ? act(p, p->a.mo) : none, param(p, ly->norm), p->R,
                                       p->dm, p->eps, act(p, p->a.xn)), "rmsnorm");
    if (forward)
        MB_TRY_BE(ctx, p->ops->gemm(p->dev, p->R, 2 * p->di, p->dm, act(p, p->a.xn), p->dm, param(p, ly->in_w), MAMBA_F32,
                                    param(p, ly->in_b), xz(p, l, 0), 2 * p->di), "in_proj");
    const size_t state_bytes = p->B * (size_t)(p->tr->cfg.d_conv - 1) * p->di * 4;
    if (state_bytes) MB_TRY_BE(ctx, ctx->dv->fill_zero(p->dev, act(p, p->a.conv_state), state_bytes), "conv state");
    const mb_conv_op cv = {
        .batch = p->B, .len = p->T, .channels = p->di, .width = (size_t)p->tr->cfg.d_conv,
        .x = xz(p, l, 0), .x_sb = T * 2 * di, .x_st = 2 * di,
        .weight = param(p, ly->conv_w), .bias = param(p, ly->conv_b),
        .state = act(p, p->a.conv_state),
        .out = act(p, p->a.xc), .out_sb = T * di, .out_st = di,
    };
    MB_TRY_BE(ctx, p->ops->conv_silu(p->dev, &cv), "conv1d");
    if (forward)
        MB_TRY_BE(ctx, p->ops->gemm(p->dev, p->R, p->nd, p->di, act(p, p->a.xc), p->di, param(p, ly->x_w), MAMBA_F32, none,
                                    xdbl(p, l, 0), p->nd), "x_proj");
    /* dt_proj without its bias: the bias is the scan's delta_bias */
    MB_TRY_BE(ctx, p->ops->gemm(p->dev, p->R, p->di, p->rk, xdbl(p, l, 0), p->nd, param(p, ly->dt_w), MAMBA_F32, none,
                                act(p, p->a.dt), p->di), "dt_proj");
    const mb_scan_op sc = scan_of(p, l);
    MB_TRY_BE(ctx, p->ops->scan(p->dev, &sc), "selective scan");
    return MAMBA_OK;
}

static mamba_status_t forward(const pass *p)
{
    mamba_context_t *ctx = p->ctx;
    mamba_trainer_t *tr = p->tr;
    const size_t L = (size_t)tr->cfg.n_layer, head = tr->lm_head != MB_TRAIN_NONE ? tr->lm_head : tr->embed;
    MB_TRY_BE(ctx, p->ops->embed(p->dev, act(p, p->a.ids), p->R, param(p, tr->embed), MAMBA_F32,
                                 (size_t)tr->cfg.vocab_size, p->dm, res(p, 0)),
              "embedding");
    for (size_t l = 0; l < L; l++) {
        mamba_status_t st = mixer_to_y(p, l, 1);
        if (st != MAMBA_OK) return st;
        const mb_train_layer *ly = &tr->layers[l];
        MB_TRY_BE(ctx, p->ops->gemm(p->dev, p->R, p->dm, p->di, act(p, p->a.y), p->di, param(p, ly->out_w), MAMBA_F32,
                                    param(p, ly->out_b), act(p, p->a.mo), p->dm), "out_proj");
        /* R_{l+1} = R_l + mo: the copy here, the add in the next RMSNorm */
        MB_TRY_BE(ctx, ctx->dv->copy(p->dev, res(p, l + 1), res(p, l), p->R * p->dm * 4), "residual copy");
    }
    MB_TRY_BE(ctx, p->ops->add_rmsnorm(p->dev, res(p, L), act(p, p->a.mo), param(p, tr->norm_f), p->R, p->dm, p->eps,
                                       act(p, p->a.xn)), "final rmsnorm");
    MB_TRY_BE(ctx, p->ops->gemm(p->dev, p->R, p->V, p->dm, act(p, p->a.xn), p->dm, param(p, head), MAMBA_F32, none,
                                act(p, p->a.logits), p->V), "lm_head");
    return MAMBA_OK;
}

/* bias += ones^T dY: the column sums of dY (rows x n, leading dimension ld). */
static mamba_status_t bias_grad(const pass *p, size_t idx, mb_ptr dY, size_t n, size_t ld, const char *what)
{
    if (idx == MB_TRAIN_NONE) return MAMBA_OK;
    MB_TRY_BE(p->ctx, p->t->gemm_f32(p->dev, 0, 0, 1, n, p->R, 1.0f, act(p, p->a.ones), p->R, dY, ld, 1.0f, grad(p, idx), n),
              what);
    return MAMBA_OK;
}

/* Layer l's backward; dR holds the gradient of R_{l+1} and leaves with that of R_l. */
static mamba_status_t layer_backward(const pass *p, size_t l)
{
    mamba_context_t *ctx = p->ctx;
    const mb_train_ops *t = p->t;
    mb_device *dev = p->dev;
    const mb_train_layer *ly = &p->tr->layers[l];
    const size_t R = p->R, dm = p->dm, di = p->di, rk = p->rk, nd = p->nd, N = p->N;
    const ptrdiff_t T = (ptrdiff_t)p->T, sdi = (ptrdiff_t)di;
    const mb_ptr dR = act(p, p->a.dR), y = act(p, p->a.y), xc = act(p, p->a.xc), xn = act(p, p->a.xn);
    const mb_ptr dxc = act(p, p->a.dxc), ddt = act(p, p->a.ddt), dxdbl = act(p, p->a.dxdbl), dxz = act(p, p->a.dxz);
    mamba_status_t st = mixer_to_y(p, l, 0);
    if (st != MAMBA_OK) return st;
    /* out_proj: dW += dR^T y; d bias += column sums of dR; dy = dR W (into y's buffer) */
    MB_TRY_BE(ctx, t->gemm_f32(dev, 1, 0, dm, di, R, 1.0f, dR, dm, y, di, 1.0f, grad(p, ly->out_w), di), "out_proj weight gradient");
    if ((st = bias_grad(p, ly->out_b, dR, dm, dm, "out_proj bias gradient")) != MAMBA_OK) return st;
    MB_TRY_BE(ctx, t->gemm_f32(dev, 0, 0, R, di, dm, 1.0f, dR, dm, param(p, ly->out_w), di, 0.0f, y, di), "out_proj input gradient");
    /* the scan */
    const mb_ptr dy = y;
    mb_scan_bwd_op sb = {
        .fwd = scan_of(p, l),
        .dout = dy, .dout_sb = T * sdi, .dout_st = sdi, .dout_sd = 1,
        .dstate_out = none,
        .du = dxc, .ddelta = ddt, .dz = act(p, p->a.dxz + di * 4),
        .dA = act(p, p->a.dA), .dB = act(p, p->a.dxdbl + rk * 4), .dC = act(p, p->a.dxdbl + (rk + N) * 4),
        .dD = act(p, p->a.dD), .ddelta_bias = act(p, p->a.ddb), .dstate_in = none,
    };
    sb.fwd.out = none;
    MB_TRY_BE(ctx, ctx->ops->scan_backward(dev, &sb), "selective scan backward");
    /* A = -exp(A_log): dA_log = dA * A */
    MB_TRY_BE(ctx, t->mul_acc(dev, di * N, act(p, p->a.dA), sb.fwd.A, grad(p, ly->A_log)), "A_log gradient");
    MB_TRY_BE(ctx, t->axpy(dev, di, 1.0f, act(p, p->a.dD), grad(p, ly->D)), "D gradient");
    MB_TRY_BE(ctx, t->axpy(dev, di, 1.0f, act(p, p->a.ddb), grad(p, ly->dt_b)), "dt_proj bias gradient");
    /* dt_proj: dW += ddt^T dt_in (xdbl_l's first rk columns); d dt_in = ddt W into dxdbl */
    MB_TRY_BE(ctx, t->gemm_f32(dev, 1, 0, di, rk, R, 1.0f, ddt, di, xdbl(p, l, 0), nd, 1.0f, grad(p, ly->dt_w), rk),
              "dt_proj weight gradient");
    MB_TRY_BE(ctx, t->gemm_f32(dev, 0, 0, R, rk, di, 1.0f, ddt, di, param(p, ly->dt_w), rk, 0.0f, dxdbl, nd),
              "dt_proj input gradient");
    /* x_proj: dW += dxdbl^T xc; dxc += dxdbl W */
    MB_TRY_BE(ctx, t->gemm_f32(dev, 1, 0, nd, di, R, 1.0f, dxdbl, nd, xc, di, 1.0f, grad(p, ly->x_w), di),
              "x_proj weight gradient");
    MB_TRY_BE(ctx, t->gemm_f32(dev, 0, 0, R, di, nd, 1.0f, dxdbl, nd, param(p, ly->x_w), di, 1.0f, dxc, di),
              "x_proj input gradient");
    /* the conv, from the kept xz_l: its input gradient into dxz's first half */
    const mb_conv_bwd_op cb = {
        .batch = p->B, .len = p->T, .channels = di, .width = (size_t)p->tr->cfg.d_conv,
        .x = xz(p, l, 0), .x_sb = T * 2 * sdi, .x_st = 2 * sdi,
        .weight = param(p, ly->conv_w), .bias = param(p, ly->conv_b),
        .dout = dxc, .dout_sb = T * sdi, .dout_st = sdi,
        .dx = dxz, .dx_sb = T * 2 * sdi, .dx_st = 2 * sdi,
        .dweight = grad(p, ly->conv_w), .dbias = grad(p, ly->conv_b),
    };
    MB_TRY_BE(ctx, t->conv_silu_backward(dev, &cb), "conv1d backward");
    /* in_proj: dW += dxz^T xn; d bias; dxn = dxz W (into xn's buffer, read for the last time above) */
    MB_TRY_BE(ctx, t->gemm_f32(dev, 1, 0, 2 * di, dm, R, 1.0f, dxz, 2 * di, xn, dm, 1.0f, grad(p, ly->in_w), dm),
              "in_proj weight gradient");
    if ((st = bias_grad(p, ly->in_b, dxz, 2 * di, 2 * di, "in_proj bias gradient")) != MAMBA_OK) return st;
    MB_TRY_BE(ctx, t->gemm_f32(dev, 0, 0, R, dm, 2 * di, 1.0f, dxz, 2 * di, param(p, ly->in_w), dm, 0.0f, xn, dm),
              "in_proj input gradient");
    /* the norm: dR += its input gradient (dR already holds the identity path's) */
    MB_TRY_BE(ctx, t->rmsnorm_backward(dev, res(p, l), param(p, ly->norm), xn, R, dm, p->eps, dR, 1, grad(p, ly->norm)),
              "rmsnorm backward");
    return MAMBA_OK;
}

static mamba_status_t backward(const pass *p)
{
    mamba_context_t *ctx = p->ctx;
    mamba_trainer_t *tr = p->tr;
    const mb_train_ops *t = p->t;
    const size_t L = (size_t)tr->cfg.n_layer, head = tr->lm_head != MB_TRAIN_NONE ? tr->lm_head : tr->embed;
    const mb_ptr dlogits = act(p, p->a.logits), xf = act(p, p->a.xn), dR = act(p, p->a.dR);
    /* the head: dE += dlogits^T xf, then dxf = dlogits E into xf's buffer */
    MB_TRY_BE(ctx, t->gemm_f32(p->dev, 1, 0, p->V, p->dm, p->R, 1.0f, dlogits, p->V, xf, p->dm, 1.0f, grad(p, head), p->dm),
              "lm_head gradient");
    MB_TRY_BE(ctx, t->gemm_f32(p->dev, 0, 0, p->R, p->dm, p->V, 1.0f, dlogits, p->V, param(p, head), p->dm, 0.0f, xf, p->dm),
              "lm_head input gradient");
    MB_TRY_BE(ctx, t->rmsnorm_backward(p->dev, res(p, L), param(p, tr->norm_f), xf, p->R, p->dm, p->eps, dR, 0,
                                       grad(p, tr->norm_f)), "final rmsnorm backward");
    for (size_t l = L; l-- > 0;) {
        const mamba_status_t st = layer_backward(p, l);
        if (st != MAMBA_OK) return st;
    }
    MB_TRY_BE(ctx, t->embed_backward(p->dev, act(p, p->a.ids), p->R, dR, p->dm, grad(p, tr->embed), p->V),
              "embedding gradient");
    return MAMBA_OK;
}

/* ---- the call ---- */

static mamba_status_t check_batch(mamba_trainer_t *tr, const char *fn, const int32_t *ids, const int32_t *labels,
                                  size_t batch, size_t len, size_t *n_valid)
{
    char *err = tr->ctx->err;
    const int V = tr->cfg.vocab_size;
    if (!ids || !labels)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "%s: ids and labels are required", fn);
    if (batch == 0 || len == 0)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "%s: batch %zu and len %zu must be > 0", fn,
                         batch, len);
    /* rows index int32 ids on devices, and the logits are rows x vocab floats */
    if (batch > ((size_t)1 << 31) / len || batch * len > SIZE_MAX / 4 / (size_t)V)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "%s: batch %zu x len %zu is too large", fn,
                         batch, len);
    size_t n = 0;
    for (size_t b = 0; b < batch; b++)
        for (size_t t = 0; t < len; t++) {
            const int32_t id = ids[b * len + t], lb = labels[b * len + t];
            if (id < 0 || id >= V)
                return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                                 "%s: ids[%zu] (sequence %zu, position %zu) = %d is out of range "
                                 "[0, %d)", fn, b * len + t, b, t, id, V);
            if (lb >= V)
                return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                                 "%s: labels[%zu] (sequence %zu, position %zu) = %d is not below "
                                 "vocab_size %d (< 0: ignored)", fn, b * len + t, b, t, lb, V);
            n += lb >= 0;
        }
    *n_valid = n;
    return MAMBA_OK;
}

/* Forward, loss and (when backward) the backward of one batch: this batch's mean loss and
 * counts into *loss, *correct and *n_valid. */
static mamba_status_t run_batch(mamba_trainer_t *tr, const char *fn, const int32_t *ids, const int32_t *labels,
                                size_t batch, size_t len, int with_backward, double *loss_out, uint64_t *correct_out,
                                size_t *n_valid_out)
{
    mamba_context_t *ctx = tr->ctx;
    size_t n_valid = 0;
    mamba_status_t st = check_batch(tr, fn, ids, labels, batch, len, &n_valid);
    if (st != MAMBA_OK) return st;
    double loss = 0;
    uint64_t correct = 0;
    /* no counted token: a zero gradient and a loss of 0; the batch counts in apply's mean */
    if (n_valid > 0) {
        const size_t R = batch * len;
        if ((st = mb_train_refresh_A(tr)) != MAMBA_OK || (st = ensure_act(tr, R, batch)) != MAMBA_OK) return st;
        const mamba_config_t *c = &tr->cfg;
        const pass p = {
            .tr = tr, .ctx = ctx, .ops = ctx->ops, .t = tr->tops, .dev = ctx->dev, .a = tr->act_layout,
            .B = batch, .T = len, .R = R, .dm = (size_t)c->d_model, .di = (size_t)c->d_inner, .N = (size_t)c->d_state,
            .rk = (size_t)c->dt_rank, .nd = (size_t)c->dt_rank + 2 * (size_t)c->d_state, .V = (size_t)c->vocab_size,
            .eps = c->norm_eps,
        };
        MB_TRY_BE(ctx, ctx->dv->upload(ctx->dev, act(&p, p.a.ids), ids, R * 4), "upload of the ids");
        MB_TRY_BE(ctx, ctx->dv->upload(ctx->dev, act(&p, p.a.labels), labels, R * 4), "upload of the labels");
        if ((st = forward(&p)) != MAMBA_OK) return st;
        /* the mean over the counted tokens: each row's gradient scaled by 1 / n_valid */
        MB_TRY_BE(ctx, p.t->cross_entropy(ctx->dev, act(&p, p.a.logits), R, p.V, act(&p, p.a.labels), 1.0f / (float)n_valid,
                                          act(&p, p.a.loss), act(&p, p.a.correct)), "cross-entropy");
        if (with_backward && (st = backward(&p)) != MAMBA_OK) return st;
        float *row_loss = tr->host_loss;
        int32_t *row_ok = tr->host_correct;
        MB_TRY_BE(ctx, ctx->dv->download(ctx->dev, row_loss, act(&p, p.a.loss), R * 4), "download of the losses");
        MB_TRY_BE(ctx, ctx->dv->download(ctx->dev, row_ok, act(&p, p.a.correct), R * 4), "download of the accuracy");
        for (size_t r = 0; r < R; r++) {
            if (labels[r] < 0) continue;
            loss += row_loss[r];
            correct += row_ok[r] != 0;
        }
        loss /= (double)n_valid;
    }
    *loss_out = loss;
    *correct_out = correct;
    *n_valid_out = n_valid;
    return MAMBA_OK;
}

static void fill_stats(const mamba_trainer_t *tr, double loss, uint64_t correct, size_t n_valid,
                       mamba_train_stats_t *stats)
{
    if (!stats) return;
    memset(stats, 0, sizeof *stats);
    stats->loss = loss;
    stats->tokens = n_valid;
    stats->correct = correct;
    stats->lr = 0;
    stats->step = tr->step;
}

/* accumulate (with_backward: the gradients and apply's running sums) or evaluate. */
static mamba_status_t batch_call(mamba_trainer_t *tr, const char *fn, const int32_t *ids, const int32_t *labels,
                                 size_t batch, size_t len, int with_backward, mamba_train_stats_t *stats)
{
    if (!tr) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "%s: trainer is NULL", fn);
    double loss = 0;
    uint64_t correct = 0;
    size_t n_valid = 0;
    const mamba_status_t st = run_batch(tr, fn, ids, labels, batch, len, with_backward, &loss, &correct, &n_valid);
    if (st != MAMBA_OK) return st;
    if (with_backward) {
        tr->n_micro++;
        tr->loss_sum += loss;
        tr->tokens += n_valid;
        tr->correct += correct;
    }
    fill_stats(tr, loss, correct, n_valid, stats);
    return MAMBA_OK;
}

mamba_status_t mamba_trainer_accumulate(mamba_trainer_t *tr, const int32_t *ids, const int32_t *labels, size_t batch,
                                        size_t len, mamba_train_stats_t *stats)
{
    return batch_call(tr, "mamba_trainer_accumulate", ids, labels, batch, len, 1, stats);
}

mamba_status_t mamba_trainer_evaluate(mamba_trainer_t *tr, const int32_t *ids, const int32_t *labels, size_t batch,
                                      size_t len, mamba_train_stats_t *stats)
{
    return batch_call(tr, "mamba_trainer_evaluate", ids, labels, batch, len, 0, stats);
}
