/* Per-sequence state operations: prompts of different lengths prefilled together, steps of a
 * subset, reset/copy/swap/read/write of one sequence, each against batch-1 runs of the same
 * model (an independent path: no subset, no gather). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define N_PROMPTS 5
static const size_t prompt_lens[N_PROMPTS] = {1, 7, 64, 300, 2049};
/* Batch runs and batch-1 runs sum in other orders (GEMM shapes): measured ~1e-6 on logits of
 * ~5; the bound is the fixtures' float32 tolerance. */
#define SEQ_BOUND 1e-5

typedef struct fixture {
    mamba_context_t *ctx;
    mamba_model_t *m;
    size_t vocab;
    int32_t *ids[N_PROMPTS];
} fixture;

static fixture open_fixture(void)
{
    fixture f;
    f.ctx = cpu_context(0);
    ck_assert_msg(mamba_model_load(f.ctx, data_path(0, "models/small"), &f.m) == MAMBA_OK, "%s",
                  mamba_last_error(f.ctx));
    mamba_model_info_t info;
    mamba_model_info(f.m, &info);
    f.vocab = (size_t)info.config.vocab_size;
    uint64_t x = 12345;
    for (int i = 0; i < N_PROMPTS; i++) {
        f.ids[i] = malloc(prompt_lens[i] * sizeof *f.ids[i]);
        for (size_t t = 0; t < prompt_lens[i]; t++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            f.ids[i][t] = (int32_t)((x >> 33) % f.vocab);
        }
    }
    return f;
}

static void close_fixture(fixture *f)
{
    for (int i = 0; i < N_PROMPTS; i++) free(f->ids[i]);
    mamba_model_free(f->m);
    mamba_context_free(f->ctx);
}

/* The last logits of prompt i alone (batch 1), then of one more token, tok. */
static void alone(const fixture *f, int i, int32_t tok, float *last, float *next)
{
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(f->m, 1, &s), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(s, f->ids[i], prompt_lens[i], last), MAMBA_OK);
    ck_assert_int_eq(mamba_step(s, &tok, next), MAMBA_OK);
    mamba_state_free(s);
}

/* _i picks where the prompts go: 0 sequences 0..4 in order (lengths ascending: gathered),
 * 1 sequences 4..0 (longest first: a run, in place), 2 scattered over a batch of 8. */
START_TEST(prefill_of_different_lengths_equals_batch_one)
{
    fixture f = open_fixture();
    static const size_t where[3][N_PROMPTS] = {{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {6, 0, 3, 7, 2}};
    const size_t batch = _i == 2 ? 8 : N_PROMPTS;
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(f.m, batch, &s), MAMBA_OK);
    /* the sequences not prefilled keep their (non-empty) state */
    size_t seq_bytes;
    ck_assert_int_eq(mamba_state_seq_size(s, &seq_bytes), MAMBA_OK);
    int32_t *warm = malloc(batch * sizeof *warm);
    float *wl = malloc(batch * f.vocab * sizeof *wl);
    for (size_t b = 0; b < batch; b++) warm[b] = (int32_t)(b % f.vocab);
    ck_assert_int_eq(mamba_step(s, warm, wl), MAMBA_OK);
    unsigned char *before = malloc(batch * seq_bytes), *after = malloc(seq_bytes);
    for (size_t b = 0; b < batch; b++) ck_assert_int_eq(mamba_state_read_seq(s, b, before + b * seq_bytes, seq_bytes), MAMBA_OK);
    /* the prefilled ones start empty */
    for (int i = 0; i < N_PROMPTS; i++) ck_assert_int_eq(mamba_state_reset_seq(s, where[_i][i]), MAMBA_OK);

    const int32_t *ids[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) ids[i] = f.ids[i];
    float *last = malloc(N_PROMPTS * f.vocab * sizeof *last);
    ck_assert_msg(mamba_prefill_seqs(s, N_PROMPTS, where[_i], ids, prompt_lens, last) == MAMBA_OK, "%s",
                  mamba_last_error(f.ctx));
    /* then one step of the same five, in another order */
    size_t order[N_PROMPTS];
    int32_t toks[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        order[i] = where[_i][(i + 2) % N_PROMPTS];
        toks[i] = (int32_t)((7 * i + 3) % (int)f.vocab);
    }
    float *next = malloc(N_PROMPTS * f.vocab * sizeof *next);
    ck_assert_msg(mamba_step_seqs(s, N_PROMPTS, order, toks, next) == MAMBA_OK, "%s", mamba_last_error(f.ctx));

    float *ref_last = malloc(f.vocab * sizeof *ref_last), *ref_next = malloc(f.vocab * sizeof *ref_next);
    for (int i = 0; i < N_PROMPTS; i++) {
        const int j = (i + N_PROMPTS - 2) % N_PROMPTS; /* order[j] = where[i] */
        alone(&f, i, toks[j], ref_last, ref_next);
        const double e1 = max_abs_diff(last + (size_t)i * f.vocab, ref_last, f.vocab);
        const double e2 = max_abs_diff(next + (size_t)j * f.vocab, ref_next, f.vocab);
        printf("layout %d, prompt of %zu tokens: prefill %.3g, next step %.3g\n", _i, prompt_lens[i], e1, e2);
        ck_assert_msg(e1 <= SEQ_BOUND && e2 <= SEQ_BOUND, "prompt %d (%zu tokens): %g, %g", i, prompt_lens[i], e1, e2);
    }
    for (size_t b = 0; b < batch; b++) {
        int used = 0;
        for (int i = 0; i < N_PROMPTS; i++) used |= where[_i][i] == b;
        if (used) continue;
        ck_assert_int_eq(mamba_state_read_seq(s, b, after, seq_bytes), MAMBA_OK);
        ck_assert_msg(memcmp(after, before + b * seq_bytes, seq_bytes) == 0, "sequence %zu changed", b);
    }
    free(ref_last); free(ref_next); free(next); free(last); free(before); free(after); free(warm); free(wl);
    mamba_state_free(s);
    close_fixture(&f);
}
END_TEST

