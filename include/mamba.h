/*
 * libmamba: Mamba selective state space models on CPUs, OpenCL devices and CUDA GPUs.
 *
 * The only header a user includes. Every call returns a mamba_status_t; on failure
 * mamba_last_error(ctx) (or mamba_last_error(NULL) for calls that have no context)
 * says what went wrong and where. The library never prints to stdout and never exits.
 *
 * Thread safety: the library has no global mutable state besides the per-thread error
 * message of context-less calls. A context, and every model, state and sampler made from
 * it, must be used by one thread at a time; separate contexts may be used from separate
 * threads concurrently. A sampler is independent of any context, but is not to be shared
 * between threads either. Read-only calls (mamba_version, mamba_status_string,
 * mamba_list_backends, mamba_list_devices) may be called from any thread.
 *
 * Ownership: free states before their model, models before their context.
 */
#ifndef MAMBA_H
#define MAMBA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define MAMBA_API
#else
#define MAMBA_API __attribute__((visibility("default")))
#endif

#define MAMBA_VERSION_MAJOR 0
#define MAMBA_VERSION_MINOR 1
#define MAMBA_VERSION_PATCH 0

typedef enum mamba_status {
    MAMBA_OK = 0,
    MAMBA_ERR_INVALID_ARGUMENT, /* a bad argument: NULL, 0 size, token out of range ...   */
    MAMBA_ERR_IO,               /* a file could not be opened, mapped, read or written    */
    MAMBA_ERR_FORMAT,           /* a file's content is malformed (JSON, safetensors)      */
    MAMBA_ERR_MODEL,            /* config and tensors disagree, a tensor is missing       */
    MAMBA_ERR_UNSUPPORTED,      /* a valid request this build or device cannot serve      */
    MAMBA_ERR_NO_BACKEND,       /* the named backend is unknown or could not be loaded    */
    MAMBA_ERR_NO_DEVICE,        /* the backend has no such device                         */
    MAMBA_ERR_OUT_OF_MEMORY,    /* host or device allocation failed                       */
    MAMBA_ERR_BACKEND,          /* a backend call failed (driver error, kernel build)     */
} mamba_status_t;

typedef enum mamba_dtype {
    MAMBA_F32 = 0,
    MAMBA_F16,
    MAMBA_BF16,
    MAMBA_I64,
    MAMBA_I32,
    MAMBA_F64,
    MAMBA_I8,
    /* Weights in 8 bits (the name "Q8_0"): int8 values and an fp16 scale per block of 32
     * along a row, w = q * scale; see mamba_context_options_t.weights */
    MAMBA_Q8,
} mamba_dtype_t;

typedef enum mamba_log_level {
    MAMBA_LOG_ERROR = 0,
    MAMBA_LOG_WARN,
    MAMBA_LOG_INFO,
    MAMBA_LOG_DEBUG,
} mamba_log_level_t;

typedef void (*mamba_log_fn)(mamba_log_level_t level, const char *message, void *user);

typedef struct mamba_context mamba_context_t;
typedef struct mamba_model mamba_model_t;
typedef struct mamba_state mamba_state_t;
typedef struct mamba_sampler mamba_sampler_t;
typedef struct mamba_tensor_file mamba_tensor_file_t;

/* ---- library ---------------------------------------------------------------------- */

MAMBA_API const char *mamba_version(void);
MAMBA_API const char *mamba_status_string(mamba_status_t status);
/* The message of the last failure on ctx, or of this thread's last context-less call
 * when ctx is NULL. Never NULL; "" when nothing failed. */
MAMBA_API const char *mamba_last_error(const mamba_context_t *ctx);
MAMBA_API const char *mamba_dtype_name(mamba_dtype_t dtype);

/* ---- backends and devices ---------------------------------------------------------- */

typedef struct mamba_backend_info {
    char name[16];      /* "cpu", "opencl", "cuda"                                    */
    int available;      /* module loaded and at least one usable device              */
    int n_devices;
    char note[256];     /* why it is not available, or where its module was loaded   */
} mamba_backend_info_t;

typedef struct mamba_device_info {
    char backend[16];
    uint64_t memory_bytes;
    int index;          /* the i of "backend:i"                                       */
    char name[128];
    int compute_units;
    int is_gpu;
    int usable;
    char note[128];
} mamba_device_info_t;

/* Fill up to cap entries; *count receives the number found (may exceed cap). */
MAMBA_API mamba_status_t mamba_list_backends(mamba_backend_info_t *out, size_t cap, size_t *count);
MAMBA_API mamba_status_t mamba_list_devices(mamba_device_info_t *out, size_t cap, size_t *count);

/* ---- context ----------------------------------------------------------------------- */

/* How fp32 GEMMs (prefill, all logits) run where the backend has a choice. */
typedef enum mamba_gemm {
    MAMBA_GEMM_DEFAULT = 0, /* the backend's fp32-accurate best: CUDA (sm_80+) sums three TF32
                               tensor-core products (3xTF32), about cuBLAS SGEMM's error      */
    MAMBA_GEMM_VENDOR,      /* the vendor library's fp32 GEMM: cuBLAS SGEMM, CLBlast, OpenBLAS */
    MAMBA_GEMM_TF32,        /* CUDA: plain TF32 tensor cores, ~1e-3 relative error, fastest   */
} mamba_gemm_t;

/* The arithmetic of GEMMs whose weights are stored in 16 bits (bf16, f16). */
typedef enum mamba_compute {
    MAMBA_COMPUTE_AUTO = 0, /* the weights' own dtype: GEMMs of more rows than a decoding step's
                               run on the tensor cores with inputs in bf16/f16 and fp32 sums
                               (the residual stream, the scan and its state stay fp32);
                               fp32 weights compute in fp32                                     */
    MAMBA_COMPUTE_F32,      /* fp32 arithmetic on 16-bit weights (widened), as before          */
} mamba_compute_t;

