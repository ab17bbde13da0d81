/* CPU backend: device enumeration, host buffers, and the vtable. Always built into libmamba:
 * it is the reference the GPU backends are checked against. */
#define _DEFAULT_SOURCE /* MADV_HUGEPAGE */
#include <omp.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "cpu_internal.h"
#include "api/alloc.h"

int cpu_fail(mb_device *dev, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dev->err, sizeof dev->err, fmt, ap);
    va_end(ap);
    return status;
}

static int cpu_device_count(char *note, size_t len)
{
    (void)note;
    (void)len;
    return 1;
}

static void cpu_model_name(char *name, size_t len)
{
    snprintf(name, len, "CPU");
    FILE *fp = mb_fopen("/proc/cpuinfo", "r");
    if (!fp) return;
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) break;
        colon += 2;
        colon[strcspn(colon, "\n")] = 0;
        snprintf(name, len, "%s", colon);
        break;
    }
    fclose(fp);
}

static int cpu_device_props(int index, mb_device_props *p)
{
    if (index != 0) return MAMBA_ERR_NO_DEVICE;
    memset(p, 0, sizeof *p);
    cpu_model_name(p->name, sizeof p->name);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    p->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    p->compute_units = omp_get_num_procs();
    p->usable = 1;
    snprintf(p->note, sizeof p->note, "%d OpenMP threads", omp_get_max_threads());
    return 0;
}

static int cpu_open(int index, const mb_open_options *o, mb_device **out, char *err, size_t err_len)
{
    if (index != 0) {
        snprintf(err, err_len, "the cpu backend has one device (cpu:0), %d asked for", index);
        return MAMBA_ERR_NO_DEVICE;
    }
    mb_device *d = mb_calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, err_len, "cpu backend: out of memory opening the device");
        return MAMBA_ERR_OUT_OF_MEMORY;
    }
    d->n_threads = o && o->n_threads > 0 ? o->n_threads : omp_get_max_threads();
    if (o && o->n_threads > 0) openblas_set_num_threads(o->n_threads);
    /* the portable kernels only, so that tests check them on machines with AVX-512 too */
    d->portable = o && o->portable_kernels;
    *out = d;
    return 0;
}

static void cpu_close(mb_device *d)
{
    if (!d) return;
    free(d->scratch);
    free(d->gemv_x);
    free(d->gemv_xq);
    free(d->gemv_xs);
    free(d);
}

static const char *cpu_last_error(mb_device *d) { return d ? d->err : ""; }

#define HUGE_PAGE ((size_t)2 << 20)

static int cpu_alloc(mb_device *d, size_t bytes, mb_buffer **out)
{
    mb_buffer *b = mb_malloc(sizeof *b);
    /* Large buffers (the weights) on 2 MiB pages where the kernel grants them: decoding streams
     * every weight once a token, and on 4 KiB pages that is a TLB miss and a restarted
     * prefetch stream every 4 KiB (130m decoding on the development machine: 140 -> 144.5
     * tokens/s, alternating runs). */
    const int huge = bytes >= 4 * HUGE_PAGE;
    const size_t align = huge ? HUGE_PAGE : 64;
    size_t rounded = (bytes + align - 1) / align * align;
    void *data = b ? mb_aligned_alloc(align, rounded ? rounded : 64) : NULL;
#ifdef MADV_HUGEPAGE
    if (data && huge) madvise(data, rounded, MADV_HUGEPAGE); /* advice only: its failure changes nothing */
#endif
    if (!data) {
        free(b);
        return cpu_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
    }
    b->bytes = bytes;
    b->data = data;
    mb_mem_add(&d->mem, bytes);
    *out = b;
    return 0;
}

static void cpu_free(mb_device *d, mb_buffer *b)
{
    if (!b) return;
    mb_mem_sub(&d->mem, b->bytes);
    free(b->data);
    free(b);
}

static int check_range(mb_device *d, mb_ptr p, size_t bytes, const char *what)
{
    return mb_range_check(p.buf != NULL, p.buf ? p.buf->bytes : 0, p.offset, bytes, what, d->err, sizeof d->err);
}

