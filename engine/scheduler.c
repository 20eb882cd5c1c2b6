#include "scheduler.h"
#include "common/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *fp8_req_finish_name(enum fp8_req_finish f)
{
    switch (f) {
    case FP8_REQ_FINISH_STOP: return "stop";
    case FP8_REQ_FINISH_LENGTH: return "length";
    case FP8_REQ_FINISH_CANCELLED: return "cancelled";
    case FP8_REQ_FINISH_ERROR: return "error";
    case FP8_REQ_FINISH_NONE: break;
    }
    return "";
}

static int64_t span(int64_t from, int64_t to)
{
    return from >= 0 && to >= from ? to - from : 0;
}

void fp8_req_phases_get(const struct fp8_req_timings *t, struct fp8_req_phases *out)
{
    int64_t first_step = t->first_step >= 0 ? t->first_step : t->finish_step;
    int64_t first_ns = t->first_step >= 0 ? t->first_ns : t->finish_ns;
    int64_t tok_step = t->first_token_step >= 0 ? t->first_token_step : t->finish_step;
    int64_t tok_ns = t->first_token_step >= 0 ? t->first_token_ns : t->finish_ns;
    *out = (struct fp8_req_phases){
        .queue_steps = span(t->arrival_step, first_step),
        .queue_ns = span(t->arrival_ns, first_ns),
        /* The step that yields the first token is a prefill step too. */
        .prefill_steps = t->first_step >= 0 ? span(t->first_step, tok_step) +
                                                  (t->first_token_step >= 0) : 0,
        .prefill_ns = t->first_step >= 0 ? span(first_ns, tok_ns) : 0,
        .decode_steps = t->first_token_step >= 0 ? span(tok_step, t->finish_step) : 0,
        .decode_ns = t->first_token_step >= 0 ? span(tok_ns, t->finish_ns) : 0,
    };
}

int fp8_sched_init(struct fp8_sched *s, const struct fp8_sched_params *p,
                   const struct fp8_model_iface *model, const struct fp8_sampler_iface *sampler,
                   struct fp8_err *err)
{
    if (!s || !p || !model ||
        (!model->forward_sample && (!model->forward || !sampler || !sampler->sample)))
        return fp8_err_set(err, -EINVAL, "scheduler: NULL argument or callback");
    if (p->max_num_seqs < 1 || p->max_num_batched_tokens < p->max_num_seqs)
        return fp8_err_set(err, -EINVAL,
                           "scheduler: max_num_seqs %d must be >= 1 and max_num_batched_tokens "
                           "%d >= max_num_seqs (every running sequence decodes each step)",
                           (int)p->max_num_seqs, (int)p->max_num_batched_tokens);
    if (p->max_model_len < 2)
        return fp8_err_set(err, -EINVAL, "scheduler: max_model_len %d must be >= 2",
                           (int)p->max_model_len);
    if (p->n_eos_ids < 0 || p->n_eos_ids > FP8_SCHED_MAX_EOS)
        return fp8_err_set(err, -EINVAL, "scheduler: %d EOS ids (at most %d)", (int)p->n_eos_ids,
                           FP8_SCHED_MAX_EOS);
    if (model->vocab < 1)
        return fp8_err_set(err, -EINVAL, "scheduler: vocab %d", (int)model->vocab);

