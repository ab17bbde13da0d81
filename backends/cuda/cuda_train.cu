/* The CUDA backend's training ops (mb_train_ops, api/backend.h).
 *
 * Determinism: no floating-point atomics anywhere. Every sum runs in an order fixed by the
 * shapes alone: a block reduction is a fixed tree over a fixed block size; sums over rows
 * (rmsnorm's dw, conv's dweight/dbias) are partial sums over fixed row blocks, folded in
 * block order by a second kernel; embed_backward sorts the rows by id (a stable radix sort,
 * whose output is unique) and adds each table row's rows in increasing r. The fp32 GEMM is
 * cuBLAS's, deterministic on one stream with the fixed workspace and no atomics (see
 * cuda_train_gemm_f32).
 *
 * Sizes: element offsets are size_t (rows x vocab may pass 2^31); one block per row puts
 * rows on gridDim.x (< 2^31); elementwise kernels stride over a capped grid. */
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include <cub/device/device_radix_sort.cuh>

#include "cuda_train.h"

#define TR_THREADS 256
#define TR_MAX_BLOCKS (1u << 20)

static unsigned tr_blocks(size_t n, unsigned per)
{
    const size_t b = (n + per - 1) / per;
    return b > TR_MAX_BLOCKS ? TR_MAX_BLOCKS : (unsigned)b;
}

/* ---- argument checks ----------------------------------------------------------------- */

/* p holds count elements of elem bytes */
static int tr_need(mb_device *dev, mb_ptr p, size_t count, size_t elem, const char *op, const char *what)
{
    if (!p.buf) return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s has no buffer", op, what);
    if (count && count > SIZE_MAX / elem)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s of %zu elements overflows a size", op, what, count);
    char label[96];
    snprintf(label, sizeof label, "%s: %s", op, what);
    return mb_range_check(1, p.buf->bytes, p.offset, count * elem, label, dev->err, sizeof dev->err);
}

/* elements spanned by [i0, i1, i2] at i0*s0 + i1*s1 + i2 (i2 contiguous), i < n, strides >= 0;
 * SIZE_MAX when it overflows */
static size_t tr_extent3(size_t n0, size_t s0, size_t n1, size_t s1, size_t n2)
{
    if (!n0 || !n1 || !n2) return 0;
    if ((s0 && n0 - 1 > SIZE_MAX / 4 / s0) || (s1 && n1 - 1 > SIZE_MAX / 4 / s1)) return SIZE_MAX;
    const size_t a = (n0 - 1) * s0, b = (n1 - 1) * s1;
    if (a > SIZE_MAX / 4 - b || n2 > SIZE_MAX / 4 - a - b) return SIZE_MAX;
    return a + b + n2;
}

/* a row-major rows x cols matrix with leading dimension ld */
static int tr_need_mat(mb_device *dev, mb_ptr p, size_t rows, size_t cols, size_t ld, const char *op,
                       const char *what)
{
    if (!p.buf) return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s has no buffer", op, what);
    if (cols > ld && rows > 1)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s has %zu columns, more than its leading dimension %zu",
                         op, what, cols, ld);
    const size_t n = tr_extent3(1, 0, rows, ld, cols);
    if (n == SIZE_MAX) return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s of %zu x %zu overflows", op, what, rows, cols);
    return tr_need(dev, p, n, sizeof(float), op, what);
}

/* ---- reductions ---------------------------------------------------------------------- */

/* The sum of v over the block (blockDim.x a multiple of 32, at most 1024), in a fixed tree,
 * returned to every thread. sh: 32 slots; the caller may reuse it after this returns. */
template <typename T> __device__ __forceinline__ T tr_block_sum(T v, T *sh)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : (T)0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- gemm_f32 -------------------------------------------------------------------------- */

