/* The ref backend's tensor-parallel group: N ref backends, one host thread each, whose
 * all_reduce_sum meet at a barrier. The CPU stand-in for NCCL, so that the engine's rank
 * threads, the sharded loading and the collectives run in `make test`.
 *
 * all_reduce_sum: every rank publishes its buffer and waits for the others (barrier 1);
 * rank 0 sums the buffers in rank order into the group's buffer (fp32, the order the
 * simulation in tests/test-tp-sim.c uses) (barrier 2); every rank copies the sum back
 * (barrier 3, so that the next collective cannot overwrite the sum while a rank still
 * reads it). Each wait is bounded by the group's timeout_ms and ends at once when the
 * group is aborted; a rank that times out aborts the group. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/ref_internal.h"

struct ref_group {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* on CLOCK_MONOTONIC */
    int32_t arrived;         /* ranks at the current barrier */
    uint64_t generation;     /* barriers completed */
    float *src[FP8_BACKEND_MAX_RANKS];   /* each rank's buffer (F32 activations) */
    int64_t n[FP8_BACKEND_MAX_RANKS];    /* its element count */
    float *sum;              /* (cap) */
    int64_t cap;
    bool mismatch;           /* the ranks' counts differed */
};

static void ref_group_free(void *impl)
{
    struct ref_group *rg = impl;
    if (!rg)
        return;
    pthread_mutex_destroy(&rg->mu);
    pthread_cond_destroy(&rg->cv);
    free(rg->sum);
    free(rg);
}

static void ref_group_wake(void *impl)
{
    struct ref_group *rg = impl;
    pthread_mutex_lock(&rg->mu);
    pthread_cond_broadcast(&rg->cv);
    pthread_mutex_unlock(&rg->mu);
}

/* With rg->mu held: 0 once every rank arrived, -ECANCELED when the group was aborted,
 * -ETIMEDOUT (the group then aborted) after timeout_ms. */
static int barrier(struct fp8_backend_group *g, struct ref_group *rg)
{
    if (fp8_backend_group_aborted(g))
        return -ECANCELED;
    if (++rg->arrived == g->n_ranks) {
        rg->arrived = 0;
        rg->generation++;
        pthread_cond_broadcast(&rg->cv);
        return 0;
    }
    uint64_t gen = rg->generation;
    int64_t until = fp8_now_ns() + (int64_t)g->timeout_ms * 1000000;
    struct timespec ts = {until / 1000000000, until % 1000000000};
    while (rg->generation == gen) {
        if (fp8_backend_group_aborted(g))
            return -ECANCELED;
        if (pthread_cond_timedwait(&rg->cv, &rg->mu, &ts) == ETIMEDOUT &&
            rg->generation == gen) {
            __atomic_store_n(&g->aborted, 1, __ATOMIC_SEQ_CST);
            pthread_cond_broadcast(&rg->cv);
            return -ETIMEDOUT;
        }
    }
    return 0;
}

void ref_all_reduce_sum(struct fp8_backend *be, struct fp8_tensor *x)
{
    struct fp8_backend_group *g = be->group;
    if (ref_failed(be) || !g || g->n_ranks == 1)
        return;
    if (!x || !x->data || x->dtype != FP8_DTYPE_F32) {
        ref_fail(be, -EINVAL, "all_reduce_sum: rank %d: x must be an f32 activation tensor",
                 be->tp_rank);
        return;
    }
    struct ref_group *rg = g->impl;
    int32_t me = be->tp_rank;
    int64_t n = fp8_tensor_numel(x);
    pthread_mutex_lock(&rg->mu);
    rg->src[me] = x->data;
    rg->n[me] = n;
    int rc = barrier(g, rg);
    if (rc == 0 && me == 0) {
        rg->mismatch = false;
        for (int32_t r = 1; r < g->n_ranks; r++)
            rg->mismatch |= rg->n[r] != n;
        if (!rg->mismatch && n > rg->cap) {
            float *p = realloc(rg->sum, (size_t)n * sizeof(float));
            if (!p) {
                rc = -ENOMEM;
                fp8_backend_group_abort(g);
            } else {
                rg->sum = p;
                rg->cap = n;
            }
        }
        for (int64_t i = 0; rc == 0 && !rg->mismatch && i < n; i++) {
            float s = rg->src[0][i];
            for (int32_t r = 1; r < g->n_ranks; r++)
                s += rg->src[r][i];
            rg->sum[i] = s;
        }
    }
    if (rc == 0)
        rc = barrier(g, rg);
    if (rc == 0 && !rg->mismatch)
        memcpy(x->data, rg->sum, (size_t)n * sizeof(float));
    bool mismatch = rg->mismatch;
    if (rc == 0)
        rc = barrier(g, rg);
    pthread_mutex_unlock(&rg->mu);
    if (rc == 0 && mismatch)
        ref_fail(be, -EINVAL, "all_reduce_sum: rank %d: the ranks' tensors differ in size", me);
    else if (rc < 0)
        ref_fail(be, rc, "all_reduce_sum: rank %d of %d: %s", me, g->n_ranks,
                 rc == -ETIMEDOUT ? "a peer did not arrive within the group's timeout"
                 : rc == -ENOMEM  ? "out of memory for the sum"
                                  : "the tensor-parallel group was aborted (another rank failed)");
}

int fp8_backend_ref_group_create(struct fp8_backend_group *g, struct fp8_err *err)
{
    struct ref_group *rg = calloc(1, sizeof(*rg));
    if (!rg)
        return fp8_err_set(err, -ENOMEM, "backend ref group: out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&rg->mu, NULL);
    pthread_cond_init(&rg->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->impl = rg;
    g->impl_free = ref_group_free;
    g->impl_wake = ref_group_wake;
    for (int32_t r = 0; r < g->n_ranks; r++) {
        int rc = fp8_backend_ref_create(&g->rank[r], err);
        if (rc < 0)
            return rc;
    }
    return 0;
}
