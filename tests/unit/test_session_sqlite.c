/*
 * Unit tests for session/session.h with the SQLite backend: logins and sessions, the user upsert
 * rules, expiry and purging, schema migration, and the store noticing that its database file was
 * deleted or replaced under it.
 *
 * Each test gets a fresh temporary directory (mkdtemp) holding t.db, opened through
 * session_open("sqlite:<dir>/t.db"); teardown closes the store and removes every file. The SQLite
 * backend completes synchronously, so every helper asserts its callback ran exactly once before
 * the operation returned. The database is inspected and tampered with through sqlite3 directly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "session/session.h"

#define APPID "wx0123456789abcdef"

#define NOW 1700000000
#define HOUR 3600

struct fixture {
    char dir[64];
    char path[PATH_MAX];
    char url[PATH_MAX + 8];
    struct session_store *st;
};

static int open_store(struct fixture *f)
{
    char err[SESSION_ERR_MAX] = "";
    if (session_open(f->url, NULL, 1000, &f->st, err) != 0) {
        fprintf(stderr, "session_open(%s): %s\n", f->url, err);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/wxlogin-test-session-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/t.db", f->dir);
    snprintf(f->url, sizeof(f->url), "sqlite:%s", f->path);
    *state = f;
    return open_store(f);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    session_close(f->st);
    DIR *d = opendir(f->dir);
    if (d != NULL) {
        struct dirent *de;
        char p[PATH_MAX + 300];
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof(p), "%s/%s", f->dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* Closes the fixture's store (so a test can tamper with the file or reopen it). */
static void close_store(struct fixture *f)
{
    session_close(f->st);
    f->st = NULL;
}

/* ---- direct SQLite access ---- */

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

/* ---- synchronous wrappers: each asserts its callback ran once, before returning ---- */

struct done_cap {
    int calls;
    int status;
};

static void on_done(int status, void *arg)
{
    struct done_cap *c = arg;
    c->calls++;
    c->status = status;
}

struct get_cap {
    int calls;
    int status;
    bool has_rec;
    struct session_record rec;
};

static void on_get(int status, const struct session_record *rec, void *arg)
{
    struct get_cap *c = arg;
    c->calls++;
    c->status = status;
    c->has_rec = rec != NULL;
    if (rec != NULL)
        c->rec = *rec;
}

struct user_cap {
    int calls;
    int status;
    bool has_user;
    struct session_user user;
};

static void on_user(int status, const struct session_user *user, void *arg)
{
    struct user_cap *c = arg;
    c->calls++;
    c->status = status;
    c->has_user = user != NULL;
    if (user != NULL)
        c->user = *user;
}

struct count_cap {
    int calls;
    int status;
    long count;
};

static void on_count(int status, long count, void *arg)
{
    struct count_cap *c = arg;
    c->calls++;
    c->status = status;
    c->count = count;
}

static int ping(struct session_store *st)
{
    struct done_cap c = {0};
    st->ops->ping(st, on_done, &c);
    assert_int_equal(c.calls, 1);
    return c.status;
}

static int login(struct session_store *st, const struct session_user *u, const uint8_t *hash,
                 int64_t expires_at)
{
    struct done_cap c = {0};
    st->ops->login(st, u, hash, expires_at, NOW, on_done, &c);
    assert_int_equal(c.calls, 1);
    return c.status;
}

static int put_session(struct session_store *st, const uint8_t *hash, const char *appid,
                       const char *openid, int64_t expires_at)
{
    struct done_cap c = {0};
    st->ops->put_session(st, hash, appid, openid, expires_at, NOW, on_done, &c);
    assert_int_equal(c.calls, 1);
    return c.status;
}

/* Returns the status; *rec is written on SESSION_OK (and the callback had a record iff OK). */
static int get_session(struct session_store *st, const uint8_t *hash, int64_t now,
                       struct session_record *rec)
{
    struct get_cap c = {0};
    st->ops->get_session(st, APPID, hash, now, on_get, &c);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.has_rec, c.status == SESSION_OK);
    if (c.status == SESSION_OK && rec != NULL)
        *rec = c.rec;
    return c.status;
}

static int delete_session(struct session_store *st, const uint8_t *hash)
{
    struct done_cap c = {0};
    st->ops->delete_session(st, APPID, hash, on_done, &c);
    assert_int_equal(c.calls, 1);
    return c.status;
}

