/* The scheduler on the ref backend with tiny real checkpoints (tests/golden/models): for a
 * dense Qwen3 and a Gemma3 with sliding-window layers (window 8), 200 random requests
 * (lengths, sampling parameters, seeds, arrival steps, cancellations) through a KV pool
 * small enough to force preemption, each output identical to the same request run alone
 * by a plain loop over fp8_model_forward (whole prompt, then one token at a time,
 * contiguous blocks: no scheduler, no paging decisions, no prefix cache). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "kernels/kernels.h"

#define N_REQ 200
#define MAX_LEN 64

/* The request alone: prefill the prompt in one batch, then decode token by token; finish
 * on EOS (unless ignore_eos), a stop id, max_tokens or max_model_len. Returns the number of
 * generated tokens. */
static int32_t run_alone(struct fp8_engine *e, const int32_t *prompt, int32_t n_prompt,
                         const struct fp8_req_params *rp, int32_t *out,
                         enum fp8_req_finish *finish)
{
    const struct fp8_sched_params *sp = &e->sched.params;
    int32_t bs = sp->block_size, mb = e->sched.kv.max_blocks_per_seq;
    int32_t tokens[MAX_LEN], pos[MAX_LEN], slots[MAX_LEN], table[MAX_LEN];
    for (int32_t i = 0; i < mb; i++)
        table[i] = i;
    memcpy(tokens, prompt, (size_t)n_prompt * sizeof(*tokens));
    struct fp8_sampling_params p = fp8_engine_sampling_params(rp);
    int32_t n = n_prompt, done = 0, n_out = 0;
    for (;;) {
        int32_t k = n - done;
        for (int32_t i = 0; i < k; i++) {
            pos[i] = done + i;
            slots[i] = done + i; /* blocks 0, 1, 2, ...: slot = position */
        }
        int32_t start[2] = {0, k}, len = n;
        uint8_t want = 1;
        struct fp8_batch b = {.n_tokens = k, .tokens = tokens + done, .positions = pos,
                              .slots = slots, .n_seqs = 1, .seq_start = start,
                              .seq_len = &len, .block_table = table,
                              .max_blocks_per_seq = mb, .block_size = bs,
                              .want_logits = &want};
        struct fp8_err err = {{0}};
        struct fp8_sample_row row;
        int32_t pen[MAX_LEN], t = -1;
        fp8_sample_row_fill(&row, &p, (uint32_t)n_out, tokens, n, n_prompt,
                            e->sched.model.vocab, e->seen, pen, 0);
        if (fp8_model_forward_sample(e->model, &b, &row, pen, &t, &err) < 0)
            fail_msg("alone: %s", err.msg);
        done = n;
        out[n_out++] = t;
        tokens[n++] = t;
        bool stop = false;
        for (int32_t i = 0; i < sp->n_eos_ids && !rp->ignore_eos; i++)
            stop |= t == sp->eos_ids[i];
        for (int32_t i = 0; i < rp->n_stop_ids; i++)
            stop |= t == rp->stop_ids[i];
        if (stop || n_out == rp->max_tokens || n == sp->max_model_len) {
            *finish = stop ? FP8_REQ_FINISH_STOP : FP8_REQ_FINISH_LENGTH;
            return n_out;
        }
    }
}

static void check_step(void *ctx, struct fp8_sched *s)
{
    (void)ctx;
    struct fp8_err err = {{0}};
    if (fp8_sched_check(s, &err) < 0)
        fail_msg("step %lld: %s", (long long)s->stats.n_steps, err.msg);
}

