/* Ref ops over rows: embedding, norms, linear, RoPE, gated activations, gather, softcap.
 * Every value is computed in fp32 from the stored format, one row at a time. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "kernels/ref/ref_internal.h"

static bool need_step(struct fp8_backend *be, const char *op, int64_t rows)
{
    struct ref_ctx *c = ref_ctx_of(be);
    if (ref_failed(be))
        return false;
    if (!c->have_step) {
        ref_fail(be, -EINVAL, "%s: no step_begin before the op", op);
        return false;
    }
    if (rows > c->n_tokens) {
        ref_fail(be, -EINVAL, "%s: %lld rows but the step has %d tokens", op, (long long)rows,
                 c->n_tokens);
        return false;
    }
    return true;
}

void ref_embed(struct fp8_backend *be, const struct fp8_tensor *table, float scale,
               struct fp8_tensor *out)
{
    struct ref_ctx *c = ref_ctx_of(be);
    if (!ref_check_weight(be, "embed", "table", table) || table->n_dims != 2 ||
        !ref_check_act(be, "embed", "out", out, -1, table->ne[1])) {
        ref_fail(be, -EINVAL, "embed: table must be (vocab, dim) and out (n, dim)");
        return;
    }
    int64_t n = fp8_tensor_rows(out);
    if (!need_step(be, "embed", n))
        return;
    float *row = ref_scratch(be, "embed", (size_t)table->ne[1]);
    if (!row)
        return;
    for (int64_t t = 0; t < n; t++) {
        int32_t id = c->tokens[t];
        if (id < 0 || id >= table->ne[0]) {
            ref_fail(be, -EINVAL, "embed: token id %d outside the vocabulary of %lld", id,
                     (long long)table->ne[0]);
            return;
        }
        ref_row_load(table, id, row);
        for (int64_t i = 0; i < table->ne[1]; i++)
            row[i] *= scale;
        ref_row_store(out, t, row);
    }
}

void ref_norm_row(float *x, const float *w, int64_t n, float eps, enum fp8_norm kind)
{
    float ss = 0.0f;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] * inv * (kind == FP8_NORM_RMS_PLUS_ONE ? 1.0f + w[i] : w[i]);
}

static bool check_norm(struct fp8_backend *be, const char *op, const struct fp8_tensor *x,
                       const struct fp8_tensor *w, const struct fp8_tensor *out)
{
    if (!ref_check_act(be, op, "x", x, -1, -1))
        return false;
    int64_t cols = x->ne[x->n_dims - 1];
    if (!w || w->dtype != FP8_DTYPE_F32 || fp8_tensor_numel(w) != cols) {
        ref_fail(be, -EINVAL, "%s: weight must be f32 of %lld values", op, (long long)cols);
        return false;
    }
    return ref_check_act(be, op, "out", out, fp8_tensor_rows(x), cols);
}

void ref_rms_norm(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                  float eps, enum fp8_norm kind, struct fp8_tensor *out)
{
    if (!check_norm(be, "rms_norm", x, w, out))
        return;
    int64_t cols = x->ne[x->n_dims - 1];
    float *row = ref_scratch(be, "rms_norm", (size_t)cols);
    if (!row)
        return;
    for (int64_t r = 0; r < fp8_tensor_rows(x); r++) {
        ref_row_load(x, r, row);
        ref_norm_row(row, w->data, cols, eps, kind);
        ref_row_store(out, r, row);
    }
}

void ref_add_rms_norm(struct fp8_backend *be, struct fp8_tensor *residual,
                      const struct fp8_tensor *x, const struct fp8_tensor *w, float eps,
                      enum fp8_norm kind, struct fp8_tensor *out)
{
    if (!check_norm(be, "add_rms_norm", x, w, out) ||
        !ref_check_act(be, "add_rms_norm", "residual", residual, fp8_tensor_rows(x),
                       x->ne[x->n_dims - 1]))
        return;
    int64_t cols = x->ne[x->n_dims - 1];
    float *row = ref_scratch(be, "add_rms_norm", 2 * (size_t)cols);
    if (!row)
        return;
    float *add = row + cols;
    for (int64_t r = 0; r < fp8_tensor_rows(x); r++) {
        ref_row_load(residual, r, row);
        ref_row_load(x, r, add);
        for (int64_t i = 0; i < cols; i++)
            row[i] += add[i];
        ref_row_store(residual, r, row);
        ref_row_load(residual, r, row); /* normalize what was stored (bf16 residuals) */
        ref_norm_row(row, w->data, cols, eps, kind);
        ref_row_store(out, r, row);
    }
}

