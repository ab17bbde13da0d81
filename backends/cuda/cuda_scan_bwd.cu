/* The selective scan's backward on the GPU (mb_scan_bwd_op), in the plan of api/scan_bwd.h;
 * the same algorithm as the OpenCL backend's scan_bwd_* kernels (kernels.cl):
 *   1. bwd_states: one thread per (b, d) runs the forward and keeps the state entering each
 *      chunk in the scratch (n_chunks x N x batch x dim floats);
 *   2. bwd_main: one block per tile of BWD_LOCAL channels of one reduction class (a group of
 *      B/C, or every channel); each thread owns a channel, walks the chunks from the last,
 *      recomputes the chunk's states into its history slot (chunk_len x N floats) and runs the
 *      adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} back over the chunk, keeping its contributions
 *      to a time-varying dB/dC, which the block then sums per (step, state) over its threads in
 *      order into the tile's partial sums; dA, dD, ddelta_bias and a constant dB/dC are kept
 *      per thread;
 *   3. bwd_fold_tv / bwd_fold_ch: each gradient element adds its partial sums in index order.
 * For N <= 16 (Mamba's d_state) cuda_scan_bwd_chunks.cu does the work with every chunk at
 * once; the kernels here take N up to 256. No atomics: the same inputs give the same bits. */
#include "cuda_scan_bwd.h"

#define BWD_LOCAL 64
/* the loops over states: whole up to 64 (the arrays stay in registers), by 4 past that */
template <int MAXN> constexpr int bwd_unroll = MAXN <= 64 ? MAXN : 4;

/* The tile's partial sums of a time-varying dB/dC over chunk [t0, t1): per (step, state), the
 * contributions of its BWD_LOCAL channels added in channel order, by the block's threads. */
__device__ void tile_partials(const bwd_params &p, size_t unit, int t0, int t1)
{
    if (!p.tv_B && !p.tv_C) return;
    __syncthreads();
    for (int i = threadIdx.x; i < (t1 - t0) * p.N; i += blockDim.x) {
        const size_t row = (size_t)i * p.n_slots + unit * BWD_LOCAL;
        const size_t at = (unit * p.L + t0) * p.N + i;
        float sB = 0.0f, sC = 0.0f;
        for (int j = 0; j < BWD_LOCAL; j++) {
            if (p.tv_B) sB += p.s[p.cB_off + row + j];
            if (p.tv_C) sC += p.s[p.cC_off + row + j];
        }
        if (p.tv_B) p.s[p.PB_off + at] = sB;
        if (p.tv_C) p.s[p.PC_off + at] = sC;
    }
    __syncthreads();
}

/* step t's du, ddelta and dz of one channel, those wanted */
__device__ __forceinline__ void step_grads(const bwd_params &p, long long ub, long long db, long long zb, int t, float du,
                                           float ddl, float dz)
{
    if (p.du) p.du[ub + t * p.u_st] = du;
    if (p.ddl) p.ddl[db + t * p.d_st] = ddl;
    if (p.dz) p.dz[zb + t * p.z_st] = dz;
}

template <int MAXN> __global__ void __launch_bounds__(128) bwd_states(const bwd_params p)
{
    const int bd = blockIdx.x * blockDim.x + threadIdx.x;
    if (bd >= p.B * p.D) return;
    const int b = bd / p.D, d = bd % p.D, N = p.N, g = d / (p.D / p.G);
    const size_t BD = (size_t)p.B * p.D;
    float a[MAXN], h[MAXN];
#pragma unroll(bwd_unroll<MAXN>)
    for (int n = 0; n < MAXN; n++) {
        a[n] = n < N ? p.A[(size_t)d * N + n] : 0.0f;
        h[n] = n < N && p.s_in ? p.s_in[(size_t)bd * N + n] : 0.0f;
    }
    const float bs = p.bias ? p.bias[d] : 0.0f;
    const float *up = p.u + b * p.u_sb + d * p.u_sd, *dp = p.delta + b * p.d_sb + d * p.d_sd;
    const float *Bp = p.Bm + b * p.B_sb + g * p.B_sg;
    for (int t = 0; t < p.L; t++) {
        if (t % p.chunk_len == 0) {
            float *H = p.s + p.H_off + (size_t)(t / p.chunk_len) * N * BD + bd;
#pragma unroll(bwd_unroll<MAXN>)
            for (int n = 0; n < MAXN; n++)
                if (n < N) H[(size_t)n * BD] = h[n];
        }
        float dsp;
        const float dt = bwd_dt(dp[t * p.d_st] + bs, p.softplus, &dsp), dtl = dt * LOG2E, du = dt * up[t * p.u_st];
        const float *Bt = Bp + t * p.B_st;
#pragma unroll(bwd_unroll<MAXN>)
        for (int n = 0; n < MAXN; n++)
            if (n < N) h[n] = ex2(dtl * a[n]) * h[n] + du * Bt[n * p.B_sn];
    }
}

