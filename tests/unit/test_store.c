/*
 * The store contract (src/store/store.h), run against every backend: SQLite on a temporary file,
 * SQLite behind the session cache (what store_open gives with cache_entries > 0), and Redis on a
 * redis-server this test starts on a free loopback port (skipped, loudly, only when
 * /usr/bin/redis-server is not installed). Claims and the access-token lease exist on Redis
 * alone; the stores of one process must not offer them.
 *
 * An operation answers on the caller's loop (SQLite through its writer thread's posts, Redis
 * through its connection) or, for some, before it returns (a cache hit, a failure known at
 * once). The wrappers run the loop until the callback has run, then drain the loop and check it
 * ran exactly once, with the slot empty. Every test arms an alarm first: an answer that never
 * comes kills the test instead of hanging it.
 *
 * Rate limits shared by instances (store_limit_take) exist on Redis alone too: a bucket's burst,
 * its refill, its name per app, two connections drawing from one bucket, and its key expiring
 * once it is full again.
 *
 * Also: cancellation (async_cancel on the pending slot: no callback, ever, and nothing leaks when
 * the store is closed right after; the ASan build checks), many operations in flight at once,
 * sealing at rest, and the URL helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <sqlite3.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "runtime/async.h"
#include "store/seal.h"
#include "store/store.h"
#include "store_capture.h"

#define WATCHDOG_S 10
#define WAIT_MS 3000
#define APPID "wx0123456789abcdef"
#define OTHER "wxfedcba9876543210"
#define HOUR 3600
/* Session keys as WeChat sends them: 24 characters of base64. */
#define KEY_A "QUFBQUFBQUFBQUFBQUFBQQ=="
#define KEY_B "QkJCQkJCQkJCQkJCQkJCQg=="
#define KEY_C "Q0NDQ0NDQ0NDQ0NDQ0NDQw=="
#define REDIS_BIN "/usr/bin/redis-server"
#define REDIS_DBS 64

static const uint8_t master[CRYPTO_KEY_LEN] = {0x6d, 0x61, 0x73, 0x74, 0x65, 0x72, 0x2d, 0x6b};
static const uint8_t other_master[CRYPTO_KEY_LEN] = {0x6f, 0x74, 0x68, 0x65, 0x72};

static char tmpdir[] = "/tmp/wxlogin-test-store-XXXXXX";
static pid_t redis_pid;
static int redis_port;
static int redis_db = 1; /* one database per Redis test, so none sees another's keys */

enum kind { K_SQLITE, K_CACHE, K_REDIS };

struct fixture {
    enum kind kind;
    char url[PATH_MAX];
    int db;      /* Redis: the test's database */
    int64_t now; /* taken once, so expiry assertions do not race the clock */
    struct loop *loop;
    struct store_shared *sh;
    struct store *st;
};

/* Right after a start: either it answered at once, or it holds its slot until it does. */
static void started(const struct cap *c)
{
    assert_int_equal(async_pending(&c->slot), c->calls == 0);
}

static int finish(struct loop *loop, struct cap *c)
{
    started(c);
    await_all(loop, c, 1);
    return c->status;
}

/* Runs the loop for ms (Redis expiries are measured on the server's clock). */
static void run_for(struct loop *loop, long ms)
{
    struct deadline d = {loop, false};
    struct loop_timer t;
    loop_timer_init(&t, on_deadline, &d);
    loop_timer_start(loop, &t, (uint64_t)ms);
    while (!d.passed)
        assert_int_equal(loop_run(loop), 0);
}

/* ---- synchronous wrappers ---- */

static int ping(struct fixture *f)
{
    struct cap c = {.loop = f->loop};
    store_ping(f->st, &c.slot, on_done, &c);
    return finish(f->loop, &c);
}

static void start_login(struct fixture *f, struct cap *c, const char *appid, const char *openid,
                        const char *unionid, const char *key, const uint8_t *hash,
                        int64_t expires_at, int64_t now)
{
    cap_start_login(f->st, f->loop, c, appid, openid, unionid, key, hash, expires_at, now);
}

static int login(struct fixture *f, const char *appid, const char *openid, const char *unionid,
                 const char *key, const uint8_t *hash, int64_t expires_at, int64_t now)
{
    struct cap c = {0};
    start_login(f, &c, appid, openid, unionid, key, hash, expires_at, now);
    return finish(f->loop, &c);
}

static int put_session(struct fixture *f, const uint8_t *hash, const char *openid,
                       int64_t expires_at)
{
    struct cap c = {.loop = f->loop};
    store_put_session(f->st, &c.slot, hash, APPID, openid, expires_at, f->now, on_done, &c);
    return finish(f->loop, &c);
}

/* The status; *s is written on STORE_OK (and a record was passed iff OK). */
static int get_session_at(struct fixture *f, const char *appid, const uint8_t *hash, int64_t now,
                          struct store_session *s)
{
    struct cap c = {.loop = f->loop};
    store_get_session(f->st, &c.slot, appid, hash, now, on_session, &c);
    int status = finish(f->loop, &c);
    assert_int_equal(c.has, status == STORE_OK);
    if (status == STORE_OK && s != NULL)
        *s = c.s;
    return status;
}

static int get_session(struct fixture *f, const char *appid, const uint8_t *hash,
                       struct store_session *s)
{
    return get_session_at(f, appid, hash, f->now, s);
}

static int delete_session(struct fixture *f, const char *appid, const uint8_t *hash)
{
    struct cap c = {.loop = f->loop};
    cap_delete_session(f->st, &c, appid, hash);
    return finish(f->loop, &c);
}

static int get_user(struct fixture *f, const char *appid, const char *openid, struct store_user *u)
{
    struct cap c = {.loop = f->loop};
    store_get_user(f->st, &c.slot, appid, openid, on_user, &c);
    int status = finish(f->loop, &c);
    assert_int_equal(c.has, status == STORE_OK);
    if (status == STORE_OK && u != NULL)
        *u = c.u;
    return status;
}

static int purge(struct fixture *f, int64_t now, long limit, long *count)
{
    struct cap c = {.loop = f->loop, .count = -1};
    store_purge_expired(f->st, &c.slot, now, limit, on_count, &c);
    int status = finish(f->loop, &c);
    *count = c.count;
    return status;
}

static struct cap claim(struct fixture *f, const char *appid, const uint8_t *key, const char *owner,
                        long hold_ms)
{
    struct cap c = {.loop = f->loop};
    store_claim(f->st, &c.slot, appid, key, owner, hold_ms, on_claim, &c);
    assert_int_equal(finish(f->loop, &c), STORE_OK);
    return c;
}

static struct cap lease_read(struct fixture *f, const char *appid)
{
    struct cap c = {.loop = f->loop};
    store_lease_read(f->st, &c.slot, appid, on_token, &c);
    assert_int_equal(finish(f->loop, &c), STORE_OK);
    return c;
}

