/* The `mamba` command: exit codes (0 ok, 1 runtime error, 2 usage error), --help, and its
 * outputs checked against the fixtures. */
#include <check.h>
#include <math.h>
#include <poll.h>
#include <pty.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "ckpt_rewrite.h"
#include "cli_run.h"
#include "testutil.h"

#define out_buf cli_out
#define err_buf cli_err
#define out_len cli_out_len
#define stdin_path cli_stdin
#define slurp cli_slurp
#define run(...) cli_run(dir, __VA_ARGS__)
static char *dir;

static void setup(void) { dir = tmpdir_new(); }
/* the text tests' model is small: one thread each for the many runs (OpenMP's idle threads
 * would only spin against the other jobs on the machine) */
static void setup_text(void)
{
    setup();
    setenv("OMP_NUM_THREADS", "1", 1);
}
static void teardown(void) { tmpdir_remove(dir); dir = NULL; }

START_TEST(help_and_usage_errors)
{
    ck_assert_int_eq(run(NULL), 2);
    ck_assert_int_eq(run("--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out_buf, "usage: mamba COMMAND"));
    ck_assert_int_eq(run("bogus", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "unknown command 'bogus'"));
    static const char *const cmds[] = {"info", "forward", "generate", "perplexity", "scan", "tokenize", "detokenize", "chat"};
    for (int i = 0; i < 8; i++) {
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

/* convert --weights q8 writes a checkpoint that generates what --weights q8 generates from the
 * original; bad --weights values are usage errors */
START_TEST(convert_and_weights_q8)
{
    char out_dir[4200], path[4300];
    snprintf(out_dir, sizeof out_dir, "%s/q8", dir);
    ck_assert_msg(run("convert", "--weights", "q8", "--model", data_path(0, "models/tiny"), "--out", out_dir, NULL) == 0,
                  "%s", err_buf);
    ck_assert_ptr_nonnull(strstr(out_buf, "Q8_0"));
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(run("generate", "--model", out_dir, "--prompt-ids", "1,2,3", "-n", "8", NULL), 0);
    char converted[1024];
    snprintf(converted, sizeof converted, "%s", out_buf);
    ck_assert_msg(run("generate", "--weights", "q8", "--model", data_path(0, "models/tiny"), "--prompt-ids", "1,2,3",
                      "-n", "8", NULL) == 0, "%s", err_buf);
    ck_assert_str_eq(out_buf, converted);
    ck_assert_int_eq(run("generate", "--weights=q4", "--model", data_path(0, "models/tiny"), "--prompt-ids", "1", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err_buf, "q4"));
    ck_assert_int_eq(run("convert", "--weights", "q8", "--model", out_dir, "--out", out_dir, NULL), 2);
    ck_assert_int_eq(run("convert", "--model", out_dir, "--out", dir, NULL), 2);
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
    if (vocab == 0) return NAN;
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

/* ---- text in, text out ------------------------------------------------------------------ */

#define TEXT_VOCAB 50280 /* GPT-NeoX's padded vocabulary, as the Mamba checkpoints have it */

static mamba_tokenizer_t *neox(void)
{
    mamba_tokenizer_t *tok;
    ck_assert_msg(mamba_tokenizer_load(data_path(3, "tokenizer/tokenizer.json"), &tok) == MAMBA_OK, "%s",
                  mamba_last_error(NULL));
    return tok;
}

/* tiny's embedding grown to TEXT_VOCAB rows: its 64 and random ones of the same scale */
static int widen_embedding(char *name, mamba_tensor_t *t, void **data, void *user)
{
    (void)user;
    if (strcmp(name, "backbone.embeddings.weight") != 0) return 1;
    ck_assert_int_eq(t->dtype, MAMBA_F32);
    const size_t rows = (size_t)t->shape[0], d = (size_t)t->shape[1];
    const float *old = *data;
    float *w = malloc((size_t)TEXT_VOCAB * d * sizeof *w);
    double ss = 0;
    for (size_t i = 0; i < rows * d; i++) ss += (double)old[i] * old[i];
    const double half_width = sqrt(3 * ss / (double)(rows * d));
    memcpy(w, old, rows * d * sizeof *w);
    uint64_t x = 12345;
    for (size_t i = rows * d; i < (size_t)TEXT_VOCAB * d; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = (float)(half_width * ((double)(x >> 11) / 4503599627370496.0 - 1));
    }
    free(*data);
    *data = w;
    t->shape[0] = TEXT_VOCAB;
    t->nbytes = (size_t)TEXT_VOCAB * d * sizeof *w;
    return 1;
}

/* A checkpoint dir/NAME: tiny's layers, a vocabulary of TEXT_VOCAB, the GPT-NeoX tokenizer
 * (unless with_tokenizer is 0). Returns its path (static, the last two calls' valid). */
static const char *text_model(const char *name, int with_tokenizer)
{
    static char paths[2][4200]; /* two at a time */
    static int next;
    char *path = paths[next++ % 2], file[4300];
    snprintf(path, sizeof paths[0], "%s/%s", dir, name);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    size_t len;
    char *cfg = read_file_all(data_path(0, "models/tiny/config.json"), &len);
    char *at = strstr(cfg, "\"vocab_size\": 64");
    ck_assert_ptr_nonnull(at);
    char *edited = malloc(len + 16);
    snprintf(edited, len + 16, "%.*s\"vocab_size\": %d%s", (int)(at - cfg), cfg, TEXT_VOCAB, at + strlen("\"vocab_size\": 64"));
    snprintf(file, sizeof file, "%s/config.json", path);
    write_file(file, edited, strlen(edited));
    free(edited);
    free(cfg);
    snprintf(file, sizeof file, "%s/model.safetensors", path);
    rewrite_checkpoint(data_path(0, "models/tiny/model.safetensors"), file, widen_embedding, NULL, 0, 0);
    if (with_tokenizer) {
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        copy_file(data_path(0, "tokenizer/tokenizer.json"), file);
    }
    return path;
}

static void put_file(const char *model, const char *name, const void *text, size_t len)
{
    char file[4300];
    snprintf(file, sizeof file, "%s/%s", model, name);
    write_file(file, text, len);
}

static int32_t *tokenize(const mamba_tokenizer_t *tok, const char *text, size_t len, int flags, size_t *n)
{
    ck_assert_int_eq(mamba_tokenize(tok, text, len, flags, NULL, 0, n), MAMBA_OK);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    ck_assert_int_eq(mamba_tokenize(tok, text, len, flags, ids, *n, n), MAMBA_OK);
    return ids;
}

static char *detokenize(const mamba_tokenizer_t *tok, const int32_t *ids, size_t n, size_t *len)
{
    ck_assert_msg(mamba_detokenize(tok, ids, n, NULL, 0, len) == MAMBA_OK, "%s", mamba_last_error(NULL));
    char *text = malloc(*len + 1);
    ck_assert_int_eq(mamba_detokenize(tok, ids, n, text, *len, len), MAMBA_OK);
    text[*len] = 0;
    return text;
}

static void ids_csv(const int32_t *ids, size_t n, char *buf, size_t cap)
{
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) snprintf(buf + strlen(buf), cap - strlen(buf), "%s%d", i ? "," : "", (int)ids[i]);
}

/* ids separated by spaces or commas (in out_buf or s); returns the count */
static size_t parse_ids(const char *s, int32_t *ids, size_t cap)
{
    size_t n = 0;
    for (char *end; *s && *s != '\n' && n < cap; s = end + (*end == ',' || *end == ' ')) {
        ids[n++] = (int32_t)strtol(s, &end, 10);
        ck_assert_ptr_ne(end, s);
    }
    return n;
}

static size_t find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; m <= n && i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return i;
    return n;
}

static void assert_out(const char *want, size_t len, const char *what)
{
    ck_assert_msg(out_len == len && memcmp(out_buf, want, len) == 0, "%s: printed %zu bytes '%s', expected %zu bytes '%s'",
                  what, out_len, out_buf, len, want);
}

static const char prompt_text[] = "The history of the Roman Empire";

/* The greedy (or flagged) continuation of prompt_text in the id form: n ids into gen. */
static void ids_continuation(const char *model, const mamba_tokenizer_t *tok, const char *n_tokens, const char *a,
                             const char *b, int32_t *gen, size_t cap, size_t *n)
{
    size_t np;
    int32_t *ids = tokenize(tok, prompt_text, strlen(prompt_text), 0, &np);
    char csv[512];
    ids_csv(ids, np, csv, sizeof csv);
    free(ids);
    const int rc = a ? run("generate", "--model", model, "--prompt-ids", csv, "-n", n_tokens, a, b, NULL)
                     : run("generate", "--model", model, "--prompt-ids", csv, "-n", n_tokens, NULL);
    ck_assert_msg(rc == 0, "%s", err_buf);
    *n = parse_ids(out_buf, gen, cap);
}

START_TEST(generate_text_is_decoded_ids)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    static const char *const flags[][6] = {
        {NULL}, {"--temperature", "0.9", "--top-k", "40", "--seed", "7"}};
    for (int k = 0; k < 2; k++) {
        size_t np;
        int32_t *ids = tokenize(tok, prompt_text, strlen(prompt_text), 0, &np);
        char csv[512];
        ids_csv(ids, np, csv, sizeof csv);
        free(ids);
        const char *const *f = flags[k];
        int rc = f[0] ? run("generate", "--model", model, "--prompt-ids", csv, "-n", "40", f[0], f[1], f[2], f[3], f[4], f[5], NULL)
                      : run("generate", "--model", model, "--prompt-ids", csv, "-n", "40", NULL);
        ck_assert_msg(rc == 0, "%s", err_buf);
        int32_t gen[64];
        const size_t n = parse_ids(out_buf, gen, 64);
        ck_assert_uint_eq(n, 40);
        size_t len;
        char *want = detokenize(tok, gen, n, &len);
        rc = f[0] ? run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", f[0], f[1], f[2], f[3],
                        f[4], f[5], NULL)
                  : run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", NULL);
        ck_assert_msg(rc == 0, "%s", err_buf);
        assert_out(want, len, f[0] ? "sampled" : "greedy");
        char figures[64];
        snprintf(figures, sizeof figures, "prompt %zu tokens in", np);
        ck_assert_msg(strstr(err_buf, figures) && strstr(err_buf, "40 new tokens in") && strstr(err_buf, "stopped by length"),
                      "%s", err_buf);
        printf("generate --prompt (%s): %zu bytes of text, the ids' decoding\n", f[0] ? "sampled" : "greedy", len);
        free(want);
    }
    mamba_tokenizer_free(tok);
}
END_TEST

START_TEST(generate_text_stop_strings)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    int32_t gen[64];
    size_t n, glen, slen;
    ids_continuation(model, tok, "40", NULL, NULL, gen, 64, &n);
    char *g = detokenize(tok, gen, n, &glen);
    /* the text of tokens 8 and 9: a stop string across a token boundary */
    char *stop = detokenize(tok, gen + 8, 2, &slen);
    ck_assert_uint_gt(slen, 1);
    ck_assert_ptr_null(memchr(stop, 0, slen));
    const size_t at = find_bytes(g, glen, stop, slen);
    ck_assert_uint_lt(at, glen);
    ck_assert_msg(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", "--stop", stop, NULL) == 0,
                  "%s", err_buf);
    assert_out(g, at, "--stop");
    ck_assert_ptr_nonnull(strstr(err_buf, "stopped by stop string"));
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", "--stop",
                         "\x01never", "--stop", stop, NULL), 0);
    assert_out(g, at, "two stops");
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", "--stop",
                         "\x01never", NULL), 0);
    assert_out(g, glen, "a stop that never comes");
    ck_assert_ptr_nonnull(strstr(err_buf, "stopped by length"));
    /* a stop that is the text's first byte: nothing printed */
    char first[2] = {g[0], 0};
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", "--stop", first, NULL),
                     0);
    assert_out("", 0, "stop at the first byte");
    /* the text's last bytes: held back to the end, then cut */
    const char *tail = g + glen - 3;
    const size_t tail_at = find_bytes(g, glen, tail, 3);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", "--stop", tail, NULL),
                     0);
    assert_out(g, tail_at, "stop at the end");
    printf("stop strings: '%s' cuts %zu bytes to %zu\n", stop, glen, at);
    free(stop);
    free(g);
    mamba_tokenizer_free(tok);
}
END_TEST

