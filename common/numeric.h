/* Scalar conversions between fp32 and the stored number formats of fp8d.
 *
 * These are the definitions every backend agrees on: the ref backend computes with them,
 * the CUDA backend's kernels must produce the same bytes (round to nearest even, and
 * saturation to +-448 for e4m3, as __NV_SATFINITE does). */
#ifndef FP8_COMMON_NUMERIC_H
#define FP8_COMMON_NUMERIC_H

#include <stdint.h>

#define FP8_E4M3_MAX 448.0f

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f); /* round to nearest even; overflow to inf */

float e4m3_to_f32(uint8_t b); /* 0x7f and 0xff are NaN; no infinities */
uint8_t f32_to_e4m3(float f); /* round to nearest even, saturating to +-448 */

#endif
