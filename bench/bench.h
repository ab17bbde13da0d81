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

typedef enum { MODE_SCAN, MODE_PREFILL, MODE_DECODE, MODE_TOKENIZE, MODE_SCAN_BWD, MODE_TRAIN, MODE_COUNT } bench_mode;

typedef struct result {
    char backend[16];
    char device[128];
    bench_mode mode;
    char model[64];        /* tokenize: the text file's name */
    mamba_dtype_t dtype;
    mamba_dtype_t compute_dtype;   /* what the GEMMs multiply in: mamba_model_compute_dtype */
    size_t batch, seqlen, tokens;
    size_t shape[4];       /* scan, scan-bwd */
    int all_logits;        /* prefill: logits of every position (1: into mamba_alloc_host's
                              memory, 2: into malloc'd memory) */
    double median_ms, min_ms;
    double tokens_per_s;   /* prefill, decode; < 0: n/a */
    double gbps;           /* scan; < 0: n/a */
    double roofline_pct;
    const char *limit;     /* what the percentage is of */
    uint64_t peak_mem;
    double max_abs_err, nmse;  /* < 0: not checked */
    size_t text_bytes, n_docs; /* tokenize: the text (tokens: the ids it gives)           */
    double load_ms, mb_per_s;  /* tokenize: loading the tokenizer; text bytes / time       */
    double loss;               /* train: the last timed step's                              */
    uint64_t param_bytes, activation_bytes; /* train: mamba_trainer_memory's                 */
    int steps, warmup_steps;   /* train: timed and untimed steps                            */
} result;

void report_table(const device_row *devs, size_t n_devs, const result *res, size_t n_res);
int report_json(const char *path, const device_row *devs, size_t n_devs, const result *res, size_t n_res);
const char *mode_name(bench_mode m);
/* --mode=serve (serve_load.c): its own options; the exit status. */
int bench_serve(int argc, char **argv);
/* --mode=tokenize (tokenize.c): encode every document of text repeat times after warmup
 * passes; 0, or the exit status (1 runtime error, 2 usage) with a message on stderr. */
int bench_tokenize(const char *tokenizer, const char *text, int warmup, int repeat, result *r);

#endif
