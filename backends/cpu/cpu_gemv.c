/* The decoding GEMV: a few rows of x (the batch of a step) against a weight matrix that is
 * read once from memory, so its speed is the memory read bandwidth (the 130m reads 493 MiB
 * of weights a token). It replaces OpenBLAS's sgemv for m <= CPU_GEMV_MAX_ROWS: on the
 * 2-core AVX-512 development machine OpenBLAS 0.3.21 runs an AVX2 kernel and reads W once per
 * row of x, and 16-bit weights had to be widened into an f32 copy of W per call. What
 * measured fastest there: one contiguous range of rows per thread (ranges handed out
 * dynamically cut decoding from 144 to 121 tokens/s: the prefetchers lose the stream at
 * each jump), one row at a time with four sums in flight, intrinsics for AVX-512. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MB_CPU_AVX512 1
#else
#define MB_CPU_AVX512 0
#endif

#include "cpu_internal.h"
#include "cpu_math.h"
#include "api/alloc.h"

#define ROWS 4     /* rows of W per pass of the portable version: four independent sums */
#define CHUNK 512  /* columns of a 16-bit W widened at a time there: 4 rows of it are 8 KiB */

static inline void widen_f16(float *dst, const uint16_t *src, size_t n)
{
#pragma omp simd
    for (size_t c = 0; c < n; c++) dst[c] = f16_to_f32_fast(src[c]);
}

static inline void widen_bf16(float *dst, const uint16_t *src, size_t n)
{
#pragma omp simd
    for (size_t c = 0; c < n; c++) dst[c] = bf16_to_f32_fast(src[c]);
}

/* Columns [c0, c0 + nc) of row `row` of W as f32: in place for F32, else widened into buf
 * (Q8_0: c0 and nc multiples of 32, dequantized). */
static inline const float *weight_cols(const cpu_gemv_job *j, size_t row, size_t c0, size_t nc, float *buf)
{
    if (j->wdt == MAMBA_F32) return (const float *)j->w + row * j->k + c0;
    if (j->wdt == MAMBA_Q8) {
        /* a block's scale once and its 32 products as one vectorized loop (a division and a
         * half conversion per weight ran the portable Q8_0 GEMV at 1/6 of the bf16 one) */
        const int8_t *q = (const int8_t *)j->w + row * j->k + c0;
        const uint16_t *sc = j->scales + (row * j->k + c0) / MB_Q8_BLOCK;
        for (size_t b = 0; b < nc / MB_Q8_BLOCK; b++) {
            const float d = f16_to_f32_fast(sc[b]);
            const int8_t *qb = q + b * MB_Q8_BLOCK;
            float *ob = buf + b * MB_Q8_BLOCK;
#pragma omp simd
            for (size_t c = 0; c < MB_Q8_BLOCK; c++) ob[c] = (float)qb[c] * d;
        }
        /* (callers pass whole blocks; a partial one would be widened here) */
        for (size_t c = nc / MB_Q8_BLOCK * MB_Q8_BLOCK; c < nc; c++)
            buf[c] = (float)q[c] * f16_to_f32_fast(sc[c / MB_Q8_BLOCK]);
        return buf;
    }
    const uint16_t *src = (const uint16_t *)j->w + row * j->k + c0;
    if (j->wdt == MAMBA_F16) widen_f16(buf, src, nc);
    else widen_bf16(buf, src, nc);
    return buf;
}

static inline void store_rows(const cpu_gemv_job *j, size_t r, size_t nr, float acc[][ROWS])
{
    for (size_t i = 0; i < j->m; i++) {
        float *y = j->y + i * j->ldy + r;
        for (size_t q = 0; q < nr; q++)
            y[q] = (j->accumulate ? y[q] : 0.0f) + acc[i][q] + (j->bias ? j->bias[r + q] : 0.0f);
    }
}

