/*
 * store: the state wxlogin keeps, behind one API with a backend per kind of store.
 *
 * Three contracts, each an ops table:
 *   sessions  users (appid, openid → unionid, session_key, the previous session_key, first and
 *             last login), their sessions (SHA-256(token) → appid, openid, expiry, the session's
 *             id, where and when it began) and bans. A session is a chain of tokens: a refresh
 *             replaces its token by the next one (the old one lives on for a grace period),
 *             and revoking a session ends every token of its chain. Every store has them.
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
    STORE_BANNED = 2,    /* login: the user is banned; nothing was written */
    STORE_ERROR = -1,    /* the store failed: the caller answers 503 store_unavailable */
};

#define STORE_SID_LEN 16      /* bytes of a session's id (random, drawn at login) */
#define STORE_CLIENT_MAX 45   /* a client address as text (INET6_ADDRSTRLEN - 1) */
#define STORE_UA_MAX 255      /* bytes of a User-Agent kept (cut at a character boundary) */
#define STORE_REASON_MAX 256  /* bytes of a ban's reason */
#define STORE_SESSIONS_MAX 50 /* sessions a user's record lists */
#define STORE_REVOKED_MAX 32  /* token hashes a revocation reports (for caches) */

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
 * store), and optionally a new session, which starts a chain at now. */
struct store_login {
    const char *appid, *openid, *unionid; /* unionid "" when unknown */
    const char *session_key;
    const uint8_t *token_hash; /* CRYPTO_HASH_LEN bytes, or NULL: no session */
    const uint8_t *sid;        /* STORE_SID_LEN bytes, with token_hash */
    const char *client;        /* the client's address and User-Agent, kept with the session for */
    const char *user_agent;    /* the operator (NULL: unknown; cut to fit) */
    int64_t expires_at;
    int64_t now;
};

/* A refresh: old_hash's token is replaced by new_hash's, in the same chain. */
struct store_refresh {
    const char *appid; /* NULL: whatever the old token's app (see get_session) */
    const uint8_t *old_hash, *new_hash;
    int64_t now;
    long grace_s;   /* the old token lives this much longer (or less, if it expires sooner) */
    long ttl_s;     /* the new token's lifetime... */
    long max_age_s; /* ...within the chain's: no token outlives chain start + max_age_s */
};

/* One live session of a user, as an operator sees it. */
struct store_session_info {
    uint8_t sid[STORE_SID_LEN];
    int64_t created;   /* the login that started the chain */
    int64_t expires;   /* its newest token's expiry */
    int64_t refreshed; /* its newest token's refresh; 0: never refreshed */
    char client[STORE_CLIENT_MAX + 1];
    char user_agent[STORE_UA_MAX + 1];
};

/* A user as an operator sees them (no session key). */
struct store_user_info {
    bool known; /* the user has logged in (false: only a ban names them) */
    char unionid[STORE_ID_MAX + 1];
    int64_t first_login, last_login;
    bool banned; /* a ban in force */
    char ban_reason[STORE_REASON_MAX + 1];
    int64_t ban_since, ban_until; /* until 0: for good */
    size_t nsessions;             /* live sessions listed (oldest first), at most... */
    struct store_session_info sessions[STORE_SESSIONS_MAX];
    bool more_sessions; /* ...and there were more */
};

/* What a revocation does. Each is atomic, and a session it ends ends with every token of its
 * chain. */
enum store_revoke_what {
    STORE_REVOKE_TOKEN, /* the session of token hash (a logout) */
    STORE_REVOKE_SID,   /* the session whose id is sid */
    STORE_REVOKE_USER,  /* every session of the user ("log out everywhere") */
    STORE_BAN,          /* bans the user (reason, until; a user never seen may be banned) and
                           ends their sessions */
    STORE_UNBAN,        /* lifts the user's ban, if any */
    STORE_ERASE,        /* the user, their keys, sessions and ban, and the outcomes of their
                           codes a shared store published: nothing of the openid stays */
};

struct store_revoke {
    enum store_revoke_what what;
    const char *appid;
    const char *openid;  /* USER, BAN, UNBAN, ERASE */
    const uint8_t *hash; /* TOKEN */
    const uint8_t *sid;  /* SID: STORE_SID_LEN bytes */
    const char *reason;  /* BAN */
    int64_t until;       /* BAN: 0 for good */
    int64_t now;
};