    struct fp8_sched t = {.params = *p, .model = *model};
    if (sampler)
        t.sampler = *sampler;
    struct fp8_kv_blocks_params kp = {
        .budget_bytes = p->kv_budget_bytes,
        .bytes_per_block = p->kv_bytes_per_block,
        .block_size = p->block_size,
        .max_model_len = p->max_model_len,
        .prefix_caching = p->prefix_caching,
    };
    int rc = fp8_kv_blocks_init(&t.kv, &kp, err);
    if (rc < 0)
        return fp8_err_prefix(err, rc, "scheduler");
    size_t ns = (size_t)p->max_num_seqs, nt = (size_t)p->max_num_batched_tokens;
    t.running = malloc(ns * sizeof(*t.running));
    t.sched = malloc(ns * sizeof(*t.sched));
    t.b_tokens = malloc(nt * sizeof(*t.b_tokens));
    t.b_positions = malloc(nt * sizeof(*t.b_positions));
    t.b_slots = malloc(nt * sizeof(*t.b_slots));
    t.b_seq_start = malloc((ns + 1) * sizeof(*t.b_seq_start));
    t.b_seq_len = malloc(ns * sizeof(*t.b_seq_len));
    t.b_block_table = malloc(ns * (size_t)t.kv.max_blocks_per_seq * sizeof(*t.b_block_table));
    t.b_want = malloc(ns);
    t.b_reqs = malloc(ns * sizeof(*t.b_reqs));
    t.b_ids = malloc(ns * sizeof(*t.b_ids));
    if (!t.running || !t.sched || !t.b_tokens || !t.b_positions || !t.b_slots ||
        !t.b_seq_start || !t.b_seq_len || !t.b_block_table || !t.b_want || !t.b_reqs ||
        !t.b_ids) {
        fp8_sched_free(&t);
        return fp8_err_set(err, -ENOMEM, "scheduler: out of memory for step buffers");
    }
    *s = t;
    return 0;
}

void fp8_sched_free(struct fp8_sched *s)
{
    if (!s)
        return;
    for (int32_t i = 0; i < s->n_waiting; i++)
        fp8_request_free(s->waiting[i]);
    for (int32_t i = 0; i < s->n_running; i++)
        fp8_request_free(s->running[i]);
    for (int32_t i = 0; i < s->n_done; i++)
        fp8_request_free(s->done[i]);
    free(s->waiting);
    free(s->running);
    free(s->done);
    free(s->sched);
    free(s->b_tokens);
    free(s->b_positions);
    free(s->b_slots);
    free(s->b_seq_start);
    free(s->b_seq_len);
    free(s->b_block_table);
    free(s->b_want);
    free(s->b_reqs);
    free(s->b_ids);
    fp8_kv_blocks_free(&s->kv);
    memset(s, 0, sizeof(*s));
}

void fp8_sched_set_hook(struct fp8_sched *s, const struct fp8_token_hook *hook)
{
    s->hook = hook ? *hook : (struct fp8_token_hook){0};
}

void fp8_request_free(struct fp8_request *req)
{
    if (!req)
        return;
    fp8_kv_seq_free(&req->kv);
    free(req->tokens);
    free(req);
}

/* ---- queues ------------------------------------------------------------------------------- */

static bool req_before(const struct fp8_request *a, const struct fp8_request *b)
{
    if (a->params.priority != b->params.priority)
        return a->params.priority < b->params.priority;
    return a->order < b->order;
}

/* Inserts r into the sorted array q of n entries (room for one more is the caller's). */
static void queue_insert(struct fp8_request **q, int32_t *n, struct fp8_request *r)
{
    int32_t lo = 0, hi = *n;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if (req_before(q[mid], r))
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(q + lo + 1, q + lo, (size_t)(*n - lo) * sizeof(*q));
    q[lo] = r;
    (*n)++;
}

static void queue_remove_at(struct fp8_request **q, int32_t *n, int32_t i)
{
    memmove(q + i, q + i + 1, (size_t)(*n - i - 1) * sizeof(*q));
    (*n)--;
}

static int grow(struct fp8_request ***q, int32_t *cap, int32_t need)
{
    if (need <= *cap)
        return 0;
    int32_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    struct fp8_request **p = realloc(*q, (size_t)c * sizeof(*p));
    if (!p)
        return -ENOMEM;
    *q = p;
    *cap = c;
    return 0;
}

/* The done list never fails to take a request: its room is reserved at submit. step: the
 * last step the request took part in (or, never run, the step it would have run next). */
static void finish(struct fp8_sched *s, struct fp8_request *r, enum fp8_req_finish why,
                   int64_t step, int64_t t)
{
    fp8_kv_blocks_release(&s->kv, &r->kv);
    r->state = FP8_REQ_FINISHED;
    r->finish = why;
    r->timings.finish_step = step;
    r->timings.finish_ns = t;
    s->done[s->n_done++] = r;
}