/* Portable version: the compiler vectorizes it (one clone per x86 ISA level). */
MB_CPU_CLONES
static void gemv_rows_generic(const cpu_gemv_job *j, size_t r0, size_t r1)
{
    const size_t k = j->k, chunk = j->wdt == MAMBA_F32 ? k : CHUNK;
    float buf[ROWS][CHUNK];
    for (size_t r = r0; r < r1; r += ROWS) {
        const size_t nr = r1 - r < ROWS ? r1 - r : ROWS;
        float acc[CPU_GEMV_MAX_ROWS][ROWS] = {{0}};
        for (size_t c0 = 0; c0 < k; c0 += chunk) {
            const size_t nc = k - c0 < chunk ? k - c0 : chunk;
            /* a short last block repeats its last row; only nr sums are stored */
            const float *w0 = weight_cols(j, r, c0, nc, buf[0]);
            const float *w1 = nr > 1 ? weight_cols(j, r + 1, c0, nc, buf[1]) : w0;
            const float *w2 = nr > 2 ? weight_cols(j, r + 2, c0, nc, buf[2]) : w1;
            const float *w3 = nr > 3 ? weight_cols(j, r + 3, c0, nc, buf[3]) : w2;
            for (size_t i = 0; i < j->m; i++) {
                const float *x = j->x + i * j->ldx + c0;
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
                for (size_t c = 0; c < nc; c++) {
                    s0 += w0[c] * x[c];
                    s1 += w1[c] * x[c];
                    s2 += w2[c] * x[c];
                    s3 += w3[c] * x[c];
                }
                acc[i][0] += s0;
                acc[i][1] += s1;
                acc[i][2] += s2;
                acc[i][3] += s3;
            }
        }
        store_rows(j, r, nr, acc);
    }
}

#if MB_CPU_AVX512
/* The ISA kernels, written with intrinsics: the portable version above, compiled for AVX-512,
 * read 54 GB/s on the (AVX-512) development machine where these read 70, with the same inner
 * loop of four FMAs; which part of the rest made the difference was not pinned down. One row
 * of W at a time: one contiguous stream for the prefetcher, four sums in flight. 16-bit
 * weights are widened in registers as they are loaded. Each kernel is one row's dot product
 * with one row of x, made for AVX-512 and for AVX2 from one template below. */
__attribute__((target("avx512f,fma"), always_inline)) static inline __m512 load_w_avx512(const void *w, size_t i,
                                                                                       mamba_dtype_t dt)
{
    if (dt == MAMBA_F32) return _mm512_loadu_ps((const float *)w + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    if (dt == MAMBA_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256 load_w_avx2(const void *w, size_t i,
                                                                                       mamba_dtype_t dt)
{
    if (dt == MAMBA_F32) return _mm256_loadu_ps((const float *)w + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    if (dt == MAMBA_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx512f"), always_inline)) static inline float hsum_avx512(__m512 a0, __m512 a1, __m512 a2,
                                                                                 __m512 a3)
{
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"), always_inline)) static inline float hsum_avx2(__m256 a0, __m256 a1, __m256 a2,
                                                                            __m256 a3)
{
    const __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* Q8_0: x is quantized to 16 bits first, a block of 32 at a time (scale max|x| / 32767: its
 * rounding, 1.5e-5 of the block's largest, is far below the weights'), so that a block's 32
 * products are vpmaddwd of int8 weights widened to int16 against it (one with AVX-512, two
 * with AVX2), exact in int32; the block's sum, converted, is scaled by both scales. Four
 * blocks in flight. Against int8 weights widened to f32 (two conversions and two FMAs a block)
 * the 130m's lm_head GEMV on one core of the AVX-512 machine went from 1.6-1.76 ms (24-25
 * GB/s) to 1.50-1.54 ms (27 GB/s; the bf16 GEMV's stream: 26-29 GB/s). */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512 q8_block_avx512(const int8_t *wq,
                                                                                               const int16_t *xq)
{
    return _mm512_cvtepi32_ps(
        _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)wq)), _mm512_loadu_si512(xq)));
}

__attribute__((target("avx2"), always_inline)) static inline __m256 q8_block_avx2(const int8_t *wq, const int16_t *xq)
{
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wq)),
                                         _mm256_loadu_si256((const __m256i *)xq));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wq + 16))),
                                         _mm256_loadu_si256((const __m256i *)(xq + 16)));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(lo, hi));
}

/* Row r of W (dtype DT) against row i of x, L lanes a vector. */
#define DEFINE_DOT(NAME, TARGET, VT, L, ISA, T, DT)                                                 \
    __attribute__((target(TARGET))) static float NAME(const cpu_gemv_job *j, size_t r, size_t i)  \
    {                                                                                              \
        const size_t k = j->k, l = (L), k4 = k / (4 * l) * (4 * l), k1 = k / l * l;                 \
        const void *wr = (const unsigned char *)j->w + r * k * ((DT) == MAMBA_F32 ? 4 : 2);        \
        const float *x = j->x + i * j->ldx;                                                        \
        VT a0 = ISA##_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                     \
        size_t c = 0;                                                                              \
        for (; c < k4; c += 4 * l) {                                                               \
            a0 = ISA##_fmadd_ps(load_w_##T(wr, c, DT), ISA##_loadu_ps(x + c), a0);               \
            a1 = ISA##_fmadd_ps(load_w_##T(wr, c + l, DT), ISA##_loadu_ps(x + c + l), a1);       \
            a2 = ISA##_fmadd_ps(load_w_##T(wr, c + 2 * l, DT), ISA##_loadu_ps(x + c + 2 * l), a2); \
            a3 = ISA##_fmadd_ps(load_w_##T(wr, c + 3 * l, DT), ISA##_loadu_ps(x + c + 3 * l), a3); \
        }                                                                                          \
        for (; c < k1; c += l) a0 = ISA##_fmadd_ps(load_w_##T(wr, c, DT), ISA##_loadu_ps(x + c), a0); \
        float s = hsum_##T(a0, a1, a2, a3);                                                      \
        for (; c < k; c++) s += weight_f32(wr, c, DT) * x[c];                                      \
        return s;                                                                                  \
    }

