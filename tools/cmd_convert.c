/* mamba convert: a checkpoint directory rewritten with its weights quantized (8-bit Q8_0), so that
 * later loads skip the quantization and map a file half the size of bf16. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba convert --weights q8 --model DIR --out DIR2 [--backend B] [--threads N]\n"
    "\n"
    "Load the checkpoint in DIR with its weights quantized to 8 bits (Q8_0: int8 values and an\n"
    "fp16 scale a block of 32; in_proj, out_proj, the embedding and lm_head) and write DIR2:\n"
    "model.safetensors (the int8 values as NAME, the scales as NAME.scale, metadata\n"
    "\"libmamba.weights\": \"q8_0\"), with config.json and the tokenizer files copied. DIR2 is\n"
    "created if absent and must not be DIR.\n";

/* Copy DIR/name to DIR2/name when it exists; 0 on success or absence. */
static int copy_if_present(const char *from_dir, const char *to_dir, const char *name)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/%s", from_dir, name);
    snprintf(to, sizeof to, "%s/%s", to_dir, name);
    FILE *in = fopen(from, "rb");
    if (!in) return 0;
    FILE *out = fopen(to, "wb");
    int rc = out ? 0 : -1;
    char buf[65536];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) rc = -1;
    if (ferror(in)) rc = -1;
    fclose(in);
    if (out && fclose(out) != 0) rc = -1;
    if (rc) cli_error("convert", EXIT_RUNTIME, "cannot copy %s to %s", from, to);
    return rc;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option opts[] = {
        {"weights", required_argument, 0, 'w'}, {"model", required_argument, 0, 'm'},
        {"out", required_argument, 0, 'o'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *weights = NULL, *model = NULL, *out = NULL, *backend = "cpu";
    long threads = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': weights = optarg; break;
        case 'm': model = optarg; break;
        case 'o': out = optarg; break;
        case 'b': backend = optarg; break;
        case 't':
            if (!cli_parse_long(optarg, 0, 4096, &threads))
                return cli_error("convert", EXIT_USAGE, "--threads '%s': expected 0..4096", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("convert", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!weights || strcmp(weights, "q8") != 0)
        return cli_error("convert", EXIT_USAGE, "--weights %s: expected q8", weights ? weights : "(missing)");
    if (!model || !out) return cli_error("convert", EXIT_USAGE, "--model and --out are required");
    struct stat a, b;
    if (stat(model, &a) != 0 || !S_ISDIR(a.st_mode))
        return cli_error("convert", EXIT_RUNTIME, "--model %s: not a checkpoint directory", model);
    if (stat(out, &b) != 0 && mkdir(out, 0777) != 0)
        return cli_error("convert", EXIT_RUNTIME, "--out %s: cannot create the directory", out);
    if (stat(out, &b) != 0 || !S_ISDIR(b.st_mode))
        return cli_error("convert", EXIT_RUNTIME, "--out %s: not a directory", out);
    if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return cli_error("convert", EXIT_USAGE, "--out %s is the --model directory", out);
    cli_weights = MAMBA_WEIGHTS_Q8;
    mamba_context_t *ctx = cli_context("convert", backend, (int)threads);
    if (!ctx) return EXIT_RUNTIME;
    int rc = EXIT_RUNTIME;
    mamba_model_t *m = cli_model("convert", ctx, model, MAMBA_F32, 0);
    if (m) {
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        if (mamba_model_save_weights(m, path) != MAMBA_OK) {
            cli_error("convert", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        } else {
            static const char *const keep[] = {"config.json", "tokenizer.json", "tokenizer_config.json",
                                               "special_tokens_map.json", "generation_config.json"};
            rc = EXIT_OK;
            for (size_t i = 0; i < sizeof keep / sizeof keep[0] && rc == EXIT_OK; i++)
                if (copy_if_present(model, out, keep[i]) != 0) rc = EXIT_RUNTIME;
            mamba_model_info_t info;
            mamba_model_info(m, &info);
            if (rc == EXIT_OK)
                printf("%s: %.1f MiB of %s weights\n", path, (double)info.weight_bytes / (1 << 20),
                       mamba_dtype_name(info.dtype));
        }
        mamba_model_free(m);
    }
    mamba_context_free(ctx);
    return rc;
}
