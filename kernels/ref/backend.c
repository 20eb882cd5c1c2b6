/* Ref backend plumbing: host memory, the step copy, the sticky error, row conversions. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/numeric.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/ref_internal.h"

void ref_fail(struct fp8_backend *be, int code, const char *fmt, ...)
{
    struct ref_ctx *c = ref_ctx_of(be);
    if (c->err_code)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
    va_end(ap);
    c->err_code = code;
}

bool ref_failed(struct fp8_backend *be)
{
    return ref_ctx_of(be)->err_code != 0;
}

float *ref_scratch(struct fp8_backend *be, const char *op, size_t n)
{
    struct ref_ctx *c = ref_ctx_of(be);
    if (n > c->scratch_cap) {
        float *p = realloc(c->scratch, n * sizeof(float));
        if (!p) {
            ref_fail(be, -ENOMEM, "%s: out of memory for %zu floats of scratch", op, n);
            return NULL;
        }
        c->scratch = p;
        c->scratch_cap = n;
    }
    return c->scratch;
}

void ref_row_load(const struct fp8_tensor *t, int64_t r, float *dst)
{
    int64_t n = t->ne[t->n_dims - 1];
    switch (t->dtype) {
    case FP8_DTYPE_F32:
        memcpy(dst, (const float *)t->data + r * n, (size_t)n * sizeof(float));
        break;
    case FP8_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)t->data + r * n;
        for (int64_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(p[i]);
        break;
    }
    case FP8_DTYPE_E4M3: {
        const uint8_t *p = (const uint8_t *)t->data + r * n;
        float s = t->scale[r];
        for (int64_t i = 0; i < n; i++)
            dst[i] = e4m3_to_f32(p[i]) * s;
        break;
    }
    default:
        break; /* ref_check_* rejected it before any load */
    }
}

void ref_row_store(struct fp8_tensor *t, int64_t r, const float *src)
{
    int64_t n = t->ne[t->n_dims - 1];
    if (t->dtype == FP8_DTYPE_F32) {
        memcpy((float *)t->data + r * n, src, (size_t)n * sizeof(float));
    } else {
        uint16_t *p = (uint16_t *)t->data + r * n;
        for (int64_t i = 0; i < n; i++)
            p[i] = f32_to_bf16(src[i]);
    }
}

bool ref_check_act(struct fp8_backend *be, const char *op, const char *what,
                   const struct fp8_tensor *t, int64_t rows, int64_t cols)
{
    if (ref_failed(be))
        return false;
    if (!t || !t->data || (t->dtype != FP8_DTYPE_F32 && t->dtype != FP8_DTYPE_BF16) ||
        t->n_dims < 1) {
        ref_fail(be, -EINVAL, "%s: %s must be an f32 or bf16 activation tensor", op, what);
        return false;
    }
    int64_t c = t->ne[t->n_dims - 1], r = fp8_tensor_rows(t);
    if ((rows >= 0 && r != rows) || (cols >= 0 && c != cols)) {
        ref_fail(be, -EINVAL, "%s: %s is %lld x %lld, expected %lld x %lld", op, what,
                 (long long)r, (long long)c, (long long)rows, (long long)cols);
        return false;
    }
    return true;
}

bool ref_check_weight(struct fp8_backend *be, const char *op, const char *what,
                      const struct fp8_tensor *t)
{
    if (ref_failed(be))
        return false;
    if (!t || !t->data || t->n_dims < 1 ||
        !(t->dtype == FP8_DTYPE_BF16 || t->dtype == FP8_DTYPE_F32 ||
          (t->dtype == FP8_DTYPE_E4M3 && t->scale))) {
        ref_fail(be, -EINVAL, "%s: %s must be an e4m3 (with scales), bf16 or f32 tensor", op, what);
        return false;
    }
    return true;
}

static int ref_tensor_alloc(struct fp8_backend *be, struct fp8_tensor *t, enum fp8_dtype dtype,
                            int32_t n_dims, const int64_t *ne, struct fp8_err *err)
{
    (void)be;
    struct fp8_tensor n = {.dtype = dtype, .n_dims = n_dims};
    if (!t || n_dims < 1 || n_dims > FP8_TENSOR_MAX_DIMS || dtype >= FP8_DTYPE_COUNT)
        return fp8_err_set(err, -EINVAL, "tensor_alloc: bad dtype or rank %d", (int)n_dims);
    int64_t numel = 1;
    for (int32_t i = 0; i < n_dims; i++) {
        if (ne[i] <= 0 || ne[i] > ((int64_t)1 << 40) / numel)
            return fp8_err_set(err, -EINVAL, "tensor_alloc: dimension %lld makes more than "
                               "2^40 elements", (long long)ne[i]);
        numel *= ne[i];
        n.ne[i] = ne[i];
    }
    n.data = calloc(1, fp8_tensor_nbytes(&n));
    if (dtype == FP8_DTYPE_E4M3)
        n.scale = calloc((size_t)fp8_tensor_rows(&n), sizeof(float));
    if (!n.data || (dtype == FP8_DTYPE_E4M3 && !n.scale)) {
        free(n.data);
        free(n.scale);
        return fp8_err_set(err, -ENOMEM, "tensor_alloc: out of memory for %zu bytes",
                           fp8_tensor_nbytes(&n));
    }
    *t = n;
    return 0;
}

