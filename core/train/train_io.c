/* Saving and resuming a trainer, and a trainer from a loaded model.
 *
 * A saved directory is a Hugging Face checkpoint (config.json, model.safetensors: fp32 under
 * the HF names, conv1d.weight as (d_inner, 1, d_conv)) with optimizer.safetensors beside it:
 * for each parameter NAME the tensors "exp_avg.NAME" and "exp_avg_sq.NAME" (AdamW's m and v,
 * fp32, the parameter's shape), and in the metadata "format" = "libmamba-adamw-1", "step" (the
 * optimizer steps taken) and the options: lr, beta1, beta2, eps, weight_decay, max_grad_norm,
 * min_lr_ratio (floats printed so that they read back to the same float), schedule ("constant"
 * or "warmup_cosine"), warmup_steps, total_steps. Each file is written to a temporary name in
 * the directory and renamed when complete. Gradients accumulated but not applied are not
 * saved. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "train/train.h"
#include "weights.h"
#include "api/alloc.h"

#define OPT_FORMAT "libmamba-adamw-1"
#define PATH_LEN 4096

/* The shortest %g that reads back as v (at most 9 digits, which always do for a float). */
static void float_str(char *buf, size_t len, float v)
{
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, len, "%.*g", p, (double)v);
        if ((float)strtod(buf, NULL) == v) return;
    }
}

static int path_in(char *buf, const char *dir, const char *file)
{
    return snprintf(buf, PATH_LEN, "%s/%s", dir, file) < PATH_LEN;
}

/* ---- save ---- */

