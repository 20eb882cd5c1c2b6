/* Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3 with a sparse MLP on the layers that
 * decoder_sparse_step and mlp_only_layers select (config.layers[l].moe); the rest of the
 * model is engine/models/qwen3.c.
 *
 *   p = softmax(router(h));  top-k experts e_j with weights p_j (renormalized when
 *   norm_topk_prob);  mlp(h) = sum_j p_j * down_e(silu(gate_e(h)) * up_e(h)) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/models/models.h"

int qwen3_moe_load_experts(struct fp8_model *m, struct fp8_weights *src, int32_t l,
                           struct fp8_err *err)
{
    const struct fp8_model_config *c = &m->cfg;
    struct fp8_layer *w = &m->layers[l];
    int32_t ne = c->n_experts;
    char router[MODEL_NAME_MAX];
    const char *rnames[1] = {router};
    int64_t rshape[2] = {ne, c->hidden_size};
    model_tensor_name(m, router, l, "mlp.gate.weight");
    /* The router stays bf16 in every mode: it is tiny, and e4m3 would move ties between
     * experts (docs/numerics.md). */
    int rc = model_load_weight(m, src, &w->router, FP8_DTYPE_BF16, 2, rshape, rnames, NULL, 1,
                               err);
    if (rc < 0)
        return rc;

    /* Every expert's channels are split like a dense MLP's (the plan's moe_* ranges). */
    const struct fp8_tp_shard *s = &m->shard;
    int64_t d = c->hidden_size, i = c->moe_intermediate_size, ir = s->moe_down_cols.count;
    char (*names)[MODEL_NAME_MAX] = calloc((size_t)ne * 2, MODEL_NAME_MAX);
    struct model_part *parts = calloc((size_t)ne * 2, sizeof(*parts));
    if (!names || !parts) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory for the expert names of layer %d", l);
        goto fail;
    }
    for (int32_t e = 0; e < ne; e++) {
        char suffix[96];
        snprintf(suffix, sizeof(suffix), "mlp.experts.%d.gate_proj.weight", e);
        model_tensor_name(m, names[2 * e], l, suffix);
        snprintf(suffix, sizeof(suffix), "mlp.experts.%d.up_proj.weight", e);
        model_tensor_name(m, names[2 * e + 1], l, suffix);
        parts[2 * e] = (struct model_part){names[2 * e], i, d, s->moe_gate_up_rows[0]};
        parts[2 * e + 1] = (struct model_part){
            names[2 * e + 1], i, d, {s->moe_gate_up_rows[1].start - i, s->moe_gate_up_rows[1].count}};
    }
    int64_t gu[3] = {ne, 2 * ir, d};
    struct fp8_tp_range all_d = {0, d};
    rc = model_load_parts(m, src, &w->experts_gate_up, m->opts.weight_dtype, 3, gu, parts, 2 * ne,
                          all_d, err);
    if (rc < 0)
        goto fail;
    for (int32_t e = 0; e < ne; e++) {
        char suffix[96];
        snprintf(suffix, sizeof(suffix), "mlp.experts.%d.down_proj.weight", e);
        model_tensor_name(m, names[e], l, suffix);
        parts[e] = (struct model_part){names[e], d, i, all_d};
    }
    int64_t down[3] = {ne, d, ir};
    rc = model_load_parts(m, src, &w->experts_down, m->opts.weight_dtype, 3, down, parts, ne,
                          s->moe_down_cols, err);
fail:
    free(names);
    free(parts);
    return rc;
}

void qwen3_moe_mlp(struct fp8_model *m, int32_t l, int32_t n)
{
    const struct fp8_backend_ops *op = m->be->ops;
    struct fp8_layer *w = &m->layers[l];
    struct fp8_tensor xb = model_rows(&m->xb, n), xb2 = model_rows(&m->xb2, n);
    struct fp8_tensor logits = model_rows(&m->moe_logits, n), ids = model_rows(&m->moe_ids, n),
                      weights = model_rows(&m->moe_weights, n);
    op->linear(m->be, &xb, &w->router, &logits);
    op->moe_route(m->be, &logits, m->cfg.norm_topk_prob, &ids, &weights);
    op->moe_experts(m->be, &xb, &ids, &weights, &w->experts_gate_up, &w->experts_down, m->act,
                    &xb2);
    model_all_reduce(m, &xb2); /* each rank's experts hold a slice of their channels */
}
