/* The selective scan's backward on the CPU (mb_scan_bwd_op), in the plan of api/scan_bwd.h.
 *
 * Per batch b, channel d, state n, with dt = softplus(delta + bias), a_t = exp(dt_t A):
 *   forward   h_t = a_t h_{t-1} + dt_t B_t u_t,  y_t = C_t . h_t + D u_t,  out = y silu(z)
 *   adjoint   dy_t = dout_t silu(z_t),  g_t = C_t dy_t + a_{t+1} g_{t+1}  (g past the end:
 *             dstate_out)
 *   du_t = dt_t sum_n g_t B_t + D dy_t     ddt_t = sum_n g_t (A a_t h_{t-1} + B_t u_t)
 *   dA += g_t dt_t a_t h_{t-1}    dB_t += g_t dt_t u_t    dC_t += dy_t h_t    dD += dy_t u_t
 *   ddelta_t = ddt_t softplus'(raw) (1 past 20, as PyTorch), ddelta_bias += ddelta_t,
 *   dz_t = dout_t y_t silu'(z_t),  dstate_in = a_0 g_0.
 * Work items are tiles of 16 channels of one reduction class; each channel runs vectorized
 * over n. The chunks are walked from the last; after each, the tiles' partial sums of a
 * time-varying dB/dC are folded in index order, so the result does not depend on the number
 * of threads. */
#include <omp.h>
#include <string.h>

#include "api/alloc.h"
#include "api/scan_bwd.h"
#include "cpu_internal.h"
#include "cpu_math.h"

#define BWD_TILE 16

typedef struct bwd_view {
    const float *u, *delta, *A, *B, *C, *D, *z, *bias, *s_in, *dout, *ds_out;
    float *du, *ddelta, *dz, *dA, *dB, *dC, *dD, *dbias, *ds_in;
} bwd_view;

typedef struct bwd_job {
    const mb_scan_bwd_op *op;
    const mb_scan_op *f;
    bwd_view v;
    mb_scan_bwd_plan pl;
    float *s; /* the plan's scratch */
} bwd_job;

/* One forward step of channel d: h = exp(dt A) h + dt u B_t. */
static inline void step(const bwd_job *j, size_t b, size_t t, size_t g, const float *a, float dt, float uu, float *h)
{
    const mb_scan_op *f = j->f;
    const float *Bt = j->v.B + b * f->B_sb + t * f->B_st + g * f->B_sg;
    const float du = dt * uu;
    const size_t N = f->d_state;
    const ptrdiff_t sn = f->B_sn;
    if (sn == 1) { /* contiguous: vectorized (see adjoint_step) */
#pragma omp simd
        for (size_t n = 0; n < N; n++) h[n] = fexp(dt * a[n]) * h[n] + du * Bt[n];
        return;
    }
#pragma omp simd
    for (size_t n = 0; n < N; n++) h[n] = fexp(dt * a[n]) * h[n] + du * Bt[n * sn];
}

/* dt of steps [t0, t0 + n) of channel d into dtv (and d dt / d delta into dspv unless NULL),
 * vectorized over time: one step at a time, the softplus's exp and log cost as much as the
 * vector work over n for N = 16 (measured: 60% of a small model's training step). */
static inline void chunk_dt(const bwd_job *j, size_t b, size_t d, size_t t0, size_t n, float *dtv, float *dspv)
{
    const mb_scan_op *f = j->f;
    const float bias = j->v.bias ? j->v.bias[d] : 0.0f;
    const float *del = j->v.delta + b * f->delta_sb + t0 * f->delta_st + d * f->delta_sd;
    const ptrdiff_t dst = f->delta_st;
    const int softplus = f->delta_softplus;
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        const float raw = del[(ptrdiff_t)i * dst] + bias;
        dtv[i] = softplus ? fsoftplus(raw) : raw;
        if (dspv) dspv[i] = !softplus || raw > 20.0f ? 1.0f : 1.0f / (1.0f + fexp(-raw));
    }
}

