/*
 * wechat/errcode: the table (sources: ../shared/wechat-api.md §0-§4) and the mapping of failed
 * calls. Keep docs/api.md's errcode table in step: test_errcode.c compares them row by row.
 */
#include "wechat/errcode.h"

#define ANY WECHAT_API_ANY
#define C2S WECHAT_API_CODE2SESSION
#define TOK WECHAT_API_TOKEN
#define PHONE WECHAT_API_PHONE
#define CHECK WECHAT_API_CHECKSESSION
#define OTHER WECHAT_EC_OTHER

#define RETRY WECHAT_EC_RETRYABLE
#define FINAL WECHAT_EC_FINAL
#define REJECTED WECHAT_EC_TOKEN_REJECTED
#define CONFIG WECHAT_EC_CONFIG

/* clang-format off: one row per line reads best */
const struct wechat_errcode wechat_errcodes[] = {
    /* any API */
    {-1, ANY, 503, "upstream_busy", "retry", "WeChat is busy, retry later", 0, RETRY},
    /* WeChat's quota is per minute: "retry next minute". */
    {45011, ANY, 429, "rate_limited", "retry", "WeChat rate limit reached, retry in a minute", 60,
     0},
    {40013, ANY, 500, "config_error", "none", "the service's WeChat app id is invalid", 0, CONFIG},
    {40125, ANY, 500, "config_error", "none", "the service's WeChat app secret is invalid", 0,
     CONFIG},
    {40243, ANY, 500, "config_error", "none", "the service's WeChat app secret is frozen", 0,
     CONFIG},
    {40164, ANY, 500, "config_error", "none", "the service's IP is not whitelisted at WeChat", 0,
     CONFIG},
    {41002, ANY, 500, "config_error", "none", "the service sent no app id to WeChat", 0, CONFIG},
    {41004, ANY, 500, "config_error", "none", "the service sent no app secret to WeChat", 0,
     CONFIG},
    {48001, ANY, 500, "config_error", "none", "the service's app may not call this WeChat API", 0,
     CONFIG},
    /* At an API that takes the access token: the token is bad. After one fetch and retry, the
     * client is told to retry later. */
    {40001, ANY, 503, "upstream_busy", "retry", "WeChat rejected the access token, retry later", 0,
     REJECTED},
    {40014, ANY, 503, "upstream_busy", "retry", "WeChat rejected the access token, retry later", 0,
     REJECTED},
    {42001, ANY, 503, "upstream_busy", "retry", "WeChat rejected the access token, retry later", 0,
     REJECTED},
    {OTHER, ANY, 502, "upstream_error", "relogin", "WeChat returned an error", 0, 0},

    /* auth.code2Session: the first three are final for the code (WeChat answers the same to
     * any repeat), so the code exchange remembers them. */
    {40029, C2S, 400, "invalid_code", "relogin", "the login code is invalid or expired", 0, FINAL},
    {40163, C2S, 400, "code_used", "relogin", "the login code was already used", 0, FINAL},
    {40226, C2S, 403, "user_blocked", "none", "WeChat blocked this login (high-risk user)", 0,
     FINAL},

    /* The token endpoints: 40001 there means the secret is wrong, not the token. */
    {40001, TOK, 500, "config_error", "none",
     "WeChat refused the service's app secret for an access token", 0, CONFIG},
    {40002, TOK, 500, "config_error", "none",
     "WeChat refused the access token request's grant type", 0, CONFIG},
    /* The daily quota of /cgi-bin/token, or of force_refresh (20 a day): only tomorrow, or an
     * operator's clear_quota, helps. */
    {45009, TOK, 500, "config_error", "none",
     "WeChat's daily quota of access tokens is spent (clear_quota, or wait for tomorrow)", 0,
     CONFIG},
    {50004, TOK, 500, "config_error", "none", "WeChat forbids this app the access token API", 0,
     CONFIG},
    {50007, TOK, 500, "config_error", "none", "the app's WeChat account is frozen", 0, CONFIG},
    {61024, TOK, 500, "config_error", "none",
     "WeChat wants a third-party platform token for this app", 0, CONFIG},
    {89501, TOK, 500, "config_error", "none",
     "WeChat waits for an administrator to confirm the service's IP", 0, CONFIG},
    {89503, TOK, 500, "config_error", "none",
     "WeChat wants an administrator to confirm the service's IP", 0, CONFIG},
    {89506, TOK, 500, "config_error", "none",
     "an administrator rejected the service's IP (blocked 24 h)", 0, CONFIG},
    {89507, TOK, 500, "config_error", "none",
     "an administrator rejected the service's IP (blocked 1 h)", 0, CONFIG},
    {OTHER, TOK, 503, "upstream_busy", "retry", "WeChat's access token is unavailable right now", 0,
     0},

    /* getuserphonenumber: the phone code, not a login code, is bad: only a new tap helps. */
    {40029, PHONE, 400, "invalid_code", "none",
     "the phone code is invalid, expired or already used", 0, 0},

    /* checksession: not an error but the answer "this session_key is not the user's current
     * one" (the endpoint answers {"valid": false}). */
    {87009, CHECK, 200, "", "", "the session_key is not the user's current one", 0, 0},
};
/* clang-format on */

