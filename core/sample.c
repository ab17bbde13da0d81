/* Sampling from logits: logit bias, repetition / presence / frequency penalties over a
 * window of recent tokens, then greedy, or temperature, top-k, top-p (nucleus) and min-p
 * with a seeded RNG. mamba.h gives the order. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "api/alloc.h"
#include "api/vec_math.h"

/* a candidate: its logit, its id, and exp((logit - max) / temperature) */
struct pair { float logit, q; int32_t idx; };

/* The draw walks the kept tokens' weights in id order a block at a time: the block sums are
 * made in the pass that writes the weights, so that only one block is walked token by token. */
#define DRAW_BLOCK 256

struct mamba_sampler {
    mamba_sampler_params_t p;   /* bias_ids and bias_values point at the sampler's copies */
    int32_t *bias_ids;
    float *bias_values;
    int penalties;              /* a penalty is on and the window is not empty */
    uint64_t rng;
    /* The last min(accepted, penalty_last_n) tokens: in order at [0, hist_len) until the
     * window is full, then a ring whose oldest entry is at hist_head. */
    int32_t *hist;
    size_t hist_len, hist_cap, hist_head;
    /* scratch of the vocabulary's size */
    size_t cap;
    float *work, *prob;
    double *block_sum;
    struct pair *pairs;
    int32_t *count;
};

void mamba_sampler_params_init(mamba_sampler_params_t *p)
{
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->top_p = 1.0f;
    p->repeat_penalty = 1.0f;
    p->penalty_last_n = 64;
}

static mamba_status_t check_params(char *err, const mamba_sampler_params_t *p)
{
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "temperature %g: expected a finite value >= 0", p->temperature);
    if (p->top_k < 0) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "top_k %d: expected >= 0", p->top_k);
    if (!(p->top_p >= 0 && p->top_p <= 1))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "top_p %g: expected 0..1", p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "min_p %g: expected 0..1", p->min_p);
    if (!(p->repeat_penalty > 0) || !isfinite(p->repeat_penalty))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "repeat_penalty %g: expected a finite value > 0 (1: off)",
                         p->repeat_penalty);
    if (!isfinite(p->presence_penalty))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "presence_penalty %g: expected a finite value (0: off)",
                         p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "frequency_penalty %g: expected a finite value (0: off)",
                         p->frequency_penalty);
    if (p->penalty_last_n < 0)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "penalty_last_n %d: expected >= 0 (0: off)", p->penalty_last_n);
    if (p->n_bias && (!p->bias_ids || !p->bias_values))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "n_bias %zu with bias_ids or bias_values NULL", p->n_bias);
    for (size_t i = 0; i < p->n_bias; i++) {
        if (p->bias_ids[i] < 0)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "logit bias %zu: token id %d: expected >= 0", i,
                             (int)p->bias_ids[i]);
        float v = p->bias_values[i];
        if (isnan(v) || v == INFINITY)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "logit bias %zu (token %d): value %g: expected a finite value or -INFINITY", i,
                             (int)p->bias_ids[i], v);
    }
    return MAMBA_OK;
}

mamba_status_t mamba_sampler_create(const mamba_sampler_params_t *p, mamba_sampler_t **out)
{
    char *err = mb_tls_err();
    if (!p || !out) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sampler_create: NULL argument");
    *out = NULL;
    mamba_status_t st = check_params(err, p);
    if (st != MAMBA_OK) return st;
    mamba_sampler_t *s = mb_calloc(1, sizeof *s);
    if (!s) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a sampler");
    s->p = *p;
    if (p->n_bias) {
        s->bias_ids = mb_malloc(p->n_bias * sizeof *s->bias_ids);
        s->bias_values = mb_malloc(p->n_bias * sizeof *s->bias_values);
        if (!s->bias_ids || !s->bias_values) {
            mamba_sampler_free(s);
            return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory copying %zu logit biases", p->n_bias);
        }
        memcpy(s->bias_ids, p->bias_ids, p->n_bias * sizeof *s->bias_ids);
        memcpy(s->bias_values, p->bias_values, p->n_bias * sizeof *s->bias_values);
    }
    s->p.bias_ids = s->bias_ids;
    s->p.bias_values = s->bias_values;
    s->penalties = p->penalty_last_n > 0 &&
                   (p->repeat_penalty != 1 || p->presence_penalty != 0 || p->frequency_penalty != 0);
    s->rng = p->seed ^ 0x853c49e6748fea9bULL;
    *out = s;
    return MAMBA_OK;
}

