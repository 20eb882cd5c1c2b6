/* Sampling through the ref backend's `sample` op (rows built by fp8_sample_row_fill):
 * distributions checked by chi-square against softmax probabilities computed here in
 * double precision (independently of kernels/ref/sample.c), fixed seeds so every run
 * draws the same numbers; penalties, finish reasons and stop strings by hand-worked
 * cases. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sampling.h"
#include "kernels/kernels.h"

#define V 6
#define DRAWS 20000

static const float logits6[V] = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.6f};

/* Expected probabilities: softmax(l / t) over ids with keep[i]. */
static void softmax_ref(const float *l, double t, const int *keep, double *p)
{
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        p[i] = keep[i] ? exp((double)l[i] / t) : 0.0;
        sum += p[i];
    }
    for (int i = 0; i < V; i++)
        p[i] /= sum;
}

/* ids[r] = the op's draw from row r of logits (rows, v) under params[r]. */
static void op_sample(const float *logits, int64_t rows, int64_t v,
                      const struct fp8_sample_row *params, const int32_t *pen, int32_t *ids)
{
    struct fp8_backend *be = NULL;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_backend_create("ref", &be, &err), 0);
    struct fp8_tensor l, t;
    int64_t ne[2] = {rows, v};
    assert_int_equal(be->ops->tensor_alloc(be, &l, FP8_DTYPE_F32, 2, ne, &err), 0);
    assert_int_equal(be->ops->tensor_alloc(be, &t, FP8_DTYPE_I32, 1, ne, &err), 0);
    assert_int_equal(be->ops->tensor_set(be, &l, logits, NULL, &err), 0);
    be->ops->sample(be, &l, params, pen, &t);
    if (be->ops->sync(be, &err) < 0)
        fail_msg("sample: %s", err.msg);
    assert_int_equal(be->ops->tensor_get(be, &t, ids, NULL, &err), 0);
    be->ops->tensor_free(be, &l);
    be->ops->tensor_free(be, &t);
    fp8_backend_free(be);
}

/* One draw: the request's history tokens (n_prompt of them the prompt), draw index step. */
static int32_t draw(const float *logits, int32_t v, const struct fp8_sampling_params *sp,
                    const int32_t *tokens, int32_t n_tokens, int32_t n_prompt, uint32_t step)
{
    struct fp8_sample_row row;
    int32_t pen[16], id = -1;
    uint8_t seen[16] = {0};
    assert_true(v <= 16 && n_tokens <= 16);
    fp8_sample_row_fill(&row, sp, step, tokens, n_tokens, n_prompt, v, seen, pen, 0);
    for (int i = 0; i < 16; i++)
        assert_int_equal(seen[i], 0); /* left zeroed for the next request */
    op_sample(logits, 1, v, &row, pen, &id);
    return id;
}

/* Draws DRAWS tokens (steps 0..DRAWS-1, one seed: DRAWS rows of one op call) and returns
 * the chi-square statistic against p; tokens with p == 0 must never appear. */