/* text into path through a temporary file in the same directory, renamed when complete. */
static mamba_status_t write_atomic(const char *path, const char *text, char *err)
{
    char tmp[PATH_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path);
    const int fd = mb_io_fault() ? -1 : mkstemp(tmp);
    FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!fp) {
        if (fd >= 0) close(fd);
        return mb_seterr(err, MAMBA_ERR_IO, "%s: cannot create a temporary file: %s", path, strerror(errno));
    }
    const size_t n = strlen(text);
    int ok = !mb_io_fault() && fwrite(text, 1, n, fp) == n;
    if (fclose(fp) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return mb_seterr(err, MAMBA_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return MAMBA_OK;
}

/* config.json in Hugging Face's MambaConfig fields. */
static mamba_status_t save_config(const mamba_trainer_t *tr, const char *path, char *err)
{
    const mamba_config_t *c = &tr->cfg;
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = root ? cJSON_AddArrayToObject(root, "architectures") : NULL;
    cJSON *name = arch ? cJSON_CreateString("MambaForCausalLM") : NULL;
    int ok = name && cJSON_AddItemToArray(arch, name);
    char eps[32];
    float_str(eps, sizeof eps, c->norm_eps);
    const struct { const char *key; double v; } nums[] = {
        {"hidden_size", c->d_model}, {"num_hidden_layers", c->n_layer}, {"vocab_size", c->vocab_size},
        {"state_size", c->d_state}, {"conv_kernel", c->d_conv}, {"expand", c->expand},
        {"intermediate_size", c->d_inner}, {"time_step_rank", c->dt_rank}, {"layer_norm_epsilon", strtod(eps, NULL)},
    };
    const struct { const char *key; int v; } flags[] = {
        {"use_bias", c->use_bias}, {"use_conv_bias", c->use_conv_bias},
        {"tie_word_embeddings", c->tie_embeddings}, {"residual_in_fp32", 1},
    };
    ok = ok && cJSON_AddStringToObject(root, "model_type", "mamba") && cJSON_AddStringToObject(root, "torch_dtype", "float32") &&
         cJSON_AddStringToObject(root, "hidden_act", "silu");
    for (size_t i = 0; ok && i < sizeof nums / sizeof nums[0]; i++) ok = cJSON_AddNumberToObject(root, nums[i].key, nums[i].v) != NULL;
    for (size_t i = 0; ok && i < sizeof flags / sizeof flags[0]; i++) ok = cJSON_AddBoolToObject(root, flags[i].key, flags[i].v) != NULL;
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory building the config", path);
    const mamba_status_t st = write_atomic(path, text, err);
    cJSON_free(text);
    return st;
}

/* The four buffers' tensors: host holds total floats of each buffer. prefix "" for the weights. */
static void tensor_list(const mamba_trainer_t *tr, const float *host, const char *prefix, char *names,
                        mamba_tensor_t *out)
{
    for (size_t i = 0; i < tr->n_params; i++) {
        const mb_train_param *p = &tr->params[i];
        char *nm = names + i * (MB_NAME_LEN + 16);
        snprintf(nm, MB_NAME_LEN + 16, "%s%s", prefix, p->name);
        mamba_tensor_t *t = &out[i];
        memset(t, 0, sizeof *t);
        t->name = nm;
        t->dtype = MAMBA_F32;
        t->ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
        t->data = host + p->off;
        t->nbytes = p->numel * 4;
    }
}

static mamba_status_t write_tensors(mamba_trainer_t *tr, const char *path, const mamba_tensor_t *t, size_t n,
                                    const char *const *meta, size_t n_meta)
{
    const mamba_status_t st = mamba_tensor_file_write(path, t, n, meta, n_meta);
    if (st != MAMBA_OK) snprintf(tr->ctx->err, MB_ERR_LEN, "%s", mamba_last_error(NULL));
    return st;
}

static mamba_status_t save_optimizer(mamba_trainer_t *tr, const char *path, float *host, char *names,
                                     mamba_tensor_t *t)
{
    const mamba_train_options_t *o = &tr->opts;
    mamba_status_t st;
    const size_t n = tr->n_params;
    if ((st = mb_train_download(tr, tr->m, host, "download of the first moments")) != MAMBA_OK ||
        (st = mb_train_download(tr, tr->v, host + tr->total, "download of the second moments")) != MAMBA_OK)
        return st;
    tensor_list(tr, host, "exp_avg.", names, t);
    tensor_list(tr, host + tr->total, "exp_avg_sq.", names + n * (MB_NAME_LEN + 16), t + n);
    char f[7][32], step[32], warm[32], total[32];
    const float fv[7] = {o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->max_grad_norm, o->min_lr_ratio};
    for (int i = 0; i < 7; i++) float_str(f[i], sizeof f[i], fv[i]);
    snprintf(step, sizeof step, "%ld", tr->step);
    snprintf(warm, sizeof warm, "%ld", o->warmup_steps);
    snprintf(total, sizeof total, "%ld", o->total_steps);
    const char *meta[] = {
        "format", OPT_FORMAT, "step", step, "lr", f[0], "beta1", f[1], "beta2", f[2], "eps", f[3],
        "weight_decay", f[4], "max_grad_norm", f[5], "min_lr_ratio", f[6],
        "schedule", o->schedule == MAMBA_LR_WARMUP_COSINE ? "warmup_cosine" : "constant",
        "warmup_steps", warm, "total_steps", total,
    };
    return write_tensors(tr, path, t, 2 * n, meta, sizeof meta / sizeof meta[0] / 2);
}

mamba_status_t mamba_trainer_save(mamba_trainer_t *tr, const char *dir)
{
    if (!tr) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_save: trainer is NULL");
    mamba_context_t *ctx = tr->ctx;
    char *err = ctx->err;
    if (!dir) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_save: dir is NULL");
    char model_path[PATH_LEN], opt_path[PATH_LEN], cfg_path[PATH_LEN];
    if (!path_in(model_path, dir, "model.safetensors") || !path_in(opt_path, dir, "optimizer.safetensors") ||
        !path_in(cfg_path, dir, "config.json"))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_save: directory name too long");
    struct stat sb;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return mb_seterr(err, MAMBA_ERR_IO, "%s: cannot create the directory: %s", dir, strerror(errno));
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return mb_seterr(err, MAMBA_ERR_IO, "%s: not a directory", dir);
    if (tr->n_micro)
        mb_log(ctx, MAMBA_LOG_WARN, "mamba_trainer_save: %zu accumulated batch(es) not applied are not saved",
               tr->n_micro);
    const size_t n = tr->n_params;
    float *host = mb_malloc(2 * tr->total * sizeof *host);
    char *names = mb_malloc(2 * n * (MB_NAME_LEN + 16));
    mamba_tensor_t *t = mb_malloc(2 * n * sizeof *t);
    mamba_status_t st = MAMBA_OK;
    if (!host || !names || !t)
        st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_trainer_save: out of memory for %zu parameters", tr->total);
    if (st == MAMBA_OK) st = mb_train_download(tr, tr->param, host, "download of the parameters");
    if (st == MAMBA_OK) {
        tensor_list(tr, host, "", names, t);
        const char *meta[] = {"format", "pt"};
        st = write_tensors(tr, model_path, t, n, meta, 1);
    }
    if (st == MAMBA_OK) st = save_optimizer(tr, opt_path, host, names, t);
    if (st == MAMBA_OK) st = save_config(tr, cfg_path, err);
    free(host);
    free(names);
    free(t);
    return st;
}

/* ---- load ---- */

static int meta_float(const mamba_tensor_file_t *f, const char *key, float *v)
{
    const char *s = mamba_tensor_file_metadata(f, key);
    if (!s) return 0;
    char *end;
    errno = 0;
    const double d = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(d)) return 0;
    *v = (float)d;
    return 1;
}