__global__ void scale_rows_kernel(float *c, size_t m, size_t n, size_t ldc, float beta)
{
    const size_t total = m * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float *p = c + (i / n) * ldc + i % n;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

/* Row-major C (m x n) = op(A) op(B) is column-major C' (n x m) = op(B)' op(A)', where a
 * row-major matrix with leading dimension ld is read as its transpose, column-major with the
 * same ld: so cuBLAS gets B first (transposed when trans_b), then A, with m and n swapped.
 * The compute type CUBLAS_COMPUTE_32F_PEDANTIC keeps the products and sums in fp32 whatever
 * the handle's math mode (the model's MB_GEMM_TF32 sets TF32 on it; neither TF32 nor BF16x9
 * emulation is taken here), so results match the CPU's fp32 to rounding. Determinism rests
 * on cuBLAS's documented reproducibility: the same bits on every run on GPUs of the same
 * architecture and SM count, for a handle used from one stream, with the workspace set
 * (cu_open: cublasSetWorkspace, one stream) and atomics not allowed (the default, set
 * explicitly in cu_open). */
int cuda_train_gemm_f32(mb_device *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, mb_ptr a,
                        size_t lda, mb_ptr b, size_t ldb, float beta, mb_ptr c, size_t ldc)
{
    static const char *op = "gemm_f32";
    if (m == 0 || n == 0) return 0;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "%s: %zu x %zu x %zu (lda %zu, ldb %zu, ldc %zu) exceeds 32-bit sizes",
                         op, m, n, k, lda, ldb, ldc);
    if (ldc < n) return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: ldc %zu < n %zu", op, ldc, n);
    int rc;
    if ((rc = tr_need_mat(dev, c, m, n, ldc, op, "c"))) return rc;
    if (k == 0) {
        /* c = beta c (0 when beta is 0, c not read); cuBLAS would want lda, ldb >= 1 */
        scale_rows_kernel<<<tr_blocks(m * n, TR_THREADS), TR_THREADS, 0, dev->stream>>>((float *)cu_at(c), m, n, ldc,
                                                                                      beta);
        CU_LAUNCHED(dev, "gemm_f32: scale kernel (k = 0)");
        return 0;
    }
    const size_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    const size_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    if (lda < a_cols)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: lda %zu < %zu, the row length of a (stored %zu x %zu%s)",
                         op, lda, a_cols, a_rows, a_cols, trans_a ? ", transposed" : "");
    if (ldb < b_cols)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: ldb %zu < %zu, the row length of b (stored %zu x %zu%s)",
                         op, ldb, b_cols, b_rows, b_cols, trans_b ? ", transposed" : "");
    if ((rc = tr_need_mat(dev, a, a_rows, a_cols, lda, op, "a")) || (rc = tr_need_mat(dev, b, b_rows, b_cols, ldb, op, "b")))
        return rc;
    const cublasStatus_t st =
        cublasGemmEx(dev->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m,
                     (int)k, &alpha, cu_at(b), CUDA_R_32F, (int)ldb, cu_at(a), CUDA_R_32F, (int)lda, &beta, cu_at(c),
                     CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cuda_fail(dev, MAMBA_ERR_BACKEND, "%s: cublasGemmEx (%s%s, %zu x %zu x %zu) failed: %s (status %d)", op,
                         trans_a ? "T" : "N", trans_b ? "T" : "N", m, n, k, cublasGetStatusString(st), (int)st);
    return 0;
}

/* ---- rmsnorm_backward --------------------------------------------------------------------
 * Per row: inv = 1 / rms(x), mu = mean(w dy xhat) = inv sum(w dy x) / dim, then
 * dx = (w dy - xhat mu) inv. dw's sum over rows: partial sums over row blocks of
 * rms_rows_per_block rows, then a fold over the blocks in order. dx is written last, by its
 * own kernel, so that dx may even alias x or dy. */

#define RMS_MAX_BLOCKS 1024

static size_t rms_rows_per_block(size_t rows)
{
    const size_t per = (rows + RMS_MAX_BLOCKS - 1) / RMS_MAX_BLOCKS;
    return per < 64 ? 64 : per;
}

/* one block per row: stats[r] = (inv, mu) */
__global__ void __launch_bounds__(TR_THREADS) rms_bwd_stats_kernel(const float *x, const float *w, const float *dy,
                                                                   size_t dim, float eps, float2 *stats)
{
    __shared__ float sh[32];
    const size_t r = blockIdx.x;
    const float *xr = x + r * dim, *gr = dy + r * dim;
    float ss = 0.0f, dot = 0.0f;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float xv = xr[i];
        ss += xv * xv;
        dot += w[i] * gr[i] * xv;
    }
    ss = tr_block_sum(ss, sh);
    dot = tr_block_sum(dot, sh);
    if (threadIdx.x == 0) {
        const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        stats[r] = make_float2(inv, inv * dot / (float)dim);
    }
}

/* part[j, i] = sum over the rows of block j, in order, of dy[r, i] xhat[r, i] */
__global__ void rms_bwd_dw_part_kernel(const float *x, const float *dy, const float2 *stats, size_t rows, size_t dim,
                                       size_t per_block, float *part)
{
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x, j = blockIdx.y;
    if (i >= dim) return;
    const size_t r0 = j * per_block, r1 = min(rows, r0 + per_block);
    float acc = 0.0f;
    for (size_t r = r0; r < r1; r++) acc += dy[r * dim + i] * (x[r * dim + i] * stats[r].x);
    part[j * dim + i] = acc;
}

/* dst[i] += sum_j part[j * n + i], j < blocks in order */
__global__ void fold_add_kernel(const float *part, size_t blocks, size_t n, float *dst)
{
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = 0.0f;
    for (size_t j = 0; j < blocks; j++) s += part[j * n + i];
    dst[i] += s;
}

