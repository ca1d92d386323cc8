/*
 * GET /v1/session: verifies a session token for other services (an nginx auth_request target:
 * the identity is also in X-WX-* response headers). POST /v1/logout: ends a session.
 */
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "handlers/handlers.h"
#include "session/session.h"

static void on_session(int status, const struct session_record *rec, void *arg)
{
    struct http_request *req = arg;
    if (status == SESSION_ERROR) {
        handlers_reply_store_error(req, "get_session");
        return;
    }
    if (status != SESSION_OK) {
        handlers_reply_invalid_token(req, "unknown, expired or logged-out token");
        return;
    }
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

void handle_session(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    uint8_t hash[CRYPTO_HASH_LEN];
    const char *why;
    if (handlers_bearer_hash(req, hash, &why) != 0) {
        handlers_reply_invalid_token(req, why);
        return;
    }
    ctx->store->ops->get_session(ctx->store, hash, (int64_t)time(NULL), on_session, req);
}

static void on_deleted(int status, void *arg)
{
    struct http_request *req = arg;
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
    uint8_t hash[CRYPTO_HASH_LEN];
    const char *why;
    if (handlers_bearer_hash(req, hash, &why) != 0) {
        handlers_reply_invalid_token(req, why);
        return;
    }
    ctx->store->ops->delete_session(ctx->store, hash, on_deleted, req);
}
