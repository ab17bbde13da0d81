/* mamba-bench --mode=tokenize: the tokenizer's encoding speed on a text, one thread, one
 * mamba_tokenize call per document. The text is a JSON-lines file of {"text": ...} documents
 * (as scripts/bench-tokenizer.sh writes them) or, with any other name, one document. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "bench.h"

typedef struct doc {
    char *text;
    size_t len;
} doc;

static int ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (cap - n < 65536) {
            char *p = realloc(buf, cap = 2 * cap + 65536);
            if (!p) {
                free(buf);
                fclose(fp);
                return NULL;
            }
            buf = p;
        }
        got = fread(buf + n, 1, cap - n, fp);
        n += got;
    } while (got > 0);
    const int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The documents of path; NULL with a message on stderr. */
static doc *read_docs(const char *path, size_t *n_docs, size_t *bytes)
{
    size_t len;
    char *all = read_file(path, &len);
    if (!all) {
        fprintf(stderr, "mamba-bench: cannot read %s\n", path);
        return NULL;
    }
    *bytes = 0;
    if (!ends_with(path, ".jsonl")) {
        doc *d = malloc(sizeof *d);
        if (!d) {
            free(all);
            return NULL;
        }
        d->text = all;
        d->len = len;
        *n_docs = 1;
        *bytes = len;
        return d;
    }
    size_t cap = 1024, n = 0, line_no = 0;
    doc *docs = malloc(cap * sizeof *docs);
    for (size_t at = 0; docs && at < len;) {
        const char *nl = memchr(all + at, '\n', len - at);
        const size_t end = nl ? (size_t)(nl - all) : len;
        line_no++;
        if (end > at) {
            cJSON *o = cJSON_ParseWithLength(all + at, end - at);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
            if (!cJSON_IsString(t)) {
                fprintf(stderr, "mamba-bench: %s: line %zu: expected {\"text\": \"...\"}\n", path, line_no);
                cJSON_Delete(o);
                for (size_t i = 0; i < n; i++) free(docs[i].text);
                free(docs);
                free(all);
                return NULL;
            }
            if (n == cap) {
                doc *p = realloc(docs, (cap *= 2) * sizeof *docs);
                if (!p) break;
                docs = p;
            }
            docs[n].len = strlen(t->valuestring);
            docs[n].text = strdup(t->valuestring);
            *bytes += docs[n].len;
            n++;
            cJSON_Delete(o);
        }
        at = end + 1;
    }
    free(all);
    *n_docs = n;
    return docs;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_tokenize(const char *tokenizer, const char *text, int warmup, int repeat, result *r)
{
    memset(r, 0, sizeof *r);
    if (!tokenizer || !text) {
        fprintf(stderr, "mamba-bench: --mode=tokenize needs --tokenizer=FILE and --text=FILE\n");
        return 2;
    }
    const double t0 = now_ms();
    mamba_tokenizer_t *tok;
    if (mamba_tokenizer_load(tokenizer, &tok) != MAMBA_OK) {
        fprintf(stderr, "mamba-bench: %s\n", mamba_last_error(NULL));
        return 1;
    }
    const double load_ms = now_ms() - t0;
    size_t n_docs, bytes, longest = 0;
    doc *docs = read_docs(text, &n_docs, &bytes);
    if (!docs) {
        mamba_tokenizer_free(tok);
        return 1;
    }
    for (size_t i = 0; i < n_docs; i++) longest = docs[i].len > longest ? docs[i].len : longest;
    /* room for any document's ids: at most 3 per byte, plus one */
    int32_t *ids = malloc((3 * longest + 1) * sizeof *ids);
    double *ms = malloc((size_t)repeat * sizeof *ms);
    int status = ids && ms ? 0 : 1;
    size_t n_tokens = 0;
    for (int k = 0; k < warmup + repeat && status == 0; k++) {
        const double start = now_ms();
        size_t total = 0;
        for (size_t i = 0; i < n_docs; i++) {
            size_t n;
            if (mamba_tokenize(tok, docs[i].text, docs[i].len, 0, ids, 3 * longest + 1, &n) != MAMBA_OK) {
                fprintf(stderr, "mamba-bench: %s: document %zu: %s\n", text, i, mamba_last_error(NULL));
                status = 1;
                break;
            }
            total += n;
        }
        if (k >= warmup) ms[k - warmup] = now_ms() - start;
        n_tokens = total;
    }
    if (status == 0) {
        qsort(ms, (size_t)repeat, sizeof *ms, cmp_double);
        r->mode = MODE_TOKENIZE;
        snprintf(r->backend, sizeof r->backend, "cpu");
        snprintf(r->device, sizeof r->device, "1 thread");
        const char *base = strrchr(text, '/');
        snprintf(r->model, sizeof r->model, "%s", base ? base + 1 : text);
        r->min_ms = ms[0];
        r->median_ms = repeat % 2 ? ms[repeat / 2] : 0.5 * (ms[repeat / 2 - 1] + ms[repeat / 2]);
        r->text_bytes = bytes;
        r->n_docs = n_docs;
        r->tokens = n_tokens;
        r->load_ms = load_ms;
        r->mb_per_s = (double)bytes / (r->median_ms * 1e3);
        r->tokens_per_s = (double)n_tokens / (r->median_ms * 1e-3);
        r->gbps = -1;
        r->max_abs_err = r->nmse = -1;
        r->limit = "-";
    }
    free(ms);
    free(ids);
    for (size_t i = 0; i < n_docs; i++) free(docs[i].text);
    free(docs);
    mamba_tokenizer_free(tok);
    return status;
}
