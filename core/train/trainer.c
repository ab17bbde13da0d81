/* The trainer's options, its parameter table (Hugging Face names and order, the loader's), its
 * buffers, and reading parameters and gradients back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train.h"
#include "api/alloc.h"

void mamba_train_options_init(mamba_train_options_t *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->lr = 1e-3f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.1f;
    o->max_grad_norm = 1.0f;
    o->schedule = MAMBA_LR_CONSTANT;
    o->min_lr_ratio = 0.1f;
}

mamba_status_t mb_train_check_options(mamba_context_t *ctx, const mamba_train_options_t *o)
{
    char *err = ctx ? ctx->err : mb_tls_err();
    const struct { const char *name; double v, lo, hi; int lo_open, hi_open; } f[] = {
        {"lr", o->lr, 0, 1e30, 1, 0},
        {"beta1", o->beta1, 0, 1, 0, 1},
        {"beta2", o->beta2, 0, 1, 0, 1},
        {"eps", o->eps, 0, 1, 1, 0},
        {"weight_decay", o->weight_decay, 0, 1e30, 0, 0},
        {"max_grad_norm", o->max_grad_norm, 0, 1e30, 0, 0},
        {"min_lr_ratio", o->min_lr_ratio, 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const double v = f[i].v;
        const int ok = isfinite(v) && (f[i].lo_open ? v > f[i].lo : v >= f[i].lo) &&
                       (f[i].hi_open ? v < f[i].hi : v <= f[i].hi);
        if (!ok)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "train options: %s = %g, expected %s%g, %g%s", f[i].name,
                             v, f[i].lo_open ? "(" : "[", f[i].lo, f[i].hi, f[i].hi_open ? ")" : "]");
    }
    if (o->schedule != MAMBA_LR_CONSTANT && o->schedule != MAMBA_LR_WARMUP_COSINE)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "train options: schedule = %d, expected MAMBA_LR_CONSTANT or MAMBA_LR_WARMUP_COSINE",
                         (int)o->schedule);
    if (o->warmup_steps < 0 || o->total_steps < 0)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "train options: warmup_steps = %ld and total_steps = %ld must not be negative", o->warmup_steps,
                         o->total_steps);
    return MAMBA_OK;
}

/* ---- the parameter table ---- */

static size_t add(mamba_trainer_t *tr, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    mb_train_param *p = &tr->params[tr->n_params];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->shape[2] = d2;
    p->numel = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1) * (size_t)(ndim > 2 ? d2 : 1);
    p->off = tr->total;
    /* Mamba's reference optimizer groups: weight decay on every weight of two or more
     * dimensions except A_log; none on A_log, D, biases and norm weights */
    p->decay = ndim >= 2 && !strstr(name, "A_log");
    tr->total += (p->numel + MB_TRAIN_ALIGN - 1) / MB_TRAIN_ALIGN * MB_TRAIN_ALIGN;
    return tr->n_params++;
}

