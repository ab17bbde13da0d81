/* PyTorch checkpoints (pytorch_model.bin): the tiny_bin fixture against its golden logits and
 * tokens, the variants tests/data/make_torch_bins.py writes against the safetensors tiny model
 * they were made from, and the malformed or malicious files of tests/data/torch_bad refused
 * with a message that names the global, opcode, entry or tensor. */
#define _POSIX_C_SOURCE 200809L /* truncate */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_rewrite.h"
#include "testutil.h"

#define LOGIT_BOUND 1e-4

static const char *model_dir(const char *name)
{
    static char rel[256];
    snprintf(rel, sizeof rel, "models/%s", name);
    return data_path(1, rel);
}

static mamba_model_t *load_dir(mamba_context_t *ctx, const char *dir)
{
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s: %s", dir, mamba_last_error(ctx));
    return m;
}

/* The logits of every position of g's ids from the model in dir. */
static float *forward_dir(const char *dir, const golden *g)
{
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = load_dir(ctx, dir);
    float *out = malloc(g->batch * g->len * g->vocab * sizeof *out);
    ck_assert_int_eq(mamba_forward(m, g->ids, g->batch, g->len, MAMBA_LOGITS_ALL, out), MAMBA_OK);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return out;
}

START_TEST(fixture_matches_golden)
{
    golden g = load_golden("tiny_bin");
    const size_t n = g.batch * g.len * g.vocab;
    float *out = forward_dir(model_dir("tiny_bin"), &g);
    const double err = max_abs_diff(out, g.logits, n);
    printf("tiny_bin forward: max abs err %.3g (bound %g)\n", err, LOGIT_BOUND);
    ck_assert_double_le(err, LOGIT_BOUND);
    free(out);
    /* greedy decoding from the prompt gives the reference's tokens */
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = load_dir(ctx, model_dir("tiny_bin"));
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(m, 1, &s), MAMBA_OK);
    float *logits = malloc(g.vocab * sizeof *logits);
    ck_assert_int_eq(mamba_prefill(s, g.prompt, g.n_prompt, logits), MAMBA_OK);
    double worst = 0;
    for (size_t t = 0; t < g.n_gen; t++) {
        const double e = max_abs_diff(logits, g.gen_logits + t * g.vocab, g.vocab);
        if (e > worst) worst = e;
        int32_t best = 0;
        for (size_t v = 1; v < g.vocab; v++)
            if (logits[v] > logits[best]) best = (int32_t)v;
        ck_assert_msg(best == g.gen[t], "step %zu chose %d, reference %d", t, best, g.gen[t]);
        if (t + 1 < g.n_gen) ck_assert_int_eq(mamba_step(s, &best, logits), MAMBA_OK);
    }
    printf("tiny_bin decode: %zu tokens identical, per-step logits max abs err %.3g\n", g.n_gen, worst);
    ck_assert_double_le(worst, LOGIT_BOUND);
    /* and the device-side greedy loop continues the same way */
    ck_assert_int_eq(mamba_state_reset(s), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(s, g.prompt, g.n_prompt, NULL), MAMBA_OK);
    int32_t *gen = malloc(g.n_gen * sizeof *gen + 1);
    ck_assert_int_eq(mamba_generate_greedy(s, &g.gen[0], g.n_gen - 1, gen), MAMBA_OK);
    for (size_t t = 0; t + 1 < g.n_gen; t++) ck_assert_int_eq(gen[t], g.gen[t + 1]);
    free(gen);
    free(logits);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free_golden(&g);
}
END_TEST

/* Written from tiny's f32 weights: the same model, bit for bit. */
static const char *const f32_variants[] = {"tiny_bin_sharded", "tiny_bin_state_spaces", "tiny_bin_strided",
                                           "tiny_bin_zip64"};

