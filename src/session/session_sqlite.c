/*
 * session_sqlite: the embedded store. One SQLite connection per worker thread, in WAL mode so
 * readers never wait for the writer; prepared statements for every operation; busy_timeout for
 * the rare moment two workers write at once.
 *
 * Durability: a login completes after COMMIT. In WAL mode with synchronous=NORMAL a committed
 * transaction is in the WAL file (the OS page cache at least) and survives the process being
 * killed; only a power loss could drop the last transactions.
 *
 * Writers: SQLite allows one at a time and makes the others wait in its busy handler, which
 * sleeps (1 ms, 2 ms, 5 ms...). Workers of one process therefore take a process-wide mutex around
 * each write instead, held for the few tens of microseconds a write takes; busy_timeout remains
 * for other processes on the same file.
 *
 * Operations complete synchronously: the callback runs before the function returns.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "session/session.h"

#define BUSY_TIMEOUT_MS 5000

static pthread_mutex_t write_mu = PTHREAD_MUTEX_INITIALIZER;

/* Forward migrations; schema_version holds how many have been applied. Append, never edit. */
static const char *const migrations[] = {
    /* 1: users and sessions */
    "CREATE TABLE users ("
    "  appid TEXT NOT NULL, openid TEXT NOT NULL, unionid TEXT,"
    "  session_key BLOB NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (appid, openid)) WITHOUT ROWID;"
    "CREATE TABLE sessions ("
    "  token_hash BLOB PRIMARY KEY, appid TEXT NOT NULL, openid TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX sessions_expiry ON sessions (expires_at);",
    /* 2: the previous session_key, for the grace period after a re-login */
    "ALTER TABLE users ADD COLUMN prev_session_key BLOB;"
    "ALTER TABLE users ADD COLUMN prev_replaced_at INTEGER;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_PING,
    ST_UPSERT_USER,
    ST_INSERT_SESSION,
    ST_GET_SESSION,
    ST_DELETE_SESSION,
    ST_GET_USER,
    ST_PURGE,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PING] = "SELECT version FROM schema_version",
    [ST_UPSERT_USER] =
        "INSERT INTO users (appid, openid, unionid, session_key, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
        " ON CONFLICT (appid, openid) DO UPDATE SET session_key = excluded.session_key,"
        " prev_session_key = users.session_key, prev_replaced_at = excluded.updated_at,"
        " unionid = COALESCE(excluded.unionid, users.unionid), updated_at = excluded.updated_at",
    [ST_INSERT_SESSION] = "INSERT INTO sessions (token_hash, appid, openid, created_at, "
                          "expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_GET_SESSION] = "SELECT s.appid, s.openid, u.unionid, s.expires_at FROM sessions s"
                       " LEFT JOIN users u ON u.appid = s.appid AND u.openid = s.openid"
                       " WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND s.appid = ?3",
    [ST_DELETE_SESSION] = "DELETE FROM sessions WHERE token_hash = ?1 AND appid = ?2",
    [ST_GET_USER] = "SELECT unionid, session_key, prev_session_key, prev_replaced_at FROM users"
                    " WHERE appid = ?1 AND openid = ?2",
    [ST_PURGE] = "DELETE FROM sessions WHERE token_hash IN"
                 " (SELECT token_hash FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
};

struct sqlite_store {
    struct session_store base;
    sqlite3 *db;
    char *path;
    dev_t dev;
    ino_t ino;
    sqlite3_stmt *stmt[ST_COUNT];
};

/* The database file must still be the one we opened: if it was deleted or replaced, every
 * write would go to an unlinked inode and be lost, so the store reports itself failed. */
static bool file_ok(const struct sqlite_store *s)
{
    struct stat sb;
    return stat(s->path, &sb) == 0 && sb.st_dev == s->dev && sb.st_ino == s->ino;
}

static sqlite3_stmt *stmt(struct sqlite_store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->stmt[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Runs a statement that returns no rows. */
static int exec_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v == NULL || *v == '\0')
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

static void copy_col(sqlite3_stmt *st, int i, char out[SESSION_ID_MAX + 1])
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (t == NULL || n > SESSION_ID_MAX)
        n = 0;
    if (n > 0)
        memcpy(out, t, (size_t)n);
    out[n] = '\0';
}

/* Applies the migrations the database lacks, in one transaction (so concurrent starts of
 * several processes on one file serialise on BEGIN IMMEDIATE). */
