/* Decoding kernels: the mixer of one time step in two launches instead of five, and the
 * greedy argmax that keeps the chosen ids on the device.
 *
 * A step's conv output xc is needed whole by x_proj (every output feature sums over all
 * channels) and per channel by the scan. Rather than write it and launch again, both kernels
 * recompute it from the conv window (width taps per channel, read from L2): kernel 1 does
 * conv + x_proj, kernel 2 redoes the conv of its channel, shifts the conv state, and does
 * dt_proj + softplus + the state update + the D skip + the z gate. */
#include <limits.h>
#include <math.h>

#include "cuda_internal.h"

#define STEP_ROWS 8   /* sequences per block in kernel 1 */
#define STEP_WARPS 8

struct step_params {
    int B, D, N, R, K, nd;   /* batch, dim, d_state, dt_rank, conv width, dt_rank + 2 N */
    int KS;                  /* x_proj's k split over KS blocks: partial sums xpart[KS][B][nd] */
    int bc_norm;             /* Falcon-Mamba: dt, B, C each divided by its RMS (+ bc_eps)      */
    float bc_eps;
    long long xz_sb, y_sb;
    const float *xz, *conv_w, *conv_b, *A, *Dv, *dt_bias;
    const void *xw, *dtw;
    float *conv_state, *ssm, *xpart, *y;
    void *y16;               /* y rounded for out_proj's 16-bit GEMM, (B, D); NULL: none      */
    int y16_half;            /* y16 in f16, else bf16                                         */
};

/* y[b, d] = v, and its 16-bit copy where out_proj multiplies 16-bit inputs */
__device__ __forceinline__ void put_y(const step_params &p, int b, int d, float v)
{
    p.y[b * p.y_sb + d] = v;
    if (!p.y16) return;
    const size_t i = (size_t)b * p.D + d;
    if (p.y16_half) ((__half *)p.y16)[i] = __float2half_rn(v);
    else ((__nv_bfloat16 *)p.y16)[i] = __float2bfloat16_rn(v);
}

/* xdbl[b, i]: the sum of x_proj's partial sums */
__device__ __forceinline__ float xdbl_at(const step_params &p, int b, int i)
{
    float v = 0.0f;
#pragma unroll 4
    for (int s = 0; s < p.KS; s++) v += p.xpart[((size_t)s * p.B + b) * p.nd + i];
    return v;
}

/* silu(conv) of channel k of sequence b over the window (state, x). KW: the width when known
 * at compile time (4 in every released Mamba), so that the window's loads issue together. */
template <int KW> __device__ __forceinline__ float step_conv(const step_params &p, int b, int k)
{
    const int K = KW ? KW : p.K;
    const float *w = p.conv_w + (size_t)k * K;
    const float *st = p.conv_state + (size_t)b * (K - 1) * p.D + k;
    float a = p.conv_b ? p.conv_b[k] : 0.0f;
#pragma unroll
    for (int t = 0; t + 1 < K; t++) a += w[t] * st[(size_t)t * p.D];
    a += w[K - 1] * p.xz[b * p.xz_sb + k];
    return a / (1.0f + __expf(-a));
}

/* The conv window of channel k of sequence b moved on by the step's input x. */
template <int KW> __device__ __forceinline__ void step_shift(const step_params &p, int b, int k)
{
    const int K = KW ? KW : p.K;
    float *st = p.conv_state + (size_t)b * (K - 1) * p.D + k;
#pragma unroll
    for (int t = 0; t + 2 < K; t++) st[(size_t)t * p.D] = st[(size_t)(t + 1) * p.D];
    if (K > 1) st[(size_t)(K - 2) * p.D] = p.xz[b * p.xz_sb + k];
}

/* xpart[s, b, j] = sum over slice s of the channels of x_proj[j, k] xc[b, k]: block (slice
 * s, group of F * STEP_WARPS features, group of STEP_ROWS sequences). A slice is
 * `per` runs of XP_RUN channels. Each thread computes the conv of one channel of a run once,
 * into shared memory, and each warp then takes F features of the run: lane l holds 8 of a
 * feature's weights. The weights of the first run are loaded before waiting for in_proj (they
 * do not depend on it), so after the wait the kernel is one round trip to L2 for xz, the conv,
 * and sums from registers and shared memory. (Before, every (feature, slice) block recomputed
 * the conv of its whole slice: 21 MB of L2 reads a layer on the 1.4b, 8.9 us.) */
#define XP_RUN 256
static_assert(XP_RUN == STEP_WARPS * 32, "one channel of a run per thread");

/* The run-relative channel of value v (< 8) of lane's share of a feature. f32: two float4 at
 * 4 lane and 128 + 4 lane, so that a warp's float4 reads of the conv outputs in shared memory
 * touch every bank once; 16-bit: one 16-byte load of 8 at 8 lane. */