static int cpu_upload(mb_device *d, mb_ptr dst, const void *src, size_t bytes)
{
    int rc = check_range(d, dst, bytes, "upload");
    if (rc == 0 && bytes) memcpy(cpu_at(dst), src, bytes);
    return rc;
}

static int cpu_download(mb_device *d, void *dst, mb_ptr src, size_t bytes)
{
    int rc = check_range(d, src, bytes, "download");
    if (rc == 0 && bytes) memcpy(dst, cpu_at(src), bytes);
    return rc;
}

static int cpu_fill_zero(mb_device *d, mb_ptr dst, size_t bytes)
{
    int rc = check_range(d, dst, bytes, "fill");
    if (rc == 0 && bytes) memset(cpu_at(dst), 0, bytes);
    return rc;
}

static int cpu_sync(mb_device *d)
{
    (void)d;
    return 0;
}

static int cpu_copy(mb_device *d, mb_ptr dst, mb_ptr src, size_t bytes)
{
    int rc = check_range(d, dst, bytes, "copy target");
    if (rc == 0) rc = check_range(d, src, bytes, "copy source");
    if (rc != 0) return rc;
    unsigned char *to = cpu_at(dst);
    const unsigned char *from = cpu_at(src);
    const size_t chunk = (size_t)1 << 20;
#pragma omp parallel for num_threads(d->n_threads) schedule(static)
    for (size_t i = 0; i < bytes; i += chunk) memcpy(to + i, from + i, bytes - i < chunk ? bytes - i : chunk);
    return 0;
}

static int cpu_read_sum(mb_device *d, mb_ptr src, size_t n, mb_ptr out)
{
    int rc = check_range(d, src, n * 4, "read");
    if (rc == 0) rc = check_range(d, out, 4, "read result");
    if (rc != 0) return rc;
    *(float *)cpu_at(out) = cpu_sum(d, cpu_at(src), n);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cpu_timer_start(mb_device *d)
{
    d->timer_start = now_s();
    return 0;
}

static int cpu_timer_stop(mb_device *d, double *ms)
{
    *ms = 1e3 * (now_s() - d->timer_start);
    return 0;
}

static void cpu_mem_usage(mb_device *d, uint64_t *current, uint64_t *peak)
{
    *current = d->mem.current;
    *peak = d->mem.peak;
}

static void cpu_mem_reset_peak(mb_device *d) { d->mem.peak = d->mem.current; }

static const mb_device_ops cpu_device_ops = {
    .device_count = cpu_device_count,
    .device_props = cpu_device_props,
    .open = cpu_open,
    .close = cpu_close,
    .last_error = cpu_last_error,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .fill_zero = cpu_fill_zero,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .mem_usage = cpu_mem_usage,
    .mem_reset_peak = cpu_mem_reset_peak,
};

static const mb_model_ops cpu_model_ops = {
    .embed = cpu_embed,
    .add_rmsnorm = cpu_add_rmsnorm,
    .rmsnorm_segments = cpu_rmsnorm_segments,
    .gemm = cpu_gemm,
    .conv_silu = cpu_conv_silu,
    .scan = cpu_scan,
    .argmax = cpu_argmax,
    .scan_backward = cpu_scan_backward,
};

static const mb_fused_ops cpu_fused_ops = {
    .supports = cpu_fused_supports,
    .mixer_step = cpu_mixer_step,
    .gemv_fused = cpu_gemv_fused,
};

static const mb_probe_ops cpu_probe_ops = {
    .read_sum = cpu_read_sum,
    .timer_start = cpu_timer_start,
    .timer_stop = cpu_timer_stop,
};

static const mb_backend cpu_vtable = {
    .abi_version = MB_BACKEND_ABI_VERSION,
    .name = "cpu",
    .device = &cpu_device_ops,
    .ops = &cpu_model_ops,
    .fused = &cpu_fused_ops,
    .probe = &cpu_probe_ops,
    .train = &cpu_train_ops,
};

const mb_backend *mb_cpu_backend(void) { return &cpu_vtable; }
