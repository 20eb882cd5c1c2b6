/* kernels.h's `sample` op on the device: one block per logit row, fp32 logits, exact
 * top-k / top-p / min-p over the whole vocabulary without sorting it.
 *
 * The candidates' order (descending logit, lower id first on ties) is the order of one
 * 64-bit key per id: the logit's bits mapped to an unsigned order in the high half, the
 * complemented id in the low half, so every key is distinct. Each cut-off the contract
 * defines is the key of one element: the first, in descending key order, whose running
 * count (top-k) or weight sum (top-p, the draw) reaches a target.
 *
 * Weights are w = expf((l - l_max) / temperature) in fp32, as the ref backend computes
 * them, then summed as 40-bit fixed-point integers (w * 2^40, truncated) with integer
 * atomics: the sums do not depend on the order the threads add in, so a row's draw is
 * bit-for-bit the same on every run, every rank and in every batch, and they are exact
 * to 2^-40 per weight. The ref backend sums in float64 in sorted order; the two can pick
 * different ids only where a candidate boundary lies within those roundings (or expf's
 * last ulp) of the draw, the top-p threshold or min_p (docs/numerics.md).
 *
 * Finding a cut-off costs few passes over the row (the row is 600 KB for Qwen3, read by
 * one SM): after the maximum, one pass sorts every id into one of kBuckets buckets of
 * (l_max - l) / temperature (a monotone function of the key, so each bucket is a key
 * range; ids past kWindow weigh less than 2^-41, 0 in fixed point, and can only matter
 * to top-k's count, which the buckets give as well) with the buckets' counts and weight
 * sums; a scan over the buckets finds the one holding the cut-off, one more pass copies
 * that bucket's keys (or, under top-k, the whole head up to the k-th id's bucket) to
 * shared memory, and a radix search over those keys (one 256-bin histogram per key
 * byte, most significant first) finds the element. A bucket too large for the buffer
 * (more than kCap ids within 1/72 of a temperature unit: ties by the thousand) is
 * searched in the row instead: slower, the same result. */
#include <math.h>

#include "common/rng.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/kernels.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;         /* radix digits */
constexpr int kBuckets = 2048;     /* value buckets, 2 per thread */
constexpr int kCap = 6144;         /* keys the shared buffer holds (all fits sm_89: 99 KB) */
constexpr float kWindow = 28.5f;   /* (l_max - l) / T past which w < e^-28.5 < 2^-41 */
constexpr float kFixedOne = 0x1p40f; /* w = 1 in the fixed-point sums */

__device__ __forceinline__ uint64_t key_of(float l, int32_t id)
{
    uint32_t u = __float_as_uint(l + 0.0f); /* -0 == +0, as the ref backend compares */
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)~(uint32_t)id;
}

