/*
 * The backend vtable: what the core asks of a device. A backend sees device buffers, shapes
 * and strides, never a checkpoint or a config. Modules (libmamba-opencl.so,
 * libmamba-cuda.so) export one function, MB_BACKEND_ENTRY, returning their vtable.
 *
 * Conventions: activations fp32, time-major; strides in elements; every op is enqueued on the
 * device's one stream/queue in order and may return before it completes (sync() waits).
 * Ops return 0 on success, or a mamba_status_t with a message in the device's error buffer
 * (read through last_error()).
 */
#ifndef MB_BACKEND_H
#define MB_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

#define MB_BACKEND_ABI_VERSION 1
#define MB_BACKEND_ENTRY "mamba_backend_register"

typedef struct mb_device mb_device;   /* a backend's open device (opaque to the core) */
typedef struct mb_buffer mb_buffer;   /* a backend's device allocation                */

/* A position inside a device buffer. */
typedef struct mb_ptr {
    mb_buffer *buf;
    size_t offset;   /* bytes */
} mb_ptr;

typedef struct mb_device_props {
    char name[128];
    uint64_t memory_bytes;
    int compute_units;
    int is_gpu;
    int usable;
    char note[128];
} mb_device_props;

typedef struct mb_open_options {
    int n_threads;
} mb_open_options;

/* Selective scan on device buffers; see mamba_scan_args_t for the meaning of the strides.
 * B/C are grouped (n_groups), A is (dim, N) f32, state (batch, dim, N) f32. */
typedef struct mb_scan_op {
    size_t batch, dim, len, d_state, n_groups;
    mb_ptr u;          ptrdiff_t u_sb, u_st, u_sd;
    mb_ptr delta;      ptrdiff_t delta_sb, delta_st, delta_sd;
    mb_ptr A;
    mb_ptr B;          ptrdiff_t B_sb, B_st, B_sg, B_sn;
    mb_ptr C;          ptrdiff_t C_sb, C_st, C_sg, C_sn;
    mb_ptr D;          /* buf NULL: none */
    mb_ptr z;          ptrdiff_t z_sb, z_st, z_sd;
    mb_ptr delta_bias;
    int delta_softplus;
    mb_ptr state_in;   /* buf NULL: zero */
    mb_ptr out;        ptrdiff_t out_sb, out_st, out_sd;
    mb_ptr state_out;  /* buf NULL: not written; may equal state_in */
} mb_scan_op;

/* Causal depthwise conv along time, + bias, then SiLU.
 * x: element [b, t, c] at x[b*x_sb + t*x_st + c]; out likewise with out_sb/out_st.
 * weight (channels, width) f32; bias (channels) f32 or none.
 * state: (batch, width-1, channels) f32, the last width-1 inputs before this call; read
 * then overwritten with the last width-1 inputs after it. */
typedef struct mb_conv_op {
    size_t batch, len, channels, width;
    mb_ptr x;          ptrdiff_t x_sb, x_st;
    mb_ptr weight;
    mb_ptr bias;
    mb_ptr state;
    mb_ptr out;        ptrdiff_t out_sb, out_st;
} mb_conv_op;

typedef struct mb_backend {
    int abi_version;
    const char *name;

    /* Enumeration; may be called without an open device. A negative count means the
     * backend's runtime is missing; note says why. */
    int (*device_count)(char *note, size_t note_len);
    int (*device_props)(int index, mb_device_props *props);

    int (*open)(int index, const mb_open_options *opts, mb_device **out, char *err,
                size_t err_len);
    void (*close)(mb_device *dev);
    const char *(*last_error)(mb_device *dev);

    int (*alloc)(mb_device *dev, size_t bytes, mb_buffer **out);
    void (*free)(mb_device *dev, mb_buffer *buf);
    int (*upload)(mb_device *dev, mb_ptr dst, const void *src, size_t bytes);
    int (*download)(mb_device *dev, void *dst, mb_ptr src, size_t bytes);
    int (*fill_zero)(mb_device *dev, mb_ptr dst, size_t bytes);
    int (*sync)(mb_device *dev);

    /* out[r, :] = table[ids[r], :] as f32; ids int32 on the device; table (vocab, dim). */
    int (*embed)(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dtype,
                 size_t dim, mb_ptr out);
    /* residual[r] += x[r] (x.buf NULL: skip); out[r] = rmsnorm(residual[r]) * weight.
     * All f32; rows contiguous with leading dimension dim. */
    int (*add_rmsnorm)(mb_device *dev, mb_ptr residual, mb_ptr x, mb_ptr weight, size_t rows,
                       size_t dim, float eps, mb_ptr out);
    /* y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]; x, y f32 with leading dims lda, ldy;
     * W (n, k) contiguous in wdtype; bias f32 or none. */
    int (*gemm)(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w,
                mamba_dtype_t wdtype, mb_ptr bias, mb_ptr y, size_t ldy);
    int (*conv_silu)(mb_device *dev, const mb_conv_op *op);
    int (*scan)(mb_device *dev, const mb_scan_op *op);

    /* ---- measurement (mamba-bench) ---- */
    /* dst = src, bytes of device memory. */
    int (*copy)(mb_device *dev, mb_ptr dst, mb_ptr src, size_t bytes);
    /* out[0] = sum of n floats of src: a read-bandwidth probe. */
    int (*read_sum)(mb_device *dev, mb_ptr src, size_t n, mb_ptr out);
    /* Time the work enqueued between start and stop, on the device's own clock where it has
     * one (events), in milliseconds; stop waits for that work. */
    int (*timer_start)(mb_device *dev);
    int (*timer_stop)(mb_device *dev, double *ms);
    /* Bytes allocated through alloc(): now and the peak since the last reset. */
    void (*memory)(mb_device *dev, uint64_t *current, uint64_t *peak);
    void (*reset_peak)(mb_device *dev);

    /* ---- optional (NULL when absent) ---- */
    /* Record the ops enqueued between begin and end as a graph that launch replays with the
     * same buffers; end returns non-zero, with no graph, if anything in between failed or
     * cannot be recorded (the core then runs those ops directly). */
    int (*graph_begin)(mb_device *dev);
    int (*graph_end)(mb_device *dev, void **graph);
    int (*graph_launch)(mb_device *dev, void *graph);
    void (*graph_free)(mb_device *dev, void *graph);
} mb_backend;

typedef const mb_backend *(*mb_backend_register_fn)(int abi_version);

#endif /* MB_BACKEND_H */
