/* The byte-level BPE tokenizer against Hugging Face tokenizers: the GPT-NeoX-20B fixture's 2113
 * cases (ids and decoded text), a hand-made GPT-2-style file whose ids an independent Python
 * BPE computed, the special-as-text flag, the streaming detokenizer, round trips on random
 * text, invalid UTF-8, a very long word, and malformed files. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "testutil.h"

/* mamba_tokenize's private flag (core/tokenizer_internal.h): the regex alone, no fast path */
#define TOKENIZE_REGEX_ONLY (1 << 30)

typedef struct tok_case {
    char *text, *decoded;
    size_t text_len, decoded_len;
    int32_t *ids;
    size_t n_ids;
    char cat[64];
} tok_case;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    ck_assert_ptr_nonnull(q);
    return q;
}

/* cJSON's strings end at a NUL: "\u0000" escapes become U+FDD0 (absent from the fixtures) for
 * the parse and NULs again after it. */
static void hide_nuls(char *line)
{
    for (char *p = line; *p; p++) {
        if (*p != '\\') continue;
        if (strncmp(p + 1, "u0000", 5) == 0) memcpy(p + 1, "ufdd0", 5);
        p++;
    }
}

static char *restore_nuls(const char *s, size_t *len)
{
    const size_t n = strlen(s);
    char *out = malloc(n + 1);
    ck_assert_ptr_nonnull(out);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] == 0xEF && (unsigned char)s[i + 1] == 0xB7 && (unsigned char)s[i + 2] == 0x90) {
            out[k++] = '\0';
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    *len = k;
    return out;
}

static tok_case *load_cases(const char *rel, size_t *count)
{
    size_t len;
    char *all = read_file_all(data_path(1, rel), &len);
    size_t cap = 256, n = 0;
    tok_case *cases = calloc(cap, sizeof *cases);
    for (char *line = all, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (!*line) continue;
        hide_nuls(line);
        cJSON *o = cJSON_Parse(line);
        ck_assert_msg(o != NULL, "%s: line %zu does not parse", rel, n + 1);
        if (n == cap) cases = xrealloc(cases, (cap *= 2) * sizeof *cases);
        tok_case *c = &cases[n++];
        memset(c, 0, sizeof *c);
        const cJSON *text = cJSON_GetObjectItem(o, "text"), *ids = cJSON_GetObjectItem(o, "ids");
        const cJSON *dec = cJSON_GetObjectItem(o, "decoded"), *cat = cJSON_GetObjectItem(o, "cat");
        ck_assert(cJSON_IsString(text) && cJSON_IsArray(ids));
        c->text = restore_nuls(text->valuestring, &c->text_len);
        if (cJSON_IsString(dec)) c->decoded = restore_nuls(dec->valuestring, &c->decoded_len);
        snprintf(c->cat, sizeof c->cat, "%s", cJSON_IsString(cat) ? cat->valuestring : "-");
        c->n_ids = (size_t)cJSON_GetArraySize(ids);
        c->ids = malloc((c->n_ids + 1) * sizeof *c->ids);
        size_t k = 0;
        for (const cJSON *e = ids->child; e; e = e->next) c->ids[k++] = (int32_t)e->valuedouble;
        cJSON_Delete(o);
    }
    free(all);
    *count = n;
    return cases;
}

static void free_cases(tok_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(cases[i].text);
        free(cases[i].decoded);
        free(cases[i].ids);
    }
    free(cases);
}

static mamba_tokenizer_t *load_neox(void)
{
    mamba_tokenizer_t *tok;
    ck_assert_msg(mamba_tokenizer_load(data_path(0, "tokenizer/tokenizer.json"), &tok) == MAMBA_OK, "%s",
                  mamba_last_error(NULL));
    return tok;
}

/* Encode into a fresh buffer of the exact size (asking for the count first). */
static int32_t *encode(const mamba_tokenizer_t *tok, const char *text, size_t len, int flags, size_t *n)
{
    ck_assert_msg(mamba_tokenize(tok, text, len, flags, NULL, 0, n) == MAMBA_OK, "%s", mamba_last_error(NULL));
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    size_t again;
    ck_assert_msg(mamba_tokenize(tok, text, len, flags, ids, *n, &again) == MAMBA_OK, "%s", mamba_last_error(NULL));
    ck_assert_uint_eq(again, *n);
    return ids;
}

static char *decode(const mamba_tokenizer_t *tok, const int32_t *ids, size_t n, size_t *len)
{
    ck_assert_msg(mamba_detokenize(tok, ids, n, NULL, 0, len) == MAMBA_OK, "%s", mamba_last_error(NULL));
    char *text = malloc(*len + 1);
    size_t again;
    ck_assert_int_eq(mamba_detokenize(tok, ids, n, text, *len, &again), MAMBA_OK);
    ck_assert_uint_eq(again, *len);
    return text;
}

static size_t first_diff_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

