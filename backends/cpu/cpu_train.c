/* The CPU backend's training ops (mb_train_ops): the transposed GEMM through CBLAS, the
 * RMSNorm and embedding backwards, AdamW and the element-wise ops; the conv backward is in
 * cpu_train_conv.c, cross-entropy and the sum of squares in cpu_train_loss.c.
 *
 * Determinism: every sum here is split by the shapes alone (column blocks, each summed over
 * the rows in increasing order), never by the thread count, so the results are bitwise the
 * same for any number of threads; the GEMM's are OpenBLAS's, fixed for a thread count. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include <cblas.h>

#include "api/alloc.h"
#include "cpu_internal.h"

/* Element-wise loops below this many elements run on one thread (the fork costs more). */
#define PAR_MIN 32768
/* Columns a thread takes at a time in the column-parallel sums (one 256-byte run per row). */
#define COL_BLOCK 64

int cpu_need(mb_device *dev, const char *what, mb_ptr p, size_t n)
{
    if (!p.buf) return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: no buffer (%zu elements expected)", what, n);
    if (p.offset % 4)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: offset %zu is not a multiple of 4 bytes", what,
                        p.offset);
    if (n > SIZE_MAX / 4 || p.offset > p.buf->bytes || n * 4 > p.buf->bytes - p.offset)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT,
                        "%s: %zu elements at offset %zu do not fit in its buffer of %zu bytes", what, n, p.offset,
                        p.buf->bytes);
    return 0;
}

static int gemm_f32(mb_device *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, mb_ptr a_p,
                    size_t lda, mb_ptr b_p, size_t ldb, float beta, mb_ptr c_p, size_t ldc)
{
    if (m == 0 || n == 0) return 0;
    /* stored shapes: a is (k, m) when transposed, else (m, k); b is (n, k) or (k, n) */
    const size_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    const size_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED,
                        "gemm_f32: m %zu, n %zu, k %zu, lda %zu, ldb %zu, ldc %zu; CBLAS takes at most %d", m, n, k,
                        lda, ldb, ldc, INT_MAX);
    if (ldc < n) return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: ldc %zu below n = %zu", ldc, n);
    int rc = cpu_need(dev, "gemm_f32: c", c_p, cpu_span(m, ldc, n));
    if (rc) return rc;
    float *c = cpu_at(c_p);
    if (k == 0) {
        /* no products: c = beta c, and beta 0 must not read c */
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return 0;
    }
    if (lda < a_cols)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: lda %zu below a's %zu stored columns%s", lda,
                        a_cols, trans_a ? " (a transposed)" : "");
    if (ldb < b_cols)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: ldb %zu below b's %zu stored columns%s", ldb,
                        b_cols, trans_b ? " (b transposed)" : "");
    if ((rc = cpu_need(dev, "gemm_f32: a", a_p, cpu_span(a_rows, lda, a_cols))) ||
        (rc = cpu_need(dev, "gemm_f32: b", b_p, cpu_span(b_rows, ldb, b_cols))))
        return rc;
    /* BLAS does not read c when beta is 0 (NaN there does not propagate) */
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, cpu_at(a_p), (int)lda, cpu_at(b_p), (int)ldb, beta, c, (int)ldc);
    return 0;
}

/* Two passes: rows in parallel for dx (each row's sums in index order, the norm as the
 * forward's cpu_rmsnorm_row computes it), then column blocks in parallel for dw, each column
 * summed over the rows in increasing order. dx must not overlap x or dy. */
