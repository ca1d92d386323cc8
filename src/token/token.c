/*
 * token: state under one mutex; the fetch itself runs outside it, on the fetching worker's
 * fetcher, and its end wakes the waiters through their loops. A fetcher's start() is always
 * called with the lock released, since it may finish at once (and call token_fetched()).
 */
#include "token/token.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "runtime/waitlist.h"

/* Refresh when less than this is left; stable tokens rotate 5 minutes before expiry. */
#define REFRESH_MARGIN_S 300
/* WeChat handed back the token it had just rejected: wait this long before fetching again. */
#define SAME_TOKEN_BACKOFF_MS 10000
/* A failed fetch is not repeated sooner; requests meanwhile get the same failure. */
#define FAILED_FETCH_BACKOFF_MS 1000

struct token {
    pthread_mutex_t mu;
    char token[WECHAT_TOKEN_MAX + 1]; /* "" when none */
    int64_t expires_at;
    char rejected[WECHAT_TOKEN_MAX + 1]; /* last token invalidated after WeChat rejected it */
    /* rejected[0] != '\0', readable without the lock: every successful call asks. */
    atomic_bool has_rejected;

    bool fetching;
    bool fetch_forced; /* the running fetch asks WeChat for a brand-new token */
    struct token_fetcher *fetch_on;
    bool force_pending;            /* a forced fetch was asked while another fetch ran */
    struct waitlist force_waiters; /* who waits for that forced fetch */
    struct waitlist waiters;
    bool same_token_backoff; /* no_fetch_until_ms is from a rejected token handed back */
    uint64_t no_fetch_until_ms;
    /* No early refresh before this: the last refresh brought back a token still inside the
     * margin (a WeChat that does not renew early hands back the same one until it expires),
     * so asking again before then would only get it again, once per request; or the last
     * refresh could not start (start_fetch()). */
    uint64_t no_refresh_until_ms;
    struct token_result last_failure; /* returned while no_fetch_until_ms holds */
    unsigned long fetches;
    struct list fetchers;
};

struct token *token_new(void)
{
    struct token *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    waitlist_init(&t->waiters);
    waitlist_init(&t->force_waiters);
    list_init(&t->fetchers);
    return t;
}

void token_free(struct token *t)
{
    if (t == NULL)
        return;
    crypto_wipe(t->token, sizeof(t->token));
    crypto_wipe(t->rejected, sizeof(t->rejected));
    pthread_mutex_destroy(&t->mu);
    free(t);
}

unsigned long token_fetches(struct token *t)
{
    pthread_mutex_lock(&t->mu);
    unsigned long n = t->fetches;
    pthread_mutex_unlock(&t->mu);
    return n;
}

static void token_trampoline(const void *result, void (*fn)(void), void *arg)
{
    ((token_fn *)fn)(arg, result);
}

void token_fetcher_register(struct token *t, struct token_fetcher *f, struct loop *loop)
{
    f->t = t;
    f->loop = loop;
    pthread_mutex_lock(&t->mu);
    list_push_back(&t->fetchers, &f->node);
    pthread_mutex_unlock(&t->mu);
}

/* With t->mu held: the fetch becomes f's. */
static void mark_fetching(struct token *t, struct token_fetcher *f, bool force)
{
    t->fetching = true;
    t->fetch_forced = force;
    t->fetch_on = f;
    t->fetches++;
}

/* Lock not held: starts the fetch marked as f's. A fetch that cannot start (no memory for the
 * call, no randomness for the lease's owner) ends at once, for its waiters too, as our failure
 * (TOKEN_NOMEM: 503 internal), not WeChat's and not a shutdown. */
static void start_fetch(struct token_fetcher *f, bool force)
{
    if (f->ops->start(f, force) != 0) {
        struct token_result nomem = {.status = TOKEN_NOMEM};
        token_fetched(f, &nomem);
    }
}

