/*
 * token/fetch: one struct for both strategies; `leased` picks the steps. The WeChat call and
 * each store step, and the wait between two reads of the share, occupy the fetcher's slot.
 */
#include "token/fetch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop/loop.h"
#include "runtime/async.h"
#include "runtime/delay.h"
#include "store/store.h"

#define LEASE_POLL_MS 100
/* How long one instance waits for another's fetch before giving up (a lease lapses sooner). */
#define LEASE_WAIT_MS 15000

struct fetcher {
    struct token_fetcher base;
    const struct wechat_app *app;
    enum wechat_token_api api;
    struct wechat_client *wx;
    struct store *store; /* leased only */
    bool leased;
    struct async_slot slot;
    struct delay poll; /* between two reads of the share */
    bool force;
    bool holds_lease;
    uint64_t deadline_ms;
    char owner[STORE_OWNER_LEN + 1];
};

static struct fetcher *of(struct token_fetcher *f)
{
    return (struct fetcher *)(void *)f;
}

static void failed(struct fetcher *fe, enum wechat_status why)
{
    struct token_result res = {.status = TOKEN_FAILED, .wstatus = why};
    token_fetched(&fe->base, &res);
}

/* Releases the lease if we hold it, publishing token ("" publishes nothing). */
static void give_back(struct fetcher *fe, const char *token, int64_t expires_at)
{
    if (!fe->holds_lease)
        return;
    fe->holds_lease = false;
    store_lease_publish(fe->store, fe->app->appid, fe->owner, token, expires_at);
}

/* From 40164's "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: ...",
 * the address WeChat saw (characters of an IPv4 or IPv6 address only); "" when absent. */
static void caller_ip(const char *errmsg, char out[48])
{
    static const char prefix[] = "invalid ip ";
    out[0] = '\0';
    if (errmsg == NULL || strncmp(errmsg, prefix, sizeof(prefix) - 1) != 0)
        return;
    const char *p = errmsg + sizeof(prefix) - 1;
    size_t n = strspn(p, "0123456789abcdefABCDEF.:");
    if (n == 0 || n >= 48)
        return;
    memcpy(out, p, n);
    out[n] = '\0';
}

static void on_grant(void *arg, const struct wechat_reply *r, const struct wechat_token_grant *g)
{
    struct fetcher *fe = arg;
    struct token_result res = {.status = TOKEN_OK};
    if (g != NULL) {
        memcpy(res.token, g->token, sizeof(res.token));
        res.expires_at = (int64_t)time(NULL) + g->expires_in;
    } else {
        res.status = TOKEN_FAILED;
        res.wstatus = r->status;
        res.errcode = r->errcode;
        res.http_status = r->http_status;
        memcpy(res.rid, r->rid, sizeof(res.rid));
        if (r->status == WECHAT_ERRCODE && r->errcode == 40164)
            caller_ip(json_string_value(json_object_get(r->body, "errmsg")), res.caller_ip);
    }
    /* Tell the other instances (and release the lease even when the fetch failed). */
    give_back(fe, res.status == TOKEN_OK ? res.token : "", res.expires_at);
    token_fetched(&fe->base, &res);
    crypto_wipe(&res, sizeof(res));
}

static int ask_wechat(struct fetcher *fe)
{
    return wechat_fetch_token(fe->wx, &fe->slot, fe->app, fe->api, fe->force, on_grant, fe);
}

/* With the lease held: a fetch that cannot start (out of memory) gives the lease back at once,
 * and its waiters are told it was our failure. */
static void ask_leased(struct fetcher *fe)
{
    if (ask_wechat(fe) != 0) {
        give_back(fe, "", 0);
        struct token_result nomem = {.status = TOKEN_NOMEM};
        token_fetched(&fe->base, &nomem);
    }
}

static void read_share(struct fetcher *fe);
static void on_poll(void *arg);

