/* The training ops (mb_train_ops) of every backend against double-precision references
 * computed here, on random inputs of awkward sizes; the conv and RMSNorm backwards also
 * against finite differences of their forward formulas in double.
 *
 * Backends: cpu always (its vtable from the CPU backend's objects, linked into this test);
 * opencl and cuda through their modules beside libmamba.so. A backend whose module or device
 * is absent, or whose vtable has no train table, is skipped, and a failure when
 * MAMBA_TEST_REQUIRE names it. Usage: test_train_ops [cpu|opencl|cuda ...] (default: all);
 * exit 0 when every backend run passed, 1 on a failure, 77 when every one named was skipped.
 *
 * Bound: |got - ref| <= TOL x max |ref| over the tensor (TOL = 1e-5). An fp32 result of
 * sums of up to a few hundred terms, or of a double-accumulated sum, is within a few 1e-7
 * of that scale; 1e-5 leaves room for a GPU's different summation order (and a tree sum of
 * 1e6 terms, ~log2(n) eps = 1.2e-6), while an error in a formula (a missing term, a wrong
 * tap, an unscaled row) moves results by far more. Where a result is the difference of two
 * larger terms (RMSNorm's dx), the scale is the larger term's, the size of fp32's rounding. */
#define _GNU_SOURCE /* dladdr */
#include <check.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/backend.h"
#include "testutil.h"

#define TOL 1e-5

static const char *backend;   /* the backend under test */
static const mb_backend *be;
static const mb_train_ops *T;
static mb_device *dev;

/* ---- what a test allocates, freed by the fixture's teardown (also after a failure) ---- */

#define MAX_HELD 256
static struct held {
    mb_buffer *buf;
    void *host;
} held[MAX_HELD];
static size_t n_held;

static size_t mark(void) { return n_held; }

static void release(size_t m)
{
    while (n_held > m) {
        struct held *h = &held[--n_held];
        if (h->buf) be->device->free(dev, h->buf);
        free(h->host);
        h->buf = NULL;
        h->host = NULL;
    }
}

static void hold(mb_buffer *buf, void *host)
{
    ck_assert_uint_lt(n_held, MAX_HELD);
    held[n_held++] = (struct held){buf, host};
}

static void *hnew(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    ck_assert_ptr_nonnull(p);
    hold(NULL, p);
    return p;
}
static float *hf(size_t n) { return hnew(n * sizeof(float)); }
static double *hd(size_t n) { return hnew(n * sizeof(double)); }

/* Device tensors sit PAD bytes into their buffers, so that every op is checked to honour
 * mb_ptr offsets. */
#define PAD 256

static mb_ptr dnew(size_t bytes)
{
    mb_buffer *b = NULL;
    ck_assert_msg(be->device->alloc(dev, bytes + PAD, &b) == 0, "%s: alloc of %zu bytes: %s", backend, bytes + PAD,
                  be->device->last_error(dev));
    hold(b, NULL);
    return (mb_ptr){b, PAD};
}

static void put(mb_ptr p, const void *src, size_t bytes)
{
    if (bytes) ck_assert_msg(be->device->upload(dev, p, src, bytes) == 0, "%s", be->device->last_error(dev));
}

static mb_ptr dput(const void *src, size_t bytes)
{
    mb_ptr p = dnew(bytes);
    put(p, src, bytes);
    return p;
}

static void get(void *dst, mb_ptr p, size_t bytes)
{
    if (bytes) ck_assert_msg(be->device->download(dev, dst, p, bytes) == 0, "%s", be->device->last_error(dev));
}

static const mb_ptr none = {NULL, 0};

#define OK(call) ck_assert_msg((call) == 0, "%s: %s: %s", backend, #call, be->device->last_error(dev))

/* ---- random inputs, references, comparisons ---- */

static uint64_t rng;
static void seed(uint64_t s) { rng = s * 0x9E3779B97F4A7C15ull + 1; }
/* uniform in [-1, 1) (splitmix64) */
static double urand(void)
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-52 - 1.0;
}
static float *hrand(size_t n, double scale)
{
    float *p = hf(n);
    for (size_t i = 0; i < n; i++) p[i] = (float)(scale * urand());
    return p;
}

static double dmax_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* got within TOL x scale of ref everywhere (scale <= 0: max |ref|, or 1 when that is 0). */
static void expect_close_scaled(const char *what, const float *got, const double *ref, size_t n, double scale)
{
    if (scale <= 0) scale = dmax_abs(ref, n);
    if (scale == 0) scale = 1;
    double err = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - ref[i]);
        if (!(e <= err)) { /* NaN counts as the largest */
            err = e;
            at = i;
            if (isnan(e)) break;
        }
    }
    const int ok = err <= TOL * scale;
    if (!ok || getenv("TRAIN_OPS_VERBOSE"))
        printf("%s %s: max err %.3g at %zu (got %.9g, ref %.9g), scale %.3g, relative %.3g\n", backend, what, err, at,
               n ? (double)got[at] : 0.0, n ? ref[at] : 0.0, scale, err / scale);
    ck_assert_msg(ok, "%s %s: error %.3g above %.1g x %.3g", backend, what, err, TOL, scale);
}
static void expect_close(const char *what, const float *got, const double *ref, size_t n)
{
    expect_close_scaled(what, got, ref, n, 0);
}

static void expect_same(const char *what, const void *a, const void *b, size_t bytes)
{
    ck_assert_msg(memcmp(a, b, bytes) == 0, "%s %s: two runs on the same inputs differ", backend, what);
}

/* ---- gemm_f32 ---- */

static const size_t gemm_sizes[4] = {1, 7, 33, 130};

/* c = alpha op(a) op(b) + beta c for one shape, with lda/ldb/ldc three past the stored
 * columns; the padding of c must come back untouched; run twice, bitwise the same. */
