/* fp8: the command-line client of the fp8d daemon.
 *
 *   fp8 [--endpoint URL] [--timeout MS] [--no-shm] COMMAND ...
 *   generate [sampling options] [--tokens 1,2,3] [--json] PROMPT
 *   chat     [sampling options] [--system TEXT]     (one user turn per input line)
 *   tokenize [--add-special] TEXT                   (prints a JSON array of ids)
 *   info                                            (prints the model as JSON)
 *   cancel HANDLE                                   (stops a generation of this user)
 * sampling options: --max-tokens N --temperature T --top-p P --top-k K --min-p P --seed S
 *                   --stop STR (repeatable) --ignore-eos --priority N
 *
 * generate streams the text to stdout; with --json it prints one object instead:
 * {"tokens": [int], "text", "finish_reason", "usage", "timings"}. Ctrl-C cancels the
 * generation in flight (the daemon stops it) and exits 130. generate prints the daemon's
 * handle of its generation to stderr ("fp8: handle N"), for `fp8 cancel N` from another
 * shell. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fp8d.h"

#define MAX_STOP 16

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fputs("usage: fp8 [--endpoint URL] [--timeout MS] [--no-shm] COMMAND ...\n"
          "  generate [sampling] [--tokens 1,2,3] [--json] PROMPT\n"
          "  chat     [sampling] [--system TEXT]\n"
          "  tokenize [--add-special] TEXT\n"
          "  info\n"
          "  cancel HANDLE\n"
          "sampling: --max-tokens N --temperature T --top-p P --top-k K --min-p P --seed S\n"
          "          --stop STR (repeatable) --ignore-eos --priority N\n", f);
}

static int fail(fp8d_client *c, const char *what, int rc)
{
    const char *detail = c ? fp8d_last_error(c) : "";
    fprintf(stderr, "fp8: %s: %s%s%s%s\n", what, fp8d_strerror(rc), *detail ? " (" : "",
            detail, *detail ? ")" : "");
    return 1;
}

/* Parses a number option; exits with a message naming the option on bad input. */
static double num(const char *opt, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi) {
        fprintf(stderr, "fp8: %s: \"%s\" is not a number in [%g, %g]\n", opt, v, lo, hi);
        exit(2);
    }
    return d;
}

struct opts {
    struct fp8d_sampling sp;
    const char *stop[MAX_STOP];
    int json;
    int add_special;
    const char *system;
    int32_t *tokens;
    size_t n_tokens;
};

static void parse_tokens(struct opts *o, const char *list)
{
    size_t cap = strlen(list) / 2 + 1;
    o->tokens = malloc(cap * sizeof(*o->tokens));
    if (!o->tokens)
        exit(1);
    for (const char *p = list; *p;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ',') ||
            o->n_tokens == cap) {
            fprintf(stderr, "fp8: --tokens: \"%s\" is not a list of token ids\n", list);
            exit(2);
        }
        o->tokens[o->n_tokens++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
}

/* Takes the options of one command from argv[*i] on; returns 1 when argv[*i] was one. */
static int take_opt(struct opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    int with_value = 1;
    if (!strcmp(a, "--json"))
        o->json = 1, with_value = 0;
    else if (!strcmp(a, "--ignore-eos"))
        o->sp.ignore_eos = 1, with_value = 0;
    else if (!strcmp(a, "--add-special"))
        o->add_special = 1, with_value = 0;
    else if (strncmp(a, "--", 2) != 0)
        return 0;
    else if (!v) {
        fprintf(stderr, "fp8: %s needs a value\n", a);
        exit(2);
    } else if (!strcmp(a, "--max-tokens"))
        o->sp.max_tokens = (int32_t)num(a, v, 1, INT32_MAX);
    else if (!strcmp(a, "--temperature"))
        o->sp.temperature = (float)num(a, v, 0, 100);
    else if (!strcmp(a, "--top-p"))
        o->sp.top_p = (float)num(a, v, 1e-9, 1);
    else if (!strcmp(a, "--top-k"))
        o->sp.top_k = (int32_t)num(a, v, 0, INT32_MAX);
    else if (!strcmp(a, "--min-p"))
        o->sp.min_p = (float)num(a, v, 0, 1);
    else if (!strcmp(a, "--seed")) {
        char *end;
        errno = 0;
        o->sp.seed = strtoull(v, &end, 10);
        if (errno || end == v || *end || *v == '-') {
            fprintf(stderr, "fp8: --seed: \"%s\" is not an unsigned 64-bit number\n", v);
            exit(2);
        }
        o->sp.has_seed = 1;
    } else if (!strcmp(a, "--priority"))
        o->sp.priority = (int32_t)num(a, v, INT32_MIN, INT32_MAX);
    else if (!strcmp(a, "--stop")) {
        if (o->sp.n_stop == MAX_STOP) {
            fprintf(stderr, "fp8: at most %d --stop strings\n", MAX_STOP);
            exit(2);
        }
        o->stop[o->sp.n_stop++] = v;
        o->sp.stop = o->stop;
    } else if (!strcmp(a, "--tokens"))
        parse_tokens(o, v);
    else if (!strcmp(a, "--system"))
        o->system = v;
    else {
        fprintf(stderr, "fp8: unknown option %s\n", a);
        exit(2);
    }
    *i += with_value;
    return 1;
}