/* Pass 1: the state entering each chunk, H[(c * BD + bd) * N + n]. */
MB_CPU_CLONES
static void boundary_states(const bwd_job *j, size_t b, size_t d)
{
    const mb_scan_op *f = j->f;
    const size_t N = f->d_state, L = f->len, D = f->dim, T = j->pl.chunk_len, BD = f->batch * D;
    const size_t g = d / (D / f->n_groups), bd = b * D + d;
    float h[CPU_MAX_STATE], dtv[MB_SCAN_BWD_MAX_CHUNK];
    const float *a = j->v.A + d * N;
    for (size_t n = 0; n < N; n++) h[n] = j->v.s_in ? j->v.s_in[bd * N + n] : 0.0f;
    float *H = j->s + j->pl.off_H;
    for (size_t t0 = 0; t0 < L; t0 += T) {
        const size_t nt = L - t0 < T ? L - t0 : T;
        memcpy(H + ((t0 / T) * BD + bd) * N, h, N * sizeof *h);
        chunk_dt(j, b, d, t0, nt, dtv, NULL);
        for (size_t t = t0; t < t0 + nt; t++)
            step(j, b, t, g, a, dtv[t - t0], j->v.u[b * f->u_sb + t * f->u_st + d * f->u_sd], h);
    }
}

/* One step of the adjoint over the states, B_t and C_t contiguous (a gather inside this loop
 * kept GCC's AVX-512 clone scalar: measured 4x slower at N = 16). */
static inline void adjoint_step(size_t N, const float *restrict Bt, const float *restrict Ct, const float *restrict a,
                                const float *restrict hprev, const float *restrict hcur, float dt, float dy, float uu,
                                float *restrict carry, float *restrict gA, float *restrict cb, float *restrict cc,
                                float *yv_out, float *dua_out, float *ddt_out)
{
    float yv = 0.0f, dua = 0.0f, ddt = 0.0f;
    const float dtu = dt * uu;
#pragma omp simd reduction(+ : yv, dua, ddt)
    for (size_t n = 0; n < N; n++) {
        const float bn = Bt[n], cn = Ct[n];
        const float e = fexp(dt * a[n]);
        const float gg = cn * dy + carry[n];
        const float ah = e * hprev[n];
        yv += cn * hcur[n];
        dua += gg * bn;
        ddt += gg * (a[n] * ah + bn * uu);
        gA[n] += gg * dt * ah;
        cb[n] += gg * dtu;
        cc[n] += dy * hcur[n];
        carry[n] = e * gg;
    }
    *yv_out = yv;
    *dua_out = dua;
    *ddt_out = ddt;
}

/* Chunk [t0, t1) of channel d, backwards: recompute its states into hist from the boundary
 * state, then run the adjoint from the carry. pb/pc: the tile's partial sums of this chunk
 * (time-varying dB/dC), added to in channel order. */