static void gemm_case(int ta, int tb, size_t m, size_t n, size_t k, float alpha, float beta)
{
    const size_t mk = mark();
    const size_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    const size_t lda = ac + 3, ldb = bc + 3, ldc = n + 3;
    float *a = hrand(ar * lda, 1), *b = hrand(br * ldb, 1), *c = hrand(m * ldc, 1);
    if (beta == 0.0f)
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) c[i * ldc + j] = NAN; /* not to be read */
    double *ref = hd(m * n);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t l = 0; l < k; l++)
                s += (double)(ta ? a[l * lda + i] : a[i * lda + l]) * (double)(tb ? b[j * ldb + l] : b[l * ldb + j]);
            ref[i * n + j] = (double)alpha * s + (beta == 0.0f ? 0.0 : (double)beta * c[i * ldc + j]);
        }
    mb_ptr da = dput(a, ar * lda * 4), db = dput(b, br * ldb * 4), dc = dput(c, m * ldc * 4);
    float *got[2] = {hf(m * ldc), hf(m * ldc)};
    for (int run = 0; run < 2; run++) {
        put(dc, c, m * ldc * 4);
        OK(T->gemm_f32(dev, ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dc, ldc));
        get(got[run], dc, m * ldc * 4);
    }
    expect_same("gemm_f32", got[0], got[1], m * ldc * 4);
    float *packed = hf(m * n);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < ldc; j++) {
            if (j < n) packed[i * n + j] = got[0][i * ldc + j];
            else ck_assert_msg(memcmp(&got[0][i * ldc + j], &c[i * ldc + j], 4) == 0,
                               "%s gemm_f32: c's padding at (%zu, %zu) was written", backend, i, j);
        }
    char what[128];
    snprintf(what, sizeof what, "gemm_f32 %c%c m %zu n %zu k %zu beta %g", ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k,
             (double)beta);
    expect_close(what, packed, ref, m * n);
    release(mk);
}

START_TEST(gemm_f32_shapes)
{
    const int ta = _i & 1, tb = _i >> 1;
    seed(100 + (uint64_t)_i);
    for (int im = 0; im < 4; im++)
        for (int in = 0; in < 4; in++)
            for (int ik = 0; ik < 4; ik++) {
                gemm_case(ta, tb, gemm_sizes[im], gemm_sizes[in], gemm_sizes[ik], 0.75f, -0.5f);
                gemm_case(ta, tb, gemm_sizes[im], gemm_sizes[in], gemm_sizes[ik], -1.25f, 0.0f);
            }
    gemm_case(ta, tb, 130, 33, 7, 1.0f, 1.0f); /* the trainer's accumulating GEMMs */
}
END_TEST

/* k = 0: c = beta c (beta 0: zeros, NaN not read); m = 0 or n = 0: nothing happens. */
START_TEST(gemm_f32_degenerate)
{
    const size_t m = 5, n = 3, ldc = 4;
    float c[20], got[20];
    for (int i = 0; i < 20; i++) c[i] = (float)i - 7.5f;
    mb_ptr da = dput(c, sizeof c), dc = dput(c, sizeof c);
    OK(T->gemm_f32(dev, 0, 1, m, n, 0, 2.0f, da, 1, da, 1, 0.5f, dc, ldc));
    get(got, dc, sizeof got);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < ldc; j++)
            ck_assert_float_eq(got[i * ldc + j], j < n ? 0.5f * c[i * ldc + j] : c[i * ldc + j]);
    float nan_c[20];
    for (int i = 0; i < 20; i++) nan_c[i] = NAN;
    put(dc, nan_c, sizeof nan_c);
    OK(T->gemm_f32(dev, 1, 0, m, n, 0, 2.0f, da, 5, da, 3, 0.0f, dc, ldc));
    get(got, dc, sizeof got);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) ck_assert_float_eq(got[i * ldc + j], 0.0f);
    put(dc, c, sizeof c);
    OK(T->gemm_f32(dev, 0, 0, 0, n, 4, 1.0f, da, 4, da, 3, 0.0f, dc, ldc));
    OK(T->gemm_f32(dev, 0, 0, m, 0, 4, 1.0f, da, 4, da, 1, 0.0f, dc, ldc));
    get(got, dc, sizeof got);
    ck_assert(memcmp(got, c, sizeof c) == 0);
}
END_TEST

/* ---- rmsnorm_backward ---- */

/* The double reference: dx (rows, dim) written or added to, dw added to; term[r, i] = |w dy| /
 * rms, the size of dx's two terms. */
static void rmsnorm_bwd_ref(const float *x, const float *w, const float *dy, size_t rows, size_t dim, double eps,
                            double *dx, double *dw, double *term)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim, *dyr = dy + r * dim;
        double ss = 0;
        for (size_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        const double rms = sqrt(ss / (double)dim + eps);
        double s = 0;
        for (size_t i = 0; i < dim; i++) s += (double)w[i] * dyr[i] * (xr[i] / rms);
        const double mean = s / (double)dim;
        for (size_t i = 0; i < dim; i++) {
            dx[r * dim + i] += ((double)w[i] * dyr[i] - xr[i] / rms * mean) / rms;
            term[r * dim + i] = fabs((double)w[i] * dyr[i]) / rms;
            dw[i] += (double)dyr[i] * (xr[i] / rms);
        }
    }
}

START_TEST(rmsnorm_backward_shapes)
{
    const int accumulate = _i;
    const size_t rows_list[3] = {1, 5, 37}, dims[4] = {1, 17, 64, 768};
    const float eps = 1e-5f;
    seed(200 + (uint64_t)_i);
    for (int ir = 0; ir < 3; ir++)
        for (int id = 0; id < 4; id++) {
            const size_t mk = mark(), rows = rows_list[ir], dim = dims[id], n = rows * dim;
            float *x = hrand(n, 2), *w = hrand(dim, 1.5), *dy = hrand(n, 1), *dx0 = hrand(n, 1), *dw0 = hrand(dim, 1);
            if (!accumulate)
                for (size_t i = 0; i < n; i++) dx0[i] = NAN; /* overwritten, never read */
            double *rdx = hd(n), *rdw = hd(dim), *term = hd(n);
            for (size_t i = 0; i < n; i++) rdx[i] = accumulate ? dx0[i] : 0.0;
            for (size_t i = 0; i < dim; i++) rdw[i] = dw0[i];
            rmsnorm_bwd_ref(x, w, dy, rows, dim, eps, rdx, rdw, term);
            mb_ptr px = dput(x, n * 4), pw = dput(w, dim * 4), pdy = dput(dy, n * 4), pdx = dnew(n * 4),
                   pdw = dnew(dim * 4);
            float *gdx[2] = {hf(n), hf(n)}, *gdw[2] = {hf(dim), hf(dim)};
            for (int run = 0; run < 2; run++) {
                put(pdx, dx0, n * 4);
                put(pdw, dw0, dim * 4);
                OK(T->rmsnorm_backward(dev, px, pw, pdy, rows, dim, eps, pdx, accumulate, pdw));
                get(gdx[run], pdx, n * 4);
                get(gdw[run], pdw, dim * 4);
            }
            expect_same("rmsnorm_backward dx", gdx[0], gdx[1], n * 4);
            expect_same("rmsnorm_backward dw", gdw[0], gdw[1], dim * 4);
            char what[128];
            snprintf(what, sizeof what, "rmsnorm_backward rows %zu dim %zu accumulate %d: dx", rows, dim, accumulate);
            double scale = dmax_abs(term, n), sx = dmax_abs(rdx, n);
            expect_close_scaled(what, gdx[0], rdx, n, scale > sx ? scale : sx);
            snprintf(what, sizeof what, "rmsnorm_backward rows %zu dim %zu accumulate %d: dw", rows, dim, accumulate);
            expect_close(what, gdw[0], rdw, dim);
            release(mk);
        }
}
END_TEST

