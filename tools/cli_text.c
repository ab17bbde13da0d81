/* Tokenizers and text for the commands. */
#include "cli_text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

const mamba_tokenizer_t *cli_text_tokenizer(const char *cmd, const char *what, const mamba_model_t *m,
                                            const char *model_spec, const char *tokenizer_path,
                                            mamba_tokenizer_t **owned)
{
    *owned = NULL;
    if (tokenizer_path) {
        if (mamba_tokenizer_load(tokenizer_path, owned) != MAMBA_OK) {
            cli_error(cmd, EXIT_RUNTIME, "--tokenizer: %s", mamba_last_error(NULL));
            return NULL;
        }
        return *owned;
    }
    if (m && mamba_model_tokenizer(m)) return mamba_model_tokenizer(m);
    struct stat sb;
    const int is_dir = model_spec && stat(model_spec, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!m && is_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", model_spec);
        if (stat(path, &sb) == 0) {
            if (mamba_tokenizer_load(path, owned) != MAMBA_OK) {
                cli_error(cmd, EXIT_RUNTIME, "%s", mamba_last_error(NULL));
                return NULL;
            }
            return *owned;
        }
    }
    if (is_dir)
        cli_error(cmd, EXIT_RUNTIME, "%s needs a tokenizer: the model directory has no tokenizer.json; give --tokenizer FILE",
                  what);
    else
        cli_error(cmd, EXIT_RUNTIME, "%s needs a tokenizer: a synthetic model (--model %s) has none; give --tokenizer FILE",
                  what, model_spec ? model_spec : "SIZE");
    return NULL;
}

int cli_text_precheck(const char *cmd, const char *what, const char *model_spec, const char *tokenizer_path)
{
    struct stat sb;
    if (tokenizer_path || stat(model_spec, &sb) == 0) return 1;
    cli_error(cmd, EXIT_RUNTIME, "%s needs a tokenizer: a synthetic model (--model %s) has none; give --tokenizer FILE", what,
              model_spec);
    return 0;
}

int cli_read_all(const char *cmd, const char *what, const char *path, char **buf, size_t *len)
{
    const int is_stdin = strcmp(path, "-") == 0;
    FILE *fp = is_stdin ? stdin : fopen(path, "rb");
    if (!fp) return !cli_error(cmd, EXIT_RUNTIME, "%s %s: cannot open: %s", what, path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int ok = b != NULL;
    while (ok) {
        if (n + 1 >= cap) {
            char *g = realloc(b, cap *= 2);
            if (!g) { ok = 0; break; }
            b = g;
        }
        const size_t got = fread(b + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    const int failed = ferror(fp);
    if (!is_stdin) fclose(fp);
    if (!ok || failed) {
        free(b);
        return !cli_error(cmd, EXIT_RUNTIME, "%s %s: %s", what, is_stdin ? "(stdin)" : path,
                          ok ? "read error" : "out of memory");
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 1;
}

int cli_tokenize(const char *cmd, const char *what, const mamba_tokenizer_t *tok, const char *text, size_t len,
                 int no_special, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (len == 0) return !cli_error(cmd, EXIT_RUNTIME, "%s: the text is empty", what);
    const int flags = no_special ? MAMBA_TOKENIZE_SPECIAL_AS_TEXT : 0;
    size_t count = 0;
    if (mamba_tokenize(tok, text, len, flags, NULL, 0, &count) != MAMBA_OK)
        return !cli_error(cmd, EXIT_RUNTIME, "%s: %s", what, mamba_last_error(NULL));
    if (count == 0) return !cli_error(cmd, EXIT_RUNTIME, "%s: the text gives no tokens", what);
    int32_t *v = malloc(count * sizeof *v);
    if (!v) return !cli_error(cmd, EXIT_RUNTIME, "%s: out of memory for %zu ids", what, count);
    if (mamba_tokenize(tok, text, len, flags, v, count, n) != MAMBA_OK) {
        free(v);
        return !cli_error(cmd, EXIT_RUNTIME, "%s: %s", what, mamba_last_error(NULL));
    }
    *ids = v;
    return 1;
}

int cli_eos(const mamba_model_t *m, const mamba_tokenizer_t *tok, int32_t *id)
{
    if (m && mamba_model_eos(m, id) == MAMBA_OK) return 1;
    return tok && mamba_tokenizer_find(tok, "<|endoftext|>", id) == MAMBA_OK;
}

void cli_end_line(int last_char)
{
    if (last_char != '\n' && last_char >= 0 && isatty(STDOUT_FILENO)) fputc('\n', stdout);
    fflush(stdout);
}
