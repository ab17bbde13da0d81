/* The whole model on the fixtures: forward logits, greedy decoding, chunked prefill,
 * step-by-step decoding, F16/BF16 weights, sharded and original-format checkpoints. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_rewrite.h"
#include "testutil.h"
#include "cpu_math.h"

/* Bound of the issue on logits against the float64 reference. */
#define LOGIT_BOUND 1e-4

/* Mamba (tiny, small) and Falcon-Mamba (falcon_tiny: dt, B and C normalized, untied head) */
static const char *const models[] = {"tiny", "small", "falcon_tiny"};
#define N_MODELS 3

/* path = dir/name; returns path */
static char *cat_path(char *path, size_t cap, const char *dir, const char *name)
{
    snprintf(path, cap, "%s/%s", dir, name);
    return path;
}

static mamba_model_t *load_model(mamba_context_t *ctx, const char *dir)
{
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    return m;
}

static const char *model_dir(const char *name)
{
    static char rel[256];
    snprintf(rel, sizeof rel, "models/%s", name);
    return data_path(1, rel);
}

static float *forward_all(mamba_model_t *m, const golden *g)
{
    float *out = malloc(g->batch * g->len * g->vocab * sizeof *out);
    ck_assert_int_eq(mamba_forward(m, g->ids, g->batch, g->len, MAMBA_LOGITS_ALL, out), MAMBA_OK);
    return out;
}

START_TEST(forward_matches_reference)
{
    golden g = load_golden(models[_i]);
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = load_model(ctx, model_dir(models[_i]));
    mamba_model_info_t info;
    ck_assert_int_eq(mamba_model_info(m, &info), MAMBA_OK);
    ck_assert_int_eq(info.config.vocab_size, (int)g.vocab);
    float *out = forward_all(m, &g);
    size_t n = g.batch * g.len * g.vocab;
    double err = max_abs_diff(out, g.logits, n);
    printf("%s forward: max abs err %.3g, nmse %.3g (bound %g)\n", models[_i], err, nmse(out, g.logits, n), LOGIT_BOUND);
    ck_assert_msg(err <= LOGIT_BOUND, "%s: max abs err %g", models[_i], err);
    /* last-position logits are the last rows of the full ones (1e-5: OpenBLAS sums an
     * M=2 GEMM in another order than an M=400 one; measured 1.2e-6 on logits of ~5) */
    float *last = malloc(g.batch * g.vocab * sizeof *last);
    ck_assert_int_eq(mamba_forward(m, g.ids, g.batch, g.len, MAMBA_LOGITS_LAST, last), MAMBA_OK);
    for (size_t b = 0; b < g.batch; b++)
        ck_assert_double_le(max_abs_diff(last + b * g.vocab, out + (b * g.len + g.len - 1) * g.vocab, g.vocab), 1e-5);
    /* a batch gives what each sequence gives alone */
    float *one = malloc(g.len * g.vocab * sizeof *one);
    ck_assert_int_eq(mamba_forward(m, g.ids + g.len, 1, g.len, MAMBA_LOGITS_ALL, one), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(one, out + g.len * g.vocab, g.len * g.vocab), 1e-5);
    free(one); free(last); free(out);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free_golden(&g);
}
END_TEST

/* A fixture's model on the CPU with a state of batch sequences. */
typedef struct decoding {
    golden g;
    mamba_context_t *ctx;
    mamba_model_t *m;
    mamba_state_t *s;
} decoding;

static decoding open_decoding(const char *model, size_t batch)
{
    decoding d;
    d.g = load_golden(model);
    d.ctx = cpu_context(0);
    d.m = load_model(d.ctx, model_dir(model));
    ck_assert_int_eq(mamba_state_create(d.m, batch, &d.s), MAMBA_OK);
    return d;
}

static void close_decoding(decoding *d)
{
    mamba_state_free(d->s);
    mamba_model_free(d->m);
    mamba_context_free(d->ctx);
    free_golden(&d->g);
}

