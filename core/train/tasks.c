/* The synthetic tasks of the Mamba paper (Section 4.1, Appendix E.1), generated from counters
 * (mamba.h's "synthetic tasks" section says what each sequence holds). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mix64.h"

#define IGNORED (-100)
#define MAX_MEMORIZE 4096

enum { DRAW_POSITION = 1, DRAW_DATA, DRAW_TOKEN };

/* A uniform draw in [0, n), a pure function of (seed, seq, what, i). The modulo's bias is
 * below n / 2^64 (n is at most a sequence length). */
static uint64_t draw(uint64_t seed, uint64_t seq, uint64_t what, uint64_t i, uint64_t n)
{
    const uint64_t h = mb_mix64(mb_mix64(mb_mix64(seed ^ 0x6a09e667f3bcc909ULL) ^ seq) ^ (what << 56 | i));
    return h % n;
}

mamba_status_t mamba_task_init(mamba_task_t *task, mamba_task_kind_t kind)
{
    if (!task) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_task_init: task is NULL");
    memset(task, 0, sizeof *task);
    task->kind = kind;
    task->vocab = 16;
    switch (kind) {
    case MAMBA_TASK_SELECTIVE_COPYING: task->len = 4096; task->n_memorize = 16; break;
    case MAMBA_TASK_INDUCTION_HEADS: task->len = 256; break;
    default:
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_task_init: kind = %d, expected %d or %d",
                         (int)kind, (int)MAMBA_TASK_SELECTIVE_COPYING, (int)MAMBA_TASK_INDUCTION_HEADS);
    }
    return MAMBA_OK;
}

const char *mamba_task_name(mamba_task_kind_t kind)
{
    switch (kind) {
    case MAMBA_TASK_SELECTIVE_COPYING: return "selective-copying";
    case MAMBA_TASK_INDUCTION_HEADS: return "induction-heads";
    default: return "unknown";
    }
}

mamba_task_kind_t mamba_task_from_name(const char *name)
{
    if (!name) return (mamba_task_kind_t)0;
    if (strcmp(name, "selective-copying") == 0) return MAMBA_TASK_SELECTIVE_COPYING;
    if (strcmp(name, "induction-heads") == 0) return MAMBA_TASK_INDUCTION_HEADS;
    return (mamba_task_kind_t)0;
}

static int cmp_size(const void *a, const void *b)
{
    const size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* The positions of the data tokens, increasing: n distinct draws from [0, span), a draw
 * equal to an earlier one drawn again (the i-th draw of a retry has its own counter). */
static void copy_positions(uint64_t seed, uint64_t seq, size_t span, size_t n, size_t *pos)
{
    uint64_t i = 0;
    for (size_t k = 0; k < n; k++) {
        for (;;) {
            const size_t p = (size_t)draw(seed, seq, DRAW_POSITION, i++, span);
            size_t j = 0;
            while (j < k && pos[j] != p) j++;
            if (j == k) {
                pos[k] = p;
                break;
            }
        }
    }
    qsort(pos, n, sizeof *pos, cmp_size);
}

static void fill_copying(const mamba_task_t *t, uint64_t seed, uint64_t seq, size_t start, size_t count,
                         size_t *pos, int32_t *ids, int32_t *labels)
{
    const size_t M = (size_t)t->n_memorize, span = t->len - M;
    copy_positions(seed, seq, span, M, pos);
    const uint64_t n_data = (uint64_t)t->vocab - 2;
    size_t next = 0;   /* the first data position >= the current one */
    while (next < M && pos[next] < start) next++;
    for (size_t i = 0; i < count; i++) {
        const size_t p = start + i;
        int32_t id = 0, label = IGNORED;
        if (p >= span) {
            id = t->vocab - 1;
            label = (int32_t)(1 + draw(seed, seq, DRAW_DATA, p - span, n_data));
        } else if (next < M && pos[next] == p) {
            id = (int32_t)(1 + draw(seed, seq, DRAW_DATA, next, n_data));
            next++;
        }
        ids[i] = id;
        if (labels) labels[i] = label;
    }
}

static void fill_induction(const mamba_task_t *t, uint64_t seed, uint64_t seq, size_t start, size_t count,
                           int32_t *ids, int32_t *labels)
{
    const size_t L = t->len, trig_at = (size_t)draw(seed, seq, DRAW_POSITION, 0, L - 2);
    const int32_t trigger = t->vocab - 1;
    const uint64_t n_plain = (uint64_t)t->vocab - 1;
    const int32_t target = (int32_t)draw(seed, seq, DRAW_DATA, 0, n_plain);
    for (size_t i = 0; i < count; i++) {
        const size_t p = start + i;
        int32_t id;
        if (p == trig_at || p == L - 1) id = trigger;
        else if (p == trig_at + 1) id = target;
        else id = (int32_t)draw(seed, seq, DRAW_TOKEN, p, n_plain);
        ids[i] = id;
        if (labels) labels[i] = p == L - 1 ? target : IGNORED;
    }
}

mamba_status_t mamba_task_fill(const mamba_task_t *t, uint64_t seed, uint64_t seq, size_t start, size_t count,
                               int32_t *ids, int32_t *labels)
{
    char *err = mb_tls_err();
    if (!t || (!ids && count)) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_task_fill: task or ids is NULL");
    if (start > t->len || count > t->len - start)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_task_fill: positions [%zu, %zu) are outside the sequence of len %zu", start,
                         start + count, t->len);
    if (t->kind == MAMBA_TASK_SELECTIVE_COPYING) {
        if (t->vocab < 4)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "selective copying: vocab = %d, expected >= 4 (noise, marker and two data tokens)",
                             t->vocab);
        if (t->n_memorize < 1 || t->n_memorize > MAX_MEMORIZE || t->len < 2 * (size_t)t->n_memorize)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "selective copying: n_memorize = %d with len %zu, expected 1 .. %d and len >= 2 n_memorize",
                             t->n_memorize, t->len, MAX_MEMORIZE);
        size_t *pos = malloc((size_t)t->n_memorize * sizeof *pos);
        if (!pos) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "selective copying: out of memory");
        fill_copying(t, seed, seq, start, count, pos, ids, labels);
        free(pos);
        return MAMBA_OK;
    }
    if (t->kind == MAMBA_TASK_INDUCTION_HEADS) {
        if (t->vocab < 3)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "induction heads: vocab = %d, expected >= 3 (a trigger and two plain tokens)", t->vocab);
        if (t->len < 3)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "induction heads: len = %zu, expected >= 3", t->len);
        fill_induction(t, seed, seq, start, count, ids, labels);
        return MAMBA_OK;
    }
    return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_task_fill: kind = %d is not a task", (int)t->kind);
}
