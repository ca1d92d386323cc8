/*
 * serve: `wxlogin serve`. Makes what the workers share (the apps and their access tokens, the
 * code-exchange table, the store's process-wide part), then gives each worker its own loop,
 * store, WeChat client, login context, token fetchers and HTTP server, and drains them on
 * shutdown.
 *
 * Reload (SIGHUP). What a reload can change lives in a snapshot: the configuration read again,
 * the apps' secrets, the rate limits in force and the route table they imply. The main thread
 * reads and checks the file, builds a new snapshot, and posts it to every worker's loop
 * (loop_post()); each worker adopts it between two events on its own thread (its ctx->cfg, its
 * apps' secrets, its login context's limits, its server's routes), then lets go of the one it
 * held. A snapshot is immutable once published and reference-counted (the serve's current one
 * plus one per worker holding it): the last to let go frees it, on whichever thread. So a
 * request sees one snapshot from start to end of each synchronous step, and nothing on the hot
 * path takes a lock. The secrets are read only where a WeChat call starts (the URL or body is
 * built then, on the worker's thread), which is what makes the next code exchange and the next
 * token fetch use the new one. The limits themselves are never freed before exit: a limit
 * turned off stays alive for the requests that may still be taking from it, and a changed rate
 * is applied to the same buckets (limit_set_rate()), so a reload hands no client a fresh burst.
 * Keys that need a restart keep their running values in the snapshot and are logged.
 */
#include "serve.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
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
#include "util/portfile.h"
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
#define MAX_ROUTES 32

extern char **environ;

/* What a reload can change, immutable once published (see the top of the file). */
struct snapshot {
    atomic_int refs;
    const struct config *cfg;       /* &own, or the configuration serve_run() was given */
    struct config own;              /* zeroed when cfg is borrowed */
    char *secrets[CONFIG_MAX_APPS]; /* the running apps' secrets, in serve's app order */
    struct handlers_limits limits;  /* the serve's limits in force (never freed before exit) */
    struct http_route routes[MAX_ROUTES];
    size_t nroutes;
};

struct serve {
    const struct config *cfg; /* as started: what keys needing a restart keep */
    const struct serve_opts *opts;
    struct snapshot *current;    /* the snapshot the next reload starts from */
    struct limit *limit_objs[4]; /* address, session, openid, wechat: made once, kept till exit */
    struct serve_worker *workers[256];
    int nworkers;
    uint16_t port; /* bound by worker 0, joined by the others */
    uint8_t master_key[CRYPTO_KEY_LEN];
    uint8_t token_key[LOGIN_TOKEN_KEY_LEN]; /* derives each code's session token */
    struct exchange *exchange;
    struct handlers_app apps[CONFIG_MAX_APPS];
    size_t napps;
    struct store_shared *store;
    struct lockout *admin_lockout;
    unsigned conns_per_worker, conns_per_address; /* each worker's share */
};