START_TEST(greedy_generation_matches_reference)
{
    decoding dc = open_decoding(models[_i], 1);
    const golden g = dc.g;
    mamba_state_t *s = dc.s;
    mamba_sampler_params_t sp;
    mamba_sampler_params_init(&sp);
    mamba_sampler_t *greedy;
    ck_assert_int_eq(mamba_sampler_create(&sp, &greedy), MAMBA_OK);
    float *logits = malloc(g.vocab * sizeof *logits);
    ck_assert_int_eq(mamba_prefill(s, g.prompt, g.n_prompt, logits), MAMBA_OK);
    double worst = 0;
    for (size_t t = 0; t < g.n_gen; t++) {
        double e = max_abs_diff(logits, g.gen_logits + t * g.vocab, g.vocab);
        if (e > worst) worst = e;
        int32_t tok;
        ck_assert_int_eq(mamba_sample(greedy, logits, g.vocab, &tok), MAMBA_OK);
        ck_assert_msg(tok == g.gen[t], "%s: step %zu chose %d, reference %d", models[_i], t, tok, g.gen[t]);
        if (t + 1 < g.n_gen) ck_assert_int_eq(mamba_step(s, &tok, logits), MAMBA_OK);
    }
    printf("%s decode: %zu tokens identical, per-step logits max abs err %.3g\n", models[_i], g.n_gen, worst);
    ck_assert_double_le(worst, LOGIT_BOUND);
    free(logits);
    mamba_sampler_free(greedy);
    close_decoding(&dc);
}
END_TEST

/* mamba_generate_greedy (the device argmax path on the CPU backend) continues the prompt
 * with the reference's tokens, for two sequences at once. */
START_TEST(generate_greedy_matches_reference)
{
    decoding dc = open_decoding(models[_i], 2);
    const golden g = dc.g;
    mamba_state_t *s = dc.s;
    int32_t *prompts = malloc(2 * g.n_prompt * sizeof *prompts);
    memcpy(prompts, g.prompt, g.n_prompt * sizeof *prompts);
    memcpy(prompts + g.n_prompt, g.prompt, g.n_prompt * sizeof *prompts);
    ck_assert_int_eq(mamba_prefill(s, prompts, g.n_prompt, NULL), MAMBA_OK);
    const size_t n = g.n_gen - 1;
    int32_t first[2] = {g.gen[0], g.gen[0]}, *out = malloc(2 * n * sizeof *out);
    ck_assert_msg(mamba_generate_greedy(s, first, n, out) == MAMBA_OK, "%s", mamba_last_error(dc.ctx));
    for (size_t b = 0; b < 2; b++)
        for (size_t t = 0; t < n; t++)
            ck_assert_msg(out[b * n + t] == g.gen[t + 1], "%s: sequence %zu step %zu chose %d, reference %d",
                          models[_i], b, t, out[b * n + t], g.gen[t + 1]);
    free(out);
    free(prompts);
    close_decoding(&dc);
}
END_TEST