template <int MAXN> __global__ void __launch_bounds__(BWD_LOCAL) bwd_main(const bwd_params p)
{
    const int lid = threadIdx.x, k = blockIdx.x, cls = blockIdx.y, b = blockIdx.z;
    const int N = p.N, T = p.chunk_len;
    const int within = k * BWD_LOCAL + lid;
    const bool active = within < p.class_size;
    const int d = cls * p.class_size + (active ? within : 0), g = d / (p.D / p.G);
    const size_t BD = (size_t)p.B * p.D, bd = (size_t)b * p.D + d;
    const size_t unit = ((size_t)b * p.n_classes + cls) * p.tiles + k, slot = unit * BWD_LOCAL + lid;
    float a[MAXN], carry[MAXN], hc[MAXN], gA[MAXN], tB[MAXN], tC[MAXN];
#pragma unroll(bwd_unroll<MAXN>)
    for (int n = 0; n < MAXN; n++) {
        a[n] = n < N ? p.A[(size_t)d * N + n] : 0.0f;
        carry[n] = n < N && p.dso ? p.dso[bd * N + n] : 0.0f;
        gA[n] = tB[n] = tC[n] = 0.0f;
    }
    const float bs = p.bias ? p.bias[d] : 0.0f, Dd = p.Dv ? p.Dv[d] : 0.0f;
    const float *Bp = p.Bm + b * p.B_sb + g * p.B_sg, *Cp = p.Cm + b * p.C_sb + g * p.C_sg;
    const long long ub = b * p.u_sb + d * p.u_sd, db = b * p.d_sb + d * p.d_sd;
    const long long zb = b * p.z_sb + d * p.z_sd, ob = b * p.o_sb + d * p.o_sd;
    float *hist = p.s + p.hist_off + slot;
    float *contB = p.s + p.cB_off + slot, *contC = p.s + p.cC_off + slot;
    float accD = 0.0f, accbias = 0.0f;
    for (int c = p.n_chunks - 1; c >= 0; c--) {
        const int t0 = c * T, t1 = min(p.L, t0 + T);
        const float *Hc = p.s + p.H_off + (size_t)c * N * BD + bd;
#pragma unroll(bwd_unroll<MAXN>)
        for (int n = 0; n < MAXN; n++) hc[n] = n < N ? Hc[(size_t)n * BD] : 0.0f;
        for (int t = t0; t < t1; t++) {
            float dsp;
            const float dt = bwd_dt(p.delta[db + t * p.d_st] + bs, p.softplus, &dsp);
            const float dtl = dt * LOG2E, du = dt * p.u[ub + t * p.u_st];
            const float *Bt = Bp + t * p.B_st;
            float *ht = hist + (size_t)(t - t0) * N * p.n_slots;
#pragma unroll(bwd_unroll<MAXN>)
            for (int n = 0; n < MAXN; n++)
                if (n < N) {
                    hc[n] = ex2(dtl * a[n]) * hc[n] + du * Bt[n * p.B_sn];
                    ht[(size_t)n * p.n_slots] = hc[n];
                }
        }
        for (int t = t1 - 1; t >= t0; t--) {
            float dsp;
            const float dt = bwd_dt(p.delta[db + t * p.d_st] + bs, p.softplus, &dsp);
            const float dtl = dt * LOG2E, uu = p.u[ub + t * p.u_st], go = p.dout[ob + t * p.o_st], dtu = dt * uu;
            float zz = 0.0f, sz = 0.0f, dy = go;
            if (p.z) {
                zz = p.z[zb + t * p.z_st];
                sz = 1.0f / (1.0f + __expf(-zz));
                dy = go * zz * sz;
            }
            /* h_{t-1}: the history's previous step, or the chunk's boundary state */
            const float *hp0 = t > t0 ? hist + (size_t)(t - 1 - t0) * N * p.n_slots : Hc;
            const size_t hps = t > t0 ? p.n_slots : BD, icont = (size_t)(t - t0) * N * p.n_slots;
            const float *Bt = Bp + t * p.B_st, *Ct = Cp + t * p.C_st;
            float yv = 0.0f, dua = 0.0f, ddt = 0.0f;
#pragma unroll(bwd_unroll<MAXN>)
            for (int n = 0; n < MAXN; n++)
                if (n < N) {
                    const float bn = Bt[n * p.B_sn], cn = Ct[n * p.C_sn];
                    const float e = ex2(dtl * a[n]), gg = cn * dy + carry[n];
                    const float hp = hp0[(size_t)n * hps], ah = e * hp;
                    const float cB = active ? gg * dtu : 0.0f, cC = active ? dy * hc[n] : 0.0f;
                    yv += cn * hc[n];
                    dua += gg * bn;
                    ddt += gg * (a[n] * ah + bn * uu);
                    gA[n] += gg * dt * ah;
                    tB[n] += cB;
                    tC[n] += cC;
                    if (p.tv_B) contB[icont + (size_t)n * p.n_slots] = cB;
                    if (p.tv_C) contC[icont + (size_t)n * p.n_slots] = cC;
                    carry[n] = e * gg;
                    hc[n] = hp;
                }
            const float ddl = ddt * dsp;
            accD += dy * uu;
            accbias += ddl;
            if (active)
                step_grads(p, ub, db, zb, t, dt * dua + Dd * dy, ddl, go * (yv + Dd * uu) * sz * (1.0f + zz * (1.0f - sz)));
        }
        tile_partials(p, unit, t0, t1);
    }
    if (!active) return;
    for (int n = 0; n < N && n < MAXN; n++) {
        if (p.want_dA) p.s[p.accA_off + bd * N + n] = gA[n];
        if (p.tc_B) p.s[p.accB_off + bd * N + n] = tB[n];
        if (p.tc_C) p.s[p.accC_off + bd * N + n] = tC[n];
        if (p.dsi) p.dsi[bd * N + n] = carry[n];
    }
    if (p.want_dD) p.s[p.accD_off + bd] = accD;
    if (p.want_dbias) p.s[p.accbias_off + bd] = accbias;
}


