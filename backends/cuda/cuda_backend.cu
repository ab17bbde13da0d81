/* CUDA backend module (libmamba-cuda.so): devices, buffers, timers and the vtable.
 * cudart is linked statically, so the module needs only the driver and cuBLAS at run time. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/scan_bwd.h"
#include "cuda_internal.h"
#include "cuda_train.h"

int cuda_fail(mb_device *dev, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dev->err, sizeof dev->err, fmt, ap);
    va_end(ap);
    return status;
}

int cuda_check(mb_device *dev, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 0;
    return cuda_fail(dev, e == cudaErrorMemoryAllocation ? MAMBA_ERR_OUT_OF_MEMORY : MAMBA_ERR_BACKEND, "%s: %s (%s)",
                     what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static int cu_device_count(char *note, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(note, len, "no usable CUDA driver or device: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return -1;
    }
    if (n == 0) snprintf(note, len, "the CUDA driver reports no device");
    return n;
}

static int cu_device_props(int index, mb_device_props *p)
{
    cudaDeviceProp prop;
    memset(p, 0, sizeof *p);
    if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
        (void)cudaGetLastError();
        return MAMBA_ERR_NO_DEVICE;
    }
    snprintf(p->name, sizeof p->name, "%s", prop.name);
    p->memory_bytes = prop.totalGlobalMem;
    p->compute_units = prop.multiProcessorCount;
    p->is_gpu = 1;
    p->usable = prop.major >= 7;
    snprintf(p->note, sizeof p->note, "sm_%d%d%s", prop.major, prop.minor, p->usable ? "" : ", compute capability 7.0 needed");
    return 0;
}

/* A scratch block a recorded graph writes into, outlived by the graph: kept until close. */
struct retired_scratch {
    void *ptr;
    retired_scratch *next;
};

static void cu_close(mb_device *d)
{
    if (!d) return;
    cudaSetDevice(d->index);
    if (d->stream) cudaStreamSynchronize(d->stream);
    if (d->copy_stream) cudaStreamSynchronize(d->copy_stream);
    if (d->blas) cublasDestroy(d->blas);
    cudaFree(d->blas_workspace);
    cudaFree(d->argmax_scratch);
    cudaFree(d->scratch);
    while (d->retired) {
        retired_scratch *r = d->retired;
        d->retired = r->next;
        cudaFree(r->ptr);
        free(r);
    }
    if (d->t0) cudaEventDestroy(d->t0);
    if (d->t1) cudaEventDestroy(d->t1);
    if (d->work_done) cudaEventDestroy(d->work_done);
    if (d->copies_done) cudaEventDestroy(d->copies_done);
    for (unsigned i = 0; i < MB_DOWNLOAD_MARKS; i++)
        if (d->marks[i]) cudaEventDestroy(d->marks[i]);
    if (d->stream) cudaStreamDestroy(d->stream);
    if (d->copy_stream) cudaStreamDestroy(d->copy_stream);
    free(d);
}

void cuda_use_device(mb_device *d)
{
    if (!d) return;
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != d->index) cudaSetDevice(d->index);
}

