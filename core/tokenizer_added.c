/* Added tokens in the text: a byte trie searched leftmost-longest (the Aho-Corasick match kind
 * `tokenizers` uses), and the splits around the matches with the tokens' single_word, lstrip
 * and rstrip applied as it applies them. */
#include <stdlib.h>
#include <string.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

int mb_trie_init(mb_trie *t)
{
    memset(t, 0, sizeof *t);
    t->nodes = mb_malloc(16 * sizeof *t->nodes);
    if (!t->nodes) return 0;
    t->cap = 16;
    t->n = 1;
    t->nodes[0] = (mb_trie_node){.child = -1, .sibling = -1, .token = -1};
    return 1;
}

void mb_trie_free(mb_trie *t)
{
    free(t->nodes);
    t->nodes = NULL;
    t->n = t->cap = 0;
}

static int32_t child_of(const mb_trie *t, int32_t node, uint8_t byte)
{
    for (int32_t c = t->nodes[node].child; c >= 0; c = t->nodes[c].sibling)
        if (t->nodes[c].byte == byte) return c;
    return -1;
}

int mb_trie_add(mb_trie *t, const char *pattern, size_t len, int32_t token)
{
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        const uint8_t b = (uint8_t)pattern[i];
        int32_t next = child_of(t, node, b);
        if (next < 0) {
            if (t->n == t->cap) {
                mb_trie_node *p = mb_realloc(t->nodes, 2 * t->cap * sizeof *p);
                if (!p) return 0;
                t->nodes = p;
                t->cap *= 2;
            }
            next = (int32_t)t->n++;
            t->nodes[next] = (mb_trie_node){.child = -1, .sibling = t->nodes[node].child, .token = -1, .byte = b};
            t->nodes[node].child = next;
        }
        node = next;
    }
    if (t->nodes[node].token < 0) t->nodes[node].token = token;
    t->first[(uint8_t)pattern[0]] = 1;
    return 1;
}

int mb_trie_find(const mb_trie *t, const char *s, size_t n, size_t from, size_t *start, size_t *end, int32_t *token)
{
    if (!t->nodes || t->nodes[0].child < 0) return 0;
    for (size_t i = from; i < n; i++) {
        if (!t->first[(uint8_t)s[i]]) continue;
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t k = i; k < n; k++) {
            node = child_of(t, node, (uint8_t)s[k]);
            if (node < 0) break;
            if (t->nodes[node].token >= 0) {
                best = t->nodes[node].token;
                best_end = k + 1;
            }
        }
        if (best >= 0) {
            *start = i;
            *end = best_end;
            *token = best;
            return 1;
        }
    }
    return 0;
}

/* Whether the character before s[at] / at s[at] is a word character (\w). */
static int word_before(const char *s, size_t at)
{
    if (at == 0) return 0;
    uint32_t c = 0;
    const size_t p = mb_utf8_prev(s, at);
    mb_utf8_next(s + p, at - p, &c);
    return mb_is_word_char(c);
}

static int word_at(const char *s, size_t n, size_t at)
{
    uint32_t c = 0;
    return at < n && mb_utf8_next(s + at, n - at, &c) && mb_is_word_char(c);
}

mamba_status_t mb_added_split(const mamba_tokenizer_t *tok, const mb_trie *trie, const char *s, size_t n,
                              int special_as_text, mb_split_fn fn, void *user)
{
    size_t cursor = 0, from = 0, start, stop;
    int32_t index;
    mamba_status_t st = MAMBA_OK;
    while (st == MAMBA_OK && mb_trie_find(trie, s, n, from, &start, &stop, &index)) {
        /* the search goes on after the match as found, whatever is done with it */
        from = stop;
        const mb_added_token *t = &tok->added[index];
        if (special_as_text && t->special) continue;
        if (t->single_word && (word_before(s, start) || word_at(s, n, stop))) continue;
        if (t->lstrip) {
            size_t left = start;
            while (left > 0) {
                uint32_t c = 0;
                const size_t p = mb_utf8_prev(s, left);
                mb_utf8_next(s + p, left - p, &c);
                if (!mb_is_white_space(c)) break;
                left = p;
            }
            start = left > cursor ? left : cursor;
        }
        if (t->rstrip) {
            while (stop < n) {
                uint32_t c = 0;
                const size_t step = mb_utf8_next(s + stop, n - stop, &c);
                if (!step || !mb_is_white_space(c)) break;
                stop += step;
            }
        }
        if (cursor < start) st = fn(user, cursor, start, -1);
        if (st == MAMBA_OK) st = fn(user, start, stop, t->id);
        cursor = stop;
    }
    if (st == MAMBA_OK && cursor < n) st = fn(user, cursor, n, -1);
    return st;
}
