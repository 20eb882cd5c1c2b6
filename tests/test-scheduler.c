/* Scheduler and KV block manager, against the fake model of tests/fake-model.h: every
 * output must equal fake_reference() (the request computed alone, without paging), the
 * accounting invariants must hold after every step, and no block may leak. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "engine/kv_blocks.h"
#include "engine/offline.h"
#include "engine/scheduler.h"
#include "fake-model.h"

#define VOCAB 64
#define EOS 1
#define BYTES_PER_BLOCK 4096

struct rig {
    struct fake_model model;
    struct fp8_sched s;
    struct fp8_sched_params p;
};

static void rig_init(struct rig *g, int32_t n_blocks, int32_t block_size, int32_t max_model_len,
                     int32_t max_seqs, int32_t max_batched, bool caching)
{
    g->p = (struct fp8_sched_params){
        .max_num_seqs = max_seqs,
        .max_num_batched_tokens = max_batched,
        .max_model_len = max_model_len,
        .block_size = block_size,
        .kv_budget_bytes = (int64_t)n_blocks * BYTES_PER_BLOCK + BYTES_PER_BLOCK / 2,
        .kv_bytes_per_block = BYTES_PER_BLOCK,
        .prefix_caching = caching,
        .n_eos_ids = 1,
        .eos_ids = {EOS},
    };
    assert_int_equal(fake_init(&g->model, VOCAB, n_blocks, block_size, max_seqs), 0);
    struct fp8_model_iface mi = {.ctx = &g->model, .vocab = VOCAB, .forward = fake_forward};
    struct fp8_sampler_iface si = {.sample = fake_sample};
    struct fp8_err err = {{0}};
    int rc = fp8_sched_init(&g->s, &g->p, &mi, &si, &err);
    if (rc < 0)
        fail_msg("init: %s", err.msg);
    assert_int_equal(g->s.kv.n_blocks, n_blocks);
}

static void rig_free(struct rig *g)
{
    fp8_sched_free(&g->s);
    fake_free(&g->model);
}

static void check_now(struct fp8_sched *s)
{
    struct fp8_err err = {{0}};
    if (fp8_sched_check(s, &err) < 0)
        fail_msg("step %lld: %s", (long long)s->stats.n_steps, err.msg);
}

static void after_step(void *ctx, struct fp8_sched *s)
{
    (void)ctx;
    check_now(s);
}

static void step_ok(struct fp8_sched *s)
{
    struct fp8_err err = {{0}};
    int rc = fp8_sched_step(s, &err);
    if (rc < 0)
        fail_msg("step: %s", err.msg);
    check_now(s);
}

static struct fp8_req_params greedy(int32_t max_tokens)
{
    return (struct fp8_req_params){.max_tokens = max_tokens, .ignore_eos = true};
}

static void expect_reference(const struct rig *g, const struct fp8_request *q)
{
    int32_t want[512];
    enum fp8_req_finish fin;
    int32_t n = fake_reference(q->tokens, q->n_prompt, &q->params, g->p.eos_ids,
                               g->p.n_eos_ids, g->p.max_model_len, VOCAB, want, &fin);
    assert_true(n > 0);
    int32_t got = q->n_tokens - q->n_prompt;
    if (q->finish == FP8_REQ_FINISH_CANCELLED) {
        assert_true(got <= n);
    } else {
        assert_int_equal(q->finish, fin);
        assert_int_equal(got, n);
    }
    for (int32_t i = 0; i < got; i++)
        if (q->tokens[q->n_prompt + i] != want[i])
            fail_msg("request %llu token %d: %d, alone %d", (unsigned long long)q->id, (int)i,
                     (int)q->tokens[q->n_prompt + i], (int)want[i]);
}

/* ---- the random workload ----------------------------------------------------------------- */

