/* safetensors reader: an 8-byte little-endian header length, a JSON header, raw data.
 * The file is memory-mapped; every offset, shape and size is checked before use. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "api/alloc.h"

static int parse_dtype(const char *s, mamba_dtype_t *dt)
{
    static const struct { const char *name; mamba_dtype_t dt; } known[] = {
        {"F32", MAMBA_F32}, {"F16", MAMBA_F16}, {"BF16", MAMBA_BF16},
        {"I64", MAMBA_I64}, {"I32", MAMBA_I32}, {"F64", MAMBA_F64},
        {"I8", MAMBA_I8},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(s, known[i].name) == 0) { *dt = known[i].dt; return 1; }
    return 0;
}

static void file_free(mamba_tensor_file_t *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_len);
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f);
}

static int cmp_begin(const void *a, const void *b)
{
    const mb_tensor_entry *x = *(mb_tensor_entry *const *)a, *y = *(mb_tensor_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static mamba_status_t parse_metadata(mamba_tensor_file_t *f, const cJSON *meta, char *err)
{
    if (!cJSON_IsObject(meta))
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: __metadata__ is not an object", f->path);
    /* JSON allows a key twice; cJSON keeps both */
    if (f->meta) return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: __metadata__ appears twice", f->path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta = mb_calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    const cJSON *it;
    cJSON_ArrayForEach(it, meta) {
        if (!cJSON_IsString(it))
            return mb_seterr(err, MAMBA_ERR_FORMAT,
                             "%s: __metadata__ value of '%s' is not a string", f->path, it->string);
        f->meta[2 * f->n_meta] = mb_strdup(it->string);
        f->meta[2 * f->n_meta + 1] = mb_strdup(it->valuestring);
        f->n_meta++;
        if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1])
            return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    }
    return MAMBA_OK;
}

static mamba_status_t parse_entry(mamba_tensor_file_t *f, const cJSON *item, mb_tensor_entry *e,
                                  char *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': entry is not an object", f->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': expected string dtype, array shape and array data_offsets",
                         f->path, name);
    if (!parse_dtype(dt->valuestring, &e->dtype))
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': unknown or unsupported dtype '%s' (expected F32, F16, BF16, F64, I64, I32 or I8)",
                         f->path, name, dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > MAMBA_MAX_DIMS)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': %d dimensions, at most %d supported",
                         f->path, name, nd, MAMBA_MAX_DIMS);
    e->ndim = nd;
    uint64_t count = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9007199254740992.0 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return mb_seterr(err, MAMBA_ERR_FORMAT,
                             "%s: tensor '%s': shape[%d] is not a non-negative integer", f->path, name, i);
        e->shape[i] = (int64_t)d->valuedouble;
        if (e->shape[i] != 0 && count > UINT64_MAX / (uint64_t)e->shape[i])
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': shape product overflows", f->path, name);
        count *= (uint64_t)e->shape[i];
    }
    if (cJSON_GetArraySize(offs) != 2)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s': data_offsets must have 2 entries",
                         f->path, name);
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble, en = cJSON_GetArrayItem(offs, 1)->valuedouble;
    /* the range before the integer casts, which are undefined beyond it; 2^53 is the largest
     * offset a JSON double holds exactly */
    if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) ||
        !(b >= 0) || !(en >= b) || en > 9007199254740992.0 || b != (double)(uint64_t)b || en != (double)(uint64_t)en)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%.0f, %.0f] are not ordered non-negative integers",
                         f->path, name, b, en);
    if (en > (double)f->data_len)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%.0f, %.0f] reach past the data section (%zu bytes): file truncated?",
                         f->path, name, b, en, f->data_len);
    e->begin = (size_t)b;
    e->end = (size_t)en;
    size_t esz = mb_dtype_size(e->dtype);
    if (count > UINT64_MAX / esz || count * esz != (uint64_t)(e->end - e->begin))
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: tensor '%s': %zu data bytes, but shape and dtype %s need %llu",
                         f->path, name, e->end - e->begin, mamba_dtype_name(e->dtype),
                         (unsigned long long)count * esz);
    e->name = mb_strdup(name);
    if (!e->name) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    return MAMBA_OK;
}

