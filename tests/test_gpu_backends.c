/* Cross-backend checks: a GPU backend runs the fixtures and agrees with the CPU reference on
 * random inputs of awkward sizes. A backend that is absent is reported as skipped (exit 77),
 * unless MAMBA_TEST_REQUIRE lists it (for the GPU machine): then its absence is a failure. */
#define _GNU_SOURCE /* dladdr */
#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/backend.h"
#include "api/scan_bwd.h"
#include "testutil.h"

/* The bounds of the CPU suites: the GPU is held to the same float64 references. */
#define LOGIT_BOUND 1e-4
#define SCAN_REL_BOUND 1e-5

/* 16-bit compute (issue 17): NMSE of the logits against fp32 arithmetic on the same weights,
 * and the share of rows whose argmax agrees */
#define NMSE_F16_BOUND 1e-4
#define NMSE_BF16_BOUND 1e-3
#define ARGMAX_AGREE_MIN 0.99

static const char *backend;
/* the compute option of the GPU backend's contexts (the CPU's computes in fp32 regardless) */
static mamba_compute_t gpu_compute = MAMBA_COMPUTE_F32;

/* before each test: fp32 arithmetic unless the test asks for 16 bits (a failed test that had
 * asked must not leave it on for the next: the GPU suites share one process) */
static void reset_compute(void) { gpu_compute = MAMBA_COMPUTE_F32; }

static mamba_context_t *open_ctx(const char *name, size_t chunk)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = name;
    if (strcmp(name, "cpu") != 0) o.compute = gpu_compute;
    o.prefill_chunk = chunk;
    mamba_context_t *ctx = NULL;
    ck_assert_msg(mamba_context_create(&o, &ctx) == MAMBA_OK, "%s", mamba_last_error(NULL));
    return ctx;
}

static mamba_model_t *load(mamba_context_t *ctx, const char *rel)
{
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_load(ctx, data_path(1, rel), &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    return m;
}

/* A model with synthetic weights on the named backend, in a context of its own (*ctx). */
static mamba_model_t *synthetic_on(const char *name, const mamba_config_t *c, mamba_dtype_t dt, uint64_t seed,
                                   mamba_context_t **ctx)
{
    *ctx = open_ctx(name, 0);
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_create_synthetic(*ctx, c, dt, seed, &m) == MAMBA_OK, "%s", mamba_last_error(*ctx));
    return m;
}

static void close_model(mamba_model_t *m, mamba_context_t *ctx)
{
    mamba_model_free(m);
    mamba_context_free(ctx);
}

/* The backend's logits (res[1]) against the CPU's (res[0]) within LOGIT_BOUND; frees both. */
static void expect_cpu_logits(float *res[2], size_t n, const char *what)
{
    double e = max_abs_diff(res[1], res[0], n);
    printf("%s %s vs cpu: max abs err %.3g (max %.3g), nmse %.3g\n", backend, what, e, max_abs(res[0], n),
           nmse(res[1], res[0], n));
    ck_assert_double_le(e, LOGIT_BOUND);
    free(res[0]);
    free(res[1]);
}

/* The backend's logits (res[1]) computed in 16 bits against the CPU's fp32 arithmetic on the same
 * 16-bit weights (res[0]), rows of vocab: NMSE within the dtype's bound and the argmax equal on
 * at least ARGMAX_AGREE_MIN of the rows; frees both. */
static void expect_cpu_logits_16(float *res[2], size_t n, size_t vocab, mamba_dtype_t dt, const char *what)
{
    const double e = nmse(res[1], res[0], n), bound = dt == MAMBA_F16 ? NMSE_F16_BOUND : NMSE_BF16_BOUND;
    size_t rows = n / vocab, agree = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t a = 0, b = 0;
        for (size_t v = 1; v < vocab; v++) {
            if (res[0][r * vocab + v] > res[0][r * vocab + a]) a = v;
            if (res[1][r * vocab + v] > res[1][r * vocab + b]) b = v;
        }
        agree += a == b;
    }
    printf("%s %s, 16-bit compute, vs cpu fp32: nmse %.3g (bound %.0e), argmax agrees on %zu of %zu rows, max abs "
           "err %.3g\n",
           backend, what, e, bound, agree, rows, max_abs_diff(res[1], res[0], n));
    ck_assert_double_le(e, bound);
    ck_assert_double_ge((double)agree, ARGMAX_AGREE_MIN * (double)rows);
    free(res[0]);
    free(res[1]);
}

/* Mamba, Falcon-Mamba (its dt, B and C norms: rmsnorm_segments and the fused step's bc_norm), and
 * a Mamba checkpoint stored as pytorch_model.bin */
static const char *const models[] = {"models/tiny", "models/small", "models/falcon_tiny", "models/tiny_bin"};
#define N_MODELS 4

START_TEST(fixture_forward)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/golden.safetensors", models[_i]);
    mamba_tensor_file_t *g;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &g), MAMBA_OK);
    size_t n_ref;
    int32_t *ids = file_ids(g, "input_ids", NULL);
    float *ref = file_f32(g, "logits", &n_ref);
    mamba_tensor_t t;
    mamba_tensor_file_find(g, "logits", &t);
    const size_t B = (size_t)t.shape[0], L = (size_t)t.shape[1];
    /* one-shot, and in chunks of 7 tokens with the state carried */
    const size_t chunks[2] = {0, 7};
    for (int k = 0; k < 2; k++) {
        mamba_context_t *ctx = open_ctx(backend, chunks[k]);
        mamba_model_t *m = load(ctx, models[_i]);
        float *out = malloc(n_ref * sizeof *out);
        ck_assert_msg(mamba_forward(m, ids, B, L, MAMBA_LOGITS_ALL, out) == MAMBA_OK, "%s", mamba_last_error(ctx));
        double e = max_abs_diff(out, ref, n_ref);
        printf("%s %s forward (chunk %zu): max abs err %.3g, nmse %.3g\n", backend, models[_i], chunks[k], e,
               nmse(out, ref, n_ref));
        ck_assert_double_le(e, LOGIT_BOUND);
        free(out);
        mamba_model_free(m);
        mamba_context_free(ctx);
    }
    free(ids);
    free(ref);
    mamba_tensor_file_close(g);
}
END_TEST