void ref_linear(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                struct fp8_tensor *out)
{
    if (!ref_check_weight(be, "linear", "w", w) || w->n_dims != 2 ||
        !ref_check_act(be, "linear", "x", x, -1, w->ne[1]) ||
        !ref_check_act(be, "linear", "out", out, fp8_tensor_rows(x), w->ne[0])) {
        ref_fail(be, -EINVAL, "linear: w must be 2-d (out, in)");
        return;
    }
    int64_t n = fp8_tensor_rows(x), n_in = w->ne[1], n_out = w->ne[0];
    float *xs = ref_scratch(be, "linear", (size_t)(n * n_in + n_in + n * n_out));
    if (!xs)
        return;
    float *wrow = xs + n * n_in, *ys = wrow + n_in;
    for (int64_t t = 0; t < n; t++)
        ref_row_load(x, t, xs + t * n_in);
    /* Each weight row is dequantized once and used by every token. */
    for (int64_t o = 0; o < n_out; o++) {
        ref_row_load(w, o, wrow);
        for (int64_t t = 0; t < n; t++) {
            const float *xr = xs + t * n_in;
            float acc = 0.0f;
            for (int64_t i = 0; i < n_in; i++)
                acc += xr[i] * wrow[i];
            ys[t * n_out + o] = acc;
        }
    }
    for (int64_t t = 0; t < n; t++)
        ref_row_store(out, t, ys + t * n_out);
}

void ref_rope(struct fp8_backend *be, struct fp8_tensor *x, const struct fp8_tensor *inv_freq,
              float attn_factor)
{
    struct ref_ctx *c = ref_ctx_of(be);
    if (!ref_check_act(be, "rope", "x", x, -1, -1))
        return;
    if (x->n_dims != 3 || x->ne[2] % 2 || !inv_freq || inv_freq->dtype != FP8_DTYPE_F32 ||
        fp8_tensor_numel(inv_freq) != x->ne[2] / 2) {
        ref_fail(be, -EINVAL, "rope: x must be (n, heads, head_dim) with even head_dim and "
                 "inv_freq f32 (head_dim / 2)");
        return;
    }
    int64_t n = x->ne[0], heads = x->ne[1], hd = x->ne[2];
    if (!need_step(be, "rope", n))
        return;
    const float *f = inv_freq->data;
    float *row = ref_scratch(be, "rope", (size_t)hd);
    if (!row)
        return;
    for (int64_t t = 0; t < n; t++)
        for (int64_t h = 0; h < heads; h++) {
            ref_row_load(x, t * heads + h, row);
            ref_rope_row(row, hd, c->positions[t], f, attn_factor);
            ref_row_store(x, t * heads + h, row);
        }
}

void ref_rope_row(float *row, int64_t hd, int32_t position, const float *inv_freq,
                  float attn_factor)
{
    int64_t half = hd / 2;
    for (int64_t i = 0; i < half; i++) {
        float a = (float)position * inv_freq[i];
        float cs = cosf(a) * attn_factor, sn = sinf(a) * attn_factor;
        float x1 = row[i], x2 = row[i + half];
        row[i] = x1 * cs - x2 * sn;
        row[i + half] = x2 * cs + x1 * sn;
    }
}

