/* BPE merges on one pre-tokenized word, as `tokenizers` applies them: the symbols are a linked
 * list over an array, and the candidate merges a min-heap ordered by (rank, position), so a word
 * of n bytes costs O(n log n) however long it is. An entry whose pair has changed since it was
 * pushed is dropped when it comes up, by the same check (the pair's merge must still give the
 * entry's token). */
#include <stdlib.h>
#include <string.h>

#include "api/alloc.h"
#include "tokenizer_internal.h"

struct mb_bpe_sym {
    int32_t id;      /* -1: merged into the symbol on its left */
    int32_t prev, next;
};

struct mb_bpe_entry {
    uint64_t key;    /* rank << 32 | position of the left symbol */
    int32_t id;      /* the token the merge gives                */
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (*cap >= need) return 1;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = mb_realloc(*p, c * size);
    if (!q) return 0;
    *p = q;
    *cap = c;
    return 1;
}

static void heap_push(struct mb_bpe_entry *h, size_t *n, struct mb_bpe_entry e)
{
    size_t i = (*n)++;
    while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (h[parent].key <= e.key) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static void sift_down(struct mb_bpe_entry *h, size_t n, size_t i)
{
    const struct mb_bpe_entry e = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1].key < h[c].key) c++;
        if (h[c].key >= e.key) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = e;
}

static struct mb_bpe_entry heap_pop(struct mb_bpe_entry *h, size_t *n)
{
    const struct mb_bpe_entry top = h[0];
    h[0] = h[--(*n)];
    if (*n) sift_down(h, *n, 0);
    return top;
}

static mamba_status_t word_oom(void) { return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "mamba_tokenize: out of memory"); }

/* ignore_merges: a word that is a vocab entry as a whole is that entry. -1 when it is not. */
static int32_t whole_word(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n, mb_bpe_scratch *sc, int *oom)
{
    sc->mapped.len = 0;
    if (!mb_buf_reserve(&sc->mapped, 2 * n)) {
        *oom = 1;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const uint32_t c = mb_byte_char(w[i]);
        if (c < 0x80) {
            sc->mapped.p[sc->mapped.len++] = (char)c;
        } else {
            sc->mapped.p[sc->mapped.len++] = (char)(0xC0 | (c >> 6));
            sc->mapped.p[sc->mapped.len++] = (char)(0x80 | (c & 0x3F));
        }
    }
    return mb_tok_lookup(tok, sc->mapped.p, sc->mapped.len);
}

mamba_status_t mb_bpe_word(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n, mb_bpe_scratch *sc,
                           mb_ids_out *out)
{
    if (n == 0) return MAMBA_OK;
    /* most words of a text are tokens whose merges give them back: one lookup */
    const int32_t found = mb_word_lookup(tok, w, n);
    if (found >= 0 && ((found & MB_WORD_WHOLE) || tok->ignore_merges)) {
        mb_ids_push(out, found & ~MB_WORD_WHOLE);
        return MAMBA_OK;
    }
    if (tok->ignore_merges) {
        /* a vocab entry of characters outside the byte-level alphabet cannot be a word */
        int oom = 0;
        const int32_t id = whole_word(tok, w, n, sc, &oom);
        if (oom) return word_oom();
        if (id >= 0) {
            mb_ids_push(out, id);
            return MAMBA_OK;
        }
    }
    return mb_bpe_merge(tok, w, n, sc, out);
}

mamba_status_t mb_bpe_merge(const mamba_tokenizer_t *tok, const uint8_t *w, size_t n, mb_bpe_scratch *sc,
                            mb_ids_out *out)
{
    if (n == 0) return MAMBA_OK;
    if (n > INT32_MAX / 2) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_tokenize: a word of %zu bytes", n);
    if (!grow((void **)&sc->syms, &sc->syms_cap, n, sizeof *sc->syms)) return word_oom();
    struct mb_bpe_sym *sym = sc->syms;
    /* one symbol per byte; a byte whose character is not in the vocab becomes the unknown token
     * (runs of them one, with fuse_unk) or, without one, is dropped */
    size_t m = 0;
    int fused = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = tok->byte_id[w[i]];
        if (id < 0) {
            if (tok->unk_id < 0 || (fused && tok->fuse_unk)) continue;
            id = tok->unk_id;
            fused = 1;
        } else {
            fused = 0;
        }
        sym[m] = (struct mb_bpe_sym){.id = id, .prev = (int32_t)m - 1, .next = (int32_t)m + 1};
        m++;
    }
    if (m == 0) return MAMBA_OK;
    sym[m - 1].next = -1;
    if (m == 1) {
        mb_ids_push(out, sym[0].id);
        return MAMBA_OK;
    }
    if (!grow((void **)&sc->heap, &sc->heap_cap, 2 * m, sizeof *sc->heap)) return word_oom();
    struct mb_bpe_entry *heap = sc->heap;
    size_t h = 0;
    /* the lookups miss the cache: ask for all the slots first, so that they load together */
    for (size_t i = 0; i + 1 < m; i++) __builtin_prefetch(&tok->merges[mb_tok_merge_slot(tok, sym[i].id, sym[i + 1].id)]);
    for (size_t i = 0; i + 1 < m; i++) {
        const mb_merge_slot *mg = mb_tok_merge(tok, sym[i].id, sym[i + 1].id);
        if (mg) heap[h++] = (struct mb_bpe_entry){.key = (uint64_t)mg->rank << 32 | i, .id = mg->id};
    }
    for (size_t i = h / 2; i-- > 0;) sift_down(heap, h, i);
    while (h) {
        const struct mb_bpe_entry top = heap_pop(heap, &h);
        const int32_t pos = (int32_t)(uint32_t)top.key;
        struct mb_bpe_sym *cur = &sym[pos];
        if (cur->id < 0 || cur->next < 0) continue;
        const struct mb_bpe_sym right = sym[cur->next];
        const mb_merge_slot *now = mb_tok_merge(tok, cur->id, right.id);
        if (!now || now->id != top.id) continue;
        sym[cur->next].id = -1;
        cur->id = top.id;
        cur->next = right.next;
        if (right.next >= 0) sym[right.next].prev = pos;
        /* each merge removes a symbol and pushes at most two entries: 2m slots suffice */
        if (cur->prev >= 0) {
            const mb_merge_slot *mg = mb_tok_merge(tok, sym[cur->prev].id, cur->id);
            if (mg) heap_push(heap, &h, (struct mb_bpe_entry){.key = (uint64_t)mg->rank << 32 | (uint32_t)cur->prev, .id = mg->id});
        }
        if (cur->next >= 0) {
            const mb_merge_slot *mg = mb_tok_merge(tok, cur->id, sym[cur->next].id);
            if (mg) heap_push(heap, &h, (struct mb_bpe_entry){.key = (uint64_t)mg->rank << 32 | (uint32_t)pos, .id = mg->id});
        }
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) mb_ids_push(out, sym[i].id);
    return MAMBA_OK;
}

void mb_bpe_scratch_free(mb_bpe_scratch *sc)
{
    free(sc->syms);
    free(sc->heap);
    free(sc->piece.p);
    free(sc->mapped.p);
    free(sc->cps);
    mb_split_region_free(sc->region);
    memset(sc, 0, sizeof *sc);
}