static int cu_open(int index, const mb_open_options *o, mb_device **out, char *err, size_t err_len)
{
    mb_device *d = (mb_device *)calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, err_len, "out of memory");
        return MAMBA_ERR_OUT_OF_MEMORY;
    }
    d->index = index;
    int rc = 0;
    cudaDeviceProp prop;
    cublasStatus_t bs;
    if ((rc = cuda_check(d, cudaSetDevice(index), "cudaSetDevice")) ||
        (rc = cuda_check(d, cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties")) ||
        (rc = cuda_check(d, cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), "cudaStreamCreate")) ||
        (rc = cuda_check(d, cudaEventCreate(&d->t0), "cudaEventCreate")) ||
        (rc = cuda_check(d, cudaEventCreate(&d->t1), "cudaEventCreate")) ||
        (rc = cuda_check(d, cudaStreamCreateWithFlags(&d->copy_stream, cudaStreamNonBlocking), "cudaStreamCreate")) ||
        (rc = cuda_check(d, cudaEventCreateWithFlags(&d->work_done, cudaEventDisableTiming), "cudaEventCreate")) ||
        (rc = cuda_check(d, cudaEventCreateWithFlags(&d->copies_done, cudaEventDisableTiming), "cudaEventCreate")))
        goto fail;
    d->sm_count = prop.multiProcessorCount;
    d->total_memory = prop.totalGlobalMem;
    d->pdl = prop.major >= 9 && !getenv("MAMBA_CUDA_NO_PDL");
    if ((bs = cublasCreate(&d->blas)) != CUBLAS_STATUS_SUCCESS) {
        d->blas = nullptr;
        rc = cuda_fail(d, MAMBA_ERR_BACKEND, "cublasCreate failed (status %d)", (int)bs);
        goto fail;
    }
    d->blas_workspace_bytes = (size_t)32 << 20;
    if ((rc = cuda_check(d, cudaMalloc(&d->blas_workspace, d->blas_workspace_bytes), "cuBLAS workspace"))) goto fail;
    if ((rc = cuda_check(d, cudaMalloc(&d->argmax_scratch, ARGMAX_SCRATCH_BYTES), "argmax scratch")) ||
        (rc = cuda_check(d, cudaMemset(d->argmax_scratch, 0, ARGMAX_SCRATCH_BYTES), "argmax scratch")))
        goto fail;
    cublasSetStream(d->blas, d->stream);
    cublasSetWorkspace(d->blas, d->blas_workspace, d->blas_workspace_bytes);
    /* the default, stated: cuBLAS routines that would sum with atomics take their
     * deterministic variant (training relies on run-to-run identical GEMMs) */
    cublasSetAtomicsMode(d->blas, CUBLAS_ATOMICS_NOT_ALLOWED);
    /* fp32 GEMMs stay fp32 (3xTF32 or SGEMM); plain TF32 only when asked for */
    {
        const mb_gemm_mode mode = o ? o->gemm : MB_GEMM_DEFAULT;
        cublasSetMathMode(d->blas, mode == MB_GEMM_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
        d->tf32x3 = prop.major >= 8 && mode == MB_GEMM_DEFAULT;
        d->compute_f32 = o ? o->compute_f32 : 0;
    }
    {
        const char *rows = getenv("MAMBA_CUDA_GEMV16_ROWS");
        const int v = rows ? atoi(rows) : 0;
        d->gemv16_rows = v >= 1 && v <= 8 ? v : CUDA_GEMV16_ROWS;
    }
    {
        /* for tests: a smaller bound on the scan backward's partial sums, to take it in segments */
        const char *parts = getenv("MAMBA_CUDA_BWD_PARTS");
        const long long v = parts ? atoll(parts) : 0;
        d->bwd_parts = v > 0 ? (size_t)v : MB_SCAN_BWD_PPARTS;
    }
    if (d->tf32x3 && (rc = cuda_gemm_3xtf32_init(d))) goto fail;
    *out = d;
    return 0;
fail:
    snprintf(err, err_len, "%s", d->err);
    cu_close(d);
    return rc;
}

static const char *cu_last_error(mb_device *d) { return d ? d->err : ""; }

static int cu_alloc(mb_device *d, size_t bytes, mb_buffer **out)
{
    mb_buffer *b = (mb_buffer *)malloc(sizeof *b);
    if (!b) return cuda_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "out of host memory");
    cudaError_t e = cudaMalloc(&b->ptr, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        free(b);
        /* the free memory only when it is worth a message: the query costs a driver call */
        size_t free_b = 0, total_b = d->total_memory;
        cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        return cuda_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "cudaMalloc of %zu bytes failed: %s (%zu of %zu bytes free)", bytes,
                         cudaGetErrorString(e), free_b, total_b);
    }
    b->bytes = bytes;
    mb_mem_add(&d->mem, bytes);
    *out = b;
    return 0;
}