static const char *const finish_names[] = {"eos", "stop", "length"};

/* Streams s to stdout (or collects it for --json); returns the exit status. */
static int run_stream(fp8d_client *c, fp8d_stream *s, int json, json_t **text_out)
{
    struct fp8d_token t;
    json_t *ids = json_array();
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc, cancelled = 0;
    /* -EINTR: Ctrl-C woke a sleeping read; the cancel goes out on this turn */
    while ((rc = fp8d_stream_next(s, &t, 100)) == 1 || rc == -ETIMEDOUT || rc == -EINTR) {
        if (interrupted && !cancelled) {
            fp8d_cancel(s);
            cancelled = 1;
        }
        if (rc != 1)
            continue;
        if (t.id >= 0)
            json_array_append_new(ids, json_integer(t.id));
        if (!json) {
            fwrite(t.text, 1, t.text_len, stdout);
            fflush(stdout);
        }
        if (len + t.text_len + 1 > cap) {
            cap = (len + t.text_len + 1) * 2;
            char *grown = realloc(text, cap);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            text = grown;
        }
        memcpy(text + len, t.text, t.text_len);
        len += t.text_len;
    }
    int status = 0;
    if (rc == -ECANCELED && cancelled)
        status = 130;
    else if (rc < 0)
        status = fail(c, "generate", rc);
    else if (json) {
        struct fp8d_result r;
        fp8d_stream_result(s, &r);
        json_t *o = json_pack("{s:O, s:s%, s:s, s:{s:I, s:I}, s:{s:I, s:I, s:I}}",
                              "tokens", ids, "text", text ? text : "", len,
                              "finish_reason", finish_names[r.finish],
                              "usage", "prompt_tokens", (json_int_t)r.prompt_tokens,
                              "completion_tokens", (json_int_t)r.completion_tokens,
                              "timings", "queue_us", (json_int_t)r.queue_us,
                              "prefill_us", (json_int_t)r.prefill_us,
                              "decode_us", (json_int_t)r.decode_us);
        if (!o) {
            fprintf(stderr, "fp8: the generated text is not valid UTF-8; no JSON printed\n");
            status = 1;
        } else {
            json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
            putchar('\n');
            json_decref(o);
        }
    } else
        putchar('\n');
    if (text_out && status == 0)
        *text_out = json_stringn(text ? text : "", len);
    json_decref(ids);
    free(text);
    return status;
}

static int cmd_generate(fp8d_client *c, struct opts *o, const char *prompt)
{
    fp8d_stream *s = NULL;
    if (!prompt == !o->tokens) {
        fprintf(stderr, "fp8: generate needs a PROMPT or --tokens, not both\n");
        return 2;
    }
    int rc = o->tokens ? fp8d_generate_tokens(c, o->tokens, o->n_tokens, &o->sp, &s)
                       : fp8d_generate(c, prompt, &o->sp, &s);
    if (rc < 0)
        return fail(c, "generate", rc);
    if (fp8d_stream_handle(s)) {
        fprintf(stderr, "fp8: handle %llu\n", (unsigned long long)fp8d_stream_handle(s));
        fflush(stderr);
    }
    int status = run_stream(c, s, o->json, NULL);
    fp8d_stream_free(s);
    return status;
}

