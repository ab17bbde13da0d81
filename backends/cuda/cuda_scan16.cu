/* The selective scan for N = 16 with contiguous rows (every Mamba-1 model), passes 1 and 3 of
 * cuda_scan.cu's chunked scan with the same inputs, outputs and chunk states.
 *
 * The general kernel reads each step's inputs from global memory one step ahead; at the 2 to 3
 * warps a scheduler its 136 registers allow, most of a step waited on those loads (ncu: half
 * of the issue slots idle). Here a warp owns 32 channels and copies its inputs for S16_TT
 * steps at a time into shared memory with cp.async (u, delta, z: S16_TT rows of 32 channels;
 * B and C: S16_TT rows of 16), S16_STAGES tiles ahead of the step it computes, so the loads
 * are in flight while earlier tiles compute and the registers hold only the 16 states and the
 * 16 decay rates. The warps of a block share nothing: each waits on its own copies
 * (cp.async.wait_group, then __syncwarp), never on the others. The steps have no branches on N:
 * one step is 16 x (dt * A, ex2, du * B, the state's FMA, C . h) plus the per-channel softplus,
 * skip and gate, and a tile's steps are unrolled so that they overlap (ncu: one step at a time
 * kept each warp waiting on its own chain, 9 cycles an instruction, issue slots half idle). */
#include "cuda_scan.h"

#ifndef S16_TT
#define S16_TT 8     /* steps in a staged tile (a multiple of 4) */
#endif
#ifndef S16_STAGES
#define S16_STAGES 2 /* tiles in flight */
#endif
#define S16_WARPS 4  /* warps a block */

struct s16_tile {
    float u[S16_TT][32], dl[S16_TT][32], z[S16_TT][32];
    float B[S16_TT][16], C[S16_TT][16];
};

/* 16 bytes global -> shared without passing through registers; valid false writes zeros. */
__device__ __forceinline__ void cp16(void *dst, const float *src, bool valid)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

/* A tile of 32 channels x S16_TT steps from rows base + t * st (t from tb; rows past t1 are
 * zeros read from row t0's address). */
__device__ __forceinline__ void stage_rows(float (*dst)[32], const float *base, long long st, int tb, int t0, int t1,
                                           int lane)
{
#pragma unroll
    for (int k = 0; k < S16_TT * 8 / 32; k++) {
        const int i = lane + 32 * k, row = i >> 3, col = (i & 7) * 4, t = tb + row;
        cp16(&dst[row][col], base + (long long)(t < t1 ? t : t0) * st + col, t < t1);
    }
}
__device__ __forceinline__ void stage_bc(float (*dst)[16], const float *base, long long st, int tb, int t0, int t1,
                                         int lane)
{
#pragma unroll
    for (int k = 0; k < (S16_TT * 4 + 31) / 32; k++) {
        const int i = lane + 32 * k, row = i >> 2, col = (i & 3) * 4, t = tb + row;
        if (S16_TT * 4 % 32 == 0 || i < S16_TT * 4)
            cp16(&dst[row][col], base + (long long)(t < t1 ? t : t0) * st + col, t < t1);
    }
}