static bool lease_take(struct fixture *f, const char *appid, const char *owner, long ms)
{
    struct cap c = {.loop = f->loop};
    store_lease_take(f->st, &c.slot, appid, owner, ms, on_lease, &c);
    assert_int_equal(finish(f->loop, &c), STORE_OK);
    return c.got;
}

/* ---- fixtures ---- */

static int open_store(struct fixture *f, const uint8_t *mk)
{
    static const char *const apps[] = {APPID, OTHER};
    struct store_config cfg = {.url = f->url,
                               .timeout_ms = 1000,
                               .master_key = mk,
                               .cache_entries = f->kind == K_CACHE ? 1024 : 0,
                               .apps = apps,
                               .napps = 2};
    char err[STORE_ERR_MAX] = "";
    if (store_shared_new(&cfg, &f->sh, err) != 0 || store_open(f->sh, f->loop, &f->st, err) != 0) {
        fprintf(stderr, "opening %s: %s\n", f->url, err);
        return -1;
    }
    return 0;
}

static void close_store(struct fixture *f)
{
    store_close(f->st);
    f->st = NULL;
    store_shared_free(f->sh);
    f->sh = NULL;
}

/* A ping that reports instead of asserting (for setup). */
static int setup_ping(struct fixture *f)
{
    struct cap c = {.loop = f->loop};
    store_ping(f->st, &c.slot, on_done, &c);
    struct deadline d = {f->loop, false};
    struct loop_timer t;
    loop_timer_init(&t, on_deadline, &d);
    loop_timer_start(f->loop, &t, WAIT_MS);
    while (c.calls == 0 && !d.passed)
        loop_run(f->loop);
    loop_timer_stop(f->loop, &t);
    return c.calls == 1 && c.status == STORE_OK ? 0 : -1;
}

static int setup_kind(void **state, enum kind kind)
{
    static int nfile;
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    *state = f;
    f->kind = kind;
    f->now = (int64_t)time(NULL);
    f->loop = loop_new();
    if (f->loop == NULL)
        return -1;
    if (kind == K_REDIS) {
        if (redis_pid <= 0 || redis_db >= REDIS_DBS)
            return -1;
        f->db = redis_db++;
        snprintf(f->url, sizeof(f->url), "redis://127.0.0.1:%d/%d", redis_port, f->db);
    } else {
        snprintf(f->url, sizeof(f->url), "sqlite:%s/t%d.db", tmpdir, nfile++);
    }
    alarm(WATCHDOG_S);
    if (open_store(f, master) != 0)
        return -1;
    return kind == K_REDIS ? setup_ping(f) : 0;
}

static int setup_sqlite(void **state)
{
    return setup_kind(state, K_SQLITE);
}

static int setup_cache(void **state)
{
    return setup_kind(state, K_CACHE);
}

static int setup_redis(void **state)
{
    return setup_kind(state, K_REDIS);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    alarm(0);
    close_store(f);
    loop_free(f->loop);
    free(f);
    return 0;
}

/* ---- the contract: every backend ---- */

static void test_ping(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(ping(f), STORE_OK);
}

static void test_login_then_session(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_a", h);
    assert_int_equal(login(f, APPID, "o-1", "u-1", KEY_A, h, f->now + HOUR, f->now), STORE_OK);
    struct store_session s;
    memset(&s, 0xa5, sizeof(s));
    assert_int_equal(get_session(f, APPID, h, &s), STORE_OK);
    assert_string_equal(s.appid, APPID);
    assert_string_equal(s.openid, "o-1");
    assert_string_equal(s.unionid, "u-1");
    assert_int_equal(s.expires_at, f->now + HOUR);
}

static void test_unknown_other_app_and_expired_not_found(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN], unknown[CRYPTO_HASH_LEN], old[CRYPTO_HASH_LEN];
    token_hash("wxl_b", h);
    token_hash("wxl_unknown", unknown);
    token_hash("wxl_old", old);
    assert_int_equal(login(f, APPID, "o-2", "u-2", KEY_A, h, f->now + HOUR, f->now), STORE_OK);
    assert_int_equal(get_session(f, APPID, unknown, NULL), STORE_NOT_FOUND);
    /* Tokens are bound to their app, and asking from another app changes nothing. */
    assert_int_equal(get_session(f, OTHER, h, NULL), STORE_NOT_FOUND);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_OK);
    assert_int_equal(login(f, APPID, "o-2", "u-2", KEY_A, old, f->now - 1, f->now - 10), STORE_OK);
    assert_int_equal(get_session(f, APPID, old, NULL), STORE_NOT_FOUND);
}

/* With no app (a request naming none while several apps are served), the token's session is
 * found whatever its app, and says which: one look-up (issue 11). */
static void test_session_of_any_app(void **state)
{
    struct fixture *f = *state;
    uint8_t ha[CRYPTO_HASH_LEN], hb[CRYPTO_HASH_LEN], unknown[CRYPTO_HASH_LEN];
    token_hash("wxl_any_a", ha);
    token_hash("wxl_any_b", hb);
    token_hash("wxl_any_unknown", unknown);
    assert_int_equal(login(f, APPID, "o-a", "u-a", KEY_A, ha, f->now + HOUR, f->now), STORE_OK);
    assert_int_equal(login(f, OTHER, "o-b", "", KEY_B, hb, f->now + HOUR, f->now), STORE_OK);
    struct store_session s;
    memset(&s, 0xa5, sizeof(s));
    assert_int_equal(get_session(f, NULL, ha, &s), STORE_OK);
    assert_string_equal(s.appid, APPID);
    assert_string_equal(s.openid, "o-a");
    assert_string_equal(s.unionid, "u-a");
    assert_int_equal(s.expires_at, f->now + HOUR);
    memset(&s, 0xa5, sizeof(s));
    assert_int_equal(get_session(f, NULL, hb, &s), STORE_OK);
    assert_string_equal(s.appid, OTHER);
    assert_string_equal(s.openid, "o-b");
    assert_string_equal(s.unionid, "");
    assert_int_equal(get_session(f, NULL, unknown, NULL), STORE_NOT_FOUND);
    /* live only, and a logout is seen */
    assert_int_equal(get_session_at(f, NULL, hb, f->now + HOUR, NULL), STORE_NOT_FOUND);
    assert_int_equal(delete_session(f, OTHER, hb), STORE_OK);
    assert_int_equal(get_session(f, NULL, hb, NULL), STORE_NOT_FOUND);
    /* naming the app still binds the token to it */
    assert_int_equal(get_session(f, OTHER, ha, NULL), STORE_NOT_FOUND);
    assert_int_equal(get_session(f, APPID, ha, NULL), STORE_OK);
}

