/* The decoding loop of text output. */
#include "reply.h"

#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Whether bytes t[0, n) (the stream's last few) end inside a UTF-8 sequence: the detokenizer
 * holds such a tail back until the next token. */
static int utf8_tail_open(const unsigned char *t, size_t n)
{
    for (size_t k = 1; k <= n && k <= 4; k++) {
        const unsigned char b = t[n - k];
        if ((b & 0xC0) == 0x80) continue;
        if (b < 0xC2 || b > 0xF4) return 0;
        const size_t need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
        return need > k;
    }
    return 0;
}

static int push_fed(reply *r, int32_t id)
{
    if (r->n_fed == r->cap_fed) {
        const size_t cap = r->cap_fed ? 2 * r->cap_fed : 256;
        int32_t *g = realloc(r->fed, cap * sizeof *g);
        if (!g) return 0;
        r->fed = g;
        r->cap_fed = cap;
    }
    r->fed[r->n_fed++] = id;
    return 1;
}

static int put_text(const char *cmd, reply *r, const char *t, size_t n)
{
    const int rc = text_out_put(r->out, t, n);
    if (rc < 0) return cli_error(cmd, -1, "out of memory");
    if (rc == 1) r->end = REPLY_STOP;
    return rc;
}

int reply_run(const char *cmd, reply *r, long max_tokens)
{
    r->n_tokens = 0;
    r->n_fed = 0;
    r->end = REPLY_LENGTH;
    r->base_len = 0;
    const double t0 = cli_now();
    unsigned char tail[4];
    size_t n_tail = 0;
    /* clean: all the text the state has consumed has been written (clean_len bytes); when it
     * is not, mark holds the last clean state (mark_len bytes, mark_fed ids) */
    int clean = 1;
    size_t clean_len = r->out->len, mark_len = 0, mark_fed = 0;
    const char *t;
    size_t tl;
    for (long i = 0; i < max_tokens; i++) {
        int32_t tok;
        if (mamba_sample(r->sampler, r->logits, r->vocab, &tok) != MAMBA_OK)
            return cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        r->n_tokens++;
        if (r->has_eos && tok == r->eos) {
            r->end = REPLY_EOS;
            break;
        }
        if (mamba_detok_stream_push(r->detok, tok, &t, &tl) != MAMBA_OK)
            return cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        size_t raw_len;
        const char *raw = mamba_token_bytes(r->tok, tok, &raw_len);
        for (size_t k = raw_len > 4 ? raw_len - 4 : 0; raw && k < raw_len; k++) {
            if (n_tail == 4) memmove(tail, tail + 1, --n_tail);
            tail[n_tail++] = (unsigned char)raw[k];
        }
        const int rc = put_text(cmd, r, t, tl);
        if (rc < 0) return EXIT_RUNTIME;
        if (rc == 1) break;
        if (i + 1 >= max_tokens) break;
        const int held = r->out->n_held > 0 || utf8_tail_open(tail, n_tail);
        if (r->mark && clean && held) {
            if (mamba_state_copy_seq(r->mark, 0, r->state, 0) != MAMBA_OK)
                return cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
            mark_len = clean_len;
            mark_fed = r->n_fed;
        }
        if (mamba_step(r->state, &tok, r->logits) != MAMBA_OK)
            return cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
        if (!push_fed(r, tok)) return cli_error(cmd, EXIT_RUNTIME, "out of memory");
        clean = !held;
        if (clean) clean_len = r->out->len;
    }
    /* what the detokenizer holds ends the text (U+FFFD for bytes never completed) */
    if (mamba_detok_stream_flush(r->detok, &t, &tl) != MAMBA_OK)
        return cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    if (r->end != REPLY_STOP && put_text(cmd, r, t, tl) < 0) return EXIT_RUNTIME;
    if (text_out_finish(r->out) < 0) return cli_error(cmd, EXIT_RUNTIME, "out of memory");
    if (r->mark) {
        if (!clean) {
            if (mamba_state_copy_seq(r->state, 0, r->mark, 0) != MAMBA_OK)
                return cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
            r->n_fed = mark_fed;
        }
        r->base_len = clean ? clean_len : mark_len;
    }
    r->seconds = cli_now() - t0;
    return EXIT_OK;
}

void reply_free(reply *r)
{
    free(r->fed);
    r->fed = NULL;
    r->n_fed = r->cap_fed = 0;
}
