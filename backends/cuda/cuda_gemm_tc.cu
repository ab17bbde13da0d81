/* fp32 GEMM on tensor cores at fp32 accuracy: the 3xTF32 split.
 *
 * TF32 keeps 11 of fp32's 24 significant bits. Each operand x is split into big (x rounded to
 * tf32) and small = x - big (exact in fp32, at most 2^-12 |x|), and
 *   a b ~ a_small b_big + a_big b_small + a_big b_big,
 * dropping a_small b_small (2^-24 relative); the tensor cores read small to 11 bits, so each
 * product is good to ~2^-22 relative. Three TF32 MMAs (mma.sync m16n8k8, sm_80+) take less
 * time than SGEMM's FFMAs: on the H100 this kernel reaches 60-65 TFLOP/s on the 130m's in_proj
 * and lm_head where cuBLAS SGEMM reaches 42-51, and its error against float64 is the same as
 * SGEMM's or smaller (see the k-tile sums below). cuBLAS has no such mode for sm_80/sm_90 (its
 * BF16x9 emulation is Blackwell's), hence this kernel; MAMBA_CUDA_GEMM=cublas turns it off.
 *
 * y (m, n) = x (m, k) W^T + bias, x and W row-major with k contiguous (W is a Linear's (n, k)
 * weight), y row-major. A block computes a BM x BN tile of y; its warps take 64 x 32 each
 * (4 x 4 MMA tiles of 16 x 8). Tiles of 32 k of x and W go through a STAGES-deep cp.async ring
 * in shared memory, rows padded to 36 floats so that a fragment load (8 rows of 16 bytes,
 * ldmatrix) hits 32 different banks. */
#include <algorithm>

#include "cuda_internal.h"

namespace {

constexpr int BK = 32;
constexpr int SK = BK + 4; /* padded row of a shared tile, in floats */
constexpr int STAGES = 4;
/* 128 x 64 with 4 stages measured fastest on the H100 for the 130m's in_proj, out_proj and
 * lm_head (against 128 x 128 and 64 x 128, 3 stages): two blocks an SM (110 KB of shared memory
 * each) */
constexpr int TILE_M = 128, TILE_N = 64;

/* big = x rounded to tf32 (to nearest, ties away from zero), small = x - big; small goes to
 * the MMA as it is (measured on the H100: the same error as rounding it with cvt.rna.tf32, in
 * a third of the instructions) */
__device__ __forceinline__ void split_tf32(unsigned x, unsigned &big, unsigned &small)
{
    big = (x + 0x1000u) & 0xffffe000u;
    small = __float_as_uint(__uint_as_float(x) - __uint_as_float(big));
}

/* four 8 x 4 tf32 matrices from shared memory; lane l gives the address of row l % 8 of matrix
 * l / 8 and receives element (l / 4, l % 4) of each: an m16n8k8 fragment's layout */
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const float *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* 16 bytes global -> shared; zero-filled when !valid (rows past m or n, k past the end) */
__device__ __forceinline__ void cp_async16(float *dst, const float *src, bool valid)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}

/* rows [r0, r0 + ROWS) x k [k0, k0 + BK) of a row-major matrix (ld floats a row) into a tile */
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(float *tile, const float *g, int ld, int rows, int r0, int k, int k0)
{
    constexpr int CHUNKS = ROWS * (BK / 4);
    static_assert(CHUNKS % THREADS == 0, "tile chunks a thread");
#pragma unroll
    for (int i = 0; i < CHUNKS / THREADS; i++) {
        const int c = (int)threadIdx.x + i * THREADS;
        const int r = c / (BK / 4), kc = (c % (BK / 4)) * 4;
        const bool valid = r0 + r < rows && k0 + kc < k;
        const float *src = valid ? g + (size_t)(r0 + r) * ld + k0 + kc : g;
        cp_async16(tile + r * SK + kc, src, valid);
    }
}

template <int BM, int BN>
__global__ void __launch_bounds__((BM / 64) * (BN / 32) * 32, 1)
    gemm_3xtf32_kernel(int m, int n, int k, int k_split, const float *__restrict__ x, int lda,
                       const float *__restrict__ w, const float *__restrict__ bias, float *__restrict__ y, int ldy,
                       int vec2, float *__restrict__ partial)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    /* cp.async and TF32 MMAs are sm_80's; the host never launches this below it (tf32x3) */
    (void)m, (void)n, (void)k, (void)k_split, (void)x, (void)lda, (void)w, (void)bias, (void)y, (void)ldy, (void)vec2,
        (void)partial;
    __trap();
