/* fp8d tokenize: the tokenizer and chat templates from the command line, line by line on
 * stdin -> stdout. Needs only tokenizer.json (+ config.json or --arch for --chat). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/commands.h"
#include "engine/chat_template.h"
#include "engine/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fp8d tokenize --model DIR [--jsonl] [--decode [--skip-special]] [--add-special]\n"
            "                     [--chat [--arch qwen3|gemma3]] [--bench CORPUS.jsonl]\n"
            "  (default)   each stdin line is text; prints its ids separated by spaces\n"
            "  --jsonl     each line a JSON string -> a JSON array of ids (HF encode(text,\n"
            "              add_special_tokens=False)); with --decode: JSON array -> JSON string\n"
            "  --decode    ids -> text (plain: ids separated by spaces or commas)\n"
            "  --skip-special  drop special tokens when decoding\n"
            "  --add-special   apply the post-processor (e.g. Gemma's <bos>)\n"
            "  --chat      each line {\"messages\":[...],\"add_generation_prompt\":bool,\n"
            "              \"enable_thinking\":bool|null} -> the rendered prompt as a JSON string\n"
            "  --arch      chat template when DIR has no config.json\n"
            "  --bench F   encode every JSON string line of F once, print the throughput\n");
}

/* config.json "architectures"[0], or NULL. */
static char *read_arch(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    const char *a = json_string_value(json_array_get(json_object_get(root, "architectures"), 0));
    char *r = a ? strdup(a) : NULL;
    json_decref(root);
    return r;
}

static void print_ids_json(const int32_t *ids, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ",%d" : "%d", ids[i]);
    puts("]");
}

static int print_json_string(const char *s, size_t n)
{
    json_t *j = json_stringn_nocheck(s, n);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (!d)
        return -ENOMEM;
    puts(d);
    free(d);
    return 0;
}

static int parse_ids(const char *line, bool jsonl, int32_t **ids, size_t *n, struct fp8_err *err)
{
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof(*v));
    if (!v)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    if (jsonl) {
        json_t *a = json_loads(line, JSON_DECODE_ANY, NULL);
        size_t i;
        json_t *it;
        if (!json_is_array(a)) {
            json_decref(a);
            free(v);
            return fp8_err_set(err, -EINVAL, "expected a JSON array of ids");
        }
        json_array_foreach(a, i, it) {
            if (!json_is_integer(it) || json_integer_value(it) < INT32_MIN || json_integer_value(it) > INT32_MAX) {
                json_decref(a);
                free(v);
                return fp8_err_set(err, -EINVAL, "element %zu is not an id", i);
            }
            if (k == cap) {
                int32_t *p = realloc(v, (cap *= 2) * sizeof(*v));
                if (!p) {
                    json_decref(a);
                    free(v);
                    return fp8_err_set(err, -ENOMEM, "out of memory");
                }
                v = p;
            }
            v[k++] = (int32_t)json_integer_value(it);
        }
        json_decref(a);
    } else {
        const char *p = line;
        for (;;) {
            while (*p == ' ' || *p == ',' || *p == '\t')
                p++;
            if (!*p)
                break;
            char *end;
            errno = 0;
            long x = strtol(p, &end, 10);
            if (end == p || errno || x < INT32_MIN || x > INT32_MAX) {
                free(v);
                return fp8_err_set(err, -EINVAL, "bad id near '%.20s'", p);
            }
            if (k == cap) {
                int32_t *q = realloc(v, (cap *= 2) * sizeof(*v));
                if (!q) {
                    free(v);
                    return fp8_err_set(err, -ENOMEM, "out of memory");
                }
                v = q;
            }
            v[k++] = (int32_t)x;
            p = end;
        }
    }
    *ids = v;
    *n = k;
    return 0;
}

