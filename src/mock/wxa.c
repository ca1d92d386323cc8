/*
 * mock/wxa: the APIs that need an access token, as a client sees them (docs/mock.md):
 *   POST /wxa/business/getuserphonenumber   phone codes (single use, issued to one app, expire
 *                                           like login codes; directives as login codes);
 *                                           countryCode is the string "86", as WeChat sends it;
 *   GET  /wxa/checksession       HMAC-SHA256(session_key, "") against the user's current key.
 */
#include <jansson.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "mock/internal.h"

/* A phone number per user: 138 and eight digits from a hash of the user's name. */
static void phone_of(const char *user, char out[16])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)user, strlen(user), md);
    unsigned long v = ((unsigned long)md[0] << 24 | (unsigned long)md[1] << 16 |
                       (unsigned long)md[2] << 8 | md[3]) %
                      100000000ul;
    snprintf(out, 16, "138%08lu", v);
}

static void phone_succeed(struct mock_pending *p)
{
    /* A phone code is single use; WeChat answers a reused one 40029. */
    if (!mock_spend(p->m, p->m->used_phone, p->code_text)) {
        mock_reply_errcode(p->m, p->req, 40029);
        return;
    }
    char phone[16];
    phone_of(p->code.user, phone);
    /* countryCode is the string "86" as WeChat sends it; the directive ccnumber sends the
     * number of WeChat's own doc example instead (a client must take both). */
    json_t *cc = p->ccnumber ? json_integer(86) : json_string("86");
    json_t *o = json_pack("{s:i, s:s, s:{s:s, s:s, s:o, s:{s:I, s:s}}}", "errcode", 0, "errmsg",
                          "ok", "phone_info", "phoneNumber", phone, "purePhoneNumber", phone,
                          "countryCode", cc, "watermark", "timestamp", (json_int_t)time(NULL),
                          "appid", p->wrongapp ? "wx0000000000000000" : p->app->appid);
    http_reply_json(p->req, 200, o);
}

void mock_handle_phone(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_PHONE);
    struct mock_app *app = NULL;
    json_t *in = mock_token_api_body(m, req, &app);
    if (in == NULL)
        return;
    const char *code = json_string_value(json_object_get(in, "code"));
    if (code == NULL || *code == '\0') {
        json_decref(in);
        mock_reply_errcode(m, req, 40029);
        return;
    }
    char copy[MOCK_CODE_MAX + 1];
    snprintf(copy, sizeof(copy), "%s", code);
    bool too_long = strlen(code) > MOCK_CODE_MAX;
    json_decref(in);
    if (too_long) {
        mock_reply_errcode(m, req, 40029);
        return;
    }
    mock_run_coded(m, req, app, "phone", copy, phone_succeed);
}

void mock_handle_checksession(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_CHECKSESSION);
    struct mock_app *app = NULL;
    long ec = mock_check_access_token(m, http_request_query(req, "access_token"), &app);
    if (ec != 0) {
        mock_reply_errcode(m, req, ec);
        return;
    }
    const char *method = http_request_query(req, "sig_method");
    const char *sig = http_request_query(req, "signature");
    const char *openid = http_request_query(req, "openid");
    if (method == NULL || strcmp(method, "hmac_sha256") != 0) {
        mock_reply_errcode(m, req, 87008);
        return;
    }
    char sk[32], want[65];
    mock_session_key(m, app->appid, openid != NULL ? openid : "", sk);
    if (sk[0] == '\0' || sig == NULL) {
        mock_reply_errcode(m, req, 87009);
        return;
    }
    /* Keyed with the session_key string itself, not its base64 decoding. */
    crypto_hmac_sha256_hex(sk, strlen(sk), "", 0, want);
    if (strcmp(want, sig) != 0) {
        mock_reply_errcode(m, req, 87009);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:i, s:s}", "errcode", 0, "errmsg", "ok"));
}
