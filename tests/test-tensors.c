/* Expected tensors per config, the checkpoint check with one crafted defect at a time, the
 * tensor-prefix resolution, and the weight source (synthetic values against an independent
 * implementation of the documented generator; a mkmodel checkpoint against the synthetic
 * weights of the same seed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/config.h"
#include "engine/mkmodel.h"
#include "engine/safetensors_write.h"
#include "engine/tensors.h"
#include "engine/weights.h"
#include "tests/test_util.h"
#include "tests/tmpdir.h"

/* vocab 32, hidden 16, intermediate 24, 2 layers, 2 heads of 8, 1 kv head, untied. */
static const char small_qwen3[] =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"head_dim\": 8, \"hidden_size\": 16, "
    "\"intermediate_size\": 24, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"num_hidden_layers\": 2, \"vocab_size\": 32, \"tie_word_embeddings\": false}";

static struct fp8_model_config parse(const char *json)
{
    struct fp8_model_config c;
    struct fp8_err err = {{0}};
    if (fp8_model_config_parse(json, NULL, &c, &err) != 0)
        fail_msg("%s", err.msg);
    return c;
}

static void expect_spec(const struct fp8_tensor_spec *s, const char *name, int64_t d0, int64_t d1)
{
    assert_string_equal(s->name, name);
    assert_int_equal(s->n_dims, d1 ? 2 : 1);
    assert_int_equal(s->shape[0], d0);
    if (d1)
        assert_int_equal(s->shape[1], d1);
}

static void test_specs_qwen3(void **state)
{
    (void)state;
    struct fp8_model_config c = parse(small_qwen3);
    struct fp8_tensor_spec *s = NULL;
    struct fp8_err err;
    /* embed + 2 x 11 + norm + lm_head */
    assert_int_equal(fp8_tensor_specs(&c, &s, &err), 25);
    expect_spec(&s[0], "model.embed_tokens.weight", 32, 16);
    expect_spec(&s[1], "model.layers.0.input_layernorm.weight", 16, 0);
    expect_spec(&s[2], "model.layers.0.self_attn.q_proj.weight", 16, 16); /* 2 heads x 8 */
    expect_spec(&s[3], "model.layers.0.self_attn.k_proj.weight", 8, 16);
    expect_spec(&s[4], "model.layers.0.self_attn.v_proj.weight", 8, 16);
    expect_spec(&s[5], "model.layers.0.self_attn.o_proj.weight", 16, 16);
    expect_spec(&s[6], "model.layers.0.self_attn.q_norm.weight", 8, 0);
    expect_spec(&s[7], "model.layers.0.self_attn.k_norm.weight", 8, 0);
    expect_spec(&s[8], "model.layers.0.post_attention_layernorm.weight", 16, 0);
    expect_spec(&s[9], "model.layers.0.mlp.gate_proj.weight", 24, 16);
    expect_spec(&s[10], "model.layers.0.mlp.up_proj.weight", 24, 16);
    expect_spec(&s[11], "model.layers.0.mlp.down_proj.weight", 16, 24);
    expect_spec(&s[12], "model.layers.1.input_layernorm.weight", 16, 0);
    expect_spec(&s[23], "model.norm.weight", 16, 0);
    expect_spec(&s[24], "lm_head.weight", 32, 16);
    /* 2 x 512 embeddings + 2 x (16+16+8+8 norms + 256+128+128+256 attn + 3 x 384 mlp) + 16 */
    assert_int_equal(fp8_tensor_specs_n_params(s, 25), 1024 + 2 * (48 + 768 + 1152) + 16);
    free(s);
}

