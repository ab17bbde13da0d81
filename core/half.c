/* The public number-format calls: the neutral layer's conversions (api/dtype.h). */
#include "internal.h"

float mamba_f16_to_f32(uint16_t h) { return mb_f16_to_f32(h); }
uint16_t mamba_f32_to_f16(float f) { return mb_f32_to_f16(f); }
float mamba_bf16_to_f32(uint16_t h) { return mb_bf16_to_f32(h); }
uint16_t mamba_f32_to_bf16(float f) { return mb_f32_to_bf16(f); }
