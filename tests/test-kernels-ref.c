/* The ref backend's ops against hand-worked values and naive double-precision
 * implementations written here (not calls into kernels/ref). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/numeric.h"
#include "kernels/kernels.h"

static struct fp8_backend *be;

static int setup(void **state)
{
    (void)state;
    return fp8_backend_create("ref", &be, NULL);
}

static int teardown(void **state)
{
    (void)state;
    fp8_backend_free(be);
    return 0;
}

/* A tensor of dtype (f32 / i32 / bf16 from f32 values / e4m3 via the shared quantizer). */
static struct fp8_tensor make(enum fp8_dtype dtype, int32_t n_dims, const int64_t *ne,
                              const void *values)
{
    struct fp8_tensor t;
    assert_int_equal(be->ops->tensor_alloc(be, &t, dtype, n_dims, ne, NULL), 0);
    if (!values)
        return t;
    int64_t n = fp8_tensor_numel(&t), rows = fp8_tensor_rows(&t);
    if (dtype == FP8_DTYPE_BF16) {
        uint16_t h[256];
        assert_true(n <= 256);
        for (int64_t i = 0; i < n; i++)
            h[i] = f32_to_bf16(((const float *)values)[i]);
        assert_int_equal(be->ops->tensor_set(be, &t, h, NULL, NULL), 0);
    } else if (dtype == FP8_DTYPE_E4M3) {
        uint8_t q[256];
        float s[64];
        assert_true(n <= 256 && rows <= 64);
        fp8_quantize_rows_e4m3(values, rows, n / rows, q, s);
        assert_int_equal(be->ops->tensor_set(be, &t, q, s, NULL), 0);
    } else {
        assert_int_equal(be->ops->tensor_set(be, &t, values, NULL, NULL), 0);
    }
    return t;
}

static void drop(struct fp8_tensor *t)
{
    be->ops->tensor_free(be, t);
}

static void assert_ok(void)
{
    struct fp8_err err = {{0}};
    int rc = be->ops->sync(be, &err);
    if (rc)
        fail_msg("sync: %s", err.msg);
}

/* One sequence of n tokens at positions p0.. with a contiguous block table from block 0. */
static int32_t toks[16], pos[16], slots[16], seq_start[2], seq_len[1], table[8];

static void step_one_seq(int32_t n, int32_t p0, const int32_t *ids, int32_t block_size)
{
    for (int32_t i = 0; i < 8; i++)
        table[i] = 7 - i; /* reversed: attention must follow the table */
    for (int32_t i = 0; i < n; i++) {
        toks[i] = ids ? ids[i] : 0;
        pos[i] = p0 + i;
        slots[i] = table[pos[i] / block_size] * block_size + pos[i] % block_size;
    }
    seq_start[0] = 0;
    seq_start[1] = n;
    seq_len[0] = p0 + n;
    struct fp8_batch b = {.n_tokens = n, .tokens = toks, .positions = pos, .slots = slots,
                          .n_seqs = 1, .seq_start = seq_start, .seq_len = seq_len,
                          .block_table = table, .max_blocks_per_seq = 8,
                          .block_size = block_size};
    int32_t rows[16];
    for (int32_t i = 0; i < n; i++)
        rows[i] = i;
    struct fp8_err err = {{0}};
    if (be->ops->step_begin(be, &b, rows, n, &err))
        fail_msg("step_begin: %s", err.msg);
}

static void test_quantize_rows_by_hand(void **state)
{
    (void)state;
    /* Row amax 1 -> scale 1/448: 0.5 -> 224 = 1.75 * 2^7 (e=14, m=6), -1 -> -448,
     * 0.25 -> 112 = 1.75 * 2^6 (e=13, m=6). An all-zero row gets scale 1. */
    const float src[6] = {0.5f, -1.0f, 0.25f, 0.0f, 0.0f, 0.0f};
    uint8_t q[6];
    float s[2];
    fp8_quantize_rows_e4m3(src, 2, 3, q, s);
    assert_true(s[0] == 1.0f / 448.0f);
    assert_int_equal(q[0], 0x76);
    assert_int_equal(q[1], 0xfe);
    assert_int_equal(q[2], 0x6e);
    assert_true(s[1] == 1.0f);
    assert_int_equal(q[3] | q[4] | q[5], 0);
}

