/*
 * wechat/errcode: everything wxlogin knows about WeChat's errcodes, in one table.
 *
 * Each row says, for an errcode answered by one WeChat API (or by any): what our client gets
 * (HTTP status, error slug, action hint, message, Retry-After), and how wxlogin itself treats it
 * (retried by the client, final for a login code, a rejected access token, our own
 * configuration at fault). The WeChat client, the code exchange, the access token and the
 * handlers all read this table; docs/api.md shows it and a unit test checks the two agree.
 * Failures that are not errcodes (timeouts, HTTP errors, bodies that are not WeChat's JSON) are
 * mapped by wechat_error_map() too, so the client's contract lives here whole. Pure code.
 */
#ifndef WXLOGIN_WECHAT_ERRCODE_H
#define WXLOGIN_WECHAT_ERRCODE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/* The WeChat APIs wxlogin calls. */
enum wechat_api {
    WECHAT_API_ANY, /* a row for every API (after the API's own rows) */
    WECHAT_API_CODE2SESSION,
    WECHAT_API_TOKEN, /* /cgi-bin/stable_token and /cgi-bin/token */
    WECHAT_API_PHONE,
    WECHAT_API_CHECKSESSION,
};

/* How a call to WeChat ended. */
enum wechat_status {
    WECHAT_OK,         /* HTTP 200, JSON object, errcode absent or 0 */
    WECHAT_ERRCODE,    /* HTTP 200, JSON object with a non-zero errcode */
    WECHAT_HTTP_ERROR, /* HTTP status other than 200 */
    WECHAT_BAD_BODY,   /* not JSON, not an object, too large, or missing what the API promises */
    WECHAT_CONNECT,    /* could not connect, reset, connection died, DNS or TLS failure */
    WECHAT_TIMEOUT,    /* no complete answer within the attempt's deadline */
    WECHAT_INTERNAL,   /* our side failed, not WeChat: out of memory reading or parsing the answer,
                          a socket we could not watch, a transfer that could not start; never
                          retried (the request may have reached WeChat and spent a code) */
};
#define WECHAT_STATUS_LAST WECHAT_INTERNAL

/* Row flags. */
#define WECHAT_EC_RETRYABLE 1u      /* the client tries again (with backoff) */
#define WECHAT_EC_FINAL 2u          /* final for a login code: remembered for its repeats */
#define WECHAT_EC_TOKEN_REJECTED 4u /* the access token is bad: drop it, fetch, retry once */
#define WECHAT_EC_CONFIG 8u         /* our appid, secret or IP is at fault: logged as an error */

/* code2Session's "the code was already used": also how wxlogin answers a repeat of a code whose
 * session is gone (login/login.h). */
#define WECHAT_CODE_USED 40163

/* errcode of the row that applies to every errcode an API has no row for. */
#define WECHAT_EC_OTHER LONG_MIN

struct wechat_errcode {
    long errcode;
    enum wechat_api api;
    unsigned status; /* the HTTP status our client gets */
    const char *error;
    const char *action;
    const char *message;
    unsigned retry_after; /* seconds; 0 = no Retry-After */
    unsigned flags;
};

extern const struct wechat_errcode wechat_errcodes[];
extern const size_t wechat_nerrcodes;

/* The row for errcode answered by api: the API's own row, else the row for any API, else the
 * API's "other" row, else the "other" row for any API. Never NULL. */
const struct wechat_errcode *wechat_errcode_find(enum wechat_api api, long errcode);
/* The row's flags, 0 for an errcode the table does not list for api or any API. */
unsigned wechat_errcode_flags(enum wechat_api api, long errcode);

/* What our client is told about a failed WeChat call. */
struct wechat_http_error {
    unsigned status;
    const char *error, *action, *message;
    unsigned retry_after;
    bool has_errcode; /* the body carries wx_errcode */
    long errcode;
    bool config;
};

/* Maps a failed call (status != WECHAT_OK) of api to what our client is told. */
void wechat_error_map(enum wechat_api api, enum wechat_status status, long errcode,
                      struct wechat_http_error *out);

/* Names for logs and docs: "code2session", "token"... and "ok", "errcode", "timeout"... */
const char *wechat_api_name(enum wechat_api api);
const char *wechat_status_name(enum wechat_status status);

#endif