int fp8_sched_submit(struct fp8_sched *s, uint64_t id, const int32_t *prompt, int32_t n_prompt,
                     const struct fp8_req_params *params, struct fp8_request **out,
                     struct fp8_err *err)
{
    if (!s || !params || (!prompt && n_prompt))
        return fp8_err_set(err, -EINVAL, "bad_request: NULL argument");
    if (n_prompt < 1)
        return fp8_err_set(err, -EINVAL, "bad_request: empty prompt");
    if (params->max_tokens < 1)
        return fp8_err_set(err, -EINVAL, "bad_request: max_tokens %d must be >= 1",
                           (int)params->max_tokens);
    if (params->n_stop_ids < 0 || params->n_stop_ids > FP8_SCHED_MAX_STOP_IDS)
        return fp8_err_set(err, -EINVAL, "bad_request: %d stop ids (at most %d)",
                           (int)params->n_stop_ids, FP8_SCHED_MAX_STOP_IDS);
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->model.vocab)
            return fp8_err_set(err, -EINVAL, "bad_request: token %d at %d outside vocab %d",
                               (int)prompt[i], (int)i, (int)s->model.vocab);
    if (n_prompt >= s->params.max_model_len)
        return fp8_err_set(err, -E2BIG,
                           "too_long: prompt of %d tokens leaves no room to generate within "
                           "max_model_len %d",
                           (int)n_prompt, (int)s->params.max_model_len);
    for (int32_t i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->id == id)
            goto dup;
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id)
            goto dup;

    int32_t live = s->n_waiting + s->n_running;
    if (grow(&s->waiting, &s->cap_waiting, live + 1) < 0 ||
        grow(&s->done, &s->cap_done, s->n_done + live + 1) < 0)
        return fp8_err_set(err, -ENOMEM, "scheduler: out of memory for the queues");
    struct fp8_request *r = calloc(1, sizeof(*r));
    if (!r)
        return fp8_err_set(err, -ENOMEM, "scheduler: out of memory for a request");
    int64_t cap = (int64_t)n_prompt + params->max_tokens;
    r->cap = cap < s->params.max_model_len ? (int32_t)cap : s->params.max_model_len;
    r->tokens = malloc((size_t)r->cap * sizeof(*r->tokens));
    if (!r->tokens || fp8_kv_seq_init(&r->kv, &s->kv) < 0) {
        fp8_request_free(r);
        return fp8_err_set(err, -ENOMEM, "scheduler: out of memory for a request");
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof(*prompt));
    r->id = id;
    r->params = *params;
    r->state = FP8_REQ_WAITING;
    r->n_prompt = r->n_tokens = n_prompt;
    r->usage.prompt_tokens = n_prompt;
    r->order = s->next_order++;
    r->timings = (struct fp8_req_timings){
        .arrival_step = s->stats.n_steps, .first_step = -1, .first_token_step = -1,
        .finish_step = -1, .arrival_ns = fp8_now_ns(), .first_ns = -1, .first_token_ns = -1,
        .finish_ns = -1,
    };
    queue_insert(s->waiting, &s->n_waiting, r);
    if (out)
        *out = r;
    return 0;
dup:
    return fp8_err_set(err, -EINVAL, "bad_request: request id %llu is already live",
                       (unsigned long long)id);
}

int fp8_sched_cancel(struct fp8_sched *s, uint64_t id)
{
    for (int32_t i = 0; i < s->n_waiting; i++) {
        if (s->waiting[i]->id == id) {
            struct fp8_request *r = s->waiting[i];
            queue_remove_at(s->waiting, &s->n_waiting, i);
            finish(s, r, FP8_REQ_FINISH_CANCELLED, s->stats.n_steps, fp8_now_ns());
            return 0;
        }
    }
    for (int32_t i = 0; i < s->n_running; i++) {
        if (s->running[i]->id == id) {
            struct fp8_request *r = s->running[i];
            queue_remove_at(s->running, &s->n_running, i);
            finish(s, r, FP8_REQ_FINISH_CANCELLED, s->stats.n_steps - 1, fp8_now_ns());
            return 0;
        }
    }
    return -ENOENT;
}

static struct fp8_request *live_find(struct fp8_sched *s, uint64_t id)
{
    for (int32_t i = 0; i < s->n_waiting; i++)
        if (s->waiting[i]->id == id)
            return s->waiting[i];
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i]->id == id)
            return s->running[i];
    return NULL;
}

