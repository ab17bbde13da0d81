/* The read-bandwidth probe of mamba-bench (read_sum): a sum over a large buffer, written so
 * that the adds never limit it. With one vector accumulator (what `omp simd reduction`
 * gives) it measured 62 GB/s on the development machine where a loop of independent
 * AVX-512 adds read 84 GB/s, and an understated bandwidth overstates every roofline
 * fraction the bench prints. */
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_math.h"

#define LANES 64 /* independent partial sums: four AVX-512 registers */

MB_CPU_CLONES
static float sum_range(const float *x, size_t n)
{
    float acc[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t j = 0; j < LANES; j++) acc[j] += x[i + j];
    float s = 0;
    for (; i < n; i++) s += x[i];
    for (size_t j = 0; j < LANES; j++) s += acc[j];
    return s;
}

float cpu_sum(mb_device *dev, const float *x, size_t n)
{
    float total = 0;
#pragma omp parallel num_threads(dev->n_threads) reduction(+ : total)
    {
        const size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        const size_t i0 = n * t / nt / LANES * LANES, i1 = t + 1 == nt ? n : n * (t + 1) / nt / LANES * LANES;
        total += sum_range(x + i0, i1 - i0);
    }
    return total;
}
