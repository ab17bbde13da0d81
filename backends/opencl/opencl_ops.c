/* OpenCL ops: argument marshalling and launch geometry for the kernels in kernels.cl; GEMM
 * through CLBlast. Buffer positions become element offsets. */
#include <clblast_c.h>
#include <stdio.h>
#include <string.h>

#include "opencl_internal.h"

#define M(x) sizeof(cl_mem), (const void *)&(x)
#define U(x) sizeof(cl_ulong), (const void *)&(x)
#define I(x) sizeof(cl_int), (const void *)&(x)
#define F(x) sizeof(cl_float), (const void *)&(x)

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

static int launch(mb_device *d, int k, cl_uint dims, const size_t *global, const size_t *local, const char *what)
{
    cl_event ev = NULL;
    OCL_CHECK(d, clEnqueueNDRangeKernel(d->q, d->k[k], dims, NULL, global, local, 0, NULL, d->profile ? &ev : NULL), what);
    if (ev) ocl_profile(d, k, ev);
    return 0;
}

static int dt_code(mamba_dtype_t dt) { return dt == MAMBA_F16 ? 1 : dt == MAMBA_BF16 ? 2 : dt == MAMBA_Q8 ? 3 : 0; }
static size_t dt_size(mamba_dtype_t dt) { return dt == MAMBA_Q8 ? 1 : dt == MAMBA_F16 || dt == MAMBA_BF16 ? 2 : 4; }

/* Q8_0 W (n, k) at w: the kernels' sb, from which block i / 32 of element i (a byte offset in
 * the buffer) finds its scale (kernels.cl); 0 for other dtypes. */
static int q8_sb(mb_device *d, mamba_dtype_t dt, mb_ptr w, size_t n, size_t k, cl_ulong *sb)
{
    *sb = 0;
    if (dt != MAMBA_Q8) return 0;
    if (w.offset % 32 || k % 32)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "Q8_0 weights at byte offset %zu with k = %zu: both must be multiples "
                        "of 32", w.offset, k);
    *sb = (w.offset + mb_q8_scales_offset(n, k)) / 2 - w.offset / 32;
    return 0;
}

int ocl_embed(mb_device *d, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dt, size_t vocab, size_t dim,
              mb_ptr out)
{
    cl_mem im = ocl_mem(ids), tm = ocl_mem(table), om = ocl_mem(out);
    cl_ulong io = ids.offset / 4, to = table.offset / dt_size(dt), oo = out.offset / 4, dm = dim, sb;
    cl_int dc = dt_code(dt);
    if (!mb_gemm_dtype_ok(dt, dim))
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "embed: table of %s with %zu columns", mb_dtype_name(dt), dim);
    int rc = q8_sb(d, dt, table, vocab, dim, &sb);
    if (!rc) rc = ocl_args(d, d->k[K_EMBED], "embed", 9, M(im), U(io), M(tm), U(to), I(dc), U(sb), U(dm), M(om), U(oo));
    const size_t local = 64, global = rows * local;
    return rc ? rc : launch(d, K_EMBED, 1, &global, &local, "embedding kernel");
}

int ocl_add_rmsnorm(mb_device *d, mb_ptr res, mb_ptr x, mb_ptr w, size_t rows, size_t dim, float eps, mb_ptr out)
{
    cl_mem rm = ocl_mem(res), xm = x.buf ? ocl_mem(x) : rm, wm = ocl_mem(w), om = ocl_mem(out);
    cl_ulong ro = res.offset / 4, xo = x.offset / 4, wo = w.offset / 4, dm = dim, oo = out.offset / 4;
    cl_int has_x = x.buf != NULL;
    cl_float e = eps;
    int rc = ocl_args(d, d->k[K_RMSNORM], "add_rmsnorm", 11, M(rm), U(ro), M(xm), U(xo), I(has_x), M(wm), U(wo), U(dm),
                      F(e), M(om), U(oo));
    const size_t local = d->max_wg >= 256 ? 256 : 128, global = rows * local;
    return rc ? rc : launch(d, K_RMSNORM, 1, &global, &local, "add + rmsnorm kernel");
}

