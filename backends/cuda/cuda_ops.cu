/* CUDA ops: embedding gather, fused add + RMSNorm, causal conv1d + bias + SiLU with its
 * state, and the read-bandwidth probe. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_internal.h"

__device__ __forceinline__ float load_as_f32(const void *p, size_t i, mamba_dtype_t dt)
{
    if (dt == MAMBA_F16) return __half2float(((const __half *)p)[i]);
    if (dt == MAMBA_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

__global__ void embed_kernel(const int32_t *ids, const void *table, mamba_dtype_t dt, size_t dim, float *out)
{
    griddep_wait();
    const size_t r = blockIdx.x;
    const size_t row = (size_t)ids[r] * dim;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) out[r * dim + i] = load_as_f32(table, row + i, dt);
}

int cuda_embed(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dt, size_t vocab, size_t dim,
               mb_ptr out)
{
    if (!mb_gemm_dtype_ok(dt, dim))
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "embed: table of %s with %zu columns", mb_dtype_name(dt), dim);
    if (dt == MAMBA_Q8)
        return cuda_embed_q8(dev, (const int32_t *)cu_at(ids), rows, cu_at(table), vocab, dim, (float *)cu_at(out));
    launch_pdl(dev, embed_kernel, dim3((unsigned)rows), dim3(256), (const int32_t *)cu_at(ids), cu_at(table), dt, dim,
               (float *)cu_at(out));
    CU_LAUNCHED(dev, "embedding kernel");
    return 0;
}

__device__ __forceinline__ float block_sum(float v, float *shared)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? shared[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ void store_as(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_as(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

/* One block per row: residual += x; out = residual / rms(residual) * weight, out in O (f32,
 * or 16-bit for a GEMM that multiplies 16-bit inputs). */
template <typename O>
__global__ void add_rmsnorm_kernel(float *res, const float *x, const float *w, size_t dim, float eps, O *out)
{
    griddep_wait();
    __shared__ float shared[32];
    float *r = res + blockIdx.x * dim;
    const float *xr = x ? x + blockIdx.x * dim : nullptr;
    float ss = 0;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = r[i] + (xr ? xr[i] : 0.0f);
        r[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, shared);
    const float inv = rsqrtf(ss / (float)dim + eps);
    O *o = out + blockIdx.x * dim;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) store_as(o + i, r[i] * inv * w[i]);
}

/* The same with the row in registers between the two passes: NORM_V float4 a thread, so rows
 * up to NORM_V * 4 * 256 = 4,096 wide (every released Mamba-1: 768 .. 2,560). In the loop
 * above, the store into residual may alias the next iteration's loads, so they issue one at a
 * time: ncu on the 1.4b put it at 8.2 us a launch at batch 8 and at batch 64 alike (55 GB/s),
 * latency, not bytes. Here all of a thread's loads issue together, the weights' before the PDL
 * wait (they do not depend on the kernel before). */
#define NORM_V 4
#define NORM_THREADS 256
template <typename O>
__global__ void __launch_bounds__(NORM_THREADS) add_rmsnorm_vec_kernel(float *__restrict__ res, const float *__restrict__ x,
                                                                       const float *__restrict__ w, int dim, float eps,
                                                                       O *__restrict__ out)
{
    __shared__ float shared[32];
    const int n4 = dim / 4;
    const float4 *w4 = (const float4 *)w;
    float4 wv[NORM_V], v[NORM_V];
#pragma unroll
    for (int k = 0; k < NORM_V; k++) {
        const int i = threadIdx.x + k * NORM_THREADS;
        if (i < n4) wv[k] = __ldg(w4 + i);
    }
    griddep_wait();
    float4 *r4 = (float4 *)(res + (size_t)blockIdx.x * dim);
    const float4 *x4 = x ? (const float4 *)(x + (size_t)blockIdx.x * dim) : nullptr;
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_V; k++) {
        const int i = threadIdx.x + k * NORM_THREADS;
        if (i >= n4) continue;
        float4 a = r4[i];
        if (x4) {
            const float4 b = x4[i];
            a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
        }
        v[k] = a;
        ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
    }
    ss = block_sum(ss, shared);
    const float inv = rsqrtf(ss / (float)dim + eps);
    O *o = out + (size_t)blockIdx.x * dim;
