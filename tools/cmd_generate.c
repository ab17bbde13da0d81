/* mamba generate: continue a prompt of token ids, greedy or sampled. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba generate --model DIR|SIZE --prompt-ids 1,2,3 [-n 32] [--backend B]\n"
    "                      [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
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
    "  --seed S           sampling seed (default 0)\n";

int cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt-ids", required_argument, 0, 'p'},
        {"tokens", required_argument, 0, 'n'}, {"backend", required_argument, 0, 'b'},
        {"temperature", required_argument, 0, 'T'}, {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'P'}, {"seed", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *backend = NULL;
    long n = 32, top_k = 0, seed = 0, threads = 0;
    double temperature = -1, top_p = 1;
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
    int rc = EXIT_RUNTIME;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    mamba_state_t *s = NULL;
    mamba_sampler_t *sampler = NULL;
    float *logits = NULL;
    mamba_sampler_params_t sp;
    mamba_sampler_params_init(&sp);
    sp.temperature = temperature > 0 ? (float)temperature : (top_k > 0 || top_p < 1 ? 1.0f : 0.0f);
    sp.top_k = (int)top_k;
    sp.top_p = (float)top_p;
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
    free(logits);
    mamba_sampler_free(sampler);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return rc;
}
