/* A restricted pickle interpreter for the data.pkl of a torch.save'd state dict. It knows
 * only the opcodes of protocol 2 that such a file uses and only the globals a state dict
 * names (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the float storages);
 * it builds values, never calls anything: a global is a tag, REDUCE of a known tag builds a
 * dict or a tensor record. Anything else is refused with its name. */
#ifndef MB_PICKLE_READER_H
#define MB_PICKLE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* data.pkl of at most this size: a state dict takes about 100 bytes a tensor */
#define MB_PICKLE_MAX_BYTES ((size_t)16 << 20)
/* open MARKs at once (a state dict nests 3) and values on the stack (a SETITEMS batch of
 * Python's pickler holds 2000) */
#define MB_PICKLE_MAX_MARKS 64
#define MB_PICKLE_MAX_STACK ((size_t)1 << 20)
/* bytes of a string and of a GLOBAL's module or name */
#define MB_PICKLE_MAX_STR ((size_t)1 << 16)

/* One entry of the state dict: a tensor as _rebuild_tensor_v2 describes it. */
typedef struct mb_pk_tensor {
    char *name;
    char *key;               /* the storage's key: its data is the archive's data/<key>      */
    mamba_dtype_t dtype;     /* of the storage: F32, F16 or BF16                              */
    uint64_t numel;          /* elements of the storage, as the persistent id says            */
    uint64_t offset;         /* storage offset of the tensor, in elements                     */
    int ndim;
    int64_t size[MAMBA_MAX_DIMS], stride[MAMBA_MAX_DIMS];
} mb_pk_tensor;

/* Run the pickle in data[0, len) and read its result as a dict of name -> tensor. where names
 * the pickle in messages. *out (n entries, in the pickle's order) is freed with
 * mb_pickle_free. */
mamba_status_t mb_pickle_state_dict(const unsigned char *data, size_t len, const char *where, mb_pk_tensor **out,
                                    size_t *n, char *err);
void mb_pickle_free(mb_pk_tensor *t, size_t n);

#endif