#else
    constexpr int WARPS_N = BN / 32, THREADS = (BM / 64) * WARPS_N * 32;
    extern __shared__ float4 smem4[];
    float *smem = (float *)smem4;
    float *As = smem, *Bs = smem + STAGES * BM * SK;
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / WARPS_N) * 64, wn = (warp % WARPS_N) * 32;
    const int bm = (int)blockIdx.y * BM, bn = (int)blockIdx.x * BN;
    /* this block's k range: a split of k_split (a multiple of BK) when partial, else all */
    const int k0 = (int)blockIdx.z * k_split, k1 = min(k, k0 + k_split);
    const int ktiles = (k1 - k0 + BK - 1) / BK;

    float acc[4][4][4] = {};
    float tot[4][4][4] = {};

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ktiles) {
            load_tile<BM, THREADS>(As + s * BM * SK, x, lda, m, bm, k1, k0 + s * BK);
            load_tile<BN, THREADS>(Bs + s * BN * SK, w, k, n, bn, k1, k0 + s * BK);
        }
        asm volatile("cp.async.commit_group;");
    }

    for (int kt = 0; kt < ktiles; kt++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(STAGES - 2));
        /* the tile kt is in; every warp is done with the stage the next load overwrites */
        __syncthreads();
        const int next = kt + STAGES - 1;
        if (next < ktiles) {
            load_tile<BM, THREADS>(As + (next % STAGES) * BM * SK, x, lda, m, bm, k1, k0 + next * BK);
            load_tile<BN, THREADS>(Bs + (next % STAGES) * BN * SK, w, k, n, bn, k1, k0 + next * BK);
        }
        asm volatile("cp.async.commit_group;");

        /* this lane's ldmatrix row: A's matrices are (rows 0-7 | 8-15) x (k 0-3 | 4-7) of an m16
         * tile, B's (k 0-3 | 4-7) of two n8 tiles */
        const int q = lane / 8, r8 = lane % 8;
        const float *a_s = As + (kt % STAGES) * BM * SK + (wm + (q & 1) * 8 + r8) * SK + (q >> 1) * 4;
        const float *b_s = Bs + (kt % STAGES) * BN * SK + (wn + (q >> 1) * 8 + r8) * SK + (q & 1) * 4;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned ab[4][4], as[4][4], bb[4][2], bs[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                unsigned v[4];
                ldmatrix_x4(v, a_s + i * 16 * SK + kk);
#pragma unroll
                for (int e = 0; e < 4; e++) split_tf32(v[e], ab[i][e], as[i][e]);
            }
#pragma unroll
            for (int j = 0; j < 4; j += 2) {
                unsigned v[4];
                ldmatrix_x4(v, b_s + j * 8 * SK + kk);
#pragma unroll
                for (int e = 0; e < 4; e++) split_tf32(v[e], bb[j + e / 2][e % 2], bs[j + e / 2][e % 2]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    mma_tf32(acc[i][j], as[i], bb[j]);
                    mma_tf32(acc[i][j], ab[i], bs[j]);
                    mma_tf32(acc[i][j], ab[i], bb[j]);
                }
        }
        /* The tensor cores' fp32 sums do not round to nearest: over k = 768 their error grows to
         * ~1e-6 of sum |x w| (5x cuBLAS SGEMM's, on the H100). Summing each k tile's 12 MMA
         * steps into tot with a rounded add brings it to 5-8e-8 (SGEMM: 4e-8 to 2e-7) for
         * 5% of the time. */
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    tot[i][j][e] += acc[i][j][e];
                    acc[i][j][e] = 0.0f;
                }
    }
    asm volatile("cp.async.wait_group 0;");

    /* accumulator (i, j): rows g and g + 8 of the m16 tile, columns 2t and 2t + 1 of the n8; a k
     * split's sums go to its slice of partial (m x n, no bias), for splitk_sum_kernel */
    float *const out0 = partial ? partial + (size_t)blockIdx.z * m * n : y;
    const size_t ld = partial ? (size_t)n : (size_t)ldy;
    if (partial) {
        bias = nullptr;
        vec2 = n % 2 == 0;
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int col = bn + wn + j * 8 + 2 * t;
        if (col >= n) continue;
        const bool pair = col + 1 < n;
        const float b0 = bias ? bias[col] : 0.0f, b1 = bias && pair ? bias[col + 1] : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int row = bm + wm + i * 16 + g + h * 8;
                if (row >= m) continue;
                float *out = out0 + (size_t)row * ld + col;
                const float v0 = tot[i][j][2 * h] + b0, v1 = tot[i][j][2 * h + 1] + b1;
                if (pair && vec2) *(float2 *)out = make_float2(v0, v1);
                else {
                    out[0] = v0;
                    if (pair) out[1] = v1;
                }
            }
    }
#endif
}

/* y = bias + the k splits' partial sums, in split order (the same result every run) */
__global__ void splitk_sum_kernel(const float *__restrict__ partial, int splits, int m, int n,
                                  const float *__restrict__ bias, float *__restrict__ y, int ldy)
{
    const size_t mn = (size_t)m * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < mn; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)n, c = i % (size_t)n;
        float v = partial[i];
        for (int z = 1; z < splits; z++) v += partial[z * mn + i];
        y[r * (size_t)ldy + c] = bias ? v + bias[c] : v;
    }
}