/* Live means expires_at > now: at expires_at it is already gone. */
static void test_live_means_expires_at_after_now(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_edge", h);
    assert_int_equal(login(f, APPID, "o-3", "u-3", KEY_A, h, f->now + HOUR, f->now), STORE_OK);
    assert_int_equal(get_session_at(f, APPID, h, f->now + HOUR - 1, NULL), STORE_OK);
    assert_int_equal(get_session_at(f, APPID, h, f->now + HOUR, NULL), STORE_NOT_FOUND);
    assert_int_equal(get_session_at(f, APPID, h, f->now + HOUR + 1, NULL), STORE_NOT_FOUND);
}

static void test_delete(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_c", h);
    token_hash("wxl_c2", h2);
    assert_int_equal(login(f, APPID, "o-3", "u-3", KEY_A, h, f->now + HOUR, f->now), STORE_OK);
    assert_int_equal(login(f, APPID, "o-3", "u-3", KEY_A, h2, f->now + HOUR, f->now), STORE_OK);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_OK);
    /* Another app cannot log it out. */
    assert_int_equal(delete_session(f, OTHER, h), STORE_NOT_FOUND);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_OK);
    assert_int_equal(delete_session(f, APPID, h), STORE_OK);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_NOT_FOUND);
    assert_int_equal(delete_session(f, APPID, h), STORE_NOT_FOUND);
    /* The user's other session and the user outlive it. */
    assert_int_equal(get_session(f, APPID, h2, NULL), STORE_OK);
    assert_int_equal(get_user(f, APPID, "o-3", NULL), STORE_OK);
}

static void test_upsert_keeps_previous_key_and_unionid(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(f, APPID, "o-4", "u-4", KEY_A, NULL, 0, f->now - 5), STORE_OK);
    struct store_user got;
    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(get_user(f, APPID, "o-4", &got), STORE_OK);
    assert_string_equal(got.appid, APPID);
    assert_string_equal(got.openid, "o-4");
    assert_string_equal(got.unionid, "u-4");
    assert_string_equal(got.session_key, KEY_A);
    assert_string_equal(got.prev_session_key, "");
    assert_int_equal(got.prev_replaced_at, 0);

    /* A re-login without a unionid keeps the known one; the replaced key is kept with when. */
    assert_int_equal(login(f, APPID, "o-4", "", KEY_B, NULL, 0, f->now), STORE_OK);
    assert_int_equal(get_user(f, APPID, "o-4", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_B);
    assert_string_equal(got.prev_session_key, KEY_A);
    assert_int_equal(got.prev_replaced_at, f->now);
    assert_string_equal(got.unionid, "u-4");

    /* Only one previous key: the latest replaced. A new unionid replaces the old. */
    assert_int_equal(login(f, APPID, "o-4", "u-4b", KEY_C, NULL, 0, f->now + 7), STORE_OK);
    assert_int_equal(get_user(f, APPID, "o-4", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_C);
    assert_string_equal(got.prev_session_key, KEY_B);
    assert_int_equal(got.prev_replaced_at, f->now + 7);
    assert_string_equal(got.unionid, "u-4b");

    assert_int_equal(get_user(f, APPID, "o-nobody", NULL), STORE_NOT_FOUND);
    /* Users are per app. */
    assert_int_equal(get_user(f, OTHER, "o-4", NULL), STORE_NOT_FOUND);
}

static void test_put_session_for_existing_user(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(f, APPID, "o-5", "u-5", KEY_A, NULL, 0, f->now), STORE_OK);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_d", h);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_NOT_FOUND);
    assert_int_equal(put_session(f, h, "o-5", f->now + HOUR), STORE_OK);
    struct store_session s;
    assert_int_equal(get_session(f, APPID, h, &s), STORE_OK);
    assert_string_equal(s.appid, APPID);
    assert_string_equal(s.openid, "o-5");
    assert_string_equal(s.unionid, "u-5");
    assert_int_equal(s.expires_at, f->now + HOUR);
}

/* get_session reports the user's unionid as the store knows it now: a unionid learnt by a later
 * login shows on the sessions made before it. */
static void test_session_reports_users_current_unionid(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_before", h1);
    token_hash("wxl_after", h2);
    assert_int_equal(login(f, APPID, "o-6", "", KEY_A, h1, f->now + HOUR, f->now), STORE_OK);
    struct store_session s;
    assert_int_equal(get_session(f, APPID, h1, &s), STORE_OK);
    assert_string_equal(s.unionid, "");
    assert_int_equal(login(f, APPID, "o-6", "u-6", KEY_B, h2, f->now + HOUR, f->now + 1), STORE_OK);
    assert_int_equal(get_session(f, APPID, h2, &s), STORE_OK);
    assert_string_equal(s.unionid, "u-6");
    assert_int_equal(get_session(f, APPID, h1, &s), STORE_OK);
    assert_string_equal(s.unionid, "u-6");
}

/* Session keys go in and come out as text; the store seals them with the master key, so under
 * another master key they do not open (the user is as good as unknown) but sessions still
 * work, and under the right one they open again. */
/* Removes the store's check value of the master key (store/seal.h), as an operator with the
 * database and no key file might: what is sealed must still not open. The store is closed. */
static void forget_key_check(struct fixture *f)
{
    if (f->kind == K_REDIS) {
        redisContext *c = redisConnect("127.0.0.1", redis_port);
        assert_true(c != NULL && c->err == 0);
        redisReply *r = redisCommand(c, "SELECT %d", f->db);
        freeReplyObject(r);
        for (const char *const *a = (const char *const[]){APPID, OTHER, NULL}; *a; a++) {
            r = redisCommand(c, "DEL wxlogin:%s:master_key_check", *a);
            assert_non_null(r);
            freeReplyObject(r);
        }
        redisFree(c);
        return;
    }
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->url + 7, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM meta", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_keys_need_their_master_key(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_mk", h);
    assert_int_equal(login(f, APPID, "o-7", "u-7", KEY_A, NULL, 0, f->now - 1), STORE_OK);
    assert_int_equal(login(f, APPID, "o-7", "u-7", KEY_B, h, f->now + HOUR, f->now), STORE_OK);
    /* another key is refused at open */
    close_store(f);
    static const char *const apps[] = {APPID, OTHER};
    struct store_config cfg = {
        .url = f->url, .timeout_ms = 1000, .master_key = other_master, .apps = apps, .napps = 2};
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(store_shared_new(&cfg, &sh, err), STORE_WRONG_KEY);
    assert_non_null(strstr(err, "different master key"));
    /* without the check value it opens, and what was sealed does not */
    forget_key_check(f);
    assert_int_equal(open_store(f, other_master), 0);
    assert_int_equal(get_user(f, APPID, "o-7", NULL), STORE_NOT_FOUND);
    struct store_session s;
    assert_int_equal(get_session(f, APPID, h, &s), STORE_OK);
    assert_string_equal(s.openid, "o-7");
    close_store(f);
    forget_key_check(f);
    assert_int_equal(open_store(f, master), 0);
    struct store_user u;
    assert_int_equal(get_user(f, APPID, "o-7", &u), STORE_OK);
    assert_string_equal(u.session_key, KEY_B);
    assert_string_equal(u.prev_session_key, KEY_A);
}

