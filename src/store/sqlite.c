/*
 * store/sqlite: the embedded store, for one wxlogin process.
 *
 * One connection, owned by one thread (the writer), which runs every operation: the workers'
 * loops never wait on SQLite, a WAL checkpoint's fsync stalls only the writer, and the
 * connection holds the database in EXCLUSIVE locking mode, so after the first transaction
 * SQLite makes no locking syscall (no fcntl) and keeps the WAL index in its heap (no -shm
 * file). A second process opening the same file is refused at start (SQLITE_BUSY at once):
 * two processes on one database would each trust their own session cache and disagree about
 * logouts.
 *
 * Group commit: workers queue jobs; the writer takes everything queued, runs the reads, then
 * all the writes in one transaction (a login with a session in a savepoint of its own, so its
 * two statements stay atomic), commits once, and only then posts each job back to its worker's
 * loop (loop_post_item: no allocation). Logins that arrive together share one COMMIT.
 * Durability: WAL with synchronous=NORMAL, so a committed transaction is in the WAL file (the
 * OS page cache at least) and survives the process being killed; only a power loss can drop
 * the last ones.
 *
 * Private files: the database holds every openid and unionid and the sealed session keys, so
 * it is created 0600 before SQLite opens it, whatever the umask; SQLite gives the -wal, -shm
 * and -journal files it creates the main file's permissions (unix robust_open), so they follow.
 * A database (or leftover -wal...) found readable by others is tightened to 0600, with a
 * warning: it was created by an older version, or by hand.
 *
 * "Was the database replaced?": if the file is deleted or replaced, writes would go to an
 * unlinked inode and be lost, so the store then reports itself broken. inotify tells the writer
 * at once; a stat() once a second covers filesystems without it. Never a syscall per request.
 *
 * Jobs come from a per-worker pool. A cancelled job stays with the writer until it is posted
 * back, then goes back to the pool without its callback; closing a worker's store waits for
 * its jobs and runs their posts.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loop/loop.h"
#include "runtime/async.h"
#include "store/backend.h"
#include "store/seal.h"
#include "util/list.h"

#define BATCH_MAX 256
#define FILE_CHECK_MS 1000
#define POOL_MAX 256

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
    /* 3: sessions an operator can see and end (ids, chains, where they began), bans */
    "ALTER TABLE sessions ADD COLUMN sid BLOB;"
    "ALTER TABLE sessions ADD COLUMN chain_start INTEGER;"
    "ALTER TABLE sessions ADD COLUMN refreshed_at INTEGER;"
    "ALTER TABLE sessions ADD COLUMN next_hash BLOB;"
    "ALTER TABLE sessions ADD COLUMN client TEXT;"
    "ALTER TABLE sessions ADD COLUMN user_agent TEXT;"
    "UPDATE sessions SET sid = randomblob(16), chain_start = created_at;"
    "CREATE INDEX sessions_user ON sessions (appid, openid);"
    "CREATE INDEX sessions_sid ON sessions (sid);"
    "CREATE INDEX users_seen ON users (updated_at);"
    "CREATE TABLE bans ("
    "  appid TEXT NOT NULL, openid TEXT NOT NULL, reason TEXT NOT NULL,"
    "  since INTEGER NOT NULL, until INTEGER,"
    "  PRIMARY KEY (appid, openid)) WITHOUT ROWID;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_PING,
    ST_UPSERT_USER,
    ST_INSERT_SESSION,
    ST_GET_SESSION,
    ST_FIND_SESSION,
    ST_GET_USER,
    ST_PURGE,
    ST_BANNED,
    ST_REFRESH_GET,
    ST_REFRESH_MARK,
    ST_REVOKE_CHAIN,
    ST_REVOKE_SID,
    ST_REVOKE_USER,
    ST_BAN,
    ST_UNBAN,
    ST_ERASE_USER,
    ST_INFO_USER,
    ST_INFO_BAN,
    ST_INFO_SESSIONS,
    ST_PURGE_USER_SESSIONS,
    ST_PURGE_USERS,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT job",
    [ST_RELEASE] = "RELEASE job",
    [ST_ROLLBACK_TO] = "ROLLBACK TO job",
    [ST_PING] = "SELECT version FROM schema_version",
    [ST_UPSERT_USER] =
        "INSERT INTO users (appid, openid, unionid, session_key, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
        " ON CONFLICT (appid, openid) DO UPDATE SET session_key = excluded.session_key,"
        " prev_session_key = users.session_key, prev_replaced_at = excluded.updated_at,"
        " unionid = COALESCE(excluded.unionid, users.unionid), updated_at = excluded.updated_at",
    [ST_INSERT_SESSION] = "INSERT INTO sessions (token_hash, appid, openid, created_at, expires_at,"
                          " sid, chain_start, refreshed_at, client, user_agent)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_GET_SESSION] = "SELECT s.appid, s.openid, u.unionid, s.expires_at FROM sessions s"
                       " LEFT JOIN users u ON u.appid = s.appid AND u.openid = s.openid"
                       " WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND s.appid = ?3",
    /* The same whatever the app: token_hash is the key of every app's sessions. */
    [ST_FIND_SESSION] = "SELECT s.appid, s.openid, u.unionid, s.expires_at FROM sessions s"
                        " LEFT JOIN users u ON u.appid = s.appid AND u.openid = s.openid"
                        " WHERE s.token_hash = ?1 AND s.expires_at > ?2",
    [ST_GET_USER] = "SELECT unionid, session_key, prev_session_key, prev_replaced_at FROM users"
                    " WHERE appid = ?1 AND openid = ?2",
    [ST_PURGE] = "DELETE FROM sessions WHERE token_hash IN"
                 " (SELECT token_hash FROM sessions WHERE expires_at <= ?1 LIMIT ?2)",
    [ST_BANNED] = "SELECT 1 FROM bans WHERE appid = ?1 AND openid = ?2"
                  " AND (until IS NULL OR until > ?3)",
    [ST_REFRESH_GET] = "SELECT appid, openid, sid, chain_start, next_hash, client, user_agent"
                       " FROM sessions WHERE token_hash = ?1 AND expires_at > ?2",
    [ST_REFRESH_MARK] = "UPDATE sessions SET next_hash = ?2, expires_at = min(expires_at, ?3)"
                        " WHERE token_hash = ?1",
    /* Each revocation answers the hashes it removed (for the session cache), and what tells
     * whether each was the live head of its chain (what the caller counts as a session ended).
     * Raw columns: SQLite 3.40 evaluates "next_hash IS NULL" in the RETURNING of a DELETE from a
     * WITHOUT ROWID table as false whatever the row holds. */
    [ST_REVOKE_CHAIN] = "DELETE FROM sessions WHERE sid ="
                        " (SELECT sid FROM sessions WHERE token_hash = ?1 AND appid = ?2)"
                        " RETURNING token_hash, next_hash, expires_at",
    [ST_REVOKE_SID] = "DELETE FROM sessions WHERE sid = ?1 AND appid = ?2"
                      " RETURNING token_hash, next_hash, expires_at",
    [ST_REVOKE_USER] = "DELETE FROM sessions WHERE appid = ?1 AND openid = ?2"
                       " RETURNING token_hash, next_hash, expires_at",
    [ST_BAN] = "INSERT INTO bans (appid, openid, reason, since, until) VALUES (?1, ?2, ?3, ?4, ?5)"
               " ON CONFLICT (appid, openid) DO UPDATE SET reason = excluded.reason,"
               " since = excluded.since, until = excluded.until",
    [ST_UNBAN] = "DELETE FROM bans WHERE appid = ?1 AND openid = ?2",
    [ST_ERASE_USER] = "DELETE FROM users WHERE appid = ?1 AND openid = ?2",
    [ST_INFO_USER] = "SELECT unionid, created_at, updated_at FROM users"
                     " WHERE appid = ?1 AND openid = ?2",
    [ST_INFO_BAN] = "SELECT reason, since, until FROM bans WHERE appid = ?1 AND openid = ?2"
                    " AND (until IS NULL OR until > ?3)",
    /* A chain's head is its newest token: the session as the operator knows it. */
    [ST_INFO_SESSIONS] = "SELECT sid, chain_start, expires_at, refreshed_at, client, user_agent"
                         " FROM sessions WHERE appid = ?1 AND openid = ?2 AND expires_at > ?3"
                         " AND next_hash IS NULL ORDER BY chain_start, sid LIMIT ?4",
    /* Users not seen since ?1, with whatever sessions they still have (expired ones: the
     * retention is never under the sessions' max age). */
    [ST_PURGE_USER_SESSIONS] = "DELETE FROM sessions WHERE (appid, openid) IN"
                               " (SELECT appid, openid FROM users WHERE updated_at < ?1 LIMIT ?2)",
    [ST_PURGE_USERS] = "DELETE FROM users WHERE (appid, openid) IN"
                       " (SELECT appid, openid FROM users WHERE updated_at < ?1 LIMIT ?2)",
};