static void test_specs_moe_gemma(void **state)
{
    (void)state;
    struct fp8_model_config c;
    struct fp8_tensor_spec *s = NULL;
    struct fp8_err err;
    /* qwen3-moe-tiny: 3 layers, layer 1 dense, 8 experts of 32, hidden 64, untied. */
    assert_int_equal(fp8_model_config_preset("qwen3-moe-tiny", &c, &err), 0);
    /* embed + sparse (8 + 1 router + 24) + dense 11 + sparse 33 + norm + lm_head */
    assert_int_equal(fp8_tensor_specs(&c, &s, &err), 1 + 33 + 11 + 33 + 2);
    expect_spec(&s[9], "model.layers.0.mlp.gate.weight", 8, 64);
    expect_spec(&s[10], "model.layers.0.mlp.experts.0.gate_proj.weight", 32, 64);
    expect_spec(&s[11], "model.layers.0.mlp.experts.0.up_proj.weight", 32, 64);
    expect_spec(&s[12], "model.layers.0.mlp.experts.0.down_proj.weight", 64, 32);
    expect_spec(&s[33], "model.layers.0.mlp.experts.7.down_proj.weight", 64, 32);
    expect_spec(&s[34 + 8], "model.layers.1.mlp.gate_proj.weight", 128, 64);
    free(s);

    /* gemma3-tiny: four norms a layer, tied. */
    assert_int_equal(fp8_model_config_preset("gemma3-tiny", &c, &err), 0);
    assert_int_equal(fp8_tensor_specs(&c, &s, &err), 1 + 4 * 13 + 1);
    expect_spec(&s[9], "model.layers.0.pre_feedforward_layernorm.weight", 64, 0);
    expect_spec(&s[10], "model.layers.0.post_feedforward_layernorm.weight", 64, 0);
    expect_spec(&s[6], "model.layers.0.self_attn.q_norm.weight", 32, 0);
    expect_spec(&s[53], "model.norm.weight", 64, 0);
    free(s);
}

/* Writes a checkpoint holding the specs of c (after edit) into dir. */
struct ckpt {
    struct st_write_tensor t[64];
    char names[64][128];
    int32_t n;
};

static void ckpt_from_config(struct ckpt *k, const struct fp8_model_config *c)
{
    struct fp8_tensor_spec *s = NULL;
    struct fp8_err err;
    int32_t n = fp8_tensor_specs(c, &s, &err);
    assert_true(n > 0 && n <= 60);
    memset(k, 0, sizeof(*k));
    for (int32_t i = 0; i < n; i++) {
        snprintf(k->names[i], sizeof(k->names[i]), "%s", s[i].name);
        k->t[i] = (struct st_write_tensor){k->names[i], ST_DTYPE_BF16, s[i].n_dims,
                                           {s[i].shape[0], s[i].shape[1]}, NULL};
    }
    k->n = n;
    free(s);
}

static int32_t ckpt_find(struct ckpt *k, const char *name)
{
    for (int32_t i = 0; i < k->n; i++)
        if (!strcmp(k->names[i], name))
            return i;
    fail_msg("no %s", name);
    return -1;
}

static void ckpt_add(struct ckpt *k, const char *name, enum st_dtype dtype, int32_t n_dims,
                     int64_t d0, int64_t d1)
{
    snprintf(k->names[k->n], sizeof(k->names[0]), "%s", name);
    k->t[k->n] = (struct st_write_tensor){k->names[k->n], dtype, n_dims, {d0, d1}, NULL};
    k->n++;
}

static int fill_zero(void *ctx, int32_t i, uint64_t offset, void *buf, uint64_t n,
                     struct fp8_err *err)
{
    (void)ctx, (void)i, (void)offset, (void)err;
    memset(buf, 0, n);
    return 0;
}

struct lines {
    int n;
    char text[8][600];
};

static void collect(void *ctx, const char *line)
{
    struct lines *l = ctx;
    if (l->n < 8)
        snprintf(l->text[l->n], sizeof(l->text[0]), "%s", line);
    l->n++;
}

