/* JSON files and text parsed with the library's limits, and failures told apart: too deep,
 * out of memory (cJSON returns NULL for both, like for a syntax error), malformed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "api/alloc.h"

/* The deepest nesting of objects and arrays outside strings; stops counting past limit. */
static int nesting_depth(const char *s, size_t len, int limit)
{
    int depth = 0, deepest = 0, in_string = 0;
    for (size_t i = 0; i < len && deepest <= limit; i++) {
        const char c = s[i];
        if (in_string) {
            if (c == '\\') i++;
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > deepest) deepest = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return deepest;
}

cJSON *mb_json_parse(const char *text, size_t len, const char *what, char *err, mamba_status_t *st)
{
    const int depth = nesting_depth(text, len, MB_MAX_JSON_DEPTH);
    if (depth > MB_MAX_JSON_DEPTH) {
        *st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: JSON nested more than %d levels deep", what, MB_MAX_JSON_DEPTH);
        return NULL;
    }
    errno = 0;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (root) {
        *st = MAMBA_OK;
        return root;
    }
    /* allocation failures set ENOMEM (malloc does, and so do the fault-injection points) */
    if (errno == ENOMEM) {
        *st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory parsing JSON", what);
        return NULL;
    }
    const char *at = cJSON_GetErrorPtr();
    const long pos = at && at >= text && at <= text + len ? (long)(at - text) : -1;
    *st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: malformed JSON (error near byte %ld)", what, pos);
    return NULL;
}

cJSON *mb_json_read(const char *path, size_t max, const char *kind, char *err, mamba_status_t *st)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        *st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        *st = mb_seterr(err, MAMBA_ERR_IO, "%s: is a directory, expected a JSON file", path);
        return NULL;
    }
    if ((size_t)sb.st_size > max) {
        *st = mb_seterr(err, MAMBA_ERR_FORMAT, "%s: %lld bytes, more than the %zu allowed for %s", path,
                        (long long)sb.st_size, max, kind);
        return NULL;
    }
    const size_t len = (size_t)sb.st_size;
    FILE *fp = mb_fopen(path, "rb");
    char *buf = mb_malloc(len + 1);
    const size_t got = (fp && buf) ? mb_fread(buf, 1, len, fp) : 0;
    if (fp) fclose(fp);
    if (fp && !buf) {
        *st = mb_seterr(err, MAMBA_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu bytes", path, len);
        return NULL;
    }
    if (!fp || got != len) {
        free(buf);
        *st = mb_seterr(err, MAMBA_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    cJSON *root = mb_json_parse(buf, len, path, err, st);
    free(buf);
    return root;
}
