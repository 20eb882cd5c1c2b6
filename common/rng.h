/* Counter-based and stream random numbers shared by every backend.
 *
 * Philox4x32-10 (Salmon et al., SC'11; Random123) drives sampling: a draw is a pure
 * function of (seed, request step, index), so the ref and CUDA backends produce the same
 * tokens for the same seed, whatever the batch. splitmix64 fills random checkpoints. */
#ifndef FP8_COMMON_RNG_H
#define FP8_COMMON_RNG_H

#include <stdint.h>

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Uniform float in [0, 1) from 24 random bits. */
static inline float rng_u32_to_unit(uint32_t x)
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
