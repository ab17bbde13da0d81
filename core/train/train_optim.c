/* mamba_trainer_apply: AdamW (torch.optim.AdamW's update, decoupled weight decay) over every
 * tensor, on the mean of the micro-batches accumulated since the last apply, clipped to
 * max_grad_norm by the global norm: one sum_squares over the whole gradient buffer (its padding
 * between tensors is zero), read by each tensor's adamw op on the device. */
#include <math.h>
#include <string.h>

#include "train/train.h"

/* The learning rate of the k-th step (k = 1, 2, ...). Warmup-cosine: lr k / warmup_steps for
 * k <= warmup_steps, then lr (r + (1 - r) (1 + cos(pi p)) / 2) with r = min_lr_ratio and
 * p = (k - warmup_steps) / (total_steps - warmup_steps) capped at 1 (p = 1 when total_steps
 * <= warmup_steps): lr r at total_steps and after. */
static double lr_at(const mamba_train_options_t *o, long k)
{
    const double lr = o->lr;
    if (o->schedule != MAMBA_LR_WARMUP_COSINE) return lr;
    if (k <= o->warmup_steps) return lr * (double)k / (double)o->warmup_steps;
    const long span = o->total_steps - o->warmup_steps;
    double prog = span > 0 ? (double)(k - o->warmup_steps) / (double)span : 1.0;
    if (prog > 1) prog = 1;
    const double r = o->min_lr_ratio, pi = 3.14159265358979323846;
    return lr * (r + (1 - r) * 0.5 * (1 + cos(pi * prog)));
}

mamba_status_t mamba_trainer_apply(mamba_trainer_t *tr, mamba_train_stats_t *stats)
{
    if (!tr) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_apply: trainer is NULL");
    mamba_context_t *ctx = tr->ctx;
    const mb_train_ops *t = tr->tops;
    if (tr->n_micro == 0)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "mamba_trainer_apply: no batch accumulated since the last apply (call mamba_trainer_accumulate)");
    const mamba_train_options_t *o = &tr->opts;
    const long step = tr->step + 1;
    const double lr = lr_at(o, step);
    const float grad_scale = 1.0f / (float)tr->n_micro;
    const mb_ptr norm_sq = {tr->norm_sq, 0};
    MB_TRY_BE(ctx, t->sum_squares(ctx->dev, (mb_ptr){tr->grad, 0}, tr->total, norm_sq), "gradient norm");
    for (size_t i = 0; i < tr->n_params; i++) {
        const mb_train_param *p = &tr->params[i];
        const size_t off = p->off * 4;
        const mb_adamw_op op = {
            .n = p->numel,
            .param = {tr->param, off}, .grad = {tr->grad, off}, .m = {tr->m, off}, .v = {tr->v, off},
            .norm_sq = o->max_grad_norm > 0 ? norm_sq : (mb_ptr){NULL, 0},
            .lr = (float)lr, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
            .weight_decay = p->decay ? o->weight_decay : 0.0f, .max_norm = o->max_grad_norm,
            .grad_scale = grad_scale, .step = step,
        };
        MB_TRY_BE(ctx, t->adamw(ctx->dev, &op), p->name);
    }
    float nsq = 0;
    MB_TRY_BE(ctx, ctx->dv->download(ctx->dev, &nsq, norm_sq, sizeof nsq), "download of the gradient norm");
    MB_TRY_BE(ctx, ctx->dv->fill_zero(ctx->dev, (mb_ptr){tr->grad, 0}, tr->total * 4), "clearing the gradients");
    tr->step = step;
    tr->A_stale = 1;
    if (stats) {
        memset(stats, 0, sizeof *stats);
        stats->loss = tr->loss_sum / (double)tr->n_micro;
        stats->tokens = tr->tokens;
        stats->correct = tr->correct;
        stats->grad_norm = sqrt((double)nsq) * grad_scale;
        stats->lr = (float)lr; /* what the op used */
        stats->step = step;
    }
    tr->n_micro = 0;
    tr->loss_sum = 0;
    tr->tokens = 0;
    tr->correct = 0;
    return MAMBA_OK;
}

mamba_status_t mamba_trainer_step(mamba_trainer_t *tr, const int32_t *ids, const int32_t *labels, size_t batch,
                                  size_t len, mamba_train_stats_t *stats)
{
    mamba_status_t st = mamba_trainer_accumulate(tr, ids, labels, batch, len, NULL);
    return st == MAMBA_OK ? mamba_trainer_apply(tr, stats) : st;
}
