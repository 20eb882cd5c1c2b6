/* Shared by the GPU kernel tests: random inputs, device buffers that fail the test on any
 * CUDA error, and the bf16 output comparison. Include after <cmocka.h>. */
#ifndef FP8_TESTS_GPU_CHECK_H
#define FP8_TESTS_GPU_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/numeric.h"
#include "common/rng.h"
#include "kernels/cuda/cuda_ops.h"

/* Every case draws its own inputs: base seed (FP8D_TEST_SEED, default fixed so CI is
 * deterministic) mixed with the case number; printed on failure through the case name. */
static inline uint64_t gpu_case_seed(uint32_t case_id)
{
    const char *env = getenv("FP8D_TEST_SEED");
    uint64_t base = env ? strtoull(env, NULL, 0) : 0x5eed0f8dull;
    uint64_t st = base ^ ((uint64_t)case_id << 32);
    return splitmix64_next(&st);
}

static inline float gpu_urand(uint64_t *st, float lo, float hi)
{
    return lo + (hi - lo) * rng_u32_to_unit((uint32_t)(splitmix64_next(st) >> 32));
}

/* A finite e4m3 byte, every code (subnormals included) equally likely. */
static inline uint8_t gpu_rand_e4m3(uint64_t *st)
{
    for (;;) {
        uint8_t b = (uint8_t)(splitmix64_next(st) >> 56);
        if ((b & 0x7f) != 0x7f)
            return b;
    }
}

static inline uint16_t gpu_rand_bf16(uint64_t *st, float lo, float hi)
{
    return f32_to_bf16(gpu_urand(st, lo, hi));
}

static inline void *gpu_alloc(size_t bytes)
{
    struct fp8_err err = {{0}};
    void *p = NULL;
    int rc = fp8_cuda_malloc(&p, bytes ? bytes : 1, &err);
    if (rc < 0)
        fail_msg("%s", err.msg);
    return p;
}

static inline void *gpu_upload(const void *host, size_t bytes)
{
    struct fp8_err err = {{0}};
    void *p = gpu_alloc(bytes);
    if (fp8_cuda_memcpy_h2d(p, host, bytes, &err) < 0)
        fail_msg("%s", err.msg);
    return p;
}

/* Fills a device buffer with 0xff bytes: NaN as bf16, e4m3 and fp32, so that any element
 * a kernel forgets to write fails the comparison. */
static inline void gpu_poison(void *d, size_t bytes)
{
    struct fp8_err err = {{0}};
    if (fp8_cuda_memset(d, 0xff, bytes, NULL, &err) < 0)
        fail_msg("%s", err.msg);
}

static inline void gpu_download(void *host, const void *d, size_t bytes)
{
    struct fp8_err err = {{0}};
    if (fp8_cuda_sync(&err) < 0 || fp8_cuda_memcpy_d2h(host, d, bytes, &err) < 0)
        fail_msg("%s", err.msg);
}

/* Output against a float64 reference: every element within rel_elem * |ref| + atol[i]
 * (atol NULL: 0), and ||out - ref|| / ||ref|| <= rel_norm. NaN (an unwritten, poisoned
 * element) never passes. The output is bf16 bits, or fp32 when is_f32. */
static inline void gpu_check_out(const char *what, const void *out, int is_f32,
                                 const double *ref, const double *atol, size_t n,
                                 double rel_elem, double rel_norm)
{
    double num = 0.0, den = 0.0, worst = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < n; i++) {
        const double o = is_f32 ? (double)((const float *)out)[i]
                                : (double)bf16_to_f32(((const uint16_t *)out)[i]);
        const double d = fabs(o - ref[i]);
        const double bound = rel_elem * fabs(ref[i]) + (atol ? atol[i] : 0.0);
        if (!(d <= bound))
            fail_msg("%s: element %zu is %.8g, reference %.8g (|diff| %.3g > bound %.3g)", what,
                     i, o, ref[i], d, bound);
        if (d > worst) {
            worst = d;
            worst_i = i;
        }
        num += d * d;
        den += ref[i] * ref[i];
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(rel <= rel_norm))
        fail_msg("%s: ||out - ref|| / ||ref|| = %.3g > %.3g (worst element %zu)", what, rel,
                 rel_norm, worst_i);
}

static inline void gpu_check_bf16(const char *what, const uint16_t *out, const double *ref,
                                  const double *atol, size_t n, double rel_elem,
                                  double rel_norm)
{
    gpu_check_out(what, out, 0, ref, atol, n, rel_elem, rel_norm);
}

/* main() of each GPU test: 1 with a device, 0 without one (nothing to check), -1 when
 * the driver fails (a failure, not a skip). */
static inline int gpu_present(void)
{
    struct fp8_err err = {{0}};
    int32_t n = 0;
    if (fp8_cuda_device_count(&n, &err) < 0) {
        printf("GPU test: %s\n", err.msg);
        return -1;
    }
    if (n == 0)
        printf("GPU test: no CUDA device: skipping\n");
    return n > 0;
}

#endif
