/* The OpenCL backend's training ops (mb_train_ops): argument checks, launch geometry and the
 * partial sums' scratch for the kernels of train_kernels.cl, a program built at the first op
 * that needs it; gemm_f32 through CLBlast. Every reduction has a geometry that the shapes and
 * the device's work-group limit fix: no atomics, the same results on every run. */
#include <clblast_c.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "opencl_internal.h"

#define M(x) sizeof(cl_mem), (const void *)&(x)
#define U(x) sizeof(cl_ulong), (const void *)&(x)
#define I(x) sizeof(cl_int), (const void *)&(x)
#define F(x) sizeof(cl_float), (const void *)&(x)

/* Per-block partial sums (RMSNorm's dw, the conv's dweight and dbias): blocks of at least
 * BLOCK_ROWS rows and at most MAX_BLOCKS blocks, longer inputs getting longer blocks; a second
 * kernel adds the blocks in order. The geometry depends on the shapes only. */
#define BLOCK_ROWS 64
#define MAX_BLOCKS 4096
/* work-groups of sum_squares' first pass at most; each item sums at least SUMSQ_PER_ITEM */
#define SUMSQ_GROUPS 1024
#define SUMSQ_PER_ITEM 32
/* embed_backward's vocabulary slices at most (each walks every row) */
#define EMBED_SLICES 64
/* CLBlast indexes its matrices with 32-bit ints */
#define CLBLAST_MAX_INDEX 0x7fffffffu

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }
static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* The training program and its kernels, once per device. Reductions take a power-of-two
 * work-group: the largest of at most 256 that every training kernel accepts. */
static int train_program(mb_device *d)
{
    if (d->train_prog) return 0;
    cl_int e;
    const char *src[2] = {mb_opencl_common_kernels, mb_opencl_train_kernels};
    cl_program prog = clCreateProgramWithSource(d->ctx, 2, src, NULL, &e);
    OCL_CHECK(d, e, "training kernels: clCreateProgramWithSource");
    e = clBuildProgram(prog, 1, &d->device, "-cl-std=CL1.2", NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[768] = "";
        clGetProgramBuildInfo(prog, d->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        clReleaseProgram(prog);
        return ocl_fail(d, MAMBA_ERR_BACKEND, "building the OpenCL training kernels failed (%s): %s",
                        ocl_error_name(e), log);
    }
    size_t local = d->max_wg < 256 ? d->max_wg : 256;
    int rc = 0;
    for (int i = K_TRAIN_FIRST; i < K_COUNT && !rc; i++) {
        d->k[i] = clCreateKernel(prog, ocl_kernel_names[i], &e);
        if (e != CL_SUCCESS) {
            d->k[i] = NULL;
            rc = ocl_fail(d, MAMBA_ERR_BACKEND, "training kernel %s: %s", ocl_kernel_names[i], ocl_error_name(e));
            break;
        }
        size_t kwg = 0;
        if (clGetKernelWorkGroupInfo(d->k[i], d->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg, &kwg, NULL) ==
                CL_SUCCESS &&
            kwg < local)
            local = kwg;
    }
    size_t pow2 = 1;
    while (pow2 * 2 <= local) pow2 *= 2;
    /* the 2-D kernels run 64 items a work-group */
    if (!rc && pow2 < 64)
        rc = ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "training kernels: work-groups of %zu items at most; 64 needed", local);
    if (rc) {
        for (int i = K_TRAIN_FIRST; i < K_COUNT; i++)
            if (d->k[i]) {
                clReleaseKernel(d->k[i]);
                d->k[i] = NULL;
            }
        clReleaseProgram(prog);
        return rc;
    }
    d->train_local = pow2;
    d->train_prog = prog;
    return 0;
}

static int launch(mb_device *d, int k, cl_uint dims, const size_t *global, const size_t *local, const char *what)
{
    cl_event ev = NULL;
    OCL_CHECK(d, clEnqueueNDRangeKernel(d->q, d->k[k], dims, NULL, global, local, 0, NULL, d->profile ? &ev : NULL), what);
    if (ev) ocl_profile(d, k, ev);
    return 0;
}

