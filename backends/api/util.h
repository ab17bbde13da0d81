/* Small helpers every backend uses. Header-only: a backend module must not call into
 * libmamba, whose internal symbols are hidden. */
#ifndef MB_API_UTIL_H
#define MB_API_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "api/backend.h"
#include "api/dtype.h"
#include "mamba.h"

/* What a backend counts for mem_usage. */
typedef struct mb_mem_stats {
    uint64_t current, peak;
} mb_mem_stats;

/* 0 when [offset, offset + bytes) lies inside a buffer of buf_bytes (has_buf: the buffer exists);
 * else MAMBA_ERR_INVALID_ARGUMENT with a message in err. */
static inline int mb_range_check(int has_buf, size_t buf_bytes, size_t offset, size_t bytes, const char *what,
                                 char *err, size_t err_len)
{
    if (has_buf && offset <= buf_bytes && bytes <= buf_bytes - offset) return 0;
    snprintf(err, err_len, "%s of %zu bytes at offset %zu outside a buffer of %zu bytes", what, bytes, offset,
             has_buf ? buf_bytes : 0);
    return MAMBA_ERR_INVALID_ARGUMENT;
}

/* The sizes of a conv op every backend takes, checked before anything is launched: 0 when
 * the op may run (*empty set when it has nothing to do: no batch, channel or step), else a
 * status with a message in err. A width of 0 has no newest tap (the kernels would read tap
 * -1); past 64 the kernels' windows do not fit. */
static inline int mb_conv_check(const mb_conv_op *op, int *empty, char *err, size_t err_len)
{
    *empty = op->batch == 0 || op->channels == 0 || op->len == 0;
    if (op->width == 0) {
        snprintf(err, err_len, "conv: width 0; expected 1..64 taps");
        return MAMBA_ERR_INVALID_ARGUMENT;
    }
    if (op->width > 64) {
        snprintf(err, err_len, "conv: width %zu; at most 64 taps supported", op->width);
        return MAMBA_ERR_UNSUPPORTED;
    }
    return 0;
}

/* Bytes a device holds through its allocations, and the peak since the last reset. */
static inline void mb_mem_add(mb_mem_stats *m, uint64_t bytes)
{
    m->current += bytes;
    if (m->current > m->peak) m->peak = m->current;
}
static inline void mb_mem_sub(mb_mem_stats *m, uint64_t bytes) { m->current -= bytes; }

/* The weight dtypes every backend's GEMM, GEMV and mixer step read. */
static inline int mb_weight_dtype_ok(mamba_dtype_t dt)
{
    return dt == MAMBA_F32 || dt == MAMBA_F16 || dt == MAMBA_BF16;
}

/* The weight dtypes of GEMMs, GEMVs and the embedding: those and Q8_0 (k a multiple of 32). */
static inline int mb_gemm_dtype_ok(mamba_dtype_t dt, size_t k)
{
    return mb_weight_dtype_ok(dt) || (dt == MAMBA_Q8 && k % 32 == 0);
}

/* How a GPU scan splits time: enough chunks that about want_threads channels x chunks run
 * (at_most: no more than want_threads unless one chunk is already more), a chunk at least 16
 * steps, at most 1024 chunks. */
static inline void mb_scan_chunking(size_t batch, size_t dim, size_t len, long long want_threads, int at_most,
                                    int *chunk_len, int *n_chunks)
{
    const long long bd = (long long)batch * (long long)dim, L = (long long)len;
    long long chunks = at_most ? want_threads / bd : (want_threads + bd - 1) / bd;
    if (chunks > (L + 15) / 16) chunks = (L + 15) / 16;
    if (chunks > 1024) chunks = 1024;
    if (chunks < 1) chunks = 1;
    const long long cl = (L + chunks - 1) / chunks;
    *chunk_len = (int)cl;
    *n_chunks = (int)((L + cl - 1) / cl);
}

/* How many slices of the channels a decoding step's x_proj is cut into (>= 1): about four
 * blocks a compute unit over the nd output features times the groups of rows_per_group
 * sequences, at most 8 slices and at least 256 channels a slice, and no more partial sums
 * (slices x batch x nd floats) than scratch_bytes hold. */
static inline int mb_xproj_slices(size_t batch, size_t dim, size_t nd, size_t rows_per_group, size_t compute_units,
                                  size_t scratch_bytes)
{
    const size_t per_split = nd * ((batch + rows_per_group - 1) / rows_per_group);
    size_t ks = (4 * compute_units + per_split - 1) / per_split;
    if (ks > 8) ks = 8;
    if (ks > dim / 256) ks = dim / 256;
    if (ks > scratch_bytes / (batch * nd * sizeof(float))) ks = scratch_bytes / (batch * nd * sizeof(float));
    return ks > 1 ? (int)ks : 1;
}

#endif
