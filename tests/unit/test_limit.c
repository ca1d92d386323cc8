/*
 * Unit tests for limit/limit.h: the bucket arithmetic (a burst, then one token per interval,
 * refusals that take nothing, the long-run rate), Retry-After rounding, the process's table
 * (keys, apps and kinds kept apart; bounded whatever is sprayed at it; forgetting the fullest
 * bucket first; exact under concurrent takes), and shared limits: the bucket names every
 * instance computes alike without the key in them, handed to the store as they are.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "limit/limit.h"
#include "runtime/async.h"

#define MS 1000ULL
#define S (1000 * MS)
/* A monotonic start far from 0 (a real clock's µs since boot). */
#define T0 (1000 * S)

static const uint8_t key_a[LIMIT_KEY_LEN] = {1, 2, 3};
static const uint8_t key_b[LIMIT_KEY_LEN] = {4, 5, 6};

/* ---- the arithmetic ---- */

static void test_interval(void **state)
{
    (void)state;
    assert_int_equal(limit_interval_us(120, 60000), 500 * MS);
    assert_int_equal(limit_interval_us(5000, 60000), 12 * MS);
    assert_int_equal(limit_interval_us(1, 1000), S);
    assert_int_equal(limit_interval_us(1000000, 1), 1); /* never 0 */
}

static void test_burst_then_refused_with_the_wait(void **state)
{
    (void)state;
    uint64_t tat = 0, wait = 0, interval = 500 * MS;
    for (int i = 0; i < 10; i++)
        assert_true(limit_bucket_take(&tat, T0, interval, 10, &wait));
    /* the 11th at the same instant: refused, one interval to wait */
    uint64_t before = tat;
    assert_false(limit_bucket_take(&tat, T0, interval, 10, &wait));
    assert_int_equal(wait, interval);
    assert_int_equal(tat, before); /* a refusal takes nothing */
    /* hammering does not push the next token away */
    for (int i = 0; i < 1000; i++)
        assert_false(limit_bucket_take(&tat, T0 + 100 * MS, interval, 10, &wait));
    assert_int_equal(wait, interval - 100 * MS);
    assert_int_equal(tat, before);
    /* one interval later, exactly one more */
    assert_true(limit_bucket_take(&tat, T0 + interval, interval, 10, &wait));
    assert_false(limit_bucket_take(&tat, T0 + interval, interval, 10, &wait));
    assert_int_equal(wait, interval);
    /* idle for a whole period: a full burst again, no more */
    uint64_t later = T0 + 60 * S;
    for (int i = 0; i < 10; i++)
        assert_true(limit_bucket_take(&tat, later, interval, 10, &wait));
    assert_false(limit_bucket_take(&tat, later, interval, 10, &wait));
}

static void test_burst_of_one(void **state)
{
    (void)state;
    uint64_t tat = 0, wait = 0;
    assert_true(limit_bucket_take(&tat, T0, S, 1, &wait));
    assert_false(limit_bucket_take(&tat, T0 + 1, S, 1, &wait));
    assert_int_equal(wait, S - 1);
    assert_true(limit_bucket_take(&tat, T0 + S, S, 1, &wait));
}

/* Requests every 10 ms for 10 minutes against 120/min: 120 at first, then 2 a second. */
static void test_long_run_rate(void **state)
{
    (void)state;
    uint64_t tat = 0, wait = 0, interval = limit_interval_us(120, 60000);
    unsigned granted = 0, first_minute = 0;
    for (uint64_t t = T0; t < T0 + 600 * S; t += 10 * MS) {
        if (limit_bucket_take(&tat, t, interval, 120, &wait)) {
            granted++;
            if (t < T0 + 60 * S)
                first_minute++;
        } else {
            assert_true(wait > 0 && wait <= interval);
        }
    }
    /* the burst, then 2/s; the one due at the minute's end falls into the next */
    assert_int_equal(first_minute, 120 + 120 - 1);
    assert_int_equal(granted, 120 + 600 * 2 - 1);
}

