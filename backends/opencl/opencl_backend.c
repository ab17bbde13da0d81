/* OpenCL backend module (libmamba-opencl.so): devices over all platforms, the program built
 * once per context from the embedded kernels, buffers, timers and the vtable. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "opencl_internal.h"

int ocl_fail(mb_device *d, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return status;
}

const char *ocl_error_name(cl_int e)
{
    switch (e) {
    case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
    case CL_DEVICE_NOT_AVAILABLE: return "CL_DEVICE_NOT_AVAILABLE";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case CL_INVALID_WORK_ITEM_SIZE: return "CL_INVALID_WORK_ITEM_SIZE";
    case CL_INVALID_GLOBAL_WORK_SIZE: return "CL_INVALID_GLOBAL_WORK_SIZE";
    case CL_INVALID_ARG_SIZE: return "CL_INVALID_ARG_SIZE";
    case CL_INVALID_ARG_VALUE: return "CL_INVALID_ARG_VALUE";
    case CL_INVALID_MEM_OBJECT: return "CL_INVALID_MEM_OBJECT";
    case CL_INVALID_COMMAND_QUEUE: return "CL_INVALID_COMMAND_QUEUE";
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR (no OpenCL driver installed)";
    default: return "OpenCL error";
    }
}

/* Every device of every platform, in the order `mamba info` prints them. */
static int list_devices(cl_device_id *out, int cap, char *note, size_t len)
{
    cl_uint np = 0;
    cl_int e = clGetPlatformIDs(0, NULL, &np);
    if (e != CL_SUCCESS || np == 0) {
        if (note) snprintf(note, len, "no OpenCL platform found (%s): is an ICD (driver) installed?", ocl_error_name(e));
        return -1;
    }
    cl_platform_id plats[16];
    if (np > 16) np = 16;
    clGetPlatformIDs(np, plats, NULL);
    int n = 0;
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) continue;
        cl_device_id devs[64];
        if (nd > 64) nd = 64;
        clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, nd, devs, NULL);
        for (cl_uint i = 0; i < nd; i++)
            if (n < cap) out[n++] = devs[i];
    }
    if (n == 0 && note) snprintf(note, len, "OpenCL platforms found, but no device");
    return n;
}

static int ocl_device_count(char *note, size_t len)
{
    cl_device_id devs[256];
    return list_devices(devs, 256, note, len);
}

