/* Token sampling and stop conditions, the same for every backend.
 *
 * A draw is a pure function of (seed, step): u = philox4x32_10(counter {step, 0, 0, 0},
 * key {seed lo, seed hi})[0] as a 24-bit unit float, so a request's tokens do not depend
 * on what else is in the batch. Order of the transforms (as in HF and vLLM): repetition
 * penalty (prompt and output tokens), presence penalty (output tokens), temperature
 * (0: greedy argmax, lowest id on ties), top-k, top-p, min-p, then the draw: candidates
 * sorted by probability (lower id first on ties), the first whose running sum exceeds
 * u * total. */
#ifndef FP8_ENGINE_SAMPLING_H
#define FP8_ENGINE_SAMPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct fp8_sampling_params {
    float temperature;        /* 0: greedy */
    int32_t top_k;            /* 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off; logits of seen tokens: > 0 divided, < 0 multiplied */
    float presence_penalty;   /* 0: off; subtracted once from each token already generated */
    uint64_t seed;
    int32_t max_tokens;       /* generated tokens before finishing with "length" */
    bool ignore_eos;
};

/* temperature 1, top_p 1, everything else off, seed 0, max_tokens 256. */
struct fp8_sampling_params fp8_sampling_params_default(void);
/* Rejects values out of range (negative temperature, top_p outside (0, 1], ...). */
int fp8_sampling_params_check(const struct fp8_sampling_params *p, struct fp8_err *err);

struct fp8_sample_cand {
    float v;    /* logit, then unnormalized probability */
    int32_t id;
};

struct fp8_sampler {
    int32_t vocab;
    float *logits;                /* (vocab) working copy */
    struct fp8_sample_cand *cand; /* (vocab) candidates, most likely first */
    uint8_t *seen;                /* (vocab) penalty marks */
};

int fp8_sampler_init(struct fp8_sampler *s, int32_t vocab, struct fp8_err *err);
void fp8_sampler_free(struct fp8_sampler *s); /* accepts NULL and zeroed samplers */

/* The next token from logits (vocab). tokens holds the request's n_prompt prompt tokens
 * followed by what it generated so far (n_tokens in all); step counts generated tokens
 * (the draw's counter). */
int32_t fp8_sampler_sample(struct fp8_sampler *s, const float *logits,
                           const struct fp8_sampling_params *p, const int32_t *tokens,
                           int32_t n_tokens, int32_t n_prompt, uint32_t step);

enum fp8_finish {
    FP8_FINISH_NONE,
    FP8_FINISH_STOP,   /* an EOS id or a stop string */
    FP8_FINISH_LENGTH, /* max_tokens */
};

/* After a token was appended: STOP on an EOS id (unless ignore_eos), LENGTH when
 * n_generated reached max_tokens, else NONE. */
enum fp8_finish fp8_sampling_finish(const struct fp8_sampling_params *p, const int32_t *eos_ids,
                                    int32_t n_eos, int32_t token, int32_t n_generated);

/* Stop strings over the detokenized output text, whatever the token boundaries.
 * fp8_stop_find: text (len bytes) just grew by its last new_len bytes; returns the byte
 * offset where the earliest stop string that ends in the new bytes starts (the output is
 * cut there), or -1. */
int64_t fp8_stop_find(const char *text, size_t len, size_t new_len, const char *const *stops,
                      int32_t n_stops);
/* How many trailing bytes of text are a proper prefix of some stop string: a streamer
 * holds them back until the next token says whether they are output or a stop. */
size_t fp8_stop_holdback(const char *text, size_t len, const char *const *stops, int32_t n_stops);

#endif