void token_fetched(struct token_fetcher *f, const struct token_result *res)
{
    struct token *t = f->t;
    uint64_t now_ms = loop_clock_ms();
    struct list taken;
    bool refetch = false;
    pthread_mutex_lock(&t->mu);
    if (!t->fetching || t->fetch_on != f) { /* a fetch this fetcher no longer owns */
        pthread_mutex_unlock(&t->mu);
        return;
    }
    t->fetching = false;
    t->fetch_forced = false;
    t->fetch_on = NULL;
    metrics_token_fetch(res->status == TOKEN_OK       ? METRICS_TOKEN_OK
                        : res->status == TOKEN_FAILED ? METRICS_TOKEN_FAILED
                                                      : METRICS_TOKEN_ABORTED);
    /* Our own failure (no memory to start the fetch or to read WeChat's answer): an early
     * refresh is not tried again for a while (it would likely fail the same way, and the token
     * is served meanwhile), but with no token to serve nothing is held back and no failure is
     * kept to be served: a backoff would refuse every request of the next second for one
     * failed allocation. */
    bool ours = res->status == TOKEN_NOMEM ||
                (res->status == TOKEN_FAILED && res->wstatus == WECHAT_INTERNAL);
    if (ours && t->token[0] != '\0' && t->expires_at > (int64_t)time(NULL) &&
        t->no_refresh_until_ms < now_ms + FAILED_FETCH_BACKOFF_MS)
        t->no_refresh_until_ms = now_ms + FAILED_FETCH_BACKOFF_MS;
    if (res->status == TOKEN_OK) {
        int64_t now = (int64_t)time(NULL);
        /* A refresh (a token was being served) that brought back a token still short of the
         * margin: none again before that token expires. A first fetch of a short token may
         * still refresh once (WeChat renews in a token's last 5 minutes). */
        bool refresh = t->token[0] != '\0' && t->expires_at > now;
        int64_t left = res->expires_at - now;
        t->no_refresh_until_ms = refresh && left < REFRESH_MARGIN_S
                                     ? now_ms + (uint64_t)(left > 0 ? left : 0) * 1000
                                     : 0;
        memcpy(t->token, res->token, sizeof(t->token));
        t->expires_at = res->expires_at;
        memset(&t->last_failure, 0, sizeof(t->last_failure)); /* only the latest fetch counts */
        if (strcmp(res->token, t->rejected) == 0) {
            t->no_fetch_until_ms = now_ms + SAME_TOKEN_BACKOFF_MS;
            t->same_token_backoff = true;
        }
    } else if (res->status == TOKEN_FAILED && !ours) {
        t->last_failure = *res;
        t->no_fetch_until_ms = now_ms + FAILED_FETCH_BACKOFF_MS;
        t->same_token_backoff = false;
    }
    waitlist_take(&t->waiters, res, &taken);
    /* An operator asked for a brand-new token while this fetch ran: fetch it now, on this same
     * fetcher, for those who asked and still wait (a forced fetch spends one of WeChat's 20 a
     * day: none for nobody). */
    if (t->force_pending && !waitlist_empty(&t->force_waiters)) {
        waitlist_splice(&t->waiters, &t->force_waiters);
        mark_fetching(t, f, true);
        refetch = true;
    }
    t->force_pending = false;
    pthread_mutex_unlock(&t->mu);
    waiters_post(&taken);
    if (refetch)
        start_fetch(f, true);
}

void token_fetcher_unregister(struct token_fetcher *f)
{
    struct token *t = f->t;
    struct list taken;
    list_init(&taken);
    pthread_mutex_lock(&t->mu);
    list_unlink(&f->node);
    bool mine = t->fetching && t->fetch_on == f;
    if (mine) {
        t->fetching = false;
        t->fetch_forced = false;
        t->fetch_on = NULL;
        t->force_pending = false;
        waitlist_splice(&t->waiters, &t->force_waiters);
        struct token_result ab = {.status = TOKEN_ABORTED};
        waitlist_take(&t->waiters, &ab, &taken);
        metrics_token_fetch(METRICS_TOKEN_ABORTED);
    }
    pthread_mutex_unlock(&t->mu);
    if (mine)
        f->ops->cancel(f);
    waiters_post(&taken);
}

