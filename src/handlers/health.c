/*
 * GET /healthz: liveness, 200 for as long as the process serves requests.
 * GET /readyz: readiness, 200 when the store answers, 503 store_unavailable otherwise.
 */
#include <stdlib.h>

#include "handlers/handlers.h"
#include "session/session.h"

void handle_healthz(struct http_request *req, void *arg)
{
    (void)arg;
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

struct ping_op {
    struct store_call sc;
};

static void on_ping(int status, void *arg)
{
    struct ping_op *op = arg;
    struct http_request *req = store_call_end(&op->sc);
    free(op);
    if (req == NULL)
        return;
    if (status != SESSION_OK) {
        handlers_reply_store_error(req, "ping");
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

void handle_readyz(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    struct ping_op *op = malloc(sizeof(*op));
    if (op == NULL) {
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return;
    }
    store_call_begin(&op->sc, req);
    ctx->store->ops->ping(ctx->store, on_ping, op);
}
