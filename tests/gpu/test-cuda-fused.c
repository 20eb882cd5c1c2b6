/* The cuda backend's fused decode ops (kernels.h: linear_glu, linear_add_rms_norm) against
 * the same ops on the ref backend, which runs each as the composition of linear, glu and
 * add_rms_norm that defines it, on the same stored inputs: bf16 x and residual, f32 norm
 * weights, e4m3 weights with row scales (quantized once on the host by
 * fp8_quantize_rows_e4m3 and uploaded to both backends). Fresh random inputs per case;
 * rows 1, 3, 16, 32 (one fused GEMV; 64 too for linear_add_rms_norm), 33 and 70 (more rows
 * than the fused kernels take: cuda runs the composition); in-dims 4096, 12288 and 1040
 * (not a multiple of 64); glu widths 65 and 33 and norm widths 136 and 1000 (not multiples
 * of 16), and 100 (not a multiple of 8: the composition); both norm kinds, both
 * activations. Every cuda launch runs twice over a poisoned output (the norm tail's
 * block counter must be back at 0 for the second one).
 *
 * Bounds, per element, from where the backends round differently (ref keeps fp32
 * activations, cuda rounds each to bf16: 2^-9 relative; 2^-8 leaves room for the fp32
 * summation order), with T = sum_k |x_k W_ok| s_o computed here in float64:
 * - linear_glu: gate g and up u within dg = 2^-8 |g| + 1e-5 T_g (and du likewise); act'
 *   lies in [-0.1, 1.1] for silu and tanh-gelu, so
 *   |cuda - ref| <= 2^-8 |ref| + 1.1 dg (|u| + du) + |act(g)| du.
 * - linear_add_rms_norm, the residual: y rounded, then the sum rounded:
 *   b_i = 2^-8 (|ref| + |y|) + 1e-5 T.
 * - its normalized output: the residual errors b move 1/rms by at most E = ||b|| / ||r||
 *   relative (first order), so |cuda - ref| <= |w'_i| inv b_i + |ref| (E + 2^-8).
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

enum fused_op { OP_LINEAR_GLU, OP_LINEAR_ADD_RMS_NORM };

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
    return act == FP8_GLU_SILU ? g / (1.0 + exp(-g))
                               : 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
}

/* Runs the case's op on backend b (twice on cuda, poisoning the outputs in between). */
static void run_op(struct pair *p, int b, const struct fused_case *c, struct fp8_tensor *t,
                   const uint16_t *res)
{
    /* t: x, w, norm_w, scratch, residual, out */
    struct fp8_backend *be = p->be[b];
    struct fp8_err err = {{0}};
    const size_t out_bytes = (size_t)fp8_tensor_nbytes(&t[5]);
    uint8_t *poison = malloc(out_bytes);
    assert_non_null(poison);
    memset(poison, 0xff, out_bytes);
    for (int rep = 0; rep < (b == 0 ? 2 : 1); rep++) {
        if (rep > 0)
            must(be->ops->tensor_set(be, &t[5], poison, NULL, &err), &err);
        if (c->op == OP_LINEAR_GLU) {
            be->ops->linear_glu(be, &t[0], &t[1], c->act, &t[3], &t[5]);
        } else {
            if (rep > 0) /* the residual again as it was: the add must not happen twice */
                must(be->ops->tensor_set(be, &t[4], res, NULL, &err), &err);
            be->ops->linear_add_rms_norm(be, &t[0], &t[1], &t[3], &t[4], &t[2], EPS, c->kind,
                                         &t[5]);
        }
        must(be->ops->sync(be, &err), &err);
    }
    free(poison);
}

