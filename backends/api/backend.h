/*
 * The backend vtable: what the core asks of a device, in four tables by concern.
 *
 *   mb_device_ops  devices, memory, transfers, synchronization (required)
 *   mb_model_ops   the ops one Mamba layer needs (required)
 *   mb_fused_ops   optional fused ops and recorded graphs, behind supports() (may be NULL)
 *   mb_probe_ops   measurement probes for mamba-bench (required)
 *   mb_train_ops   what training adds: transposed GEMMs, the backward of each layer op,
 *                  cross-entropy, AdamW (may be NULL: that backend cannot train)
 *
 * A backend sees device buffers, shapes and strides, never a checkpoint or a config; it
 * includes only this layer (backends/api/) and mamba.h, never a core header. Modules
 * (libmamba-opencl.so, libmamba-cuda.so) export one function, MB_BACKEND_ENTRY, that returns
 * their vtable for the ABI version the core asks for (NULL for any other).
 *
 * Conventions: activations fp32, time-major; strides in elements. Every op is enqueued on the
 * device's one stream/queue in order and may return before the device has run it (sync()
 * waits), with one exception: upload returns only once the host source may be reused (the
 * core refills its staging buffers right after). Ops return 0 on success, or a mamba_status_t
 * with a message in the device's error buffer (read through last_error()).
 */
#ifndef MB_API_BACKEND_H
#define MB_API_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

#define MB_BACKEND_ABI_VERSION 6
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
    uint64_t max_alloc_bytes;   /* the largest single allocation (0: memory_bytes)             */
    int compute_units;
    int is_gpu;
    int usable;
    char note[128];
} mb_device_props;

/* How fp32 GEMMs run, where a backend has a choice (mamba_context_options_t.gemm). */
typedef enum mb_gemm_mode {
    MB_GEMM_DEFAULT = 0,   /* the backend's fp32-accurate best (CUDA: 3xTF32 tensor cores)  */
    MB_GEMM_VENDOR,        /* the vendor library's fp32 GEMM (cuBLAS SGEMM, CLBlast, BLAS)  */
    MB_GEMM_TF32,          /* plain TF32 tensor cores: faster, about 1e-3 relative error    */
} mb_gemm_mode;

typedef struct mb_open_options {
    int n_threads;
    int portable_kernels;  /* CPU: the portable C kernels only, no AVX-512 intrinsics        */
    mb_gemm_mode gemm;
    /* 16-bit weights: 0: GEMMs of more rows than a decoding step's take 16-bit inputs (the
     * weights' dtype) on the tensor cores, fp32 sums and output; 1: fp32 arithmetic */
    int compute_f32;
    int profile;           /* report each kernel's device time through log (OpenCL)          */
    /* where a backend reports what is not an error (profiles, notes); may be NULL */
    void (*log)(void *user, mamba_log_level_t level, const char *message);
    void *log_user;
} mb_open_options;

