/* The public API outside the model math: version, backends and devices, contexts, logging,
 * synthetic models, sampling. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/backend.h"
#include "testutil.h"

START_TEST(version_and_strings)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", MAMBA_VERSION_MAJOR, MAMBA_VERSION_MINOR, MAMBA_VERSION_PATCH);
    ck_assert_str_eq(mamba_version(), want);
    ck_assert_str_eq(mamba_status_string(MAMBA_OK), "success");
    for (int s = MAMBA_ERR_INVALID_ARGUMENT; s <= MAMBA_ERR_BACKEND; s++)
        ck_assert_str_ne(mamba_status_string((mamba_status_t)s), "unknown status");
    ck_assert_str_eq(mamba_status_string((mamba_status_t)999), "unknown status");
    ck_assert_str_eq(mamba_dtype_name(MAMBA_BF16), "BF16");
}
END_TEST

START_TEST(backends_and_devices)
{
    mamba_backend_info_t be[8];
    size_t n;
    ck_assert_int_eq(mamba_list_backends(be, 8, &n), MAMBA_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(be[0].name, "cpu");
    ck_assert_int_eq(be[0].available, 1);
    ck_assert_int_eq(be[0].n_devices, 1);
    for (size_t i = 1; i < n; i++)
        if (!be[i].available) ck_assert_str_ne(be[i].note, ""); /* says why */
    mamba_device_info_t dev[16];
    ck_assert_int_eq(mamba_list_devices(dev, 16, &n), MAMBA_OK);
    ck_assert_uint_ge(n, 1);
    ck_assert_str_eq(dev[0].backend, "cpu");
    ck_assert_uint_gt(dev[0].memory_bytes, 1u << 20);
    ck_assert_int_eq(dev[0].usable, 1);
    ck_assert_int_eq(mamba_list_devices(NULL, 4, &n), MAMBA_ERR_INVALID_ARGUMENT);
}
END_TEST

static mamba_status_t try_backend(const char *name)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = name;
    mamba_context_t *ctx = (mamba_context_t *)1;
    mamba_status_t st = mamba_context_create(&o, &ctx);
    if (st == MAMBA_OK) mamba_context_free(ctx);
    else ck_assert_ptr_null(ctx);
    return st;
}

START_TEST(context_choice)
{
    ck_assert_int_eq(try_backend("cpu"), MAMBA_OK);
    ck_assert_int_eq(try_backend("cpu:0"), MAMBA_OK);
    ck_assert_int_eq(try_backend("auto"), MAMBA_OK);
    ck_assert_int_eq(try_backend("cpu:1"), MAMBA_ERR_NO_DEVICE);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "out of range"));
    ck_assert_int_eq(try_backend("tpu"), MAMBA_ERR_NO_BACKEND);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "unknown backend 'tpu'"));
    ck_assert_int_eq(try_backend("cpu:x"), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(try_backend("auto:1"), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(try_backend(""), MAMBA_ERR_INVALID_ARGUMENT);
    /* a backend that is absent is an error, never a silent fallback */
    mamba_backend_info_t be[8];
    size_t n;
    mamba_list_backends(be, 8, &n);
    for (size_t i = 1; i < n; i++) {
        if (be[i].available) continue;
        ck_assert_int_eq(try_backend(be[i].name), MAMBA_ERR_NO_BACKEND);
        ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "is not available"));
    }
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cpu";
    o.n_threads = -2;
    mamba_context_t *ctx;
    ck_assert_int_eq(mamba_context_create(&o, &ctx), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "n_threads"));
    o.n_threads = 1;
    ck_assert_int_eq(mamba_context_create(&o, &ctx), MAMBA_OK);
    ck_assert_str_eq(mamba_context_backend(ctx), "cpu");
    ck_assert_str_ne(mamba_context_device(ctx), "");
    ck_assert_int_eq(mamba_context_synchronize(ctx), MAMBA_OK);
    ck_assert_str_eq(mamba_last_error(ctx), "");
    mamba_context_free(ctx);
}
END_TEST

