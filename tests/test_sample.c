/* The sampler's filters (logit bias, repetition / presence / frequency penalties, temperature,
 * top-k, top-p, min-p): 100,000 draws of each against the distribution the test computes
 * itself in double precision, by a chi-square bound; the history the penalties see; the
 * parameters' validation; determinism in the seed. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define V 12
#define DRAWS 100000

/* Logits in no particular order, so that a sampler that mixed up sorted positions and token
 * ids would be caught. */
static const float base[V] = {0.3f, -1.5f, 2.0f, 0.0f, 1.2f, -0.4f, 1.0f, -3.0f, 0.5f, 1.5f, -0.8f, 0.8f};

/* 99.9% quantiles of the chi-square distribution, by degrees of freedom 1..11. */
static const double chi2_999[12] = {0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458,
                                    24.322, 26.124, 27.877, 29.588, 31.264};

static void normalize(double *p)
{
    double sum = 0;
    for (int i = 0; i < V; i++) sum += p[i];
    ck_assert_double_gt(sum, 0);
    for (int i = 0; i < V; i++) p[i] /= sum;
}

/* The distribution the parameters define, written from mamba.h's description. Asserts that
 * no token sits within 1e-4 of a top-p or min-p threshold, where the float rounding of the
 * library's sums could decide either way. */
static void reference(const mamba_sampler_params_t *p, const float *logits, const int32_t *hist, size_t n_hist,
                      double *out)
{
    double w[V];
    for (int i = 0; i < V; i++) w[i] = logits[i];
    for (size_t b = 0; b < p->n_bias; b++) w[p->bias_ids[b]] += p->bias_values[b];
    int count[V] = {0};
    size_t first = n_hist > (size_t)p->penalty_last_n ? n_hist - (size_t)p->penalty_last_n : 0;
    for (size_t t = first; hist && t < n_hist; t++) count[hist[t]]++;
    for (int i = 0; i < V; i++) {
        if (count[i] == 0) continue;
        if (w[i] > 0) w[i] /= p->repeat_penalty;
        else w[i] *= p->repeat_penalty;
        w[i] -= p->presence_penalty + p->frequency_penalty * count[i];
    }
    double top = -INFINITY;
    for (int i = 0; i < V; i++) top = fmax(top, w[i]);
    int rank[V];
    for (int i = 0; i < V; i++) {
        out[i] = w[i] == -INFINITY ? 0 : exp((w[i] - top) / p->temperature);
        rank[i] = 0;
        for (int j = 0; j < V; j++) rank[i] += w[j] > w[i] || (j < i && w[j] == w[i]);
    }
    if (p->top_k > 0)
        for (int i = 0; i < V; i++)
            if (rank[i] >= p->top_k) out[i] = 0;
    normalize(out);
    if (p->top_p > 0 && p->top_p < 1) {
        double before[V];
        for (int i = 0; i < V; i++) {
            before[i] = 0;
            for (int j = 0; j < V; j++)
                if (rank[j] < rank[i]) before[i] += out[j];
        }
        for (int i = 0; i < V; i++) {
            if (out[i] == 0) continue;
            ck_assert_msg(fabs(before[i] - p->top_p) > 1e-4, "test design: token %d at the top-p boundary", i);
            if (before[i] >= p->top_p) out[i] = 0;
        }
        normalize(out);
    }
    if (p->min_p > 0) {
        double best = 0;
        for (int i = 0; i < V; i++) best = fmax(best, out[i]);
        for (int i = 0; i < V; i++) {
            if (out[i] == 0) continue;
            ck_assert_msg(fabs(out[i] - p->min_p * best) > 1e-4 * best, "test design: token %d at the min-p boundary", i);
            if (out[i] < p->min_p * best) out[i] = 0;
        }
        normalize(out);
    }
}

static mamba_sampler_t *make(const mamba_sampler_params_t *p)
{
    mamba_sampler_t *s = NULL;
    ck_assert_msg(mamba_sampler_create(p, &s) == MAMBA_OK, "%s", mamba_last_error(NULL));
    return s;
}