enum sq_op {
    OP_PING,
    OP_GET_SESSION,
    OP_GET_USER,
    OP_USER_INFO,
    /* writes from here on */
    OP_LOGIN,
    OP_PUT_SESSION,
    OP_REFRESH,
    OP_REVOKE,
    OP_PURGE,
};

struct sq_shared;

struct sq_store {
    struct store base;
    struct sq_shared *sh;
    struct loop *loop;
    struct sq_job *pool;
    size_t npool;
    size_t inflight;     /* guarded by sh->mu: queued or running, not yet posted back */
    struct list started; /* worker only: jobs started and not yet back */
};

struct sq_user_out {
    char unionid[STORE_ID_MAX + 1];
    uint8_t key[STORE_SEALED_MAX];
    size_t key_len;
    uint8_t prev[STORE_SEALED_MAX];
    size_t prev_len;
    int64_t prev_at;
};

struct sq_job {
    struct async async;
    struct sq_store *st;
    enum sq_op op;
    bool cancelled;
    /* what to do */
    char appid[STORE_ID_MAX + 1];
    bool any_app; /* get_session: whatever the session's app */
    char openid[STORE_ID_MAX + 1];
    char unionid[STORE_ID_MAX + 1];
    uint8_t hash[CRYPTO_HASH_LEN];
    bool has_hash;
    uint8_t sealed[STORE_SEALED_MAX];
    size_t sealed_len;
    int64_t expires_at, now;
    long limit;
    uint8_t sid[STORE_SID_LEN];
    char client[STORE_CLIENT_MAX + 1];
    char user_agent[STORE_UA_MAX + 1];
    uint8_t new_hash[CRYPTO_HASH_LEN]; /* refresh */
    long grace_s, ttl_s, max_age_s;    /* refresh */
    enum store_revoke_what what;       /* revoke */
    char reason[STORE_REASON_MAX + 1]; /* ban */
    /* what came of it */
    int status;
    bool erased; /* the batch must leave no trace of the user in the files */
    union {
        struct store_session session;
        struct sq_user_out user;
        long count;
        struct store_revoked revoked;
    } out;
    struct store_user_info *info; /* user_info's answer: allocated with the job, it is large */
    /* who to tell */
    union {
        store_done_fn *done;
        store_session_fn *session;
        store_user_fn *user;
        store_count_fn *count;
        store_revoke_fn *revoke;
        store_info_fn *info;
    } fn;
    void *arg;
    struct sq_job *next; /* the writer's queue */
    struct list node;    /* its store's started jobs (worker side) */
    struct loop_post post;
};

struct sq_shared {
    struct store_shared base;
    char *path;
    const uint8_t *master_key;
    long user_retention_s;
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
    dev_t dev;
    ino_t ino;
    atomic_bool broken;
    uint64_t checked_ms;

    pthread_t thread;
    bool started;
    int wakefd;
    int inotify_fd;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* a closing worker store waits here for its jobs */
    struct sq_job *head, *tail;
    bool sleeping, wake_pending, stopping;
};

/* ---- statements ---- */

static sqlite3_stmt *stmt(struct sq_shared *sh, enum stmt_id id)
{
    sqlite3_stmt *st = sh->stmt[id];
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

static void copy_col(sqlite3_stmt *st, int i, char out[STORE_ID_MAX + 1])
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (t == NULL || n > STORE_ID_MAX)
        n = 0;
    if (n > 0)
        memcpy(out, t, (size_t)n);
    out[n] = '\0';
}

/* A text column of at most cap - 1 bytes ("" when NULL or longer: we wrote it, cut to fit). */
static void copy_text(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (t == NULL || n < 0 || (size_t)n >= cap)
        n = 0;
    if (n > 0)
        memcpy(out, t, (size_t)n);
    out[n] = '\0';
}

/* A blob column of exactly n bytes into out; false otherwise. */
static bool copy_fixed(sqlite3_stmt *st, int i, uint8_t *out, size_t n)
{
    const void *b = sqlite3_column_blob(st, i);
    if (b == NULL || sqlite3_column_bytes(st, i) != (int)n)
        return false;
    memcpy(out, b, n);
    return true;
}

static size_t copy_blob(sqlite3_stmt *st, int i, uint8_t out[STORE_SEALED_MAX])
{
    const void *b = sqlite3_column_blob(st, i);
    int n = sqlite3_column_bytes(st, i);
    if (b == NULL || n <= 0 || n > STORE_SEALED_MAX)
        return 0;
    memcpy(out, b, (size_t)n);
    return (size_t)n;
}

/* ---- the file under us ---- */

static uint64_t now_ms(void)
{
    return loop_clock_ms();
}

