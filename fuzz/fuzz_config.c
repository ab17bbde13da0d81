/* config.json parsing and its agreement with the tensors: a fuzzed config against the tiny
 * fixture's weights (the path of the weights comes from MAMBA_FUZZ_WEIGHTS or the build). */
#include <stdlib.h>

#include "fuzz_common.h"

#ifndef MAMBA_FUZZ_WEIGHTS
#define MAMBA_FUZZ_WEIGHTS "tests/data/models/tiny/model.safetensors"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *weights = getenv("MAMBA_FUZZ_WEIGHTS") ? getenv("MAMBA_FUZZ_WEIGHTS") : MAMBA_FUZZ_WEIGHTS;
    mamba_model_t *m = NULL;
    mamba_context_t *ctx = fuzz_context();
    if (mamba_model_load_files(ctx, fuzz_write("config.json", data, size), weights, &m) == MAMBA_OK) {
        int32_t ids[3] = {1, 2, 3};
        mamba_model_info_t info;
        mamba_model_info(m, &info);
        float *logits = malloc(sizeof(float) * (size_t)info.config.vocab_size);
        if (mamba_forward(m, ids, 1, 3, MAMBA_LOGITS_LAST, logits) != MAMBA_OK) abort();
        free(logits);
        mamba_model_free(m);
    }
    return 0;
}
