/* The tokenizer.json loader on arbitrary bytes: it must accept or reject, never crash, and a
 * tokenizer it accepts must encode and decode without failing on valid text. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static const char *const texts[] = {
    "hello world", "  the  <|endoftext|>x\n\n", "it's 123 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87", "",
    "a\xcc\x81 \xf0\x9f\x98\x80\t\r\n", "[X] hi [X]hi", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

static void check(const mamba_tokenizer_t *tok, const char *text, int flags)
{
    const size_t len = strlen(text), vocab = mamba_tokenizer_vocab_size(tok);
    int32_t ids[256];
    size_t n, again;
    if (mamba_tokenize(tok, text, len, flags, ids, 256, &n) != MAMBA_OK || n > 3 * len + 1) abort();
    if (mamba_tokenize(tok, text, len, flags | (1 << 30), ids, 0, &again) != MAMBA_OK || again != n) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= vocab || !mamba_token_bytes(tok, ids[i], NULL)) abort();
    size_t out_len;
    char out[1024];
    if (mamba_detokenize(tok, ids, n, out, sizeof out, &out_len) != MAMBA_OK) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mamba_tokenizer_t *tok = NULL;
    if (mamba_tokenizer_load(fuzz_write("tokenizer.json", data, size), &tok) != MAMBA_OK) {
        if (tok || !mamba_last_error(NULL)[0]) abort();
        return 0;
    }
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        check(tok, texts[i], 0);
        check(tok, texts[i], 1);
    }
    /* every id decodes, alone and in a stream */
    const size_t vocab = mamba_tokenizer_vocab_size(tok);
    mamba_detok_stream_t *s;
    if (mamba_detok_stream_create(tok, &s) != MAMBA_OK) abort();
    for (size_t id = 0; id < vocab && id < 4096; id++) {
        size_t len;
        const char *b = mamba_token_bytes(tok, (int32_t)id, &len), *piece;
        if (!b) continue;
        if (mamba_detok_stream_push(s, (int32_t)id, &piece, &len) != MAMBA_OK) abort();
    }
    const char *piece;
    size_t len;
    if (mamba_detok_stream_flush(s, &piece, &len) != MAMBA_OK) abort();
    mamba_detok_stream_free(s);
    int32_t id;
    (void)mamba_tokenizer_find(tok, "<|endoftext|>", &id);
    mamba_tokenizer_free(tok);
    return 0;
}