static void test_kv_block_bytes(void **state)
{
    (void)state;
    /* 2 (K, V) x 2 layers x 16 slots x 4 heads x (128 bytes + one f32 scale). */
    struct fp8_kv_cache_desc d = {FP8_DTYPE_E4M3, 2, 100, 16, 4, 128};
    assert_int_equal(fp8_kv_block_bytes(&d), 2 * 2 * 16 * 4 * 132);
    d.dtype = FP8_DTYPE_BF16;
    assert_int_equal(fp8_kv_block_bytes(&d), 2 * 2 * 16 * 4 * 256);
    d.dtype = FP8_DTYPE_F32;
    assert_int_equal(fp8_kv_block_bytes(&d), 2 * 2 * 16 * 4 * 512);
    d.head_dim = 0;
    assert_int_equal(fp8_kv_block_bytes(&d), 0);
}

static void test_embed_scaled(void **state)
{
    (void)state;
    const float table_v[6] = {1.0f, 2.0f, -3.0f, 0.5f, 0.25f, 8.0f}; /* (3, 2) */
    int64_t tne[2] = {3, 2}, one[2] = {2, 2};
    struct fp8_tensor tab = make(FP8_DTYPE_BF16, 2, tne, table_v), out = make(FP8_DTYPE_F32, 2, one, NULL);
    const int32_t ids[2] = {2, 0};
    step_one_seq(2, 0, ids, 4);
    be->ops->embed(be, &tab, 3.0f, &out);
    assert_ok();
    const float *o = out.data;
    assert_true(o[0] == 0.75f && o[1] == 24.0f && o[2] == 3.0f && o[3] == 6.0f);
    drop(&tab);
    drop(&out);
}

static void test_rms_norm_variants(void **state)
{
    (void)state;
    /* rows {3, 4} and {1, -1}: mean squares 12.5 and 1. */
    const float xv[4] = {3.0f, 4.0f, 1.0f, -1.0f}, wv[2] = {1.0f, 2.0f}, w1[2] = {0.0f, 1.0f};
    int64_t ne[2] = {2, 2}, wn[1] = {2};
    struct fp8_tensor x = make(FP8_DTYPE_F32, 2, ne, xv), w = make(FP8_DTYPE_F32, 1, wn, wv),
                      wp = make(FP8_DTYPE_F32, 1, wn, w1), out = make(FP8_DTYPE_F32, 2, ne, NULL);
    float eps = 1e-6f;
    double r0 = sqrt(12.5 + 1e-6), r1 = sqrt(1.0 + 1e-6);
    double want[4] = {3 / r0, 8 / r0, 1 / r1, -2 / r1};
    for (int kind = 0; kind < 2; kind++) {
        be->ops->rms_norm(be, &x, kind ? &wp : &w, eps, kind ? FP8_NORM_RMS_PLUS_ONE : FP8_NORM_RMS,
                          &out);
        assert_ok();
        for (int i = 0; i < 4; i++)
            assert_true(fabs(((float *)out.data)[i] - want[i]) < 1e-6);
    }
    /* residual += x then norm: residual {0, 0, 2, -2} + x = {3, 4, 3, -3}. */
    const float rv[4] = {0.0f, 0.0f, 2.0f, -2.0f};
    struct fp8_tensor res = make(FP8_DTYPE_F32, 2, ne, rv);
    be->ops->add_rms_norm(be, &res, &x, &w, eps, FP8_NORM_RMS, &out);
    assert_ok();
    const float *r = res.data, *o = out.data;
    assert_true(r[0] == 3.0f && r[1] == 4.0f && r[2] == 3.0f && r[3] == -3.0f);
    double r2 = sqrt(9.0 + 1e-6);
    assert_true(fabs(o[0] - 3 / r0) < 1e-6 && fabs(o[1] - 8 / r0) < 1e-6);
    assert_true(fabs(o[2] - 3 / r2) < 1e-6 && fabs(o[3] + 6 / r2) < 1e-6);
    drop(&x), drop(&w), drop(&wp), drop(&out), drop(&res);
}