START_TEST(fixture_greedy_decode)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/golden.safetensors", models[_i]);
    mamba_tensor_file_t *g;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &g), MAMBA_OK);
    size_t np, ng, nl;
    int32_t *prompt = file_ids(g, "gen_prompt", &np), *gen = file_ids(g, "gen_tokens", &ng);
    float *ref = file_f32(g, "gen_logits", &nl);
    const size_t V = nl / ng;
    mamba_context_t *ctx = open_ctx(backend, 0);
    mamba_model_t *m = load(ctx, models[_i]);
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(m, 1, &s), MAMBA_OK);
    float *logits = malloc(V * sizeof *logits);
    ck_assert_msg(mamba_prefill(s, prompt, np, logits) == MAMBA_OK, "%s", mamba_last_error(ctx));
    double worst = 0;
    for (size_t t = 0; t < ng; t++) {
        double e = max_abs_diff(logits, ref + t * V, V);
        worst = e > worst ? e : worst;
        int32_t tok = 0;
        for (size_t v = 1; v < V; v++)
            if (logits[v] > logits[tok]) tok = (int32_t)v;
        ck_assert_msg(tok == gen[t], "%s: step %zu chose %d, reference %d", backend, t, tok, gen[t]);
        if (t + 1 < ng) ck_assert_msg(mamba_step(s, &tok, logits) == MAMBA_OK, "%s", mamba_last_error(ctx));
    }
    printf("%s %s greedy decode: %zu tokens identical, logits max abs err %.3g\n", backend, models[_i], ng, worst);
    ck_assert_double_le(worst, LOGIT_BOUND);
    /* the same with the argmax on the device, two sequences at once */
    mamba_state_t *s2;
    ck_assert_int_eq(mamba_state_create(m, 2, &s2), MAMBA_OK);
    int32_t *prompts = malloc(2 * np * sizeof *prompts), first[2] = {gen[0], gen[0]};
    int32_t *out = malloc(2 * ng * sizeof *out);
    memcpy(prompts, prompt, np * sizeof *prompts);
    memcpy(prompts + np, prompt, np * sizeof *prompts);
    ck_assert_msg(mamba_prefill(s2, prompts, np, NULL) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_msg(mamba_generate_greedy(s2, first, ng - 1, out) == MAMBA_OK, "%s", mamba_last_error(ctx));
    for (size_t b = 0; b < 2; b++)
        for (size_t t = 0; t + 1 < ng; t++)
            ck_assert_msg(out[b * (ng - 1) + t] == gen[t + 1], "%s: generated sequence %zu step %zu chose %d, reference %d",
                          backend, b, t, out[b * (ng - 1) + t], gen[t + 1]);
    free(out);
    free(prompts);
    mamba_state_free(s2);
    free(logits);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    free(prompt);
    free(gen);
    free(ref);
    mamba_tensor_file_close(g);
}
END_TEST

static const char *const scan_cases[] = {"basic", "one_step", "long_chunked", "plain"};

START_TEST(fixture_scan)
{
    scan_fixture f;
    scan_fixture_load(&f, scan_cases[_i]);
    mamba_context_t *ctx = open_ctx(backend, 0);
    ck_assert_msg(mamba_scan(ctx, &f.args) == MAMBA_OK, "%s", mamba_last_error(ctx));
    double eo = max_abs_diff(f.out, f.ref_out, f.n_out), es = max_abs_diff(f.state, f.ref_state, f.n_state);
    printf("%s scan %s: out err %.3g (max %.3g), state err %.3g\n", backend, scan_cases[_i], eo,
           max_abs(f.ref_out, f.n_out), es);
    ck_assert_double_le(eo, SCAN_REL_BOUND * max_abs(f.ref_out, f.n_out));
    ck_assert_double_le(es, SCAN_REL_BOUND * max_abs(f.ref_state, f.n_state));
    mamba_context_free(ctx);
    scan_fixture_free(&f);
}
END_TEST

/* ---- random problems against the CPU backend ---- */

static float *rnd(size_t n, float lo, float hi, uint64_t *s)
{
    float *v = malloc(n * sizeof *v + 4);
    for (size_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = lo + (hi - lo) * (float)((*s >> 40) & 0xffffff) / 16777216.0f;
    }
    return v;
}

/* B, D, L, N, mode (0 input-dependent, 1 constant, 2 grouped by 4), split (0: none) */
static const size_t scan_shapes[][6] = {
    {1, 17, 2047, 16, 0, 0}, {5, 33, 2049, 16, 0, 0}, {1, 64, 5000, 16, 0, 1777}, {1, 96, 1, 16, 0, 0},
    {2, 40, 300, 1, 0, 0},   {2, 40, 300, 4, 0, 0},    {1, 24, 200, 64, 0, 0},     {1, 16, 50, 256, 0, 0},
    {3, 64, 700, 16, 1, 0},  {2, 128, 513, 16, 2, 0},  {1, 1536, 2048, 16, 0, 1000}, {2, 160, 37, 16, 0, 0},
    /* N > 16 in passes of 16 states: a partial last pass, B/C per channel (constant, grouped), a split */
    {1, 8, 40, 33, 1, 0},    {2, 64, 300, 40, 2, 0},   {1, 32, 500, 100, 0, 230},
};

START_TEST(scan_matches_cpu)
{
    const size_t *sh = scan_shapes[_i];
    const size_t B = sh[0], D = sh[1], L = sh[2], N = sh[3], mode = sh[4], split = sh[5];
    const size_t G = mode == 2 ? 4 : 1;
    uint64_t seed = 99 + (uint64_t)_i;
    float *u = rnd(B * L * D, -2, 2, &seed), *dl = rnd(B * L * D, -4, 1, &seed), *z = rnd(B * L * D, -3, 3, &seed);
    float *A = rnd(D * N, -8, -0.1f, &seed), *Dv = rnd(D, -1, 1, &seed), *bias = rnd(D, -2, 0.5f, &seed);
    float *s0 = rnd(B * D * N, -1, 1, &seed);
    size_t nbc = mode == 1 ? D * N : B * L * G * N;
    float *Bm = rnd(nbc, -1, 1, &seed), *Cm = rnd(nbc, -1, 1, &seed);
    float *out[2], *st[2];
    const char *names[2] = {"cpu", backend};
    for (int k = 0; k < 2; k++) {
        out[k] = calloc(B * L * D + 1, 4);
        st[k] = malloc(B * D * N * 4);
        memcpy(st[k], s0, B * D * N * 4);
        mamba_context_t *ctx = open_ctx(names[k], 0);
        size_t cut = split ? split : L;
        for (size_t t0 = 0; t0 < L; t0 = cut, cut = L) {
            mamba_scan_args_t a = {
                .batch = B, .dim = D, .len = cut - t0, .d_state = N, .n_groups = mode == 1 ? D : G,
                .u = u + t0 * D, .u_sb = (ptrdiff_t)(L * D), .u_st = (ptrdiff_t)D, .u_sd = 1,
                .delta = dl + t0 * D, .delta_sb = (ptrdiff_t)(L * D), .delta_st = (ptrdiff_t)D, .delta_sd = 1, .A = A,
                .D = Dv, .z = z + t0 * D, .z_sb = (ptrdiff_t)(L * D), .z_st = (ptrdiff_t)D, .z_sd = 1,
                .delta_bias = bias, .delta_softplus = 1, .state_in = st[k], .state_out = st[k],
                .out = out[k] + t0 * D, .out_sb = (ptrdiff_t)(L * D), .out_st = (ptrdiff_t)D, .out_sd = 1,
            };
            if (mode == 1) {
                a.B = Bm; a.B_sg = (ptrdiff_t)N; a.B_sn = 1;
                a.C = Cm; a.C_sg = (ptrdiff_t)N; a.C_sn = 1;
            } else {
                a.B = Bm + t0 * G * N; a.B_sb = (ptrdiff_t)(L * G * N); a.B_st = (ptrdiff_t)(G * N); a.B_sg = (ptrdiff_t)N; a.B_sn = 1;
                a.C = Cm + t0 * G * N; a.C_sb = (ptrdiff_t)(L * G * N); a.C_st = (ptrdiff_t)(G * N); a.C_sg = (ptrdiff_t)N; a.C_sn = 1;
            }
            ck_assert_msg(mamba_scan(ctx, &a) == MAMBA_OK, "%s: %s", names[k], mamba_last_error(ctx));
        }
        mamba_context_free(ctx);
    }
    double eo = max_abs_diff(out[1], out[0], B * L * D), es = max_abs_diff(st[1], st[0], B * D * N);
    printf("%s scan B%zu D%zu L%zu N%zu mode %zu split %zu vs cpu: out err %.3g (max %.3g), state err %.3g\n", backend,
           B, D, L, N, mode, split, eo, max_abs(out[0], B * L * D), es);
    ck_assert_double_le(eo, SCAN_REL_BOUND * max_abs(out[0], B * L * D));
    ck_assert_double_le(es, SCAN_REL_BOUND * max_abs(st[0], B * D * N));
    for (int k = 0; k < 2; k++) { free(out[k]); free(st[k]); }
    free(u); free(dl); free(z); free(A); free(Dv); free(bias); free(s0); free(Bm); free(Cm);
}
END_TEST


