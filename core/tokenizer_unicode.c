/* The tokenizer's Unicode helpers: UTF-8 stepping and validation, NFC (utf8proc), and the
 * White_Space and word-character classes the added tokens' lstrip, rstrip and single_word use. */
#include <string.h>

#include <utf8proc.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

size_t mb_utf8_next(const char *s, size_t n, uint32_t *cp)
{
    const uint8_t c = (uint8_t)s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    utf8proc_int32_t u;
    const utf8proc_ssize_t len = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &u);
    if (len <= 0 || u < 0) return 0;
    *cp = (uint32_t)u;
    return (size_t)len;
}

size_t mb_utf8_invalid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* eight ASCII bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        uint32_t c;
        const size_t step = mb_utf8_next(s + i, n - i, &c);
        if (step == 0) return i;
        i += step;
    }
    return n;
}

size_t mb_utf8_prev(const char *s, size_t end)
{
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80) i--;
    return i;
}

int mb_is_white_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Unicode \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
 * Alphabetic is taken as the letters and letter numbers plus the circled and squared letters
 * (the symbols that have Other_Alphabetic); its other members are marks. */
int mb_is_word_char(uint32_t c)
{
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
        (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* Code points that tokenizers' NFC leaves alone but utf8proc's does not: tokenizers normalizes
 * with unicode-normalization-alignments 0.1.12, whose tables are Unicode 9.0, utf8proc 2.8 has
 * Unicode 15.0. These were assigned since 9.0 with a combining class, a decomposition or a
 * composition (and five older ones compose only with such): to tokenizers they are starters
 * that neither decompose nor compose, so nothing reorders or composes across them. Splitting
 * the text at them gives what it gives. Made by scripts/tokenizer-unicode9.py (which probes
 * tokenizers 0.23.3 for every code point and checks the split on random strings). */
static const uint32_t hf_inert[][2] = {
    {0x07FD, 0x07FD}, {0x0898, 0x089F}, {0x08CA, 0x08D3}, {0x09FE, 0x09FE}, {0x0C3C, 0x0C3C},
    {0x0D3B, 0x0D3C}, {0x0EBA, 0x0EBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA},
    {0x2ADD, 0x2ADD}, {0xA82C, 0xA82C}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930}, {0x11935, 0x11935},
    {0x11938, 0x11938}, {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0},
    {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1D157, 0x1D158}, {0x1D1B9, 0x1D1BA}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136},
    {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

static int is_hf_inert(uint32_t c)
{
    size_t lo = 0, hi = sizeof hf_inert / sizeof hf_inert[0];
    if (c < hf_inert[0][0] || c > hf_inert[hi - 1][1]) return 0;
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (c < hf_inert[mid][0]) hi = mid;
        else if (c > hf_inert[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* utf8proc's NFC of s[0, n) appended to out. */
static mamba_status_t nfc_append(const char *s, size_t n, mb_bpe_scratch *sc, mb_buf *out)
{
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    if (n == 0) return MAMBA_OK;
    for (;;) {
        const utf8proc_ssize_t cap = (utf8proc_ssize_t)(sc->cps_cap ? sc->cps_cap - 1 : 0);
        const utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, sc->cps, cap, opt);
        if (r < 0) return MAMBA_ERR_INVALID_ARGUMENT; /* the input was validated: cannot happen */
        if (r <= cap) {
            /* re-encodes in place, writing a NUL after the bytes: cps has one more slot */
            const utf8proc_ssize_t bytes = utf8proc_reencode(sc->cps, r, opt);
            if (bytes < 0) return MAMBA_ERR_INVALID_ARGUMENT;
            return mb_buf_put(out, sc->cps, (size_t)bytes) ? MAMBA_OK : MAMBA_ERR_OUT_OF_MEMORY;
        }
        size_t want = (size_t)r + 1;
        if (want < n + 16) want = n + 16;
        int32_t *p = mb_realloc(sc->cps, want * sizeof *p);
        if (!p) return MAMBA_ERR_OUT_OF_MEMORY;
        sc->cps = p;
        sc->cps_cap = want;
    }
}

mamba_status_t mb_nfc(const char *s, size_t n, mb_bpe_scratch *sc, const char **out, size_t *out_len)
{
    /* Below U+0300 every character is its own NFC and none combines with the one before. */
    size_t i = 0;
    while (i < n && (uint8_t)s[i] < 0xCC) i++;
    if (i == n) {
        *out = s;
        *out_len = n;
        return MAMBA_OK;
    }
    sc->norm.len = 0;
    size_t start = 0;
    for (i = 0; i < n;) {
        uint32_t c = 0;
        size_t step = 1;
        if ((uint8_t)s[i] >= 0xDF) step = mb_utf8_next(s + i, n - i, &c);
        if (step == 0) return MAMBA_ERR_INVALID_ARGUMENT; /* validated: cannot happen */
        if (c >= 0x7FD && is_hf_inert(c)) {
            mamba_status_t st = nfc_append(s + start, i - start, sc, &sc->norm);
            if (st == MAMBA_OK && !mb_buf_put(&sc->norm, s + i, step)) st = MAMBA_ERR_OUT_OF_MEMORY;
            if (st != MAMBA_OK) return st;
            start = i + step;
        }
        i += step;
    }
    const mamba_status_t st = nfc_append(s + start, n - start, sc, &sc->norm);
    if (st != MAMBA_OK) return st;
    *out = sc->norm.p ? sc->norm.p : s;
    *out_len = sc->norm.len;
    return MAMBA_OK;
}
