/* fp8_cuda_attn_decode against a float64 CPU attention over the same dequantized FP8 KV
 * cache (K = e4m3 * k_scale, V = e4m3 * v_scale per token and kv head), read through
 * shuffled block tables, on fresh random inputs per case: GQA groups of 1, 2, 4 and 8,
 * block sizes 16, 32, 7 and 5, sequences of 1 token up to max_seq_len, single-kernel and
 * split (flash-decoding) plans, the tensor-core kernel and the CUDA-core ones, head_dim
 * 128 and 256, and sliding windows (the reference attends to positions j >= len - window
 * only) smaller than, equal to and larger than the sequences, starting mid-block; the
 * keys before the window hold ordinary random values, so attending to any of them shows.
 *
 * Bounds: bf16 output of a softmax-weighted mean of V, exp2 approximate in fp32, and on
 * the tensor cores each weight p * v_scale rounded to bf16 (relative 2^-9): per element
 * |out - ref| <= 1e-2 |ref| + 2e-3 max|V|, ||out - ref|| / ||ref|| <= 4e-3. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/gpu/attn_ref.h"

#define L8 (1 + FP8_CUDA_ATTN_LANES8)
#define L16 (1 + FP8_CUDA_ATTN_LANES16)

struct attn_case {
    int n_seqs, n_heads, n_kv, block_size, max_seq_len;
    int want_split; /* 1: the plan must split, 0: it must not, -1: either */
    int variant;    /* 1 + enum fp8_cuda_attn_variant forced into the plan; 0: the plan's */
    int plan_len;   /* max_seq_len the plan is made for; 0: the case's (longer sequences
                       must still be attended in full) */
    int window;     /* sliding window; 0: none */
    int head_dim;   /* 0: 128 */
    int cluster;    /* 1: the plan must merge in a cluster on sm_90+, and give the same bytes
                       as the merge kernel (FP8_CUDA_ATTN_MMA) */
};

