/* Greedy decoding with the backend's argmax: each step's chosen ids stay on the device as the
 * next step's input and are appended to a device history, so nothing crosses to the host
 * until the end: steps run back to back. */
#include <stdlib.h>
#include <string.h>

#include "runner.h"
#include "api/alloc.h"

mamba_status_t mamba_generate_greedy(mamba_state_t *s, const int32_t *ids, size_t n, int32_t *out)
{
    if (!s) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "state is NULL");
    mamba_context_t *ctx = s->model->ctx;
    if (!ids || !out)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_generate_greedy: ids or out_ids is NULL");
    if (n == 0) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_generate_greedy: n_tokens = 0, expected > 0");
    if (n > ((size_t)1 << 40) / s->batch)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_generate_greedy: n_tokens = %zu is too large", n);
    mamba_status_t st = mb_check_ids(ctx, ids, s->batch, s->model->cfg.vocab_size);
    if (st != MAMBA_OK) return st;
    const mb_device_ops *dv = ctx->dv;
    const mb_model_ops *ops = ctx->ops;
    mb_device *dev = ctx->dev;
    mb_runner *r = NULL;
    if ((st = mb_runner_get(s->model, &r)) != MAMBA_OK) return st;
    const size_t B = s->batch, V = (size_t)s->model->cfg.vocab_size;
    /* history (n, B) then the NaN flag */
    const size_t hist_bytes = (n * B + 1) * sizeof(int32_t);
    int32_t *host = mb_malloc(hist_bytes);
    if (!host) return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "greedy decoding: out of host memory for %zu ids", n * B);
    mb_buffer *hist = NULL;
    if (mb_dev_alloc(ctx, hist_bytes, &hist) != 0) {
        free(host);
        return mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "%s backend: cannot allocate %zu bytes for %zu generated ids: %s",
                         ctx->backend_name, hist_bytes, n * B, mb_dev_alloc_error(ctx));
    }
    const mb_ptr flag = {hist, n * B * sizeof(int32_t)};
    int rc = dv->fill_zero(dev, flag, sizeof(int32_t));
    if (rc) st = mb_backend_fail(ctx, rc, "greedy decoding: flag reset");
    mb_ptr d_ids = {NULL, 0};
    if (st == MAMBA_OK) st = mb_runner_step_ids(r, s, &d_ids);
    if (st == MAMBA_OK && (rc = dv->upload(dev, d_ids, ids, B * sizeof *ids)) != 0)
        st = mb_backend_fail(ctx, rc, "upload of token ids");
    for (size_t t = 0; t < n && st == MAMBA_OK; t++) {
        mb_ptr d_logits;
        if ((st = mb_runner_step_enqueue(r, s, &d_logits)) != MAMBA_OK) break;
        /* the chosen ids go to the next step's input and to the history at once */
        if ((rc = ops->argmax(dev, d_logits, B, V, d_ids, (mb_ptr){hist, t * B * sizeof(int32_t)}, flag)) != 0)
            st = mb_backend_fail(ctx, rc, "argmax");
    }
    if (st == MAMBA_OK && (rc = dv->download(dev, host, (mb_ptr){hist, 0}, hist_bytes)) != 0)
        st = mb_backend_fail(ctx, rc, "download of generated ids");
    if (st == MAMBA_OK && (rc = dv->sync(dev)) != 0) st = mb_backend_fail(ctx, rc, "synchronize");
    if (st == MAMBA_OK && host[n * B])
        st = mb_seterr(ctx->err, MAMBA_ERR_MODEL, "greedy decoding: the logits held a NaN in one of the %zu steps", n);
    if (st == MAMBA_OK)
        for (size_t t = 0; t < n; t++)
            for (size_t b = 0; b < B; b++) out[b * n + t] = host[t * B + b];
    dv->free(dev, hist);
    free(host);
    return st;
}