static void random_workload(bool caching)
{
    enum { N = 200, BS = 4, MAX_LEN = 96, N_BLOCKS = 40 };
    struct rig g;
    rig_init(&g, N_BLOCKS, BS, MAX_LEN, 12, 24, caching);
    uint64_t rs = caching ? 0x5eed : 0xfeed;
    int32_t prefixes[3][20];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 20; i++)
            prefixes[k][i] = 2 + (int32_t)(splitmix64_next(&rs) % (VOCAB - 2));

    struct fp8_offline_req *reqs = calloc(N, sizeof(*reqs));
    assert_non_null(reqs);
    int n_cancel = 0;
    for (int i = 0; i < N; i++) {
        struct fp8_offline_req *r = &reqs[i];
        int32_t len = 1 + (int32_t)(splitmix64_next(&rs) % 60);
        r->tokens = malloc((size_t)len * sizeof(*r->tokens));
        assert_non_null(r->tokens);
        r->n_tokens = len;
        int shared = (int)(splitmix64_next(&rs) % 6); /* 0..2: starts with a shared prefix */
        for (int32_t t = 0; t < len; t++)
            r->tokens[t] = shared < 3 && t < 20 ? prefixes[shared][t]
                                                : 2 + (int32_t)(splitmix64_next(&rs) % (VOCAB - 2));
        uint64_t x = splitmix64_next(&rs);
        r->params = (struct fp8_req_params){
            .sampling = {.temperature = (x & 1) ? 0.8f : 0, .seed = splitmix64_next(&rs)},
            .max_tokens = 1 + (int32_t)((x >> 8) % 40),
            .priority = (x >> 16) % 10 == 0 ? -1 : (x >> 16) % 10 == 1 ? 1 : 0,
            .ignore_eos = (x >> 24) % 4 == 0,
            .n_stop_ids = (x >> 32) % 5 == 0,
            .stop_ids = {2},
        };
        r->arrival = (int64_t)((x >> 40) % 300);
        r->cancel_at = -1;
        if ((x >> 56) % 7 == 0) {
            r->cancel_at = r->arrival + (int64_t)(splitmix64_next(&rs) % 40);
            n_cancel++;
        }
    }
    struct fp8_err err = {{0}};
    struct fp8_offline_step_hook hook = {.after_step = after_step};
    assert_int_equal(fp8_offline_run(&g.s, reqs, N, NULL, &hook, &err), 0);

    int n_stop = 0, n_length = 0, n_cancelled = 0, n_mid_cancel = 0;
    for (int i = 0; i < N; i++) {
        const struct fp8_request *q = reqs[i].result;
        if (!q)
            fail_msg("request %d never finished: %s", i, reqs[i].error);
        assert_int_equal(q->usage.prompt_tokens, reqs[i].n_tokens);
        assert_memory_equal(q->tokens, reqs[i].tokens, (size_t)reqs[i].n_tokens * sizeof(int32_t));
        expect_reference(&g, q);
        n_stop += q->finish == FP8_REQ_FINISH_STOP;
        n_length += q->finish == FP8_REQ_FINISH_LENGTH;
        n_cancelled += q->finish == FP8_REQ_FINISH_CANCELLED;
        n_mid_cancel += q->finish == FP8_REQ_FINISH_CANCELLED && q->usage.completion_tokens > 0;
    }
    print_message("caching %d: %lld steps, %lld seq-steps, %lld preemptions, %lld cached tokens, "
                  "%lld evictions; %d stop, %d length, %d cancelled\n", caching,
                  (long long)g.s.stats.n_steps, (long long)g.s.stats.n_seq_steps,
                  (long long)g.s.stats.n_preemptions, (long long)g.s.stats.n_cached_tokens,
                  (long long)g.s.kv.n_evictions, n_stop, n_length, n_cancelled);
    /* The workload exercises what it claims to. */
    assert_true(n_stop > 10 && n_length > 10);
    assert_true(n_cancelled > 0 && n_cancelled <= n_cancel && n_mid_cancel > 0);
    assert_true(g.s.stats.n_preemptions > 10);
    if (caching) {
        assert_true(g.s.stats.n_cached_tokens > 0);
        assert_true(g.s.kv.n_evictions > 0);
        assert_int_equal(fp8_kv_blocks_n_available(&g.s.kv), N_BLOCKS);
    } else {
        assert_int_equal(g.s.kv.n_free, N_BLOCKS);
    }
    assert_int_equal(fp8_kv_blocks_bytes_used(&g.s.kv), 0);
    check_now(&g.s);
    for (int i = 0; i < N; i++)
        fp8_offline_req_free(&reqs[i]);
    free(reqs);
    rig_free(&g);
}