static int get_user(struct session_store *st, const char *appid, const char *openid,
                    struct session_user *u)
{
    struct user_cap c = {0};
    st->ops->get_user(st, appid, openid, on_user, &c);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.has_user, c.status == SESSION_OK);
    if (c.status == SESSION_OK && u != NULL)
        *u = c.user;
    return c.status;
}

static int purge(struct session_store *st, int64_t now, long limit, long *count)
{
    struct count_cap c = {0, 0, -1};
    st->ops->purge_expired(st, now, limit, on_count, &c);
    assert_int_equal(c.calls, 1);
    *count = c.count;
    return c.status;
}

/* ---- data ---- */

static void token_hash(const char *token, uint8_t out[CRYPTO_HASH_LEN])
{
    crypto_sha256(token, strlen(token), out);
}

/* A user with a recognisable sealed blob: fill repeated len times. */
static struct session_user make_user(const char *appid, const char *openid, const char *unionid,
                                     uint8_t fill, size_t len)
{
    struct session_user u;
    memset(&u, 0, sizeof(u));
    snprintf(u.appid, sizeof(u.appid), "%s", appid);
    snprintf(u.openid, sizeof(u.openid), "%s", openid);
    snprintf(u.unionid, sizeof(u.unionid), "%s", unionid);
    memset(u.sealed_key, fill, len);
    u.sealed_len = len;
    return u;
}

/* ---- tests ---- */

static void test_ping_ok(void **state)
{
    struct fixture *f = *state;
    assert_string_equal(f->st->ops->name, "sqlite");
    assert_int_equal(ping(f->st), SESSION_OK);
}

static void test_login_with_token_then_get_session_finds_user(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "unionid-1", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);

    struct session_record rec;
    memset(&rec, 0xa5, sizeof(rec));
    assert_int_equal(get_session(f->st, h, NOW, &rec), SESSION_OK);
    assert_string_equal(rec.appid, APPID);
    assert_string_equal(rec.openid, "openid-1");
    assert_string_equal(rec.unionid, "unionid-1");
    assert_int_equal(rec.expires_at, NOW + HOUR);
}

static void test_get_session_without_unionid_reports_empty(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    struct session_record rec;
    memset(&rec, 0xa5, sizeof(rec));
    assert_int_equal(get_session(f->st, h, NOW, &rec), SESSION_OK);
    assert_string_equal(rec.unionid, "");
}

static void test_get_session_with_other_hash_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "unionid-1", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN], other[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    memcpy(other, h, sizeof(other));
    other[CRYPTO_HASH_LEN - 1] ^= 1;
    assert_int_equal(get_session(f->st, other, NOW, NULL), SESSION_NOT_FOUND);
}

static void test_get_session_expired_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + 10), SESSION_OK);
    assert_int_equal(get_session(f->st, h, NOW + 9, NULL), SESSION_OK);
    /* Live means expires_at > now: at expires_at it is already gone. */
    assert_int_equal(get_session(f->st, h, NOW + 10, NULL), SESSION_NOT_FOUND);
    assert_int_equal(get_session(f->st, h, NOW + 11, NULL), SESSION_NOT_FOUND);
}

static void test_delete_session_then_not_found_and_again_not_found(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    assert_int_equal(delete_session(f->st, h), SESSION_OK);
    assert_int_equal(get_session(f->st, h, NOW, NULL), SESSION_NOT_FOUND);
    assert_int_equal(delete_session(f->st, h), SESSION_NOT_FOUND);
    /* The user outlives the session. */
    assert_int_equal(get_user(f->st, APPID, "openid-1", NULL), SESSION_OK);
}

static void test_delete_session_keeps_other_sessions(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h1);
    token_hash("wxl_token-2", h2);
    assert_int_equal(login(f->st, &u, h1, NOW + HOUR), SESSION_OK);
    assert_int_equal(login(f->st, &u, h2, NOW + HOUR), SESSION_OK);
    assert_int_equal(delete_session(f->st, h1), SESSION_OK);
    assert_int_equal(get_session(f->st, h2, NOW, NULL), SESSION_OK);
}

static void test_login_without_token_creates_user_only(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "unionid-1", 0x22, 60);
    assert_int_equal(login(f->st, &u, NULL, 0), SESSION_OK);

    struct session_user got;
    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(get_user(f->st, APPID, "openid-1", &got), SESSION_OK);
    assert_string_equal(got.appid, APPID);
    assert_string_equal(got.openid, "openid-1");
    assert_string_equal(got.unionid, "unionid-1");
    assert_int_equal(got.sealed_len, 60);
    assert_memory_equal(got.sealed_key, u.sealed_key, 60);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM sessions"), 0);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM users"), 1);
}