START_TEST(variants_equal_safetensors)
{
    golden g = load_golden("tiny");
    const size_t n = g.batch * g.len * g.vocab;
    float *ref = forward_dir(model_dir("tiny"), &g), *out = forward_dir(model_dir(f32_variants[_i]), &g);
    const double err = max_abs_diff(out, ref, n);
    printf("%s vs tiny's model.safetensors: max abs diff %.3g\n", f32_variants[_i], err);
    ck_assert_msg(memcmp(out, ref, n * sizeof *out) == 0, "%s: logits differ by up to %g", f32_variants[_i], err);
    ck_assert_double_le(max_abs_diff(out, g.logits, n), LOGIT_BOUND);
    free(out);
    free(ref);
    free_golden(&g);
}
END_TEST

/* The values of tiny_bin_half in f32: matrices (2-D) rounded to bfloat16, the rest to half. */
static int round_like_half_bin(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)name; (void)user;
    float *f = *data;
    for (size_t i = 0; i < t->nbytes / 4; i++)
        f[i] = t->ndim == 2 ? mamba_bf16_to_f32(mamba_f32_to_bf16(f[i])) : mamba_f16_to_f32(mamba_f32_to_f16(f[i]));
    return 1;
}

START_TEST(half_variant_equals_rounded_weights)
{
    golden g = load_golden("tiny");
    const size_t n = g.batch * g.len * g.vocab;
    char *dir = tmpdir_new(), path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rewrite_checkpoint(data_path(0, "models/tiny/model.safetensors"), path, round_like_half_bin, NULL, 0, 0);
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 8,"
                      " \"time_step_rank\": 4}");
    float *ref = forward_dir(dir, &g), *out = forward_dir(model_dir("tiny_bin_half"), &g);
    const double err = max_abs_diff(out, ref, n);
    printf("tiny_bin_half vs its values in f32: max abs diff %.3g; vs the f32 golden: %.3g\n", err,
           max_abs_diff(out, g.logits, n));
    ck_assert_double_le(err, 1e-6);
    ck_assert_double_le(nmse(out, g.logits, n), 1e-3);
    /* the matrices stay 16-bit on the device */
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = load_dir(ctx, model_dir("tiny_bin_half"));
    mamba_model_info_t info;
    ck_assert_int_eq(mamba_model_info(m, &info), MAMBA_OK);
    ck_assert_int_eq(info.dtype, MAMBA_BF16);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free(out);
    free(ref);
    tmpdir_remove(dir);
    free_golden(&g);
}
END_TEST

static void copy_into(const char *dir, const char *from_rel, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    copy_file(data_path(2, from_rel), path);
}

/* lm_head.weight shares the embedding's storage: read as an untied head it is the same matrix. */
START_TEST(shared_storage_head)
{
    golden g = load_golden("tiny");
    const size_t n = g.batch * g.len * g.vocab;
    char *dir = tmpdir_new();
    copy_into(dir, "models/tiny_bin_state_spaces/pytorch_model.bin", "pytorch_model.bin");
    write_config(dir, "{\"d_model\": 32, \"n_layer\": 2, \"vocab_size\": 64, \"ssm_cfg\": {\"d_state\": 8,"
                      " \"dt_rank\": 4}, \"tie_embeddings\": false}");
    float *ref = forward_dir(model_dir("tiny"), &g), *out = forward_dir(dir, &g);
    ck_assert_msg(memcmp(out, ref, n * sizeof *out) == 0, "untied head from the shared storage: logits differ by %g",
                  max_abs_diff(out, ref, n));
    free(out);
    free(ref);
    tmpdir_remove(dir);
    free_golden(&g);
}
END_TEST

