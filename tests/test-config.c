/* config.json / generation_config.json parsing. Every input is a literal Hub-style (or
 * transformers-5-style) JSON text and every expected value is read off that text by hand
 * (or worked out by hand where noted), never taken from the parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/config.h"
#include "tests/test_util.h"
#include "tests/tmpdir.h"

static struct fp8_model_config parse_ok(const char *config, const char *gen)
{
    struct fp8_model_config c;
    struct fp8_err err = {{0}};
    int rc = fp8_model_config_parse(config, gen, &c, &err);
    if (rc != 0)
        fail_msg("parse failed (%d): %s", rc, err.msg);
    return c;
}

static void expect_error(const char *config, const char *gen, const char *want)
{
    struct fp8_model_config c = {.vocab_size = -5};
    struct fp8_err err = {{0}};
    int rc = fp8_model_config_parse(config, gen, &c, &err);
    if (rc != -EINVAL || !strstr(err.msg, want))
        fail_msg("rc %d, message \"%s\", expected one containing \"%s\"", rc, err.msg, want);
    assert_int_equal(c.vocab_size, -5); /* untouched on failure */
}

/* text into buf with its first from overwritten by to, of the same length. */
static void patch_text(char *buf, size_t cap, const char *text, const char *from, const char *to)
{
    assert_int_equal(strlen(from), strlen(to));
    snprintf(buf, cap, "%s", text);
    char *p = strstr(buf, from);
    assert_non_null(p);
    memcpy(p, to, strlen(to));
}

/* Qwen3-8B's config.json and generation_config.json as published on the Hub. */
static const char qwen3_8b[] =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, "
    "\"attention_dropout\": 0.0, \"bos_token_id\": 151643, \"eos_token_id\": 151645, "
    "\"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 4096, "
    "\"initializer_range\": 0.02, \"intermediate_size\": 12288, "
    "\"max_position_embeddings\": 40960, \"max_window_layers\": 36, \"model_type\": \"qwen3\", "
    "\"num_attention_heads\": 32, \"num_hidden_layers\": 36, \"num_key_value_heads\": 8, "
    "\"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000, "
    "\"sliding_window\": null, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.51.0\", \"use_cache\": true, \"use_sliding_window\": false, "
    "\"vocab_size\": 151936}";
static const char qwen3_gen[] =
    "{\"bos_token_id\": 151643, \"do_sample\": true, \"eos_token_id\": [151645, 151643], "
    "\"pad_token_id\": 151643, \"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.95}";

static void test_qwen3_hub(void **state)
{
    (void)state;
    struct fp8_model_config c = parse_ok(qwen3_8b, qwen3_gen);
    assert_int_equal(c.arch, FP8_ARCH_QWEN3);
    assert_string_equal(c.arch_name, "Qwen3ForCausalLM");
    assert_string_equal(c.tensor_prefix, "model.");
    assert_string_equal(c.lm_head_name, "lm_head.weight");
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 12288);
    assert_int_equal(c.n_layers, 36);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 40960);
    assert_true(c.rms_norm_eps == 1e-6f);
    assert_false(c.tie_word_embeddings);
    assert_int_equal(c.act, FP8_ACT_SILU);
    assert_int_equal(c.rope.type, FP8_ROPE_DEFAULT);
    assert_true(c.rope.theta == 1e6f);
    assert_true(c.rope.factor == 1.0f);
    assert_true(c.rope_local.theta == 1e6f);
    assert_int_equal(c.n_experts, 0);
    assert_int_equal(c.sliding_window, 0);
    assert_true(c.query_pre_attn_scalar == 128.0f);
    assert_true(c.final_logit_softcapping == 0.0f);
    assert_true(c.embed_scale == 1.0f);
    assert_false(c.norm_plus_one);
    for (int i = 0; i < 36; i++)
        assert_false(c.layers[i].sliding || c.layers[i].moe);
    assert_int_equal(c.bos_token_id, 151643);
    assert_int_equal(c.pad_token_id, 151643);
    assert_int_equal(c.n_eos, 2); /* generation_config's list wins over config's 151645 */
    assert_int_equal(c.eos_token_ids[0], 151645);
    assert_int_equal(c.eos_token_ids[1], 151643);
    assert_true(c.default_temperature == 0.6f);
    assert_true(c.default_top_p == 0.95f);
    assert_int_equal(c.default_top_k, 20);
    assert_string_equal(c.torch_dtype, "bfloat16");

    /* Without generation_config.json: config's eos, no pad, neutral sampling. */
    c = parse_ok(qwen3_8b, NULL);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 151645);
    assert_int_equal(c.pad_token_id, -1);
    assert_true(c.default_temperature == 1.0f);
    assert_true(c.default_top_p == 1.0f);
    assert_int_equal(c.default_top_k, 0);
}

