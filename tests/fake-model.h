/* A fake model for scheduler tests, whose output depends on every KV slot a sequence
 * can see, so that any paging mistake changes the tokens:
 *   - forward writes, at each token's slot, kv = mix(kv of position p-1 read through the
 *     sequence's block table, token, p): the "KV" of a position depends on the whole
 *     prefix, as a real model's does;
 *   - the logits row of a sequence is one-hot at mix(all its KV values, read through the
 *     block table) % vocab.
 * A wrong block table, a block lost or overwritten after preemption, or a prefix-cache
 * hit on different content changes the next token. fake_reference() computes the same
 * thing naively over a plain token array, without any paging: the expected output.
 * The sampler is greedy at temperature 0 and otherwise shifts the argmax by a Philox draw
 * keyed by (seed, index of the token drawn), like the real sampler's counter-based RNG. */
#ifndef FP8_TESTS_FAKE_MODEL_H
#define FP8_TESTS_FAKE_MODEL_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "engine/scheduler.h"

#define FAKE_ROOT 0x243f6a8885a308d3ull

struct fake_model {
    int32_t vocab;
    int32_t n_slots;
    uint64_t *kv;         /* (n_slots) */
    float *logits;        /* (max_seqs, vocab) */
    int32_t max_seqs;
    int64_t n_calls;
    int64_t fail_at_call; /* forward fails on this call (-1: never) */
};

static inline uint64_t fake_mix(uint64_t h, uint64_t x)
{
    uint64_t st = h ^ (x * 0x9e3779b97f4a7c15ull);
    return splitmix64_next(&st);
}

static inline uint64_t fake_kv_value(uint64_t prev, int32_t token, int32_t pos)
{
    return fake_mix(fake_mix(prev, (uint32_t)token), (uint32_t)pos + 0x1000u);
}

static inline int32_t fake_pick(const struct fp8_req_sampling *sp, int32_t argmax,
                                int32_t index, int32_t vocab)
{
    if (sp->temperature == 0)
        return argmax;
    const uint32_t ctr[4] = {(uint32_t)index, 0, 0, 0};
    const uint32_t key[2] = {(uint32_t)sp->seed, (uint32_t)(sp->seed >> 32)};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    return (int32_t)((argmax + out[0] % 7u) % (uint32_t)vocab);
}

static inline int fake_init(struct fake_model *m, int32_t vocab, int32_t n_blocks,
                            int32_t block_size, int32_t max_seqs)
{
    *m = (struct fake_model){.vocab = vocab, .n_slots = n_blocks * block_size,
                             .max_seqs = max_seqs, .fail_at_call = -1};
    m->kv = calloc((size_t)m->n_slots, sizeof(*m->kv));
    m->logits = calloc((size_t)max_seqs * vocab, sizeof(*m->logits));
    return m->kv && m->logits ? 0 : -ENOMEM;
}

static inline void fake_free(struct fake_model *m)
{
    free(m->kv);
    free(m->logits);
}

static inline int32_t fake_slot(const struct fp8_batch *b, int32_t seq, int32_t pos)
{
    int32_t blk = b->block_table[(size_t)seq * b->max_blocks_per_seq + pos / b->block_size];
    return blk < 0 ? -1 : blk * b->block_size + pos % b->block_size;
}

static inline int fake_forward(void *ctx, const struct fp8_batch *b, const float **logits,
                               struct fp8_err *err)
{
    struct fake_model *m = ctx;
    if (m->n_calls++ == m->fail_at_call)
        return fp8_err_set(err, -EIO, "fake model: injected failure");
    int32_t row = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        for (int32_t t = b->seq_start[i]; t < b->seq_start[i + 1]; t++) {
            int32_t pos = b->positions[t];
            int32_t slot = fake_slot(b, i, pos);
            if (slot < 0 || slot != b->slots[t] || slot >= m->n_slots)
                return fp8_err_set(err, -EFAULT, "fake model: seq %d pos %d slot %d, table "
                                   "says %d", (int)i, (int)pos, (int)b->slots[t], (int)slot);
            uint64_t prev = FAKE_ROOT;
            if (pos > 0) {
                int32_t ps = fake_slot(b, i, pos - 1);
                if (ps < 0)
                    return fp8_err_set(err, -EFAULT, "fake model: pos %d unmapped", pos - 1);
                prev = m->kv[ps];
            }
            m->kv[slot] = fake_kv_value(prev, b->tokens[t], pos);
        }
        if (b->positions[b->seq_start[i + 1] - 1] != b->seq_len[i] - 1)
            return fp8_err_set(err, -EFAULT, "fake model: seq %d ends at position %d, "
                               "seq_len %d", (int)i, (int)b->positions[b->seq_start[i + 1] - 1],
                               (int)b->seq_len[i]);
        if (!b->want_logits[i])
            continue;
        uint64_t h = FAKE_ROOT;
        for (int32_t p = 0; p < b->seq_len[i]; p++)
            h = fake_mix(h, m->kv[fake_slot(b, i, p)]);
        float *r = m->logits + (size_t)row++ * m->vocab;
        memset(r, 0, (size_t)m->vocab * sizeof(*r));
        r[h % (uint64_t)m->vocab] = 1;
    }
    *logits = m->logits;
    return 0;
}

static inline int fake_sample(void *ctx, const struct fp8_request *req, const float *logits,
                              int32_t vocab, int32_t *token)
{
    (void)ctx;
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    *token = fake_pick(&req->params.sampling, best, req->n_tokens - req->n_prompt, vocab);
    return 0;
}

/* The request run alone, with no paging: returns the number of generated tokens written
 * to out and the finish reason in *finish. */
static inline int32_t fake_reference(const int32_t *prompt, int32_t n_prompt,
                                     const struct fp8_req_params *p, const int32_t *eos,
                                     int32_t n_eos, int32_t max_model_len, int32_t vocab,
                                     int32_t *out, enum fp8_req_finish *finish)
{
    uint64_t *kv = malloc((size_t)max_model_len * sizeof(*kv));
    int32_t *tok = malloc((size_t)max_model_len * sizeof(*tok));
    if (!kv || !tok) {
        free(kv);
        free(tok);
        return -ENOMEM;
    }
    memcpy(tok, prompt, (size_t)n_prompt * sizeof(*tok));
    int32_t n = n_prompt, n_out = 0;
    for (int32_t i = 0; i < n; i++)
        kv[i] = fake_kv_value(i ? kv[i - 1] : FAKE_ROOT, tok[i], i);
    for (;;) {
        uint64_t h = FAKE_ROOT;
        for (int32_t i = 0; i < n; i++)
            h = fake_mix(h, kv[i]);
        int32_t t = fake_pick(&p->sampling, (int32_t)(h % (uint64_t)vocab), n_out, vocab);
        out[n_out++] = t;
        tok[n++] = t;
        bool stop = false;
        for (int32_t i = 0; i < n_eos && !p->ignore_eos; i++)
            stop |= t == eos[i];
        for (int32_t i = 0; i < p->n_stop_ids; i++)
            stop |= t == p->stop_ids[i];
        if (stop) {
            *finish = FP8_REQ_FINISH_STOP;
            break;
        }
        if (n_out == p->max_tokens || n == max_model_len) {
            *finish = FP8_REQ_FINISH_LENGTH;
            break;
        }
        kv[n - 1] = fake_kv_value(kv[n - 2], t, n - 1);
    }
    free(kv);
    free(tok);
    return n_out;
}

#endif
