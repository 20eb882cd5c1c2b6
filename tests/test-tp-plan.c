/* The tensor-parallel sharding plan. Every expected slice is worked out by hand from the
 * shapes in the preset's config text (Qwen3-8B: 32 heads, 8 KV heads, head_dim 128,
 * intermediate 12288, vocab 151936; qwen3-tiny: 4 heads, 2 KV heads, head_dim 32,
 * intermediate 128, vocab 151680; qwen3-moe-tiny: moe_intermediate 32; gemma3-1b: 4 heads,
 * 1 KV head), never taken from the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "engine/config.h"
#include "engine/tp_plan.h"

static struct fp8_model_config preset(const char *name)
{
    struct fp8_model_config c;
    struct fp8_err err = {{0}};
    if (fp8_model_config_preset(name, &c, &err) != 0)
        fail_msg("preset %s: %s", name, err.msg);
    return c;
}

static struct fp8_tp_shard shard(const struct fp8_model_config *c, int32_t n, int32_t r)
{
    struct fp8_tp_shard s;
    struct fp8_err err = {{0}};
    if (fp8_tp_plan_shard(c, n, r, &s, &err) != 0)
        fail_msg("plan %d/%d: %s", r, n, err.msg);
    return s;
}

#define assert_range(rg, s, n)                 \
    do {                                        \
        assert_int_equal((rg).start, (s));      \
        assert_int_equal((rg).count, (n));      \
    } while (0)

static void test_qwen3_8b_tp2(void **state)
{
    (void)state;
    struct fp8_model_config c = preset("qwen3-8b");
    /* rank 1 of 2: heads 16..31, KV heads 4..7; q rows 16*128, k after the 4096 q rows at
     * 4*128, v after the 1024 k rows. */
    struct fp8_tp_shard s = shard(&c, 2, 1);
    assert_int_equal(s.head0, 16);
    assert_int_equal(s.n_heads, 16);
    assert_int_equal(s.kv_head0, 4);
    assert_int_equal(s.n_kv_heads, 4);
    assert_range(s.qkv_rows[0], 2048, 2048);
    assert_range(s.qkv_rows[1], 4608, 512);
    assert_range(s.qkv_rows[2], 5632, 512);
    assert_range(s.o_cols, 2048, 2048);
    assert_range(s.gate_up_rows[0], 6144, 6144);
    assert_range(s.gate_up_rows[1], 18432, 6144);
    assert_range(s.down_cols, 6144, 6144);
    assert_range(s.moe_down_cols, 0, 0);
    assert_range(s.vocab_rows, 75968, 75968);
    s = shard(&c, 2, 0);
    assert_range(s.qkv_rows[0], 0, 2048);
    assert_range(s.qkv_rows[1], 4096, 512);
    assert_range(s.qkv_rows[2], 5120, 512);
    assert_range(s.vocab_rows, 0, 75968);
}

static void test_qwen3_8b_tp8(void **state)
{
    (void)state;
    struct fp8_model_config c = preset("qwen3-8b");
    /* rank 5 of 8: heads 20..23, KV head 5; intermediate 1536 a rank; vocab rows
     * [151936*5/8, 151936*6/8) = [94960, 113952). */
    struct fp8_tp_shard s = shard(&c, 8, 5);
    assert_int_equal(s.head0, 20);
    assert_int_equal(s.n_heads, 4);
    assert_int_equal(s.kv_head0, 5);
    assert_int_equal(s.n_kv_heads, 1);
    assert_range(s.qkv_rows[0], 2560, 512);
    assert_range(s.qkv_rows[1], 4736, 128);
    assert_range(s.qkv_rows[2], 5760, 128);
    assert_range(s.gate_up_rows[0], 7680, 1536);
    assert_range(s.gate_up_rows[1], 19968, 1536);
    assert_range(s.down_cols, 7680, 1536);
    assert_range(s.vocab_rows, 94960, 18992);
}

