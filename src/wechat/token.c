/*
 * wechat/token: state under one mutex; the fetch itself (a WeChat call) runs outside it on the
 * fetching thread's client, and its completion wakes the waiters through their loops.
 */
#include "wechat/token.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "runtime/waitlist.h"

/* Refresh when less than this is left; stable tokens rotate 5 minutes before expiry. */
#define REFRESH_MARGIN_S 300
/* WeChat handed back the token it had just rejected: wait this long before fetching again. */
#define SAME_TOKEN_BACKOFF_MS 10000
/* A failed fetch is not repeated sooner; requests meanwhile get the same failure. */
#define FAILED_FETCH_BACKOFF_MS 1000

struct wechat_token {
    pthread_mutex_t mu;
    char *appid, *secret;
    enum wechat_token_api api;

    char token[WECHAT_TOKEN_MAX + 1]; /* "" when none */
    int64_t expires_at;
    char rejected[WECHAT_TOKEN_MAX + 1]; /* last token invalidated after WeChat rejected it */

    bool fetching;
    bool force_pending;            /* a forced fetch was asked while another fetch ran */
    struct waitlist force_waiters; /* who waits for that forced fetch */
    bool same_token_backoff;       /* no_fetch_until_ms is from a rejected token handed back */
    struct wechat_client *fetch_wx;
    struct wechat_call *fetch_call;
    /* A shared fetch's steps (read the share, take the lease, call WeChat) run on the fetching
     * thread's loop, driven by step_timer; gen tells callbacks of an abandoned fetch apart. */
    const struct wechat_token_share *share;
    void *share_ctx;
    struct loop *fetch_loop;
    struct loop_timer step_timer;
    unsigned gen;
    bool force;
    bool leased;
    uint64_t lease_deadline_ms;
    char owner[33];
    struct waitlist waiters;
    uint64_t no_fetch_until_ms;
    struct wechat_token_result last_failure; /* returned while no_fetch_until_ms holds */
    unsigned long fetches;
};

static void on_step(void *arg);

bool wechat_token_rejected(long errcode)
{
    return errcode == 40001 || errcode == 40014 || errcode == 42001;
}

