/* mamba chat: a conversation on a terminal (or through a pipe), one recurrent state carried
 * from turn to turn so that a turn costs only its own tokens. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat_format.h"
#include "cli.h"
#include "cli_sampling.h"
#include "cli_text.h"
#include "reply.h"

static const char usage[] =
    "usage: mamba chat --model DIR|SIZE [--tokenizer FILE] [--chat-template chatml|zephyr|plain]\n"
    "                  [--system TEXT] [-n MAX_PER_TURN] [--stop STRING]... [--no-special] [--verbose]\n"
    "                  [--backend B]\n"
    "                  [--threads N] [--dtype f32|f16|bf16] [sampling flags]\n"
    "\n"
    "Read a line, answer it (streamed), and so on until /quit or the end of the input. The\n"
    "conversation lives in the model's recurrent state: each turn feeds only its own text.\n"
    "The format of the turns comes from --chat-template, else from the checkpoint's\n"
    "tokenizer_config.json chat_template when it is ChatML or Zephyr, else plain \"User: ...\"\n"
    "turns. An answer ends at the end-of-sequence token, at the format's end of turn, or after\n"
    "-n tokens (default 512). Each answer samples afresh from --seed, so the same state and\n"
    "line give the same answer.\n"
    "\n"
    "commands (a line that starts with /):\n"
    "  /reset             forget the conversation\n"
    "  /save FILE         write the conversation's state to FILE\n"
    "  /load FILE         continue from a state /save wrote (with the same model)\n"
    "  /quit              end (as does the end of the input)\n"
    "\n"
    "  --system TEXT      a system message before the first turn (and after /reset)\n"
    "  --stop STRING      end an answer before STRING too (repeatable, at most 16)\n"
    "  --no-special       special tokens written in a message are plain text\n"
    "  --verbose          after each answer, its figures and the ids the turn fed the state on\n"
    "                     stderr\n"
    "\n";

typedef struct chat {
    mamba_context_t *ctx;
    mamba_model_t *model;
    const mamba_tokenizer_t *tok;
    mamba_state_t *state, *mark;
    float *logits;
    size_t vocab;
    chat_format fmt;
    const char *stops[20];      /* the format's, then --stop's */
    size_t n_stops;
    char close[128];            /* the format's end of an assistant turn */
    const char *system;
    int no_special, verbose, first_turn;
    long max_tokens;
    const cli_sampling *samp;
    int32_t eos;
    int has_eos;
    mamba_detok_stream_t *detok;
    text_out out;
    struct turn_buf *buf;
} chat;

/* One turn's ids, and its rendered text. */
typedef struct turn_buf {
    int32_t *ids;
    size_t n_ids, cap_ids;
    char *text;
    size_t len, cap;
} turn_buf;

static size_t grown(size_t cap, size_t need)
{
    size_t c = cap ? cap : 256;
    while (c < need) c *= 2;
    return c;
}

static int grow_text(turn_buf *b, size_t need)
{
    if (need <= b->cap) return 1;
    const size_t cap = grown(b->cap, need);
    char *q = realloc(b->text, cap);
    if (!q) return 0;
    b->text = q;
    b->cap = cap;
    return 1;
}

static int add_ids(turn_buf *b, const int32_t *ids, size_t n)
{
    if (b->n_ids + n > b->cap_ids) {
        const size_t cap = grown(b->cap_ids, b->n_ids + n);
        int32_t *q = realloc(b->ids, cap * sizeof *q);
        if (!q) return 0;
        b->ids = q;
        b->cap_ids = cap;
    }
    memcpy(b->ids + b->n_ids, ids, n * sizeof *ids);
    b->n_ids += n;
    return 1;
}

/* Tokenize text and append its ids; 0 after printing the error. */
static int add_text(chat *c, const char *text, size_t len, int special_as_text)
{
    if (!len) return 1;
    int32_t *ids;
    size_t n;
    if (!cli_tokenize("chat", "the turn", c->tok, text, len, special_as_text, &ids, &n)) return 0;
    const int ok = add_ids(c->buf, ids, n);
    free(ids);
    return ok || !cli_error("chat", EXIT_RUNTIME, "out of memory");
}

