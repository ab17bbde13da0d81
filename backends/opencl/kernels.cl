/* OpenCL C 1.2 kernels of the OpenCL backend. Buffers are passed with element offsets (an
 * mb_ptr is a buffer and a byte offset, and sub-buffers would need aligned offsets). Weight
 * dtypes: 0 F32, 1 F16 (vload_half, core in 1.2), 2 BF16 (the high half of an f32), 3 Q8_0 (int8
 * values, element offsets in bytes, and an fp16 scale a block of 32 at halves sb + i / 32 of the
 * same buffer: the kernels that read weights take sb, which the host derives from the matrix's
 * offset and shape; see api/dtype.h). */

/* EXP2: exp2 unless the host defines it as native_exp2 for a platform whose native exp2 is
 * accurate enough (NVIDIA: ex2.approx, about 2 ulp) */
#ifndef EXP2
#define EXP2 exp2
#endif
/* EXPF: exp, or native_exp where the host says it is as good as CUDA's __expf (NVIDIA): the
 * softplus of dt and the SiLU gates of every scan step */
#ifndef EXPF
#define EXPF exp
#endif
#define LOG2E 1.4426950408889634f

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_Q8 3

inline float load_w(__global const void *p, ulong i, int dt, ulong sb)
{
    if (dt == DT_Q8)
        return (float)((__global const char *)p)[i] * vload_half(sb + i / 32, (__global const half *)p);
    if (dt == DT_F16) return vload_half(i, (__global const half *)p);
    if (dt == DT_BF16) return as_float(((uint)((__global const ushort *)p)[i]) << 16);
    return ((__global const float *)p)[i];
}

/* out[r, :] = table[ids[r], :] */
__kernel void embed(__global const int *ids, ulong ids_off, __global const void *table, ulong table_off, int dt,
                    ulong sb, ulong dim, __global float *out, ulong out_off)
{
    const ulong r = get_group_id(0);
    const ulong row = (ulong)ids[ids_off + r] * dim + table_off;
    for (ulong i = get_local_id(0); i < dim; i += get_local_size(0))
        out[out_off + r * dim + i] = load_w(table, row + i, dt, sb);
}

/* group_sum: common.cl, compiled ahead of this file */

/* One work-group per row: residual += x (when has_x); out = residual / rms * w. */
__kernel void add_rmsnorm(__global float *res, ulong res_off, __global const float *x, ulong x_off, int has_x,
                          __global const float *w, ulong w_off, ulong dim, float eps, __global float *out,
                          ulong out_off)
{
    __local float tmp[256];
    const ulong r = get_group_id(0);
    __global float *rr = res + res_off + r * dim;
    float ss = 0.0f;
    for (ulong i = get_local_id(0); i < dim; i += get_local_size(0)) {
        float v = rr[i] + (has_x ? x[x_off + r * dim + i] : 0.0f);
        rr[i] = v;
        ss += v * v;
    }
    ss = group_sum(ss, tmp);
    const float inv = rsqrt(ss / (float)dim + eps);
    for (ulong i = get_local_id(0); i < dim; i += get_local_size(0))
        out[out_off + r * dim + i] = rr[i] * inv * w[w_off + i];
}

/* Causal depthwise conv + bias + SiLU: one work-item per (c, t, b); in[tau < 0] is the state
 * (batch, K-1, C). */
__kernel void conv(ulong C, ulong K, __global const float *x, ulong x_off, ulong x_sb, ulong x_st,
                   __global const float *w, ulong w_off, __global const float *bias, ulong b_off, int has_bias,
                   __global const float *state, ulong s_off, __global float *out, ulong o_off, ulong o_sb,
                   ulong o_st)
{
    const ulong c = get_global_id(0), t = get_global_id(1), b = get_global_id(2);
    if (c >= C) return;
    float acc = has_bias ? bias[b_off + c] : 0.0f;
    for (ulong k = 0; k < K; k++) {
        const long tau = (long)t - (long)(K - 1) + (long)k;
        const float v = tau >= 0 ? x[x_off + b * x_sb + (ulong)tau * x_st + c]
                                 : state[s_off + (b * (K - 1) + (ulong)(tau + (long)K - 1)) * C + c];
        acc += w[w_off + c * K + k] * v;
    }
    out[o_off + b * o_sb + t * o_st + c] = acc / (1.0f + EXPF(-acc));
}

/* Short inputs (decoding): one work-item per (c, b) walks the L <= 8 steps with the window in
 * private memory and writes the new state: one launch instead of two. */
__kernel void conv_short(ulong C, ulong K, ulong L, __global const float *x, ulong x_off, ulong x_sb, ulong x_st,
                         __global const float *w, ulong w_off, __global const float *bias, ulong b_off, int has_bias,
                         __global float *state, ulong s_off, __global float *out, ulong o_off, ulong o_sb, ulong o_st)
{
    const ulong c = get_global_id(0), b = get_global_id(1);
    if (c >= C) return;
    float win[15], wc[8];
    for (ulong j = 0; j + 1 < K; j++) win[j] = state[s_off + (b * (K - 1) + j) * C + c];
    for (ulong t = 0; t < L; t++) win[K - 1 + t] = x[x_off + b * x_sb + t * x_st + c];
    for (ulong k = 0; k < K; k++) wc[k] = w[w_off + c * K + k];
    const float bc = has_bias ? bias[b_off + c] : 0.0f;
    for (ulong t = 0; t < L; t++) {
        float acc = bc;
        for (ulong k = 0; k < K; k++) acc += wc[k] * win[t + k];
        out[o_off + b * o_sb + t * o_st + c] = acc / (1.0f + EXPF(-acc));
    }
    for (ulong j = 0; j + 1 < K; j++) state[s_off + (b * (K - 1) + j) * C + c] = win[L + j];
}

/* The new conv state: the last K-1 inputs; one work-item per (c, b) reads before it writes. */
__kernel void conv_state(ulong C, ulong K, ulong L, __global const float *x, ulong x_off, ulong x_sb, ulong x_st,
                         __global float *state, ulong s_off)
{
    const ulong c = get_global_id(0), b = get_global_id(1);
    if (c >= C || K < 2) return;
    float keep[63];
    for (ulong j = 0; j + 1 < K; j++) {
        const long tau = (long)L - (long)(K - 1) + (long)j;
        keep[j] = tau >= 0 ? x[x_off + b * x_sb + (ulong)tau * x_st + c]
                           : state[s_off + (b * (K - 1) + (ulong)(tau + (long)K - 1)) * C + c];
    }
    for (ulong j = 0; j + 1 < K; j++) state[s_off + (b * (K - 1) + j) * C + c] = keep[j];
}

/* ---- selective scan ----
 * As in the CUDA backend: a work-item owns one channel and its N states in private memory;
 * time is split into chunks run in parallel (pass 1: chunk-local end states and sum of dt;
 * pass 2: the carry over chunks; pass 3: rerun each chunk from its entering state and write
 * y). B and C of a chunk are loaded once per work-group into local memory, a tile of steps
 * at a time, when the whole work-group reads one group of B/C (G = 1, or groups whose width
 * is a multiple of the work-group size).
 * N <= 16 (every Mamba-1 model) keeps its states in 16 unrolled registers. Larger N runs in
 * tiles of SCAN_NT states, one pass over the chunk a tile, the passes adding their parts of
 * y in out (which must not alias the inputs): unrolled over 256 states, the kernel spilled on
 * GPUs and took PoCL's compiler 224 s at its first launch. */

