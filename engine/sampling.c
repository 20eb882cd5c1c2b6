#include "engine/sampling.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

struct fp8_sampling_params fp8_sampling_params_default(void)
{
    return (struct fp8_sampling_params){
        .temperature = 1.0f,
        .top_p = 1.0f,
        .repetition_penalty = 1.0f,
        .max_tokens = 256,
    };
}

int fp8_sampling_params_check(const struct fp8_sampling_params *p, struct fp8_err *err)
{
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return fp8_err_set(err, -EINVAL, "temperature %g must be >= 0", (double)p->temperature);
    if (p->top_k < 0)
        return fp8_err_set(err, -EINVAL, "top_k %d must be >= 0 (0: off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return fp8_err_set(err, -EINVAL, "top_p %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return fp8_err_set(err, -EINVAL, "min_p %g must be in [0, 1]", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f) || !isfinite(p->repetition_penalty))
        return fp8_err_set(err, -EINVAL, "repetition_penalty %g must be > 0",
                           (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty))
        return fp8_err_set(err, -EINVAL, "presence_penalty must be finite");
    if (p->max_tokens < 0)
        return fp8_err_set(err, -EINVAL, "max_tokens %d must be >= 0", p->max_tokens);
    return 0;
}

int fp8_sampler_init(struct fp8_sampler *s, int32_t vocab, struct fp8_err *err)
{
    if (!s || vocab <= 0)
        return fp8_err_set(err, -EINVAL, "sampler: bad vocabulary size %d", vocab);
    struct fp8_sampler n = {.vocab = vocab};
    n.logits = malloc((size_t)vocab * sizeof(float));
    n.cand = malloc((size_t)vocab * sizeof(*n.cand));
    n.seen = calloc((size_t)vocab, 1);
    if (!n.logits || !n.cand || !n.seen) {
        fp8_sampler_free(&n);
        return fp8_err_set(err, -ENOMEM, "sampler: out of memory");
    }
    *s = n;
    return 0;
}

void fp8_sampler_free(struct fp8_sampler *s)
{
    if (!s)
        return;
    free(s->logits);
    free(s->cand);
    free(s->seen);
    memset(s, 0, sizeof(*s));
}

/* Marks each distinct token of tokens[lo, hi) once and applies f to its logit. */
static void penalize(struct fp8_sampler *s, const int32_t *tokens, int32_t lo, int32_t hi,
                     float rep, float presence)
{
    for (int32_t i = lo; i < hi; i++) {
        int32_t t = tokens[i];
        if (t < 0 || t >= s->vocab || s->seen[t])
            continue;
        s->seen[t] = 1;
        float *l = &s->logits[t];
        if (rep != 1.0f)
            *l = *l > 0.0f ? *l / rep : *l * rep;
        *l -= presence;
    }
    for (int32_t i = lo; i < hi; i++)
        if (tokens[i] >= 0 && tokens[i] < s->vocab)
            s->seen[tokens[i]] = 0;
}

static int by_logit_desc(const void *a, const void *b)
{
    const struct fp8_sample_cand *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t fp8_sampler_sample(struct fp8_sampler *s, const float *logits,
                           const struct fp8_sampling_params *p, const int32_t *tokens,
                           int32_t n_tokens, int32_t n_prompt, uint32_t step)
{
    int32_t v = s->vocab;
    memcpy(s->logits, logits, (size_t)v * sizeof(float));
    if (p->repetition_penalty != 1.0f)
        penalize(s, tokens, 0, n_tokens, p->repetition_penalty, 0.0f);
    if (p->presence_penalty != 0.0f)
        penalize(s, tokens, n_prompt < n_tokens ? n_prompt : n_tokens, n_tokens, 1.0f,
                 p->presence_penalty);

    if (p->temperature == 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < v; i++)
            if (s->logits[i] > s->logits[best])
                best = i;
        return best;
    }

    struct fp8_sample_cand *c = s->cand;
    for (int32_t i = 0; i < v; i++)
        c[i] = (struct fp8_sample_cand){s->logits[i], i};
    qsort(c, (size_t)v, sizeof(*c), by_logit_desc);
    int32_t n = p->top_k > 0 && p->top_k < v ? p->top_k : v;

    float mx = c[0].v, total = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        c[i].v = expf((c[i].v - mx) / p->temperature);
        total += c[i].v;
    }
    if (p->top_p < 1.0f) { /* the shortest head holding top_p of the mass */
        float run = 0.0f;
        int32_t i = 0;
        while (i < n && !(run >= p->top_p * total))
            run += c[i++].v;
        n = i;
        total = run;
    }
    if (p->min_p > 0.0f) { /* c[0] has the largest probability */
        float run = c[0].v;
        int32_t i = 1;
        while (i < n && c[i].v >= p->min_p * c[0].v)
            run += c[i++].v;
        n = i;
        total = run;
    }

    uint32_t ctr[4] = {step, 0, 0, 0}, key[2] = {(uint32_t)p->seed, (uint32_t)(p->seed >> 32)},
             out[4];
    philox4x32_10(ctr, key, out);
    float target = rng_u32_to_unit(out[0]) * total, run = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        run += c[i].v;
        if (run > target)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left target at the very end of the mass */
}

enum fp8_finish fp8_sampling_finish(const struct fp8_sampling_params *p, const int32_t *eos_ids,
                                    int32_t n_eos, int32_t token, int32_t n_generated)
{
    if (!p->ignore_eos)
        for (int32_t i = 0; i < n_eos; i++)
            if (eos_ids[i] == token)
                return FP8_FINISH_STOP;
    if (n_generated >= p->max_tokens)
        return FP8_FINISH_LENGTH;
    return FP8_FINISH_NONE;
}

int64_t fp8_stop_find(const char *text, size_t len, size_t new_len, const char *const *stops,
                      int32_t n_stops)
{
    int64_t best = -1;
    if (new_len > len)
        new_len = len;
    for (int32_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        if (!sl || sl > len)
            continue;
        /* A match that ends in the new bytes starts at or after this. */
        size_t from = len - new_len + 1 > sl ? len - new_len + 1 - sl : 0;
        const char *hit = memmem(text + from, len - from, stops[i], sl);
        if (hit && (best < 0 || hit - text < best))
            best = hit - text;
    }
    return best;
}

size_t fp8_stop_holdback(const char *text, size_t len, const char *const *stops, int32_t n_stops)
{
    size_t hold = 0;
    for (int32_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        size_t longest = sl == 0 ? 0 : (sl - 1 < len ? sl - 1 : len);
        for (size_t k = longest; k > hold; k--)
            if (!memcmp(text + len - k, stops[i], k)) {
                hold = k;
                break;
            }
    }
    return hold;
}
