/* Shared by the fuzz harnesses: the input written to a private temporary file (the loaders
 * read files), and one CPU context per process. */
#ifndef MAMBA_FUZZ_COMMON_H
#define MAMBA_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

/* Write data to a file in a per-process temporary directory; returns its path (static). */
const char *fuzz_write(const char *name, const uint8_t *data, size_t size);
const char *fuzz_dir(void);
mamba_context_t *fuzz_context(void);

#endif