/* The database file must still be the one we opened. */
static void check_file(struct sq_shared *sh)
{
    struct stat sb;
    sh->checked_ms = now_ms();
    if (stat(sh->path, &sb) != 0 || sb.st_dev != sh->dev || sb.st_ino != sh->ino)
        atomic_store(&sh->broken, true);
}

/* Something changed in the database's directory or to the file itself: look. */
static void drain_inotify(struct sq_shared *sh)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    while (read(sh->inotify_fd, buf, sizeof(buf)) > 0)
        any = true;
    if (any)
        check_file(sh);
}

/* ---- the writer ---- */

/* The user, their ban in force and their live sessions, into j->info. */
static void read_info(struct sq_shared *sh, struct sq_job *j)
{
    struct store_user_info *u = j->info;
    j->status = STORE_ERROR;
    sqlite3_stmt *q = stmt(sh, ST_INFO_USER);
    bind_text(q, 1, j->appid);
    bind_text(q, 2, j->openid);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        u->known = true;
        copy_col(q, 0, u->unionid);
        u->first_login = sqlite3_column_int64(q, 1);
        u->last_login = sqlite3_column_int64(q, 2);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return;
    q = stmt(sh, ST_INFO_BAN);
    bind_text(q, 1, j->appid);
    bind_text(q, 2, j->openid);
    sqlite3_bind_int64(q, 3, j->now);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        u->banned = true;
        copy_text(q, 0, u->ban_reason, sizeof(u->ban_reason));
        u->ban_since = sqlite3_column_int64(q, 1);
        u->ban_until = sqlite3_column_int64(q, 2); /* NULL reads 0: for good */
    }
    sqlite3_reset(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return;
    q = stmt(sh, ST_INFO_SESSIONS);
    bind_text(q, 1, j->appid);
    bind_text(q, 2, j->openid);
    sqlite3_bind_int64(q, 3, j->now);
    sqlite3_bind_int64(q, 4, STORE_SESSIONS_MAX + 1);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (u->nsessions == STORE_SESSIONS_MAX) {
            u->more_sessions = true;
            continue;
        }
        struct store_session_info *si = &u->sessions[u->nsessions];
        if (!copy_fixed(q, 0, si->sid, STORE_SID_LEN))
            continue; /* cannot be: every session has one since migration 3 */
        si->created = sqlite3_column_int64(q, 1);
        si->expires = sqlite3_column_int64(q, 2);
        si->refreshed = sqlite3_column_int64(q, 3);
        copy_text(q, 4, si->client, sizeof(si->client));
        copy_text(q, 5, si->user_agent, sizeof(si->user_agent));
        u->nsessions++;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return;
    j->status = u->known || u->banned ? STORE_OK : STORE_NOT_FOUND;
}

static void run_read(struct sq_shared *sh, struct sq_job *j)
{
    sqlite3_stmt *q;
    int rc;
    switch (j->op) {
    case OP_PING:
        q = stmt(sh, ST_PING);
        j->status = sqlite3_step(q) == SQLITE_ROW ? STORE_OK : STORE_ERROR;
        sqlite3_reset(q);
        return;
    case OP_GET_SESSION:
        q = stmt(sh, j->any_app ? ST_FIND_SESSION : ST_GET_SESSION);
        sqlite3_bind_blob(q, 1, j->hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, j->now);
        if (!j->any_app)
            bind_text(q, 3, j->appid);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            copy_col(q, 0, j->out.session.appid);
            copy_col(q, 1, j->out.session.openid);
            copy_col(q, 2, j->out.session.unionid);
            j->out.session.expires_at = sqlite3_column_int64(q, 3);
            j->status = STORE_OK;
        } else {
            j->status = rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERROR;
        }
        sqlite3_reset(q);
        return;
    case OP_GET_USER:
        q = stmt(sh, ST_GET_USER);
        bind_text(q, 1, j->appid);
        bind_text(q, 2, j->openid);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            copy_col(q, 0, j->out.user.unionid);
            j->out.user.key_len = copy_blob(q, 1, j->out.user.key);
            j->out.user.prev_len = copy_blob(q, 2, j->out.user.prev);
            j->out.user.prev_at = sqlite3_column_int64(q, 3);
            j->status = j->out.user.key_len > 0 ? STORE_OK : STORE_ERROR;
        } else {
            j->status = rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERROR;
        }
        sqlite3_reset(q);
        return;
    case OP_USER_INFO: read_info(sh, j); return;
    case OP_LOGIN:
    case OP_PUT_SESSION:
    case OP_REFRESH:
    case OP_REVOKE:
    case OP_PURGE: break;
    }
}

/* A session of j's user: a new chain (chain_start now) or, with refreshed, the next token of one
 * whose start and origin the job carries. */
