#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/numeric.h"
#include "engine/files.h"

#define CONFIG_MAX_BYTES (16u << 20)

static const char *const supported_archs =
    "Qwen3ForCausalLM, Qwen3MoeForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration";

/* Where keys are looked up: the text config first (Gemma3ForConditionalGeneration's
 * text_config, else the root), then the root for keys transformers keeps at the top. */
struct src {
    const json_t *text;
    const json_t *root;
    const char *arch; /* for messages */
};

static const json_t *src_get(const struct src *s, const char *key)
{
    const json_t *v = json_object_get(s->text, key);
    if (!v && s->root != s->text)
        v = json_object_get(s->root, key);
    return v;
}

/* An integer key in [min, max]; absent or null takes def, unless required. */
static int get_int(const struct src *s, const char *key, bool required, int64_t def, int64_t min,
                   int64_t max, int32_t *out, struct fp8_err *err)
{
    const json_t *v = src_get(s, key);
    int64_t x = def;
    if (!v || json_is_null(v)) {
        if (required)
            return fp8_err_set(err, -EINVAL, "\"%s\" missing (required for %s)", key, s->arch);
    } else if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else {
        return fp8_err_set(err, -EINVAL, "\"%s\" is not an integer", key);
    }
    if (x < min || x > max)
        return fp8_err_set(err, -EINVAL, "\"%s\" is %lld, outside the supported range [%lld, %lld]",
                           key, (long long)x, (long long)min, (long long)max);
    *out = (int32_t)x;
    return 0;
}

/* A number key; absent or null takes def. Must be finite and > 0 when positive is set. */
static int get_float(const struct src *s, const char *key, double def, bool positive, float *out,
                     struct fp8_err *err)
{
    const json_t *v = src_get(s, key);
    double x = def;
    if (v && !json_is_null(v)) {
        if (!json_is_number(v))
            return fp8_err_set(err, -EINVAL, "\"%s\" is not a number", key);
        x = json_number_value(v);
    }
    if (!isfinite(x) || (positive && !(x > 0)) || fabs(x) > 3.0e38)
        return fp8_err_set(err, -EINVAL, "\"%s\" is %g; it must be a finite%s number", key, x,
                           positive ? " positive" : "");
    *out = (float)x;
    return 0;
}

