/* y = x W^T + b. Up to GEMV_MAX_M rows (decoding): one warp per output feature streams its
 * weight row once with 16-byte loads, in the weights' stored dtype, for all rows at once; the
 * arithmetic is f32. More rows (batched decoding, prefill): 16-bit weights on the tensor cores
 * in their own dtype (cuda_gemm16.cu), unless fp32 arithmetic is asked for (compute_f32): then
 * they are widened to f32 first for the 3xTF32 kernel or cuBLAS SGEMM, as fp32 weights go. */
#include "cuda_internal.h"

#define GEMV_MAX_M 8
#define GEMV_WARPS 8
#define GEMV_PREFETCH_MAX ((size_t)16 << 20)

template <typename T> struct wvec;
/* 16 bytes of weights as 4 or 8 floats */
template <> struct wvec<float> {
    static constexpr int n = 4;
    static __device__ __forceinline__ void load(const float *p, float *o)
    {
        const float4 v = __ldg((const float4 *)p);
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    }
};
template <> struct wvec<__half> {
    static constexpr int n = 8;
    static __device__ __forceinline__ void load(const __half *p, float *o)
    {
        const uint4 v = __ldg((const uint4 *)p);
        const __half2 *h = (const __half2 *)&v;
        for (int i = 0; i < 4; i++) {
            const float2 f = __half22float2(h[i]);
            o[2 * i] = f.x; o[2 * i + 1] = f.y;
        }
    }
};
template <> struct wvec<__nv_bfloat16> {
    static constexpr int n = 8;
    static __device__ __forceinline__ void load(const __nv_bfloat16 *p, float *o)
    {
        const uint4 v = __ldg((const uint4 *)p);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
        for (int i = 0; i < 4; i++) {
            const float2 f = __bfloat1622float2(h[i]);
            o[2 * i] = f.x; o[2 * i + 1] = f.y;
        }
    }
};

/* 4 consecutive x values of row i: one 16-byte load when aligned. */
template <bool XVEC> __device__ __forceinline__ void load_x4(const float *p, float *o)
{
    if (XVEC) {
        const float4 v = *(const float4 *)p;
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    } else {
        o[0] = p[0]; o[1] = p[1]; o[2] = p[2]; o[3] = p[3];
    }
}

/* 4 values of x at p, scaled by the norm weights g (NORM), their squares added to ss */
template <bool XVEC, bool NORM>
__device__ __forceinline__ void load_x4_normed(const float *p, const float *g, float *xv, float &ss)
{
    load_x4<XVEC>(p, xv);
    if (NORM) {
        const float4 w = *(const float4 *)g;
        ss += xv[0] * xv[0] + xv[1] * xv[1] + xv[2] * xv[2] + xv[3] * xv[3];
        xv[0] *= w.x; xv[1] *= w.y; xv[2] *= w.z; xv[3] *= w.w;
    }
}

/* y[row] (+)= v + bias[row], v scaled by 1/rms first under NORM (q: the sum of x^2 over k) */
template <bool NORM>
__device__ __forceinline__ void gemv_store(float *y, int row, float v, float q, int k, float eps, const float *bias,
                                           int accum)
{
    if (NORM) v *= rsqrtf(q / (float)k + eps);
    y[row] = (accum ? y[row] : 0.0f) + v + (bias ? bias[row] : 0.0f);
}

