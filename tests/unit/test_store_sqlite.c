/*
 * Unit tests for the SQLite store (src/store/sqlite.c) through store/store.h: logins and
 * sessions, the user upsert rules, expiry and purging, schema migration, one process per
 * database file (a second process is refused), group commit (many logins in flight, from
 * several worker threads, durable once answered even if the process is killed), sealing at
 * rest, and the store noticing that its database file was deleted or replaced under it.
 *
 * Each test gets a fresh temporary directory (mkdtemp) holding t.db, opened as
 * store_shared_new("sqlite:<dir>/t.db") plus one worker store on the test's loop, with no
 * session cache (test_store_cache.c covers it); teardown closes both and removes every file.
 * Operations complete through the writer thread and a post to the worker's loop, so every
 * helper runs the loop until its callback ran, then checks it ran exactly once. The database
 * holds an EXCLUSIVE lock while open, so the tests inspect and tamper with it through sqlite3
 * directly only while the store is closed. The second-process tests run this binary again
 * (exec, see main) so that only the file lock can tell the two apart. Every test arms an alarm
 * first.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
#define NOW 1700000000
#define HOUR 3600
#define KEY_A "QUFBQUFBQUFBQUFBQUFBQQ=="
#define KEY_B "QkJCQkJCQkJCQkJCQkJCQg=="
#define KEY_C "Q0NDQ0NDQ0NDQ0NDQ0NDQw=="
/* The number of migrations in store/sqlite.c. */
#define SCHEMA_LATEST 3

extern char **environ;

static const uint8_t master[CRYPTO_KEY_LEN] = {0x6d, 0x61, 0x73, 0x74, 0x65, 0x72, 0x2d, 0x6b};

/* A worker: its loop and its store. */
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

/* ---- callbacks and the loop ---- */

static int finish(struct worker *w, struct cap *c)
{
    /* Either it answered at once, or it holds its slot until it does. */
    assert_int_equal(async_pending(&c->slot), c->calls == 0);
    await_all(w->loop, c, 1);
    return c->status;
}

/* ---- synchronous wrappers ---- */

static int ping(struct worker *w)
{
    struct cap c = {.loop = w->loop};
    store_ping(w->st, &c.slot, on_done, &c);
    return finish(w, &c);
}

static void start_login_at(struct worker *w, struct cap *c, const char *appid, const char *openid,
                           const char *unionid, const char *key, const uint8_t *hash,
                           int64_t expires_at, int64_t now)
{
    cap_start_login(w->st, w->loop, c, appid, openid, unionid, key, hash, expires_at, now);
}

static int login_at(struct worker *w, const char *appid, const char *openid, const char *unionid,
                    const char *key, const uint8_t *hash, int64_t expires_at, int64_t now)
{
    struct cap c = {0};
    start_login_at(w, &c, appid, openid, unionid, key, hash, expires_at, now);
    return finish(w, &c);
}

static int login(struct worker *w, const char *openid, const char *unionid, const char *key,
                 const uint8_t *hash, int64_t expires_at)
{
    return login_at(w, APPID, openid, unionid, key, hash, expires_at, NOW);
}

static int put_session(struct worker *w, const uint8_t *hash, const char *appid, const char *openid,
                       int64_t expires_at)
{
    struct cap c = {.loop = w->loop};
    store_put_session(w->st, &c.slot, hash, appid, openid, expires_at, NOW, on_done, &c);
    return finish(w, &c);
}

/* Returns the status; *s is written on STORE_OK (and the callback had a record iff OK). */
static int get_session_of(struct worker *w, const char *appid, const uint8_t *hash, int64_t now,
                          struct store_session *s)
{
    struct cap c = {.loop = w->loop};
    store_get_session(w->st, &c.slot, appid, hash, now, on_session, &c);
    int status = finish(w, &c);
    assert_int_equal(c.has, status == STORE_OK);
    if (status == STORE_OK && s != NULL)
        *s = c.s;
    return status;
}

static int get_session(struct worker *w, const uint8_t *hash, int64_t now, struct store_session *s)
{
    return get_session_of(w, APPID, hash, now, s);
}

static int delete_session_of(struct worker *w, const char *appid, const uint8_t *hash)
{
    struct cap c = {.loop = w->loop};
    cap_delete_session(w->st, &c, appid, hash);
    return finish(w, &c);
}

static int delete_session(struct worker *w, const uint8_t *hash)
{
    return delete_session_of(w, APPID, hash);
}

static int get_user(struct worker *w, const char *appid, const char *openid, struct store_user *u)
{
    struct cap c = {.loop = w->loop};
    store_get_user(w->st, &c.slot, appid, openid, on_user, &c);
    int status = finish(w, &c);
    assert_int_equal(c.has, status == STORE_OK);
    if (status == STORE_OK && u != NULL)
        *u = c.u;
    return status;
}

static int purge(struct worker *w, int64_t now, long limit, long *count)
{
    struct cap c = {.loop = w->loop, .count = -1};
    store_purge_expired(w->st, &c.slot, now, limit, on_count, &c);
    int status = finish(w, &c);
    *count = c.count;
    return status;
}

/* ---- opening and closing ---- */

/* user_retention_s of the stores the fixture opens (a test sets it, then reopens). */
static long retention_s;

static int shared_new(const char *url, struct store_shared **sh, char err[STORE_ERR_MAX])
{
    struct store_config cfg = {
        .url = url, .timeout_ms = 1000, .master_key = master, .user_retention_s = retention_s};
    return store_shared_new(&cfg, sh, err);
}

static int open_store(struct fixture *f)
{
    char err[STORE_ERR_MAX] = "";
    if (shared_new(f->url, &f->sh, err) != 0 || store_open(f->sh, f->w.loop, &f->w.st, err) != 0) {
        fprintf(stderr, "opening %s: %s\n", f->url, err);
        return -1;
    }
    return 0;
}