void mamba_sampler_free(mamba_sampler_t *s)
{
    if (!s) return;
    free(s->bias_ids);
    free(s->bias_values);
    free(s->hist);
    free(s->work);
    free(s->prob);
    free(s->block_sum);
    free(s->pairs);
    free(s->count);
    free(s);
}

/* ---- history ---- */

/* Room for extra more tokens (never more than the window). */
static mamba_status_t history_reserve(mamba_sampler_t *s, size_t extra)
{
    const size_t window = (size_t)s->p.penalty_last_n;
    size_t want = s->hist_len + extra < window ? s->hist_len + extra : window;
    if (want <= s->hist_cap) return MAMBA_OK;
    size_t cap = s->hist_cap ? s->hist_cap : 16;
    while (cap < want) cap *= 2;
    if (cap > window) cap = window;
    int32_t *h = mb_realloc(s->hist, cap * sizeof *h);
    if (!h) return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "out of memory growing the sampler's history to %zu tokens", cap);
    s->hist = h;
    s->hist_cap = cap;
    return MAMBA_OK;
}

/* Append one token; room was reserved. */
static void history_push(mamba_sampler_t *s, int32_t id)
{
    const size_t window = (size_t)s->p.penalty_last_n;
    if (s->hist_len < window) {
        s->hist[s->hist_len++] = id;
        return;
    }
    s->hist[s->hist_head] = id;
    s->hist_head = (s->hist_head + 1) % window;
}

mamba_status_t mamba_sampler_accept(mamba_sampler_t *s, const int32_t *ids, size_t n)
{
    char *err = mb_tls_err();
    if (!s || (!ids && n)) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sampler_accept: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sampler_accept: ids[%zu] = %d: expected a token id >= 0",
                             i, (int)ids[i]);
    if (!s->penalties) return MAMBA_OK;
    const size_t window = (size_t)s->p.penalty_last_n;
    if (n > window) {
        ids += n - window;
        n = window;
    }
    mamba_status_t st = history_reserve(s, n);
    if (st != MAMBA_OK) return st;
    for (size_t i = 0; i < n; i++) history_push(s, ids[i]);
    return MAMBA_OK;
}

mamba_status_t mamba_sampler_reset(mamba_sampler_t *s)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_sampler_reset: NULL sampler");
    s->hist_len = 0;
    s->hist_head = 0;
    return MAMBA_OK;
}

/* ---- the filters ---- */

static double next_unit(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static mamba_status_t reserve_scratch(mamba_sampler_t *s, size_t vocab)
{
    if (s->cap >= vocab) return MAMBA_OK;
    float *work = mb_realloc(s->work, vocab * sizeof *work);
    if (work) s->work = work;
    float *prob = mb_realloc(s->prob, vocab * sizeof *prob);
    if (prob) s->prob = prob;
    double *block_sum = mb_realloc(s->block_sum, (vocab / DRAW_BLOCK + 1) * sizeof *block_sum);
    if (block_sum) s->block_sum = block_sum;
    struct pair *pairs = mb_realloc(s->pairs, vocab * sizeof *pairs);
    if (pairs) s->pairs = pairs;
    int32_t *count = mb_realloc(s->count, vocab * sizeof *count);
    if (count) s->count = count;
    if (!work || !prob || !block_sum || !pairs || !count)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_OUT_OF_MEMORY, "mamba_sample: out of memory for a vocabulary of %zu", vocab);
    s->cap = vocab;
    return MAMBA_OK;
}

static mamba_status_t apply_bias(const mamba_sampler_t *s, float *w, size_t vocab)
{
    for (size_t i = 0; i < s->p.n_bias; i++) {
        if ((size_t)s->bias_ids[i] >= vocab)
            return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT,
                             "mamba_sample: logit bias %zu: token id %d is out of range [0, %zu)", i,
                             (int)s->bias_ids[i], vocab);
        w[s->bias_ids[i]] += s->bias_values[i];
    }
    return MAMBA_OK;
}