/* A grid-stride launch over n elements: at most 64 work-groups a compute unit. */
static int launch_flat(mb_device *d, int k, size_t n, const char *what)
{
    const size_t local = d->train_local, cap = local * 64 * (d->compute_units ? d->compute_units : 1);
    size_t global = round_up(n, local);
    if (global > cap) global = cap;
    return launch(d, k, 1, &global, &local, what);
}

/* p holds n floats (or int32s) from its offset: present, 4-byte aligned, inside its buffer. */
static int check_ptr(mb_device *d, mb_ptr p, size_t n, const char *op, const char *name)
{
    if (!p.buf) return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s has no buffer", op, name);
    if (p.offset % 4)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s at byte offset %zu, expected a multiple of 4", op, name,
                        p.offset);
    if (n > SIZE_MAX / 4)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s of %zu elements is too large", op, name, n);
    char what[96];
    snprintf(what, sizeof what, "%s: %s", op, name);
    return mb_range_check(1, p.buf->bytes, p.offset, n * 4, what, d->err, sizeof d->err);
}

/* n1 * n2 elements, or a message when the product does not fit. */
static int product(mb_device *d, size_t n1, size_t n2, size_t *out, const char *op, const char *name)
{
    *out = 0;
    if (n2 && n1 > SIZE_MAX / 4 / n2)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s of %zu x %zu elements is too large", op, name, n1, n2);
    *out = n1 * n2;
    return 0;
}

/* p addresses [b, t, c] at p + b sb + t st + c for b < nb, t < nt, c < nc (each >= 1): every
 * addressed element inside the buffer, whatever the strides' signs. */
static int check_strided(mb_device *d, mb_ptr p, size_t nb, ptrdiff_t sb, size_t nt, ptrdiff_t st, size_t nc,
                         const char *op, const char *name)
{
    int rc = check_ptr(d, p, 0, op, name);
    if (rc) return rc;
    const long long lim = LLONG_MAX / 8;
    const long long n[2] = {(long long)nb - 1, (long long)nt - 1}, s[2] = {sb, st};
    long long lo = 0, hi = (long long)nc;
    for (int i = 0; i < 2; i++) {
        const long long as = s[i] < 0 ? -s[i] : s[i];
        if (n[i] > 0 && as > lim / n[i])
            return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: %s strides (%td, %td) address past any buffer", op, name,
                            sb, st);
        if (s[i] < 0)
            lo += s[i] * n[i];
        else
            hi += s[i] * n[i];
    }
    const long long base = (long long)(p.offset / 4);
    if (base + lo < 0 || (unsigned long long)(base + hi) * 4 > p.buf->bytes)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT,
                        "%s: %s (%zu x %zu x %zu, strides %td, %td) at byte offset %zu reaches elements %lld..%lld "
                        "outside a buffer of %zu bytes",
                        op, name, nb, nt, nc, sb, st, p.offset, base + lo, base + hi - 1, p.buf->bytes);
    return 0;
}

/* ---- gemm_f32 ---- */

/* A matrix as CLBlast takes it: a buffer and an element offset. CLBlast indexes with 32-bit
 * ints, so a matrix that does not start within the buffer's first base-address alignment gets
 * a sub-buffer from the aligned address just before it: what counts is then the matrix's
 * extent, not its position (the trainer keeps every parameter and gradient in one buffer). */
typedef struct window {
    cl_mem mem, sub;
    size_t off;
} window;

static int open_window(mb_device *d, mb_ptr p, size_t rows, size_t cols, size_t ld, const char *name, window *w)
{
    w->sub = NULL;
    size_t span;
    int rc = product(d, rows - 1, ld, &span, "gemm_f32", name);
    if (!rc && span > SIZE_MAX / 4 - cols)
        rc = ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: %s of %zu x %zu is too large", name, rows, cols);
    if (rc) return rc;
    span += cols;
    if ((rc = check_ptr(d, p, span, "gemm_f32", name)) != 0) return rc;
    w->mem = p.buf->mem;
    w->off = p.offset / 4;
    if (p.offset >= d->base_align) {
        const size_t origin = p.offset / d->base_align * d->base_align;
        const cl_buffer_region r = {origin, p.offset - origin + span * 4};
        cl_int e;
        w->sub = clCreateSubBuffer(p.buf->mem, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &e);
        if (e != CL_SUCCESS) {
            w->sub = NULL;
            return ocl_fail(d, MAMBA_ERR_BACKEND, "gemm_f32: a sub-buffer of %s at byte %zu: %s", name, origin,
                            ocl_error_name(e));
        }
        w->mem = w->sub;
        w->off = (p.offset - origin) / 4;
    }
    if (w->off + span > CLBLAST_MAX_INDEX)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "gemm_f32: %s of %zu x %zu (leading dimension %zu) spans %zu elements; "
                        "CLBlast indexes at most 2^31", name, rows, cols, ld, span);
    return 0;
}

