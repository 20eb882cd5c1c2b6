/* Shared between the ref backend's files: its state, the sticky error and row access. */
#ifndef FP8_KERNELS_REF_INTERNAL_H
#define FP8_KERNELS_REF_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/kernels.h"

struct ref_ctx {
    int err_code;          /* first failure since the last sync, 0 when none */
    struct fp8_err err;

    /* The current step (copied at step_begin). */
    int32_t n_tokens;
    int32_t *tokens;       /* (n_tokens) */
    int32_t *positions;    /* (n_tokens) */
    int32_t *slots;        /* (n_tokens) */
    int32_t *tok_seq;      /* (n_tokens) sequence of each token */
    int32_t n_seqs;
    int32_t *seq_len;      /* (n_seqs) */
    int32_t *block_table;  /* (n_seqs, max_blocks_per_seq) */
    int32_t max_blocks_per_seq;
    int32_t block_size;
    int32_t n_logit_rows;
    int32_t *logit_rows;   /* (n_logit_rows) */
    bool have_step;

    float *scratch;        /* grown on demand, reused across ops */
    size_t scratch_cap;    /* floats */
};

static inline struct ref_ctx *ref_ctx_of(struct fp8_backend *be)
{
    return (struct ref_ctx *)be->ctx;
}

/* Records the first failure; later ones are dropped until sync() reports it. */
void ref_fail(struct fp8_backend *be, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool ref_failed(struct fp8_backend *be);

/* Scratch of at least n floats, or NULL after recording -ENOMEM. */
float *ref_scratch(struct fp8_backend *be, const char *op, size_t n);

/* Row r of t (its innermost dimension) as fp32, dequantized with the row scale. */
void ref_row_load(const struct fp8_tensor *t, int64_t r, float *dst);
/* Stores fp32 values into row r of t, rounding to t's dtype (F32 or BF16 activations). */
void ref_row_store(struct fp8_tensor *t, int64_t r, const float *src);

/* Checks the op's operands: dtype acceptable, shapes as stated. */
bool ref_check_act(struct fp8_backend *be, const char *op, const char *what,
                   const struct fp8_tensor *t, int64_t rows, int64_t cols);
bool ref_check_weight(struct fp8_backend *be, const char *op, const char *what,
                      const struct fp8_tensor *t);

/* The ops (kernels/ref/ops.c, attention.c, moe.c, sample.c); contracts in kernels/kernels.h. */
void ref_embed(struct fp8_backend *be, const struct fp8_tensor *table, float scale,
               struct fp8_tensor *out);
void ref_rms_norm(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                  float eps, enum fp8_norm kind, struct fp8_tensor *out);
void ref_add_rms_norm(struct fp8_backend *be, struct fp8_tensor *residual,
                      const struct fp8_tensor *x, const struct fp8_tensor *w, float eps,
                      enum fp8_norm kind, struct fp8_tensor *out);
void ref_linear(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                struct fp8_tensor *out);
void ref_rms_norm_linear(struct fp8_backend *be, const struct fp8_tensor *x,
                         const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                         const struct fp8_tensor *w, struct fp8_tensor *xn,
                         struct fp8_tensor *out);
void ref_rms_norm_linear_glu(struct fp8_backend *be, const struct fp8_tensor *x,
                             const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                             const struct fp8_tensor *w_gate_up, enum fp8_glu_act act,
                             struct fp8_tensor *xn, struct fp8_tensor *gate_up,
                             struct fp8_tensor *out);
void ref_linear_add(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                    struct fp8_tensor *y, struct fp8_tensor *residual);
void ref_linear_add_rms_norm_linear(struct fp8_backend *be, const struct fp8_tensor *x,
                                    const struct fp8_tensor *w_out, struct fp8_tensor *y,
                                    struct fp8_tensor *residual, const struct fp8_tensor *norm_w,
                                    float eps, enum fp8_norm kind, const struct fp8_tensor *w_in,
                                    enum fp8_glu_act act, struct fp8_tensor *xn,
                                    struct fp8_tensor *gate_up, struct fp8_tensor *out);
void ref_rope(struct fp8_backend *be, struct fp8_tensor *x, const struct fp8_tensor *inv_freq,
              float attn_factor);
void ref_kv_write(struct fp8_backend *be, struct fp8_kv_cache *c, int32_t layer,
                  const struct fp8_tensor *k, const struct fp8_tensor *v);
void ref_attention(struct fp8_backend *be, const struct fp8_tensor *q,
                   const struct fp8_kv_cache *c, int32_t layer, float scale, int32_t window,
                   struct fp8_tensor *out);
void ref_glu(struct fp8_backend *be, const struct fp8_tensor *gate_up, enum fp8_glu_act act,
             struct fp8_tensor *out);
void ref_moe_route(struct fp8_backend *be, const struct fp8_tensor *logits, bool norm_topk_prob,
                   struct fp8_tensor *ids, struct fp8_tensor *weights);
void ref_moe_experts(struct fp8_backend *be, const struct fp8_tensor *x,
                     const struct fp8_tensor *ids, const struct fp8_tensor *weights,
                     const struct fp8_tensor *gate_up, const struct fp8_tensor *down,
                     enum fp8_glu_act act, struct fp8_tensor *out);
void ref_gather_rows(struct fp8_backend *be, const struct fp8_tensor *x, struct fp8_tensor *out);
void ref_softcap(struct fp8_backend *be, struct fp8_tensor *x, float cap);
void ref_sample(struct fp8_backend *be, struct fp8_tensor *logits,
                const struct fp8_sample_row *rows, const int32_t *pen_ids,
                struct fp8_tensor *ids);
/* kernels/ref/group.c: the host barrier of a ref group (nothing to do alone). */
void ref_all_reduce_sum(struct fp8_backend *be, struct fp8_tensor *x);
void ref_argmax_value(struct fp8_backend *be, const struct fp8_tensor *logits,
                      struct fp8_tensor *ids, struct fp8_tensor *values);

void ref_qk_norm_rope_kv_write(struct fp8_backend *be, const struct fp8_tensor *qkv,
                               const struct fp8_tensor *q_norm, const struct fp8_tensor *k_norm,
                               float eps, enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                               float attn_factor, struct fp8_kv_cache *c, int32_t layer,
                               struct fp8_tensor *q_out);
void ref_qk_norm_rope_kv_attention(struct fp8_backend *be, const struct fp8_tensor *qkv,
                                   const struct fp8_tensor *q_norm,
                                   const struct fp8_tensor *k_norm, float eps,
                                   enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                                   float attn_factor, struct fp8_kv_cache *c, int32_t layer,
                                   struct fp8_tensor *q_out, float scale, int32_t window,
                                   struct fp8_tensor *out);

/* Row helpers shared by the ops: one row normalized in place (x / sqrt(mean(x^2) + eps)
 * * w'), one head vector rotated in place. */
void ref_norm_row(float *x, const float *w, int64_t n, float eps, enum fp8_norm kind);
void ref_rope_row(float *row, int64_t hd, int32_t position, const float *inv_freq,
                  float attn_factor);

/* Scalar activation functions (shared by glu and moe_experts). */
float ref_act(enum fp8_glu_act act, float x);

#endif