/* reset, copy, swap, read and write of one sequence, against what the same tokens give. */
START_TEST(one_sequence_operations)
{
    fixture f = open_fixture();
    mamba_state_t *s, *t;
    ck_assert_int_eq(mamba_state_create(f.m, 3, &s), MAMBA_OK);
    ck_assert_int_eq(mamba_state_create(f.m, 2, &t), MAMBA_OK);
    const int32_t *ids[2] = {f.ids[2], f.ids[3]};
    const size_t seqs[2] = {0, 2}, lens[2] = {prompt_lens[2], prompt_lens[3]};
    ck_assert_int_eq(mamba_prefill_seqs(s, 2, seqs, ids, lens, NULL), MAMBA_OK);
    float *a = malloc(f.vocab * sizeof *a), *b = malloc(f.vocab * sizeof *b), *r = malloc(f.vocab * sizeof *r);
    float *l3 = malloc(3 * f.vocab * sizeof *l3);
    const int32_t tok = 5;
    alone(&f, 3, tok, r, a); /* a: prompt 3 then tok */
    /* swap 0 and 2: sequence 0 now continues prompt 3 */
    ck_assert_int_eq(mamba_state_swap_seqs(s, 0, 2), MAMBA_OK);
    size_t one = 0;
    ck_assert_int_eq(mamba_state_seq_size(s, &one), MAMBA_OK);
    void *saved = malloc(one);
    ck_assert_int_eq(mamba_state_read_seq(s, 0, saved, one), MAMBA_OK);
    /* copy into another state's sequence 1, and write the saved bytes into sequence 1 of s */
    ck_assert_int_eq(mamba_state_copy_seq(t, 1, s, 0), MAMBA_OK);
    ck_assert_int_eq(mamba_state_write_seq(s, 1, saved, one), MAMBA_OK);
    const size_t s0 = 0, s1 = 1, t1 = 1;
    ck_assert_int_eq(mamba_step_seqs(s, 1, &s0, &tok, b), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(a, b, f.vocab), SEQ_BOUND);
    ck_assert_int_eq(mamba_step_seqs(s, 1, &s1, &tok, b), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(a, b, f.vocab), SEQ_BOUND);
    ck_assert_int_eq(mamba_step_seqs(t, 1, &t1, &tok, b), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(a, b, f.vocab), SEQ_BOUND);
    /* reset: a step from the empty state is the forward of one token */
    ck_assert_int_eq(mamba_state_reset_seq(s, 2), MAMBA_OK);
    const size_t s2 = 2;
    ck_assert_int_eq(mamba_step_seqs(s, 1, &s2, &tok, b), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(f.m, &tok, 1, 1, MAMBA_LOGITS_LAST, r), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(r, b, f.vocab), SEQ_BOUND);
    /* bytes of a sequence of this model go into a state of another batch size too */
    ck_assert_int_eq(mamba_state_write_seq(t, 0, saved, one), MAMBA_OK);
    /* bad input: each refused with its argument named */
    ck_assert_int_eq(mamba_state_reset_seq(s, 3), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(f.ctx), "sequence 3 of a state of batch 3"));
    ck_assert_int_eq(mamba_state_swap_seqs(s, 0, 9), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_state_write_seq(s, 0, saved, one - 1), MAMBA_ERR_INVALID_ARGUMENT);
    const size_t dup[2] = {1, 1};
    const int32_t two[2] = {1, 2};
    ck_assert_int_eq(mamba_step_seqs(s, 2, dup, two, l3), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(f.ctx), "listed twice"));
    const size_t zero_len[1] = {0}, first[1] = {0};
    ck_assert_int_eq(mamba_prefill_seqs(s, 1, first, ids, zero_len, NULL), MAMBA_ERR_INVALID_ARGUMENT);
    const int32_t bad = (int32_t)f.vocab;
    ck_assert_int_eq(mamba_step_seqs(s, 1, first, &bad, l3), MAMBA_ERR_INVALID_ARGUMENT);
    free(saved); free(a); free(b); free(r); free(l3);
    mamba_state_free(t);
    mamba_state_free(s);
    close_fixture(&f);
}
END_TEST

