/* The model: its config, its architecture, and its weights on the device. */
#ifndef MB_MODEL_H
#define MB_MODEL_H

#include "internal.h"

struct mb_arch;
struct mb_runner;
struct mb_model_text;

/* A weight matrix on the device in its stored dtype. */
typedef struct mb_mat {
    mb_ptr p;
    mamba_dtype_t dt;
} mb_mat;

struct mamba_model {
    mamba_context_t *ctx;
    mamba_config_t cfg;
    const struct mb_arch *arch;
    mamba_dtype_t wdtype;      /* dtype of the embedding, reported as the model's       */
    /* the weights: one buffer a matrix, one a layer's vectors (see weights.c) */
    mb_buffer **buffers;
    size_t n_buffers;
    size_t weight_bytes;
    uint64_t n_params;
    mb_mat embedding;          /* (vocab, d_model)                                     */
    mb_ptr norm_f;             /* (d_model) f32                                        */
    mb_mat lm_head;            /* (vocab, d_model); = embedding when tied              */
    void *layers;              /* n_layer of the architecture's layer weights          */
    int n_states;
    uint64_t next_state_id;    /* ids of the states made from it, never reused          */
    /* what prefill, step and forward run through: workspace, logits, recorded graphs
     * (runner.c); made on first use, freed with the model */
    struct mb_runner *runner;
    struct mb_model_text *text; /* tokenizer and end-of-sequence id (model_text.c)      */
};

#endif
