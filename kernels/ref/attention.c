/* Ref paged KV cache: writes (quantizing to e4m3 per token and KV head) and attention
 * over the cached positions of each sequence, exact softmax in fp32. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "common/numeric.h"
#include "kernels/ref/ref_internal.h"

/* Index of (layer, slot, head) in the cache's head-vector grid. */
static size_t kv_index(const struct fp8_kv_cache_desc *d, int32_t layer, int64_t slot, int64_t h)
{
    return (((size_t)layer * (size_t)d->n_blocks * (size_t)d->block_size + (size_t)slot) *
                (size_t)d->n_kv_heads + (size_t)h);
}

static void kv_store(const struct fp8_kv_cache_desc *d, void *data, float *scales, size_t idx,
                     const float *x)
{
    int64_t hd = d->head_dim;
    switch (d->dtype) {
    case FP8_DTYPE_F32:
        memcpy((float *)data + idx * (size_t)hd, x, (size_t)hd * sizeof(float));
        break;
    case FP8_DTYPE_BF16:
        for (int64_t i = 0; i < hd; i++)
            ((uint16_t *)data)[idx * (size_t)hd + (size_t)i] = f32_to_bf16(x[i]);
        break;
    default: { /* E4M3, per (slot, head) scale */
        float amax = 0.0f;
        for (int64_t i = 0; i < hd; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        float s = amax > 0.0f ? amax / FP8_E4M3_MAX : 1.0f;
        for (int64_t i = 0; i < hd; i++)
            ((uint8_t *)data)[idx * (size_t)hd + (size_t)i] = f32_to_e4m3(x[i] / s);
        scales[idx] = s;
        break;
    }
    }
}

static void kv_load(const struct fp8_kv_cache_desc *d, const void *data, const float *scales,
                    size_t idx, float *x)
{
    int64_t hd = d->head_dim;
    switch (d->dtype) {
    case FP8_DTYPE_F32:
        memcpy(x, (const float *)data + idx * (size_t)hd, (size_t)hd * sizeof(float));
        break;
    case FP8_DTYPE_BF16:
        for (int64_t i = 0; i < hd; i++)
            x[i] = bf16_to_f32(((const uint16_t *)data)[idx * (size_t)hd + (size_t)i]);
        break;
    default:
        for (int64_t i = 0; i < hd; i++)
            x[i] = e4m3_to_f32(((const uint8_t *)data)[idx * (size_t)hd + (size_t)i]) * scales[idx];
        break;
    }
}

static bool check_cache(struct fp8_backend *be, const char *op, const struct fp8_kv_cache *c,
                        int32_t layer)
{
    struct ref_ctx *rc = ref_ctx_of(be);
    if (ref_failed(be))
        return false;
    if (!c || !c->k || !c->v || layer < 0 || layer >= c->desc.n_layers) {
        ref_fail(be, -EINVAL, "%s: no cache or layer %d outside it", op, layer);
        return false;
    }
    if (!rc->have_step) {
        ref_fail(be, -EINVAL, "%s: no step_begin before the op", op);
        return false;
    }
    if (rc->block_size != c->desc.block_size) {
        ref_fail(be, -EINVAL, "%s: step block_size %d differs from the cache's %d", op,
                 rc->block_size, c->desc.block_size);
        return false;
    }
    return true;
}

void ref_kv_write(struct fp8_backend *be, struct fp8_kv_cache *c, int32_t layer,
                  const struct fp8_tensor *k, const struct fp8_tensor *v)
{
    struct ref_ctx *rc = ref_ctx_of(be);
    if (!check_cache(be, "kv_write", c, layer))
        return;
    const struct fp8_kv_cache_desc *d = &c->desc;
    int64_t kvh = d->n_kv_heads, hd = d->head_dim;
    if (!ref_check_act(be, "kv_write", "k", k, -1, hd) ||
        !ref_check_act(be, "kv_write", "v", v, fp8_tensor_rows(k), hd))
        return;
    int64_t n = fp8_tensor_rows(k) / kvh;
    if (n * kvh != fp8_tensor_rows(k) || n > rc->n_tokens) {
        ref_fail(be, -EINVAL, "kv_write: k has %lld head rows, not a multiple of %lld kv heads "
                 "within the step's %d tokens", (long long)fp8_tensor_rows(k), (long long)kvh,
                 rc->n_tokens);
        return;
    }
    float *row = ref_scratch(be, "kv_write", (size_t)hd);
    if (!row)
        return;
    int64_t n_slots = (int64_t)d->n_blocks * d->block_size;
    for (int64_t t = 0; t < n; t++) {
        int64_t slot = rc->slots[t];
        if (slot < 0 || slot >= n_slots) {
            ref_fail(be, -EINVAL, "kv_write: slot %lld outside the cache's %lld", (long long)slot,
                     (long long)n_slots);
            return;
        }
        for (int64_t h = 0; h < kvh; h++) {
            size_t idx = kv_index(d, layer, slot, h);
            ref_row_load(k, t * kvh + h, row);
            kv_store(d, c->k, c->k_scale, idx, row);
            ref_row_load(v, t * kvh + h, row);
            kv_store(d, c->v, c->v_scale, idx, row);
        }
    }
}

void ref_qk_norm_rope_kv_write(struct fp8_backend *be, const struct fp8_tensor *qkv,
                               const struct fp8_tensor *q_norm, const struct fp8_tensor *k_norm,
                               float eps, enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                               float attn_factor, struct fp8_kv_cache *c, int32_t layer,
                               struct fp8_tensor *q_out)
{
    struct ref_ctx *rc = ref_ctx_of(be);
    const char *op = "qk_norm_rope_kv_write";
    if (!check_cache(be, op, c, layer) || !ref_check_act(be, op, "qkv", qkv, -1, -1))
        return;
    const struct fp8_kv_cache_desc *d = &c->desc;
    int64_t hd = d->head_dim, kvh = d->n_kv_heads, n = fp8_tensor_rows(qkv);
    int64_t h = qkv->ne[qkv->n_dims - 1] / hd - 2 * kvh;
    if (h <= 0 || (h + 2 * kvh) * hd != qkv->ne[qkv->n_dims - 1] || n > rc->n_tokens ||
        !q_norm || q_norm->dtype != FP8_DTYPE_F32 || fp8_tensor_numel(q_norm) != hd ||
        !k_norm || k_norm->dtype != FP8_DTYPE_F32 || fp8_tensor_numel(k_norm) != hd ||
        !inv_freq || inv_freq->dtype != FP8_DTYPE_F32 || fp8_tensor_numel(inv_freq) != hd / 2) {
        ref_fail(be, -EINVAL, "%s: qkv must be (n <= %d, (heads + 2 x %lld) x %lld), norms f32 "
                 "(%lld), inv_freq f32 (%lld)", op, rc->n_tokens, (long long)kvh, (long long)hd,
                 (long long)hd, (long long)hd / 2);
        return;
    }
    if (!ref_check_act(be, op, "q_out", q_out, n * h, hd))
        return;
    int64_t width = (h + 2 * kvh) * hd, n_slots = (int64_t)d->n_blocks * d->block_size;
    float *row = ref_scratch(be, op, (size_t)width);
    if (!row)
        return;
    for (int64_t t = 0; t < n; t++) {
        int64_t slot = rc->slots[t];
        if (slot < 0 || slot >= n_slots) {
            ref_fail(be, -EINVAL, "%s: slot %lld outside the cache's %lld", op, (long long)slot,
                     (long long)n_slots);
            return;
        }
        ref_row_load(qkv, t, row);
        for (int64_t j = 0; j < h + kvh; j++) { /* q heads, then k heads */
            float *x = row + j * hd;
            ref_norm_row(x, j < h ? q_norm->data : k_norm->data, hd, eps, kind);
            ref_rope_row(x, hd, rc->positions[t], inv_freq->data, attn_factor);
        }
        for (int64_t g = 0; g < kvh; g++) {
            size_t idx = kv_index(d, layer, slot, g);
            kv_store(d, c->k, c->k_scale, idx, row + (h + g) * hd);
            kv_store(d, c->v, c->v_scale, idx, row + (h + kvh + g) * hd);
        }
        for (int64_t j = 0; j < h; j++)
            ref_row_store(q_out, t * h + j, row + j * hd);
    }
}

void ref_qk_norm_rope_kv_attention(struct fp8_backend *be, const struct fp8_tensor *qkv,
                                   const struct fp8_tensor *q_norm,
                                   const struct fp8_tensor *k_norm, float eps,
                                   enum fp8_norm kind, const struct fp8_tensor *inv_freq,
                                   float attn_factor, struct fp8_kv_cache *c, int32_t layer,
                                   struct fp8_tensor *q_out, float scale, int32_t window,
                                   struct fp8_tensor *out)
{
    ref_qk_norm_rope_kv_write(be, qkv, q_norm, k_norm, eps, kind, inv_freq, attn_factor, c, layer,
                              q_out);
    ref_attention(be, q_out, c, layer, scale, window, out);
}

void ref_attention(struct fp8_backend *be, const struct fp8_tensor *q,
                   const struct fp8_kv_cache *c, int32_t layer, float scale, int32_t window,
                   struct fp8_tensor *out)
{
    struct ref_ctx *rc = ref_ctx_of(be);
    if (!check_cache(be, "attention", c, layer))
        return;
    const struct fp8_kv_cache_desc *d = &c->desc;
    int64_t hd = d->head_dim, kvh = d->n_kv_heads;
    if (!ref_check_act(be, "attention", "q", q, -1, hd))
        return;
    int64_t h = q->n_dims == 3 ? q->ne[1] : 0, n = q->n_dims == 3 ? q->ne[0] : 0;
    if (h <= 0 || h % kvh || n > rc->n_tokens) {
        ref_fail(be, -EINVAL, "attention: q must be (n <= %d, heads multiple of %lld, %lld)",
                 rc->n_tokens, (long long)kvh, (long long)hd);
        return;
    }
    if (!ref_check_act(be, "attention", "out", out, n, h * hd))
        return;
    int64_t max_ctx = (int64_t)rc->max_blocks_per_seq * rc->block_size;
    float *qr = ref_scratch(be, "attention", (size_t)(3 * hd + max_ctx + h * hd));
    if (!qr)
        return;
    float *kr = qr + hd, *acc = kr + hd, *p = acc + hd, *o = p + max_ctx;
    int64_t group = h / kvh;
    for (int64_t t = 0; t < n; t++) {
        int32_t s = rc->tok_seq[t], pos = rc->positions[t];
        const int32_t *bt = rc->block_table + (size_t)s * (size_t)rc->max_blocks_per_seq;
        int32_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        /* Resolve each visible position to its slot once per token. */
        for (int32_t j = lo; j <= pos; j++) {
            int32_t blk = bt[j / rc->block_size];
            if (blk < 0 || blk >= d->n_blocks) {
                ref_fail(be, -EINVAL, "attention: sequence %d position %d maps to block %d "
                         "outside the pool of %d", s, j, blk, d->n_blocks);
                return;
            }
        }
        for (int64_t hq = 0; hq < h; hq++) {
            int64_t g = hq / group;
            ref_row_load(q, t * h + hq, qr);
            float mx = -INFINITY;
            for (int32_t j = lo; j <= pos; j++) {
                int64_t slot = (int64_t)bt[j / rc->block_size] * rc->block_size + j % rc->block_size;
                kv_load(d, c->k, c->k_scale, kv_index(d, layer, slot, g), kr);
                float dot = 0.0f;
                for (int64_t i = 0; i < hd; i++)
                    dot += qr[i] * kr[i];
                p[j - lo] = dot * scale;
                mx = fmaxf(mx, p[j - lo]);
            }
            float sum = 0.0f;
            for (int32_t j = lo; j <= pos; j++) {
                p[j - lo] = expf(p[j - lo] - mx);
                sum += p[j - lo];
            }
            memset(acc, 0, (size_t)hd * sizeof(float));
            for (int32_t j = lo; j <= pos; j++) {
                int64_t slot = (int64_t)bt[j / rc->block_size] * rc->block_size + j % rc->block_size;
                kv_load(d, c->v, c->v_scale, kv_index(d, layer, slot, g), kr);
                float w = p[j - lo] / sum;
                for (int64_t i = 0; i < hd; i++)
                    acc[i] += w * kr[i];
            }
            memcpy(o + hq * hd, acc, (size_t)hd * sizeof(float));
        }
        ref_row_store(out, t, o);
    }
}
