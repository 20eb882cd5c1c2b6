#include "offline.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampling.h"

#define OFFLINE_MAX_STOP 16

static int get_int(json_t *v, const char *key, long long lo, long long hi, long long *out,
                   struct fp8_err *err)
{
    if (!json_is_integer(v))
        return fp8_err_set(err, -EINVAL, "\"%s\" must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return fp8_err_set(err, -EINVAL, "\"%s\" %lld outside [%lld, %lld]", key, x, lo, hi);
    *out = x;
    return 0;
}

static int get_num(json_t *v, const char *key, double lo, double hi, float *out,
                   struct fp8_err *err)
{
    if (!json_is_number(v))
        return fp8_err_set(err, -EINVAL, "\"%s\" must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return fp8_err_set(err, -EINVAL, "\"%s\" %g outside [%g, %g]", key, x, lo, hi);
    *out = (float)x;
    return 0;
}

static int get_ids(json_t *v, const char *key, int32_t **out, int32_t *n_out, size_t max,
                   struct fp8_err *err)
{
    if (!json_is_array(v))
        return fp8_err_set(err, -EINVAL, "\"%s\" must be an array of token ids", key);
    size_t n = json_array_size(v);
    if (n > max)
        return fp8_err_set(err, -EINVAL, "\"%s\" has %zu entries (at most %zu)", key, n, max);
    int32_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    if (!ids)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
            json_integer_value(e) > INT32_MAX) {
            free(ids);
            return fp8_err_set(err, -EINVAL, "\"%s\"[%zu] is not a token id", key, i);
        }
        ids[i] = (int32_t)json_integer_value(e);
    }
    *out = ids;
    *n_out = (int32_t)n;
    return 0;
}

static int parse_obj(json_t *o, struct fp8_offline_req *r, struct fp8_err *err)
{
    const char *key;
    json_t *v;
    long long x;
    int rc;
    bool have_prompt = false;
    json_object_foreach(o, key, v) {
        if (!strcmp(key, "id")) {
            continue; /* read first by the caller */
        } else if (!strcmp(key, "prompt")) {
            if (!json_is_string(v))
                return fp8_err_set(err, -EINVAL, "\"prompt\" must be a string");
            if (have_prompt)
                return fp8_err_set(err, -EINVAL, "give \"prompt\" or \"tokens\", not both");
            if (!(r->prompt = strdup(json_string_value(v))))
                return fp8_err_set(err, -ENOMEM, "out of memory");
            have_prompt = true;
        } else if (!strcmp(key, "tokens")) {
            if (have_prompt)
                return fp8_err_set(err, -EINVAL, "give \"prompt\" or \"tokens\", not both");
            if ((rc = get_ids(v, key, &r->tokens, &r->n_tokens, INT32_MAX, err)) < 0)
                return rc;
            have_prompt = true;
        } else if (!strcmp(key, "max_tokens")) {
            if ((rc = get_int(v, key, 1, INT32_MAX, &x, err)) < 0)
                return rc;
            r->params.max_tokens = (int32_t)x;
        } else if (!strcmp(key, "temperature")) {
            if ((rc = get_num(v, key, 0, 1e6, &r->params.sampling.temperature, err)) < 0)
                return rc;
        } else if (!strcmp(key, "top_p")) {
            if ((rc = get_num(v, key, 0, 1, &r->params.sampling.top_p, err)) < 0)
                return rc;
        } else if (!strcmp(key, "min_p")) {
            if ((rc = get_num(v, key, 0, 1, &r->params.sampling.min_p, err)) < 0)
                return rc;
        } else if (!strcmp(key, "repetition_penalty")) {
            if ((rc = get_num(v, key, 0x1p-10, 1e3, &r->params.sampling.repetition_penalty,
                              err)) < 0)
                return rc;
        } else if (!strcmp(key, "presence_penalty")) {
            if ((rc = get_num(v, key, -1e3, 1e3, &r->params.sampling.presence_penalty, err)) < 0)
                return rc;
        } else if (!strcmp(key, "top_k")) {
            if ((rc = get_int(v, key, 0, INT32_MAX, &x, err)) < 0)
                return rc;
            r->params.sampling.top_k = (int32_t)x;
        } else if (!strcmp(key, "seed")) {
            if ((rc = get_int(v, key, 0, LLONG_MAX, &x, err)) < 0)
                return rc;
            r->params.sampling.seed = (uint64_t)x;
        } else if (!strcmp(key, "priority")) {
            if ((rc = get_int(v, key, INT32_MIN, INT32_MAX, &x, err)) < 0)
                return rc;
            r->params.priority = (int32_t)x;
        } else if (!strcmp(key, "arrival")) {
            if ((rc = get_int(v, key, 0, INT64_MAX, &x, err)) < 0)
                return rc;
            r->arrival = x;
        } else if (!strcmp(key, "cancel_at")) {
            if ((rc = get_int(v, key, 0, INT64_MAX, &x, err)) < 0)
                return rc;
            r->cancel_at = x;
        } else if (!strcmp(key, "ignore_eos")) {
            if (!json_is_boolean(v))
                return fp8_err_set(err, -EINVAL, "\"ignore_eos\" must be true or false");
            r->params.ignore_eos = json_is_true(v);
        } else if (!strcmp(key, "stop_token_ids")) {
            int32_t *ids, n;
            if ((rc = get_ids(v, key, &ids, &n, FP8_SCHED_MAX_STOP_IDS, err)) < 0)
                return rc;
            memcpy(r->params.stop_ids, ids, (size_t)n * sizeof(*ids));
            r->params.n_stop_ids = n;
            free(ids);
        } else if (!strcmp(key, "stop")) {
            if (!json_is_array(v) || json_array_size(v) > OFFLINE_MAX_STOP)
                return fp8_err_set(err, -EINVAL, "\"stop\" must be an array of at most %d "
                                   "strings", OFFLINE_MAX_STOP);
            size_t n = json_array_size(v);
            if (!(r->stop = calloc(n ? n : 1, sizeof(*r->stop))))
                return fp8_err_set(err, -ENOMEM, "out of memory");
            for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(v, i);
                if (!json_is_string(e) || !json_string_length(e))
                    return fp8_err_set(err, -EINVAL, "\"stop\"[%zu] must be a non-empty "
                                       "string", i);
                if (!(r->stop[i] = strdup(json_string_value(e))))
                    return fp8_err_set(err, -ENOMEM, "out of memory");
                r->n_stop = (int32_t)i + 1;
            }
        } else {
            return fp8_err_set(err, -EINVAL, "unknown key \"%s\"", key);
        }
    }
    if (!have_prompt)
        return fp8_err_set(err, -EINVAL, "needs \"prompt\" or \"tokens\"");
    return 0;
}