/* The table, in the order (and under the names) of the checkpoint loader. */
static void build_table(mamba_trainer_t *tr)
{
    const mamba_config_t *c = &tr->cfg;
    const int64_t dm = c->d_model, di = c->d_inner, N = c->d_state, rk = c->dt_rank, V = c->vocab_size;
    char name[MB_NAME_LEN];
    tr->embed = add(tr, "backbone.embeddings.weight", 2, V, dm, 0);
    for (int l = 0; l < c->n_layer; l++) {
        mb_train_layer *ly = &tr->layers[l];
#define LNAME(suffix) (snprintf(name, sizeof name, "backbone.layers.%d.%s", l, suffix), name)
        ly->norm = add(tr, LNAME("norm.weight"), 1, dm, 0, 0);
        ly->in_w = add(tr, LNAME("mixer.in_proj.weight"), 2, 2 * di, dm, 0);
        ly->in_b = c->use_bias ? add(tr, LNAME("mixer.in_proj.bias"), 1, 2 * di, 0, 0) : MB_TRAIN_NONE;
        ly->conv_w = add(tr, LNAME("mixer.conv1d.weight"), 3, di, 1, c->d_conv);
        ly->conv_b = c->use_conv_bias ? add(tr, LNAME("mixer.conv1d.bias"), 1, di, 0, 0) : MB_TRAIN_NONE;
        ly->x_w = add(tr, LNAME("mixer.x_proj.weight"), 2, rk + 2 * N, di, 0);
        ly->dt_w = add(tr, LNAME("mixer.dt_proj.weight"), 2, di, rk, 0);
        ly->dt_b = add(tr, LNAME("mixer.dt_proj.bias"), 1, di, 0, 0);
        ly->A_log = add(tr, LNAME("mixer.A_log"), 2, di, N, 0);
        ly->D = add(tr, LNAME("mixer.D"), 1, di, 0, 0);
        ly->out_w = add(tr, LNAME("mixer.out_proj.weight"), 2, dm, di, 0);
        ly->out_b = c->use_bias ? add(tr, LNAME("mixer.out_proj.bias"), 1, dm, 0, 0) : MB_TRAIN_NONE;
#undef LNAME
    }
    tr->norm_f = add(tr, "backbone.norm_f.weight", 1, dm, 0, 0);
    tr->lm_head = c->tie_embeddings ? MB_TRAIN_NONE : add(tr, "lm_head.weight", 2, V, dm, 0);
}

size_t mb_train_find(const mamba_trainer_t *tr, const char *name)
{
    for (size_t i = 0; i < tr->n_params; i++)
        if (strcmp(tr->params[i].name, name) == 0) return i;
    return MB_TRAIN_NONE;
}

/* ---- creation ---- */

/* MAMBA_ERR_UNSUPPORTED unless the backend has every op training needs. */
static mamba_status_t check_backend(mamba_context_t *ctx)
{
    const mb_train_ops *t = ctx->be->train;
    if (!t)
        return mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED, "the %s backend cannot train (it has no training ops)",
                         ctx->backend_name);
    if (!ctx->ops->scan_backward)
        return mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED, "the %s backend cannot train (it has no scan backward)",
                         ctx->backend_name);
    const struct { const void *fn; const char *name; } ops[] = {
        {(const void *)t->gemm_f32, "gemm_f32"}, {(const void *)t->rmsnorm_backward, "rmsnorm_backward"},
        {(const void *)t->conv_silu_backward, "conv_silu_backward"}, {(const void *)t->embed_backward, "embed_backward"},
        {(const void *)t->cross_entropy, "cross_entropy"}, {(const void *)t->sum_squares, "sum_squares"},
        {(const void *)t->adamw, "adamw"}, {(const void *)t->axpy, "axpy"}, {(const void *)t->neg_exp, "neg_exp"},
        {(const void *)t->mul_acc, "mul_acc"},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!ops[i].fn)
            return mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED, "the %s backend cannot train (it has no %s op)",
                             ctx->backend_name, ops[i].name);
    return MAMBA_OK;
}

static mamba_status_t alloc_zeroed(mamba_trainer_t *tr, size_t bytes, mb_buffer **out, const char *what)
{
    mamba_context_t *ctx = tr->ctx;
    if (mb_dev_alloc(ctx, bytes ? bytes : 4, out) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate %zu bytes for the trainer's %s: %s",
                         ctx->backend_name, bytes, what, mb_dev_alloc_error(ctx));
    MB_TRY_BE(ctx, ctx->dv->fill_zero(ctx->dev, (mb_ptr){*out, 0}, bytes ? bytes : 4), what);
    return MAMBA_OK;
}

