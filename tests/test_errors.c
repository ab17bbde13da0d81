/* Bad input to the model loader and the model calls: each gets its status and a message that
 * names the file, tensor or argument; nothing leaks (run under ASan/valgrind in CI). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_rewrite.h"
#include "testutil.h"

static const char *tiny_config =
    "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 8, \"time_step_rank\": 4}";

static char *dir;

static void setup(void) { dir = tmpdir_new(); }
static void teardown(void) { tmpdir_remove(dir); dir = NULL; }

static void expect_load_error(mamba_status_t want, const char *needle)
{
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = (mamba_model_t *)1;
    mamba_status_t st = mamba_model_load(ctx, dir, &m);
    ck_assert_msg(st == want, "status %d (%s), expected %d", st, mamba_last_error(ctx), want);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(mamba_last_error(ctx), needle) != NULL, "message '%s' lacks '%s'", mamba_last_error(ctx),
                  needle);
    /* the context stays usable */
    mamba_model_t *good;
    ck_assert_int_eq(mamba_model_load(ctx, data_path(0, "models/tiny"), &good), MAMBA_OK);
    mamba_model_free(good);
    mamba_context_free(ctx);
}

static void weights_with(rewrite_fn fn, void *user)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rewrite_checkpoint(data_path(0, "models/tiny/model.safetensors"), path, fn, user, 0, 0);
}

static int drop_named(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)t; (void)data;
    return strcmp(name, (const char *)user) != 0;
}

static int poison_D(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)t; (void)user;
    if (strcmp(name, "backbone.layers.1.mixer.D") == 0) ((float *)*data)[5] = NAN;
    return 1;
}

static int poison_in_proj(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)t; (void)user;
    if (strcmp(name, "backbone.layers.0.mixer.in_proj.weight") == 0) ((float *)*data)[77] = INFINITY;
    return 1;
}

static int ints_for_norm(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)data; (void)user;
    if (strcmp(name, "backbone.norm_f.weight") == 0) {
        t->dtype = MAMBA_I32; /* same byte size */
    }
    return 1;
}

START_TEST(missing_paths)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/nowhere", dir);
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m;
    ck_assert_int_eq(mamba_model_load(ctx, path, &m), MAMBA_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "nowhere"));
    ck_assert_int_eq(mamba_model_load(ctx, data_path(0, "models/tiny/config.json"), &m), MAMBA_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "not a directory"));
    ck_assert_int_eq(mamba_model_load(ctx, NULL, &m), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_context_free(ctx);
    expect_load_error(MAMBA_ERR_IO, "none of model.safetensors");
    weights_with(NULL, NULL);
    expect_load_error(MAMBA_ERR_IO, "config.json");
}
END_TEST

START_TEST(config_errors)
{
    weights_with(NULL, NULL);
    write_config(dir, "{\"hidden_size\": 32, ");
    expect_load_error(MAMBA_ERR_FORMAT, "malformed JSON");
    write_config(dir, "{\"num_hidden_layers\": 2, \"vocab_size\": 64}");
    expect_load_error(MAMBA_ERR_MODEL, "hidden_size");
    write_config(dir, "{\"hidden_size\": \"big\", \"num_hidden_layers\": 2, \"vocab_size\": 64}");
    expect_load_error(MAMBA_ERR_FORMAT, "'hidden_size'");
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 0, \"vocab_size\": 64}");
    expect_load_error(MAMBA_ERR_MODEL, "n_layer = 0");
    write_config(dir, "{\"model_type\": \"llama\", \"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64}");
    expect_load_error(MAMBA_ERR_UNSUPPORTED, "llama");
    /* consistent JSON, inconsistent with the tensors */
    write_config(dir, "{\"hidden_size\": 48, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 8, \"time_step_rank\": 4}");
    expect_load_error(MAMBA_ERR_MODEL, "has shape (64, 32)");
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 16, \"time_step_rank\": 4}");
    expect_load_error(MAMBA_ERR_MODEL, "x_proj.weight' has shape (20, 64)");
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 3, \"vocab_size\": 64, \"state_size\": 8, \"time_step_rank\": 4}");
    expect_load_error(MAMBA_ERR_MODEL, "missing tensor 'backbone.layers.2.norm.weight'");
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 8,"
                      " \"time_step_rank\": 4, \"tie_word_embeddings\": false}");
    expect_load_error(MAMBA_ERR_MODEL, "lm_head.weight");
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 8,"
                      " \"time_step_rank\": 4, \"use_bias\": true}");
    expect_load_error(MAMBA_ERR_MODEL, "in_proj.bias");
}
END_TEST

