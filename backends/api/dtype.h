/* Dtype sizes and names, IEEE half and bfloat16 conversions (round to nearest even): the part of
 * the number formats that the core and every backend share. Header-only, so that a backend
 * module never calls into libmamba (whose internal symbols are hidden). */
#ifndef MB_API_DTYPE_H
#define MB_API_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mamba.h"

static inline size_t mb_dtype_size(mamba_dtype_t dt)
{
    switch (dt) {
    case MAMBA_F32: case MAMBA_I32: return 4;
    case MAMBA_F16: case MAMBA_BF16: return 2;
    case MAMBA_I64: case MAMBA_F64: return 8;
    }
    return 0;
}

static inline const char *mb_dtype_name(mamba_dtype_t dt)
{
    switch (dt) {
    case MAMBA_F32: return "F32";
    case MAMBA_F16: return "F16";
    case MAMBA_BF16: return "BF16";
    case MAMBA_I64: return "I64";
    case MAMBA_I32: return "I32";
    case MAMBA_F64: return "F64";
    }
    return "?";
}

static inline uint32_t mb_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float mb_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float mb_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return mb_u2f(sign | 0x7f800000u | (man << 13)); /* inf, nan */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        const float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return mb_u2f(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t mb_f32_to_f16(float f)
{
    const uint32_t u = mb_f2u(f);
    const uint32_t sign = (u >> 16) & 0x8000;
    const uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absu > 0x7f800000u ? 0x200 : 0));
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past 65504 */
    if (absu < 0x38800000u) {
        /* subnormal half: value / 2^-24 rounded to nearest even */
        const float v = mb_u2f(absu) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        const float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    const uint32_t e = ((absu >> 23) - 112) << 10;
    const uint32_t man = absu & 0x7fffff;
    uint32_t h = e | (man >> 13);
    const uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float mb_bf16_to_f32(uint16_t h) { return mb_u2f((uint32_t)h << 16); }

static inline uint16_t mb_f32_to_bf16(float f)
{
    uint32_t u = mb_f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* 16-bit element i of possibly unaligned data (a safetensors file does not align tensors) */
static inline uint16_t mb_u16_at(const void *src, size_t i)
{
    uint16_t h;
    memcpy(&h, (const unsigned char *)src + 2 * i, 2);
    return h;
}

/* Convert n elements of src (dtype) to f32; integer dtypes are left alone. */
static inline void mb_to_f32(float *dst, const void *src, mamba_dtype_t dt, size_t n)
{
    switch (dt) {
    case MAMBA_F32: memcpy(dst, src, n * 4); break;
    case MAMBA_F16: for (size_t i = 0; i < n; i++) dst[i] = mb_f16_to_f32(mb_u16_at(src, i)); break;
    case MAMBA_BF16: for (size_t i = 0; i < n; i++) dst[i] = mb_bf16_to_f32(mb_u16_at(src, i)); break;
    case MAMBA_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, (const char *)src + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    case MAMBA_I64: case MAMBA_I32: break;
    }
}

static inline void mb_from_f32(void *dst, const float *src, mamba_dtype_t dt, size_t n)
{
    uint16_t *h = (uint16_t *)dst;
    switch (dt) {
    case MAMBA_F32: memcpy(dst, src, n * 4); break;
    case MAMBA_F16: for (size_t i = 0; i < n; i++) h[i] = mb_f32_to_f16(src[i]); break;
    case MAMBA_BF16: for (size_t i = 0; i < n; i++) h[i] = mb_f32_to_bf16(src[i]); break;
    case MAMBA_F64:
        for (size_t i = 0; i < n; i++) {
            const double d = src[i];
            memcpy((char *)dst + 8 * i, &d, 8);
        }
        break;
    case MAMBA_I64: case MAMBA_I32: break;
    }
}

#endif