static void test_get_user_unknown_is_not_found(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x22, 60);
    assert_int_equal(login(f->st, &u, NULL, 0), SESSION_OK);
    assert_int_equal(get_user(f->st, APPID, "openid-2", NULL), SESSION_NOT_FOUND);
    assert_int_equal(get_user(f->st, "wxfedcba9876543210", "openid-1", NULL), SESSION_NOT_FOUND);
}

static void test_second_login_replaces_sealed_key_and_keeps_unionid(void **state)
{
    struct fixture *f = *state;
    struct session_user first = make_user(APPID, "openid-1", "unionid-1", 0x33, 45);
    struct session_user second = make_user(APPID, "openid-1", "", 0x44, 61);
    uint8_t h1[CRYPTO_HASH_LEN], h2[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h1);
    token_hash("wxl_token-2", h2);
    assert_int_equal(login(f->st, &first, h1, NOW + HOUR), SESSION_OK);
    assert_int_equal(login(f->st, &second, h2, NOW + HOUR), SESSION_OK);

    struct session_user got;
    assert_int_equal(get_user(f->st, APPID, "openid-1", &got), SESSION_OK);
    assert_int_equal(got.sealed_len, 61);
    assert_memory_equal(got.sealed_key, second.sealed_key, 61);
    assert_string_equal(got.unionid, "unionid-1");

    struct session_record rec;
    assert_int_equal(get_session(f->st, h2, NOW, &rec), SESSION_OK);
    assert_string_equal(rec.unionid, "unionid-1");
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM users"), 1);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM sessions"), 2);
}

static void test_second_login_with_new_unionid_replaces_it(void **state)
{
    struct fixture *f = *state;
    struct session_user first = make_user(APPID, "openid-1", "unionid-1", 0x33, 45);
    struct session_user second = make_user(APPID, "openid-1", "unionid-2", 0x44, 45);
    assert_int_equal(login(f->st, &first, NULL, 0), SESSION_OK);
    assert_int_equal(login(f->st, &second, NULL, 0), SESSION_OK);
    struct session_user got;
    assert_int_equal(get_user(f->st, APPID, "openid-1", &got), SESSION_OK);
    assert_string_equal(got.unionid, "unionid-2");
}

static void test_users_unique_per_appid_and_openid(void **state)
{
    struct fixture *f = *state;
    struct session_user a = make_user(APPID, "openid-1", "", 0x01, 45);
    struct session_user b = make_user(APPID, "openid-2", "", 0x02, 45);
    struct session_user c = make_user("wxfedcba9876543210", "openid-1", "", 0x03, 45);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(login(f->st, &a, NULL, 0), SESSION_OK);
        assert_int_equal(login(f->st, &b, NULL, 0), SESSION_OK);
        assert_int_equal(login(f->st, &c, NULL, 0), SESSION_OK);
    }
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM users"), 3);
    struct session_user got;
    assert_int_equal(get_user(f->st, "wxfedcba9876543210", "openid-1", &got), SESSION_OK);
    assert_int_equal(got.sealed_key[0], 0x03);
}

static void test_login_with_duplicate_token_hash_fails_atomically(void **state)
{
    struct fixture *f = *state;
    struct session_user first = make_user(APPID, "openid-1", "unionid-1", 0x33, 45);
    struct session_user again = make_user(APPID, "openid-1", "unionid-2", 0x44, 45);
    struct session_user other = make_user(APPID, "openid-2", "", 0x55, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &first, h, NOW + HOUR), SESSION_OK);

    /* The session insert fails, so the user upsert of the same login must not stick. */
    assert_int_equal(login(f->st, &again, h, NOW + HOUR), SESSION_ERROR);
    assert_int_equal(login(f->st, &other, h, NOW + HOUR), SESSION_ERROR);
    struct session_user got;
    assert_int_equal(get_user(f->st, APPID, "openid-1", &got), SESSION_OK);
    assert_int_equal(got.sealed_key[0], 0x33);
    assert_string_equal(got.unionid, "unionid-1");
    assert_int_equal(get_user(f->st, APPID, "openid-2", NULL), SESSION_NOT_FOUND);

    /* ... and the store is usable afterwards (the transaction was rolled back). */
    assert_int_equal(login(f->st, &other, NULL, 0), SESSION_OK);
    assert_int_equal(get_user(f->st, APPID, "openid-2", NULL), SESSION_OK);
}

