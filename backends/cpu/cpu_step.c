/* The one-token mixer step (mb_mixer_step_op) on the CPU: conv, x_proj, dt_proj, softplus,
 * the scan step, D and the gate in one parallel region with two barriers, where the separate
 * ops take five regions (five forks and joins a layer, 120 a token of the 130m). */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_math.h"

#define CONV_BLOCK 64   /* channels of the conv per work item */
#define CHAN_BLOCK 16   /* channels of the scan step per work item */

/* The op's buffers as host pointers, resolved and checked once. */
typedef struct step_view {
    const float *xz, *conv_w, *conv_b, *A, *D;
    float *conv_state, *ssm_state, *xdbl, *y, *xc;
} step_view;

/* xc = silu(conv_b + conv_w . (state, x)) for channels [c0, c1) of row b; the state drops its
 * oldest input and takes x. conv_state is (batch, width-1, dim). */
static void conv_block(const mb_mixer_step_op *op, const step_view *v, size_t b, size_t c0, size_t c1)
{
    const size_t D = op->dim, K = op->width;
    const float *x = v->xz + b * op->xz_sb, *w = v->conv_w, *bias = v->conv_b;
    float *st = v->conv_state + b * (K - 1) * D, *xc = v->xc;
    for (size_t c = c0; c < c1; c++) {
        float acc = bias ? bias[c] : 0.0f;
        for (size_t j = 0; j + 1 < K; j++) acc += w[c * K + j] * st[j * D + c];
        acc += w[c * K + K - 1] * x[c];
        for (size_t j = 0; j + 2 < K; j++) st[j * D + c] = st[(j + 1) * D + c];
        if (K > 1) st[(K - 2) * D + c] = x[c];
        xc[b * D + c] = fsilu(acc);
    }
}

/* The state update and the gated output for channels [c0, c1) of row b; y[b, c0:c1] holds
 * dt_proj's output (before the softplus) on entry. */
MB_CPU_CLONES
static void scan_block(const mb_mixer_step_op *op, const step_view *v, size_t b, size_t c0, size_t c1)
{
    const size_t D = op->dim, N = op->d_state, R = op->dt_rank, nd = R + 2 * N, nc = c1 - c0;
    const float *Bv = v->xdbl + b * nd + R, *Cv = Bv + N;
    const float *z = v->xz + b * op->xz_sb + D + c0;
    const float *u = v->xc + b * D + c0;
    const float *A = v->A, *Dv = v->D;
    float *y = v->y + b * op->y_sb + c0;
    float dt[CHAN_BLOCK], gate[CHAN_BLOCK], skip[CHAN_BLOCK];
#pragma omp simd
    for (size_t j = 0; j < nc; j++) {
        dt[j] = fsoftplus(y[j]);
        gate[j] = fsilu(z[j]);
    }
    for (size_t j = 0; j < nc; j++) skip[j] = Dv ? Dv[c0 + j] * u[j] : 0.0f;
    for (size_t j = 0; j < nc; j++) {
        const float *a = A + (c0 + j) * N;
        float *h = v->ssm_state + (b * D + c0 + j) * N;
        const float d = dt[j], du = dt[j] * u[j];
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (size_t n = 0; n < N; n++) {
            h[n] = fexp(d * a[n]) * h[n] + du * Bv[n];
            acc += Cv[n] * h[n];
        }
        y[j] = (acc + skip[j]) * gate[j];
    }
}