#pragma unroll
    for (int k = 0; k < NORM_V; k++) {
        const int i = threadIdx.x + k * NORM_THREADS;
        if (i >= n4) continue;
        r4[i] = v[k];
        const float4 y = make_float4(v[k].x * inv * wv[k].x, v[k].y * inv * wv[k].y, v[k].z * inv * wv[k].z,
                                     v[k].w * inv * wv[k].w);
        if (sizeof(O) == 4) {
            ((float4 *)o)[i] = y;
        } else {
            store_as(o + 4 * i, y.x); store_as(o + 4 * i + 1, y.y); store_as(o + 4 * i + 2, y.z); store_as(o + 4 * i + 3, y.w);
        }
    }
}

template <typename O>
static int add_rmsnorm_as(mb_device *dev, mb_ptr res, mb_ptr x, mb_ptr w, size_t rows, size_t dim, float eps, O *o)
{
    float *r = (float *)cu_at(res);
    const float *xv = (const float *)cu_at(x), *wv = (const float *)cu_at(w);
    const bool vec = dim % 4 == 0 && dim <= (size_t)NORM_V * 4 * NORM_THREADS && ((uintptr_t)r & 15) == 0 &&
                     ((uintptr_t)o & 15) == 0 && ((uintptr_t)xv & 15) == 0 && ((uintptr_t)wv & 15) == 0 &&
                     (void *)r != (void *)o && (const void *)r != (const void *)xv && (const void *)o != (const void *)xv;
    if (vec) launch_pdl(dev, add_rmsnorm_vec_kernel<O>, dim3((unsigned)rows), dim3(NORM_THREADS), r, xv, wv, (int)dim, eps, o);
    else launch_pdl(dev, add_rmsnorm_kernel<O>, dim3((unsigned)rows), dim3(256), r, xv, wv, dim, eps, o);
    CU_LAUNCHED(dev, "add + rmsnorm kernel");
    return 0;
}

int cuda_add_rmsnorm(mb_device *dev, mb_ptr res, mb_ptr x, mb_ptr w, size_t rows, size_t dim, float eps, mb_ptr out)
{
    return add_rmsnorm_as(dev, res, x, w, rows, dim, eps, (float *)cu_at(out));
}

int cuda_add_rmsnorm16(mb_device *dev, mb_ptr res, mb_ptr x, mb_ptr w, size_t rows, size_t dim, float eps, mb_ptr out16,
                       mamba_dtype_t dt)
{
    if (dt == MAMBA_F16) return add_rmsnorm_as(dev, res, x, w, rows, dim, eps, (__half *)cu_at(out16));
    if (dt == MAMBA_BF16) return add_rmsnorm_as(dev, res, x, w, rows, dim, eps, (__nv_bfloat16 *)cu_at(out16));
    return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "add + rmsnorm: 16-bit output of %s", mb_dtype_name(dt));
}

/* One warp a row: each segment divided by its RMS (Falcon-Mamba's dt, B and C). */
__global__ void rmsnorm_segments_kernel(float *x, size_t rows, size_t ld, mb_segments seg, float eps)
{
    griddep_wait();
    const size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    float *r = x + row * ld;
    for (size_t s = 0; s < seg.n; r += seg.len[s], s++) {
        float ss = 0.0f;
        for (size_t i = lane; i < seg.len[s]; i += 32) ss += r[i] * r[i];
        const float inv = rsqrtf(warp_sum(ss) / (float)(seg.len[s] ? seg.len[s] : 1) + eps);
        for (size_t i = lane; i < seg.len[s]; i += 32) r[i] *= inv;
    }
}

int cuda_rmsnorm_segments(mb_device *dev, mb_ptr x, size_t rows, size_t ld, const mb_segments *seg, float eps)
{
    size_t width = 0;
    for (size_t s = 0; s < seg->n && s < 4; s++) width += seg->len[s];
    if (!x.buf || seg->n > 4 || width > ld || rows > 0x7fffffffu)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "rmsnorm_segments: %zu segments of %zu values in %zu rows of %zu",
                         seg->n, width, rows, ld);
    if (rows == 0) return 0;
    launch_pdl(dev, rmsnorm_segments_kernel, dim3((unsigned)((rows + 7) / 8)), dim3(256), (float *)cu_at(x), rows, ld,
               *seg, eps);
    CU_LAUNCHED(dev, "rmsnorm_segments kernel");
    return 0;
}

