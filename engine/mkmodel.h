/* Deterministic random checkpoints in the Hugging Face layout (what `fp8d mkmodel`
 * writes): config.json and generation_config.json in the Hub's own style, model.safetensors
 * (or shards and model.safetensors.index.json) holding the synthetic weights of
 * engine/weights.h, and the architecture's real tokenizer files, with the vocabulary grown
 * where needed to hold every tokenizer id. */
#ifndef FP8_ENGINE_MKMODEL_H
#define FP8_ENGINE_MKMODEL_H

#include <stdint.h>

#include "common/err.h"
#include "engine/config.h"
#include "engine/safetensors.h"

struct fp8_mkmodel_opts {
    const char *arch;          /* "qwen3", "qwen3_moe" or "gemma3" */
    const char *preset;        /* NULL: the arch's tiny preset */
    const char *out_dir;       /* created if missing; must not hold a checkpoint yet */
    const char *tokenizer_dir; /* holds tokenizer.json and tokenizer_config.json */
    uint64_t seed;
    enum st_dtype dtype;  /* ST_DTYPE_BF16 or ST_DTYPE_F32 */
    uint64_t shard_bytes; /* 0: one model.safetensors */
};

struct fp8_mkmodel_result {
    struct fp8_model_config config; /* as written to config.json */
    char preset[32];
    int32_t tokenizer_vocab; /* largest tokenizer id + 1 */
    int32_t preset_vocab;    /* the preset's vocab_size before growing it */
    int32_t n_tensors;
    int32_t n_files; /* safetensors files */
    int64_t n_params;
    uint64_t n_bytes; /* tensor data */
};

/* The tokenizer directory of an architecture's family ("qwen3" or "gemma3"). */
const char *fp8_mkmodel_tokenizer_name(const char *arch);

/* Largest token id in tokenizer.json (model vocab and added tokens) + 1. */
int fp8_tokenizer_vocab_needed(const char *tokenizer_json_path, int32_t *out, struct fp8_err *err);

int fp8_mkmodel_write(const struct fp8_mkmodel_opts *o, struct fp8_mkmodel_result *r,
                      struct fp8_err *err);

#endif