mamba_status_t mb_train_new(mamba_context_t *ctx, const mamba_config_t *cfg_in, const mamba_train_options_t *opts,
                            const char *where, mamba_trainer_t **out)
{
    *out = NULL;
    mamba_config_t cfg = *cfg_in;
    mamba_status_t st = mb_config_finish(&cfg, where, ctx->err);
    if (st != MAMBA_OK) return st;
    if (strcmp(cfg.model_type, "mamba") != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED,
                         "%s: training supports model_type 'mamba' (Mamba-1) only, not '%s'", where, cfg.model_type);
    mamba_train_options_t o;
    mamba_train_options_init(&o);
    if (opts) o = *opts;
    if ((st = mb_train_check_options(ctx, &o)) != MAMBA_OK) return st;
    if ((st = check_backend(ctx)) != MAMBA_OK) return st;
    mamba_trainer_t *tr = mb_calloc(1, sizeof *tr);
    const size_t max_params = 3 + 12 * (size_t)cfg.n_layer;
    if (tr) tr->params = mb_calloc(max_params, sizeof *tr->params);
    if (tr) tr->layers = mb_calloc((size_t)cfg.n_layer, sizeof *tr->layers);
    if (!tr || !tr->params || !tr->layers) {
        if (tr) {
            free(tr->params);
            free(tr->layers);
        }
        free(tr);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory creating a trainer", where);
    }
    tr->ctx = ctx;
    tr->tops = ctx->be->train;
    tr->cfg = cfg;
    tr->opts = o;
    tr->A_stale = 1;
    build_table(tr);
    const size_t di = (size_t)cfg.d_inner, N = (size_t)cfg.d_state;
    tr->A_stride = (di * N + MB_TRAIN_ALIGN - 1) / MB_TRAIN_ALIGN * MB_TRAIN_ALIGN;
    const size_t bytes = tr->total * sizeof(float);
    if ((st = alloc_zeroed(tr, bytes, &tr->param, "parameters")) == MAMBA_OK &&
        (st = alloc_zeroed(tr, bytes, &tr->grad, "gradients")) == MAMBA_OK &&
        (st = alloc_zeroed(tr, bytes, &tr->m, "first moments")) == MAMBA_OK &&
        (st = alloc_zeroed(tr, bytes, &tr->v, "second moments")) == MAMBA_OK &&
        (st = alloc_zeroed(tr, (size_t)cfg.n_layer * tr->A_stride * sizeof(float), &tr->A, "A = -exp(A_log)")) ==
            MAMBA_OK)
        st = alloc_zeroed(tr, sizeof(float), &tr->norm_sq, "gradient norm");
    if (st != MAMBA_OK) {
        mamba_trainer_free(tr);
        return st;
    }
    *out = tr;
    return MAMBA_OK;
}

mamba_status_t mb_train_upload(mamba_trainer_t *tr, mb_buffer *dst, const float *host, const char *what)
{
    mamba_context_t *ctx = tr->ctx;
    MB_TRY_BE(ctx, ctx->dv->upload(ctx->dev, (mb_ptr){dst, 0}, host, tr->total * sizeof(float)), what);
    if (dst == tr->param) tr->A_stale = 1;
    return MAMBA_OK;
}

mamba_status_t mb_train_download(mamba_trainer_t *tr, mb_buffer *src, float *host, const char *what)
{
    mamba_context_t *ctx = tr->ctx;
    MB_TRY_BE(ctx, ctx->dv->download(ctx->dev, host, (mb_ptr){src, 0}, tr->total * sizeof(float)), what);
    return MAMBA_OK;
}

mamba_status_t mb_train_refresh_A(mamba_trainer_t *tr)
{
    if (!tr->A_stale) return MAMBA_OK;
    mamba_context_t *ctx = tr->ctx;
    const size_t n = (size_t)tr->cfg.d_inner * (size_t)tr->cfg.d_state;
    for (int l = 0; l < tr->cfg.n_layer; l++) {
        const mb_train_param *p = &tr->params[tr->layers[l].A_log];
        MB_TRY_BE(ctx, tr->tops->neg_exp(ctx->dev, n, (mb_ptr){tr->param, p->off * 4},
                                         (mb_ptr){tr->A, (size_t)l * tr->A_stride * 4}), "A = -exp(A_log)");
    }
    tr->A_stale = 0;
    return MAMBA_OK;
}

