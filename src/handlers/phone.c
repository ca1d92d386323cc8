/*
 * POST /v1/phone: the user's phone number from a getPhoneNumber button code, through
 * /wxa/business/getuserphonenumber with the central access token.
 */
#include <errno.h>
#include <string.h>

#include "crypto/crypto.h"
#include "handlers/login_request.h"
#include "handlers/user_op.h"
#include "log/log.h"
#include "util/jsonw.h"

static void on_phone(void *arg, const struct wechat_reply *r, const struct wechat_phone *p)
{
    struct user_op *op = arg;
    if (user_op_rejected(op, WECHAT_API_PHONE, r))
        return;
    if (p == NULL) {
        handlers_reply_wechat(op->req, WECHAT_API_PHONE, r);
        return;
    }
    if (strcmp(p->watermark_appid, op->app->cred.appid) != 0) {
        log_kv(LOG_WARN, "phone number watermark names another app", "request_id",
               http_request_id(op->req), NULL);
        http_reply_error(op->req, 502, "upstream_error",
                         "WeChat's answer carries another app's watermark", "none");
        return;
    }
    /* Three fields of at most 63 bytes of text (wechat/api.c refuses control characters, so a
     * byte escapes to 2 at worst): always fits, never the 500 of a reply that did not. */
    char buf[1024];
    struct jsonw w;
    jsonw_begin(&w, buf, sizeof(buf));
    jsonw_str(&w, "phoneNumber", p->phone_number);
    jsonw_str(&w, "purePhoneNumber", p->pure_phone_number);
    jsonw_str(&w, "countryCode", p->country_code);
    http_reply_jsonw(op->req, 200, &w);
    crypto_wipe(buf, sizeof(buf)); /* a phone number */
}

static int phone_call(struct user_op *op, const char *access_token)
{
    return wechat_get_phone(op->ctx->wx, http_request_slot(op->req), access_token, op->in[0],
                            on_phone, op);
}

static void phone_ready(struct user_op *op)
{
    user_op_with_token(op, phone_call);
}

static void start_phone(struct http_request *req, void *arg)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    char code[LOGIN_CODE_MAX + 1];
    const char *why;
    /* Phone codes have the shape of login codes. */
    int prc = login_request_parse(body, len, code, &why);
    if (handlers_reply_bad_body(req, prc, why))
        return;
    struct user_op *op = user_op_new(req, arg);
    char *copy = op != NULL ? http_request_alloc(req, strlen(code) + 1) : NULL;
    if (op != NULL && copy == NULL)
        handlers_reply_internal(req, "out of memory");
    if (copy == NULL)
        return;
    memcpy(copy, code, strlen(code) + 1);
    op->in[0] = copy;
    user_op_load(op, phone_ready);
}

void handle_phone(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    handlers_limit_client(req, ctx, ctx->limits->address, start_phone);
}
