/* Fault injection (a build with -DMAMBA_FAULT_INJECTION=ON): for every k, the k-th host
 * allocation, device allocation or file open/read/map/write that a model load and a run reach
 * fails. Each must end in an error status with a message, leave no output file behind, free
 * what it made (LeakSanitizer in the ASan CI build checks), and leave the context usable: the
 * same work, run again on it, gives the same results as a run with no fault. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* core/fault.c, exported only in this build */
void mamba_fault_inject(unsigned long k);
unsigned long mamba_fault_points(void);

#define N_GEN 4

typedef struct outcome {
    double digest;          /* sum of the logits and ids it produced */
    float scan_out[8];      /* the scan's output: batch 1, dim 2, len 4 */
    char message[1024];
} outcome;

static char *tmp;

static mamba_status_t fail_with(mamba_status_t st, const mamba_context_t *ctx, outcome *o)
{
    snprintf(o->message, sizeof o->message, "%s", mamba_last_error(ctx));
    return st;
}

/* Load the tiny model and use every path that allocates or touches a file. */
static mamba_status_t work(mamba_context_t *ctx, outcome *o)
{
    memset(o, 0, sizeof *o);
    mamba_model_t *m = NULL;
    mamba_state_t *s = NULL;
    mamba_sampler_t *sp = NULL;
    mamba_tensor_file_t *f = NULL;
    float *logits = NULL;
    void *saved = NULL;
    mamba_status_t st = mamba_model_load(ctx, data_path(0, "models/tiny"), &m);
    if (st != MAMBA_OK) return fail_with(st, ctx, o);
    mamba_model_info_t info;
    mamba_model_info(m, &info);
    const size_t V = (size_t)info.config.vocab_size;
    const int32_t ids[6] = {1, 5, 9, 2, 7, 3};
    logits = malloc((size_t)6 * V * sizeof *logits);
    if ((st = mamba_forward(m, ids, 2, 3, MAMBA_LOGITS_ALL, logits)) != MAMBA_OK) goto out;
    for (size_t i = 0; i < 6 * V; i++) o->digest += logits[i];
    if ((st = mamba_state_create(m, 1, &s)) != MAMBA_OK) goto out;
    if ((st = mamba_prefill(s, ids, 6, logits)) != MAMBA_OK) goto out;
    int32_t tok = 4, gen[N_GEN];
    if ((st = mamba_step(s, &tok, logits)) != MAMBA_OK) goto out;
    if ((st = mamba_generate_greedy(s, &tok, N_GEN, gen)) != MAMBA_OK) goto out;
    for (int i = 0; i < N_GEN; i++) o->digest += gen[i];
    size_t bytes;
    if ((st = mamba_state_size(s, &bytes)) != MAMBA_OK) goto out;
    saved = malloc(bytes);
    if ((st = mamba_state_read(s, saved, bytes)) != MAMBA_OK) goto out;
    if ((st = mamba_state_write(s, saved, bytes)) != MAMBA_OK) goto out;
    if ((st = mamba_step(s, &tok, logits)) != MAMBA_OK) goto out;
    mamba_sampler_params_t p;
    mamba_sampler_params_init(&p);
    p.temperature = 0.8f;
    p.top_k = 5;
    p.seed = 7;
    p.repeat_penalty = 1.3f; /* the history's allocations too */
    const int32_t bias_id = 3;
    const float bias_value = -1.0f;
    p.bias_ids = &bias_id;
    p.bias_values = &bias_value;
    p.n_bias = 1;
    int32_t sampled;
    if ((st = mamba_sampler_create(&p, &sp)) != MAMBA_OK || (st = mamba_sampler_accept(sp, ids, 6)) != MAMBA_OK ||
        (st = mamba_sample(sp, logits, V, &sampled)) != MAMBA_OK) {
        snprintf(o->message, sizeof o->message, "%s", mamba_last_error(NULL));
        goto out_quiet;
    }
    o->digest += sampled;
    /* the scan alone, through its own device buffers */
    float u[32], dl[32], A[16], B[32], C[32], y[8] = {0};
    for (int i = 0; i < 32; i++) {
        u[i] = (float)(i % 7) - 3.0f;
        dl[i] = 0.1f * (float)(i % 5);
        B[i] = 0.5f - 0.03f * (float)i;
        C[i] = 0.02f * (float)i - 0.3f;
    }
    for (int i = 0; i < 16; i++) A[i] = -1.0f - 0.1f * (float)i;
    mamba_scan_args_t a = {.batch = 1, .dim = 2, .len = 4, .d_state = 8, .n_groups = 1,
                           .u = u, .u_sb = 8, .u_st = 2, .u_sd = 1,
                           .delta = dl, .delta_sb = 8, .delta_st = 2, .delta_sd = 1,
                           .A = A, .B = B, .B_sb = 32, .B_st = 8, .B_sg = 0, .B_sn = 1,
                           .C = C, .C_sb = 32, .C_st = 8, .C_sg = 0, .C_sn = 1,
                           .delta_softplus = 1, .out = y, .out_sb = 8, .out_st = 2, .out_sd = 1};
    if ((st = mamba_scan(ctx, &a)) != MAMBA_OK) goto out;
    memcpy(o->scan_out, y, sizeof y);
    /* and its backward (a staging buffer and the backend's working memory) */
    float du[8], dA[16];
    mamba_scan_grads_t g = {.du = du, .dA = dA};
    if ((st = mamba_scan_backward(ctx, &a, y, &g)) != MAMBA_OK) goto out;
    for (int i = 0; i < 8; i++) o->digest += du[i];
    /* a file written atomically, and read back */
    char path[4200];
    snprintf(path, sizeof path, "%s/logits.safetensors", tmp);
    mamba_tensor_t t = {.name = "logits", .dtype = MAMBA_F32, .ndim = 1, .shape = {(int64_t)V},
                        .data = logits, .nbytes = V * sizeof *logits};
    st = mamba_tensor_file_write(path, &t, 1, NULL, 0);
    if (st != MAMBA_OK) {
        snprintf(o->message, sizeof o->message, "%s", mamba_last_error(NULL));
        ck_assert_msg(access(path, F_OK) != 0, "a failed write left %s behind", path);
        goto out_quiet;
    }
    st = mamba_tensor_file_open(path, &f);
    unlink(path);
    if (st != MAMBA_OK) {
        snprintf(o->message, sizeof o->message, "%s", mamba_last_error(NULL));
        goto out_quiet;
    }
    mamba_tensor_t r;
    ck_assert_int_eq(mamba_tensor_file_find(f, "logits", &r), MAMBA_OK);
    ck_assert_int_eq(memcmp(r.data, logits, V * sizeof *logits), 0);
out:
    if (st != MAMBA_OK) fail_with(st, ctx, o);
out_quiet:
    mamba_tensor_file_close(f);
    mamba_sampler_free(sp);
    free(saved);
    mamba_state_free(s);
    free(logits);
    mamba_model_free(m);
    return st;
}

