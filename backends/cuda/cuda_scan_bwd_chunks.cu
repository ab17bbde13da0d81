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
 * busy at (1, 1536, 2048, 16) and took 10.5 ms where the official kernel takes 0.53.
 *
 * Layout of the work: a block is PC_CH channels x 16 lanes, a lane per state. The values of a
 * step that do not depend on the state (dt, its derivative, u, dy and dz's factor) are
 * computed once: lane s of a channel takes step 16 j + s of each group of 16 steps, and the
 * others read them with shuffles. A sum over the states (the step's dy-dependent gradients) is
 * four values over 16 lanes by the halving exchange of sum4_16 (5 shuffles, not 12). A
 * time-varying dB/dC's sum over the block's channels goes through shared memory, in channel
 * order. No atomics: the same inputs give the same bits. */
#include "cuda_scan_bwd.h"

#define PC_T MB_SCAN_BWD_PCHUNK
#define PC_CH MB_SCAN_BWD_PTILE
#define PC_LANES 16
#define PC_THREADS (PC_CH * PC_LANES)
#define PC_WARPS (PC_THREADS / 32)
#define FULL 0xffffffffu

static_assert(PC_T % PC_LANES == 0, "a chunk is whole groups of 16 steps");
static_assert(PC_THREADS % 32 == 0, "a block is whole warps");

__device__ __forceinline__ float lane_get(float v, int s) { return __shfl_sync(FULL, v, s, PC_LANES); }

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

/* One channel of a block, for a lane (its state n). */
struct pc_chan {
    int d, n;
    bool has_n;
    size_t bd;
    long long ub, db, zb, ob; /* where the channel's u, delta, z, dout start */
    const float *Bp, *Cp;     /* and the lane's B and C */
    float a, a2;              /* A_dn, and A_dn log2(e): a_t = 2^(dt a2) */
};

__device__ __forceinline__ pc_chan pc_channel(const bwd_params &p, int b, int d, int lane)
{
    pc_chan c;
    const int g = d / (p.D / p.G), n = lane < p.N ? lane : 0;
    c.d = d;
    c.n = lane;
    c.has_n = lane < p.N;
    c.bd = (size_t)b * p.D + d;
    c.ub = b * p.u_sb + d * p.u_sd;
    c.db = b * p.d_sb + d * p.d_sd;
    c.zb = b * p.z_sb + d * p.z_sd;
    c.ob = b * p.o_sb + d * p.o_sd;
    c.Bp = p.Bm + b * p.B_sb + g * p.B_sg + n * p.B_sn;
    c.Cp = p.Cm + b * p.C_sb + g * p.C_sg + n * p.C_sn;
    c.a = c.has_n ? p.A[(size_t)d * p.N + lane] : 0.0f;
    c.a2 = c.a * LOG2E;
    return c;
}

/* B_t or C_t of the lane's state (0 for a lane past N) */
__device__ __forceinline__ float pc_bc(const float *base, const pc_chan &c, long long st, int t)
{
    return c.has_n ? base[t * st] : 0.0f;
}

/* The forward's step values of step t, computed by the lane that owns it */
struct pc_fwd {
    float dt, dtu;
};
__device__ __forceinline__ pc_fwd pc_fwd_at(const bwd_params &p, const pc_chan &c, float bias, int t)
{
    float dsp;
    pc_fwd v;
    v.dt = bwd_dt(p.delta[c.db + t * p.d_st] + bias, p.softplus, &dsp);
    v.dtu = v.dt * p.u[c.ub + t * p.u_st];
    return v;
}

/* The backward's: dt, d dt / d delta, u, dy = dout z silu'(...) (the gate), and dz's factor */
struct pc_bwd {
    float dt, dsp, u, dy, zf;
};
__device__ __forceinline__ pc_bwd pc_bwd_at(const bwd_params &p, const pc_chan &c, float bias, int t)
{
    pc_bwd v;
    v.dt = bwd_dt(p.delta[c.db + t * p.d_st] + bias, p.softplus, &v.dsp);
    v.u = p.u[c.ub + t * p.u_st];
    const float go = p.dout[c.ob + t * p.o_st];
    v.dy = go;
    v.zf = 0.0f;
    if (p.z) {
        const float zz = p.z[c.zb + t * p.z_st], sz = 1.0f / (1.0f + __expf(-zz));
        v.dy = go * zz * sz;
        v.zf = go * sz * (1.0f + zz * (1.0f - sz));
    }
    return v;
}

/* Pass 1, grid (channel blocks of all B x D, chunks): each chunk from a zero state forward
 * (its end state into H, its sum of dt into S) and from a zero carry backward (into K). */
__global__ void __launch_bounds__(PC_THREADS) pbwd_local(const bwd_params p)
{
    const int lane = threadIdx.x % PC_LANES;
    const size_t BD = (size_t)p.B * p.D, want = (size_t)blockIdx.x * PC_CH + threadIdx.x / PC_LANES;
    const bool active = want < BD;
    const size_t bd = active ? want : BD - 1;
    const pc_chan c = pc_channel(p, (int)(bd / p.D), (int)(bd % p.D), lane);
    const float bias = p.bias ? p.bias[c.d] : 0.0f;
    const int t0 = blockIdx.y * PC_T, len = min(PC_T, p.L - t0);
    float h = 0.0f, S = 0.0f, k = 0.0f;
    for (int j = 0; j * PC_LANES < len; j++) {
        const int tj = t0 + j * PC_LANES, m = min(PC_LANES, len - j * PC_LANES);
        const pc_fwd own = lane < m ? pc_fwd_at(p, c, bias, tj + lane) : pc_fwd{0.0f, 0.0f};
        for (int s = 0; s < m; s++) {
            const float dt = lane_get(own.dt, s), dtu = lane_get(own.dtu, s);
            S += dt;
            h = ex2(dt * c.a2) * h + dtu * pc_bc(c.Bp, c, p.B_st, tj + s);
        }
    }
    for (int j = (len - 1) / PC_LANES; j >= 0; j--) {
        const int tj = t0 + j * PC_LANES, m = min(PC_LANES, len - j * PC_LANES);
        const pc_bwd own = lane < m ? pc_bwd_at(p, c, bias, tj + lane) : pc_bwd{0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int s = m - 1; s >= 0; s--) {
            const float dt = lane_get(own.dt, s), dy = lane_get(own.dy, s);
            k = ex2(dt * c.a2) * (pc_bc(c.Cp, c, p.C_st, tj + s) * dy + k);
        }
    }
    if (!active) return;
    const size_t at = (size_t)blockIdx.y * p.N * BD + (size_t)c.n * BD + bd;
    if (c.has_n) {
        p.s[p.H_off + at] = h;
        p.s[p.K_off + at] = k;
    }
    if (lane == 0) p.s[p.S_off + (size_t)blockIdx.y * BD + bd] = S;
}

/* Pass 2, a thread per (state, b, d): H and K from the chunks' own parts to the values at
 * their boundaries, in place; dstate_in is the carry leaving the first chunk. */
__global__ void __launch_bounds__(128) pbwd_carry(const bwd_params p)
{
    const size_t BD = (size_t)p.B * p.D, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= BD * p.N) return;
    const size_t bd = i % BD;
    const int n = (int)(i / BD), d = (int)(bd % p.D);
    const float a2 = p.A[(size_t)d * p.N + n] * LOG2E;
    const float *S = p.s + p.S_off + bd;
    float *H = p.s + p.H_off + i, *K = p.s + p.K_off + i;
    const size_t step = (size_t)p.N * BD;
    float h = p.s_in ? p.s_in[bd * p.N + n] : 0.0f;
#pragma unroll 8
    for (int c = 0; c < p.n_chunks; c++) {
        const float own = H[c * step];
        H[c * step] = h;
        h = ex2(a2 * S[c * BD]) * h + own;
    }
    float k = p.dso ? p.dso[bd * p.N + n] : 0.0f;
#pragma unroll 8
    for (int c = p.n_chunks - 1; c >= 0; c--) {
        const float own = K[c * step];
        K[c * step] = k;
        k = ex2(a2 * S[c * BD]) * k + own;
    }
    if (p.dsi) p.dsi[bd * p.N + n] = k;
}

/* Pass 3, grid (the tiles of every class, the segment's chunks, batch): one chunk's backward
 * for PC_CH channels of a reduction class. du, ddelta and dz are final; the chunk's sums per
 * channel go to its part of accA.. accbias; a time-varying dB/dC's sums over the tile's
 * channels to PB / PC at the step's place in the segment. */
__global__ void __launch_bounds__(PC_THREADS) pbwd_main(const bwd_params p)
{
    __shared__ float red[2][PC_T][PC_WARPS][PC_LANES];
    const int lane = threadIdx.x % PC_LANES, ch = threadIdx.x / PC_LANES, warp = threadIdx.x / 32;
    const int cls = blockIdx.x / p.tiles, k = blockIdx.x % p.tiles, b = blockIdx.z;
    const int chunk = p.c_base + blockIdx.y, t0 = chunk * PC_T, len = min(PC_T, p.L - t0);
    const int within = k * PC_CH + ch;
    const bool active = within < p.class_size;
    const pc_chan c = pc_channel(p, b, cls * p.class_size + (active ? within : 0), lane);
    const float bias = p.bias ? p.bias[c.d] : 0.0f, Dd = p.Dv ? p.Dv[c.d] : 0.0f;
    const size_t BD = (size_t)p.B * p.D, at = (size_t)chunk * p.N * BD + (size_t)c.n * BD + c.bd;
    const float h0 = c.has_n ? p.s[p.H_off + at] : 0.0f;
    float carry = c.has_n ? p.s[p.K_off + at] : 0.0f;
    float hist[PC_T];
    float h = h0;
#pragma unroll
    for (int j = 0; j < PC_T / PC_LANES; j++) {
        if (j * PC_LANES >= len) break;
        const int tj = t0 + j * PC_LANES;
        const pc_fwd own = j * PC_LANES + lane < len ? pc_fwd_at(p, c, bias, tj + lane) : pc_fwd{0.0f, 0.0f};
#pragma unroll
        for (int s = 0; s < PC_LANES; s++) {
            const float dt = lane_get(own.dt, s), dtu = lane_get(own.dtu, s);
            if (j * PC_LANES + s < len)
                h = ex2(dt * c.a2) * h + dtu * pc_bc(c.Bp, c, p.B_st, tj + s);
            hist[j * PC_LANES + s] = h;
        }
    }
    float gA = 0.0f, tB = 0.0f, tC = 0.0f, accD = 0.0f, accbias = 0.0f;
    const bool tv = p.tv_B || p.tv_C;
#pragma unroll
    for (int j = PC_T / PC_LANES - 1; j >= 0; j--) {
        if (j * PC_LANES >= len) continue;
        const int tj = t0 + j * PC_LANES;
        const pc_bwd own = j * PC_LANES + lane < len ? pc_bwd_at(p, c, bias, tj + lane)
                                                     : pc_bwd{0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int s = PC_LANES - 1; s >= 0; s--) {
            const int i = j * PC_LANES + s, t = tj + s;
            const float dt = lane_get(own.dt, s), uu = lane_get(own.u, s), dy = lane_get(own.dy, s);
            const float zf = p.dz ? lane_get(own.zf, s) : 0.0f, dsp = lane_get(own.dsp, s);
            if (i >= len) continue; /* after the shuffles, which every lane joins */
            const float bn = pc_bc(c.Bp, c, p.B_st, t);
            const float cn = pc_bc(c.Cp, c, p.C_st, t);
            const float e = ex2(dt * c.a2), gg = cn * dy + carry, hc = hist[i], hp = i > 0 ? hist[i - 1] : h0;
            const float ah = e * hp, cB = active ? gg * dt * uu : 0.0f, cC = active ? dy * hc : 0.0f;
            gA += gg * dt * ah;
            tB += cB;
            tC += cC;
            carry = e * gg;
            /* lanes 0-3: y's sum over the states, 4-7: du's, 8-11: ddelta's */
            const float m = sum4_16(cn * hc, gg * bn, gg * (c.a * ah + bn * uu), 0.0f, lane);
            if (active) {
                if (lane == 0) {
                    accD += dy * uu;
                    if (p.dz) p.dz[c.zb + t * p.z_st] = zf * (m + Dd * uu);
                }
                if (lane == 4 && p.du) p.du[c.ub + t * p.u_st] = dt * m + Dd * dy;
                if (lane == 8) {
                    const float ddl = m * dsp;
                    accbias += ddl;
                    if (p.ddl) p.ddl[c.db + t * p.d_st] = ddl;
                }
            }
            if (tv) {
                /* the warp's two channels, then the block's warps through shared memory */
                const float wB = cB + __shfl_xor_sync(FULL, cB, 16), wC = cC + __shfl_xor_sync(FULL, cC, 16);
                if ((threadIdx.x & 31) < PC_LANES) {
                    red[0][i][warp][lane] = wB;
                    red[1][i][warp][lane] = wC;
                }
            }
        }
    }
    if (tv) {
        __syncthreads();
        const size_t unit = ((size_t)b * p.n_classes + cls) * p.tiles + k;
        const size_t row = (unit * p.p_len + (size_t)blockIdx.y * PC_T) * p.N;
        for (int e = threadIdx.x; e < len * p.N; e += PC_THREADS) {
            const int i = e / p.N, n = e % p.N;
            float sB = 0.0f, sC = 0.0f;
#pragma unroll
            for (int w = 0; w < PC_WARPS; w++) {
                sB += red[0][i][w][n];
                sC += red[1][i][w][n];
            }
            if (p.tv_B) p.s[p.PB_off + row + e] = sB;
            if (p.tv_C) p.s[p.PC_off + row + e] = sC;
        }
    }
    if (!active) return;
    const size_t part = ((size_t)chunk * BD + c.bd) * p.N + c.n;
    if (c.has_n) {
        if (p.want_dA) p.s[p.accA_off + part] = gA;
        if (p.tc_B) p.s[p.accB_off + part] = tB;
        if (p.tc_C) p.s[p.accC_off + part] = tC;
    }
    if (lane == 0 && p.want_dD) p.s[p.accD_off + (size_t)chunk * BD + c.bd] = accD;
    if (lane == 8 && p.want_dbias) p.s[p.accbias_off + (size_t)chunk * BD + c.bd] = accbias;
}

static unsigned blocks_of(size_t n, unsigned per) { return (unsigned)((n + per - 1) / per); }

int cuda_scan_bwd_chunks(mb_device *dev, const mb_scan_bwd_op *op, bwd_params &p, const mb_scan_bwd_plan &pl)
{
    const size_t BD = (size_t)p.B * p.D, units = pl.n_classes * pl.tiles;
    if (pl.n_chunks > 65535 || pl.seg_chunks > 65535 || units > 0x7fffffff)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan backward: len %d (at most %d steps), %zu channel tiles",
                         p.L, 65535 * PC_T, units);
    pbwd_local<<<dim3(blocks_of(BD, PC_CH), (unsigned)pl.n_chunks), PC_THREADS, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "scan backward chunk kernel");
    pbwd_carry<<<blocks_of(BD * p.N, 128), 128, 0, dev->stream>>>(p);
    CU_LAUNCHED(dev, "scan backward carry kernel");
    for (size_t c0 = 0; c0 < pl.n_chunks; c0 += pl.seg_chunks) {
        const size_t nc = pl.n_chunks - c0 < pl.seg_chunks ? pl.n_chunks - c0 : pl.seg_chunks;
        p.c_base = (int)c0;
        p.t_base = (int)(c0 * PC_T);
        pbwd_main<<<dim3((unsigned)units, (unsigned)nc, (unsigned)p.B), PC_THREADS, 0, dev->stream>>>(p);
        CU_LAUNCHED(dev, "scan backward kernel");
        const int steps = min(p.L - p.t_base, (int)nc * PC_T);
        int rc = 0;
        if (pl.tv_B) rc = cuda_scan_bwd_fold_varying(dev, p, 0, steps, op->dB);
        if (!rc && pl.tv_C) rc = cuda_scan_bwd_fold_varying(dev, p, 1, steps, op->dC);
        if (rc) return rc;
    }
    p.c_base = p.t_base = 0;
    return 0;
}
