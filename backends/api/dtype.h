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
    case MAMBA_I8: case MAMBA_Q8: return 1; /* Q8_0: the int8 values; with the scales: mb_q8_bytes */
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
    case MAMBA_I8: return "I8";
    case MAMBA_Q8: return "Q8_0";
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
    case MAMBA_I64: case MAMBA_I32: case MAMBA_I8: case MAMBA_Q8: break;
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
    case MAMBA_I64: case MAMBA_I32: case MAMBA_I8: case MAMBA_Q8: break;
    }
}

/* ---- Q8_0 weights ---------------------------------------------------------------------------
 * A matrix W (n, k), k a multiple of MB_Q8_BLOCK, in one allocation: the int8 values q (n, k)
 * row-major, then, from the next multiple of 256 bytes, the fp16 scales s (n, k / 32) row-major;
 * W[r, c] = q[r, c] * s[r, c / 32]. Values and scales apart, so that a row's int8 values are
 * contiguous and 32-byte aligned for vector loads (k is a multiple of 32), and a block's scale
 * is one 2-byte load beside them. */
#define MB_Q8_BLOCK 32

static inline size_t mb_q8_scales_offset(size_t n, size_t k) { return (n * k + 255) / 256 * 256; }
static inline size_t mb_q8_bytes(size_t n, size_t k) { return mb_q8_scales_offset(n, k) + n * (k / MB_Q8_BLOCK) * 2; }

/* Bytes of a matrix (n, k) in dt on the device. */
static inline size_t mb_mat_bytes(mamba_dtype_t dt, size_t n, size_t k)
{
    return dt == MAMBA_Q8 ? mb_q8_bytes(n, k) : n * k * mb_dtype_size(dt);
}

/* One block: scale = max|w| / 127 rounded to fp16, q = round(w / scale) (half away from zero)
 * in [-127, 127]; an all-zero block has scale 0 and q 0. Returns 0, or -1 when the scale does
 * not fit an fp16 (max|w| above 65504 * 127) or w is not finite. */
static inline int mb_q8_quantize_block(const float *w, int8_t *q, uint16_t *scale)
{
    float amax = 0;
    for (int i = 0; i < MB_Q8_BLOCK; i++) {
        const float a = w[i] < 0 ? -w[i] : w[i];
        if (!(a <= 3.4e38f)) return -1;
        if (a > amax) amax = a;
    }
    const uint16_t h = mb_f32_to_f16(amax / 127.0f);
    if ((h & 0x7c00) == 0x7c00) return -1;
    *scale = h;
    const float d = mb_f16_to_f32(h);
    for (int i = 0; i < MB_Q8_BLOCK; i++) {
        float v = d > 0 ? w[i] / d : 0.0f;
        v = v < 0 ? v - 0.5f : v + 0.5f;
        int iv = (int)v; /* truncation toward zero of v +- 0.5: round half away from zero */
        iv = iv > 127 ? 127 : iv < -127 ? -127 : iv;
        q[i] = (int8_t)iv;
    }
    return 0;
}

/* Quantize W (n, k) f32 into dst (mb_q8_bytes(n, k)). Returns -1 - the row of the first block that
 * cannot be quantized (see mb_q8_quantize_block), else 0. */
static inline long mb_q8_quantize(void *dst, const float *w, size_t n, size_t k)
{
    int8_t *q = (int8_t *)dst;
    unsigned char *sc = (unsigned char *)dst + mb_q8_scales_offset(n, k);
    const size_t nb = k / MB_Q8_BLOCK;
    memset(q + n * k, 0, mb_q8_scales_offset(n, k) - n * k);
    for (size_t r = 0; r < n; r++)
        for (size_t b = 0; b < nb; b++) {
            uint16_t h;
            if (mb_q8_quantize_block(w + r * k + b * MB_Q8_BLOCK, q + r * k + b * MB_Q8_BLOCK, &h) != 0)
                return -1 - (long)r;
            memcpy(sc + 2 * (r * nb + b), &h, 2);
        }
    return 0;
}

/* Row r of a Q8_0 matrix (n, k) at src as k floats. */
static inline void mb_q8_row_to_f32(float *dst, const void *src, size_t n, size_t k, size_t r)
{
    const int8_t *q = (const int8_t *)src + r * k;
    const unsigned char *sc = (const unsigned char *)src + mb_q8_scales_offset(n, k);
    const size_t nb = k / MB_Q8_BLOCK;
    for (size_t b = 0; b < nb; b++) {
        const float d = mb_f16_to_f32(mb_u16_at(sc, r * nb + b));
        for (int i = 0; i < MB_Q8_BLOCK; i++) dst[b * MB_Q8_BLOCK + i] = (float)q[b * MB_Q8_BLOCK + i] * d;
    }
}

/* A matrix (n, k) in dt (any weight dtype, Q8_0 included) as f32. */
static inline void mb_mat_to_f32(float *dst, const void *src, mamba_dtype_t dt, size_t n, size_t k)
{
    if (dt != MAMBA_Q8) {
        mb_to_f32(dst, src, dt, n * k);
        return;
    }
    for (size_t r = 0; r < n; r++) mb_q8_row_to_f32(dst + r * k, src, n, k, r);
}

#endif
