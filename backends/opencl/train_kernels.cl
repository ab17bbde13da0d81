/* OpenCL C 1.2 kernels of the training ops (opencl_train.c), a program of their own built at
 * the first training op, so that inference never compiles them. Buffers come with element
 * offsets, as in kernels.cl. Every sum runs in an order fixed by the launch geometry, which the
 * host derives from the shapes and the device's work-group limit: no atomics, so the same
 * inputs give bitwise the same results on the same device. exp and log are the library's
 * (not native_*): A = -exp(A_log) and the loss are compared against float64 references. */

/* group_sum: common.cl, compiled ahead of this file */

/* ---- GEMM helper ---- */

/* c[i, j] = beta c[i, j] for i < m, j < n (beta 0: c = 0, c not read): a GEMM with k = 0,
 * which CLBlast refuses. */
__kernel void scale_matrix(__global float *c, ulong c_off, ulong ldc, ulong m, ulong n, float beta)
{
    const ulong j = get_global_id(0), i = get_global_id(1);
    if (j >= n || i >= m) return;
    __global float *p = c + c_off + i * ldc + j;
    *p = beta == 0.0f ? 0.0f : beta * *p;
}

/* ---- RMSNorm backward ----
 * out = x / rms * w, rms = sqrt(mean(x^2) + eps). With xhat = x / rms:
 *   dx = (w dy - xhat mean(w dy xhat)) / rms,   dw = sum_r dy xhat. */

/* One work-group per row: stats[2 r] = 1 / rms, stats[2 r + 1] = mean(w dy xhat). */
__kernel void rms_bwd_stats(__global const float *x, ulong x_off, __global const float *w, ulong w_off,
                            __global const float *dy, ulong dy_off, ulong dim, float eps, __global float *stats,
                            ulong st_off)
{
    __local float tmp[256];
    const ulong r = get_group_id(0);
    __global const float *xr = x + x_off + r * dim, *dr = dy + dy_off + r * dim;
    float ss = 0.0f, dot = 0.0f;
    for (ulong i = get_local_id(0); i < dim; i += get_local_size(0)) {
        const float v = xr[i];
        ss += v * v;
        dot += w[w_off + i] * dr[i] * v;
    }
    ss = group_sum(ss, tmp);
    dot = group_sum(dot, tmp);
    if (get_local_id(0) == 0) {
        const float inv = rsqrt(ss / (float)dim + eps);
        stats[st_off + 2 * r] = inv;
        stats[st_off + 2 * r + 1] = dot * inv / (float)dim;
    }
}

/* dx[r, i] (=, or += when accumulate) (w dy - xhat mean) inv, one work-item per element:
 * each element is read before it is written by the same item, so dx may be x or dy. */
__kernel void rms_bwd_dx(__global const float *x, ulong x_off, __global const float *w, ulong w_off,
                         __global const float *dy, ulong dy_off, ulong dim, ulong rows, __global const float *stats,
                         ulong st_off, __global float *dx, ulong dx_off, int accumulate)
{
    const ulong i = get_global_id(0), r = get_global_id(1);
    if (i >= dim || r >= rows) return;
    const float inv = stats[st_off + 2 * r], c = stats[st_off + 2 * r + 1];
    const ulong e = r * dim + i;
    const float v = (w[w_off + i] * dy[dy_off + e] - x[x_off + e] * inv * c) * inv;
    __global float *p = dx + dx_off + e;
    *p = accumulate ? *p + v : v;
}

/* part[blk, i] = sum over the rows of block blk, in row order, of dy[r, i] x[r, i] inv[r]. */
__kernel void rms_bwd_dw_part(__global const float *x, ulong x_off, __global const float *dy, ulong dy_off,
                              ulong dim, ulong rows, ulong rows_per_block, __global const float *stats, ulong st_off,
                              __global float *part, ulong part_off)
{
    const ulong i = get_global_id(0), blk = get_global_id(1);
    if (i >= dim) return;
    const ulong r0 = blk * rows_per_block, r1 = min(rows, r0 + rows_per_block);
    float acc = 0.0f;
    for (ulong r = r0; r < r1; r++) acc += dy[dy_off + r * dim + i] * x[x_off + r * dim + i] * stats[st_off + 2 * r];
    part[part_off + blk * dim + i] = acc;
}

