/* Selective scan on the GPU, fused as in the Mamba paper: u, delta, z, B, C are read from HBM,
 * the discretization and the recurrence happen in registers, and only y (and the final state)
 * is written; the (batch, L, dim, N) states never reach HBM.
 *
 * One thread owns one channel d and its N states. A batch-1 scan has only dim channels, too
 * few threads to fill the GPU, so time is split into chunks that run in parallel:
 *   1. chunk pass: each (chunk c, d) runs the recurrence from a zero state and keeps its end
 *      state hloc_c[n] and S_c = sum of dt over the chunk (the chunk's decay is exp(A S_c));
 *   2. carry pass: per (d, n), H_c = exp(A S_{c-1}) H_{c-1} + hloc_{c-1}, in order over chunks:
 *      the state entering every chunk;
 *   3. final pass: each (chunk c, d) reruns its chunk from H_c and writes y.
 * That is the scan over pairs (a, b) o (a', b') = (a a', a' b + b') done per chunk, with the
 * exponentials computed twice rather than the states stored. A scan that needs one chunk
 * (decoding, large batches) runs the final pass alone. */
#include <math.h>

#include "cuda_scan.h"

/* B[t, 0..N) (or C) into registers: four float4 loads for N = 16 when contiguous. */
template <int MAXN>
__device__ __forceinline__ void load_bc(const float *p, int N, int sn, int vec, float *v)
{
    if (vec) {
#pragma unroll
        for (int q = 0; q < MAXN / 4; q++) {
            if (4 * q < N) {
                const float4 f = __ldg((const float4 *)p + q);
                v[4 * q] = f.x; v[4 * q + 1] = f.y; v[4 * q + 2] = f.z; v[4 * q + 3] = f.w;
            }
        }
    } else {
#pragma unroll
        for (int n = 0; n < MAXN; n++)
            if (n < N) v[n] = __ldg(p + n * sn);
    }
}

/* FINAL false: pass 1 (zero start, keep the end state and the sum of dt); true: pass 3.
 * Pointers are set once and advanced by the time strides. For N <= 16 the next step's B and C
 * are loaded while the current step computes; larger N (rare) reads them in the loop, since
 * two more copies of N values would not fit in registers. */
