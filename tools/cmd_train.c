/* mamba train: train a model on a synthetic task of the Mamba paper or on a tokenized text,
 * with a progress line (or JSON log lines), periodic held-out evaluation and checkpoints. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_text.h"
#include "train_data.h"

static const char usage[] =
    "usage: mamba train --task selective-copying|induction-heads|text --out DIR\n"
    "                   [--model-config FILE | --resume DIR] [--steps N] [--batch B] [--len L]\n"
    "                   [--lr X] [--weight-decay X] [--clip X] [--schedule constant|cosine]\n"
    "                   [--warmup N] [--accum K] [--seed S] [--memorize K] [--data FILE]\n"
    "                   [--tokenizer FILE] [--eval-every N] [--eval-samples M] [--stop-at ACC]\n"
    "                   [--save-every N]"
    " [--log-every N] [--json] [--backend B] [--threads N]\n"
    "\n"
    "Trains a Mamba model (fp32 master weights, AdamW) and saves it as a Hugging Face\n"
    "directory (config.json, model.safetensors) with optimizer.safetensors beside it.\n"
    "\n"
    "  --task T           selective-copying: the paper's Selective Copying (len 4096, vocab 16,\n"
    "                     16 tokens to copy); induction-heads: Induction Heads (len 256, vocab 16);\n"
    "                     both generated on the fly from --seed, scored on their answer positions\n"
    "                     only. text: next-token prediction on windows of --data\n"
    "  --data FILE        with --task text: a .safetensors file of input_ids (rows joined), or a\n"
    "                     text file tokenized with --tokenizer\n"
    "  --model-config F   a Hugging Face config.json for a new model. Default for the tasks: the\n"
    "                     paper's 2-layer Mamba with d_model 64 (d_state 16, expand 2), vocab 16\n"
    "  --resume DIR       continue from a directory this command saved (moments and step kept)\n"
    "  --out DIR          where the model is saved (at the end and every --save-every steps)\n"
    "  --steps N          optimizer steps in all, counting those of --resume (default 10000)\n"
    "  --batch B          sequences a micro-batch (default: induction-heads 8, selective-copying\n"
    "                     64, text 8)\n"
    "  --accum K          micro-batches accumulated a step (default 1)\n"
    "  --len L            tokens a sequence (default: the task's; text 256)\n"
    "  --memorize K       selective-copying: data tokens to copy (default 16)\n"
    "  --lr X             peak learning rate (default: induction-heads 1e-3, selective-copying\n"
    "                     1e-4, text 6e-4)\n"
    "  --weight-decay X   AdamW's decoupled decay (default: tasks 0, as the paper; text 0.1)\n"
    "  --clip X           global gradient-norm clipping, 0: none (default 1)\n"
    "  --schedule S       constant (default for the tasks) or cosine (warmup then cosine to 0.1 lr;\n"
    "                     default for text)\n"
    "  --warmup N         warmup steps of the cosine schedule (default 1% of --steps)\n"
    "  --seed S           initialization and data seed (default 0)\n"
    "  --eval-every N     evaluate on --eval-samples held-out sequences every N steps (0: only at\n"
    "                     the end; default 200). Held-out: another seed's sequences (tasks), the\n"
    "                     stream's windows of another seed (text)\n"
    "  --eval-samples M   sequences an evaluation (default 256)\n"
    "  --stop-at ACC      stop once an evaluation's accuracy reaches ACC in (0, 1] (default: off)\n"
    "  --save-every N     also save every N steps (default: only at the end)\n"
    "  --log-every N      a JSON log line every N steps (default 10; the terminal's progress line\n"
    "                     is redrawn every step)\n"
    "  --json             JSON lines on stdout: {\"step\":..,\"loss\":..,\"accuracy\":..,\"grad_norm\":..,\n"
    "                     \"lr\":..,\"tokens_per_s\":..,\"seconds\":..}, {\"step\":..,\"eval_loss\":..,\n"
    "                     \"eval_accuracy\":..} and a last {\"done\":true,...} summary\n"
    "  --backend B        auto (default), cpu, opencl[:i], cuda[:i]\n"
    "  --threads N        CPU threads (default: all)\n";

typedef struct train_run {
    mamba_context_t *ctx;
    mamba_trainer_t *tr;
    train_data data, eval;
    size_t batch, accum, eval_samples;
    long steps, eval_every, save_every, log_every;
    double stop_at;
    const char *out;
    int json, progress;
    int32_t *ids, *labels;      /* one micro-batch */
    double t0, tokens_seen;
    double last_eval_acc;
    long passed_at;             /* the first step whose evaluation reached --stop-at, or -1 */
} train_run;

