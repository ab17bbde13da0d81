/* The byte-level BPE tokenizer's private types, shared by its loader (tokenizer.c), the added
 * tokens' matcher (tokenizer_added.c), the pre-tokenizer (tokenizer_split.c), the merges
 * (tokenizer_bpe.c), the encoding pipeline (tokenizer_encode.c) and the decoder
 * (tokenizer_decode.c). Every step follows what Hugging Face `tokenizers` does for the same
 * tokenizer.json, so that the ids are the same. */
#ifndef MB_TOKENIZER_INTERNAL_H
#define MB_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* mamba_tokenize's flags beyond the public ones: split with the regex alone, without the
 * ASCII fast path that gives the same pieces (for the tests and fuzzers that compare both). */
#define MB_TOKENIZE_REGEX_ONLY (1 << 30)

/* ---- growable byte buffer (scratch of one call) ---- */
typedef struct mb_buf {
    char *p;
    size_t len, cap;
} mb_buf;
/* Make room for need more bytes; 0 when out of memory. */
int mb_buf_reserve(mb_buf *b, size_t need);
int mb_buf_put(mb_buf *b, const void *data, size_t n);

/* ---- added tokens: a byte trie matched leftmost-longest (tokenizer_added.c) ---- */
typedef struct mb_trie_node {
    int32_t child;     /* first child, -1 none                     */
    int32_t sibling;   /* next child of the same parent, -1 none   */
    int32_t token;     /* index into the added tokens ending here, -1 none */
    uint8_t byte;
} mb_trie_node;

typedef struct mb_trie {
    mb_trie_node *nodes; /* nodes[0] is the root */
    size_t n, cap;
    uint8_t first[256];  /* 1 for the bytes some pattern starts with */
} mb_trie;

int mb_trie_init(mb_trie *t);
/* Add pattern (len > 0) for added token index; 0 when out of memory. A pattern already present
 * keeps its first token. */
int mb_trie_add(mb_trie *t, const char *pattern, size_t len, int32_t token);
void mb_trie_free(mb_trie *t);
/* The leftmost-longest match in s[from, n): 1 with *start, *end, *token; 0 when none. */
int mb_trie_find(const mb_trie *t, const char *s, size_t n, size_t from, size_t *start, size_t *end,
                 int32_t *token);

typedef struct mb_added_token {
    char *content;       /* as in the file                                        */
    char *pattern;       /* what is matched: content, NFC-normalized when normalized */
    size_t content_len, pattern_len;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} mb_added_token;

/* ---- merges: (left id, right id) -> (rank, merged id), open addressing ---- */
typedef struct mb_merge_slot {
    uint64_t key;      /* left << 32 | right; MB_MERGE_EMPTY when free */
    uint32_t rank;
    int32_t id;
} mb_merge_slot;
#define MB_MERGE_EMPTY UINT64_MAX

struct mamba_tokenizer {
    size_t n_ids;              /* one more than the largest id                          */
    /* what each id decodes to (the ByteLevel decoder's bytes), in one arena; len
     * UINT32_MAX for an id that has no token */
    char *bytes;
    uint32_t *bytes_off, *bytes_len;
    /* the vocab's strings as written in the file, and a hash from them to ids */
    char *strs;
    uint32_t *str_off, *str_len;
    int32_t *str_table;
    size_t str_mask;
    mb_merge_slot *merges;
    size_t merge_mask;
    int32_t byte_id[256];      /* the vocab id of each byte's character, -1 when absent */
    /* the vocab's tokens by their bytes (those made of byte-level characters only), each
     * flagged MB_WORD_WHOLE when the merges of its bytes give it back: a word that is such a
     * token needs no merging. Slots hold the hash's high half and the id, id -1 when free. */
    struct mb_word_slot *words;
    size_t word_mask;
    mb_added_token *added;
    size_t n_added;
    mb_trie raw_trie;          /* added tokens with normalized false: matched on the input */
    mb_trie norm_trie;         /* the others: matched on the NFC text                     */
    int nfc;                   /* normalizer NFC (else none)                              */
    int add_prefix_space;
    int use_regex;
    int ignore_merges;
    int fuse_unk;
    int32_t unk_id;            /* -1: characters missing from the vocab are dropped       */
    void *regex;               /* OnigRegex of the GPT-2 split pattern                    */
};

typedef struct mb_word_slot {
    uint32_t tag;
    int32_t id;                /* the id | MB_WORD_WHOLE; -1 free */
} mb_word_slot;
#define MB_WORD_WHOLE (1 << 30)

