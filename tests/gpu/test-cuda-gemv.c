/* fp8_cuda_gemv_e4m3 against a float64 CPU product over the same e4m3 weights and bf16
 * activations, on fresh random inputs per case, for the decode shapes of Qwen3-8B (cut
 * down in out) and odd ones: 1, 3, 17, 33, 64 rows; in a multiple of 16 but not of 64 or
 * 128; out not a multiple of 16. Each tiling the launcher can pick is forced at least once.
 *
 * Bounds: the output is bf16 (relative rounding 2^-9), accumulated in fp32 in another
 * order than the reference: per element |out - ref| <= 1e-2 |ref| + 1e-5 sum|terms|,
 * and ||out - ref|| / ||ref|| <= 4e-3. The fp32 output (logits) gets 1e-4 and 3e-5. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/gpu/gpu_check.h"

struct gemv_case {
    int rows, in, out, m_tiles; /* m_tiles 0: the launcher's pick */
    int subnormal_only;         /* weights drawn from the e4m3 subnormal codes alone */
    int overlap;                /* with m_tiles forced: launch as a programmatic dependent */
    int out_f32;                /* fp32 output (logits) instead of bf16 */
};

static void run_case(uint32_t id, const struct gemv_case *c)
{
    uint64_t st = gpu_case_seed(id);
    const size_t nx = (size_t)c->rows * c->in, nw = (size_t)c->out * c->in;
    const size_t ny = (size_t)c->rows * c->out;
    const size_t ysz = c->out_f32 ? 4 : 2;
    uint16_t *x = malloc(nx * 2);
    void *y = malloc(ny * ysz);
    uint8_t *w = malloc(nw);
    float *scale = malloc((size_t)c->out * 4);
    double *ref = malloc(ny * sizeof(double)), *atol = malloc(ny * sizeof(double));
    assert_non_null(x && y && w && scale && ref && atol);

    for (size_t i = 0; i < nx; i++)
        x[i] = gpu_rand_bf16(&st, -2.0f, 2.0f);
    for (size_t i = 0; i < nw; i++) {
        uint8_t b = gpu_rand_e4m3(&st);
        w[i] = c->subnormal_only ? (uint8_t)((b & 0x80) | (1 + (b & 0x7) % 7)) : b;
    }
    for (int o = 0; o < c->out; o++)
        scale[o] = gpu_urand(&st, 0.5f, 2.0f) / (c->subnormal_only ? 1.0f / 256 : 448.0f);

    for (int r = 0; r < c->rows; r++) {
        for (int o = 0; o < c->out; o++) {
            double s = 0.0, a = 0.0;
            for (int k = 0; k < c->in; k++) {
                double t = (double)bf16_to_f32(x[(size_t)r * c->in + k]) *
                           (double)e4m3_to_f32(w[(size_t)o * c->in + k]);
                s += t;
                a += fabs(t);
            }
            ref[(size_t)r * c->out + o] = s * scale[o];
            atol[(size_t)r * c->out + o] = 1e-5 * a * scale[o] + 1e-30;
        }
    }

    void *dx = gpu_upload(x, nx * 2), *dw = gpu_upload(w, nw);
    void *ds = gpu_upload(scale, (size_t)c->out * 4), *dy = gpu_alloc(ny * ysz);
    gpu_poison(dy, ny * ysz);
    /* forced configurations with overlap also ask L2 for the rows' first KiB */
    struct fp8_cuda_gemv_cfg cfg = {c->m_tiles, c->overlap, c->overlap ? 1024 : 0};
    struct fp8_err err = {{0}};
    int rc = fp8_cuda_gemv_e4m3(dy, c->out_f32, dx, dw, ds, c->rows, c->in, c->out,
                                c->m_tiles ? &cfg : NULL, NULL, &err);
    if (rc < 0)
        fail_msg("%s", err.msg);
    gpu_download(y, dy, ny * ysz);

    char what[128];
    snprintf(what, sizeof(what), "gemv rows=%d in=%d out=%d m_tiles=%d overlap=%d%s%s", c->rows,
             c->in, c->out, c->m_tiles, c->overlap, c->subnormal_only ? " subnormal weights" : "",
             c->out_f32 ? " f32 out" : "");
    if (c->out_f32)
        gpu_check_out(what, y, 1, ref, atol, ny, 1e-4, 3e-5);
    else
        gpu_check_bf16(what, y, ref, atol, ny, 1e-2, 4e-3);

    fp8_cuda_free(dx);
    fp8_cuda_free(dw);
    fp8_cuda_free(ds);
    fp8_cuda_free(dy);
    free(x);
    free(y);
    free(w);
    free(scale);
    free(ref);
    free(atol);
}

