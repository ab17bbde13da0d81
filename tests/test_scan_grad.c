/* The selective scan's backward (mamba_scan_backward) on the CPU: the float64 autograd
 * fixtures of selective_scan_ref, central differences of an independent float64 forward on
 * tiny cases of every B/C layout, bitwise determinism, and the working memory of the plan. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/scan_bwd.h"
#include "testutil.h"

/* Bound of the issue: max |grad - ref| <= 1e-5 * max |ref|, per tensor. */
#define REL_BOUND 1e-5

/* n, or fewer where OMP_NUM_THREADS says so: under ThreadSanitizer (.ci/run sets
 * OMP_NUM_THREADS=1) libgomp's barriers are not instrumented and every parallel region would
 * read as a race. */
static int threads_at_most(int n)
{
    const char *env = getenv("OMP_NUM_THREADS");
    const long cap = env ? strtol(env, NULL, 10) : 0;
    return cap > 0 && cap < n ? (int)cap : n;
}

static mamba_context_t *cpu_threads(int n)
{
    n = threads_at_most(n);
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cpu";
    o.n_threads = n;
    o.log_level = MAMBA_LOG_ERROR;
    mamba_context_t *ctx = NULL;
    ck_assert_msg(mamba_context_create(&o, &ctx) == MAMBA_OK, "%s", mamba_last_error(NULL));
    return ctx;
}

static const char *const fixtures[] = {"basic", "long", "plain"};

START_TEST(fixture_case)
{
    grad_fixture f;
    grad_fixture_load(&f, fixtures[_i]);
    mamba_context_t *ctx = cpu_threads(2);
    ck_assert_msg(mamba_scan_backward(ctx, &f.args, f.dout, &f.grads) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_int_ge(f.count, 5);
    for (int k = 0; k < f.count; k++) {
        const double e = max_abs_diff(f.got[k], f.ref[k], f.n[k]), m = max_abs(f.ref[k], f.n[k]);
        printf("cpu scan backward %s %s: max err %.3g of max %.3g (%.2g relative)\n", fixtures[_i], f.names[k], e, m,
               e / m);
        ck_assert_msg(e <= REL_BOUND * m, "%s %s: err %g, bound %g", fixtures[_i], f.names[k], e, REL_BOUND * m);
    }
    mamba_context_free(ctx);
    grad_fixture_free(&f);
}
END_TEST

/* ---- random problems in the time-major layout, every B/C layout ---- */

enum { U, DL, AA, BB, CC, DD, ZZ, BIAS, S0, DOUT, DSOUT, N_IN };
/* B/C layouts: 0 input-dependent (batch, L, N); 1 constant (dim, N); 2 grouped (batch, L, G, N);
 * 3 B constant and C input-dependent read by every channel (C_sg = 0, n_groups = dim), as
 * `mamba scan` expresses that pair; 4 shared by the batch (L, N); 5 constant in time, per batch
 * and group (batch, G, N) */
typedef struct gcase {
    size_t B, D, L, N, G;
    int mode, plain; /* plain: no D, z, delta_bias, softplus, state_in or dstate_out */
} gcase;

typedef struct problem {
    gcase c;
    mamba_scan_args_t a;
    float *in[N_IN];
    size_t n[N_IN];
} problem;

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f;
}

static float *fill(size_t n, float lo, float hi, uint64_t *s)
{
    float *v = malloc(n * sizeof *v + 4);
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * frand(s);
    return v;
}

/* one of B (which 0) or C (1) in mode: its element count and strides (sb, st, sg, sn) */
static size_t bc_layout(const gcase *c, int which, ptrdiff_t *s)
{
    const size_t B = c->B, L = c->L, N = c->N, D = c->D, G = c->G;
    int m = c->mode;
    if (m == 3) m = which ? 6 : 1;
    switch (m) {
    case 1: s[0] = 0; s[1] = 0; s[2] = (ptrdiff_t)N; s[3] = 1; return D * N;
    case 2: s[0] = (ptrdiff_t)(L * G * N); s[1] = (ptrdiff_t)(G * N); s[2] = (ptrdiff_t)N; s[3] = 1; return B * L * G * N;
    case 4: s[0] = 0; s[1] = (ptrdiff_t)N; s[2] = 0; s[3] = 1; return L * N;
    case 5: s[0] = (ptrdiff_t)(G * N); s[1] = 0; s[2] = (ptrdiff_t)N; s[3] = 1; return B * G * N;
    default: s[0] = (ptrdiff_t)(L * N); s[1] = (ptrdiff_t)N; s[2] = 0; s[3] = 1; return B * L * N; /* 0 and 6 */
    }
}

