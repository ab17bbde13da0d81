/* The float exp that the compiler vectorizes and the per-ISA cloning of hot loops, for the
 * CPU backend's kernels and the core's sampler (glibc's expf is scalar unless built with
 * -ffast-math). Never compile its users with -ffast-math: the exp relies on exact float
 * rounding. */
#ifndef MB_API_VEC_MATH_H
#define MB_API_VEC_MATH_H

#include <stdint.h>
#include <string.h>

/* An AVX-512, an AVX2 and a baseline copy of a hot loop, picked at load time. Not in
 * sanitizer builds: the clones' ifunc resolver runs before the sanitizer's runtime is up (a
 * ThreadSanitizer build crashed while loading the library). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define MB_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MB_CPU_CLONES
#endif

static inline float as_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t as_int(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

/* exp(x), about 1 ulp on [-86, 88]; clamped outside (exp(-86) = 4e-38 stands for 0). */
static inline float fexp(float xin)
{
    float x = xin < -86.0f ? -86.0f : xin;
    x = x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    int32_t n = as_int(t) - as_int(magic);
    float k = t - magic;
    float r = x - k * 0.693145751953125f;   /* ln 2, split in two for exactness */
    r = r - k * 1.42860682030941723e-06f;
    /* exp(r) on |r| <= ln2/2: Taylor to degree 6, error below 1e-7 relative */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n scaling in unsigned arithmetic: defined for any n (garbage when x is NaN, which the
     * select below returns instead) */
    const float e = as_float((int32_t)((uint32_t)as_int(p) + ((uint32_t)n << 23)));
    return xin != xin ? xin : e;
}

#endif