template <typename T> __device__ __forceinline__ int xp_chan(int lane, int v)
{
    return sizeof(T) == 4 ? (v >> 2) * 128 + lane * 4 + (v & 3) : lane * 8 + v;
}

/* Lane's 8 weights of feature j over the run starting at channel kb (zeros past D or nd);
 * vec: 16-byte loads (rows 16-byte aligned and the run inside D). */
template <typename T>
__device__ __forceinline__ void xp_load(const step_params &p, int j, int kb, int lane, bool vec, float *w)
{
    const T *row = (const T *)p.xw + (size_t)j * p.D + kb;
    if (j < p.nd && vec) {
        if (sizeof(T) == 4) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float4 v = __ldg((const float4 *)row + h * 32 + lane);
                w[4 * h] = v.x; w[4 * h + 1] = v.y; w[4 * h + 2] = v.z; w[4 * h + 3] = v.w;
            }
        } else {
            const uint4 v = __ldg((const uint4 *)row + lane);
            const T *h = (const T *)&v;
#pragma unroll
            for (int i = 0; i < 8; i++) w[i] = to_f32(h[i]);
        }
        return;
    }
#pragma unroll
    for (int v = 0; v < 8; v++) {
        const int c = xp_chan<T>(lane, v);
        w[v] = j < p.nd && kb + c < p.D ? to_f32(row[c]) : 0.0f;
    }
}

template <typename T, int KW, int F>
__global__ void __launch_bounds__(STEP_WARPS * 32) step_xproj_kernel(const step_params p, int per, int vec_rows)
{
    const int s = blockIdx.x, b0 = blockIdx.z * STEP_ROWS, nb = min(STEP_ROWS, p.B - b0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int j0 = (blockIdx.y * STEP_WARPS + warp) * F;
    float w[F][8];
    int kb = s * per * XP_RUN;
#pragma unroll
    for (int f = 0; f < F; f++) xp_load<T>(p, j0 + f, kb, lane, vec_rows && kb + XP_RUN <= p.D, w[f]);
    griddep_wait();
    __shared__ float xc[STEP_ROWS][XP_RUN];
    float acc[F][STEP_ROWS];
#pragma unroll
    for (int f = 0; f < F; f++)
#pragma unroll
        for (int i = 0; i < STEP_ROWS; i++) acc[f][i] = 0.0f;
    for (int r = 0; r < per && kb < p.D; r++, kb += XP_RUN) {
        if (r > 0) {
            __syncthreads(); /* the previous run's xc has been read */
#pragma unroll
            for (int f = 0; f < F; f++) xp_load<T>(p, j0 + f, kb, lane, vec_rows && kb + XP_RUN <= p.D, w[f]);
        }
        const int k = kb + (int)threadIdx.x;
#pragma unroll
        for (int i = 0; i < STEP_ROWS; i++)
            if (i < nb) xc[i][threadIdx.x] = k < p.D ? step_conv<KW>(p, b0 + i, k) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < STEP_ROWS; i++) {
            if (i >= nb) break;
#pragma unroll
            for (int v = 0; v < 8; v++) {
                const float x = xc[i][xp_chan<T>(lane, v)];
#pragma unroll
                for (int f = 0; f < F; f++) acc[f][i] += w[f][v] * x;
            }
        }
    }
#pragma unroll
    for (int f = 0; f < F; f++) {
#pragma unroll
        for (int i = 0; i < STEP_ROWS; i++) {
            if (i >= nb) break;
            const float v = warp_sum(acc[f][i]);
            if (lane == 0 && j0 + f < p.nd) p.xpart[((size_t)s * p.B + b0 + i) * p.nd + j0 + f] = v;
        }
    }
}

/* One warp per (channel d, sequence b): the conv of d (lane t holds window tap t) and its
 * state shift, delta = softplus(dt_proj[d] . xdbl[0:R] + bias) with the lanes over R, then
 * the N states spread over the lanes: h = exp(delta A) h + delta B u, y = C . h. XD: xdbl
 * (up to STEP_XD_MAX features) is summed from x_proj's partials once per block into shared
 * memory, instead of by every warp at every use (KS loads from L2 per feature and warp). */
