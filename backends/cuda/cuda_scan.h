/* The selective scan's launch parameters, shared by the general kernels (cuda_scan.cu) and the
 * staged N = 16 kernel (cuda_scan16.cu). */
#ifndef MB_CUDA_SCAN_H
#define MB_CUDA_SCAN_H

#include "cuda_internal.h"

struct scan_params {
    int B, D, L, N, G, softplus;
    int chunk_len, n_chunks;
    int bc_vec;           /* B and C rows are contiguous in n and 16-byte aligned: float4 loads */
    const float *u, *delta, *A, *Bm, *Cm, *Dv, *z, *bias, *s_in;
    float *out, *s_out;
    long long u_sb, u_st, u_sd, d_sb, d_st, d_sd, B_sb, B_st, B_sg, B_sn, C_sb, C_st, C_sg, C_sn;
    long long z_sb, z_st, z_sd, o_sb, o_st, o_sd;
    float *hloc, *S;      /* (n_chunks, B, D, N), (n_chunks, B, D) */
    float *hin;           /* (n_chunks, B, D, N): the state entering each chunk */
};

/* Whether the staged kernel takes this scan: N = 16, B and C contiguous in n, u, delta, z and
 * out contiguous in d with every 16-byte row start aligned, dim and the channels of a group
 * whole warps. */
bool scan16_fits(const scan_params &p);
/* Threads of the N = 16 kernel resident on the whole GPU at once (0: none fit). */
long long scan16_resident_threads(mb_device *dev);
/* Pass 1 (FINAL false) or pass 3 of the staged kernel over grid (dim / 128 blocks, chunks, batch). */
int scan16_launch(mb_device *dev, const scan_params &p, bool final_pass, unsigned n_chunks);

#endif