int fp8_sched_pause(struct fp8_sched *s, uint64_t id, bool paused)
{
    struct fp8_request *r = live_find(s, id);
    if (!r)
        return -ENOENT;
    r->paused = paused;
    return 0;
}

bool fp8_sched_all_paused(const struct fp8_sched *s)
{
    for (int32_t i = 0; i < s->n_waiting; i++)
        if (!s->waiting[i]->paused)
            return false;
    for (int32_t i = 0; i < s->n_running; i++)
        if (!s->running[i]->paused)
            return false;
    return true;
}

void fp8_sched_idle_until(struct fp8_sched *s, int64_t step)
{
    if (fp8_sched_idle(s) && step > s->stats.n_steps)
        s->stats.n_steps = step;
}

bool fp8_sched_reap(struct fp8_sched *s, struct fp8_request **out)
{
    if (s->n_done == 0)
        return false;
    *out = s->done[0];
    memmove(s->done, s->done + 1, (size_t)(s->n_done - 1) * sizeof(*s->done));
    s->n_done--;
    return true;
}

/* ---- step ---------------------------------------------------------------------------------- */

/* Recompute policy: the victim keeps its generated tokens and its place in the FCFS order,
 * drops its KV, and will prefill prompt + generated again (mostly from the prefix cache
 * when its blocks were not evicted meanwhile). */
static void preempt_last(struct fp8_sched *s)
{
    struct fp8_request *r = s->running[--s->n_running];
    fp8_kv_blocks_release(&s->kv, &r->kv);
    r->n_computed = 0;
    r->state = FP8_REQ_WAITING;
    r->usage.n_preemptions++;
    s->stats.n_preemptions++;
    queue_insert(s->waiting, &s->n_waiting, r);
}