static double chi_square(const struct fp8_sampling_params *sp, const double *p)
{
    float *l = malloc((size_t)DRAWS * V * sizeof(float));
    struct fp8_sample_row *rows = malloc(DRAWS * sizeof(*rows));
    int32_t *ids = malloc(DRAWS * sizeof(int32_t));
    assert_true(l && rows && ids);
    for (uint32_t step = 0; step < DRAWS; step++) {
        memcpy(l + (size_t)step * V, logits6, sizeof(logits6));
        fp8_sample_row_fill(&rows[step], sp, step, NULL, 0, 0, V, NULL, NULL, 0);
    }
    op_sample(l, DRAWS, V, rows, NULL, ids);
    int counts[V] = {0};
    for (uint32_t step = 0; step < DRAWS; step++) {
        assert_true(ids[step] >= 0 && ids[step] < V);
        counts[ids[step]]++;
    }
    free(l);
    free(rows);
    free(ids);
    double chi = 0.0;
    for (int i = 0; i < V; i++) {
        if (p[i] == 0.0) {
            assert_int_equal(counts[i], 0);
            continue;
        }
        double e = p[i] * DRAWS;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi;
}

/* Critical values of chi-square at p = 0.001: a correct sampler fails one seed in 1000,
 * and these seeds are fixed. */
static const double chi_crit_001[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52};

static void test_temperature_distribution(void **state)
{
    (void)state;
    struct fp8_sampling_params sp = fp8_sampling_params_default();
    int keep[V] = {1, 1, 1, 1, 1, 1};
    double p[V];
    sp.seed = 42;
    sp.temperature = 0.7f;
    softmax_ref(logits6, 0.7, keep, p);
    assert_true(chi_square(&sp, p) < chi_crit_001[5]);
    sp.temperature = 1.5f;
    sp.seed = 7;
    softmax_ref(logits6, 1.5, keep, p);
    assert_true(chi_square(&sp, p) < chi_crit_001[5]);
    /* The same draws scored against the wrong temperature must fail: the test has power. */
    softmax_ref(logits6, 1.0, keep, p);
    assert_true(chi_square(&sp, p) > chi_crit_001[5]);
}

static void test_top_k_distribution(void **state)
{
    (void)state;
    struct fp8_sampling_params sp = fp8_sampling_params_default();
    sp.seed = 3;
    sp.top_k = 3; /* ids 2 (2.0), 5 (1.6), 1 (1.0) */
    int keep[V] = {0, 1, 1, 0, 0, 1};
    double p[V];
    softmax_ref(logits6, 1.0, keep, p);
    assert_true(chi_square(&sp, p) < chi_crit_001[2]);
}

static void test_top_p_distribution(void **state)
{
    (void)state;
    /* softmax(logits6) sorted: id2 .409, id5 .274, id1 .150, id3 .091, id0 .055, id4 .020.
     * top_p 0.7: .409 + .274 = .683 < .7, + .150 = .833 >= .7 -> keep {2, 5, 1}. */
    struct fp8_sampling_params sp = fp8_sampling_params_default();
    sp.seed = 11;
    sp.top_p = 0.7f;
    int keep[V] = {0, 1, 1, 0, 0, 1};
    double p[V];
    softmax_ref(logits6, 1.0, keep, p);
    assert_true(chi_square(&sp, p) < chi_crit_001[2]);
    /* top_p 0.6: .409 < .6, .683 >= .6 -> {2, 5}. */
    sp.top_p = 0.6f;
    int keep2[V] = {0, 0, 1, 0, 0, 1};
    softmax_ref(logits6, 1.0, keep2, p);
    assert_true(chi_square(&sp, p) < chi_crit_001[1]);
}

static void test_min_p_distribution(void **state)
{
    (void)state;
    /* min_p 0.3 of p(id2) = .409 -> threshold .123: keeps id2, id5 (.274), id1 (.150). */
    struct fp8_sampling_params sp = fp8_sampling_params_default();
    sp.seed = 5;
    sp.min_p = 0.3f;
    int keep[V] = {0, 1, 1, 0, 0, 1};
    double p[V];
    softmax_ref(logits6, 1.0, keep, p);
    assert_true(chi_square(&sp, p) < chi_crit_001[2]);
}

static void test_greedy_and_penalties(void **state)
{
    (void)state;
    struct fp8_sampling_params sp = fp8_sampling_params_default();
    sp.temperature = 0.0f;
    const float tie[4] = {1.0f, 3.0f, 2.0f, 3.0f};
    assert_int_equal(draw(tie, 4, &sp, NULL, 0, 0, 0), 1); /* lowest id on ties */

    /* repetition 2 over seen {0, 1}: {2, -1, 1.5, 0} -> {1, -2, 1.5, 0}: id 2 wins. */
    const float l[4] = {2.0f, -1.0f, 1.5f, 0.0f};
    const int32_t seen[3] = {0, 1, 0};
    sp.repetition_penalty = 2.0f;
    assert_int_equal(draw(l, 4, &sp, seen, 3, 3, 0), 2);
    sp.repetition_penalty = 1.0f;
    assert_int_equal(draw(l, 4, &sp, seen, 3, 3, 0), 0);

    /* presence 0.6 counts generated tokens only: token 0 generated -> 1.4 < 1.5. */
    sp.presence_penalty = 0.6f;
    const int32_t hist[2] = {3, 0}; /* prompt {3}, generated {0} */
    assert_int_equal(draw(l, 4, &sp, hist, 2, 1, 0), 2);
    assert_int_equal(draw(l, 4, &sp, hist, 2, 2, 0), 0); /* all prompt */
    /* Both: repetition 2 on {3, 0} ({1, -1, 1.5, 0}), then presence 0.6 on the generated
     * 0 (0.4): id 2. The row lists the generated id first. */
    sp.repetition_penalty = 2.0f;
    struct fp8_sample_row row;
    int32_t pen[4];
    uint8_t marks[4] = {0};
    assert_int_equal(fp8_sample_row_fill(&row, &sp, 5, hist, 2, 1, 4, marks, pen, 1), 2);
    assert_int_equal(row.pen_start, 1);
    assert_int_equal(row.n_pen, 2);
    assert_int_equal(row.n_pen_gen, 1);
    assert_int_equal(row.step, 5);
    assert_int_equal(pen[1], 0);
    assert_int_equal(pen[2], 3);
    assert_int_equal(draw(l, 4, &sp, hist, 2, 1, 0), 2);
    /* Penalties off: no ids at all. */
    sp.repetition_penalty = 1.0f;
    sp.presence_penalty = 0.0f;
    assert_int_equal(fp8_sample_row_fill(&row, &sp, 0, hist, 2, 1, 4, marks, pen, 0), 0);
    assert_int_equal(row.n_pen, 0);
    assert_int_equal(draw(l, 4, &sp, hist, 2, 1, 0), 0);
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    /* 64 steps of one request, and the same steps interleaved with another request's rows
     * in one batch: the request's draws are the same. */
    struct fp8_sampling_params p1 = fp8_sampling_params_default(), other = p1;
    p1.seed = 0x123456789abcull;
    other.seed = 99;
    float alone[64 * V], mixed[128 * V];
    struct fp8_sample_row ra[64], rm[128];
    int32_t x[64], y[128];
    for (uint32_t step = 0; step < 64; step++) {
        memcpy(alone + step * V, logits6, sizeof(logits6));
        memcpy(mixed + 2 * step * V, logits6, sizeof(logits6));
        memcpy(mixed + (2 * step + 1) * V, logits6, sizeof(logits6));
        fp8_sample_row_fill(&ra[step], &p1, step, NULL, 0, 0, V, NULL, NULL, 0);
        fp8_sample_row_fill(&rm[2 * step], &other, step, NULL, 0, 0, V, NULL, NULL, 0);
        fp8_sample_row_fill(&rm[2 * step + 1], &p1, step, NULL, 0, 0, V, NULL, NULL, 0);
    }
    op_sample(alone, 64, V, ra, NULL, x);
    op_sample(mixed, 128, V, rm, NULL, y);
    int differs = 0;
    for (int i = 0; i < 64; i++) {
        assert_int_equal(x[i], y[2 * i + 1]);
        differs += y[2 * i] != x[i];
    }
    assert_true(differs > 0);
}

static void test_params_check(void **state)
{
    (void)state;
    struct fp8_err err = {{0}};
    struct fp8_sampling_params p = fp8_sampling_params_default();
    assert_int_equal(fp8_sampling_params_check(&p, &err), 0);
    p.top_p = 0.0f;
    assert_int_equal(fp8_sampling_params_check(&p, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "top_p"));
    p = fp8_sampling_params_default();
    p.temperature = -1.0f;
    assert_int_equal(fp8_sampling_params_check(&p, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "temperature"));
}

static void test_finish(void **state)
{
    (void)state;
    const int32_t eos[2] = {1, 106};
    struct fp8_sampling_params p = fp8_sampling_params_default();
    p.max_tokens = 3;
    assert_int_equal(fp8_sampling_finish(&p, eos, 2, 106, 1), FP8_FINISH_STOP);
    assert_int_equal(fp8_sampling_finish(&p, eos, 2, 5, 1), FP8_FINISH_NONE);
    assert_int_equal(fp8_sampling_finish(&p, eos, 2, 5, 3), FP8_FINISH_LENGTH);
    p.ignore_eos = true;
    assert_int_equal(fp8_sampling_finish(&p, eos, 2, 106, 1), FP8_FINISH_NONE);
    assert_int_equal(fp8_sampling_finish(&p, eos, 2, 1, 3), FP8_FINISH_LENGTH);
}

static void test_stop_strings_across_tokens(void **state)
{
    (void)state;
    const char *stops[2] = {"o wor", "!!"};
    const char *pieces[4] = {"Hel", "lo wo", "rld", "!!"};
    char text[64] = "";
    size_t len = 0;
    int64_t hit[4];
    size_t hold[4];
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(pieces[i]);
        memcpy(text + len, pieces[i], n + 1);
        len += n;
        hit[i] = fp8_stop_find(text, len, n, stops, 2);
        hold[i] = fp8_stop_holdback(text, len, stops, 2);
    }
    assert_int_equal(hit[0], -1);
    assert_int_equal(hold[0], 0);
    assert_int_equal(hit[1], -1);  /* "Hello wo": "o wo" may still become "o wor" */
    assert_int_equal(hold[1], 4);
    assert_int_equal(hit[2], 4);   /* "Hello world": the stop spans three tokens */
    /* A match in old text is not reported again; the new "!!" is. */
    assert_int_equal(hit[3], 11);

    /* Earliest of several matches in the same new piece. */
    const char *two[2] = {"cd", "bc"};
    assert_int_equal(fp8_stop_find("abcdef", 6, 6, two, 2), 1);
    /* Holdback: trailing "!" could begin "!!"; a full stop is not held (it is found). */
    assert_int_equal(fp8_stop_holdback("ok!", 3, stops, 2), 1);
    const char *empty[1] = {""};
    assert_int_equal(fp8_stop_find("abc", 3, 3, empty, 1), -1);
    assert_int_equal(fp8_stop_holdback("abc", 3, empty, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_temperature_distribution),
        cmocka_unit_test(test_top_k_distribution),
        cmocka_unit_test(test_top_p_distribution),
        cmocka_unit_test(test_min_p_distribution),
        cmocka_unit_test(test_greedy_and_penalties),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_params_check),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_stop_strings_across_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