/* out[b, t, c] = silu(bias[c] + sum_k w[c, k] * in[b, t-(K-1)+k, c]); in[tau < 0] is the
 * carried state. One thread per output; channels are the fast index, so loads coalesce. */
__global__ void conv_kernel(mb_conv_op op, const float *x, const float *w, const float *bias, const float *state,
                            float *out)
{
    const size_t c = blockIdx.x * blockDim.x + threadIdx.x;
    const size_t t = blockIdx.y, b = blockIdx.z, C = op.channels, K = op.width;
    if (c >= C) return;
    float acc = bias ? bias[c] : 0.0f;
    for (size_t k = 0; k < K; k++) {
        const long tau = (long)t - (long)(K - 1) + (long)k;
        const float v = tau >= 0 ? x[b * op.x_sb + (size_t)tau * op.x_st + c]
                                 : state[(b * (K - 1) + (size_t)(tau + (long)K - 1)) * C + c];
        acc += w[c * K + k] * v;
    }
    out[b * op.out_sb + t * op.out_st + c] = acc / (1.0f + __expf(-acc));
}

/* The same for K = 4 (every Mamba): a thread walks CONV_STEPS steps of its channel with the
 * window in registers, so that each input is read once rather than K times and the block
 * count drops by CONV_STEPS (the kernel above, one output a thread, took 33 us for the 130m's
 * 2048 x 1536, four times what its bytes need at HBM speed). */
#define CONV_STEPS 16
template <int K>
__global__ void conv_steps_kernel(mb_conv_op op, const float *x, const float *w, const float *bias,
                                  const float *state, float *out)
{
    const size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x, C = op.channels, b = blockIdx.z;
    const long long t0 = (long long)blockIdx.y * CONV_STEPS;
    if (c >= C) return;
    const float *xb = x + b * op.x_sb + c;
    float wc[K], win[K];
#pragma unroll
    for (int k = 0; k < K; k++) wc[k] = w[c * K + k];
#pragma unroll
    for (int j = 0; j < K - 1; j++) {
        const long long tau = t0 - (K - 1) + j;
        win[j] = tau >= 0 ? xb[tau * op.x_st] : state[(b * (K - 1) + (size_t)(tau + K - 1)) * C + c];
    }
    const long long n = min((long long)CONV_STEPS, (long long)op.len - t0);
    float v[CONV_STEPS];
#pragma unroll
    for (int s = 0; s < CONV_STEPS; s++) v[s] = s < n ? xb[(t0 + s) * op.x_st] : 0.0f;
    const float bc = bias ? bias[c] : 0.0f;
    float *ob = out + b * op.out_sb + c;
#pragma unroll
    for (int s = 0; s < CONV_STEPS; s++) {
        win[K - 1] = v[s];
        float acc = bc;
#pragma unroll
        for (int k = 0; k < K; k++) acc += wc[k] * win[k];
        if (s < n) ob[(t0 + s) * op.out_st] = acc / (1.0f + __expf(-acc));
#pragma unroll
        for (int j = 0; j < K - 1; j++) win[j] = win[j + 1];
    }
}

/* The new state: the last K-1 inputs. One thread per (b, c) reads all it needs before writing. */
__global__ void conv_state_kernel(mb_conv_op op, const float *x, float *state)
{
    const size_t c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y, C = op.channels, K = op.width;
    if (c >= C || K < 2) return;
    float keep[63];
    for (size_t j = 0; j + 1 < K; j++) {
        const long tau = (long)op.len - (long)(K - 1) + (long)j;
        keep[j] = tau >= 0 ? x[b * op.x_sb + (size_t)tau * op.x_st + c]
                           : state[(b * (K - 1) + (size_t)(tau + (long)K - 1)) * C + c];
    }
    for (size_t j = 0; j + 1 < K; j++) state[(b * (K - 1) + j) * C + c] = keep[j];
}

/* Short inputs (decoding): one thread per (b, c) walks the steps with the window in registers
 * and writes the new state itself: one launch instead of two. */
