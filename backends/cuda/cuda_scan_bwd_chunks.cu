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
 * A work-group is PC_CH channels of one reduction class x PC_LPC lanes, two states a lane, for
 * one chunk. It first stages in shared memory what does not depend on the state: the chunk's
 * B and C rows (one group's, shared by its channels) and each channel's step values (dt, u,
 * dy, d dt / d delta), each computed once. A step's sums over the states (y, du, ddelta) are
 * three values over a channel's 8 lanes by the halving exchange of sum4_8 (4 shuffles); a
 * time-varying dB/dC's sum over a warp's 4 channels is the same exchange over its channels
 * (3 shuffles for the lane's 2 states of dB and dC), the warps' sums added after the chunk in
 * channel order; du, ddelta and dz are written after the chunk, a step's channels side by side.
 * No atomics: the same inputs give the same bits.
 *
 * Measured on the H200 at (1, 1536, 2048, 16), the official kernel taking 0.36 ms:
 *   - the chunk-sequential kernels this replaces (N <= 16): 10.5 ms, 24 blocks of 132 SMs busy;
 *   - every chunk at once, a lane a state, B/C and the step values read from global memory by
 *     every lane and the outputs written from single lanes: 1.12 ms (ncu: 196 instructions a
 *     warp and step in the main pass);
 *   - the same with the stage in shared memory and a branch-free step loop: 0.405 ms (80). */
#include "cuda_scan_bwd.h"

#define PC_T MB_SCAN_BWD_PCHUNK
#define PC_CH 16 /* channels a pass of the work-group */
#define PC_SUB (MB_SCAN_BWD_PTILE / PC_CH) /* passes: the tile's channels, PC_CH at a time */
#define PC_LPC 8 /* lanes a channel, each two states */
#define PC_THREADS (PC_CH * PC_LPC)
#define PC_WARPS (PC_THREADS / 32)
#define FULL 0xffffffffu

static_assert(PC_THREADS == 128 && PC_LPC * 2 == 16, "a work-group is 4 warps of 4 channels, 2 states a lane");
static_assert(PC_SUB * PC_CH == MB_SCAN_BWD_PTILE, "a tile is whole passes");

/* The sums over a channel's 8 lanes of v0..v3: lanes 0-1 get v0's, 2-3 v1's, 4-5 v2's, 6-7
 * v3's. Each exchange hands the partner the half it does not keep. */
__device__ __forceinline__ float sum4_8(float v0, float v1, float v2, float v3, int j)
{
    const bool hi4 = (j & 4) != 0, hi2 = (j & 2) != 0;
    const float k0 = (hi4 ? v2 : v0) + __shfl_xor_sync(FULL, hi4 ? v0 : v2, 4, PC_LPC);
    const float k1 = (hi4 ? v3 : v1) + __shfl_xor_sync(FULL, hi4 ? v1 : v3, 4, PC_LPC);
    float m = (hi2 ? k1 : k0) + __shfl_xor_sync(FULL, hi2 ? k0 : k1, 2, PC_LPC);
    m += __shfl_xor_sync(FULL, m, 1, PC_LPC);
    return m;
}

/* One channel of a work-group, for a lane: its states n0 = 2j and n0 + 1. */
struct pc_chan {
    int b, d, n0;
    bool active, has0, has1;
    size_t bd;
    float a0, a1, a20, a21; /* A_dn, and A_dn log2(e): a_t = 2^(dt a2) */
};

/* Slot ch of pass sub of the work-group of blockIdx (x: the tile of a class, z: batch), lane
 * j; a slot past the class's channels is inactive and stands on its first channel. */
__device__ __forceinline__ pc_chan pc_channel(const bwd_params &p, int sub, int ch, int j)
{
    pc_chan c;
    const int cls = blockIdx.x / p.tiles, k = blockIdx.x % p.tiles;
    const int within = k * MB_SCAN_BWD_PTILE + sub * PC_CH + ch;
    c.active = within < p.class_size;
    c.b = blockIdx.z;
    c.d = cls * p.class_size + (c.active ? within : 0);
    c.n0 = 2 * j;
    c.has0 = c.n0 < p.N;
    c.has1 = c.n0 + 1 < p.N;
    c.bd = (size_t)c.b * p.D + c.d;
    const float *A = p.A + (size_t)c.d * p.N + c.n0;
    c.a0 = c.has0 ? A[0] : 0.0f;
    c.a1 = c.has1 ? A[1] : 0.0f;
    c.a20 = c.a0 * LOG2E;
    c.a21 = c.a1 * LOG2E;
    return c;
}

/* What a work-group stages: its chunk's B and C rows (bc[0], bc[1]; 0 past N) and each
 * channel's step values {dt, u, dy, d dt / d delta} (0 for an inactive slot). */
struct pc_stage {
    float bc[2][PC_T][16];
    float4 sc[PC_CH][PC_T];
};

/* The lane's two states of B or C where it does not vary in time */
__device__ __forceinline__ float2 pc_const(const float *M, const pc_chan &c, long long sb, long long sg, long long sn,
                                           int G, int D)
{
    const float *q = M + c.b * sb + (c.d / (D / G)) * sg + c.n0 * sn;
    return make_float2(c.has0 ? q[0] : 0.0f, c.has1 ? q[sn] : 0.0f);
}

__device__ __forceinline__ float2 pc_row(const float (*row)[16], int i, int n0)
{
    return *reinterpret_cast<const float2 *>(&row[i][n0]);
}

/* The chunk's B and C rows, for all passes */
__device__ void pc_stage_rows(const bwd_params &p, pc_stage &st, int t0, int len)
{
    static_assert(PC_THREADS % 16 == 0 && PC_THREADS % PC_CH == 0, "a thread keeps its state and channel");
    {
        /* thread x stages state x % 16 of steps x / 16, x / 16 + 8, ... */
        const pc_chan c0 = pc_channel(p, 0, 0, 0);
        const int n = threadIdx.x % 16, g = c0.d / (p.D / p.G), istep = PC_THREADS / 16;
        const bool inB = n < p.N && p.B_st, inC = n < p.N && p.C_st;
        const float *Bq = p.Bm + c0.b * p.B_sb + g * p.B_sg + (inB ? n : 0) * p.B_sn + (long long)t0 * p.B_st;
        const float *Cq = p.Cm + c0.b * p.C_sb + g * p.C_sg + (inC ? n : 0) * p.C_sn + (long long)t0 * p.C_st;
        for (int i = threadIdx.x / 16; i < len; i += istep) {
            st.bc[0][i][n] = inB ? Bq[i * p.B_st] : 0.0f;
            st.bc[1][i][n] = inC ? Cq[i * p.C_st] : 0.0f;
        }
    }
}

/* Pass sub's step values (d dt / d delta only where WANT_DSP); the caller syncs */
template <bool WANT_DSP> __device__ void pc_stage_steps(const bwd_params &p, pc_stage &st, int sub, int t0, int len)
{
    /* thread x stages channel x % PC_CH of steps x / PC_CH, x / PC_CH + 8, ...: a step's
     * channels side by side, whole sectors of a time-major tensor */
    const int ch = threadIdx.x % PC_CH, istep = PC_THREADS / PC_CH;
    const pc_chan c = pc_channel(p, sub, ch, 0);
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
            v.w = WANT_DSP ? dsp : 0.0f;
        }
        st.sc[ch][i] = v;
    }
}

