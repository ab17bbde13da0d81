/* Q8_0 weights (api/dtype.h: int8 values row-major, then an fp16 scale a block of 32): the
 * decoding GEMV reading them in place, the embedding's rows, and the dequantization to f32 that
 * a GEMM of more rows runs on. The GEMV is the 16-bit one's shape: a warp streams a weight row
 * with 16-byte loads (16 int8, half a block: lanes 2j and 2j + 1 share block j's scale), x in
 * fp32, fp32 sums; q8_unroll loads in flight a lane. Decoding reads about half the bytes of bf16. */
#include <cuda_fp16.h>

#include "cuda_internal.h"

#define Q8_WARPS 8   /* rows of W a block (a warp each) */
#define Q8_MAX_M 8   /* rows of x */
constexpr int q8_unroll = 4; /* 16-byte loads of W in flight a lane (the loop unrolled) */

/* q[0..16) * x[0..16) with x from 16-byte aligned floats; under NORM x is scaled by nw and
 * x . x added to ss */
template <bool NORM>
__device__ __forceinline__ float dot16(const int4 q, const float *x, const float *nw, float &ss)
{
    const int words[4] = {q.x, q.y, q.z, q.w};
    float s = 0.0f;
#pragma unroll
    for (int v = 0; v < 4; v++) {
        float4 xv = *(const float4 *)(x + 4 * v);
        if (NORM) {
            const float4 g = *(const float4 *)(nw + 4 * v);
            ss += xv.x * xv.x + xv.y * xv.y + xv.z * xv.z + xv.w * xv.w;
            xv.x *= g.x; xv.y *= g.y; xv.z *= g.z; xv.w *= g.w;
        }
        const int w = words[v];
        s += (float)(signed char)(w & 0xff) * xv.x + (float)(signed char)((w >> 8) & 0xff) * xv.y +
             (float)(signed char)((w >> 16) & 0xff) * xv.z + (float)(signed char)(w >> 24) * xv.w;
    }
    return s;
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
    griddep_wait();
    if (row >= n) return;
    const signed char *wr = w + (size_t)row * k;
    const __half *sr = scales + (size_t)row * (k / 32);
    float acc[M], ss[M];
#pragma unroll
    for (int i = 0; i < M; i++) acc[i] = ss[i] = 0.0f;
    const int step = 32 * 16;
#pragma unroll q8_unroll
    for (int k0 = lane * 16; k0 < k; k0 += step) {
        const int4 q = __ldg((const int4 *)(wr + k0));
        const float d = __half2float(sr[k0 / 32]);
#pragma unroll
        for (int i = 0; i < M; i++)
            if (i < m) acc[i] += d * dot16<NORM>(q, x + (size_t)i * lda + k0, nw + k0, ss[i]);
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

template <int M>
static void launch_q8(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                      const float *bias, float *y, size_t ldy, const float *nw, float eps, int accum)
{
    const dim3 grid((unsigned)((n + Q8_WARPS - 1) / Q8_WARPS));
    const signed char *q = (const signed char *)w;
    const __half *s = (const __half *)((const char *)w + mb_q8_scales_offset(n, k));
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
