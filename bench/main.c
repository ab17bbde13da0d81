/* mamba-bench: speed of every backend on the same shapes and weights, side by side, against
 * the device's measured limits (copy/read bandwidth, GEMM FLOP/s). */
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static const char usage[] =
    "usage: mamba-bench [OPTIONS]\n"
    "\n"
    "Measure the selective scan and its backward, prefill, decoding and training steps on one\n"
    "or more backends, on the same shapes and weights, against each device's measured\n"
    "copy/read bandwidth and GEMM FLOP/s.\n"
    "With no option: the synthetic 130m on the best backend found: the scan on\n"
    "(1,1536,2048,16), a prefill of 2048 tokens, and 128 decoded tokens after a 2048-token prompt.\n"
    "\n"
    "  --backend=LIST     cpu,opencl,cuda (comma-separated), all (every one available) or\n"
    "                     auto (default: the one 'auto' picks)\n"
    "  --model=M          130m (default), 370m, 790m, 1.4b, 2.8b (synthetic weights, seed 0),\n"
    "                     or a Hugging Face checkpoint directory\n"
    "  --mode=LIST        scan,scan-bwd,prefill,decode,train or all (default all: scan,\n"
    "                     prefill,decode; scan-bwd and train run when named);\n"
    "                     or tokenize alone: the tokenizer's encoding speed (one thread, one\n"
    "                     call a document); or serve alone: load a running `mamba serve`\n"
    "                     (--mode=serve --help)\n"
    "                     scan-bwd: the scan's backward (every gradient) on device-resident\n"
    "                     inputs of the forward's layout and options; bytes as a fused\n"
    "                     backward moves them (reads u, delta, z, dout, B, C; writes du,\n"
    "                     ddelta, dz, dB, dC)\n"
    "                     train: mamba_trainer_step on seeded random ids and labels of\n"
    "                     --batch x --seqlen, a trainer of --model's config (seed 0) or of\n"
    "                     --train-config; tokens/s, ms a step (host clock), the last loss,\n"
    "                     the trainer's memory; --warmup steps untimed, --repeat timed\n"
    "  --tokenizer=FILE   tokenize: a tokenizer.json (or a directory holding one)\n"
    "  --text=FILE        tokenize: JSON lines of {\"text\": ...} documents, or one document\n"
    "  --batch=LIST       batch sizes for prefill, decode and train (default 1), e.g. 1,2,4,8\n"
    "  --seqlen=N         prompt length of prefill and decode, sequence length of train\n"
    "                     (default 2048)\n"
    "  --tokens=N         tokens decoded after the prompt (default 128)\n"
    "  --dtype=T          f32 (default), f16, bf16, q8: the synthetic weights' dtype; q8 (8-bit\n"
    "                     weights, Q8_0) also quantizes a checkpoint's at load\n"
    "  --compute=C        auto (default: 16-bit weights compute on the tensor cores in their\n"
    "                     own dtype, fp32 weights in fp32) or f32 (fp32 arithmetic on any\n"
    "                     weights; as MAMBA_COMPUTE=f32)\n"
    "  --threads=N        CPU threads (default: all)\n"
    "  --warmup=N         untimed runs before the timed ones (default 1)\n"
    "  --repeat=N         timed runs (default 5 for scan and scan-bwd, 3 for prefill, decode\n"
    "                     and train)\n"
    "  --scan-shape=B,D,L,N  the shape of scan and scan-bwd; several separated by ';' or the\n"
    "                     option repeated; default: (1,1536,2048,16) when --mode is not given,\n"
    "                     else the five standard shapes (1,1536,2048,16) (8,1536,2048,16)\n"
    "                     (1,2048,8192,16) (4,5120,2048,16) (1,1536,65536,16)\n"
    "  --train-config=D,L,V  train: a model of d_model D, L layers, vocabulary V (Mamba's\n"
    "                     defaults otherwise) instead of --model's\n"
    "  --all-logits       prefill returns the logits of every position (mamba_forward), not\n"
    "                     only of the last, into memory from mamba_alloc_host\n"
    "  --pageable-logits  with --all-logits: into malloc'd memory instead\n"
    "  --check            compare each backend's outputs with the CPU backend's (max abs\n"
    "                     error, NMSE; scan-bwd: du); exit 1 when a bound is passed (not train)\n"
    "  --json=FILE        write the figures as JSON\n"
    "  --help\n"
    "\n"
    "Decode time counts the new tokens over the time after the prompt (as the Mamba paper's\n"
    "Figure 8). Exit status: 0 success, 1 runtime error or failed check, 2 usage error.\n";

static const size_t standard_scans[][4] = {
    {1, 1536, 2048, 16}, {8, 1536, 2048, 16}, {1, 2048, 8192, 16}, {4, 5120, 2048, 16}, {1, 1536, 65536, 16},
};

#define MAX_SCAN_SHAPES 32

/* Check bounds against the CPU backend (the test suites' bounds). */
#define SCAN_REL_BOUND 1e-5
#define LOGIT_BOUND 1e-3

typedef struct options {
    char backends[MAX_BACKENDS + 1][16]; /* + the CPU reference that --check puts first */
    size_t n_backends;
    int all_backends;
    const char *model;
    int modes[MODE_COUNT];         /* by bench_mode; tokenize has its own flag */
    size_t batches[64], n_batches;
    size_t seqlen, tokens;
    mamba_dtype_t dtype;
    int compute_f32;               /* --compute=f32 */
    int threads, warmup, repeat;
    size_t scan_shapes[MAX_SCAN_SHAPES][4], n_scan_shapes;
    int mode_given;
    int train_cfg[3], have_train_cfg; /* --train-config=d_model,n_layer,vocab */
    int check;
    int all_logits, pageable_logits;
    const char *json;
    int tokenize;                  /* --mode=tokenize */
    const char *tokenizer, *text;
} options;

