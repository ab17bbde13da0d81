/* safetensors writer: header built with cJSON, data written after it; the file appears
 * under its name only when complete (temporary file + rename). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "api/alloc.h"

static int add_number(cJSON *array, double v)
{
    cJSON *n = cJSON_CreateNumber(v);
    return n && cJSON_AddItemToArray(array, n);
}

static cJSON *build_header(const mamba_tensor_t *t, size_t n, const char *const *meta, size_t n_meta)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; m && i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1])) m = NULL;
        if (!m) { cJSON_Delete(root); return NULL; }
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = shape ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!offs || !cJSON_AddStringToObject(e, "dtype", mamba_dtype_name(t[i].dtype))) {
            cJSON_Delete(root);
            return NULL;
        }
        /* a node that could not be made would leave a header that does not describe the data */
        int ok = 1;
        for (int d = 0; ok && d < t[i].ndim; d++) ok = add_number(shape, (double)t[i].shape[d]);
        ok = ok && add_number(offs, (double)off);
        off += t[i].nbytes;
        ok = ok && add_number(offs, (double)off);
        if (!ok) {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

mamba_status_t mamba_tensor_file_write(const char *path, const mamba_tensor_t *tensors, size_t n,
                                       const char *const *meta, size_t n_meta)
{
    char *err = mb_tls_err();
    if (!path || (n && !tensors) || (n_meta && !meta))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_tensor_file_write: NULL argument");
    for (size_t i = 0; i < n; i++) {
        uint64_t count = 1;
        for (int d = 0; d < tensors[i].ndim; d++) count *= (uint64_t)tensors[i].shape[d];
        if (!tensors[i].name || tensors[i].ndim < 0 || tensors[i].ndim > MAMBA_MAX_DIMS ||
            count * mb_dtype_size(tensors[i].dtype) != tensors[i].nbytes ||
            (tensors[i].nbytes && !tensors[i].data))
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "%s: tensor %zu ('%s'): shape, dtype and nbytes disagree", path, i,
                             tensors[i].name ? tensors[i].name : "(null)");
        if (tensors[i].dtype == MAMBA_Q8)
            return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT,
                             "%s: tensor %zu ('%s'): Q8_0 is no safetensors dtype: write its I8 values and F16 "
                             "scales as two tensors (mamba_model_save_weights)", path, i, tensors[i].name);
    }
    cJSON *root = build_header(tensors, n, meta, n_meta);
    char *json = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory building the header", path);

    size_t jlen = strlen(json);
    size_t padded = (jlen + 7) & ~(size_t)7;   /* keep the data 8-byte aligned */
    size_t tlen = strlen(path) + 16;
    char *tmp = mb_malloc(tlen);
    mamba_status_t st = MAMBA_OK;
    FILE *fp = NULL;
    if (!tmp) { st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto out; }
    snprintf(tmp, tlen, "%s.tmpXXXXXX", path);
    int fd = mb_io_fault() ? -1 : mkstemp(tmp);
    if (fd < 0 || !(fp = fdopen(fd, "wb"))) {
        if (fd >= 0) close(fd);
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot create a temporary file: %s", path, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = !mb_io_fault() && fwrite(len8, 1, 8, fp) == 8 && fwrite(json, 1, jlen, fp) == jlen;
    for (size_t i = jlen; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    for (size_t i = 0; ok && i < n; i++)
        ok = !mb_io_fault() && (tensors[i].nbytes == 0 || fwrite(tensors[i].data, 1, tensors[i].nbytes, fp) == tensors[i].nbytes);
    if (fclose(fp) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
    }
out:
    free(tmp);
    cJSON_free(json);
    return st;
}