int ocl_conv_silu(mb_device *d, const mb_conv_op *op)
{
    int empty, rc = mb_conv_check(op, &empty, d->err, sizeof d->err);
    if (rc || empty) return rc; /* OpenCL 1.2 takes no empty ranges */
    cl_mem xm = ocl_mem(op->x), wm = ocl_mem(op->weight), bm = op->bias.buf ? ocl_mem(op->bias) : wm;
    cl_mem sm = ocl_mem(op->state), om = ocl_mem(op->out);
    cl_ulong C = op->channels, K = op->width, L = op->len, xo = op->x.offset / 4, xsb = (cl_ulong)op->x_sb,
             xst = (cl_ulong)op->x_st, wo = op->weight.offset / 4, bo = op->bias.offset / 4, so = op->state.offset / 4,
             oo = op->out.offset / 4, osb = (cl_ulong)op->out_sb, ost = (cl_ulong)op->out_st;
    cl_int has_b = op->bias.buf != NULL;
    if (L <= 8 && K <= 8) {
        int rs = ocl_args(d, d->k[K_CONV_SHORT], "conv_short", 18, U(C), U(K), U(L), M(xm), U(xo), U(xsb), U(xst), M(wm),
                          U(wo), M(bm), U(bo), I(has_b), M(sm), U(so), M(om), U(oo), U(osb), U(ost));
        const size_t ls[2] = {64, 1}, gs[2] = {round_up(C, 64), op->batch};
        return rs ? rs : launch(d, K_CONV_SHORT, 2, gs, ls, "short conv kernel");
    }
    rc = ocl_args(d, d->k[K_CONV], "conv", 17, U(C), U(K), M(xm), U(xo), U(xsb), U(xst), M(wm), U(wo), M(bm), U(bo),
                      I(has_b), M(sm), U(so), M(om), U(oo), U(osb), U(ost));
    const size_t local[3] = {64, 1, 1}, global[3] = {round_up(C, 64), L, op->batch};
    if (!rc) rc = launch(d, K_CONV, 3, global, local, "conv kernel");
    if (!rc) rc = ocl_args(d, d->k[K_CONV_STATE], "conv_state", 9, U(C), U(K), U(L), M(xm), U(xo), U(xsb), U(xst), M(sm),
                           U(so));
    const size_t local2[2] = {64, 1}, global2[2] = {round_up(C, 64), op->batch};
    return rc ? rc : launch(d, K_CONV_STATE, 2, global2, local2, "conv state kernel");
}

#define GEMV_MAX_M 8
#define GEMV_ROWS 8

/* the gemv kernels of kernels.cl: m <= 8 rows (gemv1 for one), an optional RMSNorm of x, y +=
 * when accum */
static int gemv(mb_device *d, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr nw, float eps, mb_ptr w,
                mamba_dtype_t wdt, mb_ptr bias, mb_ptr y, size_t ldy, int accum)
{
    cl_mem xm = ocl_mem(x), wm = ocl_mem(w), ym = ocl_mem(y), bm = bias.buf ? ocl_mem(bias) : xm,
           nm = nw.buf ? ocl_mem(nw) : xm;
    cl_ulong xo = x.offset / 4, wo = w.offset / dt_size(wdt), yo = y.offset / 4, bo = bias.offset / 4, no = nw.offset / 4;
    cl_int ni = (cl_int)n, ki = (cl_int)k, dc = dt_code(wdt), hb = bias.buf != NULL, hn = nw.buf != NULL, ac = accum;
    cl_float e = eps;
    cl_ulong sb;
    const int rq = q8_sb(d, wdt, w, n, k, &sb);
    if (rq) return rq;
    const size_t local = (size_t)32 * GEMV_ROWS;
    if (m == 1) {
        /* 8 rows a work-group of 256, or fewer with more items each when that leaves under
         * four work-groups a compute unit (out_proj of the 130m: 768 rows) */
        size_t rows = 8;
        while (rows > 1 && (n + rows - 1) / rows < 4 * (size_t)d->compute_units) rows /= 2;
        cl_int ipr = (cl_int)(256 / rows);
        int rc = ocl_args(d, d->k[K_GEMV1], "gemv1", 19, I(ni), I(ki), I(ipr), M(xm), U(xo), M(wm), U(wo), I(dc),
                          U(sb), M(bm), U(bo), I(hb), M(ym), U(yo), M(nm), U(no), I(hn), F(e), I(ac));
        const size_t global1 = (n + rows - 1) / rows * 256;
        return rc ? rc : launch(d, K_GEMV1, 1, &global1, &local, "gemv kernel");
    }
    cl_int mi = (cl_int)m, ldai = (cl_int)lda, ldyi = (cl_int)ldy;
    const size_t global = (n + GEMV_ROWS - 1) / GEMV_ROWS * local;
    int rc = ocl_args(d, d->k[K_GEMV], "gemv", 21, I(mi), I(ni), I(ki), M(xm), U(xo), I(ldai), M(wm), U(wo), I(dc),
                      U(sb), M(bm), U(bo), I(hb), M(ym), U(yo), I(ldyi), M(nm), U(no), I(hn), F(e), I(ac));
    return rc ? rc : launch(d, K_GEMV, 1, &global, &local, "gemv kernel");
}