#define STEP_XD_MAX 1024
template <typename T, bool XD> __global__ void __launch_bounds__(STEP_WARPS * 32) step_scan_kernel(const step_params p)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    /* a warp past the last channel loads the last channel's inputs and stops before writing,
     * after it has helped fill xd */
    const bool active = (int)(blockIdx.x * STEP_WARPS + warp) < p.D;
    const int d = min((int)(blockIdx.x * STEP_WARPS + warp), p.D - 1), b = blockIdx.y;
    __shared__ float xd[XD ? STEP_XD_MAX : 1];
    /* Before waiting for x_proj (the kernel before this one): everything that does not come
     * from it. This kernel is scheduled only once every x_proj block has passed its own wait,
     * so in_proj's xz and the older states are complete and visible already; the weights and
     * states come from HBM, and their round trips now overlap x_proj. The conv state is only
     * written after the wait: x_proj reads it. */
    const int K = p.K;
    float *st = p.conv_state + (size_t)b * (K - 1) * p.D + d;
    float v = 0.0f, w = 0.0f;
    if (lane < K) {
        w = p.conv_w[(size_t)d * K + lane];
        v = lane < K - 1 ? st[(size_t)lane * p.D] : p.xz[b * p.xz_sb + d];
    }
    const float cb = p.conv_b ? p.conv_b[d] : 0.0f, dtb = p.dt_bias ? p.dt_bias[d] : 0.0f;
    const float Dd = p.Dv ? p.Dv[d] : 0.0f, z = p.xz[b * p.xz_sb + p.D + d];
    float *h = p.ssm + ((size_t)b * p.D + d) * p.N;
    const float *Ar = p.A + (size_t)d * p.N;
    /* the first 32 states and their A, one per lane */
    const float h0 = lane < p.N ? h[lane] : 0.0f, a0 = lane < p.N ? Ar[lane] : 0.0f;
    const T *dw = (const T *)p.dtw + (size_t)d * p.R;
    prefetch_l2(dw, (size_t)p.R * sizeof(T), lane, 32);
    griddep_wait();
    if (XD) {
        for (int i = threadIdx.x; i < p.nd; i += blockDim.x) xd[i] = xdbl_at(p, b, i);
        __syncthreads();
        if (p.bc_norm) {
            /* warp g < 3 sums the squares of segment g (dt, B, C); then every thread scales */
            __shared__ float inv[3];
            if (warp < 3) {
                const int lo = warp == 0 ? 0 : warp == 1 ? p.R : p.R + p.N, len = warp == 0 ? p.R : p.N;
                float ss = 0.0f;
                for (int i = lane; i < len; i += 32) ss += xd[lo + i] * xd[lo + i];
                ss = warp_sum(ss);
                if (lane == 0) inv[warp] = rsqrtf(ss / (float)len + p.bc_eps);
            }
            __syncthreads();
            for (int i = threadIdx.x; i < p.nd; i += blockDim.x) xd[i] *= inv[i < p.R ? 0 : i < p.R + p.N ? 1 : 2];
            __syncthreads();
        }
    }
    if (!active) return;
    auto xdbl = [&](int i) { return XD ? xd[i] : xdbl_at(p, b, i); };

    const float a = warp_sum(w * v) + cb;
    const float u = a / (1.0f + __expf(-a));
    /* every lane has read its tap: the window moves by one */
    const float next = __shfl_down_sync(0xffffffffu, v, 1);
    if (lane < K - 1) st[(size_t)lane * p.D] = next;

    float s = 0.0f;
    for (int r = lane; r < p.R; r += 32) s += to_f32(dw[r]) * xdbl(r);
    const float dt = softplus_f(warp_sum(s) + dtb);
    const float du = dt * u;
    float y = 0.0f;
    for (int n = lane; n < p.N; n += 32) {
        const float hp = n < 32 ? h0 : h[n], an = n < 32 ? a0 : Ar[n];
        const float hn = ex2(dt * (an * LOG2E)) * hp + du * xdbl(p.R + n);
        h[n] = hn;
        y += xdbl(p.R + p.N + n) * hn;
    }
    y = warp_sum(y);
    if (lane == 0) {
        y += Dd * u;
        put_y(p, b, d, y * (z / (1.0f + __expf(-z))));
    }
}

/* xdbl (B, nd) = the sum of x_proj's KS partial sums, in slice order. From a few sequences up
 * the scan kernel's blocks (D / STEP_WARPS per sequence, each summing all nd features from
 * the partials) read the partials far more often than once: at batch 64 on the 1.4b that was
 * 335 MB of L2 reads and 165 us a layer; folded once here the scan kernel reads B x nd. */
#define STEP_FOLD_MIN_BATCH 4
__global__ void step_fold_kernel(const float *xpart, int KS, int total, float *xdbl)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float v = 0.0f;
    for (int s = 0; s < KS; s++) v += xpart[(size_t)s * total + i];
    xdbl[i] = v;
}

/* The scan step for SB sequences a block: warp w takes channel d for all SB of them. From
 * batch 4 up the one-sequence kernel above ran 512 blocks a sequence of a few dependent round
 * trips each (145 us a layer at batch 64 on the 1.4b, latency-bound, 160 GB/s); here the
 * channel's constants (conv taps, A, dt_proj's row, D, biases) are loaded once for SB
 * sequences and the per-sequence loads (window, z, state) issue together before the wait.
 * Needs N <= 32 (one state a lane), dt_rank <= 32 * STEP_RW, nd <= STEP_BXD, no bc_norm;
 * xdbl comes folded (KS = 1). */
#define STEP_SB 4
#define STEP_RW 8
#define STEP_BXD 512
/* xd[s][0..nd) = the folded xdbl of sequence b0 + s (the last one past the batch), s < S, by
 * the block's threads, then a barrier */