static int meta_long(const mamba_tensor_file_t *f, const char *key, long *v)
{
    const char *s = mamba_tensor_file_metadata(f, key);
    if (!s) return 0;
    char *end;
    errno = 0;
    const long x = strtol(s, &end, 10);
    if (end == s || *end || errno || x < 0) return 0;
    *v = x;
    return 1;
}

/* The options and step in optimizer.safetensors' metadata. */
static mamba_status_t read_options(const mamba_tensor_file_t *f, const char *path, mamba_train_options_t *o,
                                   long *step, char *err)
{
    const char *fmt = mamba_tensor_file_metadata(f, "format");
    if (!fmt || strcmp(fmt, OPT_FORMAT) != 0)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: metadata 'format' is %s%s%s, expected '%s'", path, fmt ? "'" : "",
                         fmt ? fmt : "absent", fmt ? "'" : "", OPT_FORMAT);
    const struct { const char *key; float *v; } fl[] = {
        {"lr", &o->lr}, {"beta1", &o->beta1}, {"beta2", &o->beta2}, {"eps", &o->eps},
        {"weight_decay", &o->weight_decay}, {"max_grad_norm", &o->max_grad_norm}, {"min_lr_ratio", &o->min_lr_ratio},
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        if (!meta_float(f, fl[i].key, fl[i].v))
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: metadata '%s' is absent or not a finite number", path, fl[i].key);
    const struct { const char *key; long *v; } in[] = {
        {"step", step}, {"warmup_steps", &o->warmup_steps}, {"total_steps", &o->total_steps},
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (!meta_long(f, in[i].key, in[i].v))
            return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: metadata '%s' is absent or not a non-negative integer", path,
                             in[i].key);
    const char *sched = mamba_tensor_file_metadata(f, "schedule");
    if (sched && strcmp(sched, "constant") == 0) o->schedule = MAMBA_LR_CONSTANT;
    else if (sched && strcmp(sched, "warmup_cosine") == 0) o->schedule = MAMBA_LR_WARMUP_COSINE;
    else
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: metadata 'schedule' is %s, expected 'constant' or 'warmup_cosine'",
                         path, sched ? sched : "absent");
    return MAMBA_OK;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < len) snprintf(buf + k, len - k, ")");
}

static int shape_matches(const mb_train_param *p, const mamba_tensor_t *t)
{
    /* conv1d.weight is (d_inner, 1, d_conv); (d_inner, d_conv) is accepted too, as the loader does */
    if (p->ndim == 3 && t->ndim == 2) return t->shape[0] == p->shape[0] && t->shape[1] == p->shape[2] && p->shape[1] == 1;
    if (t->ndim != p->ndim) return 0;
    for (int d = 0; d < p->ndim; d++)
        if (t->shape[d] != p->shape[d]) return 0;
    return 1;
}

/* Tensor prefix + NAME of f, widened to f32 into host + off for every parameter. */
static mamba_status_t read_tensors(const mamba_trainer_t *tr, const mamba_tensor_file_t *f, const char *path,
                                   const char *prefix, int f32_only, float *host, char *err)
{
    for (size_t i = 0; i < tr->n_params; i++) {
        const mb_train_param *p = &tr->params[i];
        char name[MB_NAME_LEN + 16];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        const mb_tensor_entry *e = mb_tensor_file_lookup(f, name);
        if (!e && i == tr->embed && !*prefix) e = mb_tensor_file_lookup(f, "backbone.embedding.weight");
        if (!e) return mb_seterr(err, MAMBA_ERR_MODEL, "%s: missing tensor '%s'", path, name);
        mamba_tensor_t t;
        mb_tensor_view(f, e, &t);
        if (!shape_matches(p, &t)) {
            char want[96], got[96];
            shape_str(want, sizeof want, p->ndim, p->shape);
            shape_str(got, sizeof got, t.ndim, t.shape);
            return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' has shape %s, but the config implies %s", path, name,
                             got, want);
        }
        if (t.dtype != MAMBA_F32 && (f32_only || (t.dtype != MAMBA_F16 && t.dtype != MAMBA_BF16)))
            return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' has dtype %s, expected F32%s", path, name,
                             mamba_dtype_name(t.dtype), f32_only ? "" : ", F16 or BF16");
        float *dst = host + p->off;
        mb_to_f32(dst, t.data, t.dtype, p->numel);
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(dst[k]))
                return mb_seterr(err, MAMBA_ERR_MODEL, "%s: tensor '%s' holds a non-finite value at index %zu", path, name, k);
    }
    return MAMBA_OK;
}

