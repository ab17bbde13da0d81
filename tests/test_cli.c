/* The `mamba` command: exit codes (0 ok, 1 runtime error, 2 usage error), --help, and its
 * outputs checked against the fixtures. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#ifndef MAMBA_CLI
#error "MAMBA_CLI must name the mamba executable"
#endif

static char out_buf[1 << 16], err_buf[1 << 16];
static char *dir;

static void setup(void) { dir = tmpdir_new(); }
static void teardown(void) { tmpdir_remove(dir); dir = NULL; }

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    size_t n = fp ? fread(buf, 1, cap - 1, fp) : 0;
    if (fp) fclose(fp);
    buf[n] = 0;
}

/* Run the CLI with the given arguments (NULL-terminated); return its exit status. */
static int run(const char *arg, ...)
{
    const char *argv[32] = {MAMBA_CLI};
    int n = 1;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && n < 31; a = va_arg(ap, const char *)) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char out_path[4200], err_path[4200];
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    fflush(NULL); /* else the child's freopen writes this process's buffered output again */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!freopen(out_path, "w", stdout) || !freopen(err_path, "w", stderr)) _exit(127);
        execv(MAMBA_CLI, (char *const *)argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    slurp(out_path, out_buf, sizeof out_buf);
    slurp(err_path, err_buf, sizeof err_buf);
    ck_assert_msg(WIFEXITED(status), "%s did not exit normally", argv[1]);
    return WEXITSTATUS(status);
}

START_TEST(help_and_usage_errors)
{
    ck_assert_int_eq(run(NULL), 2);
    ck_assert_int_eq(run("--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out_buf, "usage: mamba COMMAND"));
    ck_assert_int_eq(run("bogus", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "unknown command 'bogus'"));
    static const char *const cmds[] = {"info", "forward", "generate", "perplexity", "scan"};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(run(cmds[i], "--help", NULL), 0);
        char want[64];
        snprintf(want, sizeof want, "usage: mamba %s", cmds[i]);
        ck_assert_msg(strstr(out_buf, want) != NULL, "%s --help printed '%s'", cmds[i], out_buf);
        ck_assert_int_eq(run(cmds[i], "--no-such-flag", NULL), 2);
    }
    ck_assert_int_eq(run("forward", "--model", "x", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "required"));
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1,,2", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--prompt-ids"));
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1,2,", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "-3", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "-n", "0", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--top-p", "1.5", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--threads", "two", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--dtype", "f8", NULL), 2);
    ck_assert_int_eq(run("info", "extra", NULL), 2);
}
END_TEST

START_TEST(info_lists_backends)
{
    ck_assert_int_eq(run("info", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out_buf, "cpu"));
    ck_assert_ptr_nonnull(strstr(out_buf, "opencl"));
    ck_assert_ptr_nonnull(strstr(out_buf, "cuda"));
    ck_assert_ptr_nonnull(strstr(out_buf, "cpu:0"));
}
END_TEST

START_TEST(forward_matches_reference)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/logits.safetensors", dir);
    ck_assert_msg(run("forward", "--model", data_path(0, "models/small"), "--input",
                      data_path(1, "models/small/golden.safetensors"), "--output", out, "--backend", "cpu", NULL) == 0,
                  "%s", err_buf);
    mamba_tensor_file_t *got, *ref;
    ck_assert_int_eq(mamba_tensor_file_open(out, &got), MAMBA_OK);
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "models/small/golden.safetensors"), &ref), MAMBA_OK);
    size_t n, m;
    float *a = file_f32(got, "logits", &n), *b = file_f32(ref, "logits", &m);
    ck_assert_uint_eq(n, m);
    ck_assert_double_le(max_abs_diff(a, b, n), 1e-4);
    free(a);
    free(b);
    mamba_tensor_file_close(got);
    mamba_tensor_file_close(ref);
}
END_TEST