struct fp8_req_params fp8_offline_defaults(void)
{
    return (struct fp8_req_params){
        .sampling = {.temperature = 1, .top_p = 1, .repetition_penalty = 1},
        .max_tokens = 16,
    };
}

int fp8_offline_parse(const char *line, size_t len, const struct fp8_req_params *defaults,
                      struct fp8_offline_req *out, struct fp8_err *err)
{
    *out = (struct fp8_offline_req){
        .params = defaults ? *defaults : fp8_offline_defaults(),
        .cancel_at = -1,
    };
    json_error_t jerr;
    json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return fp8_err_set(err, -EINVAL, "bad JSON at column %d: %s", jerr.column, jerr.text);
    int rc;
    if (!json_is_object(o)) {
        rc = fp8_err_set(err, -EINVAL, "a request must be a JSON object");
        goto out;
    }
    json_t *id = json_object_get(o, "id");
    if (!json_is_string(id)) {
        rc = fp8_err_set(err, -EINVAL, "\"id\" must be a string");
        goto out;
    }
    if (!(out->id = strdup(json_string_value(id)))) {
        rc = fp8_err_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    rc = parse_obj(o, out, err);
out:
    json_decref(o);
    return rc;
}

void fp8_offline_req_free(struct fp8_offline_req *r)
{
    if (!r)
        return;
    free(r->id);
    free(r->prompt);
    free(r->tokens);
    for (int32_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->text);
    fp8_request_free(r->result);
    memset(r, 0, sizeof(*r));
}

/* ---- driver ------------------------------------------------------------------------------ */

struct driver {
    const struct fp8_offline_text *text;
};

/* Byte offset of the earliest stop string in text, or -1. */
static int64_t find_stop(const struct fp8_offline_req *r, const char *text)
{
    size_t len = strlen(text);
    return fp8_stop_find(text, len, len, (const char *const *)r->stop, r->n_stop);
}

/* Detokenizes the whole completion each time: simple, and a stop string that spans
 * tokens is seen as soon as its last byte arrives. */
static bool stop_hook(void *ctx, struct fp8_request *req, int32_t token)
{
    (void)token;
    struct driver *d = ctx;
    struct fp8_offline_req *r = req->params.user;
    if (!r || r->n_stop == 0)
        return false;
    char *s = NULL;
    if (d->text->detokenize(d->text->ctx, req->tokens + req->n_prompt,
                            req->n_tokens - req->n_prompt, &s, NULL) < 0)
        return false;
    bool hit = find_stop(r, s) >= 0;
    free(s);
    return hit;
}

static int cmp_i64_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

/* fail: the step's error message (a struct fp8_err's msg) or NULL. */
static void collect(struct fp8_sched *s, const struct fp8_offline_text *text, const char *fail)
{
    struct fp8_request *q;
    while (fp8_sched_reap(s, &q)) {
        struct fp8_offline_req *r = q->params.user;
        r->result = q;
        if (q->finish == FP8_REQ_FINISH_ERROR && fail)
            memcpy(r->error, fail, sizeof(r->error));
        if (text && text->detokenize &&
            text->detokenize(text->ctx, q->tokens + q->n_prompt, q->n_tokens - q->n_prompt,
                             &r->text, NULL) == 0) {
            int64_t cut = find_stop(r, r->text);
            if (cut >= 0)
                r->text[cut] = '\0';
        }
    }
}

int fp8_offline_run(struct fp8_sched *s, struct fp8_offline_req *reqs, int32_t n,
                    const struct fp8_offline_text *text, const struct fp8_offline_step_hook *hook,
                    struct fp8_err *err)
{
    if (!s || (n && !reqs) || !fp8_sched_idle(s))
        return fp8_err_set(err, -EINVAL, "offline: NULL argument or scheduler busy");
    static const struct fp8_offline_text no_text = {0};
    if (!text)
        text = &no_text;
    struct driver d = {.text = text};
    fp8_sched_set_hook(s, &(struct fp8_token_hook){.ctx = &d, .on_token = stop_hook});