static int get_bool(const struct src *s, const char *key, bool def, bool *out, struct fp8_err *err)
{
    const json_t *v = src_get(s, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return fp8_err_set(err, -EINVAL, "\"%s\" is not true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int parse_act(const struct src *s, enum fp8_act def, enum fp8_act *out, struct fp8_err *err)
{
    const char *key = "hidden_activation";
    const json_t *v = src_get(s, key);
    if (!v || json_is_null(v)) {
        key = "hidden_act";
        v = src_get(s, key);
    }
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    const char *name = json_string_value(v);
    if (name && !strcmp(name, "silu"))
        *out = FP8_ACT_SILU;
    else if (name && !strcmp(name, "gelu_pytorch_tanh"))
        *out = FP8_ACT_GELU_TANH;
    else
        return fp8_err_set(err, -EINVAL, "\"%s\": unsupported activation \"%.40s\" (supported: "
                           "silu, gelu_pytorch_tanh)", key, name ? name : "(not a string)");
    return 0;
}

/* One rope description: {"rope_type" (or "type"): "default"|"linear", "factor": F,
 * "rope_theta": T}. theta keeps its value unless the object carries rope_theta. */
static int parse_rope_obj(const json_t *o, const char *key, struct fp8_rope *r, struct fp8_err *err)
{
    if (!o || json_is_null(o))
        return 0;
    if (!json_is_object(o))
        return fp8_err_set(err, -EINVAL, "\"%s\" is not an object", key);
    const json_t *t = json_object_get(o, "rope_type");
    if (!t)
        t = json_object_get(o, "type");
    const char *type = t ? json_string_value(t) : "default";
    if (!type)
        return fp8_err_set(err, -EINVAL, "\"%s\": \"rope_type\" is not a string", key);
    const json_t *theta = json_object_get(o, "rope_theta");
    if (theta) {
        if (!json_is_number(theta) || !(json_number_value(theta) > 0) ||
            !isfinite(json_number_value(theta)))
            return fp8_err_set(err, -EINVAL, "\"%s\": \"rope_theta\" is not a positive number", key);
        r->theta = (float)json_number_value(theta);
    }
    if (!strcmp(type, "default")) {
        r->type = FP8_ROPE_DEFAULT;
        r->factor = 1.0f;
    } else if (!strcmp(type, "linear")) {
        const json_t *f = json_object_get(o, "factor");
        if (!json_is_number(f) || !(json_number_value(f) >= 1.0) || json_number_value(f) > 1e6)
            return fp8_err_set(err, -EINVAL, "\"%s\": linear rope needs a \"factor\" >= 1", key);
        r->type = FP8_ROPE_LINEAR;
        r->factor = (float)json_number_value(f);
    } else {
        return fp8_err_set(err, -EINVAL, "\"%s\": rope type \"%.32s\" is not supported%s "
                           "(supported: default, linear)", key, type,
                           !strcmp(type, "llama3") || !strcmp(type, "yarn") ? " yet" : "");
    }
    return 0;
}

static int parse_token_ids(const json_t *v, const char *key, int32_t vocab, int32_t *ids,
                           int32_t max, int32_t *n, struct fp8_err *err)
{
    if (json_is_integer(v)) {
        ids[0] = (int32_t)json_integer_value(v);
        if (json_integer_value(v) < 0 || json_integer_value(v) >= vocab)
            return fp8_err_set(err, -EINVAL, "\"%s\" %lld is outside the vocabulary (%d)", key,
                               (long long)json_integer_value(v), vocab);
        *n = 1;
        return 0;
    }
    if (!json_is_array(v))
        return fp8_err_set(err, -EINVAL, "\"%s\" is not an integer or a list of integers", key);
    if (json_array_size(v) > (size_t)max)
        return fp8_err_set(err, -EINVAL, "\"%s\" lists %zu ids (at most %d supported)", key,
                           json_array_size(v), max);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *x = json_array_get(v, i);
        if (!json_is_integer(x))
            return fp8_err_set(err, -EINVAL, "\"%s\" is not an integer or a list of integers", key);
        if (json_integer_value(x) < 0 || json_integer_value(x) >= vocab)
            return fp8_err_set(err, -EINVAL, "\"%s\" %lld is outside the vocabulary (%d)", key,
                               (long long)json_integer_value(x), vocab);
        ids[i] = (int32_t)json_integer_value(x);
    }
    *n = (int32_t)json_array_size(v);
    return 0;
}

/* bos/pad: one id or null (-1). */
static int parse_one_token(const json_t *v, const char *key, int32_t vocab, int32_t *out,
                           struct fp8_err *err)
{
    int32_t n = 0, id = -1;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return fp8_err_set(err, -EINVAL, "\"%s\" is not an integer", key);
    int rc = parse_token_ids(v, key, vocab, &id, 1, &n, err);
    if (rc < 0)
        return rc;
    *out = id;
    return 0;
}

static int parse_dtype(const struct src *s, struct fp8_model_config *c, struct fp8_err *err)
{
    const json_t *v = src_get(s, "dtype"); /* transformers 5 */
    const char *key = "dtype";
    if (!v || json_is_null(v)) {
        v = src_get(s, "torch_dtype");
        key = "torch_dtype";
    }
    const char *d = v && !json_is_null(v) ? json_string_value(v) : "float32";
    if (!d || (strcmp(d, "bfloat16") && strcmp(d, "float16") && strcmp(d, "float32")))
        return fp8_err_set(err, -EINVAL, "\"%s\": unsupported model dtype \"%.32s\" (supported: "
                           "bfloat16, float16, float32)", key, d ? d : "(not a string)");
    snprintf(c->torch_dtype, sizeof(c->torch_dtype), "%s", d);
    return 0;
}

/* The dimensions every architecture shares. */
static int parse_common(const struct src *s, struct fp8_model_config *c, int64_t vocab_def,
                        int64_t max_pos_def, bool tie_def, struct fp8_err *err)
{
    int rc;
    int32_t n_kv = 0;
    if ((rc = get_int(s, "vocab_size", vocab_def < 0, vocab_def, 1, 1 << 24, &c->vocab_size, err)) < 0 ||
        (rc = get_int(s, "hidden_size", true, 0, 1, 1 << 16, &c->hidden_size, err)) < 0 ||
        (rc = get_int(s, "intermediate_size", true, 0, 1, 1 << 20, &c->intermediate_size, err)) < 0 ||
        (rc = get_int(s, "num_hidden_layers", true, 0, 1, FP8_MAX_LAYERS, &c->n_layers, err)) < 0 ||
        (rc = get_int(s, "num_attention_heads", true, 0, 1, 1024, &c->n_heads, err)) < 0 ||
        (rc = get_int(s, "num_key_value_heads", false, 0, 0, 1024, &n_kv, err)) < 0 ||
        (rc = get_int(s, "max_position_embeddings", false, max_pos_def, 1, 1 << 30,
                      &c->max_position_embeddings, err)) < 0 ||
        (rc = get_float(s, "rms_norm_eps", 1e-6, true, &c->rms_norm_eps, err)) < 0 ||
        (rc = get_bool(s, "tie_word_embeddings", tie_def, &c->tie_word_embeddings, err)) < 0 ||
        (rc = parse_dtype(s, c, err)) < 0)
        return rc;
    /* transformers: a missing num_key_value_heads means plain multi-head attention. */
    c->n_kv_heads = n_kv ? n_kv : c->n_heads;
    if (c->n_heads % c->n_kv_heads)
        return fp8_err_set(err, -EINVAL, "\"num_attention_heads\" %d is not a multiple of "
                           "\"num_key_value_heads\" %d", c->n_heads, c->n_kv_heads);
    bool bias;
    if ((rc = get_bool(s, "attention_bias", false, &bias, err)) < 0)
        return rc;
    if (bias)
        return fp8_err_set(err, -EINVAL, "\"attention_bias\": true is not supported (%s "
                           "checkpoints have no attention biases)", s->arch);
    return 0;
}

/* Qwen3: sliding-window attention is off in every released checkpoint. */
static int parse_qwen3(const struct src *s, struct fp8_model_config *c, struct fp8_err *err)
{
    int rc;
    bool sliding;
    if ((rc = parse_common(s, c, -1, 32768, false, err)) < 0 ||
        (rc = get_int(s, "head_dim", true, 0, 1, 1024, &c->head_dim, err)) < 0 ||
        (rc = parse_act(s, FP8_ACT_SILU, &c->act, err)) < 0 ||
        (rc = get_bool(s, "use_sliding_window", false, &sliding, err)) < 0)
        return rc;
    if (sliding)
        return fp8_err_set(err, -EINVAL, "\"use_sliding_window\": true is not supported for %s",
                           s->arch);
    const json_t *lt = src_get(s, "layer_types");
    for (size_t i = 0; json_is_array(lt) && i < json_array_size(lt); i++)
        if (!json_is_string(json_array_get(lt, i)) ||
            strcmp(json_string_value(json_array_get(lt, i)), "full_attention"))
            return fp8_err_set(err, -EINVAL, "\"layer_types\"[%zu]: only \"full_attention\" is "
                               "supported for %s", i, s->arch);

    c->rope = (struct fp8_rope){FP8_ROPE_DEFAULT, 10000.0f, 1.0f};
    if ((rc = get_float(s, "rope_theta", 10000.0, true, &c->rope.theta, err)) < 0 ||
        (rc = parse_rope_obj(src_get(s, "rope_scaling"), "rope_scaling", &c->rope, err)) < 0 ||
        (rc = parse_rope_obj(src_get(s, "rope_parameters"), "rope_parameters", &c->rope, err)) < 0)
        return rc;
    c->rope_local = c->rope;
    c->query_pre_attn_scalar = (float)c->head_dim;
    c->embed_scale = 1.0f;
    return 0;
}

static int parse_qwen3_moe(const struct src *s, struct fp8_model_config *c, struct fp8_err *err)
{
    int rc = parse_qwen3(s, c, err);
    int32_t step;
    if (rc < 0 ||
        (rc = get_int(s, "num_experts", true, 0, 0, 1024, &c->n_experts, err)) < 0 ||
        (rc = get_int(s, "num_experts_per_tok", true, 0, 1, 1024, &c->n_experts_per_tok, err)) < 0 ||
        (rc = get_int(s, "moe_intermediate_size", true, 0, 1, 1 << 20, &c->moe_intermediate_size,
                      err)) < 0 ||
        (rc = get_int(s, "decoder_sparse_step", false, 1, 1, FP8_MAX_LAYERS, &step, err)) < 0 ||
        (rc = get_bool(s, "norm_topk_prob", false, &c->norm_topk_prob, err)) < 0)
        return rc;
    if (c->n_experts > 0 && c->n_experts_per_tok > c->n_experts)
        return fp8_err_set(err, -EINVAL, "\"num_experts_per_tok\" %d exceeds \"num_experts\" %d",
                           c->n_experts_per_tok, c->n_experts);
    bool dense_only[FP8_MAX_LAYERS] = {false};
    const json_t *mlp_only = src_get(s, "mlp_only_layers");
    if (mlp_only && !json_is_null(mlp_only)) {
        if (!json_is_array(mlp_only))
            return fp8_err_set(err, -EINVAL, "\"mlp_only_layers\" is not a list of layer indices");
        for (size_t i = 0; i < json_array_size(mlp_only); i++) {
            const json_t *x = json_array_get(mlp_only, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                json_integer_value(x) >= c->n_layers)
                return fp8_err_set(err, -EINVAL, "\"mlp_only_layers\"[%zu] is not a layer index "
                                   "below %d", i, c->n_layers);
            dense_only[json_integer_value(x)] = true;
        }
    }
    /* transformers' Qwen3MoeDecoderLayer: sparse iff not listed, experts exist, and
     * (i + 1) is a multiple of decoder_sparse_step. */
    for (int32_t i = 0; i < c->n_layers; i++)
        c->layers[i].moe = !dense_only[i] && c->n_experts > 0 && (i + 1) % step == 0;
    return 0;
}

/* Gemma3: the text model alone, or the text part of the multimodal checkpoint. */
static int parse_gemma3(const struct src *s, struct fp8_model_config *c, struct fp8_err *err)
{
    int rc;
    int32_t pattern;
    if ((rc = parse_common(s, c, 262208, 131072, true, err)) < 0 ||
        (rc = get_int(s, "head_dim", false, 256, 1, 1024, &c->head_dim, err)) < 0 ||
        (rc = parse_act(s, FP8_ACT_GELU_TANH, &c->act, err)) < 0 ||
        (rc = get_int(s, "sliding_window", false, 4096, 1, 1 << 30, &c->sliding_window, err)) < 0 ||
        (rc = get_int(s, "sliding_window_pattern", false, 6, 1, FP8_MAX_LAYERS, &pattern, err)) < 0 ||
        (rc = get_float(s, "query_pre_attn_scalar", 256, true, &c->query_pre_attn_scalar, err)) < 0 ||
        (rc = get_float(s, "final_logit_softcapping", 0, false, &c->final_logit_softcapping, err)) < 0)
        return rc;
    if (c->final_logit_softcapping < 0)
        return fp8_err_set(err, -EINVAL, "\"final_logit_softcapping\" is negative");
    const json_t *attn_cap = src_get(s, "attn_logit_softcapping");
    if (attn_cap && !json_is_null(attn_cap))
        return fp8_err_set(err, -EINVAL, "\"attn_logit_softcapping\" is set; attention logit "
                           "soft-capping is not supported (it must be null, as in every Gemma3 "
                           "checkpoint)");

    const json_t *lt = src_get(s, "layer_types");
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt) || json_array_size(lt) != (size_t)c->n_layers)
            return fp8_err_set(err, -EINVAL, "\"layer_types\" is not a list of %d layer types",
                               c->n_layers);
        for (int32_t i = 0; i < c->n_layers; i++) {
            const char *t = json_string_value(json_array_get(lt, (size_t)i));
            if (t && !strcmp(t, "sliding_attention"))
                c->layers[i].sliding = true;
            else if (!t || strcmp(t, "full_attention"))
                return fp8_err_set(err, -EINVAL, "\"layer_types\"[%d] is not \"sliding_attention\" "
                                   "or \"full_attention\"", i);
        }
    } else {
        for (int32_t i = 0; i < c->n_layers; i++)
            c->layers[i].sliding = (i + 1) % pattern != 0;
    }

    /* Global layers: rope_theta with rope_scaling; local layers: rope_local_base_freq,
     * never scaled. transformers 5 keeps both in rope_parameters, keyed by layer type. */
    c->rope = (struct fp8_rope){FP8_ROPE_DEFAULT, 1e6f, 1.0f};
    c->rope_local = (struct fp8_rope){FP8_ROPE_DEFAULT, 1e4f, 1.0f};
    if ((rc = get_float(s, "rope_theta", 1e6, true, &c->rope.theta, err)) < 0 ||
        (rc = get_float(s, "rope_local_base_freq", 1e4, true, &c->rope_local.theta, err)) < 0 ||
        (rc = parse_rope_obj(src_get(s, "rope_scaling"), "rope_scaling", &c->rope, err)) < 0)
        return rc;
    const json_t *rp = src_get(s, "rope_parameters");
    if (json_is_object(rp) && (json_object_get(rp, "full_attention") ||
                               json_object_get(rp, "sliding_attention"))) {
        if ((rc = parse_rope_obj(json_object_get(rp, "full_attention"),
                                 "rope_parameters.full_attention", &c->rope, err)) < 0 ||
            (rc = parse_rope_obj(json_object_get(rp, "sliding_attention"),
                                 "rope_parameters.sliding_attention", &c->rope_local, err)) < 0)
            return rc;
    } else if ((rc = parse_rope_obj(rp, "rope_parameters", &c->rope, err)) < 0) {
        return rc;
    }
    if (c->rope_local.type != FP8_ROPE_DEFAULT)
        return fp8_err_set(err, -EINVAL, "rope scaling on sliding-window layers is not supported");

    /* transformers multiplies by embed_scale.to(weight.dtype): sqrt(hidden) rounded to the
     * model dtype. */
    float scale = (float)sqrt((double)c->hidden_size);
    if (!strcmp(c->torch_dtype, "bfloat16"))
        scale = bf16_to_f32(f32_to_bf16(scale));
    else if (!strcmp(c->torch_dtype, "float16"))
        scale = f16_to_f32(f32_to_f16(scale));
    c->embed_scale = scale;
    c->norm_plus_one = true;
    /* Gemma3TextConfig's token defaults. */
    c->bos_token_id = 2;
    c->pad_token_id = 0;
    c->n_eos = 1;
    c->eos_token_ids[0] = 1;
    return 0;
}

