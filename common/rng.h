/* Counter-based and stream random numbers shared by every backend.
 *
 * Philox4x32-10 (Salmon et al., SC'11; Random123) drives sampling: a draw is a pure
 * function of (seed, request step, index), so the ref and CUDA backends produce the same
 * tokens for the same seed, whatever the batch. splitmix64 fills random checkpoints. */
#ifndef FP8_COMMON_RNG_H
#define FP8_COMMON_RNG_H

#include <stdint.h>

/* Host and device (kernels/cuda/sample.cu draws with the very same code). */
#ifdef __CUDACC__
#define FP8_RNG_FN static inline __host__ __device__
#else
#define FP8_RNG_FN static inline
#endif

FP8_RNG_FN void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    const uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    const uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)m0 * c0;
        uint64_t p1 = (uint64_t)m1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += w0;
        k1 += w1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* Uniform float in [0, 1) from 24 random bits. */
FP8_RNG_FN float rng_u32_to_unit(uint32_t x)
{
    return (float)(x >> 8) * 0x1p-24f;
}

static inline uint64_t splitmix64_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#endif