/* sum(dy * rmsnorm(x) * w) in double */
static double rmsnorm_loss(const double *x, const double *w, const float *dy, size_t rows, size_t dim, double eps)
{
    double l = 0;
    for (size_t r = 0; r < rows; r++) {
        double ss = 0;
        for (size_t i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
        const double rms = sqrt(ss / (double)dim + eps);
        for (size_t i = 0; i < dim; i++) l += (double)dy[r * dim + i] * x[r * dim + i] / rms * w[i];
    }
    return l;
}

/* The op's dx and dw against central differences of the forward formula (h = 1e-6: an
 * O(h^2) truncation near 1e-12, rounding near 1e-10, both far below the bound). */
START_TEST(rmsnorm_backward_finite_differences)
{
    const size_t rows = 3, dim = 17, n = rows * dim;
    const double eps = 1e-5, h = 1e-6;
    seed(250);
    float *x = hrand(n, 1), *w = hrand(dim, 1), *dy = hrand(n, 1), *gdx = hf(n), *gdw = hf(dim);
    double *xd = hd(n), *wd = hd(dim), *fdx = hd(n), *fdw = hd(dim);
    for (size_t i = 0; i < n; i++) xd[i] = x[i];
    for (size_t i = 0; i < dim; i++) wd[i] = w[i];
    for (size_t i = 0; i < n; i++) {
        xd[i] = x[i] + h;
        const double lp = rmsnorm_loss(xd, wd, dy, rows, dim, eps);
        xd[i] = x[i] - h;
        fdx[i] = (lp - rmsnorm_loss(xd, wd, dy, rows, dim, eps)) / (2 * h);
        xd[i] = x[i];
    }
    for (size_t i = 0; i < dim; i++) {
        wd[i] = w[i] + h;
        const double lp = rmsnorm_loss(xd, wd, dy, rows, dim, eps);
        wd[i] = w[i] - h;
        fdw[i] = (lp - rmsnorm_loss(xd, wd, dy, rows, dim, eps)) / (2 * h);
        wd[i] = w[i];
    }
    float zero[17] = {0};
    mb_ptr pdx = dnew(n * 4), pdw = dput(zero, dim * 4);
    OK(T->rmsnorm_backward(dev, dput(x, n * 4), dput(w, dim * 4), dput(dy, n * 4), rows, dim, (float)eps, pdx, 0,
                           pdw));
    get(gdx, pdx, n * 4);
    get(gdw, pdw, dim * 4);
    expect_close("rmsnorm_backward dx vs finite differences", gdx, fdx, n);
    expect_close("rmsnorm_backward dw vs finite differences", gdw, fdw, dim);
}
END_TEST

/* ---- conv_silu_backward ---- */

/* A conv case in host memory, in the op's layout (element [b, t, c] at b*sb + t*st + c). */
typedef struct conv_case {
    size_t B, L, C, K;
    ptrdiff_t x_sb, x_st, g_sb, g_st, dx_sb, dx_st;
    const float *x, *w, *bias, *dout;
} conv_case;

static double conv_x(const conv_case *cc, const double *xd, size_t b, long t, size_t c)
{
    return t < 0 ? 0.0 : xd[b * (size_t)cc->x_sb + (size_t)t * (size_t)cc->x_st + c];
}

/* pre-activation at (b, t, c) in double, from x (xd, in x's layout) and w */
static double conv_pre(const conv_case *cc, const double *xd, const double *wd, const double *bd, size_t b, size_t t,
                       size_t c)
{
    double p = bd ? bd[c] : 0.0;
    for (size_t k = 0; k < cc->K; k++) p += wd[c * cc->K + k] * conv_x(cc, xd, b, (long)t - (long)(cc->K - 1) + (long)k, c);
    return p;
}

/* the reference: g = dout silu'(pre); dx (B, L, C) dense, dw (C, K), db (C) added to */
static void conv_bwd_ref(const conv_case *cc, const double *xd, const double *wd, const double *bd, double *dx,
                         double *dw, double *db)
{
    const size_t B = cc->B, L = cc->L, C = cc->C, K = cc->K;
    double *g = hd(B * L * C);
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < L; t++)
            for (size_t c = 0; c < C; c++) {
                const double p = conv_pre(cc, xd, wd, bd, b, t, c), s = 1.0 / (1.0 + exp(-p));
                g[(b * L + t) * C + c] = cc->dout[b * (size_t)cc->g_sb + t * (size_t)cc->g_st + c] * s * (1 + p * (1 - s));
            }
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < L; t++)
            for (size_t c = 0; c < C; c++) {
                const double gv = g[(b * L + t) * C + c];
                double s = 0;
                for (size_t k = 0; k < K; k++) {
                    const size_t tt = t + (K - 1) - k;
                    if (tt < L) s += wd[c * K + k] * g[(b * L + tt) * C + c];
                    dw[c * K + k] += gv * conv_x(cc, xd, b, (long)t - (long)(K - 1) + (long)k, c);
                }
                dx[(b * L + t) * C + c] = s;
                if (db) db[c] += gv;
            }
}

static size_t span3(size_t B, ptrdiff_t sb, size_t L, ptrdiff_t st, size_t C)
{
    return (B - 1) * (size_t)sb + (L - 1) * (size_t)st + C;
}

/* Runs the op on a case (twice, bitwise the same) and checks dx (and that dx's row padding,
 * where dz lives in the trainer, is untouched), dweight and dbias (both accumulated onto
 * random values) against the double reference. */