static size_t first_diff_bytes(const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Every case encodes to its ids (with and without the ASCII fast path) and decodes to its text. */
START_TEST(neox_cases)
{
    mamba_tokenizer_t *tok = load_neox();
    size_t n;
    tok_case *cases = load_cases("tokenizer/cases.jsonl", &n);
    ck_assert_uint_eq(n, 2113);
    size_t bad_enc = 0, bad_dec = 0;
    char first_enc[512] = "", first_dec[512] = "";
    for (size_t i = 0; i < n; i++) {
        const tok_case *c = &cases[i];
        for (int pass = 0; pass < 2; pass++) {
            size_t got_n;
            int32_t *got = encode(tok, c->text, c->text_len, pass ? TOKENIZE_REGEX_ONLY : 0, &got_n);
            const size_t at = first_diff_ids(got, got_n, c->ids, c->n_ids);
            if ((at < got_n || at < c->n_ids) && !bad_enc++)
                snprintf(first_enc, sizeof first_enc, "case %zu (%s)%s: id %zu is %d, expected %d (%zu ids, expected %zu)", i,
                         c->cat, pass ? " with the regex alone" : "", at, at < got_n ? got[at] : -1,
                         at < c->n_ids ? c->ids[at] : -1, got_n, c->n_ids);
            free(got);
        }
        size_t dl;
        char *d = decode(tok, c->ids, c->n_ids, &dl);
        const size_t at = first_diff_bytes(d, dl, c->decoded, c->decoded_len);
        if ((at < dl || at < c->decoded_len) && !bad_dec++)
            snprintf(first_dec, sizeof first_dec, "case %zu (%s): byte %zu differs (%zu bytes, expected %zu)", i, c->cat, at,
                     dl, c->decoded_len);
        free(d);
    }
    free_cases(cases, n);
    mamba_tokenizer_free(tok);
    ck_assert_msg(bad_enc == 0, "%zu encodings of %zu cases (2 each) differ from tokenizers'; the first: %s", bad_enc, n,
                  first_enc);
    ck_assert_msg(bad_dec == 0, "%zu of %zu cases decode differently; the first: %s", bad_dec, n, first_dec);
}
END_TEST

/* One tokenizer, encoding and decoding in four threads at once (ThreadSanitizer's build checks
 * the sharing the header allows). */
typedef struct share_job {
    const mamba_tokenizer_t *tok;
    const tok_case *cases;
    size_t n, start;
    size_t bad;
} share_job;

static void *share_worker(void *arg)
{
    share_job *j = arg;
    for (size_t k = 0; k < j->n; k++) {
        const tok_case *c = &j->cases[(j->start + k) % j->n];
        size_t n, len;
        if (mamba_tokenize(j->tok, c->text, c->text_len, 0, NULL, 0, &n) != MAMBA_OK) {
            j->bad++;
            continue;
        }
        int32_t *ids = malloc((n + 1) * sizeof *ids);
        if (mamba_tokenize(j->tok, c->text, c->text_len, 0, ids, n, &n) != MAMBA_OK || n != c->n_ids ||
            memcmp(ids, c->ids, n * sizeof *ids) != 0 || mamba_detokenize(j->tok, ids, n, NULL, 0, &len) != MAMBA_OK ||
            len != c->decoded_len)
            j->bad++;
        free(ids);
    }
    return NULL;
}

START_TEST(threads_share_a_tokenizer)
{
    mamba_tokenizer_t *tok = load_neox();
    size_t n;
    tok_case *cases = load_cases("tokenizer/cases.jsonl", &n);
    pthread_t th[4];
    share_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (share_job){.tok = tok, .cases = cases, .n = n, .start = (size_t)t * n / 4};
        ck_assert_int_eq(pthread_create(&th[t], NULL, share_worker, &jobs[t]), 0);
    }
    size_t bad = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        bad += jobs[t].bad;
    }
    free_cases(cases, n);
    mamba_tokenizer_free(tok);
    ck_assert_msg(bad == 0, "%zu encodings in threads differ", bad);
}
END_TEST

/* Push every id, then flush: the pieces join to the one-shot decoding. */
static void check_stream(const mamba_tokenizer_t *tok, const int32_t *ids, size_t n, const char *what)
{
    mamba_detok_stream_t *s;
    ck_assert_int_eq(mamba_detok_stream_create(tok, &s), MAMBA_OK);
    size_t cap = 64, len = 0;
    char *joined = malloc(cap);
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t pl;
        if (i < n) ck_assert_int_eq(mamba_detok_stream_push(s, ids[i], &piece, &pl), MAMBA_OK);
        else ck_assert_int_eq(mamba_detok_stream_flush(s, &piece, &pl), MAMBA_OK);
        /* every piece is valid UTF-8 on its own */
        for (size_t k = 0; k < pl;) {
            utf8proc_int32_t cp;
            const utf8proc_ssize_t step = utf8proc_iterate((const utf8proc_uint8_t *)piece + k, (utf8proc_ssize_t)(pl - k), &cp);
            ck_assert_msg(step > 0, "%s: the piece after id %zu is not valid UTF-8 at byte %zu", what, i, k);
            k += (size_t)step;
        }
        while (len + pl > cap) joined = xrealloc(joined, cap *= 2);
        memcpy(joined + len, piece, pl);
        len += pl;
    }
    mamba_detok_stream_free(s);
    size_t dl;
    char *d = decode(tok, ids, n, &dl);
    ck_assert_msg(dl == len && memcmp(d, joined, len) == 0, "%s: the stream gives %zu bytes, the one-shot decoding %zu", what,
                  len, dl);
    free(d);
    free(joined);
}

