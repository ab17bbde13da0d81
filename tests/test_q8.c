/* 8-bit weights (Q8_0) on one backend (argv[1]: cpu, opencl, cuda): the fixture models quantized
 * at load against their fp32 logits (forward and step by step), against the CPU's Q8_0 logits on
 * a GPU; on the CPU also the quantizer against a hand computation, the save/load round trip and
 * malformed Q8_0 files. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"
#include "api/dtype.h"

/* The accuracy bounds against the fp32 logits. */
#define NMSE_BOUND 1e-3
#define ARGMAX_AGREEMENT 0.98

static const char *const models[] = {"tiny", "small", "falcon_tiny"};
#define N_MODELS 3

static const char *backend = "cpu";

static mamba_context_t *open_ctx(const char *name, mamba_weights_t weights)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = name;
    o.weights = weights;
    mamba_context_t *ctx = NULL;
    ck_assert_msg(mamba_context_create(&o, &ctx) == MAMBA_OK, "%s", mamba_last_error(NULL));
    return ctx;
}

static const char *model_dir(int slot, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", name);
    return data_path(slot, rel);
}

static mamba_model_t *load(mamba_context_t *ctx, const char *dir)
{
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    return m;
}

static float *forward_all(mamba_model_t *m, const golden *g)
{
    float *out = malloc(g->batch * g->len * g->vocab * sizeof *out);
    ck_assert_msg(mamba_forward(m, g->ids, g->batch, g->len, MAMBA_LOGITS_ALL, out) == MAMBA_OK, "%s",
                  mamba_last_error(NULL));
    return out;
}


/* The fraction of positions whose argmax (first on ties) agrees with ref's, over the positions
 * whose top-2 margin in ref is at least min_margin (*counted of them). */
static double argmax_agreement(const float *a, const float *ref, size_t rows, size_t vocab, double min_margin,
                               size_t *counted)
{
    size_t same = 0, n = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *x = a + r * vocab, *y = ref + r * vocab;
        size_t ia = 0, ib = 0;
        for (size_t v = 1; v < vocab; v++) {
            if (x[v] > x[ia]) ia = v;
            if (y[v] > y[ib]) ib = v;
        }
        float second = -INFINITY;
        for (size_t v = 0; v < vocab; v++)
            if (v != ib && y[v] > second) second = y[v];
        if (y[ib] - second < min_margin) continue;
        n++;
        same += ia == ib;
    }
    *counted = n;
    return n ? (double)same / (double)n : 1.0;
}

/* The fixtures are models of random weights, whose logits are nearly flat: a position whose top
 * two logits lie closer than the weights' rounding moves them flips with any rounding (bf16
 * weights agree on 98.65%, 98.75% and 100% of the positions of tiny, small and falcon_tiny).
 * The bound holds on the positions whose top-2 margin in the reference is at least twice the
 * logits' rms error; every position's agreement is printed, and held to RAW_AGREEMENT. */
#define RAW_AGREEMENT 0.94

static void check_accuracy(const char *what, const float *got, const golden *g)
{
    const size_t rows = g->batch * g->len, n = rows * g->vocab;
    const double e = nmse(got, g->logits, n);
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += ((double)got[i] - g->logits[i]) * ((double)got[i] - g->logits[i]);
    const double rms = sqrt(ss / (double)n);
    size_t all, clear;
    const double raw = argmax_agreement(got, g->logits, rows, g->vocab, -1.0, &all);
    const double agree = argmax_agreement(got, g->logits, rows, g->vocab, 2 * rms, &clear);
    printf("%s %s: nmse vs fp32 %.3g (bound %g), argmax agreement %.4f of all %zu positions (bound %.2f), %.4f of the "
           "%zu whose margin is over 2 x the rms error %.3g (bound %.2f)\n",
           backend, what, e, NMSE_BOUND, raw, all, RAW_AGREEMENT, agree, clear, rms, ARGMAX_AGREEMENT);
    ck_assert_double_le(e, NMSE_BOUND);
    ck_assert_double_ge(raw, RAW_AGREEMENT);
    ck_assert_double_ge(agree, ARGMAX_AGREEMENT);
}