/* ---- the scan's backward ---- */

static const char *const grad_cases[] = {"basic", "long", "plain"};

START_TEST(fixture_scan_backward)
{
    grad_fixture f;
    grad_fixture_load(&f, grad_cases[_i]);
    mamba_context_t *ctx = open_ctx(backend, 0);
    ck_assert_msg(mamba_scan_backward(ctx, &f.args, f.dout, &f.grads) == MAMBA_OK, "%s", mamba_last_error(ctx));
    for (int k = 0; k < f.count; k++) {
        const double e = max_abs_diff(f.got[k], f.ref[k], f.n[k]), m = max_abs(f.ref[k], f.n[k]);
        printf("%s scan backward %s %s: max err %.3g of max %.3g (%.2g relative)\n", backend, grad_cases[_i],
               f.names[k], e, m, e / m);
        ck_assert_msg(e <= SCAN_REL_BOUND * m, "%s %s: err %g, bound %g", grad_cases[_i], f.names[k], e,
                      SCAN_REL_BOUND * m);
    }
    mamba_context_free(ctx);
    grad_fixture_free(&f);
}
END_TEST

/* B, D, L, N, mode (0 input-dependent, 1 constant, 2 grouped by 4): L around the chunk sizes
 * (64 steps up to 4096, 128 past), dim not a multiple of the work-group of 64 */
static const size_t bwd_shapes[][5] = {
    {1, 17, 2047, 16, 0}, {5, 33, 2049, 16, 0}, {1, 70, 5000, 16, 0}, {1, 96, 1, 16, 0}, {2, 40, 300, 1, 0},
    {1, 24, 200, 64, 0},  {1, 16, 50, 256, 0},  {3, 64, 700, 16, 1},  {2, 136, 513, 16, 2}, {5, 20, 2, 4, 0},
};

enum { G_U, G_DL, G_A, G_B, G_C, G_D, G_Z, G_BIAS, G_S, N_G };

/* The backward of a random problem of shape sh in ctx into g[N_G] (malloc'd). */
static void backward_in(mamba_context_t *ctx, const size_t *sh, float *g[N_G], size_t n[N_G])
{
    const size_t B = sh[0], D = sh[1], L = sh[2], N = sh[3], mode = sh[4], G = mode == 2 ? 4 : 1;
    uint64_t seed = 7 + B * 131 + D * 17 + L * 3 + N + mode;
    float *u = rnd(B * L * D, -2, 2, &seed), *dl = rnd(B * L * D, -4, 1, &seed), *z = rnd(B * L * D, -3, 3, &seed);
    float *A = rnd(D * N, -8, -0.1f, &seed), *Dv = rnd(D, -1, 1, &seed), *bias = rnd(D, -2, 0.5f, &seed);
    float *s0 = rnd(B * D * N, -1, 1, &seed), *dout = rnd(B * L * D, -1, 1, &seed), *dso = rnd(B * D * N, -1, 1, &seed);
    const size_t nbc = mode == 1 ? D * N : B * L * G * N;
    float *Bm = rnd(nbc, -1, 1, &seed), *Cm = rnd(nbc, -1, 1, &seed);
    for (size_t i = 3; i < B * L * D; i += 17) dl[i] = 25.0f; /* past softplus' threshold */
    const size_t sizes[N_G] = {B * L * D, B * L * D, D * N, nbc, nbc, D, B * L * D, D, B * D * N};
    for (int k = 0; k < N_G; k++) {
        n[k] = sizes[k];
        g[k] = calloc(sizes[k] + 1, sizeof(float));
    }
    mamba_scan_args_t a = {
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = mode == 1 ? D : G,
        .u = u, .u_sb = (ptrdiff_t)(L * D), .u_st = (ptrdiff_t)D, .u_sd = 1,
        .delta = dl, .delta_sb = (ptrdiff_t)(L * D), .delta_st = (ptrdiff_t)D, .delta_sd = 1, .A = A,
        .D = Dv, .z = z, .z_sb = (ptrdiff_t)(L * D), .z_st = (ptrdiff_t)D, .z_sd = 1,
        .delta_bias = bias, .delta_softplus = 1, .state_in = s0,
        .out_sb = (ptrdiff_t)(L * D), .out_st = (ptrdiff_t)D, .out_sd = 1,
    };
    if (mode == 1) {
        a.B = Bm; a.B_sg = (ptrdiff_t)N; a.B_sn = 1;
        a.C = Cm; a.C_sg = (ptrdiff_t)N; a.C_sn = 1;
    } else {
        a.B = Bm; a.B_sb = (ptrdiff_t)(L * G * N); a.B_st = (ptrdiff_t)(G * N); a.B_sg = (ptrdiff_t)N; a.B_sn = 1;
        a.C = Cm; a.C_sb = (ptrdiff_t)(L * G * N); a.C_st = (ptrdiff_t)(G * N); a.C_sg = (ptrdiff_t)N; a.C_sn = 1;
    }
    mamba_scan_grads_t gr = {g[G_U], g[G_DL], g[G_A], g[G_B], g[G_C], g[G_D], g[G_Z], g[G_BIAS], g[G_S], dso};
    ck_assert_msg(mamba_scan_backward(ctx, &a, dout, &gr) == MAMBA_OK, "%s: %s", mamba_context_backend(ctx),
                  mamba_last_error(ctx));
    free(u); free(dl); free(z); free(A); free(Dv); free(bias); free(s0); free(dout); free(dso); free(Bm); free(Cm);
}