static void close_window(window *w)
{
    /* OpenCL keeps a sub-buffer alive until the commands that use it have run */
    if (w->sub) clReleaseMemObject(w->sub);
    w->sub = NULL;
}

/* c = beta c over m x n (k = 0: no product to add) */
static int scale_c(mb_device *d, size_t m, size_t n, float beta, mb_ptr c, size_t ldc)
{
    size_t span;
    int rc = product(d, m - 1, ldc, &span, "gemm_f32", "c");
    if (!rc) rc = check_ptr(d, c, span + n, "gemm_f32", "c");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    cl_mem cm = ocl_mem(c);
    cl_ulong co = c.offset / 4, ld = ldc, mu = m, nu = n;
    rc = ocl_args(d, d->k[K_T_SCALE], "scale_matrix", 6, M(cm), U(co), U(ld), U(mu), U(nu), F(beta));
    const size_t local[2] = {64, 1}, global[2] = {round_up(n, 64), m};
    return rc ? rc : launch(d, K_T_SCALE, 2, global, local, "gemm_f32: scale kernel");
}

static int ocl_gemm_f32(mb_device *d, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, mb_ptr a,
                        size_t lda, mb_ptr b, size_t ldb, float beta, mb_ptr c, size_t ldc)
{
    if (m == 0 || n == 0) return 0;
    if (ldc < n) return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: ldc %zu below n %zu", ldc, n);
    if (k == 0) return scale_c(d, m, n, beta, c, ldc);
    /* op(a) m x k is stored k x m when transposed; op(b) k x n stored n x k */
    const size_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k, b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    if (lda < a_cols)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: lda %zu below a's %zu columns (trans_a %d)", lda,
                        a_cols, trans_a);
    if (ldb < b_cols)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "gemm_f32: ldb %zu below b's %zu columns (trans_b %d)", ldb,
                        b_cols, trans_b);
    window wa = {0}, wb = {0}, wc = {0};
    int rc = open_window(d, a, a_rows, a_cols, lda, "a", &wa);
    if (!rc) rc = open_window(d, b, b_rows, b_cols, ldb, "b", &wb);
    if (!rc) rc = open_window(d, c, m, n, ldc, "c", &wc);
    if (!rc) {
        /* beta 0: CLBlast's kernels store alpha a b without reading c */
        const CLBlastStatusCode st =
            CLBlastSgemm(CLBlastLayoutRowMajor, trans_a ? CLBlastTransposeYes : CLBlastTransposeNo,
                         trans_b ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, alpha, wa.mem, wa.off, lda,
                         wb.mem, wb.off, ldb, beta, wc.mem, wc.off, ldc, &d->q, NULL);
        if (st != CLBlastSuccess)
            rc = ocl_fail(d, MAMBA_ERR_BACKEND, "gemm_f32: CLBlastSgemm (%s%s, %zu x %zu x %zu) failed: status %d",
                          trans_a ? "T" : "N", trans_b ? "T" : "N", m, n, k, (int)st);
    }
    close_window(&wa);
    close_window(&wb);
    close_window(&wc);
    return rc;
}

/* ---- rmsnorm_backward ---- */

/* rows in blocks for the partial sums: *rpb rows a block, *nb blocks */
static void blocks_of(size_t rows, size_t *rpb, size_t *nb)
{
    *rpb = ceil_div(rows, MAX_BLOCKS);
    if (*rpb < BLOCK_ROWS) *rpb = BLOCK_ROWS;
    *nb = ceil_div(rows, *rpb);
}