/* mamba_step_seqs_begin + mamba_step_wait give mamba_step_seqs's logits (here the CPU runs
 * it within the call): into mamba_alloc_host memory for a run and into malloc'd memory for
 * sequences out of order; bad arguments refused as mamba_step_seqs refuses them. */
START_TEST(step_begin_equals_step)
{
    fixture f = open_fixture();
    mamba_state_t *s, *t;
    ck_assert_int_eq(mamba_state_create(f.m, 3, &s), MAMBA_OK);
    ck_assert_int_eq(mamba_state_create(f.m, 3, &t), MAMBA_OK);
    int32_t ids[3 * 7];
    for (int i = 0; i < 3 * 7; i++) ids[i] = (int32_t)((i * 13 + 1) % (int)f.vocab);
    ck_assert_int_eq(mamba_prefill(s, ids, 7, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(t, ids, 7, NULL), MAMBA_OK);
    const size_t run[3] = {0, 1, 2}, back[2] = {2, 0};
    const int32_t toks[3] = {4, 9, 2};
    float *pinned = mamba_alloc_host(f.ctx, 3 * f.vocab * sizeof *pinned);
    float *plain = malloc(3 * f.vocab * sizeof *plain), *ref = malloc(3 * f.vocab * sizeof *ref);
    ck_assert_ptr_nonnull(pinned);
    ck_assert_int_eq(mamba_step_seqs_begin(s, 3, run, toks, pinned), MAMBA_OK);
    ck_assert_int_eq(mamba_step_wait(s), MAMBA_OK);
    ck_assert_int_eq(mamba_step_seqs(t, 3, run, toks, ref), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(pinned, ref, 3 * f.vocab), 0);
    ck_assert_int_eq(mamba_step_seqs_begin(s, 2, back, toks, plain), MAMBA_OK);
    ck_assert_int_eq(mamba_step_wait(s), MAMBA_OK);
    ck_assert_int_eq(mamba_step_seqs(t, 2, back, toks, ref), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(plain, ref, 2 * f.vocab), 0);
    const int32_t bad = (int32_t)f.vocab;
    ck_assert_int_eq(mamba_step_seqs_begin(s, 1, run, &bad, plain), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_step_seqs_begin(s, 0, run, toks, plain), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(f.ctx), "mamba_step_seqs_begin: n = 0"));
    const size_t past[1] = {3};
    ck_assert_int_eq(mamba_step_seqs_begin(s, 1, past, toks, plain), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_step_seqs_begin(NULL, 1, run, toks, plain), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_step_wait(NULL), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_free_host(f.ctx, pinned);
    free(plain); free(ref);
    mamba_state_free(t);
    mamba_state_free(s);
    close_fixture(&f);
}
END_TEST

/* Every position's logits through a state, in two calls, equal the forward's. */
START_TEST(prefill_all_carries_the_state)
{
    fixture f = open_fixture();
    const size_t L = prompt_lens[3], cut = 101;
    float *ref = malloc(L * f.vocab * sizeof *ref), *got = malloc(L * f.vocab * sizeof *got);
    ck_assert_int_eq(mamba_forward(f.m, f.ids[3], 1, L, MAMBA_LOGITS_ALL, ref), MAMBA_OK);
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(f.m, 1, &s), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill_all(s, f.ids[3], cut, got), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill_all(s, f.ids[3] + cut, L - cut, got + cut * f.vocab), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(got, ref, L * f.vocab), SEQ_BOUND);
    free(ref); free(got);
    mamba_state_free(s);
    close_fixture(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("seqs");
    TCase *tc = tcase_create("seqs");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, prefill_of_different_lengths_equals_batch_one, 0, 3);
    tcase_add_test(tc, one_sequence_operations);
    tcase_add_test(tc, prefill_all_carries_the_state);
    tcase_add_test(tc, step_begin_equals_step);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
