#include "engine/sampling.h"

#include <errno.h>
#include <math.h>
#include <string.h>

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

/* Appends the distinct ids of tokens[lo, hi) not yet marked in seen, marking them. */
static int32_t distinct(const int32_t *tokens, int32_t lo, int32_t hi, int32_t vocab,
                        uint8_t *seen, int32_t *out)
{
    int32_t n = 0;
    for (int32_t i = lo; i < hi; i++) {
        int32_t t = tokens[i];
        if (t < 0 || t >= vocab || seen[t])
            continue;
        seen[t] = 1;
        out[n++] = t;
    }
    return n;
}

int32_t fp8_sample_row_fill(struct fp8_sample_row *row, const struct fp8_sampling_params *p,
                            uint32_t step, const int32_t *tokens, int32_t n_tokens,
                            int32_t n_prompt, int32_t vocab, uint8_t *seen, int32_t *pen,
                            int32_t pen_start)
{
    *row = (struct fp8_sample_row){
        .temperature = p->temperature,
        .top_k = p->top_k,
        .top_p = p->top_p,
        .min_p = p->min_p,
        .repetition_penalty = p->repetition_penalty,
        .presence_penalty = p->presence_penalty,
        .seed = p->seed,
        .step = step,
        .pen_start = pen_start,
    };
    if (p->repetition_penalty == 1.0f && p->presence_penalty == 0.0f)
        return 0;
    int32_t gen0 = n_prompt < n_tokens ? n_prompt : n_tokens;
    int32_t *out = pen + pen_start;
    int32_t n_gen = distinct(tokens, gen0, n_tokens, vocab, seen, out);
    int32_t n = n_gen;
    /* Prompt-only tokens get the repetition penalty alone. */
    if (p->repetition_penalty != 1.0f)
        n += distinct(tokens, 0, gen0, vocab, seen, out + n);
    for (int32_t i = 0; i < n; i++)
        seen[out[i]] = 0;
    row->n_pen = n;
    row->n_pen_gen = n_gen;
    return n;
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