/* Four launches: the rows' 1/rms and mean(w dy xhat) into scratch, dw's per-block partial sums,
 * dx (element-wise, so dx may be x or dy: both are read before dx is written), the blocks'
 * fold into dw. */
static int ocl_rmsnorm_backward(mb_device *d, mb_ptr x, mb_ptr w, mb_ptr dy, size_t rows, size_t dim, float eps,
                                mb_ptr dx, int accumulate, mb_ptr dw)
{
    static const char op[] = "rmsnorm_backward";
    if (rows == 0 || dim == 0) return 0;
    size_t n;
    int rc = product(d, rows, dim, &n, op, "x");
    if (!rc) rc = check_ptr(d, x, n, op, "x");
    if (!rc) rc = check_ptr(d, dy, n, op, "dy");
    if (!rc) rc = check_ptr(d, dx, n, op, "dx");
    if (!rc) rc = check_ptr(d, w, dim, op, "w");
    if (!rc) rc = check_ptr(d, dw, dim, op, "dw");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    size_t rpb, nb, part_elems;
    blocks_of(rows, &rpb, &nb);
    if ((rc = product(d, nb, dim, &part_elems, op, "dw's partial sums")) != 0) return rc;
    const size_t part_at = round_up(2 * rows, 64);
    cl_mem s;
    if ((rc = ocl_scratch(d, (part_at + part_elems) * sizeof(float), &s)) != 0) return rc;
    cl_mem xm = ocl_mem(x), wm = ocl_mem(w), dym = ocl_mem(dy), dxm = ocl_mem(dx), dwm = ocl_mem(dw);
    cl_ulong xo = x.offset / 4, wo = w.offset / 4, dyo = dy.offset / 4, dxo = dx.offset / 4, dwo = dw.offset / 4;
    cl_ulong du = dim, ru = rows, rpbu = rpb, nbu = nb, st_off = 0, part_off = part_at, one = 1;
    cl_int acc = accumulate != 0, no = 0;
    const size_t L = d->train_local;
    rc = ocl_args(d, d->k[K_T_RMS_STATS], "rms_bwd_stats", 10, M(xm), U(xo), M(wm), U(wo), M(dym), U(dyo), U(du),
                  F(eps), M(s), U(st_off));
    const size_t g1 = rows * L;
    if (!rc) rc = launch(d, K_T_RMS_STATS, 1, &g1, &L, "rmsnorm_backward: row kernel");
    if (!rc)
        rc = ocl_args(d, d->k[K_T_RMS_DW], "rms_bwd_dw_part", 11, M(xm), U(xo), M(dym), U(dyo), U(du), U(ru), U(rpbu),
                      M(s), U(st_off), M(s), U(part_off));
    const size_t l2[2] = {64, 1}, g2[2] = {round_up(dim, 64), nb};
    if (!rc) rc = launch(d, K_T_RMS_DW, 2, g2, l2, "rmsnorm_backward: dw kernel");
    if (!rc)
        rc = ocl_args(d, d->k[K_T_RMS_DX], "rms_bwd_dx", 13, M(xm), U(xo), M(wm), U(wo), M(dym), U(dyo), U(du), U(ru),
                      M(s), U(st_off), M(dxm), U(dxo), I(acc));
    const size_t g3[2] = {round_up(dim, 64), rows};
    if (!rc) rc = launch(d, K_T_RMS_DX, 2, g3, l2, "rmsnorm_backward: dx kernel");
    if (!rc)
        rc = ocl_args(d, d->k[K_T_FOLD], "fold_blocks", 11, M(s), U(part_off), U(du), U(nbu), U(du), U(one), M(dwm),
                      U(dwo), M(dwm), U(dwo), I(no));
    const size_t l4 = 64, g4 = round_up(dim, 64);
    if (!rc) rc = launch(d, K_T_FOLD, 1, &g4, &l4, "rmsnorm_backward: dw fold kernel");
    return rc;
}

/* ---- conv_silu_backward ---- */

/* Matches conv_bwd_params in train_kernels.cl: longs, then ulongs, then ints. */
typedef struct conv_bwd_params {
    cl_long x_sb, x_st, o_sb, o_st, dx_sb, dx_st;
    cl_ulong x_off, w_off, b_off, o_off, dx_off, part_off;
    cl_ulong B, L, C, K, rows_per_block;
    cl_int has_bias, want_db;
} conv_bwd_params;