/* Rendering: with special tokens recognized everywhere the turn is one text, tokenized at
 * once (as tokenizing a rendered chat template does); with --no-special each piece alone,
 * the messages' text as plain text. */
static int on_piece(void *user, const char *text, size_t len, int is_content)
{
    chat *c = user;
    if (c->no_special) return add_text(c, text, len, is_content) ? 0 : -1;
    if (!grow_text(c->buf, c->buf->len + len + 1)) return -1;
    memcpy(c->buf->text + c->buf->len, text, len);
    c->buf->len += len;
    return 0;
}

typedef struct close_grab { char *buf; size_t cap, len; int after; } close_grab;

static int grab_close(void *user, const char *text, size_t len, int is_content)
{
    close_grab *g = user;
    if (is_content) g->after = 1;
    else if (g->after && g->len + len < g->cap) {
        memcpy(g->buf + g->len, text, len);
        g->len += len;
        g->buf[g->len] = '\0';
    }
    return 0;
}

static int prefill(chat *c, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((size_t)ids[i] >= c->vocab)
            return cli_error("chat", EXIT_RUNTIME, "the turn's token %zu is id %d, outside the model's vocabulary of %zu",
                             i, (int)ids[i], c->vocab);
    if (n && mamba_prefill(c->state, ids, n, c->logits) != MAMBA_OK)
        return cli_error("chat", EXIT_RUNTIME, "%s", mamba_last_error(c->ctx));
    return EXIT_OK;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "chat: %s", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%s%d", i ? "," : " ", (int)ids[i]);
    fputc('\n', stderr);
}

