/* The architecture table: a model variant is one entry, chosen by the config's model_type. An
 * entry says which parameters the variant has (names, shapes, how to initialize them), what
 * its config adds, the shape of its recurrent state, and how one layer is enqueued on the
 * backend for a chunk of tokens and for a one-token step. The runner (runner.c) does the rest:
 * the embedding, the residual stream, the final norm, the head, chunking and graphs. */
#ifndef MB_ARCH_H
#define MB_ARCH_H

#include "model.h"
#include "weights.h"

typedef struct cJSON cJSON;

/* What the runner hands an architecture to enqueue layer `layer` for batch x T rows
 * (row r = b * T + t, time-major). */
typedef struct mb_layer_io {
    mamba_context_t *ctx;
    const mamba_model_t *model;
    int layer;
    size_t batch, T;
    mb_ptr residual;     /* (rows, d_model) f32, the residual stream                        */
    mb_ptr hn;           /* (rows, d_model) f32: room for the layer's normalized input        */
    mb_ptr mo;           /* (rows, d_model) f32: the previous layer's output (none before the
                            first), where this one's goes (unless fold)                     */
    mb_ptr scratch;      /* mixer_work_bytes(cfg, rows) of working space                     */
    mb_ptr conv_state;   /* this layer's conv state of the batch's sequences                */
    mb_ptr ssm_state;    /* this layer's SSM state of the batch's sequences                 */
    /* A layer is residual += mo (the previous layer's output); hn = RMSNorm(residual);
     * mo = Mixer(hn). fold: the previous output is in the residual already, the norm folds
     * into in_proj and the output adds into the residual (gemv_fused, few rows). */
    int fold;
    int fused_step;      /* T == 1 and the backend's mixer_step takes this shape             */
    int x16_in, x16_out; /* in_proj / out_proj multiply 16-bit inputs that their producers
                            (add_rmsnorm16; the fused step's y16) write rounded already      */
} mb_layer_io;

/* The per-layer state of one sequence, in floats. */
typedef struct mb_state_shape {
    size_t conv, ssm;
} mb_state_shape;

typedef struct mb_arch {
    const char *model_type;   /* config.json's model_type                                 */
    size_t layer_size;        /* bytes of one layer's weights struct                       */
    /* After the shared fields are read: the variant's own (cfg->model_type is set). */
    mamba_status_t (*parse_config)(const cJSON *root, mamba_config_t *cfg, const char *path, char *err);
    /* Defaults of the variant's own fields and their checks (synthetic configs too). */
    mamba_status_t (*finish_config)(mamba_config_t *cfg, const char *where, char *err);
    /* Every parameter of a model (its table), pointers into m's layers bound. */
    size_t (*specs_count)(const mamba_config_t *c);
    void (*specs_build)(mamba_model_t *m, mb_spec *specs, size_t *n);
    mb_state_shape (*state_shape)(const mamba_config_t *c);
    /* Bytes of the mixer's working space for rows rows. */
    size_t (*mixer_work_bytes)(const mamba_config_t *c, size_t rows);
    /* The fused step's query for batch sequences (layer 0's dtypes; every layer has them). */
    void (*step_query)(const mamba_model_t *m, size_t batch, mb_fused_query *q);
    /* The GEMV shapes the fold uses: in_proj (with the norm) and out_proj (accumulating). */
    void (*fold_queries)(const mamba_model_t *m, size_t rows, mb_fused_query *in_q, mb_fused_query *out_q);
    mamba_status_t (*enqueue_layer)(const mb_layer_io *io);
} mb_arch;

/* The entry for model_type, or NULL. */
const mb_arch *mb_arch_find(const char *model_type);
/* "mamba, falcon_mamba": for messages. */
const char *mb_arch_names(void);

#endif
