/* What the architecture files share: the loaded model's layout and the building blocks
 * every forward pass is written with. Private to engine/. */
#ifndef FP8_ENGINE_MODELS_MODELS_H
#define FP8_ENGINE_MODELS_MODELS_H

#include "engine/model.h"
#include "engine/tp_plan.h"

struct fp8_layer {
    struct fp8_tensor attn_norm;       /* (D) input_layernorm */
    struct fp8_tensor wqkv;            /* ((h + 2 kvh) * hd, D): q_proj, k_proj, v_proj rows */
    struct fp8_tensor q_norm;          /* (hd) */
    struct fp8_tensor k_norm;          /* (hd) */
    struct fp8_tensor wo;              /* (D, h * hd) */
    struct fp8_tensor attn_post_norm;  /* (D) Gemma3 post_attention_layernorm */
    struct fp8_tensor mlp_norm;        /* (D) Qwen3 post_attention_layernorm, Gemma3 pre_feedforward */
    struct fp8_tensor mlp_post_norm;   /* (D) Gemma3 post_feedforward_layernorm */
    struct fp8_tensor w_gate_up;       /* (2I, D) dense MLP: gate rows, then up rows */
    struct fp8_tensor w_down;          /* (D, I) */
    struct fp8_tensor router;          /* (E, D) MoE gate, bf16 in every mode */
    struct fp8_tensor experts_gate_up; /* (E, 2I', D) */
    struct fp8_tensor experts_down;    /* (E, D, I') */
};

struct model_tp;

/* Shapes below are the unsplit model's; a rank of a tensor-parallel group holds its shard
 * (h, kvh, I, I', V: the shard's heads, KV heads, channels and vocab rows). */
struct fp8_model {
    struct fp8_model_config cfg;
    struct fp8_model_opts opts;
    struct fp8_backend *be;
    enum fp8_norm norm_kind;
    enum fp8_glu_act act;
    struct fp8_tp_shard shard; /* what this model holds (one rank of one: all of it) */
    struct model_tp *tp;       /* over a backend group: the rank threads, each with its
                                  shard model (engine/models/tp.c); the fields below are
                                  then unused. NULL otherwise */

    struct fp8_tensor embed;          /* (V, D) bf16 */
    struct fp8_tensor lm_head;        /* (V, D) weight dtype (a copy of embed when tied) */
    struct fp8_tensor final_norm;     /* (D) */
    struct fp8_tensor inv_freq;       /* (hd / 2) global layers */
    struct fp8_tensor inv_freq_local; /* (hd / 2) sliding layers */
    struct fp8_layer *layers;         /* (n_layers) */
    struct fp8_kv_cache kv;

    /* Activations for up to max_tokens rows. */
    struct fp8_tensor x;       /* (T, D) the residual stream */
    struct fp8_tensor xb;      /* (T, D) normed input of a block */
    struct fp8_tensor xb2;     /* (T, D) output of a block */
    struct fp8_tensor qkv;     /* (T, (h + 2 kvh) * hd) */
    struct fp8_tensor q;       /* (T, h, hd) */
    struct fp8_tensor att;     /* (T, h * hd) */
    struct fp8_tensor hb;      /* (T, 2I) gate and up */
    struct fp8_tensor hb2;     /* (T, I) */
    struct fp8_tensor moe_logits;  /* (T, E) */
    struct fp8_tensor moe_ids;     /* (T, k) i32 */
    struct fp8_tensor moe_weights; /* (T, k) f32 */
    struct fp8_tensor last;    /* (T, D) rows that get logits */
    struct fp8_tensor logits;  /* (T, V) f32 */
    struct fp8_tensor ids;     /* (T) i32 greedy picks */
    struct fp8_tensor maxv;    /* (T) f32 the logit of each pick (a rank's candidate) */
    int32_t *logit_rows;       /* (T) host */

    /* Decode steps padded to graph buckets (fp8_model_warmup; engine/model.c). */
    int32_t pad_max;           /* the largest bucket; 0: no padding */
    int32_t *pad_buf;          /* host: the padded step's arrays */
    size_t pad_cap;            /* int32 values */
    uint8_t *pad_want;         /* (pad_max) */
    struct fp8_batch padded;         /* the step between model_step_begin and _finish, */
    const struct fp8_batch *run;     /* padded or the caller's */
    int32_t n_run;                   /* its logit rows (the real ones first) */
    struct fp8_sample_row *greedy_rows; /* (T) temperature 0, for fp8_model_forward_greedy */
};

/* ---- loading (engine/models/common.c) ---- */
#define MODEL_NAME_MAX 192

/* "<tensor_prefix>layers.<layer>.<suffix>", or "<tensor_prefix><suffix>" for layer < 0. */
void model_tensor_name(const struct fp8_model *m, char name[MODEL_NAME_MAX], int32_t layer,
                       const char *suffix);
/* The tensors names[] stacked along their rows into t of dtype and shape ne: file tensor
 * i must be (part_rows[i], ne[n_dims - 1]), or (rows(ne) / n_names, ...) each when
 * part_rows is NULL. Converted row by row (E4M3 rows get their own scale), so the host
 * holds only the stored bytes. */
int model_load_weight(struct fp8_model *m, struct fp8_weights *src, struct fp8_tensor *t,
                      enum fp8_dtype dtype, int32_t n_dims, const int64_t *ne,
                      const char *const *names, const int64_t *part_rows, int32_t n_names,
                      struct fp8_err *err);
/* One checkpoint tensor's part of a stacked weight: rows [take.start, +take.count) of the
 * (rows, cols) file tensor. */
