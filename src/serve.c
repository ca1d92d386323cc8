#include "serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "config/master_key.h"
#include "crypto/crypto.h"
#include "exchange/exchange.h"
#include "handlers/handlers.h"
#include "http/server.h"
#include "log/log.h"
#include "loop/loop.h"
#include "runtime/workers.h"
#include "session/cache.h"
#include "session/session.h"
#include "version.h"
#include "wechat/client.h"
#include "wechat/token.h"

/* A login code lives 5 minutes at WeChat; its exchange outcome is remembered as long. */
#define CODE_LIFETIME_MS (5 * 60 * 1000)
#define EXCHANGE_MAX_CODES 200000
/* Expired sessions are deleted in batches, so a backlog never stalls a worker. */
#define PURGE_INTERVAL_MS (60 * 1000)
#define PURGE_BATCH 1000
#define PURGE_AGAIN_MS 100

struct serve {
    const struct config *cfg;
    int nworkers;
    uint16_t port; /* bound by worker 0, joined by the others */
    uint8_t master_key[CRYPTO_KEY_LEN];
    struct exchange *exchange;
    struct handlers_app apps[CONFIG_MAX_APPS];
    size_t napps;
    struct session_cache *cache;
    struct http_route routes[32]; /* the routes this configuration serves */
    size_t nroutes;
};

struct serve_worker {
    struct worker *w;
    struct handlers_ctx ctx;
    struct http_server *http;
    struct loop_timer deadline;
    struct loop_timer purge;
    struct loop_timer recheck; /* drained, but waiting for a token fetch to end */
    long shutdown_timeout_ms;
};

static void release(struct serve_worker *sw)
{
    /* The server first: it cancels pending requests, which cancel their WeChat calls. */
    http_server_free(sw->http);
    sw->http = NULL;
    /* A token fetch running on this worker's client would leave its waiters hanging. */
    for (size_t i = 0; i < sw->ctx.napps; i++)
        wechat_token_detach(sw->ctx.apps[i].token, sw->ctx.wx);
    wechat_client_free(sw->ctx.wx);
    sw->ctx.wx = NULL;
    loop_timer_stop(sw->w->loop, &sw->purge);
    session_close(sw->ctx.store);
    sw->ctx.store = NULL;
}

static void on_purged(int status, long count, void *arg)
{
    struct serve_worker *sw = arg;
    if (status != SESSION_OK) {
        log_msg(LOG_WARN, "purging expired sessions failed; will try again");
        count = 0;
    } else if (count > 0) {
        log_msg(LOG_DEBUG, "purged %ld expired sessions", count);
    }
    loop_timer_start(sw->w->loop, &sw->purge,
                     count >= PURGE_BATCH ? PURGE_AGAIN_MS : PURGE_INTERVAL_MS);
}

static void on_purge_timer(void *arg)
{
    struct serve_worker *sw = arg;
    sw->ctx.store->ops->purge_expired(sw->ctx.store, (int64_t)time(NULL), PURGE_BATCH, on_purged,
                                      sw);
}

static void finish(struct serve_worker *sw)
{
    loop_timer_stop(sw->w->loop, &sw->deadline);
    loop_timer_stop(sw->w->loop, &sw->recheck);
    release(sw);
    loop_stop(sw->w->loop);
}

/* This worker's requests are done; but a token fetch running on its client may have waiters on
 * other workers, so it stays until the fetch ends (the deadline still bounds it). */
static void drained(void *arg)
{
    struct serve_worker *sw = arg;
    for (size_t i = 0; i < sw->ctx.napps; i++) {
        if (wechat_token_fetching_on(sw->ctx.apps[i].token, sw->ctx.wx)) {
            loop_timer_start(sw->w->loop, &sw->recheck, 50);
            return;
        }
    }
    finish(sw);
}

static void on_deadline(void *arg)
{
    struct serve_worker *sw = arg;
    log_msg(LOG_WARN,
            "worker %d: requests still in flight after shutdown_timeout_ms, "
            "answering them 503",
            sw->w->id);
    drained(sw);
}

static void serve_stop(struct worker *w)
{
    struct serve_worker *sw = w->data;
    loop_timer_start(w->loop, &sw->deadline, (uint64_t)sw->shutdown_timeout_ms);
    http_server_quiesce(sw->http, drained, sw);
}

static void serve_done(struct worker *w)
{
    struct serve_worker *sw = w->data;
    if (sw == NULL)
        return;
    release(sw);
    free(sw);
    w->data = NULL;
}