/* Keys up to STORE_KEY_MAX characters round-trip; an empty or longer one is refused and
 * writes nothing. */
static void test_session_key_bounds(void **state)
{
    struct fixture *f = *state;
    char longest[STORE_KEY_MAX + 1], too_long[STORE_KEY_MAX + 2];
    memset(longest, 'k', STORE_KEY_MAX);
    longest[STORE_KEY_MAX] = '\0';
    memset(too_long, 'k', STORE_KEY_MAX + 1);
    too_long[STORE_KEY_MAX + 1] = '\0';
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_bounds", h);
    assert_int_equal(login(f, APPID, "o-8", "", longest, NULL, 0, f->now), STORE_OK);
    struct store_user u;
    assert_int_equal(get_user(f, APPID, "o-8", &u), STORE_OK);
    assert_string_equal(u.session_key, longest);
    assert_int_equal(login(f, APPID, "o-9", "", too_long, h, f->now + HOUR, f->now), STORE_ERROR);
    assert_int_equal(login(f, APPID, "o-9", "", "", h, f->now + HOUR, f->now), STORE_ERROR);
    assert_int_equal(get_user(f, APPID, "o-9", NULL), STORE_NOT_FOUND);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_NOT_FOUND);
}

static void test_purge_spares_live_sessions(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_live", h);
    assert_int_equal(login(f, APPID, "o-10", "u-10", KEY_A, h, f->now + HOUR, f->now), STORE_OK);
    long n = -1;
    assert_int_equal(purge(f, f->now, 100, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(get_session(f, APPID, h, NULL), STORE_OK);
}

/* The caller's buffers are borrowed for the call only: a store copies what it keeps, so the
 * caller may reuse them while the operation is in flight. Many operations in flight at once
 * all complete (SQLite: the writer groups them into a few commits). */
#define MANY 300

static void test_many_logins_in_flight_all_complete(void **state)
{
    struct fixture *f = *state;
    struct cap *c = calloc(MANY, sizeof(*c));
    assert_non_null(c);
    char openid[32], unionid[32], token[32];
    uint8_t h[CRYPTO_HASH_LEN];
    for (int i = 0; i < MANY; i++) {
        snprintf(openid, sizeof(openid), "o-many-%d", i);
        snprintf(unionid, sizeof(unionid), "u-many-%d", i);
        snprintf(token, sizeof(token), "wxl_many-%d", i);
        token_hash(token, h);
        start_login(f, &c[i], APPID, openid, unionid, i % 2 ? KEY_A : KEY_B, h, f->now + HOUR,
                    f->now);
        started(&c[i]);
        memset(openid, 'x', sizeof(openid) - 1); /* the store must have copied it */
        memset(h, 0, sizeof(h));
    }
    await_all(f->loop, c, MANY);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(c[i].status, STORE_OK);

    /* All readable, with reads in flight together too. */
    memset(c, 0, MANY * sizeof(*c));
    for (int i = 0; i < MANY; i++) {
        snprintf(token, sizeof(token), "wxl_many-%d", i);
        token_hash(token, h);
        c[i].loop = f->loop;
        store_get_session(f->st, &c[i].slot, APPID, h, f->now, on_session, &c[i]);
        started(&c[i]);
    }
    await_all(f->loop, c, MANY);
    for (int i = 0; i < MANY; i++) {
        snprintf(openid, sizeof(openid), "o-many-%d", i);
        snprintf(unionid, sizeof(unionid), "u-many-%d", i);
        assert_int_equal(c[i].status, STORE_OK);
        assert_string_equal(c[i].s.openid, openid);
        assert_string_equal(c[i].s.unionid, unionid);
    }
    memset(c, 0, MANY * sizeof(*c));
    for (int i = 0; i < MANY; i++) {
        snprintf(openid, sizeof(openid), "o-many-%d", i);
        c[i].loop = f->loop;
        store_get_user(f->st, &c[i].slot, APPID, openid, on_user, &c[i]);
        started(&c[i]);
    }
    await_all(f->loop, c, MANY);
    for (int i = 0; i < MANY; i++) {
        snprintf(openid, sizeof(openid), "o-many-%d", i);
        assert_int_equal(c[i].status, STORE_OK);
        assert_string_equal(c[i].u.openid, openid);
        assert_string_equal(c[i].u.session_key, i % 2 ? KEY_A : KEY_B);
    }
    free(c);
}

/* The callback runs with the slot already empty, so it may start the next operation in it. */
struct chain {
    struct fixture *f;
    struct cap *first, *second;
};

static void on_first_then_ping(void *arg, int status, const struct store_user *u)
{
    struct chain *ch = arg;
    on_user(ch->first, status, u);
    assert_false(async_pending(&ch->first->slot));
    /* The second operation uses the first's slot. */
    store_ping(ch->f->st, &ch->first->slot, on_done, ch->second);
}

static void test_callback_may_start_next_operation_in_its_slot(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(f, APPID, "o-11", "", KEY_A, NULL, 0, f->now), STORE_OK);
    struct cap first = {.loop = f->loop}, second = {.loop = f->loop};
    struct chain ch = {f, &first, &second};
    store_get_user(f->st, &first.slot, APPID, "o-11", on_first_then_ping, &ch);
    struct deadline d = {f->loop, false};
    struct loop_timer t;
    loop_timer_init(&t, on_deadline, &d);
    loop_timer_start(f->loop, &t, WAIT_MS);
    while (second.calls == 0 && !d.passed)
        loop_run(f->loop);
    loop_timer_stop(f->loop, &t);
    drain(f->loop);
    assert_int_equal(first.calls, 1);
    assert_int_equal(first.status, STORE_OK);
    assert_int_equal(second.calls, 1);
    assert_int_equal(second.status, STORE_OK);
    assert_false(async_pending(&first.slot));
}

/* ---- cancellation ---- */

#define NOPS 7

static const char *const op_names[NOPS] = {
    "ping", "login", "put_session", "get_session", "delete_session", "get_user", "purge_expired",
};

/* Starts one of each operation, each into its own slot. The session looked up is not one the
 * cache could know, so every operation has to go to the store. */
static void start_every_operation(struct fixture *f, struct cap c[NOPS])
{
    uint8_t h[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN], h3[CRYPTO_HASH_LEN];
    token_hash("wxl_cancel-login", h);
    token_hash("wxl_cancel-put", h2);
    token_hash("wxl_cancel-get", h3);
    memset(c, 0, NOPS * sizeof(*c));
    for (int i = 0; i < NOPS; i++)
        c[i].loop = f->loop;
    store_ping(f->st, &c[0].slot, on_done, &c[0]);
    start_login(f, &c[1], APPID, "o-cancel", "u-cancel", KEY_A, h, f->now + HOUR, f->now);
    store_put_session(f->st, &c[2].slot, h2, APPID, "o-12", f->now + HOUR, f->now, on_done, &c[2]);
    store_get_session(f->st, &c[3].slot, APPID, h3, f->now, on_session, &c[3]);
    cap_delete_session(f->st, &c[4], APPID, h3);
    store_get_user(f->st, &c[5].slot, APPID, "o-12", on_user, &c[5]);
    store_purge_expired(f->st, &c[6].slot, f->now, 10, on_count, &c[6]);
    for (int i = 0; i < NOPS; i++)
        started(&c[i]);
}

/* How many of start_every_operation()'s operations are in flight after it: all but Redis's
 * purge, answered at once (its TTLs purge). */
static int in_flight(const struct fixture *f)
{
    return f->kind == K_REDIS ? NOPS - 1 : NOPS;
}

/* Cancels what is pending; returns how many were. */
static int cancel_pending(struct cap c[NOPS], bool cancelled[NOPS])
{
    int n = 0;
    for (int i = 0; i < NOPS; i++) {
        cancelled[i] = c[i].calls == 0;
        if (!cancelled[i])
            continue;
        async_cancel(&c[i].slot);
        assert_false(async_pending(&c[i].slot));
        n++;
    }
    return n;
}

static void test_cancelled_operations_never_call_back(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(f, APPID, "o-12", "u-12", KEY_A, NULL, 0, f->now), STORE_OK);
    struct cap c[NOPS];
    bool cancelled[NOPS];
    start_every_operation(f, c);
    /* Redis answers purge at once (its TTLs purge); everything else is in flight. */
    assert_int_equal(cancel_pending(c, cancelled), in_flight(f));
    /* Answered after everything sent before it, so their answers have come and gone. */
    assert_int_equal(ping(f), STORE_OK);
    drain(f->loop);
    for (int i = 0; i < NOPS; i++)
        if (cancelled[i] && c[i].calls != 0)
            fail_msg("cancelled %s called back", op_names[i]);
    /* The store is still fine. */
    assert_int_equal(get_user(f, APPID, "o-12", NULL), STORE_OK);
}