/* The folds take 32 outputs a block and split each one's innermost sum over FOLD_SPLIT rows
 * of threads, whose parts are then added in row order: a thread per output left a few hundred
 * warps on the GPU, each waiting on its loads in turn (9 us for dA at (1, 1536, 2048, 16)). */
#define FOLD_SPLIT 8

__device__ __forceinline__ void fold_rows(float s, bool valid, float *out)
{
    __shared__ float rows[FOLD_SPLIT][32];
    rows[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y || !valid) return;
    float t = 0.0f;
#pragma unroll
    for (int r = 0; r < FOLD_SPLIT; r++) t += rows[r][threadIdx.x];
    *out = t;
}

/* A time-varying dB (which 0) or dC (1; which = first + blockIdx.y) at steps [t_base, t_base +
 * steps): per element it addresses, the sum of the tiles' partial sums over the batch (where
 * its stride is 0) and the classes that read it */
__global__ void __launch_bounds__(32 * FOLD_SPLIT) bwd_fold_tv(const bwd_params p, int first, int steps, float *dB,
                                                               float *dC)
{
    const int which = first + (int)blockIdx.y;
    const long long sb = which ? p.C_sb : p.B_sb, st = which ? p.C_st : p.B_st;
    const long long sg = which ? p.C_sg : p.B_sg, sn = which ? p.C_sn : p.B_sn;
    const float *P = p.s + (which ? p.PC_off : p.PB_off);
    const int nb = sb ? p.B : 1, ng = sg ? p.G : 1, N = p.N;
    /* 32-bit index arithmetic (the host checks the count): 64-bit divisions had cost about a
     * hundred instructions an element */
    const unsigned i = blockIdx.x * 32u + threadIdx.x;
    const bool valid = i < (unsigned)nb * (unsigned)steps * (unsigned)ng * (unsigned)N;
    const unsigned iv = valid ? i : 0u, un = (unsigned)N, ung = (unsigned)ng;
    const int n = (int)(iv % un), go = (int)((iv / un) % ung), tl = (int)((iv / (un * ung)) % (unsigned)steps);
    const int bo = (int)(iv / (un * ung * (unsigned)steps)), t = p.t_base + tl;
    const bool own = sg != 0 && p.n_classes > 1;
    const int c0 = own ? go : 0, c1 = own ? go + 1 : p.n_classes;
    const size_t tile_stride = (size_t)p.p_len * N;
    float acc = 0.0f;
    if (valid)
        for (int b = sb ? bo : 0; b < (sb ? bo + 1 : p.B); b++)
            for (int cl = c0; cl < c1; cl++) {
                const float *q = P + (((size_t)b * p.n_classes + cl) * p.tiles * p.p_len + tl) * N + n;
#pragma unroll 4
                for (int k = threadIdx.y; k < p.tiles; k += FOLD_SPLIT) acc += q[k * tile_stride];
            }
    fold_rows(acc, valid, &(which ? dC : dB)[bo * sb + t * st + go * sg + n * sn]);
}