static int progress_on;

static void progress(const char *fmt, ...)
{
    if (!progress_on) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    fflush(stderr);
    va_end(ap);
}

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (progress_on) fputs("\r\033[K", stderr);
    fputs("mamba-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int parse_size_list(const char *s, size_t *out, size_t cap, size_t *n, size_t lo, size_t hi)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || v < lo || v > hi || *n >= cap || (*end && *end != ',') || (*end == ',' && !end[1])) return 0;
        out[(*n)++] = (size_t)v;
        p = *end ? end + 1 : end;
    }
    return *n > 0;
}

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option opts[] = {
        {"backend", required_argument, 0, 'b'}, {"model", required_argument, 0, 'm'},
        {"mode", required_argument, 0, 'M'}, {"batch", required_argument, 0, 'B'},
        {"seqlen", required_argument, 0, 'L'}, {"tokens", required_argument, 0, 'T'},
        {"dtype", required_argument, 0, 'd'}, {"threads", required_argument, 0, 't'},
        {"warmup", required_argument, 0, 'w'}, {"repeat", required_argument, 0, 'r'},
        {"scan-shape", required_argument, 0, 's'}, {"check", no_argument, 0, 'c'},
        {"json", required_argument, 0, 'j'}, {"all-logits", no_argument, 0, 'A'},
        {"pageable-logits", no_argument, 0, 'P'}, {"tokenizer", required_argument, 0, 'K'},
        {"text", required_argument, 0, 'X'}, {"compute", required_argument, 0, 'C'},
        {"train-config", required_argument, 0, 'G'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->model = "130m";
    o->modes[MODE_SCAN] = o->modes[MODE_PREFILL] = o->modes[MODE_DECODE] = 1;
    o->batches[0] = 1;
    o->n_batches = 1;
    o->seqlen = 2048;
    o->tokens = 128;
    o->warmup = 1;
    o->repeat = 0;
    int c;
    size_t v[8], n;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            /* the last --backend wins */
            o->n_backends = 0;
            o->all_backends = 0;
            if (strcmp(optarg, "all") == 0) { o->all_backends = 1; break; }
            if (strcmp(optarg, "auto") == 0) break;
            {
                char *copy = strdup(optarg), *save = NULL;
                for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                    if (o->n_backends == MAX_BACKENDS || strlen(t) >= 16) {
                        free(copy);
                        return fail("--backend=%s: too many or too long names", optarg) + 1;
                    }
                    snprintf(o->backends[o->n_backends++], 16, "%s", t);
                }
                free(copy);
                if (!o->n_backends) return fail("--backend=%s: expected a list such as cpu,cuda", optarg) + 1;
            }
            break;
        case 'm': o->model = optarg; break;
        case 'M': {
            o->mode_given = 1;
            memset(o->modes, 0, sizeof o->modes);
            o->tokenize = 0;
            char *copy = strdup(optarg), *save = NULL;
            int ok = 1, any = 0;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                any = 1;
                if (strcmp(t, "all") == 0) o->modes[MODE_SCAN] = o->modes[MODE_PREFILL] = o->modes[MODE_DECODE] = 1;
                else if (strcmp(t, "scan") == 0) o->modes[MODE_SCAN] = 1;
                else if (strcmp(t, "scan-bwd") == 0) o->modes[MODE_SCAN_BWD] = 1;
                else if (strcmp(t, "prefill") == 0) o->modes[MODE_PREFILL] = 1;
                else if (strcmp(t, "decode") == 0) o->modes[MODE_DECODE] = 1;
                else if (strcmp(t, "train") == 0) o->modes[MODE_TRAIN] = 1;
                else if (strcmp(t, "tokenize") == 0) o->tokenize = 1;
                else ok = 0;
            }
            free(copy);
            int model_modes = 0;
            for (int m = 0; m < MODE_COUNT; m++) model_modes |= o->modes[m];
            if (!ok || !any || (o->tokenize && model_modes))
                return fail("--mode=%s: expected scan, scan-bwd, prefill, decode, train (comma-separated), all, or "
                            "tokenize alone", optarg) + 1;
            break;
        }
        case 'B':
            if (!parse_size_list(optarg, o->batches, 64, &o->n_batches, 1, 4096))
                return fail("--batch=%s: expected a list of integers 1..4096", optarg) + 1;
            break;
        case 'L':
            if (!parse_size_list(optarg, v, 1, &n, 1, (size_t)1 << 26))
                return fail("--seqlen=%s: expected an integer 1..%zu", optarg, (size_t)1 << 26) + 1;
            o->seqlen = v[0];
            break;
        case 'T':
            if (!parse_size_list(optarg, v, 1, &n, 1, 1 << 20)) return fail("--tokens=%s: expected an integer 1..1048576", optarg) + 1;
            o->tokens = v[0];
            break;
        case 'd':
            if (strcmp(optarg, "f32") == 0) o->dtype = MAMBA_F32;
            else if (strcmp(optarg, "f16") == 0) o->dtype = MAMBA_F16;
            else if (strcmp(optarg, "bf16") == 0) o->dtype = MAMBA_BF16;
            else if (strcmp(optarg, "q8") == 0) o->dtype = MAMBA_Q8;
            else return fail("--dtype=%s: expected f32, f16, bf16 or q8", optarg) + 1;
            break;
        case 'C':
            if (strcmp(optarg, "auto") == 0) o->compute_f32 = 0;
            else if (strcmp(optarg, "f32") == 0) o->compute_f32 = 1;
            else return fail("--compute=%s: expected auto or f32", optarg) + 1;
            break;
        case 't':
            if (!parse_size_list(optarg, v, 1, &n, 1, 4096)) return fail("--threads=%s: expected an integer 1..4096", optarg) + 1;
            o->threads = (int)v[0];
            break;
        case 'w':
            if (!parse_size_list(optarg, v, 1, &n, 0, 1000)) return fail("--warmup=%s: expected an integer 0..1000", optarg) + 1;
            o->warmup = (int)v[0];
            break;
        case 'r':
            if (!parse_size_list(optarg, v, 1, &n, 1, 1000)) return fail("--repeat=%s: expected an integer 1..1000", optarg) + 1;
            o->repeat = (int)v[0];
            break;
        case 's': {
            /* shapes separated by ';', and the option repeated: all of them, in order */
            char *copy = strdup(optarg), *save = NULL;
            int ok = 1;
            for (char *t = strtok_r(copy, ";", &save); t && ok; t = strtok_r(NULL, ";", &save)) {
                ok = parse_size_list(t, v, 4, &n, 1, (size_t)1 << 24) && n == 4 && v[3] <= 256 &&
                     o->n_scan_shapes < MAX_SCAN_SHAPES;
                if (ok) memcpy(o->scan_shapes[o->n_scan_shapes++], v, sizeof o->scan_shapes[0]);
            }
            free(copy);
            if (!ok || !o->n_scan_shapes)
                return fail("--scan-shape=%s: expected B,D,L,N (positive integers, N <= 256), several separated by ';' "
                            "(at most %d shapes)", optarg, MAX_SCAN_SHAPES) + 1;
            break;
        }
        case 'G':
            if (!parse_size_list(optarg, v, 3, &n, 1, (size_t)1 << 20) || n != 3)
                return fail("--train-config=%s: expected d_model,n_layer,vocab (positive integers)", optarg) + 1;
            for (int k = 0; k < 3; k++) o->train_cfg[k] = (int)v[k];
            o->have_train_cfg = 1;
            break;
        case 'c': o->check = 1; break;
        case 'A': o->all_logits = 1; break;
        case 'P': o->pageable_logits = 1; break;
        case 'j': o->json = optarg; break;
        case 'K': o->tokenizer = optarg; break;
        case 'X': o->text = optarg; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc) return fail("unexpected argument '%s'", argv[optind]) + 1;
    if (o->pageable_logits && !o->all_logits) return fail("--pageable-logits needs --all-logits") + 1;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stats(double *ms, int n, double *median, double *min)
{
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    *min = ms[0];
    *median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
}

