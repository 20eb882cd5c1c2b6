/* `fp8d run "prompt"`: the text path (tokenizer, chat template, streaming detokenizer)
 * around the same model loop as --tokens, on a tiny random Qwen3 with the real Qwen3
 * vocabulary: greedy text output must equal the tokenizer's decode of the ids that
 * `--tokens` produces from the rendered, encoded prompt. And --synthetic gives the same
 * logits as the checkpoint mkmodel writes for that preset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/chat_template.h"
#include "engine/tokenizer.h"
#include "tests/test_util.h"
#include "tests/tmpdir.h"

static char *dir;

/* A tiny random Qwen3 with the real tokenizer, written by `fp8d mkmodel` (bf16, seed 0:
 * the same values as --synthetic qwen3-tiny). */
static int setup(void **state)
{
    (void)state;
    char fp8d[512], cmd[1024];
    built_binary("fp8d", fp8d, sizeof(fp8d));
    if (!(dir = tmpdir_make()))
        return -1;
    snprintf(cmd, sizeof(cmd), "%s mkmodel --arch qwen3 --out %s >/dev/null", fp8d, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(dir);
    return 0;
}

static void test_text_equals_decoded_ids(void **state)
{
    (void)state;
    const char *prompt = "Hello there, tiny model";
    char path[600], *rendered = NULL, args[4096], text_out[8192], ids_out[8192];
    struct fp8_tokenizer *tok = NULL;
    struct fp8_chat_template t;
    struct fp8_chat_message msg = {.role = "user", .content = prompt};
    size_t len, n_ids;
    int32_t *ids = NULL;
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    assert_int_equal(fp8_tokenizer_load(&tok, path, NULL), 0);
    assert_int_equal(fp8_chat_template_init(&t, "Qwen3ForCausalLM", NULL), 0);
    assert_int_equal(fp8_chat_render(&t, &msg, 1, true, -1, &rendered, &len, NULL), 0);
    assert_int_equal(fp8_tokenizer_encode(tok, rendered, len, false, &ids, &n_ids, NULL), 0);

    const char *common = "--backend ref --temperature 0 --max-tokens 10 --ignore-eos";
    snprintf(args, sizeof(args), "run --model %s %s \"%s\"", dir, common, prompt);
    assert_int_equal(run_fp8d(args, false, text_out, sizeof(text_out)), 0);
    int k = snprintf(args, sizeof(args), "run --model %s %s --tokens ", dir, common);
    for (size_t i = 0; i < n_ids; i++)
        k += snprintf(args + k, sizeof(args) - (size_t)k, "%s%d", i ? "," : "", ids[i]);
    assert_int_equal(run_fp8d(args, false, ids_out, sizeof(ids_out)), 0);

    int32_t gen[10];
    char *p = ids_out;
    for (int i = 0; i < 10; i++) {
        char *end;
        gen[i] = (int32_t)strtol(p, &end, 10);
        assert_true(end != p);
        p = end;
    }
    char *decoded = NULL;
    assert_int_equal(fp8_tokenizer_decode(tok, gen, 10, true, &decoded, &len, NULL), 0);
    size_t tl = strlen(text_out);
    assert_true(tl > 0 && text_out[tl - 1] == '\n'); /* run ends its output with a newline */
    text_out[tl - 1] = 0;
    assert_string_equal(text_out, decoded);
    free(decoded);
    free(ids);
    free(rendered);
    fp8_tokenizer_free(tok);
}

static void test_synthetic_equals_mkmodel_checkpoint(void **state)
{
    (void)state;
    char args[1024], out[4096];
    const char *common = "--backend ref --tokens 9,8,7,6,5,151643 --out";
    snprintf(args, sizeof(args), "logits --model %s %s %s/a.f32", dir, common, dir);
    assert_int_equal(run_fp8d(args, false, out, sizeof(out)), 0);
    snprintf(args, sizeof(args), "logits --synthetic qwen3-tiny %s %s/b.f32", common, dir);
    assert_int_equal(run_fp8d(args, false, out, sizeof(out)), 0);
    char pa[600], pb[600];
    snprintf(pa, sizeof(pa), "%s/a.f32", dir);
    snprintf(pb, sizeof(pb), "%s/b.f32", dir);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    size_t n = 0;
    int ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        assert_int_equal(ca, cb);
        n++;
    } while (ca != EOF);
    assert_int_equal(n - 1, (size_t)6 * 151680 * 4); /* [6, vocab] float32 */
    fclose(fa);
    fclose(fb);
    unlink(pa);
    unlink(pb);
}

static void test_missing_tokenizer_is_clear(void **state)
{
    (void)state;
    char args[1024], out[4096];
    snprintf(args, sizeof(args), "run --model %s/tests/golden/models/qwen3-tiny --backend ref "
             "\"hi\"", FP8D_SOURCE_DIR);
    assert_int_equal(run_fp8d(args, true, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "tokenizer.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_equals_decoded_ids),
        cmocka_unit_test(test_synthetic_equals_mkmodel_checkpoint),
        cmocka_unit_test(test_missing_tokenizer_is_clear),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
