/* Unit tests for src/session/cache.c: the in-memory copy of verified sessions. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "session/cache.h"

#define NOW 1700000000

static void hash_of(int i, uint8_t out[CRYPTO_HASH_LEN])
{
    char tok[32];
    snprintf(tok, sizeof(tok), "wxl_token-%d", i);
    crypto_sha256(tok, strlen(tok), out);
}

static struct session_record rec_of(const char *openid, int64_t expires_at)
{
    struct session_record r;
    memset(&r, 0, sizeof(r));
    snprintf(r.appid, sizeof(r.appid), "wx1234567890abcdef");
    snprintf(r.openid, sizeof(r.openid), "%s", openid);
    snprintf(r.unionid, sizeof(r.unionid), "u-%s", openid);
    r.expires_at = expires_at;
    return r;
}

static void test_disabled_cache_is_null_and_harmless(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(0);
    assert_null(c);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct session_record r = rec_of("o1", NOW + 60), out;
    session_cache_put(c, h, &r);
    assert_false(session_cache_get(c, h, NOW, &out));
    session_cache_del(c, h);
    session_cache_free(c);
}

static void test_put_then_get(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN], other[CRYPTO_HASH_LEN];
    hash_of(1, h);
    hash_of(2, other);
    struct session_record r = rec_of("o1", NOW + 60), out;
    assert_false(session_cache_get(c, h, NOW, &out));
    session_cache_put(c, h, &r);
    assert_true(session_cache_get(c, h, NOW, &out));
    assert_string_equal(out.openid, "o1");
    assert_string_equal(out.unionid, "u-o1");
    assert_string_equal(out.appid, "wx1234567890abcdef");
    assert_int_equal(out.expires_at, NOW + 60);
    assert_false(session_cache_get(c, other, NOW, &out));
    session_cache_free(c);
}

static void test_never_served_past_expiry(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct session_record r = rec_of("o1", NOW + 10), out;
    session_cache_put(c, h, &r);
    assert_true(session_cache_get(c, h, NOW + 9, &out));
    assert_false(session_cache_get(c, h, NOW + 10, &out));
    assert_false(session_cache_get(c, h, NOW + 9, &out)); /* dropped once seen expired */
    session_cache_free(c);
}

static void test_logout_is_final(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct session_record r = rec_of("o1", NOW + 60), out;
    session_cache_put(c, h, &r);
    session_cache_del(c, h);
    assert_false(session_cache_get(c, h, NOW, &out));
    /* A lookup that read the store before the logout must not bring the session back. */
    session_cache_put(c, h, &r);
    assert_false(session_cache_get(c, h, NOW, &out));
    session_cache_free(c);
}

static void test_del_of_unknown_hash_blocks_late_put(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(7, h);
    struct session_record r = rec_of("o7", NOW + 60), out;
    session_cache_del(c, h); /* logout of a session nobody looked up yet */
    session_cache_put(c, h, &r);
    assert_false(session_cache_get(c, h, NOW, &out));
    session_cache_free(c);
}

static void test_overlong_ids_are_not_cached(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    char longid[100];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    struct session_record r = rec_of(longid, NOW + 60), out;
    session_cache_put(c, h, &r);
    assert_false(session_cache_get(c, h, NOW, &out));
    session_cache_free(c);
}

static void test_bounded_and_recent_entries_survive(void **state)
{
    (void)state;
    /* 256 slots; put many more: memory stays bounded and the latest ones are found. */
    struct session_cache *c = session_cache_new(256);
    struct session_record out;
    for (int i = 0; i < 5000; i++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        char id[16];
        snprintf(id, sizeof(id), "o%d", i);
        struct session_record r = rec_of(id, NOW + 60);
        session_cache_put(c, h, &r);
    }
    int found_recent = 0, found_old = 0;
    for (int i = 4990; i < 5000; i++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        found_recent += session_cache_get(c, h, NOW, &out);
    }
    for (int i = 0; i < 1000; i++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        found_old += session_cache_get(c, h, NOW, &out);
    }
    assert_int_equal(found_recent, 10);
    assert_true(found_old < 256);
    session_cache_free(c);
}

static void test_put_updates_existing_entry(void **state)
{
    (void)state;
    struct session_cache *c = session_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct session_record a = rec_of("o1", NOW + 60), b = rec_of("o1", NOW + 120), out;
    session_cache_put(c, h, &a);
    session_cache_put(c, h, &b);
    assert_true(session_cache_get(c, h, NOW, &out));
    assert_int_equal(out.expires_at, NOW + 120);
    session_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disabled_cache_is_null_and_harmless),
        cmocka_unit_test(test_put_then_get),
        cmocka_unit_test(test_never_served_past_expiry),
        cmocka_unit_test(test_logout_is_final),
        cmocka_unit_test(test_del_of_unknown_hash_blocks_late_put),
        cmocka_unit_test(test_overlong_ids_are_not_cached),
        cmocka_unit_test(test_bounded_and_recent_entries_survive),
        cmocka_unit_test(test_put_updates_existing_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
