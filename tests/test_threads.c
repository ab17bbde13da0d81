/* The thread-safety promise of mamba.h: separate contexts used from separate threads at the
 * same time give exactly what one thread alone gives. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define THREADS 4
#define ROUNDS 3
#define MAX_GEN 16

typedef struct job {
    const char *model;
    const int32_t *ids;
    size_t batch, len, vocab;
    const int32_t *prompt;
    size_t n_prompt, n_gen;
    float *logits;            /* forward, all positions */
    int32_t tokens[MAX_GEN];  /* greedy continuation of the prompt */
    char err[512];            /* the first failed call and its message; empty when all succeeded */
} job;

/* 0 when st is MAMBA_OK; else the call's name and message go to j->err */
static int failed(job *j, mamba_status_t st, const char *what, mamba_context_t *ctx)
{
    if (st == MAMBA_OK) return 0;
    snprintf(j->err, sizeof j->err, "%s: status %d: %s", what, (int)st, mamba_last_error(ctx));
    return 1;
}

/* Check cannot assert outside the test's own thread: every status is recorded in j->err and
 * asserted by the test once the threads are joined. */
static void *run(void *arg)
{
    job *j = arg;
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cpu";
    o.n_threads = 1;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    mamba_state_t *s = NULL;
    float *l = malloc(j->vocab * sizeof *l);
    if (!l) {
        snprintf(j->err, sizeof j->err, "out of memory");
        return NULL;
    }
    if (failed(j, mamba_context_create(&o, &ctx), "mamba_context_create", NULL) ||
        failed(j, mamba_model_load(ctx, j->model, &m), "mamba_model_load", ctx) ||
        failed(j, mamba_state_create(m, 1, &s), "mamba_state_create", ctx))
        goto out;
    for (int r = 0; r < ROUNDS; r++)
        if (failed(j, mamba_forward(m, j->ids, j->batch, j->len, MAMBA_LOGITS_ALL, j->logits), "mamba_forward", ctx))
            goto out;
    if (failed(j, mamba_state_reset(s), "mamba_state_reset", ctx) ||
        failed(j, mamba_prefill(s, j->prompt, j->n_prompt, l), "mamba_prefill", ctx))
        goto out;
    for (size_t t = 0; t < j->n_gen; t++) {
        int32_t best = 0;
        for (size_t v = 1; v < j->vocab; v++)
            if (l[v] > l[best]) best = (int32_t)v;
        j->tokens[t] = best;
        if (t + 1 < j->n_gen && failed(j, mamba_step(s, &best, l), "mamba_step", ctx)) goto out;
    }
out:
    free(l);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return NULL;
}

START_TEST(concurrent_contexts_match_one_thread)
{
    mamba_tensor_file_t *g;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "models/small/golden.safetensors"), &g), MAMBA_OK);
    mamba_tensor_t t;
    mamba_tensor_file_find(g, "logits", &t);
    const size_t B = (size_t)t.shape[0], L = (size_t)t.shape[1], V = (size_t)t.shape[2];
    size_t np, ng;
    int32_t *ids = file_ids(g, "input_ids", NULL), *prompt = file_ids(g, "gen_prompt", &np);
    int32_t *gen = file_ids(g, "gen_tokens", &ng);
    ck_assert_uint_le(ng, MAX_GEN);
    char model[4096];
    snprintf(model, sizeof model, "%s", data_path(1, "models/small"));
    /* the single-threaded reference, run first and alone; its greedy tokens are the fixture's */
    job alone = {model, ids, B, L, V, prompt, np, ng, malloc(B * L * V * 4), {0}, ""};
    run(&alone);
    ck_assert_msg(!alone.err[0], "alone: %s", alone.err);
    float *ref = file_f32(g, "logits", NULL);
    const double e = max_abs_diff(alone.logits, ref, B * L * V);
    ck_assert_msg(e <= 1e-4, "alone: logits differ from the fixture's by %g", e);
    free(ref);
    for (size_t i = 0; i < ng; i++)
        ck_assert_msg(alone.tokens[i] == gen[i], "alone: token %zu is %d, the fixture's %d", i, alone.tokens[i], gen[i]);
    job jobs[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){model, ids, B, L, V, prompt, np, ng, malloc(B * L * V * 4), {0}, ""};
        ck_assert_int_eq(pthread_create(&th[i], NULL, run, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_msg(!jobs[i].err[0], "thread %d: %s", i, jobs[i].err);
        ck_assert_msg(memcmp(jobs[i].logits, alone.logits, B * L * V * 4) == 0, "thread %d: logits differ", i);
        for (size_t k = 0; k < ng; k++)
            ck_assert_msg(jobs[i].tokens[k] == alone.tokens[k], "thread %d: token %zu is %d, alone %d", i, k,
                          jobs[i].tokens[k], alone.tokens[k]);
        free(jobs[i].logits);
    }
    free(alone.logits);
    free(ids);
    free(prompt);
    free(gen);
    mamba_tensor_file_close(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads"); /* ctest sets CK_DEFAULT_TIMEOUT */
    tcase_add_test(tc, concurrent_contexts_match_one_thread);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