/* dweight's and dbias's per-block partial sums, then dx (after them: the partial sums read x
 * and dout, which dx must not overlap in any case, as its items read neighbouring steps), then
 * the blocks' fold. g is recomputed in each kernel rather than kept. */
static int ocl_conv_silu_backward(mb_device *d, const mb_conv_bwd_op *op)
{
    static const char name[] = "conv_silu_backward";
    if (op->width == 0) return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: width 0; expected 1..64 taps", name);
    /* the kernels take any width; the forward (mb_conv_check) takes at most 64, and so do the
     * other backends' backwards */
    if (op->width > 64)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "%s: width %zu; at most 64 taps supported", name, op->width);
    if (op->batch == 0 || op->len == 0 || op->channels == 0) return 0;
    const size_t B = op->batch, T = op->len, C = op->channels, K = op->width;
    size_t wn, rows;
    int rc = product(d, C, K, &wn, name, "weight");
    if (!rc) rc = product(d, B, T, &rows, name, "batch x len");
    if (!rc) rc = check_strided(d, op->x, B, op->x_sb, T, op->x_st, C, name, "x");
    if (!rc) rc = check_strided(d, op->dout, B, op->dout_sb, T, op->dout_st, C, name, "dout");
    if (!rc) rc = check_strided(d, op->dx, B, op->dx_sb, T, op->dx_st, C, name, "dx");
    if (!rc) rc = check_ptr(d, op->weight, wn, name, "weight");
    if (!rc) rc = check_ptr(d, op->dweight, wn, name, "dweight");
    if (!rc && op->bias.buf) rc = check_ptr(d, op->bias, C, name, "bias");
    if (!rc && op->dbias.buf) rc = check_ptr(d, op->dbias, C, name, "dbias");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    const size_t cols = K + (op->dbias.buf != NULL);
    size_t rpb, nb, n_cols, part_elems;
    blocks_of(rows, &rpb, &nb);
    rc = product(d, cols, C, &n_cols, name, "dweight's partial sums");
    if (!rc) rc = product(d, nb, n_cols, &part_elems, name, "dweight's partial sums");
    cl_mem s;
    if (!rc) rc = ocl_scratch(d, part_elems * sizeof(float), &s);
    if (rc) return rc;
    conv_bwd_params p;
    memset(&p, 0, sizeof p);
    p.x_sb = op->x_sb; p.x_st = op->x_st; p.o_sb = op->dout_sb; p.o_st = op->dout_st;
    p.dx_sb = op->dx_sb; p.dx_st = op->dx_st;
    p.x_off = op->x.offset / 4; p.w_off = op->weight.offset / 4; p.b_off = op->bias.offset / 4;
    p.o_off = op->dout.offset / 4; p.dx_off = op->dx.offset / 4; p.part_off = 0;
    p.B = B; p.L = T; p.C = C; p.K = K; p.rows_per_block = rpb;
    p.has_bias = op->bias.buf != NULL;
    p.want_db = op->dbias.buf != NULL;
    cl_mem xm = ocl_mem(op->x), wm = ocl_mem(op->weight), bm = op->bias.buf ? ocl_mem(op->bias) : wm;
    cl_mem om = ocl_mem(op->dout), dxm = ocl_mem(op->dx), dwm = ocl_mem(op->dweight);
    cl_mem dbm = op->dbias.buf ? ocl_mem(op->dbias) : dwm;
    rc = ocl_args(d, d->k[K_T_CONV_DW], "conv_bwd_dw_part", 6, sizeof p, (const void *)&p, M(xm), M(wm), M(bm), M(om),
                  M(s));
    const size_t local[3] = {64, 1, 1}, g1[3] = {round_up(C, 64), cols, nb};
    if (!rc) rc = launch(d, K_T_CONV_DW, 3, g1, local, "conv_silu_backward: dweight kernel");
    if (!rc)
        rc = ocl_args(d, d->k[K_T_CONV_DX], "conv_bwd_dx", 6, sizeof p, (const void *)&p, M(xm), M(wm), M(bm), M(om),
                      M(dxm));
    const size_t g2[3] = {round_up(C, 64), T, B};
    if (!rc) rc = launch(d, K_T_CONV_DX, 3, g2, local, "conv_silu_backward: dx kernel");
    cl_ulong zero = 0, ncu = n_cols, nbu = nb, cu = C, ku = K, dwo = op->dweight.offset / 4, dbo = op->dbias.offset / 4;
    cl_int want_db = p.want_db;
    if (!rc)
        rc = ocl_args(d, d->k[K_T_FOLD], "fold_blocks", 11, M(s), U(zero), U(ncu), U(nbu), U(cu), U(ku), M(dwm), U(dwo),
                      M(dbm), U(dbo), I(want_db));
    const size_t l3 = 64, g3 = round_up(n_cols, 64);
    if (!rc) rc = launch(d, K_T_FOLD, 1, &g3, &l3, "conv_silu_backward: fold kernel");
    return rc;
}

