/* The selective scan's backward for N <= 16 with every chunk of time worked on at once, in the
 * plan of mb_scan_bwd_plan_parallel (api/scan_bwd.h).
 *
 * Per channel and state the forward is h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A), b_t = dt_t
 * u_t B_t) and the adjoint g_t = C_t dy_t + a_{t+1} g_{t+1}. Both are linear, so over a chunk
 * [t0, t1) of decay P = prod a_t = exp(A sum dt):
 *   the state leaving it      = P * (state entering) + (its end state from a zero start),
 *   the carry leaving it left = P * (carry entering from the right) + (its carry from zero),
 * where the carry is a_t g_t, what step t passes to step t - 1. pbwd_local finds each chunk's
 * zero-start parts, pbwd_carry chains them over the chunks (a loop of C steps a channel and
 * state), and pbwd_main does each chunk's backward from its true boundary values: the chunk's
 * states recomputed forward into registers, the adjoint walked back over them.
 *
 * The chunk-sequential kernels this replaces for N <= 16 kept 24 blocks of the H200's 132 SMs
 * busy at (1, 1536, 2048, 16) and took 10.5 ms where the official kernel takes 0.36-0.53.
 *
 * A work-group is PC_CH channels of one reduction class x 16 lanes, a lane per state, for one
 * chunk. It first stages in shared memory what does not depend on the state: the chunk's B
 * and C rows (one group's, shared by its channels) and each channel's step values (dt, u, dy,
 * d dt / d delta), each computed once. A sum over the states (y, du, ddelta of a step) is
 * four values over 16 lanes by the halving exchange of sum4_16 (5 shuffles, not 12), kept in
 * shared memory; du, ddelta and dz are written after the chunk, a step's channels side by
 * side. A time-varying dB/dC's sum over the channels goes through shared memory, in channel
 * order. The first version read those from global memory in the step loop, each lane its own,
 * and wrote the outputs from single lanes: ncu counted 196 instructions a warp and step (1.1 ms
 * in all at (1, 1536, 2048, 16)). No atomics: the same inputs give the same bits. */
#include "cuda_scan_bwd.h"

#define PC_T MB_SCAN_BWD_PCHUNK
#define PC_CH MB_SCAN_BWD_PTILE
#define PC_LANES 16
#define PC_THREADS (PC_CH * PC_LANES)
#define PC_WARPS (PC_THREADS / 32)
#define FULL 0xffffffffu

static_assert(PC_THREADS % 32 == 0, "a block is whole warps");

/* The sums over a channel's 16 lanes of v0..v3: lanes 0-3 get v0's, 4-7 v1's, 8-11 v2's,
 * 12-15 v3's. Each exchange hands the partner the half it does not keep. */
__device__ __forceinline__ float sum4_16(float v0, float v1, float v2, float v3, int lane)
{
    const bool hi8 = (lane & 8) != 0, hi4 = (lane & 4) != 0;
    const float k0 = (hi8 ? v2 : v0) + __shfl_xor_sync(FULL, hi8 ? v0 : v2, 8, PC_LANES);
    const float k1 = (hi8 ? v3 : v1) + __shfl_xor_sync(FULL, hi8 ? v1 : v3, 8, PC_LANES);
    float m = (hi4 ? k1 : k0) + __shfl_xor_sync(FULL, hi4 ? k0 : k1, 4, PC_LANES);
    m += __shfl_xor_sync(FULL, m, 2, PC_LANES);
    m += __shfl_xor_sync(FULL, m, 1, PC_LANES);
    return m;
}

/* One channel of a work-group, for a lane (its state n). */
struct pc_chan {
    int b, d, n;
    bool active, has_n;
    size_t bd;
    float a, a2; /* A_dn, and A_dn log2(e): a_t = 2^(dt a2) */
};

/* Slot ch of the work-group of blockIdx (x: the tile of a class, z: batch); a slot past the
 * class's channels is inactive and stands on its first channel. */
