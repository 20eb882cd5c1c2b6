#include "tensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FP8_BLOCK 128 /* the block edge of block-scaled fp8 checkpoints */

struct spec_list {
    struct fp8_tensor_spec *v;
    int32_t n, cap;
};

static int spec_add(struct spec_list *l, enum fp8_tensor_kind kind, int32_t layer, int64_t d0,
                    int64_t d1, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* d1 == 0: a vector of d0. */
static int spec_add(struct spec_list *l, enum fp8_tensor_kind kind, int32_t layer, int64_t d0,
                    int64_t d1, const char *fmt, ...)
{
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 64;
        struct fp8_tensor_spec *v = realloc(l->v, sizeof(*v) * (size_t)cap);
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    struct fp8_tensor_spec *s = &l->v[l->n];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(s->name, sizeof(s->name), fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof(s->name))
        return -ENAMETOOLONG;
    s->kind = kind;
    s->layer = layer;
    s->n_dims = d1 ? 2 : 1;
    s->shape[0] = d0;
    s->shape[1] = d1;
    l->n++;
    return 0;
}

static int add_layer(struct spec_list *l, const struct fp8_model_config *c, int32_t i)
{
    const char *p = c->tensor_prefix;
    const int64_t dim = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim,
                  kv = (int64_t)c->n_kv_heads * c->head_dim;
    int rc = 0;
#define ADD(kind, d0, d1, suffix) \
    if (rc == 0)                  \
    rc = spec_add(l, kind, i, d0, d1, "%slayers.%d." suffix, p, i)
    ADD(FP8_TENSOR_NORM, dim, 0, "input_layernorm.weight");
    ADD(FP8_TENSOR_LINEAR, q, dim, "self_attn.q_proj.weight");
    ADD(FP8_TENSOR_LINEAR, kv, dim, "self_attn.k_proj.weight");
    ADD(FP8_TENSOR_LINEAR, kv, dim, "self_attn.v_proj.weight");
    ADD(FP8_TENSOR_LINEAR, dim, q, "self_attn.o_proj.weight");
    ADD(FP8_TENSOR_NORM, c->head_dim, 0, "self_attn.q_norm.weight");
    ADD(FP8_TENSOR_NORM, c->head_dim, 0, "self_attn.k_norm.weight");
    ADD(FP8_TENSOR_NORM, dim, 0, "post_attention_layernorm.weight");
    if (c->arch == FP8_ARCH_GEMMA3) {
        ADD(FP8_TENSOR_NORM, dim, 0, "pre_feedforward_layernorm.weight");
        ADD(FP8_TENSOR_NORM, dim, 0, "post_feedforward_layernorm.weight");
    }
    if (c->layers[i].moe) {
        const int64_t mi = c->moe_intermediate_size;
        ADD(FP8_TENSOR_ROUTER, c->n_experts, dim, "mlp.gate.weight");
        for (int32_t e = 0; e < c->n_experts && rc == 0; e++) {
            rc = spec_add(l, FP8_TENSOR_LINEAR, i, mi, dim, "%slayers.%d.mlp.experts.%d.gate_proj.weight", p, i, e);
            if (rc == 0)
                rc = spec_add(l, FP8_TENSOR_LINEAR, i, mi, dim, "%slayers.%d.mlp.experts.%d.up_proj.weight", p, i, e);
            if (rc == 0)
                rc = spec_add(l, FP8_TENSOR_LINEAR, i, dim, mi, "%slayers.%d.mlp.experts.%d.down_proj.weight", p, i, e);
        }
    } else {
        const int64_t inter = c->intermediate_size;
        ADD(FP8_TENSOR_LINEAR, inter, dim, "mlp.gate_proj.weight");
        ADD(FP8_TENSOR_LINEAR, inter, dim, "mlp.up_proj.weight");
        ADD(FP8_TENSOR_LINEAR, dim, inter, "mlp.down_proj.weight");
    }
#undef ADD
    return rc;
}

int fp8_tensor_specs(const struct fp8_model_config *c, struct fp8_tensor_spec **specs,
                     struct fp8_err *err)
{
    struct spec_list l = {0};
    int rc;
    if (!c || !specs)
        return fp8_err_set(err, -EINVAL, "fp8_tensor_specs: NULL argument");
    if (c->n_layers < 1 || c->n_layers > FP8_MAX_LAYERS)
        return fp8_err_set(err, -EINVAL, "config has %d layers", c->n_layers);
    rc = spec_add(&l, FP8_TENSOR_EMBED, -1, c->vocab_size, c->hidden_size, "%sembed_tokens.weight",
                  c->tensor_prefix);
    for (int32_t i = 0; i < c->n_layers && rc == 0; i++)
        rc = add_layer(&l, c, i);
    if (rc == 0)
        rc = spec_add(&l, FP8_TENSOR_NORM, -1, c->hidden_size, 0, "%snorm.weight", c->tensor_prefix);
    if (rc == 0 && c->lm_head_name[0])
        rc = spec_add(&l, FP8_TENSOR_LINEAR, -1, c->vocab_size, c->hidden_size, "%s",
                      c->lm_head_name);
    if (rc < 0) {
        free(l.v);
        return fp8_err_set(err, rc, "tensor list: %s", rc == -ENOMEM ? "out of memory"
                                                                     : "tensor name too long");
    }
    *specs = l.v;
    return l.n;
}

int64_t fp8_tensor_specs_n_params(const struct fp8_tensor_spec *specs, int32_t n)
{
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++)
        total += specs[i].shape[0] * (specs[i].n_dims == 2 ? specs[i].shape[1] : 1);
    return total;
}