int ocl_gemv_fused(mb_device *d, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr nw, float eps, mb_ptr w,
                   mamba_dtype_t wdt, mb_ptr bias, mb_ptr y, size_t ldy, int accumulate)
{
    if (m < 1 || m > GEMV_MAX_M || n > 0x7fffffff || k > 0x7fffffff || (nw.buf && k % 4) || !mb_gemm_dtype_ok(wdt, k))
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "fused gemv: %zu rows (1..%d), %zu x %zu, dtype %d", m, GEMV_MAX_M, n,
                        k, (int)wdt);
    return gemv(d, m, n, k, x, lda, nw, eps, w, wdt, bias, y, ldy, accumulate);
}

int ocl_gemm(mb_device *d, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w, mamba_dtype_t wdt, mb_ptr bias,
             mb_ptr y, size_t ldy)
{
    if (!mb_gemm_dtype_ok(wdt, k))
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "gemm: weight dtype %s with k = %zu: expected F32, F16, BF16 or "
                        "Q8_0 with k a multiple of 32", mb_dtype_name(wdt), k);
    cl_mem xm = ocl_mem(x), wm = ocl_mem(w), ym = ocl_mem(y), bm = bias.buf ? ocl_mem(bias) : xm;
    const size_t es = dt_size(wdt);
    cl_ulong xo = x.offset / 4, wo = w.offset / es, yo = y.offset / 4, bo = bias.offset / 4;
    int rc;
    if (m <= GEMV_MAX_M) return gemv(d, m, n, k, x, lda, (mb_ptr){NULL, 0}, 0.0f, w, wdt, bias, y, ldy, 0);
    cl_mem wf = wm;
    size_t wf_off = wo;
    if (wdt != MAMBA_F32) {
        if ((rc = ocl_scratch(d, n * k * 4, &wf)) != 0) return rc;
        cl_int dc = dt_code(wdt);
        cl_ulong cnt = (cl_ulong)n * k, sb;
        if ((rc = q8_sb(d, wdt, w, n, k, &sb)) != 0) return rc;
        if ((rc = ocl_args(d, d->k[K_WIDEN], "widen", 6, M(wm), U(wo), I(dc), U(sb), U(cnt), M(wf))) != 0) return rc;
        const size_t local = 256, global = (size_t)d->compute_units * 8 * local;
        if ((rc = launch(d, K_WIDEN, 1, &global, &local, "widen kernel")) != 0) return rc;
        wf_off = 0;
    }
    /* CLBlast's kernels index with 32-bit ints: every matrix lives in a buffer of its own
     * (core/weights.c), so its elements are indexed from 0 and stay below 2^31 */
    if (wf_off + (cl_ulong)n * k > 0x7fffffffu || xo + (cl_ulong)m * lda > 0x7fffffffu ||
        yo + (cl_ulong)m * ldy > 0x7fffffffu)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "gemm: %zu x %zu x %zu at element offsets %llu, %llu, %llu passes "
                        "CLBlast's 32-bit indexing", m, n, k, (unsigned long long)xo, (unsigned long long)wf_off,
                        (unsigned long long)yo);
    /* row-major y (m, n) = x (m, k) W^T (n, k) */
    CLBlastStatusCode st = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, m, n, k, 1.0f,
                                        xm, xo, lda, wf, wf_off, k, 0.0f, ym, yo, ldy, &d->q, NULL);
    if (st != CLBlastSuccess)
        return ocl_fail(d, MAMBA_ERR_BACKEND, "CLBlastSgemm (%zu x %zu x %zu) failed: status %d", m, n, k, (int)st);
    if (bias.buf) {
        cl_ulong ldyu = ldy, nu = n;
        if ((rc = ocl_args(d, d->k[K_BIAS], "add_bias", 6, M(ym), U(yo), U(ldyu), M(bm), U(bo), U(nu))) != 0) return rc;
        const size_t local[2] = {64, 1}, global[2] = {round_up(n, 64), m};
        return launch(d, K_BIAS, 2, global, local, "bias kernel");
    }
    return 0;
}