static void random_requests(const char *model, uint64_t seed)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/tests/golden/models/%s", FP8D_SOURCE_DIR, model);
    struct fp8_backend *be = NULL;
    struct fp8_err err = {{0}};
    if (fp8_backend_create("ref", &be, &err) < 0)
        fail_msg("backend: %s", err.msg);
    struct fp8_engine_params ep = fp8_engine_params_default();
    /* bf16 weights only for speed (the ref backend's e4m3 decode is per element); the KV
     * cache stays e4m3, the default, whose per-token scales the prefix cache relies on. */
    ep.weight_dtype = FP8_DTYPE_BF16;
    ep.block_size = 4;
    ep.max_model_len = MAX_LEN;
    ep.max_num_seqs = 8;
    ep.max_num_batched_tokens = 40; /* the longest prompt, so run_alone fits one step */
    /* 24 blocks: one 64-token sequence needs 16; eight running ones need far more. */
    struct fp8_engine e;
    {
        struct fp8_model_config *cfg = malloc(sizeof(*cfg));
        assert_non_null(cfg);
        if (fp8_model_config_load(dir, cfg, &err) < 0)
            fail_msg("%s: %s", model, err.msg);
        struct fp8_kv_cache_desc one = fp8_model_kv_desc(cfg, ep.kv_dtype, ep.block_size, 1);
        ep.kv_budget_bytes = 24 * fp8_kv_block_bytes(&one);
        free(cfg);
    }
    if (fp8_engine_load(&e, dir, be, &ep, &err) < 0)
        fail_msg("%s: %s", model, err.msg);
    int32_t vocab = e.sched.model.vocab;

    uint64_t rs = seed;
    int32_t prefix[12];
    for (int i = 0; i < 12; i++)
        prefix[i] = 3 + (int32_t)(splitmix64_next(&rs) % (uint64_t)(vocab - 3));
    struct fp8_offline_req *reqs = calloc(N_REQ, sizeof(*reqs));
    int32_t (*want)[MAX_LEN] = calloc(N_REQ, sizeof(*want));
    int32_t *n_want = calloc(N_REQ, sizeof(*n_want));
    enum fp8_req_finish *fin = calloc(N_REQ, sizeof(*fin));
    assert_true(reqs && want && n_want && fin);
    for (int i = 0; i < N_REQ; i++) {
        struct fp8_offline_req *r = &reqs[i];
        uint64_t x = splitmix64_next(&rs);
        r->n_tokens = 1 + (int32_t)(x % 40);
        r->tokens = malloc((size_t)r->n_tokens * sizeof(*r->tokens));
        assert_non_null(r->tokens);
        for (int32_t t = 0; t < r->n_tokens; t++)
            r->tokens[t] = (x >> 8) % 3 == 0 && t < 12
                               ? prefix[t]
                               : 3 + (int32_t)(splitmix64_next(&rs) % (uint64_t)(vocab - 3));
        r->params = (struct fp8_req_params){
            .sampling = {.temperature = (x >> 12) % 3 ? 0.9f : 0, .top_p = 1,
                         .top_k = (x >> 16) % 2 ? 20 : 0, .repetition_penalty = 1,
                         .seed = splitmix64_next(&rs)},
            .max_tokens = 1 + (int32_t)((x >> 20) % 32),
            .ignore_eos = (x >> 28) % 2,
        };
        r->arrival = (int64_t)((x >> 32) % 120);
        r->cancel_at = (x >> 48) % 8 == 0 ? r->arrival + (int64_t)((x >> 52) % 20) : -1;
        n_want[i] = run_alone(&e, r->tokens, r->n_tokens, &r->params, want[i], &fin[i]);
    }

    struct fp8_offline_step_hook hook = {.after_step = check_step};
    assert_int_equal(fp8_offline_run(&e.sched, reqs, N_REQ, NULL, &hook, &err), 0);
    int n_cancelled = 0;
    for (int i = 0; i < N_REQ; i++) {
        const struct fp8_request *q = reqs[i].result;
        if (!q)
            fail_msg("%s request %d: %s", model, i, reqs[i].error);
        int32_t got = q->n_tokens - q->n_prompt;
        if (q->finish == FP8_REQ_FINISH_CANCELLED) {
            n_cancelled++;
            assert_true(got <= n_want[i]);
        } else {
            assert_int_equal(q->finish, fin[i]);
            assert_int_equal(got, n_want[i]);
        }
        for (int32_t k = 0; k < got; k++)
            if (q->tokens[q->n_prompt + k] != want[i][k])
                fail_msg("%s request %d token %d: %d, alone %d", model, i, (int)k,
                         (int)q->tokens[q->n_prompt + k], (int)want[i][k]);
    }
    print_message("%s: %lld steps, %lld preemptions, %lld cached tokens, %d cancelled\n",
                  model, (long long)e.sched.stats.n_steps, (long long)e.sched.stats.n_preemptions,
                  (long long)e.sched.stats.n_cached_tokens, n_cancelled);
    assert_true(e.sched.stats.n_preemptions > 0);
    assert_true(e.sched.stats.n_cached_tokens > 0);
    assert_true(n_cancelled > 0);
    assert_int_equal(fp8_kv_blocks_n_available(&e.sched.kv), e.sched.kv.n_blocks);
    for (int i = 0; i < N_REQ; i++)
        fp8_offline_req_free(&reqs[i]);
    free(reqs);
    free(want);
    free(n_want);
    free(fin);
    fp8_engine_free(&e);
    fp8_backend_free(be);
}

static void test_qwen3_random_200(void **state)
{
    (void)state;
    random_requests("qwen3-tiny", 1);
}

static void test_gemma3_random_200(void **state)
{
    (void)state;
    random_requests("gemma3-tiny", 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_random_200),
        cmocka_unit_test(test_gemma3_random_200),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