static void test_linear_e4m3_and_bf16(void **state)
{
    (void)state;
    /* Rows {1, 2} and {-0.5, 4} are exact in e4m3 after per-row scaling (224/448,
     * -56/448), so y = x . w holds exactly in both formats. */
    const float wv[4] = {1.0f, 2.0f, -0.5f, 4.0f}, xv[6] = {1.0f, 1.0f, 2.0f, -1.0f, 0.5f, 0.25f};
    int64_t wn[2] = {2, 2}, xn[2] = {3, 2};
    const float want[6] = {3.0f, 3.5f, 0.0f, -5.0f, 1.0f, 0.75f};
    enum fp8_dtype dts[2] = {FP8_DTYPE_E4M3, FP8_DTYPE_BF16};
    for (int d = 0; d < 2; d++) {
        struct fp8_tensor w = make(dts[d], 2, wn, wv), x = make(FP8_DTYPE_F32, 2, xn, xv),
                          y = make(FP8_DTYPE_F32, 2, xn, NULL);
        be->ops->linear(be, &x, &w, &y);
        assert_ok();
        for (int i = 0; i < 6; i++)
            assert_true(((float *)y.data)[i] == want[i]);
        drop(&w), drop(&x), drop(&y);
    }
}

static void test_rope_by_hand(void **state)
{
    (void)state;
    /* head_dim 4, pairs (0, 2) and (1, 3), inv_freq {1, 0.01}, positions 5 and 6. */
    const float xv[8] = {1.0f, 2.0f, 3.0f, 4.0f, -1.0f, 0.5f, 2.0f, 1.0f};
    const float fv[2] = {1.0f, 0.01f};
    int64_t xn[3] = {2, 1, 4}, fn[1] = {2};
    struct fp8_tensor x = make(FP8_DTYPE_F32, 3, xn, xv), f = make(FP8_DTYPE_F32, 1, fn, fv);
    step_one_seq(2, 5, NULL, 4);
    be->ops->rope(be, &x, &f, 1.0f);
    assert_ok();
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < 2; i++) {
            double a = (5 + t) * (double)fv[i], x1 = xv[4 * t + i], x2 = xv[4 * t + i + 2];
            assert_true(fabs(((float *)x.data)[4 * t + i] - (x1 * cos(a) - x2 * sin(a))) < 2e-6);
            assert_true(fabs(((float *)x.data)[4 * t + i + 2] - (x2 * cos(a) + x1 * sin(a))) < 2e-6);
        }
    drop(&x), drop(&f);
}

/* Naive attention for one query head over keys/values (ctx, hd), positions lo..hi. */
static void attend_ref(const float *q, const float *k, const float *v, int lo, int hi, int hd,
                       double scale, double *out)
{
    double w[16], mx = -1e300, sum = 0;
    for (int j = lo; j <= hi; j++) {
        double d = 0;
        for (int i = 0; i < hd; i++)
            d += (double)q[i] * k[j * hd + i];
        w[j] = d * scale;
        mx = fmax(mx, w[j]);
    }
    for (int j = lo; j <= hi; j++)
        sum += (w[j] = exp(w[j] - mx));
    for (int i = 0; i < hd; i++) {
        out[i] = 0;
        for (int j = lo; j <= hi; j++)
            out[i] += w[j] / sum * v[j * hd + i];
    }
}