/* out[bo, go, w] = the sum over b (every b when bshare, else bo), over the channels of group go
 * and over the parts c of acc[(c * BD + b * D + d) * W + w]: dA, dD, ddelta_bias, a constant dB/dC */
__global__ void __launch_bounds__(32 * FOLD_SPLIT) bwd_fold_ch(const bwd_params p, size_t acc_off, int W, int n_out_g,
                                                               int bshare, float *out, long long osb, long long osg,
                                                               long long osw)
{
    const int nb = bshare ? 1 : p.B, gs = p.D / n_out_g;
    const unsigned i = blockIdx.x * 32u + threadIdx.x, uW = (unsigned)W, ug = (unsigned)n_out_g;
    const bool valid = i < (unsigned)nb * ug * uW;
    const unsigned iv = valid ? i : 0u;
    const int w = (int)(iv % uW), go = (int)((iv / uW) % ug), bo = (int)(iv / (uW * ug));
    const float *acc = p.s + acc_off;
    const size_t part = (size_t)p.B * p.D * W;
    float s = 0.0f;
    if (valid)
        for (int b = bshare ? 0 : bo; b < (bshare ? p.B : bo + 1); b++)
            for (int d = go * gs; d < (go + 1) * gs; d++)
#pragma unroll 4
                for (int c = threadIdx.y; c < p.n_parts; c += FOLD_SPLIT)
                    s += acc[c * part + ((size_t)b * p.D + d) * W + w];
    fold_rows(s, valid, &out[bo * osb + go * osg + w * osw]);
}

static unsigned blocks_of(size_t n, unsigned per) { return (unsigned)((n + per - 1) / per); }

static int cuda_scan_bwd_fold_channels(mb_device *dev, const bwd_params &p, size_t acc_off, int W, int n_out_g,
                                       int bshare, mb_ptr out, ptrdiff_t osb, ptrdiff_t osg, ptrdiff_t osw)
{
    const size_t n = (size_t)(bshare ? 1 : p.B) * (size_t)n_out_g * (size_t)W;
    if (n > 0x7fffffffu)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: %zu elements to fold, at most 2^31 - 1", n);
    bwd_fold_ch<<<blocks_of(n, 32), dim3(32, FOLD_SPLIT), 0, dev->stream>>>(p, acc_off, W, n_out_g, bshare,
                                                                           (float *)cu_at(out), osb, osg, osw);
    CU_LAUNCHED(dev, "scan backward fold kernel");
    return 0;
}