typedef struct mb_device_ops {
    /* Enumeration; may be called without an open device. A negative count means the
     * backend's runtime is missing; note says why. */
    int (*device_count)(char *note, size_t note_len);
    int (*device_props)(int index, mb_device_props *props);

    int (*open)(int index, const mb_open_options *opts, mb_device **out, char *err, size_t err_len);
    void (*close)(mb_device *dev);
    const char *(*last_error)(mb_device *dev);

    int (*alloc)(mb_device *dev, size_t bytes, mb_buffer **out);
    void (*free)(mb_device *dev, mb_buffer *buf);
    /* Returns once src may be reused (see the conventions above). */
    int (*upload)(mb_device *dev, mb_ptr dst, const void *src, size_t bytes);
    /* Returns once dst holds the bytes. */
    int (*download)(mb_device *dev, void *dst, mb_ptr src, size_t bytes);
    int (*fill_zero)(mb_device *dev, mb_ptr dst, size_t bytes);
    /* dst = src, bytes of device memory (the ranges do not overlap). */
    int (*copy)(mb_device *dev, mb_ptr dst, mb_ptr src, size_t bytes);
    int (*sync)(mb_device *dev);
    /* Bytes allocated through alloc() (and internal scratch): now, and the peak since the
     * last reset_peak (which sets peak = current). */
    void (*mem_usage)(mb_device *dev, uint64_t *current, uint64_t *peak);
    void (*mem_reset_peak)(mb_device *dev);

    /* ---- optional (NULL when absent) ---- */
    /* Page-locked host memory, which the device copies into at the bus's full speed. */
    int (*host_alloc)(mb_device *dev, size_t bytes, void **out);
    void (*host_free)(mb_device *dev, void *p);
    /* Copy bytes of src into dst (from host_alloc) once the work enqueued before has run,
     * while the work enqueued after runs; sync() waits for the copies too. */
    int (*download_async)(mb_device *dev, void *dst, mb_ptr src, size_t bytes);
    /* The work enqueued after this waits until the download_async copies enqueued before
     * have read their sources (so that it may overwrite them). */
    int (*download_fence)(mb_device *dev);
    /* Mark i (< MB_DOWNLOAD_MARKS) set after the download_async copies enqueued so far, and the
     * host's wait until they have landed (the copies after the mark may still run): a caller
     * reads the first part of a download while the rest crosses the bus. */
    int (*download_mark)(mb_device *dev, unsigned i);
    int (*download_wait_mark)(mb_device *dev, unsigned i);
    /* height rows of width bytes, row i at dst + i * dst_pitch from src + i * src_pitch (rows
     * that do not overlap), or zeroed: what copy and fill_zero would do in height calls, in one
     * (a sequence's state is a row per layer: 96 calls of the 1.4b's 48 layers took 0.4 ms of
     * a server's loop for each finished request). */
    int (*copy_2d)(mb_device *dev, mb_ptr dst, size_t dst_pitch, mb_ptr src, size_t src_pitch, size_t width,
                   size_t height);
    int (*fill_zero_2d)(mb_device *dev, mb_ptr dst, size_t pitch, size_t width, size_t height);
} mb_device_ops;

#define MB_DOWNLOAD_MARKS 8u

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

/* The selective scan's backward (gradients of sum(out * dout)), recomputing the states from
 * states kept at chunk boundaries. fwd holds the forward's inputs (its out and state_out are
 * not used). dout has out's shape with its own strides. Every gradient is optional (buf NULL:
 * not computed); one whose input is absent (D, z, delta_bias) must be absent too:
 *   du, ddelta, dz   u's, delta's, z's strides; every (b, t, d) its own element
 *   dB, dC           B's and C's strides. A zero stride broadcasts (B_st = 0: constant over
 *                    time; B_sb = 0: shared by the batch; B_sg = 0: by every channel), and the
 *                    element receives the sum over all that read it; nonzero strides must not
 *                    make distinct (b, t, g, n) overlap. Only the addressed elements are written.
 *   dA (dim, N), dD, ddelta_bias (dim); dstate_in (batch, dim, N): the gradient of state_in
 * dstate_out (batch, dim, N) or none: the cotangent of the final state. Sums over batch,
 * time and channels run in a fixed order: the same inputs give bitwise the same gradients on
 * the same device and thread count. */
typedef struct mb_scan_bwd_op {
    mb_scan_op fwd;
    mb_ptr dout;       ptrdiff_t dout_sb, dout_st, dout_sd;
    mb_ptr dstate_out;
    mb_ptr du, ddelta, dz, dA, dB, dC, dD, ddelta_bias, dstate_in;
} mb_scan_bwd_op;

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

/* The segments of a row that rmsnorm_segments normalizes: [0, len[0]), [len[0], len[0] +
 * len[1]) ... for n (<= 4) segments. */
typedef struct mb_segments {
    size_t n;
    size_t len[4];
} mb_segments;

