/* The op interface: what model code (engine/models/) calls to run a forward pass, and
 * what every backend implements over its own memory. `ref` (kernels/ref/) is plain C11
 * fp32 arithmetic; `cuda` (kernels/cuda/) is the product. Both compute over the same
 * stored formats, defined here, so the ref backend is the oracle for every CUDA kernel.
 *
 * Conventions
 * - Tensors are dense, row-major, outermost dimension first (as safetensors stores them).
 *   A row is the innermost dimension; "rows" are all the outer dimensions flattened.
 * - Activations have the backend's act_dtype (ref: F32; cuda: BF16). Logits are F32.
 *   Accumulation is fp32 everywhere.
 * - Weights are E4M3 with one fp32 scale per row (= per output channel of a linear
 *   layer; per expert and output channel for (E, out, in) expert tensors) or BF16 (the
 *   explicit --weights bf16 exactness mode). Dequantized value = e4m3_to_f32(q) * scale.
 *   Quantization (fp8_quantize_rows_e4m3) happens once, on the host, at load.
 * - Norm weights and RoPE inverse frequencies are F32 vectors.
 * - Ops are launched in order and return nothing: a backend records the first failure
 *   (op name, shapes, cause) and reports it from sync(), like a CUDA stream does. Model
 *   code calls sync() once per step.
 * - Ops that need the step's layout (token ids, positions, KV slots, block tables, logit
 *   rows) read it from the last step_begin() call; backends copy it to their memory there
 *   once per step, so that decode steps can be captured and replayed as CUDA graphs.
 *
 * KV cache (paged): n_blocks blocks of block_size token slots, per layer, separate K and
 * V, byte layout (n_layers, n_blocks, block_size, n_kv_heads, head_dim). E4M3 caches
 * carry one fp32 scale per (layer, slot, kv head) for K and for V, layout (n_layers,
 * n_blocks, block_size, n_kv_heads): scale = amax / 448 over that head's head_dim values
 * (1 when amax is 0), q = f32_to_e4m3(x / scale) (IEEE fp32 division). docs/numerics.md
 * says why this granularity. */
#ifndef FP8_KERNELS_KERNELS_H
#define FP8_KERNELS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/batch.h" /* the plain step layout; kernels use no engine code */

enum fp8_dtype {
    FP8_DTYPE_F32,
    FP8_DTYPE_BF16,
    FP8_DTYPE_E4M3, /* with per-row fp32 scales */
    FP8_DTYPE_I32,
    FP8_DTYPE_COUNT,
};

#define FP8_TENSOR_MAX_DIMS 4

struct fp8_tensor {
    enum fp8_dtype dtype;
    int32_t n_dims;
    int64_t ne[FP8_TENSOR_MAX_DIMS]; /* (n_dims) outermost first */
    void *data;   /* backend memory, owned by the backend that allocated it */
    float *scale; /* E4M3: (rows) fp32 scales in backend memory; NULL for other dtypes */
};

enum fp8_norm {
    FP8_NORM_RMS,          /* x / rms(x) * w           (Qwen3) */
    FP8_NORM_RMS_PLUS_ONE, /* x / rms(x) * (1 + w)     (Gemma3) */
};

enum fp8_glu_act {
    FP8_GLU_SILU,      /* silu(gate) * up */
    FP8_GLU_GELU_TANH, /* gelu_tanh(gate) * up  (PyTorch's approximate='tanh') */
};

struct fp8_kv_cache_desc {
    enum fp8_dtype dtype; /* E4M3, BF16, or F32 (ref backend only) */
    int32_t n_layers;
    int32_t n_blocks;
    int32_t block_size; /* token slots per block */
    int32_t n_kv_heads;
    int32_t head_dim;
};

struct fp8_kv_cache {
    struct fp8_kv_cache_desc desc;
    void *k; /* (n_layers, n_blocks, block_size, n_kv_heads, head_dim) in backend memory */
    void *v;
    float *k_scale; /* E4M3: (n_layers, n_blocks, block_size, n_kv_heads); NULL otherwise */
    float *v_scale;
};

