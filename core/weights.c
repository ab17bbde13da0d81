/* Model weights: the architecture's table of every parameter (name, shape, how to initialize
 * it), filled from a checkpoint or from a seeded generator, on the device one buffer a matrix
 * and one buffer the vectors of a layer. No allocation is larger than the largest weight,
 * which keeps under a device's largest allocation (OpenCL's CL_DEVICE_MAX_MEM_ALLOC_SIZE is a
 * quarter of the memory on many devices) and under CLBlast's 32-bit indexing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "model_text.h"
#include "runner.h"
#include "api/alloc.h"

#define ALIGN 256

size_t mb_specs_count(const mamba_model_t *m) { return m->arch->specs_count(&m->cfg); }

void mb_specs_build(mamba_model_t *m, mb_spec *specs, size_t *n) { m->arch->specs_build(m, specs, n); }

/* Assign each parameter a buffer and an offset in it: a matrix (in s->dev_dtype) alone, the
 * vectors (in f32) of a group together (a group's specs come one after another, matrices
 * between them). Returns the number of buffers; sizes[] their bytes. */
static size_t pack(mb_spec *specs, size_t n, int q8, size_t *sizes, uint64_t *n_params)
{
    size_t nb = 0, group_buf = 0;
    int group = -1;
    *n_params = 0;
    for (size_t i = 0; i < n; i++) {
        mb_spec *s = &specs[i];
        if (s->skip) continue;
        if (!s->is_matrix) s->dtype = MAMBA_F32;
        const size_t rows = mb_spec_rows(s), cols = mb_spec_cols(s);
        s->bytes = mb_mat_bytes(s->dtype, rows, cols);
        s->dev_dtype = s->dtype;
        /* dt_proj (columns dt_rank, 48 for the 130m) and x_proj stay: see q8_ok */
        if (q8 && s->q8_ok && cols % MB_Q8_BLOCK == 0 && s->dtype != MAMBA_Q8) s->dev_dtype = MAMBA_Q8;
        s->dev_bytes = mb_mat_bytes(s->dev_dtype, rows, cols);
        *n_params += mb_spec_count(s);
        const size_t padded = (s->dev_bytes + ALIGN - 1) / ALIGN * ALIGN;
        if (!s->is_matrix && s->group == group) {
            s->buffer = group_buf;
            s->offset = sizes[group_buf];
            sizes[group_buf] += padded;
            continue;
        }
        if (!s->is_matrix) {
            group = s->group;
            group_buf = nb;
        }
        s->buffer = nb;
        s->offset = 0;
        sizes[nb++] = padded ? padded : ALIGN;
    }
    return nb;
}

mamba_status_t mb_model_new(mamba_context_t *ctx, const mamba_config_t *cfg, mamba_model_t **out)
{
    const mb_arch *arch = mb_arch_find(cfg->model_type);
    if (!arch)
        return mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED, "model_type '%s' is not supported (supported: %s)",
                         cfg->model_type, mb_arch_names());
    mamba_model_t *m = mb_calloc(1, sizeof *m);
    if (!m) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a model");
    m->ctx = ctx;
    m->cfg = *cfg;
    m->arch = arch;
    m->layers = mb_calloc((size_t)cfg->n_layer, arch->layer_size);
    if (!m->layers) {
        free(m);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a model");
    }
    ctx->n_models++;
    *out = m;
    return MAMBA_OK;
}

static mamba_status_t alloc_buffers(mamba_model_t *m, const size_t *sizes, size_t nb)
{
    mamba_context_t *ctx = m->ctx;
    /* an array of pointers: sizeof *m->buffers is a pointer's size on purpose */
    m->buffers = mb_calloc(nb ? nb : 1, sizeof *m->buffers); // NOLINT(bugprone-sizeof-expression)
    if (!m->buffers) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory for %zu weight buffers", nb);
    m->n_buffers = nb;
    m->weight_bytes = 0;
    for (size_t i = 0; i < nb; i++) {
        if (mb_dev_alloc(ctx, sizes[i], &m->buffers[i]) != 0)
            return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY,
                             "%s backend: cannot allocate %zu bytes for weight buffer %zu of %zu (%zu bytes so far, a "
                             "model of %llu parameters): %s",
                             ctx->backend_name, sizes[i], i + 1, nb, m->weight_bytes,
                             (unsigned long long)m->n_params, mb_dev_alloc_error(ctx));
        m->weight_bytes += sizes[i];
    }
    return MAMBA_OK;
}