static void conv_check(const conv_case *cc, const char *label)
{
    const size_t mk = mark(), B = cc->B, L = cc->L, C = cc->C, K = cc->K;
    const size_t nx = span3(B, cc->x_sb, L, cc->x_st, C), ng = span3(B, cc->g_sb, L, cc->g_st, C);
    const size_t ndx = span3(B, cc->dx_sb, L, cc->dx_st, C);
    double *xd = hd(nx), *wd = hd(C * K), *bd = cc->bias ? hd(C) : NULL;
    for (size_t i = 0; i < nx; i++) xd[i] = cc->x[i];
    for (size_t i = 0; i < C * K; i++) wd[i] = cc->w[i];
    for (size_t i = 0; bd && i < C; i++) bd[i] = cc->bias[i];
    float *dx0 = hrand(ndx, 1), *dw0 = hrand(C * K, 1), *db0 = hrand(C, 1);
    double *rdx = hd(B * L * C), *rdw = hd(C * K), *rdb = hd(C);
    for (size_t i = 0; i < C * K; i++) rdw[i] = dw0[i];
    for (size_t i = 0; i < C; i++) rdb[i] = db0[i];
    conv_bwd_ref(cc, xd, wd, bd, rdx, rdw, rdb);

    mb_conv_bwd_op op = {.batch = B, .len = L, .channels = C, .width = K,
                         .x = dput(cc->x, nx * 4), .x_sb = cc->x_sb, .x_st = cc->x_st,
                         .weight = dput(cc->w, C * K * 4), .bias = cc->bias ? dput(cc->bias, C * 4) : none,
                         .dout = dput(cc->dout, ng * 4), .dout_sb = cc->g_sb, .dout_st = cc->g_st,
                         .dx = dnew(ndx * 4), .dx_sb = cc->dx_sb, .dx_st = cc->dx_st,
                         .dweight = dnew(C * K * 4), .dbias = dnew(C * 4)};
    float *gdx[2] = {hf(ndx), hf(ndx)}, *gdw[2] = {hf(C * K), hf(C * K)}, *gdb[2] = {hf(C), hf(C)};
    for (int run = 0; run < 2; run++) {
        put(op.dx, dx0, ndx * 4);
        put(op.dweight, dw0, C * K * 4);
        put(op.dbias, db0, C * 4);
        OK(T->conv_silu_backward(dev, &op));
        get(gdx[run], op.dx, ndx * 4);
        get(gdw[run], op.dweight, C * K * 4);
        get(gdb[run], op.dbias, C * 4);
    }
    expect_same("conv_silu_backward dx", gdx[0], gdx[1], ndx * 4);
    expect_same("conv_silu_backward dweight", gdw[0], gdw[1], C * K * 4);
    expect_same("conv_silu_backward dbias", gdb[0], gdb[1], C * 4);
    /* dx densely, and every element of its buffer outside (b, t, c < C) as it was */
    float *dense = hf(B * L * C);
    unsigned char *addressed = hnew(ndx);
    memset(addressed, 0, ndx);
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < L; t++)
            for (size_t c = 0; c < C; c++) {
                const size_t at = b * (size_t)cc->dx_sb + t * (size_t)cc->dx_st + c;
                dense[(b * L + t) * C + c] = gdx[0][at];
                addressed[at] = 1;
            }
    for (size_t i = 0; i < ndx; i++)
        if (!addressed[i])
            ck_assert_msg(memcmp(&gdx[0][i], &dx0[i], 4) == 0, "%s conv_silu_backward %s: dx element %zu, not one of "
                          "dx's, was written", backend, label, i);
    char what[160];
    snprintf(what, sizeof what, "conv_silu_backward %s: dx", label);
    expect_close(what, dense, rdx, B * L * C);
    snprintf(what, sizeof what, "conv_silu_backward %s: dweight", label);
    expect_close(what, gdw[0], rdw, C * K);
    snprintf(what, sizeof what, "conv_silu_backward %s: dbias", label);
    expect_close(what, gdb[0], rdb, C);
    release(mk);
}

/* The trainer's layout: x the first half of xz rows (2C wide), dout rows of their own stride,
 * dx the first half of dxz rows (whose second half, dz, must survive). */
START_TEST(conv_silu_backward_shapes)
{
    const size_t widths[4] = {1, 2, 4, 64}, lens[3] = {1, 3, 100}, batches[2] = {1, 3};
    const size_t K = widths[_i], C = 70; /* a block of 64 channels and a remainder */
    seed(300 + (uint64_t)_i);
    for (int il = 0; il < 3; il++)
        for (int ib = 0; ib < 2; ib++)
            for (int bias = 0; bias < 2; bias++) {
                const size_t mk = mark(), L = lens[il], B = batches[ib];
                conv_case cc = {.B = B, .L = L, .C = C, .K = K,
                                .x_sb = (ptrdiff_t)(L * 2 * C), .x_st = (ptrdiff_t)(2 * C),
                                .g_sb = (ptrdiff_t)(L * (C + 3) + 5), .g_st = (ptrdiff_t)(C + 3),
                                .dx_sb = (ptrdiff_t)(L * 2 * C), .dx_st = (ptrdiff_t)(2 * C)};
                cc.x = hrand(span3(B, cc.x_sb, L, cc.x_st, C), 2);
                cc.w = hrand(C * K, 1);
                cc.bias = bias ? hrand(C, 0.5) : NULL;
                cc.dout = hrand(span3(B, cc.g_sb, L, cc.g_st, C), 1);
                char label[96];
                snprintf(label, sizeof label, "width %zu len %zu batch %zu bias %d", K, L, B, bias);
                conv_check(&cc, label);
                release(mk);
            }
}
END_TEST

/* sum(dout * silu(pre)) in double */
static double conv_loss(const conv_case *cc, const double *xd, const double *wd, const double *bd)
{
    double l = 0;
    for (size_t b = 0; b < cc->B; b++)
        for (size_t t = 0; t < cc->L; t++)
            for (size_t c = 0; c < cc->C; c++) {
                const double p = conv_pre(cc, xd, wd, bd, b, t, c);
                l += cc->dout[b * (size_t)cc->g_sb + t * (size_t)cc->g_st + c] * p / (1.0 + exp(-p));
            }
    return l;
}

static void central_diff(double *v, size_t i, double h, const conv_case *cc, double *xd, double *wd, double *bd,
                         double *out)
{
    const double v0 = v[i];
    v[i] = v0 + h;
    const double lp = conv_loss(cc, xd, wd, bd);
    v[i] = v0 - h;
    const double lm = conv_loss(cc, xd, wd, bd);
    v[i] = v0;
    *out = (lp - lm) / (2 * h);
}

