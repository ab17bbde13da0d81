/* The sampling flags that generate and chat share: their options, their parsing and the
 * sampler they make. */
#ifndef MAMBA_CLI_SAMPLING_H
#define MAMBA_CLI_SAMPLING_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

enum {
    CLI_OPT_TEMPERATURE = 0x100, CLI_OPT_TOP_K, CLI_OPT_TOP_P, CLI_OPT_SEED, CLI_OPT_MIN_P, CLI_OPT_REPEAT,
    CLI_OPT_PRESENCE, CLI_OPT_FREQUENCY, CLI_OPT_LAST_N, CLI_OPT_BIAS,
};

/* Entries of a getopt_long table. */
#define CLI_SAMPLING_OPTIONS                                                                              \
    {"temperature", required_argument, 0, CLI_OPT_TEMPERATURE}, {"top-k", required_argument, 0, CLI_OPT_TOP_K}, \
    {"top-p", required_argument, 0, CLI_OPT_TOP_P}, {"seed", required_argument, 0, CLI_OPT_SEED},                \
    {"min-p", required_argument, 0, CLI_OPT_MIN_P}, {"repeat-penalty", required_argument, 0, CLI_OPT_REPEAT},    \
    {"presence-penalty", required_argument, 0, CLI_OPT_PRESENCE},                                                \
    {"frequency-penalty", required_argument, 0, CLI_OPT_FREQUENCY},                                              \
    {"penalty-last-n", required_argument, 0, CLI_OPT_LAST_N}, {"logit-bias", required_argument, 0, CLI_OPT_BIAS}

/* Their description, for a command's --help. */
extern const char cli_sampling_usage[];

typedef struct cli_sampling {
    long top_k, seed, last_n;
    double temperature, top_p, min_p, repeat, presence, frequency;
    int32_t *bias_ids;
    float *bias_values;
    size_t n_bias;
} cli_sampling;

void cli_sampling_init(cli_sampling *s);
void cli_sampling_free(cli_sampling *s);
/* Take option c (a CLI_OPT_*) with its argument: 1 taken, 0 not a sampling option, -1 a bad
 * value (the error printed as cmd's). */
int cli_sampling_option(const char *cmd, int c, const char *arg, cli_sampling *s);
/* Ban (bias -inf) the ids of [0, vocab) that tok has no text for (a model's padded rows), so
 * that text output never meets one. 0 when out of memory. */
int cli_sampling_ban_textless(cli_sampling *s, const mamba_tokenizer_t *tok, size_t vocab);
/* The sampler of the flags (seed: theirs); NULL after printing the error. */
mamba_sampler_t *cli_sampler(const char *cmd, const cli_sampling *s);

#endif
