/* The selective scan op: the fixtures of mamba_ssm's selective_scan_ref, and an independent
 * float64 reference for layouts, group modes and sizes the fixtures do not cover. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Bound of the issue: max |out - ref| <= 1e-5 * max |ref|. */
#define REL_BOUND 1e-5

static const char *const cases[] = {"basic", "one_step", "long_chunked", "plain"};

START_TEST(fixture_case)
{
    scan_fixture f;
    scan_fixture_load(&f, cases[_i]);
    mamba_context_t *ctx = cpu_context(0);
    ck_assert_msg(mamba_scan(ctx, &f.args) == MAMBA_OK, "%s", mamba_last_error(ctx));
    double e_out = max_abs_diff(f.out, f.ref_out, f.n_out), m_out = max_abs(f.ref_out, f.n_out);
    double e_st = max_abs_diff(f.state, f.ref_state, f.n_state), m_st = max_abs(f.ref_state, f.n_state);
    ck_assert_msg(e_out <= REL_BOUND * m_out, "%s: out max err %g vs bound %g", cases[_i], e_out, REL_BOUND * m_out);
    ck_assert_msg(e_st <= REL_BOUND * m_st, "%s: state max err %g vs bound %g", cases[_i], e_st, REL_BOUND * m_st);
    ck_assert_double_lt(nmse(f.out, f.ref_out, f.n_out), 1e-12);
    mamba_context_free(ctx);
    scan_fixture_free(&f);
}
END_TEST

/* ---- independent reference, time-major layout (batch, L, dim) ---- */

typedef struct problem {
    size_t B, D, L, N, G;
    int bc_mode;            /* 0 input-dependent (batch, L, N), 1 constant (dim, N), 2 grouped (batch, L, G, N) */
    float *u, *delta, *A, *Bm, *Cm, *Dv, *z, *bias, *s0;
} problem;

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static float *rand_array(size_t n, float lo, float hi, uint64_t *s)
{
    float *v = malloc(n * sizeof *v + 4);
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * 0.5f * (frand(s) + 1.0f);
    return v;
}

