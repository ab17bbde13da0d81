#include "ckpt_rewrite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

void rewrite_checkpoint(const char *src, const char *dst, rewrite_fn fn, void *user, size_t first, size_t last)
{
    mamba_tensor_file_t *f;
    ck_assert_msg(mamba_tensor_file_open(src, &f) == MAMBA_OK, "%s", mamba_last_error(NULL));
    size_t n = mamba_tensor_file_count(f);
    if (last == 0 || last > n) last = n;
    mamba_tensor_t *out = calloc(n, sizeof *out);
    char (*names)[256] = calloc(n, 256);
    void **bufs = calloc(n, sizeof *bufs);
    size_t k = 0;
    for (size_t i = first; i < last; i++) {
        mamba_tensor_t t;
        mamba_tensor_file_get(f, i, &t);
        snprintf(names[k], 256, "%s", t.name);
        bufs[k] = malloc(t.nbytes + 1);
        memcpy(bufs[k], t.data, t.nbytes);
        if (fn && !fn(names[k], &t, &bufs[k], user)) {
            free(bufs[k]);
            bufs[k] = NULL;
            continue;
        }
        t.name = names[k];
        t.data = bufs[k];
        out[k++] = t;
    }
    ck_assert_msg(mamba_tensor_file_write(dst, out, k, NULL, 0) == MAMBA_OK, "%s", mamba_last_error(NULL));
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(names);
    free(out);
    mamba_tensor_file_close(f);
}

void write_config(const char *dir, const char *json)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, json, strlen(json));
}