static mamba_status_t parse_header(mamba_tensor_file_t *f, const char *json, size_t len, char *err)
{
    char what[4200];
    snprintf(what, sizeof what, "%s: header", f->path);
    mamba_status_t st;
    cJSON *root = mb_json_parse(json, len, what, err, &st);
    if (!root) return st;
    if (!cJSON_IsObject(root)) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: JSON header is not an object", f->path);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(root);
    f->tensors = mb_calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) { st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path); goto out; }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if ((st = parse_metadata(f, item, err)) != MAMBA_OK) goto out;
            continue;
        }
        if (mb_tensor_file_lookup(f, item->string)) {
            st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s' appears twice in the header",
                           f->path, item->string);
            goto out;
        }
        if ((st = parse_entry(f, item, &f->tensors[f->n_tensors], err)) != MAMBA_OK) goto out;
        f->n_tensors++;
    }
    /* The tensors must tile the data section: in offset order each starts where the one before
     * ends, the first at 0, the last ending at the end of the file (as the format asks). */
    if (f->n_tensors > 0) {
        /* an array of pointers, sorted by offset */
        mb_tensor_entry **order = mb_malloc(f->n_tensors * sizeof *order); // NOLINT(bugprone-sizeof-expression)
        if (!order) { st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path); goto out; }
        for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
        qsort(order, f->n_tensors, sizeof *order, cmp_begin); // NOLINT(bugprone-sizeof-expression)
        if (order[0]->begin != 0)
            st = mb_seterr(err, MAMBA_ERR_FORMAT,
                           "%s: the first tensor, '%s', starts at byte %zu of the data, not 0: tensors must be contiguous",
                           f->path, order[0]->name, order[0]->begin);
        for (size_t i = 1; i < f->n_tensors && st == MAMBA_OK; i++) {
            const mb_tensor_entry *p = order[i - 1], *q = order[i];
            if (q->begin < p->end)
                st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap", f->path,
                               p->name, p->begin, p->end, q->name, q->begin, q->end);
            else if (q->begin > p->end)
                st = mb_seterr(err, MAMBA_ERR_FORMAT,
                               "%s: %zu bytes between tensors '%s' (ends at %zu) and '%s' (starts at %zu): tensors must "
                               "be contiguous", f->path, q->begin - p->end, p->name, p->end, q->name, q->begin);
        }
        const size_t last = order[f->n_tensors - 1]->end;
        if (st == MAMBA_OK && last != f->data_len)
            st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: %zu bytes after the last tensor (the data ends at %zu, the file at %zu)",
                           f->path, f->data_len - last, last, f->data_len);
        free(order);
    } else if (f->data_len != 0) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: %zu bytes of data and no tensor", f->path, f->data_len);
    }
out:
    cJSON_Delete(root);
    return st;
}

mamba_status_t mb_tensor_file_open(const char *path, mamba_tensor_file_t **out, char *err)
{
    *out = NULL;
    if (!path) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "safetensors path is NULL");
    mamba_tensor_file_t *f = mb_calloc(1, sizeof *f);
    if (!f) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    f->fd = -1;
    f->path = mb_strdup(path);
    mamba_status_t st = MAMBA_OK;
    if (!f->path) { st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", path); goto fail; }
    f->fd = mb_io_fault() ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (f->fd < 0 || mb_io_fault() || fstat(f->fd, &sb) != 0) {
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: is a directory, expected a safetensors file", path);
        goto fail;
    }
    if (sb.st_size < 8) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT,
                       "%s: %lld bytes, too short for a safetensors file (at least 8 expected)",
                       path, (long long)sb.st_size);
        goto fail;
    }
    f->map_len = (size_t)sb.st_size;
    f->map = mb_io_fault() ? MAP_FAILED : mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map[i];
    if (hlen > MB_MAX_HEADER_BYTES) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes",
                       path, (unsigned long long)hlen, (unsigned long long)MB_MAX_HEADER_BYTES);
        goto fail;
    }
    if (hlen > f->map_len - 8) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes): truncated?",
                       path, (unsigned long long)hlen, f->map_len);
        goto fail;
    }
    f->data = f->map + 8 + hlen;
    f->data_len = f->map_len - 8 - (size_t)hlen;
    if ((st = parse_header(f, (const char *)f->map + 8, (size_t)hlen, err)) != MAMBA_OK) goto fail;
    *out = f;
    return MAMBA_OK;
fail:
    file_free(f);
    return st;
}

const mb_tensor_entry *mb_tensor_file_lookup(const mamba_tensor_file_t *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void mb_tensor_view(const mamba_tensor_file_t *f, const mb_tensor_entry *e, mamba_tensor_t *t)
{
    memset(t, 0, sizeof *t);
    t->name = e->name;
    t->dtype = e->dtype;
    t->ndim = e->ndim;
    memcpy(t->shape, e->shape, sizeof t->shape);
    t->data = f->data + e->begin;
    t->nbytes = e->end - e->begin;
}

/* ---- public API ---- */

mamba_status_t mamba_tensor_file_open(const char *path, mamba_tensor_file_t **out)
{
    if (!out) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_tensor_file_open: out is NULL");
    return mb_tensor_file_open(path, out, mb_tls_err());
}

size_t mamba_tensor_file_count(const mamba_tensor_file_t *f) { return f ? f->n_tensors : 0; }

mamba_status_t mamba_tensor_file_get(const mamba_tensor_file_t *f, size_t i, mamba_tensor_t *out)
{
    if (!f || !out || i >= f->n_tensors)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_tensor_file_get: index %zu out of range (%zu tensors)", i,
                         f ? f->n_tensors : 0);
    mb_tensor_view(f, &f->tensors[i], out);
    return MAMBA_OK;
}

mamba_status_t mamba_tensor_file_find(const mamba_tensor_file_t *f, const char *name, mamba_tensor_t *out)
{
    if (!f || !name || !out)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_tensor_file_find: NULL argument");
    const mb_tensor_entry *e = mb_tensor_file_lookup(f, name);
    if (!e) return mb_seterr(mb_tls_err(), MAMBA_ERR_MODEL, "%s: no tensor '%s'", f->path, name);
    mb_tensor_view(f, e, out);
    return MAMBA_OK;
}

const char *mamba_tensor_file_metadata(const mamba_tensor_file_t *f, const char *key)
{
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

void mamba_tensor_file_close(mamba_tensor_file_t *f) { file_free(f); }