START_TEST(conv_silu_backward_finite_differences)
{
    const size_t B = 2, L = 6, C = 3, K = 4;
    const double h = 1e-6;
    seed(350);
    conv_case cc = {.B = B, .L = L, .C = C, .K = K, .x_sb = (ptrdiff_t)(L * C), .x_st = (ptrdiff_t)C,
                    .g_sb = (ptrdiff_t)(L * C), .g_st = (ptrdiff_t)C, .dx_sb = (ptrdiff_t)(L * C), .dx_st = (ptrdiff_t)C};
    const size_t n = B * L * C;
    cc.x = hrand(n, 2);
    cc.w = hrand(C * K, 1);
    cc.bias = hrand(C, 0.5);
    cc.dout = hrand(n, 1);
    double *xd = hd(n), *wd = hd(C * K), *bd = hd(C), *fdx = hd(n), *fdw = hd(C * K), *fdb = hd(C);
    for (size_t i = 0; i < n; i++) xd[i] = cc.x[i];
    for (size_t i = 0; i < C * K; i++) wd[i] = cc.w[i];
    for (size_t i = 0; i < C; i++) bd[i] = cc.bias[i];
    for (size_t i = 0; i < n; i++) central_diff(xd, i, h, &cc, xd, wd, bd, &fdx[i]);
    for (size_t i = 0; i < C * K; i++) central_diff(wd, i, h, &cc, xd, wd, bd, &fdw[i]);
    for (size_t i = 0; i < C; i++) central_diff(bd, i, h, &cc, xd, wd, bd, &fdb[i]);
    float zero[12] = {0};
    mb_conv_bwd_op op = {.batch = B, .len = L, .channels = C, .width = K, .x = dput(cc.x, n * 4), .x_sb = cc.x_sb,
                         .x_st = cc.x_st, .weight = dput(cc.w, C * K * 4), .bias = dput(cc.bias, C * 4),
                         .dout = dput(cc.dout, n * 4), .dout_sb = cc.g_sb, .dout_st = cc.g_st, .dx = dnew(n * 4),
                         .dx_sb = cc.dx_sb, .dx_st = cc.dx_st, .dweight = dput(zero, C * K * 4),
                         .dbias = dput(zero, C * 4)};
    OK(T->conv_silu_backward(dev, &op));
    float *gdx = hf(n), *gdw = hf(C * K), *gdb = hf(C);
    get(gdx, op.dx, n * 4);
    get(gdw, op.dweight, C * K * 4);
    get(gdb, op.dbias, C * 4);
    expect_close("conv_silu_backward dx vs finite differences", gdx, fdx, n);
    expect_close("conv_silu_backward dweight vs finite differences", gdw, fdw, C * K);
    expect_close("conv_silu_backward dbias vs finite differences", gdb, fdb, C);
}
END_TEST

/* ---- embed_backward ---- */

START_TEST(embed_backward_repeated_ids)
{
    const size_t dims[3] = {1, 33, 768}, dim = dims[_i], rows = 200, vocab = 50;
    seed(400 + (uint64_t)_i);
    int32_t *ids = hnew(rows * 4);
    for (size_t r = 0; r < rows; r++) /* mostly ten ids, each many times, and the last one */
        ids[r] = r % 17 == 3 ? (int32_t)(vocab - 1) : (int32_t)((urand() + 1) * 5);
    float *dy = hrand(rows * dim, 1), *t0 = hrand(vocab * dim, 1);
    double *ref = hd(vocab * dim);
    for (size_t i = 0; i < vocab * dim; i++) ref[i] = t0[i];
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < dim; i++) ref[(size_t)ids[r] * dim + i] += dy[r * dim + i];
    mb_ptr pids = dput(ids, rows * 4), pdy = dput(dy, rows * dim * 4), pt = dnew(vocab * dim * 4);
    float *got[2] = {hf(vocab * dim), hf(vocab * dim)};
    for (int run = 0; run < 2; run++) {
        put(pt, t0, vocab * dim * 4);
        OK(T->embed_backward(dev, pids, rows, pdy, dim, pt, vocab));
        get(got[run], pt, vocab * dim * 4);
    }
    expect_same("embed_backward", got[0], got[1], vocab * dim * 4);
    char what[64];
    snprintf(what, sizeof what, "embed_backward dim %zu", dim);
    expect_close(what, got[0], ref, vocab * dim);
    /* rows never named keep their values exactly */
    for (size_t v = 10; v + 1 < vocab; v++) ck_assert(memcmp(got[0] + v * dim, t0 + v * dim, dim * 4) == 0);
}
END_TEST

/* ---- cross_entropy ---- */

