/* CPU ops: embedding gather, add + RMSNorm, causal conv1d + SiLU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "api/alloc.h"

int cpu_embed(mb_device *dev, mb_ptr ids_p, size_t rows, mb_ptr table_p, mamba_dtype_t dtype, size_t vocab,
              size_t dim, mb_ptr out_p)
{
    const int32_t *ids = cpu_at(ids_p);
    const unsigned char *table = cpu_at(table_p);
    float *out = cpu_at(out_p);
    if (!mb_gemm_dtype_ok(dtype, dim))
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED, "embed: table of %s with %zu columns", mb_dtype_name(dtype), dim);
    const size_t es = mb_dtype_size(dtype);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
    for (size_t r = 0; r < rows; r++) {
        if (dtype == MAMBA_Q8) mb_q8_row_to_f32(out + r * dim, table, vocab, dim, (size_t)ids[r]);
        else mb_to_f32(out + r * dim, table + (size_t)ids[r] * dim * es, dtype, dim);
    }
    return 0;
}

int cpu_add_rmsnorm(mb_device *dev, mb_ptr res_p, mb_ptr x_p, mb_ptr w_p, size_t rows, size_t dim, float eps,
                    mb_ptr out_p)
{
    float *res = cpu_at(res_p), *out = cpu_at(out_p);
    const float *x = cpu_at(x_p), *w = cpu_at(w_p);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float *rr = res + r * dim;
        if (x) {
            const float *xr = x + r * dim;
            for (size_t i = 0; i < dim; i++) rr[i] += xr[i];
        }
        cpu_rmsnorm_row(out + r * dim, rr, w, dim, eps);
    }
    return 0;
}

int cpu_rmsnorm_segments(mb_device *dev, mb_ptr x_p, size_t rows, size_t ld, const mb_segments *seg, float eps)
{
    float *x = cpu_at(x_p);
    size_t width = 0;
    for (size_t s = 0; s < seg->n; s++) width += seg->len[s];
    if (!x || seg->n > 4 || width > ld)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "rmsnorm_segments: %zu segments of %zu values in rows of %zu",
                        seg->n, width, ld);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
    for (size_t r = 0; r < rows; r++) cpu_rmsnorm_segments_row(x + r * ld, seg, eps);
    return 0;
}

static inline float silu(float v) { return v / (1.0f + expf(-v)); }

/* out[t, c] = silu(bias[c] + sum_k w[c, k] * in[t - (K-1) + k, c]), where in[tau < 0] comes
 * from the carried state (state row K-1+tau). Vectorized over channels. */
int cpu_conv_silu(mb_device *dev, const mb_conv_op *op)
{
    const size_t B = op->batch, L = op->len, Cn = op->channels, K = op->width;
    int empty, rc = mb_conv_check(op, &empty, dev->err, sizeof dev->err);
    if (rc || empty) return rc;
    const float *x = cpu_at(op->x), *w = cpu_at(op->weight), *bias = cpu_at(op->bias);
    float *state = cpu_at(op->state), *out = cpu_at(op->out);
    /* weight transposed to (K, C) so that the channel loop is unit-stride */
    float *wt = mb_malloc(K * Cn * sizeof *wt);
    float *saved = mb_malloc(B * (K - 1) * Cn * sizeof *saved + 1);
    if (!wt || !saved) {
        free(wt);
        free(saved);
        return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "conv: out of memory");
    }
    for (size_t c = 0; c < Cn; c++)
        for (size_t k = 0; k < K; k++) wt[k * Cn + c] = w[c * K + k];
    const size_t CB = 256; /* channel block */
    const size_t nblk = (Cn + CB - 1) / CB;
#pragma omp parallel for num_threads(dev->n_threads) collapse(2) schedule(static)
    for (size_t b = 0; b < B; b++) {
        for (size_t blk = 0; blk < nblk; blk++) {
            const size_t c0 = blk * CB, c1 = c0 + CB < Cn ? c0 + CB : Cn;
            const float *xb = x + b * (size_t)op->x_sb;
            float *sb = state + b * (K - 1) * Cn;
            float *ob = out + b * (size_t)op->out_sb;
            /* new state: the last K-1 inputs, taken before anything is overwritten */
            for (size_t j = 0; j + 1 < K; j++) {
                const long tau = (long)L - (long)(K - 1) + (long)j;
                const float *src = tau >= 0 ? xb + (size_t)tau * (size_t)op->x_st : sb + (size_t)(tau + (long)K - 1) * Cn;
                memcpy(saved + (b * (K - 1) + j) * Cn + c0, src + c0, (c1 - c0) * sizeof(float));
            }
            for (size_t t = 0; t < L; t++) {
                float *o = ob + t * (size_t)op->out_st;
                for (size_t c = c0; c < c1; c++) o[c] = bias ? bias[c] : 0.0f;
                for (size_t k = 0; k < K; k++) {
                    const long tau = (long)t - (long)(K - 1) + (long)k;
                    const float *in = tau >= 0 ? xb + (size_t)tau * (size_t)op->x_st : sb + (size_t)(tau + (long)K - 1) * Cn;
                    const float *wk = wt + k * Cn;
#pragma omp simd
                    for (size_t c = c0; c < c1; c++) o[c] += wk[c] * in[c];
                }
                for (size_t c = c0; c < c1; c++) o[c] = silu(o[c]);
            }
        }
    }
    memcpy(state, saved, B * (K - 1) * Cn * sizeof *saved);
    free(wt);
    free(saved);
    return 0;
}

int cpu_argmax(mb_device *dev, mb_ptr logits_p, size_t rows, size_t vocab, mb_ptr ids_p, mb_ptr ids2_p, mb_ptr flag_p)
{
    (void)dev;
    const float *logits = cpu_at(logits_p);
    int32_t *ids = cpu_at(ids_p), *ids2 = cpu_at(ids2_p), *flag = cpu_at(flag_p);
    for (size_t r = 0; r < rows; r++) {
        const float *row = logits + r * vocab;
        size_t best = 0;
        int nan = 0, found = 0;
        for (size_t v = 0; v < vocab; v++) {
            if (isnan(row[v])) {
                nan = 1;
            } else if (!found || row[v] > row[best]) {
                best = v;
                found = 1;
            }
        }
        ids[r] = (int32_t)best;
        if (ids2) ids2[r] = (int32_t)best;
        if (nan) *flag = 1;
    }
    return 0;
}