/* Closes the fixture's store (so a test can look at the file, tamper with it or reopen it). */
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
    snprintf(f->dir, sizeof(f->dir), "/tmp/wxlogin-test-store-sqlite-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    f->w.loop = loop_new();
    if (f->w.loop == NULL)
        return -1;
    alarm(WATCHDOG_S);
    return open_store(f);
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

/* ---- direct SQLite access (store closed) ---- */

static long long sql_long(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    long long v = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Closes the store, asks the database, opens the store again. */
static long long count_closed(struct fixture *f, const char *sql)
{
    close_store(f);
    long long v = sql_long(f->path, sql);
    assert_int_equal(open_store(f), 0);
    return v;
}

/* ---- a second process ---- */

/* The child's side: opens url as a wxlogin process would, prints what happened. */
static int second_process(const char *url)
{
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    if (shared_new(url, &sh, err) == 0) {
        store_shared_free(sh);
        printf("opened");
        return 0;
    }
    printf("%s", err);
    return 1;
}

/* The child's side: a login, and the process is killed as soon as it completed. */
static int login_then_die(const char *url)
{
    struct fixture f = {.w.loop = loop_new()};
    snprintf(f.url, sizeof(f.url), "%s", url);
    if (f.w.loop == NULL || open_store(&f) != 0)
        return 2;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_durable", h);
    struct cap c = {0};
    start_login_at(&f.w, &c, APPID, "openid-durable", "unionid-durable", KEY_A, h, NOW + HOUR, NOW);
    if (!run_until_answered(f.w.loop, &c, 1) || c.status != STORE_OK)
        return 3;
    kill(getpid(), SIGKILL);
    return 4;
}

/* Runs this test binary again as a fresh process (exec, so it shares no SQLite state with this
 * one) that opens url; its exit status, and what it printed in out. */
static int run_second_process(const char *mode, const char *url, char *out, size_t cap)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    posix_spawn_file_actions_addclose(&fa, p[0]);
    posix_spawn_file_actions_addclose(&fa, p[1]);
    char *argv[] = {"test_store_sqlite", (char *)mode, (char *)url, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    assert_int_equal(rc, 0);
    size_t got = 0;
    ssize_t n;
    while (got < cap - 1 && (n = read(p[0], out + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = '\0';
    close(p[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static int open_in_second_process(const char *url, char *out, size_t cap)
{
    int status = run_second_process("--second-process", url, out, cap);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* ---- tests ---- */

static void test_ping_ok(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(f->w.st->ops->name, "sqlite");
    assert_int_equal(ping(&f->w), STORE_OK);
    assert_false(f->w.st->ops->broken(f->w.st));
}

static void test_login_with_token_then_get_session_finds_user(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, h, NOW + HOUR), STORE_OK);

    struct store_session s;
    memset(&s, 0xa5, sizeof(s));
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.appid, APPID);
    assert_string_equal(s.openid, "openid-1");
    assert_string_equal(s.unionid, "unionid-1");
    assert_int_equal(s.expires_at, NOW + HOUR);
}

static void test_get_session_without_unionid_reports_empty(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    struct store_session s;
    memset(&s, 0xa5, sizeof(s));
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.unionid, "");
}

static void test_get_session_with_other_hash_is_not_found(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN], other[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, h, NOW + HOUR), STORE_OK);
    memcpy(other, h, sizeof(other));
    other[CRYPTO_HASH_LEN - 1] ^= 1;
    assert_int_equal(get_session(&f->w, other, NOW, NULL), STORE_NOT_FOUND);
}

static void test_get_session_expired_is_not_found(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + 10), STORE_OK);
    assert_int_equal(get_session(&f->w, h, NOW + 9, NULL), STORE_OK);
    /* Live means expires_at > now: at expires_at it is already gone. */
    assert_int_equal(get_session(&f->w, h, NOW + 10, NULL), STORE_NOT_FOUND);
    assert_int_equal(get_session(&f->w, h, NOW + 11, NULL), STORE_NOT_FOUND);
}

static void test_delete_session_then_not_found_and_again_not_found(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    assert_int_equal(delete_session(&f->w, h), STORE_OK);
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_NOT_FOUND);
    assert_int_equal(delete_session(&f->w, h), STORE_NOT_FOUND);
    /* The user outlives the session. */
    assert_int_equal(get_user(&f->w, APPID, "openid-1", NULL), STORE_OK);
}

static void test_delete_session_keeps_other_sessions(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h1);
    token_hash("wxl_token-2", h2);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h1, NOW + HOUR), STORE_OK);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h2, NOW + HOUR), STORE_OK);
    assert_int_equal(delete_session(&f->w, h1), STORE_OK);
    assert_int_equal(get_session(&f->w, h2, NOW, NULL), STORE_OK);
}

static void test_login_without_token_creates_user_only(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_B, NULL, 0), STORE_OK);

    struct store_user got;
    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.appid, APPID);
    assert_string_equal(got.openid, "openid-1");
    assert_string_equal(got.unionid, "unionid-1");
    assert_string_equal(got.session_key, KEY_B);
    assert_string_equal(got.prev_session_key, "");
    assert_int_equal(got.prev_replaced_at, 0);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM sessions"), 0);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM users"), 1);
}

static void test_get_user_unknown_is_not_found(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(&f->w, "openid-1", "", KEY_B, NULL, 0), STORE_OK);
    assert_int_equal(get_user(&f->w, APPID, "openid-2", NULL), STORE_NOT_FOUND);
    assert_int_equal(get_user(&f->w, OTHER, "openid-1", NULL), STORE_NOT_FOUND);
}

static void test_second_login_replaces_session_key_and_keeps_unionid(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h1);
    token_hash("wxl_token-2", h2);
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, h1, NOW + HOUR), STORE_OK);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_B, h2, NOW + HOUR), STORE_OK);

    struct store_user got;
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_B);
    assert_string_equal(got.unionid, "unionid-1");

    struct store_session s;
    assert_int_equal(get_session(&f->w, h2, NOW, &s), STORE_OK);
    assert_string_equal(s.unionid, "unionid-1");
    assert_int_equal(count_closed(f, "SELECT count(*) FROM users"), 1);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM sessions"), 2);
}

static void test_second_login_with_new_unionid_replaces_it(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, NULL, 0), STORE_OK);
    assert_int_equal(login(&f->w, "openid-1", "unionid-2", KEY_B, NULL, 0), STORE_OK);
    struct store_user got;
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.unionid, "unionid-2");
}