void mamba_trainer_free(mamba_trainer_t *tr)
{
    if (!tr) return;
    mamba_context_t *ctx = tr->ctx;
    mb_buffer *bufs[] = {tr->param, tr->grad, tr->m, tr->v, tr->A, tr->norm_sq, tr->act};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) ctx->dv->free(ctx->dev, bufs[i]);
    free(tr->params);
    free(tr->layers);
    free(tr->host_loss);
    free(tr->host_correct);
    free(tr);
}

/* ---- the table and the values, read back ---- */

size_t mamba_trainer_param_count(const mamba_trainer_t *tr) { return tr ? tr->n_params : 0; }

mamba_status_t mamba_trainer_param_info(const mamba_trainer_t *tr, size_t i, const char **name, size_t *numel,
                                        int *ndim, int64_t *shape)
{
    if (!tr) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_param_info: trainer is NULL");
    if (i >= tr->n_params)
        return mb_seterr(tr->ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_trainer_param_info: index %zu out of range (%zu parameters)", i, tr->n_params);
    const mb_train_param *p = &tr->params[i];
    if (name) *name = p->name;
    if (numel) *numel = p->numel;
    if (ndim) *ndim = p->ndim;
    for (int d = 0; shape && d < p->ndim; d++) shape[d] = p->shape[d];
    return MAMBA_OK;
}

static mamba_status_t read_tensor(mamba_trainer_t *tr, mb_buffer *buf, const char *fn, const char *name, float *out,
                                  size_t numel)
{
    if (!tr) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "%s: trainer is NULL", fn);
    mamba_context_t *ctx = tr->ctx;
    if (!name || !out) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: name and out are required", fn);
    const size_t i = mb_train_find(tr, name);
    if (i == MB_TRAIN_NONE)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: no parameter named '%s'", fn, name);
    const mb_train_param *p = &tr->params[i];
    if (numel != p->numel)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: '%s' has %zu elements, numel is %zu", fn, name,
                         p->numel, numel);
    MB_TRY_BE(ctx, ctx->dv->download(ctx->dev, out, (mb_ptr){buf, p->off * 4}, p->numel * 4), name);
    return MAMBA_OK;
}

mamba_status_t mamba_trainer_read_grad(mamba_trainer_t *tr, const char *name, float *out, size_t numel)
{
    return read_tensor(tr, tr ? tr->grad : NULL, "mamba_trainer_read_grad", name, out, numel);
}

mamba_status_t mamba_trainer_read_param(mamba_trainer_t *tr, const char *name, float *out, size_t numel)
{
    return read_tensor(tr, tr ? tr->param : NULL, "mamba_trainer_read_param", name, out, numel);
}

mamba_status_t mamba_trainer_config(const mamba_trainer_t *tr, mamba_config_t *cfg)
{
    if (!tr || !cfg) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_config: NULL argument");
    *cfg = tr->cfg;
    return MAMBA_OK;
}

mamba_status_t mamba_trainer_memory(const mamba_trainer_t *tr, uint64_t *param_bytes, uint64_t *activation_bytes)
{
    if (!tr) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_memory: trainer is NULL");
    /* parameters, gradients, two moments, A and the norm's float */
    if (param_bytes)
        *param_bytes = 4 * (uint64_t)tr->total * 4 + (uint64_t)tr->cfg.n_layer * tr->A_stride * 4 + 4;
    if (activation_bytes) *activation_bytes = tr->act ? tr->act_layout.total : 0;
    return MAMBA_OK;
}

long mamba_trainer_steps_taken(const mamba_trainer_t *tr) { return tr ? tr->step : 0; }
