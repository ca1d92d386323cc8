/*
 * Unit tests for mock/codeset.h: the two-generation memory of used codes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mock/codeset.h"

static uint64_t key_of(const char *code)
{
    return codeset_key(code, strlen(code));
}

static int setup_small(void **state)
{
    struct codeset *cs = codeset_new(8, 1000);
    if (cs == NULL)
        return -1;
    *state = cs;
    return 0;
}

static int teardown(void **state)
{
    codeset_free(*state);
    return 0;
}

static void test_put_then_get(void **state)
{
    struct codeset *cs = *state;
    uint64_t k = key_of("alice-1");
    codeset_put(cs, k, 7, 10);
    assert_int_equal(codeset_get(cs, k, 11), 7);
}

static void test_put_overwrites_value(void **state)
{
    struct codeset *cs = *state;
    uint64_t k = key_of("alice-1");
    codeset_put(cs, k, 1, 10);
    codeset_put(cs, k, 2, 10);
    codeset_put(cs, k, 3, 10);
    assert_int_equal(codeset_get(cs, k, 10), 3);
}

static void test_overwrite_does_not_use_a_slot(void **state)
{
    struct codeset *cs = *state;
    uint64_t first = key_of("first"), k = key_of("counter");
    codeset_put(cs, first, 1, 10);
    /* capacity 8 rotates at 4 used slots: if updates of one key took slots, 20 of them would
     * rotate "first" out of both generations */
    for (uint32_t i = 1; i <= 20; i++)
        codeset_put(cs, k, i, 10);
    assert_int_equal(codeset_get(cs, k, 10), 20);
    assert_int_equal(codeset_get(cs, first, 10), 1);
}

static void test_unknown_is_zero(void **state)
{
    struct codeset *cs = *state;
    assert_int_equal(codeset_get(cs, key_of("nobody"), 10), 0);
    codeset_put(cs, key_of("alice"), 1, 10);
    assert_int_equal(codeset_get(cs, key_of("bob"), 10), 0);
}

static void test_several_keys_keep_their_values(void **state)
{
    struct codeset *cs = *state;
    codeset_put(cs, key_of("a"), 1, 10);
    codeset_put(cs, key_of("b"), 2, 10);
    codeset_put(cs, key_of("c"), 3, 10);
    assert_int_equal(codeset_get(cs, key_of("a"), 10), 1);
    assert_int_equal(codeset_get(cs, key_of("b"), 10), 2);
    assert_int_equal(codeset_get(cs, key_of("c"), 10), 3);
}

static void test_key_stable_and_distinct(void **state)
{
    (void)state;
    assert_true(key_of("alice-1") == key_of("alice-1"));
    assert_true(key_of("alice-1") != key_of("alice-2"));
    assert_true(key_of("alice") != key_of("Alice"));
    /* len is honoured: a prefix of the same buffer is a different code */
    assert_true(codeset_key("alice-1", 5) == key_of("alice"));
    assert_true(codeset_key("alice-1", 5) != key_of("alice-1"));
}

static void test_key_never_zero(void **state)
{
    (void)state;
    assert_true(codeset_key("", 0) != 0);
    for (int i = 0; i < 10000; i++) {
        char c[32];
        int n = snprintf(c, sizeof(c), "c%d", i);
        assert_true(codeset_key(c, (size_t)n) != 0);
    }
}

static void test_key_is_sha256_prefix(void **state)
{
    (void)state;
    /* SHA-256("abc") = ba7816bf 8f01cfea ...: the key is its first 8 bytes in memory order */
    static const unsigned char want[8] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea};
    uint64_t k = codeset_key("abc", 3);
    assert_memory_equal(&k, want, sizeof(want));
}

/* The contract from the brief: rotation age 1000 ms, a key put at t=0. At 1500 the generation
 * it is in is older than the age and becomes the previous one (still found); at 2600 that
 * generation is dropped too. */
static void test_rotation_by_age_from_time_zero(void **state)
{
    struct codeset *cs = *state;
    uint64_t k = key_of("alice-1");
    codeset_put(cs, k, 1, 0);
    assert_int_equal(codeset_get(cs, k, 1500), 1);
    uint32_t v = codeset_get(cs, k, 2600);
    if (v != 0)
        fail_msg("key put at t=0 still found at t=2600 (value %u): t=0 is taken for 'unset'", v);
}

