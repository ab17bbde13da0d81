/* Where `mamba train` and `mamba eval` get their batches: a synthetic task of the Mamba paper
 * (mamba_task_fill, seeded, sequence numbers counting up), or windows of a tokenized text. */
#ifndef MAMBA_TRAIN_DATA_H
#define MAMBA_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

typedef struct train_data {
    int is_text;
    mamba_task_t task;        /* !is_text */
    int32_t *text;            /* is_text: the token stream */
    size_t text_len;
    int vocab;                /* the task's, or one more than the largest id of the text */
    size_t len;               /* tokens a sequence */
    uint64_t seed;
} train_data;

/* Batch number index (batch sequences of d->len): ids and labels (batch * len each). Task
 * sequences are numbered index * batch + b; text windows start at seeded positions. */
int train_data_batch(const train_data *d, uint64_t index, size_t batch, int32_t *ids, int32_t *labels);
/* Whether --data names a .safetensors file of input_ids (else it is text for the tokenizer). */
int train_data_is_ids_file(const char *path);
/* Read --data: a safetensors file with input_ids, or text tokenized with tok (NULL: no text
 * possible). Every row of input_ids is joined into one stream. 0 after printing the error. */
int train_data_text(const char *cmd, const char *path, const mamba_tokenizer_t *tok, train_data *d);

#endif