static double max_abs_diff(const float *a, const float *b, size_t n, double *nmse_out)
{
    double m = 0, num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
        num += d * d;
        den += (double)b[i] * b[i];
    }
    *nmse_out = den > 0 ? num / den : num;
    return m;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

typedef struct target {
    mamba_context_t *ctx;
    mamba_model_t *model;
    device_row dev;
} target;

static mamba_model_t *make_model(mamba_context_t *ctx, const options *o)
{
    mamba_model_t *m = NULL;
    mamba_config_t cfg;
    struct stat sb;
    if (stat(o->model, &sb) == 0) {
        if (mamba_model_load(ctx, o->model, &m) != MAMBA_OK) fail("%s", mamba_last_error(ctx));
    } else if (mamba_config_standard(o->model, &cfg) != MAMBA_OK) {
        fail("--model=%s: not a checkpoint directory nor a size (130m, 370m, 790m, 1.4b, 2.8b)", o->model);
    } else if (mamba_model_create_synthetic(ctx, &cfg, o->dtype, 0, &m) != MAMBA_OK) {
        fail("%s", mamba_last_error(ctx));
    }
    return m;
}

/* Read bandwidth on a buffer far larger than any cache, into *gbps; the device keeps the
 * highest seen. */
static int measure_read(target *t, int runs, double *gbps)
{
    const size_t bytes = (size_t)512 << 20;
    double ms[5], med, mn;
    if (mamba_bench_bandwidth(t->ctx, MAMBA_BANDWIDTH_READ, bytes, 1, runs, ms) != MAMBA_OK)
        return fail("%s", mamba_last_error(t->ctx));
    stats(ms, runs, &med, &mn);
    *gbps = (double)bytes / (mn * 1e6);
    if (*gbps > t->dev.read_gbps) t->dev.read_gbps = *gbps;
    return 0;
}

/* Copy and read bandwidth on a buffer far larger than any cache. */
static int measure_device(target *t)
{
    const size_t bytes = (size_t)512 << 20;
    double ms[5], med, mn;
    if (mamba_bench_bandwidth(t->ctx, MAMBA_BANDWIDTH_COPY, bytes, 1, 5, ms) != MAMBA_OK)
        return fail("%s", mamba_last_error(t->ctx));
    stats(ms, 5, &med, &mn);
    t->dev.copy_gbps = 2.0 * (double)bytes / (mn * 1e6);
    double gbps;
    return measure_read(t, 5, &gbps);
}

