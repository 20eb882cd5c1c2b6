/* The cuda backend's fused decode ops (kernels.h: rms_norm_linear, rms_norm_linear_glu,
 * linear_add) against the same ops on the ref backend, which runs each as the composition
 * of rms_norm, linear, glu and the residual add that defines it, on the same stored
 * inputs: bf16 x and residual, f32 norm weights, e4m3 weights with row scales (quantized
 * once on the host by fp8_quantize_rows_e4m3 and uploaded to both). Fresh random inputs
 * per case; every path cuda takes: up to 4 rows the norm inside the GEMV (1, 3, 4; but 4
 * rows of 12288 exceed its shared-memory stage and take the norm kernel), 5-32
 * a norm kernel then the GEMV with its glu epilogue (5, 8, 9, 16, 17, 32), more rows the
 * composition (33, 70); in-dims 4096, 12288 and 1040 (not a multiple of 64: a partial
 * last chunk); out 77, 130 and glu widths 65, 33 (not multiples of 16) up to 64 rows; at
 * 70 rows the linear is the FP8 GEMM, whose out must be a multiple of 8 (it refuses
 * others by name: tests/gpu/test-cuda-gemm.c), so glu width 32 there; both norm kinds
 * and both activations.
 *
 * Bounds, per element, from where the two backends round differently (ref keeps fp32
 * activations; cuda rounds to bf16, 2^-9 relative, at most twice on every path, so 2^-8
 * covers it with the fp32 summation order to spare):
 * - rms_norm_linear: each normalized input term once, the output once:
 *   |cuda - ref| <= 2^-8 |ref| + 2^-8 T, T = sum_k |xn_k W_ok| s_o (xn = x / rms * w',
 *   computed here in float64 from the inputs).
 * - linear_add: y rounded, then the sum rounded: <= 2^-8 (|y| + |ref|) + 2^-8 T.
 * - rms_norm_linear_glu: gate g and up u each within dg = 2^-8 (|g| + T_g) and
 *   du = 2^-8 (|u| + T_u); act' lies in [-0.1, 1.1] for silu and tanh-gelu, so
 *   |cuda - ref| <= 2^-8 |ref| + 1.1 dg (|u| + du) + |act(g)| du.
 * and over every case ||cuda - ref|| / ||ref|| <= 1e-2. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels/kernels.h"
#include "tests/gpu/gpu_check.h"

#define BLOCK 16
#define EPS 1e-6f

enum fused_op { OP_NORM_LINEAR, OP_NORM_LINEAR_GLU, OP_LINEAR_ADD };

struct fused_case {
    enum fused_op op;
    int rows, in, out; /* out: channels of the result (I for glu; the weight has 2 I rows) */
    enum fp8_norm kind;
    enum fp8_glu_act act;
};

struct pair {
    struct fp8_backend *be[2]; /* cuda, ref */
    struct fp8_kv_cache kv[2];
};

static void must(int rc, const struct fp8_err *err)
{
    if (rc < 0)
        fail_msg("%s", err->msg);
}

/* Both backends with a small cache and one step of `rows` tokens of one sequence. */
static void pair_open(struct pair *p, int rows)
{
    struct fp8_err err = {{0}};
    static int32_t tokens[80], pos[80], bt[8], seq_start[2], seq_len[1];
    static uint8_t want[1];
    for (int i = 0; i < rows; i++) {
        tokens[i] = 0;
        pos[i] = i;
    }
    for (int i = 0; i < 8; i++)
        bt[i] = i;
    seq_start[0] = 0;
    seq_start[1] = rows;
    seq_len[0] = rows;
    want[0] = 0;
    const struct fp8_batch b = {rows, tokens, pos, pos, 1, seq_start, seq_len, bt, 8, BLOCK,
                                want, NULL};
    const struct fp8_kv_cache_desc d = {FP8_DTYPE_E4M3, 1, 8, BLOCK, 1, 128};
    const char *names[2] = {"cuda", "ref"};
    for (int i = 0; i < 2; i++) {
        must(fp8_backend_create(names[i], &p->be[i], &err), &err);
        p->be[i]->enforce_eager = true;
        must(p->be[i]->ops->kv_cache_alloc(p->be[i], &p->kv[i], &d, &err), &err);
        must(p->be[i]->ops->step_begin(p->be[i], &b, NULL, 0, &err), &err);
    }
}

static void pair_close(struct pair *p)
{
    for (int i = 0; i < 2; i++) {
        p->be[i]->ops->kv_cache_free(p->be[i], &p->kv[i]);
        fp8_backend_free(p->be[i]);
    }
}