/* The weights' dtype on the device, for the models a context loads or creates. */
typedef enum mamba_weights {
    MAMBA_WEIGHTS_STORED = 0, /* as stored in the checkpoint (or asked of the synthetic model) */
    MAMBA_WEIGHTS_Q8,         /* in_proj, out_proj, the embedding and lm_head quantized to
                                 MAMBA_Q8 at load (scale = max|w| / 127 per block of 32, fp16;
                                 q = round(w / scale)); x_proj, dt_proj, conv, A, D, the norms and
                                 the biases keep their precision, as does the state              */
} mamba_weights_t;

typedef struct mamba_context_options {
    const char *backend;      /* "auto" (default), "cpu", "opencl[:i]", "cuda[:i]"      */
    int n_threads;            /* CPU threads; 0: the OpenMP default                     */
    size_t prefill_chunk;     /* tokens per sequence processed at once; 0: 2048          */
    mamba_log_fn log;         /* NULL: warnings and errors to stderr                     */
    void *log_user;
    mamba_log_level_t log_level;
    /* Implementation switches that change kernels or numerics. mamba_context_options_init
     * takes their defaults from the environment: MAMBA_CUDA_GEMM=cublas sets
     * MAMBA_GEMM_VENDOR, MAMBA_CUDA_TF32=1 MAMBA_GEMM_TF32, MAMBA_CPU_PORTABLE (any value)
     * portable_kernels, MAMBA_OPENCL_PROFILE (any value) profile. */
    mamba_gemm_t gemm;
    int portable_kernels;     /* CPU: portable C kernels only, no AVX-512 intrinsics     */
    int profile;              /* OpenCL: each kernel's device time to the log (INFO)     */
    mamba_compute_t compute;  /* MAMBA_COMPUTE=f32 sets MAMBA_COMPUTE_F32                 */
    mamba_weights_t weights;  /* MAMBA_WEIGHTS=q8 sets MAMBA_WEIGHTS_Q8                   */
} mamba_context_options_t;

/* Defaults, including the environment's (see above). */
MAMBA_API void mamba_context_options_init(mamba_context_options_t *opts);
MAMBA_API mamba_status_t mamba_context_create(const mamba_context_options_t *opts,
                                              mamba_context_t **out);
MAMBA_API void mamba_context_free(mamba_context_t *ctx);
/* The backend name and device name the context runs on. */
MAMBA_API const char *mamba_context_backend(const mamba_context_t *ctx);
MAMBA_API const char *mamba_context_device(const mamba_context_t *ctx);
/* Block until all work queued on the context's device is done. */
MAMBA_API mamba_status_t mamba_context_synchronize(mamba_context_t *ctx);
/* Host memory for large outputs (the logits of every position) that the context's device
 * copies into at full speed: page-locked on CUDA, where a malloc'd buffer receives at a
 * fraction of the bus's rate; 64-byte-aligned ordinary memory elsewhere. mamba_forward with
 * MAMBA_LOGITS_ALL into such a buffer also overlaps the copies with the computation. NULL on
 * failure (mamba_last_error says why). Free it with mamba_free_host before the context;
 * mamba_context_free frees what is left. */
MAMBA_API void *mamba_alloc_host(mamba_context_t *ctx, size_t bytes);
MAMBA_API void mamba_free_host(mamba_context_t *ctx, void *ptr);

/* ---- model ------------------------------------------------------------------------- */

typedef struct mamba_config {
    char model_type[24];   /* the architecture: "mamba" (Mamba-1), "falcon_mamba"          */
    int d_model;
    int n_layer;
    int vocab_size;        /* rows of the embedding (padded vocabulary)                */
    int d_state;           /* N                                                         */
    int d_conv;
    int expand;
    int d_inner;
    int dt_rank;
    int use_bias;          /* in_proj and out_proj have biases                           */
    int use_conv_bias;
    int tie_embeddings;
    float norm_eps;
    float mixer_rms_eps;   /* falcon_mamba: eps of the weightless RMSNorms of dt, B and C */
} mamba_config_t;

typedef struct mamba_model_info {
    mamba_config_t config;
    uint64_t n_params;
    uint64_t weight_bytes;     /* bytes of the weights on the device                   */
    mamba_dtype_t dtype;       /* dtype of the large matrices                          */
} mamba_model_info_t;

/* Load a Hugging Face checkpoint: path is a directory holding config.json and
 * model.safetensors (or model.safetensors.index.json with its shards), or else
 * pytorch_model.bin (or pytorch_model.bin.index.json), read without running its pickle. The
 * config's model_type picks the architecture ("mamba", "falcon_mamba"); any other is refused
 * with its name. Weights live on the device one buffer a tensor (each no larger than the
 * device's largest allocation). A tokenizer.json in the directory is loaded with it (a
 * malformed one fails the load; see mamba_model_tokenizer and mamba_model_eos). */
MAMBA_API mamba_status_t mamba_model_load(mamba_context_t *ctx, const char *path,
                                          mamba_model_t **out);
/* Load from an explicit config.json and one safetensors file or pytorch_model.bin. */
MAMBA_API mamba_status_t mamba_model_load_files(mamba_context_t *ctx, const char *config_path,
                                                const char *weights_path, mamba_model_t **out);
/* Mamba's defaults: model_type "mamba", conv bias on, tied embeddings, eps 1e-5, the sizes 0
 * (derived from d_model when left 0: d_inner = expand * d_model, dt_rank = ceil(d_model / 16)).
 * For a synthetic Falcon-Mamba set model_type "falcon_mamba" (mixer_rms_eps 0 takes 1e-6). */