static void test_retry_after_rounds_up(void **state)
{
    (void)state;
    assert_int_equal(limit_retry_after_s(1), 1);
    assert_int_equal(limit_retry_after_s(500 * MS), 1);
    assert_int_equal(limit_retry_after_s(S), 1);
    assert_int_equal(limit_retry_after_s(S + 1), 2);
    assert_int_equal(limit_retry_after_s(59 * S + 1), 60);
    assert_int_equal(limit_retry_after_s(0), 1);
    assert_int_equal(limit_retry_after_s(UINT64_MAX / 2), 86400);
}

/* ---- the process's table ---- */

static struct limit *local(uint32_t burst, uint64_t period_ms, size_t capacity, char kind)
{
    struct limit_opts o = {
        .kind = kind, .burst = burst, .period_ms = period_ms, .capacity = capacity, .key = key_a};
    struct limit *l = limit_new(&o);
    assert_non_null(l);
    return l;
}

static uint64_t take(struct limit *l, const char *appid, const char *key, uint64_t now)
{
    return limit_take_local(l, appid, key, strlen(key), now);
}

static void test_new_refuses_nonsense(void **state)
{
    (void)state;
    struct limit_opts o = {.kind = 'a', .burst = 0, .period_ms = 1000, .capacity = 8, .key = key_a};
    assert_null(limit_new(&o));
    o.burst = 1;
    o.period_ms = 0;
    assert_null(limit_new(&o));
    o.period_ms = 1000;
    o.capacity = 0;
    assert_null(limit_new(&o));
    o.capacity = 8;
    o.key = NULL;
    assert_null(limit_new(&o));
    limit_free(NULL);
}

static void test_keys_apps_and_kinds_are_apart(void **state)
{
    (void)state;
    struct limit *a = local(2, 60000, 1024, 'a'), *o = local(2, 60000, 1024, 'o');
    assert_int_equal(take(a, "", "203.0.113.9", T0), 0);
    assert_int_equal(take(a, "", "203.0.113.9", T0), 0);
    uint64_t wait = take(a, "", "203.0.113.9", T0);
    assert_int_equal(wait, 30 * S);
    /* another key, another app, another limit: their own buckets */
    assert_int_equal(take(a, "", "203.0.113.10", T0), 0);
    assert_int_equal(take(a, "wx1", "203.0.113.9", T0), 0);
    assert_int_equal(take(o, "", "203.0.113.9", T0), 0);
    /* keys are bytes, not strings */
    uint8_t k1[16] = {0}, k2[16] = {0};
    k2[15] = 1;
    assert_int_equal(limit_take_local(a, "", k1, 16, T0), 0);
    assert_int_equal(limit_take_local(a, "", k1, 16, T0), 0);
    assert_true(limit_take_local(a, "", k1, 16, T0) > 0);
    assert_int_equal(limit_take_local(a, "", k2, 16, T0), 0);
    assert_int_equal(limit_count(a, T0), 5);
    limit_free(a);
    limit_free(o);
}

struct result {
    int calls, status;
    uint64_t wait;
};

static void on_done(void *arg, int status, uint64_t wait_us)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->wait = wait_us;
}

static void test_take_calls_back_before_returning(void **state)
{
    (void)state;
    struct limit *l = local(1, 1000, 64, 'a');
    struct async_slot slot = {0};
    struct result r = {0};
    limit_take(l, NULL, &slot, "", "k", 1, on_done, &r);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, STORE_OK);
    assert_int_equal(r.wait, 0);
    limit_take(l, NULL, &slot, "", "k", 1, on_done, &r);
    assert_int_equal(r.calls, 2);
    assert_true(r.wait > 0 && r.wait <= S);
    assert_false(async_pending(&slot));
    limit_free(l);
}