/* y[i, row] = sum_k x[i, k] W[row, k] for i < m <= M. A warp streams one weight row with
 * 16-byte loads; SPLIT: the block's warps share one row, each a slice of k, when there are too
 * few rows to fill the GPU (x_proj), and the block adds the slices. VECTOR: W rows are 16-byte
 * aligned and k is a multiple of the vector width; XVEC: x rows are too. M is a compile-time
 * bound so that a one-row GEMV (decoding) keeps one accumulator, not eight: fewer registers,
 * more warps per SM, more loads in flight.
 * NORM (decoding, aligned rows only): x[i] is RMS-normalized and scaled by nw first, which saves
 * the separate add + RMSNorm launch of every layer. 1/rms(x[i]) is one number per row of x, so
 * it comes out of the sum: a warp accumulates W . (x * nw) and x . x in the same pass (a warp
 * sees all of x, in SPLIT mode the block does) and scales at the end, with no pass over x and
 * no barrier before the weights are read (2.5% faster decoding of the 130m than a norm first).
 * accum: y += instead of y = (the residual add, folded into out_proj).
 * U > 0 (SPLIT, one row of x, every warp's slice exactly U 16-byte loads a lane): the U loads
 * are issued together. The unrolled loop takes a short slice (the 1.4b's out_proj: 4 loads)
 * one round trip at a time, through its remainder; A/B on the H100: 1.4b 432 -> 453 tok/s,
 * 2.8b 222 -> 226. */
template <typename T, int M, bool VECTOR, bool XVEC, bool SPLIT, bool NORM, int U = 0>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(int m, int n, int k, const float *x, int lda,
                                                               const T *w, const float *bias, float *y, int ldy,
                                                               const float *nw, float eps, int accum)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = SPLIT ? blockIdx.x : blockIdx.x * GEMV_WARPS + warp;
    /* only a matrix that fits in L2 with room to spare: on bigger ones (1.4b, 2.8b) the extra
     * requests measured 8% slower */
    if (row < n && (size_t)n * k * sizeof(T) <= GEMV_PREFETCH_MAX) {
        if (SPLIT) prefetch_l2(w + (size_t)row * k, (size_t)k * sizeof(T), threadIdx.x, blockDim.x);
        else prefetch_l2(w + (size_t)row * k, (size_t)k * sizeof(T), lane, 32);
    }
    griddep_wait();
    if (row >= n) return;
    const T *wr = w + (size_t)row * k;
    float acc[M], ss[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = ss[i] = 0.0f;
    /* the k range of this warp: all of it, or its slice in SPLIT mode */
    constexpr int V = VECTOR ? wvec<T>::n : 1;
    const int step = 32 * V * (SPLIT ? GEMV_WARPS : 1);
    const int first = (SPLIT ? warp * 32 * V : 0) + lane * V;
    static_assert(U == 0 || (M == 1 && VECTOR && SPLIT), "U: split one-row GEMVs only");
    if (U > 0) {
        float wf[U > 0 ? U : 1][V];
#pragma unroll
        for (int u = 0; u < U; u++) wvec<T>::load(wr + first + u * step, wf[u]);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int k0 = first + u * step;
#pragma unroll
            for (int j = 0; j < V; j += 4) {
                float xv[4];
                load_x4_normed<XVEC, NORM>(x + k0 + j, nw + k0 + j, xv, ss[0]);
                acc[0] += wf[u][j] * xv[0] + wf[u][j + 1] * xv[1] + wf[u][j + 2] * xv[2] + wf[u][j + 3] * xv[3];
            }
        }
    } else if (VECTOR) {
#pragma unroll(M <= 2 ? 8 : 4)
        for (int k0 = first; k0 < k; k0 += step) {
            float wf[V];
            wvec<T>::load(wr + k0, wf);
#pragma unroll
            for (int i = 0; i < M; i++) {
                if (i < m) {
                    const float *xr = x + (size_t)i * lda + k0;
#pragma unroll
                    for (int j = 0; j < V; j += 4) {
                        float xv[4];
                        load_x4_normed<XVEC, NORM>(xr + j, nw + k0 + j, xv, ss[i]);
                        acc[i] += wf[j] * xv[0] + wf[j + 1] * xv[1] + wf[j + 2] * xv[2] + wf[j + 3] * xv[3];
                    }
                }
            }
        }
    } else {
        for (int kk = first; kk < k; kk += step) {
            const float wf = to_f32(wr[kk]);
#pragma unroll
            for (int i = 0; i < M; i++)
                if (i < m) acc[i] += wf * x[(size_t)i * lda + kk];
        }
    }
    __shared__ float part[GEMV_WARPS][M], part_ss[GEMV_WARPS][M];