typedef struct mb_model_ops {
    /* out[r, :] = table[ids[r], :] as f32; ids int32 on the device; table (vocab, dim) in dtype
     * (Q8_0: its scales follow the values, see api/dtype.h, hence vocab). */
    int (*embed)(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dtype, size_t vocab,
                 size_t dim, mb_ptr out);
    /* residual[r] += x[r] (x.buf NULL: skip); out[r] = rmsnorm(residual[r]) * weight.
     * All f32; rows contiguous with leading dimension dim. */
    int (*add_rmsnorm)(mb_device *dev, mb_ptr residual, mb_ptr x, mb_ptr weight, size_t rows, size_t dim,
                       float eps, mb_ptr out);
    /* In place, for r < rows and each segment s of row r (ld floats apart):
     * x[s] = x[s] / sqrt(mean(x[s]^2) + eps), with no weight (Falcon-Mamba's dt, B and C). */
    int (*rmsnorm_segments)(mb_device *dev, mb_ptr x, size_t rows, size_t ld, const mb_segments *seg, float eps);
    /* y[m, n] = sum_k x[m, k] * W[n, k] + bias[n]; x, y f32 with leading dims lda, ldy;
     * W (n, k) contiguous in wdtype (F32, F16, BF16, or Q8_0 with k a multiple of 32: api/dtype.h);
     * bias f32 or none. */
    int (*gemm)(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w, mamba_dtype_t wdtype,
                mb_ptr bias, mb_ptr y, size_t ldy);
    int (*conv_silu)(mb_device *dev, const mb_conv_op *op);
    int (*scan)(mb_device *dev, const mb_scan_op *op);
    /* ids[r] = the index of the largest of logits[r * vocab .. + vocab) (f32), the first on
     * ties, as int32, for r < rows, and the same into ids2 unless ids2.buf is NULL; *nan_flag
     * (int32) is set to 1 when a row holds a NaN and is otherwise left as it is. Greedy
     * decoding without sending logits to the host. */
    int (*argmax)(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2,
                  mb_ptr nan_flag);
    /* See mb_scan_bwd_op. NULL: the backend has no backward (the core answers
     * MAMBA_ERR_UNSUPPORTED). Working memory: mb_scan_bwd_plan (api/util.h). */
    int (*scan_backward)(mb_device *dev, const mb_scan_bwd_op *op);
} mb_model_ops;

/* One time step (T = 1) of a Mamba mixer between in_proj and out_proj, for batch rows b:
 *   x = xz[b, 0:dim], z = xz[b, dim:2 dim]
 *   xc = silu(conv_b + sum_k conv_w[:, k] * window_k), window = (conv_state[b], x); the
 *        conv state then drops its oldest input and takes x
 *   xdbl = xc x_proj^T                          (dt_rank + 2 d_state)
 *   with bc_norm (Falcon-Mamba): each of xdbl's dt, B and C segments divided by its root
 *        mean square (+ bc_norm_eps under the root), no weight
 *   delta = softplus(xdbl[0:dt_rank] dt_proj^T + dt_bias)
 *   h = exp(delta A) h + delta B xc,  y = (C . h + D xc) silu(z),  B, C = the rest of xdbl
 * xz (batch, 2 dim) with row stride xz_sb, y (batch, dim) with y_sb, xdbl (batch, dt_rank +
 * 2 d_state) contiguous, all f32; xdbl and scratch are working space whose content afterwards
 * is unspecified; conv_state (batch, width-1, dim) and ssm_state (batch, dim, d_state) f32,
 * updated in place; x_proj (dt_rank + 2 d_state, dim) and dt_proj (dim, dt_rank) in their
 * stored dtype; conv_w (dim, width), A (dim, d_state), conv_b, dt_bias, D (dim) f32 (conv_b and
 * D may be absent), these vectors in one buffer. The generic ops compute the same thing in
 * five or six launches. */