/* Matches scan_params in kernels.cl: longs, then ulongs, then ints. */
typedef struct scan_params {
    cl_long u_sb, u_st, u_sd, d_sb, d_st, d_sd, B_sb, B_st, B_sg, B_sn, C_sb, C_st, C_sg, C_sn;
    cl_long z_sb, z_st, z_sd, o_sb, o_st, o_sd;
    cl_ulong u_off, d_off, A_off, B_off, C_off, D_off, z_off, bias_off, si_off, o_off, so_off;
    cl_int B, D, L, N, G, softplus, chunk_len, n_chunks, has_D, has_z, has_bias, has_si, has_so, shared_bc;
} scan_params;

/* work-items a scan work-group: 128 measured 3-5% faster than 64 on the H100's larger shapes */
#define SCAN_LOCAL 128

int ocl_scan(mb_device *d, const mb_scan_op *op)
{
    if (op->d_state > 256)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "scan: d_state %zu, at most 256 supported", op->d_state);
    if (!op->n_groups || op->dim % op->n_groups)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "scan: dim %zu not a multiple of n_groups %zu", op->dim,
                        op->n_groups);
    scan_params p;
    memset(&p, 0, sizeof p);
    p.u_sb = op->u_sb; p.u_st = op->u_st; p.u_sd = op->u_sd;
    p.d_sb = op->delta_sb; p.d_st = op->delta_st; p.d_sd = op->delta_sd;
    p.B_sb = op->B_sb; p.B_st = op->B_st; p.B_sg = op->B_sg; p.B_sn = op->B_sn;
    p.C_sb = op->C_sb; p.C_st = op->C_st; p.C_sg = op->C_sg; p.C_sn = op->C_sn;
    p.z_sb = op->z_sb; p.z_st = op->z_st; p.z_sd = op->z_sd;
    p.o_sb = op->out_sb; p.o_st = op->out_st; p.o_sd = op->out_sd;
    p.u_off = op->u.offset / 4; p.d_off = op->delta.offset / 4; p.A_off = op->A.offset / 4;
    p.B_off = op->B.offset / 4; p.C_off = op->C.offset / 4; p.D_off = op->D.offset / 4; p.z_off = op->z.offset / 4;
    p.bias_off = op->delta_bias.offset / 4; p.si_off = op->state_in.offset / 4; p.o_off = op->out.offset / 4;
    p.so_off = op->state_out.offset / 4;
    p.B = (cl_int)op->batch; p.D = (cl_int)op->dim; p.L = (cl_int)op->len; p.N = (cl_int)op->d_state;
    p.G = (cl_int)op->n_groups; p.softplus = op->delta_softplus;
    p.has_D = op->D.buf != NULL; p.has_z = op->z.buf != NULL; p.has_bias = op->delta_bias.buf != NULL;
    p.has_si = op->state_in.buf != NULL; p.has_so = op->state_out.buf != NULL;
    p.shared_bc = op->n_groups == 1 || (op->dim / op->n_groups) % SCAN_LOCAL == 0;
    int chunk_len, n_chunks;
    mb_scan_chunking(op->batch, op->dim, op->len, (long long)d->compute_units * 1024, 0, &chunk_len, &n_chunks);
    p.chunk_len = chunk_len;
    p.n_chunks = n_chunks;
    cl_mem any = ocl_mem(op->u);
    cl_mem um = any, dm = ocl_mem(op->delta), am = ocl_mem(op->A), bm = ocl_mem(op->B), cm = ocl_mem(op->C);
    cl_mem Dm = op->D.buf ? ocl_mem(op->D) : any, zm = op->z.buf ? ocl_mem(op->z) : any;
    cl_mem biasm = op->delta_bias.buf ? ocl_mem(op->delta_bias) : any;
    cl_mem sim = op->state_in.buf ? ocl_mem(op->state_in) : any, om = ocl_mem(op->out);
    cl_mem som = op->state_out.buf ? ocl_mem(op->state_out) : any;
    cl_mem hloc = any, S = any, hin = any;
    int rc;
    const size_t per = (size_t)p.B * p.D * p.N, nc = (size_t)p.n_chunks;
    cl_ulong hin_off = 0, S_off = 0;
    if (p.n_chunks > 1) {
        /* hloc, hin, S in one scratch; sub-buffer origins on 4 KiB (the base-address
         * alignment that devices ask for is at most that) */
        hin_off = round_up(nc * per, 1024);
        S_off = round_up(hin_off + nc * per, 1024);
        cl_mem s;
        if ((rc = ocl_scratch(d, (S_off + nc * (size_t)p.B * p.D) * 4, &s)) != 0) return rc;
        hloc = hin = S = s;
    }
    /* the kernels index hloc, hin and S from 0: give them sub-buffers of the scratch */
    cl_mem hin_b = hin, S_b = S;
    cl_int e;
    if (p.n_chunks > 1) {
        cl_buffer_region r1 = {hin_off * 4, nc * per * 4}, r2 = {S_off * 4, nc * (size_t)p.B * p.D * 4};
        hin_b = clCreateSubBuffer(hin, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r1, &e);
        if (e != CL_SUCCESS) return ocl_fail(d, MAMBA_ERR_BACKEND, "scan scratch: %s", ocl_error_name(e));
        S_b = clCreateSubBuffer(S, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r2, &e);
        if (e != CL_SUCCESS) {
            clReleaseMemObject(hin_b);
            return ocl_fail(d, MAMBA_ERR_BACKEND, "scan scratch: %s", ocl_error_name(e));
        }
    }
    /* N > 16: the states in passes of 16 (SCAN_NT in kernels.cl) */
    const int big = p.N > 16;
    const int k1 = big ? K_SCAN1_TILED : K_SCAN1_16, kf = big ? K_SCANF_TILED : K_SCANF_16;
    const size_t local[3] = {SCAN_LOCAL, 1, 1};
    rc = 0;
    if (p.n_chunks > 1) {
        rc = ocl_args(d, d->k[k1], "scan pass 1", 15, sizeof p, (const void *)&p, M(um), M(dm), M(am), M(bm), M(cm), M(Dm),
                      M(zm), M(biasm), M(sim), M(om), M(som), M(hloc), M(S_b), M(hin_b));
        const size_t g1[3] = {round_up((size_t)p.D, SCAN_LOCAL), nc - 1, (size_t)p.B};
        if (!rc) rc = launch(d, k1, 3, g1, local, "scan pass 1 kernel");
        if (!rc) rc = ocl_args(d, d->k[K_CARRY], "scan carry", 6, sizeof p, (const void *)&p, M(am), M(sim), M(hloc),
                               M(S_b), M(hin_b));
        /* 32 states x 8 runs of chunks per work-group (CARRY_GROUPS in kernels.cl) */
        const size_t lc[2] = {32, 8}, gc[2] = {round_up(per, 32), 8};
        if (!rc) rc = launch(d, K_CARRY, 2, gc, lc, "scan carry kernel");
    }
    if (!rc) rc = ocl_args(d, d->k[kf], "scan", 15, sizeof p, (const void *)&p, M(um), M(dm), M(am), M(bm), M(cm), M(Dm),
                           M(zm), M(biasm), M(sim), M(om), M(som), M(hloc), M(S_b), M(hin_b));
    const size_t gf[3] = {round_up((size_t)p.D, SCAN_LOCAL), nc, (size_t)p.B};
    if (!rc) rc = launch(d, kf, 3, gf, local, "scan kernel");
    if (p.n_chunks > 1) {
        /* released after the kernels that use them are enqueued: OpenCL keeps them alive */
        clReleaseMemObject(hin_b);
        clReleaseMemObject(S_b);
    }
    return rc;
}