START_TEST(stream_matches_one_shot)
{
    mamba_tokenizer_t *tok = load_neox();
    size_t n;
    tok_case *cases = load_cases("tokenizer/cases.jsonl", &n);
    for (size_t i = 0; i < n; i++) {
        char what[96];
        snprintf(what, sizeof what, "case %zu (%s)", i, cases[i].cat);
        check_stream(tok, cases[i].ids, cases[i].n_ids, what);
    }
    free_cases(cases, n);
    /* random ids, half of them single bytes of multi-byte sequences: partial and invalid UTF-8 */
    int32_t bytes_ids[128] = {0};
    size_t nb = 0;
    for (int32_t id = 0; id < (int32_t)mamba_tokenizer_vocab_size(tok) && nb < 128; id++) {
        size_t bl;
        const char *b = mamba_token_bytes(tok, id, &bl);
        if (bl == 1 && (unsigned char)b[0] >= 0x80) bytes_ids[nb++] = id;
    }
    ck_assert_uint_ge(nb, 100);
    uint64_t seed = 42;
    for (int round = 0; round < 300; round++) {
        int32_t ids[40];
        const size_t len = (size_t)(round % 40);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const uint32_t r = (uint32_t)(seed >> 33);
            ids[k] = r & 1 ? bytes_ids[(r >> 1) % nb] : (int32_t)((r >> 1) % mamba_tokenizer_vocab_size(tok));
        }
        check_stream(tok, ids, len, "random ids");
    }
    mamba_tokenizer_free(tok);
}
END_TEST

/* Decoding bytes that are not UTF-8: what tokenizers gives (String::from_utf8_lossy). */
START_TEST(lossy_decoding)
{
    mamba_tokenizer_t *tok = load_neox();
    static const struct {
        int32_t ids[6];
        size_t n;
        const char *text;
    } lossy[] = {
        {{158, 213}, 2, "\xef\xbf\xbd"},                          /* E2 82: cut short        */
        {{158, 213, 34}, 3, "\xef\xbf\xbd" "A"},                   /* E2 82 'A'               */
        {{172, 211}, 2, "\xef\xbf\xbd\xef\xbf\xbd"},              /* F0 80: 80 cannot follow */
        {{156, 243, 34}, 3, "\xef\xbf\xbd" "A"},                   /* E0 A0 'A'               */
        {{169, 243, 211}, 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* ED A0 80: a surrogate */
        {{176, 227, 211, 211}, 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* F4 90 80 80 */
        {{158, 213, 107}, 3, "\xe2\x82\xac"},                     /* E2 82 AC: the euro sign */
        {{211}, 1, "\xef\xbf\xbd"},                               /* a lone 80               */
        {{172, 242, 235, 211, 158}, 5, "\xf0\x9f\x98\x80\xef\xbf\xbd"}, /* an emoji, then E2 */
    };
    for (size_t i = 0; i < sizeof lossy / sizeof lossy[0]; i++) {
        size_t len;
        char *d = decode(tok, lossy[i].ids, lossy[i].n, &len);
        ck_assert_msg(len == strlen(lossy[i].text) && memcmp(d, lossy[i].text, len) == 0, "lossy case %zu", i);
        check_stream(tok, lossy[i].ids, lossy[i].n, "lossy case");
        free(d);
    }
    mamba_tokenizer_free(tok);
}
END_TEST

static void expect_ids(const mamba_tokenizer_t *tok, const char *text, int flags, const int32_t *want, size_t n_want)
{
    size_t n;
    int32_t *got = encode(tok, text, strlen(text), flags, &n);
    const size_t at = first_diff_ids(got, n, want, n_want);
    ck_assert_msg(at == n && at == n_want, "'%s' (flags %d): id %zu is %d, expected %d (%zu ids, expected %zu)", text, flags,
                  at, at < n ? got[at] : -1, at < n_want ? want[at] : -1, n, n_want);
    free(got);
}

/* tokenizers with encode_special_tokens = True gives these ids. */
START_TEST(special_as_text)
{
    mamba_tokenizer_t *tok = load_neox();
    const int32_t eot[] = {0}, eot_text[] = {29, 93, 423, 1171, 1156, 49651};
    const int32_t mid[] = {66, 0, 67}, mid_text[] = {66, 29, 93, 423, 1171, 1156, 49651, 67};
    const int32_t two[] = {1, 1269, 209, 0};
    const int32_t two_text[] = {29, 93, 17333, 49651, 1269, 654, 93, 423, 1171, 1156, 49651};
    expect_ids(tok, "<|endoftext|>", 0, eot, 1);
    expect_ids(tok, "<|endoftext|>", MAMBA_TOKENIZE_SPECIAL_AS_TEXT, eot_text, 6);
    expect_ids(tok, "a<|endoftext|>b", 0, mid, 3);
    expect_ids(tok, "a<|endoftext|>b", MAMBA_TOKENIZE_SPECIAL_AS_TEXT, mid_text, 8);
    expect_ids(tok, "<|padding|> x <|endoftext|>", 0, two, 4);
    expect_ids(tok, "<|padding|> x <|endoftext|>", MAMBA_TOKENIZE_SPECIAL_AS_TEXT, two_text, 11);
    /* the flag leaves the non-special added tokens (runs of spaces) alone */
    const int32_t spaces[] = {66, 50275, 67};
    expect_ids(tok, "a   b", MAMBA_TOKENIZE_SPECIAL_AS_TEXT, spaces, 3);
    size_t n;
    ck_assert_int_eq(mamba_tokenize(tok, "x", 1, 4, NULL, 0, &n), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "flags"));
    mamba_tokenizer_free(tok);
}
END_TEST

/* Where the Unicode tables of Debian 12's libraries are newer than tokenizers' (NFC of Unicode
 * 9.0; the split pattern's letters and digits of Unicode 16.0, Oniguruma's of 14.0 here): the
 * ids tokenizers 0.23.3 gives. */
START_TEST(unicode_versions)
{
    static const struct {
        const char *text;
        int32_t ids[12];
        size_t n;
    } cases[] = {
        {"a\xe0\xa2\x9e\xcc\xa7", {66, 156, 97, 241, 136, 102}, 6},                           /* U+089E is no mark to it */
        {"e\xcc\x81\xe0\xa2\x9e\xcc\x81", {860, 156, 97, 241, 136, 212}, 6},
        {"\xf0\x91\xa4\xb5\xf0\x91\xa4\xb0", {172, 228, 99, 115, 172, 228, 99, 110}, 8},   /* no U+11938 */
        {"x\xf0\xb1\x8d\x90\xf0\xb1\x8d\x91 y", {89, 172, 111, 224, 227, 172, 111, 224, 228, 340}, 10}, /* letters of 15.0 */
        {" \xf0\x90\xb5\x80\xf0\x90\xb5\x81 1", {209, 172, 227, 115, 211, 172, 227, 115, 212, 337}, 10}, /* digits of 16.0 */
        {"\xf0\xb1\x97\xa8'd", {172, 111, 234, 103, 1871}, 5},
        {"ab\xe1\xb2\x89" "cd", {357, 157, 112, 220, 2428}, 5},
    };
    mamba_tokenizer_t *tok = load_neox();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_ids(tok, cases[i].text, 0, cases[i].ids, cases[i].n);
        expect_ids(tok, cases[i].text, TOKENIZE_REGEX_ONLY, cases[i].ids, cases[i].n);
    }
    mamba_tokenizer_free(tok);
}
END_TEST

