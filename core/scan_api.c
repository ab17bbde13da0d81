/* mamba_scan: the selective scan op of a context's backend on host arrays (for the
 * `mamba scan` command and for checking kernels against external dumps). */
#include <stdlib.h>

#include "internal.h"

/* Bytes spanned by a strided 3-D array: 1 + sum (extent-1)*|stride| elements. */
static size_t span(size_t n0, ptrdiff_t s0, size_t n1, ptrdiff_t s1, size_t n2, ptrdiff_t s2)
{
    size_t e = 1;
    e += (n0 - 1) * (size_t)(s0 < 0 ? -s0 : s0);
    e += (n1 - 1) * (size_t)(s1 < 0 ? -s1 : s1);
    e += (n2 - 1) * (size_t)(s2 < 0 ? -s2 : s2);
    return e * 4;
}

typedef struct staged { mb_buffer *buf; size_t off; } staged;

mamba_status_t mamba_scan(mamba_context_t *ctx, const mamba_scan_args_t *a)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    if (!a || !a->u || !a->delta || !a->A || !a->B || !a->C || !a->out)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_scan: u, delta, A, B, C and out are required");
    if (!a->batch || !a->dim || !a->len || !a->d_state || !a->n_groups)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_scan: batch %zu, dim %zu, len %zu, d_state %zu, n_groups %zu must all be > 0",
                         a->batch, a->dim, a->len, a->d_state, a->n_groups);
    if (a->dim % a->n_groups)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_scan: dim %zu is not a multiple of n_groups %zu",
                         a->dim, a->n_groups);
    const ptrdiff_t strides[] = {a->u_sb, a->u_st, a->u_sd, a->delta_sb, a->delta_st, a->delta_sd, a->B_sb, a->B_st,
                                 a->B_sg, a->B_sn, a->C_sb, a->C_st, a->C_sg, a->C_sn, a->z_sb, a->z_st, a->z_sd,
                                 a->out_sb, a->out_st, a->out_sd};
    for (size_t i = 0; i < sizeof strides / sizeof strides[0]; i++)
        if (strides[i] < 0)
            return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_scan: stride %zu is negative (%td)", i,
                             strides[i]);
    if (a->d_state > 256)
        return mb_seterr(ctx->err, MAMBA_ERR_UNSUPPORTED, "mamba_scan: d_state %zu, at most 256 supported", a->d_state);
    /* Stage every array in one device allocation, in its own strided layout. */
    struct { const void *host; size_t bytes; mb_ptr *dst; } in[9];
    mb_scan_op op = {
        .batch = a->batch, .dim = a->dim, .len = a->len, .d_state = a->d_state, .n_groups = a->n_groups,
        .u_sb = a->u_sb, .u_st = a->u_st, .u_sd = a->u_sd,
        .delta_sb = a->delta_sb, .delta_st = a->delta_st, .delta_sd = a->delta_sd,
        .B_sb = a->B_sb, .B_st = a->B_st, .B_sg = a->B_sg, .B_sn = a->B_sn,
        .C_sb = a->C_sb, .C_st = a->C_st, .C_sg = a->C_sg, .C_sn = a->C_sn,
        .z_sb = a->z_sb, .z_st = a->z_st, .z_sd = a->z_sd,
        .delta_softplus = a->delta_softplus,
        .out_sb = a->out_sb, .out_st = a->out_st, .out_sd = a->out_sd,
    };
    const size_t B = a->batch, D = a->dim, L = a->len, N = a->d_state, G = a->n_groups;
    size_t n_in = 0;
#define STAGE(ptr, nbytes, field) do { if (ptr) { in[n_in].host = (ptr); in[n_in].bytes = (nbytes); in[n_in].dst = &op.field; n_in++; } } while (0)
    STAGE(a->u, span(B, a->u_sb, L, a->u_st, D, a->u_sd), u);
    STAGE(a->delta, span(B, a->delta_sb, L, a->delta_st, D, a->delta_sd), delta);
    STAGE(a->A, D * N * 4, A);
    STAGE(a->B, span(B, a->B_sb, L, a->B_st, G, a->B_sg) + (N - 1) * (size_t)(a->B_sn < 0 ? -a->B_sn : a->B_sn) * 4, B);
    STAGE(a->C, span(B, a->C_sb, L, a->C_st, G, a->C_sg) + (N - 1) * (size_t)(a->C_sn < 0 ? -a->C_sn : a->C_sn) * 4, C);
    STAGE(a->D, D * 4, D);
    STAGE(a->z, span(B, a->z_sb, L, a->z_st, D, a->z_sd), z);
    STAGE(a->delta_bias, D * 4, delta_bias);
    STAGE(a->state_in, B * D * N * 4, state_in);
#undef STAGE
    size_t out_bytes = span(B, a->out_sb, L, a->out_st, D, a->out_sd), state_bytes = B * D * N * 4;
    size_t total = 0, offs[9];
    for (size_t i = 0; i < n_in; i++) { offs[i] = total; total += (in[i].bytes + 255) / 256 * 256; }
    size_t out_off = total;
    total += (out_bytes + 255) / 256 * 256;
    size_t state_off = total;
    total += state_bytes;
    mb_buffer *buf;
    if (mb_dev_alloc(ctx, total, &buf) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_scan: cannot allocate %zu bytes on %s: %s", total,
                         ctx->backend_name, mb_dev_alloc_error(ctx));
    mamba_status_t st = MAMBA_OK;
    int rc;
    for (size_t i = 0; i < n_in && st == MAMBA_OK; i++) {
        *in[i].dst = (mb_ptr){buf, offs[i]};
        rc = ctx->dv->upload(ctx->dev, *in[i].dst, in[i].host, in[i].bytes);
        if (rc) st = mb_backend_fail(ctx, rc, "scan input upload");
    }
    op.out = (mb_ptr){buf, out_off};
    /* out may be strided with gaps: stage its current content so the gaps come back unchanged */
    if (st == MAMBA_OK && (rc = ctx->dv->upload(ctx->dev, op.out, a->out, out_bytes)) != 0)
        st = mb_backend_fail(ctx, rc, "scan output upload");
    op.state_out = a->state_out ? (mb_ptr){buf, state_off} : (mb_ptr){NULL, 0};
    if (st == MAMBA_OK && (rc = ctx->ops->scan(ctx->dev, &op)) != 0) st = mb_backend_fail(ctx, rc, "selective scan");
    if (st == MAMBA_OK && (rc = ctx->dv->download(ctx->dev, a->out, op.out, out_bytes)) != 0)
        st = mb_backend_fail(ctx, rc, "scan output download");
    if (st == MAMBA_OK && a->state_out && (rc = ctx->dv->download(ctx->dev, a->state_out, op.state_out, state_bytes)) != 0)
        st = mb_backend_fail(ctx, rc, "scan state download");
    if (st == MAMBA_OK && (rc = ctx->dv->sync(ctx->dev)) != 0) st = mb_backend_fail(ctx, rc, "synchronize");
    ctx->dv->free(ctx->dev, buf);
    return st;
}