static void test_put_session_for_existing_user(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "unionid-1", 0x11, 45);
    assert_int_equal(login(f->st, &u, NULL, 0), SESSION_OK);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-put", h);
    assert_int_equal(get_session(f->st, h, NOW, NULL), SESSION_NOT_FOUND);
    assert_int_equal(put_session(f->st, h, APPID, "openid-1", NOW + HOUR), SESSION_OK);

    struct session_record rec;
    assert_int_equal(get_session(f->st, h, NOW, &rec), SESSION_OK);
    assert_string_equal(rec.appid, APPID);
    assert_string_equal(rec.openid, "openid-1");
    assert_string_equal(rec.unionid, "unionid-1");
    assert_int_equal(rec.expires_at, NOW + HOUR);
}

static void test_purge_expired_respects_limit_and_spares_live(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    assert_int_equal(login(f->st, &u, NULL, 0), SESSION_OK);
    uint8_t h[8][CRYPTO_HASH_LEN];
    char tok[32];
    /* 5 expired (the last exactly at now), 3 live. */
    const int64_t exp[8] = {NOW - 500, NOW - 400, NOW - 300, NOW - 1,
                            NOW,       NOW + 1,   NOW + 60,  NOW + HOUR};
    for (int i = 0; i < 8; i++) {
        snprintf(tok, sizeof(tok), "wxl_purge-%d", i);
        token_hash(tok, h[i]);
        assert_int_equal(put_session(f->st, h[i], APPID, "openid-1", exp[i]), SESSION_OK);
    }
    long n = -1;
    assert_int_equal(purge(f->st, NOW, 3, &n), SESSION_OK);
    assert_int_equal(n, 3);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM sessions"), 5);
    assert_int_equal(purge(f->st, NOW, 3, &n), SESSION_OK);
    assert_int_equal(n, 2);
    assert_int_equal(purge(f->st, NOW, 3, &n), SESSION_OK);
    assert_int_equal(n, 0);
    for (int i = 5; i < 8; i++)
        assert_int_equal(get_session(f->st, h[i], NOW, NULL), SESSION_OK);
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM sessions"), 3);
    assert_int_equal(sql_long(f->path, "SELECT min(expires_at) FROM sessions"), NOW + 1);
}

static void test_purge_with_nothing_expired_reports_zero(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    long n = -1;
    assert_int_equal(purge(f->st, NOW, 100, &n), SESSION_OK);
    assert_int_equal(n, 0);
    assert_int_equal(get_session(f->st, h, NOW, NULL), SESSION_OK);
}

/* Tokens are bound to their app: another app's lookup or delete does not find them. */
static void test_session_bound_to_its_app(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-bound", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    struct get_cap g = {0};
    f->st->ops->get_session(f->st, "wxotherapp00000000", h, NOW, on_get, &g);
    assert_int_equal(g.status, SESSION_NOT_FOUND);
    struct done_cap d = {0};
    f->st->ops->delete_session(f->st, "wxotherapp00000000", h, on_done, &d);
    assert_int_equal(d.status, SESSION_NOT_FOUND);
    assert_int_equal(get_session(f->st, h, NOW, NULL), SESSION_OK);
}

/* The number of migrations in session_sqlite.c. */
#define SCHEMA_LATEST 2

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
    struct session_user u = make_user(APPID, "openid-1", "unionid-1", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    close_store(f);
    assert_int_equal(open_store(f), 0);

    struct session_record rec;
    assert_int_equal(get_session(f->st, h, NOW, &rec), SESSION_OK);
    assert_string_equal(rec.unionid, "unionid-1");
    assert_int_equal(sql_long(f->path, "SELECT count(*) FROM schema_version"), 1);
    assert_int_equal(sql_long(f->path, "SELECT version FROM schema_version"), SCHEMA_LATEST);
}

/* A database written by the first schema (before the previous-key columns) is migrated
 * forward and keeps its users and sessions. */