static int log_calls;
static char last_log[1024];
static void count_log(mamba_log_level_t level, const char *msg, void *user)
{
    ck_assert_int_le(level, MAMBA_LOG_DEBUG);
    ck_assert_ptr_eq(user, &log_calls);
    snprintf(last_log, sizeof last_log, "%s", msg);
    log_calls++;
}

/* A module of another backend ABI version is refused, with both versions named. */
START_TEST(old_abi_module_refused)
{
    setenv("MAMBA_BACKEND_PATH", MAMBA_OLD_ABI_DIR, 1);
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cuda";
    mamba_context_t *ctx = NULL;
    ck_assert_int_eq(mamba_context_create(&o, &ctx), MAMBA_ERR_NO_BACKEND);
    const char *msg = mamba_last_error(NULL);
    char want[96];
    snprintf(want, sizeof want, "backend ABI version 3, this libmamba needs %d", MB_BACKEND_ABI_VERSION);
    ck_assert_msg(strstr(msg, want) != NULL, "%s", msg);
    ck_assert_msg(strstr(msg, MAMBA_OLD_ABI_DIR) != NULL, "%s", msg);
    unsetenv("MAMBA_BACKEND_PATH");
}
END_TEST

START_TEST(log_callback)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cpu";
    o.log = count_log;
    o.log_user = &log_calls;
    o.log_level = MAMBA_LOG_DEBUG;
    mamba_context_t *ctx;
    ck_assert_int_eq(mamba_context_create(&o, &ctx), MAMBA_OK);
    mamba_model_t *m;
    log_calls = 0;
    ck_assert_int_eq(mamba_model_load(ctx, data_path(0, "scan"), &m), MAMBA_ERR_IO);
    ck_assert_int_eq(mamba_model_load(ctx, data_path(0, "models/tiny"), &m), MAMBA_OK);
    mamba_model_free(m);
    mamba_context_free(ctx);
    /* the checkpoint error went to the callback, nothing to stderr */
    ck_assert_int_ge(log_calls, 1);
    ck_assert_ptr_nonnull(strstr(last_log, "scan"));
}
END_TEST

START_TEST(standard_configs_and_synthetic_models)
{
    mamba_config_t c;
    ck_assert_int_eq(mamba_config_standard("130m", &c), MAMBA_OK);
    ck_assert_int_eq(c.d_model, 768);
    ck_assert_int_eq(c.n_layer, 24);
    ck_assert_int_eq(c.d_inner, 1536);
    ck_assert_int_eq(c.dt_rank, 48);
    ck_assert_int_eq(c.d_state, 16);
    ck_assert_int_eq(c.vocab_size, 50280);
    ck_assert_int_eq(mamba_config_standard("2.8b", &c), MAMBA_OK);
    ck_assert_int_eq(c.d_model, 2560);
    ck_assert_int_eq(c.dt_rank, 160);
    ck_assert_int_eq(mamba_config_standard("7b", &c), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "'7b'"));

    /* a small synthetic model: deterministic in its seed, parameter count by formula */
    mamba_config_t s;
    mamba_config_init(&s);
    s.d_model = 64;
    s.n_layer = 3;
    s.vocab_size = 300;
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *a, *b, *d;
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_F32, 7, &a), MAMBA_OK);
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_F32, 7, &b), MAMBA_OK);
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_F32, 8, &d), MAMBA_OK);
    mamba_model_info_t info;
    ck_assert_int_eq(mamba_model_info(a, &info), MAMBA_OK);
    const uint64_t dm = 64, di = 128, N = 16, R = 4, K = 4, V = 300;
    uint64_t per_layer = dm + 2 * di * dm + di * K + di + (R + 2 * N) * di + di * R + di + di * N + di + dm * di;
    ck_assert_uint_eq(info.n_params, V * dm + 3 * per_layer + dm);
    ck_assert_int_eq(info.config.dt_rank, 4);
    int32_t ids[6] = {1, 5, 299, 0, 17, 42};
    float la[300], lb[300], ld[300];
    ck_assert_int_eq(mamba_forward(a, ids, 1, 6, MAMBA_LOGITS_LAST, la), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(b, ids, 1, 6, MAMBA_LOGITS_LAST, lb), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(d, ids, 1, 6, MAMBA_LOGITS_LAST, ld), MAMBA_OK);
    ck_assert_double_eq(max_abs_diff(la, lb, 300), 0);
    ck_assert_double_gt(max_abs_diff(la, ld, 300), 1e-3);
    for (int i = 0; i < 300; i++) ck_assert(isfinite(la[i]));
    mamba_model_free(a);
    mamba_model_free(b);
    mamba_model_free(d);
    /* 16-bit synthetic weights run and stay close to the f32 ones */
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_BF16, 7, &a), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(a, ids, 1, 6, MAMBA_LOGITS_LAST, ld), MAMBA_OK);
    ck_assert_double_lt(nmse(ld, la, 300), 1e-2);
    mamba_model_free(a);
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_I64, 7, &a), MAMBA_ERR_INVALID_ARGUMENT);
    s.d_model = 0;
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_F32, 7, &a), MAMBA_ERR_MODEL);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "d_model"));
    mamba_context_free(ctx);
}
END_TEST