static void test_random_200_caching(void **state)
{
    (void)state;
    random_workload(true);
}

static void test_random_200_no_caching(void **state)
{
    (void)state;
    random_workload(false);
}

/* ---- prefix caching ---------------------------------------------------------------------- */

static struct fp8_request *run_one(struct rig *g, uint64_t id, const int32_t *prompt, int32_t n,
                                   struct fp8_req_params p)
{
    struct fp8_err err = {{0}};
    if (fp8_sched_submit(&g->s, id, prompt, n, &p, NULL, &err) < 0)
        fail_msg("submit: %s", err.msg);
    while (!fp8_sched_idle(&g->s))
        step_ok(&g->s);
    struct fp8_request *q = NULL;
    assert_true(fp8_sched_reap(&g->s, &q));
    assert_int_equal(q->id, id);
    expect_reference(g, q);
    return q;
}

static void test_prefix_cache_reuses_three_blocks(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 64, 4, 64, 4, 64, true);
    int32_t a[17], b[18];
    for (int i = 0; i < 12; i++)
        a[i] = b[i] = 10 + i; /* 3 blocks of 4 shared */
    for (int i = 12; i < 17; i++)
        a[i] = 30 + i;
    for (int i = 12; i < 18; i++)
        b[i] = 40 + i;

    struct fp8_request *qa = run_one(&g, 1, a, 17, greedy(5));
    assert_int_equal(qa->usage.cached_tokens, 0);
    assert_int_equal(qa->usage.prefill_computed, 17);

    struct fp8_request *qb = run_one(&g, 2, b, 18, greedy(5));
    assert_int_equal(qb->usage.cached_tokens, 12);
    assert_int_equal(qb->usage.prefill_computed, 6); /* only the suffix */
    assert_int_equal(g.s.stats.n_cached_tokens, 12);
    assert_int_equal(qb->kv.n_blocks, 0); /* released on finish */

    /* A prompt made only of cached blocks still computes its last block's tokens: the
     * last token must run to produce logits, and blocks are matched whole. */
    struct fp8_request *qc = run_one(&g, 3, a, 12, greedy(3));
    assert_int_equal(qc->usage.cached_tokens, 8);
    assert_int_equal(qc->usage.prefill_computed, 4);

    /* Same tokens at other positions are not a prefix: no hit. */
    int32_t d[16];
    d[0] = d[1] = d[2] = d[3] = 5;
    memcpy(d + 4, a, 12 * sizeof(*d));
    struct fp8_request *qd = run_one(&g, 4, d, 16, greedy(3));
    assert_int_equal(qd->usage.cached_tokens, 0);
    check_now(&g.s);
    fp8_request_free(qa);
    fp8_request_free(qb);
    fp8_request_free(qc);
    fp8_request_free(qd);
    rig_free(&g);
}

/* Two live requests share the cached prefix blocks (ref 2), then both finish. */
static void test_prefix_shared_while_running(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 64, 4, 64, 4, 64, true);
    int32_t a[14];
    for (int i = 0; i < 14; i++)
        a[i] = 3 + i;
    struct fp8_request *q0 = run_one(&g, 1, a, 14, greedy(2));
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(6);
    struct fp8_request *q1, *q2;
    assert_int_equal(fp8_sched_submit(&g.s, 2, a, 14, &p, &q1, &err), 0);
    a[13] = 60;
    assert_int_equal(fp8_sched_submit(&g.s, 3, a, 14, &p, &q2, &err), 0);
    step_ok(&g.s);
    assert_int_equal(q1->kv.blocks[0], q2->kv.blocks[0]);
    assert_int_equal(g.s.kv.ref[q1->kv.blocks[0]], 2);
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    assert_int_equal(q1->usage.cached_tokens, 12);
    assert_int_equal(q2->usage.cached_tokens, 12);
    expect_reference(&g, q1);
    expect_reference(&g, q2);
    assert_int_equal(fp8_kv_blocks_n_available(&g.s.kv), 64);
    fp8_request_free(q0);
    rig_free(&g);
}