START_TEST(generate_matches_reference)
{
    mamba_tensor_file_t *ref;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "models/tiny/golden.safetensors"), &ref), MAMBA_OK);
    size_t np, ng;
    int32_t *prompt = file_ids(ref, "gen_prompt", &np), *gen = file_ids(ref, "gen_tokens", &ng);
    char ids[256] = "", want[256] = "", n[16];
    for (size_t i = 0; i < np; i++) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? "," : "", prompt[i]);
    for (size_t i = 0; i < ng; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? " " : "", gen[i]);
    snprintf(n, sizeof n, "%zu", ng);
    ck_assert_msg(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", n, NULL) == 0, "%s",
                  err_buf);
    out_buf[strcspn(out_buf, "\n")] = 0;
    ck_assert_str_eq(out_buf, want);
    /* sampled: deterministic in the seed */
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", "20",
                         "--temperature", "1.2", "--top-k", "10", "--seed", "3", NULL), 0);
    char first[1024];
    snprintf(first, sizeof first, "%s", out_buf);
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", "20",
                         "--temperature", "1.2", "--top-k", "10", "--seed", "3", NULL), 0);
    ck_assert_str_eq(out_buf, first);
    free(prompt);
    free(gen);
    mamba_tensor_file_close(ref);
}
END_TEST

START_TEST(scan_matches_reference)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/scan.safetensors", dir);
    ck_assert_msg(run("scan", "--input", data_path(0, "scan/basic.safetensors"), "--output", out, NULL) == 0, "%s", err_buf);
    mamba_tensor_file_t *got, *ref;
    ck_assert_int_eq(mamba_tensor_file_open(out, &got), MAMBA_OK);
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "scan/basic.safetensors"), &ref), MAMBA_OK);
    const char *names[] = {"out", "last_state"};
    for (int i = 0; i < 2; i++) {
        size_t n, m;
        float *a = file_f32(got, names[i], &n), *b = file_f32(ref, names[i], &m);
        ck_assert_uint_eq(n, m);
        ck_assert_double_le(max_abs_diff(a, b, n), 1e-5 * max_abs(b, n));
        free(a);
        free(b);
    }
    mamba_tensor_file_close(got);
    mamba_tensor_file_close(ref);
}
END_TEST

/* --backward writes every d_* the fixture holds, in its shape, within the fixtures' bound */
START_TEST(scan_backward_matches_reference)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/grads.safetensors", dir);
    const char *ref_path = data_path(0, "grads/scan_basic.safetensors");
    ck_assert_msg(run("scan", "--backward", "--input", ref_path, "--output", out, NULL) == 0, "%s", err_buf);
    mamba_tensor_file_t *got, *ref;
    ck_assert_int_eq(mamba_tensor_file_open(out, &got), MAMBA_OK);
    ck_assert_int_eq(mamba_tensor_file_open(ref_path, &ref), MAMBA_OK);
    const char *names[] = {"d_u", "d_delta", "d_A", "d_B", "d_C", "d_D", "d_z", "d_delta_bias"};
    for (int i = 0; i < 8; i++) {
        mamba_tensor_t tg, tr;
        ck_assert_int_eq(mamba_tensor_file_find(got, names[i], &tg), MAMBA_OK);
        ck_assert_int_eq(mamba_tensor_file_find(ref, names[i], &tr), MAMBA_OK);
        ck_assert_int_eq(tg.ndim, tr.ndim);
        for (int k = 0; k < tr.ndim; k++) ck_assert_int_eq(tg.shape[k], tr.shape[k]);
        size_t n, m;
        float *a = file_f32(got, names[i], &n), *b = file_f32(ref, names[i], &m);
        ck_assert_uint_eq(n, m);
        ck_assert_msg(max_abs_diff(a, b, n) <= 1e-5 * max_abs(b, n), "%s: err %g", names[i], max_abs_diff(a, b, n));
        free(a);
        free(b);
    }
    mamba_tensor_file_close(got);
    mamba_tensor_file_close(ref);
    /* a forward case has no dout */
    ck_assert_int_eq(run("scan", "--backward", "--input", data_path(0, "scan/basic.safetensors"), "--output", out,
                         NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "dout"));
}
END_TEST

