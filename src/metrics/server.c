/*
 * metrics/server: GET /metrics on a listener of its own (metrics_listen), so the service's
 * public address never answers it. One small libmicrohttpd daemon on one worker's loop (worker
 * 0's): scrapes are rare, and rendering them reads every worker's shard without stopping any.
 * Everything else on this listener is answered 404 (405 for another method on /metrics).
 */
#include <stdlib.h>

#include "http/server.h"
#include "metrics/metrics.h"

static void handle_metrics(struct http_request *req, void *arg)
{
    (void)arg;
    size_t len;
    char *body = metrics_render(&len);
    if (body == NULL) {
        http_reply_error(req, 500, "internal", "cannot render the metrics", "retry");
        return;
    }
    http_reply(req, 200, METRICS_CONTENT_TYPE, body, len);
    free(body);
}

static const struct http_route routes[] = {
    {"GET", "/metrics", handle_metrics},
};

struct http_server *metrics_server_new(struct loop *loop, const char *listen,
                                       char err[HTTP_ERR_MAX])
{
    struct http_server_opts o = {
        .listen = listen,
        .max_body = 1024,
        .max_connections = 64,
        .max_connections_per_address = 0,
        .connection_timeout_s = 30,
        .read_timeout_ms = 10000,
        .body_memory = 64 * 1024,
        .request_timeout_ms = 10000,
        .routes = routes,
        .nroutes = sizeof(routes) / sizeof(routes[0]),
    };
    return http_server_new(loop, &o, err);
}