static mamba_status_t apply_penalties(mamba_sampler_t *s, float *w, size_t vocab)
{
    int32_t *count = s->count;
    for (size_t i = 0; i < s->hist_len; i++) {
        const int32_t id = s->hist[i];
        if ((size_t)id >= vocab)
            return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT,
                             "mamba_sample: history token id %d (accepted earlier) is out of range [0, %zu)", (int)id,
                             vocab);
        count[id] = 0;
    }
    for (size_t i = 0; i < s->hist_len; i++) count[s->hist[i]]++;
    const float rep = s->p.repeat_penalty, pres = s->p.presence_penalty, freq = s->p.frequency_penalty;
    /* each token of the window once: its count is zeroed after it is applied */
    for (size_t h = 0; h < s->hist_len; h++) {
        const int32_t i = s->hist[h];
        if (!count[i]) continue;
        /* in double, as the header states it: pres + freq * count can pass FLT_MAX, and a
         * banned token (-inf) stays banned; a result past FLT_MAX is held at it */
        if (w[i] != -INFINITY) {
            double v = w[i] > 0 ? (double)w[i] / rep : (double)w[i] * rep;
            v -= (double)pres + (double)freq * count[i];
            w[i] = v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : (float)v;
        }
        count[i] = 0;
    }
    return MAMBA_OK;
}

/* Whether pair a comes before pair b: the larger logit first, the smaller id on ties. */
static int before(const struct pair *a, const struct pair *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->idx < b->idx);
}

static void swap_pairs(struct pair *a, struct pair *b)
{
    const struct pair t = *a;
    *a = *b;
    *b = t;
}

/* Partition p[lo, hi) around a median-of-three pivot in before()'s order; returns where
 * the pivot lands (everything before it comes first in that order). */
static size_t partition(struct pair *p, size_t lo, size_t hi)
{
    const size_t mid = lo + (hi - lo) / 2;
    if (before(&p[hi - 1], &p[lo])) swap_pairs(&p[hi - 1], &p[lo]);
    if (before(&p[mid], &p[lo])) swap_pairs(&p[mid], &p[lo]);
    if (before(&p[hi - 1], &p[mid])) swap_pairs(&p[hi - 1], &p[mid]);
    swap_pairs(&p[mid], &p[hi - 1]);
    const struct pair pivot = p[hi - 1];
    size_t store = lo;
    for (size_t i = lo; i + 1 < hi; i++)
        if (before(&p[i], &pivot)) swap_pairs(&p[i], &p[store++]);
    swap_pairs(&p[store], &p[hi - 1]);
    return store;
}

/* The k first of p[0, n) in before()'s order moved to p[0, k), in no order: quickselect,
 * O(n), where sorting the whole vocabulary (50,280 entries: 5-8 ms a token) cost more than a
 * GPU's decoding step. */
static void select_first(struct pair *p, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        const size_t store = partition(p, lo, hi);
        if (store == k || store + 1 == k) return;
        if (store > k) hi = store;
        else lo = store + 1;
    }
}

/* The smallest k such that the k first of p[0, n) in before()'s order hold at least
 * target of the mass q, those k moved to p[0, k) in no order: a quickselect on the mass, so
 * that top-p needs no sort (a flat distribution's nucleus is most of the vocabulary). */
static size_t select_mass(struct pair *p, size_t n, double target)
{
    size_t lo = 0, hi = n;
    double acc = 0; /* the mass of p[0, lo), all of it before p[lo, hi) */
    while (hi > lo) {
        const size_t at = hi - lo == 1 ? lo : partition(p, lo, hi);
        double left = 0;
        for (size_t i = lo; i < at; i++) left += p[i].q;
        if (acc + left >= target && at > lo) {
            hi = at;
        } else if (acc + left + p[at].q >= target || at + 1 == n) {
            return at + 1;
        } else {
            acc += left + p[at].q;
            lo = at + 1;
        }
    }
    return lo ? lo : 1;
}

/* The largest value and whether any is +inf (and NaN when nan_too): one vectorized pass. */
MB_CPU_CLONES static float scan_max(const float *w, size_t n, int nan_too, int *bad)
{
    float top = -INFINITY;
    int b = 0;
#pragma omp simd reduction(max : top) reduction(| : b)
    for (size_t i = 0; i < n; i++) {
        const float v = w[i];
        b |= (v == INFINITY) | (nan_too & (v != v));
        top = v > top ? v : top;
    }
    *bad = b;
    return top;
}

static size_t first_bad(const float *w, size_t n)
{
    size_t i = 0;
    while (i < n && !isnan(w[i]) && w[i] != INFINITY) i++;
    return i;
}