START_TEST(runtime_errors)
{
    char out[4200];
    snprintf(out, sizeof out, "%s/o.safetensors", dir);
    ck_assert_int_eq(run("forward", "--model", data_path(0, "models/tiny"), "--input", "/nonexistent.safetensors",
                         "--output", out, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/nonexistent.safetensors"));
    ck_assert_int_ne(access(out, F_OK), 0); /* no half-written output */
    ck_assert_int_eq(run("forward", "--model", "/no/such/dir", "--input", data_path(0, "models/tiny/golden.safetensors"),
                         "--output", out, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/no/such/dir"));
    ck_assert_int_eq(run("forward", "--model", data_path(0, "models/tiny"), "--input",
                         data_path(1, "models/small/golden.safetensors"), "--output", out, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "out of range [0, 64)"));
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", "1,64", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "token id 64"));
    ck_assert_int_eq(run("scan", "--input", data_path(0, "models/tiny/model.safetensors"), "--output", out, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "required tensor 'u'"));
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", "1", "--backend", "tpu", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "unknown backend 'tpu'"));
    ck_assert_int_ne(access(out, F_OK), 0);
}
END_TEST

START_TEST(generate_sampling_flags)
{
    mamba_tensor_file_t *ref;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "models/tiny/golden.safetensors"), &ref), MAMBA_OK);
    size_t np, ng;
    int32_t *prompt = file_ids(ref, "gen_prompt", &np), *gen = file_ids(ref, "gen_tokens", &ng);
    char ids[256] = "", n[16], bias[32];
    for (size_t i = 0; i < np; i++) snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", i ? "," : "", prompt[i]);
    snprintf(n, sizeof n, "%zu", ng);
    /* banning the first greedy token: it never comes */
    snprintf(bias, sizeof bias, "%d:-inf", gen[0]);
    ck_assert_msg(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", n, "--logit-bias", bias,
                      NULL) == 0, "%s", err_buf);
    int count = 0;
    for (char *p = out_buf, *end; *p && *p != '\n'; p = end, count++) {
        long t = strtol(p, &end, 10);
        ck_assert_ptr_ne(end, p);
        ck_assert_int_ne(t, gen[0]);
    }
    ck_assert_int_eq(count, (int)ng);
    /* a huge presence penalty over the last 4 tokens, the prompt included: no repeat in a window */
    ck_assert_msg(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", "30",
                      "--presence-penalty", "1000", "--penalty-last-n", "4", NULL) == 0, "%s", err_buf);
    long seq[64];
    size_t len = 0;
    for (size_t i = 0; i < np; i++) seq[len++] = prompt[i];
    for (char *p = out_buf, *end; *p && *p != '\n' && len < 64; p = end) seq[len++] = strtol(p, &end, 10);
    ck_assert_uint_eq(len, np + 30);
    for (size_t i = np; i < len; i++)
        for (size_t j = i - 4; j < i; j++) ck_assert_msg(seq[i] != seq[j], "token %zu repeats token %zu", i, j);
    /* sampled with every filter: deterministic in the seed */
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", "20", "--temperature",
                         "0.9", "--min-p", "0.05", "--repeat-penalty", "1.2", "--frequency-penalty", "0.3", "--seed", "9", NULL), 0);
    char first[1024];
    snprintf(first, sizeof first, "%s", out_buf);
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "-n", "20", "--temperature",
                         "0.9", "--min-p", "0.05", "--repeat-penalty", "1.2", "--frequency-penalty", "0.3", "--seed", "9", NULL), 0);
    ck_assert_str_eq(out_buf, first);
    /* bad values */
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--min-p", "2", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--min-p"));
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--repeat-penalty", "0", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--penalty-last-n", "-1", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--logit-bias", "3", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--logit-bias '3'"));
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--logit-bias", "3:inf", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt-ids", "1", "--logit-bias", "3:1,", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", data_path(0, "models/tiny"), "--prompt-ids", ids, "--logit-bias", "1:2,99:1",
                         NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "logit bias 1: token id 99 is out of range [0, 64)"));
    free(prompt);
    free(gen);
    mamba_tensor_file_close(ref);
}
END_TEST