START_TEST(chunked_prefill_equals_one_shot)
{
    golden g = load_golden(models[_i]);
    mamba_context_t *big = cpu_context(0), *small = cpu_context(7);
    mamba_model_t *mb = load_model(big, model_dir(models[_i])), *ms = load_model(small, model_dir(models[_i]));
    float *a = forward_all(mb, &g), *b = forward_all(ms, &g);
    size_t n = g.batch * g.len * g.vocab;
    ck_assert_double_le(max_abs_diff(a, b, n), 1e-5);
    ck_assert_double_le(max_abs_diff(b, g.logits, n), LOGIT_BOUND);
    /* prefill in two calls (state carried across) equals one call */
    mamba_state_t *s1, *s2;
    ck_assert_int_eq(mamba_state_create(mb, g.batch, &s1), MAMBA_OK);
    ck_assert_int_eq(mamba_state_create(ms, g.batch, &s2), MAMBA_OK);
    float *l1 = malloc(g.batch * g.vocab * 4), *l2 = malloc(g.batch * g.vocab * 4);
    ck_assert_int_eq(mamba_prefill(s1, g.ids, g.len, l1), MAMBA_OK);
    size_t cut = g.len / 3;
    int32_t *head = malloc(g.batch * g.len * 4), *tail = malloc(g.batch * g.len * 4);
    for (size_t bb = 0; bb < g.batch; bb++) {
        memcpy(head + bb * cut, g.ids + bb * g.len, cut * 4);
        memcpy(tail + bb * (g.len - cut), g.ids + bb * g.len + cut, (g.len - cut) * 4);
    }
    ck_assert_int_eq(mamba_prefill(s2, head, cut, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(s2, tail, g.len - cut, l2), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(l1, l2, g.batch * g.vocab), 1e-5);
    for (size_t bb = 0; bb < g.batch; bb++)
        ck_assert_double_le(max_abs_diff(l1 + bb * g.vocab, g.logits + (bb * g.len + g.len - 1) * g.vocab, g.vocab),
                            LOGIT_BOUND);
    free(head); free(tail); free(l1); free(l2); free(a); free(b);
    mamba_state_free(s1);
    mamba_state_free(s2);
    mamba_model_free(mb);
    mamba_model_free(ms);
    mamba_context_free(big);
    mamba_context_free(small);
    free_golden(&g);
}
END_TEST


/* A context on the CPU, with its portable kernels only when asked (MAMBA_CPU_PORTABLE): on an
 * AVX-512 machine the decoding GEMV otherwise always takes its AVX-512 version. */
static mamba_context_t *cpu_context_kernels(int portable)
{
    if (portable) setenv("MAMBA_CPU_PORTABLE", "1", 1);
    mamba_context_t *ctx = cpu_context(0);
    unsetenv("MAMBA_CPU_PORTABLE");
    return ctx;
}

/* Steps (the fused mixer step and the decoding GEMV) against the reference forward; _i / 2
 * picks the portable kernels. */
START_TEST(step_by_step_equals_forward)
{
    const char *model = models[_i % N_MODELS];
    const int portable = _i / N_MODELS;
    golden g = load_golden(model);
    mamba_context_t *ctx = cpu_context_kernels(portable);
    mamba_model_t *m = load_model(ctx, model_dir(model));
    float *steps = golden_step_through(m, &g);
    const double worst = max_abs_diff(steps, g.logits, g.batch * g.len * g.vocab);
    printf("%s step-by-step (%s kernels) vs reference forward: max abs err %.3g\n", model,
           portable ? "portable" : "fastest", worst);
    ck_assert_double_le(worst, LOGIT_BOUND);
    free(steps);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free_golden(&g);
}
END_TEST

START_TEST(state_save_and_restore)
{
    golden g = load_golden("tiny");
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = load_model(ctx, model_dir("tiny"));
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(m, 1, &s), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(s, g.prompt, g.n_prompt, NULL), MAMBA_OK);
    size_t bytes;
    ck_assert_int_eq(mamba_state_size(s, &bytes), MAMBA_OK);
    void *saved = malloc(bytes);
    ck_assert_int_eq(mamba_state_read(s, saved, bytes), MAMBA_OK);
    float *a = malloc(g.vocab * 4), *b = malloc(g.vocab * 4);
    int32_t tok = 3;
    ck_assert_int_eq(mamba_step(s, &tok, a), MAMBA_OK);
    ck_assert_int_eq(mamba_step(s, &tok, b), MAMBA_OK);
    ck_assert_double_gt(max_abs_diff(a, b, g.vocab), 1e-4); /* the state moved */
    ck_assert_int_eq(mamba_state_write(s, saved, bytes), MAMBA_OK);
    ck_assert_int_eq(mamba_step(s, &tok, b), MAMBA_OK);
    ck_assert_double_eq(max_abs_diff(a, b, g.vocab), 0);
    /* reset gives the empty state: a step equals the forward of one token */
    ck_assert_int_eq(mamba_state_reset(s), MAMBA_OK);
    ck_assert_int_eq(mamba_step(s, &tok, a), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(m, &tok, 1, 1, MAMBA_LOGITS_LAST, b), MAMBA_OK);
    ck_assert_double_le(max_abs_diff(a, b, g.vocab), 1e-6);
    /* a state of another shape is refused */
    mamba_state_t *s2;
    ck_assert_int_eq(mamba_state_create(m, 2, &s2), MAMBA_OK);
    size_t bytes2;
    mamba_state_size(s2, &bytes2);
    void *other = calloc(1, bytes2);
    ck_assert_int_eq(mamba_state_read(s2, other, bytes2), MAMBA_OK);
    ck_assert_int_eq(mamba_state_write(s, other, bytes2), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_state_write(s, saved, bytes - 1), MAMBA_ERR_INVALID_ARGUMENT);
    free(other); free(saved); free(a); free(b);
    mamba_state_free(s2);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free_golden(&g);
}
END_TEST

/* ---- checkpoint variants, each compared with the original's logits ---- */

static int to_half(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)name;
    mamba_dtype_t dt = *(mamba_dtype_t *)user;
    if (t->dtype != MAMBA_F32) return 1;
    size_t n = t->nbytes / 4;
    uint16_t *h = malloc(n * 2 + 2);
    const float *f = *data;
    for (size_t i = 0; i < n; i++) h[i] = dt == MAMBA_F16 ? mamba_f32_to_f16(f[i]) : mamba_f32_to_bf16(f[i]);
    free(*data);
    *data = h;
    t->dtype = dt;
    t->nbytes = n * 2;
    return 1;
}

/* The f32 values that a half checkpoint holds, exactly. */
static int round_to_half(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)name;
    mamba_dtype_t dt = *(mamba_dtype_t *)user;
    float *f = *data;
    for (size_t i = 0; i < t->nbytes / 4; i++)
        f[i] = dt == MAMBA_F16 ? mamba_f16_to_f32(mamba_f32_to_f16(f[i])) : mamba_bf16_to_f32(mamba_f32_to_bf16(f[i]));
    return 1;
}

