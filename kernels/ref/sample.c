/* The sampling op on the host: the definition (kernels.h, struct fp8_sample_row) written
 * out plainly: candidates sorted, fp32 weights, their running sums in float64 (an fp32
 * sum over 150k sorted weights drifts by ~1e-5 of the mass, as far as neighbouring
 * candidates of a flat distribution lie apart, so it would move draws; float64 makes the
 * sums exact for this purpose). The cuda backend (kernels/cuda/sample.cu) finds the same
 * cut-offs without sorting, with exact integer sums. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/rng.h"
#include "kernels/ref/ref_internal.h"

struct cand {
    float v; /* logit, then weight */
    int32_t id;
};

static int by_logit_desc(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t sample_row(float *l, int32_t v, const struct fp8_sample_row *p,
                          const int32_t *pen, struct cand *c)
{
    for (int32_t i = 0; i < p->n_pen; i++) {
        float *x = &l[pen[i]];
        if (p->repetition_penalty != 1.0f)
            *x = *x > 0.0f ? *x / p->repetition_penalty : *x * p->repetition_penalty;
        if (i < p->n_pen_gen)
            *x -= p->presence_penalty;
    }
    if (p->temperature == 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < v; i++)
            if (l[i] > l[best])
                best = i;
        return best;
    }
    for (int32_t i = 0; i < v; i++)
        c[i] = (struct cand){l[i], i};
    qsort(c, (size_t)v, sizeof(*c), by_logit_desc);
    int32_t n = p->top_k > 0 && p->top_k < v ? p->top_k : v;

    float mx = c[0].v;
    double total = 0.0;
    for (int32_t i = 0; i < n; i++) {
        c[i].v = expf((c[i].v - mx) / p->temperature);
        total += c[i].v;
    }
    if (p->top_p < 1.0f) { /* the shortest head holding top_p of the mass */
        double run = 0.0, thr = (double)p->top_p * total;
        int32_t i = 0;
        while (i < n && !(run >= thr))
            run += c[i++].v;
        n = i;
        total = run;
    }
    if (p->min_p > 0.0f) { /* c[0] has the largest weight, exp(0) = 1 */
        double run = c[0].v;
        int32_t i = 1;
        while (i < n && c[i].v >= p->min_p * c[0].v)
            run += c[i++].v;
        n = i;
        total = run;
    }

    uint32_t ctr[4] = {p->step, 0, 0, 0}, key[2] = {(uint32_t)p->seed, (uint32_t)(p->seed >> 32)},
             out[4];
    philox4x32_10(ctr, key, out);
    double target = (double)rng_u32_to_unit(out[0]) * total, run = 0.0;
    for (int32_t i = 0; i < n; i++) {
        run += c[i].v;
        if (run > target)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left target at the very end of the mass */
}

void ref_sample(struct fp8_backend *be, struct fp8_tensor *logits,
                const struct fp8_sample_row *rows, const int32_t *pen_ids,
                struct fp8_tensor *ids)
{
    if (ref_failed(be))
        return;
    if (!logits || !logits->data || logits->dtype != FP8_DTYPE_F32 || logits->n_dims != 2 ||
        logits->ne[1] > INT32_MAX || !ids || !ids->data || ids->dtype != FP8_DTYPE_I32 ||
        fp8_tensor_numel(ids) != logits->ne[0] || !rows) {
        ref_fail(be, -EINVAL, "sample: logits must be f32 (rows, vocab), ids i32 (rows), "
                 "with one parameter row each");
        return;
    }
    const int64_t n = logits->ne[0], v = logits->ne[1];
    struct fp8_err e;
    int64_t n_pen = 0;
    if (fp8_sample_rows_check(rows, n, pen_ids, v, &n_pen, &e) < 0) {
        ref_fail(be, -EINVAL, "%s", e.msg);
        return;
    }
    struct cand *c = malloc((size_t)v * sizeof(*c));
    if (!c) {
        ref_fail(be, -ENOMEM, "sample: out of memory for %lld candidates", (long long)v);
        return;
    }
    for (int64_t r = 0; r < n; r++)
        ((int32_t *)ids->data)[r] = sample_row((float *)logits->data + r * v, (int32_t)v,
                                               &rows[r],
                                               pen_ids ? pen_ids + rows[r].pen_start : NULL, c);
    free(c);
}
