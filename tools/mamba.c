/* The `mamba` command: info, forward, generate, chat, perplexity, scan, tokenize, detokenize, serve,
 * train, grad, eval. */
#include <stdio.h>
#include <string.h>

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
    "\n"
    "'mamba COMMAND --help' describes each command. Exit status: 0 success, 1 runtime error,\n"
    "2 usage error.\n";

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
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "mamba: unknown command '%s'\n\n%s", cmd, usage);
    return EXIT_USAGE;
}
