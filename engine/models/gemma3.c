/* Gemma3 text (Gemma3ForCausalLM, or the language model of
 * Gemma3ForConditionalGeneration): norms applied as (1 + w), a norm before and after both
 * the attention and the MLP, GELU-tanh gating, embeddings scaled by sqrt(hidden) in the
 * model's dtype, attention scaled by query_pre_attn_scalar^-1/2, sliding-window local
 * layers with their own RoPE base, and optional final logit soft-capping.
 *
 *   x = embed(tokens) * embed_scale
 *   for each layer:  x += post_attn_norm(attn(input_norm(x)))
 *                    x += post_ff_norm(mlp(pre_ff_norm(x)))
 *   logits = softcap(lm_head(final_norm(x))) */
#include "engine/models/models.h"

int gemma3_load(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err)
{
    int64_t d = m->cfg.hidden_size;
    for (int32_t l = 0; l < m->cfg.n_layers; l++) {
        struct fp8_layer *w = &m->layers[l];
        int rc;
        if ((rc = model_load_attention(m, src, l, err)) < 0 ||
            (rc = model_load_vector(m, src, &w->attn_post_norm, l,
                                    "post_attention_layernorm.weight", d, err)) < 0 ||
            (rc = model_load_vector(m, src, &w->mlp_norm, l, "pre_feedforward_layernorm.weight",
                                    d, err)) < 0 ||
            (rc = model_load_vector(m, src, &w->mlp_post_norm, l,
                                    "post_feedforward_layernorm.weight", d, err)) < 0 ||
            (rc = model_load_dense_mlp(m, src, l, err)) < 0)
            return rc;
    }
    return 0;
}

void gemma3_forward(struct fp8_model *m, int32_t n)
{
    const struct fp8_backend_ops *op = m->be->ops;
    const struct fp8_model_config *c = &m->cfg;
    struct fp8_tensor x = model_rows(&m->x, n), xb = model_rows(&m->xb, n),
                      xb2 = model_rows(&m->xb2, n);

    op->embed(m->be, &m->embed, c->embed_scale, &x);
    op->rms_norm(m->be, &x, &m->layers[0].attn_norm, c->rms_norm_eps, m->norm_kind, &xb);
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct fp8_layer *w = &m->layers[l];
        model_attention(m, l, n);
        op->rms_norm(m->be, &xb2, &w->attn_post_norm, c->rms_norm_eps, m->norm_kind, &xb2);
        op->add_rms_norm(m->be, &x, &xb2, &w->mlp_norm, c->rms_norm_eps, m->norm_kind, &xb);
        model_dense_mlp(m, l, n);
        op->rms_norm(m->be, &xb2, &w->mlp_post_norm, c->rms_norm_eps, m->norm_kind, &xb2);
        const struct fp8_tensor *next =
            l + 1 < c->n_layers ? &m->layers[l + 1].attn_norm : &m->final_norm;
        op->add_rms_norm(m->be, &x, &xb2, next, c->rms_norm_eps, m->norm_kind, &xb);
    }
}