__device__ __forceinline__ pc_chan pc_channel(const bwd_params &p, int ch, int lane)
{
    pc_chan c;
    const int cls = blockIdx.x / p.tiles, k = blockIdx.x % p.tiles, within = k * PC_CH + ch;
    c.active = within < p.class_size;
    c.b = blockIdx.z;
    c.d = cls * p.class_size + (c.active ? within : 0);
    c.n = lane;
    c.has_n = lane < p.N;
    c.bd = (size_t)c.b * p.D + c.d;
    c.a = c.has_n ? p.A[(size_t)c.d * p.N + lane] : 0.0f;
    c.a2 = c.a * LOG2E;
    return c;
}

/* What a work-group stages: its chunk's B and C rows (bc[0], bc[1]; 0 past N) and each
 * channel's step values {dt, u, dy, d dt / d delta} (0 for an inactive slot). */
struct pc_stage {
    float bc[2][PC_T][PC_LANES];
    float4 sc[PC_CH][PC_T];
};

/* B or C of the lane's state where it does not vary in time */
__device__ __forceinline__ float pc_const(const float *M, const pc_chan &c, long long sb, long long sg, long long sn,
                                          int G, int D)
{
    return c.has_n ? M[c.b * sb + (c.d / (D / G)) * sg + c.n * sn] : 0.0f;
}

__device__ void pc_stage_chunk(const bwd_params &p, pc_stage &st, int t0, int len, bool want_dsp)
{
    static_assert(PC_THREADS % PC_LANES == 0 && PC_THREADS % PC_CH == 0, "a thread keeps its state and channel");
    {
        /* thread x stages state x % 16 of steps x / 16, x / 16 + 8, ... */
        const pc_chan c0 = pc_channel(p, 0, 0);
        const int n = threadIdx.x % PC_LANES, g = c0.d / (p.D / p.G), i0 = threadIdx.x / PC_LANES;
        const int istep = PC_THREADS / PC_LANES;
        const bool inB = n < p.N && p.B_st, inC = n < p.N && p.C_st;
        const float *Bq = p.Bm + c0.b * p.B_sb + g * p.B_sg + (inB ? n : 0) * p.B_sn + (long long)t0 * p.B_st;
        const float *Cq = p.Cm + c0.b * p.C_sb + g * p.C_sg + (inC ? n : 0) * p.C_sn + (long long)t0 * p.C_st;
        for (int i = i0; i < len; i += istep) {
            st.bc[0][i][n] = inB ? Bq[i * p.B_st] : 0.0f;
            st.bc[1][i][n] = inC ? Cq[i * p.C_st] : 0.0f;
        }
    }
    /* thread x stages channel x % 8 of steps x / 8, x / 8 + 16, ...: a step's channels side by
     * side, one sector of a time-major tensor */
    const int ch = threadIdx.x % PC_CH, istep = PC_THREADS / PC_CH;
    const pc_chan c = pc_channel(p, ch, 0);
    const float bias = p.bias ? p.bias[c.d] : 0.0f;
    const float *dq = p.delta + c.b * p.d_sb + c.d * p.d_sd + (long long)t0 * p.d_st;
    const float *uq = p.u + c.b * p.u_sb + c.d * p.u_sd + (long long)t0 * p.u_st;
    const float *oq = p.dout + c.b * p.o_sb + c.d * p.o_sd + (long long)t0 * p.o_st;
    const float *zq = p.z ? p.z + c.b * p.z_sb + c.d * p.z_sd + (long long)t0 * p.z_st : nullptr;
    for (int i = threadIdx.x / PC_CH; i < len; i += istep) {
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (c.active) {
            float dsp;
            v.x = bwd_dt(dq[i * p.d_st] + bias, p.softplus, &dsp);
            v.y = uq[i * p.u_st];
            v.z = oq[i * p.o_st];
            if (zq) {
                const float zz = zq[i * p.z_st];
                v.z *= zz * __fdividef(1.0f, 1.0f + __expf(-zz));
            }
            v.w = want_dsp ? dsp : 0.0f;
        }
        st.sc[ch][i] = v;
    }
    __syncthreads();
}

