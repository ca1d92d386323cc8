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
#include "util/utf8.h"

bool wechat_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > WECHAT_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!wechat_plain_char((unsigned char)id[i]))
            return false;
    return true;
}

bool wechat_token_valid(const char *token, size_t len)
{
    /* The token goes into URLs, Redis and the admin route's answer: printable ASCII only. */
    if (len == 0 || len > WECHAT_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)token[i] <= 0x20 || (unsigned char)token[i] >= 0x7f)
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

/* How a string of WeChat's answer was taken. */
enum take { TAKE_OK, TAKE_ABSENT, TAKE_BAD };

/*
 * Copies a JSON string that is text (valid UTF-8 without control characters, util/utf8) and
 * fits out (cap - 1 bytes) whole. A string of WeChat's is never cut: one that does not fit, or
 * is not text, or is not a string, is TAKE_BAD (the answer is malformed). Absent or null:
 * TAKE_ABSENT, out "".
 */
static enum take take_text(const json_t *v, char *out, size_t cap)
{
    out[0] = '\0';
    if (v == NULL || json_is_null(v))
        return TAKE_ABSENT;
    if (!json_is_string(v))
        return TAKE_BAD;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n >= cap || !utf8_text_ok(s, n))
        return TAKE_BAD;
    memcpy(out, s, n);
    out[n] = '\0';
    return TAKE_OK;
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

bool wechat_session_parse(const json_t *body, struct wechat_session *s, const char **why)
{
    memset(s, 0, sizeof(*s));
    /* Ids go into response headers (X-WX-OpenID): only WeChat's alphabet passes. */
    if (take_text(json_object_get(body, "openid"), s->openid, sizeof(s->openid)) != TAKE_OK ||
        !wechat_id_valid(s->openid, strlen(s->openid))) {
        *why = "openid missing or malformed";
        goto bad;
    }
    if (take_text(json_object_get(body, "session_key"), s->session_key, sizeof(s->session_key)) !=
            TAKE_OK ||
        !wechat_session_key_valid(s->session_key, strlen(s->session_key))) {
        *why = "session_key missing or malformed";
        goto bad;
    }
    /* Absent (the app is bound to no Open Platform account), null or "": none. */
    enum take u = take_text(json_object_get(body, "unionid"), s->unionid, sizeof(s->unionid));
    if (u == TAKE_BAD ||
        (s->unionid[0] != '\0' && !wechat_id_valid(s->unionid, strlen(s->unionid)))) {
        *why = "unionid malformed";
        goto bad;
    }
    return true;
bad:
    crypto_wipe(s, sizeof(*s));
    return false;
}

static void decode_session(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_session_fn *fn = (wechat_session_fn *)done;
    if (r->status != WECHAT_OK) {
        fn(arg, r, NULL);
        return;
    }
    struct wechat_session s;
    const char *why;
    if (!wechat_session_parse(r->body, &s, &why)) {
        struct wechat_reply b = bad_body(r, why);
        fn(arg, &b, NULL);
        return;
    }
    fn(arg, r, &s);
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

bool wechat_phone_parse(const json_t *body, struct wechat_phone *p, const char **why)
{
    memset(p, 0, sizeof(*p));
    const json_t *pi = json_object_get(body, "phone_info");
    if (take_text(json_object_get(pi, "phoneNumber"), p->phone_number, sizeof(p->phone_number)) !=
            TAKE_OK ||
        take_text(json_object_get(pi, "purePhoneNumber"), p->pure_phone_number,
                  sizeof(p->pure_phone_number)) != TAKE_OK) {
        *why = "phone number missing, too long or not text";
        goto bad;
    }
    /* countryCode is documented as a string ("86"), but the official example sends a number:
     * both are taken, as text. Absent or null: "". */
    const json_t *cc = json_object_get(pi, "countryCode");
    bool cc_ok;
    if (json_is_integer(cc)) {
        long long v = (long long)json_integer_value(cc);
        int n = v >= 0 ? snprintf(p->country_code, sizeof(p->country_code), "%lld", v) : -1;
        cc_ok = n > 0 && (size_t)n < sizeof(p->country_code);
    } else {
        cc_ok = take_text(cc, p->country_code, sizeof(p->country_code)) != TAKE_BAD;
    }
    if (!cc_ok) {
        *why = "countryCode malformed or too long";
        goto bad;
    }
    /* The caller compares it with our appid: absent, it is "" and differs. */
    if (take_text(json_object_get(json_object_get(pi, "watermark"), "appid"), p->watermark_appid,
                  sizeof(p->watermark_appid)) == TAKE_BAD) {
        *why = "watermark appid malformed or too long";
        goto bad;
    }
    return true;
bad:
    crypto_wipe(p, sizeof(*p));
    return false;
}

static void decode_phone(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_phone_fn *fn = (wechat_phone_fn *)done;
    if (r->status != WECHAT_OK) {
        fn(arg, r, NULL);
        return;
    }
    struct wechat_phone p;
    const char *why;
    if (!wechat_phone_parse(r->body, &p, &why)) {
        struct wechat_reply b = bad_body(r, why);
        fn(arg, &b, NULL);
        return;
    }
    fn(arg, r, &p);
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

/* The fields' presence; their shape is wechat_token_parse's. */
static bool accept_token(const json_t *body)
{
    return json_is_string(json_object_get(body, "access_token")) &&
           json_is_integer(json_object_get(body, "expires_in"));
}

bool wechat_token_parse(const json_t *body, struct wechat_token_grant *g, const char **why)
{
    memset(g, 0, sizeof(*g));
    bool ok =
        take_text(json_object_get(body, "access_token"), g->token, sizeof(g->token)) == TAKE_OK &&
        wechat_token_valid(g->token, strlen(g->token));
    if (!ok) {
        *why = "access_token missing, too long or malformed";
        goto bad;
    }
    const json_t *exp = json_object_get(body, "expires_in");
    if (!json_is_integer(exp) || json_integer_value(exp) <= 0 ||
        json_integer_value(exp) > 86400) { /* WeChat: 7200 */
        *why = "expires_in missing or out of range";
        goto bad;
    }
    g->expires_in = (long)json_integer_value(exp);
    return true;
bad:
    crypto_wipe(g, sizeof(*g));
    return false;
}

static void decode_grant(void (*done)(void), void *arg, const struct wechat_reply *r)
{
    wechat_grant_fn *fn = (wechat_grant_fn *)done;
    if (r->status != WECHAT_OK) {
        fn(arg, r, NULL);
        return;
    }
    struct wechat_token_grant g;
    const char *why;
    if (!wechat_token_parse(r->body, &g, &why)) {
        struct wechat_reply b = bad_body(r, why);
        fn(arg, &b, NULL);
        return;
    }
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
