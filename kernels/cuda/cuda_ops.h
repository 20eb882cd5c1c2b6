/* The CUDA backend's C-callable entry points: device memory, streams, events and graphs
 * for callers that include no CUDA header, and the decode-path kernels.
 *
 * Conventions shared by every function here:
 * - Pointers named d_* (and every tensor argument) are device pointers; `stream` is a
 *   cudaStream_t (NULL: the legacy default stream).
 * - bf16 tensors are uint16_t bit patterns, e4m3 tensors uint8_t; every tensor is dense
 *   and row-major in the shape noted beside it, and must be 16-byte aligned (cudaMalloc
 *   memory is).
 * - Ops only enqueue work: they return 0, or a negative errno with one line in err naming
 *   the op, its shape and the CUDA error. An error raised while the kernel runs surfaces
 *   at the next synchronising call (fp8_cuda_sync, a d2h copy, an event wait), which names
 *   what it waited for. Nothing here prints or aborts. */
#ifndef FP8_KERNELS_CUDA_OPS_H
#define FP8_KERNELS_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/err.h"

/* ---- device, memory, streams, events, graphs ----------------------------------------- */

struct fp8_cuda_device {
    char name[256];
    int32_t sm_count;
    int32_t cc_major, cc_minor;
    int64_t global_mem_bytes;
    int64_t l2_bytes;
};

/* Number of visible devices in *count (0 without a driver or device; not an error). */
int fp8_cuda_device_count(int32_t *count, struct fp8_err *err);
int fp8_cuda_device_get(struct fp8_cuda_device *info, struct fp8_err *err);

/* Free and total bytes of the current device (cudaMemGetInfo). */
int fp8_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, struct fp8_err *err);

int fp8_cuda_malloc(void **d_ptr, size_t bytes, struct fp8_err *err);
void fp8_cuda_free(void *d_ptr); /* NULL is fine */
int fp8_cuda_memcpy_h2d(void *d_dst, const void *src, size_t bytes, struct fp8_err *err);
int fp8_cuda_memcpy_d2h(void *dst, const void *d_src, size_t bytes, struct fp8_err *err);
int fp8_cuda_memcpy_d2d(void *d_dst, const void *d_src, size_t bytes, void *stream,
                        struct fp8_err *err);
int fp8_cuda_memset(void *d_dst, int value, size_t bytes, void *stream, struct fp8_err *err);
/* Waits for all work on the device; reports any error a kernel raised. */
int fp8_cuda_sync(struct fp8_err *err);

int fp8_cuda_stream_create(void **stream, struct fp8_err *err);
void fp8_cuda_stream_destroy(void *stream);

int fp8_cuda_event_create(void **event, struct fp8_err *err);
void fp8_cuda_event_destroy(void *event);
int fp8_cuda_event_record(void *event, void *stream, struct fp8_err *err);
/* Waits for `end`, then gives the time between the two recorded events. */
int fp8_cuda_event_elapsed_ms(float *ms, void *start, void *end, struct fp8_err *err);

/* Everything enqueued on `stream` between begin and end becomes one graph; *exec is the
 * instantiated graph to replay with fp8_cuda_graph_launch. */
int fp8_cuda_graph_capture_begin(void *stream, struct fp8_err *err);
int fp8_cuda_graph_capture_end(void *stream, void **exec, struct fp8_err *err);
int fp8_cuda_graph_launch(void *exec, void *stream, struct fp8_err *err);
void fp8_cuda_graph_destroy(void *exec);

/* Fills d_dst with n random e4m3 bytes, finite codes only (every code but 0x7f/0xff),
 * from (seed, index): weights for benchmarks and --synthetic models without a host copy. */
int fp8_cuda_fill_e4m3_random(uint8_t *d_dst, size_t n, uint64_t seed, void *stream,
                              struct fp8_err *err);

/* ---- FP8 weight GEMV / skinny GEMM ------------------------------------------------------ */

#define FP8_CUDA_GEMV_MAX_ROWS 64

