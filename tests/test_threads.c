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

typedef struct job {
    const char *model;
    const int32_t *ids;
    size_t batch, len, vocab;
    float *logits;      /* forward, all positions */
    int32_t tokens[8];  /* greedy continuation of the first sequence */
    char err[256];
} job;

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
    if (mamba_context_create(&o, &ctx) != MAMBA_OK || mamba_model_load(ctx, j->model, &m) != MAMBA_OK ||
        mamba_state_create(m, 1, &s) != MAMBA_OK) {
        snprintf(j->err, sizeof j->err, "%s", mamba_last_error(ctx));
        goto out;
    }
    for (int r = 0; r < ROUNDS; r++) {
        if (mamba_forward(m, j->ids, j->batch, j->len, MAMBA_LOGITS_ALL, j->logits) != MAMBA_OK) {
            snprintf(j->err, sizeof j->err, "%s", mamba_last_error(ctx));
            goto out;
        }
    }
    float *l = malloc(j->vocab * sizeof *l);
    mamba_state_reset(s);
    mamba_prefill(s, j->ids, j->len, l);
    for (int t = 0; t < 8; t++) {
        int32_t best = 0;
        for (size_t v = 1; v < j->vocab; v++)
            if (l[v] > l[best]) best = (int32_t)v;
        j->tokens[t] = best;
        mamba_step(s, &best, l);
    }
    free(l);
out:
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
    int32_t *ids = file_ids(g, "input_ids", NULL);
    char model[4096];
    snprintf(model, sizeof model, "%s", data_path(1, "models/small"));
    job alone = {model, ids, B, L, V, malloc(B * L * V * 4), {0}, ""};
    run(&alone);
    ck_assert_msg(!alone.err[0], "%s", alone.err);
    job jobs[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){model, ids, B, L, V, malloc(B * L * V * 4), {0}, ""};
        ck_assert_int_eq(pthread_create(&th[i], NULL, run, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_msg(!jobs[i].err[0], "thread %d: %s", i, jobs[i].err);
        ck_assert_msg(memcmp(jobs[i].logits, alone.logits, B * L * V * 4) == 0, "thread %d: logits differ", i);
        ck_assert_int_eq(memcmp(jobs[i].tokens, alone.tokens, sizeof alone.tokens), 0);
        free(jobs[i].logits);
    }
    free(alone.logits);
    free(ids);
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