__global__ void __launch_bounds__(TR_THREADS) rms_bwd_dx_kernel(const float *x, const float *w, const float *dy,
                                                                const float2 *stats, size_t dim, float *dx,
                                                                int accumulate)
{
    const size_t r = blockIdx.x;
    const float2 s = stats[r];
    const float *xr = x + r * dim, *gr = dy + r * dim;
    float *o = dx + r * dim;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = (w[i] * gr[i] - xr[i] * s.x * s.y) * s.x;
        o[i] = accumulate ? o[i] + v : v;
    }
}

int cuda_train_rmsnorm_backward(mb_device *dev, mb_ptr x, mb_ptr w, mb_ptr dy, size_t rows, size_t dim, float eps,
                                mb_ptr dx, int accumulate, mb_ptr dw)
{
    static const char *op = "rmsnorm_backward";
    if (rows == 0 || dim == 0) return 0;
    if (rows > INT_MAX)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "%s: %zu rows, at most %d", op, rows, INT_MAX);
    int rc;
    if ((rc = tr_need_mat(dev, x, rows, dim, dim, op, "x")) || (rc = tr_need_mat(dev, dy, rows, dim, dim, op, "dy")) ||
        (rc = tr_need_mat(dev, dx, rows, dim, dim, op, "dx")) || (rc = tr_need(dev, w, dim, sizeof(float), op, "w")) ||
        (dw.buf && (rc = tr_need(dev, dw, dim, sizeof(float), op, "dw"))))
        return rc;
    const size_t per = rms_rows_per_block(rows), nblk = (rows + per - 1) / per;
    const size_t stats_bytes = (rows * sizeof(float2) + 255) / 256 * 256;
    void *s;
    if ((rc = cuda_scratch(dev, stats_bytes + (dw.buf ? nblk * dim * sizeof(float) : 0), &s))) return rc;
    float2 *stats = (float2 *)s;
    float *part = (float *)((char *)s + stats_bytes);
    const float *xp = (const float *)cu_at(x), *wp = (const float *)cu_at(w), *gp = (const float *)cu_at(dy);
    rms_bwd_stats_kernel<<<(unsigned)rows, TR_THREADS, 0, dev->stream>>>(xp, wp, gp, dim, eps, stats);
    CU_LAUNCHED(dev, "rmsnorm_backward: statistics kernel");
    if (dw.buf) {
        const unsigned ct = (unsigned)((dim + TR_THREADS - 1) / TR_THREADS);
        rms_bwd_dw_part_kernel<<<dim3(ct, (unsigned)nblk), TR_THREADS, 0, dev->stream>>>(xp, gp, stats, rows, dim, per,
                                                                                        part);
        CU_LAUNCHED(dev, "rmsnorm_backward: dw partial sums kernel");
        fold_add_kernel<<<ct, TR_THREADS, 0, dev->stream>>>(part, nblk, dim, (float *)cu_at(dw));
        CU_LAUNCHED(dev, "rmsnorm_backward: dw fold kernel");
    }
    rms_bwd_dx_kernel<<<(unsigned)rows, TR_THREADS, 0, dev->stream>>>(xp, wp, gp, stats, dim, (float *)cu_at(dx),
                                                                     accumulate);
    CU_LAUNCHED(dev, "rmsnorm_backward: dx kernel");
    return 0;
}

/* ---- conv_silu_backward ------------------------------------------------------------------
 * g = dout silu'(pre) is computed once into the scratch, (batch x len, channels) contiguous;
 * dweight/dbias are partial sums of g x over row blocks (rows r = b len + t) folded in block
 * order; dx, which reads the width taps of g ahead of each step, is written last, so that it
 * may alias x or dout. */

#define CONV_BWD_MAX_BLOCKS 256
#define CONV_BWD_THREADS 128

struct conv_bwd_params {
    const float *x, *w, *bias, *dout;
    float *g, *dx;
    size_t B, L, C, K;
    size_t x_sb, x_st, o_sb, o_st, dx_sb, dx_st;
};

__global__ void conv_bwd_g_kernel(const conv_bwd_params p)
{
    const size_t total = p.B * p.L * p.C, C = p.C, K = p.K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t c = i % C, r = i / C, b = r / p.L, t = r % p.L;
        const float *xb = p.x + b * p.x_sb + c;
        float pre = p.bias ? p.bias[c] : 0.0f;
        /* taps before t = 0 read zeros: start at the first that lands inside */
        for (size_t k = t + 1 >= K ? 0 : K - 1 - t; k < K; k++) pre += p.w[c * K + k] * xb[(t + k - (K - 1)) * p.x_st];
        const float s = 1.0f / (1.0f + expf(-pre));
        p.g[i] = p.dout[b * p.o_sb + t * p.o_st + c] * (s * (1.0f + pre * (1.0f - s)));
    }
}

