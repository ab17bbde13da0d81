/* The OpenCL backend's device: context, in-order queue, program and kernels. */
#ifndef MB_OPENCL_INTERNAL_H
#define MB_OPENCL_INTERNAL_H


#include <CL/cl.h>

#include "api/backend.h"
#include "api/util.h"

enum {
    K_EMBED, K_RMSNORM, K_CONV, K_CONV_STATE, K_SCAN1_16, K_SCANF_16, K_SCAN1_TILED, K_SCANF_TILED, K_CARRY,
    K_GEMV, K_WIDEN, K_BIAS, K_READ, K_CONV_SHORT, K_STEP_XPROJ, K_STEP_SCAN, K_ARGMAX, K_GEMV1, K_RMSNORM_SEG,
    K_BWD_STATES_16, K_BWD_STATES_64, K_BWD_STATES_256, K_BWD_MAIN_16, K_BWD_MAIN_64, K_BWD_MAIN_256, K_BWD_FOLD_TV,
    K_BWD_FOLD_CH,
    /* train_kernels.cl, a program of its own built at the first training op (opencl_train.c) */
    K_TRAIN_FIRST, K_T_SCALE = K_TRAIN_FIRST, K_T_RMS_STATS, K_T_RMS_DX, K_T_RMS_DW, K_T_FOLD, K_T_CONV_DX,
    K_T_CONV_DW, K_T_EMBED, K_T_CE, K_T_SUMSQ1, K_T_SUMSQ2, K_T_ADAMW, K_T_AXPY, K_T_NEG_EXP, K_T_MUL_ACC, K_COUNT
};
/* every kernel's name, in the order above */
extern const char *const ocl_kernel_names[K_COUNT];

struct mb_device {
    cl_device_id device;
    cl_context ctx;
    cl_command_queue q;
    cl_program prog;
    cl_program train_prog;         /* NULL until the first training op                       */
    size_t train_local;            /* items a reduction work-group of the training kernels   */
    cl_kernel k[K_COUNT];
    size_t max_wg;
    cl_ulong max_alloc, global_mem;
    cl_uint base_align;            /* CL_DEVICE_MEM_BASE_ADDR_ALIGN, in bytes: sub-buffer origins */
    cl_uint compute_units;
    cl_mem scratch;
    size_t scratch_bytes;
    mb_mem_stats mem;
    cl_event t0;
    double host_t0;
    /* mb_open_options.profile: each kernel is waited for and its device time summed per
     * kernel, reported through log when the device closes (kernels then run one at a time) */
    int profile;
    void (*log)(void *user, mamba_log_level_t level, const char *message);
    void *log_user;
    double prof_us[K_COUNT];
    unsigned long prof_n[K_COUNT];
    char err[1024];
};

struct mb_buffer {
    cl_mem mem;
    size_t bytes;
};

int ocl_fail(mb_device *d, int status, const char *fmt, ...);
void ocl_profile(mb_device *d, int k, cl_event ev);
const char *ocl_error_name(cl_int e);
#define OCL_CHECK(d, call, what)                                                                   \
    do {                                                                                           \
        cl_int ocl_e_ = (call);                                                                    \
        if (ocl_e_ != CL_SUCCESS)                                                                  \
            return ocl_fail((d), ocl_e_ == CL_MEM_OBJECT_ALLOCATION_FAILURE ||                     \
                                         ocl_e_ == CL_OUT_OF_RESOURCES ? MAMBA_ERR_OUT_OF_MEMORY   \
                                                                       : MAMBA_ERR_BACKEND,        \
                            "%s: %s (%d)", (what), ocl_error_name(ocl_e_), (int)ocl_e_);          \
    } while (0)

/* Set kernel arguments from a list of (size, pointer) pairs. */
int ocl_args(mb_device *d, cl_kernel k, const char *name, int n, ...);
int ocl_scratch(mb_device *d, size_t bytes, cl_mem *out);
static inline cl_mem ocl_mem(mb_ptr p) { return p.buf ? p.buf->mem : NULL; }

int ocl_embed(mb_device *d, mb_ptr ids, size_t rows, mb_ptr table, mamba_dtype_t dt, size_t vocab, size_t dim,
              mb_ptr out);
int ocl_add_rmsnorm(mb_device *d, mb_ptr res, mb_ptr x, mb_ptr w, size_t rows, size_t dim, float eps, mb_ptr out);
int ocl_conv_silu(mb_device *d, const mb_conv_op *op);
int ocl_gemm(mb_device *d, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr w, mamba_dtype_t wdt,
             mb_ptr bias, mb_ptr y, size_t ldy);
int ocl_scan(mb_device *d, const mb_scan_op *op);
int ocl_scan_backward(mb_device *d, const mb_scan_bwd_op *op);
int ocl_read_sum(mb_device *d, mb_ptr src, size_t n, mb_ptr out);
int ocl_mixer_step(mb_device *d, const mb_mixer_step_op *op);
int ocl_step_supports(const mb_fused_query *q);
int ocl_gemv_supports(const mb_fused_query *q);
int ocl_rmsnorm_segments(mb_device *d, mb_ptr x, size_t rows, size_t ld, const mb_segments *seg, float eps);
int ocl_gemv_fused(mb_device *d, size_t m, size_t n, size_t k, mb_ptr x, size_t lda, mb_ptr nw, float eps, mb_ptr w,
                   mamba_dtype_t wdt, mb_ptr bias, mb_ptr y, size_t ldy, int accumulate);
int ocl_argmax(mb_device *d, mb_ptr logits, size_t rows, size_t vocab, mb_ptr ids, mb_ptr ids2, mb_ptr nan_flag);

extern const mb_train_ops ocl_train_ops;

extern const char mb_opencl_kernels[];
extern const char mb_opencl_train_kernels[];
extern const char mb_opencl_common_kernels[]; /* goes ahead of either program's source */

#endif
