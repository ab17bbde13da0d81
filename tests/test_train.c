/* The trainer (mamba_trainer_*): gradients against the float64 autograd fixture of a Hugging
 * Face model (on every backend that can train), central differences through the inference
 * forward for the paths the fixture lacks (biases, an untied head), AdamW against a double
 * computation from the gradients, checkpoints that mamba_model_load reads, exact resume,
 * gradient accumulation, determinism, the initialization, the activation memory, bad input. */
#define _POSIX_C_SOURCE 200809L /* fork, pipe */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* Bounds of the issue: the loss within 1e-6 relative, each gradient within 1e-4 x max |ref|. */
#define LOSS_BOUND 1e-6
#define GRAD_BOUND 1e-4

/* The backends the fixture runs on: cpu, then the GPU backends that can train here. */
static const char *backends[3] = {"cpu"};
static int n_backends = 1;
/* A backend MAMBA_TEST_REQUIRE names that cannot train here, and why. */
static char required_missing[512];

/* n, or fewer where OMP_NUM_THREADS says so (ThreadSanitizer's run sets 1) */
static int threads_at_most(int n)
{
    const char *env = getenv("OMP_NUM_THREADS");
    const long cap = env ? strtol(env, NULL, 10) : 0;
    return cap > 0 && cap < n ? (int)cap : n;
}

/* A context on backend; on the CPU one thread (the shapes are tiny: OpenMP's barriers would
 * cost more than the work) unless threads says more. */
static mamba_context_t *ctx_threads(const char *backend, int threads)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = backend;
    o.n_threads = threads_at_most(threads);
    o.log_level = MAMBA_LOG_ERROR;
    mamba_context_t *ctx = NULL;
    ck_assert_msg(mamba_context_create(&o, &ctx) == MAMBA_OK, "%s: %s", backend, mamba_last_error(NULL));
    return ctx;
}

static mamba_context_t *ctx_on(const char *backend) { return ctx_threads(backend, 1); }

/* A tiny Mamba: d_model 16, 2 layers, vocabulary 40, N 4, d_inner 32, dt_rank 2. */
static mamba_config_t tiny_cfg(int n_layer, int use_bias, int tie)
{
    mamba_config_t c;
    mamba_config_init(&c);
    c.d_model = 16;
    c.n_layer = n_layer;
    c.vocab_size = 40;
    c.d_state = 4;
    c.dt_rank = 2;
    c.use_bias = use_bias;
    c.tie_embeddings = tie;
    return c;
}

static mamba_trainer_t *tiny_trainer(mamba_context_t *ctx, const mamba_config_t *c, uint64_t seed,
                                     const mamba_train_options_t *o)
{
    mamba_trainer_t *tr = NULL;
    ck_assert_msg(mamba_trainer_create(ctx, c, seed, o, &tr) == MAMBA_OK, "%s", mamba_last_error(ctx));
    return tr;
}

/* ids (B, T) from seed; labels the next token, the last position of each sequence ignored. */
static void make_batch(uint64_t seed, size_t B, size_t T, int V, int32_t *ids, int32_t *labels)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 12345;
    for (size_t i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) labels[b * T + t] = t + 1 < T ? ids[b * T + t + 1] : -100;
}

/* Every parameter's gradient (grad) or value, concatenated in the table's order. */
static float *all_values(mamba_trainer_t *tr, int grad, size_t *total)
{
    const size_t n = mamba_trainer_param_count(tr);
    size_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        size_t numel;
        ck_assert_int_eq(mamba_trainer_param_info(tr, i, NULL, &numel, NULL, NULL), MAMBA_OK);
        sum += numel;
    }
    float *v = malloc(sum * sizeof *v + 1);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t numel;
        mamba_trainer_param_info(tr, i, &name, &numel, NULL, NULL);
        const mamba_status_t st = grad ? mamba_trainer_read_grad(tr, name, v + off, numel)
                                       : mamba_trainer_read_param(tr, name, v + off, numel);
        ck_assert_msg(st == MAMBA_OK, "%s", name);
        off += numel;
    }
    if (total) *total = sum;
    return v;
}

/* Mean cross-entropy in double of logits (rows, V) against labels (< 0 ignored). */
static double host_loss(const float *logits, const int32_t *labels, size_t rows, size_t V)
{
    double sum = 0;
    size_t n = 0;
    for (size_t r = 0; r < rows; r++) {
        if (labels[r] < 0) continue;
        const float *x = logits + r * V;
        double mx = x[0], se = 0;
        for (size_t k = 1; k < V; k++) mx = x[k] > mx ? x[k] : mx;
        for (size_t k = 0; k < V; k++) se += exp(x[k] - mx);
        sum += mx + log(fmax(se, 1.0)) - x[labels[r]]; /* se >= 1: the max's term is 1 */
        n++;
    }
    return n ? sum / (double)n : 0;
}

static char *path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

/* ---- (a) the autograd fixture ---- */

START_TEST(fixture_gradients)
{
    const char *backend = backends[_i / 2];
    const int via_load = _i % 2;
    mamba_context_t *ctx = ctx_threads(backend, 2);
    mamba_trainer_t *tr = NULL;
    const char *dir = data_path(1, "models/grad_tiny");
    if (via_load) {
        ck_assert_msg(mamba_trainer_load(ctx, dir, NULL, &tr) == MAMBA_OK, "%s", mamba_last_error(ctx));
    } else {
        mamba_model_t *m = NULL;
        ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
        ck_assert_msg(mamba_trainer_create_from_model(m, NULL, &tr) == MAMBA_OK, "%s", mamba_last_error(ctx));
        mamba_model_free(m); /* the trainer holds its own copy */
    }
    mamba_tensor_file_t *f = NULL;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "grads/model_tiny.safetensors"), &f), MAMBA_OK);
    size_t n_ids;
    int32_t *ids = file_ids(f, "input_ids", &n_ids);
    int32_t *hf = file_ids(f, "labels", NULL);
    mamba_tensor_t lt;
    ck_assert_int_eq(mamba_tensor_file_find(f, "loss", &lt), MAMBA_OK);
    ck_assert_int_eq(lt.dtype, MAMBA_F64);
    double ref_loss;
    memcpy(&ref_loss, lt.data, sizeof ref_loss);
    const size_t B = 2, T = n_ids / 2;
    /* HF's labels are unshifted: position t predicts labels[t + 1] */
    int32_t *labels = malloc(n_ids * sizeof *labels);
    uint64_t counted = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            labels[b * T + t] = t + 1 < T ? hf[b * T + t + 1] : -100;
            counted += labels[b * T + t] >= 0;
        }
    mamba_train_stats_t stats;
    ck_assert_msg(mamba_trainer_accumulate(tr, ids, labels, B, T, &stats) == MAMBA_OK, "%s", mamba_last_error(ctx));
    const double lerr = fabs(stats.loss - ref_loss) / ref_loss;
    printf("%s (%s) loss %.9g, reference %.9g: %.2g relative\n", backend, via_load ? "trainer_load" : "from model",
           stats.loss, ref_loss, lerr);
    ck_assert_msg(lerr <= LOSS_BOUND, "loss %.9g vs %.9g", stats.loss, ref_loss);
    ck_assert_uint_eq(stats.tokens, counted);
    const size_t n = mamba_trainer_param_count(tr);
    ck_assert_uint_eq(n, mamba_tensor_file_count(f) - 3); /* input_ids, labels, loss */
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t numel;
        mamba_trainer_param_info(tr, i, &name, &numel, NULL, NULL);
        char key[256];
        snprintf(key, sizeof key, "grad.%s", name);
        size_t rn;
        float *ref = file_f32(f, key, &rn);
        ck_assert_uint_eq(rn, numel);
        float *got = malloc(numel * sizeof *got);
        ck_assert_int_eq(mamba_trainer_read_grad(tr, name, got, numel), MAMBA_OK);
        const double e = max_abs_diff(got, ref, numel), m = max_abs(ref, numel);
        printf("  %-44s max err %.3g of max %.3g (%.2g relative)\n", name, e, m, e / m);
        ck_assert_msg(e <= GRAD_BOUND * m, "%s: err %g, bound %g", name, e, GRAD_BOUND * m);
        if (e / m > worst) worst = e / m;
        free(got);
        free(ref);
    }
    printf("%s: worst gradient error %.2g of its tensor's max\n", backend, worst);
    free(ids);
    free(hf);
    free(labels);
    mamba_tensor_file_close(f);
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
}
END_TEST