MAMBA_API void mamba_config_init(mamba_config_t *cfg);
/* Fill cfg for a standard size: "130m", "370m", "790m", "1.4b", "2.8b". */
MAMBA_API mamba_status_t mamba_config_standard(const char *size, mamba_config_t *cfg);
/* Read a Hugging Face config.json (path: the file, or a directory holding it) into cfg, the
 * sizes it leaves out derived as mamba_model_load derives them. Errors: mamba_last_error(NULL). */
MAMBA_API mamba_status_t mamba_config_load(const char *path, mamba_config_t *cfg);
/* A model with seeded random weights of realistic scale (no checkpoint needed). Start cfg
 * from mamba_config_init or mamba_config_standard; it must give d_model, n_layer and
 * vocab_size, and sizes left 0 take Mamba's defaults. */
MAMBA_API mamba_status_t mamba_model_create_synthetic(mamba_context_t *ctx,
                                                      const mamba_config_t *cfg,
                                                      mamba_dtype_t dtype, uint64_t seed,
                                                      mamba_model_t **out);
MAMBA_API mamba_status_t mamba_model_info(const mamba_model_t *model, mamba_model_info_t *info);
/* The dtype the model's layer GEMMs multiply in over a pass of rows rows (sequences x tokens
 * of each in one chunk; a decoding step: its batch): the weights' 16-bit dtype where the
 * context's backend runs such GEMMs on 16-bit inputs (CUDA from 2 rows, unless
 * MAMBA_COMPUTE_F32), else MAMBA_F32 (fp32 weights; 16-bit weights widened or read by a
 * GEMV with fp32 arithmetic). Sums and outputs are fp32 either way. */
MAMBA_API mamba_status_t mamba_model_compute_dtype(const mamba_model_t *model, size_t rows, mamba_dtype_t *dtype);
/* Write the model's weights to one safetensors file (atomically), as it holds them: matrices in
 * their dtype on the device, vectors in f32 (A as A_log). A MAMBA_Q8 matrix NAME is two tensors,
 * NAME (I8, (rows, cols)) and NAME.scale (F16, (rows, cols / 32)), and the file's metadata has
 * "libmamba.weights": "q8_0"; mamba_model_load reads such a file back to the same bytes. With the
 * source's config.json beside it the directory is a checkpoint (mamba convert does both). */
MAMBA_API mamba_status_t mamba_model_save_weights(const mamba_model_t *model, const char *path);
MAMBA_API void mamba_model_free(mamba_model_t *model);

typedef enum mamba_logits_mode {
    MAMBA_LOGITS_ALL = 0,   /* logits of every position: (batch, len, vocab)              */
    MAMBA_LOGITS_LAST,      /* logits of the last position: (batch, vocab)                */
} mamba_logits_mode_t;

/* Full-sequence forward from an empty state. ids: (batch, len) row-major; every id in
 * [0, vocab). logits must hold batch*len*vocab floats (ALL) or batch*vocab (LAST). The
 * device buffers it uses stay with the model for the next call of the same batch size
 * (mamba_model_free releases them). */
MAMBA_API mamba_status_t mamba_forward(mamba_model_t *model, const int32_t *ids, size_t batch,
                                       size_t len, mamba_logits_mode_t mode, float *logits);

/* ---- recurrent state (decoding) ----------------------------------------------------- */

MAMBA_API mamba_status_t mamba_state_create(mamba_model_t *model, size_t batch,
                                            mamba_state_t **out);
MAMBA_API mamba_status_t mamba_state_reset(mamba_state_t *state);
/* Feed ids (batch, len) through the model, in chunks, carrying the state. last_logits,
 * if not NULL, receives the logits of the last position: (batch, vocab). */
MAMBA_API mamba_status_t mamba_prefill(mamba_state_t *state, const int32_t *ids, size_t len,
                                       float *last_logits);
/* One token per sequence: ids (batch); logits (batch, vocab). */
MAMBA_API mamba_status_t mamba_step(mamba_state_t *state, const int32_t *ids, float *logits);
/* Greedy decoding of n_tokens per sequence: feeds ids (batch), then each step's argmax
 * (the first index on ties); out_ids (batch, n_tokens) receives the chosen tokens, row b at
 * out_ids + b * n_tokens. The state advances by n_tokens tokens: the last chosen token has
 * not been fed. The argmax runs on the device and its ids never leave it between steps, so
 * steps run back to back. Logits holding a NaN end it with MAMBA_ERR_MODEL. */
MAMBA_API mamba_status_t mamba_generate_greedy(mamba_state_t *state, const int32_t *ids,
                                               size_t n_tokens, int32_t *out_ids);
/* ---- one sequence of a batch (per-sequence state) ---------------------------------------
 * A state of batch B holds B independent sequences, numbered 0 .. B-1. These calls work on a
 * subset: seqs lists n distinct sequence numbers; the others keep their state untouched.
 * A subset that is a run of consecutive numbers in increasing order runs in place; any other
 * is gathered into a scratch state and scattered back (a server keeps its active sequences
 * consecutive with mamba_state_swap_seqs). */

/* Prefill n sequences, each with its own prompt: ids[i] holds lens[i] >= 1 tokens for sequence
 * seqs[i]. last_logits, if not NULL, receives (n, vocab): row i the logits after the last
 * token of sequence seqs[i]. The same logits, per sequence, as n batch-1 prefills. */
MAMBA_API mamba_status_t mamba_prefill_seqs(mamba_state_t *state, size_t n, const size_t *seqs,
                                            const int32_t *const *ids, const size_t *lens,
                                            float *last_logits);
/* One token for each of n sequences: ids (n), logits (n, vocab) in the order of seqs. */
MAMBA_API mamba_status_t mamba_step_seqs(mamba_state_t *state, size_t n, const size_t *seqs,
                                         const int32_t *ids, float *logits);
