/* mamba tokenize and mamba detokenize: text to token ids and back with a checkpoint's
 * tokenizer.json (or any other). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_text.h"

static const char tokenize_usage[] =
    "usage: mamba tokenize (--model DIR | --tokenizer FILE) (TEXT | --file FILE) [--pieces] [--no-special]\n"
    "\n"
    "Print the token ids of TEXT (or of the bytes of FILE, '-' for stdin) comma-separated on one\n"
    "line, as Hugging Face tokenizers' encode(text, add_special_tokens=False) gives them.\n"
    "\n"
    "  --model DIR        a checkpoint directory: its tokenizer.json\n"
    "  --tokenizer FILE   a tokenizer.json (or a directory holding one)\n"
    "  --pieces           one token a line instead: its id, a tab, and the bytes it stands for as\n"
    "                     a JSON string (\\xNN for a byte that is not part of complete UTF-8)\n"
    "  --no-special       special tokens written in the text (<|endoftext|>) are plain text\n";

static const char detokenize_usage[] =
    "usage: mamba detokenize (--model DIR | --tokenizer FILE) ID,ID,...\n"
    "\n"
    "Print the text of the token ids (as Hugging Face's decode(ids, skip_special_tokens=False):\n"
    "bytes that are not valid UTF-8 become U+FFFD). A newline is added only on a terminal.\n"
    "\n"
    "  --model DIR        a checkpoint directory: its tokenizer.json\n"
    "  --tokenizer FILE   a tokenizer.json (or a directory holding one)\n";

/* The length of the valid UTF-8 sequence at s[0, n), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    const unsigned char b = s[0];
    if (b < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) { need = 3; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
    else if (b >= 0xF0 && b <= 0xF4) { need = 4; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
    else return 0;
    if (n < need || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < need; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return need;
}

static void print_piece(const unsigned char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        const size_t k = utf8_seq(s + i, n - i);
        if (k == 0) {
            printf("\\x%02X", c);
            i++;
            continue;
        }
        if (k > 1) fwrite(s + i, 1, k, stdout);
        else if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7F) printf("\\u%04X", c);
        else putchar(c);
        i += k;
    }
    putchar('"');
}

/* Shared option handling; returns -1 to go on, else the exit status. */
static int parse(const char *cmd, const char *usage, int argc, char **argv, const char **model, const char **tokenizer,
                 const char **file, int *pieces, int *no_special)
{
    enum { OPT_TOKENIZER = 0x200, OPT_FILE, OPT_PIECES, OPT_NO_SPECIAL };
    static const struct option tokenize_opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"file", required_argument, 0, OPT_FILE}, {"pieces", no_argument, 0, OPT_PIECES},
        {"no-special", no_argument, 0, OPT_NO_SPECIAL}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    static const struct option detokenize_opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const struct option *opts = strcmp(cmd, "tokenize") == 0 ? tokenize_opts : detokenize_opts;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': *model = optarg; break;
        case OPT_TOKENIZER: *tokenizer = optarg; break;
        case OPT_FILE: *file = optarg; break;
        case OPT_PIECES: *pieces = 1; break;
        case OPT_NO_SPECIAL: *no_special = 1; break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (!*model && !*tokenizer) {
        fputs(usage, stderr);
        return cli_error(cmd, EXIT_USAGE, "--model or --tokenizer is required");
    }
    return -1;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *tokenizer = NULL, *file = NULL;
    int pieces = 0, no_special = 0;
    int rc = parse("tokenize", tokenize_usage, argc, argv, &model, &tokenizer, &file, &pieces, &no_special);
    if (rc >= 0) return rc;
    const int n_args = argc - optind;
    if ((file != NULL) + n_args != 1) {
        fputs(tokenize_usage, stderr);
        if (n_args > 1 || (file && n_args))
            return cli_error("tokenize", EXIT_USAGE, "unexpected argument '%s'", argv[argc - 1]);
        return cli_error("tokenize", EXIT_USAGE, "give TEXT or --file FILE");
    }
    char *text = NULL;
    size_t len;
    if (file) {
        if (!cli_read_all("tokenize", "--file", file, &text, &len)) return EXIT_RUNTIME;
    } else {
        len = strlen(argv[optind]);
        text = malloc(len + 1);
        if (!text) return cli_error("tokenize", EXIT_RUNTIME, "out of memory");
        memcpy(text, argv[optind], len + 1);
    }
    mamba_tokenizer_t *own = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    rc = EXIT_RUNTIME;
    const mamba_tokenizer_t *tok = cli_text_tokenizer("tokenize", "tokenize", NULL, model, tokenizer, &own);
    if (!tok) goto done;
    /* an empty text has no tokens: an empty line */
    if (len && !cli_tokenize("tokenize", file ? file : "TEXT", tok, text, len, no_special, &ids, &n)) goto done;
    for (size_t i = 0; i < n; i++) {
        if (pieces) {
            size_t bl;
            const char *b = mamba_token_bytes(tok, ids[i], &bl);
            printf("%d\t", (int)ids[i]);
            print_piece((const unsigned char *)b, bl);
            putchar('\n');
        } else {
            printf("%s%d", i ? "," : "", (int)ids[i]);
        }
    }
    if (!pieces) putchar('\n');
    rc = fflush(stdout) == 0 ? EXIT_OK : cli_error("tokenize", EXIT_RUNTIME, "cannot write the output");
done:
    free(ids);
    free(text);
    mamba_tokenizer_free(own);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    const char *model = NULL, *tokenizer = NULL, *unused_file = NULL;
    int unused_pieces = 0, unused_no_special = 0;
    int rc = parse("detokenize", detokenize_usage, argc, argv, &model, &tokenizer, &unused_file, &unused_pieces,
                   &unused_no_special);
    if (rc >= 0) return rc;
    if (argc - optind != 1) {
        fputs(detokenize_usage, stderr);
        if (argc - optind > 1) return cli_error("detokenize", EXIT_USAGE, "unexpected argument '%s'", argv[optind + 1]);
        return cli_error("detokenize", EXIT_USAGE, "the ids are required");
    }
    int32_t *ids;
    size_t n;
    if (!cli_parse_ids(argv[optind], &ids, &n))
        return cli_error("detokenize", EXIT_USAGE, "'%s': expected comma-separated non-negative integers", argv[optind]);
    mamba_tokenizer_t *own = NULL;
    char *text = NULL;
    rc = EXIT_RUNTIME;
    const mamba_tokenizer_t *tok = cli_text_tokenizer("detokenize", "detokenize", NULL, model, tokenizer, &own);
    size_t len = 0;
    if (!tok) goto done;
    if (mamba_detokenize(tok, ids, n, NULL, 0, &len) != MAMBA_OK) {
        cli_error("detokenize", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    if (!(text = malloc(len + 1))) {
        cli_error("detokenize", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (mamba_detokenize(tok, ids, n, text, len, &len) != MAMBA_OK) {
        cli_error("detokenize", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    fwrite(text, 1, len, stdout);
    cli_end_line(len ? (unsigned char)text[len - 1] : -1);
    rc = ferror(stdout) ? cli_error("detokenize", EXIT_RUNTIME, "cannot write the output") : EXIT_OK;
done:
    free(ids);
    free(text);
    mamba_tokenizer_free(own);
    return rc;
}
