/*
 * GET /v1/session: verifies a session token for other services (an nginx auth_request target:
 * the identity is also in X-WX-* response headers). POST /v1/logout: ends a session.
 *
 * The hot path: a cached session is answered before store_get_session() returns, with no
 * allocation of ours (the request itself is the callback's argument; the reply is written
 * into a stack buffer).
 */
#include <string.h>
#include <time.h>

#include "handlers/handlers.h"
#include "store/store.h"
#include "util/jsonw.h"

static void reply_session(struct http_request *req, const struct store_session *s)
{
    int64_t left = s->expires_at - (int64_t)time(NULL);
    char buf[640];
    struct jsonw w;
    jsonw_begin(&w, buf, sizeof(buf));
    jsonw_str(&w, "openid", s->openid);
    if (s->unionid[0] != '\0')
        jsonw_str(&w, "unionid", s->unionid);
    jsonw_str(&w, "appid", s->appid);
    jsonw_num(&w, "expires_in", left > 0 ? left : 0);
    http_add_header(req, "X-WX-OpenID", s->openid);
    http_add_header(req, "X-WX-AppID", s->appid);
    if (s->unionid[0] != '\0')
        http_add_header(req, "X-WX-UnionID", s->unionid);
    http_reply_jsonw(req, 200, &w);
}

static void on_session(void *arg, int status, const struct store_session *s)
{
    struct http_request *req = arg;
    if (status == STORE_ERROR)
        handlers_reply_store_error(req, "get_session");
    else if (status != STORE_OK)
        handlers_reply_invalid_token(req, "unknown, expired or logged-out token");
    else
        reply_session(req, s);
}

void handle_session(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app;
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(req, ctx, &app, hash))
        return;
    store_get_session(ctx->store, http_request_slot(req), app->cred.appid, hash,
                      (int64_t)time(NULL), on_session, req);
}

void handle_session_limited(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    handlers_limit_client(req, ctx, ctx->limits->session, handle_session);
}

static void on_deleted(void *arg, int status)
{
    struct http_request *req = arg;
    if (status == STORE_ERROR)
        handlers_reply_store_error(req, "delete_session");
    else if (status != STORE_OK)
        handlers_reply_invalid_token(req, "unknown, expired or logged-out token");
    else
        http_reply(req, 204, NULL, NULL, 0);
}

void handle_logout(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app;
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(req, ctx, &app, hash))
        return;
    store_delete_session(ctx->store, http_request_slot(req), app->cred.appid, hash, on_deleted,
                         req);
}