static int rmsnorm_backward(mb_device *dev, mb_ptr x_p, mb_ptr w_p, mb_ptr dy_p, size_t rows, size_t dim, float eps,
                            mb_ptr dx_p, int accumulate, mb_ptr dw_p)
{
    if (rows == 0 || dim == 0) return 0;
    if (rows > SIZE_MAX / dim)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "rmsnorm_backward: %zu rows of %zu", rows, dim);
    int rc;
    if ((rc = cpu_need(dev, "rmsnorm_backward: x", x_p, rows * dim)) ||
        (rc = cpu_need(dev, "rmsnorm_backward: w", w_p, dim)) ||
        (rc = cpu_need(dev, "rmsnorm_backward: dy", dy_p, rows * dim)) ||
        (rc = cpu_need(dev, "rmsnorm_backward: dx", dx_p, rows * dim)) ||
        (rc = cpu_need(dev, "rmsnorm_backward: dw", dw_p, dim)))
        return rc;
    const float *x = cpu_at(x_p), *w = cpu_at(w_p), *dy = cpu_at(dy_p);
    float *dx = cpu_at(dx_p), *dw = cpu_at(dw_p);
    float *rinv = mb_malloc(rows * sizeof *rinv);
    if (!rinv) return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "rmsnorm_backward: %zu floats of scratch", rows);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (rows * dim >= PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim, *dyr = dy + r * dim;
        float *dxr = dx + r * dim;
        float ss = 0;
        for (size_t i = 0; i < dim; i++) ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        rinv[r] = inv;
        float s = 0; /* sum of w dy xhat */
        for (size_t i = 0; i < dim; i++) s += w[i] * dyr[i] * (xr[i] * inv);
        const float mean = s / (float)dim;
        for (size_t i = 0; i < dim; i++) {
            const float v = (w[i] * dyr[i] - xr[i] * inv * mean) * inv;
            dxr[i] = accumulate ? dxr[i] + v : v;
        }
    }
    const size_t nblk = (dim + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (rows * dim >= PAR_MIN)
    for (size_t blk = 0; blk < nblk; blk++) {
        const size_t c0 = blk * COL_BLOCK, nc = dim - c0 < COL_BLOCK ? dim - c0 : COL_BLOCK;
        float acc[COL_BLOCK] = {0};
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * dim + c0, *dyr = dy + r * dim + c0;
            for (size_t j = 0; j < nc; j++) acc[j] += dyr[j] * (xr[j] * rinv[r]);
        }
        for (size_t j = 0; j < nc; j++) dw[c0 + j] += acc[j];
    }
    free(rinv);
    return 0;
}

/* Column blocks in parallel; within a block the rows are added in increasing r, so repeated
 * ids accumulate in the order the contract fixes and no two threads touch one element. */
static int embed_backward(mb_device *dev, mb_ptr ids_p, size_t rows, mb_ptr dy_p, size_t dim, mb_ptr dtable_p,
                          size_t vocab)
{
    if (rows == 0 || dim == 0) return 0;
    if (rows > SIZE_MAX / dim || (vocab && vocab > SIZE_MAX / dim))
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "embed_backward: %zu rows, vocab %zu, dim %zu", rows,
                        vocab, dim);
    int rc;
    if ((rc = cpu_need(dev, "embed_backward: ids", ids_p, rows)) ||
        (rc = cpu_need(dev, "embed_backward: dy", dy_p, rows * dim)) ||
        (rc = cpu_need(dev, "embed_backward: dtable", dtable_p, vocab * dim)))
        return rc;
    const int32_t *ids = cpu_at(ids_p);
    for (size_t r = 0; r < rows; r++)
        if (ids[r] < 0 || (size_t)ids[r] >= vocab)
            return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "embed_backward: ids[%zu] = %d outside the vocabulary of %zu",
                            r, (int)ids[r], vocab);
    const float *dy = cpu_at(dy_p);
    float *dt = cpu_at(dtable_p);
    const size_t nblk = (dim + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (rows * dim >= PAR_MIN)
    for (size_t blk = 0; blk < nblk; blk++) {
        const size_t c0 = blk * COL_BLOCK, nc = dim - c0 < COL_BLOCK ? dim - c0 : COL_BLOCK;
        for (size_t r = 0; r < rows; r++) {
            float *to = dt + (size_t)ids[r] * dim + c0;
            const float *from = dy + r * dim + c0;
            for (size_t j = 0; j < nc; j++) to[j] += from[j];
        }
    }
    return 0;
}

/* torch.optim.AdamW's single-tensor step: the scalars in double as Python computes them, then
 * rounded to float as torch does when it applies them to float tensors; the element updates
 * in torch's order (decay, moments, denominator, addcdiv). */
