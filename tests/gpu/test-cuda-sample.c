/* The cuda backend's `sample` op (kernels/cuda/sample.cu) through struct fp8_backend_ops:
 *
 * - Against the ref backend's op on Qwen3's vocabulary (151,936) for greedy, temperature,
 *   top-k, top-p, min-p, penalties and their mixes, on random logits (some rounded to
 *   1/8 so that ties are everywhere). Greedy rows must agree exactly (no sums). Other
 *   rows may differ only where the two backends' weight sums (ref: float64 in sorted
 *   order; cuda: 40-bit fixed point, exact to 2^-40 per weight) or expf's last ulp put a
 *   candidate boundary on different sides of the draw u * total, the top-p threshold or
 *   min_p: for each differing row, a float64 oracle here must find such a decision
 *   within NEAR_TIE (relative) of its threshold, and at most MAX_DIFF_PCT % of the rows
 *   may differ. Expected: ~1e-7 of the mass of rounding against ~1e-5 between the
 *   closest neighbours of these rows, so about one row in a hundred at most.
 * - Chi-square of cuda draws against the exact distribution (float64 softmax here) for
 *   temperature, top-k, top-p and min-p, on 6 logits (20,000 draws) and on the same 6
 *   placed among 151,936 ids whose other logits are -1e4 (1,000 draws: 0.6 GB of rows).
 * - Determinism: the same rows give bit-identical ids on a rerun, in a batch of
 *   another order and composition, and alone or 16 at a time.
 * - Ties by the hundred thousand (every logit 0: one value bucket far larger than the
 *   kernel's shared buffer, searched in the row): the draw is floor(u * n) of the n
 *   candidates kept, worked out here by hand for temperature, top-k, top-p and min-p.
 * - Rows without weight (an infinite maximum, no finite logit): the greedy pick. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "kernels/kernels.h"

#define QWEN_V 151936
#define ROWS 64
#define NEAR_TIE 1e-5
#define MAX_DIFF_PCT 5.0

static struct fp8_backend *backend(const char *name)
{
    struct fp8_backend *be = NULL;
    struct fp8_err err = {{0}};
    if (fp8_backend_create(name, &be, &err) < 0)
        fail_msg("backend %s: %s", name, err.msg);
    return be;
}

static bool have_gpu(void)
{
    struct fp8_backend *be = NULL;
    struct fp8_err err = {{0}};
    if (fp8_backend_create("cuda", &be, &err) < 0) {
        printf("test-cuda-sample: %s\n", err.msg);
        return false;
    }
    fp8_backend_free(be);
    return true;
}

/* ids = the op's draws on be from a copy of logits (rows, v). */
static void run_op(struct fp8_backend *be, const float *logits, int64_t rows, int64_t v,
                   const struct fp8_sample_row *params, const int32_t *pen, int32_t *ids)
{
    struct fp8_err err = {{0}};
    struct fp8_tensor l, t;
    int64_t ne[2] = {rows, v};
    if (be->ops->tensor_alloc(be, &l, FP8_DTYPE_F32, 2, ne, &err) < 0 ||
        be->ops->tensor_alloc(be, &t, FP8_DTYPE_I32, 1, ne, &err) < 0 ||
        be->ops->tensor_set(be, &l, logits, NULL, &err) < 0)
        fail_msg("%s: %s", be->name, err.msg);
    be->ops->sample(be, &l, params, pen, &t);
    if (be->ops->sync(be, &err) < 0 || be->ops->tensor_get(be, &t, ids, NULL, &err) < 0)
        fail_msg("%s sample: %s", be->name, err.msg);
    be->ops->tensor_free(be, &l);
    be->ops->tensor_free(be, &t);
}

static struct fp8_sample_row row_of(float t, int32_t k, float p, float min_p, uint64_t seed,
                                    uint32_t step)
{
    return (struct fp8_sample_row){.temperature = t, .top_k = k, .top_p = p, .min_p = min_p,
                                   .repetition_penalty = 1.0f, .seed = seed, .step = step};
}

/* ---- float64 oracle: decision margins of one row --------------------------------------- */

struct cand {
    double l;
    int32_t id;
};