static void cu_free(mb_device *d, mb_buffer *b)
{
    if (!b) return;
    cudaStreamSynchronize(d->stream);
    cudaFree(b->ptr);
    mb_mem_sub(&d->mem, b->bytes);
    free(b);
}

static int range_ok(mb_device *d, mb_ptr p, size_t bytes, const char *what)
{
    return mb_range_check(p.buf != nullptr, p.buf ? p.buf->bytes : 0, p.offset, bytes, what, d->err, sizeof d->err);
}

static int cu_upload(mb_device *d, mb_ptr dst, const void *src, size_t bytes)
{
    int rc = range_ok(d, dst, bytes, "upload");
    if (rc || !bytes) return rc;
    CU_CHECK(d, cudaMemcpyAsync(cu_at(dst), src, bytes, cudaMemcpyHostToDevice, d->stream), "upload");
    /* From pageable memory the copy returns once src is staged; from page-locked memory
     * (host_alloc's, or registered) the DMA reads src later: wait for it, as the caller may
     * reuse src at once (backend.h). */
    cudaPointerAttributes pa;
    if (cudaPointerGetAttributes(&pa, src) != cudaSuccess) {
        (void)cudaGetLastError();
        pa.type = cudaMemoryTypeHost; /* unknown: assume it is page-locked */
    }
    if (pa.type != cudaMemoryTypeUnregistered) CU_CHECK(d, cudaStreamSynchronize(d->stream), "upload");
    return 0;
}

static int cu_download(mb_device *d, void *dst, mb_ptr src, size_t bytes)
{
    int rc = range_ok(d, src, bytes, "download");
    if (rc || !bytes) return rc;
    CU_CHECK(d, cudaMemcpyAsync(dst, cu_at(src), bytes, cudaMemcpyDeviceToHost, d->stream), "download");
    /* the host buffer is the caller's: it must be complete when we return */
    CU_CHECK(d, cudaStreamSynchronize(d->stream), "download");
    return 0;
}

static int cu_fill_zero(mb_device *d, mb_ptr dst, size_t bytes)
{
    int rc = range_ok(d, dst, bytes, "fill");
    if (rc || !bytes) return rc;
    CU_CHECK(d, cudaMemsetAsync(cu_at(dst), 0, bytes, d->stream), "fill");
    return 0;
}

static int cu_sync(mb_device *d)
{
    CU_CHECK(d, cudaStreamSynchronize(d->stream), "synchronize");
    CU_CHECK(d, cudaStreamSynchronize(d->copy_stream), "synchronize the copies to the host");
    return 0;
}

static int cu_host_alloc(mb_device *d, size_t bytes, void **out)
{
    *out = nullptr;
    cudaError_t e = cudaHostAlloc(out, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *out = nullptr;
        return cuda_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "cudaHostAlloc of %zu bytes: %s", bytes, cudaGetErrorString(e));
    }
    return 0;
}

static void cu_host_free(mb_device *d, void *p)
{
    (void)d;
    cudaFreeHost(p);
}

/* The copy waits on the work enqueued so far (work_done) on its own stream, so the work
 * enqueued next runs beside it; copies_done lets download_fence hold later work back. */
static int cu_download_async(mb_device *d, void *dst, mb_ptr src, size_t bytes)
{
    int rc = range_ok(d, src, bytes, "download");
    if (rc || !bytes) return rc;
    CU_CHECK(d, cudaEventRecord(d->work_done, d->stream), "download: cudaEventRecord");
    CU_CHECK(d, cudaStreamWaitEvent(d->copy_stream, d->work_done, 0), "download: cudaStreamWaitEvent");
    CU_CHECK(d, cudaMemcpyAsync(dst, cu_at(src), bytes, cudaMemcpyDeviceToHost, d->copy_stream), "download");
    CU_CHECK(d, cudaEventRecord(d->copies_done, d->copy_stream), "download: cudaEventRecord");
    return 0;
}

