/*
 * store: the state wxlogin keeps, behind one API with a backend per kind of store.
 *
 * Three contracts, each an ops table:
 *   sessions  users (appid, openid → unionid, session_key, the previous session_key) and their
 *             sessions (SHA-256(token) → appid, openid, expiry). Every store has them.
 *   claims    who exchanges a login code when several instances share the store, and the
 *             outcome they publish for the others. NULL for a store of one process, whose
 *             in-memory exchange table is the whole truth.
 *   lease     how several instances share the app's access token: the shared token, a lease
 *             on fetching a new one, its publication and compare-and-swap invalidation. NULL
 *             for a store of one process.
 *   limits    token buckets every instance draws from at once (limit/limit.h): the rate limits
 *             shared by several instances. NULL for a store of one process, whose limits live
 *             in its memory.
 * Callers use the inline wrappers below (store_get_session()...), never the tables, so a
 * decorator slots in without them knowing: the session cache (store/cache.c) wraps the SQLite
 * backend and keeps itself coherent with the logouts it sees.
 *
 * Sealing is the store's business too: session keys go in and come out as plain text, and
 * are sealed at rest with the master key (store/seal.h, the one place that knows the AAD).
 *
 * Backends: "sqlite:PATH" (store/sqlite.c: one process's embedded store, one writer thread with
 * group commit) and "redis://..." / "redis+unix://..." (store/redis.c: several instances).
 *
 * Threads: a struct store_shared is made once per process; each worker opens its own struct
 * store on its loop. Every operation runs into the caller's pending slot (runtime/async.h): its
 * callback runs later on the caller's loop, or at once before the function returns, and never
 * after the slot is cancelled. Results passed to callbacks are valid during the call only.
 */
#ifndef WXLOGIN_STORE_H
#define WXLOGIN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"

struct async_slot;
struct loop;
struct store;
struct store_shared;

#define STORE_ID_MAX 128 /* appid, openid, unionid */
#define STORE_KEY_MAX 64 /* a session_key as text (24 characters in practice) */
#define STORE_TOKEN_MAX 512
#define STORE_OUTCOME_MAX 1024
#define STORE_OWNER_LEN 32 /* hex characters of a claim or lease owner */
#define STORE_ERR_MAX 256

enum store_status {
    STORE_OK = 0,
    STORE_NOT_FOUND = 1, /* no such (or expired) session or user */
    STORE_ERROR = -1,    /* the store failed: the caller answers 503 store_unavailable */
};

/* A live session and its user's unionid. */
struct store_session {
    char appid[STORE_ID_MAX + 1];
    char openid[STORE_ID_MAX + 1];
    char unionid[STORE_ID_MAX + 1]; /* "" when unknown */
    int64_t expires_at;             /* unix seconds */
};

/* A user with their session keys opened. */
struct store_user {
    char appid[STORE_ID_MAX + 1];
    char openid[STORE_ID_MAX + 1];
    char unionid[STORE_ID_MAX + 1];
    char session_key[STORE_KEY_MAX + 1];
    /* The key the current one replaced, and when ("" when none or it does not open). Kept so
     * data encrypted just before a re-login still opens during the grace period. */
    char prev_session_key[STORE_KEY_MAX + 1];
    int64_t prev_replaced_at;
};

/* What a login writes: the user, with their newest session_key (plain text, sealed by the
 * store), and optionally a new session. */
struct store_login {
    const char *appid, *openid, *unionid; /* unionid "" when unknown */
    const char *session_key;
    const uint8_t *token_hash; /* CRYPTO_HASH_LEN bytes, or NULL: no session */
    int64_t expires_at;
    int64_t now;
};

typedef void store_done_fn(void *arg, int status);
typedef void store_session_fn(void *arg, int status, const struct store_session *s);
typedef void store_user_fn(void *arg, int status, const struct store_user *u);
typedef void store_count_fn(void *arg, int status, long count);