/* Allocate the buffers, bind every pointer, and fill each parameter with fill(). */
/* src (s->bytes in s->dtype) quantized into host (s->dev_bytes); tmp: room for the f32 matrix. */
static mamba_status_t quantize(mamba_context_t *ctx, const mb_spec *s, const void *src, void *host, float *tmp)
{
    const size_t rows = mb_spec_rows(s), cols = mb_spec_cols(s);
    const float *w = src;
    if (s->dtype != MAMBA_F32) { /* src is not tmp: only f32 sources are produced there */
        mb_to_f32(tmp, src, s->dtype, rows * cols);
        w = tmp;
    }
    const long bad = mb_q8_quantize(host, w, rows, cols);
    if (bad < 0)
        return mb_seterr(ctx->err, MAMBA_ERR_MODEL,
                         "tensor '%s': row %ld cannot be quantized to Q8_0 (a value beyond 65504 * 127 in magnitude)",
                         s->name, -1 - bad);
    return MAMBA_OK;
}

mamba_status_t mb_model_fill(mamba_model_t *m, mb_spec *specs, size_t n, int q8, mb_fill_fn fill, void *user)
{
    mamba_context_t *ctx = m->ctx;
    size_t *sizes = mb_calloc(n ? n : 1, sizeof *sizes);
    if (!sizes) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory for the weight buffers' table");
    const size_t nb = pack(specs, n, q8, sizes, &m->n_params);
    mamba_status_t st = alloc_buffers(m, sizes, nb);
    free(sizes);
    if (st != MAMBA_OK) return st;
    size_t max_bytes = 0, max_tmp = 0;
    for (size_t i = 0; i < n; i++) {
        const mb_spec *s = &specs[i];
        if (s->skip) continue;
        const size_t b = s->bytes > s->dev_bytes ? s->bytes : s->dev_bytes;
        if (b > max_bytes) max_bytes = b;
        if (2 * s->bytes > max_tmp) max_tmp = 2 * s->bytes;
        if (s->dev_dtype != s->dtype && 4 * (size_t)mb_spec_count(s) > max_tmp) max_tmp = 4 * (size_t)mb_spec_count(s);
    }
    void *host = mb_malloc(max_bytes ? max_bytes : 1);
    float *tmp = mb_malloc(max_tmp ? max_tmp : 1); /* f32 staging for conversions */
    if (!host || !tmp) {
        free(host);
        free(tmp);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory staging %zu bytes of weights", max_bytes);
    }
    for (size_t i = 0; i < n && st == MAMBA_OK; i++) {
        mb_spec *s = &specs[i];
        if (s->skip) continue;
        const mb_ptr p = {m->buffers[s->buffer], s->offset};
        if (s->mat) *s->mat = (mb_mat){p, s->dev_dtype};
        if (s->vec) *s->vec = p;
        const void *src = NULL;
        st = fill(m, s, host, tmp, &src, user);
        if (st != MAMBA_OK) break;
        if (s->neg_exp) {
            float *a = (float *)src == tmp ? tmp : memcpy(tmp, src, s->bytes);
            for (size_t j = 0; j < s->bytes / 4; j++) a[j] = -expf(a[j]);
            src = a;
        }
        if (s->dev_dtype != s->dtype) {
            /* src may be host (a synthetic 16-bit fill): it is widened into tmp before host is written */
            if ((st = quantize(ctx, s, src, host, tmp)) != MAMBA_OK) break;
            src = host;
        }
        const int rc = ctx->dv->upload(ctx->dev, p, src, s->dev_bytes);
        if (rc != 0) st = mb_backend_fail(ctx, rc, s->name);
    }
    free(host);
    free(tmp);
    if (st == MAMBA_OK) {
        const int rc = ctx->dv->sync(ctx->dev);
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
    mb_runner_free(m->runner);
    mb_model_text_free(m);
    if (m->n_states)
        mb_log(ctx, MAMBA_LOG_WARN, "model freed while %d state(s) still use it: free them first", m->n_states);
    for (size_t i = 0; i < m->n_buffers; i++)
        if (m->buffers[i]) ctx->dv->free(ctx->dev, m->buffers[i]);
    free(m->buffers);
    free(m->layers);
    free(m);
    ctx->n_models--;
}

mamba_status_t mamba_model_compute_dtype(const mamba_model_t *m, size_t rows, mamba_dtype_t *dtype)
{
    if (!m || !dtype || !rows)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_compute_dtype: %s",
                         !m ? "model is NULL" : !dtype ? "dtype is NULL" : "rows is 0");
    /* the in_proj, the largest of a layer's GEMMs, speaks for them (they share the dtype) */
    mb_fused_query in_q, out_q;
    m->arch->fold_queries(m, rows, &in_q, &out_q);
    const mb_fused_ops *f = m->ctx->fused;
    *dtype = f && f->supports && f->supports(m->ctx->dev, MB_FUSED_GEMM16, &in_q) ? in_q.wdtype : MAMBA_F32;
    return MAMBA_OK;
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
