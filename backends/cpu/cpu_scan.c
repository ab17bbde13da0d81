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
#include "cpu_math.h"

#define TILE 16

typedef struct scan_view {
    const float *u, *delta, *A, *B, *C, *D, *z, *bias, *s_in;
    float *out, *s_out;
} scan_view;

/* One channel, any strides; vectorized over the states. */
static void scan_channel(const mb_scan_op *op, const scan_view *v, size_t b, size_t d)
{
    const size_t N = op->d_state, L = op->len;
    const size_t g = d / (op->dim / op->n_groups);
    float h[CPU_MAX_STATE], a[CPU_MAX_STATE];
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

/* TILE consecutive channels d0.. of one group, channel stride 1 for u, delta, z, out. */
MB_CPU_CLONES
static void scan_tile(const mb_scan_op *op, const scan_view *v, size_t b, size_t d0)
{
    const size_t N = op->d_state, L = op->len, D = op->dim;
    const size_t g = d0 / (D / op->n_groups);
    float h[CPU_MAX_STATE][TILE], At[CPU_MAX_STATE][TILE];
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
    if (op->d_state > CPU_MAX_STATE)
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan: d_state %zu, at most %d supported", op->d_state, CPU_MAX_STATE);
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
