/* mamba-bench output: one table on stdout, and the same figures as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include <cjson/cJSON.h>

#include "bench.h"

const char *mode_name(bench_mode m)
{
    switch (m) {
    case MODE_SCAN: return "scan";
    case MODE_SCAN_BWD: return "scan-bwd";
    case MODE_PREFILL: return "prefill";
    case MODE_DECODE: return "decode";
    case MODE_TRAIN: return "train";
    default: return "tokenize";
    }
}

static void human_bytes(char *buf, size_t len, uint64_t b)
{
    if (b >= (1ull << 30)) snprintf(buf, len, "%.2f GiB", (double)b / (1ull << 30));
    else snprintf(buf, len, "%.1f MiB", (double)b / (1ull << 20));
}

/* A tokenize row: the text, the speed in MB/s and tokens/s, the load time. */
static void tokenize_row(const result *r)
{
    char shape[64], thr[32];
    snprintf(shape, sizeof shape, "%.1f MB, %zu docs", (double)r->text_bytes / 1e6, r->n_docs);
    snprintf(thr, sizeof thr, "%.2f MB/s", r->mb_per_s);
    printf("%-8s %-22s %-8s %11.3f %11.3f %16s %14s  %s: %zu tokens (%.0f/s), loaded in %.0f ms\n", mode_name(r->mode), shape,
           r->backend, r->median_ms, r->min_ms, thr, "-", r->model, r->tokens, r->tokens_per_s, r->load_ms);
}

void report_table(const device_row *devs, size_t n_devs, const result *res, size_t n_res)
{
    if (n_devs) printf("\n%-8s %-44s %10s %10s %13s\n", "backend", "device", "copy GB/s", "read GB/s", "GEMM GFLOP/s");
    for (size_t i = 0; i < n_devs; i++) {
        char g[32] = "-";
        if (devs[i].gemm_gflops > 0) snprintf(g, sizeof g, "%.0f", devs[i].gemm_gflops);
        printf("%-8s %-44.44s %10.1f %10.1f %13s\n", devs[i].backend, devs[i].name, devs[i].copy_gbps, devs[i].read_gbps, g);
    }
    printf("\n%-8s %-22s %-8s %11s %11s %16s %14s %10s %9s %9s\n", "mode", "shape", "backend", "median ms", "min ms",
           "throughput", "% of limit", "peak mem", "max err", "nmse");
    for (size_t i = 0; i < n_res; i++) {
        const result *r = &res[i];
        if (r->mode == MODE_TOKENIZE) {
            tokenize_row(r);
            continue;
        }
        char shape[64], thr[32], pct[32], mem[32], err[16] = "-", nm[16] = "-";
        if (r->mode == MODE_SCAN || r->mode == MODE_SCAN_BWD)
            snprintf(shape, sizeof shape, "%zux%zux%zux%zu", r->shape[0], r->shape[1], r->shape[2], r->shape[3]);
        else if (r->mode == MODE_PREFILL)
            snprintf(shape, sizeof shape, "b%zu L%zu%s", r->batch, r->seqlen, r->all_logits == 2 ? " all-logits pageable"
                                                                                  : r->all_logits ? " all-logits" : "");
        else if (r->mode == MODE_TRAIN)
            snprintf(shape, sizeof shape, "b%zu L%zu", r->batch, r->seqlen);
        else
            snprintf(shape, sizeof shape, "b%zu L%zu+%zu", r->batch, r->seqlen, r->tokens);
        if (r->gbps >= 0) snprintf(thr, sizeof thr, "%.1f GB/s", r->gbps);
        else snprintf(thr, sizeof thr, "%.0f tok/s", r->tokens_per_s);
        snprintf(pct, sizeof pct, "%.0f%% %s", r->roofline_pct, r->limit);
        human_bytes(mem, sizeof mem, r->peak_mem);
        if (r->max_abs_err >= 0) {
            snprintf(err, sizeof err, "%.2g", r->max_abs_err);
            snprintf(nm, sizeof nm, "%.2g", r->nmse);
        }
        printf("%-8s %-22s %-8s %11.3f %11.3f %16s %14s %10s %9s %9s", mode_name(r->mode), shape, r->backend,
               r->median_ms, r->min_ms, thr, pct, mem, err, nm);
        if (r->mode == MODE_TRAIN) {
            char pb[32], ab[32];
            human_bytes(pb, sizeof pb, r->param_bytes);
            human_bytes(ab, sizeof ab, r->activation_bytes);
            printf("  %s: loss %.4f, trainer %s + %s activations", r->model, r->loss, pb, ab);
        }
        putchar('\n');
    }
}