/* The same, on a clock that does not start at 0 (loop_clock_ms() in the mock). */
static void test_rotation_by_age(void **state)
{
    struct codeset *cs = *state;
    const uint64_t t0 = 100000;
    uint64_t k = key_of("alice-1");
    codeset_put(cs, k, 1, t0);
    assert_int_equal(codeset_get(cs, k, t0 + 999), 1);
    assert_int_equal(codeset_get(cs, k, t0 + 1500), 1);
    assert_int_equal(codeset_get(cs, k, t0 + 2600), 0);
}

static void test_remembered_for_at_least_the_age(void **state)
{
    struct codeset *cs = *state;
    const uint64_t t0 = 5000;
    uint64_t k = key_of("late");
    codeset_get(cs, key_of("x"), t0); /* starts the generation */
    codeset_put(cs, k, 1, t0 + 999);  /* put just before it rotates */
    for (uint64_t t = t0 + 999; t <= t0 + 999 + 1000; t += 100)
        assert_int_equal(codeset_get(cs, k, t), 1);
}

static void test_half_full_rotates_but_previous_still_found(void **state)
{
    struct codeset *cs = *state;
    const uint64_t t = 100;
    char c[32];
    for (int i = 0; i < 4; i++) { /* capacity/2 */
        snprintf(c, sizeof(c), "first%d", i);
        codeset_put(cs, key_of(c), (uint32_t)i + 1, t);
    }
    /* this insert finds the generation half full and rotates first */
    codeset_put(cs, key_of("next"), 9, t);
    for (int i = 0; i < 4; i++) {
        snprintf(c, sizeof(c), "first%d", i);
        assert_int_equal(codeset_get(cs, key_of(c), t), (uint32_t)i + 1);
    }
    assert_int_equal(codeset_get(cs, key_of("next"), t), 9);
}

static void test_two_rotations_forget(void **state)
{
    struct codeset *cs = *state;
    const uint64_t t = 100;
    char c[32];
    for (int i = 0; i < 4; i++) {
        snprintf(c, sizeof(c), "first%d", i);
        codeset_put(cs, key_of(c), 1, t);
    }
    for (int i = 0; i < 5; i++) { /* rotation, then 4 more: the next insert rotates again */
        snprintf(c, sizeof(c), "second%d", i);
        codeset_put(cs, key_of(c), 2, t);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(c, sizeof(c), "first%d", i);
        assert_int_equal(codeset_get(cs, key_of(c), t), 0);
    }
    assert_int_equal(codeset_get(cs, key_of("second4"), t), 2);
}

static void test_many_keys_bounded_and_recent_found(void **state)
{
    struct codeset *cs = *state;
    char c[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(c, sizeof(c), "k%d", i);
        codeset_put(cs, key_of(c), (uint32_t)i + 1, 100);
    }
    /* the newest key is always in the current generation */
    assert_int_equal(codeset_get(cs, key_of("k9999"), 100), 10000);
}

static void test_free_null(void **state)
{
    (void)state;
    codeset_free(NULL);
}

int main(void)
{
    /* A probe loop that never ends (a full table) kills the run instead of hanging it. */
    alarm(30);
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_small, teardown)
        T(test_put_then_get),
        T(test_put_overwrites_value),
        T(test_overwrite_does_not_use_a_slot),
        T(test_unknown_is_zero),
        T(test_several_keys_keep_their_values),
        cmocka_unit_test(test_key_stable_and_distinct),
        cmocka_unit_test(test_key_never_zero),
        cmocka_unit_test(test_key_is_sha256_prefix),
        T(test_rotation_by_age_from_time_zero),
        T(test_rotation_by_age),
        T(test_remembered_for_at_least_the_age),
        T(test_half_full_rotates_but_previous_still_found),
        T(test_two_rotations_forget),
        T(test_many_keys_bounded_and_recent_found),
        cmocka_unit_test(test_free_null),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