struct model_part {
    const char *name;
    int64_t rows, cols;
    struct fp8_tp_range take;
};
/* t (ne, last dimension = cols.count) = the parts' rows stacked in order, each restricted
 * to columns cols. E4M3 rows are quantized whole before the column slice is taken, so a
 * shard holds exactly the unsplit model's codes and its row scales. */
int model_load_parts(struct fp8_model *m, struct fp8_weights *src, struct fp8_tensor *t,
                     enum fp8_dtype dtype, int32_t n_dims, const int64_t *ne,
                     const struct model_part *parts, int32_t n_parts, struct fp8_tp_range cols,
                     struct fp8_err *err);
/* An f32 vector of n values: "<prefix>layers.<layer>.<suffix>" (layer < 0: no layer). */
int model_load_vector(struct fp8_model *m, struct fp8_weights *src, struct fp8_tensor *t,
                      int32_t layer, const char *suffix, int64_t n, struct fp8_err *err);
/* q/k/v/o projections and q/k norms of layer l (Qwen3 and Gemma3 name them alike). */
int model_load_attention(struct fp8_model *m, struct fp8_weights *src, int32_t l,
                         struct fp8_err *err);
/* gate_proj + up_proj fused into w_gate_up, and down_proj, of intermediate size inter. */
int model_load_dense_mlp(struct fp8_model *m, struct fp8_weights *src, int32_t l,
                         struct fp8_err *err);

/* ---- forward building blocks (engine/models/common.c), over the first n rows ---- */
/* xb (n, D) -> xb2 (n, D): fused qkv projection, q/k norm + RoPE + KV write, attention,
 * o_proj. */
void model_attention(struct fp8_model *m, int32_t l, int32_t n);
/* xb (n, D) -> xb2 (n, D): gate_up, activation, down. */
void model_dense_mlp(struct fp8_model *m, int32_t l, int32_t n);
/* Every layer of a pre-norm dense decoder as fused ops straight on the residual stream x
 * (n, D), ending with x after the last layer's residual add:
 *   x += o_proj(attention(qkv(rms_norm(x, attn_norm)))),
 *   x += down(glu(gate_up(rms_norm(x, mlp_norm)))),
 * each residual add fused with the norm and projection after it
 * (linear_add_rms_norm_linear). Only where nothing has to happen between a block's last
 * projection and the residual add: a tensor-parallel group of more than one all-reduces
 * o/down first and takes the unfused blocks above. */
void model_dense_layers_fused(struct fp8_model *m, int32_t n);

/* x = the sum of x over the tensor-parallel group (nothing alone). */
void model_all_reduce(struct fp8_model *m, struct fp8_tensor *x);
/* A view of the first n rows of an activation tensor. */
struct fp8_tensor model_rows(const struct fp8_tensor *t, int32_t n);

/* ---- per architecture ---- */
/* Qwen3 and Qwen3-MoE. */
int qwen3_load(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err);
void qwen3_forward(struct fp8_model *m, int32_t n);
/* The router and experts of Qwen3-MoE sparse layer l. */
int qwen3_moe_load_experts(struct fp8_model *m, struct fp8_weights *src, int32_t l,
                           struct fp8_err *err);
/* xb (n, D) -> xb2 (n, D) through layer l's experts. */
void qwen3_moe_mlp(struct fp8_model *m, int32_t l, int32_t n);
/* ---- tensor parallel (engine/models/tp.c) ---- */
/* m (cfg, opts, be = rank 0 of a group) gets its rank threads, each loading its shard of
 * src on its backend. */
int model_tp_create(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err);
void model_tp_free(struct model_tp *tp); /* accepts NULL */
/* What one step returns, in host memory: logits (rows, V of this model), or ids drawn by
 * the sample op under rows (and pen_ids), or (vals non-NULL: a vocab shard's greedy
 * candidates) ids and their logits. */
struct model_step_out {
    float *logits;
    const struct fp8_sample_row *rows;
    const int32_t *pen_ids;
    int32_t *ids;
    float *vals;
};
/* One step on every rank: logits (rows, V) gathered from the vocab shards into host memory,
 * or ids: greedy rows without penalties picked from every shard's candidate (lowest id on
 * ties), other rows drawn on the host from the gathered logits. */
int model_tp_forward(struct fp8_model *m, const struct fp8_batch *b,
                     const struct model_step_out *out, struct fp8_err *err);
/* Rank r's shard model of a model built over a group (tests compare its tensors). */
struct fp8_model *model_tp_rank(const struct fp8_model *m, int32_t r);
/* A shard model (shard given) on be: fp8_model_create's body. */
int model_build(struct fp8_weights *src, struct fp8_backend *be, const struct fp8_model_opts *o,
                const struct fp8_tp_shard *shard, struct fp8_model **out, struct fp8_err *err);
/* The checks every model makes of a step before launching it (identical on every rank,
 * so a group checks once, before handing the step out). */
int model_check_batch(const struct fp8_model *m, const struct fp8_batch *b, struct fp8_err *err);
/* The step on one model into out, in two halves: the checks and the backend's step_begin
 * (which may allocate), returning the logit rows; then the forward, sync and the copies
 * out, returning the rows or a negative errno. A group
 * puts a barrier between them: no rank allocates or frees device or pinned memory while a
 * peer's collective waits for it (a cudaFreeHost, say, that waits for the peer's device,
 * whose NCCL kernel waits for this rank, would never return). */
int model_step_begin(struct fp8_model *m, const struct fp8_batch *b,
                     const struct model_step_out *out, struct fp8_err *err);
int model_step_finish(struct fp8_model *m, int32_t n_rows, const struct model_step_out *out,
                      struct fp8_err *err);

int gemma3_load(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err);
void gemma3_forward(struct fp8_model *m, int32_t n);

#endif