/* Launch shape of the GEMV: output channels per block are 16 * m_tiles (1 or 2; 1 above
 * 32 rows). overlap (sm_90+): launched as a programmatic dependent of the previous kernel
 * in the stream, so it loads its first weights while that kernel finishes and reads x
 * only after it completed (any producer is safe; only PDL-launched kernels start early).
 * prefetch: with overlap, bytes at the start of each weight row a block also asks L2 for
 * before waiting (a multiple of 16; 0: none). */
struct fp8_cuda_gemv_cfg {
    int32_t m_tiles;
    int32_t overlap;
    int32_t prefetch;
};

/* The configuration fp8_cuda_gemv_e4m3 picks for this shape on this device. */
int fp8_cuda_gemv_e4m3_cfg_pick(struct fp8_cuda_gemv_cfg *cfg, int32_t rows, int32_t in,
                                int32_t out, struct fp8_err *err);

/* y[r, o] = scale[o] * sum_i x[r, i] * w[o, i] with fp32 accumulation, stored as bf16,
 * or as fp32 when y_f32 (logits). rows 1..FP8_CUDA_GEMV_MAX_ROWS; in must be a multiple
 * of 16 (16-byte weight rows); any out >= 1. cfg NULL: the picked configuration. */
int fp8_cuda_gemv_e4m3(void *y,                /* (rows, out) bf16, or fp32 if y_f32 */
                       int32_t y_f32,
                       const uint16_t *x,      /* (rows, in) bf16 */
                       const uint8_t *w,       /* (out, in) e4m3 */
                       const float *scale,     /* (out) */
                       int32_t rows, int32_t in, int32_t out,
                       const struct fp8_cuda_gemv_cfg *cfg, void *stream,
                       struct fp8_err *err);

/* ---- FP8 x FP8 GEMM (prefill linears, more than FP8_CUDA_GEMV_MAX_ROWS rows) --------- */

/* A cuBLASLt handle, its workspace and a cache of per-shape plans. Not thread-safe: one
 * per stream. sm_89 or newer. */
struct fp8_cuda_gemm;

int fp8_cuda_gemm_create(struct fp8_cuda_gemm **g, struct fp8_err *err);
void fp8_cuda_gemm_free(struct fp8_cuda_gemm *g); /* NULL is fine */
size_t fp8_cuda_gemm_bytes(const struct fp8_cuda_gemm *g); /* device memory it holds */

/* Who applies the row scales: cuBLASLt itself (outer-vector scales, sm_90+), or a kernel
 * after a unit-scaled fp32 matmul (sm_89, where FP8 matmuls take scalar scales only). */
enum fp8_cuda_gemm_scales {
    FP8_CUDA_GEMM_SCALES_OUTER,
    FP8_CUDA_GEMM_SCALES_EPILOGUE,
};

/* terms: e4m3 terms per activation (1: x ~ s hi, relative error up to 2^-4; 2: plus the
 * quantized residual, x ~ s (hi + lo / 16), error ~2^-8, twice the matmul work). */
struct fp8_cuda_gemm_cfg {
    int32_t terms;
    int32_t scales; /* enum fp8_cuda_gemm_scales */
};

/* The product's configuration on this device: two terms, outer scales on sm_90+. */
int fp8_cuda_gemm_cfg_pick(const struct fp8_cuda_gemm *g, struct fp8_cuda_gemm_cfg *cfg);

/* Bytes of device workspace fp8_cuda_gemm_e4m3 needs for this shape and cfg. */
size_t fp8_cuda_gemm_e4m3_workspace(int32_t rows, int32_t in, int32_t out, int32_t y_f32,
                                    const struct fp8_cuda_gemm_cfg *cfg);

/* y[r, o] = scale[o] * sum_i q(x)[r, i] * w[o, i]: the activation rows quantized to e4m3
 * with one scale per row (scale = amax / 448, e4m3 = f32_to_e4m3(x / scale)), then an
 * e4m3 x e4m3 matmul with fp32 accumulation; bf16 out, or fp32 when y_f32. in must be a
 * multiple of 16 and out of 8 (bf16) or 4 (fp32): other shapes fail naming the shape.
 * cfg NULL: fp8_cuda_gemm_cfg_pick's. */
