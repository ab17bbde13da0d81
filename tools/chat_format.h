/* Chat prompts in the formats of known checkpoints, without a template engine: ChatML,
 * Zephyr (the Mamba chat checkpoints) and plain "Role: text" turns. A conversation is rendered
 * as a sequence of pieces, each marked as the format's markup or as a message's content, so
 * that a caller tokenizes content with special tokens as text (untrusted input) and markup with
 * them recognized. Used by `mamba serve` and `mamba chat`. */
#ifndef MAMBA_CHAT_FORMAT_H
#define MAMBA_CHAT_FORMAT_H

#include <stddef.h>

typedef enum chat_format_kind {
    CHAT_FORMAT_PLAIN = 0,  /* "User: text\n" turns, then "Assistant:"                     */
    CHAT_FORMAT_CHATML,     /* <|im_start|>role\ntext<|im_end|>\n, then <|im_start|>assistant\n */
    CHAT_FORMAT_ZEPHYR,     /* <|role|>\ntext EOS \n, then <|assistant|>\n                    */
} chat_format_kind;

typedef struct chat_format {
    chat_format_kind kind;
    char eos[64];           /* Zephyr: the text that ends a turn (the checkpoint's eos_token) */
} chat_format;

typedef struct chat_message {
    const char *role;       /* "system", "user" or "assistant"                               */
    const char *content;
    size_t content_len;
} chat_message;

/* Receives one piece of a rendered conversation; is_content: 1 for a message's text, 0 for
 * the format's markup. A non-zero return stops the rendering and is returned by it. */
typedef int (*chat_piece_fn)(void *user, const char *text, size_t len, int is_content);

/* "chatml", "zephyr" or "plain" (Zephyr with the eos "</s>"); 0 for an unknown name. */
int chat_format_by_name(const char *name, chat_format *out);
const char *chat_format_name(const chat_format *f);
/* The format a Jinja chat_template stands for, when it is recognizably ChatML or Zephyr;
 * plain otherwise. eos_token (may be NULL) is the checkpoint's, for Zephyr's turn ends. */
void chat_format_detect(const char *chat_template, const char *eos_token, chat_format *out);
/* The format of a checkpoint: tokenizer_config.json in dir (chat_template and eos_token).
 * 1: a template was recognized; 0: no file, no template or an unrecognized one (plain);
 * -1: the file is unreadable or malformed (message in err). */
int chat_format_from_dir(const char *dir, chat_format *out, char *err, size_t err_len);
/* 1 for a role the formats render: system, user, assistant. */
int chat_role_known(const char *role);
/* Render messages, then the assistant's turn opening when add_generation_prompt. */
int chat_format_render(const chat_format *f, const chat_message *msgs, size_t n, int add_generation_prompt,
                       chat_piece_fn piece, void *user);
/* Texts that end the assistant's turn in the format (stop strings); returns their number (at
 * most cap are stored). */
size_t chat_format_stops(const chat_format *f, const char **stops, size_t cap);

#endif