static int insert_session(struct sq_shared *sh, const struct sq_job *j, const uint8_t *hash,
                          int64_t chain_start, bool refreshed)
{
    sqlite3_stmt *q = stmt(sh, ST_INSERT_SESSION);
    sqlite3_bind_blob(q, 1, hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
    bind_text(q, 2, j->appid);
    bind_text(q, 3, j->openid);
    sqlite3_bind_int64(q, 4, j->now);
    sqlite3_bind_int64(q, 5, j->expires_at);
    sqlite3_bind_blob(q, 6, j->sid, STORE_SID_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, chain_start);
    if (refreshed)
        sqlite3_bind_int64(q, 8, j->now);
    bind_text(q, 9, j->client);
    bind_text(q, 10, j->user_agent);
    return exec_stmt(q);
}

/* Is a ban of j's user in force? 1 yes, 0 no, -1 the store failed. */
static int banned(struct sq_shared *sh, const struct sq_job *j)
{
    sqlite3_stmt *q = stmt(sh, ST_BANNED);
    bind_text(q, 1, j->appid);
    bind_text(q, 2, j->openid);
    sqlite3_bind_int64(q, 3, j->now);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/*
 * The refresh of j->hash by j->new_hash (inside the batch's transaction): the old token must be
 * live; replaced already, it answers its successor (the same new token: it is derived from the
 * old); else the chain gets the new token and the old one a grace period.
 */
static void run_refresh(struct sq_shared *sh, struct sq_job *j)
{
    sqlite3_stmt *q = stmt(sh, ST_REFRESH_GET);
    sqlite3_bind_blob(q, 1, j->hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, j->now);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(q);
        j->status = rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERROR;
        return;
    }
    char appid[STORE_ID_MAX + 1];
    uint8_t next[CRYPTO_HASH_LEN];
    copy_col(q, 0, appid);
    copy_col(q, 1, j->openid);
    bool has_sid = copy_fixed(q, 2, j->sid, STORE_SID_LEN);
    int64_t chain_start = sqlite3_column_int64(q, 3);
    bool replaced = sqlite3_column_type(q, 4) != SQLITE_NULL;
    bool same_next = replaced && copy_fixed(q, 4, next, CRYPTO_HASH_LEN) &&
                     memcmp(next, j->new_hash, CRYPTO_HASH_LEN) == 0;
    copy_text(q, 5, j->client, sizeof(j->client));
    copy_text(q, 6, j->user_agent, sizeof(j->user_agent));
    sqlite3_reset(q);
    j->status = STORE_NOT_FOUND;
    if ((!j->any_app && strcmp(appid, j->appid) != 0) || !has_sid)
        return;
    memcpy(j->appid, appid, sizeof(appid));
    if (!replaced) {
        int64_t last = chain_start + j->max_age_s;
        if (j->now >= last)
            return; /* the chain is as old as it may get: log in again */
        j->expires_at = j->now + j->ttl_s < last ? j->now + j->ttl_s : last;
        q = stmt(sh, ST_REFRESH_MARK);
        sqlite3_bind_blob(q, 1, j->hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
        sqlite3_bind_blob(q, 2, j->new_hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, j->now + j->grace_s);
        if (exec_stmt(q) != 0 || insert_session(sh, j, j->new_hash, chain_start, true) != 0) {
            j->status = STORE_ERROR;
            return;
        }
    } else if (!same_next) {
        return; /* replaced by another token: cannot be with tokens derived from their
                 * predecessors, so treat it as spent */
    }
    /* The new token's session, as a look-up would answer it. */
    q = stmt(sh, ST_FIND_SESSION);
    sqlite3_bind_blob(q, 1, j->new_hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, j->now);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        copy_col(q, 0, j->out.session.appid);
        copy_col(q, 1, j->out.session.openid);
        copy_col(q, 2, j->out.session.unionid);
        j->out.session.expires_at = sqlite3_column_int64(q, 3);
        j->status = STORE_OK;
    } else {
        j->status = rc == SQLITE_DONE ? STORE_NOT_FOUND : STORE_ERROR;
    }
    sqlite3_reset(q);
}

/* Runs a revoking DELETE ... RETURNING token_hash, next_hash, expires_at into r. */
static int collect_revoked(sqlite3_stmt *q, int64_t now, struct store_revoked *r)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (sqlite3_column_type(q, 1) == SQLITE_NULL && sqlite3_column_int64(q, 2) > now)
            r->count++;
        if (r->nhashes == STORE_REVOKED_MAX)
            r->more = true;
        else if (copy_fixed(q, 0, r->hashes[r->nhashes], CRYPTO_HASH_LEN))
            r->nhashes++;
    }
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int revoke_user_sessions(struct sq_shared *sh, struct sq_job *j)
{
    sqlite3_stmt *q = stmt(sh, ST_REVOKE_USER);
    bind_text(q, 1, j->appid);
    bind_text(q, 2, j->openid);
    return collect_revoked(q, j->now, &j->out.revoked);
}

/* Runs a statement keyed by (appid, openid); -1, or how many rows it changed. */
static int exec_user(struct sq_shared *sh, enum stmt_id id, const struct sq_job *j)
{
    sqlite3_stmt *q = stmt(sh, id);
    bind_text(q, 1, j->appid);
    bind_text(q, 2, j->openid);
    return exec_stmt(q) == 0 ? sqlite3_changes(sh->db) : -1;
}

static void run_revoke(struct sq_shared *sh, struct sq_job *j)
{
    struct store_revoked *r = &j->out.revoked;
    sqlite3_stmt *q;
    int rc = -1, n;
    memset(r, 0, sizeof(*r));
    switch (j->what) {
    case STORE_REVOKE_TOKEN:
    case STORE_REVOKE_SID:
        q = stmt(sh, j->what == STORE_REVOKE_TOKEN ? ST_REVOKE_CHAIN : ST_REVOKE_SID);
        if (j->what == STORE_REVOKE_TOKEN)
            sqlite3_bind_blob(q, 1, j->hash, CRYPTO_HASH_LEN, SQLITE_STATIC);
        else
            sqlite3_bind_blob(q, 1, j->sid, STORE_SID_LEN, SQLITE_STATIC);
        bind_text(q, 2, j->appid);
        rc = collect_revoked(q, j->now, r);
        if (rc == 0 && r->nhashes == 0 && !r->more)
            rc = 1;
        break;
    case STORE_REVOKE_USER: rc = revoke_user_sessions(sh, j); break;
    case STORE_BAN:
        q = stmt(sh, ST_BAN);
        bind_text(q, 1, j->appid);
        bind_text(q, 2, j->openid);
        bind_text(q, 3, j->reason);
        sqlite3_bind_int64(q, 4, j->now);
        if (j->expires_at > 0)
            sqlite3_bind_int64(q, 5, j->expires_at);
        rc = exec_stmt(q) == 0 ? revoke_user_sessions(sh, j) : -1;
        break;
    case STORE_UNBAN:
        n = exec_user(sh, ST_UNBAN, j);
        rc = n < 0 ? -1 : n == 0 ? 1 : 0;
        r->count = n > 0;
        break;
    case STORE_ERASE:
        n = exec_user(sh, ST_ERASE_USER, j);
        int b = n < 0 ? -1 : exec_user(sh, ST_UNBAN, j);
        rc = b < 0 || revoke_user_sessions(sh, j) != 0 ? -1 : 0;
        if (rc == 0 && n == 0 && b == 0 && r->nhashes == 0 && !r->more)
            rc = 1; /* nothing of the openid was there */
        j->erased = rc == 0;
        break;
    }
    j->status = rc < 0 ? STORE_ERROR : rc == 1 ? STORE_NOT_FOUND : STORE_OK;
}