/* The second pass of the per-block partial sums: column j of part (n_blocks rows of n_cols)
 * summed in block order and added to its destination. Column j = k C + c goes to
 * out1[c K + k] for k < K, else to out2[c] (has_out2): the conv's dweight (channels, width)
 * and dbias from k-major partials; RMSNorm's dw with K = 1. */
__kernel void fold_blocks(__global const float *part, ulong part_off, ulong n_cols, ulong n_blocks, ulong C, ulong K,
                          __global float *out1, ulong out1_off, __global float *out2, ulong out2_off, int has_out2)
{
    const ulong j = get_global_id(0);
    if (j >= n_cols) return;
    float acc = 0.0f;
    for (ulong b = 0; b < n_blocks; b++) acc += part[part_off + b * n_cols + j];
    const ulong k = j / C, c = j % C;
    if (k < K)
        out1[out1_off + c * K + k] += acc;
    else if (has_out2)
        out2[out2_off + c] += acc;
}

/* ---- conv_silu backward (zero initial state) ----
 * pre[b, t, c] = bias[c] + sum_k w[c, k] x[b, t - (K-1) + k, c], g = dout silu'(pre),
 * silu'(p) = s (1 + p (1 - s)), s = sigmoid(p). g is recomputed where it is needed (K taps,
 * one exp) rather than kept: cheaper than a (batch, len, channels) scratch. */

/* has_bias: pre has a bias; want_db: the partial sums have dbias's column block */
typedef struct conv_bwd_params {
    long x_sb, x_st, o_sb, o_st, dx_sb, dx_st;
    ulong x_off, w_off, b_off, o_off, dx_off, part_off;
    ulong B, L, C, K, rows_per_block;
    int has_bias, want_db;
} conv_bwd_params;

inline float conv_x(const conv_bwd_params *p, __global const float *x, ulong b, long t, ulong c)
{
    return t >= 0 ? x[(long)p->x_off + (long)b * p->x_sb + t * p->x_st + (long)c] : 0.0f;
}

inline float conv_g(const conv_bwd_params *p, __global const float *x, __global const float *w,
                    __global const float *bias, __global const float *dout, ulong b, long t, ulong c)
{
    float pre = p->has_bias ? bias[p->b_off + c] : 0.0f;
    for (ulong k = 0; k < p->K; k++) pre += w[p->w_off + c * p->K + k] * conv_x(p, x, b, t - (long)(p->K - 1) + (long)k, c);
    const float s = 1.0f / (1.0f + exp(-pre));
    return dout[(long)p->o_off + (long)b * p->o_sb + t * p->o_st + (long)c] * (s * (1.0f + pre * (1.0f - s)));
}

/* dx[b, t, c] = sum_k w[c, k] g[b, t + (K-1) - k, c], g = 0 past len; one item per (c, t, b). */
__kernel void conv_bwd_dx(conv_bwd_params p, __global const float *x, __global const float *w,
                          __global const float *bias, __global const float *dout, __global float *dx)
{
    const ulong c = get_global_id(0), t = get_global_id(1), b = get_global_id(2);
    if (c >= p.C) return;
    float acc = 0.0f;
    for (ulong k = 0; k < p.K; k++) {
        const ulong tt = t + (p.K - 1) - k;
        if (tt < p.L) acc += w[p.w_off + c * p.K + k] * conv_g(&p, x, w, bias, dout, b, (long)tt, c);
    }
    dx[(long)p.dx_off + (long)b * p.dx_sb + (long)t * p.dx_st + (long)c] = acc;
}

