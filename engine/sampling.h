/* Sampling parameters, the sampling op's rows built from a request, and stop conditions,
 * the same for every backend. The draw itself is the backends' `sample` op
 * (kernels/kernels.h, struct fp8_sample_row has the contract): a pure function of the
 * logits, the parameters and (seed, step), so a request's tokens do not depend on what
 * else is in the batch. */
#ifndef FP8_ENGINE_SAMPLING_H
#define FP8_ENGINE_SAMPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "kernels/kernels.h"

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

/* The op's row for a request drawing its generated token number step from (n_tokens)
 * tokens = its n_prompt prompt tokens, then what it generated. With a penalty on, the
 * distinct history tokens go to pen (capacity n_tokens), generated ones first, and the
 * row points at them from pen_start; seen (vocab) is zeroed scratch, left zeroed. Returns
 * the number of ids written to pen. */
int32_t fp8_sample_row_fill(struct fp8_sample_row *row, const struct fp8_sampling_params *p,
                            uint32_t step, const int32_t *tokens, int32_t n_tokens,
                            int32_t n_prompt, int32_t vocab, uint8_t *seen, int32_t *pen,
                            int32_t pen_start);

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
