#include "kernels.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/numeric.h"
#include "kernels/ref/ref.h"
#ifdef FP8D_WITH_CUDA
#include "kernels/cuda/backend_cuda.h"
#endif

size_t fp8_dtype_size(enum fp8_dtype dtype)
{
    switch (dtype) {
    case FP8_DTYPE_F32: return 4;
    case FP8_DTYPE_BF16: return 2;
    case FP8_DTYPE_E4M3: return 1;
    case FP8_DTYPE_I32: return 4;
    default: return 0;
    }
}

const char *fp8_dtype_name(enum fp8_dtype dtype)
{
    switch (dtype) {
    case FP8_DTYPE_F32: return "f32";
    case FP8_DTYPE_BF16: return "bf16";
    case FP8_DTYPE_E4M3: return "e4m3";
    case FP8_DTYPE_I32: return "i32";
    default: return "?";
    }
}

int64_t fp8_tensor_numel(const struct fp8_tensor *t)
{
    int64_t n = 1;
    for (int32_t i = 0; i < t->n_dims; i++)
        n *= t->ne[i];
    return n;
}

int64_t fp8_tensor_rows(const struct fp8_tensor *t)
{
    if (t->n_dims < 1 || t->ne[t->n_dims - 1] == 0)
        return 0;
    return fp8_tensor_numel(t) / t->ne[t->n_dims - 1];
}

size_t fp8_tensor_nbytes(const struct fp8_tensor *t)
{
    return (size_t)fp8_tensor_numel(t) * fp8_dtype_size(t->dtype);
}

struct fp8_tensor fp8_tensor_slice(const struct fp8_tensor *t, int64_t row0, int64_t n_rows)
{
    struct fp8_tensor s = *t;
    int64_t inner = t->ne[0] ? fp8_tensor_numel(t) / t->ne[0] : 0; /* elements per outer row */
    int64_t inner_rows = t->ne[0] ? fp8_tensor_rows(t) / t->ne[0] : 0;
    s.ne[0] = n_rows;
    if (t->data)
        s.data = (char *)t->data + (size_t)(row0 * inner) * fp8_dtype_size(t->dtype);
    if (t->scale)
        s.scale = t->scale + row0 * inner_rows;
    return s;
}

struct fp8_tensor fp8_tensor_reshape(const struct fp8_tensor *t, int32_t n_dims, const int64_t *ne)
{
    struct fp8_tensor s = *t;
    s.n_dims = n_dims;
    for (int32_t i = 0; i < FP8_TENSOR_MAX_DIMS; i++)
        s.ne[i] = i < n_dims ? ne[i] : 0;
    return s;
}

int64_t fp8_kv_block_bytes(const struct fp8_kv_cache_desc *d)
{
    size_t el = fp8_dtype_size(d->dtype);
    if (d->dtype == FP8_DTYPE_I32 || !el || d->n_layers <= 0 || d->block_size <= 0 ||
        d->n_kv_heads <= 0 || d->head_dim <= 0)
        return 0;
    int64_t per_head = (int64_t)d->head_dim * (int64_t)el;
    if (d->dtype == FP8_DTYPE_E4M3)
        per_head += (int64_t)sizeof(float);
    return 2 * (int64_t)d->n_layers * d->block_size * d->n_kv_heads * per_head;
}

void fp8_quantize_rows_e4m3(const float *src, int64_t rows, int64_t cols, uint8_t *dst,
                            float *scale)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *x = src + r * cols;
        float amax = 0.0f;
        for (int64_t i = 0; i < cols; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        float s = amax > 0.0f ? amax / FP8_E4M3_MAX : 1.0f;
        for (int64_t i = 0; i < cols; i++)
            dst[r * cols + i] = f32_to_e4m3(x[i] / s);
        scale[r] = s;
    }
}