/* ---- sessions and users ---- */
struct store_ops {
    const char *name;
    void (*close)(struct store *st);
    /* Does the store answer (readiness)? */
    void (*ping)(struct store *st, struct async_slot *slot, store_done_fn *done, void *arg);
    /*
     * Upserts the user (unique per appid+openid; the newest session_key and a known unionid
     * win; the replaced key is kept as the previous one) and, with a token hash, creates a
     * session, in one atomic write. Completes once the write is durable against a crash of
     * the process.
     */
    void (*login)(struct store *st, struct async_slot *slot, const struct store_login *in,
                  store_done_fn *done, void *arg);
    /* Creates a session for an existing user. */
    void (*put_session)(struct store *st, struct async_slot *slot,
                        const uint8_t hash[CRYPTO_HASH_LEN], const char *appid, const char *openid,
                        int64_t expires_at, int64_t now, store_done_fn *done, void *arg);
    /*
     * Finds a live session (expires_at > now) of app appid and its user's unionid. A session
     * of another app is not found: tokens are bound to their app. appid NULL: the session
     * whatever its app (s->appid says which), for requests that name none; one look-up all the
     * same (a token hash is unique across apps). Stores that keep each app's sessions apart
     * (Redis) look in the apps of store_config.apps.
     */
    void (*get_session)(struct store *st, struct async_slot *slot, const char *appid,
                        const uint8_t hash[CRYPTO_HASH_LEN], int64_t now, store_session_fn *done,
                        void *arg);
    /* Deletes a session of app appid; STORE_NOT_FOUND when there was none. */
    void (*delete_session)(struct store *st, struct async_slot *slot, const char *appid,
                           const uint8_t hash[CRYPTO_HASH_LEN], store_done_fn *done, void *arg);
    /* The user with their keys opened; STORE_NOT_FOUND when unknown or the key does not open
     * (e.g. another master key). */
    void (*get_user)(struct store *st, struct async_slot *slot, const char *appid,
                     const char *openid, store_user_fn *done, void *arg);
    /* Deletes up to limit expired sessions; reports how many. */
    void (*purge_expired)(struct store *st, struct async_slot *slot, int64_t now, long limit,
                          store_count_fn *done, void *arg);
    /* True when the store knows it cannot serve (its file was replaced); cheap. May be NULL. */
    bool (*broken)(const struct store *st);
};

/* ---- login-code claims (several instances) ---- */
enum store_claim {
    STORE_CLAIM_MINE,  /* nobody else: exchange it, then publish the outcome */
    STORE_CLAIM_BUSY,  /* another instance is exchanging it right now: ask again later */
    STORE_CLAIM_KNOWN, /* its outcome is published: outcome/len hold it */
};
typedef void store_claim_fn(void *arg, int status, enum store_claim claim, const char *outcome,
                            size_t len);
struct store_claim_ops {
    /* Claims the exchange of the code whose hash is key, as owner (STORE_OWNER_LEN hex
     * characters), for hold_ms (after which a claim whose holder died lapses). */
    void (*claim)(struct store *st, struct async_slot *slot, const char *appid,
                  const uint8_t key[CRYPTO_HASH_LEN], const char *owner, long hold_ms,
                  store_claim_fn *done, void *arg);
    /* Publishes the outcome of owner's claim for keep_ms (fire and forget). */
    void (*publish)(struct store *st, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                    const char *outcome, size_t len, long keep_ms);
    /* Releases owner's claim, if it still holds it, so the next request tries again (fire and
     * forget; safe to send whether or not the claim was granted). */
    void (*release)(struct store *st, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                    const char *owner);
};

/* ---- the access-token lease (several instances) ---- */
/* token "" when there is none. */
typedef void store_token_fn(void *arg, int status, const char *token, int64_t expires_at);
typedef void store_lease_fn(void *arg, int status, bool got);
struct store_lease_ops {
    void (*read)(struct store *st, struct async_slot *slot, const char *appid, store_token_fn *done,
                 void *arg);
    /* Takes the fetch lease for ms if nobody holds it (owner: STORE_OWNER_LEN hex). */
    void (*take)(struct store *st, struct async_slot *slot, const char *appid, const char *owner,
                 long ms, store_lease_fn *done, void *arg);
    /* Publishes a fetched token (token "" publishes nothing) and releases owner's lease. */
    void (*publish)(struct store *st, const char *appid, const char *owner, const char *token,
                    int64_t expires_at);
    /* Drops the shared token if it is still bad (compare-and-swap). */
    void (*invalidate)(struct store *st, const char *appid, const char *bad);
};