int ocl_read_sum(mb_device *d, mb_ptr src, size_t n, mb_ptr out)
{
    cl_mem sm = ocl_mem(src), om = ocl_mem(out);
    cl_ulong so = src.offset / 16, n4 = n / 4, oo = out.offset / 4;
    const cl_float zero = 0.0f;
    /* the sum, the groups' count and the kernel's READ_SLOTS (60) partial sums: 248 bytes */
    OCL_CHECK(d, clEnqueueFillBuffer(d->q, om, &zero, sizeof zero, out.offset, 62 * sizeof zero, 0, NULL, NULL),
              "read probe");
    int rc = ocl_args(d, d->k[K_READ], "read_sum", 5, M(sm), U(so), U(n4), M(om), U(oo));
    const size_t local = 256, global = (size_t)d->compute_units * 8 * local;
    return rc ? rc : launch(d, K_READ, 1, &global, &local, "read probe kernel");
}

/* mirrors step_params in kernels.cl */
typedef struct step_params {
    cl_ulong xz, cw, cb, cs, xw, dtw, dtb, A, Dv, ssm, xdbl, y;
    cl_ulong xz_sb, y_sb;
    cl_ulong xpart;
    cl_int B, D, N, R, K, nd, has_cb, has_D, xdt, ddt;
    cl_int KS;
    cl_int bc_norm;
    cl_float bc_eps;
} step_params;