static void test_attention_paged_gqa_window(void **state)
{
    (void)state;
    /* 6 tokens, 2 query heads sharing 1 KV head, head_dim 2, blocks of 4 (two blocks in
     * reversed order), written in two steps: 4 tokens, then 2. */
    enum { N = 6, HD = 2 };
    float k[N * HD], v[N * HD], q[N * 2 * HD];
    for (int i = 0; i < N * HD; i++) {
        k[i] = sinf(0.7f * i) * 2.0f;
        v[i] = cosf(0.3f * i) - 0.2f;
    }
    for (int i = 0; i < N * 2 * HD; i++)
        q[i] = sinf(1.3f * i + 0.1f);
    struct fp8_kv_cache_desc d = {FP8_DTYPE_F32, 1, 8, 4, 1, HD};
    for (int window = 0; window <= 3; window += 3) {
        struct fp8_kv_cache c;
        assert_int_equal(be->ops->kv_cache_alloc(be, &c, &d, NULL), 0);
        float out_all[N * 2 * HD];
        int32_t chunks[2][2] = {{0, 4}, {4, 6}};
        for (int ch = 0; ch < 2; ch++) {
            int32_t p0 = chunks[ch][0], n = chunks[ch][1] - p0;
            int64_t kn[3] = {n, 1, HD}, qn[3] = {n, 2, HD}, on[2] = {n, 2 * HD};
            struct fp8_tensor kt = make(FP8_DTYPE_F32, 3, kn, k + p0 * HD),
                              vt = make(FP8_DTYPE_F32, 3, kn, v + p0 * HD),
                              qt = make(FP8_DTYPE_F32, 3, qn, q + p0 * 2 * HD),
                              ot = make(FP8_DTYPE_F32, 2, on, NULL);
            step_one_seq(n, p0, NULL, 4);
            be->ops->kv_write(be, &c, 0, &kt, &vt);
            be->ops->attention(be, &qt, &c, 0, 0.5f, window, &ot);
            assert_ok();
            memcpy(out_all + p0 * 2 * HD, ot.data, (size_t)n * 2 * HD * sizeof(float));
            drop(&kt), drop(&vt), drop(&qt), drop(&ot);
        }
        for (int t = 0; t < N; t++)
            for (int h = 0; h < 2; h++) {
                double want[HD];
                int lo = window && t - window + 1 > 0 ? t - window + 1 : 0;
                attend_ref(q + (t * 2 + h) * HD, k, v, lo, t, HD, 0.5, want);
                for (int i = 0; i < HD; i++)
                    assert_true(fabs(out_all[(t * 2 + h) * HD + i] - want[i]) < 1e-5);
            }
        be->ops->kv_cache_free(be, &c);
    }
}

static void test_kv_write_e4m3_per_token_head(void **state)
{
    (void)state;
    /* One token, 2 KV heads: head 0 {1, -2, 0.5, 0} (amax 2), head 1 all zero. Slot of
     * position 0 = block table[0] (7) * 4. */
    const float kv[8] = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int64_t ne[3] = {1, 2, 4};
    struct fp8_tensor k = make(FP8_DTYPE_F32, 3, ne, kv), v = make(FP8_DTYPE_F32, 3, ne, kv);
    struct fp8_kv_cache_desc d = {FP8_DTYPE_E4M3, 1, 8, 4, 2, 4};
    struct fp8_kv_cache c;
    assert_int_equal(be->ops->kv_cache_alloc(be, &c, &d, NULL), 0);
    step_one_seq(1, 0, NULL, 4);
    be->ops->kv_write(be, &c, 0, &k, &v);
    assert_ok();
    size_t head0 = (size_t)(7 * 4) * 2; /* (slot 28, head 0) */
    const uint8_t *kb = (const uint8_t *)c.k + head0 * 4;
    assert_true(c.k_scale[head0] == 2.0f / 448.0f);
    assert_int_equal(kb[0], 0x76); /* 1 / (2/448) = 224 */
    assert_int_equal(kb[1], 0xfe); /* -448 */
    assert_int_equal(kb[2], 0x6e); /* 112 = 1.75 * 2^6: e=13, m=6 */
    assert_true(c.k_scale[head0 + 1] == 1.0f);
    assert_true(c.v_scale[head0] == c.k_scale[head0]);
    be->ops->kv_cache_free(be, &c);
    drop(&k), drop(&v);
}