START_TEST(api)
{
    mamba_tokenizer_t *tok;
    /* a directory holding tokenizer.json */
    ck_assert_msg(mamba_tokenizer_load(data_path(0, "tokenizer"), &tok) == MAMBA_OK, "%s", mamba_last_error(NULL));
    ck_assert_uint_eq(mamba_tokenizer_vocab_size(tok), 50277);
    int32_t id;
    ck_assert_int_eq(mamba_tokenizer_find(tok, "<|endoftext|>", &id), MAMBA_OK);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(mamba_tokenizer_find(tok, "<|padding|>", &id), MAMBA_OK);
    ck_assert_int_eq(id, 1);
    ck_assert_int_eq(mamba_tokenizer_find(tok, "\xc4\xa0the", &id), MAMBA_OK); /* "Ġthe" */
    ck_assert_int_eq(id, 253);
    ck_assert_int_eq(mamba_tokenizer_find(tok, "no such token", &id), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "no such token"));
    size_t len;
    const char *b = mamba_token_bytes(tok, 253, &len);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(b, " the", 4), 0);
    b = mamba_token_bytes(tok, 50276, &len); /* an added token: two spaces */
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(memcmp(b, "  ", 2), 0);
    b = mamba_token_bytes(tok, 0, &len);
    ck_assert_uint_eq(len, 13);
    ck_assert_int_eq(memcmp(b, "<|endoftext|>", 13), 0);
    ck_assert_ptr_null(mamba_token_bytes(tok, 50277, &len));
    ck_assert_ptr_null(mamba_token_bytes(tok, -1, &len));
    /* a buffer too small: the count, and the ids that fit */
    const char *text = "Hello, world! This is a test.";
    size_t n_all, n;
    int32_t *all = encode(tok, text, strlen(text), 0, &n_all);
    int32_t few[3] = {-7, -7, -7};
    ck_assert_int_eq(mamba_tokenize(tok, text, strlen(text), 0, few, 2, &n), MAMBA_OK);
    ck_assert_uint_eq(n, n_all);
    ck_assert_int_eq(few[0], all[0]);
    ck_assert_int_eq(few[1], all[1]);
    ck_assert_int_eq(few[2], -7);
    char small[4];
    ck_assert_int_eq(mamba_detokenize(tok, all, n_all, small, sizeof small, &len), MAMBA_OK);
    ck_assert_uint_eq(len, strlen(text));
    ck_assert_int_eq(memcmp(small, "Hell", 4), 0);
    /* a bad id names its index */
    int32_t bad[3] = {253, 10, 50277};
    ck_assert_int_eq(mamba_detokenize(tok, bad, 3, NULL, 0, &len), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "ids[2] = 50277"));
    mamba_detok_stream_t *s;
    ck_assert_int_eq(mamba_detok_stream_create(tok, &s), MAMBA_OK);
    const char *piece;
    ck_assert_int_eq(mamba_detok_stream_push(s, -3, &piece, &len), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_detok_stream_push(s, 253, &piece, &len), MAMBA_OK);
    ck_assert_uint_eq(len, 4);
    mamba_detok_stream_free(s);
    /* empty text, NULL arguments */
    ck_assert_int_eq(mamba_tokenize(tok, NULL, 0, 0, NULL, 0, &n), MAMBA_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(mamba_tokenize(tok, "x", 1, 0, NULL, 0, NULL), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_tokenize(NULL, "x", 1, 0, NULL, 0, &n), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_tokenizer_load(NULL, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    free(all);
    mamba_tokenizer_free(tok);
    mamba_tokenizer_free(NULL);
    mamba_detok_stream_free(NULL);
}
END_TEST

/* A code point for random text: mostly ASCII, then Latin-1, combining marks, Hangul, CJK,
 * emoji, spaces of every kind and controls. */
static uint32_t random_cp(uint64_t *seed)
{
    *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
    const uint32_t r = (uint32_t)(*seed >> 33);
    static const uint32_t ranges[][2] = {
        {0x20, 0x7E}, {0x20, 0x7E}, {0x20, 0x7E}, {0x00, 0x1F}, {0xA0, 0xFF}, {0x300, 0x36F}, {0x1100, 0x11FF},
        {0xAC00, 0xD7A3}, {0x4E00, 0x9FFF}, {0x1F300, 0x1F64F}, {0x2000, 0x206F}, {0x3000, 0x303F}, {0x0400, 0x04FF},
        {0x0900, 0x097F}, {0xFB00, 0xFB4F}, {0x1D400, 0x1D7FF},
    };
    const size_t k = (r & 0xFF) % (sizeof ranges / sizeof ranges[0]);
    return ranges[k][0] + (r >> 8) % (ranges[k][1] - ranges[k][0] + 1);
}

/* decode(encode(x)) is NFC(x) for any valid UTF-8 (special tokens as text, so that the whole
 * text is one normalized stretch). */
START_TEST(round_trip_random_utf8)
{
    mamba_tokenizer_t *tok = load_neox();
    uint64_t seed = 7;
    for (int round = 0; round < 400; round++) {
        char text[1024];
        size_t len = 0;
        const int n_cp = round % 120;
        for (int k = 0; k < n_cp; k++) {
            const uint32_t cp = random_cp(&seed);
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            len += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)text + len);
        }
        size_t n;
        int32_t *ids = encode(tok, text, len, MAMBA_TOKENIZE_SPECIAL_AS_TEXT, &n);
        ck_assert_uint_le(n, 3 * len + 1);
        size_t dl;
        char *d = decode(tok, ids, n, &dl);
        /* NFC with NULs: utf8proc_map with an explicit length */
        utf8proc_uint8_t *nfc = NULL;
        const utf8proc_ssize_t nl = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                                 UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        ck_assert_int_ge(nl, 0);
        ck_assert_msg((size_t)nl == dl && memcmp(nfc, d, dl) == 0, "round %d: %zu bytes back, NFC has %zd (first difference at %zu)",
                      round, dl, nl, first_diff_bytes(d, dl, (const char *)nfc, (size_t)nl));
        size_t n2;
        int32_t *ids2 = encode(tok, text, len, MAMBA_TOKENIZE_SPECIAL_AS_TEXT | TOKENIZE_REGEX_ONLY, &n2);
        ck_assert_msg(n2 == n && memcmp(ids, ids2, n * sizeof *ids) == 0, "round %d: the fast path splits differently", round);
        free(ids2);
        free(nfc);
        free(d);
        free(ids);
    }
    mamba_tokenizer_free(tok);
}
END_TEST

