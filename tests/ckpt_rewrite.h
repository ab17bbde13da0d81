/* Write a modified copy of a checkpoint (for tests of dtypes, naming, sharding, bad input). */
#ifndef MAMBA_CKPT_REWRITE_H
#define MAMBA_CKPT_REWRITE_H

#include "mamba.h"

/* Called per tensor with a private copy: may rename (name buffer of 256), change dtype,
 * data (malloc'd f32 when the source was f32) and shape; return 0 to drop the tensor. */
typedef int (*rewrite_fn)(char *name, mamba_tensor_t *t, void **data, void *user);

/* Copy src to dst, tensors [first, last) of the file's order only (last 0: all). */
void rewrite_checkpoint(const char *src, const char *dst, rewrite_fn fn, void *user, size_t first, size_t last);
/* Write a directory with config.json (given text, or copied from src_dir when NULL). */
void write_config(const char *dir, const char *json);

#endif
