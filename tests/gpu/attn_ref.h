/* The attention tests' paged FP8 KV cache on the host (tests/gpu/test-cuda-attn.c,
 * test-cuda-prefill.c): random e4m3 K and V with one fp32 scale per (slot, kv head),
 * blocks handed to sequences in a shuffled order, the float64 attention of one query row
 * over it, and its device copy. */
#ifndef FP8_TESTS_GPU_ATTN_REF_H
#define FP8_TESTS_GPU_ATTN_REF_H

#include <math.h>

#include "tests/gpu/gpu_check.h"

struct host_kv {
    int n_blocks, block_size, n_kv, hd;
    uint8_t *k, *v;  /* (n_blocks * block_size, n_kv, hd) e4m3 */
    float *ks, *vs;  /* (n_blocks * block_size, n_kv) */
    int32_t *perm;   /* (n_blocks) a shuffle of the blocks: hand them out in this order */
    double vmax;     /* max |e4m3(v) * v_scale|: the tests' absolute tolerance unit */
};

static inline void host_kv_init(struct host_kv *c, uint64_t *st, int n_blocks, int block_size,
                                int n_kv, int hd)
{
    const size_t n_sc = (size_t)n_blocks * block_size * n_kv, bytes = n_sc * hd;
    *c = (struct host_kv){n_blocks, block_size, n_kv, hd, malloc(bytes), malloc(bytes),
                          malloc(n_sc * 4), malloc(n_sc * 4), malloc((size_t)n_blocks * 4), 0.0};
    assert_non_null(c->k && c->v && c->ks && c->vs && c->perm);
    for (size_t i = 0; i < bytes; i++) {
        c->k[i] = gpu_rand_e4m3(st);
        c->v[i] = gpu_rand_e4m3(st);
    }
    for (size_t i = 0; i < n_sc; i++) {
        c->ks[i] = gpu_urand(st, 0.5f, 2.0f) / 448.0f;
        c->vs[i] = gpu_urand(st, 0.5f, 2.0f) / 448.0f;
    }
    for (int i = 0; i < n_blocks; i++)
        c->perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(splitmix64_next(st) % (uint64_t)(i + 1)), t = c->perm[i];
        c->perm[i] = c->perm[j];
        c->perm[j] = t;
    }
    for (size_t i = 0; i < bytes; i++) {
        double a = fabs(e4m3_to_f32(c->v[i]) * (double)c->vs[i / hd]);
        c->vmax = a > c->vmax ? a : c->vmax;
    }
}

static inline void host_kv_free(struct host_kv *c)
{
    free(c->k);
    free(c->v);
    free(c->ks);
    free(c->vs);
    free(c->perm);
}

/* out (hd) = softmax_j(sm_scale * q . K[j]) V[j] over positions lo <= j < hi of the
 * sequence whose block-table row is bt, in kv head g, in float64; p: hi doubles of
 * scratch. */
static inline void host_kv_attend(const struct host_kv *c, const uint16_t *q, const int32_t *bt,
                                  int g, int lo, int hi, double sm_scale, double *p, double *out)
{
    const int bs = c->block_size, hd = c->hd;
    double mx = -INFINITY, sum = 0.0;
    for (int j = lo; j < hi; j++) {
        const size_t kh = ((size_t)bt[j / bs] * bs + j % bs) * c->n_kv + g;
        double d = 0.0;
        for (int e = 0; e < hd; e++)
            d += (double)bf16_to_f32(q[e]) * e4m3_to_f32(c->k[kh * hd + e]);
        p[j] = d * c->ks[kh] * sm_scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    for (int j = lo; j < hi; j++) {
        p[j] = exp(p[j] - mx);
        sum += p[j];
    }
    for (int e = 0; e < hd; e++) {
        double o = 0.0;
        for (int j = lo; j < hi; j++) {
            const size_t vh = ((size_t)bt[j / bs] * bs + j % bs) * c->n_kv + g;
            o += p[j] * e4m3_to_f32(c->v[vh * hd + e]) * c->vs[vh];
        }
        out[e] = o / sum;
    }
}

/* The cache on the device (free with host_kv_device_free). */
static inline struct fp8_cuda_kv_cache host_kv_upload(const struct host_kv *c)
{
    const size_t n_sc = (size_t)c->n_blocks * c->block_size * c->n_kv, bytes = n_sc * c->hd;
    return (struct fp8_cuda_kv_cache){
        .k = gpu_upload(c->k, bytes),
        .v = gpu_upload(c->v, bytes),
        .k_scale = gpu_upload(c->ks, n_sc * 4),
        .v_scale = gpu_upload(c->vs, n_sc * 4),
        .n_blocks = c->n_blocks,
        .block_size = c->block_size,
        .n_kv_heads = c->n_kv,
        .head_dim = c->hd,
    };
}

static inline void host_kv_device_free(struct fp8_cuda_kv_cache *kv)
{
    fp8_cuda_free(kv->k);
    fp8_cuda_free(kv->v);
    fp8_cuda_free(kv->k_scale);
    fp8_cuda_free(kv->v_scale);
}

#endif
