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
    struct waitlist waiters;
    uint64_t no_fetch_until_ms;
    struct wechat_token_result last_failure; /* returned while no_fetch_until_ms holds */
    unsigned long fetches;
};

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
           json_integer_value(exp) > 0;
}

static bool start_fetch(struct wechat_token *t, struct wechat_client *wx, bool force);

static void on_fetched(const struct wechat_result *wr, void *arg)
{
    struct wechat_token *t = arg;
    struct wechat_token_result res = {.status = WECHAT_TOKEN_OK};
    uint64_t now_ms = loop_clock_ms();

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
    struct wechat_client *wx = t->fetch_wx;
    t->fetching = false;
    t->fetch_wx = NULL;
    t->fetch_call = NULL;
    if (res.status == WECHAT_TOKEN_OK) {
        memcpy(t->token, res.token, sizeof(t->token));
        t->expires_at = res.expires_at;
        memset(&t->last_failure, 0, sizeof(t->last_failure)); /* only the latest fetch counts */
        if (strcmp(res.token, t->rejected) == 0) {
            t->no_fetch_until_ms = now_ms + SAME_TOKEN_BACKOFF_MS;
            t->same_token_backoff = true;
        }
    } else {
        t->last_failure = res;
        t->no_fetch_until_ms = now_ms + FAILED_FETCH_BACKOFF_MS;
        t->same_token_backoff = false;
    }
    struct waiter *ws = waitlist_take(&t->waiters, &res);
    if (t->force_pending) {
        /* An operator asked for a brand-new token while this fetch ran: fetch it now, on
         * this same client, for those who asked. */
        t->force_pending = false;
        waitlist_splice(&t->waiters, &t->force_waiters);
        if (!start_fetch(t, wx, true)) {
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
    crypto_wipe(res.token, sizeof(res.token));
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
            now_ms >= t->no_fetch_until_ms)
            start_fetch(t, wx, false);
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
        if (!start_fetch(t, wx, (flags & WECHAT_TOKEN_FORCE) != 0)) {
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

void wechat_token_invalidate(struct wechat_token *t, const char *bad)
{
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
    struct wechat_token_result res = {.status = WECHAT_TOKEN_ABORTED};
    t->force_pending = false;
    waitlist_splice(&t->waiters, &t->force_waiters);
    struct waiter *ws = waitlist_take(&t->waiters, &res);
    pthread_mutex_unlock(&t->mu);
    waiters_post(ws);
}
