/* Models with seeded random weights of realistic scale: what benchmarks and the README's
 * first command run, since no checkpoint can be downloaded. Element i of parameter j is a
 * pure function of (seed, j, i), so the result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "weights.h"
#include "mix64.h"
#include "api/alloc.h"


/* Uniform in [0, 1) with 24 bits. */
static float unit(uint64_t key) { return (float)(mb_mix64(key) >> 40) * (1.0f / 16777216.0f); }

typedef struct synth { uint64_t seed; size_t index; } synth;

static mamba_status_t fill_synthetic(mamba_model_t *m, const mb_spec *s, void *host, float *tmp,
                                     const void **src, void *user)
{
    synth *sy = user;
    const uint64_t key = mb_mix64(sy->seed ^ mb_mix64(0x9e3779b97f4a7c15ULL * (uint64_t)++sy->index));
    const size_t n = (size_t)mb_spec_count(s);
    const int64_t N = m->cfg.d_state;
    const float scale = s->scale;
    const mb_init init = s->init;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = 0;
        switch (init) {
        case MB_INIT_ZEROS: v = 0; break;
        case MB_INIT_ONES: v = 1; break;
        case MB_INIT_UNIFORM: v = (2 * unit(key + i) - 1) * scale; break;
        case MB_INIT_DT_BIAS: {
            float dt = expf(logf(1e-3f) + unit(key + i) * (logf(1e-1f) - logf(1e-3f)));
            v = dt + logf(-expm1f(-dt)); /* softplus^-1 */
            break;
        }
        case MB_INIT_A_LOG: v = logf((float)(i % (size_t)N) + 1); break;
        }
        tmp[i] = v;
    }
    if (s->dtype == MAMBA_F32) {
        *src = tmp;
    } else {
        mb_from_f32(host, tmp, s->dtype, n);
        *src = host;
    }
    return MAMBA_OK;
}

mamba_status_t mamba_model_create_synthetic(mamba_context_t *ctx, const mamba_config_t *cfg_in,
                                            mamba_dtype_t dtype, uint64_t seed, mamba_model_t **out)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    if (!cfg_in || !out) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_create_synthetic: NULL argument");
    *out = NULL;
    if (dtype != MAMBA_F32 && dtype != MAMBA_F16 && dtype != MAMBA_BF16 && dtype != MAMBA_Q8)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "synthetic weights dtype %s: expected F32, F16, BF16 or Q8_0",
                         mamba_dtype_name(dtype));
    mamba_config_t cfg = *cfg_in;
    mamba_status_t st = mb_config_finish(&cfg, "synthetic config", ctx->err);
    if (st != MAMBA_OK) return st;
    mamba_model_t *m;
    if ((st = mb_model_new(ctx, &cfg, &m)) != MAMBA_OK) return st;
    size_t n;
    mb_spec *specs = mb_calloc(mb_specs_count(m), sizeof *specs);
    if (!specs) {
        mamba_model_free(m);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "synthetic model: out of memory for the tensor table");
    }
    mb_specs_build(m, specs, &n);
    /* Q8_0: generated in f32 and quantized as a checkpoint's would be at load (the matrices
     * that stay in high precision stay f32) */
    const mamba_dtype_t gen = dtype == MAMBA_Q8 ? MAMBA_F32 : dtype;
    for (size_t i = 0; i < n; i++) specs[i].dtype = specs[i].is_matrix ? gen : MAMBA_F32;
    synth sy = {seed, 0};
    st = mb_model_fill(m, specs, n, dtype == MAMBA_Q8 || ctx->weights == MAMBA_WEIGHTS_Q8, fill_synthetic, &sy);
    free(specs);
    if (st != MAMBA_OK) {
        mamba_model_free(m);
        return st;
    }
    *out = m;
    return MAMBA_OK;
}