START_TEST(generate_text_end_of_sequence)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    int32_t gen[64];
    size_t n, glen, len;
    ids_continuation(model, tok, "40", NULL, NULL, gen, 64, &n);
    char *g = detokenize(tok, gen, n, &glen);
    /* generation_config.json names the 6th greedy token the end of sequence: the text ends before its first occurrence */
    const int32_t eos = gen[5];
    size_t k = 0;
    while (gen[k] != eos) k++;
    char json[64], count[64];
    snprintf(json, sizeof json, "{\"eos_token_id\": [%d, 3]}", (int)eos);
    put_file(model, "generation_config.json", json, strlen(json));
    char *want = detokenize(tok, gen, k, &len);
    ck_assert_msg(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", NULL) == 0, "%s", err_buf);
    assert_out(want, len, "end of sequence");
    snprintf(count, sizeof count, "%zu new tokens", k + 1);
    ck_assert_msg(strstr(err_buf, count) && strstr(err_buf, "stopped by end of sequence"), "%s", err_buf);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--ignore-eos", NULL), 0);
    assert_out(g, glen, "--ignore-eos");
    /* a logit bias forcing it at the first step: nothing printed; with --ignore-eos, its text */
    char bias[32];
    snprintf(bias, sizeof bias, "%d:1000", (int)eos);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "40", "--logit-bias", bias, NULL), 0);
    assert_out("", 0, "forced end of sequence");
    ck_assert_ptr_nonnull(strstr(err_buf, " 1 new tokens"));
    const int32_t three[3] = {eos, eos, eos};
    free(want);
    want = detokenize(tok, three, 3, &len);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", prompt_text, "-n", "3", "--logit-bias", bias, "--ignore-eos",
                         NULL), 0);
    assert_out(want, len, "forced, ignored");
    printf("end of sequence %d: %zu tokens of %zu\n", (int)eos, k, n);
    free(want);
    free(g);
    mamba_tokenizer_free(tok);
}
END_TEST