/* ---- embed_backward ---- */

/* Work-items (column, slice) walk every row in order and take the rows whose id is in their
 * slice; the slices only spread the table's rows over more items (each table element sees its
 * rows in increasing r whatever their number), about 256 items a compute unit. */
static int ocl_embed_backward(mb_device *d, mb_ptr ids, size_t rows, mb_ptr dy, size_t dim, mb_ptr dtable, size_t vocab)
{
    static const char op[] = "embed_backward";
    if (rows == 0 || dim == 0) return 0;
    size_t n_dy, n_table;
    int rc = product(d, rows, dim, &n_dy, op, "dy");
    if (!rc) rc = product(d, vocab, dim, &n_table, op, "dtable");
    if (!rc) rc = check_ptr(d, ids, rows, op, "ids");
    if (!rc) rc = check_ptr(d, dy, n_dy, op, "dy");
    if (!rc) rc = check_ptr(d, dtable, n_table, op, "dtable");
    if (!rc && vocab > 0x7fffffff)
        rc = ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "%s: vocab %zu; int32 ids address at most 2^31 rows", op, vocab);
    if (!rc) rc = train_program(d);
    if (rc || vocab == 0) return rc;
    const size_t cols = round_up(dim, 64);
    size_t slices = (size_t)(d->compute_units ? d->compute_units : 1) * 256 / cols;
    if (slices > EMBED_SLICES) slices = EMBED_SLICES;
    if (slices > vocab) slices = vocab;
    if (slices < 1) slices = 1;
    cl_mem im = ocl_mem(ids), dym = ocl_mem(dy), tm = ocl_mem(dtable);
    cl_ulong io = ids.offset / 4, ru = rows, dyo = dy.offset / 4, du = dim, to = dtable.offset / 4, vu = vocab,
             su = slices;
    rc = ocl_args(d, d->k[K_T_EMBED], "embed_bwd", 10, M(im), U(io), U(ru), M(dym), U(dyo), U(du), M(tm), U(to), U(vu),
                  U(su));
    const size_t local[2] = {64, 1}, global[2] = {cols, slices};
    return rc ? rc : launch(d, K_T_EMBED, 2, global, local, "embed_backward kernel");
}

/* ---- cross_entropy ---- */

static int ocl_cross_entropy(mb_device *d, mb_ptr logits, size_t rows, size_t vocab, mb_ptr labels, float scale,
                             mb_ptr loss, mb_ptr correct)
{
    static const char op[] = "cross_entropy";
    if (rows == 0) return 0;
    if (vocab == 0 || vocab > 0x7fffffff)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: vocab %zu; expected 1..2^31-1 (int32 labels)", op, vocab);
    size_t n;
    int rc = product(d, rows, vocab, &n, op, "logits");
    if (!rc) rc = check_ptr(d, logits, n, op, "logits");
    if (!rc) rc = check_ptr(d, labels, rows, op, "labels");
    if (!rc) rc = check_ptr(d, loss, rows, op, "loss");
    if (!rc) rc = check_ptr(d, correct, rows, op, "correct");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    cl_mem lm = ocl_mem(logits), lbm = ocl_mem(labels), lsm = ocl_mem(loss), cm = ocl_mem(correct);
    cl_ulong lo = logits.offset / 4, vu = vocab, lbo = labels.offset / 4, lso = loss.offset / 4, co = correct.offset / 4;
    rc = ocl_args(d, d->k[K_T_CE], "cross_entropy", 10, M(lm), U(lo), U(vu), M(lbm), U(lbo), F(scale), M(lsm), U(lso),
                  M(cm), U(co));
    const size_t L = d->train_local, global = rows * L;
    return rc ? rc : launch(d, K_T_CE, 1, &global, &L, "cross_entropy kernel");
}