START_TEST(required_backend_missing) { ck_abort_msg("%s", required_missing); }
END_TEST

/* ---- central differences through the inference forward: biases and an untied head ---- */

/* The saved weights of dir, with element k of tensor name moved by delta, written to out/. */
static void perturbed_copy(const char *dir, const char *out, const char *name, size_t k, float delta)
{
    char p[4096], q[4096];
    mamba_tensor_file_t *f = NULL;
    ck_assert_int_eq(mamba_tensor_file_open(path_join(p, sizeof p, dir, "model.safetensors"), &f), MAMBA_OK);
    const size_t n = mamba_tensor_file_count(f);
    mamba_tensor_t *t = calloc(n, sizeof *t);
    void **copies = calloc(n, sizeof *copies);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(mamba_tensor_file_get(f, i, &t[i]), MAMBA_OK);
        copies[i] = malloc(t[i].nbytes + 1);
        memcpy(copies[i], t[i].data, t[i].nbytes);
        if (strcmp(t[i].name, name) == 0) {
            ((float *)copies[i])[k] += delta;
            found = 1;
        }
        t[i].data = copies[i];
    }
    ck_assert_msg(found, "%s not saved", name);
    ck_assert_int_eq(mamba_tensor_file_write(path_join(q, sizeof q, out, "model.safetensors"), t, n, NULL, 0), MAMBA_OK);
    copy_file(path_join(p, sizeof p, dir, "config.json"), path_join(q, sizeof q, out, "config.json"));
    for (size_t i = 0; i < n; i++) free(copies[i]);
    free(copies);
    free(t);
    mamba_tensor_file_close(f);
}

static double loss_of_dir(mamba_context_t *ctx, const char *dir, const int32_t *ids, const int32_t *labels, size_t B,
                          size_t T, size_t V)
{
    mamba_model_t *m = NULL;
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    float *logits = malloc((size_t)B * T * V * sizeof *logits);
    ck_assert_int_eq(mamba_forward(m, ids, B, T, MAMBA_LOGITS_ALL, logits), MAMBA_OK);
    const double l = host_loss(logits, labels, B * T, V);
    free(logits);
    mamba_model_free(m);
    return l;
}

START_TEST(finite_differences_bias_untied)
{
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c = tiny_cfg(2, 1, 0);
    mamba_trainer_t *tr = tiny_trainer(ctx, &c, 11, NULL);
    /* one step first, so that the biases (zero at init) and the rest are generic */
    enum { B = 2, T = 12 };
    int32_t ids[B * T], labels[B * T];
    make_batch(1, B, T, c.vocab_size, ids, labels);
    ck_assert_int_eq(mamba_trainer_step(tr, ids, labels, B, T, NULL), MAMBA_OK);
    make_batch(2, B, T, c.vocab_size, ids, labels);
    mamba_train_stats_t st;
    ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, B, T, &st), MAMBA_OK);
    char *dir = tmpdir_new(), *tmp = tmpdir_new();
    ck_assert_int_eq(mamba_trainer_save(tr, dir), MAMBA_OK);
    const double base = loss_of_dir(ctx, dir, ids, labels, B, T, (size_t)c.vocab_size);
    ck_assert_double_le(fabs(base - st.loss), 1e-5 * base);
    const char *names[] = {"backbone.layers.0.mixer.in_proj.bias", "backbone.layers.1.mixer.in_proj.bias",
                           "backbone.layers.0.mixer.out_proj.bias", "backbone.layers.1.mixer.out_proj.bias",
                           "lm_head.weight"};
    const float h = 2e-3f; /* small enough for out_proj.bias's curvature, large against float noise */
    for (size_t j = 0; j < sizeof names / sizeof names[0]; j++) {
        size_t numel = 0;
        for (size_t i = 0; i < mamba_trainer_param_count(tr); i++) {
            const char *nm;
            size_t ne;
            mamba_trainer_param_info(tr, i, &nm, &ne, NULL, NULL);
            if (strcmp(nm, names[j]) == 0) numel = ne;
        }
        ck_assert_msg(numel > 0, "no parameter %s", names[j]);
        float *g = malloc(numel * sizeof *g);
        ck_assert_int_eq(mamba_trainer_read_grad(tr, names[j], g, numel), MAMBA_OK);
        const double gmax = max_abs(g, numel);
        ck_assert_double_gt(gmax, 1e-4);
        /* the two elements of largest gradient */
        size_t best[2] = {0, 0};
        for (size_t k = 0; k < numel; k++)
            if (fabsf(g[k]) > fabsf(g[best[0]])) best[0] = k;
        best[1] = best[0] == 0 ? 1 : 0;
        for (size_t k = 0; k < numel; k++)
            if (k != best[0] && fabsf(g[k]) > fabsf(g[best[1]])) best[1] = k;
        for (int e = 0; e < 2; e++) {
            perturbed_copy(dir, tmp, names[j], best[e], h);
            const double lp = loss_of_dir(ctx, tmp, ids, labels, B, T, (size_t)c.vocab_size);
            perturbed_copy(dir, tmp, names[j], best[e], -h);
            const double lm = loss_of_dir(ctx, tmp, ids, labels, B, T, (size_t)c.vocab_size);
            const double fd = (lp - lm) / (2 * h);
            printf("central difference %s[%zu]: %.6g, gradient %.6g\n", names[j], best[e], fd, (double)g[best[e]]);
            ck_assert_msg(fabs(fd - g[best[e]]) <= 5e-3 * gmax + 1e-4, "%s[%zu]: fd %g vs grad %g", names[j], best[e], fd,
                          (double)g[best[e]]);
        }
        free(g);
    }
    tmpdir_remove(dir);
    tmpdir_remove(tmp);
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
}
END_TEST

/* Every parameter of dir's model.safetensors moved by h d, d uniform in [-1, 1) from seed in
 * the file's order, written to out/; *dot receives sum g d over the trainer's gradients. */