static void test_users_unique_per_appid_and_openid(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(login_at(&f->w, APPID, "openid-1", "", KEY_A, NULL, 0, NOW), STORE_OK);
        assert_int_equal(login_at(&f->w, APPID, "openid-2", "", KEY_B, NULL, 0, NOW), STORE_OK);
        assert_int_equal(login_at(&f->w, OTHER, "openid-1", "", KEY_C, NULL, 0, NOW), STORE_OK);
    }
    assert_int_equal(count_closed(f, "SELECT count(*) FROM users"), 3);
    struct store_user got;
    assert_int_equal(get_user(&f->w, OTHER, "openid-1", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_C);
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_A);
}

static void test_login_with_duplicate_token_hash_fails_atomically(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, h, NOW + HOUR), STORE_OK);

    /* The session insert fails, so the user upsert of the same login must not stick. */
    assert_int_equal(login(&f->w, "openid-1", "unionid-2", KEY_B, h, NOW + HOUR), STORE_ERROR);
    assert_int_equal(login(&f->w, "openid-2", "", KEY_C, h, NOW + HOUR), STORE_ERROR);
    struct store_user got;
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_A);
    assert_string_equal(got.prev_session_key, "");
    assert_string_equal(got.unionid, "unionid-1");
    assert_int_equal(get_user(&f->w, APPID, "openid-2", NULL), STORE_NOT_FOUND);

    /* ... and the store is usable afterwards (the savepoint was rolled back). */
    assert_int_equal(login(&f->w, "openid-2", "", KEY_C, NULL, 0), STORE_OK);
    assert_int_equal(get_user(&f->w, APPID, "openid-2", NULL), STORE_OK);
}

static void test_put_session_for_existing_user(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, NULL, 0), STORE_OK);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-put", h);
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_NOT_FOUND);
    assert_int_equal(put_session(&f->w, h, APPID, "openid-1", NOW + HOUR), STORE_OK);

    struct store_session s;
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.appid, APPID);
    assert_string_equal(s.openid, "openid-1");
    assert_string_equal(s.unionid, "unionid-1");
    assert_int_equal(s.expires_at, NOW + HOUR);
}

