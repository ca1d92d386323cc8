/*
 * Unit tests for store/cache.h: the set-associative table of verified sessions, and the store
 * decorator that puts it in front of the SQLite store (what store_open gives with
 * cache_entries > 0).
 *
 * The table is pure code, tested directly. The decorator is tested through store_open on a
 * temporary SQLite file: a hit answers before store_get_session returns; a miss goes to the
 * store (answered later on the loop) and is remembered; a logout is never served from memory
 * afterwards, not even to a lookup that read the store just before it; a session of another
 * app is not found in memory either; and once the database file is replaced under the store,
 * every lookup fails, cached or not. Every test arms an alarm first.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "runtime/async.h"
#include "store/cache.h"
#include "store/store.h"
#include "store_capture.h"

#define WATCHDOG_S 10
#define WAIT_MS 3000
#define BROKEN_WAIT_MS 2500 /* inotify at once, else a stat once a second */
#define APPID "wx1234567890abcdef"
#define OTHER "wxfedcba9876543210"
#define NOW 1700000000
#define HOUR 3600
#define KEY_A "QUFBQUFBQUFBQUFBQUFBQQ=="
#define KEY_B "QkJCQkJCQkJCQkJCQkJCQg=="

static const uint8_t master[CRYPTO_KEY_LEN] = {0x6d, 0x61, 0x73, 0x74, 0x65, 0x72, 0x2d, 0x6b};

/* ---- the table ---- */

static void hash_of(int i, uint8_t out[CRYPTO_HASH_LEN])
{
    char tok[32];
    snprintf(tok, sizeof(tok), "wxl_token-%d", i);
    crypto_sha256(tok, strlen(tok), out);
}

static struct store_session rec_of(const char *openid, int64_t expires_at)
{
    struct store_session r;
    memset(&r, 0, sizeof(r));
    snprintf(r.appid, sizeof(r.appid), APPID);
    snprintf(r.openid, sizeof(r.openid), "%s", openid);
    snprintf(r.unionid, sizeof(r.unionid), "u-%s", openid);
    r.expires_at = expires_at;
    return r;
}

static void test_disabled_cache_is_null_and_harmless(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(0);
    assert_null(c);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct store_session r = rec_of("o1", NOW + 60), out;
    store_cache_put(c, h, &r);
    assert_false(store_cache_get(c, h, NOW, &out));
    store_cache_del(c, h);
    store_cache_free(c);
}

static void test_put_then_get(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    assert_non_null(c);
    uint8_t h[CRYPTO_HASH_LEN], other[CRYPTO_HASH_LEN];
    hash_of(1, h);
    hash_of(2, other);
    struct store_session r = rec_of("o1", NOW + 60), out;
    assert_false(store_cache_get(c, h, NOW, &out));
    store_cache_put(c, h, &r);
    memset(&out, 0xa5, sizeof(out));
    assert_true(store_cache_get(c, h, NOW, &out));
    assert_string_equal(out.openid, "o1");
    assert_string_equal(out.unionid, "u-o1");
    assert_string_equal(out.appid, APPID);
    assert_int_equal(out.expires_at, NOW + 60);
    assert_false(store_cache_get(c, other, NOW, &out));
    store_cache_free(c);
}

static void test_never_served_past_expiry(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct store_session r = rec_of("o1", NOW + 10), out;
    store_cache_put(c, h, &r);
    assert_true(store_cache_get(c, h, NOW + 9, &out));
    assert_false(store_cache_get(c, h, NOW + 10, &out));
    assert_false(store_cache_get(c, h, NOW + 9, &out)); /* dropped once seen expired */
    store_cache_free(c);
}

static void test_logout_is_final(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct store_session r = rec_of("o1", NOW + 60), out;
    store_cache_put(c, h, &r);
    store_cache_del(c, h);
    assert_false(store_cache_get(c, h, NOW, &out));
    /* A lookup that read the store before the logout must not bring the session back. */
    store_cache_put(c, h, &r);
    assert_false(store_cache_get(c, h, NOW, &out));
    store_cache_free(c);
}

static void test_del_of_unknown_hash_blocks_late_put(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(7, h);
    struct store_session r = rec_of("o7", NOW + 60), out;
    store_cache_del(c, h); /* logout of a session nobody looked up yet */
    store_cache_put(c, h, &r);
    assert_false(store_cache_get(c, h, NOW, &out));
    store_cache_free(c);
}