static void test_table_is_bounded_whatever_is_sprayed(void **state)
{
    (void)state;
    struct limit *l = local(10, 60000, 4096, 'a');
    size_t cap = limit_capacity(l);
    assert_true(cap >= 4096 && cap <= 2 * 4096);
    char k[32];
    for (int i = 0; i < 200000; i++) {
        snprintf(k, sizeof(k), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        assert_int_equal(take(l, "", k, T0 + (uint64_t)i), 0); /* every new key: a fresh bucket */
    }
    assert_true(limit_count(l, T0 + 200000) <= cap);
    limit_free(l);
}

/* One set (a small table): a new key takes the fullest bucket, so a key in debt outlives keys
 * that hold less. */
/* A reload changes the rate of the buckets in use: the debt they hold stays (no fresh burst),
 * and they refill at the new rate. */
static void test_set_rate_keeps_the_buckets(void **state)
{
    (void)state;
    struct limit *l = local(10, 60000, 64, 'a'); /* 10/min: a token every 6 s */
    for (int i = 0; i < 10; i++)
        assert_int_equal(take(l, "", "k", T0), 0);
    assert_true(take(l, "", "k", T0) > 0);
    assert_int_equal(limit_set_rate(l, 1, 1000), 0); /* 1/s: room for one, every second */
    assert_int_equal(limit_set_rate(l, 0, 1000), -1);
    /* the old debt (60 s ahead) is far over the new room (1 s): still refused */
    assert_true(take(l, "", "k", T0 + 1 * S) > 0);
    /* another key: one token of the new burst, then a wait of about a second */
    assert_int_equal(take(l, "", "other", T0), 0);
    uint64_t w = take(l, "", "other", T0);
    assert_true(w > 0 && w <= 1 * S);
    limit_free(l);
}

static void test_the_fullest_bucket_is_forgotten_first(void **state)
{
    (void)state;
    struct limit *l = local(10, 10000, 4, 'a'); /* 1 token a second */
    assert_int_equal(limit_capacity(l), 4);
    for (int i = 0; i < 10; i++)
        assert_int_equal(take(l, "", "debtor", T0), 0);
    assert_true(take(l, "", "debtor", T0) > 0);
    assert_int_equal(take(l, "", "b", T0), 0);
    assert_int_equal(take(l, "", "c", T0), 0);
    assert_int_equal(take(l, "", "d", T0), 0);
    /* two seconds later b, c, d are full again; the debtor got 2 tokens back and spends them */
    uint64_t t = T0 + 2 * S;
    assert_int_equal(take(l, "", "debtor", t), 0);
    assert_int_equal(take(l, "", "debtor", t), 0);
    assert_int_equal(take(l, "", "debtor", t), S);
    for (int i = 0; i < 1000; i++) {
        char k[24];
        snprintf(k, sizeof(k), "spray%d", i);
        assert_int_equal(take(l, "", k, t), 0);
    }
    /* the spray took one token per key: each holds less than the debtor, who is still held */
    assert_int_equal(take(l, "", "debtor", t), S);
    limit_free(l);
}

/* A limit of one bucket per app: as many ways as apps, none ever forgotten. */
static void test_per_app_table_keeps_every_app(void **state)
{
    (void)state;
    struct limit *l = local(1, 60000, 3, 'w');
    assert_int_equal(take(l, "wx1", "", T0), 0);
    assert_int_equal(take(l, "wx2", "", T0), 0);
    assert_int_equal(take(l, "wx3", "", T0), 0);
    for (int i = 0; i < 100; i++) {
        assert_true(take(l, "wx1", "", T0 + (uint64_t)i) > 0);
        assert_true(take(l, "wx2", "", T0 + (uint64_t)i) > 0);
        assert_true(take(l, "wx3", "", T0 + (uint64_t)i) > 0);
    }
    limit_free(l);
}

struct racer {
    struct limit *l;
    int granted;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 2000; i++)
        if (take(r->l, "wx1", "203.0.113.9", T0 + 1) == 0)
            r->granted++;
    return NULL;
}

static void test_concurrent_takes_grant_exactly_the_burst(void **state)
{
    (void)state;
    struct limit *l = local(100, 3600 * 1000, 1024, 'a');
    struct racer r[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (struct racer){.l = l};
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        total += r[i].granted;
    }
    assert_int_equal(total, 100);
    limit_free(l);
}

/* ---- shared limits: what the store is asked ---- */

struct fake_store {
    struct store base;
    int calls;
    char appid[64], name[STORE_LIMIT_NAME_MAX + 1];
    uint64_t interval;
    uint32_t burst;
};

static void fake_take(struct store *st, struct async_slot *slot, const char *appid,
                      const char *name, uint64_t interval_us, uint32_t burst, store_limit_fn *done,
                      void *arg)
{
    (void)slot;
    struct fake_store *f = (struct fake_store *)st;
    f->calls++;
    snprintf(f->appid, sizeof(f->appid), "%s", appid);
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->interval = interval_us;
    f->burst = burst;
    done(arg, STORE_OK, 7);
}

