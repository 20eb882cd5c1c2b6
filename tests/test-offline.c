/* Offline batch mode: JSONL request parsing (every bad input named), the result lines, and
 * a whole file through the scheduler with the fake model of tests/fake-model.h. Text goes
 * through a toy tokenizer with one character per token id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <jansson.h>

#include "engine/offline.h"
#include "fake-model.h"

#define VOCAB 64
#define EOS 1

static const char alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!?"; /* id -> char */

static int toy_tokenize(void *ctx, const char *text, int32_t **ids, int32_t *n,
                        struct fp8_err *err)
{
    (void)ctx;
    size_t len = strlen(text);
    int32_t *v = malloc((len ? len : 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < len; i++) {
        const char *p = strchr(alphabet, text[i]);
        if (!p || !text[i]) {
            free(v);
            return fp8_err_set(err, -EINVAL, "toy tokenizer: no token for byte %zu", i);
        }
        v[i] = (int32_t)(p - alphabet);
    }
    *ids = v;
    *n = (int32_t)len;
    return 0;
}

static int toy_detokenize(void *ctx, const int32_t *ids, int32_t n, char **text,
                          struct fp8_err *err)
{
    (void)ctx;
    (void)err;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return -ENOMEM;
    for (int32_t i = 0; i < n; i++)
        s[i] = alphabet[ids[i]];
    s[n] = '\0';
    *text = s;
    return 0;
}

static const struct fp8_offline_text toy = {.tokenize = toy_tokenize,
                                            .detokenize = toy_detokenize};

struct rig {
    struct fake_model model;
    struct fp8_sched s;
    struct fp8_sched_params p;
};

static void rig_init(struct rig *g)
{
    g->p = (struct fp8_sched_params){
        .max_num_seqs = 4, .max_num_batched_tokens = 16, .max_model_len = 48,
        .block_size = 4, .kv_budget_bytes = 20 * 100, .kv_bytes_per_block = 100,
        .prefix_caching = true, .n_eos_ids = 1, .eos_ids = {EOS},
    };
    assert_int_equal(fake_init(&g->model, VOCAB, 20, 4, 4), 0);
    struct fp8_model_iface mi = {.ctx = &g->model, .vocab = VOCAB, .forward = fake_forward};
    struct fp8_sampler_iface si = {.sample = fake_sample};
    assert_int_equal(fp8_sched_init(&g->s, &g->p, &mi, &si, NULL), 0);
}

static void rig_free(struct rig *g)
{
    fp8_sched_free(&g->s);
    fake_free(&g->model);
}

static void test_parse_all_fields(void **state)
{
    (void)state;
    const char *line =
        "{\"id\": \"r1\", \"tokens\": [5, 6, 7], \"max_tokens\": 9, \"temperature\": 0.5, "
        "\"top_p\": 0.9, \"top_k\": 40, \"min_p\": 0.05, \"seed\": 1234, \"stop\": [\"ab\"], "
        "\"stop_token_ids\": [3, 4], \"ignore_eos\": true, \"priority\": -2, "
        "\"arrival\": 7, \"cancel_at\": 11}\n";
    struct fp8_offline_req r;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_offline_parse(line, strlen(line), NULL, &r, &err), 0);
    assert_string_equal(r.id, "r1");
    assert_null(r.prompt);
    assert_int_equal(r.n_tokens, 3);
    assert_int_equal(r.tokens[2], 7);
    assert_int_equal(r.params.max_tokens, 9);
    assert_true(r.params.sampling.temperature == 0.5f);
    assert_true(r.params.sampling.top_p == 0.9f);
    assert_int_equal(r.params.sampling.top_k, 40);
    assert_true(r.params.sampling.min_p == 0.05f);
    assert_int_equal(r.params.sampling.seed, 1234);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "ab");
    assert_int_equal(r.params.n_stop_ids, 2);
    assert_int_equal(r.params.stop_ids[1], 4);
    assert_true(r.params.ignore_eos);
    assert_int_equal(r.params.priority, -2);
    assert_int_equal(r.arrival, 7);
    assert_int_equal(r.cancel_at, 11);
    fp8_offline_req_free(&r);

    /* Defaults. */
    const char *min = "{\"id\": \"x\", \"prompt\": \"hi\"}";
    assert_int_equal(fp8_offline_parse(min, strlen(min), NULL, &r, &err), 0);
    assert_string_equal(r.prompt, "hi");
    assert_int_equal(r.params.max_tokens, 16);
    assert_true(r.params.sampling.temperature == 1.0f);
    assert_int_equal(r.arrival, 0);
    assert_int_equal(r.cancel_at, -1);
    assert_false(r.params.ignore_eos);
    fp8_offline_req_free(&r);

    /* The caller's defaults fill what a line omits; the line wins where it speaks. */
    struct fp8_req_params d = fp8_offline_defaults();
    d.max_tokens = 99;
    d.sampling.temperature = 0.25f;
    d.sampling.seed = 5;
    const char *pen = "{\"id\": \"p\", \"tokens\": [1], \"seed\": 6, "
                      "\"repetition_penalty\": 1.5, \"presence_penalty\": -0.5}";
    assert_int_equal(fp8_offline_parse(pen, strlen(pen), &d, &r, &err), 0);
    assert_int_equal(r.params.max_tokens, 99);
    assert_true(r.params.sampling.temperature == 0.25f);
    assert_int_equal(r.params.sampling.seed, 6);
    assert_true(r.params.sampling.repetition_penalty == 1.5f);
    assert_true(r.params.sampling.presence_penalty == -0.5f);
    fp8_offline_req_free(&r);
}

