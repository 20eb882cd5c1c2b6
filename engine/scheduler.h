/* Continuous-batching scheduler: requests wait, are admitted, prefill in chunks next to
 * the running decodes, decode one token per step, and retire; the paged KV pool
 * (engine/kv_blocks.h) is shared among them, with prefix caching and preemption by
 * recompute when it runs out. Model-agnostic: the model is a forward callback over
 * struct fp8_batch, sampling a second callback. The step contract is in
 * docs/scheduler.md. Not thread-safe: one engine thread owns a scheduler. */
#ifndef FP8_ENGINE_SCHEDULER_H
#define FP8_ENGINE_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/batch.h"
#include "engine/kv_blocks.h"

#define FP8_SCHED_MAX_STOP_IDS 16
#define FP8_SCHED_MAX_EOS 8

enum fp8_req_finish {
    FP8_REQ_FINISH_NONE,       /* still running */
    FP8_REQ_FINISH_STOP,       /* EOS, a stop id, or the stop hook */
    FP8_REQ_FINISH_LENGTH,     /* max_tokens or max_model_len reached */
    FP8_REQ_FINISH_CANCELLED,  /* fp8_sched_cancel */
    FP8_REQ_FINISH_ERROR,      /* the model failed on the step that carried it */
};

/* "stop", "length", "cancelled", "error"; "" for FP8_REQ_FINISH_NONE. */
const char *fp8_req_finish_name(enum fp8_req_finish f);

enum fp8_req_state {
    FP8_REQ_WAITING,  /* queued (new, or preempted and waiting to recompute) */
    FP8_REQ_RUNNING,  /* holds KV blocks, in the running set */
    FP8_REQ_FINISHED, /* on the done list until fp8_sched_reap */
};

/* What the sampler needs; the scheduler only carries it. */
struct fp8_req_sampling {
    float temperature; /* 0: greedy */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    int32_t top_k;     /* 0: off */
    float repetition_penalty; /* 1: off */
    float presence_penalty;   /* 0: off */
    uint64_t seed;
};

struct fp8_req_params {
    struct fp8_req_sampling sampling;
    int32_t max_tokens;  /* >= 1 */
    int32_t priority;    /* lower is served first; FCFS among equals */
    bool ignore_eos;     /* do not stop on the model's EOS ids (stop_ids still stop) */
    int32_t n_stop_ids;
    int32_t stop_ids[FP8_SCHED_MAX_STOP_IDS];
    void *user;          /* the caller's, untouched (stream, detokenizer, ...) */
};

struct fp8_req_usage {
    int32_t prompt_tokens;
    int32_t completion_tokens;
    int32_t cached_tokens;   /* prompt tokens served by the prefix cache on first admission */
    int32_t prefill_computed; /* tokens run through prefill, recomputes included */
    int32_t n_preemptions;
};

struct fp8_req_timings {
    int64_t arrival_step, first_step, first_token_step, finish_step; /* -1: not yet */
    int64_t arrival_ns, first_ns, first_token_ns, finish_ns;         /* CLOCK_MONOTONIC */
};

/* Queue = arrival -> first scheduled; prefill = first scheduled -> first token; decode =
 * first token -> finish (0 where a phase never happened). */
struct fp8_req_phases {
    int64_t queue_steps, prefill_steps, decode_steps;
    int64_t queue_ns, prefill_ns, decode_ns;
};
void fp8_req_phases_get(const struct fp8_req_timings *t, struct fp8_req_phases *out);

struct fp8_request {
    uint64_t id; /* the caller's; unique among live requests */
    struct fp8_req_params params;
    enum fp8_req_state state;
    enum fp8_req_finish finish;

    int32_t *tokens;    /* (cap) the prompt, then the generated ids */
    int32_t n_prompt;
    int32_t n_tokens;   /* prompt + generated */
    int32_t cap;        /* min(n_prompt + max_tokens, max_model_len) */
    int32_t n_computed; /* leading tokens whose KV is in the cache */
    struct fp8_kv_seq kv;

    struct fp8_req_usage usage;
    struct fp8_req_timings timings;
    bool paused;        /* fp8_sched_pause: left out of every step's batch */
    uint64_t order;     /* submission order, the FCFS tie-break */
    int32_t step_tokens; /* tokens scheduled in the current step (scratch) */
};

/* The model: runs batch (K/V of every token written at its slot) and points *logits at
 * (n rows, vocab) floats, one row per sequence with want_logits set, in sequence order,
 * valid until the next call. Returns 0 or a negative errno with err set. */
struct fp8_model_iface {
    void *ctx;
    int32_t vocab;
    int (*forward)(void *ctx, const struct fp8_batch *batch, const float **logits,
                   struct fp8_err *err);
    /* Optional, used instead of forward + the sampler when set (the engine: sampling on
     * the backend, only ids leave it): runs batch and draws tokens[i] for reqs[i], the
     * n_rows requests with want_logits set, in sequence order (each request's history and
     * n_tokens - n_prompt as in the sampler below). */
    int (*forward_sample)(void *ctx, const struct fp8_batch *batch,
                          struct fp8_request *const *reqs, int32_t n_rows, int32_t *tokens,
                          struct fp8_err *err);
};

/* The sampler (unused, may be NULL, when the model has forward_sample): picks the next
 * token of req from its logits row. req->tokens holds the
 * history (for penalties) and n_tokens - n_prompt is the index of the token being drawn
 * (for counter-based seeds), so a draw does not depend on the batch or on preemptions. */
struct fp8_sampler_iface {
    void *ctx;
    int (*sample)(void *ctx, const struct fp8_request *req, const float *logits,
                  int32_t vocab, int32_t *token);
};