static int ocl_device_props(int index, mb_device_props *p)
{
    cl_device_id devs[256];
    int n = list_devices(devs, 256, NULL, 0);
    memset(p, 0, sizeof *p);
    if (index < 0 || index >= n) return MAMBA_ERR_NO_DEVICE;
    cl_device_type type = 0;
    cl_ulong mem = 0;
    cl_uint cu = 0;
    char version[128] = "", vendor[64] = "";
    clGetDeviceInfo(devs[index], CL_DEVICE_NAME, sizeof p->name, p->name, NULL);
    clGetDeviceInfo(devs[index], CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(devs[index], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
    clGetDeviceInfo(devs[index], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
    clGetDeviceInfo(devs[index], CL_DEVICE_VERSION, sizeof version, version, NULL);
    clGetDeviceInfo(devs[index], CL_DEVICE_VENDOR, sizeof vendor, vendor, NULL);
    p->memory_bytes = mem;
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(devs[index], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    p->max_alloc_bytes = max_alloc;
    p->compute_units = (int)cu;
    p->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    /* OpenCL 1.2 or later */
    long major = 0, minor = 0;
    if (strncmp(version, "OpenCL ", 7) == 0) {
        char *end;
        major = strtol(version + 7, &end, 10);
        if (*end == '.') minor = strtol(end + 1, NULL, 10);
    }
    p->usable = major > 1 || (major == 1 && minor >= 2);
    snprintf(p->note, sizeof p->note, "%s, %s%s", vendor, version, p->usable ? "" : " (OpenCL 1.2 needed)");
    return 0;
}

const char *const ocl_kernel_names[K_COUNT] = { /* the order of the K_ enum */
    "embed", "add_rmsnorm", "conv", "conv_state", "scan_pass1_16", "scan_final_16", "scan_pass1_tiled",
    "scan_final_tiled", "scan_carry", "gemv", "widen", "add_bias", "read_sum", "conv_short", "step_xproj", "step_scan",
    "argmax", "gemv1", "rmsnorm_segments", "scan_bwd_states_16", "scan_bwd_states_64", "scan_bwd_states_256",
    "scan_bwd_main_16", "scan_bwd_main_64", "scan_bwd_main_256", "scan_bwd_fold_tv", "scan_bwd_fold_ch",
    /* train_kernels.cl */
    "scale_matrix", "rms_bwd_stats", "rms_bwd_dx", "rms_bwd_dw_part", "fold_blocks", "conv_bwd_dx", "conv_bwd_dw_part",
    "embed_bwd", "cross_entropy", "sumsq_part", "sumsq_final", "adamw", "axpy", "neg_exp", "mul_acc",
};

void ocl_profile(mb_device *d, int k, cl_event ev)
{
    cl_ulong a = 0, b = 0;
    if (clWaitForEvents(1, &ev) == CL_SUCCESS &&
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof a, &a, NULL) == CL_SUCCESS &&
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof b, &b, NULL) == CL_SUCCESS && b >= a) {
        d->prof_us[k] += (double)(b - a) * 1e-3;
        d->prof_n[k]++;
    }
    clReleaseEvent(ev);
}

static void ocl_close(mb_device *d)
{
    if (!d) return;
    if (d->q) clFinish(d->q);
    for (int i = 0; d->profile && d->log && i < K_COUNT; i++)
        if (d->prof_n[i]) {
            char line[160];
            snprintf(line, sizeof line, "opencl profile: %-16s %8lu launches %12.1f us %9.2f us each", ocl_kernel_names[i],
                     d->prof_n[i], d->prof_us[i], d->prof_us[i] / (double)d->prof_n[i]);
            d->log(d->log_user, MAMBA_LOG_INFO, line);
        }
    for (int i = 0; i < K_COUNT; i++)
        if (d->k[i]) clReleaseKernel(d->k[i]);
    if (d->scratch) clReleaseMemObject(d->scratch);
    if (d->t0) clReleaseEvent(d->t0);
    if (d->prog) clReleaseProgram(d->prog);
    if (d->train_prog) clReleaseProgram(d->train_prog);
    if (d->q) clReleaseCommandQueue(d->q);
    if (d->ctx) clReleaseContext(d->ctx);
    free(d);
}


static int build_program(mb_device *d)
{
    cl_int e;
    const char *src[2] = {mb_opencl_common_kernels, mb_opencl_kernels};
    d->prog = clCreateProgramWithSource(d->ctx, 2, src, NULL, &e);
    OCL_CHECK(d, e, "clCreateProgramWithSource");
    /* NVIDIA's native_exp2 is ex2.approx (about 2 ulp) and its native_exp the same scaled, what
     * the CUDA backend uses within the same bounds; elsewhere the correctly rounded ones */
    char vendor[128] = "";
    clGetDeviceInfo(d->device, CL_DEVICE_VENDOR, sizeof vendor, vendor, NULL);
    const char *opts = strstr(vendor, "NVIDIA") ? "-cl-std=CL1.2 -DEXP2=native_exp2 -DEXPF=native_exp" : "-cl-std=CL1.2";
    e = clBuildProgram(d->prog, 1, &d->device, opts, NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[768] = "";
        clGetProgramBuildInfo(d->prog, d->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
        return ocl_fail(d, MAMBA_ERR_BACKEND, "building the OpenCL kernels failed (%s): %s", ocl_error_name(e), log);
    }
    for (int i = 0; i < K_TRAIN_FIRST; i++) {
        d->k[i] = clCreateKernel(d->prog, ocl_kernel_names[i], &e);
        if (e != CL_SUCCESS) return ocl_fail(d, MAMBA_ERR_BACKEND, "kernel %s: %s", ocl_kernel_names[i], ocl_error_name(e));
    }
    return 0;
}

static int ocl_open(int index, const mb_open_options *o, mb_device **out, char *err, size_t err_len)
{
    cl_device_id devs[256];
    char note[256] = "";
    int n = list_devices(devs, 256, note, sizeof note);
    if (index < 0 || index >= n) {
        snprintf(err, err_len, "%s", n <= 0 ? note : "no such OpenCL device");
        return MAMBA_ERR_NO_DEVICE;
    }
    mb_device *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return MAMBA_ERR_OUT_OF_MEMORY;
    }
    d->device = devs[index];
    cl_int e;
    int rc = 0;
    d->ctx = clCreateContext(NULL, 1, &d->device, NULL, NULL, &e);
    if (e != CL_SUCCESS) {
        rc = ocl_fail(d, MAMBA_ERR_BACKEND, "clCreateContext: %s", ocl_error_name(e));
        goto fail;
    }
    d->profile = o && o->profile;
    d->log = o ? o->log : NULL;
    d->log_user = o ? o->log_user : NULL;
    d->q = clCreateCommandQueue(d->ctx, d->device, CL_QUEUE_PROFILING_ENABLE, &e);
    if (e != CL_SUCCESS) {
        rc = ocl_fail(d, MAMBA_ERR_BACKEND, "clCreateCommandQueue: %s", ocl_error_name(e));
        goto fail;
    }
    clGetDeviceInfo(d->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof d->max_wg, &d->max_wg, NULL);
    clGetDeviceInfo(d->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d->max_alloc, &d->max_alloc, NULL);
    cl_uint align_bits = 0;
    clGetDeviceInfo(d->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    d->base_align = align_bits >= 8 ? align_bits / 8 : 128;
    clGetDeviceInfo(d->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d->global_mem, &d->global_mem, NULL);
    clGetDeviceInfo(d->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof d->compute_units, &d->compute_units, NULL);
    if (d->max_wg < 128) {
        rc = ocl_fail(d, MAMBA_ERR_UNSUPPORTED, "work-groups of %zu items at most; 128 needed", d->max_wg);
        goto fail;
    }
    if ((rc = build_program(d)) != 0) goto fail;
    *out = d;
    return 0;
fail:
    snprintf(err, err_len, "%s", d->err);
    ocl_close(d);
    return rc;
}

static const char *ocl_last_error(mb_device *d) { return d ? d->err : ""; }

static int ocl_alloc(mb_device *d, size_t bytes, mb_buffer **out)
{
    if (bytes > d->max_alloc)
        return ocl_fail(d, MAMBA_ERR_OUT_OF_MEMORY,
                        "%zu bytes asked for in one buffer; the device allows %llu (CL_DEVICE_MAX_MEM_ALLOC_SIZE)", bytes,
                        (unsigned long long)d->max_alloc);
    if (d->mem.current + bytes > d->global_mem)
        return ocl_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "%zu more bytes would exceed the device's %llu bytes of memory",
                        bytes, (unsigned long long)d->global_mem);
    mb_buffer *b = malloc(sizeof *b);
    if (!b) return ocl_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "out of host memory");
    cl_int e;
    b->mem = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes ? bytes : 256, NULL, &e);
    if (e != CL_SUCCESS) {
        free(b);
        return ocl_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "clCreateBuffer of %zu bytes: %s", bytes, ocl_error_name(e));
    }
    b->bytes = bytes;
    mb_mem_add(&d->mem, bytes);
    *out = b;
    return 0;
}