/* ---- limits, cancel, preemption, priorities ---------------------------------------------- */

static void test_too_long_is_rejected(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 16, 4, 32, 4, 32, false);
    int32_t prompt[40] = {0};
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(4);
    assert_int_equal(fp8_sched_submit(&g.s, 1, prompt, 32, &p, NULL, &err), -E2BIG);
    assert_non_null(strstr(err.msg, "too_long: prompt of 32 tokens"));
    assert_non_null(strstr(err.msg, "max_model_len 32"));
    assert_true(fp8_sched_idle(&g.s));
    assert_int_equal(g.s.kv.n_free, 16);

    /* One token short of the limit: generates exactly one token, finish "length". */
    for (int i = 0; i < 31; i++)
        prompt[i] = 2 + i;
    struct fp8_request *q = run_one(&g, 2, prompt, 31, greedy(100));
    assert_int_equal(q->finish, FP8_REQ_FINISH_LENGTH);
    assert_int_equal(q->usage.completion_tokens, 1);
    assert_string_equal(fp8_req_finish_name(q->finish), "length");
    fp8_request_free(q);

    assert_int_equal(fp8_sched_submit(&g.s, 3, prompt, 0, &p, NULL, &err), -EINVAL);
    p.max_tokens = 0;
    assert_int_equal(fp8_sched_submit(&g.s, 3, prompt, 3, &p, NULL, &err), -EINVAL);
    p.max_tokens = 1;
    prompt[1] = VOCAB;
    assert_int_equal(fp8_sched_submit(&g.s, 3, prompt, 3, &p, NULL, &err), -EINVAL);
    assert_true(fp8_sched_idle(&g.s));
    rig_free(&g);
}

static void test_pool_too_small_for_max_model_len(void **state)
{
    (void)state;
    struct fp8_kv_blocks kv;
    struct fp8_err err = {{0}};
    struct fp8_kv_blocks_params kp = {.budget_bytes = 7 * 100, .bytes_per_block = 100,
                                      .block_size = 16, .max_model_len = 129};
    assert_int_equal(fp8_kv_blocks_init(&kv, &kp, &err), -ENOMEM);
    assert_non_null(strstr(err.msg, "needs 9 blocks"));
    kp.budget_bytes = 9 * 100 + 99;
    assert_int_equal(fp8_kv_blocks_init(&kv, &kp, &err), 0);
    assert_int_equal(kv.n_blocks, 9);
    assert_int_equal(kv.max_blocks_per_seq, 9);
    fp8_kv_blocks_free(&kv);
}