static void test_parse_errors_are_named(void **state)
{
    (void)state;
    static const struct {
        const char *line, *want;
    } cases[] = {
        {"{\"id\": \"a\", \"tokens\": [1,", "bad JSON"},
        {"[1, 2]", "JSON object"},
        {"{\"tokens\": [1]}", "\"id\" must be a string"},
        {"{\"id\": 3, \"tokens\": [1]}", "\"id\" must be a string"},
        {"{\"id\": \"a\"}", "needs \"prompt\" or \"tokens\""},
        {"{\"id\": \"a\", \"tokens\": [1], \"max_token\": 3}", "unknown key \"max_token\""},
        {"{\"id\": \"a\", \"tokens\": [1], \"max_tokens\": 0}", "\"max_tokens\" 0 outside"},
        {"{\"id\": \"a\", \"tokens\": [1], \"max_tokens\": \"5\"}", "\"max_tokens\" must be"},
        {"{\"id\": \"a\", \"tokens\": [1, -2]}", "\"tokens\"[1] is not a token id"},
        {"{\"id\": \"a\", \"tokens\": [1], \"prompt\": \"x\"}", "not both"},
        {"{\"id\": \"a\", \"tokens\": [1], \"top_p\": 1.5}", "\"top_p\" 1.5 outside"},
        {"{\"id\": \"a\", \"tokens\": [1], \"stop\": \"x\"}", "\"stop\" must be an array"},
        {"{\"id\": \"a\", \"tokens\": [1], \"stop\": [\"\"]}", "\"stop\"[0] must be"},
        {"{\"id\": \"a\", \"tokens\": [1], \"ignore_eos\": 1}", "\"ignore_eos\" must be"},
        {"{\"id\": \"a\", \"tokens\": [1], \"arrival\": -1}", "\"arrival\" -1 outside"},
        {"{\"id\": \"a\", \"id\": \"b\", \"tokens\": [1]}", "bad JSON"},
        {"{\"id\": \"a\", \"tokens\": [1], \"stop_token_ids\": "
         "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}", "at most 16"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fp8_offline_req r;
        struct fp8_err err = {{0}};
        assert_int_equal(
            fp8_offline_parse(cases[i].line, strlen(cases[i].line), NULL, &r, &err), -EINVAL);
        if (!strstr(err.msg, cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg, cases[i].want);
        fp8_offline_req_free(&r);
    }
}

static json_t *parse_json(const char *s)
{
    json_error_t e;
    json_t *o = json_loads(s, 0, &e);
    if (!o)
        fail_msg("result is not JSON: %s (%s)", s, e.text);
    return o;
}

/* A file with good and bad lines: one result per line, in input order, each good one the
 * fake model's reference output. */
static void test_run_file(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g);
    const char *input =
        "{\"id\": \"a\", \"tokens\": [5, 6, 7, 8, 9], \"max_tokens\": 6, \"temperature\": 0, "
        "\"ignore_eos\": true}\n"
        "\n"
        "{\"id\": \"b\", \"prompt\": \"hello\", \"max_tokens\": 4, \"seed\": 9, "
        "\"arrival\": 3, \"ignore_eos\": true}\n"
        "{\"id\": \"c\", \"tokens\": [1], \"bogus\": 1}\n"
        "{\"id\": \"d\", \"tokens\": [2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,"
        "2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2]}\n"
        "{\"id\": \"e\", \"tokens\": [3, 4], \"max_tokens\": 30, \"cancel_at\": 5, "
        "\"ignore_eos\": true}\n";
    FILE *in = fmemopen((void *)input, strlen(input), "r");
    char *outbuf = NULL;
    size_t outlen = 0;
    FILE *out = open_memstream(&outbuf, &outlen);
    assert_non_null(in);
    assert_non_null(out);
    struct fp8_err err = {{0}};
    int rc = fp8_offline_run_file(&g.s, in, out, NULL, &toy, &err);
    if (rc < 0)
        fail_msg("run_file: %s", err.msg);
    fclose(in);
    fclose(out);

    const char *ids[5] = {"a", "b", "c", "d", "e"};
    char *save = NULL, *line = strtok_r(outbuf, "\n", &save);
    for (int i = 0; i < 5; i++, line = strtok_r(NULL, "\n", &save)) {
        assert_non_null(line);
        json_t *o = parse_json(line);
        assert_string_equal(json_string_value(json_object_get(o, "id")), ids[i]);
        const char *fin = json_string_value(json_object_get(o, "finish_reason"));
        json_t *toks = json_object_get(o, "tokens");
        json_t *usage = json_object_get(o, "usage");
        assert_true(json_is_object(json_object_get(o, "timings")));
        if (i == 0 || i == 1) {
            int32_t prompt[5] = {5, 6, 7, 8, 9};
            if (i == 1) /* "hello" through the toy tokenizer */
                for (int k = 0; k < 5; k++)
                    prompt[k] = (int32_t)(strchr(alphabet, "hello"[k]) - alphabet);
            struct fp8_req_params p = {.max_tokens = i ? 4 : 6, .ignore_eos = true,
                                       .sampling = {.temperature = i ? 1.0f : 0, .seed = 9}};
            int32_t want[64];
            enum fp8_req_finish wf;
            int32_t n = fake_reference(prompt, 5, &p, g.p.eos_ids, 1, g.p.max_model_len, VOCAB,
                                       want, &wf);
            assert_string_equal(fin, "length");
            assert_int_equal(json_array_size(toks), (size_t)n);
            char text[64];
            for (int32_t k = 0; k < n; k++) {
                assert_int_equal(json_integer_value(json_array_get(toks, (size_t)k)), want[k]);
                text[k] = alphabet[want[k]];
            }
            text[n] = '\0';
            assert_string_equal(json_string_value(json_object_get(o, "text")), text);
            assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), 5);
            assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")), n);
        } else if (i == 2) {
            assert_string_equal(fin, "error");
            assert_non_null(strstr(json_string_value(json_object_get(o, "error")),
                                   "line 4: unknown key \"bogus\""));
        } else if (i == 3) {
            assert_string_equal(fin, "error");
            assert_non_null(strstr(json_string_value(json_object_get(o, "error")),
                                   "too_long: prompt of 48 tokens"));
            assert_int_equal(json_array_size(toks), 0);
        } else {
            /* Arrives at step 0, runs steps 0..4 (prefill, then 4 decodes), cancelled
             * before step 5. */
            assert_string_equal(fin, "cancelled");
            assert_int_equal(json_array_size(toks), 5);
        }
        json_decref(o);
    }
    assert_null(line);
    free(outbuf);
    assert_int_equal(fp8_kv_blocks_bytes_used(&g.s.kv), 0);
    rig_free(&g);
}