static void backward_on(const char *name, const size_t *sh, float *g[N_G], size_t n[N_G])
{
    mamba_context_t *ctx = open_ctx(name, 0);
    backward_in(ctx, sh, g, n);
    mamba_context_free(ctx);
}

static const char *const g_names[N_G] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dstate_in"};

/* Against the CPU within the bound of the fixtures, and the same bits in a second run. */
START_TEST(scan_backward_matches_cpu)
{
    const size_t *sh = bwd_shapes[_i];
    float *ref[N_G], *got[N_G], *again[N_G];
    size_t n[N_G];
    backward_on("cpu", sh, ref, n);
    backward_on(backend, sh, got, n);
    backward_on(backend, sh, again, n);
    for (int k = 0; k < N_G; k++) {
        const double e = max_abs_diff(got[k], ref[k], n[k]), m = max_abs(ref[k], n[k]);
        if (e > SCAN_REL_BOUND * m || k == G_A)
            printf("%s scan backward B%zu D%zu L%zu N%zu mode %zu vs cpu: %s max err %.3g of max %.3g\n", backend,
                   sh[0], sh[1], sh[2], sh[3], sh[4], g_names[k], e, m);
        ck_assert_msg(e <= SCAN_REL_BOUND * m, "%s: err %g, bound %g", g_names[k], e, SCAN_REL_BOUND * m);
        ck_assert_msg(memcmp(got[k], again[k], n[k] * sizeof(float)) == 0, "%s differs between two runs", g_names[k]);
        free(ref[k]);
        free(got[k]);
        free(again[k]);
    }
}
END_TEST

/* CUDA's chunk-parallel backward with its partial dB/dC sums taken a few chunks at a time (what
 * a long sequence does: (1, 1536, 65536, 16) takes 3 segments), against the CPU. */
START_TEST(scan_backward_segments_match_cpu)
{
    const size_t sh[5] = {2, 40, 700, 16, 0};
    float *ref[N_G], *got[N_G];
    size_t n[N_G];
    backward_on("cpu", sh, ref, n);
    setenv("MAMBA_CUDA_BWD_PARTS", "40000", 1); /* 2 x 2 tiles x 32 steps x 16 x 2: 9 of the 22 chunks a segment */
    backward_on(backend, sh, got, n);
    unsetenv("MAMBA_CUDA_BWD_PARTS");
    for (int k = 0; k < N_G; k++) {
        const double e = max_abs_diff(got[k], ref[k], n[k]), m = max_abs(ref[k], n[k]);
        ck_assert_msg(e <= SCAN_REL_BOUND * m, "%s: err %g, bound %g", g_names[k], e, SCAN_REL_BOUND * m);
        free(ref[k]);
        free(got[k]);
    }
}
END_TEST

/* The backward's scratch holds the plan of api/scan_bwd.h (the device grows its scratch to
 * 1.25 times what is asked). */
START_TEST(scan_backward_memory)
{
    const size_t sh[5] = {2, 160, 3000, 16, 0};
    mamba_context_t *ctx = open_ctx(backend, 0);
    uint64_t cur0, cur1, peak;
    ck_assert_int_eq(mamba_memory_usage(ctx, &cur0, &peak), MAMBA_OK);
    float *g[N_G];
    size_t n[N_G];
    backward_in(ctx, sh, g, n);
    ck_assert_int_eq(mamba_memory_usage(ctx, &cur1, &peak), MAMBA_OK);
    static char present;
    mb_buffer *fake = (mb_buffer *)(void *)&present; /* only tested against NULL */
    mb_scan_bwd_op op = {
        .fwd = {.batch = sh[0], .dim = sh[1], .len = sh[2], .d_state = sh[3], .n_groups = 1, .B_st = 16, .C_st = 16},
        .dA = {fake, 0}, .dB = {fake, 0}, .dC = {fake, 0}, .dD = {fake, 0}, .ddelta_bias = {fake, 0},
    };
    mb_scan_bwd_plan pl;
    if (strcmp(backend, "cuda") == 0) /* N <= 16 on CUDA: every chunk at once */
        mb_scan_bwd_plan_parallel(&pl, &op, MB_SCAN_BWD_PPARTS);
    else
        mb_scan_bwd_plan_init(&pl, &op, 64, 0);
    const uint64_t grown = cur1 - cur0, want = pl.total * sizeof(float);
    printf("%s scan backward (2, 160, 3000, 16): scratch grew by %llu bytes, the plan %llu\n", backend,
           (unsigned long long)grown, (unsigned long long)want);
    ck_assert_uint_ge(grown, want);
    ck_assert_uint_le(grown, want + want / 4);
    for (int k = 0; k < N_G; k++) free(g[k]);
    mamba_context_free(ctx);
}
END_TEST

/* A synthetic model in 16-bit weights: GEMM paths for 1, 5 and 300 rows in each dtype, and a
 * single sequence's step (the one-row GEMV, x_proj cut in k slices on a large GPU). The vocab
 * is large enough for the one-row lm_head to take whole rows a warp even on a GPU of 132 SMs
 * (CUDA: two rows a warp, and odd, so that the last warp has one). */
START_TEST(half_weights_match_cpu)
{
    enum { VOCAB = 5001 };
    const mamba_dtype_t dts[3] = {MAMBA_F32, MAMBA_F16, MAMBA_BF16};
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 1024; /* d_inner 2048: x_proj and, in f32, the one-row out_proj take split GEMVs,
                       * the latter with two loads a lane issued together on CUDA */
    c.n_layer = 2;
    c.vocab_size = VOCAB;
    const size_t lens[3] = {1, 5, 150};
    int32_t ids[2 * 150];
    for (int i = 0; i < 300; i++) ids[i] = (i * 37 + 11) % VOCAB;
    for (int k = 0; k < 5; k++) {
        /* k 0..2: fp32 arithmetic on f32, f16, bf16 weights; 3, 4: f16, bf16 in 16 bits */
        gpu_compute = k < 3 ? MAMBA_COMPUTE_F32 : MAMBA_COMPUTE_AUTO;
        const mamba_dtype_t dt = dts[k < 3 ? k : k - 2];
        float *res[2];
        const char *names[2] = {"cpu", backend};
        for (int j = 0; j < 2; j++) {
            mamba_context_t *ctx;
            mamba_model_t *m = synthetic_on(names[j], &c, dt, 5, &ctx);
            res[j] = malloc(((size_t)2 * (1 + 5 + 150) + 1) * VOCAB * sizeof(float));
            size_t off = 0;
            for (int l = 0; l < 3; l++) {
                ck_assert_msg(mamba_forward(m, ids, 2, lens[l], MAMBA_LOGITS_ALL, res[j] + off) == MAMBA_OK, "%s",
                              mamba_last_error(ctx));
                off += 2 * lens[l] * VOCAB;
            }
            ck_assert_msg(mamba_forward(m, ids, 1, 1, MAMBA_LOGITS_ALL, res[j] + off) == MAMBA_OK, "%s",
                          mamba_last_error(ctx));
            close_model(m, ctx);
        }
        char what[64];
        snprintf(what, sizeof what, "%s synthetic weights", mamba_dtype_name(dt));
        if (k < 3) expect_cpu_logits(res, ((size_t)2 * (1 + 5 + 150) + 1) * VOCAB, what);
        else expect_cpu_logits_16(res, ((size_t)2 * (1 + 5 + 150) + 1) * VOCAB, VOCAB, dt, what);
    }
    gpu_compute = MAMBA_COMPUTE_F32;
}
END_TEST