static void run_case(uint32_t id, const struct attn_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const int bs = c->block_size, G = c->n_heads / c->n_kv, HD = c->head_dim ? c->head_dim : 128;
    const int max_blocks = (c->max_seq_len + bs - 1) / bs;
    const int n_blocks = c->n_seqs * max_blocks + 3; /* a few never used */
    const size_t nq = (size_t)c->n_seqs * c->n_heads * HD;

    struct host_kv hk;
    host_kv_init(&hk, &st, n_blocks, bs, c->n_kv, HD);
    uint16_t *q = malloc(nq * 2), *out = malloc(nq * 2);
    int32_t *bt = malloc((size_t)c->n_seqs * max_blocks * 4), *len = malloc(c->n_seqs * 4);
    double *ref = malloc(nq * sizeof(double)), *atol = malloc(nq * sizeof(double));
    double *p = malloc((size_t)c->max_seq_len * sizeof(double));
    assert_non_null(q && out && bt && len && ref && atol && p);
    for (size_t i = 0; i < nq; i++)
        q[i] = gpu_rand_bf16(&st, -3.0f, 3.0f);
    /* blocks handed out in a shuffled order, none shared between sequences */
    for (int s = 0; s < c->n_seqs; s++) {
        /* the first sequence is always full length, the second a single token */
        len[s] = s == 0   ? c->max_seq_len
                 : s == 1 ? 1
                          : 1 + (int)(splitmix64_next(&st) % (uint64_t)c->max_seq_len);
        for (int b = 0; b < max_blocks; b++)
            bt[s * max_blocks + b] = b * bs < len[s] ? hk.perm[s * max_blocks + b] : -1;
    }

    const double sm_scale = 1.0 / sqrt((double)HD);
    for (int s = 0; s < c->n_seqs; s++) {
        const int lo = c->window > 0 && len[s] > c->window ? len[s] - c->window : 0;
        for (int h = 0; h < c->n_heads; h++) {
            const size_t row = ((size_t)s * c->n_heads + h) * HD;
            host_kv_attend(&hk, q + row, bt + s * max_blocks, h / G, lo, len[s], sm_scale, p,
                           ref + row);
            for (int e = 0; e < HD; e++)
                atol[row + e] = 2e-3 * hk.vmax;
        }
    }

    struct fp8_cuda_kv_cache kv = host_kv_upload(&hk);
    void *dq = gpu_upload(q, nq * 2), *dout = gpu_alloc(nq * 2);
    void *dbt = gpu_upload(bt, (size_t)c->n_seqs * max_blocks * 4);
    void *dlen = gpu_upload(len, c->n_seqs * 4);
    struct fp8_cuda_attn_plan plan;
    struct fp8_err err = {{0}};
    if (fp8_cuda_attn_decode_plan(&plan, c->n_seqs, c->n_heads, &kv,
                                  c->plan_len ? c->plan_len : c->max_seq_len, c->window,
                                  &err) < 0)
        fail_msg("%s", err.msg);
    if (c->variant)
        plan.variant = c->variant - 1;
    if (c->want_split >= 0 && (plan.n_splits > 1) != c->want_split)
        fail_msg("case %u: plan has %d splits, the case wants %s", id, plan.n_splits,
                 c->want_split ? "a split" : "none");
    void *ws = plan.workspace_bytes ? gpu_alloc(plan.workspace_bytes) : NULL;
    if (ws)
        gpu_poison(ws, plan.workspace_bytes);
    gpu_poison(dout, nq * 2);
    if (fp8_cuda_attn_decode(dout, dq, &kv, dbt, dlen, c->n_seqs, c->n_heads, max_blocks,
                             (float)sm_scale, &plan, ws, plan.workspace_bytes, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(out, dout, nq * 2);
    if (c->cluster) {
        struct fp8_cuda_device dev;
        if (fp8_cuda_device_get(&dev, &err) < 0)
            fail_msg("%s", err.msg);
        if (dev.cc_major >= 9 && plan.variant != FP8_CUDA_ATTN_MMA_CLUSTER)
            fail_msg("case %u: the plan did not pick the cluster merge (variant %d)", id,
                     plan.variant);
        if (plan.variant == FP8_CUDA_ATTN_MMA_CLUSTER) {
            struct fp8_cuda_attn_plan mp = plan;
            mp.variant = FP8_CUDA_ATTN_MMA;
            /* the pieces' partials: (n_seqs, n_heads, n_splits) x (head_dim outputs, max, sum) */
            mp.workspace_bytes = (size_t)c->n_seqs * c->n_heads * plan.n_splits * (HD + 2) * 4;
            uint16_t *out2 = malloc(nq * 2);
            void *ws2 = gpu_alloc(mp.workspace_bytes);
            assert_non_null(out2);
            gpu_poison(dout, nq * 2);
            if (fp8_cuda_attn_decode(dout, dq, &kv, dbt, dlen, c->n_seqs, c->n_heads, max_blocks,
                                     (float)sm_scale, &mp, ws2, mp.workspace_bytes, NULL,
                                     &err) < 0)
                fail_msg("%s", err.msg);
            gpu_download(out2, dout, nq * 2);
            assert_memory_equal(out, out2, nq * 2);
            fp8_cuda_free(ws2);
            free(out2);
        }
    }

    char what[160];
    snprintf(what, sizeof(what),
             "attn n_seqs=%d n_heads=%d n_kv=%d head_dim=%d block_size=%d max_seq_len=%d "
             "window=%d splits=%d variant=%d",
             c->n_seqs, c->n_heads, c->n_kv, HD, bs, c->max_seq_len, c->window, plan.n_splits,
             plan.variant);
    gpu_check_bf16(what, out, ref, atol, nq, 1e-2, 4e-3);

    host_kv_device_free(&kv);
    fp8_cuda_free(dq);
    fp8_cuda_free(dout);
    fp8_cuda_free(dbt);
    fp8_cuda_free(dlen);
    fp8_cuda_free(ws);
    host_kv_free(&hk);
    free(q);
    free(out);
    free(bt);
    free(len);
    free(ref);
    free(atol);
    free(p);
}

static void test_attn_split(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 32, 8, 16, 1000, 1, 0, 0, 0, 0, 0}, /* Qwen3-8B heads, batch 1: flash-decoding */
        {1, 32, 8, 16, 1000, 1, L8, 0, 0, 0, 0}, /* the same on the CUDA-core kernels */
        {1, 32, 8, 16, 1000, 1, L16, 0, 0, 0, 0},
        {2, 16, 8, 32, 777, 1, 0, 0, 0, 0, 0},  /* G = 2 */
        {2, 16, 8, 32, 777, 1, L16, 0, 0, 0, 0},
        {3, 8, 8, 7, 300, 1, 0, 0, 0, 0, 0},    /* G = 1, odd block size */
        {3, 8, 8, 7, 300, 1, L8, 0, 0, 0, 0},
        {2, 16, 2, 16, 513, 1, 0, 0, 0, 0, 0},  /* G = 8 */
        {2, 16, 2, 16, 513, 1, L8, 0, 0, 0, 0},
        {3, 32, 8, 16, 900, 1, 0, 300, 0, 0, 0}, /* sequences past the plan's max_seq_len */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(500 + (uint32_t)i, &cases[i]);
}

static void test_attn_single_pass(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {17, 32, 8, 16, 64, 0, 0, 0, 0, 0, 0}, /* short contexts: one piece per sequence */
        {17, 32, 8, 16, 64, 0, L8, 0, 0, 0, 0},
        {2, 4, 1, 16, 40, 0, 0, 0, 0, 0, 0},   /* G = 4, a single kv head */
        {5, 16, 2, 32, 50, -1, 0, 0, 0, 0, 0},
        {4, 8, 8, 16, 200, -1, L16, 0, 0, 0, 0},
        {4, 8, 8, 5, 19, -1, 0, 0, 0, 0, 0},    /* block size 5, less than one 16-token tile */
        /* sequences x kv heads fill the device: no split */
        {100, 32, 8, 16, 100, 0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(600 + (uint32_t)i, &cases[i]);
}

/* Gemma3's sliding layers: the pieces tile the window, not the sequence. */
static void test_attn_window(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        /* gemma3-27b heads (32 / 16): window 300 < 1000 tokens, starting at position 700
         * (mid-block); other sequences shorter than the window */
        {3, 32, 16, 16, 1000, 1, 0, 0, 300, 0, 0},
        {3, 32, 16, 16, 1000, 1, L8, 0, 300, 0, 0},
        {3, 32, 16, 16, 1000, 1, L16, 0, 300, 0, 0},
        {2, 32, 16, 16, 1000, -1, 0, 0, 1000, 0, 0}, /* window = the longest sequence */
        {2, 32, 16, 16, 1000, -1, 0, 0, 4096, 0, 0}, /* window past every sequence */
        {4, 16, 2, 7, 333, -1, 0, 0, 50, 0, 0},      /* odd blocks: 283 = 40 x 7 + 3 */
        {2, 8, 8, 16, 90, -1, 0, 0, 1, 0, 0},        /* only the query's own key */
        {20, 32, 16, 16, 200, 0, 0, 0, 37, 0, 0},    /* many sequences, no split */
        {3, 32, 16, 16, 900, 1, 0, 300, 200, 0, 0},  /* sequences past the plan's max_seq_len */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(700 + (uint32_t)i, &cases[i]);
}

/* head_dim 256 (Gemma3 1b: 4 heads / 1 kv head, 4b / 12b: 2 heads per kv head). */
static void test_attn_head_dim_256(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 4, 1, 16, 1000, 1, 0, 0, 512, 256, 0}, /* 1b, batch 1: window 512, split */
        {1, 4, 1, 16, 700, 1, 0, 0, 0, 256, 0},    /* 1b global layer */
        {2, 8, 4, 16, 300, -1, 0, 0, 0, 256, 0},
        {3, 16, 8, 5, 260, -1, 0, 0, 33, 256, 0},  /* window mid-block, odd blocks */
        {2, 8, 1, 32, 130, -1, 0, 0, 0, 256, 0},   /* G = 8 */
        {64, 16, 8, 16, 64, 0, 0, 0, 20, 256, 0},  /* many sequences, no split */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(800 + (uint32_t)i, &cases[i]);
}

/* Batch 1 with 2..8 pieces: on sm_90 the plan merges them in a thread-block cluster,
 * which must give the merge kernel's bytes (and the float64 reference's values). */
static void test_attn_cluster_merge(void **state)
{
    (void)state;
    static const struct attn_case cases[] = {
        {1, 32, 8, 16, 500, 1, 0, 0, 0, 0, 1},     /* Qwen3-8B: 8 pieces */
        {1, 32, 8, 16, 160, 1, 0, 512, 0, 0, 1},   /* 3 of the plan's 8 pieces hold tokens */
        {1, 32, 16, 16, 300, 1, 0, 0, 0, 256, 1},  /* Gemma3-27B: G = 2, head_dim 256 */
        {1, 16, 8, 5, 200, 1, 0, 0, 70, 0, 1},     /* a window, odd block size */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(900 + (uint32_t)i, &cases[i]);
}

/* The fused front (fp8_cuda_attn_decode_qk) against the two kernels it replaces,
 * fp8_cuda_qk_norm_rope_kv_write then fp8_cuda_attn_decode, from the same cache and
 * projection: the same output bytes and the same cache bytes after (the step's k and v
 * written alike, nothing else touched). One sequence (clusters of 3 of 8 pieces), three
 * with G = 2, 16 with the merge kernel, G = 8, and a padding token's slot (-1). */
static void run_qk_front(uint32_t id, int n_seqs, int n_heads, int n_kv, int max_seq_len,
                         int plan_len, int pad)
{
    uint64_t st = gpu_case_seed(id);
    const int bs = 16, HD = 128, max_blocks = (plan_len + bs - 1) / bs;
    const int n_blocks = n_seqs * max_blocks, heads = n_heads + 2 * n_kv;
    struct host_kv hk;
    host_kv_init(&hk, &st, n_blocks, bs, n_kv, HD);
    const size_t nq = (size_t)n_seqs * n_heads * HD, nqkv = (size_t)n_seqs * heads * HD;
    uint16_t *qkv = malloc(nqkv * 2), *out[2] = {malloc(nq * 2), malloc(nq * 2)};
    int32_t *bt = malloc((size_t)n_blocks * 4), *len = malloc(n_seqs * 4);
    int32_t *pos = malloc(n_seqs * 4), *slot = malloc(n_seqs * 4);
    float qw[128], kw[128], freq[64];
    assert_non_null(qkv && out[0] && out[1] && bt && len && pos && slot);
    for (size_t i = 0; i < nqkv; i++)
        qkv[i] = gpu_rand_bf16(&st, -3.0f, 3.0f);
    for (int i = 0; i < HD; i++) {
        qw[i] = gpu_urand(&st, 0.5f, 1.5f);
        kw[i] = gpu_urand(&st, 0.5f, 1.5f);
    }
    for (int i = 0; i < HD / 2; i++)
        freq[i] = powf(10000.0f, -2.0f * (float)i / (float)HD);
    for (int s = 0; s < n_seqs; s++) {
        len[s] = s == 0 ? max_seq_len : 1 + (int)(splitmix64_next(&st) % (uint64_t)max_seq_len);
        for (int b = 0; b < max_blocks; b++)
            bt[s * max_blocks + b] = hk.perm[s * max_blocks + b];
        pos[s] = len[s] - 1;
        slot[s] = pad && s == n_seqs - 1 ? -1
                                         : bt[s * max_blocks + pos[s] / bs] * bs + pos[s] % bs;
    }
    void *dqkv = gpu_upload(qkv, nqkv * 2), *dq = gpu_alloc(nq * 2), *dout = gpu_alloc(nq * 2);
    void *dbt = gpu_upload(bt, (size_t)n_blocks * 4), *dlen = gpu_upload(len, n_seqs * 4);
    void *dpos = gpu_upload(pos, n_seqs * 4), *dslot = gpu_upload(slot, n_seqs * 4);
    void *dqw = gpu_upload(qw, sizeof(qw)), *dkw = gpu_upload(kw, sizeof(kw));
    void *dfreq = gpu_upload(freq, sizeof(freq));
    struct fp8_cuda_kv_cache kv[2] = {host_kv_upload(&hk), host_kv_upload(&hk)};
    struct fp8_cuda_attn_plan plan;
    struct fp8_err err = {{0}};
    if (fp8_cuda_attn_decode_plan(&plan, n_seqs, n_heads, &kv[0], plan_len, 0, &err) < 0)
        fail_msg("%s", err.msg);
    void *ws = gpu_alloc(plan.workspace_bytes);
    const float sm = 0.08838834764831845f, eps = 1e-6f;
    const struct fp8_cuda_qk_front front = {dqkv, dqw, dkw, eps, 0, dfreq, 1.0f, dpos, dslot};
    gpu_poison(dout, nq * 2);
    if (fp8_cuda_qk_norm_rope_kv_write(dq, dqkv, dqw, dkw, eps, 0, dfreq, 1.0f, dpos, dslot,
                                       &kv[0], n_seqs, n_heads, NULL, &err) < 0 ||
        fp8_cuda_attn_decode(dout, dq, &kv[0], dbt, dlen, n_seqs, n_heads, max_blocks, sm, &plan,
                             ws, plan.workspace_bytes, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(out[0], dout, nq * 2);
    gpu_poison(dout, nq * 2);
    if (fp8_cuda_attn_decode_qk(dout, &front, &kv[1], dbt, dlen, n_seqs, n_heads, max_blocks, sm,
                                &plan, ws, plan.workspace_bytes, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(out[1], dout, nq * 2);
    assert_memory_equal(out[0], out[1], nq * 2);
    const size_t n_sc = (size_t)n_blocks * bs * n_kv, bytes = n_sc * HD;
    uint8_t *c[2] = {malloc(bytes), malloc(bytes)};
    float *sc[2] = {malloc(n_sc * 4), malloc(n_sc * 4)};
    assert_non_null(c[0] && c[1] && sc[0] && sc[1]);
    for (int kvv = 0; kvv < 2; kvv++) {
        for (int i = 0; i < 2; i++) {
            gpu_download(c[i], kvv ? kv[i].v : kv[i].k, bytes);
            gpu_download(sc[i], kvv ? kv[i].v_scale : kv[i].k_scale, n_sc * 4);
        }
        assert_memory_equal(c[0], c[1], bytes);
        assert_memory_equal(sc[0], sc[1], n_sc * 4);
    }
    /* and the step's token was written (the cache holds something new at its slot) */
    gpu_download(c[0], kv[0].k, bytes);
    assert_true(slot[0] >= 0 &&
                memcmp(c[0] + (size_t)slot[0] * n_kv * HD, hk.k + (size_t)slot[0] * n_kv * HD,
                       (size_t)n_kv * HD) != 0);
    for (int i = 0; i < 2; i++) {
        host_kv_device_free(&kv[i]);
        free(c[i]);
        free(sc[i]);
        free(out[i]);
    }
    void *dev[] = {dqkv, dq, dout, dbt, dlen, dpos, dslot, dqw, dkw, dfreq, ws};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
        fp8_cuda_free(dev[i]);
    host_kv_free(&hk);
    void *host[] = {qkv, bt, len, pos, slot};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++)
        free(host[i]);
}

static void test_attn_qk_front(void **state)
{
    (void)state;
    run_qk_front(950, 1, 32, 8, 160, 512, 0);
    run_qk_front(951, 3, 16, 8, 300, 300, 0);
    run_qk_front(952, 16, 32, 8, 100, 128, 1);
    run_qk_front(953, 2, 8, 1, 200, 256, 0);
}

static void test_attn_rejects_unsupported(void **state)
{
    (void)state;
    struct fp8_cuda_kv_cache kv = {.n_blocks = 4, .block_size = 16, .n_kv_heads = 8,
                                   .head_dim = 64};
    struct fp8_cuda_attn_plan plan;
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 100, 0, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "head_dim=64"));
    kv.head_dim = 128;
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 24, &kv, 100, 0, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "n_heads=24"));
    kv.n_kv_heads = 2;
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 100, 0, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "n_kv_heads=2"));
    kv.n_kv_heads = 8;
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 100, -1, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "window"));
    /* a window shorter than the capacity: the plan splits the window's span only */
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 4096, 128, &err), 0);
    assert_int_equal(plan.window, 128);
    assert_true(plan.n_splits > 1 && plan.n_splits * plan.split_tokens >= 128 &&
                (plan.n_splits - 1) * plan.split_tokens < 128);
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 4096, 0, &err), 0);
    assert_true(plan.n_splits > 1);
    /* a workspace smaller than the plan's is refused before anything runs */
    void *d = gpu_alloc(1 << 16);
    kv.k = kv.v = d;
    kv.k_scale = kv.v_scale = d;
    assert_int_equal(fp8_cuda_attn_decode(d, d, &kv, d, d, 1, 32, 256, 0.1f, &plan, d, 16, NULL,
                                          &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "workspace"));
    /* the cluster merge takes 2..8 pieces (this plan has more) */
    plan.variant = FP8_CUDA_ATTN_MMA_CLUSTER;
    assert_int_equal(fp8_cuda_attn_decode(d, d, &kv, d, d, 1, 32, 256, 0.1f, &plan, d, 1 << 16,
                                          NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "cluster variant"));
    plan.variant = 7;
    assert_int_equal(fp8_cuda_attn_decode(d, d, &kv, d, d, 1, 32, 256, 0.1f, &plan, d, 1 << 16,
                                          NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "variant=7"));
    /* head_dim 256 runs on the tensor-core variant only */
    kv.head_dim = 256;
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 100, 0, &err), 0);
    plan.variant = FP8_CUDA_ATTN_LANES8;
    assert_int_equal(fp8_cuda_attn_decode(d, d, &kv, d, d, 1, 32, 256, 0.1f, &plan, d, 1 << 16,
                                          NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "head_dim 128 only"));
    /* the fused q/k-norm front: no front, head_dim 256, a CUDA-core variant, bad eps */
    struct fp8_cuda_qk_front front = {d, d, d, 1e-6f, 0, d, 1.0f, d, d};
    plan.variant = FP8_CUDA_ATTN_MMA;
    assert_int_equal(fp8_cuda_attn_decode_qk(d, NULL, &kv, d, d, 1, 32, 256, 0.1f, &plan, d,
                                             1 << 16, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "NULL front"));
    assert_int_equal(fp8_cuda_attn_decode_qk(d, &front, &kv, d, d, 1, 32, 256, 0.1f, &plan, d,
                                             1 << 16, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "head_dim=256"));
    kv.head_dim = 128;
    assert_int_equal(fp8_cuda_attn_decode_plan(&plan, 1, 32, &kv, 100, 0, &err), 0);
    plan.variant = FP8_CUDA_ATTN_LANES16;
    assert_int_equal(fp8_cuda_attn_decode_qk(d, &front, &kv, d, d, 1, 32, 256, 0.1f, &plan, d,
                                             1 << 16, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "fused q/k-norm front"));
    plan.variant = FP8_CUDA_ATTN_MMA;
    front.eps = -1.0f;
    assert_int_equal(fp8_cuda_attn_decode_qk(d, &front, &kv, d, d, 1, 32, 256, 0.1f, &plan, d,
                                             1 << 16, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "eps >= 0"));
    fp8_cuda_free(d);
}

int main(void)
{
    int present = gpu_present();
    if (present <= 0)
        return present < 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attn_split),
        cmocka_unit_test(test_attn_single_pass),
        cmocka_unit_test(test_attn_window),
        cmocka_unit_test(test_attn_head_dim_256),
        cmocka_unit_test(test_attn_cluster_merge),
        cmocka_unit_test(test_attn_qk_front),
        cmocka_unit_test(test_attn_rejects_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
