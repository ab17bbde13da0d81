/* ZIP reader for archives of stored entries (what torch.save writes). Every offset and size
 * read from the file is checked against the bytes it must lie in before it is used. */
#include <stdlib.h>
#include <string.h>

#include "zip_reader.h"
#include "api/alloc.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_EOCD64_LOCATOR 0x07064b50u
#define EOCD_LEN 22
#define EOCD64_LEN 56
#define LOCATOR_LEN 20
#define CENTRAL_LEN 46
#define LOCAL_LEN 30
#define MAX_COMMENT 65535

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

const char *mb_quote(char *buf, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++) {
        const unsigned char c = (unsigned char)s[i];
        buf[k++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (k + 4 >= cap && n > k) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

void mb_zip_close(mb_zip *z)
{
    for (size_t i = 0; i < z->n; i++) free(z->entries[i].name);
    free(z->entries);
    z->entries = NULL;
    z->n = 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const mb_zip_entry *)a)->name, ((const mb_zip_entry *)b)->name);
}

const mb_zip_entry *mb_zip_find(const mb_zip *z, const char *name)
{
    size_t lo = 0, hi = z->n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(name, z->entries[mid].name);
        if (c == 0) return &z->entries[mid];
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

/* Where the central directory is: from the end record, or the ZIP64 end record it points to. */
typedef struct directory {
    uint64_t n, size, offset;
    size_t limit;               /* the directory ends at or before this byte */
} directory;

static mamba_status_t find_directory(const unsigned char *b, size_t len, const char *path, directory *d, char *err)
{
    if (len < EOCD_LEN)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: %zu bytes, too short for a ZIP archive (at least %d)", path, len,
                         EOCD_LEN);
    /* the end record is the last thing in the file but for a comment of at most 64 KiB */
    size_t pos = len - EOCD_LEN;
    const size_t stop = pos > MAX_COMMENT ? pos - MAX_COMMENT : 0;
    for (;; pos--) {
        if (rd32(b + pos) == SIG_EOCD && pos + EOCD_LEN + rd16(b + pos + 20) <= len) break;
        if (pos == stop)
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: no ZIP end-of-central-directory record: truncated?", path);
    }
    const unsigned char *e = b + pos;
    uint32_t disk = rd16(e + 4), cd_disk = rd16(e + 6);
    uint64_t n_disk = rd16(e + 8);
    d->n = rd16(e + 10);
    d->size = rd32(e + 12);
    d->offset = rd32(e + 16);
    d->limit = pos;
    if (pos >= LOCATOR_LEN && rd32(e - LOCATOR_LEN) == SIG_EOCD64_LOCATOR) {
        const unsigned char *loc = e - LOCATOR_LEN;
        const uint64_t off = rd64(loc + 8);
        if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: a multi-disk ZIP archive (%u disks) is not supported", path,
                             rd32(loc + 16));
        if (off > pos - LOCATOR_LEN || pos - LOCATOR_LEN - off < EOCD64_LEN)
            return mb_seterr(err, MAMBA_ERR_FORMAT,
                             "%s: the ZIP64 end record's offset %llu is not before its locator (at %zu)", path,
                             (unsigned long long)off, pos - LOCATOR_LEN);
        const unsigned char *r = b + off;
        if (rd32(r) != SIG_EOCD64)
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: no ZIP64 end record at offset %llu", path,
                             (unsigned long long)off);
        disk = rd32(r + 16);
        cd_disk = rd32(r + 20);
        n_disk = rd64(r + 24);
        d->n = rd64(r + 32);
        d->size = rd64(r + 40);
        d->offset = rd64(r + 48);
        d->limit = (size_t)off;
    }
    if (disk != 0 || cd_disk != 0 || n_disk != d->n)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: a multi-disk ZIP archive is not supported", path);
    if (d->offset > d->limit || d->size > d->limit - d->offset)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: the ZIP central directory [%llu, +%llu) runs past its end record at %zu: truncated?",
                         path, (unsigned long long)d->offset, (unsigned long long)d->size, d->limit);
    if (d->n > d->size / CENTRAL_LEN)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: %llu ZIP entries cannot fit in a central directory of %llu bytes", path,
                         (unsigned long long)d->n, (unsigned long long)d->size);
    return MAMBA_OK;
}

/* The ZIP64 extra field (0x0001) holds, in this order, those of the sizes, the offset and the
 * disk number whose 32-bit (16-bit) fields are saturated. */
static int read_zip64_extra(const unsigned char *x, size_t len, uint64_t *usize, uint64_t *csize, uint64_t *local,
                            uint32_t *disk)
{
    while (len >= 4) {
        const uint32_t id = rd16(x), sz = rd16(x + 2);
        if (sz > len - 4) return 0;
        if (id == 0x0001) {
            const unsigned char *p = x + 4;
            size_t rem = sz;
            uint64_t *fields[3] = {usize, csize, local};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (rem < 8) return 0;
                *fields[i] = rd64(p);
                p += 8;
                rem -= 8;
            }
            if (*disk == 0xffffu) {
                if (rem < 4) return 0;
                *disk = rd32(p);
            }
            return 1;
        }
        x += 4 + sz;
        len -= 4 + sz;
    }
    return 1;
}