MB_CPU_CLONES
static void channel_chunk(const bwd_job *j, size_t b, size_t d, size_t c, float *hist, float *pb, float *pc)
{
    const mb_scan_op *f = j->f;
    const bwd_view *v = &j->v;
    const mb_scan_bwd_plan *pl = &j->pl;
    const size_t N = f->d_state, D = f->dim, T = pl->chunk_len, BD = f->batch * D;
    const size_t t0 = c * T, t1 = t0 + T < f->len ? t0 + T : f->len;
    if (t1 <= t0) return;
    const size_t g = d / (D / f->n_groups), bd = b * D + d;
    const float *a = v->A + d * N;
    const float *Hc = j->s + pl->off_H + (c * BD + bd) * N;
    const float Dd = v->D ? v->D[d] : 0.0f;
    /* the chunk's per-step scalars first, vectorized over time (see chunk_dt) */
    const size_t nt = t1 - t0;
    float dtv[MB_SCAN_BWD_MAX_CHUNK], dspv[MB_SCAN_BWD_MAX_CHUNK], uv[MB_SCAN_BWD_MAX_CHUNK];
    float dov[MB_SCAN_BWD_MAX_CHUNK], dyv[MB_SCAN_BWD_MAX_CHUNK], szv[MB_SCAN_BWD_MAX_CHUNK];
    chunk_dt(j, b, d, t0, nt, dtv, dspv);
    const float *uu0 = v->u + b * f->u_sb + t0 * f->u_st + d * f->u_sd;
    const float *do0 = v->dout + b * j->op->dout_sb + t0 * j->op->dout_st + d * j->op->dout_sd;
    const ptrdiff_t ust = f->u_st, ost = j->op->dout_st;
    for (size_t i = 0; i < nt; i++) {
        uv[i] = uu0[(ptrdiff_t)i * ust];
        dov[i] = do0[(ptrdiff_t)i * ost];
    }
    if (v->z) {
        const float *z0 = v->z + b * f->z_sb + t0 * f->z_st + d * f->z_sd;
        const ptrdiff_t zst = f->z_st;
#pragma omp simd
        for (size_t i = 0; i < nt; i++) {
            const float zz = z0[(ptrdiff_t)i * zst], sz = 1.0f / (1.0f + fexp(-zz));
            szv[i] = sz;
            dyv[i] = dov[i] * zz * sz;
        }
    } else {
        for (size_t i = 0; i < nt; i++) dyv[i] = dov[i];
    }
    float h[CPU_MAX_STATE];
    for (size_t n = 0; n < N; n++) h[n] = Hc[n];
    for (size_t t = t0; t < t1; t++) {
        /* chunk_dt and the loop above filled dtv and uv up to nt */
        step(j, b, t, g, a, dtv[t - t0], uv[t - t0], h); // NOLINT(clang-analyzer-core.CallAndMessage)
        memcpy(hist + (t - t0) * N, h, N * sizeof *h);
    }
    /* what is not wanted goes to a sink */
    float sink[3][CPU_MAX_STATE];
    float *carry = j->s + pl->off_carry + bd * N;
    float *gA = v->dA ? j->s + pl->off_accA + bd * N : sink[0];
    float *tcB = pl->tc_B ? j->s + pl->off_accB + bd * N : sink[1];
    float *tcC = pl->tc_C ? j->s + pl->off_accC + bd * N : sink[2];
    for (int k = 0; k < 3; k++) memset(sink[k], 0, N * sizeof sink[k][0]);
    float accD = 0.0f, accbias = 0.0f;
    const ptrdiff_t bsn = f->B_sn, csn = f->C_sn;
    for (size_t t = t1; t-- > t0;) {
        const size_t i = t - t0;
        const float dt = dtv[i], dsp = dspv[i], uu = uv[i], dout = dov[i], dy = dyv[i];
        const float *hcur = hist + (t - t0) * N, *hprev = t > t0 ? hist + (t - 1 - t0) * N : Hc;
        const float *Bt = v->B + b * f->B_sb + t * f->B_st + g * f->B_sg;
        const float *Ct = v->C + b * f->C_sb + t * f->C_st + g * f->C_sg;
        float *cb = pb ? pb + (t - t0) * N : tcB, *cc = pc ? pc + (t - t0) * N : tcC;
        float yv = 0.0f, dua = 0.0f, ddt = 0.0f;
        if (bsn == 1 && csn == 1) {
            adjoint_step(N, Bt, Ct, a, hprev, hcur, dt, dy, uu, carry, gA, cb, cc, &yv, &dua, &ddt);
        } else {
            float bl[CPU_MAX_STATE], cl[CPU_MAX_STATE];
            for (size_t n = 0; n < N; n++) {
                bl[n] = Bt[n * bsn];
                cl[n] = Ct[n * csn];
            }
            adjoint_step(N, bl, cl, a, hprev, hcur, dt, dy, uu, carry, gA, cb, cc, &yv, &dua, &ddt);
        }
        if (v->du) v->du[b * f->u_sb + t * f->u_st + d * f->u_sd] = dt * dua + Dd * dy;
        const float ddl = ddt * dsp;
        if (v->ddelta) v->ddelta[b * f->delta_sb + t * f->delta_st + d * f->delta_sd] = ddl;
        accbias += ddl;
        accD += dy * uu;
        if (v->dz) {
            const float zz = v->z[b * f->z_sb + t * f->z_st + d * f->z_sd], sz = szv[i];
            v->dz[b * f->z_sb + t * f->z_st + d * f->z_sd] = dout * (yv + Dd * uu) * sz * (1.0f + zz * (1.0f - sz));
        }
    }
    if (v->dD) j->s[pl->off_accD + bd] += accD;
    if (v->dbias) j->s[pl->off_accbias + bd] += accbias;
}