/* A stop string spanning two tokens ends the request as soon as its last token arrives;
 * the text is cut before it. Without a tokenizer, "prompt" and "stop" are clear errors. */
static void test_stop_strings(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g);
    int32_t prompt[4] = {10, 11, 12, 13}, want[64];
    struct fp8_req_params p = {.max_tokens = 20, .ignore_eos = true};
    enum fp8_req_finish wf;
    int32_t n = fake_reference(prompt, 4, &p, g.p.eos_ids, 1, g.p.max_model_len, VOCAB, want,
                               &wf);
    assert_int_equal(n, 20);
    char text[64];
    for (int32_t k = 0; k < n; k++)
        text[k] = alphabet[want[k]];
    text[n] = '\0';
    char stop[3] = {text[3], text[4], 0};
    int32_t at = (int32_t)(strstr(text, stop) - text); /* first occurrence, <= 3 */

    struct fp8_offline_req reqs[3];
    memset(reqs, 0, sizeof(reqs));
    char line[256];
    snprintf(line, sizeof(line), "{\"id\": \"s\", \"tokens\": [10, 11, 12, 13], "
             "\"max_tokens\": 20, \"ignore_eos\": true, \"temperature\": 0, \"stop\": [\"%s\"]}",
             stop);
    assert_int_equal(fp8_offline_parse(line, strlen(line), NULL, &reqs[0], NULL), 0);
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_offline_run(&g.s, reqs, 1, &toy, NULL, &err), 0);
    assert_non_null(reqs[0].result);
    assert_int_equal(reqs[0].result->finish, FP8_REQ_FINISH_STOP);
    assert_int_equal(reqs[0].result->usage.completion_tokens, at + 2);
    text[at] = '\0';
    assert_string_equal(reqs[0].text, text);
    fp8_offline_req_free(&reqs[0]);

    const char *l1 = "{\"id\": \"p\", \"prompt\": \"abc\"}";
    const char *l2 = "{\"id\": \"q\", \"tokens\": [3], \"stop\": [\"x\"]}";
    assert_int_equal(fp8_offline_parse(l1, strlen(l1), NULL, &reqs[1], NULL), 0);
    assert_int_equal(fp8_offline_parse(l2, strlen(l2), NULL, &reqs[2], NULL), 0);
    assert_int_equal(fp8_offline_run(&g.s, reqs + 1, 2, NULL, NULL, &err), 0);
    assert_non_null(strstr(reqs[1].error, "\"prompt\" needs a tokenizer"));
    assert_non_null(strstr(reqs[2].error, "\"stop\" strings need a tokenizer"));
    char *r1 = fp8_offline_result_json(&reqs[1]);
    json_t *o = parse_json(r1);
    assert_string_equal(json_string_value(json_object_get(o, "finish_reason")), "error");
    assert_true(json_is_null(json_object_get(o, "text")));
    json_decref(o);
    free(r1);
    fp8_offline_req_free(&reqs[1]);
    fp8_offline_req_free(&reqs[2]);
    rig_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_all_fields),
        cmocka_unit_test(test_parse_errors_are_named),
        cmocka_unit_test(test_run_file),
        cmocka_unit_test(test_stop_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