static int cu_download_fence(mb_device *d)
{
    CU_CHECK(d, cudaStreamWaitEvent(d->stream, d->copies_done, 0), "download fence: cudaStreamWaitEvent");
    return 0;
}

static int cu_copy_2d(mb_device *d, mb_ptr dst, size_t dst_pitch, mb_ptr src, size_t src_pitch, size_t width,
                      size_t height)
{
    if (!width || !height) return 0;
    if (dst_pitch < width || src_pitch < width)
        return cuda_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "2-D copy: pitches %zu, %zu below the width %zu", dst_pitch,
                         src_pitch, width);
    int rc = range_ok(d, dst, (height - 1) * dst_pitch + width, "2-D copy target");
    if (!rc) rc = range_ok(d, src, (height - 1) * src_pitch + width, "2-D copy source");
    if (rc) return rc;
    CU_CHECK(d, cudaMemcpy2DAsync(cu_at(dst), dst_pitch, cu_at(src), src_pitch, width, height, cudaMemcpyDeviceToDevice,
                                  d->stream), "2-D copy");
    return 0;
}

static int cu_fill_zero_2d(mb_device *d, mb_ptr dst, size_t pitch, size_t width, size_t height)
{
    if (!width || !height) return 0;
    if (pitch < width) return cuda_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "2-D fill: pitch %zu below the width %zu", pitch, width);
    int rc = range_ok(d, dst, (height - 1) * pitch + width, "2-D fill");
    if (rc) return rc;
    CU_CHECK(d, cudaMemset2DAsync(cu_at(dst), pitch, 0, width, height, d->stream), "2-D fill");
    return 0;
}

static int cu_download_mark(mb_device *d, unsigned i)
{
    if (i >= MB_DOWNLOAD_MARKS) return cuda_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "download mark %u, expected < %u", i, MB_DOWNLOAD_MARKS);
    if (!d->marks[i]) CU_CHECK(d, cudaEventCreateWithFlags(&d->marks[i], cudaEventDisableTiming), "cudaEventCreate");
    CU_CHECK(d, cudaEventRecord(d->marks[i], d->copy_stream), "download mark: cudaEventRecord");
    return 0;
}

static int cu_download_wait_mark(mb_device *d, unsigned i)
{
    if (i >= MB_DOWNLOAD_MARKS || !d->marks[i])
        return cuda_fail(d, MAMBA_ERR_INVALID_ARGUMENT, "download mark %u was not set", i);
    CU_CHECK(d, cudaEventSynchronize(d->marks[i]), "wait for a download mark");
    return 0;
}

static int cu_copy(mb_device *d, mb_ptr dst, mb_ptr src, size_t bytes)
{
    int rc = range_ok(d, dst, bytes, "copy target");
    if (!rc) rc = range_ok(d, src, bytes, "copy source");
    if (rc) return rc;
    CU_CHECK(d, cudaMemcpyAsync(cu_at(dst), cu_at(src), bytes, cudaMemcpyDeviceToDevice, d->stream), "copy");
    return 0;
}

static int cu_timer_start(mb_device *d)
{
    CU_CHECK(d, cudaEventRecord(d->t0, d->stream), "cudaEventRecord");
    return 0;
}

static int cu_timer_stop(mb_device *d, double *ms)
{
    float f = 0;
    CU_CHECK(d, cudaEventRecord(d->t1, d->stream), "cudaEventRecord");
    CU_CHECK(d, cudaEventSynchronize(d->t1), "cudaEventSynchronize");
    CU_CHECK(d, cudaEventElapsedTime(&f, d->t0, d->t1), "cudaEventElapsedTime");
    *ms = f;
    return 0;
}

static void cu_mem_usage(mb_device *d, uint64_t *current, uint64_t *peak)
{
    *current = d->mem.current;
    *peak = d->mem.peak;
}

static void cu_mem_reset_peak(mb_device *d) { d->mem.peak = d->mem.current; }

static bool capturing(mb_device *d)
{
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(d->stream, &cs);
    return cs != cudaStreamCaptureStatusNone;
}

