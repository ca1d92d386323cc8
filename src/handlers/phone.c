/*
 * POST /v1/phone: the user's phone number from a getPhoneNumber button code, through
 * /wxa/business/getuserphonenumber with the central access token.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "handlers/login_request.h"
#include "handlers/upstream_error.h"
#include "handlers/user_op.h"
#include "log/log.h"

static bool accept_phone(const json_t *body)
{
    const json_t *pi = json_object_get(body, "phone_info");
    return json_is_object(pi) && json_is_string(json_object_get(pi, "phoneNumber")) &&
           json_is_string(json_object_get(pi, "purePhoneNumber"));
}

static struct wechat_call *phone_start(struct user_op *op, const char *access_token)
{
    const char *kv[] = {"access_token", access_token, NULL};
    char *pq = wechat_path_query("/wxa/business/getuserphonenumber", kv);
    json_t *b = json_pack("{s:O}", "code", json_object_get(op->in, "code"));
    char *body = b != NULL ? json_dumps(b, JSON_COMPACT) : NULL;
    json_decref(b);
    if (pq == NULL || body == NULL) {
        if (pq != NULL) /* it holds the access token */
            crypto_wipe(pq, strlen(pq));
        free(pq);
        free(body);
        return NULL;
    }
    return wechat_post_json(op->ctx->wx, pq, body, accept_phone, user_op_on_call_done, op);
}

static void phone_result(struct user_op *op, const struct wechat_result *res)
{
    if (res->status == WECHAT_ERRCODE && res->errcode == 40029) {
        /* Not a login code: the user must tap the phone-number button again. */
        json_t *b = json_pack("{s:s, s:s, s:s, s:i}", "error", "invalid_code", "message",
                              "the phone code is invalid, expired or already used", "action",
                              "none", "wx_errcode", 40029);
        http_reply_json(op->req, 400, b);
        user_op_free(op);
        return;
    }
    if (res->status != WECHAT_OK) {
        upstream_error_reply(op->req, res, "getuserphonenumber");
        user_op_free(op);
        return;
    }
    const json_t *pi = json_object_get(res->body, "phone_info");
    const char *wm = json_string_value(json_object_get(json_object_get(pi, "watermark"), "appid"));
    if (wm == NULL || strcmp(wm, op->app->appid) != 0) {
        log_kv(LOG_WARN, "phone number watermark names another app", "request_id",
               http_request_id(op->req), NULL);
        http_reply_error(op->req, 502, "upstream_error",
                         "WeChat's answer carries another app's watermark", "none");
        user_op_free(op);
        return;
    }
    /* countryCode is documented as a string but the official example sends a number. */
    const json_t *cc = json_object_get(pi, "countryCode");
    char ccbuf[32] = "";
    if (json_is_string(cc))
        snprintf(ccbuf, sizeof(ccbuf), "%s", json_string_value(cc));
    else if (json_is_integer(cc))
        snprintf(ccbuf, sizeof(ccbuf), "%lld", (long long)json_integer_value(cc));
    http_reply_json(op->req, 200,
                    json_pack("{s:O, s:O, s:s}", "phoneNumber", json_object_get(pi, "phoneNumber"),
                              "purePhoneNumber", json_object_get(pi, "purePhoneNumber"),
                              "countryCode", ccbuf));
    user_op_free(op);
}

static void phone_ready(struct user_op *op)
{
    op->start = phone_start;
    op->result = phone_result;
    user_op_call_token(op);
}

void handle_phone(struct http_request *req, void *arg)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    char code[LOGIN_CODE_MAX + 1];
    const char *why;
    /* Phone codes have the shape of login codes. */
    if (login_request_parse(body, len, code, &why) != 0) {
        http_reply_error(req, 400, "bad_request", why, "none");
        return;
    }
    struct user_op *op = user_op_new(req, arg, json_pack("{s:s}", "code", code));
    if (op != NULL)
        user_op_load(op, phone_ready);
}
