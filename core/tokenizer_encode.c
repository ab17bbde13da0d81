/* mamba_tokenize: the pipeline of `tokenizers`' encode for a byte-level BPE: added tokens that
 * match the raw text are taken out first; each stretch between them is NFC-normalized on its
 * own and searched for the normalized added tokens; what is left goes through the ByteLevel
 * pre-tokenizer and the merges. */
#include <string.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

typedef struct encoder {
    const mamba_tokenizer_t *tok;
    int flags;
    mb_bpe_scratch sc;
    mb_ids_out out;
    const char *text;   /* what the splits' offsets refer to */
} encoder;

static mamba_status_t normalized_split(void *user, size_t start, size_t stop, int32_t id)
{
    encoder *e = user;
    if (id >= 0) {
        mb_ids_push(&e->out, id);
        return MAMBA_OK;
    }
    return mb_split_piece(e->tok, e->text + start, stop - start, (e->flags & MB_TOKENIZE_REGEX_ONLY) != 0, &e->sc, &e->out);
}

static mamba_status_t raw_split(void *user, size_t start, size_t stop, int32_t id)
{
    encoder *e = user;
    if (id >= 0) {
        mb_ids_push(&e->out, id);
        return MAMBA_OK;
    }
    const char *s = e->text + start, *norm = s;
    size_t len = stop - start;
    if (e->tok->nfc) {
        const mamba_status_t st = mb_nfc(s, len, &e->sc, &norm, &len);
        if (st != MAMBA_OK) return mb_seterr(mb_tls_err(), st, "mamba_tokenize: out of memory normalizing the text");
    }
    const char *saved = e->text;
    e->text = norm;
    const mamba_status_t st = mb_added_split(e->tok, &e->tok->norm_trie, norm, len,
                                             (e->flags & MAMBA_TOKENIZE_SPECIAL_AS_TEXT) != 0, normalized_split, e);
    e->text = saved;
    return st;
}

mamba_status_t mamba_tokenize(const mamba_tokenizer_t *tok, const char *text, size_t len, int flags, int32_t *ids,
                              size_t cap, size_t *n_ids)
{
    char *err = mb_tls_err();
    if (n_ids) *n_ids = 0;
    if (!tok || !n_ids || (!text && len) || (!ids && cap))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenize: NULL argument");
    if (flags & ~(MAMBA_TOKENIZE_SPECIAL_AS_TEXT | MB_TOKENIZE_REGEX_ONLY))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenize: unknown flags 0x%x", (unsigned)flags);
    const size_t bad = len ? mb_utf8_invalid(text, len) : 0;
    if (bad != len)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenize: text is not valid UTF-8 at byte offset %zu (0x%02x)",
                         bad, (unsigned)(uint8_t)text[bad]);
    encoder e = {.tok = tok, .flags = flags, .out = {.ids = ids, .cap = cap}, .text = text};
    mamba_status_t st = MAMBA_OK;
    if (len) st = mb_added_split(tok, &tok->raw_trie, text, len, (flags & MAMBA_TOKENIZE_SPECIAL_AS_TEXT) != 0, raw_split, &e);
    mb_bpe_scratch_free(&e.sc);
    if (st != MAMBA_OK) return st;
    *n_ids = e.out.n;
    return MAMBA_OK;
}
