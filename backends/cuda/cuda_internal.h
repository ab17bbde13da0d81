/* The CUDA backend's device: one stream, a cuBLAS handle, scratch space, event timers. */
#ifndef MB_CUDA_INTERNAL_H
#define MB_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "api/backend.h"
#include "api/util.h"

/* 16-bit weights under 16-bit compute: rows up to this go to the gemv kernel, more to cuBLAS.
 * The gemv reads every weight once but each row's fp32 x once per output feature, so its L1
 * traffic grows with the rows (at 8 rows 16x the weights' bytes). On the H200 (1.4b bf16,
 * decoding) cuBLAS won from 2 rows: 909 / 1,782 / 3,462 tokens/s at batch 2 / 4 / 8 against
 * the gemv's 860 / 1,076 / 1,229. */
#define CUDA_GEMV16_ROWS 1
#define ARGMAX_MAX_ROWS 64 /* rows the device's argmax scratch has room for */
/* a 64-bit key and a 32-bit counter per row */
#define ARGMAX_SCRATCH_BYTES (ARGMAX_MAX_ROWS * (sizeof(unsigned long long) + sizeof(unsigned)))

struct mb_device {
    int index;
    int sm_count;
    int pdl;                       /* sm_90+: decoding kernels use programmatic dependent launch */
    int tf32x3;                    /* sm_80+: fp32 GEMMs by the 3xTF32 kernel, not cuBLAS SGEMM */
    int compute_f32;               /* 16-bit weights: fp32 arithmetic (widened), not 16-bit GEMMs */
    int gemv16_rows;               /* 16-bit weights, 16-bit compute: the most rows the gemv kernel
                                      takes; more go to cuBLAS (MAMBA_CUDA_GEMV16_ROWS, 1..8) */
    size_t total_memory;           /* the device's, for out-of-memory messages */
    size_t bwd_parts;              /* floats the scan backward's partial dB/dC sums may take
                                      (MAMBA_CUDA_BWD_PARTS, for tests) */
    int scan16_per_sm;             /* blocks of the N = 16 scan kernel an SM holds; 0: not asked yet */
    cudaStream_t stream;
    cudaStream_t copy_stream;      /* download_async: device -> page-locked host, beside the work */
    cudaEvent_t work_done;         /* recorded on stream before each download_async */
    cudaEvent_t copies_done;       /* recorded on copy_stream after each download_async */
    cudaEvent_t marks[MB_DOWNLOAD_MARKS]; /* download_mark's, on copy_stream; NULL until first set */
    cublasHandle_t blas;
    void *blas_workspace;          /* given to cuBLAS so that graph capture never allocates */
    size_t blas_workspace_bytes;
    void *scratch;                 /* scan chunk states, widened GEMM weights, GEMM k-split sums;
                                      grown on demand */
    int scratch_in_graph;          /* a recorded graph uses the scratch: keep it when it grows */
    struct retired_scratch *retired; /* scratch blocks recorded graphs may still use; freed at close */
    void *argmax_scratch;          /* argmax: ARGMAX_SCRATCH_BYTES, kept at 0 */
    size_t scratch_bytes;
    cudaEvent_t t0, t1;
    mb_mem_stats mem;              /* bytes held through alloc() and the scratch */
    char err[512];
};

struct mb_buffer {
    void *ptr;
    size_t bytes;
};

static inline void *cu_at(mb_ptr p) { return p.buf ? (char *)p.buf->ptr + p.offset : nullptr; }

int cuda_fail(mb_device *dev, int status, const char *fmt, ...);
/* Turn a CUDA error (of a call or of the last launch) into a status with a message. */
int cuda_check(mb_device *dev, cudaError_t e, const char *what);
#define CU_CHECK(dev, call, what)                                  \
    do {                                                           \
        int cu_rc_ = cuda_check((dev), (call), (what));            \
        if (cu_rc_) return cu_rc_;                                 \
    } while (0)
#define CU_LAUNCHED(dev, what) CU_CHECK(dev, cudaGetLastError(), what)

/* Device scratch of at least bytes (reallocated outside any graph capture). */
int cuda_scratch(mb_device *dev, size_t bytes, void **out);

int cuda_embed(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dtype, size_t vocab, size_t dim,
               mb_ptr out);
int cuda_add_rmsnorm(mb_device *dev, mb_ptr residual, mb_ptr x, mb_ptr weight, size_t rows, size_t dim, float eps,
                     mb_ptr out);
/* the same with out16 in dt (F16 or BF16), for cuda_gemm_x16 */
int cuda_add_rmsnorm16(mb_device *dev, mb_ptr res, mb_ptr x, mb_ptr w, size_t rows, size_t dim, float eps, mb_ptr out16,
                       mamba_dtype_t dt);
int cuda_conv_silu(mb_device *dev, const mb_conv_op *op);
int cuda_gemm(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w, mamba_dtype_t wdtype,
              mb_ptr bias, mb_ptr y, size_t ldy);
/* The 3xTF32 tensor-core GEMM (cuda_gemm_tc.cu): its one-time setup on a device (tf32x3);
 * whether it takes this call (W's alignment aside); how many k splits it wants (> 1: partial
 * must hold splits * m * n floats); the call. */
int cuda_gemm_3xtf32_init(mb_device *dev);
bool cuda_gemm_3xtf32_fits(const mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, size_t ldy);
int cuda_gemm_3xtf32_splits(const mb_device *dev, size_t m, size_t n, size_t k);
int cuda_gemm_3xtf32(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const float *w,
                     const float *bias, float *y, size_t ldy, int splits, float *partial);
/* y = x W^T + bias with 16-bit weights on the tensor cores (cuda_gemm16.cu): x rounded to the
 * weights' dtype, fp32 sums and output. */
