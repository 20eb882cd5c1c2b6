#include "engine/engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fp8_engine_params fp8_engine_params_default(void)
{
    return (struct fp8_engine_params){
        .weight_dtype = FP8_DTYPE_E4M3,
        .kv_dtype = FP8_DTYPE_E4M3,
        .block_size = 16,
        .kv_budget_bytes = 64ll << 20,
        .max_num_seqs = 16,
        .max_num_batched_tokens = 512,
        .prefix_caching = true,
    };
}

struct fp8_sampling_params fp8_engine_sampling_params(const struct fp8_req_params *p)
{
    return (struct fp8_sampling_params){
        .temperature = p->sampling.temperature,
        .top_k = p->sampling.top_k,
        .top_p = p->sampling.top_p,
        .min_p = p->sampling.min_p,
        .repetition_penalty = p->sampling.repetition_penalty,
        .presence_penalty = p->sampling.presence_penalty,
        .seed = p->sampling.seed,
        .max_tokens = p->max_tokens,
        .ignore_eos = p->ignore_eos,
    };
}

static int engine_forward_sample(void *ctx, const struct fp8_batch *b,
                                 struct fp8_request *const *reqs, int32_t n_rows,
                                 int32_t *tokens, struct fp8_err *err)
{
    struct fp8_engine *e = ctx;
    size_t need = 0; /* penalty ids: at most each penalized request's history */
    for (int32_t i = 0; i < n_rows; i++) {
        const struct fp8_req_sampling *q = &reqs[i]->params.sampling;
        if (q->repetition_penalty != 1.0f || q->presence_penalty != 0.0f)
            need += (size_t)reqs[i]->n_tokens;
    }
    if (need > e->pen_cap) {
        int32_t *p = realloc(e->pen, need * sizeof(int32_t));
        if (!p)
            return fp8_err_set(err, -ENOMEM, "engine: out of memory for %zu penalty ids", need);
        e->pen = p;
        e->pen_cap = need;
    }
    int32_t vocab = e->sched.model.vocab, off = 0;
    for (int32_t i = 0; i < n_rows; i++) {
        const struct fp8_request *r = reqs[i];
        struct fp8_sampling_params sp = fp8_engine_sampling_params(&r->params);
        off += fp8_sample_row_fill(&e->rows[i], &sp, (uint32_t)(r->n_tokens - r->n_prompt),
                                   r->tokens, r->n_tokens, r->n_prompt, vocab, e->seen, e->pen,
                                   off);
    }
    int rc = fp8_model_forward_sample(e->model, b, e->rows, e->pen, tokens, err);
    return rc < 0 ? rc : 0;
}

int fp8_engine_init(struct fp8_engine *e, struct fp8_weights *w, struct fp8_backend *be,
                    const struct fp8_engine_params *p, struct fp8_err *err)
{
    if (!e || !w || !be || !p)
        return fp8_err_set(err, -EINVAL, "engine: NULL argument");
    memset(e, 0, sizeof(*e));
    const struct fp8_model_config *cfg = fp8_weights_config(w);
    struct fp8_kv_cache_desc one = fp8_model_kv_desc(cfg, p->kv_dtype, p->block_size, 1);
    int64_t bytes_per_block = fp8_kv_block_bytes(&one);
    if (bytes_per_block <= 0)
        return fp8_err_set(err, -EINVAL, "engine: no KV layout for dtype %d, block_size %d",
                           (int)p->kv_dtype, (int)p->block_size);
    struct fp8_sched_params sp = {
        .max_num_seqs = p->max_num_seqs,
        .max_num_batched_tokens = p->max_num_batched_tokens,
        .max_model_len = p->max_model_len ? p->max_model_len : cfg->max_position_embeddings,
        .block_size = p->block_size,
        .kv_budget_bytes = p->kv_budget_bytes,
        .kv_bytes_per_block = bytes_per_block,
        .prefix_caching = p->prefix_caching,
        .n_eos_ids = cfg->n_eos < FP8_SCHED_MAX_EOS ? cfg->n_eos : FP8_SCHED_MAX_EOS,
    };
    if (sp.max_model_len > cfg->max_position_embeddings)
        return fp8_err_set(err, -EINVAL, "engine: max_model_len %d exceeds the model's "
                           "max_position_embeddings %d", (int)sp.max_model_len,
                           (int)cfg->max_position_embeddings);
    memcpy(sp.eos_ids, cfg->eos_token_ids, (size_t)sp.n_eos_ids * sizeof(*sp.eos_ids));
    struct fp8_model_iface mi = {.ctx = e, .vocab = cfg->vocab_size,
                                 .forward_sample = engine_forward_sample};
    int rc = fp8_sched_init(&e->sched, &sp, &mi, NULL, err);
    if (rc < 0)
        return fp8_err_prefix(err, rc, "engine");
    struct fp8_model_opts mo = {
        .weight_dtype = p->weight_dtype,
        .kv_dtype = p->kv_dtype,
        .max_tokens = p->max_num_batched_tokens,
        .block_size = p->block_size,
        .n_kv_blocks = e->sched.kv.n_blocks,
    };
    if ((rc = fp8_model_create(w, be, &mo, &e->model, err)) < 0)
        goto fail;
    e->rows = calloc((size_t)p->max_num_seqs, sizeof(*e->rows));
    e->seen = calloc((size_t)cfg->vocab_size, 1);
    if (!e->rows || !e->seen) {
        rc = fp8_err_set(err, -ENOMEM, "engine: out of memory for %d sampling rows",
                         (int)p->max_num_seqs);
        goto fail;
    }
    if (be->decode_graphs && !be->enforce_eager) {
        rc = fp8_model_warmup(e->model, p->max_num_seqs, e->sched.kv.max_blocks_per_seq,
                              &e->warmup, err);
        if (rc < 0)
            goto fail;
        e->warmed = true;
    }
    return 0;
fail:
    fp8_engine_free(e);
    return rc;
}

int fp8_engine_load(struct fp8_engine *e, const char *dir, struct fp8_backend *be,
                    const struct fp8_engine_params *p, struct fp8_err *err)
{
    struct fp8_weights *w = NULL;
    int rc = fp8_weights_open_dir(dir, &w, err);
    if (rc == 0)
        rc = fp8_engine_init(e, w, be, p, err);
    fp8_weights_free(w);
    return rc;
}

void fp8_engine_free(struct fp8_engine *e)
{
    if (!e)
        return;
    fp8_sched_free(&e->sched);
    fp8_model_free(e->model);
    free(e->rows);
    free(e->pen);
    free(e->seen);
    memset(e, 0, sizeof(*e));
}