/* Pass 1, grid (tiles of every class, chunks from p.c_base, batch), FULLC as pbwd_main's: each
 * chunk from a zero state forward (its end state into H, its sum of dt into S) and from a
 * zero carry backward (into K). */
template <bool FULLC> __global__ void __launch_bounds__(PC_THREADS) pbwd_local(const bwd_params p)
{
    __shared__ pc_stage st;
    const int lane = threadIdx.x % PC_LANES, ch = threadIdx.x / PC_LANES;
    const int chunk = p.c_base + blockIdx.y, t0 = chunk * PC_T, len = FULLC ? PC_T : p.L - t0;
    pc_stage_chunk(p, st, t0, len, false);
    const pc_chan c = pc_channel(p, ch, lane);
    const float bk = pc_const(p.Bm, c, p.B_sb, p.B_sg, p.B_sn, p.G, p.D);
    const float ck = pc_const(p.Cm, c, p.C_sb, p.C_sg, p.C_sn, p.G, p.D);
    float h = 0.0f, S = 0.0f, k = 0.0f;
#pragma unroll 16
    for (int i = 0; i < PC_T; i++)
        if (FULLC || i < len) {
            const float4 v = st.sc[ch][i];
            const float bn = p.B_st ? st.bc[0][i][lane] : bk;
            S += v.x;
            h = fmaf(ex2(v.x * c.a2), h, v.x * v.y * bn);
        }
#pragma unroll 16
    for (int i = PC_T - 1; i >= 0; i--)
        if (FULLC || i < len) {
            const float4 v = st.sc[ch][i];
            const float cn = p.C_st ? st.bc[1][i][lane] : ck;
            k = ex2(v.x * c.a2) * fmaf(cn, v.z, k);
        }
    if (!c.active) return;
    const size_t BD = (size_t)p.B * p.D, at = (size_t)chunk * p.N * BD + (size_t)c.n * BD + c.bd;
    if (c.has_n) {
        p.s[p.H_off + at] = h;
        p.s[p.K_off + at] = k;
    }
    if (lane == 0) p.s[p.S_off + (size_t)chunk * BD + c.bd] = S;
}

/* Pass 2, a thread per (state, b, d): H and K from the chunks' own parts to the values at
 * their boundaries, in place; dstate_in is the carry leaving the first chunk. The loads of
 * PC_BATCH chunks are issued before their stores (the stores could alias later loads for the
 * compiler, which then waited on each load in turn: 124 us at (1, 1536, 2048, 16)). */
#define PC_BATCH 16
__global__ void __launch_bounds__(128) pbwd_carry(const bwd_params p)
{
    const size_t BD = (size_t)p.B * p.D, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BD * p.N) return;
    const size_t bd = i % BD;
    const int n = (int)(i / BD), d = (int)(bd % p.D), nc = p.n_chunks;
    const float a2 = p.A[(size_t)d * p.N + n] * LOG2E;
    const float *S = p.s + p.S_off + bd;
    float *H = p.s + p.H_off + i, *K = p.s + p.K_off + i;
    const size_t step = (size_t)p.N * BD;
    float h = p.s_in ? p.s_in[bd * p.N + n] : 0.0f;
    for (int c0 = 0; c0 < nc; c0 += PC_BATCH) {
        float own[PC_BATCH], dec[PC_BATCH];
#pragma unroll
        for (int j = 0; j < PC_BATCH; j++)
            if (c0 + j < nc) {
                own[j] = H[(c0 + j) * step];
                dec[j] = ex2(a2 * S[(c0 + j) * BD]);
            }
#pragma unroll
        for (int j = 0; j < PC_BATCH; j++)
            if (c0 + j < nc) {
                H[(c0 + j) * step] = h;
                h = fmaf(dec[j], h, own[j]);
            }
    }
    float k = p.dso ? p.dso[bd * p.N + n] : 0.0f;
    for (int c1 = nc - 1; c1 >= 0; c1 -= PC_BATCH) {
        float own[PC_BATCH], dec[PC_BATCH];
#pragma unroll
        for (int j = 0; j < PC_BATCH; j++)
            if (c1 - j >= 0) {
                own[j] = K[(c1 - j) * step];
                dec[j] = ex2(a2 * S[(c1 - j) * BD]);
            }
#pragma unroll
        for (int j = 0; j < PC_BATCH; j++)
            if (c1 - j >= 0) {
                K[(c1 - j) * step] = k;
                k = fmaf(dec[j], k, own[j]);
            }
    }
    if (p.dsi) p.dsi[bd * p.N + n] = k;
}