__device__ __forceinline__ float logit_of(uint64_t key)
{
    const uint32_t u = (uint32_t)(key >> 32);
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

__device__ __forceinline__ int32_t id_of(uint64_t key)
{
    return (int32_t)~(uint32_t)key;
}

struct row_ctx {
    const float *l;
    int32_t v;
    float mx, t, min_p;
    float scale;  /* buckets per logit unit: kBuckets / (kWindow * t), at most FLT_MAX */
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

/* 0 for the largest logits, -1 past the window (and for NaN). (l_max - l) rounds
 * monotonically, and so does the product: ties share a bucket, larger logits never sit
 * in a later one. */
__device__ __forceinline__ int bucket_of(const row_ctx &r, float l)
{
    const float d = (r.mx - l) * r.scale;
    return d < (float)kBuckets ? (int)d : -1;
}

__device__ __forceinline__ bool is_candidate(const row_ctx &r, uint64_t k, float l)
{
    return k >= r.cut && weight(r, l) >= r.min_p;
}

struct smem {
    unsigned long long mass[kBins]; /* radix histograms */
    unsigned int cnt[kBins];
    unsigned long long red[kWarps];
    float redf[kWarps];
    int32_t redi[kWarps];
    uint64_t prefix, mask, rem;
    int done;
    int found;        /* bucket_find's answer */
    uint64_t found_rem;
    unsigned int hcnt[kBuckets];       /* ids per bucket */
    unsigned long long hmass[kBuckets];   /* their fixed-point weight */
    unsigned long long hmass_mp[kBuckets]; /* of those with w >= min_p (min_p > 0) */
    int nbuf;
    unsigned long long keys[kCap];
};
static_assert(sizeof(smem) <= 99 * 1024, "sm_89 gives a block at most 99 KB of shared memory");

/* Calls f(i, l[i]) for every id of the row, 16-byte loads four deep when aligned. The
 * row was written in this kernel (penalties): plain loads, not the read-only path. */
template <class F> __device__ __forceinline__ void row_each(const float *l, int32_t v, F f)
{
    if ((v & 3) == 0 && ((uintptr_t)l & 15) == 0) {
        const float4 *l4 = (const float4 *)l;
        const int32_t n4 = v >> 2;
        int32_t i = threadIdx.x;
        for (; i + 3 * kThreads < n4; i += 4 * kThreads) {
            float4 a[4];
#pragma unroll
            for (int u = 0; u < 4; u++)
                a[u] = l4[i + u * kThreads];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int32_t j = 4 * (i + u * kThreads);
                f(j, a[u].x);
                f(j + 1, a[u].y);
                f(j + 2, a[u].z);
                f(j + 3, a[u].w);
            }
        }
        for (; i < n4; i += kThreads) {
            const float4 a = l4[i];
            f(4 * i, a.x);
            f(4 * i + 1, a.y);
            f(4 * i + 2, a.z);
            f(4 * i + 3, a.w);
        }
    } else {
        for (int32_t i = threadIdx.x; i < v; i += kThreads)
            f(i, l[i]);
    }
}

/* Sum of v over the block (integers: any order gives the same sum). */
__device__ uint64_t block_sum(smem &s, uint64_t v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0)
        s.red[threadIdx.x >> 5] = v;
    __syncthreads();
    uint64_t t = 0;
    for (int w = 0; w < kWarps; w++)
        t += s.red[w];
    __syncthreads();
    return t;
}

/* The sum of v over the threads before this one. */
__device__ uint64_t block_scan_excl(smem &s, uint64_t v)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t inc = v;
    for (int o = 1; o < 32; o <<= 1) {
        const uint64_t n = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o)
            inc += n;
    }
    if (lane == 31)
        s.red[warp] = inc;
    __syncthreads();
    uint64_t before = 0;
    for (int w = 0; w < warp; w++)
        before += s.red[w];
    __syncthreads();
    return before + inc - v;
}

/* The smallest key over the block (~0 when none). */
__device__ uint64_t block_min(smem &s, uint64_t best)
{
    for (int o = 16; o > 0; o >>= 1) {
        const uint64_t ob = __shfl_xor_sync(0xffffffffu, best, o);
        best = ob < best ? ob : best;
    }
    if ((threadIdx.x & 31) == 0)
        s.red[threadIdx.x >> 5] = best;
    __syncthreads();
    uint64_t b = s.red[0];
    for (int w = 1; w < kWarps; w++)
        b = s.red[w] < b ? s.red[w] : b;
    __syncthreads();
    return b;
}

/* The largest value and, for greedy, the lowest index holding it (NaN never wins); the
 * count of NaNs with the sign bit clear, whose keys lie above every number's. */
__device__ void block_argmax(smem &s, const float *l, int32_t v, float *best_out,
                             int32_t *id_out, uint32_t *nan_hi)
{
    float best = -INFINITY;
    int32_t bi = INT32_MAX;
    uint32_t nans = 0;
    row_each(l, v, [&](int32_t i, float x) {
        if (x > best || (x == best && i < bi)) {
            best = x;
            bi = i;
        }
        nans += isnan(x) && !signbit(x);
    });
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
    for (int w = 1; w < kWarps; w++)
        if (s.redf[w] > best || (s.redf[w] == best && s.redi[w] < bi)) {
            best = s.redf[w];
            bi = s.redi[w];
        }
    __syncthreads();
    *best_out = best;
    *id_out = bi == INT32_MAX ? 0 : bi; /* an all-NaN row: 0 */
    *nan_hi = (uint32_t)block_sum(s, nans);
}