template <int S> __device__ __forceinline__ void stage_xdbl(const step_params &p, int b0, float (*xd)[STEP_BXD])
{
    for (int i = threadIdx.x; i < S * p.nd; i += blockDim.x) {
        const int s = i / p.nd, j = i - s * p.nd;
        xd[s][j] = p.xpart[(size_t)min(b0 + s, p.B - 1) * p.nd + j];
    }
    __syncthreads();
}

template <typename T> __global__ void __launch_bounds__(STEP_WARPS * 32) step_scan_batch_kernel(const step_params p)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const bool active = (int)(blockIdx.x * STEP_WARPS + warp) < p.D;
    const int d = min((int)(blockIdx.x * STEP_WARPS + warp), p.D - 1), b0 = blockIdx.y * STEP_SB;
    __shared__ float xd[STEP_SB][STEP_BXD];
    const int K = p.K, N = p.N, R = p.R;
    const float w = lane < K ? p.conv_w[(size_t)d * K + lane] : 0.0f;
    const float cb = p.conv_b ? p.conv_b[d] : 0.0f, dtb = p.dt_bias ? p.dt_bias[d] : 0.0f;
    const float Dd = p.Dv ? p.Dv[d] : 0.0f, a0 = lane < N ? p.A[(size_t)d * N + lane] : 0.0f;
    const T *dw = (const T *)p.dtw + (size_t)d * R;
    float dwr[STEP_RW];
#pragma unroll
    for (int j = 0; j < STEP_RW; j++) dwr[j] = lane + 32 * j < R ? to_f32(dw[lane + 32 * j]) : 0.0f;
    float v[STEP_SB], z[STEP_SB], h0[STEP_SB];
#pragma unroll
    for (int i = 0; i < STEP_SB; i++) {
        const int b = min(b0 + i, p.B - 1);
        const float *st = p.conv_state + (size_t)b * (K - 1) * p.D + d;
        v[i] = lane < K ? (lane < K - 1 ? st[(size_t)lane * p.D] : p.xz[b * p.xz_sb + d]) : 0.0f;
        z[i] = p.xz[b * p.xz_sb + p.D + d];
        h0[i] = lane < N ? p.ssm[((size_t)b * p.D + d) * N + lane] : 0.0f;
    }
    griddep_wait();
    stage_xdbl<STEP_SB>(p, b0, xd);
    if (!active) return;
#pragma unroll
    for (int i = 0; i < STEP_SB; i++) {
        const int b = b0 + i;
        if (b >= p.B) break;
        const float a = warp_sum(w * v[i]) + cb;
        const float u = a / (1.0f + __expf(-a));
        const float next = __shfl_down_sync(0xffffffffu, v[i], 1);
        if (lane < K - 1) p.conv_state[(size_t)b * (K - 1) * p.D + d + (size_t)lane * p.D] = next;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < STEP_RW; j++)
            if (lane + 32 * j < R) s += dwr[j] * xd[i][lane + 32 * j];
        const float dt = softplus_f(warp_sum(s) + dtb);
        float y = 0.0f;
        if (lane < N) {
            const float hn = ex2(dt * (a0 * LOG2E)) * h0[i] + dt * u * xd[i][R + lane];
            p.ssm[((size_t)b * p.D + d) * N + lane] = hn;
            y = xd[i][R + N + lane] * hn;
        }
        y = warp_sum(y);
        if (lane == 0) put_y(p, b, d, (y + Dd * u) * (z[i] / (1.0f + __expf(-z[i]))));
    }
}

/* The scan step with one thread per (sequence, channel), its 16 states in registers: a block
 * takes ROWS_CH channels of ROWS_SEQ sequences. The warp-per-channel kernel above spends a
 * chain of shuffles (conv, dt, y: three warp sums) on every sequence, and ncu on a batch-64
 * step of the 1.4b measured it at 102 us a layer, 231 GB/s: latency-bound, 48% of the step;
 * this one at 34 us (590 GB/s), and the whole step went from 8.3 to 3.8 ms.
 * Here a thread's loads (16 states and A as float4, the window, z) issue together before the
 * wait, dt_proj's row is a dot over xdbl's dt part in shared memory (the ROWS_SEQ sequences of
 * a block read the same rows, from L1), and nothing crosses lanes. CONV: the conv of the
 * channel from its window, then the window shifted (after the wait: x_proj, the kernel before,
 * reads it); otherwise xc comes computed (step_conv_kernel) and the window shifted already. */