/* Batched decoding steps in 16-bit compute (the recorded step from the second on): batches 3
 * and 16 of a bf16 and an f16 synthetic model (CUDA: in_proj from add_rmsnorm16's rounded
 * rows, x_proj from the conv's, out_proj from the scan's y16), four steps each, against the
 * CPU's fp32 arithmetic on the same weights. */
START_TEST(batched_steps_16bit_match_cpu)
{
    enum { VOCAB = 1003, L = 6, STEPS = 4 };
    const mamba_dtype_t dts[2] = {MAMBA_BF16, MAMBA_F16};
    const size_t batches[2] = {3, 16};
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 256;
    c.n_layer = 2;
    c.vocab_size = VOCAB;
    gpu_compute = MAMBA_COMPUTE_AUTO;
    for (int k = 0; k < 4; k++) {
        const mamba_dtype_t dt = dts[k / 2];
        const size_t B = batches[k % 2], per = B * VOCAB;
        int32_t ids[16 * L], tok[16];
        for (size_t i = 0; i < B * L; i++) ids[i] = (int32_t)((i * 53 + 7) % VOCAB);
        float *res[2];
        const char *names[2] = {"cpu", backend};
        for (int j = 0; j < 2; j++) {
            mamba_context_t *ctx;
            mamba_model_t *m = synthetic_on(names[j], &c, dt, 11, &ctx);
            mamba_state_t *s;
            ck_assert_int_eq(mamba_state_create(m, B, &s), MAMBA_OK);
            res[j] = malloc(STEPS * per * sizeof(float));
            ck_assert_msg(mamba_prefill(s, ids, L, NULL) == MAMBA_OK, "%s", mamba_last_error(ctx));
            for (int t = 0; t < STEPS; t++) {
                for (size_t b = 0; b < B; b++) tok[b] = (int32_t)((b * 31 + (size_t)t * 17 + 3) % VOCAB);
                ck_assert_msg(mamba_step(s, tok, res[j] + t * per) == MAMBA_OK, "%s", mamba_last_error(ctx));
            }
            mamba_state_free(s);
            close_model(m, ctx);
        }
        char what[64];
        snprintf(what, sizeof what, "%s, %d steps of batch %zu", mamba_dtype_name(dt), STEPS, B);
        expect_cpu_logits_16(res, STEPS * per, VOCAB, dt, what);
    }
    gpu_compute = MAMBA_COMPUTE_F32;
}
END_TEST

/* mamba_bench_scan_backward's inputs are a function of the shape alone: its du agrees with the
 * CPU's; mamba_model_compute_dtype says what the GEMMs do (16 bits on CUDA from 2 rows with
 * 16-bit weights and MAMBA_COMPUTE_AUTO; OpenCL widens) */
START_TEST(bench_entry_points_match_cpu)
{
    const size_t B = 2, D = 96, L = 300, N = 16, n = B * L * D;
    float *du[2] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))};
    double ms[2];
    const char *names[2] = {"cpu", backend};
    for (int j = 0; j < 2; j++) {
        mamba_context_t *ctx = open_ctx(names[j], 0);
        ck_assert_msg(mamba_bench_scan_backward(ctx, B, D, L, N, 0, 2, ms, du[j]) == MAMBA_OK, "%s",
                      mamba_last_error(ctx));
        ck_assert(ms[0] > 0 && ms[1] > 0);
        mamba_context_free(ctx);
    }
    const double e = max_abs_diff(du[1], du[0], n), m = max_abs(du[0], n);
    ck_assert_double_gt(m, 0);
    ck_assert_msg(e <= SCAN_REL_BOUND * m, "du: err %g, bound %g", e, SCAN_REL_BOUND * m);
    free(du[0]);
    free(du[1]);

    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 64;
    c.n_layer = 1;
    c.vocab_size = 100;
    const int cuda = strcmp(backend, "cuda") == 0;
    for (int k = 0; k < 3; k++) {
        /* bf16 in 16 bits, bf16 widened, f32 */
        gpu_compute = k == 1 ? MAMBA_COMPUTE_F32 : MAMBA_COMPUTE_AUTO;
        const mamba_dtype_t dt = k == 2 ? MAMBA_F32 : MAMBA_BF16;
        mamba_context_t *ctx;
        mamba_model_t *mdl = synthetic_on(backend, &c, dt, 1, &ctx);
        mamba_dtype_t one, many;
        ck_assert_int_eq(mamba_model_compute_dtype(mdl, 1, &one), MAMBA_OK);
        ck_assert_int_eq(mamba_model_compute_dtype(mdl, 2048, &many), MAMBA_OK);
        ck_assert_int_eq(one, MAMBA_F32);
        ck_assert_int_eq(many, cuda && k == 0 ? MAMBA_BF16 : MAMBA_F32);
        close_model(mdl, ctx);
    }
    gpu_compute = MAMBA_COMPUTE_F32;
}
END_TEST

/* Prefill GEMMs large enough for CUDA's tensor-core (3xTF32) kernel on a 132-SM GPU, with a
 * partial tile on every side: 3 x 101 rows (tiles of 128), k = 1000 (of 32), in_proj's 4000
 * and the lm_head's 5001 columns (of 64, the latter odd). Held to the CPU's logits. */
START_TEST(large_gemms_match_cpu)
{
    enum { VOCAB = 5001, B = 3, L = 101 };
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 1000;
    c.n_layer = 1;
    c.vocab_size = VOCAB;
    int32_t ids[B * L];
    for (int i = 0; i < B * L; i++) ids[i] = (i * 53 + 7) % VOCAB;
    const size_t n = (size_t)B * L * VOCAB;
    float *res[2];
    const char *names[2] = {"cpu", backend};
    for (int j = 0; j < 2; j++) {
        mamba_context_t *ctx;
        mamba_model_t *m = synthetic_on(names[j], &c, MAMBA_F32, 9, &ctx);
        res[j] = malloc(n * sizeof(float));
        ck_assert_msg(mamba_forward(m, ids, B, L, MAMBA_LOGITS_ALL, res[j]) == MAMBA_OK, "%s", mamba_last_error(ctx));
        close_model(m, ctx);
    }
    expect_cpu_logits(res, n, "large GEMMs");
}
END_TEST

/* Decoding 12 sequences at once: CUDA records the step as a graph whose GEMMs (12 rows: too
 * many for the GEMV) use the device's scratch (k-split sums; 16-bit weights widened). A long
 * prefill on another state then grows the scratch; the recorded graph must still work. Both
 * weight dtypes, against the CPU's logits of the same calls. */
