/*
 * login: a wx.login code in, a stored user (and, when asked, its session) out.
 *
 * The whole protocol of POST /openid and POST /v1/login, as one asynchronous operation:
 *   1. the in-process exchange table (exchange/exchange.h): the first request with a code
 *      leads, concurrent ones wait for its outcome, later repeats reuse a remembered outcome;
 *   2. with a store shared by several instances, a claim on the code in the store, so the
 *      instances exchange it once between them too (another's published outcome is reused; a
 *      claim still held is polled until it lapses);
 *   3. WeChat's code2Session (wechat/api.h);
 *   4. one durable write of the user, their session_key and the code's session (store/store.h);
 *   5. the outcome told to the waiters and, when shared, published for the other instances.
 * One code costs one WeChat call whatever the clients do; session_key never leaves the server.
 *
 * One code, at most one session. The session's token is not drawn at random but derived from
 * the code: HMAC-SHA256(token key, appid "\n" code), a 256-bit PRF output under a key derived
 * from the master key, encoded as every token is. Only a request carrying the code can compute
 * it, and no token is ever kept or published for repeats. The leader stores the session; a
 * repeat of the code (a waiter, a remembered or published outcome) computes the same token and,
 * instead of creating a session, looks that one up: it is answered the same token and expiry
 * while the session lives and the code was exchanged less than reuse_window_ms ago, else
 * LOGIN_CODE_USED (so a logout, an expiry or the window's end kills the code for good). A repeat
 * wanting a session of a code whose leader made none (POST /openid first) is LOGIN_CODE_USED
 * too; repeats without a session (POST /openid) are answered the identity as before.
 *
 * Two rate limits (limit/limit.h) apply here, where what they count happens: the app's ceiling
 * on calls to WeChat is taken just before code2Session, so a repeat answered without WeChat
 * takes nothing, and a refused leader sends nothing (its waiters are refused with it); the
 * user's limit is taken once code2Session named the user, before the write: past it the user
 * and their new session_key are still recorded (WeChat has moved on to that key) but no session
 * is made and the login is refused.
 *
 * Cancelling the operation (the request's deadline, shutdown) stops whatever step runs, tells
 * the waiters the exchange was aborted and releases the claim; its callback never runs.
 */
#ifndef WXLOGIN_LOGIN_H
#define WXLOGIN_LOGIN_H

#include <stdbool.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "exchange/exchange.h"
#include "wechat/api.h"

struct async_slot;
struct limit;
struct loop;
struct store;
struct login_ctx;

struct login_opts {
    long session_ttl_s;   /* lifetime of a new session's token... */
    long max_age_s;       /* ...within its chain's (refreshes included) */
    long outcome_keep_ms; /* how long other instances may reuse a published outcome */
    long reuse_window_ms; /* how long after its exchange a repeat of a code gets its session */
    /* LOGIN_TOKEN_KEY_LEN bytes from login_token_key(), borrowed for the context's lifetime */
    const uint8_t *token_key;
    struct limit *user_limit;   /* per app and openid, after the exchange; NULL: none */
    struct limit *wechat_limit; /* per app, before code2Session; NULL: none */
};

#define LOGIN_TOKEN_KEY_LEN CRYPTO_HASH_LEN

enum login_status {
    LOGIN_OK,
    LOGIN_WECHAT,    /* WeChat refused or failed: reply says how */
    LOGIN_STORE,     /* the store failed */
    LOGIN_BUSY,      /* another instance still holds the code's claim */
    LOGIN_ABORTED,   /* the request that exchanged the code was cancelled */
    LOGIN_CODE_USED, /* a repeat wants the code's session, which is gone or never was */
    LOGIN_LIMITED,   /* a rate limit refused it: limited_user and wait_us say which and how long */
    LOGIN_BANNED,    /* the user is banned here: nothing was stored */
    LOGIN_INTERNAL   /* out of memory, no randomness */
};

struct login_result {
    enum login_status status;
    /* LOGIN_OK */
    const char *openid;
    const char *unionid; /* "" when none */
    const char *token;   /* with a session: the code's token (wiped after the callback) */
    int64_t expires_at;
    bool repeat; /* answered from an earlier exchange of the code (its session, if any, reused) */
    /* LOGIN_WECHAT */
    const struct wechat_reply *reply;
    /* LOGIN_LIMITED: true for the user's limit (the code was exchanged and the user recorded,
     * without a session), false for the app's ceiling on WeChat calls (nothing was sent) */
    bool limited_user;
    uint64_t wait_us;
};

typedef void login_done_fn(void *arg, const struct login_result *r);

/* The key tokens are derived with, from the master key (HMAC-SHA256 under a fixed label, so it
 * is independent of the sealing that uses the master key itself). Returns 0 or -1. */
int login_token_key(const uint8_t master_key[CRYPTO_KEY_LEN], uint8_t out[LOGIN_TOKEN_KEY_LEN]);

/*
 * The token that follows token in its session's chain (POST /v1/refresh): derived, like a
 * code's, under the token key, HMAC-SHA256(token key, "refresh\n" token), so every request
 * refreshing one token computes the same successor and the store keeps one chain. Writes it and
 * its hash. Returns 0 or -1.
 */
int login_next_token(const uint8_t token_key[LOGIN_TOKEN_KEY_LEN], const char *token,
                     char next[CRYPTO_TOKEN_LEN + 1], uint8_t next_hash[CRYPTO_HASH_LEN]);

/* Where a login comes from, kept with its session for the operator (borrowed for the call;
 * NULL: unknown). */
struct login_origin {
    const char *client;     /* the client's address */
    const char *user_agent; /* its User-Agent */
};

/* One per worker: its WeChat client and store, the process's exchange table. NULL on failure. */
struct login_ctx *login_ctx_new(const struct login_opts *opts, struct exchange *x,
                                struct wechat_client *wx, struct store *store, struct loop *loop);
void login_ctx_free(struct login_ctx *lc);
/* A reload turned a limit on or off (NULL: off); from the context's thread. The limits must
 * outlive the context: a login in flight may be taking from the one it replaces. */
void login_ctx_set_limits(struct login_ctx *lc, struct limit *user_limit,
                          struct limit *wechat_limit);

/*
 * Exchanges code (already validated by the caller) for app; with want_session also answers the
 * code's session (created by the leader, found by a repeat). done runs once on the worker's loop
 * unless slot is cancelled first. Returns 0, or -1 when it could not start (done is not called).
 */
int login_code(struct login_ctx *lc, struct async_slot *slot, const struct wechat_app *app,
               const char *code, bool want_session, const struct login_origin *origin,
               login_done_fn *done, void *arg);

#endif