/* The measurement entry points mamba-bench uses beside the timers: the scan's backward on
 * device-resident inputs and what the GEMMs compute in. */
START_TEST(bench_scan_backward_and_compute_dtype)
{
    mamba_context_t *ctx = cpu_context(0);
    const size_t B = 2, D = 24, L = 70, N = 8, n = B * L * D;
    float *du = malloc(n * sizeof *du), *again = malloc(n * sizeof *again);
    double ms[3];
    ck_assert_int_eq(mamba_bench_scan_backward(ctx, B, D, L, N, 1, 3, ms, du), MAMBA_OK);
    ck_assert_int_eq(mamba_bench_scan_backward(ctx, B, D, L, N, 0, 1, ms, again), MAMBA_OK);
    for (size_t i = 0; i < n; i++) ck_assert(isfinite(du[i]));
    ck_assert_double_gt(max_abs(du, n), 0);
    ck_assert_double_eq(max_abs_diff(du, again, n), 0); /* the inputs are the shape's alone */
    ck_assert_int_eq(mamba_bench_scan_backward(ctx, B, D, L, 0, 0, 1, ms, NULL), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "mamba_bench_scan_backward"));
    ck_assert_int_eq(mamba_bench_scan_backward(ctx, B, D, L, N, 0, 0, ms, NULL), MAMBA_ERR_INVALID_ARGUMENT);
    free(du);
    free(again);

    /* the CPU widens 16-bit weights for its GEMMs */
    mamba_config_t s;
    mamba_config_init(&s);
    s.d_model = 32;
    s.n_layer = 1;
    s.vocab_size = 50;
    mamba_model_t *mdl;
    ck_assert_int_eq(mamba_model_create_synthetic(ctx, &s, MAMBA_BF16, 1, &mdl), MAMBA_OK);
    mamba_dtype_t dt = MAMBA_I64;
    ck_assert_int_eq(mamba_model_compute_dtype(mdl, 4096, &dt), MAMBA_OK);
    ck_assert_int_eq(dt, MAMBA_F32);
    ck_assert_int_eq(mamba_model_compute_dtype(mdl, 0, &dt), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_model_compute_dtype(NULL, 1, &dt), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_model_free(mdl);
    mamba_context_free(ctx);
}
END_TEST