static cJSON *num_or_null(double v, int valid) { return valid ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

int report_json(const char *path, const device_row *devs, size_t n_devs, const result *res, size_t n_res)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", mamba_version());
    struct utsname u;
    char host[512] = "unknown";
    if (uname(&u) == 0) snprintf(host, sizeof host, "%s %s %s", u.nodename, u.sysname, u.machine);
    cJSON_AddStringToObject(root, "host", host);
    cJSON *dv = cJSON_AddArrayToObject(root, "devices");
    for (size_t i = 0; i < n_devs; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "backend", devs[i].backend);
        cJSON_AddStringToObject(d, "name", devs[i].name);
        cJSON_AddNumberToObject(d, "copy_gbps", devs[i].copy_gbps);
        cJSON_AddNumberToObject(d, "read_gbps", devs[i].read_gbps);
        cJSON_AddItemToObject(d, "gemm_gflops", num_or_null(devs[i].gemm_gflops, devs[i].gemm_gflops > 0));
        cJSON_AddItemToArray(dv, d);
    }
    cJSON *rs = cJSON_AddArrayToObject(root, "results");
    for (size_t i = 0; i < n_res; i++) {
        const result *r = &res[i];
        cJSON *o = cJSON_CreateObject();
        if (r->mode == MODE_TOKENIZE) {
            cJSON_AddStringToObject(o, "mode", mode_name(r->mode));
            cJSON_AddStringToObject(o, "text", r->model);
            cJSON_AddNumberToObject(o, "text_bytes", (double)r->text_bytes);
            cJSON_AddNumberToObject(o, "documents", (double)r->n_docs);
            cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
            cJSON_AddNumberToObject(o, "median_ms", r->median_ms);
            cJSON_AddNumberToObject(o, "min_ms", r->min_ms);
            cJSON_AddNumberToObject(o, "mb_per_s", r->mb_per_s);
            cJSON_AddNumberToObject(o, "tokens_per_s", r->tokens_per_s);
            cJSON_AddNumberToObject(o, "load_ms", r->load_ms);
            cJSON_AddItemToArray(rs, o);
            continue;
        }
        const int scan = r->mode == MODE_SCAN || r->mode == MODE_SCAN_BWD, train = r->mode == MODE_TRAIN;
        cJSON_AddStringToObject(o, "backend", r->backend);
        cJSON_AddStringToObject(o, "device", r->device);
        cJSON_AddStringToObject(o, "mode", mode_name(r->mode));
        cJSON_AddItemToObject(o, "model", scan ? cJSON_CreateNull() : cJSON_CreateString(r->model));
        cJSON_AddStringToObject(o, "dtype", mamba_dtype_name(scan ? MAMBA_F32 : r->dtype));
        cJSON_AddStringToObject(o, "weights_dtype", mamba_dtype_name(scan ? MAMBA_F32 : r->dtype));
        /* what the layers' GEMMs multiply in (mamba_model_compute_dtype; the trainer: fp32) */
        cJSON_AddStringToObject(o, "compute_dtype", mamba_dtype_name(scan ? MAMBA_F32 : r->compute_dtype));
        cJSON_AddItemToObject(o, "batch", num_or_null((double)(scan ? r->shape[0] : r->batch), 1));
        cJSON_AddItemToObject(o, "seqlen", num_or_null((double)(scan ? r->shape[2] : r->seqlen), 1));
        cJSON_AddItemToObject(o, "tokens", num_or_null((double)r->tokens, r->mode == MODE_DECODE));
        cJSON_AddItemToObject(o, "logits", r->mode == MODE_PREFILL ? cJSON_CreateString(r->all_logits ? "all" : "last")
                                                                   : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "logits_memory",
                              r->all_logits ? cJSON_CreateString(r->all_logits == 2 ? "pageable" : "mamba_alloc_host")
                                            : cJSON_CreateNull());
        if (scan) {
            cJSON *sh = cJSON_AddArrayToObject(o, "shape");
            for (int k = 0; k < 4; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)r->shape[k]));
        } else {
            cJSON_AddNullToObject(o, "shape");
        }
        cJSON_AddNumberToObject(o, "median_ms", r->median_ms);
        cJSON_AddNumberToObject(o, "min_ms", r->min_ms);
        cJSON_AddItemToObject(o, "tokens_per_s", num_or_null(r->tokens_per_s, r->tokens_per_s >= 0));
        cJSON_AddItemToObject(o, "gbps", num_or_null(r->gbps, r->gbps >= 0));
        cJSON_AddNumberToObject(o, "roofline_pct", r->roofline_pct);
        cJSON_AddStringToObject(o, "roofline_of", r->limit);
        cJSON_AddNumberToObject(o, "peak_mem_bytes", (double)r->peak_mem);
        cJSON_AddItemToObject(o, "max_abs_err", num_or_null(r->max_abs_err, r->max_abs_err >= 0));
        cJSON_AddItemToObject(o, "nmse", num_or_null(r->nmse, r->max_abs_err >= 0));
        /* the scans run on device-resident inputs (mamba_bench_scan, _scan_backward) */
        if (scan) cJSON_AddBoolToObject(o, "includes_transfers", 0);
        if (train) {
            cJSON_AddNumberToObject(o, "loss", r->loss);
            cJSON_AddNumberToObject(o, "param_bytes", (double)r->param_bytes);
            cJSON_AddNumberToObject(o, "activation_bytes", (double)r->activation_bytes);
            cJSON_AddNumberToObject(o, "steps", r->steps);
            cJSON_AddNumberToObject(o, "warmup_steps", r->warmup_steps);
            cJSON_AddStringToObject(o, "timing", "wall clock of mamba_trainer_step");
        }
        cJSON_AddItemToArray(rs, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return 0;
    /* atomic: temporary file + rename */
    size_t len = strlen(path) + 8;
    char *tmp = malloc(len);
    snprintf(tmp, len, "%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
    if (fp && fclose(fp) != 0) ok = 0;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) remove(tmp);
    free(tmp);
    cJSON_free(text);
    return ok;
}
