/* Model lifetime and the step entry point; the architectures are in engine/models/. */
#include "engine/model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
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

/* Temperature-0 rows for fp8_model_forward_greedy, one per token a step may hold. */
static int alloc_greedy_rows(struct fp8_model *m, struct fp8_err *err)
{
    m->greedy_rows = calloc((size_t)m->opts.max_tokens, sizeof(*m->greedy_rows));
    if (!m->greedy_rows)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (int32_t i = 0; i < m->opts.max_tokens; i++)
        m->greedy_rows[i] = (struct fp8_sample_row){.top_p = 1.0f, .repetition_penalty = 1.0f};
    return 0;
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
    return alloc_greedy_rows(m, err);
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
        (rc = alloc_greedy_rows(m, err)) < 0 || (rc = model_tp_create(m, src, err)) < 0) {
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
    free(m->greedy_rows);
    free(m->pad_buf);
    free(m->pad_want);
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

/* The bucket of a decode step of n sequences: the next power of two, at most pad_max. */
static int32_t bucket_of(int32_t n, int32_t pad_max)
{
    int32_t b = 1;
    while (b < n)
        b *= 2;
    return b < pad_max ? b : pad_max;
}

/* When b is a decode step (every sequence one token at its last position, wanting its
 * logits) of fewer sequences than its bucket, *out becomes b with padding sequences
 * appended, in m->pad_buf: token 0 at position 0, length 1, KV slot -1 (the kernels write
 * nothing there), block table row {0, -1, ...}, logits wanted, so that every step of the
 * bucket has one shape. Rows never mix, so padding touches only its own rows. Returns 1
 * when padded, 0 when b is left as it is, or a negative errno. */
static int pad_decode(struct fp8_model *m, const struct fp8_batch *b, struct fp8_batch *out,
                      struct fp8_err *err)
{
    int32_t ns = b->n_seqs;
    if (m->pad_max <= 0 || ns >= m->pad_max || b->n_tokens != ns || !b->want_logits)
        return 0;
    int32_t nb = bucket_of(ns, m->pad_max);
    if (nb == ns)
        return 0;
    for (int32_t s = 0; s < ns; s++)
        if (b->seq_start[s] != s || b->positions[s] != b->seq_len[s] - 1 ||
            !b->want_logits[s] || (b->want_all_logits && b->want_all_logits[s]))
            return 0;
    size_t w = (size_t)b->max_blocks_per_seq;
    size_t need = 5 * (size_t)nb + 1 + (size_t)nb * w;
    if (need > m->pad_cap) {
        int32_t *p = realloc(m->pad_buf, need * sizeof(int32_t));
        if (!p)
            return fp8_err_set(err, -ENOMEM, "forward: out of memory padding a decode step");
        m->pad_buf = p;
        m->pad_cap = need;
    }
    int32_t *tokens = m->pad_buf, *pos = tokens + nb, *slots = pos + nb, *start = slots + nb,
            *len = start + nb + 1, *table = len + nb;
    memcpy(tokens, b->tokens, (size_t)ns * sizeof(int32_t));
    memcpy(pos, b->positions, (size_t)ns * sizeof(int32_t));
    memcpy(slots, b->slots, (size_t)ns * sizeof(int32_t));
    memcpy(len, b->seq_len, (size_t)ns * sizeof(int32_t));
    memcpy(table, b->block_table, (size_t)ns * w * sizeof(int32_t));
    for (int32_t s = 0; s <= nb; s++)
        start[s] = s;
    for (int32_t s = ns; s < nb; s++) {
        tokens[s] = 0;
        pos[s] = 0;
        slots[s] = -1;
        len[s] = 1;
        table[(size_t)s * w] = 0;
        for (size_t i = 1; i < w; i++)
            table[(size_t)s * w + i] = -1;
    }
    memset(m->pad_want, 1, (size_t)nb);
    *out = (struct fp8_batch){
        .n_tokens = nb, .tokens = tokens, .positions = pos, .slots = slots, .n_seqs = nb,
        .seq_start = start, .seq_len = len, .block_table = table,
        .max_blocks_per_seq = b->max_blocks_per_seq, .block_size = b->block_size,
        .want_logits = m->pad_want,
    };
    return 1;
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

int model_step_begin(struct fp8_model *m, const struct fp8_batch *b,
                     const struct model_step_out *out, struct fp8_err *err)
{
    int rc = model_check_batch(m, b, err);
    if (rc < 0)
        return rc;
    int32_t n_rows = logit_rows(b, NULL);
    if (n_rows > 0 && !out->logits && !out->ids)
        return fp8_err_set(err, -EINVAL, "forward: no buffer for %d logit rows", n_rows);
    const struct fp8_backend_ops *op = m->be->ops;
    if (out->rows && !op->sample)
        return fp8_err_set(err, -ENOTSUP, "forward: backend %s cannot sample", m->be->name);
    if (out->vals && !op->argmax_value)
        return fp8_err_set(err, -ENOTSUP, "forward: backend %s has no argmax", m->be->name);
    rc = pad_decode(m, b, &m->padded, err);
    if (rc < 0)
        return rc;
    m->run = rc ? &m->padded : b;
    m->n_run = logit_rows(m->run, m->logit_rows); /* the real rows come first */
    rc = op->step_begin(m->be, m->run, m->logit_rows, m->n_run, err);
    return rc < 0 ? rc : n_rows;
}

int model_step_finish(struct fp8_model *m, int32_t n_rows, const struct model_step_out *out,
                      struct fp8_err *err)
{
    const struct fp8_backend_ops *op = m->be->ops;
    const struct fp8_batch *run = m->run;
    switch (m->cfg.arch) {
    case FP8_ARCH_QWEN3:
    case FP8_ARCH_QWEN3_MOE: qwen3_forward(m, run->n_tokens); break;
    case FP8_ARCH_GEMMA3: gemma3_forward(m, run->n_tokens); break;
    }
    struct fp8_tensor lg = model_rows(&m->logits, n_rows > 0 ? n_rows : 1),
                      ids = model_rows(&m->ids, n_rows > 0 ? n_rows : 1),
                      vals = model_rows(&m->maxv, n_rows > 0 ? n_rows : 1);
    if (m->n_run > 0) {
        struct fp8_tensor xb = model_rows(&m->xb, run->n_tokens),
                          last = model_rows(&m->last, m->n_run),
                          all = model_rows(&m->logits, m->n_run);
        /* a decode step wants every row in order: nothing to gather */
        bool every_row = m->n_run == run->n_tokens;
        for (int32_t r = 0; every_row && r < m->n_run; r++)
            every_row = m->logit_rows[r] == r;
        if (!every_row)
            op->gather_rows(m->be, &xb, &last);
        op->linear(m->be, every_row ? &xb : &last, &m->lm_head, &all);
        if (m->cfg.final_logit_softcapping > 0.0f)
            op->softcap(m->be, &all, m->cfg.final_logit_softcapping);
        if (n_rows > 0 && out->rows)
            op->sample(m->be, &lg, out->rows, out->pen_ids, &ids);
        else if (n_rows > 0 && out->vals)
            op->argmax_value(m->be, &lg, &ids, &vals);
    }
    int rc = op->sync(m->be, err);
    m->run = NULL;
    if (rc < 0 || n_rows == 0)
        return rc;
    if (out->logits && (rc = op->tensor_get(m->be, &lg, out->logits, NULL, err)) < 0)
        return rc;
    if (out->ids && (rc = op->tensor_get(m->be, &ids, out->ids, NULL, err)) < 0)
        return rc;
    if (out->vals && (rc = op->tensor_get(m->be, &vals, out->vals, NULL, err)) < 0)
        return rc;
    return n_rows;
}

/* One step of m into out: over its tensor-parallel group, or on its own backend. */
static int forward_out(struct fp8_model *m, const struct fp8_batch *b,
                       const struct model_step_out *out, struct fp8_err *err)
{
    if (m && m->tp)
        return model_tp_forward(m, b, out, err);
    int n_rows = model_step_begin(m, b, out, err);
    return n_rows < 0 ? n_rows : model_step_finish(m, n_rows, out, err);
}

int fp8_model_forward(struct fp8_model *m, const struct fp8_batch *b, float *logits,
                      struct fp8_err *err)
{
    struct model_step_out out = {.logits = logits};
    return forward_out(m, b, &out, err);
}

int fp8_model_forward_sample(struct fp8_model *m, const struct fp8_batch *b,
                             const struct fp8_sample_row *rows, const int32_t *pen_ids,
                             int32_t *ids, struct fp8_err *err)
{
    if (!rows || !ids)
        return fp8_err_set(err, -EINVAL, "forward_sample: no parameter rows or id buffer");
    struct model_step_out out = {.rows = rows, .pen_ids = pen_ids, .ids = ids};
    return forward_out(m, b, &out, err);
}

int fp8_model_forward_greedy(struct fp8_model *m, const struct fp8_batch *b, int32_t *ids,
                             struct fp8_err *err)
{
    return fp8_model_forward_sample(m, b, m ? m->greedy_rows : NULL, NULL, ids, err);
}

int fp8_model_warmup(struct fp8_model *m, int32_t max_seqs, int32_t max_blocks_per_seq,
                     struct fp8_model_warmup *out, struct fp8_err *err)
{
    if (!m || !out || max_seqs < 1 || max_blocks_per_seq < 1)
        return fp8_err_set(err, -EINVAL, "warmup: no model or no sequences");
    if (!m->be->decode_graphs || m->be->enforce_eager)
        return fp8_err_set(err, -EINVAL, "warmup: backend %s captures no decode graphs%s",
                           m->be->name, m->be->enforce_eager ? " (--enforce-eager)" : "");
    if (max_seqs > m->opts.max_tokens)
        return fp8_err_set(err, -EINVAL, "warmup: %d sequences exceed the %d tokens of a step",
                           max_seqs, m->opts.max_tokens);
    /* max_seqs, then the powers of two below it, largest first so buffers grow once. */
    struct fp8_model_warmup w = {.n_buckets = 1, .buckets = {max_seqs}};
    int32_t p = 1;
    while (p * 2 < max_seqs)
        p *= 2;
    for (; p >= 1 && max_seqs > 1; p /= 2)
        w.buckets[w.n_buckets++] = p;

    size_t ns = (size_t)max_seqs, wd = (size_t)max_blocks_per_seq;
    int32_t *a = malloc((6 * ns + 1 + ns * wd) * sizeof(int32_t));
    uint8_t *want = malloc(ns), *pw = malloc(ns);
    int rc = 0;
    if (!a || !want || !pw) {
        free(a);
        free(want);
        free(pw);
        return fp8_err_set(err, -ENOMEM, "warmup: out of memory");
    }
    free(m->pad_want);
    m->pad_want = pw;
    m->pad_max = max_seqs;
    /* All-padding steps: the shapes every serving step of a bucket takes. */
    int32_t *tokens = a, *pos = a + ns, *slots = a + 2 * ns, *start = a + 3 * ns,
            *len = a + 4 * ns + 1, *ids = a + 5 * ns + 1, *table = a + 6 * ns + 1;
    for (size_t s = 0; s < ns; s++) {
        tokens[s] = pos[s] = 0;
        slots[s] = -1;
        start[s] = (int32_t)s;
        len[s] = 1;
        want[s] = 1;
        table[s * wd] = 0;
        for (size_t i = 1; i < wd; i++)
            table[s * wd + i] = -1;
    }
    start[ns] = (int32_t)ns;
    int64_t c0 = m->be->n_graph_captures, t0 = fp8_now_ns();
    for (int32_t i = 0; i < w.n_buckets && rc >= 0; i++) {
        int32_t nb = w.buckets[i]; /* start[nb] == nb: the first nb sequences */
        struct fp8_batch b = {
            .n_tokens = nb, .tokens = tokens, .positions = pos, .slots = slots, .n_seqs = nb,
            .seq_start = start, .seq_len = len, .block_table = table,
            .max_blocks_per_seq = max_blocks_per_seq, .block_size = m->opts.block_size,
            .want_logits = want,
        };
        rc = fp8_model_forward_greedy(m, &b, ids, err);
    }
    free(a);
    free(want);
    if (rc < 0) {
        m->pad_max = 0;
        return fp8_err_prefix(err, rc, "warmup");
    }
    w.n_captures = m->be->n_graph_captures - c0;
    w.seconds = (double)(fp8_now_ns() - t0) * 1e-9;
    *out = w;
    return 0;
}
