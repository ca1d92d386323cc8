/*
 * serve: `wxlogin serve`. Makes what the workers share (the apps and their access tokens, the
 * code-exchange table, the store's process-wide part), then gives each worker its own loop,
 * store, WeChat client, login context, token fetchers and HTTP server, and drains them on
 * shutdown.
 */
#include "serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "config/config.h"
#include "config/master_key.h"
#include "crypto/crypto.h"
#include "exchange/exchange.h"
#include "handlers/handlers.h"
#include "http/server.h"
#include "limit/limit.h"
#include "log/log.h"
#include "login/login.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "runtime/async.h"
#include "runtime/workers.h"
#include "store/store.h"
#include "token/fetch.h"
#include "token/token.h"
#include "util/lockout.h"
#include "version.h"
#include "wechat/client.h"

/* A login code lives 5 minutes at WeChat; its exchange outcome is remembered as long (so
 * code_reuse_window is at most that). */
#define CODE_LIFETIME_MS (5 * 60 * 1000)
/* Expired sessions are deleted in batches, so a backlog never stalls the writer. */
#define PURGE_INTERVAL_MS (60 * 1000)
#define PURGE_BATCH 1000
#define PURGE_AGAIN_MS 100
/* While a token fetch on a stopping worker has waiters elsewhere, look again this often. */
#define RECHECK_MS 50
/* Client addresses whose failed admin attempts are remembered (about 100 bytes each). */
#define ADMIN_LOCKOUT_ADDRESSES 1024

struct serve {
    const struct config *cfg;
    int nworkers;
    uint16_t port; /* bound by worker 0, joined by the others */
    uint8_t master_key[CRYPTO_KEY_LEN];
    uint8_t token_key[LOGIN_TOKEN_KEY_LEN]; /* derives each code's session token */
    struct exchange *exchange;
    struct handlers_app apps[CONFIG_MAX_APPS];
    size_t napps;
    struct store_shared *store;
    struct lockout *admin_lockout;
    struct handlers_limits limits;
    struct http_route routes[32]; /* the routes this configuration serves */
    size_t nroutes;
    unsigned conns_per_worker, conns_per_address; /* each worker's share */
};

struct serve_worker {
    struct worker *w;
    struct handlers_ctx ctx;
    struct token_fetcher *fetchers[CONFIG_MAX_APPS];
    struct http_server *http;
    struct http_server *metrics_http; /* GET /metrics (worker 0, when metrics_listen is set) */
    struct loop_timer deadline;
    struct loop_timer purge;
    struct async_slot purging;
    struct loop_timer recheck; /* drained, but waiting for a token fetch to end */
    long shutdown_timeout_ms;
};

static void release(struct serve_worker *sw)
{
    /* The server first: it answers pending requests and cancels what they wait for. */
    http_server_free(sw->http);
    sw->http = NULL;
    http_server_free(sw->metrics_http);
    sw->metrics_http = NULL;
    /* A token fetch running here ends now; its waiters (on any worker) are told. */
    for (size_t i = 0; i < sw->ctx.napps; i++) {
        token_fetcher_free(sw->fetchers[i]);
        sw->fetchers[i] = NULL;
    }
    async_cancel(&sw->purging);
    loop_timer_stop(sw->w->loop, &sw->purge);
    login_ctx_free(sw->ctx.login);
    sw->ctx.login = NULL;
    wechat_client_free(sw->ctx.wx);
    sw->ctx.wx = NULL;
    store_close(sw->ctx.store);
    sw->ctx.store = NULL;
}

