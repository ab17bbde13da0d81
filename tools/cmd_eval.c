/* mamba eval: a trained model's accuracy on a synthetic task of the Mamba paper at each of
 * several sequence lengths. Sequences are generated a chunk at a time and fed through the
 * recurrent state, so memory stays flat however long they are (2^20 tokens and more). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "usage: mamba eval --task induction-heads|selective-copying --model DIR\n"
    "                  [--lengths L1,L2,...] [--samples N] [--seed S] [--batch B] [--chunk C]\n"
    "                  [--memorize K] [--json] [--backend B] [--threads N]\n"
    "\n"
    "The accuracy of the model's greedy prediction at the task's answer positions (induction\n"
    "heads: the last token; selective copying: the last --memorize) over --samples sequences of each\n"
    "length, generated from --seed as `mamba train` generates them. Prints 'length accuracy'\n"
    "lines, or with --json a JSON array, one object a length: {\"task\":..,\"length\":..,\n"
    "\"accuracy\":..,\"correct\":..,\"scored\":..,\"samples\":..,\"seconds\":..}.\n"
    "\n"
    "  --lengths LIST  comma-separated sequence lengths (default 64,128,...,1048576: 2^6 .. 2^20)\n"
    "  --samples N     sequences a length (default 256)\n"
    "  --seed S        the sequences' seed (default 1000: not a seed `mamba train` defaults to)\n"
    "  --batch B       sequences run at once (default 64)\n"
    "  --chunk C       tokens fed a call (default 4096)\n"
    "  --memorize K    selective-copying: data tokens to copy (default 16, as trained)\n"
    "  --model DIR     a checkpoint directory (e.g. what `mamba train --out` wrote)\n"
    "  --backend B     auto (default), cpu, opencl[:i], cuda[:i]\n"
    "  --threads N     CPU threads (default: all)\n";

typedef struct eval_run {
    mamba_context_t *ctx;
    mamba_model_t *model;
    mamba_state_t *state;
    mamba_task_t task;
    uint64_t seed;
    size_t samples, batch, chunk, vocab, tail;
    int32_t *ids, *labels;   /* (batch, chunk) */
    float *logits;           /* (batch, tail, vocab) */
    int progress;
} eval_run;

