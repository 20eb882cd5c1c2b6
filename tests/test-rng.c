/* Philox4x32-10 against the known-answer vectors published with Random123
 * (kat_vectors: philox4x32_10), so that the CUDA backend can match it bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/rng.h"

static void check(const uint32_t ctr[4], const uint32_t key[2], const uint32_t want[4])
{
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    for (int i = 0; i < 4; i++)
        assert_int_equal(out[i], want[i]);
}

static void test_philox_kat(void **state)
{
    (void)state;
    const uint32_t z[4] = {0, 0, 0, 0}, zk[2] = {0, 0};
    const uint32_t z_want[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    check(z, zk, z_want);

    const uint32_t f[4] = {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
    const uint32_t fk[2] = {0xffffffff, 0xffffffff};
    const uint32_t f_want[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
    check(f, fk, f_want);

    const uint32_t p[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344};
    const uint32_t pk[2] = {0xa4093822, 0x299f31d0};
    const uint32_t p_want[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    check(p, pk, p_want);
}

static void test_unit_range(void **state)
{
    (void)state;
    assert_true(rng_u32_to_unit(0) == 0.0f);
    assert_true(rng_u32_to_unit(0xffffffffu) < 1.0f);
    assert_true(rng_u32_to_unit(0x80000000u) == 0.5f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_kat),
        cmocka_unit_test(test_unit_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