/* dx[b, t, c] = sum_k w[c, k] g[b, t + (K-1) - k, c], the taps past len dropped */
__global__ void conv_bwd_dx_kernel(const conv_bwd_params p)
{
    const size_t total = p.B * p.L * p.C, C = p.C, K = p.K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t c = i % C, r = i / C, b = r / p.L, t = r % p.L;
        float acc = 0.0f;
        /* t + (K-1) - k < L  <=>  k > t + K - 1 - L */
        for (size_t k = t + K > p.L ? t + K - p.L : 0; k < K; k++) acc += p.w[c * K + k] * p.g[i + (K - 1 - k) * C];
        p.dx[b * p.dx_sb + t * p.dx_st + c] = acc;
    }
}

/* part[(j (K+1) + k) C + c] = sum over the rows of block j, in order, of g[r, c] times
 * x[b, t - (K-1) + k, c] (k < K) or 1 (k = K: dbias, when with_bias) */
__global__ void conv_bwd_part_kernel(const conv_bwd_params p, size_t per_block, int with_bias, float *part)
{
    const size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x, j = blockIdx.y, C = p.C, K = p.K;
    if (c >= C) return;
    const size_t rows = p.B * p.L, r0 = j * per_block, r1 = min(rows, r0 + per_block);
    for (size_t k = 0; k < K + (with_bias ? 1 : 0); k++) {
        float acc = 0.0f;
        size_t b = r0 / p.L, t = r0 % p.L;
        for (size_t r = r0; r < r1; r++) {
            const float gv = p.g[r * C + c];
            if (k == K) acc += gv;
            else if (t + k >= K - 1) acc += gv * p.x[b * p.x_sb + (t + k - (K - 1)) * p.x_st + c];
            if (++t == p.L) {
                t = 0;
                b++;
            }
        }
        part[(j * (K + 1) + k) * C + c] = acc;
    }
}

/* dweight[c, k] += sum_j part[j, k, c]; dbias[c] += sum_j part[j, K, c]; j in order */
__global__ void conv_bwd_fold_kernel(const float *part, size_t blocks, size_t C, size_t K, float *dweight, float *dbias)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (K + 1) * C; i += (size_t)gridDim.x * blockDim.x) {
        const size_t k = i / C, c = i % C;
        if (k == K ? !dbias : !dweight) continue;
        float s = 0.0f;
        for (size_t j = 0; j < blocks; j++) s += part[(j * (K + 1) + k) * C + c];
        if (k == K) dbias[c] += s;
        else dweight[c * K + k] += s;
    }
}