static size_t argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Positions [start, start + n) of sequences first .. first + nb - 1 into r->ids/labels (nb, n). */
static int fill(eval_run *r, uint64_t first, size_t nb, size_t start, size_t n)
{
    for (size_t b = 0; b < nb; b++)
        if (mamba_task_fill(&r->task, r->seed, first + b, start, n, r->ids + b * n, r->labels + b * n) != MAMBA_OK)
            return cli_error("eval", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
    return EXIT_OK;
}

/* One group of nb sequences of length len: the prefix through the state, then the answer
 * positions with their logits. */
static int run_group(eval_run *r, uint64_t first, size_t nb, size_t len, uint64_t *correct, uint64_t *scored,
                     double t0)
{
    const size_t body = len - r->tail;
    if (mamba_state_reset(r->state) != MAMBA_OK) return cli_error("eval", EXIT_RUNTIME, "state reset failed");
    for (size_t s = 0; s < body; s += r->chunk) {
        const size_t n = body - s < r->chunk ? body - s : r->chunk;
        int rc = fill(r, first, nb, s, n);
        if (rc != EXIT_OK) return rc;
        if (mamba_prefill(r->state, r->ids, n, NULL) != MAMBA_OK)
            return cli_error("eval", EXIT_RUNTIME, "length %zu: %s", len, mamba_last_error(r->ctx));
        if (r->progress) {
            fprintf(stderr, "\reval length %zu: sequences %zu-%zu of %zu, %3.0f%% of their tokens (%.0f s)   ", len,
                    (size_t)first + 1, (size_t)first + nb, r->samples, 100.0 * (double)(s + n) / (double)len,
                    cli_now() - t0);
            fflush(stderr);
        }
    }
    int rc = fill(r, first, nb, body, r->tail);
    if (rc != EXIT_OK) return rc;
    if (mamba_prefill_all(r->state, r->ids, r->tail, r->logits) != MAMBA_OK)
        return cli_error("eval", EXIT_RUNTIME, "length %zu: %s", len, mamba_last_error(r->ctx));
    for (size_t i = 0; i < nb * r->tail; i++) {
        if (r->labels[i] < 0) continue;
        *scored += 1;
        *correct += argmax(r->logits + i * r->vocab, r->vocab) == (size_t)r->labels[i];
    }
    return EXIT_OK;
}

/* A state of nb sequences (the last group of a length may be smaller than --batch). */
static int ensure_state(eval_run *r, size_t nb)
{
    if (r->state && mamba_state_batch(r->state) == nb) return EXIT_OK;
    mamba_state_free(r->state);
    r->state = NULL;
    if (mamba_state_create(r->model, nb, &r->state) != MAMBA_OK)
        return cli_error("eval", EXIT_RUNTIME, "%s", mamba_last_error(r->ctx));
    return EXIT_OK;
}

static int eval_length(eval_run *r, size_t len, int json, int first_line)
{
    r->task.len = len;
    int32_t probe;
    if (mamba_task_fill(&r->task, r->seed, 0, 0, 1, &probe, NULL) != MAMBA_OK)
        return cli_error("eval", EXIT_USAGE, "length %zu: %s", len, mamba_last_error(NULL));
    uint64_t correct = 0, scored = 0;
    const double t0 = cli_now();
    for (size_t done = 0; done < r->samples; done += r->batch) {
        const size_t nb = r->samples - done < r->batch ? r->samples - done : r->batch;
        int rc = ensure_state(r, nb);
        if (rc == EXIT_OK) rc = run_group(r, done, nb, len, &correct, &scored, t0);
        if (rc != EXIT_OK) return rc;
    }
    const double secs = cli_now() - t0, acc = scored ? (double)correct / (double)scored : 0;
    if (r->progress) fputs("\r\033[K", stderr);
    if (json)
        printf("%s{\"task\":\"%s\",\"length\":%zu,\"accuracy\":%.6f,\"correct\":%llu,\"scored\":%llu,\"samples\":%zu,"
               "\"seed\":%llu,\"seconds\":%.3f}",
               first_line ? "[\n" : ",\n", mamba_task_name(r->task.kind), len, acc, (unsigned long long)correct,
               (unsigned long long)scored, r->samples, (unsigned long long)r->seed, secs);
    else
        printf("%zu %.6f\n", len, acc);
    fflush(stdout);
    fprintf(stderr, "eval: length %zu: accuracy %.2f%% (%llu of %llu) in %.1f s\n", len, 100 * acc,
            (unsigned long long)correct, (unsigned long long)scored, secs);
    return EXIT_OK;
}

/* "64,128,..." or the default 2^6 .. 2^20. */
static int parse_lengths(const char *s, size_t **out, size_t *n)
{
    if (!s) {
        *n = 15;
        if (!(*out = malloc(*n * sizeof **out))) return 0;
        for (size_t i = 0; i < *n; i++) (*out)[i] = (size_t)1 << (6 + i);
        return 1;
    }
    int32_t *v;
    if (!cli_parse_ids(s, &v, n)) return 0;
    *out = malloc(*n * sizeof **out);
    int ok = *out != NULL;
    for (size_t i = 0; ok && i < *n; i++) {
        ok = v[i] >= 3;
        if (ok) (*out)[i] = (size_t)v[i];
    }
    free(v);
    if (!ok) {
        free(*out);
        *out = NULL;
    }
    return ok;
}

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"task", required_argument, 0, 'k'}, {"model", required_argument, 0, 'm'},
        {"lengths", required_argument, 0, 'L'}, {"samples", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'}, {"batch", required_argument, 0, 'B'},
        {"chunk", required_argument, 0, 'C'}, {"json", no_argument, 0, 'j'},
        {"memorize", required_argument, 0, 'M'},
        {"backend", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *task = NULL, *model = NULL, *lengths = NULL, *backend = NULL;
    long samples = 256, seed = 1000, batch = 64, chunk = 4096, threads = 0, memorize = 0;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:b:t:h", opts, NULL)) != -1) {
        long *lp = NULL, lo = 1, hi = 1 << 24;
        switch (c) {
        case 'k': task = optarg; break;
        case 'm': model = optarg; break;
        case 'L': lengths = optarg; break;
        case 'b': backend = optarg; break;
        case 'j': json = 1; break;
        case 'n': lp = &samples; break;
        case 's': lp = &seed, lo = 0, hi = INT64_MAX; break;
        case 'B': lp = &batch; break;
        case 'C': lp = &chunk; break;
        case 'M': lp = &memorize, hi = 4096; break;
        case 't': lp = &threads, hi = 4096; break;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
        if (lp && !cli_parse_long(optarg, lo, hi, lp))
            return cli_error("eval", EXIT_USAGE, "--%s '%s': expected an integer %ld..%ld", cli_option_name(opts, c),
                             optarg, lo, hi);
    }
    if (optind < argc) return cli_error("eval", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!task || !model) {
        fputs(usage, stderr);
        return cli_error("eval", EXIT_USAGE, "--task and --model are required");
    }
    eval_run r = {.seed = (uint64_t)seed, .samples = (size_t)samples, .chunk = (size_t)chunk,
                  .progress = isatty(STDERR_FILENO)};
    const mamba_task_kind_t kind = mamba_task_from_name(task);
    if (!kind) return cli_error("eval", EXIT_USAGE, "--task '%s': expected induction-heads or selective-copying", task);
    mamba_task_init(&r.task, kind);
    if (memorize && kind != MAMBA_TASK_SELECTIVE_COPYING)
        return cli_error("eval", EXIT_USAGE, "--memorize applies to --task selective-copying only");
    if (memorize) r.task.n_memorize = (int)memorize;
    size_t *lens = NULL, n_lens = 0;
    if (!parse_lengths(lengths, &lens, &n_lens))
        return cli_error("eval", EXIT_USAGE, "--lengths '%s': expected comma-separated lengths >= 3", lengths);
    r.batch = (size_t)batch < r.samples ? (size_t)batch : r.samples;
    r.tail = kind == MAMBA_TASK_SELECTIVE_COPYING ? (size_t)r.task.n_memorize : 1;
    mamba_context_t *ctx = NULL;
    int rc = EXIT_RUNTIME;
    if (!(ctx = cli_context("eval", backend, (int)threads))) goto done;
    r.ctx = ctx;
    if (mamba_model_load(ctx, model, &r.model) != MAMBA_OK) {
        cli_error("eval", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
        goto done;
    }
    mamba_model_info_t info;
    mamba_model_info(r.model, &info);
    r.vocab = (size_t)info.config.vocab_size;
    if (r.vocab < (size_t)r.task.vocab) {
        cli_error("eval", EXIT_RUNTIME, "%s: vocab_size %zu is smaller than the task's %d tokens", model, r.vocab,
                  r.task.vocab);
        goto done;
    }
    const size_t per = r.chunk > r.tail ? r.chunk : r.tail;
    r.ids = malloc(r.batch * per * sizeof *r.ids);
    r.labels = malloc(r.batch * per * sizeof *r.labels);
    r.logits = malloc(r.batch * r.tail * r.vocab * sizeof *r.logits);
    if (!r.ids || !r.labels || !r.logits) {
        cli_error("eval", EXIT_RUNTIME, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_lens; i++) {
        if (lens[i] <= r.tail) {
            cli_error("eval", EXIT_USAGE, "length %zu: too short for %s (its answer takes %zu positions)", lens[i], task,
                      r.tail);
            rc = EXIT_USAGE;
            goto done;
        }
        if ((rc = eval_length(&r, lens[i], json, i == 0)) != EXIT_OK) goto done;
    }
    if (json) printf("\n]\n");
    rc = EXIT_OK;
done:
    free(lens);
    free(r.ids);
    free(r.labels);
    free(r.logits);
    mamba_state_free(r.state);
    mamba_model_free(r.model);
    mamba_context_free(ctx);
    return rc;
}