/* The shapes the step kernels take (the conv window in a work-item group's lanes, xdbl in
 * local memory); the buffers are checked by ocl_mixer_step. */
int ocl_step_supports(const mb_fused_query *q)
{
    return q->width >= 1 && q->width <= 16 /* STEP_LANES */ && q->rows >= 1 && q->rows <= 65535 &&
           q->dim <= (1u << 30) && q->dt_rank + 2 * q->d_state <= 1024 /* STEP_XDBL_MAX */ &&
           mb_weight_dtype_ok(q->x_proj_dt) && mb_weight_dtype_ok(q->dt_proj_dt);
}

int ocl_gemv_supports(const mb_fused_query *q)
{
    return q->rows >= 1 && q->rows <= GEMV_MAX_M && q->n <= 0x7fffffff && q->k <= 0x7fffffff &&
           (!q->norm || q->k % 4 == 0) && mb_gemm_dtype_ok(q->wdtype, q->k);
}

int ocl_rmsnorm_segments(mb_device *d, mb_ptr x, size_t rows, size_t ld, const mb_segments *seg, float eps)
{
    size_t width = 0;
    for (size_t s = 0; s < seg->n && s < 4; s++) width += seg->len[s];
    if (!x.buf || seg->n > 4 || width > ld)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "rmsnorm_segments: %zu segments of %zu values in rows of %zu",
                        seg->n, width, ld);
    if (rows == 0) return 0;
    cl_mem xm = ocl_mem(x);
    cl_ulong xo = x.offset / 4, r = rows, l = ld;
    cl_int n = (cl_int)seg->n, l0 = (cl_int)seg->len[0], l1 = (cl_int)seg->len[1], l2 = (cl_int)seg->len[2],
           l3 = (cl_int)seg->len[3];
    int rc = ocl_args(d, d->k[K_RMSNORM_SEG], "rmsnorm_segments", 10, M(xm), U(xo), U(r), U(l), I(n), I(l0), I(l1), I(l2),
                      I(l3), F(eps));
    const size_t local = 64, global = (rows + local - 1) / local * local;
    return rc ? rc : launch(d, K_RMSNORM_SEG, 1, &global, &local, "rmsnorm_segments kernel");
}