float ref_act(enum fp8_glu_act act, float x)
{
    if (act == FP8_GLU_SILU)
        return x / (1.0f + expf(-x));
    const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

void ref_glu(struct fp8_backend *be, const struct fp8_tensor *gate_up, enum fp8_glu_act act,
             struct fp8_tensor *out)
{
    if (!ref_check_act(be, "glu", "gate_up", gate_up, -1, -1))
        return;
    int64_t two = gate_up->ne[gate_up->n_dims - 1], inter = two / 2, n = fp8_tensor_rows(gate_up);
    if (two % 2 || (act != FP8_GLU_SILU && act != FP8_GLU_GELU_TANH)) {
        ref_fail(be, -EINVAL, "glu: odd gate_up width %lld or unknown activation",
                 (long long)two);
        return;
    }
    if (!ref_check_act(be, "glu", "out", out, n, inter))
        return;
    float *row = ref_scratch(be, "glu", (size_t)two);
    if (!row)
        return;
    for (int64_t t = 0; t < n; t++) {
        ref_row_load(gate_up, t, row);
        for (int64_t i = 0; i < inter; i++)
            row[i] = ref_act(act, row[i]) * row[inter + i];
        ref_row_store(out, t, row);
    }
}

void ref_gather_rows(struct fp8_backend *be, const struct fp8_tensor *x, struct fp8_tensor *out)
{
    struct ref_ctx *c = ref_ctx_of(be);
    if (!ref_check_act(be, "gather_rows", "x", x, -1, -1) ||
        !need_step(be, "gather_rows", fp8_tensor_rows(x)) ||
        !ref_check_act(be, "gather_rows", "out", out, c->n_logit_rows, x->ne[x->n_dims - 1]))
        return;
    float *row = ref_scratch(be, "gather_rows", (size_t)x->ne[x->n_dims - 1]);
    if (!row)
        return;
    for (int32_t i = 0; i < c->n_logit_rows; i++) {
        if (c->logit_rows[i] >= fp8_tensor_rows(x)) {
            ref_fail(be, -EINVAL, "gather_rows: row %d outside x", c->logit_rows[i]);
            return;
        }
        ref_row_load(x, c->logit_rows[i], row);
        ref_row_store(out, i, row);
    }
}

void ref_softcap(struct fp8_backend *be, struct fp8_tensor *x, float cap)
{
    if (!ref_check_act(be, "softcap", "x", x, -1, -1))
        return;
    if (!(cap > 0.0f)) {
        ref_fail(be, -EINVAL, "softcap: cap must be positive, got %g", (double)cap);
        return;
    }
    int64_t cols = x->ne[x->n_dims - 1];
    float *row = ref_scratch(be, "softcap", (size_t)cols);
    if (!row)
        return;
    for (int64_t r = 0; r < fp8_tensor_rows(x); r++) {
        ref_row_load(x, r, row);
        for (int64_t i = 0; i < cols; i++)
            row[i] = cap * tanhf(row[i] / cap);
        ref_row_store(x, r, row);
    }
}

/* The fused decode sequences of kernels.h, as the compositions they are defined to be. */
void ref_rms_norm_linear(struct fp8_backend *be, const struct fp8_tensor *x,
                         const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                         const struct fp8_tensor *w, struct fp8_tensor *xn,
                         struct fp8_tensor *out)
{
    ref_rms_norm(be, x, norm_w, eps, kind, xn);
    ref_linear(be, xn, w, out);
}

void ref_rms_norm_linear_glu(struct fp8_backend *be, const struct fp8_tensor *x,
                             const struct fp8_tensor *norm_w, float eps, enum fp8_norm kind,
                             const struct fp8_tensor *w_gate_up, enum fp8_glu_act act,
                             struct fp8_tensor *xn, struct fp8_tensor *gate_up,
                             struct fp8_tensor *out)
{
    ref_rms_norm(be, x, norm_w, eps, kind, xn);
    ref_linear(be, xn, w_gate_up, gate_up);
    ref_glu(be, gate_up, act, out);
}

void ref_linear_add(struct fp8_backend *be, const struct fp8_tensor *x, const struct fp8_tensor *w,
                    struct fp8_tensor *y, struct fp8_tensor *residual)
{
    ref_linear(be, x, w, y);
    if (ref_failed(be) ||
        !ref_check_act(be, "linear_add", "residual", residual, fp8_tensor_rows(y),
                       y->ne[y->n_dims - 1]))
        return;
    int64_t cols = y->ne[y->n_dims - 1];
    float *row = ref_scratch(be, "linear_add", 2 * (size_t)cols);
    if (!row)
        return;
    float *add = row + cols;
    for (int64_t r = 0; r < fp8_tensor_rows(y); r++) {
        ref_row_load(residual, r, row);
        ref_row_load(y, r, add);
        for (int64_t i = 0; i < cols; i++)
            row[i] += add[i];
        ref_row_store(residual, r, row);
    }
}

void ref_linear_add_rms_norm_linear(struct fp8_backend *be, const struct fp8_tensor *x,
                                    const struct fp8_tensor *w_out, struct fp8_tensor *y,
                                    struct fp8_tensor *residual, const struct fp8_tensor *norm_w,
                                    float eps, enum fp8_norm kind, const struct fp8_tensor *w_in,
                                    enum fp8_glu_act act, struct fp8_tensor *xn,
                                    struct fp8_tensor *gate_up, struct fp8_tensor *out)
{
    ref_linear_add(be, x, w_out, y, residual);
    if (gate_up)
        ref_rms_norm_linear_glu(be, residual, norm_w, eps, kind, w_in, act, xn, gate_up, out);
    else
        ref_rms_norm_linear(be, residual, norm_w, eps, kind, w_in, xn, out);
}

static bool argmax_args(struct fp8_backend *be, const struct fp8_tensor *logits,
                        const struct fp8_tensor *ids, const struct fp8_tensor *values)
{
    if (!logits || !logits->data || logits->dtype != FP8_DTYPE_F32 || logits->n_dims != 2 ||
        !ids || !ids->data || ids->dtype != FP8_DTYPE_I32 || fp8_tensor_numel(ids) != logits->ne[0] ||
        !values || !values->data || values->dtype != FP8_DTYPE_F32 ||
        fp8_tensor_numel(values) != logits->ne[0]) {
        ref_fail(be, -EINVAL, "argmax_value: logits must be f32 (rows, vocab), ids i32 (rows) and "
                 "values f32 (rows)");
        return false;
    }
    return true;
}

void ref_argmax_value(struct fp8_backend *be, const struct fp8_tensor *logits,
                      struct fp8_tensor *ids, struct fp8_tensor *values)
{
    if (ref_failed(be) || !argmax_args(be, logits, ids, values))
        return;
    int64_t v = logits->ne[1];
    for (int64_t r = 0; r < logits->ne[0]; r++) {
        const float *x = (const float *)logits->data + r * v;
        int32_t best = 0;
        for (int64_t i = 1; i < v; i++)
            if (x[i] > x[best])
                best = (int32_t)i;
        ((int32_t *)ids->data)[r] = best;
        ((float *)values->data)[r] = x[best];
    }
}