/* B and C tiles of 1024 floats each: SCAN_TILE(N) steps of N states */
#define SCAN_TILE_FLOATS 1024
/* states a pass of the tiled kernels */
#define SCAN_NT 16

typedef struct {
    long u_sb, u_st, u_sd, d_sb, d_st, d_sd, B_sb, B_st, B_sg, B_sn, C_sb, C_st, C_sg, C_sn;
    long z_sb, z_st, z_sd, o_sb, o_st, o_sd;
    ulong u_off, d_off, A_off, B_off, C_off, D_off, z_off, bias_off, si_off, o_off, so_off;
    int B, D, L, N, G, softplus, chunk_len, n_chunks, has_D, has_z, has_bias, has_si, has_so, shared_bc;
} scan_params;

inline float softplus_f(float x) { return x <= 20.0f ? log1p(EXPF(x)) : x; }

/* one state n of a scan step: h[n] = exp(dt A[n]) h[n] + dt u B[n], and (FINAL) y += C[n] h[n] */
#define SCAN_STATE(n, bn, cn, FINAL)                                                                           \
    if ((n) < NT) {                                                                                            \
        h[n] = EXP2(dt * a[n]) * h[n] + du * (bn);                                                             \
        if (FINAL) y += (cn) * h[n];                                                                           \
    }

/* MAXN: the states a pass holds; TILED: passes over tiles of MAXN states (n0 the first of a
 * tile, NT its size), else one pass over N <= MAXN states */
