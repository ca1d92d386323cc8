/*
 * mock/wxa: WeChat's access-token endpoints and the APIs that need a token, as a client sees
 * them (../shared/wechat-api.md §2-§4):
 *   POST /cgi-bin/stable_token   the same token until it expires, unless force_refresh (which
 *                                WeChat honours at most every 30 s) replaces it;
 *   GET  /cgi-bin/token          a new token per call; the previous one stays valid 5 minutes;
 *   POST /wxa/business/getuserphonenumber   phone codes (single use, directives as login codes);
 *   GET  /wxa/checksession       HMAC-SHA256(session_key, "") against the user's current key;
 *   POST /mock/token/invalidate  (mock only) makes the current tokens invalid, so clients see
 *                                40001; with stuck=1 stable_token keeps handing back the
 *                                invalid one.
 */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "mock/internal.h"

#define TOKEN_LIFETIME_S 7200
#define CLASSIC_OVERLAP_S 300
#define FORCE_MIN_INTERVAL_MS 30000

static void new_token(char out[MOCK_TOKEN_MAX + 1])
{
    unsigned char r[24];
    RAND_bytes(r, sizeof(r));
    int n = snprintf(out, MOCK_TOKEN_MAX + 1, "mock_");
    for (size_t i = 0; i < sizeof(r); i++)
        n += snprintf(out + n, (size_t)(MOCK_TOKEN_MAX + 1 - n), "%02x", r[i]);
}

static void reply_token(struct http_request *req, const char *token, int64_t expires_in)
{
    http_reply_json(
        req, 200,
        json_pack("{s:s, s:I}", "access_token", token, "expires_in", (json_int_t)expires_in));
}

/* Credential checks shared by both token endpoints, in WeChat's order; 0 when they pass. */
static long check_credentials(struct mock *m, const char *grant, const char *appid,
                              const char *secret, struct mock_app **app)
{
    if (grant == NULL || strcmp(grant, "client_credential") != 0)
        return 40002;
    return mock_check_app(m, appid, secret, app);
}

struct token_reply {
    struct http_request *req;
    struct delay delay;
    char token[MOCK_TOKEN_MAX + 1];
    int64_t expires_in;
};

static void on_token_timer(void *arg)
{
    struct token_reply *t = arg;
    reply_token(t->req, t->token, t->expires_in);
}

/* Answers a token, after --token-delay-ms (so tests can see concurrent fetches overlap). */
static void send_token(struct mock *m, struct http_request *req, const char *token,
                       int64_t expires_in)
{
    struct token_reply *t = m->token_delay_ms > 0 ? http_request_alloc(req, sizeof(*t)) : NULL;
    if (t == NULL) {
        reply_token(req, token, expires_in);
        return;
    }
    t->req = req;
    snprintf(t->token, sizeof(t->token), "%s", token);
    t->expires_in = expires_in;
    delay_start(&t->delay, http_request_loop(req), http_request_slot(req),
                (uint64_t)m->token_delay_ms, on_token_timer, t);
}

void mock_handle_stable_token(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_STABLE_TOKEN);
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t jerr;
    json_t *in = json_loadb(body, len, 0, &jerr);
    if (in == NULL || !json_is_object(in)) {
        json_decref(in);
        mock_reply_errcode(req, 47001); /* WeChat's "data format error": the body must be JSON */
        return;
    }
    struct mock_app *app = NULL;
    long ec = check_credentials(m, json_string_value(json_object_get(in, "grant_type")),
                                json_string_value(json_object_get(in, "appid")),
                                json_string_value(json_object_get(in, "secret")), &app);
    bool force = json_is_true(json_object_get(in, "force_refresh"));
    json_decref(in);
    if (ec != 0) {
        mock_reply_errcode(req, ec);
        return;
    }
    char token[MOCK_TOKEN_MAX + 1];
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = loop_clock_ms();
    pthread_mutex_lock(&m->mu);
    bool expired = app->stable[0] == '\0' || now >= app->stable_exp;
    bool replace = expired || (app->stable_bad && !app->stable_stuck);
    if (force &&
        (app->last_force_ms == 0 || now_ms - app->last_force_ms >= FORCE_MIN_INTERVAL_MS)) {
        replace = true;
        app->last_force_ms = now_ms;
    }
    if (replace) {
        new_token(app->stable);
        app->stable_exp = now + TOKEN_LIFETIME_S;
        app->stable_bad = false;
        app->stable_stuck = false;
    }
    memcpy(token, app->stable, sizeof(token));
    int64_t left = app->stable_exp - now;
    pthread_mutex_unlock(&m->mu);
    send_token(m, req, token, left);
}