/* Closing right after cancelling (what a shutdown does): no callback, and every operation's
 * memory is returned (the ASan build checks). */
static void test_cancelled_operations_then_close_leak_nothing(void **state)
{
    struct fixture *f = *state;
    struct cap c[NOPS];
    bool cancelled[NOPS];
    start_every_operation(f, c);
    assert_int_equal(cancel_pending(c, cancelled), in_flight(f));
    store_close(f->st);
    f->st = NULL;
    drain(f->loop);
    for (int i = 0; i < NOPS; i++)
        if (cancelled[i] && c[i].calls != 0)
            fail_msg("cancelled %s called back", op_names[i]);
}

/* store.h: "Closes a worker's store on its own thread: operations still in flight end without
 * their callbacks." */
static void test_close_with_operations_in_flight_calls_nothing_back(void **state)
{
    struct fixture *f = *state;
    struct cap c[NOPS];
    start_every_operation(f, c);
    bool pending[NOPS];
    for (int i = 0; i < NOPS; i++)
        pending[i] = c[i].calls == 0;
    store_close(f->st);
    f->st = NULL;
    drain(f->loop);
    char called_back[256] = "";
    for (int i = 0; i < NOPS; i++)
        if (pending[i] && c[i].calls != 0)
            snprintf(called_back + strlen(called_back), sizeof(called_back) - strlen(called_back),
                     " %s(status %d)", op_names[i], c[i].status);
    if (called_back[0] != '\0')
        fail_msg("store_close called back operations in flight:%s", called_back);
}

/* ---- one process: no claims, no lease ---- */

static void test_one_process_store_has_no_claims_or_lease(void **state)
{
    struct fixture *f = *state;
    assert_false(store_is_shared(f->st));
    assert_null(f->st->claims);
    assert_null(f->st->lease);
    assert_null(f->st->limits); /* its rate limits live in its memory */
}

/* ---- several instances (Redis): claims ---- */

static void owners(char a[STORE_OWNER_LEN + 1], char b[STORE_OWNER_LEN + 1])
{
    assert_int_equal(store_owner_new(a), 0);
    assert_int_equal(store_owner_new(b), 0);
}

static void test_shared_store_has_claims_and_lease(void **state)
{
    struct fixture *f = *state;
    assert_true(store_is_shared(f->st));
    assert_non_null(f->st->claims);
    assert_non_null(f->st->lease);
    assert_non_null(f->st->limits);
    assert_string_equal(f->st->ops->name, "redis");
}

static void test_code_claims(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    uint8_t k[CRYPTO_HASH_LEN];
    token_hash("code-1", k);
    assert_int_equal(claim(f, APPID, k, a, 5000).claim, STORE_CLAIM_MINE);
    assert_int_equal(claim(f, APPID, k, b, 5000).claim, STORE_CLAIM_BUSY);
    const char outcome[] = "{\"openid\":\"o-1\",\"x\":1}";
    store_claim_publish(f->st, APPID, k, "o-1", outcome, strlen(outcome), 60000);
    struct cap c = claim(f, APPID, k, b, 5000);
    assert_int_equal(c.claim, STORE_CLAIM_KNOWN);
    assert_int_equal(c.outcome_len, strlen(outcome));
    assert_string_equal(c.outcome, outcome);
    /* A release after the publish is harmless: the claim is no longer there to release, and
     * the outcome stays. */
    store_claim_release(f->st, APPID, k, a);
    assert_int_equal(claim(f, APPID, k, b, 5000).claim, STORE_CLAIM_KNOWN);
}

static void test_claim_release_only_by_its_owner(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    uint8_t k[CRYPTO_HASH_LEN];
    token_hash("code-2", k);
    assert_int_equal(claim(f, APPID, k, a, 5000).claim, STORE_CLAIM_MINE);
    store_claim_release(f->st, APPID, k, b); /* not b's to release */
    assert_int_equal(claim(f, APPID, k, b, 5000).claim, STORE_CLAIM_BUSY);
    store_claim_release(f->st, APPID, k, a); /* released: the next request tries again */
    assert_int_equal(claim(f, APPID, k, b, 5000).claim, STORE_CLAIM_MINE);
    assert_int_equal(claim(f, APPID, k, a, 5000).claim, STORE_CLAIM_BUSY);
}

