/* Q8_0 weights (api/dtype.h: int8 values row-major, then an fp16 scale a block of 32): the
 * decoding GEMV reading them in place, the embedding's rows, and the dequantization to f32 that
 * a GEMM of more rows runs on. The GEMV is the 16-bit one's shape: a warp streams a weight row
 * with 16-byte loads (16 int8, half a block: lanes 2j and 2j + 1 share block j's scale), x in
 * fp32, fp32 sums. Decoding reads about half the bytes of bf16. */
#include <cuda_fp16.h>

#include "cuda_internal.h"

#define Q8_WARPS 8   /* rows of W a block (a warp each) */
#define Q8_MAX_M 8   /* rows of x */
constexpr int q8_unroll = 4; /* 16-byte loads of W in flight a lane past the first Q8_PRE */
#define Q8_PRE 8 /* 16-byte loads of W a lane issued before the PDL wait */

/* Signed byte j of w as a float, exactly: w ^ 0x80808080 makes the bytes b + 128 in 0..255;
 * PRMT puts one under the exponent of 2^23 (0x4B000000), and 2^23 + b + 128 - (2^23 + 128) = b.
 * A PRMT and an FADD (full rate) instead of a shift and an I2F (quarter rate on sm_90). */
__device__ __forceinline__ float q8_byte(unsigned biased, int j)
{
    return __int_as_float((int)__byte_perm(biased, 0x4B000000u, 0x7540u + (unsigned)j)) - 8388736.0f;
}

/* x[0..16) from 16-byte aligned floats into xv; under NORM scaled by nw, with x . x added to ss */
template <bool NORM> __device__ __forceinline__ void load_x16(const float *x, const float *nw, float (&xv)[16], float &ss)
{
#pragma unroll
    for (int v = 0; v < 4; v++) {
        float4 t = *(const float4 *)(x + 4 * v);
        if (NORM) {
            const float4 g = *(const float4 *)(nw + 4 * v);
            ss += t.x * t.x + t.y * t.y + t.z * t.z + t.w * t.w;
            t.x *= g.x; t.y *= g.y; t.z *= g.z; t.w *= g.w;
        }
        xv[4 * v] = t.x; xv[4 * v + 1] = t.y; xv[4 * v + 2] = t.z; xv[4 * v + 3] = t.w;
    }
}

/* q[0..16) . xv[0..16): a word's four products summed, then the words in order */
__device__ __forceinline__ float q8_dot16(const int4 q, const float (&xv)[16])
{
    const unsigned words[4] = {(unsigned)q.x ^ 0x80808080u, (unsigned)q.y ^ 0x80808080u, (unsigned)q.z ^ 0x80808080u,
                               (unsigned)q.w ^ 0x80808080u};
    float s = 0.0f;
#pragma unroll
    for (int v = 0; v < 4; v++) {
        const unsigned w = words[v];
        s += q8_byte(w, 0) * xv[4 * v] + q8_byte(w, 1) * xv[4 * v + 1] + q8_byte(w, 2) * xv[4 * v + 2] +
             q8_byte(w, 3) * xv[4 * v + 3];
    }
    return s;
}

/* q[0..16) * x[0..16) with x from 16-byte aligned floats; under NORM x is scaled by nw and
 * x . x added to ss */
template <bool NORM>
__device__ __forceinline__ float dot16(const int4 q, const float *x, const float *nw, float &ss)
{
    float xv[16];
    load_x16<NORM>(x, nw, xv, ss);
    return q8_dot16(q, xv);
}

/* y[i, row] (+)= sum_k x[i, k] W[row, k] (+ bias) for i < m <= M; k a multiple of 32, W's rows and
 * x's 16-byte aligned. NORM: x[i] RMS-normalized and scaled by nw first (1/rms taken out of the
 * sum, as the 16-bit GEMV does). */
template <int M, bool NORM>
__global__ void __launch_bounds__(Q8_WARPS * 32) gemv_q8_kernel(int m, int n, int k, const float *x, int lda,
                                                                const signed char *w, const __half *scales,
                                                                const float *bias, float *y, int ldy, const float *nw,
                                                                float eps, int accum)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row = blockIdx.x * Q8_WARPS + warp;
    const int rr = min(row, n - 1); /* past n: a valid row, loaded and not used */
    const signed char *wr = w + (size_t)rr * k;
    const __half *sr = scales + (size_t)rr * (k / 32);
    constexpr int step = 32 * 16;
    /* The first Q8_PRE loads of the row (all of it up to k = 4096) and their scales before the
     * wait: the weights do not depend on the kernel before, so their trip from HBM overlaps
     * its end. ncu on the 1.4b had these kernels at 750-990 GB/s when they loaded after it. */
    int4 q[Q8_PRE];
    float d[Q8_PRE];
