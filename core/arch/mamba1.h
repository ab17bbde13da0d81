/* The Mamba-1 family (Mamba, Falcon-Mamba): one layer's weights and the pieces the family's
 * entries share. */
#ifndef MB_ARCH_MAMBA1_H
#define MB_ARCH_MAMBA1_H

#include "arch/arch.h"

/* Vectors are converted to f32 at load (they are tiny); matrices keep their dtype. */
typedef struct mb_mamba1_layer {
    mb_ptr norm;          /* (d_model)                                                  */
    mb_mat in_proj;       /* (2*d_inner, d_model)                                       */
    mb_ptr in_proj_bias;  /* (2*d_inner) or none                                        */
    mb_ptr conv_w;        /* (d_inner, d_conv)                                          */
    mb_ptr conv_b;        /* (d_inner) or none                                          */
    mb_mat x_proj;        /* (dt_rank + 2N, d_inner)                                    */
    mb_mat dt_proj;       /* (d_inner, dt_rank)                                         */
    mb_ptr dt_bias;       /* (d_inner)                                                  */
    mb_ptr A;             /* (d_inner, N), = -exp(A_log), computed at load              */
    mb_ptr D;             /* (d_inner)                                                  */
    mb_mat out_proj;      /* (d_model, d_inner)                                         */
    mb_ptr out_proj_bias; /* (d_model) or none                                          */
} mb_mamba1_layer;

size_t mb_mamba1_specs_count(const mamba_config_t *c);
void mb_mamba1_specs_build(mamba_model_t *m, mb_spec *specs, size_t *n);
mb_state_shape mb_mamba1_state_shape(const mamba_config_t *c);
size_t mb_mamba1_work_bytes(const mamba_config_t *c, size_t rows);
void mb_mamba1_fold_queries(const mamba_model_t *m, size_t rows, mb_fused_query *in_q, mb_fused_query *out_q);
/* The fused step's query; bc_norm: Falcon-Mamba's normalized dt, B and C. */
void mb_mamba1_step_query(const mamba_model_t *m, size_t batch, int bc_norm, mb_fused_query *q);
/* The entry fields every member of the family shares (designated initializers). */
#define MB_MAMBA1_FAMILY                                                                      \
    .layer_size = sizeof(mb_mamba1_layer), .specs_count = mb_mamba1_specs_count,             \
    .specs_build = mb_mamba1_specs_build, .state_shape = mb_mamba1_state_shape,              \
    .mixer_work_bytes = mb_mamba1_work_bytes, .fold_queries = mb_mamba1_fold_queries

/* One layer; bc_eps > 0: dt, B and C pass through a weightless RMSNorm of that eps after
 * x_proj (Falcon-Mamba), 0: not (Mamba). */
mamba_status_t mb_mamba1_enqueue(const mb_layer_io *io, float bc_eps);

#endif