enum { MAX_EVAL_BATCH = 64 };

/* Accuracy and loss over r->eval_samples held-out sequences, in batches of at most 64. */
static int evaluate(train_run *r, double *acc, double *loss)
{
    const size_t L = r->eval.len, per = r->eval_samples < MAX_EVAL_BATCH ? r->eval_samples : MAX_EVAL_BATCH;
    int32_t *ids = malloc(per * L * sizeof *ids), *labels = malloc(per * L * sizeof *labels);
    if (!ids || !labels) {
        free(ids);
        free(labels);
        *acc = *loss = 0;
        return cli_error("train", EXIT_RUNTIME, "out of memory for the evaluation batch");
    }
    double loss_sum = 0;
    uint64_t tokens = 0, correct = 0;
    int rc = EXIT_OK;
    for (size_t done = 0, k = 0; done < r->eval_samples; done += per, k++) {
        const size_t n = r->eval_samples - done < per ? r->eval_samples - done : per;
        mamba_train_stats_t s;
        if (!train_data_batch(&r->eval, k, per, ids, labels)) {
            rc = cli_error("train", EXIT_RUNTIME, "evaluation: %s", mamba_last_error(NULL));
            break;
        }
        if (mamba_trainer_evaluate(r->tr, ids, labels, n, L, &s) != MAMBA_OK) {
            rc = cli_error("train", EXIT_RUNTIME, "evaluation: %s", mamba_last_error(r->ctx));
            break;
        }
        loss_sum += s.loss * (double)s.tokens;
        tokens += s.tokens;
        correct += s.correct;
    }
    free(ids);
    free(labels);
    *acc = tokens ? (double)correct / (double)tokens : 0;
    *loss = tokens ? loss_sum / (double)tokens : 0;
    return rc;
}

static int save(train_run *r, long step)
{
    if (mamba_trainer_save(r->tr, r->out) != MAMBA_OK)
        return cli_error("train", EXIT_RUNTIME, "saving step %ld to %s: %s", step, r->out, mamba_last_error(r->ctx));
    return EXIT_OK;
}

static void log_step(train_run *r, const mamba_train_stats_t *s, double tok_s)
{
    const double acc = s->tokens ? (double)s->correct / (double)s->tokens : 0, secs = cli_now() - r->t0;
    if (r->progress) {
        fprintf(stderr, "\rstep %ld/%ld  loss %.4f  acc %5.1f%%  |g| %.3g  lr %.2e  %.0f tok/s   ", s->step, r->steps,
                s->loss, 100 * acc, s->grad_norm, s->lr, tok_s);
        fflush(stderr);
    }
    if (r->json && (s->step % r->log_every == 0 || s->step == r->steps))
        printf("{\"step\":%ld,\"loss\":%.9g,\"accuracy\":%.6f,\"tokens\":%llu,\"grad_norm\":%.6g,\"lr\":%.6g,"
               "\"tokens_per_s\":%.1f,\"seconds\":%.3f}\n",
               s->step, s->loss, acc, (unsigned long long)s->tokens, s->grad_norm, s->lr, tok_s, secs);
}

