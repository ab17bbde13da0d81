/* The `mamba` command: exit codes (0 ok, 1 runtime error, 2 usage error), --help, and its
 * outputs checked against the fixtures. */
#include <check.h>
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
    static const char *const cmds[] = {"info", "forward", "generate", "scan"};
    for (int i = 0; i < 4; i++) {
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
    tcase_add_test(tc, runtime_errors);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
