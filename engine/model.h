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

/* The same step, but only the greedy pick (argmax, lowest id on ties) of each logit row
 * leaves the backend: ids (fp8_batch_n_logit_rows(b)) in host memory. */
int fp8_model_forward_greedy(struct fp8_model *m, const struct fp8_batch *b, int32_t *ids,
                             struct fp8_err *err);

#endif