START_TEST(tensor_errors)
{
    write_config(dir, tiny_config);
    weights_with(drop_named, "backbone.layers.1.mixer.x_proj.weight");
    expect_load_error(MAMBA_ERR_MODEL, "missing tensor 'backbone.layers.1.mixer.x_proj.weight'");
    weights_with(poison_D, NULL);
    expect_load_error(MAMBA_ERR_MODEL, "'backbone.layers.1.mixer.D' holds a non-finite value at index 5");
    weights_with(poison_in_proj, NULL);
    expect_load_error(MAMBA_ERR_MODEL, "'backbone.layers.0.mixer.in_proj.weight' holds a non-finite value at index 77");
    weights_with(ints_for_norm, NULL);
    expect_load_error(MAMBA_ERR_MODEL, "'backbone.norm_f.weight' has dtype I32");
    /* a truncated weights file */
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(data_path(0, "models/tiny/model.safetensors"), "rb");
    static char buf[100000];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    write_file(path, buf, n - 100);
    expect_load_error(MAMBA_ERR_FORMAT, "truncated");
}
END_TEST

START_TEST(call_errors)
{
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m;
    ck_assert_int_eq(mamba_model_load(ctx, data_path(0, "models/tiny"), &m), MAMBA_OK);
    int32_t ids[4] = {1, 2, 3, 4};
    float logits[4 * 64];
    ids[2] = 64;
    ck_assert_int_eq(mamba_forward(m, ids, 1, 4, MAMBA_LOGITS_ALL, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "token id 64 at index 2 is out of range [0, 64)"));
    ids[2] = -1;
    ck_assert_int_eq(mamba_forward(m, ids, 2, 2, MAMBA_LOGITS_LAST, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "token id -1"));
    ids[2] = 3;
    ck_assert_int_eq(mamba_forward(m, ids, 0, 4, MAMBA_LOGITS_ALL, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "batch = 0"));
    ck_assert_int_eq(mamba_forward(m, ids, 1, 0, MAMBA_LOGITS_ALL, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "len = 0"));
    ck_assert_int_eq(mamba_forward(m, NULL, 1, 4, MAMBA_LOGITS_ALL, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_forward(m, ids, 1, 4, (mamba_logits_mode_t)7, logits), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(m, 0, &s), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_state_create(m, 1, &s), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(s, ids, 0, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ids[0] = 99;
    ck_assert_int_eq(mamba_step(s, ids, logits), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "token id 99"));
    int32_t gen[4];
    ck_assert_int_eq(mamba_generate_greedy(s, ids, 4, gen), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "token id 99"));
    ids[0] = 1;
    ck_assert_int_eq(mamba_generate_greedy(s, ids, 0, gen), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "n_tokens = 0"));
    ck_assert_int_eq(mamba_generate_greedy(s, NULL, 4, gen), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_generate_greedy(NULL, ids, 4, gen), MAMBA_ERR_INVALID_ARGUMENT);
    /* still usable after the errors */
    ids[0] = 1;
    ck_assert_int_eq(mamba_step(s, ids, logits), MAMBA_OK);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
}
END_TEST

/* mamba_alloc_host: bad sizes and foreign pointers get errors, not crashes; a block holds
 * the logits of mamba_forward exactly as malloc'd memory does; blocks left at
 * mamba_context_free are freed there (ASan and valgrind see it in CI). */
START_TEST(host_memory)
{
    ck_assert_ptr_null(mamba_alloc_host(NULL, 64));
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "context is NULL"));
    mamba_context_t *ctx = cpu_context(0);
    ck_assert_ptr_null(mamba_alloc_host(ctx, 0));
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "0 bytes, expected 1 .. 2^46"));
    ck_assert_ptr_null(mamba_alloc_host(ctx, (size_t)1 << 50));
    mamba_model_t *m;
    ck_assert_int_eq(mamba_model_load(ctx, data_path(0, "models/tiny"), &m), MAMBA_OK);
    const int32_t ids[6] = {1, 2, 3, 4, 5, 6};
    float ref[6 * 64];
    float *host = mamba_alloc_host(ctx, sizeof ref);
    ck_assert_ptr_nonnull(host);
    ck_assert_uint_eq((uintptr_t)host % 64, 0);
    ck_assert_int_eq(mamba_forward(m, ids, 2, 3, MAMBA_LOGITS_ALL, ref), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(m, ids, 2, 3, MAMBA_LOGITS_ALL, host), MAMBA_OK);
    ck_assert_mem_eq(host, ref, sizeof ref);
    float local;
    mamba_free_host(ctx, &local); /* not ours: a warning, nothing freed */
    mamba_free_host(ctx, NULL);
    mamba_free_host(NULL, host);
    mamba_free_host(ctx, host);
    ck_assert_ptr_nonnull(mamba_alloc_host(ctx, 100)); /* left for mamba_context_free */
    mamba_model_free(m);
    mamba_context_free(ctx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, missing_paths);
    tcase_add_test(tc, config_errors);
    tcase_add_test(tc, tensor_errors);
    tcase_add_test(tc, call_errors);
    tcase_add_test(tc, host_memory);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
