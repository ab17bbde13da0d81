/* mamba grad: the loss and the gradient of every parameter of a checkpoint on one batch,
 * written as tests/data/grads/model_tiny.safetensors holds them (Hugging Face's loss). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba grad --model DIR --input IDS.safetensors --output GRADS.safetensors\n"
    "                  [--backend B] [--threads N]\n"
    "\n"
    "Reads input_ids (rows, L) and labels (same shape; absent: input_ids) as Hugging Face's\n"
    "MambaForCausalLM takes them: position t is scored against labels[t + 1], -100 ignored.\n"
    "Writes loss (float64, the mean token cross-entropy) and grad.<parameter name> (float32)\n"
    "for every parameter, under Hugging Face's names.\n"
    "\n"
    "  --model DIR     a checkpoint directory (any stored dtype; trained in fp32)\n"
    "  --input FILE    the safetensors file holding input_ids and labels\n"
    "  --output FILE   where the loss and gradients go (written atomically)\n"
    "  --backend B     auto (default), cpu, opencl[:i], cuda[:i]\n"
    "  --threads N     CPU threads (default: all)\n";

/* labels shifted as the trainer takes them: position t's target is HF's labels[t + 1]. */
static int32_t *shift_labels(const int32_t *hf, size_t rows, size_t len, size_t *counted)
{
    int32_t *out = malloc(rows * len * sizeof *out);
    if (!out) return NULL;
    *counted = 0;
    for (size_t b = 0; b < rows; b++)
        for (size_t t = 0; t < len; t++) {
            const int32_t v = t + 1 < len ? hf[b * len + t + 1] : -100;
            out[b * len + t] = v < 0 ? -100 : v;
            *counted += v >= 0;
        }
    return out;
}

static int write_grads(const char *path, mamba_trainer_t *tr, mamba_context_t *ctx, double loss)
{
    const size_t n = mamba_trainer_param_count(tr);
    mamba_tensor_t *t = calloc(n + 1, sizeof *t);
    char **names = calloc(n, sizeof *names);
    float **bufs = calloc(n, sizeof *bufs);
    int rc = EXIT_RUNTIME;
    if (!t || !names || !bufs) {
        cli_error("grad", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    t[0] = (mamba_tensor_t){.name = "loss", .dtype = MAMBA_F64, .ndim = 1, .shape = {1}, .data = &loss,
                            .nbytes = sizeof loss};
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t numel;
        int ndim;
        int64_t shape[MAMBA_MAX_DIMS] = {0};
        mamba_trainer_param_info(tr, i, &name, &numel, &ndim, shape);
        const size_t len = strlen(name) + 6;
        if (!(names[i] = malloc(len)) || !(bufs[i] = malloc((numel ? numel : 1) * sizeof(float)))) {
            cli_error("grad", EXIT_RUNTIME, "out of memory");
            goto done;
        }
        snprintf(names[i], len, "grad.%s", name);
        if (mamba_trainer_read_grad(tr, name, bufs[i], numel) != MAMBA_OK) {
            cli_error("grad", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
            goto done;
        }
        t[i + 1] = (mamba_tensor_t){.name = names[i], .dtype = MAMBA_F32, .ndim = ndim, .data = bufs[i],
                                    .nbytes = numel * sizeof(float)};
        memcpy(t[i + 1].shape, shape, sizeof shape);
    }
    if (mamba_tensor_file_write(path, t, n + 1, NULL, 0) != MAMBA_OK) {
        cli_error("grad", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    rc = EXIT_OK;
done:
    for (size_t i = 0; names && bufs && i < n; i++) {
        free(names[i]);
        free(bufs[i]);
    }
    free(names);
    free(bufs);
    free(t);
    return rc;
}

int cmd_grad(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *in = NULL, *out = NULL, *backend = NULL;
    long threads = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:o:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'b': backend = optarg; break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &threads))
                return cli_error("grad", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("grad", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!model || !in || !out) {
        fputs(usage, stderr);
        return cli_error("grad", EXIT_USAGE, "--model, --input and --output are required");
    }
    mamba_context_t *ctx = NULL;
    mamba_model_t *m = NULL;
    mamba_trainer_t *tr = NULL;
    mamba_tensor_file_t *f = NULL;
    int32_t *ids = NULL, *hf = NULL, *labels = NULL;
    size_t rows, len, lrows, llen, counted;
    int rc = EXIT_RUNTIME;
    if (!(ctx = cli_context("grad", backend, (int)threads))) goto done;
    if (mamba_model_load(ctx, model, &m) != MAMBA_OK) {
        cli_error("grad", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    if (mamba_tensor_file_open(in, &f) != MAMBA_OK) {
        cli_error("grad", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    const int64_t V = info.config.vocab_size;
    if (!cli_read_i32("grad", in, f, "input_ids", 0, V, &ids, &rows, &len)) goto done;
    mamba_tensor_t lt;
    if (mamba_tensor_file_find(f, "labels", &lt) == MAMBA_OK) {
        if (!cli_read_i32("grad", in, f, "labels", -100, V, &hf, &lrows, &llen)) goto done;
        if (lrows != rows || llen != len) {
            cli_error("grad", EXIT_RUNTIME, "%s: labels is (%zu, %zu), expected input_ids' shape (%zu, %zu)", in, lrows,
                      llen, rows, len);
            goto done;
        }
    }
    if (!(labels = shift_labels(hf ? hf : ids, rows, len, &counted))) {
        cli_error("grad", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (counted == 0) {
        cli_error("grad", EXIT_RUNTIME, "%s: every label is ignored: no loss to differentiate", in);
        goto done;
    }
    if (mamba_trainer_create_from_model(m, NULL, &tr) != MAMBA_OK) {
        cli_error("grad", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    mamba_model_free(m); /* the trainer holds its own fp32 copy */
    m = NULL;
    mamba_train_stats_t s;
    const double t0 = cli_now();
    if (mamba_trainer_accumulate(tr, ids, labels, rows, len, &s) != MAMBA_OK) {
        cli_error("grad", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    if ((rc = write_grads(out, tr, ctx, s.loss)) != EXIT_OK) goto done;
    printf("loss %.10g over %llu tokens\n", s.loss, (unsigned long long)s.tokens);
    fprintf(stderr, "grad: %zu x %zu tokens on %s (%s) in %.3f s\n", rows, len, mamba_context_backend(ctx),
            mamba_context_device(ctx), cli_now() - t0);
done:
    free(ids);
    free(hf);
    free(labels);
    mamba_tensor_file_close(f);
    mamba_trainer_free(tr);
    mamba_model_free(m);
    mamba_context_free(ctx);
    return rc;
}