/* ---- sum_squares ---- */

/* G work-groups' sums (G from n and the work-group size), then one work-group adds them. */
static int ocl_sum_squares(mb_device *d, mb_ptr x, size_t n, mb_ptr out)
{
    static const char op[] = "sum_squares";
    int rc = check_ptr(d, out, 1, op, "out");
    if (!rc && n) rc = check_ptr(d, x, n, op, "x");
    if (rc) return rc;
    if (n == 0) {
        const cl_float zero = 0.0f;
        OCL_CHECK(d, clEnqueueFillBuffer(d->q, ocl_mem(out), &zero, sizeof zero, out.offset, sizeof zero, 0, NULL, NULL),
                  "sum_squares: zero fill");
        return 0;
    }
    if ((rc = train_program(d)) != 0) return rc;
    const size_t L = d->train_local;
    size_t groups = ceil_div(n, L * SUMSQ_PER_ITEM);
    if (groups > SUMSQ_GROUPS) groups = SUMSQ_GROUPS;
    cl_mem s;
    if ((rc = ocl_scratch(d, groups * sizeof(float), &s)) != 0) return rc;
    cl_mem xm = ocl_mem(x), om = ocl_mem(out);
    cl_ulong xo = x.offset / 4, nu = n, zero = 0, gu = groups, oo = out.offset / 4;
    rc = ocl_args(d, d->k[K_T_SUMSQ1], "sumsq_part", 5, M(xm), U(xo), U(nu), M(s), U(zero));
    const size_t g1 = groups * L;
    if (!rc) rc = launch(d, K_T_SUMSQ1, 1, &g1, &L, "sum_squares: first pass kernel");
    if (!rc) rc = ocl_args(d, d->k[K_T_SUMSQ2], "sumsq_final", 5, M(s), U(zero), U(gu), M(om), U(oo));
    if (!rc) rc = launch(d, K_T_SUMSQ2, 1, &L, &L, "sum_squares: second pass kernel");
    return rc;
}

/* ---- adamw ---- */

/* Matches adamw_params in train_kernels.cl. */
typedef struct adamw_params {
    cl_ulong n, p_off, g_off, m_off, v_off, ns_off;
    cl_float beta1, beta2, eps, decay, step_size, bc2_sqrt, max_norm, grad_scale;
    cl_int has_norm, pad;
} adamw_params;

/* The bias corrections in double on the host, as torch computes them in Python floats. */
static int ocl_adamw(mb_device *d, const mb_adamw_op *op)
{
    static const char name[] = "adamw";
    if (op->step < 1) return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: step %ld; expected >= 1", name, op->step);
    if (!(op->beta1 >= 0.0f && op->beta1 < 1.0f) || !(op->beta2 >= 0.0f && op->beta2 < 1.0f))
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "%s: betas (%g, %g); expected each in [0, 1)", name,
                        (double)op->beta1, (double)op->beta2);
    if (op->n == 0) return 0;
    int rc = check_ptr(d, op->param, op->n, name, "param");
    if (!rc) rc = check_ptr(d, op->grad, op->n, name, "grad");
    if (!rc) rc = check_ptr(d, op->m, op->n, name, "m");
    if (!rc) rc = check_ptr(d, op->v, op->n, name, "v");
    if (!rc && op->norm_sq.buf) rc = check_ptr(d, op->norm_sq, 1, name, "norm_sq");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    const double bc1 = 1.0 - pow((double)op->beta1, (double)op->step);
    const double bc2 = 1.0 - pow((double)op->beta2, (double)op->step);
    adamw_params p;
    memset(&p, 0, sizeof p);
    p.n = op->n;
    p.p_off = op->param.offset / 4; p.g_off = op->grad.offset / 4; p.m_off = op->m.offset / 4;
    p.v_off = op->v.offset / 4; p.ns_off = op->norm_sq.offset / 4;
    p.beta1 = op->beta1; p.beta2 = op->beta2; p.eps = op->eps;
    p.decay = (cl_float)(1.0 - (double)op->lr * (double)op->weight_decay);
    p.step_size = (cl_float)((double)op->lr / bc1);
    p.bc2_sqrt = (cl_float)sqrt(bc2);
    p.max_norm = op->max_norm; p.grad_scale = op->grad_scale;
    p.has_norm = op->norm_sq.buf != NULL;
    cl_mem pm = ocl_mem(op->param), gm = ocl_mem(op->grad), mm = ocl_mem(op->m), vm = ocl_mem(op->v);
    cl_mem nm = op->norm_sq.buf ? ocl_mem(op->norm_sq) : gm;
    rc = ocl_args(d, d->k[K_T_ADAMW], "adamw", 6, sizeof p, (const void *)&p, M(pm), M(gm), M(mm), M(vm), M(nm));
    return rc ? rc : launch_flat(d, K_T_ADAMW, op->n, "adamw kernel");
}

