/* Model weights: a table of every parameter (name, shape, how to initialize it), filled from
 * a checkpoint or from a seeded generator, packed into one device allocation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "weights.h"
#include "fault.h"

#define ALIGN 256

static void spec_set(mb_spec *s, const char *name, int ndim, int64_t d0, int64_t d1, mb_init init,
                     float scale, int is_matrix, int optional)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->init = init;
    s->scale = scale;
    s->is_matrix = is_matrix;
    s->optional = optional;
}

size_t mb_specs_count(const mamba_config_t *c) { return 3 + (size_t)c->n_layer * 12; }

/* The parameters of a model, in the order they are packed. Pointers into m are bound. */
void mb_specs_build(mamba_model_t *m, mb_spec *specs, size_t *n)
{
    const mamba_config_t *c = &m->cfg;
    const int64_t di = c->d_inner, dm = c->d_model, N = c->d_state;
    size_t k = 0;
    char name[MB_NAME_LEN];
    mb_spec *s;
    s = &specs[k++];
    spec_set(s, "backbone.embeddings.weight", 2, c->vocab_size, dm, MB_INIT_UNIFORM, 0.02f * 1.7320508f, 1, 0);
    s->mat = &m->embedding;
    for (int l = 0; l < c->n_layer; l++) {
        mb_layer_weights *w = &m->layers[l];
#define LNAME(suffix) (snprintf(name, sizeof name, "backbone.layers.%d.%s", l, suffix), name)
        s = &specs[k++];
        spec_set(s, LNAME("norm.weight"), 1, dm, 0, MB_INIT_ONES, 0, 0, 0);
        s->vec = &w->norm;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.in_proj.weight"), 2, 2 * di, dm, MB_INIT_UNIFORM, 1.0f / sqrtf((float)dm), 1, 0);
        s->mat = &w->in_proj;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.in_proj.bias"), 1, 2 * di, 0, MB_INIT_ZEROS, 0, 0, !c->use_bias);
        s->vec = &w->in_proj_bias;
        s->skip = !c->use_bias;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.conv1d.weight"), 3, di, 1, MB_INIT_UNIFORM, 1.0f / sqrtf((float)c->d_conv), 0, 0);
        s->shape[2] = c->d_conv;
        s->vec = &w->conv_w;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.conv1d.bias"), 1, di, 0, MB_INIT_UNIFORM, 1.0f / sqrtf((float)c->d_conv), 0, 0);
        s->vec = &w->conv_b;
        s->skip = !c->use_conv_bias;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.x_proj.weight"), 2, c->dt_rank + 2 * N, di, MB_INIT_UNIFORM, 1.0f / sqrtf((float)di), 1, 0);
        s->mat = &w->x_proj;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.dt_proj.weight"), 2, di, c->dt_rank, MB_INIT_UNIFORM, 1.0f / sqrtf((float)c->dt_rank), 1, 0);
        s->mat = &w->dt_proj;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.dt_proj.bias"), 1, di, 0, MB_INIT_DT_BIAS, 0, 0, 0);
        s->vec = &w->dt_bias;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.A_log"), 2, di, N, MB_INIT_A_LOG, 0, 0, 0);
        s->vec = &w->A;
        s->neg_exp = 1;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.D"), 1, di, 0, MB_INIT_ONES, 0, 0, 0);
        s->vec = &w->D;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.out_proj.weight"), 2, dm, di, MB_INIT_UNIFORM,
                 1.0f / sqrtf((float)di) / sqrtf((float)c->n_layer), 1, 0);
        s->mat = &w->out_proj;
        s = &specs[k++];
        spec_set(s, LNAME("mixer.out_proj.bias"), 1, dm, 0, MB_INIT_ZEROS, 0, 0, 0);
        s->vec = &w->out_proj_bias;
        s->skip = !c->use_bias;
#undef LNAME
    }
    s = &specs[k++];
    spec_set(s, "backbone.norm_f.weight", 1, dm, 0, MB_INIT_ONES, 0, 0, 0);
    s->vec = &m->norm_f;
    s = &specs[k++];
    spec_set(s, "lm_head.weight", 2, c->vocab_size, dm, MB_INIT_UNIFORM, 0.02f * 1.7320508f, 1, 0);
    s->mat = &m->lm_head;
    s->skip = c->tie_embeddings;
    *n = k;
}

uint64_t mb_spec_count(const mb_spec *s)
{
    uint64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= (uint64_t)s->shape[i];
    return n;
}

