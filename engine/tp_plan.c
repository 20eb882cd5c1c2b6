/* The sharding plan (see tp_plan.h for the split and why). */
#include "engine/tp_plan.h"

#include <errno.h>
#include <stdbool.h>

static struct fp8_tp_range range_of(int64_t start, int64_t count)
{
    return (struct fp8_tp_range){.start = start, .count = count};
}

int fp8_tp_plan_shard(const struct fp8_model_config *c, int32_t n_ranks, int32_t rank,
                      struct fp8_tp_shard *out, struct fp8_err *err)
{
    if (!c || !out)
        return fp8_err_set(err, -EINVAL, "tensor parallel: missing config or output");
    if (n_ranks < 1 || n_ranks > FP8_TP_MAX_RANKS)
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d is not supported (1 to %d)",
                           n_ranks, FP8_TP_MAX_RANKS);
    if (rank < 0 || rank >= n_ranks)
        return fp8_err_set(err, -EINVAL, "tensor parallel: rank %d outside [0, %d)", rank,
                           n_ranks);
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab_size <= 0)
        return fp8_err_set(err, -EINVAL, "tensor parallel: config has non-positive heads, "
                           "head_dim or vocab");
    if (c->n_heads % n_ranks)
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d does not divide "
                           "num_attention_heads %d", n_ranks, c->n_heads);
    bool kv_split = c->n_kv_heads >= n_ranks;
    if (kv_split ? c->n_kv_heads % n_ranks : n_ranks % c->n_kv_heads)
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d and num_key_value_heads %d: "
                           "one must divide the other", n_ranks, c->n_kv_heads);
    bool dense = false, sparse = false;
    for (int32_t l = 0; l < c->n_layers && l < FP8_MAX_LAYERS; l++) {
        if (c->layers[l].moe)
            sparse = true;
        else
            dense = true;
    }
    if (dense && (c->intermediate_size <= 0 || c->intermediate_size % n_ranks))
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d does not divide "
                           "intermediate_size %d", n_ranks, c->intermediate_size);
    if (sparse && (c->moe_intermediate_size <= 0 || c->moe_intermediate_size % n_ranks))
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d does not divide "
                           "moe_intermediate_size %d", n_ranks, c->moe_intermediate_size);
    if (c->vocab_size < n_ranks)
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d exceeds vocab_size %d",
                           n_ranks, c->vocab_size);

    struct fp8_tp_shard s = {.rank = rank, .n_ranks = n_ranks};
    int64_t hd = c->head_dim, q_rows = (int64_t)c->n_heads * hd,
            kv_rows = (int64_t)c->n_kv_heads * hd;
    s.n_heads = c->n_heads / n_ranks;
    s.head0 = rank * s.n_heads;
    if (kv_split) {
        s.n_kv_heads = c->n_kv_heads / n_ranks;
        s.kv_head0 = rank * s.n_kv_heads;
    } else {
        /* GQA query head g reads KV head g / (h / kvh); this rank's heads all read one. */
        s.n_kv_heads = 1;
        s.kv_head0 = rank / (n_ranks / c->n_kv_heads);
    }
    s.qkv_rows[0] = range_of(s.head0 * hd, s.n_heads * hd);
    s.qkv_rows[1] = range_of(q_rows + s.kv_head0 * hd, s.n_kv_heads * hd);
    s.qkv_rows[2] = range_of(q_rows + kv_rows + s.kv_head0 * hd, s.n_kv_heads * hd);
    s.o_cols = s.qkv_rows[0];
    if (dense) {
        int64_t i = c->intermediate_size, ir = i / n_ranks;
        s.gate_up_rows[0] = range_of(rank * ir, ir);
        s.gate_up_rows[1] = range_of(i + rank * ir, ir);
        s.down_cols = range_of(rank * ir, ir);
    }
    if (sparse) {
        int64_t i = c->moe_intermediate_size, ir = i / n_ranks;
        s.moe_gate_up_rows[0] = range_of(rank * ir, ir);
        s.moe_gate_up_rows[1] = range_of(i + rank * ir, ir);
        s.moe_down_cols = range_of(rank * ir, ir);
    }
    int64_t v = c->vocab_size, v0 = v * rank / n_ranks, v1 = v * (rank + 1) / n_ranks;
    s.vocab_rows = range_of(v0, v1 - v0);
    *out = s;
    return 0;
}
