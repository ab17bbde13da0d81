/* The ByteLevel pre-tokenizer: the optional prefix space, then GPT-2's split pattern, run by
 * Oniguruma as `tokenizers` runs it, each match a word for the BPE. Runs of ASCII are split by
 * hand with the same result (the pattern's classes are plain there), and Oniguruma takes over
 * wherever a match could reach a non-ASCII character. */
#include <pthread.h>
#include <string.h>

#include <oniguruma.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static pthread_once_t onig_once = PTHREAD_ONCE_INIT;

static void onig_setup(void)
{
    OnigEncoding encodings[1] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
}

void *mb_split_regex_new(char *err, const char *path)
{
    pthread_once(&onig_once, onig_setup);
    OnigRegex re = NULL;
    OnigErrorInfo info;
    const OnigUChar *p = (const OnigUChar *)gpt2_pattern;
    const int r = onig_new(&re, p, p + strlen(gpt2_pattern), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &info);
    if (r != ONIG_NORMAL) {
        OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, r, &info);
        mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: the split pattern did not compile: %s", path, (const char *)msg);
        return NULL;
    }
    return re;
}

void mb_split_regex_free(void *regex)
{
    if (regex) onig_free((OnigRegex)regex);
}

void mb_split_region_free(void *region)
{
    if (region) onig_region_free((OnigRegion *)region, 1);
}

/* ASCII classes of the pattern: \p{L}, \p{N}, \s, and the rest ([^\s\p{L}\p{N}]). */
enum { C_OTHER, C_LETTER, C_DIGIT, C_SPACE, C_HIGH };

static uint8_t class_table[256];
static pthread_once_t class_once = PTHREAD_ONCE_INIT;

static void class_init(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t k = C_OTHER;
        if (c >= 0x80) k = C_HIGH;
        else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = C_LETTER;
        else if (c >= '0' && c <= '9') k = C_DIGIT;
        else if ((c >= 9 && c <= 13) || c == ' ') k = C_SPACE;
        class_table[c] = k;
    }
}

static inline int cls(const char *s, size_t n, size_t i) { return i < n ? class_table[(uint8_t)s[i]] : -1; }

/* The end of the run of class k from i; *high set when it stops at a non-ASCII byte. */
static size_t run_end(const char *s, size_t n, size_t i, int k, int *high)
{
    while (i < n && class_table[(uint8_t)s[i]] == k) i++;
    *high = i < n && class_table[(uint8_t)s[i]] == C_HIGH;
    return i;
}

/* The end of the pattern's match at i when ASCII alone decides it (s[i] is ASCII); 0 when it
 * takes Oniguruma (a run that might go on into a non-ASCII letter, digit, mark or space). */
static size_t ascii_match(const char *s, size_t n, size_t i)
{
    const int c = cls(s, n, i);
    int high;
    if (s[i] == '\'' && i + 1 < n) {
        const char a = s[i + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n && ((a == 'r' && s[i + 2] == 'e') || (a == 'v' && s[i + 2] == 'e') || (a == 'l' && s[i + 2] == 'l')))
            return i + 3;
    }
    size_t start = i;
    int k = c;
    if (s[i] == ' ') {
        /* " ?X+": the class of the character after the space decides */
        const int next = cls(s, n, i + 1);
        if (next == C_HIGH) return 0;
        if (next == C_LETTER || next == C_DIGIT || next == C_OTHER) {
            start = i + 1;
            k = next;
        }
    }
    if (k == C_LETTER || k == C_DIGIT || k == C_OTHER) {
        const size_t e = run_end(s, n, start, k, &high);
        return high ? 0 : e;
    }
    /* whitespace: "\s+(?!\S)" leaves the last space of a run before a non-space to the next
     * match, "\s+" takes a single one */
    const size_t e = run_end(s, n, i, C_SPACE, &high);
    if (high) return 0;
    if (e == n) return e;
    return e - i >= 2 ? e - 1 : e;
}

mamba_status_t mb_split_piece(const mamba_tokenizer_t *tok, const char *s, size_t n, int regex_only,
                              mb_bpe_scratch *sc, mb_ids_out *out)
{
    if (n == 0) return MAMBA_OK;
    if (tok->add_prefix_space && s[0] != ' ') {
        sc->piece.len = 0;
        if (!mb_buf_put(&sc->piece, " ", 1) || !mb_buf_put(&sc->piece, s, n))
            return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "mamba_tokenize: out of memory");
        s = sc->piece.p;
        n = sc->piece.len;
    }
    const uint8_t *u = (const uint8_t *)s;
    if (!tok->use_regex) return mb_bpe_word(tok, u, n, sc, out);
    pthread_once(&class_once, class_init);
    if (!sc->region && !(sc->region = onig_region_new()))
        return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "mamba_tokenize: out of memory");
    OnigRegion *region = sc->region;
    const OnigUChar *str = (const OnigUChar *)s, *end = str + n;
    /* Oniguruma's matches as the onig crate's find_iter gives them: an empty match right after
     * the previous match is skipped by one character; text between matches is a word too */
    size_t prev = 0, from = 0, last_end = (size_t)-1;
    mamba_status_t st = MAMBA_OK;
    while (from < n && st == MAMBA_OK) {
        if (!regex_only && prev == from && u[from] < 0x80) {
            const size_t e = ascii_match(s, n, from);
            if (e) {
                st = mb_bpe_word(tok, u + from, e - from, sc, out);
                prev = from = last_end = e;
                continue;
            }
        }
        onig_region_clear(region);
        const int r = onig_search((OnigRegex)tok->regex, str, end, str + from, end, region, ONIG_OPTION_NONE);
        if (r == ONIG_MISMATCH) break;
        if (r < 0) {
            OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
            onig_error_code_to_str(msg, r);
            return mb_seterr(mb_tls_err(), MAMBA_ERR_UNSUPPORTED, "mamba_tokenize: the split pattern failed at byte %zu: %s",
                             from, (const char *)msg);
        }
        const size_t ms = (size_t)region->beg[0], me = (size_t)region->end[0];
        if (ms == me && ms == last_end) {
            uint32_t c;
            const size_t step = mb_utf8_next(s + from, n - from, &c);
            from += step ? step : 1;
            continue;
        }
        if (ms > prev) st = mb_bpe_word(tok, u + prev, ms - prev, sc, out);
        if (st == MAMBA_OK && me > ms) st = mb_bpe_word(tok, u + ms, me - ms, sc, out);
        prev = from = last_end = me;
    }
    if (st == MAMBA_OK && prev < n) st = mb_bpe_word(tok, u + prev, n - prev, sc, out);
    return st;
}