/* A logout's tombstone is spared when new sessions need room: a flood of puts right after it
 * does not let a late put of the logged-out session back in. */
static void test_fresh_tombstone_survives_a_flood(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(256);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(0, h);
    struct store_session r = rec_of("o0", NOW + 60), out;
    store_cache_put(c, h, &r);
    store_cache_del(c, h);
    for (int i = 1; i < 5000; i++) {
        uint8_t k[CRYPTO_HASH_LEN];
        hash_of(i, k);
        store_cache_put(c, k, &r);
    }
    store_cache_put(c, h, &r);
    assert_false(store_cache_get(c, h, NOW, &out));
    store_cache_free(c);
}

static void test_overlong_ids_are_not_cached(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    char longid[100];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    struct store_session out;
    /* Each of the three ids. */
    for (int field = 0; field < 3; field++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(100 + field, h);
        struct store_session r = rec_of("o1", NOW + 60);
        char *id = field == 0 ? r.appid : field == 1 ? r.openid : r.unionid;
        snprintf(id, STORE_ID_MAX + 1, "%s", longid);
        store_cache_put(c, h, &r);
        assert_false(store_cache_get(c, h, NOW, &out));
    }
    store_cache_free(c);
}

static void test_bounded_and_recent_entries_survive(void **state)
{
    (void)state;
    /* 256 slots; put many more: memory stays bounded and the latest ones are found. */
    struct store_cache *c = store_cache_new(256);
    struct store_session out;
    for (int i = 0; i < 5000; i++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        char id[16];
        snprintf(id, sizeof(id), "o%d", i);
        struct store_session r = rec_of(id, NOW + 60);
        store_cache_put(c, h, &r);
    }
    int found_recent = 0, found_old = 0;
    for (int i = 4990; i < 5000; i++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        found_recent += store_cache_get(c, h, NOW, &out);
    }
    for (int i = 0; i < 1000; i++) {
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        found_old += store_cache_get(c, h, NOW, &out);
    }
    assert_int_equal(found_recent, 10);
    assert_true(found_old < 256);
    store_cache_free(c);
}

static void test_put_updates_existing_entry(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of(1, h);
    struct store_session a = rec_of("o1", NOW + 60), b = rec_of("o1", NOW + 120), out;
    store_cache_put(c, h, &a);
    store_cache_put(c, h, &b);
    assert_true(store_cache_get(c, h, NOW, &out));
    assert_int_equal(out.expires_at, NOW + 120);
    store_cache_free(c);
}

/* The workers share one table: lookups, puts and logouts from several threads at once never
 * return a record of another session (each key's record names its own index). */
#define CTHREADS 4
#define CKEYS 512
#define CROUNDS 20000

struct table_job {
    struct store_cache *c;
    int id;
    int wrong;
};

static void *table_worker(void *arg)
{
    struct table_job *j = arg;
    unsigned seed = (unsigned)j->id * 2654435761u;
    for (int n = 0; n < CROUNDS; n++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % CKEYS);
        uint8_t h[CRYPTO_HASH_LEN];
        hash_of(i, h);
        char id[16];
        snprintf(id, sizeof(id), "o%d", i);
        struct store_session r = rec_of(id, NOW + 60), out;
        switch ((seed >> 20) % 8) {
        case 0: store_cache_del(j->c, h); break;
        case 1:
        case 2: store_cache_put(j->c, h, &r); break;
        default:
            if (store_cache_get(j->c, h, NOW, &out) &&
                (strcmp(out.openid, id) != 0 || out.expires_at != NOW + 60))
                j->wrong++;
        }
    }
    return NULL;
}

/* A session cached without a unionid goes back to the store once a login stored a unionid
 * (its user may be the one who has one now); one cached with a unionid stays. A record read
 * before the unionid was stored is stale as soon as it is put. */