static size_t groups_of(const gcase *c)
{
    return c->mode == 1 || c->mode == 3 ? c->D : c->mode == 2 || c->mode == 5 ? c->G : 1;
}

static problem make_problem(gcase c, uint64_t seed)
{
    problem p;
    memset(&p, 0, sizeof p);
    p.c = c;
    uint64_t s = seed;
    const size_t B = c.B, L = c.L, D = c.D, N = c.N, BLD = B * L * D;
    ptrdiff_t sB[4], sC[4];
    p.n[U] = p.n[DL] = p.n[ZZ] = p.n[DOUT] = BLD;
    p.n[AA] = D * N;
    p.n[BB] = bc_layout(&c, 0, sB);
    p.n[CC] = bc_layout(&c, 1, sC);
    p.n[DD] = p.n[BIAS] = D;
    p.n[S0] = p.n[DSOUT] = B * D * N;
    p.in[U] = fill(BLD, -2, 2, &s);
    p.in[DL] = c.plain ? fill(BLD, 0.01f, 1.0f, &s) : fill(BLD, -4, 1, &s);
    p.in[AA] = fill(D * N, -3, -0.05f, &s);
    p.in[BB] = fill(p.n[BB], -1, 1, &s);
    p.in[CC] = fill(p.n[CC], -1, 1, &s);
    p.in[DD] = fill(D, -1, 1, &s);
    p.in[ZZ] = fill(BLD, -3, 3, &s);
    p.in[BIAS] = fill(D, -1, 0.5f, &s);
    p.in[S0] = fill(B * D * N, -1, 1, &s);
    p.in[DOUT] = fill(BLD, -1, 1, &s);
    p.in[DSOUT] = fill(B * D * N, -1, 1, &s);
    /* past softplus' threshold, where its derivative is 1 */
    if (!c.plain)
        for (size_t i = 5; i < BLD; i += 11) p.in[DL][i] = 25.0f;
    const ptrdiff_t sb = (ptrdiff_t)(L * D), st = (ptrdiff_t)D;
    mamba_scan_args_t a = {
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = groups_of(&c),
        .u = p.in[U], .u_sb = sb, .u_st = st, .u_sd = 1,
        .delta = p.in[DL], .delta_sb = sb, .delta_st = st, .delta_sd = 1,
        .A = p.in[AA],
        .B = p.in[BB], .B_sb = sB[0], .B_st = sB[1], .B_sg = sB[2], .B_sn = sB[3],
        .C = p.in[CC], .C_sb = sC[0], .C_st = sC[1], .C_sg = sC[2], .C_sn = sC[3],
        .D = c.plain ? NULL : p.in[DD],
        .z = c.plain ? NULL : p.in[ZZ], .z_sb = sb, .z_st = st, .z_sd = 1,
        .delta_bias = c.plain ? NULL : p.in[BIAS], .delta_softplus = !c.plain,
        .state_in = c.plain ? NULL : p.in[S0],
        .out_sb = sb, .out_st = st, .out_sd = 1,
    };
    p.a = a;
    return p;
}

static void free_problem(problem *p)
{
    for (int k = 0; k < N_IN; k++) free(p->in[k]);
}

/* sum(out * dout) + sum(last state * dstate_out), in float64 from the definition, with the
 * inputs x[k] laid out as p's float arrays. */
static double loss64(const problem *p, double *const x[N_IN])
{
    const mamba_scan_args_t *a = &p->a;
    const size_t B = a->batch, D = a->dim, L = a->len, N = a->d_state, gs = D / a->n_groups;
    const int plain = p->c.plain;
    double loss = 0, h[256];
    for (size_t b = 0; b < B; b++)
        for (size_t d = 0; d < D; d++) {
            const size_t g = d / gs;
            for (size_t n = 0; n < N; n++) h[n] = plain ? 0 : x[S0][(b * D + d) * N + n];
            for (size_t t = 0; t < L; t++) {
                const size_t i = b * (size_t)a->u_sb + t * (size_t)a->u_st + d;
                const double raw = x[DL][i] + (plain ? 0 : x[BIAS][d]);
                const double dt = plain ? raw : raw > 20 ? raw : log1p(exp(raw));
                double y = 0;
                for (size_t n = 0; n < N; n++) {
                    const double bn = x[BB][b * a->B_sb + t * a->B_st + g * a->B_sg + n * a->B_sn];
                    const double cn = x[CC][b * a->C_sb + t * a->C_st + g * a->C_sg + n * a->C_sn];
                    h[n] = exp(dt * x[AA][d * N + n]) * h[n] + dt * bn * x[U][i];
                    y += cn * h[n];
                }
                if (!plain) {
                    y += x[DD][d] * x[U][i];
                    y *= x[ZZ][i] / (1 + exp(-x[ZZ][i]));
                }
                loss += y * x[DOUT][i];
            }
            if (!plain)
                for (size_t n = 0; n < N; n++) loss += h[n] * x[DSOUT][(b * D + d) * N + n];
        }
    return loss;
}