/* mamba_step_seqs, started and not waited for: where the backend copies asynchronously
 * (CUDA), the sequences are a run (consecutive numbers, increasing) and logits lies in memory
 * from mamba_alloc_host, it returns once the step and the copy of its logits are enqueued, and
 * the caller's thread is free while the device works (a server sends the last step's tokens
 * meanwhile); elsewhere it is mamba_step_seqs, done at return. ids may be reused at once;
 * logits hold the step's values only after mamba_step_wait. Calls on the same model made in
 * between (moving, copying or resetting sequences, a prefill) run after the step, in order; an
 * error of the step is reported by mamba_step_wait or by the first call that waits for it. */
MAMBA_API mamba_status_t mamba_step_seqs_begin(mamba_state_t *state, size_t n, const size_t *seqs,
                                               const int32_t *ids, float *logits);
/* Wait for the step mamba_step_seqs_begin started on the state's model (MAMBA_OK at once when
 * none is running). */
MAMBA_API mamba_status_t mamba_step_wait(mamba_state_t *state);
/* Wait until the first rows rows of the begun step's logits are on the host; the rest may
 * still be crossing the bus (a caller draws those rows' tokens meanwhile; rows >= the step's
 * count waits for all of them). Several threads may call it at once, each for its own rows;
 * mamba_step_wait still ends the step. */
MAMBA_API mamba_status_t mamba_step_wait_rows(mamba_state_t *state, size_t rows);
/* Sequence seq back to the empty state. */
MAMBA_API mamba_status_t mamba_state_reset_seq(mamba_state_t *state, size_t seq);
/* Sequence dst_seq of dst takes the state of src_seq of src (states of the same model; they
 * may be the same state). */
MAMBA_API mamba_status_t mamba_state_copy_seq(mamba_state_t *dst, size_t dst_seq,
                                              const mamba_state_t *src, size_t src_seq);
/* Sequences a and b of state exchange their states. */
MAMBA_API mamba_status_t mamba_state_swap_seqs(mamba_state_t *state, size_t a, size_t b);
/* One sequence's state as bytes, with its shape, as mamba_state_read does for the whole
 * batch; a sequence's bytes may be written into any sequence of any state of the same model. */
MAMBA_API mamba_status_t mamba_state_seq_size(const mamba_state_t *state, size_t *bytes);
MAMBA_API mamba_status_t mamba_state_read_seq(mamba_state_t *state, size_t seq, void *buf, size_t bytes);
MAMBA_API mamba_status_t mamba_state_write_seq(mamba_state_t *state, size_t seq, const void *buf,
                                               size_t bytes);
/* The batch size the state was created with. */
MAMBA_API size_t mamba_state_batch(const mamba_state_t *state);

/* Feed ids (batch, len) through the model from the state, like mamba_prefill, keeping the
 * logits of every position: logits (batch, len, vocab). What a perplexity over a long text
 * needs: the state carries the context from one call to the next. */
MAMBA_API mamba_status_t mamba_prefill_all(mamba_state_t *state, const int32_t *ids, size_t len,
                                           float *logits);

/* Serialize the state (for saving a conversation). The bytes carry the shape and are
 * checked on write. */
MAMBA_API mamba_status_t mamba_state_size(const mamba_state_t *state, size_t *bytes);
MAMBA_API mamba_status_t mamba_state_read(mamba_state_t *state, void *buf, size_t bytes);
MAMBA_API mamba_status_t mamba_state_write(mamba_state_t *state, const void *buf, size_t bytes);
MAMBA_API void mamba_state_free(mamba_state_t *state);

/* ---- sampling ---------------------------------------------------------------------- */

/* The filters run in this order on a copy of the logits (the order of Hugging Face's
 * generate: logits processors (bias, penalties) before warpers (temperature, top-k, top-p,
 * min-p); llama.cpp's default chain differs only in dividing by the temperature last, which
 * changes what top-p and min-p see):
 *   1. logit bias: logit[bias_ids[i]] += bias_values[i] (a repeated id adds up);
 *   2. penalties, for each token seen c > 0 times among the last penalty_last_n tokens of
 *      the history: logit /= repeat_penalty when logit > 0, *= repeat_penalty otherwise;
 *      then logit -= presence_penalty + frequency_penalty * c;
 *   3. temperature 0 (or top_k 1): the argmax of the result (first index on ties), done;
 *      otherwise probabilities softmax(logit / temperature);
 *   4. top-k: the k most probable tokens (ties broken towards the lower index);
 *   5. top-p: the smallest set of most probable tokens whose mass (renormalized over what
 *      top-k kept) is >= top_p;
 *   6. min-p: of those, the tokens whose probability is >= min_p times the largest;
 *   7. a draw from what is left, renormalized.
 * Tokens at -INFINITY after step 2 are never drawn; when every token is, mamba_sample fails.
 * mamba_sampler_params_init sets every filter off (greedy), penalty_last_n 64 and seed 0. */
typedef struct mamba_sampler_params {
    float temperature;   /* >= 0; 0 (default): greedy (argmax, first index on ties)         */
    int top_k;           /* >= 0; 0 (default): off                                          */
    float top_p;         /* in [0, 1]; 1 (default) or 0: off                                */
    uint64_t seed;       /* of the sampler's random numbers (default 0)                     */
    float min_p;         /* in [0, 1]; 0 (default): off                                     */
    float repeat_penalty;    /* > 0, finite (CTRL / llama.cpp style); 1 (default): off      */
    float presence_penalty;  /* finite, any sign (OpenAI style); 0 (default): off           */
    float frequency_penalty; /* finite, any sign (OpenAI style); 0 (default): off           */
    int penalty_last_n;  /* >= 0: how many of the most recent tokens the penalties look at;
                          * 64 (default); 0: penalties off. The sampler keeps no history
                          * while every penalty is off. */
    const int32_t *bias_ids;  /* n_bias token ids >= 0 (checked against the vocabulary at   */
    const float *bias_values; /* mamba_sample); values finite or -INFINITY (bans the token) */
    size_t n_bias;            /* 0 (default): no bias. Both arrays are copied at create.    */
} mamba_sampler_params_t;

