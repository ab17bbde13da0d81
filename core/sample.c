/* Sampling from logits: greedy, temperature, top-k and top-p (nucleus), with a seeded RNG. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "api/alloc.h"

struct mamba_sampler {
    mamba_sampler_params_t p;
    uint64_t rng;
    size_t cap;
    struct pair { float logit; int32_t idx; } *pairs;
    float *prob;
};

void mamba_sampler_params_init(mamba_sampler_params_t *p)
{
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->top_p = 1.0f;
}

mamba_status_t mamba_sampler_create(const mamba_sampler_params_t *p, mamba_sampler_t **out)
{
    char *err = mb_tls_err();
    if (!p || !out) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sampler_create: NULL argument");
    *out = NULL;
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "temperature %g: expected a finite value >= 0", p->temperature);
    if (p->top_k < 0) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "top_k %d: expected >= 0", p->top_k);
    if (!(p->top_p >= 0 && p->top_p <= 1))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "top_p %g: expected 0..1", p->top_p);
    mamba_sampler_t *s = mb_calloc(1, sizeof *s);
    if (!s) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a sampler");
    s->p = *p;
    s->rng = p->seed ^ 0x853c49e6748fea9bULL;
    *out = s;
    return MAMBA_OK;
}

void mamba_sampler_free(mamba_sampler_t *s)
{
    if (!s) return;
    free(s->pairs);
    free(s->prob);
    free(s);
}

static double next_unit(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int by_logit_desc(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->idx - y->idx;
}

mamba_status_t mamba_sample(mamba_sampler_t *s, const float *logits, size_t vocab, int32_t *token)
{
    char *err = mb_tls_err();
    if (!s || !logits || !token) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: NULL argument");
    if (vocab == 0 || vocab > INT32_MAX)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: vocab = %zu", vocab);
    size_t best = 0;
    for (size_t i = 0; i < vocab; i++) {
        if (isnan(logits[i]))
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: logit %zu is NaN", i);
        if (logits[i] > logits[best]) best = i;
    }
    if (s->p.temperature == 0 || s->p.top_k == 1) {
        *token = (int32_t)best;
        return MAMBA_OK;
    }
    if (s->cap < vocab) {
        struct pair *pairs = mb_realloc(s->pairs, vocab * sizeof *pairs);
        if (pairs) s->pairs = pairs;
        float *prob = mb_realloc(s->prob, vocab * sizeof *prob);
        if (prob) s->prob = prob;
        if (!pairs || !prob) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_sample: out of memory");
        s->cap = vocab;
    }
    for (size_t i = 0; i < vocab; i++) s->pairs[i] = (struct pair){logits[i], (int32_t)i};
    qsort(s->pairs, vocab, sizeof *s->pairs, by_logit_desc);
    size_t n = vocab;
    if (s->p.top_k > 0 && (size_t)s->p.top_k < n) n = (size_t)s->p.top_k;
    const double inv_t = 1.0 / s->p.temperature, top = s->pairs[0].logit;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        s->prob[i] = (float)exp((s->pairs[i].logit - top) * inv_t);
        sum += s->prob[i];
    }
    if (s->p.top_p > 0 && s->p.top_p < 1) {
        double cum = 0;
        size_t keep = n;
        for (size_t i = 0; i < n; i++) {
            cum += s->prob[i] / sum;
            if (cum >= s->p.top_p) { keep = i + 1; break; }
        }
        n = keep;
        sum = 0;
        for (size_t i = 0; i < n; i++) sum += s->prob[i];
    }
    double r = next_unit(&s->rng) * sum, acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += s->prob[i];
        if (r < acc) { *token = s->pairs[i].idx; return MAMBA_OK; }
    }
    *token = s->pairs[n - 1].idx;
    return MAMBA_OK;
}