struct serve_worker {
    struct worker *w;
    struct snapshot *snap; /* the one this worker's requests see */
    /* This worker's view of the apps: the shared tokens, and the secrets of its snapshot. */
    struct handlers_app apps[CONFIG_MAX_APPS];
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

static void snapshot_unref(struct snapshot *snap);

static void serve_done(struct worker *w)
{
    struct serve_worker *sw = w->data;
    if (sw == NULL)
        return;
    release(sw);
    snapshot_unref(sw->snap);
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
    s->workers[w->id] = sw;
    sw->snap = s->current;
    atomic_fetch_add_explicit(&sw->snap->refs, 1, memory_order_relaxed);
    for (size_t i = 0; i < s->napps; i++) {
        sw->apps[i] = s->apps[i];
        sw->apps[i].cred.secret = sw->snap->secrets[i];
    }
    sw->ctx.cfg = sw->snap->cfg;
    sw->ctx.apps = sw->apps;
    sw->ctx.napps = s->napps;
    sw->ctx.fetchers = sw->fetchers;
    sw->ctx.admin_lockout = s->admin_lockout;
    sw->ctx.limits = &sw->snap->limits;
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
                            .user_limit = sw->snap->limits.openid,
                            .wechat_limit = sw->snap->limits.wechat};
    if (sw->ctx.wx != NULL)
        sw->ctx.login = login_ctx_new(&lo, s->exchange, sw->ctx.wx, sw->ctx.store, w->loop);
    if (sw->ctx.wx == NULL || sw->ctx.login == NULL) {
        log_msg(LOG_ERROR, "cannot create the WeChat client");
        return -1;
    }
    for (size_t i = 0; i < s->napps; i++) {
        const struct handlers_app *a = &sw->apps[i]; /* the worker's: its secret follows */
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
        .routes = sw->snap->routes,
        .nroutes = sw->snap->nroutes,
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
    if (w->id == s->nworkers - 1) {
        log_serving(s);
        /* Every worker listens now (connections queue until the threads run). */
        if (s->opts->port_file != NULL && portfile_write(s->opts->port_file, s->port) != 0) {
            log_kv(LOG_ERROR, "cannot write the port file", "path", s->opts->port_file, "detail",
                   strerror(errno), NULL);
            return -1;
        }
    }
    return 0;
}

/* ---- the rate limits ---- */

/* The four limits, in the order of serve.limit_objs: the config key, the bucket kind. */
static const struct {
    const char *name;
    char kind;
    size_t rate_offset;
    size_t limits_offset;
} limit_defs[] = {
    {"rate_limit_address", 'a', offsetof(struct config, rate_limit_address),
     offsetof(struct handlers_limits, address)},
    {"rate_limit_session", 's', offsetof(struct config, rate_limit_session),
     offsetof(struct handlers_limits, session)},
    {"rate_limit_openid", 'o', offsetof(struct config, rate_limit_openid),
     offsetof(struct handlers_limits, openid)},
    {"rate_limit_wechat", 'w', offsetof(struct config, rate_limit_wechat),
     offsetof(struct handlers_limits, wechat)},
};
#define NLIMITS (sizeof(limit_defs) / sizeof(limit_defs[0]))

static const struct config_rate *rate_of(const struct config *cfg, size_t i)
{
    return (const struct config_rate *)(const void *)((const char *)cfg +
                                                      limit_defs[i].rate_offset);
}

/*
 * Makes the limits cfg turns on that do not exist yet. They live in Redis when the store is
 * shared (every instance draws from the same buckets), else in tables of this process,
 * rate_limit_table_size buckets each (as started: the table is not resized by a reload). The
 * WeChat ceiling has one bucket per app, so its table is exactly that big and never forgets one.
 * Returns 0, or -1 when out of memory.
 */
static int make_limits(struct serve *s, const struct config *cfg)
{
    uint8_t key[LIMIT_KEY_LEN];
    bool shared = store_url_shared(s->cfg->store);
    int rc = -1;
    if (limit_key(s->master_key, key) != 0)
        goto out;
    for (size_t i = 0; i < NLIMITS; i++) {
        const struct config_rate *rate = rate_of(cfg, i);
        if (rate->count == 0 || s->limit_objs[i] != NULL)
            continue;
        struct limit_opts o = {.kind = limit_defs[i].kind,
                               .burst = (uint32_t)rate->count,
                               .period_ms = (uint64_t)rate->period_ms,
                               .shared = shared,
                               .capacity = limit_defs[i].kind == 'w'
                                               ? s->napps
                                               : (size_t)s->cfg->rate_limit_table_size,
                               .key = key};
        s->limit_objs[i] = limit_new(&o);
        if (s->limit_objs[i] == NULL)
            goto out;
    }
    rc = 0;
out:
    crypto_wipe(key, sizeof(key));
    return rc;
}

/* The limits in force under cfg (make_limits() made them): each at cfg's rate, or NULL. */
static void use_limits(struct serve *s, const struct config *cfg, struct handlers_limits *out)
{
    for (size_t i = 0; i < NLIMITS; i++) {
        const struct config_rate *rate = rate_of(cfg, i);
        struct limit *l = rate->count == 0 ? NULL : s->limit_objs[i];
        if (l != NULL)
            limit_set_rate(l, (uint32_t)rate->count, (uint64_t)rate->period_ms);
        *(struct limit **)(void *)((char *)out + limit_defs[i].limits_offset) = l;
    }
}

/* ---- snapshots ---- */

static void snapshot_free(struct snapshot *snap)
{
    if (snap == NULL)
        return;
    for (size_t i = 0; i < CONFIG_MAX_APPS; i++) {
        if (snap->secrets[i] != NULL) {
            crypto_wipe(snap->secrets[i], strlen(snap->secrets[i]));
            free(snap->secrets[i]);
        }
    }
    config_done(&snap->own);
    free(snap);
}

static void snapshot_unref(struct snapshot *snap)
{
    if (snap != NULL && atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(snap);
}

/*
 * A snapshot of cfg (taken when own, else borrowed) for the running apps: each one's secret is
 * cfg's for that appid, or prev's when cfg no longer has the app (removing an app needs a
 * restart). NULL when out of memory.
 */
static struct snapshot *snapshot_new(struct serve *s, struct config *cfg, bool own,
                                     const struct snapshot *prev)
{
    struct snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        return NULL;
    atomic_init(&snap->refs, 1);
    if (own) {
        snap->own = *cfg;
        memset(cfg, 0, sizeof(*cfg));
        snap->cfg = &snap->own;
    } else {
        snap->cfg = cfg;
    }
    for (size_t i = 0; i < s->napps; i++) {
        const struct config_app *a = config_app_find(snap->cfg, s->apps[i].cred.appid);
        const char *secret = a != NULL ? a->secret : prev != NULL ? prev->secrets[i] : NULL;
        snap->secrets[i] = secret != NULL ? strdup(secret) : NULL;
        if (snap->secrets[i] == NULL)
            goto fail;
    }
    snap->nroutes = handlers_select_routes(snap->cfg, snap->routes, MAX_ROUTES);
    return snap;
fail:
    snapshot_free(snap);
    return NULL;
}

/* ---- reload ---- */

/* Keys a reload applies; every other key keeps its running value until a restart. */
static bool reloadable(const char *name)
{
    static const char *const keys[] = {
        "secret",
        "secret_file",
        "admin_token",
        "admin_token_file",
        "log_level",
        "session_key_grace",
        "rate_limit_address",
        "rate_limit_openid",
        "rate_limit_wechat",
        "rate_limit_session",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(name, keys[i]) == 0)
            return true;
    /* An app section's secret (the section itself, its token API: a restart). */
    size_t n = strlen(name);
    return strncmp(name, "[app ", 5) == 0 &&
           ((n > 8 && strcmp(name + n - 8, "] secret") == 0) ||
            (n > 13 && strcmp(name + n - 13, "] secret_file") == 0));
}

struct changes {
    char applied[1024], restart[1024];
    size_t napplied, nrestart;
    struct config *next;
    const struct config *running;
    bool keep_failed;
};

static void add_name(char *list, size_t cap, size_t *n, const char *name)
{
    size_t len = strlen(list);
    snprintf(list + len, cap - len, "%s%s", len ? "," : "", name);
    (*n)++;
}

static void on_changed(const char *name, void *arg)
{
    struct changes *c = arg;
    if (reloadable(name)) {
        add_name(c->applied, sizeof(c->applied), &c->napplied, name);
        return;
    }
    add_name(c->restart, sizeof(c->restart), &c->nrestart, name);
    /* The running value stays in force, and in the snapshot requests see. Section keys and
     * "apps" are not in the key table: the running apps are serve's, not the snapshot's. */
    if (name[0] != '[' && strcmp(name, "apps") != 0 && config_keep(c->next, c->running, name) != 0)
        c->keep_failed = true;
}

static void reload_warn(const char *msg, void *arg)
{
    (void)arg;
    log_msg(LOG_WARN, "%s", msg);
}

static void notify_monotonic(const char *state)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "%s\nMONOTONIC_USEC=%llu", state,
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

/* On the worker's thread: from now on its requests see snap (see the top of the file). */
struct adopt {
    struct serve_worker *sw;
    struct snapshot *snap;
};

static void adopt(void *arg)
{
    struct adopt *a = arg;
    struct serve_worker *sw = a->sw;
    struct snapshot *old = sw->snap;
    sw->snap = a->snap;
    free(a);
    for (size_t i = 0; i < sw->ctx.napps; i++)
        sw->apps[i].cred.secret = sw->snap->secrets[i];
    sw->ctx.cfg = sw->snap->cfg;
    sw->ctx.limits = &sw->snap->limits;
    if (sw->ctx.login != NULL)
        login_ctx_set_limits(sw->ctx.login, sw->snap->limits.openid, sw->snap->limits.wechat);
    if (sw->http != NULL)
        http_server_set_routes(sw->http, sw->snap->routes, sw->snap->nroutes);
    snapshot_unref(old);
}

/* Reads and checks the file again; 0 with *out, or -1 with err (the running one stays). */
static int reload_load(struct serve *s, struct snapshot **out, struct changes *ch,
                       char err[CONFIG_ERR_MAX])
{
    struct config next;
    if (config_load(&next, s->opts->config_path, environ, reload_warn, NULL, err) != 0)
        return -1;
    int rc = -1;
    if (config_check_serve(&next, err) != 0)
        goto out;
    ch->next = &next;
    ch->running = s->current->cfg;
    config_diff(s->current->cfg, &next, on_changed, ch);
    if (ch->keep_failed || make_limits(s, &next) != 0) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        goto out;
    }
    *out = snapshot_new(s, &next, true, s->current);
    if (*out == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "out of memory");
        goto out;
    }
    rc = 0;
out:
    config_done(&next); /* a no-op once snapshot_new() took it */
    return rc;
}

