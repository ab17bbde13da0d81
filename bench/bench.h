/* mamba-bench: shared types of the measuring and the reporting halves. */
#ifndef MAMBA_BENCH_H
#define MAMBA_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

#define MAX_BACKENDS 8

typedef struct device_row {
    char backend[16];
    char name[128];
    double copy_gbps;     /* (read + write) bytes / time of a device copy                  */
    double read_gbps;     /* bytes / time of a read-only sum                               */
    double gemm_gflops;   /* on the model's own prefill GEMM shapes; 0 when not measured   */
} device_row;

typedef enum { MODE_SCAN, MODE_PREFILL, MODE_DECODE } bench_mode;

typedef struct result {
    char backend[16];
    char device[128];
    bench_mode mode;
    char model[64];
    mamba_dtype_t dtype;
    size_t batch, seqlen, tokens;
    size_t shape[4];       /* scan */
    int all_logits;        /* prefill: logits of every position (1: into mamba_alloc_host's
                              memory, 2: into malloc'd memory) */
    double median_ms, min_ms;
    double tokens_per_s;   /* prefill, decode; < 0: n/a */
    double gbps;           /* scan; < 0: n/a */
    double roofline_pct;
    const char *limit;     /* what the percentage is of */
    uint64_t peak_mem;
    double max_abs_err, nmse;  /* < 0: not checked */
} result;

void report_table(const device_row *devs, size_t n_devs, const result *res, size_t n_res);
int report_json(const char *path, const device_row *devs, size_t n_devs, const result *res, size_t n_res);
const char *mode_name(bench_mode m);

#endif