static int serve_init(struct worker *w, void *arg)
{
    struct serve *s = arg;
    const struct config *cfg = s->cfg;
    struct serve_worker *sw = calloc(1, sizeof(*sw));
    if (sw == NULL)
        return -1;
    w->data = sw;
    sw->w = w;
    sw->shutdown_timeout_ms = cfg->shutdown_timeout_ms;
    loop_timer_init(&sw->deadline, on_deadline, sw);
    loop_timer_init(&sw->purge, on_purge_timer, sw);
    loop_timer_init(&sw->recheck, drained, sw);

    char serr[SESSION_ERR_MAX];
    if (session_open(cfg->store, w->loop, cfg->store_timeout_ms, &sw->ctx.store, serr) != 0) {
        log_kv(LOG_ERROR, "cannot open the session store", "detail", serr, NULL);
        return -1;
    }
    sw->ctx.exchange = s->exchange;
    sw->ctx.apps = s->apps;
    sw->ctx.napps = s->napps;
    sw->ctx.cache = s->cache;
    sw->ctx.master_key = s->master_key;
    if (w->id == 0) /* one purger is enough */
        loop_timer_start(w->loop, &sw->purge, PURGE_INTERVAL_MS);

    struct wechat_client_opts wo = {.base = cfg->wechat_base,
                                    .timeout_ms = cfg->upstream_timeout_ms,
                                    .retries = (int)cfg->upstream_retries};
    sw->ctx.cfg = cfg;
    sw->ctx.wx = wechat_client_new(w->loop, &wo);
    if (sw->ctx.wx == NULL) {
        log_msg(LOG_ERROR, "cannot create the WeChat client");
        return -1;
    }

    struct http_server_opts ho = {
        .listen = cfg->listen,
        .port = s->port,
        .max_body = (size_t)cfg->max_body_bytes,
        .max_connections = (unsigned)cfg->max_connections,
        .connection_timeout_s = (unsigned)cfg->connection_timeout,
        .routes = s->routes,
        .nroutes = s->nroutes,
        .handler_arg = &sw->ctx,
    };
    char err[HTTP_ERR_MAX];
    sw->http = http_server_new(w->loop, &ho, err);
    if (sw->http == NULL) {
        log_kv(LOG_ERROR, "cannot start the HTTP server", "detail", err, NULL);
        return -1;
    }
    s->port = http_server_port(sw->http);
    if (w->id == s->nworkers - 1) {
        char port[8], threads[8], apps[256], store[512];
        session_url_redacted(cfg->store, store, sizeof(store));
        size_t n = 0;
        apps[0] = '\0';
        for (size_t i = 0; i < s->napps && n < sizeof(apps); i++)
            n += (size_t)snprintf(apps + n, sizeof(apps) - n, "%s%s", i ? "," : "",
                                  s->apps[i].appid);
        snprintf(port, sizeof(port), "%u", s->port);
        snprintf(threads, sizeof(threads), "%d", s->nworkers);
        log_kv(LOG_INFO, "wxlogin serving", "version", WXLOGIN_VERSION, "listen", cfg->listen,
               "port", port, "threads", threads, "apps", apps, "wechat_base", cfg->wechat_base,
               "store", store, NULL);
    }
    return 0;
}

static const struct worker_ops serve_ops = {
    .init = serve_init,
    .stop = serve_stop,
    .done = serve_done,
};

int serve_run(const struct config *cfg)
{
    struct serve s = {.cfg = cfg, .nworkers = config_thread_count(cfg)};
    s.nroutes = handlers_select_routes(cfg, s.routes, sizeof(s.routes) / sizeof(s.routes[0]));
    char err[CONFIG_ERR_MAX];
    int rc = 1;
    if (master_key_load(cfg, s.master_key, err) != 0) {
        log_kv(LOG_ERROR, "cannot load the master key", "detail", err, NULL);
        goto out;
    }
    s.exchange = exchange_new(EXCHANGE_MAX_CODES, CODE_LIFETIME_MS);
    if (s.exchange == NULL)
        goto out;
    for (size_t i = 0; i < cfg->napps; i++) {
        const struct config_app *a = &cfg->apps[i];
        struct handlers_app *h = &s.apps[s.napps];
        h->appid = a->appid;
        h->secret = a->secret;
        h->token =
            wechat_token_new(a->appid, a->secret,
                             strcmp(a->access_token_api, "classic") == 0 ? WECHAT_TOKEN_CLASSIC
                                                                         : WECHAT_TOKEN_STABLE);
        if (h->token == NULL)
            goto out;
        s.napps++;
    }
    /* Only this process sees the logouts of an SQLite store (one process per database file):
     * that is what makes an in-memory copy of sessions safe. */
    if (session_sqlite_path(cfg->store) != NULL && cfg->session_cache_size > 0) {
        s.cache = session_cache_new((size_t)cfg->session_cache_size);
        if (s.cache == NULL)
            goto out;
    }
    if (workers_run(s.nworkers, &serve_ops, &s) != 0)
        goto out;
    log_msg(LOG_INFO, "stopped");
    rc = 0;
out:
    exchange_free(s.exchange);
    for (size_t i = 0; i < s.napps; i++)
        wechat_token_free(s.apps[i].token);
    session_cache_free(s.cache);
    crypto_wipe(s.master_key, sizeof(s.master_key));
    return rc;
}
