/* mamba_scan_backward: the selective scan's backward op of a context's backend on host arrays
 * (staged in one device allocation in their own strided layouts, as mamba_scan does). */
#include <stdlib.h>

#include "internal.h"

/* Bytes spanned by a strided array of up to four dimensions: 1 + sum (extent-1)*stride. */
static size_t span4(const size_t *n, const ptrdiff_t *s, int k)
{
    size_t e = 1;
    for (int i = 0; i < k; i++) e += (n[i] - 1) * (size_t)s[i];
    return e * sizeof(float);
}

/* A gradient written per (b, t, d) needs distinct elements: no zero stride along a dimension
 * of more than one element. */
static int distinct(size_t B, ptrdiff_t sb, size_t L, ptrdiff_t st, size_t D, ptrdiff_t sd)
{
    return (B == 1 || sb) && (L == 1 || st) && (D == 1 || sd);
}

typedef struct staged {
    const void *host;   /* copied to the device first (NULL: nothing)       */
    float *back;        /* copied back after the op (NULL: an input)         */
    size_t bytes;
    mb_ptr *dst;
} staged;

static mamba_status_t check(mamba_context_t *ctx, const mamba_scan_args_t *a, const float *dout,
                            const mamba_scan_grads_t *g)
{
    char *err = ctx->err;
    if (!a || !dout || !g)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_scan_backward: args, dout and grads are required");
    if (!a->u || !a->delta || !a->A || !a->B || !a->C)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_scan_backward: u, delta, A, B and C are required");
    if (!a->batch || !a->dim || !a->len || !a->d_state || !a->n_groups)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_scan_backward: batch %zu, dim %zu, len %zu, d_state %zu, n_groups %zu must all be > 0",
                         a->batch, a->dim, a->len, a->d_state, a->n_groups);
    if (a->dim % a->n_groups)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_scan_backward: dim %zu is not a multiple of n_groups %zu", a->dim, a->n_groups);
    const ptrdiff_t strides[] = {a->u_sb, a->u_st, a->u_sd, a->delta_sb, a->delta_st, a->delta_sd, a->B_sb, a->B_st,
                                 a->B_sg, a->B_sn, a->C_sb, a->C_st, a->C_sg, a->C_sn, a->z_sb, a->z_st, a->z_sd,
                                 a->out_sb, a->out_st, a->out_sd};
    for (size_t i = 0; i < sizeof strides / sizeof strides[0]; i++)
        if (strides[i] < 0)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_scan_backward: stride %zu is negative (%td)", i,
                             strides[i]);
    if (a->d_state > 256)
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "mamba_scan_backward: d_state %zu, at most 256 supported",
                         a->d_state);
    if ((g->dz && !a->z) || (g->dD && !a->D) || (g->ddelta_bias && !a->delta_bias))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_scan_backward: grads->%s given but args->%s is NULL",
                         g->dz && !a->z ? "dz" : g->dD && !a->D ? "dD" : "ddelta_bias",
                         g->dz && !a->z ? "z" : g->dD && !a->D ? "D" : "delta_bias");
    const size_t B = a->batch, L = a->len, D = a->dim;
    const struct { const float *grad; ptrdiff_t sb, st, sd; const char *name; } per_step[] = {
        {g->du, a->u_sb, a->u_st, a->u_sd, "du (u's strides)"},
        {g->ddelta, a->delta_sb, a->delta_st, a->delta_sd, "ddelta (delta's strides)"},
        {g->dz, a->z_sb, a->z_st, a->z_sd, "dz (z's strides)"},
    };
    for (size_t i = 0; i < 3; i++)
        if (per_step[i].grad && !distinct(B, per_step[i].sb, L, per_step[i].st, D, per_step[i].sd))
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "mamba_scan_backward: %s has a zero stride (%td, %td, %td) over (batch %zu, len %zu, "
                             "dim %zu): its elements would overlap",
                             per_step[i].name, per_step[i].sb, per_step[i].st, per_step[i].sd, B, L, D);
    if (!ctx->ops->scan_backward)
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "mamba_scan_backward: the %s backend has no scan backward",
                         ctx->backend_name);
    return MAMBA_OK;
}