/* The moments (and step) of optimizer.safetensors into tr. */
static mamba_status_t load_moments(mamba_trainer_t *tr, const mamba_tensor_file_t *f, const char *path, long step,
                                   float *host)
{
    char *err = tr->ctx->err;
    mamba_status_t st;
    memset(host, 0, tr->total * sizeof *host);
    if ((st = read_tensors(tr, f, path, "exp_avg.", 1, host, err)) != MAMBA_OK ||
        (st = mb_train_upload(tr, tr->m, host, "upload of the first moments")) != MAMBA_OK)
        return st;
    if ((st = read_tensors(tr, f, path, "exp_avg_sq.", 1, host, err)) != MAMBA_OK ||
        (st = mb_train_upload(tr, tr->v, host, "upload of the second moments")) != MAMBA_OK)
        return st;
    tr->step = step;
    return MAMBA_OK;
}

/* The weights of model.safetensors (any float dtype, widened) into a new trainer *tr; *host
 * receives the staging the caller frees, *weights the file it closes. */
static mamba_status_t load_weights(mamba_context_t *ctx, const char *cfg_path, const char *model_path,
                                   const mamba_train_options_t *o, mamba_trainer_t **tr, mamba_tensor_file_t **weights,
                                   float **host)
{
    char *err = ctx->err;
    mamba_config_t cfg;
    mamba_status_t st = mb_config_parse(cfg_path, &cfg, err);
    if (st != MAMBA_OK || (st = mb_train_new(ctx, &cfg, o, cfg_path, tr)) != MAMBA_OK) return st;
    if ((st = mb_tensor_file_open(model_path, weights, err)) != MAMBA_OK) return st;
    float *h = mb_calloc((*tr)->total, sizeof *h);
    if (!h) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu parameters", model_path, (*tr)->total);
    *host = h;
    if ((st = read_tensors(*tr, *weights, model_path, "", 0, h, err)) != MAMBA_OK) return st;
    return mb_train_upload(*tr, (*tr)->param, h, "upload of the parameters");
}

mamba_status_t mamba_trainer_load(mamba_context_t *ctx, const char *dir, const mamba_train_options_t *opts,
                                  mamba_trainer_t **out)
{
    if (!ctx) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "context is NULL");
    char *err = ctx->err;
    if (!dir || !out) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_load: NULL argument");
    *out = NULL;
    char cfg_path[PATH_LEN], model_path[PATH_LEN], opt_path[PATH_LEN];
    if (!path_in(cfg_path, dir, "config.json") || !path_in(model_path, dir, "model.safetensors") ||
        !path_in(opt_path, dir, "optimizer.safetensors"))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_load: directory name too long");
    struct stat sb;
    if (stat(dir, &sb) != 0) return mb_seterr(err, MAMBA_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return mb_seterr(err, MAMBA_ERR_IO, "%s: not a directory", dir);
    mamba_tensor_file_t *opt = NULL, *weights = NULL;
    mamba_train_options_t o;
    mamba_train_options_init(&o);
    long step = 0;
    mamba_status_t st = MAMBA_OK;
    if (stat(opt_path, &sb) == 0) {
        st = mb_tensor_file_open(opt_path, &opt, err);
        if (st == MAMBA_OK) st = read_options(opt, opt_path, &o, &step, err);
    }
    if (opts) o = *opts;
    mamba_trainer_t *tr = NULL;
    float *host = NULL;
    if (st == MAMBA_OK && stat(model_path, &sb) != 0) {
        /* another checkpoint layout (shards, pytorch_model.bin): through the model loader */
        mamba_model_t *m = NULL;
        st = mamba_model_load(ctx, dir, &m);
        if (st == MAMBA_OK) st = mamba_trainer_create_from_model(m, &o, &tr);
        mamba_model_free(m);
    } else if (st == MAMBA_OK) {
        st = load_weights(ctx, cfg_path, model_path, &o, &tr, &weights, &host);
    }
    if (st == MAMBA_OK && opt && tr) {
        if (!host) host = mb_malloc(tr->total * sizeof *host);
        st = host ? load_moments(tr, opt, opt_path, step, host)
                  : mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu parameters", dir, tr->total);
    }
    free(host);
    mamba_tensor_file_close(weights);
    mamba_tensor_file_close(opt);
    if (st != MAMBA_OK) {
        mamba_trainer_free(tr);
        return st;
    }
    *out = tr;
    return MAMBA_OK;
}