START_TEST(cross_entropy_rows)
{
    const size_t vocabs[4] = {1, 7, 1000, 50280}, V = vocabs[_i], rows = 37;
    seed(500 + (uint64_t)_i);
    float *l = hf(rows * V);
    int32_t *labels = hnew(rows * 4);
    size_t n_valid = 0;
    for (size_t r = 0; r < rows; r++) {
        float *row = l + r * V;
        const int large = r % 4 == 3; /* logits near 1e4: exp overflows without the max subtracted */
        for (size_t v = 0; v < V; v++) row[v] = (float)((large ? 1e4 : 0) + (large ? 5 : 3) * urand());
        labels[r] = (int32_t)((urand() + 1) / 2 * (double)V);
        if (labels[r] >= (int32_t)V) labels[r] = (int32_t)V - 1;
        if (V >= 2 && (r == 1 || r == 2)) { /* a tie for the maximum: the first index is the argmax */
            row[0] = row[V - 1] = 40.0f;
            labels[r] = r == 1 ? 0 : (int32_t)V - 1;
        }
        if (r % 5 == 0) labels[r] = r % 10 == 0 ? -100 : -1; /* ignored */
        n_valid += labels[r] >= 0;
    }
    const float scale = 1.0f / (float)n_valid;
    double *rloss = hd(rows), *rgrad = hd(rows * V);
    int32_t *rcorrect = hnew(rows * 4);
    for (size_t r = 0; r < rows; r++) {
        const float *row = l + r * V;
        if (labels[r] < 0) {
            rloss[r] = 0;
            rcorrect[r] = 0;
            for (size_t v = 0; v < V; v++) rgrad[r * V + v] = 0;
            continue;
        }
        size_t best = 0;
        for (size_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        double s = 0;
        for (size_t v = 0; v < V; v++) s += exp((double)row[v] - row[best]);
        const double lse = row[best] + log(s);
        rloss[r] = lse - row[labels[r]];
        rcorrect[r] = best == (size_t)labels[r];
        for (size_t v = 0; v < V; v++)
            rgrad[r * V + v] = scale * (exp((double)row[v] - lse) - (v == (size_t)labels[r] ? 1.0 : 0.0));
    }
    if (V >= 2) {
        ck_assert_int_eq(rcorrect[1], 1);
        ck_assert_int_eq(rcorrect[2], 0);
    }
    mb_ptr pl = dnew(rows * V * 4), plab = dput(labels, rows * 4), ploss = dnew(rows * 4), pc = dnew(rows * 4);
    float *grad[2] = {hf(rows * V), hf(rows * V)}, *loss[2] = {hf(rows), hf(rows)};
    int32_t *correct[2] = {hnew(rows * 4), hnew(rows * 4)};
    for (int run = 0; run < 2; run++) {
        put(pl, l, rows * V * 4);
        OK(T->cross_entropy(dev, pl, rows, V, plab, scale, ploss, pc));
        get(grad[run], pl, rows * V * 4);
        get(loss[run], ploss, rows * 4);
        get(correct[run], pc, rows * 4);
    }
    expect_same("cross_entropy dlogits", grad[0], grad[1], rows * V * 4);
    expect_same("cross_entropy loss", loss[0], loss[1], rows * 4);
    char what[64];
    snprintf(what, sizeof what, "cross_entropy vocab %zu: loss", V);
    expect_close(what, loss[0], rloss, rows);
    snprintf(what, sizeof what, "cross_entropy vocab %zu: dlogits", V);
    expect_close(what, grad[0], rgrad, rows * V);
    for (size_t r = 0; r < rows; r++) {
        ck_assert_msg(correct[0][r] == rcorrect[r], "%s cross_entropy vocab %zu row %zu: correct %d, expected %d",
                      backend, V, r, (int)correct[0][r], (int)rcorrect[r]);
        if (labels[r] < 0) { /* ignored rows: exactly zero */
            ck_assert_float_eq(loss[0][r], 0.0f);
            for (size_t v = 0; v < V; v++) ck_assert_float_eq(grad[0][r * V + v], 0.0f);
        }
    }
}
END_TEST

/* ---- sum_squares ---- */

START_TEST(sum_squares_sizes)
{
    const size_t sizes[] = {1, 2, 7, 64, 1000, 65536, 65537, 1000000};
    seed(600);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t mk = mark(), n = sizes[s];
        float *x = hrand(n, 3);
        double ref = 0;
        for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
        mb_ptr px = dput(x, n * 4), po = dnew(4);
        float got[2];
        for (int run = 0; run < 2; run++) {
            OK(T->sum_squares(dev, px, n, po));
            get(&got[run], po, 4);
        }
        expect_same("sum_squares", &got[0], &got[1], 4);
        char what[64];
        snprintf(what, sizeof what, "sum_squares n %zu", n);
        expect_close(what, &got[0], &ref, 1);
        release(mk);
    }
}
END_TEST

/* ---- adamw ---- */

typedef struct adamw_cfg {
    float weight_decay, max_norm, grad_scale;
    int with_norm;  /* norm_sq given */
    int clips;      /* the clip factor is below 1 at every step */
} adamw_cfg;

static const adamw_cfg adamw_cfgs[] = {
    {0.0f, 0.0f, 1.0f, 0, 0},   /* plain Adam, no decay, no clipping                         */
    {0.1f, 2.0f, 0.5f, 1, 1},   /* decay, a scaled gradient clipped to norm 2 (from about 9)  */
    {0.1f, 100.0f, 1.0f, 1, 0}, /* a norm below max_norm: not clipped                         */
    {0.01f, 2.0f, 1.0f, 0, 0},  /* max_norm without norm_sq: no clipping                      */
};

/* Steps 1, 2, 3, 100, 101 (the bias corrections at both ends) against the formula in double,
 * with a fresh gradient each step. eps is 1e-3 so that where it enters (after the bias
 * correction of sqrt(v)) shows; beta2 0.99 so that both corrections matter. */
START_TEST(adamw_steps)
{
    const adamw_cfg *cfg = &adamw_cfgs[_i];
    const size_t n = 1031;
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.99f, eps = 1e-3f;
    const long steps[5] = {1, 2, 3, 100, 101};
    seed(700 + (uint64_t)_i);
    float *p = hrand(n, 1), *zero = hf(n), *got = hf(n), *g = hf(n);
    memset(zero, 0, n * 4);
    double *rp = hd(n), *rm = hd(n), *rv = hd(n);
    for (size_t i = 0; i < n; i++) rp[i] = p[i], rm[i] = rv[i] = 0;
    mb_adamw_op op = {.n = n, .param = dput(p, n * 4), .grad = dnew(n * 4), .m = dput(zero, n * 4),
                      .v = dput(zero, n * 4), .norm_sq = cfg->with_norm ? dnew(4) : none, .lr = lr, .beta1 = b1,
                      .beta2 = b2, .eps = eps, .weight_decay = cfg->weight_decay, .max_norm = cfg->max_norm,
                      .grad_scale = cfg->grad_scale};
    for (int s = 0; s < 5; s++) {
        for (size_t i = 0; i < n; i++) g[i] = (float)urand();
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
        const float nsq = (float)ss;
        put(op.grad, g, n * 4);
        if (cfg->with_norm) put(op.norm_sq, &nsq, 4);
        op.step = steps[s];
        OK(T->adamw(dev, &op));
        /* the reference */
        double clip = 1;
        if (cfg->with_norm && cfg->max_norm > 0) {
            const double norm = sqrt((double)nsq) * cfg->grad_scale;
            clip = fmin(1.0, cfg->max_norm / (norm + 1e-6));
        }
        ck_assert_msg(cfg->clips ? clip < 0.5 : clip == 1.0, "the case's clip factor %g", clip);
        const double t = (double)steps[s], bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (size_t i = 0; i < n; i++) {
            const double gi = (double)g[i] * cfg->grad_scale * clip;
            rp[i] *= 1 - (double)lr * cfg->weight_decay;
            rm[i] = b1 * rm[i] + (1 - (double)b1) * gi;
            rv[i] = b2 * rv[i] + (1 - (double)b2) * gi * gi;
            rp[i] -= lr / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + eps);
        }
        char what[96];
        snprintf(what, sizeof what, "adamw case %d step %ld: param", _i, steps[s]);
        get(got, op.param, n * 4);
        expect_close(what, got, rp, n);
        snprintf(what, sizeof what, "adamw case %d step %ld: m", _i, steps[s]);
        get(got, op.m, n * 4);
        expect_close(what, got, rm, n);
        snprintf(what, sizeof what, "adamw case %d step %ld: v", _i, steps[s]);
        get(got, op.v, n * 4);
        expect_close(what, got, rv, n);
        get(got, op.grad, n * 4);
        ck_assert_msg(memcmp(got, g, n * 4) == 0, "%s adamw: grad was modified", backend);
    }
}
END_TEST