static void test_claims_lapse_and_outcomes_expire(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN];
    token_hash("code-3", k1);
    token_hash("code-4", k2);
    /* A claim whose holder died lapses after hold_ms; a published outcome after keep_ms. */
    assert_int_equal(claim(f, APPID, k1, a, 100).claim, STORE_CLAIM_MINE);
    assert_int_equal(claim(f, APPID, k2, a, 5000).claim, STORE_CLAIM_MINE);
    store_claim_publish(f->st, APPID, k2, "", "{}", 2, 100);
    assert_int_equal(claim(f, APPID, k2, b, 5000).claim, STORE_CLAIM_KNOWN);
    run_for(f->loop, 300);
    assert_int_equal(claim(f, APPID, k1, b, 5000).claim, STORE_CLAIM_MINE);
    assert_int_equal(claim(f, APPID, k2, b, 5000).claim, STORE_CLAIM_MINE);
}

static void test_claims_bound_to_their_app(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    uint8_t k[CRYPTO_HASH_LEN];
    token_hash("code-5", k);
    assert_int_equal(claim(f, APPID, k, a, 5000).claim, STORE_CLAIM_MINE);
    assert_int_equal(claim(f, OTHER, k, b, 5000).claim, STORE_CLAIM_MINE);
}

/* ---- several instances (Redis): the access-token lease ---- */

static void test_lease_take_publish_read(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1], c[STORE_OWNER_LEN + 1];
    owners(a, b);
    assert_int_equal(store_owner_new(c), 0);
    struct cap r = lease_read(f, APPID);
    assert_string_equal(r.token, "");

    assert_true(lease_take(f, APPID, a, 5000));
    assert_false(lease_take(f, APPID, b, 5000));
    /* Publishing releases the publisher's lease. */
    store_lease_publish(f->st, APPID, a, "tok-1", f->now + HOUR);
    r = lease_read(f, APPID);
    assert_string_equal(r.token, "tok-1");
    assert_int_equal(r.expires_at, f->now + HOUR);
    assert_true(lease_take(f, APPID, b, 5000));

    /* Someone else's publish does not release b's lease. */
    store_lease_publish(f->st, APPID, a, "tok-2", f->now + HOUR + 1);
    r = lease_read(f, APPID);
    assert_string_equal(r.token, "tok-2");
    assert_int_equal(r.expires_at, f->now + HOUR + 1);
    assert_false(lease_take(f, APPID, c, 5000));

    /* A failed fetch ("" ) publishes nothing and releases the lease. */
    store_lease_publish(f->st, APPID, b, "", 0);
    r = lease_read(f, APPID);
    assert_string_equal(r.token, "tok-2");
    assert_true(lease_take(f, APPID, c, 5000));
}

static void test_lease_invalidate_is_compare_and_swap(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    store_lease_publish(f->st, APPID, a, "tok-new", f->now + HOUR);
    store_lease_invalidate(f->st, APPID, "tok-old"); /* a newer token is never dropped */
    assert_string_equal(lease_read(f, APPID).token, "tok-new");
    store_lease_invalidate(f->st, APPID, "tok-new");
    assert_string_equal(lease_read(f, APPID).token, "");
}

static void test_lease_lapses_and_is_per_app(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    assert_true(lease_take(f, APPID, a, 100));
    assert_true(lease_take(f, OTHER, b, 5000)); /* another app's lease */
    store_lease_publish(f->st, APPID, a, "tok-app", f->now + HOUR);
    assert_string_equal(lease_read(f, OTHER).token, "");
    assert_true(lease_take(f, APPID, a, 100));
    run_for(f->loop, 300);
    assert_true(lease_take(f, APPID, b, 5000));
}

static void test_cancelled_claim_and_lease_never_call_back(void **state)
{
    struct fixture *f = *state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    owners(a, b);
    uint8_t k[CRYPTO_HASH_LEN];
    token_hash("code-6", k);
    struct cap c[3] = {{.loop = f->loop}, {.loop = f->loop}, {.loop = f->loop}};
    store_claim(f->st, &c[0].slot, APPID, k, a, 5000, on_claim, &c[0]);
    store_lease_read(f->st, &c[1].slot, APPID, on_token, &c[1]);
    store_lease_take(f->st, &c[2].slot, APPID, a, 5000, on_lease, &c[2]);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].calls, 0);
        assert_true(async_pending(&c[i].slot));
        async_cancel(&c[i].slot);
    }
    assert_int_equal(ping(f), STORE_OK);
    drain(f->loop);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c[i].calls, 0);
    /* They did run: the claim and the lease are a's. */
    assert_int_equal(claim(f, APPID, k, b, 5000).claim, STORE_CLAIM_BUSY);
    assert_false(lease_take(f, APPID, b, 5000));
}

/* ---- redis-server ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends raw protocol text to the test's redis-server and reads until want bytes (or up to
 * cap - 1 when want is 0, the first read). Returns the bytes read, or -1. */
static ssize_t redis_raw(const char *cmd, char *buf, size_t cap, size_t want)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)redis_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 2};
    ssize_t got = -1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        write(fd, cmd, strlen(cmd)) == (ssize_t)strlen(cmd)) {
        got = 0;
        do {
            ssize_t n = read(fd, buf + got, cap - 1 - (size_t)got);
            if (n <= 0)
                break;
            got += n;
        } while (want > 0 && (size_t)got < want && (size_t)got < cap - 1);
        buf[got] = '\0';
    }
    close(fd);
    return got;
}

static bool redis_answers(void)
{
    char buf[16];
    return redis_raw("PING\r\n", buf, sizeof(buf), 0) > 0 && strncmp(buf, "+PONG", 5) == 0;
}

