/*
 * session: the store of users and sessions, as an ops table with one implementation per backend
 * (session_sqlite.c now; Redis later). The same tests run against every backend.
 *
 * One store handle per worker thread, opened on that thread's loop. Operations are
 * asynchronous in shape: each takes a completion callback. A backend may call it before the
 * operation function returns (SQLite does) or later from the same loop (a network backend), so
 * callers must cope with both.
 *
 * What is stored:
 *   users     (appid, openid) → unionid, session_key sealed with the master key (AES-256-GCM,
 *             appid and openid as associated data; sealing is the caller's job, the store only
 *             keeps the blob), and the previous sealed key with the time it was replaced.
 *   sessions  SHA-256(token) → appid, openid, expiry. The raw token is never stored, so a copy of
 *             the store lets nobody log in.
 */
#ifndef WXLOGIN_SESSION_H
#define WXLOGIN_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "wechat/token.h"

struct loop;
struct session_store;

#define SESSION_ID_MAX 128     /* appid, openid, unionid */
#define SESSION_SEALED_MAX 128 /* a sealed session_key */
#define SESSION_ERR_MAX 256

enum session_status {
    SESSION_OK = 0,
    SESSION_NOT_FOUND = 1, /* no such (or expired) session */
    SESSION_ERROR = -1,    /* the store failed: the caller answers 503 store_unavailable */
};

struct session_user {
    char appid[SESSION_ID_MAX + 1];
    char openid[SESSION_ID_MAX + 1];
    char unionid[SESSION_ID_MAX + 1]; /* "" when unknown */
    uint8_t sealed_key[SESSION_SEALED_MAX];
    size_t sealed_len;
    /* The key this one replaced and when (get_user only; prev_len 0 when none). Kept so data
     * encrypted just before a re-login still opens during the grace period. */
    uint8_t prev_sealed_key[SESSION_SEALED_MAX];
    size_t prev_len;
    int64_t prev_replaced_at;
};

struct session_record {
    char appid[SESSION_ID_MAX + 1];
    char openid[SESSION_ID_MAX + 1];
    char unionid[SESSION_ID_MAX + 1]; /* "" when unknown */
    int64_t expires_at;               /* unix seconds */
};

typedef void session_done_fn(int status, void *arg);
/* rec is valid during the callback only; NULL unless status is SESSION_OK. */
typedef void session_get_fn(int status, const struct session_record *rec, void *arg);
typedef void session_user_fn(int status, const struct session_user *user, void *arg);
typedef void session_count_fn(int status, long count, void *arg);

/* Who exchanges a login code when several instances share the store. */
enum session_claim {
    SESSION_CLAIM_MINE,  /* nobody else: exchange it, then publish the outcome */
    SESSION_CLAIM_BUSY,  /* another instance is exchanging it right now: ask again later */
    SESSION_CLAIM_KNOWN, /* its outcome is published: outcome/len hold it */
};
/* outcome is valid during the callback only. */
typedef void session_claim_fn(int status, enum session_claim claim, const char *outcome, size_t len,
                              void *arg);

struct session_ops {
    const char *name;
    /* Opens the store described by spec; timeout_ms bounds each network operation. Returns 0
     * or -1 with err. */
    int (*open)(const char *spec, struct loop *loop, long timeout_ms, struct session_store **out,
                char err[SESSION_ERR_MAX]);
    void (*close)(struct session_store *st);
    /* Does the store answer (readiness)? */
    void (*ping)(struct session_store *st, session_done_fn *done, void *arg);
    /*
     * Upserts the user (unique per appid+openid; the newest session_key and a known unionid
     * win) and, when token_hash is not NULL, creates a session expiring at expires_at, in one
     * atomic write. Completes only once the write is durable against a process crash.
     */
    void (*login)(struct session_store *st, const struct session_user *user,
                  const uint8_t *token_hash, int64_t expires_at, int64_t now, session_done_fn *done,
                  void *arg);
    /* Creates a session for an existing user. */
    void (*put_session)(struct session_store *st, const uint8_t token_hash[CRYPTO_HASH_LEN],
                        const char *appid, const char *openid, int64_t expires_at, int64_t now,
                        session_done_fn *done, void *arg);
    /* Finds a live session (expires_at > now) of app appid and its user's unionid. A session
     * of another app is not found: tokens are bound to their app. */
    void (*get_session)(struct session_store *st, const char *appid,
                        const uint8_t token_hash[CRYPTO_HASH_LEN], int64_t now,
                        session_get_fn *done, void *arg);
    /* Deletes a session of app appid; SESSION_NOT_FOUND when there was none. */
    void (*delete_session)(struct session_store *st, const char *appid,
                           const uint8_t token_hash[CRYPTO_HASH_LEN], session_done_fn *done,
                           void *arg);
    void (*get_user)(struct session_store *st, const char *appid, const char *openid,
                     session_user_fn *done, void *arg);
    /*
     * Claims the exchange of the code whose hash is code_key, for hold_ms (after which a
     * claim whose holder died lapses). A store used by one process answers MINE at once.
     */
    void (*code_claim)(struct session_store *st, const char *appid,
                       const uint8_t code_key[CRYPTO_HASH_LEN], long hold_ms,
                       session_claim_fn *done, void *arg);
    /*
     * Publishes a claimed code's outcome for keep_ms, or (outcome NULL) releases the claim so
     * the next request tries again. done may be NULL.
     */
    void (*code_publish)(struct session_store *st, const char *appid,
                         const uint8_t code_key[CRYPTO_HASH_LEN], const char *outcome, size_t len,
                         long keep_ms, session_done_fn *done, void *arg);
    /* How instances share the access token through this store; NULL when one process owns
     * the store. Called with the store handle as ctx. */
    const struct wechat_token_share *token_share;
    /* Deletes up to limit expired sessions; reports how many. */
    void (*purge_expired)(struct session_store *st, int64_t now, long limit, session_count_fn *done,
                          void *arg);
};

/* Every backend's handle starts with this. */
struct session_store {
    const struct session_ops *ops;
};

/*
 * Opens a store from its URL: "sqlite:PATH" (PATH relative to the working directory),
 * "redis://[:password@]host[:port][/db]" or "redis+unix:///path[?db=N]".
 * Returns 0 or -1 with err (which never contains a password).
 */
int session_open(const char *url, struct loop *loop, long timeout_ms, struct session_store **out,
                 char err[SESSION_ERR_MAX]);
/* Accepts NULL. */
void session_close(struct session_store *st);

/* For SQLite stores: the database path in url, or NULL for other backends. */
const char *session_sqlite_path(const char *url);

/* Checks a store URL without opening it. Returns 0 or -1 with err. */
int session_url_check(const char *url, char err[SESSION_ERR_MAX]);
/* The URL fit for logs: a password is replaced by "***". */
void session_url_redacted(const char *url, char *out, size_t cap);
/* True for stores shared by several instances (they need a configured master key). */
bool session_url_shared(const char *url);

extern const struct session_ops session_sqlite_ops;
extern const struct session_ops session_redis_ops;

#endif
