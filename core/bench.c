/* Device-side measurements for mamba-bench: timers, memory, bandwidth, GEMM and scan on
 * device-resident data, so that no host transfer is inside a timed region. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "api/alloc.h"

mamba_status_t mamba_timer_start(mamba_context_t *ctx)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    MB_TRY_BE(ctx, ctx->probe->timer_start(ctx->dev), "timer start");
    return MAMBA_OK;
}

mamba_status_t mamba_timer_stop(mamba_context_t *ctx, double *ms)
{
    if (!ctx || !ms) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_timer_stop: NULL argument");
    MB_TRY_BE(ctx, ctx->probe->timer_stop(ctx->dev, ms), "timer stop");
    return MAMBA_OK;
}

mamba_status_t mamba_memory_usage(mamba_context_t *ctx, uint64_t *current, uint64_t *peak)
{
    if (!ctx || !current || !peak)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_memory_usage: NULL argument");
    ctx->dv->mem_usage(ctx->dev, current, peak);
    return MAMBA_OK;
}

mamba_status_t mamba_memory_reset_peak(mamba_context_t *ctx)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    ctx->dv->mem_reset_peak(ctx->dev);
    return MAMBA_OK;
}

static mamba_status_t check_runs(mamba_context_t *ctx, int warmup, int repeat, const double *ms)
{
    if (!ms || warmup < 0 || repeat < 1 || warmup > 100000 || repeat > 100000)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "bench: warmup %d, repeat %d (expected >= 0 and >= 1), ms %s",
                         warmup, repeat, ms ? "given" : "NULL");
    return MAMBA_OK;
}

static mamba_status_t alloc(mamba_context_t *ctx, size_t bytes, mb_buffer **b, const char *what)
{
    if (mb_dev_alloc(ctx, bytes ? bytes : 4, b) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "bench: cannot allocate %zu bytes for %s on %s: %s", bytes,
                         what, ctx->backend_name, mb_dev_alloc_error(ctx));
    return MAMBA_OK;
}

/* Fill a device buffer with values uniform in [lo, hi), a function of seed alone. */
static mamba_status_t upload_random(mamba_context_t *ctx, mb_ptr dst, size_t n, float lo, float hi, uint64_t seed,
                                    mamba_dtype_t dt)
{
    const size_t chunk = (size_t)1 << 22;
    float *f = mb_malloc(chunk * sizeof *f);
    void *h = dt == MAMBA_F32 ? NULL : mb_malloc(chunk * 2);
    if (!f || (dt != MAMBA_F32 && !h)) {
        free(f);
        free(h);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "bench: out of host memory");
    }
    const size_t es = mb_dtype_size(dt);
    mamba_status_t st = MAMBA_OK;
    for (size_t i = 0; i < n && st == MAMBA_OK; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        for (size_t j = 0; j < m; j++) {
            uint64_t z = (seed + i + j) * 0x9e3779b97f4a7c15ULL;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z ^= z >> 27;
            f[j] = lo + (hi - lo) * (float)(z >> 40) * (1.0f / 16777216.0f);
        }
        if (h) mb_from_f32(h, f, dt, m);
        int rc = ctx->dv->upload(ctx->dev, (mb_ptr){dst.buf, dst.offset + i * es}, h ? h : (void *)f, m * es);
        if (rc != 0) st = mb_backend_fail(ctx, rc, "bench upload");
    }
    if (st == MAMBA_OK) {
        int rc = ctx->dv->sync(ctx->dev);
        if (rc != 0) st = mb_backend_fail(ctx, rc, "synchronize");
    }
    free(f);
    free(h);
    return st;
}

/* A Q8_0 W (n, k): the values upload_random would give in f32, quantized. */
static mamba_status_t upload_random_q8(mamba_context_t *ctx, mb_buffer *dst, size_t n, size_t k, float lo, float hi,
                                       uint64_t seed)
{
    unsigned char *q = mb_calloc(1, mb_q8_bytes(n, k));
    if (!q) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "bench: out of host memory");
    unsigned char *scales = q + mb_q8_scales_offset(n, k);
    for (size_t blk = 0; blk < n * k / MB_Q8_BLOCK; blk++) {
        float f[MB_Q8_BLOCK];
        for (size_t c = 0; c < MB_Q8_BLOCK; c++) {
            uint64_t z = (seed + blk * MB_Q8_BLOCK + c) * 0x9e3779b97f4a7c15ULL;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z ^= z >> 27;
            f[c] = lo + (hi - lo) * (float)(z >> 40) * (1.0f / 16777216.0f);
        }
        uint16_t h = 0;
        (void)mb_q8_quantize_block(f, (int8_t *)q + blk * MB_Q8_BLOCK, &h); /* finite values in [lo, hi) */
        memcpy(scales + 2 * blk, &h, 2);
    }
    mamba_status_t st = MAMBA_OK;
    int rc = ctx->dv->upload(ctx->dev, (mb_ptr){dst, 0}, q, mb_q8_bytes(n, k));
    if (rc == 0) rc = ctx->dv->sync(ctx->dev);
    if (rc != 0) st = mb_backend_fail(ctx, rc, "bench upload");
    free(q);
    return st;
}