/* The main pass's shared memory: the stage; the sums over the states of each step (y, du,
 * ddelta); each warp's contributions to a time-varying dB/dC (its two channels added). */
struct pc_main_smem {
    pc_stage st;
    float sums[PC_CH][PC_T][4];
    float red[2][PC_T][PC_WARPS][PC_LANES];
};

/* Pass 3, grid (tiles of every class, the segment's chunks, batch), FULLC when every chunk of
 * the launch has PC_T steps (else one chunk, the sequence's last): one chunk's backward for
 * PC_CH channels. du, ddelta and dz are final; the chunk's sums per channel go to its part of
 * accA .. accbias; a time-varying dB/dC's sums over the tile's channels to PB / PC at the
 * step's place in the segment.
 *
 * FAST: B and C vary in time and dB and dC are wanted (training's case): the step loop has no
 * branch, so that the compiler can overlap the shuffles of neighbouring steps (a step's sum
 * over the states is five dependent shuffles). Lanes that hold the same value store it to the
 * same place rather than one of them under a condition. */
template <bool FULLC, bool FAST> __global__ void __launch_bounds__(PC_THREADS, 4) pbwd_main(const bwd_params p)
{
    extern __shared__ float4 pc_dynamic[];
    pc_main_smem &sm = *reinterpret_cast<pc_main_smem *>(pc_dynamic);
    const int lane = threadIdx.x % PC_LANES, ch = threadIdx.x / PC_LANES, warp = threadIdx.x / 32;
    const int chunk = p.c_base + blockIdx.y, t0 = chunk * PC_T, len = FULLC ? PC_T : p.L - t0;
    pc_stage_chunk(p, sm.st, t0, len, true);
    const pc_chan c = pc_channel(p, ch, lane);
    const size_t BD = (size_t)p.B * p.D, at = (size_t)chunk * p.N * BD + (size_t)c.n * BD + c.bd;
    const bool live = c.active && c.has_n;
    const float h0 = live ? p.s[p.H_off + at] : 0.0f;
    float carry = live ? p.s[p.K_off + at] : 0.0f;
    const float bk = pc_const(p.Bm, c, p.B_sb, p.B_sg, p.B_sn, p.G, p.D);
    const float ck = pc_const(p.Cm, c, p.C_sb, p.C_sg, p.C_sn, p.G, p.D);
    const bool bvary = FAST || p.B_st != 0, cvary = FAST || p.C_st != 0, tv = FAST || p.tv_B || p.tv_C;
    float hist[PC_T];
    float h = h0;
#pragma unroll
    for (int i = 0; i < PC_T; i++)
        if (FULLC || i < len) {
            const float4 v = sm.st.sc[ch][i];
            const float bn = bvary ? sm.st.bc[0][i][lane] : bk;
            h = fmaf(ex2(v.x * c.a2), h, v.x * v.y * bn);
            hist[i] = h;
        }
    float gA = 0.0f, tB = 0.0f, tC = 0.0f;
#pragma unroll
    for (int i = PC_T - 1; i >= 0; i--)
        if (FULLC || i < len) {
            const float4 v = sm.st.sc[ch][i]; /* dt, u, dy */
            const float bn = bvary ? sm.st.bc[0][i][lane] : bk, cn = cvary ? sm.st.bc[1][i][lane] : ck;
            const float e = ex2(v.x * c.a2), gg = fmaf(cn, v.z, carry), hc = hist[i], hp = i > 0 ? hist[i - 1] : h0;
            const float ah = e * hp, cB = gg * (v.x * v.y), cC = v.z * hc;
            gA = fmaf(gg * v.x, ah, gA);
            if (!FAST) {
                tB += cB;
                tC += cC;
            }
            carry = e * gg;
            /* lanes 0-3 hold y's sum over the states, 4-7 du's, 8-11 ddelta's, 12-15 a zero */
            sm.sums[ch][i][lane >> 2] = sum4_16(cn * hc, gg * bn, gg * fmaf(c.a, ah, bn * v.y), 0.0f, lane);
            if (tv) {
                /* the warp's two channels (both halves hold the sum); the warps are added after
                 * the chunk */
                const float wB = cB + __shfl_xor_sync(FULL, cB, 16), wC = cC + __shfl_xor_sync(FULL, cC, 16);
                sm.red[0][i][warp][lane] = wB;
                sm.red[1][i][warp][lane] = wC;
            }
        }
    __syncthreads();
    /* du, ddelta, dz of the chunk, a step's channels side by side; the channel's sums of
     * dy u (dD) and ddelta (ddelta_bias) in parts by thread, added in thread order below */
    float pD = 0.0f, pbias = 0.0f;
    const int och = threadIdx.x % PC_CH;
    const pc_chan oc = pc_channel(p, och, 0);
    const float Dd = p.Dv ? p.Dv[oc.d] : 0.0f;
    if (oc.active)
        for (int e = threadIdx.x; e < len * PC_CH; e += PC_THREADS) {
            const int i = e / PC_CH, t = t0 + i;
            const float4 v = sm.st.sc[och][i];
            const float yv = sm.sums[och][i][0], dua = sm.sums[och][i][1], ddl = sm.sums[och][i][2] * v.w;
            pD = fmaf(v.z, v.y, pD);
            pbias += ddl;
            if (p.du) p.du[oc.b * p.u_sb + oc.d * p.u_sd + t * p.u_st] = fmaf(v.x, dua, Dd * v.z);
            if (p.ddl) p.ddl[oc.b * p.d_sb + oc.d * p.d_sd + t * p.d_st] = ddl;
            if (p.dz) {
                const float go = p.dout[oc.b * p.o_sb + oc.d * p.o_sd + t * p.o_st];
                const float zz = p.z[oc.b * p.z_sb + oc.d * p.z_sd + t * p.z_st];
                const float sz = __fdividef(1.0f, 1.0f + __expf(-zz));
                p.dz[oc.b * p.z_sb + oc.d * p.z_sd + t * p.z_st] =
                    go * sz * (1.0f + zz * (1.0f - sz)) * fmaf(Dd, v.y, yv);
            }
        }
    if (tv) {
        const size_t unit = ((size_t)blockIdx.z * p.n_classes + blockIdx.x / p.tiles) * p.tiles + blockIdx.x % p.tiles;
        const size_t row = (unit * p.p_len + (size_t)(t0 - p.t_base)) * p.N;
        for (int e = threadIdx.x; e < len * p.N; e += PC_THREADS) {
            const int i = e / p.N, n = e % p.N;
            float sB = 0.0f, sC = 0.0f;
#pragma unroll
            for (int w = 0; w < PC_WARPS; w++) {
                sB += sm.red[0][i][w][n];
                sC += sm.red[1][i][w][n];
            }
            if (p.tv_B) p.s[p.PB_off + row + e] = sB;
            if (p.tv_C) p.s[p.PC_off + row + e] = sC;
        }
    }
    /* the stage is no longer read: its B rows hold the per-thread parts of dD, ddelta_bias */
    float *parts = &sm.st.bc[0][0][0];
    parts[threadIdx.x] = pD;
    parts[PC_THREADS + threadIdx.x] = pbias;
    __syncthreads();
    if (threadIdx.x < PC_CH && oc.active) {
        float sD = 0.0f, sb = 0.0f;
        for (int r = threadIdx.x; r < PC_THREADS; r += PC_CH) {
            sD += parts[r];
            sb += parts[PC_THREADS + r];
        }
        if (p.want_dD) p.s[p.accD_off + (size_t)chunk * BD + oc.bd] = sD;
        if (p.want_dbias) p.s[p.accbias_off + (size_t)chunk * BD + oc.bd] = sb;
    }
    if (!live) return;
    const size_t part = ((size_t)chunk * BD + c.bd) * p.N + c.n;
    if (p.want_dA) p.s[p.accA_off + part] = gA;
    if (p.tc_B) p.s[p.accB_off + part] = tB;
    if (p.tc_C) p.s[p.accC_off + part] = tC;
}