typedef struct mb_mixer_step_op {
    size_t batch, dim, d_state, dt_rank, width;
    mb_ptr xz;        size_t xz_sb;
    mb_ptr conv_w, conv_b, conv_state;
    mb_ptr x_proj;    mamba_dtype_t x_proj_dt;
    mb_ptr dt_proj;   mamba_dtype_t dt_proj_dt;
    mb_ptr dt_bias, A, D;
    mb_ptr ssm_state;
    mb_ptr xdbl;
    mb_ptr y;         size_t y_sb;
    mb_ptr y16;       mamba_dtype_t y16_dt;   /* y also rounded to F16/BF16, (batch, dim)
                                                 contiguous, for gemm_x16; buf NULL: none */
    mb_ptr scratch;   size_t scratch_bytes;   /* workspace the backend may use, or none */
    int bc_norm;      float bc_norm_eps;
} mb_mixer_step_op;

/* What supports() is asked about. */
typedef enum mb_fused_kind {
    MB_FUSED_GRAPHS,       /* graph_begin .. graph_free                                        */
    MB_FUSED_MIXER_STEP,   /* mixer_step for q->rows sequences of the shape in q                */
    MB_FUSED_GEMV,         /* gemv_fused for q->rows rows, q->n x q->k in q->wdtype, q->norm     */
    /* not an op: 1 when the model ops' gemm of q->rows rows, q->n x q->k weights in q->wdtype,
     * multiplies 16-bit inputs (the weights' dtype, fp32 sums), 0 when fp32 arithmetic; asked
     * for what mamba_model_compute_dtype reports */
    MB_FUSED_GEMM16,
} mb_fused_kind;

typedef struct mb_fused_query {
    size_t rows;                              /* batch of the step, or rows of the GEMV        */
    size_t dim, d_state, dt_rank, width;      /* MIXER_STEP                                     */
    mamba_dtype_t x_proj_dt, dt_proj_dt;      /* MIXER_STEP                                     */
    int bc_norm;                              /* MIXER_STEP: Falcon-Mamba's dt/B/C norms        */
    size_t n, k;                              /* GEMV                                           */
    mamba_dtype_t wdtype;                     /* GEMV                                           */
    int norm;                                 /* GEMV: with the input's RMSNorm                 */
} mb_fused_query;

typedef struct mb_fused_ops {
    /* 1 when the op of kind takes the shape in q (every entry of that kind is then present),
     * 0 when not. The core asks once per shape and keeps the answer: an op it has been told
     * takes a shape must not refuse it. */
    int (*supports)(mb_device *dev, mb_fused_kind kind, const mb_fused_query *q);
    /* Record the ops enqueued between begin and end as a graph that launch replays with the
     * same buffers; end returns non-zero, with no graph, if anything in between failed or
     * cannot be recorded (the core then runs those ops directly). */
    int (*graph_begin)(mb_device *dev);
    int (*graph_end)(mb_device *dev, void **graph);
    int (*graph_launch)(mb_device *dev, void *graph);
    void (*graph_free)(mb_device *dev, void *graph);
    /* See mb_mixer_step_op. */
    int (*mixer_step)(mb_device *dev, const mb_mixer_step_op *op);
    /* A decoding GEMV (a few rows) with the RMSNorm of its input and the residual add folded in:
     *   xn[i] = norm_w.buf ? x[i] / sqrt(mean(x[i]^2) + eps) * norm_w : x[i]   (over k)
     *   y[i, :] = (accumulate ? y[i, :] : 0) + xn[i] W^T + bias */
    int (*gemv_fused)(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr norm_w, float eps,
                      mb_ptr w, mamba_dtype_t wdtype, mb_ptr bias, mb_ptr y, size_t ldy, int accumulate);
    /* 16-bit activations for GEMMs that multiply 16-bit inputs (MB_FUSED_GEMM16): the
     * producer writes the input already rounded, so no rounding pass precedes the GEMM.
     * add_rmsnorm16: add_rmsnorm with out16 (rows, dim) contiguous in dt (F16 or BF16) instead
     * of an f32 out; gemm_x16: the model ops' gemm from x16 (m, k; leading dimension lda) in
     * wdtype. Both present or both NULL. */
    int (*add_rmsnorm16)(mb_device *dev, mb_ptr residual, mb_ptr x, mb_ptr weight, size_t rows, size_t dim, float eps,
                         mb_ptr out16, mamba_dtype_t dt);
    int (*gemm_x16)(mb_device *dev, size_t m, size_t n, size_t k, mb_ptr x16, size_t lda, mb_ptr w,
                    mamba_dtype_t wdtype, mb_ptr bias, mb_ptr y, size_t ldy);
} mb_fused_ops;

