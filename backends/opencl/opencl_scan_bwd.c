/* The selective scan's backward on OpenCL: the launches of kernels.cl's scan_bwd_* kernels
 * in the plan of api/scan_bwd.h, whose working memory lives in the device's scratch. */
#include <string.h>

#include "api/scan_bwd.h"
#include "opencl_internal.h"

#define M(x) sizeof(cl_mem), (const void *)&(x)
#define U(x) sizeof(cl_ulong), (const void *)&(x)
#define I(x) sizeof(cl_int), (const void *)&(x)
#define L(x) sizeof(cl_long), (const void *)&(x)

/* work-items of a scan_bwd_main work-group (SCAN_BWD_LOCAL in kernels.cl) */
#define BWD_LOCAL 64

/* Matches scan_bwd_params in kernels.cl: longs, then ulongs, then ints. */
typedef struct bwd_params {
    cl_long u_sb, u_st, u_sd, d_sb, d_st, d_sd, B_sb, B_st, B_sg, B_sn, C_sb, C_st, C_sg, C_sn;
    cl_long z_sb, z_st, z_sd, o_sb, o_st, o_sd;
    cl_ulong u_off, d_off, A_off, B_off, C_off, D_off, z_off, bias_off, si_off, o_off, dso_off;
    cl_ulong du_off, ddl_off, dz_off, dsi_off;
    cl_ulong H_off, hist_off, cB_off, cC_off, PB_off, PC_off, accA_off, accB_off, accC_off, accD_off, accbias_off;
    cl_ulong n_slots;
    cl_int B, D, L, N, G, softplus, chunk_len, n_chunks, n_classes, class_size, tiles;
    cl_int has_D, has_z, has_bias, has_si, has_dso;
    cl_int want_du, want_ddl, want_dz, want_dA, want_dD, want_dbias, want_dsi, tv_B, tv_C, tc_B, tc_C, pad;
} bwd_params;

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

static int launch(mb_device *d, int k, cl_uint dims, const size_t *global, const size_t *local, const char *what)
{
    cl_event ev = NULL;
    OCL_CHECK(d, clEnqueueNDRangeKernel(d->q, d->k[k], dims, NULL, global, local, 0, NULL, d->profile ? &ev : NULL), what);
    if (ev) ocl_profile(d, k, ev);
    return 0;
}

static cl_ulong elems(mb_ptr p) { return p.offset / 4; }

static void fill_params(bwd_params *p, const mb_scan_bwd_op *op, const mb_scan_bwd_plan *pl)
{
    const mb_scan_op *f = &op->fwd;
    memset(p, 0, sizeof *p);
    p->u_sb = f->u_sb; p->u_st = f->u_st; p->u_sd = f->u_sd;
    p->d_sb = f->delta_sb; p->d_st = f->delta_st; p->d_sd = f->delta_sd;
    p->B_sb = f->B_sb; p->B_st = f->B_st; p->B_sg = f->B_sg; p->B_sn = f->B_sn;
    p->C_sb = f->C_sb; p->C_st = f->C_st; p->C_sg = f->C_sg; p->C_sn = f->C_sn;
    p->z_sb = f->z_sb; p->z_st = f->z_st; p->z_sd = f->z_sd;
    p->o_sb = op->dout_sb; p->o_st = op->dout_st; p->o_sd = op->dout_sd;
    p->u_off = elems(f->u); p->d_off = elems(f->delta); p->A_off = elems(f->A); p->B_off = elems(f->B);
    p->C_off = elems(f->C); p->D_off = elems(f->D); p->z_off = elems(f->z); p->bias_off = elems(f->delta_bias);
    p->si_off = elems(f->state_in); p->o_off = elems(op->dout); p->dso_off = elems(op->dstate_out);
    p->du_off = elems(op->du); p->ddl_off = elems(op->ddelta); p->dz_off = elems(op->dz);
    p->dsi_off = elems(op->dstate_in);
    p->H_off = pl->off_H; p->hist_off = pl->off_hist; p->cB_off = pl->off_cB; p->cC_off = pl->off_cC; p->PB_off = pl->off_PB; p->PC_off = pl->off_PC;
    p->accA_off = pl->off_accA; p->accB_off = pl->off_accB; p->accC_off = pl->off_accC;
    p->accD_off = pl->off_accD; p->accbias_off = pl->off_accbias; p->n_slots = pl->slots;
    p->B = (cl_int)f->batch; p->D = (cl_int)f->dim; p->L = (cl_int)f->len; p->N = (cl_int)f->d_state;
    p->G = (cl_int)f->n_groups; p->softplus = f->delta_softplus;
    p->chunk_len = (cl_int)pl->chunk_len; p->n_chunks = (cl_int)pl->n_chunks;
    p->n_classes = (cl_int)pl->n_classes; p->class_size = (cl_int)pl->class_size; p->tiles = (cl_int)pl->tiles;
    p->has_D = f->D.buf != NULL; p->has_z = f->z.buf != NULL; p->has_bias = f->delta_bias.buf != NULL;
    p->has_si = f->state_in.buf != NULL; p->has_dso = op->dstate_out.buf != NULL;
    p->want_du = op->du.buf != NULL; p->want_ddl = op->ddelta.buf != NULL; p->want_dz = op->dz.buf != NULL;
    p->want_dA = op->dA.buf != NULL; p->want_dD = op->dD.buf != NULL; p->want_dbias = op->ddelta_bias.buf != NULL;
    p->want_dsi = op->dstate_in.buf != NULL;
    p->tv_B = pl->tv_B; p->tv_C = pl->tv_C; p->tc_B = pl->tc_B; p->tc_C = pl->tc_C;
}

