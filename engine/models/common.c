/* Loading and forward-pass pieces shared by the architectures: weight conversion from
 * the checkpoint's dtype to the stored format, the attention block and the dense MLP. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/numeric.h"
#include "engine/models/models.h"

void model_tensor_name(const struct fp8_model *m, char name[MODEL_NAME_MAX], int32_t layer,
                       const char *suffix)
{
    if (layer < 0)
        snprintf(name, MODEL_NAME_MAX, "%s%s", m->cfg.tensor_prefix, suffix);
    else
        snprintf(name, MODEL_NAME_MAX, "%slayers.%d.%s", m->cfg.tensor_prefix, layer, suffix);
}

/* Row r of a checkpoint tensor (cols wide) as fp32; the mapping may be unaligned. */
static void st_row_f32(const struct st_tensor *t, int64_t r, int64_t cols, float *dst)
{
    const uint8_t *p = (const uint8_t *)t->data + (size_t)(r * cols) * st_dtype_size(t->dtype);
    for (int64_t i = 0; i < cols; i++) {
        if (t->dtype == ST_DTYPE_F32) {
            memcpy(&dst[i], p + 4 * i, 4);
        } else {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            dst[i] = t->dtype == ST_DTYPE_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
    }
}

static int find_source(struct fp8_weights *src, const char *name, int64_t rows, int64_t cols,
                       const struct st_tensor **out, struct fp8_err *err)
{
    const struct st_tensor *t = NULL;
    int rc = fp8_weights_get(src, name, &t, err);
    if (rc < 0)
        return rc;
    if (t->dtype != ST_DTYPE_F32 && t->dtype != ST_DTYPE_F16 && t->dtype != ST_DTYPE_BF16)
        return fp8_err_set(err, -ENOTSUP, "tensor '%s' is %s: only f32, f16 and bf16 "
                           "checkpoints are supported (pre-quantized ones are not yet)", name,
                           st_dtype_name(t->dtype));
    bool ok = (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols) ||
              (t->n_dims == 1 && rows == 1 && t->shape[0] == cols);
    if (!ok)
        return fp8_err_set(err, -EINVAL, "tensor '%s' has shape [%lld%s%lld], expected "
                           "[%lld, %lld]", name, (long long)t->shape[0],
                           t->n_dims > 1 ? ", " : "", t->n_dims > 1 ? (long long)t->shape[1] : 0LL,
                           (long long)rows, (long long)cols);
    *out = t;
    return 0;
}

/* A tensor of the right shape filled on the device, seeded by its (first) name. */
static int load_random(struct fp8_model *m, struct fp8_tensor *t, enum fp8_dtype dtype,
                       int32_t n_dims, const int64_t *ne, const char *name, struct fp8_err *err)
{
    struct fp8_tensor dev = {0};
    if (!m->be->ops->tensor_fill_random)
        return fp8_err_set(err, -ENOTSUP, "backend %s cannot fill weights in place (device "
                           "random weights are for the cuda backend)", m->be->name);
    int rc = m->be->ops->tensor_alloc(m->be, &dev, dtype, n_dims, ne, err);
    if (rc < 0)
        return rc;
    rc = m->be->ops->tensor_fill_random(m->be, &dev, fp8_synth_tensor_seed(0, name), err);
    if (rc < 0) {
        m->be->ops->tensor_free(m->be, &dev);
        return rc;
    }
    *t = dev;
    return 0;
}

int model_load_parts(struct fp8_model *m, struct fp8_weights *src, struct fp8_tensor *t,
                     enum fp8_dtype dtype, int32_t n_dims, const int64_t *ne,
                     const struct model_part *parts, int32_t n_parts, struct fp8_tp_range cols,
                     struct fp8_err *err)
{
    if (m->opts.device_random_weights)
        return load_random(m, t, dtype, n_dims, ne, parts[0].name, err);
    struct fp8_tensor shape = {.dtype = dtype, .n_dims = n_dims};
    memcpy(shape.ne, ne, (size_t)n_dims * sizeof(int64_t));
    int64_t rows = fp8_tensor_rows(&shape), width = ne[n_dims - 1], o = 0,
            full = parts[0].cols;
    size_t el = fp8_dtype_size(dtype);
    float *row = malloc((size_t)full * sizeof(float));
    uint8_t *host = malloc((size_t)(rows * width) * el), *codes = malloc((size_t)full);
    float *scale = dtype == FP8_DTYPE_E4M3 ? malloc((size_t)rows * sizeof(float)) : NULL;
    struct fp8_tensor dev = {0};
    int rc = -ENOMEM;
    if (!row || !host || !codes || (dtype == FP8_DTYPE_E4M3 && !scale)) {
        fp8_err_set(err, rc, "out of memory loading '%s'", parts[0].name);
        goto fail;
    }
    if (cols.start < 0 || cols.count != width || cols.start + cols.count > full) {
        rc = fp8_err_set(err, -EINVAL, "'%s': columns [%lld, +%lld) of %lld do not make a "
                         "%lld-wide tensor", parts[0].name, (long long)cols.start,
                         (long long)cols.count, (long long)full, (long long)width);
        goto fail;
    }
    for (int32_t i = 0; i < n_parts; i++) {
        const struct model_part *p = &parts[i];
        const struct st_tensor *file_t = NULL;
        rc = find_source(src, p->name, p->rows, p->cols, &file_t, err);
        if (rc < 0)
            goto fail;
        if (p->cols != full || p->take.start < 0 || p->take.start + p->take.count > p->rows ||
            o + p->take.count > rows) {
            rc = fp8_err_set(err, -EINVAL, "'%s': rows [%lld, +%lld) overflow it or its "
                             "%lld-row tensor", p->name, (long long)p->take.start,
                             (long long)p->take.count, (long long)rows);
            goto fail;
        }
        for (int64_t r = p->take.start; r < p->take.start + p->take.count; r++, o++) {
            st_row_f32(file_t, r, full, row);
            const float *x = row + cols.start;
            if (dtype == FP8_DTYPE_E4M3) {
                fp8_quantize_rows_e4m3(row, 1, full, codes, scale + o);
                memcpy(host + o * width, codes + cols.start, (size_t)width);
            } else if (dtype == FP8_DTYPE_BF16) {
                for (int64_t c = 0; c < width; c++) {
                    uint16_t h = f32_to_bf16(x[c]);
                    memcpy(host + (size_t)(o * width + c) * 2, &h, 2);
                }
            } else {
                memcpy(host + (size_t)(o * width) * 4, x, (size_t)width * 4);
            }
        }
    }
    if (o != rows) {
        rc = fp8_err_set(err, -EINVAL, "'%s' and its parts fill %lld of %lld rows",
                         parts[0].name, (long long)o, (long long)rows);
        goto fail;
    }
    rc = m->be->ops->tensor_alloc(m->be, &dev, dtype, n_dims, ne, err);
    if (rc < 0)
        goto fail;
    rc = m->be->ops->tensor_set(m->be, &dev, host, scale, err);
    if (rc < 0) {
        m->be->ops->tensor_free(m->be, &dev);
        goto fail;
    }
    *t = dev;
fail:
    free(row);
    free(host);
    free(codes);
    free(scale);
    return rc;
}

static struct fp8_tp_range all_of(int64_t n)
{
    return (struct fp8_tp_range){.start = 0, .count = n};
}

int model_load_weight(struct fp8_model *m, struct fp8_weights *src, struct fp8_tensor *t,
                      enum fp8_dtype dtype, int32_t n_dims, const int64_t *ne,
                      const char *const *names, const int64_t *part_rows, int32_t n_names,
                      struct fp8_err *err)
{
    struct fp8_tensor shape = {.dtype = dtype, .n_dims = n_dims};
    memcpy(shape.ne, ne, (size_t)n_dims * sizeof(int64_t));
    int64_t rows = fp8_tensor_rows(&shape), cols = ne[n_dims - 1];
    struct model_part *parts = malloc((size_t)n_names * sizeof(*parts));
    if (!parts)
        return fp8_err_set(err, -ENOMEM, "out of memory loading '%s'", names[0]);
    for (int32_t i = 0; i < n_names; i++) {
        int64_t part = part_rows ? part_rows[i] : rows / n_names;
        parts[i] = (struct model_part){names[i], part, cols, all_of(part)};
    }
    int rc = model_load_parts(m, src, t, dtype, n_dims, ne, parts, n_names, all_of(cols), err);
    free(parts);
    return rc;
}

int model_load_vector(struct fp8_model *m, struct fp8_weights *src, struct fp8_tensor *t,
                      int32_t layer, const char *suffix, int64_t n, struct fp8_err *err)
{
    char name[MODEL_NAME_MAX];
    const char *names[1] = {name};
    model_tensor_name(m, name, layer, suffix);
    return model_load_weight(m, src, t, FP8_DTYPE_F32, 1, &n, names, NULL, 1, err);
}

int model_load_attention(struct fp8_model *m, struct fp8_weights *src, int32_t l,
                         struct fp8_err *err)
{
    const struct fp8_model_config *c = &m->cfg;
    const struct fp8_tp_shard *s = &m->shard;
    struct fp8_layer *ly = &m->layers[l];
    int64_t d = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim,
            kv = (int64_t)c->n_kv_heads * c->head_dim;
    char qn[MODEL_NAME_MAX], kn[MODEL_NAME_MAX], vn[MODEL_NAME_MAX], on[MODEL_NAME_MAX];
    /* The plan's rows are the fused (q | k | v) tensor's; each file tensor starts at 0. */
    struct model_part qkv[3] = {
        {qn, q, d, s->qkv_rows[0]},
        {kn, kv, d, {s->qkv_rows[1].start - q, s->qkv_rows[1].count}},
        {vn, kv, d, {s->qkv_rows[2].start - q - kv, s->qkv_rows[2].count}},
    };
    struct model_part o = {on, d, q, all_of(d)};
    int64_t ne[2] = {s->qkv_rows[0].count + 2 * s->qkv_rows[1].count, d},
            one[2] = {d, s->o_cols.count};
    model_tensor_name(m, qn, l, "self_attn.q_proj.weight");
    model_tensor_name(m, kn, l, "self_attn.k_proj.weight");
    model_tensor_name(m, vn, l, "self_attn.v_proj.weight");
    model_tensor_name(m, on, l, "self_attn.o_proj.weight");
    int rc;
    if ((rc = model_load_parts(m, src, &ly->wqkv, m->opts.weight_dtype, 2, ne, qkv, 3, all_of(d),
                               err)) < 0 ||
        (rc = model_load_parts(m, src, &ly->wo, m->opts.weight_dtype, 2, one, &o, 1, s->o_cols,
                               err)) < 0 ||
        (rc = model_load_vector(m, src, &ly->q_norm, l, "self_attn.q_norm.weight", c->head_dim,
                                err)) < 0 ||
        (rc = model_load_vector(m, src, &ly->k_norm, l, "self_attn.k_norm.weight", c->head_dim,
                                err)) < 0 ||
        (rc = model_load_vector(m, src, &ly->attn_norm, l, "input_layernorm.weight", d, err)) < 0)
        return rc;
    return 0;
}

int model_load_dense_mlp(struct fp8_model *m, struct fp8_weights *src, int32_t l,
                         struct fp8_err *err)
{
    const struct fp8_model_config *c = &m->cfg;
    const struct fp8_tp_shard *s = &m->shard;
    struct fp8_layer *w = &m->layers[l];
    int64_t d = c->hidden_size, i = c->intermediate_size, ir = s->down_cols.count;
    char gate[MODEL_NAME_MAX], up[MODEL_NAME_MAX], down[MODEL_NAME_MAX];
    struct model_part gu[2] = {
        {gate, i, d, s->gate_up_rows[0]},
        {up, i, d, {s->gate_up_rows[1].start - i, s->gate_up_rows[1].count}},
    };
    struct model_part dn = {down, d, i, all_of(d)};
    int64_t ne[2] = {2 * ir, d}, dne[2] = {d, ir};
    model_tensor_name(m, gate, l, "mlp.gate_proj.weight");
    model_tensor_name(m, up, l, "mlp.up_proj.weight");
    model_tensor_name(m, down, l, "mlp.down_proj.weight");
    int rc = model_load_parts(m, src, &w->w_gate_up, m->opts.weight_dtype, 2, ne, gu, 2,
                              all_of(d), err);
    if (rc < 0)
        return rc;
    return model_load_parts(m, src, &w->w_down, m->opts.weight_dtype, 2, dne, &dn, 1,
                            s->down_cols, err);
}

void model_all_reduce(struct fp8_model *m, struct fp8_tensor *x)
{
    if (m->shard.n_ranks > 1)
        m->be->ops->all_reduce_sum(m->be, x);
}

struct fp8_tensor model_rows(const struct fp8_tensor *t, int32_t n)
{
    return fp8_tensor_slice(t, 0, n);
}

/* qkv (n, ...) -> att (n, h * hd): q/k norm + RoPE + KV write, attention. */
static void attention_core(struct fp8_model *m, int32_t l, int32_t n)
{
    const struct fp8_model_config *c = &m->cfg;
    const struct fp8_backend_ops *op = m->be->ops;
    struct fp8_layer *w = &m->layers[l];
    bool sliding = c->layers[l].sliding;
    struct fp8_tensor qkv = model_rows(&m->qkv, n), q = model_rows(&m->q, n),
                      att = model_rows(&m->att, n);

    op->qk_norm_rope_kv_attention(m->be, &qkv, &w->q_norm, &w->k_norm, c->rms_norm_eps,
                                  m->norm_kind, sliding ? &m->inv_freq_local : &m->inv_freq, 1.0f,
                                  &m->kv, l, &q, 1.0f / sqrtf(c->query_pre_attn_scalar),
                                  sliding ? c->sliding_window : 0, &att);
}

void model_attention(struct fp8_model *m, int32_t l, int32_t n)
{
    const struct fp8_backend_ops *op = m->be->ops;
    struct fp8_layer *w = &m->layers[l];
    struct fp8_tensor xb = model_rows(&m->xb, n), xb2 = model_rows(&m->xb2, n);
    struct fp8_tensor qkv = model_rows(&m->qkv, n), att = model_rows(&m->att, n);

    op->linear(m->be, &xb, &w->wqkv, &qkv);
    attention_core(m, l, n);
    op->linear(m->be, &att, &w->wo, &xb2);
    model_all_reduce(m, &xb2);
}

/* hb (n, 2I) and hb2 (n, I) seen as the dense MLP's shapes. */
static void mlp_views(struct fp8_model *m, int32_t n, struct fp8_tensor *hb, struct fp8_tensor *hb2)
{
    /* The rank's intermediate channels (all of them alone). */
    int64_t gu[2] = {n, 2 * m->shard.down_cols.count}, h[2] = {n, m->shard.down_cols.count};
    struct fp8_tensor a = model_rows(&m->hb, n), b = model_rows(&m->hb2, n);
    *hb = fp8_tensor_reshape(&a, 2, gu);
    *hb2 = fp8_tensor_reshape(&b, 2, h);
}

void model_dense_mlp(struct fp8_model *m, int32_t l, int32_t n)
{
    const struct fp8_backend_ops *op = m->be->ops;
    struct fp8_layer *w = &m->layers[l];
    struct fp8_tensor xb = model_rows(&m->xb, n), xb2 = model_rows(&m->xb2, n), hb, hb2;
    mlp_views(m, n, &hb, &hb2);
    op->linear(m->be, &xb, &w->w_gate_up, &hb);
    op->glu(m->be, &hb, m->act, &hb2);
    op->linear(m->be, &hb2, &w->w_down, &xb2);
    model_all_reduce(m, &xb2);
}

void model_dense_layers_fused(struct fp8_model *m, int32_t n)
{
    const struct fp8_model_config *c = &m->cfg;
    const struct fp8_backend_ops *op = m->be->ops;
    const float eps = c->rms_norm_eps;
    struct fp8_tensor x = model_rows(&m->x, n), xb = model_rows(&m->xb, n),
                      xb2 = model_rows(&m->xb2, n), qkv = model_rows(&m->qkv, n),
                      att = model_rows(&m->att, n), hb, hb2;
    mlp_views(m, n, &hb, &hb2);

    op->rms_norm_linear(m->be, &x, &m->layers[0].attn_norm, eps, m->norm_kind,
                        &m->layers[0].wqkv, &xb, &qkv);
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct fp8_layer *w = &m->layers[l];
        attention_core(m, l, n);
        op->linear_add_rms_norm_linear(m->be, &att, &w->wo, &xb2, &x, &w->mlp_norm, eps,
                                       m->norm_kind, &w->w_gate_up, m->act, &xb, &hb, &hb2);
        if (l + 1 == c->n_layers) {
            op->linear_add(m->be, &hb2, &w->w_down, &xb2, &x);
            break;
        }
        struct fp8_layer *next = &m->layers[l + 1];
        op->linear_add_rms_norm_linear(m->be, &hb2, &w->w_down, &xb2, &x, &next->attn_norm, eps,
                                       m->norm_kind, &next->wqkv, m->act, &xb, NULL, &qkv);
    }
}