/* One logit row's sampling (the op `sample`). In order, as HF and vLLM apply them:
 * 1. penalties, on the distinct history tokens pen_ids[pen_start, pen_start + n_pen):
 *    each logit l becomes l / repetition_penalty when l > 0, else l * repetition_penalty;
 *    then presence_penalty is subtracted from the first n_pen_gen of them (the distinct
 *    tokens the request generated);
 * 2. temperature 0: the largest logit, lowest id on ties (greedy); nothing else applies;
 * 3. candidates in descending logit order, lower id first on ties; top_k keeps the first
 *    top_k; w_i = exp((l_i - l_max) / temperature);
 * 4. top_p keeps the shortest head whose w sum reaches top_p times the sum of the kept w;
 * 5. min_p keeps the head with w_i >= min_p (w of the largest logit is 1);
 * 6. the draw: u = philox4x32_10(counter {step, 0, 0, 0}, key {seed lo, seed hi})[0] as a
 *    24-bit unit float; the first kept candidate whose running w sum exceeds u times the
 *    sum of the kept w. A request's draws are a function of (seed, step) only, whatever
 *    else shares the batch. Backends may sum w in another order or precision (docs/
 *    numerics.md bounds how rarely that moves a draw). */
struct fp8_sample_row {
    float temperature;        /* 0: greedy */
    int32_t top_k;            /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off */
    float presence_penalty;   /* 0: off */
    uint64_t seed;
    uint32_t step;            /* the draw's Philox counter: the request's generated tokens */
    int32_t pen_start;        /* into pen_ids */
    int32_t n_pen;            /* distinct history tokens (0 without penalties) */
    int32_t n_pen_gen;        /* of which the first n_pen_gen were generated */
};

struct fp8_backend;

/* Shapes below: n = tokens in the step (or a row view of them), h = query heads,
 * kvh = KV heads, hd = head_dim, D = hidden size, I = MLP hidden size, E = experts,
 * k = experts per token, V = vocab, L = logit rows of the step. */
struct fp8_backend_ops {
    /* ---- memory and stepping ---- */
    /* Allocates t with this dtype and shape (and its scales when E4M3); contents undefined. */
    int (*tensor_alloc)(struct fp8_backend *be, struct fp8_tensor *t, enum fp8_dtype dtype,
                        int32_t n_dims, const int64_t *ne, struct fp8_err *err);
    void (*tensor_free)(struct fp8_backend *be, struct fp8_tensor *t); /* NULL data is fine */
    /* Whole-tensor copies from/to host memory; scale only for E4M3 (rows floats). */
    int (*tensor_set)(struct fp8_backend *be, struct fp8_tensor *t, const void *data,
                      const float *scale, struct fp8_err *err);
    int (*tensor_get)(struct fp8_backend *be, const struct fp8_tensor *t, void *data,
                      float *scale, struct fp8_err *err);

    int (*kv_cache_alloc)(struct fp8_backend *be, struct fp8_kv_cache *c,
                          const struct fp8_kv_cache_desc *desc, struct fp8_err *err);
    void (*kv_cache_free)(struct fp8_backend *be, struct fp8_kv_cache *c);

    /* Validates the step (ids < vocab is the model's job; here: slots inside the cache,
     * blocks inside the pool, positions < seq_len) and copies it to backend memory.
     * logit_rows: (n_logit_rows) token indices whose final hidden states gather_rows picks. */
    int (*step_begin)(struct fp8_backend *be, const struct fp8_batch *b,
                      const int32_t *logit_rows, int32_t n_logit_rows, struct fp8_err *err);
    /* Waits for every op launched so far; returns the first recorded failure, then clears it. */
    int (*sync)(struct fp8_backend *be, struct fp8_err *err);
    void (*destroy)(struct fp8_backend *be);

