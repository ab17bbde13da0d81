/* Cross-backend checks: every GPU backend found runs the fixtures and agrees with the CPU
 * reference. A backend that is absent is reported as skipped (exit 77), unless
 * MAMBA_TEST_REQUIRE lists it (for the GPU machine), which makes its absence a failure. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *backend;

static mamba_context_t *open_backend(void)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = backend;
    mamba_context_t *ctx = NULL;
    ck_assert_msg(mamba_context_create(&o, &ctx) == MAMBA_OK, "%s", mamba_last_error(NULL));
    return ctx;
}

START_TEST(fixture_forward_and_decode)
{
    const char *models[] = {"models/tiny", "models/small"};
    char rel[256];
    snprintf(rel, sizeof rel, "%s/golden.safetensors", models[_i]);
    mamba_tensor_file_t *g;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &g), MAMBA_OK);
    size_t n_ids, n_ref;
    int32_t *ids = file_ids(g, "input_ids", &n_ids);
    float *ref = file_f32(g, "logits", &n_ref);
    mamba_tensor_t t;
    mamba_tensor_file_find(g, "logits", &t);
    mamba_context_t *ctx = open_backend();
    mamba_model_t *m;
    ck_assert_msg(mamba_model_load(ctx, data_path(1, models[_i]), &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    float *out = malloc(n_ref * sizeof *out);
    ck_assert_msg(mamba_forward(m, ids, (size_t)t.shape[0], (size_t)t.shape[1], MAMBA_LOGITS_ALL, out) == MAMBA_OK, "%s",
                  mamba_last_error(ctx));
    double e = max_abs_diff(out, ref, n_ref);
    printf("%s %s forward: max abs err %.3g, nmse %.3g\n", backend, models[_i], e, nmse(out, ref, n_ref));
    ck_assert_double_le(e, 1e-4);
    free(out);
    free(ids);
    free(ref);
    mamba_model_free(m);
    mamba_context_free(ctx);
    mamba_tensor_file_close(g);
}
END_TEST

static int run_backend(const char *name)
{
    mamba_backend_info_t be[8];
    size_t n;
    mamba_list_backends(be, 8, &n);
    int available = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(be[i].name, name) == 0 && be[i].available) available = 1;
    if (!available) {
        for (size_t i = 0; i < n; i++)
            if (strcmp(be[i].name, name) == 0) printf("%s: not available: %s\n", name, be[i].note);
        return backend_required(name) ? 1 : TEST_SKIP;
    }
    backend = name;
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, fixture_forward_and_decode, 0, 2);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s opencl|cuda\n", argv[0]);
        return 2;
    }
    return run_backend(argv[1]);
}