int ocl_mixer_step(mb_device *d, const mb_mixer_step_op *op)
{
    /* the kernels take the f32 vectors from one buffer (the weights), the activations from
     * another (the workspace) and both states from a third: true of the core's layout, and
     * checked here; anything else runs as separate ops */
    cl_mem wf = ocl_mem(op->conv_w), work = ocl_mem(op->xz), st = ocl_mem(op->conv_state);
    const int same = ocl_mem(op->A) == wf && ocl_mem(op->dt_bias) == wf && (!op->conv_b.buf || ocl_mem(op->conv_b) == wf) &&
                     (!op->D.buf || ocl_mem(op->D) == wf) && ocl_mem(op->xdbl) == work && ocl_mem(op->y) == work &&
                     ocl_mem(op->ssm_state) == st;
    if (!same || op->width < 1 || op->width > 16 /* STEP_LANES */ || op->batch > 65535 || op->dim > (1u << 30) ||
        op->dt_rank + 2 * op->d_state > 1024 /* STEP_XDBL_MAX */ || !mb_weight_dtype_ok(op->x_proj_dt) ||
        !mb_weight_dtype_ok(op->dt_proj_dt))
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED,
                        "mixer step: width %zu (1..16), batch %zu, dim %zu, dt_rank + 2 d_state %zu (at most 1024)",
                        op->width, op->batch, op->dim, op->dt_rank + 2 * op->d_state);
    step_params p = {
        op->xz.offset / 4, op->conv_w.offset / 4, op->conv_b.offset / 4, op->conv_state.offset / 4,
        op->x_proj.offset / dt_size(op->x_proj_dt), op->dt_proj.offset / dt_size(op->dt_proj_dt),
        op->dt_bias.offset / 4, op->A.offset / 4, op->D.offset / 4, op->ssm_state.offset / 4, op->xdbl.offset / 4,
        op->y.offset / 4, op->xz_sb, op->y_sb, op->xdbl.offset / 4,
        (cl_int)op->batch, (cl_int)op->dim, (cl_int)op->d_state, (cl_int)op->dt_rank, (cl_int)op->width,
        (cl_int)(op->dt_rank + 2 * op->d_state), op->conv_b.buf != NULL, op->D.buf != NULL,
        dt_code(op->x_proj_dt), dt_code(op->dt_proj_dt), 1, op->bc_norm != 0, op->bc_norm_eps,
    };
    /* x_proj cut in slices over the compute units (8 sequences a work-group), the partial sums
     * in the op's scratch when it lies in the workspace */
    const size_t groups = (op->batch + 7) / 8;
    if (op->scratch.buf && ocl_mem(op->scratch) == work) {
        p.KS = mb_xproj_slices(op->batch, op->dim, (size_t)p.nd, 8, d->compute_units, op->scratch_bytes);
        if (p.KS > 1) p.xpart = op->scratch.offset / 4;
    }
    cl_mem xw = ocl_mem(op->x_proj), dw = ocl_mem(op->dt_proj);
    int rc = ocl_args(d, d->k[K_STEP_XPROJ], "step_xproj", 5, sizeof p, (const void *)&p, M(wf), M(xw), M(work), M(st));
    const size_t ls1[3] = {128, 1, 1}, gs1[3] = {(size_t)p.nd * 128, (size_t)p.KS, groups};
    if (!rc) rc = launch(d, K_STEP_XPROJ, 3, gs1, ls1, "mixer step: conv + x_proj kernel");
    if (!rc) rc = ocl_args(d, d->k[K_STEP_SCAN], "step_scan", 5, sizeof p, (const void *)&p, M(wf), M(dw), M(work), M(st));
    /* 16 items a channel, 16 channels a work-group (STEP_LANES in kernels.cl) */
    const size_t ls2[2] = {256, 1}, gs2[2] = {(op->dim + 15) / 16 * 256, op->batch};
    return rc ? rc : launch(d, K_STEP_SCAN, 2, gs2, ls2, "mixer step: scan kernel");
}

int ocl_argmax(mb_device *d, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2, mb_ptr flag)
{
    if (vocab == 0 || vocab > 0x7fffffff) return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "argmax: vocab %zu", vocab);
    cl_mem lm = ocl_mem(logits), im = ocl_mem(ids), fm = ocl_mem(flag), i2m = ids2.buf ? ocl_mem(ids2) : im;
    cl_ulong lo = logits.offset / 4, io = ids.offset / 4, fo = flag.offset / 4, i2o = ids2.offset / 4;
    cl_int v = (cl_int)vocab, has2 = ids2.buf != NULL;
    int rc = ocl_args(d, d->k[K_ARGMAX], "argmax", 10, M(lm), U(lo), I(v), M(im), U(io), M(i2m), U(i2o), I(has2), M(fm),
                      U(fo));
    const size_t local = 256, global = rows * local;
    return rc ? rc : launch(d, K_ARGMAX, 1, &global, &local, "argmax kernel");
}