static const struct store_limit_ops fake_ops = {.take = fake_take};

static struct limit *shared(const uint8_t *key, char kind)
{
    struct limit_opts o = {
        .kind = kind, .burst = 120, .period_ms = 60000, .shared = true, .key = key};
    struct limit *l = limit_new(&o);
    assert_non_null(l);
    return l;
}

static void test_shared_buckets_are_named_alike_everywhere(void **state)
{
    (void)state;
    struct fake_store f = {.base = {.limits = &fake_ops}};
    struct limit *one = shared(key_a, 'a'), *two = shared(key_a, 'a'), *other = shared(key_b, 'a');
    struct result r = {0};
    struct async_slot slot = {0};
    limit_take(one, &f.base, &slot, "", "203.0.113.9", 11, on_done, &r);
    assert_int_equal(f.calls, 1);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.wait, 7); /* the store's answer, as it is */
    assert_string_equal(f.appid, "");
    assert_int_equal(f.interval, 500 * MS);
    assert_int_equal(f.burst, 120);
    char first[sizeof(f.name)];
    snprintf(first, sizeof(first), "%s", f.name);
    assert_int_equal(strlen(first), 2 + 32);
    assert_memory_equal(first, "a:", 2);
    assert_int_equal(strspn(first + 2, "0123456789abcdef"), 32);
    assert_null(strstr(first, "203")); /* the address is not in it */
    /* another instance (same master key) names the same bucket */
    limit_take(two, &f.base, &slot, "", "203.0.113.9", 11, on_done, &r);
    assert_string_equal(f.name, first);
    /* another key, master key or app: another bucket */
    limit_take(one, &f.base, &slot, "", "203.0.113.8", 11, on_done, &r);
    assert_string_not_equal(f.name, first);
    limit_take(other, &f.base, &slot, "", "203.0.113.9", 11, on_done, &r);
    assert_string_not_equal(f.name, first);
    limit_take(one, &f.base, &slot, "wx1", "203.0.113.9", 11, on_done, &r);
    assert_string_equal(f.appid, "wx1");
    assert_string_not_equal(f.name, first);
    /* a store that cannot share limits is an error, not a pass */
    struct fake_store none = {.base = {.limits = NULL}};
    r.status = STORE_OK;
    limit_take(one, &none.base, &slot, "", "x", 1, on_done, &r);
    assert_int_equal(r.status, STORE_ERROR);
    limit_free(one);
    limit_free(two);
    limit_free(other);
}

static void test_limit_key_depends_on_the_master_key(void **state)
{
    (void)state;
    uint8_t m1[CRYPTO_KEY_LEN] = {1}, m2[CRYPTO_KEY_LEN] = {2}, k1[LIMIT_KEY_LEN],
            k1b[LIMIT_KEY_LEN], k2[LIMIT_KEY_LEN];
    assert_int_equal(limit_key(m1, k1), 0);
    assert_int_equal(limit_key(m1, k1b), 0);
    assert_int_equal(limit_key(m2, k2), 0);
    assert_memory_equal(k1, k1b, LIMIT_KEY_LEN);
    assert_memory_not_equal(k1, k2, LIMIT_KEY_LEN);
    assert_memory_not_equal(k1, m1, LIMIT_KEY_LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interval),
        cmocka_unit_test(test_burst_then_refused_with_the_wait),
        cmocka_unit_test(test_burst_of_one),
        cmocka_unit_test(test_set_rate_keeps_the_buckets),
        cmocka_unit_test(test_long_run_rate),
        cmocka_unit_test(test_retry_after_rounds_up),
        cmocka_unit_test(test_new_refuses_nonsense),
        cmocka_unit_test(test_keys_apps_and_kinds_are_apart),
        cmocka_unit_test(test_take_calls_back_before_returning),
        cmocka_unit_test(test_table_is_bounded_whatever_is_sprayed),
        cmocka_unit_test(test_the_fullest_bucket_is_forgotten_first),
        cmocka_unit_test(test_per_app_table_keeps_every_app),
        cmocka_unit_test(test_concurrent_takes_grant_exactly_the_burst),
        cmocka_unit_test(test_shared_buckets_are_named_alike_everywhere),
        cmocka_unit_test(test_limit_key_depends_on_the_master_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
