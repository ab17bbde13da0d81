/* GEMMs with 16-bit weights on the tensor cores: y (m, n) = x (m, k) W^T + bias, W (n, k) in
 * bf16 or f16 as stored, x rounded to the same dtype into the scratch, fp32 sums and output.
 * Each weight is read once, in 2 bytes; widening the weights to fp32 first (the compute_f32
 * path) writes and reads them again in 4, and the profile of a batch-64 decoding step of the
 * 1.4b showed that widening plus the 3xTF32 kernel took 110 us of the in_proj's 32 MB of bf16
 * weights, which HBM streams in about 8 us. */
#include "cuda_internal.h"

/* out (m, k) contiguous = x (m, k) with leading dimension lda, rounded to T */
template <typename T> __global__ void round_rows_kernel(const float *x, size_t lda, size_t m, size_t k, T *out)
{
    const size_t total = m * k;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / k, c = i - r * k;
        out[i] = from_f32<T>(x[r * lda + c]);
    }
}

int cuda_gemm16(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const void *w,
                mamba_dtype_t wdt, const float *bias, float *y, size_t ldy)
{
    void *xs = nullptr;
    int rc = cuda_scratch(dev, m * k * 2, &xs);
    if (rc) return rc;
    const size_t total = m * k;
    size_t blocks = (total + 255) / 256;
    if (blocks > (size_t)dev->sm_count * 16) blocks = (size_t)dev->sm_count * 16;
    if (wdt == MAMBA_F16) round_rows_kernel<__half><<<(unsigned)blocks, 256, 0, dev->stream>>>(x, lda, m, k, (__half *)xs);
    else round_rows_kernel<__nv_bfloat16><<<(unsigned)blocks, 256, 0, dev->stream>>>(x, lda, m, k, (__nv_bfloat16 *)xs);
    CU_LAUNCHED(dev, "16-bit GEMM input rounding kernel");
    return cuda_gemm16_x16(dev, m, n, k, xs, k, w, wdt, bias, y, ldy);
}

int cuda_gemm_x16(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x16, size_t lda, mb_ptr w, mamba_dtype_t wdt,
                  mb_ptr bias, mb_ptr y, size_t ldy)
{
    if ((wdt != MAMBA_F16 && wdt != MAMBA_BF16) || lda < k || m > 0x7fffffff || n > 0x7fffffff || k > 0x7fffffff)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "16-bit GEMM of %zu x %zu x %zu (lda %zu) with %s weights", m,
                         n, k, lda, mb_dtype_name(wdt));
    return cuda_gemm16_x16(dev, m, n, k, cu_at(x16), lda, cu_at(w), wdt, (const float *)cu_at(bias), (float *)cu_at(y),
                           ldy);
}

int cuda_gemm16_x16(mb_device *dev, size_t m, size_t n, size_t k, const void *xs, size_t lda, const void *w,
                    mamba_dtype_t wdt, const float *bias, float *y, size_t ldy)
{
    const bool half = wdt == MAMBA_F16;
    /* row-major y (m, n) = x (m, k) W^T is column-major y' (n, m) = W'^T (n, k) x' (k, m) */
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t t = half ? CUDA_R_16F : CUDA_R_16BF;
    const cublasStatus_t st = cublasGemmEx(dev->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, w, t,
                                           (int)k, xs, t, (int)lda, &zero, y, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return cuda_fail(dev, MAMBA_ERR_BACKEND, "cublasGemmEx (%s, %zu x %zu x %zu) failed: status %d",
                         half ? "f16" : "bf16", m, n, k, (int)st);
    if (bias) {
        bias_kernel<<<dim3((unsigned)((n + 255) / 256), (unsigned)m), 256, 0, dev->stream>>>(y, ldy, bias, n);
        CU_LAUNCHED(dev, "bias kernel");
    }
    return 0;
}
