/* The safetensors reader and writer: round trips (single file and sharded) whose bytes are
 * checked against hand-laid-out expectations, and one malformed input per defect class,
 * each of which must be rejected with its own message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "engine/safetensors_header.h"
#include "engine/safetensors_write.h"
#include "tests/test_util.h"
#include "tests/tmpdir.h"

/* A file image: 8-byte little-endian length, the header text as given, data_len bytes. */
static uint8_t *image(const char *header, size_t data_len, size_t *size)
{
    size_t hlen = strlen(header);
    *size = 8 + hlen + data_len;
    uint8_t *b = calloc(1, *size);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hlen + i] = (uint8_t)i;
    return b;
}

/* Parses the image and expects failure with a message containing want. */
static void expect_header_error(const char *header, size_t data_len, const char *want)
{
    size_t size;
    uint8_t *b = image(header, data_len, &size);
    struct st_header h = {.n_tensors = -7};
    struct fp8_err err = {{0}};
    int rc = st_header_parse(b, size, &h, &err);
    if (rc != -EINVAL || !strstr(err.msg, want))
        fail_msg("header %s: rc %d, message \"%s\", expected one containing \"%s\"", header, rc,
                 err.msg, want);
    assert_int_equal(h.n_tensors, -7); /* untouched on failure */
    free(b);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    write_file(path, text);
}

/* A header of 142 + 2 padding spaces = 144 bytes, so data starts at file offset 152. */
static void test_parse_valid(void **state)
{
    (void)state;
    const char *hdr = "{\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"__metadata__\":{\"format\":\"pt\"}}  ";
    size_t size;
    uint8_t *b = image(hdr, 20, &size);
    struct st_header h;
    struct fp8_err err = {{0}};
    assert_int_equal(st_header_parse(b, size, &h, &err), 0);
    assert_int_equal(h.n_tensors, 2);
    assert_int_equal(strlen(hdr), 144);
    assert_int_equal(h.data_offset, 152);
    assert_string_equal(h.tensors[0].name, "b");
    assert_int_equal(h.tensors[0].dtype, ST_DTYPE_BF16);
    assert_int_equal(h.tensors[0].n_dims, 2);
    assert_int_equal(h.tensors[0].shape[0], 2);
    assert_int_equal(h.tensors[0].shape[1], 3);
    assert_int_equal(h.tensors[0].n_bytes, 12);
    assert_ptr_equal(h.tensors[0].data, b + 8 + strlen(hdr) + 8);
    assert_string_equal(h.tensors[1].name, "a");
    assert_int_equal(h.tensors[1].n_bytes, 8);
    assert_ptr_equal(h.tensors[1].data, b + 8 + strlen(hdr));
    st_header_free(&h);
    st_header_free(NULL);
    free(b);
}

static void test_header_too_short(void **state)
{
    (void)state;
    uint8_t b[5] = {0};
    struct st_header h;
    struct fp8_err err = {{0}};
    assert_int_equal(st_header_parse(b, sizeof(b), &h, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "too short for the 8-byte header length"));
}

static void test_header_length_past_eof(void **state)
{
    (void)state;
    size_t size;
    uint8_t *b = image("{}", 0, &size);
    b[0] = 200; /* claims 200 bytes of header in a 10-byte file */
    struct st_header h;
    struct fp8_err err = {{0}};
    assert_int_equal(st_header_parse(b, size, &h, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "header length 200 runs past the end of the file (10 bytes)"));
    free(b);
}

static void test_header_length_cap(void **state)
{
    (void)state;
    size_t size;
    uint8_t *b = image("{}", 0, &size);
    b[4] = 1; /* 2^32 + 2 */
    struct st_header h;
    struct fp8_err err = {{0}};
    assert_int_equal(st_header_parse(b, size, &h, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "header length 4294967298 exceeds the 104857600-byte limit"));
    free(b);
}

static void test_truncated_data(void **state)
{
    (void)state;
    /* The tensor needs bytes [0, 16) but only 10 data bytes remain. */
    expect_header_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 10,
                        "tensor \"w\": data_offsets [0, 16] run past the end of the data area "
                        "(10 bytes)");
}