/* part[blk, k C + c] = sum over the rows r = b L + t of block blk, in row order, of
 * g[b, t, c] x[b, t - (K-1) + k, c] (k < K) or g[b, t, c] (k = K, for dbias); one item per
 * (c, k, blk), K + want_db blocks of C columns a row. */
__kernel void conv_bwd_dw_part(conv_bwd_params p, __global const float *x, __global const float *w,
                               __global const float *bias, __global const float *dout, __global float *part)
{
    const ulong c = get_global_id(0), k = get_global_id(1), blk = get_global_id(2);
    if (c >= p.C) return;
    const ulong rows = p.B * p.L, r0 = blk * p.rows_per_block, r1 = min(rows, r0 + p.rows_per_block);
    float acc = 0.0f;
    for (ulong r = r0; r < r1; r++) {
        const ulong b = r / p.L;
        const long t = (long)(r % p.L);
        const float g = conv_g(&p, x, w, bias, dout, b, t, c);
        acc += k < p.K ? g * conv_x(&p, x, b, t - (long)(p.K - 1) + (long)k, c) : g;
    }
    part[p.part_off + blk * (p.K + (ulong)p.want_db) * p.C + k * p.C + c] = acc;
}

/* ---- embedding backward ----
 * dtable[ids[r], j] += dy[r, j] in increasing r. One work-item per (column j, slice s) walks
 * every row in order and adds those whose id falls in its slice (id % n_slices == s), so each
 * element of the table receives its rows in increasing r whatever the number of slices; ids
 * outside [0, vocab) belong to no slice and are skipped. */
__kernel void embed_bwd(__global const int *ids, ulong ids_off, ulong rows, __global const float *dy, ulong dy_off,
                        ulong dim, __global float *dtable, ulong dt_off, ulong vocab, ulong n_slices)
{
    const ulong j = get_global_id(0), s = get_global_id(1);
    if (j >= dim) return;
    for (ulong r = 0; r < rows; r++) {
        const int id = ids[ids_off + r];
        if (id < 0 || (ulong)id >= vocab || (ulong)id % n_slices != s) continue;
        dtable[dt_off + (ulong)id * dim + j] += dy[dy_off + r * dim + j];
    }
}

/* ---- cross-entropy ----
 * One work-group per row: the max and its first index, the sum of exp(l - max), then
 * loss = log(sum) + max - l[label] and the row replaced by scale (softmax - onehot). */