/* The blocks of a Q8_0 row in groups of 16 (AVX-512), block b into accumulator b % 4: the 16
 * blocks' scales (fp16 weight scale x x's scale) in one conversion and multiply, each block's
 * broadcast by a permute, instead of a scalar load, conversion, multiply and broadcast a block
 * (the same products: the results do not change; 130m decoding 118-122 -> 129-135 tok/s on
 * the AVX-512 development machine). Returns the blocks done. */
__attribute__((target("avx512f,avx512bw,fma,f16c"))) static size_t q8_groups_avx512(
    const int8_t *w, const uint16_t *sw, const int16_t *x, const float *sx, size_t nb, __m512 *a0, __m512 *a1,
    __m512 *a2, __m512 *a3)
{
    size_t b = 0;
    for (; b + 16 <= nb; b += 16) {
        const __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sw + b))),
                                        _mm512_loadu_ps(sx + b));
        for (int u = 0; u < 16; u += 4) {
            const int16_t *xb = x + (b + u) * MB_Q8_BLOCK;
            const int8_t *wb = w + (b + u) * MB_Q8_BLOCK;
            *a0 = _mm512_fmadd_ps(q8_block_avx512(wb, xb), _mm512_permutexvar_ps(_mm512_set1_epi32(u), sc), *a0);
            *a1 = _mm512_fmadd_ps(q8_block_avx512(wb + 32, xb + 32), _mm512_permutexvar_ps(_mm512_set1_epi32(u + 1), sc),
                                  *a1);
            *a2 = _mm512_fmadd_ps(q8_block_avx512(wb + 64, xb + 64), _mm512_permutexvar_ps(_mm512_set1_epi32(u + 2), sc),
                                  *a2);
            *a3 = _mm512_fmadd_ps(q8_block_avx512(wb + 96, xb + 96), _mm512_permutexvar_ps(_mm512_set1_epi32(u + 3), sc),
                                  *a3);
        }
    }
    return b;
}

/* AVX2 has no group path: every block goes through the loop below */
static size_t q8_groups_avx2(const int8_t *w, const uint16_t *sw, const int16_t *x, const float *sx, size_t nb,
                             __m256 *a0, __m256 *a1, __m256 *a2, __m256 *a3)
{
    (void)w; (void)sw; (void)x; (void)sx; (void)nb; (void)a0; (void)a1; (void)a2; (void)a3;
    return 0;
}

/* Row r of Q8_0 W against row i of x in 16 bits (job.xq, job.xs); block b into accumulator
 * b % 4 (after the ISA's groups, q8_groups_*). */
#define DEFINE_DOT_Q8(NAME, TARGET, VT, ISA, T)                                                     \
    __attribute__((target(TARGET))) static float NAME(const cpu_gemv_job *j, size_t r, size_t i)  \
    {                                                                                              \
        const size_t k = j->k, nb = k / MB_Q8_BLOCK, nb4 = nb / 4 * 4;                             \
        const int8_t *w = (const int8_t *)j->w + r * k;                                            \
        const uint16_t *sw = j->scales + r * nb;                                                   \
        const int16_t *x = j->xq + i * k;                                                          \
        const float *sx = j->xs + i * nb;                                                          \
        VT a0 = ISA##_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                     \
        size_t b = q8_groups_##T(w, sw, x, sx, nb, &a0, &a1, &a2, &a3);                            \
        for (; b < nb4; b += 4) {                                                                  \
            const size_t o = b * MB_Q8_BLOCK;                                                      \
            a0 = ISA##_fmadd_ps(q8_block_##T(w + o, x + o), ISA##_set1_ps(_cvtsh_ss(sw[b]) * sx[b]), a0); \
            a1 = ISA##_fmadd_ps(q8_block_##T(w + o + 32, x + o + 32),                            \
                                ISA##_set1_ps(_cvtsh_ss(sw[b + 1]) * sx[b + 1]), a1);              \
            a2 = ISA##_fmadd_ps(q8_block_##T(w + o + 64, x + o + 64),                            \
                                ISA##_set1_ps(_cvtsh_ss(sw[b + 2]) * sx[b + 2]), a2);              \
            a3 = ISA##_fmadd_ps(q8_block_##T(w + o + 96, x + o + 96),                            \
                                ISA##_set1_ps(_cvtsh_ss(sw[b + 3]) * sx[b + 3]), a3);              \
        }                                                                                          \
        for (; b < nb; b++)                                                                        \
            a0 = ISA##_fmadd_ps(q8_block_##T(w + b * MB_Q8_BLOCK, x + b * MB_Q8_BLOCK),          \
                                ISA##_set1_ps(_cvtsh_ss(sw[b]) * sx[b]), a0);                      \
        return hsum_##T(a0, a1, a2, a3);                                                         \
    }

