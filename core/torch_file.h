/* PyTorch checkpoints (pytorch_model.bin as torch.save writes it since PyTorch 1.6): a ZIP
 * archive of <name>/data.pkl, a pickled dict of name -> tensor, and <name>/data/<key>, the
 * raw little-endian bytes of each storage. The archive is memory-mapped and read with
 * zip_reader.c, the pickle run by the restricted interpreter of pickle_reader.c (it cannot
 * call anything). A tensor contiguous in its storage and aligned for its dtype points into
 * the mapping; a strided or misaligned one is copied once, at open. */
#ifndef MB_TORCH_FILE_H
#define MB_TORCH_FILE_H

#include <stddef.h>

#include "internal.h"

typedef struct mb_torch_file mb_torch_file;

/* *is_zip = 1 when the file starts like a ZIP archive (a torch.save checkpoint), 0 otherwise
 * (a safetensors file starts with its header's length). */
mamba_status_t mb_torch_file_sniff(const char *path, int *is_zip, char *err);
mamba_status_t mb_torch_file_open(const char *path, mb_torch_file **out, char *err);
/* The same over len bytes the caller keeps until mb_torch_file_close; path names them. */
mamba_status_t mb_torch_file_open_bytes(const unsigned char *bytes, size_t len, const char *path,
                                        mb_torch_file **out, char *err);
void mb_torch_file_close(mb_torch_file *f);
const char *mb_torch_file_path(const mb_torch_file *f);
size_t mb_torch_file_count(const mb_torch_file *f);
/* Tensor i (in the pickle's order), or the one named name (NULL when absent). Data is
 * little-endian, row-major and contiguous; the pointer lives until close. */
const mamba_tensor_t *mb_torch_file_tensor(const mb_torch_file *f, size_t i);
const mamba_tensor_t *mb_torch_file_lookup(const mb_torch_file *f, const char *name);

#endif
