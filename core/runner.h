/* The runner: what mamba_prefill, mamba_step, mamba_forward and mamba_generate_greedy run
 * through. One per model, made on first use. It owns the execution workspace (activations of
 * one chunk), the logits buffer, the host staging of ids, the chunking of long inputs, the
 * recorded decode-step graphs and their invalidation, the answers of the backend's
 * capability query, and mamba_forward's own state. A state (state.h) is only the recurrent
 * state that the runner reads and advances. */
#ifndef MB_RUNNER_H
#define MB_RUNNER_H

#include "state.h"

typedef struct mb_runner mb_runner;

mamba_status_t mb_runner_get(mamba_model_t *m, mb_runner **out);
void mb_runner_free(mb_runner *r);
/* Drop what was recorded for the state of this id (it is being freed). */
void mb_runner_forget(mb_runner *r, uint64_t state_id);

/* Run sequences [seq0, seq0 + k) of s through len tokens each, ids[i] the tokens of sequence
 * seq0 + i (ids checked against the vocabulary). Logits: mode ALL (k, len, vocab), LAST
 * (k, vocab), or none when logits is NULL. Returns once the logits are on the host. */
mamba_status_t mb_runner_run(mb_runner *r, mamba_state_t *s, size_t seq0, size_t k, const int32_t *const *ids,
                             size_t len, mamba_logits_mode_t mode, float *logits);
/* A subset of the sequences of s, in any order (see mamba_prefill_seqs, mamba_step_seqs). */
mamba_status_t mb_runner_prefill_seqs(mb_runner *r, mamba_state_t *s, size_t n, const size_t *seqs,
                                      const int32_t *const *ids, const size_t *lens, float *last_logits);
mamba_status_t mb_runner_step_seqs(mb_runner *r, mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *ids,
                                   float *logits);
/* mamba_step_seqs_begin / mamba_step_wait (see mamba.h). */
mamba_status_t mb_runner_step_begin(mb_runner *r, mamba_state_t *s, size_t n, const size_t *seqs, const int32_t *ids,
                                    float *logits);
mamba_status_t mb_runner_wait(mb_runner *r);
mamba_status_t mb_runner_wait_rows(mb_runner *r, size_t rows);
/* mamba_forward: from an empty state the runner keeps for the next call of the same batch. */
mamba_status_t mb_runner_forward(mb_runner *r, const int32_t *ids, size_t batch, size_t len, mamba_logits_mode_t mode,
                                 float *logits);

/* Greedy decoding on the device: where a one-token step of the whole batch of s reads its
 * ids (batch int32), and the step enqueued for the ids already there; its last logits
 * (batch, vocab) will be at *logits. */
mamba_status_t mb_runner_step_ids(mb_runner *r, const mamba_state_t *s, mb_ptr *ids);
mamba_status_t mb_runner_step_enqueue(mb_runner *r, mamba_state_t *s, mb_ptr *logits);

/* MAMBA_ERR_INVALID_ARGUMENT naming the first id outside [0, vocab). */
mamba_status_t mb_check_ids(mamba_context_t *ctx, const int32_t *ids, size_t n, int vocab);

#endif