/* DRAWS tokens, each from the history hist alone (reset, then accepted). */
static void draw(const mamba_sampler_params_t *p, const float *logits, const int32_t *hist, size_t n_hist, long *count)
{
    mamba_sampler_t *s = make(p);
    memset(count, 0, V * sizeof *count);
    for (int d = 0; d < DRAWS; d++) {
        ck_assert_int_eq(mamba_sampler_reset(s), MAMBA_OK);
        ck_assert_int_eq(mamba_sampler_accept(s, hist, n_hist), MAMBA_OK);
        int32_t tok = -1;
        ck_assert_msg(mamba_sample(s, logits, V, &tok) == MAMBA_OK, "%s", mamba_last_error(NULL));
        ck_assert(tok >= 0 && tok < V);
        count[tok]++;
    }
    mamba_sampler_free(s);
}

/* Pearson's statistic of count against want; tokens want gives 0 must never be drawn. */
static double chi2(const char *name, const long *count, const double *want, int *dof)
{
    double x = 0;
    int kept = 0;
    for (int i = 0; i < V; i++) {
        if (want[i] == 0) {
            ck_assert_msg(count[i] == 0, "%s: token %d was filtered out but drawn %ld times", name, i, count[i]);
            continue;
        }
        double e = want[i] * DRAWS;
        ck_assert_msg(e >= 5, "test design: %s: token %d expects only %.1f draws", name, i, e);
        x += (count[i] - e) * (count[i] - e) / e;
        kept++;
    }
    *dof = kept - 1;
    return x;
}

static void check_distribution(const char *name, const mamba_sampler_params_t *p, const float *logits,
                               const int32_t *hist, size_t n_hist, int want_kept)
{
    double want[V];
    reference(p, logits, hist, n_hist, want);
    long count[V];
    draw(p, logits, hist, n_hist, count);
    int dof;
    double x = chi2(name, count, want, &dof);
    printf("%-22s %2d tokens kept, chi2 %6.2f (99.9%% bound %.2f)\n", name, dof + 1, x, dof > 0 ? chi2_999[dof] : 0.0);
    ck_assert_msg(dof + 1 == want_kept, "%s: %d tokens kept, the test meant %d", name, dof + 1, want_kept);
    if (dof > 0) ck_assert_msg(x <= chi2_999[dof], "%s: chi2 %g over %d dof", name, x, dof);
}

static mamba_sampler_params_t params(float temperature)
{
    mamba_sampler_params_t p;
    mamba_sampler_params_init(&p);
    p.temperature = temperature;
    p.seed = 12345;
    return p;
}

START_TEST(defaults_are_greedy_and_off)
{
    mamba_sampler_params_t p;
    mamba_sampler_params_init(&p);
    ck_assert_float_eq(p.temperature, 0);
    ck_assert_int_eq(p.top_k, 0);
    ck_assert_float_eq(p.top_p, 1);
    ck_assert_float_eq(p.min_p, 0);
    ck_assert_float_eq(p.repeat_penalty, 1);
    ck_assert_float_eq(p.presence_penalty, 0);
    ck_assert_float_eq(p.frequency_penalty, 0);
    ck_assert_int_eq(p.penalty_last_n, 64);
    ck_assert_uint_eq(p.n_bias, 0);
    mamba_sampler_t *s = make(&p);
    int32_t tok;
    static const int32_t hist[3] = {2, 2, 2};
    ck_assert_int_eq(mamba_sampler_accept(s, hist, 3), MAMBA_OK);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_OK);
        ck_assert_int_eq(tok, 2); /* the argmax, the history ignored */
    }
    mamba_sampler_free(s);
}
END_TEST

START_TEST(temperature_top_k_top_p_min_p)
{
    mamba_sampler_params_t p = params(1.0f);
    check_distribution("temperature 1", &p, base, NULL, 0, 12);
    p = params(0.7f);
    check_distribution("temperature 0.7", &p, base, NULL, 0, 12);
    p = params(1.3f);
    p.top_k = 5;
    check_distribution("top-k 5", &p, base, NULL, 0, 5);
    p = params(1.0f);
    p.top_p = 0.8f;
    check_distribution("top-p 0.8", &p, base, NULL, 0, 6);
    p = params(1.0f);
    p.min_p = 0.35f;
    check_distribution("min-p 0.35", &p, base, NULL, 0, 4);
    /* ties: top-k keeps the lower index */
    const float tied[V] = {1, 0, 2, 2, 0, 0, 0, 0, 0, 2, 0, 0};
    p = params(1.0f);
    p.top_k = 2;
    check_distribution("top-k 2 on ties", &p, tied, NULL, 0, 2);
}
END_TEST

