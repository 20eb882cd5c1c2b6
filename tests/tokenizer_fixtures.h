/* Shared by the tokenizer tests: where the real tokenizer files and the golden fixtures
 * are, and a JSONL reader. */
#ifndef FP8_TESTS_TOKENIZER_FIXTURES_H
#define FP8_TESTS_TOKENIZER_FIXTURES_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* $FP8D_TOKENIZERS (tests/run.sh sets it) or the source tree's .cache/tokenizers. */
static inline void tokenizer_path(char *out, size_t n, const char *name, const char *file)
{
    const char *dir = getenv("FP8D_TOKENIZERS");
    if (dir && *dir)
        snprintf(out, n, "%s/%s/%s", dir, name, file);
    else
        snprintf(out, n, "%s/.cache/tokenizers/%s/%s", FP8D_SOURCE_DIR, name, file);
}

/* Whether the real tokenizer file exists; prints how to get it when not. */
static inline int tokenizer_cache_present(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size > 0)
        return 1;
    fprintf(stderr,
            "MISSING %s: the real Qwen3/Gemma3 tokenizers are not in the cache.\n"
            "  Fetch them with `make tokenizers` (tools/fetch-tokenizers.sh; `make test` does it).\n",
            path);
    return 0;
}

/* Reads a JSONL file into a JSON array (NULL with a message on failure). */
static inline json_t *read_jsonl(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t k;
    while ((k = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)k, JSON_ALLOW_NUL, &je);
        if (!v) {
            fprintf(stderr, "%s: %s\n", path, je.text);
            json_decref(all);
            all = NULL;
            break;
        }
        json_array_append_new(all, v);
    }
    free(line);
    fclose(f);
    return all;
}

#endif
