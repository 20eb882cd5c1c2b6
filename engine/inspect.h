/* What `fp8d inspect` reports about a checkpoint directory: the model description, the
 * tensors by dtype, the weight format, and every defect found on the way. */
#ifndef FP8_ENGINE_INSPECT_H
#define FP8_ENGINE_INSPECT_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/safetensors.h"
#include "engine/tensors.h"

struct fp8_inspect {
    bool have_config; /* config.json parsed */
    bool have_tensors; /* safetensors opened and validated */
    bool checked;      /* tensors checked against the config */
    struct fp8_model_config config;
    int32_t n_tensors;
    int32_t n_files;
    int32_t dtype_tensors[ST_DTYPE_COUNT];
    uint64_t dtype_bytes[ST_DTYPE_COUNT];
    int64_t n_params; /* elements of the tensors the config calls for */
    struct fp8_tensors_report report;
    int32_t tokenizer_vocab; /* largest tokenizer.json id + 1; 0 when there is none */
};

/* Fills *out as far as the directory allows and calls defect once per finding. Returns the
 * number of defects (0: the checkpoint is usable). Never fails otherwise. */
int32_t fp8_inspect_dir(const char *dir, struct fp8_inspect *out, fp8_defect_fn defect, void *ctx);

#endif