static void test_migration_from_version_1_keeps_data(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    char side[4200];
    snprintf(side, sizeof(side), "%s-wal", f->path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", f->path);
    unlink(side);
    FILE *empty = fopen(f->path, "w"); /* an empty file is an empty database */
    assert_non_null(empty);
    fclose(empty);
    sql_exec(f->path, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                      "INSERT INTO schema_version VALUES (1);"
                      "CREATE TABLE users (appid TEXT NOT NULL, openid TEXT NOT NULL, unionid TEXT,"
                      " session_key BLOB NOT NULL, created_at INTEGER NOT NULL,"
                      " updated_at INTEGER NOT NULL, PRIMARY KEY (appid, openid)) WITHOUT ROWID;"
                      "CREATE TABLE sessions (token_hash BLOB PRIMARY KEY, appid TEXT NOT NULL,"
                      " openid TEXT NOT NULL, created_at INTEGER NOT NULL,"
                      " expires_at INTEGER NOT NULL) WITHOUT ROWID;"
                      "CREATE INDEX sessions_expiry ON sessions (expires_at);"
                      "INSERT INTO users VALUES ('" APPID "', 'old-user', 'u1', x'0102', 1, 1);");
    assert_int_equal(open_store(f), 0);
    assert_int_equal(sql_long(f->path, "SELECT version FROM schema_version"), SCHEMA_LATEST);
    struct session_user got;
    assert_int_equal(get_user(f->st, APPID, "old-user", &got), SESSION_OK);
    assert_int_equal(got.sealed_len, 2);
    assert_int_equal(got.prev_len, 0);
    assert_string_equal(got.unionid, "u1");
}

/* A re-login keeps the key it replaces, with the time, for the decrypt grace period. */
static void test_upsert_keeps_previous_key_and_time(void **state)
{
    struct fixture *f = *state;
    struct session_user a = make_user(APPID, "openid-1", "", 0x11, 45);
    struct session_user b = make_user(APPID, "openid-1", "", 0x22, 45);
    struct done_cap c = {0};
    f->st->ops->login(f->st, &a, NULL, 0, NOW, on_done, &c);
    assert_int_equal(c.status, SESSION_OK);
    struct session_user got;
    assert_int_equal(get_user(f->st, APPID, "openid-1", &got), SESSION_OK);
    assert_int_equal(got.prev_len, 0);

    f->st->ops->login(f->st, &b, NULL, 0, NOW + 7, on_done, &c);
    assert_int_equal(c.status, SESSION_OK);
    assert_int_equal(get_user(f->st, APPID, "openid-1", &got), SESSION_OK);
    assert_memory_equal(got.sealed_key, b.sealed_key, b.sealed_len);
    assert_int_equal(got.prev_len, a.sealed_len);
    assert_memory_equal(got.prev_sealed_key, a.sealed_key, a.sealed_len);
    assert_int_equal(got.prev_replaced_at, NOW + 7);
}

static void test_two_handles_on_one_file_share_data(void **state)
{
    struct fixture *f = *state;
    struct session_store *other = NULL;
    char err[SESSION_ERR_MAX] = "";
    assert_int_equal(session_open(f->url, NULL, 1000, &other, err), 0);
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    assert_int_equal(get_session(other, h, NOW, NULL), SESSION_OK);
    assert_int_equal(delete_session(other, h), SESSION_OK);
    assert_int_equal(get_session(f->st, h, NOW, NULL), SESSION_NOT_FOUND);
    session_close(other);
}

static void test_newer_schema_version_is_refused(void **state)
{
    struct fixture *f = *state;
    close_store(f);
    sql_exec(f->path, "UPDATE schema_version SET version = 999");

    struct session_store *st = NULL;
    char err[SESSION_ERR_MAX] = "";
    assert_int_equal(session_open(f->url, NULL, 1000, &st, err), -1);
    assert_null(st);
    assert_non_null(strstr(err, "999"));
    /* The refusal changed nothing. */
    assert_int_equal(sql_long(f->path, "SELECT version FROM schema_version"), 999);
}

static void check_all_ops_fail(struct session_store *st)
{
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    struct session_user u = make_user(APPID, "openid-9", "", 0x11, 45);
    long n;
    assert_int_equal(ping(st), SESSION_ERROR);
    assert_int_equal(get_session(st, h, NOW, NULL), SESSION_ERROR);
    assert_int_equal(login(st, &u, h, NOW + HOUR), SESSION_ERROR);
    assert_int_equal(put_session(st, h, APPID, "openid-1", NOW + HOUR), SESSION_ERROR);
    assert_int_equal(delete_session(st, h), SESSION_ERROR);
    assert_int_equal(get_user(st, APPID, "openid-1", NULL), SESSION_ERROR);
    assert_int_equal(purge(st, NOW, 10, &n), SESSION_ERROR);
}

static void test_error_after_db_file_deleted(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);
    assert_int_equal(unlink(f->path), 0);
    check_all_ops_fail(f->st);
}