#pragma unroll
    for (int i = 0; i < M; i++) {
        if (i >= m) break;
        const float v = warp_sum(acc[i]);
        const float q = NORM ? warp_sum(ss[i]) : 0.0f;
        if (SPLIT) {
            if (lane == 0) {
                part[warp][i] = v;
                part_ss[warp][i] = q;
            }
        } else if (lane == 0) {
            gemv_store<NORM>(y + (size_t)i * ldy, row, v, q, k, eps, bias, accum);
        }
    }
    if (SPLIT) {
        __syncthreads();
        if (threadIdx.x < (unsigned)m) {
            float v = 0.0f, q = 0.0f;
            for (int p = 0; p < GEMV_WARPS; p++) {
                v += part[p][threadIdx.x];
                q += part_ss[p][threadIdx.x];
            }
            gemv_store<NORM>(y + (size_t)threadIdx.x * ldy, row, v, q, k, eps, bias, accum);
        }
    }
}

/* One row of x (decoding at batch 1), aligned rows, enough rows of W to fill the GPU: each
 * warp takes two rows of W, their loads issued together: more bytes in flight a warp, and half
 * the blocks, so that the 1.4b's in_proj fits in about one wave. The launch bounds ask for one
 * block an SM, which lets ptxas keep 64-80 registers (the default chose 48: 2-3% slower).
 * H100 A/B, batch 1: 130m 2558 -> 2667 tok/s, 1.4b 408 -> 431, 2.8b 215 -> 219; four rows a
 * warp, or eight loads in flight with the tail predicated, measured slower. */
#define GEMV_PAIR 2
template <typename T, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32, 1) gemv_pair_kernel(int n, int k, const float *x, const T *w,
                                                                    const float *bias, float *y, const float *nw,
                                                                    float eps, int accum)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_PAIR;
    griddep_wait();
    if (row0 >= n) return;
    constexpr int V = wvec<T>::n;
    float acc[GEMV_PAIR], ss = 0.0f;
    const T *wr[GEMV_PAIR];
#pragma unroll
    for (int r = 0; r < GEMV_PAIR; r++) {
        acc[r] = 0.0f;
        wr[r] = w + (size_t)min(row0 + r, n - 1) * k; /* past n: a valid row, not written */
    }
#pragma unroll 4
    for (int k0 = lane * V; k0 < k; k0 += 32 * V) {
        float wf[GEMV_PAIR][V];
#pragma unroll
        for (int r = 0; r < GEMV_PAIR; r++) wvec<T>::load(wr[r] + k0, wf[r]);
#pragma unroll
        for (int j = 0; j < V; j += 4) {
            float xv[4];
            load_x4_normed<true, NORM>(x + k0 + j, nw + k0 + j, xv, ss);
#pragma unroll
            for (int r = 0; r < GEMV_PAIR; r++)
                acc[r] += wf[r][j] * xv[0] + wf[r][j + 1] * xv[1] + wf[r][j + 2] * xv[2] + wf[r][j + 3] * xv[3];
        }
    }
    const float q = NORM ? warp_sum(ss) : 0.0f;
#pragma unroll
    for (int r = 0; r < GEMV_PAIR; r++) {
        const float v = warp_sum(acc[r]);
        if (lane == 0 && row0 + r < n) gemv_store<NORM>(y, row0 + r, v, q, k, eps, bias, accum);
    }
}

/* the fused parts of a decoding GEMV: nw NULL: no norm; accum: y += */
struct gemv_fuse {
    const float *nw;
    float eps;
    int accum;
};