/* The offset of the first byte that is not valid UTF-8, by the Unicode table of well-formed
 * sequences; len when all are. */
static size_t first_invalid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const unsigned char b = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xC2 && b <= 0xDF) need = 1;
        else if (b >= 0xE0 && b <= 0xEF) need = 2;
        else if (b >= 0xF0 && b <= 0xF4) need = 3;
        else return i;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= len || s[i + k] < lo || s[i + k] > hi) return i;
            lo = 0x80;
            hi = 0xBF;
        }
        i += need + 1;
    }
    return len;
}

START_TEST(random_bytes)
{
    mamba_tokenizer_t *tok = load_neox();
    uint64_t seed = 99;
    int invalid = 0;
    for (int round = 0; round < 2000; round++) {
        unsigned char text[64] = {0};
        const size_t len = (size_t)(round % 64);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const uint32_t r = (uint32_t)(seed >> 33);
            /* ASCII, continuation bytes and lead bytes, so that some sequences are valid */
            text[k] = (unsigned char)(r % 3 == 0 ? r % 0x80 : r % 3 == 1 ? 0x80 + (r >> 2) % 0x40 : 0xC0 + (r >> 2) % 0x40);
        }
        const size_t bad = first_invalid(text, len);
        size_t n;
        int32_t ids[256];
        const mamba_status_t st = mamba_tokenize(tok, (const char *)text, len, 0, ids, 256, &n);
        if (bad < len) {
            invalid++;
            ck_assert_int_eq(st, MAMBA_ERR_INVALID_ARGUMENT);
            char want[64];
            snprintf(want, sizeof want, "byte offset %zu ", bad);
            ck_assert_msg(strstr(mamba_last_error(NULL), want), "round %d: '%s' does not name offset %zu", round,
                          mamba_last_error(NULL), bad);
        } else {
            ck_assert_int_eq(st, MAMBA_OK);
            size_t dl;
            char *d = decode(tok, ids, n, &dl);
            free(d);
        }
    }
    ck_assert_int_gt(invalid, 1000);
    mamba_tokenizer_free(tok);
}
END_TEST