START_TEST(generate_text_inputs)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    static const char text[] = "H\xc3\xa9llo\nw\xc3\xb6rld \xf0\x9f\x98\x80 and more";
    char path[4300];
    snprintf(path, sizeof path, "%s/prompt.txt", dir);
    write_file(path, text, sizeof text - 1);
    ck_assert_msg(run("generate", "--model", model, "--prompt", text, "-n", "12", NULL) == 0, "%s", err_buf);
    char want[4096];
    const size_t want_len = out_len;
    memcpy(want, out_buf, out_len);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt-file", path, "-n", "12", NULL), 0);
    assert_out(want, want_len, "--prompt-file");
    stdin_path = path;
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "-", "-n", "12", NULL), 0);
    assert_out(want, want_len, "--prompt -");
    /* --tokenizer for a directory without one */
    const char *bare = text_model("bare", 0);
    ck_assert_msg(run("generate", "--model", bare, "--prompt", text, "-n", "12", "--tokenizer",
                      data_path(0, "tokenizer/tokenizer.json"), NULL) == 0, "%s", err_buf);
    assert_out(want, want_len, "--tokenizer");
    /* NUL bytes in a file: the ids the library gives them */
    static const char nul[] = "a\0b\0\0c";
    write_file(path, nul, sizeof nul - 1);
    size_t n, len;
    int32_t *ids = tokenize(tok, nul, sizeof nul - 1, 0, &n);
    char csv[256];
    ids_csv(ids, n, csv, sizeof csv);
    free(ids);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt-ids", csv, "-n", "8", NULL), 0);
    int32_t gen[16];
    const size_t ng = parse_ids(out_buf, gen, 16);
    size_t stop = 0;
    while (stop < ng && gen[stop] != 0) stop++; /* config.json's eos_token_id is 0 */
    char *w = detokenize(tok, gen, stop, &len);
    ck_assert_msg(run("generate", "--model", model, "--prompt-file", path, "-n", "8", NULL) == 0, "%s", err_buf);
    assert_out(w, len, "NULs");
    free(w);
    /* special tokens recognized unless --no-special */
    static const char special[] = "<|endoftext|>Hi there";
    char count[64];
    for (int flag = 0; flag < 2; flag++) {
        ids = tokenize(tok, special, sizeof special - 1, flag ? MAMBA_TOKENIZE_SPECIAL_AS_TEXT : 0, &n);
        ck_assert_int_eq(ids[0] == 0, !flag);
        free(ids);
        ck_assert_int_eq(flag ? run("generate", "--model", model, "--prompt", special, "-n", "2", "--no-special", NULL)
                              : run("generate", "--model", model, "--prompt", special, "-n", "2", NULL), 0);
        snprintf(count, sizeof count, "prompt %zu tokens", n);
        ck_assert_msg(strstr(err_buf, count) != NULL, "%s: %s", count, err_buf);
    }
    mamba_tokenizer_free(tok);
}
END_TEST

