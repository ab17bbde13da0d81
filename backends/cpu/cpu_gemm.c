/* y = x W^T + b: a few rows (decoding) through the CPU's GEMV, more through CBLAS
 * (OpenBLAS), with 16-bit weights widened to f32 first. */
#include <stdlib.h>

#include <cblas.h>

#include "cpu_internal.h"
#include "api/alloc.h"

int cpu_gemm(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x_p, size_t lda, mb_ptr w_p, mamba_dtype_t wdt,
             mb_ptr bias_p, mb_ptr y_p, size_t ldy)
{
    const float *x = cpu_at(x_p), *bias = cpu_at(bias_p);
    const float *w = cpu_at(w_p);
    float *y = cpu_at(y_p);
    if (!mb_gemm_dtype_ok(wdt, k))
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED, "gemm: weight dtype %s with k = %zu", mb_dtype_name(wdt), k);
    /* a decoding step's few rows: the GEMV that reads W once, in its stored dtype */
    if (m <= CPU_GEMV_MAX_ROWS)
        return cpu_gemv_fused(dev, m, n, k, x_p, lda, (mb_ptr){NULL, 0}, 0.0f, w_p, wdt, bias_p, y_p, ldy, 0);
    if (wdt != MAMBA_F32) {
        if (dev->scratch_len < n * k) {
            float *s = mb_realloc(dev->scratch, n * k * sizeof *s);
            if (!s) return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "gemm: cannot widen a %zux%zu weight", n, k);
            dev->scratch = s;
            dev->scratch_len = n * k;
        }
        const unsigned char *src = cpu_at(w_p);
        const size_t chunk = 65536;
        if (wdt == MAMBA_Q8) {
            /* Q8_0 dequantized whole, as a 16-bit W is widened: the GEMM then runs in fp32 */
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
            for (size_t r = 0; r < n; r++) mb_q8_row_to_f32(dev->scratch + r * k, src, n, k, r);
        } else {
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
            for (size_t i = 0; i < n * k; i += chunk)
                mb_to_f32(dev->scratch + i, src + i * 2, wdt, n * k - i < chunk ? n * k - i : chunk);
        }
        w = dev->scratch;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, x, (int)lda, w, (int)k, 0.0f,
                y, (int)ldy);
    if (bias) {
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) y[i * ldy + j] += bias[j];
    }
    return 0;
}