int cuda_train_conv_silu_backward(mb_device *dev, const mb_conv_bwd_op *op)
{
    static const char *name = "conv_silu_backward";
    const size_t B = op->batch, L = op->len, C = op->channels, K = op->width;
    /* the widths every backend takes (mb_conv_check's), though these kernels have no window
     * to bound them */
    if (K == 0) return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: width 0; expected 1..64 taps", name);
    if (K > 64) return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "%s: width %zu; at most 64 taps supported", name, K);
    if (B == 0 || L == 0 || C == 0) return 0;
    if (op->x_sb < 0 || op->x_st < 0 || op->dout_sb < 0 || op->dout_st < 0 || op->dx_sb < 0 || op->dx_st < 0)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "%s: negative strides (x %td/%td, dout %td/%td, dx %td/%td)", name,
                         op->x_sb, op->x_st, op->dout_sb, op->dout_st, op->dx_sb, op->dx_st);
    if (K > SIZE_MAX / 4 / C || L > SIZE_MAX / 4 / B || B * L > SIZE_MAX / 4 / (C * (K + 2)))
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %zu x %zu x %zu channels, width %zu overflows", name, B, L,
                         C, K);
    int rc;
    const size_t ex = tr_extent3(B, (size_t)op->x_sb, L, (size_t)op->x_st, C);
    const size_t eo = tr_extent3(B, (size_t)op->dout_sb, L, (size_t)op->dout_st, C);
    const size_t ed = tr_extent3(B, (size_t)op->dx_sb, L, (size_t)op->dx_st, C);
    if (ex == SIZE_MAX || eo == SIZE_MAX || ed == SIZE_MAX)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: strides overflow", name);
    if ((rc = tr_need(dev, op->x, ex, sizeof(float), name, "x")) ||
        (rc = tr_need(dev, op->dout, eo, sizeof(float), name, "dout")) ||
        (rc = tr_need(dev, op->weight, C * K, sizeof(float), name, "weight")) ||
        (op->bias.buf && (rc = tr_need(dev, op->bias, C, sizeof(float), name, "bias"))) ||
        (op->dx.buf && (rc = tr_need(dev, op->dx, ed, sizeof(float), name, "dx"))) ||
        (op->dweight.buf && (rc = tr_need(dev, op->dweight, C * K, sizeof(float), name, "dweight"))) ||
        (op->dbias.buf && (rc = tr_need(dev, op->dbias, C, sizeof(float), name, "dbias"))))
        return rc;
    const size_t rows = B * L, total = rows * C;
    size_t per = (rows + CONV_BWD_MAX_BLOCKS - 1) / CONV_BWD_MAX_BLOCKS;
    if (per < 64) per = 64;
    const size_t nblk = (rows + per - 1) / per;
    const bool sums = op->dweight.buf || op->dbias.buf;
    const size_t g_bytes = (total * sizeof(float) + 255) / 256 * 256;
    void *s;
    if ((rc = cuda_scratch(dev, g_bytes + (sums ? nblk * (K + 1) * C * sizeof(float) : 0), &s))) return rc;
    conv_bwd_params p;
    p.x = (const float *)cu_at(op->x);
    p.w = (const float *)cu_at(op->weight);
    p.bias = (const float *)cu_at(op->bias);
    p.dout = (const float *)cu_at(op->dout);
    p.g = (float *)s;
    p.dx = (float *)cu_at(op->dx);
    p.B = B; p.L = L; p.C = C; p.K = K;
    p.x_sb = (size_t)op->x_sb; p.x_st = (size_t)op->x_st;
    p.o_sb = (size_t)op->dout_sb; p.o_st = (size_t)op->dout_st;
    p.dx_sb = (size_t)op->dx_sb; p.dx_st = (size_t)op->dx_st;
    const unsigned eb = tr_blocks(total, TR_THREADS);
    conv_bwd_g_kernel<<<eb, TR_THREADS, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "conv_silu_backward: gradient-of-pre kernel");
    if (sums) {
        float *part = (float *)((char *)s + g_bytes);
        const unsigned ct = (unsigned)((C + CONV_BWD_THREADS - 1) / CONV_BWD_THREADS);
        conv_bwd_part_kernel<<<dim3(ct, (unsigned)nblk), CONV_BWD_THREADS, 0, dev->stream>>>(p, per,
                                                                                             op->dbias.buf != nullptr, part);
        CU_LAUNCHED(dev, "conv_silu_backward: dweight/dbias partial sums kernel");
        conv_bwd_fold_kernel<<<tr_blocks((K + 1) * C, TR_THREADS), TR_THREADS, 0, dev->stream>>>(
            part, nblk, C, K, (float *)cu_at(op->dweight), (float *)cu_at(op->dbias));
        CU_LAUNCHED(dev, "conv_silu_backward: dweight/dbias fold kernel");
    }
    if (op->dx.buf) {
        conv_bwd_dx_kernel<<<eb, TR_THREADS, 0, dev->stream>>>(p);
        CU_LAUNCHED(dev, "conv_silu_backward: dx kernel");
    }
    return 0;
}

/* ---- embed_backward ----------------------------------------------------------------------
 * The rows are sorted by id with CUB's radix sort, which is stable: equal ids keep their rows
 * in increasing r. The first row of each run of one id then adds that run's dy rows to the
 * table row, in order, one column a thread. An id outside [0, vocab) (against the contract)
 * is mapped to the key vocab and skipped rather than written out of bounds. */

__global__ void embed_bwd_keys_kernel(const int32_t *ids, size_t rows, uint32_t vocab, uint32_t *keys, int32_t *vals)
{
    for (size_t r = blockIdx.x * (size_t)blockDim.x + threadIdx.x; r < rows; r += (size_t)gridDim.x * blockDim.x) {
        const int32_t id = ids[r];
        keys[r] = id >= 0 && (uint32_t)id < vocab ? (uint32_t)id : vocab;
        vals[r] = (int32_t)r;
    }
}

/* one block per sorted position p; only the first of a run works */
__global__ void embed_bwd_add_kernel(const uint32_t *keys, const int32_t *rows_of, size_t rows, const float *dy,
                                     size_t dim, uint32_t vocab, float *table)
{
    const size_t p = blockIdx.x;
    const uint32_t v = keys[p];
    if (v >= vocab || (p > 0 && keys[p - 1] == v)) return;
    size_t end = p + 1;
    while (end < rows && keys[end] == v) end++;
    float *trow = table + (size_t)v * dim;
    for (size_t j = threadIdx.x; j < dim; j += blockDim.x) {
        float acc = trow[j];
        for (size_t q = p; q < end; q++) acc += dy[(size_t)rows_of[q] * dim + j];
        trow[j] = acc;
    }
}