/* The backward's outputs, one array per input that has a gradient (zeroed first). */
typedef struct grads {
    float *g[N_IN];
    mamba_scan_grads_t api;
} grads;

static void run_backward(mamba_context_t *ctx, const problem *p, grads *out)
{
    memset(out, 0, sizeof *out);
    for (int k = 0; k <= S0; k++) out->g[k] = calloc(p->n[k] + 1, sizeof(float));
    mamba_scan_grads_t g = {out->g[U], out->g[DL], out->g[AA], out->g[BB], out->g[CC], NULL, NULL, NULL, NULL, NULL};
    if (!p->c.plain) {
        g.dD = out->g[DD];
        g.dz = out->g[ZZ];
        g.ddelta_bias = out->g[BIAS];
        g.dstate_in = out->g[S0];
        g.dstate_out = p->in[DSOUT];
    }
    out->api = g;
    ck_assert_msg(mamba_scan_backward(ctx, &p->a, p->in[DOUT], &out->api) == MAMBA_OK, "%s", mamba_last_error(ctx));
}

static void free_grads(grads *g)
{
    for (int k = 0; k < N_IN; k++) free(g->g[k]);
}

static const char *const in_names[N_IN] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dstate_in"};

/* B, D, L, N, G, mode, plain: chunks of 16 steps from L = 17 on, several tiles of 16 channels
 * in a class from D = 17 on */
static const gcase fd_cases[] = {
    {2, 6, 9, 3, 1, 0, 0},  {2, 6, 40, 4, 1, 0, 0}, {1, 4, 1, 5, 1, 0, 0},  {2, 6, 20, 3, 1, 1, 0},
    {2, 6, 20, 3, 3, 2, 0}, {2, 6, 20, 3, 1, 3, 0}, {3, 4, 20, 2, 1, 4, 0}, {2, 4, 18, 3, 2, 5, 0},
    {1, 3, 17, 1, 1, 0, 0}, {1, 4, 6, 64, 1, 0, 0}, {1, 2, 3, 256, 1, 0, 0}, {2, 5, 19, 4, 1, 0, 1},
    {1, 40, 20, 2, 1, 0, 0}, {1, 40, 20, 2, 2, 2, 0}, {2, 40, 18, 2, 1, 4, 1},
};

START_TEST(finite_differences)
{
    const gcase c = fd_cases[_i];
    problem p = make_problem(c, 77 + (uint64_t)_i);
    mamba_context_t *ctx = cpu_threads(2);
    grads g;
    run_backward(ctx, &p, &g);
    double *x[N_IN];
    for (int k = 0; k < N_IN; k++) {
        x[k] = malloc(p.n[k] * sizeof *x[k]);
        for (size_t i = 0; i < p.n[k]; i++) x[k][i] = p.in[k][i];
    }
    for (int k = 0; k <= S0; k++) {
        if (c.plain && k >= DD) continue;
        float *fd = malloc(p.n[k] * sizeof *fd);
        for (size_t i = 0; i < p.n[k]; i++) {
            const double keep = x[k][i], h = 1e-6 * fmax(1.0, fabs(keep));
            x[k][i] = keep + h;
            const double up = loss64(&p, x);
            x[k][i] = keep - h;
            const double down = loss64(&p, x);
            x[k][i] = keep;
            fd[i] = (float)((up - down) / (2 * h));
        }
        const double e = max_abs_diff(g.g[k], fd, p.n[k]), m = max_abs(fd, p.n[k]);
        if (e > REL_BOUND * m || _i == 0)
            printf("B%zu D%zu L%zu N%zu mode %d%s %s: max err %.3g of max %.3g\n", c.B, c.D, c.L, c.N, c.mode,
                   c.plain ? " plain" : "", in_names[k], e, m);
        ck_assert_msg(m > 0, "%s: the reference gradient is zero", in_names[k]);
        ck_assert_msg(e <= REL_BOUND * m, "B%zu D%zu L%zu N%zu mode %d: %s err %g, bound %g", c.B, c.D, c.L, c.N,
                      c.mode, in_names[k], e, REL_BOUND * m);
        free(fd);
    }
    for (int k = 0; k < N_IN; k++) free(x[k]);
    free_grads(&g);
    mamba_context_free(ctx);
    free_problem(&p);
}
END_TEST

