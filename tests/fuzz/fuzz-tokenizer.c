/* libFuzzer target: encode and decode of the real Qwen3 tokenizer on arbitrary bytes.
 * First byte: even -> the rest is text to encode (invalid UTF-8 must give -EILSEQ, valid
 * text must encode, decode back to valid UTF-8 and stream to the same text); odd -> the
 * rest is little-endian 32-bit ids (taken modulo the vocabulary) to decode and stream. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

static struct fp8_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char path[4096];
    const char *dir = getenv("FP8D_TOKENIZERS");
    if (dir && *dir)
        snprintf(path, sizeof(path), "%s/qwen3/tokenizer.json", dir);
    else
        snprintf(path, sizeof(path), "%s/.cache/tokenizers/qwen3/tokenizer.json", FP8D_SOURCE_DIR);
    struct fp8_err err = {{0}};
    if (fp8_tokenizer_load(&tok, path, &err) < 0) {
        fprintf(stderr, "fuzz-tokenizer: SKIPPED, cannot load the Qwen3 tokenizer (%s); "
                        "run `make tokenizers` first\n", err.msg);
        exit(0);
    }
    return 0;
}

static int valid_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i], lo = 0x80, hi = 0xbf;
        size_t k;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) k = 2;
        else if (c >= 0xe0 && c <= 0xef) { k = 3; lo = c == 0xe0 ? 0xa0 : 0x80; hi = c == 0xed ? 0x9f : 0xbf; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 4; lo = c == 0xf0 ? 0x90 : 0x80; hi = c == 0xf4 ? 0x8f : 0xbf; }
        else return 0;
        if (i + k > n || u[i + 1] < lo || u[i + 1] > hi)
            return 0;
        for (size_t j = 2; j < k; j++)
            if ((u[i + j] & 0xc0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

static void decode_and_stream(const int32_t *ids, size_t n)
{
    struct fp8_err err;
    char *text;
    size_t len;
    if (fp8_tokenizer_decode(tok, ids, n, false, &text, &len, &err) < 0 || !valid_utf8(text, len))
        abort();
    struct fp8_detok d;
    if (fp8_detok_init(&d, tok, false, &err) < 0)
        abort();
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *t;
        size_t k;
        int rc = i < n ? fp8_detok_push(&d, ids[i], &t, &k, &err) : fp8_detok_finish(&d, &t, &k, &err);
        if (rc < 0 || !valid_utf8(t, k) || at + k > len || memcmp(text + at, t, k))
            abort();
        at += k;
    }
    if (at != len)
        abort();
    fp8_detok_free(&d);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    struct fp8_err err;
    if (!(data[0] & 1)) {
        int32_t *ids;
        size_t n_ids;
        int rc = fp8_tokenizer_encode(tok, s, n, data[0] & 2, &ids, &n_ids, &err);
        if (rc == -EILSEQ && !valid_utf8(s, n))
            return 0;
        if (rc < 0 || !valid_utf8(s, n))
            abort();
        decode_and_stream(ids, n_ids);
        free(ids);
        return 0;
    }
    size_t n_ids = n / 4;
    int32_t *ids = malloc((n_ids ? n_ids : 1) * sizeof(*ids));
    if (!ids)
        return 0;
    for (size_t i = 0; i < n_ids; i++) {
        uint32_t v;
        memcpy(&v, s + 4 * i, 4);
        ids[i] = (int32_t)(v % (uint32_t)fp8_tokenizer_n_vocab(tok));
    }
    decode_and_stream(ids, n_ids);
    free(ids);
    return 0;
}