const size_t wechat_nerrcodes = sizeof(wechat_errcodes) / sizeof(wechat_errcodes[0]);

static const struct wechat_errcode *find_exact(enum wechat_api api, long errcode)
{
    for (size_t i = 0; i < wechat_nerrcodes; i++)
        if (wechat_errcodes[i].api == api && wechat_errcodes[i].errcode == errcode)
            return &wechat_errcodes[i];
    return NULL;
}

const struct wechat_errcode *wechat_errcode_find(enum wechat_api api, long errcode)
{
    const struct wechat_errcode *r = find_exact(api, errcode);
    if (r == NULL)
        r = find_exact(ANY, errcode);
    if (r == NULL)
        r = find_exact(api, OTHER);
    if (r == NULL)
        r = find_exact(ANY, OTHER);
    return r;
}

unsigned wechat_errcode_flags(enum wechat_api api, long errcode)
{
    const struct wechat_errcode *r = find_exact(api, errcode);
    if (r == NULL)
        r = find_exact(ANY, errcode);
    return r != NULL ? r->flags : 0;
}

void wechat_error_map(enum wechat_api api, enum wechat_status status, long errcode,
                      struct wechat_http_error *out)
{
    *out =
        (struct wechat_http_error){.status = 502, .error = "upstream_error", .action = "relogin"};
    if (status == WECHAT_ERRCODE) {
        const struct wechat_errcode *r = wechat_errcode_find(api, errcode);
        out->status = r->status;
        out->error = r->error;
        out->action = r->action;
        out->message = r->message;
        out->retry_after = r->retry_after;
        out->has_errcode = true;
        out->errcode = errcode;
        out->config = (r->flags & CONFIG) != 0;
        return;
    }
    if (status == WECHAT_INTERNAL) {
        /* Nothing WeChat did: the client may retry as after any 503 internal (a single-use code
         * may then be refused as used, and wx.login gives a new one). */
        out->status = 503;
        out->error = "internal";
        out->action = "retry";
        out->message = "the service could not complete the call to WeChat (out of memory)";
        return;
    }
    if (api == TOK && status != WECHAT_OK) {
        /* No token for now, whatever the reason: a later retry may get one. */
        out->status = 503;
        out->error = "upstream_busy";
        out->action = "retry";
        out->message = "WeChat's access token is unavailable right now";
        return;
    }
    switch (status) {
    case WECHAT_TIMEOUT:
        /* The code may be spent at WeChat already: only a new one is safe. */
        out->status = 504;
        out->error = "upstream_timeout";
        out->message = "WeChat did not answer in time";
        return;
    case WECHAT_HTTP_ERROR: out->message = "WeChat answered with an HTTP error"; return;
    case WECHAT_BAD_BODY:
        out->message = "WeChat answered with something that is not its API's JSON";
        return;
    case WECHAT_CONNECT: out->message = "WeChat could not be reached"; return;
    case WECHAT_INTERNAL:
    case WECHAT_OK:
    case WECHAT_ERRCODE: break;
    }
    out->status = 500;
    out->error = "internal";
    out->action = "retry";
    out->message = "unexpected upstream state";
}

const char *wechat_api_name(enum wechat_api api)
{
    switch (api) {
    case ANY: return "any";
    case C2S: return "code2session";
    case TOK: return "token";
    case PHONE: return "getuserphonenumber";
    case CHECK: return "checksession";
    }
    return "?";
}

const char *wechat_status_name(enum wechat_status status)
{
    switch (status) {
    case WECHAT_OK: return "ok";
    case WECHAT_ERRCODE: return "errcode";
    case WECHAT_HTTP_ERROR: return "http_error";
    case WECHAT_BAD_BODY: return "bad_body";
    case WECHAT_CONNECT: return "connect";
    case WECHAT_TIMEOUT: return "timeout";
    case WECHAT_INTERNAL: return "internal";
    }
    return "?";
}