START_TEST(decode_graph_survives_scratch_growth)
{
    enum { VOCAB = 1000, B = 12, STEPS = 6, LONG = 1500 };
    /* _i 0: f32 weights; 1: bf16 weights, fp32 arithmetic; 2: bf16 in 16 bits */
    const mamba_dtype_t dts[3] = {MAMBA_F32, MAMBA_BF16, MAMBA_BF16};
    gpu_compute = _i == 2 ? MAMBA_COMPUTE_AUTO : MAMBA_COMPUTE_F32;
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 256;
    c.n_layer = 2;
    c.vocab_size = VOCAB;
    int32_t ids[B * 5], step_ids[B];
    for (int i = 0; i < B * 5; i++) ids[i] = (i * 37 + 11) % VOCAB;
    int32_t *long_ids = malloc((size_t)4 * LONG * sizeof *long_ids);
    for (int i = 0; i < 4 * LONG; i++) long_ids[i] = (i * 13 + 5) % VOCAB;
    const size_t n = (size_t)STEPS * B * VOCAB;
    float *res[2];
    const char *names[2] = {"cpu", backend};
    for (int j = 0; j < 2; j++) {
        mamba_context_t *ctx;
        mamba_model_t *m = synthetic_on(names[j], &c, dts[_i], 3, &ctx);
        mamba_state_t *a, *b;
        ck_assert_int_eq(mamba_state_create(m, B, &a), MAMBA_OK);
        ck_assert_int_eq(mamba_state_create(m, 4, &b), MAMBA_OK);
        res[j] = malloc(n * sizeof(float));
        ck_assert_msg(mamba_prefill(a, ids, 5, NULL) == MAMBA_OK, "%s", mamba_last_error(ctx));
        for (int t = 0; t < STEPS; t++) {
            if (t == STEPS / 2) /* the graph exists by now; this grows the scratch */
                ck_assert_msg(mamba_prefill(b, long_ids, LONG, NULL) == MAMBA_OK, "%s", mamba_last_error(ctx));
            for (int i = 0; i < B; i++) step_ids[i] = (t * 7 + i * 3) % VOCAB;
            ck_assert_msg(mamba_step(a, step_ids, res[j] + (size_t)t * B * VOCAB) == MAMBA_OK, "%s",
                          mamba_last_error(ctx));
        }
        mamba_state_free(a);
        mamba_state_free(b);
        close_model(m, ctx);
    }
    char what[80];
    snprintf(what, sizeof what, "%s decoding of 12 sequences across a scratch growth", mamba_dtype_name(dts[_i]));
    if (_i < 2) expect_cpu_logits(res, n, what);
    else expect_cpu_logits_16(res, n, VOCAB, dts[_i], what);
    gpu_compute = MAMBA_COMPUTE_F32;
    free(long_ids);
}
END_TEST

/* All logits into mamba_alloc_host's memory: on CUDA, chunks of 1024 tokens whose logits are
 * copied to the host while the next chunk runs. The same as the one-pass forward into
 * malloc'd memory on the same backend (three chunks, the last short, two sequences). */
START_TEST(host_logits_match)
{
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 64;
    c.n_layer = 2;
    c.vocab_size = 1000;
    enum { B = 2, L = 2100 };
    int32_t *ids = malloc((size_t)B * L * sizeof *ids);
    for (int i = 0; i < B * L; i++) ids[i] = (i * 37 + 11) % 1000;
    mamba_context_t *ctx;
    mamba_model_t *m = synthetic_on(backend, &c, MAMBA_F32, 5, &ctx);
    const size_t n = (size_t)B * L * 1000;
    float *ref = malloc(n * sizeof *ref), *host = mamba_alloc_host(ctx, n * sizeof *host);
    ck_assert_msg(host != NULL, "%s", mamba_last_error(ctx));
    ck_assert_msg(mamba_forward(m, ids, B, L, MAMBA_LOGITS_ALL, ref) == MAMBA_OK, "%s", mamba_last_error(ctx));
    for (int rep = 0; rep < 2; rep++) {
        memset(host, 0xff, n * sizeof *host); /* NaNs: a copy that did not land fails the bound */
        ck_assert_msg(mamba_forward(m, ids, B, L, MAMBA_LOGITS_ALL, host) == MAMBA_OK, "%s", mamba_last_error(ctx));
        double e = max_abs_diff(host, ref, n);
        printf("%s all logits into mamba_alloc_host memory vs malloc'd: max abs err %.3g (max %.3g)\n", backend, e,
               max_abs(ref, n));
        ck_assert_double_le(e, LOGIT_BOUND);
    }
    mamba_free_host(ctx, host);
    free(ref);
    free(ids);
    close_model(m, ctx);
}
END_TEST

/* Prompts of 1, 7, 64, 300 and 2049 tokens prefilled together into scattered sequences of a
 * batch of 8, then a step of the five: the same logits as the CPU's batch-1 runs. */
START_TEST(prefill_seqs_match_cpu)
{
    enum { N = 5, BATCH = 8 };
    static const size_t lens[N] = {1, 7, 64, 300, 2049}, seqs[N] = {6, 0, 3, 7, 2};
    mamba_context_t *cpu = open_ctx("cpu", 0), *ctx = open_ctx(backend, 0);
    mamba_model_t *mc = load(cpu, "models/small"), *mg = load(ctx, "models/small");
    mamba_model_info_t info;
    mamba_model_info(mc, &info);
    const size_t V = (size_t)info.config.vocab_size;
    int32_t *ids[N], toks[N];
    for (int i = 0; i < N; i++) {
        ids[i] = malloc(lens[i] * sizeof *ids[i]);
        for (size_t t = 0; t < lens[i]; t++) ids[i][t] = (int32_t)((t * 31 + (size_t)i * 7 + 1) % V);
        toks[i] = (int32_t)((i * 11 + 2) % (int)V);
    }
    float *got = malloc(N * V * sizeof *got), *next = malloc(N * V * sizeof *next);
    float *ref = malloc(N * V * sizeof *ref), *ref_next = malloc(N * V * sizeof *ref_next);
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(mg, BATCH, &s), MAMBA_OK);
    ck_assert_msg(mamba_prefill_seqs(s, N, seqs, (const int32_t *const *)ids, lens, got) == MAMBA_OK, "%s",
                  mamba_last_error(ctx));
    ck_assert_msg(mamba_step_seqs(s, N, seqs, toks, next) == MAMBA_OK, "%s", mamba_last_error(ctx));
    for (int i = 0; i < N; i++) {
        mamba_state_t *one;
        ck_assert_int_eq(mamba_state_create(mc, 1, &one), MAMBA_OK);
        ck_assert_int_eq(mamba_prefill(one, ids[i], lens[i], ref + (size_t)i * V), MAMBA_OK);
        ck_assert_int_eq(mamba_step(one, &toks[i], ref_next + (size_t)i * V), MAMBA_OK);
        mamba_state_free(one);
        free(ids[i]);
    }
    float *res[2] = {ref, got};
    expect_cpu_logits(res, N * V, "prefill of 5 prompts of 1..2049 tokens together");
    float *res2[2] = {ref_next, next};
    expect_cpu_logits(res2, N * V, "a step of those 5 sequences");
    mamba_state_free(s);
    close_model(mg, ctx);
    close_model(mc, cpu);
}
END_TEST