__kernel void cross_entropy(__global float *logits, ulong l_off, ulong vocab, __global const int *labels,
                            ulong lab_off, float scale, __global float *loss, ulong loss_off, __global int *correct,
                            ulong cor_off)
{
    __local float tmp[256];
    __local int itmp[256];
    const ulong r = get_group_id(0);
    const uint l = get_local_id(0), n = get_local_size(0);
    __global float *row = logits + l_off + r * vocab;
    const int label = labels[lab_off + r];
    if (label < 0 || (ulong)label >= vocab) {
        for (ulong i = l; i < vocab; i += n) row[i] = 0.0f;
        if (l == 0) {
            loss[loss_off + r] = 0.0f;
            correct[cor_off + r] = 0;
        }
        return;
    }
    /* read before any item overwrites the row (the reductions' barriers lie between) */
    const float target = row[label];
    /* the largest value, the first index among equals; a NaN never wins */
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (ulong i = l; i < vocab; i += n) {
        const float v = row[i];
        if (v > best) { /* increasing i: an equal later value keeps the earlier index */
            best = v;
            bi = (int)i;
        }
    }
    tmp[l] = best;
    itmp[l] = bi;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = n / 2; s > 0; s >>= 1) {
        if (l < s) {
            const float o = tmp[l + s];
            const int oi = itmp[l + s];
            if (o > tmp[l] || (o == tmp[l] && oi < itmp[l])) {
                tmp[l] = o;
                itmp[l] = oi;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float mx = tmp[0];
    const int arg = itmp[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    /* a row of -inf (or NaN) has no finite max: shifting by 0 keeps exp's arguments defined */
    const float shift = isfinite(mx) ? mx : 0.0f;
    float se = 0.0f;
    for (ulong i = l; i < vocab; i += n) se += exp(row[i] - shift);
    se = group_sum(se, tmp);
    for (ulong i = l; i < vocab; i += n) {
        const float pr = exp(row[i] - shift) / se;
        row[i] = scale * (pr - ((ulong)label == i ? 1.0f : 0.0f));
    }
    if (l == 0) {
        /* max - target first: exact when they are close, where the loss is small */
        loss[loss_off + r] = log(se) + (shift - target);
        correct[cor_off + r] = arg == label ? 1 : 0;
    }
}

/* ---- sum of squares: two passes of fixed trees ---- */

/* part[g] = the sum over work-group g's items of x[i]^2, i = the item's global id + multiples
 * of the global size. */
__kernel void sumsq_part(__global const float *x, ulong x_off, ulong n, __global float *part, ulong part_off)
{
    __local float tmp[256];
    float acc = 0.0f;
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) {
        const float v = x[x_off + i];
        acc += v * v;
    }
    acc = group_sum(acc, tmp);
    if (get_local_id(0) == 0) part[part_off + get_group_id(0)] = acc;
}

/* out[0] = the sum of n_part partial sums, by one work-group. */
__kernel void sumsq_final(__global const float *part, ulong part_off, ulong n_part, __global float *out, ulong out_off)
{
    __local float tmp[256];
    float acc = 0.0f;
    for (ulong i = get_local_id(0); i < n_part; i += get_local_size(0)) acc += part[part_off + i];
    acc = group_sum(acc, tmp);
    if (get_local_id(0) == 0) out[out_off] = acc;
}

/* ---- AdamW (torch.optim.AdamW), the clip factor from the gradient norm on the device ---- */

typedef struct adamw_params {
    ulong n, p_off, g_off, m_off, v_off, ns_off;
    float beta1, beta2, eps, decay, step_size, bc2_sqrt, max_norm, grad_scale;
    int has_norm, pad;
} adamw_params;

__kernel void adamw(adamw_params p, __global float *param, __global const float *grad, __global float *m,
                    __global float *v, __global const float *norm_sq)
{
    float f = p.grad_scale;
    if (p.has_norm && p.max_norm > 0.0f) {
        const float norm = sqrt(norm_sq[p.ns_off]) * p.grad_scale;
        f *= fmin(1.0f, p.max_norm / (norm + 1e-6f));
    }
    for (ulong i = get_global_id(0); i < p.n; i += get_global_size(0)) {
        const float g = grad[p.g_off + i] * f;
        const float mi = p.beta1 * m[p.m_off + i] + (1.0f - p.beta1) * g;
        const float vi = p.beta2 * v[p.v_off + i] + (1.0f - p.beta2) * g * g;
        m[p.m_off + i] = mi;
        v[p.v_off + i] = vi;
        const float denom = sqrt(vi) / p.bc2_sqrt + p.eps;
        param[p.p_off + i] = param[p.p_off + i] * p.decay - p.step_size * (mi / denom);
    }
}

/* ---- element-wise ---- */

__kernel void axpy(ulong n, float alpha, __global const float *x, ulong x_off, __global float *y, ulong y_off)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) y[y_off + i] += alpha * x[x_off + i];
}

__kernel void neg_exp(ulong n, __global const float *x, ulong x_off, __global float *y, ulong y_off)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) y[y_off + i] = -exp(x[x_off + i]);
}

__kernel void mul_acc(ulong n, __global const float *x, ulong x_off, __global const float *w, ulong w_off,
                      __global float *y, ulong y_off)
{
    for (ulong i = get_global_id(0); i < n; i += get_global_size(0)) y[y_off + i] += x[x_off + i] * w[w_off + i];
}