/* FLOP/s of the prefill's four GEMMs per layer at rows rows, measured alone. */
static int measure_gemm(target *t, const mamba_config_t *c, size_t rows, mamba_dtype_t dt)
{
    const size_t dm = (size_t)c->d_model, di = (size_t)c->d_inner, nd = (size_t)c->dt_rank + 2 * (size_t)c->d_state;
    const size_t shapes[4][2] = {{2 * di, dm}, {nd, di}, {di, (size_t)c->dt_rank}, {dm, di}};
    double flops = 0, secs = 0;
    for (int i = 0; i < 4; i++) {
        double ms[3], med, mn;
        if (mamba_bench_gemm(t->ctx, rows, shapes[i][0], shapes[i][1], dt, 1, 3, ms) != MAMBA_OK)
            return fail("%s", mamba_last_error(t->ctx));
        stats(ms, 3, &med, &mn);
        flops += 2.0 * (double)rows * (double)shapes[i][0] * (double)shapes[i][1];
        secs += mn * 1e-3;
    }
    t->dev.gemm_gflops = flops / secs * 1e-9;
    return 0;
}

static void fill_ids(int32_t *ids, size_t n, int vocab, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
    }
}

/* The scan (backward 0) or its backward (1) on one shape; --check compares out, or du. */
static int bench_scan(target *ts, size_t nt, const options *o, const size_t shape[4], int backward, result *res,
                      size_t *n_res)
{
    const size_t B = shape[0], D = shape[1], L = shape[2], N = shape[3];
    const size_t out_n = B * L * D;
    const int repeat = o->repeat ? o->repeat : 5;
    float *ref = NULL, *out = NULL;
    if (o->check) {
        ref = malloc(out_n * sizeof *ref);
        out = malloc(out_n * sizeof *out);
        if (!ref || !out) {
            free(ref);
            free(out);
            return fail("out of memory for --check of %s %zux%zux%zux%zu", backward ? "scan-bwd" : "scan", B, D, L, N);
        }
    }
    int bad = 0;
    double *ms = malloc((size_t)repeat * sizeof *ms);
    for (size_t i = 0; i < nt; i++) {
        target *t = &ts[i];
        progress("%s %zux%zux%zux%zu on %s", backward ? "scan-bwd" : "scan", B, D, L, N, t->dev.backend);
        mamba_memory_reset_peak(t->ctx);
        mamba_status_t st = backward ? mamba_bench_scan_backward(t->ctx, B, D, L, N, o->warmup, repeat, ms, o->check ? out : NULL)
                                     : mamba_bench_scan(t->ctx, B, D, L, N, o->warmup, repeat, ms, o->check ? out : NULL);
        if (st != MAMBA_OK) {
            free(ms); free(ref); free(out);
            return fail("%s", mamba_last_error(t->ctx));
        }
        result *r = &res[(*n_res)++];
        memset(r, 0, sizeof *r);
        snprintf(r->backend, sizeof r->backend, "%s", t->dev.backend);
        snprintf(r->device, sizeof r->device, "%s", t->dev.name);
        r->mode = backward ? MODE_SCAN_BWD : MODE_SCAN;
        memcpy(r->shape, shape, sizeof r->shape);
        stats(ms, repeat, &r->median_ms, &r->min_ms);
        /* HBM traffic of a fused scan: read u, delta, z, B, C; write out. Of a fused backward
         * (as mamba_ssm's, which also recomputes the forward on chip): read u, delta, z, dout,
         * B, C; write du, ddelta, dz, dB, dC (dA, dD, ddelta_bias are per channel: left out) */
        const double bld = (double)(B * L * D), bln = (double)(B * L * N);
        double bytes = backward ? 4.0 * (7.0 * bld + 4.0 * bln) : 4.0 * (4.0 * bld + 2.0 * bln);
        r->gbps = bytes / (r->median_ms * 1e6);
        r->roofline_pct = 100.0 * r->gbps / t->dev.copy_gbps;
        r->limit = "copy";
        r->tokens_per_s = -1;
        uint64_t cur;
        mamba_memory_usage(t->ctx, &cur, &r->peak_mem);
        r->max_abs_err = r->nmse = -1;
        if (o->check) {
            if (i == 0 && strcmp(t->dev.backend, "cpu") == 0) {
                memcpy(ref, out, out_n * sizeof *ref);
                r->max_abs_err = 0;
                r->nmse = 0;
            } else if (ref) {
                r->max_abs_err = max_abs_diff(out, ref, out_n, &r->nmse);
                if (r->max_abs_err > SCAN_REL_BOUND * max_abs(ref, out_n)) bad = 1;
            }
        }
    }
    free(ms);
    free(ref);
    free(out);
    return bad ? -1 : 0;
}

/* ids[b] = argmax of logits row b, the first on ties */
static void greedy(const float *logits, size_t batch, size_t V, int32_t *ids)
{
    for (size_t b = 0; b < batch; b++) {
        const float *row = logits + b * V;
        size_t best = 0;
        for (size_t v = 1; v < V; v++) best = row[v] > row[best] ? v : best;
        ids[b] = (int32_t)best;
    }
}