bool cuda_scratch_ready(mb_device *d, size_t bytes) { return bytes <= d->scratch_bytes || !capturing(d); }

int cuda_scratch(mb_device *d, size_t bytes, void **out)
{
    const bool in_graph = capturing(d);
    if (bytes > d->scratch_bytes) {
        if (in_graph)
            return cuda_fail(d, MAMBA_ERR_UNSUPPORTED, "scratch of %zu bytes needed while recording a graph", bytes);
        cudaStreamSynchronize(d->stream);
        if (d->scratch && d->scratch_in_graph) {
            /* a recorded graph still points into it: keep it for the graph's replays */
            retired_scratch *r = (retired_scratch *)malloc(sizeof *r);
            if (!r) return cuda_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "out of host memory growing the scratch");
            r->ptr = d->scratch;
            r->next = d->retired;
            d->retired = r;
        } else {
            cudaFree(d->scratch);
            mb_mem_sub(&d->mem, d->scratch_bytes);
        }
        d->scratch = nullptr;
        d->scratch_bytes = 0;
        d->scratch_in_graph = 0;
        size_t want = bytes + bytes / 4;
        cudaError_t e = cudaMalloc(&d->scratch, want);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return cuda_fail(d, MAMBA_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of scratch: %s", want,
                             cudaGetErrorString(e));
        }
        d->scratch_bytes = want;
        mb_mem_add(&d->mem, want);
    }
    if (in_graph) d->scratch_in_graph = 1;
    *out = d->scratch;
    return 0;
}

