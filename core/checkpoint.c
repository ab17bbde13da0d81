/* Loading a Hugging Face checkpoint: config.json + model.safetensors, or shards listed in
 * model.safetensors.index.json, or the same as PyTorch's pytorch_model.bin (torch_file.c). Tensors are validated against the config before anything is
 * allocated on the device; matrices are uploaded straight from the mapped file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "model_text.h"
#include "torch_file.h"
#include "weights.h"
#include "api/alloc.h"

#define MB_MAX_INDEX_BYTES ((size_t)64 << 20)

/* One file of a checkpoint: safetensors or a torch.save archive. */
typedef struct ckpt_file {
    mamba_tensor_file_t *st;
    mb_torch_file *pt;
    const char *path;
} ckpt_file;

typedef struct ckpt {
    ckpt_file *files;
    size_t n_files;
} ckpt;

static void ckpt_close(ckpt *c)
{
    for (size_t i = 0; i < c->n_files; i++) {
        mamba_tensor_file_close(c->files[i].st);
        mb_torch_file_close(c->files[i].pt);
    }
    free(c->files);
    c->files = NULL;
    c->n_files = 0;
}

/* Open path as what its first bytes say it is: a ZIP archive is a torch.save checkpoint. */
static mamba_status_t ckpt_add(ckpt *c, const char *path, char *err)
{
    ckpt_file *grown = mb_realloc(c->files, (c->n_files + 1) * sizeof *grown);
    if (!grown) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "out of memory opening %s", path);
    c->files = grown;
    ckpt_file *f = &c->files[c->n_files];
    memset(f, 0, sizeof *f);
    int is_zip;
    mamba_status_t st = mb_torch_file_sniff(path, &is_zip, err);
    if (st != MAMBA_OK) return st;
    if (is_zip) {
        if ((st = mb_torch_file_open(path, &f->pt, err)) == MAMBA_OK) f->path = mb_torch_file_path(f->pt);
    } else if ((st = mb_tensor_file_open(path, &f->st, err)) == MAMBA_OK) {
        f->path = f->st->path;
    }
    if (st == MAMBA_OK) c->n_files++;
    return st;
}

/* A parameter's tensor in the checkpoint; a Q8_0 matrix has its scales in scale. */
typedef struct resolved { const char *path; const ckpt_file *file; mamba_tensor_t t, scale; } resolved;

static int ckpt_find(const ckpt *c, const char *name, resolved *r)
{
    for (size_t i = 0; i < c->n_files; i++) {
        const ckpt_file *f = &c->files[i];
        if (f->pt) {
            const mamba_tensor_t *t = mb_torch_file_lookup(f->pt, name);
            if (!t) continue;
            r->t = *t;
        } else {
            const mb_tensor_entry *e = mb_tensor_file_lookup(f->st, name);
            if (!e) continue;
            mb_tensor_view(f->st, e, &r->t);
        }
        r->path = f->path;
        r->file = f;
        return 1;
    }
    return 0;
}

/* Open the shards named by an index file's weight_map (each once). */
static mamba_status_t open_index(ckpt *c, const char *dir, const char *index_path, char *err)
{
    mamba_status_t st;
    cJSON *root = mb_json_read(index_path, MB_MAX_INDEX_BYTES, "an index", err, &st);
    if (!root) return st;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: no 'weight_map' object", index_path);
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, map) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/') || !it->valuestring[0]) {
            st = mb_seterr(err, MAMBA_ERR_FORMAT,
                           "%s: weight_map entry '%s' must name a file in the same directory", index_path, it->string);
            goto out;
        }
        int seen = 0;
        for (const cJSON *p = map->child; p != it; p = p->next)
            if (strcmp(p->valuestring, it->valuestring) == 0) { seen = 1; break; }
        if (seen) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, it->valuestring);
        if ((st = ckpt_add(c, path, err)) != MAMBA_OK) goto out;
    }
    if (c->n_files == 0) st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: weight_map is empty", index_path);
out:
    cJSON_Delete(root);
    return st;
}