static int migrate(sqlite3 *db, char err[SESSION_ERR_MAX])
{
    char *msg = NULL;
    sqlite3_stmt *q = NULL;
    int version = 0;
    if (sqlite3_exec(db,
                     "BEGIN IMMEDIATE;"
                     "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);",
                     NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    if (sqlite3_prepare_v2(db, "SELECT max(version) FROM schema_version", -1, &q, NULL) !=
        SQLITE_OK)
        goto fail;
    if (sqlite3_step(q) == SQLITE_ROW)
        version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (version > NMIGRATIONS) {
        snprintf(err, SESSION_ERR_MAX,
                 "store: database schema version %d is newer than this wxlogin knows (%d)", version,
                 NMIGRATIONS);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    for (int v = version; v < NMIGRATIONS; v++)
        if (sqlite3_exec(db, migrations[v], NULL, NULL, &msg) != SQLITE_OK)
            goto fail;
    char sql[96];
    snprintf(sql, sizeof(sql),
             "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d); COMMIT;",
             NMIGRATIONS);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    return 0;
fail:
    snprintf(err, SESSION_ERR_MAX, "store: migration failed: %s",
             msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void sq_close(struct session_store *st)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static pthread_once_t config_once = PTHREAD_ONCE_INIT;

/* Before SQLite initialises: its global memory statistics cost a mutex on every allocation. */
static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static int sq_open(const char *spec, struct loop *loop, long timeout_ms, struct session_store **out,
                   char err[SESSION_ERR_MAX])
{
    (void)loop;
    (void)timeout_ms;
    pthread_once(&config_once, configure_sqlite);
    struct sqlite_store *s = calloc(1, sizeof(*s));
    if (s == NULL || *spec == '\0') {
        snprintf(err, SESSION_ERR_MAX, "store: %s", s == NULL ? "out of memory" : "empty path");
        free(s);
        return -1;
    }
    s->base.ops = &session_sqlite_ops;
    s->path = strdup(spec);
    /* NOMUTEX: each connection belongs to one worker thread. */
    int rc = sqlite3_open_v2(
        spec, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK || s->path == NULL) {
        snprintf(err, SESSION_ERR_MAX, "store: cannot open '%s': %s", spec,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    char *msg = NULL;
    if (sqlite3_exec(s->db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                     " PRAGMA mmap_size = 268435456;",
                     NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, SESSION_ERR_MAX, "store: cannot set up '%s': %s", spec,
                 msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        goto fail;
    }
    if (migrate(s->db, err) != 0)
        goto fail;
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, SESSION_ERR_MAX, "store: cannot prepare statement: %s",
                     sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    struct stat sb;
    if (stat(spec, &sb) != 0) {
        snprintf(err, SESSION_ERR_MAX, "store: '%s' vanished after opening", spec);
        goto fail;
    }
    s->dev = sb.st_dev;
    s->ino = sb.st_ino;
    *out = &s->base;
    return 0;
fail:
    sq_close(&s->base);
    return -1;
}

static void sq_ping(struct session_store *st, session_done_fn *done, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    int status = SESSION_ERROR;
    if (file_ok(s)) {
        sqlite3_stmt *q = stmt(s, ST_PING);
        if (sqlite3_step(q) == SQLITE_ROW)
            status = SESSION_OK;
        sqlite3_reset(q);
    }
    done(status, arg);
}

static int insert_session(struct sqlite_store *s, const uint8_t *hash, const char *appid,
                          const char *openid, int64_t expires_at, int64_t now)
{
    sqlite3_stmt *q = stmt(s, ST_INSERT_SESSION);
    sqlite3_bind_blob(q, 1, hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
    bind_text(q, 2, appid);
    bind_text(q, 3, openid);
    sqlite3_bind_int64(q, 4, now);
    sqlite3_bind_int64(q, 5, expires_at);
    return exec_stmt(q);
}

static void sq_login(struct session_store *st, const struct session_user *user,
                     const uint8_t *token_hash, int64_t expires_at, int64_t now,
                     session_done_fn *done, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    int status = SESSION_ERROR;
    pthread_mutex_lock(&write_mu);
    if (!file_ok(s) || exec_stmt(stmt(s, ST_BEGIN)) != 0)
        goto out;
    sqlite3_stmt *q = stmt(s, ST_UPSERT_USER);
    bind_text(q, 1, user->appid);
    bind_text(q, 2, user->openid);
    bind_text(q, 3, user->unionid);
    sqlite3_bind_blob(q, 4, user->sealed_key, (int)user->sealed_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, now);
    if (exec_stmt(q) != 0)
        goto rollback;
    if (token_hash != NULL &&
        insert_session(s, token_hash, user->appid, user->openid, expires_at, now) != 0)
        goto rollback;
    if (exec_stmt(stmt(s, ST_COMMIT)) != 0)
        goto rollback;
    status = SESSION_OK;
    goto out;
rollback:
    exec_stmt(stmt(s, ST_ROLLBACK));
out:
    pthread_mutex_unlock(&write_mu);
    done(status, arg);
}

static void sq_put_session(struct session_store *st, const uint8_t token_hash[CRYPTO_HASH_LEN],
                           const char *appid, const char *openid, int64_t expires_at, int64_t now,
                           session_done_fn *done, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    pthread_mutex_lock(&write_mu);
    int ok = file_ok(s) && insert_session(s, token_hash, appid, openid, expires_at, now) == 0;
    pthread_mutex_unlock(&write_mu);
    done(ok ? SESSION_OK : SESSION_ERROR, arg);
}

static void sq_get_session(struct session_store *st, const char *appid,
                           const uint8_t token_hash[CRYPTO_HASH_LEN], int64_t now,
                           session_get_fn *done, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    struct session_record rec;
    if (!file_ok(s)) {
        done(SESSION_ERROR, NULL, arg);
        return;
    }
    sqlite3_stmt *q = stmt(s, ST_GET_SESSION);
    sqlite3_bind_blob(q, 1, token_hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now);
    bind_text(q, 3, appid);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        copy_col(q, 0, rec.appid);
        copy_col(q, 1, rec.openid);
        copy_col(q, 2, rec.unionid);
        rec.expires_at = sqlite3_column_int64(q, 3);
        sqlite3_reset(q);
        done(SESSION_OK, &rec, arg);
        return;
    }
    sqlite3_reset(q);
    done(rc == SQLITE_DONE ? SESSION_NOT_FOUND : SESSION_ERROR, NULL, arg);
}

static void sq_delete_session(struct session_store *st, const char *appid,
                              const uint8_t token_hash[CRYPTO_HASH_LEN], session_done_fn *done,
                              void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    if (!file_ok(s)) {
        done(SESSION_ERROR, arg);
        return;
    }
    sqlite3_stmt *q = stmt(s, ST_DELETE_SESSION);
    sqlite3_bind_blob(q, 1, token_hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
    bind_text(q, 2, appid);
    pthread_mutex_lock(&write_mu);
    int rc = exec_stmt(q);
    int changes = sqlite3_changes(s->db);
    pthread_mutex_unlock(&write_mu);
    if (rc != 0) {
        done(SESSION_ERROR, arg);
        return;
    }
    done(changes > 0 ? SESSION_OK : SESSION_NOT_FOUND, arg);
}

static void sq_get_user(struct session_store *st, const char *appid, const char *openid,
                        session_user_fn *done, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    struct session_user u;
    if (!file_ok(s)) {
        done(SESSION_ERROR, NULL, arg);
        return;
    }
    sqlite3_stmt *q = stmt(s, ST_GET_USER);
    bind_text(q, 1, appid);
    bind_text(q, 2, openid);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(q);
        done(rc == SQLITE_DONE ? SESSION_NOT_FOUND : SESSION_ERROR, NULL, arg);
        return;
    }
    memset(&u, 0, sizeof(u));
    snprintf(u.appid, sizeof(u.appid), "%s", appid);
    snprintf(u.openid, sizeof(u.openid), "%s", openid);
    copy_col(q, 0, u.unionid);
    int n = sqlite3_column_bytes(q, 1);
    const void *blob = sqlite3_column_blob(q, 1);
    int status = SESSION_ERROR;
    if (blob != NULL && n > 0 && n <= SESSION_SEALED_MAX) {
        memcpy(u.sealed_key, blob, (size_t)n);
        u.sealed_len = (size_t)n;
        status = SESSION_OK;
    }
    n = sqlite3_column_bytes(q, 2);
    blob = sqlite3_column_blob(q, 2);
    if (blob != NULL && n > 0 && n <= SESSION_SEALED_MAX) {
        memcpy(u.prev_sealed_key, blob, (size_t)n);
        u.prev_len = (size_t)n;
        u.prev_replaced_at = sqlite3_column_int64(q, 3);
    }
    sqlite3_reset(q);
    done(status, status == SESSION_OK ? &u : NULL, arg);
    crypto_wipe(&u, sizeof(u));
}

static void sq_purge_expired(struct session_store *st, int64_t now, long limit,
                             session_count_fn *done, void *arg)
{
    struct sqlite_store *s = (struct sqlite_store *)st;
    if (!file_ok(s)) {
        done(SESSION_ERROR, 0, arg);
        return;
    }
    sqlite3_stmt *q = stmt(s, ST_PURGE);
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_int64(q, 2, limit);
    pthread_mutex_lock(&write_mu);
    int rc = exec_stmt(q);
    int changes = sqlite3_changes(s->db);
    pthread_mutex_unlock(&write_mu);
    if (rc != 0) {
        done(SESSION_ERROR, 0, arg);
        return;
    }
    done(SESSION_OK, changes, arg);
}

/* One process owns an SQLite store: its in-memory exchange table is the whole truth. */
static void sq_code_claim(struct session_store *st, const char *appid,
                          const uint8_t code_key[CRYPTO_HASH_LEN], long hold_ms,
                          session_claim_fn *done, void *arg)
{
    (void)st;
    (void)appid;
    (void)code_key;
    (void)hold_ms;
    done(SESSION_OK, SESSION_CLAIM_MINE, NULL, 0, arg);
}

static void sq_code_publish(struct session_store *st, const char *appid,
                            const uint8_t code_key[CRYPTO_HASH_LEN], const char *outcome,
                            size_t len, long keep_ms, session_done_fn *done, void *arg)
{
    (void)st;
    (void)appid;
    (void)code_key;
    (void)outcome;
    (void)len;
    (void)keep_ms;
    if (done != NULL)
        done(SESSION_OK, arg);
}

const struct session_ops session_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .ping = sq_ping,
    .login = sq_login,
    .put_session = sq_put_session,
    .get_session = sq_get_session,
    .delete_session = sq_delete_session,
    .get_user = sq_get_user,
    .purge_expired = sq_purge_expired,
    .code_claim = sq_code_claim,
    .code_publish = sq_code_publish,
};
