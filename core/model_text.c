/* The text side of a checkpoint: tokenizer.json beside the weights, and the end-of-sequence id
 * from generation_config.json, else config.json, else the tokenizer's <|endoftext|>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "api/alloc.h"
#include "model_text.h"

#define MB_MAX_SIDE_JSON_BYTES ((size_t)1 << 20)

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && !S_ISDIR(sb.st_mode);
}

/* eos_token_id of a JSON file: an integer or a list of them (the first counts). *found is 0
 * when the file or the field is absent, or the field null or an empty list. */
static mamba_status_t eos_of(const char *path, const char *kind, size_t vocab, int32_t *id, int *found, char *err)
{
    *found = 0;
    if (!is_file(path)) return MAMBA_OK;
    mamba_status_t st;
    cJSON *root = mb_json_read(path, MB_MAX_SIDE_JSON_BYTES, kind, err, &st);
    if (!root) return st;
    const cJSON *v = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "eos_token_id") : NULL;
    if (v && cJSON_IsArray(v)) v = v->child;
    st = MAMBA_OK;
    if (!cJSON_IsObject(root)) {
        st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: expected a JSON object", path);
    } else if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= (double)vocab ||
            v->valuedouble != (double)(int32_t)v->valuedouble)
            st = mb_seterr(err, MAMBA_ERR_FORMAT,
                           "%s: eos_token_id must be a token id in [0, %zu) or a list of them", path, vocab);
        else {
            *id = (int32_t)v->valuedouble;
            *found = 1;
        }
    }
    cJSON_Delete(root);
    return st;
}

mamba_status_t mb_model_text_load(mamba_model_t *m, const char *dir, const char *cfg_path, char *err)
{
    mb_model_text *t = mb_calloc(1, sizeof *t);
    if (!t) return mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory", cfg_path);
    m->text = t;
    const size_t vocab = (size_t)m->cfg.vocab_size;
    char path[4096];
    mamba_status_t st = MAMBA_OK;
    if (dir) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (is_file(path) && (st = mamba_tokenizer_load(path, &t->tokenizer)) != MAMBA_OK)
            return mb_seterr(err, st, "%s", mb_tls_err());
        snprintf(path, sizeof path, "%s/generation_config.json", dir);
        if ((st = eos_of(path, "a generation config", vocab, &t->eos, &t->has_eos, err)) != MAMBA_OK) return st;
    }
    if (!t->has_eos && (st = eos_of(cfg_path, "a config", vocab, &t->eos, &t->has_eos, err)) != MAMBA_OK) return st;
    if (!t->has_eos && t->tokenizer && mamba_tokenizer_find(t->tokenizer, "<|endoftext|>", &t->eos) == MAMBA_OK)
        t->has_eos = 1;
    return MAMBA_OK;
}

void mb_model_text_free(mamba_model_t *m)
{
    if (!m->text) return;
    mamba_tokenizer_free(m->text->tokenizer);
    free(m->text);
    m->text = NULL;
}

const mamba_tokenizer_t *mamba_model_tokenizer(const mamba_model_t *m)
{
    return m && m->text ? m->text->tokenizer : NULL;
}

mamba_status_t mamba_model_eos(const mamba_model_t *m, int32_t *id)
{
    if (!m || !id) return mb_seterr(mb_tls_err(), MAMBA_ERR_INVALID_ARGUMENT, "mamba_model_eos: NULL argument");
    if (!m->text || !m->text->has_eos)
        return mb_seterr(m->ctx->err, MAMBA_ERR_INVALID_ARGUMENT,
                         "no end-of-sequence token known: %s", m->text ? "the checkpoint gives no eos_token_id "
                         "(generation_config.json, config.json) and its tokenizer has no <|endoftext|>"
                         : "the model has no checkpoint directory to read it from");
    *id = m->text->eos;
    return MAMBA_OK;
}