START_TEST(generate_text_errors)
{
    const char *tiny = data_path(0, "models/tiny");
    ck_assert_int_eq(run("generate", "--model", tiny, "--prompt", "Hello", NULL), 1);
    ck_assert_msg(strstr(err_buf, "--prompt needs a tokenizer: the model directory has no tokenizer.json; give --tokenizer FILE"),
                  "%s", err_buf);
    ck_assert_int_eq(run("generate", "--model", "130m", "--prompt", "Hello", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "--prompt needs a tokenizer: a synthetic model (--model 130m) has none"));
    /* tiny's 64 ids are too few for the text */
    ck_assert_int_eq(run("generate", "--model", tiny, "--prompt", "Hello", "--tokenizer", data_path(1, "tokenizer/tokenizer.json"),
                         NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "is id 12092, outside the model's vocabulary of 64"));
    const char *model = text_model("m", 1);
    char path[4300];
    snprintf(path, sizeof path, "%s/bad.txt", dir);
    write_file(path, "ab\xff" "cd", 5);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt-file", path, NULL), 1);
    ck_assert_msg(strstr(err_buf, "--prompt-file") && strstr(err_buf, "not valid UTF-8 at byte offset 2"), "%s", err_buf);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "--prompt: the prompt is empty"));
    write_file(path, "", 0);
    stdin_path = path;
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "-", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "the prompt is empty"));
    ck_assert_int_eq(run("generate", "--model", model, "--prompt-file", "/nonexistent.txt", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/nonexistent.txt"));
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "a", "--prompt-ids", "1", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "exclude each other"));
    ck_assert_int_eq(run("generate", "--model", model, "--prompt-ids", "1", "--stop", "a", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "a", "--stop", "", NULL), 2);
    ck_assert_int_eq(run("generate", "--model", model, NULL), 2);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "a", "--tokenizer", "/nonexistent.json", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/nonexistent.json"));
    /* a malformed tokenizer.json fails the model's load, named */
    put_file(model, "tokenizer.json", "{\"model\": ", 10);
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", "a", NULL), 1);
    ck_assert_msg(strstr(err_buf, "tokenizer.json") && strstr(err_buf, "malformed JSON"), "%s", err_buf);
}
END_TEST

/* One JSON string of --pieces decoded back into bytes (\xNN included). */
static size_t unescape(const char *s, char *out)
{
    size_t n = 0;
    ck_assert_int_eq(*s++, '"');
    while (*s != '"') {
        if (*s != '\\') { out[n++] = *s++; continue; }
        s++;
        switch (*s) {
        case 'n': out[n++] = '\n'; s++; break;
        case 't': out[n++] = '\t'; s++; break;
        case 'r': out[n++] = '\r'; s++; break;
        case 'x': out[n++] = (char)strtol((char[3]){s[1], s[2], 0}, NULL, 16); s += 3; break;
        case 'u': out[n++] = (char)strtol((char[5]){s[1], s[2], s[3], s[4], 0}, NULL, 16); s += 5; break;
        default: out[n++] = *s++; break;
        }
    }
    return n;
}

START_TEST(tokenize_round_trip)
{
    mamba_tokenizer_t *tok = neox();
#define TEXT(s) {(s), sizeof(s) - 1}
    static const struct { const char *text; size_t len; } texts[] = {
        TEXT("Hello, world!"),
        TEXT("na\xc3\xafve caf\xc3\xa9 \xe2\x80\x93 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"),
        TEXT("a\0b\0\0c\n"),
        TEXT("<|endoftext|> special \"quoted\" \\back\\slash"),
        TEXT("  many    spaces\t\ttabs\r\n\x01\x1f end"),
    };
#undef TEXT
    const char *tokenizer = data_path(0, "tokenizer/tokenizer.json");
    char path[4300], csv[8192];
    snprintf(path, sizeof path, "%s/text.txt", dir);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        write_file(path, texts[i].text, texts[i].len);
        for (int flag = 0; flag < 2; flag++) {
            size_t n, len;
            int32_t *ids = tokenize(tok, texts[i].text, texts[i].len, flag ? MAMBA_TOKENIZE_SPECIAL_AS_TEXT : 0, &n);
            ids_csv(ids, n, csv, sizeof csv);
            ck_assert_int_eq(flag ? run("tokenize", "--tokenizer", tokenizer, "--file", path, "--no-special", NULL)
                                  : run("tokenize", "--tokenizer", tokenizer, "--file", path, NULL), 0);
            out_buf[strcspn(out_buf, "\n")] = 0;
            ck_assert_str_eq(out_buf, csv);
            /* back to the bytes */
            ck_assert_msg(run("detokenize", "--tokenizer", tokenizer, csv, NULL) == 0, "%s", err_buf);
            assert_out(texts[i].text, texts[i].len, "detokenize");
            /* the pieces: one per id, each the token's bytes */
            ck_assert_int_eq(flag ? run("tokenize", "--tokenizer", tokenizer, "--file", path, "--pieces", "--no-special", NULL)
                                  : run("tokenize", "--tokenizer", tokenizer, "--file", path, "--pieces", NULL), 0);
            size_t k = 0;
            for (char *line = out_buf, *next; *line; line = next, k++) {
                next = strchr(line, '\n');
                ck_assert_ptr_nonnull(next);
                *next++ = 0;
                ck_assert_uint_lt(k, n);
                char *tab;
                ck_assert_int_eq(strtol(line, &tab, 10), ids[k]);
                ck_assert_int_eq(*tab, '\t');
                char piece[256];
                const size_t pl = unescape(tab + 1, piece);
                const char *want = mamba_token_bytes(tok, ids[k], &len);
                ck_assert_msg(pl == len && memcmp(piece, want, len) == 0, "text %zu piece %zu: %s", i, k, tab + 1);
            }
            ck_assert_uint_eq(k, n);
            free(ids);
        }
    }
    /* the same through a checkpoint directory and a TEXT argument */
    const char *model = text_model("m", 1);
    ck_assert_int_eq(run("tokenize", "--model", model, "Hello, world!", NULL), 0);
    ck_assert_str_eq(out_buf, "12092,13,1533,2\n");
    ck_assert_int_eq(run("detokenize", "--model", model, "12092,13,1533,2", NULL), 0);
    ck_assert_str_eq(out_buf, "Hello, world!");
    ck_assert_int_eq(run("tokenize", "--model", model, "--pieces", "a\"\xe2\x82", NULL), 1); /* not UTF-8 */
    ck_assert_ptr_nonnull(strstr(err_buf, "not valid UTF-8 at byte offset 2"));
    ck_assert_int_eq(run("tokenize", "--tokenizer", tokenizer, "", NULL), 0);
    ck_assert_str_eq(out_buf, "\n");
    /* a piece that is part of a character: \xNN */
    ck_assert_int_eq(run("tokenize", "--tokenizer", tokenizer, "--pieces", "\xf0\x9f\x98\x80", NULL), 0);
    ck_assert_msg(strstr(out_buf, "\\xF0") != NULL, "%s", out_buf);
    /* errors */
    ck_assert_int_eq(run("tokenize", "Hello", NULL), 2);
    ck_assert_int_eq(run("tokenize", "--tokenizer", tokenizer, NULL), 2);
    ck_assert_int_eq(run("tokenize", "--tokenizer", tokenizer, "a", "b", NULL), 2);
    ck_assert_int_eq(run("tokenize", "--tokenizer", tokenizer, "--file", path, "a", NULL), 2);
    ck_assert_int_eq(run("detokenize", "--tokenizer", tokenizer, "1,x", NULL), 2);
    ck_assert_int_eq(run("detokenize", "--tokenizer", tokenizer, NULL), 2);
    ck_assert_int_eq(run("detokenize", "--tokenizer", tokenizer, "5,99999", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "ids[1] = 99999 is not a token id"));
    ck_assert_int_eq(run("tokenize", "--model", data_path(1, "models/tiny"), "a", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "has no tokenizer.json; give --tokenizer FILE"));
    ck_assert_int_eq(run("tokenize", "--model", "130m", "a", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "synthetic model"));
    ck_assert_int_eq(run("tokenize", "--tokenizer", tokenizer, "--file", "/nonexistent.txt", NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "/nonexistent.txt"));
    mamba_tokenizer_free(tok);
}
END_TEST