enum token_wait token_get(struct token *t, struct token_fetcher *f, struct async_slot *slot,
                          unsigned flags, token_fn *fn, void *arg, struct token_result *out)
{
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = loop_clock_ms();
    enum token_wait rc = TOKEN_READY;
    bool start = false, force = false;
    memset(out, 0, sizeof(*out));

    pthread_mutex_lock(&t->mu);
    /* A brand-new token is by definition not the cached one. */
    if (flags & (TOKEN_DROP | TOKEN_FORCE)) {
        t->token[0] = '\0';
        t->no_fetch_until_ms = 0; /* an operator asked: let it through */
        t->no_refresh_until_ms = 0;
        t->same_token_backoff = false;
    }
    if (t->token[0] != '\0' && t->expires_at > now) {
        /* Serve the cached token; refresh early in the background when it runs short. */
        out->status = TOKEN_OK;
        memcpy(out->token, t->token, sizeof(out->token));
        out->expires_at = t->expires_at;
        if (t->expires_at - now < REFRESH_MARGIN_S && !t->fetching &&
            now_ms >= t->no_fetch_until_ms && now_ms >= t->no_refresh_until_ms) {
            mark_fetching(t, f, false);
            metrics_token_refresh();
            start = true;
        }
        goto out;
    }
    bool started_here = false;
    if (!t->fetching) {
        if (now_ms < t->no_fetch_until_ms) {
            if (t->last_failure.status == TOKEN_FAILED)
                *out = t->last_failure;
            else
                out->status = TOKEN_THROTTLED;
            goto out;
        }
        force = (flags & TOKEN_FORCE) != 0;
        mark_fetching(t, f, force);
        start = started_here = true;
    }
    struct waiter *w = waiter_new(&t->mu, f->loop, token_trampoline, (void (*)(void))fn, arg,
                                  sizeof(struct token_result));
    if (w == NULL) {
        out->status = TOKEN_NOMEM;
        goto out;
    }
    /* A forced fetch asked while an ordinary one runs must not be answered by that one: it
     * waits for a forced fetch of its own, started when the running one ends. A running forced
     * fetch answers it as well. */
    bool later = (flags & TOKEN_FORCE) && !started_here && !t->fetch_forced;
    if (later)
        t->force_pending = true;
    waitlist_add(later ? &t->force_waiters : &t->waiters, w, slot);
    rc = TOKEN_WAIT;
out:
    pthread_mutex_unlock(&t->mu);
    if (start)
        start_fetch(f, force);
    return rc;
}

void token_invalidate(struct token *t, struct token_fetcher *f, const char *bad)
{
    metrics_token_invalidation();
    if (f->ops->invalidate != NULL)
        f->ops->invalidate(f, bad);
    pthread_mutex_lock(&t->mu);
    if (t->token[0] != '\0' && strcmp(t->token, bad) == 0) {
        snprintf(t->rejected, sizeof(t->rejected), "%s", bad);
        atomic_store(&t->has_rejected, true);
        t->token[0] = '\0';
    }
    pthread_mutex_unlock(&t->mu);
}

void token_accepted(struct token *t, const char *token)
{
    if (!atomic_load_explicit(&t->has_rejected, memory_order_relaxed))
        return; /* the common case: no token was ever rejected, or it is forgotten */
    pthread_mutex_lock(&t->mu);
    if (t->rejected[0] != '\0' && strcmp(t->rejected, token) == 0) {
        /* The token once rejected works after all (a passing rejection): forget it, and any
         * backoff its return had started. */
        t->rejected[0] = '\0';
        atomic_store(&t->has_rejected, false);
        if (t->same_token_backoff) {
            t->no_fetch_until_ms = 0;
            t->same_token_backoff = false;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

bool token_fetching_on(struct token *t, const struct token_fetcher *f)
{
    pthread_mutex_lock(&t->mu);
    bool busy = t->fetching && t->fetch_on == f;
    pthread_mutex_unlock(&t->mu);
    return busy;
}

bool token_usable(struct token *t, const char *token, int64_t expires_at, int64_t now)
{
    /* The shared store's token is handed to WeChat and to the admin route's clients: only one
     * WeChat could have issued (a record written by something else is fetched anew). */
    if (token == NULL || !wechat_token_valid(token, strlen(token)) ||
        expires_at - now < REFRESH_MARGIN_S)
        return false;
    pthread_mutex_lock(&t->mu);
    bool ok = strcmp(token, t->rejected) != 0;
    pthread_mutex_unlock(&t->mu);
    return ok;
}