static void quiet(mamba_log_level_t level, const char *msg, void *user)
{
    (void)user; (void)level; (void)msg;
}

static mamba_context_t *context(mamba_status_t *st)
{
    mamba_context_options_t opts;
    mamba_context_options_init(&opts);
    opts.backend = "cpu";
    opts.n_threads = 1;
    opts.prefill_chunk = 4;   /* several chunks: the chunked paths too */
    opts.log = quiet;         /* the failures are expected; each is printed once below */
    mamba_context_t *ctx = NULL;
    *st = mamba_context_create(&opts, &ctx);
    return ctx;
}

START_TEST(every_failure_point_of_a_load_and_run)
{
    tmp = tmpdir_new();
    mamba_status_t st;
    mamba_context_t *ctx = context(&st);
    ck_assert_int_eq(st, MAMBA_OK);
    outcome ref, got;
    mamba_fault_inject(0);
    ck_assert_msg(work(ctx, &ref) == MAMBA_OK, "%s", ref.message);
    const unsigned long n = mamba_fault_points();
    ck_assert_uint_gt(n, 50);
    unsigned long failed = 0;
    for (unsigned long k = 1; k <= n; k++) {
        mamba_fault_inject(k);
        st = work(ctx, &got);
        mamba_fault_inject(0);
        if (st != MAMBA_OK) {
            failed++;
            ck_assert_msg(got.message[0] != 0, "point %lu: status %s without a message", k, mamba_status_string(st));
            printf("point %lu: %s: %s\n", k, mamba_status_string(st), got.message);
        } else {
            /* a failure the library absorbs (an optional buffer) must not change results */
            ck_assert_msg(got.digest == ref.digest, "point %lu: no error but different results", k);
        }
        outcome again;
        ck_assert_msg(work(ctx, &again) == MAMBA_OK, "point %lu: the context is not usable after the failure: %s", k,
                      again.message);
        ck_assert_msg(again.digest == ref.digest, "point %lu: results differ after the failure", k);
        for (int i = 0; i < 8; i++)
            ck_assert_msg(again.scan_out[i] == ref.scan_out[i], "point %lu: scan output %d differs after the failure", k, i);
    }
    printf("load + forward + decode + scan + write: %lu fault points tried, %lu ended in an error\n", n, failed);
    ck_assert_uint_gt(failed, n / 2);
    mamba_context_free(ctx);
    tmpdir_remove(tmp);
}
END_TEST