/* Inside the batch's transaction. */
static void run_write(struct sq_shared *sh, struct sq_job *j)
{
    sqlite3_stmt *q;
    j->status = STORE_ERROR;
    switch (j->op) {
    case OP_LOGIN: {
        int ban = banned(sh, j);
        if (ban != 0) {
            j->status = ban > 0 ? STORE_BANNED : STORE_ERROR;
            return;
        }
        /* Two statements that go together: a savepoint undoes the first if the second fails,
         * without touching the other jobs of the batch. */
        bool sp = j->has_hash;
        if (sp && exec_stmt(stmt(sh, ST_SAVEPOINT)) != 0)
            return;
        q = stmt(sh, ST_UPSERT_USER);
        bind_text(q, 1, j->appid);
        bind_text(q, 2, j->openid);
        bind_text(q, 3, j->unionid);
        sqlite3_bind_blob(q, 4, j->sealed, (int)j->sealed_len, SQLITE_STATIC);
        sqlite3_bind_int64(q, 5, j->now);
        bool ok = exec_stmt(q) == 0 &&
                  (!j->has_hash || insert_session(sh, j, j->hash, j->now, false) == 0);
        if (sp && !ok)
            exec_stmt(stmt(sh, ST_ROLLBACK_TO));
        if (sp)
            exec_stmt(stmt(sh, ST_RELEASE));
        j->status = ok ? STORE_OK : STORE_ERROR;
        return;
    }
    case OP_PUT_SESSION:
        j->status = insert_session(sh, j, j->hash, j->now, false) == 0 ? STORE_OK : STORE_ERROR;
        return;
    case OP_REFRESH: run_refresh(sh, j); return;
    case OP_REVOKE: run_revoke(sh, j); return;
    case OP_PURGE:
        q = stmt(sh, ST_PURGE);
        sqlite3_bind_int64(q, 1, j->now);
        sqlite3_bind_int64(q, 2, j->limit);
        if (exec_stmt(q) != 0)
            return;
        j->out.count = sqlite3_changes(sh->db);
        if (sh->user_retention_s > 0) {
            for (enum stmt_id id = ST_PURGE_USER_SESSIONS; id <= ST_PURGE_USERS; id++) {
                q = stmt(sh, id);
                sqlite3_bind_int64(q, 1, j->now - sh->user_retention_s);
                sqlite3_bind_int64(q, 2, j->limit);
                if (exec_stmt(q) != 0)
                    return;
                j->out.count += sqlite3_changes(sh->db);
            }
        }
        j->status = STORE_OK;
        return;
    case OP_PING:
    case OP_GET_SESSION:
    case OP_GET_USER:
    case OP_USER_INFO: break;
    }
}

/* Reads first: a read never sees a write of its own batch that might not commit (whoever
 * depends on a write learns of it after the commit, so in a later batch). */
static void run_batch(struct sq_shared *sh, struct sq_job *batch)
{
    if (now_ms() - sh->checked_ms >= FILE_CHECK_MS)
        check_file(sh);
    bool broken = atomic_load(&sh->broken), writes = false;
    for (struct sq_job *j = batch; j != NULL; j = j->next) {
        j->status = STORE_ERROR;
        if (broken)
            continue;
        if (j->op < OP_LOGIN)
            run_read(sh, j);
        else
            writes = true;
    }
    if (broken || !writes)
        return;
    if (exec_stmt(stmt(sh, ST_BEGIN)) != 0)
        return;
    for (struct sq_job *j = batch; j != NULL; j = j->next) {
        if (j->op < OP_LOGIN)
            continue;
        /* Some errors (SQLITE_FULL, IOERR, NOMEM) roll the whole transaction back: a write run
         * now would be saved on its own and still be reported failed below. Stop instead. */
        if (sqlite3_get_autocommit(sh->db))
            break;
        run_write(sh, j);
    }
    if (exec_stmt(stmt(sh, ST_COMMIT)) == 0) {
        /* An erasure must leave the openid nowhere in the files: secure_delete zeroed what the
         * transaction deleted, and the WAL, which still holds the earlier page images, is
         * written back and truncated. */
        for (struct sq_job *j = batch; j != NULL; j = j->next)
            if (j->erased) {
                sqlite3_exec(sh->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
                break;
            }
        return;
    }
    /* Nothing of the batch is durable: every write failed. */
    if (!sqlite3_get_autocommit(sh->db))
        exec_stmt(stmt(sh, ST_ROLLBACK));
    for (struct sq_job *j = batch; j != NULL; j = j->next)
        if (j->op >= OP_LOGIN) {
            j->status = STORE_ERROR;
            j->erased = false;
        }
}

static void job_done(void *arg);

/* Hands each job back to its worker, then lets closing stores know. */
static void post_batch(struct sq_shared *sh, struct sq_job *batch)
{
    while (batch != NULL) {
        struct sq_job *j = batch;
        batch = j->next;
        struct sq_store *st = j->st;
        loop_post_item(st->loop, &j->post, job_done, j);
        pthread_mutex_lock(&sh->mu);
        if (--st->inflight == 0)
            pthread_cond_broadcast(&sh->idle);
        pthread_mutex_unlock(&sh->mu);
    }
}

/* Sleeps until jobs are queued (the eventfd), the directory changes (inotify) or it is time
 * to look at the file again. */
static void wait_work(struct sq_shared *sh)
{
    struct pollfd fds[2] = {{.fd = sh->wakefd, .events = POLLIN},
                            {.fd = sh->inotify_fd, .events = POLLIN}};
    int n = poll(fds, sh->inotify_fd >= 0 ? 2 : 1, FILE_CHECK_MS);
    if (n > 0 && (fds[0].revents & POLLIN)) {
        uint64_t v; /* one read takes the whole counter */
        ssize_t r = read(sh->wakefd, &v, sizeof(v));
        (void)r;
    }
    if (n > 0 && sh->inotify_fd >= 0 && (fds[1].revents & POLLIN))
        drain_inotify(sh);
    if (now_ms() - sh->checked_ms >= FILE_CHECK_MS)
        check_file(sh);
}

static void *writer_main(void *arg)
{
    struct sq_shared *sh = arg;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        if (sh->head == NULL) {
            if (sh->stopping)
                break;
            sh->sleeping = true;
            pthread_mutex_unlock(&sh->mu);
            wait_work(sh);
            pthread_mutex_lock(&sh->mu);
            sh->sleeping = false;
            sh->wake_pending = false;
            continue;
        }
        /* Everything queued, up to a bound, is one batch. */
        struct sq_job *batch = sh->head, *last = batch;
        size_t n = 1;
        while (last->next != NULL && n < BATCH_MAX) {
            last = last->next;
            n++;
        }
        sh->head = last->next;
        if (sh->head == NULL)
            sh->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&sh->mu);
        /* Events first, so an operation queued after the file was replaced sees it. */
        if (sh->inotify_fd >= 0)
            drain_inotify(sh);
        run_batch(sh, batch);
        post_batch(sh, batch);
        pthread_mutex_lock(&sh->mu);
    }
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