/* The id of a vocab string as written in the file, or -1. */
int32_t mb_tok_lookup(const mamba_tokenizer_t *tok, const char *s, size_t len);
/* Where the merge of (left, right) would be found first. */
static inline size_t mb_tok_merge_slot(const mamba_tokenizer_t *tok, int32_t left, int32_t right)
{
    const uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & tok->merge_mask;
}
/* The merge of (left, right), or NULL. */
static inline const mb_merge_slot *mb_tok_merge(const mamba_tokenizer_t *tok, int32_t left, int32_t right)
{
    const uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = mb_tok_merge_slot(tok, left, right);
    for (;;) {
        const mb_merge_slot *s = &tok->merges[i];
        if (s->key == key) return s;
        if (s->key == MB_MERGE_EMPTY) return NULL;
        i = (i + 1) & tok->merge_mask;
    }
}

/* ---- the byte-level mapping (tokenizer.c) ---- */
/* The code point GPT-2's bytes_to_unicode gives byte b. */
uint32_t mb_byte_char(uint8_t b);
/* The byte of code point c under that mapping, or -1. */
int mb_char_byte(uint32_t c);

/* ---- encoding scratch and steps ---- */
typedef struct mb_ids_out {
    int32_t *ids;
    size_t cap, n;
} mb_ids_out;
static inline void mb_ids_push(mb_ids_out *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Scratch memory of one mamba_tokenize call, grown on demand and freed at its end. */
typedef struct mb_bpe_scratch {
    struct mb_bpe_sym *syms;
    size_t syms_cap;
    struct mb_bpe_entry *heap;
    size_t heap_cap;
    void *region;              /* OnigRegion */
    mb_buf piece;              /* a piece with its prefix space         */
    mb_buf mapped;             /* a word's characters (ignore_merges)   */
    int32_t *cps;              /* utf8proc's code points               */
    size_t cps_cap;
} mb_bpe_scratch;

void mb_bpe_scratch_free(mb_bpe_scratch *sc);

/* The splits of s[0, n) around the added tokens of trie, as `tokenizers` makes them (with
 * single_word, lstrip, rstrip; special tokens skipped when special_as_text): fn receives each
 * in order, with id -1 for text between tokens. Stops at fn's first failure. */
typedef mamba_status_t (*mb_split_fn)(void *user, size_t start, size_t stop, int32_t id);
mamba_status_t mb_added_split(const mamba_tokenizer_t *tok, const mb_trie *trie, const char *s, size_t n,
                              int special_as_text, mb_split_fn fn, void *user);

/* The vocab token whose bytes are w[0, n) (with MB_WORD_WHOLE when it is its own BPE), or -1. */
int32_t mb_word_lookup(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n);
/* The merges alone, without the whole-token shortcut (to find which tokens are whole). */
mamba_status_t mb_bpe_merge(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n, mb_bpe_scratch *sc,
                            mb_ids_out *out);
/* String hash of the vocab tables. */
uint64_t mb_str_hash(const char *s, size_t n);

/* BPE of one pre-tokenized word (raw bytes, before the byte-level mapping): push its ids. */
mamba_status_t mb_bpe_word(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n, mb_bpe_scratch *sc,
                           mb_ids_out *out);
/* Split a piece with the ByteLevel pre-tokenizer (regex; the ASCII fast path unless
 * regex_only) and BPE each word. */
mamba_status_t mb_split_piece(const mamba_tokenizer_t *tok, const char *s, size_t n, int regex_only,
                              mb_bpe_scratch *sc, mb_ids_out *out);
/* Compile the GPT-2 split pattern; NULL with a message in err. */
void *mb_split_regex_new(char *err, const char *path);
void mb_split_regex_free(void *regex);
void mb_split_region_free(void *region);
/* NFC of s[0, n) (utf8proc): *out is s itself when nothing changes, else memory of sc valid
 * until the next call. The input must be valid UTF-8. */
mamba_status_t mb_nfc(const char *s, size_t n, mb_bpe_scratch *sc, const char **out, size_t *out_len);
/* Whether code point c is White_Space (Rust's char::is_whitespace) and \w (word character). */
int mb_is_white_space(uint32_t c);
int mb_is_word_char(uint32_t c);
/* Decode one code point of valid UTF-8 at s (n > 0 bytes left); returns its length. */
size_t mb_utf8_next(const char *s, size_t n, uint32_t *cp);
/* The offset of the first byte of s[0, n) that is not part of valid UTF-8; n when all is. */
size_t mb_utf8_invalid(const char *s, size_t n);
/* The start of the code point ending at s[end-1] (valid UTF-8). */
size_t mb_utf8_prev(const char *s, size_t end);

#endif /* MB_TOKENIZER_INTERNAL_H */