template <int MAXN, bool FINAL>
__global__ void __launch_bounds__(128) scan_chunk_kernel(const scan_params p)
{
    griddep_wait();
    const int d = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y, b = blockIdx.z;
    if (d >= p.D) return;
    const int N = p.N;
    const int t0 = c * p.chunk_len, t1 = min(p.L, t0 + p.chunk_len);
    const int g = d / (p.D / p.G);
    float a2[MAXN], h[MAXN];
    const size_t sidx = ((size_t)b * p.D + d) * N;
#pragma unroll
    for (int n = 0; n < MAXN; n++) {
        if (n < N) {
            a2[n] = p.A[(size_t)d * N + n] * LOG2E;
            if (!FINAL) h[n] = 0.0f;
            else if (p.n_chunks > 1) h[n] = p.hin[(size_t)c * p.B * p.D * N + sidx + n];
            else h[n] = p.s_in ? p.s_in[sidx + n] : 0.0f;
        } else {
            a2[n] = 0.0f;
            h[n] = 0.0f;
        }
    }
    const float bias = p.bias ? p.bias[d] : 0.0f, Dd = p.Dv ? p.Dv[d] : 0.0f;
    const float *up = p.u + b * p.u_sb + t0 * p.u_st + d * p.u_sd;
    const float *dp = p.delta + b * p.d_sb + t0 * p.d_st + d * p.d_sd;
    const float *zp = p.z ? p.z + b * p.z_sb + t0 * p.z_st + d * p.z_sd : nullptr;
    float *op = FINAL ? p.out + b * p.o_sb + t0 * p.o_st + d * p.o_sd : nullptr;
    const float *Bp = p.Bm + b * p.B_sb + g * p.B_sg + t0 * p.B_st;
    const float *Cp = p.Cm + b * p.C_sb + g * p.C_sg + t0 * p.C_st;
    const long long ust = p.u_st, dst = p.d_st, zst = p.z_st, ost = p.o_st, bst = p.B_st, cst = p.C_st;
    const int bsn = (int)p.B_sn, csn = (int)p.C_sn, vec = p.bc_vec;
    float S = 0.0f;
    if (t0 >= t1) return;
    /* prefetched inputs of step t */
    constexpr bool PF = MAXN <= 16;
    constexpr int NB = PF ? MAXN : 1;
    float nd = *dp, nu = *up, nz = zp ? *zp : 0.0f;
    float nB[NB], nC[NB];
    if (PF) {
        load_bc<NB>(Bp, N, bsn, vec, nB);
        if (FINAL) load_bc<NB>(Cp, N, csn, vec, nC);
    }
    for (int t = t0; t < t1; t++) {
        const float dl = nd, u = nu, z = nz;
        const float *Bt = Bp, *Ct = Cp;
        float Bv[NB], Cv[NB];
#pragma unroll
        for (int n = 0; n < NB; n++) {
            Bv[n] = nB[n];
            if (FINAL) Cv[n] = nC[n];
        }
        if (t + 1 < t1) {
            dp += dst; up += ust; Bp += bst; Cp += cst;
            nd = *dp; nu = *up;
            if (PF) {
                load_bc<NB>(Bp, N, bsn, vec, nB);
                if (FINAL) load_bc<NB>(Cp, N, csn, vec, nC);
            }
            if (FINAL && zp) { zp += zst; nz = *zp; }
        }
        float dt = dl + bias;
        if (p.softplus) dt = softplus_f(dt);
        const float du = dt * u;
        float y = 0.0f;
#pragma unroll
        for (int n = 0; n < MAXN; n++) {
            if (n < N) {
                const float bn = PF ? Bv[n < NB ? n : 0] : __ldg(Bt + n * bsn);
                h[n] = ex2(dt * a2[n]) * h[n] + du * bn;
                if (FINAL) y += (PF ? Cv[n < NB ? n : 0] : __ldg(Ct + n * csn)) * h[n];
            }
        }
        if (FINAL) {
            y += Dd * u;
            if (p.z) y *= z / (1.0f + __expf(-z));
            *op = y;
            op += ost;
        } else {
            S += dt;
        }
    }
    if (!FINAL) {
        const size_t base = (size_t)c * p.B * p.D * N + sidx;
#pragma unroll
        for (int n = 0; n < MAXN; n++)
            if (n < N) p.hloc[base + n] = h[n];
        p.S[((size_t)c * p.B + b) * p.D + d] = S;
    } else if (p.s_out && c == p.n_chunks - 1) {
#pragma unroll
        for (int n = 0; n < MAXN; n++)
            if (n < N) p.s_out[sidx + n] = h[n];
    }
}

/* Pass 2: the states entering each chunk. For one (b, d, n) the chunks compose as
 * H_c = a_{c-1} H_{c-1} + b_{c-1} with a = exp(A S), b = hloc: a linear recurrence. A block
 * takes 32 consecutive (b, d, n) (so that loads coalesce) times GROUPS runs of chunks:
 * each thread folds its run into one pair, the block composes the pairs of earlier runs with
 * (a, b) o (a', b') = (a a', a' b + b') through shared memory, and each thread walks its run
 * again from the state entering it. Four runs a block: eight and sixteen measured 2% and 7%
 * slower on the batched scans (H100), the same at batch 1. */
#define CARRY_GROUPS 4
/* Chunks k .. k+3 of a run of n (S: the sums of dt, hl: the local end states): four loads
 * ahead of the chain that uses them. Past n, (0, 0), whose pair (1, 0) leaves a fold as it is. */