static void perturbed_all(const char *dir, const char *out, mamba_trainer_t *tr, uint64_t seed, float h, double *dot)
{
    char p[4096], q[4096];
    mamba_tensor_file_t *f = NULL;
    ck_assert_int_eq(mamba_tensor_file_open(path_join(p, sizeof p, dir, "model.safetensors"), &f), MAMBA_OK);
    const size_t n = mamba_tensor_file_count(f);
    mamba_tensor_t *t = calloc(n, sizeof *t);
    float **copies = calloc(n, sizeof *copies);
    uint64_t s = seed;
    *dot = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(mamba_tensor_file_get(f, i, &t[i]), MAMBA_OK);
        ck_assert_int_eq(t[i].dtype, MAMBA_F32);
        const size_t numel = t[i].nbytes / 4;
        copies[i] = malloc(t[i].nbytes + 4);
        float *g = malloc(t[i].nbytes + 4);
        memcpy(copies[i], t[i].data, t[i].nbytes);
        ck_assert_int_eq(mamba_trainer_read_grad(tr, t[i].name, g, numel), MAMBA_OK);
        for (size_t k = 0; k < numel; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            const double d = (double)(s >> 11) * 0x1p-53 * 2 - 1;
            copies[i][k] += h * (float)d;
            *dot += g[k] * d;
        }
        free(g);
        t[i].data = copies[i];
    }
    ck_assert_int_eq(mamba_tensor_file_write(path_join(q, sizeof q, out, "model.safetensors"), t, n, NULL, 0), MAMBA_OK);
    copy_file(path_join(p, sizeof p, dir, "config.json"), path_join(q, sizeof q, out, "config.json"));
    for (size_t i = 0; i < n; i++) free(copies[i]);
    free(copies);
    free(t);
    mamba_tensor_file_close(f);
}

/* Shapes the fixture does not have: no conv bias, narrow convs, one-token sequences, expand 1,
 * N 16, biases with an untied head. The trainer's loss against the inference forward's, and
 * the gradient along a random direction of all parameters against central differences. */
static const struct shape_case {
    int n_layer, d_conv, conv_bias, expand, d_state, use_bias, tie;
    size_t B, T;
} shapes[] = {
    {2, 2, 0, 2, 4, 0, 1, 2, 9},
    {1, 1, 1, 2, 4, 0, 1, 2, 7},
    {2, 4, 1, 2, 4, 0, 1, 3, 1},
    {3, 3, 1, 1, 16, 1, 0, 1, 13},
};

START_TEST(directional_derivatives)
{
    const struct shape_case *k = &shapes[_i];
    mamba_context_t *ctx = ctx_on("cpu");
    mamba_config_t c = tiny_cfg(k->n_layer, k->use_bias, k->tie);
    c.d_conv = k->d_conv;
    c.use_conv_bias = k->conv_bias;
    c.expand = k->expand;
    c.d_state = k->d_state;
    mamba_trainer_t *tr = tiny_trainer(ctx, &c, 30 + (uint64_t)_i, NULL);
    const size_t B = k->B, T = k->T, V = (size_t)c.vocab_size;
    int32_t *ids = malloc(B * T * sizeof *ids), *labels = malloc(B * T * sizeof *labels);
    make_batch(60 + (uint64_t)_i, B, T, c.vocab_size, ids, labels);
    if (T == 1) /* one-token sequences: a label of their own */
        for (size_t b = 0; b < B; b++) labels[b] = (ids[b] + 1) % c.vocab_size;
    ck_assert_int_eq(mamba_trainer_step(tr, ids, labels, B, T, NULL), MAMBA_OK);
    mamba_train_stats_t st;
    ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, B, T, &st), MAMBA_OK);
    char *dir = tmpdir_new(), *tmp = tmpdir_new();
    ck_assert_int_eq(mamba_trainer_save(tr, dir), MAMBA_OK);
    const double base = loss_of_dir(ctx, dir, ids, labels, B, T, V);
    ck_assert_msg(fabs(base - st.loss) <= 1e-5 * base, "loss %.9g, forward's %.9g", st.loss, base);
    const float h = 3e-4f; /* the truncation error, h^2, below float noise over 2h */
    double dot, dot2;
    perturbed_all(dir, tmp, tr, 5, h, &dot);
    const double lp = loss_of_dir(ctx, tmp, ids, labels, B, T, V);
    perturbed_all(dir, tmp, tr, 5, -h, &dot2);
    const double lm = loss_of_dir(ctx, tmp, ids, labels, B, T, V);
    const double fd = (lp - lm) / (2 * h);
    printf("shape %d: loss %.7g; along a random direction %.6g, central difference %.6g\n", _i, st.loss, dot, fd);
    ck_assert_double_eq(dot, dot2); /* the same direction both ways */
    ck_assert_msg(fabs(fd - dot) <= 3e-3 * fabs(dot) + 1e-3, "directional derivative %g vs central difference %g", dot,
                  fd);
    free(ids);
    free(labels);
    tmpdir_remove(dir);
    tmpdir_remove(tmp);
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
}
END_TEST

/* ---- (b) AdamW against a double computation from the gradients ---- */

static int decays(const char *name, int ndim) { return ndim >= 2 && !strstr(name, "A_log"); }

START_TEST(adamw_matches_hand_computation)
{
    const int clip = _i;
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c = tiny_cfg(2, 0, 1);
    mamba_train_options_t o;
    mamba_train_options_init(&o);
    o.lr = 1e-2f;
    o.weight_decay = 0.1f;
    o.max_grad_norm = clip ? 0.05f : 0.0f;
    mamba_trainer_t *tr = tiny_trainer(ctx, &c, 7, &o);
    const size_t np = mamba_trainer_param_count(tr);
    size_t total;
    float *p0 = all_values(tr, 0, &total);
    double *M = calloc(total, sizeof *M), *Vm = calloc(total, sizeof *Vm);
    enum { B = 2, T = 10 };
    int32_t ids[B * T], labels[B * T];
    double worst = 0;
    for (long s = 1; s <= 3; s++) {
        mamba_train_stats_t a, b, st;
        make_batch(100 + 2 * (uint64_t)s, B, T, c.vocab_size, ids, labels);
        ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, B, T, &a), MAMBA_OK);
        make_batch(101 + 2 * (uint64_t)s, B, T, c.vocab_size, ids, labels);
        ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, B, T, &b), MAMBA_OK);
        float *G = all_values(tr, 1, NULL), *P = all_values(tr, 0, NULL);
        ck_assert_int_eq(mamba_trainer_apply(tr, &st), MAMBA_OK);
        float *got = all_values(tr, 0, NULL);
        /* two micro-batches: the mean of their gradients */
        const double scale = 0.5;
        double sq = 0;
        for (size_t k = 0; k < total; k++) sq += (double)G[k] * G[k];
        const double norm = sqrt(sq) * scale;
        ck_assert_double_le(fabs(st.grad_norm - norm), 1e-5 * norm);
        ck_assert_double_eq(st.lr, (double)o.lr);
        ck_assert_int_eq(st.step, s);
        ck_assert_double_le(fabs(st.loss - (a.loss + b.loss) / 2), 1e-12);
        ck_assert_uint_eq(st.tokens, a.tokens + b.tokens);
        if (clip) ck_assert_msg(norm > o.max_grad_norm, "norm %g does not exercise clipping", norm);
        const double cf = o.max_grad_norm > 0 ? fmin(1.0, o.max_grad_norm / (norm + 1e-6)) : 1.0;
        const double b1 = o.beta1, b2 = o.beta2, lr = st.lr;
        const double bc1 = 1 - pow(b1, (double)s), bc2 = 1 - pow(b2, (double)s);
        size_t off = 0;
        for (size_t i = 0; i < np; i++) {
            const char *name;
            size_t numel;
            int ndim;
            mamba_trainer_param_info(tr, i, &name, &numel, &ndim, NULL);
            const double wd = decays(name, ndim) ? o.weight_decay : 0.0;
            for (size_t k = off; k < off + numel; k++) {
                const double g = G[k] * scale * cf;
                M[k] = b1 * M[k] + (1 - b1) * g;
                Vm[k] = b2 * Vm[k] + (1 - b2) * g * g;
                const double want = P[k] * (1 - lr * wd) - lr / bc1 * M[k] / (sqrt(Vm[k]) / sqrt(bc2) + o.eps);
                const double e = fabs(got[k] - want);
                ck_assert_msg(e <= 1e-6 * fabs(want) + 1e-4 * lr, "step %ld %s[%zu]: %.9g, expected %.9g", s, name,
                              k - off, (double)got[k], want);
                if (e / lr > worst) worst = e / lr;
            }
            off += numel;
        }
        /* the gradients are cleared */
        float *G2 = all_values(tr, 1, NULL);
        ck_assert_double_eq(max_abs(G2, total), 0);
        free(G2);
        free(G);
        free(P);
        free(got);
    }
    float *p3 = all_values(tr, 0, NULL);
    ck_assert_double_gt(max_abs_diff(p3, p0, total), 2 * o.lr); /* the steps moved the parameters */
    printf("AdamW (clipping %s): max deviation from the double computation %.3g lr\n", clip ? "on" : "off", worst);
    free(p0);
    free(p3);
    free(M);
    free(Vm);
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
}
END_TEST