/* Qwen3-0.6B as transformers 5 saves it: "dtype", "rope_parameters", "layer_types". */
static void test_qwen3_transformers5(void **state)
{
    (void)state;
    const char *cfg =
        "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, "
        "\"dtype\": \"bfloat16\", \"head_dim\": 128, \"hidden_act\": \"silu\", "
        "\"hidden_size\": 1024, \"intermediate_size\": 3072, \"layer_types\": [\"full_attention\", "
        "\"full_attention\"], \"max_position_embeddings\": 40960, \"num_attention_heads\": 16, "
        "\"num_hidden_layers\": 2, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-06, "
        "\"rope_parameters\": {\"rope_theta\": 1000000, \"rope_type\": \"default\"}, "
        "\"tie_word_embeddings\": true, \"vocab_size\": 151936}";
    struct fp8_model_config c = parse_ok(cfg, NULL);
    assert_string_equal(c.torch_dtype, "bfloat16");
    assert_true(c.rope.theta == 1e6f);
    assert_int_equal(c.rope.type, FP8_ROPE_DEFAULT);
    assert_true(c.tie_word_embeddings);
    assert_string_equal(c.lm_head_name, "");
    assert_int_equal(c.n_layers, 2);
    assert_int_equal(c.hidden_size, 1024);
    /* Missing rope_theta: Qwen3Config's default 10000. */
    c = parse_ok("{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 8, \"hidden_size\": 16,"
                 " \"intermediate_size\": 32, \"num_attention_heads\": 2, \"num_hidden_layers\": 1,"
                 " \"vocab_size\": 100}", NULL);
    assert_true(c.rope.theta == 10000.0f);
    assert_int_equal(c.n_kv_heads, 2); /* absent: equal to the attention heads */
    assert_string_equal(c.torch_dtype, "float32");
}

/* Qwen3-30B-A3B's published values, with mlp_only_layers and decoder_sparse_step changed
 * to exercise the layer rule: layer i is sparse iff i is not listed and (i + 1) % 2 == 0. */
static void test_qwen3_moe(void **state)
{
    (void)state;
    const char *cfg =
        "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"attention_bias\": false, "
        "\"bos_token_id\": 151643, \"decoder_sparse_step\": 2, \"eos_token_id\": 151645, "
        "\"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 2048, "
        "\"intermediate_size\": 6144, \"max_position_embeddings\": 40960, "
        "\"mlp_only_layers\": [3, 4], \"model_type\": \"qwen3_moe\", \"moe_intermediate_size\": 768, "
        "\"norm_topk_prob\": true, \"num_attention_heads\": 32, \"num_experts\": 128, "
        "\"num_experts_per_tok\": 8, \"num_hidden_layers\": 8, \"num_key_value_heads\": 4, "
        "\"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000.0, "
        "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
        "\"use_sliding_window\": false, \"vocab_size\": 151936}";
    struct fp8_model_config c = parse_ok(cfg, qwen3_gen);
    assert_int_equal(c.arch, FP8_ARCH_QWEN3_MOE);
    assert_int_equal(c.n_experts, 128);
    assert_int_equal(c.n_experts_per_tok, 8);
    assert_int_equal(c.moe_intermediate_size, 768);
    assert_true(c.norm_topk_prob);
    assert_int_equal(c.n_kv_heads, 4);
    /* i:      0  1  2  3  4  5  6  7
     * (i+1)%2 1  0  1  0  1  0  1  0 ; listed: 3, 4 */
    const bool want[8] = {false, true, false, false, false, true, false, true};
    for (int i = 0; i < 8; i++)
        assert_int_equal(c.layers[i].moe, want[i]);
}