static void test_qk_norm_rope_kv_write_fused(void **state)
{
    (void)state;
    /* 2 tokens at positions 3 and 4, 2 q heads, 1 kv head, head_dim 4, Gemma norm (1 + w):
     * every q/k head normalized and rotated, v copied, into an f32 cache. */
    enum { N = 2, H = 2, KVH = 1, HD = 4, W = (H + 2 * KVH) * HD };
    float qkv[N * W];
    for (int i = 0; i < N * W; i++)
        qkv[i] = sinf(0.9f * i + 0.3f) * (1.0f + 0.1f * i);
    const float qn[HD] = {0.1f, -0.2f, 0.3f, 0.0f}, kn[HD] = {-0.1f, 0.5f, 0.0f, 0.25f};
    const float freq[HD / 2] = {0.5f, 0.05f};
    int64_t qkvn[2] = {N, W}, nn[1] = {HD}, fn[1] = {HD / 2}, qon[3] = {N, H, HD};
    struct fp8_tensor x = make(FP8_DTYPE_F32, 2, qkvn, qkv), qw = make(FP8_DTYPE_F32, 1, nn, qn),
                      kw = make(FP8_DTYPE_F32, 1, nn, kn), f = make(FP8_DTYPE_F32, 1, fn, freq),
                      qo = make(FP8_DTYPE_F32, 3, qon, NULL);
    struct fp8_kv_cache_desc d = {FP8_DTYPE_F32, 2, 8, 4, KVH, HD};
    struct fp8_kv_cache c;
    assert_int_equal(be->ops->kv_cache_alloc(be, &c, &d, NULL), 0);
    step_one_seq(N, 3, NULL, 4);
    be->ops->qk_norm_rope_kv_write(be, &x, &qw, &kw, 1e-6f, FP8_NORM_RMS_PLUS_ONE, &f, 1.0f, &c,
                                   1, &qo);
    assert_ok();
    for (int t = 0; t < N; t++) {
        for (int j = 0; j < H + 2 * KVH; j++) {
            const float *src = qkv + t * W + j * HD;
            double v[HD], ss = 0;
            for (int i = 0; i < HD; i++)
                ss += (double)src[i] * src[i];
            for (int i = 0; i < HD; i++)
                v[i] = j < H + KVH ? src[i] / sqrt(ss / HD + 1e-6) * (1.0 + (j < H ? qn : kn)[i])
                                   : src[i];
            if (j < H + KVH)
                for (int i = 0; i < HD / 2; i++) {
                    double a = (3 + t) * (double)freq[i], x1 = v[i], x2 = v[i + HD / 2];
                    v[i] = x1 * cos(a) - x2 * sin(a);
                    v[i + HD / 2] = x2 * cos(a) + x1 * sin(a);
                }
            /* q heads in q_out; k and v at (layer 1, slot of position 3 + t). */
            int slot = table[(3 + t) / 4] * 4 + (3 + t) % 4;
            const float *got = j < H ? (float *)qo.data + (t * H + j) * HD
                                     : (float *)(j < H + KVH ? c.k : c.v) + ((8 * 4) + slot) * HD;
            for (int i = 0; i < HD; i++)
                assert_true(fabs(got[i] - v[i]) < 2e-6);
        }
    }
    be->ops->kv_cache_free(be, &c);
    drop(&x), drop(&qw), drop(&kw), drop(&f), drop(&qo);
}

static void test_glu_activations(void **state)
{
    (void)state;
    const float gu[6] = {-1.5f, 0.0f, 2.0f, 3.0f, -2.0f, 0.5f}; /* gate | up, I = 3 */
    int64_t in[2] = {1, 6}, on[2] = {1, 3};
    struct fp8_tensor x = make(FP8_DTYPE_F32, 2, in, gu), y = make(FP8_DTYPE_F32, 2, on, NULL);
    for (int a = 0; a < 2; a++) {
        be->ops->glu(be, &x, a ? FP8_GLU_GELU_TANH : FP8_GLU_SILU, &y);
        assert_ok();
        for (int i = 0; i < 3; i++) {
            double g = gu[i], act = a ? 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g)))
                                      : g / (1 + exp(-g));
            assert_true(fabs(((float *)y.data)[i] - act * gu[3 + i]) < 1e-6);
        }
    }
    drop(&x), drop(&y);
}