START_TEST(lr_schedule)
{
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c = tiny_cfg(1, 0, 1);
    mamba_train_options_t o;
    mamba_train_options_init(&o);
    o.lr = 2e-3f;
    o.schedule = MAMBA_LR_WARMUP_COSINE;
    o.warmup_steps = 2;
    o.total_steps = 5;
    o.min_lr_ratio = 0.25f;
    mamba_trainer_t *tr = tiny_trainer(ctx, &c, 1, &o);
    enum { B = 1, T = 6 };
    int32_t ids[B * T], labels[B * T];
    make_batch(3, B, T, c.vocab_size, ids, labels);
    const double pi = 3.14159265358979323846;
    for (long k = 1; k <= 7; k++) {
        mamba_train_stats_t st;
        ck_assert_int_eq(mamba_trainer_step(tr, ids, labels, B, T, &st), MAMBA_OK);
        double want = k <= 2 ? o.lr * (double)k / 2 : o.lr * (0.25 + 0.75 * 0.5 * (1 + cos(pi * fmin(1.0, (k - 2) / 3.0))));
        ck_assert_msg(fabs(st.lr - want) <= 1e-7 * o.lr, "step %ld: lr %g, expected %g", k, st.lr, want);
    }
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
}
END_TEST

/* ---- (c) checkpoints that the model loader reads ---- */

static void expect_same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    ck_assert_ptr_nonnull(fa);
    ck_assert_ptr_nonnull(fb);
    int ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        ck_assert_msg(ca == cb, "%s and %s differ", a, b);
    } while (ca != EOF);
    fclose(fa);
    fclose(fb);
}