int cuda_train_embed_backward(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr dy, size_t dim, mb_ptr dtable,
                              size_t vocab)
{
    static const char *op = "embed_backward";
    if (rows == 0 || dim == 0) return 0;
    if (rows > INT_MAX || vocab >= UINT32_MAX)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "%s: %zu rows (at most %d), vocab %zu", op, rows, INT_MAX, vocab);
    if (vocab && dim > SIZE_MAX / 4 / vocab)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: table %zu x %zu overflows", op, vocab, dim);
    int rc;
    if ((rc = tr_need(dev, ids, rows, sizeof(int32_t), op, "ids")) ||
        (rc = tr_need_mat(dev, dy, rows, dim, dim, op, "dy")) ||
        (rc = tr_need(dev, dtable, vocab * dim, sizeof(float), op, "dtable")))
        return rc;
    /* the keys run up to vocab (the key of a bad id): sort on the bits that holds */
    int end_bit = 1;
    while (end_bit < 32 && ((uint64_t)1 << end_bit) <= vocab) end_bit++;
    const size_t arr = (rows * sizeof(uint32_t) + 255) / 256 * 256;
    uint32_t *kin = nullptr, *kout = nullptr;
    int32_t *vin = nullptr, *vout = nullptr;
    size_t tmp_bytes = 0;
    cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, kin, kout, vin, vout, (int)rows, 0, end_bit,
                                                    dev->stream);
    CU_CHECK(dev, e, "embed_backward: radix sort size query");
    void *s;
    if ((rc = cuda_scratch(dev, 4 * arr + tmp_bytes, &s))) return rc;
    kin = (uint32_t *)s;
    kout = (uint32_t *)((char *)s + arr);
    vin = (int32_t *)((char *)s + 2 * arr);
    vout = (int32_t *)((char *)s + 3 * arr);
    void *tmp = (char *)s + 4 * arr;
    embed_bwd_keys_kernel<<<tr_blocks(rows, TR_THREADS), TR_THREADS, 0, dev->stream>>>(
        (const int32_t *)cu_at(ids), rows, (uint32_t)vocab, kin, vin);
    CU_LAUNCHED(dev, "embed_backward: keys kernel");
    e = cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, kin, kout, vin, vout, (int)rows, 0, end_bit, dev->stream);
    CU_CHECK(dev, e, "embed_backward: radix sort");
    CU_LAUNCHED(dev, "embed_backward: radix sort kernels");
    embed_bwd_add_kernel<<<(unsigned)rows, TR_THREADS, 0, dev->stream>>>(kout, vout, rows, (const float *)cu_at(dy), dim,
                                                                        (uint32_t)vocab, (float *)cu_at(dtable));
    CU_LAUNCHED(dev, "embed_backward: accumulation kernel");
    return 0;
}

/* ---- cross_entropy -----------------------------------------------------------------------
 * One block per row: the max with its first index (NaNs never win), the sum of exp(x - max)
 * in a fixed tree, lse = max + log(sum), then the row is overwritten with
 * scale (exp(x - max) / sum - onehot). A label >= vocab (against the contract) gets a NaN loss
 * and a zero gradient row, so that the error shows without a read out of bounds. */

#define CE_THREADS 512

__device__ __forceinline__ void ce_better(float &m, unsigned long long &mi, float om, unsigned long long oi)
{
    if (om > m || (om == m && oi < mi)) {
        m = om;
        mi = oi;
    }
}

__global__ void __launch_bounds__(CE_THREADS) ce_kernel(float *logits, size_t vocab, const int32_t *labels,
                                                        float scale, float *loss, int32_t *correct)
{
    __shared__ float shm[32];
    __shared__ unsigned long long shi[32];
    __shared__ float shs[32];
    const size_t r = blockIdx.x;
    float *x = logits + r * vocab;
    const int32_t lab = labels[r];
    if (lab < 0 || (size_t)lab >= vocab) {
        for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) x[i] = 0.0f;
        if (threadIdx.x == 0) {
            loss[r] = lab < 0 ? 0.0f : nanf("");
            correct[r] = 0;
        }
        return;
    }
    const float xl = x[lab];
    float m = -INFINITY;
    unsigned long long mi = ~0ull;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) ce_better(m, mi, x[i], i);
    for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(0xffffffffu, m, o);
        const unsigned long long oi = __shfl_xor_sync(0xffffffffu, mi, o);
        ce_better(m, mi, om, oi);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) {
        shm[warp] = m;
        shi[warp] = mi;
    }
    __syncthreads();
    m = lane < nw ? shm[lane] : -INFINITY;
    mi = lane < nw ? shi[lane] : ~0ull;
    for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(0xffffffffu, m, o);
        const unsigned long long oi = __shfl_xor_sync(0xffffffffu, mi, o);
        ce_better(m, mi, om, oi);
    }
    float sum = 0.0f;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(x[i] - m);
    sum = tr_block_sum(sum, shs); /* its barriers also order every read of x[lab] before the writes */
    if (threadIdx.x == 0) {
        loss[r] = (m - xl) + logf(sum); /* m - xl first: logits near 1e4 keep their digits */
        correct[r] = mi == (unsigned long long)lab ? 1 : 0;
    }
    const float inv = 1.0f / sum;
    for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float p = expf(x[i] - m) * inv;
        x[i] = scale * (i == (size_t)lab ? p - 1.0f : p);
    }
}

