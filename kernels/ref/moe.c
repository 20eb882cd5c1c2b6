/* Ref mixture of experts: softmax top-k routing and a per-token loop over its experts. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "kernels/ref/ref_internal.h"

void ref_moe_route(struct fp8_backend *be, const struct fp8_tensor *logits, bool norm_topk_prob,
                   struct fp8_tensor *ids, struct fp8_tensor *weights)
{
    if (!ref_check_act(be, "moe_route", "logits", logits, -1, -1))
        return;
    int64_t n = fp8_tensor_rows(logits), e = logits->ne[logits->n_dims - 1];
    if (!ids || ids->dtype != FP8_DTYPE_I32 || ids->n_dims != 2 || ids->ne[0] != n ||
        !weights || weights->dtype != FP8_DTYPE_F32 || weights->n_dims != 2 ||
        weights->ne[0] != n || weights->ne[1] != ids->ne[1] || ids->ne[1] > e || ids->ne[1] < 1) {
        ref_fail(be, -EINVAL, "moe_route: ids must be i32 (n, k) and weights f32 (n, k), "
                 "k <= %lld experts", (long long)e);
        return;
    }
    int64_t k = ids->ne[1];
    float *p = ref_scratch(be, "moe_route", (size_t)e);
    if (!p)
        return;
    for (int64_t t = 0; t < n; t++) {
        ref_row_load(logits, t, p);
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t i = 0; i < e; i++)
            mx = fmaxf(mx, p[i]);
        for (int64_t i = 0; i < e; i++) {
            p[i] = expf(p[i] - mx);
            sum += p[i];
        }
        for (int64_t i = 0; i < e; i++)
            p[i] /= sum;
        int32_t *id = (int32_t *)ids->data + t * k;
        float *w = (float *)weights->data + t * k, picked = 0.0f;
        /* Selection by repeated arg-max: k is small (<= 10 in real models). */
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t i = 0; i < e; i++) {
                bool taken = false;
                for (int64_t q = 0; q < j; q++)
                    taken |= id[q] == i;
                if (!taken && (best < 0 || p[i] > p[best]))
                    best = i;
            }
            id[j] = (int32_t)best;
            w[j] = p[best];
            picked += p[best];
        }
        if (norm_topk_prob)
            for (int64_t j = 0; j < k; j++)
                w[j] /= picked;
    }
}

void ref_moe_experts(struct fp8_backend *be, const struct fp8_tensor *x,
                     const struct fp8_tensor *ids, const struct fp8_tensor *weights,
                     const struct fp8_tensor *gate_up, const struct fp8_tensor *down,
                     enum fp8_glu_act act, struct fp8_tensor *out)
{
    if (!ref_check_weight(be, "moe_experts", "gate_up", gate_up) ||
        !ref_check_weight(be, "moe_experts", "down", down))
        return;
    if (gate_up->n_dims != 3 || down->n_dims != 3 || gate_up->ne[0] != down->ne[0] ||
        gate_up->ne[1] != 2 * down->ne[2] || gate_up->ne[2] != down->ne[1]) {
        ref_fail(be, -EINVAL, "moe_experts: gate_up must be (E, 2I, D) and down (E, D, I)");
        return;
    }
    int64_t ne = gate_up->ne[0], inter = down->ne[2], dim = down->ne[1];
    if (!ref_check_act(be, "moe_experts", "x", x, -1, dim) ||
        !ref_check_act(be, "moe_experts", "out", out, fp8_tensor_rows(x), dim))
        return;
    int64_t n = fp8_tensor_rows(x);
    if (!ids || ids->dtype != FP8_DTYPE_I32 || ids->n_dims != 2 || ids->ne[0] < n ||
        !weights || weights->dtype != FP8_DTYPE_F32 || weights->ne[0] < n ||
        weights->ne[1] != ids->ne[1]) {
        ref_fail(be, -EINVAL, "moe_experts: ids/weights must be i32/f32 (n, k)");
        return;
    }
    int64_t k = ids->ne[1], wide = dim > inter ? dim : inter;
    float *xr = ref_scratch(be, "moe_experts", (size_t)(2 * dim + 3 * inter + wide));
    if (!xr)
        return;
    float *acc = xr + dim, *gu = acc + dim, *hid = gu + 2 * inter, *wrow = hid + inter;
    for (int64_t t = 0; t < n; t++) {
        ref_row_load(x, t, xr);
        memset(acc, 0, (size_t)dim * sizeof(float));
        for (int64_t j = 0; j < k; j++) {
            int32_t e = ((const int32_t *)ids->data)[t * k + j];
            float w = ((const float *)weights->data)[t * k + j];
            if (e < 0 || e >= ne) {
                ref_fail(be, -EINVAL, "moe_experts: expert id %d outside %lld", e, (long long)ne);
                return;
            }
            for (int64_t o = 0; o < 2 * inter; o++) {
                ref_row_load(gate_up, e * 2 * inter + o, wrow);
                float dot = 0.0f;
                for (int64_t i = 0; i < dim; i++)
                    dot += xr[i] * wrow[i];
                gu[o] = dot;
            }
            for (int64_t i = 0; i < inter; i++)
                hid[i] = ref_act(act, gu[i]) * gu[inter + i];
            for (int64_t o = 0; o < dim; o++) {
                ref_row_load(down, e * dim + o, wrow);
                float dot = 0.0f;
                for (int64_t i = 0; i < inter; i++)
                    dot += hid[i] * wrow[i];
                acc[o] += w * dot;
            }
        }
        ref_row_store(out, t, acc);
    }
}