MAMBA_API void mamba_sampler_params_init(mamba_sampler_params_t *p);
/* Errors name the parameter: a negative or non-finite temperature, top_p or min_p outside
 * [0, 1], repeat_penalty <= 0, a negative penalty_last_n, a bias entry with a negative id or
 * a NaN / +INFINITY value. */
MAMBA_API mamba_status_t mamba_sampler_create(const mamba_sampler_params_t *p,
                                              mamba_sampler_t **out);
/* Draw a token from logits (vocab floats, no NaN) through the filters above, and append it
 * to the history. Fails, naming the entry, when a bias id or a history id is >= vocab. */
MAMBA_API mamba_status_t mamba_sample(mamba_sampler_t *s, const float *logits, size_t vocab,
                                      int32_t *token);
/* Append n tokens (ids >= 0; ids may be NULL when n is 0) to the history the penalties look
 * at: feed the prompt here before the first mamba_sample. */
MAMBA_API mamba_status_t mamba_sampler_accept(mamba_sampler_t *s, const int32_t *ids, size_t n);
/* Forget the history (a new conversation). The random numbers continue: they do not restart
 * from the seed. */
MAMBA_API mamba_status_t mamba_sampler_reset(mamba_sampler_t *s);
MAMBA_API void mamba_sampler_free(mamba_sampler_t *s);

/* ---- tokenizer ---------------------------------------------------------------------- */

/* A tokenizer is read-only once loaded: any number of threads may encode and decode with it
 * at once. A streaming detokenizer belongs to one thread at a time; free streams before their
 * tokenizer. */
typedef struct mamba_tokenizer mamba_tokenizer_t;
typedef struct mamba_detok_stream mamba_detok_stream_t;
/* Load a Hugging Face tokenizer.json (byte-level BPE: GPT-NeoX, GPT-2 style). path: the file, or a
 * directory holding tokenizer.json. Errors: mamba_last_error(NULL). The ids are those of
 * tokenizers' encode(text, add_special_tokens=False): no post-processor template is applied. */
MAMBA_API mamba_status_t mamba_tokenizer_load(const char *path, mamba_tokenizer_t **out);
MAMBA_API void mamba_tokenizer_free(mamba_tokenizer_t *tok);
/* One more than the largest id (vocab + added tokens). */
MAMBA_API size_t mamba_tokenizer_vocab_size(const mamba_tokenizer_t *tok);
#define MAMBA_TOKENIZE_SPECIAL_AS_TEXT 1  /* special added tokens in the text are plain text (untrusted input) */
/* Encode len bytes of UTF-8 (NUL allowed). Writes up to cap ids; *n_ids receives the number the text
 * has, which may exceed cap (then call again with a larger buffer). At most len + 1 ids for text
 * already in NFC; NFC can lengthen some text (up to 3x), so 3 * len + 1 bounds every case.
 * Invalid UTF-8: MAMBA_ERR_INVALID_ARGUMENT with a message naming the byte offset. */
MAMBA_API mamba_status_t mamba_tokenize(const mamba_tokenizer_t *tok, const char *text, size_t len, int flags,
                                        int32_t *ids, size_t cap, size_t *n_ids);
/* Decode ids to UTF-8 as HF decode(ids, skip_special_tokens=False) does (invalid byte sequences become
 * U+FFFD as HF's lossy conversion does). Writes up to cap bytes (no NUL added); *len receives the
 * full length. An id out of range (or one the file leaves without a token):
 * MAMBA_ERR_INVALID_ARGUMENT naming its index. */
MAMBA_API mamba_status_t mamba_detokenize(const mamba_tokenizer_t *tok, const int32_t *ids, size_t n,
                                          char *text, size_t cap, size_t *len);
/* The bytes token id stands for (after the byte-level mapping; may be a partial UTF-8 sequence);
 * NULL for an id out of range. */
MAMBA_API const char *mamba_token_bytes(const mamba_tokenizer_t *tok, int32_t id, size_t *len);
/* The id of an added/special token given by its content ("<|endoftext|>"), or of any vocab entry
 * (its string as in the file, where U+0120 stands for a space); MAMBA_ERR_INVALID_ARGUMENT when
 * absent. */
MAMBA_API mamba_status_t mamba_tokenizer_find(const mamba_tokenizer_t *tok, const char *content, int32_t *id);
/* Streaming detokenizer: push ids one at a time; each push yields the bytes that are complete
 * UTF-8 now (an incomplete sequence is held back until the next token completes it). All the
 * pushes and the flush together give what mamba_detokenize gives for the same ids. */
MAMBA_API mamba_status_t mamba_detok_stream_create(const mamba_tokenizer_t *tok, mamba_detok_stream_t **out);
/* *text (valid until the next call on s) and *len receive the newly complete bytes (possibly 0). */
MAMBA_API mamba_status_t mamba_detok_stream_push(mamba_detok_stream_t *s, int32_t id, const char **text, size_t *len);
/* What is held back, as U+FFFD replacements for bytes that never completed; resets the stream. */
MAMBA_API mamba_status_t mamba_detok_stream_flush(mamba_detok_stream_t *s, const char **text, size_t *len);
MAMBA_API void mamba_detok_stream_free(mamba_detok_stream_t *s);

/* The tokenizer mamba_model_load found in the checkpoint directory (tokenizer.json), or NULL:
 * none there, a synthetic model, or mamba_model_load_files. Owned by the model. */
