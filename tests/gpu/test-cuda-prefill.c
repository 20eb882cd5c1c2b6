/* fp8_cuda_attn_prefill (causal flash attention over the paged FP8 KV cache) against a
 * float64 CPU attention over the same stored cache bytes (K = e4m3 * k_scale, V = e4m3 *
 * v_scale per slot and kv head), read through shuffled block tables, on fresh random
 * inputs per case. Each step is several sequences, each a chunk of consecutive positions
 * after `before` positions already cached (0: a first chunk; > 0: a chunk starting
 * mid-sequence; a 1-token chunk at the end: a decode token in a mixed step), with odd
 * chunk lengths, GQA groups of 1, 2, 3, 4, 8 and 16, block sizes 16, 7 and 5, and
 * sliding windows on and off.
 *
 * Bounds (as the decode kernel's test): bf16 output of a softmax-weighted mean of V, exp2
 * approximate in fp32, and each weight p * v_scale rounded to bf16 on the tensor cores
 * (relative 2^-9): per element |out - ref| <= 1e-2 |ref| + 2e-3 max|V|,
 * ||out - ref|| / ||ref|| <= 4e-3. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/gpu/attn_ref.h"

#define HD 128
#define MAX_SEQS 8

struct prefill_case {
    int n_heads, n_kv, block_size, window;
    int n_seqs;
    int before[MAX_SEQS], chunk[MAX_SEQS];
};

static void run_case(uint32_t id, const struct prefill_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const int bs = c->block_size, G = c->n_heads / c->n_kv;
    int n_tok = 0, max_len = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        n_tok += c->chunk[s];
        const int len = c->before[s] + c->chunk[s];
        max_len = len > max_len ? len : max_len;
    }
    const int max_blocks = (max_len + bs - 1) / bs + 1; /* one spare column, -1 */
    const int n_blocks = c->n_seqs * max_blocks + 3;
    const size_t nq = (size_t)n_tok * c->n_heads * HD;

    struct host_kv hk;
    host_kv_init(&hk, &st, n_blocks, bs, c->n_kv, HD);
    uint16_t *q = malloc(nq * 2), *out = malloc(nq * 2);
    int32_t *bt = malloc((size_t)c->n_seqs * max_blocks * 4);
    int32_t *pos = malloc(n_tok * 4), *tseq = malloc(n_tok * 4);
    double *ref = malloc(nq * sizeof(double)), *atol = malloc(nq * sizeof(double));
    double *p = malloc((size_t)max_len * sizeof(double));
    assert_non_null(q && out && bt && pos && tseq && ref && atol && p);
    for (size_t i = 0; i < nq; i++)
        q[i] = gpu_rand_bf16(&st, -3.0f, 3.0f);
    for (int s = 0, t = 0; s < c->n_seqs; s++) {
        const int len = c->before[s] + c->chunk[s];
        for (int b = 0; b < max_blocks; b++)
            bt[s * max_blocks + b] = b * bs < len ? hk.perm[s * max_blocks + b] : -1;
        for (int i = 0; i < c->chunk[s]; i++, t++) {
            pos[t] = c->before[s] + i;
            tseq[t] = s;
        }
    }

    const double sm_scale = 1.0 / sqrt((double)HD);
    for (int t = 0; t < n_tok; t++) {
        const int s = tseq[t];
        const int lo = c->window > 0 && pos[t] - c->window + 1 > 0 ? pos[t] - c->window + 1 : 0;
        for (int h = 0; h < c->n_heads; h++) {
            const size_t row = ((size_t)t * c->n_heads + h) * HD;
            host_kv_attend(&hk, q + row, bt + s * max_blocks, h / G, lo, pos[t] + 1, sm_scale,
                           p, ref + row);
            for (int e = 0; e < HD; e++)
                atol[row + e] = 2e-3 * hk.vmax;
        }
    }

    struct fp8_cuda_kv_cache kv = host_kv_upload(&hk);
    void *dq = gpu_upload(q, nq * 2), *dout = gpu_alloc(nq * 2);
    void *dbt = gpu_upload(bt, (size_t)c->n_seqs * max_blocks * 4);
    void *dpos = gpu_upload(pos, n_tok * 4), *dseq = gpu_upload(tseq, n_tok * 4);
    const size_t wsb = fp8_cuda_attn_prefill_workspace(n_tok, c->n_seqs, c->n_heads, c->n_kv);
    assert_true(wsb > 0);
    void *ws = gpu_alloc(wsb);
    gpu_poison(ws, wsb);
    gpu_poison(dout, nq * 2);
    struct fp8_err err = {{0}};
    if (fp8_cuda_attn_prefill(dout, dq, &kv, dpos, dseq, dbt, n_tok, c->n_seqs, c->n_heads,
                              max_blocks, (float)sm_scale, c->window, ws, wsb, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(out, dout, nq * 2);

    char what[200];
    int n = snprintf(what, sizeof(what), "prefill heads=%d/%d block=%d window=%d chunks",
                     c->n_heads, c->n_kv, bs, c->window);
    for (int s = 0; s < c->n_seqs && n < (int)sizeof(what) - 16; s++)
        n += snprintf(what + n, sizeof(what) - n, " %d+%d", c->before[s], c->chunk[s]);
    gpu_check_bf16(what, out, ref, atol, nq, 1e-2, 4e-3);

    host_kv_device_free(&kv);
    fp8_cuda_free(dq);
    fp8_cuda_free(dout);
    fp8_cuda_free(dbt);
    fp8_cuda_free(dpos);
    fp8_cuda_free(dseq);
    fp8_cuda_free(ws);
    host_kv_free(&hk);
    free(q);
    free(out);
    free(bt);
    free(pos);
    free(tseq);
    free(ref);
    free(atol);
    free(p);
}

static void test_prefill_causal(void **state)
{
    (void)state;
    static const struct prefill_case cases[] = {
        {8, 2, 16, 0, 1, {0}, {77}},            /* a first chunk, G = 4 */
        {8, 1, 7, 0, 1, {45}, {33}},            /* a chunk mid-sequence, G = 8, block 7 */
        {4, 2, 16, 0, 5, {0, 100, 17, 0, 64}, {50, 1, 23, 1, 64}}, /* G = 2, mixed step */
        {8, 2, 16, 0, 1, {0}, {300}},           /* many tiles, long causal rows */
        {6, 2, 5, 0, 2, {3, 0}, {19, 5}},       /* G = 3 (tiles of 21 tokens), block 5 */
        {16, 1, 16, 0, 2, {10, 0}, {21, 2}},    /* G = 16 (tiles of 4 tokens) */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(800 + (uint32_t)i, &cases[i]);
}

static void test_prefill_window(void **state)
{
    (void)state;
    static const struct prefill_case cases[] = {
        {8, 2, 16, 20, 5, {0, 100, 17, 0, 64}, {50, 1, 23, 1, 64}}, /* G = 4 */
        {4, 4, 5, 9, 1, {30}, {40}},            /* G = 1, window shorter than a tile */
        {8, 1, 7, 64, 2, {90, 0}, {45, 70}},    /* G = 8 */
        {8, 2, 16, 1, 1, {5}, {18}},            /* window 1: each token sees itself only */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(900 + (uint32_t)i, &cases[i]);
}

static void test_prefill_rejects_unsupported(void **state)
{
    (void)state;
    void *d = gpu_alloc(1 << 16);
    struct fp8_cuda_kv_cache kv = {.k = d, .v = d, .k_scale = d, .v_scale = d, .n_blocks = 4,
                                   .block_size = 16, .n_kv_heads = 2, .head_dim = 64};
    struct fp8_err err = {{0}};
    assert_int_equal(fp8_cuda_attn_prefill(d, d, &kv, d, d, d, 10, 1, 8, 4, 0.1f, 0, d, 1 << 16,
                                           NULL, &err),
                     -EINVAL);
    printf("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "head_dim=64"));
    kv.head_dim = 128;
    assert_int_equal(fp8_cuda_attn_prefill(d, d, &kv, d, d, d, 10, 1, 7, 4, 0.1f, 0, d, 1 << 16,
                                           NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "n_heads=7"));
    assert_int_equal(fp8_cuda_attn_prefill(d, d, &kv, d, d, d, 10, 1, 8, 4, 0.1f, 0, d, 8, NULL,
                                           &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "workspace"));
    fp8_cuda_free(d);
}

int main(void)
{
    int present = gpu_present();
    if (present <= 0)
        return present < 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_causal),
        cmocka_unit_test(test_prefill_window),
        cmocka_unit_test(test_prefill_rejects_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
