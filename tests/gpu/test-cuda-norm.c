/* fp8_cuda_rmsnorm, fp8_cuda_glu and fp8_cuda_qk_norm_rope_kv_write against float64 CPU versions over
 * the same bf16 inputs, fresh random inputs per case, odd dims and 1, 3, 17 rows/tokens.
 *
 * Bounds: bf16 outputs: per element |out - ref| <= 1e-2 |ref| + 1e-6 (1e-5 after RoPE),
 * norm ratio <= 4e-3.
 * The residual sum is one fp32 add rounded to bf16: bit-exact. V goes to the cache without
 * arithmetic, so its scale (amax / 448) and e4m3 bytes are bit-exact (common/numeric.h);
 * K passes through a norm in fp32, so each K value may land one e4m3 step away:
 * |k_cache * k_scale - k_ref| <= 2^-3 |k_ref| + 2^-9 scale, and scales within 1e-5. Slots
 * of padding tokens (slot -1) and slots nobody writes keep their poison; an all-zero head
 * is stored with scale 1 and zero bytes (kernels.h). The references follow kernels.h and
 * kernels/ref: norm x / sqrt(mean(x^2) + eps) * w (or 1 + w), RoPE angle = fp32 position
 * times inv_freq[i] with cos and sin scaled by attn_factor. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/gpu/gpu_check.h"

#define HD 128

static void rmsnorm_case(uint32_t id, int rows, int dim, int with_residual, int plus_one)
{
    uint64_t st = gpu_case_seed(id);
    const size_t n = (size_t)rows * dim;
    const float eps = 1e-6f;
    uint16_t *x = malloc(n * 2), *res = malloc(n * 2), *y = malloc(n * 2), *res_out = malloc(n * 2);
    float *w = malloc(dim * 4);
    double *ref = malloc(n * sizeof(double)), *atol = malloc(n * sizeof(double));
    assert_non_null(x && res && y && res_out && w && ref && atol);
    for (size_t i = 0; i < n; i++) {
        x[i] = gpu_rand_bf16(&st, -4.0f, 4.0f);
        res[i] = gpu_rand_bf16(&st, -20.0f, 20.0f);
        atol[i] = 1e-6;
    }
    for (int i = 0; i < dim; i++)
        w[i] = gpu_urand(&st, 0.5f, 1.5f);
    for (int r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int i = 0; i < dim; i++) {
            size_t k = (size_t)r * dim + i;
            double v = bf16_to_f32(x[k]);
            if (with_residual) {
                /* the model's residual stream is bf16: sum in fp32, round once */
                uint16_t b = f32_to_bf16(bf16_to_f32(x[k]) + bf16_to_f32(res[k]));
                v = bf16_to_f32(b);
                res_out[k] = b;
            }
            ss += v * v;
            ref[k] = v;
        }
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int i = 0; i < dim; i++)
            ref[(size_t)r * dim + i] *= inv * (plus_one ? 1.0 + w[i] : w[i]);
    }
    void *dx = gpu_upload(x, n * 2), *dres = gpu_upload(res, n * 2), *dw = gpu_upload(w, dim * 4);
    void *dy = gpu_alloc(n * 2);
    gpu_poison(dy, n * 2);
    struct fp8_err err = {{0}};
    if (fp8_cuda_rmsnorm(dy, dx, with_residual ? dres : NULL, dw, rows, dim, eps, plus_one, NULL,
                         &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(y, dy, n * 2);
    char what[96];
    snprintf(what, sizeof(what), "rmsnorm rows=%d dim=%d residual=%d plus_one=%d", rows, dim,
             with_residual, plus_one);
    gpu_check_bf16(what, y, ref, atol, n, 1e-2, 4e-3);
    if (with_residual) {
        gpu_download(res, dres, n * 2);
        for (size_t i = 0; i < n; i++)
            if (res[i] != res_out[i])
                fail_msg("%s: residual %zu is 0x%04x, expected 0x%04x", what, i, res[i],
                         res_out[i]);
    }
    fp8_cuda_free(dx);
    fp8_cuda_free(dres);
    fp8_cuda_free(dw);
    fp8_cuda_free(dy);
    free(x);
    free(res);
    free(y);
    free(res_out);
    free(w);
    free(ref);
    free(atol);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    static const int shapes[][2] = {{1, 4096}, {3, 1000}, {17, 4096}, {16, 17}, {2, 5120}};
    for (int i = 0; i < 5; i++)
        for (int r = 0; r < 2; r++)
            rmsnorm_case(700 + 2 * i + r, shapes[i][0], shapes[i][1], r, i == 3);
}

/* Also checks y aliasing x: the model normalises the residual stream in place. */
static void test_rmsnorm_in_place(void **state)
{
    (void)state;
    uint64_t st = gpu_case_seed(750);
    const int rows = 3, dim = 999;
    const size_t n = (size_t)rows * dim;
    uint16_t *x = malloc(n * 2), *y = malloc(n * 2);
    float *w = malloc(dim * 4);
    double *ref = malloc(n * sizeof(double));
    assert_non_null(x && y && w && ref);
    for (size_t i = 0; i < n; i++)
        x[i] = gpu_rand_bf16(&st, -4.0f, 4.0f);
    for (int i = 0; i < dim; i++)
        w[i] = gpu_urand(&st, 0.5f, 1.5f);
    for (int r = 0; r < rows; r++) {
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)bf16_to_f32(x[r * dim + i]) * bf16_to_f32(x[r * dim + i]);
        for (int i = 0; i < dim; i++)
            ref[r * dim + i] = bf16_to_f32(x[r * dim + i]) / sqrt(ss / dim + 1e-5) * w[i];
    }
    void *dx = gpu_upload(x, n * 2), *dw = gpu_upload(w, dim * 4);
    struct fp8_err err = {{0}};
    if (fp8_cuda_rmsnorm(dx, dx, NULL, dw, rows, dim, 1e-5f, 0, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(y, dx, n * 2);
    gpu_check_bf16("rmsnorm in place", y, ref, NULL, n, 1e-2, 4e-3);
    fp8_cuda_free(dx);
    fp8_cuda_free(dw);
    free(x);
    free(y);
    free(w);
    free(ref);
}

struct qk_case {
    int n_tokens, n_heads, n_kv, block_size, n_blocks;
    float attn_factor;
    int plus_one;
};

static void qk_case_run(uint32_t id, const struct qk_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const int heads = c->n_heads + 2 * c->n_kv, max_pos = 40960;
    const float eps = 1e-6f;
    const size_t nqkv = (size_t)c->n_tokens * heads * HD, nq = (size_t)c->n_tokens * c->n_heads * HD;
    const size_t slots_total = (size_t)c->n_blocks * c->block_size;
    const size_t cache = slots_total * c->n_kv * HD, nsc = slots_total * c->n_kv;
    uint16_t *qkv = malloc(nqkv * 2), *qo = malloc(nq * 2);
    float *qw = malloc(HD * 4), *kw = malloc(HD * 4), *inv_freq = malloc(HD / 2 * 4);
    int32_t *pos = malloc(c->n_tokens * 4), *slot = malloc(c->n_tokens * 4);
    uint8_t *kc = malloc(cache), *vc = malloc(cache);
    float *ksc = malloc(nsc * 4), *vsc = malloc(nsc * 4);
    double *qref = malloc(nq * sizeof(double)), *qatol = malloc(nq * sizeof(double));
    double *kref = malloc((size_t)c->n_tokens * c->n_kv * HD * sizeof(double));
    assert_non_null(qkv && qo && qw && kw && inv_freq && pos && slot && kc && vc && ksc && vsc &&
                    qref && qatol && kref);
    for (size_t i = 0; i < nq; i++) /* cosf/sinf and sqrtf of another library: ~1 ulp */
        qatol[i] = 1e-5;

    for (size_t i = 0; i < nqkv; i++)
        qkv[i] = gpu_rand_bf16(&st, -3.0f, 3.0f);
    for (int i = 0; i < HD; i++) {
        qw[i] = gpu_urand(&st, 0.5f, 1.5f);
        kw[i] = gpu_urand(&st, 0.5f, 1.5f);
    }
    for (int i = 0; i < HD / 2; i++) /* Qwen3: theta 1e6 */
        inv_freq[i] = (float)pow(1e6, -2.0 * i / HD);
    /* distinct slots, the last token of several a padding token (slot -1) */
    for (int t = 0; t < c->n_tokens; t++) {
        pos[t] = (int32_t)(splitmix64_next(&st) % max_pos);
        int fresh;
        do {
            slot[t] = (int32_t)(splitmix64_next(&st) % slots_total);
            fresh = 1;
            for (int u = 0; u < t; u++)
                fresh &= slot[u] != slot[t];
        } while (!fresh);
    }
    if (c->n_tokens > 2)
        slot[c->n_tokens - 1] = -1;
    /* an all-zero k and v head: scale 1, zero bytes */
    for (int i = 0; i < HD; i++) {
        qkv[((size_t)0 * heads + c->n_heads + c->n_kv - 1) * HD + i] = 0;
        qkv[((size_t)0 * heads + c->n_heads + 2 * c->n_kv - 1) * HD + i] = 0;
    }

    for (int t = 0; t < c->n_tokens; t++) {
        for (int h = 0; h < c->n_heads + c->n_kv; h++) {
            const uint16_t *src = qkv + ((size_t)t * heads + h) * HD;
            const float *nw = h < c->n_heads ? qw : kw;
            double ss = 0.0, v[HD], r[HD];
            for (int i = 0; i < HD; i++)
                ss += (double)bf16_to_f32(src[i]) * bf16_to_f32(src[i]);
            for (int i = 0; i < HD; i++)
                v[i] = bf16_to_f32(src[i]) / sqrt(ss / HD + eps) *
                       (c->plus_one ? 1.0 + nw[i] : nw[i]);
            for (int i = 0; i < HD / 2; i++) {
                const double a = (double)((float)pos[t] * inv_freq[i]); /* the fp32 angle */
                const double cs = cos(a) * c->attn_factor, sn = sin(a) * c->attn_factor;
                r[i] = v[i] * cs - v[i + HD / 2] * sn;
                r[i + HD / 2] = v[i + HD / 2] * cs + v[i] * sn;
            }
            double *dst = h < c->n_heads ? qref + ((size_t)t * c->n_heads + h) * HD
                                         : kref + ((size_t)t * c->n_kv + h - c->n_heads) * HD;
            memcpy(dst, r, sizeof(r));
        }
    }

    struct fp8_cuda_kv_cache kv = {
        .k = gpu_alloc(cache), .v = gpu_alloc(cache),
        .k_scale = gpu_alloc(nsc * 4), .v_scale = gpu_alloc(nsc * 4),
        .n_blocks = c->n_blocks, .block_size = c->block_size, .n_kv_heads = c->n_kv,
        .head_dim = HD,
    };
    gpu_poison(kv.k, cache);
    gpu_poison(kv.v, cache);
    gpu_poison(kv.k_scale, nsc * 4);
    gpu_poison(kv.v_scale, nsc * 4);
    void *dqkv = gpu_upload(qkv, nqkv * 2), *dqo = gpu_alloc(nq * 2);
    void *dqw = gpu_upload(qw, HD * 4), *dkw = gpu_upload(kw, HD * 4);
    void *dfreq = gpu_upload(inv_freq, HD / 2 * 4);
    void *dpos = gpu_upload(pos, c->n_tokens * 4), *dslot = gpu_upload(slot, c->n_tokens * 4);
    gpu_poison(dqo, nq * 2);
    struct fp8_err err = {{0}};
    if (fp8_cuda_qk_norm_rope_kv_write(dqo, dqkv, dqw, dkw, eps, c->plus_one, dfreq,
                                       c->attn_factor, dpos, dslot, &kv, c->n_tokens, c->n_heads,
                                       NULL, &err) < 0)
        fail_msg("%s", err.msg);
    gpu_download(qo, dqo, nq * 2);
    gpu_download(kc, kv.k, cache);
    gpu_download(vc, kv.v, cache);
    gpu_download(ksc, kv.k_scale, nsc * 4);
    gpu_download(vsc, kv.v_scale, nsc * 4);

    char what[128];
    snprintf(what, sizeof(what), "qk_norm_rope n_tokens=%d n_heads=%d n_kv=%d", c->n_tokens,
             c->n_heads, c->n_kv);
    gpu_check_bf16(what, qo, qref, qatol, nq, 1e-2, 4e-3);

    size_t written = 0;
    for (int t = 0; t < c->n_tokens; t++) {
        if (slot[t] < 0)
            continue;
        for (int g = 0; g < c->n_kv; g++) {
            const size_t h = (size_t)slot[t] * c->n_kv + g;
            const uint16_t *vsrc = qkv + ((size_t)t * heads + c->n_heads + c->n_kv + g) * HD;
            float vamax = 0.0f;
            for (int i = 0; i < HD; i++)
                vamax = fmaxf(vamax, fabsf(bf16_to_f32(vsrc[i])));
            const float vscale = vamax > 0.0f ? vamax / 448.0f : 1.0f;
            if (memcmp(&vsc[h], &vscale, 4) != 0)
                fail_msg("%s: v scale of token %d kv head %d is %.9g, expected %.9g", what, t, g,
                         vsc[h], vscale);
            for (int i = 0; i < HD; i++) {
                uint8_t want = f32_to_e4m3(bf16_to_f32(vsrc[i]) / vscale);
                if (vc[h * HD + i] != want)
                    fail_msg("%s: v byte %d of token %d kv head %d is 0x%02x, expected 0x%02x",
                             what, i, t, g, vc[h * HD + i], want);
            }
            const double *kr = kref + ((size_t)t * c->n_kv + g) * HD;
            double kamax = 0.0;
            for (int i = 0; i < HD; i++)
                kamax = fmax(kamax, fabs(kr[i]));
            const double kscale = kamax > 0.0 ? kamax / 448.0 : 1.0;
            if (!(fabs(ksc[h] - kscale) <= 1e-5 * kscale))
                fail_msg("%s: k scale of token %d kv head %d is %.9g, expected %.9g", what, t, g,
                         ksc[h], kscale);
            for (int i = 0; i < HD; i++) {
                double got = e4m3_to_f32(kc[h * HD + i]) * (double)ksc[h];
                if (!(fabs(got - kr[i]) <= 0.125 * fabs(kr[i]) + 0x1p-9 * kscale))
                    fail_msg("%s: k %d of token %d kv head %d is %.6g, expected %.6g", what, i,
                             t, g, got, kr[i]);
            }
            written++;
        }
    }
    /* everything else in the pool is untouched: still 0xff */
    size_t poisoned = 0;
    for (size_t i = 0; i < nsc; i++)
        poisoned += ((const uint32_t *)ksc)[i] == 0xffffffffu &&
                    ((const uint32_t *)vsc)[i] == 0xffffffffu;
    assert_int_equal(poisoned, nsc - written);

    fp8_cuda_free(kv.k);
    fp8_cuda_free(kv.v);
    fp8_cuda_free(kv.k_scale);
    fp8_cuda_free(kv.v_scale);
    fp8_cuda_free(dqkv);
    fp8_cuda_free(dqo);
    fp8_cuda_free(dqw);
    fp8_cuda_free(dkw);
    fp8_cuda_free(dfreq);
    fp8_cuda_free(dpos);
    fp8_cuda_free(dslot);
    free(qkv);
    free(qo);
    free(qw);
    free(kw);
    free(inv_freq);
    free(pos);
    free(slot);
    free(kc);
    free(vc);
    free(ksc);
    free(vsc);
    free(qref);
    free(qatol);
    free(kref);
}

static void test_qk_norm_rope_kv_write(void **state)
{
    (void)state;
    static const struct qk_case cases[] = {
        {1, 32, 8, 16, 4, 1.0f, 0},  /* Qwen3-8B heads, one decode token */
        {3, 4, 2, 16, 2, 1.0f, 0},   /* with a padding token */
        {17, 16, 8, 7, 9, 1.0f, 0},  /* odd block size */
        {5, 8, 1, 32, 3, 1.25f, 1},  /* attn_factor, 1 + w norm weights */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        qk_case_run(800 + (uint32_t)i, &cases[i]);
}

static void test_glu(void **state)
{
    (void)state;
    static const int shapes[][2] = {{1, 12288}, {3, 1000}, {17, 77}, {2, 5000}};
    for (int c = 0; c < 4; c++) {
        const enum fp8_cuda_glu_act act = c == 3 ? FP8_CUDA_GLU_GELU_TANH : FP8_CUDA_GLU_SILU;
        uint64_t st = gpu_case_seed(900 + c);
        const int rows = shapes[c][0], inter = shapes[c][1];
        const size_t n = (size_t)rows * inter;
        uint16_t *gu = malloc(2 * n * 2), *y = malloc(n * 2);
        double *ref = malloc(n * sizeof(double)), *atol = malloc(n * sizeof(double));
        assert_non_null(gu && y && ref && atol);
        for (size_t i = 0; i < 2 * n; i++)
            gu[i] = gpu_rand_bf16(&st, -8.0f, 8.0f);
        for (int r = 0; r < rows; r++) {
            for (int i = 0; i < inter; i++) {
                double g = bf16_to_f32(gu[(size_t)r * 2 * inter + i]);
                double u = bf16_to_f32(gu[(size_t)r * 2 * inter + inter + i]);
                const double k = sqrt(2.0 / M_PI);
                const double f = act == FP8_CUDA_GLU_SILU
                                     ? g / (1.0 + exp(-g))
                                     : 0.5 * g * (1.0 + tanh(k * (g + 0.044715 * g * g * g)));
                ref[(size_t)r * inter + i] = f * u;
                atol[(size_t)r * inter + i] = 1e-6;
            }
        }
        void *dgu = gpu_upload(gu, 2 * n * 2), *dy = gpu_alloc(n * 2);
        gpu_poison(dy, n * 2);
        struct fp8_err err = {{0}};
        if (fp8_cuda_glu(dy, dgu, rows, inter, act, NULL, &err) < 0)
            fail_msg("%s", err.msg);
        gpu_download(y, dy, n * 2);
        char what[64];
        snprintf(what, sizeof(what), "glu rows=%d inter=%d act=%d", rows, inter, (int)act);
        gpu_check_bf16(what, y, ref, atol, n, 1e-2, 4e-3);
        fp8_cuda_free(dgu);
        fp8_cuda_free(dy);
        free(gu);
        free(y);
        free(ref);
        free(atol);
    }
}

static void test_norm_rejects_unsupported(void **state)
{
    (void)state;
    void *d = gpu_alloc(1 << 12);
    struct fp8_err err = {{0}};
    struct fp8_cuda_kv_cache kv = {.k = d, .v = d, .k_scale = d, .v_scale = d, .n_blocks = 1,
                                   .block_size = 16, .n_kv_heads = 1, .head_dim = 256};
    assert_int_equal(fp8_cuda_qk_norm_rope_kv_write(d, d, d, d, 1e-6f, 0, d, 1.0f, d, d, &kv, 1,
                                                    4, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "head_dim=256"));
    assert_int_equal(fp8_cuda_rmsnorm(d, d, NULL, d, 0, 64, 1e-6f, 0, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "rows=0"));
    assert_int_equal(fp8_cuda_glu(d, d, 1, 8, (enum fp8_cuda_glu_act)7, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "act=7"));
    fp8_cuda_free(d);
}

int main(void)
{
    int present = gpu_present();
    if (present <= 0)
        return present < 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rmsnorm_in_place),
        cmocka_unit_test(test_qk_norm_rope_kv_write),
        cmocka_unit_test(test_glu),
        cmocka_unit_test(test_norm_rejects_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
