/*
 * POST /v1/refresh: a new token for the caller's session (Bearer), the old one kept for
 * refresh_grace seconds so requests already in flight with it still pass.
 *
 * The new token is derived from the old (login_next_token()), so any number of concurrent
 * refreshes of one token, on any instance, compute the same successor, and the store's one
 * atomic step (store_refresh()) makes it the chain's next token once: one chain, never two. A
 * chain ends session_max_age after the wx.login that began it: past that, or for a token already
 * past its grace, 401 invalid_token (relogin). Rate-limited per client address like the logins.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "handlers/handlers.h"
#include "log/log.h"
#include "login/login.h"
#include "store/store.h"
#include "util/jsonw.h"

struct refresh {
    struct http_request *req;
    struct handlers_ctx *ctx;
    char token[CRYPTO_TOKEN_LEN + 1]; /* the new one */
};

static void on_refreshed(void *arg, int status, const struct store_session *s)
{
    struct refresh *r = arg;
    struct http_request *req = r->req;
    /* A session of an app no longer configured is no session of ours. */
    if (status == STORE_OK && handlers_app_by_id(r->ctx, s->appid) == NULL)
        status = STORE_NOT_FOUND;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(req, "refresh");
    } else if (status != STORE_OK) {
        handlers_reply_invalid_token(req, "unknown, expired, logged-out or too old a session: "
                                          "log in again");
    } else {
        int64_t left = s->expires_at - (int64_t)time(NULL);
        char buf[1024];
        struct jsonw w;
        jsonw_begin(&w, buf, sizeof(buf));
        jsonw_str(&w, "token", r->token);
        jsonw_str(&w, "openid", s->openid);
        if (s->unionid[0] != '\0')
            jsonw_str(&w, "unionid", s->unionid);
        jsonw_num(&w, "expires_in", left > 0 ? left : 0);
        http_request_set_user(req, s->appid, s->openid);
        struct log_field f[] = {LOG_STR("app", s->appid), LOG_STR("openid", s->openid),
                                LOG_STR("request_id", http_request_id(req))};
        log_audit("refresh", http_request_client(req), f, 3);
        http_reply_jsonw(req, 200, &w);
        crypto_wipe(buf, sizeof(buf));
    }
    crypto_wipe(r->token, sizeof(r->token));
}

static void start_refresh(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app;
    uint8_t old_hash[CRYPTO_HASH_LEN], new_hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(req, ctx, &app, old_hash))
        return;
    bool answered;
    json_decref(handlers_body_object(req, true, &answered)); /* nothing in it is read */
    if (answered)
        return;
    struct refresh *r = http_request_alloc(req, sizeof(*r));
    const char *why, *old = handlers_bearer_token(req, &why);
    if (r == NULL || old == NULL ||
        login_next_token(ctx->token_key, old, r->token, new_hash) != 0) {
        handlers_reply_internal(req, "cannot refresh the session");
        return;
    }
    r->req = req;
    r->ctx = ctx;
    struct store_refresh in = {.appid = app != NULL ? app->cred.appid : NULL,
                               .old_hash = old_hash,
                               .new_hash = new_hash,
                               .now = (int64_t)time(NULL),
                               .grace_s = ctx->cfg->refresh_grace,
                               .ttl_s = ctx->cfg->session_ttl,
                               .max_age_s = ctx->cfg->session_max_age};
    store_refresh(ctx->store, http_request_slot(req), &in, on_refreshed, r);
}

void handle_refresh(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    handlers_limit_client(req, ctx, ctx->limits->address, start_refresh);
}