/* A 100,000-character word: the merges are not quadratic (the ctest timeout is the bound). */
START_TEST(long_word)
{
    mamba_tokenizer_t *tok = load_neox();
    const size_t len = 100000;
    char *text = malloc(len);
    uint64_t seed = 5;
    for (size_t i = 0; i < len; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        text[i] = (char)('a' + (seed >> 33) % 26);
    }
    for (int pass = 0; pass < 2; pass++) {
        size_t n;
        int32_t *ids = encode(tok, text, len, pass ? TOKENIZE_REGEX_ONLY : 0, &n);
        ck_assert_uint_gt(n, len / 10);
        size_t dl;
        char *d = decode(tok, ids, n, &dl);
        ck_assert_uint_eq(dl, len);
        ck_assert_int_eq(memcmp(d, text, len), 0);
        free(d);
        free(ids);
    }
    /* one repeated letter: every pair the same merge */
    memset(text, 'a', len);
    size_t n;
    int32_t *ids = encode(tok, text, len, 0, &n);
    size_t dl;
    char *d = decode(tok, ids, n, &dl);
    ck_assert_uint_eq(dl, len);
    free(d);
    free(ids);
    free(text);
    mamba_tokenizer_free(tok);
}
END_TEST

/* The hand-made GPT-2-style file, in both merges forms, against the independent Python BPE. */
START_TEST(gpt2_style)
{
    static const char *const files[] = {"tokenizer/gpt2_tiny.json", "tokenizer/gpt2_tiny_pairs.json"};
    size_t n;
    tok_case *cases = load_cases("tokenizer/gpt2_tiny_cases.jsonl", &n);
    ck_assert_uint_ge(n, 20);
    for (size_t f = 0; f < 2; f++) {
        mamba_tokenizer_t *tok;
        ck_assert_msg(mamba_tokenizer_load(data_path(0, files[f]), &tok) == MAMBA_OK, "%s", mamba_last_error(NULL));
        ck_assert_uint_eq(mamba_tokenizer_vocab_size(tok), 129);
        for (size_t i = 0; i < n; i++) {
            for (int pass = 0; pass < 2; pass++) {
                size_t got_n;
                int32_t *got = encode(tok, cases[i].text, cases[i].text_len, pass ? TOKENIZE_REGEX_ONLY : 0, &got_n);
                const size_t at = first_diff_ids(got, got_n, cases[i].ids, cases[i].n_ids);
                ck_assert_msg(at == got_n && at == cases[i].n_ids, "%s: '%s': id %zu is %d, expected %d", files[f],
                              cases[i].text, at, at < got_n ? got[at] : -1, at < cases[i].n_ids ? cases[i].ids[at] : -1);
                free(got);
            }
        }
        int32_t id;
        ck_assert_int_eq(mamba_tokenizer_find(tok, "[X]", &id), MAMBA_OK);
        ck_assert_int_eq(id, 128);
        size_t len;
        const int32_t hello[] = {127, 94, 97, 109};
        char *d = decode(tok, hello, 4, &len);
        ck_assert_uint_eq(len, strlen("<|endoftext|> hello"));
        ck_assert_int_eq(memcmp(d, "<|endoftext|> hello", len), 0);
        free(d);
        mamba_tokenizer_free(tok);
    }
    free_cases(cases, n);
}
END_TEST

/* Malformed and unsupported files: a status, and a message naming the file and the entry. */
static const struct bad_file {
    const char *name, *json;
    mamba_status_t st;
    const char *needle;
} bad_files[] = {
    {"malformed", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,}}}", MAMBA_ERR_FORMAT, "malformed JSON"},
    {"wordpiece", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", MAMBA_ERR_UNSUPPORTED,
     "model.type 'WordPiece' is not supported"},
    {"unigram", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", MAMBA_ERR_UNSUPPORTED,
     "model.type 'Unigram' is not supported"},
    {"unknown_merge", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\", \"a c\"]}}",
     MAMBA_ERR_FORMAT, "model.merges[1] ('a' + 'c'): the right token 'c' is not in the vocab"},
    {"unmerged", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}",
     MAMBA_ERR_FORMAT, "model.merges[0] ('a' + 'b'): the merged token 'ab' is not in the vocab"},
    {"bad_merge", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b c\"]}}", MAMBA_ERR_FORMAT,
     "model.merges[0]: expected"},
    {"duplicate_id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 1}, \"merges\": []}}",
     MAMBA_ERR_FORMAT, "model.vocab: id 1 is given to both 'b' and 'c'"},
    {"missing_vocab", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", MAMBA_ERR_FORMAT, "model.vocab: missing"},
    {"missing_model", "{\"normalizer\": null}", MAMBA_ERR_FORMAT, "model: missing"},
    {"negative_id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", MAMBA_ERR_FORMAT,
     "model.vocab['a']: expected an integer id"},
    {"not_object", "[1, 2]", MAMBA_ERR_FORMAT, "expected a JSON object"},
    {"normalizer", "{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                   " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
     MAMBA_ERR_UNSUPPORTED, "normalizer.type 'Lowercase' is not supported"},
    {"pre_tokenizer", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Metaspace\"},"
                      " \"decoder\": {\"type\": \"ByteLevel\"}}",
     MAMBA_ERR_UNSUPPORTED, "pre_tokenizer.type 'Metaspace' is not supported"},
    {"added", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
              " \"decoder\": {\"type\": \"ByteLevel\"}, \"added_tokens\": [{\"id\": 1, \"content\": 5}]}",
     MAMBA_ERR_FORMAT, "added_tokens[0]: expected an object"},
    {"unk", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [], \"unk_token\": \"<unk>\"}}", MAMBA_ERR_FORMAT,
     "model.unk_token '<unk>' is not in the vocab"},
};