START_TEST(explicit_files_and_preference)
{
    golden g = load_golden("tiny_bin");
    const size_t n = g.batch * g.len * g.vocab;
    float *ref = forward_dir(model_dir("tiny_bin"), &g);
    char *dir = tmpdir_new(), cfg[4200], weights[4200];
    /* the content decides, not the name */
    copy_into(dir, "models/tiny_bin/pytorch_model.bin", "weights.safetensors");
    snprintf(cfg, sizeof cfg, "%s/config.json", model_dir("tiny_bin"));
    snprintf(weights, sizeof weights, "%s/weights.safetensors", dir);
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_load_files(ctx, cfg, weights, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    float *out = malloc(n * sizeof *out);
    ck_assert_int_eq(mamba_forward(m, g.ids, g.batch, g.len, MAMBA_LOGITS_ALL, out), MAMBA_OK);
    ck_assert_int_eq(memcmp(out, ref, n * sizeof *out), 0);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free(out);
    tmpdir_remove(dir);
    /* model.safetensors is preferred over a pytorch_model.bin beside it (here one that would be refused) */
    dir = tmpdir_new();
    copy_into(dir, "models/tiny/model.safetensors", "model.safetensors");
    copy_into(dir, "torch_bad/global_os_system.bin", "pytorch_model.bin");
    copy_into(dir, "models/tiny/config.json", "config.json");
    golden t = load_golden("tiny");
    out = forward_dir(dir, &t);
    ck_assert_double_le(max_abs_diff(out, t.logits, t.batch * t.len * t.vocab), LOGIT_BOUND);
    free(out);
    free_golden(&t);
    tmpdir_remove(dir);
    free(ref);
    free_golden(&g);
}
END_TEST

typedef struct bad_case {
    const char *file;
    mamba_status_t status;
    const char *says[2];
} bad_case;

static const bad_case bad_cases[] = {
    {"global_os_system.bin", MAMBA_ERR_FORMAT, {"global 'os.system'", "not allowed"}},
    {"global_builtins_eval.bin", MAMBA_ERR_FORMAT, {"global 'builtins.eval'", "not allowed"}},
    {"opcode_unknown.bin", MAMBA_ERR_FORMAT, {"unknown pickle opcode 0xff", "at byte 5"}},
    {"opcode_stack_global.bin", MAMBA_ERR_FORMAT, {"opcode STACK_GLOBAL (0x93)", "not allowed"}},
    {"protocol5.bin", MAMBA_ERR_FORMAT, {"pickle protocol 5 is not supported", "data.pkl"}},
    {"marks_too_deep.bin", MAMBA_ERR_FORMAT, {"MARKs nested too deep", "opcode MARK"}},
    {"memo_skips.bin", MAMBA_ERR_FORMAT, {"memo index skips ahead", "BINPUT"}},
    {"not_a_dict.bin", MAMBA_ERR_FORMAT, {"result is of type int, not a dict of tensors", "data.pkl"}},
    {"legacy_format.bin", MAMBA_ERR_UNSUPPORTED, {"legacy format", "before PyTorch 1.6"}},
    {"compressed.bin", MAMBA_ERR_UNSUPPORTED, {"entry 'pytorch_model/data/0' is compressed", "deflate"}},
    {"truncated.bin", MAMBA_ERR_FORMAT, {"no ZIP end-of-central-directory record", "truncated"}},
    {"offset_out_of_range.bin", MAMBA_ERR_FORMAT, {"tensor 'backbone.layers.0.mixer.D'", "storage offset 1"}},
    {"storage_missing.bin", MAMBA_ERR_FORMAT, {"tensor 'backbone.norm_f.weight'", "no data entry"}},
    {"numel_mismatch.bin", MAMBA_ERR_FORMAT, {"tensor 'backbone.layers.1.mixer.A_log'", "513 F32 elements"}},
};

START_TEST(bad_files_refused)
{
    const bad_case *c = &bad_cases[_i];
    char rel[256];
    snprintf(rel, sizeof rel, "torch_bad/%s", c->file);
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = (mamba_model_t *)&m; /* overwritten with NULL on failure */
    const mamba_status_t st = mamba_model_load_files(ctx, data_path(0, "models/tiny/config.json"), data_path(1, rel), &m);
    const char *msg = mamba_last_error(ctx);
    printf("%s: %s: %s\n", c->file, mamba_status_string(st), msg);
    ck_assert_msg(st == c->status, "%s: status %s, expected %s: %s", c->file, mamba_status_string(st),
                  mamba_status_string(c->status), msg);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(msg, c->file) != NULL, "%s: the message does not name the file: %s", c->file, msg);
    for (int k = 0; k < 2; k++)
        ck_assert_msg(strstr(msg, c->says[k]) != NULL, "%s: expected '%s' in: %s", c->file, c->says[k], msg);
    mamba_context_free(ctx);
}
END_TEST

