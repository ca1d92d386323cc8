/*
 * wechat/api: requests and typed results. Sources for every field and quirk:
 * ../shared/wechat-api.md (§1 code2Session, §2 checkSessionKey, §3 tokens, §4 phone).
 */
#include "wechat/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "crypto/crypto.h"
#include "util/jsonw.h"

bool wechat_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > WECHAT_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!wechat_plain_char((unsigned char)id[i]))
            return false;
    return true;
}

bool wechat_session_key_valid(const char *sk, size_t len)
{
    uint8_t raw[18];
    bool ok = len == WECHAT_SESSION_KEY_LEN && crypto_b64_decode(sk, len, raw) == 16;
    crypto_wipe(raw, sizeof(raw));
    return ok;
}

/* Copies a JSON string of at most cap - 1 bytes; false when absent, not a string or too long. */
static bool copy_string(const json_t *v, char *out, size_t cap)
{
    if (!json_is_string(v) || json_string_length(v) >= cap)
        return false;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return true;
}

/* A reply that passed the client's checks but not ours: the caller sees a bad body. */
static struct wechat_reply bad_body(const struct wechat_reply *r, const char *detail)
{
    struct wechat_reply b = *r;
    b.status = WECHAT_BAD_BODY;
    b.body = NULL;
    b.detail = detail;
    return b;
}

/* ---- code2Session ---- */

static bool accept_session(const json_t *body)
{
    return json_is_string(json_object_get(body, "openid")) &&
           json_is_string(json_object_get(body, "session_key"));
}

static void decode_session(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_session_fn *fn = (wechat_session_fn *)done;
    if (r->status != WECHAT_OK) {
        fn(arg, r, NULL);
        return;
    }
    struct wechat_session s;
    memset(&s, 0, sizeof(s));
    const json_t *openid = json_object_get(r->body, "openid");
    const json_t *sk = json_object_get(r->body, "session_key");
    const json_t *unionid = json_object_get(r->body, "unionid");
    /* Ids go into response headers (X-WX-OpenID): only WeChat's alphabet passes. */
    bool ok = copy_string(openid, s.openid, sizeof(s.openid)) &&
              wechat_id_valid(s.openid, strlen(s.openid)) &&
              copy_string(sk, s.session_key, sizeof(s.session_key)) &&
              wechat_session_key_valid(s.session_key, strlen(s.session_key));
    if (ok && unionid != NULL &&
        (!copy_string(unionid, s.unionid, sizeof(s.unionid)) ||
         !wechat_id_valid(s.unionid, strlen(s.unionid))))
        s.unionid[0] = '\0'; /* a unionid we cannot use is as good as none */
    if (!ok) {
        struct wechat_reply b = bad_body(r, "openid or session_key malformed");
        fn(arg, &b, NULL);
    } else {
        fn(arg, r, &s);
    }
    crypto_wipe(&s, sizeof(s));
}

int wechat_code2session(struct wechat_client *c, struct async_slot *slot,
                        const struct wechat_app *app, const char *code, wechat_session_fn *done,
                        void *arg)
{
    struct wechat_url u;
    wechat_url_init(&u, "/sns/jscode2session");
    wechat_url_arg(&u, "appid", app->appid);
    wechat_url_arg(&u, "secret", app->secret);
    wechat_url_arg(&u, "js_code", code);
    wechat_url_arg(&u, "grant_type", "authorization_code");
    int rc = wechat_call(c, slot, WECHAT_API_CODE2SESSION, &u, NULL, 0, accept_session,
                         decode_session, (void (*)(void))done, arg);
    wechat_url_wipe(&u);
    return rc;
}

/* ---- getuserphonenumber ---- */

static bool accept_phone(const json_t *body)
{
    const json_t *pi = json_object_get(body, "phone_info");
    return json_is_object(pi) && json_is_string(json_object_get(pi, "phoneNumber")) &&
           json_is_string(json_object_get(pi, "purePhoneNumber"));
}

static void decode_phone(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_phone_fn *fn = (wechat_phone_fn *)done;
    if (r->status != WECHAT_OK) {
        fn(arg, r, NULL);
        return;
    }
    struct wechat_phone p;
    memset(&p, 0, sizeof(p));
    const json_t *pi = json_object_get(r->body, "phone_info");
    const json_t *cc = json_object_get(pi, "countryCode");
    const json_t *wm = json_object_get(json_object_get(pi, "watermark"), "appid");
    bool ok =
        copy_string(json_object_get(pi, "phoneNumber"), p.phone_number, sizeof(p.phone_number)) &&
        copy_string(json_object_get(pi, "purePhoneNumber"), p.pure_phone_number,
                    sizeof(p.pure_phone_number));
    /* countryCode is documented as a string, but the official example sends a number. */
    if (json_is_integer(cc))
        snprintf(p.country_code, sizeof(p.country_code), "%lld", (long long)json_integer_value(cc));
    else if (!copy_string(cc, p.country_code, sizeof(p.country_code)))
        p.country_code[0] = '\0';
    if (!copy_string(wm, p.watermark_appid, sizeof(p.watermark_appid)))
        p.watermark_appid[0] = '\0';
    if (!ok) {
        struct wechat_reply b = bad_body(r, "phone number too long");
        fn(arg, &b, NULL);
    } else {
        fn(arg, r, &p);
    }
    crypto_wipe(&p, sizeof(p));
}