static void submit(struct sq_shared *sh, struct sq_job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&sh->mu);
    j->st->inflight++;
    if (sh->tail != NULL)
        sh->tail->next = j;
    else
        sh->head = j;
    sh->tail = j;
    bool wake = sh->sleeping && !sh->wake_pending;
    if (wake)
        sh->wake_pending = true;
    pthread_mutex_unlock(&sh->mu);
    if (wake) {
        uint64_t one = 1;
        while (write(sh->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
    }
}

/* ---- jobs, on the worker's side ---- */

static void job_put(struct sq_job *j)
{
    struct sq_store *st = j->st;
    crypto_wipe(j->sealed, j->sealed_len);
    if (j->op == OP_GET_USER)
        crypto_wipe(&j->out.user, sizeof(j->out.user));
    free(j->info);
    j->info = NULL;
    if (st->npool < POOL_MAX) {
        j->next = st->pool;
        st->pool = j;
        st->npool++;
        return;
    }
    free(j);
}

static void job_cancel(struct async *a)
{
    struct sq_job *j = (struct sq_job *)(void *)a;
    j->cancelled = true; /* the writer still has it; job_done returns it to the pool */
}

static struct sq_job *job_get(struct sq_store *st, enum sq_op op, void *arg)
{
    struct sq_job *j = st->pool;
    if (j != NULL) {
        st->pool = j->next;
        st->npool--;
    } else {
        j = malloc(sizeof(*j));
        if (j == NULL)
            return NULL;
        j->info = NULL;
    }
    j->st = st;
    j->op = op;
    j->cancelled = false;
    j->node.next = j->node.prev = NULL;
    j->has_hash = false;
    j->any_app = false;
    j->sealed_len = 0;
    j->erased = false;
    j->appid[0] = j->openid[0] = j->unionid[0] = '\0';
    j->client[0] = j->user_agent[0] = j->reason[0] = '\0';
    j->arg = arg;
    return j;
}

/* Opens what get_user read (on the worker, not the writer: sealing is CPU the workers share). */
static void deliver_user(struct sq_job *j)
{
    struct sq_user_out *o = &j->out.user;
    struct store_user u;
    int status = j->status;
    memset(&u, 0, sizeof(u));
    if (status == STORE_OK) {
        memcpy(u.appid, j->appid, sizeof(u.appid));
        memcpy(u.openid, j->openid, sizeof(u.openid));
        memcpy(u.unionid, o->unionid, sizeof(u.unionid));
        if (!store_user_open(j->st->sh->master_key, &u, o->key, o->key_len, o->prev, o->prev_len,
                             o->prev_at))
            status = STORE_NOT_FOUND;
    }
    j->fn.user(j->arg, status, status == STORE_OK ? &u : NULL);
    crypto_wipe(&u, sizeof(u));
}

static void job_done(void *arg)
{
    struct sq_job *j = arg;
    list_unlink(&j->node);
    if (!j->cancelled) {
        async_end(&j->async);
        switch (j->op) {
        case OP_GET_SESSION:
            j->fn.session(j->arg, j->status, j->status == STORE_OK ? &j->out.session : NULL);
            break;
        case OP_GET_USER: deliver_user(j); break;
        case OP_PURGE:
            j->fn.count(j->arg, j->status, j->status == STORE_OK ? j->out.count : 0);
            break;
        case OP_REFRESH:
            j->fn.session(j->arg, j->status, j->status == STORE_OK ? &j->out.session : NULL);
            break;
        case OP_REVOKE:
            j->fn.revoke(j->arg, j->status, j->status == STORE_OK ? &j->out.revoked : NULL);
            break;
        case OP_USER_INFO:
            j->fn.info(j->arg, j->status, j->status == STORE_OK ? j->info : NULL);
            break;
        case OP_PING:
        case OP_LOGIN:
        case OP_PUT_SESSION:
            if (j->fn.done != NULL)
                j->fn.done(j->arg, j->status);
            break;
        }
    }
    job_put(j);
}

static void start(struct sq_store *st, struct sq_job *j, struct async_slot *slot)
{
    async_begin(&j->async, slot, job_cancel);
    list_push_back(&st->started, &j->node);
    submit(st->sh, j);
}

static bool copy_id(char out[STORE_ID_MAX + 1], const char *s)
{
    size_t n = strlen(s);
    if (n > STORE_ID_MAX)
        return false;
    memcpy(out, s, n + 1);
    return true;
}

/* ---- the ops ---- */

static void sq_ping(struct store *s, struct async_slot *slot, store_done_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = job_get(st, OP_PING, arg);
    if (j == NULL) {
        done(arg, STORE_ERROR);
        return;
    }
    j->fn.done = done;
    start(st, j, slot);
}

static void sq_login(struct store *s, struct async_slot *slot, const struct store_login *in,
                     store_done_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    if (atomic_load(&st->sh->broken)) {
        done(arg, STORE_ERROR);
        return;
    }
    struct sq_job *j = job_get(st, OP_LOGIN, arg);
    if (j == NULL) {
        done(arg, STORE_ERROR);
        return;
    }
    int sealed = -1;
    if (copy_id(j->appid, in->appid) && copy_id(j->openid, in->openid) &&
        copy_id(j->unionid, in->unionid))
        sealed = store_seal(st->sh->master_key, in->appid, in->openid, in->session_key, j->sealed);
    if (sealed < 0) {
        job_put(j);
        done(arg, STORE_ERROR);
        return;
    }
    j->sealed_len = (size_t)sealed;
    if (in->token_hash != NULL) {
        memcpy(j->hash, in->token_hash, CRYPTO_HASH_LEN);
        memcpy(j->sid, in->sid, STORE_SID_LEN);
        store_text_cut(j->client, sizeof(j->client), in->client);
        store_text_cut(j->user_agent, sizeof(j->user_agent), in->user_agent);
        j->has_hash = true;
    }
    j->expires_at = in->expires_at;
    j->now = in->now;
    j->fn.done = done;
    start(st, j, slot);
}

static void sq_put_session(struct store *s, struct async_slot *slot,
                           const uint8_t hash[CRYPTO_HASH_LEN], const char *appid,
                           const char *openid, int64_t expires_at, int64_t now, store_done_fn *done,
                           void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_PUT_SESSION, arg);
    if (j == NULL || !copy_id(j->appid, appid) || !copy_id(j->openid, openid)) {
        if (j != NULL)
            job_put(j);
        done(arg, STORE_ERROR);
        return;
    }
    memcpy(j->hash, hash, CRYPTO_HASH_LEN);
    j->has_hash = true;
    j->expires_at = expires_at;
    j->now = now;
    j->fn.done = done;
    start(st, j, slot);
}

static void sq_get_session(struct store *s, struct async_slot *slot, const char *appid,
                           const uint8_t hash[CRYPTO_HASH_LEN], int64_t now, store_session_fn *done,
                           void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_GET_SESSION, arg);
    if (j == NULL || (appid != NULL && !copy_id(j->appid, appid))) {
        if (j != NULL)
            job_put(j);
        done(arg, STORE_ERROR, NULL);
        return;
    }
    j->any_app = appid == NULL;
    memcpy(j->hash, hash, CRYPTO_HASH_LEN);
    j->now = now;
    j->fn.session = done;
    start(st, j, slot);
}