/* Run op() warmup + repeat times, timing the last repeat runs. */
typedef int (*run_fn)(mamba_context_t *ctx, void *arg);
static mamba_status_t timed(mamba_context_t *ctx, run_fn op, void *arg, int warmup, int repeat, double *ms,
                            const char *what)
{
    for (int i = 0; i < warmup + repeat; i++) {
        if (i >= warmup) MB_TRY_BE(ctx, ctx->probe->timer_start(ctx->dev), "timer start");
        MB_TRY_BE(ctx, op(ctx, arg), what);
        if (i >= warmup) MB_TRY_BE(ctx, ctx->probe->timer_stop(ctx->dev, &ms[i - warmup]), "timer stop");
    }
    MB_TRY_BE(ctx, ctx->dv->sync(ctx->dev), "synchronize");
    return MAMBA_OK;
}

typedef struct bw_arg { mamba_bandwidth_kind_t kind; mb_buffer *a, *b; size_t bytes; } bw_arg;
static int run_bw(mamba_context_t *ctx, void *p)
{
    bw_arg *a = p;
    if (a->kind == MAMBA_BANDWIDTH_COPY) return ctx->dv->copy(ctx->dev, (mb_ptr){a->b, 0}, (mb_ptr){a->a, 0}, a->bytes);
    return ctx->probe->read_sum(ctx->dev, (mb_ptr){a->a, 0}, a->bytes / 4, (mb_ptr){a->b, 0});
}

mamba_status_t mamba_bench_bandwidth(mamba_context_t *ctx, mamba_bandwidth_kind_t kind, size_t bytes, int warmup,
                                     int repeat, double *ms)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    mamba_status_t st = check_runs(ctx, warmup, repeat, ms);
    if (st != MAMBA_OK) return st;
    if (bytes < 4096 || (kind != MAMBA_BANDWIDTH_COPY && kind != MAMBA_BANDWIDTH_READ))
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_bench_bandwidth: kind %d, %zu bytes (at least 4096)",
                         (int)kind, bytes);
    bytes &= ~(size_t)255;
    bw_arg a = {kind, NULL, NULL, bytes};
    if ((st = alloc(ctx, bytes, &a.a, "bandwidth source")) != MAMBA_OK) return st;
    if ((st = alloc(ctx, kind == MAMBA_BANDWIDTH_COPY ? bytes : 256, &a.b, "bandwidth target")) == MAMBA_OK &&
        (st = upload_random(ctx, (mb_ptr){a.a, 0}, bytes / 4, -1, 1, 1, MAMBA_F32)) == MAMBA_OK)
        st = timed(ctx, run_bw, &a, warmup, repeat, ms, kind == MAMBA_BANDWIDTH_COPY ? "copy" : "read");
    ctx->dv->free(ctx->dev, a.a);
    if (a.b) ctx->dv->free(ctx->dev, a.b);
    return st;
}

typedef struct gemm_arg { size_t m, n, k; mamba_dtype_t dt; mb_buffer *x, *w, *y; } gemm_arg;
static int run_gemm(mamba_context_t *ctx, void *p)
{
    gemm_arg *g = p;
    return ctx->ops->gemm(ctx->dev, g->m, g->n, g->k, (mb_ptr){g->x, 0}, g->k, (mb_ptr){g->w, 0}, g->dt, (mb_ptr){0, 0},
                         (mb_ptr){g->y, 0}, g->n);
}