static int by_desc(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (x->l != y->l)
        return x->l > y->l ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The smallest distance, relative to the mass it is compared with, between a decision
 * value (u * total for the draw, top_p * total for top-p) and a cumulative weight sum of
 * the candidates in sorted order: a small one means fp32 and fixed-point sums may decide
 * differently. l: logits after penalties. */
static double row_margin(const float *l, int32_t v, const struct fp8_sample_row *p)
{
    struct cand *c = malloc((size_t)v * sizeof(*c));
    double *w = malloc((size_t)v * sizeof(double));
    assert_true(c && w);
    for (int32_t i = 0; i < v; i++)
        c[i] = (struct cand){l[i], i};
    qsort(c, (size_t)v, sizeof(*c), by_desc);
    int32_t n = p->top_k > 0 && p->top_k < v ? p->top_k : v;
    double total = 0, margin = INFINITY;
    for (int32_t i = 0; i < n; i++)
        total += w[i] = exp((c[i].l - c[0].l) / p->temperature);
    if (p->top_p < 1.0f) {
        double run = 0, thr = (double)p->top_p * total;
        int32_t i = 0;
        while (i < n && run < thr) {
            run += w[i++];
            margin = fmin(margin, fabs(run - thr) / total);
        }
        n = i;
        total = run;
    }
    if (p->min_p > 0.0f) {
        int32_t i = 1;
        double run = w[0];
        while (i < n && w[i] >= p->min_p) {
            margin = fmin(margin, (w[i] - p->min_p) / p->min_p);
            run += w[i++];
        }
        if (i < n) /* expf a few ulps apart may move the first one left out */
            margin = fmin(margin, (p->min_p - w[i]) / p->min_p);
        n = i;
        total = run;
    }
    uint32_t ctr[4] = {p->step, 0, 0, 0}, key[2] = {(uint32_t)p->seed, (uint32_t)(p->seed >> 32)},
             out[4];
    philox4x32_10(ctr, key, out);
    double target = (double)rng_u32_to_unit(out[0]) * total, run = 0;
    for (int32_t i = 0; i < n; i++) {
        run += w[i];
        margin = fmin(margin, fabs(run - target) / total);
    }
    free(c);
    free(w);
    return margin;
}

/* Logits shaped like a language model's: normal with std 2, 3 or 4 by row, plus 5 ids
 * raised by 5..10 (the likely continuations); every fourth row rounded to 1/8, so ties
 * are everywhere. (A flat row, every id within a few units of the others, puts ~1e-5 of
 * the mass between neighbouring candidates, the size of fp32's rounding of a 150k-term
 * sum: there the two backends pick neighbours, and cuda's integer sums are the exact
 * ones. Such rows are not used here.) */
static float *random_logits(int32_t rows, int32_t v, uint64_t seed)
{
    float *l = malloc((size_t)rows * v * sizeof(float));
    assert_non_null(l);
    for (int32_t r = 0; r < rows; r++) {
        float sd = 2.0f + (float)(r % 3);
        float *row = l + (size_t)r * v;
        for (int32_t i = 0; i < v; i++) {
            double a = ((double)(splitmix64_next(&seed) >> 11) + 0.5) * 0x1p-53;
            double b = (double)(splitmix64_next(&seed) >> 11) * 0x1p-53;
            row[i] = (float)(sqrt(-2.0 * log(a)) * cos(6.283185307179586 * b)) * sd;
        }
        for (int k = 0; k < 5; k++)
            row[splitmix64_next(&seed) % (uint64_t)v] += 5.0f + (float)k;
        if (r % 4 == 3)
            for (int32_t i = 0; i < v; i++)
                row[i] = roundf(row[i] * 8.0f) / 8.0f;
    }
    return l;
}

static void test_cuda_matches_ref(void **state)
{
    (void)state;
    if (!have_gpu())
        skip();
    const struct fp8_sample_row kinds[] = {
        row_of(0.0f, 0, 1.0f, 0.0f, 0, 0),         /* greedy */
        row_of(1.0f, 0, 1.0f, 0.0f, 11, 0),        /* the whole vocabulary */
        row_of(0.6f, 20, 0.95f, 0.0f, 12, 3),      /* Qwen3's defaults */
        row_of(1.0f, 0, 0.9f, 0.0f, 13, 7),        /* top-p alone */
        row_of(0.7f, 50, 1.0f, 0.0f, 14, 1),       /* top-k alone */
        row_of(1.2f, 0, 1.0f, 0.05f, 15, 9),       /* min-p alone */
        row_of(0.8f, 1000, 0.8f, 0.02f, 16, 2),    /* all three */
        row_of(1.0f, 40, 0.95f, 0.0f, 17, 5),      /* with penalties, below */
    };
    const int n_kinds = (int)(sizeof(kinds) / sizeof(kinds[0]));
    float *l = random_logits(ROWS, QWEN_V, 0xfeed);
    struct fp8_sample_row rows[ROWS];
    int32_t pen[ROWS * 8];
    for (int r = 0; r < ROWS; r++) {
        rows[r] = kinds[r % n_kinds];
        rows[r].seed += (uint64_t)r << 20;
        if (r % n_kinds == n_kinds - 1) { /* 8 distinct ids, 3 of them generated */
            rows[r].repetition_penalty = 1.3f;
            rows[r].presence_penalty = 0.5f;
            rows[r].pen_start = r * 8;
            rows[r].n_pen = 8;
            rows[r].n_pen_gen = 3;
            for (int i = 0; i < 8; i++)
                pen[r * 8 + i] = (int32_t)((uint32_t)(r * 7919 + i * 15485863) % QWEN_V);
        }
    }
    int32_t ref_ids[ROWS], cuda_ids[ROWS], again[ROWS];
    struct fp8_backend *rb = backend("ref"), *cb = backend("cuda");
    run_op(rb, l, ROWS, QWEN_V, rows, pen, ref_ids);
    run_op(cb, l, ROWS, QWEN_V, rows, pen, cuda_ids);
    run_op(cb, l, ROWS, QWEN_V, rows, pen, again);
    assert_memory_equal(cuda_ids, again, sizeof(again)); /* bit-for-bit on a rerun */

    /* Reversed order, every row after a greedy stranger: the same draws. */
    float *l2 = malloc((size_t)2 * ROWS * QWEN_V * sizeof(float));
    struct fp8_sample_row rows2[2 * ROWS];
    int32_t ids2[2 * ROWS];
    assert_non_null(l2);
    for (int r = 0; r < ROWS; r++) {
        int src = ROWS - 1 - r;
        memcpy(l2 + (size_t)(2 * r) * QWEN_V, l + (size_t)((r * 5) % ROWS) * QWEN_V,
               QWEN_V * sizeof(float));
        rows2[2 * r] = kinds[0];
        memcpy(l2 + (size_t)(2 * r + 1) * QWEN_V, l + (size_t)src * QWEN_V,
               QWEN_V * sizeof(float));
        rows2[2 * r + 1] = rows[src];
    }
    run_op(cb, l2, 2 * ROWS, QWEN_V, rows2, pen, ids2);
    for (int r = 0; r < ROWS; r++)
        assert_int_equal(ids2[2 * r + 1], cuda_ids[ROWS - 1 - r]);
    free(l2);
    /* Alone (batch 1, each kind) and 16 at a time: the same draws. */
    for (int r = 0; r < n_kinds; r++) {
        int32_t one;
        run_op(cb, l + (size_t)r * QWEN_V, 1, QWEN_V, &rows[r], pen, &one);
        assert_int_equal(one, cuda_ids[r]);
    }
    int32_t ids16[16];
    run_op(cb, l + (size_t)16 * QWEN_V, 16, QWEN_V, rows + 16, pen, ids16);
    assert_memory_equal(ids16, cuda_ids + 16, sizeof(ids16));

    int differ = 0;
    for (int r = 0; r < ROWS; r++) {
        if (ref_ids[r] == cuda_ids[r])
            continue;
        differ++;
        assert_true(rows[r].temperature > 0.0f); /* greedy: exactly the same */
        /* the oracle sees the logits after the penalties, as both backends did */
        float *row = l + (size_t)r * QWEN_V;
        for (int i = 0; i < rows[r].n_pen; i++) {
            float *x = &row[pen[rows[r].pen_start + i]];
            *x = *x > 0.0f ? *x / rows[r].repetition_penalty : *x * rows[r].repetition_penalty;
            if (i < rows[r].n_pen_gen)
                *x -= rows[r].presence_penalty;
        }
        double m = row_margin(row, QWEN_V, &rows[r]);
        printf("  row %d (kind %d): ref %d, cuda %d, nearest boundary %.3g of the mass\n", r,
               r % n_kinds, ref_ids[r], cuda_ids[r], m);
        assert_true(m <= NEAR_TIE);
    }
    printf("cuda vs ref over %d rows of %d logits: %d differ (each at a near-tie), allowed "
           "%.0f%%\n", ROWS, QWEN_V, differ, MAX_DIFF_PCT);
    assert_true(100.0 * differ <= MAX_DIFF_PCT * ROWS);
    fp8_backend_free(rb);
    fp8_backend_free(cb);
    free(l);
}

/* ---- chi-square -------------------------------------------------------------------------- */

#define V6 6
static const float logits6[V6] = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.6f};
/* chi-square at p = 0.001 by degrees of freedom: fixed seeds, so a correct sampler passes */
static const double chi_crit_001[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52};