static void ref_tensor_free(struct fp8_backend *be, struct fp8_tensor *t)
{
    (void)be;
    if (!t)
        return;
    free(t->data);
    free(t->scale);
    t->data = NULL;
    t->scale = NULL;
}

static int ref_tensor_set(struct fp8_backend *be, struct fp8_tensor *t, const void *data,
                          const float *scale, struct fp8_err *err)
{
    (void)be;
    if (!t || !t->data || !data || (t->dtype == FP8_DTYPE_E4M3 && !scale))
        return fp8_err_set(err, -EINVAL, "tensor_set: missing tensor, data or e4m3 scales");
    memcpy(t->data, data, fp8_tensor_nbytes(t));
    if (t->dtype == FP8_DTYPE_E4M3)
        memcpy(t->scale, scale, (size_t)fp8_tensor_rows(t) * sizeof(float));
    return 0;
}

static int ref_tensor_get(struct fp8_backend *be, const struct fp8_tensor *t, void *data,
                          float *scale, struct fp8_err *err)
{
    (void)be;
    if (!t || !t->data || !data)
        return fp8_err_set(err, -EINVAL, "tensor_get: missing tensor or destination");
    memcpy(data, t->data, fp8_tensor_nbytes(t));
    if (t->dtype == FP8_DTYPE_E4M3 && scale)
        memcpy(scale, t->scale, (size_t)fp8_tensor_rows(t) * sizeof(float));
    return 0;
}

static int ref_kv_cache_alloc(struct fp8_backend *be, struct fp8_kv_cache *c,
                              const struct fp8_kv_cache_desc *d, struct fp8_err *err)
{
    if (!c || !d)
        return fp8_err_set(err, -EINVAL, "kv_cache_alloc: missing cache or description");
    if (d->dtype != FP8_DTYPE_E4M3 && d->dtype != FP8_DTYPE_BF16 && d->dtype != FP8_DTYPE_F32)
        return fp8_err_set(err, -EINVAL, "kv cache dtype %s is not supported (e4m3, bf16, f32)",
                           fp8_dtype_name(d->dtype));
    if (d->dtype == FP8_DTYPE_F32 && !be->kv_f32_ok)
        return fp8_err_set(err, -ENOTSUP, "kv cache dtype f32 is for the ref backend only");
    if (fp8_kv_block_bytes(d) <= 0 || d->n_blocks <= 0)
        return fp8_err_set(err, -EINVAL, "kv cache: bad shape (%d layers, %d blocks of %d, "
                           "%d kv heads x %d)", d->n_layers, d->n_blocks, d->block_size,
                           d->n_kv_heads, d->head_dim);
    size_t heads = (size_t)d->n_layers * (size_t)d->n_blocks * (size_t)d->block_size *
                   (size_t)d->n_kv_heads;
    size_t bytes = heads * (size_t)d->head_dim * fp8_dtype_size(d->dtype);
    struct fp8_kv_cache n = {.desc = *d};
    n.k = calloc(1, bytes);
    n.v = calloc(1, bytes);
    if (d->dtype == FP8_DTYPE_E4M3) {
        n.k_scale = calloc(heads, sizeof(float));
        n.v_scale = calloc(heads, sizeof(float));
    }
    if (!n.k || !n.v || (d->dtype == FP8_DTYPE_E4M3 && (!n.k_scale || !n.v_scale))) {
        free(n.k);
        free(n.v);
        free(n.k_scale);
        free(n.v_scale);
        return fp8_err_set(err, -ENOMEM, "kv cache: out of memory for 2 x %zu bytes", bytes);
    }
    *c = n;
    return 0;
}

static void ref_kv_cache_free(struct fp8_backend *be, struct fp8_kv_cache *c)
{
    (void)be;
    if (!c)
        return;
    free(c->k);
    free(c->v);
    free(c->k_scale);
    free(c->v_scale);
    memset(c, 0, sizeof(*c));
}

static void step_clear(struct ref_ctx *c)
{
    free(c->tokens);
    free(c->positions);
    free(c->slots);
    free(c->tok_seq);
    free(c->seq_len);
    free(c->block_table);
    free(c->logit_rows);
    c->tokens = c->positions = c->slots = c->tok_seq = NULL;
    c->seq_len = c->block_table = c->logit_rows = NULL;
    c->have_step = false;
}