#define SHORT_CONV_MAX_LEN 8
#define SHORT_CONV_MAX_WIDTH 8
__global__ void conv_short_kernel(mb_conv_op op, const float *x, const float *w, const float *bias, float *state,
                                  float *out)
{
    const size_t c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y, C = op.channels;
    const int K = (int)op.width, L = (int)op.len;
    if (c >= C) return;
    float win[SHORT_CONV_MAX_WIDTH - 1 + SHORT_CONV_MAX_LEN], wc[SHORT_CONV_MAX_WIDTH];
    for (int j = 0; j + 1 < K; j++) win[j] = state[(b * (K - 1) + j) * C + c];
    for (int t = 0; t < L; t++) win[K - 1 + t] = x[b * op.x_sb + t * op.x_st + c];
    for (int k = 0; k < K; k++) wc[k] = w[c * K + k];
    const float bc = bias ? bias[c] : 0.0f;
    for (int t = 0; t < L; t++) {
        float acc = bc;
        for (int k = 0; k < K; k++) acc += wc[k] * win[t + k];
        out[b * op.out_sb + t * op.out_st + c] = acc / (1.0f + __expf(-acc));
    }
    for (int j = 0; j + 1 < K; j++) state[(b * (K - 1) + j) * C + c] = win[L + j];
}

int cuda_conv_silu(mb_device *dev, const mb_conv_op *op)
{
    /* the sizes first: the short kernel would index its window with width 0 (win[-1]) */
    int empty, rc = mb_conv_check(op, &empty, dev->err, sizeof dev->err);
    if (rc || empty) return rc; /* a grid of no blocks is a launch error */
    if (op->len > 65535 || op->batch > 65535)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "conv: %zu steps x batch %zu per call, at most 65535 each", op->len,
                         op->batch);
    if (op->len <= SHORT_CONV_MAX_LEN && op->width <= SHORT_CONV_MAX_WIDTH) {
        const unsigned threads = 128, blocks = (unsigned)((op->channels + threads - 1) / threads);
        conv_short_kernel<<<dim3(blocks, (unsigned)op->batch), threads, 0, dev->stream>>>(
            *op, (const float *)cu_at(op->x), (const float *)cu_at(op->weight), (const float *)cu_at(op->bias),
            (float *)cu_at(op->state), (float *)cu_at(op->out));
        CU_LAUNCHED(dev, "short conv kernel");
        return 0;
    }
    const unsigned threads = 128, cblocks = (unsigned)((op->channels + threads - 1) / threads);
    const float *x = (const float *)cu_at(op->x);
    float *state = (float *)cu_at(op->state);
    if (op->width == 4) {
        const unsigned tblocks = (unsigned)((op->len + CONV_STEPS - 1) / CONV_STEPS);
        conv_steps_kernel<4><<<dim3(cblocks, tblocks, (unsigned)op->batch), threads, 0, dev->stream>>>(
            *op, x, (const float *)cu_at(op->weight), (const float *)cu_at(op->bias), state, (float *)cu_at(op->out));
    } else {
        conv_kernel<<<dim3(cblocks, (unsigned)op->len, (unsigned)op->batch), threads, 0, dev->stream>>>(
            *op, x, (const float *)cu_at(op->weight), (const float *)cu_at(op->bias), state, (float *)cu_at(op->out));
    }
    CU_LAUNCHED(dev, "conv kernel");
    conv_state_kernel<<<dim3(cblocks, (unsigned)op->batch), threads, 0, dev->stream>>>(*op, x, state);
    CU_LAUNCHED(dev, "conv state kernel");
    return 0;
}

__global__ void read_sum_kernel(const float4 *x, size_t n4, float *out)
{
    __shared__ float shared[32];
    float s = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        const float4 v = x[i];
        s += (v.x + v.y) + (v.z + v.w);
    }
    s = block_sum(s, shared);
    if (threadIdx.x == 0) atomicAdd(out, s);
}

int cuda_read_sum(mb_device *dev, mb_ptr src, size_t n, mb_ptr out)
{
    CU_CHECK(dev, cudaMemsetAsync(cu_at(out), 0, 4, dev->stream), "read probe");
    read_sum_kernel<<<dev->sm_count * 8, 512, 0, dev->stream>>>((const float4 *)cu_at(src), n / 4, (float *)cu_at(out));
    CU_LAUNCHED(dev, "read probe kernel");
    return 0;
}