/* The tile `unit` (batch, class, tile within the class) on chunk c. */
static void unit_chunk(const bwd_job *j, size_t unit, size_t c, float *hist)
{
    const mb_scan_bwd_plan *pl = &j->pl;
    const size_t N = j->f->d_state, T = pl->chunk_len;
    const size_t per_b = pl->n_classes * pl->tiles;
    const size_t b = unit / per_b, cls = (unit % per_b) / pl->tiles, k = unit % pl->tiles;
    const size_t d0 = cls * pl->class_size + k * pl->tile, cend = (cls + 1) * pl->class_size;
    const size_t d1 = d0 + pl->tile < cend ? d0 + pl->tile : cend;
    float *pb = pl->tv_B ? j->s + pl->off_PB + unit * T * N : NULL;
    float *pc = pl->tv_C ? j->s + pl->off_PC + unit * T * N : NULL;
    if (pl->tv_B) memset(pb, 0, T * N * sizeof *pb);
    if (pl->tv_C) memset(pc, 0, T * N * sizeof *pc);
    for (size_t d = d0; d < d1; d++) channel_chunk(j, b, d, c, hist, pb, pc);
}

/* A time-varying dB (which 0) or dC (1) on steps [t0, t1): each element the sum of the tiles'
 * partial sums over the batch (where its stride is 0) and the classes that read it. */
static void fold_varying(const bwd_job *j, int which, size_t t0, size_t t1, int threads)
{
    const mb_scan_op *f = j->f;
    const mb_scan_bwd_plan *pl = &j->pl;
    const ptrdiff_t sb = which ? f->C_sb : f->B_sb, st = which ? f->C_st : f->B_st;
    const ptrdiff_t sg = which ? f->C_sg : f->B_sg, sn = which ? f->C_sn : f->B_sn;
    const float *P = j->s + (which ? pl->off_PC : pl->off_PB);
    float *out = which ? j->v.dC : j->v.dB;
    const size_t B = f->batch, N = f->d_state, T = pl->chunk_len, nt = t1 - t0;
    const size_t nb = sb ? B : 1, ng = sg ? f->n_groups : 1, per_b = pl->n_classes * pl->tiles;
    const int own_class = sg != 0 && pl->n_classes > 1;
#pragma omp parallel for num_threads(threads)
    for (size_t r = 0; r < nb * nt; r++) {
        const size_t bo = r / nt, tl = r % nt;
        for (size_t go = 0; go < ng; go++) {
            const size_t c0 = own_class ? go : 0, c1 = own_class ? go + 1 : pl->n_classes;
            for (size_t n = 0; n < N; n++) {
                float acc = 0.0f;
                for (size_t b = sb ? bo : 0; b < (sb ? bo + 1 : B); b++)
                    for (size_t cl = c0; cl < c1; cl++)
                        for (size_t k = 0; k < pl->tiles; k++)
                            acc += P[((b * per_b + cl * pl->tiles + k) * T + tl) * N + n];
                out[bo * sb + (t0 + tl) * st + go * sg + n * sn] = acc;
            }
        }
    }
}

/* out[bo, go, w] = sum over b (all when bshare, else bo) and the channels of group go of
 * acc[(b * dim + d) * W + w]: dA, dD, ddelta_bias and a constant dB/dC. */
static void fold_channels(const bwd_job *j, const float *acc, size_t W, size_t n_out_g, int bshare, float *out,
                          ptrdiff_t osb, ptrdiff_t osg, ptrdiff_t osw, int threads)
{
    const size_t B = j->f->batch, D = j->f->dim, gs = D / n_out_g, nb = bshare ? 1 : B;
#pragma omp parallel for num_threads(threads)
    for (size_t r = 0; r < nb * n_out_g; r++) {
        const size_t bo = r / n_out_g, go = r % n_out_g;
        for (size_t w = 0; w < W; w++) {
            float s = 0.0f;
            for (size_t b = bshare ? 0 : bo; b < (bshare ? B : bo + 1); b++)
                for (size_t d = go * gs; d < (go + 1) * gs; d++) s += acc[(b * D + d) * W + w];
            out[bo * osb + go * osg + w * osw] = s;
        }
    }
}