/* One turn: EXIT_OK, EXIT_USAGE for a line skipped, EXIT_RUNTIME to end. */
static int turn(chat *c, const char *line, size_t line_len)
{
    chat_message msgs[2];
    size_t n = 0;
    if (c->first_turn && c->system) msgs[n++] = (chat_message){"system", c->system, strlen(c->system)};
    msgs[n++] = (chat_message){"user", line, line_len};
    c->buf->n_ids = 0;
    c->buf->len = 0;
    /* a line that does not tokenize is skipped (the message says why): nothing was fed yet */
    if (chat_format_render(&c->fmt, msgs, n, 1, on_piece, c) != 0) return EXIT_USAGE;
    if (!c->no_special && !add_text(c, c->buf->text, c->buf->len, 0)) return EXIT_USAGE;
    const size_t n_prompt = c->buf->n_ids;
    const double t0 = cli_now();
    int rc = prefill(c, c->buf->ids, c->buf->n_ids);
    if (rc != EXIT_OK) return rc;
    const double t1 = cli_now();
    c->first_turn = 0;
    mamba_sampler_t *sampler = cli_sampler("chat", c->samp);
    if (!sampler) return EXIT_RUNTIME;
    reply r = {.ctx = c->ctx, .state = c->state, .sampler = sampler, .logits = c->logits, .vocab = c->vocab,
               .tok = c->tok, .detok = c->detok, .out = &c->out, .eos = c->eos, .has_eos = c->has_eos,
               .mark = c->mark};
    text_out_clear(&c->out);
    if (mamba_sampler_accept(sampler, c->buf->ids, c->buf->n_ids) != MAMBA_OK)
        rc = cli_error("chat", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    if (rc == EXIT_OK) rc = reply_run("chat", &r, c->max_tokens);
    mamba_sampler_free(sampler);
    fputc('\n', stdout);
    fflush(stdout);
    /* the state holds the answer's first base_len bytes: the rest of it and the end of the
     * turn complete the conversation */
    if (rc == EXIT_OK && !add_ids(c->buf, r.fed, r.n_fed)) rc = cli_error("chat", EXIT_RUNTIME, "out of memory");
    const size_t before_close = c->buf->n_ids;
    if (rc == EXIT_OK) {
        const size_t rest = c->out.len - r.base_len, cl = strlen(c->close);
        if (grow_text(c->buf, rest + cl + 1)) {
            memcpy(c->buf->text, c->out.text + r.base_len, rest);
            memcpy(c->buf->text + rest, c->close, cl);
            if (!add_text(c, c->buf->text, rest + cl, 0)) rc = EXIT_RUNTIME;
        } else {
            rc = cli_error("chat", EXIT_RUNTIME, "out of memory");
        }
    }
    if (rc == EXIT_OK) rc = prefill(c, c->buf->ids + before_close, c->buf->n_ids - before_close);
    if (rc == EXIT_OK && c->verbose) {
        static const char *const ends[] = {"length", "end of sequence", "end of turn"};
        fprintf(stderr, "chat: %zu prompt tokens in %.3f s; %zu answer tokens in %.3f s (%.1f tokens/s), ended by %s\n",
                n_prompt, t1 - t0, r.n_tokens, r.seconds, (double)r.n_tokens / r.seconds, ends[r.end]);
        print_ids("fed", c->buf->ids, c->buf->n_ids);
    }
    reply_free(&r);
    return rc;
}

static void save_state(chat *c, const char *path)
{
    size_t bytes;
    void *buf = NULL;
    if (mamba_state_size(c->state, &bytes) != MAMBA_OK || !(buf = malloc(bytes)) ||
        mamba_state_read(c->state, buf, bytes) != MAMBA_OK) {
        cli_error("chat", EXIT_RUNTIME, "/save: %s", buf ? mamba_last_error(c->ctx) : "out of memory");
        free(buf);
        return;
    }
    FILE *fp = fopen(path, "wb");
    const int ok = fp && fwrite(buf, 1, bytes, fp) == bytes;
    if (fp && fclose(fp) != 0) fp = NULL;
    if (ok && fp) fprintf(stderr, "chat: saved the state to %s (%zu bytes)\n", path, bytes);
    else cli_error("chat", EXIT_RUNTIME, "/save %s: %s", path, strerror(errno));
    free(buf);
}

static void load_state(chat *c, const char *path)
{
    size_t bytes, len;
    char *buf;
    if (mamba_state_size(c->state, &bytes) != MAMBA_OK) {
        cli_error("chat", EXIT_RUNTIME, "/load: %s", mamba_last_error(c->ctx));
        return;
    }
    if (!cli_read_all("chat", "/load", path, &buf, &len)) return;
    if (len != bytes)
        cli_error("chat", EXIT_RUNTIME, "/load %s: %zu bytes, but a state of this model has %zu", path, len, bytes);
    else if (mamba_state_write(c->state, buf, bytes) != MAMBA_OK)
        cli_error("chat", EXIT_RUNTIME, "/load %s: %s", path, mamba_last_error(c->ctx));
    else {
        c->first_turn = 0;
        fprintf(stderr, "chat: loaded the state from %s\n", path);
    }
    free(buf);
}

/* A line that starts with '/': 1 to go on, 0 to end. */
static int command(chat *c, char *line)
{
    char *arg = line + strcspn(line, " \t");
    if (*arg) *arg++ = '\0';
    arg += strspn(arg, " \t");
    if (strcmp(line, "/quit") == 0 || strcmp(line, "/exit") == 0) return 0;
    if (strcmp(line, "/reset") == 0) {
        if (mamba_state_reset(c->state) != MAMBA_OK) cli_error("chat", EXIT_RUNTIME, "%s", mamba_last_error(c->ctx));
        c->first_turn = 1;
        fprintf(stderr, "chat: the conversation is reset\n");
    } else if ((strcmp(line, "/save") == 0 || strcmp(line, "/load") == 0) && !*arg) {
        cli_error("chat", EXIT_USAGE, "%s needs a FILE", line);
    } else if (strcmp(line, "/save") == 0) {
        save_state(c, arg);
    } else if (strcmp(line, "/load") == 0) {
        load_state(c, arg);
    } else {
        cli_error("chat", EXIT_USAGE, "unknown command '%s' (/reset, /save FILE, /load FILE, /quit)", line);
    }
    return 1;
}

/* The format: --chat-template, else the checkpoint's, else plain; its turn end and stops. */
static int setup_format(chat *c, const char *name, const char *model_dir, const char *const *user_stops, size_t n_user)
{
    struct stat sb;
    if (name) {
        if (!chat_format_by_name(name, &c->fmt))
            return cli_error("chat", EXIT_USAGE, "--chat-template '%s': expected chatml, zephyr or plain", name);
        size_t bl;
        const char *b = c->has_eos ? mamba_token_bytes(c->tok, c->eos, &bl) : NULL;
        if (b && bl > 0 && bl < sizeof c->fmt.eos && !memchr(b, 0, bl)) snprintf(c->fmt.eos, sizeof c->fmt.eos, "%.*s", (int)bl, b);
    } else if (stat(model_dir, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char err[512];
        if (chat_format_from_dir(model_dir, &c->fmt, err, sizeof err) < 0) return cli_error("chat", EXIT_RUNTIME, "%s", err);
    } else {
        chat_format_by_name("plain", &c->fmt);
    }
    c->n_stops = chat_format_stops(&c->fmt, c->stops, 4);
    if (c->n_stops > 4) c->n_stops = 4;
    for (size_t i = 0; i < n_user; i++) c->stops[c->n_stops++] = user_stops[i];
    char x[] = "x";
    const chat_message m = {"assistant", x, 1};
    close_grab g = {c->close, sizeof c->close, 0, 0};
    c->close[0] = '\0';
    chat_format_render(&c->fmt, &m, 1, 0, grab_close, &g);
    return EXIT_OK;
}

int cmd_chat(int argc, char **argv)
{
    enum { OPT_TOKENIZER = 0x200, OPT_TEMPLATE, OPT_SYSTEM, OPT_NO_SPECIAL, OPT_VERBOSE, OPT_STOP };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"chat-template", required_argument, 0, OPT_TEMPLATE}, {"system", required_argument, 0, OPT_SYSTEM},
        {"tokens", required_argument, 0, 'n'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, 'd'},
        {"no-special", no_argument, 0, OPT_NO_SPECIAL}, {"verbose", no_argument, 0, OPT_VERBOSE},
        {"stop", required_argument, 0, OPT_STOP}, CLI_SAMPLING_OPTIONS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *tokenizer = NULL, *template_name = NULL, *backend = NULL;
    long threads = 0;
    mamba_dtype_t dtype = MAMBA_F32;
    const char *user_stops[16];
    size_t n_user_stops = 0;
    cli_sampling samp;
    cli_sampling_init(&samp);
    turn_buf buf = {0};
    chat c = {.max_tokens = 512, .first_turn = 1, .samp = &samp, .buf = &buf};
    text_out_init(&c.out, stdout, NULL, 0);
    mamba_tokenizer_t *own_tok = NULL;
    char *line = NULL;
    int rc = EXIT_USAGE, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:n:b:t:d:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'b': backend = optarg; break;
        case OPT_TOKENIZER: tokenizer = optarg; break;
        case OPT_TEMPLATE: template_name = optarg; break;
        case OPT_SYSTEM: c.system = optarg; break;
        case OPT_NO_SPECIAL: c.no_special = 1; break;
        case OPT_VERBOSE: c.verbose = 1; break;
        case OPT_STOP:
            if (!*optarg || n_user_stops == 16) {
                cli_error("chat", EXIT_USAGE, *optarg ? "--stop: at most 16 strings" : "--stop: the string is empty");
                goto done;
            }
            user_stops[n_user_stops++] = optarg;
            break;
        case 'n':
            if (!cli_parse_long(optarg, 1, 1 << 24, &c.max_tokens)) {
                cli_error("chat", EXIT_USAGE, "-n '%s': expected an integer 1..%d", optarg, 1 << 24);
                goto done;
            }
            break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &threads)) {
                cli_error("chat", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
                goto done;
            }
            break;
        case 'd':
            if (!cli_parse_dtype(optarg, &dtype)) {
                cli_error("chat", EXIT_USAGE, "--dtype '%s': expected f32, f16 or bf16", optarg);
                goto done;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            fputs(cli_sampling_usage, stdout);
            rc = EXIT_OK;
            goto done;
        default: {
            const int r = cli_sampling_option("chat", opt, optarg, &samp);
            if (r == 1) break;
            if (r == 0) fputs(usage, stderr);
            goto done;
        }
        }
    }
    if (optind < argc) {
        cli_error("chat", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
        goto done;
    }
    if (!model) {
        fputs(usage, stderr);
        cli_error("chat", EXIT_USAGE, "--model is required");
        goto done;
    }
    if (template_name && !chat_format_by_name(template_name, &c.fmt)) {
        cli_error("chat", EXIT_USAGE, "--chat-template '%s': expected chatml, zephyr or plain", template_name);
        goto done;
    }
    mamba_sampler_t *check = cli_sampler("chat", &samp);
    if (!check) goto done;
    mamba_sampler_free(check);
    rc = EXIT_RUNTIME;
    if (!cli_text_precheck("chat", "chat", model, tokenizer)) goto done;
    if (!(c.ctx = cli_context("chat", backend, (int)threads))) goto done;
    if (!(c.model = cli_model("chat", c.ctx, model, dtype, 0))) goto done;
    if (!(c.tok = cli_text_tokenizer("chat", "chat", c.model, model, tokenizer, &own_tok))) goto done;
    mamba_model_info_t info;
    mamba_model_info(c.model, &info);
    c.vocab = (size_t)info.config.vocab_size;
    c.has_eos = cli_eos(c.model, c.tok, &c.eos);
    if ((rc = setup_format(&c, template_name, model, user_stops, n_user_stops)) != EXIT_OK) goto done;
    rc = EXIT_RUNTIME;
    text_out_init(&c.out, stdout, c.stops, c.n_stops);
    if (!cli_sampling_ban_textless(&samp, c.tok, c.vocab) || !(c.logits = malloc(c.vocab * sizeof *c.logits))) {
        cli_error("chat", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    if (mamba_state_create(c.model, 1, &c.state) != MAMBA_OK || mamba_state_create(c.model, 1, &c.mark) != MAMBA_OK) {
        cli_error("chat", EXIT_RUNTIME, "%s", mamba_last_error(c.ctx));
        goto done;
    }
    if (mamba_detok_stream_create(c.tok, &c.detok) != MAMBA_OK) {
        cli_error("chat", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        goto done;
    }
    const int tty = isatty(STDIN_FILENO);
    if (tty)
        fprintf(stderr, "mamba chat: %s turns on %s (%s); /reset, /save FILE, /load FILE, /quit\n",
                chat_format_name(&c.fmt), mamba_context_backend(c.ctx), mamba_context_device(c.ctx));
    if (c.verbose) fprintf(stderr, "chat: format %s, %zu stop strings\n", chat_format_name(&c.fmt), c.n_stops);
    size_t cap = 0;
    rc = EXIT_OK;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        const ssize_t got = getline(&line, &cap, stdin);
        if (got < 0) break;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (!len) continue;
        if (line[0] == '/') {
            if (!command(&c, line)) break;
            continue;
        }
        if ((rc = turn(&c, line, len)) == EXIT_USAGE) rc = EXIT_OK;
        else if (rc != EXIT_OK) break;
    }
    if (tty && rc == EXIT_OK) fputc('\n', stdout);
done:
    free(line);
    free(buf.ids);
    free(buf.text);
    free(c.logits);
    text_out_free(&c.out);
    mamba_detok_stream_free(c.detok);
    mamba_state_free(c.mark);
    mamba_state_free(c.state);
    mamba_model_free(c.model);
    mamba_tokenizer_free(own_tok);
    mamba_context_free(c.ctx);
    cli_sampling_free(&samp);
    return rc;
}