mamba_status_t mamba_bench_gemm(mamba_context_t *ctx, size_t m, size_t n, size_t k, mamba_dtype_t dt, int warmup,
                                int repeat, double *ms)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    mamba_status_t st = check_runs(ctx, warmup, repeat, ms);
    if (st != MAMBA_OK) return st;
    if (!m || !n || !k || (dt != MAMBA_F32 && dt != MAMBA_F16 && dt != MAMBA_BF16 && (dt != MAMBA_Q8 || k % 32)))
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_bench_gemm: m %zu n %zu k %zu dtype %s", m, n, k,
                         mamba_dtype_name(dt));
    gemm_arg g = {m, n, k, dt, NULL, NULL, NULL};
    if ((st = alloc(ctx, m * k * 4, &g.x, "gemm x")) == MAMBA_OK &&
        (st = alloc(ctx, mb_mat_bytes(dt, n, k), &g.w, "gemm W")) == MAMBA_OK &&
        (st = alloc(ctx, m * n * 4, &g.y, "gemm y")) == MAMBA_OK &&
        (st = upload_random(ctx, (mb_ptr){g.x, 0}, m * k, -1, 1, 2, MAMBA_F32)) == MAMBA_OK &&
        (st = dt == MAMBA_Q8 ? upload_random_q8(ctx, g.w, n, k, -0.1f, 0.1f, 3)
                             : upload_random(ctx, (mb_ptr){g.w, 0}, n * k, -0.1f, 0.1f, 3, dt)) == MAMBA_OK)
        st = timed(ctx, run_gemm, &g, warmup, repeat, ms, "gemm");
    if (g.x) ctx->dv->free(ctx->dev, g.x);
    if (g.w) ctx->dv->free(ctx->dev, g.w);
    if (g.y) ctx->dv->free(ctx->dev, g.y);
    return st;
}

typedef struct scan_arg { mb_scan_op op; mb_scan_bwd_op bwd; } scan_arg;
static int run_scan(mamba_context_t *ctx, void *p) { return ctx->ops->scan(ctx->dev, &((scan_arg *)p)->op); }
static int run_scan_bwd(mamba_context_t *ctx, void *p) { return ctx->ops->scan_backward(ctx->dev, &((scan_arg *)p)->bwd); }

/* Slots of the one buffer of a benchmark scan: the forward's u, delta, z, out (B, L, D), BC
 * (B, L, 2N), A (D, N), D, bias (D); the backward's du, ddelta, dz (B, L, D), dBC, dA, dD,
 * dbias (out holds dout). */
enum { S_U, S_DELTA, S_Z, S_OUT, S_BC, S_A, S_D, S_BIAS, S_DU, S_DDELTA, S_DZ, S_DBC, S_DA, S_DD, S_DBIAS, S_COUNT };

/* The inputs of mamba_bench_scan and mamba_bench_scan_backward, in one device buffer (*buf),
 * and the op over them: time-major u, delta, z, out; B and C side by side in (B, L, 2N). */
static mamba_status_t scan_setup(mamba_context_t *ctx, size_t B, size_t D, size_t L, size_t N, int backward,
                                 mb_buffer **buf, scan_arg *a)
{
    const size_t act = B * L * D * 4, bc = B * L * 2 * N * 4;
    const size_t sizes[S_COUNT] = {act, act, act, act, bc, D * N * 4, D * 4, D * 4, act, act, act, bc, D * N * 4, D * 4, D * 4};
    size_t off[S_COUNT], total = 0;
    for (int i = 0; i < S_COUNT; i++) {
        off[i] = total;
        if (i < S_DU || backward) total += (sizes[i] + 255) / 256 * 256;
    }
    mamba_status_t st = alloc(ctx, total, buf, backward ? "scan backward inputs and gradients" : "scan inputs");
    if (st != MAMBA_OK) return st;
    mb_buffer *b = *buf;
    mb_ptr p[S_COUNT];
    for (int i = 0; i < S_COUNT; i++) p[i] = (mb_ptr){b, off[i]};
    if ((st = upload_random(ctx, p[S_U], B * L * D, -2, 2, 11, MAMBA_F32)) != MAMBA_OK ||
        (st = upload_random(ctx, p[S_DELTA], B * L * D, -4, 0, 12, MAMBA_F32)) != MAMBA_OK ||
        (st = upload_random(ctx, p[S_Z], B * L * D, -3, 3, 13, MAMBA_F32)) != MAMBA_OK ||
        (st = upload_random(ctx, p[S_BC], B * L * 2 * N, -1, 1, 14, MAMBA_F32)) != MAMBA_OK ||
        (st = upload_random(ctx, p[S_A], D * N, -16, -0.5f, 15, MAMBA_F32)) != MAMBA_OK ||
        (st = upload_random(ctx, p[S_D], D, 0.5f, 1.5f, 16, MAMBA_F32)) != MAMBA_OK ||
        (st = upload_random(ctx, p[S_BIAS], D, -4, -1, 17, MAMBA_F32)) != MAMBA_OK ||
        (backward && (st = upload_random(ctx, p[S_OUT], B * L * D, -1, 1, 18, MAMBA_F32)) != MAMBA_OK)) {
        ctx->dv->free(ctx->dev, b);
        *buf = NULL;
        return st;
    }
    const ptrdiff_t sb = (ptrdiff_t)(L * D), st_ = (ptrdiff_t)D, bsb = (ptrdiff_t)(L * 2 * N), bst = (ptrdiff_t)(2 * N);
    a->op = (mb_scan_op){
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = 1,
        .u = p[S_U], .u_sb = sb, .u_st = st_, .u_sd = 1,
        .delta = p[S_DELTA], .delta_sb = sb, .delta_st = st_, .delta_sd = 1, .A = p[S_A],
        .B = p[S_BC], .B_sb = bsb, .B_st = bst, .B_sn = 1,
        .C = {b, off[S_BC] + N * 4}, .C_sb = bsb, .C_st = bst, .C_sn = 1,
        .D = p[S_D], .z = p[S_Z], .z_sb = sb, .z_st = st_, .z_sd = 1, .delta_bias = p[S_BIAS], .delta_softplus = 1,
        .out = p[S_OUT], .out_sb = sb, .out_st = st_, .out_sd = 1,
    };
    if (backward) {
        a->bwd = (mb_scan_bwd_op){
            .fwd = a->op,
            .dout = p[S_OUT], .dout_sb = sb, .dout_st = st_, .dout_sd = 1,
            .du = p[S_DU], .ddelta = p[S_DDELTA], .dz = p[S_DZ],
            .dA = p[S_DA], .dB = p[S_DBC], .dC = {b, off[S_DBC] + N * 4},
            .dD = p[S_DD], .ddelta_bias = p[S_DBIAS],
        };
        a->bwd.fwd.out = (mb_ptr){NULL, 0};
    }
    return MAMBA_OK;
}