/* Two runs on two threads give the same bits, and so does one thread (the partial sums are
 * per tile, folded in index order, whatever runs them). */
START_TEST(deterministic)
{
    const gcase cs[] = {{2, 48, 300, 16, 1, 0, 0}, {2, 48, 300, 16, 4, 2, 0}, {2, 48, 300, 16, 1, 1, 0}};
    problem p = make_problem(cs[_i], 5);
    mamba_context_t *c2 = cpu_threads(2), *c1 = cpu_threads(1);
    grads g[3];
    run_backward(c2, &p, &g[0]);
    run_backward(c2, &p, &g[1]);
    run_backward(c1, &p, &g[2]);
    for (int r = 1; r < 3; r++)
        for (int k = 0; k <= S0; k++)
            ck_assert_msg(memcmp(g[0].g[k], g[r].g[k], p.n[k] * sizeof(float)) == 0, "run %d: %s differs", r,
                          in_names[k]);
    for (int r = 0; r < 3; r++) free_grads(&g[r]);
    mamba_context_free(c1);
    mamba_context_free(c2);
    free_problem(&p);
}
END_TEST

/* A constant B and C (dim, N) against the same values laid out input-dependent with dim
 * groups (batch, L, dim, N): the constant's gradient is the sum of the other's over batch and
 * time; the other gradients agree. Several chunks and tiles. */
START_TEST(constant_as_grouped)
{
    problem p = make_problem((gcase){2, 40, 300, 8, 1, 1, 0}, 9);
    const size_t B = 2, D = 40, L = 300, N = 8;
    problem q = p;
    float *xb = malloc(B * L * D * N * sizeof *xb), *xc = malloc(B * L * D * N * sizeof *xc);
    for (size_t i = 0; i < B * L; i++) {
        memcpy(xb + i * D * N, p.in[BB], D * N * sizeof *xb);
        memcpy(xc + i * D * N, p.in[CC], D * N * sizeof *xc);
    }
    q.a.B = xb;
    q.a.C = xc;
    q.a.B_sb = q.a.C_sb = (ptrdiff_t)(L * D * N);
    q.a.B_st = q.a.C_st = (ptrdiff_t)(D * N);
    q.n[BB] = q.n[CC] = B * L * D * N;
    mamba_context_t *ctx = cpu_threads(2);
    grads gp, gq;
    run_backward(ctx, &p, &gp);
    run_backward(ctx, &q, &gq);
    for (int k = 0; k <= S0; k++) {
        if (k == BB || k == CC) {
            float *sum = calloc(D * N, sizeof *sum);
            for (size_t i = 0; i < B * L; i++)
                for (size_t j = 0; j < D * N; j++) sum[j] += gq.g[k][i * D * N + j];
            const double e = max_abs_diff(gp.g[k], sum, D * N), m = max_abs(sum, D * N);
            printf("constant %s vs the grouped sum: max err %.3g of max %.3g\n", in_names[k], e, m);
            ck_assert_double_le(e, REL_BOUND * m);
            free(sum);
        } else {
            const double e = max_abs_diff(gp.g[k], gq.g[k], p.n[k]);
            ck_assert_msg(e <= REL_BOUND * max_abs(gq.g[k], p.n[k]), "%s: err %g", in_names[k], e);
        }
    }
    free_grads(&gp);
    free_grads(&gq);
    free(xb);
    free(xc);
    mamba_context_free(ctx);
    free_problem(&p);
}
END_TEST

/* The device memory of a backward is its staged arrays plus the plan's scratch, and the plan
 * of the (1, 1536, 65536, 16) backward on a GPU stays under 1 GiB. */