static void start_redis(void)
{
    redis_port = free_port();
    if (redis_port <= 0)
        return;
    char port[16], dbs[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    snprintf(dbs, sizeof(dbs), "%d", REDIS_DBS);
    pid_t pid = fork();
    if (pid == 0) {
        /* Dies with the test, even when the watchdog kills it. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1);
        execl(REDIS_BIN, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--databases", dbs, "--dir", tmpdir, (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return;
    redis_pid = pid;
    for (int i = 0; i < 250 && !redis_answers(); i++)
        usleep(20000);
}

/* ---- several instances (Redis): rate limits ---- */

static uint64_t limit_take(struct fixture *f, struct store *st, const char *appid, const char *name,
                           uint64_t interval_us, uint32_t burst)
{
    struct cap c = {.loop = f->loop};
    store_limit_take(st, &c.slot, appid, name, interval_us, burst, on_limit, &c);
    assert_int_equal(finish(f->loop, &c), STORE_OK);
    return c.wait_us;
}

static void test_limit_buckets(void **state)
{
    struct fixture *f = *state;
    const uint64_t second = 1000000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(limit_take(f, f->st, APPID, "a:0123", second, 3), 0);
    uint64_t wait = limit_take(f, f->st, APPID, "a:0123", second, 3);
    assert_true(wait > 0 && wait <= second);
    /* another name, another app, no app: their own buckets */
    assert_int_equal(limit_take(f, f->st, APPID, "a:4567", second, 3), 0);
    assert_int_equal(limit_take(f, f->st, OTHER, "a:0123", second, 3), 0);
    assert_int_equal(limit_take(f, f->st, "", "a:0123", second, 3), 0);
    /* a second connection (another worker, another instance) draws from the same bucket */
    struct store *two = NULL;
    char err[STORE_ERR_MAX];
    assert_int_equal(store_open(f->sh, f->loop, &two, err), 0);
    assert_true(limit_take(f, two, APPID, "a:0123", second, 3) > 0);
    /* a token comes back after an interval, one only */
    run_for(f->loop, (long)(wait / 1000) + 50);
    assert_int_equal(limit_take(f, two, APPID, "a:0123", second, 3), 0);
    assert_true(limit_take(f, f->st, APPID, "a:0123", second, 3) > 0);
    store_close(two);
}

/* A bucket full again holds nothing: its key is gone. */
static void test_limit_keys_expire_when_full(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(limit_take(f, f->st, APPID, "o:89ab", 100000, 2), 0);
    assert_int_equal(limit_take(f, f->st, "", "a:89ab", 100000, 2), 0);
    char cmd[256], buf[256];
    snprintf(cmd, sizeof(cmd),
             "SELECT %d\r\nEXISTS wxlogin:" APPID ":rl:o:89ab\r\nEXISTS wxlogin:rl:a:89ab\r\n",
             f->db);
    assert_true(redis_raw(cmd, buf, sizeof(buf), 13) > 0);
    assert_string_equal(buf, "+OK\r\n:1\r\n:1\r\n");
    run_for(f->loop, 350);
    assert_true(redis_raw(cmd, buf, sizeof(buf), 13) > 0);
    assert_string_equal(buf, "+OK\r\n:0\r\n:0\r\n");
}

static void test_cancelled_limit_take_never_calls_back(void **state)
{
    struct fixture *f = *state;
    struct cap c = {.loop = f->loop};
    store_limit_take(f->st, &c.slot, APPID, "a:cdef", 1000000, 1, on_limit, &c);
    assert_true(async_pending(&c.slot));
    async_cancel(&c.slot);
    run_for(f->loop, 100);
    assert_int_equal(c.calls, 0);
    /* and it was taken all the same: a cancel stops the answer, not the script */
    assert_true(limit_take(f, f->st, APPID, "a:cdef", 1000000, 1) > 0);
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
    }
}

/* ---- Redis specifics ---- */

/* Session keys are sealed at rest: Redis holds a blob bound to its user, never the text. */
static void test_redis_keys_sealed_at_rest(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(f, APPID, "o-13", "", KEY_A, NULL, 0, f->now), STORE_OK);
    char cmd[256], buf[512];
    snprintf(cmd, sizeof(cmd), "SELECT %d\r\nHGET wxlogin:" APPID ":u:o-13 sk\r\n", f->db);
    size_t len = strlen(KEY_A) + CRYPTO_SEAL_OVERHEAD;
    char head[32];
    int hn = snprintf(head, sizeof(head), "+OK\r\n$%zu\r\n", len);
    assert_true(redis_raw(cmd, buf, sizeof(buf), (size_t)hn + len + 2) >= hn + (ssize_t)len);
    assert_memory_equal(buf, head, (size_t)hn);
    const uint8_t *blob = (const uint8_t *)buf + hn;
    assert_null(memmem(blob, len, KEY_A, strlen(KEY_A)));
    char out[STORE_KEY_MAX + 1];
    assert_true(store_unseal(master, APPID, "o-13", blob, len, out));
    assert_string_equal(out, KEY_A);
    assert_false(store_unseal(master, APPID, "o-14", blob, len, out));
}

/* The server forgets the scripts (SCRIPT FLUSH, a restart behind a proxy): the next operations
 * load them again and succeed. */
static void test_redis_survives_script_flush(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_flush", h);
    assert_int_equal(login(f, APPID, "o-15", "u-15", KEY_A, NULL, 0, f->now), STORE_OK);
    char buf[64];
    assert_true(redis_raw("SCRIPT FLUSH\r\n", buf, sizeof(buf), 0) > 0);
    assert_string_equal(buf, "+OK\r\n");
    assert_int_equal(login(f, APPID, "o-15", "u-15", KEY_B, h, f->now + HOUR, f->now), STORE_OK);
    struct store_session s;
    assert_int_equal(get_session(f, APPID, h, &s), STORE_OK);
    assert_string_equal(s.unionid, "u-15");
}

/* ---- without a fixture ---- */

static void test_unreachable_redis_answers_error(void **state)
{
    (void)state;
    alarm(WATCHDOG_S);
    struct fixture f = {.kind = K_REDIS, .now = (int64_t)time(NULL)};
    int port = free_port(); /* nobody listens there */
    assert_true(port > 0);
    snprintf(f.url, sizeof(f.url), "redis://127.0.0.1:%d/0", port);
    f.loop = loop_new();
    assert_non_null(f.loop);
    assert_int_equal(open_store(&f, master), 0);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_nowhere", h);
    assert_int_equal(ping(&f), STORE_ERROR);
    assert_int_equal(get_session(&f, APPID, h, NULL), STORE_ERROR);
    assert_int_equal(login(&f, APPID, "o-1", "", KEY_A, h, f.now + HOUR, f.now), STORE_ERROR);
    assert_int_equal(get_user(&f, APPID, "o-1", NULL), STORE_ERROR);
    close_store(&f);
    loop_free(f.loop);
    alarm(0);
}

static void test_store_owner_new(void **state)
{
    (void)state;
    char a[STORE_OWNER_LEN + 1], b[STORE_OWNER_LEN + 1];
    memset(a, 'Z', sizeof(a));
    assert_int_equal(store_owner_new(a), 0);
    assert_int_equal(store_owner_new(b), 0);
    assert_int_equal(strlen(a), STORE_OWNER_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), STORE_OWNER_LEN);
    assert_string_not_equal(a, b);
}

static void test_url_check(void **state)
{
    (void)state;
    static const char *const good[] = {
        "sqlite:/var/lib/wxlogin/wxlogin.db", "sqlite:rel.db",
        "redis://127.0.0.1:6379/0",           "redis://127.0.0.1",
        "redis://:secret@127.0.0.1:6379/2",   "redis+unix:///run/redis.sock",
        "redis+unix:///run/redis.sock?db=3",
    };
    static const char *const bad[] = {
        "", "sqlite:", "memcached://x", "rediss://h", "redis://", "redis://h:99999", "/tmp/x.db",
    };
    char err[STORE_ERR_MAX];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        err[0] = '\0';
        if (store_url_check(good[i], err) != 0)
            fail_msg("%s refused: %s", good[i], err);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (store_url_check(bad[i], err) != -1)
            fail_msg("%s accepted", bad[i]);
        if (err[0] == '\0')
            fail_msg("%s refused without a message", bad[i]);
    }
    /* A refusal never quotes the password. */
    err[0] = '\0';
    assert_int_equal(store_url_check("redis://:hunter2@h:notaport/0", err), -1);
    assert_true(err[0] != '\0');
    assert_null(strstr(err, "hunter2"));
}

