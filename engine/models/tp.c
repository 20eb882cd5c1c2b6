/* Tensor parallel over a backend group (kernels.h's fp8_backend_group): one thread per
 * rank, each owning its backend (cuda: its device, stream, NCCL rank and graphs), its
 * shard of the model (engine/tp_plan.h's slices) and its KV cache (its KV heads; every
 * rank uses the same block ids, so the block manager's one table serves them all).
 *
 * The caller's thread (the engine's) checks a step once, hands it to the rank threads
 * and waits, with a deadline, until every rank is done; the ranks meet only in the
 * backend's all_reduce_sum (after o_proj and down_proj). docs/tensor-parallel.md says why
 * threads rather than processes.
 *
 * Logits leave vocab-parallel: each rank copies its (rows, V_r) shard into its columns of
 * the caller's (rows, V) buffer (the gather, in host memory: the host sampler then samples
 * once and the ids reach every rank in the next step's tokens). Greedy: each rank's
 * argmax and its value (rows x 8 bytes) come back, and the pick is the largest value,
 * the lowest rank on ties, which is the unsplit argmax's lowest id.
 *
 * A rank that fails aborts the group: its peers' collectives end instead of waiting, the
 * step fails naming the rank and the first cause, and every later step fails at once
 * (fp8_backend_group_aborted tells the daemon to report itself unhealthy). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "engine/models/models.h"

enum tp_task {
    TP_TASK_LOAD,
    TP_TASK_STEP,
    TP_TASK_EXIT,
};

struct tp_rank {
    struct model_tp *tp;
    struct fp8_backend *be;
    struct fp8_model *m;   /* its shard */
    pthread_t thread;
    bool started;
    int rc;                /* of the last task */
    struct fp8_err err;
    float *logits;         /* (logits_cap) its logit rows (rows, V_r) */
    size_t logits_cap;
    int32_t *ids;          /* (ids_cap) its greedy candidates */
    float *vals;           /* (ids_cap) their logits */
    size_t ids_cap;
};

struct model_tp {
    int32_t n_ranks;
    struct fp8_backend_group *group;
    struct tp_rank rank[FP8_BACKEND_MAX_RANKS];
    pthread_mutex_t mu;
    pthread_cond_t go;    /* rank threads wait here for a task */
    pthread_cond_t done;  /* the caller waits here (CLOCK_MONOTONIC) */
    pthread_cond_t bar;   /* ranks wait here between step_begin and the forward */
    int32_t bar_arrived;
    uint64_t bar_gen;     /* barriers completed */
    uint64_t task_id;     /* tasks handed out so far */
    enum tp_task task;
    int32_t n_done;
    bool wedged;          /* a rank never came back: its thread cannot be joined */
    /* the task's arguments */
    struct fp8_weights *src;
    const struct fp8_model_opts *opts;
    const struct fp8_batch *b;
    float *out_logits;    /* (rows, V) */
    bool greedy;
    /* Draws other than greedy: the gathered logits, sampled once on the host by a ref
     * backend's sample op (the cuda sampler's contract: the same ids), so every rank gets
     * the same ids with the next step's tokens. */
    struct fp8_backend *host;
    float *sample_logits; /* (sample_cap) */
    size_t sample_cap;
};

/* Aborts the group and wakes the ranks waiting at the step barrier. */
static void tp_abort(struct model_tp *tp)
{
    fp8_backend_group_abort(tp->group);
    pthread_mutex_lock(&tp->mu);
    pthread_cond_broadcast(&tp->bar);
    pthread_mutex_unlock(&tp->mu);
}

/* Every rank past step_begin (which may allocate) before any rank launches (models.h says
 * why). 0, or -ECANCELED when the group was aborted. The wait has no deadline of its own:
 * a rank that fails aborts the group, and the caller aborts it at its deadline. */