int fp8_tensors_resolve_prefix(struct fp8_model_config *c, const struct st_model *m,
                               struct fp8_err *err)
{
    static const struct {
        const char *prefix, *lm_head;
    } multimodal[] = {
        {"language_model.model.", "language_model.lm_head.weight"}, /* the Hub's checkpoints */
        {"model.language_model.", "lm_head.weight"},                /* transformers 5 saves */
    }, text[] = {{"model.", "lm_head.weight"}};
    bool mm = !strcmp(c->arch_name, "Gemma3ForConditionalGeneration");
    size_t n = mm ? 2 : 1;
    char name[160];
    for (size_t i = 0; i < n; i++) {
        const char *prefix = mm ? multimodal[i].prefix : text[i].prefix;
        snprintf(name, sizeof(name), "%sembed_tokens.weight", prefix);
        if (st_model_find(m, name)) {
            snprintf(c->tensor_prefix, sizeof(c->tensor_prefix), "%s", prefix);
            snprintf(c->lm_head_name, sizeof(c->lm_head_name), "%s",
                     c->tie_word_embeddings ? "" : mm ? multimodal[i].lm_head : text[i].lm_head);
            return 0;
        }
    }
    if (mm)
        return fp8_err_set(err, -ENOENT, "no embedding tensor: neither "
                           "language_model.model.embed_tokens.weight (Hub layout) nor "
                           "model.language_model.embed_tokens.weight (transformers 5 layout) is "
                           "in the checkpoint");
    return fp8_err_set(err, -ENOENT, "missing tensor model.embed_tokens.weight");
}

static bool is_float(enum st_dtype d)
{
    return d == ST_DTYPE_F32 || d == ST_DTYPE_F16 || d == ST_DTYPE_BF16;
}