static void test_kv_heads_replicated(void **state)
{
    (void)state;
    /* qwen3-tiny at 4 ranks: 2 KV heads for 4 ranks, each held by 2 ranks; ranks 0,1 hold
     * KV head 0 (query heads 0, 1 read it: group size 2), ranks 2,3 KV head 1. Rank 3: q
     * rows [96, 128), k rows 128 + 32, v rows 128 + 64 + 32. */
    struct fp8_model_config c = preset("qwen3-tiny");
    int32_t want_kv[4] = {0, 0, 1, 1};
    for (int32_t r = 0; r < 4; r++) {
        struct fp8_tp_shard s = shard(&c, 4, r);
        assert_int_equal(s.head0, r);
        assert_int_equal(s.n_heads, 1);
        assert_int_equal(s.kv_head0, want_kv[r]);
        assert_int_equal(s.n_kv_heads, 1);
    }
    struct fp8_tp_shard s = shard(&c, 4, 3);
    assert_range(s.qkv_rows[0], 96, 32);
    assert_range(s.qkv_rows[1], 160, 32);
    assert_range(s.qkv_rows[2], 224, 32);
    assert_range(s.gate_up_rows[1], 128 + 96, 32);
    assert_range(s.vocab_rows, 113760, 37920);
    /* gemma3-1b, 1 KV head at 2 ranks: both hold it. */
    c = preset("gemma3-1b");
    for (int32_t r = 0; r < 2; r++) {
        s = shard(&c, 2, r);
        assert_int_equal(s.kv_head0, 0);
        assert_int_equal(s.n_kv_heads, 1);
        assert_range(s.qkv_rows[1], 4 * 256, 256);
        assert_range(s.qkv_rows[2], 5 * 256, 256);
    }
}

static void test_moe_and_uneven_vocab(void **state)
{
    (void)state;
    /* qwen3-moe-tiny at 2 ranks: every expert's 32 channels split 16 + 16. */
    struct fp8_model_config c = preset("qwen3-moe-tiny");
    struct fp8_tp_shard s = shard(&c, 2, 1);
    assert_range(s.moe_gate_up_rows[0], 16, 16);
    assert_range(s.moe_gate_up_rows[1], 48, 16);
    assert_range(s.moe_down_cols, 16, 16);
    /* A vocabulary of 10 over 4 ranks: rows [0,2) [2,5) [5,7) [7,10). */
    c = preset("qwen3-tiny");
    c.vocab_size = 10;
    int64_t start[4] = {0, 2, 5, 7}, count[4] = {2, 3, 2, 3};
    for (int32_t r = 0; r < 4; r++)
        assert_range(shard(&c, 4, r).vocab_rows, start[r], count[r]);
}

static void expect_plan_error(const struct fp8_model_config *c, int32_t n, int32_t r,
                              const char *want)
{
    struct fp8_tp_shard s = {.rank = -7};
    struct fp8_err err = {{0}};
    int rc = fp8_tp_plan_shard(c, n, r, &s, &err);
    if (rc != -EINVAL || !strstr(err.msg, want))
        fail_msg("rc %d, message \"%s\", expected one containing \"%s\"", rc, err.msg, want);
    assert_int_equal(s.rank, -7); /* untouched on failure */
}

static void test_errors(void **state)
{
    (void)state;
    struct fp8_model_config c = preset("qwen3-8b");
    expect_plan_error(&c, 3, 0, "does not divide num_attention_heads 32");
    expect_plan_error(&c, 0, 0, "tensor-parallel-size 0 is not supported");
    expect_plan_error(&c, 16, 0, "tensor-parallel-size 16 is not supported");
    expect_plan_error(&c, 2, 2, "rank 2 outside");
    c = preset("gemma3-1b");
    expect_plan_error(&c, 8, 0, "does not divide num_attention_heads 4");
    c = preset("qwen3-tiny");
    c.n_heads = 12;
    c.n_kv_heads = 3;
    expect_plan_error(&c, 2, 0, "num_key_value_heads 3: one must divide the other");
    c = preset("qwen3-tiny");
    c.intermediate_size = 130;
    expect_plan_error(&c, 4, 0, "does not divide intermediate_size 130");
    c = preset("qwen3-moe-tiny");
    c.moe_intermediate_size = 30;
    expect_plan_error(&c, 4, 0, "does not divide moe_intermediate_size 30");
    c = preset("qwen3-tiny");
    c.vocab_size = 3;
    expect_plan_error(&c, 4, 0, "exceeds vocab_size 3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_8b_tp2),
        cmocka_unit_test(test_qwen3_8b_tp8),
        cmocka_unit_test(test_kv_heads_replicated),
        cmocka_unit_test(test_moe_and_uneven_vocab),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