static int step_barrier(struct model_tp *tp)
{
    int rc = 0;
    pthread_mutex_lock(&tp->mu);
    if (++tp->bar_arrived == tp->n_ranks) {
        tp->bar_arrived = 0;
        tp->bar_gen++;
        pthread_cond_broadcast(&tp->bar);
    } else {
        uint64_t gen = tp->bar_gen;
        while (tp->bar_gen == gen && !fp8_backend_group_aborted(tp->group))
            pthread_cond_wait(&tp->bar, &tp->mu);
        rc = tp->bar_gen == gen ? -ECANCELED : 0;
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

static int rank_load(struct tp_rank *rk)
{
    struct model_tp *tp = rk->tp;
    struct fp8_tp_shard s;
    int rc = fp8_tp_plan_shard(fp8_weights_config(tp->src), tp->n_ranks, rk->be->tp_rank, &s,
                               &rk->err);
    if (rc == 0)
        rc = model_build(tp->src, rk->be, tp->opts, &s, &rk->m, &rk->err);
    return rc;
}

static int rank_step(struct tp_rank *rk)
{
    struct model_tp *tp = rk->tp;
    const struct fp8_tp_range *v = &rk->m->shard.vocab_rows;
    size_t n = (size_t)fp8_batch_n_logit_rows(tp->b);
    int rc;
    if (tp->greedy && n > rk->ids_cap) {
        int32_t *ids = realloc(rk->ids, n * sizeof(int32_t));
        if (ids)
            rk->ids = ids;
        float *vals = realloc(rk->vals, n * sizeof(float));
        if (vals)
            rk->vals = vals;
        if (!ids || !vals)
            return fp8_err_set(&rk->err, -ENOMEM, "out of memory for %zu greedy picks", n);
        rk->ids_cap = n;
    }
    if (!tp->greedy && tp->out_logits && n * (size_t)v->count > rk->logits_cap) {
        float *p = realloc(rk->logits, n * (size_t)v->count * sizeof(float));
        if (!p)
            return fp8_err_set(&rk->err, -ENOMEM, "out of memory for %zu logit rows", n);
        rk->logits = p;
        rk->logits_cap = n * (size_t)v->count;
    }
    struct model_step_out out = {
        .logits = !tp->greedy && tp->out_logits ? rk->logits : NULL,
        .ids = tp->greedy ? rk->ids : NULL,
        .vals = tp->greedy ? rk->vals : NULL,
    };
    float *logits = out.logits;
    int n_rows = model_step_begin(rk->m, tp->b, &out, &rk->err);
    if (n_rows < 0)
        return n_rows;
    if (step_barrier(tp) < 0)
        return fp8_err_set(&rk->err, -ECANCELED, "the group was aborted before the step ran "
                           "(another rank failed)");
    rc = model_step_finish(rk->m, n_rows, &out, &rk->err);
    if (rc <= 0 || !logits)
        return rc;
    size_t vocab = (size_t)rk->m->cfg.vocab_size;
    for (size_t r = 0; r < (size_t)rc; r++) /* this rank's columns only: no two ranks meet */
        memcpy(tp->out_logits + r * vocab + (size_t)v->start, rk->logits + r * (size_t)v->count,
               (size_t)v->count * sizeof(float));
    return rc;
}

static void *rank_main(void *arg)
{
    struct tp_rank *rk = arg;
    struct model_tp *tp = rk->tp;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&tp->mu);
        /* Idle until the next task; the caller's wait for the ranks is the bounded one. */
        while (tp->task_id == seen)
            pthread_cond_wait(&tp->go, &tp->mu);
        seen = tp->task_id;
        enum tp_task task = tp->task;
        pthread_mutex_unlock(&tp->mu);
        if (task == TP_TASK_EXIT)
            return NULL;
        rk->rc = task == TP_TASK_LOAD ? rank_load(rk) : rank_step(rk);
        if (rk->rc < 0 && task == TP_TASK_STEP)
            tp_abort(tp); /* peers may wait for us at the barrier or in a collective */
        pthread_mutex_lock(&tp->mu);
        tp->n_done++;
        pthread_cond_signal(&tp->done);
        pthread_mutex_unlock(&tp->mu);
    }
}

/* With tp->mu held: waits until every rank is done or until deadline_ns (0: no deadline);
 * true when they all are. */
static bool wait_ranks(struct model_tp *tp, int64_t deadline_ns)
{
    struct timespec ts = {deadline_ns / 1000000000, deadline_ns % 1000000000};
    while (tp->n_done < tp->n_ranks) {
        if (!deadline_ns)
            pthread_cond_wait(&tp->done, &tp->mu);
        else if (pthread_cond_timedwait(&tp->done, &tp->mu, &ts) == ETIMEDOUT)
            return tp->n_done == tp->n_ranks;
    }
    return true;
}