static void run_case(uint32_t id, const struct fused_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const int n = c->rows, in = c->in, glu = c->op == OP_LINEAR_GLU;
    const int wrows = glu ? 2 * c->out : c->out;
    const size_t nx = (size_t)n * in, no = (size_t)n * c->out;
    uint16_t *x = malloc(nx * 2), *res = malloc(no * 2);
    float *nw = malloc((size_t)c->out * 4), *wf = malloc((size_t)wrows * in * 4);
    float *ws = malloc((size_t)wrows * 4);
    uint8_t *wq = malloc((size_t)wrows * in);
    double *got = malloc(no * 8), *want = malloc(no * 8), *atol = malloc(no * 8);
    double *got_r = malloc(no * 8), *want_r = malloc(no * 8), *atol_r = malloc(no * 8);
    double *sum = malloc((size_t)wrows * 8), *terms = malloc((size_t)wrows * 8);
    float *gf = malloc(no * 4);
    assert_non_null(x && res && nw && wf && ws && wq && got && want && atol && got_r && want_r &&
                    atol_r && sum && terms && gf);
    for (size_t i = 0; i < nx; i++)
        x[i] = gpu_rand_bf16(&st, -2.0f, 2.0f);
    for (size_t i = 0; i < no; i++)
        res[i] = gpu_rand_bf16(&st, -1.0f, 1.0f);
    for (int i = 0; i < c->out; i++)
        nw[i] = gpu_urand(&st, c->kind == FP8_NORM_RMS ? 0.5f : -0.5f, 1.5f);
    for (size_t i = 0; i < (size_t)wrows * in; i++)
        wf[i] = gpu_urand(&st, -1.0f, 1.0f) / sqrtf((float)in);
    fp8_quantize_rows_e4m3(wf, wrows, in, wq, ws);

    struct pair p;
    pair_open(&p, n);
    /* x, w, norm_w, scratch, residual, out */
    struct fp8_tensor t[2][6];
    for (int b = 0; b < 2; b++) {
        struct fp8_backend *be = p.be[b];
        put(be, &t[b][0], FP8_DTYPE_BF16, n, in, x, NULL);
        put(be, &t[b][1], FP8_DTYPE_E4M3, wrows, in, wq, ws);
        put(be, &t[b][2], FP8_DTYPE_F32, 1, c->out, nw, NULL);
        t[b][2] = fp8_tensor_reshape(&t[b][2], 1, (int64_t[]){c->out});
        put(be, &t[b][3], FP8_DTYPE_BF16, n, wrows, NULL, NULL);
        put(be, &t[b][4], FP8_DTYPE_BF16, n, c->out, res, NULL);
        put(be, &t[b][5], FP8_DTYPE_BF16, n, c->out, NULL, NULL);
        run_op(&p, b, c, t[b], res);
    }
    get(p.be[0], &t[0][5], got);
    get(p.be[1], &t[1][5], want);
    get(p.be[0], &t[0][4], got_r);
    get(p.be[1], &t[1][4], want_r);

    const double u = 0x1p-8;
    for (int r = 0; r < n; r++) {
        for (int o = 0; o < wrows; o++) {
            double s = 0.0, a = 0.0;
            for (int k = 0; k < in; k++) {
                const double tk = (double)bf16_to_f32(x[(size_t)r * in + k]) *
                                  e4m3_to_f32(wq[(size_t)o * in + k]);
                s += tk;
                a += fabs(tk);
            }
            sum[o] = s * ws[o];
            terms[o] = a * ws[o];
        }
        double rr = 0.0, bb = 0.0;
        for (int o = 0; o < c->out; o++) {
            const size_t i = (size_t)r * c->out + o;
            if (glu) {
                const double g = sum[o], up = sum[c->out + o];
                const double dg = u * fabs(g) + 1e-5 * terms[o];
                const double du = u * fabs(up) + 1e-5 * terms[c->out + o];
                atol[i] = 1.1 * dg * (fabs(up) + du) + fabs(act_f64(c->act, g)) * du;
            } else {
                atol_r[i] = u * (fabs(want_r[i]) + fabs(sum[o])) + 1e-5 * terms[o];
                rr += want_r[i] * want_r[i];
                bb += atol_r[i] * atol_r[i];
            }
        }
        if (!glu) {
            const double inv = 1.0 / sqrt(rr / c->out + EPS), e = sqrt(bb / rr);
            for (int o = 0; o < c->out; o++) {
                const size_t i = (size_t)r * c->out + o;
                const double w = c->kind == FP8_NORM_RMS ? nw[o] : 1.0 + nw[o];
                atol[i] = fabs(w) * inv * atol_r[i] + fabs(want[i]) * e;
            }
        }
    }
    char what[160];
    snprintf(what, sizeof(what), "%s rows=%d in=%d out=%d kind=%d act=%d",
             glu ? "linear_glu" : "linear_add_rms_norm", n, in, c->out, (int)c->kind,
             (int)c->act);
    for (size_t i = 0; i < no; i++)
        gf[i] = (float)got[i]; /* cuda's bf16 values, exactly */
    gpu_check_out(what, gf, 1, want, atol, no, u, 1e-2);
    if (!glu) {
        strcat(what, " (residual)");
        for (size_t i = 0; i < no; i++)
            gf[i] = (float)got_r[i];
        gpu_check_out(what, gf, 1, want_r, atol_r, no, 0.0, 1e-2);
    }

    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 6; i++)
            p.be[b]->ops->tensor_free(p.be[b], &t[b][i]);
    pair_close(&p);
    void *bufs[] = {x, res, nw, wf, ws, wq, got, want, atol, got_r, want_r, atol_r, sum, terms, gf};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(bufs[i]);
}

static void test_linear_glu(void **state)
{
    (void)state;
    static const struct fused_case cases[] = {
        {OP_LINEAR_GLU, 1, 4096, 65, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_GLU, 3, 1040, 96, FP8_NORM_RMS, FP8_GLU_GELU_TANH},
        {OP_LINEAR_GLU, 16, 4096, 48, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_GLU, 32, 1040, 65, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_GLU, 33, 1040, 40, FP8_NORM_RMS, FP8_GLU_GELU_TANH},
        {OP_LINEAR_GLU, 70, 1040, 33, FP8_NORM_RMS, FP8_GLU_SILU},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(100 + (uint32_t)i, &cases[i]);
}

static void test_linear_add_rms_norm(void **state)
{
    (void)state;
    static const struct fused_case cases[] = {
        {OP_LINEAR_ADD_RMS_NORM, 1, 4096, 1000, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD_RMS_NORM, 3, 1040, 136, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_SILU},
        {OP_LINEAR_ADD_RMS_NORM, 16, 12288, 256, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD_RMS_NORM, 64, 1040, 136, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD_RMS_NORM, 5, 1040, 100, FP8_NORM_RMS, FP8_GLU_SILU},
        {OP_LINEAR_ADD_RMS_NORM, 70, 1040, 136, FP8_NORM_RMS_PLUS_ONE, FP8_GLU_SILU},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(200 + (uint32_t)i, &cases[i]);
}

int main(void)
{
    int present = gpu_present();
    if (present <= 0)
        return present < 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_glu),
        cmocka_unit_test(test_linear_add_rms_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