START_TEST(fixture_accuracy)
{
    golden g = load_golden(models[_i]);
    mamba_context_t *ctx = open_ctx(backend, MAMBA_WEIGHTS_Q8);
    mamba_model_t *m = load(ctx, model_dir(0, models[_i]));
    mamba_model_info_t info;
    ck_assert_int_eq(mamba_model_info(m, &info), MAMBA_OK);
    ck_assert_int_eq(info.dtype, MAMBA_Q8);
    char what[96];
    float *fw = forward_all(m, &g);
    snprintf(what, sizeof what, "%s forward", models[_i]);
    check_accuracy(what, fw, &g);
    float *st = golden_step_through(m, &g);
    snprintf(what, sizeof what, "%s step by step", models[_i]);
    check_accuracy(what, st, &g);
    /* the same quantized weights through the GEMM (dequantized) and the GEMV (read in place; the
     * CPU's AVX-512 one rounds x to 16 bits a block, about 1.5e-5 of the block's largest) */
#define DECODE_BOUND 1e-6
    const size_t n = g.batch * g.len * g.vocab;
    const double d = nmse(st, fw, n);
    printf("%s %s: decoding vs its forward: nmse %.3g\n", backend, models[_i], d);
    ck_assert_double_le(d, DECODE_BOUND);
    /* one sequence alone: the backends' batch-1 GEMV kernels */
    mamba_state_t *one;
    ck_assert_int_eq(mamba_state_create(m, 1, &one), MAMBA_OK);
    float *lg = malloc(g.vocab * sizeof *lg);
    double worst = 0;
    for (size_t t = 0; t < g.len; t++) {
        ck_assert_int_eq(mamba_step(one, &g.ids[t], lg), MAMBA_OK);
        const double e1 = nmse(lg, fw + t * g.vocab, g.vocab);
        worst = e1 > worst ? e1 : worst;
    }
    printf("%s %s: batch-1 decoding vs the forward: worst position's nmse %.3g\n", backend, models[_i], worst);
    ck_assert_double_le(worst, DECODE_BOUND);
    free(lg);
    mamba_state_free(one);
    if (strcmp(backend, "cpu") != 0) {
        /* the CPU's Q8_0 forward: the same weights, bit for bit */
        mamba_context_t *cc = open_ctx("cpu", MAMBA_WEIGHTS_Q8);
        mamba_model_t *cm = load(cc, model_dir(0, models[_i]));
        float *ref = forward_all(cm, &g);
        const double e = nmse(fw, ref, n);
        printf("%s %s: forward vs the CPU's Q8_0 forward: nmse %.3g\n", backend, models[_i], e);
        ck_assert_double_le(e, 1e-8);
        free(ref);
        mamba_model_free(cm);
        mamba_context_free(cc);
    }
    free(st);
    free(fw);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free_golden(&g);
}
END_TEST

/* Blocks whose max|w| is 127/16: scale 1/16 exactly in fp16, q = w * 16 rounded half away from
 * zero; an all-zero block; a block whose scale fp16 rounds. */
START_TEST(quantize_known_matrix)
{
    float w[2 * 64];
    for (int i = 0; i < 32; i++) w[i] = (float)(i - 16) / 32.0f; /* halves of 1/16: -8 .. 7.5 steps */
    w[5] = 127.0f / 16.0f;
    for (int i = 32; i < 64; i++) w[i] = 0.0f;
    for (int i = 64; i < 128; i++) w[i] = (float)((i * 37) % 101 - 50) / 100.0f; /* max |w| 0.5 */
    unsigned char q[mb_q8_bytes(2, 64)];
    ck_assert_uint_eq(sizeof q, 256 + 2 * 2 * 2);
    ck_assert_int_eq((int)mb_q8_quantize(q, w, 2, 64), 0);
    const int8_t *v = (const int8_t *)q;
    uint16_t s[4];
    memcpy(s, q + 256, sizeof s);
    ck_assert_uint_eq(s[0], 0x2c00); /* 1/16 */
    for (int i = 0; i < 32; i++) {
        /* (i - 16) / 2 steps: .5 rounds away from zero */
        const int half = i - 16, want = i == 5 ? 127 : (half < 0 ? -((-half + 1) / 2) : (half + 1) / 2);
        ck_assert_int_eq(v[i], want);
    }
    ck_assert_uint_eq(s[1], 0);
    for (int i = 32; i < 64; i++) ck_assert_int_eq(v[i], 0);
    /* block 2 and 3 (row 1): scale = fp16(max|w| / 127), q = round(w / scale), by hand in double */
    for (int b = 2; b < 4; b++) {
        double amax = 0;
        for (int i = 0; i < 32; i++) amax = fmax(amax, fabs((double)w[b * 32 + i]));
        ck_assert_uint_eq(s[b], mb_f32_to_f16((float)(amax / 127.0)));
        const double d = mb_f16_to_f32(s[b]);
        for (int i = 0; i < 32; i++) {
            double want = round(w[b * 32 + i] / d);
            want = want > 127 ? 127 : want < -127 ? -127 : want;
            ck_assert_int_eq(v[b * 32 + i], (int)want);
        }
    }
    float back[128];
    mb_mat_to_f32(back, q, MAMBA_Q8, 2, 64);
    for (int i = 0; i < 32; i++) ck_assert_float_eq(back[i], (float)v[i] / 16.0f);
    for (int i = 64; i < 128; i++) ck_assert_float_le(fabsf(back[i] - w[i]), 0.5f * mb_f16_to_f32(s[i / 32]) + 1e-7f);
    /* a value no fp16 scale reaches, and a NaN */
    w[70] = 1e7f;
    ck_assert_int_eq((int)mb_q8_quantize(q, w, 2, 64), -2);
    w[70] = NAN;
    ck_assert_int_eq((int)mb_q8_quantize(q, w, 2, 64), -2);
}
END_TEST

