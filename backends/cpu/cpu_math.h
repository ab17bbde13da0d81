/* Branch-free float math that the compiler vectorizes (softplus, SiLU, half and bfloat16
 * conversions; exp and the per-ISA cloning are api/vec_math.h's). Included by the files compiled with -O3
 * -fno-math-errno -fno-trapping-math -ffp-contract=fast (never -ffast-math: the exp relies
 * on exact float rounding). */
#ifndef MB_CPU_MATH_H
#define MB_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mamba.h"
#include "api/vec_math.h"

/* softplus(v) = max(v, 0) + log1p(w), w = exp(-|v|) in (0, 1]. log1p(w) = 2 atanh(s) with
 * s = w / (2 + w) in (0, 1/3]: the odd series to s^13 is within 1e-8 relative, exact for
 * small w, and has no branch or integer step, so it vectorizes. PyTorch returns v above 20. */
static inline float fsoftplus(float v)
{
    const float w = fexp(-fabsf(v));
    const float s = w / (2.0f + w), s2 = s * s;
    float p = 2.0f / 13;
    p = p * s2 + 2.0f / 11;
    p = p * s2 + 2.0f / 9;
    p = p * s2 + 2.0f / 7;
    p = p * s2 + 2.0f / 5;
    p = p * s2 + 2.0f / 3;
    p = p * s2 + 2.0f;
    const float r = (v > 0.0f ? v : 0.0f) + p * s;
    return v > 20.0f ? v : r;
}

static inline float fsilu(float v) { return v / (1.0f + fexp(-v)); }

/* IEEE half to float without a branch or a table, so that it vectorizes: the 15 bits
 * shifted into a float's place are the value times 2^-112 (subnormal halves included, as
 * float subnormals), so one exact multiply rescales them; exponent 31 (inf, NaN) is set
 * apart. */
static inline float f16_to_f32_fast(uint16_t h)
{
    const uint32_t em = (uint32_t)(h & 0x7fffu) << 13, sign = (uint32_t)(h & 0x8000u) << 16;
    const float scaled = as_float((int32_t)em) * 0x1p112f;
    const float special = as_float((int32_t)(em | 0x7f800000u));
    const float mag = em >= (0x7c00u << 13) ? special : scaled;
    return as_float((int32_t)((uint32_t)as_int(mag) | sign));
}

static inline float bf16_to_f32_fast(uint16_t h) { return as_float((int32_t)((uint32_t)h << 16)); }

/* Element i of a weight array stored as F32, F16 or BF16 (mamba_dtype_t). */
static inline float weight_f32(const void *w, size_t i, int dtype)
{
    if (dtype == MAMBA_F32) return ((const float *)w)[i];
    const uint16_t h = ((const uint16_t *)w)[i];
    return dtype == MAMBA_F16 ? f16_to_f32_fast(h) : bf16_to_f32_fast(h);
}

#endif
