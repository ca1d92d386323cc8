/*
 * Unit tests for util/lockout.h: the count and the lockout per key, windows ending, a passing
 * check changing nothing, keys kept apart, the fixed-size table and its eviction order, long
 * keys, and concurrent attempts never running more checks than the limit allows.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util/lockout.h"

/* A check that answers *pass and counts its calls. */
struct check {
    bool pass;
    unsigned calls;
};

static bool run_check(void *arg)
{
    struct check *c = arg;
    c->calls++;
    return c->pass;
}

static enum lockout_outcome attempt(struct lockout *lo, const char *key, uint64_t now, bool pass,
                                    uint64_t *retry)
{
    struct check c = {.pass = pass};
    enum lockout_outcome o = lockout_attempt(lo, key, now, run_check, &c, retry);
    assert_int_equal(c.calls, o == LOCKOUT_REFUSED ? 0 : 1);
    return o;
}

static void test_new_rejects_zeros(void **state)
{
    (void)state;
    assert_null(lockout_new(0, 5, 1000));
    assert_null(lockout_new(8, 0, 1000));
    assert_null(lockout_new(8, 5, 0));
    lockout_free(NULL);
}

static void test_locks_after_max_failures_without_checking(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(8, 3, 1000);
    assert_non_null(lo);
    uint64_t retry = 0;
    assert_int_equal(attempt(lo, "10.0.0.1", 0, false, &retry), LOCKOUT_FAILED_FIRST);
    assert_int_equal(retry, 0); /* only set when locked */
    assert_int_equal(attempt(lo, "10.0.0.1", 10, false, &retry), LOCKOUT_FAILED);
    assert_int_equal(attempt(lo, "10.0.0.1", 20, false, &retry), LOCKOUT_FAILED_LOCK);
    assert_int_equal(retry, 1000);
    /* locked: even the right credential is not looked at */
    assert_int_equal(attempt(lo, "10.0.0.1", 30, true, &retry), LOCKOUT_REFUSED);
    assert_int_equal(retry, 990);
    assert_int_equal(attempt(lo, "10.0.0.1", 1019, false, &retry), LOCKOUT_REFUSED);
    assert_int_equal(retry, 1);
    assert_int_equal(attempt(lo, "10.0.0.1", 500, false, NULL), LOCKOUT_REFUSED);
    lockout_free(lo);
}

static void test_lockout_ends_after_the_window(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(8, 2, 1000);
    assert_int_equal(attempt(lo, "a", 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "a", 5, false, NULL), LOCKOUT_FAILED_LOCK);
    assert_int_equal(attempt(lo, "a", 1004, true, NULL), LOCKOUT_REFUSED);
    assert_int_equal(attempt(lo, "a", 1005, true, NULL), LOCKOUT_PASSED);
    /* a fresh window: its first failure is reported again, and it takes 2 more to lock */
    assert_int_equal(attempt(lo, "a", 1006, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "a", 1007, true, NULL), LOCKOUT_PASSED);
    uint64_t retry = 0;
    assert_int_equal(attempt(lo, "a", 1008, false, &retry), LOCKOUT_FAILED_LOCK);
    assert_int_equal(retry, 1000);
    lockout_free(lo);
}

static void test_failures_in_different_windows_do_not_add_up(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(8, 3, 1000);
    assert_int_equal(attempt(lo, "a", 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "a", 999, false, NULL), LOCKOUT_FAILED);
    assert_int_equal(attempt(lo, "a", 1000, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "a", 1001, false, NULL), LOCKOUT_FAILED);
    assert_int_equal(attempt(lo, "a", 1002, false, NULL), LOCKOUT_FAILED_LOCK);
    lockout_free(lo);
}

static void test_a_pass_resets_no_count(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(8, 3, 1000);
    assert_int_equal(attempt(lo, "a", 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "a", 1, false, NULL), LOCKOUT_FAILED);
    assert_int_equal(attempt(lo, "a", 2, true, NULL), LOCKOUT_PASSED);
    assert_int_equal(attempt(lo, "a", 3, false, NULL), LOCKOUT_FAILED_LOCK);
    /* nor does another key's pass */
    assert_int_equal(attempt(lo, "b", 4, true, NULL), LOCKOUT_PASSED);
    assert_int_equal(attempt(lo, "a", 5, true, NULL), LOCKOUT_REFUSED);
    lockout_free(lo);
}

static void test_keys_are_counted_apart(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(8, 2, 1000);
    assert_int_equal(attempt(lo, "192.0.2.1", 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "192.0.2.1", 1, false, NULL), LOCKOUT_FAILED_LOCK);
    assert_int_equal(attempt(lo, "192.0.2.10", 2, true, NULL), LOCKOUT_PASSED);
    assert_int_equal(attempt(lo, "192.0.2.10", 3, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "2001:db8::1", 4, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "", 5, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "192.0.2.1", 6, true, NULL), LOCKOUT_REFUSED);
    assert_int_equal(lockout_count(lo), 4);
    lockout_free(lo);
}

static void test_one_failure_allowed_locks_at_once(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(8, 1, 60000);
    uint64_t retry = 0;
    assert_int_equal(attempt(lo, "a", 7, false, &retry), LOCKOUT_FAILED_LOCK);
    assert_int_equal(retry, 60000);
    assert_int_equal(attempt(lo, "a", 8, true, NULL), LOCKOUT_REFUSED);
    lockout_free(lo);
}

/* An attacker spraying addresses neither grows the table nor frees a locked address while
 * there are entries worth less to evict. */