START_TEST(perplexity_of_a_file)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    static const char text[] = "It was the best of times, it was the worst of times, it was the age of wisdom,\n"
                               "it was the age of foolishness\xe2\x80\x94 caf\xc3\xa9 <|endoftext|> and so on.\n";
    char path[4300], ids_path[4300];
    snprintf(path, sizeof path, "%s/text.txt", dir);
    snprintf(ids_path, sizeof ids_path, "%s/ids.safetensors", dir);
    write_file(path, text, sizeof text - 1);
    size_t n;
    int32_t *ids = tokenize(tok, text, sizeof text - 1, 0, &n);
    mamba_tensor_t t = {.name = "input_ids", .dtype = MAMBA_I32, .ndim = 2, .shape = {1, (int64_t)n}, .data = ids,
                        .nbytes = n * sizeof *ids};
    ck_assert_int_eq(mamba_tensor_file_write(ids_path, &t, 1, NULL, 0), MAMBA_OK);
    static const char *const ctxs[] = {"0", "8"};
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(run("perplexity", "--model", model, "--input", ids_path, "--json", "--ctx", ctxs[k], NULL) == 0, "%s",
                      err_buf);
        char want[1024];
        snprintf(want, sizeof want, "%s", json_summary());
        ck_assert_msg(run("perplexity", "--model", model, "--file", path, "--json", "--ctx", ctxs[k], NULL) == 0, "%s", err_buf);
        const char *got = json_summary();
        ck_assert_double_eq(json_num(got, "tokens"), json_num(want, "tokens"));
        ck_assert_double_eq(json_num(got, "nll"), json_num(want, "nll"));
        ck_assert_double_eq(json_num(got, "ppl"), json_num(want, "ppl"));
        printf("perplexity --file --ctx %s: %.9g over %.0f tokens, as --input\n", ctxs[k], json_num(got, "ppl"),
               json_num(got, "tokens"));
    }
    const size_t scored = n - 1 - (n - 1) / 8; /* --ctx 8: one unscored per window */
    ck_assert_double_eq(json_num(json_summary(), "tokens"), (double)scored);
    /* --tokenizer, stdin, --no-special */
    const char *bare = text_model("bare", 0);
    ck_assert_msg(run("perplexity", "--model", model, "--file", path, "--json", NULL) == 0, "%s", err_buf);
    const double nll = json_num(json_summary(), "nll");
    ck_assert_int_eq(run("perplexity", "--model", bare, "--file", path, "--json", "--tokenizer",
                         data_path(0, "tokenizer/tokenizer.json"), NULL), 0);
    ck_assert_double_eq(json_num(json_summary(), "nll"), nll);
    stdin_path = path;
    ck_assert_int_eq(run("perplexity", "--model", model, "--file", "-", "--json", NULL), 0);
    ck_assert_double_eq(json_num(json_summary(), "nll"), nll);
    size_t n_text;
    int32_t *plain = tokenize(tok, text, sizeof text - 1, MAMBA_TOKENIZE_SPECIAL_AS_TEXT, &n_text);
    free(plain);
    ck_assert_int_eq(run("perplexity", "--model", model, "--file", path, "--json", "--no-special", NULL), 0);
    ck_assert_double_eq(json_num(json_summary(), "tokens"), (double)(n_text - 1));
    /* errors */
    ck_assert_int_eq(run("perplexity", "--model", bare, "--file", path, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "--file needs a tokenizer: the model directory has no tokenizer.json"));
    ck_assert_int_eq(run("perplexity", "--model", "130m", "--file", path, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "synthetic model"));
    write_file(path, "Hi", 2);
    ck_assert_int_eq(run("perplexity", "--model", model, "--file", path, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "nothing to score"));
    ck_assert_int_eq(run("perplexity", "--model", model, "--input", ids_path, "--no-special", NULL), 2);
    free(ids);
    mamba_tokenizer_free(tok);
}
END_TEST

/* ---- chat ---- */

