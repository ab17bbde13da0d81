/* The safetensors reader on arbitrary bytes: it must reject or accept, never crash, and an
 * accepted file's tensors must lie inside it. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mamba_tensor_file_t *f;
    if (mamba_tensor_file_open(fuzz_write("t.safetensors", data, size), &f) != MAMBA_OK) return 0;
    size_t n = mamba_tensor_file_count(f);
    static volatile unsigned sum; /* read by nobody: keeps the byte reads */
    for (size_t i = 0; i < n; i++) {
        mamba_tensor_t t;
        if (mamba_tensor_file_get(f, i, &t) != MAMBA_OK) abort();
        if (t.nbytes > size) abort();
        /* touch every byte: ASan reports any read outside the mapping */
        for (size_t k = 0; k < t.nbytes; k += 61) sum += ((const uint8_t *)t.data)[k];
        if (t.nbytes) sum += ((const uint8_t *)t.data)[t.nbytes - 1];
        mamba_tensor_t again;
        if (mamba_tensor_file_find(f, t.name, &again) != MAMBA_OK || again.data != t.data) abort();
    }
    (void)sum;
    (void)mamba_tensor_file_metadata(f, "format");
    mamba_tensor_file_close(f);
    return 0;
}