MAMBA_API const mamba_tokenizer_t *mamba_model_tokenizer(const mamba_model_t *m);
/* The end-of-sequence token id: eos_token_id of the checkpoint directory's
 * generation_config.json, else of its config.json (an id or a list of ids: the first; for
 * mamba_model_load_files, of the config given), else the model's tokenizer's <|endoftext|>. MAMBA_ERR_INVALID_ARGUMENT ("no end-of-sequence token
 * known") when none of them gives one. */
MAMBA_API mamba_status_t mamba_model_eos(const mamba_model_t *m, int32_t *id);

/* ---- the selective scan alone -------------------------------------------------------- */

/* Strides are in elements. Element [b, t, d] of u is u[b*u_sb + t*u_st + d*u_sd]; the same
 * for delta, z and out. B and C are grouped: element [b, t, g, n] sits at
 * B[b*B_sb + t*B_st + g*B_sg + n*B_sn] and channel d reads group d / (dim / n_groups).
 * Input-dependent B: n_groups = 1. Constant B (dim, N): n_groups = dim, B_sb = B_st = 0.
 * A: (dim, N) contiguous, already negative. state_in/state_out: (batch, dim, N). */
typedef struct mamba_scan_args {
    size_t batch, dim, len, d_state, n_groups;
    const float *u;          ptrdiff_t u_sb, u_st, u_sd;
    const float *delta;      ptrdiff_t delta_sb, delta_st, delta_sd;
    const float *A;
    const float *B;          ptrdiff_t B_sb, B_st, B_sg, B_sn;
    const float *C;          ptrdiff_t C_sb, C_st, C_sg, C_sn;
    const float *D;          /* (dim) or NULL            */
    const float *z;          ptrdiff_t z_sb, z_st, z_sd; /* or NULL */
    const float *delta_bias; /* (dim) or NULL            */
    int delta_softplus;
    const float *state_in;   /* or NULL: zero state      */
    float *out;              ptrdiff_t out_sb, out_st, out_sd;
    float *state_out;        /* or NULL                  */
} mamba_scan_args_t;

/* Run the selective scan op of ctx's backend on host arrays. */
MAMBA_API mamba_status_t mamba_scan(mamba_context_t *ctx, const mamba_scan_args_t *args);

/* Gradients of sum(out * dout) for mamba_scan_backward, host arrays, each NULL to skip.
 * du, ddelta, dz in u's, delta's, z's layout (args' strides); dB, dC in B's and C's (a zero
 * stride broadcasts: the element gets the sum over everything that read it; only addressed
 * elements are written); dA (dim, N); dD, ddelta_bias (dim); dstate_in (batch, dim, N), the
 * gradient of args->state_in. dD, dz and ddelta_bias need D, z and delta_bias. dstate_out is
 * an input: the cotangent of the final state (batch, dim, N), or NULL for none. */
typedef struct mamba_scan_grads {
    float *du, *ddelta, *dA, *dB, *dC, *dD, *dz, *ddelta_bias, *dstate_in;
    const float *dstate_out;
} mamba_scan_grads_t;

/* The backward of mamba_scan(args) on ctx's backend: dout in out's layout (args->out_sb, _st,
 * _sd; args->out and state_out are not used). The states are recomputed from states kept
 * at chunk boundaries, so the working memory grows with len only by one state per chunk of
 * about sqrt(len) steps (and the partial sums of a time-varying dB/dC). Bitwise the same
 * gradients for the same inputs on the same backend and thread count. Backends without it
 * answer MAMBA_ERR_UNSUPPORTED. */
MAMBA_API mamba_status_t mamba_scan_backward(mamba_context_t *ctx, const mamba_scan_args_t *args, const float *dout,
                                             mamba_scan_grads_t *grads);

/* ---- training ---------------------------------------------------------------------------
 * A trainer owns fp32 master weights, their gradients and AdamW's moments on the context's
 * device (backends without training ops answer MAMBA_ERR_UNSUPPORTED). Ids and labels are
 * (batch, len) row-major int32; labels[b, t] is the target of position t (the next token,
 * already shifted), < 0 ignored. Every sequence starts from the empty state. */
typedef struct mamba_trainer mamba_trainer_t;

typedef enum mamba_lr_schedule {
    MAMBA_LR_CONSTANT = 0,       /* lr at every step                                           */
    MAMBA_LR_WARMUP_COSINE,      /* linear from 0 to lr over warmup_steps, then a cosine down to
                                    lr * min_lr_ratio at total_steps (and there after): the k-th
                                    step (k = 1, 2 ...) takes lr k / warmup_steps up to warmup_steps */
} mamba_lr_schedule_t;

typedef struct mamba_train_options {
    float lr;                    /* 1e-3                                                       */
    float beta1, beta2, eps;     /* 0.9, 0.999, 1e-8 (torch.optim.AdamW's)                      */
    float weight_decay;          /* 0.1; never on A_log, D, biases or norm weights             */
    float max_grad_norm;         /* 1.0; 0: no clipping                                        */
    mamba_lr_schedule_t schedule;
    long warmup_steps, total_steps;
    float min_lr_ratio;          /* 0.1                                                        */
} mamba_train_options_t;

typedef struct mamba_train_stats {
    double loss;                 /* mean cross-entropy over the counted tokens                 */
    uint64_t tokens;             /* tokens counted (labels >= 0)                               */
    uint64_t correct;            /* of them, those whose argmax is the label                   */
    double grad_norm;            /* mamba_trainer_apply: the global norm before clipping        */
    double lr;                   /* mamba_trainer_apply: the learning rate used                */
    long step;                   /* optimizer steps taken so far                               */
} mamba_train_stats_t;

MAMBA_API void mamba_train_options_init(mamba_train_options_t *opts);
/* A new model of cfg (start it from mamba_config_init; d_model, n_layer, vocab_size given),
 * initialized as Mamba's reference does (seeded): embedding N(0, 0.02), linear layers
 * kaiming-uniform, out_proj scaled by 1/sqrt(n_layer), dt bias the inverse softplus of a
 * log-uniform draw in [1e-3, 1e-1], A_log = log(1..N), D = 1. opts NULL: defaults. */