template <typename T, int M, bool VECTOR, bool XVEC, bool NORM>
static void launch_gemv(mb_device *dev, bool split, size_t m, size_t n, size_t k, const float *x, size_t lda,
                        const void *w, const float *bias, float *y, size_t ldy, const gemv_fuse &f)
{
    const dim3 grid(split ? (unsigned)n : (unsigned)((n + GEMV_WARPS - 1) / GEMV_WARPS));
    if constexpr (M == 1 && VECTOR) {
        /* every warp's slice a whole number of 16-byte loads a lane: U of them */
        const size_t per = (size_t)GEMV_WARPS * 32 * wvec<T>::n, u = k % per == 0 ? k / per : 0;
        if (split && u >= 2 && u <= 5) {
            decltype(&gemv_kernel<T, M, VECTOR, XVEC, true, NORM>) const kernels[4] = {
                gemv_kernel<T, M, VECTOR, XVEC, true, NORM, 2>, gemv_kernel<T, M, VECTOR, XVEC, true, NORM, 3>,
                gemv_kernel<T, M, VECTOR, XVEC, true, NORM, 4>, gemv_kernel<T, M, VECTOR, XVEC, true, NORM, 5>};
            launch_pdl(dev, kernels[u - 2], grid, dim3(GEMV_WARPS * 32), (int)m, (int)n, (int)k, x, (int)lda,
                       (const T *)w, bias, y, (int)ldy, f.nw, f.eps, f.accum);
            return;
        }
    }
    if (split)
        launch_pdl(dev, gemv_kernel<T, M, VECTOR, XVEC, true, NORM>, grid, dim3(GEMV_WARPS * 32), (int)m, (int)n,
                   (int)k, x, (int)lda, (const T *)w, bias, y, (int)ldy, f.nw, f.eps, f.accum);
    else
        launch_pdl(dev, gemv_kernel<T, M, VECTOR, XVEC, false, NORM>, grid, dim3(GEMV_WARPS * 32), (int)m, (int)n,
                   (int)k, x, (int)lda, (const T *)w, bias, y, (int)ldy, f.nw, f.eps, f.accum);
}

/* Returns false (nothing launched) for a norm on rows that are not 16-byte aligned. */
template <typename T, int M>
static bool gemv_m(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                   const float *bias, float *y, size_t ldy, const gemv_fuse &f)
{
    constexpr int V = wvec<T>::n;
    const bool vector = k % V == 0 && ((uintptr_t)w % 16) == 0;
    const bool xvec = vector && lda % 4 == 0 && ((uintptr_t)x % 16) == 0;
    /* fewer rows than four warps per SM: share rows among a block's warps */
    const bool split = n < (size_t)dev->sm_count * 4 * GEMV_WARPS && k >= (size_t)(GEMV_WARPS * 32 * V);
    const bool nw_ok = !f.nw || ((uintptr_t)f.nw % 16) == 0; /* the norm weights' float4 loads */
    if (M == 1 && !split && xvec && nw_ok) {
        const dim3 grid((unsigned)((n + GEMV_WARPS * GEMV_PAIR - 1) / (GEMV_WARPS * GEMV_PAIR)));
        if (f.nw)
            launch_pdl(dev, gemv_pair_kernel<T, true>, grid, dim3(GEMV_WARPS * 32), (int)n, (int)k, x, (const T *)w,
                       bias, y, f.nw, f.eps, f.accum);
        else
            launch_pdl(dev, gemv_pair_kernel<T, false>, grid, dim3(GEMV_WARPS * 32), (int)n, (int)k, x, (const T *)w,
                       bias, y, f.nw, f.eps, f.accum);
        return true;
    }
    if (f.nw) {
        if (!xvec || !nw_ok) return false;
        launch_gemv<T, M, true, true, true>(dev, split, m, n, k, x, lda, w, bias, y, ldy, f);
    } else if (xvec) {
        launch_gemv<T, M, true, true, false>(dev, split, m, n, k, x, lda, w, bias, y, ldy, f);
    } else if (vector) {
        launch_gemv<T, M, true, false, false>(dev, split, m, n, k, x, lda, w, bias, y, ldy, f);
    } else {
        launch_gemv<T, M, false, false, false>(dev, split, m, n, k, x, lda, w, bias, y, ldy, f);
    }
    return true;
}