static void test_cancel_frees_blocks_at_once(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 32, 4, 64, 4, 64, false);
    int32_t prompt[21];
    for (int i = 0; i < 21; i++)
        prompt[i] = 2 + i;
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(30);
    assert_int_equal(fp8_sched_submit(&g.s, 7, prompt, 21, &p, NULL, &err), 0);
    assert_int_equal(fp8_sched_submit(&g.s, 8, prompt, 21, &p, NULL, &err), 0);
    step_ok(&g.s);
    step_ok(&g.s);
    /* 21 prompt tokens + 1 decoded: 22 positions in 6 blocks each. */
    assert_int_equal(g.s.kv.n_free, 32 - 12);
    assert_int_equal(fp8_kv_blocks_bytes_used(&g.s.kv), 12 * BYTES_PER_BLOCK);
    assert_int_equal(fp8_sched_cancel(&g.s, 7), 0);
    assert_int_equal(g.s.kv.n_free, 32 - 6);
    check_now(&g.s);
    assert_int_equal(fp8_sched_cancel(&g.s, 7), -ENOENT);
    struct fp8_request *q;
    assert_true(fp8_sched_reap(&g.s, &q));
    assert_int_equal(q->finish, FP8_REQ_FINISH_CANCELLED);
    assert_int_equal(q->usage.completion_tokens, 2);
    struct fp8_req_phases ph;
    fp8_req_phases_get(&q->timings, &ph);
    assert_int_equal(ph.prefill_steps, 1);
    assert_int_equal(ph.decode_steps, 1);
    expect_reference(&g, q); /* what it produced before the cancel is right */
    fp8_request_free(q);

    /* A waiting request is cancelled too, holding nothing. */
    assert_int_equal(fp8_sched_submit(&g.s, 9, prompt, 21, &p, NULL, &err), 0);
    assert_int_equal(fp8_sched_cancel(&g.s, 9), 0);
    assert_true(fp8_sched_reap(&g.s, &q));
    assert_int_equal(q->usage.completion_tokens, 0);
    fp8_request_free(q);
    assert_int_equal(fp8_sched_cancel(&g.s, 8), 0);
    assert_int_equal(g.s.kv.n_free, 32);
    rig_free(&g);
}

/* The pool holds exactly one max_model_len sequence: the second request is preempted when
 * the first grows, recomputes later, and both still match their reference. */
static void test_preempt_newest_and_recompute(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 8, 4, 32, 4, 32, false);
    int32_t a[10], b[10];
    for (int i = 0; i < 10; i++) {
        a[i] = 2 + i;
        b[i] = 20 + i;
    }
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(20);
    struct fp8_request *qa, *qb;
    assert_int_equal(fp8_sched_submit(&g.s, 1, a, 10, &p, &qa, &err), 0);
    assert_int_equal(fp8_sched_submit(&g.s, 2, b, 10, &p, &qb, &err), 0);
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    assert_true(qb->usage.n_preemptions >= 1);
    assert_int_equal(qa->usage.n_preemptions, 0);
    assert_true(qb->usage.prefill_computed > 10); /* recomputed prompt + generated */
    expect_reference(&g, qa);
    expect_reference(&g, qb);
    assert_int_equal(g.s.kv.n_free, 8);
    struct fp8_request *q;
    while (fp8_sched_reap(&g.s, &q))
        fp8_request_free(q);
    rig_free(&g);
}

/* A paused request keeps its blocks and its tokens but is left out of the batch; the other
 * request runs on; resumed, it ends with exactly its never-paused output. */