/* t on backend be from host values: bf16 bits for activations (f32 on ref), e4m3 bytes
 * with scales, or f32. */
static void put(struct fp8_backend *be, struct fp8_tensor *t, enum fp8_dtype dtype, int64_t r,
                int64_t c, const void *data, const float *scale)
{
    struct fp8_err err = {{0}};
    const int64_t ne[2] = {r, c};
    const enum fp8_dtype dt = dtype == FP8_DTYPE_BF16 ? be->act_dtype : dtype;
    must(be->ops->tensor_alloc(be, t, dt, 2, ne, &err), &err);
    if (!data)
        return;
    float *f = NULL;
    if (dtype == FP8_DTYPE_BF16 && dt == FP8_DTYPE_F32) {
        f = malloc((size_t)(r * c) * sizeof(float));
        assert_non_null(f);
        for (int64_t i = 0; i < r * c; i++)
            f[i] = bf16_to_f32(((const uint16_t *)data)[i]);
        data = f;
    }
    must(be->ops->tensor_set(be, t, data, scale, &err), &err);
    free(f);
}

/* An activation tensor's values as float64. */
static void get(struct fp8_backend *be, const struct fp8_tensor *t, double *out)
{
    struct fp8_err err = {{0}};
    const size_t n = (size_t)fp8_tensor_numel(t);
    void *h = malloc(n * 4);
    assert_non_null(h);
    must(be->ops->tensor_get(be, t, h, NULL, &err), &err);
    for (size_t i = 0; i < n; i++)
        out[i] = t->dtype == FP8_DTYPE_F32 ? (double)((float *)h)[i]
                                           : (double)bf16_to_f32(((uint16_t *)h)[i]);
    free(h);
}

static double act_f64(enum fp8_glu_act act, double g)
{
    const double k = 0.7978845608028654; /* sqrt(2 / pi) */
    return act == FP8_GLU_SILU ? g / (1.0 + exp(-g))
                               : 0.5 * g * (1.0 + tanh(k * (g + 0.044715 * g * g * g)));
}