static void test_overlap(void **state)
{
    (void)state;
    expect_header_error("{\"x\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                        "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
                        16, "tensors \"x\" [0, 8) and \"y\" [6, 10) overlap");
    /* Hidden behind an empty tensor and a short one that both start inside the big one. */
    expect_header_error("{\"big\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]},"
                        "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
                        "\"s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]},"
                        "\"t\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}",
                        16, "overlap");
}

static void test_unknown_dtype(void **state)
{
    (void)state;
    expect_header_error("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                        "tensor \"w\": unsupported dtype \"F64\" (supported: F32 F16 BF16 "
                        "F8_E4M3 U8 I8 I32)");
}

static void test_shape_size_mismatch(void **state)
{
    (void)state;
    expect_header_error("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 16,
                        "tensor \"w\": shape [2, 3] x BF16 (2 bytes each) is 12 bytes, but "
                        "data_offsets [0, 8] span 8");
    expect_header_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],"
                        "\"data_offsets\":[0,8]}}", 16,
                        "tensor \"w\": shape [4611686018427387904, 8] x F32 overflows 64 bits");
}

static void test_non_utf8_name(void **state)
{
    (void)state;
    expect_header_error("{\"w\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                        "invalid UTF-8 byte 0xff at header byte 3, in the string (tensor name or "
                        "value) starting at header byte 1");
    /* An overlong encoding of '/' and a UTF-16 surrogate are not UTF-8 either. */
    expect_header_error("{\"a\xc0\xaf\":{}}", 0, "invalid UTF-8 byte 0xc0 at header byte 3");
    expect_header_error("{\"a\xed\xa0\x80\":{}}", 0, "invalid UTF-8 byte 0xed at header byte 3");
    expect_header_error("{\"a\x01\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                        "malformed JSON");
    /* Escapes cannot smuggle in a lone surrogate, a NUL or a control character either. */
    expect_header_error("{\"a\\ud800\":{}}", 0, "malformed JSON");
    expect_header_error("{\"a\\u0000\":{}}", 0, "malformed JSON");
    expect_header_error("{\"a\\u0007\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                        "contains control character 0x07");
}

static void test_nesting_bomb(void **state)
{
    (void)state;
    char *bomb = malloc(200002);
    assert_non_null(bomb);
    bomb[0] = '{';
    memcpy(bomb + 1, "\"a\":", 4);
    memset(bomb + 5, '[', 100000);
    bomb[100005] = '\0';
    expect_header_error(bomb, 0, "JSON nested deeper than 8 levels at header byte 12");
    free(bomb);
    /* Brackets inside strings are not nesting. */
    expect_header_error("{\"[[[[[[[[[[[[\":{\"dtype\":\"X\"}}", 0, "unsupported dtype \"X\"");
}

static void test_duplicate_names(void **state)
{
    (void)state;
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                        2, "duplicate key (tensor name)");
}

static void test_malformed_entries(void **state)
{
    (void)state;
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", 1,
                        "malformed JSON at header byte");
    expect_header_error("[1,2]", 0, "header does not start with a JSON object");
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1,
                        "\"shape\" is not an array of non-negative integers");
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}",
                        1, "5 dimensions (at most 4 supported)");
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1,
                        "data_offsets [1, 0] end before they begin");
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
                        "\"data_offsets\" is not [begin, end]");
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "\"data_offsets\" missing");
    expect_header_error("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}",
                        1, "tensor \"w\": unknown key \"x\"");
    expect_header_error("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                        "empty tensor name");
    expect_header_error("{\"__metadata__\":{\"format\":1}}", 0,
                        "\"__metadata__\" key \"format\" is not a string");
    /* An F32 tensor at data offset 1 sits at file offset 8 + 56 + 1 = 65. */
    expect_header_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1,5]}}  ", 8,
                        "data at file offset 65 is not aligned to its F32 element size (4)");
}