static int shape_matches(const mb_spec *s, const mamba_tensor_t *e)
{
    /* conv1d.weight is (d_inner, 1, d_conv); accept (d_inner, d_conv) too */
    if (s->ndim == 3 && e->ndim == 2)
        return e->shape[0] == s->shape[0] && e->shape[1] == s->shape[2] && s->shape[1] == 1;
    if (e->ndim != s->ndim) return 0;
    for (int i = 0; i < s->ndim; i++)
        if (e->shape[i] != s->shape[i]) return 0;
    return 1;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < len) snprintf(buf + k, len - k, ")");
}

#define Q8_META_KEY "libmamba.weights"
#define Q8_META_VALUE "q8_0"

/* The libmamba.weights tag of each safetensors file: absent, or q8_0. */
static mamba_status_t check_tags(const ckpt *c, char *err)
{
    for (size_t i = 0; i < c->n_files; i++) {
        const char *tag = c->files[i].st ? mamba_tensor_file_metadata(c->files[i].st, Q8_META_KEY) : NULL;
        if (tag && strcmp(tag, Q8_META_VALUE) != 0)
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: metadata '%s' is '%s', expected '%s' (or none)",
                             c->files[i].path, Q8_META_KEY, tag, Q8_META_VALUE);
    }
    return MAMBA_OK;
}

/* An I8 tensor: a Q8_0 matrix, whose scales are NAME.scale (F16, (rows, cols / 32)) in the
 * same file, tagged libmamba.weights = q8_0. */
static mamba_status_t resolve_q8(const mb_spec *s, resolved *r, char *err)
{
    const ckpt_file *f = r->file;
    const char *tag = f->st ? mamba_tensor_file_metadata(f->st, Q8_META_KEY) : NULL;
    if (!tag)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: tensor '%s' is I8 but the file's metadata has no '%s': '%s'",
                         r->path, s->name, Q8_META_KEY, Q8_META_VALUE);
    if (!s->q8_ok)
        return mb_seterr(err, MAMBA_ERR_MODEL,
                         "%s: tensor '%s' is Q8_0 (I8), which only in_proj, out_proj, the embedding and lm_head may be",
                         r->path, s->name);
    const size_t rows = mb_spec_rows(s), cols = mb_spec_cols(s);
    if (cols % MB_Q8_BLOCK != 0)
        return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' is Q8_0 with %zu columns, not a multiple of %d",
                         r->path, s->name, cols, MB_Q8_BLOCK);
    char name[MB_NAME_LEN + 8];
    snprintf(name, sizeof name, "%s.scale", s->name);
    const mb_tensor_entry *e = mb_tensor_file_lookup(f->st, name);
    if (!e)
        return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' is Q8_0 but its scales '%s' are missing", r->path,
                         s->name, name);
    mb_tensor_view(f->st, e, &r->scale);
    const mamba_tensor_t *t = &r->scale;
    if (t->dtype != MAMBA_F16 || t->ndim != 2 || t->shape[0] != (int64_t)rows ||
        t->shape[1] != (int64_t)(cols / MB_Q8_BLOCK)) {
        char got[96];
        shape_str(got, sizeof got, t->ndim, t->shape);
        return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' is %s %s, expected F16 (%zu, %zu): the scales of '%s'",
                         r->path, name, mamba_dtype_name(t->dtype), got, rows, cols / MB_Q8_BLOCK, s->name);
    }
    return MAMBA_OK;
}