START_TEST(checkpoint_round_trip)
{
    const int tie = _i;
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c = tiny_cfg(2, 0, tie);
    mamba_trainer_t *tr = tiny_trainer(ctx, &c, 3, NULL);
    enum { B = 2, T = 20 };
    int32_t ids[B * T], labels[B * T];
    for (uint64_t s = 0; s < 2; s++) {
        make_batch(40 + s, B, T, c.vocab_size, ids, labels);
        ck_assert_int_eq(mamba_trainer_step(tr, ids, labels, B, T, NULL), MAMBA_OK);
    }
    size_t total;
    float *p1 = all_values(tr, 0, &total);
    char *d1 = tmpdir_new(), *d2 = tmpdir_new(), a[4096], b[4096];
    ck_assert_msg(mamba_trainer_save(tr, d1) == MAMBA_OK, "%s", mamba_last_error(ctx));
    const size_t V = (size_t)c.vocab_size;
    float *l1 = malloc((size_t)B * T * V * sizeof *l1), *l2 = malloc((size_t)B * T * V * sizeof *l2);
    mamba_model_t *m1 = NULL, *m2 = NULL;
    ck_assert_msg(mamba_model_load(ctx, d1, &m1) == MAMBA_OK, "%s", mamba_last_error(ctx));
    mamba_model_info_t info;
    mamba_model_info(m1, &info);
    ck_assert_int_eq(info.config.d_model, c.d_model);
    ck_assert_int_eq(info.config.dt_rank, c.dt_rank);
    ck_assert_int_eq(info.config.tie_embeddings, tie);
    ck_assert_int_eq(info.dtype, MAMBA_F32);
    make_batch(50, B, T, c.vocab_size, ids, labels);
    ck_assert_int_eq(mamba_forward(m1, ids, B, T, MAMBA_LOGITS_ALL, l1), MAMBA_OK);
    /* resumed: the same parameters, bitwise, and a save that loads to the same model */
    mamba_trainer_t *tr2 = NULL;
    ck_assert_msg(mamba_trainer_load(ctx, d1, NULL, &tr2) == MAMBA_OK, "%s", mamba_last_error(ctx));
    float *p2 = all_values(tr2, 0, NULL);
    ck_assert_int_eq(memcmp(p1, p2, total * sizeof *p1), 0);
    ck_assert_int_eq(mamba_trainer_save(tr2, d2), MAMBA_OK);
    expect_same_file(path_join(a, sizeof a, d1, "model.safetensors"), path_join(b, sizeof b, d2, "model.safetensors"));
    expect_same_file(path_join(a, sizeof a, d1, "optimizer.safetensors"),
                     path_join(b, sizeof b, d2, "optimizer.safetensors"));
    ck_assert_msg(mamba_model_load(ctx, d2, &m2) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_int_eq(mamba_forward(m2, ids, B, T, MAMBA_LOGITS_ALL, l2), MAMBA_OK);
    ck_assert_int_eq(memcmp(l1, l2, (size_t)B * T * V * sizeof *l1), 0);
    /* the trainer's own loss against the loaded model's logits */
    mamba_train_stats_t st;
    ck_assert_int_eq(mamba_trainer_accumulate(tr2, ids, labels, B, T, &st), MAMBA_OK);
    const double hl = host_loss(l1, labels, (size_t)B * T, V);
    printf("saved model (tied %d): loss %.9g from its logits, %.9g from the trainer\n", tie, hl, st.loss);
    ck_assert_double_le(fabs(hl - st.loss), 1e-5 * hl);
    mamba_tensor_file_t *opt = NULL;
    ck_assert_int_eq(mamba_tensor_file_open(path_join(a, sizeof a, d1, "optimizer.safetensors"), &opt), MAMBA_OK);
    ck_assert_str_eq(mamba_tensor_file_metadata(opt, "step"), "2");
    ck_assert_uint_eq(mamba_tensor_file_count(opt), 2 * mamba_trainer_param_count(tr));
    mamba_tensor_file_close(opt);
    free(p1);
    free(p2);
    free(l1);
    free(l2);
    mamba_model_free(m1);
    mamba_model_free(m2);
    tmpdir_remove(d1);
    tmpdir_remove(d2);
    mamba_trainer_free(tr);
    mamba_trainer_free(tr2);
    mamba_context_free(ctx);
}
END_TEST

/* A half-precision checkpoint (pytorch_model.bin): widened to fp32 from the model's device
 * weights, or through mamba_trainer_load (which has no model.safetensors to read), the same
 * parameters; saved, the model it loads to gives the half model's logits. */
START_TEST(half_model_widened)
{
    mamba_context_t *ctx = ctx_on("cpu");
    const char *dir = data_path(1, "models/tiny_bin_half");
    mamba_model_t *m = NULL, *m2 = NULL;
    ck_assert_msg(mamba_model_load(ctx, dir, &m) == MAMBA_OK, "%s", mamba_last_error(ctx));
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    ck_assert_int_ne(info.dtype, MAMBA_F32);
    mamba_trainer_t *a = NULL, *b = NULL;
    ck_assert_msg(mamba_trainer_create_from_model(m, NULL, &a) == MAMBA_OK, "%s", mamba_last_error(ctx));
    ck_assert_msg(mamba_trainer_load(ctx, dir, NULL, &b) == MAMBA_OK, "%s", mamba_last_error(ctx));
    size_t total;
    float *pa = all_values(a, 0, &total), *pb = all_values(b, 0, NULL);
    ck_assert_int_eq(memcmp(pa, pb, total * sizeof *pa), 0);
    char *out = tmpdir_new();
    ck_assert_int_eq(mamba_trainer_save(a, out), MAMBA_OK);
    ck_assert_msg(mamba_model_load(ctx, out, &m2) == MAMBA_OK, "%s", mamba_last_error(ctx));
    enum { B = 2, T = 16 };
    int32_t ids[B * T], labels[B * T];
    const size_t V = (size_t)info.config.vocab_size;
    make_batch(4, B, T, info.config.vocab_size, ids, labels);
    float *l1 = malloc((size_t)B * T * V * sizeof *l1), *l2 = malloc((size_t)B * T * V * sizeof *l2);
    ck_assert_int_eq(mamba_forward(m, ids, B, T, MAMBA_LOGITS_ALL, l1), MAMBA_OK);
    ck_assert_int_eq(mamba_forward(m2, ids, B, T, MAMBA_LOGITS_ALL, l2), MAMBA_OK);
    const double e = max_abs_diff(l1, l2, (size_t)B * T * V);
    printf("half model widened: logits within %.3g (max %.3g)\n", e, max_abs(l1, (size_t)B * T * V));
    ck_assert_double_le(e, 1e-5 * max_abs(l1, (size_t)B * T * V));
    free(pa);
    free(pb);
    free(l1);
    free(l2);
    tmpdir_remove(out);
    mamba_trainer_free(a);
    mamba_trainer_free(b);
    mamba_model_free(m);
    mamba_model_free(m2);
    mamba_context_free(ctx);
}
END_TEST

/* ---- (d) resume: k steps, save, load, m steps == k + m steps ---- */

static void steps(mamba_trainer_t *tr, long from, long to, double *lrs)
{
    enum { B = 2, T = 9 };
    int32_t ids[B * T], labels[B * T];
    for (long s = from; s < to; s++) {
        mamba_train_stats_t st;
        make_batch(200 + (uint64_t)s, B, T, 40, ids, labels);
        ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, B, T, NULL), MAMBA_OK);
        make_batch(300 + (uint64_t)s, 1, T, 40, ids, labels); /* a second micro-batch of another shape */
        ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, 1, T, NULL), MAMBA_OK);
        ck_assert_int_eq(mamba_trainer_apply(tr, &st), MAMBA_OK);
        ck_assert_int_eq(st.step, s + 1);
        lrs[s] = st.lr;
    }
}

START_TEST(resume_is_exact)
{
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c = tiny_cfg(2, 0, 0);
    mamba_train_options_t o;
    mamba_train_options_init(&o);
    o.lr = 5e-3f;
    o.max_grad_norm = 0.5f;
    o.schedule = MAMBA_LR_WARMUP_COSINE;
    o.warmup_steps = 2;
    o.total_steps = 6;
    enum { K = 3, M = 3 };
    double lr_a[K + M], lr_b[K + M];
    mamba_trainer_t *t1 = tiny_trainer(ctx, &c, 21, &o);
    steps(t1, 0, K, lr_a);
    char *dir = tmpdir_new();
    ck_assert_int_eq(mamba_trainer_save(t1, dir), MAMBA_OK);
    mamba_trainer_free(t1);
    mamba_trainer_t *t2 = NULL;
    ck_assert_msg(mamba_trainer_load(ctx, dir, NULL, &t2) == MAMBA_OK, "%s", mamba_last_error(ctx));
    steps(t2, K, K + M, lr_a);
    mamba_trainer_t *t3 = tiny_trainer(ctx, &c, 21, &o);
    steps(t3, 0, K + M, lr_b);
    size_t total;
    float *a = all_values(t2, 0, &total), *b = all_values(t3, 0, NULL);
    ck_assert_int_eq(memcmp(a, b, total * sizeof *a), 0);
    for (int i = 0; i < K + M; i++) ck_assert_double_eq(lr_a[i], lr_b[i]);
    free(a);
    free(b);
    tmpdir_remove(dir);
    mamba_trainer_free(t2);
    mamba_trainer_free(t3);
    mamba_context_free(ctx);
}
END_TEST

/* ---- (e) gradient accumulation ---- */