/* Quantize model name at load, save it into dir (with its config): a Q8_0 checkpoint. */
static void save_q8(const char *name, const char *dir)
{
    mamba_context_t *ctx = open_ctx("cpu", MAMBA_WEIGHTS_Q8);
    mamba_model_t *m = load(ctx, model_dir(0, name));
    char path[4300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_msg(mamba_model_save_weights(m, path) == MAMBA_OK, "%s", mamba_last_error(ctx));
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s/config.json", name);
    snprintf(path, sizeof path, "%s/config.json", dir);
    copy_file(data_path(1, rel), path);
    mamba_model_free(m);
    mamba_context_free(ctx);
}

START_TEST(save_load_round_trip)
{
    golden g = load_golden(models[_i]);
    char *dir = tmpdir_new(), a[4200], b[4200], path[4300];
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    ck_assert_int_eq(mkdir(a, 0700), 0);
    ck_assert_int_eq(mkdir(b, 0700), 0);
    save_q8(models[_i], a);
    /* the Q8_0 file loads as Q8_0 without the option, and saves to the same bytes */
    mamba_context_t *ctx = open_ctx("cpu", MAMBA_WEIGHTS_STORED);
    snprintf(path, sizeof path, "%s/model.safetensors", a);
    mamba_tensor_file_t *f;
    ck_assert_int_eq(mamba_tensor_file_open(path, &f), MAMBA_OK);
    ck_assert_str_eq(mamba_tensor_file_metadata(f, "libmamba.weights"), "q8_0");
    mamba_tensor_t t;
    ck_assert_int_eq(mamba_tensor_file_find(f, "backbone.layers.0.mixer.in_proj.weight", &t), MAMBA_OK);
    ck_assert_int_eq(t.dtype, MAMBA_I8);
    const int64_t rows = t.shape[0], cols = t.shape[1];
    ck_assert_int_eq(mamba_tensor_file_find(f, "backbone.layers.0.mixer.in_proj.weight.scale", &t), MAMBA_OK);
    ck_assert_int_eq(t.dtype, MAMBA_F16);
    ck_assert_int_eq(t.ndim, 2);
    ck_assert_int_eq(t.shape[0], rows);
    ck_assert_int_eq(t.shape[1], cols / 32);
    ck_assert_int_eq(mamba_tensor_file_find(f, "backbone.layers.0.mixer.dt_proj.weight", &t), MAMBA_OK);
    ck_assert_int_eq(t.dtype, MAMBA_F32); /* kept */
    mamba_tensor_file_close(f);
    mamba_model_t *m = load(ctx, a);
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    ck_assert_int_eq(info.dtype, MAMBA_Q8);
    char path_b[4300];
    snprintf(path_b, sizeof path_b, "%s/model.safetensors", b);
    ck_assert_msg(mamba_model_save_weights(m, path_b) == MAMBA_OK, "%s", mamba_last_error(ctx));
    size_t la, lb;
    char *ba = read_file_all(path, &la), *bb = read_file_all(path_b, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_int_eq(memcmp(ba, bb, la), 0);
    free(ba);
    free(bb);
    /* and it computes what the model quantized at load computes, bit for bit */
    float *saved = forward_all(m, &g);
    mamba_context_t *c2 = open_ctx("cpu", MAMBA_WEIGHTS_Q8);
    mamba_model_t *m2 = load(c2, model_dir(0, models[_i]));
    float *direct = forward_all(m2, &g);
    ck_assert_int_eq(memcmp(saved, direct, g.batch * g.len * g.vocab * sizeof *saved), 0);
    free(saved);
    free(direct);
    mamba_model_free(m2);
    mamba_context_free(c2);
    mamba_model_free(m);
    mamba_context_free(ctx);
    tmpdir_remove(dir);
    free_golden(&g);
}
END_TEST

/* Rewrite src's tensors into dst with tensor `name` reshaped to 1-D (or dropped: drop) and the
 * metadata tag tag (NULL: none). */
static void rewrite(const char *src, const char *dst, const char *name, int drop, const char *tag)
{
    mamba_tensor_file_t *f;
    ck_assert_int_eq(mamba_tensor_file_open(src, &f), MAMBA_OK);
    const size_t n = mamba_tensor_file_count(f);
    mamba_tensor_t *t = calloc(n, sizeof *t);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(mamba_tensor_file_get(f, i, &t[k]), MAMBA_OK);
        if (name && strcmp(t[k].name, name) == 0) {
            if (drop) continue;
            t[k].shape[0] *= t[k].shape[1];
            t[k].ndim = 1;
        }
        k++;
    }
    const char *meta[] = {"libmamba.weights", tag};
    ck_assert_int_eq(mamba_tensor_file_write(dst, t, k, meta, tag ? 1 : 0), MAMBA_OK);
    free(t);
    mamba_tensor_file_close(f);
}

static void expect_refused(const char *dir, mamba_status_t want, const char *part1, const char *part2)
{
    mamba_context_t *ctx = open_ctx("cpu", MAMBA_WEIGHTS_STORED);
    mamba_model_t *m = NULL;
    const mamba_status_t st = mamba_model_load(ctx, dir, &m);
    printf("refused: %s\n", mamba_last_error(ctx));
    ck_assert_int_eq(st, want);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(mamba_last_error(ctx), part1) && strstr(mamba_last_error(ctx), part2), "%s",
                  mamba_last_error(ctx));
    mamba_context_free(ctx);
}