static void test_unionid_epoch(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(1024);
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN], h3[CRYPTO_HASH_LEN];
    hash_of(1, h1);
    hash_of(2, h2);
    hash_of(3, h3);
    struct store_session bare = rec_of("o1", NOW + 60), with = rec_of("o2", NOW + 60), out;
    bare.unionid[0] = '\0';
    store_cache_put(c, h1, &bare);
    store_cache_put(c, h2, &with);
    uint64_t read_at = store_cache_epoch(c);
    assert_true(store_cache_get(c, h1, NOW, &out));
    store_cache_unionid_stored(c);
    assert_false(store_cache_get(c, h1, NOW, &out)); /* ask the store again */
    assert_true(store_cache_get(c, h2, NOW, &out));
    store_cache_put_read_at(c, h3, &bare, read_at); /* read before the unionid was stored */
    assert_false(store_cache_get(c, h3, NOW, &out));
    store_cache_put(c, h1, &bare); /* read again, now */
    assert_true(store_cache_get(c, h1, NOW, &out));
    store_cache_free(c);
}

static void test_threads_share_the_table_consistently(void **state)
{
    (void)state;
    struct store_cache *c = store_cache_new(256);
    pthread_t t[CTHREADS];
    struct table_job jobs[CTHREADS];
    for (int i = 0; i < CTHREADS; i++) {
        jobs[i] = (struct table_job){c, i + 1, 0};
        assert_int_equal(pthread_create(&t[i], NULL, table_worker, &jobs[i]), 0);
    }
    for (int i = 0; i < CTHREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(jobs[i].wrong, 0);
    }
    store_cache_free(c);
}

/* ---- the decorator ---- */

struct worker {
    struct loop *loop;
    struct store *st;
};

struct fixture {
    char dir[64];
    char path[PATH_MAX];
    char url[PATH_MAX + 8];
    struct store_shared *sh;
    struct worker w;
};

static int login(struct worker *w, const char *openid, const char *unionid, const uint8_t *hash,
                 int64_t expires_at)
{
    struct cap c = {0};
    cap_start_login(w->st, w->loop, &c, APPID, openid, unionid, KEY_A, hash, expires_at, NOW);
    await_all(w->loop, &c, 1);
    return c.status;
}

static int delete_session(struct worker *w, const uint8_t *hash)
{
    struct cap c = {.loop = w->loop};
    cap_delete_session(w->st, &c, APPID, hash);
    await_all(w->loop, &c, 1);
    return c.status;
}

enum answered { AT_ONCE, LATER };

/* A lookup; *how says whether it answered before store_get_session returned (from memory, or
 * a failure known at once) or later on the loop (from the store). */
static int lookup(struct worker *w, const char *appid, const uint8_t *hash, int64_t now,
                  enum answered *how, struct store_session *s)
{
    struct cap c = {.loop = w->loop};
    store_get_session(w->st, &c.slot, appid, hash, now, on_session, &c);
    *how = c.calls > 0 ? AT_ONCE : LATER;
    /* Answered at once: the slot was never taken; else the store holds it. */
    assert_int_equal(async_pending(&c.slot), *how == LATER);
    await_all(w->loop, &c, 1);
    assert_int_equal(c.has, c.status == STORE_OK);
    if (c.status == STORE_OK && s != NULL)
        *s = c.s;
    return c.status;
}

static int open_with_cache(struct fixture *f, size_t entries)
{
    struct store_config cfg = {
        .url = f->url, .timeout_ms = 1000, .master_key = master, .cache_entries = entries};
    char err[STORE_ERR_MAX] = "";
    if (store_shared_new(&cfg, &f->sh, err) != 0 ||
        store_open(f->sh, f->w.loop, &f->w.st, err) != 0) {
        fprintf(stderr, "opening %s: %s\n", f->url, err);
        return -1;
    }
    return 0;
}