static void test_purge_expired_respects_limit_and_spares_live(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, NULL, 0), STORE_OK);
    uint8_t h[8][CRYPTO_HASH_LEN];
    char tok[32];
    /* 5 expired (the last exactly at now), 3 live. */
    const int64_t exp[8] = {NOW - 500, NOW - 400, NOW - 300, NOW - 1,
                            NOW,       NOW + 1,   NOW + 60,  NOW + HOUR};
    for (int i = 0; i < 8; i++) {
        snprintf(tok, sizeof(tok), "wxl_purge-%d", i);
        token_hash(tok, h[i]);
        assert_int_equal(put_session(&f->w, h[i], APPID, "openid-1", exp[i]), STORE_OK);
    }
    long n = -1;
    assert_int_equal(purge(&f->w, NOW, 3, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM sessions"), 5);
    assert_int_equal(purge(&f->w, NOW, 3, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(purge(&f->w, NOW, 3, &n), STORE_OK);
    assert_int_equal(n, 0);
    for (int i = 5; i < 8; i++)
        assert_int_equal(get_session(&f->w, h[i], NOW, NULL), STORE_OK);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM sessions"), 3);
    assert_int_equal(count_closed(f, "SELECT min(expires_at) FROM sessions"), NOW + 1);
}

static void test_purge_with_nothing_expired_reports_zero(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    long n = -1;
    assert_int_equal(purge(&f->w, NOW, 100, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_OK);
}

static int refresh_at(struct worker *w, const uint8_t *old, const uint8_t *next, int64_t now,
                      long max_age, struct store_session *out)
{
    struct cap c = {.loop = w->loop};
    struct store_refresh in = {.appid = APPID,
                               .old_hash = old,
                               .new_hash = next,
                               .now = now,
                               .grace_s = 60,
                               .ttl_s = HOUR,
                               .max_age_s = max_age};
    store_refresh(w->st, &c.slot, &in, on_session, &c);
    int status = finish(w, &c);
    if (out != NULL && status == STORE_OK)
        *out = c.s;
    return status;
}

static int revoke_user(struct worker *w, enum store_revoke_what what, const char *openid,
                       long *count)
{
    struct cap c = {.loop = w->loop};
    struct store_revoke in = {
        .what = what, .appid = APPID, .openid = openid, .reason = "test", .now = NOW};
    store_revoke(w->st, &c.slot, &in, on_revoked, &c);
    int status = finish(w, &c);
    if (count != NULL)
        *count = c.count;
    return status;
}

/* A refresh makes the chain's next token once; the old one keeps a grace period; a repeat
 * answers the same successor; the chain stops at its max age. */
static void test_refresh_chain(void **state)
{
    struct fixture *f = *state;
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN], h3[CRYPTO_HASH_LEN];
    token_hash("wxl_r1", h1);
    token_hash("wxl_r2", h2);
    token_hash("wxl_r3", h3);
    assert_int_equal(login(&f->w, "o-r", "u-r", KEY_A, h1, NOW + HOUR), STORE_OK);
    struct store_session s;
    assert_int_equal(refresh_at(&f->w, h1, h2, NOW + 10, 2 * HOUR, &s), STORE_OK);
    assert_string_equal(s.openid, "o-r");
    assert_string_equal(s.unionid, "u-r");
    assert_int_equal(s.expires_at, NOW + 10 + HOUR);
    /* the same refresh again: the same successor; another successor: refused */
    assert_int_equal(refresh_at(&f->w, h1, h2, NOW + 20, 2 * HOUR, NULL), STORE_OK);
    assert_int_equal(refresh_at(&f->w, h1, h3, NOW + 20, 2 * HOUR, NULL), STORE_NOT_FOUND);
    /* the old token lives out its grace (60 s from the refresh) and no longer */
    assert_int_equal(get_session(&f->w, h1, NOW + 69, NULL), STORE_OK);
    assert_int_equal(get_session(&f->w, h1, NOW + 70, NULL), STORE_NOT_FOUND);
    assert_int_equal(refresh_at(&f->w, h1, h2, NOW + 70, 2 * HOUR, NULL), STORE_NOT_FOUND);
    /* the next token's lifetime is cut to the chain's max age, and then it ends */
    assert_int_equal(refresh_at(&f->w, h2, h3, NOW + HOUR, 2 * HOUR, &s), STORE_OK);
    assert_int_equal(s.expires_at, NOW + 2 * HOUR);
    assert_int_equal(refresh_at(&f->w, h3, h1, NOW + 2 * HOUR, 2 * HOUR, NULL), STORE_NOT_FOUND);
    /* one session all along */
    long n = 0;
    assert_int_equal(revoke_user(&f->w, STORE_REVOKE_USER, "o-r", &n), STORE_OK);
    assert_int_equal(n, 1);
}

/* A ban refuses logins (nothing written) and ends the sessions; unban lifts it. */
static void test_ban_refuses_login_and_unban_lifts_it(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_ban", h);
    assert_int_equal(login(&f->w, "o-b", "", KEY_A, h, NOW + HOUR), STORE_OK);
    long n = 0;
    assert_int_equal(revoke_user(&f->w, STORE_BAN, "o-b", &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_NOT_FOUND);
    assert_int_equal(login(&f->w, "o-b", "", KEY_B, h, NOW + HOUR), STORE_BANNED);
    struct store_user u;
    assert_int_equal(get_user(&f->w, APPID, "o-b", &u), STORE_OK);
    assert_string_equal(u.session_key, KEY_A); /* the refused login wrote nothing */
    assert_int_equal(revoke_user(&f->w, STORE_UNBAN, "o-b", NULL), STORE_OK);
    assert_int_equal(revoke_user(&f->w, STORE_UNBAN, "o-b", NULL), STORE_NOT_FOUND);
    assert_int_equal(login(&f->w, "o-b", "", KEY_B, h, NOW + HOUR), STORE_OK);
}

/* With user_retention, the purge takes users not seen since then (and their sessions). */
static void test_purge_takes_users_past_their_retention(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login_at(&f->w, APPID, "o-old", "", KEY_A, NULL, 0, NOW - 1000), STORE_OK);
    assert_int_equal(login_at(&f->w, APPID, "o-new", "", KEY_A, NULL, 0, NOW - 10), STORE_OK);
    long n = -1;
    assert_int_equal(purge(&f->w, NOW, 100, &n), STORE_OK);
    assert_int_equal(n, 0); /* no retention: users are kept */
    close_store(f);
    retention_s = 500;
    int rc = open_store(f);
    retention_s = 0;
    assert_int_equal(rc, 0);
    assert_int_equal(purge(&f->w, NOW, 100, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(get_user(&f->w, APPID, "o-old", NULL), STORE_NOT_FOUND);
    assert_int_equal(get_user(&f->w, APPID, "o-new", NULL), STORE_OK);
}

/* Erasure leaves no byte of the openid in the database files. */
static void test_erase_leaves_no_trace_in_the_files(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_erase", h);
    token_hash("wxl_erase2", h2);
    const char *id = "o-erase-me-7f3a9c";
    assert_int_equal(login(&f->w, id, "u-erase-me-7f3a9c", KEY_A, h, NOW + HOUR), STORE_OK);
    assert_int_equal(login(&f->w, id, "u-erase-me-7f3a9c", KEY_B, h2, NOW + HOUR), STORE_OK);
    assert_int_equal(revoke_user(&f->w, STORE_BAN, id, NULL), STORE_OK);
    assert_int_equal(revoke_user(&f->w, STORE_ERASE, id, NULL), STORE_OK);
    assert_int_equal(revoke_user(&f->w, STORE_ERASE, id, NULL), STORE_NOT_FOUND);
    close_store(f);
    const char *files[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[sizeof(f->path) + 16];
        snprintf(p, sizeof(p), "%s%s", f->path, files[i]);
        FILE *fp = fopen(p, "rb");
        if (fp == NULL)
            continue;
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof(buf), fp);
        fclose(fp);
        assert_null(memmem(buf, n, "erase-me-7f3a9c", 15));
    }
    assert_int_equal(open_store(f), 0);
}

static void test_migration_creates_latest_schema_version(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM schema_version"), 1);
    assert_int_equal(sql_long(f->path, "SELECT version FROM schema_version"), SCHEMA_LATEST);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                                       " AND name IN ('users', 'sessions')"),
                     2);
}

static void test_reopen_existing_db_keeps_data_and_version(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "unionid-1", KEY_A, h, NOW + HOUR), STORE_OK);
    close_store(f);
    assert_int_equal(open_store(f), 0);

    struct store_session s;
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.unionid, "unionid-1");
    struct store_user u;
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &u), STORE_OK);
    assert_string_equal(u.session_key, KEY_A);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM schema_version"), 1);
    assert_int_equal(count_closed(f, "SELECT version FROM schema_version"), SCHEMA_LATEST);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = '\0';
}

/* A database written by the first schema (before the previous-key columns) is migrated
 * forward and keeps its users (their sealed keys still open) and sessions. */
