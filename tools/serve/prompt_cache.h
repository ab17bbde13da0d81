/* Saved recurrent states of earlier prompts, keyed by the tokens that led to them: a request
 * whose prompt starts with a saved key restores that state and prefills only the rest. A
 * state holds everything a Mamba model keeps of its past, so the longest saved prefix is all
 * that is needed. Bounded in bytes and in slots, least recently used evicted first. One
 * thread uses it.
 *
 * The states themselves are not here: each entry names a slot of a pool the caller keeps (a
 * mamba_state of n_slots sequences, on the model's device), so that saving and restoring are
 * device copies. Through the host, a 1.4b's 15 MB state took milliseconds each way, and with
 * 64 streams on the H200 the saves at the requests' ends cost the loop a third of its time. */
#ifndef MAMBA_SERVE_PROMPT_CACHE_H
#define MAMBA_SERVE_PROMPT_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct prompt_cache prompt_cache;

typedef struct prompt_cache_entry {
    const int32_t *ids;     /* the key: the tokens fed                                    */
    size_t n_ids;
    size_t slot;            /* where the state is in the caller's pool                    */
    size_t state_bytes;     /* its size, counted against the cap                           */
    const float *logits;    /* the logits after the last key token                         */
    size_t vocab;
} prompt_cache_entry;

/* NULL when out of memory; a cap of 0 bytes or 0 slots stores nothing. */
prompt_cache *prompt_cache_create(size_t cap_bytes, size_t n_slots);
/* The bytes an entry counts against the cap; the most entries cap_bytes can hold (each of at
 * least one key token): the slots a caller's pool needs. */
size_t prompt_cache_entry_bytes(size_t n_ids, size_t state_bytes, size_t vocab);
size_t prompt_cache_max_entries(size_t cap_bytes, size_t state_bytes, size_t vocab);
void prompt_cache_free(prompt_cache *c);
/* The entry of the longest key that is a prefix of ids[0..n) (the whole of it included), made
 * the most recently used; 0 when none. The entry stays valid until the next put. */
int prompt_cache_lookup(prompt_cache *c, const int32_t *ids, size_t n, prompt_cache_entry *out);
/* Store a copy of the key and logits (an existing entry of the same key is replaced; e->slot
 * is ignored), evicting the least recently used entries to stay within the cap and the
 * slots; *slot: the pool slot the caller then fills with the state. 0 when it does not fit
 * or memory runs out. */
int prompt_cache_put(prompt_cache *c, const prompt_cache_entry *e, size_t *slot);
/* The entry of that slot leaves (its state could not be stored). */
void prompt_cache_forget(prompt_cache *c, size_t slot);
size_t prompt_cache_bytes(const prompt_cache *c);
size_t prompt_cache_count(const prompt_cache *c);

#endif