static void close_store(struct fixture *f)
{
    store_close(f->w.st);
    f->w.st = NULL;
    store_shared_free(f->sh);
    f->sh = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    *state = f;
    snprintf(f->dir, sizeof(f->dir), "/tmp/wxlogin-test-store-cache-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    f->w.loop = loop_new();
    if (f->w.loop == NULL)
        return -1;
    alarm(WATCHDOG_S);
    return open_with_cache(f, 1024);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    alarm(0);
    close_store(f);
    loop_free(f->w.loop);
    int rc = nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

/* store_open puts the cache in front of an SQLite store, and closing closes both. */
static void test_open_with_cache_wraps_sqlite(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(f->w.st->ops->name, "cache");
    assert_false(store_is_shared(f->w.st));
    assert_null(f->w.st->claims);
    assert_null(f->w.st->lease);
    assert_false(f->w.st->ops->broken(f->w.st));
    /* Closed and opened again: the data is there (closing the decorator closed the store and
     * released the file, or the open would be refused). */
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_reopen", h);
    assert_int_equal(login(&f->w, "o-1", "u-1", h, NOW + HOUR), STORE_OK);
    close_store(f);
    assert_int_equal(open_with_cache(f, 1024), 0);
    enum answered how;
    struct store_session s;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(how, LATER); /* a new process's cache starts empty */
    assert_string_equal(s.unionid, "u-1");
}

static void test_open_without_cache_is_plain_sqlite(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    assert_int_equal(open_with_cache(f, 0), 0);
    assert_string_equal(f->w.st->ops->name, "sqlite");
}

/* Redis is shared by several instances: each sees only its own logouts, so no cache. */
static void test_redis_store_is_never_cached(void **state)
{
    (void)state;
    struct loop *loop = loop_new();
    assert_non_null(loop);
    struct store_config cfg = {.url = "redis://127.0.0.1:1/0",
                               .timeout_ms = 100,
                               .master_key = master,
                               .cache_entries = 1024};
    struct store_shared *sh = NULL;
    struct store *st = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(store_shared_new(&cfg, &sh, err), 0);
    assert_int_equal(store_open(sh, loop, &st, err), 0);
    assert_string_equal(st->ops->name, "redis");
    store_close(st);
    store_shared_free(sh);
    loop_free(loop);
}

static void test_hit_answers_before_returning(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_hit", h);
    /* A login with the whole record (a unionid) remembers its session once written. */
    assert_int_equal(login(&f->w, "o-1", "u-1", h, NOW + HOUR), STORE_OK);
    struct cap c = {.loop = f->w.loop};
    store_get_session(f->w.st, &c.slot, APPID, h, NOW, on_session, &c);
    assert_int_equal(c.calls, 1);
    assert_false(async_pending(&c.slot));
    assert_int_equal(c.status, STORE_OK);
    assert_string_equal(c.s.appid, APPID);
    assert_string_equal(c.s.openid, "o-1");
    assert_string_equal(c.s.unionid, "u-1");
    assert_int_equal(c.s.expires_at, NOW + HOUR);
    drain(f->w.loop);
    assert_int_equal(c.calls, 1);
}

static void test_miss_goes_to_store_then_is_cached(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_miss", h);
    /* Without a unionid the login does not know the whole record: not remembered. */
    assert_int_equal(login(&f->w, "o-2", "", h, NOW + HOUR), STORE_OK);
    enum answered how;
    struct store_session s;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(how, LATER);
    assert_string_equal(s.openid, "o-2");
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(how, AT_ONCE);
    assert_string_equal(s.openid, "o-2");
    assert_string_equal(s.unionid, "");
    assert_int_equal(s.expires_at, NOW + HOUR);
    /* A miss that the store does not know is not remembered either way. */
    uint8_t unknown[CRYPTO_HASH_LEN];
    token_hash("wxl_unknown", unknown);
    assert_int_equal(lookup(&f->w, APPID, unknown, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
    assert_int_equal(lookup(&f->w, APPID, unknown, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
}

/* The unionid of a login without one is the stored one, which only the store knows. */
static void test_login_without_unionid_keeps_the_stored_one(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_first", h1);
    token_hash("wxl_second", h2);
    assert_int_equal(login(&f->w, "o-3", "u-3", h1, NOW + HOUR), STORE_OK);
    assert_int_equal(login(&f->w, "o-3", "", h2, NOW + HOUR), STORE_OK);
    enum answered how;
    struct store_session s;
    assert_int_equal(lookup(&f->w, APPID, h2, NOW, &how, &s), STORE_OK);
    assert_string_equal(s.unionid, "u-3");
}

/* A login that stores a unionid without making a session (POST /openid) still makes sessions
 * cached without one stale: their user may be this one. */
static void test_unionid_stored_without_a_session_is_seen(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_bare", h);
    assert_int_equal(login(&f->w, "o-4", "", h, NOW + HOUR), STORE_OK);
    enum answered how;
    struct store_session s;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(how, AT_ONCE);
    assert_string_equal(s.unionid, "");
    assert_int_equal(login(&f->w, "o-4", "u-4", NULL, 0), STORE_OK);
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(how, LATER);
    assert_string_equal(s.unionid, "u-4");
}

static void test_logout_is_not_served_from_memory(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_logout", h);
    assert_int_equal(login(&f->w, "o-4", "u-4", h, NOW + HOUR), STORE_OK);
    enum answered how;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_OK);
    assert_int_equal(how, AT_ONCE);
    assert_int_equal(delete_session(&f->w, h), STORE_OK);
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
    assert_int_equal(delete_session(&f->w, h), STORE_NOT_FOUND);
}

/* A lookup that read the store just before a logout answers what it read, but does not put
 * the session back in memory: the next lookup asks the store, which has forgotten it. */
static void test_lookup_racing_a_logout_does_not_bring_it_back(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_race", h);
    assert_int_equal(login(&f->w, "o-5", "", h, NOW + HOUR), STORE_OK); /* not cached */
    struct cap get = {.loop = f->w.loop}, del = {.loop = f->w.loop};
    store_get_session(f->w.st, &get.slot, APPID, h, NOW, on_session, &get);
    assert_int_equal(get.calls, 0);
    cap_delete_session(f->w.st, &del, APPID, h);
    await_all(f->w.loop, &get, 1);
    await_all(f->w.loop, &del, 1);
    assert_int_equal(get.status, STORE_OK); /* read before the delete ran */
    assert_int_equal(del.status, STORE_OK);
    enum answered how;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
}

static void test_other_apps_session_not_found_in_memory(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_bound", h);
    assert_int_equal(login(&f->w, "o-6", "u-6", h, NOW + HOUR), STORE_OK);
    enum answered how;
    assert_int_equal(lookup(&f->w, OTHER, h, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, AT_ONCE);
    /* ... and asking from the other app evicted nothing. */
    struct store_session s;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, &s), STORE_OK);
    assert_int_equal(how, AT_ONCE);
    assert_string_equal(s.openid, "o-6");
    /* The same from a session the cache learnt from the store. */
    uint8_t h2[CRYPTO_HASH_LEN];
    token_hash("wxl_bound2", h2);
    assert_int_equal(login(&f->w, "o-6", "", h2, NOW + HOUR), STORE_OK);
    assert_int_equal(lookup(&f->w, APPID, h2, NOW, &how, NULL), STORE_OK);
    assert_int_equal(lookup(&f->w, OTHER, h2, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, AT_ONCE);
}

static void test_expired_session_not_served_from_memory(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_expiring", h);
    assert_int_equal(login(&f->w, "o-7", "u-7", h, NOW + 10), STORE_OK);
    enum answered how;
    assert_int_equal(lookup(&f->w, APPID, h, NOW + 9, &how, NULL), STORE_OK);
    assert_int_equal(how, AT_ONCE);
    assert_int_equal(lookup(&f->w, APPID, h, NOW + 10, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
}

/* The workers' stores share the process's one cache: what one worker learns the other
 * answers from memory, and one worker's logout is seen by the other. */
static void test_workers_share_one_cache(void **state)
{
    struct fixture *f = *state;
    struct worker w2 = {.loop = loop_new()};
    assert_non_null(w2.loop);
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(store_open(f->sh, w2.loop, &w2.st, err), 0);
    assert_string_equal(w2.st->ops->name, "cache");
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_shared", h);
    assert_int_equal(login(&f->w, "o-8", "u-8", h, NOW + HOUR), STORE_OK);
    enum answered how;
    assert_int_equal(lookup(&w2, APPID, h, NOW, &how, NULL), STORE_OK);
    assert_int_equal(how, AT_ONCE);
    assert_int_equal(delete_session(&w2, h), STORE_OK);
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_NOT_FOUND);
    assert_int_equal(how, LATER);
    store_close(w2.st);
    loop_free(w2.loop);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* The database file is renamed away and junk written in its place: writes would go to a file
 * nobody will open again, so the store reports itself broken, and a lookup fails even for a
 * session the cache holds. */
static void test_replaced_file_fails_even_cached_sessions(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_cached", h);
    token_hash("wxl_other", h2);
    assert_int_equal(login(&f->w, "o-9", "u-9", h, NOW + HOUR), STORE_OK);
    assert_int_equal(login(&f->w, "o-9", "", h2, NOW + HOUR), STORE_OK);
    enum answered how;
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_OK);
    assert_int_equal(how, AT_ONCE);

    char moved[PATH_MAX + 16];
    snprintf(moved, sizeof(moved), "%s/moved.db", f->dir);
    assert_int_equal(rename(f->path, moved), 0);
    FILE *junk = fopen(f->path, "w");
    assert_non_null(junk);
    fputs("not a database\n", junk);
    fclose(junk);

    /* The writer notices (inotify, else its once-a-second stat) on its own thread. */
    int status = STORE_OK;
    for (long waited = 0; waited <= BROKEN_WAIT_MS; waited += 10) {
        status = lookup(&f->w, APPID, h, NOW, &how, NULL);
        if (status != STORE_OK)
            break;
        assert_int_equal(how, AT_ONCE);
        sleep_ms(10);
    }
    assert_int_equal(status, STORE_ERROR);
    assert_int_equal(how, AT_ONCE);
    assert_true(f->w.st->ops->broken(f->w.st));
    /* From now on, every time, cached or not. */
    assert_int_equal(lookup(&f->w, APPID, h, NOW, &how, NULL), STORE_ERROR);
    assert_int_equal(lookup(&f->w, APPID, h2, NOW, &how, NULL), STORE_ERROR);
    uint8_t h3[CRYPTO_HASH_LEN];
    token_hash("wxl_new", h3);
    assert_int_equal(login(&f->w, "o-9", "u-9", h3, NOW + HOUR), STORE_ERROR);
    assert_int_equal(lookup(&f->w, APPID, h3, NOW, &how, NULL), STORE_ERROR);
}

/* A lookup that missed and was cancelled never calls back, and nothing leaks when the store
 * is closed right after (the ASan build checks). */
static void test_cancelled_miss_never_calls_back(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_cancel", h);
    token_hash("wxl_cancel2", h2);
    assert_int_equal(login(&f->w, "o-10", "", h, NOW + HOUR), STORE_OK);
    struct cap c = {.loop = f->w.loop}, l = {.loop = f->w.loop};
    store_get_session(f->w.st, &c.slot, APPID, h, NOW, on_session, &c);
    cap_start_login(f->w.st, f->w.loop, &l, APPID, "o-10", "u-10", KEY_B, h2, NOW + HOUR, NOW);
    assert_true(async_pending(&c.slot));
    assert_true(async_pending(&l.slot));
    async_cancel(&c.slot);
    async_cancel(&l.slot);
    struct cap p = {.loop = f->w.loop};
    store_ping(f->w.st, &p.slot, on_done, &p);
    await_all(f->w.loop, &p, 1);
    assert_int_equal(c.calls, 0);
    assert_int_equal(l.calls, 0);
    /* Again, then closing at once. */
    store_get_session(f->w.st, &c.slot, APPID, h, NOW, on_session, &c);
    async_cancel(&c.slot);
    close_store(f);
    drain(f->w.loop);
    assert_int_equal(c.calls, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest table[] = {
        cmocka_unit_test(test_disabled_cache_is_null_and_harmless),
        cmocka_unit_test(test_put_then_get),
        cmocka_unit_test(test_never_served_past_expiry),
        cmocka_unit_test(test_logout_is_final),
        cmocka_unit_test(test_del_of_unknown_hash_blocks_late_put),
        cmocka_unit_test(test_fresh_tombstone_survives_a_flood),
        cmocka_unit_test(test_overlong_ids_are_not_cached),
        cmocka_unit_test(test_bounded_and_recent_entries_survive),
        cmocka_unit_test(test_put_updates_existing_entry),
        cmocka_unit_test(test_unionid_epoch),
        cmocka_unit_test(test_threads_share_the_table_consistently),
    };
    const struct CMUnitTest decorator[] = {
        T(test_open_with_cache_wraps_sqlite),
        T(test_open_without_cache_is_plain_sqlite),
        cmocka_unit_test(test_redis_store_is_never_cached),
        T(test_hit_answers_before_returning),
        T(test_miss_goes_to_store_then_is_cached),
        T(test_login_without_unionid_keeps_the_stored_one),
        T(test_unionid_stored_without_a_session_is_seen),
        T(test_logout_is_not_served_from_memory),
        T(test_lookup_racing_a_logout_does_not_bring_it_back),
        T(test_other_apps_session_not_found_in_memory),
        T(test_expired_session_not_served_from_memory),
        T(test_workers_share_one_cache),
        T(test_replaced_file_fails_even_cached_sessions),
        T(test_cancelled_miss_never_calls_back),
    };
#undef T
    int failed = cmocka_run_group_tests_name("store cache: the table", table, NULL, NULL);
    failed += cmocka_run_group_tests_name("store cache: the decorator", decorator, NULL, NULL);
    return failed;
}