static unsigned blocks_of(size_t n, unsigned per) { return (unsigned)((n + per - 1) / per); }

int cuda_scan_bwd_chunks(mb_device *dev, const mb_scan_bwd_op *op, bwd_params &p, const mb_scan_bwd_plan &pl)
{
    const size_t BD = (size_t)p.B * p.D, units = pl.n_classes * pl.tiles;
    if (pl.n_chunks > 65535 || units > 0x7fffffff)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: len %d (at most %d steps), %zu channel tiles",
                         p.L, 65535 * PC_T, units);
    const int smem = (int)sizeof(pc_main_smem);
    const bool fast = pl.tv_B && pl.tv_C;
    void (*const mains[4])(bwd_params) = {pbwd_main<true, true>, pbwd_main<true, false>, pbwd_main<false, true>,
                                          pbwd_main<false, false>};
    for (int k = 0; k < 4; k++)
        CU_CHECK(dev, cudaFuncSetAttribute(mains[k], cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
                 "scan backward shared memory");
    const size_t last = pl.n_chunks - 1;
    const bool tail = p.L % PC_T != 0; /* the last chunk is short */
    p.c_base = 0;
    if (pl.n_chunks - tail) {
        pbwd_local<true><<<dim3((unsigned)units, (unsigned)(pl.n_chunks - tail), (unsigned)p.B), PC_THREADS, 0,
                           dev->stream>>>(p);
        CU_LAUNCHED(dev, "scan backward chunk kernel");
    }
    if (tail) {
        p.c_base = (int)last;
        pbwd_local<false><<<dim3((unsigned)units, 1, (unsigned)p.B), PC_THREADS, 0, dev->stream>>>(p);
        CU_LAUNCHED(dev, "scan backward chunk kernel");
    }
    pbwd_carry<<<blocks_of(BD * p.N, 128), 128, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "scan backward carry kernel");
    for (size_t c0 = 0; c0 < pl.n_chunks; c0 += pl.seg_chunks) {
        const size_t nc = pl.n_chunks - c0 < pl.seg_chunks ? pl.n_chunks - c0 : pl.seg_chunks;
        const size_t full = tail && c0 + nc > last ? nc - 1 : nc;
        p.t_base = (int)(c0 * PC_T);
        if (full) {
            p.c_base = (int)c0;
            const dim3 grid((unsigned)units, (unsigned)full, (unsigned)p.B);
            if (fast)
                pbwd_main<true, true><<<grid, PC_THREADS, smem, dev->stream>>>(p);
            else
                pbwd_main<true, false><<<grid, PC_THREADS, smem, dev->stream>>>(p);
            CU_LAUNCHED(dev, "scan backward kernel");
        }
        if (full < nc) {
            p.c_base = (int)last;
            const dim3 grid((unsigned)units, 1, (unsigned)p.B);
            if (fast)
                pbwd_main<false, true><<<grid, PC_THREADS, smem, dev->stream>>>(p);
            else
                pbwd_main<false, false><<<grid, PC_THREADS, smem, dev->stream>>>(p);
            CU_LAUNCHED(dev, "scan backward kernel");
        }
        const int steps = min(p.L - p.t_base, (int)nc * PC_T);
        const int rc = cuda_scan_bwd_fold_varying(dev, p, steps, op->dB, op->dC);
        if (rc) return rc;
    }
    p.c_base = p.t_base = 0;
    return 0;
}