/* The ids the turn-th answer's turn fed the state ("chat: fed ..." of --verbose). */
static size_t chat_fed(const char *err, int turn, int32_t *ids, size_t cap)
{
    const char *p = err;
    for (int i = 0; i <= turn; i++) {
        p = strstr(p, "chat: fed ");
        ck_assert_msg(p != NULL, "no turn %d in %s", turn, err);
        p += strlen("chat: fed ");
    }
    return parse_ids(p, ids, cap);
}

/* The prompt tokens of the turn-th turn ("chat: N prompt tokens"). */
static size_t chat_prompt_tokens(const char *err, int turn)
{
    const char *p = err, *at = NULL;
    for (int i = 0; i <= turn; i++) {
        at = strstr(p, " prompt tokens in");
        ck_assert_ptr_nonnull(at);
        p = at + 1;
    }
    while (at > err && at[-1] >= '0' && at[-1] <= '9') at--;
    return (size_t)strtoul(at, NULL, 10);
}

static char *copy_out(size_t *len)
{
    char *s = malloc(out_len + 1);
    memcpy(s, out_buf, out_len + 1);
    *len = out_len;
    return s;
}

/* The answer generate gives for the state after ids: its text up to the end of sequence (0)
 * or the first of the stop strings. */
static char *answer_after(const char *model, const mamba_tokenizer_t *tok, const int32_t *ids, size_t n, const char *n_tokens,
                          const char *stop, size_t *len)
{
    char *csv = malloc(16 * n + 1);
    ids_csv(ids, n, csv, 16 * n + 1);
    ck_assert_msg(run("generate", "--model", model, "--prompt-ids", csv, "-n", n_tokens, NULL) == 0, "%s", err_buf);
    free(csv);
    int32_t gen[64];
    size_t ng = parse_ids(out_buf, gen, 64), e = 0;
    while (e < ng && gen[e] != 0) e++;
    char *text = detokenize(tok, gen, e, len);
    *len = find_bytes(text, *len, stop, strlen(stop));
    text[*len] = 0;
    return text;
}

static const char chat_script[] = "Hello there\n/save %s\nHow are you?\n/load %s\nHow are you?\n/reset\nHello there\n/quit\nignored\n";

START_TEST(chat_through_a_pipe)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    /* the first answer is generate's for the formatted turn */
    static const char turn1[] = "User: Hello there\nAssistant:", turn2[] = "User: How are you?\nAssistant:";
    ck_assert_msg(run("generate", "--model", model, "--prompt", turn1, "-n", "12", "--stop", "\nUser:", NULL) == 0, "%s", err_buf);
    size_t a1_len, a2_len;
    char *a1 = copy_out(&a1_len);
    char script[8192], saved[4300], input[4300];
    snprintf(saved, sizeof saved, "%s/conversation.state", dir);
    snprintf(script, sizeof script, chat_script, saved, saved);
    snprintf(input, sizeof input, "%s/script.txt", dir);
    write_file(input, script, strlen(script));
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "12", "--verbose", NULL) == 0, "%s", err_buf);
    char out[8192], err[1 << 16];
    size_t got_len = out_len;
    memcpy(out, out_buf, out_len + 1);
    memcpy(err, err_buf, sizeof err);
    ck_assert_ptr_nonnull(strstr(err, "chat: format plain"));
    /* turn 1 fed its text; turn 2 only its own: the state carried turn 1 */
    int32_t f1[512], f2[512], f3[512], f4[512], both[1024];
    const size_t n1 = chat_fed(err, 0, f1, 512), n2 = chat_fed(err, 1, f2, 512);
    const size_t n3 = chat_fed(err, 2, f3, 512), n4 = chat_fed(err, 3, f4, 512);
    size_t nt;
    int32_t *t1 = tokenize(tok, turn1, strlen(turn1), 0, &nt);
    ck_assert_uint_eq(chat_prompt_tokens(err, 0), nt);
    ck_assert_mem_eq(f1, t1, nt * sizeof *t1);
    free(t1);
    int32_t *t2 = tokenize(tok, turn2, strlen(turn2), 0, &nt);
    const size_t p2 = chat_prompt_tokens(err, 1);
    ck_assert_uint_eq(p2, nt);
    ck_assert_mem_eq(f2, t2, nt * sizeof *t2);
    free(t2);
    /* the second answer is generate's after the ids turn 1 fed and turn 2's prompt */
    memcpy(both, f1, n1 * sizeof *f1);
    memcpy(both + n1, f2, p2 * sizeof *f2);
    char *a2 = answer_after(model, tok, both, n1 + p2, "12", "\nUser:", &a2_len);
    /* /load gave turn 2's state back, /reset turn 1's: the same answers, the same ids fed */
    ck_assert_uint_eq(n3, n2);
    ck_assert_mem_eq(f3, f2, n2 * sizeof *f2);
    ck_assert_uint_eq(n4, n1);
    ck_assert_mem_eq(f4, f1, n1 * sizeof *f1);
    char want[8192];
    snprintf(want, sizeof want, "%s\n%s\n%s\n%s\n", a1, a2, a2, a1);
    ck_assert_msg(got_len == strlen(want) && memcmp(out, want, got_len) == 0, "chat printed '%s', expected '%s'", out, want);
    ck_assert_ptr_nonnull(strstr(err, "chat: saved the state to"));
    ck_assert_ptr_nonnull(strstr(err, "chat: loaded the state from"));
    ck_assert_ptr_nonnull(strstr(err, "chat: the conversation is reset"));
    printf("chat (plain): '%s' then '%s'; turn 2 fed %zu ids after turn 1's %zu\n", a1, a2, n2, n1);
    /* bad commands and files go on */
    snprintf(script, sizeof script, "/frobnicate\n/load /nonexistent.state\n/load %s\n/save\nHello there\n", input);
    write_file(input, script, strlen(script));
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "12", NULL) == 0, "%s", err_buf);
    ck_assert_ptr_nonnull(strstr(err_buf, "unknown command '/frobnicate'"));
    ck_assert_ptr_nonnull(strstr(err_buf, "/nonexistent.state"));
    ck_assert_ptr_nonnull(strstr(err_buf, "but a state of this model has"));
    ck_assert_ptr_nonnull(strstr(err_buf, "/save needs a FILE"));
    snprintf(want, sizeof want, "%s\n", a1);
    assert_out(want, strlen(want), "after bad commands");
    free(a1);
    free(a2);
    mamba_tokenizer_free(tok);
}
END_TEST

