/* Helpers shared by the subcommands: number parsing, contexts and models. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

int cli_error(const char *cmd, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mamba %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int cli_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int cli_parse_float(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

int cli_parse_dtype(const char *s, mamba_dtype_t *out)
{
    if (strcmp(s, "f32") == 0) *out = MAMBA_F32;
    else if (strcmp(s, "f16") == 0) *out = MAMBA_F16;
    else if (strcmp(s, "bf16") == 0) *out = MAMBA_BF16;
    else return 0;
    return 1;
}

int cli_parse_ids(const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return 0;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX || (*end && *end != ',') || (*end == ',' && !end[1])) {
            free(v);
            return 0;
        }
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (k == 0) {
        free(v);
        return 0;
    }
    *ids = v;
    *n = k;
    return 1;
}

mamba_weights_t cli_weights = MAMBA_WEIGHTS_STORED;

mamba_context_t *cli_context(const char *cmd, const char *backend, int n_threads)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    if (cli_weights != MAMBA_WEIGHTS_STORED) o.weights = cli_weights;
    if (backend) o.backend = backend;
    o.n_threads = n_threads;
    mamba_context_t *ctx;
    mamba_status_t st = mamba_context_create(&o, &ctx);
    if (st != MAMBA_OK) {
        cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        return NULL;
    }
    return ctx;
}

mamba_model_t *cli_model(const char *cmd, mamba_context_t *ctx, const char *spec, mamba_dtype_t dtype, uint64_t seed)
{
    mamba_model_t *m = NULL;
    mamba_config_t cfg;
    struct stat sb;
    if (stat(spec, &sb) != 0 && mamba_config_standard(spec, &cfg) == MAMBA_OK) {
        if (mamba_model_create_synthetic(ctx, &cfg, dtype, seed, &m) != MAMBA_OK)
            cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        return m;
    }
    if (stat(spec, &sb) != 0) {
        cli_error(cmd, EXIT_RUNTIME, "--model %s: not a checkpoint directory (%s) nor a size (130m, 370m, 790m, 1.4b, 2.8b)",
                  spec, strerror(errno));
        return NULL;
    }
    if (mamba_model_load(ctx, spec, &m) != MAMBA_OK) cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(ctx));
    return m;
}

float *cli_tensor_f32(const mamba_tensor_t *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    float *out = malloc((n ? n : 1) * sizeof *out);
    if (!out) return NULL;
    const unsigned char *src = t->data;
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case MAMBA_F32: memcpy(&out[i], src + 4 * i, 4); break;
        case MAMBA_F64: { double d; memcpy(&d, src + 8 * i, 8); out[i] = (float)d; break; }
        case MAMBA_F16: { uint16_t h; memcpy(&h, src + 2 * i, 2); out[i] = mamba_f16_to_f32(h); break; }
        case MAMBA_BF16: { uint16_t h; memcpy(&h, src + 2 * i, 2); out[i] = mamba_bf16_to_f32(h); break; }
        default: free(out); return NULL;
        }
    }
    return out;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *cli_option_name(const struct option *opts, int c)
{
    for (; opts->name; opts++)
        if (opts->val == c) return opts->name;
    return "?";
}