/* scan_bwd_fold_ch: out[bo, go, w] from the per-channel accumulators at acc_off */
static int fold_channels(mb_device *d, const bwd_params *p, cl_mem s, size_t acc_off, int W, int n_out_g, int bshare,
                         mb_ptr out, ptrdiff_t osb, ptrdiff_t osg, ptrdiff_t osw)
{
    cl_mem om = ocl_mem(out);
    cl_ulong ao = acc_off, oo = elems(out);
    cl_long sb = osb, sg = osg, sw = osw;
    int rc = ocl_args(d, d->k[K_BWD_FOLD_CH], "scan backward fold", 11, sizeof *p, (const void *)p, U(ao), I(W),
                      I(n_out_g), I(bshare), M(om), U(oo), L(sb), L(sg), L(sw), M(s));
    const size_t local = 64, global = round_up((size_t)(bshare ? 1 : p->B) * (size_t)n_out_g * (size_t)W, 64);
    return rc ? rc : launch(d, K_BWD_FOLD_CH, 1, &global, &local, "scan backward fold kernel");
}

static int fold_varying(mb_device *d, const bwd_params *p, cl_mem s, int which, mb_ptr out)
{
    const cl_long sb = which ? p->C_sb : p->B_sb, sg = which ? p->C_sg : p->B_sg;
    cl_mem om = ocl_mem(out);
    cl_ulong oo = elems(out);
    cl_int w = which;
    int rc = ocl_args(d, d->k[K_BWD_FOLD_TV], "scan backward fold", 5, sizeof *p, (const void *)p, I(w), M(om), U(oo),
                      M(s));
    const size_t n = (size_t)(sb ? p->B : 1) * (size_t)p->L * (size_t)(sg ? p->G : 1) * (size_t)p->N;
    const size_t local = 64, global = round_up(n, 64);
    return rc ? rc : launch(d, K_BWD_FOLD_TV, 1, &global, &local, "scan backward fold kernel");
}