static void softmax_ref(double t, const int *keep, double *p)
{
    double sum = 0.0;
    for (int i = 0; i < V6; i++) {
        p[i] = keep[i] ? exp((double)logits6[i] / t) : 0.0;
        sum += p[i];
    }
    for (int i = 0; i < V6; i++)
        p[i] /= sum;
}

/* draws rows of one op call, steps 0.. under prm; the 6 logits at ids place[] of a row of
 * v (the others -1e4); chi-square of the counts against p. */
static double chi_square(struct fp8_backend *cb, struct fp8_sample_row prm, int32_t draws,
                         int32_t v, const int32_t *place, const double *p)
{
    float *l = malloc((size_t)draws * v * sizeof(float));
    struct fp8_sample_row *rows = malloc((size_t)draws * sizeof(*rows));
    int32_t *ids = malloc((size_t)draws * sizeof(int32_t));
    assert_true(l && rows && ids);
    for (int32_t d = 0; d < draws; d++) {
        float *row = l + (size_t)d * v;
        for (int32_t i = 0; i < v; i++)
            row[i] = -1e4f;
        for (int i = 0; i < V6; i++)
            row[place[i]] = logits6[i];
        rows[d] = prm;
        rows[d].step = (uint32_t)d;
    }
    run_op(cb, l, draws, v, rows, NULL, ids);
    double counts[V6] = {0}, chi = 0.0;
    for (int32_t d = 0; d < draws; d++) {
        int k = -1;
        for (int i = 0; i < V6; i++)
            if (ids[d] == place[i])
                k = i;
        if (k < 0)
            fail_msg("draw %d picked id %d, none of the six", d, ids[d]);
        counts[k]++;
    }
    for (int i = 0; i < V6; i++) {
        if (p[i] == 0.0) {
            assert_true(counts[i] == 0);
            continue;
        }
        double e = p[i] * draws;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    free(l);
    free(rows);
    free(ids);
    return chi;
}

static void chi_cases(int32_t draws, int32_t v, const int32_t *place, bool power)
{
    struct fp8_backend *cb = backend("cuda");
    const int all[V6] = {1, 1, 1, 1, 1, 1}, top3[V6] = {0, 1, 1, 0, 0, 1},
              top2[V6] = {0, 0, 1, 0, 0, 1};
    double p[V6], chi;
    /* the hand-worked cut-offs of tests/test-sampling.c */
    softmax_ref(0.7, all, p);
    chi = chi_square(cb, row_of(0.7f, 0, 1.0f, 0.0f, 42, 0), draws, v, place, p);
    printf("  v=%d temperature 0.7: chi2 %.2f (< %.2f)\n", v, chi, chi_crit_001[5]);
    assert_true(chi < chi_crit_001[5]);
    softmax_ref(1.5, all, p);
    chi = chi_square(cb, row_of(1.5f, 0, 1.0f, 0.0f, 7, 0), draws, v, place, p);
    printf("  v=%d temperature 1.5: chi2 %.2f (< %.2f)\n", v, chi, chi_crit_001[5]);
    assert_true(chi < chi_crit_001[5]);
    softmax_ref(1.0, all, p); /* the same draws against the wrong temperature: power */
    if (power)
        assert_true(chi_square(cb, row_of(1.5f, 0, 1.0f, 0.0f, 7, 0), draws, v, place, p) >
                    chi_crit_001[5]);
    softmax_ref(1.0, top3, p);
    chi = chi_square(cb, row_of(1.0f, 3, 1.0f, 0.0f, 3, 0), draws, v, place, p);
    printf("  v=%d top_k 3: chi2 %.2f (< %.2f)\n", v, chi, chi_crit_001[2]);
    assert_true(chi < chi_crit_001[2]);
    chi = chi_square(cb, row_of(1.0f, 0, 0.7f, 0.0f, 11, 0), draws, v, place, p);
    printf("  v=%d top_p 0.7: chi2 %.2f (< %.2f)\n", v, chi, chi_crit_001[2]);
    assert_true(chi < chi_crit_001[2]);
    chi = chi_square(cb, row_of(1.0f, 0, 1.0f, 0.3f, 5, 0), draws, v, place, p);
    printf("  v=%d min_p 0.3: chi2 %.2f (< %.2f)\n", v, chi, chi_crit_001[2]);
    assert_true(chi < chi_crit_001[2]);
    softmax_ref(1.0, top2, p);
    chi = chi_square(cb, row_of(1.0f, 0, 0.6f, 0.0f, 11, 0), draws, v, place, p);
    printf("  v=%d top_p 0.6: chi2 %.2f (< %.2f)\n", v, chi, chi_crit_001[1]);
    assert_true(chi < chi_crit_001[1]);
    fp8_backend_free(cb);
}

static void test_chi_square_small_vocab(void **state)
{
    (void)state;
    if (!have_gpu())
        skip();
    const int32_t place[V6] = {0, 1, 2, 3, 4, 5};
    chi_cases(20000, V6, place, true);
}

static void test_chi_square_qwen_vocab(void **state)
{
    (void)state;
    if (!have_gpu())
        skip();
    const int32_t place[V6] = {77777, 3, 151935, 40000, 0, 100001};
    chi_cases(1000, QWEN_V, place, false);
}

/* ---- ties and rows without weight ---------------------------------------------------- */

/* floor(u * n) for the row's Philox draw u: with n equal weights, the candidate drawn. */
static int32_t nth_of_u(const struct fp8_sample_row *p, int32_t n)
{
    uint32_t ctr[4] = {p->step, 0, 0, 0}, key[2] = {(uint32_t)p->seed, (uint32_t)(p->seed >> 32)},
             out[4];
    philox4x32_10(ctr, key, out);
    return (int32_t)floor((double)rng_u32_to_unit(out[0]) * n); /* exact: 24 x 18 bits */
}

static void test_flat_rows(void **state)
{
    (void)state;
    if (!have_gpu())
        skip();
    /* every logit 0: weights all exactly 1, candidates in id order; kept = how many */
    const struct {
        struct fp8_sample_row p;
        int32_t kept;
    } kinds[] = {
        {row_of(1.0f, 0, 1.0f, 0.0f, 21, 0), QWEN_V},
        {row_of(0.6f, 20, 0.95f, 0.0f, 22, 4), 19},     /* 0.95 * 20 = 19 weights */
        {row_of(1.0f, 10000, 1.0f, 0.0f, 23, 1), 10000},
        {row_of(1.0f, 0, 0.5f, 0.0f, 24, 2), QWEN_V / 2}, /* ceil(0.5 * 151936) */
        {row_of(2.0f, 0, 1.0f, 0.5f, 25, 3), QWEN_V},      /* w = 1 >= min_p for all */
    };
    const int n_kinds = (int)(sizeof(kinds) / sizeof(kinds[0])), n = 4 * n_kinds;
    float *l = calloc((size_t)n * QWEN_V, sizeof(float));
    struct fp8_sample_row rows[4 * 5];
    int32_t ids[4 * 5];
    assert_non_null(l);
    for (int r = 0; r < n; r++) {
        rows[r] = kinds[r % n_kinds].p;
        rows[r].seed += (uint64_t)r * 1000003u;
        rows[r].step += (uint32_t)r;
    }
    struct fp8_backend *cb = backend("cuda");
    run_op(cb, l, n, QWEN_V, rows, NULL, ids);
    for (int r = 0; r < n; r++)
        assert_int_equal(ids[r], nth_of_u(&rows[r], kinds[r % n_kinds].kept));

    /* +inf at id 777 (every other weight 0, its own NaN); no finite logit at all */
    for (int32_t i = 0; i < QWEN_V; i++)
        l[QWEN_V + i] = -INFINITY;
    l[777] = INFINITY;
    l[1000] = INFINITY;
    rows[0] = rows[1] = row_of(1.0f, 0, 1.0f, 0.0f, 5, 0);
    run_op(cb, l, 2, QWEN_V, rows, NULL, ids);
    assert_int_equal(ids[0], 777);
    assert_int_equal(ids[1], 0);
    fp8_backend_free(cb);
    free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_matches_ref),
        cmocka_unit_test(test_chi_square_small_vocab),
        cmocka_unit_test(test_chi_square_qwen_vocab),
        cmocka_unit_test(test_flat_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
