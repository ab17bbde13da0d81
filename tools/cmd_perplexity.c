/* mamba perplexity: the perplexity of token ids read from a safetensors file, in windows
 * each run from an empty state, or with the recurrent state through whole documents. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_text.h"

static const char usage[] =
    "usage: mamba perplexity --model DIR|SIZE (--input IDS.safetensors | --file TEXT) [--ctx N]\n"
    "                        [--batch B] [--chunk C] [--json] [--tokenizer FILE] [--no-special]\n"
    "                        [--backend B] [--threads N] [--dtype f32|f16|bf16]\n"
    "\n"
    "The perplexity of token ids: exp of the mean negative log-likelihood of each token given\n"
    "the ones before it (log-softmax in double precision). Reads tensor 'input_ids', int64 or\n"
    "int32, of shape (L) or (rows, L); each row is a separate document and every row is scored.\n"
    "Prints the perplexity on stdout, timing on stderr (and a progress line when stderr is a\n"
    "terminal).\n"
    "\n"
    "  --model DIR|SIZE  Hugging Face checkpoint directory, or 130m|370m|790m|1.4b|2.8b for\n"
    "                    synthetic weights (seed 0, dtype from --dtype)\n"
    "  --input FILE      the safetensors file holding input_ids\n"
    "  --file TEXT       a text file, tokenized (one row) and scored ('-': stdin)\n"
    "  --tokenizer FILE  the tokenizer.json for --file (default: the model directory's)\n"
    "  --no-special      special tokens written in the text (<|endoftext|>) are plain text\n"
    "  --ctx N           0 (default): no windows. A Mamba model has no context limit: its\n"
    "                    recurrent state runs through each whole row, however long, and only\n"
    "                    a row's first token goes unscored. N >= 2: windows of N tokens, each\n"
    "                    from an empty state, nothing carried between them; the first token\n"
    "                    of each window is not scored (a last window of one token is left out)\n"
    "  --batch B         windows (rows with --ctx 0) run at once (default 1)\n"
    "  --chunk C         with --ctx 0: tokens fed per call through the recurrent state.\n"
    "                    Default: whole rows through one forward while their logits fit in\n"
    "                    1 GiB, 512 beyond\n"
    "  --json            one JSON object per window on stdout, {\"window\":i,\"row\":r,\n"
    "                    \"start\":s,\"tokens\":n,\"nll\":x,\"ppl\":y} (tokens: those scored; nll:\n"
    "                    their mean, in nats), then a summary {\"windows\":..,\"tokens\":..,\n"
    "                    \"nll\":..,\"ppl\":..,\"ctx\":..,\"seconds\":..}\n"
    "  --backend B       auto (default), cpu, opencl[:i], cuda[:i]\n"
    "  --threads N       CPU threads (default: all)\n";

/* Logits of all positions kept on the host at once, at most (the --ctx 0 forward path). */
#define LOGITS_BUDGET ((size_t)1 << 30)
#define DEFAULT_CHUNK 512

typedef struct run {
    mamba_context_t *ctx;
    mamba_model_t *model;
    const int32_t *ids;     /* (rows, len) */
    size_t rows, len, vocab, batch, ctx_len, chunk;
    int json, progress;
    size_t windows_total, windows_done, tokens;
    double nll;             /* sum over the tokens scored */
    float *logits;          /* from mamba_alloc_host */
    size_t logits_cap;      /* floats */
} run_t;

/* -log softmax(row)[target], in double. NaN when the row holds a NaN. */
static double token_nll(const float *row, size_t vocab, int32_t target)
{
    double top = -INFINITY;
    for (size_t i = 0; i < vocab; i++) {
        if (isnan(row[i])) return NAN;
        if (row[i] > top) top = row[i];
    }
    double sum = 0;
    for (size_t i = 0; i < vocab; i++) sum += exp((double)row[i] - top);
    return sum > 0 ? top + log(sum) - (double)row[target] : NAN;
}

static void print_ppl(double nll)
{
    if (isfinite(exp(nll))) printf("%.17g", exp(nll));
    else printf("null");
}