/* Round trip through the writer: three dtypes, caller data, laid out by element size. */
static void test_write_read_single(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    assert_non_null(dir);
    const float f[3] = {1.0f, -2.0f, 0.5f};
    const uint16_t h[4] = {0x3f80, 0xc000, 0x3f00, 0x0000};
    const uint8_t u[5] = {1, 2, 3, 4, 5};
    const struct st_write_tensor ts[3] = {
        {"model.u8", ST_DTYPE_U8, 1, {5}, u},
        {"model.bf16", ST_DTYPE_BF16, 2, {2, 2}, h},
        {"model.f32", ST_DTYPE_F32, 1, {3}, f},
    };
    struct fp8_err err = {{0}};
    assert_int_equal(st_model_write(dir, ts, 3, 0, NULL, NULL, &err), 1);

    /* 8 + padded header, then f32 (12 bytes), bf16 (8), u8 (5): 25 data bytes. */
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t len[8];
    assert_int_equal(fread(len, 1, 8, fp), 8);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | len[i];
    assert_int_equal(hlen % 8, 0);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    assert_int_equal((uint64_t)ftell(fp), 8 + hlen + 25);
    fclose(fp);

    struct st_model *m = NULL;
    assert_int_equal(st_model_open(dir, &m, &err), 0);
    assert_int_equal(st_model_n_tensors(m), 3);
    /* Listed by name. */
    assert_string_equal(st_model_tensor(m, 0)->name, "model.bf16");
    assert_string_equal(st_model_tensor(m, 1)->name, "model.f32");
    assert_string_equal(st_model_tensor(m, 2)->name, "model.u8");
    assert_null(st_model_tensor(m, 3));
    const struct st_tensor *t = st_model_find(m, "model.f32");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_DTYPE_F32);
    assert_int_equal(t->n_bytes, 12);
    assert_memory_equal(t->data, f, 12);
    assert_int_equal((uintptr_t)t->data % 4, 0);
    t = st_model_find(m, "model.bf16");
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 2);
    assert_memory_equal(t->data, h, 8);
    assert_memory_equal(st_model_find(m, "model.u8")->data, u, 5);
    assert_null(st_model_find(m, "model.nope"));
    st_model_free(m);
    st_model_free(NULL);
    tmpdir_remove(dir);
}

/* Fill callback: byte k of tensor i is (i * 31 + k) mod 251, whatever the chunking. */
static int fill_pattern(void *ctx, int32_t i, uint64_t offset, void *buf, uint64_t n,
                        struct fp8_err *err)
{
    (void)ctx, (void)err;
    for (uint64_t k = 0; k < n; k++)
        ((uint8_t *)buf)[k] = (uint8_t)(((uint64_t)i * 31 + offset + k) % 251);
    return 0;
}

static void test_write_read_sharded(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    const struct st_write_tensor ts[4] = {
        {"d", ST_DTYPE_U8, 1, {300}, NULL}, {"a", ST_DTYPE_BF16, 2, {10, 10}, NULL},
        {"c", ST_DTYPE_F32, 1, {100}, NULL}, {"b", ST_DTYPE_U8, 1, {(3 << 20) + 5}, NULL},
    };
    struct fp8_err err = {{0}};
    /* By name: a (200) | b (3 MiB + 5, alone) | c (400) + d (300). */
    assert_int_equal(st_model_write(dir, ts, 4, 1000, fill_pattern, NULL, &err), 3);
    char path[600];
    snprintf(path, sizeof(path), "%s/model-00003-of-00003.safetensors", dir);
    assert_int_equal(access(path, F_OK), 0);

    struct st_model *m = NULL;
    assert_int_equal(st_model_open(dir, &m, &err), 0);
    assert_int_equal(st_model_n_tensors(m), 4);
    for (int i = 0; i < 4; i++) {
        const struct st_tensor *t = st_model_find(m, ts[i].name);
        assert_non_null(t);
        assert_int_equal(t->n_bytes, st_write_tensor_bytes(&ts[i]));
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->n_bytes; k++)
            if (p[k] != (uint8_t)(((uint64_t)i * 31 + k) % 251))
                fail_msg("tensor %s byte %llu", ts[i].name, (unsigned long long)k);
    }
    st_model_free(m);
    tmpdir_remove(dir);
}

static void expect_open_error(const char *dir, int code, const char *want)
{
    struct st_model *m = (struct st_model *)(uintptr_t)1;
    struct fp8_err err = {{0}};
    int rc = st_model_open(dir, &m, &err);
    if (rc != code || !strstr(err.msg, want))
        fail_msg("rc %d, message \"%s\", expected %d and one containing \"%s\"", rc, err.msg, code,
                 want);
    assert_ptr_equal(m, (struct st_model *)(uintptr_t)1);
}

