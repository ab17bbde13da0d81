/* Internal declarations shared by the core's files. Not installed. */
#ifndef MB_INTERNAL_H
#define MB_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
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
    mb_device *dev;
    void *module;               /* dlopen handle of the backend module, or NULL          */
    char backend_name[16];
    char device_name[128];
    char err[MB_ERR_LEN];
    mamba_log_fn log;
    void *log_user;
    mamba_log_level_t log_level;
    size_t prefill_chunk;
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
typedef struct mb_backend_entry {
    const char *name;
    const mb_backend *be;   /* NULL when the module is absent */
    void *module;
    char note[256];
} mb_backend_entry;
/* Look a backend up by name, loading its module on first use. Returns NULL with a note. */
const mb_backend *mb_backend_get(const char *name, void **module, char *note, size_t note_len);
const mb_backend *mb_cpu_backend(void);

/* ---- numbers (half.c) ---- */
size_t mb_dtype_size(mamba_dtype_t dt);
/* Convert n elements of src (dtype) to f32. */
void mb_to_f32(float *dst, const void *src, mamba_dtype_t dt, size_t n);
void mb_from_f32(void *dst, const float *src, mamba_dtype_t dt, size_t n);

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
/* Parse a config.json (Hugging Face MambaConfig or state-spaces). vocab_size is the
 * unpadded size when pad_vocab_size_multiple is given; the loader settles it against the
 * embedding. */
typedef struct mb_config_file {
    mamba_config_t cfg;
    int pad_vocab_multiple;    /* 0: none */
    int dt_rank_auto;
    int has_tie;               /* tie_word_embeddings was given */
} mb_config_file;
mamba_status_t mb_config_parse(const char *path, mb_config_file *out, char *err);
/* Fill defaults (d_inner, dt_rank, d_conv ...) and check ranges. where names the source. */
mamba_status_t mb_config_finish(mamba_config_t *cfg, const char *where, char *err);

/* ---- the model (weights.c, model.c) ---- */
/* A weight matrix on the device in its stored dtype. */
typedef struct mb_mat {
    mb_ptr p;
    mamba_dtype_t dt;
} mb_mat;

/* Vectors are converted to f32 at load (they are tiny); matrices keep their dtype. */
typedef struct mb_layer_weights {
    mb_ptr norm;          /* (d_model)                                                  */
    mb_mat in_proj;       /* (2*d_inner, d_model)                                       */
    mb_ptr in_proj_bias;  /* (2*d_inner) or none                                        */
    mb_ptr conv_w;        /* (d_inner, d_conv)                                          */
    mb_ptr conv_b;        /* (d_inner) or none                                          */
    mb_mat x_proj;        /* (dt_rank + 2N, d_inner)                                    */
    mb_mat dt_proj;       /* (d_inner, dt_rank)                                         */
    mb_ptr dt_bias;       /* (d_inner)                                                  */
    mb_ptr A;             /* (d_inner, N), = -exp(A_log), computed at load              */
    mb_ptr D;             /* (d_inner)                                                  */
    mb_mat out_proj;      /* (d_model, d_inner)                                         */
    mb_ptr out_proj_bias; /* (d_model) or none                                          */
} mb_layer_weights;

struct mamba_model {
    mamba_context_t *ctx;
    mamba_config_t cfg;
    mamba_dtype_t wdtype;      /* dtype of the embedding, reported as the model's       */
    mb_buffer *weights;        /* one allocation holding every weight                  */
    size_t weight_bytes;
    uint64_t n_params;
    mb_mat embedding;          /* (vocab, d_model)                                     */
    mb_ptr norm_f;             /* (d_model) f32                                        */
    mb_mat lm_head;            /* (vocab, d_model); = embedding when tied              */
    mb_layer_weights *layers;
    int n_states;
    /* mamba_forward's state and buffers, kept for the next call of the same batch and chunk
     * (allocating and freeing ~1 GB of device memory cost the 130m's 2048-token forward
     * milliseconds a call); freed by mamba_model_free */
    struct mamba_state *forward_state;
    size_t forward_chunk;
};

/* The per-sequence recurrent state and the activation workspace of one batch size. */
struct mamba_state {
    mamba_model_t *model;
    size_t batch;
    size_t chunk;              /* tokens per sequence per pass                          */
    size_t last_chunk;         /* > 0: the last last_chunk (<= chunk) tokens run as a chunk
                                  of their own, the ones before in even chunks             */
    mb_buffer *state;          /* per layer: conv (batch, d_conv-1, d_inner), ssm (batch, d_inner, N) */
    size_t conv_bytes, ssm_bytes; /* per layer */
    mb_buffer *work;           /* activations for batch*chunk rows                      */
    size_t work_bytes;
    mb_buffer *logits;         /* logits of one chunk, grown on demand                  */
    size_t logits_bytes;
    int32_t *host_ids;         /* (batch * chunk) staging                               */
    void *step_graph;          /* the captured one-token step, when the backend records graphs */
    int graph_failed;          /* capture was tried and failed: run steps directly          */
    int overlap_logits;        /* all-position logits go to page-locked host memory with
                                  download_async, overlapping the next chunk; the chunks'
                                  logits alternate between two regions of s->logits        */
    size_t overlap_chunks;     /* chunks whose logits copies have been enqueued so far    */
};

/* A state whose chunks hold at most chunk tokens per sequence (0: the context's). */
mamba_status_t mb_state_new(mamba_model_t *m, size_t batch, size_t chunk, mamba_state_t **out);
/* Run ids (batch, len) through the model from the state; logits of all positions
 * (batch, len, vocab), of the last (batch, vocab), or none (logits NULL). */
mamba_status_t mb_model_run(mamba_state_t *s, const int32_t *ids, size_t len,
                            mamba_logits_mode_t mode, float *logits);
mamba_status_t mb_check_ids(mamba_context_t *ctx, const int32_t *ids, size_t n, int vocab);
/* Workspace bytes for a chunk of rows (batch x T) of the model's activations. */
size_t mb_work_bytes(const mamba_config_t *c, size_t rows);
/* Release a state's recorded decode-step graph, if any. */
void mb_state_drop_graph(mamba_state_t *s);
/* Where a one-token step reads its ids (batch int32) in the workspace. */
mb_ptr mb_model_step_ids(const mamba_state_t *s);
/* Enqueue one step (T = 1) for the ids already at mb_model_step_ids(); the last logits
 * (batch, vocab) will be at *logits. */
mamba_status_t mb_model_step_enqueue(mamba_state_t *s, mb_ptr *logits);

/* Standard weight names. */
#define MB_NAME_LEN 160

#endif /* MB_INTERNAL_H */
