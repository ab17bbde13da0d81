/* config.json of a Mamba checkpoint: Hugging Face MambaConfig (hidden_size, state_size ...)
 * or the original state-spaces layout (d_model, n_layer, ssm_cfg ...). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "arch/arch.h"

#define MB_MAX_CONFIG_BYTES (1 << 20)

/* Read an integer field; absent leaves *v. Returns 0 on a present field of the wrong type. */
static int get_int(const cJSON *o, const char *key, int *v, int *present)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it)) return 1;
    if (cJSON_IsBool(it)) { *v = cJSON_IsTrue(it); if (present) *present = 1; return 1; }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
        fabs(it->valuedouble) > 1e9)
        return 0;
    *v = (int)it->valuedouble;
    if (present) *present = 1;
    return 1;
}

mamba_status_t mb_config_parse(const char *path, mamba_config_t *c, char *err)
{
    memset(c, 0, sizeof *c);
    mamba_status_t st;
    cJSON *root = mb_json_read(path, MB_MAX_CONFIG_BYTES, "a config", err, &st);
    if (!root) return st;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: malformed config (expected a JSON object)", path);
    }
    /* the architecture first: it decides what else the file holds. The state-spaces configs
     * name none: Mamba-1. */
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *type = cJSON_IsString(mt) ? mt->valuestring : "mamba";
    const mb_arch *arch = mb_arch_find(type);
    if (!arch || (mt && !cJSON_IsString(mt))) {
        if (mt && !cJSON_IsString(mt))
            mb_seterr(err, MAMBA_ERR_FORMAT, "%s: field 'model_type' must be a string", path);
        else
            mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (supported: %s)", path, type,
                      mb_arch_names());
        cJSON_Delete(root);
        return mt && !cJSON_IsString(mt) ? MAMBA_ERR_FORMAT : MAMBA_ERR_UNSUPPORTED;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", arch->model_type);
    int pad_vocab_multiple = 0, dt_rank_auto = 0;
    c->tie_embeddings = 1;
    c->use_conv_bias = 1;
    c->norm_eps = 1e-5f;
    const char *bad = NULL;
    /* Hugging Face names first, then state-spaces names. */
    int have_dm = 0, have_nl = 0, have_vocab = 0;
    if (!get_int(root, "hidden_size", &c->d_model, &have_dm)) bad = "hidden_size";
    if (!get_int(root, "d_model", &c->d_model, &have_dm)) bad = "d_model";
    if (!get_int(root, "num_hidden_layers", &c->n_layer, &have_nl)) bad = "num_hidden_layers";
    if (!get_int(root, "n_layer", &c->n_layer, &have_nl)) bad = "n_layer";
    if (!get_int(root, "vocab_size", &c->vocab_size, &have_vocab)) bad = "vocab_size";
    if (!get_int(root, "state_size", &c->d_state, NULL)) bad = "state_size";
    if (!get_int(root, "conv_kernel", &c->d_conv, NULL)) bad = "conv_kernel";
    if (!get_int(root, "expand", &c->expand, NULL)) bad = "expand";
    if (!get_int(root, "intermediate_size", &c->d_inner, NULL)) bad = "intermediate_size";
    if (!get_int(root, "use_bias", &c->use_bias, NULL)) bad = "use_bias";
    if (!get_int(root, "use_conv_bias", &c->use_conv_bias, NULL)) bad = "use_conv_bias";
    if (!get_int(root, "tie_word_embeddings", &c->tie_embeddings, NULL)) bad = "tie_word_embeddings";
    if (!get_int(root, "tie_embeddings", &c->tie_embeddings, NULL)) bad = "tie_embeddings";
    if (!get_int(root, "pad_vocab_size_multiple", &pad_vocab_multiple, NULL)) bad = "pad_vocab_size_multiple";
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_epsilon");
    if (!eps) eps = cJSON_GetObjectItemCaseSensitive(root, "norm_epsilon");
    if (eps) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) || eps->valuedouble > 1)
            bad = "layer_norm_epsilon";
        else
            c->norm_eps = (float)eps->valuedouble;
    }
    const cJSON *rank = cJSON_GetObjectItemCaseSensitive(root, "time_step_rank");
    const cJSON *ssm = cJSON_GetObjectItemCaseSensitive(root, "ssm_cfg");
    if (ssm && cJSON_IsObject(ssm)) {
        if (!get_int(ssm, "d_state", &c->d_state, NULL)) bad = "ssm_cfg.d_state";
        if (!get_int(ssm, "d_conv", &c->d_conv, NULL)) bad = "ssm_cfg.d_conv";
        if (!get_int(ssm, "expand", &c->expand, NULL)) bad = "ssm_cfg.expand";
        if (!get_int(ssm, "bias", &c->use_bias, NULL)) bad = "ssm_cfg.bias";
        if (!get_int(ssm, "conv_bias", &c->use_conv_bias, NULL)) bad = "ssm_cfg.conv_bias";
        const cJSON *layer = cJSON_GetObjectItemCaseSensitive(ssm, "layer");
        if (cJSON_IsString(layer) && strcmp(layer->valuestring, "Mamba1") != 0) {
            mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "%s: ssm_cfg.layer is '%s'; only Mamba1 is supported",
                      path, layer->valuestring);
            cJSON_Delete(root);
            return MAMBA_ERR_UNSUPPORTED;
        }
        if (!rank) rank = cJSON_GetObjectItemCaseSensitive(ssm, "dt_rank");
    } else if (ssm && !cJSON_IsNull(ssm)) {
        bad = "ssm_cfg";
    }
    if (rank && !cJSON_IsNull(rank)) {
        if (cJSON_IsString(rank) && strcmp(rank->valuestring, "auto") == 0)
            dt_rank_auto = 1;
        else if (cJSON_IsNumber(rank) && rank->valuedouble == floor(rank->valuedouble) &&
                 fabs(rank->valuedouble) < 1e9)
            c->dt_rank = (int)rank->valuedouble;
        else
            bad = "time_step_rank";
    } else {
        dt_rank_auto = 1;
    }
    st = bad || !arch->parse_config ? MAMBA_OK : arch->parse_config(root, c, path, err);
    cJSON_Delete(root);
    if (st != MAMBA_OK) return st;
    if (bad) return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: field '%s' has the wrong type or range", path, bad);
    const char *missing = !have_dm ? "hidden_size (or d_model)"
                        : !have_nl ? "num_hidden_layers (or n_layer)"
                        : !have_vocab ? "vocab_size" : NULL;
    if (missing) return mb_seterr(err, MAMBA_ERR_MODEL, "%s: required field %s is missing", path, missing);
    if (pad_vocab_multiple > 0 && c->vocab_size % pad_vocab_multiple)
        c->vocab_size += pad_vocab_multiple - c->vocab_size % pad_vocab_multiple;
    if (dt_rank_auto) c->dt_rank = 0;
    return mb_config_finish(c, path, err);
}