static void test_open_errors(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    expect_open_error(dir, -ENOENT, "no model.safetensors or model.safetensors.index.json");

    /* A file truncated in its data area: the path is named with the defect. */
    const uint8_t data[4] = {1, 2, 3, 4};
    const struct st_write_tensor t = {"w", ST_DTYPE_F32, 1, {1}, data};
    struct fp8_err err = {{0}};
    assert_int_equal(st_model_write(dir, &t, 1, 0, NULL, NULL, &err), 1);
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "rb+");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    assert_int_equal(truncate(path, size - 1), 0);
    expect_open_error(dir, -EINVAL, "/model.safetensors: tensor \"w\": data_offsets [0, 4] run "
                                    "past the end of the data area (3 bytes)");
    assert_int_equal(truncate(path, 3), 0);
    expect_open_error(dir, -EINVAL, "file of 3 bytes is too short");
    assert_int_equal(truncate(path, 0), 0);
    expect_open_error(dir, -EINVAL, "file of 0 bytes is too short");
    /* A FIFO in the file's place is refused at once, not waited on. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    expect_open_error(dir, -EINVAL, "/model.safetensors: not a regular file");
    tmpdir_remove(dir);
}

static void test_index_errors(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    const uint8_t data[2] = {7, 9};
    const struct st_write_tensor ts[2] = {{"x", ST_DTYPE_U8, 1, {1}, data},
                                          {"y", ST_DTYPE_U8, 1, {1}, data + 1}};
    struct fp8_err err = {{0}};
    char path[600];
    snprintf(path, sizeof(path), "%s/s1.safetensors", dir);
    assert_int_equal(st_file_write(path, ts, 2, NULL, NULL, &err), 0);

    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}");
    expect_open_error(dir, -ENOENT, "model.safetensors.index.json names shard s2.safetensors, "
                                    "which does not exist");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"s1.safetensors\",\"z\":\"s1.safetensors\"}}");
    expect_open_error(dir, -EINVAL, "tensor \"z\" is listed in shard s1.safetensors, which does "
                                    "not contain it");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"s1.safetensors\"}}");
    expect_open_error(dir, -EINVAL, "s1.safetensors holds tensor \"y\", which");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"../s1.safetensors\"}}");
    expect_open_error(dir, -EINVAL, "tensor \"x\" maps to something other than a plain file name");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x\":");
    expect_open_error(dir, -EINVAL, "model.safetensors.index.json: malformed JSON");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\":{}}");
    expect_open_error(dir, -EINVAL, "\"weight_map\" missing or not an object");

    /* The same tensor in two shards, and a tensor the index puts in the other shard. */
    snprintf(path, sizeof(path), "%s/s2.safetensors", dir);
    assert_int_equal(st_file_write(path, ts, 1, NULL, NULL, &err), 0);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}");
    expect_open_error(dir, -EINVAL, "tensor \"x\" appears in both");
    snprintf(path, sizeof(path), "%s/s2.safetensors", dir);
    unlink(path);
    assert_int_equal(st_file_write(path, ts + 1, 1, NULL, NULL, &err), 0);
    snprintf(path, sizeof(path), "%s/s1.safetensors", dir);
    unlink(path);
    assert_int_equal(st_file_write(path, ts, 1, NULL, NULL, &err), 0);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"s2.safetensors\",\"y\":\"s1.safetensors\"}}");
    expect_open_error(dir, -EINVAL, "tensor \"x\" is listed in shard s2.safetensors but found in "
                                    "s1.safetensors");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}}");
    struct st_model *m = NULL;
    assert_int_equal(st_model_open(dir, &m, &err), 0);
    assert_int_equal(*(const uint8_t *)st_model_find(m, "y")->data, 9);
    st_model_free(m);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_header_too_short),
        cmocka_unit_test(test_header_length_past_eof),
        cmocka_unit_test(test_header_length_cap),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_shape_size_mismatch),
        cmocka_unit_test(test_non_utf8_name),
        cmocka_unit_test(test_nesting_bomb),
        cmocka_unit_test(test_duplicate_names),
        cmocka_unit_test(test_malformed_entries),
        cmocka_unit_test(test_write_read_single),
        cmocka_unit_test(test_write_read_sharded),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_index_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