/* ---- axpy, neg_exp, mul_acc ---- */

START_TEST(elementwise)
{
    const size_t sizes[4] = {1, 7, 1000, 100003};
    seed(800);
    for (int s = 0; s < 4; s++) {
        const size_t mk = mark(), n = sizes[s];
        float *x = hrand(n, 2), *w = hrand(n, 2), *y = hrand(n, 2), *got = hf(n);
        double *ref = hd(n);
        char what[64];
        const float alpha = -0.375f;
        mb_ptr px = dput(x, n * 4), pw = dput(w, n * 4), py = dput(y, n * 4);
        OK(T->axpy(dev, n, alpha, px, py));
        get(got, py, n * 4);
        for (size_t i = 0; i < n; i++) ref[i] = y[i] + (double)alpha * x[i];
        snprintf(what, sizeof what, "axpy n %zu", n);
        expect_close(what, got, ref, n);
        put(py, y, n * 4);
        OK(T->mul_acc(dev, n, px, pw, py));
        get(got, py, n * 4);
        for (size_t i = 0; i < n; i++) ref[i] = y[i] + (double)x[i] * w[i];
        snprintf(what, sizeof what, "mul_acc n %zu", n);
        expect_close(what, got, ref, n);
        /* A = -exp(A_log) over [-6, 2], each element to TOL of itself */
        for (size_t i = 0; i < n; i++) x[i] = (float)(4 * urand() - 2);
        put(px, x, n * 4);
        OK(T->neg_exp(dev, n, px, py));
        get(got, py, n * 4);
        for (size_t i = 0; i < n; i++) {
            const double r = -exp((double)x[i]);
            ck_assert_msg(fabs(got[i] - r) <= TOL * fabs(r), "%s neg_exp(%.9g) = %.9g, expected %.9g", backend,
                          (double)x[i], (double)got[i], r);
        }
        release(mk);
    }
}
END_TEST

/* ---- empty shapes and bad arguments ---- */

/* Zero rows / elements: success, nothing written (sum_squares of nothing is 0). */
START_TEST(empty_shapes)
{
    float init[64], got[64];
    for (int i = 0; i < 64; i++) init[i] = (float)i + 0.5f;
    int32_t ids[4] = {0, 1, 2, 3};
    mb_ptr a = dput(init, sizeof init), b = dput(init, sizeof init), pid = dput(ids, sizeof ids);
    OK(T->rmsnorm_backward(dev, a, a, a, 0, 8, 1e-5f, b, 0, b));
    mb_conv_bwd_op op = {.batch = 0, .len = 4, .channels = 2, .width = 4, .x = a, .x_sb = 8, .x_st = 2, .weight = a,
                         .dout = a, .dout_sb = 8, .dout_st = 2, .dx = b, .dx_sb = 8, .dx_st = 2, .dweight = b};
    OK(T->conv_silu_backward(dev, &op));
    op.batch = 1, op.len = 0;
    OK(T->conv_silu_backward(dev, &op));
    OK(T->embed_backward(dev, pid, 0, a, 8, b, 4));
    OK(T->cross_entropy(dev, b, 0, 8, pid, 1.0f, b, b));
    mb_adamw_op ad = {.n = 0, .param = b, .grad = a, .m = b, .v = b, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.99f,
                      .eps = 1e-8f, .step = 1};
    OK(T->adamw(dev, &ad));
    OK(T->axpy(dev, 0, 2.0f, a, b));
    OK(T->neg_exp(dev, 0, a, b));
    OK(T->mul_acc(dev, 0, a, a, b));
    get(got, b, sizeof got);
    ck_assert(memcmp(got, init, sizeof got) == 0);
    OK(T->sum_squares(dev, a, 0, b));
    get(got, b, 4);
    ck_assert_float_eq(got[0], 0.0f);
}
END_TEST

static void expect_status(int rc, int want, const char *what, const char *word)
{
    const char *msg = be->device->last_error(dev);
    printf("%s %s: status %d, %s\n", backend, what, rc, msg);
    ck_assert_msg(rc == want, "%s %s: status %d, expected %d", backend, what, rc, want);
    ck_assert_msg(msg && strstr(msg, word), "%s %s: the message \"%s\" does not name %s", backend, what,
                  msg ? msg : "", word);
}