/* ---- element-wise ---- */

static int ocl_axpy(mb_device *d, size_t n, float alpha, mb_ptr x, mb_ptr y)
{
    if (n == 0) return 0;
    int rc = check_ptr(d, x, n, "axpy", "x");
    if (!rc) rc = check_ptr(d, y, n, "axpy", "y");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    cl_mem xm = ocl_mem(x), ym = ocl_mem(y);
    cl_ulong nu = n, xo = x.offset / 4, yo = y.offset / 4;
    rc = ocl_args(d, d->k[K_T_AXPY], "axpy", 6, U(nu), F(alpha), M(xm), U(xo), M(ym), U(yo));
    return rc ? rc : launch_flat(d, K_T_AXPY, n, "axpy kernel");
}

static int ocl_neg_exp(mb_device *d, size_t n, mb_ptr x, mb_ptr y)
{
    if (n == 0) return 0;
    int rc = check_ptr(d, x, n, "neg_exp", "x");
    if (!rc) rc = check_ptr(d, y, n, "neg_exp", "y");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    cl_mem xm = ocl_mem(x), ym = ocl_mem(y);
    cl_ulong nu = n, xo = x.offset / 4, yo = y.offset / 4;
    rc = ocl_args(d, d->k[K_T_NEG_EXP], "neg_exp", 5, U(nu), M(xm), U(xo), M(ym), U(yo));
    return rc ? rc : launch_flat(d, K_T_NEG_EXP, n, "neg_exp kernel");
}

static int ocl_mul_acc(mb_device *d, size_t n, mb_ptr x, mb_ptr w, mb_ptr y)
{
    if (n == 0) return 0;
    int rc = check_ptr(d, x, n, "mul_acc", "x");
    if (!rc) rc = check_ptr(d, w, n, "mul_acc", "w");
    if (!rc) rc = check_ptr(d, y, n, "mul_acc", "y");
    if (!rc) rc = train_program(d);
    if (rc) return rc;
    cl_mem xm = ocl_mem(x), wm = ocl_mem(w), ym = ocl_mem(y);
    cl_ulong nu = n, xo = x.offset / 4, wo = w.offset / 4, yo = y.offset / 4;
    rc = ocl_args(d, d->k[K_T_MUL_ACC], "mul_acc", 7, U(nu), M(xm), U(xo), M(wm), U(wo), M(ym), U(yo));
    return rc ? rc : launch_flat(d, K_T_MUL_ACC, n, "mul_acc kernel");
}

const mb_train_ops ocl_train_ops = {
    .gemm_f32 = ocl_gemm_f32,
    .rmsnorm_backward = ocl_rmsnorm_backward,
    .conv_silu_backward = ocl_conv_silu_backward,
    .embed_backward = ocl_embed_backward,
    .cross_entropy = ocl_cross_entropy,
    .sum_squares = ocl_sum_squares,
    .adamw = ocl_adamw,
    .axpy = ocl_axpy,
    .neg_exp = ocl_neg_exp,
    .mul_acc = ocl_mul_acc,
};