int fp8_batch_check(const struct fp8_batch *b, const int32_t *logit_rows, int32_t n_logit_rows,
                    struct fp8_err *err)
{
    if (!b || b->n_tokens <= 0 || b->n_seqs <= 0 || !b->tokens || !b->positions || !b->slots ||
        !b->seq_start || !b->seq_len || !b->block_table || b->block_size <= 0 ||
        b->max_blocks_per_seq <= 0 || n_logit_rows < 0 || (n_logit_rows && !logit_rows))
        return fp8_err_set(err, -EINVAL, "step: incomplete batch description");
    if (b->seq_start[0] != 0 || b->seq_start[b->n_seqs] != b->n_tokens)
        return fp8_err_set(err, -EINVAL, "step: seq_start must run from 0 to n_tokens (%d)",
                           b->n_tokens);
    for (int32_t s = 0; s < b->n_seqs; s++) {
        if (b->seq_start[s + 1] < b->seq_start[s])
            return fp8_err_set(err, -EINVAL, "step: seq_start decreases at sequence %d", s);
        int64_t cap = (int64_t)b->max_blocks_per_seq * b->block_size;
        if (b->seq_len[s] <= 0 || b->seq_len[s] > cap)
            return fp8_err_set(err, -EINVAL, "step: sequence %d has length %d (block table "
                               "holds %lld)", s, b->seq_len[s], (long long)cap);
        for (int32_t t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            if (b->positions[t] < 0 || b->positions[t] >= b->seq_len[s])
                return fp8_err_set(err, -EINVAL, "step: token %d at position %d is outside "
                                   "its sequence's length %d", t, b->positions[t], b->seq_len[s]);
    }
    for (int32_t i = 0; i < n_logit_rows; i++)
        if (logit_rows[i] < 0 || logit_rows[i] >= b->n_tokens)
            return fp8_err_set(err, -EINVAL, "step: logit row %d outside the %d tokens",
                               logit_rows[i], b->n_tokens);
    return 0;
}

int fp8_sample_rows_check(const struct fp8_sample_row *rows, int64_t n_rows,
                          const int32_t *pen_ids, int64_t vocab, int64_t *n_pen_ids,
                          struct fp8_err *err)
{
    int64_t used = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        const struct fp8_sample_row *p = &rows[r];
        if (!(p->temperature >= 0.0f) || !isfinite(p->temperature) || p->top_k < 0 ||
            !(p->top_p > 0.0f && p->top_p <= 1.0f) || !(p->min_p >= 0.0f && p->min_p <= 1.0f) ||
            !(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty) ||
            !isfinite(p->presence_penalty) || p->pen_start < 0 || p->n_pen < 0 ||
            p->n_pen_gen < 0 || p->n_pen_gen > p->n_pen || (p->n_pen > 0 && !pen_ids))
            return fp8_err_set(err, -EINVAL, "sample: row %lld has parameters out of range "
                               "(temperature %g, top_k %d, top_p %g, min_p %g, %d penalty ids)",
                               (long long)r, (double)p->temperature, p->top_k,
                               (double)p->top_p, (double)p->min_p, p->n_pen);
        for (int32_t i = 0; i < p->n_pen; i++)
            if (pen_ids[p->pen_start + i] < 0 || pen_ids[p->pen_start + i] >= vocab)
                return fp8_err_set(err, -EINVAL, "sample: row %lld's penalty id %d is outside "
                                   "the vocabulary of %lld", (long long)r,
                                   pen_ids[p->pen_start + i], (long long)vocab);
        if (p->n_pen > 0 && (int64_t)p->pen_start + p->n_pen > used)
            used = (int64_t)p->pen_start + p->n_pen;
    }
    *n_pen_ids = used;
    return 0;
}

int fp8_backend_create(const char *name, struct fp8_backend **out, struct fp8_err *err)
{
    if (!name || !out)
        return fp8_err_set(err, -EINVAL, "backend: no name given");
    if (!strcmp(name, "ref"))
        return fp8_backend_ref_create(out, err);
    if (!strcmp(name, "cuda"))
#ifdef FP8D_WITH_CUDA
        return fp8_backend_cuda_create(out, err);
#else
        return fp8_err_set(err, -ENOTSUP,
                           "backend 'cuda' is not available: this fp8d was built without CUDA "
                           "(WITH_CUDA=0; use --backend ref for the CPU reference)");
#endif
    return fp8_err_set(err, -EINVAL, "unknown backend '%s' (supported: ref, cuda)", name);
}

static void group_free(struct fp8_backend_group *g)
{
    for (int32_t r = g->n_ranks - 1; r >= 0; r--)
        if (g->rank[r])
            g->rank[r]->ops->destroy(g->rank[r]);
    if (g->impl_free)
        g->impl_free(g->impl);
    free(g);
}

void fp8_backend_free(struct fp8_backend *be)
{
    if (!be)
        return;
    if (be->group && be->tp_rank == 0)
        group_free(be->group);
    else if (!be->group)
        be->ops->destroy(be);
}

int fp8_backend_group_create(const char *name, int32_t n_ranks, struct fp8_backend **out,
                             struct fp8_err *err)
{
    if (!name || !out)
        return fp8_err_set(err, -EINVAL, "backend group: no name given");
    if (n_ranks < 1 || n_ranks > FP8_BACKEND_MAX_RANKS)
        return fp8_err_set(err, -EINVAL, "tensor-parallel-size %d is not supported (1 to %d)",
                           n_ranks, FP8_BACKEND_MAX_RANKS);
    struct fp8_backend_group *g = calloc(1, sizeof(*g));
    if (!g)
        return fp8_err_set(err, -ENOMEM, "backend group: out of memory");
    g->n_ranks = n_ranks;
    g->timeout_ms = FP8_BACKEND_GROUP_TIMEOUT_MS;
    int rc;
    if (!strcmp(name, "ref")) {
        rc = fp8_backend_ref_group_create(g, err);
    } else if (!strcmp(name, "cuda")) {
#ifdef FP8D_WITH_CUDA
        rc = fp8_backend_cuda_group_create(g, err);
#else
        rc = fp8_err_set(err, -ENOTSUP,
                         "backend 'cuda' is not available: this fp8d was built without CUDA "
                         "(WITH_CUDA=0), so --tensor-parallel-size (NCCL) is not either");
#endif
    } else {
        rc = fp8_err_set(err, -EINVAL, "unknown backend '%s' (supported: ref, cuda)", name);
    }
    if (rc < 0) {
        group_free(g);
        return rc;
    }
    for (int32_t r = 0; r < n_ranks; r++) {
        g->rank[r]->tp_rank = r;
        g->rank[r]->group = g;
    }
    *out = g->rank[0];
    return 0;
}

void fp8_backend_group_abort(struct fp8_backend_group *g)
{
    if (!g)
        return;
    __atomic_store_n(&g->aborted, 1, __ATOMIC_SEQ_CST);
    if (g->impl_wake)
        g->impl_wake(g->impl);
}

bool fp8_backend_group_aborted(const struct fp8_backend_group *g)
{
    return g && __atomic_load_n(&g->aborted, __ATOMIC_SEQ_CST);
}
