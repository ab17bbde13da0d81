/* Reading a selective-scan case (scan_case.h): u, delta, z (batch, dim, L); A (dim, N); B, C
 * (batch, N, L), (dim, N) or (batch, G, N, L); D, delta_bias (dim). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "scan_case.h"

const char *const scan_case_names[SC_COUNT] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"};

typedef struct bc_layout { size_t groups; ptrdiff_t sb, st, sg, sn; int mode; /* 0 var, 1 const, 2 grouped */ } bc_layout;

static int bc_of(const mamba_tensor_t *t, size_t B, size_t D, size_t L, size_t N, bc_layout *o)
{
    if (t->ndim == 3 && (size_t)t->shape[0] == B && (size_t)t->shape[1] == N && (size_t)t->shape[2] == L) {
        *o = (bc_layout){1, (ptrdiff_t)(N * L), 1, 0, (ptrdiff_t)L, 0};
        return 1;
    }
    if (t->ndim == 2 && (size_t)t->shape[0] == D && (size_t)t->shape[1] == N) {
        *o = (bc_layout){D, 0, 0, (ptrdiff_t)N, 1, 1};
        return 1;
    }
    if (t->ndim == 4 && (size_t)t->shape[0] == B && t->shape[1] > 0 && D % (size_t)t->shape[1] == 0 &&
        (size_t)t->shape[2] == N && (size_t)t->shape[3] == L) {
        size_t G = (size_t)t->shape[1];
        *o = (bc_layout){G, (ptrdiff_t)(G * N * L), 1, (ptrdiff_t)(N * L), (ptrdiff_t)L, 2};
        return 1;
    }
    return 0;
}

void scan_case_free(scan_case *c)
{
    for (int i = 0; i < SC_COUNT; i++) free(c->v[i]);
    mamba_tensor_file_close(c->file);
    memset(c, 0, sizeof *c);
}

int scan_case_load(const char *cmd, const char *in, int softplus, scan_case *c)
{
    memset(c, 0, sizeof *c);
    if (mamba_tensor_file_open(in, &c->file) != MAMBA_OK) {
        cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        return 0;
    }
    mamba_tensor_t *t = c->t;
    for (int i = 0; i < SC_COUNT; i++) {
        if (mamba_tensor_file_find(c->file, scan_case_names[i], &t[i]) != MAMBA_OK) {
            if (i <= SC_C) {
                cli_error(cmd, EXIT_RUNTIME, "%s: required tensor '%s' is missing", in, scan_case_names[i]);
                goto fail;
            }
            continue;
        }
        if (!(c->v[i] = cli_tensor_f32(&t[i]))) {
            cli_error(cmd, EXIT_RUNTIME, "%s: tensor '%s' has dtype %s, expected a float type", in, scan_case_names[i],
                      mamba_dtype_name(t[i].dtype));
            goto fail;
        }
    }
    if (t[SC_U].ndim != 3 || t[SC_A].ndim != 2) {
        cli_error(cmd, EXIT_RUNTIME, "%s: u must be (batch, dim, L) and A (dim, N)", in);
        goto fail;
    }
    const size_t B = (size_t)t[SC_U].shape[0], D = (size_t)t[SC_U].shape[1], L = (size_t)t[SC_U].shape[2];
    const size_t N = (size_t)t[SC_A].shape[1];
    if (!B || !D || !L || !N || (size_t)t[SC_A].shape[0] != D) {
        cli_error(cmd, EXIT_RUNTIME, "%s: u (%zu, %zu, %zu) and A (%lld, %zu) disagree or are empty", in, B, D, L,
                  (long long)t[SC_A].shape[0], N);
        goto fail;
    }
    const int same[] = {SC_DELTA, SC_Z};
    for (size_t k = 0; k < 2; k++) {
        const mamba_tensor_t *x = &t[same[k]];
        if (c->v[same[k]] && (x->ndim != 3 || x->shape[0] != (int64_t)B || x->shape[1] != (int64_t)D ||
                              x->shape[2] != (int64_t)L)) {
            cli_error(cmd, EXIT_RUNTIME, "%s: '%s' must have the shape of u (%zu, %zu, %zu)", in,
                      scan_case_names[same[k]], B, D, L);
            goto fail;
        }
    }
    for (int i = SC_D; i <= SC_BIAS; i += 2) /* D and delta_bias */
        if (c->v[i] && (t[i].ndim != 1 || t[i].shape[0] != (int64_t)D)) {
            cli_error(cmd, EXIT_RUNTIME, "%s: '%s' must have shape (%zu)", in, scan_case_names[i], D);
            goto fail;
        }
    bc_layout lb, lc;
    if (!bc_of(&t[SC_B], B, D, L, N, &lb) || !bc_of(&t[SC_C], B, D, L, N, &lc)) {
        cli_error(cmd, EXIT_RUNTIME,
                  "%s: B and C must be (batch, N, L) = (%zu, %zu, %zu), (dim, N) = (%zu, %zu) or (batch, G, N, L)", in,
                  B, N, L, D, N);
        goto fail;
    }
    /* B and C share one grouping in the op; express an input-dependent tensor with dim groups
     * (group stride 0) when the other is constant. */
    if (lb.groups != lc.groups) {
        bc_layout *var = lb.mode == 0 ? &lb : lc.mode == 0 ? &lc : NULL;
        bc_layout *other = var == &lb ? &lc : &lb;
        if (!var || other->mode != 1) {
            cli_error(cmd, EXIT_RUNTIME,
                      "%s: B and C with different group counts are supported only as one constant and one "
                      "input-dependent", in);
            goto fail;
        }
        var->groups = D;
        var->sg = 0;
    }
    if (softplus < 0) {
        const char *meta = mamba_tensor_file_metadata(c->file, "delta_softplus");
        if (!meta) meta = mamba_tensor_file_metadata(c->file, "softplus");
        softplus = meta && (strcmp(meta, "true") == 0 || strcmp(meta, "True") == 0 || strcmp(meta, "1") == 0);
    }
    c->batch = B;
    c->dim = D;
    c->len = L;
    c->d_state = N;
    const ptrdiff_t sb = (ptrdiff_t)(D * L), sd = (ptrdiff_t)L;
    const mamba_scan_args_t a = {
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = lb.groups,
        .u = c->v[SC_U], .u_sb = sb, .u_st = 1, .u_sd = sd,
        .delta = c->v[SC_DELTA], .delta_sb = sb, .delta_st = 1, .delta_sd = sd,
        .A = c->v[SC_A],
        .B = c->v[SC_B], .B_sb = lb.sb, .B_st = lb.st, .B_sg = lb.sg, .B_sn = lb.sn,
        .C = c->v[SC_C], .C_sb = lc.sb, .C_st = lc.st, .C_sg = lc.sg, .C_sn = lc.sn,
        .D = c->v[SC_D], .z = c->v[SC_Z], .z_sb = sb, .z_st = 1, .z_sd = sd,
        .delta_bias = c->v[SC_BIAS], .delta_softplus = softplus,
        .out_sb = sb, .out_st = 1, .out_sd = sd,
    };
    c->args = a;
    return 1;
fail:
    scan_case_free(c);
    return 0;
}
