/* Selective scan on the CPU.
 *
 * Per batch b, channel d and state n, over time t:
 *   dt = softplus(delta[t,d] + bias[d]);  h[n] = exp(dt*A[d,n]) * h[n] + dt*B[t,n]*u[t,d];
 *   y = sum_n C[t,n]*h[n] + D[d]*u[t,d];  out = y * silu(z[t,d]).
 * The work is D*L*N exponentials, so the exp is the cost: it is a branch-free polynomial
 * that the compiler vectorizes. With channels unit-stride (the model's time-major layout) a
 * tile of 16 channels is one vector and the state h is an (N, 16) block in registers/L1;
 * other layouts (the fixtures' (batch, dim, L)) take a per-channel path vectorized over n. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_internal.h"
#include "internal.h"

#define TILE 16
#define MAX_N 256

static inline float as_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t as_int(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

/* exp(x), about 1 ulp on [-86, 88]; clamped outside (exp(-86) = 4e-38 stands for 0). */
static inline float fexp(float xin)
{
    float x = xin < -86.0f ? -86.0f : xin;
    x = x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    int32_t n = as_int(t) - as_int(magic);
    float k = t - magic;
    float r = x - k * 0.693145751953125f;   /* ln 2, split in two for exactness */
    r = r - k * 1.42860682030941723e-06f;
    /* exp(r) on |r| <= ln2/2: Taylor to degree 6, error below 1e-7 relative */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n scaling in unsigned arithmetic: defined for any n (garbage when x is NaN, which the
     * select below returns instead) */
    const float e = as_float((int32_t)((uint32_t)as_int(p) + ((uint32_t)n << 23)));
    return xin != xin ? xin : e;
}

/* softplus(v) = max(v, 0) + log1p(w), w = exp(-|v|) in (0, 1]. log1p(w) = 2 atanh(s) with
 * s = w / (2 + w) in (0, 1/3]: the odd series to s^13 is within 1e-8 relative, exact for
 * small w, and has no branch or integer step, so it vectorizes. PyTorch returns v above 20. */
static inline float fsoftplus(float v)
{
    const float w = fexp(-fabsf(v));
    const float s = w / (2.0f + w), s2 = s * s;
    float p = 2.0f / 13;
    p = p * s2 + 2.0f / 11;
    p = p * s2 + 2.0f / 9;
    p = p * s2 + 2.0f / 7;
    p = p * s2 + 2.0f / 5;
    p = p * s2 + 2.0f / 3;
    p = p * s2 + 2.0f;
    const float r = (v > 0.0f ? v : 0.0f) + p * s;
    return v > 20.0f ? v : r;
}

static inline float fsilu(float v) { return v / (1.0f + fexp(-v)); }

typedef struct scan_view {
    const float *u, *delta, *A, *B, *C, *D, *z, *bias, *s_in;
    float *out, *s_out;
} scan_view;

/* One channel, any strides; vectorized over the states. */
static void scan_channel(const mb_scan_op *op, const scan_view *v, size_t b, size_t d)
{
    const size_t N = op->d_state, L = op->len;
    const size_t g = d / (op->dim / op->n_groups);
    float h[MAX_N], a[MAX_N];
    for (size_t n = 0; n < N; n++) {
        a[n] = v->A[d * N + n];
        h[n] = v->s_in ? v->s_in[(b * op->dim + d) * N + n] : 0.0f;
    }
    const float bias = v->bias ? v->bias[d] : 0.0f, Dd = v->D ? v->D[d] : 0.0f;
    for (size_t t = 0; t < L; t++) {
        const float u = v->u[b * op->u_sb + t * op->u_st + d * op->u_sd];
        float dt = v->delta[b * op->delta_sb + t * op->delta_st + d * op->delta_sd] + bias;
        if (op->delta_softplus) dt = fsoftplus(dt);
        const float du = dt * u;
        const float *Bt = v->B + b * op->B_sb + t * op->B_st + g * op->B_sg;
        const float *Ct = v->C + b * op->C_sb + t * op->C_st + g * op->C_sg;
        float y = 0.0f;
#pragma omp simd reduction(+ : y)
        for (size_t n = 0; n < N; n++) {
            h[n] = fexp(dt * a[n]) * h[n] + du * Bt[n * op->B_sn];
            y += Ct[n * op->C_sn] * h[n];
        }
        y += Dd * u;
        if (v->z) y *= fsilu(v->z[b * op->z_sb + t * op->z_st + d * op->z_sd]);
        v->out[b * op->out_sb + t * op->out_st + d * op->out_sd] = y;
    }
    if (v->s_out)
        for (size_t n = 0; n < N; n++) v->s_out[(b * op->dim + d) * N + n] = h[n];
}

