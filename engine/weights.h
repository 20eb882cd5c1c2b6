/* One way to reach a model's weights, whether they come from a checkpoint directory or
 * from a --synthetic preset: the model description plus lookup by Hugging Face tensor
 * name, returning a struct st_tensor either way.
 *
 * Synthetic weights are BF16, made on the host on first lookup of each tensor and kept
 * until fp8_weights_free. They are a pure function of (seed, tensor name, element index),
 * defined below, so any backend can regenerate them in place (the host path costs tens of
 * ns per element: fine for tiny presets, minutes for a 27B one), and `fp8d mkmodel` writes
 * exactly these values (rounded to its --dtype). */
#ifndef FP8_ENGINE_WEIGHTS_H
#define FP8_ENGINE_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "engine/tensors.h"

struct fp8_weights; /* opaque */

/* Loads DIR/config.json (+ generation_config.json), opens its safetensors, resolves the
 * tensor prefix and checks every tensor against the config: any defect fails the open
 * with the first one named and their count. *out is untouched on failure. */
int fp8_weights_open_dir(const char *dir, struct fp8_weights **out, struct fp8_err *err);

/* Random weights with the exact shapes of a preset (fp8_model_config_preset names) or of
 * a given description. */
int fp8_weights_open_synthetic(const char *preset, uint64_t seed, struct fp8_weights **out,
                               struct fp8_err *err);
int fp8_weights_open_config(const struct fp8_model_config *c, uint64_t seed,
                            struct fp8_weights **out, struct fp8_err *err);

void fp8_weights_free(struct fp8_weights *w); /* accepts NULL */

const struct fp8_model_config *fp8_weights_config(const struct fp8_weights *w);

/* The tensor called name (a checkpoint may hold more than the config calls for, e.g. fp8
 * scales). -ENOENT when absent. Safe to call from several threads. */
int fp8_weights_get(struct fp8_weights *w, const char *name, const struct st_tensor **out,
                    struct fp8_err *err);

/* The same with the name formatted after the model's tensor prefix, e.g.
 * fp8_weights_getf(w, &t, err, "layers.%d.self_attn.q_proj.weight", i). */
int fp8_weights_getf(struct fp8_weights *w, const struct st_tensor **out, struct fp8_err *err,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The tensor's name, dtype and shape without its data (data NULL for synthetic weights
 * not generated yet): for a backend that generates synthetic weights in place. */
int fp8_weights_meta(struct fp8_weights *w, const char *name, struct st_tensor *out,
                     struct fp8_err *err);

/* True for synthetic weights, with their seed in *seed (when non-NULL). */
bool fp8_weights_synthetic(const struct fp8_weights *w, uint64_t *seed);

/* The output projection: lm_head, or the embedding when they are tied. */
int fp8_weights_lm_head(struct fp8_weights *w, const struct st_tensor **out, struct fp8_err *err);

/* ---- the synthetic generator ----
 * tensor_seed = splitmix64(seed ^ fnv1a64(name)) (one splitmix64_next step from that state).
 * r(i) = splitmix64_next of state tensor_seed + i * 0x9e3779b97f4a7c15.
 * Element j, pair k = j / 2: u1 = ((r(2k) >> 11) + 0.5) * 2^-53, u2 = (r(2k+1) >> 11) * 2^-53,
 * z = sqrt(-2 ln u1) * (j even ? cos : sin)(2 pi u2), all in double;
 * value = (float)(mean + std * z). */
uint64_t fp8_synth_tensor_seed(uint64_t seed, const char *name);
void fp8_synth_normal(uint64_t tensor_seed, uint64_t first, uint64_t n, double mean, double std,
                      float *out);

/* mean and std of a tensor's values: N(0, 0.02) for matmul weights and embeddings; norms
 * N(1, 0.05), or N(0, 0.05) where the weight is applied as (1 + w). */
void fp8_synth_init(enum fp8_tensor_kind kind, bool norm_plus_one, double *mean, double *std);

#endif