static void sq_refresh(struct store *s, struct async_slot *slot, const struct store_refresh *in,
                       store_session_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_REFRESH, arg);
    if (j == NULL || (in->appid != NULL && !copy_id(j->appid, in->appid))) {
        if (j != NULL)
            job_put(j);
        done(arg, STORE_ERROR, NULL);
        return;
    }
    j->any_app = in->appid == NULL;
    memcpy(j->hash, in->old_hash, CRYPTO_HASH_LEN);
    memcpy(j->new_hash, in->new_hash, CRYPTO_HASH_LEN);
    j->now = in->now;
    j->grace_s = in->grace_s;
    j->ttl_s = in->ttl_s;
    j->max_age_s = in->max_age_s;
    j->fn.session = done;
    start(st, j, slot);
}

static void sq_revoke(struct store *s, struct async_slot *slot, const struct store_revoke *in,
                      store_revoke_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_REVOKE, arg);
    if (j == NULL || !copy_id(j->appid, in->appid) ||
        (in->openid != NULL && !copy_id(j->openid, in->openid))) {
        if (j != NULL)
            job_put(j);
        done(arg, STORE_ERROR, NULL);
        return;
    }
    j->what = in->what;
    if (in->hash != NULL)
        memcpy(j->hash, in->hash, CRYPTO_HASH_LEN);
    if (in->sid != NULL)
        memcpy(j->sid, in->sid, STORE_SID_LEN);
    store_text_cut(j->reason, sizeof(j->reason), in->reason);
    j->expires_at = in->until;
    j->now = in->now;
    j->fn.revoke = done;
    start(st, j, slot);
}

static void sq_user_info(struct store *s, struct async_slot *slot, const char *appid,
                         const char *openid, int64_t now, store_info_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_USER_INFO, arg);
    if (j != NULL)
        j->info = calloc(1, sizeof(*j->info));
    if (j == NULL || j->info == NULL || !copy_id(j->appid, appid) || !copy_id(j->openid, openid)) {
        if (j != NULL)
            job_put(j);
        done(arg, STORE_ERROR, NULL);
        return;
    }
    j->now = now;
    j->fn.info = done;
    start(st, j, slot);
}

static void sq_get_user(struct store *s, struct async_slot *slot, const char *appid,
                        const char *openid, store_user_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_GET_USER, arg);
    if (j == NULL || !copy_id(j->appid, appid) || !copy_id(j->openid, openid)) {
        if (j != NULL)
            job_put(j);
        done(arg, STORE_ERROR, NULL);
        return;
    }
    j->fn.user = done;
    start(st, j, slot);
}

static void sq_purge_expired(struct store *s, struct async_slot *slot, int64_t now, long limit,
                             store_count_fn *done, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_job *j = atomic_load(&st->sh->broken) ? NULL : job_get(st, OP_PURGE, arg);
    if (j == NULL) {
        done(arg, STORE_ERROR, 0);
        return;
    }
    j->now = now;
    j->limit = limit;
    j->fn.count = done;
    start(st, j, slot);
}

static bool sq_broken(const struct store *s)
{
    const struct sq_store *st = (const struct sq_store *)s;
    return atomic_load(&st->sh->broken);
}

static void sq_close(struct store *s)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_shared *sh = st->sh;
    /* Operations still in flight end without their callbacks. The writer may still hold them:
     * wait for them to be posted back, then run the posts, which return them to the pool. */
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &st->started)
    {
        struct sq_job *j = list_item(pos, struct sq_job, node);
        async_end(&j->async);
        j->cancelled = true;
    }
    pthread_mutex_lock(&sh->mu);
    while (st->inflight > 0)
        pthread_cond_wait(&sh->idle, &sh->mu);
    pthread_mutex_unlock(&sh->mu);
    loop_run_posts(st->loop);
    while (st->pool != NULL) {
        struct sq_job *j = st->pool;
        st->pool = j->next;
        free(j);
    }
    free(st);
}

static const struct store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .login = sq_login,
    .put_session = sq_put_session,
    .get_session = sq_get_session,
    .refresh = sq_refresh,
    .revoke = sq_revoke,
    .user_info = sq_user_info,
    .get_user = sq_get_user,
    .purge_expired = sq_purge_expired,
    .broken = sq_broken,
};

/* ---- opening ---- */

/* Applies the migrations the database lacks, in one transaction. Returns SQLITE_OK or the
 * failing SQLite code, with err. */
static int migrate(sqlite3 *db, char err[STORE_ERR_MAX])
{
    int rc;
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
        snprintf(err, STORE_ERR_MAX,
                 "store: database schema version %d is newer than this wxlogin knows (%d)", version,
                 NMIGRATIONS);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return SQLITE_ERROR;
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
    return SQLITE_OK;
fail:
    rc = sqlite3_errcode(db);
    snprintf(err, STORE_ERR_MAX, "store: migration failed: %s",
             msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc != SQLITE_OK ? rc : SQLITE_ERROR;
}

static pthread_once_t config_once = PTHREAD_ONCE_INIT;

/* Before SQLite initialises: its global memory statistics cost a mutex on every allocation. */
static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static void sq_shared_free(struct store_shared *base)
{
    struct sq_shared *sh = (struct sq_shared *)base;
    if (sh == NULL)
        return;
    if (sh->started) {
        pthread_mutex_lock(&sh->mu);
        sh->stopping = true;
        bool wake = sh->sleeping;
        pthread_mutex_unlock(&sh->mu);
        if (wake) {
            uint64_t one = 1;
            ssize_t w = write(sh->wakefd, &one, sizeof(one));
            (void)w;
        }
        pthread_join(sh->thread, NULL);
    }
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(sh->stmt[i]);
    /* Closing checkpoints the WAL into the database and removes it. */
    sqlite3_close(sh->db);
    if (sh->wakefd >= 0)
        close(sh->wakefd);
    if (sh->inotify_fd >= 0)
        close(sh->inotify_fd);
    pthread_mutex_destroy(&sh->mu);
    pthread_cond_destroy(&sh->idle);
    free(sh->path);
    free(sh);
}

static int sq_open(struct store_shared *base, struct loop *loop, struct store **out,
                   char err[STORE_ERR_MAX])
{
    struct sq_shared *sh = (struct sq_shared *)base;
    struct sq_store *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, STORE_ERR_MAX, "store: out of memory");
        return -1;
    }
    st->base.ops = &sq_ops;
    st->sh = sh;
    st->loop = loop;
    list_init(&st->started);
    *out = &st->base;
    return 0;
}

static const struct store_shared_ops sq_shared_ops = {.open = sq_open, .free = sq_shared_free};

/* Watches the database's directory for the file being deleted, renamed or replaced. */
static void watch_file(struct sq_shared *sh)
{
    sh->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (sh->inotify_fd < 0)
        return; /* the timer alone will do */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", sh->path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    if (inotify_add_watch(sh->inotify_fd, sh->path, IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB) <
            0 ||
        inotify_add_watch(sh->inotify_fd, dir, IN_CREATE | IN_MOVED_TO | IN_DELETE) < 0) {
        close(sh->inotify_fd);
        sh->inotify_fd = -1;
    }
}