int fp8_cuda_gemm_e4m3(struct fp8_cuda_gemm *g,
                       void *y,                /* (rows, out) bf16, or fp32 if y_f32 */
                       int32_t y_f32,
                       const uint16_t *x,      /* (rows, in) bf16 */
                       const uint8_t *w,       /* (out, in) e4m3 */
                       const float *scale,     /* (out) */
                       int32_t rows, int32_t in, int32_t out,
                       const struct fp8_cuda_gemm_cfg *cfg, void *workspace,
                       size_t workspace_bytes, void *stream, struct fp8_err *err);

/* Fusions of the decode step into the GEMV (each saves a kernel and its gap per layer):
 * - norm_w (non-NULL; at most 8 rows and fp8_cuda_gemv_norm_stage_bytes(rows, in) <=
 *   FP8_CUDA_GEMV_NORM_STAGE_MAX): x is RMS-normalized first, as fp8_cuda_rmsnorm
 *   without residual (eps, plus_one likewise): y = (x / rms(x) * w') W^T. Each block
 *   stages bf16(x * w') in shared memory, summing each row's squares, and applies
 *   1 / rms at the end, so the bf16 rounding falls on x * w' instead of x / rms * w'
 *   (same relative size, 2^-9).
 * - glu: w is the fused (2 I, in) gate_up weight (gate rows, then up rows; out = 2 I,
 *   even) and y (rows, I) = bf16(act(bf16 gate) * bf16 up), bit-identical to the GEMV
 *   followed by fp8_cuda_glu. Needs bf16 y, m_tiles 2 (the gate tile and its up tile;
 *   picked when cfg is NULL) and at most 32 rows.
 * - add: y (bf16) += result, rounded as fp8_cuda_rmsnorm's residual add of the bf16
 *   result (bf16 of the fp32 sum of the two bf16 values): bit-identical to the GEMV into
 *   a scratch followed by that add.
 * - out_norm_w (with add, at most 8 rows): the next RMSNorm prepared in the epilogue, for
 *   a GEMV with in_ss: out_xw (rows, out) = bf16(y' * w') with y' the updated y and
 *   w' = out_norm_w (+ 1 with plus_one), and out_ss (rows, ceil(out / 16)) the sums of
 *   squares of y' over each 16 channels (a fixed order).
 * - in_ss (at most 8 rows, no norm_w): x is such an out_xw and in_ss its out_ss:
 *   y = (1 / rms) x W^T, 1 / rms = 1 / sqrt(sum in_ss / in + eps), the sums in a fixed
 *   order: the staged norm's result without its prologue (a norm costs the block ~1 KB of
 *   partial sums instead of staging the whole rows). */
struct fp8_cuda_gemv_fuse {
    const float *norm_w;     /* (in) f32, 16-byte aligned, or NULL */
    float eps;
    int32_t plus_one;
    int32_t glu;             /* nonzero: glu epilogue with glu_act */
    int32_t glu_act;         /* enum fp8_cuda_glu_act */
    int32_t add;
    const float *out_norm_w; /* (out) f32, or NULL */
    uint16_t *out_xw;        /* (rows, out) bf16 */
    float *out_ss;           /* (rows, ceil(out / 16)) f32 */
    const float *in_ss;      /* (rows, ceil(in / 16)) f32, or NULL */
};

/* Shared memory the norm fusion stages per block: rows of in + 8 bf16 values. */
#define FP8_CUDA_GEMV_NORM_STAGE_MAX (96 * 1024)
size_t fp8_cuda_gemv_norm_stage_bytes(int32_t rows, int32_t in);

/* fp8_cuda_gemv_e4m3 with the fusions above (fuse NULL: none). With glu, y is
 * (rows, out / 2). */
int fp8_cuda_gemv_e4m3_fused(void *y, int32_t y_f32, const uint16_t *x, const uint8_t *w,
                             const float *scale, int32_t rows, int32_t in, int32_t out,
                             const struct fp8_cuda_gemv_fuse *fuse,
                             const struct fp8_cuda_gemv_cfg *cfg, void *stream,
                             struct fp8_err *err);

