/* Host allocation and file hooks of the core and the backends built into libmamba, with fault
 * injection. In a build with -DMAMBA_FAULT_INJECTION=ON every host allocation, device
 * allocation (through the core) and file open/read/map of the library is a numbered point,
 * and tests make the k-th one fail (mamba_fault_inject, declared in tests/fault_hooks.h) to
 * check that each failure returns an error, frees what was made and leaves the context usable.
 * In other builds mb_fault() is a constant false and the wrappers are the plain calls. */
#ifndef MB_API_ALLOC_H
#define MB_API_ALLOC_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MAMBA_FAULT_INJECTION
int mb_fault(void); /* counts one point; 1 when it is the one to fail */
void mb_fault_arm(unsigned long k);  /* the k-th point from now fails (0: none); resets the count */
unsigned long mb_fault_count(void);  /* points since the last mb_fault_arm */
#else
static inline int mb_fault(void) { return 0; }
#endif

/* An injected allocation failure sets errno to ENOMEM, as malloc does (json.c relies on it). */
static inline int mb_alloc_fault(void)
{
    if (!mb_fault()) return 0;
    errno = ENOMEM;
    return 1;
}
static inline void *mb_malloc(size_t n) { return mb_alloc_fault() ? NULL : malloc(n); }
static inline void *mb_calloc(size_t n, size_t size) { return mb_alloc_fault() ? NULL : calloc(n, size); }
static inline void *mb_realloc(void *p, size_t n) { return mb_alloc_fault() ? NULL : realloc(p, n); }
static inline char *mb_strdup(const char *s) { return mb_alloc_fault() ? NULL : strdup(s); }
static inline void *mb_aligned_alloc(size_t align, size_t n) { return mb_alloc_fault() ? NULL : aligned_alloc(align, n); }
/* An injected I/O failure sets errno to EIO, as a failing disk would. */
static inline int mb_io_fault(void)
{
    if (!mb_fault()) return 0;
    errno = EIO;
    return 1;
}
static inline FILE *mb_fopen(const char *path, const char *mode) { return mb_io_fault() ? NULL : fopen(path, mode); }
static inline size_t mb_fread(void *buf, size_t size, size_t n, FILE *fp)
{
    return mb_io_fault() ? 0 : fread(buf, size, n, fp);
}

#endif /* MB_API_ALLOC_H */
