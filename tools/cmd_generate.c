/* mamba generate: continue a prompt of token ids, greedy or sampled. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba generate --model DIR|SIZE --prompt-ids 1,2,3 [-n 32] [--backend B]\n"
    "                      [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
    "                      [--min-p P] [--repeat-penalty R] [--presence-penalty A]\n"
    "                      [--frequency-penalty F] [--penalty-last-n N] [--logit-bias ID:V,...]\n"
    "                      [--threads N] [--dtype f32|f16|bf16]\n"
    "\n"
    "Feed the prompt through the model, then decode -n tokens one at a time with the\n"
    "recurrent state, and print the generated token ids (space separated) on stdout. Greedy\n"
    "(argmax) unless a sampling flag is given. Timing goes to stderr.\n"
    "\n"
    "  --model DIR|SIZE   Hugging Face checkpoint directory, or 130m|370m|790m|1.4b|2.8b for\n"
    "                     synthetic weights (seed 0, dtype from --dtype)\n"
    "  -n, --tokens N     tokens to generate (default 32)\n"
    "  --temperature T    sampling temperature > 0 (default: greedy)\n"
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
    "\n"
    "Order: logit bias, penalties, temperature, top-k, top-p, min-p (see mamba.h).\n";

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

int cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt-ids", required_argument, 0, 'p'},
        {"tokens", required_argument, 0, 'n'}, {"backend", required_argument, 0, 'b'},
        {"temperature", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'P'}, {"seed", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, 'd'},
        {"min-p", required_argument, 0, 'M'}, {"repeat-penalty", required_argument, 0, 'R'},
        {"presence-penalty", required_argument, 0, 'A'}, {"frequency-penalty", required_argument, 0, 'F'},
        {"penalty-last-n", required_argument, 0, 'L'}, {"logit-bias", required_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *backend = NULL;
    const char *bias = NULL;
    long n = 32, top_k = 0, seed = 0, threads = 0, last_n = 64;
    double temperature = -1, top_p = 1, min_p = 0, repeat = 1, presence = 0, frequency = 0;
    mamba_dtype_t dtype = MAMBA_F32;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:b:t:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'b': backend = optarg; break;
        case 'n':
            if (!cli_parse_long(optarg, 1, 1 << 24, &n))
                return cli_error("generate", EXIT_USAGE, "-n '%s': expected an integer 1..%d", optarg, 1 << 24);
            break;
        case 'T':
            if (!cli_parse_float(optarg, 1e-6, 1e6, &temperature))
                return cli_error("generate", EXIT_USAGE, "--temperature '%s': expected a number > 0", optarg);
            break;
        case 'k':
            if (!cli_parse_long(optarg, 1, 1 << 24, &top_k))
                return cli_error("generate", EXIT_USAGE, "--top-k '%s': expected an integer >= 1", optarg);
            break;
        case 'P':
            if (!cli_parse_float(optarg, 1e-9, 1, &top_p))
                return cli_error("generate", EXIT_USAGE, "--top-p '%s': expected a number in (0, 1]", optarg);
            break;
        case 'M':
            if (!cli_parse_float(optarg, 0, 1, &min_p))
                return cli_error("generate", EXIT_USAGE, "--min-p '%s': expected a number in [0, 1]", optarg);
            break;
        case 'R':
            if (!cli_parse_float(optarg, 1e-6, 1e6, &repeat))
                return cli_error("generate", EXIT_USAGE, "--repeat-penalty '%s': expected a number > 0", optarg);
            break;
        case 'A':
            if (!cli_parse_float(optarg, -1e6, 1e6, &presence))
                return cli_error("generate", EXIT_USAGE, "--presence-penalty '%s': expected a number", optarg);
            break;
        case 'F':
            if (!cli_parse_float(optarg, -1e6, 1e6, &frequency))
                return cli_error("generate", EXIT_USAGE, "--frequency-penalty '%s': expected a number", optarg);
            break;
        case 'L':
            if (!cli_parse_long(optarg, 0, 1 << 24, &last_n))
                return cli_error("generate", EXIT_USAGE, "--penalty-last-n '%s': expected an integer 0..%d", optarg, 1 << 24);
            break;
        case 'B': bias = optarg; break;
        case 's':
            if (!cli_parse_long(optarg, 0, 0x7fffffffL, &seed))
                return cli_error("generate", EXIT_USAGE, "--seed '%s': expected a non-negative integer", optarg);
            break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &threads))
                return cli_error("generate", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
            break;
        case 'd':
            if (!cli_parse_dtype(optarg, &dtype))
                return cli_error("generate", EXIT_USAGE, "--dtype '%s': expected f32, f16 or bf16", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("generate", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!model || !prompt) {
        fputs(usage, stderr);
        return cli_error("generate", EXIT_USAGE, "--model and --prompt-ids are required");
    }
    int32_t *ids;
    size_t n_prompt;
    if (!cli_parse_ids(prompt, &ids, &n_prompt))
        return cli_error("generate", EXIT_USAGE, "--prompt-ids '%s': expected comma-separated non-negative integers",
                         prompt);
    int32_t *bias_ids = NULL;
    float *bias_values = NULL;
    size_t n_bias = 0;
    if (bias && !parse_bias(bias, &bias_ids, &bias_values, &n_bias)) {
        free(ids);
        free(bias_ids);
        free(bias_values);
        return cli_error("generate", EXIT_USAGE, "--logit-bias '%s': expected ID:VALUE pairs separated by commas "
                         "(VALUE a number or -inf)", bias);
    }
    int rc = EXIT_RUNTIME;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    mamba_state_t *s = NULL;
    mamba_sampler_t *sampler = NULL;
    float *logits = NULL;
    mamba_sampler_params_t sp;
    mamba_sampler_params_init(&sp);
    sp.temperature = temperature > 0 ? (float)temperature : (top_k > 0 || top_p < 1 || min_p > 0 ? 1.0f : 0.0f);
    sp.top_k = (int)top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repeat_penalty = (float)repeat;
    sp.presence_penalty = (float)presence;
    sp.frequency_penalty = (float)frequency;
    sp.penalty_last_n = (int)last_n;
    sp.bias_ids = bias_ids;
    sp.bias_values = bias_values;
    sp.n_bias = n_bias;
    sp.seed = (uint64_t)seed;
    if (mamba_sampler_create(&sp, &sampler) != MAMBA_OK) {
        cli_error("generate", EXIT_USAGE, "%s", mamba_last_error(NULL));
        rc = EXIT_USAGE;
        goto done;
    }
    if (!(ctx = cli_context("generate", backend, (int)threads))) goto done;
    if (!(m = cli_model("generate", ctx, model, dtype, 0))) goto done;
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    const size_t V = (size_t)info.config.vocab_size;
    logits = malloc(V * sizeof *logits);
    if (!logits) {
        cli_error("generate", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (mamba_state_create(m, 1, &s) != MAMBA_OK) {
        cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    if (mamba_sampler_accept(sampler, ids, n_prompt) != MAMBA_OK) {
        cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    double t0 = cli_now();
    if (mamba_prefill(s, ids, n_prompt, logits) != MAMBA_OK) {
        cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    double t1 = cli_now();
    for (long i = 0; i < n; i++) {
        int32_t tok;
        if (mamba_sample(sampler, logits, V, &tok) != MAMBA_OK) {
            cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
            goto done;
        }
        printf("%s%d", i ? " " : "", tok);
        if (i + 1 < n && mamba_step(s, &tok, logits) != MAMBA_OK) {
            cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
            goto done;
        }
    }
    printf("\n");
    double t2 = cli_now();
    fprintf(stderr, "generate: %s (%s): prompt %zu tokens in %.3f s, %ld new tokens in %.3f s (%.1f tokens/s)\n",
            mamba_context_backend(ctx), mamba_context_device(ctx), n_prompt, t1 - t0, n, t2 - t1,
            (double)n / (t2 - t1));
    rc = EXIT_OK;
done:
    free(ids);
    free(bias_ids);
    free(bias_values);
    free(logits);
    mamba_sampler_free(sampler);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return rc;
}
