/* Internal declarations shared by the core's files. Not installed. */
#ifndef MB_INTERNAL_H
#define MB_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "api/backend.h"
#include "api/dtype.h"
#include "mamba.h"

#define MB_ERR_LEN 1024

#if defined(__GNUC__)
#define MB_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MB_PRINTF(a, b)
#endif

/* ---- errors and logging (error.c) ---- */
/* Format a message into err (MB_ERR_LEN bytes) and return st. */
mamba_status_t mb_seterr(char *err, mamba_status_t st, const char *fmt, ...) MB_PRINTF(3, 4);
/* This thread's buffer for calls that have no context. */
char *mb_tls_err(void);

struct mamba_context {
    const mb_backend *be;
    const mb_device_ops *dv;    /* be's four tables                                        */
    const mb_model_ops *ops;
    const mb_fused_ops *fused;  /* NULL: the backend has no fused ops                       */
    const mb_probe_ops *probe;
    mb_device *dev;
    void *module;               /* dlopen handle of the backend module, or NULL          */
    char backend_name[16];
    char device_name[128];
    char err[MB_ERR_LEN];
    mamba_log_fn log;
    void *log_user;
    mamba_log_level_t log_level;
    size_t prefill_chunk;
    mamba_weights_t weights;    /* the dtype of the models' large matrices (options.weights) */
    struct mb_host_block *host; /* mamba_alloc_host's blocks                              */
    size_t n_host, cap_host;
    int n_models;
    int alloc_injected;         /* the last mb_dev_alloc failed by fault injection         */
};

void mb_log(const mamba_context_t *ctx, mamba_log_level_t level, const char *fmt, ...)
    MB_PRINTF(3, 4);
/* Copy the backend's message of a failed op (status st) into ctx->err, naming what. */
mamba_status_t mb_backend_fail(mamba_context_t *ctx, int st, const char *what);
#define MB_TRY_BE(ctx, call, what)                                  \
    do {                                                            \
        int mb_rc_ = (call);                                        \
        if (mb_rc_ != 0) return mb_backend_fail((ctx), mb_rc_, (what)); \
    } while (0)

/* Whether [p, p + bytes) lies in one page-locked block of mamba_alloc_host. */
int mb_host_pinned(const mamba_context_t *ctx, const void *p, size_t bytes);
/* Free the blocks mamba_alloc_host left (at mamba_context_free). */
void mb_host_free_all(mamba_context_t *ctx);

/* A device allocation through the context's backend; a fault-injection point (fault.h). */
int mb_dev_alloc(mamba_context_t *ctx, size_t bytes, mb_buffer **out);
/* Why the last mb_dev_alloc failed. */
const char *mb_dev_alloc_error(const mamba_context_t *ctx);

/* ---- backend registry (registry.c) ---- */
/* Look a backend up by name, loading its module on first use. Returns NULL with a note. */
const mb_backend *mb_backend_get(const char *name, void **module, char *note, size_t note_len);

/* ---- safetensors (safetensors.c) ---- */
typedef struct mb_tensor_entry {
    char *name;
    mamba_dtype_t dtype;
    int ndim;
    int64_t shape[MAMBA_MAX_DIMS];
    size_t begin, end;   /* byte offsets in the data section */
} mb_tensor_entry;

struct mamba_tensor_file {
    char *path;
    int fd;
    unsigned char *map;
    size_t map_len;
    const unsigned char *data;   /* start of the data section */
    size_t data_len;
    mb_tensor_entry *tensors;
    size_t n_tensors;
    char **meta;                 /* key, value, key, value ... */
    size_t n_meta;
};

#define MB_MAX_HEADER_BYTES ((uint64_t)100 * 1000 * 1000)
/* Nesting limit of every JSON the library reads (a safetensors header needs 3 levels, a
 * config 2): deeper input is refused before cJSON recurses into it. */
#define MB_MAX_JSON_DEPTH 64
typedef struct cJSON cJSON;
/* Parse len bytes of JSON; NULL on failure, with *st and a message "<what>: ..." in err
 * (nested too deep, out of memory, or malformed near a byte). json.c */
cJSON *mb_json_parse(const char *text, size_t len, const char *what, char *err, mamba_status_t *st);
/* Read and parse a JSON file of at most max bytes (kind names it in the size message: "a
 * config"); NULL with *st and a message naming the file on any failure. json.c */
cJSON *mb_json_read(const char *path, size_t max, const char *kind, char *err, mamba_status_t *st);
mamba_status_t mb_tensor_file_open(const char *path, mamba_tensor_file_t **out, char *err);
const mb_tensor_entry *mb_tensor_file_lookup(const mamba_tensor_file_t *f, const char *name);
void mb_tensor_view(const mamba_tensor_file_t *f, const mb_tensor_entry *e, mamba_tensor_t *t);

/* ---- configuration (config.c) ---- */
/* Parse a config.json (Hugging Face or state-spaces layout) for the architecture its
 * model_type names (core/arch/). vocab_size comes out padded up to pad_vocab_size_multiple
 * when the file gives one (the state-spaces checkpoints' embedding has the padded rows). */
mamba_status_t mb_config_parse(const char *path, mamba_config_t *out, char *err);
/* Fill defaults (d_inner, dt_rank, d_conv ...) and check ranges. where names the source. */
mamba_status_t mb_config_finish(mamba_config_t *cfg, const char *where, char *err);

/* Standard weight names. */
#define MB_NAME_LEN 160

#endif /* MB_INTERNAL_H */