/* Pass 1, grid (tiles of every class, chunks from p.c_base, batch), FULLC as pbwd_main's: each
 * chunk from a zero state forward (its end state into H, its sum of dt into S) and from a
 * zero carry backward (into K). */
template <bool FULLC> __global__ void __launch_bounds__(PC_THREADS) pbwd_local(const bwd_params p)
{
    __shared__ pc_stage st;
    const int j = threadIdx.x % PC_LPC, ch = threadIdx.x / PC_LPC;
    const int chunk = p.c_base + blockIdx.y, t0 = chunk * PC_T, len = FULLC ? PC_T : p.L - t0;
    pc_stage_rows(p, st, t0, len);
#pragma unroll 1
    for (int sub = 0; sub < PC_SUB; sub++) {
    if (sub) __syncthreads(); /* the previous pass has read its step values */
    pc_stage_steps<false>(p, st, sub, t0, len);
    __syncthreads();
    const pc_chan c = pc_channel(p, sub, ch, j);
    const float2 bk = pc_const(p.Bm, c, p.B_sb, p.B_sg, p.B_sn, p.G, p.D);
    const float2 ck = pc_const(p.Cm, c, p.C_sb, p.C_sg, p.C_sn, p.G, p.D);
    float h0 = 0.0f, h1 = 0.0f, S = 0.0f, k0 = 0.0f, k1 = 0.0f;
#pragma unroll 16
    for (int i = 0; i < PC_T; i++)
        if (FULLC || i < len) {
            const float4 v = st.sc[ch][i];
            const float2 bn = p.B_st ? pc_row(st.bc[0], i, c.n0) : bk;
            const float dtu = v.x * v.y;
            S += v.x;
            h0 = fmaf(ex2(v.x * c.a20), h0, dtu * bn.x);
            h1 = fmaf(ex2(v.x * c.a21), h1, dtu * bn.y);
        }
#pragma unroll 16
    for (int i = PC_T - 1; i >= 0; i--)
        if (FULLC || i < len) {
            const float4 v = st.sc[ch][i];
            const float2 cn = p.C_st ? pc_row(st.bc[1], i, c.n0) : ck;
            k0 = ex2(v.x * c.a20) * fmaf(cn.x, v.z, k0);
            k1 = ex2(v.x * c.a21) * fmaf(cn.y, v.z, k1);
        }
    if (!c.active) continue;
    const size_t BD = (size_t)p.B * p.D, at = ((size_t)chunk * p.N + c.n0) * BD + c.bd;
    if (c.has0) {
        p.s[p.H_off + at] = h0;
        p.s[p.K_off + at] = k0;
    }
    if (c.has1) {
        p.s[p.H_off + at + BD] = h1;
        p.s[p.K_off + at + BD] = k1;
    }
    if (j == 0) p.s[p.S_off + (size_t)chunk * BD + c.bd] = S;
    }
}