    /* (step, index) pairs sorted by step: arrivals, and cancellations no earlier than the
     * request's own arrival. */
    int64_t (*arr)[2] = malloc((size_t)(n ? n : 1) * sizeof(*arr));
    int64_t (*can)[2] = malloc((size_t)(n ? n : 1) * sizeof(*can));
    if (!arr || !can) {
        free(arr);
        free(can);
        return fp8_err_set(err, -ENOMEM, "offline: out of memory");
    }
    int32_t n_arr = 0, n_can = 0;
    for (int32_t i = 0; i < n; i++) {
        struct fp8_offline_req *r = &reqs[i];
        if (r->error[0])
            continue;
        struct fp8_err e = {{0}};
        if (r->prompt && !r->tokens) {
            if (!text->tokenize) {
                snprintf(r->error, sizeof(r->error), "bad_request: \"prompt\" needs a "
                         "tokenizer; give \"tokens\"");
                continue;
            }
            if (text->tokenize(text->ctx, r->prompt, &r->tokens, &r->n_tokens, &e) < 0) {
                fp8_err_prefix(&e, 0, "bad_request: tokenize");
                memcpy(r->error, e.msg, sizeof(r->error));
                continue;
            }
        }
        if (r->n_stop && !text->detokenize) {
            snprintf(r->error, sizeof(r->error), "bad_request: \"stop\" strings need a "
                     "tokenizer; give \"stop_token_ids\"");
            continue;
        }
        r->params.user = r;
        arr[n_arr][0] = r->arrival;
        arr[n_arr++][1] = i;
        if (r->cancel_at >= 0) {
            can[n_can][0] = r->cancel_at > r->arrival ? r->cancel_at : r->arrival;
            can[n_can++][1] = i;
        }
    }
    qsort(arr, (size_t)n_arr, sizeof(*arr), cmp_i64_pair);
    qsort(can, (size_t)n_can, sizeof(*can), cmp_i64_pair);