DEFINE_DOT(dot_f32_avx512, "avx512f,fma", __m512, 16, _mm512, avx512, MAMBA_F32)
DEFINE_DOT(dot_f16_avx512, "avx512f,fma", __m512, 16, _mm512, avx512, MAMBA_F16)
DEFINE_DOT(dot_bf16_avx512, "avx512f,fma", __m512, 16, _mm512, avx512, MAMBA_BF16)
DEFINE_DOT_Q8(dot_q8_avx512, "avx512f,avx512bw,fma,f16c", __m512, _mm512, avx512)
DEFINE_DOT(dot_f32_avx2, "avx2,fma,f16c", __m256, 8, _mm256, avx2, MAMBA_F32)
DEFINE_DOT(dot_f16_avx2, "avx2,fma,f16c", __m256, 8, _mm256, avx2, MAMBA_F16)
DEFINE_DOT(dot_bf16_avx2, "avx2,fma,f16c", __m256, 8, _mm256, avx2, MAMBA_BF16)
DEFINE_DOT_Q8(dot_q8_avx2, "avx2,fma,f16c", __m256, _mm256, avx2)
#undef DEFINE_DOT
#undef DEFINE_DOT_Q8
#endif

typedef float (*gemv_dot)(const cpu_gemv_job *j, size_t r, size_t i);

/* y for rows [r0, r1) of W and every row of x, one dot product each. */
static void gemv_rows_by(const cpu_gemv_job *j, size_t r0, size_t r1, gemv_dot dot)
{
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < j->m; i++) {
            float *y = j->y + i * j->ldy + r;
            *y = (j->accumulate ? *y : 0.0f) + dot(j, r, i) + (j->bias ? j->bias[r] : 0.0f);
        }
}

/* Whether cpu_gemv_rows runs the AVX-512 kernels (Q8_0: with x in 16 bits, job.xq). */
static int use_avx512(int portable, mamba_dtype_t wdt)
{
#if MB_CPU_AVX512
    return !portable && __builtin_cpu_supports("avx512f") && (wdt != MAMBA_Q8 || __builtin_cpu_supports("avx512bw"));
#else
    (void)portable;
    (void)wdt;
    return 0;
#endif
}

/* Whether a GEMV without AVX-512 runs the AVX2 kernels (Q8_0: with x in 16 bits, job.xq). */
static int use_avx2(int portable, mamba_dtype_t wdt)
{
#if MB_CPU_AVX512
    /* F16C came before AVX2 on every x86 line (Ivy Bridge, Piledriver); clang's builtin does
     * not know its name */
    return !portable && !use_avx512(portable, wdt) && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    (void)portable;
    (void)wdt;
    return 0;
#endif
}

/* x (m rows, ld apart, k a multiple of 32) in 16 bits into xq (m, k), a scale a block into xs */
static void quantize_x16(const float *x, size_t m, size_t k, size_t ld, int16_t *xq, float *xs)
{
    for (size_t i = 0; i < m; i++)
        for (size_t b = 0; b < k / MB_Q8_BLOCK; b++) {
            const float *v = x + i * ld + b * MB_Q8_BLOCK;
            float amax = 0;
            for (size_t c = 0; c < MB_Q8_BLOCK; c++) amax = fmaxf(amax, fabsf(v[c]));
            /* a NaN or inf in the block: its scale NaN, so the products are NaN too (as the
             * f32 GEMV's would be), never a NaN converted to int16 */
            const int finite = amax <= 3.4e38f;
            const float d = finite ? amax / 32767.0f : NAN, inv = finite && amax > 0 ? 32767.0f / amax : 0.0f;
            xs[i * (k / MB_Q8_BLOCK) + b] = d;
            for (size_t c = 0; c < MB_Q8_BLOCK; c++) {
                const float q = rintf(v[c] * inv);
                xq[i * k + b * MB_Q8_BLOCK + c] = (int16_t)(q > 32767.0f ? 32767.0f : q < -32767.0f ? -32767.0f : q);
            }
        }
}