template <typename T>
static int gemv(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                const float *bias, float *y, size_t ldy, const gemv_fuse &f)
{
    bool ok;
    if (m == 1) ok = gemv_m<T, 1>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
    else if (m <= 2) ok = gemv_m<T, 2>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
    else if (m <= 4) ok = gemv_m<T, 4>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
    else ok = gemv_m<T, GEMV_MAX_M>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
    if (!ok) return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "gemv with a norm: rows not 16-byte aligned");
    CU_LAUNCHED(dev, "gemv kernel");
    return 0;
}

static int gemv_dtype(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                      mamba_dtype_t wdt, const float *bias, float *y, size_t ldy, const gemv_fuse &f)
{
    if (wdt == MAMBA_Q8) return cuda_gemv_q8(dev, m, n, k, x, lda, w, bias, y, ldy, f.nw, f.eps, f.accum);
    if (wdt == MAMBA_F16) return gemv<__half>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
    if (wdt == MAMBA_BF16) return gemv<__nv_bfloat16>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
    return gemv<float>(dev, m, n, k, x, lda, w, bias, y, ldy, f);
}

size_t cuda_gemv_rows(const mb_device *dev, mamba_dtype_t wdt)
{
    return (wdt == MAMBA_F16 || wdt == MAMBA_BF16) && !dev->compute_f32 ? (size_t)dev->gemv16_rows : GEMV_MAX_M;
}

bool cuda_gemv_supports(const mb_device *dev, const mb_fused_query *q)
{
    /* with a norm the rows are read vectorized: k a multiple of a 16-byte load of W (the
     * buffers' 256-byte alignment gives the rest) */
    const size_t vec = q->wdtype == MAMBA_F32 ? 4 : q->wdtype == MAMBA_Q8 ? 32 : 8;
    return q->rows >= 1 && q->rows <= cuda_gemv_rows(dev, q->wdtype) && q->n <= 0x7fffffff && q->k <= 0x7fffffff &&
           mb_gemm_dtype_ok(q->wdtype, q->k) && (!q->norm || q->k % vec == 0);
}

bool cuda_gemm16_takes(const mb_device *dev, size_t rows, mamba_dtype_t wdt)
{
    return rows > cuda_gemv_rows(dev, wdt) && (wdt == MAMBA_F16 || wdt == MAMBA_BF16) && !dev->compute_f32;
}

bool cuda_gemm16_used(const mb_device *dev, const mb_fused_query *q) { return cuda_gemm16_takes(dev, q->rows, q->wdtype); }

int cuda_gemv_fused(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr norm_w, float eps,
                    mb_ptr w, mamba_dtype_t wdt, mb_ptr bias, mb_ptr y, size_t ldy, int accumulate)
{
    if (m < 1 || m > GEMV_MAX_M || n > 0x7fffffff || k > 0x7fffffff ||
        !mb_gemm_dtype_ok(wdt, k))
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "fused gemv: %zu rows (1..%d), %zu x %zu, dtype %d", m, GEMV_MAX_M,
                         n, k, (int)wdt);
    const gemv_fuse f = {(const float *)cu_at(norm_w), eps, accumulate};
    return gemv_dtype(dev, m, n, k, (const float *)cu_at(x), lda, cu_at(w), wdt, (const float *)cu_at(bias),
                      (float *)cu_at(y), ldy, f);
}

template <typename T> __global__ void widen_kernel(const T *src, size_t n, float *dst)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = to_f32(src[i]);
}

__global__ void bias_kernel(float *y, size_t ldy, const float *bias, size_t n)
{
    const size_t row = blockIdx.y;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x)
        y[row * ldy + j] += bias[j];
}