/* gemma-3-1b-it's config.json and generation_config.json as published. */
static const char gemma3_1b[] =
    "{\"architectures\": [\"Gemma3ForCausalLM\"], \"attention_bias\": false, "
    "\"attention_dropout\": 0.0, \"attn_logit_softcapping\": null, \"bos_token_id\": 2, "
    "\"cache_implementation\": \"hybrid\", \"eos_token_id\": [1, 106], "
    "\"final_logit_softcapping\": null, \"head_dim\": 256, "
    "\"hidden_activation\": \"gelu_pytorch_tanh\", \"hidden_size\": 1152, "
    "\"initializer_range\": 0.02, \"intermediate_size\": 6912, "
    "\"max_position_embeddings\": 32768, \"model_type\": \"gemma3_text\", "
    "\"num_attention_heads\": 4, \"num_hidden_layers\": 26, \"num_key_value_heads\": 1, "
    "\"pad_token_id\": 0, \"query_pre_attn_scalar\": 256, \"rms_norm_eps\": 1e-06, "
    "\"rope_local_base_freq\": 10000, \"rope_scaling\": null, \"rope_theta\": 1000000, "
    "\"sliding_window\": 512, \"sliding_window_pattern\": 6, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.50.0.dev0\", \"use_cache\": true, \"vocab_size\": 262144}";
static const char gemma3_gen[] =
    "{\"bos_token_id\": 2, \"cache_implementation\": \"hybrid\", \"do_sample\": true, "
    "\"eos_token_id\": [1, 106], \"pad_token_id\": 0, \"top_k\": 64, \"top_p\": 0.95}";

static void test_gemma3_1b(void **state)
{
    (void)state;
    struct fp8_model_config c = parse_ok(gemma3_1b, gemma3_gen);
    assert_int_equal(c.arch, FP8_ARCH_GEMMA3);
    assert_string_equal(c.tensor_prefix, "model.");
    assert_true(c.tie_word_embeddings); /* Gemma3TextConfig's default */
    assert_string_equal(c.lm_head_name, "");
    assert_int_equal(c.vocab_size, 262144);
    assert_int_equal(c.hidden_size, 1152);
    assert_int_equal(c.intermediate_size, 6912);
    assert_int_equal(c.n_layers, 26);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.n_kv_heads, 1);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.act, FP8_ACT_GELU_TANH);
    assert_int_equal(c.sliding_window, 512);
    assert_true(c.query_pre_attn_scalar == 256.0f);
    assert_true(c.final_logit_softcapping == 0.0f);
    assert_true(c.norm_plus_one);
    /* sqrt(1152) = 33.941..; bf16 spacing in [32, 64) is 0.25, nearest is 34. */
    assert_true(c.embed_scale == 34.0f);
    assert_int_equal(c.rope.type, FP8_ROPE_DEFAULT);
    assert_true(c.rope.theta == 1e6f);
    assert_true(c.rope_local.theta == 1e4f);
    assert_int_equal(c.rope_local.type, FP8_ROPE_DEFAULT);
    /* Global layers are 5, 11, 17, 23 ((i + 1) % 6 == 0). */
    for (int i = 0; i < 26; i++)
        assert_int_equal(c.layers[i].sliding, i != 5 && i != 11 && i != 17 && i != 23);
    assert_int_equal(c.bos_token_id, 2);
    assert_int_equal(c.pad_token_id, 0);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_token_ids[0], 1);
    assert_int_equal(c.eos_token_ids[1], 106);
    assert_true(c.default_temperature == 1.0f);
    assert_true(c.default_top_p == 0.95f);
    assert_int_equal(c.default_top_k, 64);

    /* A float32 checkpoint keeps the unrounded scale: (float)sqrt(1152). */
    char f32[sizeof(gemma3_1b) + 8];
    patch_text(f32, sizeof(f32), gemma3_1b, "\"bfloat16\"", "\"float32\" ");
    c = parse_ok(f32, NULL);
    assert_true(c.embed_scale == 33.941125496954285f);
}

/* gemma-3-27b-it: the text part lives in text_config and relies on Gemma3TextConfig's
 * defaults (vocab 262208, rope_theta 1e6, rope_local_base_freq 1e4, pattern 6). */
