/* `fp8d run --requests FILE.jsonl` as a user calls it (the built binary in $FP8D_BUILD):
 * every result equals what the plain single-sequence `fp8d run` prints for the same
 * request and options (no scheduler there), also when the batch is chunked and preempted;
 * text prompts go through the same tokenizer and chat template; errors are clear. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/config.h"
#include "engine/model.h"
#include "tests/test_util.h"
#include "tests/tmpdir.h"

#define GOLDEN FP8D_SOURCE_DIR "/tests/golden/models"

static char *tmp, jsonl[600];

static int setup(void **state)
{
    (void)state;
    if (!(tmp = tmpdir_make()))
        return -1;
    snprintf(jsonl, sizeof(jsonl), "%s/requests.jsonl", tmp);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(tmp);
    return 0;
}

/* The result line of request id in out, parsed. */
static json_t *result_of(const char *out, const char *id)
{
    const char *p = out;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_t *o = json_loadb(p, len, 0, NULL);
        if (o && !strcmp(json_string_value(json_object_get(o, "id")), id))
            return o;
        json_decref(o);
        p += len + (nl != NULL);
    }
    fail_msg("no result for %s in:\n%s", id, out);
    return NULL;
}

static void expect_tokens(json_t *res, const char *single_out)
{
    json_t *toks = json_object_get(res, "tokens");
    const char *p = single_out;
    size_t n = 0;
    for (;; n++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (n >= json_array_size(toks) || json_integer_value(json_array_get(toks, n)) != v)
            fail_msg("token %zu: single run says %ld; batch gave %s", n, v,
                     json_dumps(toks, JSON_COMPACT));
        p = end;
    }
    assert_int_equal(n, json_array_size(toks));
}

/* Six requests with staggered arrivals through a pool of 8 blocks of 16 tokens (two
 * 64-token sequences; together they need 17), all admitted at once, steps of 8 tokens:
 * chunked prefills and preemptions. */
static void test_batch_equals_single_runs(void **state)
{
    (void)state;
    struct fp8_model_config *cfg = malloc(sizeof(*cfg));
    assert_non_null(cfg);
    assert_int_equal(fp8_model_config_load(GOLDEN "/qwen3-small", cfg, NULL), 0);
    struct fp8_kv_cache_desc one = fp8_model_kv_desc(cfg, FP8_DTYPE_E4M3, 16, 1);
    long long pool = 2 * 4 * fp8_kv_block_bytes(&one); /* 8 blocks of 16 */
    free(cfg);

    static const struct {
        const char *id, *tokens;
        int max_tokens, seed, arrival;
        float temperature;
    } reqs[] = {
        {"a", "5,6,7", 24, 0, 0, 0},
        {"b", "9,8,7,6,5,4,3,2,1,10,11,12,13,14,15,16,17,18,19", 30, 3, 0, 0.8f},
        {"c", "5,6,7", 20, 4, 1, 1.0f},
        {"d", "40,41,42,43,44,45,46,47,48,49,50", 40, 5, 2, 0.7f},
        {"e", "100,101", 12, 0, 9, 0},
        {"f", "7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7", 25, 6, 3,
         0.9f},
    };
    size_t n = sizeof(reqs) / sizeof(reqs[0]);
    char text[4096] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "{\"id\": \"%s\", \"tokens\": [%s], \"max_tokens\": %d, \"seed\": %d, "
                 "\"temperature\": %g, \"arrival\": %d, \"ignore_eos\": true}\n",
                 reqs[i].id, reqs[i].tokens, reqs[i].max_tokens, reqs[i].seed,
                 (double)reqs[i].temperature, reqs[i].arrival);
    write_file(jsonl, text);

    static char out[65536], single[4096];
    char args[1024];
    snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref --max-model-len 64 "
             "--max-num-seqs 6 --max-num-batched-tokens 8 --kv-cache-memory %lld "
             "--requests %s", GOLDEN, pool, jsonl);
    int rc = run_fp8d(args, true, out, sizeof(out));
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    int preempted = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *res = result_of(out, reqs[i].id);
        assert_string_equal(json_string_value(json_object_get(res, "finish_reason")), "length");
        preempted += (int)json_integer_value(
            json_object_get(json_object_get(res, "timings"), "preemptions"));
        snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref --max-tokens %d "
                 "--seed %d --temperature %g --ignore-eos --tokens %s", GOLDEN,
                 reqs[i].max_tokens, reqs[i].seed, (double)reqs[i].temperature, reqs[i].tokens);
        assert_int_equal(run_fp8d(args, false, single, sizeof(single)), 0);
        expect_tokens(res, single);
        json_decref(res);
    }
    assert_true(preempted > 0);
}