START_TEST(every_failure_point_of_a_context)
{
    mamba_status_t st;
    mamba_fault_inject(0);
    mamba_context_t *ctx = context(&st);
    ck_assert_int_eq(st, MAMBA_OK);
    mamba_context_free(ctx);
    const unsigned long n = mamba_fault_points();
    for (unsigned long k = 1; k <= n; k++) {
        mamba_fault_inject(k);
        ctx = context(&st);
        mamba_fault_inject(0);
        if (st != MAMBA_OK) {
            ck_assert_ptr_null(ctx);
            ck_assert_msg(mamba_last_error(NULL)[0] != 0, "point %lu: no message", k);
        }
        mamba_context_free(ctx);
    }
    printf("context creation: %lu fault points tried\n", n);
}
END_TEST

/* pytorch_model.bin: the ZIP reader, the pickle interpreter and the tensor copies of a strided,
 * misaligned (ZIP64) and sharded checkpoint, each failure point of their loads. */
static mamba_status_t torch_work(mamba_context_t *ctx, double *digest, char *message)
{
    static const char *const dirs[] = {"models/tiny_bin_strided", "models/tiny_bin_zip64", "models/tiny_bin_sharded"};
    *digest = 0;
    for (int i = 0; i < 3; i++) {
        mamba_model_t *m = NULL;
        mamba_status_t st = mamba_model_load(ctx, data_path(0, dirs[i]), &m);
        if (st == MAMBA_OK) {
            const int32_t ids[3] = {1, 5, 9};
            float logits[64];
            st = mamba_forward(m, ids, 1, 3, MAMBA_LOGITS_LAST, logits);
            for (int k = 0; k < 64 && st == MAMBA_OK; k++) *digest += logits[k];
            mamba_model_free(m);
        }
        if (st != MAMBA_OK) {
            snprintf(message, 1024, "%s", mamba_last_error(ctx));
            return st;
        }
    }
    return MAMBA_OK;
}

