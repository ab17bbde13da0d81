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
    const utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    for (;;) {
        const utf8proc_ssize_t cap = (utf8proc_ssize_t)(sc->cps_cap ? sc->cps_cap - 1 : 0);
        const utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, sc->cps, cap, opt);
        if (r < 0) return MAMBA_ERR_INVALID_ARGUMENT; /* the input was validated: cannot happen */
        if (r <= cap) {
            /* re-encodes in place, writing a NUL after the bytes: cps has one more slot */
            const utf8proc_ssize_t bytes = utf8proc_reencode(sc->cps, r, opt);
            if (bytes < 0) return MAMBA_ERR_INVALID_ARGUMENT;
            *out = (const char *)sc->cps;
            *out_len = (size_t)bytes;
            return MAMBA_OK;
        }
        size_t want = (size_t)r + 1;
        if (want < n + 16) want = n + 16;
        int32_t *p = mb_realloc(sc->cps, want * sizeof *p);
        if (!p) return MAMBA_ERR_OUT_OF_MEMORY;
        sc->cps = p;
        sc->cps_cap = want;
    }
}
