/* The tensors a model description calls for, by their Hugging Face names and shapes, and
 * the check of a checkpoint against them. The model code loads by these names; `fp8d
 * inspect` reports every difference.
 *
 * Shapes are as stored: a linear layer's weight is (out_features, in_features). */
#ifndef FP8_ENGINE_TENSORS_H
#define FP8_ENGINE_TENSORS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/config.h"
#include "engine/safetensors.h"

enum fp8_tensor_kind {
    FP8_TENSOR_EMBED,  /* token embedding (vocab, dim): stays in a float format */
    FP8_TENSOR_LINEAR, /* a matmul weight: float, or F8_E4M3 with a scale tensor */
    FP8_TENSOR_NORM,   /* RMSNorm weight (dim) */
    FP8_TENSOR_ROUTER, /* Qwen3-MoE mlp.gate (n_experts, dim): float */
};

struct fp8_tensor_spec {
    char name[128];
    enum fp8_tensor_kind kind;
    int32_t layer; /* -1 outside the layers */
    int32_t n_dims;
    int64_t shape[2];
};

/* Fills *specs (malloc'ed, free() it) with every tensor c calls for, in a fixed order:
 * embedding, then each layer's tensors, then the final norm and the untied lm_head.
 * Names carry c->tensor_prefix. Returns the count, or a negative errno. */
int fp8_tensor_specs(const struct fp8_model_config *c, struct fp8_tensor_spec **specs,
                     struct fp8_err *err);

/* Sum of the elements of every spec (the parameter count of the text model). */
int64_t fp8_tensor_specs_n_params(const struct fp8_tensor_spec *specs, int32_t n);

/* Sets c->tensor_prefix and c->lm_head_name from the tensor names present: the Hub's
 * "language_model.model." or transformers 5's "model.language_model." for
 * Gemma3ForConditionalGeneration, "model." otherwise. Fails naming the embedding tensors
 * looked for when none is there. */
int fp8_tensors_resolve_prefix(struct fp8_model_config *c, const struct st_model *m,
                               struct fp8_err *err);

/* One defect line, e.g. "missing tensor model.norm.weight (shape [64])". */
typedef void (*fp8_defect_fn)(void *ctx, const char *line);

struct fp8_tensors_report {
    int32_t n_matched;   /* checkpoint tensors the config calls for */
    int32_t n_scales;    /* fp8 scale tensors belonging to matched weights */
    int32_t n_ignored;   /* vision tower, tied lm_head copy, rotary caches */
    int32_t n_fp8;       /* linear weights stored as F8_E4M3 */
    int32_t n_float;     /* linear weights stored as F32/F16/BF16 (quantized at load) */
    char fp8_scales[48]; /* "128x128 blocks", "per channel", "per tensor" or "mixed" */
};

/* Checks the checkpoint against the specs of c (after fp8_tensors_resolve_prefix): missing
 * tensors, wrong shapes, unsupported dtypes, fp8 weights without scales, unexpected
 * tensors. Calls defect once per finding and returns their number (0: usable). */
int32_t fp8_tensors_check(const struct fp8_model_config *c, const struct st_model *m,
                          struct fp8_tensors_report *report, fp8_defect_fn defect, void *ctx);

#endif