static void test_moe_route_and_experts(void **state)
{
    (void)state;
    const float lv[4] = {1.0f, 3.0f, 2.0f, 3.0f}; /* ties 1 and 3: lower id first */
    int64_t ln[2] = {1, 4}, kn[2] = {1, 2};
    struct fp8_tensor l = make(FP8_DTYPE_F32, 2, ln, lv), ids = make(FP8_DTYPE_I32, 2, kn, NULL),
                      w = make(FP8_DTYPE_F32, 2, kn, NULL);
    double sum = exp(1) + 2 * exp(3) + exp(2);
    for (int norm = 0; norm < 2; norm++) {
        be->ops->moe_route(be, &l, norm, &ids, &w);
        assert_ok();
        const int32_t *id = ids.data;
        const float *wt = w.data;
        assert_int_equal(id[0], 1);
        assert_int_equal(id[1], 3);
        double want = norm ? 0.5 : exp(3) / sum;
        assert_true(fabs(wt[0] - want) < 1e-6 && fabs(wt[1] - want) < 1e-6);
    }
    /* Two experts, D = 2, I = 1: expert e: gate row g_e, up row u_e, down column d_e. */
    const float guv[8] = {1.0f, 0.0f, 0.0f, 1.0f, /* e0: gate {1,0}, up {0,1} */
                          0.5f, 0.5f, 1.0f, -1.0f}; /* e1: gate {.5,.5}, up {1,-1} */
    const float dv[4] = {1.0f, 2.0f, -1.0f, 0.5f}; /* e0 down {1,2}, e1 down {-1,.5} */
    int64_t gun[3] = {2, 2, 2}, dn[3] = {2, 2, 1}, xn[2] = {1, 2};
    const float xv[2] = {2.0f, -1.0f};
    const int32_t idv[2] = {1, 0};
    const float wv[2] = {0.25f, 0.75f};
    struct fp8_tensor gut = make(FP8_DTYPE_BF16, 3, gun, guv), dt = make(FP8_DTYPE_BF16, 3, dn, dv),
                      x = make(FP8_DTYPE_F32, 2, xn, xv), out = make(FP8_DTYPE_F32, 2, xn, NULL),
                      id2 = make(FP8_DTYPE_I32, 2, kn, idv), w2 = make(FP8_DTYPE_F32, 2, kn, wv);
    be->ops->moe_experts(be, &x, &id2, &w2, &gut, &dt, FP8_GLU_SILU, &out);
    assert_ok();
    double h0 = 2.0 / (1 + exp(-2.0)) * -1.0;        /* silu(2) * (-1) */
    double h1 = 0.5 / (1 + exp(-0.5)) * 3.0;         /* silu(0.5) * 3 */
    double want0 = 0.75 * h0 * 1.0 + 0.25 * h1 * -1.0, want1 = 0.75 * h0 * 2.0 + 0.25 * h1 * 0.5;
    assert_true(fabs(((float *)out.data)[0] - want0) < 1e-5);
    assert_true(fabs(((float *)out.data)[1] - want1) < 1e-5);
    drop(&l), drop(&ids), drop(&w), drop(&gut), drop(&dt), drop(&x), drop(&out), drop(&id2), drop(&w2);
}

static void test_gather_and_softcap(void **state)
{
    (void)state;
    const float xv[6] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
    int64_t xn[2] = {3, 2}, on[2] = {3, 2};
    struct fp8_tensor x = make(FP8_DTYPE_F32, 2, xn, xv), o = make(FP8_DTYPE_F32, 2, on, NULL);
    step_one_seq(3, 0, NULL, 4);
    be->ops->gather_rows(be, &x, &o);
    be->ops->softcap(be, &o, 2.0f);
    assert_ok();
    for (int i = 0; i < 6; i++)
        assert_true(fabs(((float *)o.data)[i] - 2.0 * tanh(xv[i] / 2.0)) < 1e-6);
    drop(&x), drop(&o);
}