/* Writes k, opens it, checks it against c; returns the defect lines. */
static struct lines check_ckpt(struct ckpt *k, struct fp8_model_config *c,
                               struct fp8_tensors_report *r)
{
    char *dir = tmpdir_make();
    struct fp8_err err = {{0}};
    struct st_model *m = NULL;
    struct lines l = {0};
    assert_int_equal(st_model_write(dir, k->t, k->n, 0, fill_zero, NULL, &err), 1);
    assert_int_equal(st_model_open(dir, &m, &err), 0);
    if (fp8_tensors_resolve_prefix(c, m, &err) < 0)
        collect(&l, err.msg);
    else {
        int32_t n = fp8_tensors_check(c, m, r, collect, &l);
        assert_int_equal(n, l.n);
    }
    st_model_free(m);
    tmpdir_remove(dir);
    return l;
}

static void expect_one(struct lines l, const char *want)
{
    if (l.n != 1 || !strstr(l.text[0], want))
        fail_msg("%d defects, first \"%s\"; expected exactly one containing \"%s\"", l.n,
                 l.n ? l.text[0] : "", want);
}

static void expect_none(struct lines l)
{
    if (l.n)
        fail_msg("%d defects, first \"%s\"", l.n, l.text[0]);
}

static void test_check_defects(void **state)
{
    (void)state;
    struct fp8_model_config c = parse(small_qwen3);
    struct fp8_tensors_report r;
    struct ckpt k;

    ckpt_from_config(&k, &c);
    struct lines l = check_ckpt(&k, &c, &r);
    expect_none(l);
    assert_int_equal(r.n_matched, 25);
    assert_int_equal(r.n_float, 15); /* 2 x 7 linear + lm_head */
    assert_int_equal(r.n_fp8, 0);

    ckpt_from_config(&k, &c);
    k.t[ckpt_find(&k, "model.norm.weight")] = k.t[--k.n];
    expect_one(check_ckpt(&k, &c, &r), "missing tensor model.norm.weight (shape [16])");

    ckpt_from_config(&k, &c);
    k.t[ckpt_find(&k, "model.layers.1.self_attn.k_proj.weight")].shape[0] = 16;
    expect_one(check_ckpt(&k, &c, &r), "wrong shape for model.layers.1.self_attn.k_proj.weight: "
                                       "got [16, 16], config needs [8, 16]");

    ckpt_from_config(&k, &c);
    ckpt_add(&k, "model.layers.2.mlp.up_proj.weight", ST_DTYPE_BF16, 2, 24, 16);
    expect_one(check_ckpt(&k, &c, &r), "unexpected tensor model.layers.2.mlp.up_proj.weight");

    ckpt_from_config(&k, &c);
    k.t[ckpt_find(&k, "model.layers.0.input_layernorm.weight")].dtype = ST_DTYPE_U8;
    expect_one(check_ckpt(&k, &c, &r), "model.layers.0.input_layernorm.weight: dtype U8 not "
                                       "supported for a norm weight");

    /* fp8 weights: without scales, with block scales of the wrong and the right shape. */
    ckpt_from_config(&k, &c);
    k.t[ckpt_find(&k, "model.layers.0.mlp.down_proj.weight")].dtype = ST_DTYPE_F8_E4M3;
    expect_one(check_ckpt(&k, &c, &r), "model.layers.0.mlp.down_proj.weight is F8_E4M3 but has no "
                                       "scale tensor");
    ckpt_add(&k, "model.layers.0.mlp.down_proj.weight_scale_inv", ST_DTYPE_F32, 2, 2, 1);
    expect_one(check_ckpt(&k, &c, &r), "wrong shape for model.layers.0.mlp.down_proj.weight_scale_inv:"
                                       " got [2, 1], 128x128 blocks of model.layers.0.mlp.down_proj."
                                       "weight need [1, 1]");
    k.t[k.n - 1].shape[0] = 1;
    l = check_ckpt(&k, &c, &r);
    expect_none(l);
    assert_int_equal(r.n_fp8, 1);
    assert_int_equal(r.n_float, 14);
    assert_int_equal(r.n_scales, 1);
    assert_string_equal(r.fp8_scales, "128x128 blocks");

    /* Per-channel scales and a static input scale (ignored). */
    ckpt_from_config(&k, &c);
    k.t[ckpt_find(&k, "lm_head.weight")].dtype = ST_DTYPE_F8_E4M3;
    ckpt_add(&k, "lm_head.weight_scale", ST_DTYPE_F32, 2, 32, 1);
    ckpt_add(&k, "lm_head.input_scale", ST_DTYPE_F32, 1, 1, 0);
    l = check_ckpt(&k, &c, &r);
    expect_none(l);
    assert_string_equal(r.fp8_scales, "per channel");
    assert_int_equal(r.n_ignored, 1);
}