MAMBA_API mamba_status_t mamba_trainer_create(mamba_context_t *ctx, const mamba_config_t *cfg, uint64_t seed,
                                              const mamba_train_options_t *opts, mamba_trainer_t **out);
/* A trainer starting from a loaded model's weights (any stored dtype, widened to fp32). */
MAMBA_API mamba_status_t mamba_trainer_create_from_model(const mamba_model_t *model,
                                                         const mamba_train_options_t *opts,
                                                         mamba_trainer_t **out);
/* Forward and backward on one batch: adds the gradient of that batch's mean loss to the
 * accumulated gradients. stats (may be NULL) gets this batch's loss, tokens and correct. A
 * batch whose labels are all ignored adds nothing (loss 0) but counts as one in apply's mean. */
MAMBA_API mamba_status_t mamba_trainer_accumulate(mamba_trainer_t *tr, const int32_t *ids, const int32_t *labels,
                                                  size_t batch, size_t len, mamba_train_stats_t *stats);
/* The forward alone: this batch's loss, tokens and correct under the current parameters
 * (stats as accumulate gives them); the gradients and the step are untouched. */
MAMBA_API mamba_status_t mamba_trainer_evaluate(mamba_trainer_t *tr, const int32_t *ids, const int32_t *labels,
                                                size_t batch, size_t len, mamba_train_stats_t *stats);
/* One AdamW step on the mean of the accumulated batches' gradients (clipped to
 * max_grad_norm), then the gradients are cleared. stats (may be NULL) gets grad_norm, lr and
 * step (loss, tokens and correct: the batches accumulated since the last apply; loss is the
 * mean of their mean losses, the loss whose gradient the step follows). */
MAMBA_API mamba_status_t mamba_trainer_apply(mamba_trainer_t *tr, mamba_train_stats_t *stats);
/* accumulate + apply. */
MAMBA_API mamba_status_t mamba_trainer_step(mamba_trainer_t *tr, const int32_t *ids, const int32_t *labels,
                                            size_t batch, size_t len, mamba_train_stats_t *stats);
/* Parameters under their Hugging Face names ("backbone.layers.0.mixer.in_proj.weight", ...):
 * the count, the i-th name and element count. */
MAMBA_API size_t mamba_trainer_param_count(const mamba_trainer_t *tr);
MAMBA_API mamba_status_t mamba_trainer_param_info(const mamba_trainer_t *tr, size_t i, const char **name,
                                                  size_t *numel, int *ndim, int64_t *shape);
/* Copy the accumulated gradient (what apply would use before its mean and clipping) or the
 * current value of the parameter named name into out (numel floats). */
MAMBA_API mamba_status_t mamba_trainer_read_grad(mamba_trainer_t *tr, const char *name, float *out, size_t numel);
MAMBA_API mamba_status_t mamba_trainer_read_param(mamba_trainer_t *tr, const char *name, float *out, size_t numel);
MAMBA_API mamba_status_t mamba_trainer_config(const mamba_trainer_t *tr, mamba_config_t *cfg);
/* Optimizer steps taken so far (those of a resumed run included); 0 for NULL. */
MAMBA_API long mamba_trainer_steps_taken(const mamba_trainer_t *tr);
/* Save a Hugging Face directory: config.json and model.safetensors (HF names, fp32, each file
 * written atomically), which mamba_model_load and transformers load, and beside them
 * optimizer.safetensors (AdamW's moments, the step, the options) so that training resumes
 * exactly. Gradients accumulated and not yet applied are not saved. */
MAMBA_API mamba_status_t mamba_trainer_save(mamba_trainer_t *tr, const char *dir);
/* Resume from a directory mamba_trainer_save wrote (or start from any checkpoint directory
 * mamba_model_load reads, with fresh moments when it has no optimizer.safetensors). opts
 * NULL: the saved options. */
MAMBA_API mamba_status_t mamba_trainer_load(mamba_context_t *ctx, const char *dir, const mamba_train_options_t *opts,
                                            mamba_trainer_t **out);
/* Bytes of device memory the trainer holds: parameters, gradients, moments, and the
 * activations and scratch of the largest batch run so far. */
MAMBA_API mamba_status_t mamba_trainer_memory(const mamba_trainer_t *tr, uint64_t *param_bytes,
                                              uint64_t *activation_bytes);
MAMBA_API void mamba_trainer_free(mamba_trainer_t *tr);

/* ---- synthetic tasks (the Mamba paper's Section 4.1 and Appendix E.1) ----------------------
 * Sequences generated from counters: position t of sequence s under seed is a pure function
 * of (seed, s, t), so any piece of any sequence can be made alone (a 2^20-token evaluation
 * never holds a whole sequence) and the data do not depend on how it is cut into batches.
 *
 * Selective copying: len tokens; the first len - n_memorize are the noise token 0 except at
 *   n_memorize distinct random positions, which hold data tokens drawn from 1 .. vocab - 2;
 *   the last n_memorize positions hold the marker vocab - 1, and the k-th of them is labelled
 *   with the k-th data token in order of position (every other label ignored).
 * Induction heads: len tokens drawn from 0 .. vocab - 2, except the trigger vocab - 1 at a
 *   random position p <= len - 3 and again at the last position; the token after the first
 *   trigger is the target, the only label (at the last position). The trigger appears
 *   nowhere else. */
typedef enum mamba_task_kind {
    MAMBA_TASK_SELECTIVE_COPYING = 1,
    MAMBA_TASK_INDUCTION_HEADS,
} mamba_task_kind_t;

typedef struct mamba_task {
    mamba_task_kind_t kind;
    size_t len;          /* tokens a sequence: selective copying 4096, induction heads 256      */
    int vocab;           /* 16 (both)                                                          */
    int n_memorize;      /* selective copying: 16 data tokens (ignored by induction heads)     */
} mamba_task_t;