/* The first index of v in w (n - 1 when it is absent), a vectorized test a block at a time. */
MB_CPU_CLONES static size_t first_equal(const float *w, size_t n, float v)
{
    size_t b0 = 0;
    for (; b0 < n; b0 += DRAW_BLOCK) {
        const size_t b1 = b0 + DRAW_BLOCK < n ? b0 + DRAW_BLOCK : n;
        int hit = 0;
#pragma omp simd reduction(| : hit)
        for (size_t i = b0; i < b1; i++) hit |= w[i] == v;
        if (hit) break;
    }
    size_t i = b0 < n ? b0 : n - 1;
    while (i + 1 < n && w[i] != v) i++;
    return i;
}

/* prob[i] = exp((w[i] - top) / temperature) (0 for -inf), zeroed under floor_p; the block
 * sums beside it; returns the total. */
MB_CPU_CLONES static double weigh_all(mamba_sampler_t *s, const float *w, size_t vocab, float top, float inv_t, float floor_p)
{
    float *prob = s->prob;
    double total = 0;
    for (size_t b0 = 0, blk = 0; b0 < vocab; b0 += DRAW_BLOCK, blk++) {
        const size_t b1 = b0 + DRAW_BLOCK < vocab ? b0 + DRAW_BLOCK : vocab;
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (size_t i = b0; i < b1; i++) {
            float q = fexp((w[i] - top) * inv_t);
            q = w[i] == -INFINITY || q < floor_p ? 0.0f : q;
            prob[i] = q;
            sum += q;
        }
        s->block_sum[blk] = sum;
        total += sum;
    }
    return total;
}

/* The block sums of prob (set by a caller that wrote it sparsely); returns the total. */
MB_CPU_CLONES static double sum_blocks(mamba_sampler_t *s, size_t vocab)
{
    double total = 0;
    for (size_t b0 = 0, blk = 0; b0 < vocab; b0 += DRAW_BLOCK, blk++) {
        const size_t b1 = b0 + DRAW_BLOCK < vocab ? b0 + DRAW_BLOCK : vocab;
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (size_t i = b0; i < b1; i++) sum += s->prob[i];
        s->block_sum[blk] = sum;
        total += sum;
    }
    return total;
}

/* The draw: the first token, in id order, at which the running sum of prob passes
 * u * total. Walking in id order makes the token independent of the order the selections
 * left the candidates in: the same seed gives the same token when tokens of no weight, or of
 * ids after it, are added or removed. */
static int32_t draw(mamba_sampler_t *s, size_t vocab, double total)
{
    const double r = next_unit(&s->rng) * total;
    double acc = 0;
    size_t last = 0, b0 = 0, blk = 0;
    for (; b0 < vocab; b0 += DRAW_BLOCK, blk++) {
        if (s->block_sum[blk] > 0) last = b0;
        if (r < acc + s->block_sum[blk]) break;
        acc += s->block_sum[blk];
    }
    if (b0 >= vocab) b0 = last; /* rounding left r past the end: the last block with weight */
    const size_t b1 = b0 + DRAW_BLOCK < vocab ? b0 + DRAW_BLOCK : vocab;
    size_t pick = b0;
    for (size_t i = b0; i < b1; i++) {
        if (s->prob[i] == 0) continue;
        pick = i;
        acc += s->prob[i];
        if (r < acc) break;
    }
    return (int32_t)pick;
}

/* The candidates of weight prob[i] >= tau (tau > 0), or all finite tokens (tau 0), into
 * pairs; their mass. */
static size_t gather(mamba_sampler_t *s, const float *w, size_t vocab, float tau, double *mass)
{
    size_t n = 0;
    double m = 0;
    for (size_t i = 0; i < vocab; i++) {
        const float q = s->prob[i];
        if (w[i] == -INFINITY || q < tau) continue;
        s->pairs[n++] = (struct pair){w[i], q, (int32_t)i};
        m += q;
    }
    *mass = m;
    return n;
}

/* The draw from w (the logits after bias and penalties, no NaN or +inf; top its largest,
 * finite), among its finite entries. Only the candidates are never sorted: top-k and top-p
 * select their sets in linear expected time, and min-p needs only the largest. */
