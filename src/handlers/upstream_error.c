#include "handlers/upstream_error.h"

#include <stdio.h>

#include "http/server.h"
#include "log/log.h"

struct errcode_row {
    long errcode;
    unsigned status;
    const char *slug;
    const char *action;
    const char *message;
    unsigned retry_after;
    bool config;
};

/* WeChat errcodes with a meaning of their own (see ../shared/wechat-api.md §1 and §3c). */
static const struct errcode_row rows[] = {
    {-1, 503, "upstream_busy", "retry", "WeChat is busy, retry later", 0, false},
    {40029, 400, "invalid_code", "relogin", "the login code is invalid or expired", 0, false},
    {40163, 400, "code_used", "relogin", "the login code was already used", 0, false},
    {40226, 403, "user_blocked", "none", "WeChat blocked this login (high-risk user)", 0, false},
    /* WeChat's quota is per minute: "retry next minute". */
    {45011, 429, "rate_limited", "retry", "WeChat rate limit reached, retry in a minute", 60,
     false},
    {40013, 500, "config_error", "none", "the service's WeChat app id is invalid", 0, true},
    {40125, 500, "config_error", "none", "the service's WeChat app secret is invalid", 0, true},
    {40243, 500, "config_error", "none", "the service's WeChat app secret is frozen", 0, true},
    {40164, 500, "config_error", "none", "the service's IP is not whitelisted at WeChat", 0, true},
    {41002, 500, "config_error", "none", "the service sent no app id to WeChat", 0, true},
    {41004, 500, "config_error", "none", "the service sent no app secret to WeChat", 0, true},
};

void upstream_error_map(const struct wechat_result *res, struct upstream_error *out)
{
    *out = (struct upstream_error){.status = 502, .slug = "upstream_error", .action = "relogin"};
    switch (res->status) {
    case WECHAT_ERRCODE:
        out->has_errcode = true;
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            if (rows[i].errcode == res->errcode) {
                out->status = rows[i].status;
                out->slug = rows[i].slug;
                out->action = rows[i].action;
                out->message = rows[i].message;
                out->retry_after = rows[i].retry_after;
                out->config = rows[i].config;
                return;
            }
        }
        out->message = "WeChat returned an error";
        return;
    case WECHAT_TIMEOUT:
        /* The code may be spent at WeChat already: only a new one is safe. */
        out->status = 504;
        out->slug = "upstream_timeout";
        out->message = "WeChat did not answer in time";
        return;
    case WECHAT_HTTP_ERROR: out->message = "WeChat answered with an HTTP error"; return;
    case WECHAT_BAD_BODY:
        out->message = "WeChat answered with something that is not its API's JSON";
        return;
    case WECHAT_CONNECT: out->message = "WeChat could not be reached"; return;
    case WECHAT_OK: break;
    }
    out->status = 500;
    out->slug = "internal";
    out->action = "retry";
    out->message = "unexpected upstream state";
}

void upstream_error_reply(struct http_request *req, const struct wechat_result *res,
                          const char *api)
{
    struct upstream_error e;
    upstream_error_map(res, &e);

    char errcode[24] = "", http_status[16] = "", attempts[16], status[8];
    if (e.has_errcode)
        snprintf(errcode, sizeof(errcode), "%ld", res->errcode);
    if (res->http_status != 0)
        snprintf(http_status, sizeof(http_status), "%ld", res->http_status);
    snprintf(attempts, sizeof(attempts), "%d", res->attempts);
    snprintf(status, sizeof(status), "%u", e.status);
    log_kv(e.config ? LOG_ERROR : LOG_WARN,
           e.config ? "WeChat rejected the service's configuration: check appid, secret and the "
                      "API IP whitelist"
                    : "WeChat call failed",
           "api", api, "error", e.slug, "status", status, "wx_errcode",
           e.has_errcode ? errcode : NULL, "wx_rid", res->rid[0] ? res->rid : NULL,
           "upstream_http_status", res->http_status ? http_status : NULL, "attempts", attempts,
           "detail", res->detail, "request_id", http_request_id(req), NULL);

    json_t *body =
        json_pack("{s:s, s:s, s:s}", "error", e.slug, "message", e.message, "action", e.action);
    if (body != NULL && e.has_errcode)
        json_object_set_new(body, "wx_errcode", json_integer(res->errcode));
    if (e.retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", e.retry_after);
        http_add_header(req, "Retry-After", ra);
    }
    http_reply_json(req, e.status, body);
}
