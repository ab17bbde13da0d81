/* The whole loader: the input is a config and a weights file (a 4-byte little-endian length
 * of the config, the config, then the weights); an accepted model must run a short forward. */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    size_t clen = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    if (clen > size - 4) return 0;
    const char *cfg = fuzz_write("config.json", data + 4, clen);
    const char *weights = fuzz_write("model.safetensors", data + 4 + clen, size - 4 - clen);
    mamba_context_t *ctx = fuzz_context();
    mamba_model_t *m = NULL;
    if (mamba_model_load_files(ctx, cfg, weights, &m) != MAMBA_OK) return 0;
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    int32_t eos;
    if (mamba_model_eos(m, &eos) == MAMBA_OK && (eos < 0 || eos >= info.config.vocab_size)) abort();
    int32_t ids[4] = {0, 1, 0, 1};
    for (int i = 0; i < 4; i++) ids[i] %= info.config.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)info.config.vocab_size * 2);
    mamba_state_t *s;
    if (mamba_state_create(m, 2, &s) == MAMBA_OK) {
        if (mamba_prefill(s, ids, 2, logits) != MAMBA_OK) abort();
        mamba_state_free(s);
    }
    free(logits);
    mamba_model_free(m);
    return 0;
}
