/* What a model knows about text besides its weights: the tokenizer of its checkpoint directory
 * and its end-of-sequence id (model_text.c). */
#ifndef MB_MODEL_TEXT_H
#define MB_MODEL_TEXT_H

#include "model.h"

typedef struct mb_model_text {
    mamba_tokenizer_t *tokenizer; /* dir/tokenizer.json, or NULL                       */
    int32_t eos;
    int has_eos;
} mb_model_text;

/* Find the text side of a checkpoint: dir (NULL for an explicit config and weights file) may
 * hold tokenizer.json and generation_config.json; cfg_path is its config.json. A malformed
 * file fails with a message naming it; absent files are no error. */
mamba_status_t mb_model_text_load(mamba_model_t *m, const char *dir, const char *cfg_path, char *err);
void mb_model_text_free(mamba_model_t *m);

#endif