static void test_sample_greedy_lowest_on_ties(void **state)
{
    (void)state;
    /* row 0: the max 3 at indices 1 and 2 -> 1; row 1: the max -1 at 0 and 2 -> 0;
     * row 2: a single max at the last index -> 4 */
    const float lv[15] = {1, 3, 3, 2, 0, -1, -5, -1, -2, -7, 0, 0, 0, 0, 0.5f};
    int64_t ln[2] = {3, 5}, in[1] = {3};
    struct fp8_tensor l = make(FP8_DTYPE_F32, 2, ln, lv), ids = make(FP8_DTYPE_I32, 1, in, NULL);
    struct fp8_sample_row greedy[3];
    for (int i = 0; i < 3; i++)
        greedy[i] = (struct fp8_sample_row){.top_p = 1.0f, .repetition_penalty = 1.0f};
    step_one_seq(3, 0, NULL, 4);
    be->ops->sample(be, &l, greedy, NULL, &ids);
    assert_ok();
    assert_int_equal(((int32_t *)ids.data)[0], 1);
    assert_int_equal(((int32_t *)ids.data)[1], 0);
    assert_int_equal(((int32_t *)ids.data)[2], 4);
    drop(&l), drop(&ids);
}

/* The op refuses rows out of range and penalty ids outside the vocabulary, naming them
 * (fp8_sample_rows_check, which the cuda backend shares). */
static void test_sample_refuses_bad_rows(void **state)
{
    (void)state;
    const float lv[4] = {1, 2, 3, 4};
    int64_t ln[2] = {1, 4}, in[1] = {1};
    struct fp8_tensor l = make(FP8_DTYPE_F32, 2, ln, lv), ids = make(FP8_DTYPE_I32, 1, in, NULL);
    struct fp8_sample_row row = {.temperature = 1.0f, .top_p = 0.0f, .repetition_penalty = 1.0f};
    struct fp8_err err = {{0}};
    be->ops->sample(be, &l, &row, NULL, &ids);
    assert_int_equal(be->ops->sync(be, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "top_p 0"));
    const int32_t pen[2] = {3, 4};
    row = (struct fp8_sample_row){.temperature = 1.0f, .top_p = 1.0f,
                                  .repetition_penalty = 1.5f, .n_pen = 2};
    be->ops->sample(be, &l, &row, pen, &ids);
    assert_int_equal(be->ops->sync(be, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "penalty id 4"));
    /* The first penalty id alone is fine: id 3's 4 / 1.5 = 2.67 < 3, so greedy picks 2. */
    row.n_pen = 1;
    row.temperature = 0.0f;
    be->ops->sample(be, &l, &row, pen, &ids);
    assert_ok();
    assert_int_equal(((int32_t *)ids.data)[0], 2);
    drop(&l), drop(&ids);
}

/* argmax_value, a vocab shard's greedy candidate: the lowest index of each row's maximum
 * and that maximum, by hand; a values tensor of the wrong length is refused by name. */
static void test_argmax_value_by_hand(void **state)
{
    (void)state;
    const float lv[8] = {0.5f, 2, 2, -1, -3, -2, -4, -2};
    int64_t ln[2] = {2, 4}, in[1] = {2}, bad[1] = {1};
    struct fp8_tensor l = make(FP8_DTYPE_F32, 2, ln, lv), ids = make(FP8_DTYPE_I32, 1, in, NULL),
                      vals = make(FP8_DTYPE_F32, 1, in, NULL),
                      short_vals = make(FP8_DTYPE_F32, 1, bad, NULL);
    step_one_seq(2, 0, NULL, 4);
    be->ops->argmax_value(be, &l, &ids, &vals);
    assert_ok();
    assert_int_equal(((int32_t *)ids.data)[0], 1); /* 2 at 1 and 2: the lower */
    assert_int_equal(((int32_t *)ids.data)[1], 1); /* -2 at 1 and 3 */
    assert_true(((float *)vals.data)[0] == 2.0f);
    assert_true(((float *)vals.data)[1] == -2.0f);
    struct fp8_err err = {{0}};
    be->ops->argmax_value(be, &l, &ids, &short_vals);
    assert_int_equal(be->ops->sync(be, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "argmax_value"));
    drop(&l), drop(&ids), drop(&vals), drop(&short_vals);
}

