/* The scheduler bound to a loaded model: what `fp8d run` (one prompt or a --requests
 * batch) and the daemon's engine thread drive. Each step samples on the backend (its
 * `sample` op): only token ids come back. The KV pool is sized here: the backend's bytes
 * per block (fp8_kv_block_bytes) into the byte budget, and the model's cache gets exactly
 * the block manager's n_blocks. On a backend with decode graphs (cuda, not
 * enforce_eager) every decode batch size's graph is captured here, before serving
 * (fp8_model_warmup). */
#ifndef FP8_ENGINE_ENGINE_H
#define FP8_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/config.h"
#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/scheduler.h"
#include "engine/weights.h"

struct fp8_engine_params {
    enum fp8_dtype weight_dtype;    /* FP8_DTYPE_E4M3 or FP8_DTYPE_BF16 */
    enum fp8_dtype kv_dtype;        /* FP8_DTYPE_E4M3, BF16, or F32 (ref only) */
    int32_t block_size;             /* KV slots per block */
    int64_t kv_budget_bytes;        /* KV pool */
    int32_t max_num_seqs;
    int32_t max_num_batched_tokens;
    int32_t max_model_len;          /* 0: the model's max_position_embeddings */
    bool prefix_caching;
};

/* E4M3 weights and KV, blocks of 16, 64 MiB of KV, 16 sequences, 512 tokens a step,
 * the model's own length, prefix caching on. */
struct fp8_engine_params fp8_engine_params_default(void);

struct fp8_engine {
    struct fp8_model *model;
    struct fp8_sched sched;
    struct fp8_sample_row *rows; /* (max_num_seqs) the step's sampling rows */
    int32_t *pen;                /* (pen_cap) their penalty ids */
    size_t pen_cap;
    uint8_t *seen;               /* (vocab) zeroed scratch of fp8_sample_row_fill */
    bool warmed;                 /* decode graphs captured at init (warmup says how) */
    struct fp8_model_warmup warmup;
};

/* Builds the model from open weights (a checkpoint or a --synthetic preset; they may be
 * freed afterwards) on be, and the scheduler over it. e must not move afterwards (the
 * callbacks point at it); be must outlive it. */
int fp8_engine_init(struct fp8_engine *e, struct fp8_weights *w, struct fp8_backend *be,
                    const struct fp8_engine_params *p, struct fp8_err *err);
/* The same from a model directory. */
int fp8_engine_load(struct fp8_engine *e, const char *dir, struct fp8_backend *be,
                    const struct fp8_engine_params *p, struct fp8_err *err);
void fp8_engine_free(struct fp8_engine *e); /* accepts NULL and zeroed engines */

/* The sampler's parameters from a request's. */
struct fp8_sampling_params fp8_engine_sampling_params(const struct fp8_req_params *p);

#endif
