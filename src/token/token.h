/*
 * token: an app's access token, held centrally and shared by every worker thread.
 *
 * WeChat wants one central token server (中控服务器): whoever fetches a token may invalidate the
 * one others hold. So the token lives here, not in each caller. This module is the shared
 * state and its rules; how a token is fetched is a fetcher's business (token/fetch.h):
 *   - cached until under 300 s remain, then refreshed early while the old one is still served;
 *   - one fetch at a time (single-flight); requests that need a token meanwhile wait in their
 *     pending slot and are woken on their own loop (runtime/waitlist.h);
 *   - invalidation after a rejection is compare-and-swap: the cached token is dropped only if it
 *     is still the one that failed, so a late failure never discards a newer token;
 *   - no quota burning: when WeChat hands back the very token that was just rejected, the next
 *     fetch waits 10 s, and a failed fetch is not repeated for 1 s; meanwhile requests fail fast;
 *     an early refresh that brings back a token still inside the 300 s margin (a WeChat that
 *     does not renew early returns the same token until it expires) is not repeated before that
 *     token expires: it is served until then, instead of one fetch per request.
 *
 * Fetchers: every worker registers one per app at start-up. A fetch runs on the fetcher of the
 * worker whose request first needed it; when that worker stops, its fetcher's unregistering
 * aborts the fetch and its waiters (on any worker) get TOKEN_ABORTED.
 */
#ifndef WXLOGIN_TOKEN_H
#define WXLOGIN_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#include "util/list.h"
#include "wechat/api.h"

struct async_slot;
struct loop;
struct token;
struct token_fetcher;

enum token_status {
    TOKEN_OK,
    TOKEN_FAILED,    /* the fetch failed: wstatus/errcode/http_status say how */
    TOKEN_THROTTLED, /* not fetched: WeChat keeps returning a token it rejects */
    TOKEN_ABORTED,   /* the fetching worker stopped */
    TOKEN_NOMEM,     /* no memory to wait for the fetch, or to start it */
};

struct token_result {
    enum token_status status;
    char token[WECHAT_TOKEN_MAX + 1]; /* TOKEN_OK */
    int64_t expires_at;               /* unix seconds */
    enum wechat_status wstatus;       /* TOKEN_FAILED */
    long errcode;
    long http_status;
    char rid[WECHAT_RID_MAX]; /* TOKEN_FAILED: WeChat's request id, "" when none */
    /* TOKEN_FAILED with 40164: the address WeChat saw us call from (its errmsg names it), the
     * one to whitelist; "" otherwise. */
    char caller_ip[48];
};

typedef void token_fn(void *arg, const struct token_result *res);

/* How a worker fetches: embedded in a strategy's own struct (token/fetch.c). */
struct token_fetch_ops {
    /* Starts a fetch (force: ask WeChat for a brand-new token); it ends with token_fetched()
     * from the fetcher's loop. Returns 0 or -1 (could not start). Called with no lock held. */
    int (*start)(struct token_fetcher *f, bool force);
    /* Stops the fetch in progress: token_fetched() will not be called for it. */
    void (*cancel)(struct token_fetcher *f);
    /* Tells the other instances that bad was rejected (compare-and-swap); NULL for one
     * process. */
    void (*invalidate)(struct token_fetcher *f, const char *bad);
};

struct token_fetcher {
    const struct token_fetch_ops *ops;
    struct token *t;
    struct loop *loop;
    struct list node; /* the token's fetchers */
};

/* Flags for token_get. */
#define TOKEN_DROP 1u  /* forget the cached token first (admin refresh) */
#define TOKEN_FORCE 2u /* ask WeChat for a brand-new token (stable: force_refresh) */

enum token_wait { TOKEN_READY, TOKEN_WAIT };

/* NULL on failure. */
struct token *token_new(void);
/* Every fetcher is unregistered (the workers have stopped). Accepts NULL. */
void token_free(struct token *t);

/* At start-up, on the fetcher's thread or before the workers run. */
void token_fetcher_register(struct token *t, struct token_fetcher *f, struct loop *loop);
/* The fetcher's worker is stopping: a fetch running on it is cancelled and its waiters get
 * TOKEN_ABORTED. From the fetcher's thread. */
void token_fetcher_unregister(struct token_fetcher *f);

/*
 * Gets a usable token. READY: *out holds the token or a failure, now. WAIT: fn(arg, res) will
 * run once on f's loop unless slot is cancelled first. f is the calling worker's fetcher, used
 * if a fetch must start.
 */
enum token_wait token_get(struct token *t, struct token_fetcher *f, struct async_slot *slot,
                          unsigned flags, token_fn *fn, void *arg, struct token_result *out);
/* Drops the cached token if it is still `bad` (compare-and-swap), here and, through f, for the
 * other instances. */
void token_invalidate(struct token *t, struct token_fetcher *f, const char *bad);
/* A call with token was answered without a token rejection: a token once rejected proved good,
 * so it no longer counts as "the rejected token handed back". */
void token_accepted(struct token *t, const char *token);
/* True while a fetch runs on f (a stopping worker waits for it: others may be waiting). */
bool token_fetching_on(struct token *t, const struct token_fetcher *f);
/* Number of fetches started (for tests and logs). */
unsigned long token_fetches(struct token *t);

/* For fetchers: the fetch start() began has ended with res. From the fetcher's loop. */
void token_fetched(struct token_fetcher *f, const struct token_result *res);
/* For fetchers: is a token found elsewhere (the store shared by instances) worth taking? Only
 * one of WeChat's shape (wechat_token_valid()), not the last rejected, and not about to expire. */
bool token_usable(struct token *t, const char *token, int64_t expires_at, int64_t now);

#endif
