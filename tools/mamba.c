/* The `mamba` command: info, forward, generate, chat, perplexity, scan, tokenize, detokenize, serve,
 * train, grad, eval. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba COMMAND [OPTIONS]\n"
    "\n"
    "Run Mamba selective state space models on CPUs, OpenCL devices and CUDA GPUs.\n"
    "\n"
    "commands:\n"
    "  info       list the backends and devices found\n"
    "  forward    logits of token sequences (safetensors in, safetensors out)\n"
    "  generate   continue a prompt (text or token ids)\n"
    "  chat       a conversation on the terminal\n"
    "  perplexity the perplexity of a text or of token ids (safetensors in)\n"
    "  scan       run the selective scan op alone on tensors from a file\n"
    "  tokenize   the token ids of a text\n"
    "  detokenize the text of token ids\n"
    "  serve      an OpenAI-compatible HTTP server with continuous batching\n"
    "  train      train a model: the paper's synthetic tasks or a tokenized text\n"
    "  grad       the loss and every parameter's gradient on one batch\n"
    "  eval       a trained model's accuracy on a synthetic task at many lengths\n"
    "  convert    a checkpoint with its weights quantized to 8 bits (--weights q8)\n"
    "\n"
    "The commands that load a model take --weights q8: in_proj, out_proj, the embedding and\n"
    "lm_head quantized to 8 bits at load (Q8_0; as MAMBA_WEIGHTS=q8).\n"
    "\n"
    "'mamba COMMAND --help' describes each command. Exit status: 0 success, 1 runtime error,\n"
    "2 usage error.\n";

/* Take --weights q8 (--weights=q8) out of the arguments: the option every command that loads a
 * model shares. Returns the new argc, or -1 after printing an error. */
static int take_weights(int argc, char **argv)
{
    int k = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--weights") == 0 && i + 1 < argc) v = argv[++i];
        else if (strncmp(argv[i], "--weights=", 10) == 0) v = argv[i] + 10;
        else if (strcmp(argv[i], "--") == 0) {
            while (i < argc) argv[k++] = argv[i++];
            break;
        } else {
            argv[k++] = argv[i];
            continue;
        }
        if (strcasecmp(v, "q8") != 0 && strcasecmp(v, "stored") != 0) {
            fprintf(stderr, "mamba: --weights %s: expected q8 or stored\n", v);
            return -1;
        }
        cli_weights = strcasecmp(v, "q8") == 0 ? MAMBA_WEIGHTS_Q8 : MAMBA_WEIGHTS_STORED;
    }
    argv[k] = NULL;
    return k;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("mamba %s\n", mamba_version());
        return EXIT_OK;
    }
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"info", cmd_info}, {"forward", cmd_forward}, {"generate", cmd_generate}, {"perplexity", cmd_perplexity},
        {"scan", cmd_scan}, {"tokenize", cmd_tokenize}, {"detokenize", cmd_detokenize},
        {"chat", cmd_chat}, {"serve", cmd_serve}, {"train", cmd_train}, {"grad", cmd_grad}, {"eval", cmd_eval},
        {"convert", cmd_convert},
    };
    if (strcmp(cmd, "convert") != 0 && (argc = take_weights(argc, argv)) < 0) return EXIT_USAGE;
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "mamba: unknown command '%s'\n\n%s", cmd, usage);
    return EXIT_USAGE;
}