static void redacted_is(const char *url, const char *want)
{
    char out[256];
    memset(out, 'Z', sizeof(out));
    store_url_redacted(url, out, sizeof(out));
    assert_string_equal(out, want);
}

static void test_url_redacted(void **state)
{
    (void)state;
    redacted_is("redis://:hunter2@127.0.0.1:6379/1", "redis://***@127.0.0.1:6379/1");
    redacted_is("redis://user:hunter2@h/2", "redis://***@h/2");
    redacted_is("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0");
    redacted_is("redis+unix:///run/redis.sock?db=3", "redis+unix:///run/redis.sock?db=3");
    redacted_is("redis://h/0?x=a@b", "redis://h/0?x=a@b"); /* not a userinfo '@' */
    redacted_is("sqlite:/var/lib/a@b.db", "sqlite:/var/lib/a@b.db");
    /* a password holding '@' is hidden whole */
    redacted_is("redis://:hun@ter2@h:6379/0", "redis://***@h:6379/0");
    /* the same function serves wechat_base (a proxy's credentials) */
    redacted_is("http://user:s3cretpw@127.0.0.1:2021", "http://***@127.0.0.1:2021");
    redacted_is("https://api.weixin.qq.com", "https://api.weixin.qq.com");
    /* Bounded by cap, still terminated, never the password. */
    char small[12];
    store_url_redacted("redis://:hunter2@127.0.0.1:6379/1", small, sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_null(strstr(small, "hunter"));
}

static void test_url_shared(void **state)
{
    (void)state;
    assert_true(store_url_shared("redis://127.0.0.1:6379/0"));
    assert_true(store_url_shared("redis+unix:///run/redis.sock"));
    assert_false(store_url_shared("sqlite:/var/lib/wxlogin.db"));
    assert_false(store_url_shared("rediss://h"));
    assert_false(store_url_shared("memcached://x"));
    assert_false(store_url_shared(""));
}

static void test_shared_new_error_never_contains_password(void **state)
{
    (void)state;
    struct store_config cfg = {
        .url = "redis://:hunter2@127.0.0.1:notaport/0", .timeout_ms = 100, .master_key = master};
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(store_shared_new(&cfg, &sh, err), -1);
    assert_null(sh);
    assert_true(err[0] != '\0');
    assert_null(strstr(err, "hunter2"));
}

/* ---- main ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

#define ON_SQLITE(t) cmocka_unit_test_setup_teardown(t, setup_sqlite, teardown)
#define ON_CACHE(t) cmocka_unit_test_setup_teardown(t, setup_cache, teardown)
#define ON_REDIS(t) cmocka_unit_test_setup_teardown(t, setup_redis, teardown)
#define CONTRACT(ON)                                                                               \
    ON(test_ping), ON(test_login_then_session), ON(test_unknown_other_app_and_expired_not_found),  \
        ON(test_session_of_any_app), ON(test_live_means_expires_at_after_now), ON(test_delete),    \
        ON(test_upsert_keeps_previous_key_and_unionid), ON(test_put_session_for_existing_user),    \
        ON(test_session_reports_users_current_unionid), ON(test_keys_need_their_master_key),       \
        ON(test_session_key_bounds), ON(test_purge_spares_live_sessions),                          \
        ON(test_many_logins_in_flight_all_complete),                                               \
        ON(test_callback_may_start_next_operation_in_its_slot),                                    \
        ON(test_cancelled_operations_never_call_back),                                             \
        ON(test_cancelled_operations_then_close_leak_nothing),                                     \
        ON(test_close_with_operations_in_flight_calls_nothing_back)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    bool have_redis = access(REDIS_BIN, X_OK) == 0;
    if (have_redis)
        start_redis(); /* before any thread exists; it starts while SQLite runs */

    const struct CMUnitTest general[] = {
        cmocka_unit_test(test_store_owner_new),
        cmocka_unit_test(test_url_check),
        cmocka_unit_test(test_url_redacted),
        cmocka_unit_test(test_url_shared),
        cmocka_unit_test(test_shared_new_error_never_contains_password),
        cmocka_unit_test(test_unreachable_redis_answers_error),
    };
    const struct CMUnitTest sqlite_tests[] = {
        CONTRACT(ON_SQLITE),
        ON_SQLITE(test_one_process_store_has_no_claims_or_lease),
    };
    const struct CMUnitTest cache_tests[] = {
        CONTRACT(ON_CACHE),
        ON_CACHE(test_one_process_store_has_no_claims_or_lease),
    };
    const struct CMUnitTest redis_tests[] = {
        CONTRACT(ON_REDIS),
        ON_REDIS(test_shared_store_has_claims_and_lease),
        ON_REDIS(test_code_claims),
        ON_REDIS(test_claim_release_only_by_its_owner),
        ON_REDIS(test_claims_lapse_and_outcomes_expire),
        ON_REDIS(test_claims_bound_to_their_app),
        ON_REDIS(test_lease_take_publish_read),
        ON_REDIS(test_lease_invalidate_is_compare_and_swap),
        ON_REDIS(test_lease_lapses_and_is_per_app),
        ON_REDIS(test_cancelled_claim_and_lease_never_call_back),
        ON_REDIS(test_redis_keys_sealed_at_rest),
        ON_REDIS(test_redis_survives_script_flush),
        ON_REDIS(test_limit_buckets),
        ON_REDIS(test_limit_keys_expire_when_full),
        ON_REDIS(test_cancelled_limit_take_never_calls_back),
    };
    int failed = cmocka_run_group_tests_name("store: URLs and helpers", general, NULL, NULL);
    failed += cmocka_run_group_tests_name("store on SQLite", sqlite_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("store on SQLite with the session cache", cache_tests,
                                          NULL, NULL);
    if (!have_redis) {
        fprintf(stderr, "SKIPPED: the store suite on Redis: %s is not installed\n", REDIS_BIN);
    } else if (redis_pid <= 0 || !redis_answers()) {
        fprintf(stderr, "FAILED: %s did not start on 127.0.0.1:%d\n", REDIS_BIN, redis_port);
        failed++;
    } else {
        failed += cmocka_run_group_tests_name("store on Redis", redis_tests, NULL, NULL);
    }
    stop_redis();
    if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        failed++;
    return failed;
}
