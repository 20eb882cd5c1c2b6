/* kernels.h's `sample` op on the device: one block per logit row, fp32 logits, exact
 * top-k / top-p / min-p over the whole vocabulary without sorting it.
 *
 * The candidates' order (descending logit, lower id first on ties) is the order of one
 * 64-bit key per id: the logit's bits mapped to an unsigned order in the high half, the
 * complemented id in the low half, so every key is distinct. Each cut-off the contract
 * defines is the key of one element, found by a radix search over the key's 8 bytes
 * (most significant first): per pass, a 256-bin histogram of the elements sharing the
 * prefix found so far, then the bin holding the target. The top-k cut counts elements;
 * the top-p cut and the draw accumulate weights.
 *
 * Weights are w = expf((l - l_max) / temperature) in fp32, as the ref backend computes
 * them, then summed as 40-bit fixed-point integers (w * 2^40, truncated) with integer
 * atomics: the sums do not depend on the order the threads add in, so a row's draw is
 * bit-for-bit the same on every run, every rank and in every batch, and they are exact
 * to 2^-40 per weight. The ref backend sums in float64 in sorted order; the two can pick
 * different ids only where a candidate boundary lies within those roundings (or expf's
 * last ulp) of the draw, the top-p threshold or min_p
 * (docs/numerics.md). */
#include <math.h>

#include "common/rng.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/kernels.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kBins = 256;
constexpr float kFixedOne = 0x1p40f; /* w = 1 in the fixed-point sums */

__device__ __forceinline__ uint64_t key_of(float l, int32_t id)
{
    uint32_t u = __float_as_uint(l + 0.0f); /* -0 == +0, as the ref backend compares */
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)~(uint32_t)id;
}

__device__ __forceinline__ int32_t id_of(uint64_t key)
{
    return (int32_t)~(uint32_t)key;
}

struct row_ctx {
    const float *l;
    int32_t v;
    float mx, t, min_p;
    uint64_t cut; /* candidates: key >= cut and w >= min_p */
};

__device__ __forceinline__ float weight(const row_ctx &r, float l)
{
    return expf((l - r.mx) / r.t);
}

__device__ __forceinline__ uint64_t fixed(float w)
{
    return (uint64_t)(w * kFixedOne);
}

struct smem {
    unsigned long long mass[kBins];
    unsigned int cnt[kBins];
    unsigned long long red[kThreads / 32];
    float redf[kThreads / 32];
    int32_t redi[kThreads / 32];
    uint64_t prefix, mask, rem;
    int done;
    int32_t pick;
};

/* Sum of v over the block (integers: any order gives the same sum). */
__device__ uint64_t block_sum(smem &s, uint64_t v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0)
        s.red[threadIdx.x >> 5] = v;
    __syncthreads();
    uint64_t t = 0;
    for (int w = 0; w < kThreads / 32; w++)
        t += s.red[w];
    __syncthreads();
    return t;
}

/* The largest value and, for greedy, the lowest index holding it (NaN never wins). */
__device__ void block_argmax(smem &s, const float *l, int32_t v, float *best_out,
                             int32_t *id_out)
{
    float best = -INFINITY;
    int32_t bi = INT32_MAX;
    for (int32_t i = threadIdx.x; i < v; i += kThreads)
        if (l[i] > best || (l[i] == best && i < bi)) {
            best = l[i];
            bi = i;
        }
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) {
            best = ob;
            bi = oi;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        s.redf[threadIdx.x >> 5] = best;
        s.redi[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    best = s.redf[0];
    bi = s.redi[0];
    for (int w = 1; w < kThreads / 32; w++)
        if (s.redf[w] > best || (s.redf[w] == best && s.redi[w] < bi)) {
            best = s.redf[w];
            bi = s.redi[w];
        }
    __syncthreads();
    *best_out = best;
    *id_out = bi == INT32_MAX ? 0 : bi; /* an all-NaN row: 0 */
}

/* Fixed-point weight sum of the candidates. */
__device__ uint64_t candidates_sum(smem &s, const row_ctx &r)
{
    uint64_t t = 0;
    for (int32_t i = threadIdx.x; i < r.v; i += kThreads) {
        const float l = r.l[i];
        if (key_of(l, i) < r.cut)
            continue;
        const float w = weight(r, l);
        if (w >= r.min_p)
            t += fixed(w);
    }
    return block_sum(s, t);
}

/* The radix search. by_mass false: the key of the k-th largest key (k = target, counted
 * over every element). by_mass true: the key of the first candidate, in descending key
 * order, whose running weight sum reaches target (1 <= target <= the candidates' sum).
 * Returns that element's key, or its leading bytes followed by zeros once it is the only
 * element with them (the same cut-off: no other key lies between). */
__device__ uint64_t radix_find(smem &s, const row_ctx &r, bool by_mass, uint64_t target)
{
    if (threadIdx.x == 0) {
        s.prefix = 0;
        s.mask = 0;
        s.rem = target;
        s.done = 0;
    }
    __syncthreads();
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < kBins; b += kThreads) {
            s.mass[b] = 0;
            s.cnt[b] = 0;
        }
        __syncthreads();
        const uint64_t prefix = s.prefix, mask = s.mask;
        for (int32_t i = threadIdx.x; i < r.v; i += kThreads) {
            const float l = r.l[i];
            const uint64_t k = key_of(l, i);
            if ((k & mask) != prefix)
                continue;
            const int b = (int)((k >> shift) & 0xff);
            if (by_mass) {
                if (k < r.cut)
                    continue;
                const float w = weight(r, l);
                if (!(w >= r.min_p))
                    continue;
                atomicAdd(&s.mass[b], (unsigned long long)fixed(w));
            }
            atomicAdd(&s.cnt[b], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            uint64_t rem = s.rem;
            int chosen = -1;
            for (int b = kBins - 1; b >= 0; b--) {
                const uint64_t have = by_mass ? s.mass[b] : s.cnt[b];
                if (have >= rem && s.cnt[b] > 0) {
                    chosen = b;
                    break;
                }
                rem -= have;
            }
            if (chosen < 0) { /* cannot happen for a target within the sum: the last element */
                for (int b = 0; b < kBins && chosen < 0; b++)
                    if (s.cnt[b] > 0)
                        chosen = b;
                rem = 1;
            }
            s.prefix |= (uint64_t)chosen << shift;
            s.mask |= (uint64_t)0xff << shift;
            s.rem = rem;
            s.done = s.cnt[chosen] == 1 || (!by_mass && s.cnt[chosen] == rem);
        }
        __syncthreads();
        if (s.done)
            break;
    }
    const uint64_t cut = s.prefix;
    __syncthreads();
    return cut;
}

