/* A ZIP archive of stored (uncompressed) entries over bytes in memory (a mapped file): the
 * central directory (ZIP64 included) is read and checked, and each entry's data is a pointer
 * into those bytes. Compressed or encrypted entries are refused, naming the entry. */
#ifndef MB_ZIP_READER_H
#define MB_ZIP_READER_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

typedef struct mb_zip_entry {
    char *name;                 /* NUL-terminated copy of the entry's name           */
    const unsigned char *data;  /* into the archive's bytes                          */
    size_t size;
} mb_zip_entry;

typedef struct mb_zip {
    mb_zip_entry *entries;      /* sorted by name, no name twice                     */
    size_t n;
} mb_zip;

/* Read the directory of the archive in bytes [0, len); path names it in messages. */
mamba_status_t mb_zip_open(mb_zip *z, const unsigned char *bytes, size_t len, const char *path, char *err);
void mb_zip_close(mb_zip *z);
const mb_zip_entry *mb_zip_find(const mb_zip *z, const char *name);
/* n bytes of s as printable ASCII for a message (others as ?, cut with ... to fit cap). */
const char *mb_quote(char *buf, size_t cap, const char *s, size_t n);

#endif
