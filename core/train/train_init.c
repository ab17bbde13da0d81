/* Mamba's reference initialization (mamba_ssm's Mamba layer and MambaLMHeadModel._init_weights):
 *   embeddings        N(0, 0.02)
 *   in_proj, x_proj, lm_head (untied) weights   kaiming-uniform as nn.Linear: U(-b, b), b = 1/sqrt(fan_in)
 *   out_proj weight   the same, divided by sqrt(n_layer) (rescale_prenorm_residual, one residual
 *                     per layer)
 *   conv1d weight and bias   nn.Conv1d's: U(-b, b), b = 1/sqrt(d_conv) (fan_in = 1 x d_conv)
 *   dt_proj weight    U(-r, r), r = dt_rank^-1/2 (dt_init "random", dt_scale 1)
 *   dt_proj bias      softplus^-1(dt), dt = exp(U(log 1e-3, log 1e-1)) floored at 1e-4
 *   A_log             log(n + 1) for state n (S4D-real); D, norm weights 1; linear biases 0
 *
 * The random numbers are counter-based, so that they do not depend on the thread count or on
 * the order of evaluation: parameter j (its index in the table) has the key
 *   k_j = mb_mix64(seed + (j + 1) * 0x9e3779b97f4a7c15)
 * and its i-th draw is u_j(i) = (mb_mix64(k_j + (i + 1) * 0x9e3779b97f4a7c15) >> 11) * 2^-53,
 * uniform in [0, 1), where mb_mix64 (mix64.h) is SplitMix64's finalizer. A uniform element i is
 * (2 u_j(i) - 1) b; a normal element i is Box-Muller of u_j(2i) and u_j(2i + 1):
 * sqrt(-2 ln(1 - u_j(2i))) cos(2 pi u_j(2i + 1)). Everything is computed in double and rounded
 * to float once. */
#include <math.h>
#include <string.h>

#include "train/train.h"
#include "mix64.h"
#include "api/alloc.h"

#define GOLDEN 0x9e3779b97f4a7c15ULL


static double draw(uint64_t key, uint64_t i) { return (double)(mb_mix64(key + (i + 1) * GOLDEN) >> 11) * 0x1p-53; }

typedef enum init_kind { ZEROS, ONES, UNIFORM, NORMAL, DT_BIAS, A_LOG } init_kind;

static void fill(float *dst, const mb_train_param *p, init_kind kind, double scale, uint64_t key, size_t N)
{
    const double pi = 3.14159265358979323846;
    const double lo = log(1e-3), hi = log(1e-1);
    const size_t n = p->numel;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        double v = 0;
        switch (kind) {
        case ZEROS: v = 0; break;
        case ONES: v = 1; break;
        case UNIFORM: v = (2 * draw(key, i) - 1) * scale; break;
        case NORMAL: v = sqrt(-2 * log(1 - draw(key, 2 * i))) * cos(2 * pi * draw(key, 2 * i + 1)) * scale; break;
        case DT_BIAS: {
            double dt = exp(lo + draw(key, i) * (hi - lo));
            if (dt < 1e-4) dt = 1e-4;
            v = dt + log(-expm1(-dt)); /* softplus^-1 */
            break;
        }
        case A_LOG: v = log((double)(i % N) + 1); break;
        }
        dst[i] = (float)v;
    }
}

static int ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Every parameter's initial value into host (total floats, the padding zero). */
static void init_values(const mamba_trainer_t *tr, uint64_t seed, float *host)
{
    const mamba_config_t *c = &tr->cfg;
    const double dm = c->d_model, di = c->d_inner;
    memset(host, 0, tr->total * sizeof *host);
    for (size_t j = 0; j < tr->n_params; j++) {
        const mb_train_param *p = &tr->params[j];
        const char *nm = p->name;
        const uint64_t key = mb_mix64(seed + (j + 1) * GOLDEN);
        init_kind kind = ZEROS;
        double scale = 0;
        if (j == tr->embed) {
            kind = NORMAL;
            scale = 0.02;
        } else if (ends_with(nm, "norm.weight") || ends_with(nm, "norm_f.weight") || ends_with(nm, "mixer.D")) {
            kind = ONES;
        } else if (ends_with(nm, "in_proj.weight") || j == tr->lm_head) {
            kind = UNIFORM;
            scale = 1 / sqrt(dm);
        } else if (ends_with(nm, "conv1d.weight") || ends_with(nm, "conv1d.bias")) {
            kind = UNIFORM;
            scale = 1 / sqrt((double)c->d_conv);
        } else if (ends_with(nm, "x_proj.weight")) {
            kind = UNIFORM;
            scale = 1 / sqrt(di);
        } else if (ends_with(nm, "dt_proj.weight")) {
            kind = UNIFORM;
            scale = 1 / sqrt((double)c->dt_rank);
        } else if (ends_with(nm, "dt_proj.bias")) {
            kind = DT_BIAS;
        } else if (ends_with(nm, "A_log")) {
            kind = A_LOG;
        } else if (ends_with(nm, "out_proj.weight")) {
            kind = UNIFORM;
            scale = 1 / sqrt(di) / sqrt((double)c->n_layer);
        } /* in_proj.bias, out_proj.bias: zeros */
        fill(host + p->off, p, kind, scale, key, (size_t)c->d_state);
    }
}

mamba_status_t mamba_trainer_create(mamba_context_t *ctx, const mamba_config_t *cfg, uint64_t seed,
                                    const mamba_train_options_t *opts, mamba_trainer_t **out)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    if (!cfg || !out) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_create: NULL argument");
    *out = NULL;
    mamba_trainer_t *tr;
    mamba_status_t st = mb_train_new(ctx, cfg, opts, "mamba_trainer_create", &tr);
    if (st != MAMBA_OK) return st;
    float *host = mb_malloc(tr->total * sizeof *host);
    if (!host) {
        mamba_trainer_free(tr);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_trainer_create: out of memory for %zu parameters",
                         tr->total);
    }
    init_values(tr, seed, host);
    st = mb_train_upload(tr, tr->param, host, "upload of the initial parameters");
    free(host);
    if (st != MAMBA_OK) {
        mamba_trainer_free(tr);
        return st;
    }
    *out = tr;
    return MAMBA_OK;
}
