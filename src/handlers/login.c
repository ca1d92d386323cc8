/*
 * POST /openid and POST /v1/login: exchange a wx.login code (login/login.h does it all).
 *
 * Both record the user and their newest session_key; /v1/login also issues our own session
 * token. The answers are small and hot, so they are written without a JSON library.
 *
 * Rate limits: the client address's first (rate_limit_address), before the body is looked at;
 * the app's ceiling on WeChat calls and the user's limit inside the login (login/login.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "handlers/handlers.h"
#include "handlers/login_request.h"
#include "log/log.h"
#include "login/login.h"
#include "util/jsonw.h"

struct login_req {
    struct http_request *req;
    const struct handlers_app *app;
};

/* The audit line of a login: who, for which app, and whether a session was made or reused. */
static void audit_login(struct http_request *req, const struct handlers_app *app,
                        const struct login_result *r)
{
    http_request_set_user(req, NULL, r->openid);
    if (!log_enabled(LOG_INFO))
        return;
    const char *session = r->token == NULL ? "none" : r->repeat ? "reused" : "new";
    const struct log_field f[] = {
        LOG_STR("app", app->cred.appid),
        LOG_STR("openid", r->openid),
        LOG_STR("session", session),
        LOG_BOOL("repeat", r->repeat),
        LOG_STR("route", http_request_path(req)),
        LOG_STR("request_id", http_request_id(req)),
    };
    log_audit("login", http_request_client(req), f, sizeof(f) / sizeof(f[0]));
}

static void on_login(void *arg, const struct login_result *r)
{
    struct login_req *lr = arg;
    struct http_request *req = lr->req;
    switch (r->status) {
    case LOGIN_OK: {
        audit_login(req, lr->app, r);
        char buf[1024];
        struct jsonw w;
        jsonw_begin(&w, buf, sizeof(buf));
        if (r->token != NULL)
            jsonw_str(&w, "token", r->token);
        jsonw_str(&w, "openid", r->openid);
        if (r->unionid[0] != '\0')
            jsonw_str(&w, "unionid", r->unionid);
        if (r->token != NULL)
            jsonw_num(&w, "expires_in", r->expires_at - (int64_t)time(NULL));
        http_reply_jsonw(req, 200, &w);
        crypto_wipe(buf, sizeof(buf)); /* it held the token */
        return;
    }
    case LOGIN_WECHAT: handlers_reply_wechat(req, WECHAT_API_CODE2SESSION, r->reply); return;
    case LOGIN_STORE: handlers_reply_store_error(req, "login"); return;
    case LOGIN_BUSY:
        http_reply_error(req, 503, "upstream_busy",
                         "another instance is still exchanging this code, retry", "retry");
        return;
    case LOGIN_ABORTED:
        /* The request that exchanged this code was cut short (its deadline, a shutdown). */
        http_reply_error(req, 503, "aborted",
                         "the exchange of this code was abandoned; retry (with a new code if "
                         "it then fails)",
                         "retry");
        return;
    case LOGIN_CODE_USED: {
        /* A repeat of a code whose session was logged out or expired, whose reuse window has
         * passed, or whose first exchange made no session (POST /openid): answered as WeChat's
         * 40163 is, for the client has one thing to do either way, wx.login again. */
        struct wechat_http_error e;
        wechat_error_map(WECHAT_API_CODE2SESSION, WECHAT_ERRCODE, WECHAT_CODE_USED, &e);
        log_kv(LOG_INFO, "repeated login code refused: no live session of it to answer", "error",
               e.error, "request_id", http_request_id(req), NULL);
        handlers_reply_mapped(req, &e);
        return;
    }
    case LOGIN_LIMITED:
        handlers_reply_limited(req, r->limited_user ? HANDLERS_LIMIT_OPENID : HANDLERS_LIMIT_WECHAT,
                               r->wait_us);
        return;
    case LOGIN_BANNED: handlers_reply_banned(req); return;
    case LOGIN_INTERNAL: handlers_reply_internal(req, "cannot complete the login"); return;
    }
}

static void start(struct http_request *req, struct handlers_ctx *ctx, bool want_session)
{
    const struct handlers_app *app = handlers_app(req, ctx);
    if (app == NULL)
        return;
    char code[LOGIN_CODE_MAX + 1];
    const char *why;
    size_t len;
    const char *body = http_request_body(req, &len);
    int prc = login_request_parse(body, len, code, &why);
    if (handlers_reply_bad_body(req, prc, why))
        return;
    struct login_req *lr = http_request_alloc(req, sizeof(*lr));
    if (lr == NULL) {
        handlers_reply_internal(req, "out of memory");
        return;
    }
    lr->req = req;
    lr->app = app;
    struct login_origin origin = {.client = http_request_client(req),
                                  .user_agent = http_request_header(req, "User-Agent")};
    if (login_code(ctx->login, http_request_slot(req), &app->cred, code, want_session, &origin,
                   on_login, lr) != 0)
        handlers_reply_internal(req, "cannot start the login");
    crypto_wipe(code, sizeof(code));
}

static void start_openid(struct http_request *req, void *arg)
{
    start(req, arg, false);
}

static void start_login(struct http_request *req, void *arg)
{
    start(req, arg, true);
}

void handle_openid(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    handlers_limit_client(req, ctx, ctx->limits->address, start_openid);
}

void handle_login(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    handlers_limit_client(req, ctx, ctx->limits->address, start_login);
}