/* The id of the element radix_find(by_mass) stopped at: the smallest candidate key >= cut
 * (keys are distinct, and no other candidate shares the bytes it determined). */
__device__ int32_t id_at(smem &s, const row_ctx &r, uint64_t cut)
{
    uint64_t best = ~(uint64_t)0;
    for (int32_t i = threadIdx.x; i < r.v; i += kThreads) {
        const float l = r.l[i];
        const uint64_t k = key_of(l, i);
        if (k < cut || k < r.cut || k >= best)
            continue;
        if (weight(r, l) >= r.min_p)
            best = k;
    }
    for (int o = 16; o > 0; o >>= 1) {
        const uint64_t ob = __shfl_xor_sync(0xffffffffu, best, o);
        best = ob < best ? ob : best;
    }
    if ((threadIdx.x & 31) == 0)
        s.red[threadIdx.x >> 5] = best;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint64_t b = s.red[0];
        for (int w = 1; w < kThreads / 32; w++)
            b = s.red[w] < b ? s.red[w] : b;
        s.pick = id_of(b);
    }
    __syncthreads();
    return s.pick;
}

__global__ void __launch_bounds__(kThreads)
sample_kernel(int32_t *ids, float *logits, const struct fp8_sample_row *rows,
              const int32_t *pen, int32_t v)
{
    __shared__ smem s;
    const struct fp8_sample_row p = rows[blockIdx.x];
    float *l = logits + (size_t)blockIdx.x * v;
    for (int32_t i = threadIdx.x; i < p.n_pen; i += kThreads) {
        const int32_t t = pen[p.pen_start + i]; /* distinct: no two threads share a logit */
        float x = l[t];
        if (p.repetition_penalty != 1.0f)
            x = x > 0.0f ? x / p.repetition_penalty : x * p.repetition_penalty;
        if (i < p.n_pen_gen)
            x -= p.presence_penalty;
        l[t] = x;
    }
    __syncthreads();
    float mx;
    int32_t best;
    block_argmax(s, l, v, &mx, &best);
    if (p.temperature == 0.0f) {
        if (threadIdx.x == 0)
            ids[blockIdx.x] = best;
        return;
    }
    row_ctx r;
    r.l = l;
    r.v = v;
    r.mx = mx;
    r.t = p.temperature;
    r.min_p = 0.0f;
    r.cut = 0;
    if (p.top_k > 0 && p.top_k < v)
        r.cut = radix_find(s, r, false, (uint64_t)p.top_k);
    if (p.top_p < 1.0f) {
        const uint64_t total = candidates_sum(s, r);
        uint64_t thr = (uint64_t)ceil((double)p.top_p * (double)total);
        thr = thr < 1 ? 1 : thr > total ? total : thr;
        const uint64_t cp = radix_find(s, r, true, thr);
        r.cut = cp > r.cut ? cp : r.cut;
    }
    r.min_p = p.min_p; /* w of the largest logit is exp(0) = 1 >= min_p: never empty */
    const uint64_t total = candidates_sum(s, r);
    const uint32_t ctr[4] = {p.step, 0, 0, 0};
    const uint32_t key[2] = {(uint32_t)p.seed, (uint32_t)(p.seed >> 32)};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    /* floor(u * total) with u = 24 random bits / 2^24, exactly */
    const uint64_t target = __umul64hi(total, (uint64_t)(out[0] >> 8) << 40);
    const uint64_t c = radix_find(s, r, true, target + 1);
    const int32_t id = id_at(s, r, c);
    if (threadIdx.x == 0)
        ids[blockIdx.x] = id;
}

} // namespace

extern "C" int fp8_cuda_sample(int32_t *ids, float *logits, const struct fp8_sample_row *rows,
                               const int32_t *pen, int32_t n_rows, int32_t vocab, void *stream,
                               struct fp8_err *err)
{
    if (!ids || !logits || !rows || n_rows < 1 || vocab < 1)
        return fp8_err_set(err, -EINVAL, "sample(rows=%d vocab=%d): NULL tensor or empty shape",
                           (int)n_rows, (int)vocab);
    /* 2^23 weights of at most 2^40 each fit the 64-bit sums. */
    if (vocab > (1 << 23) || n_rows > 65535)
        return fp8_err_set(err, -EINVAL, "sample(rows=%d vocab=%d): at most 65535 rows of a "
                           "vocabulary up to 2^23", (int)n_rows, (int)vocab);
    sample_kernel<<<(unsigned)n_rows, kThreads, 0, (cudaStream_t)stream>>>(ids, logits, rows,
                                                                          pen, vocab);
    return fp8_cuda_check(cudaGetLastError(), err, "sample(rows=%d vocab=%d)", (int)n_rows,
                          (int)vocab);
}
