/* mamba generate: continue a prompt, text or token ids, greedy or sampled. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_sampling.h"
#include "cli_text.h"
#include "reply.h"

static const char usage[] =
    "usage: mamba generate --model DIR|SIZE (--prompt TEXT | --prompt-file FILE | --prompt-ids 1,2,3)\n"
    "                      [-n 32] [--stop STRING]... [--ignore-eos] [--tokenizer FILE] [--no-special]\n"
    "                      [--backend B] [--threads N] [--dtype f32|f16|bf16] [sampling flags]\n"
    "\n"
    "Feed the prompt through the model, then decode -n tokens one at a time with the recurrent\n"
    "state. With --prompt or --prompt-file, print the continuation as text on stdout as each\n"
    "token comes, and stop early at the end-of-sequence token or at a --stop string; with\n"
    "--prompt-ids, print the generated token ids (space separated). Timing goes to stderr.\n"
    "In the text form, ids the tokenizer has no text for (a checkpoint's padding rows) are never\n"
    "drawn, and a newline ends the output on a terminal.\n"
    "\n"
    "  --model DIR|SIZE   Hugging Face checkpoint directory, or 130m|370m|790m|1.4b|2.8b for\n"
    "                     synthetic weights (seed 0, dtype from --dtype)\n"
    "  --prompt TEXT      the prompt as text (UTF-8); '-' reads it from stdin\n"
    "  --prompt-file FILE the prompt is the file's bytes\n"
    "  --prompt-ids IDS   the prompt as comma-separated token ids\n"
    "  -n, --tokens N     tokens to generate at most (default 32)\n"
    "  --stop STRING      stop before the first occurrence of STRING in the text (repeatable;\n"
    "                     not printed)\n"
    "  --ignore-eos       go on past the end-of-sequence token (generation_config.json's or\n"
    "                     config.json's eos_token_id, else the tokenizer's <|endoftext|>)\n"
    "  --tokenizer FILE   a tokenizer.json (default: the model directory's)\n"
    "  --no-special       special tokens written in the prompt (<|endoftext|>) are plain text\n"
    "\n";

#define MAX_STOPS 16

typedef struct gen_opts {
    const char *model, *backend, *prompt, *prompt_file, *prompt_ids, *tokenizer;
    const char *stops[MAX_STOPS];
    size_t n_stops;
    long n, threads;
    int ignore_eos, no_special;
    mamba_dtype_t dtype;
    cli_sampling samp;
} gen_opts;

/* The id form: ids in, ids out. */
static int generate_ids(const gen_opts *o, mamba_sampler_t *sampler)
{
    int32_t *ids;
    size_t n_prompt;
    if (!cli_parse_ids(o->prompt_ids, &ids, &n_prompt))
        return cli_error("generate", EXIT_USAGE, "--prompt-ids '%s': expected comma-separated non-negative integers",
                         o->prompt_ids);
    int rc = EXIT_RUNTIME;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    mamba_state_t *s = NULL;
    float *logits = NULL;
    if (!(ctx = cli_context("generate", o->backend, (int)o->threads))) goto done;
    if (!(m = cli_model("generate", ctx, o->model, o->dtype, 0))) goto done;
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
    for (long i = 0; i < o->n; i++) {
        int32_t tok;
        if (mamba_sample(sampler, logits, V, &tok) != MAMBA_OK) {
            cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
            goto done;
        }
        printf("%s%d", i ? " " : "", tok);
        if (i + 1 < o->n && mamba_step(s, &tok, logits) != MAMBA_OK) {
            cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
            goto done;
        }
    }
    printf("\n");
    double t2 = cli_now();
    fprintf(stderr, "generate: %s (%s): prompt %zu tokens in %.3f s, %ld new tokens in %.3f s (%.1f tokens/s)\n",
            mamba_context_backend(ctx), mamba_context_device(ctx), n_prompt, t1 - t0, o->n, t2 - t1,
            (double)o->n / (t2 - t1));
    rc = EXIT_OK;
done:
    free(ids);
    free(logits);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return rc;
}

