/* The trainer (mamba.h's "training" section): fp32 master weights, their gradients and AdamW's
 * moments on the context's device, each in one buffer with the same offsets, and the
 * activations of the largest batch run so far. Only Mamba-1 (model_type "mamba") trains.
 *
 *   trainer.c      options, the parameter table, buffers, create/free, reading parameters
 *   train_init.c   Mamba's reference initialization (seeded, deterministic)
 *   train_pass.c   forward with the kept activations and backward (mamba_trainer_accumulate)
 *   train_optim.c  AdamW, the gradient norm and the learning-rate schedule
 *   train_io.c     save, load and resume; a trainer from a loaded model
 */
#ifndef MB_TRAIN_H
#define MB_TRAIN_H

#include "internal.h"

/* Each tensor's offset in the parameter buffers is a multiple of this many floats (256 bytes):
 * every op sees an aligned start. The padding stays zero, so that the gradient norm is one
 * sum of squares over the whole gradient buffer. */
#define MB_TRAIN_ALIGN 64
#define MB_TRAIN_NONE ((size_t)-1)

typedef struct mb_train_param {
    char name[MB_NAME_LEN];
    int ndim;
    int64_t shape[3];
    size_t numel;
    size_t off;   /* floats from the start of each of the four buffers */
    int decay;    /* AdamW's weight decay applies (every weight of ndim >= 2 but A_log) */
} mb_train_param;

/* Indices into the parameter table of one layer's tensors (MB_TRAIN_NONE: absent). */
typedef struct mb_train_layer {
    size_t norm, in_w, in_b, conv_w, conv_b, x_w, dt_w, dt_b, A_log, D, out_w, out_b;
} mb_train_layer;

/* Byte offsets of the activations and scratch for rows rows of batch sequences (train_pass.c). */
typedef struct mb_train_act {
    size_t rows, batch;
    size_t ids, labels, loss, correct, ones;
    size_t res;       /* n_layer + 1 residual streams R_0 .. R_L, (rows, d_model) each  */
    size_t xz, xdbl;  /* n_layer each: (rows, 2 d_inner), (rows, dt_rank + 2 N)        */
    size_t res_stride, xz_stride, xdbl_stride;
    size_t xn, mo, xc, dt, y, logits, dR, dxc, ddt, dxdbl, dxz, conv_state, dA, dD, ddb;
    size_t total;
} mb_train_act;

struct mamba_trainer {
    mamba_context_t *ctx;
    const mb_train_ops *tops;
    mamba_config_t cfg;
    mamba_train_options_t opts;
    mb_train_param *params;
    size_t n_params;
    mb_train_layer *layers;
    size_t embed, norm_f, lm_head;   /* lm_head MB_TRAIN_NONE when tied */
    size_t total;                    /* floats in each of the four buffers */
    mb_buffer *param, *grad, *m, *v;
    mb_buffer *A;                    /* -exp(A_log) of every layer, layer l at l * A_stride floats */
    size_t A_stride;
    int A_stale;                     /* the parameters changed since A was computed */
    mb_buffer *norm_sq;              /* one float: sum_squares of the gradient */
    mb_buffer *act;                  /* activations and scratch (act_layout) */
    mb_train_act act_layout;
    float *host_loss;                /* a batch's losses and hits per row, downloaded */
    int32_t *host_correct;
    size_t host_rows;
    long step;
    /* what has been accumulated since the last apply */
    size_t n_micro;
    double loss_sum;                 /* of the micro-batches' mean losses */
    uint64_t tokens, correct;
};

/* trainer.c */
mamba_status_t mb_train_check_options(mamba_context_t *ctx, const mamba_train_options_t *o);
/* A trainer for cfg (any config; refused unless model_type is mamba, or the backend cannot
 * train), its table built and its four buffers allocated and zeroed; the parameters are the
 * caller's to upload (mb_train_upload_params). */
mamba_status_t mb_train_new(mamba_context_t *ctx, const mamba_config_t *cfg, const mamba_train_options_t *opts,
                            const char *where, mamba_trainer_t **out);
/* Upload host (total floats, in the table's layout, padding zero) into the parameter buffer. */
mamba_status_t mb_train_upload(mamba_trainer_t *tr, mb_buffer *dst, const float *host, const char *what);
/* Download one of the four buffers (total floats) into host. */
mamba_status_t mb_train_download(mamba_trainer_t *tr, mb_buffer *src, float *host, const char *what);
/* The index of the parameter named name, or MB_TRAIN_NONE. */
size_t mb_train_find(const mamba_trainer_t *tr, const char *name);
/* -exp(A_log) of every layer into tr->A when the parameters changed. */
mamba_status_t mb_train_refresh_A(mamba_trainer_t *tr);

#endif