START_TEST(rejects_bad_arguments)
{
    float init[256] = {0};
    mb_ptr a = dput(init, sizeof init), b = dput(init, sizeof init);
    for (int w = 0; w < 2; w++) {
        const size_t width = w ? 65 : 0;
        mb_conv_bwd_op op = {.batch = 1, .len = 4, .channels = 2, .width = width, .x = a, .x_sb = 8, .x_st = 2,
                             .weight = a, .dout = a, .dout_sb = 8, .dout_st = 2, .dx = b, .dx_sb = 8, .dx_st = 2,
                             .dweight = b};
        expect_status(T->conv_silu_backward(dev, &op), w ? MAMBA_ERR_UNSUPPORTED : MAMBA_ERR_INVALID_ARGUMENT,
                      w ? "conv_silu_backward width 65" : "conv_silu_backward width 0", "width");
    }
    expect_status(T->gemm_f32(dev, 0, 0, 4, 4, 8, 1.0f, a, 7, a, 4, 0.0f, b, 4), MAMBA_ERR_INVALID_ARGUMENT,
                  "gemm_f32 lda 7 < k 8", "lda");
    expect_status(T->gemm_f32(dev, 0, 1, 4, 4, 8, 1.0f, a, 8, a, 7, 0.0f, b, 4), MAMBA_ERR_INVALID_ARGUMENT,
                  "gemm_f32 ldb 7 < k 8 (b transposed)", "ldb");
    expect_status(T->gemm_f32(dev, 0, 0, 4, 4, 8, 1.0f, a, 8, a, 4, 0.0f, b, 3), MAMBA_ERR_INVALID_ARGUMENT,
                  "gemm_f32 ldc 3 < n 4", "ldc");
    mb_adamw_op ad = {.n = 4, .param = b, .grad = a, .m = b, .v = b, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.99f,
                      .eps = 1e-8f, .step = 0};
    expect_status(T->adamw(dev, &ad), MAMBA_ERR_INVALID_ARGUMENT, "adamw step 0", "step");
    if (strcmp(backend, "cpu") == 0) {
        /* ids and labels live in host memory here, so their bounds are checked before anything
         * runs (a GPU would need a round trip) */
        int32_t bad[3] = {0, 8, 1};
        mb_ptr pb = dput(bad, sizeof bad);
        expect_status(T->cross_entropy(dev, b, 3, 8, pb, 1.0f, a, a), MAMBA_ERR_INVALID_ARGUMENT,
                      "cross_entropy label 8 of a vocabulary of 8", "labels[1]");
        expect_status(T->embed_backward(dev, pb, 3, a, 4, b, 8), MAMBA_ERR_INVALID_ARGUMENT,
                      "embed_backward id 8 of a vocabulary of 8", "ids[1]");
        bad[1] = -1;
        put(pb, bad, sizeof bad);
        expect_status(T->embed_backward(dev, pb, 3, a, 4, b, 8), MAMBA_ERR_INVALID_ARGUMENT,
                      "embed_backward id -1", "ids[1]");
        expect_status(T->sum_squares(dev, a, 257, b), MAMBA_ERR_INVALID_ARGUMENT, "sum_squares past the buffer",
                      "sum_squares: x");
    }
    ck_assert_int_eq(be->device->sync(dev), 0); /* the device is still usable */
}
END_TEST

/* ---- running one backend ---- */

static void setup(void) { n_held = 0; }
static void teardown(void) { release(0); }

/* The backend's vtable: cpu's from the linked objects, a GPU's from its module beside
 * libmamba.so (NULL with *why set when that is absent). */
static const mb_backend *find_backend(const char *name, char *why, size_t why_len)
{
    if (strcmp(name, "cpu") == 0) return mb_cpu_backend();
    Dl_info info;
    if (!dladdr((void *)mamba_list_backends, &info) || !info.dli_fname) {
        snprintf(why, why_len, "cannot locate libmamba.so");
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(why, why_len, "libmamba at %s has no directory", path);
        return NULL;
    }
    snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "libmamba-%s.so", name);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); /* as the registry: never unloaded */
    if (!h) {
        snprintf(why, why_len, "module not loaded: %s", dlerror());
        return NULL;
    }
    mb_backend_register_fn reg;
    *(void **)&reg = dlsym(h, MB_BACKEND_ENTRY);
    const mb_backend *b = reg ? reg(MB_BACKEND_ABI_VERSION) : NULL;
    if (!b) snprintf(why, why_len, "%s has no vtable of ABI %d", path, MB_BACKEND_ABI_VERSION);
    return b;
}

/* 0 passed, 1 failed, TEST_SKIP skipped (a failure instead when MAMBA_TEST_REQUIRE names it). */
static int run_backend(const char *name)
{
    char why[512] = "";
    const int required = backend_required(name);
    const mb_backend *b = find_backend(name, why, sizeof why);
    if (b) {
        const int count = b->device->device_count(why, sizeof why);
        if (count <= 0) {
            if (!why[0]) snprintf(why, sizeof why, "no device");
            b = NULL;
        }
    }
    mb_device *d = NULL;
    if (b) {
        mb_open_options o = {0};
        char err[512] = "";
        if (b->device->open(0, &o, &d, err, sizeof err) != 0) {
            snprintf(why, sizeof why, "cannot open device 0: %s", err);
            b = NULL;
        }
    }
    if (b && !b->train) {
        snprintf(why, sizeof why, "its vtable has no train table");
        b->device->close(d);
        b = NULL;
    }
    if (!b) {
        printf("%s: SKIPPED: %s%s\n", name, why, required ? " (required by MAMBA_TEST_REQUIRE: a failure)" : "");
        return required ? 1 : TEST_SKIP;
    }
    backend = name;
    be = b;
    T = b->train;
    dev = d;
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, gemm_f32_shapes, 0, 4);
    tcase_add_test(tc, gemm_f32_degenerate);
    tcase_add_loop_test(tc, rmsnorm_backward_shapes, 0, 2);
    tcase_add_test(tc, rmsnorm_backward_finite_differences);
    tcase_add_loop_test(tc, conv_silu_backward_shapes, 0, 4);
    tcase_add_test(tc, conv_silu_backward_finite_differences);
    tcase_add_loop_test(tc, embed_backward_repeated_ids, 0, 3);
    tcase_add_loop_test(tc, cross_entropy_rows, 0, 4);
    tcase_add_test(tc, sum_squares_sizes);
    tcase_add_loop_test(tc, adamw_steps, 0, (int)(sizeof adamw_cfgs / sizeof adamw_cfgs[0]));
    tcase_add_test(tc, elementwise);
    tcase_add_test(tc, empty_shapes);
    tcase_add_test(tc, rejects_bad_arguments);
    suite_add_tcase(s, tc);
    /* CUDA cannot be used in a child forked after the parent initialized it, so the GPU
     * backends run in this process; cpu's tests are forked (CK_FORK=no turns that off). */
    const int rc = run_suite(s, strcmp(name, "cpu") == 0);
    b->device->close(d);
    dev = NULL;
    printf("%s: %s\n", name, rc ? "FAILED" : "passed");
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const char *const all[] = {"cpu", "opencl", "cuda"};
    const char *const *names = argc > 1 ? (const char *const *)(argv + 1) : all;
    const int count = argc > 1 ? argc - 1 : 3;
    int failed = 0, passed = 0;
    for (int i = 0; i < count; i++) {
        if (strcmp(names[i], "cpu") != 0 && strcmp(names[i], "opencl") != 0 && strcmp(names[i], "cuda") != 0) {
            fprintf(stderr, "usage: %s [cpu|opencl|cuda ...]\n", argv[0]);
            return 2;
        }
        const int rc = run_backend(names[i]);
        failed |= rc == 1;
        passed += rc == 0;
    }
    return failed ? 1 : passed ? 0 : TEST_SKIP;
}