/* ---- paged FP8 KV cache ------------------------------------------------------------------
 * One layer of kernels.h's cache (its arrays are (n_layers, ...) of these): a pool of
 * n_blocks blocks of block_size token slots; slot s is block s / block_size, offset
 * s % block_size. K and V of a (slot, kv head) are head_dim e4m3 bytes with one fp32
 * scale each: value = e4m3 * scale, scale = amax / 448 over that head's vector (1 when
 * amax is 0), e4m3 = f32_to_e4m3(x / scale). */
struct fp8_cuda_kv_cache {
    uint8_t *k;       /* (n_blocks, block_size, n_kv_heads, head_dim) e4m3 */
    uint8_t *v;       /* (n_blocks, block_size, n_kv_heads, head_dim) e4m3 */
    float *k_scale;   /* (n_blocks, block_size, n_kv_heads) */
    float *v_scale;   /* (n_blocks, block_size, n_kv_heads) */
    int32_t n_blocks;
    int32_t block_size;
    int32_t n_kv_heads;
    int32_t head_dim; /* 128 (decode attention: or 256) */
};

/* ---- decode attention --------------------------------------------------------------------
 * out[s, h] = softmax_j(sm_scale * q[s, h] . K[j]) V[j] over the seq_len[s] tokens of
 * sequence s, K/V of kv head h / (n_heads / n_kv_heads) read through block_table; with a
 * window (the plan's, > 0) only over j >= seq_len[s] - window (the query is the token at
 * position seq_len[s] - 1: a sliding-window layer's keys j > p - window), and blocks
 * before the window are not read. head_dim 128 or 256 (256: tensor-core variant only).
 * Softmax exact in fp32. When n_seqs * n_kv_heads is too small to fill the device the
 * visible span is split in pieces whose partial results a second kernel merges; the split
 * depends only on (n_seqs, n_heads, kv geometry, max_seq_len, window, device), so a
 * captured graph stays valid whatever seq_len[s] holds at replay (past max_seq_len the
 * last piece just grows). seq_len[s] = 0 gives zeros. */
enum fp8_cuda_attn_variant {
    FP8_CUDA_ATTN_MMA,     /* tensor cores: a warp takes 16 tokens, S and P V as mma */
    FP8_CUDA_ATTN_LANES8,  /* CUDA cores: 8 lanes read one token's K/V row */
    FP8_CUDA_ATTN_LANES16, /* CUDA cores: 16 lanes per token */
    /* FP8_CUDA_ATTN_MMA with the pieces of a (sequence, kv head) merged in a thread-block
     * cluster, no merge kernel (bit-identical): sm_90+, 2..8 pieces, query heads per kv
     * head x head_dim <= 512, and at most one block per SM in all */
    FP8_CUDA_ATTN_MMA_CLUSTER,
};

struct fp8_cuda_attn_plan {
    int32_t n_splits;     /* pieces per (sequence, head); 1 = no merge kernel */
    int32_t split_tokens; /* tokens per piece (the last one takes any rest) */
    int32_t variant;      /* enum fp8_cuda_attn_variant */
    int32_t window;       /* sliding window in tokens; 0: every position */
    size_t workspace_bytes; /* fp32 partial results of the pieces (unused in a cluster) */
};

/* 1 when FP8_CUDA_ATTN_MMA_CLUSTER can run n_splits pieces of this geometry on the current
 * device (the conditions in the enum), else 0. */
int32_t fp8_cuda_attn_decode_cluster_ok(int32_t n_seqs, int32_t n_heads,
                                        const struct fp8_cuda_kv_cache *kv, int32_t n_splits);

/* window: 0, or the layer's sliding window (the pieces then split at most window tokens). */
int fp8_cuda_attn_decode_plan(struct fp8_cuda_attn_plan *plan, int32_t n_seqs, int32_t n_heads,
                              const struct fp8_cuda_kv_cache *kv, int32_t max_seq_len,
                              int32_t window, struct fp8_err *err);