    /* ---- ops (launched in order; see the sticky-error convention above) ---- */
    /* out (n, D) = table[token] * scale; table (V, D) BF16 or E4M3 (row scale). */
    void (*embed)(struct fp8_backend *be, const struct fp8_tensor *table, float scale,
                  struct fp8_tensor *out);
    /* Over each row of x (rows, C): out = x / sqrt(mean(x^2) + eps) * w'; w (C) F32.
     * Per-head q/k norm is this op over a (n * heads, hd) view. out may alias x. */
    void (*rms_norm)(struct fp8_backend *be, const struct fp8_tensor *x,
                     const struct fp8_tensor *w, float eps, enum fp8_norm kind,
                     struct fp8_tensor *out);
    /* residual += x, then out = rms_norm(residual): the pre-norm block boundary. */
    void (*add_rms_norm)(struct fp8_backend *be, struct fp8_tensor *residual,
                         const struct fp8_tensor *x, const struct fp8_tensor *w, float eps,
                         enum fp8_norm kind, struct fp8_tensor *out);
    /* out (n, out) = x (n, in) @ w^T; w (out, in) E4M3 or BF16; out act_dtype or F32. */
    void (*linear)(struct fp8_backend *be, const struct fp8_tensor *x,
                   const struct fp8_tensor *w, struct fp8_tensor *out);
    /* Fused decode sequences (each is exactly the composition named, which is how the ref
     * backend implements it; the cuda backend folds what pays into its decode GEMV and
     * runs the rest, and prefill-sized n, as the composition). The scratch tensors receive the
     * intermediate results of the composition or nothing: their contents are undefined
     * afterwards. Model code uses them where nothing has to happen between the pieces
     * (no all-reduce of a tensor-parallel group before the residual add).
     * out (n, out) = linear(rms_norm(x, norm_w), w); xn (n, D) scratch. */
    void (*rms_norm_linear)(struct fp8_backend *be, const struct fp8_tensor *x,
                            const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                            const struct fp8_tensor *w, struct fp8_tensor *xn,
                            struct fp8_tensor *out);
    /* out (n, I) = glu(linear(rms_norm(x, norm_w), w_gate_up), act); w_gate_up (2I, D);
     * xn (n, D) and gate_up (n, 2I) scratch. */
    void (*rms_norm_linear_glu)(struct fp8_backend *be, const struct fp8_tensor *x,
                                const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                                const struct fp8_tensor *w_gate_up, enum fp8_glu_act act,
                                struct fp8_tensor *xn, struct fp8_tensor *gate_up,
                                struct fp8_tensor *out);
    /* residual (n, out) += linear(x, w), rounded as add_rms_norm's residual update; y
     * (n, out) scratch. */
    void (*linear_add)(struct fp8_backend *be, const struct fp8_tensor *x,
                       const struct fp8_tensor *w, struct fp8_tensor *y,
                       struct fp8_tensor *residual);
    /* One boundary of the pre-norm residual stream: linear_add(x, w_out, y, residual)
     * (residual (n, D)), then rms_norm_linear(residual, norm_w, eps, kind, w_in, xn, out),
     * or with gate_up non-NULL rms_norm_linear_glu(residual, norm_w, eps, kind, w_in =
     * the fused (2I, D) gate_up weight, act, xn, gate_up, out). y (n, D), xn (n, D) and
     * gate_up scratch. */
    void (*linear_add_rms_norm_linear)(struct fp8_backend *be, const struct fp8_tensor *x,
                                       const struct fp8_tensor *w_out, struct fp8_tensor *y,
                                       struct fp8_tensor *residual,
                                       const struct fp8_tensor *norm_w, float eps,
                                       enum fp8_norm kind, const struct fp8_tensor *w_in,
                                       enum fp8_glu_act act, struct fp8_tensor *xn,
                                       struct fp8_tensor *gate_up, struct fp8_tensor *out);
    /* Optional (model code does not call it; the ref backend has it for tests and as the
     * definition qk_norm_rope_kv_write is written in): in place on x (n, heads, hd),
     * rotate-half (NeoX) pairs (i, i + hd/2): angle = position * inv_freq[i]; cos and sin
     * are multiplied by attn_factor. inv_freq (hd/2) F32 encodes the rope type (default,
     * linear, llama3, yarn: see engine/model.c). */
    void (*rope)(struct fp8_backend *be, struct fp8_tensor *x, const struct fp8_tensor *inv_freq,
                 float attn_factor);
    /* Optional, as rope: writes k, v (n, kvh, hd) of layer into the cache at the step's slots. */
    void (*kv_write)(struct fp8_backend *be, struct fp8_kv_cache *c, int32_t layer,
                     const struct fp8_tensor *k, const struct fp8_tensor *v);
    /* The front of attention, from the fused projection qkv (n, (h + 2 kvh) * hd) =
     * [q heads | k heads | v heads] (kvh, hd from the cache): q_out (n, h, hd) =
     * rope(rms_norm(q head, q_norm)); k = rope(rms_norm(k head, k_norm)) and v go into the
     * cache at the step's slots. Exactly rms_norm per head, then rope, then kv_write. */
    void (*qk_norm_rope_kv_write)(struct fp8_backend *be, const struct fp8_tensor *qkv,
                                  const struct fp8_tensor *q_norm,
                                  const struct fp8_tensor *k_norm, float eps, enum fp8_norm kind,
                                  const struct fp8_tensor *inv_freq, float attn_factor,
                                  struct fp8_kv_cache *c, int32_t layer,
                                  struct fp8_tensor *q_out);
    /* out (n, h * hd): for each token at position p of its sequence, softmax(q . k * scale)
     * over the cached positions j with j <= p and, when window > 0, j > p - window; GQA
     * head g reads KV head g / (h / kvh). Prefill chunks and decode tokens mix freely:
     * every key it reads was written by kv_write in this or an earlier step. */
    void (*attention)(struct fp8_backend *be, const struct fp8_tensor *q,
                      const struct fp8_kv_cache *c, int32_t layer, float scale, int32_t window,
                      struct fp8_tensor *out);
    /* qk_norm_rope_kv_write(qkv, q_norm, k_norm, eps, kind, inv_freq, attn_factor, c,
     * layer, q_out), then attention(q_out, c, layer, scale, window, out), where a backend
     * can in one pass (q_out is then scratch: what it holds after is unspecified). */
    void (*qk_norm_rope_kv_attention)(struct fp8_backend *be, const struct fp8_tensor *qkv,
                                      const struct fp8_tensor *q_norm,
                                      const struct fp8_tensor *k_norm, float eps,
                                      enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                                      float attn_factor, struct fp8_kv_cache *c, int32_t layer,
                                      struct fp8_tensor *q_out, float scale, int32_t window,
                                      struct fp8_tensor *out);
    /* out (n, I) = act(gate_up[:, :I]) * gate_up[:, I:]; gate_up (n, 2I). */
    void (*glu)(struct fp8_backend *be, const struct fp8_tensor *gate_up, enum fp8_glu_act act,
                struct fp8_tensor *out);
    /* Router: p = softmax(logits (n, E)) in fp32; ids (n, k) I32 = the k largest (lower
     * index first on ties), weights (n, k) F32 = their p, divided by their sum when
     * norm_topk_prob. */
    void (*moe_route)(struct fp8_backend *be, const struct fp8_tensor *logits, bool norm_topk_prob,
                      struct fp8_tensor *ids, struct fp8_tensor *weights);
    /* out (n, D) = sum_j weights[t, j] * down_e(glu(gate_up_e(x_t))), e = ids[t, j];
     * gate_up (E, 2I, D), down (E, D, I), E4M3 (per expert and row scales) or BF16. */
    void (*moe_experts)(struct fp8_backend *be, const struct fp8_tensor *x,
                        const struct fp8_tensor *ids, const struct fp8_tensor *weights,
                        const struct fp8_tensor *gate_up, const struct fp8_tensor *down,
                        enum fp8_glu_act act, struct fp8_tensor *out);
    /* out (L, D) = x[logit_rows] (rows chosen at step_begin). */
    void (*gather_rows)(struct fp8_backend *be, const struct fp8_tensor *x, struct fp8_tensor *out);
    /* In place: x = cap * tanh(x / cap) (Gemma's final logit soft-capping). */
    void (*softcap)(struct fp8_backend *be, struct fp8_tensor *x, float cap);

