/* Loading a Hugging Face tokenizer.json of a byte-level BPE model (GPT-NeoX, GPT-2): the vocab,
 * the merges, the added tokens and the pipeline's settings, checked and turned into the tables
 * the encoder and decoder use. Ids are given to added tokens as `tokenizers` gives them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

/* Llama-3's tokenizer.json is 9 MB; the largest in use are a few tens. */
#define MB_MAX_TOKENIZER_BYTES ((size_t)512 << 20)
/* Ids index arrays: far beyond any vocabulary, small enough to refuse absurd ones early. */
#define MB_MAX_TOKEN_ID ((1 << 22) - 1)

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

/* The bytes the ByteLevel decoder makes of token string s: each character's byte when every
 * character has one (then *mapped is 1), else s itself. Appends to b; 0 when out of memory. */
static int decoded_bytes(const char *s, size_t n, mb_buf *b, int *mapped)
{
    *mapped = 0;
    const size_t start = b->len;
    if (!mb_buf_reserve(b, n)) return 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = 0;
        const size_t step = mb_utf8_next(s + i, n - i, &c);
        i += step ? step : n; /* strings are checked at load: no step is 0 */
        const int byte = mb_char_byte(c);
        if (byte < 0) {
            b->len = start;
            return mb_buf_put(b, s, n);
        }
        b->p[b->len++] = (char)byte;
    }
    *mapped = 1;
    return 1;
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

static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

/* ---- loading ---- */

typedef struct loader {
    mamba_tokenizer_t *tok;
    const char *path;
    char *err;
    size_t n_vocab_ids;  /* the ids the vocab's arrays cover */
} loader;

#define LOAD_FAIL(ld, st, ...) mb_seterr((ld)->err, (st), __VA_ARGS__)

static mamba_status_t oom(loader *ld, const char *what)
{
    return LOAD_FAIL(ld, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for %s", ld->path, what);
}

/* A JSON number that is an integer in [0, MB_MAX_TOKEN_ID]. */
static int get_id(const cJSON *it, int32_t *id)
{
    if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > MB_MAX_TOKEN_ID ||
        it->valuedouble != (double)(int32_t)it->valuedouble)
        return 0;
    *id = (int32_t)it->valuedouble;
    return 1;
}

/* A boolean field; absent or null leaves *v. 0 when present with another type. */
static int get_bool(const cJSON *o, const char *key, int *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it)) return 1;
    if (!cJSON_IsBool(it)) return 0;
    *v = cJSON_IsTrue(it);
    return 1;
}

/* A string field that must be absent, null or "" (an option this tokenizer does not implement). */
static int empty_string(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return !it || cJSON_IsNull(it) || (cJSON_IsString(it) && it->valuestring[0] == '\0');
}

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static mamba_status_t load_vocab(loader *ld, const cJSON *vocab)
{
    mamba_tokenizer_t *tok = ld->tok;
    if (!vocab) return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: missing", ld->path);
    if (!cJSON_IsObject(vocab))
        return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: expected an object of token: id", ld->path);
    size_t n = 0, chars = 0;
    int32_t max_id = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        if (!get_id(e, &id))
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab['%s']: expected an integer id in 0..%d", ld->path,
                             e->string, MB_MAX_TOKEN_ID);
        const size_t bad = mb_utf8_invalid(e->string, strlen(e->string));
        if (e->string[bad] != '\0')
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: token '%s' is not valid UTF-8 (byte %zu)", ld->path,
                             e->string, bad);
        if (id > max_id) max_id = id;
        n++;
        chars += strlen(e->string);
    }
    if (n == 0) return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: empty", ld->path);
    if (chars > UINT32_MAX / 2)
        return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: %zu bytes of strings, too many", ld->path, chars);
    tok->n_ids = ld->n_vocab_ids = (size_t)max_id + 1;
    tok->str_off = mb_malloc(tok->n_ids * sizeof *tok->str_off);
    tok->str_len = mb_malloc(tok->n_ids * sizeof *tok->str_len);
    tok->strs = mb_malloc(chars + 1);
    const size_t cap = table_size(n);
    tok->str_table = mb_malloc(cap * sizeof *tok->str_table);
    if (!tok->str_off || !tok->str_len || !tok->strs || !tok->str_table) return oom(ld, "the vocab");
    tok->str_mask = cap - 1;
    memset(tok->str_table, 0xff, cap * sizeof *tok->str_table);
    for (size_t i = 0; i < tok->n_ids; i++) tok->str_len[i] = UINT32_MAX;
    size_t at = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        const size_t len = strlen(e->string);
        if (tok->str_len[id] != UINT32_MAX)
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: id %d is given to both '%.*s' and '%s'", ld->path,
                             (int)id, (int)tok->str_len[id], tok->strs + tok->str_off[id], e->string);
        if (mb_tok_lookup(tok, e->string, len) >= 0)
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.vocab: token '%s' appears twice", ld->path, e->string);
        memcpy(tok->strs + at, e->string, len);
        tok->str_off[id] = (uint32_t)at;
        tok->str_len[id] = (uint32_t)len;
        at += len;
        size_t i = (size_t)mb_str_hash(e->string, len) & tok->str_mask;
        while (tok->str_table[i] >= 0) i = (i + 1) & tok->str_mask;
        tok->str_table[i] = id;
    }
    return MAMBA_OK;
}

