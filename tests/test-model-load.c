/* Loading refuses what the ref backend and model code cannot run, with a message that
 * names it, and leaves nothing behind: unsupported config values (through config.json, as
 * users meet them), shapes that disagree with the checkpoint, missing tensors, and
 * inconsistent sizes handed to fp8_model_create directly. */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/model.h"
#include "tests/tmpdir.h"

#define GOLDEN FP8D_SOURCE_DIR "/tests/golden/models"

static struct fp8_backend *be;

static int setup(void **state)
{
    (void)state;
    return fp8_backend_create("ref", &be, NULL);
}

static int teardown(void **state)
{
    (void)state;
    fp8_backend_free(be);
    return 0;
}

/* A copy of a golden model directory whose config.json has key set to the JSON value
 * given as text; the checkpoint is a symlink to the original. Removed by tmpdir_remove. */
static char *patched_dir(const char *model, const char *key, const char *value_json)
{
    char *dir = tmpdir_make();
    assert_non_null(dir);
    char src[512], dst[600];
    snprintf(src, sizeof(src), "%s/%s/config.json", GOLDEN, model);
    json_error_t je;
    json_t *cfg = json_load_file(src, 0, &je), *v = json_loads(value_json, JSON_DECODE_ANY, &je);
    assert_non_null(cfg);
    assert_non_null(v);
    json_object_set_new(cfg, key, v);
    snprintf(dst, sizeof(dst), "%s/config.json", dir);
    assert_int_equal(json_dump_file(cfg, dst, 0), 0);
    json_decref(cfg);
    snprintf(src, sizeof(src), "%s/%s/model.safetensors", GOLDEN, model);
    snprintf(dst, sizeof(dst), "%s/model.safetensors", dir);
    assert_int_equal(symlink(src, dst), 0);
    return dir;
}

static void expect_load_error(const char *dir, const char *needle)
{
    struct fp8_model *m = NULL;
    struct fp8_err err = {{0}};
    struct fp8_model_opts o = fp8_model_opts_default();
    int rc = fp8_model_load(dir, be, &o, &m, &err);
    assert_true(rc < 0);
    assert_null(m);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not name '%s'", err.msg, needle);
}

static void test_unsupported_config_values(void **state)
{
    (void)state;
    static const struct {
        const char *model, *key, *value, *needle;
    } cases[] = {
        {"qwen3-tiny", "hidden_act", "\"relu\"", "relu"},
        {"qwen3-tiny", "attention_bias", "true", "attention_bias"},
        {"qwen3-tiny", "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "yarn"},
        {"gemma3-tiny", "hidden_activation", "\"gelu\"", "gelu"},
        {"gemma3-tiny", "attn_logit_softcapping", "50.0", "attn_logit_softcapping"},
        {"qwen3-moe-tiny", "num_experts_per_tok", "9", "num_experts_per_tok"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *dir = patched_dir(cases[i].model, cases[i].key, cases[i].value);
        expect_load_error(dir, cases[i].needle);
        tmpdir_remove(dir);
    }
}

static void test_config_disagrees_with_checkpoint(void **state)
{
    (void)state;
    char *dir = patched_dir("qwen3-tiny", "intermediate_size", "100");
    expect_load_error(dir, "model.layers.0.mlp.gate_proj.weight: got [128, 64], config needs [100, 64]");
    tmpdir_remove(dir);
    dir = patched_dir("qwen3-tiny", "num_hidden_layers", "3");
    expect_load_error(dir, "missing tensor model.layers.2.");
    tmpdir_remove(dir);
    dir = patched_dir("qwen3-tiny", "tie_word_embeddings", "false");
    expect_load_error(dir, "missing tensor lm_head.weight");
    tmpdir_remove(dir);
}

/* fp8_model_create over synthetic weights of a description the model code cannot run. */
static int create_from(const struct fp8_model_config *c, const struct fp8_model_opts *o,
                       struct fp8_err *err)
{
    struct fp8_weights *w = NULL;
    struct fp8_model *m = NULL;
    int rc = fp8_weights_open_config(c, 1, &w, err);
    if (rc == 0)
        rc = fp8_model_create(w, be, o, &m, err);
    assert_null(m);
    fp8_weights_free(w);
    return rc;
}

static void test_create_rejects_unrunnable(void **state)
{
    (void)state;
    struct fp8_model_config good;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_model_config_load(GOLDEN "/qwen3-tiny", &good, &err), 0);
    struct fp8_model_opts o = fp8_model_opts_default();

    struct fp8_model_config c = good;
    c.act = (enum fp8_act)7;
    assert_int_equal(create_from(&c, &o, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "activation"));
    c = good;
    c.rope.type = (enum fp8_rope_type)5;
    assert_int_equal(create_from(&c, &o, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "rope type"));
    c = good;
    c.head_dim = 15;
    assert_int_equal(create_from(&c, &o, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "head_dim 15"));
    c = good;
    c.layers[1].sliding = true;
    assert_int_equal(create_from(&c, &o, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "sliding_window"));
    c = good;
    o.weight_dtype = FP8_DTYPE_F32;
    assert_int_equal(create_from(&c, &o, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "weights f32"));
    o = fp8_model_opts_default();
    o.kv_dtype = FP8_DTYPE_I32;
    assert_true(create_from(&c, &o, &err) < 0);
    assert_non_null(strstr(err.msg, "kv cache dtype i32"));
}

static void test_forward_rejects_bad_steps(void **state)
{
    (void)state;
    struct fp8_model *m = NULL;
    struct fp8_err err = {{0}};
    struct fp8_model_opts o = fp8_model_opts_default();
    o.max_tokens = 4;
    assert_int_equal(fp8_model_load(GOLDEN "/qwen3-tiny", be, &o, &m, &err), 0);
    int32_t tok[5] = {1, 2, 3, 4, 5}, pos[5] = {0, 1, 2, 3, 4}, ss[2] = {0, 5}, len[1] = {5},
            bt[1] = {0};
    uint8_t want[1] = {1};
    struct fp8_batch b = {.n_tokens = 5, .tokens = tok, .positions = pos, .slots = pos,
                          .n_seqs = 1, .seq_start = ss, .seq_len = len, .block_table = bt,
                          .max_blocks_per_seq = 1, .block_size = 16, .want_logits = want};
    float logits[256];
    assert_int_equal(fp8_model_forward(m, &b, logits, &err), -E2BIG); /* 5 > max_tokens 4 */
    b.n_tokens = 2;
    ss[1] = 2;
    len[0] = 2;
    tok[1] = 256;
    assert_int_equal(fp8_model_forward(m, &b, logits, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "token id 256"));
    tok[1] = 2;
    bt[0] = 300; /* outside the pool of 256 blocks */
    pos[1] = 1;
    int32_t slots[2] = {0, 1};
    b.slots = slots;
    assert_int_equal(fp8_model_forward(m, &b, logits, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "block 300"));
    /* The model still works after a refused step. */
    bt[0] = 0;
    assert_int_equal(fp8_model_forward(m, &b, logits, &err), 1);
    fp8_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported_config_values),
        cmocka_unit_test(test_config_disagrees_with_checkpoint),
        cmocka_unit_test(test_create_rejects_unrunnable),
        cmocka_unit_test(test_forward_rejects_bad_steps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