static void test_pause_resume(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 32, 4, 64, 4, 64, false);
    int32_t prompt[21];
    for (int i = 0; i < 21; i++)
        prompt[i] = 2 + i;
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(30);
    struct fp8_request *q7, *q8;
    assert_int_equal(fp8_sched_submit(&g.s, 7, prompt, 21, &p, &q7, &err), 0);
    assert_int_equal(fp8_sched_submit(&g.s, 8, prompt, 21, &p, &q8, &err), 0);
    step_ok(&g.s);
    step_ok(&g.s);
    assert_int_equal(fp8_sched_pause(&g.s, 7, true), 0);
    assert_int_equal(fp8_sched_pause(&g.s, 99, true), -ENOENT);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fp8_sched_step(&g.s, &err), 1); /* only 8 runs */
        check_now(&g.s);
    }
    assert_int_equal(q7->usage.completion_tokens, 2);
    assert_int_equal(q7->state, FP8_REQ_RUNNING);
    assert_int_equal(q7->kv.n_blocks, 6); /* 22 positions: its blocks stay */
    assert_int_equal(q8->usage.completion_tokens, 7);
    /* 8 ends while 7 is paused; then the scheduler has only paused work */
    while (q8->state != FP8_REQ_FINISHED)
        step_ok(&g.s);
    assert_true(fp8_sched_all_paused(&g.s));
    assert_false(fp8_sched_idle(&g.s));
    assert_int_equal(fp8_sched_step(&g.s, &err), 0);
    assert_int_equal(q7->usage.completion_tokens, 2);
    assert_int_equal(fp8_sched_pause(&g.s, 7, false), 0);
    assert_false(fp8_sched_all_paused(&g.s));
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    assert_int_equal(q7->finish, FP8_REQ_FINISH_LENGTH);
    expect_reference(&g, q7);
    expect_reference(&g, q8);
    assert_int_equal(q7->usage.n_preemptions, 0);
    assert_int_equal(g.s.kv.n_free, 32);
    struct fp8_request *q;
    while (fp8_sched_reap(&g.s, &q))
        fp8_request_free(q);

    /* Cancel while paused frees its blocks at once. */
    assert_int_equal(fp8_sched_submit(&g.s, 9, prompt, 21, &p, &q, &err), 0);
    step_ok(&g.s);
    assert_int_equal(fp8_sched_pause(&g.s, 9, true), 0);
    assert_int_equal(g.s.kv.n_free, 32 - 6);
    assert_int_equal(fp8_sched_cancel(&g.s, 9), 0);
    assert_int_equal(g.s.kv.n_free, 32);
    check_now(&g.s);
    assert_true(fp8_sched_reap(&g.s, &q));
    assert_int_equal(q->finish, FP8_REQ_FINISH_CANCELLED);
    fp8_request_free(q);
    rig_free(&g);
}

/* A paused waiting request is passed over by admission (one sequence at a time here), and
 * a paused running one is preempted like any other when blocks run out. */
static void test_pause_never_blocks_others(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 8, 4, 32, 1, 32, false);
    int32_t a[10], b[10];
    for (int i = 0; i < 10; i++) {
        a[i] = 2 + i;
        b[i] = 20 + i;
    }
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(20);
    struct fp8_request *qa, *qb;
    assert_int_equal(fp8_sched_submit(&g.s, 1, a, 10, &p, &qa, &err), 0);
    assert_int_equal(fp8_sched_submit(&g.s, 2, b, 10, &p, &qb, &err), 0);
    assert_int_equal(fp8_sched_pause(&g.s, 1, true), 0); /* first in line, paused */
    step_ok(&g.s);
    assert_int_equal(qb->state, FP8_REQ_RUNNING);
    assert_int_equal(qa->state, FP8_REQ_WAITING);
    assert_int_equal(qa->usage.completion_tokens, 0);
    while (qb->state != FP8_REQ_FINISHED)
        step_ok(&g.s);
    expect_reference(&g, qb);
    assert_int_equal(fp8_sched_pause(&g.s, 1, false), 0);
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    expect_reference(&g, qa);
    struct fp8_request *q;
    while (fp8_sched_reap(&g.s, &q))
        fp8_request_free(q);
    rig_free(&g);

    /* Two sequences, a pool for one at full length: b, paused, is preempted as a grows. */
    rig_init(&g, 8, 4, 32, 4, 32, false);
    assert_int_equal(fp8_sched_submit(&g.s, 1, a, 10, &p, &qa, &err), 0);
    assert_int_equal(fp8_sched_submit(&g.s, 2, b, 10, &p, &qb, &err), 0);
    step_ok(&g.s);
    assert_int_equal(qb->state, FP8_REQ_RUNNING);
    assert_int_equal(fp8_sched_pause(&g.s, 2, true), 0);
    while (qa->state != FP8_REQ_FINISHED)
        step_ok(&g.s);
    assert_int_equal(qb->state, FP8_REQ_WAITING);
    assert_int_equal(qb->kv.n_blocks, 0);
    assert_int_equal(qb->usage.n_preemptions, 1);
    assert_int_equal(qb->usage.completion_tokens, 1);
    assert_int_equal(fp8_sched_step(&g.s, &err), 0); /* paused and waiting: not admitted */
    assert_int_equal(fp8_sched_pause(&g.s, 2, false), 0);
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    expect_reference(&g, qa);
    expect_reference(&g, qb);
    assert_int_equal(g.s.kv.n_free, 8);
    while (fp8_sched_reap(&g.s, &q))
        fp8_request_free(q);
    rig_free(&g);
}