    /* Optional (NULL: unsupported): fills t in backend memory with random values from
     * seed, for benchmarks with the exact shapes of a real model and no host copy (the
     * values are not the host generator's): E4M3 random finite codes with row scales
     * that keep a linear layer's outputs O(1) for O(1) inputs, BF16 uniform with std
     * 0.02, F32 uniform in [0.9, 1.1] (norm weights). */
    int (*tensor_fill_random)(struct fp8_backend *be, struct fp8_tensor *t, uint64_t seed,
                              struct fp8_err *err);
    /* ids (L) I32 = one draw from each row r of logits (L, V) F32 under rows[r] (host
     * memory, L entries; penalty ids in pen_ids, host memory), as struct fp8_sample_row
     * defines it. logits may be modified (penalties are applied in place). Deterministic: the
     * same logits, rows and seeds give the same ids on every run and every device of one
     * kind (tensor-parallel ranks draw alike). The cuda backend runs it after a replayed
     * decode graph (it is never captured), so its parameters may change every step. */
    void (*sample)(struct fp8_backend *be, struct fp8_tensor *logits,
                   const struct fp8_sample_row *rows, const int32_t *pen_ids,
                   struct fp8_tensor *ids);

    /* ---- tensor parallel (optional: NULL on a backend that cannot join a group) ---- */
    /* In place: x (any shape, act_dtype) = the sum of x over the backend's group, every
     * rank calling it in the same order with the same shape (the row-parallel o/down
     * partials). Alone or in a group of one: nothing to do. */
    void (*all_reduce_sum)(struct fp8_backend *be, struct fp8_tensor *x);
    /* ids (L) I32 = index of the largest value of each row of logits (L, V) F32 (the lowest
     * index on ties, as sample at temperature 0) and values (L) F32 = the value there: a
     * vocab shard's greedy candidate, compared across ranks by the caller. */
    void (*argmax_value)(struct fp8_backend *be, const struct fp8_tensor *logits,
                         struct fp8_tensor *ids, struct fp8_tensor *values);
};