static int cu_graph_begin(mb_device *d)
{
    CU_CHECK(d, cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    return 0;
}

static int cu_graph_end(mb_device *d, void **out)
{
    *out = nullptr;
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(d->stream, &g);
    if (e != cudaSuccess || !g) {
        (void)cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        return cuda_fail(d, MAMBA_ERR_BACKEND, "cudaStreamEndCapture: %s", cudaGetErrorString(e));
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cuda_fail(d, MAMBA_ERR_BACKEND, "cudaGraphInstantiate: %s", cudaGetErrorString(e));
    }
    *out = exec;
    return 0;
}

static int cu_graph_launch(mb_device *d, void *g)
{
    CU_CHECK(d, cudaGraphLaunch((cudaGraphExec_t)g, d->stream), "cudaGraphLaunch");
    return 0;
}

static void cu_graph_free(mb_device *d, void *g)
{
    cudaStreamSynchronize(d->stream);
    cudaGraphExecDestroy((cudaGraphExec_t)g);
}

static int cu_supports(mb_device *d, mb_fused_kind kind, const mb_fused_query *q)
{
    switch (kind) {
    case MB_FUSED_GRAPHS: return 1;
    case MB_FUSED_MIXER_STEP: return cuda_step_supports(q);
    case MB_FUSED_GEMV: return cuda_gemv_supports(d, q);
    case MB_FUSED_GEMM16: return cuda_gemm16_used(d, q);
    }
    return 0;
}

/* Every entry point that takes an open device first makes that device the calling thread's
 * current one: a context on cuda:1 must not allocate or launch on whatever device the thread
 * had (another context's, or the default 0). */
template <auto Fn> struct guarded;
template <typename R, typename... A, R (*Fn)(mb_device *, A...)> struct guarded<Fn> {
    static R call(mb_device *d, A... a)
    {
        cuda_use_device(d);
        return Fn(d, a...);
    }
};
#define G(fn) guarded<fn>::call

static mb_device_ops make_device_ops(void)
{
    mb_device_ops v;
    memset(&v, 0, sizeof v);
    v.device_count = cu_device_count;
    v.device_props = cu_device_props;
    v.open = cu_open;
    v.close = G(cu_close);
    v.last_error = cu_last_error;
    v.alloc = G(cu_alloc);
    v.free = G(cu_free);
    v.upload = G(cu_upload);
    v.download = G(cu_download);
    v.fill_zero = G(cu_fill_zero);
    v.copy = G(cu_copy);
    v.sync = G(cu_sync);
    v.mem_usage = cu_mem_usage;
    v.mem_reset_peak = cu_mem_reset_peak;
    v.host_alloc = G(cu_host_alloc);
    v.host_free = G(cu_host_free);
    v.download_async = G(cu_download_async);
    v.download_fence = G(cu_download_fence);
    v.download_mark = G(cu_download_mark);
    v.copy_2d = G(cu_copy_2d);
    v.fill_zero_2d = G(cu_fill_zero_2d);
    v.download_wait_mark = G(cu_download_wait_mark);
    return v;
}

static mb_model_ops make_model_ops(void)
{
    mb_model_ops v;
    memset(&v, 0, sizeof v);
    v.embed = G(cuda_embed);
    v.add_rmsnorm = G(cuda_add_rmsnorm);
    v.rmsnorm_segments = G(cuda_rmsnorm_segments);
    v.gemm = G(cuda_gemm);
    v.conv_silu = G(cuda_conv_silu);
    v.scan = G(cuda_scan);
    v.argmax = G(cuda_argmax);
    v.scan_backward = G(cuda_scan_backward);
    return v;
}

static mb_fused_ops make_fused_ops(void)
{
    mb_fused_ops v;
    memset(&v, 0, sizeof v);
    v.supports = cu_supports;
    v.graph_begin = G(cu_graph_begin);
    v.graph_end = G(cu_graph_end);
    v.graph_launch = G(cu_graph_launch);
    v.graph_free = G(cu_graph_free);
    v.mixer_step = G(cuda_mixer_step);
    v.gemv_fused = G(cuda_gemv_fused);
    v.add_rmsnorm16 = G(cuda_add_rmsnorm16);
    v.gemm_x16 = G(cuda_gemm_x16);
    return v;
}

static mb_train_ops make_train_ops(void)
{
    mb_train_ops v;
    memset(&v, 0, sizeof v);
    v.gemm_f32 = G(cuda_train_gemm_f32);
    v.rmsnorm_backward = G(cuda_train_rmsnorm_backward);
    v.conv_silu_backward = G(cuda_train_conv_silu_backward);
    v.embed_backward = G(cuda_train_embed_backward);
    v.cross_entropy = G(cuda_train_cross_entropy);
    v.sum_squares = G(cuda_train_sum_squares);
    v.adamw = G(cuda_train_adamw);
    v.axpy = G(cuda_train_axpy);
    v.neg_exp = G(cuda_train_neg_exp);
    v.mul_acc = G(cuda_train_mul_acc);
    return v;
}

static mb_probe_ops make_probe_ops(void)
{
    mb_probe_ops v;
    memset(&v, 0, sizeof v);
    v.read_sum = G(cuda_read_sum);
    v.timer_start = G(cu_timer_start);
    v.timer_stop = G(cu_timer_stop);
    return v;
}
#undef G

static const mb_device_ops cuda_device_ops = make_device_ops();
static const mb_model_ops cuda_model_ops = make_model_ops();
static const mb_fused_ops cuda_fused_ops = make_fused_ops();
static const mb_probe_ops cuda_probe_ops = make_probe_ops();
static const mb_train_ops cuda_train_ops = make_train_ops();

static mb_backend make_vtable(void)
{
    mb_backend v;
    memset(&v, 0, sizeof v);
    v.abi_version = MB_BACKEND_ABI_VERSION;
    v.name = "cuda";
    v.device = &cuda_device_ops;
    v.ops = &cuda_model_ops;
    v.fused = &cuda_fused_ops;
    v.probe = &cuda_probe_ops;
    v.train = &cuda_train_ops;
    return v;
}

static const mb_backend cuda_vtable = make_vtable();

extern "C" __attribute__((visibility("default"))) const mb_backend *mamba_backend_register(int abi_version)
{
    return abi_version == MB_BACKEND_ABI_VERSION ? &cuda_vtable : nullptr;
}
