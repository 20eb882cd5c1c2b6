/* Model lifetime and the step entry point; the architectures are in engine/models/. */
#include "engine/model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/models/models.h"

struct fp8_model_opts fp8_model_opts_default(void)
{
    return (struct fp8_model_opts){
        .weight_dtype = FP8_DTYPE_E4M3,
        .kv_dtype = FP8_DTYPE_E4M3,
        .max_tokens = 512,
        .block_size = 16,
        .n_kv_blocks = 256,
    };
}

struct fp8_kv_cache_desc fp8_model_kv_desc(const struct fp8_model_config *cfg,
                                           enum fp8_dtype kv_dtype, int32_t block_size,
                                           int32_t n_blocks)
{
    return (struct fp8_kv_cache_desc){
        .dtype = kv_dtype,
        .n_layers = cfg->n_layers,
        .n_blocks = n_blocks,
        .block_size = block_size,
        .n_kv_heads = cfg->n_kv_heads,
        .head_dim = cfg->head_dim,
    };
}

/* What this code can run; the config parser has already rejected unknown keys' values. */
static int check_config(const struct fp8_model_config *c, const struct fp8_model_opts *o,
                        struct fp8_err *err)
{
    if (c->arch != FP8_ARCH_QWEN3 && c->arch != FP8_ARCH_QWEN3_MOE && c->arch != FP8_ARCH_GEMMA3)
        return fp8_err_set(err, -ENOTSUP, "architecture '%s' is not supported (Qwen3, "
                           "Qwen3-MoE, Gemma3)", c->arch_name);
    if (c->act != FP8_ACT_SILU && c->act != FP8_ACT_GELU_TANH)
        return fp8_err_set(err, -ENOTSUP, "activation %d is not supported (silu, "
                           "gelu_pytorch_tanh)", (int)c->act);
    const struct fp8_rope *ropes[2] = {&c->rope, &c->rope_local};
    for (int i = 0; i < 2; i++)
        if ((ropes[i]->type != FP8_ROPE_DEFAULT && ropes[i]->type != FP8_ROPE_LINEAR) ||
            !(ropes[i]->theta > 0.0f) || !(ropes[i]->factor > 0.0f))
            return fp8_err_set(err, -ENOTSUP, "rope type %d (theta %g, factor %g) is not "
                               "supported (default, linear)", (int)ropes[i]->type,
                               (double)ropes[i]->theta, (double)ropes[i]->factor);
    if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->n_layers <= 0 ||
        c->n_layers > FP8_MAX_LAYERS || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->intermediate_size <= 0)
        return fp8_err_set(err, -EINVAL, "config has a non-positive size (vocab %d, hidden %d, "
                           "layers %d, heads %d/%d, head_dim %d, intermediate %d)",
                           c->vocab_size, c->hidden_size, c->n_layers, c->n_heads,
                           c->n_kv_heads, c->head_dim, c->intermediate_size);
    if (c->n_heads % c->n_kv_heads)
        return fp8_err_set(err, -EINVAL, "num_attention_heads %d is not a multiple of "
                           "num_key_value_heads %d", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return fp8_err_set(err, -ENOTSUP, "head_dim %d is odd: RoPE needs pairs", c->head_dim);
    if (!(c->rms_norm_eps > 0.0f) || !(c->query_pre_attn_scalar > 0.0f))
        return fp8_err_set(err, -EINVAL, "rms_norm_eps and query_pre_attn_scalar must be positive");
    for (int32_t l = 0; l < c->n_layers; l++) {
        if (c->layers[l].sliding && c->sliding_window <= 0)
            return fp8_err_set(err, -EINVAL, "layer %d is a sliding layer but sliding_window "
                               "is %d", l, c->sliding_window);
        if (c->layers[l].moe && (c->arch != FP8_ARCH_QWEN3_MOE || c->n_experts <= 0 ||
                                 c->n_experts_per_tok <= 0 ||
                                 c->n_experts_per_tok > c->n_experts ||
                                 c->moe_intermediate_size <= 0))
            return fp8_err_set(err, -EINVAL, "layer %d is sparse but the MoE settings are "
                               "unusable (%d experts, %d per token, intermediate %d)", l,
                               c->n_experts, c->n_experts_per_tok, c->moe_intermediate_size);
    }
    if (o->weight_dtype != FP8_DTYPE_E4M3 && o->weight_dtype != FP8_DTYPE_BF16)
        return fp8_err_set(err, -ENOTSUP, "weights %s are not supported (fp8, bf16)",
                           fp8_dtype_name(o->weight_dtype));
    if (o->max_tokens <= 0 || o->block_size <= 0 || o->n_kv_blocks <= 0)
        return fp8_err_set(err, -EINVAL, "max_tokens, block_size and n_kv_blocks must be positive");
    return 0;
}