    int32_t ai = 0, ci = 0;
    for (;;) {
        int64_t step = s->stats.n_steps;
        for (; ai < n_arr && arr[ai][0] <= step; ai++) {
            struct fp8_offline_req *r = &reqs[arr[ai][1]];
            struct fp8_err e = {{0}};
            if (fp8_sched_submit(s, (uint64_t)arr[ai][1], r->tokens, r->n_tokens, &r->params,
                                 NULL, &e) < 0)
                memcpy(r->error, e.msg, sizeof(r->error));
        }
        for (; ci < n_can && can[ci][0] <= step; ci++)
            fp8_sched_cancel(s, (uint64_t)can[ci][1]); /* -ENOENT: already finished */
        collect(s, text, NULL);
        if (fp8_sched_idle(s)) {
            if (ai == n_arr)
                break;
            fp8_sched_idle_until(s, arr[ai][0]);
            continue;
        }
        struct fp8_err e = {{0}};
        int rc = fp8_sched_step(s, &e);
        if (hook && hook->after_step)
            hook->after_step(hook->ctx, s);
        collect(s, text, rc < 0 ? e.msg : NULL);
    }
    fp8_sched_set_hook(s, NULL);
    free(arr);
    free(can);
    return 0;
}

char *fp8_offline_result_json(const struct fp8_offline_req *r)
{
    json_t *o = json_object();
    json_t *toks = json_array();
    if (!o || !toks)
        goto fail;
    const struct fp8_request *q = r->result;
    json_object_set_new(o, "id", r->id ? json_string(r->id) : json_null());
    if (q)
        for (int32_t i = q->n_prompt; i < q->n_tokens; i++)
            json_array_append_new(toks, json_integer(q->tokens[i]));
    json_object_set_new(o, "tokens", toks);
    toks = NULL;
    json_t *text = r->text ? json_string(r->text) : NULL;
    json_object_set_new(o, "text", text ? text : json_null());
    if (r->text && !text)
        json_object_set_new(o, "text_error", json_string("completion is not valid UTF-8"));
    const char *fin = q && !r->error[0] ? fp8_req_finish_name(q->finish) : "error";
    json_object_set_new(o, "finish_reason", json_string(fin));
    if (r->error[0] || (q && q->finish == FP8_REQ_FINISH_ERROR))
        json_object_set_new(o, "error", json_string(r->error[0] ? r->error : "model failure"));
    struct fp8_req_usage u = q ? q->usage : (struct fp8_req_usage){0};
    json_object_set_new(o, "usage",
                        json_pack("{s:i, s:i, s:i}", "prompt_tokens", (int)u.prompt_tokens,
                                  "completion_tokens", (int)u.completion_tokens,
                                  "cached_tokens", (int)u.cached_tokens));
    struct fp8_req_phases ph = {0};
    if (q)
        fp8_req_phases_get(&q->timings, &ph);
    json_object_set_new(o, "timings",
                        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:i}",
                                  "queue_steps", (json_int_t)ph.queue_steps,
                                  "prefill_steps", (json_int_t)ph.prefill_steps,
                                  "decode_steps", (json_int_t)ph.decode_steps,
                                  "queue_ns", (json_int_t)ph.queue_ns,
                                  "prefill_ns", (json_int_t)ph.prefill_ns,
                                  "decode_ns", (json_int_t)ph.decode_ns,
                                  "preemptions", (int)u.n_preemptions));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return line;
fail:
    json_decref(o);
    json_decref(toks);
    return NULL;
}

int fp8_offline_run_file(struct fp8_sched *s, FILE *in, FILE *out,
                         const struct fp8_req_params *defaults,
                         const struct fp8_offline_text *text, struct fp8_err *err)
{
    struct fp8_offline_req *reqs = NULL;
    int32_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int64_t lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &lcap, in)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len)
            continue;
        if (n == cap) {
            int32_t c = cap ? cap * 2 : 64;
            struct fp8_offline_req *p = realloc(reqs, (size_t)c * sizeof(*p));
            if (!p) {
                rc = fp8_err_set(err, -ENOMEM, "offline: out of memory at line %lld",
                                 (long long)lineno);
                goto out;
            }
            reqs = p;
            cap = c;
        }
        struct fp8_err e = {{0}};
        if (fp8_offline_parse(line, (size_t)len, defaults, &reqs[n], &e) < 0) {
            fp8_err_prefix(&e, 0, "bad_request: line %lld", (long long)lineno);
            memcpy(reqs[n].error, e.msg, sizeof(reqs[n].error));
        }
        n++;
    }
    if (ferror(in)) {
        rc = fp8_err_set(err, -EIO, "offline: read error at line %lld", (long long)lineno + 1);
        goto out;
    }
    if ((rc = fp8_offline_run(s, reqs, n, text, NULL, err)) < 0)
        goto out;
    for (int32_t i = 0; i < n; i++) {
        char *l = fp8_offline_result_json(&reqs[i]);
        if (!l) {
            rc = fp8_err_set(err, -ENOMEM, "offline: out of memory writing results");
            goto out;
        }
        fprintf(out, "%s\n", l);
        free(l);
    }
    if (fflush(out) != 0 || ferror(out))
        rc = fp8_err_set(err, -EIO, "offline: write error");
out:
    for (int32_t i = 0; i < n; i++)
        fp8_offline_req_free(&reqs[i]);
    free(reqs);
    free(line);
    return rc;
}