/* ---- rate limits shared by several instances ---- */
/* wait_us 0: a token was taken; otherwise none was, and the next one is due in wait_us. */
typedef void store_limit_fn(void *arg, int status, uint64_t wait_us);
struct store_limit_ops {
    /*
     * Takes a token of the bucket named name (of app appid; "" for a bucket of no app), atomically
     * for every instance: a bucket holds burst tokens and gains one every interval_us (GCRA, the
     * same arithmetic as limit_bucket_take(), on the store's clock). name is at most
     * STORE_LIMIT_NAME_MAX characters of [a-z0-9:]. An idle bucket takes no room: its key expires
     * when the bucket is full again.
     */
    void (*take)(struct store *st, struct async_slot *slot, const char *appid, const char *name,
                 uint64_t interval_us, uint32_t burst, store_limit_fn *done, void *arg);
};
#define STORE_LIMIT_NAME_MAX 64

/* Every backend's handle starts with this. */
struct store {
    const struct store_ops *ops;
    const struct store_claim_ops *claims; /* NULL: one process */
    const struct store_lease_ops *lease;  /* NULL: one process */
    const struct store_limit_ops *limits; /* NULL: one process */
};

/* ---- opening ---- */

/* Something the operator should hear about that does not stop the store (msg is borrowed for
 * the call). */
typedef void store_warn_fn(const char *msg, void *arg);

struct store_config {
    const char *url;
    long timeout_ms;           /* network stores: connect and command deadline */
    const uint8_t *master_key; /* CRYPTO_KEY_LEN bytes, borrowed; seals session keys */
    size_t cache_entries;      /* SQLite: sessions kept in memory (0: none) */
    /* The apps served (borrowed for store_shared_new()): where get_session() with no app looks
     * on stores that keep each app's sessions apart. */
    const char *const *apps;
    size_t napps;
    store_warn_fn *warn; /* may be NULL */
    void *warn_arg;
};

/* The process-wide part (SQLite's database and writer thread, the session cache). Returns 0
 * or -1 with err (which never contains a password). SQLite: the database and the files beside
 * it (-wal, -shm, -journal) are made readable by their owner only (0600), whatever the umask;
 * files found wider are tightened, and cfg->warn told. */
int store_shared_new(const struct store_config *cfg, struct store_shared **out,
                     char err[STORE_ERR_MAX]);
/* store_shared_new()'s answer when the store was sealed with another master key (its check
 * value, store/seal.h, differs): the caller exits 2. */
#define STORE_WRONG_KEY (-2)
/* After every store of it is closed. Accepts NULL. */
void store_shared_free(struct store_shared *sh);
/* A worker's store on its loop. Returns 0 or -1 with err. */
int store_open(struct store_shared *sh, struct loop *loop, struct store **out,
               char err[STORE_ERR_MAX]);
/* Closes a worker's store on its own thread: operations still in flight end without their
 * callbacks. Accepts NULL. */
void store_close(struct store *st);

/* ---- URLs ---- */

/* Checks a store URL without opening it. Returns 0 or -1 with err. */
int store_url_check(const char *url, char err[STORE_ERR_MAX]);
/* Any URL (the store's, wechat_base) fit for logs: the userinfo of its authority
 * (scheme://user:password@host) is replaced by "***"; cut to cap - 1 bytes. Text that is not
 * scheme://... is copied as it is: errors about a URL that may hold a password name the
 * problem, never the value. */
void store_url_redacted(const char *url, char *out, size_t cap);
/* True for stores shared by several instances (they need a configured master key). */
bool store_url_shared(const char *url);
/* For SQLite stores: the database path in url, or NULL for other backends. */
const char *store_sqlite_path(const char *url);