/* ---- training (mb_train_ops) -------------------------------------------------------------
 * All f32, row-major. Every sum runs in an order fixed by the shapes alone (no floating-point
 * atomics): the same inputs give bitwise the same results on the same device and thread count.
 * "accumulated" outputs are added to (+=) and never cleared by the op: the trainer zeroes its
 * gradients before the first micro-batch of a step and every micro-batch adds its share. */

/* The backward of conv_silu from a zero initial state (a training sequence starts empty):
 * pre[b, t, c] = bias[c] + sum_k weight[c, k] x[b, t - (width-1) + k, c] (x = 0 before t = 0),
 * out = silu(pre). Given dout (the gradient of out) the op recomputes pre and writes
 *   dx[b, t, c]   = sum_k weight[c, k] g[b, t + (width-1) - k, c]    (overwritten; g = 0 past len)
 *   dweight[c, k] += sum_{b, t} g[b, t, c] x[b, t - (width-1) + k, c]   (accumulated)
 *   dbias[c]     += sum_{b, t} g[b, t, c]                              (accumulated; buf NULL: none)
 * where g = dout * silu'(pre), silu'(p) = s (1 + p (1 - s)), s = sigmoid(p). */
typedef struct mb_conv_bwd_op {
    size_t batch, len, channels, width;
    mb_ptr x;          ptrdiff_t x_sb, x_st;
    mb_ptr weight;     /* (channels, width) */
    mb_ptr bias;       /* (channels) or none */
    mb_ptr dout;       ptrdiff_t dout_sb, dout_st;
    mb_ptr dx;         ptrdiff_t dx_sb, dx_st;
    mb_ptr dweight, dbias;
} mb_conv_bwd_op;

/* AdamW on n parameters, as torch.optim.AdamW (decoupled weight decay), at step >= 1:
 *   norm  = sqrt(norm_sq[0]) * grad_scale            (norm_sq: one f32 on the device, from
 *                                                     sum_squares over the whole gradient)
 *   clip  = max_norm > 0 ? min(1, max_norm / (norm + 1e-6)) : 1
 *   g     = grad * grad_scale * clip
 *   m     = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
 *   param = param (1 - lr weight_decay) - (lr / (1 - beta1^step)) m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * grad is left as it is. norm_sq.buf NULL: no clipping (clip = 1). The clip factor is computed
 * on the device, so a step needs no host round trip. */
typedef struct mb_adamw_op {
    size_t n;
    mb_ptr param, grad, m, v;
    mb_ptr norm_sq;
    float lr, beta1, beta2, eps, weight_decay, max_norm, grad_scale;
    long step;
} mb_adamw_op;

