/* A selective-scan case from a safetensors file in the layout of mamba_ssm's
 * selective_scan_ref, as mamba_scan arguments: `mamba scan` and `mamba scan --backward`. */
#ifndef MAMBA_SCAN_CASE_H
#define MAMBA_SCAN_CASE_H

#include "mamba.h"

enum { SC_U, SC_DELTA, SC_A, SC_B, SC_C, SC_D, SC_Z, SC_BIAS, SC_COUNT };

typedef struct scan_case {
    mamba_tensor_file_t *file;
    mamba_tensor_t t[SC_COUNT];   /* as found in the file (t[i].data is v[i] when present)     */
    float *v[SC_COUNT];           /* f32 copies; NULL for an absent optional tensor              */
    size_t batch, dim, len, d_state;
    mamba_scan_args_t args;       /* every input set; out's strides are u's; out/state_out unset */
} scan_case;

/* The tensor names, in the order of the enum. */
extern const char *const scan_case_names[SC_COUNT];

/* Open path and check the shapes. softplus: 1 / 0 forces delta_softplus, -1 reads the header
 * metadata (delta_softplus or softplus = true). On failure prints the error (as cmd) and
 * returns 0 with nothing to free. */
int scan_case_load(const char *cmd, const char *path, int softplus, scan_case *c);
void scan_case_free(scan_case *c);

/* `mamba scan --backward` on a loaded case (its file also holds dout): writes the d_* tensors
 * to out. Returns the exit code. */
int cmd_scan_backward(const scan_case *c, const char *in, const char *out, const char *backend, int threads);

#endif