#define ROWS_CH 64
#define ROWS_SEQ 4
#define ROWS_N 16
template <typename T, bool CONV, int KW>
__global__ void __launch_bounds__(ROWS_CH *ROWS_SEQ) step_scan_rows_kernel(const step_params p, const float *xc)
{
    const int c = threadIdx.x % ROWS_CH, sq = threadIdx.x / ROWS_CH;
    const int d0 = blockIdx.x * ROWS_CH, b0 = blockIdx.y * ROWS_SEQ;
    const bool active = d0 + c < p.D && b0 + sq < p.B;
    const int d = min(d0 + c, p.D - 1), b = min(b0 + sq, p.B - 1);
    const int R = p.R, D = p.D;
    __shared__ float xd[ROWS_SEQ][STEP_BXD];
    float h[ROWS_N], a[ROWS_N];
    const float4 *h4 = (const float4 *)(p.ssm + ((size_t)b * D + d) * ROWS_N);
    const float4 *a4 = (const float4 *)(p.A + (size_t)d * ROWS_N);
#pragma unroll
    for (int q = 0; q < ROWS_N / 4; q++) {
        const float4 v = h4[q], w = __ldg(a4 + q);
        h[4 * q] = v.x; h[4 * q + 1] = v.y; h[4 * q + 2] = v.z; h[4 * q + 3] = v.w;
        a[4 * q] = w.x * LOG2E; a[4 * q + 1] = w.y * LOG2E; a[4 * q + 2] = w.z * LOG2E; a[4 * q + 3] = w.w * LOG2E;
    }
    const float z = p.xz[b * p.xz_sb + D + d];
    const float dtb = p.dt_bias ? p.dt_bias[d] : 0.0f, Dd = p.Dv ? p.Dv[d] : 0.0f;
    const float u = CONV ? step_conv<KW>(p, b, d) : xc[(size_t)b * D + d];
    griddep_wait();
    stage_xdbl<ROWS_SEQ>(p, b0, xd);
    if (!active) return;
    if (CONV) step_shift<KW>(p, b, d); /* after the wait: x_proj, the kernel before, reads the window */
    const float *x = xd[sq];
    const T *dw = (const T *)p.dtw + (size_t)d * R;
    float s0 = 0.0f, s1 = 0.0f;
    int r = 0;
    if (sizeof(T) == 2 && R % 8 == 0 && ((uintptr_t)p.dtw & 15) == 0) {
        for (; r < R; r += 8) {
            const uint4 v = __ldg((const uint4 *)(dw + r));
            const T *hv = (const T *)&v;
#pragma unroll
            for (int i = 0; i < 8; i += 2) {
                s0 += to_f32(hv[i]) * x[r + i];
                s1 += to_f32(hv[i + 1]) * x[r + i + 1];
            }
        }
    }
    for (; r < R; r++) s0 += to_f32(dw[r]) * x[r];
    const float dt = softplus_f(s0 + s1 + dtb), du = dt * u;
    float y0 = 0.0f, y1 = 0.0f;
#pragma unroll
    for (int n = 0; n < ROWS_N; n++) {
        h[n] = ex2(dt * a[n]) * h[n] + du * x[R + n];
        if (n & 1) y1 += x[R + ROWS_N + n] * h[n];
        else y0 += x[R + ROWS_N + n] * h[n];
    }
    float4 *ho = (float4 *)(p.ssm + ((size_t)b * D + d) * ROWS_N);
#pragma unroll
    for (int q = 0; q < ROWS_N / 4; q++) ho[q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    put_y(p, b, d, (y0 + y1 + Dd * u) * (z / (1.0f + __expf(-z))));
}

/* xc (B, D) = silu(conv) of every channel and sequence from its window, which then shifts,
 * and x16 the same rounded to the x_proj weights' dtype: the step's conv alone, for the path
 * where x_proj is a cuBLAS GEMM over x16 (the scan reads xc in fp32). */
template <typename X, int KW> __global__ void step_conv_kernel(const step_params p, float *xc, X *x16)
{
    const int d = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (d >= p.D) return;
    const float u = step_conv<KW>(p, b, d);
    step_shift<KW>(p, b, d);
    xc[(size_t)b * p.D + d] = u;
    x16[(size_t)b * p.D + d] = from_f32<X>(u);
}

/* The shapes the per-(sequence, channel) kernel takes: every Mamba-1 model but Falcon-Mamba's
 * norms (N = 16); the states and A 16-byte aligned for their float4 loads. */
static bool step_rows_takes(const step_params &p)
{
    return p.N == ROWS_N && p.K >= 1 && !p.bc_norm && p.nd <= STEP_BXD && ((uintptr_t)p.ssm & 15) == 0 &&
           ((uintptr_t)p.A & 15) == 0;
}

template <typename T> struct launch_scan_rows {
    static void run(mb_device *dev, const step_params &p, const float *xc)
    {
        const dim3 g((unsigned)((p.D + ROWS_CH - 1) / ROWS_CH), (unsigned)((p.B + ROWS_SEQ - 1) / ROWS_SEQ));
        if (xc) launch_pdl(dev, step_scan_rows_kernel<T, false, 0>, g, dim3(ROWS_CH * ROWS_SEQ), p, xc);
        else if (p.K == 4) launch_pdl(dev, step_scan_rows_kernel<T, true, 4>, g, dim3(ROWS_CH * ROWS_SEQ), p, xc);
        else launch_pdl(dev, step_scan_rows_kernel<T, true, 0>, g, dim3(ROWS_CH * ROWS_SEQ), p, xc);
    }
};

template <typename X> static void launch_conv(mb_device *dev, const step_params &p, float *xc, void *x16)
{
    const dim3 g((unsigned)((p.D + 255) / 256), (unsigned)p.B);
    if (p.K == 4) step_conv_kernel<X, 4><<<g, 256, 0, dev->stream>>>(p, xc, (X *)x16);
    else step_conv_kernel<X, 0><<<g, 256, 0, dev->stream>>>(p, xc, (X *)x16);
}

static bool step_batch_takes(const step_params &p)
{
    return p.B >= STEP_FOLD_MIN_BATCH && p.KS == 1 && !p.bc_norm && p.N <= 32 && p.R <= 32 * STEP_RW &&
           p.nd <= STEP_BXD && p.K <= 32;
}

template <template <typename> class Launch, typename... Args>
static void by_dtype(mamba_dtype_t dt, Args... args)
{
    if (dt == MAMBA_F16) Launch<__half>::run(args...);
    else if (dt == MAMBA_BF16) Launch<__nv_bfloat16>::run(args...);
    else Launch<float>::run(args...);
}

template <typename T> struct launch_xproj {
    template <int F> static void go(mb_device *dev, const step_params &p, int per, int vec_rows)
    {
        const dim3 grid((unsigned)p.KS, (unsigned)((p.nd + F * STEP_WARPS - 1) / (F * STEP_WARPS)),
                        (unsigned)((p.B + STEP_ROWS - 1) / STEP_ROWS));
        if (p.K == 4) launch_pdl(dev, step_xproj_kernel<T, 4, F>, grid, dim3(STEP_WARPS * 32), p, per, vec_rows);
        else launch_pdl(dev, step_xproj_kernel<T, 0, F>, grid, dim3(STEP_WARPS * 32), p, per, vec_rows);
    }
    /* two features a warp once that still gives every SM a block, else one */
    static void run(mb_device *dev, const step_params &p, int per)
    {
        const int vec_rows = p.D % 8 == 0 && (uintptr_t)p.xw % 16 == 0;
        const long long blocks2 = (long long)p.KS * ((p.nd + 2 * STEP_WARPS - 1) / (2 * STEP_WARPS));
        if (blocks2 >= dev->sm_count) go<2>(dev, p, per, vec_rows);
        else go<1>(dev, p, per, vec_rows);
    }
};
template <typename T> struct launch_scan {
    static void run(mb_device *dev, const step_params &p)
    {
        if (step_batch_takes(p) && step_rows_takes(p)) {
            launch_scan_rows<T>::run(dev, p, nullptr);
            return;
        }
        if (step_batch_takes(p)) {
            const dim3 g((unsigned)((p.D + STEP_WARPS - 1) / STEP_WARPS), (unsigned)((p.B + STEP_SB - 1) / STEP_SB));
            launch_pdl(dev, step_scan_batch_kernel<T>, g, dim3(STEP_WARPS * 32), p);
            return;
        }
        const dim3 grid((unsigned)((p.D + STEP_WARPS - 1) / STEP_WARPS), (unsigned)p.B);
        if (p.nd <= STEP_XD_MAX) launch_pdl(dev, step_scan_kernel<T, true>, grid, dim3(STEP_WARPS * 32), p);
        else launch_pdl(dev, step_scan_kernel<T, false>, grid, dim3(STEP_WARPS * 32), p);
    }
};

/* The shapes the step kernels take: the conv window in one warp's lanes; the norms of dt, B
 * and C need xdbl in shared memory. */
static bool step_takes(size_t batch, size_t dim, size_t d_state, size_t dt_rank, size_t width, mamba_dtype_t xdt,
                       mamba_dtype_t ddt, int bc_norm)
{
    return width >= 1 && width <= 32 && batch >= 1 && batch <= 65535 && dim <= (1u << 30) && d_state <= 4096 &&
           dt_rank <= 65536 && mb_weight_dtype_ok(xdt) && mb_weight_dtype_ok(ddt) &&
           (!bc_norm || dt_rank + 2 * d_state <= STEP_XD_MAX);
}

bool cuda_step_supports(const mb_fused_query *q)
{
    return step_takes(q->rows, q->dim, q->d_state, q->dt_rank, q->width, q->x_proj_dt, q->dt_proj_dt, q->bc_norm);
}

int cuda_mixer_step(mb_device *dev, const mb_mixer_step_op *op)
{
    if (!step_takes(op->batch, op->dim, op->d_state, op->dt_rank, op->width, op->x_proj_dt, op->dt_proj_dt, op->bc_norm))
        return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED,
                         "mixer step: width %zu (1..32), batch %zu, dim %zu, d_state %zu, dt_rank %zu, dtypes %d/%d%s",
                         op->width, op->batch, op->dim, op->d_state, op->dt_rank, (int)op->x_proj_dt,
                         (int)op->dt_proj_dt, op->bc_norm ? ", dt/B/C norms" : "");
    step_params p;
    p.B = (int)op->batch; p.D = (int)op->dim; p.N = (int)op->d_state; p.R = (int)op->dt_rank; p.K = (int)op->width;
    p.nd = p.R + 2 * p.N;
    p.bc_norm = op->bc_norm;
    p.bc_eps = op->bc_norm_eps;
    p.xz_sb = (long long)op->xz_sb; p.y_sb = (long long)op->y_sb;
    p.xz = (const float *)cu_at(op->xz); p.conv_w = (const float *)cu_at(op->conv_w);
    p.conv_b = (const float *)cu_at(op->conv_b); p.A = (const float *)cu_at(op->A);
    p.Dv = (const float *)cu_at(op->D); p.dt_bias = (const float *)cu_at(op->dt_bias);
    p.xw = cu_at(op->x_proj); p.dtw = cu_at(op->dt_proj);
    p.conv_state = (float *)cu_at(op->conv_state); p.ssm = (float *)cu_at(op->ssm_state);
    p.y = (float *)cu_at(op->y);
    p.y16 = op->y16.buf ? cu_at(op->y16) : nullptr;
    p.y16_half = op->y16_dt == MAMBA_F16;
    if (p.y16 && op->y16_dt != MAMBA_F16 && op->y16_dt != MAMBA_BF16)
        return cuda_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "mixer step: y16 in %s", mb_dtype_name(op->y16_dt));
    /* x_proj in slices of the channels, a run of XP_RUN channels each where the partial sums
     * (KS of them per feature) fit in the op's scratch, else several runs a slice */
    const size_t runs = (op->dim + XP_RUN - 1) / XP_RUN, part = op->batch * (size_t)p.nd * sizeof(float);
    size_t ks = op->scratch.buf ? op->scratch_bytes / part : 0;
    ks = ks < 1 ? 1 : ks > runs ? runs : ks;
    const int per = (int)((runs + ks - 1) / ks);
    p.KS = (int)((runs + per - 1) / per);
    p.xpart = (float *)cu_at(p.KS > 1 ? op->scratch : op->xdbl);
    /* From the batch where the model's GEMMs leave the gemv for cuBLAS, x_proj does too: the
     * conv into the op's scratch (B x D floats, the size of the unused delta), x_proj as a
     * 16-bit GEMM over it, and the scan from the stored xc. (The conv + x_proj kernel above
     * recomputes the conv in every block of features: 36 us a layer at batch 64 on the 1.4b.) */
    if (cuda_gemm16_takes(dev, op->batch, op->x_proj_dt) && step_rows_takes(p) && op->scratch.buf &&
        op->scratch_bytes >= op->batch * op->dim * sizeof(float)) {
        float *xc = (float *)cu_at(op->scratch), *xd = (float *)cu_at(op->xdbl);
        void *x16 = nullptr;
        int rc = cuda_scratch(dev, op->batch * op->dim * 2, &x16);
        if (rc) return rc;
        if (op->x_proj_dt == MAMBA_F16) launch_conv<__half>(dev, p, xc, x16);
        else launch_conv<__nv_bfloat16>(dev, p, xc, x16);
        CU_LAUNCHED(dev, "mixer step: conv kernel");
        rc = cuda_gemm16_x16(dev, op->batch, (size_t)p.nd, op->dim, x16, op->dim, p.xw, op->x_proj_dt, nullptr, xd,
                             (size_t)p.nd);
        if (rc) return rc;
        p.KS = 1;
        p.xpart = xd;
        by_dtype<launch_scan_rows>(op->dt_proj_dt, dev, p, (const float *)xc);
        CU_LAUNCHED(dev, "mixer step: scan kernel");
        return 0;
    }
    by_dtype<launch_xproj>(op->x_proj_dt, dev, p, per);
    CU_LAUNCHED(dev, "mixer step: conv + x_proj kernel");
    if (p.KS > 1 && p.B >= STEP_FOLD_MIN_BATCH) {
        float *xd = (float *)cu_at(op->xdbl);
        const int total = p.B * p.nd;
        step_fold_kernel<<<(unsigned)((total + 255) / 256), 256, 0, dev->stream>>>(p.xpart, p.KS, total, xd);
        CU_LAUNCHED(dev, "mixer step: x_proj fold kernel");
        p.KS = 1;
        p.xpart = xd;
    }
    by_dtype<launch_scan>(op->dt_proj_dt, dev, p);
    CU_LAUNCHED(dev, "mixer step: scan kernel");
    return 0;
}

