/* The sampling flags of generate and chat. */
#include "cli_sampling.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char cli_sampling_usage[] =
    "sampling (greedy unless one of these is given):\n"
    "  --temperature T    sampling temperature > 0\n"
    "  --top-k K          sample among the K most likely tokens\n"
    "  --top-p P          sample from the smallest set of probability mass >= P, 0 < P <= 1\n"
    "  --min-p P          keep the tokens of probability >= P times the largest, 0 <= P <= 1\n"
    "  --repeat-penalty R divide (positive) or multiply (negative) the logit of each token seen\n"
    "                     in the window by R > 0 (default 1: off)\n"
    "  --presence-penalty A, --frequency-penalty F\n"
    "                     subtract A + F * count from the logit of each token seen in the\n"
    "                     window (default 0: off)\n"
    "  --penalty-last-n N the window: the last N tokens, prompt included (default 64)\n"
    "  --logit-bias ID:V,...  add V to token ID's logit first; V = -inf bans the token\n"
    "  --seed S           sampling seed (default 0)\n"
    "Order: logit bias, penalties, temperature, top-k, top-p, min-p (see mamba.h).\n";

void cli_sampling_init(cli_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->last_n = 64;
    s->temperature = -1;
    s->top_p = 1;
    s->repeat = 1;
}

void cli_sampling_free(cli_sampling *s)
{
    free(s->bias_ids);
    free(s->bias_values);
    s->bias_ids = NULL;
    s->bias_values = NULL;
    s->n_bias = 0;
}

/* "3:-inf,17:1.5" into malloc'd arrays; 0 on a malformed list. */
static int parse_bias(const char *s, int32_t **ids, float **values, size_t *n)
{
    size_t cap = 1;
    for (const char *q = s; *q; q++) cap += *q == ',';
    *ids = malloc(cap * sizeof **ids);
    *values = malloc(cap * sizeof **values);
    *n = 0;
    if (!*ids || !*values) return 0;
    const char *q = s;
    while (*q) {
        char *end;
        long id = strtol(q, &end, 10);
        if (end == q || *end != ':' || id < 0 || id > INT32_MAX) return 0;
        q = end + 1;
        float v = strtof(q, &end);
        if (end == q || isnan(v) || v == INFINITY || (*end && *end != ',') || (*end == ',' && !end[1])) return 0;
        (*ids)[*n] = (int32_t)id;
        (*values)[(*n)++] = v;
        q = *end ? end + 1 : end;
    }
    return *n > 0;
}

int cli_sampling_option(const char *cmd, int c, const char *arg, cli_sampling *s)
{
    switch (c) {
    case CLI_OPT_TEMPERATURE:
        if (cli_parse_float(arg, 1e-6, 1e6, &s->temperature)) return 1;
        return cli_error(cmd, -1, "--temperature '%s': expected a number > 0", arg);
    case CLI_OPT_TOP_K:
        if (cli_parse_long(arg, 1, 1 << 24, &s->top_k)) return 1;
        return cli_error(cmd, -1, "--top-k '%s': expected an integer >= 1", arg);
    case CLI_OPT_TOP_P:
        if (cli_parse_float(arg, 1e-9, 1, &s->top_p)) return 1;
        return cli_error(cmd, -1, "--top-p '%s': expected a number in (0, 1]", arg);
    case CLI_OPT_MIN_P:
        if (cli_parse_float(arg, 0, 1, &s->min_p)) return 1;
        return cli_error(cmd, -1, "--min-p '%s': expected a number in [0, 1]", arg);
    case CLI_OPT_REPEAT:
        if (cli_parse_float(arg, 1e-6, 1e6, &s->repeat)) return 1;
        return cli_error(cmd, -1, "--repeat-penalty '%s': expected a number > 0", arg);
    case CLI_OPT_PRESENCE:
        if (cli_parse_float(arg, -1e6, 1e6, &s->presence)) return 1;
        return cli_error(cmd, -1, "--presence-penalty '%s': expected a number", arg);
    case CLI_OPT_FREQUENCY:
        if (cli_parse_float(arg, -1e6, 1e6, &s->frequency)) return 1;
        return cli_error(cmd, -1, "--frequency-penalty '%s': expected a number", arg);
    case CLI_OPT_LAST_N:
        if (cli_parse_long(arg, 0, 1 << 24, &s->last_n)) return 1;
        return cli_error(cmd, -1, "--penalty-last-n '%s': expected an integer 0..%d", arg, 1 << 24);
    case CLI_OPT_SEED:
        if (cli_parse_long(arg, 0, 0x7fffffffL, &s->seed)) return 1;
        return cli_error(cmd, -1, "--seed '%s': expected a non-negative integer", arg);
    case CLI_OPT_BIAS:
        cli_sampling_free(s);
        if (parse_bias(arg, &s->bias_ids, &s->bias_values, &s->n_bias)) return 1;
        cli_sampling_free(s);
        return cli_error(cmd, -1, "--logit-bias '%s': expected ID:VALUE pairs separated by commas (VALUE a number or -inf)",
                         arg);
    default: return 0;
    }
}

int cli_sampling_ban_textless(cli_sampling *s, const mamba_tokenizer_t *tok, size_t vocab)
{
    size_t extra = 0;
    for (size_t id = 0; id < vocab; id++) extra += !mamba_token_bytes(tok, (int32_t)id, NULL);
    if (!extra) return 1;
    int32_t *ids = realloc(s->bias_ids, (s->n_bias + extra) * sizeof *ids);
    if (ids) s->bias_ids = ids;
    float *values = ids ? realloc(s->bias_values, (s->n_bias + extra) * sizeof *values) : NULL;
    if (values) s->bias_values = values;
    if (!ids || !values) return 0;
    for (size_t id = 0; id < vocab; id++)
        if (!mamba_token_bytes(tok, (int32_t)id, NULL)) {
            s->bias_ids[s->n_bias] = (int32_t)id;
            s->bias_values[s->n_bias++] = -INFINITY;
        }
    return 1;
}

mamba_sampler_t *cli_sampler(const char *cmd, const cli_sampling *s)
{
    mamba_sampler_params_t sp;
    mamba_sampler_params_init(&sp);
    sp.temperature = s->temperature > 0 ? (float)s->temperature
                     : (s->top_k > 0 || s->top_p < 1 || s->min_p > 0 ? 1.0f : 0.0f);
    sp.top_k = (int)s->top_k;
    sp.top_p = (float)s->top_p;
    sp.min_p = (float)s->min_p;
    sp.repeat_penalty = (float)s->repeat;
    sp.presence_penalty = (float)s->presence;
    sp.frequency_penalty = (float)s->frequency;
    sp.penalty_last_n = (int)s->last_n;
    sp.bias_ids = s->bias_ids;
    sp.bias_values = s->bias_values;
    sp.n_bias = s->n_bias;
    sp.seed = (uint64_t)s->seed;
    mamba_sampler_t *out = NULL;
    if (mamba_sampler_create(&sp, &out) != MAMBA_OK) cli_error(cmd, EXIT_USAGE, "%s", mamba_last_error(NULL));
    return out;
}