static mamba_status_t check_scan_shape(mamba_context_t *ctx, const char *fn, size_t B, size_t D, size_t L, size_t N)
{
    if (!B || !D || !L || !N || N > 256)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "%s: shape (%zu, %zu, %zu, %zu), N at most 256", fn, B, D,
                         L, N);
    return MAMBA_OK;
}

/* warmup + repeat runs of the forward or the backward, timed, then the output (the forward's
 * out, the backward's du; (B, L, D)) into out when it is not NULL. */
static mamba_status_t scan_timed(mamba_context_t *ctx, size_t B, size_t D, size_t L, size_t N, int backward, int warmup,
                                 int repeat, double *ms, float *out)
{
    mb_buffer *buf;
    scan_arg a;
    mamba_status_t st = scan_setup(ctx, B, D, L, N, backward, &buf, &a);
    if (st != MAMBA_OK) return st;
    st = timed(ctx, backward ? run_scan_bwd : run_scan, &a, warmup, repeat, ms, backward ? "scan backward" : "scan");
    if (st == MAMBA_OK && out) {
        int rc = ctx->dv->download(ctx->dev, out, backward ? a.bwd.du : a.op.out, B * L * D * 4);
        if (rc == 0) rc = ctx->dv->sync(ctx->dev);
        if (rc != 0) st = mb_backend_fail(ctx, rc, backward ? "scan backward du download" : "scan output download");
    }
    ctx->dv->free(ctx->dev, buf);
    return st;
}

mamba_status_t mamba_bench_scan(mamba_context_t *ctx, size_t B, size_t D, size_t L, size_t N, int warmup, int repeat,
                                double *ms, float *out)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    mamba_status_t st = check_runs(ctx, warmup, repeat, ms);
    if (st == MAMBA_OK) st = check_scan_shape(ctx, "mamba_bench_scan", B, D, L, N);
    return st == MAMBA_OK ? scan_timed(ctx, B, D, L, N, 0, warmup, repeat, ms, out) : st;
}

mamba_status_t mamba_bench_scan_backward(mamba_context_t *ctx, size_t B, size_t D, size_t L, size_t N, int warmup,
                                         int repeat, double *ms, float *du)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    mamba_status_t st = check_runs(ctx, warmup, repeat, ms);
    if (st == MAMBA_OK) st = check_scan_shape(ctx, "mamba_bench_scan_backward", B, D, L, N);
    if (st == MAMBA_OK && !ctx->ops->scan_backward)
        st = mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED, "mamba_bench_scan_backward: the %s backend has no scan backward",
                       ctx->backend_name);
    return st == MAMBA_OK ? scan_timed(ctx, B, D, L, N, 1, warmup, repeat, ms, du) : st;
}
