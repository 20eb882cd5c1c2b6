/* Tokenizer against Hugging Face: every golden fixture (tests/golden, made by
 * hf_reference.py with tokenizers 0.23.2 on the real Qwen3 and Gemma3 tokenizer.json)
 * must encode and decode identically; streaming detokenization must reassemble the same
 * text in whole UTF-8 pieces; invalid UTF-8 and unsupported components fail clearly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/tokenizer.h"
#include "tests/tokenizer_fixtures.h"

/* Independent UTF-8 validator (Unicode Table 3-7), for checking streamed pieces. */
static int utf8_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xc2 && c <= 0xdf) k = 2;
        else if (c == 0xe0) { k = 3; lo = 0xa0; }
        else if (c >= 0xe1 && c <= 0xef) { k = 3; if (c == 0xed) hi = 0x9f; }
        else if (c == 0xf0) { k = 4; lo = 0x90; }
        else if (c >= 0xf1 && c <= 0xf3) k = 4;
        else if (c == 0xf4) { k = 4; hi = 0x8f; }
        else return 0;
        if (i + k > n || u[i + 1] < lo || u[i + 1] > hi)
            return 0;
        for (size_t j = 2; j < k; j++)
            if (u[i + j] < 0x80 || u[i + j] > 0xbf)
                return 0;
        i += k;
    }
    return 1;
}

static struct fp8_tokenizer *load_real(const char *name)
{
    char path[4096];
    tokenizer_path(path, sizeof(path), name, "tokenizer.json");
    if (!tokenizer_cache_present(path))
        fail_msg("tokenizer cache missing: %s (run `make tokenizers`)", path);
    struct fp8_tokenizer *tok = NULL;
    struct fp8_err err = {{0}};
    int rc = fp8_tokenizer_load(&tok, path, &err);
    if (rc < 0)
        fail_msg("%s", err.msg);
    return tok;
}

static int32_t *json_ids(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *ids = malloc((*n ? *n : 1) * sizeof(*ids));
    assert_non_null(ids);
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

static void check_stream(const struct fp8_tokenizer *tok, const int32_t *ids, size_t n, bool skip,
                         const char *want, size_t want_len)
{
    struct fp8_detok d;
    struct fp8_err err;
    assert_int_equal(fp8_detok_init(&d, tok, skip, &err), 0);
    char *acc = malloc(want_len + 1);
    size_t got = 0;
    assert_non_null(acc);
    for (size_t i = 0; i <= n; i++) {
        const char *t;
        size_t len;
        int rc = i < n ? fp8_detok_push(&d, ids[i], &t, &len, &err) : fp8_detok_finish(&d, &t, &len, &err);
        assert_int_equal(rc, 0);
        assert_true(utf8_ok(t, len));
        assert_true(got + len <= want_len);
        memcpy(acc + got, t, len);
        got += len;
    }
    assert_int_equal(got, want_len);
    assert_memory_equal(acc, want, want_len);
    free(acc);
    fp8_detok_free(&d);
}

struct golden_counts {
    size_t enc, sp, dec;
};

/* One fixture record: encode (and add_special) when it has "s", decode in both skip modes
 * and streaming always. */
static void check_record(const struct fp8_tokenizer *tok, const char *name, size_t line, json_t *rec,
                         struct golden_counts *c)
{
    json_t *s = json_object_get(rec, "s");
    size_t n_want;
    int32_t *want = json_ids(json_object_get(rec, "ids"), &n_want);
    struct fp8_err err = {{0}};
    if (s) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = fp8_tokenizer_encode(tok, json_string_value(s), json_string_length(s), false, &ids, &n, &err);
        if (rc != 0)
            fail_msg("%s line %zu: %s", name, line, err.msg);
        if (n != n_want || memcmp(ids, want, n * sizeof(*ids)))
            fail_msg("%s line %zu: encode differs from HF (%zu vs %zu ids)", name, line, n, n_want);
        free(ids);
        c->enc++;
        json_t *sp = json_object_get(rec, "ids_sp");
        if (sp) {
            size_t n_sp_want;
            int32_t *want_sp = json_ids(sp, &n_sp_want);
            assert_int_equal(fp8_tokenizer_encode(tok, json_string_value(s), json_string_length(s), true,
                                                  &ids, &n, &err), 0);
            if (n != n_sp_want || memcmp(ids, want_sp, n * sizeof(*ids)))
                fail_msg("%s line %zu: encode with add_special differs from HF", name, line);
            free(ids);
            free(want_sp);
            c->sp++;
        }
    }
    json_t *dec = json_object_get(rec, "dec");
    if (!dec)
        dec = s;
    json_t *decs = json_object_get(rec, "decs");
    if (!decs)
        decs = dec;
    for (int skip = 0; skip < 2; skip++) {
        json_t *w = skip ? decs : dec;
        char *text;
        size_t len;
        assert_int_equal(fp8_tokenizer_decode(tok, want, n_want, skip, &text, &len, &err), 0);
        if (len != json_string_length(w) || memcmp(text, json_string_value(w), len))
            fail_msg("%s line %zu: decode(skip_special=%d) differs from HF", name, line, skip);
        free(text);
        check_stream(tok, want, n_want, skip, json_string_value(w), json_string_length(w));
    }
    c->dec++;
    free(want);
}