/* Split merges entry i into its two tokens: "a b" (one space) or ["a", "b"]. 0: skip it (a
 * "#version" line); 1: ok; -1: malformed. */
static int merge_parts(const cJSON *m, const char **a, size_t *a_len, const char **b, size_t *b_len)
{
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring;
        if (strncmp(s, "#version", 8) == 0) return 0;
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ')) return -1;
        *a = s;
        *a_len = (size_t)(sp - s);
        *b = sp + 1;
        *b_len = strlen(sp + 1);
        return 1;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
        *a = m->child->valuestring;
        *a_len = strlen(*a);
        *b = m->child->next->valuestring;
        *b_len = strlen(*b);
        return 1;
    }
    return -1;
}

static mamba_status_t load_merges(loader *ld, const cJSON *merges)
{
    mamba_tokenizer_t *tok = ld->tok;
    if (!merges) return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.merges: missing", ld->path);
    if (!cJSON_IsArray(merges))
        return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.merges: expected an array", ld->path);
    const size_t n = (size_t)cJSON_GetArraySize(merges);
    const size_t cap = table_size(n);
    tok->merges = mb_malloc(cap * sizeof *tok->merges);
    if (!tok->merges) return oom(ld, "the merges");
    tok->merge_mask = cap - 1;
    for (size_t i = 0; i < cap; i++) tok->merges[i].key = MB_MERGE_EMPTY;
    mb_buf joined = {0};
    uint32_t rank = 0;
    size_t index = 0;
    mamba_status_t st = MAMBA_OK;
    for (const cJSON *m = merges->child; m && st == MAMBA_OK; m = m->next, index++) {
        const char *a, *b;
        size_t a_len, b_len;
        const int parts = merge_parts(m, &a, &a_len, &b, &b_len);
        if (parts == 0) continue;
        if (parts < 0) {
            st = LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", ld->path,
                           index);
            break;
        }
        joined.len = 0;
        if (!mb_buf_put(&joined, a, a_len) || !mb_buf_put(&joined, b, b_len)) {
            st = oom(ld, "the merges");
            break;
        }
        const int32_t left = mb_tok_lookup(tok, a, a_len), right = mb_tok_lookup(tok, b, b_len);
        const int32_t id = mb_tok_lookup(tok, joined.p, joined.len);
        const char *missing = left < 0 ? "left" : right < 0 ? "right" : id < 0 ? "merged" : NULL;
        if (missing) {
            const int which_len = (int)(left < 0 ? a_len : right < 0 ? b_len : joined.len);
            const char *which = left < 0 ? a : right < 0 ? b : joined.p;
            st = LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.merges[%zu] ('%.*s' + '%.*s'): the %s token '%.*s' is not in the vocab",
                           ld->path, index, (int)a_len, a, (int)b_len, b, missing, which_len, which);
            break;
        }
        /* a pair given twice keeps its last rank, as a map built in order does */
        const uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
        size_t s = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & tok->merge_mask;
        while (tok->merges[s].key != MB_MERGE_EMPTY && tok->merges[s].key != key) s = (s + 1) & tok->merge_mask;
        tok->merges[s].key = key;
        tok->merges[s].rank = rank++;
        tok->merges[s].id = id;
    }
    free(joined.p);
    return st;
}

