/*
 * handlers/login_request: validation of the {"code": "..."} body shared by the login endpoints.
 * Pure code, no I/O.
 */
#ifndef WXLOGIN_HANDLERS_LOGIN_REQUEST_H
#define WXLOGIN_HANDLERS_LOGIN_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#define LOGIN_CODE_MAX 512

/*
 * Parses body (len bytes, any Content-Type) as {"code": "<wx.login code>"}. On success copies the
 * code (NUL-terminated) into code_out and returns 0. On failure returns -1 and points *why at a
 * static message for the client (never echoing the input).
 */
int login_request_parse(const char *body, size_t len, char code_out[LOGIN_CODE_MAX + 1],
                        const char **why);

/* True for a session_key of WeChat's shape: strict base64 of exactly 16 bytes (24 characters). */
bool login_session_key_valid(const char *sk, size_t len);

/* True for an openid/unionid we accept from WeChat: 1 to 128 of [A-Za-z0-9_-] (they end up in
 * response headers). */
bool login_id_valid(const char *id, size_t len);

#endif