static mamba_status_t choose(mamba_sampler_t *s, const float *w, size_t vocab, float top, int32_t *token)
{
    const float inv_t = 1.0f / s->p.temperature;
    /* a temperature so small that its inverse is not a float is greedy too (0 * inf would
     * make the top token's weight NaN) */
    if (s->p.temperature == 0 || s->p.top_k == 1 || !isfinite(inv_t)) {
        *token = (int32_t)first_equal(w, vocab, top);
        return MAMBA_OK;
    }
    const mamba_status_t st = reserve_scratch(s, vocab);
    if (st != MAMBA_OK) return st;
    /* min-p: the largest probability is exp(0) = 1 in these units */
    const float floor_p = s->p.min_p > 0 ? s->p.min_p : 0;
    const int top_p = s->p.top_p > 0 && s->p.top_p < 1;
    if (s->p.top_k == 0 && !top_p) {
        *token = draw(s, vocab, weigh_all(s, w, vocab, top, inv_t, floor_p));
        return MAMBA_OK;
    }
    /* top-k or top-p: the candidates are the tokens of weight >= tau when those are enough
     * (at least k of them; for top-p, their mass alone reaches top_p of the total mass, where
     * the total is over all when k does not cut): every token of smaller weight comes after
     * them in the order, so the sets chosen from them are the sets chosen from all. Else all
     * finite tokens. */
    double total = weigh_all(s, w, vocab, top, inv_t, 0.0f), mass;
    size_t n = gather(s, w, vocab, 1e-4f, &mass);
    const size_t k = s->p.top_k > 0 ? (size_t)s->p.top_k : 0;
    if ((k && n < k) || (top_p && !k && mass < s->p.top_p * total)) n = gather(s, w, vocab, 0.0f, &mass);
    struct pair *pairs = s->pairs;
    if (k && k < n) {
        select_first(pairs, n, k);
        n = k;
        mass = 0;
        for (size_t i = 0; i < n; i++) mass += pairs[i].q;
    }
    /* top-p's mass: over what top-k kept, else over every token */
    if (top_p) n = select_mass(pairs, n, s->p.top_p * (k ? mass : total));
    memset(s->prob, 0, vocab * sizeof *s->prob);
    for (size_t i = 0; i < n; i++) s->prob[pairs[i].idx] = pairs[i].q >= floor_p ? pairs[i].q : 0;
    total = sum_blocks(s, vocab);
    *token = draw(s, vocab, total);
    return MAMBA_OK;
}

mamba_status_t mamba_sample(mamba_sampler_t *s, const float *logits, size_t vocab, int32_t *token)
{
    char *err = mb_tls_err();
    if (!s || !logits || !token) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: NULL argument");
    if (vocab == 0 || vocab > INT32_MAX)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: vocab = %zu", vocab);
    /* the logits checked and their largest found in one vectorized pass, which greedy
     * sampling with nothing to apply first needs alone (a server samples every sequence of a
     * batch each step: a scalar pass over 50,280 logits cost more than the step's share of
     * the GPU's time) */
    int bad;
    float top = scan_max(logits, vocab, 1, &bad);
    if (bad) {
        const size_t i = first_bad(logits, vocab);
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: logit %zu is %s", i,
                         isnan(logits[i]) ? "NaN" : "+inf");
    }
    /* a copy only for the filters that change logits (a 50,280-float copy per sequence was
     * the largest of a server step's remaining costs), checked again after them */
    const float *w = logits;
    mamba_status_t st;
    if (s->p.n_bias || s->penalties) {
        st = reserve_scratch(s, vocab);
        if (st == MAMBA_OK && s->penalties) st = history_reserve(s, 1);
        if (st != MAMBA_OK) return st;
        memcpy(s->work, logits, vocab * sizeof *s->work);
        if ((st = apply_bias(s, s->work, vocab)) != MAMBA_OK) return st;
        if (s->penalties && (st = apply_penalties(s, s->work, vocab)) != MAMBA_OK) return st;
        w = s->work;
        top = scan_max(w, vocab, 1, &bad);
        if (bad) {
            const size_t i = first_bad(w, vocab);
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_sample: logit %zu is %s after the bias", i,
                             isnan(w[i]) ? "NaN" : "+inf");
        }
    }
    if (top == -INFINITY)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_sample: every one of the %zu tokens is banned (logit -inf after the bias and penalties)",
                         vocab);
    int32_t tok = 0;
    if ((st = choose(s, w, vocab, top, &tok)) != MAMBA_OK) return st;
    if (s->penalties) history_push(s, tok);
    *token = tok;
    return MAMBA_OK;
}