typedef struct mb_train_ops {
    /* c = alpha op(a) op(b) + beta c, row-major: op(a) is m x k (a stored m x k with leading
     * dimension lda, or k x m when trans_a), op(b) is k x n (b stored k x n, or n x k when
     * trans_b), c is m x n with leading dimension ldc. beta 0: c is not read (may hold NaN). */
    int (*gemm_f32)(mb_device *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, mb_ptr a,
                    size_t lda, mb_ptr b, size_t ldb, float beta, mb_ptr c, size_t ldc);
    /* The backward of out[r] = x[r] / rms(x[r]) * w, rms(x) = sqrt(mean(x^2) + eps), over rows
     * of dim contiguous floats, given dy (rows, dim):
     *   dx[r] = (w dy[r] - xhat mean(w dy[r] xhat)) / rms(x[r]),  xhat = x[r] / rms(x[r])
     *           (accumulate: added to dx, else written)
     *   dw   += sum_r dy[r] xhat[r]  (accumulated) */
    int (*rmsnorm_backward)(mb_device *dev, mb_ptr x, mb_ptr w, mb_ptr dy, size_t rows, size_t dim, float eps,
                            mb_ptr dx, int accumulate, mb_ptr dw);
    int (*conv_silu_backward)(mb_device *dev, const mb_conv_bwd_op *op);
    /* dtable[ids[r], :] += dy[r, :] for r < rows (ids int32 on the device, each < vocab),
     * rows added in increasing r for every row of the table. */
    int (*embed_backward)(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr dy, size_t dim, mb_ptr dtable,
                          size_t vocab);
    /* Token cross-entropy, in place. For r < rows with labels[r] >= 0 (int32; < 0: ignored;
     * each < vocab): loss[r] = logsumexp(logits[r]) - logits[r][labels[r]], correct[r] = 1 when
     * labels[r] is the argmax of logits[r] (the first index on ties) else 0, and logits[r] is
     * replaced by scale (softmax(logits[r]) - onehot(labels[r])). An ignored row gets loss 0,
     * correct 0 and a zero gradient row. loss f32 (rows), correct int32 (rows). */
    int (*cross_entropy)(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr labels, float scale,
                         mb_ptr loss, mb_ptr correct);
    /* out[0] = sum_i x[i]^2, i < n (one f32). */
    int (*sum_squares)(mb_device *dev, mb_ptr x, size_t n, mb_ptr out);
    int (*adamw)(mb_device *dev, const mb_adamw_op *op);
    /* y[i] += alpha x[i], i < n */
    int (*axpy)(mb_device *dev, size_t n, float alpha, mb_ptr x, mb_ptr y);
    /* y[i] = -exp(x[i]), i < n: Mamba's A from the A_log parameter */
    int (*neg_exp)(mb_device *dev, size_t n, mb_ptr x, mb_ptr y);
    /* y[i] += x[i] w[i], i < n: dA_log += dA * A */
    int (*mul_acc)(mb_device *dev, size_t n, mb_ptr x, mb_ptr w, mb_ptr y);
} mb_train_ops;

/* Measurement probes: device-side work that mamba-bench times with the device's own clock. */
typedef struct mb_probe_ops {
    /* out[0] = sum of n floats of src: a read-bandwidth probe. out has 256 bytes, which the
     * backend may use as working space (OpenCL: partial sums). */
    int (*read_sum)(mb_device *dev, mb_ptr src, size_t n, mb_ptr out);
    /* Time the work enqueued between start and stop, on the device's own clock where it has
     * one (events), in milliseconds; stop waits for that work. */
    int (*timer_start)(mb_device *dev);
    int (*timer_stop)(mb_device *dev, double *ms);
} mb_probe_ops;

typedef struct mb_backend {
    int abi_version;
    const char *name;
    const mb_device_ops *device;
    const mb_model_ops *ops;
    const mb_fused_ops *fused;   /* NULL: no fused ops, no graphs */
    const mb_probe_ops *probe;
    const mb_train_ops *train;   /* NULL: the backend cannot train */
} mb_backend;

typedef const mb_backend *(*mb_backend_register_fn)(int abi_version);

/* The CPU backend, built into libmamba (backends/cpu/). */
const mb_backend *mb_cpu_backend(void);

#endif /* MB_API_BACKEND_H */
