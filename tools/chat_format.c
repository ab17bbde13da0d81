/* The chat formats: recognition from a checkpoint's tokenizer_config.json and rendering into
 * markup and content pieces. */
#include "chat_format.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

int chat_format_by_name(const char *name, chat_format *out)
{
    memset(out, 0, sizeof *out);
    if (strcmp(name, "chatml") == 0) out->kind = CHAT_FORMAT_CHATML;
    else if (strcmp(name, "zephyr") == 0) out->kind = CHAT_FORMAT_ZEPHYR;
    else if (strcmp(name, "plain") == 0) out->kind = CHAT_FORMAT_PLAIN;
    else return 0;
    snprintf(out->eos, sizeof out->eos, "</s>");
    return 1;
}

const char *chat_format_name(const chat_format *f)
{
    switch (f->kind) {
    case CHAT_FORMAT_CHATML: return "chatml";
    case CHAT_FORMAT_ZEPHYR: return "zephyr";
    default: return "plain";
    }
}

void chat_format_detect(const char *tpl, const char *eos_token, chat_format *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->eos, sizeof out->eos, "%s", eos_token && *eos_token ? eos_token : "</s>");
    if (!tpl) return;
    if (strstr(tpl, "<|im_start|>") && strstr(tpl, "<|im_end|>")) {
        out->kind = CHAT_FORMAT_CHATML;
    } else if (strstr(tpl, "<|user|>") && strstr(tpl, "<|assistant|>")) {
        out->kind = CHAT_FORMAT_ZEPHYR;
        /* a template that writes its turn ends literally rather than through eos_token */
        if (!strstr(tpl, "eos_token") && strstr(tpl, "</s>")) snprintf(out->eos, sizeof out->eos, "</s>");
    }
}

/* A token of tokenizer_config.json: a string or {"content": string}. */
static const char *token_text(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

/* chat_template: a string, or a list of {"name", "template"} of which "default" is the one. */
static const char *template_text(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 && cJSON_IsString(t)) return t->valuestring;
    }
    return NULL;
}

int chat_format_from_dir(const char *dir, chat_format *out, char *err, size_t err_len)
{
    chat_format_detect(NULL, NULL, out);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    char *text = NULL;
    long n = -1;
    if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 && n < (64L << 20) && fseek(fp, 0, SEEK_SET) == 0)
        text = malloc((size_t)n + 1);
    const size_t got = text ? fread(text, 1, (size_t)n, fp) : 0;
    fclose(fp);
    if (!text || got != (size_t)n) {
        free(text);
        snprintf(err, err_len, "%s: cannot read it (or it is over 64 MiB)", path);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, got);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(err, err_len, "%s: not a JSON object", path);
        return -1;
    }
    const char *tpl = template_text(cJSON_GetObjectItemCaseSensitive(root, "chat_template"));
    chat_format_detect(tpl, token_text(cJSON_GetObjectItemCaseSensitive(root, "eos_token")), out);
    const int recognized = tpl && out->kind != CHAT_FORMAT_PLAIN;
    cJSON_Delete(root);
    return recognized;
}

int chat_role_known(const char *role)
{
    return strcmp(role, "system") == 0 || strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0;
}

static int markup(chat_piece_fn piece, void *user, const char *s) { return piece(user, s, strlen(s), 0); }

int chat_format_render(const chat_format *f, const chat_message *msgs, size_t n, int add_generation_prompt,
                       chat_piece_fn piece, void *user)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const chat_message *m = &msgs[i];
        char open[96];
        switch (f->kind) {
        case CHAT_FORMAT_CHATML:
            snprintf(open, sizeof open, "<|im_start|>%s\n", m->role);
            break;
        case CHAT_FORMAT_ZEPHYR:
            snprintf(open, sizeof open, "<|%s|>\n", m->role);
            break;
        default:
            /* "User: ", "System: ", "Assistant: " */
            snprintf(open, sizeof open, "%c%s: ", m->role[0] >= 'a' && m->role[0] <= 'z' ? m->role[0] - 'a' + 'A' : m->role[0],
                     m->role[0] ? m->role + 1 : "");
            break;
        }
        if ((rc = markup(piece, user, open)) != 0) break;
        if (m->content_len && (rc = piece(user, m->content, m->content_len, 1)) != 0) break;
        switch (f->kind) {
        case CHAT_FORMAT_CHATML: rc = markup(piece, user, "<|im_end|>\n"); break;
        case CHAT_FORMAT_ZEPHYR:
            if ((rc = markup(piece, user, f->eos)) == 0) rc = markup(piece, user, "\n");
            break;
        default: rc = markup(piece, user, "\n"); break;
        }
    }
    if (rc || !add_generation_prompt) return rc;
    switch (f->kind) {
    case CHAT_FORMAT_CHATML: return markup(piece, user, "<|im_start|>assistant\n");
    case CHAT_FORMAT_ZEPHYR: return markup(piece, user, "<|assistant|>\n");
    default: return markup(piece, user, "Assistant:");
    }
}

size_t chat_format_stops(const chat_format *f, const char **stops, size_t cap)
{
    const char *all[2];
    size_t n = 0;
    switch (f->kind) {
    case CHAT_FORMAT_CHATML: all[n++] = "<|im_end|>"; break;
    case CHAT_FORMAT_ZEPHYR: all[n++] = f->eos; all[n++] = "<|user|>"; break;
    default: all[n++] = "\nUser:"; break;
    }
    for (size_t i = 0; i < n && i < cap; i++) stops[i] = all[i];
    return n;
}