static float *forward_dir(const char *dir, const golden *g)
{
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m = load_model(ctx, dir);
    float *out = forward_all(m, g);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return out;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The CPU kernels' branch-free 16-bit conversions against the library's reference ones, on
 * every one of the 65536 bit patterns (subnormals, infinities and NaNs included). */
START_TEST(half_conversions_exact)
{
    for (uint32_t i = 0; i < 65536; i++) {
        const uint16_t h = (uint16_t)i;
        const float a = f16_to_f32_fast(h), b = mamba_f16_to_f32(h);
        if (isnan(b)) ck_assert_msg(isnan(a), "f16 0x%04x: %g, expected NaN", i, (double)a);
        else ck_assert_msg(float_bits(a) == float_bits(b), "f16 0x%04x: %a, expected %a", i, (double)a, (double)b);
        const float c = bf16_to_f32_fast(h), d = mamba_bf16_to_f32(h);
        if (isnan(d)) ck_assert_msg(isnan(c), "bf16 0x%04x: %g, expected NaN", i, (double)c);
        else ck_assert_msg(float_bits(c) == float_bits(d), "bf16 0x%04x: %a, expected %a", i, (double)c, (double)d);
    }
}
END_TEST

START_TEST(half_precision_checkpoints)
{
    const mamba_dtype_t dts[] = {MAMBA_F16, MAMBA_BF16};
    golden g = load_golden("small");
    char *dir = tmpdir_new(), half_dir[4200], ref_dir[4200], path[4300];
    snprintf(half_dir, sizeof half_dir, "%s/half", dir);
    snprintf(ref_dir, sizeof ref_dir, "%s/ref", dir);
    mkdir(half_dir, 0700);
    mkdir(ref_dir, 0700);
    for (int k = 0; k < 2; k++) {
        mamba_dtype_t dt = dts[k];
        snprintf(path, sizeof path, "%s/model.safetensors", half_dir);
        rewrite_checkpoint(data_path(0, "models/small/model.safetensors"), path, to_half, &dt, 0, 0);
        copy_file(data_path(0, "models/small/config.json"), cat_path(path, sizeof path, half_dir, "config.json"));
        snprintf(path, sizeof path, "%s/model.safetensors", ref_dir);
        rewrite_checkpoint(data_path(0, "models/small/model.safetensors"), path, round_to_half, &dt, 0, 0);
        copy_file(data_path(0, "models/small/config.json"), cat_path(path, sizeof path, ref_dir, "config.json"));
        mamba_context_t *ctx = cpu_context(0);
        mamba_model_t *m = load_model(ctx, half_dir);
        mamba_model_info_t info;
        mamba_model_info(m, &info);
        ck_assert_int_eq(info.dtype, dt);
        mamba_model_free(m);
        mamba_context_free(ctx);
        float *h = forward_dir(half_dir, &g), *r = forward_dir(ref_dir, &g);
        size_t n = g.batch * g.len * g.vocab;
        double e = max_abs_diff(h, r, n);
        printf("%s checkpoint vs the same values in f32: max abs err %.3g; vs the f32 reference: %.3g\n",
               mamba_dtype_name(dt), e, max_abs_diff(h, g.logits, n));
        ck_assert_double_le(e, 1e-5);
        /* and it is still the same model, within the rounding of its weights */
        ck_assert_double_le(nmse(h, g.logits, n), dt == MAMBA_F16 ? 1e-5 : 1e-3);
        /* decoding reads the 16-bit weights in place (GEMV, mixer step), the forward above
         * through f32 copies (GEMM): the same sums in another order, with either kernel set */
        for (int portable = 0; portable < 2; portable++) {
            mamba_context_t *c2 = cpu_context_kernels(portable);
            mamba_model_t *m2 = load_model(c2, half_dir);
            float *steps = golden_step_through(m2, &g);
            const double es = max_abs_diff(steps, h, n);
            printf("%s decoding (%s kernels) vs its forward: max abs err %.3g\n", mamba_dtype_name(dt),
                   portable ? "portable" : "fastest", es);
            ck_assert_double_le(es, 5e-5);
            free(steps);
            mamba_model_free(m2);
            mamba_context_free(c2);
        }
        free(h);
        free(r);
    }
    tmpdir_remove(dir);
    free_golden(&g);
}
END_TEST

static int rename_original(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)t; (void)data; (void)user;
    if (strcmp(name, "backbone.embeddings.weight") == 0) memcpy(name, "backbone.embedding.weight", sizeof "backbone.embedding.weight");
    return 1;
}