/* mamba_step_seqs_begin: a step of sequences 0..3 into mamba_alloc_host memory (on CUDA the
 * call returns before the step has run, and the logits come in four marked parts), the first
 * row read after mamba_step_wait_rows(1), a copy of sequence 1 into 4 enqueued before the
 * wait, then a step of 1 and 4, and of 4 and 2 after sequence 4 is reset: the CPU's logits,
 * done the same way with mamba_step_seqs. A copy that ran before the step would give
 * sequence 4 the state before it; the copy and the reset are one 2-D call each on CUDA. */
START_TEST(step_begin_matches_cpu)
{
    enum { B = 5, L = 9, N = 4 };
    mamba_context_t *cpu = open_ctx("cpu", 0), *ctx = open_ctx(backend, 0);
    mamba_model_t *mc = load(cpu, "models/small"), *mg = load(ctx, "models/small");
    mamba_model_info_t info;
    mamba_model_info(mc, &info);
    const size_t V = (size_t)info.config.vocab_size;
    int32_t ids[B * L];
    for (int i = 0; i < B * L; i++) ids[i] = (int32_t)((i * 29 + 5) % (int)V);
    const size_t run[N] = {0, 1, 2, 3}, pair[2] = {1, 4};
    const int32_t toks[N] = {3, 17, 40, 11}, again[2] = {8, 8};
    float *got = mamba_alloc_host(ctx, N * V * sizeof *got);
    ck_assert_msg(got != NULL, "%s", mamba_last_error(ctx));
    float *ref = malloc(N * V * sizeof *ref), *next = malloc(4 * V * sizeof *next), *ref_next = malloc(4 * V * sizeof *ref_next);
    const size_t after_reset[2] = {4, 2};
    mamba_state_t *sg, *sc;
    ck_assert_int_eq(mamba_state_create(mg, B, &sg), MAMBA_OK);
    ck_assert_int_eq(mamba_state_create(mc, B, &sc), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(sc, ids, L, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_step_seqs(sc, N, run, toks, ref), MAMBA_OK);
    ck_assert_int_eq(mamba_state_copy_seq(sc, 4, sc, 1), MAMBA_OK);
    ck_assert_int_eq(mamba_step_seqs(sc, 2, pair, again, ref_next), MAMBA_OK);
    ck_assert_int_eq(mamba_state_reset_seq(sc, 4), MAMBA_OK);
    ck_assert_int_eq(mamba_step_seqs(sc, 2, after_reset, again, ref_next + 2 * V), MAMBA_OK);
    ck_assert_int_eq(mamba_prefill(sg, ids, L, NULL), MAMBA_OK);
    memset(got, 0xff, N * V * sizeof *got); /* NaNs: logits that did not land fail the bound */
    ck_assert_msg(mamba_step_seqs_begin(sg, N, run, toks, got) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_msg(mamba_step_wait_rows(sg, 1) == MAMBA_OK, "%s", mamba_last_error(ctx));
    const double e0 = max_abs_diff(got, ref, V);
    printf("%s the first row of a begun step after mamba_step_wait_rows(1): max abs err %.3g\n", backend, e0);
    ck_assert_double_le(e0, LOGIT_BOUND);
    ck_assert_int_eq(mamba_state_copy_seq(sg, 4, sg, 1), MAMBA_OK);
    ck_assert_msg(mamba_step_wait(sg) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_int_eq(mamba_step_wait(sg), MAMBA_OK); /* none running: at once */
    ck_assert_int_eq(mamba_step_wait_rows(sg, 2), MAMBA_OK);
    ck_assert_msg(mamba_step_seqs(sg, 2, pair, again, next) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_int_eq(mamba_state_reset_seq(sg, 4), MAMBA_OK);
    ck_assert_msg(mamba_step_seqs(sg, 2, after_reset, again, next + 2 * V) == MAMBA_OK, "%s", mamba_last_error(ctx));
    float *copy = malloc(N * V * sizeof *copy); /* expect_cpu_logits frees what it gets */
    memcpy(copy, got, N * V * sizeof *copy);
    mamba_free_host(ctx, got);
    float *res[2] = {ref, copy};
    expect_cpu_logits(res, N * V, "a begun step of 4 sequences");
    float *res2[2] = {ref_next, next};
    expect_cpu_logits(res2, 4 * V, "steps after a copy enqueued during the begun step and after a reset");
    mamba_state_free(sg);
    mamba_state_free(sc);
    close_model(mg, ctx);
    close_model(mc, cpu);
}
END_TEST

/* Two contexts on two GPUs in one thread: each allocates and launches on its own device
 * (every entry point makes its device current), whichever was opened last. */
START_TEST(two_devices_in_one_thread)
{
    mamba_device_info_t devs[16];
    size_t n = 0, mine = 0;
    mamba_list_devices(devs, 16, &n);
    for (size_t i = 0; i < n && i < 16; i++) mine += strcmp(devs[i].backend, backend) == 0 && devs[i].usable;
    if (mine < 2) {
        printf("%s: %zu device(s), the two-device check needs 2: not run\n", backend, mine);
        return;
    }
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 64;
    c.n_layer = 2;
    c.vocab_size = 500;
    enum { L = 40 };
    int32_t ids[L];
    for (int i = 0; i < L; i++) ids[i] = (i * 17 + 3) % 500;
    char name0[32], name1[32];
    snprintf(name0, sizeof name0, "%s:0", backend);
    snprintf(name1, sizeof name1, "%s:1", backend);
    mamba_context_t *cpu, *c0, *c1;
    mamba_model_t *mc = synthetic_on("cpu", &c, MAMBA_F32, 9, &cpu);
    mamba_model_t *m0 = synthetic_on(name0, &c, MAMBA_F32, 9, &c0);
    mamba_model_t *m1 = synthetic_on(name1, &c, MAMBA_F32, 9, &c1); /* opened last: current device 1 */
    float *ref = malloc((size_t)L * 500 * sizeof *ref), *out = malloc((size_t)L * 500 * sizeof *out);
    ck_assert_int_eq(mamba_forward(mc, ids, 1, L, MAMBA_LOGITS_ALL, ref), MAMBA_OK);
    mamba_model_t *ms[2] = {m0, m1};
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(mamba_forward(ms[k], ids, 1, L, MAMBA_LOGITS_ALL, out) == MAMBA_OK, "%s",
                      mamba_last_error(k ? c1 : c0));
        const double e = max_abs_diff(out, ref, (size_t)L * 500);
        printf("%s:%d forward with the other device current: max abs err %.3g\n", backend, k, e);
        ck_assert_double_le(e, LOGIT_BOUND);
    }
    free(ref);
    free(out);
    close_model(m1, c1);
    close_model(m0, c0);
    close_model(mc, cpu);
}
END_TEST

/* Prefill (a chunked scan) and decoding (the fused mixer step) for state sizes off the
 * N = 16 path: 1, 64 and the largest the config takes, 256. Small, as PoCL builds the kernels
 * for each at their first launch; held to the CPU's logits. */
START_TEST(state_sizes_match_cpu)
{
    enum { VOCAB = 200, B = 2, L = 70, STEPS = 4 };
    const int sizes[3] = {1, 64, 256};
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 32;
    c.n_layer = 2;
    c.vocab_size = VOCAB;
    c.d_state = sizes[_i];
    int32_t ids[B * L], step_ids[B];
    for (int i = 0; i < B * L; i++) ids[i] = (i * 37 + 11) % VOCAB;
    const size_t n = (size_t)(L + STEPS) * B * VOCAB;
    float *res[2];
    const char *names[2] = {"cpu", backend};
    for (int j = 0; j < 2; j++) {
        mamba_context_t *ctx;
        mamba_model_t *m = synthetic_on(names[j], &c, MAMBA_F32, 21, &ctx);
        mamba_state_t *s;
        ck_assert_int_eq(mamba_state_create(m, B, &s), MAMBA_OK);
        res[j] = malloc(n * sizeof(float));
        float *last = malloc((size_t)B * VOCAB * sizeof(float));
        ck_assert_msg(mamba_forward(m, ids, B, L, MAMBA_LOGITS_ALL, res[j]) == MAMBA_OK, "%s", mamba_last_error(ctx));
        ck_assert_msg(mamba_prefill(s, ids, L, last) == MAMBA_OK, "%s", mamba_last_error(ctx));
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < B; i++) step_ids[i] = (t * 7 + i * 3) % VOCAB;
            ck_assert_msg(mamba_step(s, step_ids, res[j] + ((size_t)L * B + (size_t)t * B) * VOCAB) == MAMBA_OK, "%s",
                          mamba_last_error(ctx));
        }
        free(last);
        mamba_state_free(s);
        close_model(m, ctx);
    }
    char what[64];
    snprintf(what, sizeof what, "d_state %d prefill and decoding", sizes[_i]);
    expect_cpu_logits(res, n, what);
}
END_TEST

/* A conv op of width 0 (which no config makes: d_conv is 1..64) is refused before anything
 * runs. The op is reached through the module's own entry point, loaded from beside
 * libmamba.so as the registry loads it; short (decoding) and long inputs take different
 * kernels. */
START_TEST(conv_rejects_bad_width)
{
    Dl_info info;
    ck_assert(dladdr((void *)mamba_list_backends, &info) && info.dli_fname);
    char path[4096];
    snprintf(path, sizeof path, "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    ck_assert_ptr_nonnull(slash);
    snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "libmamba-%s.so", backend);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); /* as the registry: never unloaded */
    ck_assert_msg(h != NULL, "%s", dlerror());
    mb_backend_register_fn reg;
    *(void **)&reg = dlsym(h, MB_BACKEND_ENTRY);
    ck_assert_ptr_nonnull(reg);
    const mb_backend *be = reg(MB_BACKEND_ABI_VERSION);
    ck_assert_ptr_nonnull(be);
    mb_open_options o = {.n_threads = 1};
    mb_device *dev = NULL;
    char err[512] = "";
    ck_assert_msg(be->device->open(0, &o, &dev, err, sizeof err) == 0, "%s", err);
    mb_buffer *buf = NULL;
    ck_assert_int_eq(be->device->alloc(dev, 1 << 16, &buf), 0);
    const size_t lens[2] = {1, 100}, widths[2] = {0, 65};
    const int expect[2] = {MAMBA_ERR_INVALID_ARGUMENT, MAMBA_ERR_UNSUPPORTED};
    for (int i = 0; i < 2; i++)
        for (int w = 0; w < 2; w++) {
            const mb_ptr p = {buf, 0};
            mb_conv_op op = {.batch = 1, .len = lens[i], .channels = 4, .width = widths[w], .x = p, .x_sb = 400,
                             .x_st = 4, .weight = p, .state = p, .out = {buf, 1 << 15}, .out_sb = 400, .out_st = 4};
            const int rc = be->ops->conv_silu(dev, &op);
            printf("%s conv of width %zu over %zu steps: status %d, %s\n", backend, widths[w], lens[i], rc,
                   be->device->last_error(dev));
            ck_assert_int_eq(rc, expect[w]);
            ck_assert_ptr_nonnull(strstr(be->device->last_error(dev), "width"));
        }
    ck_assert_int_eq(be->device->sync(dev), 0);
    be->device->free(dev, buf);
    be->device->close(dev);
}
END_TEST