static void run_golden(const char *name)
{
    struct fp8_tokenizer *tok = load_real(name);
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/%s-encode.jsonl", FP8D_SOURCE_DIR, name);
    json_t *all = read_jsonl(path);
    assert_non_null(all);
    struct golden_counts c = {0};
    size_t i;
    json_t *rec;
    json_array_foreach(all, i, rec)
        check_record(tok, name, i + 1, rec, &c);
    print_message("%s: %zu encodes, %zu add_special encodes, %zu decodes (x2 skip modes, + streaming) equal HF\n",
                  name, c.enc, c.sp, c.dec);
    assert_true(c.enc >= 2000);
    json_decref(all);
    fp8_tokenizer_free(tok);
}

/* tests/golden/synthetic.jsonl: small tokenizers built and serialized by HF (hf_synthetic.py)
 * for the components and flags the real files do not use. */
static void test_golden_synthetic(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/golden/synthetic.jsonl", FP8D_SOURCE_DIR);
    json_t *all = read_jsonl(path);
    assert_non_null(all);
    struct fp8_tokenizer *tok = NULL;
    const char *variant = NULL;
    struct golden_counts c = {0};
    size_t i, n_variants = 0;
    json_t *rec;
    json_array_foreach(all, i, rec) {
        json_t *js = json_object_get(rec, "tokenizer");
        if (js) {
            if (tok)
                print_message("synthetic %s: %zu encodes, %zu add_special, %zu decodes equal HF\n", variant,
                              c.enc, c.sp, c.dec);
            fp8_tokenizer_free(tok);
            tok = NULL;
            c = (struct golden_counts){0};
            variant = json_string_value(json_object_get(rec, "variant"));
            struct fp8_err err = {{0}};
            if (fp8_tokenizer_load_mem(&tok, json_string_value(js), json_string_length(js), &err) < 0)
                fail_msg("synthetic %s: %s", variant, err.msg);
            n_variants++;
            continue;
        }
        assert_non_null(tok);
        check_record(tok, variant, i + 1, rec, &c);
    }
    print_message("synthetic %s: %zu encodes, %zu add_special, %zu decodes equal HF\n", variant, c.enc, c.sp,
                  c.dec);
    assert_int_equal(n_variants, 11);
    fp8_tokenizer_free(tok);
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

static void expect_eilseq(const struct fp8_tokenizer *tok, const char *s, size_t n, const char *offset_text)
{
    int32_t *ids = (int32_t *)(uintptr_t)0x1;
    size_t n_ids = 77;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_tokenizer_encode(tok, s, n, false, &ids, &n_ids, &err), -EILSEQ);
    assert_non_null(strstr(err.msg, offset_text));
    assert_ptr_equal(ids, (int32_t *)(uintptr_t)0x1); /* outputs untouched on failure */
    assert_int_equal(n_ids, 77);
}