static void test_priority_then_fcfs(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 16, 4, 32, 1, 16, false);
    int32_t prompt[3] = {5, 6, 7};
    struct fp8_err err = {{0}};
    const int32_t prio[4] = {1, 0, -1, 0};
    for (int i = 0; i < 4; i++) {
        struct fp8_req_params p = greedy(2);
        p.priority = prio[i];
        assert_int_equal(fp8_sched_submit(&g.s, (uint64_t)i, prompt, 3, &p, NULL, &err), 0);
    }
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    const uint64_t order[4] = {2, 1, 3, 0};
    for (int i = 0; i < 4; i++) {
        struct fp8_request *q;
        assert_true(fp8_sched_reap(&g.s, &q));
        assert_int_equal(q->id, order[i]);
        fp8_request_free(q);
    }
    rig_free(&g);
}

/* A long prompt is prefilled in chunks of the token budget while a running request keeps
 * decoding one token every step. */
static void test_chunked_prefill_beside_decode(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 32, 4, 64, 4, 8, false);
    int32_t a[3] = {4, 5, 6}, b[30];
    for (int i = 0; i < 30; i++)
        b[i] = 2 + i;
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(12);
    struct fp8_request *qa, *qb;
    assert_int_equal(fp8_sched_submit(&g.s, 1, a, 3, &p, &qa, &err), 0);
    step_ok(&g.s);
    assert_int_equal(qa->usage.completion_tokens, 1);
    assert_int_equal(fp8_sched_submit(&g.s, 2, b, 30, &p, &qb, &err), 0);
    /* Budget 8: a decode (1) + 7 prompt tokens per step, 30 = 7 + 7 + 7 + 7 + 2. */
    const int32_t chunk[5] = {7, 7, 7, 7, 2};
    for (int k = 0; k < 5; k++) {
        step_ok(&g.s);
        assert_int_equal(g.s.batch.n_tokens, 1 + chunk[k]);
        assert_int_equal(g.s.batch.n_seqs, 2);
        assert_int_equal(qa->usage.completion_tokens, 2 + k);
    }
    assert_int_equal(qb->usage.completion_tokens, 1);
    while (!fp8_sched_idle(&g.s))
        step_ok(&g.s);
    struct fp8_req_phases ph;
    fp8_req_phases_get(&qb->timings, &ph);
    assert_int_equal(ph.prefill_steps, 5);
    assert_int_equal(ph.decode_steps, 11);
    assert_int_equal(ph.queue_steps, 0);
    expect_reference(&g, qa);
    expect_reference(&g, qb);
    struct fp8_request *q;
    while (fp8_sched_reap(&g.s, &q))
        fp8_request_free(q);
    rig_free(&g);
}

static void test_model_failure_finishes_batch_with_error(void **state)
{
    (void)state;
    struct rig g;
    rig_init(&g, 16, 4, 32, 4, 16, false);
    int32_t prompt[5] = {2, 3, 4, 5, 6};
    struct fp8_err err = {{0}};
    struct fp8_req_params p = greedy(8);
    assert_int_equal(fp8_sched_submit(&g.s, 1, prompt, 5, &p, NULL, &err), 0);
    step_ok(&g.s);
    g.model.fail_at_call = g.model.n_calls;
    assert_int_equal(fp8_sched_step(&g.s, &err), -EIO);
    assert_non_null(strstr(err.msg, "injected failure"));
    struct fp8_request *q;
    assert_true(fp8_sched_reap(&g.s, &q));
    assert_string_equal(fp8_req_finish_name(q->finish), "error");
    fp8_request_free(q);
    assert_int_equal(g.s.kv.n_free, 16);
    assert_true(fp8_sched_idle(&g.s));
    rig_free(&g);
}

/* ---- block manager alone ------------------------------------------------------------------ */