/* Runs task on every rank and reports the first rank's failure, preferring a cause over
 * "aborted because another rank failed". Steps wait at most the group's timeout (each
 * rank's own waits end by then), then abort the group and wait once more as long. */
static int run_task(struct model_tp *tp, enum tp_task task, struct fp8_err *err)
{
    if (tp->wedged)
        return fp8_err_set(err, -ENOTRECOVERABLE, "tensor parallel: a rank has been stuck "
                           "since an earlier step; the model must be reloaded");
    if (task == TP_TASK_STEP && fp8_backend_group_aborted(tp->group))
        return fp8_err_set(err, -ENOTRECOVERABLE, "tensor parallel: the group failed in an "
                           "earlier step; the model must be reloaded");
    pthread_mutex_lock(&tp->mu);
    tp->task = task;
    tp->n_done = 0;
    tp->task_id++;
    pthread_cond_broadcast(&tp->go);
    int64_t wait_ns = (int64_t)tp->group->timeout_ms * 1000000;
    bool all = wait_ranks(tp, task == TP_TASK_STEP ? fp8_now_ns() + wait_ns : 0);
    if (!all) {
        fp8_backend_group_abort(tp->group);
        pthread_cond_broadcast(&tp->bar); /* tp_abort, with tp->mu already held */
        all = wait_ranks(tp, fp8_now_ns() + wait_ns);
    }
    int32_t done = tp->n_done;
    tp->wedged = !all;
    pthread_mutex_unlock(&tp->mu);
    if (!all)
        return fp8_err_set(err, -ETIMEDOUT, "tensor parallel: %d of %d ranks did not finish "
                           "the step within 2 x %d ms, even after the group was aborted",
                           tp->n_ranks - done, tp->n_ranks, tp->group->timeout_ms);
    const struct tp_rank *first = NULL;
    for (int32_t r = 0; r < tp->n_ranks; r++) {
        const struct tp_rank *rk = &tp->rank[r];
        if (rk->rc < 0 && (!first || (first->rc == -ECANCELED && rk->rc != -ECANCELED)))
            first = rk;
    }
    if (first)
        return fp8_err_set(err, first->rc, "tensor parallel rank %d of %d: %s",
                           first->be->tp_rank, tp->n_ranks, first->err.msg);
    return tp->rank[0].rc;
}

int model_tp_create(struct fp8_model *m, struct fp8_weights *src, struct fp8_err *err)
{
    struct fp8_backend_group *g = m->be->group;
    for (int32_t r = 0; r < g->n_ranks; r++)
        if (!g->rank[r]->ops->all_reduce_sum || !g->rank[r]->ops->argmax_value)
            return fp8_err_set(err, -ENOTSUP, "backend %s has no all_reduce_sum: it cannot "
                               "run tensor parallel", g->rank[r]->name);
    struct model_tp *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    tp->n_ranks = g->n_ranks;
    tp->group = g;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->go, NULL);
    pthread_cond_init(&tp->done, &ca);
    pthread_cond_init(&tp->bar, NULL);
    pthread_condattr_destroy(&ca);
    m->tp = tp;
    for (int32_t r = 0; r < tp->n_ranks; r++) {
        struct tp_rank *rk = &tp->rank[r];
        rk->tp = tp;
        rk->be = g->rank[r];
        int rc = pthread_create(&rk->thread, NULL, rank_main, rk);
        if (rc)
            return fp8_err_set(err, -rc, "tensor parallel: cannot start rank %d's thread", r);
        rk->started = true;
    }
    tp->src = src;
    tp->opts = &m->opts;
    int rc = run_task(tp, TP_TASK_LOAD, err);
    tp->src = NULL;
    return rc;
}

void model_tp_free(struct model_tp *tp)
{
    if (!tp)
        return;
    if (tp->wedged)
        return; /* a stuck rank may still use everything here: leaked on purpose */
    pthread_mutex_lock(&tp->mu);
    tp->task = TP_TASK_EXIT;
    tp->task_id++;
    pthread_cond_broadcast(&tp->go);
    pthread_mutex_unlock(&tp->mu);
    for (int32_t r = 0; r < tp->n_ranks; r++) {
        struct tp_rank *rk = &tp->rank[r];
        if (rk->started)
            pthread_join(rk->thread, NULL);
        fp8_model_free(rk->m);
        free(rk->logits);
        free(rk->ids);
        free(rk->vals);
    }
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->go);
    pthread_cond_destroy(&tp->done);
    pthread_cond_destroy(&tp->bar);
    fp8_backend_free(tp->host);
    free(tp->sample_logits);
    free(tp);
}

