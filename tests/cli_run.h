/* Running the `mamba` executable from a test: its exit status, stdout and stderr. */
#ifndef MAMBA_TEST_CLI_RUN_H
#define MAMBA_TEST_CLI_RUN_H

#include <stddef.h>

extern char cli_out[1 << 16], cli_err[1 << 16]; /* the last run's stdout and stderr, NUL-terminated */
extern size_t cli_out_len;
extern const char *cli_stdin;                   /* the next run's stdin when set (then reset) */

/* Run MAMBA_CLI with the arguments args (up to a NULL), its output files in dir. */
int cli_run_argv(const char *dir, const char *const *args);
/* cli_run(dir, "forward", "--model", m, NULL): the arguments as an array, not a variadic call
 * (a NULL passed through "..." is not portably a null pointer) */
#define cli_run(dir, ...) cli_run_argv((dir), (const char *const[]){__VA_ARGS__, NULL})
/* Up to cap - 1 bytes of path into buf, NUL-terminated; the count read. */
size_t cli_slurp(const char *path, char *buf, size_t cap);

#endif