/* What a revocation did: count is the live sessions it ended (ERASE, UNBAN: 1 when there was
 * something to erase or lift, else STORE_NOT_FOUND). hashes are token hashes it removed, for
 * a cache to forget (up to STORE_REVOKED_MAX; more: there were others). */
struct store_revoked {
    long count;
    size_t nhashes;
    bool more;
    uint8_t hashes[STORE_REVOKED_MAX][CRYPTO_HASH_LEN];
};

typedef void store_done_fn(void *arg, int status);
typedef void store_session_fn(void *arg, int status, const struct store_session *s);
typedef void store_user_fn(void *arg, int status, const struct store_user *u);
typedef void store_count_fn(void *arg, int status, long count);
typedef void store_info_fn(void *arg, int status, const struct store_user_info *u);
typedef void store_revoke_fn(void *arg, int status, const struct store_revoked *r);

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
    /*
     * Replaces a live token by the next one of its chain, atomically: the old one then expires
     * within grace_s; the new one gets ttl_s, cut to the chain's max_age_s. A token already
     * replaced answers its successor again (the caller derives the new token from the old, so
     * concurrent refreshes of one token agree on one chain). done gets the new token's session;
     * STORE_NOT_FOUND when the old token is not live or the chain has reached its max age.
     */
    void (*refresh)(struct store *st, struct async_slot *slot, const struct store_refresh *in,
                    store_session_fn *done, void *arg);
    /* Ends sessions, bans, lifts bans, erases (struct store_revoke); STORE_NOT_FOUND when there
     * was nothing to end (TOKEN, SID), lift or erase. */
    void (*revoke)(struct store *st, struct async_slot *slot, const struct store_revoke *in,
                   store_revoke_fn *done, void *arg);
    /* The user's record, their ban and their live sessions; STORE_NOT_FOUND when neither a
     * user nor a ban is known. */
    void (*user_info)(struct store *st, struct async_slot *slot, const char *appid,
                      const char *openid, int64_t now, store_info_fn *done, void *arg);
    /* The user with their keys opened; STORE_NOT_FOUND when unknown or the key does not open
     * (e.g. another master key). */
    void (*get_user)(struct store *st, struct async_slot *slot, const char *appid,
                     const char *openid, store_user_fn *done, void *arg);
    /* Deletes up to limit expired sessions, and up to limit users who have not logged in since
     * user_retention_s (when set); reports how many rows went. */
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
    /* Publishes the outcome of owner's claim for keep_ms (fire and forget); openid ("" for
     * none) is the user it names, so erasing the user removes it too. */
    void (*publish)(struct store *st, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                    const char *openid, const char *outcome, size_t len, long keep_ms);
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
    /* Users not seen for this long are purged (0: kept); never under the sessions' max age, so
     * a purged user has no live session. */
    long user_retention_s;
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

static inline void store_refresh(struct store *st, struct async_slot *slot,
                                 const struct store_refresh *in, store_session_fn *done, void *arg)
{
    st->ops->refresh(st, slot, in, done, arg);
}

static inline void store_revoke(struct store *st, struct async_slot *slot,
                                const struct store_revoke *in, store_revoke_fn *done, void *arg)
{
    st->ops->revoke(st, slot, in, done, arg);
}

static inline void store_user_info(struct store *st, struct async_slot *slot, const char *appid,
                                   const char *openid, int64_t now, store_info_fn *done, void *arg)
{
    st->ops->user_info(st, slot, appid, openid, now, done, arg);
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
                                       const uint8_t key[CRYPTO_HASH_LEN], const char *openid,
                                       const char *outcome, size_t len, long keep_ms)
{
    st->claims->publish(st, appid, key, openid, outcome, len, keep_ms);
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

/* A session id as the API shows it: "s_" and 22 characters of base64url. */
#define STORE_SID_TEXT_LEN 24
void store_sid_text(const uint8_t sid[STORE_SID_LEN], char out[STORE_SID_TEXT_LEN + 1]);
/* Parses one; 0 or -1. */
int store_sid_parse(const char *s, uint8_t sid[STORE_SID_LEN]);
/* A new random session id. Returns 0 or -1. */
int store_sid_new(uint8_t sid[STORE_SID_LEN]);

/* A random owner id (STORE_OWNER_LEN hex characters and a NUL). Returns 0 or -1. */
int store_owner_new(char out[STORE_OWNER_LEN + 1]);

#endif