static void test_error_after_db_file_replaced(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user(APPID, "openid-1", "", 0x11, 45);
    uint8_t h[CRYPTO_HASH_LEN];
    token_hash("wxl_token-1", h);
    assert_int_equal(login(f->st, &u, h, NOW + HOUR), SESSION_OK);

    /* A valid database of its own (same schema, same session), moved over the open one. */
    char other[PATH_MAX + 16];
    snprintf(other, sizeof(other), "%s/other.db", f->dir);
    struct session_store *st2 = NULL;
    char url2[PATH_MAX + 32], err[SESSION_ERR_MAX] = "";
    snprintf(url2, sizeof(url2), "sqlite:%s", other);
    assert_int_equal(session_open(url2, NULL, 1000, &st2, err), 0);
    assert_int_equal(login(st2, &u, h, NOW + HOUR), SESSION_OK);
    session_close(st2);
    assert_int_equal(rename(other, f->path), 0);

    check_all_ops_fail(f->st);
}

static void test_unknown_scheme_fails_with_message(void **state)
{
    (void)state;
    struct session_store *st = NULL;
    char err[SESSION_ERR_MAX] = "";
    /* redis:// became a backend with the scale-out issue; this scheme never will be. */
    assert_int_equal(session_open("memcached://x", NULL, 1000, &st, err), -1);
    assert_null(st);
    assert_true(err[0] != '\0');
}

static void test_empty_sqlite_path_fails_with_message(void **state)
{
    (void)state;
    struct session_store *st = NULL;
    char err[SESSION_ERR_MAX] = "";
    assert_int_equal(session_open("sqlite:", NULL, 1000, &st, err), -1);
    assert_null(st);
    assert_true(err[0] != '\0');
}

static void test_missing_directory_fails_with_message(void **state)
{
    struct fixture *f = *state;
    struct session_store *st = NULL;
    char url[PATH_MAX + 64], err[SESSION_ERR_MAX] = "";
    snprintf(url, sizeof(url), "sqlite:%s/no/such/dir/t.db", f->dir);
    assert_int_equal(session_open(url, NULL, 1000, &st, err), -1);
    assert_null(st);
    assert_true(err[0] != '\0');
}

static void test_sqlite_path_of_url(void **state)
{
    (void)state;
    assert_string_equal(session_sqlite_path("sqlite:/var/lib/wxlogin.db"), "/var/lib/wxlogin.db");
    assert_string_equal(session_sqlite_path("sqlite:rel.db"), "rel.db");
    assert_null(session_sqlite_path("redis://x"));
    assert_null(session_sqlite_path("sqlite"));
}

static void test_close_accepts_null(void **state)
{
    (void)state;
    session_close(NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_ping_ok),
        T(test_login_with_token_then_get_session_finds_user),
        T(test_get_session_without_unionid_reports_empty),
        T(test_get_session_with_other_hash_is_not_found),
        T(test_get_session_expired_is_not_found),
        T(test_delete_session_then_not_found_and_again_not_found),
        T(test_delete_session_keeps_other_sessions),
        T(test_login_without_token_creates_user_only),
        T(test_get_user_unknown_is_not_found),
        T(test_second_login_replaces_sealed_key_and_keeps_unionid),
        T(test_second_login_with_new_unionid_replaces_it),
        T(test_users_unique_per_appid_and_openid),
        T(test_login_with_duplicate_token_hash_fails_atomically),
        T(test_put_session_for_existing_user),
        T(test_purge_expired_respects_limit_and_spares_live),
        T(test_purge_with_nothing_expired_reports_zero),
        T(test_migration_creates_latest_schema_version),
        T(test_reopen_existing_db_keeps_data_and_version),
        T(test_migration_from_version_1_keeps_data),
        T(test_session_bound_to_its_app),
        T(test_upsert_keeps_previous_key_and_time),
        T(test_two_handles_on_one_file_share_data),
        T(test_newer_schema_version_is_refused),
        T(test_error_after_db_file_deleted),
        T(test_error_after_db_file_replaced),
        T(test_unknown_scheme_fails_with_message),
        T(test_empty_sqlite_path_fails_with_message),
        T(test_missing_directory_fails_with_message),
        T(test_sqlite_path_of_url),
        T(test_close_accepts_null),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