/* (value, index) with the larger value winning, the smaller index on ties; NaN never wins. */
__device__ __forceinline__ void better(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

/* the warp's best (value, index), in every lane */
__device__ __forceinline__ void warp_better(float &v, int &i)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, i, o);
        better(v, i, v2, i2);
    }
}

#define ARGMAX_THREADS 256
#define ARGMAX_SLICES 32       /* blocks per row: one block alone reads a 200 KB row slowly */

/* (value, index) as one 64-bit key whose unsigned order is the argmax order: the float's
 * bits made monotonic in the high half, the index complemented in the low half (the smaller
 * index wins a tie). Any real candidate, -inf included, has a key above 0. */
__device__ __forceinline__ unsigned long long argmax_key(float v, int i)
{
    unsigned u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((unsigned long long)u << 32) | (0xffffffffu - (unsigned)i);
}

/* Block (slice s, row r): the best of its slice of the row goes into keys[r] by atomicMax;
 * the last block of the row to finish (counts[r]) writes the winner to ids (and ids2) and
 * leaves keys[r] and counts[r] at 0 for the next call. */
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(const float *logits, int vocab, int32_t *ids,
                                                                int32_t *ids2, int32_t *flag,
                                                                unsigned long long *keys, unsigned *counts)
{
    griddep_wait();
    const int r = blockIdx.y;
    const float *row = logits + (size_t)r * vocab;
    /* slices of a multiple of 4 elements, so that aligned rows are read as float4 */
    const int per = ((vocab + (int)gridDim.x - 1) / (int)gridDim.x + 3) & ~3;
    const int lo = min(vocab, (int)blockIdx.x * per), hi = min(vocab, lo + per);
    float best = -INFINITY;
    int bi = INT_MAX, nan = 0;
    int head = lo;
    if ((((uintptr_t)row) & 15) == 0) {
        const float4 *r4 = (const float4 *)row;
        for (int q = lo / 4 + threadIdx.x; q < hi / 4; q += blockDim.x) {
            const float4 v = r4[q];
            nan |= isnan(v.x) | isnan(v.y) | isnan(v.z) | isnan(v.w);
            better(best, bi, v.x, 4 * q);
            better(best, bi, v.y, 4 * q + 1);
            better(best, bi, v.z, 4 * q + 2);
            better(best, bi, v.w, 4 * q + 3);
        }
        head = hi / 4 * 4;
    }
    for (int i = head + threadIdx.x; i < hi; i += blockDim.x) {
        const float v = row[i];
        nan |= isnan(v);
        better(best, bi, v, i);
    }
    warp_better(best, bi);
    __shared__ float sv[32];
    __shared__ int si[32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    if (__syncthreads_or(nan) && threadIdx.x == 0) *flag = 1;
    if (warp == 0) {
        best = lane < (int)(blockDim.x / 32) ? sv[lane] : -INFINITY;
        bi = lane < (int)(blockDim.x / 32) ? si[lane] : INT_MAX;
        warp_better(best, bi);
        if (lane == 0) {
            if (bi != INT_MAX) atomicMax(&keys[r], argmax_key(best, bi));
            __threadfence();
            if (atomicAdd(&counts[r], 1u) == gridDim.x - 1) {
                const unsigned long long key = atomicExch(&keys[r], 0ull);
                counts[r] = 0;
                /* no candidate at all (every logit NaN): 0, and the flag says so */
                const int32_t id = key ? (int32_t)(0xffffffffu - (unsigned)(key & 0xffffffffu)) : 0;
                ids[r] = id;
                if (ids2) ids2[r] = id;
            }
        }
    }
}

int cuda_argmax(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2, mb_ptr flag)
{
    if (vocab > 0x7fffffff || vocab == 0) return cuda_fail(dev, MAMBA_ERR_UNSUPPORTED, "argmax: vocab %zu", vocab);
    unsigned long long *keys = (unsigned long long *)dev->argmax_scratch;
    unsigned *counts = (unsigned *)(keys + ARGMAX_MAX_ROWS);
    const unsigned slices = vocab >= (size_t)ARGMAX_SLICES * 1024 ? ARGMAX_SLICES : 1;
    const float *lg = (const float *)cu_at(logits);
    int32_t *id = (int32_t *)cu_at(ids), *id2 = (int32_t *)cu_at(ids2);
    /* the scratch holds ARGMAX_MAX_ROWS rows: more go in turns (in stream order, each turn
     * leaves the scratch at 0 for the next) */
    for (size_t r0 = 0; r0 < rows; r0 += ARGMAX_MAX_ROWS) {
        const size_t nr = rows - r0 < ARGMAX_MAX_ROWS ? rows - r0 : ARGMAX_MAX_ROWS;
        launch_pdl(dev, argmax_kernel, dim3(slices, (unsigned)nr), dim3(ARGMAX_THREADS), lg + r0 * vocab, (int)vocab,
                   id + r0, id2 ? id2 + r0 : nullptr, (int32_t *)cu_at(flag), keys, counts);
        CU_LAUNCHED(dev, "argmax kernel");
    }
    return 0;
}
