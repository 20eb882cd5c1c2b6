/* Qwen3 dense (Qwen3ForCausalLM): pre-norm decoder, q/k RMSNorm per head, SwiGLU MLP.
 * Qwen3-MoE (Qwen3MoeForCausalLM) is the same model with a sparse MLP on the layers that
 * config.layers[l].moe marks (engine/models/qwen3_moe.c); fp8_model_create rejects such a
 * layer in any other architecture.
 *
 *   x = embed(tokens)
 *   for each layer:  x += o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v))  on rms(x)
 *                    x += down(silu(gate) * up)                              on rms(x)
 *   logits = lm_head(rms(x)) */
#include "engine/models/models.h"

int qwen3_load(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err)
{
    for (int32_t l = 0; l < m->cfg.n_layers; l++) {
        int rc;
        if ((rc = model_load_attention(m, src, l, err)) < 0 ||
            (rc = model_load_vector(m, src, &m->layers[l].mlp_norm, l,
                                    "post_attention_layernorm.weight", m->cfg.hidden_size,
                                    err)) < 0)
            return rc;
        rc = m->cfg.layers[l].moe ? qwen3_moe_load_experts(m, src, l, err)
                                  : model_load_dense_mlp(m, src, l, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

void qwen3_forward(struct fp8_model *m, int32_t n)
{
    const struct fp8_backend_ops *op = m->be->ops;
    const struct fp8_model_config *c = &m->cfg;
    struct fp8_tensor x = model_rows(&m->x, n), xb = model_rows(&m->xb, n),
                      xb2 = model_rows(&m->xb2, n);
    /* A tensor-parallel rank all-reduces o/down before the residual add: unfused blocks. */
    bool fused = m->shard.n_ranks == 1;
    for (int32_t l = 0; l < c->n_layers; l++)
        fused = fused && !c->layers[l].moe;

    op->embed(m->be, &m->embed, 1.0f, &x);
    if (fused) {
        /* kernels.h's fused ops: each residual add with the projection before it and the
         * norm and projection after it, glu with gate_up (on cuda at decode sizes: four
         * GEMVs a layer, the norms prepared in their epilogues) */
        model_dense_layers_fused(m, n);
        op->rms_norm(m->be, &x, &m->final_norm, c->rms_norm_eps, m->norm_kind, &xb);
        return;
    }
    op->rms_norm(m->be, &x, &m->layers[0].attn_norm, c->rms_norm_eps, m->norm_kind, &xb);
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct fp8_layer *w = &m->layers[l];
        model_attention(m, l, n);
        op->add_rms_norm(m->be, &x, &xb2, &w->mlp_norm, c->rms_norm_eps, m->norm_kind, &xb);
        if (c->layers[l].moe)
            qwen3_moe_mlp(m, l, n);
        else
            model_dense_mlp(m, l, n);
        const struct fp8_tensor *next =
            l + 1 < c->n_layers ? &m->layers[l + 1].attn_norm : &m->final_norm;
        op->add_rms_norm(m->be, &x, &xb2, next, c->rms_norm_eps, m->norm_kind, &xb);
    }
}
