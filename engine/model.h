/* A loaded model: its weights, KV cache and activations on one backend, and the forward
 * pass of one engine step. Architecture code lives in engine/models/. */
#ifndef FP8_ENGINE_MODEL_H
#define FP8_ENGINE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/batch.h"
#include "engine/config.h"
#include "engine/weights.h"
#include "kernels/kernels.h"

struct fp8_model_opts {
    enum fp8_dtype weight_dtype; /* FP8_DTYPE_E4M3 (default) or FP8_DTYPE_BF16 (exactness mode) */
    enum fp8_dtype kv_dtype;     /* FP8_DTYPE_E4M3 (default), BF16, or F32 (ref backend only) */
    int32_t max_tokens;          /* most tokens one step may carry */
    int32_t block_size;          /* KV slots per block */
    int32_t n_kv_blocks;         /* KV pool size (the block manager sizes it with
                                    fp8_kv_block_bytes) */
    bool device_random_weights;  /* benchmarks: every tensor filled in backend memory by
                                    the backend's tensor_fill_random (shapes from the
                                    config, the checkpoint or preset values unused) */
};

/* E4M3 weights and KV, 512 tokens a step, blocks of 16, a pool of 256 blocks. */
struct fp8_model_opts fp8_model_opts_default(void);

/* The KV cache description this model needs for kv_dtype / block_size / n_blocks. */
struct fp8_kv_cache_desc fp8_model_kv_desc(const struct fp8_model_config *cfg,
                                           enum fp8_dtype kv_dtype, int32_t block_size,
                                           int32_t n_blocks);

struct fp8_model;

/* Reads DIR (config.json and the safetensors checkpoint, through fp8_weights_open_dir),
 * quantizes the weights to opts->weight_dtype and uploads them to be. Anything this code
 * or the backend cannot run fails here with a message naming it. *out untouched on
 * failure; be must outlive the model. */
int fp8_model_load(const char *dir, struct fp8_backend *be, const struct fp8_model_opts *opts,
                   struct fp8_model **out, struct fp8_err *err);
/* The same from weights already open (a checkpoint or a --synthetic preset); they may be
 * freed once this returns. */
int fp8_model_create(struct fp8_weights *w, struct fp8_backend *be,
                     const struct fp8_model_opts *opts, struct fp8_model **out,
                     struct fp8_err *err);
void fp8_model_free(struct fp8_model *m); /* accepts NULL */

const struct fp8_model_config *fp8_model_get_config(const struct fp8_model *m);

/* Logit rows a step produces: per sequence, every token when want_all_logits is set for
 * it, else its last token when want_logits is set. */
int32_t fp8_batch_n_logit_rows(const struct fp8_batch *b);

/* Runs one step: K/V of every token into the cache at its slot, then logits (fp32,
 * (fp8_batch_n_logit_rows(b), vocab), host memory) for the rows above, in token order.
 * Returns the number of rows or a negative errno. */
int fp8_model_forward(struct fp8_model *m, const struct fp8_batch *b, float *logits,
                      struct fp8_err *err);

/* The same step, but only a draw from each logit row leaves the backend (its `sample`
 * op, kernels.h): rows (fp8_batch_n_logit_rows(b)) the parameters of each row, pen_ids
 * the penalty ids they point into (NULL when none has penalties), ids
 * (fp8_batch_n_logit_rows(b)) in host memory. */
int fp8_model_forward_sample(struct fp8_model *m, const struct fp8_batch *b,
                             const struct fp8_sample_row *rows, const int32_t *pen_ids,
                             int32_t *ids, struct fp8_err *err);

/* fp8_model_forward_sample with temperature 0 on every row: the greedy pick (the largest
 * logit, lowest id on ties). */
int fp8_model_forward_greedy(struct fp8_model *m, const struct fp8_batch *b, int32_t *ids,
                             struct fp8_err *err);

struct fp8_model_warmup {
    int32_t n_buckets;
    int32_t buckets[16]; /* decode batch sizes captured, largest first */
    int64_t n_captures;  /* graphs the backend captured meanwhile */
    double seconds;
};

/* For backends with decode graphs (be->decode_graphs, not enforce_eager): from now on
 * every decode step (each sequence one token at its last position) of up to max_seqs
 * sequences is padded to its bucket (1, 2, 4, ... below max_seqs, and max_seqs), and one
 * all-padding decode step per bucket runs now, with block tables max_blocks_per_seq wide,
 * so that the backend captures every graph before serving. Padding sequences write no KV
 * (slot -1) and only their own rows; their logits are never sampled or returned. */
int fp8_model_warmup(struct fp8_model *m, int32_t max_seqs, int32_t max_blocks_per_seq,
                     struct fp8_model_warmup *out, struct fp8_err *err);

#endif
