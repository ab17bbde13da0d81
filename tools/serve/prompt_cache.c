/* The prompt-state cache: an array of entries with recency stamps, searched whole; entries are
 * few (a state is megabytes for the larger models) and keys are compared only where their
 * lengths allow a prefix. */
#include "prompt_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct node {
    int32_t *ids;
    size_t n_ids;
    size_t slot;
    size_t state_bytes;
    float *logits;
    size_t vocab;
    size_t bytes;
    uint64_t used;              /* the clock when last stored or found */
} node;

struct prompt_cache {
    size_t cap, used_bytes, n_slots;
    node *nodes;
    size_t count, nodes_cap;
    uint64_t clock;
};

prompt_cache *prompt_cache_create(size_t cap_bytes, size_t n_slots)
{
    prompt_cache *c = calloc(1, sizeof *c);
    if (c) {
        c->cap = n_slots ? cap_bytes : 0;
        c->n_slots = n_slots;
    }
    return c;
}

/* Entry i leaves; the last takes its place. */
static void drop(prompt_cache *c, size_t i)
{
    node *n = &c->nodes[i];
    c->used_bytes -= n->bytes;
    free(n->ids);
    free(n->logits);
    c->count--;
    if (i != c->count) c->nodes[i] = c->nodes[c->count];
    memset(&c->nodes[c->count], 0, sizeof c->nodes[c->count]);
}

void prompt_cache_free(prompt_cache *c)
{
    if (!c) return;
    while (c->count) drop(c, c->count - 1);
    free(c->nodes);
    free(c);
}

int prompt_cache_lookup(prompt_cache *c, const int32_t *ids, size_t n, prompt_cache_entry *out)
{
    size_t best = c->count;
    for (size_t i = 0; i < c->count; i++) {
        const node *e = &c->nodes[i];
        if (e->n_ids <= n && (best == c->count || e->n_ids > c->nodes[best].n_ids) &&
            memcmp(e->ids, ids, e->n_ids * sizeof *ids) == 0)
            best = i;
    }
    if (best == c->count) return 0;
    node *e = &c->nodes[best];
    e->used = ++c->clock;
    out->ids = e->ids;
    out->n_ids = e->n_ids;
    out->slot = e->slot;
    out->state_bytes = e->state_bytes;
    out->logits = e->logits;
    out->vocab = e->vocab;
    return 1;
}

static size_t least_recent(const prompt_cache *c)
{
    size_t k = 0;
    for (size_t i = 1; i < c->count; i++)
        if (c->nodes[i].used < c->nodes[k].used) k = i;
    return k;
}

/* The lowest slot no entry holds (there is one: count < n_slots). */
static size_t free_slot(const prompt_cache *c)
{
    for (size_t s = 0;; s++) {
        size_t i = 0;
        while (i < c->count && c->nodes[i].slot != s) i++;
        if (i == c->count) return s;
    }
}

void prompt_cache_forget(prompt_cache *c, size_t slot)
{
    for (size_t i = 0; i < c->count; i++)
        if (c->nodes[i].slot == slot) {
            drop(c, i);
            return;
        }
}

size_t prompt_cache_entry_bytes(size_t n_ids, size_t state_bytes, size_t vocab)
{
    return sizeof(node) + n_ids * sizeof(int32_t) + state_bytes + vocab * sizeof(float);
}

size_t prompt_cache_max_entries(size_t cap_bytes, size_t state_bytes, size_t vocab)
{
    return cap_bytes / prompt_cache_entry_bytes(1, state_bytes, vocab);
}

int prompt_cache_put(prompt_cache *c, const prompt_cache_entry *e, size_t *slot)
{
    const size_t bytes = prompt_cache_entry_bytes(e->n_ids, e->state_bytes, e->vocab);
    if (e->n_ids == 0 || bytes > c->cap) return 0;
    for (size_t i = 0; i < c->count; i++)
        if (c->nodes[i].n_ids == e->n_ids && memcmp(c->nodes[i].ids, e->ids, e->n_ids * sizeof *e->ids) == 0) {
            drop(c, i);
            break;
        }
    while (c->count && (c->used_bytes + bytes > c->cap || c->count >= c->n_slots)) drop(c, least_recent(c));
    if (c->count == c->nodes_cap) {
        const size_t cap = c->nodes_cap ? 2 * c->nodes_cap : 16;
        node *nodes = realloc(c->nodes, cap * sizeof *nodes);
        if (!nodes) return 0;
        c->nodes = nodes;
        c->nodes_cap = cap;
    }
    node n = {malloc(e->n_ids * sizeof(int32_t) + 1), e->n_ids, free_slot(c), e->state_bytes,
              malloc(e->vocab * sizeof(float) + 1), e->vocab, bytes, ++c->clock};
    if (!n.ids || !n.logits) {
        free(n.ids);
        free(n.logits);
        return 0;
    }
    memcpy(n.ids, e->ids, e->n_ids * sizeof *n.ids);
    if (e->vocab) memcpy(n.logits, e->logits, e->vocab * sizeof *n.logits);
    c->nodes[c->count++] = n;
    c->used_bytes += bytes;
    *slot = n.slot;
    return 1;
}

size_t prompt_cache_bytes(const prompt_cache *c) { return c->used_bytes; }
size_t prompt_cache_count(const prompt_cache *c) { return c->count; }