/* SIGHUP, on the main thread while the workers run. */
static void serve_reload(void *arg)
{
    struct serve *s = arg;
    notify_monotonic("RELOADING=1");
    struct snapshot *next = NULL;
    struct changes ch = {.applied = "", .restart = ""};
    char err[CONFIG_ERR_MAX];
    if (reload_load(s, &next, &ch, err) != 0) {
        log_kv(LOG_WARN, "reload failed; the running configuration stays", "config",
               s->opts->config_path != NULL ? s->opts->config_path : "(environment only)", "detail",
               err, NULL);
        sd_notify(0, "READY=1");
        return;
    }
    /* From here nothing fails: the new limits' rates and the log level apply to every thread at
     * once, the rest as each worker adopts the snapshot. */
    use_limits(s, next->cfg, &next->limits);
    log_set_level(next->cfg->log_level);
    atomic_store_explicit(&next->refs, 1 + s->nworkers, memory_order_relaxed);
    for (int i = 0; i < s->nworkers; i++) {
        struct adopt *a = malloc(sizeof(*a));
        if (a != NULL) {
            *a = (struct adopt){.sw = s->workers[i], .snap = next};
            if (loop_post(s->workers[i]->w->loop, adopt, a) == 0)
                continue;
            free(a);
        }
        log_kv(LOG_ERROR, "reload: out of memory; a worker keeps the previous configuration", NULL);
        snapshot_unref(next);
    }
    struct snapshot *old = s->current;
    s->current = next;
    snapshot_unref(old);
    log_kv(LOG_INFO, "configuration reloaded", "changed", ch.applied, "restart_needed", ch.restart,
           NULL);
    if (ch.nrestart > 0)
        log_kv(LOG_WARN,
               "reload: these keys changed but need a restart; their running values "
               "stay until then",
               "keys", ch.restart, NULL);
    sd_notify(0, "READY=1");
}

