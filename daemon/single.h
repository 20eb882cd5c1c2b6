/* One sequence without a scheduler, for `fp8d logits` and the plain `fp8d run` loop: the
 * backend and model the options name, and steps over a trivial block table (block i holds
 * positions [i * block_size, (i + 1) * block_size)). */
#ifndef FP8D_DAEMON_SINGLE_H
#define FP8D_DAEMON_SINGLE_H

#include "daemon/opts.h"
#include "engine/model.h"

struct fp8d_single {
    struct fp8_backend *be;
    struct fp8_model *model;
    int32_t max_len;      /* positions the cache holds */
    int32_t max_step;     /* tokens per step */
    int32_t *block_table; /* (max_len / block_size rounded up) */
    int32_t n_blocks;
};

/* Opens o->model_dir (or the --synthetic preset's random weights, seed 0) on o->backend
 * for a sequence of up to max_len tokens. */
int fp8d_single_open(struct fp8d_single *s, const struct fp8d_opts *o, int32_t max_len,
                     struct fp8_err *err);
void fp8d_single_close(struct fp8d_single *s); /* accepts a zeroed struct */

/* Runs tokens at positions [p0, p0 + n) in steps of at most max_step tokens. all_logits:
 * logits of every token into logits (n, vocab); else only of the last (1, vocab). */
int fp8d_single_run(struct fp8d_single *s, const int32_t *tokens, int32_t p0, int32_t n,
                    bool all_logits, float *logits, struct fp8_err *err);
/* The same without logits: the last token's row is sampled on the backend under row
 * (penalty ids pen, NULL when none) and only the drawn id comes back, in *id. */
int fp8d_single_sample(struct fp8d_single *s, const int32_t *tokens, int32_t p0, int32_t n,
                       const struct fp8_sample_row *row, const int32_t *pen, int32_t *id,
                       struct fp8_err *err);

#endif