template <bool FINAL> __global__ void __launch_bounds__(32 * S16_WARPS) scan16_kernel(const scan_params p)
{
    /* Pass 3 after a carry pass reads only the carry's hin: its inputs come from kernels that
     * completed before pass 1 did, so it stages its first tiles while the carry runs. */
    const bool early = FINAL && p.n_chunks > 1;
    if (!early) griddep_wait();
    __shared__ s16_tile tiles[S16_WARPS][S16_STAGES];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int d0 = (blockIdx.x * S16_WARPS + w) * 32, d = d0 + lane;
    const int c = blockIdx.y, b = blockIdx.z;
    const int t0 = c * p.chunk_len, t1 = min(p.L, t0 + p.chunk_len);
    if (d0 >= p.D || t0 >= t1) return; /* whole warps: D is a multiple of 32 */
    const int g = d0 / (p.D / p.G);
    s16_tile *T = tiles[w];
    const float *ub = p.u + b * p.u_sb + d0, *db = p.delta + b * p.d_sb + d0;
    const float *zb = p.z ? p.z + b * p.z_sb + d0 : nullptr;
    const float *Bb = p.Bm + b * p.B_sb + g * p.B_sg, *Cb = p.Cm + b * p.C_sb + g * p.C_sg;
    const int ntiles = (t1 - t0 + S16_TT - 1) / S16_TT;
    auto stage = [&](int k) {
        s16_tile &X = T[k % S16_STAGES];
        const int tb = t0 + k * S16_TT;
        stage_rows(X.u, ub, p.u_st, tb, t0, t1, lane);
        stage_rows(X.dl, db, p.d_st, tb, t0, t1, lane);
        stage_bc(X.B, Bb, p.B_st, tb, t0, t1, lane);
        if (FINAL) {
            if (zb) stage_rows(X.z, zb, p.z_st, tb, t0, t1, lane);
            stage_bc(X.C, Cb, p.C_st, tb, t0, t1, lane);
        }
    };
#pragma unroll
    for (int k = 0; k < S16_STAGES - 1; k++) {
        if (k < ntiles) stage(k);
        cp_commit();
    }

    if (early) griddep_wait();
    float a2[16], h[16];
    const size_t sidx = ((size_t)b * p.D + d) * 16;
    const float *h0 = !FINAL ? nullptr : p.n_chunks > 1 ? p.hin + (size_t)c * p.B * p.D * 16 + sidx
                                       : p.s_in ? p.s_in + sidx : nullptr;
#pragma unroll
    for (int n = 0; n < 16; n++) {
        a2[n] = p.A[(size_t)d * 16 + n] * LOG2E;
        h[n] = h0 ? h0[n] : 0.0f;
    }
    const float bias = p.bias ? p.bias[d] : 0.0f, Dd = p.Dv ? p.Dv[d] : 0.0f;
    float *op = FINAL ? p.out + b * p.o_sb + d * p.o_sd : nullptr;
    float S = 0.0f;

    for (int k = 0; k < ntiles; k++) {
        if (k + S16_STAGES - 1 < ntiles) stage(k + S16_STAGES - 1);
        cp_commit();
        cp_wait<S16_STAGES - 1>();
        __syncwarp();
        const s16_tile &X = T[k % S16_STAGES];
        const int tb = t0 + k * S16_TT, steps = min(S16_TT, t1 - tb);
        /* The tile's dt first: these do not depend on the states, and with the steps unrolled
         * the scheduler can overlap one step's exponentials with the previous step's sums. A
         * step past t1 gets dt = 0 and du = 0, which leaves the states as they are. */
        float dt[S16_TT], du[S16_TT];
#pragma unroll
        for (int s = 0; s < S16_TT; s++) {
            float v = X.dl[s][lane] + bias;
            if (p.softplus) v = softplus_f(v);
            dt[s] = s < steps ? v : 0.0f;
            du[s] = dt[s] * X.u[s][lane];
            if (!FINAL) S += dt[s];
        }
#pragma unroll
        for (int s = 0; s < S16_TT; s++) {
            float y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const float4 bq = reinterpret_cast<const float4 *>(X.B[s])[q];
                const float bv[4] = {bq.x, bq.y, bq.z, bq.w};
                float cv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (FINAL) {
                    const float4 cq = reinterpret_cast<const float4 *>(X.C[s])[q];
                    cv[0] = cq.x; cv[1] = cq.y; cv[2] = cq.z; cv[3] = cq.w;
                }
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int n = 4 * q + j;
                    h[n] = fmaf(ex2(dt[s] * a2[n]), h[n], du[s] * bv[j]);
                    if (FINAL) y[q] = fmaf(cv[j], h[n], y[q]);
                }
            }
            if (FINAL) {
                float yv = (y[0] + y[1]) + (y[2] + y[3]) + Dd * X.u[s][lane];
                if (zb) {
                    const float z = X.z[s][lane];
                    yv *= __fdividef(z, 1.0f + __expf(-z));
                }
                if (s < steps) op[(long long)(tb + s) * p.o_st] = yv;
            }
        }
        __syncwarp(); /* every lane is done with this stage before it is refilled */
    }

    if (!FINAL) {
        const size_t base = (size_t)c * p.B * p.D * 16 + sidx;
#pragma unroll
        for (int n = 0; n < 16; n++) p.hloc[base + n] = h[n];
        p.S[((size_t)c * p.B + b) * p.D + d] = S;
    } else if (p.s_out && c == p.n_chunks - 1) {
#pragma unroll
        for (int n = 0; n < 16; n++) p.s_out[sidx + n] = h[n];
    }
}

bool scan16_fits(const scan_params &p)
{
    auto aligned = [](const float *q) { return ((uintptr_t)q % 16) == 0; };
    auto by4 = [](long long s) { return s % 4 == 0; };
    return p.N == 16 && p.bc_vec && p.D % 32 == 0 && (p.D / p.G) % 32 == 0 && p.u_sd == 1 && p.d_sd == 1 &&
           aligned(p.u) && aligned(p.delta) && by4(p.u_sb) && by4(p.u_st) && by4(p.d_sb) && by4(p.d_st) &&
           (!p.z || (p.z_sd == 1 && aligned(p.z) && by4(p.z_sb) && by4(p.z_st)));
}

long long scan16_resident_threads(mb_device *dev)
{
    if (!dev->scan16_per_sm &&
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&dev->scan16_per_sm, scan16_kernel<true>, 32 * S16_WARPS, 0) !=
            cudaSuccess)
        dev->scan16_per_sm = 0;
    return (long long)dev->scan16_per_sm * dev->sm_count * 32 * S16_WARPS;
}

int scan16_launch(mb_device *dev, const scan_params &p, bool final_pass, unsigned n_chunks)
{
    const dim3 grid((unsigned)((p.D + 32 * S16_WARPS - 1) / (32 * S16_WARPS)), n_chunks, (unsigned)p.B);
    if (final_pass) {
        launch_pdl(dev, scan16_kernel<true>, grid, dim3(32 * S16_WARPS), p);
        CU_LAUNCHED(dev, "scan kernel (N = 16)");
    } else {
        launch_pdl(dev, scan16_kernel<false>, grid, dim3(32 * S16_WARPS), p);
        CU_LAUNCHED(dev, "scan chunk kernel (N = 16)");
    }
    return 0;
}