/* A number after "key": in a JSON line; NAN when absent. */
static double json_num(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* The summary line (the last) of --json output. */
static const char *json_summary(void)
{
    size_t n = strlen(out_buf);
    while (n && out_buf[n - 1] == '\n') out_buf[--n] = 0;
    const char *last = strrchr(out_buf, '\n');
    return last ? last + 1 : out_buf;
}

/* -log softmax(row)[target] in double */
static double nll_of(const float *row, size_t vocab, int32_t target)
{
    double top = -INFINITY, sum = 0;
    for (size_t i = 0; i < vocab; i++) top = fmax(top, row[i]);
    for (size_t i = 0; i < vocab; i++) sum += exp(row[i] - top);
    return top + log(sum) - row[target];
}

typedef struct golden_ppl {
    mamba_tensor_file_t *f;
    float *logits;
    int32_t *ids;
    size_t rows, len, vocab;
    double nll;  /* mean over every row's tokens 1.. */
} golden_ppl;

static golden_ppl open_golden(const char *model)
{
    golden_ppl g;
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s/golden.safetensors", model);
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, rel), &g.f), MAMBA_OK);
    mamba_tensor_t t;
    ck_assert_int_eq(mamba_tensor_file_find(g.f, "logits", &t), MAMBA_OK);
    g.rows = (size_t)t.shape[0];
    g.len = (size_t)t.shape[1];
    g.vocab = (size_t)t.shape[2];
    g.logits = file_f32(g.f, "logits", NULL);
    g.ids = file_ids(g.f, "input_ids", NULL);
    double sum = 0;
    for (size_t b = 0; b < g.rows; b++)
        for (size_t t2 = 0; t2 + 1 < g.len; t2++)
            sum += nll_of(g.logits + (b * g.len + t2) * g.vocab, g.vocab, g.ids[b * g.len + t2 + 1]);
    g.nll = sum / (double)(g.rows * (g.len - 1));
    return g;
}

static void close_golden(golden_ppl *g)
{
    free(g->logits);
    free(g->ids);
    mamba_tensor_file_close(g->f);
}

static const char *const ppl_models[] = {"tiny", "small"};