/* Token ids and sampling defaults: generation_config.json over config.json (text config
 * first, then root) over the architecture's defaults already in c. */
static int parse_tokens(const struct src *s, const json_t *gen, struct fp8_model_config *c,
                        struct fp8_err *err)
{
    static const char *const keys[3] = {"bos_token_id", "pad_token_id", "eos_token_id"};
    int rc;
    for (int k = 0; k < 3; k++) {
        const json_t *v = gen ? json_object_get(gen, keys[k]) : NULL;
        bool from_gen = v != NULL;
        if (!v)
            v = src_get(s, keys[k]);
        if (!v)
            continue;
        if (k == 0)
            rc = parse_one_token(v, keys[k], c->vocab_size, &c->bos_token_id, err);
        else if (k == 1)
            rc = parse_one_token(v, keys[k], c->vocab_size, &c->pad_token_id, err);
        else if (json_is_null(v))
            c->n_eos = 0, rc = 0;
        else
            rc = parse_token_ids(v, keys[k], c->vocab_size, c->eos_token_ids, FP8_MAX_EOS,
                                 &c->n_eos, err);
        if (rc < 0)
            return fp8_err_prefix(err, rc, "%s", from_gen ? "generation_config" : "config");
        if (k < 2 && json_is_null(v))
            *(k == 0 ? &c->bos_token_id : &c->pad_token_id) = -1;
    }
    c->default_temperature = 1.0f;
    c->default_top_p = 1.0f;
    c->default_top_k = 0;
    if (!gen)
        return 0;
    const struct src g = {gen, gen, "generation_config"};
    if ((rc = get_float(&g, "temperature", 1.0, false, &c->default_temperature, err)) < 0 ||
        (rc = get_float(&g, "top_p", 1.0, false, &c->default_top_p, err)) < 0 ||
        (rc = get_int(&g, "top_k", false, 0, 0, 1 << 24, &c->default_top_k, err)) < 0)
        return fp8_err_prefix(err, rc, "generation_config");
    if (c->default_temperature < 0 || c->default_top_p <= 0 || c->default_top_p > 1)
        return fp8_err_set(err, -EINVAL, "generation_config: temperature %g or top_p %g out of "
                           "range", c->default_temperature, c->default_top_p);
    return 0;
}