/* The text form: text in, text out, streamed. */
static int generate_text(gen_opts *o)
{
    char *text = NULL;
    size_t text_len = 0;
    if (o->prompt_file || strcmp(o->prompt, "-") == 0) {
        const char *what = o->prompt_file ? "--prompt-file" : "--prompt";
        if (!cli_read_all("generate", what, o->prompt_file ? o->prompt_file : "-", &text, &text_len)) return EXIT_RUNTIME;
    } else {
        text_len = strlen(o->prompt);
        if (!(text = malloc(text_len + 1))) return cli_error("generate", EXIT_RUNTIME, "out of memory");
        memcpy(text, o->prompt, text_len + 1);
    }
    const char *what = o->prompt_file ? "--prompt-file" : "--prompt";
    int rc = EXIT_RUNTIME;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    mamba_state_t *s = NULL;
    mamba_tokenizer_t *own_tok = NULL;
    mamba_sampler_t *sampler = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    text_out out;
    text_out_init(&out, stdout, o->stops, o->n_stops);
    reply r = {0};
    if (text_len == 0) {
        cli_error("generate", EXIT_RUNTIME, "%s: the prompt is empty", what);
        goto done;
    }
    if (!cli_text_precheck("generate", what, o->model, o->tokenizer)) goto done;
    if (!(ctx = cli_context("generate", o->backend, (int)o->threads))) goto done;
    if (!(m = cli_model("generate", ctx, o->model, o->dtype, 0))) goto done;
    const mamba_tokenizer_t *tok = cli_text_tokenizer("generate", what, m, o->model, o->tokenizer, &own_tok);
    if (!tok) goto done;
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    const size_t V = (size_t)info.config.vocab_size;
    size_t n_prompt;
    if (!cli_tokenize("generate", what, tok, text, text_len, o->no_special, &ids, &n_prompt)) goto done;
    for (size_t i = 0; i < n_prompt; i++)
        if ((size_t)ids[i] >= V) {
            cli_error("generate", EXIT_RUNTIME, "%s: the text's token %zu is id %d, outside the model's vocabulary of %zu",
                      what, i, (int)ids[i], V);
            goto done;
        }
    if (!cli_sampling_ban_textless(&o->samp, tok, V) || !(logits = malloc(V * sizeof *logits))) {
        cli_error("generate", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (!(sampler = cli_sampler("generate", &o->samp))) goto done;
    r.has_eos = !o->ignore_eos && cli_eos(m, tok, &r.eos);
    if (mamba_state_create(m, 1, &s) != MAMBA_OK ||
        mamba_detok_stream_create(tok, &r.detok) != MAMBA_OK) {
        cli_error("generate", EXIT_RUNTIME, "%s", s ? mamba_last_error(NULL) : mamba_last_error(ctx));
        goto done;
    }
    if (mamba_sampler_accept(sampler, ids, n_prompt) != MAMBA_OK) {
        cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    const double t0 = cli_now();
    if (mamba_prefill(s, ids, n_prompt, logits) != MAMBA_OK) {
        cli_error("generate", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    const double t1 = cli_now();
    r.ctx = ctx;
    r.state = s;
    r.sampler = sampler;
    r.logits = logits;
    r.vocab = V;
    r.tok = tok;
    r.out = &out;
    if ((rc = reply_run("generate", &r, o->n)) != EXIT_OK) goto done;
    cli_end_line(out.len ? (unsigned char)out.text[out.len - 1] : -1);
    static const char *const ends[] = {"length", "end of sequence", "stop string"};
    fprintf(stderr,
            "generate: %s (%s): prompt %zu tokens in %.3f s (%.1f tokens/s), %zu new tokens in %.3f s "
            "(%.1f tokens/s), stopped by %s\n",
            mamba_context_backend(ctx), mamba_context_device(ctx), n_prompt, t1 - t0, (double)n_prompt / (t1 - t0),
            r.n_tokens, r.seconds, (double)r.n_tokens / r.seconds, ends[r.end]);
    if (!o->ignore_eos && !r.has_eos)
        fprintf(stderr, "generate: no end-of-sequence token known: it did not stop generation\n");
    rc = EXIT_OK;
done:
    reply_free(&r);
    text_out_free(&out);
    mamba_detok_stream_free(r.detok);
    free(text);
    free(ids);
    free(logits);
    mamba_sampler_free(sampler);
    mamba_state_free(s);
    mamba_model_free(m);
    mamba_tokenizer_free(own_tok);
    mamba_context_free(ctx);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    enum { OPT_STOP = 0x200, OPT_IGNORE_EOS, OPT_TOKENIZER, OPT_NO_SPECIAL, OPT_PROMPT_FILE, OPT_PROMPT };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt-ids", required_argument, 0, 'p'},
        {"prompt", required_argument, 0, OPT_PROMPT}, {"prompt-file", required_argument, 0, OPT_PROMPT_FILE},
        {"tokens", required_argument, 0, 'n'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, 'd'},
        {"stop", required_argument, 0, OPT_STOP}, {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"tokenizer", required_argument, 0, OPT_TOKENIZER}, {"no-special", no_argument, 0, OPT_NO_SPECIAL},
        CLI_SAMPLING_OPTIONS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    gen_opts o = {.n = 32, .dtype = MAMBA_F32};
    cli_sampling_init(&o.samp);
    int c, rc = EXIT_USAGE;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:p:n:b:t:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'p': o.prompt_ids = optarg; break;
        case OPT_PROMPT: o.prompt = optarg; break;
        case OPT_PROMPT_FILE: o.prompt_file = optarg; break;
        case 'b': o.backend = optarg; break;
        case OPT_TOKENIZER: o.tokenizer = optarg; break;
        case OPT_IGNORE_EOS: o.ignore_eos = 1; break;
        case OPT_NO_SPECIAL: o.no_special = 1; break;
        case OPT_STOP:
            if (!*optarg) {
                cli_error("generate", EXIT_USAGE, "--stop: the string is empty");
                goto done;
            }
            if (o.n_stops == MAX_STOPS) {
                cli_error("generate", EXIT_USAGE, "--stop: at most %d strings", MAX_STOPS);
                goto done;
            }
            o.stops[o.n_stops++] = optarg;
            break;
        case 'n':
            if (!cli_parse_long(optarg, 1, 1 << 24, &o.n)) {
                cli_error("generate", EXIT_USAGE, "-n '%s': expected an integer 1..%d", optarg, 1 << 24);
                goto done;
            }
            break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &o.threads)) {
                cli_error("generate", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
                goto done;
            }
            break;
        case 'd':
            if (!cli_parse_dtype(optarg, &o.dtype)) {
                cli_error("generate", EXIT_USAGE, "--dtype '%s': expected f32, f16 or bf16", optarg);
                goto done;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            fputs(cli_sampling_usage, stdout);
            rc = EXIT_OK;
            goto done;
        default: {
            const int r = cli_sampling_option("generate", c, optarg, &o.samp);
            if (r == 1) break;
            if (r == 0) fputs(usage, stderr);
            goto done;
        }
        }
    }
    if (optind < argc) {
        cli_error("generate", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
        goto done;
    }
    const int n_prompts = !!o.prompt + !!o.prompt_file + !!o.prompt_ids;
    if (!o.model || n_prompts != 1) {
        fputs(usage, stderr);
        cli_error("generate", EXIT_USAGE, n_prompts > 1 ? "--prompt, --prompt-file and --prompt-ids exclude each other"
                                                       : "--model and one of --prompt, --prompt-file, --prompt-ids are required");
        goto done;
    }
    if (o.prompt_ids && (o.n_stops || o.tokenizer || o.no_special)) {
        cli_error("generate", EXIT_USAGE, "--stop, --tokenizer and --no-special apply to text prompts only");
        goto done;
    }
    /* the flags are checked before anything is loaded */
    mamba_sampler_t *sampler = cli_sampler("generate", &o.samp);
    if (!sampler) goto done;
    if (o.prompt_ids) {
        rc = generate_ids(&o, sampler);
    } else {
        mamba_sampler_free(sampler);
        sampler = NULL;
        rc = generate_text(&o);
    }
    mamba_sampler_free(sampler);
done:
    cli_sampling_free(&o.samp);
    return rc;
}