#pragma unroll
    for (int u = 0; u < Q8_PRE; u++) {
        const int k0 = lane * 16 + u * step;
        q[u] = k0 < k ? __ldg((const int4 *)(wr + k0)) : make_int4(0, 0, 0, 0);
        d[u] = k0 < k ? __half2float(sr[k0 / 32]) : 0.0f;
    }
    griddep_wait();
    if (row >= n) return;
    float acc[M], ss[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = ss[i] = 0.0f;
#pragma unroll
    for (int u = 0; u < Q8_PRE; u++) {
        const int k0 = lane * 16 + u * step;
        if (k0 >= k) break;
#pragma unroll
        for (int i = 0; i < M; i++)
            if (i < m) acc[i] += d[u] * dot16<NORM>(q[u], x + (size_t)i * lda + k0, nw + k0, ss[i]);
    }
#pragma unroll q8_unroll
    for (int k0 = lane * 16 + Q8_PRE * step; k0 < k; k0 += step) {
        const int4 qv = __ldg((const int4 *)(wr + k0));
        const float dv = __half2float(sr[k0 / 32]);
#pragma unroll
        for (int i = 0; i < M; i++)
            if (i < m) acc[i] += dv * dot16<NORM>(qv, x + (size_t)i * lda + k0, nw + k0, ss[i]);
    }
#pragma unroll
    for (int i = 0; i < M; i++) {
        if (i >= m) break;
        float v = warp_sum(acc[i]);
        if (NORM) v *= rsqrtf(warp_sum(ss[i]) / (float)k + eps);
        if (lane == 0) {
            float *yp = y + (size_t)i * ldy + row;
            *yp = (accum ? *yp : 0.0f) + v + (bias ? bias[row] : 0.0f);
        }
    }
}

/* One row of x (batch-1 decoding) against Q8_RW rows of W a warp, their loads issued
 * together, x (normalized under NORM) read and scaled once for the Q8_RW of them. A row of the
 * 1.4b's in_proj is 2 KB of int8, 4 loads a lane: one row a warp left too few bytes in flight
 * (ncu: 663 GB/s for in_proj, where the 16-bit pair kernel streams 2.4 TB/s). */
#define Q8_RW 4
template <bool NORM>
__global__ void __launch_bounds__(Q8_WARPS * 32) gemv_q8_rows_kernel(int n, int k, const float *x,
                                                                     const signed char *w, const __half *scales,
                                                                     const float *bias, float *y, const float *nw,
                                                                     float eps, int accum)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = (blockIdx.x * Q8_WARPS + warp) * Q8_RW;
    const signed char *wr[Q8_RW];
    const __half *sr[Q8_RW];
#pragma unroll
    for (int r = 0; r < Q8_RW; r++) {
        const int rr = min(row0 + r, n - 1); /* past n: a valid row, not written */
        wr[r] = w + (size_t)rr * k;
        sr[r] = scales + (size_t)rr * (k / 32);
    }
    griddep_wait();
    if (row0 >= n) return;
    float acc[Q8_RW], ss = 0.0f;
#pragma unroll
    for (int r = 0; r < Q8_RW; r++) acc[r] = 0.0f;
#pragma unroll 2
    for (int k0 = lane * 16; k0 < k; k0 += 32 * 16) {
        int4 q[Q8_RW];
        float d[Q8_RW];
#pragma unroll
        for (int r = 0; r < Q8_RW; r++) {
            q[r] = __ldg((const int4 *)(wr[r] + k0));
            d[r] = __half2float(sr[r][k0 / 32]);
        }
        float xv[16];
        load_x16<NORM>(x + k0, nw + k0, xv, ss);
#pragma unroll
        for (int r = 0; r < Q8_RW; r++) acc[r] += d[r] * q8_dot16(q[r], xv);
    }
    const float qs = NORM ? warp_sum(ss) : 0.0f;
#pragma unroll
    for (int r = 0; r < Q8_RW; r++) {
        float v = warp_sum(acc[r]);
        if (NORM) v *= rsqrtf(qs / (float)k + eps);
        if (lane == 0 && row0 + r < n) {
            float *yp = y + row0 + r;
            *yp = (accum ? *yp : 0.0f) + v + (bias ? bias[row0 + r] : 0.0f);
        }
    }
}