static int chat_line(const struct fp8_chat_template *t, const char *line, struct fp8_err *err)
{
    json_error_t je;
    json_t *req = json_loads(line, JSON_ALLOW_NUL, &je);
    if (!json_is_object(req)) {
        json_decref(req);
        return fp8_err_set(err, -EINVAL, "expected a JSON object: %s", je.text);
    }
    struct fp8_chat_message *msgs = NULL;
    size_t n = 0;
    int rc = fp8_chat_messages_from_json(json_object_get(req, "messages"), &msgs, &n, err);
    if (rc == 0) {
        json_t *th = json_object_get(req, "enable_thinking");
        int think = json_is_boolean(th) ? json_is_true(th) : -1;
        bool gen = json_is_true(json_object_get(req, "add_generation_prompt"));
        char *out;
        size_t len;
        rc = fp8_chat_render(t, msgs, n, gen, think, &out, &len, err);
        if (rc == 0) {
            rc = print_json_string(out, len);
            free(out);
        }
        fp8_chat_messages_free(msgs, n);
    }
    json_decref(req);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench(const struct fp8_tokenizer *tok, const char *path, double load_s)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "fp8d tokenize: %s: %s\n", path, strerror(errno));
        return 1;
    }
    json_t *docs = json_array();
    char *line = NULL;
    size_t cap = 0, bytes = 0;
    ssize_t k;
    while ((k = getline(&line, &cap, f)) > 0) {
        json_t *s = json_loadb(line, (size_t)k, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!json_is_string(s)) {
            fprintf(stderr, "fp8d tokenize: %s: each line must be a JSON string\n", path);
            json_decref(s);
            free(line);
            fclose(f);
            json_decref(docs);
            return 1;
        }
        bytes += json_string_length(s);
        json_array_append_new(docs, s);
    }
    free(line);
    fclose(f);
    double best = 0;
    size_t ntok = 0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = now_s();
        ntok = 0;
        size_t i;
        json_t *s;
        json_array_foreach(docs, i, s) {
            int32_t *ids;
            size_t n;
            struct fp8_err err;
            if (fp8_tokenizer_encode(tok, json_string_value(s), json_string_length(s), false, &ids, &n, &err) < 0) {
                fprintf(stderr, "fp8d tokenize: document %zu: %s\n", i, err.msg);
                json_decref(docs);
                return 1;
            }
            ntok += n;
            free(ids);
        }
        double dt = now_s() - t0;
        if (pass == 0 || dt < best)
            best = dt;
    }
    printf("fp8d: load %.3f s, %zu docs, %.2f MB, %zu tokens, encode %.3f s, %.2f MB/s, %.0f tok/s\n",
           load_s, json_array_size(docs), bytes / 1e6, ntok, best, bytes / 1e6 / best, ntok / best);
    json_decref(docs);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"jsonl", no_argument, NULL, 'j'},
        {"decode", no_argument, NULL, 'd'},      {"add-special", no_argument, NULL, 'a'},
        {"chat", no_argument, NULL, 'c'},        {"arch", required_argument, NULL, 'A'},
        {"skip-special", no_argument, NULL, 's'}, {"bench", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *arch = NULL, *bench_path = NULL;
    bool jsonl = false, decode = false, add_special = false, chat = false, skip = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'j': jsonl = true; break;
        case 'd': decode = true; break;
        case 'a': add_special = true; break;
        case 'c': chat = true; break;
        case 'A': arch = optarg; break;
        case 's': skip = true; break;
        case 'b': bench_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct fp8_err err = {{0}};
    struct fp8_chat_template tpl;
    if (chat) {
        char *a = arch ? strdup(arch) : read_arch(dir);
        if (!a) {
            fprintf(stderr, "fp8d tokenize: --chat needs %s/config.json with \"architectures\" or --arch\n", dir);
            return 1;
        }
        int rc = fp8_chat_template_init(&tpl, a, &err);
        free(a);
        if (rc < 0) {
            fprintf(stderr, "fp8d tokenize: %s\n", err.msg);
            return 1;
        }
    }
    struct fp8_tokenizer *tok = NULL;
    if (!chat) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
        double t0 = now_s();
        if (fp8_tokenizer_load(&tok, path, &err) < 0) {
            fprintf(stderr, "fp8d tokenize: %s\n", err.msg);
            return 1;
        }
        if (bench_path) {
            int r = bench(tok, bench_path, now_s() - t0);
            fp8_tokenizer_free(tok);
            return r;
        }
    }
    int status = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t k;
    unsigned long lineno = 0;
    while ((k = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        if (line[k - 1] == '\n')
            line[--k] = 0;
        int rc;
        if (chat) {
            rc = chat_line(&tpl, line, &err);
        } else if (decode) {
            int32_t *ids = NULL;
            size_t n = 0;
            rc = parse_ids(line, jsonl, &ids, &n, &err);
            if (rc == 0) {
                char *text;
                size_t len;
                rc = fp8_tokenizer_decode(tok, ids, n, skip, &text, &len, &err);
                free(ids);
                if (rc == 0) {
                    if (jsonl) {
                        rc = print_json_string(text, len);
                    } else {
                        fwrite(text, 1, len, stdout);
                        putchar('\n');
                    }
                    free(text);
                }
            }
        } else {
            const char *text = line;
            size_t len = (size_t)k;
            json_t *j = NULL;
            rc = 0;
            if (jsonl) {
                j = json_loadb(line, (size_t)k, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
                if (!json_is_string(j))
                    rc = fp8_err_set(&err, -EINVAL, "expected a JSON string");
                text = json_string_value(j);
                len = json_string_length(j);
            }
            int32_t *ids = NULL;
            size_t n = 0;
            if (rc == 0 && (rc = fp8_tokenizer_encode(tok, text, len, add_special, &ids, &n, &err)) == 0) {
                if (jsonl) {
                    print_ids_json(ids, n);
                } else {
                    for (size_t i = 0; i < n; i++)
                        printf(i ? " %d" : "%d", ids[i]);
                    putchar('\n');
                }
                free(ids);
            }
            json_decref(j);
        }
        if (rc < 0) {
            fprintf(stderr, "fp8d tokenize: line %lu: %s\n", lineno, err.msg);
            puts("null"); /* keeps output lines aligned with input lines */
            status = 1;
        }
    }
    free(line);
    fp8_tokenizer_free(tok);
    return status;
}