START_TEST(bad_q8_files)
{
    char *dir = tmpdir_new(), good[4200], bad[4200], src[4300], dst[4300];
    snprintf(good, sizeof good, "%s/good", dir);
    snprintf(bad, sizeof bad, "%s/bad", dir);
    ck_assert_int_eq(mkdir(good, 0700), 0);
    ck_assert_int_eq(mkdir(bad, 0700), 0);
    save_q8("tiny", good);
    snprintf(src, sizeof src, "%s/model.safetensors", good);
    snprintf(dst, sizeof dst, "%s/config.json", bad);
    copy_file(data_path(1, "models/tiny/config.json"), dst);
    snprintf(dst, sizeof dst, "%s/model.safetensors", bad);
    const char *scale = "backbone.layers.1.mixer.out_proj.weight.scale";
    rewrite(src, dst, scale, 0, "q8_0");
    expect_refused(bad, MAMBA_ERR_MODEL, scale, "expected F16 (32, 2)");
    rewrite(src, dst, scale, 1, "q8_0");
    expect_refused(bad, MAMBA_ERR_MODEL, scale, "missing");
    rewrite(src, dst, NULL, 0, "q4_0");
    expect_refused(bad, MAMBA_ERR_FORMAT, "libmamba.weights", "'q4_0'");
    rewrite(src, dst, NULL, 0, NULL);
    expect_refused(bad, MAMBA_ERR_FORMAT, "backbone.embeddings.weight", "is I8");
    tmpdir_remove(dir);
}
END_TEST

/* A synthetic Q8_0 model decodes as it forwards; the portable GEMV agrees with the AVX-512 or
 * AVX2 one (whichever the machine runs). d_model 320: rows of 10 and 20 blocks of 32, so the
 * AVX-512 GEMV's 16-block groups run with 4-block and single-block remainders after them. */
