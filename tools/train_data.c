/* Batches for training and evaluation: synthetic tasks and windows of a text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_text.h"
#include "train_data.h"

/* The start of window b of batch index: a xorshift64* stream seeded from (seed, index, b),
 * uniform over the positions where a whole window and its next token fit. */
static size_t window_start(const train_data *d, uint64_t index, size_t b)
{
    uint64_t x = (d->seed + 1) * 0x9e3779b97f4a7c15ULL ^ (index << 20 ^ (uint64_t)b) * 0xd1b54a32d192ed03ULL;
    for (int i = 0; i < 3; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
    }
    return (size_t)((x * 0x2545f4914f6cdd1dULL) % (uint64_t)(d->text_len - d->len));
}

int train_data_batch(const train_data *d, uint64_t index, size_t batch, int32_t *ids, int32_t *labels)
{
    const size_t L = d->len;
    for (size_t b = 0; b < batch; b++) {
        int32_t *row = ids + b * L, *lab = labels + b * L;
        if (d->is_text) {
            const size_t s = window_start(d, index, b);
            memcpy(row, d->text + s, L * sizeof *row);
            memcpy(lab, d->text + s + 1, L * sizeof *lab);
        } else if (mamba_task_fill(&d->task, d->seed, index * batch + b, 0, L, row, lab) != MAMBA_OK) {
            return 0;
        }
    }
    return 1;
}

int train_data_is_ids_file(const char *path)
{
    static const char ext[] = ".safetensors";
    const size_t n = strlen(path), e = sizeof ext - 1;
    return n > e && strcmp(path + n - e, ext) == 0;
}

int train_data_text(const char *cmd, const char *path, const mamba_tokenizer_t *tok, train_data *d)
{
    d->is_text = 1;
    if (train_data_is_ids_file(path)) {
        mamba_tensor_file_t *f;
        if (mamba_tensor_file_open(path, &f) != MAMBA_OK) {
            cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
            return 0;
        }
        size_t rows, len;
        const int ok = cli_read_i32(cmd, path, f, "input_ids", 0, INT32_MAX, &d->text, &rows, &len);
        mamba_tensor_file_close(f);
        if (!ok) return 0;
        d->text_len = rows * len;
    } else {
        if (!tok) {
            cli_error(cmd, EXIT_USAGE, "--data %s: a text file needs --tokenizer (or a .safetensors file of input_ids)",
                      path);
            return 0;
        }
        char *text;
        size_t len;
        if (!cli_read_all(cmd, "--data", path, &text, &len)) return 0;
        const int ok = cli_tokenize(cmd, path, tok, text, len, 1, &d->text, &d->text_len);
        free(text);
        if (!ok) return 0;
    }
    int32_t top = 0;
    for (size_t i = 0; i < d->text_len; i++)
        if (d->text[i] > top) top = d->text[i];
    d->vocab = top + 1;
    if (tok && (size_t)d->vocab < mamba_tokenizer_vocab_size(tok)) d->vocab = (int)mamba_tokenizer_vocab_size(tok);
    return 1;
}
