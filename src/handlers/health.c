/*
 * GET /healthz: liveness, 200 for as long as the process serves requests.
 * GET /readyz: readiness, 200 when the store answers, 503 store_unavailable otherwise.
 */
#include "handlers/handlers.h"
#include "session/session.h"

void handle_healthz(struct http_request *req, void *arg)
{
    (void)arg;
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void on_ping(int status, void *arg)
{
    struct http_request *req = arg;
    if (status != SESSION_OK) {
        handlers_reply_store_error(req, "ping");
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

void handle_readyz(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    ctx->store->ops->ping(ctx->store, on_ping, req);
}