START_TEST(original_format_checkpoint)
{
    golden g = load_golden("tiny");
    char *dir = tmpdir_new(), path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rewrite_checkpoint(data_path(0, "models/tiny/model.safetensors"), path, rename_original, NULL, 0, 0);
    /* state-spaces config.json: d_model, n_layer, ssm_cfg, vocab padded to a multiple of 8 */
    /* dt_rank would default to ceil(32/16) = 2; the tiny fixture has 4 */
    write_config(dir, "{\"d_model\": 32, \"n_layer\": 2, \"vocab_size\": 61, \"ssm_cfg\": {\"d_state\": 8, \"dt_rank\": 4},"
                      " \"pad_vocab_size_multiple\": 8, \"tie_embeddings\": true}");
    float *a = forward_dir(dir, &g);
    ck_assert_double_le(max_abs_diff(a, g.logits, g.batch * g.len * g.vocab), LOGIT_BOUND);
    free(a);
    tmpdir_remove(dir);
    free_golden(&g);
}
END_TEST

START_TEST(sharded_and_untied_checkpoints)
{
    golden g = load_golden("tiny");
    const size_t n = g.batch * g.len * g.vocab;
    char *dir = tmpdir_new(), path[4200];
    /* two shards and an index */
    mamba_tensor_file_t *f;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "models/tiny/model.safetensors"), &f), MAMBA_OK);
    size_t count = mamba_tensor_file_count(f);
    char *index = malloc(65536);
    size_t k = (size_t)snprintf(index, 65536, "{\"metadata\": {}, \"weight_map\": {");
    for (size_t i = 0; i < count; i++) {
        mamba_tensor_t t;
        mamba_tensor_file_get(f, i, &t);
        k += (size_t)snprintf(index + k, 65536 - k, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "",
                              t.name, i < count / 2 ? 1 : 2);
    }
    snprintf(index + k, 65536 - k, "}}");
    mamba_tensor_file_close(f);
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    rewrite_checkpoint(data_path(0, "models/tiny/model.safetensors"), path, NULL, NULL, 0, count / 2);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    rewrite_checkpoint(data_path(0, "models/tiny/model.safetensors"), path, NULL, NULL, count / 2, count);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    write_file(path, index, strlen(index));
    copy_file(data_path(0, "models/tiny/config.json"), cat_path(path, sizeof path, dir, "config.json"));
    float *a = forward_dir(dir, &g);
    ck_assert_double_le(max_abs_diff(a, g.logits, n), LOGIT_BOUND);
    free(a);
    free(index);
    tmpdir_remove(dir);

    /* a separate lm_head equal to the embedding */
    dir = tmpdir_new();
    mamba_tensor_file_open(data_path(0, "models/tiny/model.safetensors"), &f);
    mamba_tensor_t emb;
    mamba_tensor_file_find(f, "backbone.embeddings.weight", &emb);
    mamba_tensor_t all[64];
    count = mamba_tensor_file_count(f);
    for (size_t i = 0; i < count; i++) mamba_tensor_file_get(f, i, &all[i]);
    all[count] = emb;
    all[count].name = "lm_head.weight";
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_int_eq(mamba_tensor_file_write(path, all, count + 1, NULL, 0), MAMBA_OK);
    mamba_tensor_file_close(f);
    write_config(dir, "{\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64, \"state_size\": 8,"
                      " \"time_step_rank\": 4, \"tie_word_embeddings\": false}");
    a = forward_dir(dir, &g);
    ck_assert_double_le(max_abs_diff(a, g.logits, n), LOGIT_BOUND);
    free(a);
    /* explicit files */
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m;
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    ck_assert_msg(mamba_model_load_files(ctx, cfg, path, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    mamba_model_free(m);
    mamba_context_free(ctx);
    tmpdir_remove(dir);
    free_golden(&g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, forward_matches_reference, 0, N_MODELS);
    tcase_add_loop_test(tc, greedy_generation_matches_reference, 0, N_MODELS);
    tcase_add_loop_test(tc, generate_greedy_matches_reference, 0, N_MODELS);
    tcase_add_loop_test(tc, chunked_prefill_equals_one_shot, 0, N_MODELS);
    tcase_add_loop_test(tc, step_by_step_equals_forward, 0, 2 * N_MODELS);
    tcase_add_test(tc, half_conversions_exact);
    tcase_add_test(tc, state_save_and_restore);
    tcase_add_test(tc, half_precision_checkpoints);
    tcase_add_test(tc, original_format_checkpoint);
    tcase_add_test(tc, sharded_and_untied_checkpoints);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