static mamba_status_t load_model(loader *ld, const cJSON *model)
{
    mamba_tokenizer_t *tok = ld->tok;
    if (!cJSON_IsObject(model)) return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model: missing or not an object", ld->path);
    const char *type = type_of(model);
    if (type && strcmp(type, "BPE") != 0)
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: model.type '%s' is not supported (only BPE)", ld->path, type);
    if (!type && !cJSON_GetObjectItemCaseSensitive(model, "merges"))
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: model: no type and no merges: not a BPE model", ld->path);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: model.dropout: BPE dropout is not supported", ld->path);
    if (!empty_string(model, "continuing_subword_prefix") || !empty_string(model, "end_of_word_suffix"))
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED,
                         "%s: model: continuing_subword_prefix and end_of_word_suffix are not supported", ld->path);
    int byte_fallback = 0;
    if (!get_bool(model, "byte_fallback", &byte_fallback) || !get_bool(model, "fuse_unk", &tok->fuse_unk) ||
        !get_bool(model, "ignore_merges", &tok->ignore_merges))
        return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model: byte_fallback, fuse_unk and ignore_merges must be booleans",
                         ld->path);
    if (byte_fallback)
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: model.byte_fallback: not supported (a byte-level BPE has no use for it)",
                         ld->path);
    mamba_status_t st = load_vocab(ld, cJSON_GetObjectItemCaseSensitive(model, "vocab"));
    if (st == MAMBA_OK) st = load_merges(ld, cJSON_GetObjectItemCaseSensitive(model, "merges"));
    if (st != MAMBA_OK) return st;
    tok->unk_id = -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.unk_token: expected a string", ld->path);
        tok->unk_id = mb_tok_lookup(tok, unk->valuestring, strlen(unk->valuestring));
        if (tok->unk_id < 0)
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: model.unk_token '%s' is not in the vocab", ld->path,
                             unk->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        const uint32_t c = mb_byte_char((uint8_t)b);
        size_t len;
        if (c < 0x80) {
            s[0] = (char)c;
            len = 1;
        } else {
            s[0] = (char)(0xC0 | (c >> 6));
            s[1] = (char)(0x80 | (c & 0x3F));
            len = 2;
        }
        tok->byte_id[b] = mb_tok_lookup(tok, s, len);
    }
    return MAMBA_OK;
}

static mamba_status_t load_pipeline(loader *ld, const cJSON *root)
{
    mamba_tokenizer_t *tok = ld->tok;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const char *t = type_of(norm);
        if (!t || strcmp(t, "NFC") != 0)
            return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: normalizer.type '%s' is not supported (only NFC or none)",
                             ld->path, t ? t : "(missing)");
        tok->nfc = 1;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const char *pt = pre && cJSON_IsObject(pre) ? type_of(pre) : NULL;
    if (!pt || strcmp(pt, "ByteLevel") != 0)
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: pre_tokenizer.type '%s' is not supported (only ByteLevel)",
                         ld->path, pt ? pt : "(missing)");
    tok->add_prefix_space = 1;
    tok->use_regex = 1;
    if (!get_bool(pre, "add_prefix_space", &tok->add_prefix_space) || !get_bool(pre, "use_regex", &tok->use_regex))
        return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: pre_tokenizer: add_prefix_space and use_regex must be booleans",
                         ld->path);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const char *dt = dec && cJSON_IsObject(dec) ? type_of(dec) : NULL;
    if (!dt || strcmp(dt, "ByteLevel") != 0)
        return LOAD_FAIL(ld, MAMBA_ERR_UNSUPPORTED, "%s: decoder.type '%s' is not supported (only ByteLevel)", ld->path,
                         dt ? dt : "(missing)");
    return MAMBA_OK;
}

/* The added tokens, with ids given as `tokenizers` gives them: a content already in the vocab
 * takes its id there, others take ids from the vocab's size on, in order (the file's "id"
 * must be a valid id, but is not used otherwise, as there). */