__global__ void bias_kernel(float *y, size_t ldy, const float *bias, size_t n);
int cuda_gemm16(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                mamba_dtype_t wdt, const float *bias, float *y, size_t ldy);
/* the same from x already in the weights' dtype, (m, k) with leading dimension lda; cuda_gemm_x16
 * is it as the fused op (mb_fused_ops.gemm_x16) */
int cuda_gemm16_x16(mb_device *dev, size_t m, size_t n, size_t k, const void *xs, size_t lda, const void *w,
                    mamba_dtype_t wdt, const float *bias, float *y, size_t ldy);
int cuda_gemm_x16(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x16, size_t lda, mb_ptr w, mamba_dtype_t wdt,
                  mb_ptr bias, mb_ptr y, size_t ldy);
/* Whether cuda_scratch(bytes) can succeed without reallocating during a graph capture. */
bool cuda_scratch_ready(mb_device *dev, size_t bytes);
int cuda_scan(mb_device *dev, const mb_scan_op *op);
int cuda_scan_backward(mb_device *dev, const mb_scan_bwd_op *op);
int cuda_read_sum(mb_device *dev, mb_ptr src, size_t n, mb_ptr out);
int cuda_argmax(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2, mb_ptr nan_flag);
int cuda_mixer_step(mb_device *dev, const mb_mixer_step_op *op);
bool cuda_step_supports(const mb_fused_query *q);
bool cuda_gemv_supports(const mb_device *dev, const mb_fused_query *q);
/* whether cuda_gemm of rows rows of weights of dtype wdt (of q's) takes the 16-bit path (cuda_gemm16) */
bool cuda_gemm16_takes(const mb_device *dev, size_t rows, mamba_dtype_t wdt);
bool cuda_gemm16_used(const mb_device *dev, const mb_fused_query *q);
/* the most rows cuda_gemm multiplies by the gemv kernel for weights of dtype wdt */
size_t cuda_gemv_rows(const mb_device *dev, mamba_dtype_t wdt);
/* Q8_0 weights (cuda_gemv_q8.cu): the decoding GEMV (nw: the fused RMSNorm's weights or NULL;
 * accum: y +=), whether it takes those arguments, W dequantized to f32, the embedding. */
bool cuda_gemv_q8_takes(size_t m, size_t k, const void *x, size_t lda, const void *w, const void *nw);
int cuda_gemv_q8(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                 const float *bias, float *y, size_t ldy, const float *nw, float eps, int accum);
int cuda_dequant_q8(mb_device *dev, const void *w, size_t n, size_t k, float *dst);
int cuda_embed_q8(mb_device *dev, const int32_t *ids, size_t rows, const void *table, size_t vocab, size_t dim,
                  float *out);
int cuda_rmsnorm_segments(mb_device *dev, mb_ptr x, size_t rows, size_t ld, const mb_segments *seg, float eps);
/* Make dev's GPU the calling thread's current one (every entry point calls it first). */
void cuda_use_device(mb_device *dev);
int cuda_gemv_fused(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr norm_w, float eps,
                    mb_ptr w, mamba_dtype_t wdt, mb_ptr bias, mb_ptr y, size_t ldy, int accumulate);

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* 2^x in one instruction (ex2.approx, flush-to-zero): the scans' exponential. */
__device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
#define LOG2E 1.4426950408889634f

/* Programmatic dependent launch (sm_90+): a kernel launched with launch_pdl may be scheduled
 * while the previous one in the stream still runs, and waits here until that kernel has
 * completed and its writes are visible; then it lets its own successor be scheduled. A
 * decoding step is a chain of short kernels, where this hides most of each launch's latency.
 * Every kernel launched through launch_pdl calls this before anything else. */
__device__ __forceinline__ void griddep_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    cudaGridDependencySynchronize();
    cudaTriggerProgrammaticLaunchCompletion();
#endif
}

/* Ask for the bytes [p, p + bytes) in L2, spread over nthreads threads (thread t of them).
 * A kernel launched early by launch_pdl does this for its weights before griddep_wait: they do
 * not depend on the previous kernel, so their trip from HBM overlaps that kernel's end. */
__device__ __forceinline__ void prefetch_l2(const void *p, size_t bytes, int t, int nthreads)
{
    const char *c = (const char *)p;
    for (size_t off = (size_t)t * 128; off < bytes; off += (size_t)nthreads * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

template <typename... KArgs, typename... Args>
static inline void launch_pdl(mb_device *dev, void (*kernel)(KArgs...), dim3 grid, dim3 block, Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = dev->stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = dev->pdl ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, args...);
}
/* softplus(x) = max(x, 0) + log1p(w), w = e^-|x| in (0, 1]. log1p(w) = w P(w) with P a
 * degree-8 Chebyshev fit of log1p(w) / w on [0, 1] (relative error 1.7e-7 in f32): 12
 * instructions and no branch where log1pf(expf(x)) took over 30 with several (the scan runs
 * it once a step and channel). */
__device__ __forceinline__ float softplus_f(float x)
{
    const float w = ex2(-fabsf(x) * LOG2E);
    float q = 0.005253458f;
    q = fmaf(q, w, -0.029588507f);
    q = fmaf(q, w, 0.078361668f);
    q = fmaf(q, w, -0.13674770f);
    q = fmaf(q, w, 0.19111431f);
    q = fmaf(q, w, -0.24844369f);
    q = fmaf(q, w, 0.33319271f);
    q = fmaf(q, w, -0.49999502f);
    q = fmaf(q, w, 1.0f);
    return fmaf(w, q, fmaxf(x, 0.0f));
}

#endif