static void test_errors_are_sticky_and_clear(void **state)
{
    (void)state;
    int64_t a[2] = {2, 3}, b[2] = {2, 4};
    struct fp8_tensor x = make(FP8_DTYPE_F32, 2, a, NULL), w = make(FP8_DTYPE_BF16, 2, a, NULL),
                      y = make(FP8_DTYPE_F32, 2, b, NULL);
    be->ops->linear(be, &x, &w, &y); /* w (2, 3) gives 2 columns, y has 4 */
    be->ops->softcap(be, &y, -1.0f);   /* a second failure is not reported over the first */
    struct fp8_err err = {{0}};
    assert_int_equal(be->ops->sync(be, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "linear"));
    assert_int_equal(be->ops->sync(be, &err), 0);

    /* A step whose token sits past its sequence's length is refused up front. */
    int32_t t[1] = {0}, p[1] = {4}, s[1] = {0}, ss[2] = {0, 1}, len[1] = {4}, bt[1] = {0};
    struct fp8_batch bad = {.n_tokens = 1, .tokens = t, .positions = p, .slots = s, .n_seqs = 1,
                            .seq_start = ss, .seq_len = len, .block_table = bt,
                            .max_blocks_per_seq = 1, .block_size = 4};
    assert_int_equal(be->ops->step_begin(be, &bad, NULL, 0, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "position 4"));
    drop(&x), drop(&w), drop(&y);
}

static void test_backend_names(void **state)
{
    (void)state;
    struct fp8_backend *other = NULL;
    struct fp8_err err = {{0}};
    /* "cuda" is never a fallback to ref: built without CUDA it names the build, built
     * with it on a machine without a GPU it says so (on a GPU machine it opens). */
    int rc = fp8_backend_create("cuda", &other, &err);
#ifdef FP8D_WITH_CUDA
    if (rc == 0) {
        assert_string_equal(other->name, "cuda");
        fp8_backend_free(other);
        other = NULL;
    } else {
        assert_int_equal(rc, -ENODEV);
        assert_non_null(strstr(err.msg, "no CUDA device found"));
    }
#else
    assert_int_equal(rc, -ENOTSUP);
    assert_non_null(strstr(err.msg, "built without CUDA"));
#endif
    assert_null(other);
    assert_int_equal(fp8_backend_create("tpu", &other, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "tpu"));
    fp8_backend_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_rows_by_hand),
        cmocka_unit_test(test_kv_block_bytes),
        cmocka_unit_test(test_embed_scaled),
        cmocka_unit_test(test_rms_norm_variants),
        cmocka_unit_test(test_linear_e4m3_and_bf16),
        cmocka_unit_test(test_rope_by_hand),
        cmocka_unit_test(test_attention_paged_gqa_window),
        cmocka_unit_test(test_kv_write_e4m3_per_token_head),
        cmocka_unit_test(test_qk_norm_rope_kv_write_fused),
        cmocka_unit_test(test_glu_activations),
        cmocka_unit_test(test_moe_route_and_experts),
        cmocka_unit_test(test_gather_and_softcap),
        cmocka_unit_test(test_sample_greedy_lowest_on_ties),
        cmocka_unit_test(test_sample_refuses_bad_rows),
        cmocka_unit_test(test_argmax_value_by_hand),
        cmocka_unit_test(test_errors_are_sticky_and_clear),
        cmocka_unit_test(test_backend_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
