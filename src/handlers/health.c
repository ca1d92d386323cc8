/*
 * GET /healthz: liveness, 200 for as long as the process serves requests.
 * GET /readyz: readiness, 200 when the store answers, 503 store_unavailable otherwise.
 */
#include "handlers/handlers.h"
#include "store/store.h"

void handle_healthz(struct http_request *req, void *arg)
{
    (void)arg;
    static const char ok[] = "{\"status\":\"ok\"}";
    http_reply(req, 200, "application/json", ok, sizeof(ok) - 1);
}

static void on_ping(void *arg, int status)
{
    struct http_request *req = arg;
    static const char ready[] = "{\"status\":\"ready\"}";
    if (status != STORE_OK)
        handlers_reply_store_error(req, "ping");
    else
        http_reply(req, 200, "application/json", ready, sizeof(ready) - 1);
}

void handle_readyz(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    store_ping(ctx->store, http_request_slot(req), on_ping, req);
}