static void on_lease(void *arg, int status, bool got)
{
    struct fetcher *fe = arg;
    if (status == STORE_OK && got) {
        fe->holds_lease = true;
        /* The holder before us may have published between our read and our take (publishing
         * releases the lease): read once more before spending a fetch. */
        if (fe->force)
            ask_leased(fe);
        else
            read_share(fe);
        return;
    }
    /* Someone else is fetching: read again shortly, until the lease could have lapsed. */
    if (status != STORE_OK || loop_now_ms(fe->base.loop) >= fe->deadline_ms) {
        failed(fe, WECHAT_CONNECT);
        return;
    }
    delay_start(&fe->poll, fe->base.loop, &fe->slot, LEASE_POLL_MS, on_poll, fe);
}

static void on_share(void *arg, int status, const char *token, int64_t expires_at)
{
    struct fetcher *fe = arg;
    if (status != STORE_OK) {
        /* The share could not be read: not a reason to fetch behind the others' backs. */
        give_back(fe, "", 0);
        failed(fe, WECHAT_CONNECT);
        return;
    }
    if (!fe->force && token_usable(fe->base.t, token, expires_at, (int64_t)time(NULL))) {
        give_back(fe, "", 0);
        struct token_result res = {.status = TOKEN_OK, .expires_at = expires_at};
        memcpy(res.token, token, strlen(token) + 1);
        token_fetched(&fe->base, &res);
        crypto_wipe(&res, sizeof(res));
        return;
    }
    if (fe->holds_lease) {
        ask_leased(fe);
        return;
    }
    long hold = (long)(fe->deadline_ms - loop_now_ms(fe->base.loop));
    store_lease_take(fe->store, &fe->slot, fe->app->appid, fe->owner, hold > 1000 ? hold : 1000,
                     on_lease, fe);
}

static void read_share(struct fetcher *fe)
{
    store_lease_read(fe->store, &fe->slot, fe->app->appid, on_share, fe);
}

static void on_poll(void *arg)
{
    read_share(arg);
}

static int f_start(struct token_fetcher *f, bool force)
{
    struct fetcher *fe = of(f);
    fe->force = force;
    fe->holds_lease = false;
    if (!fe->leased)
        return ask_wechat(fe);
    if (store_owner_new(fe->owner) != 0)
        return -1;
    fe->deadline_ms = loop_now_ms(f->loop) + LEASE_WAIT_MS;
    read_share(fe);
    return 0;
}

static void f_cancel(struct token_fetcher *f)
{
    struct fetcher *fe = of(f);
    async_cancel(&fe->slot);
    give_back(fe, "", 0); /* let the others fetch without waiting for the lease to lapse */
}

static void f_invalidate(struct token_fetcher *f, const char *bad)
{
    struct fetcher *fe = of(f);
    store_lease_invalidate(fe->store, fe->app->appid, bad);
}

static const struct token_fetch_ops direct_ops = {.start = f_start, .cancel = f_cancel};
static const struct token_fetch_ops leased_ops = {
    .start = f_start, .cancel = f_cancel, .invalidate = f_invalidate};

struct token_fetcher *token_fetcher_new(struct token *t, const struct wechat_app *app,
                                        enum wechat_token_api api, struct wechat_client *wx,
                                        struct store *store, struct loop *loop)
{
    struct fetcher *fe = calloc(1, sizeof(*fe));
    if (fe == NULL)
        return NULL;
    fe->leased = store != NULL && store->lease != NULL; /* the lease contract exists */
    fe->base.ops = fe->leased ? &leased_ops : &direct_ops;
    fe->app = app;
    fe->api = api;
    fe->wx = wx;
    fe->store = store;
    token_fetcher_register(t, &fe->base, loop);
    return &fe->base;
}

void token_fetcher_free(struct token_fetcher *f)
{
    if (f == NULL)
        return;
    token_fetcher_unregister(f); /* cancels a fetch running here: the slot is empty */
    free(of(f));
}