START_TEST(rejects_bad_files)
{
    char *dir = tmpdir_new();
    char path[4200];
    const struct bad_file *b = &bad_files[_i];
    snprintf(path, sizeof path, "%s/%s.json", dir, b->name);
    write_file(path, b->json, strlen(b->json));
    mamba_tokenizer_t *tok = (mamba_tokenizer_t *)&path; /* must be reset to NULL */
    const mamba_status_t st = mamba_tokenizer_load(path, &tok);
    const char *msg = mamba_last_error(NULL);
    ck_assert_msg(st == b->st, "%s: status %s, expected %s (%s)", b->name, mamba_status_string(st), mamba_status_string(b->st),
                  msg);
    ck_assert_ptr_null(tok);
    ck_assert_msg(strstr(msg, path) != NULL, "%s: '%s' does not name the file", b->name, msg);
    ck_assert_msg(strstr(msg, b->needle) != NULL, "%s: '%s' does not say '%s'", b->name, msg, b->needle);
    snprintf(path, sizeof path, "%s/absent.json", dir);
    ck_assert_int_eq(mamba_tokenizer_load(path, &tok), MAMBA_ERR_IO);
    tmpdir_remove(dir);
}
END_TEST

/* ---- a checkpoint directory's text side: mamba_model_tokenizer and mamba_model_eos ---- */

/* A copy of the tiny fixture in dir, its config's eos_token_id line replaced by eos_line ("" drops it). */
static void tiny_dir(const char *dir, const char *eos_line)
{
    char path[4200];
    size_t len;
    char *cfg = read_file_all(data_path(0, "models/tiny/config.json"), &len);
    char *at = strstr(cfg, "\"eos_token_id\": 0,");
    ck_assert_ptr_nonnull(at);
    const char *rest = at + strlen("\"eos_token_id\": 0,");
    char *edited = malloc(len + strlen(eos_line) + 1);
    snprintf(edited, len + strlen(eos_line) + 1, "%.*s%s%s", (int)(at - cfg), cfg, eos_line, rest);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, edited, strlen(edited));
    free(edited);
    free(cfg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    copy_file(data_path(0, "models/tiny/model.safetensors"), path);
}

static void put_text(const char *dir, const char *name, const char *text)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, text, strlen(text));
}

static void put_tokenizer(const char *dir, const char *rel)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    copy_file(data_path(0, rel), path);
}

/* The eos id mamba_model_load(dir) gives, or -1 with the message in msg. */
static int32_t eos_of_dir(mamba_context_t *ctx, const char *dir, char *msg, size_t cap)
{
    mamba_model_t *m;
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    int32_t id = -1;
    if (mamba_model_eos(m, &id) != MAMBA_OK) {
        snprintf(msg, cap, "%s", mamba_last_error(ctx));
        id = -1;
    }
    mamba_model_free(m);
    return id;
}

