/* Falcon-Mamba (model_type "falcon_mamba", transformers' FalconMambaForCausalLM): the Mamba-1
 * layer with one difference, after x_proj each of dt, B and C passes through an RMSNorm with
 * no weight, x / sqrt(mean(x^2) + mixer_rms_eps), dt before dt_proj. Its checkpoints carry an
 * untied lm_head and give intermediate_size, which wins over expand. */
#include <cjson/cJSON.h>

#include "arch/mamba1.h"

static mamba_status_t parse_config(const cJSON *root, mamba_config_t *cfg, const char *path, char *err)
{
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "mixer_rms_eps");
    if (!eps || cJSON_IsNull(eps)) return MAMBA_OK;
    if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) || eps->valuedouble >= 1)
        return mb_seterr(err, MAMBA_ERR_FORMAT, "%s: field 'mixer_rms_eps' must be a number in (0, 1)", path);
    cfg->mixer_rms_eps = (float)eps->valuedouble;
    return MAMBA_OK;
}

static mamba_status_t finish_config(mamba_config_t *cfg, const char *where, char *err)
{
    if (cfg->mixer_rms_eps == 0) cfg->mixer_rms_eps = 1e-6f; /* FalconMambaConfig's default */
    if (!(cfg->mixer_rms_eps > 0 && cfg->mixer_rms_eps < 1))
        return mb_seterr(err, MAMBA_ERR_MODEL, "%s: mixer_rms_eps %g out of (0, 1)", where, cfg->mixer_rms_eps);
    return MAMBA_OK;
}

static mamba_status_t enqueue(const mb_layer_io *io) { return mb_mamba1_enqueue(io, io->model->cfg.mixer_rms_eps); }

static void step_query(const mamba_model_t *m, size_t batch, mb_fused_query *q) { mb_mamba1_step_query(m, batch, 1, q); }

const mb_arch mb_arch_falcon_mamba = {
    .model_type = "falcon_mamba",
    MB_MAMBA1_FAMILY,
    .parse_config = parse_config,
    .finish_config = finish_config,
    .step_query = step_query,
    .enqueue_layer = enqueue,
};