static void test_migration_from_version_1_keeps_data(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    char side[PATH_MAX + 8];
    snprintf(side, sizeof(side), "%s-wal", f->path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", f->path);
    unlink(side);
    FILE *empty = fopen(f->path, "w"); /* an empty file is an empty database */
    assert_non_null(empty);
    fclose(empty);

    uint8_t sealed[STORE_SEALED_MAX], h[CRYPTO_HASH_LEN];
    int n = store_seal(master, APPID, "old-user", KEY_A, sealed);
    assert_true(n > 0);
    token_hash("wxl_old-token", h);
    char sealed_hex[2 * STORE_SEALED_MAX + 1], h_hex[2 * CRYPTO_HASH_LEN + 1], sql[2048];
    hex(sealed, (size_t)n, sealed_hex);
    hex(h, sizeof(h), h_hex);
    snprintf(sql, sizeof(sql),
             "CREATE TABLE schema_version (version INTEGER NOT NULL);"
             "INSERT INTO schema_version VALUES (1);"
             "CREATE TABLE users (appid TEXT NOT NULL, openid TEXT NOT NULL, unionid TEXT,"
             " session_key BLOB NOT NULL, created_at INTEGER NOT NULL,"
             " updated_at INTEGER NOT NULL, PRIMARY KEY (appid, openid)) WITHOUT ROWID;"
             "CREATE TABLE sessions (token_hash BLOB PRIMARY KEY, appid TEXT NOT NULL,"
             " openid TEXT NOT NULL, created_at INTEGER NOT NULL,"
             " expires_at INTEGER NOT NULL) WITHOUT ROWID;"
             "CREATE INDEX sessions_expiry ON sessions (expires_at);"
             "INSERT INTO users VALUES ('" APPID "', 'old-user', 'u1', x'%s', 1, 1);"
             "INSERT INTO sessions VALUES (x'%s', '" APPID "', 'old-user', 1, %d);",
             sealed_hex, h_hex, NOW + HOUR);
    sql_exec(f->path, sql);

    assert_int_equal(open_store(f), 0);
    struct store_user got;
    assert_int_equal(get_user(&f->w, APPID, "old-user", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_A);
    assert_string_equal(got.prev_session_key, "");
    assert_int_equal(got.prev_replaced_at, 0);
    assert_string_equal(got.unionid, "u1");
    struct store_session s;
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.openid, "old-user");
    assert_string_equal(s.unionid, "u1");
    /* The new columns work. */
    assert_int_equal(login(&f->w, "old-user", "", KEY_B, NULL, 0), STORE_OK);
    assert_int_equal(get_user(&f->w, APPID, "old-user", &got), STORE_OK);
    assert_string_equal(got.prev_session_key, KEY_A);
    assert_int_equal(got.prev_replaced_at, NOW);
    assert_int_equal(count_closed(f, "SELECT version FROM schema_version"), SCHEMA_LATEST);
}

/* Tokens are bound to their app: another app's lookup or delete does not find them. */
static void test_session_bound_to_its_app(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-bound", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    assert_int_equal(get_session_of(&f->w, "wxotherapp00000000", h, NOW, NULL), STORE_NOT_FOUND);
    assert_int_equal(delete_session_of(&f->w, "wxotherapp00000000", h), STORE_NOT_FOUND);
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_OK);
}

/* A re-login keeps the key it replaces, with the time, for the decrypt grace period. */
static void test_upsert_keeps_previous_key_and_time(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login_at(&f->w, APPID, "openid-1", "", KEY_A, NULL, 0, NOW), STORE_OK);
    struct store_user got;
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.prev_session_key, "");

    assert_int_equal(login_at(&f->w, APPID, "openid-1", "", KEY_B, NULL, 0, NOW + 7), STORE_OK);
    assert_int_equal(get_user(&f->w, APPID, "openid-1", &got), STORE_OK);
    assert_string_equal(got.session_key, KEY_B);
    assert_string_equal(got.prev_session_key, KEY_A);
    assert_int_equal(got.prev_replaced_at, NOW + 7);
}

/* Was "two handles on one file share data". Now one process holds the file: its workers each
 * open a store from the one store_shared, and see each other's writes. */
static void test_two_worker_stores_of_one_shared_share_data(void **state)
{
    struct fixture *f = *state;
    struct worker w2 = {.loop = loop_new()};
    assert_non_null(w2.loop);
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(store_open(f->sh, w2.loop, &w2.st, err), 0);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    assert_int_equal(get_session(&w2, h, NOW, NULL), STORE_OK);
    assert_int_equal(delete_session(&w2, h), STORE_OK);
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_NOT_FOUND);
    assert_int_equal(login(&w2, "openid-2", "", KEY_B, NULL, 0), STORE_OK);
    struct store_user u;
    assert_int_equal(get_user(&f->w, APPID, "openid-2", &u), STORE_OK);
    assert_string_equal(u.session_key, KEY_B);
    store_close(w2.st);
    loop_free(w2.loop);
    /* The first worker's store is unaffected by the second's close. */
    assert_int_equal(ping(&f->w), STORE_OK);
}

/* The real contract behind the change: a second wxlogin process on the same file is refused
 * at open, with an error naming the file and saying it is in use. The child is a fresh
 * process (exec), so only the file lock can tell it. */
static void test_second_process_is_refused_while_open(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    char out[STORE_ERR_MAX + 64];
    assert_int_equal(open_in_second_process(f->url, out, sizeof(out)), 1);
    assert_non_null(strstr(out, f->path));
    assert_non_null(strstr(out, "in use"));
    /* The refusal changed nothing here. */
    assert_int_equal(get_session(&f->w, h, NOW, NULL), STORE_OK);
    assert_int_equal(login(&f->w, "openid-2", "", KEY_B, NULL, 0), STORE_OK);
}

/* The lock goes with the store: once closed, another process may open the file. */
static void test_second_process_may_open_after_close(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    char out[STORE_ERR_MAX + 64];
    assert_int_equal(open_in_second_process(f->url, out, sizeof(out)), 0);
    assert_string_equal(out, "opened");
    assert_int_equal(open_store(f), 0);
}

/* A login completes only once it is durable against a crash of the process: one killed right
 * after its login answered OK leaves the login in the database (in its WAL, recovered here). */
static void test_completed_login_survives_the_process_being_killed(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    char out[64];
    int status = run_second_process("--login-then-die", f->url, out, sizeof(out));
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("the child did not complete its login (exit %d)", WEXITSTATUS(status));
    assert_int_equal(open_store(f), 0);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_durable", h);
    struct store_session s;
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.openid, "openid-durable");
    assert_string_equal(s.unionid, "unionid-durable");
    struct store_user u;
    assert_int_equal(get_user(&f->w, APPID, "openid-durable", &u), STORE_OK);
    assert_string_equal(u.session_key, KEY_A);
}

/* Within one process too, a second store_shared on the same file is refused. */
static void test_second_shared_in_same_process_is_refused(void **state)
{
    struct fixture *f = *state;
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(shared_new(f->url, &sh, err), -1);
    assert_null(sh);
    assert_non_null(strstr(err, f->path));
    assert_non_null(strstr(err, "in use"));
    assert_int_equal(ping(&f->w), STORE_OK);
}