static mamba_sampler_t *sampler(float temperature, int top_k, float top_p, uint64_t seed)
{
    mamba_sampler_params_t p;
    mamba_sampler_params_init(&p);
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.seed = seed;
    mamba_sampler_t *s;
    ck_assert_int_eq(mamba_sampler_create(&p, &s), MAMBA_OK);
    return s;
}

START_TEST(sampling)
{
    float logits[5] = {1.0f, 3.0f, 3.0f, 0.5f, 2.0f};
    int32_t tok;
    mamba_sampler_t *g = sampler(0, 0, 1, 0);
    ck_assert_int_eq(mamba_sample(g, logits, 5, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 1); /* first index on ties */
    mamba_sampler_free(g);
    /* temperature 1: frequencies follow softmax (4 sigma bounds over 20000 draws) */
    mamba_sampler_t *s = sampler(1.0f, 0, 1, 42);
    int counts[5] = {0};
    const int draws = 20000;
    for (int i = 0; i < draws; i++) {
        ck_assert_int_eq(mamba_sample(s, logits, 5, &tok), MAMBA_OK);
        counts[tok]++;
    }
    double z = 0;
    for (int i = 0; i < 5; i++) z += exp((double)logits[i]);
    for (int i = 0; i < 5; i++) {
        double p = exp((double)logits[i]) / z, sd = sqrt(draws * p * (1 - p));
        ck_assert_msg(fabs(counts[i] - draws * p) < 4 * sd, "token %d: %d draws, expected %.0f", i, counts[i], draws * p);
    }
    mamba_sampler_free(s);
    /* top-k = 2 keeps the two best; top-p = 0.5 keeps the nucleus */
    s = sampler(1.0f, 2, 1, 1);
    for (int i = 0; i < 500; i++) {
        mamba_sample(s, logits, 5, &tok);
        ck_assert(tok == 1 || tok == 2);
    }
    mamba_sampler_free(s);
    s = sampler(1.0f, 0, 0.5f, 1);
    float peaked[4] = {0.0f, 5.0f, 0.0f, 0.0f};
    for (int i = 0; i < 200; i++) {
        mamba_sample(s, peaked, 4, &tok);
        ck_assert_int_eq(tok, 1);
    }
    mamba_sampler_free(s);
    /* the same seed gives the same sequence */
    mamba_sampler_t *a = sampler(0.8f, 3, 0.9f, 5), *b = sampler(0.8f, 3, 0.9f, 5);
    for (int i = 0; i < 100; i++) {
        int32_t ta, tb;
        mamba_sample(a, logits, 5, &ta);
        mamba_sample(b, logits, 5, &tb);
        ck_assert_int_eq(ta, tb);
    }
    mamba_sampler_free(a);
    mamba_sampler_free(b);
    /* bad parameters and inputs */
    mamba_sampler_params_t p;
    mamba_sampler_params_init(&p);
    p.temperature = -1;
    ck_assert_int_eq(mamba_sampler_create(&p, &s), MAMBA_ERR_INVALID_ARGUMENT);
    p.temperature = 1;
    p.top_p = 1.5f;
    ck_assert_int_eq(mamba_sampler_create(&p, &s), MAMBA_ERR_INVALID_ARGUMENT);
    p.top_p = 1;
    p.top_k = -1;
    ck_assert_int_eq(mamba_sampler_create(&p, &s), MAMBA_ERR_INVALID_ARGUMENT);
    g = sampler(0, 0, 1, 0);
    float nan_logits[2] = {0, NAN};
    ck_assert_int_eq(mamba_sample(g, nan_logits, 2, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_sample(g, logits, 0, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_sampler_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, version_and_strings);
    tcase_add_test(tc, backends_and_devices);
    tcase_add_test(tc, context_choice);
    tcase_add_test(tc, log_callback);
    tcase_add_test(tc, old_abi_module_refused);
    tcase_add_test(tc, standard_configs_and_synthetic_models);
    tcase_add_test(tc, sampling);
    tcase_add_test(tc, bench_scan_backward_and_compute_dtype);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