/* ---- the wrappers callers use ---- */

static inline void store_ping(struct store *st, struct async_slot *slot, store_done_fn *done,
                              void *arg)
{
    st->ops->ping(st, slot, done, arg);
}

static inline void store_login(struct store *st, struct async_slot *slot,
                               const struct store_login *in, store_done_fn *done, void *arg)
{
    st->ops->login(st, slot, in, done, arg);
}

static inline void store_put_session(struct store *st, struct async_slot *slot,
                                     const uint8_t hash[CRYPTO_HASH_LEN], const char *appid,
                                     const char *openid, int64_t expires_at, int64_t now,
                                     store_done_fn *done, void *arg)
{
    st->ops->put_session(st, slot, hash, appid, openid, expires_at, now, done, arg);
}

static inline void store_get_session(struct store *st, struct async_slot *slot, const char *appid,
                                     const uint8_t hash[CRYPTO_HASH_LEN], int64_t now,
                                     store_session_fn *done, void *arg)
{
    st->ops->get_session(st, slot, appid, hash, now, done, arg);
}

static inline void store_delete_session(struct store *st, struct async_slot *slot,
                                        const char *appid, const uint8_t hash[CRYPTO_HASH_LEN],
                                        store_done_fn *done, void *arg)
{
    st->ops->delete_session(st, slot, appid, hash, done, arg);
}

static inline void store_get_user(struct store *st, struct async_slot *slot, const char *appid,
                                  const char *openid, store_user_fn *done, void *arg)
{
    st->ops->get_user(st, slot, appid, openid, done, arg);
}

static inline void store_purge_expired(struct store *st, struct async_slot *slot, int64_t now,
                                       long limit, store_count_fn *done, void *arg)
{
    st->ops->purge_expired(st, slot, now, limit, done, arg);
}

/* True when several instances share this store (claims and lease exist). */
static inline bool store_is_shared(const struct store *st)
{
    return st->claims != NULL;
}

static inline void store_claim(struct store *st, struct async_slot *slot, const char *appid,
                               const uint8_t key[CRYPTO_HASH_LEN], const char *owner, long hold_ms,
                               store_claim_fn *done, void *arg)
{
    st->claims->claim(st, slot, appid, key, owner, hold_ms, done, arg);
}

static inline void store_claim_publish(struct store *st, const char *appid,
                                       const uint8_t key[CRYPTO_HASH_LEN], const char *outcome,
                                       size_t len, long keep_ms)
{
    st->claims->publish(st, appid, key, outcome, len, keep_ms);
}

static inline void store_claim_release(struct store *st, const char *appid,
                                       const uint8_t key[CRYPTO_HASH_LEN], const char *owner)
{
    st->claims->release(st, appid, key, owner);
}

static inline void store_lease_read(struct store *st, struct async_slot *slot, const char *appid,
                                    store_token_fn *done, void *arg)
{
    st->lease->read(st, slot, appid, done, arg);
}

static inline void store_lease_take(struct store *st, struct async_slot *slot, const char *appid,
                                    const char *owner, long ms, store_lease_fn *done, void *arg)
{
    st->lease->take(st, slot, appid, owner, ms, done, arg);
}

static inline void store_lease_publish(struct store *st, const char *appid, const char *owner,
                                       const char *token, int64_t expires_at)
{
    st->lease->publish(st, appid, owner, token, expires_at);
}

static inline void store_lease_invalidate(struct store *st, const char *appid, const char *bad)
{
    st->lease->invalidate(st, appid, bad);
}

static inline void store_limit_take(struct store *st, struct async_slot *slot, const char *appid,
                                    const char *name, uint64_t interval_us, uint32_t burst,
                                    store_limit_fn *done, void *arg)
{
    st->limits->take(st, slot, appid, name, interval_us, burst, done, arg);
}

/* A random owner id (STORE_OWNER_LEN hex characters and a NUL). Returns 0 or -1. */
int store_owner_new(char out[STORE_OWNER_LEN + 1]);

#endif