struct wechat_token *wechat_token_new(const char *appid, const char *secret,
                                      enum wechat_token_api api)
{
    struct wechat_token *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->appid = strdup(appid);
    t->secret = strdup(secret);
    if (t->appid == NULL || t->secret == NULL) {
        free(t->appid);
        free(t->secret);
        free(t);
        return NULL;
    }
    t->api = api;
    loop_timer_init(&t->step_timer, on_step, t);
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void wechat_token_free(struct wechat_token *t)
{
    if (t == NULL)
        return;
    crypto_wipe(t->secret, strlen(t->secret));
    crypto_wipe(t->token, sizeof(t->token));
    free(t->appid);
    free(t->secret);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

unsigned long wechat_token_fetches(struct wechat_token *t)
{
    pthread_mutex_lock(&t->mu);
    unsigned long n = t->fetches;
    pthread_mutex_unlock(&t->mu);
    return n;
}

static void token_trampoline(const void *result, void (*fn)(void), void *arg)
{
    ((wechat_token_fn *)fn)(result, arg);
}

/* ---- fetching ---- */

static bool accept_token(const json_t *body)
{
    const json_t *tok = json_object_get(body, "access_token");
    const json_t *exp = json_object_get(body, "expires_in");
    return json_is_string(tok) && json_string_length(tok) > 0 &&
           json_string_length(tok) <= WECHAT_TOKEN_MAX && json_is_integer(exp) &&
           json_integer_value(exp) > 0 && json_integer_value(exp) <= 86400; /* WeChat: 7200 */
}

static bool start_fetch(struct wechat_token *t, struct wechat_client *wx, bool force);
static bool begin_fetch(struct wechat_token *t, struct wechat_client *wx, bool force);

/* Ends the running fetch with res: caches it, wakes the waiters, starts a pending forced fetch. */
static void fetch_done(struct wechat_token *t, struct wechat_token_result *res)
{
    uint64_t now_ms = loop_clock_ms();
    pthread_mutex_lock(&t->mu);
    struct wechat_client *wx = t->fetch_wx;
    t->fetching = false;
    t->fetch_wx = NULL;
    t->fetch_call = NULL;
    t->gen++;
    if (t->fetch_loop != NULL)
        loop_timer_stop(t->fetch_loop, &t->step_timer);
    if (res->status == WECHAT_TOKEN_OK) {
        memcpy(t->token, res->token, sizeof(t->token));
        t->expires_at = res->expires_at;
        memset(&t->last_failure, 0, sizeof(t->last_failure)); /* only the latest fetch counts */
        if (strcmp(res->token, t->rejected) == 0) {
            t->no_fetch_until_ms = now_ms + SAME_TOKEN_BACKOFF_MS;
            t->same_token_backoff = true;
        }
    } else if (res->status == WECHAT_TOKEN_FAILED) {
        t->last_failure = *res;
        t->no_fetch_until_ms = now_ms + FAILED_FETCH_BACKOFF_MS;
        t->same_token_backoff = false;
    }
    struct waiter *ws = waitlist_take(&t->waiters, res);
    if (t->force_pending) {
        /* An operator asked for a brand-new token while this fetch ran: fetch it now, on
         * this same client, for those who asked. */
        t->force_pending = false;
        waitlist_splice(&t->waiters, &t->force_waiters);
        if (!begin_fetch(t, wx, true)) {
            struct wechat_token_result ab = {.status = WECHAT_TOKEN_ABORTED};
            struct waiter *more = waitlist_take(&t->waiters, &ab);
            pthread_mutex_unlock(&t->mu);
            waiters_post(more);
            goto post;
        }
    }
    pthread_mutex_unlock(&t->mu);
post:
    waiters_post(ws);
    crypto_wipe(res->token, sizeof(res->token));
}

static void on_fetched(const struct wechat_result *wr, void *arg)
{
    struct wechat_token *t = arg;
    struct wechat_token_result res = {.status = WECHAT_TOKEN_OK};
    if (wr->status == WECHAT_OK) {
        snprintf(res.token, sizeof(res.token), "%s",
                 json_string_value(json_object_get(wr->body, "access_token")));
        res.expires_at = (int64_t)time(NULL) +
                         (int64_t)json_integer_value(json_object_get(wr->body, "expires_in"));
    } else {
        res.status = WECHAT_TOKEN_FAILED;
        res.wstatus = wr->status;
        res.errcode = wr->errcode;
        res.http_status = wr->http_status;
    }
    pthread_mutex_lock(&t->mu);
    bool publish = t->share != NULL && t->leased;
    const struct wechat_token_share *share = t->share;
    void *share_ctx = t->share_ctx;
    char owner[sizeof(t->owner)];
    memcpy(owner, t->owner, sizeof(owner));
    t->leased = false;
    pthread_mutex_unlock(&t->mu);
    /* Tell the other instances (and release the lease even when the fetch failed). */
    if (publish)
        share->publish(share_ctx, t->appid, owner, res.status == WECHAT_TOKEN_OK ? res.token : "",
                       res.expires_at);
    fetch_done(t, &res);
}

/* ---- the shared fetch: read the share, else take the lease and fetch ---- */

struct share_call {
    struct wechat_token *t;
    unsigned gen;
};

static struct share_call *share_call_new(struct wechat_token *t)
{
    struct share_call *sc = malloc(sizeof(*sc));
    if (sc != NULL) {
        sc->t = t;
        sc->gen = t->gen;
    }
    return sc;
}

/* With t->mu held: is the fetch sc belongs to still the running one? */
static bool share_call_current(const struct share_call *sc)
{
    return sc->t->fetching && sc->t->gen == sc->gen;
}

static void share_read(struct wechat_token *t);

static void on_lease(int status, bool got, void *arg)
{
    struct share_call *sc = arg;
    struct wechat_token *t = sc->t;
    pthread_mutex_lock(&t->mu);
    bool current = share_call_current(sc);
    free(sc);
    if (!current) {
        pthread_mutex_unlock(&t->mu);
        return;
    }
    if (status == 0 && got) {
        t->leased = true;
        bool ok = start_fetch(t, t->fetch_wx, t->force);
        pthread_mutex_unlock(&t->mu);
        if (!ok) {
            struct wechat_token_result ab = {.status = WECHAT_TOKEN_ABORTED};
            fetch_done(t, &ab);
        }
        return;
    }
    /* Someone else is fetching: read again shortly, until the lease could have lapsed. */
    bool give_up = status != 0 || loop_clock_ms() >= t->lease_deadline_ms;
    if (!give_up)
        loop_timer_start(t->fetch_loop, &t->step_timer, 100);
    pthread_mutex_unlock(&t->mu);
    if (give_up) {
        struct wechat_token_result res = {.status = WECHAT_TOKEN_FAILED, .wstatus = WECHAT_CONNECT};
        fetch_done(t, &res);
    }
}

static void on_share_read(int status, const char *token, int64_t expires_at, void *arg)
{
    struct share_call *sc = arg;
    struct wechat_token *t = sc->t;
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&t->mu);
    bool current = share_call_current(sc);
    free(sc);
    if (!current) {
        pthread_mutex_unlock(&t->mu);
        return;
    }
    if (status != 0) {
        /* The share could not be read: not a reason to fetch behind the others' backs. */
        pthread_mutex_unlock(&t->mu);
        struct wechat_token_result res = {.status = WECHAT_TOKEN_FAILED, .wstatus = WECHAT_CONNECT};
        fetch_done(t, &res);
        return;
    }
    bool usable = token != NULL && token[0] != '\0' && !t->force &&
                  strlen(token) <= WECHAT_TOKEN_MAX && strcmp(token, t->rejected) != 0 &&
                  expires_at - now >= REFRESH_MARGIN_S;
    if (usable) {
        struct wechat_token_result res = {.status = WECHAT_TOKEN_OK, .expires_at = expires_at};
        memcpy(res.token, token, strlen(token) + 1);
        pthread_mutex_unlock(&t->mu);
        fetch_done(t, &res);
        return;
    }
    struct share_call *next = share_call_new(t);
    const struct wechat_token_share *share = t->share;
    void *ctx = t->share_ctx;
    long hold = (long)(t->lease_deadline_ms - loop_clock_ms());
    pthread_mutex_unlock(&t->mu);
    if (next == NULL) {
        struct wechat_token_result ab = {.status = WECHAT_TOKEN_ABORTED};
        fetch_done(t, &ab);
        return;
    }
    share->lease(ctx, t->appid, t->owner, hold > 1000 ? hold : 1000, on_lease, next);
}

static void share_read(struct wechat_token *t)
{
    pthread_mutex_lock(&t->mu);
    struct share_call *sc = t->fetching ? share_call_new(t) : NULL;
    const struct wechat_token_share *share = t->share;
    void *ctx = t->share_ctx;
    bool fetching = t->fetching;
    pthread_mutex_unlock(&t->mu);
    if (!fetching)
        return;
    if (sc == NULL) {
        struct wechat_token_result ab = {.status = WECHAT_TOKEN_ABORTED};
        fetch_done(t, &ab);
        return;
    }
    share->read(ctx, t->appid, on_share_read, sc);
}

static void on_step(void *arg)
{
    share_read(arg);
}

/*
 * With t->mu held: starts a fetch for the calling thread. Shared: the first step runs from the
 * thread's loop (never under the lock, as a store may answer at once). Returns false when it
 * could not start.
 */
static bool begin_fetch(struct wechat_token *t, struct wechat_client *wx, bool force)
{
    if (t->share == NULL)
        return start_fetch(t, wx, force);
    t->fetching = true;
    t->fetch_wx = wx;
    t->fetch_call = NULL;
    t->force = force;
    t->leased = false;
    t->lease_deadline_ms = loop_clock_ms() + 15000;
    unsigned char r[16];
    if (crypto_random(r, sizeof(r)) != 0)
        memset(r, 0, sizeof(r));
    for (size_t i = 0; i < sizeof(r); i++)
        snprintf(t->owner + 2 * i, 3, "%02x", r[i]);
    loop_timer_start(t->fetch_loop, &t->step_timer, 0);
    return true;
}

/* With t->mu held: starts a fetch on wx. Returns false when it could not start. */
static bool start_fetch(struct wechat_token *t, struct wechat_client *wx, bool force)
{
    struct wechat_call *call = NULL;
    if (t->api == WECHAT_TOKEN_STABLE) {
        json_t *b = json_pack("{s:s, s:s, s:s, s:b}", "grant_type", "client_credential", "appid",
                              t->appid, "secret", t->secret, "force_refresh", force);
        char *body = b != NULL ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        char *pq = strdup("/cgi-bin/stable_token");
        if (body != NULL && pq != NULL)
            call = wechat_post_json(wx, pq, body, accept_token, on_fetched, t);
        else {
            free(pq);
            if (body != NULL)
                crypto_wipe(body, strlen(body));
            free(body);
        }
    } else {
        const char *kv[] = {"grant_type", "client_credential", "appid", t->appid,
                            "secret",     t->secret,           NULL};
        char *pq = wechat_path_query("/cgi-bin/token", kv);
        if (pq != NULL)
            call = wechat_get(wx, pq, accept_token, on_fetched, t);
    }
    if (call == NULL)
        return false;
    t->fetching = true;
    t->fetch_wx = wx;
    t->fetch_call = call;
    t->fetches++;
    return true;
}

enum wechat_token_wait wechat_token_get(struct wechat_token *t, struct wechat_client *wx,
                                        const struct wechat_token_share *share, void *share_ctx,
                                        struct loop *loop, unsigned flags, wechat_token_fn *fn,
                                        void *arg, struct wechat_token_result *out,
                                        struct wechat_token_waiter **waiter)
{
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = loop_clock_ms();
    enum wechat_token_wait rc = WECHAT_TOKEN_READY;
    memset(out, 0, sizeof(*out));