/* The formats: Zephyr by name with a system message, ChatML from tokenizer_config.json. */
START_TEST(chat_formats)
{
    const char *model = text_model("m", 1);
    char input[4300];
    snprintf(input, sizeof input, "%s/script.txt", dir);
    write_file(input, "Hello there\n", 12);
    static const char zephyr[] = "<|system|>\nBe brief.<|endoftext|>\n<|user|>\nHello there<|endoftext|>\n<|assistant|>\n";
    ck_assert_msg(run("generate", "--model", model, "--prompt", zephyr, "-n", "12", "--stop", "<|endoftext|>", "--stop",
                      "<|user|>", NULL) == 0, "%s", err_buf);
    size_t len;
    char *want = copy_out(&len);
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "12", "--chat-template", "zephyr", "--system", "Be brief.", "--verbose",
                      NULL) == 0, "%s", err_buf);
    ck_assert_ptr_nonnull(strstr(err_buf, "chat: format zephyr"));
    ck_assert_uint_eq(out_len, len + 1);
    ck_assert_mem_eq(out_buf, want, len);
    free(want);
    static const char config[] =
        "{\"eos_token\": \"<|endoftext|>\", \"chat_template\": \"{% for message in messages %}{{'<|im_start|>' + "
        "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\"}";
    put_file(model, "tokenizer_config.json", config, sizeof config - 1);
    static const char chatml[] = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n";
    ck_assert_int_eq(run("generate", "--model", model, "--prompt", chatml, "-n", "12", "--stop", "<|im_end|>", NULL), 0);
    want = copy_out(&len);
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "12", "--verbose", NULL) == 0, "%s", err_buf);
    ck_assert_ptr_nonnull(strstr(err_buf, "chat: format chatml"));
    ck_assert_uint_eq(out_len, len + 1);
    ck_assert_mem_eq(out_buf, want, len);
    free(want);
    /* errors */
    ck_assert_int_eq(run("chat", "--model", model, "--chat-template", "llama", NULL), 2);
    ck_assert_ptr_nonnull(strstr(err_buf, "--chat-template 'llama'"));
    ck_assert_int_eq(run("chat", "--model", data_path(0, "models/tiny"), NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "chat needs a tokenizer: the model directory has no tokenizer.json"));
    ck_assert_int_eq(run("chat", NULL), 2);
    put_file(model, "tokenizer_config.json", "{", 1);
    ck_assert_int_eq(run("chat", "--model", model, NULL), 1);
    ck_assert_ptr_nonnull(strstr(err_buf, "tokenizer_config.json"));
}
END_TEST

/* An answer cut by a stop string that spans tokens: the state goes back to before the stop
 * began and takes the rest of the answer's text and the turn's end, so that what it has been
 * fed is exactly the conversation's text, and the next answer follows from those ids. */
START_TEST(chat_stop_rolls_back)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    char input[4300];
    snprintf(input, sizeof input, "%s/script.txt", dir);
    static const char turn1[] = "User: Hello there\nAssistant:", turn2[] = "User: How are you?\nAssistant:";
    write_file(input, "Hello there\n", 12);
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "40", "--verbose", NULL) == 0, "%s", err_buf);
    size_t len, a_len;
    char *a = copy_out(&a_len);
    ck_assert_uint_gt(a_len, 20);
    a[--a_len] = 0; /* the newline after the answer */
    int32_t fed[512];
    size_t n = chat_fed(err_buf, 0, fed, 512);
    char *text = detokenize(tok, fed, n, &len), want[8192];
    snprintf(want, sizeof want, "%s%s\n", turn1, a);
    ck_assert_str_eq(text, want);
    free(text);
    /* six bytes from the middle of the answer (on character boundaries) as a stop */
    size_t from = a_len / 2, to;
    while ((a[from] & 0xC0) == 0x80) from++;
    to = from + 6;
    while (to < a_len && (a[to] & 0xC0) == 0x80) to++;
    char stop[32];
    snprintf(stop, sizeof stop, "%.*s", (int)(to - from), a + from);
    const size_t cut = find_bytes(a, a_len, stop, strlen(stop));
    write_file(input, "Hello there\nHow are you?\n", 25);
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "40", "--verbose", "--stop", stop, NULL) == 0, "%s", err_buf);
    ck_assert_msg(out_len > cut && memcmp(out_buf, a, cut) == 0 && out_buf[cut] == '\n', "'%s' is not '%.*s' + newline",
                  out_buf, (int)cut, a);
    char *rest = strndup(out_buf + cut + 1, out_len - cut - 2); /* the second answer */
    char err[1 << 16];
    memcpy(err, err_buf, sizeof err);
    n = chat_fed(err, 0, fed, 512);
    text = detokenize(tok, fed, n, &len);
    snprintf(want, sizeof want, "%s%.*s\n", turn1, (int)cut, a);
    ck_assert_str_eq(text, want);
    free(text);
    /* the state is those ids: the second answer is generate's after them and turn 2 */
    const size_t p2 = chat_prompt_tokens(err, 1);
    int32_t f2[512];
    chat_fed(err, 1, f2, 512);
    memcpy(fed + n, f2, p2 * sizeof *f2);
    size_t a2_len;
    char *a2 = answer_after(model, tok, fed, n + p2, "40", "\nUser:", &a2_len);
    const size_t s2 = find_bytes(a2, a2_len, stop, strlen(stop));
    a2[s2] = 0;
    ck_assert_str_eq(rest, a2);
    int32_t *t2 = tokenize(tok, turn2, strlen(turn2), 0, &len);
    ck_assert_uint_eq(p2, len);
    free(t2);
    printf("chat: the stop '%s' cut the answer at %zu of %zu bytes; the state was fed exactly the text\n", stop, cut, a_len);
    free(a2);
    free(rest);
    free(a);
    mamba_tokenizer_free(tok);
}
END_TEST