static void serve_ready(void *arg)
{
    (void)arg;
    sd_notify(0, "READY=1");
}

static void serve_stopping(void *arg)
{
    (void)arg;
    sd_notify(0, "STOPPING=1");
}

static const struct worker_ops serve_ops = {
    .init = serve_init,
    .stop = serve_stop,
    .done = serve_done,
    .ready = serve_ready,
    .reload = serve_reload,
    .stopping = serve_stopping,
};

static void store_warn(const char *msg, void *arg)
{
    (void)arg;
    log_msg(LOG_WARN, "%s", msg);
}

int serve_run(const struct config *cfg, const struct serve_opts *opts)
{
    struct serve s = {.cfg = cfg, .opts = opts, .nworkers = config_thread_count(cfg)};
    char err[CONFIG_ERR_MAX];
    char serr[STORE_ERR_MAX];
    int rc = 1;
    if (s.nworkers > (int)(sizeof(s.workers) / sizeof(s.workers[0])))
        s.nworkers = (int)(sizeof(s.workers) / sizeof(s.workers[0]));
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
        h->cred.secret = NULL; /* each worker's apps carry the secret of its snapshot */
        h->token_api = strcmp(a->access_token_api, "classic") == 0 ? WECHAT_TOKEN_CLASSIC
                                                                   : WECHAT_TOKEN_STABLE;
        h->token = token_new();
        if (h->token == NULL)
            goto out;
        s.napps++;
    }
    /* Always: a reload may set an admin token where there was none. */
    s.admin_lockout = lockout_new(ADMIN_LOCKOUT_ADDRESSES, (unsigned)cfg->admin_max_failures,
                                  (uint64_t)cfg->admin_lockout_s * 1000);
    if (s.admin_lockout == NULL)
        goto out;
    if (make_limits(&s, cfg) != 0) {
        log_msg(LOG_ERROR, "cannot make the rate limits: out of memory");
        goto out;
    }
    s.current = snapshot_new(&s, (struct config *)cfg, false, NULL);
    if (s.current == NULL)
        goto out;
    use_limits(&s, cfg, &s.current->limits);
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
    int src = store_shared_new(&sc, &s.store, serr);
    if (src != 0) {
        log_kv(LOG_ERROR, "cannot open the session store", "detail", serr, NULL);
        if (src == STORE_WRONG_KEY)
            rc = 2;
        goto out;
    }
    if (cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0' &&
        metrics_start(handlers_routes, handlers_nroutes) != 0) {
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
    snapshot_unref(s.current);
    for (size_t i = 0; i < NLIMITS; i++)
        limit_free(s.limit_objs[i]);
    for (size_t i = 0; i < s.napps; i++)
        token_free(s.apps[i].token);
    crypto_wipe(s.master_key, sizeof(s.master_key));
    crypto_wipe(s.token_key, sizeof(s.token_key));
    return rc;
}