int cpu_scan_backward(mb_device *dev, const mb_scan_bwd_op *op)
{
    const mb_scan_op *f = &op->fwd;
    if (f->d_state > CPU_MAX_STATE)
        return cpu_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: d_state %zu, at most %d supported", f->d_state,
                        CPU_MAX_STATE);
    if (!f->n_groups || f->dim % f->n_groups)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: dim %zu not a multiple of n_groups %zu",
                        f->dim, f->n_groups);
    bwd_job j = {.op = op, .f = f};
    j.v = (bwd_view){
        cpu_at(f->u), cpu_at(f->delta), cpu_at(f->A), cpu_at(f->B), cpu_at(f->C), cpu_at(f->D), cpu_at(f->z),
        cpu_at(f->delta_bias), cpu_at(f->state_in), cpu_at(op->dout), cpu_at(op->dstate_out),
        cpu_at(op->du), cpu_at(op->ddelta), cpu_at(op->dz), cpu_at(op->dA), cpu_at(op->dB), cpu_at(op->dC),
        cpu_at(op->dD), cpu_at(op->ddelta_bias), cpu_at(op->dstate_in),
    };
    const bwd_view *v = &j.v;
    if (!v->u || !v->delta || !v->A || !v->B || !v->C || !v->dout)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: u, delta, A, B, C and dout are required");
    if ((v->dz && !v->z) || (v->dD && !v->D) || (v->dbias && !v->bias))
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: dz, dD, ddelta_bias need z, D, delta_bias");
    const int threads = dev->n_threads > 0 ? dev->n_threads : 1;
    mb_scan_bwd_plan_init(&j.pl, op, BWD_TILE, (size_t)threads);
    const size_t bytes = j.pl.total * sizeof(float);
    j.s = mb_calloc(j.pl.total ? j.pl.total : 1, sizeof(float));
    if (!j.s) return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "scan backward: %zu bytes of working memory", bytes);
    mb_mem_add(&dev->mem, bytes);
    const size_t B = f->batch, D = f->dim, N = f->d_state, BD = B * D;
    if (v->ds_out) memcpy(j.s + j.pl.off_carry, v->ds_out, BD * N * sizeof(float));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (size_t i = 0; i < BD; i++) boundary_states(&j, i / D, i % D);
    for (size_t c = j.pl.n_chunks; c-- > 0;) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (size_t unit = 0; unit < j.pl.units; unit++)
            unit_chunk(&j, unit, c, j.s + j.pl.off_hist + (size_t)omp_get_thread_num() * j.pl.chunk_len * N);
        const size_t t0 = c * j.pl.chunk_len, t1 = t0 + j.pl.chunk_len < f->len ? t0 + j.pl.chunk_len : f->len;
        if (j.pl.tv_B) fold_varying(&j, 0, t0, t1, threads);
        if (j.pl.tv_C) fold_varying(&j, 1, t0, t1, threads);
    }
    if (v->ds_in) memcpy(v->ds_in, j.s + j.pl.off_carry, BD * N * sizeof(float));
    if (v->dA) fold_channels(&j, j.s + j.pl.off_accA, N, D, 1, v->dA, 0, (ptrdiff_t)N, 1, threads);
    if (v->dD) fold_channels(&j, j.s + j.pl.off_accD, 1, D, 1, v->dD, 0, 1, 0, threads);
    if (v->dbias) fold_channels(&j, j.s + j.pl.off_accbias, 1, D, 1, v->dbias, 0, 1, 0, threads);
    if (j.pl.tc_B)
        fold_channels(&j, j.s + j.pl.off_accB, N, f->B_sg ? f->n_groups : 1, f->B_sb == 0, v->dB, f->B_sb, f->B_sg,
                      f->B_sn, threads);
    if (j.pl.tc_C)
        fold_channels(&j, j.s + j.pl.off_accC, N, f->C_sg ? f->n_groups : 1, f->C_sb == 0, v->dC, f->C_sb, f->C_sg,
                      f->C_sn, threads);
    free(j.s);
    mb_mem_sub(&dev->mem, bytes);
    return 0;
}