#define FP8_BACKEND_MAX_RANKS 8
/* A step's collectives wait this long for a peer before the group is aborted: far past a
 * healthy step (a 2048-token prefill of Qwen3-8B takes under a second), short enough that
 * a dead rank is reported instead of hanging the daemon. */
#define FP8_BACKEND_GROUP_TIMEOUT_MS 60000

/* A tensor-parallel group: N backends of one kind (cuda: one per device, 0..N-1, joined by
 * an NCCL communicator; ref: host memory, joined by a barrier), each driven by its own
 * thread, whose all_reduce_sum calls meet. A rank that fails aborts the group
 * (fp8_backend_group_abort): every collective waiting for it, and every later one, fails
 * instead of waiting for a peer that will never come; no wait lasts longer than
 * timeout_ms. An aborted group cannot recover: free it. */
struct fp8_backend_group {
    int32_t n_ranks;
    struct fp8_backend *rank[FP8_BACKEND_MAX_RANKS]; /* rank[r]->tp_rank == r */
    int32_t timeout_ms; /* the longest a rank waits for its peers */
    int aborted;        /* read and set with __atomic builtins (threads of every rank) */
    void *impl;         /* the kind's shared state, freed by impl_free */
    void (*impl_free)(void *impl);
    void (*impl_wake)(void *impl); /* wakes waiters after an abort (NULL: they poll) */
};