static int bench_model(target *ts, size_t nt, const options *o, bench_mode mode, size_t batch, result *res,
                       size_t *n_res)
{
    mamba_model_info_t info;
    mamba_model_info(ts[0].model, &info);
    const size_t V = (size_t)info.config.vocab_size, L = o->seqlen, T = o->tokens;
    const int repeat = o->repeat ? o->repeat : 3;
    int32_t *ids = malloc(batch * L * sizeof *ids), *step_ids = malloc(batch * sizeof *step_ids);
    int32_t *gen = malloc(batch * (T ? T : 1) * sizeof *gen);
    const size_t out_rows = mode == MODE_PREFILL && o->all_logits ? batch * L : batch;
    float *logits = malloc(out_rows * V * sizeof *logits), *ref = calloc(batch * V, sizeof *ref);
    double *ms = calloc((size_t)repeat, sizeof *ms), *read_bw = calloc((size_t)repeat, sizeof *read_bw);
    if (!ids || !step_ids || !gen || !logits || !ref || !ms || !read_bw) {
        free(ids); free(step_ids); free(gen); free(logits); free(ref); free(ms); free(read_bw);
        return fail("out of memory for batch %zu x %zu tokens", batch, L);
    }
    fill_ids(ids, batch * L, info.config.vocab_size, 12345);
    int rc = 0, bad = 0;
    for (size_t i = 0; i < nt && rc == 0; i++) {
        target *t = &ts[i];
        mamba_model_info_t mi;
        mamba_model_info(t->model, &mi);
        mamba_memory_reset_peak(t->ctx);
        mamba_state_t *s = NULL;
        if (mamba_state_create(t->model, batch, &s) != MAMBA_OK) {
            rc = fail("%s", mamba_last_error(t->ctx));
            break;
        }
        /* all logits: into the memory a user of mamba_forward would give them (page-locked
         * from mamba_alloc_host unless --pageable-logits) */
        float *all = NULL;
        if (mode == MODE_PREFILL && o->all_logits) {
            all = o->pageable_logits ? logits : mamba_alloc_host(t->ctx, out_rows * V * sizeof *all);
            if (!all) {
                rc = fail("%s", mamba_last_error(t->ctx));
                mamba_state_free(s);
                break;
            }
        }
        double first_err = -1, first_nmse = -1;
        uint64_t run_peak = 0;
        /* A machine whose memory is shared with other tenants reads at different speeds at
         * different times (the 2-core development machine: 50 or 85 GB/s, minutes apart). So
         * decoding, bound by it, probes the read bandwidth between its timed runs, and each
         * run's fraction is of the higher of the probes just before and just after it. */
        double bw_before = t->dev.read_gbps;
        for (int k = 0; k < o->warmup + repeat && rc == 0; k++) {
            progress("%s batch %zu on %s: run %d of %d", mode_name(mode), batch, t->dev.backend, k + 1, o->warmup + repeat);
            double t_ms = 0;
            mamba_status_t st = mamba_state_reset(s);
            if (mode == MODE_PREFILL) {
                if (st == MAMBA_OK) st = mamba_timer_start(t->ctx);
                if (st == MAMBA_OK)
                    st = all ? mamba_forward(t->model, ids, batch, L, MAMBA_LOGITS_ALL, all)
                             : mamba_prefill(s, ids, L, logits);
                if (st == MAMBA_OK) st = mamba_timer_stop(t->ctx, &t_ms);
                if (st == MAMBA_OK && all) /* compare the last position */
                    for (size_t bb = 0; bb < batch; bb++)
                        memmove(logits + bb * V, all + (bb * L + L - 1) * V, V * sizeof *logits);
            } else {
                /* the first new token comes from the prompt's logits; then T steps, greedy, on
                 * the device where the backend can */
                if (st == MAMBA_OK) st = mamba_prefill(s, ids, L, logits);
                if (st == MAMBA_OK) greedy(logits, batch, V, step_ids);
                /* --check compares the first step's logits: the same input on every backend */
                if (st == MAMBA_OK && k == 0 && o->check) {
                    st = mamba_step(s, step_ids, logits);
                    if (st == MAMBA_OK && i == 0) memcpy(ref, logits, batch * V * sizeof *ref);
                    else if (st == MAMBA_OK) first_err = max_abs_diff(logits, ref, batch * V, &first_nmse);
                    if (st == MAMBA_OK) st = mamba_state_reset(s);
                    if (st == MAMBA_OK) st = mamba_prefill(s, ids, L, logits);
                }
                if (st == MAMBA_OK) st = mamba_timer_start(t->ctx);
                if (st == MAMBA_OK) st = mamba_generate_greedy(s, step_ids, T, gen);
                if (st == MAMBA_OK) st = mamba_timer_stop(t->ctx, &t_ms);
            }
            if (st != MAMBA_OK) {
                rc = fail("%s", mamba_last_error(t->ctx));
                break;
            }
            if (mode == MODE_PREFILL && k == 0 && o->check) {
                if (i == 0) memcpy(ref, logits, batch * V * sizeof *ref);
                else first_err = max_abs_diff(logits, ref, batch * V, &first_nmse);
            }
            if (k >= o->warmup) ms[k - o->warmup] = t_ms;
            if (k >= o->warmup && mode == MODE_DECODE) {
                /* the probe's buffer is not the decoding's memory */
                uint64_t cur, peak;
                mamba_memory_usage(t->ctx, &cur, &peak);
                if (peak > run_peak) run_peak = peak;
                double after = 0;
                if (measure_read(t, 2, &after) != 0) rc = 1;
                mamba_memory_reset_peak(t->ctx);
                read_bw[k - o->warmup] = after > bw_before ? after : bw_before;
                bw_before = after;
            }
        }
        mamba_state_free(s);
        if (all != logits) mamba_free_host(t->ctx, all);
        if (rc != 0) break;
        result *r = &res[(*n_res)++];
        memset(r, 0, sizeof *r);
        snprintf(r->backend, sizeof r->backend, "%s", t->dev.backend);
        snprintf(r->device, sizeof r->device, "%s", t->dev.name);
        snprintf(r->model, sizeof r->model, "%s", o->model);
        r->mode = mode;
        r->dtype = mi.dtype;
        /* the rows of one pass: a prefill's chunk of every sequence (2048 tokens each, the
         * context's default prefill_chunk), a decoding step's batch */
        const size_t rows = mode == MODE_PREFILL ? batch * (L < 2048 ? L : 2048) : batch;
        if (mamba_model_compute_dtype(t->model, rows, &r->compute_dtype) != MAMBA_OK) {
            rc = fail("%s", mamba_last_error(NULL));
            (*n_res)--;
            break;
        }
        r->batch = batch;
        r->seqlen = L;
        r->tokens = mode == MODE_DECODE ? T : 0;
        r->all_logits = mode == MODE_PREFILL && o->all_logits ? 1 + o->pageable_logits : 0;
        if (mode == MODE_DECODE) /* each run's fraction, before stats() sorts the times */
            for (int k = 0; k < repeat; k++)
                read_bw[k] = 100.0 * (double)mi.weight_bytes * (double)T / (ms[k] * 1e6) / read_bw[k];
        stats(ms, repeat, &r->median_ms, &r->min_ms);
        r->gbps = -1;
        const mamba_config_t *c = &mi.config;
        if (mode == MODE_PREFILL) {
            r->tokens_per_s = (double)(batch * L) / (r->median_ms * 1e-3);
            const double per_tok = 2.0 * ((double)(2 * c->d_inner) * c->d_model +
                                          (double)(c->dt_rank + 2 * c->d_state) * c->d_inner +
                                          (double)c->d_inner * c->dt_rank + (double)c->d_model * c->d_inner);
            const double gflops = per_tok * c->n_layer * (double)(batch * L) / (r->median_ms * 1e6);
            r->roofline_pct = t->dev.gemm_gflops > 0 ? 100.0 * gflops / t->dev.gemm_gflops : 0;
            r->limit = "GEMM";
        } else {
            r->tokens_per_s = (double)(batch * T) / (r->median_ms * 1e-3);
            /* every step reads every weight once: the median over the runs of each run's
             * bytes / time / read bandwidth around it */
            double mn;
            stats(read_bw, repeat, &r->roofline_pct, &mn);
            r->limit = "read";
        }
        uint64_t cur;
        mamba_memory_usage(t->ctx, &cur, &r->peak_mem);
        if (run_peak > r->peak_mem) r->peak_mem = run_peak;
        r->max_abs_err = r->nmse = -1;
        if (o->check) {
            r->max_abs_err = i == 0 ? 0 : first_err;
            r->nmse = i == 0 ? 0 : first_nmse;
            if (i > 0 && first_err > LOGIT_BOUND) bad = 1;
        }
    }
    free(ids); free(step_ids); free(gen); free(logits); free(ref); free(ms); free(read_bw);
    return rc ? rc : bad ? -1 : 0;
}

