/*
 * GET /v1/session: verifies a session token for other services (an nginx auth_request target:
 * the identity is also in X-WX-* response headers). POST /v1/logout: ends a session.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "handlers/handlers.h"
#include "session/cache.h"
#include "session/session.h"

static void reply_session(struct http_request *req, const struct session_record *rec)
{
    int64_t left = rec->expires_at - (int64_t)time(NULL);
    json_t *body = json_pack("{s:s, s:s, s:I}", "openid", rec->openid, "appid", rec->appid,
                             "expires_in", (json_int_t)(left > 0 ? left : 0));
    http_add_header(req, "X-WX-OpenID", rec->openid);
    http_add_header(req, "X-WX-AppID", rec->appid);
    if (rec->unionid[0] != '\0') {
        json_object_set_new(body, "unionid", json_string(rec->unionid));
        http_add_header(req, "X-WX-UnionID", rec->unionid);
    }
    http_reply_json(req, 200, body);
}

struct session_op {
    struct store_call sc;
    struct session_cache *cache;
    uint8_t hash[CRYPTO_HASH_LEN];
};

static void on_session(int status, const struct session_record *rec, void *arg)
{
    struct session_op *op = arg;
    struct http_request *req = store_call_end(&op->sc);
    if (status == SESSION_OK)
        session_cache_put(op->cache, op->hash, rec);
    free(op);
    if (req == NULL)
        return;
    if (status == SESSION_ERROR) {
        handlers_reply_store_error(req, "get_session");
        return;
    }
    if (status != SESSION_OK) {
        handlers_reply_invalid_token(req, "unknown, expired or logged-out token");
        return;
    }
    reply_session(req, rec);
}

void handle_session(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app;
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(req, ctx, &app, hash))
        return;
    int64_t now = (int64_t)time(NULL);
    struct session_record rec;
    if (session_cache_get(ctx->cache, hash, now, &rec)) {
        /* Tokens are bound to their app, in memory as in the store. */
        if (strcmp(rec.appid, app->appid) != 0)
            handlers_reply_invalid_token(req, "unknown, expired or logged-out token");
        else
            reply_session(req, &rec);
        return;
    }
    struct session_op *op = malloc(sizeof(*op));
    if (op == NULL) {
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return;
    }
    op->cache = ctx->cache;
    memcpy(op->hash, hash, sizeof(op->hash));
    store_call_begin(&op->sc, req);
    ctx->store->ops->get_session(ctx->store, app->appid, hash, now, on_session, op);
}

static void on_deleted(int status, void *arg)
{
    struct store_call *sc = arg;
    struct http_request *req = store_call_end(sc);
    free(sc);
    if (req == NULL)
        return;
    if (status == SESSION_ERROR) {
        handlers_reply_store_error(req, "delete_session");
        return;
    }
    if (status != SESSION_OK) {
        handlers_reply_invalid_token(req, "unknown, expired or logged-out token");
        return;
    }
    http_reply(req, 204, NULL, NULL, 0);
}

void handle_logout(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app;
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(req, ctx, &app, hash))
        return;
    struct store_call *sc = malloc(sizeof(*sc));
    if (sc == NULL) {
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return;
    }
    /* Forget it here first: from now on no lookup may be answered from memory. */
    session_cache_del(ctx->cache, hash);
    store_call_begin(sc, req);
    ctx->store->ops->delete_session(ctx->store, app->appid, hash, on_deleted, sc);
}