/* Makes an existing file (fd, named name) readable by its owner only; tells cfg->warn. */
static void tighten(int fd, const char *name, const struct store_config *cfg)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (sb.st_mode & 077) == 0)
        return;
    char msg[STORE_ERR_MAX + 128];
    if (fchmod(fd, (sb.st_mode & 0700) | 0600) == 0)
        snprintf(msg, sizeof(msg),
                 "store: '%s' was readable by others (mode %04o); made it 0600: it holds "
                 "openids and sealed session keys",
                 name, (unsigned)(sb.st_mode & 07777));
    else
        snprintf(msg, sizeof(msg),
                 "store: '%s' is readable by others (mode %04o) and could not be made 0600: %s",
                 name, (unsigned)(sb.st_mode & 07777), strerror(errno));
    if (cfg->warn != NULL)
        cfg->warn(msg, cfg->warn_arg);
}

/* The database and the files beside it, private before SQLite touches them. */
static int make_private(const char *path, const struct store_config *cfg, char err[STORE_ERR_MAX])
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        /* New: exactly 0600, whatever the umask took away (SQLite would need rw). */
        int rc = fchmod(fd, 0600);
        close(fd);
        if (rc != 0) {
            snprintf(err, STORE_ERR_MAX, "store: cannot set the mode of '%s': %s", path,
                     strerror(errno));
            return -1;
        }
    } else if (errno == EEXIST) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0) {
            tighten(fd, path, cfg);
            close(fd);
        }
        /* else: SQLite reports why it cannot open it */
    } else {
        snprintf(err, STORE_ERR_MAX, "store: cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    static const char *const beside[] = {"-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(beside) / sizeof(beside[0]); i++) {
        char aux[4096 + 16];
        if ((size_t)snprintf(aux, sizeof(aux), "%s%s", path, beside[i]) >= sizeof(aux))
            continue;
        fd = open(aux, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            continue;
        tighten(fd, aux, cfg);
        close(fd);
    }
    return 0;
}

/*
 * The master key's check value (store/seal.h) is kept in the table meta: recorded on the first
 * start (a database from before it records the key it is next started with), compared on every
 * later one. The table is made here rather than by a migration, so it is there whatever the
 * schema version. Returns 0, -1 or STORE_WRONG_KEY, with err.
 */
static int check_master_key(sqlite3 *db, const char *path, const uint8_t *master,
                            char err[STORE_ERR_MAX])
{
    uint8_t want[CRYPTO_HASH_LEN];
    sqlite3_stmt *ins = NULL, *sel = NULL;
    int rc = -1;
    if (store_key_check_value(master, want) != 0) {
        snprintf(err, STORE_ERR_MAX, "store: cannot compute the master key's check value");
        return -1;
    }
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)"
                     " WITHOUT ROWID",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(
            db, "INSERT OR IGNORE INTO meta (name, value) VALUES ('master_key_check', ?1)", -1,
            &ins, NULL) != SQLITE_OK ||
        sqlite3_bind_blob(ins, 1, want, sizeof(want), SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_step(ins) != SQLITE_DONE ||
        sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE name = 'master_key_check'", -1, &sel,
                           NULL) != SQLITE_OK ||
        sqlite3_step(sel) != SQLITE_ROW) {
        snprintf(err, STORE_ERR_MAX, "store: cannot check the master key in '%.100s': %s", path,
                 sqlite3_errmsg(db));
        goto out;
    }
    const void *have = sqlite3_column_blob(sel, 0);
    if (have == NULL || sqlite3_column_bytes(sel, 0) != (int)sizeof(want) ||
        !crypto_equal(have, want, sizeof(want))) {
        snprintf(err, STORE_ERR_MAX, STORE_WRONG_KEY_MSG("the database"));
        rc = STORE_WRONG_KEY;
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    return rc;
}

int store_sqlite_shared_new(const char *path, const struct store_config *cfg,
                            struct store_shared **out, char err[STORE_ERR_MAX])
{
    pthread_once(&config_once, configure_sqlite);
    if (*path == '\0') {
        snprintf(err, STORE_ERR_MAX, "store: empty path");
        return -1;
    }
    struct sq_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL) {
        snprintf(err, STORE_ERR_MAX, "store: out of memory");
        return -1;
    }
    sh->base.ops = &sq_shared_ops;
    sh->master_key = cfg->master_key;
    sh->user_retention_s = cfg->user_retention_s;
    sh->wakefd = -1;
    sh->inotify_fd = -1;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->idle, NULL);
    sh->path = strdup(path);
    char *msg = NULL;
    if (make_private(path, cfg, err) != 0)
        goto fail;
    /* NOMUTEX: after this function the connection belongs to the writer thread alone. */
    int rc = sqlite3_open_v2(
        path, &sh->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK || sh->path == NULL) {
        snprintf(err, STORE_ERR_MAX, "store: cannot open '%s': %s", path,
                 sh->db ? sqlite3_errmsg(sh->db) : "out of memory");
        goto fail;
    }
    /* Never wait for another process: one holding the file is refused at once. */
    sqlite3_busy_timeout(sh->db, 0);
    rc = sqlite3_exec(sh->db,
                      "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL;"
                      " PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 268435456;"
                      /* deleted rows are zeroed, not left in free pages: an erased user
                       * leaves no bytes behind */
                      " PRAGMA secure_delete = ON;",
                      NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        rc = migrate(sh->db, err);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        snprintf(err, STORE_ERR_MAX,
                 "store: '%s' is in use by another process (an SQLite store belongs to one "
                 "wxlogin process; run several instances on Redis)",
                 path);
        goto fail;
    }
    if (rc != SQLITE_OK) {
        if (msg != NULL) /* else migrate() said what failed */
            snprintf(err, STORE_ERR_MAX, "store: cannot set up '%s': %s", path, msg);
        goto fail;
    }
    int kc = check_master_key(sh->db, path, cfg->master_key, err);
    if (kc != 0) {
        sq_shared_free(&sh->base);
        return kc;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(sh->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &sh->stmt[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, STORE_ERR_MAX, "store: cannot prepare statement: %s",
                     sqlite3_errmsg(sh->db));
            goto fail;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(err, STORE_ERR_MAX, "store: '%s' vanished after opening", path);
        goto fail;
    }
    sh->dev = sb.st_dev;
    sh->ino = sb.st_ino;
    sh->checked_ms = now_ms();
    watch_file(sh);
    sh->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sh->wakefd < 0 || pthread_create(&sh->thread, NULL, writer_main, sh) != 0) {
        snprintf(err, STORE_ERR_MAX, "store: cannot start the writer thread: %s", strerror(errno));
        goto fail;
    }
    sh->started = true;
    *out = &sh->base;
    return 0;
fail:
    sqlite3_free(msg);
    sq_shared_free(&sh->base);
    return -1;
}
