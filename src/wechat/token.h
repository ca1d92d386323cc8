/*
 * wechat/token: the app's access token, held centrally and shared by every worker thread.
 *
 * WeChat wants one central token server (中控服务器): whoever fetches a token may invalidate the
 * one others hold. So the token lives here, not in each caller:
 *   - fetched with /cgi-bin/stable_token (force_refresh false) or the classic /cgi-bin/token;
 *   - cached until under 300 s remain, then refreshed early while the old one is still served;
 *   - one fetch at a time (single-flight); requests that need a token meanwhile wait for it and
 *     are woken on their own loop (loop_post), like exchange/exchange.h;
 *   - invalidation after 40001/40014/42001 is compare-and-swap: the cached token is dropped
 *     only if it is still the one that failed, so a late failure never discards a newer token;
 *   - no quota burning: when WeChat hands back the very token that was just rejected, the next
 *     fetch waits 10 s, and a failed fetch is not repeated for 1 s; meanwhile requests fail fast.
 * The fetch runs on the WeChat client of the thread that first needed the token.
 *
 * With several instances (a wechat_token_share), a fetch first reads the shared token; only if
 * it is missing, rejected or short does it take the store's lease and call WeChat, publishing
 * the result for the others; an instance that finds the lease taken reads again every 100 ms
 * until the holder has published. So N instances cause one fetch.
 */
#ifndef WXLOGIN_WECHAT_TOKEN_H
#define WXLOGIN_WECHAT_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#include "wechat/client.h"

struct loop;
struct wechat_token;
struct wechat_token_waiter; /* opaque: a runtime/waitlist waiter */

#define WECHAT_TOKEN_MAX 512

enum wechat_token_api { WECHAT_TOKEN_STABLE, WECHAT_TOKEN_CLASSIC };

enum wechat_token_status {
    WECHAT_TOKEN_OK,
    WECHAT_TOKEN_FAILED,    /* the fetch failed: status/errcode/http_status say how */
    WECHAT_TOKEN_THROTTLED, /* not fetched: WeChat keeps returning a token it rejects */
    WECHAT_TOKEN_ABORTED,   /* the fetching worker stopped */
};

struct wechat_token_result {
    enum wechat_token_status status;
    char token[WECHAT_TOKEN_MAX + 1]; /* WECHAT_TOKEN_OK */
    int64_t expires_at;               /* unix seconds */
    enum wechat_status wstatus;       /* WECHAT_TOKEN_FAILED */
    long errcode;
    long http_status;
};

typedef void wechat_token_fn(const struct wechat_token_result *res, void *arg);

/*
 * How several instances share the token, through a store they all use (session_redis.c
 * implements it; a store of one process has none). ctx is the calling thread's store handle.
 * Callbacks run on that thread's loop, possibly before the call returns.
 */
typedef void wechat_share_read_fn(int status, const char *token, int64_t expires_at, void *arg);
typedef void wechat_share_lease_fn(int status, bool got, void *arg);
struct wechat_token_share {
    /* The shared token ("" when none; status non-zero when the store failed). */
    void (*read)(void *ctx, const char *appid, wechat_share_read_fn *cb, void *arg);
    /* Takes the refresh lease for ms if nobody holds it (SET NX PX with owner). */
    void (*lease)(void *ctx, const char *appid, const char *owner, long ms,
                  wechat_share_lease_fn *cb, void *arg);
    /* Publishes a fetched token (token "" publishes nothing) and releases owner's lease. */
    void (*publish)(void *ctx, const char *appid, const char *owner, const char *token,
                    int64_t expires_at);
    /* Drops the shared token if it is still bad (compare-and-swap). */
    void (*invalidate)(void *ctx, const char *appid, const char *bad);
};

/* Flags for wechat_token_get. */
#define WECHAT_TOKEN_DROP 1u  /* forget the cached token first (admin refresh) */
#define WECHAT_TOKEN_FORCE 2u /* ask WeChat for a brand-new token (stable: force_refresh) */

enum wechat_token_wait { WECHAT_TOKEN_READY, WECHAT_TOKEN_WAIT };

/* appid and secret are copied. NULL on failure. */
struct wechat_token *wechat_token_new(const char *appid, const char *secret,
                                      enum wechat_token_api api);
/* No waiter or fetch may be left (the workers have stopped). Accepts NULL. */
void wechat_token_free(struct wechat_token *t);

/*
 * Gets a usable token. READY: *out holds the token or a failure, now. WAIT: fn(res, arg) will
 * run once on loop (unless cancelled); *waiter identifies the wait. wx is the caller's own
 * WeChat client, used if a fetch must start.
 */
enum wechat_token_wait wechat_token_get(struct wechat_token *t, struct wechat_client *wx,
                                        const struct wechat_token_share *share, void *share_ctx,
                                        struct loop *loop, unsigned flags, wechat_token_fn *fn,
                                        void *arg, struct wechat_token_result *out,
                                        struct wechat_token_waiter **waiter);
/* From the waiter's own thread: abandons the wait; fn will not run. */
void wechat_token_cancel(struct wechat_token *t, struct wechat_token_waiter *waiter);
/* Drops the cached token if it is still `bad` (compare-and-swap), here and in the share. */
void wechat_token_invalidate(struct wechat_token *t, const char *bad,
                             const struct wechat_token_share *share, void *share_ctx);
/* A call with token was answered without a token rejection: a token once rejected proved good,
 * so it no longer counts as "the rejected token handed back". */
void wechat_token_accepted(struct wechat_token *t, const char *token);
/* True while a fetch runs on wx (a stopping worker waits for it: others may be waiting). */
bool wechat_token_fetching_on(struct wechat_token *t, struct wechat_client *wx);
/* wx is going away: a fetch running on it is cancelled and its waiters get ABORTED. */
void wechat_token_detach(struct wechat_token *t, struct wechat_client *wx);
/* Number of fetches started (for tests and logs). */
unsigned long wechat_token_fetches(struct wechat_token *t);

/* True for errcodes that mean "this access token is not (or no longer) valid". */
bool wechat_token_rejected(long errcode);

#endif
