/* mamba scan --backward: the gradients of sum(out * dout) for a case in selective_scan_ref's
 * layout, named and shaped as tests/data/grads/scan_*.safetensors hold them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "scan_case.h"

int cmd_scan_backward(const scan_case *c, const char *in, const char *out, const char *backend, int threads)
{
    mamba_tensor_t dt;
    if (mamba_tensor_file_find(c->file, "dout", &dt) != MAMBA_OK)
        return cli_error("scan", EXIT_RUNTIME, "%s: --backward needs a tensor 'dout' (the cotangent of out)", in);
    const mamba_tensor_t *u = &c->t[SC_U];
    if (dt.ndim != 3 || dt.shape[0] != u->shape[0] || dt.shape[1] != u->shape[1] || dt.shape[2] != u->shape[2])
        return cli_error("scan", EXIT_RUNTIME, "%s: 'dout' must have the shape of u (%lld, %lld, %lld)", in,
                         (long long)u->shape[0], (long long)u->shape[1], (long long)u->shape[2]);
    float *dout = cli_tensor_f32(&dt);
    if (!dout)
        return cli_error("scan", EXIT_RUNTIME, "%s: tensor 'dout' has dtype %s, expected a float type", in,
                         mamba_dtype_name(dt.dtype));
    /* one gradient per input present, in its shape */
    float *g[SC_COUNT] = {0};
    mamba_tensor_t w[SC_COUNT];
    char names[SC_COUNT][16];
    int n = 0, rc = EXIT_RUNTIME;
    mamba_context_t *ctx = NULL;
    for (int i = 0; i < SC_COUNT; i++) {
        if (!c->v[i]) continue;
        size_t cnt = 1;
        for (int k = 0; k < c->t[i].ndim; k++) cnt *= (size_t)c->t[i].shape[k];
        if (!(g[i] = calloc(cnt ? cnt : 1, sizeof(float)))) {
            cli_error("scan", EXIT_RUNTIME, "out of memory");
            goto done;
        }
        snprintf(names[n], sizeof names[n], "d_%s", scan_case_names[i]);
        w[n] = (mamba_tensor_t){.name = names[n], .dtype = MAMBA_F32, .ndim = c->t[i].ndim, .data = g[i],
                                .nbytes = cnt * sizeof(float)};
        memcpy(w[n].shape, c->t[i].shape, sizeof w[n].shape);
        n++;
    }
    mamba_scan_grads_t gr = {
        .du = g[SC_U], .ddelta = g[SC_DELTA], .dA = g[SC_A], .dB = g[SC_B], .dC = g[SC_C], .dD = g[SC_D],
        .dz = g[SC_Z], .ddelta_bias = g[SC_BIAS],
    };
    if (!(ctx = cli_context("scan", backend, threads))) goto done;
    const double t0 = cli_now();
    if (mamba_scan_backward(ctx, &c->args, dout, &gr) != MAMBA_OK) {
        cli_error("scan", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    fprintf(stderr, "scan backward: (%zu, %zu, %zu, %zu) on %s (%s) in %.3f ms (with transfers)\n", c->batch, c->dim,
            c->len, c->d_state, mamba_context_backend(ctx), mamba_context_device(ctx), 1e3 * (cli_now() - t0));
    if (mamba_tensor_file_write(out, w, (size_t)n, NULL, 0) != MAMBA_OK) {
        cli_error("scan", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    rc = EXIT_OK;
done:
    for (int i = 0; i < SC_COUNT; i++) free(g[i]);
    free(dout);
    mamba_context_free(ctx);
    return rc;
}