static int32_t *dup_i32(const int32_t *src, size_t n)
{
    int32_t *p = malloc((n ? n : 1) * sizeof(int32_t));
    if (p && n)
        memcpy(p, src, n * sizeof(int32_t));
    return p;
}

static int ref_step_begin(struct fp8_backend *be, const struct fp8_batch *b,
                          const int32_t *logit_rows, int32_t n_logit_rows, struct fp8_err *err)
{
    struct ref_ctx *c = ref_ctx_of(be);
    int rc = fp8_batch_check(b, logit_rows, n_logit_rows, err);
    if (rc < 0)
        return rc;
    step_clear(c);
    size_t nt = (size_t)b->n_tokens, ns = (size_t)b->n_seqs;
    c->tokens = dup_i32(b->tokens, nt);
    c->positions = dup_i32(b->positions, nt);
    c->slots = dup_i32(b->slots, nt);
    c->tok_seq = malloc(nt * sizeof(int32_t));
    c->seq_len = dup_i32(b->seq_len, ns);
    c->block_table = dup_i32(b->block_table, ns * (size_t)b->max_blocks_per_seq);
    c->logit_rows = dup_i32(logit_rows, (size_t)n_logit_rows);
    if (!c->tokens || !c->positions || !c->slots || !c->tok_seq || !c->seq_len ||
        !c->block_table || !c->logit_rows) {
        step_clear(c);
        return fp8_err_set(err, -ENOMEM, "step: out of memory");
    }
    for (int32_t s = 0; s < b->n_seqs; s++)
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            c->tok_seq[t] = s;
    c->n_tokens = b->n_tokens;
    c->n_seqs = b->n_seqs;
    c->max_blocks_per_seq = b->max_blocks_per_seq;
    c->block_size = b->block_size;
    c->n_logit_rows = n_logit_rows;
    c->have_step = true;
    return 0;
}

static int ref_sync(struct fp8_backend *be, struct fp8_err *err)
{
    struct ref_ctx *c = ref_ctx_of(be);
    int code = c->err_code;
    if (code) {
        fp8_err_set(err, code, "%s", c->err.msg);
        c->err_code = 0;
    }
    return code;
}

static void ref_destroy(struct fp8_backend *be)
{
    struct ref_ctx *c = ref_ctx_of(be);
    step_clear(c);
    free(c->scratch);
    free(c);
    free(be);
}

static const struct fp8_backend_ops ref_ops = {
    .tensor_alloc = ref_tensor_alloc,
    .tensor_free = ref_tensor_free,
    .tensor_set = ref_tensor_set,
    .tensor_get = ref_tensor_get,
    .kv_cache_alloc = ref_kv_cache_alloc,
    .kv_cache_free = ref_kv_cache_free,
    .step_begin = ref_step_begin,
    .sync = ref_sync,
    .destroy = ref_destroy,
    .embed = ref_embed,
    .rms_norm = ref_rms_norm,
    .add_rms_norm = ref_add_rms_norm,
    .linear = ref_linear,
    .rms_norm_linear = ref_rms_norm_linear,
    .rms_norm_linear_glu = ref_rms_norm_linear_glu,
    .linear_add = ref_linear_add,
    .linear_add_rms_norm_linear = ref_linear_add_rms_norm_linear,
    .rope = ref_rope,
    .kv_write = ref_kv_write,
    .qk_norm_rope_kv_write = ref_qk_norm_rope_kv_write,
    .attention = ref_attention,
    .qk_norm_rope_kv_attention = ref_qk_norm_rope_kv_attention,
    .glu = ref_glu,
    .moe_route = ref_moe_route,
    .moe_experts = ref_moe_experts,
    .gather_rows = ref_gather_rows,
    .softcap = ref_softcap,
    .sample = ref_sample,
    .all_reduce_sum = ref_all_reduce_sum,
    .argmax_value = ref_argmax_value,
};

int fp8_backend_ref_create(struct fp8_backend **out, struct fp8_err *err)
{
    if (!out)
        return fp8_err_set(err, -EINVAL, "backend ref: no output given");
    struct fp8_backend *be = calloc(1, sizeof(*be));
    struct ref_ctx *c = calloc(1, sizeof(*c));
    if (!be || !c) {
        free(be);
        free(c);
        return fp8_err_set(err, -ENOMEM, "backend ref: out of memory");
    }
    be->ops = &ref_ops;
    be->name = "ref";
    be->act_dtype = FP8_DTYPE_F32;
    be->kv_f32_ok = true;
    be->ctx = c;
    *out = be;
    return 0;
}
