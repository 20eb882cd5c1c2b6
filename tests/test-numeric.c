/* Conversions between fp32 and the stored formats, checked against values worked out by
 * hand from the format definitions (e4m3: 1 sign, 4 exponent bits biased by 7, 3 mantissa
 * bits, max 448, S.1111.111 = NaN; bf16/f16: IEEE-style, round to nearest even). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/numeric.h"

static void test_e4m3_decode_known(void **state)
{
    (void)state;
    assert_true(e4m3_to_f32(0x00) == 0.0f);
    assert_true(e4m3_to_f32(0x38) == 1.0f);          /* e=7, m=0 */
    assert_true(e4m3_to_f32(0x3c) == 1.5f);          /* e=7, m=4 */
    assert_true(e4m3_to_f32(0xc0) == -2.0f);         /* sign, e=8 */
    assert_true(e4m3_to_f32(0x7e) == 448.0f);        /* e=15, m=6: 1.75 * 2^8 */
    assert_true(e4m3_to_f32(0x01) == 0.001953125f);  /* smallest subnormal: 2^-9 */
    assert_true(e4m3_to_f32(0x08) == 0.015625f);     /* smallest normal: 2^-6 */
    assert_true(isnan(e4m3_to_f32(0x7f)));
    assert_true(isnan(e4m3_to_f32(0xff)));
}

static void test_e4m3_encode_rounding(void **state)
{
    (void)state;
    assert_int_equal(f32_to_e4m3(1.0f), 0x38);
    assert_int_equal(f32_to_e4m3(-2.0f), 0xc0);
    assert_int_equal(f32_to_e4m3(448.0f), 0x7e);
    assert_int_equal(f32_to_e4m3(1000.0f), 0x7e);   /* saturates */
    assert_int_equal(f32_to_e4m3(-1e30f), 0xfe);
    assert_int_equal(f32_to_e4m3(INFINITY), 0x7e);
    assert_int_equal(f32_to_e4m3(NAN) & 0x7f, 0x7f);
    assert_int_equal(f32_to_e4m3(1.0625f), 0x38);   /* tie 1.0 | 1.125 -> even mantissa 0 */
    assert_int_equal(f32_to_e4m3(1.1875f), 0x3a);   /* tie 1.125 | 1.25 -> even mantissa 2 */
    assert_int_equal(f32_to_e4m3(1.07f), 0x39);     /* above the tie -> 1.125 */
    assert_int_equal(f32_to_e4m3(0x1p-10f), 0x00);  /* tie 0 | 2^-9 -> even 0 */
    assert_int_equal(f32_to_e4m3(0x1.8p-9f), 0x02); /* tie 2^-9 | 2^-8 -> even 2 */
    assert_int_equal(f32_to_e4m3(0.0146484375f), 0x08); /* 7.5 * 2^-9 rounds up to 2^-6 */
    assert_int_equal(f32_to_e4m3(464.0f), 0x7e);    /* past the largest finite: saturate */
}

static void test_e4m3_roundtrip_every_code(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        float v = e4m3_to_f32((uint8_t)b);
        if (isnan(v))
            continue;
        uint8_t back = f32_to_e4m3(v);
        /* -0 and +0 both encode as the sign bit alone. */
        assert_int_equal(back, (uint8_t)b);
    }
    /* Monotonic over positive codes. */
    for (int b = 1; b < 0x7f; b++)
        assert_true(e4m3_to_f32((uint8_t)b) > e4m3_to_f32((uint8_t)(b - 1)));
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(f32_to_bf16(-2.0f), 0xc000);
    assert_true(bf16_to_f32(0x3f80) == 1.0f);
    /* 1 + 2^-8 is the tie between 1 and 1 + 2^-7: to even (1). */
    assert_int_equal(f32_to_bf16(1.00390625f), 0x3f80);
    /* 1 + 3*2^-8 ties between 1+2^-7 (odd) and 1+2^-6 (even). */
    assert_int_equal(f32_to_bf16(1.01171875f), 0x3f82);
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
    assert_int_equal(f32_to_bf16(INFINITY), 0x7f80);
}

static void test_f16(void **state)
{
    (void)state;
    assert_int_equal(f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(f32_to_f16(65520.0f), 0x7c00); /* tie to even -> infinity */
    assert_int_equal(f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(f32_to_f16(0x1p-24f), 0x0001); /* smallest subnormal */
    assert_int_equal(f32_to_f16(0x1p-25f), 0x0000); /* tie to even -> 0 */
    assert_int_equal(f32_to_f16(0x1p-14f), 0x0400); /* smallest normal */
    assert_true(f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(f16_to_f32(0x3555) == 0.333251953125f);
    assert_true(isinf(f16_to_f32(0x7c00)));
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite positive half round-trips */
        assert_int_equal(f32_to_f16(f16_to_f32((uint16_t)h)), h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_decode_known),
        cmocka_unit_test(test_e4m3_encode_rounding),
        cmocka_unit_test(test_e4m3_roundtrip_every_code),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
