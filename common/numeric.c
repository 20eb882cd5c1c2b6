#include "numeric.h"

#include <math.h>
#include <string.h>

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* keep it a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31)
        return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u)
        return sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u);
    if (x >= 0x477ff000u) /* 65520 and up round to infinity */
        return sign | 0x7c00u;
    if (x < 0x38800000u) /* below 2^-14: subnormal in f16, unit 2^-24 (exact scaling) */
        return sign | (uint16_t)rintf(bits_f32(x) * 0x1p24f);
    x += 0x0fffu + ((x >> 13) & 1u);
    return sign | (uint16_t)((x - 0x38000000u) >> 13);
}

float e4m3_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t e = (b >> 3) & 0xfu;
    uint32_t m = b & 0x7u;
    if (e == 15 && m == 7)
        return NAN;
    if (e == 0) /* subnormal: m * 2^-9, exact in fp32 */
        return bits_f32(sign | f32_bits((float)m * 0x1p-9f));
    /* Normal: rebias the exponent (7 -> 127) and move the 3 mantissa bits to the top. */
    return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

uint8_t f32_to_e4m3(float f)
{
    uint32_t u = f32_bits(f);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7fu;
    if (a < 0x3c800000u) /* below 2^-6: subnormal in e4m3, unit 2^-9 (exact scaling) */
        return sign | (uint8_t)rintf(bits_f32(a) * 512.0f);
    a += 0x7ffffu + ((a >> 20) & 1u); /* round the 23-bit mantissa to 3 bits, to even */
    int32_t e = (int32_t)((a >> 23) & 0xffu) - 127;
    uint32_t m = (a >> 20) & 7u;
    if (e > 8 || (e == 8 && m == 7))
        return sign | 0x7eu; /* saturate to 448 */
    return sign | (uint8_t)(((uint32_t)(e + 7) << 3) | m);
}