int cuda_gemm(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x_p, size_t lda, mb_ptr w_p, mamba_dtype_t wdt,
              mb_ptr bias_p, mb_ptr y_p, size_t ldy)
{
    const float *x = (const float *)cu_at(x_p), *bias = (const float *)cu_at(bias_p);
    float *y = (float *)cu_at(y_p);
    const void *w = cu_at(w_p);
    if (!mb_gemm_dtype_ok(wdt, k))
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "gemm: weight dtype %s with k = %zu: expected F32, F16, BF16 or "
                         "Q8_0 with k a multiple of 32", mb_dtype_name(wdt), k);
    if (n > 0x7fffffff || k > 0x7fffffff || m > 0x7fffffff)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "gemm: %zu x %zu x %zu exceeds 32-bit sizes", m, n, k);
    if (m <= cuda_gemv_rows(dev, wdt))
        return gemv_dtype(dev, m, n, k, x, lda, w, wdt, bias, y, ldy, gemv_fuse{nullptr, 0.0f, 0});
    /* Q8_0: dequantized to f32 and multiplied in fp32 (as compute f32 does 16-bit weights) */
    if (wdt != MAMBA_F32 && wdt != MAMBA_Q8 && !dev->compute_f32)
        return cuda_gemm16(dev, m, n, k, x, lda, w, wdt, bias, y, ldy);
    /* scratch: 16-bit or 8-bit weights widened to f32, then the tensor-core kernel's k-split sums */
    const bool tc = cuda_gemm_3xtf32_fits(dev, m, n, k, x, lda, ldy) && (wdt != MAMBA_F32 || ((uintptr_t)w & 15) == 0);
    const size_t widened = wdt != MAMBA_F32 ? (n * k * sizeof(float) + 255) / 256 * 256 : 0;
    int splits = tc ? cuda_gemm_3xtf32_splits(dev, m, n, k) : 1;
    if (splits > 1 && !cuda_scratch_ready(dev, widened + (size_t)splits * m * n * sizeof(float))) splits = 1;
    const size_t scratch = widened + (splits > 1 ? (size_t)splits * m * n * sizeof(float) : 0);
    void *s = nullptr;
    if (scratch) {
        int rc = cuda_scratch(dev, scratch, &s);
        if (rc) return rc;
    }
    const float *wf = (const float *)w;
    if (wdt != MAMBA_F32) {
        const unsigned blocks = (unsigned)(dev->sm_count * 8);
        if (wdt == MAMBA_Q8) {
            int rc = cuda_dequant_q8(dev, w, n, k, (float *)s);
            if (rc) return rc;
        } else if (wdt == MAMBA_F16) {
            widen_kernel<__half><<<blocks, 256, 0, dev->stream>>>((const __half *)w, n * k, (float *)s);
        } else {
            widen_kernel<__nv_bfloat16><<<blocks, 256, 0, dev->stream>>>((const __nv_bfloat16 *)w, n * k, (float *)s);
        }
        CU_LAUNCHED(dev, "weight widening kernel");
        wf = (const float *)s;
    }
    if (tc)
        return cuda_gemm_3xtf32(dev, m, n, k, x, lda, wf, bias, y, ldy, splits,
                                splits > 1 ? (float *)((char *)s + widened) : nullptr);
    /* row-major y (m, n) = x (m, k) W^T is column-major y' (n, m) = W'^T (n, k) x' (k, m) */
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasSgemm(dev->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, wf, (int)k, x,
                                    (int)lda, &zero, y, (int)ldy);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cuda_fail(dev, MAMBA_ERR_BACKEND, "cublasSgemm (%zu x %zu x %zu) failed: status %d", m, n, k, (int)st);
    if (bias) {
        bias_kernel<<<dim3((unsigned)((n + 255) / 256), (unsigned)m), 256, 0, dev->stream>>>(y, ldy, bias, n);
        CU_LAUNCHED(dev, "bias kernel");
    }
    return 0;
}