int cuda_train_cross_entropy(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr labels, float scale,
                             mb_ptr loss, mb_ptr correct)
{
    static const char *op = "cross_entropy";
    if (rows == 0) return 0;
    if (rows > INT_MAX || vocab == 0)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: %zu rows (1..%d), vocab %zu (at least 1)", op, rows,
                         INT_MAX, vocab);
    int rc;
    if ((rc = tr_need_mat(dev, logits, rows, vocab, vocab, op, "logits")) ||
        (rc = tr_need(dev, labels, rows, sizeof(int32_t), op, "labels")) ||
        (rc = tr_need(dev, loss, rows, sizeof(float), op, "loss")) ||
        (rc = tr_need(dev, correct, rows, sizeof(int32_t), op, "correct")))
        return rc;
    ce_kernel<<<(unsigned)rows, CE_THREADS, 0, dev->stream>>>((float *)cu_at(logits), vocab,
                                                             (const int32_t *)cu_at(labels), scale,
                                                             (float *)cu_at(loss), (int32_t *)cu_at(correct));
    CU_LAUNCHED(dev, "cross_entropy kernel");
    return 0;
}

/* ---- sum_squares -------------------------------------------------------------------------
 * Two passes, both fixed by n alone: SS_BLOCKS(n) blocks each sum a grid-strided share in
 * double (a gradient buffer holds up to billions of terms) and reduce it in a fixed tree; one
 * block then adds the partial sums in a fixed tree. */

#define SS_THREADS 256
#define SS_MAX_BLOCKS 1024

__global__ void __launch_bounds__(SS_THREADS) sum_sq_part_kernel(const float *x, size_t n, double *part)
{
    __shared__ double sh[32];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const double v = x[i];
        acc += v * v;
    }
    acc = tr_block_sum(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(SS_MAX_BLOCKS) sum_sq_final_kernel(const double *part, unsigned blocks, float *out)
{
    __shared__ double sh[32];
    double acc = threadIdx.x < blocks ? part[threadIdx.x] : 0.0;
    acc = tr_block_sum(acc, sh);
    if (threadIdx.x == 0) out[0] = (float)acc;
}

int cuda_train_sum_squares(mb_device *dev, mb_ptr x, size_t n, mb_ptr out)
{
    static const char *op = "sum_squares";
    int rc;
    if ((rc = tr_need(dev, out, 1, sizeof(float), op, "out"))) return rc;
    if (n == 0) {
        CU_CHECK(dev, cudaMemsetAsync(cu_at(out), 0, sizeof(float), dev->stream), "sum_squares: clearing out");
        return 0;
    }
    if ((rc = tr_need(dev, x, n, sizeof(float), op, "x"))) return rc;
    size_t want = (n + SS_THREADS * 16 - 1) / (SS_THREADS * 16);
    const unsigned blocks = want > SS_MAX_BLOCKS ? SS_MAX_BLOCKS : (unsigned)want;
    void *s;
    if ((rc = cuda_scratch(dev, SS_MAX_BLOCKS * sizeof(double), &s))) return rc;
    sum_sq_part_kernel<<<blocks, SS_THREADS, 0, dev->stream>>>((const float *)cu_at(x), n, (double *)s);
    CU_LAUNCHED(dev, "sum_squares: partial sums kernel");
    sum_sq_final_kernel<<<1, SS_MAX_BLOCKS, 0, dev->stream>>>((const double *)s, blocks, (float *)cu_at(out));
    CU_LAUNCHED(dev, "sum_squares: final sum kernel");
    return 0;
}

/* ---- adamw -------------------------------------------------------------------------------
 * The step's scalars (bias corrections, the decay factor) are computed on the host in double,
 * as torch computes them in Python floats; the clip factor from norm_sq on the device, the
 * same in every thread. */

struct adamw_params {
    float *param, *m, *v;
    const float *grad, *norm_sq;
    size_t n;
    float beta1, one_m_beta1, beta2, one_m_beta2, eps, decay, step_size, bc2_sqrt, max_norm, grad_scale;
};

__global__ void adamw_kernel(const adamw_params p)
{
    float clip = 1.0f;
    if (p.norm_sq && p.max_norm > 0.0f) {
        const float norm = sqrtf(p.norm_sq[0]) * p.grad_scale;
        clip = fminf(1.0f, p.max_norm / (norm + 1e-6f));
    }
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < p.n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = p.grad[i] * p.grad_scale * clip;
        const float m = p.beta1 * p.m[i] + p.one_m_beta1 * g;
        const float v = p.beta2 * p.v[i] + p.one_m_beta2 * g * g;
        p.m[i] = m;
        p.v[i] = v;
        p.param[i] = p.param[i] * p.decay - p.step_size * m / (sqrtf(v) / p.bc2_sqrt + p.eps);
    }
}