static void test_newer_schema_version_is_refused(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    sql_exec(f->path, "UPDATE schema_version SET version = 999");

    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(shared_new(f->url, &sh, err), -1);
    assert_null(sh);
    assert_non_null(strstr(err, "999"));
    /* The refusal changed nothing. */
    assert_int_equal(sql_long(f->path, "SELECT version FROM schema_version"), 999);
}

static void test_not_a_database_is_refused(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    FILE *junk = fopen(f->path, "w");
    assert_non_null(junk);
    for (int i = 0; i < 512; i++)
        fputs("this is not an SQLite database\n", junk);
    fclose(junk);
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(shared_new(f->url, &sh, err), -1);
    assert_null(sh);
    assert_non_null(strstr(err, f->path));
}

static void check_all_ops_fail(struct fixture *f)
{
    struct worker *w = &f->w;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    long n;
    assert_int_equal(ping(w), STORE_ERROR);
    assert_int_equal(get_session(w, h, NOW, NULL), STORE_ERROR);
    assert_int_equal(login(w, "openid-9", "", KEY_A, h, NOW + HOUR), STORE_ERROR);
    assert_int_equal(put_session(w, h, APPID, "openid-1", NOW + HOUR), STORE_ERROR);
    assert_int_equal(delete_session(w, h), STORE_ERROR);
    assert_int_equal(get_user(w, APPID, "openid-1", NULL), STORE_ERROR);
    assert_int_equal(purge(w, NOW, 10, &n), STORE_ERROR);
    assert_true(w->st->ops->broken(w->st));
}

static void test_error_after_db_file_deleted(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    assert_int_equal(unlink(f->path), 0);
    check_all_ops_fail(f);
}

static void test_error_after_db_file_moved_away(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    char moved[PATH_MAX + 16];
    snprintf(moved, sizeof(moved), "%s/moved.db", f->dir);
    assert_int_equal(rename(f->path, moved), 0);
    check_all_ops_fail(f);
}

static void test_error_after_db_file_replaced(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);

    /* A valid database of its own (same schema, same session), moved over the open one. */
    char other[PATH_MAX + 16], url2[PATH_MAX + 32], err[STORE_ERR_MAX] = "";
    snprintf(other, sizeof(other), "%s/other.db", f->dir);
    snprintf(url2, sizeof(url2), "sqlite:%s", other);
    struct fixture g = {.w.loop = f->w.loop};
    assert_int_equal(shared_new(url2, &g.sh, err), 0);
    assert_int_equal(store_open(g.sh, g.w.loop, &g.w.st, err), 0);
    assert_int_equal(login(&g.w, "openid-1", "", KEY_A, h, NOW + HOUR), STORE_OK);
    close_store(&g);
    assert_int_equal(rename(other, f->path), 0);

    check_all_ops_fail(f);
}

static void test_unknown_scheme_fails_with_message(void **state)
{
    (void)state;
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(shared_new("memcached://x", &sh, err), -1);
    assert_null(sh);
    assert_true(err[0] != '\0');
}

static void test_empty_sqlite_path_fails_with_message(void **state)
{
    (void)state;
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(shared_new("sqlite:", &sh, err), -1);
    assert_null(sh);
    assert_true(err[0] != '\0');
}

static void test_missing_directory_fails_with_message(void **state)
{
    struct fixture *f = *state;
    struct store_shared *sh = NULL;
    char url[PATH_MAX + 64], err[STORE_ERR_MAX] = "";
    snprintf(url, sizeof(url), "sqlite:%s/no/such/dir/t.db", f->dir);
    assert_int_equal(shared_new(url, &sh, err), -1);
    assert_null(sh);
    assert_non_null(strstr(err, "no/such/dir/t.db"));
}

static void test_sqlite_path_of_url(void **state)
{
    (void)state;
    assert_string_equal(store_sqlite_path("sqlite:/var/lib/wxlogin.db"), "/var/lib/wxlogin.db");
    assert_string_equal(store_sqlite_path("sqlite:rel.db"), "rel.db");
    assert_string_equal(store_sqlite_path("sqlite:"), "");
    assert_null(store_sqlite_path("redis://x"));
    assert_null(store_sqlite_path("redis+unix:///run/redis.sock"));
    assert_null(store_sqlite_path("sqlite"));
}

static void test_close_accepts_null(void **state)
{
    (void)state;
    store_close(NULL);
    store_shared_free(NULL);
}

/* ---- private files ---- */

static unsigned mode_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    return (unsigned)(sb.st_mode & 07777);
}

/* Removes the database and the files beside it (the store closed). */
static void remove_db_files(struct fixture *f)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
}

/* The database holds every openid, unionid and sealed key: it and its -wal are 0600 whatever
 * the umask (SQLite itself would make them 0644). */
static void test_new_database_files_are_0600_whatever_the_umask(void **state)
{
    struct fixture *f = *state;
    static const mode_t umasks[] = {022, 0, 0277};
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof(wal), "%s-wal", f->path);
    for (size_t i = 0; i < sizeof(umasks) / sizeof(umasks[0]); i++) {
        close_store(f);
        remove_db_files(f);
        mode_t old = umask(umasks[i]);
        int rc = open_store(f);
        umask(old);
        assert_int_equal(rc, 0);
        assert_int_equal(mode_of(f->path), 0600);
        uint8_t h[CRYPTO_HASH_LEN];
        token_hash("wxl_private", h);
        assert_int_equal(login(&f->w, "openid-private", "", KEY_A, h, NOW + HOUR), STORE_OK);
        assert_int_equal(mode_of(f->path), 0600);
        assert_int_equal(mode_of(wal), 0600);
    }
}

struct warnings {
    int n;
    char msg[4][STORE_ERR_MAX + 128];
};

static void collect_warning(const char *msg, void *arg)
{
    struct warnings *w = arg;
    if (w->n < 4)
        snprintf(w->msg[w->n], sizeof(w->msg[0]), "%s", msg);
    w->n++;
}

/* Files found readable by others (an older version made them 0644) are tightened, and the
 * operator is told which; the data is still there. */