/* Pass 2, two threads per (state, b, d), one for H and one for K: the chunks' own parts
 * chained into the values at their boundaries, in place; dstate_in is the carry leaving the
 * first chunk. The loads of PC_BATCH chunks are issued before their stores (the stores could
 * alias later loads for the compiler, which then waited on each load in turn: 124 us at
 * (1, 1536, 2048, 16)). */
#define PC_BATCH 16
__global__ void __launch_bounds__(128) pbwd_carry(const bwd_params p)
{
    const size_t BD = (size_t)p.B * p.D, all = BD * p.N;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const bool back = i >= all;
    if (back) i -= all;
    if (i >= all) return;
    const size_t bd = i % BD;
    const int n = (int)(i / BD), d = (int)(bd % p.D), nc = p.n_chunks;
    const float a2 = p.A[(size_t)d * p.N + n] * LOG2E;
    const float *S = p.s + p.S_off + bd;
    const size_t step = (size_t)p.N * BD;
    if (!back) {
        float *H = p.s + p.H_off + i, h = p.s_in ? p.s_in[bd * p.N + n] : 0.0f;
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
        return;
    }
    float *K = p.s + p.K_off + i, k = p.dso ? p.dso[bd * p.N + n] : 0.0f;
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
 * ddelta, a zero); each warp's contributions to a time-varying dB/dC (its 4 channels of each
 * pass added); the per-thread parts of dD and ddelta_bias. */
struct pc_main_smem {
    pc_stage st;
    float sums[PC_CH][PC_T][4];
    float red[2][PC_T][PC_WARPS][16];
    float parts[2][PC_THREADS];
};

/* Pass 3, grid (tiles of every class, the segment's chunks, batch), FULLC when every chunk of
 * the launch has PC_T steps (else one chunk, the sequence's last): one chunk's backward for a
 * tile's channels, PC_CH at a time. du, ddelta and dz are final; the chunk's sums per channel
 * go to its part of accA .. accbias; a time-varying dB/dC's sums over the tile's channels to
 * PB / PC at the step's place in the segment. A tile of two passes halves those partial sums
 * (their traffic was 5% of (8, 1536, 2048, 16)) and stages the B/C rows once for both.
 *
 * FAST: B and C vary in time and dB and dC are wanted (training's case): the step loop has no
 * branch, so that the compiler can overlap the shuffles of neighbouring steps. Lanes that hold
 * the same value store it to the same place rather than one of them under a condition.
 * MINB 5: five work-groups an SM (96 registers, a few spilled) measured 5% faster than four. */