static void ocl_free(mb_device *d, mb_buffer *b)
{
    if (!b) return;
    clFinish(d->q);
    clReleaseMemObject(b->mem);
    mb_mem_sub(&d->mem, b->bytes);
    free(b);
}

static int range_ok(mb_device *d, mb_ptr p, size_t bytes, const char *what)
{
    return mb_range_check(p.buf != NULL, p.buf ? p.buf->bytes : 0, p.offset, bytes, what, d->err, sizeof d->err);
}

static int ocl_upload(mb_device *d, mb_ptr dst, const void *src, size_t bytes)
{
    int rc = range_ok(d, dst, bytes, "upload");
    if (rc || !bytes) return rc;
    /* blocking: the caller may reuse its buffer at once */
    OCL_CHECK(d, clEnqueueWriteBuffer(d->q, dst.buf->mem, CL_TRUE, dst.offset, bytes, src, 0, NULL, NULL), "upload");
    return 0;
}

static int ocl_download(mb_device *d, void *dst, mb_ptr src, size_t bytes)
{
    int rc = range_ok(d, src, bytes, "download");
    if (rc || !bytes) return rc;
    OCL_CHECK(d, clEnqueueReadBuffer(d->q, src.buf->mem, CL_TRUE, src.offset, bytes, dst, 0, NULL, NULL), "download");
    return 0;
}