static void test_existing_wide_files_are_tightened_and_reported(void **state)
{
    struct fixture *f = *state;
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_wide", h);
    assert_int_equal(login(&f->w, "openid-wide", "", KEY_A, h, NOW + HOUR), STORE_OK);
    close_store(f);
    assert_int_equal(chmod(f->path, 0644), 0);
    char shm[PATH_MAX + 8];
    snprintf(shm, sizeof(shm), "%s-shm", f->path);
    FILE *fp = fopen(shm, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(chmod(shm, 0664), 0);

    struct warnings w = {0};
    struct store_config cfg = {.url = f->url,
                               .timeout_ms = 1000,
                               .master_key = master,
                               .warn = collect_warning,
                               .warn_arg = &w};
    char err[STORE_ERR_MAX] = "";
    if (store_shared_new(&cfg, &f->sh, err) != 0)
        fail_msg("reopening: %s", err);
    assert_int_equal(store_open(f->sh, f->w.loop, &f->w.st, err), 0);
    assert_int_equal(mode_of(f->path), 0600);
    assert_int_equal(mode_of(shm), 0600);
    assert_int_equal(w.n, 2);
    assert_non_null(strstr(w.msg[0], f->path));
    assert_non_null(strstr(w.msg[0], "0644"));
    assert_non_null(strstr(w.msg[1], shm));
    struct store_session got;
    assert_int_equal(get_session(&f->w, h, NOW, &got), STORE_OK);

    /* Private already: nothing to say. */
    close_store(f);
    w.n = 0;
    assert_int_equal(store_shared_new(&cfg, &f->sh, err), 0);
    assert_int_equal(store_open(f->sh, f->w.loop, &f->w.st, err), 0);
    assert_int_equal(w.n, 0);
}

/* Session keys are sealed at rest: the file holds a blob bound to its user, never the text. */
static void test_keys_sealed_at_rest(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(login(&f->w, "openid-1", "", KEY_A, NULL, 0), STORE_OK);
    assert_int_equal(login(&f->w, "openid-1", "", KEY_B, NULL, 0), STORE_OK);
    close_store(f);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT session_key, prev_session_key FROM users"
                                        " WHERE appid = '" APPID "' AND openid = 'openid-1'",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    const char *keys[2] = {KEY_B, KEY_A};
    for (int col = 0; col < 2; col++) {
        const uint8_t *blob = sqlite3_column_blob(q, col);
        size_t len = (size_t)sqlite3_column_bytes(q, col);
        assert_int_equal(len, strlen(keys[col]) + CRYPTO_SEAL_OVERHEAD);
        assert_null(memmem(blob, len, keys[col], strlen(keys[col])));
        char out[STORE_KEY_MAX + 1];
        assert_true(store_unseal(master, APPID, "openid-1", blob, len, out));
        assert_string_equal(out, keys[col]);
        assert_false(store_unseal(master, APPID, "openid-2", blob, len, out));
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_int_equal(open_store(f), 0);
}

/* ---- group commit ---- */

#define GROUP 300 /* more than one batch of the writer */

static void start_group(struct worker *w, struct cap *c, int n, int dup_of)
{
    char openid[32], unionid[32], token[32];
    uint8_t h[CRYPTO_HASH_LEN];
    for (int i = 0; i < n; i++) {
        snprintf(openid, sizeof(openid), "openid-g%d", i);
        snprintf(unionid, sizeof(unionid), "unionid-g%d", i);
        snprintf(token, sizeof(token), "wxl_group-%d", i == dup_of ? 3 : i);
        token_hash(token, h);
        start_login_at(w, &c[i], APPID, openid, unionid, i % 2 ? KEY_A : KEY_B, h, NOW + HOUR, NOW);
        assert_int_equal(c[i].calls, 0); /* nothing answers before the loop runs */
        assert_true(async_pending(&c[i].slot));
    }
}

static void check_group_readable(struct worker *w, int n, int skip)
{
    struct cap *c = calloc((size_t)n, sizeof(*c));
    assert_non_null(c);
    char token[32], openid[32];
    uint8_t h[CRYPTO_HASH_LEN];
    for (int i = 0; i < n; i++) {
        snprintf(token, sizeof(token), "wxl_group-%d", i);
        token_hash(token, h);
        c[i].loop = w->loop;
        store_get_session(w->st, &c[i].slot, APPID, h, NOW, on_session, &c[i]);
    }
    await_all(w->loop, c, (size_t)n);
    for (int i = 0; i < n; i++) {
        if (i == skip)
            continue;
        snprintf(openid, sizeof(openid), "openid-g%d", i);
        assert_int_equal(c[i].status, STORE_OK);
        assert_string_equal(c[i].s.openid, openid);
    }
    memset(c, 0, (size_t)n * sizeof(*c));
    for (int i = 0; i < n; i++) {
        snprintf(openid, sizeof(openid), "openid-g%d", i);
        c[i].loop = w->loop;
        store_get_user(w->st, &c[i].slot, APPID, openid, on_user, &c[i]);
    }
    await_all(w->loop, c, (size_t)n);
    for (int i = 0; i < n; i++) {
        if (i == skip)
            continue;
        assert_int_equal(c[i].status, STORE_OK);
        assert_string_equal(c[i].u.session_key, i % 2 ? KEY_A : KEY_B);
    }
    free(c);
}

/* Many logins started before the loop runs all complete OK, are all readable, and are in the
 * database after close and reopen. */
static void test_group_commit_many_logins_all_durable(void **state)
{
    struct fixture *f = *state;
    struct cap *c = calloc(GROUP, sizeof(*c));
    assert_non_null(c);
    start_group(&f->w, c, GROUP, -1);
    await_all(f->w.loop, c, GROUP);
    for (int i = 0; i < GROUP; i++)
        assert_int_equal(c[i].status, STORE_OK);
    free(c);
    check_group_readable(&f->w, GROUP, -1);

    close_store(f);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM users"), GROUP);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM sessions"), GROUP);
    assert_int_equal(open_store(f), 0);
    check_group_readable(&f->w, GROUP, -1);
}

/* A login that fails inside a group (its session's token hash is taken) fails alone and
 * leaves no user behind; the others of its group commit. */