template <bool FULLC, bool FAST, int MINB = 5>
__global__ void __launch_bounds__(PC_THREADS, MINB) pbwd_main(const bwd_params p)
{
    extern __shared__ float4 pc_dynamic[];
    pc_main_smem &sm = *reinterpret_cast<pc_main_smem *>(pc_dynamic);
    const int j = threadIdx.x % PC_LPC, ch = threadIdx.x / PC_LPC, warp = threadIdx.x / 32;
    const int chunk = p.c_base + blockIdx.y, t0 = chunk * PC_T, len = FULLC ? PC_T : p.L - t0;
    const size_t BD = (size_t)p.B * p.D;
    const bool bvary = FAST || p.B_st != 0, cvary = FAST || p.C_st != 0, tv = FAST || p.tv_B || p.tv_C;
    /* the warp's 4 channels: lane bit 3 picks dB or dC, bit 4 the state of the pair */
    const bool qhi = (threadIdx.x & 8) != 0, shi = (threadIdx.x & 16) != 0;
    const int och = threadIdx.x % PC_CH;
    pc_stage_rows(p, sm.st, t0, len);
#pragma unroll
    for (int sub = 0; sub < PC_SUB; sub++) {
        if (sub) __syncthreads(); /* the previous pass has read its step values and sums */
        pc_stage_steps<true>(p, sm.st, sub, t0, len);
        __syncthreads();
        const pc_chan c = pc_channel(p, sub, ch, j);
        const size_t at = ((size_t)chunk * p.N + c.n0) * BD + c.bd;
        const bool live0 = c.active && c.has0, live1 = c.active && c.has1;
        const float h00 = live0 ? p.s[p.H_off + at] : 0.0f, h01 = live1 ? p.s[p.H_off + at + BD] : 0.0f;
        float carry0 = live0 ? p.s[p.K_off + at] : 0.0f, carry1 = live1 ? p.s[p.K_off + at + BD] : 0.0f;
        const float2 bk = pc_const(p.Bm, c, p.B_sb, p.B_sg, p.B_sn, p.G, p.D);
        const float2 ck = pc_const(p.Cm, c, p.C_sb, p.C_sg, p.C_sn, p.G, p.D);
        float hist0[PC_T], hist1[PC_T];
        float h0 = h00, h1 = h01;
#pragma unroll
        for (int i = 0; i < PC_T; i++)
            if (FULLC || i < len) {
                const float4 v = sm.st.sc[ch][i];
                const float2 bn = bvary ? pc_row(sm.st.bc[0], i, c.n0) : bk;
                const float dtu = v.x * v.y;
                h0 = fmaf(ex2(v.x * c.a20), h0, dtu * bn.x);
                h1 = fmaf(ex2(v.x * c.a21), h1, dtu * bn.y);
                hist0[i] = h0;
                hist1[i] = h1;
            }
        float gA0 = 0.0f, gA1 = 0.0f, tB0 = 0.0f, tB1 = 0.0f, tC0 = 0.0f, tC1 = 0.0f;
#pragma unroll
        for (int i = PC_T - 1; i >= 0; i--)
            if (FULLC || i < len) {
                const float4 v = sm.st.sc[ch][i]; /* dt, u, dy */
                const float2 bn = bvary ? pc_row(sm.st.bc[0], i, c.n0) : bk;
                const float2 cn = cvary ? pc_row(sm.st.bc[1], i, c.n0) : ck;
                const float e0 = ex2(v.x * c.a20), e1 = ex2(v.x * c.a21);
                const float g0 = fmaf(cn.x, v.z, carry0), g1 = fmaf(cn.y, v.z, carry1);
                const float hc0 = hist0[i], hc1 = hist1[i];
                const float ah0 = e0 * (i > 0 ? hist0[i - 1] : h00), ah1 = e1 * (i > 0 ? hist1[i - 1] : h01);
                const float dtu = v.x * v.y;
                const float cB0 = g0 * dtu, cB1 = g1 * dtu, cC0 = v.z * hc0, cC1 = v.z * hc1;
                if (!FAST) {
                    tB0 += cB0;
                    tB1 += cB1;
                    tC0 += cC0;
                    tC1 += cC1;
                }
                carry0 = e0 * g0;
                carry1 = e1 * g1;
                const float yv = fmaf(cn.x, hc0, cn.y * hc1), dua = fmaf(g0, bn.x, g1 * bn.y);
                /* d y / d dt = sum_n g_n (A_n a_n h_{n,t-1} + B_n u): the sum of g A a h here,
                 * u times du's sum after the chunk */
                const float gah0 = g0 * ah0, gah1 = g1 * ah1, gaa = fmaf(gah0, c.a0, gah1 * c.a1);
                gA0 = fmaf(gah0, v.x, gA0);
                gA1 = fmaf(gah1, v.x, gA1);
                /* lanes 0-1 hold y's sum over the states, 2-3 du's, 4-5 g A a h's, 6-7 a zero */
                sm.sums[ch][i][j >> 1] = sum4_8(yv, dua, gaa, 0.0f, j);
                if (tv) {
                    /* over the warp's channels: keep dB's pair or dC's (lane bit 3), then one
                     * state of it (bit 4); the lane ends with one (quantity, state) */
                    const float s0 = (qhi ? cC0 : cB0) + __shfl_xor_sync(FULL, qhi ? cB0 : cC0, 8);
                    const float s1 = (qhi ? cC1 : cB1) + __shfl_xor_sync(FULL, qhi ? cB1 : cC1, 8);
                    const float r = (shi ? s1 : s0) + __shfl_xor_sync(FULL, shi ? s0 : s1, 16);
                    float &slot = sm.red[qhi][i][warp][c.n0 + shi];
                    slot = sub ? slot + r : r;
                }
            }
        const size_t part = ((size_t)chunk * BD + c.bd) * p.N + c.n0;
        if (live0) {
            if (p.want_dA) p.s[p.accA_off + part] = gA0;
            if (p.tc_B) p.s[p.accB_off + part] = tB0;
            if (p.tc_C) p.s[p.accC_off + part] = tC0;
        }
        if (live1) {
            if (p.want_dA) p.s[p.accA_off + part + 1] = gA1;
            if (p.tc_B) p.s[p.accB_off + part + 1] = tB1;
            if (p.tc_C) p.s[p.accC_off + part + 1] = tC1;
        }
        __syncthreads();
        /* du, ddelta, dz of the pass, a step's channels side by side; the channel's sums of
         * dy u (dD) and ddelta (ddelta_bias) in parts by thread, added in thread order below */
        float pD = 0.0f, pbias = 0.0f;
        const pc_chan oc = pc_channel(p, sub, och, 0);
        const float Dd = p.Dv ? p.Dv[oc.d] : 0.0f;
        if (oc.active)
            for (int e = threadIdx.x; e < len * PC_CH; e += PC_THREADS) {
                const int i = e / PC_CH, t = t0 + i;
                const float4 v = sm.st.sc[och][i];
                const float yv = sm.sums[och][i][0], dua = sm.sums[och][i][1];
                const float ddl = fmaf(v.y, dua, sm.sums[och][i][2]) * v.w;
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
        sm.parts[0][threadIdx.x] = pD;
        sm.parts[1][threadIdx.x] = pbias;
        __syncthreads();
        if (threadIdx.x < PC_CH && oc.active) {
            float sD = 0.0f, sb = 0.0f;
            for (int r = threadIdx.x; r < PC_THREADS; r += PC_CH) {
                sD += sm.parts[0][r];
                sb += sm.parts[1][r];
            }
            if (p.want_dD) p.s[p.accD_off + (size_t)chunk * BD + oc.bd] = sD;
            if (p.want_dbias) p.s[p.accbias_off + (size_t)chunk * BD + oc.bd] = sb;
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
    pbwd_carry<<<blocks_of(2 * BD * p.N, 128), 128, 0, dev->stream>>>(p);
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