START_TEST(memory_of_the_plan)
{
    problem p = make_problem((gcase){2, 48, 300, 16, 1, 0, 0}, 3);
    mamba_context_t *ctx = cpu_threads(2);
    uint64_t cur0, peak;
    ck_assert_int_eq(mamba_memory_reset_peak(ctx), MAMBA_OK);
    ck_assert_int_eq(mamba_memory_usage(ctx, &cur0, &peak), MAMBA_OK);
    grads g;
    run_backward(ctx, &p, &g);
    uint64_t cur1;
    ck_assert_int_eq(mamba_memory_usage(ctx, &cur1, &peak), MAMBA_OK);
    ck_assert_uint_eq(cur1, cur0);
    /* what core/scan_grad.c stages, each array rounded up to 256 bytes */
    size_t staged = 0;
    for (int k = 0; k < N_IN; k++) staged += (p.n[k] * 4 + 255) / 256 * 256;          /* inputs */
    for (int k = 0; k <= S0; k++) staged += (p.n[k] * 4 + 255) / 256 * 256;           /* gradients */
    static char present;
    mb_buffer *fake = (mb_buffer *)(void *)&present; /* only tested against NULL */
    mb_scan_bwd_op op = {
        .fwd = {.batch = 2, .dim = 48, .len = 300, .d_state = 16, .n_groups = 1, .B_st = 16, .C_st = 16},
        .dA = {fake, 0}, .dB = {fake, 0}, .dC = {fake, 0}, .dD = {fake, 0}, .ddelta_bias = {fake, 0},
    };
    mb_scan_bwd_plan pl;
    mb_scan_bwd_plan_init(&pl, &op, 16, (size_t)threads_at_most(2));
    printf("cpu backward (2, 48, 300, 16): peak %llu bytes = staged %zu + scratch %zu\n",
           (unsigned long long)(peak - cur0), staged, pl.total * 4);
    ck_assert_uint_eq(peak - cur0, staged + pl.total * 4);
    /* the GPU layout of the long case: tiles of 64 channels */
    op.fwd.dim = 1536;
    op.fwd.len = 65536;
    op.fwd.batch = 1;
    mb_scan_bwd_plan_init(&pl, &op, 64, 0);
    printf("gpu backward (1, 1536, 65536, 16): %zu-step chunks, scratch %.1f MiB\n", pl.chunk_len,
           (double)pl.total * 4 / 1048576.0);
    ck_assert_uint_lt(pl.total * 4, 1u << 30);
    mb_scan_bwd_plan_parallel(&pl, &op, MB_SCAN_BWD_PPARTS); /* CUDA's for N <= 16 */
    printf("gpu chunk-parallel backward (1, 1536, 65536, 16): %zu chunks, %zu a segment, scratch %.1f MiB\n",
           pl.n_chunks, pl.seg_chunks, (double)pl.total * 4 / 1048576.0);
    ck_assert_uint_lt(pl.total * 4, 1u << 30);
    ck_assert_uint_lt(pl.seg_chunks, pl.n_chunks); /* the partial sums are taken in segments */
    free_grads(&g);
    mamba_context_free(ctx);
    free_problem(&p);
}
END_TEST

START_TEST(rejects_bad_arguments)
{
    problem p = make_problem((gcase){1, 8, 5, 4, 1, 0, 0}, 1);
    mamba_context_t *ctx = cpu_threads(1);
    float dz[40], du[40];
    mamba_scan_grads_t g = {.dz = dz};
    mamba_scan_args_t a = p.a;
    a.z = NULL;
    ck_assert_int_eq(mamba_scan_backward(ctx, &a, p.in[DOUT], &g), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "dz"));
    ck_assert_int_eq(mamba_scan_backward(ctx, &p.a, NULL, &g), MAMBA_ERR_INVALID_ARGUMENT);
    g = (mamba_scan_grads_t){.du = du};
    a = p.a;
    a.u_st = 0;
    ck_assert_int_eq(mamba_scan_backward(ctx, &a, p.in[DOUT], &g), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(ctx), "overlap"));
    a = p.a;
    a.d_state = 300;
    ck_assert_int_eq(mamba_scan_backward(ctx, &a, p.in[DOUT], &g), MAMBA_ERR_UNSUPPORTED);
    a = p.a;
    a.n_groups = 3;
    ck_assert_int_eq(mamba_scan_backward(ctx, &a, p.in[DOUT], &g), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_scan_backward(NULL, &p.a, p.in[DOUT], &g), MAMBA_ERR_INVALID_ARGUMENT);
    mamba_context_free(ctx);
    free_problem(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("scan_grad");
    TCase *tc = tcase_create("scan_grad");
    tcase_add_loop_test(tc, fixture_case, 0, (int)(sizeof fixtures / sizeof fixtures[0]));
    tcase_add_loop_test(tc, finite_differences, 0, (int)(sizeof fd_cases / sizeof fd_cases[0]));
    tcase_add_loop_test(tc, deterministic, 0, 3);
    tcase_add_test(tc, constant_as_grouped);
    tcase_add_test(tc, memory_of_the_plan);
    tcase_add_test(tc, rejects_bad_arguments);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