mamba_status_t mb_config_finish(mamba_config_t *c, const char *where, char *err)
{
    if (!memchr(c->model_type, 0, sizeof c->model_type))
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "%s: model_type is not a NUL-terminated string", where);
    if (!c->model_type[0]) snprintf(c->model_type, sizeof c->model_type, "mamba");
    const mb_arch *arch = mb_arch_find(c->model_type);
    if (!arch)
        return mb_seterr(err, MAMBA_ERR_UNSUPPORTED, "%s: model_type '%.*s' is not supported (supported: %s)", where,
                         (int)sizeof c->model_type, c->model_type, mb_arch_names());
    if (c->d_state == 0) c->d_state = 16;
    if (c->d_conv == 0) c->d_conv = 4;
    if (c->expand == 0) c->expand = 2;
    if (c->norm_eps == 0) c->norm_eps = 1e-5f;
    /* out-of-range factors are reported below, and must not overflow the product first */
    if (c->d_model > 0 && c->d_model <= (1 << 16) && c->expand >= 1 && c->expand <= 64 && c->d_inner == 0)
        c->d_inner = c->expand * c->d_model;
    if (c->d_model > 0 && c->dt_rank == 0) c->dt_rank = (c->d_model + 15) / 16;
    struct { const char *name; int v, lo, hi; } checks[] = {
        {"d_model", c->d_model, 1, 1 << 16},  {"n_layer", c->n_layer, 1, 4096},
        {"vocab_size", c->vocab_size, 1, 1 << 24}, {"d_state", c->d_state, 1, 256},
        {"d_conv", c->d_conv, 1, 64},         {"expand", c->expand, 1, 64},
        {"d_inner", c->d_inner, 1, 1 << 20},  {"dt_rank", c->dt_rank, 1, 1 << 16},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (checks[i].v < checks[i].lo || checks[i].v > checks[i].hi)
            return mb_seterr(err, MAMBA_ERR_MODEL, "%s: %s = %d, expected %d..%d", where, checks[i].name,
                             checks[i].v, checks[i].lo, checks[i].hi);
    if (!(c->norm_eps > 0 && c->norm_eps < 1))
        return mb_seterr(err, MAMBA_ERR_MODEL, "%s: norm epsilon %g out of (0, 1)", where, c->norm_eps);
    return arch->finish_config ? arch->finish_config(c, where, err) : MAMBA_OK;
}

void mamba_config_init(mamba_config_t *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->model_type, sizeof cfg->model_type, "mamba");
    cfg->use_conv_bias = 1;
    cfg->tie_embeddings = 1;
    cfg->norm_eps = 1e-5f;
}

mamba_status_t mamba_config_standard(const char *size, mamba_config_t *cfg)
{
    static const struct { const char *name; int d_model, n_layer; } sizes[] = {
        {"130m", 768, 24}, {"370m", 1024, 48}, {"790m", 1536, 48}, {"1.4b", 2048, 48}, {"2.8b", 2560, 64},
    };
    if (!size || !cfg)
        return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_config_standard: NULL argument");
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (strcmp(size, sizes[i].name) != 0) continue;
        mamba_config_init(cfg);
        cfg->d_model = sizes[i].d_model;
        cfg->n_layer = sizes[i].n_layer;
        cfg->vocab_size = 50280;
        return mb_config_finish(cfg, size, mb_tls_err());
    }
    return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT,
                     "unknown model size '%s' (expected 130m, 370m, 790m, 1.4b or 2.8b)", size);
}

mamba_status_t mamba_config_load(const char *path, mamba_config_t *cfg)
{
    char *err = mb_tls_err();
    if (!path || !cfg) return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "mamba_config_load: path and cfg are required");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mb_seterr(err, MAMBA_ERR_IO, "%s: cannot read the config: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return mb_config_parse(path, cfg, err);
    char file[4096];
    if ((size_t)snprintf(file, sizeof file, "%s/config.json", path) >= sizeof file)
        return mb_seterr(err, MAMBA_ERR_INVALID_ARGUMENT, "%s: path too long", path);
    return mb_config_parse(file, cfg, err);
}