START_TEST(the_test_tells_distributions_apart)
{
    /* draws at temperature 1 do not pass for temperature 0.8, nor top-k 5 for top-k 6 */
    mamba_sampler_params_t p = params(1.0f), q = params(0.8f);
    double want[V];
    long count[V];
    int dof;
    reference(&q, base, NULL, 0, want);
    draw(&p, base, NULL, 0, count);
    ck_assert_double_gt(chi2("T 1 vs 0.8", count, want, &dof), 10 * chi2_999[dof]);
    p = params(1.0f);
    p.top_k = 5;
    q = p;
    q.top_k = 6;
    reference(&q, base, NULL, 0, want);
    draw(&p, base, NULL, 0, count);
    ck_assert_double_gt(chi2("top-k 5 vs 6", count, want, &dof), 10 * chi2_999[dof]);
}
END_TEST

/* tokens 2 (logit 2.0), 9 (1.5), 1 (-1.5), 3 (0.0); the first two fall out of a window of 6 */
static const int32_t history[10] = {7, 7, 2, 9, 9, 1, 2, 3, 9, 2};

START_TEST(penalties_over_the_window)
{
    mamba_sampler_params_t p = params(1.0f);
    p.repeat_penalty = 1.8f;
    p.penalty_last_n = 6;
    check_distribution("repetition 1.8", &p, base, history, 10, 12);
    p = params(1.0f);
    p.presence_penalty = 0.6f;
    p.frequency_penalty = 0.35f;
    p.penalty_last_n = 6;
    check_distribution("presence + frequency", &p, base, history, 10, 12);
    p.presence_penalty = -0.5f; /* negative: encourages repetition */
    p.frequency_penalty = 0;
    p.penalty_last_n = 64;
    check_distribution("presence -0.5", &p, base, history, 10, 12);
}
END_TEST

