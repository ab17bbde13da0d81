/* mamba forward: logits of a batch of token sequences read from a safetensors file. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba forward --model DIR|SIZE --input IN.safetensors --output OUT.safetensors\n"
    "                     [--backend B] [--threads N] [--last] [--dtype f32|f16|bf16]\n"
    "\n"
    "Read tensor 'input_ids' (batch, L) or (L), int64 or int32, run the model over every\n"
    "sequence from an empty state, and write tensor 'logits' (batch, L, vocab) as F32\n"
    "(with --last: (batch, vocab), the last position only).\n"
    "\n"
    "  --model DIR|SIZE  Hugging Face checkpoint directory, or 130m|370m|790m|1.4b|2.8b for\n"
    "                    synthetic weights (seed 0, dtype from --dtype)\n"
    "  --backend B       auto (default), cpu, opencl[:i], cuda[:i]\n"
    "  --threads N       CPU threads (default: all)\n";

int cmd_forward(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"last", no_argument, 0, 'l'},
        {"dtype", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *in = NULL, *out = NULL, *backend = NULL;
    long threads = 0;
    int last = 0;
    mamba_dtype_t dtype = MAMBA_F32;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:o:b:t:d:lh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'b': backend = optarg; break;
        case 'l': last = 1; break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &threads))
                return cli_error("forward", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
            break;
        case 'd':
            if (!cli_parse_dtype(optarg, &dtype))
                return cli_error("forward", EXIT_USAGE, "--dtype '%s': expected f32, f16 or bf16", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("forward", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!model || !in || !out) {
        fputs(usage, stderr);
        return cli_error("forward", EXIT_USAGE, "--model, --input and --output are required");
    }
    mamba_tensor_file_t *f;
    if (mamba_tensor_file_open(in, &f) != MAMBA_OK) return cli_error("forward", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    mamba_tensor_t t;
    int rc = EXIT_RUNTIME;
    int32_t *ids = NULL;
    float *logits = NULL;
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    if (mamba_tensor_file_find(f, "input_ids", &t) != MAMBA_OK) {
        cli_error("forward", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    if ((t.dtype != MAMBA_I64 && t.dtype != MAMBA_I32) || t.ndim < 1 || t.ndim > 2) {
        cli_error("forward", EXIT_RUNTIME, "%s: input_ids must be int64 or int32 of shape (batch, L) or (L), found %s with %d dims",
                  in, mamba_dtype_name(t.dtype), t.ndim);
        goto done;
    }
    size_t batch = t.ndim == 2 ? (size_t)t.shape[0] : 1, len = (size_t)t.shape[t.ndim - 1];
    if (batch == 0 || len == 0) {
        cli_error("forward", EXIT_RUNTIME, "%s: input_ids is empty (batch %zu, L %zu)", in, batch, len);
        goto done;
    }
    ids = malloc(batch * len * sizeof *ids);
    if (!ids) goto oom;
    for (size_t i = 0; i < batch * len; i++) {
        int64_t v;
        if (t.dtype == MAMBA_I64) memcpy(&v, (const char *)t.data + 8 * i, 8);
        else { int32_t w; memcpy(&w, (const char *)t.data + 4 * i, 4); v = w; }
        if (v < 0 || v > INT32_MAX) {
            cli_error("forward", EXIT_RUNTIME, "%s: input_ids[%zu] = %lld is out of range", in, i, (long long)v);
            goto done;
        }
        ids[i] = (int32_t)v;
    }
    if (!(ctx = cli_context("forward", backend, (int)threads))) goto done;
    if (!(m = cli_model("forward", ctx, model, dtype, 0))) goto done;
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    size_t V = (size_t)info.config.vocab_size, rows = last ? batch : batch * len;
    logits = malloc(rows * V * sizeof *logits);
    if (!logits) goto oom;
    double t0 = cli_now();
    if (mamba_forward(m, ids, batch, len, last ? MAMBA_LOGITS_LAST : MAMBA_LOGITS_ALL, logits) != MAMBA_OK) {
        cli_error("forward", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    double secs = cli_now() - t0;
    fprintf(stderr, "forward: batch %zu x %zu tokens on %s (%s) in %.3f s (%.0f tokens/s)\n", batch, len,
            mamba_context_backend(ctx), mamba_context_device(ctx), secs, (double)(batch * len) / secs);
    mamba_tensor_t o = {.name = "logits", .dtype = MAMBA_F32, .ndim = last ? 2 : 3, .data = logits,
                        .nbytes = rows * V * sizeof *logits};
    o.shape[0] = (int64_t)batch;
    o.shape[1] = last ? (int64_t)V : (int64_t)len;
    o.shape[2] = (int64_t)V;
    if (mamba_tensor_file_write(out, &o, 1, NULL, 0) != MAMBA_OK) {
        cli_error("forward", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    rc = EXIT_OK;
    goto done;
oom:
    cli_error("forward", EXIT_RUNTIME, "out of memory");
done:
    free(ids);
    free(logits);
    mamba_model_free(m);
    mamba_context_free(ctx);
    mamba_tensor_file_close(f);
    return rc;
}
