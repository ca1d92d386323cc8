/*
 * mock/tokens: WeChat's access-token endpoints as a client sees them (docs/mock.md cites the
 * sources):
 *   POST /cgi-bin/stable_token   the same token until its last 5 minutes, then a new one (the
 *                                old one still valid until it expires) unless
 *                                --no-early-renewal; force_refresh replaces it at once, at
 *                                most every 30 s and 20 times a day (then 45009);
 *   ANY  /cgi-bin/token          a new token per call (the query is read whatever the
 *                                method); the previous one stays valid 5 minutes;
 *   POST /mock/token/invalidate  (mock only) makes the current tokens invalid, so clients see
 *                                40001; with stuck=1 stable_token keeps handing back the
 *                                invalid one;
 *   POST /mock/token/fail        (mock only) directives for the token endpoints, in the code
 *                                grammar: errcodes (-1, 45009, 40164, 40243...), delays,
 *                                HTTP errors, resets, hangs.
 * Tokens have a real token's shape and length: "NN_" and base64url characters, 130 to 160 in
 * all. Every lifetime is --token-ttl (7200 s).
 */
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock/internal.h"

/* WeChat renews a stable token in the last 5 minutes of its life; a classic token stays
 * valid 5 minutes after the next one is issued. */
#define RENEW_WINDOW_S 300
#define CLASSIC_OVERLAP_S 300
/* force_refresh: at most 20 a day. */
#define FORCE_PER_DAY 20

static void new_token(char out[MOCK_TOKEN_MAX + 1])
{
    static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[MOCK_TOKEN_MAX + 1];
    RAND_bytes(r, sizeof(r));
    size_t len = MOCK_TOKEN_MIN + r[0] % (MOCK_TOKEN_MAX - MOCK_TOKEN_MIN + 1);
    memcpy(out, "91_", 3);
    for (size_t i = 3; i < len; i++)
        out[i] = b64url[r[i] & 63];
    out[len] = '\0';
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

/* The request through the app's fault directives for api, then succeed. */
static void run_faults(struct mock *m, struct http_request *req, struct mock_app *app,
                       enum mock_token_api api, bool force, mock_succeed_fn *succeed)
{
    struct mock_pending *p = http_request_alloc(req, sizeof(*p));
    if (p == NULL) {
        http_reply_reset(req);
        return;
    }
    p->req = req;
    p->m = m;
    p->app = app;
    p->force = force;
    p->succeed = succeed;
    pthread_mutex_lock(&m->mu);
    p->code = app->faults[api];
    long n = ++app->fault_requests[api];
    pthread_mutex_unlock(&m->mu);
    mock_run_directives(p, n);
}

/* The day in Beijing (UTC+8), when WeChat's daily quotas start again. */
static int64_t beijing_day(int64_t now)
{
    return (now + 8 * 3600) / 86400;
}

static void stable_succeed(struct mock_pending *p)
{
    struct mock *m = p->m;
    struct mock_app *app = p->app;
    char token[MOCK_TOKEN_MAX + 1];
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = loop_clock_ms();
    pthread_mutex_lock(&m->mu);
    bool replace =
        app->stable[0] == '\0' || now >= app->stable_exp || (app->stable_bad && !app->stable_stuck);
    if (p->force) {
        if (app->force_day != beijing_day(now)) {
            app->force_day = beijing_day(now);
            app->force_count = 0;
        }
        if (app->force_count >= FORCE_PER_DAY) {
            pthread_mutex_unlock(&m->mu);
            mock_reply_errcode(m, p->req, 45009);
            return;
        }
        if (app->last_force_ms == 0 ||
            now_ms - app->last_force_ms >= (uint64_t)m->force_interval_ms) {
            replace = true; /* the previous token dies at once */
            app->last_force_ms = now_ms;
            app->force_count++;
        }
    }
    if (replace) {
        app->stable_prev[0] = '\0';
    } else if (m->early_renewal && !app->stable_bad && app->stable_exp - now <= RENEW_WINDOW_S) {
        /* In its last 5 minutes: a new token, and the old one works until it expires. */
        memcpy(app->stable_prev, app->stable, sizeof(app->stable_prev));
        app->stable_prev_exp = app->stable_exp;
        replace = true;
    }
    if (replace) {
        new_token(app->stable);
        app->stable_exp = now + m->token_ttl_s;
        app->stable_bad = false;
        app->stable_stuck = false;
    }
    memcpy(token, app->stable, sizeof(token));
    int64_t left = app->stable_exp - now;
    pthread_mutex_unlock(&m->mu);
    send_token(m, p->req, token, left);
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
        mock_reply_errcode(m, req, 47001); /* "data format error": the body must be JSON */
        return;
    }
    struct mock_app *app = NULL;
    long ec = check_credentials(m, json_string_value(json_object_get(in, "grant_type")),
                                json_string_value(json_object_get(in, "appid")),
                                json_string_value(json_object_get(in, "secret")), &app);
    bool force = json_is_true(json_object_get(in, "force_refresh"));
    json_decref(in);
    if (ec != 0) {
        mock_reply_errcode(m, req, ec);
        return;
    }
    run_faults(m, req, app, MOCK_STABLE, force, stable_succeed);
}