START_TEST(model_finds_its_text)
{
    char *dir = tmpdir_new();
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m;
    /* weights alone: no tokenizer, the config's eos (0) */
    tiny_dir(dir, "\"eos_token_id\": [9, 4],");
    ck_assert_int_eq(mamba_model_load(ctx, dir, &m), MAMBA_OK);
    ck_assert_ptr_null(mamba_model_tokenizer(m));
    int32_t id = -1;
    ck_assert_int_eq(mamba_model_eos(m, &id), MAMBA_OK);
    ck_assert_int_eq(id, 9);
    ck_assert_int_eq(mamba_model_eos(m, NULL), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_model_free(m);
    /* with the GPT-NeoX tokenizer: the same ids as the tokenizer loaded on its own */
    put_tokenizer(dir, "tokenizer/tokenizer.json");
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    const mamba_tokenizer_t *tok = mamba_model_tokenizer(m);
    ck_assert_ptr_nonnull(tok);
    ck_assert_uint_eq(mamba_tokenizer_vocab_size(tok), 50277);
    mamba_tokenizer_t *alone = load_neox();
    static const char text[] = "Hello, world!<|endoftext|> caf\xc3\xa9";
    size_t na, nb;
    int32_t *a = encode(tok, text, sizeof text - 1, 0, &na), *b = encode(alone, text, sizeof text - 1, 0, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_mem_eq(a, b, na * sizeof *a);
    ck_assert_int_eq(a[4], 0); /* <|endoftext|> recognized */
    free(a);
    free(b);
    mamba_tokenizer_free(alone);
    mamba_model_free(m);
    /* where the eos comes from: generation_config.json, then config.json, then the tokenizer */
    char msg[1024] = "";
    put_text(dir, "generation_config.json", "{\"bos_token_id\": 0, \"eos_token_id\": 5}");
    ck_assert_int_eq(eos_of_dir(ctx, dir, msg, sizeof msg), 5);
    put_text(dir, "generation_config.json", "{\"eos_token_id\": [7, 2]}");
    ck_assert_int_eq(eos_of_dir(ctx, dir, msg, sizeof msg), 7);
    put_text(dir, "generation_config.json", "{\"eos_token_id\": null}");
    ck_assert_int_eq(eos_of_dir(ctx, dir, msg, sizeof msg), 9);
    tiny_dir(dir, "");
    put_text(dir, "generation_config.json", "{\"eos_token_id\": []}");
    put_tokenizer(dir, "tokenizer/gpt2_tiny.json"); /* its <|endoftext|> is 127 */
    ck_assert_int_eq(eos_of_dir(ctx, dir, msg, sizeof msg), 127);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    ck_assert_int_eq(remove(path), 0);
    ck_assert_int_eq(eos_of_dir(ctx, dir, msg, sizeof msg), -1);
    ck_assert_msg(strstr(msg, "no end-of-sequence token known") != NULL, "%s", msg);
    /* synthetic models and explicit files have no tokenizer; the latter read their config's eos */
    mamba_config_t cfg;
    mamba_config_init(&cfg);
    cfg.d_model = 16;
    cfg.n_layer = 1;
    cfg.vocab_size = 32;
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &cfg, MAMBA_F32, 1, &m), MAMBA_OK);
    ck_assert_ptr_null(mamba_model_tokenizer(m));
    ck_assert_int_eq(mamba_model_eos(m, &id), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "no end-of-sequence token known"));
    mamba_model_free(m);
    ck_assert_int_eq(mamba_model_load_files(ctx, data_path(0, "models/tiny/config.json"),
                                            data_path(1, "models/tiny/model.safetensors"), &m), MAMBA_OK);
    ck_assert_ptr_null(mamba_model_tokenizer(m));
    ck_assert_int_eq(mamba_model_eos(m, &id), MAMBA_OK);
    ck_assert_int_eq(id, 0);
    mamba_model_free(m);
    ck_assert_ptr_null(mamba_model_tokenizer(NULL));
    ck_assert_int_eq(mamba_model_eos(NULL, &id), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_context_free(ctx);
    tmpdir_remove(dir);
}
END_TEST

/* A malformed tokenizer.json or generation_config.json fails the load, naming the file. */
static const struct bad_side {
    const char *name, *text;
    mamba_status_t st;
    const char *needle;
} bad_sides[] = {
    {"tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {", MAMBA_ERR_FORMAT, "malformed JSON"},
    {"tokenizer.json", "[]", MAMBA_ERR_FORMAT, "expected a JSON object"},
    {"generation_config.json", "{\"eos_token_id\": ", MAMBA_ERR_FORMAT, "malformed JSON"},
    {"generation_config.json", "{\"eos_token_id\": \"</s>\"}", MAMBA_ERR_FORMAT, "eos_token_id must be a token id in [0, 64)"},
    {"generation_config.json", "{\"eos_token_id\": 64}", MAMBA_ERR_FORMAT, "eos_token_id must be a token id in [0, 64)"},
    {"generation_config.json", "{\"eos_token_id\": [1.5]}", MAMBA_ERR_FORMAT, "eos_token_id"},
    {"generation_config.json", "7", MAMBA_ERR_FORMAT, "expected a JSON object"},
    {"config.json", NULL, MAMBA_ERR_FORMAT, "eos_token_id must be a token id"},
};

START_TEST(model_rejects_bad_text_files)
{
    const struct bad_side *b = &bad_sides[_i];
    char *dir = tmpdir_new();
    tiny_dir(dir, b->text ? "" : "\"eos_token_id\": -1,");
    if (b->text) put_text(dir, b->name, b->text);
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = (mamba_model_t *)&b; /* must be reset to NULL */
    const mamba_status_t st = mamba_model_load(ctx, dir, &m);
    const char *msg = mamba_last_error(ctx);
    ck_assert_msg(st == b->st, "%s: status %s (%s)", b->name, mamba_status_string(st), msg);
    ck_assert_ptr_null(m);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, b->name);
    ck_assert_msg(strstr(msg, path) != NULL, "'%s' does not name %s", msg, path);
    ck_assert_msg(strstr(msg, b->needle) != NULL, "'%s' does not say '%s'", msg, b->needle);
    mamba_context_free(ctx);
    tmpdir_remove(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, neox_cases);
    tcase_add_test(tc, threads_share_a_tokenizer);
    tcase_add_test(tc, stream_matches_one_shot);
    tcase_add_test(tc, lossy_decoding);
    tcase_add_test(tc, special_as_text);
    tcase_add_test(tc, unicode_versions);
    tcase_add_test(tc, api);
    tcase_add_test(tc, round_trip_random_utf8);
    tcase_add_test(tc, random_bytes);
    tcase_add_test(tc, long_word);
    tcase_add_test(tc, gpt2_style);
    tcase_add_loop_test(tc, rejects_bad_files, 0, (int)(sizeof bad_files / sizeof bad_files[0]));
    tcase_add_test(tc, model_finds_its_text);
    tcase_add_loop_test(tc, model_rejects_bad_text_files, 0, (int)(sizeof bad_sides / sizeof bad_sides[0]));
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
