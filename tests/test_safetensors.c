/* The safetensors reader and writer: every fixture, round trips, and malformed files. */
#include <check.h>
#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *const fixtures[] = {
    "models/tiny/model.safetensors", "models/tiny/golden.safetensors", "models/small/model.safetensors",
    "models/small/golden.safetensors", "scan/basic.safetensors", "scan/one_step.safetensors",
    "scan/long_chunked.safetensors", "scan/plain.safetensors",
};

START_TEST(opens_every_fixture)
{
    mamba_tensor_file_t *f;
    ck_assert_msg(mamba_tensor_file_open(data_path(0, fixtures[_i]), &f) == MAMBA_OK, "%s", mamba_last_error(NULL));
    ck_assert_uint_gt(mamba_tensor_file_count(f), 4);
    for (size_t i = 0; i < mamba_tensor_file_count(f); i++) {
        mamba_tensor_t t;
        ck_assert_int_eq(mamba_tensor_file_get(f, i, &t), MAMBA_OK);
        size_t n = 1;
        for (int d = 0; d < t.ndim; d++) n *= (size_t)t.shape[d];
        ck_assert_uint_eq(n * (t.dtype == MAMBA_I64 ? 8 : 4), t.nbytes);
    }
    mamba_tensor_file_close(f);
}
END_TEST

START_TEST(fixture_shapes_and_metadata)
{
    mamba_tensor_file_t *f;
    ck_assert_int_eq(mamba_tensor_file_open(data_path(0, "scan/basic.safetensors"), &f), MAMBA_OK);
    mamba_tensor_t t;
    ck_assert_int_eq(mamba_tensor_file_find(f, "B", &t), MAMBA_OK);
    ck_assert_int_eq(t.ndim, 3);
    ck_assert_int_eq(t.shape[0], 2);
    ck_assert_int_eq(t.shape[1], 16);
    ck_assert_int_eq(t.shape[2], 100);
    ck_assert_str_eq(mamba_tensor_file_metadata(f, "delta_softplus"), "true");
    ck_assert_ptr_null(mamba_tensor_file_metadata(f, "nope"));
    ck_assert_int_eq(mamba_tensor_file_find(f, "nope", &t), MAMBA_ERR_MODEL);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "'nope'"));
    mamba_tensor_file_close(f);
}
END_TEST

START_TEST(write_read_round_trip)
{
    char *dir = tmpdir_new();
    char path[4200];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    float a[6] = {1, -2, 3.5f, 4, 5, 6};
    uint16_t h[3] = {mamba_f32_to_f16(1.5f), mamba_f32_to_f16(-2), mamba_f32_to_f16(0)};
    mamba_tensor_t t[2] = {
        {.name = "a", .dtype = MAMBA_F32, .ndim = 2, .shape = {2, 3}, .data = a, .nbytes = sizeof a},
        {.name = "h", .dtype = MAMBA_F16, .ndim = 1, .shape = {3}, .data = h, .nbytes = sizeof h},
    };
    const char *meta[] = {"k", "v"};
    ck_assert_int_eq(mamba_tensor_file_write(path, t, 2, meta, 1), MAMBA_OK);
    mamba_tensor_file_t *f;
    ck_assert_msg(mamba_tensor_file_open(path, &f) == MAMBA_OK, "%s", mamba_last_error(NULL));
    mamba_tensor_t r;
    ck_assert_int_eq(mamba_tensor_file_find(f, "a", &r), MAMBA_OK);
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        float v;
        memcpy(&v, (const char *)r.data + 4 * i, 4);
        ck_assert_float_eq(v, a[i]);
    }
    ck_assert_uint_eq((uintptr_t)r.data % 8, 0);
    ck_assert_int_eq(mamba_tensor_file_find(f, "h", &r), MAMBA_OK);
    ck_assert_int_eq(r.dtype, MAMBA_F16);
    ck_assert_float_eq(mamba_f16_to_f32(((const uint16_t *)r.data)[0]), 1.5f);
    ck_assert_str_eq(mamba_tensor_file_metadata(f, "k"), "v");
    mamba_tensor_file_close(f);
    /* a write that fails leaves no file behind */
    t[0].nbytes = 5;
    char bad[4300];
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    ck_assert_int_eq(mamba_tensor_file_write(bad, t, 1, NULL, 0), MAMBA_ERR_INVALID_ARGUMENT);
    ck_assert_int_ne(access(bad, F_OK), 0);
    tmpdir_remove(dir);
}
END_TEST