static const char gemma3_27b[] =
    "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"boi_token_index\": 255999, "
    "\"eoi_token_index\": 256000, \"eos_token_id\": [1, 106], \"image_token_index\": 262144, "
    "\"initializer_range\": 0.02, \"mm_tokens_per_image\": 256, \"model_type\": \"gemma3\", "
    "\"text_config\": {\"head_dim\": 128, \"hidden_size\": 5376, \"intermediate_size\": 21504, "
    "\"model_type\": \"gemma3_text\", \"num_attention_heads\": 32, \"num_hidden_layers\": 62, "
    "\"num_key_value_heads\": 16, \"query_pre_attn_scalar\": 168, "
    "\"rope_scaling\": {\"factor\": 8.0, \"rope_type\": \"linear\"}, \"sliding_window\": 1024}, "
    "\"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.50.0.dev0\", "
    "\"vision_config\": {\"hidden_size\": 1152, \"image_size\": 896, \"intermediate_size\": 4304, "
    "\"model_type\": \"siglip_vision_model\", \"num_attention_heads\": 16, "
    "\"num_hidden_layers\": 27, \"patch_size\": 14, \"vision_use_head\": false}}";

static void test_gemma3_27b_multimodal(void **state)
{
    (void)state;
    struct fp8_model_config c = parse_ok(gemma3_27b, gemma3_gen);
    assert_int_equal(c.arch, FP8_ARCH_GEMMA3);
    assert_string_equal(c.arch_name, "Gemma3ForConditionalGeneration");
    assert_string_equal(c.tensor_prefix, "language_model.model.");
    assert_int_equal(c.vocab_size, 262208);
    assert_int_equal(c.hidden_size, 5376);
    assert_int_equal(c.n_layers, 62);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 16);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_true(c.query_pre_attn_scalar == 168.0f);
    assert_int_equal(c.sliding_window, 1024);
    assert_int_equal(c.rope.type, FP8_ROPE_LINEAR);
    assert_true(c.rope.factor == 8.0f);
    assert_true(c.rope.theta == 1e6f);
    assert_int_equal(c.rope_local.type, FP8_ROPE_DEFAULT); /* scaling is for global layers only */
    assert_true(c.rope_local.factor == 1.0f);
    assert_true(c.rope_local.theta == 1e4f);
    /* sqrt(5376) = 73.32..; bf16 spacing in [64, 128) is 0.5, nearest is 73.5. */
    assert_true(c.embed_scale == 73.5f);
    assert_string_equal(c.torch_dtype, "bfloat16");
    assert_true(c.layers[0].sliding);
    assert_false(c.layers[5].sliding);
    assert_false(c.layers[59].sliding);
    assert_true(c.layers[61].sliding);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_token_ids[1], 106);
}

/* Gemma3 as transformers 5 writes it: rope_parameters keyed by layer type, layer_types. */
static void test_gemma3_transformers5(void **state)
{
    (void)state;
    const char *cfg =
        "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"dtype\": \"bfloat16\", "
        "\"text_config\": {\"head_dim\": 32, \"hidden_size\": 64, \"intermediate_size\": 128, "
        "\"layer_types\": [\"sliding_attention\", \"full_attention\", \"sliding_attention\"], "
        "\"num_attention_heads\": 4, \"num_hidden_layers\": 3, \"num_key_value_heads\": 2, "
        "\"query_pre_attn_scalar\": 16, \"rope_parameters\": {\"full_attention\": "
        "{\"factor\": 8.0, \"rope_theta\": 500000.0, \"rope_type\": \"linear\"}, "
        "\"sliding_attention\": {\"rope_theta\": 20000.0, \"rope_type\": \"default\"}}, "
        "\"sliding_window\": 16, \"vocab_size\": 300, \"final_logit_softcapping\": 30.0}}";
    struct fp8_model_config c = parse_ok(cfg, NULL);
    assert_int_equal(c.vocab_size, 300);
    assert_true(c.layers[0].sliding);
    assert_false(c.layers[1].sliding);
    assert_true(c.layers[2].sliding);
    assert_int_equal(c.rope.type, FP8_ROPE_LINEAR);
    assert_true(c.rope.factor == 8.0f);
    assert_true(c.rope.theta == 5e5f);
    assert_int_equal(c.rope_local.type, FP8_ROPE_DEFAULT);
    assert_true(c.rope_local.theta == 2e4f);
    assert_true(c.final_logit_softcapping == 30.0f);
    assert_true(c.embed_scale == 8.0f); /* sqrt(64) */
    assert_string_equal(c.torch_dtype, "bfloat16");
    /* Gemma3TextConfig's token defaults when nothing names them. */
    assert_int_equal(c.bos_token_id, 2);
    assert_int_equal(c.pad_token_id, 0);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_token_ids[0], 1);
}

static const char small_qwen[] =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 8, \"hidden_size\": 16, "
    "\"intermediate_size\": 32, \"num_attention_heads\": 2, \"num_hidden_layers\": 1, "
    "\"vocab_size\": 100%s}";