/* plan: from fp8_cuda_attn_decode_plan for the same (n_seqs, n_heads, kv); a benchmark may
 * change its splits or lanes (the workspace must then fit the changed plan). */
int fp8_cuda_attn_decode(uint16_t *out,               /* (n_seqs, n_heads, head_dim) bf16 */
                         const uint16_t *q,           /* (n_seqs, n_heads, head_dim) bf16 */
                         const struct fp8_cuda_kv_cache *kv,
                         const int32_t *block_table,  /* (n_seqs, max_blocks_per_seq) */
                         const int32_t *seq_len,      /* (n_seqs) */
                         int32_t n_seqs, int32_t n_heads, int32_t max_blocks_per_seq,
                         float sm_scale, const struct fp8_cuda_attn_plan *plan,
                         void *workspace, size_t workspace_bytes, void *stream,
                         struct fp8_err *err);

/* fp8_cuda_attn_decode with fp8_cuda_qk_norm_rope_kv_write in front, in the same kernel:
 * q comes from the fused projection qkv (n_seqs, (n_heads + 2 n_kv_heads) * 128), each
 * sequence's token (one a sequence, at positions[s] and slots[s]) is normalized, rotated
 * and its k and v written to the cache exactly as that op does (the same bits), and q is
 * attended without being stored. Head_dim 128 and a tensor-core plan variant. */
struct fp8_cuda_qk_front {
    const uint16_t *qkv;
    const float *q_norm_w, *k_norm_w; /* (128) f32 */
    float eps;
    int32_t plus_one;
    const float *inv_freq;            /* (64) f32 */
    float attn_factor;
    const int32_t *positions, *slots; /* (n_seqs) */
};
int fp8_cuda_attn_decode_qk(uint16_t *out, const struct fp8_cuda_qk_front *qk,
                            const struct fp8_cuda_kv_cache *kv, const int32_t *block_table,
                            const int32_t *seq_len, int32_t n_seqs, int32_t n_heads,
                            int32_t max_blocks_per_seq, float sm_scale,
                            const struct fp8_cuda_attn_plan *plan, void *workspace,
                            size_t workspace_bytes, void *stream, struct fp8_err *err);

/* ---- prefill attention -----------------------------------------------------------------
 * Causal attention for any step (prefill chunks, several sequences, mixed with decode
 * tokens): for each token t of the step and query head h,
 *   out[t, h] = softmax_j(sm_scale * q[t, h] . K[j]) V[j]
 * over the keys j of sequence tok_seq[t] with j <= positions[t] (and j > positions[t] -
 * window when window > 0), K/V of kv head h / (n_heads / n_kv_heads) read through the
 * sequence's block table (key j at slot block_table[j / block_size] * block_size +
 * j % block_size). The step's own keys must already be in the cache. Softmax exact in
 * fp32; tensor cores for Q K^T and P V (P times the V scale rounded to bf16). A
 * sequence's tokens must be contiguous in the step (as struct fp8_batch lays them out).
 * head_dim 128 and 1 to 64 query heads per kv head. */
size_t fp8_cuda_attn_prefill_workspace(int32_t n_tokens, int32_t n_seqs, int32_t n_heads,
                                       int32_t n_kv_heads);

int fp8_cuda_attn_prefill(uint16_t *out,               /* (n_tokens, n_heads, head_dim) bf16 */
                          const uint16_t *q,           /* (n_tokens, n_heads, head_dim) bf16 */
                          const struct fp8_cuda_kv_cache *kv,
                          const int32_t *positions,    /* (n_tokens) */
                          const int32_t *tok_seq,      /* (n_tokens) sequence of each token */
                          const int32_t *block_table,  /* (n_seqs, max_blocks_per_seq) */
                          int32_t n_tokens, int32_t n_seqs, int32_t n_heads,
                          int32_t max_blocks_per_seq, float sm_scale, int32_t window,
                          void *workspace, size_t workspace_bytes, void *stream,
                          struct fp8_err *err);