static mamba_status_t load_added(loader *ld, const cJSON *arr)
{
    mamba_tokenizer_t *tok = ld->tok;
    if (!arr || cJSON_IsNull(arr)) return MAMBA_OK;
    if (!cJSON_IsArray(arr)) return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: added_tokens: expected an array", ld->path);
    const size_t n = (size_t)cJSON_GetArraySize(arr);
    tok->added = mb_calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added) return oom(ld, "the added tokens");
    size_t n_vocab = 0;
    for (size_t i = 0; i < tok->n_ids; i++) n_vocab += tok->str_len[i] != UINT32_MAX;
    uint64_t next_id = n_vocab;
    size_t index = 0;
    for (const cJSON *e = arr->child; e; e = e->next, index++) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        int32_t file_id;
        if (!cJSON_IsObject(e) || !cJSON_IsString(content) || !get_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &file_id))
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT,
                             "%s: added_tokens[%zu]: expected an object with a string content and an integer id in 0..%d",
                             ld->path, index, MB_MAX_TOKEN_ID);
        int special = 0, single_word = 0, lstrip = 0, rstrip = 0, normalized;
        if (!get_bool(e, "special", &special)) special = -1;
        normalized = special != 1;
        if (special < 0 || !get_bool(e, "single_word", &single_word) || !get_bool(e, "lstrip", &lstrip) ||
            !get_bool(e, "rstrip", &rstrip) || !get_bool(e, "normalized", &normalized))
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT,
                             "%s: added_tokens[%zu] ('%s'): special, single_word, lstrip, rstrip and normalized must be booleans",
                             ld->path, index, content->valuestring);
        const size_t len = strlen(content->valuestring);
        if (len == 0) continue; /* ignored there too */
        if (mb_utf8_invalid(content->valuestring, len) != len)
            return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: added_tokens[%zu]: content '%s' is not valid UTF-8", ld->path, index,
                             content->valuestring);
        mb_added_token *t = NULL;
        for (size_t k = 0; k < tok->n_added && !t; k++)
            if (tok->added[k].content_len == len && memcmp(tok->added[k].content, content->valuestring, len) == 0)
                t = &tok->added[k];
        if (!t) { /* a content given again keeps its id and takes the new flags */
            t = &tok->added[tok->n_added++];
            t->content = mb_strdup(content->valuestring);
            if (!t->content) return oom(ld, "the added tokens");
            t->content_len = len;
            const int32_t in_vocab = mb_tok_lookup(tok, content->valuestring, len);
            if (in_vocab >= 0) {
                t->id = in_vocab;
            } else {
                if (next_id > MB_MAX_TOKEN_ID)
                    return LOAD_FAIL(ld, MAMBA_ERR_FORMAT, "%s: added_tokens[%zu]: ids past %d", ld->path, index,
                                     MB_MAX_TOKEN_ID);
                t->id = (int32_t)next_id++;
            }
        }
        t->special = (uint8_t)special;
        t->single_word = (uint8_t)single_word;
        t->lstrip = (uint8_t)lstrip;
        t->rstrip = (uint8_t)rstrip;
        t->normalized = (uint8_t)normalized;
    }
    return MAMBA_OK;
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

/* The word table over the ids flagged in word_ok, each run through the merges to learn whether
 * it is its own BPE. 0 when out of memory. */
static int build_words(mamba_tokenizer_t *tok, const uint8_t *word_ok, size_t n_words, mb_bpe_scratch *sc)
{
    const size_t cap = table_size(n_words);
    mb_word_slot *words = mb_malloc(cap * sizeof *words);
    if (!words) return 0;
    for (size_t i = 0; i < cap; i++) words[i].id = -1;
    for (size_t id = 0; id < tok->n_ids; id++) {
        if (!word_ok[id]) continue;
        const uint8_t *b = (const uint8_t *)tok->bytes + tok->bytes_off[id];
        const size_t len = tok->bytes_len[id];
        int32_t got[2] = {-1, -1};
        mb_ids_out out = {.ids = got, .cap = 2};
        if (mb_bpe_merge(tok, b, len, sc, &out) != MAMBA_OK) {
            free(words);
            return 0;
        }
        const int whole = out.n == 1 && got[0] == (int32_t)id;
        const uint64_t h = mb_str_hash((const char *)b, len);
        size_t i = (size_t)h & (cap - 1);
        while (words[i].id >= 0) i = (i + 1) & (cap - 1);
        words[i].tag = (uint32_t)(h >> 32);
        words[i].id = (int32_t)id | (whole ? MB_WORD_WHOLE : 0);
    }
    tok->words = words;
    tok->word_mask = cap - 1;
    return 1;
}