START_TEST(synthetic_and_portable)
{
    golden g = load_golden("small");
    mamba_config_t cfg;
    mamba_config_init(&cfg);
    cfg.d_model = 320;
    cfg.n_layer = 2;
    cfg.vocab_size = (int)g.vocab;
    float *ref = NULL;
    for (int portable = 0; portable < 2; portable++) {
        if (portable) setenv("MAMBA_CPU_PORTABLE", "1", 1);
        mamba_context_t *ctx = open_ctx("cpu", MAMBA_WEIGHTS_STORED);
        unsetenv("MAMBA_CPU_PORTABLE");
        mamba_model_t *m;
        ck_assert_int_eq(mamba_model_create_synthetic(ctx, &cfg, MAMBA_Q8, 7, &m), MAMBA_OK);
        mamba_model_info_t info;
        mamba_model_info(m, &info);
        ck_assert_int_eq(info.dtype, MAMBA_Q8);
        float *fw = forward_all(m, &g), *st = golden_step_through(m, &g);
        const size_t n = g.batch * g.len * g.vocab;
        printf("synthetic Q8_0 (%s): decoding vs forward nmse %.3g\n", portable ? "portable" : "fastest",
               nmse(st, fw, n));
        ck_assert_double_le(nmse(st, fw, n), DECODE_BOUND);
        if (ref) ck_assert_double_le(nmse(st, ref, n), DECODE_BOUND);
        free(ref);
        ref = st;
        free(fw);
        mamba_model_free(m);
        mamba_context_free(ctx);
    }
    free(ref);
    free_golden(&g);
}
END_TEST

/* A Q8_0 matrix of many rows read at batch 1 (a vocabulary of 9,000: CUDA's GEMV then gives
 * each warp several rows of the LM head): one sequence's steps against the forward of the same
 * ids (the dequantizing GEMM), position by position. */
START_TEST(wide_matrix_batch1)
{
    enum { VOCAB = 9000, LEN = 12 };
    mamba_config_t cfg;
    mamba_config_init(&cfg);
    cfg.d_model = 64;
    cfg.n_layer = 1;
    cfg.vocab_size = VOCAB;
    mamba_context_t *ctx = open_ctx(backend, MAMBA_WEIGHTS_STORED);
    mamba_model_t *m;
    ck_assert_msg(mamba_model_create_synthetic(ctx, &cfg, MAMBA_Q8, 11, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    int32_t ids[LEN];
    for (int t = 0; t < LEN; t++) ids[t] = (t * 2741 + 17) % VOCAB;
    float *fw = malloc((size_t)LEN * VOCAB * sizeof *fw), *lg = malloc((size_t)VOCAB * sizeof *lg);
    ck_assert_msg(mamba_forward(m, ids, 1, LEN, MAMBA_LOGITS_ALL, fw) == MAMBA_OK, "%s", mamba_last_error(ctx));
    mamba_state_t *one;
    ck_assert_int_eq(mamba_state_create(m, 1, &one), MAMBA_OK);
    double worst = 0;
    for (int t = 0; t < LEN; t++) {
        ck_assert_msg(mamba_step(one, &ids[t], lg) == MAMBA_OK, "%s", mamba_last_error(ctx));
        const double e = nmse(lg, fw + (size_t)t * VOCAB, VOCAB);
        worst = e > worst ? e : worst;
    }
    printf("%s: Q8_0, vocabulary %d, batch-1 decoding vs the forward: worst nmse %.3g\n", backend, VOCAB, worst);
    ck_assert_double_le(worst, DECODE_BOUND);
    mamba_state_free(one);
    free(fw);
    free(lg);
    mamba_model_free(m);
    mamba_context_free(ctx);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s cpu|opencl|cuda\n", argv[0]);
        return 2;
    }
    backend = argv[1];
    const int cpu = strcmp(backend, "cpu") == 0;
    if (!cpu) {
        mamba_backend_info_t be[8];
        size_t n = 0;
        if (mamba_list_backends(be, 8, &n) != MAMBA_OK) n = 0;
        int available = 0;
        for (size_t i = 0; i < n && i < 8; i++)
            if (strcmp(be[i].name, backend) == 0) available = be[i].available;
        if (!available) {
            printf("%s: not available\n", backend);
            return backend_required(backend) ? 1 : TEST_SKIP;
        }
    }
    Suite *s = suite_create("q8");
    TCase *tc = tcase_create(backend);
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, fixture_accuracy, 0, N_MODELS);
    tcase_add_test(tc, wide_matrix_batch1);
    if (cpu) {
        tcase_add_test(tc, quantize_known_matrix);
        tcase_add_loop_test(tc, save_load_round_trip, 0, N_MODELS);
        tcase_add_test(tc, bad_q8_files);
        tcase_add_test(tc, synthetic_and_portable);
    }
    suite_add_tcase(s, tc);
    /* a GPU runtime cannot be used in a child forked after the parent initialized it */
    return run_suite(s, cpu);
}