START_TEST(every_failure_point_of_a_torch_load)
{
    mamba_status_t st;
    mamba_context_t *ctx = context(&st);
    ck_assert_int_eq(st, MAMBA_OK);
    char message[1024] = "";
    double ref, got;
    mamba_fault_inject(0);
    ck_assert_msg(torch_work(ctx, &ref, message) == MAMBA_OK, "%s", message);
    const unsigned long n = mamba_fault_points();
    unsigned long failed = 0;
    for (unsigned long k = 1; k <= n; k++) {
        message[0] = 0;
        mamba_fault_inject(k);
        st = torch_work(ctx, &got, message);
        mamba_fault_inject(0);
        if (st != MAMBA_OK) {
            failed++;
            ck_assert_msg(message[0] != 0, "point %lu: status %s without a message", k, mamba_status_string(st));
        } else {
            ck_assert_msg(got == ref, "point %lu: no error but different results", k);
        }
        ck_assert_msg(torch_work(ctx, &got, message) == MAMBA_OK && got == ref, "point %lu: not usable after: %s", k,
                      message);
    }
    printf("pytorch_model.bin loads: %lu fault points tried, %lu ended in an error\n", n, failed);
    ck_assert_uint_gt(failed, n / 2);
    mamba_context_free(ctx);
}
END_TEST

/* The GPT-2-style tokenizer loaded, encoding and decoding: a digest of what they give. */
static mamba_status_t tokenizer_work(double *digest, char *message, size_t len)
{
    static const char *const texts[] = {"hello world <|endoftext|>", "a [X] b caf\xc3\xa9 \xe4\xb8\xad", "aaaaaaaa it's 123"};
    *digest = 0;
    mamba_tokenizer_t *tok = NULL;
    mamba_detok_stream_t *s = NULL;
    mamba_status_t st = mamba_tokenizer_load(data_path(0, "tokenizer/gpt2_tiny.json"), &tok);
    for (size_t t = 0; st == MAMBA_OK && t < sizeof texts / sizeof texts[0]; t++) {
        int32_t ids[64];
        size_t n, bytes;
        char out[256];
        const char *piece;
        st = mamba_tokenize(tok, texts[t], strlen(texts[t]), 0, ids, 64, &n);
        if (st == MAMBA_OK) st = mamba_detokenize(tok, ids, n, out, sizeof out, &bytes);
        if (st == MAMBA_OK) st = mamba_detok_stream_create(tok, &s);
        for (size_t i = 0; st == MAMBA_OK && i < n; i++) st = mamba_detok_stream_push(s, ids[i], &piece, &bytes);
        if (st == MAMBA_OK) st = mamba_detok_stream_flush(s, &piece, &bytes);
        for (size_t i = 0; st == MAMBA_OK && i < n; i++) *digest += (double)ids[i] * (double)(i + 1);
        mamba_detok_stream_free(s);
        s = NULL;
    }
    if (st != MAMBA_OK) snprintf(message, len, "%s", mamba_last_error(NULL));
    mamba_tokenizer_free(tok);
    return st;
}

START_TEST(every_failure_point_of_a_tokenizer)
{
    double ref, got;
    char message[1024];
    mamba_fault_inject(0);
    ck_assert_msg(tokenizer_work(&ref, message, sizeof message) == MAMBA_OK, "%s", message);
    const unsigned long n = mamba_fault_points();
    unsigned long failed = 0;
    for (unsigned long k = 1; k <= n; k++) {
        message[0] = 0;
        mamba_fault_inject(k);
        const mamba_status_t st = tokenizer_work(&got, message, sizeof message);
        mamba_fault_inject(0);
        if (st != MAMBA_OK) {
            failed++;
            ck_assert_msg(message[0] != 0, "point %lu: status %s without a message", k, mamba_status_string(st));
        } else {
            ck_assert_msg(got == ref, "point %lu: no error but different ids", k);
        }
    }
    printf("tokenizer load + encode + decode: %lu fault points tried, %lu ended in an error\n", n, failed);
    ck_assert_uint_gt(failed, n / 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, every_failure_point_of_a_context);
    tcase_add_test(tc, every_failure_point_of_a_load_and_run);
    tcase_add_test(tc, every_failure_point_of_a_torch_load);
    tcase_add_test(tc, every_failure_point_of_a_tokenizer);
    suite_add_tcase(s, tc);
    /* one process: the fault counter and LeakSanitizer see every iteration */
    return run_suite(s, 0);
}