/* The trainer of --train-config, of --model's size, or from --model's checkpoint directory. */
static mamba_trainer_t *make_trainer(mamba_context_t *ctx, const options *o)
{
    mamba_trainer_t *tr = NULL;
    mamba_config_t cfg;
    struct stat sb;
    if (o->have_train_cfg) {
        mamba_config_init(&cfg);
        cfg.d_model = o->train_cfg[0];
        cfg.n_layer = o->train_cfg[1];
        cfg.vocab_size = o->train_cfg[2];
        if (mamba_trainer_create(ctx, &cfg, 0, NULL, &tr) != MAMBA_OK) fail("%s", mamba_last_error(ctx));
    } else if (stat(o->model, &sb) == 0) {
        if (mamba_trainer_load(ctx, o->model, NULL, &tr) != MAMBA_OK) fail("%s", mamba_last_error(ctx));
    } else if (mamba_config_standard(o->model, &cfg) != MAMBA_OK) {
        fail("--model=%s: not a checkpoint directory nor a size (130m, 370m, 790m, 1.4b, 2.8b)", o->model);
    } else if (mamba_trainer_create(ctx, &cfg, 0, NULL, &tr) != MAMBA_OK) {
        fail("%s", mamba_last_error(ctx));
    }
    return tr;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Training steps (mamba_trainer_step: forward, backward, AdamW) on one batch of seeded random
 * ids and labels: warmup untimed steps, then repeat timed ones, by the host's clock (a step
 * returns its loss, so it has waited for the device). */
