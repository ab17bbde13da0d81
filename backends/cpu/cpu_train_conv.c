/* The backward of the causal depthwise conv + SiLU (mb_conv_bwd_op), from a zero initial state.
 *
 * Work items are blocks of CH channels, vectorized over the channels; each runs the batch in
 * order and time backwards. Going backwards, g[t] = dout[t] silu'(pre[t]) is known for every
 * t' >= t when dx[t] = sum_k w[k] g[t + (K-1) - k] is formed, so a ring of the last K values
 * of g replaces a (len, channels) buffer. dweight and dbias are summed per block in a local
 * accumulator over (b ascending, t descending) and added once: a fixed order, whatever the
 * thread count. pre is computed as the forward (cpu_conv_silu) does, in the same order. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cpu_internal.h"

#define CH 64     /* channels a work item takes */
#define MAX_K 64  /* widths 1..64, as conv_silu */

static int check_strides(mb_device *dev, const char *what, const mb_conv_bwd_op *op, mb_ptr p, ptrdiff_t sb,
                         ptrdiff_t st, int written)
{
    const size_t B = op->batch, L = op->len, C = op->channels;
    if (sb < 0 || st < 0)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "conv_silu_backward: %s strides (%td, %td) negative", what,
                        sb, st);
    /* a written tensor's (b, t, c) must be distinct elements */
    if (written && ((L > 1 && (size_t)st < C) || (B > 1 && (size_t)sb < cpu_span(L, (size_t)st, C))))
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT,
                        "conv_silu_backward: %s strides (%td, %td) overlap over %zu steps of %zu channels", what, sb,
                        st, L, C);
    const size_t t_span = cpu_span(L, (size_t)st, C);
    const size_t span = B > 1 && (size_t)sb > (SIZE_MAX - t_span) / (B - 1) ? SIZE_MAX : (B - 1) * (size_t)sb + t_span;
    char name[64];
    snprintf(name, sizeof name, "conv_silu_backward: %s", what);
    return cpu_need(dev, name, p, span);
}

static void conv_block(const mb_conv_bwd_op *op, size_t c0, size_t nc)
{
    const size_t B = op->batch, L = op->len, K = op->width;
    const float *x = cpu_at(op->x), *w = cpu_at(op->weight), *bias = cpu_at(op->bias), *dout = cpu_at(op->dout);
    float *dx = cpu_at(op->dx), *dw = cpu_at(op->dweight), *db = cpu_at(op->dbias);
    float wt[MAX_K][CH], ring[MAX_K][CH], accw[MAX_K][CH], accb[CH], pre[CH];
    for (size_t k = 0; k < K; k++)
        for (size_t j = 0; j < nc; j++) {
            wt[k][j] = w[(c0 + j) * K + k];
            accw[k][j] = 0.0f;
        }
    memset(accb, 0, sizeof accb);
    for (size_t b = 0; b < B; b++) {
        const float *xb = x + b * (size_t)op->x_sb + c0, *gb = dout + b * (size_t)op->dout_sb + c0;
        float *dxb = dx + b * (size_t)op->dx_sb + c0;
        for (size_t k = 0; k < K; k++) memset(ring[k], 0, nc * sizeof ring[k][0]); /* g = 0 past len */
        for (size_t t = L; t-- > 0;) {
            /* the oldest tap that exists: x = 0 before t = 0 */
            const size_t k0 = t + 1 >= K ? 0 : K - 1 - t;
            for (size_t j = 0; j < nc; j++) pre[j] = bias ? bias[c0 + j] : 0.0f;
            for (size_t k = k0; k < K; k++) {
                const float *in = xb + (t + k - (K - 1)) * (size_t)op->x_st;
                for (size_t j = 0; j < nc; j++) pre[j] += wt[k][j] * in[j];
            }
            float *g = ring[t % K];
            const float *go = gb + t * (size_t)op->dout_st;
            for (size_t j = 0; j < nc; j++) {
                const float p = pre[j], s = 1.0f / (1.0f + expf(-p));
                g[j] = go[j] * (s * (1.0f + p * (1.0f - s)));
                accb[j] += g[j];
            }
            for (size_t k = k0; k < K; k++) {
                const float *in = xb + (t + k - (K - 1)) * (size_t)op->x_st;
                for (size_t j = 0; j < nc; j++) accw[k][j] += g[j] * in[j];
            }
            /* dx[t] = sum over the taps k of w[k] g[t + (K-1) - k], k from the newest */
            float *d = dxb + t * (size_t)op->dx_st;
            for (size_t j = 0; j < nc; j++) d[j] = 0.0f;
            for (size_t k = K; k-- > 0;) {
                const float *gk = ring[(t + (K - 1) - k) % K];
                for (size_t j = 0; j < nc; j++) d[j] += wt[k][j] * gk[j];
            }
        }
    }
    for (size_t j = 0; j < nc; j++) {
        for (size_t k = 0; k < K; k++) dw[(c0 + j) * K + k] += accw[k][j];
        if (db) db[c0 + j] += accb[j];
    }
}

int cpu_conv_silu_backward(mb_device *dev, const mb_conv_bwd_op *op)
{
    const mb_conv_op shape = {.batch = op->batch, .len = op->len, .channels = op->channels, .width = op->width};
    int empty, rc = mb_conv_check(&shape, &empty, dev->err, sizeof dev->err);
    if (rc || empty) return rc;
    const size_t C = op->channels, K = op->width;
    if (C > SIZE_MAX / K) return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "conv_silu_backward: %zu channels", C);
    if ((rc = check_strides(dev, "x", op, op->x, op->x_sb, op->x_st, 0)) ||
        (rc = check_strides(dev, "dout", op, op->dout, op->dout_sb, op->dout_st, 0)) ||
        (rc = check_strides(dev, "dx", op, op->dx, op->dx_sb, op->dx_st, 1)) ||
        (rc = cpu_need(dev, "conv_silu_backward: weight", op->weight, C * K)) ||
        (op->bias.buf && (rc = cpu_need(dev, "conv_silu_backward: bias", op->bias, C))) ||
        (rc = cpu_need(dev, "conv_silu_backward: dweight", op->dweight, C * K)) ||
        (op->dbias.buf && (rc = cpu_need(dev, "conv_silu_backward: dbias", op->dbias, C))))
        return rc;
    const size_t nblk = (C + CH - 1) / CH;
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (op->batch * op->len * C * K >= 32768)
    for (size_t blk = 0; blk < nblk; blk++) {
        const size_t c0 = blk * CH;
        conv_block(op, c0, C - c0 < CH ? C - c0 : CH);
    }
    return 0;
}