START_TEST(penalty_signs_and_history_in_pieces)
{
    /* a positive logit is divided, a negative one multiplied: both lose to the other token */
    mamba_sampler_params_t p = params(0);
    p.repeat_penalty = 1.5f;
    int32_t tok;
    const int32_t zero = 0;
    const float pos[2] = {2.0f, 1.5f}, neg[2] = {-1.0f, -1.2f};
    mamba_sampler_t *s = make(&p);
    ck_assert_int_eq(mamba_sample(s, pos, 2, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 0); /* empty history */
    ck_assert_int_eq(mamba_sampler_reset(s), MAMBA_OK);
    ck_assert_int_eq(mamba_sampler_accept(s, &zero, 1), MAMBA_OK);
    ck_assert_int_eq(mamba_sample(s, pos, 2, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 1); /* 2.0 / 1.5 < 1.5 */
    ck_assert_int_eq(mamba_sampler_reset(s), MAMBA_OK);
    ck_assert_int_eq(mamba_sampler_accept(s, &zero, 1), MAMBA_OK);
    ck_assert_int_eq(mamba_sample(s, neg, 2, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 1); /* -1.0 * 1.5 < -1.2 */
    mamba_sampler_free(s);

    /* the history fed in pieces that wrap the window's ring gives the one-call distribution */
    p = params(1.0f);
    p.frequency_penalty = 0.4f;
    p.repeat_penalty = 1.2f;
    p.penalty_last_n = 4;
    double want[V];
    reference(&p, base, history, 10, want); /* window 3, 9, 2... the last four: 2 3 9 2 */
    s = make(&p);
    long count[V] = {0};
    for (int d = 0; d < DRAWS; d++) {
        mamba_sampler_reset(s);
        ck_assert_int_eq(mamba_sampler_accept(s, history, 3), MAMBA_OK);
        ck_assert_int_eq(mamba_sampler_accept(s, history + 3, 0), MAMBA_OK);
        ck_assert_int_eq(mamba_sampler_accept(s, history + 3, 5), MAMBA_OK);
        ck_assert_int_eq(mamba_sampler_accept(s, history + 8, 2), MAMBA_OK);
        ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_OK);
        count[tok]++;
    }
    mamba_sampler_free(s);
    int dof;
    double x = chi2("pieces", count, want, &dof);
    ck_assert_msg(x <= chi2_999[dof], "history in pieces: chi2 %g", x);
}
END_TEST

START_TEST(sample_accepts_its_own_token)
{
    /* equal logits, a large presence penalty over the last 3 tokens: greedy cycles 0 1 2 3 */
    mamba_sampler_params_t p = params(0);
    p.presence_penalty = 10;
    p.penalty_last_n = 3;
    const float flat[5] = {0, 0, 0, 0, 0};
    mamba_sampler_t *s = make(&p);
    int32_t tok;
    for (int i = 0; i < 20; i++) {
        ck_assert_int_eq(mamba_sample(s, flat, 5, &tok), MAMBA_OK);
        ck_assert_int_eq(tok, i % 4);
    }
    ck_assert_int_eq(mamba_sampler_reset(s), MAMBA_OK);
    ck_assert_int_eq(mamba_sample(s, flat, 5, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 0);
    /* a prompt longer than the window: only its end counts */
    const int32_t prompt[6] = {4, 4, 4, 0, 1, 2};
    ck_assert_int_eq(mamba_sampler_reset(s), MAMBA_OK);
    ck_assert_int_eq(mamba_sampler_accept(s, prompt, 6), MAMBA_OK);
    ck_assert_int_eq(mamba_sample(s, flat, 5, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 3);
    mamba_sampler_free(s);
}
END_TEST

START_TEST(logit_bias_and_bans)
{
    const int32_t ids[3] = {2, 7, 10};
    const float values[3] = {-INFINITY, 3.0f, 0.5f};
    mamba_sampler_params_t p = params(1.0f);
    p.bias_ids = ids;
    p.bias_values = values;
    p.n_bias = 3;
    check_distribution("bias, token 2 banned", &p, base, NULL, 0, 11);
    /* greedy sees the bias too: token 7 (-3 + 3 = 0) does not win, token 9 (1.5) does */
    mamba_sampler_params_t g = p;
    g.temperature = 0;
    mamba_sampler_t *s = make(&g);
    int32_t tok;
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 9);
    mamba_sampler_free(s);
    /* the arrays are copied at create */
    int32_t tmp_ids[1] = {2};
    float tmp_values[1] = {-INFINITY};
    g.bias_ids = tmp_ids;
    g.bias_values = tmp_values;
    g.n_bias = 1;
    s = make(&g);
    tmp_ids[0] = 4;
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 9);
    mamba_sampler_free(s);
    /* every token banned */
    int32_t all[V];
    float ban[V];
    for (int i = 0; i < V; i++) all[i] = i, ban[i] = -INFINITY;
    p.bias_ids = all;
    p.bias_values = ban;
    p.n_bias = V;
    s = make(&p);
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "banned"));
    mamba_sampler_free(s);
    /* an id past the vocabulary is found at sample time, by its index */
    const int32_t far[2] = {3, 12};
    const float one[2] = {1, 1};
    p.bias_ids = far;
    p.bias_values = one;
    p.n_bias = 2;
    s = make(&p);
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "logit bias 1: token id 12 is out of range [0, 12)"));
    float wide[13] = {0};
    ck_assert_int_eq(mamba_sample(s, wide, 13, &tok), MAMBA_OK);
    mamba_sampler_free(s);
}
END_TEST

START_TEST(everything_together)
{
    const int32_t ids[2] = {2, 7};
    const float values[2] = {-INFINITY, 2.5f};
    mamba_sampler_params_t p = params(0.8f);
    p.bias_ids = ids;
    p.bias_values = values;
    p.n_bias = 2;
    p.repeat_penalty = 1.3f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.2f;
    p.penalty_last_n = 5;
    p.top_k = 8;
    p.top_p = 0.9f;
    p.min_p = 0.1f;
    check_distribution("all filters", &p, base, history, 10, 6);
}
END_TEST

