/* Integer tensors (token ids, labels) read from safetensors files for the commands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_read_i32(const char *cmd, const char *path, const mamba_tensor_file_t *f, const char *name, int64_t lo,
                 int64_t hi, int32_t **out, size_t *rows, size_t *len)
{
    mamba_tensor_t t;
    if (mamba_tensor_file_find(f, name, &t) != MAMBA_OK) {
        cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        return 0;
    }
    if ((t.dtype != MAMBA_I64 && t.dtype != MAMBA_I32) || t.ndim < 1 || t.ndim > 2) {
        cli_error(cmd, EXIT_RUNTIME, "%s: %s must be int64 or int32 of shape (rows, L) or (L), found %s with %d dims",
                  path, name, mamba_dtype_name(t.dtype), t.ndim);
        return 0;
    }
    const size_t r = t.ndim == 2 ? (size_t)t.shape[0] : 1, l = (size_t)t.shape[t.ndim - 1];
    int32_t *ids = malloc((r * l > 0 ? r * l : 1) * sizeof *ids);
    if (!ids) {
        cli_error(cmd, EXIT_RUNTIME, "%s: out of memory for %s", path, name);
        return 0;
    }
    for (size_t i = 0; i < r * l; i++) {
        int64_t v;
        if (t.dtype == MAMBA_I64) {
            memcpy(&v, (const char *)t.data + 8 * i, 8);
        } else {
            int32_t w;
            memcpy(&w, (const char *)t.data + 4 * i, 4);
            v = w;
        }
        if (v < lo || v >= hi) {
            cli_error(cmd, EXIT_RUNTIME, "%s: %s[%zu, %zu] = %lld is out of range [%lld, %lld)", path, name, i / l, i % l,
                      (long long)v, (long long)lo, (long long)hi);
            free(ids);
            return 0;
        }
        ids[i] = (int32_t)v;
    }
    *out = ids;
    *rows = r;
    *len = l;
    return 1;
}
