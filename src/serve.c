#include "serve.h"

#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "handlers/handlers.h"
#include "http/server.h"
#include "log/log.h"
#include "loop/loop.h"
#include "runtime/workers.h"
#include "version.h"
#include "wechat/client.h"

struct serve {
    const struct config *cfg;
    int nworkers;
    uint16_t port; /* bound by worker 0, joined by the others */
};

struct serve_worker {
    struct worker *w;
    struct handlers_ctx ctx;
    struct http_server *http;
    struct loop_timer deadline;
    long shutdown_timeout_ms;
};

static void release(struct serve_worker *sw)
{
    /* The server first: it cancels pending requests, which cancel their WeChat calls. */
    http_server_free(sw->http);
    sw->http = NULL;
    wechat_client_free(sw->ctx.wx);
    sw->ctx.wx = NULL;
}

static void drained(void *arg)
{
    struct serve_worker *sw = arg;
    loop_timer_stop(sw->w->loop, &sw->deadline);
    release(sw);
    loop_stop(sw->w->loop);
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
        .routes = handlers_routes,
        .nroutes = handlers_nroutes,
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
        char port[8], threads[8];
        snprintf(port, sizeof(port), "%u", s->port);
        snprintf(threads, sizeof(threads), "%d", s->nworkers);
        log_kv(LOG_INFO, "wxlogin serving", "version", WXLOGIN_VERSION, "listen", cfg->listen,
               "port", port, "threads", threads, "appid", cfg->appid, "wechat_base",
               cfg->wechat_base, NULL);
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
    if (workers_run(s.nworkers, &serve_ops, &s) != 0)
        return 1;
    log_msg(LOG_INFO, "stopped");
    return 0;
}