START_TEST(deterministic_in_the_seed)
{
    mamba_sampler_params_t p = params(0.9f);
    p.top_k = 9;
    p.top_p = 0.95f;
    p.min_p = 0.02f;
    p.repeat_penalty = 1.1f;
    p.frequency_penalty = 0.1f;
    p.penalty_last_n = 8;
    mamba_sampler_t *a = make(&p), *b = make(&p);
    p.seed++;
    mamba_sampler_t *c = make(&p);
    ck_assert_int_eq(mamba_sampler_accept(a, history, 10), MAMBA_OK);
    ck_assert_int_eq(mamba_sampler_accept(b, history, 10), MAMBA_OK);
    ck_assert_int_eq(mamba_sampler_accept(c, history, 10), MAMBA_OK);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        int32_t ta, tb, tc;
        ck_assert_int_eq(mamba_sample(a, base, V, &ta), MAMBA_OK);
        ck_assert_int_eq(mamba_sample(b, base, V, &tb), MAMBA_OK);
        ck_assert_int_eq(mamba_sample(c, base, V, &tc), MAMBA_OK);
        ck_assert_int_eq(ta, tb);
        differ += ta != tc;
    }
    ck_assert_int_gt(differ, 100);
    mamba_sampler_free(a);
    mamba_sampler_free(b);
    mamba_sampler_free(c);
}
END_TEST

static void rejects(const mamba_sampler_params_t *p, const char *what)
{
    mamba_sampler_t *s = (mamba_sampler_t *)1;
    ck_assert_int_eq(mamba_sampler_create(p, &s), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(mamba_last_error(NULL), what) != NULL, "'%s' does not name %s", mamba_last_error(NULL), what);
}

START_TEST(bad_parameters_and_inputs)
{
    mamba_sampler_params_t p = params(-1);
    rejects(&p, "temperature -1");
    p = params(INFINITY);
    rejects(&p, "temperature");
    p = params(1);
    p.top_p = 1.5f;
    rejects(&p, "top_p 1.5");
    p.top_p = -0.1f;
    rejects(&p, "top_p");
    p = params(1);
    p.min_p = 1.01f;
    rejects(&p, "min_p");
    p.min_p = -0.5f;
    rejects(&p, "min_p -0.5");
    p.min_p = NAN;
    rejects(&p, "min_p");
    p = params(1);
    p.repeat_penalty = 0;
    rejects(&p, "repeat_penalty 0");
    p.repeat_penalty = -1.2f;
    rejects(&p, "repeat_penalty");
    p.repeat_penalty = NAN;
    rejects(&p, "repeat_penalty");
    p = params(1);
    p.presence_penalty = INFINITY;
    rejects(&p, "presence_penalty");
    p = params(1);
    p.frequency_penalty = NAN;
    rejects(&p, "frequency_penalty");
    p = params(1);
    p.penalty_last_n = -1;
    rejects(&p, "penalty_last_n -1");
    p = params(1);
    p.top_k = -3;
    rejects(&p, "top_k -3");
    const int32_t ids[2] = {1, -4};
    const float values[2] = {1, 1}, nan_values[2] = {1, NAN}, inf_values[2] = {INFINITY, 0};
    p = params(1);
    p.bias_ids = ids;
    p.bias_values = values;
    p.n_bias = 2;
    rejects(&p, "logit bias 1: token id -4");
    p.n_bias = 1;
    p.bias_values = nan_values + 1;
    rejects(&p, "logit bias 0 (token 1)");
    p.bias_values = inf_values;
    rejects(&p, "-INFINITY");
    p.bias_values = NULL;
    rejects(&p, "NULL");
    ck_assert_int_eq(mamba_sampler_create(NULL, NULL), MAMBA_ERR_INVALID_ARGUMENT);

    p = params(1);
    p.repeat_penalty = 1.1f;
    mamba_sampler_t *s = make(&p);
    const int32_t bad[3] = {1, -2, 3}, big[1] = {100};
    ck_assert_int_eq(mamba_sampler_accept(s, bad, 3), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "ids[1] = -2"));
    ck_assert_int_eq(mamba_sampler_accept(s, NULL, 2), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_sampler_accept(s, NULL, 0), MAMBA_OK);
    ck_assert_int_eq(mamba_sampler_accept(NULL, big, 1), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_sampler_reset(NULL), MAMBA_ERR_INVALID_ARGUMENT);
    int32_t tok;
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_OK); /* the failed accept kept nothing */
    ck_assert_int_eq(mamba_sampler_accept(s, big, 1), MAMBA_OK);
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "history token id 100"));
    mamba_sampler_reset(s);
    const float with_nan[3] = {0, NAN, 1}, with_inf[3] = {0, INFINITY, 1};
    ck_assert_int_eq(mamba_sample(s, with_nan, 3, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "logit 1 is NaN"));
    ck_assert_int_eq(mamba_sample(s, with_inf, 3, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mamba_sample(s, base, 0, &tok), MAMBA_ERR_INVALID_ARGUMENT);
    const float masked[3] = {-INFINITY, 0.5f, -INFINITY};
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(mamba_sample(s, masked, 3, &tok), MAMBA_OK);
        ck_assert_int_eq(tok, 1);
    }
    mamba_sampler_free(s);
}
END_TEST

