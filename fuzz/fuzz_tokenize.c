/* The encoder and decoder on arbitrary bytes with the GPT-NeoX tokenizer (its path comes from
 * MAMBA_FUZZ_TOKENIZER or the build). Invalid UTF-8 must be refused at the right offset; valid
 * text must give the same ids with and without the ASCII fast path, ids in range, and decode
 * back to a text canonically equivalent to it when special tokens are text: both sides'
 * utf8proc NFC equal, and the decoded text utf8proc's NFC itself or else a text that tokenizes
 * to the same ids. (The tokenizer's NFC is tokenizers' Unicode 9.0 one, which leaves code
 * points assigned since alone, so that U+0301 U+1AC0 stays in that order where Unicode 15.0
 * reorders it.) The bytes as ids must decode the same through the stream as at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "fuzz_common.h"

#ifndef MAMBA_FUZZ_TOKENIZER
#define MAMBA_FUZZ_TOKENIZER "tests/data/tokenizer/tokenizer.json"
#endif
#define REGEX_ONLY (1 << 30) /* core/tokenizer_internal.h */

static mamba_tokenizer_t *tok;
static void free_tokenizer(void) { mamba_tokenizer_free(tok); }

static void decode_ids(const uint8_t *data, size_t size)
{
    const size_t vocab = mamba_tokenizer_vocab_size(tok), n = size / 2;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(((size_t)data[2 * i] << 8 | data[2 * i + 1]) * 7 % vocab);
    size_t len;
    if (mamba_detokenize(tok, ids, n, NULL, 0, &len) != MAMBA_OK) abort();
    char *once = malloc(len + 1), *joined = malloc(len + 1);
    size_t again, at = 0;
    if (mamba_detokenize(tok, ids, n, once, len, &again) != MAMBA_OK || again != len) abort();
    mamba_detok_stream_t *s;
    if (mamba_detok_stream_create(tok, &s) != MAMBA_OK) abort();
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t pl;
        if ((i < n ? mamba_detok_stream_push(s, ids[i], &piece, &pl) : mamba_detok_stream_flush(s, &piece, &pl)) != MAMBA_OK ||
            at + pl > len)
            abort();
        memcpy(joined + at, piece, pl);
        at += pl;
    }
    if (at != len || memcmp(once, joined, len) != 0) abort();
    mamba_detok_stream_free(s);
    free(once);
    free(joined);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok) {
        const char *path = getenv("MAMBA_FUZZ_TOKENIZER") ? getenv("MAMBA_FUZZ_TOKENIZER") : MAMBA_FUZZ_TOKENIZER;
        if (mamba_tokenizer_load(path, &tok) != MAMBA_OK) abort();
        atexit(free_tokenizer);
    }
    decode_ids(data, size);
    const char *text = (const char *)data;
    size_t n;
    const mamba_status_t st = mamba_tokenize(tok, text, size, 0, NULL, 0, &n);
    /* the first byte that is not part of valid UTF-8 */
    size_t bad = 0;
    while (bad < size) {
        utf8proc_int32_t c;
        const utf8proc_ssize_t step = utf8proc_iterate(data + bad, (utf8proc_ssize_t)(size - bad), &c);
        if (step <= 0) break;
        bad += (size_t)step;
    }
    if (bad < size) {
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu ", bad);
        if (st != MAMBA_ERR_INVALID_ARGUMENT || !strstr(mamba_last_error(NULL), want)) abort();
        return 0;
    }
    if (st != MAMBA_OK || n > 3 * size + 1) abort();
    for (int flags = 0; flags < 2; flags++) {
        int32_t *a = malloc((3 * size + 2) * sizeof *a), *b = malloc((3 * size + 2) * sizeof *b);
        size_t na, nb;
        if (mamba_tokenize(tok, text, size, flags, a, 3 * size + 1, &na) != MAMBA_OK ||
            mamba_tokenize(tok, text, size, flags | REGEX_ONLY, b, 3 * size + 1, &nb) != MAMBA_OK || na != nb ||
            memcmp(a, b, na * sizeof *a) != 0)
            abort();
        for (size_t i = 0; i < na; i++)
            if (a[i] < 0 || (size_t)a[i] >= mamba_tokenizer_vocab_size(tok)) abort();
        if (flags) {
            size_t len;
            if (mamba_detokenize(tok, a, na, NULL, 0, &len) != MAMBA_OK) abort();
            char *back = malloc(len + 1);
            if (mamba_detokenize(tok, a, na, back, len, &len) != MAMBA_OK) abort();
            utf8proc_uint8_t *nfc = NULL, *back_nfc = NULL;
            const utf8proc_option_t nfc_opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
            const utf8proc_ssize_t nl = utf8proc_map(data, (utf8proc_ssize_t)size, &nfc, nfc_opt);
            const utf8proc_ssize_t bl = utf8proc_map((const utf8proc_uint8_t *)back, (utf8proc_ssize_t)len, &back_nfc, nfc_opt);
            if (nl < 0 || bl != nl || memcmp(nfc, back_nfc, (size_t)nl) != 0) abort();
            /* exactly utf8proc's NFC, unless the two NFCs part (then the decoded text must be
             * the tokenizer's own fixed point: it tokenizes to the same ids) */
            if ((size_t)nl != len || memcmp(nfc, back, len) != 0) {
                int32_t *again = malloc((na + 1) * sizeof *again);
                size_t nagain;
                if (mamba_tokenize(tok, back, len, flags, again, na + 1, &nagain) != MAMBA_OK || nagain != na ||
                    memcmp(again, a, na * sizeof *a) != 0)
                    abort();
                free(again);
            }
            free(nfc);
            free(back_nfc);
            free(back);
        }
        free(a);
        free(b);
    }
    return 0;
}
