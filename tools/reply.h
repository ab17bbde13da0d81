/* Decoding to text: sample, stream each token's text through the detokenizer and the stop
 * strings, step the state; the loop of `mamba generate --prompt` and of each `mamba chat`
 * answer. */
#ifndef MAMBA_REPLY_H
#define MAMBA_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"
#include "text_out.h"

typedef enum reply_end { REPLY_LENGTH = 0, REPLY_EOS, REPLY_STOP } reply_end;

typedef struct reply {
    /* set by the caller */
    mamba_context_t *ctx;
    mamba_state_t *state;      /* batch 1, the prompt fed                                 */
    mamba_sampler_t *sampler;
    float *logits;             /* vocab floats: the logits after the prompt              */
    size_t vocab;
    const mamba_tokenizer_t *tok;
    mamba_detok_stream_t *detok; /* of tok */
    text_out *out;
    int32_t eos;
    int has_eos;               /* 0: no end-of-sequence stop                             */
    /* a spare state of the same model, or NULL. With it the state ends up holding exactly
     * the answer's first base_len bytes (see below); without it, whatever was fed. */
    mamba_state_t *mark;
    /* results */
    size_t n_tokens;           /* tokens sampled, the end-of-sequence one included        */
    reply_end end;
    size_t base_len;           /* with mark: the bytes of out->text the state has consumed
                                * (the rest is the caller's to feed)                      */
    int32_t *fed;              /* the ids fed to the state, in order (base_len's tokens)  */
    size_t n_fed, cap_fed;
    double seconds;
} reply;

/* Produce up to max_tokens tokens. The text goes to r->out (r->out->text holds it, stop
 * strings cut); the last token sampled is never fed to the state. Returns an exit status
 * (the error printed as cmd's). */
int reply_run(const char *cmd, reply *r, long max_tokens);
void reply_free(reply *r);

#endif