static int ocl_fill_zero(mb_device *d, mb_ptr dst, size_t bytes)
{
    int rc = range_ok(d, dst, bytes, "fill");
    if (rc || !bytes) return rc;
    const cl_uchar zero = 0;
    OCL_CHECK(d, clEnqueueFillBuffer(d->q, dst.buf->mem, &zero, 1, dst.offset, bytes, 0, NULL, NULL), "fill");
    return 0;
}

static int ocl_sync(mb_device *d)
{
    OCL_CHECK(d, clFinish(d->q), "clFinish");
    return 0;
}

static int ocl_copy(mb_device *d, mb_ptr dst, mb_ptr src, size_t bytes)
{
    int rc = range_ok(d, dst, bytes, "copy target");
    if (!rc) rc = range_ok(d, src, bytes, "copy source");
    if (rc) return rc;
    OCL_CHECK(d, clEnqueueCopyBuffer(d->q, src.buf->mem, dst.buf->mem, src.offset, dst.offset, bytes, 0, NULL, NULL),
              "copy");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Device time between two markers from the queue's profiling; the host clock around clFinish
 * where a platform reports no times for markers. */
static int ocl_timer_start(mb_device *d)
{
    if (d->t0) clReleaseEvent(d->t0);
    d->t0 = NULL;
    OCL_CHECK(d, clFinish(d->q), "clFinish");
    d->host_t0 = now_s();
    OCL_CHECK(d, clEnqueueMarkerWithWaitList(d->q, 0, NULL, &d->t0), "timer marker");
    return 0;
}

static int ocl_timer_stop(mb_device *d, double *ms)
{
    cl_event t1;
    OCL_CHECK(d, clEnqueueMarkerWithWaitList(d->q, 0, NULL, &t1), "timer marker");
    cl_int e = clWaitForEvents(1, &t1);
    double host = 1e3 * (now_s() - d->host_t0);
    cl_ulong a = 0, b = 0;
    if (e == CL_SUCCESS && clGetEventProfilingInfo(d->t0, CL_PROFILING_COMMAND_END, sizeof a, &a, NULL) == CL_SUCCESS &&
        clGetEventProfilingInfo(t1, CL_PROFILING_COMMAND_END, sizeof b, &b, NULL) == CL_SUCCESS && b > a && a > 0)
        *ms = (double)(b - a) * 1e-6;
    else
        *ms = host;
    clReleaseEvent(t1);
    OCL_CHECK(d, e, "timer wait");
    return 0;
}

static void ocl_mem_usage(mb_device *d, uint64_t *current, uint64_t *peak)
{
    *current = d->mem.current;
    *peak = d->mem.peak;
}

static void ocl_mem_reset_peak(mb_device *d) { d->mem.peak = d->mem.current; }

int ocl_scratch(mb_device *d, size_t bytes, cl_mem *out)
{
    if (bytes > d->scratch_bytes) {
        if (d->scratch) {
            clFinish(d->q);
            clReleaseMemObject(d->scratch);
            mb_mem_sub(&d->mem, d->scratch_bytes);
        }
        d->scratch = NULL;
        d->scratch_bytes = 0;
        size_t want = bytes + bytes / 4;
        if (want > d->max_alloc) want = bytes;
        cl_int e;
        d->scratch = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, want, NULL, &e);
        if (e != CL_SUCCESS) {
            d->scratch = NULL;
            return ocl_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "scratch of %zu bytes: %s", want, ocl_error_name(e));
        }
        d->scratch_bytes = want;
        mb_mem_add(&d->mem, want);
    }
    *out = d->scratch;
    return 0;
}