static json_t *parse_json(const char *text, const char *what, struct fp8_err *err)
{
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        fp8_err_set(err, -EINVAL, "%s: malformed JSON at line %d column %d: %s", what, je.line,
                    je.column, je.text);
    else if (!json_is_object(root)) {
        fp8_err_set(err, -EINVAL, "%s: not a JSON object", what);
        json_decref(root);
        root = NULL;
    }
    return root;
}

int fp8_model_config_parse(const char *config_json, const char *generation_json,
                           struct fp8_model_config *out, struct fp8_err *err)
{
    json_t *root = NULL, *gen = NULL;
    struct fp8_model_config *c = NULL;
    int rc;

    if (!config_json || !out)
        return fp8_err_set(err, -EINVAL, "fp8_model_config_parse: NULL argument");
    c = calloc(1, sizeof(*c));
    if (!c)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    root = parse_json(config_json, "config", err);
    if (!root) {
        rc = -EINVAL;
        goto fail;
    }
    if (generation_json) {
        gen = parse_json(generation_json, "generation_config", err);
        if (!gen) {
            rc = -EINVAL;
            goto fail;
        }
    }

    const json_t *archs = json_object_get(root, "architectures");
    const char *arch = json_string_value(json_array_get(archs, 0));
    if (!arch) {
        rc = fp8_err_set(err, -EINVAL, "config: \"architectures\" missing or empty (supported: %s)",
                         supported_archs);
        goto fail;
    }
    snprintf(c->arch_name, sizeof(c->arch_name), "%s", arch);
    struct src s = {root, root, c->arch_name};
    c->bos_token_id = -1;
    c->pad_token_id = -1;
    if (!strcmp(arch, "Qwen3ForCausalLM")) {
        c->arch = FP8_ARCH_QWEN3;
        rc = parse_qwen3(&s, c, err);
    } else if (!strcmp(arch, "Qwen3MoeForCausalLM")) {
        c->arch = FP8_ARCH_QWEN3_MOE;
        rc = parse_qwen3_moe(&s, c, err);
    } else if (!strcmp(arch, "Gemma3ForCausalLM")) {
        c->arch = FP8_ARCH_GEMMA3;
        rc = parse_gemma3(&s, c, err);
    } else if (!strcmp(arch, "Gemma3ForConditionalGeneration")) {
        c->arch = FP8_ARCH_GEMMA3;
        s.text = json_object_get(root, "text_config");
        if (!json_is_object(s.text)) {
            rc = fp8_err_set(err, -EINVAL, "config: \"text_config\" missing (required for %s)",
                             arch);
            goto fail;
        }
        rc = parse_gemma3(&s, c, err);
    } else {
        rc = fp8_err_set(err, -EINVAL, "config: unsupported architecture \"%.64s\" (supported: %s)",
                         arch, supported_archs);
        goto fail;
    }
    if (rc < 0) {
        fp8_err_prefix(err, rc, "config");
        goto fail;
    }
    rc = parse_tokens(&s, gen, c, err);
    if (rc < 0)
        goto fail;

