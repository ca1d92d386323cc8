/*
 * handlers/upstream_error: what a failed WeChat call means to our client.
 *
 * One table maps WeChat's errcodes and transport failures to an HTTP status, an error slug and
 * an action hint (relogin: get a new code from wx.login and retry; retry: same request later;
 * none). docs/api.md documents the same table.
 */
#ifndef WXLOGIN_HANDLERS_UPSTREAM_ERROR_H
#define WXLOGIN_HANDLERS_UPSTREAM_ERROR_H

#include <stdbool.h>

#include "wechat/client.h"

struct http_request;

struct upstream_error {
    unsigned status;
    const char *slug;
    const char *action;
    const char *message;
    bool has_errcode;     /* include wx_errcode in the body */
    unsigned retry_after; /* seconds, 0 = no Retry-After header */
    bool config;          /* our own credentials or IP are at fault: log loudly */
};

/* Maps a failed result (status != WECHAT_OK). Pure. */
void upstream_error_map(const struct wechat_result *res, struct upstream_error *out);

/* Logs the failure (never the code or the secret) and answers the client. */
void upstream_error_reply(struct http_request *req, const struct wechat_result *res,
                          const char *api);

#endif