/* The tries, and the per-id bytes the decoder gives (an added token's own string, its NFC form
 * for a normalized one, overriding the vocab's). */
static mamba_status_t build_tables(loader *ld, mb_bpe_scratch *sc)
{
    mamba_tokenizer_t *tok = ld->tok;
    for (size_t i = 0; i < tok->n_added; i++)
        if ((size_t)tok->added[i].id >= tok->n_ids) tok->n_ids = (size_t)tok->added[i].id + 1;
    if (!mb_trie_init(&tok->raw_trie) || !mb_trie_init(&tok->norm_trie)) return oom(ld, "the added tokens");
    for (size_t i = 0; i < tok->n_added; i++) {
        mb_added_token *t = &tok->added[i];
        const char *pat = t->content;
        size_t pat_len = t->content_len;
        if (t->normalized && tok->nfc) {
            if (mb_nfc(t->content, t->content_len, sc, &pat, &pat_len) != MAMBA_OK) return oom(ld, "the added tokens");
        }
        t->pattern = mb_malloc(pat_len + 1);
        if (!t->pattern) return oom(ld, "the added tokens");
        if (pat_len) memcpy(t->pattern, pat, pat_len);
        t->pattern[pat_len] = '\0';
        t->pattern_len = pat_len;
        mb_trie *trie = t->normalized ? &tok->norm_trie : &tok->raw_trie;
        if (pat_len && !mb_trie_add(trie, t->pattern, pat_len, (int32_t)i)) return oom(ld, "the added tokens");
    }
    tok->bytes_off = mb_malloc(tok->n_ids * sizeof *tok->bytes_off);
    tok->bytes_len = mb_malloc(tok->n_ids * sizeof *tok->bytes_len);
    int32_t *added_at = mb_malloc(tok->n_ids * sizeof *added_at);
    if (!tok->bytes_off || !tok->bytes_len || !added_at) {
        free(added_at);
        return oom(ld, "the token bytes");
    }
    memset(added_at, 0xff, tok->n_ids * sizeof *added_at);
    for (size_t k = 0; k < tok->n_added; k++) added_at[tok->added[k].id] = (int32_t)k;
    /* vocab ids whose bytes are their vocab string's byte-level bytes: the word table's */
    uint8_t *word_ok = mb_calloc(tok->n_ids, 1);
    mb_buf arena = {0}, vocab_bytes = {0};
    int ok = word_ok != NULL;
    size_t n_words = 0;
    for (size_t id = 0; id < tok->n_ids && ok; id++) {
        const char *s = NULL;
        size_t len = 0;
        int in_vocab = id < ld->n_vocab_ids && tok->str_len[id] != UINT32_MAX, mapped = 0;
        if (added_at[id] >= 0) {
            const mb_added_token *t = &tok->added[added_at[id]];
            s = t->normalized ? t->pattern : t->content;
            len = t->normalized ? t->pattern_len : t->content_len;
        } else if (in_vocab) {
            s = tok->strs + tok->str_off[id];
            len = tok->str_len[id];
        }
        tok->bytes_off[id] = (uint32_t)arena.len;
        tok->bytes_len[id] = UINT32_MAX;
        if (!s) continue;
        ok = decoded_bytes(s, len, &arena, &mapped) && arena.len <= UINT32_MAX / 2;
        tok->bytes_len[id] = (uint32_t)(arena.len - tok->bytes_off[id]);
        if (ok && in_vocab && added_at[id] >= 0) {
            /* an added token over a vocab entry: its bytes must be the entry's own */
            vocab_bytes.len = 0;
            ok = decoded_bytes(tok->strs + tok->str_off[id], tok->str_len[id], &vocab_bytes, &mapped);
            if (ok && (vocab_bytes.len != tok->bytes_len[id] ||
                       memcmp(vocab_bytes.p, arena.p + tok->bytes_off[id], vocab_bytes.len) != 0))
                mapped = 0;
        }
        if (ok && in_vocab && mapped && tok->bytes_len[id] > 0) {
            word_ok[id] = 1;
            n_words++;
        }
    }
    free(added_at);
    free(vocab_bytes.p);
    tok->bytes = arena.p;
    if (ok) ok = build_words(tok, word_ok, n_words, sc);
    free(word_ok);
    if (!ok) return oom(ld, "the token bytes");
    return MAMBA_OK;
}

