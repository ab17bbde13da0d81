/* The pytorch_model.bin reader on arbitrary bytes: as a whole archive (ZIP directory, pickle,
 * tensor placement) and, the same bytes, as data.pkl alone for the pickle interpreter. Each
 * must reject or accept, never crash, and an accepted file's tensors must be readable to their
 * last byte and found again by name. The reader is internal to libmamba, so this harness is
 * built from its sources. */
#include <stdlib.h>
#include <string.h>

#include "pickle_reader.h"
#include "torch_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char err[MB_ERR_LEN];
    static volatile unsigned sum; /* read by nobody: keeps the byte reads */
    mb_pk_tensor *pk;
    size_t n;
    if (mb_pickle_state_dict(data, size, "fuzz.pkl", &pk, &n, err) == MAMBA_OK) {
        for (size_t i = 0; i < n; i++)
            if (!pk[i].name || !pk[i].key || pk[i].ndim < 0 || pk[i].ndim > MAMBA_MAX_DIMS) abort();
        mb_pickle_free(pk, n);
    } else if (!err[0]) {
        abort();
    }
    mb_torch_file *f;
    err[0] = 0;
    if (mb_torch_file_open_bytes(data, size, "fuzz.bin", &f, err) != MAMBA_OK) {
        if (!err[0] || f) abort();
        return 0;
    }
    for (size_t i = 0; i < mb_torch_file_count(f); i++) {
        const mamba_tensor_t *t = mb_torch_file_tensor(f, i);
        size_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= (size_t)t->shape[d];
        if (count * mb_dtype_size(t->dtype) != t->nbytes) abort();
        const uint8_t *p = t->data;
        /* a view lies inside the input; ASan checks a copy's bounds */
        if (p >= data && p < data + size && t->nbytes > (size_t)(data + size - p)) abort();
        for (size_t k = 0; k < t->nbytes; k += 61) sum += p[k];
        if (t->nbytes) sum += p[t->nbytes - 1];
        if (mb_torch_file_lookup(f, t->name) != t) abort();
    }
    (void)sum;
    mb_torch_file_close(f);
    return 0;
}