static void test_table_is_bounded_and_keeps_lockouts(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(16, 2, 1000);
    assert_int_equal(attempt(lo, "victim", 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "victim", 1, false, NULL), LOCKOUT_FAILED_LOCK);
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        assert_int_equal(attempt(lo, key, 2, false, NULL), LOCKOUT_FAILED_FIRST);
        assert_true(lockout_count(lo) <= 16);
    }
    assert_int_equal(lockout_count(lo), 16);
    assert_int_equal(attempt(lo, "victim", 3, true, NULL), LOCKOUT_REFUSED);
    lockout_free(lo);
}

/* Full of lockouts, the least recently active one goes. */
static void test_full_of_lockouts_evicts_the_oldest(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(3, 1, 1000);
    assert_int_equal(attempt(lo, "a", 0, false, NULL), LOCKOUT_FAILED_LOCK);
    assert_int_equal(attempt(lo, "b", 1, false, NULL), LOCKOUT_FAILED_LOCK);
    assert_int_equal(attempt(lo, "c", 2, false, NULL), LOCKOUT_FAILED_LOCK);
    assert_int_equal(attempt(lo, "a", 3, true, NULL), LOCKOUT_REFUSED);      /* a is active again */
    assert_int_equal(attempt(lo, "d", 4, false, NULL), LOCKOUT_FAILED_LOCK); /* evicts b */
    assert_int_equal(attempt(lo, "b", 5, true, NULL), LOCKOUT_PASSED);
    assert_int_equal(attempt(lo, "a", 6, true, NULL), LOCKOUT_REFUSED);
    assert_int_equal(attempt(lo, "c", 7, true, NULL), LOCKOUT_REFUSED);
    assert_int_equal(attempt(lo, "d", 8, true, NULL), LOCKOUT_REFUSED);
    assert_int_equal(lockout_count(lo), 3);
    lockout_free(lo);
}

/* An entry whose lockout and window are over goes before one still counting, even if it was
 * active more recently. */
static void test_spent_entries_are_evicted_first(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(2, 2, 100);
    assert_int_equal(attempt(lo, "b", 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, "b", 1, false, NULL), LOCKOUT_FAILED_LOCK);    /* until 101 */
    assert_int_equal(attempt(lo, "a", 50, false, NULL), LOCKOUT_FAILED_FIRST);  /* to 150 */
    assert_int_equal(attempt(lo, "b", 100, false, NULL), LOCKOUT_REFUSED);      /* active 100 */
    assert_int_equal(attempt(lo, "c", 120, false, NULL), LOCKOUT_FAILED_FIRST); /* evicts b */
    assert_int_equal(attempt(lo, "a", 121, false, NULL), LOCKOUT_FAILED_LOCK);  /* a was kept */
    lockout_free(lo);
}

static void test_long_keys_are_cut(void **state)
{
    (void)state;
    struct lockout *lo = lockout_new(4, 2, 1000);
    char k1[200], k2[200];
    memset(k1, 'x', sizeof(k1) - 1);
    k1[sizeof(k1) - 1] = '\0';
    memcpy(k2, k1, sizeof(k2));
    k2[150] = 'y'; /* differs past LOCKOUT_KEY_MAX */
    assert_int_equal(attempt(lo, k1, 0, false, NULL), LOCKOUT_FAILED_FIRST);
    assert_int_equal(attempt(lo, k2, 1, false, NULL), LOCKOUT_FAILED_LOCK);
    assert_int_equal(lockout_count(lo), 1);
    k2[LOCKOUT_KEY_MAX - 1] = 'y'; /* differs within it */
    assert_int_equal(attempt(lo, k2, 2, false, NULL), LOCKOUT_FAILED_FIRST);
    lockout_free(lo);
}

/* ---- threads ---- */

struct shared {
    struct lockout *lo;
    pthread_barrier_t start;
    unsigned checks; /* run under the table's mutex, so a plain counter is enough */
    unsigned refused[4];
};

static bool count_and_fail(void *arg)
{
    struct shared *s = arg;
    s->checks++;
    return false;
}

struct worker_arg {
    struct shared *s;
    int id;
};

static void *hammer(void *arg)
{
    struct worker_arg *w = arg;
    pthread_barrier_wait(&w->s->start);
    for (int i = 0; i < 2000; i++) {
        if (lockout_attempt(w->s->lo, "203.0.113.9", 1, count_and_fail, w->s, NULL) ==
            LOCKOUT_REFUSED)
            w->s->refused[w->id]++;
    }
    return NULL;
}

static void test_concurrent_attempts_never_exceed_the_limit(void **state)
{
    (void)state;
    struct shared s = {.lo = lockout_new(64, 5, 60000)};
    assert_non_null(s.lo);
    pthread_barrier_init(&s.start, NULL, 4);
    pthread_t t[4];
    struct worker_arg wa[4];
    for (int i = 0; i < 4; i++) {
        wa[i] = (struct worker_arg){.s = &s, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &wa[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&s.start);
    assert_int_equal(s.checks, 5);
    assert_int_equal(s.refused[0] + s.refused[1] + s.refused[2] + s.refused[3], 4 * 2000 - 5);
    lockout_free(s.lo);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_zeros),
        cmocka_unit_test(test_locks_after_max_failures_without_checking),
        cmocka_unit_test(test_lockout_ends_after_the_window),
        cmocka_unit_test(test_failures_in_different_windows_do_not_add_up),
        cmocka_unit_test(test_a_pass_resets_no_count),
        cmocka_unit_test(test_keys_are_counted_apart),
        cmocka_unit_test(test_one_failure_allowed_locks_at_once),
        cmocka_unit_test(test_table_is_bounded_and_keeps_lockouts),
        cmocka_unit_test(test_full_of_lockouts_evicts_the_oldest),
        cmocka_unit_test(test_spent_entries_are_evicted_first),
        cmocka_unit_test(test_long_keys_are_cut),
        cmocka_unit_test(test_concurrent_attempts_never_exceed_the_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
