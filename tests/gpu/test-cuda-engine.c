/* The engine on the cuda backend (engine/engine.c over kernels/cuda/backend_cuda.cu):
 *
 * - Decode graphs are captured at init, one per batch-size bucket (8 sequences: 8, 4, 2,
 *   1), and a serving run whose decode batches take every size from 1 to 8 (requests
 *   arriving and finishing at different steps, prefills mixed in) captures none after
 *   that (the backend's capture counter), while its outputs, greedy and seeded-sampled
 *   (some with repetition and presence penalties; in graph mode the draws run inside the
 *   graphs), equal the same run with --enforce-eager token for token.
 * - Memory accounting: the backend's weight and KV classes equal the bytes computed here
 *   from the config by hand, and everything it counts fits in what cudaMemGetInfo says
 *   the device uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "kernels/cuda/backend_cuda.h"

#define N_REQ 14
#define MAX_OUT 40

static const char *golden_root(void)
{
    const char *e = getenv("FP8D_GOLDEN_DIR");
    return e ? e : FP8D_SOURCE_DIR "/tests/golden/models";
}

static struct fp8_backend *cuda(bool eager)
{
    struct fp8_backend *be = NULL;
    struct fp8_err err = {{0}};
    if (fp8_backend_create("cuda", &be, &err) < 0) {
        printf("test-cuda-engine: %s\n", err.msg);
        return NULL;
    }
    be->enforce_eager = eager;
    return be;
}

static void engine_open(struct fp8_engine *e, struct fp8_backend *be)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/qwen3-tiny", golden_root());
    struct fp8_engine_params p = fp8_engine_params_default();
    p.max_num_seqs = 8;
    p.max_num_batched_tokens = 64;
    p.max_model_len = 64;
    struct fp8_err err = {{0}};
    if (fp8_engine_load(e, dir, be, &p, &err) < 0)
        fail_msg("engine: %s", err.msg);
}

/* N_REQ requests (prompt 3..17 tokens, 6..MAX_OUT new ones, every third greedy, the
 * others temperature 0.8 / top-k 40 / top-p 0.9 with their own seeds, every third of all
 * with repetition penalty 1.3 and presence penalty 0.5), submitted two per
 * step from step 0; out[i] gets request i's tokens. Records which decode batch sizes ran. */
static void serve(struct fp8_engine *e, int32_t (*out)[MAX_OUT], int32_t *n_out,
                  bool *sizes_seen)
{
    struct fp8_err err = {{0}};
    int32_t vocab = e->sched.model.vocab;
    int submitted = 0;
    for (int64_t step = 0; step < 2000 && (submitted < N_REQ || !fp8_sched_idle(&e->sched));
         step++) {
        for (int k = 0; k < 2 && submitted < N_REQ; k++, submitted++) {
            int i = submitted;
            int32_t prompt[17], n = 3 + (i * 5) % 15;
            for (int32_t t = 0; t < n; t++)
                prompt[t] = 3 + (i * 31 + t * 7) % (vocab - 3);
            struct fp8_req_params rp = {
                .sampling = {.temperature = i % 3 ? 0.8f : 0.0f, .top_p = i % 3 ? 0.9f : 1.0f,
                             .top_k = i % 3 ? 40 : 0,
                             .repetition_penalty = i % 3 == 2 ? 1.3f : 1.0f,
                             .presence_penalty = i % 3 == 2 ? 0.5f : 0.0f,
                             .seed = 1000 + (uint64_t)i},
                .max_tokens = 6 + (i * 11) % (MAX_OUT - 6),
                .ignore_eos = true,
            };
            if (fp8_sched_submit(&e->sched, (uint64_t)i, prompt, n, &rp, NULL, &err) < 0)
                fail_msg("submit %d: %s", i, err.msg);
        }
        if (fp8_sched_step(&e->sched, &err) < 0)
            fail_msg("step %lld: %s", (long long)step, err.msg);
        const struct fp8_batch *b = &e->sched.batch;
        if (b->n_tokens == b->n_seqs && b->n_seqs <= 8)
            sizes_seen[b->n_seqs] = true;
        struct fp8_request *r;
        while (fp8_sched_reap(&e->sched, &r)) {
            assert_true(r->id < N_REQ);
            assert_int_equal(r->finish, FP8_REQ_FINISH_LENGTH);
            n_out[r->id] = r->n_tokens - r->n_prompt;
            memcpy(out[r->id], r->tokens + r->n_prompt, (size_t)n_out[r->id] * sizeof(int32_t));
            fp8_request_free(r);
        }
    }
    assert_true(fp8_sched_idle(&e->sched));
}