static int bench_train(target *ts, mamba_trainer_t **trs, size_t nt, const options *o, size_t batch, result *res,
                       size_t *n_res)
{
    mamba_config_t cfg;
    mamba_trainer_config(trs[0], &cfg);
    const size_t L = o->seqlen, n = batch * L;
    const int repeat = o->repeat ? o->repeat : 3;
    int32_t *ids = malloc(n * sizeof *ids), *labels = malloc(n * sizeof *labels);
    double *ms = calloc((size_t)repeat, sizeof *ms);
    if (!ids || !labels || !ms) {
        free(ids); free(labels); free(ms);
        return fail("out of memory for batch %zu x %zu tokens", batch, L);
    }
    fill_ids(ids, n, cfg.vocab_size, 12345);
    fill_ids(labels, n, cfg.vocab_size, 54321);
    int rc = 0;
    for (size_t i = 0; i < nt && rc == 0; i++) {
        target *t = &ts[i];
        mamba_memory_reset_peak(t->ctx);
        mamba_train_stats_t s = {0};
        for (int k = 0; k < o->warmup + repeat; k++) {
            progress("train batch %zu on %s: step %d of %d", batch, t->dev.backend, k + 1, o->warmup + repeat);
            const double t0 = now_ms();
            mamba_status_t st = mamba_trainer_step(trs[i], ids, labels, batch, L, &s);
            if (st == MAMBA_OK) st = mamba_context_synchronize(t->ctx);
            if (st != MAMBA_OK) {
                rc = fail("%s", mamba_last_error(t->ctx));
                break;
            }
            if (k >= o->warmup) ms[k - o->warmup] = now_ms() - t0;
        }
        if (rc) break;
        result *r = &res[(*n_res)++];
        memset(r, 0, sizeof *r);
        snprintf(r->backend, sizeof r->backend, "%s", t->dev.backend);
        snprintf(r->device, sizeof r->device, "%s", t->dev.name);
        if (o->have_train_cfg)
            snprintf(r->model, sizeof r->model, "d%d-l%d-v%d", cfg.d_model, cfg.n_layer, cfg.vocab_size);
        else
            snprintf(r->model, sizeof r->model, "%s", o->model);
        r->mode = MODE_TRAIN;
        /* the trainer's master weights and arithmetic are fp32 (mamba.h, "training") */
        r->dtype = r->compute_dtype = MAMBA_F32;
        r->batch = batch;
        r->seqlen = L;
        r->steps = repeat;
        r->warmup_steps = o->warmup;
        r->loss = s.loss;
        stats(ms, repeat, &r->median_ms, &r->min_ms);
        r->tokens_per_s = (double)n / (r->median_ms * 1e-3);
        r->gbps = -1;
        /* model FLOPs: the layers' four GEMMs and the LM head, three times (forward, the
         * inputs' and the weights' gradients), against the fp32 GEMM rate on the layers' shapes */
        const double per_tok = 2.0 * ((double)(2 * cfg.d_inner) * cfg.d_model +
                                      (double)(cfg.dt_rank + 2 * cfg.d_state) * cfg.d_inner +
                                      (double)cfg.d_inner * cfg.dt_rank + (double)cfg.d_model * cfg.d_inner) * cfg.n_layer +
                               2.0 * (double)cfg.d_model * cfg.vocab_size;
        const double gflops = 3.0 * per_tok * (double)n / (r->median_ms * 1e6);
        r->roofline_pct = t->dev.gemm_gflops > 0 ? 100.0 * gflops / t->dev.gemm_gflops : 0;
        r->limit = "GEMM";
        uint64_t cur;
        mamba_memory_usage(t->ctx, &cur, &r->peak_mem);
        mamba_trainer_memory(trs[i], &r->param_bytes, &r->activation_bytes);
        r->max_abs_err = r->nmse = -1;
    }
    free(ids); free(labels); free(ms);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--mode=serve") == 0 || (strcmp(argv[i], "--mode") == 0 && i + 1 < argc && strcmp(argv[i + 1], "serve") == 0))
            return bench_serve(argc, argv);
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc;
    progress_on = isatty(2);
    if (o.tokenize) {
        result r;
        rc = bench_tokenize(o.tokenizer, o.text, o.warmup, o.repeat ? o.repeat : 5, &r);
        if (rc) return rc;
        report_table(NULL, 0, &r, 1);
        if (o.json && !report_json(o.json, NULL, 0, &r, 1)) return fail("cannot write %s", o.json);
        return 0;
    }
    /* which backends: auto, all available, or the named ones (each must exist) */
    mamba_backend_info_t be[8];
    size_t nb;
    mamba_list_backends(be, 8, &nb);
    if (o.all_backends) {
        for (size_t i = 0; i < nb; i++)
            if (be[i].available) snprintf(o.backends[o.n_backends++], 16, "%s", be[i].name);
    }
    if (o.check && o.n_backends && strcmp(o.backends[0], "cpu") != 0) {
        /* the CPU reference runs first */
        for (size_t i = o.n_backends; i > 0; i--) memcpy(o.backends[i], o.backends[i - 1], 16);
        snprintf(o.backends[0], 16, "cpu");
        o.n_backends++;
    }
    size_t nt = o.n_backends ? o.n_backends : 1;
    target ts[MAX_BACKENDS + 1];
    memset(ts, 0, sizeof ts);
    mamba_trainer_t *trainers[MAX_BACKENDS + 1] = {0};
    int status = 0;
    result *res = calloc(4096, sizeof *res);
    size_t n_res = 0;
    for (size_t i = 0; i < nt; i++) {
        mamba_context_options_t co;
        mamba_context_options_init(&co);
        co.backend = o.n_backends ? o.backends[i] : "auto";
        co.n_threads = o.threads;
        if (o.compute_f32) co.compute = MAMBA_COMPUTE_F32;
        if (o.dtype == MAMBA_Q8) co.weights = MAMBA_WEIGHTS_Q8;
        if (mamba_context_create(&co, &ts[i].ctx) != MAMBA_OK) {
            status = fail("%s", mamba_last_error(NULL));
            nt = i;
            goto done;
        }
        snprintf(ts[i].dev.backend, sizeof ts[i].dev.backend, "%s", mamba_context_backend(ts[i].ctx));
        snprintf(ts[i].dev.name, sizeof ts[i].dev.name, "%s", mamba_context_device(ts[i].ctx));
        progress("measuring the bandwidth of %s", ts[i].dev.backend);
        if ((status = measure_device(&ts[i])) != 0) {
            nt = i + 1;
            goto done;
        }
    }
    if (o.check && strcmp(ts[0].dev.backend, "cpu") != 0) {
        /* auto picked a GPU: add the CPU reference in front */
        memmove(&ts[1], &ts[0], nt * sizeof ts[0]);
        memset(&ts[0], 0, sizeof ts[0]);
        mamba_context_options_t co;
        mamba_context_options_init(&co);
        co.backend = "cpu";
        co.n_threads = o.threads;
        if (o.compute_f32) co.compute = MAMBA_COMPUTE_F32;
        if (o.dtype == MAMBA_Q8) co.weights = MAMBA_WEIGHTS_Q8;
        if (mamba_context_create(&co, &ts[0].ctx) != MAMBA_OK) {
            status = fail("%s", mamba_last_error(NULL));
            goto done;
        }
        nt++;
        snprintf(ts[0].dev.backend, sizeof ts[0].dev.backend, "cpu");
        snprintf(ts[0].dev.name, sizeof ts[0].dev.name, "%s", mamba_context_device(ts[0].ctx));
        if ((status = measure_device(&ts[0])) != 0) goto done;
    }
    int check_failed = 0;
    for (int backward = 0; backward < 2; backward++) {
        if (!o.modes[backward ? MODE_SCAN_BWD : MODE_SCAN]) continue;
        size_t n_shapes = o.n_scan_shapes ? o.n_scan_shapes : o.mode_given ? 5 : 1;
        for (size_t k = 0; k < n_shapes; k++) {
            int r = bench_scan(ts, nt, &o, o.n_scan_shapes ? o.scan_shapes[k] : standard_scans[k], backward, res, &n_res);
            if (r > 0) { status = r; goto report; }
            if (r < 0) check_failed = 1;
        }
    }
    if (o.modes[MODE_PREFILL] || o.modes[MODE_DECODE]) {
        for (size_t i = 0; i < nt; i++) {
            progress("creating the %s model on %s", o.model, ts[i].dev.backend);
            if (!(ts[i].model = make_model(ts[i].ctx, &o))) { status = 1; goto report; }
        }
        mamba_model_info_t info;
        mamba_model_info(ts[0].model, &info);
        printf("model %s: d_model %d, %d layers, vocab %d, %.1fM parameters, %.1f MiB of %s weights\n", o.model,
               info.config.d_model, info.config.n_layer, info.config.vocab_size, (double)info.n_params / 1e6,
               (double)info.weight_bytes / (1 << 20), mamba_dtype_name(info.dtype));
        for (size_t b = 0; b < o.n_batches; b++) {
            if (o.modes[MODE_PREFILL]) {
                size_t rows = o.batches[b] * o.seqlen;
                if (rows > 8192) rows = 8192 > o.batches[b] ? 8192 / o.batches[b] * o.batches[b] : o.batches[b];
                for (size_t i = 0; i < nt; i++) {
                    progress("measuring GEMM FLOP/s on %s", ts[i].dev.backend);
                    if ((status = measure_gemm(&ts[i], &info.config, rows, info.dtype)) != 0) goto report;
                }
                int r = bench_model(ts, nt, &o, MODE_PREFILL, o.batches[b], res, &n_res);
                if (r > 0) { status = r; goto report; }
                if (r < 0) check_failed = 1;
            }
            if (o.modes[MODE_DECODE]) {
                int r = bench_model(ts, nt, &o, MODE_DECODE, o.batches[b], res, &n_res);
                if (r > 0) { status = r; goto report; }
                if (r < 0) check_failed = 1;
            }
        }
    }
    if (o.modes[MODE_TRAIN]) {
        for (size_t i = 0; i < nt; i++) {
            progress("creating the trainer on %s", ts[i].dev.backend);
            if (!(trainers[i] = make_trainer(ts[i].ctx, &o))) { status = 1; goto report; }
        }
        mamba_config_t cfg;
        mamba_trainer_config(trainers[0], &cfg);
        uint64_t pb, ab;
        mamba_trainer_memory(trainers[0], &pb, &ab);
        printf("trainer: d_model %d, %d layers, vocab %d, %.1f MiB of parameters, gradients and moments\n", cfg.d_model,
               cfg.n_layer, cfg.vocab_size, (double)pb / (1 << 20));
        for (size_t b = 0; b < o.n_batches; b++) {
            size_t rows = o.batches[b] * o.seqlen;
            if (rows > 8192) rows = 8192 > o.batches[b] ? 8192 / o.batches[b] * o.batches[b] : o.batches[b];
            for (size_t i = 0; i < nt; i++) {
                progress("measuring GEMM FLOP/s on %s", ts[i].dev.backend);
                if ((status = measure_gemm(&ts[i], &cfg, rows, MAMBA_F32)) != 0) goto report;
            }
            int r = bench_train(ts, trainers, nt, &o, o.batches[b], res, &n_res);
            if (r) { status = r; goto report; }
        }
    }
    if (check_failed) status = fail("--check: a backend's outputs differ from the CPU's beyond the bounds (scan %g relative, logits %g)",
                                    SCAN_REL_BOUND, LOGIT_BOUND);
report:
    progress("");
    if (progress_on) fputs("\r\033[K", stderr);
    {
        device_row devs[MAX_BACKENDS + 1];
        for (size_t i = 0; i < nt; i++) devs[i] = ts[i].dev;
        report_table(devs, nt, res, n_res);
        if (o.json && !report_json(o.json, devs, nt, res, n_res)) status = fail("cannot write %s", o.json);
    }
done:
    for (size_t i = 0; i < nt; i++) {
        mamba_trainer_free(trainers[i]);
        mamba_model_free(ts[i].model);
        mamba_context_free(ts[i].ctx);
    }
    free(res);
    return status;
}
