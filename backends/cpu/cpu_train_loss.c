/* Token cross-entropy and the sum of squares (the global gradient norm), compiled with the
 * vectorizing flags of cpu_math.h: both stream large arrays once.
 *
 * Sums run over a fixed number of lanes in a fixed order (8 double accumulators, then the
 * tail, then the lanes folded in index order), in double: a row of a 50k vocabulary or a
 * gradient buffer of 1e8 floats loses nothing that float would show. */
#include <stdlib.h>

#include "api/alloc.h"
#include "cpu_internal.h"
#include "cpu_math.h"

#define LANES 8
#define SQ_CHUNK ((size_t)1 << 16) /* floats a sum_squares work item takes */

/* One row with label >= 0: softmax with the maximum subtracted (no overflow at any logit
 * size), the exponentials kept in place between the two passes. The loss is formed as
 * (max - logit[label]) + log(sum): the difference of two large logits is exact in double, so
 * logits of 1e4 lose no digits to their magnitude. */
MB_CPU_CLONES
static void ce_row(float *l, size_t V, size_t label, float scale, float *loss, int32_t *correct)
{
    size_t best = 0;
    for (size_t v = 1; v < V; v++)
        if (l[v] > l[best]) best = v; /* strict: the first index on ties */
    const float mx = l[best], ll = l[label];
    double acc[LANES] = {0};
    size_t v = 0;
    for (; v + LANES <= V; v += LANES)
        for (size_t j = 0; j < LANES; j++) {
            const float e = fexp(l[v + j] - mx);
            l[v + j] = e;
            acc[j] += (double)e;
        }
    double sum = 0;
    for (; v < V; v++) {
        const float e = fexp(l[v] - mx);
        l[v] = e;
        sum += (double)e;
    }
    for (size_t j = 0; j < LANES; j++) sum += acc[j];
    *loss = (float)(((double)mx - (double)ll) + log(sum));
    *correct = best == label;
    const float f = (float)((double)scale / sum);
    for (v = 0; v < V; v++) l[v] *= f;
    l[label] -= scale;
}

int cpu_cross_entropy(mb_device *dev, mb_ptr logits_p, size_t rows, size_t vocab, mb_ptr labels_p, float scale,
                      mb_ptr loss_p, mb_ptr correct_p)
{
    if (rows == 0) return 0;
    if (vocab == 0 || rows > SIZE_MAX / vocab)
        return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT, "cross_entropy: %zu rows of a vocabulary of %zu", rows, vocab);
    int rc;
    if ((rc = cpu_need(dev, "cross_entropy: logits", logits_p, rows * vocab)) ||
        (rc = cpu_need(dev, "cross_entropy: labels", labels_p, rows)) ||
        (rc = cpu_need(dev, "cross_entropy: loss", loss_p, rows)) ||
        (rc = cpu_need(dev, "cross_entropy: correct", correct_p, rows)))
        return rc;
    const int32_t *labels = cpu_at(labels_p);
    for (size_t r = 0; r < rows; r++)
        if (labels[r] >= 0 && (size_t)labels[r] >= vocab)
            return cpu_fail(dev, MAMBA_ERR_INVALID_ARGUMENT,
                            "cross_entropy: labels[%zu] = %d outside the vocabulary of %zu (< 0: ignored)", r,
                            (int)labels[r], vocab);
    float *logits = cpu_at(logits_p), *loss = cpu_at(loss_p);
    int32_t *correct = cpu_at(correct_p);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static) if (rows * vocab >= 32768)
    for (size_t r = 0; r < rows; r++) {
        float *l = logits + r * vocab;
        if (labels[r] < 0) {
            for (size_t v = 0; v < vocab; v++) l[v] = 0.0f;
            loss[r] = 0.0f;
            correct[r] = 0;
        } else {
            ce_row(l, vocab, (size_t)labels[r], scale, loss + r, correct + r);
        }
    }
    return 0;
}

MB_CPU_CLONES
static double squares(const float *x, size_t n)
{
    double acc[LANES] = {0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (size_t j = 0; j < LANES; j++) acc[j] += (double)x[i + j] * (double)x[i + j];
    double s = 0;
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    for (size_t j = 0; j < LANES; j++) s += acc[j];
    return s;
}

/* Chunks of SQ_CHUNK floats summed in parallel, their partial sums added in chunk order. */
int cpu_sum_squares(mb_device *dev, mb_ptr x_p, size_t n, mb_ptr out_p)
{
    int rc;
    if ((rc = cpu_need(dev, "sum_squares: out", out_p, 1)) || (n && (rc = cpu_need(dev, "sum_squares: x", x_p, n))))
        return rc;
    const float *x = cpu_at(x_p);
    float *out = cpu_at(out_p);
    const size_t nchunks = (n + SQ_CHUNK - 1) / SQ_CHUNK;
    if (nchunks <= 1) {
        *out = (float)squares(x, n);
        return 0;
    }
    double *part = mb_malloc(nchunks * sizeof *part);
    if (!part) return cpu_fail(dev, MAMBA_ERR_OUT_OF_MEMORY, "sum_squares: %zu partial sums", nchunks);
#pragma omp parallel for num_threads(dev->n_threads) schedule(static)
    for (size_t c = 0; c < nchunks; c++) {
        const size_t i0 = c * SQ_CHUNK;
        part[c] = squares(x + i0, n - i0 < SQ_CHUNK ? n - i0 : SQ_CHUNK);
    }
    double s = 0;
    for (size_t c = 0; c < nchunks; c++) s += part[c];
    free(part);
    *out = (float)s;
    return 0;
}