START_TEST(perplexity_matches_golden)
{
    const char *name = ppl_models[_i];
    golden_ppl g = open_golden(name);
    const double want = exp(g.nll);
    char rel[256], model[4200], golden[4200], full[32];
    snprintf(rel, sizeof rel, "models/%s", name);
    snprintf(model, sizeof model, "%s", data_path(0, rel));
    snprintf(rel, sizeof rel, "models/%s/golden.safetensors", name);
    snprintf(golden, sizeof golden, "%s", data_path(1, rel));
    snprintf(full, sizeof full, "%zu", g.len);
    /* --ctx 0 through one forward and through the state in chunks, --ctx L, batched */
    const char *extra[][4] = {{"--ctx", "0", NULL, NULL}, {"--ctx", "0", "--chunk", "16"}, {"--ctx", full, NULL, NULL},
                              {"--ctx", "0", "--batch", "2"}, {"--ctx", "0", "--chunk", "7"}};
    for (int k = 0; k < 5; k++) {
        const char *a2 = extra[k][2], *a3 = a2 ? extra[k][3] : NULL;
        int rc = a2 ? run("perplexity", "--model", model, "--input", golden, "--backend", "cpu", "--json", extra[k][0],
                          extra[k][1], a2, a3, NULL)
                    : run("perplexity", "--model", model, "--input", golden, "--backend", "cpu", "--json", extra[k][0],
                          extra[k][1], NULL);
        ck_assert_msg(rc == 0, "%s", err_buf);
        const char *sum = json_summary();
        ck_assert_double_eq(json_num(sum, "tokens"), (double)(g.rows * (g.len - 1)));
        ck_assert_double_eq(json_num(sum, "windows"), (double)g.rows);
        double got = json_num(sum, "ppl"), err = fabs(got - want) / want;
        printf("%s perplexity %s %s%s%s%s%s: %.9g, golden %.9g, relative error %.2g\n", name, extra[k][0], extra[k][1],
               a2 ? " " : "", a2 ? a2 : "", a3 ? " " : "", a3 ? a3 : "", got, want, err);
        ck_assert_msg(err <= 1e-5, "%s: perplexity %.9g, golden %.9g", name, got, want);
        ck_assert_double_le(fabs(json_num(sum, "nll") - g.nll), 1e-5 * g.nll);
    }
    /* the plain output */
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, NULL), 0);
    ck_assert_msg(strncmp(out_buf, "perplexity ", 11) == 0, "%s", out_buf);
    ck_assert_double_le(fabs(strtod(out_buf + 11, NULL) - want), 1e-5 * want);
    /* int32 ids of shape (L): row 1 alone */
    char one[4200];
    snprintf(one, sizeof one, "%s/row.safetensors", dir);
    mamba_tensor_t t = {.name = "input_ids", .dtype = MAMBA_I32, .ndim = 1, .shape = {(int64_t)g.len},
                        .data = g.ids + g.len, .nbytes = g.len * sizeof(int32_t)};
    ck_assert_int_eq(mamba_tensor_file_write(one, &t, 1, NULL, 0), MAMBA_OK);
    ck_assert_msg(run("perplexity", "--model", model, "--input", one, "--json", NULL) == 0, "%s", err_buf);
    double row = 0;
    for (size_t p = 0; p + 1 < g.len; p++)
        row += nll_of(g.logits + (g.len + p) * g.vocab, g.vocab, g.ids[g.len + p + 1]);
    row /= (double)(g.len - 1);
    ck_assert_double_le(fabs(json_num(json_summary(), "nll") - row), 1e-5 * row);
    close_golden(&g);
}
END_TEST

/* --ctx 10: each window from an empty state, against a forward over that window alone and,
 * for the windows at the start of a row, against the golden logits (the model is causal). */
START_TEST(perplexity_windows)
{
    const char *name = ppl_models[_i];
    golden_ppl g = open_golden(name);
    char rel[256], model[4200], golden[4200];
    snprintf(rel, sizeof rel, "models/%s", name);
    snprintf(model, sizeof model, "%s", data_path(0, rel));
    snprintf(rel, sizeof rel, "models/%s/golden.safetensors", name);
    snprintf(golden, sizeof golden, "%s", data_path(1, rel));
    mamba_context_t *ctx = cpu_context(0);
    mamba_model_t *m;
    ck_assert_int_eq(mamba_model_load(ctx, model, &m), MAMBA_OK);
    float *logits = malloc(10 * g.vocab * sizeof *logits);
    const size_t per_row = g.len / 10 + (g.len % 10 >= 2);
    static const char *const batches[] = {"1", "3"};
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(run("perplexity", "--model", model, "--input", golden, "--json", "--ctx", "10", "--batch", batches[k],
                          NULL) == 0, "%s", err_buf);
        size_t windows = 0, tokens = 0;
        double total = 0, worst = 0;
        for (char *line = strtok(out_buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (isnan(json_num(line, "window"))) { /* the summary */
                ck_assert_double_eq(json_num(line, "windows"), (double)windows);
                ck_assert_double_eq(json_num(line, "tokens"), (double)tokens);
                ck_assert_double_le(fabs(json_num(line, "nll") - total / (double)tokens), 1e-12 * total);
                continue;
            }
            ck_assert_double_eq(json_num(line, "window"), (double)windows);
            const size_t row = (size_t)json_num(line, "row"), start = (size_t)json_num(line, "start");
            const size_t n = (size_t)json_num(line, "tokens");
            ck_assert_uint_eq(row, windows / per_row);
            ck_assert_uint_eq(start, windows % per_row * 10);
            ck_assert_uint_eq(n, (g.len - start < 10 ? g.len - start : 10) - 1);
            const int32_t *ids = g.ids + row * g.len + start;
            ck_assert_int_eq(mamba_forward(m, ids, 1, n + 1, MAMBA_LOGITS_ALL, logits), MAMBA_OK);
            double want = 0, gold = 0;
            for (size_t t2 = 0; t2 < n; t2++) {
                want += nll_of(logits + t2 * g.vocab, g.vocab, ids[t2 + 1]);
                gold += nll_of(g.logits + (row * g.len + t2) * g.vocab, g.vocab, ids[t2 + 1]);
            }
            want /= (double)n;
            gold /= (double)n;
            const double got = json_num(line, "nll");
            ck_assert_msg(fabs(got - want) <= 1e-6 * want, "window %zu: nll %.9g, forward %.9g", windows, got, want);
            ck_assert_double_le(fabs(json_num(line, "ppl") - exp(got)), 1e-9 * exp(got));
            if (start == 0) {
                ck_assert_msg(fabs(got - gold) <= 1e-5 * gold, "window %zu: nll %.9g, golden %.9g", windows, got, gold);
                worst = fmax(worst, fabs(got - gold) / gold);
            }
            total += got * (double)n;
            tokens += n;
            windows++;
        }
        ck_assert_uint_eq(windows, g.rows * per_row);
        printf("%s --ctx 10 --batch %s: %zu windows, ppl %.9g (whole rows: %.9g); first windows against golden: %.2g\n",
               name, batches[k], windows, exp(total / (double)tokens), exp(g.nll), worst);
    }
    free(logits);
    mamba_model_free(m);
    mamba_context_free(ctx);
    close_golden(&g);
}
END_TEST

