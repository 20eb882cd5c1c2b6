/* Offline batch mode (`fp8d run --requests FILE.jsonl`): JSONL requests in, one JSONL
 * result per request out (in input order), driven through the scheduler step by step so
 * that arrivals and cancellations happen at exact scheduler steps. Also the harness the
 * scheduler tests use.
 *
 * Request line: {"id": str, "prompt": str | "tokens": [int], "max_tokens": int,
 *   "temperature": num, "top_p": num, "top_k": int (0: off), "min_p": num, "seed": int,
 *   "repetition_penalty": num, "presence_penalty": num, "stop": [str],
 *   "stop_token_ids": [int], "ignore_eos": bool, "priority": int (0),
 *   "arrival": int (0), "cancel_at": int (none)}; what a line omits comes from the
 *   caller's defaults (`fp8d run`: its command-line sampling options).
 * Unknown keys and wrong types are errors (a typo must not silently change a run).
 * Result line: {"id", "tokens": [int], "text": str | null (no detokenizer),
 *   "finish_reason": "stop"|"length"|"cancelled"|"error", ["error": str,]
 *   "usage": {"prompt_tokens", "completion_tokens", "cached_tokens"},
 *   "timings": {"queue_steps", "prefill_steps", "decode_steps",
 *               "queue_ns", "prefill_ns", "decode_ns", "preemptions"}}. */
#ifndef FP8_ENGINE_OFFLINE_H
#define FP8_ENGINE_OFFLINE_H

#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "engine/scheduler.h"

/* Text side, from the tokenizer; either call may be NULL (then "prompt" and "stop"
 * requests fail with a message, and "text" is null). Both return 0 or a negative errno;
 * the arrays/strings they return are malloc'd and freed by the caller. */
struct fp8_offline_text {
    void *ctx;
    int (*tokenize)(void *ctx, const char *text, int32_t **ids, int32_t *n_ids,
                    struct fp8_err *err);
    int (*detokenize)(void *ctx, const int32_t *ids, int32_t n_ids, char **text,
                      struct fp8_err *err);
};

struct fp8_offline_req {
    char *id;
    char *prompt;       /* text, or NULL when the line gave token ids */
    int32_t *tokens;    /* (n_tokens) prompt ids (tokenized from prompt when text) */
    int32_t n_tokens;
    struct fp8_req_params params;
    char **stop;        /* (n_stop) stop strings */
    int32_t n_stop;
    int64_t arrival;    /* scheduler step */
    int64_t cancel_at;  /* scheduler step, -1: never */

    /* Outcome: result (owned) once finished, or error set when it never ran. */
    struct fp8_request *result;
    char *text;         /* detokenized completion (cut before a stop string), or NULL */
    char error[sizeof(struct fp8_err)];
};

/* What a line does not say: temperature 1, top_p 1, min_p 0, top_k 0, penalties off,
 * seed 0, max_tokens 16, priority 0, ignore_eos false, no stop ids. */
struct fp8_req_params fp8_offline_defaults(void);

/* Parses one line over defaults (NULL: fp8_offline_defaults()). On failure returns -EINVAL
 * with the reason in err, and out keeps whatever id could be read (for the error line);
 * fp8_offline_req_free is still due. */
int fp8_offline_parse(const char *line, size_t len, const struct fp8_req_params *defaults,
                      struct fp8_offline_req *out, struct fp8_err *err);
void fp8_offline_req_free(struct fp8_offline_req *r);

/* Called after every step (tests check invariants there); may be NULL. */
struct fp8_offline_step_hook {
    void *ctx;
    void (*after_step)(void *ctx, struct fp8_sched *s);
};

/* Runs reqs to completion through s (which must be idle and have no token hook: the driver
 * installs its own for stop strings). Requests with error[0] set are skipped; submit
 * failures land in error. Returns 0 (per-request failures are in the requests). */
int fp8_offline_run(struct fp8_sched *s, struct fp8_offline_req *reqs, int32_t n,
                    const struct fp8_offline_text *text, const struct fp8_offline_step_hook *hook,
                    struct fp8_err *err);

/* The result line (no newline), malloc'd; NULL on out of memory. */
char *fp8_offline_result_json(const struct fp8_offline_req *r);

/* Whole file: parse every line of in over defaults (blank lines skipped; a bad line becomes
 * an error result, the others still run), run, write one result line per request to out. */
int fp8_offline_run_file(struct fp8_sched *s, FILE *in, FILE *out,
                         const struct fp8_req_params *defaults,
                         const struct fp8_offline_text *text, struct fp8_err *err);

#endif
