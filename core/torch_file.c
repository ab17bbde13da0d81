/* torch.save archives: the ZIP directory, the state dict's pickle, and each tensor's place in
 * its storage, every one checked against the bytes it claims. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "torch_file.h"
#include "pickle_reader.h"
#include "zip_reader.h"
#include "api/alloc.h"

/* a storage key is a number torch.save assigns; a longer one is refused */
#define MAX_KEY 64

struct mb_torch_file {
    char *path;
    int fd;
    unsigned char *map;         /* mapped here (fd >= 0) or the caller's bytes             */
    size_t map_len;
    mb_zip zip;
    mb_pk_tensor *pk;           /* what the pickle said; owns the names                     */
    mamba_tensor_t *tensors;
    void **copies;              /* per tensor: its contiguous copy, or NULL                 */
    const mamba_tensor_t **order; /* the tensors sorted by name                             */
    size_t n;
};

void mb_torch_file_close(mb_torch_file *f)
{
    if (!f) return;
    for (size_t i = 0; f->copies && i < f->n; i++) free(f->copies[i]);
    free(f->copies);
    free(f->tensors);
    free(f->order);
    mb_pickle_free(f->pk, f->n);
    mb_zip_close(&f->zip);
    if (f->fd >= 0) {
        if (f->map) munmap(f->map, f->map_len);
        close(f->fd);
    }
    free(f->path);
    free(f);
}

const char *mb_torch_file_path(const mb_torch_file *f) { return f->path; }
size_t mb_torch_file_count(const mb_torch_file *f) { return f->n; }
const mamba_tensor_t *mb_torch_file_tensor(const mb_torch_file *f, size_t i) { return i < f->n ? &f->tensors[i] : NULL; }

const mamba_tensor_t *mb_torch_file_lookup(const mb_torch_file *f, const char *name)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const mamba_tensor_t *t = f->order[mid];
        const int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

mamba_status_t mb_torch_file_sniff(const char *path, int *is_zip, char *err)
{
    *is_zip = 0;
    FILE *fp = mb_fopen(path, "rb");
    if (!fp) return mb_seterr(err, MAMBA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[4] = {0};
    const size_t got = mb_fread(magic, 1, sizeof magic, fp);
    const int bad = ferror(fp);
    fclose(fp);
    if (bad) return mb_seterr(err, MAMBA_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    /* a local header, or the end record of an archive with no entry */
    *is_zip = got == 4 && magic[0] == 'P' && magic[1] == 'K' &&
              ((magic[2] == 3 && magic[3] == 4) || (magic[2] == 5 && magic[3] == 6));
    /* before PyTorch 1.6 torch.save wrote pickles one after another, starting with PROTO 2 and
     * a LONG1 of 10 bytes (its magic number); as a safetensors length that is far past any limit */
    if (got == 4 && magic[0] == 0x80 && magic[1] == 2 && magic[2] == 0x8a && magic[3] == 10)
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED,
                         "%s: a PyTorch checkpoint in the legacy format (before PyTorch 1.6, not a ZIP archive) is "
                         "not supported: save it again with torch.save or as safetensors", path);
    return MAMBA_OK;
}

/* The archive's record name: the directory of its one <name>/data.pkl. */
static mamba_status_t find_pickle(const mb_torch_file *f, const mb_zip_entry **pkl, size_t *prefix_len, char *err)
{
    *pkl = NULL;
    for (size_t i = 0; i < f->zip.n; i++) {
        const char *name = f->zip.entries[i].name, *slash = strchr(name, '/');
        if (!slash || slash == name || strcmp(slash, "/data.pkl") != 0) continue;
        if (*pkl) {
            char q[96], r[96];
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: two pickles, '%s' and '%s': expected one <name>/data.pkl",
                             f->path, mb_quote(q, sizeof q, (*pkl)->name, strlen((*pkl)->name)),
                             mb_quote(r, sizeof r, name, strlen(name)));
        }
        *pkl = &f->zip.entries[i];
        *prefix_len = (size_t)(slash - name);
    }
    if (!*pkl)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: a ZIP archive without a <name>/data.pkl entry: not a torch.save checkpoint", f->path);
    return MAMBA_OK;
}

static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* Gather a strided tensor's elements in row-major order. */
static void gather(unsigned char *dst, const unsigned char *storage, const mb_pk_tensor *t, size_t esz, uint64_t numel)
{
    int64_t idx[MAMBA_MAX_DIMS] = {0};
    uint64_t at = t->offset;   /* element index in the storage of the current element */
    for (uint64_t i = 0; i < numel; i++) {
        memcpy(dst + i * esz, storage + at * esz, esz);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->size[d]) { at += (uint64_t)t->stride[d]; break; }
            at -= (uint64_t)t->stride[d] * (uint64_t)(t->size[d] - 1);
            idx[d] = 0;
        }
    }
}

