/* IEEE half and bfloat16 conversions (round to nearest even), dtype sizes. */
#include <string.h>

#include "internal.h"

size_t mb_dtype_size(mamba_dtype_t dt)
{
    switch (dt) {
    case MAMBA_F32: case MAMBA_I32: return 4;
    case MAMBA_F16: case MAMBA_BF16: return 2;
    case MAMBA_I64: case MAMBA_F64: return 8;
    }
    return 0;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float mamba_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return u2f(sign | 0x7f800000u | (man << 13));   /* inf, nan */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t mamba_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absu > 0x7f800000u ? 0x200 : 0));
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds past 65504 */
    if (absu < 0x38800000u) {
        /* subnormal half: value / 2^-24 rounded to nearest even */
        float v = u2f(absu) * 16777216.0f;
        uint32_t m = (uint32_t)v;
        float rem = v - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t e = ((absu >> 23) - 112) << 10;
    uint32_t man = absu & 0x7fffff;
    uint32_t h = e | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float mamba_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t mamba_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* 16-bit element i of possibly unaligned data (a safetensors file does not align tensors) */
static uint16_t u16_at(const void *src, size_t i)
{
    uint16_t h;
    memcpy(&h, (const unsigned char *)src + 2 * i, 2);
    return h;
}

void mb_to_f32(float *dst, const void *src, mamba_dtype_t dt, size_t n)
{
    switch (dt) {
    case MAMBA_F32: memcpy(dst, src, n * 4); break;
    case MAMBA_F16: for (size_t i = 0; i < n; i++) dst[i] = mamba_f16_to_f32(u16_at(src, i)); break;
    case MAMBA_BF16: for (size_t i = 0; i < n; i++) dst[i] = mamba_bf16_to_f32(u16_at(src, i)); break;
    case MAMBA_F64: for (size_t i = 0; i < n; i++) { double d; memcpy(&d, (const char *)src + 8 * i, 8); dst[i] = (float)d; } break;
    case MAMBA_I64: case MAMBA_I32: break;
    }
}

void mb_from_f32(void *dst, const float *src, mamba_dtype_t dt, size_t n)
{
    uint16_t *h = dst;
    switch (dt) {
    case MAMBA_F32: memcpy(dst, src, n * 4); break;
    case MAMBA_F16: for (size_t i = 0; i < n; i++) h[i] = mamba_f32_to_f16(src[i]); break;
    case MAMBA_BF16: for (size_t i = 0; i < n; i++) h[i] = mamba_f32_to_bf16(src[i]); break;
    case MAMBA_F64: for (size_t i = 0; i < n; i++) { double d = src[i]; memcpy((char *)dst + 8 * i, &d, 8); } break;
    case MAMBA_I64: case MAMBA_I32: break;
    }
}