static problem make_problem(size_t B, size_t D, size_t L, size_t N, size_t G, int mode, uint64_t seed)
{
    problem p = {B, D, L, N, G, mode, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    uint64_t s = seed;
    p.u = rand_array(B * L * D, -2, 2, &s);
    p.delta = rand_array(B * L * D, -4, 1, &s);
    p.A = rand_array(D * N, -3, -0.05f, &s);
    size_t nbc = mode == 1 ? D * N : B * L * G * N;
    p.Bm = rand_array(nbc, -1, 1, &s);
    p.Cm = rand_array(nbc, -1, 1, &s);
    p.Dv = rand_array(D, -1, 1, &s);
    p.z = rand_array(B * L * D, -3, 3, &s);
    p.bias = rand_array(D, -1, 0.5f, &s);
    p.s0 = rand_array(B * D * N, -1, 1, &s);
    return p;
}

static void free_problem(problem *p)
{
    free(p->u); free(p->delta); free(p->A); free(p->Bm); free(p->Cm); free(p->Dv); free(p->z); free(p->bias); free(p->s0);
}

static double bc(const problem *p, const float *m, size_t b, size_t t, size_t d, size_t n)
{
    if (p->bc_mode == 1) return m[d * p->N + n];
    size_t g = p->bc_mode == 2 ? d / (p->D / p->G) : 0, G = p->bc_mode == 2 ? p->G : 1;
    return m[((b * p->L + t) * G + g) * p->N + n];
}

/* The scan in float64, straight from the definition, on steps [t0, t1). */
static void reference(const problem *p, size_t t0, size_t t1, double *out, double *state)
{
    for (size_t b = 0; b < p->B; b++)
        for (size_t d = 0; d < p->D; d++) {
            double *h = state + (b * p->D + d) * p->N;
            for (size_t t = t0; t < t1; t++) {
                size_t i = (b * p->L + t) * p->D + d;
                double x = (double)p->delta[i] + p->bias[d];
                double dt = x > 20 ? x : log1p(exp(x));
                double y = 0;
                for (size_t n = 0; n < p->N; n++) {
                    /* the analyzer cannot relate bc()'s index to make_problem's sizes */
                    // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
                    h[n] = exp(dt * p->A[d * p->N + n]) * h[n] + dt * bc(p, p->Bm, b, t, d, n) * p->u[i];
                    y += bc(p, p->Cm, b, t, d, n) * h[n];
                }
                y += (double)p->Dv[d] * p->u[i];
                double zz = p->z[i];
                out[i] = y * zz / (1 + exp(-zz));
            }
        }
}

static mamba_scan_args_t args_of(const problem *p, size_t t0, size_t t1, float *out, const float *s_in, float *s_out)
{
    const size_t D = p->D, L = p->L, N = p->N;
    mamba_scan_args_t a = {
        .batch = p->B, .dim = D, .len = t1 - t0, .d_state = N, .n_groups = 1,
        .u = p->u + t0 * D, .u_sb = (ptrdiff_t)(L * D), .u_st = (ptrdiff_t)D, .u_sd = 1,
        .delta = p->delta + t0 * D, .delta_sb = (ptrdiff_t)(L * D), .delta_st = (ptrdiff_t)D, .delta_sd = 1,
        .A = p->A, .D = p->Dv, .z = p->z + t0 * D, .z_sb = (ptrdiff_t)(L * D), .z_st = (ptrdiff_t)D, .z_sd = 1,
        .delta_bias = p->bias, .delta_softplus = 1, .state_in = s_in, .state_out = s_out,
        .out = out + t0 * D, .out_sb = (ptrdiff_t)(L * D), .out_st = (ptrdiff_t)D, .out_sd = 1,
    };
    if (p->bc_mode == 1) {
        a.n_groups = D;
        a.B = p->Bm; a.B_sg = (ptrdiff_t)N; a.B_sn = 1;
        a.C = p->Cm; a.C_sg = (ptrdiff_t)N; a.C_sn = 1;
    } else {
        size_t G = p->bc_mode == 2 ? p->G : 1;
        a.n_groups = G;
        a.B = p->Bm + t0 * G * N; a.B_sb = (ptrdiff_t)(L * G * N); a.B_st = (ptrdiff_t)(G * N); a.B_sg = (ptrdiff_t)N; a.B_sn = 1;
        a.C = p->Cm + t0 * G * N; a.C_sb = (ptrdiff_t)(L * G * N); a.C_st = (ptrdiff_t)(G * N); a.C_sg = (ptrdiff_t)N; a.C_sn = 1;
    }
    return a;
}

static void check_against_reference(const problem *p, size_t split)
{
    const size_t n_out = p->B * p->L * p->D, n_state = p->B * p->D * p->N;
    double *ro = calloc(n_out, sizeof *ro), *rs = malloc(n_state * sizeof *rs);
    for (size_t i = 0; i < n_state; i++) rs[i] = p->s0[i];
    reference(p, 0, p->L, ro, rs);
    float *out = calloc(n_out, 4), *state = calloc(n_state, 4);
    mamba_context_t *ctx = cpu_context(0);
    /* in two calls when split: the state written by the first is read by the second, in place */
    memcpy(state, p->s0, n_state * 4);
    size_t cut = split ? split : p->L;
    mamba_scan_args_t a = args_of(p, 0, cut, out, state, state);
    ck_assert_msg(mamba_scan(ctx, &a) == MAMBA_OK, "%s", mamba_last_error(ctx));
    if (cut < p->L) {
        a = args_of(p, cut, p->L, out, state, state);
        ck_assert_msg(mamba_scan(ctx, &a) == MAMBA_OK, "%s", mamba_last_error(ctx));
    }
    float *rof = malloc(n_out * 4), *rsf = malloc(n_state * 4);
    for (size_t i = 0; i < n_out; i++) rof[i] = (float)ro[i];
    for (size_t i = 0; i < n_state; i++) rsf[i] = (float)rs[i];
    double eo = max_abs_diff(out, rof, n_out), es = max_abs_diff(state, rsf, n_state);
    ck_assert_msg(eo <= REL_BOUND * max_abs(rof, n_out), "B%zu D%zu L%zu N%zu mode %d: out err %g, max %g", p->B, p->D,
                  p->L, p->N, p->bc_mode, eo, max_abs(rof, n_out));
    ck_assert_msg(es <= REL_BOUND * max_abs(rsf, n_state), "B%zu D%zu L%zu N%zu mode %d: state err %g", p->B, p->D, p->L,
                  p->N, p->bc_mode, es);
    mamba_context_free(ctx);
    free(ro); free(rs); free(out); free(state); free(rof); free(rsf);
}

/* B, D, L, N, G, mode, split */
static const size_t shapes[][7] = {
    {1, 32, 50, 16, 1, 0, 0},   {2, 17, 33, 16, 1, 0, 0},  {5, 48, 9, 1, 1, 0, 0},   {1, 16, 20, 4, 1, 0, 0},
    {1, 64, 12, 64, 1, 0, 0},   {1, 16, 3, 256, 1, 0, 0},  {2, 32, 40, 16, 1, 1, 0}, {2, 64, 30, 8, 4, 2, 0},
    {1, 48, 1, 16, 1, 0, 0},    {2, 32, 61, 16, 1, 0, 25}, {1, 40, 30, 16, 1, 0, 1}, {3, 64, 19, 16, 2, 2, 7},
};

START_TEST(matches_reference)
{
    const size_t *s = shapes[_i];
    problem p = make_problem(s[0], s[1], s[2], s[3], s[4], (int)s[5], 1234 + (uint64_t)_i);
    check_against_reference(&p, s[6]);
    free_problem(&p);
}
END_TEST

START_TEST(rejects_bad_arguments)
{
    problem p = make_problem(1, 32, 4, 16, 1, 0, 1);
    float out[128];
    mamba_context_t *ctx = cpu_context(0);
    mamba_scan_args_t a = args_of(&p, 0, 4, out, NULL, NULL);
    a.len = 0;
    ck_assert_int_eq(mamba_scan(ctx, &a), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "len 0"));
    a = args_of(&p, 0, 4, out, NULL, NULL);
    a.n_groups = 3;
    ck_assert_int_eq(mamba_scan(ctx, &a), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "n_groups"));
    a = args_of(&p, 0, 4, out, NULL, NULL);
    a.d_state = 300;
    ck_assert_int_eq(mamba_scan(ctx, &a), MAMBA_ERR_UNSUPPORTED);
    a = args_of(&p, 0, 4, out, NULL, NULL);
    a.u = NULL;
    ck_assert_int_eq(mamba_scan(ctx, &a), MAMBA_ERR_INVALID_ARGUMENT);
    a = args_of(&p, 0, 4, out, NULL, NULL);
    a.u_st = -1;
    ck_assert_int_eq(mamba_scan(ctx, &a), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_context_free(ctx);
    free_problem(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("scan");
    TCase *tc = tcase_create("scan");
    tcase_add_loop_test(tc, fixture_case, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_loop_test(tc, matches_reference, 0, (int)(sizeof shapes / sizeof shapes[0]));
    tcase_add_test(tc, rejects_bad_arguments);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