/* Tokens r can compute now without new blocks, plus what the pool can still supply. */
static int32_t fit_tokens(const struct fp8_sched *s, const struct fp8_request *r)
{
    int64_t slots = (int64_t)(r->kv.n_blocks + fp8_kv_blocks_n_available(&s->kv)) *
                    s->kv.block_size;
    int64_t n = slots - r->n_computed;
    return n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

static bool is_stop_token(const struct fp8_sched *s, const struct fp8_request *r, int32_t tok)
{
    if (!r->params.ignore_eos)
        for (int32_t i = 0; i < s->params.n_eos_ids; i++)
            if (s->params.eos_ids[i] == tok)
                return true;
    for (int32_t i = 0; i < r->params.n_stop_ids; i++)
        if (r->params.stop_ids[i] == tok)
            return true;
    return false;
}

/* Fills the batch from s->sched[0..n_sched) with their step_tokens. */
static void batch_build(struct fp8_sched *s, int32_t n_sched)
{
    int32_t bs = s->kv.block_size, mb = s->kv.max_blocks_per_seq, t = 0;
    for (int32_t k = 0; k < n_sched; k++) {
        const struct fp8_request *r = s->sched[k];
        s->b_seq_start[k] = t;
        for (int32_t pos = r->n_computed; pos < r->n_computed + r->step_tokens; pos++, t++) {
            s->b_tokens[t] = r->tokens[pos];
            s->b_positions[t] = pos;
            s->b_slots[t] = r->kv.blocks[pos / bs] * bs + pos % bs;
        }
        int32_t len = r->n_computed + r->step_tokens;
        s->b_seq_len[k] = len;
        s->b_want[k] = len == r->n_tokens;
        int32_t *row = s->b_block_table + (size_t)k * mb;
        memcpy(row, r->kv.blocks, (size_t)r->kv.n_blocks * sizeof(*row));
        for (int32_t j = r->kv.n_blocks; j < mb; j++)
            row[j] = -1;
    }
    s->b_seq_start[n_sched] = t;
    s->batch = (struct fp8_batch){
        .n_tokens = t,
        .tokens = s->b_tokens,
        .positions = s->b_positions,
        .slots = s->b_slots,
        .n_seqs = n_sched,
        .seq_start = s->b_seq_start,
        .seq_len = s->b_seq_len,
        .block_table = s->b_block_table,
        .max_blocks_per_seq = mb,
        .block_size = bs,
        .want_logits = s->b_want,
    };
}

/* Decides what runs this step. Running requests go first, in (priority, FCFS) order: each
 * decodes one token or takes the next chunk of its prefill, the chunk capped so that every
 * decode after it still fits the token budget. When the pool cannot give a request even one
 * token's block, the last running request is preempted (possibly itself) until it can.
 * Waiting requests are admitted only in steps without preemption. */
static int32_t schedule(struct fp8_sched *s, int64_t t0)
{
    int32_t budget = s->params.max_num_batched_tokens, n_sched = 0, decodes_left = 0;
    bool preempted = false;
    for (int32_t i = 0; i < s->n_running; i++)
        decodes_left += !s->running[i]->paused &&
                        s->running[i]->n_tokens - s->running[i]->n_computed == 1;

    for (int32_t i = 0; i < s->n_running; i++) {
        struct fp8_request *r = s->running[i];
        if (r->paused)
            continue;
        int32_t n = r->n_tokens - r->n_computed;
        if (n == 1)
            decodes_left--;
        if (n > budget - decodes_left)
            n = budget - decodes_left;
        if (n <= 0)
            continue;
        int32_t fit;
        while ((fit = fit_tokens(s, r)) < 1) {
            struct fp8_request *victim = s->running[s->n_running - 1];
            if (victim != r && !victim->paused && victim->n_tokens - victim->n_computed == 1)
                decodes_left--;
            preempt_last(s);
            preempted = true;
            if (victim == r)
                break;
        }
        if (fit < 1)
            break; /* r itself was the last one and went back to waiting */
        if (n > fit)
            n = fit;
        /* Cannot fail: n <= fit tokens are within the blocks the pool can supply. */
        fp8_kv_blocks_reserve(&s->kv, &r->kv, r->n_computed + n);
        r->step_tokens = n;
        s->sched[n_sched++] = r;
        budget -= n;
    }

    /* Paused waiting requests are passed over, never in the way of those behind them. */
    for (int32_t i = 0; !preempted && i < s->n_waiting &&
                        s->n_running < s->params.max_num_seqs && budget > 0;) {
        struct fp8_request *r = s->waiting[i];
        if (r->paused) {
            i++;
            continue;
        }
        int32_t matched = fp8_kv_blocks_match_prefix(&s->kv, &r->kv, r->tokens, r->n_tokens - 1);
        int32_t n = r->n_tokens - matched;
        if (n > budget)
            n = budget;
        r->n_computed = matched;
        if (fp8_kv_blocks_reserve(&s->kv, &r->kv, matched + n) < 0) {
            fp8_kv_blocks_release(&s->kv, &r->kv);
            r->n_computed = 0;
            break;
        }
        queue_remove_at(s->waiting, &s->n_waiting, i);
        queue_insert(s->running, &s->n_running, r);
        r->state = FP8_REQ_RUNNING;
        s->stats.n_cached_tokens += matched;
        if (r->timings.first_step < 0) {
            r->timings.first_step = s->stats.n_steps;
            r->timings.first_ns = t0;
            r->usage.cached_tokens = matched;
        }
        r->step_tokens = n;
        s->sched[n_sched++] = r;
        budget -= n;
    }
    return n_sched;
}

int fp8_sched_step(struct fp8_sched *s, struct fp8_err *err)
{
    int64_t t0 = fp8_now_ns();
    int32_t n_sched = schedule(s, t0);
    if (n_sched == 0) {
        s->stats.n_steps++;
        return 0;
    }
    batch_build(s, n_sched);

    const float *logits = NULL;
    int rc;
    if (s->model.forward_sample) {
        int32_t n_rows = 0;
        for (int32_t k = 0; k < n_sched; k++)
            if (s->b_want[k])
                s->b_reqs[n_rows++] = s->sched[k];
        rc = s->model.forward_sample(s->model.ctx, &s->batch, s->b_reqs, n_rows, s->b_ids, err);
    } else {
        rc = s->model.forward(s->model.ctx, &s->batch, &logits, err);
    }
    int64_t t1 = fp8_now_ns();
    int32_t row = 0;
    for (int32_t k = 0; k < n_sched; k++) {
        struct fp8_request *r = s->sched[k];
        if (rc < 0) {
            r->finish = FP8_REQ_FINISH_ERROR;
            continue;
        }
        bool decode = r->step_tokens == 1 && r->n_tokens > r->n_prompt &&
                      r->n_computed == r->n_tokens - 1 && r->timings.first_token_step >= 0;
        r->n_computed += r->step_tokens;
        if (decode) {
            s->stats.n_decode_tokens++;
        } else {
            s->stats.n_prefill_tokens += r->step_tokens;
            r->usage.prefill_computed += r->step_tokens;
        }
        fp8_kv_blocks_commit(&s->kv, &r->kv, r->tokens, r->n_computed);
        if (!s->b_want[k])
            continue;

        int32_t tok = 0;
        if (s->model.forward_sample)
            tok = s->b_ids[row++];
        else if (s->sampler.sample(s->sampler.ctx, r,
                                   logits + (size_t)row++ * (size_t)s->model.vocab,
                                   s->model.vocab, &tok) < 0)
            tok = -1;
        if (tok < 0 || tok >= s->model.vocab) {
            r->finish = FP8_REQ_FINISH_ERROR;
            continue;
        }
        r->tokens[r->n_tokens++] = tok;
        r->usage.completion_tokens++;
        if (r->timings.first_token_step < 0) {
            r->timings.first_token_step = s->stats.n_steps;
            r->timings.first_token_ns = t1;
        }
        if (is_stop_token(s, r, tok) ||
            (s->hook.on_token && s->hook.on_token(s->hook.ctx, r, tok)))
            r->finish = FP8_REQ_FINISH_STOP;
        else if (r->n_tokens == r->cap)
            r->finish = FP8_REQ_FINISH_LENGTH;
    }
    s->stats.n_seq_steps += n_sched;

    /* Retire in one pass over the running set, keeping its order. */
    int32_t w = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        struct fp8_request *r = s->running[i];
        if (r->finish != FP8_REQ_FINISH_NONE)
            finish(s, r, r->finish, s->stats.n_steps, t1);
        else
            s->running[w++] = r;
    }
    s->n_running = w;
    s->stats.n_steps++;
    if (rc < 0)
        return fp8_err_prefix(err, rc, "model forward");
    return n_sched;
}