#define SCAN_CHUNK_KERNEL(NAME, MAXN, FINAL, TILED)                                                            \
__kernel void NAME(scan_params p, __global const float *u, __global const float *delta,                       \
                   __global const float *A, __global const float *Bm, __global const float *Cm,                 \
                   __global const float *Dv, __global const float *z, __global const float *bias,               \
                   __global const float *s_in, __global float *out, __global float *s_out,                      \
                   __global float *hloc, __global float *S, __global const float *hin)                          \
{                                                                                                              \
    __local float4 lB4[SCAN_TILE_FLOATS / 4], lC4[SCAN_TILE_FLOATS / 4];                                       \
    __local float *lB = (__local float *)lB4, *lC = (__local float *)lC4;                                      \
    const int TILE = SCAN_TILE_FLOATS / MAXN;                                                                  \
    const int d = get_global_id(0), c = get_group_id(1), b = get_group_id(2);                                  \
    const int N = p.N, t0 = c * p.chunk_len, t1 = min(p.L, t0 + p.chunk_len);                                  \
    const int active = d < p.D;                                                                                \
    const int dd = active ? d : p.D - 1;                                                                       \
    const int g = dd / (p.D / p.G);                                                                            \
    float a[MAXN], h[MAXN];                                                                                    \
    const ulong sidx = ((ulong)b * p.D + dd) * N;                                                              \
    for (int n0 = 0; n0 < (TILED ? N : 1); n0 += MAXN) {                                                       \
    const int NT = TILED ? min(MAXN, N - n0) : N, last = !TILED || n0 + MAXN >= N;                             \
    _Pragma("unroll")                                                                                          \
    for (int n = 0; n < MAXN; n++) {                                                                           \
        a[n] = n < NT ? A[p.A_off + (ulong)dd * N + n0 + n] : 0.0f;                                            \
        h[n] = 0.0f;                                                                                           \
        if (FINAL && n < NT)                                                                                   \
            h[n] = p.n_chunks > 1 ? hin[(ulong)c * p.B * p.D * N + sidx + n0 + n]                              \
                                  : (p.has_si ? s_in[p.si_off + sidx + n0 + n] : 0.0f);                        \
    }                                                                                                          \
    const float bs = p.has_bias ? bias[p.bias_off + dd] : 0.0f, Dd = p.has_D ? Dv[p.D_off + dd] : 0.0f;        \
    const ulong bbase = p.B_off + (ulong)((long)b * p.B_sb + (long)g * p.B_sg);                                \
    const ulong cbase = p.C_off + (ulong)((long)b * p.C_sb + (long)g * p.C_sg);                                \
    float Ssum = 0.0f;                                                                                         \
    _Pragma("unroll")                                                                                          \
    for (int n = 0; n < MAXN; n++) a[n] *= LOG2E;                                                              \
    /* element indices of step t0, advanced by the time strides */                                            \
    ulong iu = p.u_off + (ulong)(b * p.u_sb + (long)t0 * p.u_st + (long)dd * p.u_sd);                          \
    ulong id = p.d_off + (ulong)(b * p.d_sb + (long)t0 * p.d_st + (long)dd * p.d_sd);                          \
    ulong iz = p.z_off + (ulong)(b * p.z_sb + (long)t0 * p.z_st + (long)dd * p.z_sd);                          \
    ulong io = p.o_off + (ulong)(b * p.o_sb + (long)t0 * p.o_st + (long)dd * p.o_sd);                          \
    ulong ib = bbase + (ulong)((long)t0 * p.B_st + (long)n0 * p.B_sn);                                         \
    ulong ic = cbase + (ulong)((long)t0 * p.C_st + (long)n0 * p.C_sn);                                         \
    for (int tt = t0; tt < t1; tt += TILE) {                                                                   \
        const int tn = min(TILE, t1 - tt);                                                                     \
        if (p.shared_bc) {                                                                                     \
            barrier(CLK_LOCAL_MEM_FENCE);                                                                      \
            for (int i = get_local_id(0); i < tn * NT; i += get_local_size(0)) {                               \
                const int s = i / NT, n = i % NT;                                                              \
                lB[s * MAXN + n] = Bm[bbase + (ulong)((long)(tt + s) * p.B_st + (long)(n0 + n) * p.B_sn)];     \
                if (FINAL)                                                                                     \
                    lC[s * MAXN + n] = Cm[cbase + (ulong)((long)(tt + s) * p.C_st + (long)(n0 + n) * p.C_sn)]; \
            }                                                                                                  \
            barrier(CLK_LOCAL_MEM_FENCE);                                                                      \
        }                                                                                                      \
        if (active) {                                                                                          \
            /* the next step's inputs load while this step computes; a tile after the first adds   \
             * to the y of the passes before */                                                                \
            const int add = TILED && FINAL && n0 > 0;                                                          \
            float nd = delta[id], nu = u[iu], nz = FINAL && p.has_z ? z[iz] : 0.0f, ny = add ? out[io] : 0.0f; \
            for (int s = 0; s < tn; s++) {                                                                     \
                const float dl = nd, uu = nu, zz = nz;                                                         \
                float y = ny;                                                                                  \
                if (s + 1 < tn) {                                                                              \
                    nd = delta[id + p.d_st];                                                                   \
                    nu = u[iu + p.u_st];                                                                       \
                    if (FINAL && p.has_z) nz = z[iz + p.z_st];                                                 \
                    if (add) ny = out[io + p.o_st];                                                            \
                }                                                                                              \
                float dt = dl + bs;                                                                            \
                if (p.softplus) dt = softplus_f(dt);                                                           \
                const float du = dt * uu;                                                                      \
                /* unrolled so that a[] and h[] stay in registers; B and C from local memory four              \
                 * states a load (the kernel is bound by issued instructions) */                               \
                if (p.shared_bc) {                                                                             \
                    _Pragma("unroll")                                                                          \
                    for (int q = 0; q < MAXN / 4; q++) {                                                       \
                        if (4 * q < NT) {                                                                      \
                            const float4 bq = lB4[s * (MAXN / 4) + q];                                         \
                            const float4 cq = FINAL ? lC4[s * (MAXN / 4) + q] : (float4)(0.0f);                \
                            SCAN_STATE(4 * q, bq.x, cq.x, FINAL);                                              \
                            SCAN_STATE(4 * q + 1, bq.y, cq.y, FINAL);                                          \
                            SCAN_STATE(4 * q + 2, bq.z, cq.z, FINAL);                                          \
                            SCAN_STATE(4 * q + 3, bq.w, cq.w, FINAL);                                          \
                        }                                                                                      \
                    }                                                                                          \
                } else {                                                                                       \
                    _Pragma("unroll")                                                                          \
                    for (int n = 0; n < MAXN; n++) {                                                           \
                        if (n < NT) {                                                                          \
                            SCAN_STATE(n, Bm[ib + (ulong)((long)n * p.B_sn)],                                  \
                                       FINAL ? Cm[ic + (ulong)((long)n * p.C_sn)] : 0.0f, FINAL);              \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
                if (FINAL) {                                                                                   \
                    if (last) {                                                                                \
                        y += Dd * uu;                                                                          \
                        if (p.has_z) y *= zz / (1.0f + EXPF(-zz));                                             \
                    }                                                                                          \
                    out[io] = y;                                                                               \
                } else {                                                                                       \
                    Ssum += dt;                                                                                \
                }                                                                                              \
                iu += p.u_st; id += p.d_st; iz += p.z_st; io += p.o_st; ib += p.B_st; ic += p.C_st;            \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    if (!active) continue; /* to the next tile's barriers */                                                 \
    if (!FINAL) {                                                                                              \
        const ulong base = (ulong)c * p.B * p.D * N + sidx + n0;                                               \
        for (int n = 0; n < NT && n < MAXN; n++) hloc[base + n] = h[n];                                        \
        if (last) S[((ulong)c * p.B + b) * p.D + dd] = Ssum;                                                   \
    } else if (p.has_so && c == p.n_chunks - 1) {                                                              \
        for (int n = 0; n < NT && n < MAXN; n++) s_out[p.so_off + sidx + n0 + n] = h[n];                       \
    }                                                                                                          \
    }                                                                                                          \
}

SCAN_CHUNK_KERNEL(scan_pass1_16, 16, 0, 0)
SCAN_CHUNK_KERNEL(scan_final_16, 16, 1, 0)
SCAN_CHUNK_KERNEL(scan_pass1_tiled, SCAN_NT, 0, 1)
SCAN_CHUNK_KERNEL(scan_final_tiled, SCAN_NT, 1, 1)

/* Pass 2: the states entering each chunk. For one (b, d, n), H_c = a_{c-1} H_{c-1} + b_{c-1}
 * with a = exp(A S), b = hloc: a linear recurrence. A work-group takes 32 consecutive (b, d, n)
 * (coalesced) times CARRY_GROUPS runs of chunks: each item folds its run into one pair, the
 * group composes the pairs of earlier runs, (a, b) o (a', b') = (a a', a' b + b'), in local
 * memory, and each item walks its run again from the state entering it. */
#define CARRY_GROUPS 8
__kernel void scan_carry(scan_params p, __global const float *A, __global const float *s_in,
                         __global const float *hloc, __global const float *S, __global float *hin)
{
    __local float pa[CARRY_GROUPS][32], pb[CARRY_GROUPS][32];
    const ulong per = (ulong)p.B * p.D * p.N;
    const int lx = get_local_id(0), grp = get_local_id(1);
    const ulong i = get_group_id(0) * 32 + lx;
    const int m = p.n_chunks - 1, run = (m + CARRY_GROUPS - 1) / CARRY_GROUPS;
    const int c0 = min(m, grp * run), c1 = min(m, c0 + run);
    float a = 0.0f, Acc = 1.0f, Bacc = 0.0f;
    ulong sbase = 0;
    const ulong sstride = (ulong)p.B * p.D;
    if (i < per) {
        const int n = (int)(i % p.N), d = (int)((i / p.N) % p.D), b = (int)(i / ((ulong)p.N * p.D));
        a = A[p.A_off + (ulong)d * p.N + n] * LOG2E;
        sbase = (ulong)b * p.D + d;
        for (int c = c0; c < c1; c++) {
            const float e = EXP2(a * S[c * sstride + sbase]);
            Acc *= e;
            Bacc = e * Bacc + hloc[(ulong)c * per + i];
        }
    }
    pa[grp][lx] = Acc;
    pb[grp][lx] = Bacc;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (i >= per) return;
    float H = p.has_si ? s_in[p.si_off + i] : 0.0f;
    for (int q = 0; q < grp; q++) H = pa[q][lx] * H + pb[q][lx];
    for (int c = c0; c < c1; c++) {
        hin[(ulong)c * per + i] = H;
        H = EXP2(a * S[c * sstride + sbase]) * H + hloc[(ulong)c * per + i];
    }
    if (grp == CARRY_GROUPS - 1) hin[(ulong)m * per + i] = H;
}

/* ---- GEMV for a few rows (decoding) ----
 * y[i, row] (+)= xn[i, :] . W[row, :] + bias[row] for i < m <= 8: 32 work-items a weight row,
 * 8 rows a work-group of 256, 4-wide loads when k % 4 == 0. xn = x, or (has_norm) x divided by
 * its RMS over k and scaled by nw: each row's 32 items compute the norms themselves (x is
 * small and cached), which saves a launch per layer. accum: y += instead of y =. */
#define GEMV_MAX_M 8
#define GEMV_ROWS 8

/* i a multiple of 4: the four share a Q8_0 block */
inline float4 load_w4(__global const void *p, ulong i, int dt, ulong sb)
{
    if (dt == DT_Q8)
        return convert_float4(vload4(0, (__global const char *)p + i)) *
               vload_half(sb + i / 32, (__global const half *)p);
    if (dt == DT_F16) return vload_half4(0, (__global const half *)p + i);
    if (dt == DT_BF16) return as_float4(convert_uint4(vload4(0, (__global const ushort *)p + i)) << 16);
    return vload4(0, (__global const float *)p + i);
}

/* the sum over the 32 items of a row of v[i], for every i < m; all items of the group call it */
inline void row_sums(__local float (*red)[GEMV_MAX_M][33], int r, int lane, int m, const float *v, float *out)
{
    for (int i = 0; i < GEMV_MAX_M; i++) red[r][i][lane] = v[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = 0; i < m; i++) {
        float s = 0.0f;
        for (int q = 0; q < 32; q++) s += red[r][i][q];
        out[i] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

__kernel void gemv(int m, int n, int k, __global const float *x, ulong x_off, int lda, __global const void *w, ulong w_off,
                   int dt, ulong sb, __global const float *bias, ulong b_off, int has_bias, __global float *y, ulong y_off,
                   int ldy, __global const float *nw, ulong nw_off, int has_norm, float eps, int accum)
{
    __local float red[GEMV_ROWS][GEMV_MAX_M][33];
    const int l = get_local_id(0), r = l / 32, lane = l % 32;
    const int row = get_group_id(0) * GEMV_ROWS + r;
    const int vec = (k & 3) == 0;
    float inv[GEMV_MAX_M], acc[GEMV_MAX_M];
    for (int i = 0; i < GEMV_MAX_M; i++) {
        inv[i] = 1.0f;
        acc[i] = 0.0f;
    }
    if (has_norm) { /* the host sends a norm only with k % 4 == 0 */
        float ss[GEMV_MAX_M];
        for (int i = 0; i < GEMV_MAX_M; i++) ss[i] = 0.0f;
        for (int kk = lane * 4; kk < k; kk += 128)
            for (int i = 0; i < m; i++) {
                const float4 v = vload4(0, x + x_off + (ulong)i * lda + kk);
                ss[i] += dot(v, v);
            }
        row_sums(red, r, lane, m, ss, ss);
        for (int i = 0; i < m; i++) inv[i] = rsqrt(ss[i] / (float)k + eps);
    }
    if (row < n) {
        const ulong wr = w_off + (ulong)row * k;
        if (vec) {
            for (int kk = lane * 4; kk < k; kk += 128) {
                const float4 wv = load_w4(w, wr + kk, dt, sb);
                const float4 g = has_norm ? vload4(0, nw + nw_off + kk) : (float4)(1.0f);
                for (int i = 0; i < m; i++)
                    acc[i] += dot(wv, vload4(0, x + x_off + (ulong)i * lda + kk) * (g * inv[i]));
            }
        } else {
            for (int kk = lane; kk < k; kk += 32) {
                const float wv = load_w(w, wr + kk, dt, sb), g = has_norm ? nw[nw_off + kk] : 1.0f;
                for (int i = 0; i < m; i++) acc[i] += wv * (x[x_off + (ulong)i * lda + kk] * g * inv[i]);
            }
        }
    }
    float sum[GEMV_MAX_M];
    row_sums(red, r, lane, m, acc, sum);
    if (row < n && lane < m) {
        float v = 0.0f;
        for (int i = 0; i < m; i++) v = i == lane ? sum[i] : v;
        __global float *yp = y + y_off + (ulong)lane * ldy + row;
        *yp = (accum ? *yp : 0.0f) + v + (has_bias ? bias[b_off + row] : 0.0f);
    }
}

/* The same for one row of x (batch-1 decoding), with one accumulator instead of arrays that
 * a runtime m indexes (which went to private memory), ipr work-items a weight row (32 to 256:
 * the host gives a matrix of few rows more items a row, so that it still fills the device),
 * and the norm's 1/rms taken out of the sum: the items accumulate W . (x * nw) and x . x in
 * the same pass and the row's sum is scaled once at the end; no pass over x before the
 * weights. A work-group is 256 items. */
__kernel void gemv1(int n, int k, int ipr, __global const float *x, ulong x_off, __global const void *w, ulong w_off,
                    int dt, ulong sb, __global const float *bias, ulong b_off, int has_bias, __global float *y, ulong y_off,
                    __global const float *nw, ulong nw_off, int has_norm, float eps, int accum)
{
    __local float red[2][256];
    const int l = get_local_id(0), lane = l % ipr;
    const int row = get_group_id(0) * (256 / ipr) + l / ipr;
    float acc = 0.0f, ss = 0.0f;
    if (row < n) {
        const ulong wr = w_off + (ulong)row * k;
        if ((k & 3) == 0) { /* the host sends a norm only with k % 4 == 0 */
            const int stride = ipr * 4;
#pragma unroll 4
            for (int kk = lane * 4; kk < k; kk += stride) {
                float4 xv = vload4(0, x + x_off + kk);
                if (has_norm) {
                    ss += dot(xv, xv);
                    xv *= vload4(0, nw + nw_off + kk);
                }
                acc += dot(load_w4(w, wr + kk, dt, sb), xv);
            }
        } else {
            for (int kk = lane; kk < k; kk += ipr) acc += load_w(w, wr + kk, dt, sb) * x[x_off + kk];
        }
    }
    red[0][l] = acc;
    red[1][l] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ipr / 2; s > 0; s >>= 1) {
        if (lane < s) {
            red[0][l] += red[0][l + s];
            red[1][l] += red[1][l + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lane == 0 && row < n) {
        float v = red[0][l];
        if (has_norm) v *= rsqrt(red[1][l] / (float)k + eps);
        __global float *yp = y + y_off + row;
        *yp = (accum ? *yp : 0.0f) + v + (has_bias ? bias[b_off + row] : 0.0f);
    }
}

__kernel void widen(__global const void *src, ulong src_off, int dt, ulong sb, ulong n, __global float *dst)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) dst[i] = load_w(src, src_off + i, dt, sb);
}

__kernel void add_bias(__global float *y, ulong y_off, ulong ldy, __global const float *bias, ulong b_off, ulong n)
{
    const ulong j = get_global_id(0), i = get_global_id(1);
    if (j < n) y[y_off + i * ldy + j] += bias[b_off + j];
}

/* Read-bandwidth probe: out[0] = the sum of the float4s; out[1] counts the work-groups done,
 * out[2 .. 2 + READ_SLOTS) hold partial sums (all zeroed before). A float add is a
 * compare-and-swap loop (OpenCL 1.2 has no float atomics): with every group's on out[0], the
 * 1,056 groups of the H200 queued on one address and the probe read 1.1 TB/s where a copy
 * moves 3.9. Spread over READ_SLOTS addresses, the last group to finish adds them. */
#define READ_SLOTS 60
__kernel void read_sum(__global const float4 *x, ulong src_off4, ulong n4, __global float *out, ulong out_off)
{
    __local float tmp[256];
    /* four loads in flight an item: with one, the probe read 1.0 TB/s of the H100's ~3 */
    const ulong g = get_global_size(0);
    ulong i = get_global_id(0);
    float4 a0 = (float4)(0.0f), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 3 * g < n4; i += 4 * g) {
        a0 += x[src_off4 + i];
        a1 += x[src_off4 + i + g];
        a2 += x[src_off4 + i + 2 * g];
        a3 += x[src_off4 + i + 3 * g];
    }
    for (; i < n4; i += g) a0 += x[src_off4 + i];
    const float4 t = (a0 + a1) + (a2 + a3);
    float s = (t.x + t.y) + (t.z + t.w);
    s = group_sum(s, tmp);
    if (get_local_id(0) != 0) return;
    volatile __global float *o = out + out_off;
    volatile __global uint *p = (volatile __global uint *)(o + 2 + get_group_id(0) % READ_SLOTS);
    uint old = *p, seen;
    do {
        seen = old;
        old = atomic_cmpxchg(p, seen, as_uint(as_float(seen) + s));
    } while (old != seen);
    if (atomic_inc((volatile __global uint *)(o + 1)) != (uint)get_num_groups(0) - 1) return;
    float sum = 0.0f;
    for (int k = 0; k < READ_SLOTS; k++) sum += as_float(atomic_add((volatile __global uint *)(o + 2 + k), 0u));
    o[0] = sum;
}

/* ---- decoding: the mixer of one time step in two kernels, and the greedy argmax ----
 * The conv output of a step is needed whole by x_proj and per channel by the scan; both
 * kernels recompute it from the conv window (K taps a channel) instead of a third launch.
 * Every buffer comes with its element offset in the parameters (mirrored in opencl_ops.c:
 * the ulongs first, so that both sides lay the struct out alike). */
typedef struct step_params {
    ulong xz, cw, cb, cs, xw, dtw, dtb, A, Dv, ssm, xdbl, y;   /* element offsets */
    ulong xz_sb, y_sb;
    ulong xpart;   /* x_proj's partial sums, (KS, B, nd) */
    int B, D, N, R, K, nd, has_cb, has_D, xdt, ddt;
    int KS;        /* x_proj's k range is cut in KS slices */
    int bc_norm;   /* Falcon-Mamba: dt, B and C each divided by its RMS (+ bc_eps) */
    float bc_eps;
} step_params;

/* xdbl[b, i]: the sum of x_proj's KS partial sums */
inline float xdbl_at(const step_params *p, __global const float *work, int b, int i)
{
    float v = 0.0f;
    for (int s = 0; s < p->KS; s++) v += work[p->xpart + ((ulong)s * p->B + b) * p->nd + i];
    return v;
}

/* silu(conv) of channel k of sequence b over the window (state, x) */
inline float step_conv(const step_params *p, __global const float *xz, __global const float *w,
                       __global const float *st, int b, int k)
{
    float a = p->has_cb ? w[p->cb + k] : 0.0f;
    const ulong s0 = p->cs + (ulong)b * (p->K - 1) * p->D + k, w0 = p->cw + (ulong)k * p->K;
    for (int t = 0; t + 1 < p->K; t++) a += w[w0 + t] * st[s0 + (ulong)t * p->D];
    a += w[w0 + p->K - 1] * xz[p->xz + b * p->xz_sb + k];
    return a / (1.0f + EXPF(-a));
}

#define STEP_ROWS 8
/* Partial sums of xdbl[b, j] = x_proj[j, :] . xc[b, :] over slice s of the channels: a
 * work-group of 128 per (j, s, group of 8 sequences). With a few dozen output features, whole
 * rows per work-group left most compute units idle (21 us a call on the H100); the slices give
 * every unit work. The accumulators have fixed indices, so that they stay in registers.
 * wf: the f32 weights (conv), wx: x_proj in its dtype; work: xz and the partial sums; state:
 * the conv state. */
__kernel void step_xproj(step_params p, __global const float *wf, __global const void *wx, __global float *work,
                         __global const float *state)
{
    __local float tmp[STEP_ROWS][128];
    const int j = get_group_id(0), sl = get_group_id(1), b0 = get_group_id(2) * STEP_ROWS, l = get_local_id(0);
    const int nb = min(STEP_ROWS, p.B - b0);
    const int slice = (p.D + p.KS - 1) / p.KS, k0 = sl * slice, k1 = min(p.D, k0 + slice);
    float acc[STEP_ROWS];
#pragma unroll
    for (int i = 0; i < STEP_ROWS; i++) acc[i] = 0.0f;
    const ulong row = p.xw + (ulong)j * p.D;
#pragma unroll 4
    for (int k = k0 + l; k < k1; k += 128) {
        const float w = load_w(wx, row + k, p.xdt, 0);
#pragma unroll
        for (int i = 0; i < STEP_ROWS; i++)
            if (i < nb) acc[i] += w * step_conv(&p, work, wf, state, b0 + i, k);
    }
#pragma unroll
    for (int i = 0; i < STEP_ROWS; i++) tmp[i][l] = acc[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 64; s > 0; s >>= 1) {
        if (l < s)
            for (int i = 0; i < nb; i++) tmp[i][l] += tmp[i][l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l < nb) work[p.xpart + ((ulong)sl * p.B + b0 + l) * p.nd + j] = tmp[l][0];
}

/* STEP_LANES work-items per (channel d, sequence b), 16 channels a work-group of 256: lane t
 * holds conv tap t (width <= STEP_LANES, checked by the host), the lanes share dt_proj's dot
 * product and the N states, and local memory adds their parts (OpenCL 1.2 has no sub-group
 * shuffles). Then delta = softplus(dt_proj[d] . xdbl[b, 0:R] + bias), the states, y = (C . h +
 * D u) silu(z). One item per channel had 1536 items in all for the 130m (24 work-groups) and
 * read the states and dt_proj rows with a stride: 15 us a call on the H100. The work-group
 * first sums x_proj's partial sums of its sequence's xdbl into local memory (at most
 * STEP_XDBL_MAX values, checked by the host).
 * wf: f32 weights (conv, dt bias, A, D); wd: dt_proj in its dtype; work: xz, xdbl, y;
 * state: the conv and ssm states. */
#define STEP_XDBL_MAX 1024
#define STEP_LANES 16
/* the sum over a channel's STEP_LANES items of v, in every one of them; all items call it */
inline float lanes_sum(__local float *red, int l, int lane, float v)
{
    red[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = STEP_LANES / 2; s > 0; s >>= 1) {
        if (lane < s) red[l] += red[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = red[l - lane];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

__kernel void step_scan(step_params p, __global const float *wf, __global const void *wd, __global float *work,
                        __global float *state)
{
    __local float xl[STEP_XDBL_MAX], red[256], taps[256], inv[3];
    const int l = get_local_id(0), lane = l % STEP_LANES;
    const int d = get_group_id(0) * (256 / STEP_LANES) + l / STEP_LANES, b = get_group_id(1);
    for (int i = l; i < p.nd; i += 256) xl[i] = xdbl_at(&p, work, b, i);
    const int live = d < p.D, dd = live ? d : p.D - 1;
    const ulong s0 = p.cs + (ulong)b * (p.K - 1) * p.D + dd;
    float v = 0.0f, cv = 0.0f;
    if (lane < p.K) {
        v = lane < p.K - 1 ? state[s0 + (ulong)lane * p.D] : work[p.xz + b * p.xz_sb + dd];
        cv = wf[p.cw + (ulong)dd * p.K + lane] * v;
    }
    taps[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE); /* xl and taps written */
    if (p.bc_norm) {
        if (l < 3) {
            const int lo = l == 0 ? 0 : l == 1 ? p.R : p.R + p.N, len = l == 0 ? p.R : p.N;
            float ss = 0.0f;
            for (int i = 0; i < len; i++) ss += xl[lo + i] * xl[lo + i];
            inv[l] = rsqrt(ss / (float)len + p.bc_eps);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int i = l; i < p.nd; i += 256) xl[i] *= inv[i < p.R ? 0 : i < p.R + p.N ? 1 : 2];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float a = lanes_sum(red, l, lane, cv) + (p.has_cb ? wf[p.cb + dd] : 0.0f);
    const float u = a / (1.0f + EXPF(-a));
    /* the window moves by one: tap t takes tap t + 1 */
    if (live && lane < p.K - 1) state[s0 + (ulong)lane * p.D] = taps[l + 1];
    float sp = 0.0f;
    const ulong wr = p.dtw + (ulong)dd * p.R;
    for (int r = lane; r < p.R; r += STEP_LANES) sp += load_w(wd, wr + r, p.ddt, 0) * xl[r];
    const float dt = softplus_f(lanes_sum(red, l, lane, sp) + wf[p.dtb + dd]), du = dt * u;
    const ulong h = p.ssm + ((ulong)b * p.D + dd) * p.N, ar = p.A + (ulong)dd * p.N;
    float yp = 0.0f;
    for (int n = lane; n < p.N; n += STEP_LANES) {
        const float hn = EXP2(dt * (wf[ar + n] * LOG2E)) * state[h + n] + du * xl[p.R + n];
        if (live) state[h + n] = hn;
        yp += xl[p.R + p.N + n] * hn;
    }
    const float y = lanes_sum(red, l, lane, yp) + (p.has_D ? wf[p.Dv + dd] : 0.0f) * u;
    if (live && lane == 0) {
        const float z = work[p.xz + b * p.xz_sb + p.D + dd];
        work[p.y + b * p.y_sb + dd] = y * (z / (1.0f + EXPF(-z)));
    }
}

/* ids[r] = the index of row r's largest logit, the first on ties; NaN never wins and sets
 * flag[0]. One work-group of 256 per row. */
__kernel void argmax(__global const float *logits, ulong off, int vocab, __global int *ids, ulong ids_off,
                     __global int *ids2, ulong ids2_off, int has_ids2, __global int *flag, ulong flag_off)
{
    __local float lv[256];
    __local int li[256], lnan[256];
    const int l = get_local_id(0), r = get_group_id(0);
    __global const float *row = logits + off + (ulong)r * vocab;
    float best = -INFINITY;
    int bi = INT_MAX, nan = 0;
    for (int i = l; i < vocab; i += 256) {
        const float v = row[i];
        nan |= isnan(v);
        if (v > best) { best = v; bi = i; }
    }
    lv[l] = best; li[l] = bi; lnan[l] = nan;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = 128; s > 0; s >>= 1) {
        if (l < s) {
            const float v2 = lv[l + s];
            const int i2 = li[l + s];
            if (v2 > lv[l] || (v2 == lv[l] && i2 < li[l])) { lv[l] = v2; li[l] = i2; }
            lnan[l] |= lnan[l + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) {
        ids[ids_off + r] = li[0] == INT_MAX ? 0 : li[0];
        if (has_ids2) ids2[ids2_off + r] = li[0] == INT_MAX ? 0 : li[0];
        if (lnan[0]) flag[flag_off] = 1;
    }
}

/* Each of the n (<= 4) segments of a row divided by its RMS (+ eps), with no weight
 * (Falcon-Mamba's dt, B and C after x_proj). One work-item a row: the rows are short. */
__kernel void rmsnorm_segments(__global float *x, ulong off, ulong rows, ulong ld, int n, int l0, int l1, int l2,
                               int l3, float eps)
{
    const ulong r = get_global_id(0);
    if (r >= rows) return;
    __global float *row = x + off + r * ld;
    const int len[4] = {l0, l1, l2, l3};
    for (int s = 0; s < n; row += len[s], s++) {
        float ss = 0.0f;
        for (int i = 0; i < len[s]; i++) ss += row[i] * row[i];
        const float inv = rsqrt(ss / (float)(len[s] ? len[s] : 1) + eps);
        for (int i = 0; i < len[s]; i++) row[i] *= inv;
    }
}

/* ---- selective scan backward (opencl_scan_bwd.c; the plan in backends/api/scan_bwd.h) ----
 * Pass 1 (scan_bwd_states): one work-item per (b, d) runs the forward and keeps the state
 * entering each chunk. Pass 2 (scan_bwd_main): a work-group per tile of SCAN_BWD_LOCAL
 * channels of one reduction class; each item owns a channel and walks the chunks from the
 * last: it recomputes the chunk's states into its history slot, then runs the adjoint
 * g_t = C_t dy_t + a_{t+1} g_{t+1} back over the chunk, keeping its contributions to a
 * time-varying dB/dC; after the chunk the work-group sums those per (step, state) over its
 * items in order into the tile's partial sums (two barriers a chunk). The fold kernels then
 * add the tiles (and the batch where B's stride is 0) in index order, and fold the per-channel accumulators of dA, dD, ddelta_bias and a
 * constant dB/dC. No atomics: the same inputs give the same bits. */
#define SCAN_BWD_LOCAL 64

typedef struct {
    long u_sb, u_st, u_sd, d_sb, d_st, d_sd, B_sb, B_st, B_sg, B_sn, C_sb, C_st, C_sg, C_sn;
    long z_sb, z_st, z_sd, o_sb, o_st, o_sd;
    ulong u_off, d_off, A_off, B_off, C_off, D_off, z_off, bias_off, si_off, o_off, dso_off;
    ulong du_off, ddl_off, dz_off, dsi_off;
    ulong H_off, hist_off, cB_off, cC_off, PB_off, PC_off, accA_off, accB_off, accC_off, accD_off, accbias_off;
    ulong n_slots;
    int B, D, L, N, G, softplus, chunk_len, n_chunks, n_classes, class_size, tiles;
    int has_D, has_z, has_bias, has_si, has_dso;
    int want_du, want_ddl, want_dz, want_dA, want_dD, want_dbias, want_dsi, tv_B, tv_C, tc_B, tc_C, pad;
} scan_bwd_params;

/* dt of a step from its raw delta (+ bias), and d dt / d delta (softplus' derivative, 1 past
 * its threshold) */
inline float bwd_dt(float raw, int softplus, float *dsp)
{
    if (!softplus) {
        *dsp = 1.0f;
        return raw;
    }
    *dsp = raw > 20.0f ? 1.0f : 1.0f / (1.0f + EXPF(-raw));
    return softplus_f(raw);
}

/* pass 1, for N <= MAXN */
#define SCAN_BWD_STATES(NAME, MAXN)                                                                                    \
__kernel void NAME(scan_bwd_params p, __global const float *u, __global const float *delta,                            \
                   __global const float *A, __global const float *Bm, __global const float *bias,                      \
                   __global const float *s_in, __global float *s)                                                      \
{                                                                                                                      \
    const int bd = get_global_id(0);                                                                                   \
    if (bd >= p.B * p.D) return;                                                                                       \
    const int b = bd / p.D, d = bd % p.D, N = p.N, g = d / (p.D / p.G);                                                \
    const ulong BD = (ulong)p.B * p.D;                                                                                 \
    float a[MAXN], h[MAXN];                                                                                            \
    for (int n = 0; n < MAXN; n++) {                                                                                   \
        a[n] = n < N ? A[p.A_off + (ulong)d * N + n] : 0.0f;                                                           \
        h[n] = n < N && p.has_si ? s_in[p.si_off + (ulong)bd * N + n] : 0.0f;                                          \
    }                                                                                                                  \
    const float bs = p.has_bias ? bias[p.bias_off + d] : 0.0f;                                                         \
    ulong iu = p.u_off + (ulong)(b * p.u_sb + (long)d * p.u_sd);                                                       \
    ulong id = p.d_off + (ulong)(b * p.d_sb + (long)d * p.d_sd);                                                       \
    ulong ib = p.B_off + (ulong)(b * p.B_sb + (long)g * p.B_sg);                                                       \
    for (int t = 0; t < p.L; t++) {                                                                                    \
        if (t % p.chunk_len == 0) {                                                                                    \
            const ulong base = p.H_off + (ulong)(t / p.chunk_len) * N * BD + bd;                                       \
            for (int n = 0; n < N && n < MAXN; n++) s[base + (ulong)n * BD] = h[n];                                    \
        }                                                                                                              \
        float dsp;                                                                                                     \
        const float dt = bwd_dt(delta[id] + bs, p.softplus, &dsp), dtl = dt * LOG2E, du = dt * u[iu];                  \
        for (int n = 0; n < MAXN; n++)                                                                                 \
            if (n < N) h[n] = EXP2(dtl * a[n]) * h[n] + du * Bm[ib + (ulong)((long)n * p.B_sn)];                       \
        iu += p.u_st;                                                                                                  \
        id += p.d_st;                                                                                                  \
        ib += p.B_st;                                                                                                  \
    }                                                                                                                  \
}

/* pass 2, for N <= MAXN (a multiple of 16) */
#define SCAN_BWD_MAIN(NAME, MAXN)                                                                                      \
__kernel __attribute__((reqd_work_group_size(SCAN_BWD_LOCAL, 1, 1)))                                                   \
void NAME(scan_bwd_params p, __global const float *u, __global const float *delta, __global const float *A,            \
          __global const float *Bm, __global const float *Cm, __global const float *Dv, __global const float *z,       \
          __global const float *bias, __global const float *dout, __global const float *dso, __global float *du_o,     \
          __global float *ddl_o, __global float *dz_o, __global float *dsi_o, __global float *s)                       \
{                                                                                                                      \
    const int lid = get_local_id(0), k = get_group_id(0), cls = get_group_id(1), b = get_group_id(2);                  \
    const int N = p.N, T = p.chunk_len;                                                                                \
    const int within = k * SCAN_BWD_LOCAL + lid, active = within < p.class_size;                                       \
    const int d = cls * p.class_size + (active ? within : 0), g = d / (p.D / p.G);                                     \
    const ulong BD = (ulong)p.B * p.D, bd = (ulong)b * p.D + d;                                                        \
    const ulong unit = ((ulong)b * p.n_classes + cls) * p.tiles + k, slot = unit * SCAN_BWD_LOCAL + lid;               \
    float a[MAXN], carry[MAXN], hc[MAXN], gA[MAXN], tB[MAXN], tC[MAXN];                                                \
    for (int n = 0; n < MAXN; n++) {                                                                                   \
        a[n] = n < N ? A[p.A_off + (ulong)d * N + n] : 0.0f;                                                           \
        carry[n] = n < N && p.has_dso ? dso[p.dso_off + bd * N + n] : 0.0f;                                            \
        gA[n] = tB[n] = tC[n] = 0.0f;                                                                                  \
    }                                                                                                                  \
    const float bs = p.has_bias ? bias[p.bias_off + d] : 0.0f, Dd = p.has_D ? Dv[p.D_off + d] : 0.0f;                  \
    const ulong bbase = p.B_off + (ulong)(b * p.B_sb + (long)g * p.B_sg);                                              \
    const ulong cbase = p.C_off + (ulong)(b * p.C_sb + (long)g * p.C_sg);                                              \
    const long ub = b * p.u_sb + (long)d * p.u_sd, db = b * p.d_sb + (long)d * p.d_sd;                                 \
    const long zb = b * p.z_sb + (long)d * p.z_sd, ob = b * p.o_sb + (long)d * p.o_sd;                                 \
    float accD = 0.0f, accbias = 0.0f;                                                                                 \
    for (int c = p.n_chunks - 1; c >= 0; c--) {                                                                        \
        const int t0 = c * T, t1 = min(p.L, t0 + T);                                                                   \
        const ulong Hb = p.H_off + (ulong)c * N * BD + bd;                                                             \
        for (int n = 0; n < MAXN; n++) hc[n] = n < N ? s[Hb + (ulong)n * BD] : 0.0f;                                   \
        for (int t = t0; t < t1; t++) {                                                                                \
            float dsp;                                                                                                 \
            const float dt = bwd_dt(delta[p.d_off + (ulong)(db + t * p.d_st)] + bs, p.softplus, &dsp);                 \
            const float dtl = dt * LOG2E, du = dt * u[p.u_off + (ulong)(ub + t * p.u_st)];                             \
            const ulong ib = bbase + (ulong)(t * p.B_st), ih = p.hist_off + (ulong)(t - t0) * N * p.n_slots + slot;    \
            for (int n = 0; n < MAXN; n++)                                                                             \
                if (n < N) {                                                                                           \
                    hc[n] = EXP2(dtl * a[n]) * hc[n] + du * Bm[ib + (ulong)((long)n * p.B_sn)];                        \
                    s[ih + (ulong)n * p.n_slots] = hc[n];                                                              \
                }                                                                                                      \
        }                                                                                                              \
        for (int t = t1 - 1; t >= t0; t--) {                                                                           \
            float dsp;                                                                                                 \
            const float dt = bwd_dt(delta[p.d_off + (ulong)(db + t * p.d_st)] + bs, p.softplus, &dsp);                 \
            const float dtl = dt * LOG2E, uu = u[p.u_off + (ulong)(ub + t * p.u_st)];                                  \
            const float go = dout[p.o_off + (ulong)(ob + t * p.o_st)], dtu = dt * uu;                                  \
            float zz = 0.0f, sz = 0.0f, dy = go;                                                                       \
            if (p.has_z) {                                                                                             \
                zz = z[p.z_off + (ulong)(zb + t * p.z_st)];                                                            \
                sz = 1.0f / (1.0f + EXPF(-zz));                                                                        \
                dy = go * zz * sz;                                                                                     \
            }                                                                                                          \
            /* h_{t-1}: the history's previous step, or the chunk's boundary state */                                  \
            const ulong hp0 = t > t0 ? p.hist_off + (ulong)(t - 1 - t0) * N * p.n_slots + slot : Hb;                   \
            const ulong hps = t > t0 ? p.n_slots : BD;                                                                 \
            const ulong ib = bbase + (ulong)(t * p.B_st), ic = cbase + (ulong)(t * p.C_st);                            \
            const ulong icont = (ulong)(t - t0) * N * p.n_slots + slot;                                                \
            float yv = 0.0f, dua = 0.0f, ddt = 0.0f;                                                                   \
            for (int n = 0; n < MAXN; n++)                                                                             \
                if (n < N) {                                                                                           \
                    const float bn = Bm[ib + (ulong)((long)n * p.B_sn)], cn = Cm[ic + (ulong)((long)n * p.C_sn)];      \
                    const float e = EXP2(dtl * a[n]), gg = cn * dy + carry[n];                                         \
                    const float hp = s[hp0 + (ulong)n * hps], ah = e * hp;                                             \
                    const float cB = active ? gg * dtu : 0.0f, cC = active ? dy * hc[n] : 0.0f;                        \
                    yv += cn * hc[n];                                                                                  \
                    dua += gg * bn;                                                                                    \
                    ddt += gg * (a[n] * ah + bn * uu);                                                                 \
                    gA[n] += gg * dt * ah;                                                                             \
                    tB[n] += cB;                                                                                       \
                    tC[n] += cC;                                                                                       \
                    if (p.tv_B) s[p.cB_off + icont + (ulong)n * p.n_slots] = cB;                                       \
                    if (p.tv_C) s[p.cC_off + icont + (ulong)n * p.n_slots] = cC;                                       \
                    carry[n] = e * gg;                                                                                 \
                    hc[n] = hp;                                                                                        \
                }                                                                                                      \
            const float ddl = ddt * dsp;                                                                               \
            accD += dy * uu;                                                                                           \
            accbias += ddl;                                                                                            \
            if (active) {                                                                                              \
                if (p.want_du) du_o[p.du_off + (ulong)(ub + t * p.u_st)] = dt * dua + Dd * dy;                         \
                if (p.want_ddl) ddl_o[p.ddl_off + (ulong)(db + t * p.d_st)] = ddl;                                     \
                if (p.want_dz)                                                                                         \
                    dz_o[p.dz_off + (ulong)(zb + t * p.z_st)] = go * (yv + Dd * uu) * sz * (1.0f + zz * (1.0f - sz));  \
            }                                                                                                          \
        }                                                                                                              \
        if (p.tv_B || p.tv_C) {                                                                                        \
            /* the tile's partial sums of the chunk: per (step, state), its items in order */                          \
            barrier(CLK_GLOBAL_MEM_FENCE);                                                                             \
            for (int i = lid; i < (t1 - t0) * N; i += SCAN_BWD_LOCAL) {                                                \
                const ulong row = (ulong)i * p.n_slots + unit * SCAN_BWD_LOCAL;                                        \
                const ulong at = (unit * p.L + t0) * N + i;                                                            \
                float sB = 0.0f, sC = 0.0f;                                                                            \
                for (int j = 0; j < SCAN_BWD_LOCAL; j++) {                                                             \
                    if (p.tv_B) sB += s[p.cB_off + row + j];                                                           \
                    if (p.tv_C) sC += s[p.cC_off + row + j];                                                           \
                }                                                                                                      \
                if (p.tv_B) s[p.PB_off + at] = sB;                                                                     \
                if (p.tv_C) s[p.PC_off + at] = sC;                                                                     \
            }                                                                                                          \
            barrier(CLK_GLOBAL_MEM_FENCE);                                                                             \
        }                                                                                                              \
    }                                                                                                                  \
    if (!active) return;                                                                                               \
    for (int n = 0; n < N && n < MAXN; n++) {                                                                          \
        if (p.want_dA) s[p.accA_off + bd * N + n] = gA[n];                                                             \
        if (p.tc_B) s[p.accB_off + bd * N + n] = tB[n];                                                                \
        if (p.tc_C) s[p.accC_off + bd * N + n] = tC[n];                                                                \
        if (p.want_dsi) dsi_o[p.dsi_off + bd * N + n] = carry[n];                                                      \
    }                                                                                                                  \
    if (p.want_dD) s[p.accD_off + bd] = accD;                                                                          \
    if (p.want_dbias) s[p.accbias_off + bd] = accbias;                                                                 \
}

SCAN_BWD_STATES(scan_bwd_states_16, 16)
SCAN_BWD_STATES(scan_bwd_states_64, 64)
SCAN_BWD_STATES(scan_bwd_states_256, 256)
SCAN_BWD_MAIN(scan_bwd_main_16, 16)
SCAN_BWD_MAIN(scan_bwd_main_64, 64)
SCAN_BWD_MAIN(scan_bwd_main_256, 256)

/* A time-varying dB (which 0) or dC (1): one work-item per element it addresses, the sum of
 * the tiles' partial sums over the batch (where its stride is 0) and the classes that read it */
__kernel void scan_bwd_fold_tv(scan_bwd_params p, int which, __global float *out, ulong out_off,
                               __global const float *s)
{
    const long sb = which ? p.C_sb : p.B_sb, st = which ? p.C_st : p.B_st;
    const long sg = which ? p.C_sg : p.B_sg, sn = which ? p.C_sn : p.B_sn;
    const ulong P = which ? p.PC_off : p.PB_off;
    const int nb = sb ? p.B : 1, ng = sg ? p.G : 1, N = p.N;
    const ulong i = get_global_id(0);
    if (i >= (ulong)nb * p.L * ng * N) return;
    const int n = i % N, go = (i / N) % ng, t = (i / ((ulong)N * ng)) % p.L, bo = i / ((ulong)N * ng * p.L);
    const int own = sg != 0 && p.n_classes > 1;
    const int c0 = own ? go : 0, c1 = own ? go + 1 : p.n_classes;
    float acc = 0.0f;
    for (int b = sb ? bo : 0; b < (sb ? bo + 1 : p.B); b++)
        for (int cl = c0; cl < c1; cl++)
            for (int k = 0; k < p.tiles; k++)
                acc += s[P + ((((ulong)b * p.n_classes + cl) * p.tiles + k) * p.L + t) * N + n];
    out[out_off + (ulong)(bo * sb + t * st + go * sg + n * sn)] = acc;
}

/* out[bo, go, w] = the sum over b (every b when bshare, else bo) and over the channels of
 * group go of acc[(b * D + d) * W + w]: dA, dD, ddelta_bias, a constant dB/dC */
__kernel void scan_bwd_fold_ch(scan_bwd_params p, ulong acc_off, int W, int n_out_g, int bshare, __global float *out,
                               ulong out_off, long osb, long osg, long osw, __global const float *s)
{
    const int nb = bshare ? 1 : p.B, gs = p.D / n_out_g;
    const ulong i = get_global_id(0);
    if (i >= (ulong)nb * n_out_g * W) return;
    const int w = i % W, go = (i / W) % n_out_g, bo = i / ((ulong)W * n_out_g);
    float acc = 0.0f;
    for (int b = bshare ? 0 : bo; b < (bshare ? p.B : bo + 1); b++)
        for (int d = go * gs; d < (go + 1) * gs; d++) acc += s[acc_off + ((ulong)b * p.D + d) * W + w];
    out[out_off + (ulong)(bo * osb + go * osg + w * osw)] = acc;
}
