/*
 * GET /v1/session: verifies a session token for other services (an nginx auth_request target:
 * the identity is also in X-WX-* response headers). POST /v1/logout: ends a live session, every
 * token of its chain, or with {"all": true} every session of its user (a look-up, then the
 * revocation: logout is not the hot path, and an expired session not yet purged must answer 401
 * as an unknown token does).
 *
 * The hot path: a cached session is answered before store_get_session() returns, with no
 * allocation of ours (the request itself is the callback's argument; the reply is written
 * into a stack buffer). With several apps, a request that names none is looked up by its
 * token alone, still one store call; only then is a little request memory taken.
 */
#include <string.h>
#include <time.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>

#include "handlers/handlers.h"
#include "handlers/request_body.h"
#include "log/log.h"
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
    http_request_set_user(req, s->appid, s->openid);
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

/* A request that named no app (several are served). */
struct any_app {
    struct http_request *req;
    struct handlers_ctx *ctx;
};

static void on_session_any_app(void *arg, int status, const struct store_session *s)
{
    struct any_app *a = arg;
    /* A session of an app no longer configured is no session of ours. */
    if (status == STORE_OK && handlers_app_by_id(a->ctx, s->appid) == NULL)
        status = STORE_NOT_FOUND;
    on_session(a->req, status, s);
}

void handle_session(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app;
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(req, ctx, &app, hash))
        return;
    if (app != NULL) { /* the hot path: one app, or the request names it */
        store_get_session(ctx->store, http_request_slot(req), app->cred.appid, hash,
                          (int64_t)time(NULL), on_session, req);
        return;
    }
    struct any_app *a = http_request_alloc(req, sizeof(*a));
    if (a == NULL) {
        handlers_reply_internal(req, "out of memory");
        return;
    }
    a->req = req;
    a->ctx = ctx;
    store_get_session(ctx->store, http_request_slot(req), NULL, hash, (int64_t)time(NULL),
                      on_session_any_app, a);
}

void handle_session_limited(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    handlers_limit_client(req, ctx, ctx->limits->session, handle_session);
}

struct logout {
    struct http_request *req;
    struct handlers_ctx *ctx;
    const struct handlers_app *app;
    bool all; /* {"all": true}: every session of the user */
    uint8_t hash[CRYPTO_HASH_LEN];
    char openid[STORE_ID_MAX + 1];
};

static void on_revoked(void *arg, int status, const struct store_revoked *r)
{
    struct logout *lo = arg;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(lo->req, "revoke");
        return;
    }
    if (status != STORE_OK && !lo->all) { /* logged out meanwhile */
        handlers_reply_invalid_token(lo->req, "unknown, expired or logged-out token");
        return;
    }
    struct log_field f[] = {LOG_STR("app", lo->app->cred.appid), LOG_STR("openid", lo->openid),
                            LOG_INT("sessions", r != NULL ? r->count : 0),
                            LOG_STR("request_id", http_request_id(lo->req))};
    log_audit(lo->all ? "user_logout_all" : "logout", http_request_client(lo->req), f, 4);
    http_reply(lo->req, 204, NULL, NULL, 0);
}

/* Only a live session is logged out: an expired one not yet purged is as dead as an unknown
 * token (401), whatever rows the store still holds. */
static void on_live(void *arg, int status, const struct store_session *s)
{
    struct logout *lo = arg;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(lo->req, "get_session");
        return;
    }
    if (status == STORE_OK && lo->app == NULL) /* named by the token */
        lo->app = handlers_app_by_id(lo->ctx, s->appid);
    if (status != STORE_OK || lo->app == NULL) {
        handlers_reply_invalid_token(lo->req, "unknown, expired or logged-out token");
        return;
    }
    http_request_set_user(lo->req, s->appid, s->openid);
    snprintf(lo->openid, sizeof(lo->openid), "%s", s->openid);
    struct store_revoke rv = {.what = lo->all ? STORE_REVOKE_USER : STORE_REVOKE_TOKEN,
                              .appid = lo->app->cred.appid,
                              .openid = lo->openid,
                              .hash = lo->hash,
                              .now = (int64_t)time(NULL)};
    store_revoke(lo->ctx->store, http_request_slot(lo->req), &rv, on_revoked, lo);
}

void handle_logout(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    struct logout *lo = http_request_alloc(req, sizeof(*lo));
    if (lo == NULL) {
        handlers_reply_internal(req, "out of memory");
        return;
    }
    lo->req = req;
    lo->ctx = ctx;
    if (!handlers_authenticate(req, ctx, &lo->app, lo->hash))
        return;
    /* None, or an object whose one known member is "all" (a boolean). */
    size_t len;
    const char *body = http_request_body(req, &len);
    const char *why;
    int rc = request_body_logout(body, len, &lo->all, &why);
    if (handlers_reply_bad_body(req, rc, why))
        return;
    store_get_session(ctx->store, http_request_slot(req),
                      lo->app != NULL ? lo->app->cred.appid : NULL, lo->hash, (int64_t)time(NULL),
                      on_live, lo);
}
