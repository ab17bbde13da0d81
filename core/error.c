/* Status strings, error messages and logging. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MB_STR2(x) #x
#define MB_STR(x) MB_STR2(x)

const char *mamba_version(void)
{
    return MB_STR(MAMBA_VERSION_MAJOR) "." MB_STR(MAMBA_VERSION_MINOR) "." MB_STR(
        MAMBA_VERSION_PATCH);
}

const char *mamba_status_string(mamba_status_t st)
{
    switch (st) {
    case MAMBA_OK: return "success";
    case MAMBA_ERR_INVALID_ARGUMENT: return "invalid argument";
    case MAMBA_ERR_IO: return "I/O error";
    case MAMBA_ERR_FORMAT: return "malformed file";
    case MAMBA_ERR_MODEL: return "model does not match its config";
    case MAMBA_ERR_UNSUPPORTED: return "unsupported";
    case MAMBA_ERR_NO_BACKEND: return "backend not available";
    case MAMBA_ERR_NO_DEVICE: return "no such device";
    case MAMBA_ERR_OUT_OF_MEMORY: return "out of memory";
    case MAMBA_ERR_BACKEND: return "backend failure";
    }
    return "unknown status";
}

const char *mamba_dtype_name(mamba_dtype_t dt) { return mb_dtype_name(dt); }

static _Thread_local char tls_err[MB_ERR_LEN];

char *mb_tls_err(void) { return tls_err; }

const char *mamba_last_error(const mamba_context_t *ctx)
{
    return ctx ? ctx->err : tls_err;
}

mamba_status_t mb_seterr(char *err, mamba_status_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, MB_ERR_LEN, fmt, ap);
    va_end(ap);
    return st;
}

void mb_log(const mamba_context_t *ctx, mamba_log_level_t level, const char *fmt, ...)
{
    mamba_log_level_t max = ctx ? ctx->log_level : MAMBA_LOG_WARN;
    if (level > max) return;
    char msg[MB_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ctx && ctx->log) {
        ctx->log(level, msg, ctx->log_user);
        return;
    }
    static const char *const names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "libmamba %s: %s\n", names[level], msg);
}

mamba_status_t mb_backend_fail(mamba_context_t *ctx, int st, const char *what)
{
    const char *msg = ctx->dv->last_error(ctx->dev);
    mamba_status_t s = (st > 0 && st <= MAMBA_ERR_BACKEND) ? (mamba_status_t)st : MAMBA_ERR_BACKEND;
    mb_seterr(ctx->err, s, "%s backend: %s failed: %s", ctx->backend_name, what,
              msg && *msg ? msg : mamba_status_string(s));
    mb_log(ctx, MAMBA_LOG_ERROR, "%s", ctx->err);
    return s;
}