int ocl_scan_backward(mb_device *d, const mb_scan_bwd_op *op)
{
    const mb_scan_op *f = &op->fwd;
    if (f->d_state > 256)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "scan backward: d_state %zu, at most 256 supported", f->d_state);
    if (!f->n_groups || f->dim % f->n_groups)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: dim %zu not a multiple of n_groups %zu", f->dim,
                        f->n_groups);
    if (!f->u.buf || !f->delta.buf || !f->A.buf || !f->B.buf || !f->C.buf || !op->dout.buf)
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: u, delta, A, B, C and dout are required");
    if ((op->dz.buf && !f->z.buf) || (op->dD.buf && !f->D.buf) || (op->ddelta_bias.buf && !f->delta_bias.buf))
        return ocl_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "scan backward: dz, dD, ddelta_bias need z, D, delta_bias");
    if (f->batch > 65535 || f->batch * f->dim > 0x7fffffff || f->len > 0x7fffffff)
        return ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "scan backward: batch %zu (at most 65535), dim %zu, len %zu",
                        f->batch, f->dim, f->len);
    mb_scan_bwd_plan pl;
    mb_scan_bwd_plan_init(&pl, op, BWD_LOCAL, 0);
    bwd_params p;
    fill_params(&p, op, &pl);
    cl_mem s;
    int rc = ocl_scratch(d, pl.total * sizeof(float), &s);
    if (rc) return rc;
    cl_mem any = ocl_mem(f->u);
#define OR_ANY(ptr) ((ptr).buf ? ocl_mem(ptr) : any)
    cl_mem um = any, dm = ocl_mem(f->delta), am = ocl_mem(f->A), bm = ocl_mem(f->B), cm = ocl_mem(f->C);
    cl_mem Dm = OR_ANY(f->D), zm = OR_ANY(f->z), biasm = OR_ANY(f->delta_bias), sim = OR_ANY(f->state_in);
    cl_mem om = ocl_mem(op->dout), dsom = OR_ANY(op->dstate_out), dum = OR_ANY(op->du), ddlm = OR_ANY(op->ddelta);
    cl_mem dzm = OR_ANY(op->dz), dsim = OR_ANY(op->dstate_in);
#undef OR_ANY
    const int v = f->d_state <= 16 ? 0 : f->d_state <= 64 ? 1 : 2;
    const int ks = K_BWD_STATES_16 + v, km = K_BWD_MAIN_16 + v;
    rc = ocl_args(d, d->k[ks], "scan backward states", 8, sizeof p, (const void *)&p, M(um), M(dm), M(am), M(bm),
                  M(biasm), M(sim), M(s));
    const size_t l1 = 64, g1 = round_up(f->batch * f->dim, 64);
    if (!rc) rc = launch(d, ks, 1, &g1, &l1, "scan backward states kernel");
    if (!rc)
        rc = ocl_args(d, d->k[km], "scan backward", 16, sizeof p, (const void *)&p, M(um), M(dm), M(am), M(bm), M(cm),
                      M(Dm), M(zm), M(biasm), M(om), M(dsom), M(dum), M(ddlm), M(dzm), M(dsim), M(s));
    const size_t l2[3] = {BWD_LOCAL, 1, 1}, g2[3] = {pl.tiles * BWD_LOCAL, pl.n_classes, f->batch};
    if (!rc) rc = launch(d, km, 3, g2, l2, "scan backward kernel");
    if (!rc && pl.tv_B) rc = fold_varying(d, &p, s, 0, op->dB);
    if (!rc && pl.tv_C) rc = fold_varying(d, &p, s, 1, op->dC);
    const int D = (int)f->dim, N = (int)f->d_state, G = (int)f->n_groups;
    if (!rc && op->dA.buf) rc = fold_channels(d, &p, s, pl.off_accA, N, D, 1, op->dA, 0, N, 1);
    if (!rc && op->dD.buf) rc = fold_channels(d, &p, s, pl.off_accD, 1, D, 1, op->dD, 0, 1, 0);
    if (!rc && op->ddelta_bias.buf) rc = fold_channels(d, &p, s, pl.off_accbias, 1, D, 1, op->ddelta_bias, 0, 1, 0);
    if (!rc && pl.tc_B)
        rc = fold_channels(d, &p, s, pl.off_accB, N, f->B_sg ? G : 1, f->B_sb == 0, op->dB, f->B_sb, f->B_sg, f->B_sn);
    if (!rc && pl.tc_C)
        rc = fold_channels(d, &p, s, pl.off_accC, N, f->C_sg ? G : 1, f->C_sb == 0, op->dC, f->C_sb, f->C_sg, f->C_sn);
    return rc;
}