static void test_graphs_captured_at_init_only(void **state)
{
    (void)state;
    struct fp8_backend *gb = cuda(false), *eb = cuda(true);
    if (!gb || !eb)
        skip();
    struct fp8_engine g, ea;
    engine_open(&g, gb);
    printf("warm-up: %d buckets (", g.warmup.n_buckets);
    for (int i = 0; i < g.warmup.n_buckets; i++)
        printf("%s%d", i ? "," : "", g.warmup.buckets[i]);
    printf(") captured in %.3f s, %lld graphs\n", g.warmup.seconds,
           (long long)g.warmup.n_captures);
    assert_true(g.warmed);
    assert_int_equal(g.warmup.n_buckets, 4);
    assert_int_equal(g.warmup.buckets[0], 8);
    assert_int_equal(g.warmup.buckets[3], 1);
    assert_int_equal(g.warmup.n_captures, 4);
    assert_int_equal(gb->n_graph_captures, 4);
    engine_open(&ea, eb);
    assert_false(ea.warmed);

    static int32_t og[N_REQ][MAX_OUT], oe[N_REQ][MAX_OUT];
    int32_t ng[N_REQ] = {0}, ne[N_REQ] = {0};
    bool seen_g[9] = {0}, seen_e[9] = {0};
    serve(&g, og, ng, seen_g);
    serve(&ea, oe, ne, seen_e);
    int sizes = 0;
    for (int s = 1; s <= 8; s++)
        sizes += seen_g[s];
    printf("serving: decode batch sizes seen %d of 8; graph captures after warm-up: %lld; "
           "eager captures: %lld\n", sizes, (long long)(gb->n_graph_captures - 4),
           (long long)eb->n_graph_captures);
    assert_true(sizes >= 6);
    assert_int_equal(gb->n_graph_captures, 4);
    assert_int_equal(eb->n_graph_captures, 0);
    for (int i = 0; i < N_REQ; i++) {
        assert_int_equal(ng[i], ne[i]);
        if (memcmp(og[i], oe[i], (size_t)ng[i] * sizeof(int32_t)))
            fail_msg("request %d: graph and eager outputs differ", i);
    }
    printf("outputs of %d requests (greedy and sampled): graphs == eager\n", N_REQ);
    fp8_engine_free(&g);
    fp8_engine_free(&ea);
    fp8_backend_free(gb);
    fp8_backend_free(eb);
}

static void test_memory_classes(void **state)
{
    (void)state;
    struct fp8_backend *be = cuda(false);
    if (!be)
        skip();
    struct fp8_engine e;
    engine_open(&e, be);
    const struct fp8_model_config *c = fp8_model_get_config(e.model);
    /* Qwen3 dense by hand: bf16 embeddings, e4m3 lm_head + row scales, fp32 norms and the
     * two RoPE frequency vectors; per layer fused qkv, o, gate_up, down (e4m3 + row scales)
     * and four norm vectors (input, q, k, post-attention). */
    size_t V = (size_t)c->vocab_size, D = (size_t)c->hidden_size, hd = (size_t)c->head_dim,
           qkv = ((size_t)c->n_heads + 2 * (size_t)c->n_kv_heads) * hd,
           o = (size_t)c->n_heads * hd, I = (size_t)c->intermediate_size;
    size_t layer = qkv * D + 4 * qkv + D * o + 4 * D + 2 * I * D + 4 * 2 * I + D * I + 4 * D +
                   4 * (D + hd + hd + D);
    size_t want_w = V * D * 2 + V * D + 4 * V + 4 * D + 2 * 4 * (hd / 2) +
                    (size_t)c->n_layers * layer;
    size_t want_kv = 2 * (size_t)c->n_layers * (size_t)e.sched.kv.n_blocks *
                     (size_t)e.sched.params.block_size * (size_t)c->n_kv_heads * (hd + 4);
    struct fp8_cuda_mem m;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_backend_cuda_mem(be, &m, &err), 0);
    size_t used = m.device_total - m.device_free,
           sum = m.weights + m.kv + m.activations + m.scratch + m.workspace + m.graphs;
    printf("memory: weights %zu (by hand %zu), kv %zu (by hand %zu), activations %zu, "
           "scratch %zu, workspace %zu, graphs %zu; device used %zu, unexplained %lld\n",
           m.weights, want_w, m.kv, want_kv, m.activations, m.scratch, m.workspace, m.graphs,
           used, (long long)used - (long long)sum);
    assert_int_equal(m.weights, want_w);
    assert_int_equal(m.kv, want_kv);
    assert_true(m.activations > 0 && m.scratch > 0 && m.workspace > 0);
    assert_true(sum <= used);
    fp8_engine_free(&e);
    /* Everything the model held is given back, class by class. */
    assert_int_equal(fp8_backend_cuda_mem(be, &m, &err), 0);
    assert_int_equal(m.weights, 0);
    assert_int_equal(m.kv, 0);
    assert_int_equal(m.activations, 0);
    fp8_backend_free(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graphs_captured_at_init_only),
        cmocka_unit_test(test_memory_classes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