/* ---- from a model ---- */

mamba_status_t mamba_trainer_create_from_model(const mamba_model_t *model, const mamba_train_options_t *opts,
                                               mamba_trainer_t **out)
{
    if (!model || !out)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_trainer_create_from_model: NULL argument");
    *out = NULL;
    mamba_context_t *ctx = model->ctx;
    char *err = ctx->err;
    mamba_trainer_t *tr;
    mamba_status_t st = mb_train_new(ctx, &model->cfg, opts, "mamba_trainer_create_from_model", &tr);
    if (st != MAMBA_OK) return st;
    /* The model's table binds each parameter to where the model keeps it; building it writes
     * only into specs (the model is not modified). */
    mamba_model_t *m = (mamba_model_t *)model;
    const size_t count = mb_specs_count(m);
    size_t n = 0, max_bytes = 4;
    mb_spec *specs = mb_calloc(count, sizeof *specs);
    float *host = mb_calloc(tr->total, sizeof *host);
    if (specs) mb_specs_build(m, specs, &n);
    for (size_t i = 0; i < n; i++)
        if (!specs[i].skip) {
            const mamba_dtype_t dt = specs[i].mat ? specs[i].mat->dt : MAMBA_F32;
            const size_t b = mb_mat_bytes(dt, mb_spec_rows(&specs[i]), mb_spec_cols(&specs[i]));
            if (b > max_bytes) max_bytes = b;
        }
    void *stage = specs ? mb_malloc(max_bytes) : NULL;
    if (!specs || !host || !stage) {
        free(specs);
        free(host);
        free(stage);
        mamba_trainer_free(tr);
        return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "mamba_trainer_create_from_model: out of memory");
    }
    for (size_t i = 0; i < n && st == MAMBA_OK; i++) {
        const mb_spec *s = &specs[i];
        if (s->skip) continue;
        const size_t j = mb_train_find(tr, s->name);
        if (j == MB_TRAIN_NONE || (size_t)mb_spec_count(s) != tr->params[j].numel) {
            st = mb_seterr(err, MAMBA_ERR_MODEL, "mamba_trainer_create_from_model: the model's '%s' has no parameter of "
                           "its size in the trainer", s->name);
            break;
        }
        const mb_train_param *p = &tr->params[j];
        const mb_ptr src = s->mat ? s->mat->p : *s->vec;
        const mamba_dtype_t dt = s->mat ? s->mat->dt : MAMBA_F32;
        const int rc = ctx->dv->download(ctx->dev, stage, src, mb_mat_bytes(dt, mb_spec_rows(s), mb_spec_cols(s)));
        if (rc != 0) {
            st = mb_backend_fail(ctx, rc, s->name);
            break;
        }
        float *dst = host + p->off;
        mb_mat_to_f32(dst, stage, dt, mb_spec_rows(s), mb_spec_cols(s)); /* Q8_0: dequantized */
        /* the model keeps A = -exp(A_log): A_log = log(-A), exact to about an ulp */
        for (size_t k = 0; s->neg_exp && k < p->numel; k++) dst[k] = logf(-dst[k]);
        for (size_t k = 0; k < p->numel && st == MAMBA_OK; k++)
            if (!isfinite(dst[k]))
                st = mb_seterr(err, MAMBA_ERR_MODEL, "mamba_trainer_create_from_model: '%s' holds %s at index %zu",
                               s->name, s->neg_exp ? "an A that gives a non-finite A_log" : "a non-finite value", k);
    }
    if (st == MAMBA_OK) st = mb_train_upload(tr, tr->param, host, "upload of the parameters");
    free(specs);
    free(host);
    free(stage);
    if (st != MAMBA_OK) {
        mamba_trainer_free(tr);
        return st;
    }
    *out = tr;
    return MAMBA_OK;
}