/* TILE consecutive channels d0.. of one group, channel stride 1 for u, delta, z, out.
 * Not cloned in sanitizer builds: the clones' ifunc resolver runs before the sanitizer's
 * runtime is up (a ThreadSanitizer build crashed while loading the library). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void scan_tile(const mb_scan_op *op, const scan_view *v, size_t b, size_t d0)
{
    const size_t N = op->d_state, L = op->len, D = op->dim;
    const size_t g = d0 / (D / op->n_groups);
    float h[MAX_N][TILE], At[MAX_N][TILE];
    float bias[TILE], Dd[TILE];
    for (size_t n = 0; n < N; n++)
        for (size_t j = 0; j < TILE; j++) {
            At[n][j] = v->A[(d0 + j) * N + n];
            h[n][j] = v->s_in ? v->s_in[(b * D + d0 + j) * N + n] : 0.0f;
        }
    for (size_t j = 0; j < TILE; j++) {
        bias[j] = v->bias ? v->bias[d0 + j] : 0.0f;
        Dd[j] = v->D ? v->D[d0 + j] : 0.0f;
    }
    const int softplus = op->delta_softplus;
    for (size_t t = 0; t < L; t++) {
        const float *ut = v->u + b * op->u_sb + t * op->u_st + d0;
        const float *dlt = v->delta + b * op->delta_sb + t * op->delta_st + d0;
        const float *Bt = v->B + b * op->B_sb + t * op->B_st + g * op->B_sg;
        const float *Ct = v->C + b * op->C_sb + t * op->C_st + g * op->C_sg;
        float dt[TILE], du[TILE], y[TILE];
        /* separate loops without a select in them, so that each vectorizes */
        for (size_t j = 0; j < TILE; j++) dt[j] = dlt[j] + bias[j];
        if (softplus) {
#pragma omp simd
            for (size_t j = 0; j < TILE; j++) dt[j] = fsoftplus(dt[j]);
        }
#pragma omp simd
        for (size_t j = 0; j < TILE; j++) {
            du[j] = dt[j] * ut[j];
            y[j] = Dd[j] * ut[j];
        }
        for (size_t n = 0; n < N; n++) {
            const float bn = Bt[n * op->B_sn], cn = Ct[n * op->C_sn];
#pragma omp simd
            for (size_t j = 0; j < TILE; j++) {
                h[n][j] = fexp(dt[j] * At[n][j]) * h[n][j] + du[j] * bn;
                y[j] += cn * h[n][j];
            }
        }
        float *ot = v->out + b * op->out_sb + t * op->out_st + d0;
        if (v->z) {
            const float *zt = v->z + b * op->z_sb + t * op->z_st + d0;
#pragma omp simd
            for (size_t j = 0; j < TILE; j++) ot[j] = y[j] * fsilu(zt[j]);
        } else {
            for (size_t j = 0; j < TILE; j++) ot[j] = y[j];
        }
    }
    if (v->s_out)
        for (size_t n = 0; n < N; n++)
            for (size_t j = 0; j < TILE; j++) v->s_out[(b * D + d0 + j) * N + n] = h[n][j];
}

int cpu_scan(mb_device *dev, const mb_scan_op *op)
{
    if (op->d_state > MAX_N)
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan: d_state %zu, at most %d supported", op->d_state, MAX_N);
    if (op->n_groups == 0 || op->dim % op->n_groups)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan: dim %zu not a multiple of n_groups %zu", op->dim,
                        op->n_groups);
    const scan_view v = {
        cpu_at(op->u), cpu_at(op->delta), cpu_at(op->A), cpu_at(op->B), cpu_at(op->C), cpu_at(op->D),
        cpu_at(op->z), cpu_at(op->delta_bias), cpu_at(op->state_in), cpu_at(op->out), cpu_at(op->state_out),
    };
    if (!v.u || !v.delta || !v.A || !v.B || !v.C || !v.out)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan: u, delta, A, B, C and out are required");
    const size_t group = op->dim / op->n_groups;
    const int unit = op->u_sd == 1 && op->delta_sd == 1 && op->out_sd == 1 && (!v.z || op->z_sd == 1) &&
                     group % TILE == 0;
    const size_t tiles = (op->dim + TILE - 1) / TILE, work = op->batch * tiles;
    /* A state written in place must not be read by a later tile: each tile reads and writes
     * only its own channels, so sharing state_in and state_out is safe. */
#pragma omp parallel for num_threads(dev->n_threads) schedule(dynamic, 1)
    for (size_t i = 0; i < work; i++) {
        const size_t b = i / tiles, d0 = (i % tiles) * TILE;
        if (unit && d0 + TILE <= op->dim) {
            scan_tile(op, &v, b, d0);
        } else {
            for (size_t d = d0; d < d0 + TILE && d < op->dim; d++) scan_channel(op, &v, b, d);
        }
    }
    return 0;
}