int ocl_args(mb_device *d, cl_kernel k, const char *name, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        size_t size = va_arg(ap, size_t);
        const void *val = va_arg(ap, const void *);
        cl_int e = clSetKernelArg(k, (cl_uint)i, size, val);
        if (e != CL_SUCCESS) {
            va_end(ap);
            return ocl_fail(d, MAMBA_ERR_BACKEND, "%s: argument %d: %s", name, i, ocl_error_name(e));
        }
    }
    va_end(ap);
    return 0;
}

static int ocl_supports(mb_device *d, mb_fused_kind kind, const mb_fused_query *q)
{
    (void)d;
    switch (kind) {
    case MB_FUSED_GRAPHS: return 0;
    case MB_FUSED_MIXER_STEP: return ocl_step_supports(q);
    case MB_FUSED_GEMV: return ocl_gemv_supports(q);
    case MB_FUSED_GEMM16: return 0; /* 16-bit weights are widened: fp32 arithmetic */
    }
    return 0;
}

static const mb_device_ops ocl_device_ops = {
    .device_count = ocl_device_count,
    .device_props = ocl_device_props,
    .open = ocl_open,
    .close = ocl_close,
    .last_error = ocl_last_error,
    .alloc = ocl_alloc,
    .free = ocl_free,
    .upload = ocl_upload,
    .download = ocl_download,
    .fill_zero = ocl_fill_zero,
    .copy = ocl_copy,
    .sync = ocl_sync,
    .mem_usage = ocl_mem_usage,
    .mem_reset_peak = ocl_mem_reset_peak,
};

static const mb_model_ops ocl_model_ops = {
    .embed = ocl_embed,
    .add_rmsnorm = ocl_add_rmsnorm,
    .rmsnorm_segments = ocl_rmsnorm_segments,
    .gemm = ocl_gemm,
    .conv_silu = ocl_conv_silu,
    .scan = ocl_scan,
    .argmax = ocl_argmax,
    .scan_backward = ocl_scan_backward,
};

static const mb_fused_ops ocl_fused_ops = {
    .supports = ocl_supports,
    .mixer_step = ocl_mixer_step,
    .gemv_fused = ocl_gemv_fused,
};

static const mb_probe_ops ocl_probe_ops = {
    .read_sum = ocl_read_sum,
    .timer_start = ocl_timer_start,
    .timer_stop = ocl_timer_stop,
};

static const mb_backend ocl_vtable = {
    .abi_version = MB_BACKEND_ABI_VERSION,
    .name = "opencl",
    .device = &ocl_device_ops,
    .ops = &ocl_model_ops,
    .fused = &ocl_fused_ops,
    .probe = &ocl_probe_ops,
    .train = &ocl_train_ops,
};

__attribute__((visibility("default"))) const mb_backend *mamba_backend_register(int abi_version)
{
    return abi_version == MB_BACKEND_ABI_VERSION ? &ocl_vtable : NULL;
}