static bool has_prefix(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

static bool has_suffix(const char *s, const char *x)
{
    size_t n = strlen(s), k = strlen(x);
    return n >= k && !strcmp(s + n - k, x);
}

struct checker {
    const struct st_model *m;
    bool *claimed; /* (n tensors) */
    fp8_defect_fn defect;
    void *ctx;
    int32_t n_defects;
    struct fp8_tensors_report *r;
};

static void report(struct checker *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(struct checker *k, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    k->n_defects++;
    if (k->defect)
        k->defect(k->ctx, line);
}

static void note_scales(struct checker *k, const char *kind)
{
    char *s = k->r->fp8_scales;
    if (!s[0])
        snprintf(s, sizeof(k->r->fp8_scales), "%s", kind);
    else if (strcmp(s, kind))
        snprintf(s, sizeof(k->r->fp8_scales), "mixed");
}

/* An F8_E4M3 weight needs its scales: "<name>_scale_inv" in 128x128 blocks (the Hub's FP8
 * checkpoints) or "<name>_scale" per output channel or per tensor (compressed-tensors). */
static void check_fp8_scale(struct checker *k, const struct fp8_tensor_spec *s)
{
    char name[160], shape[64], want[64];
    const int64_t out = s->shape[0], in = s->n_dims == 2 ? s->shape[1] : 1;
    snprintf(name, sizeof(name), "%s_scale_inv", s->name);
    int32_t i = st_model_index(k->m, name);
    if (i >= 0) {
        const struct st_tensor *t = st_model_tensor(k->m, i);
        const int64_t blocks[2] = {(out + FP8_BLOCK - 1) / FP8_BLOCK, (in + FP8_BLOCK - 1) / FP8_BLOCK};
        k->claimed[i] = true;
        k->r->n_scales++;
        st_shape_format(shape, sizeof(shape), t->shape, t->n_dims);
        st_shape_format(want, sizeof(want), blocks, 2);
        if (!is_float(t->dtype))
            report(k, "%s: dtype %s not supported for a scale (F32, BF16 or F16)", name,
                   st_dtype_name(t->dtype));
        else if (t->n_dims != 2 || t->shape[0] != blocks[0] || t->shape[1] != blocks[1])
            report(k, "wrong shape for %s: got %s, 128x128 blocks of %s need %s", name, shape,
                   s->name, want);
        else
            note_scales(k, "128x128 blocks");
        return;
    }
    snprintf(name, sizeof(name), "%s_scale", s->name);
    i = st_model_index(k->m, name);
    if (i < 0) {
        report(k, "%s is F8_E4M3 but has no scale tensor (%s_scale_inv or %s_scale)", s->name,
               s->name, s->name);
        return;
    }
    const struct st_tensor *t = st_model_tensor(k->m, i);
    k->claimed[i] = true;
    k->r->n_scales++;
    int64_t elems = 1;
    for (int32_t d = 0; d < t->n_dims; d++)
        elems *= t->shape[d];
    st_shape_format(shape, sizeof(shape), t->shape, t->n_dims);
    if (!is_float(t->dtype))
        report(k, "%s: dtype %s not supported for a scale (F32, BF16 or F16)", name,
               st_dtype_name(t->dtype));
    else if (elems == 1)
        note_scales(k, "per tensor");
    else if (t->shape[0] == out && elems == out)
        note_scales(k, "per channel");
    else
        report(k, "wrong shape for %s: got %s, needs [%" PRId64 ", 1] (per channel) or [1] "
               "(per tensor) for %s", name, shape, out, s->name);
}

static void check_spec(struct checker *k, const struct fp8_tensor_spec *s)
{
    static const char *const what[] = {"an embedding", "a linear weight", "a norm weight",
                                       "a router weight"};
    char got[64], want[64];
    st_shape_format(want, sizeof(want), s->shape, s->n_dims);
    int32_t i = st_model_index(k->m, s->name);
    if (i < 0) {
        report(k, "missing tensor %s (shape %s)", s->name, want);
        return;
    }
    const struct st_tensor *t = st_model_tensor(k->m, i);
    k->claimed[i] = true;
    k->r->n_matched++;
    st_shape_format(got, sizeof(got), t->shape, t->n_dims);
    if (t->n_dims != s->n_dims || t->shape[0] != s->shape[0] ||
        (s->n_dims == 2 && t->shape[1] != s->shape[1]))
        report(k, "wrong shape for %s: got %s, config needs %s", s->name, got, want);
    if (is_float(t->dtype)) {
        if (s->kind == FP8_TENSOR_LINEAR)
            k->r->n_float++;
    } else if (s->kind == FP8_TENSOR_LINEAR && t->dtype == ST_DTYPE_F8_E4M3) {
        k->r->n_fp8++;
        check_fp8_scale(k, s);
    } else {
        report(k, "%s: dtype %s not supported for %s (F32, F16, BF16%s)", s->name,
               st_dtype_name(t->dtype), what[s->kind],
               s->kind == FP8_TENSOR_LINEAR ? ", or F8_E4M3 with scales" : "");
    }
}

/* Tensors a valid checkpoint may carry that the text model does not use. */
static bool ignorable(const struct fp8_model_config *c, const struct st_model *m, const char *name)
{
    static const char *const towers[] = {"vision_tower.", "multi_modal_projector.",
                                         "model.vision_tower.", "model.multi_modal_projector."};
    for (size_t i = 0; i < sizeof(towers) / sizeof(towers[0]); i++)
        if (has_prefix(name, towers[i]))
            return c->arch == FP8_ARCH_GEMMA3;
    if (has_suffix(name, ".rotary_emb.inv_freq"))
        return true;
    /* A tied model may still store the lm_head copy; transformers overwrites it with the
     * embedding, and so do we. */
    if (c->tie_word_embeddings && (!strcmp(name, "lm_head.weight") ||
                                   !strcmp(name, "language_model.lm_head.weight")))
        return true;
    /* Static activation scales of compressed-tensors fp8 layers: activations are scaled
     * dynamically here. */
    if (has_suffix(name, ".input_scale")) {
        char w[160];
        size_t n = strlen(name) - strlen(".input_scale");
        if (n < sizeof(w) - 8) {
            memcpy(w, name, n);
            memcpy(w + n, ".weight", sizeof(".weight"));
            const struct st_tensor *t = st_model_find(m, w);
            return t && t->dtype == ST_DTYPE_F8_E4M3;
        }
    }
    return false;
}

int32_t fp8_tensors_check(const struct fp8_model_config *c, const struct st_model *m,
                          struct fp8_tensors_report *r, fp8_defect_fn defect, void *ctx)
{
    struct fp8_tensors_report local;
    struct fp8_tensor_spec *specs = NULL;
    struct fp8_err err;
    if (!r)
        r = &local;
    memset(r, 0, sizeof(*r));
    struct checker k = {m, NULL, defect, ctx, 0, r};
    int32_t n_tensors = st_model_n_tensors(m);
    k.claimed = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof(*k.claimed));
    int32_t n_specs = fp8_tensor_specs(c, &specs, &err);
    if (!k.claimed || n_specs < 0) {
        report(&k, "%s", k.claimed ? err.msg : "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < n_specs; i++)
        check_spec(&k, &specs[i]);
    for (int32_t i = 0; i < n_tensors; i++) {
        const char *name = st_model_tensor(m, i)->name;
        if (k.claimed[i])
            continue;
        if (ignorable(c, m, name))
            r->n_ignored++;
        else
            report(&k, "unexpected tensor %s", name);
    }
out:
    free(k.claimed);
    free(specs);
    return k.n_defects;
}