/* Bucket counts and, with masses, fixed-point weight sums (all ids, and those with
 * w >= min_p when min_p > 0). */
__device__ void buckets_fill(smem &s, const row_ctx &r, bool masses, float min_p)
{
    for (int b = threadIdx.x; b < kBuckets; b += kThreads) {
        s.hcnt[b] = 0;
        s.hmass[b] = 0;
        s.hmass_mp[b] = 0;
    }
    __syncthreads();
    row_each(r.l, r.v, [&](int32_t, float l) {
        const int b = bucket_of(r, l);
        if (b < 0)
            return;
        atomicAdd(&s.hcnt[b], 1u);
        if (!masses)
            return;
        const float w = weight(r, l);
        const uint64_t f = fixed(w);
        if (f == 0)
            return;
        atomicAdd(&s.hmass[b], (unsigned long long)f);
        if (min_p > 0.0f && w >= min_p)
            atomicAdd(&s.hmass_mp[b], (unsigned long long)f);
    });
    __syncthreads();
}

enum amount { AMOUNT_COUNT, AMOUNT_MASS, AMOUNT_MASS_MP };

__device__ __forceinline__ uint64_t bucket_amount(const smem &s, enum amount a, int b)
{
    return a == AMOUNT_COUNT ? s.hcnt[b] : a == AMOUNT_MASS ? s.hmass[b] : s.hmass_mp[b];
}

/* The bucket where the running amount over buckets [0, last] reaches target, bucket last
 * counting last_amount instead of its histogram entry; *rem = target less the buckets
 * before it. */
__device__ int bucket_find(smem &s, enum amount a, int last, uint64_t last_amount,
                           uint64_t target, uint64_t *rem)
{
    const int b0 = 2 * threadIdx.x;
    uint64_t a0 = b0 < last ? bucket_amount(s, a, b0) : b0 == last ? last_amount : 0;
    uint64_t a1 = b0 + 1 < last ? bucket_amount(s, a, b0 + 1) : b0 + 1 == last ? last_amount : 0;
    if (threadIdx.x == 0)
        s.found = -1;
    const uint64_t before = block_scan_excl(s, a0 + a1); /* syncs after s.found's reset */
    if (before < target && target <= before + a0) {
        s.found = b0;
        s.found_rem = target - before;
    } else if (before + a0 < target && target <= before + a0 + a1) {
        s.found = b0 + 1;
        s.found_rem = target - before - a0;
    }
    __syncthreads();
    int b = s.found;
    *rem = s.found_rem;
    __syncthreads();
    if (b < 0) { /* cannot happen for a target within the sum: stay in bounds */
        b = last;
        *rem = 1;
    }
    return b;
}

/* The sum of buckets [0, last) (last_amount for bucket last, which the caller adds). */
__device__ uint64_t buckets_before(smem &s, enum amount a, int last)
{
    const int b0 = 2 * threadIdx.x;
    uint64_t t = 0;
    if (b0 < last)
        t += bucket_amount(s, a, b0);
    if (b0 + 1 < last)
        t += bucket_amount(s, a, b0 + 1);
    return block_sum(s, t);
}

/* The ids a search looks at: buckets [blo, bhi], their keys in s.keys when buffered. */
struct view {
    int blo, bhi;
    bool buffered;
};

template <class F> __device__ __forceinline__ void view_each(smem &s, const row_ctx &r,
                                                             const view &w, F f)
{
    if (w.buffered) {
        const int n = s.nbuf < kCap ? s.nbuf : kCap;
        for (int i = threadIdx.x; i < n; i += kThreads) {
            const uint64_t k = s.keys[i];
            f(k, logit_of(k));
        }
        return;
    }
    row_each(r.l, r.v, [&](int32_t i, float l) {
        const int b = bucket_of(r, l);
        if (b >= w.blo && b <= w.bhi)
            f(key_of(l, i), l);
    });
}

