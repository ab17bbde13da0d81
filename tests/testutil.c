#define _GNU_SOURCE
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

const char *data_path(int slot, const char *rel)
{
    static char buf[4][4096];
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", MAMBA_TEST_DATA, rel);
    return buf[slot];
}

char *tmpdir_new(void)
{
    char tmpl[] = "/tmp/mamba-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(d);
    return strdup(d);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    if (remove(path) != 0) fprintf(stderr, "could not remove %s\n", path);
    return 0;
}

void tmpdir_remove(char *dir)
{
    if (!dir) return;
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    return m;
}

double nmse(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

float *file_f32(const mamba_tensor_file_t *f, const char *name, size_t *n)
{
    mamba_tensor_t t;
    ck_assert_msg(mamba_tensor_file_find(f, name, &t) == MAMBA_OK, "%s", mamba_last_error(NULL));
    size_t cnt = 1;
    for (int i = 0; i < t.ndim; i++) cnt *= (size_t)t.shape[i];
    ck_assert_int_eq(t.dtype, MAMBA_F32);
    float *v = malloc(cnt * sizeof *v + 1);
    memcpy(v, t.data, cnt * sizeof *v);
    if (n) *n = cnt;
    return v;
}

int32_t *file_ids(const mamba_tensor_file_t *f, const char *name, size_t *n)
{
    mamba_tensor_t t;
    ck_assert_msg(mamba_tensor_file_find(f, name, &t) == MAMBA_OK, "%s", mamba_last_error(NULL));
    size_t cnt = 1;
    for (int i = 0; i < t.ndim; i++) cnt *= (size_t)t.shape[i];
    ck_assert_int_eq(t.dtype, MAMBA_I64);
    int32_t *v = malloc(cnt * sizeof *v + 1);
    for (size_t i = 0; i < cnt; i++) {
        int64_t x;
        memcpy(&x, (const char *)t.data + 8 * i, 8);
        v[i] = (int32_t)x;
    }
    if (n) *n = cnt;
    return v;
}

mamba_context_t *cpu_context(size_t prefill_chunk)
{
    mamba_context_options_t o;
    mamba_context_options_init(&o);
    o.backend = "cpu";
    o.prefill_chunk = prefill_chunk;
    o.log_level = MAMBA_LOG_ERROR;
    mamba_context_t *ctx = NULL;
    ck_assert_msg(mamba_context_create(&o, &ctx) == MAMBA_OK, "%s", mamba_last_error(NULL));
    return ctx;
}

void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

void copy_file(const char *from, const char *to)
{
    size_t len;
    char *buf = read_file_all(from, &len);
    write_file(to, buf, len);
    free(buf);
}

void write_raw_safetensors(const char *path, const char *json, const void *data, size_t data_len)
{
    size_t jl = strlen(json);
    unsigned char *buf = malloc(8 + jl + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)jl >> (8 * i));
    memcpy(buf + 8, json, jl); // NOLINT(bugprone-not-null-terminated-result): a header is not NUL-terminated
    if (data_len) memcpy(buf + 8 + jl, data, data_len);
    write_file(path, buf, 8 + jl + data_len);
    free(buf);
}

int backend_required(const char *backend)
{
    const char *req = getenv("MAMBA_TEST_REQUIRE");
    if (!req) return 0;
    char *copy = strdup(req), *save = NULL;
    int found = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (strcmp(t, backend) == 0) found = 1;
    free(copy);
    return found;
}