/* HF's rope_init: inv_freq[i] = 1 / theta^(2i / hd) in fp32, divided by the linear factor. */
static int load_inv_freq(struct fp8_model *m, struct fp8_tensor *t, const struct fp8_rope *r,
                         struct fp8_err *err)
{
    int32_t half = m->cfg.head_dim / 2;
    int64_t ne[1] = {half};
    float *f = malloc((size_t)half * sizeof(float));
    if (!f)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (int32_t i = 0; i < half; i++) {
        f[i] = 1.0f / powf(r->theta, (float)(2 * i) / (float)m->cfg.head_dim);
        if (r->type == FP8_ROPE_LINEAR)
            f[i] /= r->factor;
    }
    int rc = m->be->ops->tensor_alloc(m->be, t, FP8_DTYPE_F32, 1, ne, err);
    if (rc == 0)
        rc = m->be->ops->tensor_set(m->be, t, f, NULL, err);
    free(f);
    return rc;
}

static int alloc_act(struct fp8_model *m, struct fp8_tensor *t, enum fp8_dtype dtype,
                     int32_t n_dims, int64_t d1, int64_t d2, struct fp8_err *err)
{
    int64_t ne[3] = {m->opts.max_tokens, d1, d2};
    return m->be->ops->tensor_alloc(m->be, t, dtype, n_dims, ne, err);
}

