/*
 * handlers/login_request: validation of the {"code": "..."} body shared by the login and
 * phone endpoints. Pure code, no I/O.
 */
#ifndef WXLOGIN_HANDLERS_LOGIN_REQUEST_H
#define WXLOGIN_HANDLERS_LOGIN_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#define LOGIN_CODE_MAX 512

/*
 * Parses body (len bytes, any Content-Type) as {"code": "<wx.login code>"}. On success copies the
 * code (NUL-terminated) into code_out and returns 0. On failure returns -1 and points *why at a
 * static message for the client (never echoing the input), or -ENOMEM when the body could not
 * be read for want of memory (not the client's fault: 503, not 400).
 */
int login_request_parse(const char *body, size_t len, char code_out[LOGIN_CODE_MAX + 1],
                        const char **why);

#endif