/* Invalid UTF-8 is rejected, naming the offset of the first bad byte. */
static void test_invalid_utf8_rejected(void **state)
{
    (void)state;
    struct fp8_tokenizer *tok = load_real("qwen3");
    expect_eilseq(tok, "ab\xff" "cd", 5, "byte offset 2");
    expect_eilseq(tok, "\xe4\xb8", 2, "byte offset 0");              /* truncated */
    expect_eilseq(tok, "xy\xc0\xaf", 4, "byte offset 2");            /* overlong '/' */
    expect_eilseq(tok, "\xed\xa0\x80", 3, "byte offset 0");          /* surrogate */
    expect_eilseq(tok, "ok \xf4\x90\x80\x80", 7, "byte offset 3");   /* > U+10FFFF */
    expect_eilseq(tok, "\xe4\xb8\xad\x80", 4, "byte offset 3");      /* stray continuation */
    /* NUL is a valid character and is encoded, not a terminator */
    int32_t *ids;
    size_t n;
    struct fp8_err err;
    assert_int_equal(fp8_tokenizer_encode(tok, "a\0b", 3, false, &ids, &n, &err), 0);
    assert_int_equal(n, 3);
    free(ids);
    fp8_tokenizer_free(tok);
}

/* Hand-worked: byte-level tokens standing for bytes E4 B8 AD ("中", U+4E2D). */
static void test_qwen3_partial_bytes(void **state)
{
    (void)state;
    struct fp8_tokenizer *tok = load_real("qwen3");
    /* GPT-2 alphabet: 0xE4 -> U+00E4 'ä', 0xB8 -> U+00B8 '¸', 0xAD -> U+0143 'Ń' */
    int32_t e4 = fp8_tokenizer_token_to_id(tok, "\xc3\xa4");
    int32_t b8 = fp8_tokenizer_token_to_id(tok, "\xc2\xb8");
    int32_t ad = fp8_tokenizer_token_to_id(tok, "\xc5\x83");
    assert_true(e4 >= 0 && b8 >= 0 && ad >= 0);
    char *text;
    size_t len;
    struct fp8_err err;
    int32_t two[2] = {e4, b8}, three[3] = {e4, b8, ad};
    assert_int_equal(fp8_tokenizer_decode(tok, two, 2, false, &text, &len, &err), 0);
    assert_string_equal(text, "\xef\xbf\xbd"); /* one U+FFFD for the truncated sequence */
    free(text);
    assert_int_equal(fp8_tokenizer_decode(tok, three, 3, false, &text, &len, &err), 0);
    assert_string_equal(text, "\xe4\xb8\xad");
    free(text);

    struct fp8_detok d;
    const char *t;
    assert_int_equal(fp8_detok_init(&d, tok, false, &err), 0);
    assert_int_equal(fp8_detok_push(&d, e4, &t, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_int_equal(fp8_detok_push(&d, b8, &t, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_int_equal(fp8_detok_push(&d, ad, &t, &len, &err), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(t, "\xe4\xb8\xad", 3);
    /* an unfinished sequence at the end comes out as U+FFFD from finish */
    assert_int_equal(fp8_detok_push(&d, e4, &t, &len, &err), 0);
    assert_int_equal(len, 0);
    assert_int_equal(fp8_detok_finish(&d, &t, &len, &err), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(t, "\xef\xbf\xbd", 3);
    int32_t bad = fp8_tokenizer_n_vocab(tok);
    assert_int_equal(fp8_detok_push(&d, bad, &t, &len, &err), -EINVAL);
    fp8_detok_free(&d);
    fp8_tokenizer_free(tok);
}

/* Hand-worked: Gemma3 byte-fallback tokens <0xE4><0xB8><0xAD> -> "中"; an invalid run
 * becomes one U+FFFD per byte (HF ByteFallback). */
static void test_gemma3_byte_fallback(void **state)
{
    (void)state;
    struct fp8_tokenizer *tok = load_real("gemma3");
    int32_t e4 = fp8_tokenizer_token_to_id(tok, "<0xE4>");
    int32_t b8 = fp8_tokenizer_token_to_id(tok, "<0xB8>");
    int32_t ad = fp8_tokenizer_token_to_id(tok, "<0xAD>");
    int32_t a = fp8_tokenizer_token_to_id(tok, "a");
    assert_true(e4 >= 0 && b8 >= 0 && ad >= 0 && a >= 0);
    char *text;
    size_t len;
    struct fp8_err err;
    int32_t ok[4] = {e4, b8, ad, a}, bad[3] = {e4, b8, a};
    assert_int_equal(fp8_tokenizer_decode(tok, ok, 4, false, &text, &len, &err), 0);
    assert_string_equal(text, "\xe4\xb8\xad" "a");
    free(text);
    assert_int_equal(fp8_tokenizer_decode(tok, bad, 3, false, &text, &len, &err), 0);
    assert_string_equal(text, "\xef\xbf\xbd\xef\xbf\xbd" "a");
    free(text);
    /* streaming holds the whole byte run until a non-byte token ends it */
    struct fp8_detok d;
    const char *t;
    assert_int_equal(fp8_detok_init(&d, tok, false, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fp8_detok_push(&d, ok[i], &t, &len, &err), 0);
        assert_int_equal(len, 0);
    }
    assert_int_equal(fp8_detok_push(&d, a, &t, &len, &err), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(t, "\xe4\xb8\xad" "a", 4);
    fp8_detok_free(&d);
    fp8_tokenizer_free(tok);
}

static struct fp8_tokenizer *load_json(const char *json, int want_rc, const char *want_in_msg)
{
    struct fp8_tokenizer *tok = NULL;
    struct fp8_err err = {{0}};
    int rc = fp8_tokenizer_load_mem(&tok, json, strlen(json), &err);
    if (rc != want_rc)
        fail_msg("load returned %d (%s), wanted %d", rc, err.msg, want_rc);
    if (want_in_msg && !strstr(err.msg, want_in_msg))
        fail_msg("error '%s' does not name '%s'", err.msg, want_in_msg);
    return tok;
}

#define TINY_MODEL(merges)                                                                       \
    "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, " \
    "\"abc\": 5}, \"merges\": " merges "}"

static void test_unsupported_components(void **state)
{
    (void)state;
    load_json("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", -ENOTSUP, "WordPiece");
    load_json("{\"normalizer\": {\"type\": \"Lowercase\"}, " TINY_MODEL("[]") "}", -ENOTSUP, "Lowercase");
    load_json("{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\"}]}, "
              TINY_MODEL("[]") "}", -ENOTSUP, "Digits");
    load_json("{\"decoder\": {\"type\": \"WordPiece\"}, " TINY_MODEL("[]") "}", -ENOTSUP, "WordPiece");
    load_json("{\"post_processor\": {\"type\": \"BertProcessing\"}, " TINY_MODEL("[]") "}", -ENOTSUP,
              "BertProcessing");
    load_json("{" TINY_MODEL("[\"a x\"]") "}", -EINVAL, "merges[0]");
    load_json("{\"model\": ", -EINVAL, "tokenizer.json");
}

static void encode_expect(const struct fp8_tokenizer *tok, const char *s, const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    struct fp8_err err;
    assert_int_equal(fp8_tokenizer_encode(tok, s, strlen(s), false, &ids, &n, &err), 0);
    assert_int_equal(n, n_want);
    assert_memory_equal(ids, want, n * sizeof(*ids));
    free(ids);
}

/* Merge rank order, worked by hand, with both JSON spellings of merges. */
static void test_merge_forms_and_ranks(void **state)
{
    (void)state;
    const char *bc_first[] = {TINY_MODEL("[\"b c\", \"a b\", \"ab c\"]"),
                              TINY_MODEL("[[\"b\", \"c\"], [\"a\", \"b\"], [\"ab\", \"c\"]]")};
    for (int i = 0; i < 2; i++) {
        char json[512];
        snprintf(json, sizeof(json), "{%s}", bc_first[i]);
        struct fp8_tokenizer *tok = load_json(json, 0, NULL);
        /* "abc": "b c" (rank 0) wins over "a b" -> a + bc, and no merge a+bc exists */
        encode_expect(tok, "abc", (int32_t[]){0, 4}, 2);
        /* "abab": a b a b -> ab ab (rank 1 twice) */
        encode_expect(tok, "abab", (int32_t[]){3, 3}, 2);
        fp8_tokenizer_free(tok);
    }
    struct fp8_tokenizer *tok = load_json("{" TINY_MODEL("[\"a b\", \"b c\", \"ab c\"]") "}", 0, NULL);
    encode_expect(tok, "abc", (int32_t[]){5}, 1); /* a b -> ab, then ab c -> abc */
    fp8_tokenizer_free(tok);
}

/* Added tokens: leftmost-longest, matched on the raw text before the model. */
static void test_added_leftmost_longest(void **state)
{
    (void)state;
    struct fp8_tokenizer *tok = load_json(
        "{\"added_tokens\": [{\"id\": 6, \"content\": \"<x>\", \"special\": true, \"normalized\": false},"
        " {\"id\": 7, \"content\": \"<x>b\", \"special\": false, \"normalized\": false},"
        " {\"id\": 8, \"content\": \"x>a\", \"special\": false, \"normalized\": false}], "
        TINY_MODEL("[\"a b\"]") "}",
        0, NULL);
    /* a, then "<x>b" (longest at the leftmost start; "x>a" would start later), then c */
    encode_expect(tok, "a<x>bc", (int32_t[]){0, 7, 2}, 3);
    /* "<x>" at 0 beats the overlapping "x>a" at 1 */
    encode_expect(tok, "<x>ab", (int32_t[]){6, 3}, 2);
    char *text;
    size_t len;
    struct fp8_err err;
    assert_int_equal(fp8_tokenizer_decode(tok, (int32_t[]){6, 3, 7}, 3, true, &text, &len, &err), 0);
    assert_string_equal(text, "ab <x>b"); /* no decoder: HF joins with spaces; 6 is special */
    free(text);
    fp8_tokenizer_free(tok);
}

/* A decoder chain that chunking could change (a Strip of the end after Fuse) is refused by
 * the streaming detokenizer instead of streaming inexact text; whole decodes still work. */
static void test_detok_refuses_inexact_chain(void **state)
{
    (void)state;
    struct fp8_tokenizer *tok = load_json(
        "{\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}, "
        "{\"type\": \"Strip\", \"content\": \"c\", \"start\": 0, \"stop\": 1}]}, " TINY_MODEL("[]") "}",
        0, NULL);
    struct fp8_detok d;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_detok_init(&d, tok, false, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "Strip"));
    char *text;
    size_t len;
    assert_int_equal(fp8_tokenizer_decode(tok, (int32_t[]){0, 2, 2}, 3, false, &text, &len, &err), 0);
    assert_string_equal(text, "ac"); /* Fuse -> "acc", then one 'c' stripped from the end */
    free(text);
    fp8_tokenizer_free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported_components),
        cmocka_unit_test(test_merge_forms_and_ranks),
        cmocka_unit_test(test_added_leftmost_longest),
        cmocka_unit_test(test_detok_refuses_inexact_chain),
        cmocka_unit_test(test_invalid_utf8_rejected),
        cmocka_unit_test(test_qwen3_partial_bytes),
        cmocka_unit_test(test_gemma3_byte_fallback),
        cmocka_unit_test(test_golden_qwen3),
        cmocka_unit_test(test_golden_gemma3),
        cmocka_unit_test(test_golden_synthetic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