int run_suite(void *suite, int fork)
{
    SRunner *sr = srunner_create((Suite *)suite);
    if (!fork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

static float *optional_f32(scan_fixture *f, const char *name, int slot)
{
    mamba_tensor_t t;
    if (mamba_tensor_file_find(f->file, name, &t) != MAMBA_OK) return NULL;
    return f->owned[slot] = file_f32(f->file, name, NULL);
}

void scan_fixture_load(scan_fixture *f, const char *name)
{
    memset(f, 0, sizeof *f);
    char rel[256];
    snprintf(rel, sizeof rel, "scan/%s.safetensors", name);
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &f->file), MAMBA_OK);
    mamba_tensor_t u, A;
    mamba_tensor_file_find(f->file, "u", &u);
    mamba_tensor_file_find(f->file, "A", &A);
    const size_t B = (size_t)u.shape[0], D = (size_t)u.shape[1], L = (size_t)u.shape[2], N = (size_t)A.shape[1];
    f->ref_out = file_f32(f->file, "out", &f->n_out);
    f->ref_state = file_f32(f->file, "last_state", &f->n_state);
    f->out = calloc(f->n_out, 4);
    f->state = calloc(f->n_state, 4);
    const ptrdiff_t sb = (ptrdiff_t)(D * L), sd = (ptrdiff_t)L;
    mamba_scan_args_t a = {
        .batch = B, .dim = D, .len = L, .d_state = N, .n_groups = 1,
        .u = optional_f32(f, "u", 0), .u_sb = sb, .u_st = 1, .u_sd = sd,
        .delta = optional_f32(f, "delta", 1), .delta_sb = sb, .delta_st = 1, .delta_sd = sd,
        .A = optional_f32(f, "A", 2),
        .B = optional_f32(f, "B", 3), .B_sb = (ptrdiff_t)(N * L), .B_st = 1, .B_sn = (ptrdiff_t)L,
        .C = optional_f32(f, "C", 4), .C_sb = (ptrdiff_t)(N * L), .C_st = 1, .C_sn = (ptrdiff_t)L,
        .D = optional_f32(f, "D", 5), .z = optional_f32(f, "z", 6), .z_sb = sb, .z_st = 1, .z_sd = sd,
        .delta_bias = optional_f32(f, "delta_bias", 7),
        .delta_softplus = strcmp(mamba_tensor_file_metadata(f->file, "delta_softplus"), "true") == 0,
        .out = f->out, .out_sb = sb, .out_st = 1, .out_sd = sd, .state_out = f->state,
    };
    f->args = a;
}

void scan_fixture_free(scan_fixture *f)
{
    for (int i = 0; i < 8; i++) free(f->owned[i]);
    free(f->ref_out);
    free(f->ref_state);
    free(f->out);
    free(f->state);
    mamba_tensor_file_close(f->file);
}

golden load_golden(const char *model)
{
    golden g;
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s/golden.safetensors", model);
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &g.f), MAMBA_OK);
    mamba_tensor_t t;
    ck_assert_int_eq(mamba_tensor_file_find(g.f, "logits", &t), MAMBA_OK);
    g.batch = (size_t)t.shape[0];
    g.len = (size_t)t.shape[1];
    g.vocab = (size_t)t.shape[2];
    g.ids = file_ids(g.f, "input_ids", NULL);
    g.prompt = file_ids(g.f, "gen_prompt", &g.n_prompt);
    g.gen = file_ids(g.f, "gen_tokens", &g.n_gen);
    g.logits = file_f32(g.f, "logits", NULL);
    g.gen_logits = file_f32(g.f, "gen_logits", NULL);
    return g;
}

void free_golden(golden *g)
{
    free(g->ids); free(g->prompt); free(g->gen); free(g->logits); free(g->gen_logits);
    mamba_tensor_file_close(g->f);
}

float *golden_step_through(mamba_model_t *m, const golden *g)
{
    mamba_state_t *s;
    ck_assert_int_eq(mamba_state_create(m, g->batch, &s), MAMBA_OK);
    float *out = malloc(g->batch * g->len * g->vocab * sizeof *out), *logits = malloc(g->batch * g->vocab * sizeof *logits);
    for (size_t t = 0; t < g->len; t++) {
        int32_t ids[8];
        ck_assert_uint_le(g->batch, 8);
        for (size_t b = 0; b < g->batch; b++) ids[b] = g->ids[b * g->len + t];
        ck_assert_int_eq(mamba_step(s, ids, logits), MAMBA_OK);
        for (size_t b = 0; b < g->batch; b++)
            memcpy(out + (b * g->len + t) * g->vocab, logits + b * g->vocab, g->vocab * sizeof *out);
    }
    free(logits);
    mamba_state_free(s);
    return out;
}

char *read_file_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    const long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}