int cuda_train_adamw(mb_device *dev, const mb_adamw_op *op)
{
    static const char *name = "adamw";
    if (op->step < 1) return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "%s: step %ld; expected >= 1", name, op->step);
    if (op->n == 0) return 0;
    int rc;
    if ((rc = tr_need(dev, op->param, op->n, sizeof(float), name, "param")) ||
        (rc = tr_need(dev, op->grad, op->n, sizeof(float), name, "grad")) ||
        (rc = tr_need(dev, op->m, op->n, sizeof(float), name, "m")) ||
        (rc = tr_need(dev, op->v, op->n, sizeof(float), name, "v")) ||
        (op->norm_sq.buf && (rc = tr_need(dev, op->norm_sq, 1, sizeof(float), name, "norm_sq"))))
        return rc;
    adamw_params p;
    p.param = (float *)cu_at(op->param);
    p.m = (float *)cu_at(op->m);
    p.v = (float *)cu_at(op->v);
    p.grad = (const float *)cu_at(op->grad);
    p.norm_sq = (const float *)cu_at(op->norm_sq);
    p.n = op->n;
    p.beta1 = op->beta1;
    p.one_m_beta1 = 1.0f - op->beta1;
    p.beta2 = op->beta2;
    p.one_m_beta2 = 1.0f - op->beta2;
    p.eps = op->eps;
    p.decay = (float)(1.0 - (double)op->lr * (double)op->weight_decay);
    p.step_size = (float)((double)op->lr / (1.0 - pow((double)op->beta1, (double)op->step)));
    p.bc2_sqrt = (float)sqrt(1.0 - pow((double)op->beta2, (double)op->step));
    p.max_norm = op->max_norm;
    p.grad_scale = op->grad_scale;
    adamw_kernel<<<tr_blocks(op->n, TR_THREADS), TR_THREADS, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "adamw kernel");
    return 0;
}

/* ---- elementwise ------------------------------------------------------------------------ */

__global__ void axpy_kernel(size_t n, float alpha, const float *x, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += alpha * x[i];
}

__global__ void neg_exp_kernel(size_t n, const float *x, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = -expf(x[i]);
}

__global__ void mul_acc_kernel(size_t n, const float *x, const float *w, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i] * w[i];
}

int cuda_train_axpy(mb_device *dev, size_t n, float alpha, mb_ptr x, mb_ptr y)
{
    if (n == 0) return 0;
    int rc;
    if ((rc = tr_need(dev, x, n, sizeof(float), "axpy", "x")) || (rc = tr_need(dev, y, n, sizeof(float), "axpy", "y")))
        return rc;
    axpy_kernel<<<tr_blocks(n, TR_THREADS), TR_THREADS, 0, dev->stream>>>(n, alpha, (const float *)cu_at(x),
                                                                         (float *)cu_at(y));
    CU_LAUNCHED(dev, "axpy kernel");
    return 0;
}

int cuda_train_neg_exp(mb_device *dev, size_t n, mb_ptr x, mb_ptr y)
{
    if (n == 0) return 0;
    int rc;
    if ((rc = tr_need(dev, x, n, sizeof(float), "neg_exp", "x")) ||
        (rc = tr_need(dev, y, n, sizeof(float), "neg_exp", "y")))
        return rc;
    neg_exp_kernel<<<tr_blocks(n, TR_THREADS), TR_THREADS, 0, dev->stream>>>(n, (const float *)cu_at(x),
                                                                            (float *)cu_at(y));
    CU_LAUNCHED(dev, "neg_exp kernel");
    return 0;
}

int cuda_train_mul_acc(mb_device *dev, size_t n, mb_ptr x, mb_ptr w, mb_ptr y)
{
    if (n == 0) return 0;
    int rc;
    if ((rc = tr_need(dev, x, n, sizeof(float), "mul_acc", "x")) ||
        (rc = tr_need(dev, w, n, sizeof(float), "mul_acc", "w")) ||
        (rc = tr_need(dev, y, n, sizeof(float), "mul_acc", "y")))
        return rc;
    mul_acc_kernel<<<tr_blocks(n, TR_THREADS), TR_THREADS, 0, dev->stream>>>(n, (const float *)cu_at(x),
                                                                            (const float *)cu_at(w),
                                                                            (float *)cu_at(y));
    CU_LAUNCHED(dev, "mul_acc kernel");
    return 0;
}