/* Gemma3ForConditionalGeneration: the text tensors' prefix comes from the names present. */
static void test_resolve_prefix(void **state)
{
    (void)state;
    static const char mm[] =
        "{\"architectures\": [\"Gemma3ForConditionalGeneration\"], \"text_config\": {"
        "\"head_dim\": 8, \"hidden_size\": 16, \"intermediate_size\": 24, "
        "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"num_hidden_layers\": 2, "
        "\"vocab_size\": 32, \"tie_word_embeddings\": %s}}";
    char json[512];
    struct fp8_tensors_report r;
    struct ckpt k;

    /* transformers 5: model.language_model.*, untied lm_head at the top. */
    snprintf(json, sizeof(json), mm, "false");
    struct fp8_model_config c = parse(json);
    assert_string_equal(c.tensor_prefix, "language_model.model.");
    snprintf(c.tensor_prefix, sizeof(c.tensor_prefix), "model.language_model.");
    snprintf(c.lm_head_name, sizeof(c.lm_head_name), "lm_head.weight");
    ckpt_from_config(&k, &c);
    ckpt_add(&k, "model.vision_tower.vision_model.post_layernorm.weight", ST_DTYPE_BF16, 1, 4, 0);
    c = parse(json);
    struct lines l = check_ckpt(&k, &c, &r);
    expect_none(l);
    assert_string_equal(c.tensor_prefix, "model.language_model.");
    assert_string_equal(c.lm_head_name, "lm_head.weight");
    assert_int_equal(r.n_ignored, 1);

    /* The Hub: language_model.model.*, tied, with a stored lm_head copy (ignored). */
    snprintf(json, sizeof(json), mm, "true");
    c = parse(json);
    ckpt_from_config(&k, &c);
    ckpt_add(&k, "language_model.lm_head.weight", ST_DTYPE_BF16, 2, 32, 16);
    ckpt_add(&k, "multi_modal_projector.mm_input_projection_weight", ST_DTYPE_BF16, 2, 4, 16);
    l = check_ckpt(&k, &c, &r);
    expect_none(l);
    assert_string_equal(c.tensor_prefix, "language_model.model.");
    assert_string_equal(c.lm_head_name, "");
    assert_int_equal(r.n_ignored, 2);

    /* Neither layout. */
    snprintf(c.tensor_prefix, sizeof(c.tensor_prefix), "text.");
    ckpt_from_config(&k, &c);
    c = parse(json);
    expect_one(check_ckpt(&k, &c, &r), "no embedding tensor: neither "
                                       "language_model.model.embed_tokens.weight (Hub layout) nor "
                                       "model.language_model.embed_tokens.weight");
}