int cuda_scan_bwd_fold_varying(mb_device *dev, const bwd_params &p, int steps, mb_ptr dB, mb_ptr dC)
{
    size_t n[2];
    for (int which = 0; which < 2; which++) {
        const long long sb = which ? p.C_sb : p.B_sb, sg = which ? p.C_sg : p.B_sg;
        n[which] = (size_t)(sb ? p.B : 1) * (size_t)steps * (size_t)(sg ? p.G : 1) * (size_t)p.N;
    }
    const int first = p.tv_B ? 0 : 1, count = p.tv_B + p.tv_C;
    if (!count) return 0;
    const size_t most = count == 2 ? (n[0] > n[1] ? n[0] : n[1]) : n[first];
    if (most > 0x7fffffffu)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: %zu dB/dC elements to fold, at most 2^31 - 1",
                         most);
    bwd_fold_tv<<<dim3(blocks_of(most, 32), (unsigned)count), dim3(32, FOLD_SPLIT), 0, dev->stream>>>(
        p, first, steps, (float *)cu_at(dB), (float *)cu_at(dC));
    CU_LAUNCHED(dev, "scan backward fold kernel");
    return 0;
}

template <int MAXN> static int launch(mb_device *dev, const bwd_params &p)
{
    bwd_states<MAXN><<<blocks_of((size_t)p.B * p.D, 128), 128, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "scan backward states kernel");
    bwd_main<MAXN><<<dim3((unsigned)p.tiles, (unsigned)p.n_classes, (unsigned)p.B), BWD_LOCAL, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "scan backward kernel");
    return 0;
}