static void expect_qwen_error(const char *extra, const char *gen, const char *want)
{
    char cfg[1024];
    snprintf(cfg, sizeof(cfg), small_qwen, extra);
    expect_error(cfg, gen, want);
}

static void test_unsupported(void **state)
{
    (void)state;
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"]}", NULL,
                 "config: unsupported architecture \"LlamaForCausalLM\" (supported: "
                 "Qwen3ForCausalLM, Qwen3MoeForCausalLM, Gemma3ForCausalLM, "
                 "Gemma3ForConditionalGeneration)");
    expect_error("{\"model_type\": \"qwen3\"}", NULL, "\"architectures\" missing or empty");
    expect_error("{\"architectures\": [\"Gemma3ForConditionalGeneration\"]}", NULL,
                 "\"text_config\" missing (required for Gemma3ForConditionalGeneration)");
    expect_qwen_error(", \"hidden_act\": \"relu\"", NULL,
                      "\"hidden_act\": unsupported activation \"relu\" (supported: silu, "
                      "gelu_pytorch_tanh)");
    expect_qwen_error(", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", NULL,
                      "\"rope_scaling\": rope type \"yarn\" is not supported yet (supported: "
                      "default, linear)");
    expect_qwen_error(", \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8.0}", NULL,
                      "rope type \"llama3\" is not supported yet");
    expect_qwen_error(", \"rope_parameters\": {\"rope_type\": \"dynamic\"}", NULL,
                      "\"rope_parameters\": rope type \"dynamic\" is not supported (supported");
    expect_qwen_error(", \"attention_bias\": true", NULL, "\"attention_bias\": true is not supported");
    expect_qwen_error(", \"use_sliding_window\": true", NULL,
                      "\"use_sliding_window\": true is not supported");
    expect_qwen_error(", \"num_key_value_heads\": 3", NULL,
                      "\"num_attention_heads\" 2 is not a multiple of \"num_key_value_heads\" 3");
    expect_qwen_error(", \"torch_dtype\": \"float64\"", NULL,
                      "\"torch_dtype\": unsupported model dtype \"float64\"");
    expect_error("{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 8, \"hidden_size\": 16, "
                 "\"intermediate_size\": 32, \"num_attention_heads\": 2, \"num_hidden_layers\": 300, "
                 "\"vocab_size\": 100}", NULL,
                 "\"num_hidden_layers\" is 300, outside the supported range [1, 256]");
    expect_qwen_error(", \"vocab_size\": 5", NULL, "duplicate object key");
    expect_qwen_error(", \"eos_token_id\": 100", NULL,
                      "config: \"eos_token_id\" 100 is outside the vocabulary (100)");
    expect_qwen_error("", "{\"eos_token_id\": [1, \"x\"]}",
                      "generation_config: \"eos_token_id\" is not an integer or a list");
    expect_qwen_error("", "{\"top_p\": 1.5}", "top_p 1.5 out of range");
    expect_qwen_error("", "[]", "generation_config: not a JSON object");
    expect_error("{\"architectures\": [\"Qwen3ForCausalLM\"], \"hidden_size\": 16, "
                 "\"intermediate_size\": 32, \"num_attention_heads\": 2, \"num_hidden_layers\": 1, "
                 "\"vocab_size\": 100}", NULL,
                 "config: \"head_dim\" missing (required for Qwen3ForCausalLM)");
    expect_error("{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 8, \"hidden_size\": 16, "
                 "\"num_attention_heads\": 2, \"num_hidden_layers\": 1, \"vocab_size\": 100}", NULL,
                 "\"intermediate_size\" missing (required for Qwen3ForCausalLM)");
    expect_error("{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 8,", NULL,
                 "config: malformed JSON at line 1");
    expect_error("{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"head_dim\": 8, \"hidden_size\": 16,"
                 " \"intermediate_size\": 32, \"num_attention_heads\": 2, \"num_hidden_layers\": 2, "
                 "\"vocab_size\": 100, \"num_experts\": 4, \"num_experts_per_tok\": 2, "
                 "\"moe_intermediate_size\": 8, \"mlp_only_layers\": [2]}", NULL,
                 "\"mlp_only_layers\"[0] is not a layer index below 2");

    char g[sizeof(gemma3_1b) + 64];
    patch_text(g, sizeof(g), gemma3_1b, "\"attn_logit_softcapping\": null",
               "\"attn_logit_softcapping\": 50.0");
    expect_error(g, NULL, "\"attn_logit_softcapping\" is set; attention logit soft-capping is "
                          "not supported");
    patch_text(g, sizeof(g), gemma3_1b, "\"num_hidden_layers\": 26", "\"num_hidden_layerz\": 26");
    expect_error(g, NULL, "\"num_hidden_layers\" missing (required for Gemma3ForCausalLM)");
}

