/* A user program: load a checkpoint, greedy-generate a few tokens. Built against the
 * installed libmamba by the consumer test. */
#include <stdio.h>
#include <stdlib.h>

#include <mamba.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CHECKPOINT_DIR\n", argv[0]);
        return 2;
    }
    mamba_context_t *ctx;
    mamba_model_t *model;
    mamba_state_t *state;
    if (mamba_context_create(NULL, &ctx) != MAMBA_OK) {
        fprintf(stderr, "%s\n", mamba_last_error(NULL));
        return 1;
    }
    if (mamba_model_load(ctx, argv[1], &model) != MAMBA_OK || mamba_state_create(model, 1, &state) != MAMBA_OK) {
        fprintf(stderr, "%s\n", mamba_last_error(ctx));
        return 1;
    }
    mamba_model_info_t info;
    mamba_model_info(model, &info);
    float *logits = malloc(sizeof(float) * (size_t)info.config.vocab_size);
    int32_t prompt[3] = {1, 2, 3}, tok = 0;
    mamba_prefill(state, prompt, 3, logits);
    for (int i = 0; i < 5; i++) {
        tok = 0;
        for (int v = 1; v < info.config.vocab_size; v++)
            if (logits[v] > logits[tok]) tok = v;
        printf("%d%s", tok, i < 4 ? " " : "\n");
        mamba_step(state, &tok, logits);
    }
    free(logits);
    mamba_state_free(state);
    mamba_model_free(model);
    mamba_context_free(ctx);
    return 0;
}