__device__ __forceinline__ void carry_load4(const float *S, const float *hl, int k, int n, size_t sstride, size_t per,
                                            float *sv, float *hv)
{
#pragma unroll
    for (int j = 0; j < 4; j++) {
        sv[j] = k + j < n ? S[(k + j) * sstride] : 0.0f;
        hv[j] = k + j < n ? hl[(k + j) * per] : 0.0f;
    }
}

template <int GROUPS> __global__ void __launch_bounds__(32 * GROUPS) scan_carry_kernel(const scan_params p)
{
    griddep_wait();
    const size_t per = (size_t)p.B * p.D * p.N;
    const size_t i = blockIdx.x * (size_t)32 + threadIdx.x;
    const int grp = threadIdx.y;
    __shared__ float pa[GROUPS][32], pb[GROUPS][32];
    const int m = p.n_chunks - 1, run = (m + GROUPS - 1) / GROUPS;
    const int c0 = min(m, grp * run), c1 = min(m, c0 + run);
    const size_t sstride = (size_t)p.B * p.D;
    float a2 = 0.0f, A = 1.0f, Bv = 0.0f;
    const float *S = nullptr, *hl = nullptr;
    const int n_run = c1 - c0;
    if (i < per) {
        const int n = (int)(i % p.N), d = (int)((i / p.N) % p.D), b = (int)(i / ((size_t)p.N * p.D));
        a2 = p.A[(size_t)d * p.N + n] * LOG2E;
        S = p.S + (size_t)b * p.D + d + c0 * sstride;
        hl = p.hloc + i + c0 * per;
        for (int k = 0; k < n_run; k += 4) {
            float sv[4], hv[4];
            carry_load4(S, hl, k, n_run, sstride, per, sv, hv);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float a = ex2(a2 * sv[j]);
                A *= a;
                Bv = a * Bv + hv[j];
            }
        }
    }
    pa[grp][threadIdx.x] = A;
    pb[grp][threadIdx.x] = Bv;
    __syncthreads();
    if (i >= per) return;
    float H = p.s_in ? p.s_in[i] : 0.0f;
    for (int q = 0; q < grp; q++) H = pa[q][threadIdx.x] * H + pb[q][threadIdx.x];
    float *hin = p.hin + i + c0 * per;
    for (int k = 0; k < n_run; k += 4) {
        float sv[4], hv[4];
        carry_load4(S, hl, k, n_run, sstride, per, sv, hv);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (k + j < n_run) hin[(k + j) * per] = H;
            H = ex2(a2 * sv[j]) * H + hv[j];
        }
    }
    if (grp == GROUPS - 1) p.hin[(size_t)m * per + i] = H; /* entering the last chunk */
}

/* staged: passes 1 and 3 are cuda_scan16.cu's kernel (N = 16, scan16_fits) */
template <int MAXN> static int launch(mb_device *dev, const scan_params &p, bool staged)
{
    const dim3 block(128), grid((unsigned)((p.D + 127) / 128), (unsigned)p.n_chunks, (unsigned)p.B);
    if (p.n_chunks > 1) {
        if (staged) {
            const int rc = scan16_launch(dev, p, false, (unsigned)(p.n_chunks - 1));
            if (rc) return rc;
        } else {
            const dim3 grid1(grid.x, (unsigned)(p.n_chunks - 1), grid.z);
            launch_pdl(dev, scan_chunk_kernel<MAXN, false>, grid1, block, p);
            CU_LAUNCHED(dev, "scan chunk kernel");
        }
        const size_t per = (size_t)p.B * p.D * p.N;
        launch_pdl(dev, scan_carry_kernel<CARRY_GROUPS>, dim3((unsigned)((per + 31) / 32)), dim3(32, CARRY_GROUPS), p);
        CU_LAUNCHED(dev, "scan carry kernel");
    }
    if (staged) return scan16_launch(dev, p, true, (unsigned)p.n_chunks);
    launch_pdl(dev, scan_chunk_kernel<MAXN, true>, grid, block, p);
    CU_LAUNCHED(dev, "scan kernel");
    return 0;
}