/* Optional: called after each token is appended (streaming, stop strings). Returning true
 * finishes the request with FP8_REQ_FINISH_STOP. */
struct fp8_token_hook {
    void *ctx;
    bool (*on_token)(void *ctx, struct fp8_request *req, int32_t token);
};

struct fp8_sched_params {
    int32_t max_num_seqs;           /* running sequences at once */
    int32_t max_num_batched_tokens; /* tokens per step, >= max_num_seqs */
    int32_t max_model_len;          /* prompt + generated, tokens */
    int32_t block_size;
    int64_t kv_budget_bytes;
    int64_t kv_bytes_per_block;     /* from the backend */
    bool prefix_caching;
    int32_t n_eos_ids;
    int32_t eos_ids[FP8_SCHED_MAX_EOS];
};

struct fp8_sched_stats {
    int64_t n_steps;
    int64_t n_seq_steps;       /* sum over steps of sequences in the batch */
    int64_t n_prefill_tokens;  /* prompt/recompute tokens computed */
    int64_t n_decode_tokens;
    int64_t n_cached_tokens;   /* prompt tokens served by the prefix cache at admissions */
    int64_t n_preemptions;
};

struct fp8_sched {
    struct fp8_sched_params params;
    struct fp8_kv_blocks kv;
    struct fp8_model_iface model;
    struct fp8_sampler_iface sampler;
    struct fp8_token_hook hook;

    struct fp8_request **waiting; /* (n_waiting) sorted by (priority, order) */
    int32_t n_waiting, cap_waiting;
    struct fp8_request **running; /* (n_running) sorted by (priority, order) */
    int32_t n_running;
    struct fp8_request **done;    /* (n_done) finished, not yet reaped */
    int32_t n_done, cap_done;
    uint64_t next_order;

    /* Step scratch, sized for the worst step. */
    struct fp8_request **sched;   /* (max_num_seqs) sequences in this step's batch */
    int32_t *b_tokens;      /* (max_num_batched_tokens) */
    int32_t *b_positions;   /* (max_num_batched_tokens) */
    int32_t *b_slots;       /* (max_num_batched_tokens) */
    int32_t *b_seq_start;   /* (max_num_seqs + 1) */
    int32_t *b_seq_len;     /* (max_num_seqs) */
    int32_t *b_block_table; /* (max_num_seqs, max_blocks_per_seq) */
    uint8_t *b_want;        /* (max_num_seqs) */
    struct fp8_request **b_reqs; /* (max_num_seqs) those wanting logits (forward_sample) */
    int32_t *b_ids;         /* (max_num_seqs) their drawn tokens (forward_sample) */
    struct fp8_batch batch; /* the last step's batch (for tests and tracing) */

    struct fp8_sched_stats stats;
};

int fp8_sched_init(struct fp8_sched *s, const struct fp8_sched_params *p,
                   const struct fp8_model_iface *model, const struct fp8_sampler_iface *sampler,
                   struct fp8_err *err);
/* Frees every request, live or done. */
void fp8_sched_free(struct fp8_sched *s);

void fp8_sched_set_hook(struct fp8_sched *s, const struct fp8_token_hook *hook);

/* Queues a request (the prompt is copied). Fails without queueing anything: -EINVAL for an
 * empty prompt, max_tokens < 1, too many stop ids, or an id already live; -E2BIG with a
 * message starting "too_long:" when the prompt leaves no room to generate within
 * max_model_len. On success *out (if given) points at the request, owned by s. */
int fp8_sched_submit(struct fp8_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                     const struct fp8_req_params *params, struct fp8_request **out,
                     struct fp8_err *err);

/* Cancels a waiting or running request: its blocks go back at once, it moves to the done
 * list with FP8_REQ_FINISH_CANCELLED. -ENOENT if no live request has that id. */
int fp8_sched_cancel(struct fp8_sched *s, uint64_t id);

/* Pauses (paused true) or resumes a waiting or running request. A paused request keeps
 * its place, its tokens and its KV blocks but is left out of every step's batch, so it
 * neither advances nor takes token budget; it is not admitted while waiting, and may still
 * be preempted like any other when blocks run out. Cancel works while paused. -ENOENT if no
 * live request has that id. */
int fp8_sched_pause(struct fp8_sched *s, uint64_t id, bool paused);

/* One engine step (see docs/scheduler.md): schedules decodes, prefill chunks and
 * admissions within the token budget, preempting the last running request when blocks run
 * out, runs the model once, samples, retires finished requests. Returns the number of
 * sequences in the batch (0 when there was nothing to run), or the model's negative errno:
 * then every request in that batch is finished with FP8_REQ_FINISH_ERROR and err says why. */
int fp8_sched_step(struct fp8_sched *s, struct fp8_err *err);

/* Takes the oldest finished request off the done list; the caller frees it with
 * fp8_request_free. Returns false when the list is empty. */
bool fp8_sched_reap(struct fp8_sched *s, struct fp8_request **out);
void fp8_request_free(struct fp8_request *req);

static inline bool fp8_sched_idle(const struct fp8_sched *s)
{
    return s->n_waiting == 0 && s->n_running == 0;
}

/* Whether a step would find nothing to run: every live request is paused. */
bool fp8_sched_all_paused(const struct fp8_sched *s);

/* An idle scheduler's steps run nothing: jumps the step counter forward to step (for a
 * driver whose next arrival is far ahead). No effect unless idle. */
void fp8_sched_idle_until(struct fp8_sched *s, int64_t step);

/* Scheduler and KV accounting invariants (see fp8_kv_blocks_check), plus: running
 * requests are sorted, hold tables covering their computed tokens, waiting ones hold no
 * blocks. 0 or -EFAULT with err. */
int fp8_sched_check(const struct fp8_sched *s, struct fp8_err *err);

#endif
