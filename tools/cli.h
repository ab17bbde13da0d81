/* Shared pieces of the `mamba` command's subcommands. */
#ifndef MAMBA_CLI_H
#define MAMBA_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

int cmd_info(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_scan(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_convert(int argc, char **argv);

/* Print "mamba CMD: message" to stderr; return code. */
int cli_error(const char *cmd, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int cli_parse_long(const char *s, long lo, long hi, long *out);
int cli_parse_float(const char *s, double lo, double hi, double *out);
int cli_parse_dtype(const char *s, mamba_dtype_t *out);
/* Parse "1,2,3" into a malloc'd array. Returns 0 on a malformed list. */
int cli_parse_ids(const char *s, int32_t **ids, size_t *n);
/* The weights of the models cli_context's contexts load: --weights q8 of any command, which
 * main() takes out of the arguments (MAMBA_WEIGHTS=q8 too). */
extern mamba_weights_t cli_weights;
/* A context on backend (NULL: auto) with n_threads. Returns NULL after printing the error. */
mamba_context_t *cli_context(const char *cmd, const char *backend, int n_threads);
/* A model from a checkpoint directory or a standard size name (synthetic weights). */
mamba_model_t *cli_model(const char *cmd, mamba_context_t *ctx, const char *spec, mamba_dtype_t dtype, uint64_t seed);
/* Copy a tensor of any float dtype into a malloc'd f32 array. */
float *cli_tensor_f32(const mamba_tensor_t *t);
double cli_now(void);
struct option;
/* The long name of the option whose val is c in a getopt_long table ("?" if none). */
const char *cli_option_name(const struct option *opts, int c);
/* Integer tensor name of f (path names it in messages) as malloc'd int32 (rows, len): int64 or
 * int32 of shape (L) or (rows, L), every value in [lo, hi). 0 after printing the error. */
int cli_read_i32(const char *cmd, const char *path, const mamba_tensor_file_t *f, const char *name, int64_t lo,
                 int64_t hi, int32_t **out, size_t *rows, size_t *len);

#endif