/* One user turn per input line; the conversation is kept and resent each turn. */
static int cmd_chat(fp8d_client *c, struct opts *o)
{
    json_t *turns = json_array(); /* [[role, content], ...] keeps the strings alive */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;
    if (o->system)
        json_array_append_new(turns, json_pack("[s,s]", "system", o->system));
    while (status == 0 && !interrupted && (n = getline(&line, &cap, stdin)) >= 0) {
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n == 0)
            continue;
        json_array_append_new(turns, json_pack("[s,s%]", "user", line, (size_t)n));
        size_t k = json_array_size(turns);
        struct fp8d_message *msgs = calloc(k, sizeof(*msgs));
        if (!msgs)
            return fail(c, "chat", -ENOMEM);
        for (size_t i = 0; i < k; i++) {
            msgs[i].role = json_string_value(json_array_get(json_array_get(turns, i), 0));
            msgs[i].content = json_string_value(json_array_get(json_array_get(turns, i), 1));
        }
        fp8d_stream *s = NULL;
        int rc = fp8d_chat(c, msgs, k, &o->sp, &s);
        free(msgs);
        if (rc < 0) {
            status = fail(c, "chat", rc);
            break;
        }
        json_t *reply = NULL;
        status = run_stream(c, s, 0, &reply);
        fp8d_stream_free(s);
        if (reply)
            json_array_append_new(turns, json_pack("[s,o]", "assistant", reply));
    }
    free(line);
    json_decref(turns);
    return status;
}

static int cmd_tokenize(fp8d_client *c, struct opts *o, const char *text)
{
    int32_t *ids;
    size_t n;
    if (!text) {
        fprintf(stderr, "fp8: tokenize needs TEXT\n");
        return 2;
    }
    int rc = fp8d_tokenize(c, text, strlen(text), o->add_special, &ids, &n);
    if (rc < 0)
        return fail(c, "tokenize", rc);
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    puts("]");
    free(ids);
    return 0;
}

static int cmd_cancel(fp8d_client *c, const char *arg)
{
    char *end;
    errno = 0;
    unsigned long long h = arg && *arg >= '0' && *arg <= '9' ? strtoull(arg, &end, 10) : 0;
    if (!h || errno || *end) {
        fprintf(stderr, "fp8: cancel needs a HANDLE, the number fp8 generate printed "
                        "(\"fp8: handle N\")\n");
        return 2;
    }
    int rc = fp8d_cancel_handle(c, h);
    return rc < 0 ? fail(c, "cancel", rc) : 0;
}

static int cmd_info(fp8d_client *c)
{
    struct fp8d_info i;
    int rc = fp8d_info(c, &i);
    if (rc < 0)
        return fail(c, "info", rc);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "name", i.name,
                          "arch", i.arch, "backend", i.backend, "weights", i.weights,
                          "kv_cache_dtype", i.kv_cache_dtype, "vocab_size",
                          (json_int_t)i.vocab_size, "max_model_len", (json_int_t)i.max_model_len,
                          "max_num_seqs", (json_int_t)i.max_num_seqs, "server",
                          i.server_version);
    json_dumpf(o, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    putchar('\n');
    json_decref(o);
    return 0;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL;
    int timeout_ms = 10000, i = 1;
    unsigned flags = 0;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--no-shm"))
            flags |= FP8D_CONNECT_NO_SHM;
        else if (!strcmp(argv[i], "--endpoint") && i + 1 < argc)
            endpoint = argv[++i];
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout_ms = (int)num("--timeout", argv[++i], -1, INT32_MAX);
        else {
            usage(stderr);
            return 2;
        }
    }
    if (i == argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[i++];
    struct opts o = {0};
    const char *arg = NULL;
    fp8d_sampling_init(&o.sp);
    for (; i < argc; i++) {
        if (take_opt(&o, argc, argv, &i))
            continue;
        if (arg) {
            fprintf(stderr, "fp8: one argument expected, got \"%s\" and \"%s\" (quote it)\n",
                    arg, argv[i]);
            return 2;
        }
        arg = argv[i];
    }
    if (strcmp(cmd, "generate") && strcmp(cmd, "chat") && strcmp(cmd, "tokenize") &&
        strcmp(cmd, "info") && strcmp(cmd, "cancel")) {
        fprintf(stderr, "fp8: unknown command \"%s\"\n", cmd);
        usage(stderr);
        return 2;
    }

    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    fp8d_client *c;
    int rc = fp8d_connect(endpoint, flags, timeout_ms, &c);
    if (rc < 0)
        return fail(NULL, endpoint ? endpoint : "connect", rc);
    int status;
    if (!strcmp(cmd, "generate"))
        status = cmd_generate(c, &o, arg);
    else if (!strcmp(cmd, "chat"))
        status = cmd_chat(c, &o);
    else if (!strcmp(cmd, "tokenize"))
        status = cmd_tokenize(c, &o, arg);
    else if (!strcmp(cmd, "cancel"))
        status = cmd_cancel(c, arg);
    else
        status = cmd_info(c);
    fp8d_close(c);
    free(o.tokens);
    return status;
}