int wechat_get_phone(struct wechat_client *c, struct async_slot *slot, const char *access_token,
                     const char *code, wechat_phone_fn *done, void *arg)
{
    struct wechat_url u;
    wechat_url_init(&u, "/wxa/business/getuserphonenumber");
    wechat_url_arg(&u, "access_token", access_token);
    /* The code goes in a JSON body (in the query WeChat answers 40029). */
    char body[1024];
    struct jsonw w;
    jsonw_begin(&w, body, sizeof(body));
    jsonw_str(&w, "code", code);
    size_t n = jsonw_end(&w);
    int rc = n > 0 ? wechat_call(c, slot, WECHAT_API_PHONE, &u, body, n, accept_phone, decode_phone,
                                 (void (*)(void))done, arg)
                   : -EINVAL;
    crypto_wipe(body, sizeof(body));
    wechat_url_wipe(&u);
    return rc;
}

/* ---- checksession ---- */

static void decode_check(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_check_fn *fn = (wechat_check_fn *)done;
    /* An errcode the table lists as this API's answer (87009) means "not current". */
    if (r->status == WECHAT_ERRCODE) {
        const struct wechat_errcode *row = wechat_errcode_find(WECHAT_API_CHECKSESSION, r->errcode);
        if (row->status == 200) {
            struct wechat_reply ok = *r;
            ok.status = WECHAT_OK;
            fn(arg, &ok, false);
            return;
        }
    }
    fn(arg, r, r->status == WECHAT_OK);
}

int wechat_check_session(struct wechat_client *c, struct async_slot *slot, const char *access_token,
                         const char *openid, const char *session_key, wechat_check_fn *done,
                         void *arg)
{
    /* signature = HMAC-SHA256 keyed with the session_key string as received (not decoded),
     * over the empty message (WeChat's checkSessionKey). */
    char sig[65];
    crypto_hmac_sha256_hex(session_key, strlen(session_key), "", 0, sig);
    struct wechat_url u;
    wechat_url_init(&u, "/wxa/checksession");
    wechat_url_arg(&u, "access_token", access_token);
    wechat_url_arg(&u, "signature", sig);
    wechat_url_arg(&u, "openid", openid);
    wechat_url_arg(&u, "sig_method", "hmac_sha256");
    crypto_wipe(sig, sizeof(sig));
    int rc = wechat_call(c, slot, WECHAT_API_CHECKSESSION, &u, NULL, 0, NULL, decode_check,
                         (void (*)(void))done, arg);
    wechat_url_wipe(&u);
    return rc;
}

/* ---- the access token ---- */

static bool accept_token(const json_t *body)
{
    const json_t *tok = json_object_get(body, "access_token");
    const json_t *exp = json_object_get(body, "expires_in");
    return json_is_string(tok) && json_string_length(tok) > 0 &&
           json_string_length(tok) <= WECHAT_TOKEN_MAX && json_is_integer(exp) &&
           json_integer_value(exp) > 0 && json_integer_value(exp) <= 86400; /* WeChat: 7200 */
}

static void decode_grant(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_grant_fn *fn = (wechat_grant_fn *)done;
    if (r->status != WECHAT_OK) {
        fn(arg, r, NULL);
        return;
    }
    struct wechat_token_grant g;
    copy_string(json_object_get(r->body, "access_token"), g.token, sizeof(g.token));
    g.expires_in = (long)json_integer_value(json_object_get(r->body, "expires_in"));
    fn(arg, r, &g);
    crypto_wipe(&g, sizeof(g));
}

int wechat_fetch_token(struct wechat_client *c, struct async_slot *slot,
                       const struct wechat_app *app, enum wechat_token_api api, bool force,
                       wechat_grant_fn *done, void *arg)
{
    struct wechat_url u;
    int rc = -1;
    if (api == WECHAT_TOKEN_STABLE) {
        /* JSON body only (form data gets 47001). Written into a buffer wiped after: it holds
         * the secret. */
        char body[1024];
        struct jsonw w;
        jsonw_begin(&w, body, sizeof(body));
        jsonw_str(&w, "grant_type", "client_credential");
        jsonw_str(&w, "appid", app->appid);
        jsonw_str(&w, "secret", app->secret);
        jsonw_bool(&w, "force_refresh", force);
        size_t n = jsonw_end(&w);
        wechat_url_init(&u, "/cgi-bin/stable_token");
        rc = n > 0 ? wechat_call(c, slot, WECHAT_API_TOKEN, &u, body, n, accept_token, decode_grant,
                                 (void (*)(void))done, arg)
                   : -EINVAL;
        crypto_wipe(body, sizeof(body));
    } else {
        wechat_url_init(&u, "/cgi-bin/token");
        wechat_url_arg(&u, "grant_type", "client_credential");
        wechat_url_arg(&u, "appid", app->appid);
        wechat_url_arg(&u, "secret", app->secret);
        rc = wechat_call(c, slot, WECHAT_API_TOKEN, &u, NULL, 0, accept_token, decode_grant,
                         (void (*)(void))done, arg);
    }
    wechat_url_wipe(&u);
    return rc;
}