/* A text prompt through the chat template and tokenizer, and its text back, equal to the
 * single run's streamed text (mkmodel: a tiny random Qwen3 with the real tokenizer; bf16
 * weights only to load its 151k-row embedding faster). */
static void test_text_prompt_equals_single_run(void **state)
{
    (void)state;
    char args[1024];
    static char out[65536], single[65536];
    snprintf(args, sizeof(args), "mkmodel --arch qwen3 --out %s", tmp);
    assert_int_equal(run_fp8d(args, false, out, sizeof(out)), 0);
    write_file(jsonl, "{\"id\": \"t\", \"prompt\": \"Hello there\", \"max_tokens\": 12, "
                      "\"temperature\": 0, \"ignore_eos\": true}\n");
    snprintf(args, sizeof(args), "run --model %s --backend ref --weights bf16 "
             "--max-model-len 128 --requests %s", tmp, jsonl);
    int rc = run_fp8d(args, true, out, sizeof(out));
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    snprintf(args, sizeof(args), "run --model %s --backend ref --weights bf16 --max-tokens 12 "
             "--temperature 0 --ignore-eos \"Hello there\"", tmp);
    assert_int_equal(run_fp8d(args, false, single, sizeof(single)), 0);
    size_t len = strlen(single);
    assert_true(len > 0 && single[len - 1] == '\n');
    single[len - 1] = 0; /* the single run ends its text with a newline */
    json_t *res = result_of(out, "t");
    assert_string_equal(json_string_value(json_object_get(res, "text")), single);
    assert_int_equal(json_array_size(json_object_get(res, "tokens")), 12);
    json_decref(res);
}

static void test_clear_errors(void **state)
{
    (void)state;
    static char out[4096];
    char args[1024];
    snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref "
             "--requests /nonexistent/requests.jsonl", GOLDEN);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "--requests /nonexistent/requests.jsonl: No such file"));

    snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref --requests %s "
             "--tokens 1,2", GOLDEN, jsonl);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "--requests needs --model (or --synthetic) and takes no prompt"));

    /* A pool too small for one max-model-len sequence says so with the figures. */
    snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref --max-model-len 64 "
             "--kv-cache-memory 1000 --requests %s", GOLDEN, jsonl);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "max_model_len 64 needs 4 blocks"));

    /* Per-request problems are result lines; the others still run. No tokenizer here. */
    write_file(jsonl, "{\"id\": \"p\", \"prompt\": \"hi\"}\n"
                      "{\"id\": \"q\", \"tokens\": [1, 2], \"max_tokens\": 2}\n"
                      "not json\n");
    snprintf(args, sizeof(args), "run --model %s/qwen3-small --backend ref --max-model-len 64 "
             "--requests %s", GOLDEN, jsonl);
    assert_int_equal(run_fp8d(args, false, out, sizeof(out)), 0);
    json_t *p = result_of(out, "p");
    assert_non_null(strstr(json_string_value(json_object_get(p, "error")),
                           "\"prompt\" needs a tokenizer"));
    json_decref(p);
    json_t *q = result_of(out, "q");
    assert_string_not_equal(json_string_value(json_object_get(q, "finish_reason")), "error");
    json_decref(q);
    assert_non_null(strstr(out, "\"id\":null,\"tokens\":[],\"text\":null,"
                                "\"finish_reason\":\"error\",\"error\":\"bad_request: line 3: "
                                "bad JSON"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_single_runs),
        cmocka_unit_test(test_text_prompt_equals_single_run),
        cmocka_unit_test(test_clear_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
