/* Chat templates against HF apply_chat_template(tokenize=False) with each model's own Jinja
 * template (tests/golden/{qwen3,gemma3}-chat.jsonl, transformers 5.17.0): every rendering
 * equal, and every conversation the template rejects rejected here too. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/chat_template.h"
#include "tests/tokenizer_fixtures.h"

static void run_golden(const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/%s-chat.jsonl", FP8D_SOURCE_DIR, name);
    json_t *all = read_jsonl(path);
    assert_non_null(all);
    struct fp8_chat_template t;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_chat_template_init(&t, name, &err), 0);
    size_t i, n_ok = 0, n_err = 0;
    json_t *rec;
    json_array_foreach(all, i, rec) {
        json_t *req = json_object_get(rec, "req"), *want = json_object_get(rec, "out");
        json_t *th = json_object_get(req, "enable_thinking");
        int think = json_is_boolean(th) ? json_is_true(th) : -1;
        bool gen = json_is_true(json_object_get(req, "add_generation_prompt"));
        struct fp8_chat_message *msgs = NULL;
        size_t n = 0;
        char *out = NULL;
        size_t len = 0;
        int rc = fp8_chat_messages_from_json(json_object_get(req, "messages"), &msgs, &n, &err);
        if (rc == 0)
            rc = fp8_chat_render(&t, msgs, n, gen, think, &out, &len, &err);
        if (want) {
            if (rc != 0)
                fail_msg("%s line %zu: %s", name, i + 1, err.msg);
            if (len != json_string_length(want) || memcmp(out, json_string_value(want), len))
                fail_msg("%s line %zu: rendering differs from HF:\n--- want\n%s\n--- got\n%s", name, i + 1,
                         json_string_value(want), out);
            n_ok++;
        } else {
            if (rc == 0)
                fail_msg("%s line %zu: HF's template raised (%s) but this rendered", name, i + 1,
                         json_string_value(json_object_get(rec, "error")));
            n_err++;
        }
        free(out);
        fp8_chat_messages_free(msgs, n);
    }
    print_message("%s: %zu renderings equal HF, %zu rejected like HF\n", name, n_ok, n_err);
    assert_true(n_ok >= 20);
    json_decref(all);
}

static void test_golden_qwen3(void **state)
{
    (void)state;
    run_golden("qwen3");
}

static void test_golden_gemma3(void **state)
{
    (void)state;
    run_golden("gemma3");
}

static void test_arch_selection(void **state)
{
    (void)state;
    struct fp8_chat_template t;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_chat_template_init(&t, "Qwen3MoeForCausalLM", &err), 0);
    assert_int_equal(t.family, FP8_CHAT_QWEN3);
    assert_int_equal(fp8_chat_template_init(&t, "Gemma3ForConditionalGeneration", &err), 0);
    assert_int_equal(t.family, FP8_CHAT_GEMMA3);
    assert_string_equal(t.bos_token, "<bos>");
    assert_int_equal(fp8_chat_template_init(&t, "LlamaForCausalLM", &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "LlamaForCausalLM"));
}

/* Hand-written expectations for the rules the fixtures exercise only in passing. */
static void test_qwen3_rules(void **state)
{
    (void)state;
    struct fp8_chat_template t;
    struct fp8_err err;
    assert_int_equal(fp8_chat_template_init(&t, "qwen3", &err), 0);
    const struct fp8_chat_message msgs[] = {
        {.role = "user", .content = "q1"},
        {.role = "assistant", .content = "<think>old</think>a1"},
        {.role = "user", .content = "q2"},
        {.role = "assistant", .content = "a2", .reasoning_content = "why"},
    };
    char *out;
    size_t len;
    assert_int_equal(fp8_chat_render(&t, msgs, 4, false, -1, &out, &len, &err), 0);
    /* reasoning before the last user query is dropped; after it, it is kept */
    assert_string_equal(out, "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
                             "<|im_start|>user\nq2<|im_end|>\n"
                             "<|im_start|>assistant\n<think>\nwhy\n</think>\n\na2<|im_end|>\n");
    free(out);
    assert_int_equal(fp8_chat_render(&t, msgs, 1, true, 0, &out, &len, &err), 0);
    assert_string_equal(out, "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
    free(out);
    assert_int_equal(fp8_chat_render(&t, msgs, 0, true, 0, &out, &len, &err), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arch_selection),
        cmocka_unit_test(test_qwen3_rules),
        cmocka_unit_test(test_golden_qwen3),
        cmocka_unit_test(test_golden_gemma3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