/* The ISA kernel for the job's dtype, NULL for the portable version. */
static gemv_dot isa_dot(const cpu_gemv_job *j)
{
#if MB_CPU_AVX512
    if (j->wdt == MAMBA_Q8 && !j->xq) return NULL;
    if (use_avx512(j->portable, j->wdt))
        return j->wdt == MAMBA_Q8    ? dot_q8_avx512
               : j->wdt == MAMBA_F16  ? dot_f16_avx512
               : j->wdt == MAMBA_BF16 ? dot_bf16_avx512
                                      : dot_f32_avx512;
    if (use_avx2(j->portable, j->wdt))
        return j->wdt == MAMBA_Q8    ? dot_q8_avx2
               : j->wdt == MAMBA_F16  ? dot_f16_avx2
               : j->wdt == MAMBA_BF16 ? dot_bf16_avx2
                                      : dot_f32_avx2;
#else
    (void)j;
#endif
    return NULL;
}

void cpu_gemv_rows(const cpu_gemv_job *j, size_t r0, size_t r1)
{
    const gemv_dot dot = isa_dot(j);
    if (dot) gemv_rows_by(j, r0, r1, dot);
    else gemv_rows_generic(j, r0, r1);
}

int cpu_gemv_fused(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x_p, size_t lda, mb_ptr norm_p, float eps,
                   mb_ptr w_p, mamba_dtype_t wdt, mb_ptr bias_p, mb_ptr y_p, size_t ldy, int accumulate)
{
    if (m == 0 || m > CPU_GEMV_MAX_ROWS || !mb_gemm_dtype_ok(wdt, k))
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED,
                        "gemv: %zu rows of %s weights (k = %zu), expected 1..%d rows of F32, F16, BF16 or Q8_0 (k a "
                        "multiple of 32)", m, mb_dtype_name(wdt), k, CPU_GEMV_MAX_ROWS);
    const float *x = cpu_at(x_p), *norm_w = cpu_at(norm_p);
    const void *w = cpu_at(w_p);
    float *y = cpu_at(y_p);
    if (!x || !w || !y) return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "gemv: x, W and y are required");
    if (norm_w) {
        /* the normalized rows, once, before the threads split W's rows between them */
        if (dev->gemv_x_len < m * k) {
            float *g = mb_realloc(dev->gemv_x, m * k * sizeof *g);
            if (!g) return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "gemv: cannot allocate %zu normalized inputs", m * k);
            dev->gemv_x = g;
            dev->gemv_x_len = m * k;
        }
        for (size_t i = 0; i < m; i++) cpu_rmsnorm_row(dev->gemv_x + i * k, x + i * lda, norm_w, k, eps);
        x = dev->gemv_x;
        lda = k;
    }
    const uint16_t *scales = wdt == MAMBA_Q8 ? (const void *)((const unsigned char *)w + mb_q8_scales_offset(n, k)) : NULL;
    const int16_t *xq = NULL;
    if (wdt == MAMBA_Q8 && (use_avx512(dev->portable, wdt) || use_avx2(dev->portable, wdt))) {
        if (dev->gemv_xq_len < m * k) {
            int16_t *q = mb_realloc(dev->gemv_xq, m * k * sizeof *q);
            if (q) dev->gemv_xq = q;
            float *sx = mb_realloc(dev->gemv_xs, m * (k / MB_Q8_BLOCK) * sizeof *sx);
            if (sx) dev->gemv_xs = sx;
            if (!q || !sx) return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "gemv: cannot allocate %zu 16-bit inputs", m * k);
            dev->gemv_xq_len = m * k;
        }
        quantize_x16(x, m, k, lda, dev->gemv_xq, dev->gemv_xs);
        xq = dev->gemv_xq;
    }
    const cpu_gemv_job job = {m, k, x, lda, w, wdt, cpu_at(bias_p), y, ldy, accumulate, dev->portable, scales,
                              xq, dev->gemv_xs};
    /* one contiguous range of W's rows per thread (one stream each for the prefetchers); below
     * ~64K weights a fork costs more than the second thread saves */
#pragma omp parallel num_threads(dev->n_threads) if (n * k >= 65536)
    {
        const size_t t = (size_t)omp_get_thread_num(), nt = (size_t)omp_get_num_threads();
        cpu_gemv_rows(&job, n * t / nt, n * (t + 1) / nt);
    }
    return 0;
}