static void report_window(run_t *r, size_t row, size_t start, size_t scored, double nll)
{
    if (r->json) {
        printf("{\"window\":%zu,\"row\":%zu,\"start\":%zu,\"tokens\":%zu,\"nll\":%.17g,\"ppl\":", r->windows_done, row,
               start, scored, nll / (double)scored);
        print_ppl(nll / (double)scored);
        printf("}\n");
    }
    r->windows_done++;
    r->tokens += scored;
    r->nll += nll;
}

static void show_progress(const run_t *r, size_t tokens_done, size_t tokens_total)
{
    if (!r->progress) return;
    fprintf(stderr, "\rperplexity: %zu/%zu windows, %zu/%zu tokens, ppl so far %.4f", r->windows_done,
            r->windows_total, tokens_done, tokens_total, r->tokens ? exp(r->nll / (double)r->tokens) : NAN);
    fflush(stderr);
}

static float *logits_for(run_t *r, size_t floats)
{
    if (floats <= r->logits_cap) return r->logits;
    mamba_free_host(r->ctx, r->logits);
    r->logits_cap = 0;
    r->logits = mamba_alloc_host(r->ctx, floats * sizeof(float));
    if (!r->logits) {
        cli_error("perplexity", EXIT_RUNTIME, "logits of %.3g GiB: %s (lower --batch, --ctx or --chunk)",
                  (double)floats * sizeof(float) / (double)(1u << 30), mamba_last_error(r->ctx));
        return NULL;
    }
    r->logits_cap = floats;
    return r->logits;
}

/* Score n windows in one forward: window i is lens[i] tokens of row rows[i] from starts[i].
 * A shorter window is padded at its end, which leaves its own positions' logits as they are
 * (the model is causal). */
static int score_windows(run_t *r, const size_t *rows, const size_t *starts, const size_t *lens, size_t n,
                         int32_t *ids)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w = lens[i] > w ? lens[i] : w;
    for (size_t i = 0; i < n; i++) {
        memcpy(ids + i * w, r->ids + rows[i] * r->len + starts[i], lens[i] * sizeof *ids);
        for (size_t t = lens[i]; t < w; t++) ids[i * w + t] = ids[i * w + lens[i] - 1];
    }
    float *logits = logits_for(r, n * w * r->vocab);
    if (!logits) return EXIT_RUNTIME;
    if (mamba_forward(r->model, ids, n, w, MAMBA_LOGITS_ALL, logits) != MAMBA_OK)
        return cli_error("perplexity", EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
    for (size_t i = 0; i < n; i++) {
        double nll = 0;
        for (size_t t = 0; t + 1 < lens[i]; t++) {
            double x = token_nll(logits + (i * w + t) * r->vocab, r->vocab, ids[i * w + t + 1]);
            if (isnan(x))
                return cli_error("perplexity", EXIT_RUNTIME, "the logits of row %zu, position %zu hold a NaN", rows[i],
                                 starts[i] + t);
            nll += x;
        }
        report_window(r, rows[i], starts[i], lens[i] - 1, nll);
    }
    return EXIT_OK;
}