static void classic_succeed(struct mock_pending *p)
{
    struct mock *m = p->m;
    struct mock_app *app = p->app;
    char token[MOCK_TOKEN_MAX + 1];
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&m->mu);
    /* Each call issues a new token; WeChat keeps the previous one valid for 5 minutes. */
    memcpy(app->classic_prev, app->classic, sizeof(app->classic_prev));
    app->classic_prev_until = now + CLASSIC_OVERLAP_S;
    if (app->classic_prev_until > app->classic_exp)
        app->classic_prev_until = app->classic_exp;
    new_token(app->classic);
    app->classic_exp = now + m->token_ttl_s;
    memcpy(token, app->classic, sizeof(token));
    pthread_mutex_unlock(&m->mu);
    send_token(m, p->req, token, m->token_ttl_s);
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
        mock_reply_errcode(m, req, ec);
        return;
    }
    run_faults(m, req, app, MOCK_CLASSIC, false, classic_succeed);
}

static bool is(const char *token, const char *known)
{
    return known[0] != '\0' && strcmp(token, known) == 0;
}

struct mock_app *mock_token_owner(struct mock *m, const char *token)
{
    for (size_t i = 0; token != NULL && i < m->napps; i++) {
        struct mock_app *a = &m->apps[i];
        if (is(token, a->stable) || is(token, a->stable_prev) || is(token, a->classic) ||
            is(token, a->classic_prev))
            return a;
    }
    return NULL;
}

long mock_check_access_token(struct mock *m, const char *token, struct mock_app **out)
{
    if (token == NULL || *token == '\0')
        return 41001;
    int64_t now = (int64_t)time(NULL);
    long ec = 40001;
    pthread_mutex_lock(&m->mu);
    struct mock_app *a = mock_token_owner(m, token);
    if (a != NULL) {
        /* A token that was valid and ran out: 42001; one invalidated: 40001. */
        int64_t exp = is(token, a->stable)        ? a->stable_exp
                      : is(token, a->stable_prev) ? a->stable_prev_exp
                      : is(token, a->classic)     ? a->classic_exp
                                                  : a->classic_prev_until;
        bool bad = (is(token, a->stable) || is(token, a->stable_prev)) && a->stable_bad;
        if (bad)
            ec = 40001;
        else if (now >= exp)
            ec = 42001;
        else
            ec = 0;
        if (ec == 0)
            *out = a;
    }
    pthread_mutex_unlock(&m->mu);
    return ec;
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

/* POST /mock/token/fail?appid=APPID&do=DIRECTIVES[&api=stable|token]: from now on, requests to
 * the app's token endpoint (both when api is absent) follow the directives, counted from this
 * call ("err45009x2": the next two answer 45009). do= empty clears them. */
void mock_handle_token_fail(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    const char *appid = http_request_query(req, "appid");
    const char *spec = http_request_query(req, "do");
    const char *api = http_request_query(req, "api");
    struct mock_app *app = appid != NULL ? mock_find_app(m, appid) : NULL;
    if (app == NULL) {
        http_reply_error(req, 404, "not_found", "unknown appid", "none");
        return;
    }
    struct mock_code faults;
    if (spec == NULL || mock_directives_parse(spec, &faults) != 0) {
        http_reply_error(req, 400, "bad_request",
                         "do= wants directives joined by _ (docs/mock.md), or nothing", "none");
        return;
    }
    bool stable = api == NULL || strcmp(api, "stable") == 0;
    bool classic = api == NULL || strcmp(api, "token") == 0;
    if (!stable && !classic) {
        http_reply_error(req, 400, "bad_request", "api= wants stable or token", "none");
        return;
    }
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < MOCK_TOKEN_APIS; i++) {
        if ((i == MOCK_STABLE && !stable) || (i == MOCK_CLASSIC && !classic))
            continue;
        app->faults[i] = faults;
        app->fault_requests[i] = 0;
    }
    pthread_mutex_unlock(&m->mu);
    http_reply_json(req, 200,
                    json_pack("{s:s, s:i}", "status", "set", "directives", (int)faults.nd));
}

json_t *mock_token_api_body(struct mock *m, struct http_request *req, struct mock_app **app)
{
    long ec = mock_check_access_token(m, http_request_query(req, "access_token"), app);
    if (ec != 0) {
        mock_reply_errcode(m, req, ec);
        return NULL;
    }
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t jerr;
    json_t *in = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(in)) {
        json_decref(in);
        mock_reply_errcode(m, req, 47001);
        return NULL;
    }
    return in;
}