void mock_handle_token(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_TOKEN);
    struct mock_app *app = NULL;
    long ec = check_credentials(m, http_request_query(req, "grant_type"),
                                http_request_query(req, "appid"), http_request_query(req, "secret"),
                                &app);
    if (ec != 0) {
        mock_reply_errcode(req, ec);
        return;
    }
    char token[MOCK_TOKEN_MAX + 1];
    pthread_mutex_lock(&m->mu);
    /* Each call issues a new token; WeChat keeps the previous one valid for 5 minutes. */
    memcpy(app->classic_prev, app->classic, sizeof(app->classic_prev));
    app->classic_prev_until = (int64_t)time(NULL) + CLASSIC_OVERLAP_S;
    new_token(app->classic);
    memcpy(token, app->classic, sizeof(token));
    pthread_mutex_unlock(&m->mu);
    send_token(m, req, token, TOKEN_LIFETIME_S);
}

/* The app whose valid token this is; 0 or the errcode WeChat would answer. */
static long check_access_token(struct mock *m, const char *token, struct mock_app **out)
{
    if (token == NULL || *token == '\0')
        return 41001;
    int64_t now = (int64_t)time(NULL);
    long ec = 40001;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->napps; i++) {
        struct mock_app *a = &m->apps[i];
        bool ok = (a->stable[0] != '\0' && strcmp(token, a->stable) == 0 && !a->stable_bad &&
                   now < a->stable_exp) ||
                  (a->classic[0] != '\0' && strcmp(token, a->classic) == 0) ||
                  (a->classic_prev[0] != '\0' && strcmp(token, a->classic_prev) == 0 &&
                   now < a->classic_prev_until);
        if (ok) {
            *out = a;
            ec = 0;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return ec;
}

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
        mock_reply_errcode(p->req, 40029);
        return;
    }
    char phone[16];
    phone_of(p->code.user, phone);
    json_t *o = json_pack("{s:i, s:s, s:{s:s, s:s, s:i, s:{s:I, s:s}}}", "errcode", 0, "errmsg",
                          "ok", "phone_info", "phoneNumber", phone, "purePhoneNumber", phone,
                          "countryCode", 86, "watermark", "timestamp", (json_int_t)time(NULL),
                          "appid", p->wrongapp ? "wx0000000000000000" : p->app->appid);
    http_reply_json(p->req, 200, o);
}

void mock_handle_phone(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_PHONE);
    struct mock_app *app = NULL;
    long ec = check_access_token(m, http_request_query(req, "access_token"), &app);
    if (ec != 0) {
        mock_reply_errcode(req, ec);
        return;
    }
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t jerr;
    json_t *in = json_loadb(body, len, 0, &jerr);
    const char *code = json_string_value(json_object_get(in, "code"));
    if (in == NULL || !json_is_object(in)) {
        json_decref(in);
        mock_reply_errcode(req, 47001);
        return;
    }
    if (code == NULL || *code == '\0') {
        json_decref(in);
        mock_reply_errcode(req, 40029);
        return;
    }
    char copy[MOCK_CODE_MAX + 1];
    snprintf(copy, sizeof(copy), "%s", code);
    bool too_long = strlen(code) > MOCK_CODE_MAX;
    json_decref(in);
    if (too_long) {
        mock_reply_errcode(req, 40029);
        return;
    }
    mock_run_coded(m, req, app, copy, phone_succeed);
}

void mock_handle_checksession(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_CHECKSESSION);
    struct mock_app *app = NULL;
    long ec = check_access_token(m, http_request_query(req, "access_token"), &app);
    if (ec != 0) {
        mock_reply_errcode(req, ec);
        return;
    }
    const char *method = http_request_query(req, "sig_method");
    const char *sig = http_request_query(req, "signature");
    const char *openid = http_request_query(req, "openid");
    if (method == NULL || strcmp(method, "hmac_sha256") != 0) {
        mock_reply_errcode(req, 87008);
        return;
    }
    char sk[32], want[65];
    mock_session_key(m, app->appid, openid != NULL ? openid : "", sk);
    if (sk[0] == '\0' || sig == NULL) {
        mock_reply_errcode(req, 87009);
        return;
    }
    /* Keyed with the session_key string itself, not its base64 decoding. */
    crypto_hmac_sha256_hex(sk, strlen(sk), "", 0, want);
    if (strcmp(want, sig) != 0) {
        mock_reply_errcode(req, 87009);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:i, s:s}", "errcode", 0, "errmsg", "ok"));
}

void mock_handle_invalidate_token(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    const char *appid = http_request_query(req, "appid");
    const char *stuck = http_request_query(req, "stuck");
    struct mock_app *app = appid != NULL ? mock_find_app(m, appid) : NULL;
    if (app == NULL) {
        http_reply_error(req, 404, "not_found", "unknown appid", "none");
        return;
    }
    pthread_mutex_lock(&m->mu);
    app->stable_bad = true;
    app->stable_stuck = stuck != NULL && strcmp(stuck, "1") == 0;
    app->classic[0] = '\0';
    app->classic_prev[0] = '\0';
    pthread_mutex_unlock(&m->mu);
    http_reply_json(req, 200, json_pack("{s:s}", "status", "invalidated"));
}