    bool multimodal = s.text != s.root;
    snprintf(c->tensor_prefix, sizeof(c->tensor_prefix), "%s",
             multimodal ? "language_model.model." : "model.");
    snprintf(c->lm_head_name, sizeof(c->lm_head_name), "%s",
             c->tie_word_embeddings ? "" : multimodal ? "language_model.lm_head.weight"
                                                      : "lm_head.weight");
    json_decref(root);
    json_decref(gen);
    *out = *c;
    free(c);
    return 0;

fail:
    json_decref(root);
    json_decref(gen);
    free(c);
    return rc;
}

int fp8_model_config_load(const char *dir, struct fp8_model_config *out, struct fp8_err *err)
{
    char *config_path = NULL, *gen_path = NULL, *config = NULL, *gen = NULL;
    int rc;
    if (!dir || !out)
        return fp8_err_set(err, -EINVAL, "fp8_model_config_load: NULL argument");
    config_path = fp8_path_join(dir, "config.json");
    gen_path = fp8_path_join(dir, "generation_config.json");
    if (!config_path || !gen_path) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    rc = fp8_file_read(config_path, CONFIG_MAX_BYTES, &config, NULL, err);
    if (rc < 0)
        goto out;
    rc = fp8_file_read(gen_path, CONFIG_MAX_BYTES, &gen, NULL, err);
    if (rc == -ENOENT)
        rc = 0;
    else if (rc < 0)
        goto out;
    rc = fp8_model_config_parse(config, gen, out, err);
    if (rc < 0)
        fp8_err_prefix(err, rc, "%s", dir);
out:
    free(config_path);
    free(gen_path);
    free(config);
    free(gen);
    return rc;
}

