/* The CUDA backend's training ops (cuda_train.cu): mb_train_ops, in its order. */
#ifndef MB_CUDA_TRAIN_H
#define MB_CUDA_TRAIN_H

#include "cuda_internal.h"

int cuda_train_gemm_f32(mb_device *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha, mb_ptr a,
                        size_t lda, mb_ptr b, size_t ldb, float beta, mb_ptr c, size_t ldc);
int cuda_train_rmsnorm_backward(mb_device *dev, mb_ptr x, mb_ptr w, mb_ptr dy, size_t rows, size_t dim, float eps,
                                mb_ptr dx, int accumulate, mb_ptr dw);
int cuda_train_conv_silu_backward(mb_device *dev, const mb_conv_bwd_op *op);
int cuda_train_embed_backward(mb_device *dev, mb_ptr ids, size_t rows, mb_ptr dy, size_t dim, mb_ptr dtable,
                              size_t vocab);
int cuda_train_cross_entropy(mb_device *dev, mb_ptr logits, size_t rows, size_t vocab, mb_ptr labels, float scale,
                             mb_ptr loss, mb_ptr correct);
int cuda_train_sum_squares(mb_device *dev, mb_ptr x, size_t n, mb_ptr out);
int cuda_train_adamw(mb_device *dev, const mb_adamw_op *op);
int cuda_train_axpy(mb_device *dev, size_t n, float alpha, mb_ptr x, mb_ptr y);
int cuda_train_neg_exp(mb_device *dev, size_t n, mb_ptr x, mb_ptr y);
int cuda_train_mul_acc(mb_device *dev, size_t n, mb_ptr x, mb_ptr w, mb_ptr y);

#endif