static void test_sliding_window_drop(void **state)
{
    (void)state;
    struct fp8_kv_blocks kv;
    struct fp8_kv_blocks_params kp = {.budget_bytes = 10, .bytes_per_block = 1,
                                      .block_size = 4, .max_model_len = 40};
    assert_int_equal(fp8_kv_blocks_init(&kv, &kp, NULL), 0);
    struct fp8_kv_seq seq;
    assert_int_equal(fp8_kv_seq_init(&seq, &kv), 0);
    assert_int_equal(fp8_kv_blocks_reserve(&kv, &seq, 20), 0);
    assert_int_equal(kv.n_free, 5);
    /* Window 10 at length 20: positions >= 10 are needed; blocks 0 and 1 (0..7) go. */
    assert_int_equal(fp8_kv_blocks_drop_before(&kv, &seq, 20 - 10), 2);
    assert_int_equal(kv.n_free, 7);
    assert_int_equal(seq.blocks[0], -1);
    assert_int_equal(seq.blocks[1], -1);
    assert_true(seq.blocks[2] >= 0);
    const struct fp8_kv_seq *seqs[1] = {&seq};
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 1, NULL), 0);
    assert_int_equal(fp8_kv_blocks_drop_before(&kv, &seq, 10), 0);
    assert_int_equal(fp8_kv_blocks_reserve(&kv, &seq, 40), 0);
    assert_int_equal(fp8_kv_blocks_reserve(&kv, &seq, 41), -E2BIG);
    fp8_kv_blocks_release(&kv, &seq);
    assert_int_equal(kv.n_free, 10);
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 1, NULL), 0);
    fp8_kv_seq_free(&seq);
    fp8_kv_blocks_free(&kv);
}

/* The check catches a corrupted reference count and a leaked block. */
static void test_check_detects_corruption(void **state)
{
    (void)state;
    struct fp8_kv_blocks kv;
    struct fp8_kv_blocks_params kp = {.budget_bytes = 8, .bytes_per_block = 1,
                                      .block_size = 4, .max_model_len = 16};
    assert_int_equal(fp8_kv_blocks_init(&kv, &kp, NULL), 0);
    struct fp8_kv_seq seq;
    assert_int_equal(fp8_kv_seq_init(&seq, &kv), 0);
    assert_int_equal(fp8_kv_blocks_reserve(&kv, &seq, 9), 0);
    const struct fp8_kv_seq *seqs[1] = {&seq};
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 1, &err), 0);
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 0, &err), -EFAULT);
    assert_non_null(strstr(err.msg, "tables hold it"));
    seq.n_blocks--; /* the table forgets its last block: a leak */
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 1, &err), -EFAULT);
    seq.n_blocks++;
    kv.n_free--; /* a free block drops off the list */
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 1, &err), -EFAULT);
    assert_non_null(strstr(err.msg, "leaked"));
    kv.n_free++;
    fp8_kv_blocks_release(&kv, &seq);
    assert_int_equal(fp8_kv_blocks_check(&kv, seqs, 1, &err), 0);
    fp8_kv_seq_free(&seq);
    fp8_kv_blocks_free(&kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_200_caching),
        cmocka_unit_test(test_random_200_no_caching),
        cmocka_unit_test(test_prefix_cache_reuses_three_blocks),
        cmocka_unit_test(test_prefix_shared_while_running),
        cmocka_unit_test(test_too_long_is_rejected),
        cmocka_unit_test(test_pool_too_small_for_max_model_len),
        cmocka_unit_test(test_cancel_frees_blocks_at_once),
        cmocka_unit_test(test_preempt_newest_and_recompute),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_pause_never_blocks_others),
        cmocka_unit_test(test_priority_then_fcfs),
        cmocka_unit_test(test_chunked_prefill_beside_decode),
        cmocka_unit_test(test_model_failure_finishes_batch_with_error),
        cmocka_unit_test(test_sliding_window_drop),
        cmocka_unit_test(test_check_detects_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