int fp8_sched_check(const struct fp8_sched *s, struct fp8_err *err)
{
    for (int32_t i = 0; i < s->n_waiting; i++) {
        const struct fp8_request *r = s->waiting[i];
        if (r->state != FP8_REQ_WAITING || r->kv.n_blocks != 0 || r->n_computed != 0 ||
            (i > 0 && !req_before(s->waiting[i - 1], r)))
            return fp8_err_set(err, -EFAULT, "sched check: waiting request %llu out of order "
                               "or holding blocks", (unsigned long long)r->id);
    }
    const struct fp8_kv_seq **seqs = malloc(((size_t)s->n_running + 1) * sizeof(*seqs));
    if (!seqs)
        return fp8_err_set(err, -ENOMEM, "sched check: out of memory");
    int rc = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        const struct fp8_request *r = s->running[i];
        seqs[i] = &r->kv;
        if (r->state != FP8_REQ_RUNNING || (i > 0 && !req_before(s->running[i - 1], r)) ||
            r->n_computed >= r->n_tokens ||
            (int64_t)r->kv.n_blocks * s->kv.block_size < r->n_computed ||
            r->n_tokens > r->cap) {
            rc = fp8_err_set(err, -EFAULT, "sched check: running request %llu inconsistent "
                             "(computed %d of %d tokens, %d blocks)",
                             (unsigned long long)r->id, (int)r->n_computed, (int)r->n_tokens,
                             (int)r->kv.n_blocks);
            goto out;
        }
    }
    if (s->n_running > s->params.max_num_seqs) {
        rc = fp8_err_set(err, -EFAULT, "sched check: %d running > max_num_seqs %d",
                         (int)s->n_running, (int)s->params.max_num_seqs);
        goto out;
    }
    rc = fp8_kv_blocks_check(&s->kv, seqs, s->n_running, err);
out:
    free(seqs);
    return rc;
}