struct fp8_backend {
    const struct fp8_backend_ops *ops;
    const char *name;         /* "ref", "cuda" */
    enum fp8_dtype act_dtype; /* activations between ops */
    bool kv_f32_ok;           /* whether F32 KV caches are allowed (ref only) */
    bool enforce_eager;       /* set by the caller before the first step: cuda launches
                                 every op (no CUDA graphs for decode steps) */
    bool decode_graphs;       /* set by the backend: decode steps run as graphs captured
                                 per shape unless enforce_eager (cuda) */
    int64_t n_graph_captures; /* set by the backend: decode-step graphs captured so far */
    void *ctx;                /* the backend's own state */
    int32_t tp_rank;                 /* this backend's rank in group */
    struct fp8_backend_group *group; /* NULL when alone */
};

/* "ref" or "cuda". A backend not built into this binary is an error naming it, never a
 * fallback to another one. *out untouched on failure. */
int fp8_backend_create(const char *name, struct fp8_backend **out, struct fp8_err *err);
void fp8_backend_free(struct fp8_backend *be); /* accepts NULL; rank 0 frees its group */

/* A group of n_ranks backends of kind name (1..FP8_BACKEND_MAX_RANKS; cuda: at most the
 * visible devices). *out = rank 0, whose ->group lists every rank; fp8_backend_free(*out)
 * frees them all. "cuda" sets NCCL_NVLS_ENABLE=0 (NVLink multicast stays off, whatever the
 * environment said) before NCCL starts. *out untouched on failure. */
int fp8_backend_group_create(const char *name, int32_t n_ranks, struct fp8_backend **out,
                             struct fp8_err *err);
/* Marks the group failed and wakes every rank waiting in a collective. */
void fp8_backend_group_abort(struct fp8_backend_group *g);
bool fp8_backend_group_aborted(const struct fp8_backend_group *g);

/* The step checks every backend's step_begin makes before copying the step: seq_start
 * runs from 0 to n_tokens without decreasing, every sequence's length fits its block
 * table, every position lies inside its sequence, logit rows inside the step. */
int fp8_batch_check(const struct fp8_batch *b, const int32_t *logit_rows, int32_t n_logit_rows,
                    struct fp8_err *err);

/* The checks every backend's sample op makes: each row's parameters in range (as
 * fp8_sampling_params_check), n_pen_gen <= n_pen, penalty ids inside the vocabulary;
 * *n_pen_ids = the length of pen_ids the rows use. */
int fp8_sample_rows_check(const struct fp8_sample_row *rows, int64_t n_rows,
                          const int32_t *pen_ids, int64_t vocab, int64_t *n_pen_ids,
                          struct fp8_err *err);

/* ---- descriptor helpers (host-side, backend independent; kernels/kernels.c) ---- */
size_t fp8_dtype_size(enum fp8_dtype dtype);
const char *fp8_dtype_name(enum fp8_dtype dtype);
int64_t fp8_tensor_numel(const struct fp8_tensor *t);
int64_t fp8_tensor_rows(const struct fp8_tensor *t); /* numel / ne[n_dims - 1] */
size_t fp8_tensor_nbytes(const struct fp8_tensor *t);  /* data only, without scales */
/* Rows [row0, row0 + n_rows) of the outermost dimension, sharing t's memory. */
struct fp8_tensor fp8_tensor_slice(const struct fp8_tensor *t, int64_t row0, int64_t n_rows);
/* The same memory seen with another shape of equal numel (contiguous data only). */
struct fp8_tensor fp8_tensor_reshape(const struct fp8_tensor *t, int32_t n_dims, const int64_t *ne);

/* Bytes one KV block takes over all layers, K and V, scales included: what the block
 * manager multiplies by the pool size. 0 for an invalid description. */
int64_t fp8_kv_block_bytes(const struct fp8_kv_cache_desc *d);

/* The weight quantizer every backend shares: each row of src (rows, cols) gets scale =
 * amax / 448 (1 when the row is all zero) and dst[i] = f32_to_e4m3(src[i] / scale). */
void fp8_quantize_rows_e4m3(const float *src, int64_t rows, int64_t cols, uint8_t *dst,
                            float *scale);

#endif
