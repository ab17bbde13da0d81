/* mamba_alloc_host: host memory the device copies into at full speed. Page-locked through the
 * backend where it has host_alloc (CUDA), aligned ordinary memory elsewhere. The context keeps
 * the list of its blocks, so that mamba_forward can tell whether an output lies in one and
 * mamba_context_free can release what the caller did not. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "api/alloc.h"

/* Page-locked (from the backend's host_alloc) exactly when the backend has host_alloc. */
struct mb_host_block {
    void *p;
    size_t bytes;
};

void *mamba_alloc_host(mamba_context_t *ctx, size_t bytes)
{
    if (!ctx) {
        mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_alloc_host: context is NULL");
        return NULL;
    }
    if (bytes == 0 || bytes > ((size_t)1 << 46)) {
        mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_alloc_host: %zu bytes, expected 1 .. 2^46", bytes);
        return NULL;
    }
    if (ctx->n_host == ctx->cap_host) {
        size_t cap = ctx->cap_host ? 2 * ctx->cap_host : 8;
        struct mb_host_block *h = mb_realloc(ctx->host, cap * sizeof *h);
        if (!h) {
            mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_alloc_host: out of memory for the list of blocks");
            return NULL;
        }
        ctx->host = h;
        ctx->cap_host = cap;
    }
    struct mb_host_block b = {NULL, bytes};
    if (ctx->dv->host_alloc) {
        const int injected = mb_fault();
        int rc = injected ? MAMBA_ERR_OUT_OF_MEMORY : ctx->dv->host_alloc(ctx->dev, bytes, &b.p);
        if (rc != 0 || !b.p) {
            mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_alloc_host: %s backend cannot allocate %zu bytes: %s",
                      ctx->backend_name, bytes,
                      injected ? "allocation failed (injected fault)" : ctx->dv->last_error(ctx->dev));
            return NULL;
        }
    } else {
        b.p = mb_aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!b.p) {
            mb_seterr(ctx->err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_alloc_host: out of memory for %zu bytes", bytes);
            return NULL;
        }
    }
    ctx->host[ctx->n_host++] = b;
    return b.p;
}

static void release(mamba_context_t *ctx, const struct mb_host_block *b)
{
    if (ctx->dv->host_alloc) ctx->dv->host_free(ctx->dev, b->p);
    else free(b->p);
}

void mamba_free_host(mamba_context_t *ctx, void *ptr)
{
    if (!ctx || !ptr) return;
    for (size_t i = 0; i < ctx->n_host; i++) {
        if (ctx->host[i].p == ptr) {
            release(ctx, &ctx->host[i]);
            ctx->host[i] = ctx->host[--ctx->n_host];
            return;
        }
    }
    mb_log(ctx, MAMBA_LOG_WARN, "mamba_free_host: %p was not allocated by mamba_alloc_host on this context; ignored",
           ptr);
}

int mb_host_pinned(const mamba_context_t *ctx, const void *p, size_t bytes)
{
    if (!ctx->dv->host_alloc) return 0;
    const char *c = p;
    for (size_t i = 0; i < ctx->n_host; i++) {
        const char *b = ctx->host[i].p;
        if (c >= b && bytes <= ctx->host[i].bytes && (size_t)(c - b) <= ctx->host[i].bytes - bytes)
            return 1;
    }
    return 0;
}

void mb_host_free_all(mamba_context_t *ctx)
{
    if (ctx->n_host)
        mb_log(ctx, MAMBA_LOG_DEBUG, "context freed with %zu block(s) of mamba_alloc_host: freeing them", ctx->n_host);
    for (size_t i = 0; i < ctx->n_host; i++) release(ctx, &ctx->host[i]);
    free(ctx->host);
    ctx->host = NULL;
    ctx->n_host = ctx->cap_host = 0;
}