int cpu_mixer_step(mb_device *dev, const mb_mixer_step_op *op)
{
    const size_t B = op->batch, D = op->dim, N = op->d_state, nd = op->dt_rank + 2 * N;
    if (N > CPU_MAX_STATE || op->width < 1 || B > CPU_GEMV_MAX_ROWS || op->scratch_bytes < B * D * sizeof(float))
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED,
                        "mixer step: batch %zu, d_state %zu, width %zu, %zu scratch bytes; expected batch <= %d, "
                        "d_state <= %d, width >= 1, %zu bytes",
                        B, N, op->width, op->scratch_bytes, CPU_GEMV_MAX_ROWS, CPU_MAX_STATE, B * D * sizeof(float));
    for (int i = 0; i < 2; i++) {
        const mamba_dtype_t dt = i ? op->dt_proj_dt : op->x_proj_dt;
        if (!mb_weight_dtype_ok(dt))
            return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED, "mixer step: %s in %s, expected F32, F16 or BF16",
                            i ? "dt_proj" : "x_proj", mb_dtype_name(dt));
    }
    const step_view v = {cpu_at(op->xz),        cpu_at(op->conv_w), cpu_at(op->conv_b), cpu_at(op->A),
                         cpu_at(op->D),         cpu_at(op->conv_state), cpu_at(op->ssm_state), cpu_at(op->xdbl),
                         cpu_at(op->y),         cpu_at(op->scratch)};
    const void *x_proj = cpu_at(op->x_proj), *dt_proj = cpu_at(op->dt_proj);
    if (!v.xz || !v.conv_w || !v.A || !v.conv_state || !v.ssm_state || !v.xdbl || !v.y || !v.xc || !x_proj || !dt_proj)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT,
                        "mixer step: xz, conv_w, conv_state, x_proj, dt_proj, A, ssm_state, xdbl, y and scratch are required");
    const cpu_gemv_job xproj = {B, D, v.xc, D, x_proj, op->x_proj_dt, NULL, v.xdbl, nd, 0, dev->portable, NULL, NULL, NULL};
    /* dt_proj's output goes to y, which the scan then reads and overwrites */
    const cpu_gemv_job dtproj = {B, op->dt_rank, v.xdbl, nd, dt_proj, op->dt_proj_dt, cpu_at(op->dt_bias), v.y,
                                 op->y_sb, 0, dev->portable, NULL, NULL, NULL};
    const size_t conv_items = B * ((D + CONV_BLOCK - 1) / CONV_BLOCK);
    const size_t chan_blocks = (D + CHAN_BLOCK - 1) / CHAN_BLOCK;
    const size_t xproj_items = (nd + 3) / 4;
    const mb_segments dbc = {3, {op->dt_rank, N, N, 0}};
#pragma omp parallel num_threads(dev->n_threads)
    {
#pragma omp for schedule(static)
        for (size_t i = 0; i < conv_items; i++) {
            const size_t per = (D + CONV_BLOCK - 1) / CONV_BLOCK, b = i / per, c0 = (i % per) * CONV_BLOCK;
            conv_block(op, &v, b, c0, c0 + CONV_BLOCK < D ? c0 + CONV_BLOCK : D);
        }
        /* x_proj needs every channel of xc: the barrier at the end of the loop above */
#pragma omp for schedule(static)
        for (size_t i = 0; i < xproj_items; i++) cpu_gemv_rows(&xproj, i * 4, i * 4 + 4 < nd ? i * 4 + 4 : nd);
        if (op->bc_norm) {
            /* Falcon-Mamba: dt, B and C normalized once x_proj's barrier has passed */
#pragma omp for schedule(static)
            for (size_t b = 0; b < B; b++) cpu_rmsnorm_segments_row(v.xdbl + b * nd, &dbc, op->bc_norm_eps);
        }
#pragma omp for schedule(static)
        for (size_t i = 0; i < chan_blocks; i++) {
            const size_t c0 = i * CHAN_BLOCK, c1 = c0 + CHAN_BLOCK < D ? c0 + CHAN_BLOCK : D;
            cpu_gemv_rows(&dtproj, c0, c1);
            for (size_t b = 0; b < B; b++) scan_block(op, &v, b, c0, c1);
        }
    }
    return 0;
}

int cpu_fused_supports(mb_device *dev, mb_fused_kind kind, const mb_fused_query *q)
{
    (void)dev;
    switch (kind) {
    case MB_FUSED_GRAPHS: return 0;
    case MB_FUSED_MIXER_STEP:
        return q->rows >= 1 && q->rows <= CPU_GEMV_MAX_ROWS && q->d_state <= CPU_MAX_STATE && q->width >= 1 &&
               mb_weight_dtype_ok(q->x_proj_dt) && mb_weight_dtype_ok(q->dt_proj_dt);
    case MB_FUSED_GEMV: return q->rows >= 1 && q->rows <= CPU_GEMV_MAX_ROWS && mb_gemm_dtype_ok(q->wdtype, q->k);
    case MB_FUSED_GEMM16: return 0; /* 16-bit weights are widened for CBLAS: fp32 arithmetic */
    }
    return 0;
}