/* One step on every rank: logits gathered from the vocab shards, or greedy ids picked
 * from every shard's candidate (lowest id on ties). */
static int tp_step(struct fp8_model *m, const struct fp8_batch *b, int32_t n_rows, float *logits,
                   int32_t *ids, struct fp8_err *err)
{
    struct model_tp *tp = m->tp;
    tp->b = b;
    tp->out_logits = logits;
    tp->greedy = ids != NULL;
    int rc = run_task(tp, TP_TASK_STEP, err);
    tp->b = NULL;
    tp->out_logits = NULL;
    if (rc < 0 || !ids)
        return rc < 0 ? rc : n_rows;
    for (int32_t i = 0; i < n_rows; i++) {
        const struct tp_rank *best = &tp->rank[0];
        for (int32_t r = 1; r < tp->n_ranks; r++)
            if (tp->rank[r].vals[i] > best->vals[i]) /* strict: ties keep the lower ids */
                best = &tp->rank[r];
        ids[i] = (int32_t)best->m->shard.vocab_rows.start + best->ids[i];
    }
    return n_rows;
}

/* Draws of rows whose logits were gathered into host memory, on the host ref backend. */
static int tp_sample(struct fp8_model *m, const struct fp8_batch *b, int32_t n_rows,
                     const struct model_step_out *out, struct fp8_err *err)
{
    struct model_tp *tp = m->tp;
    size_t need = (size_t)n_rows * (size_t)m->cfg.vocab_size;
    int rc;
    if (!tp->host && (rc = fp8_backend_create("ref", &tp->host, err)) < 0)
        return fp8_err_prefix(err, rc, "tensor parallel: host sampler");
    if (need > tp->sample_cap) {
        float *p = realloc(tp->sample_logits, need * sizeof(float));
        if (!p)
            return fp8_err_set(err, -ENOMEM, "out of memory for %d gathered logit rows", n_rows);
        tp->sample_logits = p;
        tp->sample_cap = need;
    }
    rc = tp_step(m, b, n_rows, tp->sample_logits, NULL, err);
    if (rc <= 0)
        return rc;
    struct fp8_tensor lg = {.dtype = FP8_DTYPE_F32, .n_dims = 2,
                            .ne = {n_rows, m->cfg.vocab_size}, .data = tp->sample_logits};
    struct fp8_tensor ids = {.dtype = FP8_DTYPE_I32, .n_dims = 1, .ne = {n_rows},
                             .data = out->ids};
    tp->host->ops->sample(tp->host, &lg, out->rows, out->pen_ids, &ids);
    rc = tp->host->ops->sync(tp->host, err);
    return rc < 0 ? rc : n_rows;
}

int model_tp_forward(struct fp8_model *m, const struct fp8_batch *b,
                     const struct model_step_out *out, struct fp8_err *err)
{
    int rc = model_check_batch(m, b, err);
    if (rc < 0)
        return rc;
    int32_t n_rows = fp8_batch_n_logit_rows(b);
    if (n_rows > 0 && !out->logits && !out->ids)
        return fp8_err_set(err, -EINVAL, "forward: no buffer for %d logit rows", n_rows);
    if (!out->rows)
        return tp_step(m, b, n_rows, out->logits, NULL, err);
    /* Greedy rows without penalties need only every shard's best candidate. */
    bool greedy = true;
    for (int32_t i = 0; i < n_rows && greedy; i++)
        greedy = out->rows[i].temperature == 0.0f && out->rows[i].n_pen == 0;
    return greedy ? tp_step(m, b, n_rows, NULL, out->ids, err) : tp_sample(m, b, n_rows, out, err);
}

struct fp8_model *model_tp_rank(const struct fp8_model *m, int32_t r)
{
    return m->tp && r >= 0 && r < m->tp->n_ranks ? m->tp->rank[r].m : NULL;
}