static void run_case(uint32_t id, const struct fused_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const int n = c->rows, in = c->in;
    const int wrows = c->op == OP_NORM_LINEAR_GLU ? 2 * c->out : c->out;
    uint16_t *x = malloc((size_t)n * in * 2), *res = malloc((size_t)n * c->out * 2);
    float *nw = malloc((size_t)in * 4), *wf = malloc((size_t)wrows * in * 4);
    float *ws = malloc((size_t)wrows * 4);
    uint8_t *wq = malloc((size_t)wrows * in);
    double *got = malloc((size_t)n * c->out * 8), *want = malloc((size_t)n * c->out * 8);
    double *atol = malloc((size_t)n * c->out * 8), *xn = malloc((size_t)in * 8);
    double *sum = malloc((size_t)wrows * 8), *terms = malloc((size_t)wrows * 8);
    assert_non_null(x && res && nw && wf && ws && wq && got && want && atol && xn && sum && terms);
    for (size_t i = 0; i < (size_t)n * in; i++)
        x[i] = gpu_rand_bf16(&st, -2.0f, 2.0f);
    for (size_t i = 0; i < (size_t)n * c->out; i++)
        res[i] = gpu_rand_bf16(&st, -1.0f, 1.0f);
    for (int i = 0; i < in; i++)
        nw[i] = gpu_urand(&st, c->kind == FP8_NORM_RMS ? 0.5f : -0.5f, 1.5f);
    for (size_t i = 0; i < (size_t)wrows * in; i++)
        wf[i] = gpu_urand(&st, -1.0f, 1.0f) / sqrtf((float)in);
    fp8_quantize_rows_e4m3(wf, wrows, in, wq, ws);

    struct pair p;
    pair_open(&p, n);
    struct fp8_tensor tx[2], tr[2], tn[2], tw[2], tout[2], ts1[2], ts2[2];
    for (int b = 0; b < 2; b++) {
        struct fp8_backend *be = p.be[b];
        put(be, &tx[b], FP8_DTYPE_BF16, n, in, x, NULL);
        put(be, &tn[b], FP8_DTYPE_F32, 1, in, nw, NULL);
        tn[b] = fp8_tensor_reshape(&tn[b], 1, (int64_t[]){in});
        put(be, &tw[b], FP8_DTYPE_E4M3, wrows, in, wq, ws);
        put(be, &ts1[b], FP8_DTYPE_BF16, n, in, NULL, NULL);         /* xn scratch */
        put(be, &ts2[b], FP8_DTYPE_BF16, n, wrows, NULL, NULL);      /* gate_up / y scratch */
        put(be, &tr[b], FP8_DTYPE_BF16, n, c->out, res, NULL);       /* residual / out */
        tout[b] = tr[b];
        switch (c->op) {
        case OP_NORM_LINEAR:
            be->ops->rms_norm_linear(be, &tx[b], &tn[b], EPS, c->kind, &tw[b], &ts1[b], &tout[b]);
            break;
        case OP_NORM_LINEAR_GLU:
            be->ops->rms_norm_linear_glu(be, &tx[b], &tn[b], EPS, c->kind, &tw[b], c->act,
                                         &ts1[b], &ts2[b], &tout[b]);
            break;
        case OP_LINEAR_ADD:
            be->ops->linear_add(be, &tx[b], &tw[b], &ts2[b], &tout[b]);
            break;
        }
        struct fp8_err err = {{0}};
        must(be->ops->sync(be, &err), &err);
    }
    get(p.be[0], &tout[0], got);
    get(p.be[1], &tout[1], want);

    /* the bounds' terms in float64 from the stored inputs */
    for (int r = 0; r < n; r++) {
        double ss = 0.0;
        for (int k = 0; k < in; k++) {
            const double v = bf16_to_f32(x[(size_t)r * in + k]);
            ss += v * v;
        }
        const double inv = 1.0 / sqrt(ss / in + EPS);
        for (int k = 0; k < in; k++) {
            const double v = bf16_to_f32(x[(size_t)r * in + k]);
            const double w = c->kind == FP8_NORM_RMS ? nw[k] : 1.0 + nw[k];
            xn[k] = c->op == OP_LINEAR_ADD ? v : v * inv * w;
        }
        for (int o = 0; o < wrows; o++) {
            double s = 0.0, a = 0.0;
            for (int k = 0; k < in; k++) {
                const double t = xn[k] * e4m3_to_f32(wq[(size_t)o * in + k]);
                s += t;
                a += fabs(t);
            }
            sum[o] = s * ws[o];
            terms[o] = a * ws[o];
        }
        for (int o = 0; o < c->out; o++) {
            const size_t i = (size_t)r * c->out + o;
            const double u = 0x1p-8;
            if (c->op == OP_NORM_LINEAR) {
                atol[i] = u * terms[o];
            } else if (c->op == OP_LINEAR_ADD) {
                atol[i] = u * (fabs(sum[o]) + terms[o]);
            } else {
                const double g = sum[o], up = sum[c->out + o];
                const double dg = u * (fabs(g) + terms[o]), du = u * (fabs(up) + terms[c->out + o]);
                atol[i] = 1.1 * dg * (fabs(up) + du) + fabs(act_f64(c->act, g)) * du;
            }
            atol[i] += 1e-30;
        }
    }
    char what[160];
    snprintf(what, sizeof(what), "%s rows=%d in=%d out=%d kind=%d act=%d",
             c->op == OP_NORM_LINEAR ? "rms_norm_linear"
             : c->op == OP_LINEAR_ADD ? "linear_add"
                                      : "rms_norm_linear_glu",
             n, in, c->out, (int)c->kind, (int)c->act);
    float *gf = malloc((size_t)n * c->out * 4); /* cuda's bf16 values, exactly */
    assert_non_null(gf);
    for (size_t i = 0; i < (size_t)n * c->out; i++)
        gf[i] = (float)got[i];
    gpu_check_out(what, gf, 1, want, atol, (size_t)n * c->out, 0x1p-8, 1e-2);
    free(gf);

    for (int b = 0; b < 2; b++) {
        struct fp8_backend *be = p.be[b];
        struct fp8_tensor *ts[] = {&tx[b], &tn[b], &tw[b], &ts1[b], &ts2[b], &tr[b]};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
            be->ops->tensor_free(be, ts[i]);
    }
    pair_close(&p);
    free(x);
    free(res);
    free(nw);
    free(wf);
    free(ws);
    free(wq);
    free(got);
    free(want);
    free(atol);
    free(xn);
    free(sum);
    free(terms);
}