static mamba_status_t read_entry(const unsigned char *b, const directory *d, size_t *at, mb_zip_entry *out,
                                 const char *path, char *err)
{
    const size_t cd_end = (size_t)(d->offset + d->size);
    const unsigned char *c = b + *at;
    if (cd_end - *at < CENTRAL_LEN || rd32(c) != SIG_CENTRAL)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP central directory entry at offset %zu is malformed", path, *at);
    const uint32_t flags = rd16(c + 8), method = rd16(c + 10);
    uint64_t csize = rd32(c + 20), usize = rd32(c + 24), local = rd32(c + 42);
    uint32_t disk = rd16(c + 34);
    const size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
    if (cd_end - *at - CENTRAL_LEN < nlen + xlen + clen)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP central directory entry at offset %zu runs past the directory",
                         path, *at);
    const char *name = (const char *)c + CENTRAL_LEN;
    char q[96];
    mb_quote(q, sizeof q, name, nlen);
    if (memchr(name, 0, nlen))
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry name '%s' holds a NUL byte", path, q);
    if (!read_zip64_extra(c + CENTRAL_LEN + nlen, xlen, &usize, &csize, &local, &disk))
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry '%s': malformed extra field (ZIP64 sizes)", path, q);
    if (flags & 0x41u)
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "%s: ZIP entry '%s' is encrypted", path, q);
    if (method != 0)
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED,
                         "%s: ZIP entry '%s' is compressed (method %u%s); only stored (uncompressed) entries can be "
                         "mapped, as torch.save writes them", path, q, method, method == 8 ? ", deflate" : "");
    if (csize != usize)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry '%s' is stored but its sizes differ (%llu and %llu)",
                         path, q, (unsigned long long)csize, (unsigned long long)usize);
    if (disk != 0) return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry '%s' is on disk %u", path, q, disk);
    /* the local header and the data lie before the central directory */
    if (local > d->offset || d->offset - local < LOCAL_LEN)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry '%s': local header offset %llu is out of range", path, q,
                         (unsigned long long)local);
    const unsigned char *h = b + local;
    const size_t lnlen = rd16(h + 26), lxlen = rd16(h + 28);
    const uint64_t data = local + LOCAL_LEN + lnlen + lxlen;
    if (rd32(h) != SIG_LOCAL || lnlen != nlen || data > d->offset || memcmp(h + LOCAL_LEN, name, nlen) != 0)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry '%s': no matching local header at offset %llu", path, q,
                         (unsigned long long)local);
    if (rd16(h + 8) != 0 || (rd16(h + 6) & 0x41u))
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "%s: ZIP entry '%s': its local header says compressed or encrypted",
                         path, q);
    if (usize > d->offset - data)
        return mb_seterr(err, MAMBA_ERR_FORMAT,
                         "%s: ZIP entry '%s': %llu bytes at offset %llu run into the central directory (at %llu): "
                         "truncated?", path, q, (unsigned long long)usize, (unsigned long long)data,
                         (unsigned long long)d->offset);
    out->name = mb_malloc(nlen + 1);
    if (!out->name) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for the ZIP directory", path);
    memcpy(out->name, name, nlen);
    out->name[nlen] = 0;
    out->data = b + data;
    out->size = (size_t)usize;
    *at += CENTRAL_LEN + nlen + xlen + clen;
    return MAMBA_OK;
}

mamba_status_t mb_zip_open(mb_zip *z, const unsigned char *bytes, size_t len, const char *path, char *err)
{
    memset(z, 0, sizeof *z);
    directory d = {0};
    mamba_status_t st = find_directory(bytes, len, path, &d, err);
    if (st != MAMBA_OK) return st;
    z->entries = mb_calloc(d.n ? (size_t)d.n : 1, sizeof *z->entries);
    if (!z->entries) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for the ZIP directory", path);
    size_t at = (size_t)d.offset;
    for (uint64_t i = 0; i < d.n; i++) {
        if ((st = read_entry(bytes, &d, &at, &z->entries[z->n], path, err)) != MAMBA_OK) goto fail;
        z->n++;
    }
    qsort(z->entries, z->n, sizeof *z->entries, cmp_name);
    for (size_t i = 1; i < z->n; i++)
        if (strcmp(z->entries[i - 1].name, z->entries[i].name) == 0) {
            char q[96];
            st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: ZIP entry '%s' appears twice", path,
                           mb_quote(q, sizeof q, z->entries[i].name, strlen(z->entries[i].name)));
            goto fail;
        }
    return MAMBA_OK;
fail:
    mb_zip_close(z);
    return st;
}