/* What a pseudo-terminal running argv shows for input, the child's exit status checked. */
static size_t run_pty(const char *const *argv, const char *input, char *out, size_t cap)
{
    struct termios tio;
    memset(&tio, 0, sizeof tio);
    tio.c_iflag = ICRNL;
    tio.c_cflag = CS8 | CREAD;
    tio.c_lflag = ICANON; /* lines, no echo, output untouched */
    tio.c_cc[VEOF] = 4;
    tio.c_cc[VMIN] = 1;
    cfsetispeed(&tio, B38400);
    cfsetospeed(&tio, B38400);
    int master;
    fflush(NULL);
    const pid_t pid = forkpty(&master, NULL, &tio, NULL);
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execv(MAMBA_CLI, (char *const *)argv);
        _exit(127);
    }
    ck_assert_int_eq(write(master, input, strlen(input)), (ssize_t)strlen(input));
    size_t n = 0;
    for (;;) {
        struct pollfd p = {master, POLLIN, 0};
        ck_assert_msg(poll(&p, 1, 60000) > 0, "the chat went silent: '%s'", out);
        const ssize_t got = read(master, out + n, cap - 1 - n);
        if (got <= 0) break; /* EIO: the child is gone */
        n += (size_t)got;
        out[n] = 0;
    }
    out[n] = 0;
    close(master);
    int status;
    waitpid(pid, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "chat on a terminal: status %d: %s", status, out);
    return n;
}

START_TEST(chat_on_a_terminal)
{
    const char *model = text_model("m", 1);
    mamba_tokenizer_t *tok = neox();
    char saved[4300], script[8192];
    snprintf(saved, sizeof saved, "%s/conversation.state", dir);
    snprintf(script, sizeof script, chat_script, saved, saved);
    /* the answers the pipe gives (checked against generate by chat_through_a_pipe): a1, a2, a2, a1 */
    ck_assert_msg(run("generate", "--model", model, "--prompt", "User: Hello there\nAssistant:", "-n", "12", "--stop", "\nUser:",
                      NULL) == 0, "%s", err_buf);
    const size_t a1_len = out_len;
    char input[4300];
    snprintf(input, sizeof input, "%s/script.txt", dir);
    write_file(input, script, strlen(script));
    stdin_path = input;
    ck_assert_msg(run("chat", "--model", model, "-n", "12", NULL) == 0, "%s", err_buf);
    ck_assert_uint_ge(out_len, 2 * a1_len + 4);
    const size_t a2_len = (out_len - 2 * a1_len - 4) / 2;
    char *a1 = strndup(out_buf, a1_len), *a2 = strndup(out_buf + a1_len + 1, a2_len);
    const char *argv[] = {MAMBA_CLI, "chat", "--model", model, "-n", "12", NULL};
    static char out[1 << 16];
    run_pty(argv, script, out, sizeof out);
    ck_assert_msg(strstr(out, "mamba chat: plain turns") != NULL, "%s", out);
    /* each answer right after its prompt, the commands' notes after theirs */
    char pieces[8][512];
    snprintf(pieces[0], 512, "> %s\n", a1);
    snprintf(pieces[1], 512, "> chat: saved the state to %s", saved);
    snprintf(pieces[2], 512, "> %s\n", a2);
    snprintf(pieces[3], 512, "> chat: loaded the state from %s\n", saved);
    snprintf(pieces[4], 512, "> %s\n", a2);
    snprintf(pieces[5], 512, "> chat: the conversation is reset\n");
    snprintf(pieces[6], 512, "> %s\n", a1);
    snprintf(pieces[7], 512, "> \n");
    const char *at = out;
    for (int i = 0; i < 8; i++) {
        const char *p = strstr(at, pieces[i]);
        ck_assert_msg(p != NULL, "'%s' not found after '%s'", pieces[i], at);
        at = p + strlen(pieces[i]);
    }
    ck_assert_str_eq(at, ""); /* nothing after /quit */
    printf("chat on a terminal: %zu bytes shown, answers as through a pipe\n", strlen(out));
    free(a1);
    free(a2);
    mamba_tokenizer_free(tok);
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
    tcase_add_test(tc, convert_and_weights_q8);
    tcase_add_test(tc, scan_matches_reference);
    tcase_add_test(tc, scan_backward_matches_reference);
    tcase_add_test(tc, runtime_errors);
    tcase_add_test(tc, generate_sampling_flags);
    tcase_add_loop_test(tc, perplexity_matches_golden, 0, 2);
    tcase_add_loop_test(tc, perplexity_windows, 0, 2);
    tcase_add_test(tc, perplexity_errors);
    suite_add_tcase(s, tc);
    TCase *text = tcase_create("text");
    tcase_set_timeout(text, 120);
    tcase_add_checked_fixture(text, setup_text, teardown);
    tcase_add_test(text, generate_text_is_decoded_ids);
    tcase_add_test(text, generate_text_stop_strings);
    tcase_add_test(text, generate_text_end_of_sequence);
    tcase_add_test(text, generate_text_inputs);
    tcase_add_test(text, generate_text_errors);
    tcase_add_test(text, tokenize_round_trip);
    tcase_add_test(text, perplexity_of_a_file);
    tcase_add_test(text, chat_through_a_pipe);
    tcase_add_test(text, chat_formats);
    tcase_add_test(text, chat_stop_rolls_back);
    tcase_add_test(text, chat_on_a_terminal);
    suite_add_tcase(s, text);
    return run_suite(s, 1);
}
