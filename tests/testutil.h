/* Helpers for the Check suites: fixture paths, error measures, temporary files. */
#ifndef MAMBA_TESTUTIL_H
#define MAMBA_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

#ifndef MAMBA_TEST_DATA
#error "MAMBA_TEST_DATA must name tests/data"
#endif

/* Exit code ctest reads as "skipped". */
#define TEST_SKIP 77

/* A path under tests/data (static buffer, one at a time per slot 0..3). */
const char *data_path(int slot, const char *rel);
/* A fresh temporary directory (removed with tmpdir_remove). */
char *tmpdir_new(void);
void tmpdir_remove(char *dir);

double max_abs_diff(const float *a, const float *b, size_t n);
double max_abs(const float *a, size_t n);
/* sum (a-b)^2 / sum b^2 */
double nmse(const float *a, const float *ref, size_t n);

/* Tensor of a file converted to f32 / int32 (malloc'd); aborts the test when absent. */
float *file_f32(const mamba_tensor_file_t *f, const char *name, size_t *n);
int32_t *file_ids(const mamba_tensor_file_t *f, const char *name, size_t *n);

/* A fixture model's golden.safetensors (tests/data/models/NAME): its input_ids and logits, and
 * its greedy generation (gen_prompt, gen_tokens, gen_logits); aborts the test when absent. */
typedef struct golden {
    mamba_tensor_file_t *f;
    int32_t *ids, *prompt, *gen;
    float *logits, *gen_logits;
    size_t batch, len, n_prompt, n_gen, vocab;
} golden;
golden load_golden(const char *model);
void free_golden(golden *g);
/* The logits of feeding g's ids one step at a time (mamba_step), in the layout of g's logits
 * (batch, len, vocab); malloc'd. */
float *golden_step_through(mamba_model_t *m, const golden *g);

/* A CPU context (one per test; prefill_chunk 0 = default). */
mamba_context_t *cpu_context(size_t prefill_chunk);

/* All the bytes of path, NUL-terminated, malloc'd; *len (may be NULL) their count. Aborts the
 * test when the file cannot be read. */
char *read_file_all(const char *path, size_t *len);
/* Copy a file. */
void copy_file(const char *from, const char *to);
/* Write bytes to path. */
void write_file(const char *path, const void *data, size_t len);
/* Write a safetensors file whose header is the given JSON and data follows. */
void write_raw_safetensors(const char *path, const char *json, const void *data, size_t data_len);

/* 1 when MAMBA_TEST_REQUIRE lists backend (comma-separated). */
int backend_required(const char *backend);

/* Run a suite (forked per test unless fork is 0); the process exit status: 0 when all passed. */
int run_suite(void *suite, int fork);

/* A case of tests/data/scan (the selective_scan_ref layout) as scan arguments. */
typedef struct scan_fixture {
    mamba_tensor_file_t *file;
    mamba_scan_args_t args;
    float *ref_out, *ref_state, *out, *state;
    size_t n_out, n_state;
    float *owned[8];
} scan_fixture;
void scan_fixture_load(scan_fixture *f, const char *name);
void scan_fixture_free(scan_fixture *f);

/* A case of tests/data/grads/scan_NAME (the layout above, with dout and the references d_*):
 * backward arguments whose gradients (got[i], zeroed) are the ones the case holds. */
#define GRAD_FIXTURE_MAX 8
typedef struct grad_fixture {
    mamba_tensor_file_t *file;
    mamba_scan_args_t args;
    float *dout;
    mamba_scan_grads_t grads;
    int count;
    const char *names[GRAD_FIXTURE_MAX];
    float *ref[GRAD_FIXTURE_MAX], *got[GRAD_FIXTURE_MAX];
    size_t n[GRAD_FIXTURE_MAX];
    float *owned[8];
} grad_fixture;
void grad_fixture_load(grad_fixture *f, const char *name);
void grad_fixture_free(grad_fixture *f);

#endif