static void test_rms_norm_linear(void **state)
{
    (void)state;
    static const struct fused_case cases[] = {
        {OP_NORM_LINEAR, 1, 4096, 77, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 3, 1040, 160, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 4, 4096, 130, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 5, 1040, 77, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 8, 1040, 130, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 9, 4096, 96, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 16, 4096, 96, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 17, 1040, 77, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 33, 1040, 50, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR, 70, 1040, 48, FP8_NORM_RMS, FP8_GLU_SILU},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(100 + (uint32_t)i, &cases[i]);
}

static void test_rms_norm_linear_glu(void **state)
{
    (void)state;
    static const struct fused_case cases[] = {
        {OP_NORM_LINEAR_GLU, 1, 4096, 65, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR_GLU, 3, 1040, 96, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_GELU_TANH},
        {OP_NORM_LINEAR_GLU, 4, 12288, 65, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR_GLU, 5, 1040, 33, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_GELU_TANH},
        {OP_NORM_LINEAR_GLU, 8, 1040, 33, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR_GLU, 9, 1040, 65, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_GELU_TANH},
        {OP_NORM_LINEAR_GLU, 16, 4096, 48, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR_GLU, 32, 1040, 65, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_NORM_LINEAR_GLU, 33, 1040, 40, FP8_NORM_RMS, FP8_GLU_GELU_TANH},
        {OP_NORM_LINEAR_GLU, 70, 1040, 32, FP8_NORM_RMS, FP8_GLU_SILU},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(200 + (uint32_t)i, &cases[i]);
}

static void test_linear_add(void **state)
{
    (void)state;
    static const struct fused_case cases[] = {
        {OP_LINEAR_ADD, 1, 4096, 77, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD, 5, 1040, 130, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD, 16, 12288, 48, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD, 64, 1040, 40, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD, 70, 1040, 40, FP8_NORM_RMS, FP8_GLU_SILU},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(300 + (uint32_t)i, &cases[i]);
}

/* linear_add_rms_norm_linear(_glu): up to 4 rows cuda prepares the norm in the residual
 * GEMV's epilogue and applies it in the next GEMV; it must give what cuda's own
 * composition of linear_add and rms_norm_linear(_glu) gives (each checked against ref
 * above), which up to 4 rows stages the norm in the GEMV with the same roundings: the
 * updated residual bit for bit (the same epilogue), the output within one bf16 rounding
 * (the sum of squares is added in another order: one ulp, 2^-7 relative, doubled for glu,
 * whose gate rounding feeds act; 1e-3 normwise); more rows are that composition, bit for
 * bit. Against ref, normwise, what the compositions allow (1e-2). */
struct chain_case {
    int rows, in, d, out; /* x (rows, in) -> residual (rows, d) -> out (rows, out) */
    int glu;
    enum fp8_norm kind;
    enum fp8_glu_act act;
};

static void run_chain(uint32_t id, const struct chain_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const int n = c->rows, wrows = c->glu ? 2 * c->out : c->out;
    uint16_t *x = malloc((size_t)n * c->in * 2), *res = malloc((size_t)n * c->d * 2);
    float *nw = malloc((size_t)c->d * 4), *wf1 = malloc((size_t)c->d * c->in * 4);
    float *wf2 = malloc((size_t)wrows * c->d * 4), *s1 = malloc((size_t)c->d * 4);
    float *s2 = malloc((size_t)wrows * 4);
    uint8_t *q1 = malloc((size_t)c->d * c->in), *q2 = malloc((size_t)wrows * c->d);
    double *out[3], *resid[3];
    for (int k = 0; k < 3; k++) {
        out[k] = malloc((size_t)n * c->out * 8);
        resid[k] = malloc((size_t)n * c->d * 8);
        assert_non_null(out[k] && resid[k]);
    }
    assert_non_null(x && res && nw && wf1 && wf2 && s1 && s2 && q1 && q2);
    for (size_t i = 0; i < (size_t)n * c->in; i++)
        x[i] = gpu_rand_bf16(&st, -2.0f, 2.0f);
    for (size_t i = 0; i < (size_t)n * c->d; i++)
        res[i] = gpu_rand_bf16(&st, -1.0f, 1.0f);
    for (int i = 0; i < c->d; i++)
        nw[i] = gpu_urand(&st, c->kind == FP8_NORM_RMS ? 0.5f : -0.5f, 1.5f);
    for (size_t i = 0; i < (size_t)c->d * c->in; i++)
        wf1[i] = gpu_urand(&st, -1.0f, 1.0f) / sqrtf((float)c->in);
    for (size_t i = 0; i < (size_t)wrows * c->d; i++)
        wf2[i] = gpu_urand(&st, -1.0f, 1.0f) / sqrtf((float)c->d);
    fp8_quantize_rows_e4m3(wf1, c->d, c->in, q1, s1);
    fp8_quantize_rows_e4m3(wf2, wrows, c->d, q2, s2);

    struct pair p;
    pair_open(&p, n);
    /* k = 0: cuda's fused op, 1: cuda's composition, 2: ref's op */
    for (int k = 0; k < 3; k++) {
        struct fp8_backend *be = p.be[k == 2];
        struct fp8_tensor tx, tr, tn, t1, t2, ty, txn, tgu, to;
        put(be, &tx, FP8_DTYPE_BF16, n, c->in, x, NULL);
        put(be, &tr, FP8_DTYPE_BF16, n, c->d, res, NULL);
        put(be, &tn, FP8_DTYPE_F32, 1, c->d, nw, NULL);
        tn = fp8_tensor_reshape(&tn, 1, (int64_t[]){c->d});
        put(be, &t1, FP8_DTYPE_E4M3, c->d, c->in, q1, s1);
        put(be, &t2, FP8_DTYPE_E4M3, wrows, c->d, q2, s2);
        put(be, &ty, FP8_DTYPE_BF16, n, c->d, NULL, NULL);
        put(be, &txn, FP8_DTYPE_BF16, n, c->d, NULL, NULL);
        put(be, &tgu, FP8_DTYPE_BF16, n, wrows, NULL, NULL);
        put(be, &to, FP8_DTYPE_BF16, n, c->out, NULL, NULL);
        if (k != 1) {
            be->ops->linear_add_rms_norm_linear(be, &tx, &t1, &ty, &tr, &tn, EPS, c->kind, &t2,
                                                c->act, &txn, c->glu ? &tgu : NULL, &to);
        } else {
            be->ops->linear_add(be, &tx, &t1, &ty, &tr);
            if (c->glu)
                be->ops->rms_norm_linear_glu(be, &tr, &tn, EPS, c->kind, &t2, c->act, &txn,
                                             &tgu, &to);
            else
                be->ops->rms_norm_linear(be, &tr, &tn, EPS, c->kind, &t2, &txn, &to);
        }
        struct fp8_err err = {{0}};
        must(be->ops->sync(be, &err), &err);
        get(be, &to, out[k]);
        get(be, &tr, resid[k]);
        struct fp8_tensor *ts[] = {&tx, &tr, &tn, &t1, &t2, &ty, &txn, &tgu, &to};
        for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
            be->ops->tensor_free(be, ts[i]);
    }
    pair_close(&p);

    char what[160];
    snprintf(what, sizeof(what), "linear_add_rms_norm_linear%s rows=%d in=%d d=%d out=%d",
             c->glu ? " glu" : "", n, c->in, c->d, c->out);
    assert_memory_equal(resid[0], resid[1], (size_t)n * c->d * 8);
    float *gf = malloc((size_t)n * c->out * 4);
    assert_non_null(gf);
    for (size_t i = 0; i < (size_t)n * c->out; i++)
        gf[i] = (float)out[0][i];
    if (n <= 4)
        gpu_check_out(what, gf, 1, out[1], NULL, (size_t)n * c->out, c->glu ? 0x1p-6 : 0x1p-7,
                      1e-3);
    else
        assert_memory_equal(out[0], out[1], (size_t)n * c->out * 8);
    free(gf);
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < (size_t)n * c->out; i++) {
        num += (out[0][i] - out[2][i]) * (out[0][i] - out[2][i]);
        den += out[2][i] * out[2][i];
    }
    if (!(sqrt(num / den) <= 1e-2))
        fail_msg("%s: cuda vs ref ||diff|| / ||ref|| = %.3g > 1e-2", what, sqrt(num / den));
    for (int k = 0; k < 3; k++) {
        free(out[k]);
        free(resid[k]);
    }
    free(x);
    free(res);
    free(nw);
    free(wf1);
    free(wf2);
    free(s1);
    free(s2);
    free(q1);
    free(q2);
}

static void test_linear_add_rms_norm_linear(void **state)
{
    (void)state;
    static const struct chain_case cases[] = {
        {1, 4096, 4096, 77, 0, FP8_NORM_RMS, FP8_GLU_SILU},
        {1, 4096, 4096, 65, 1, FP8_NORM_RMS, FP8_GLU_SILU},
        {3, 1040, 1040, 130, 0, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_SILU},
        {4, 12288, 1040, 33, 1, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_GELU_TANH},
        {4, 528, 4096, 200, 0, FP8_NORM_RMS, FP8_GLU_SILU},
        {8, 1040, 528, 96, 1, FP8_NORM_RMS, FP8_GLU_SILU},
        {9, 1040, 1040, 77, 0, FP8_NORM_RMS, FP8_GLU_SILU},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_chain(400 + (uint32_t)i, &cases[i]);
}

int main(void)
{
    int present = gpu_present();
    if (present <= 0)
        return present < 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rms_norm_linear),
        cmocka_unit_test(test_rms_norm_linear_glu),
        cmocka_unit_test(test_linear_add),
        cmocka_unit_test(test_linear_add_rms_norm_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
