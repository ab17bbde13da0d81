/* The tokenizer's shared pieces that depend on nothing else of it: the byte-level mapping,
 * byte buffers, string hashing and the vocab lookups, so that the loader, the pre-tokenizer,
 * the merges and the decoder all call down to this file and never to each other in a circle. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <oniguruma.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

/* ---- the byte-level mapping (GPT-2's bytes_to_unicode) ---- */

static int byte_is_printable(unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

uint32_t mb_byte_char(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    /* the others, in increasing order, take 256, 257, ...: 0..32, then 127..160, then 173 */
    if (b <= 32) return 256u + b;
    if (b <= 160) return 256u + 33 + (b - 127u);
    return 256u + 67;
}

int mb_char_byte(uint32_t c)
{
    if (c < 256) return byte_is_printable(c) ? (int)c : -1;
    if (c < 256 + 33) return (int)(c - 256);
    if (c < 256 + 67) return (int)(127 + c - 289);
    return c == 256 + 67 ? 173 : -1;
}

/* ---- buffers ---- */

int mb_buf_reserve(mb_buf *b, size_t need)
{
    if (b->cap - b->len >= need) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < need) {
        if (cap > SIZE_MAX / 2) return 0;
        cap *= 2;
    }
    char *p = mb_realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
    return 1;
}

int mb_buf_put(mb_buf *b, const void *data, size_t n)
{
    if (!mb_buf_reserve(b, n)) return 0;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    return 1;
}


/* ---- the vocab's strings ---- */

uint64_t mb_str_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

int32_t mb_tok_lookup(const mamba_tokenizer_t *tok, const char *s, size_t len)
{
    if (!tok->str_table) return -1;
    for (size_t i = (size_t)mb_str_hash(s, len) & tok->str_mask;; i = (i + 1) & tok->str_mask) {
        const int32_t id = tok->str_table[i];
        if (id < 0) return -1;
        if (tok->str_len[id] == len && memcmp(tok->strs + tok->str_off[id], s, len) == 0) return id;
    }
}

int32_t mb_word_lookup(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n)
{
    if (!tok->words) return -1;
    const uint64_t h = mb_str_hash((const char *)w, n);
    const uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & tok->word_mask;; i = (i + 1) & tok->word_mask) {
        const mb_word_slot *s = &tok->words[i];
        if (s->id < 0) return -1;
        const int32_t id = s->id & ~MB_WORD_WHOLE;
        if (s->tag == tag && tok->bytes_len[id] == n && memcmp(tok->bytes + tok->bytes_off[id], w, n) == 0) return s->id;
    }
}

void mb_split_region_free(void *region)
{
    if (region) onig_region_free((OnigRegion *)region, 1);
}
