/*
 * wechat/api: the WeChat APIs wxlogin calls, with typed results.
 *
 * Each function builds its request (URL, query, JSON body), checks that a successful answer has
 * what the API promises in the shape wxlogin relies on (ids in WeChat's alphabet, a 16-byte
 * session_key, a token of sane length), and hands its caller a plain struct: nobody outside
 * wechat/ touches WeChat's JSON. A failed call comes back as the reply's status/errcode, which
 * wechat/errcode.h maps. Operations take the caller's pending slot (runtime/async.h); results
 * are valid during the callback only, and secrets in them are wiped after it.
 */
#ifndef WXLOGIN_WECHAT_API_H
#define WXLOGIN_WECHAT_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wechat/client.h"

#define WECHAT_ID_MAX 128         /* appid, openid, unionid */
#define WECHAT_SESSION_KEY_LEN 24 /* base64 of 16 bytes */
#define WECHAT_TOKEN_MAX 512      /* WeChat: reserve at least 512 characters for a token */
#define WECHAT_CODE_MAX 512       /* a wx.login or phone code */

/* An app's credentials (borrowed from the configuration). */
struct wechat_app {
    const char *appid;
    const char *secret;
};

/* auth.code2Session */
struct wechat_session {
    char openid[WECHAT_ID_MAX + 1];
    char unionid[WECHAT_ID_MAX + 1]; /* "" when WeChat sent none */
    char session_key[WECHAT_SESSION_KEY_LEN + 1];
};
/* s is non-NULL exactly when reply->status is WECHAT_OK. */
typedef void wechat_session_fn(void *arg, const struct wechat_reply *reply,
                               const struct wechat_session *s);
int wechat_code2session(struct wechat_client *c, struct async_slot *slot,
                        const struct wechat_app *app, const char *code, wechat_session_fn *done,
                        void *arg);

/* getuserphonenumber */
/* Every field is text (no control characters) that fitted whole. */
struct wechat_phone {
    char phone_number[64];
    char pure_phone_number[64];
    char country_code[16]; /* always text (WeChat has sent it as a number too); "" if none */
    char watermark_appid[WECHAT_ID_MAX + 1];
};
typedef void wechat_phone_fn(void *arg, const struct wechat_reply *reply,
                             const struct wechat_phone *p);
int wechat_get_phone(struct wechat_client *c, struct async_slot *slot, const char *access_token,
                     const char *code, wechat_phone_fn *done, void *arg);

/* checksession: is session_key the user's current one? valid is meaningful when reply->status
 * is WECHAT_OK (87009 is an answer, "no", not a failure). */
typedef void wechat_check_fn(void *arg, const struct wechat_reply *reply, bool valid);
int wechat_check_session(struct wechat_client *c, struct async_slot *slot, const char *access_token,
                         const char *openid, const char *session_key, wechat_check_fn *done,
                         void *arg);

/* The access token: /cgi-bin/stable_token (force_refresh as given) or the classic
 * /cgi-bin/token. */
enum wechat_token_api { WECHAT_TOKEN_STABLE, WECHAT_TOKEN_CLASSIC };
struct wechat_token_grant {
    char token[WECHAT_TOKEN_MAX + 1];
    long expires_in; /* seconds */
};
typedef void wechat_grant_fn(void *arg, const struct wechat_reply *reply,
                             const struct wechat_token_grant *g);
int wechat_fetch_token(struct wechat_client *c, struct async_slot *slot,
                       const struct wechat_app *app, enum wechat_token_api api, bool force,
                       wechat_grant_fn *done, void *arg);

/* ---- shapes and typed results, exported for the tests ---- */

/*
 * The typed result of a successful answer's body. Every string WeChat returns is taken whole
 * or not at all: one that is missing where required, is not a string, is not text (valid
 * UTF-8 without control characters) or does not fit its field is a malformed answer (false,
 * with *why naming the field, never its value; out is wiped), which callers see as
 * WECHAT_BAD_BODY. Never cut, so never cut inside a character. On success out is filled.
 *   session: openid and session_key required; unionid absent, null or "" is none.
 *   phone: phoneNumber and purePhoneNumber required; countryCode a string or a non-negative
 *     integer (written as text), absent or null is ""; watermark.appid absent is "".
 *   token: access_token of 1 to WECHAT_TOKEN_MAX printable ASCII characters; expires_in
 *     from 1 to 86400.
 */
bool wechat_session_parse(const json_t *body, struct wechat_session *out, const char **why);
bool wechat_phone_parse(const json_t *body, struct wechat_phone *out, const char **why);
bool wechat_token_parse(const json_t *body, struct wechat_token_grant *out, const char **why);

/* An access token of WeChat's shape: 1 to WECHAT_TOKEN_MAX printable ASCII characters, no
 * space (wechat_token_parse's rule, for tokens that come from elsewhere: the shared store). */
bool wechat_token_valid(const char *token, size_t len);
/* A session_key of WeChat's shape: strict base64 of exactly 16 bytes (24 characters). */
bool wechat_session_key_valid(const char *sk, size_t len);
/* [A-Za-z0-9_-]: the characters of login and phone codes and of ids. */
static inline bool wechat_plain_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}
/* An openid/unionid we accept: 1 to 128 of [A-Za-z0-9_-] (they end up in response headers). */
bool wechat_id_valid(const char *id, size_t len);

#endif