static void on_purged(void *arg, int status, long count)
{
    struct serve_worker *sw = arg;
    if (status != STORE_OK) {
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
    store_purge_expired(sw->ctx.store, &sw->purging, (int64_t)time(NULL), PURGE_BATCH, on_purged,
                        sw);
}

static void finish(struct serve_worker *sw)
{
    loop_timer_stop(sw->w->loop, &sw->deadline);
    loop_timer_stop(sw->w->loop, &sw->recheck);
    release(sw);
    loop_stop(sw->w->loop);
}

/* This worker's requests are done; but a token fetch running on it may have waiters on other
 * workers, so it stays until the fetch ends (the deadline still bounds it). */
static void drained(void *arg)
{
    struct serve_worker *sw = arg;
    for (size_t i = 0; i < sw->ctx.napps; i++) {
        if (token_fetching_on(sw->ctx.apps[i].token, sw->fetchers[i])) {
            loop_timer_start(sw->w->loop, &sw->recheck, RECHECK_MS);
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
    finish(sw);
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

/* Descriptors every worker needs besides client connections (its loops, MHD's epoll, WeChat and
 * Redis connections, the SQLite files), and those of the process itself. */
#define FDS_PER_WORKER 64
#define FDS_RESERVED 64
/* The default ceiling whatever the descriptors allow: each connection costs about 12 KiB. */
#define CONNS_AUTO_MAX 65536

/*
 * Client connections are what exhausts descriptors, and a process out of them cannot even open
 * its database: so the soft open-file limit is raised to the hard one, and max_connections is
 * what fits in it (all of it when not set; a configured value that does not fit is lowered).
 * Each worker gets its share of the connection limits, as each runs its own daemon.
 */
static void size_connections(struct serve *s)
{
    const struct config *cfg = s->cfg;
    struct rlimit rl;
    long fit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            struct rlimit up = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
            if (setrlimit(RLIMIT_NOFILE, &up) == 0)
                rl.rlim_cur = rl.rlim_max;
        }
        fit = rl.rlim_cur > 1000000 ? 1000000 : (long)rl.rlim_cur;
    }
    fit -= FDS_RESERVED + (long)s->nworkers * FDS_PER_WORKER;
    if (fit < s->nworkers)
        fit = s->nworkers;
    long total = cfg->max_connections;
    if (total == 0) {
        total = fit < CONNS_AUTO_MAX ? fit : CONNS_AUTO_MAX;
    } else if (total > fit) {
        char want[24], got[24];
        snprintf(want, sizeof(want), "%ld", total);
        snprintf(got, sizeof(got), "%ld", fit);
        log_kv(LOG_WARN, "max_connections lowered to what the open-file limit allows",
               "max_connections", want, "allowed", got, NULL);
        total = fit;
    }
    s->conns_per_worker = (unsigned)(total / s->nworkers);
    long per_addr = cfg->max_connections_per_address;
    s->conns_per_address =
        per_addr == 0 ? 0 : (unsigned)((per_addr + s->nworkers - 1) / s->nworkers);
}

static void log_serving(const struct serve *s)
{
    const struct config *cfg = s->cfg;
    char port[8], threads[8], conns[16], apps[256], store[512], wechat_base[512];
    store_url_redacted(cfg->store, store, sizeof(store));
    store_url_redacted(cfg->wechat_base, wechat_base, sizeof(wechat_base));
    size_t n = 0;
    apps[0] = '\0';
    for (size_t i = 0; i < s->napps && n < sizeof(apps); i++)
        n += (size_t)snprintf(apps + n, sizeof(apps) - n, "%s%s", i ? "," : "",
                              s->apps[i].cred.appid);
    snprintf(port, sizeof(port), "%u", s->port);
    snprintf(threads, sizeof(threads), "%d", s->nworkers);
    snprintf(conns, sizeof(conns), "%lu",
             (unsigned long)s->conns_per_worker * (unsigned long)s->nworkers);
    log_kv(LOG_INFO, "wxlogin serving", "version", WXLOGIN_VERSION, "listen", cfg->listen, "port",
           port, "threads", threads, "max_connections", conns, "apps", apps, "wechat_base",
           wechat_base, "store", store, NULL);
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
    sw->ctx.cfg = cfg;
    sw->ctx.apps = s->apps;
    sw->ctx.napps = s->napps;
    sw->ctx.fetchers = sw->fetchers;
    sw->ctx.admin_lockout = s->admin_lockout;
    sw->ctx.limits = &s->limits;
    sw->ctx.token_key = s->token_key;
    sw->ctx.exchange = s->exchange;

    char serr[STORE_ERR_MAX];
    if (store_open(s->store, w->loop, &sw->ctx.store, serr) != 0) {
        log_kv(LOG_ERROR, "cannot open the session store", "detail", serr, NULL);
        return -1;
    }
    if (w->id == 0) /* one purger is enough */
        loop_timer_start(w->loop, &sw->purge, PURGE_INTERVAL_MS);

    struct wechat_client_opts wo = {.base = cfg->wechat_base,
                                    .timeout_ms = cfg->upstream_timeout_ms,
                                    .retries = (int)cfg->upstream_retries};
    sw->ctx.wx = wechat_client_new(w->loop, &wo);
    struct login_opts lo = {.session_ttl_s = cfg->session_ttl,
                            .max_age_s = cfg->session_max_age,
                            .outcome_keep_ms = CODE_LIFETIME_MS,
                            .reuse_window_ms = cfg->code_reuse_window * 1000,
                            .token_key = s->token_key,
                            .user_limit = s->limits.openid,
                            .wechat_limit = s->limits.wechat};
    if (sw->ctx.wx != NULL)
        sw->ctx.login = login_ctx_new(&lo, s->exchange, sw->ctx.wx, sw->ctx.store, w->loop);
    if (sw->ctx.wx == NULL || sw->ctx.login == NULL) {
        log_msg(LOG_ERROR, "cannot create the WeChat client");
        return -1;
    }
    for (size_t i = 0; i < s->napps; i++) {
        const struct handlers_app *a = &s->apps[i];
        sw->fetchers[i] =
            token_fetcher_new(a->token, &a->cred, a->token_api, sw->ctx.wx, sw->ctx.store, w->loop);
        if (sw->fetchers[i] == NULL)
            return -1;
    }

    struct http_server_opts ho = {
        .listen = cfg->listen,
        .port = s->port,
        .max_body = (size_t)cfg->max_body_bytes,
        .max_connections = s->conns_per_worker,
        .max_connections_per_address = s->conns_per_address,
        .connection_timeout_s = (unsigned)cfg->connection_timeout,
        .read_timeout_ms = cfg->read_timeout * 1000,
        .body_memory = (size_t)cfg->max_body_memory / (size_t)s->nworkers,
        .request_timeout_ms = cfg->request_timeout_ms,
        .trusted_proxies = cfg->trusted_proxies,
        .ntrusted_proxies = cfg->ntrusted_proxies,
        .routes = s->routes,
        .nroutes = s->nroutes,
        .handler_arg = &sw->ctx,
        .metrics = true,
    };
    char err[HTTP_ERR_MAX];
    sw->http = http_server_new(w->loop, &ho, err);
    if (sw->http == NULL) {
        log_kv(LOG_ERROR, "cannot start the HTTP server", "detail", err, NULL);
        return -1;
    }
    s->port = http_server_port(sw->http);
    if (w->id == 0 && metrics_enabled()) { /* scrapes are rare: one listener is enough */
        sw->metrics_http = metrics_server_new(w->loop, cfg->metrics_listen, err);
        if (sw->metrics_http == NULL) {
            log_kv(LOG_ERROR, "cannot serve the metrics", "detail", err, NULL);
            return -1;
        }
        char mport[8];
        snprintf(mport, sizeof(mport), "%u", http_server_port(sw->metrics_http));
        log_kv(LOG_INFO, "metrics served", "listen", cfg->metrics_listen, "port", mport, NULL);
    }
    if (w->id == s->nworkers - 1)
        log_serving(s);
    return 0;
}

static const struct worker_ops serve_ops = {
    .init = serve_init,
    .stop = serve_stop,
    .done = serve_done,
};

/* One limit of the configuration, or NULL when it is off. Returns 0, or -1 when out of memory. */
static int make_limit(const struct config_rate *rate, char kind, bool shared, size_t capacity,
                      const uint8_t key[LIMIT_KEY_LEN], struct limit **out)
{
    *out = NULL;
    if (rate->count == 0)
        return 0;
    struct limit_opts o = {.kind = kind,
                           .burst = (uint32_t)rate->count,
                           .period_ms = (uint64_t)rate->period_ms,
                           .shared = shared,
                           .capacity = capacity,
                           .key = key};
    *out = limit_new(&o);
    return *out != NULL ? 0 : -1;
}

/*
 * The rate limits: in Redis when the store is shared (every instance draws from the same
 * buckets), else in tables of this process, rate_limit_table_size buckets each. The WeChat
 * ceiling has one bucket per app, so its table is exactly that big and never forgets one.
 */
static int make_limits(struct serve *s)
{
    const struct config *cfg = s->cfg;
    uint8_t key[LIMIT_KEY_LEN];
    bool shared = store_url_shared(cfg->store);
    size_t table = (size_t)cfg->rate_limit_table_size;
    int rc = -1;
    if (limit_key(s->master_key, key) != 0)
        goto out;
    if (make_limit(&cfg->rate_limit_address, 'a', shared, table, key, &s->limits.address) != 0 ||
        make_limit(&cfg->rate_limit_session, 's', shared, table, key, &s->limits.session) != 0 ||
        make_limit(&cfg->rate_limit_openid, 'o', shared, table, key, &s->limits.openid) != 0 ||
        make_limit(&cfg->rate_limit_wechat, 'w', shared, s->napps, key, &s->limits.wechat) != 0)
        goto out;
    rc = 0;
out:
    crypto_wipe(key, sizeof(key));
    return rc;
}

static void free_limits(struct handlers_limits *l)
{
    limit_free(l->address);
    limit_free(l->session);
    limit_free(l->openid);
    limit_free(l->wechat);
}

static void store_warn(const char *msg, void *arg)
{
    (void)arg;
    log_msg(LOG_WARN, "%s", msg);
}

int serve_run(const struct config *cfg)
{
    struct serve s = {.cfg = cfg, .nworkers = config_thread_count(cfg)};
    s.nroutes = handlers_select_routes(cfg, s.routes, sizeof(s.routes) / sizeof(s.routes[0]));
    char err[CONFIG_ERR_MAX];
    char serr[STORE_ERR_MAX];
    int rc = 1;
    if (master_key_load(cfg, s.master_key, err) != 0) {
        log_kv(LOG_ERROR, "cannot load the master key", "detail", err, NULL);
        goto out;
    }
    size_connections(&s);
    if (login_token_key(s.master_key, s.token_key) != 0) {
        log_msg(LOG_ERROR, "cannot derive the token key");
        goto out;
    }
    s.exchange = exchange_new((size_t)cfg->exchange_table_size, CODE_LIFETIME_MS);
    if (s.exchange == NULL)
        goto out;
    for (size_t i = 0; i < cfg->napps; i++) {
        const struct config_app *a = &cfg->apps[i];
        struct handlers_app *h = &s.apps[s.napps];
        h->cred.appid = a->appid;
        h->cred.secret = a->secret;
        h->token_api = strcmp(a->access_token_api, "classic") == 0 ? WECHAT_TOKEN_CLASSIC
                                                                   : WECHAT_TOKEN_STABLE;
        h->token = token_new();
        if (h->token == NULL)
            goto out;
        s.napps++;
    }
    if (cfg->admin_token != NULL) {
        s.admin_lockout = lockout_new(ADMIN_LOCKOUT_ADDRESSES, (unsigned)cfg->admin_max_failures,
                                      (uint64_t)cfg->admin_lockout_s * 1000);
        if (s.admin_lockout == NULL)
            goto out;
    }
    if (make_limits(&s) != 0) {
        log_msg(LOG_ERROR, "cannot make the rate limits: out of memory");
        goto out;
    }
    const char *appids[CONFIG_MAX_APPS];
    for (size_t i = 0; i < s.napps; i++)
        appids[i] = s.apps[i].cred.appid;
    struct store_config sc = {.url = cfg->store,
                              .timeout_ms = cfg->store_timeout_ms,
                              .master_key = s.master_key,
                              .cache_entries = (size_t)cfg->session_cache_size,
                              .apps = appids,
                              .napps = s.napps,
                              .user_retention_s = cfg->user_retention,
                              .warn = store_warn};
    if (store_shared_new(&sc, &s.store, serr) != 0) {
        log_kv(LOG_ERROR, "cannot open the session store", "detail", serr, NULL);
        goto out;
    }
    if (cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0' &&
        metrics_start(s.routes, s.nroutes) != 0) {
        log_msg(LOG_ERROR, "cannot start the metrics: out of memory");
        goto out;
    }
    if (workers_run(s.nworkers, &serve_ops, &s) != 0)
        goto out;
    log_msg(LOG_INFO, "stopped");
    rc = 0;
out:
    store_shared_free(s.store);
    metrics_stop();
    exchange_free(s.exchange);
    lockout_free(s.admin_lockout);
    free_limits(&s.limits);
    for (size_t i = 0; i < s.napps; i++)
        token_free(s.apps[i].token);
    crypto_wipe(s.master_key, sizeof(s.master_key));
    crypto_wipe(s.token_key, sizeof(s.token_key));
    return rc;
}
