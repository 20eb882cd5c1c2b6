/* The tensor-parallel sharding plan: for a model and N ranks (GPUs of one host), which
 * slice of each weight tensor rank r owns and which attention heads it computes. Pure
 * host arithmetic; the loaders of every backend and the ref simulation test share it.
 *
 * The split (Megatron-style, as vLLM does it):
 * - column-parallel (output rows split, no communication): the fused q/k/v projection by
 *   heads, the fused gate/up projection by intermediate channels (dense and per expert);
 * - row-parallel (input columns split, partial outputs summed by an all-reduce): o_proj
 *   over the rank's heads, down_proj over its intermediate channels;
 * - KV heads: split when n_kv_heads >= N (N must divide them), else replicated: each KV
 *   head lives on N / n_kv_heads ranks (N must be a multiple of n_kv_heads), so that every
 *   query head finds its GQA KV head on its own rank;
 * - lm_head vocab-parallel (rows split, the logit shards gathered); the vocabulary need not
 *   divide by N: rank r owns rows [V r / N, V (r + 1) / N);
 * - everything else (embedding table, norms, router, RoPE tables, the residual stream) is
 *   replicated on every rank.
 * Per-row weight scales (E4M3, per output channel) travel with their rows; a column slice
 * keeps every row's scale, so the sharded weights hold exactly the unsplit model's codes. */
#ifndef FP8_ENGINE_TP_PLAN_H
#define FP8_ENGINE_TP_PLAN_H

#include <stdint.h>

#include "common/err.h"
#include "engine/config.h"

#define FP8_TP_MAX_RANKS 8

struct fp8_tp_range {
    int64_t start;
    int64_t count;
};

struct fp8_tp_shard {
    int32_t rank;
    int32_t n_ranks;
    int32_t head0, n_heads;       /* query heads [head0, head0 + n_heads) */
    int32_t kv_head0, n_kv_heads; /* KV heads held (and cached) by this rank */
    /* Rows of the unsplit fused wqkv ((h + 2 kvh) * hd, D): the q, k and v parts, stacked
     * in this order into the rank's ((n_heads + 2 n_kv_heads) * hd, D). */
    struct fp8_tp_range qkv_rows[3];
    struct fp8_tp_range o_cols;          /* columns of wo (D, h * hd) */
    struct fp8_tp_range gate_up_rows[2]; /* rows of w_gate_up (2I, D): gate part, up part */
    struct fp8_tp_range down_cols;       /* columns of w_down (D, I) */
    /* The same per expert of a sparse layer, within (E, 2I', D) and (E, D, I'); zero
     * counts for dense models. */
    struct fp8_tp_range moe_gate_up_rows[2];
    struct fp8_tp_range moe_down_cols;
    struct fp8_tp_range vocab_rows; /* rows of lm_head (V, D): this rank's logit columns */
};

/* Rank `rank` of n_ranks. Sizes that must divide by N and do not (query heads, KV heads,
 * intermediate sizes), N outside [1, FP8_TP_MAX_RANKS] or a vocabulary smaller than N
 * fail with -EINVAL and a message naming the size; *out untouched on failure. */
int fp8_tp_plan_shard(const struct fp8_model_config *c, int32_t n_ranks, int32_t rank,
                      struct fp8_tp_shard *out, struct fp8_err *err);

#endif