/* Place tensor i: find its storage, check its extent, point into it or copy it. */
static mamba_status_t place(mb_torch_file *f, size_t i, const char *prefix, size_t prefix_len, char *entry_name,
                            signed char *entry_dtype, size_t *copied, char *err)
{
    const mb_pk_tensor *t = &f->pk[i];
    char q[96];
    const char *name = mb_quote(q, sizeof q, t->name, strlen(t->name));
    const size_t key_len = strlen(t->key);
    if (key_len == 0 || key_len > MAX_KEY || strchr(t->key, '/'))
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': storage key of %zu bytes is not a torch.save key",
                         f->path, name, key_len);
    snprintf(entry_name, prefix_len + 6 + MAX_KEY + 1, "%.*s/data/%s", (int)prefix_len, prefix, t->key);
    const mb_zip_entry *e = mb_zip_find(&f->zip, entry_name);
    char qe[96];
    if (!e)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': its storage '%s' has no data entry '%s'", f->path,
                         name, t->key, mb_quote(qe, sizeof qe, entry_name, strlen(entry_name)));
    const size_t esz = mb_dtype_size(t->dtype);
    uint64_t storage_bytes;
    if (!mul_ok(t->numel, esz, &storage_bytes) || storage_bytes != e->size)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': storage '%s' of %llu %s elements needs %llu bytes, its entry '%s' holds %zu",
                         f->path, name, t->key, (unsigned long long)t->numel, mamba_dtype_name(t->dtype),
                         (unsigned long long)t->numel * esz, mb_quote(qe, sizeof qe, entry_name, strlen(entry_name)),
                         e->size);
    signed char *seen = &entry_dtype[e - f->zip.entries];
    if (*seen >= 0 && *seen != (signed char)t->dtype)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': storage '%s' is %s here and %s for another tensor",
                         f->path, name, t->key, mamba_dtype_name(t->dtype), mamba_dtype_name((mamba_dtype_t)*seen));
    *seen = (signed char)t->dtype;
    /* the element count, and the storage index of the tensor's last element */
    uint64_t numel = 1, last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t reach;
        if (!mul_ok(numel, (uint64_t)t->size[d], &numel) ||
            (t->size[d] > 0 && (!mul_ok((uint64_t)t->size[d] - 1, (uint64_t)t->stride[d], &reach) ||
                                reach > UINT64_MAX - last)))
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': size and stride overflow", f->path, name);
        if (t->size[d] > 0) last += reach;
    }
    if (numel == 0) {
        if (t->offset > t->numel)
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': storage offset %llu is past storage '%s' (%llu "
                             "elements)", f->path, name, (unsigned long long)t->offset, t->key,
                             (unsigned long long)t->numel);
    } else if (last >= t->numel) {
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': its elements reach index %llu of storage '%s', which holds %llu elements "
                         "(storage offset %llu)", f->path, name, (unsigned long long)last, t->key,
                         (unsigned long long)t->numel, (unsigned long long)t->offset);
    }
    uint64_t bytes;
    if (!mul_ok(numel, esz, &bytes) || bytes > SIZE_MAX)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': %llu elements are more bytes than memory holds",
                         f->path, name, (unsigned long long)numel);
    int contiguous = 1;
    uint64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && (uint64_t)t->stride[d] != expect) contiguous = 0;
        expect *= (uint64_t)t->size[d];
    }
    const unsigned char *src = e->data + (numel ? t->offset * esz : 0);
    mamba_tensor_t *out = &f->tensors[i];
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    memcpy(out->shape, t->size, sizeof out->shape);
    out->nbytes = (size_t)bytes;
    out->data = src;
    if (numel == 0 || (contiguous && (uintptr_t)src % esz == 0)) return MAMBA_OK;
    /* views of one storage could ask for far more than the file holds: copies are bounded by it */
    if (out->nbytes > f->map_len - *copied)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': copying the strided or misaligned tensors would take more than the file's "
                         "%zu bytes", f->path, name, f->map_len);
    *copied += out->nbytes;
    unsigned char *copy = mb_malloc(out->nbytes);
    if (!copy) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory copying tensor '%s'", f->path, name);
    if (contiguous) memcpy(copy, src, out->nbytes);
    else gather(copy, e->data, t, esz, numel);
    f->copies[i] = copy;
    out->data = copy;
    return MAMBA_OK;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const mamba_tensor_t *const *)a)->name, (*(const mamba_tensor_t *const *)b)->name);
}