    pthread_mutex_lock(&t->mu);
    if (flags & WECHAT_TOKEN_DROP) {
        t->token[0] = '\0';
        t->no_fetch_until_ms = 0; /* an operator asked: let it through */
        t->same_token_backoff = false;
    }
    bool have = t->token[0] != '\0' && t->expires_at > now;
    if (have) {
        /* Serve the cached token; refresh early in the background when it runs short. */
        out->status = WECHAT_TOKEN_OK;
        memcpy(out->token, t->token, sizeof(out->token));
        out->expires_at = t->expires_at;
        if (t->expires_at - now < REFRESH_MARGIN_S && !t->fetching &&
            now_ms >= t->no_fetch_until_ms) {
            t->share = share;
            t->share_ctx = share_ctx;
            t->fetch_loop = loop;
            begin_fetch(t, wx, false);
        }
        goto out;
    }
    bool started_here = false;
    if (!t->fetching) {
        if (now_ms < t->no_fetch_until_ms) {
            if (t->last_failure.status == WECHAT_TOKEN_FAILED)
                *out = t->last_failure;
            else
                out->status = WECHAT_TOKEN_THROTTLED;
            goto out;
        }
        t->share = share;
        t->share_ctx = share_ctx;
        t->fetch_loop = loop;
        if (!begin_fetch(t, wx, (flags & WECHAT_TOKEN_FORCE) != 0)) {
            out->status = WECHAT_TOKEN_ABORTED;
            goto out;
        }
        started_here = true;
    }
    /* A forced fetch asked while an ordinary one runs must not be answered by that one: it
     * waits for a forced fetch of its own, started when the running one ends. */
    bool later = (flags & WECHAT_TOKEN_FORCE) && started_here == false;
    struct waiter *w = waiter_new(&t->mu, loop, token_trampoline, (void (*)(void))fn, arg,
                                  sizeof(struct wechat_token_result));
    if (w == NULL) {
        out->status = WECHAT_TOKEN_ABORTED;
        goto out;
    }
    if (later)
        t->force_pending = true;
    waitlist_add(later ? &t->force_waiters : &t->waiters, w);
    *waiter = (struct wechat_token_waiter *)w;
    rc = WECHAT_TOKEN_WAIT;
out:
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void wechat_token_cancel(struct wechat_token *t, struct wechat_token_waiter *waiter)
{
    (void)t;
    waitlist_cancel((struct waiter *)waiter);
}

void wechat_token_invalidate(struct wechat_token *t, const char *bad,
                             const struct wechat_token_share *share, void *share_ctx)
{
    if (share != NULL)
        share->invalidate(share_ctx, t->appid, bad);
    pthread_mutex_lock(&t->mu);
    if (t->token[0] != '\0' && strcmp(t->token, bad) == 0) {
        snprintf(t->rejected, sizeof(t->rejected), "%s", bad);
        t->token[0] = '\0';
    }
    pthread_mutex_unlock(&t->mu);
}

void wechat_token_accepted(struct wechat_token *t, const char *token)
{
    pthread_mutex_lock(&t->mu);
    if (t->rejected[0] != '\0' && strcmp(t->rejected, token) == 0) {
        /* The token once rejected works after all (a passing rejection): forget it, and any
         * backoff its return had started. */
        t->rejected[0] = '\0';
        if (t->same_token_backoff) {
            t->no_fetch_until_ms = 0;
            t->same_token_backoff = false;
        }
    }
    pthread_mutex_unlock(&t->mu);
}

bool wechat_token_fetching_on(struct wechat_token *t, struct wechat_client *wx)
{
    pthread_mutex_lock(&t->mu);
    bool busy = t->fetching && t->fetch_wx == wx;
    pthread_mutex_unlock(&t->mu);
    return busy;
}

void wechat_token_detach(struct wechat_token *t, struct wechat_client *wx)
{
    pthread_mutex_lock(&t->mu);
    if (!t->fetching || t->fetch_wx != wx) {
        pthread_mutex_unlock(&t->mu);
        return;
    }
    wechat_call_cancel(t->fetch_call);
    t->fetching = false;
    t->fetch_wx = NULL;
    t->fetch_call = NULL;
    t->gen++; /* answers to the shared steps of this fetch are ignored from now on */
    if (t->fetch_loop != NULL)
        loop_timer_stop(t->fetch_loop, &t->step_timer);
    struct wechat_token_result res = {.status = WECHAT_TOKEN_ABORTED};
    t->force_pending = false;
    waitlist_splice(&t->waiters, &t->force_waiters);
    struct waiter *ws = waitlist_take(&t->waiters, &res);
    pthread_mutex_unlock(&t->mu);
    waiters_post(ws);
}