/* Buckets [blo, bhi] (n ids) as a view: copied to the buffer when they fit it. */
__device__ view view_load(smem &s, const row_ctx &r, int blo, int bhi, uint64_t n)
{
    view w = {blo, bhi, n <= (uint64_t)kCap};
    if (!w.buffered)
        return w;
    if (threadIdx.x == 0)
        s.nbuf = 0;
    __syncthreads();
    row_each(r.l, r.v, [&](int32_t i, float l) {
        const int b = bucket_of(r, l);
        if (b < blo || b > bhi)
            return;
        const int j = atomicAdd(&s.nbuf, 1);
        if (j < kCap) /* always: n counted the same ids */
            s.keys[j] = key_of(l, i);
    });
    __syncthreads();
    return w;
}

/* Fixed-point weight sum of the view's candidates. */
__device__ uint64_t view_sum(smem &s, const row_ctx &r, const view &w)
{
    uint64_t t = 0;
    view_each(s, r, w, [&](uint64_t k, float l) {
        if (k < r.cut)
            return;
        const float x = weight(r, l);
        if (x >= r.min_p)
            t += fixed(x);
    });
    return block_sum(s, t);
}

/* The radix search over the view. by_mass false: the key of the target-th largest key
 * (every id of the view counts). by_mass true: the key of the first candidate, in
 * descending key order, whose running weight sum reaches target (1 <= target <= the
 * view's candidates' sum). Returns the element's exact key. */
__device__ uint64_t view_find(smem &s, const row_ctx &r, const view &w, bool by_mass,
                              uint64_t target)
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
        view_each(s, r, w, [&](uint64_t k, float l) {
            if ((k & mask) != prefix)
                return;
            const int b = (int)((k >> shift) & 0xff);
            if (by_mass) {
                if (k < r.cut)
                    return;
                const float x = weight(r, l);
                if (!(x >= r.min_p))
                    return;
                atomicAdd(&s.mass[b], (unsigned long long)fixed(x));
            }
            atomicAdd(&s.cnt[b], 1u);
        });
        __syncthreads();
        /* bins in descending key order, one per thread of the first 256 */
        const int b = kBins - 1 - (int)threadIdx.x;
        const uint64_t have = b >= 0 ? (by_mass ? s.mass[b] : s.cnt[b]) : 0;
        const uint64_t rem = s.rem;
        if (threadIdx.x == 0)
            s.done = 1; /* unless a bin below takes the target: past the sum, stop */
        const uint64_t before = block_scan_excl(s, have);
        if (b >= 0 && before < rem && rem <= before + have) {
            s.prefix |= (uint64_t)b << shift;
            s.mask |= (uint64_t)0xff << shift;
            s.rem = rem - before;
            s.done = s.cnt[b] == 1 || (!by_mass && s.cnt[b] == rem - before);
        }
        __syncthreads();
        if (s.done)
            break;
    }
    const uint64_t cut = s.prefix;
    __syncthreads();
    /* The determined bytes then zeros: the smallest key of the view at or above it that
     * counts is the element (no other one shares those bytes). */
    uint64_t best = ~(uint64_t)0;
    view_each(s, r, w, [&](uint64_t k, float l) {
        if (k >= cut && k < best && (!by_mass || is_candidate(r, k, l)))
            best = k;
    });
    return block_min(s, best);
}