static int run_eval(train_run *r, long step, int *stop)
{
    double acc = 0, loss = 0;
    const int rc = evaluate(r, &acc, &loss);
    if (rc != EXIT_OK) return rc;
    r->last_eval_acc = acc;
    if (r->progress) fputc('\n', stderr);
    if (r->json)
        printf("{\"step\":%ld,\"eval_loss\":%.9g,\"eval_accuracy\":%.6f,\"eval_samples\":%zu,\"seconds\":%.3f}\n", step,
               loss, acc, r->eval_samples, cli_now() - r->t0);
    else
        fprintf(stderr, "eval at step %ld: loss %.4f, accuracy %.2f%% on %zu held-out sequences\n", step, loss,
                100 * acc, r->eval_samples);
    if (r->stop_at > 0 && acc >= r->stop_at) {
        if (r->passed_at < 0) r->passed_at = step;
        *stop = 1;
    }
    fflush(stdout);
    return EXIT_OK;
}

static int train_loop(train_run *r)
{
    mamba_train_stats_t s;
    memset(&s, 0, sizeof s);
    long step = mamba_trainer_steps_taken(r->tr);
    int stop = 0, rc;
    uint64_t batch_index = (uint64_t)step * r->accum;
    double window_t = cli_now(), window_tokens = 0;
    while (step < r->steps && !stop) {
        for (size_t k = 0; k < r->accum; k++, batch_index++) {
            if (!train_data_batch(&r->data, batch_index, r->batch, r->ids, r->labels))
                return cli_error("train", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
            if (mamba_trainer_accumulate(r->tr, r->ids, r->labels, r->batch, r->data.len, NULL) != MAMBA_OK)
                return cli_error("train", EXIT_RUNTIME, "step %ld: %s", step + 1, mamba_last_error(r->ctx));
        }
        if (mamba_trainer_apply(r->tr, &s) != MAMBA_OK)
            return cli_error("train", EXIT_RUNTIME, "step %ld: %s", step + 1, mamba_last_error(r->ctx));
        step = s.step;
        if (!isfinite(s.loss))
            return cli_error("train", EXIT_RUNTIME, "step %ld: the loss is %g (diverged; try a lower --lr)", step, s.loss);
        const double tokens = (double)(r->batch * r->accum * r->data.len);
        r->tokens_seen += tokens;
        window_tokens += tokens;
        const double now = cli_now();
        log_step(r, &s, window_tokens / (now - window_t));
        if (r->json) fflush(stdout);
        if (now - window_t > 2.0) {
            window_t = now;
            window_tokens = 0;
        }
        if (r->eval_every > 0 && step % r->eval_every == 0 && (rc = run_eval(r, step, &stop)) != EXIT_OK) return rc;
        if (r->save_every > 0 && step % r->save_every == 0 && (rc = save(r, step)) != EXIT_OK) return rc;
    }
    if (r->progress) fputc('\n', stderr);
    if ((r->eval_every <= 0 || step % r->eval_every != 0 || step == 0) && (rc = run_eval(r, step, &stop)) != EXIT_OK)
        return rc;
    if ((rc = save(r, step)) != EXIT_OK) return rc;
    const double secs = cli_now() - r->t0;
    if (r->json)
        printf("{\"done\":true,\"steps\":%ld,\"eval_accuracy\":%.6f,\"passed_at\":%ld,\"tokens\":%.0f,"
               "\"seconds\":%.3f,\"out\":\"%s\"}\n",
               step, r->last_eval_acc, r->passed_at, r->tokens_seen, secs, r->out);
    fprintf(stderr, "train: %ld steps, %.0f tokens in %.1f s (%.0f tokens/s); held-out accuracy %.2f%%; saved to %s\n",
            step, r->tokens_seen, secs, r->tokens_seen / secs, 100 * r->last_eval_acc, r->out);
    return EXIT_OK;
}

typedef struct train_args {
    const char *task, *config, *resume, *out, *data, *tokenizer, *backend, *schedule;
    long steps, batch, len, memorize, accum, warmup, eval_every, eval_samples, save_every, log_every, threads;
    double lr, wd, clip, stop_at;
    unsigned long long seed;
    int json;
} train_args;

static int parse_args(int argc, char **argv, train_args *a)
{
    static const struct option opts[] = {
        {"task", required_argument, 0, 'k'}, {"model-config", required_argument, 0, 'c'},
        {"resume", required_argument, 0, 'r'}, {"out", required_argument, 0, 'o'},
        {"steps", required_argument, 0, 'n'}, {"batch", required_argument, 0, 'B'},
        {"len", required_argument, 0, 'L'}, {"lr", required_argument, 0, 'l'},
        {"memorize", required_argument, 0, 'M'},
        {"weight-decay", required_argument, 0, 'w'}, {"clip", required_argument, 0, 'C'},
        {"schedule", required_argument, 0, 'S'}, {"warmup", required_argument, 0, 'W'},
        {"accum", required_argument, 0, 'a'}, {"seed", required_argument, 0, 's'},
        {"data", required_argument, 0, 'd'}, {"tokenizer", required_argument, 0, 'T'},
        {"eval-every", required_argument, 0, 'e'}, {"eval-samples", required_argument, 0, 'E'},
        {"stop-at", required_argument, 0, 'A'}, {"save-every", required_argument, 0, 'v'},
        {"log-every", required_argument, 0, 'g'}, {"json", no_argument, 0, 'j'},
        {"backend", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "b:t:h", opts, NULL)) != -1) {
        long *lp = NULL, lo = 0, hi = 0;
        double *dp = NULL, dlo = 0, dhi = 0;
        switch (c) {
        case 'k': a->task = optarg; break;
        case 'c': a->config = optarg; break;
        case 'r': a->resume = optarg; break;
        case 'o': a->out = optarg; break;
        case 'd': a->data = optarg; break;
        case 'T': a->tokenizer = optarg; break;
        case 'b': a->backend = optarg; break;
        case 'S': a->schedule = optarg; break;
        case 'j': a->json = 1; break;
        case 'n': lp = &a->steps, lo = 1, hi = 1L << 40; break;
        case 'B': lp = &a->batch, lo = 1, hi = 1 << 20; break;
        case 'L': lp = &a->len, lo = 3, hi = 1L << 30; break;
        case 'M': lp = &a->memorize, lo = 1, hi = 4096; break;
        case 'a': lp = &a->accum, lo = 1, hi = 1 << 20; break;
        case 'W': lp = &a->warmup, lo = 0, hi = 1L << 40; break;
        case 'e': lp = &a->eval_every, lo = 0, hi = 1L << 40; break;
        case 'E': lp = &a->eval_samples, lo = 1, hi = 1 << 24; break;
        case 'v': lp = &a->save_every, lo = 1, hi = 1L << 40; break;
        case 'g': lp = &a->log_every, lo = 1, hi = 1L << 40; break;
        case 't': lp = &a->threads, lo = 1, hi = 4096; break;
        case 'l': dp = &a->lr, dlo = 1e-12, dhi = 10; break;
        case 'w': dp = &a->wd, dlo = 0, dhi = 10; break;
        case 'C': dp = &a->clip, dlo = 0, dhi = 1e30; break;
        case 'A': dp = &a->stop_at, dlo = 1e-9, dhi = 1; break;
        case 's': {
            long v;
            if (!cli_parse_long(optarg, 0, INT64_MAX, &v))
                return cli_error("train", EXIT_USAGE, "--seed '%s': expected an integer >= 0", optarg);
            a->seed = (unsigned long long)v;
            break;
        }
        case 'h': fputs(usage, stdout); return -1;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
        if (lp && !cli_parse_long(optarg, lo, hi, lp))
            return cli_error("train", EXIT_USAGE, "--%s '%s': expected an integer %ld..%ld", cli_option_name(opts, c),
                             optarg, lo, hi);
        if (dp && !cli_parse_float(optarg, dlo, dhi, dp))
            return cli_error("train", EXIT_USAGE, "--%s '%s': expected a number in [%g, %g]", cli_option_name(opts, c),
                             optarg, dlo, dhi);
    }
    if (optind < argc) return cli_error("train", EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
    if (!a->task || !a->out) {
        fputs(usage, stderr);
        return cli_error("train", EXIT_USAGE, "--task and --out are required");
    }
    if (a->config && a->resume) return cli_error("train", EXIT_USAGE, "--model-config and --resume exclude each other");
    const int text = strcmp(a->task, "text") == 0;
    if (!text && !mamba_task_from_name(a->task))
        return cli_error("train", EXIT_USAGE, "--task '%s': expected selective-copying, induction-heads or text", a->task);
    if (text != (a->data != NULL)) return cli_error("train", EXIT_USAGE, "--data goes with --task text, and only with it");
    if (a->tokenizer && !text) return cli_error("train", EXIT_USAGE, "--tokenizer applies to --task text only");
    if (text && !a->tokenizer && !train_data_is_ids_file(a->data))
        return cli_error("train", EXIT_USAGE,
                         "--data %s: a text file needs --tokenizer (or a .safetensors file of input_ids)", a->data);
    if (a->memorize && mamba_task_from_name(a->task) != MAMBA_TASK_SELECTIVE_COPYING)
        return cli_error("train", EXIT_USAGE, "--memorize applies to --task selective-copying only");
    if (a->schedule && strcmp(a->schedule, "constant") != 0 && strcmp(a->schedule, "cosine") != 0)
        return cli_error("train", EXIT_USAGE, "--schedule '%s': expected constant or cosine", a->schedule);
    return EXIT_OK;
}

/* The task's paper recipe where the user gave nothing. */
static void defaults(train_args *a)
{
    const mamba_task_kind_t k = mamba_task_from_name(a->task);
    if (a->steps == 0) a->steps = 10000;
    if (a->batch == 0) a->batch = k == MAMBA_TASK_SELECTIVE_COPYING ? 64 : 8;
    if (a->lr == 0) a->lr = k == MAMBA_TASK_SELECTIVE_COPYING ? 1e-4 : k ? 1e-3 : 6e-4;
    if (a->wd < 0) a->wd = k ? 0 : 0.1;
    if (a->clip < 0) a->clip = 1;
    if (!a->schedule) a->schedule = k ? "constant" : "cosine";
    if (a->warmup < 0) a->warmup = a->steps / 100;
    if (a->eval_every < 0) a->eval_every = 200;
    if (a->eval_samples == 0) a->eval_samples = 256;
    if (a->log_every == 0) a->log_every = 10;
    if (a->accum == 0) a->accum = 1;
}

/* The training and held-out data: a task (the held-out sequences under another seed) or --data. */
static int setup_data(const train_args *a, train_run *r)
{
    const mamba_task_kind_t k = mamba_task_from_name(a->task);
    train_data *d = &r->data;
    if (k) {
        mamba_task_init(&d->task, k);
        if (a->len) d->task.len = (size_t)a->len;
        if (a->memorize) d->task.n_memorize = (int)a->memorize;
        d->vocab = d->task.vocab;
        d->len = d->task.len;
        mamba_task_t probe = d->task;
        int32_t one;
        if (mamba_task_fill(&probe, 0, 0, 0, 1, &one, NULL) != MAMBA_OK)
            return cli_error("train", EXIT_USAGE, "--len %ld: %s", a->len, mamba_last_error(NULL));
    } else {
        mamba_tokenizer_t *tok = NULL;
        if (a->tokenizer && mamba_tokenizer_load(a->tokenizer, &tok) != MAMBA_OK)
            return cli_error("train", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        const int ok = train_data_text("train", a->data, tok, d);
        mamba_tokenizer_free(tok);
        if (!ok) return EXIT_RUNTIME;
        d->len = a->len ? (size_t)a->len : 256;
        if (d->text_len <= d->len)
            return cli_error("train", EXIT_RUNTIME, "--data %s: %zu tokens, fewer than a window of --len %zu plus one",
                             a->data, d->text_len, d->len);
    }
    d->seed = a->seed;
    r->eval = *d;
    r->eval.seed = a->seed ^ 0x5eed5eed5eedULL;
    return EXIT_OK;
}

static int make_trainer(const train_args *a, mamba_context_t *ctx, const train_data *d, mamba_trainer_t **tr)
{
    mamba_train_options_t o;
    mamba_train_options_init(&o);
    o.lr = (float)a->lr;
    o.weight_decay = (float)a->wd;
    o.max_grad_norm = (float)a->clip;
    o.schedule = strcmp(a->schedule, "cosine") == 0 ? MAMBA_LR_WARMUP_COSINE : MAMBA_LR_CONSTANT;
    o.warmup_steps = a->warmup;
    o.total_steps = a->steps;
    if (a->resume) {
        if (mamba_trainer_load(ctx, a->resume, &o, tr) != MAMBA_OK)
            return cli_error("train", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
    } else {
        mamba_config_t cfg;
        mamba_config_init(&cfg);
        if (a->config) {
            if (mamba_config_load(a->config, &cfg) != MAMBA_OK)
                return cli_error("train", EXIT_RUNTIME, "%s", mamba_last_error(NULL));
        } else {
            cfg.d_model = 64;
            cfg.n_layer = 2;
            cfg.vocab_size = d->vocab;
        }
        if (mamba_trainer_create(ctx, &cfg, a->seed, &o, tr) != MAMBA_OK)
            return cli_error("train", EXIT_RUNTIME, "%s", mamba_last_error(ctx));
    }
    mamba_config_t cfg;
    mamba_trainer_config(*tr, &cfg);
    if (cfg.vocab_size < d->vocab)
        return cli_error("train", EXIT_RUNTIME, "the model's vocab_size %d is smaller than the data's %d tokens",
                         cfg.vocab_size, d->vocab);
    return EXIT_OK;
}

int cmd_train(int argc, char **argv)
{
    train_args a = {.wd = -1, .clip = -1, .warmup = -1, .eval_every = -1};
    int rc = parse_args(argc, argv, &a);
    if (rc == -1) return EXIT_OK;
    if (rc != EXIT_OK) return rc;
    defaults(&a);
    train_run r = {.batch = (size_t)a.batch, .accum = (size_t)a.accum, .eval_samples = (size_t)a.eval_samples,
                   .steps = a.steps, .eval_every = a.eval_every, .save_every = a.save_every,
                   .log_every = a.log_every, .stop_at = a.stop_at, .out = a.out, .json = a.json,
                   .progress = isatty(STDERR_FILENO), .passed_at = -1};
    mamba_context_t *ctx = NULL;
    if ((rc = setup_data(&a, &r)) != EXIT_OK) goto done;
    rc = EXIT_RUNTIME;
    if (!(ctx = cli_context("train", a.backend, (int)a.threads))) goto done;
    r.ctx = ctx;
    if ((rc = make_trainer(&a, ctx, &r.data, &r.tr)) != EXIT_OK) goto done;
    rc = EXIT_RUNTIME;
    const size_t n = r.batch * r.data.len > 0 ? r.batch * r.data.len : 1;
    if (!(r.ids = malloc(n * sizeof *r.ids)) || !(r.labels = malloc(n * sizeof *r.labels))) {
        cli_error("train", EXIT_RUNTIME, "out of memory for a batch of %zu x %zu", r.batch, r.data.len);
        goto done;
    }
    mamba_config_t cfg;
    mamba_trainer_config(r.tr, &cfg);
    fprintf(stderr, "train: %s on %s (%s): d_model %d, %d layers, vocab %d, %zu parameter tensors; batch %zu x %zu tokens, "
            "lr %g\n", a.task, mamba_context_backend(ctx), mamba_context_device(ctx), cfg.d_model, cfg.n_layer,
            cfg.vocab_size, mamba_trainer_param_count(r.tr), r.batch * r.accum, r.data.len, a.lr);
    r.t0 = cli_now();
    rc = train_loop(&r);
done:
    free(r.ids);
    free(r.labels);
    free(r.data.text);
    mamba_trainer_free(r.tr);
    mamba_context_free(ctx);
    return rc;
}
