/* The CPU backend's device: host memory, OpenMP threads, OpenBLAS. */
#ifndef MB_CPU_INTERNAL_H
#define MB_CPU_INTERNAL_H

#include "backend.h"
#include "common.h"

struct mb_device {
    int n_threads;
    char err[512];
    float *scratch;        /* f32 copy of a 16-bit weight matrix for GEMM */
    size_t scratch_len;    /* floats */
    mb_mem_stats mem;      /* bytes held through alloc() */
    double timer_start;    /* seconds, monotonic */
};

struct mb_buffer {
    size_t bytes;
    unsigned char *data;
};

static inline void *cpu_at(mb_ptr p) { return p.buf ? p.buf->data + p.offset : (void *)0; }

int cpu_fail(mb_device *dev, int status, const char *fmt, ...);

int cpu_embed(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dtype, size_t dim, mb_ptr out);
int cpu_add_rmsnorm(mb_device *dev, mb_ptr residual, mb_ptr x, mb_ptr weight, size_t rows, size_t dim, float eps,
                    mb_ptr out);
int cpu_conv_silu(mb_device *dev, const mb_conv_op *op);
int cpu_gemm(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w, mamba_dtype_t wdtype,
             mb_ptr bias, mb_ptr y, size_t ldy);
int cpu_scan(mb_device *dev, const mb_scan_op *op);
int cpu_argmax(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2, mb_ptr nan_flag);

#endif