START_TEST(accumulation_is_the_mean)
{
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c = tiny_cfg(2, 0, 1);
    enum { B = 4, T = 16, H = B / 2 };
    int32_t ids[B * T], labels[B * T];
    make_batch(77, B, T, c.vocab_size, ids, labels); /* every sequence counts T - 1 tokens */
    mamba_trainer_t *x = tiny_trainer(ctx, &c, 5, NULL), *y = tiny_trainer(ctx, &c, 5, NULL);
    mamba_trainer_t *za = tiny_trainer(ctx, &c, 5, NULL), *zb = tiny_trainer(ctx, &c, 5, NULL);
    mamba_train_stats_t sa, sb, sf, st;
    ck_assert_int_eq(mamba_trainer_accumulate(x, ids, labels, H, T, &sa), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_accumulate(x, ids + (size_t)H * T, labels + (size_t)H * T, H, T, &sb), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_accumulate(y, ids, labels, B, T, &sf), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_accumulate(za, ids, labels, H, T, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_accumulate(zb, ids + (size_t)H * T, labels + (size_t)H * T, H, T, NULL), MAMBA_OK);
    size_t total;
    float *gx = all_values(x, 1, &total), *gy = all_values(y, 1, NULL);
    float *ga = all_values(za, 1, NULL), *gb = all_values(zb, 1, NULL);
    /* read_grad is the sum of the micro-batches' gradients of their mean losses */
    float *sum = malloc(total * sizeof *sum), *twice = malloc(total * sizeof *twice);
    for (size_t k = 0; k < total; k++) {
        sum[k] = ga[k] + gb[k];
        twice[k] = 2 * gy[k]; /* equal token counts: the full batch's mean is the mean of the halves' */
    }
    const double m = max_abs(gx, total), e1 = max_abs_diff(gx, sum, total), e2 = max_abs_diff(gx, twice, total);
    printf("accumulated halves vs their sum: %.3g, vs twice the full batch: %.3g (max %.3g)\n", e1, e2, m);
    ck_assert_double_le(e1, 1e-6 * m);
    ck_assert_double_le(e2, 1e-5 * m);
    ck_assert_double_le(fabs(sf.loss - (sa.loss + sb.loss) / 2), 1e-6 * sf.loss);
    mamba_train_stats_t sy;
    ck_assert_int_eq(mamba_trainer_apply(x, &st), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_apply(y, &sy), MAMBA_OK);
    /* apply's loss is the mean of the micro-batches' mean losses; the norm of the mean gradient */
    ck_assert_double_eq(st.loss, (sa.loss + sb.loss) / 2);
    ck_assert_uint_eq(st.tokens, sa.tokens + sb.tokens);
    ck_assert_uint_eq(st.correct, sa.correct + sb.correct);
    ck_assert_double_le(fabs(st.grad_norm - sy.grad_norm), 1e-5 * sy.grad_norm);
    free(gx);
    free(gy);
    free(ga);
    free(gb);
    free(sum);
    free(twice);
    mamba_trainer_free(x);
    mamba_trainer_free(y);
    mamba_trainer_free(za);
    mamba_trainer_free(zb);
    mamba_context_free(ctx);
}
END_TEST

/* ---- (f) determinism and the initialization ---- */

START_TEST(same_step_twice_is_bitwise)
{
    const char *backend = backends[_i];
    mamba_context_t *ctx = ctx_threads(backend, 2);
    const mamba_config_t c = tiny_cfg(2, 1, 0);
    mamba_trainer_t *t[2] = {tiny_trainer(ctx, &c, 9, NULL), tiny_trainer(ctx, &c, 9, NULL)};
    enum { B = 3, T = 11 };
    int32_t ids[B * T], labels[B * T];
    mamba_train_stats_t st[2];
    size_t total;
    float *g[2], *p[2];
    for (int k = 0; k < 2; k++) {
        make_batch(5, B, T, c.vocab_size, ids, labels);
        ck_assert_int_eq(mamba_trainer_step(t[k], ids, labels, B, T, NULL), MAMBA_OK);
        make_batch(6, B, T, c.vocab_size, ids, labels);
        ck_assert_int_eq(mamba_trainer_accumulate(t[k], ids, labels, B, T, &st[k]), MAMBA_OK);
        g[k] = all_values(t[k], 1, &total);
        ck_assert_int_eq(mamba_trainer_apply(t[k], NULL), MAMBA_OK);
        p[k] = all_values(t[k], 0, NULL);
    }
    ck_assert_double_eq(st[0].loss, st[1].loss);
    ck_assert_int_eq(memcmp(g[0], g[1], total * sizeof *g[0]), 0);
    ck_assert_int_eq(memcmp(p[0], p[1], total * sizeof *p[0]), 0);
    printf("%s: two runs of the same steps agree bitwise (loss %.9g)\n", backend, st[0].loss);
    for (int k = 0; k < 2; k++) {
        free(g[k]);
        free(p[k]);
        mamba_trainer_free(t[k]);
    }
    mamba_context_free(ctx);
}
END_TEST

START_TEST(reference_initialization)
{
    mamba_context_t *ctx = ctx_on("cpu");
    mamba_config_t c = tiny_cfg(4, 1, 0);
    c.d_model = 64;
    c.vocab_size = 500;
    c.d_state = 8;
    c.dt_rank = 0; /* ceil(64 / 16) = 4 */
    mamba_trainer_t *a = tiny_trainer(ctx, &c, 42, NULL), *b = tiny_trainer(ctx, &c, 42, NULL);
    mamba_trainer_t *d = tiny_trainer(ctx, &c, 43, NULL);
    size_t total;
    float *pa = all_values(a, 0, &total), *pb = all_values(b, 0, NULL), *pd = all_values(d, 0, NULL);
    ck_assert_int_eq(memcmp(pa, pb, total * sizeof *pa), 0);
    ck_assert_int_ne(memcmp(pa, pd, total * sizeof *pa), 0);
    mamba_config_t got;
    ck_assert_int_eq(mamba_trainer_config(a, &got), MAMBA_OK);
    ck_assert_int_eq(got.dt_rank, 4);
    ck_assert_int_eq(got.d_inner, 128);
    const double di = 128, dm = 64;
    size_t off = 0;
    for (size_t i = 0; i < mamba_trainer_param_count(a); i++) {
        const char *name;
        size_t n;
        int ndim;
        int64_t shape[8];
        mamba_trainer_param_info(a, i, &name, &n, &ndim, shape);
        const float *v = pa + off;
        double mean = 0, sq = 0, mx = 0;
        for (size_t k = 0; k < n; k++) {
            mean += v[k];
            sq += (double)v[k] * v[k];
            mx = fmax(mx, fabs((double)v[k]));
        }
        mean /= (double)n;
        const double sd = sqrt(sq / (double)n - mean * mean);
#define ENDS(s) (strlen(name) >= strlen(s) && strcmp(name + strlen(name) - strlen(s), s) == 0)
        if (ENDS("embeddings.weight")) {
            ck_assert_msg(fabs(sd - 0.02) < 0.001 && fabs(mean) < 0.001, "embedding sd %g mean %g", sd, mean);
        } else if (ENDS("in_proj.weight") || ENDS("lm_head.weight")) {
            ck_assert_double_le(mx, 1 / sqrt(dm));
            ck_assert_double_le(fabs(sd - 1 / sqrt(3 * dm)), 0.05 / sqrt(3 * dm));
        } else if (ENDS("x_proj.weight")) {
            ck_assert_double_le(mx, 1 / sqrt(di));
            ck_assert_double_le(fabs(sd - 1 / sqrt(3 * di)), 0.05 / sqrt(3 * di));
        } else if (ENDS("out_proj.weight")) {
            ck_assert_double_le(mx, 1 / sqrt(di) / 2); /* / sqrt(n_layer = 4) */
            ck_assert_double_ge(mx, 0.9 / sqrt(di) / 2);
        } else if (ENDS("conv1d.weight") || ENDS("conv1d.bias")) {
            ck_assert_double_le(mx, 0.5); /* 1 / sqrt(d_conv = 4) */
            ck_assert_double_ge(mx, 0.4);
        } else if (ENDS("dt_proj.weight")) {
            ck_assert_double_le(mx, 0.5); /* dt_rank^-1/2 */
            ck_assert_double_ge(mx, 0.4);
        } else if (ENDS("dt_proj.bias")) {
            for (size_t k = 0; k < n; k++) {
                const double dt = log1p(exp((double)v[k])); /* softplus */
                ck_assert_msg(dt >= 1e-3 * 0.999 && dt <= 0.1 * 1.001, "%s[%zu]: dt %g", name, k, dt);
            }
        } else if (ENDS("A_log")) {
            for (size_t k = 0; k < n; k++) ck_assert_float_eq(v[k], (float)log((double)(k % 8) + 1));
        } else if (ENDS("mixer.D") || ENDS("norm.weight") || ENDS("norm_f.weight")) {
            for (size_t k = 0; k < n; k++) ck_assert_float_eq(v[k], 1.0f);
        } else if (ENDS("in_proj.bias") || ENDS("out_proj.bias")) {
            ck_assert_double_eq(mx, 0);
        } else {
            ck_abort_msg("unexpected parameter %s", name);
        }
#undef ENDS
        off += n;
    }
    free(pa);
    free(pb);
    free(pd);
    mamba_trainer_free(a);
    mamba_trainer_free(b);
    mamba_trainer_free(d);
    mamba_context_free(ctx);
}
END_TEST

/* ---- memory: d_model + 2 d_inner + dt_rank + 2N floats per token per layer, reused ---- */

START_TEST(activation_memory)
{
    mamba_context_t *ctx = ctx_on("cpu");
    const mamba_config_t c1 = tiny_cfg(1, 0, 1), c3 = tiny_cfg(3, 0, 1);
    mamba_trainer_t *t1 = tiny_trainer(ctx, &c1, 1, NULL), *t3 = tiny_trainer(ctx, &c3, 1, NULL);
    uint64_t pb1, ab1, pb3, ab3;
    ck_assert_int_eq(mamba_trainer_memory(t1, &pb1, &ab1), MAMBA_OK);
    ck_assert_uint_eq(ab1, 0);
    enum { B = 2, T = 32, R = B * T };
    int32_t ids[B * T], labels[B * T];
    make_batch(8, B, T, 40, ids, labels);
    ck_assert_int_eq(mamba_trainer_accumulate(t1, ids, labels, B, T, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_accumulate(t3, ids, labels, B, T, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_memory(t1, &pb1, &ab1), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_memory(t3, &pb3, &ab3), MAMBA_OK);
    const uint64_t per_token_layer = (uint64_t)(16 + 2 * 32 + 2 + 2 * 4) * 4;
    printf("kept activations: %llu bytes per token per layer; %llu bytes for %d rows of 1 layer\n",
           (unsigned long long)per_token_layer, (unsigned long long)ab1, R);
    ck_assert_uint_eq(ab3 - ab1, 2 * (uint64_t)R * per_token_layer);
    /* parameters, gradients and two moments, fp32 */
    size_t total;
    float *p = all_values(t1, 0, &total);
    free(p);
    ck_assert_uint_ge(pb1, 16 * (uint64_t)total);
    /* a smaller batch reuses the activations; a larger one grows them */
    uint64_t ab;
    ck_assert_int_eq(mamba_trainer_accumulate(t1, ids, labels, 1, T, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_memory(t1, NULL, &ab), MAMBA_OK);
    ck_assert_uint_eq(ab, ab1);
    int32_t big[4 * T], big_labels[4 * T];
    make_batch(9, 4, T, 40, big, big_labels);
    ck_assert_int_eq(mamba_trainer_accumulate(t1, big, big_labels, 4, T, NULL), MAMBA_OK);
    ck_assert_int_eq(mamba_trainer_memory(t1, NULL, &ab), MAMBA_OK);
    ck_assert_uint_gt(ab, ab1);
    mamba_trainer_free(t1);
    mamba_trainer_free(t3);
    mamba_context_free(ctx);
}
END_TEST

/* ---- (g) bad input ---- */

static void expect_error(mamba_status_t got, mamba_status_t want, const mamba_context_t *ctx, const char *needle)
{
    const char *msg = mamba_last_error(ctx);
    ck_assert_msg(got == want, "status %d, expected %d (%s)", got, want, msg);
    ck_assert_msg(strstr(msg, needle) != NULL, "message '%s' does not name '%s'", msg, needle);
}

START_TEST(bad_input)
{
    mamba_context_t *ctx = ctx_on("cpu");
    mamba_config_t c = tiny_cfg(2, 0, 1);
    mamba_trainer_t *tr = NULL;
    expect_error(mamba_trainer_create(NULL, &c, 1, NULL, &tr), MAMBA_ERR_INVALID_ARGUMENT, NULL, "context");
    expect_error(mamba_trainer_create(ctx, NULL, 1, NULL, &tr), MAMBA_ERR_INVALID_ARGUMENT, ctx, "NULL");
    mamba_config_t fc = c;
    snprintf(fc.model_type, sizeof fc.model_type, "falcon_mamba");
    expect_error(mamba_trainer_create(ctx, &fc, 1, NULL, &tr), MAMBA_ERR_UNSUPPORTED, ctx, "falcon_mamba");
    ck_assert_ptr_null(tr);
    const struct { const char *field; float lr, beta1, eps, clip; int sched; long warm; } bad[] = {
        {"lr", 0, 0.9f, 1e-8f, 1, 0, 0}, {"lr", NAN, 0.9f, 1e-8f, 1, 0, 0}, {"beta1", 1e-3f, 1, 1e-8f, 1, 0, 0},
        {"eps", 1e-3f, 0.9f, 0, 1, 0, 0}, {"max_grad_norm", 1e-3f, 0.9f, 1e-8f, -1, 0, 0},
        {"schedule", 1e-3f, 0.9f, 1e-8f, 1, 7, 0}, {"warmup_steps", 1e-3f, 0.9f, 1e-8f, 1, 1, -1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mamba_train_options_t o;
        mamba_train_options_init(&o);
        o.lr = bad[i].lr;
        o.beta1 = bad[i].beta1;
        o.eps = bad[i].eps;
        o.max_grad_norm = bad[i].clip;
        o.schedule = (mamba_lr_schedule_t)bad[i].sched;
        o.warmup_steps = bad[i].warm;
        expect_error(mamba_trainer_create(ctx, &c, 1, &o, &tr), MAMBA_ERR_INVALID_ARGUMENT, ctx, bad[i].field);
    }
    tr = tiny_trainer(ctx, &c, 1, NULL);
    enum { B = 2, T = 5 };
    int32_t ids[B * T], labels[B * T];
    make_batch(1, B, T, c.vocab_size, ids, labels);
    expect_error(mamba_trainer_accumulate(NULL, ids, labels, B, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, NULL, "NULL");
    expect_error(mamba_trainer_accumulate(tr, NULL, labels, B, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "ids");
    expect_error(mamba_trainer_accumulate(tr, ids, NULL, B, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "labels");
    expect_error(mamba_trainer_accumulate(tr, ids, labels, 0, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "batch 0");
    expect_error(mamba_trainer_accumulate(tr, ids, labels, B, 0, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "len 0");
    ids[1 * T + 3] = c.vocab_size;
    expect_error(mamba_trainer_accumulate(tr, ids, labels, B, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx,
                 "sequence 1, position 3");
    ids[1 * T + 3] = -2;
    expect_error(mamba_trainer_accumulate(tr, ids, labels, B, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "= -2");
    ids[1 * T + 3] = 0;
    labels[2] = c.vocab_size;
    expect_error(mamba_trainer_accumulate(tr, ids, labels, B, T, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx,
                 "labels[2] (sequence 0, position 2)");
    /* none of that was accumulated */
    expect_error(mamba_trainer_apply(tr, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "no batch accumulated");
    /* every label ignored: loss 0, no token, a zero gradient, and a finite step */
    for (size_t i = 0; i < (size_t)B * T; i++) labels[i] = i % 2 ? -100 : -1;
    mamba_train_stats_t st;
    ck_assert_int_eq(mamba_trainer_accumulate(tr, ids, labels, B, T, &st), MAMBA_OK);
    ck_assert_double_eq(st.loss, 0);
    ck_assert_uint_eq(st.tokens, 0);
    size_t total;
    float *g = all_values(tr, 1, &total);
    ck_assert_double_eq(max_abs(g, total), 0);
    ck_assert_int_eq(mamba_trainer_apply(tr, &st), MAMBA_OK);
    ck_assert_double_eq(st.loss, 0);
    ck_assert_double_eq(st.grad_norm, 0);
    float *p = all_values(tr, 0, NULL);
    for (size_t i = 0; i < total; i++) ck_assert(isfinite(p[i]));
    /* reading */
    float one[16];
    expect_error(mamba_trainer_read_param(tr, "backbone.nope", one, 16), MAMBA_ERR_INVALID_ARGUMENT, ctx,
                 "backbone.nope");
    expect_error(mamba_trainer_read_grad(tr, "backbone.norm_f.weight", one, 15), MAMBA_ERR_INVALID_ARGUMENT, ctx,
                 "16 elements");
    expect_error(mamba_trainer_param_info(tr, mamba_trainer_param_count(tr), NULL, NULL, NULL, NULL),
                 MAMBA_ERR_INVALID_ARGUMENT, ctx, "out of range");
    expect_error(mamba_trainer_save(tr, NULL), MAMBA_ERR_INVALID_ARGUMENT, ctx, "dir");
    /* loading */
    mamba_trainer_t *t2 = NULL;
    expect_error(mamba_trainer_load(ctx, "/nonexistent/dir", NULL, &t2), MAMBA_ERR_IO, ctx, "/nonexistent/dir");
    expect_error(mamba_trainer_load(ctx, data_path(1, "models/falcon_tiny"), NULL, &t2), MAMBA_ERR_UNSUPPORTED, ctx,
                 "falcon_mamba");
    mamba_model_t *fm = NULL;
    ck_assert_int_eq(mamba_model_load(ctx, data_path(1, "models/falcon_tiny"), &fm), MAMBA_OK);
    expect_error(mamba_trainer_create_from_model(fm, NULL, &t2), MAMBA_ERR_UNSUPPORTED, ctx, "falcon_mamba");
    mamba_model_free(fm);
    char *dir = tmpdir_new(), path[4096];
    ck_assert_int_eq(mamba_trainer_save(tr, dir), MAMBA_OK);
    const char *meta[] = {"format", "libmamba-adamw-1", "lr", "0.001"};
    ck_assert_int_eq(mamba_tensor_file_write(path_join(path, sizeof path, dir, "optimizer.safetensors"), NULL, 0, meta, 2),
                     MAMBA_OK);
    expect_error(mamba_trainer_load(ctx, dir, NULL, &t2), MAMBA_ERR_FORMAT, ctx, "beta1");
    ck_assert_ptr_null(t2);
    tmpdir_remove(dir);
    free(g);
    free(p);
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
}
END_TEST

/* 1 when backend is available here and can train; otherwise why not into why. */
static int can_train(const char *backend, char *why, size_t len)
{
    mamba_backend_info_t be[8];
    size_t n = 0;
    mamba_list_backends(be, 8, &n);
    int available = 0;
    for (size_t i = 0; i < n && i < 8; i++)
        if (strcmp(be[i].name, backend) == 0) {
            available = be[i].available;
            if (!available) snprintf(why, len, "%s: not available: %s", backend, be[i].note);
        }
    if (!available) {
        if (!why[0]) snprintf(why, len, "%s: not built", backend);
        return 0;
    }
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = backend;
    o.log_level = MAMBA_LOG_ERROR;
    mamba_context_t *ctx = NULL;
    if (mamba_context_create(&o, &ctx) != MAMBA_OK) {
        snprintf(why, len, "%s: %s", backend, mamba_last_error(NULL));
        return 0;
    }
    const mamba_config_t c = tiny_cfg(1, 0, 1);
    mamba_trainer_t *tr = NULL;
    const mamba_status_t st = mamba_trainer_create(ctx, &c, 1, NULL, &tr);
    if (st != MAMBA_OK) snprintf(why, len, "%s: %s", backend, mamba_last_error(ctx));
    mamba_trainer_free(tr);
    mamba_context_free(ctx);
    return st == MAMBA_OK;
}

/* can_train in a child process: the suite's tests run in forked children, which must not
 * inherit a device runtime's or OpenMP's threads (a forked libgomp team or CUDA context hangs
 * or fails in the child). */
static int can_train_forked(const char *backend, char *why, size_t len)
{
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(why, len, "%s: pipe failed", backend);
        return 0;
    }
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char msg[400] = "";
        const int ok = can_train(backend, msg, sizeof msg);
        const ssize_t w = write(fds[1], msg, strlen(msg));
        _exit(ok && w >= 0 ? 0 : 1);
    }
    close(fds[1]);
    const ssize_t n = pid > 0 ? read(fds[0], why, len - 1) : -1;
    why[n > 0 ? (size_t)n : 0] = 0;
    close(fds[0]);
    int status = 1;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) snprintf(why, len, "%s: fork failed", backend);
    return pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(void)
{
    const char *gpus[] = {"opencl", "cuda"};
    for (int i = 0; i < 2; i++) {
        char why[400] = "";
        if (can_train_forked(gpus[i], why, sizeof why)) {
            backends[n_backends++] = gpus[i];
        } else {
            printf("skipping %s\n", why);
            if (backend_required(gpus[i]))
                snprintf(required_missing + strlen(required_missing), sizeof required_missing - strlen(required_missing),
                         "MAMBA_TEST_REQUIRE names %s, which cannot train here: %s. ", gpus[i], why);
        }
    }
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, fixture_gradients, 0, 2 * n_backends);
    tcase_add_loop_test(tc, same_step_twice_is_bitwise, 0, n_backends);
    if (required_missing[0]) tcase_add_test(tc, required_backend_missing);
    tcase_add_test(tc, finite_differences_bias_untied);
    tcase_add_loop_test(tc, directional_derivatives, 0, (int)(sizeof shapes / sizeof shapes[0]));
    tcase_add_loop_test(tc, adamw_matches_hand_computation, 0, 2);
    tcase_add_test(tc, lr_schedule);
    tcase_add_loop_test(tc, checkpoint_round_trip, 0, 2);
    tcase_add_test(tc, half_model_widened);
    tcase_add_test(tc, resume_is_exact);
    tcase_add_test(tc, accumulation_is_the_mean);
    tcase_add_test(tc, reference_initialization);
    tcase_add_test(tc, activation_memory);
    tcase_add_test(tc, bad_input);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