/* ---- norms, RoPE and the KV-cache write ----------------------------------------------- */

/* Without residual: y = bf16(x / sqrt(mean(x^2) + eps) * w'), w' = weight, or
 * 1 + weight when plus_one (Gemma3). With residual (non-NULL): residual = bf16(x +
 * residual), then y = the norm of the updated residual. y may alias x. */
int fp8_cuda_rmsnorm(uint16_t *y,            /* (rows, dim) bf16 */
                     const uint16_t *x,      /* (rows, dim) bf16 */
                     uint16_t *residual,     /* (rows, dim) bf16, or NULL */
                     const float *weight,    /* (dim) */
                     int32_t rows, int32_t dim, float eps, int32_t plus_one, void *stream,
                     struct fp8_err *err);

/* kernels.h's qk_norm_rope_kv_write: for each token t of the step, from the fused
 * projection qkv[t] = [q heads | k heads | v heads]:
 *   q_out[t, h] = rope(rmsnorm(q[t, h], q_norm_w))   (bf16)
 *   k = rope(rmsnorm(k[t, g], k_norm_w)) and v = v[t, g] go to the cache at slots[t]
 *   (slot < 0: a padding token, nothing written; slots past the pool are skipped too,
 *   the caller validates them, the kernel only refuses to write out of bounds).
 * rmsnorm as fp8_cuda_rmsnorm (plus_one likewise); RoPE rotate-half (NeoX): dims i and
 * i + head_dim/2 turn by the fp32 angle position * inv_freq[i], cos and sin times
 * attn_factor. All in fp32 from the bf16 input; q rounded once. */
int fp8_cuda_qk_norm_rope_kv_write(uint16_t *q_out,        /* (n_tokens, n_heads, head_dim) */
                                   const uint16_t *qkv,    /* (n_tokens, (n_heads + 2 n_kv) head_dim) */
                                   const float *q_norm_w,  /* (head_dim) */
                                   const float *k_norm_w,  /* (head_dim) */
                                   float eps, int32_t plus_one,
                                   const float *inv_freq,  /* (head_dim / 2) */
                                   float attn_factor,
                                   const int32_t *positions, /* (n_tokens) */
                                   const int32_t *slots,     /* (n_tokens) */
                                   const struct fp8_cuda_kv_cache *kv,
                                   int32_t n_tokens, int32_t n_heads, void *stream,
                                   struct fp8_err *err);

/* kernels.h's glu after the fused gate+up projection, in fp32:
 * y[r, i] = bf16(act(gu[r, i]) * gu[r, inter + i]), act = silu(g) = g / (1 + exp(-g)) or
 * PyTorch's tanh-approximated gelu. Same order as enum fp8_glu_act. */
enum fp8_cuda_glu_act {
    FP8_CUDA_GLU_SILU,
    FP8_CUDA_GLU_GELU_TANH,
};

int fp8_cuda_glu(uint16_t *y,         /* (rows, inter) bf16 */
                 const uint16_t *gu,  /* (rows, 2 * inter) bf16: gate then up */
                 int32_t rows, int32_t inter, enum fp8_cuda_glu_act act, void *stream,
                 struct fp8_err *err);

/* kernels.h's `sample` op (struct fp8_sample_row has the contract): ids[r] = the draw
 * from row r of logits under rows[r] (device copies of the host structs, or host memory
 * mapped into the device), penalty ids in pen (likewise; may be NULL when no row has
 * penalties). Penalties are applied to logits in place. One block per row; deterministic
 * (integer sums: the same ids on every run). Launched as a programmatic dependent of the
 * previous kernel: each block reads its row before waiting for it, nothing else. */
struct fp8_sample_row;
int fp8_cuda_sample(int32_t *ids,                       /* (n_rows) */
                    float *logits,                      /* (n_rows, vocab) */
                    const struct fp8_sample_row *rows,  /* (n_rows) */
                    const int32_t *pen, int32_t n_rows, int32_t vocab, void *stream,
                    struct fp8_err *err);

#ifdef __cplusplus
}
#endif

#endif