__global__ void __launch_bounds__(kThreads)
sample_kernel(int32_t *ids, float *logits, const struct fp8_sample_row *rows,
              const int32_t *pen, int32_t v)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    smem &s = *reinterpret_cast<smem *>(smem_raw);
    /* the parameters (host memory mapped into the device when the draw is part of a
     * decode graph) are fetched while the vocabulary projection still runs */
    const struct fp8_sample_row p = rows[blockIdx.x];
    fp8_grid_wait();
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
    uint32_t nan_hi;
    block_argmax(s, l, v, &mx, &best, &nan_hi);
    /* Greedy; and a row without weight (an infinite or no finite maximum, or a top-k
     * inside the NaNs above it) draws its greedy pick. */
    const bool top_k = p.top_k > 0 && p.top_k < v;
    if (p.temperature == 0.0f || !isfinite(mx) || (top_k && (uint32_t)p.top_k <= nan_hi)) {
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
    r.scale = fminf((float)kBuckets / kWindow / p.temperature, 3.4028235e38f);
    r.cut = 0;

    /* Candidates lie in buckets [0, last]; when cut, bucket last is the current view's.
     * head: the view holds every bucket up to last (top-k's head), searched directly. */
    int last = kBuckets - 1;
    bool cut = false, head = false;
    view cur = {0, -1, false};
    buckets_fill(s, r, !top_k, p.min_p); /* top-k's head needs counts only */
    if (top_k) {
        const uint64_t target = (uint64_t)p.top_k - nan_hi;
        uint64_t rem = 0;
        const uint64_t window = buckets_before(s, AMOUNT_COUNT, kBuckets);
        /* fewer ids than top_k weigh anything (the others all weigh 0): no cut */
        const int b = target <= window ? bucket_find(s, AMOUNT_COUNT, last, s.hcnt[last],
                                                     target, &rem) : -1;
        const int hb = b >= 0 ? b : kBuckets - 1;
        const uint64_t through = b >= 0 ? target - rem + s.hcnt[b] : window;
        if (through <= (uint64_t)kCap) {
            cur = view_load(s, r, 0, hb, through);
            head = true;
            rem = target;
        } else {
            buckets_fill(s, r, true, p.min_p);
            if (b >= 0)
                cur = view_load(s, r, b, b, s.hcnt[b]);
        }
        if (b >= 0) {
            r.cut = view_find(s, r, cur, false, rem);
            last = b;
            cut = true;
        }
    }
    /* The candidates' weight sum, and the key of the first whose running sum reaches
     * target, as the radix search over the head, or over the bucket the scan names. */
    auto total_of = [&](enum amount a) -> uint64_t {
        if (head)
            return view_sum(s, r, cur);
        const uint64_t in_last = cut ? view_sum(s, r, cur) : bucket_amount(s, a, last);
        return buckets_before(s, a, last) + in_last;
    };
    auto find = [&](enum amount a, uint64_t target) -> uint64_t {
        if (head)
            return view_find(s, r, cur, true, target);
        const uint64_t in_last = cut ? view_sum(s, r, cur) : bucket_amount(s, a, last);
        uint64_t rem = 0;
        const int b = bucket_find(s, a, last, in_last, target, &rem);
        if (!(cur.blo == b && cur.bhi == b))
            cur = view_load(s, r, b, b, s.hcnt[b]);
        last = b;
        cut = true;
        return view_find(s, r, cur, true, rem);
    };
    if (p.top_p < 1.0f) {
        const uint64_t total = total_of(AMOUNT_MASS);
        uint64_t thr = (uint64_t)ceil((double)p.top_p * (double)total);
        thr = thr < 1 ? 1 : thr > total ? total : thr;
        r.cut = find(AMOUNT_MASS, thr); /* a candidate: not below the top-k cut */
    }
    r.min_p = p.min_p; /* w of the largest logit is exp(0) = 1 >= min_p: never empty */
    const enum amount a = p.min_p > 0.0f ? AMOUNT_MASS_MP : AMOUNT_MASS;
    const uint64_t total = total_of(a);
    const uint32_t ctr[4] = {p.step, 0, 0, 0};
    const uint32_t key[2] = {(uint32_t)p.seed, (uint32_t)(p.seed >> 32)};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    /* floor(u * total) with u = 24 random bits / 2^24, exactly */
    const uint64_t target = __umul64hi(total, (uint64_t)(out[0] >> 8) << 40);
    const int32_t id = id_of(find(a, target + 1));
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
    const int bytes = (int)sizeof(smem);
    cudaError_t e = cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         bytes);
    if (e == cudaSuccess) {
        e = fp8_cuda_launch_pdl_smem(sample_kernel, dim3((unsigned)n_rows), dim3(kThreads),
                                     (size_t)bytes, (cudaStream_t)stream, ids, logits, rows, pen,
                                     vocab);
    }
    return fp8_cuda_check(e, err, "sample(rows=%d vocab=%d)", (int)n_rows, (int)vocab);
}