/* Presets are the Hub's own config.json and generation_config.json texts, so that a preset
 * and a downloaded checkpoint of the same model go through the same parser. Tiny presets
 * size their vocabulary to hold the real tokenizer (largest id + 1, rounded up to 64). */
struct preset {
    const char *name;
    const char *config;
    const char *generation;
};

#define QWEN3_GEN                                                                              \
    "{\"bos_token_id\":151643,\"do_sample\":true,\"eos_token_id\":[151645,151643],"          \
    "\"pad_token_id\":151643,\"temperature\":0.6,\"top_k\":20,\"top_p\":0.95,"              \
    "\"transformers_version\":\"4.51.0\"}"
#define GEMMA3_GEN                                                                             \
    "{\"bos_token_id\":2,\"cache_implementation\":\"hybrid\",\"do_sample\":true,"            \
    "\"eos_token_id\":[1,106],\"pad_token_id\":0,\"top_k\":64,\"top_p\":0.95,"              \
    "\"transformers_version\":\"4.50.0.dev0\"}"

static const struct preset presets[] = {
    {"qwen3-0.6b",
     "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,"
     "\"bos_token_id\":151643,\"eos_token_id\":151645,\"head_dim\":128,\"hidden_act\":\"silu\","
     "\"hidden_size\":1024,\"initializer_range\":0.02,\"intermediate_size\":3072,"
     "\"max_position_embeddings\":40960,\"max_window_layers\":28,\"model_type\":\"qwen3\","
     "\"num_attention_heads\":16,\"num_hidden_layers\":28,\"num_key_value_heads\":8,"
     "\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":1000000,\"sliding_window\":null,"
     "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.51.0\","
     "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}",
     QWEN3_GEN},
    {"qwen3-8b",
     "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,"
     "\"bos_token_id\":151643,\"eos_token_id\":151645,\"head_dim\":128,\"hidden_act\":\"silu\","
     "\"hidden_size\":4096,\"initializer_range\":0.02,\"intermediate_size\":12288,"
     "\"max_position_embeddings\":40960,\"max_window_layers\":36,\"model_type\":\"qwen3\","
     "\"num_attention_heads\":32,\"num_hidden_layers\":36,\"num_key_value_heads\":8,"
     "\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":1000000,\"sliding_window\":null,"
     "\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.51.0\","
     "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}",
     QWEN3_GEN},
    {"qwen3-30b-a3b",
     "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,"
     "\"bos_token_id\":151643,\"decoder_sparse_step\":1,\"eos_token_id\":151645,\"head_dim\":128,"
     "\"hidden_act\":\"silu\",\"hidden_size\":2048,\"initializer_range\":0.02,"
     "\"intermediate_size\":6144,\"max_position_embeddings\":40960,\"max_window_layers\":48,"
     "\"mlp_only_layers\":[],\"model_type\":\"qwen3_moe\",\"moe_intermediate_size\":768,"
     "\"norm_topk_prob\":true,\"num_attention_heads\":32,\"num_experts\":128,"
     "\"num_experts_per_tok\":8,\"num_hidden_layers\":48,\"num_key_value_heads\":4,"
     "\"output_router_logits\":false,\"rms_norm_eps\":1e-06,\"rope_scaling\":null,"
     "\"rope_theta\":1000000.0,\"router_aux_loss_coef\":0.001,\"sliding_window\":null,"
     "\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.51.0\","
     "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}",
     QWEN3_GEN},
    {"gemma3-1b",
     "{\"architectures\":[\"Gemma3ForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,"
     "\"attn_logit_softcapping\":null,\"bos_token_id\":2,\"cache_implementation\":\"hybrid\","
     "\"eos_token_id\":[1,106],\"final_logit_softcapping\":null,\"head_dim\":256,"
     "\"hidden_activation\":\"gelu_pytorch_tanh\",\"hidden_size\":1152,\"initializer_range\":0.02,"
     "\"intermediate_size\":6912,\"max_position_embeddings\":32768,\"model_type\":\"gemma3_text\","
     "\"num_attention_heads\":4,\"num_hidden_layers\":26,\"num_key_value_heads\":1,"
     "\"pad_token_id\":0,\"query_pre_attn_scalar\":256,\"rms_norm_eps\":1e-06,"
     "\"rope_local_base_freq\":10000,\"rope_scaling\":null,\"rope_theta\":1000000,"
     "\"sliding_window\":512,\"sliding_window_pattern\":6,\"torch_dtype\":\"bfloat16\","
     "\"transformers_version\":\"4.50.0.dev0\",\"use_cache\":true,\"vocab_size\":262144}",
     GEMMA3_GEN},
    {"gemma3-27b",
     "{\"architectures\":[\"Gemma3ForConditionalGeneration\"],\"boi_token_index\":255999,"
     "\"eoi_token_index\":256000,\"eos_token_id\":[1,106],\"image_token_index\":262144,"
     "\"initializer_range\":0.02,\"mm_tokens_per_image\":256,\"model_type\":\"gemma3\","
     "\"text_config\":{\"head_dim\":128,\"hidden_size\":5376,\"intermediate_size\":21504,"
     "\"model_type\":\"gemma3_text\",\"num_attention_heads\":32,\"num_hidden_layers\":62,"
     "\"num_key_value_heads\":16,\"query_pre_attn_scalar\":168,"
     "\"rope_scaling\":{\"factor\":8.0,\"rope_type\":\"linear\"},\"sliding_window\":1024},"
     "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.50.0.dev0\","
     "\"vision_config\":{\"hidden_size\":1152,\"image_size\":896,\"intermediate_size\":4304,"
     "\"model_type\":\"siglip_vision_model\",\"num_attention_heads\":16,\"num_hidden_layers\":27,"
     "\"patch_size\":14,\"vision_use_head\":false}}",
     GEMMA3_GEN},
    {"qwen3-tiny",
     "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,\"bos_token_id\":151643,"
     "\"eos_token_id\":151645,\"head_dim\":32,\"hidden_act\":\"silu\",\"hidden_size\":64,"
     "\"intermediate_size\":128,\"max_position_embeddings\":4096,\"model_type\":\"qwen3\","
     "\"num_attention_heads\":4,\"num_hidden_layers\":2,\"num_key_value_heads\":2,"
     "\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":1000000,"
     "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"use_sliding_window\":false,"
     "\"vocab_size\":151680}",
     QWEN3_GEN},
    {"qwen3-moe-tiny",
     "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"attention_bias\":false,\"bos_token_id\":151643,"
     "\"decoder_sparse_step\":1,\"eos_token_id\":151645,\"head_dim\":16,\"hidden_act\":\"silu\","
     "\"hidden_size\":64,\"intermediate_size\":128,\"max_position_embeddings\":4096,"
     "\"mlp_only_layers\":[1],\"model_type\":\"qwen3_moe\",\"moe_intermediate_size\":32,"
     "\"norm_topk_prob\":true,\"num_attention_heads\":4,\"num_experts\":8,"
     "\"num_experts_per_tok\":2,\"num_hidden_layers\":3,\"num_key_value_heads\":2,"
     "\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":1000000.0,"
     "\"tie_word_embeddings\":false,\"torch_dtype\":\"bfloat16\",\"use_sliding_window\":false,"
     "\"vocab_size\":151680}",
     QWEN3_GEN},
    {"gemma3-tiny",
     "{\"architectures\":[\"Gemma3ForCausalLM\"],\"attention_bias\":false,"
     "\"attn_logit_softcapping\":null,\"bos_token_id\":2,\"eos_token_id\":[1,106],"
     "\"final_logit_softcapping\":null,\"head_dim\":32,\"hidden_activation\":\"gelu_pytorch_tanh\","
     "\"hidden_size\":64,\"intermediate_size\":128,"
     "\"layer_types\":[\"sliding_attention\",\"sliding_attention\",\"full_attention\","
     "\"sliding_attention\"],\"max_position_embeddings\":4096,\"model_type\":\"gemma3_text\","
     "\"num_attention_heads\":4,\"num_hidden_layers\":4,\"num_key_value_heads\":2,"
     "\"pad_token_id\":0,\"query_pre_attn_scalar\":16,\"rms_norm_eps\":1e-06,"
     "\"rope_local_base_freq\":10000.0,\"rope_scaling\":{\"factor\":8.0,\"rope_type\":\"linear\"},"
     "\"rope_theta\":1000000.0,\"sliding_window\":8,\"sliding_window_pattern\":3,"
     "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"vocab_size\":262208}",
     GEMMA3_GEN},
};

