/* The parameter table shared by the checkpoint loader and the synthetic generator: each
 * architecture (core/arch/) builds it; weights.c allocates and fills it. */
#ifndef MB_WEIGHTS_H
#define MB_WEIGHTS_H

#include "model.h"

typedef enum mb_init {
    MB_INIT_ZEROS,
    MB_INIT_ONES,
    MB_INIT_UNIFORM,   /* uniform in [-scale, scale]                                        */
    MB_INIT_DT_BIAS,   /* softplus^-1 of dt, log-uniform in [1e-3, 1e-1] (Mamba's init)     */
    MB_INIT_A_LOG,     /* log(n + 1) for state n (S4D-real)                                 */
} mb_init;

typedef struct mb_spec {
    char name[MB_NAME_LEN];
    int ndim;
    int64_t shape[3];
    mb_init init;
    float scale;
    int is_matrix;     /* kept in its dtype, in a buffer of its own; otherwise converted to f32
                          and packed with the other vectors of its group                    */
    int group;         /* vectors: the buffer they share (the layer's index + 1; 0 the model's) */
    int skip;          /* not part of this model (bias off, tied head)                      */
    int neg_exp;       /* store -exp(x): A from A_log                                       */
    int q8_ok;         /* a matrix that MAMBA_WEIGHTS_Q8 quantizes (in_proj, out_proj, the
                          embedding, lm_head) when its columns are a multiple of 32         */
    mb_mat *mat;
    mb_ptr *vec;
    /* resolved */
    mamba_dtype_t dtype;     /* what fill() produces                                        */
    mamba_dtype_t dev_dtype; /* on the device: dtype, or Q8_0 quantized from it at load       */
    size_t buffer;     /* index in the model's buffers                                      */
    size_t offset, bytes, dev_bytes;
} mb_spec;

/* Produce the bytes of s (s->bytes, in s->dtype) in host (or point *src at them). tmp has
 * room for 2*s->bytes, host for s->bytes. */
typedef mamba_status_t (*mb_fill_fn)(mamba_model_t *m, const mb_spec *s, void *host, float *tmp,
                                     const void **src, void *user);

/* Set a spec's name, shape (d1 0 for a vector; shape[2] set after for 3 dimensions) and
 * initializer; pointers, group and skip are the caller's. */
void mb_spec_set(mb_spec *s, const char *name, int ndim, int64_t d0, int64_t d1, mb_init init, float scale,
                 int is_matrix);
uint64_t mb_spec_count(const mb_spec *s);
/* The table of m's architecture (count, then build). */
size_t mb_specs_count(const mamba_model_t *m);
void mb_specs_build(mamba_model_t *m, mb_spec *specs, size_t *n);
/* A model of cfg's architecture (cfg finished: mb_config_finish), with no weights yet. */
mamba_status_t mb_model_new(mamba_context_t *ctx, const mamba_config_t *cfg, mamba_model_t **out);
/* q8: quantize the specs marked q8_ok (whose columns are a multiple of 32) to Q8_0. */
mamba_status_t mb_model_fill(mamba_model_t *m, mb_spec *specs, size_t n, int q8, mb_fill_fn fill, void *user);
/* Rows and columns of a matrix spec (a vector: count x 1). */
size_t mb_spec_rows(const mb_spec *s);
size_t mb_spec_cols(const mb_spec *s);

#endif