static int alloc_activations(struct fp8_model *m, struct fp8_err *err)
{
    const struct fp8_model_config *c = &m->cfg;
    const struct fp8_tp_shard *s = &m->shard;
    enum fp8_dtype a = m->be->act_dtype;
    int rc;
    int64_t k = c->n_experts_per_tok > 0 ? c->n_experts_per_tok : 1,
            e = c->n_experts > 0 ? c->n_experts : 1,
            inter = s->down_cols.count > 0 ? s->down_cols.count : 1;
    if ((rc = alloc_act(m, &m->x, a, 2, c->hidden_size, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->xb, a, 2, c->hidden_size, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->xb2, a, 2, c->hidden_size, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->qkv, a, 2,
                        ((int64_t)s->n_heads + 2 * (int64_t)s->n_kv_heads) * c->head_dim, 0,
                        err)) < 0 ||
        (rc = alloc_act(m, &m->q, a, 3, s->n_heads, c->head_dim, err)) < 0 ||
        (rc = alloc_act(m, &m->att, a, 2, (int64_t)s->n_heads * c->head_dim, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->hb, a, 2, 2 * inter, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->hb2, a, 2, inter, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->moe_logits, a, 2, e, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->moe_ids, FP8_DTYPE_I32, 2, k, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->moe_weights, FP8_DTYPE_F32, 2, k, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->last, a, 2, c->hidden_size, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->logits, FP8_DTYPE_F32, 2, s->vocab_rows.count, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->ids, FP8_DTYPE_I32, 1, 0, 0, err)) < 0 ||
        (rc = alloc_act(m, &m->maxv, FP8_DTYPE_F32, 1, 0, 0, err)) < 0)
        return rc;
    m->logit_rows = malloc((size_t)m->opts.max_tokens * sizeof(int32_t));
    if (!m->logit_rows)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int load_embeddings(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err)
{
    const struct fp8_model_config *c = &m->cfg;
    char emb[MODEL_NAME_MAX];
    const char *names[1] = {emb};
    int64_t ne[2] = {c->vocab_size, c->hidden_size};
    model_tensor_name(m, emb, -1, "embed_tokens.weight");
    /* Embeddings stay bf16 in every mode: one row is read per token, never streamed. */
    int rc = model_load_weight(m, src, &m->embed, FP8_DTYPE_BF16, 2, ne, names, NULL, 1, err);
    if (rc < 0)
        return rc;
    if (!c->tie_word_embeddings) {
        if (!c->lm_head_name[0])
            return fp8_err_set(err, -EINVAL, "untied embeddings but no lm_head tensor named");
        names[0] = c->lm_head_name;
    }
    /* Vocab-parallel: this shard's rows of the output projection. */
    struct model_part head = {names[0], c->vocab_size, c->hidden_size, m->shard.vocab_rows};
    struct fp8_tp_range all = {0, c->hidden_size};
    int64_t hne[2] = {m->shard.vocab_rows.count, c->hidden_size};
    rc = model_load_parts(m, src, &m->lm_head, m->opts.weight_dtype, 2, hne, &head, 1, all, err);
    if (rc < 0)
        return rc;
    return model_load_vector(m, src, &m->final_norm, -1, "norm.weight", c->hidden_size, err);
}

int model_build(struct fp8_weights *src, struct fp8_backend *be, const struct fp8_model_opts *o,
                const struct fp8_tp_shard *shard, struct fp8_model **out, struct fp8_err *err)
{
    const struct fp8_model_config *cfg = fp8_weights_config(src);
    int rc;
    struct fp8_model *m = calloc(1, sizeof(*m));
    if (!m)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    m->cfg = *cfg;
    m->opts = *o;
    m->be = be;
    m->shard = *shard;
    m->norm_kind = cfg->norm_plus_one ? FP8_NORM_RMS_PLUS_ONE : FP8_NORM_RMS;
    m->act = cfg->act == FP8_ACT_SILU ? FP8_GLU_SILU : FP8_GLU_GELU_TANH;
    m->layers = calloc((size_t)cfg->n_layers, sizeof(*m->layers));
    if (!m->layers) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    struct fp8_kv_cache_desc kd = fp8_model_kv_desc(cfg, o->kv_dtype, o->block_size,
                                                    o->n_kv_blocks);
    kd.n_kv_heads = shard->n_kv_heads; /* the rank caches only its KV heads */
    if ((rc = load_embeddings(m, src, err)) < 0 ||
        (rc = load_inv_freq(m, &m->inv_freq, &cfg->rope, err)) < 0 ||
        (rc = load_inv_freq(m, &m->inv_freq_local, &cfg->rope_local, err)) < 0 ||
        (rc = alloc_activations(m, err)) < 0 ||
        (rc = be->ops->kv_cache_alloc(be, &m->kv, &kd, err)) < 0)
        goto fail;
    switch (cfg->arch) {
    case FP8_ARCH_QWEN3:
    case FP8_ARCH_QWEN3_MOE: rc = qwen3_load(m, src, err); break;
    case FP8_ARCH_GEMMA3: rc = gemma3_load(m, src, err); break;
    }
    if (rc < 0)
        goto fail;
    *out = m;
    return 0;
fail:
    fp8_model_free(m);
    return rc;
}

int fp8_model_create(struct fp8_weights *src, struct fp8_backend *be,
                     const struct fp8_model_opts *opts, struct fp8_model **out,
                     struct fp8_err *err)
{
    if (!src || !be || !out)
        return fp8_err_set(err, -EINVAL, "model: missing weights or backend");
    const struct fp8_model_config *cfg = fp8_weights_config(src);
    struct fp8_model_opts o = opts ? *opts : fp8_model_opts_default();
    int rc = check_config(cfg, &o, err);
    if (rc < 0)
        return rc;
    /* The cuda backend has no MoE routing/experts ops yet. */
    if (!strcmp(be->name, "cuda") && cfg->arch == FP8_ARCH_QWEN3_MOE)
        return fp8_err_set(err, -ENOTSUP, "not yet supported on the cuda backend: %s (MoE "
                           "routing and experts); supported there: qwen3 dense, gemma3",
                           cfg->arch_name);
    if (!be->group) {
        struct fp8_tp_shard whole;
        if ((rc = fp8_tp_plan_shard(cfg, 1, 0, &whole, err)) < 0)
            return rc;
        return model_build(src, be, &o, &whole, out, err);
    }
    if (be->tp_rank != 0)
        return fp8_err_set(err, -EINVAL, "model: a backend group is driven through its rank 0");
    struct fp8_model *m = calloc(1, sizeof(*m));
    if (!m)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    m->cfg = *cfg;
    m->opts = o;
    m->be = be;
    if ((rc = fp8_tp_plan_shard(cfg, be->group->n_ranks, 0, &m->shard, err)) < 0 ||
        (rc = model_tp_create(m, src, err)) < 0) {
        fp8_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int fp8_model_load(const char *dir, struct fp8_backend *be, const struct fp8_model_opts *opts,
                   struct fp8_model **out, struct fp8_err *err)
{
    struct fp8_weights *src = NULL;
    int rc = fp8_weights_open_dir(dir, &src, err); /* its messages name dir already */
    if (rc == 0) {
        rc = fp8_model_create(src, be, opts, out, err);
        if (rc < 0)
            fp8_err_prefix(err, rc, "%s", dir);
    }
    fp8_weights_free(src);
    return rc;
}

static void free_tensor(struct fp8_model *m, struct fp8_tensor *t)
{
    m->be->ops->tensor_free(m->be, t);
}

void fp8_model_free(struct fp8_model *m)
{
    if (!m)
        return;
    model_tp_free(m->tp);
    if (m->layers) {
        for (int32_t l = 0; l < m->cfg.n_layers; l++) {
            struct fp8_layer *w = &m->layers[l];
            struct fp8_tensor *ts[] = {&w->attn_norm, &w->wqkv, &w->q_norm,
                                       &w->k_norm, &w->wo, &w->attn_post_norm, &w->mlp_norm,
                                       &w->mlp_post_norm, &w->w_gate_up, &w->w_down,
                                       &w->router, &w->experts_gate_up, &w->experts_down};
            for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
                free_tensor(m, ts[i]);
        }
        free(m->layers);
    }
    struct fp8_tensor *ts[] = {&m->embed, &m->lm_head, &m->final_norm, &m->inv_freq,
                               &m->inv_freq_local, &m->x, &m->xb, &m->xb2, &m->qkv, &m->q,
                               &m->att, &m->hb, &m->hb2, &m->moe_logits, &m->moe_ids,
                               &m->moe_weights, &m->last, &m->logits, &m->ids, &m->maxv};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
        free_tensor(m, ts[i]);
    m->be->ops->kv_cache_free(m->be, &m->kv);
    free(m->logit_rows);
    free(m);
}

const struct fp8_model_config *fp8_model_get_config(const struct fp8_model *m)
{
    return &m->cfg;
}

/* Fills rows (when non-NULL) and returns how many there are. */
static int32_t logit_rows(const struct fp8_batch *b, int32_t *rows)
{
    int32_t n = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        int32_t lo = b->seq_start[s], hi = b->seq_start[s + 1];
        if (b->want_all_logits && b->want_all_logits[s]) {
            for (int32_t t = lo; t < hi; t++, n++)
                if (rows)
                    rows[n] = t;
        } else if (b->want_logits && b->want_logits[s] && hi > lo) {
            if (rows)
                rows[n] = hi - 1;
            n++;
        }
    }
    return n;
}

int32_t fp8_batch_n_logit_rows(const struct fp8_batch *b)
{
    return b && b->seq_start ? logit_rows(b, NULL) : 0;
}

int model_check_batch(const struct fp8_model *m, const struct fp8_batch *b, struct fp8_err *err)
{
    if (!m || !b || !b->tokens || !b->seq_start || b->n_tokens <= 0 || b->n_seqs <= 0)
        return fp8_err_set(err, -EINVAL, "forward: empty or incomplete batch");
    if (b->n_tokens > m->opts.max_tokens)
        return fp8_err_set(err, -E2BIG, "forward: %d tokens in one step, at most %d",
                           b->n_tokens, m->opts.max_tokens);
    for (int32_t t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.vocab_size)
            return fp8_err_set(err, -EINVAL, "forward: token id %d outside the vocabulary of %d",
                               b->tokens[t], m->cfg.vocab_size);
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return fp8_err_set(err, -EINVAL, "forward: seq_start must run from 0 to n_tokens");
    for (int32_t s = 0; s < b->n_seqs; s++)
        if (b->seq_start[s + 1] < b->seq_start[s])
            return fp8_err_set(err, -EINVAL, "forward: seq_start decreases at sequence %d", s);
    return fp8_batch_check(b, NULL, 0, err);
}

int model_step_begin(struct fp8_model *m, const struct fp8_batch *b, bool want_out, bool greedy,
                     struct fp8_err *err)
{
    int rc = model_check_batch(m, b, err);
    if (rc < 0)
        return rc;
    int32_t n_rows = logit_rows(b, m->logit_rows);
    if (n_rows > 0 && !want_out)
        return fp8_err_set(err, -EINVAL, "forward: no buffer for %d logit rows", n_rows);
    const struct fp8_backend_ops *op = m->be->ops;
    bool shard = m->shard.n_ranks > 1; /* greedy picks this shard's candidate and its value */
    if (greedy && (shard ? !op->argmax_value : !op->argmax))
        return fp8_err_set(err, -ENOTSUP, "forward: backend %s has no argmax", m->be->name);
    rc = op->step_begin(m->be, b, m->logit_rows, n_rows, err);
    return rc < 0 ? rc : n_rows;
}

int model_step_finish(struct fp8_model *m, const struct fp8_batch *b, int32_t n_rows,
                      float *logits, int32_t *ids, float *vals, struct fp8_err *err)
{
    const struct fp8_backend_ops *op = m->be->ops;
    bool greedy = ids != NULL;
    switch (m->cfg.arch) {
    case FP8_ARCH_QWEN3:
    case FP8_ARCH_QWEN3_MOE: qwen3_forward(m, b->n_tokens); break;
    case FP8_ARCH_GEMMA3: gemma3_forward(m, b->n_tokens); break;
    }
    if (n_rows > 0) {
        struct fp8_tensor xb = model_rows(&m->xb, b->n_tokens), last = model_rows(&m->last, n_rows),
                          lg = model_rows(&m->logits, n_rows);
        op->gather_rows(m->be, &xb, &last);
        op->linear(m->be, &last, &m->lm_head, &lg);
        if (m->cfg.final_logit_softcapping > 0.0f)
            op->softcap(m->be, &lg, m->cfg.final_logit_softcapping);
        if (greedy) {
            struct fp8_tensor t = model_rows(&m->ids, n_rows), v = model_rows(&m->maxv, n_rows);
            if (m->shard.n_ranks > 1)
                op->argmax_value(m->be, &lg, &t, &v);
            else
                op->argmax(m->be, &lg, &t);
        }
    }
    int rc = op->sync(m->be, err);
    if (rc < 0 || n_rows == 0)
        return rc < 0 ? rc : 0;
    if (!greedy) {
        struct fp8_tensor lg = model_rows(&m->logits, n_rows);
        rc = op->tensor_get(m->be, &lg, logits, NULL, err);
    } else {
        struct fp8_tensor t = model_rows(&m->ids, n_rows), v = model_rows(&m->maxv, n_rows);
        rc = op->tensor_get(m->be, &t, ids, NULL, err);
        if (rc == 0 && vals)
            rc = op->tensor_get(m->be, &v, vals, NULL, err);
    }
    return rc < 0 ? rc : n_rows;
}

int model_forward_local(struct fp8_model *m, const struct fp8_batch *b, float *logits,
                        int32_t *ids, float *vals, struct fp8_err *err)
{
    int n_rows = model_step_begin(m, b, ids || logits, ids != NULL, err);
    return n_rows < 0 ? n_rows : model_step_finish(m, b, n_rows, logits, ids, vals, err);
}

int fp8_model_forward(struct fp8_model *m, const struct fp8_batch *b, float *logits,
                      struct fp8_err *err)
{
    if (m && m->tp)
        return model_tp_forward(m, b, logits, NULL, err);
    return model_forward_local(m, b, logits, NULL, NULL, err);
}

int fp8_model_forward_greedy(struct fp8_model *m, const struct fp8_batch *b, int32_t *ids,
                             struct fp8_err *err)
{
    if (m && m->tp)
        return model_tp_forward(m, b, NULL, ids, err);
    return model_forward_local(m, b, NULL, ids, NULL, err);
}