static void test_gemv_decode_shapes(void **state)
{
    (void)state;
    /* Qwen3-8B in-dims with the out-dim cut down so the CPU reference stays cheap */
    static const struct gemv_case cases[] = {
        {1, 4096, 384, 0, 0, 0, 0},  {16, 4096, 256, 0, 0, 0, 0}, {1, 12288, 64, 0, 0, 0, 0},
        {16, 12288, 48, 0, 0, 0, 0}, {8, 4096, 200, 0, 0, 0, 0},  {4, 4096, 1024, 2, 0, 1, 0},
        {1, 4096, 999, 0, 0, 0, 1}, {16, 4096, 333, 0, 0, 0, 1}, /* fp32 logits */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(100 + (uint32_t)i, &cases[i]);
}

static void test_gemv_odd_shapes(void **state)
{
    (void)state;
    static const struct gemv_case cases[] = {
        {1, 16, 1, 0, 0, 0, 0},    {3, 80, 37, 0, 0, 0, 0},    {17, 1040, 130, 0, 0, 0, 0},
        {1, 2096, 77, 0, 0, 0, 0}, {33, 512, 100, 0, 0, 0, 0}, {64, 256, 48, 0, 0, 0, 0},
        {9, 48, 19, 0, 0, 0, 0},   {2, 112, 3, 0, 0, 0, 0},    {31, 1008, 65, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(200 + (uint32_t)i, &cases[i]);
}

static void test_gemv_every_tiling(void **state)
{
    (void)state;
    static const struct gemv_case cases[] = {
        {1, 1040, 70, 1, 0, 0, 0},  {1, 1040, 70, 2, 0, 1, 0},  {1, 1040, 70, 1, 0, 1, 0},
        {12, 1040, 70, 1, 0, 1, 0}, {12, 1040, 70, 2, 0, 0, 0}, {12, 1040, 70, 2, 0, 1, 0},
        {20, 528, 70, 1, 0, 0, 0},  {20, 528, 70, 2, 0, 1, 0},  {50, 528, 70, 1, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(300 + (uint32_t)i, &cases[i]);
}

/* The e4m3 -> bf16 widening must keep subnormal codes (2^-9 .. 7 * 2^-9). */
static void test_gemv_subnormal_weights(void **state)
{
    (void)state;
    static const struct gemv_case cases[] = {{1, 256, 40, 0, 1, 0, 0}, {16, 4096, 32, 0, 1, 0, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(400 + (uint32_t)i, &cases[i]);
}

/* Two GEMVs in a row, the second reading what the first wrote, both launched as
 * programmatic dependents: the second may start early but must read x only once the first
 * is complete. Run eagerly on a stream and replayed from a captured graph (poisoned in
 * between): the same bytes, and the second product matches the CPU over the first's output. */
static void test_gemv_chain_overlap_and_graph(void **state)
{
    (void)state;
    uint64_t st = gpu_case_seed(450);
    const int rows = 5, d0 = 4096, d1 = 1024, d2 = 1000;
    uint16_t *x = malloc((size_t)rows * d0 * 2), *y1 = malloc((size_t)rows * d1 * 2);
    uint16_t *y2 = malloc((size_t)rows * d2 * 2), *y2g = malloc((size_t)rows * d2 * 2);
    uint8_t *w1 = malloc((size_t)d1 * d0), *w2 = malloc((size_t)d2 * d1);
    float *s1 = malloc(d1 * 4), *s2 = malloc(d2 * 4);
    double *ref = malloc((size_t)rows * d2 * sizeof(double));
    double *atol = malloc((size_t)rows * d2 * sizeof(double));
    assert_non_null(x && y1 && y2 && y2g && w1 && w2 && s1 && s2 && ref && atol);
    for (size_t i = 0; i < (size_t)rows * d0; i++)
        x[i] = gpu_rand_bf16(&st, -2.0f, 2.0f);
    for (size_t i = 0; i < (size_t)d1 * d0; i++)
        w1[i] = gpu_rand_e4m3(&st);
    for (size_t i = 0; i < (size_t)d2 * d1; i++)
        w2[i] = gpu_rand_e4m3(&st);
    for (int i = 0; i < d1; i++)
        s1[i] = gpu_urand(&st, 0.5f, 2.0f) / 448.0f / 64.0f;
    for (int i = 0; i < d2; i++)
        s2[i] = gpu_urand(&st, 0.5f, 2.0f) / 448.0f;
    void *dx = gpu_upload(x, (size_t)rows * d0 * 2), *dw1 = gpu_upload(w1, (size_t)d1 * d0);
    void *dw2 = gpu_upload(w2, (size_t)d2 * d1), *ds1 = gpu_upload(s1, d1 * 4);
    void *ds2 = gpu_upload(s2, d2 * 4);
    void *dy1 = gpu_alloc((size_t)rows * d1 * 2), *dy2 = gpu_alloc((size_t)rows * d2 * 2);
    struct fp8_err err = {{0}};
    void *stream = NULL, *exec = NULL;
    if (fp8_cuda_stream_create(&stream, &err) < 0)
        fail_msg("%s", err.msg);
    const struct fp8_cuda_gemv_cfg cfg = {1, 1, 2048};
    for (int pass = 0; pass < 2; pass++) {
        gpu_poison(dy1, (size_t)rows * d1 * 2);
        gpu_poison(dy2, (size_t)rows * d2 * 2);
        if (fp8_cuda_sync(&err) < 0)
            fail_msg("%s", err.msg);
        if (pass == 1 && fp8_cuda_graph_capture_begin(stream, &err) < 0)
            fail_msg("%s", err.msg);
        if (fp8_cuda_gemv_e4m3(dy1, 0, dx, dw1, ds1, rows, d0, d1, &cfg, stream, &err) < 0 ||
            fp8_cuda_gemv_e4m3(dy2, 0, dy1, dw2, ds2, rows, d1, d2, &cfg, stream, &err) < 0)
            fail_msg("%s", err.msg);
        if (pass == 1) {
            if (fp8_cuda_graph_capture_end(stream, &exec, &err) < 0 ||
                fp8_cuda_graph_launch(exec, stream, &err) < 0)
                fail_msg("%s", err.msg);
        }
        gpu_download(pass == 0 ? y2 : y2g, dy2, (size_t)rows * d2 * 2);
    }
    gpu_download(y1, dy1, (size_t)rows * d1 * 2);
    assert_memory_equal(y2, y2g, (size_t)rows * d2 * 2);
    for (int r = 0; r < rows; r++) {
        for (int o = 0; o < d2; o++) {
            double s = 0.0, a = 0.0;
            for (int k = 0; k < d1; k++) {
                double t = (double)bf16_to_f32(y1[(size_t)r * d1 + k]) *
                           e4m3_to_f32(w2[(size_t)o * d1 + k]);
                s += t;
                a += fabs(t);
            }
            ref[(size_t)r * d2 + o] = s * s2[o];
            atol[(size_t)r * d2 + o] = 1e-5 * a * s2[o] + 1e-30;
        }
    }
    gpu_check_bf16("gemv chain (second product)", y2, ref, atol, (size_t)rows * d2, 1e-2, 4e-3);
    fp8_cuda_graph_destroy(exec);
    fp8_cuda_stream_destroy(stream);
    void *dev[] = {dx, dw1, dw2, ds1, ds2, dy1, dy2};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
        fp8_cuda_free(dev[i]);
    free(x);
    free(y1);
    free(y2);
    free(y2g);
    free(w1);
    free(w2);
    free(s1);
    free(s2);
    free(ref);
    free(atol);
}

static void test_gemv_rejects_unsupported(void **state)
{
    (void)state;
    void *d = gpu_alloc(1 << 16);
    struct fp8_err err = {{0}};
    struct fp8_cuda_gemv_cfg bad = {4, 0, 0}, bad_pf = {1, 1, 24};
    assert_int_equal(fp8_cuda_gemv_e4m3(d, 0, d, d, d, 1, 24, 8, NULL, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "multiple of 16"));
    assert_non_null(strstr(err.msg, "in=24"));
    assert_int_equal(fp8_cuda_gemv_e4m3(d, 0, d, d, d, 65, 64, 8, NULL, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "rows=65"));
    assert_int_equal(fp8_cuda_gemv_e4m3(d, 0, d, d, d, 40, 64, 8, &bad, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "m_tiles=4"));
    assert_int_equal(fp8_cuda_gemv_e4m3(d, 0, d, d, d, 1, 64, 8, &bad_pf, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "prefetch=24"));
    /* the norm prepared in an epilogue needs add and both outputs; its use at most 8 rows */
    const struct fp8_cuda_gemv_fuse no_add = {NULL, 0.0f, 0, 0, 0, 0, (const float *)d,
                                              (uint16_t *)d, (float *)d, NULL},
                                    wide = {NULL, 1e-6f, 0, 0, 0, 0, NULL, NULL, NULL,
                                            (const float *)d};
    assert_int_equal(fp8_cuda_gemv_e4m3_fused(d, 0, d, d, d, 1, 64, 8, &no_add, NULL, NULL,
                                              &err), -EINVAL);
    assert_non_null(strstr(err.msg, "out_norm=yes"));
    assert_int_equal(fp8_cuda_gemv_e4m3_fused(d, 0, d, d, d, 9, 64, 8, &wide, NULL, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "rows=9"));
    const struct fp8_cuda_gemv_fuse both = {NULL, 1e-6f, 0, 0, 0, 1, (const float *)d,
                                            (uint16_t *)d, (float *)d, (const float *)d};
    assert_int_equal(fp8_cuda_gemv_e4m3_fused(d, 0, d, d, d, 1, 64, 8, &both, NULL, NULL, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "in_ss=yes"));
    assert_int_equal(fp8_cuda_gemv_e4m3(d, 0, NULL, d, d, 1, 64, 8, NULL, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "NULL"));
    fp8_cuda_free(d);
}

int main(void)
{
    int present = gpu_present();
    if (present <= 0)
        return present < 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemv_decode_shapes),
        cmocka_unit_test(test_gemv_odd_shapes),
        cmocka_unit_test(test_gemv_every_tiling),
        cmocka_unit_test(test_gemv_subnormal_weights),
        cmocka_unit_test(test_gemv_chain_overlap_and_graph),
        cmocka_unit_test(test_gemv_rejects_unsupported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
