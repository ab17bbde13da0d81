/* Running the `mamba` executable from a test (cli_run.h). */
#include <check.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_run.h"

#ifndef MAMBA_CLI
#error "MAMBA_CLI must name the mamba executable"
#endif

char cli_out[1 << 16], cli_err[1 << 16];
size_t cli_out_len;
const char *cli_stdin;

size_t cli_slurp(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    size_t n = fp ? fread(buf, 1, cap - 1, fp) : 0;
    if (fp) fclose(fp);
    buf[n] = 0;
    return n;
}

int cli_run_argv(const char *dir, const char *const *args)
{
    const char *argv[48] = {MAMBA_CLI};
    int n = 1;
    for (const char *const *a = args; *a && n < 47; a++) argv[n++] = *a;
    argv[n] = NULL;
    char out_path[4200], err_path[4200];
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    fflush(NULL); /* else the child's freopen writes this process's buffered output again */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!freopen(out_path, "w", stdout) || !freopen(err_path, "w", stderr)) _exit(127);
        if (!freopen(cli_stdin ? cli_stdin : "/dev/null", "r", stdin)) _exit(127);
        execv(MAMBA_CLI, (char *const *)argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    cli_stdin = NULL;
    cli_out_len = cli_slurp(out_path, cli_out, sizeof cli_out);
    cli_slurp(err_path, cli_err, sizeof cli_err);
    ck_assert_msg(WIFEXITED(status), "%s did not exit normally", argv[1]);
    return WEXITSTATUS(status);
}