/* Windows of ctx_len tokens (whole rows when ctx_len >= len), row by row, batch at a time. */
static int run_windows(run_t *r, size_t batch)
{
    const size_t w = r->ctx_len < r->len ? r->ctx_len : r->len;
    if (w < 2) return cli_error("perplexity", EXIT_RUNTIME, "nothing to score");
    r->windows_total = r->rows * (r->len / w + (r->len % w >= 2));
    if (batch > r->windows_total) batch = r->windows_total;
    if (batch == 0) return cli_error("perplexity", EXIT_RUNTIME, "nothing to score");
    size_t *rows = malloc(batch * sizeof *rows), *starts = malloc(batch * sizeof *starts);
    size_t *lens = malloc(batch * sizeof *lens);
    int32_t *ids = malloc(batch * w * sizeof *ids);
    if (!rows || !starts || !lens || !ids) {
        free(rows); free(starts); free(lens); free(ids);
        return cli_error("perplexity", EXIT_RUNTIME, "out of memory");
    }
    int rc = EXIT_OK;
    size_t n = 0, done = 0;
    for (size_t row = 0; row < r->rows && rc == EXIT_OK; row++)
        for (size_t s = 0; s < r->len && rc == EXIT_OK; s += w) {
            const size_t len = r->len - s < w ? r->len - s : w;
            if (len < 2) continue;
            rows[n] = row;
            starts[n] = s;
            lens[n++] = len;
            done += len;
            if (n == batch) {
                rc = score_windows(r, rows, starts, lens, n, ids);
                n = 0;
                show_progress(r, done, r->rows * r->len);
            }
        }
    if (n && rc == EXIT_OK) rc = score_windows(r, rows, starts, lens, n, ids);
    free(rows);
    free(starts);
    free(lens);
    free(ids);
    return rc;
}

/* The logits of every position of ids (batch rows stride apart, len each) fed through the
 * state; chunk (batch, len) is the staging of the rows. */
static mamba_status_t prefill_all(mamba_state_t *state, const int32_t *ids, size_t batch, size_t stride, size_t len,
                                  int32_t *chunk, float *logits)
{
    for (size_t b = 0; b < batch; b++) memcpy(chunk + b * len, ids + b * stride, len * sizeof *chunk);
    return mamba_prefill_all(state, chunk, len, logits);
}

/* --ctx 0 through the recurrent state, chunk tokens at a time: position p's logits score
 * token p + 1, in the same chunk or the next. */
