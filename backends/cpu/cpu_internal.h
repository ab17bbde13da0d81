/* The CPU backend's device: host memory, OpenMP threads, OpenBLAS. */
#ifndef MB_CPU_INTERNAL_H
#define MB_CPU_INTERNAL_H

#include <math.h>

#include "api/backend.h"
#include "api/dtype.h"
#include "api/util.h"

#define CPU_MAX_STATE 256   /* d_state the scan and the mixer step take */
#define CPU_GEMV_MAX_ROWS 8 /* rows of x the decoding GEMV takes (batch of a step) */

struct mb_device {
    int n_threads;
    int portable;          /* mb_open_options.portable_kernels: no AVX-512 kernels */
    char err[512];
    float *scratch;        /* f32 copy of a 16-bit or Q8_0 weight matrix for GEMM */
    size_t scratch_len;    /* floats */
    float *gemv_x;         /* the normalized input rows of gemv_fused */
    size_t gemv_x_len;     /* floats */
    int16_t *gemv_xq;      /* Q8_0 GEMV: x in 16 bits, a scale a block of 32 (gemv_xs) */
    float *gemv_xs;
    size_t gemv_xq_len;    /* elements of gemv_xq */
    mb_mem_stats mem;      /* bytes held through alloc() */
    double timer_start;    /* seconds, monotonic */
};

struct mb_buffer {
    size_t bytes;
    unsigned char *data;
};

static inline void *cpu_at(mb_ptr p) { return p.buf ? p.buf->data + p.offset : (void *)0; }

int cpu_fail(mb_device *dev, int status, const char *fmt, ...);

/* out = x / rms(x) * w over dim values (out may be x): add_rmsnorm's and gemv_fused's norm. */
static inline void cpu_rmsnorm_row(float *out, const float *x, const float *w, size_t dim, float eps)
{
    float ss = 0;
    for (size_t i = 0; i < dim; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (size_t i = 0; i < dim; i++) out[i] = x[i] * inv * w[i];
}

/* The segments of one row divided by their root mean square (rmsnorm_segments, and the
 * mixer step's bc_norm). */
static inline void cpu_rmsnorm_segments_row(float *x, const mb_segments *seg, float eps)
{
    for (size_t s = 0; s < seg->n; x += seg->len[s], s++) {
        float ss = 0;
        for (size_t i = 0; i < seg->len[s]; i++) ss += x[i] * x[i];
        const float inv = 1.0f / sqrtf(ss / (float)(seg->len[s] ? seg->len[s] : 1) + eps);
        for (size_t i = 0; i < seg->len[s]; i++) x[i] *= inv;
    }
}

int cpu_embed(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dtype, size_t vocab, size_t dim,
              mb_ptr out);
int cpu_add_rmsnorm(mb_device *dev, mb_ptr residual, mb_ptr x, mb_ptr weight, size_t rows, size_t dim, float eps,
                    mb_ptr out);
int cpu_rmsnorm_segments(mb_device *dev, mb_ptr x, size_t rows, size_t ld, const mb_segments *seg, float eps);
int cpu_conv_silu(mb_device *dev, const mb_conv_op *op);
int cpu_gemm(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w, mamba_dtype_t wdtype,
             mb_ptr bias, mb_ptr y, size_t ldy);
int cpu_scan(mb_device *dev, const mb_scan_op *op);
int cpu_scan_backward(mb_device *dev, const mb_scan_bwd_op *op);
/* Rows [r0, r1) of a decoding GEMV: y[i, r] = (accumulate ? y[i, r] : 0) + x[i] . W[r, :]
 * + bias[r], for i < m <= CPU_GEMV_MAX_ROWS; W (n, k) in wdt (F32, F16, BF16, Q8_0), read once
 * for all m rows. Called from inside a parallel region (the mixer step's x_proj). */
typedef struct cpu_gemv_job {
    size_t m, k;
    const float *x;
    size_t ldx;
    const void *w;
    mamba_dtype_t wdt;
    const float *bias;
    float *y;
    size_t ldy;
    int accumulate;
    int portable;   /* the portable kernel even where AVX-512 is there */
    const uint16_t *scales; /* Q8_0: the fp16 scales, (n, k / 32) (wdt Q8_0: w holds int8) */
    const int16_t *xq;      /* Q8_0 on AVX-512: x (m, k) in 16 bits, xs (m, k / 32) its scales */
    const float *xs;
} cpu_gemv_job;
void cpu_gemv_rows(const cpu_gemv_job *job, size_t r0, size_t r1);
int cpu_gemv_fused(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr norm_w, float eps,
                   mb_ptr w, mamba_dtype_t wdt, mb_ptr bias, mb_ptr y, size_t ldy, int accumulate);
int cpu_mixer_step(mb_device *dev, const mb_mixer_step_op *op);
int cpu_fused_supports(mb_device *dev, mb_fused_kind kind, const mb_fused_query *q);
/* The sum of n floats on all threads: the read-bandwidth probe. */
float cpu_sum(mb_device *dev, const float *x, size_t n);
int cpu_argmax(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2, mb_ptr nan_flag);

/* Training (mb_train_ops): cpu_train.c, cpu_train_conv.c, cpu_train_loss.c. */
extern const mb_train_ops cpu_train_ops;
/* 0 when p addresses n 4-byte elements inside its buffer, 4-byte aligned; else
 * MAMBA_ERR_INVALID_ARGUMENT with a message naming what (e.g. "gemm_f32: a"). */
int cpu_need(mb_device *dev, const char *what, mb_ptr p, size_t n);
/* Elements spanned by rows of cols elements ld apart (0 when there are none). */
static inline size_t cpu_span(size_t rows, size_t ld, size_t cols)
{
    if (!rows || !cols) return 0;
    if (ld && rows - 1 > (SIZE_MAX - cols) / ld) return SIZE_MAX; /* more than any buffer holds */
    return (rows - 1) * ld + cols;
}
int cpu_conv_silu_backward(mb_device *dev, const mb_conv_bwd_op *op);
int cpu_cross_entropy(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr labels, float scale,
                      mb_ptr loss, mb_ptr correct);
int cpu_sum_squares(mb_device *dev, mb_ptr x, size_t n, mb_ptr out);

#endif
