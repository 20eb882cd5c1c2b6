/* `fp8d logits` and `fp8d run` as a user calls them (the built binary in $FP8D_BUILD):
 * logits against the transformers fixtures, greedy decoding against the argmax of
 * teacher-forced logits, seeds, and the errors for what is not available. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/test_util.h"

#define GOLDEN FP8D_SOURCE_DIR "/tests/golden/models"

static float *read_f32(const char *path, size_t n)
{
    float *v = malloc(n * sizeof(float));
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(v, sizeof(float), n, f), n);
    assert_int_equal(fgetc(f), EOF); /* exactly [n_tokens, vocab] */
    fclose(f);
    return v;
}

/* The tokens of qwen3-small's second golden sequence as "a,b,c"; *n their count. */
static void golden_tokens(char *buf, size_t cap, int32_t *n)
{
    json_error_t je;
    json_t *g = json_load_file(GOLDEN "/qwen3-small/golden.json", 0, &je);
    assert_non_null(g);
    json_t *toks = json_object_get(json_array_get(json_object_get(g, "sequences"), 1), "tokens");
    *n = (int32_t)json_array_size(toks);
    buf[0] = 0;
    for (int32_t i = 0; i < *n; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%lld", i ? "," : "",
                 (long long)json_integer_value(json_array_get(toks, (size_t)i)));
    json_decref(g);
}

static void test_logits_match_fixture(void **state)
{
    (void)state;
    char toks[1024], args[2048], out[4096];
    int32_t n;
    golden_tokens(toks, sizeof(toks), &n);
    assert_int_equal(n, 23);
    snprintf(args, sizeof(args), "logits --model %s/qwen3-small --backend ref --weights bf16 "
             "--kv-cache-dtype f32 --max-num-batched-tokens 5 --tokens %s --out /tmp/fp8d-logits-test.f32",
             GOLDEN, toks);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 0);
    size_t count = (size_t)n * 320;
    float *got = read_f32("/tmp/fp8d-logits-test.f32", count),
          *ref = read_f32(GOLDEN "/qwen3-small/logits1.f32", count);
    double max_err = 0, max_ref = 0;
    for (size_t i = 0; i < count; i++) {
        max_err = fmax(max_err, fabs(got[i] - ref[i]));
        max_ref = fmax(max_ref, fabs(ref[i]));
    }
    assert_true(max_err / max_ref <= 1e-5);
    free(got);
    free(ref);
    remove("/tmp/fp8d-logits-test.f32");
}

static void test_greedy_run_follows_argmax(void **state)
{
    (void)state;
    char args[1024], out[4096];
    snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref --weights bf16 "
             "--kv-cache-dtype f32 --temperature 0 --max-tokens 8 --ignore-eos --tokens 5,6,7",
             GOLDEN);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 0);
    int32_t seq[11] = {5, 6, 7}, n = 3;
    for (char *p = out; n < 11; n++) {
        char *end;
        seq[n] = (int32_t)strtol(p, &end, 10);
        assert_true(end != p);
        p = end;
    }
    /* Teacher-forced logits of prompt + output: each generated token is the argmax of the
     * logits one position before it. */
    char list[256] = "";
    for (int32_t i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%d", i ? "," : "", seq[i]);
    snprintf(args, sizeof(args), "logits --model %s/qwen3-small --backend ref --weights bf16 "
             "--kv-cache-dtype f32 --tokens %s --out /tmp/fp8d-greedy-test.f32", GOLDEN, list);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 0);
    float *l = read_f32("/tmp/fp8d-greedy-test.f32", (size_t)n * 320);
    for (int32_t p = 2; p < n - 1; p++) {
        int32_t best = 0;
        for (int32_t i = 1; i < 320; i++)
            if (l[(size_t)p * 320 + i] > l[(size_t)p * 320 + best])
                best = i;
        assert_int_equal(best, seq[p + 1]);
    }
    free(l);
    remove("/tmp/fp8d-greedy-test.f32");
}

static void test_run_seeds(void **state)
{
    (void)state;
    char args[1024], a[4096], b[4096], c[4096];
    const char *fmt = "run --model %s/qwen3-small --backend ref --max-tokens 16 --ignore-eos "
                      "--seed %d --tokens 5,6,7";
    snprintf(args, sizeof(args), fmt, GOLDEN, 1);
    assert_int_equal(run_fp8d(args, true, a, sizeof(a)), 0);
    assert_int_equal(run_fp8d(args, true, b, sizeof(b)), 0);
    assert_string_equal(a, b);
    snprintf(args, sizeof(args), fmt, GOLDEN, 2);
    assert_int_equal(run_fp8d(args, true, c, sizeof(c)), 0);
    assert_string_not_equal(a, c);
}

static void test_clear_errors(void **state)
{
    (void)state;
    char args[1024], out[4096];
    snprintf(args, sizeof(args), "logits --model %s/qwen3-tiny --tokens 1,2 --out /tmp/x "
             "--backend cuda", GOLDEN);
    int rc = run_fp8d(args, true, out, sizeof(out));
#ifdef FP8D_WITH_CUDA
    if (rc != 0) { /* 0 on a GPU machine */
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "no CUDA device found"));
    }
#else
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "built without CUDA"));
#endif
    snprintf(args, sizeof(args), "logits --model %s/qwen3-tiny --tokens 1,2 --out /tmp/x "
             "--backend ref --kv-cache-dtype fp4", GOLDEN);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--kv-cache-dtype 'fp4'"));
    snprintf(args, sizeof(args), "logits --model %s/qwen3-tiny --tokens 1,,2 --out /tmp/x "
             "--backend ref", GOLDEN);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--tokens"));
    snprintf(args, sizeof(args), "run --model %s/qwen3-tiny --backend ref --top-p 0", GOLDEN);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--top-p"));
    snprintf(args, sizeof(args), "logits --model /nonexistent --tokens 1 --out /tmp/x --backend ref");
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "/nonexistent"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_fixture),
        cmocka_unit_test(test_greedy_run_follows_argmax),
        cmocka_unit_test(test_run_seeds),
        cmocka_unit_test(test_clear_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