/* The paper's settings for kind. */
MAMBA_API mamba_status_t mamba_task_init(mamba_task_t *task, mamba_task_kind_t kind);
/* Positions [start, start + count) of sequence seq: ids and labels (each count int32; labels
 * may be NULL), labels -100 where ignored. Errors name the field: vocab < 3 (copying: < 4),
 * len too short for the task, start + count > len. */
MAMBA_API mamba_status_t mamba_task_fill(const mamba_task_t *task, uint64_t seed, uint64_t seq, size_t start,
                                         size_t count, int32_t *ids, int32_t *labels);
/* A kind's name ("selective-copying", "induction-heads") and back (0 when unknown). */
MAMBA_API const char *mamba_task_name(mamba_task_kind_t kind);
MAMBA_API mamba_task_kind_t mamba_task_from_name(const char *name);

/* ---- measurement (what mamba-bench uses) ---------------------------------------------- */

/* Time the work submitted between start and stop, on the device's clock (CUDA/OpenCL events;
 * the host's monotonic clock on the CPU). stop waits for that work. */
MAMBA_API mamba_status_t mamba_timer_start(mamba_context_t *ctx);
MAMBA_API mamba_status_t mamba_timer_stop(mamba_context_t *ctx, double *ms);
/* Bytes the context holds on its device now, and the peak since the last reset. */
MAMBA_API mamba_status_t mamba_memory_usage(mamba_context_t *ctx, uint64_t *current, uint64_t *peak);
MAMBA_API mamba_status_t mamba_memory_reset_peak(mamba_context_t *ctx);

typedef enum mamba_bandwidth_kind {
    MAMBA_BANDWIDTH_COPY = 0,  /* device-to-device copy; ms covers reading and writing bytes */
    MAMBA_BANDWIDTH_READ,      /* a sum over bytes: reading alone                             */
} mamba_bandwidth_kind_t;

/* Each fills ms[0 .. repeat) with the device time of one run, after warmup untimed runs. */
MAMBA_API mamba_status_t mamba_bench_bandwidth(mamba_context_t *ctx, mamba_bandwidth_kind_t kind, size_t bytes,
                                               int warmup, int repeat, double *ms);
/* y (m, n) = x (m, k) W^T, W (n, k) in dtype. */
MAMBA_API mamba_status_t mamba_bench_gemm(mamba_context_t *ctx, size_t m, size_t n, size_t k, mamba_dtype_t dtype,
                                          int warmup, int repeat, double *ms);
/* The scan as the model runs it (time-major, input-dependent B and C, D, z, softplus) on
 * device-resident random inputs of shape (batch, dim, len, d_state). If out is not NULL it
 * receives the output of the last run, (batch, len, dim), for comparing backends: the inputs
 * are a function of the shape alone. */
MAMBA_API mamba_status_t mamba_bench_scan(mamba_context_t *ctx, size_t batch, size_t dim, size_t len,
                                          size_t d_state, int warmup, int repeat, double *ms, float *out);
/* The scan's backward (the op mamba_scan_backward runs) on mamba_bench_scan's inputs and a
 * random dout, all device-resident, every gradient computed (du, ddelta, dz, dA, dB, dC, dD,
 * ddelta_bias): no host transfer in the timed runs, as mamba_scan_backward has. If du is not
 * NULL it receives du of the last run, (batch, len, dim). MAMBA_ERR_UNSUPPORTED on backends
 * without the backward. */
MAMBA_API mamba_status_t mamba_bench_scan_backward(mamba_context_t *ctx, size_t batch, size_t dim, size_t len,
                                                   size_t d_state, int warmup, int repeat, double *ms, float *du);

/* ---- safetensors files ---------------------------------------------------------------- */

#define MAMBA_MAX_DIMS 8

typedef struct mamba_tensor {
    const char *name;
    mamba_dtype_t dtype;
    int ndim;
    int64_t shape[MAMBA_MAX_DIMS];
    const void *data;       /* little-endian, row-major, contiguous                 */
    size_t nbytes;
} mamba_tensor_t;

/* Open and validate a safetensors file (memory-mapped). Errors: mamba_last_error(NULL). */
MAMBA_API mamba_status_t mamba_tensor_file_open(const char *path, mamba_tensor_file_t **out);
MAMBA_API size_t mamba_tensor_file_count(const mamba_tensor_file_t *f);
MAMBA_API mamba_status_t mamba_tensor_file_get(const mamba_tensor_file_t *f, size_t i,
                                               mamba_tensor_t *out);
/* MAMBA_ERR_MODEL with a message naming the tensor when absent. */
MAMBA_API mamba_status_t mamba_tensor_file_find(const mamba_tensor_file_t *f, const char *name,
                                                mamba_tensor_t *out);
/* A string of the header's __metadata__, or NULL. */
MAMBA_API const char *mamba_tensor_file_metadata(const mamba_tensor_file_t *f, const char *key);
MAMBA_API void mamba_tensor_file_close(mamba_tensor_file_t *f);
/* Write tensors (and optional metadata key/value pairs, meta[2*i], meta[2*i+1]) to path,
 * atomically: a temporary file in the same directory, renamed on success. */
MAMBA_API mamba_status_t mamba_tensor_file_write(const char *path, const mamba_tensor_t *tensors,
                                                 size_t n, const char *const *meta,
                                                 size_t n_meta);

/* ---- number formats ------------------------------------------------------------------- */

MAMBA_API float mamba_f16_to_f32(uint16_t h);
MAMBA_API uint16_t mamba_f32_to_f16(float f);
MAMBA_API float mamba_bf16_to_f32(uint16_t h);
MAMBA_API uint16_t mamba_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif /* MAMBA_H */