START_TEST(perplexity_errors)
{
    const char *model = data_path(0, "models/tiny"), *golden = data_path(1, "models/tiny/golden.safetensors");
    ck_assert_int_eq(run("perplexity", "--model", model, NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "required"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, "--ctx", "-1", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--ctx '-1'"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, "--ctx", "1", NULL), 2);
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, "--ctx", "ten", NULL), 2);
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, "--batch", "0", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--batch"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, "--ctx", "8", "--chunk", "4", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--chunk"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", golden, "extra", NULL), 2);
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", "/nonexistent.safetensors", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/nonexistent.safetensors"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", data_path(1, "models/tiny/model.safetensors"), NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "input_ids"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", data_path(1, "models/small/golden.safetensors"), NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "is out of range [0, 64)"));
    ck_assert_ptr_nonnull(strstr(err_buf, "input_ids[0, "));
    ck_assert_int_eq(run("perplexity", "--model", "/no/such/dir", "--input", golden, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/no/such/dir"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--file", "text.txt", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "--file needs a tokenizer"));
    /* wrong dtype, one token */
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    const float f[3] = {1, 2, 3};
    mamba_tensor_t t = {.name = "input_ids", .dtype = MAMBA_F32, .ndim = 1, .shape = {3}, .data = f, .nbytes = sizeof f};
    ck_assert_int_eq(mamba_tensor_file_write(path, &t, 1, NULL, 0), MAMBA_OK);
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", path, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "int64 or int32"));
    const int64_t single = 5;
    t = (mamba_tensor_t){.name = "input_ids", .dtype = MAMBA_I64, .ndim = 1, .shape = {1}, .data = &single, .nbytes = 8};
    ck_assert_int_eq(mamba_tensor_file_write(path, &t, 1, NULL, 0), MAMBA_OK);
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", path, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "nothing to score"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, help_and_usage_errors);
    tcase_add_test(tc, info_lists_backends);
    tcase_add_test(tc, forward_matches_reference);
    tcase_add_test(tc, generate_matches_reference);
    tcase_add_test(tc, scan_matches_reference);
    tcase_add_test(tc, scan_backward_matches_reference);
    tcase_add_test(tc, runtime_errors);
    tcase_add_test(tc, generate_sampling_flags);
    tcase_add_loop_test(tc, perplexity_matches_golden, 0, 2);
    tcase_add_loop_test(tc, perplexity_windows, 0, 2);
    tcase_add_test(tc, perplexity_errors);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
