/* The selective scan's backward on the GPU: the parameters and folds shared by the
 * chunk-sequential kernels (cuda_scan_bwd.cu, any N up to 256) and the chunk-parallel ones
 * (cuda_scan_bwd_chunks.cu, N <= 16), in the plans of api/scan_bwd.h. */
#ifndef MB_CUDA_SCAN_BWD_H
#define MB_CUDA_SCAN_BWD_H

#include "api/scan_bwd.h"
#include "cuda_internal.h"

struct bwd_params {
    const float *u, *delta, *A, *Bm, *Cm, *Dv, *z, *bias, *s_in, *dout, *dso;
    float *du, *ddl, *dz, *dsi, *s;
    long long u_sb, u_st, u_sd, d_sb, d_st, d_sd, B_sb, B_st, B_sg, B_sn, C_sb, C_st, C_sg, C_sn;
    long long z_sb, z_st, z_sd, o_sb, o_st, o_sd;
    size_t H_off, hist_off, cB_off, cC_off, PB_off, PC_off, accA_off, accB_off, accC_off, accD_off, accbias_off, n_slots;
    size_t S_off, K_off;
    int B, D, L, N, G, softplus, chunk_len, n_chunks, n_classes, class_size, tiles;
    int p_len;    /* steps the partial sums PB/PC hold, from step t_base */
    int t_base;
    int c_base;   /* the chunk-parallel main pass: the segment's first chunk */
    int n_parts;  /* per-channel sums kept per chunk (chunk-parallel), else 1 */
    int want_dA, want_dD, want_dbias, tv_B, tv_C, tc_B, tc_C;
};

/* dt from the raw delta (+ bias), and d dt / d delta (1 past softplus' threshold of 20) */
__device__ __forceinline__ float bwd_dt(float raw, int softplus, float *dsp)
{
    if (!softplus) {
        *dsp = 1.0f;
        return raw;
    }
    *dsp = raw > 20.0f ? 1.0f : __fdividef(1.0f, 1.0f + __expf(-raw));
    return softplus_f(raw);
}

/* The time-varying dB and dC of p.tv_B / p.tv_C at steps [p.t_base, p.t_base + steps), in one
 * launch, from the tiles' partial sums in PB / PC (p.p_len steps a tile, from p.t_base). */
int cuda_scan_bwd_fold_varying(mb_device *dev, const bwd_params &p, int steps, mb_ptr dB, mb_ptr dC);
/* N <= 16, in the plan of mb_scan_bwd_plan_parallel: the chunk-parallel passes and the folds of
 * a time-varying dB/dC; the per-channel sums are left per chunk (p.n_parts of them). */
int cuda_scan_bwd_chunks(mb_device *dev, const mb_scan_bwd_op *op, bwd_params &p, const mb_scan_bwd_plan &pl);

#endif
