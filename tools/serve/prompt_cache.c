/* The prompt-state cache: a list in recency order (the most recent first), searched whole;
 * entries are few (a state is megabytes for the larger models) and keys are compared only
 * where their lengths allow a prefix. */
#include "prompt_cache.h"

#include <stdlib.h>
#include <string.h>

typedef struct node {
    struct node *prev, *next;
    int32_t *ids;
    size_t n_ids;
    void *state;
    size_t state_bytes;
    float *logits;
    size_t vocab;
    size_t bytes;
} node;

struct prompt_cache {
    size_t cap, used, count;
    node *head, *tail;
};

prompt_cache *prompt_cache_create(size_t cap_bytes)
{
    prompt_cache *c = calloc(1, sizeof *c);
    if (c) c->cap = cap_bytes;
    return c;
}

static void unlink_node(prompt_cache *c, node *n)
{
    if (n->prev) n->prev->next = n->next;
    else c->head = n->next;
    if (n->next) n->next->prev = n->prev;
    else c->tail = n->prev;
    n->prev = n->next = NULL;
}

static void push_front(prompt_cache *c, node *n)
{
    n->prev = NULL;
    n->next = c->head;
    if (c->head) c->head->prev = n;
    c->head = n;
    if (!c->tail) c->tail = n;
}

static void drop(prompt_cache *c, node *n)
{
    unlink_node(c, n);
    c->used -= n->bytes;
    c->count--;
    free(n->ids);
    free(n->state);
    free(n->logits);
    free(n);
}

void prompt_cache_free(prompt_cache *c)
{
    if (!c) return;
    while (c->head) drop(c, c->head);
    free(c);
}

static void view(const node *n, prompt_cache_entry *out)
{
    out->ids = n->ids;
    out->n_ids = n->n_ids;
    out->state = n->state;
    out->state_bytes = n->state_bytes;
    out->logits = n->logits;
    out->vocab = n->vocab;
}

int prompt_cache_lookup(prompt_cache *c, const int32_t *ids, size_t n, prompt_cache_entry *out)
{
    node *best = NULL;
    for (node *e = c->head; e; e = e->next)
        if (e->n_ids <= n && (!best || e->n_ids > best->n_ids) && memcmp(e->ids, ids, e->n_ids * sizeof *ids) == 0)
            best = e;
    if (!best) return 0;
    unlink_node(c, best);
    push_front(c, best);
    view(best, out);
    return 1;
}

int prompt_cache_put(prompt_cache *c, const prompt_cache_entry *e)
{
    const size_t bytes = sizeof(node) + e->n_ids * sizeof(int32_t) + e->state_bytes + e->vocab * sizeof(float);
    if (e->n_ids == 0 || bytes > c->cap) return 0;
    for (node *x = c->head; x; x = x->next)
        if (x->n_ids == e->n_ids && memcmp(x->ids, e->ids, e->n_ids * sizeof *e->ids) == 0) {
            drop(c, x);
            break;
        }
    while (c->tail && c->used + bytes > c->cap) drop(c, c->tail);
    node *n = calloc(1, sizeof *n);
    if (n) {
        n->ids = malloc(e->n_ids * sizeof *n->ids);
        n->state = malloc(e->state_bytes ? e->state_bytes : 1);
        n->logits = malloc(e->vocab ? e->vocab * sizeof *n->logits : 1);
    }
    if (!n || !n->ids || !n->state || !n->logits) {
        if (n) {
            free(n->ids);
            free(n->state);
            free(n->logits);
        }
        free(n);
        return 0;
    }
    memcpy(n->ids, e->ids, e->n_ids * sizeof *n->ids);
    memcpy(n->state, e->state, e->state_bytes);
    if (e->vocab) memcpy(n->logits, e->logits, e->vocab * sizeof *n->logits);
    n->n_ids = e->n_ids;
    n->state_bytes = e->state_bytes;
    n->vocab = e->vocab;
    n->bytes = bytes;
    push_front(c, n);
    c->used += bytes;
    c->count++;
    return 1;
}

size_t prompt_cache_bytes(const prompt_cache *c) { return c->used; }
size_t prompt_cache_count(const prompt_cache *c) { return c->count; }