void mamba_tokenizer_free(mamba_tokenizer_t *tok)
{
    if (!tok) return;
    free(tok->bytes);
    free(tok->bytes_off);
    free(tok->bytes_len);
    free(tok->strs);
    free(tok->str_off);
    free(tok->str_len);
    free(tok->str_table);
    free(tok->merges);
    free(tok->words);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].pattern);
    }
    free(tok->added);
    mb_trie_free(&tok->raw_trie);
    mb_trie_free(&tok->norm_trie);
    mb_split_regex_free(tok->regex);
    free(tok);
}

mamba_status_t mamba_tokenizer_load(const char *path, mamba_tokenizer_t **out)
{
    char *err = mb_tls_err();
    if (!path || !out) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenizer_load: NULL argument");
    *out = NULL;
    char *file = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        const size_t n = strlen(path) + sizeof "/tokenizer.json";
        file = mb_malloc(n);
        if (!file) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        snprintf(file, n, "%s/tokenizer.json", path);
    }
    loader ld = {.path = file ? file : path, .err = err};
    mamba_status_t st;
    cJSON *root = mb_json_read(ld.path, MB_MAX_TOKENIZER_BYTES, "a tokenizer", err, &st);
    if (!root) {
        free(file);
        return st;
    }
    ld.tok = mb_calloc(1, sizeof *ld.tok);
    mb_bpe_scratch sc = {0};
    if (!ld.tok) {
        st = oom(&ld, "the tokenizer");
    } else if (!cJSON_IsObject(root)) {
        st = LOAD_FAIL(&ld, MAMBA_ERR_FORMAT, "%s: expected a JSON object (a tokenizer.json)", ld.path);
    } else {
        st = load_model(&ld, cJSON_GetObjectItemCaseSensitive(root, "model"));
        if (st == MAMBA_OK) st = load_pipeline(&ld, root);
        if (st == MAMBA_OK) st = load_added(&ld, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"));
        if (st == MAMBA_OK) st = build_tables(&ld, &sc);
        if (st == MAMBA_OK && !(ld.tok->regex = mb_split_regex_new(err, ld.path))) st = MAMBA_ERR_OUT_OF_MEMORY;
    }
    mb_bpe_scratch_free(&sc);
    cJSON_Delete(root);
    free(file);
    if (st != MAMBA_OK) {
        mamba_tokenizer_free(ld.tok);
        return st;
    }
    *out = ld.tok;
    return MAMBA_OK;
}

size_t mamba_tokenizer_vocab_size(const mamba_tokenizer_t *tok) { return tok ? tok->n_ids : 0; }

const char *mamba_token_bytes(const mamba_tokenizer_t *tok, int32_t id, size_t *len)
{
    if (len) *len = 0;
    if (!tok || id < 0 || (size_t)id >= tok->n_ids || tok->bytes_len[id] == UINT32_MAX) return NULL;
    if (len) *len = tok->bytes_len[id];
    /* an empty token still gets a valid pointer */
    return tok->bytes ? tok->bytes + tok->bytes_off[id] : "";
}

mamba_status_t mamba_tokenizer_find(const mamba_tokenizer_t *tok, const char *content, int32_t *id)
{
    char *err = mb_tls_err();
    if (!tok || !content || !id) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenizer_find: NULL argument");
    const size_t len = strlen(content);
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].content_len == len && memcmp(tok->added[i].content, content, len) == 0) {
            *id = tok->added[i].id;
            return MAMBA_OK;
        }
    const int32_t v = mb_tok_lookup(tok, content, len);
    if (v < 0)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenizer_find: '%s' is neither an added token nor in the vocab",
                         content);
    *id = v;
    return MAMBA_OK;
}