/* Assign offsets in the packed buffer; matrices in s->dtype, vectors in f32. */
static size_t pack(mb_spec *specs, size_t n, uint64_t *n_params)
{
    size_t off = 0;
    *n_params = 0;
    for (size_t i = 0; i < n; i++) {
        mb_spec *s = &specs[i];
        if (s->skip) continue;
        if (!s->is_matrix) s->dtype = MAMBA_F32;
        s->offset = off;
        s->bytes = (size_t)mb_spec_count(s) * mb_dtype_size(s->dtype);
        off += (s->bytes + ALIGN - 1) / ALIGN * ALIGN;
        *n_params += mb_spec_count(s);
    }
    return off ? off : ALIGN;
}

mamba_status_t mb_model_new(mamba_context_t *ctx, const mamba_config_t *cfg, mamba_model_t **out)
{
    mamba_model_t *m = mb_calloc(1, sizeof *m);
    if (!m) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a model");
    m->ctx = ctx;
    m->cfg = *cfg;
    m->layers = mb_calloc((size_t)cfg->n_layer, sizeof *m->layers);
    if (!m->layers) {
        free(m);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a model");
    }
    ctx->n_models++;
    *out = m;
    return MAMBA_OK;
}

/* Allocate the packed buffer, bind every pointer, and fill each parameter with fill(). */
mamba_status_t mb_model_fill(mamba_model_t *m, mb_spec *specs, size_t n, mb_fill_fn fill, void *user)
{
    mamba_context_t *ctx = m->ctx;
    m->weight_bytes = pack(specs, n, &m->n_params);
    int rc = mb_dev_alloc(ctx, m->weight_bytes, &m->weights);
    if (rc != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY,
                         "%s backend: cannot allocate %zu bytes for the weights of a model with %llu parameters: %s",
                         ctx->backend_name, m->weight_bytes, (unsigned long long)m->n_params,
                         mb_dev_alloc_error(ctx));
    size_t max_bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (!specs[i].skip && specs[i].bytes > max_bytes) max_bytes = specs[i].bytes;
    void *host = mb_malloc(max_bytes ? max_bytes : 1);
    float *tmp = mb_malloc(max_bytes ? max_bytes * 2 : 1); /* f32 staging for conversions */
    if (!host || !tmp) {
        free(host);
        free(tmp);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory staging %zu bytes of weights", max_bytes);
    }
    mamba_status_t st = MAMBA_OK;
    for (size_t i = 0; i < n && st == MAMBA_OK; i++) {
        mb_spec *s = &specs[i];
        if (s->skip) continue;
        mb_ptr p = {m->weights, s->offset};
        if (s->mat) *s->mat = (mb_mat){p, s->dtype};
        if (s->vec) *s->vec = p;
        const void *src = NULL;
        st = fill(m, s, host, tmp, &src, user);
        if (st != MAMBA_OK) break;
        if (s->neg_exp) {
            float *a = (float *)src == tmp ? tmp : memcpy(tmp, src, s->bytes);
            for (size_t j = 0; j < s->bytes / 4; j++) a[j] = -expf(a[j]);
            src = a;
        }
        rc = ctx->be->upload(ctx->dev, p, src, s->bytes);
        if (rc != 0) st = mb_backend_fail(ctx, rc, s->name);
    }
    free(host);
    free(tmp);
    if (st == MAMBA_OK) {
        rc = ctx->be->sync(ctx->dev);
        if (rc != 0) st = mb_backend_fail(ctx, rc, "upload of the weights");
    }
    if (m->cfg.tie_embeddings) m->lm_head = m->embedding;
    m->wdtype = m->embedding.dt;
    return st;
}

void mamba_model_free(mamba_model_t *m)
{
    if (!m) return;
    mamba_context_t *ctx = m->ctx;
    mamba_state_free(m->forward_state);
    if (m->n_states)
        mb_log(ctx, MAMBA_LOG_WARN, "model freed while %d state(s) still use it: free them first", m->n_states);
    if (m->weights) ctx->be->free(ctx->dev, m->weights);
    free(m->layers);
    free(m);
    ctx->n_models--;
}

mamba_status_t mamba_model_info(const mamba_model_t *m, mamba_model_info_t *info)
{
    if (!m || !info) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_info: NULL argument");
    info->config = m->cfg;
    info->n_params = m->n_params;
    info->weight_bytes = m->weight_bytes;
    info->dtype = m->wdtype;
    return MAMBA_OK;
}
