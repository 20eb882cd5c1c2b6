#include "daemon/single.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SINGLE_BLOCK 16

int fp8d_single_open(struct fp8d_single *s, const struct fp8d_opts *o, int32_t max_len,
                     struct fp8_err *err)
{
    struct fp8d_single n = {0};
    int rc;
    if (!o->model_dir == !o->synthetic)
        return fp8_err_set(err, -EINVAL, "one of --model DIR or --synthetic PRESET is required");
    if (o->max_model_len && max_len > o->max_model_len)
        return fp8_err_set(err, -E2BIG, "%d tokens exceed --max-model-len %d", max_len,
                           o->max_model_len);
    n.max_len = max_len;
    n.max_step = o->max_num_batched_tokens < max_len ? o->max_num_batched_tokens : max_len;
    n.n_blocks = (max_len + SINGLE_BLOCK - 1) / SINGLE_BLOCK;
    n.block_table = malloc((size_t)n.n_blocks * sizeof(int32_t));
    if (!n.block_table)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    for (int32_t i = 0; i < n.n_blocks; i++)
        n.block_table[i] = i;
    struct fp8_model_opts mo = fp8_model_opts_default();
    mo.weight_dtype = o->weights;
    mo.kv_dtype = o->kv_cache_dtype;
    mo.max_tokens = n.max_step;
    mo.block_size = SINGLE_BLOCK;
    mo.n_kv_blocks = n.n_blocks;
    rc = fp8d_opts_backend(o, &n.be, err);
    if (rc == 0 && o->model_dir) {
        rc = fp8_model_load(o->model_dir, n.be, &mo, &n.model, err);
    } else if (rc == 0) {
        struct fp8_weights *w = NULL;
        rc = fp8_weights_open_synthetic(o->synthetic, 0, &w, err);
        if (rc == 0)
            rc = fp8_model_create(w, n.be, &mo, &n.model, err);
        fp8_weights_free(w);
    }
    if (rc < 0) {
        fp8d_single_close(&n);
        return rc;
    }
    int32_t limit = fp8_model_get_config(n.model)->max_position_embeddings;
    if (limit > 0 && max_len > limit) {
        fp8d_single_close(&n);
        return fp8_err_set(err, -E2BIG, "%d positions exceed the model's "
                           "max_position_embeddings %d", max_len, limit);
    }
    *s = n;
    return 0;
}

void fp8d_single_close(struct fp8d_single *s)
{
    fp8_model_free(s->model);
    fp8_backend_free(s->be);
    free(s->block_table);
    memset(s, 0, sizeof(*s));
}

/* Steps of at most max_step tokens; the last one yields logits (all of them when
 * all_logits) or, with row, the draw *id. */
static int single_steps(struct fp8d_single *s, const int32_t *tokens, int32_t p0, int32_t n,
                        bool all_logits, float *logits, const struct fp8_sample_row *row,
                        const int32_t *pen, int32_t *id, struct fp8_err *err)
{
    if (p0 < 0 || n <= 0 || p0 + n > s->max_len)
        return fp8_err_set(err, -E2BIG, "positions %d..%d exceed the %d the cache was sized for",
                           p0, p0 + n - 1, s->max_len);
    int32_t vocab = fp8_model_get_config(s->model)->vocab_size;
    int32_t *pos = malloc((size_t)s->max_step * 2 * sizeof(int32_t));
    if (!pos)
        return fp8_err_set(err, -ENOMEM, "out of memory");
    int32_t *slots = pos + s->max_step;
    int rc = 0;
    for (int32_t done = 0; done < n;) {
        int32_t k = n - done < s->max_step ? n - done : s->max_step;
        for (int32_t i = 0; i < k; i++)
            slots[i] = pos[i] = p0 + done + i; /* the trivial table: slot == position */
        bool last = done + k == n;
        int32_t seq_start[2] = {0, k}, seq_len[1] = {p0 + done + k};
        uint8_t want = last && (logits || row), all = all_logits;
        struct fp8_batch b = {
            .n_tokens = k, .tokens = tokens + done, .positions = pos, .slots = slots,
            .n_seqs = 1, .seq_start = seq_start, .seq_len = seq_len,
            .block_table = s->block_table, .max_blocks_per_seq = s->n_blocks,
            .block_size = SINGLE_BLOCK, .want_logits = &want, .want_all_logits = &all,
        };
        if (row && last)
            rc = fp8_model_forward_sample(s->model, &b, row, pen, id, err);
        else
            rc = fp8_model_forward(s->model, &b,
                                   all_logits ? logits + (size_t)done * (size_t)vocab : logits,
                                   err);
        if (rc < 0)
            break;
        rc = 0;
        done += k;
    }
    free(pos);
    return rc;
}

int fp8d_single_run(struct fp8d_single *s, const int32_t *tokens, int32_t p0, int32_t n,
                    bool all_logits, float *logits, struct fp8_err *err)
{
    if (!logits)
        return fp8_err_set(err, -EINVAL, "no logits buffer");
    return single_steps(s, tokens, p0, n, all_logits, logits, NULL, NULL, NULL, err);
}

int fp8d_single_sample(struct fp8d_single *s, const int32_t *tokens, int32_t p0, int32_t n,
                       const struct fp8_sample_row *row, const int32_t *pen, int32_t *id,
                       struct fp8_err *err)
{
    if (!row || !id)
        return fp8_err_set(err, -EINVAL, "no sampling row or id");
    return single_steps(s, tokens, p0, n, false, NULL, row, pen, id, err);
}