static void test_failing_login_in_a_group_spares_the_others(void **state)
{
    struct fixture *f = *state;
    enum { N = 40, DUP = 25 };
    struct cap c[N];
    memset(c, 0, sizeof(c));
    start_group(&f->w, c, N, DUP);
    await_all(f->w.loop, c, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(c[i].status, i == DUP ? STORE_ERROR : STORE_OK);
    char openid[32];
    snprintf(openid, sizeof(openid), "openid-g%d", DUP);
    assert_int_equal(get_user(&f->w, APPID, openid, NULL), STORE_NOT_FOUND);
    uint8_t h[CRYPTO_HASH_LEN];
    struct store_session s;
    token_hash("wxl_group-3", h);
    assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
    assert_string_equal(s.openid, "openid-g3");
    check_group_readable(&f->w, DUP, -1);
    assert_int_equal(count_closed(f, "SELECT count(*) FROM users"), N - 1);
}

/* Workers on their own threads and loops, all writing at once through the one writer. */
#define THREADS 4
#define PER_THREAD 100

struct thread_job {
    struct store_shared *sh;
    int id;
    bool ok;
    char err[STORE_ERR_MAX];
};

static void *worker_main(void *arg)
{
    struct thread_job *j = arg;
    struct worker w = {.loop = loop_new()};
    struct cap *c = calloc(PER_THREAD, sizeof(*c));
    if (w.loop == NULL || c == NULL || store_open(j->sh, w.loop, &w.st, j->err) != 0)
        goto out;
    char openid[32], token[32];
    uint8_t h[CRYPTO_HASH_LEN];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(openid, sizeof(openid), "openid-t%d-%d", j->id, i);
        snprintf(token, sizeof(token), "wxl_t%d-%d", j->id, i);
        token_hash(token, h);
        start_login_at(&w, &c[i], APPID, openid, "", KEY_A, h, NOW + HOUR, NOW);
    }
    j->ok = run_until_answered(w.loop, c, PER_THREAD);
    for (int i = 0; i < PER_THREAD; i++)
        if (c[i].status != STORE_OK)
            j->ok = false;
out:
    store_close(w.st);
    loop_free(w.loop);
    free(c);
    return NULL;
}

static void test_logins_from_several_worker_threads(void **state)
{
    struct fixture *f = *state;
    pthread_t t[THREADS];
    struct thread_job jobs[THREADS];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < THREADS; i++) {
        jobs[i].sh = f->sh;
        jobs[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        if (!jobs[i].ok)
            fail_msg("worker %d: %s", i, jobs[i].err[0] ? jobs[i].err : "a login failed");
    }
    char token[32];
    uint8_t h[CRYPTO_HASH_LEN];
    struct store_session s;
    for (int i = 0; i < THREADS; i++) {
        for (int k = 0; k < PER_THREAD; k += 9) {
            snprintf(token, sizeof(token), "wxl_t%d-%d", i, k);
            token_hash(token, h);
            assert_int_equal(get_session(&f->w, h, NOW, &s), STORE_OK);
        }
    }
    assert_int_equal(count_closed(f, "SELECT count(*) FROM sessions"), THREADS * PER_THREAD);
}

/* The database remembers the master key's check value: another key is refused with
 * STORE_WRONG_KEY (the caller exits 2), the same key opens it again; the value stored is
 * neither the key nor its hash. */
static void test_another_master_key_is_refused(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    uint8_t other[CRYPTO_KEY_LEN] = {1, 2, 3};
    struct store_config cfg = {.url = f->url, .timeout_ms = 1000, .master_key = other};
    struct store_shared *sh = NULL;
    char err[STORE_ERR_MAX] = "";
    assert_int_equal(store_shared_new(&cfg, &sh, err), STORE_WRONG_KEY);
    assert_null(sh);
    assert_non_null(strstr(err, "different master key"));
    assert_int_equal(open_store(f), 0);
    assert_int_equal(ping(&f->w), STORE_OK);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--second-process") == 0)
        return second_process(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--login-then-die") == 0)
        return login_then_die(argv[2]);
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_ping_ok),
        T(test_another_master_key_is_refused),
        T(test_login_with_token_then_get_session_finds_user),
        T(test_get_session_without_unionid_reports_empty),
        T(test_get_session_with_other_hash_is_not_found),
        T(test_get_session_expired_is_not_found),
        T(test_delete_session_then_not_found_and_again_not_found),
        T(test_delete_session_keeps_other_sessions),
        T(test_login_without_token_creates_user_only),
        T(test_get_user_unknown_is_not_found),
        T(test_second_login_replaces_session_key_and_keeps_unionid),
        T(test_second_login_with_new_unionid_replaces_it),
        T(test_users_unique_per_appid_and_openid),
        T(test_login_with_duplicate_token_hash_fails_atomically),
        T(test_put_session_for_existing_user),
        T(test_purge_expired_respects_limit_and_spares_live),
        T(test_purge_with_nothing_expired_reports_zero),
        T(test_refresh_chain),
        T(test_ban_refuses_login_and_unban_lifts_it),
        T(test_purge_takes_users_past_their_retention),
        T(test_erase_leaves_no_trace_in_the_files),
        T(test_migration_creates_latest_schema_version),
        T(test_reopen_existing_db_keeps_data_and_version),
        T(test_migration_from_version_1_keeps_data),
        T(test_session_bound_to_its_app),
        T(test_upsert_keeps_previous_key_and_time),
        T(test_two_worker_stores_of_one_shared_share_data),
        T(test_second_process_is_refused_while_open),
        T(test_second_process_may_open_after_close),
        T(test_second_shared_in_same_process_is_refused),
        T(test_completed_login_survives_the_process_being_killed),
        T(test_newer_schema_version_is_refused),
        T(test_not_a_database_is_refused),
        T(test_error_after_db_file_deleted),
        T(test_error_after_db_file_moved_away),
        T(test_error_after_db_file_replaced),
        T(test_unknown_scheme_fails_with_message),
        T(test_empty_sqlite_path_fails_with_message),
        T(test_missing_directory_fails_with_message),
        T(test_sqlite_path_of_url),
        T(test_close_accepts_null),
        T(test_new_database_files_are_0600_whatever_the_umask),
        T(test_existing_wide_files_are_tightened_and_reported),
        T(test_keys_sealed_at_rest),
        T(test_group_commit_many_logins_all_durable),
        T(test_failing_login_in_a_group_spares_the_others),
        T(test_logins_from_several_worker_threads),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
