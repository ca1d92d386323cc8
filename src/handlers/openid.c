/*
 * POST /openid: the classic endpoint. Exchanges a wx.login code for the user's openid (and
 * unionid when WeChat gives one). session_key never leaves the server.
 */
#include <stdlib.h>

#include "handlers/handlers.h"
#include "handlers/login_request.h"
#include "handlers/upstream_error.h"
#include "config/config.h"
#include "http/server.h"
#include "wechat/client.h"

struct openid_op {
    struct http_request *req;
    struct wechat_call *call;
};

static void openid_cancel(void *arg)
{
    struct openid_op *op = arg;
    wechat_call_cancel(op->call);
    free(op);
}

static void openid_done(const struct wechat_result *res, void *arg)
{
    struct openid_op *op = arg;
    struct http_request *req = op->req;
    free(op);
    if (res->status != WECHAT_OK) {
        upstream_error_reply(req, res, "code2session");
        return;
    }
    json_t *out = json_object();
    json_object_set(out, "openid", json_object_get(res->body, "openid"));
    json_t *unionid = json_object_get(res->body, "unionid");
    if (json_is_string(unionid) && json_string_length(unionid) > 0)
        json_object_set(out, "unionid", unionid);
    http_reply_json(req, 200, out);
}

void handle_openid(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    char code[LOGIN_CODE_MAX + 1];
    const char *why;
    size_t len;
    const char *body = http_request_body(req, &len);

    if (login_request_parse(body, len, code, &why) != 0) {
        http_reply_error(req, 400, "bad_request", why, "none");
        return;
    }
    struct openid_op *op = malloc(sizeof(*op));
    if (op == NULL) {
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return;
    }
    op->req = req;
    op->call =
        wechat_code2session(ctx->wx, ctx->cfg->appid, ctx->cfg->secret, code, openid_done, op);
    if (op->call == NULL) {
        free(op);
        http_reply_error(req, 503, "internal", "cannot start the WeChat call", "retry");
        return;
    }
    http_request_on_cancel(req, openid_cancel, op);
}
