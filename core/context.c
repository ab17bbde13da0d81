/* Contexts: a backend, one of its devices, and the error and log settings. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "api/alloc.h"

void mamba_context_options_init(mamba_context_options_t *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->backend = "auto";
    o->log_level = MAMBA_LOG_WARN;
    /* the implementation switches' defaults (documented in mamba.h) */
    const char *gemm = getenv("MAMBA_CUDA_GEMM"), *tf32 = getenv("MAMBA_CUDA_TF32");
    if (tf32 && strcmp(tf32, "1") == 0) o->gemm = MAMBA_GEMM_TF32;
    else if (gemm && strcmp(gemm, "cublas") == 0) o->gemm = MAMBA_GEMM_VENDOR;
    o->portable_kernels = getenv("MAMBA_CPU_PORTABLE") != NULL;
    const char *compute = getenv("MAMBA_COMPUTE");
    if (compute && strcmp(compute, "f32") == 0) o->compute = MAMBA_COMPUTE_F32;
    const char *weights = getenv("MAMBA_WEIGHTS");
    if (weights && strcmp(weights, "q8") == 0) o->weights = MAMBA_WEIGHTS_Q8;
    o->profile = getenv("MAMBA_OPENCL_PROFILE") != NULL;
    if (o->profile) o->log_level = MAMBA_LOG_INFO; /* where the profile is reported */
}

/* What a backend reports that is not an error goes to the context's log. */
static void backend_log(void *user, mamba_log_level_t level, const char *message)
{
    mb_log((const mamba_context_t *)user, level, "%s", message);
}

/* Open device index of backend name; index < 0: the first usable one (a GPU for auto). */
static mamba_status_t open_backend(mamba_context_t *ctx, const char *name, int index, int want_gpu,
                                   const mb_open_options *oo, char *why, size_t why_len)
{
    void *module;
    const mb_backend *be = mb_backend_get(name, &module, why, why_len);
    if (!be) return MAMBA_ERR_NO_BACKEND;
    char note[256] = "";
    int n = be->device->device_count(note, sizeof note);
    if (n <= 0) {
        snprintf(why, why_len, "%s", note[0] ? note : "no device found");
        if (module) dlclose(module);
        return MAMBA_ERR_NO_BACKEND;
    }
    if (index >= n) {
        snprintf(why, why_len, "device index %d out of range: %d device%s found", index, n, n == 1 ? "" : "s");
        if (module) dlclose(module);
        return MAMBA_ERR_NO_DEVICE;
    }
    int first = index >= 0 ? index : 0, last = index >= 0 ? index : n - 1;
    mamba_status_t st = MAMBA_ERR_NO_DEVICE;
    snprintf(why, why_len, "no usable %sdevice", want_gpu ? "GPU " : "");
    for (int d = first; d <= last; d++) {
        mb_device_props p;
        memset(&p, 0, sizeof p);
        be->device->device_props(d, &p);
        if (index < 0 && (!p.usable || (want_gpu && !p.is_gpu))) continue;
        mb_device *dev = NULL;
        char err[512] = "";
        int rc = be->device->open(d, oo, &dev, err, sizeof err);
        if (rc != 0) {
            snprintf(why, why_len, "device %d (%s): %s", d, p.name, err);
            st = rc > 0 && rc <= MAMBA_ERR_BACKEND ? (mamba_status_t)rc : MAMBA_ERR_BACKEND;
            continue;
        }
        ctx->be = be;
        ctx->dv = be->device;
        ctx->ops = be->ops;
        ctx->fused = be->fused;
        ctx->probe = be->probe;
        ctx->dev = dev;
        ctx->module = module;
        snprintf(ctx->backend_name, sizeof ctx->backend_name, "%s", name);
        snprintf(ctx->device_name, sizeof ctx->device_name, "%s", p.name);
        return MAMBA_OK;
    }
    if (module) dlclose(module);
    return st;
}

static int parse_backend(const char *spec, char *name, size_t name_len, int *index)
{
    const char *colon = strchr(spec, ':');
    size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
    if (n == 0 || n >= name_len) return 0;
    memcpy(name, spec, n);
    name[n] = 0;
    *index = -1;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || v < 0 || v > 1024) return 0;
        *index = (int)v;
    }
    return 1;
}