/* A large vocabulary, as the GPT-NeoX one: the sampler first gathers the candidates of weight
 * >= 1e-4 of the top. Top-p's nucleus is still over the mass of every token: weights 1, 0.06,
 * 0.05 and 1,000 tokens of 5e-5 (total 1.16) with top_p 0.9 keep {1, 0.06} (1.06 >= 1.044),
 * where the candidates' mass alone (1.11) would keep {1}. A temperature whose inverse is not a
 * float is greedy; a penalty past FLT_MAX leaves a banned token banned. */
START_TEST(large_vocabulary_edges)
{
    enum { N = 1003 };
    static float logits[N];
    logits[0] = 0.0f;
    logits[1] = logf(0.06f);
    logits[2] = logf(0.05f);
    for (int i = 3; i < N; i++) logits[i] = logf(5e-5f);
    mamba_sampler_params_t p;
    mamba_sampler_params_init(&p);
    p.temperature = 1;
    p.top_p = 0.9f;
    p.seed = 11;
    mamba_sampler_t *s = make(&p);
    int counts[3] = {0, 0, 0};
    const int draws = 20000;
    for (int d = 0; d < draws; d++) {
        int32_t tok;
        ck_assert_int_eq(mamba_sample(s, logits, N, &tok), MAMBA_OK);
        ck_assert_msg(tok == 0 || tok == 1, "drew token %d outside the nucleus {0, 1}", (int)tok);
        counts[tok]++;
    }
    /* token 1 with probability 0.06 / 1.06: 1132 expected, sd 33 */
    ck_assert_msg(abs(counts[1] - 1132) < 200, "token 1 drawn %d times of %d, expected about 1132", counts[1], draws);
    mamba_sampler_free(s);

    mamba_sampler_params_init(&p);
    p.temperature = 1e-39f;
    s = make(&p);
    int32_t tok;
    ck_assert_int_eq(mamba_sample(s, base, V, &tok), MAMBA_OK);
    ck_assert_int_eq(tok, 2); /* base's largest */
    mamba_sampler_free(s);

    mamba_sampler_params_init(&p);
    p.temperature = 1;
    p.frequency_penalty = -FLT_MAX;
    s = make(&p);
    const int32_t hist[2] = {0, 0};
    ck_assert_int_eq(mamba_sampler_accept(s, hist, 2), MAMBA_OK);
    const float banned_first[3] = {-INFINITY, 0.5f, 0.0f};
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(mamba_sample(s, banned_first, 3, &tok), MAMBA_OK);
        ck_assert_int_ne(tok, 0);
    }
    mamba_sampler_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sample");
    TCase *tc = tcase_create("sample");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, defaults_are_greedy_and_off);
    tcase_add_test(tc, temperature_top_k_top_p_min_p);
    tcase_add_test(tc, the_test_tells_distributions_apart);
    tcase_add_test(tc, penalties_over_the_window);
    tcase_add_test(tc, penalty_signs_and_history_in_pieces);
    tcase_add_test(tc, sample_accepts_its_own_token);
    tcase_add_test(tc, logit_bias_and_bans);
    tcase_add_test(tc, everything_together);
    tcase_add_test(tc, deterministic_in_the_seed);
    tcase_add_test(tc, bad_parameters_and_inputs);
    tcase_add_test(tc, large_vocabulary_edges);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