/* Every byte of the fixture's pickle and ZIP directory changed (and a sample of the rest), and
 * the archive cut at many lengths: each load ends in a status (an accepted one in a model that
 * runs), never a crash (ASan builds check the reads). The file is patched in place. */
static void patch(const char *path, size_t pos, unsigned char byte)
{
    FILE *fp = fopen(path, "r+b");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fseek(fp, (long)pos, SEEK_SET), 0);
    ck_assert_int_eq(fputc(byte, fp), byte);
    ck_assert_int_eq(fclose(fp), 0);
}

START_TEST(damaged_fixture_never_crashes)
{
    FILE *fp = fopen(data_path(0, "models/tiny_bin/pytorch_model.bin"), "rb");
    ck_assert_ptr_nonnull(fp);
    static unsigned char orig[1 << 17];
    const size_t len = fread(orig, 1, sizeof orig, fp);
    fclose(fp);
    ck_assert_uint_gt(len, 80000);
    char *dir = tmpdir_new(), path[4200];
    snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
    write_file(path, orig, len);
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cpu";
    o.n_threads = 1;
    mamba_context_t *ctx;
    ck_assert_int_eq(mamba_context_create(&o, &ctx), MAMBA_OK);
    const char *cfg = data_path(0, "models/tiny_bin/config.json");
    size_t refused = 0, tried = 0;
    /* data.pkl is bytes [64, 2221); the central directory and end records the last 1900 */
    for (size_t pos = 0; pos < len; pos += (pos >= 64 && pos < 2221) || pos + 1900 > len ? 1 : 509) {
        patch(path, pos, orig[pos] ^ (unsigned char)(0x5a + pos));
        mamba_model_t *m = NULL;
        if (mamba_model_load_files(ctx, cfg, path, &m) != MAMBA_OK) {
            ck_assert_ptr_null(m);
            ck_assert(mamba_last_error(ctx)[0] != 0);
            refused++;
        } else {
            int32_t ids[2] = {1, 2};
            float logits[64];
            ck_assert_int_eq(mamba_forward(m, ids, 1, 2, MAMBA_LOGITS_LAST, logits), MAMBA_OK);
            mamba_model_free(m);
        }
        patch(path, pos, orig[pos]);
        tried++;
    }
    for (size_t cut = len - 1; cut > 0; cut = cut > 311 ? cut - 311 : 0) {
        ck_assert_int_eq(truncate(path, (off_t)cut), 0);
        mamba_model_t *m = NULL;
        ck_assert_int_ne(mamba_model_load_files(ctx, cfg, path, &m), MAMBA_OK);
        tried++;
        refused++;
    }
    printf("damaged tiny_bin: %zu loads, %zu refused\n", tried, refused);
    ck_assert_uint_gt(refused, tried / 2);
    mamba_context_free(ctx);
    tmpdir_remove(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("torch");
    TCase *tc = tcase_create("torch");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, fixture_matches_golden);
    tcase_add_loop_test(tc, variants_equal_safetensors, 0, (int)(sizeof f32_variants / sizeof f32_variants[0]));
    tcase_add_test(tc, half_variant_equals_rounded_weights);
    tcase_add_test(tc, shared_storage_head);
    tcase_add_test(tc, explicit_files_and_preference);
    tcase_add_loop_test(tc, bad_files_refused, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, damaged_fixture_never_crashes);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