mamba_status_t mamba_context_create(const mamba_context_options_t *opts, mamba_context_t **out)
{
    char *err = mb_tls_err();
    if (!out) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_context_create: out is NULL");
    *out = NULL;
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    if (opts) o = *opts;
    if (!o.backend) o.backend = "auto";
    if (o.n_threads < 0 || o.n_threads > 4096)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "n_threads = %d, expected 0..4096", o.n_threads);
    if (o.prefill_chunk > ((size_t)1 << 24))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "prefill_chunk = %zu, expected at most %zu",
                         o.prefill_chunk, (size_t)1 << 24);
    char name[16];
    int index;
    if (!parse_backend(o.backend, name, sizeof name, &index))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                         "backend '%s': expected auto, cpu, opencl[:i] or cuda[:i]", o.backend);
    mamba_context_t *ctx = mb_calloc(1, sizeof *ctx);
    if (!ctx) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory creating a context");
    ctx->log = o.log;
    ctx->log_user = o.log_user;
    ctx->log_level = o.log_level;
    ctx->prefill_chunk = o.prefill_chunk ? o.prefill_chunk : 2048;
    if (o.gemm < MAMBA_GEMM_DEFAULT || o.gemm > MAMBA_GEMM_TF32) {
        free(ctx);
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "gemm = %d, expected MAMBA_GEMM_DEFAULT, _VENDOR or _TF32",
                         (int)o.gemm);
    }
    if (o.compute != MAMBA_COMPUTE_AUTO && o.compute != MAMBA_COMPUTE_F32) {
        free(ctx);
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "compute = %d, expected MAMBA_COMPUTE_AUTO or _F32",
                         (int)o.compute);
    }
    if (o.weights != MAMBA_WEIGHTS_STORED && o.weights != MAMBA_WEIGHTS_Q8) {
        free(ctx);
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "weights = %d, expected MAMBA_WEIGHTS_STORED or _Q8",
                         (int)o.weights);
    }
    ctx->weights = o.weights;
    const mb_open_options oo = {
        .n_threads = o.n_threads, .portable_kernels = o.portable_kernels, .gemm = (mb_gemm_mode)o.gemm,
        .compute_f32 = o.compute == MAMBA_COMPUTE_F32,
        .profile = o.profile, .log = backend_log, .log_user = ctx,
    };
    char why[512] = "";
    mamba_status_t st;
    if (strcmp(name, "auto") == 0) {
        if (index >= 0) {
            free(ctx);
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "backend 'auto' takes no device index");
        }
        st = open_backend(ctx, "cuda", -1, 1, &oo, why, sizeof why);
        if (st != MAMBA_OK) mb_log(ctx, MAMBA_LOG_INFO, "auto: cuda skipped: %s", why);
        if (st != MAMBA_OK) st = open_backend(ctx, "opencl", -1, 1, &oo, why, sizeof why);
        if (st != MAMBA_OK) mb_log(ctx, MAMBA_LOG_INFO, "auto: opencl GPU skipped: %s", why);
        if (st != MAMBA_OK) st = open_backend(ctx, "cpu", -1, 0, &oo, why, sizeof why);
    } else {
        st = open_backend(ctx, name, index, strcmp(name, "opencl") == 0 && index < 0, &oo, why, sizeof why);
        if (st != MAMBA_OK && strcmp(name, "opencl") == 0 && index < 0 && strstr(why, "no usable GPU"))
            st = open_backend(ctx, name, index, 0, &oo, why, sizeof why); /* no GPU: any device */
    }
    if (st != MAMBA_OK) {
        free(ctx);
        return mb_seterr(err, st, "backend '%s' is not available: %s", o.backend, why);
    }
    *out = ctx;
    return MAMBA_OK;
}

void mamba_context_free(mamba_context_t *ctx)
{
    if (!ctx) return;
    if (ctx->n_models)
        mb_log(ctx, MAMBA_LOG_WARN, "context freed while %d model(s) still use it: free them first",
               ctx->n_models);
    mb_host_free_all(ctx);
    ctx->dv->close(ctx->dev);
    if (ctx->module) dlclose(ctx->module);
    free(ctx);
}

const char *mamba_context_backend(const mamba_context_t *ctx) { return ctx ? ctx->backend_name : ""; }
const char *mamba_context_device(const mamba_context_t *ctx) { return ctx ? ctx->device_name : ""; }

mamba_status_t mamba_context_synchronize(mamba_context_t *ctx)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    MB_TRY_BE(ctx, ctx->dv->sync(ctx->dev), "synchronize");
    return MAMBA_OK;
}

int mb_dev_alloc(mamba_context_t *ctx, size_t bytes, mb_buffer **out)
{
    *out = NULL;
    ctx->alloc_injected = mb_fault();
    return ctx->alloc_injected ? MAMBA_ERR_OUT_OF_MEMORY : ctx->dv->alloc(ctx->dev, bytes, out);
}

const char *mb_dev_alloc_error(const mamba_context_t *ctx)
{
    return ctx->alloc_injected ? "allocation failed (injected fault)" : ctx->dv->last_error(ctx->dev);
}