static mamba_status_t read_archive(mb_torch_file *f, char *err)
{
    mamba_status_t st = mb_zip_open(&f->zip, f->map, f->map_len, f->path, err);
    if (st != MAMBA_OK) return st;
    const mb_zip_entry *pkl = NULL;
    size_t prefix_len = 0;
    if ((st = find_pickle(f, &pkl, &prefix_len, err)) != MAMBA_OK || !pkl) return st;
    const char *prefix = pkl->name;
    char *entry_name = mb_malloc(prefix_len + 6 + MAX_KEY + 1);
    if (!entry_name) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    snprintf(entry_name, prefix_len + 6 + MAX_KEY + 1, "%.*s/byteorder", (int)prefix_len, prefix);
    const mb_zip_entry *bo = mb_zip_find(&f->zip, entry_name);
    if (bo && !(bo->size == 6 && memcmp(bo->data, "little", 6) == 0)) {
        free(entry_name);
        char q[32];
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "%s: the storages are not little-endian (byteorder '%s')",
                         f->path, mb_quote(q, sizeof q, (const char *)bo->data, bo->size));
    }
    char where[4200];
    snprintf(where, sizeof where, "%s: %.*s/data.pkl", f->path, prefix_len < 200 ? (int)prefix_len : 200, prefix);
    if ((st = mb_pickle_state_dict(pkl->data, pkl->size, where, &f->pk, &f->n, err)) != MAMBA_OK) {
        free(entry_name);
        return st;
    }
    const size_t n = f->n ? f->n : 1;
    f->tensors = mb_calloc(n, sizeof *f->tensors);
    f->copies = mb_calloc(n, sizeof *f->copies);
    f->order = mb_malloc(n * sizeof *f->order); // NOLINT(bugprone-sizeof-expression)
    signed char *entry_dtype = mb_malloc(f->zip.n + 1);
    if (!f->tensors || !f->copies || !f->order || !entry_dtype) {
        free(entry_dtype);
        free(entry_name);
        return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensors", f->path, f->n);
    }
    memset(entry_dtype, -1, f->zip.n + 1);
    size_t copied = 0;
    for (size_t i = 0; i < f->n && st == MAMBA_OK; i++)
        st = place(f, i, prefix, prefix_len, entry_name, entry_dtype, &copied, err);
    free(entry_dtype);
    free(entry_name);
    if (st != MAMBA_OK) return st;
    for (size_t i = 0; i < f->n; i++) f->order[i] = &f->tensors[i];
    qsort(f->order, f->n, sizeof *f->order, cmp_tensor_name); // NOLINT(bugprone-sizeof-expression)
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->order[i - 1]->name, f->order[i]->name) == 0) {
            char q[96];
            const char *name = f->order[i]->name;
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path,
                             mb_quote(q, sizeof q, name, strlen(name)));
        }
    return MAMBA_OK;
}

static mamba_status_t new_file(const char *path, mb_torch_file **out, char *err)
{
    *out = mb_calloc(1, sizeof **out);
    if (!*out) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    (*out)->fd = -1;
    (*out)->path = mb_strdup(path);
    if (!(*out)->path) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    return MAMBA_OK;
}

mamba_status_t mb_torch_file_open_bytes(const unsigned char *bytes, size_t len, const char *path, mb_torch_file **out,
                                        char *err)
{
    mb_torch_file *f;
    mamba_status_t st = new_file(path, &f, err);
    if (st == MAMBA_OK) {
        f->map = (unsigned char *)bytes;
        f->map_len = len;
        st = read_archive(f, err);
    }
    if (st != MAMBA_OK) {
        mb_torch_file_close(f);
        f = NULL;
    }
    *out = f;
    return st;
}

mamba_status_t mb_torch_file_open(const char *path, mb_torch_file **out, char *err)
{
    *out = NULL;
    if (!path) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "checkpoint path is NULL");
    mb_torch_file *f;
    mamba_status_t st = new_file(path, &f, err);
    if (st != MAMBA_OK) goto fail;
    f->fd = mb_io_fault() ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (f->fd < 0 || mb_io_fault() || fstat(f->fd, &sb) != 0) {
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: not a regular file, expected a PyTorch checkpoint", path);
        goto fail;
    }
    f->map_len = (size_t)sb.st_size;
    if (f->map_len > 0) {
        void *m = mb_io_fault() ? MAP_FAILED : mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, f->fd, 0);
        if (m == MAP_FAILED) {
            st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
            goto fail;
        }
        f->map = m;
    }
    if ((st = read_archive(f, err)) != MAMBA_OK) goto fail;
    *out = f;
    return MAMBA_OK;
fail:
    mb_torch_file_close(f);
    return st;
}
