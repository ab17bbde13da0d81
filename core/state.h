/* The recurrent state of a batch of sequences, and nothing else: per layer the conv state
 * (the last d_conv - 1 inputs) and the SSM state of each sequence, O(1) in sequence length.
 * Layout of a layer: the conv states of batch + 1 sequences (batch, width - 1, d_inner), then
 * their SSM states (batch, d_inner, N); the extra sequence is room for swapping two. A run of
 * consecutive sequences is a batch of its own for the ops (its conv and SSM states are each
 * contiguous). */
#ifndef MB_STATE_H
#define MB_STATE_H

#include "model.h"

struct mamba_state {
    mamba_model_t *model;
    uint64_t id;               /* unique among the model's states (keys recorded graphs)  */
    size_t batch;
    mb_buffer *buf;
    size_t conv_seq, ssm_seq;  /* bytes of one sequence's conv / SSM state in a layer      */
    size_t conv_block;         /* bytes of a layer's conv states, padded                  */
    size_t layer_bytes;
};

mamba_status_t mb_state_new(mamba_model_t *m, size_t batch, mamba_state_t **out);
void mb_state_destroy(mamba_state_t *s);
/* Layer l's conv / SSM state of sequence seq (the first of a run). */
mb_ptr mb_state_conv(const mamba_state_t *s, int layer, size_t seq);
mb_ptr mb_state_ssm(const mamba_state_t *s, int layer, size_t seq);
/* Sequences [src_seq, src_seq + n) of src into [dst_seq, ...) of dst (same model), enqueued. */
mamba_status_t mb_state_copy_run(mamba_state_t *dst, size_t dst_seq, const mamba_state_t *src, size_t src_seq,
                                 size_t n);
/* MAMBA_ERR_INVALID_ARGUMENT naming what when seq is not one of s's sequences. */
mamba_status_t mb_state_check_seq(const mamba_state_t *s, size_t seq, const char *what);

#endif