static void test_presets(void **state)
{
    (void)state;
    struct fp8_model_config c;
    struct fp8_err err = {{0}};
    /* Values from the published configs, typed in by hand. */
    assert_int_equal(fp8_model_config_preset("qwen3-0.6b", &c, &err), 0);
    assert_int_equal(c.hidden_size, 1024);
    assert_int_equal(c.n_layers, 28);
    assert_int_equal(c.n_heads, 16);
    assert_int_equal(c.n_kv_heads, 8);
    assert_true(c.tie_word_embeddings);
    assert_int_equal(fp8_model_config_preset("qwen3-8b", &c, &err), 0);
    assert_int_equal(c.intermediate_size, 12288);
    assert_int_equal(c.n_layers, 36);
    assert_int_equal(fp8_model_config_preset("qwen3-30b-a3b", &c, &err), 0);
    assert_int_equal(c.n_experts, 128);
    assert_int_equal(c.n_experts_per_tok, 8);
    assert_int_equal(c.moe_intermediate_size, 768);
    assert_int_equal(c.n_layers, 48);
    assert_true(c.layers[0].moe && c.layers[47].moe);
    assert_int_equal(fp8_model_config_preset("gemma3-1b", &c, &err), 0);
    assert_int_equal(c.hidden_size, 1152);
    assert_int_equal(c.n_layers, 26);
    assert_int_equal(fp8_model_config_preset("gemma3-27b", &c, &err), 0);
    assert_int_equal(c.hidden_size, 5376);
    assert_int_equal(c.n_layers, 62);

    /* Tiny presets: what the tests rely on. */
    assert_int_equal(fp8_model_config_preset("qwen3-moe-tiny", &c, &err), 0);
    assert_true(c.n_experts >= 8);
    assert_true(c.layers[0].moe && !c.layers[1].moe && c.layers[2].moe);
    assert_int_equal(fp8_model_config_preset("gemma3-tiny", &c, &err), 0);
    int local = 0, global = 0;
    for (int i = 0; i < c.n_layers; i++)
        c.layers[i].sliding ? local++ : global++;
    assert_true(local >= 1 && global >= 1);
    assert_true(c.sliding_window <= 16);
    /* Vocabularies hold the real tokenizers: Qwen3 ids reach 151668, Gemma3's 262144. */
    assert_int_equal(c.vocab_size, 262208);
    assert_int_equal(fp8_model_config_preset("qwen3-tiny", &c, &err), 0);
    assert_int_equal(c.vocab_size, 151680);

    assert_int_equal(fp8_model_config_preset("llama-7b", &c, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "unknown preset \"llama-7b\" (known: qwen3-0.6b,"));
    for (int i = 0; fp8_model_config_preset_names[i]; i++)
        assert_int_equal(fp8_model_config_preset(fp8_model_config_preset_names[i], &c, &err), 0);
}

static void test_load_dir(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char path[600];
    struct fp8_model_config c;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_model_config_load(dir, &c, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "config.json"));

    snprintf(path, sizeof(path), "%s/config.json", dir);
    write_file(path, qwen3_8b);
    assert_int_equal(fp8_model_config_load(dir, &c, &err), 0);
    assert_int_equal(c.n_eos, 1);
    snprintf(path, sizeof(path), "%s/generation_config.json", dir);
    write_file(path, qwen3_gen);
    assert_int_equal(fp8_model_config_load(dir, &c, &err), 0);
    assert_int_equal(c.n_eos, 2);
    write_file(path, "{\"top_k\": -1}");
    assert_int_equal(fp8_model_config_load(dir, &c, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "generation_config: \"top_k\" is -1"));
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_hub),
        cmocka_unit_test(test_qwen3_transformers5),
        cmocka_unit_test(test_qwen3_moe),
        cmocka_unit_test(test_gemma3_1b),
        cmocka_unit_test(test_gemma3_27b_multimodal),
        cmocka_unit_test(test_gemma3_transformers5),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_load_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