const char *const fp8_model_config_preset_names[] = {
    "qwen3-0.6b", "qwen3-8b", "qwen3-30b-a3b", "gemma3-1b", "gemma3-27b",
    "qwen3-tiny", "qwen3-moe-tiny", "gemma3-tiny", NULL,
};

int fp8_model_config_preset_json(const char *name, const char **config_json,
                                 const char **generation_json)
{
    for (size_t i = 0; name && i < sizeof(presets) / sizeof(presets[0]); i++)
        if (!strcmp(presets[i].name, name)) {
            if (config_json)
                *config_json = presets[i].config;
            if (generation_json)
                *generation_json = presets[i].generation;
            return 0;
        }
    return -ENOENT;
}

int fp8_model_config_preset(const char *name, struct fp8_model_config *out, struct fp8_err *err)
{
    const char *config, *gen;
    if (fp8_model_config_preset_json(name, &config, &gen) < 0) {
        char list[256] = "";
        size_t used = 0;
        for (int i = 0; fp8_model_config_preset_names[i] && used < sizeof(list); i++)
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
                                     fp8_model_config_preset_names[i]);
        return fp8_err_set(err, -ENOENT, "unknown preset \"%.64s\" (known: %s)",
                           name ? name : "(null)", list);
    }
    int rc = fp8_model_config_parse(config, gen, out, err);
    return rc < 0 ? fp8_err_prefix(err, rc, "preset %s", name) : 0;
}
