/* Text for the commands: finding the tokenizer (the model's or --tokenizer's), reading text
 * from an argument, a file or stdin, tokenizing it with clear errors, the end-of-sequence id. */
#ifndef MAMBA_CLI_TEXT_H
#define MAMBA_CLI_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "mamba.h"

/* The tokenizer for text: --tokenizer FILE when given (loaded into *owned, to be freed by
 * the caller), else the model's (m may be NULL: then model_spec, a checkpoint directory, is
 * read for its tokenizer.json into *owned). what names the option that needs it ("--prompt").
 * NULL after printing the error. */
const mamba_tokenizer_t *cli_text_tokenizer(const char *cmd, const char *what, const mamba_model_t *m,
                                            const char *model_spec, const char *tokenizer_path,
                                            mamba_tokenizer_t **owned);
/* Before loading a model: 0 (after printing the error) when no tokenizer can come, i.e. no
 * --tokenizer and model_spec is not a directory (a synthetic model). */
int cli_text_precheck(const char *cmd, const char *what, const char *model_spec, const char *tokenizer_path);
/* All the bytes of path ("-": stdin) into a malloc'd buffer (NUL-terminated, NULs inside
 * allowed). 0 after printing the error. */
int cli_read_all(const char *cmd, const char *what, const char *path, char **buf, size_t *len);
/* Tokenize text (special tokens recognized unless no_special) into malloc'd ids; an empty text
 * or one of no tokens, and invalid UTF-8 (its byte offset), are errors naming what. 0 after
 * printing the error. */
int cli_tokenize(const char *cmd, const char *what, const mamba_tokenizer_t *tok, const char *text, size_t len,
                 int no_special, int32_t **ids, size_t *n);
/* The end-of-sequence id: the model's (mamba_model_eos), else tok's <|endoftext|>. 0: none known. */
int cli_eos(const mamba_model_t *m, const mamba_tokenizer_t *tok, int32_t *id);
/* End the output with a newline when it goes to a terminal and did not end with one. */
void cli_end_line(int last_char);

#endif