static int adamw(mb_device *dev, const mb_adamw_op *op)
{
    const size_t n = op->n;
    if (op->step < 1) return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "adamw: step %ld; expected >= 1", op->step);
    if (!(op->beta1 >= 0.0f && op->beta1 < 1.0f) || !(op->beta2 >= 0.0f && op->beta2 < 1.0f))
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "adamw: beta1 %g, beta2 %g; each expected in [0, 1)",
                        (double)op->beta1, (double)op->beta2);
    if (n == 0) return 0;
    int rc;
    if ((rc = cpu_need(dev, "adamw: param", op->param, n)) || (rc = cpu_need(dev, "adamw: grad", op->grad, n)) ||
        (rc = cpu_need(dev, "adamw: m", op->m, n)) || (rc = cpu_need(dev, "adamw: v", op->v, n)) ||
        (op->norm_sq.buf && (rc = cpu_need(dev, "adamw: norm_sq", op->norm_sq, 1))))
        return rc;
    double clip = 1.0;
    if (op->norm_sq.buf && op->max_norm > 0.0f) {
        const double norm = sqrt((double)*(const float *)cpu_at(op->norm_sq)) * (double)op->grad_scale;
        const double c = (double)op->max_norm / (norm + 1e-6);
        clip = c < 1.0 ? c : 1.0;
    }
    const double step = (double)op->step;
    const float gscale = (float)((double)op->grad_scale * clip);
    const float decay = (float)(1.0 - (double)op->lr * (double)op->weight_decay);
    const float b1 = op->beta1, b2 = op->beta2;
    const float omb1 = (float)(1.0 - (double)op->beta1), omb2 = (float)(1.0 - (double)op->beta2);
    const float step_size = (float)((double)op->lr / (1.0 - pow((double)op->beta1, step)));
    const float bc2_sqrt = (float)sqrt(1.0 - pow((double)op->beta2, step));
    const float eps = op->eps;
    float *p = cpu_at(op->param), *m = cpu_at(op->m), *v = cpu_at(op->v);
    const float *grad = cpu_at(op->grad);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float g = grad[i] * gscale;
        const float pi = p[i] * decay;
        const float mi = b1 * m[i] + omb1 * g;
        const float vi = b2 * v[i] + omb2 * (g * g);
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / denom);
    }
    return 0;
}

static int axpy(mb_device *dev, size_t n, float alpha, mb_ptr x_p, mb_ptr y_p)
{
    if (n == 0) return 0;
    int rc;
    if ((rc = cpu_need(dev, "axpy: x", x_p, n)) || (rc = cpu_need(dev, "axpy: y", y_p, n))) return rc;
    const float *x = cpu_at(x_p);
    float *y = cpu_at(y_p);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
    return 0;
}

static int neg_exp(mb_device *dev, size_t n, mb_ptr x_p, mb_ptr y_p)
{
    if (n == 0) return 0;
    int rc;
    if ((rc = cpu_need(dev, "neg_exp: x", x_p, n)) || (rc = cpu_need(dev, "neg_exp: y", y_p, n))) return rc;
    const float *x = cpu_at(x_p);
    float *y = cpu_at(y_p);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = -expf(x[i]);
    return 0;
}

static int mul_acc(mb_device *dev, size_t n, mb_ptr x_p, mb_ptr w_p, mb_ptr y_p)
{
    if (n == 0) return 0;
    int rc;
    if ((rc = cpu_need(dev, "mul_acc: x", x_p, n)) || (rc = cpu_need(dev, "mul_acc: w", w_p, n)) ||
        (rc = cpu_need(dev, "mul_acc: y", y_p, n)))
        return rc;
    const float *x = cpu_at(x_p), *w = cpu_at(w_p);
    float *y = cpu_at(y_p);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += x[i] * w[i];
    return 0;
}

const mb_train_ops cpu_train_ops = {
    .gemm_f32 = gemm_f32,
    .rmsnorm_backward = rmsnorm_backward,
    .conv_silu_backward = cpu_conv_silu_backward,
    .embed_backward = embed_backward,
    .cross_entropy = cpu_cross_entropy,
    .sum_squares = cpu_sum_squares,
    .adamw = adamw,
    .axpy = axpy,
    .neg_exp = neg_exp,
    .mul_acc = mul_acc,
};