static int run_backend(const char *name)
{
    mamba_backend_info_t be[8];
    size_t n;
    mamba_list_backends(be, 8, &n);
    int available = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(be[i].name, name) != 0) continue;
        available = be[i].available;
        if (!available) printf("%s: not available: %s\n", name, be[i].note);
    }
    if (!available) return backend_required(name) ? 1 : TEST_SKIP;
    backend = name;
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, reset_compute, NULL);
    tcase_add_loop_test(tc, fixture_forward, 0, N_MODELS);
    tcase_add_loop_test(tc, fixture_greedy_decode, 0, N_MODELS);
    tcase_add_test(tc, prefill_seqs_match_cpu);
    tcase_add_test(tc, step_begin_matches_cpu);
    tcase_add_test(tc, two_devices_in_one_thread);
    tcase_add_loop_test(tc, fixture_scan, 0, 4);
    tcase_add_loop_test(tc, scan_matches_cpu, 0, (int)(sizeof scan_shapes / sizeof scan_shapes[0]));
    tcase_add_loop_test(tc, fixture_scan_backward, 0, 3);
    tcase_add_loop_test(tc, scan_backward_matches_cpu, 0, (int)(sizeof bwd_shapes / sizeof bwd_shapes[0]));
    tcase_add_test(tc, scan_backward_memory);
    if (strcmp(name, "cuda") == 0) tcase_add_test(tc, scan_backward_segments_match_cpu);
    tcase_add_test(tc, host_logits_match);
    tcase_add_test(tc, half_weights_match_cpu);
    tcase_add_test(tc, batched_steps_16bit_match_cpu);
    tcase_add_test(tc, large_gemms_match_cpu);
    tcase_add_test(tc, bench_entry_points_match_cpu);
    tcase_add_loop_test(tc, decode_graph_survives_scratch_growth, 0, 3);
    tcase_add_loop_test(tc, state_sizes_match_cpu, 0, 3);
    tcase_add_test(tc, conv_rejects_bad_width);
    suite_add_tcase(s, tc);
    /* CUDA cannot be used in a child forked after the parent initialized it (listing the
     * backends does), so the GPU suites run in one process. */
    return run_suite(s, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s opencl|cuda\n", argv[0]);
        return 2;
    }
    return run_backend(argv[1]);
}
