/* Writing a model's weights as it holds them (mamba_model_save_weights): what `mamba convert`
 * uses to keep a checkpoint quantized at load as a Q8_0 file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights.h"
#include "api/alloc.h"

#define SCALE_SUFFIX ".scale"

typedef struct save_buf {
    mb_spec *specs;
    mamba_tensor_t *t;
    char (*names)[MB_NAME_LEN + 8];
    unsigned char *host;
} save_buf;

static void save_buf_free(save_buf *b)
{
    free(b->specs);
    free(b->t);
    free(b->names);
    free(b->host);
}

/* The tensors of spec s whose device bytes are at h: one, or a Q8_0 matrix's two. */
static size_t add_tensors(const mb_spec *s, unsigned char *h, mamba_tensor_t *t, char (*names)[MB_NAME_LEN + 8])
{
    const size_t rows = mb_spec_rows(s), cols = mb_spec_cols(s);
    mamba_tensor_t *v = &t[0];
    memset(v, 0, sizeof *v);
    snprintf(names[0], sizeof names[0], "%s", s->name);
    v->name = names[0];
    v->ndim = s->ndim;
    for (int d = 0; d < s->ndim; d++) v->shape[d] = s->shape[d];
    v->data = h;
    if (!s->is_matrix) {
        if (s->neg_exp) { /* A = -exp(A_log) back to A_log */
            float *a = (float *)(void *)h;
            for (size_t i = 0; i < rows * cols; i++) a[i] = logf(-a[i]);
        }
        v->dtype = MAMBA_F32;
        v->nbytes = (size_t)mb_spec_count(s) * 4;
        return 1;
    }
    if (s->dev_dtype != MAMBA_Q8) {
        v->dtype = s->dev_dtype;
        v->nbytes = s->dev_bytes;
        return 1;
    }
    v->dtype = MAMBA_I8;
    v->nbytes = rows * cols;
    mamba_tensor_t *sc = &t[1];
    memset(sc, 0, sizeof *sc);
    snprintf(names[1], sizeof names[1], "%s%s", s->name, SCALE_SUFFIX);
    sc->name = names[1];
    sc->dtype = MAMBA_F16;
    sc->ndim = 2;
    sc->shape[0] = (int64_t)rows;
    sc->shape[1] = (int64_t)(cols / MB_Q8_BLOCK);
    sc->data = h + mb_q8_scales_offset(rows, cols);
    sc->nbytes = rows * (cols / MB_Q8_BLOCK) * 2;
    return 2;
}

mamba_status_t mamba_model_save_weights(const mamba_model_t *model, const char *path)
{
    if (!model) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_save_weights: model is NULL");
    mamba_context_t *ctx = model->ctx;
    char *err = ctx->err;
    if (!path) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_save_weights: path is NULL");
    /* the table binds each parameter to where the model keeps it; building it writes only specs */
    mamba_model_t *m = (mamba_model_t *)model;
    const size_t count = mb_specs_count(m);
    save_buf b = {mb_calloc(count, sizeof *b.specs), mb_calloc(2 * count, sizeof *b.t),
                  mb_calloc(2 * count, sizeof *b.names), NULL};
    if (!b.specs || !b.t || !b.names) {
        save_buf_free(&b);
        return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_model_save_weights: out of memory");
    }
    size_t n = 0, total = 0;
    mb_specs_build(m, b.specs, &n);
    for (size_t i = 0; i < n; i++) {
        mb_spec *s = &b.specs[i];
        if (s->skip) continue;
        s->dev_dtype = s->is_matrix ? s->mat->dt : MAMBA_F32;
        s->dev_bytes = mb_mat_bytes(s->dev_dtype, mb_spec_rows(s), mb_spec_cols(s));
        s->offset = total;
        total += (s->dev_bytes + 7) / 8 * 8;
    }
    b.host = mb_malloc(total ? total : 1);
    if (!b.host) {
        save_buf_free(&b);
        return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_model_save_weights: out of memory for %zu bytes", total);
    }
    size_t nt = 0;
    int q8 = 0;
    mamba_status_t st = MAMBA_OK;
    for (size_t i = 0; i < n && st == MAMBA_OK; i++) {
        const mb_spec *s = &b.specs[i];
        if (s->skip) continue;
        const mb_ptr src = s->is_matrix ? s->mat->p : *s->vec;
        const int rc = ctx->dv->download(ctx->dev, b.host + s->offset, src, s->dev_bytes);
        if (rc != 0) {
            st = mb_backend_fail(ctx, rc, s->name);
            break;
        }
        q8 |= s->dev_dtype == MAMBA_Q8;
        nt += add_tensors(s, b.host + s->offset, b.t + nt, b.names + nt);
    }
    if (st == MAMBA_OK) {
        const char *meta[] = {"format", "pt", "libmamba.weights", "q8_0"};
        st = mamba_tensor_file_write(path, b.t, nt, meta, q8 ? 2 : 1);
        if (st != MAMBA_OK) snprintf(err, MB_ERR_LEN, "%s", mamba_last_error(NULL));
    }
    save_buf_free(&b);
    return st;
}