/* Find every parameter, check its shape and dtype; set each matrix's dtype to its stored one. */
static mamba_status_t resolve(const ckpt *c, mb_spec *specs, size_t n, resolved *r, const char *cfg_path,
                              char *err)
{
    for (size_t i = 0; i < n; i++) {
        mb_spec *s = &specs[i];
        if (s->skip) continue;
        int found = ckpt_find(c, s->name, &r[i]);
        if (!found && strcmp(s->name, "backbone.embeddings.weight") == 0)
            found = ckpt_find(c, "backbone.embedding.weight", &r[i]);
        if (!found) {
            if (strcmp(s->name, "lm_head.weight") == 0)
                return mb_seterr(err, MAMBA_ERR_MODEL,
                                 "%s: tie_word_embeddings is false but the checkpoint has no 'lm_head.weight'",
                                 cfg_path);
            return mb_seterr(err, MAMBA_ERR_MODEL, "%s: missing tensor '%s'",
                             c->n_files ? c->files[0].path : cfg_path, s->name);
        }
        const mamba_tensor_t *e = &r[i].t;
        if (!shape_matches(s, e)) {
            char want[96], got[96];
            shape_str(want, sizeof want, s->ndim, s->shape);
            shape_str(got, sizeof got, e->ndim, e->shape);
            return mb_seterr(err, MAMBA_ERR_MODEL,
                             "%s: tensor '%s' has shape %s, but %s implies %s",
                             r[i].path, e->name, got, cfg_path, want);
        }
        if (e->dtype == MAMBA_I8) {
            mamba_status_t st = resolve_q8(s, &r[i], err);
            if (st != MAMBA_OK) return st;
            s->dtype = MAMBA_Q8;
            continue;
        }
        if (e->dtype != MAMBA_F32 && e->dtype != MAMBA_F16 && e->dtype != MAMBA_BF16)
            return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16%s",
                             r[i].path, e->name, mamba_dtype_name(e->dtype), s->q8_ok ? " (or I8 of Q8_0)" : "");
        s->dtype = e->dtype;
    }
    return MAMBA_OK;
}

typedef struct load_ctx { resolved *r; mb_spec *specs; } load_ctx;

/* Index of the first non-finite element of a tensor, or n when all are finite. Infinities and
 * NaNs have an all-ones exponent in every float format. The format does not align tensors,
 * so elements are read with memcpy (one unaligned load each). */
static size_t first_nonfinite(const void *data, mamba_dtype_t dt, size_t n)
{
    size_t first = n;
    const unsigned char *p = data;
    if (dt == MAMBA_F32) {
#pragma omp parallel for reduction(min : first) schedule(static)
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            if (i < first && (u & 0x7f800000u) == 0x7f800000u) first = i;
        }
    } else {
        const uint16_t mask = dt == MAMBA_F16 ? 0x7c00u : 0x7f80u;
#pragma omp parallel for reduction(min : first) schedule(static)
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            if (i < first && (h & mask) == mask) first = i;
        }
    }
    return first;
}

static mamba_status_t fill_checkpoint(mamba_model_t *m, const mb_spec *s, void *host, float *tmp,
                                      const void **src, void *user)
{
    (void)host;
    load_ctx *lc = user;
    const resolved *r = &lc->r[s - lc->specs];
    const mamba_tensor_t t = r->t;
    const size_t n = (size_t)mb_spec_count(s);
    if (s->dtype == MAMBA_Q8) {
        /* values, then the scales at their offset (api/dtype.h) */
        const size_t rows = mb_spec_rows(s), cols = mb_spec_cols(s), ns = rows * (cols / MB_Q8_BLOCK);
        const size_t bad = first_nonfinite(r->scale.data, MAMBA_F16, ns);
        if (bad < ns)
            return mb_seterr(m->ctx->err, MAMBA_ERR_MODEL, "%s: tensor '%s.scale' holds a non-finite value at index %zu",
                             r->path, s->name, bad);
        unsigned char *h = host;
        const size_t off = mb_q8_scales_offset(rows, cols);
        memcpy(h, t.data, n);
        memset(h + n, 0, off - n);
        memcpy(h + off, r->scale.data, 2 * ns);
        *src = host;
        return MAMBA_OK;
    }
    /* one NaN or infinity in any parameter poisons every output: refuse it here, by name */
    const size_t bad = first_nonfinite(t.data, t.dtype, n);
    if (bad < n)
        return mb_seterr(m->ctx->err, MAMBA_ERR_MODEL, "%s: tensor '%s' holds a non-finite value at index %zu",
                         r->path, s->name, bad);
    if (s->is_matrix) {
        *src = t.data;  /* uploaded straight from the mapping, in its stored dtype */
        return MAMBA_OK;
    }
    mb_to_f32(tmp, t.data, t.dtype, n);
    *src = tmp;
    return MAMBA_OK;
}