template <int BM, int BN> constexpr size_t smem_bytes() { return (size_t)STAGES * (BM + BN) * SK * sizeof(float); }

template <int BM, int BN>
int launch(mb_device *dev, int m, int n, int k, const float *x, int lda, const float *w, const float *bias, float *y,
           int ldy, int splits, float *partial)
{
    constexpr int THREADS = (BM / 64) * (BN / 32) * 32;
    constexpr size_t smem = smem_bytes<BM, BN>();
    auto kernel = gemm_3xtf32_kernel<BM, BN>;
    const int vec2 = ldy % 2 == 0 && ((uintptr_t)y & 7) == 0;
    /* whole k tiles a split; rounding up may leave fewer splits than asked for */
    const int ktiles = (k + BK - 1) / BK, k_split = (ktiles + splits - 1) / splits * BK;
    splits = (k + k_split - 1) / k_split;
    if (splits < 2) partial = nullptr;
    const dim3 grid((unsigned)((n + BN - 1) / BN), (unsigned)((m + BM - 1) / BM), (unsigned)(partial ? splits : 1));
    kernel<<<grid, THREADS, smem, dev->stream>>>(m, n, k, partial ? k_split : k, x, lda, w, bias, y, ldy, vec2,
                                                 partial);
    CU_LAUNCHED(dev, "3xTF32 GEMM kernel");
    if (partial) {
        const size_t mn = (size_t)m * n;
        const unsigned blocks = (unsigned)std::min<size_t>((mn + 255) / 256, (size_t)dev->sm_count * 8);
        splitk_sum_kernel<<<blocks, 256, 0, dev->stream>>>(partial, splits, m, n, bias, y, ldy);
        CU_LAUNCHED(dev, "3xTF32 GEMM split-k sum kernel");
    }
    return 0;
}

} // namespace

int cuda_gemm_3xtf32_init(mb_device *dev)
{
    /* more than the 48 KB of shared memory a block gets without asking */
    CU_CHECK(dev, cudaFuncSetAttribute(gemm_3xtf32_kernel<TILE_M, TILE_N>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem_bytes<TILE_M, TILE_N>()),
             "3xTF32 GEMM shared memory");
    return 0;
}

bool cuda_gemm_3xtf32_fits(const mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, size_t ldy)
{
    if (!dev->tf32x3 || n > 0x7fffffff || k > 0x7fffffff || lda > 0x7fffffff || ldy > 0x7fffffff) return false;
    /* cp.async copies 16 bytes: rows of x must start 16-byte aligned (the caller checks W) */
    return (m + TILE_M - 1) / TILE_M <= 65535 && k % 4 == 0 && lda % 4 == 0 && ((uintptr_t)x & 15) == 0;
}

int cuda_gemm_3xtf32_splits(const mb_device *dev, size_t m, size_t n, size_t k)
{
    /* Too few tiles to keep every SM busy (x_proj's 80 columns, out_proj's 768, a short
     * chunk) call for cutting k into splits. The split count minimizes a model of the time,
     * fitted on the H100 (within 2% of the best split for the 130m's projections at 512 to 2048
     * rows): an SM runs two blocks at once, each taking 6.5e-8 s per k; a block alone on its SM
     * runs 1.6x as fast; splits cost a launch and writing and reading (2 s + 1) m n partial
     * sums at 2.7 TB/s. At least 4 k tiles a split, at most 16 splits. */
    const size_t tiles = ((m + TILE_M - 1) / TILE_M) * ((n + TILE_N - 1) / TILE_N), ktiles = (k + BK - 1) / BK;
    const size_t sm = (size_t)dev->sm_count, max_s = std::max<size_t>(1, std::min<size_t>(16, ktiles / 4));
    size_t best = 1;
    double best_t = 0.0;
    for (size_t s = 1; s <= max_s; s++) {
        const size_t k_tiles_a_split = (ktiles + s - 1) / s;
        if ((ktiles + k_tiles_a_split - 1) / k_tiles_a_split != s) continue; /* the same as a smaller s */
        const size_t per_sm = (tiles * s + sm - 1) / sm;
        const double rounds = per_sm == 1 ? 0.63 : (double)per_sm / 2.0;
        double t = rounds * (double)(k_tiles_a_split * BK) * 6.5e-8;
        if (s > 1) t += (double)(2 * s + 1) * (double)m * (double)n * 4.0 / 2.7e12 + 2e-6;
        if (s == 1 || t < best_t) {
            best = s;
            best_t = t;
        }
    }
    return (int)best;
}

int cuda_gemm_3xtf32(mb_device *dev, size_t m, size_t n, size_t k, const float *x, size_t lda, const float *w,
                     const float *bias, float *y, size_t ldy, int splits, float *partial)
{
    return launch<TILE_M, TILE_N>(dev, (int)m, (int)n, (int)k, x, (int)lda, w, bias, y, (int)ldy, splits, partial);
}