int cuda_scan(mb_device *dev, const mb_scan_op *op)
{
    if (op->d_state > 256)
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan: d_state %zu, at most 256 supported", op->d_state);
    if (!op->n_groups || op->dim % op->n_groups)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "scan: dim %zu not a multiple of n_groups %zu", op->dim,
                         op->n_groups);
    if (op->batch > 65535 || op->dim > (1u << 30) || op->len > (1u << 30))
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "scan: batch %zu (at most 65535), dim %zu, len %zu", op->batch,
                         op->dim, op->len);
    scan_params p;
    p.B = (int)op->batch; p.D = (int)op->dim; p.L = (int)op->len; p.N = (int)op->d_state; p.G = (int)op->n_groups;
    p.softplus = op->delta_softplus;
    p.u = (const float *)cu_at(op->u); p.delta = (const float *)cu_at(op->delta); p.A = (const float *)cu_at(op->A);
    p.Bm = (const float *)cu_at(op->B); p.Cm = (const float *)cu_at(op->C); p.Dv = (const float *)cu_at(op->D);
    p.z = (const float *)cu_at(op->z); p.bias = (const float *)cu_at(op->delta_bias);
    p.s_in = (const float *)cu_at(op->state_in); p.out = (float *)cu_at(op->out); p.s_out = (float *)cu_at(op->state_out);
    p.u_sb = op->u_sb; p.u_st = op->u_st; p.u_sd = op->u_sd;
    p.d_sb = op->delta_sb; p.d_st = op->delta_st; p.d_sd = op->delta_sd;
    p.B_sb = op->B_sb; p.B_st = op->B_st; p.B_sg = op->B_sg; p.B_sn = op->B_sn;
    p.C_sb = op->C_sb; p.C_st = op->C_st; p.C_sg = op->C_sg; p.C_sn = op->C_sn;
    p.z_sb = op->z_sb; p.z_st = op->z_st; p.z_sd = op->z_sd;
    p.o_sb = op->out_sb; p.o_st = op->out_st; p.o_sd = op->out_sd;
    p.bc_vec = p.B_sn == 1 && p.C_sn == 1 && p.N % 4 == 0 && ((uintptr_t)p.Bm % 16) == 0 &&
               ((uintptr_t)p.Cm % 16) == 0 && (p.B_sb % 4) == 0 && (p.B_st % 4) == 0 && (p.B_sg % 4) == 0 &&
               (p.C_sb % 4) == 0 && (p.C_st % 4) == 0 && (p.C_sg % 4) == 0;
    /* The staged kernel: at most one wave of the blocks that fit on the GPU at once (a second,
     * partial wave left most SMs idle at its end). The general kernel: about two waves (one,
     * sm_count * 512 threads, measured 12% slower on the batched shapes). */
    const bool staged = scan16_fits(p);
    if (staged) {
        const long long resident = scan16_resident_threads(dev);
        if (!resident) return cuda_fail(dev, MAMBA_ERR_BACKEND, "scan: no block of the N = 16 kernel fits on the GPU");
        mb_scan_chunking(op->batch, op->dim, op->len, resident, 1, &p.chunk_len, &p.n_chunks);
    } else {
        mb_scan_chunking(op->batch, op->dim, op->len, (long long)dev->sm_count * 1024, 0, &p.chunk_len, &p.n_chunks);
    }
    p.hloc = p.S = p.hin = nullptr;
    if (p.n_chunks > 1) {
        const size_t per = (size_t)p.B * p.D * p.N, nc = (size_t)p.n_chunks;
        void *s;
        int rc = cuda_scratch(dev, (2 * nc * per + nc * (size_t)p.B * p.D) * sizeof(float), &s);
        if (rc) return rc;
        p.hloc = (float *)s;
        p.hin = p.hloc + nc * per;
        p.S = p.hin + nc * per;
    }
    if (staged) return launch<16>(dev, p, true);
    if (p.N <= 16) return launch<16>(dev, p, false);
    if (p.N <= 64) return launch<64>(dev, p, false);
    return launch<256>(dev, p, false);
}