static int run_stateful(run_t *r)
{
    const size_t V = r->vocab, C = r->chunk < r->len ? r->chunk : r->len;
    if (r->batch == 0 || C == 0 || V == 0) return cli_error("perplexity", EXIT_RUNTIME, "nothing to score");
    double *nll = malloc(r->batch * sizeof *nll);
    int32_t *chunk = malloc(r->batch * C * sizeof *chunk);
    float *logits = nll && chunk ? logits_for(r, r->batch * C * V) : NULL;
    if (!logits) {
        free(nll);
        free(chunk);
        return nll && chunk ? EXIT_RUNTIME : cli_error("perplexity", EXIT_RUNTIME, "out of memory");
    }
    int rc = EXIT_OK;
    mamba_state_t *state = NULL;
    size_t state_batch = 0;
    for (size_t row0 = 0; row0 < r->rows && rc == EXIT_OK; row0 += r->batch) {
        const size_t g = r->rows - row0 < r->batch ? r->rows - row0 : r->batch;
        if (g != state_batch) {
            mamba_state_free(state);
            state = NULL;
            if (mamba_state_create(r->model, g, &state) != MAMBA_OK) {
                rc = cli_error("perplexity", EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
                break;
            }
            state_batch = g;
        } else if (mamba_state_reset(state) != MAMBA_OK) {
            rc = cli_error("perplexity", EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
            break;
        }
        const int32_t *ids = r->ids + row0 * r->len;
        for (size_t b = 0; b < g; b++) nll[b] = 0;
        for (size_t c = 0; c < r->len && rc == EXIT_OK; c += C) {
            const size_t n = r->len - c < C ? r->len - c : C;
            if (prefill_all(state, ids + c, g, r->len, n, chunk, logits) != MAMBA_OK) {
                rc = cli_error("perplexity", EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
                break;
            }
            for (size_t b = 0; b < g && rc == EXIT_OK; b++)
                for (size_t t = 0; t < n && c + t + 1 < r->len; t++) {
                    double x = token_nll(logits + (b * n + t) * V, V, ids[b * r->len + c + t + 1]);
                    if (isnan(x)) {
                        rc = cli_error("perplexity", EXIT_RUNTIME, "the logits of row %zu, position %zu hold a NaN",
                                       row0 + b, c + t);
                        break;
                    }
                    nll[b] += x;
                }
            show_progress(r, row0 * r->len + g * (c + n), r->rows * r->len);
        }
        for (size_t b = 0; b < g && rc == EXIT_OK; b++) report_window(r, row0 + b, 0, r->len - 1, nll[b]);
    }
    mamba_state_free(state);
    free(nll);
    free(chunk);
    return rc;
}

/* input_ids of path as int32 (rows, len), checked against the vocabulary. */
static int read_ids(const char *path, size_t vocab, int32_t **out, size_t *rows, size_t *len)
{
    mamba_tensor_file_t *f;
    if (mamba_tensor_file_open(path, &f) != MAMBA_OK)
        return cli_error("perplexity", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    int32_t *ids = NULL;
    int rc = EXIT_RUNTIME;
    if (!cli_read_i32("perplexity", path, f, "input_ids", 0, (int64_t)vocab, &ids, rows, len)) goto done;
    if (*rows == 0 || *len < 2) {
        cli_error("perplexity", EXIT_RUNTIME, "%s: input_ids has %zu rows of %zu tokens: nothing to score (a row needs 2)",
                  path, *rows, *len);
        goto done;
    }
    *out = ids;
    ids = NULL;
    rc = EXIT_OK;
done:
    free(ids);
    mamba_tensor_file_close(f);
    return rc;
}

/* The ids of a text file as one row. */
static int text_ids(run_t *r, const char *model, const char *path, const char *tokenizer, int no_special, int32_t **out)
{
    mamba_tokenizer_t *own = NULL;
    char *text = NULL;
    size_t len, n = 0;
    int32_t *ids = NULL;
    int rc = EXIT_RUNTIME;
    const mamba_tokenizer_t *tok = cli_text_tokenizer("perplexity", "--file", r->model, model, tokenizer, &own);
    if (!tok || !cli_read_all("perplexity", "--file", path, &text, &len)) goto done;
    if (!cli_tokenize("perplexity", path, tok, text, len, no_special, &ids, &n)) goto done;
    if (n < 2) {
        cli_error("perplexity", EXIT_RUNTIME, "%s: %zu token: nothing to score (it takes 2)", path, n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if ((size_t)ids[i] >= r->vocab) {
            cli_error("perplexity", EXIT_RUNTIME, "%s: token %zu is id %d, outside the model's vocabulary of %zu", path, i,
                      (int)ids[i], r->vocab);
            goto done;
        }
    r->rows = 1;
    r->len = n;
    *out = ids;
    ids = NULL;
    rc = EXIT_OK;
done:
    free(ids);
    free(text);
    mamba_tokenizer_free(own);
    return rc;
}

int cmd_perplexity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"input", required_argument, 0, 'i'},
        {"file", required_argument, 0, 'f'}, {"ctx", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'B'}, {"chunk", required_argument, 0, 'C'},
        {"json", no_argument, 0, 'j'}, {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, 'd'},
        {"tokenizer", required_argument, 0, 'T'}, {"no-special", no_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *in = NULL, *text = NULL, *backend = NULL, *tokenizer = NULL;
    int no_special = 0;
    long ctx_len = 0, batch = 1, chunk = 0, threads = 0;
    int json = 0;
    mamba_dtype_t dtype = MAMBA_F32;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:b:t:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': in = optarg; break;
        case 'f': text = optarg; break;
        case 'b': backend = optarg; break;
        case 'j': json = 1; break;
        case 'T': tokenizer = optarg; break;
        case 'S': no_special = 1; break;
        case 'c':
            if (!cli_parse_long(optarg, 0, 1L << 40, &ctx_len) || ctx_len == 1)
                return cli_error("perplexity", EXIT_USAGE,
                                 "--ctx '%s': expected 0 (no windows) or a window of 2 tokens or more", optarg);
            break;
        case 'B':
            if (!cli_parse_long(optarg, 1, 1 << 20, &batch))
                return cli_error("perplexity", EXIT_USAGE, "--batch '%s': expected an integer 1..%d", optarg, 1 << 20);
            break;
        case 'C':
            if (!cli_parse_long(optarg, 1, 1L << 40, &chunk))
                return cli_error("perplexity", EXIT_USAGE, "--chunk '%s': expected an integer >= 1", optarg);
            break;
        case 't':
            if (!cli_parse_long(optarg, 1, 4096, &threads))
                return cli_error("perplexity", EXIT_USAGE, "--threads '%s': expected an integer 1..4096", optarg);
            break;
        case 'd':
            if (!cli_parse_dtype(optarg, &dtype))
                return cli_error("perplexity", EXIT_USAGE, "--dtype '%s': expected f32, f16 or bf16", optarg);
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) return cli_error("perplexity", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (in && text) return cli_error("perplexity", EXIT_USAGE, "--input and --file exclude each other");
    if (!model || (!in && !text)) {
        fputs(usage, stderr);
        return cli_error("perplexity", EXIT_USAGE, "--model and --input (or --file) are required");
    }
    if (chunk && ctx_len) return cli_error("perplexity", EXIT_USAGE, "--chunk applies to --ctx 0 only");
    if (in && (tokenizer || no_special))
        return cli_error("perplexity", EXIT_USAGE, "--tokenizer and --no-special apply to --file only");

    run_t r = {.batch = (size_t)batch, .ctx_len = (size_t)ctx_len, .chunk = (size_t)chunk, .json = json,
               .progress = isatty(STDERR_FILENO)};
    int32_t *ids = NULL;
    int rc = EXIT_RUNTIME;
    if (text && !cli_text_precheck("perplexity", "--file", model, tokenizer)) goto done;
    if (!(r.ctx = cli_context("perplexity", backend, (int)threads))) goto done;
    if (!(r.model = cli_model("perplexity", r.ctx, model, dtype, 0))) goto done;
    mamba_model_info_t info;
    mamba_model_info(r.model, &info);
    r.vocab = (size_t)info.config.vocab_size;
    if (text) {
        if ((rc = text_ids(&r, model, text, tokenizer, no_special, &ids)) != EXIT_OK) goto done;
    } else if ((rc = read_ids(in, r.vocab, &ids, &r.rows, &r.len)) != EXIT_OK) {
        goto done;
    }
    r.ids = ids;
    const double t0 = cli_now();
    const size_t row_logits = r.len * r.vocab * sizeof(float);
    if (ctx_len > 0 || (chunk == 0 && row_logits <= LOGITS_BUDGET)) {
        size_t b = r.batch;
        if (ctx_len == 0) { /* whole rows: as many at once as the budget allows */
            r.ctx_len = r.len;
            if (row_logits && b > LOGITS_BUDGET / row_logits) b = LOGITS_BUDGET / row_logits;
        }
        rc = run_windows(&r, b);
    } else {
        if (!r.chunk) r.chunk = DEFAULT_CHUNK;
        r.windows_total = r.rows;
        if (r.batch > r.rows) r.batch = r.rows;
        rc = run_stateful(&r);
    }
    if (r.progress) fputc('\n', stderr);
    if (rc != EXIT_OK) goto done;
    const double secs = cli_now() - t0, mean = r.nll / (double)r.tokens;
    if (json) {
        printf("{\"windows\":%zu,\"tokens\":%zu,\"nll\":%.17g,\"ppl\":", r.windows_done, r.tokens, mean);
        print_ppl(mean);
        printf(",\"ctx\":%ld,\"rows\":%zu,\"seconds\":%.6f}\n", ctx_len, r.rows, secs);
    } else {
        printf("perplexity %.10g (mean nll %.10g nats/token over %zu tokens in %zu windows)\n", exp(mean), mean,
               r.tokens, r.windows_done);
    }
    fprintf(stderr, "perplexity: %zu rows x %zu tokens on %s (%s) in %.3f s (%.0f tokens/s)\n", r.rows, r.len,
            mamba_context_backend(r.ctx), mamba_context_device(r.ctx), secs, (double)(r.rows * r.len) / secs);
    rc = EXIT_OK;
done:
    free(ids);
    mamba_free_host(r.ctx, r.logits);
    mamba_model_free(r.model);
    mamba_context_free(r.ctx);
    return rc;
}