mamba_status_t mamba_scan_backward(mamba_context_t *ctx, const mamba_scan_args_t *a, const float *dout,
                                   mamba_scan_grads_t *g)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    mamba_status_t st = check(ctx, a, dout, g);
    if (st != MAMBA_OK) return st;
    const size_t B = a->batch, D = a->dim, L = a->len, N = a->d_state, G = a->n_groups;
    mb_scan_bwd_op op = {
        .fwd = {
            .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = G,
            .u_sb = a->u_sb, .u_st = a->u_st, .u_sd = a->u_sd,
            .delta_sb = a->delta_sb, .delta_st = a->delta_st, .delta_sd = a->delta_sd,
            .B_sb = a->B_sb, .B_st = a->B_st, .B_sg = a->B_sg, .B_sn = a->B_sn,
            .C_sb = a->C_sb, .C_st = a->C_st, .C_sg = a->C_sg, .C_sn = a->C_sn,
            .z_sb = a->z_sb, .z_st = a->z_st, .z_sd = a->z_sd,
            .delta_softplus = a->delta_softplus,
        },
        .dout_sb = a->out_sb, .dout_st = a->out_st, .dout_sd = a->out_sd,
    };
    mb_scan_op *f = &op.fwd;
    const size_t n3[3] = {B, L, D}, n4[4] = {B, L, G, N};
    const ptrdiff_t su[3] = {a->u_sb, a->u_st, a->u_sd}, sdl[3] = {a->delta_sb, a->delta_st, a->delta_sd};
    const ptrdiff_t sz[3] = {a->z_sb, a->z_st, a->z_sd}, so[3] = {a->out_sb, a->out_st, a->out_sd};
    const ptrdiff_t sB[4] = {a->B_sb, a->B_st, a->B_sg, a->B_sn}, sC[4] = {a->C_sb, a->C_st, a->C_sg, a->C_sn};
    const size_t u_bytes = span4(n3, su, 3), dl_bytes = span4(n3, sdl, 3), z_bytes = span4(n3, sz, 3);
    const size_t B_bytes = span4(n4, sB, 4), C_bytes = span4(n4, sC, 4), dn = D * N * 4, bdn = B * D * N * 4;
    /* outputs with strides are staged with their content, so that the elements the op does
     * not address come back as they were */
    const staged all[] = {
        {a->u, NULL, u_bytes, &f->u},
        {a->delta, NULL, dl_bytes, &f->delta},
        {a->A, NULL, dn, &f->A},
        {a->B, NULL, B_bytes, &f->B},
        {a->C, NULL, C_bytes, &f->C},
        {a->D, NULL, D * 4, &f->D},
        {a->z, NULL, z_bytes, &f->z},
        {a->delta_bias, NULL, D * 4, &f->delta_bias},
        {a->state_in, NULL, bdn, &f->state_in},
        {dout, NULL, span4(n3, so, 3), &op.dout},
        {g->dstate_out, NULL, bdn, &op.dstate_out},
        {g->du, g->du, u_bytes, &op.du},
        {g->ddelta, g->ddelta, dl_bytes, &op.ddelta},
        {g->dz, g->dz, z_bytes, &op.dz},
        {g->dB, g->dB, B_bytes, &op.dB},
        {g->dC, g->dC, C_bytes, &op.dC},
        {NULL, g->dA, dn, &op.dA},
        {NULL, g->dD, D * 4, &op.dD},
        {NULL, g->ddelta_bias, D * 4, &op.ddelta_bias},
        {NULL, g->dstate_in, bdn, &op.dstate_in},
    };
    enum { N_STAGED = sizeof all / sizeof all[0] };
    size_t offs[N_STAGED], total = 0;
    for (size_t i = 0; i < N_STAGED; i++) {
        offs[i] = total;
        if (all[i].host || all[i].back) total += (all[i].bytes + 255) / 256 * 256;
    }
    mb_buffer *buf;
    if (mb_dev_alloc(ctx, total, &buf) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_scan_backward: cannot allocate %zu bytes on %s: %s",
                         total, ctx->backend_name, mb_dev_alloc_error(ctx));
    int rc;
    for (size_t i = 0; i < N_STAGED && st == MAMBA_OK; i++) {
        if (!all[i].host && !all[i].back) continue;
        *all[i].dst = (mb_ptr){buf, offs[i]};
        if (all[i].host && (rc = ctx->dv->upload(ctx->dev, *all[i].dst, all[i].host, all[i].bytes)) != 0)
            st = mb_backend_fail(ctx, rc, "scan backward upload");
    }
    if (st == MAMBA_OK && (rc = ctx->ops->scan_backward(ctx->dev, &op)) != 0)
        st = mb_backend_fail(ctx, rc, "selective scan backward");
    for (size_t i = 0; i < N_STAGED && st == MAMBA_OK; i++)
        if (all[i].back && (rc = ctx->dv->download(ctx->dev, all[i].back, *all[i].dst, all[i].bytes)) != 0)
            st = mb_backend_fail(ctx, rc, "scan backward download");
    if (st == MAMBA_OK && (rc = ctx->dv->sync(ctx->dev)) != 0) st = mb_backend_fail(ctx, rc, "synchronize");
    ctx->dv->free(ctx->dev, buf);
    return st;
}