/* dir: the checkpoint directory (its tokenizer and generation config), or NULL. */
static mamba_status_t load(mamba_context_t *ctx, const char *dir, const char *cfg_path, ckpt *c, mamba_model_t **out)
{
    char *err = ctx->err;
    mamba_config_t cfg;
    mamba_status_t st = mb_config_parse(cfg_path, &cfg, err);
    if (st != MAMBA_OK) return st;
    mamba_model_t *m;
    if ((st = mb_model_new(ctx, &cfg, &m)) != MAMBA_OK) return st;
    size_t n;
    mb_spec *specs = mb_calloc(mb_specs_count(m), sizeof *specs);
    resolved *r = mb_calloc(mb_specs_count(m), sizeof *r);
    if (!specs || !r) {
        st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for the tensor table", cfg_path);
        goto out;
    }
    mb_specs_build(m, specs, &n);
    if ((st = check_tags(c, err)) != MAMBA_OK || (st = resolve(c, specs, n, r, cfg_path, err)) != MAMBA_OK) goto out;
    if ((st = mb_model_text_load(m, dir, cfg_path, err)) != MAMBA_OK) goto out;
    load_ctx lc = {r, specs};
    st = mb_model_fill(m, specs, n, ctx->weights == MAMBA_WEIGHTS_Q8, fill_checkpoint, &lc);
out:
    free(specs);
    free(r);
    if (st != MAMBA_OK) {
        mamba_model_free(m);
        return st;
    }
    *out = m;
    return MAMBA_OK;
}

mamba_status_t mamba_model_load_files(mamba_context_t *ctx, const char *config_path, const char *weights_path,
                                      mamba_model_t **out)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    if (!config_path || !weights_path || !out)
        return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_load_files: NULL argument");
    *out = NULL;
    ckpt c = {0};
    mamba_status_t st = ckpt_add(&c, weights_path, ctx->err);
    if (st == MAMBA_OK) st = load(ctx, NULL, config_path, &c, out);
    ckpt_close(&c);
    if (st != MAMBA_OK) mb_log(ctx, MAMBA_LOG_DEBUG, "%s", ctx->err);
    return st;
}

mamba_status_t mamba_model_load(mamba_context_t *ctx, const char *dir, mamba_model_t **out)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    if (!dir || !out) return mb_seterr(ctx->err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_load: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return mb_seterr(ctx->err, MAMBA_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return mb_seterr(ctx->err, MAMBA_ERR_IO,
                         "%s: not a directory (expected a checkpoint directory with config.json and model.safetensors)", dir);
    char cfg[4096], weights[4096], index[4096], bin[4096], bin_index[4096];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(weights, sizeof weights, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    snprintf(bin, sizeof bin, "%s/pytorch_model.bin", dir);
    snprintf(bin_index, sizeof bin_index, "%s/pytorch_model.bin.index.json", dir);
    ckpt c = {0};
    mamba_status_t st;
    /* safetensors first: where both are present it is the one that needs no unpickling */
    if (stat(weights, &sb) == 0)
        st = ckpt_add(&c, weights, ctx->err);
    else if (stat(index, &sb) == 0)
        st = open_index(&c, dir, index, ctx->err);
    else if (stat(bin, &sb) == 0)
        st = ckpt_add(&c, bin, ctx->err);
    else if (stat(bin_index, &sb) == 0)
        st = open_index(&c, dir, bin_index, ctx->err);
    else
        st = mb_seterr(ctx->err, MAMBA_ERR_IO,
                       "%s: none of model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                       "pytorch_model.bin.index.json found", dir);
    if (st == MAMBA_OK) st = load(ctx, dir, cfg, &c, out);
    ckpt_close(&c);
    if (st != MAMBA_OK) mb_log(ctx, MAMBA_LOG_DEBUG, "%s", ctx->err);
    return st;
}
