/* The model description: everything the engine needs to know about an architecture
 * instance, parsed from a Hugging Face config.json (+ generation_config.json) or built
 * from a --synthetic preset. One struct for every supported architecture; fields that an
 * architecture does not use keep the neutral value noted beside them. */
#ifndef FP8_ENGINE_CONFIG_H
#define FP8_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define FP8_MAX_LAYERS 256
#define FP8_MAX_EOS 8

enum fp8_arch {
    FP8_ARCH_QWEN3,     /* Qwen3ForCausalLM */
    FP8_ARCH_QWEN3_MOE, /* Qwen3MoeForCausalLM */
    FP8_ARCH_GEMMA3,    /* Gemma3ForCausalLM, or the text part of Gemma3ForConditionalGeneration */
};

enum fp8_act {
    FP8_ACT_SILU,      /* "silu" */
    FP8_ACT_GELU_TANH, /* "gelu_pytorch_tanh" */
};

enum fp8_rope_type {
    FP8_ROPE_DEFAULT,
    FP8_ROPE_LINEAR, /* positions divided by factor */
};

struct fp8_rope {
    enum fp8_rope_type type;
    float theta;  /* base frequency */
    float factor; /* linear scaling factor; 1 for FP8_ROPE_DEFAULT */
};

struct fp8_layer_desc {
    bool sliding; /* Gemma3 local layer: sliding-window attention with rope_local */
    bool moe;     /* Qwen3-MoE sparse layer (else a dense MLP of intermediate_size) */
};

struct fp8_model_config {
    enum fp8_arch arch;
    char arch_name[64];      /* config.json "architectures"[0] */
    char tensor_prefix[64];  /* "model." or "language_model.model." before layer names (the
                              * Hub layout; fp8_weights_open resolves the transformers-5
                              * "model.language_model." layout from the tensor names) */
    char lm_head_name[96];   /* "lm_head.weight", or "" when tied to the embedding */

    int32_t vocab_size;
    int32_t hidden_size;       /* dim */
    int32_t intermediate_size; /* dense MLP hidden dim */
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t max_position_embeddings;
    float rms_norm_eps;
    bool tie_word_embeddings;
    enum fp8_act act;

    struct fp8_rope rope;       /* global (full-attention) layers */
    struct fp8_rope rope_local; /* Gemma3 sliding layers (rope_local_base_freq); = rope otherwise */

    /* Qwen3-MoE; zero for dense models. */
    int32_t n_experts;
    int32_t n_experts_per_tok;
    int32_t moe_intermediate_size;
    bool norm_topk_prob;

    /* Gemma3; neutral values for the others. */
    int32_t sliding_window;        /* 0: no sliding layers */
    float query_pre_attn_scalar;   /* attention scale is 1/sqrt(this); = head_dim elsewhere */
    float final_logit_softcapping; /* 0: none */
    float embed_scale;             /* sqrt(hidden) rounded to the model dtype (Gemma3); 1 */
    bool norm_plus_one;            /* RMSNorm weight applied as (1 + w) (Gemma3) */

    struct fp8_layer_desc layers[FP8_MAX_LAYERS]; /* (n_layers) */

    /* Tokens and generation defaults (generation_config.json over config.json). */
    int32_t bos_token_id; /* -1: none */
    int32_t pad_token_id; /* -1: none */
    int32_t n_eos;
    int32_t eos_token_ids[FP8_MAX_EOS];
    float default_temperature; /* 1, top_p 1 and top_k 0 (off) when not given */
    float default_top_p;
    int32_t default_top_k;

    char torch_dtype[16]; /* "bfloat16", "float16", "float32" */
};

/* Parses DIR/config.json and, when present, DIR/generation_config.json. Unsupported
 * architectures, activations, rope types or flags (e.g. attention_bias) fail with a
 * message naming the key and what is supported. *out is untouched on failure. */
int fp8_model_config_load(const char *dir, struct fp8_model_config *out, struct fp8_err *err);

/* The same from JSON text already in memory (generation_json may be NULL). */
int fp8_model_config_parse(const char *config_json, const char *generation_json,
                           struct fp8_model_config *out, struct fp8_err *err);

/* The exact shapes of a real model ("qwen3-0.6b", "qwen3-8b", "qwen3-30b-a3b",
 * "gemma3-1b", "gemma3-27b", ...) and tiny presets for tests ("qwen3-tiny",
 * "qwen3-moe-tiny", "gemma3-tiny"). -ENOENT for unknown names. */
int fp8_model_config_preset(const char *name, struct fp8_model_config *out, struct fp8_err *err);

/* A preset's config.json and generation_config.json text in the Hub's own style (what
 * fp8_model_config_preset parses). -ENOENT for unknown names. */
int fp8_model_config_preset_json(const char *name, const char **config_json,
                                 const char **generation_json);

/* Every preset name, NULL-terminated. */
extern const char *const fp8_model_config_preset_names[];

#endif