template <int M>
static void launch_q8(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                      const float *bias, float *y, size_t ldy, const float *nw, float eps, int accum)
{
    const dim3 grid((unsigned)((n + Q8_WARPS - 1) / Q8_WARPS));
    const signed char *q = (const signed char *)w;
    const __half *s = (const __half *)((const char *)w + mb_q8_scales_offset(n, k));
    /* Q8_RW rows a warp where that still gives every SM a block */
    const size_t rw_blocks = (n + Q8_WARPS * Q8_RW - 1) / (Q8_WARPS * Q8_RW);
    if (M == 1 && rw_blocks >= (size_t)dev->sm_count) {
        if (nw)
            launch_pdl(dev, gemv_q8_rows_kernel<true>, dim3((unsigned)rw_blocks), dim3(Q8_WARPS * 32), (int)n, (int)k,
                       x, q, s, bias, y, nw, eps, accum);
        else
            launch_pdl(dev, gemv_q8_rows_kernel<false>, dim3((unsigned)rw_blocks), dim3(Q8_WARPS * 32), (int)n,
                       (int)k, x, q, s, bias, y, nw, eps, accum);
        return;
    }
    if (nw)
        launch_pdl(dev, gemv_q8_kernel<M, true>, grid, dim3(Q8_WARPS * 32), (int)m, (int)n, (int)k, x, (int)lda, q, s,
                   bias, y, (int)ldy, nw, eps, accum);
    else
        launch_pdl(dev, gemv_q8_kernel<M, false>, grid, dim3(Q8_WARPS * 32), (int)m, (int)n, (int)k, x, (int)lda, q, s,
                   bias, y, (int)ldy, nw, eps, accum);
}

bool cuda_gemv_q8_takes(size_t m, size_t k, const void *x, size_t lda, const void *w, const void *nw)
{
    return m >= 1 && m <= Q8_MAX_M && k % 32 == 0 && lda % 4 == 0 && ((uintptr_t)x % 16) == 0 &&
           ((uintptr_t)w % 16) == 0 && ((uintptr_t)nw % 16) == 0;
}

int cuda_gemv_q8(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                 const float *bias, float *y, size_t ldy, const float *nw, float eps, int accum)
{
    if (!cuda_gemv_q8_takes(m, k, x, lda, w, nw))
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED,
                         "Q8_0 gemv: %zu rows of x (1..%d), k = %zu (a multiple of 32), lda %zu (a multiple of 4), "
                         "x, W and the norm weights 16-byte aligned", m, Q8_MAX_M, k, lda);
    if (m == 1) launch_q8<1>(dev, m, n, k, x, lda, w, bias, y, ldy, nw, eps, accum);
    else if (m <= 2) launch_q8<2>(dev, m, n, k, x, lda, w, bias, y, ldy, nw, eps, accum);
    else if (m <= 4) launch_q8<4>(dev, m, n, k, x, lda, w, bias, y, ldy, nw, eps, accum);
    else launch_q8<Q8_MAX_M>(dev, m, n, k, x, lda, w, bias, y, ldy, nw, eps, accum);
    CU_LAUNCHED(dev, "Q8_0 gemv kernel");
    return 0;
}

/* W (n, k) Q8_0 -> f32 (n, k): a thread an element */
__global__ void dequant_q8_kernel(const signed char *q, const __half *scales, size_t n, size_t k, float *dst)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n * k; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = (float)q[i] * __half2float(scales[i / 32]);
}

int cuda_dequant_q8(mb_device *dev, const void *w, size_t n, size_t k, float *dst)
{
    const unsigned blocks = (unsigned)(dev->sm_count * 8);
    dequant_q8_kernel<<<blocks, 256, 0, dev->stream>>>((const signed char *)w,
                                                      (const __half *)((const char *)w + mb_q8_scales_offset(n, k)),
                                                      n, k, dst);
    CU_LAUNCHED(dev, "Q8_0 dequantization kernel");
    return 0;
}

__global__ void embed_q8_kernel(const int32_t *ids, const signed char *q, const __half *scales, size_t dim, float *out)
{
    griddep_wait();
    const size_t r = blockIdx.x;
    const size_t row = (size_t)ids[r] * dim;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x)
        out[r * dim + i] = (float)q[row + i] * __half2float(scales[(row + i) / 32]);
}

int cuda_embed_q8(mb_device *dev, const int32_t *ids, size_t rows, const void *table, size_t vocab, size_t dim,
                  float *out)
{
    launch_pdl(dev, embed_q8_kernel, dim3((unsigned)rows), dim3(256), ids, (const signed char *)table,
               (const __half *)((const char *)table + mb_q8_scales_offset(vocab, dim)), dim, out);
    CU_LAUNCHED(dev, "Q8_0 embedding kernel");
    return 0;
}