int cuda_scan_backward(mb_device *dev, const mb_scan_bwd_op *op)
{
    const mb_scan_op *f = &op->fwd;
    if (f->d_state > 256)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: d_state %zu, at most 256 supported", f->d_state);
    if (!f->n_groups || f->dim % f->n_groups)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: dim %zu not a multiple of n_groups %zu",
                         f->dim, f->n_groups);
    if (!f->u.buf || !f->delta.buf || !f->A.buf || !f->B.buf || !f->C.buf || !op->dout.buf)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: u, delta, A, B, C and dout are required");
    if ((op->dz.buf && !f->z.buf) || (op->dD.buf && !f->D.buf) || (op->ddelta_bias.buf && !f->delta_bias.buf))
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: dz, dD, ddelta_bias need z, D, delta_bias");
    if (f->batch > 65535 || f->batch * f->dim > 0x7fffffff || f->len > 0x7fffffff)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: batch %zu (at most 65535), dim %zu, len %zu",
                         f->batch, f->dim, f->len);
    mb_scan_bwd_plan pl;
    const bool by_chunks = f->d_state <= 16;
    if (by_chunks)
        mb_scan_bwd_plan_parallel(&pl, op, dev->bwd_parts);
    else
        mb_scan_bwd_plan_init(&pl, op, BWD_LOCAL, 0);
    if (pl.n_classes > 65535)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: %zu reduction classes, at most 65535",
                         pl.n_classes);
    void *scratch;
    int rc = cuda_scratch(dev, pl.total * sizeof(float), &scratch);
    if (rc) return rc;
    bwd_params p;
    p.u = (const float *)cu_at(f->u); p.delta = (const float *)cu_at(f->delta); p.A = (const float *)cu_at(f->A);
    p.Bm = (const float *)cu_at(f->B); p.Cm = (const float *)cu_at(f->C); p.Dv = (const float *)cu_at(f->D);
    p.z = (const float *)cu_at(f->z); p.bias = (const float *)cu_at(f->delta_bias);
    p.s_in = (const float *)cu_at(f->state_in); p.dout = (const float *)cu_at(op->dout);
    p.dso = (const float *)cu_at(op->dstate_out);
    p.du = (float *)cu_at(op->du); p.ddl = (float *)cu_at(op->ddelta); p.dz = (float *)cu_at(op->dz);
    p.dsi = (float *)cu_at(op->dstate_in); p.s = (float *)scratch;
    p.u_sb = f->u_sb; p.u_st = f->u_st; p.u_sd = f->u_sd;
    p.d_sb = f->delta_sb; p.d_st = f->delta_st; p.d_sd = f->delta_sd;
    p.B_sb = f->B_sb; p.B_st = f->B_st; p.B_sg = f->B_sg; p.B_sn = f->B_sn;
    p.C_sb = f->C_sb; p.C_st = f->C_st; p.C_sg = f->C_sg; p.C_sn = f->C_sn;
    p.z_sb = f->z_sb; p.z_st = f->z_st; p.z_sd = f->z_sd;
    p.o_sb = op->dout_sb; p.o_st = op->dout_st; p.o_sd = op->dout_sd;
    p.H_off = pl.off_H; p.hist_off = pl.off_hist; p.cB_off = pl.off_cB; p.cC_off = pl.off_cC; p.PB_off = pl.off_PB; p.PC_off = pl.off_PC;
    p.accA_off = pl.off_accA; p.accB_off = pl.off_accB; p.accC_off = pl.off_accC; p.accD_off = pl.off_accD;
    p.accbias_off = pl.off_accbias; p.n_slots = pl.slots; p.S_off = pl.off_S; p.K_off = pl.off_K;
    p.B = (int)f->batch; p.D = (int)f->dim; p.L = (int)f->len; p.N = (int)f->d_state; p.G = (int)f->n_groups;
    p.softplus = f->delta_softplus; p.chunk_len = (int)pl.chunk_len; p.n_chunks = (int)pl.n_chunks;
    p.n_classes = (int)pl.n_classes; p.class_size = (int)pl.class_size; p.tiles = (int)pl.tiles;
    p.want_dA = op->dA.buf != nullptr; p.want_dD = op->dD.buf != nullptr; p.want_dbias = op->ddelta_bias.buf != nullptr;
    p.tv_B = pl.tv_B; p.tv_C = pl.tv_C; p.tc_B = pl.tc_B; p.tc_C = pl.tc_C;
    p.p_len = (int)pl.p_len; p.t_base = 0; p.c_base = 0; p.n_parts = by_chunks ? p.n_chunks : 1;
    if (by_chunks) {
        rc = cuda_scan_bwd_chunks(dev, op, p, pl);
    } else {
        rc = p.N <= 64 ? launch<64>(dev, p) : launch<256>(dev, p);
        if (!rc) rc = cuda_scan_bwd_fold_varying(dev, p, p.L, op->dB, op->dC);
    }
    const int D = p.D, N = p.N, G = p.G;
    if (!rc && op->dA.buf) rc = cuda_scan_bwd_fold_channels(dev, p, pl.off_accA, N, D, 1, op->dA, 0, N, 1);
    if (!rc && op->dD.buf) rc = cuda_scan_bwd_fold_channels(dev, p, pl.off_accD, 1, D, 1, op->dD, 0, 1, 0);
    if (!rc && op->ddelta_bias.buf) rc = cuda_scan_bwd_fold_channels(dev, p, pl.off_accbias, 1, D, 1, op->ddelta_bias, 0, 1, 0);
    if (!rc && pl.tc_B)
        rc = cuda_scan_bwd_fold_channels(dev, p, pl.off_accB, N, f->B_sg ? G : 1, f->B_sb == 0, op->dB, f->B_sb, f->B_sg, f->B_sn);
    if (!rc && pl.tc_C)
        rc = cuda_scan_bwd_fold_channels(dev, p, pl.off_accC, N, f->C_sg ? G : 1, f->C_sb == 0, op->dC, f->C_sb, f->C_sg, f->C_sn);
    return rc;
}
