/* The cases of tests/data/grads (selective_scan_ref's layout, with a cotangent dout and the
 * float64 autograd gradients d_*) as mamba_scan_backward arguments. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static float *optional(grad_fixture *f, const char *name, int slot)
{
    mamba_tensor_t t;
    if (mamba_tensor_file_find(f->file, name, &t) != MAMBA_OK) return NULL;
    return f->owned[slot] = file_f32(f->file, name, NULL);
}

void grad_fixture_load(grad_fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    char rel[256];
    snprintf(rel, sizeof rel, "grads/scan_%s.safetensors", name);
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &f->file), MAMBA_OK);
    mamba_tensor_t u, A;
    ck_assert_int_eq(mamba_tensor_file_find(f->file, "u", &u), MAMBA_OK);
    ck_assert_int_eq(mamba_tensor_file_find(f->file, "A", &A), MAMBA_OK);
    const size_t B = (size_t)u.shape[0], D = (size_t)u.shape[1], L = (size_t)u.shape[2], N = (size_t)A.shape[1];
    const ptrdiff_t sb = (ptrdiff_t)(D * L), sd = (ptrdiff_t)L;
    const char *sp = mamba_tensor_file_metadata(f->file, "delta_softplus");
    mamba_scan_args_t a = {
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = 1,
        .u = optional(f, "u", 0), .u_sb = sb, .u_st = 1, .u_sd = sd,
        .delta = optional(f, "delta", 1), .delta_sb = sb, .delta_st = 1, .delta_sd = sd,
        .A = optional(f, "A", 2),
        .B = optional(f, "B", 3), .B_sb = (ptrdiff_t)(N * L), .B_st = 1, .B_sn = (ptrdiff_t)L,
        .C = optional(f, "C", 4), .C_sb = (ptrdiff_t)(N * L), .C_st = 1, .C_sn = (ptrdiff_t)L,
        .D = optional(f, "D", 5), .z = optional(f, "z", 6), .z_sb = sb, .z_st = 1, .z_sd = sd,
        .delta_bias = optional(f, "delta_bias", 7), .delta_softplus = sp && strcmp(sp, "true") == 0,
        .out_sb = sb, .out_st = 1, .out_sd = sd,
    };
    f->args = a;
    f->dout = file_f32(f->file, "dout", NULL);
    static const char *const names[GRAD_FIXTURE_MAX] = {"d_u", "d_delta", "d_A", "d_B", "d_C", "d_D", "d_z",
                                                        "d_delta_bias"};
    float **dst[GRAD_FIXTURE_MAX] = {&f->grads.du, &f->grads.ddelta, &f->grads.dA, &f->grads.dB, &f->grads.dC,
                                     &f->grads.dD, &f->grads.dz, &f->grads.ddelta_bias};
    for (int i = 0; i < GRAD_FIXTURE_MAX; i++) {
        mamba_tensor_t t;
        if (mamba_tensor_file_find(f->file, names[i], &t) != MAMBA_OK) continue;
        const int k = f->count++;
        f->names[k] = names[i];
        f->ref[k] = file_f32(f->file, names[i], &f->n[k]);
        f->got[k] = calloc(f->n[k] + 1, sizeof(float));
        *dst[i] = f->got[k];
    }
}

void grad_fixture_free(grad_fixture *f)
{
    for (int i = 0; i < 8; i++) free(f->owned[i]);
    for (int i = 0; i < f->count; i++) {
        free(f->ref[i]);
        free(f->got[i]);
    }
    free(f->dout);
    mamba_tensor_file_close(f->file);
}