/* The documented generator, written out again from its description in weights.h. */
static float naive_synth(uint64_t seed, const char *name, uint64_t j, double mean, double std)
{
    uint64_t h = 14695981039346656037ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t x = (seed ^ h) + 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    uint64_t ts = x ^ (x >> 31);
    uint64_t r[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = ts + (2 * (j / 2) + (uint64_t)i + 1) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r[i] = z ^ (z >> 31);
    }
    double u1 = ((double)(r[0] >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(r[1] >> 11) / 9007199254740992.0;
    double z = sqrt(-2 * log(u1)) * (j % 2 ? sin(2 * M_PI * u2) : cos(2 * M_PI * u2));
    return (float)(mean + std * z);
}

static float bf16(const struct st_tensor *t, uint64_t j)
{
    uint16_t h = ((const uint16_t *)t->data)[j];
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_synthetic(void **state)
{
    (void)state;
    struct fp8_weights *w = NULL;
    struct fp8_err err = {{0}};
    const struct st_tensor *t, *t2;
    assert_int_equal(fp8_weights_open_synthetic("qwen3-moe-tiny", 42, &w, &err), 0);
    assert_int_equal(fp8_weights_config(w)->n_experts, 8);
    uint64_t seed = 0;
    assert_true(fp8_weights_synthetic(w, &seed));
    assert_int_equal(seed, 42);
    struct st_tensor meta;
    assert_int_equal(fp8_weights_meta(w, "model.layers.1.mlp.down_proj.weight", &meta, &err), 0);
    assert_null(meta.data); /* not generated by asking for the shape */
    assert_int_equal(meta.shape[0], 64);
    assert_int_equal(meta.shape[1], 128);
    assert_int_equal(fp8_weights_getf(w, &t, &err, "layers.%d.mlp.experts.%d.up_proj.weight", 2, 5), 0);
    assert_string_equal(t->name, "model.layers.2.mlp.experts.5.up_proj.weight");
    assert_int_equal(t->dtype, ST_DTYPE_BF16);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 64);
    assert_int_equal(t->n_bytes, 32 * 64 * 2);
    /* Within half a bf16 step (2^-8 relative) of the generator's float value. */
    for (uint64_t j = 0; j < 2048; j += 341) {
        float want = naive_synth(42, t->name, j, 0.0, 0.02);
        assert_true(fabsf(bf16(t, j) - want) <= fabsf(want) * 0x1p-8f);
    }
    /* Cached: the same tensor again. */
    assert_int_equal(fp8_weights_get(w, "model.layers.2.mlp.experts.5.up_proj.weight", &t2, &err), 0);
    assert_ptr_equal(t, t2);
    /* Norms sit around 1; the embedding's spread is 0.02. */
    assert_int_equal(fp8_weights_getf(w, &t, &err, "norm.weight"), 0);
    assert_true(fabsf(bf16(t, 3) - naive_synth(42, "model.norm.weight", 3, 1.0, 0.05)) < 0.01f);
    assert_int_equal(fp8_weights_getf(w, &t, &err, "embed_tokens.weight"), 0);
    double sum = 0, sq = 0;
    uint64_t n = t->n_bytes / 2;
    for (uint64_t j = 0; j < n; j += 7) {
        sum += bf16(t, j);
        sq += (double)bf16(t, j) * bf16(t, j);
    }
    double cnt = (double)((n + 6) / 7), mean = sum / cnt, sd = sqrt(sq / cnt - mean * mean);
    assert_true(fabs(mean) < 0.001 && fabs(sd - 0.02) < 0.001);
    /* Untied: lm_head is its own tensor. */
    assert_int_equal(fp8_weights_lm_head(w, &t2, &err), 0);
    assert_string_equal(t2->name, "lm_head.weight");
    assert_int_equal(fp8_weights_get(w, "model.layers.9.mlp.gate.weight", &t, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "no tensor model.layers.9.mlp.gate.weight"));
    fp8_weights_free(w);
    fp8_weights_free(NULL);

    /* Gemma3's (1 + w) norms are small around 0; the tied lm_head is the embedding. */
    assert_int_equal(fp8_weights_open_synthetic("gemma3-tiny", 1, &w, &err), 0);
    assert_int_equal(fp8_weights_getf(w, &t, &err, "layers.0.pre_feedforward_layernorm.weight"), 0);
    assert_true(fabsf(bf16(t, 0) - naive_synth(1, t->name, 0, 0.0, 0.05)) < 0.001f);
    assert_int_equal(fp8_weights_lm_head(w, &t2, &err), 0);
    assert_string_equal(t2->name, "model.embed_tokens.weight");
    fp8_weights_free(w);
    assert_int_equal(fp8_weights_open_synthetic("nope", 1, &w, &err), -ENOENT);
}

/* mkmodel writes the synthetic weights; reading the directory back gives the same bytes. */
static void test_mkmodel_roundtrip(void **state)
{
    (void)state;
    char *tok = tmpdir_make(), *dir = tmpdir_make();
    char path[600];
    snprintf(path, sizeof(path), "%s/tokenizer.json", tok);
    write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}}, "
                     "\"added_tokens\": [{\"id\": 262150, \"content\": \"<x>\"}]}");
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", tok);
    write_file(path, "{}");

    /* gemma3-1b's 262144 cannot hold id 262150: grown to 262151 rounded up to 64, 262208. */
    int32_t need = 0;
    struct fp8_err err = {{0}};
    snprintf(path, sizeof(path), "%s/tokenizer.json", tok);
    assert_int_equal(fp8_tokenizer_vocab_needed(path, &need, &err), 0);
    assert_int_equal(need, 262151);

    struct fp8_mkmodel_opts o = {"gemma3", "gemma3-tiny", dir, tok, 9, ST_DTYPE_BF16, 4 << 20};
    struct fp8_mkmodel_result *r = calloc(1, sizeof(*r));
    assert_int_equal(fp8_mkmodel_write(&o, r, &err), 0);
    assert_int_equal(r->config.vocab_size, 262208);
    assert_int_equal(r->tokenizer_vocab, 262151);
    assert_true(r->n_files > 1);
    assert_int_equal(r->n_tensors, 54);
    /* Writing again into the same directory is refused. */
    assert_int_equal(fp8_mkmodel_write(&o, r, &err), -EEXIST);
    o.arch = "qwen3";
    assert_int_equal(fp8_mkmodel_write(&o, r, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "preset gemma3-tiny is a Gemma3ForCausalLM, not --arch qwen3"));

    struct fp8_weights *wd = NULL, *ws = NULL;
    assert_int_equal(fp8_weights_open_dir(dir, &wd, &err), 0);
    assert_false(fp8_weights_synthetic(wd, NULL));
    assert_int_equal(fp8_weights_open_synthetic("gemma3-tiny", 9, &ws, &err), 0);
    assert_int_equal(fp8_weights_config(wd)->n_layers, fp8_weights_config(ws)->n_layers);
    struct fp8_tensor_spec *specs = NULL;
    int32_t n = fp8_tensor_specs(fp8_weights_config(wd), &specs, &err);
    assert_int_equal(n, 54);
    for (int32_t i = 0; i < n; i++) {
        const struct st_tensor *a, *b;
        assert_int_equal(fp8_weights_get(wd, specs[i].name, &a, &err), 0);
        assert_int_equal(fp8_weights_get(ws, specs[i].name, &b, &err), 0);
        assert_int_equal(a->n_bytes, b->n_bytes);
        if (memcmp(a->data, b->data, a->n_bytes))
            fail_msg("%s differs", specs[i].name);
    }
    free(specs);
    fp8_weights_free(wd);
    fp8_weights_free(ws);

    /* A defect fails the open, naming it and the count. */
    snprintf(path, sizeof(path), "%s/config.json", dir);
    char *text = NULL;
    FILE *f = fopen(path, "r");
    text = calloc(1, 4096);
    assert_true(fread(text, 1, 4095, f) > 0);
    fclose(f);
    char *p = strstr(text, "\"intermediate_size\": 128");
    assert_non_null(p);
    memcpy(p, "\"intermediate_size\": 256", 24);
    write_file(path, text);
    free(text);
    assert_int_equal(fp8_weights_open_dir(dir, &wd, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "wrong shape for model.layers.0.mlp.gate_proj.weight: got "
                                    "[128, 64], config needs [256, 64] (12 defects;"));
    free(r);
    tmpdir_remove(tok);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_specs_qwen3),
        cmocka_unit_test(test_specs_moe_gemma),
        cmocka_unit_test(test_check_defects),
        cmocka_unit_test(test_resolve_prefix),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_mkmodel_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