START_TEST(half_conversions)
{
    ck_assert_uint_eq(mamba_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(mamba_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(mamba_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(mamba_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(mamba_f32_to_f16(5.9604644775390625e-8f), 0x0001);
    ck_assert_float_eq(mamba_f16_to_f32(0x0001), 5.9604644775390625e-8f);
    ck_assert_float_eq(mamba_f16_to_f32(0x3555), 0.333251953125f);
    /* round to nearest even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    ck_assert_uint_eq(mamba_f32_to_f16(1.0f + 0.00048828125f), 0x3c00);
    ck_assert_uint_eq(mamba_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_float_eq(mamba_bf16_to_f32(0x3f80), 1.0f);
    ck_assert_float_eq(mamba_bf16_to_f32(mamba_f32_to_bf16(3.14159f)), 3.140625f);
    for (int i = -1000; i <= 1000; i++) {
        float v = (float)i / 7.0f;
        float r = mamba_f16_to_f32(mamba_f32_to_f16(v));
        ck_assert_float_le(fabsf(r - v), fabsf(v) * 0.000489f + 1e-7f);
    }
}
END_TEST

/* ---- malformed files: each has its status and a message naming the problem ---- */

typedef struct bad_case {
    const char *what;
    const char *json;     /* NULL: special */
    size_t data_len;
    mamba_status_t status;
    const char *needle;   /* expected in the message */
} bad_case;

static const bad_case bad_cases[] = {
    {"malformed JSON", "{\"a\": {\"dtype\": \"F32\", ", 0, MAMBA_ERR_FORMAT, "malformed JSON"},
    {"not an object", "[1, 2]", 0, MAMBA_ERR_FORMAT, "not an object"},
    {"unknown dtype", "{\"a\": {\"dtype\": \"F8_E4M3\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2,
     MAMBA_ERR_FORMAT, "unknown or unsupported dtype 'F8_E4M3'"},
    {"data past the end", "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8,
     MAMBA_ERR_FORMAT, "past the data section"},
    {"size disagrees with shape", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]}}", 16,
     MAMBA_ERR_FORMAT, "need 12"},
    {"overlapping tensors",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, MAMBA_ERR_FORMAT, "overlap"},
    {"duplicate name",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8, MAMBA_ERR_FORMAT, "twice"},
    {"shape product overflow",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 4]}}", 4,
     MAMBA_ERR_FORMAT, "overflow"},
    {"negative dimension", "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
     MAMBA_ERR_FORMAT, "shape[0]"},
    {"offset beyond 2^53", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 2.78e45]}}", 4,
     MAMBA_ERR_FORMAT, "data_offsets"},
    {"reversed offsets", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8,
     MAMBA_ERR_FORMAT, "data_offsets"},
    {"missing fields", "{\"a\": {\"dtype\": \"F32\"}}", 0, MAMBA_ERR_FORMAT, "'a'"},
    {"metadata not strings", "{\"__metadata__\": {\"k\": 1}}", 0, MAMBA_ERR_FORMAT, "__metadata__"},
    {"gap between tensors",
     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
     " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}", 12, MAMBA_ERR_FORMAT,
     "4 bytes between tensors 'a' (ends at 4) and 'b' (starts at 8)"},
    {"first tensor not at 0", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
     MAMBA_ERR_FORMAT, "starts at byte 4 of the data"},
    {"bytes after the last tensor", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 12,
     MAMBA_ERR_FORMAT, "8 bytes after the last tensor"},
    {"data and no tensor", "{}", 4, MAMBA_ERR_FORMAT, "4 bytes of data and no tensor"},
    {"metadata twice", "{\"__metadata__\": {\"a\": \"1\"}, \"__metadata__\": {\"b\": \"2\"}}", 0, MAMBA_ERR_FORMAT,
     "__metadata__ appears twice"},
    /* 65 levels: one past the limit; brackets inside a string do not count */
    {"nested too deep",
     "{\"a\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0,
     MAMBA_ERR_FORMAT, "nested more than 64 levels"},
    {"brackets in a string are not nesting",
     "{\"__metadata__\": {\"k\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"\"}, \"a\": 1}", 0,
     MAMBA_ERR_FORMAT, "'a'"},
};

START_TEST(rejects_malformed)
{
    const bad_case *c = &bad_cases[_i];
    char *dir = tmpdir_new();
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    char zeros[64] = {0};
    write_raw_safetensors(path, c->json, zeros, c->data_len);
    mamba_tensor_file_t *f = (mamba_tensor_file_t *)1;
    mamba_status_t st = mamba_tensor_file_open(path, &f);
    ck_assert_msg(st == c->status, "%s: status %d (%s)", c->what, st, mamba_last_error(NULL));
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(mamba_last_error(NULL), c->needle) != NULL, "%s: message '%s' lacks '%s'", c->what,
                  mamba_last_error(NULL), c->needle);
    ck_assert_msg(strstr(mamba_last_error(NULL), path) != NULL, "message names the file");
    tmpdir_remove(dir);
}
END_TEST

START_TEST(rejects_bad_files)
{
    char *dir = tmpdir_new();
    char path[4200];
    mamba_tensor_file_t *f;
    /* missing */
    snprintf(path, sizeof path, "%s/none.safetensors", dir);
    ck_assert_int_eq(mamba_tensor_file_open(path, &f), MAMBA_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "cannot open"));
    /* a directory */
    ck_assert_int_eq(mamba_tensor_file_open(dir, &f), MAMBA_ERR_IO);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "directory"));
    /* shorter than the length prefix */
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    write_file(path, "abc", 3);
    ck_assert_int_eq(mamba_tensor_file_open(path, &f), MAMBA_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "too short"));
    /* header length past the end of the file */
    unsigned char hdr[16] = {200, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_file(path, hdr, 10);
    ck_assert_int_eq(mamba_tensor_file_open(path, &f), MAMBA_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "past the end"));
    /* header length over the 100 MB limit */
    unsigned char huge[10] = {0, 0, 0, 0, 1, 0, 0, 0, '{', '}'};
    write_file(path, huge, 10);
    ck_assert_int_eq(mamba_tensor_file_open(path, &f), MAMBA_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "exceeds the limit"));
    /* a real checkpoint cut in half */
    FILE *fp = fopen(data_path(0, "models/tiny/model.safetensors"), "rb");
    static char buf[200000];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    write_file(path, buf, n / 2);
    ck_assert_int_eq(mamba_tensor_file_open(path, &f), MAMBA_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(mamba_last_error(NULL), "truncated"));
    tmpdir_remove(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_add_loop_test(tc, opens_every_fixture, 0, (int)(sizeof fixtures / sizeof fixtures[0]));
    tcase_add_test(tc, fixture_shapes_and_metadata);
    tcase_add_test(tc, write_read_round_trip);
    tcase_add_test(tc, half_conversions);
    tcase_add_loop_test(tc, rejects_malformed, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, rejects_bad_files);
    suite_add_tcase(s, tc);
    return run_suite(s, 1);
}
