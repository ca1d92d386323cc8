/*
 * mock: WeChat's behaviour as seen by a client, on loopback.
 *
 * Faithful where clients trip: errors are HTTP 200 with errcode/errmsg (errmsg carries a rid),
 * success has no errcode and is labelled text/plain, codes are single use. Everything else is
 * driven by the code itself (mock/code.h), so tests need no side channel to make WeChat fail.
 */
#include "mock/mock.h"
#include "mock/internal.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/server.h"
#include "log/log.h"
#include "loop/loop.h"
#include "mock/code.h"
#include "mock/codeset.h"
#include "runtime/workers.h"

#define CODESET_SLOTS (1u << 19)
#define CODE_LIFETIME_MS (5 * 60 * 1000)
#define HANG_MS (120 * 1000)
/* Latest session_key per user, for the debug route; a ring, so memory is bounded. */
#define SK_RING (1u << 18)

/* ---- answers ---- */

static const char *errmsg_for(long errcode)
{
    switch (errcode) {
    case -1: return "system error";
    case 40002: return "invalid grant_type";
    case 40013: return "invalid appid";
    case 40029: return "invalid code";
    case 40125: return "invalid appsecret";
    case 40163: return "code been used";
    case 40226: return "code blocked";
    case 41002: return "appid missing";
    case 41004: return "appsecret missing";
    case 41008: return "missing code";
    case 45011: return "api minute-quota reach limit, must slower, retry next minute";
    case 40001: return "invalid credential, access_token is invalid or not latest";
    case 41001: return "access_token missing";
    case 47001: return "data format error";
    case 87008: return "invalid sig_method";
    case 87009: return "invalid signature";
    default: return "mock error";
    }
}

void mock_reply_errcode(struct http_request *req, long errcode)
{
    unsigned char r[8];
    RAND_bytes(r, sizeof(r));
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"errcode\":%ld,\"errmsg\":\"%s, rid: %02x%02x%02x%02x-%02x%02x-%02x%02x\"}",
                     errcode, errmsg_for(errcode), r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
    http_reply(req, 200, "application/json; encoding=utf-8", body, (size_t)n);
}

/* "o" + 27 base64url characters of SHA-256(label:a:b): the shape of a real openid. */
static void derive_id(const char *label, const char *a, const char *b, char out[29])
{
    char in[512];
    unsigned char md[SHA256_DIGEST_LENGTH], b64[48];
    int n = snprintf(in, sizeof(in), "%s:%s:%s", label, a, b);
    SHA256((const unsigned char *)in, (size_t)n, md);
    EVP_EncodeBlock(b64, md, sizeof(md));
    out[0] = 'o';
    for (int i = 0; i < 27; i++) {
        char c = (char)b64[i];
        out[i + 1] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[28] = '\0';
}

static uint64_t user_key(const char *appid, const char *openid)
{
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "%s\n%s", appid, openid);
    return codeset_key(buf, (size_t)n);
}

static void remember_session_key(struct mock *m, const char *appid, const char *openid,
                                 const char *sk)
{
    uint64_t k = user_key(appid, openid);
    pthread_mutex_lock(&m->mu);
    uint32_t slot = m->sk_next++ % SK_RING;
    m->sk_ring[slot].owner = k;
    snprintf(m->sk_ring[slot].sk, sizeof(m->sk_ring[slot].sk), "%s", sk);
    codeset_put(m->users, k, slot + 1, loop_clock_ms());
    pthread_mutex_unlock(&m->mu);
}

static void reply_session(struct mock *m, struct http_request *req, const struct mock_app *app,
                          const char *user)
{
    char openid[29], unionid[29], sk[32];
    unsigned char raw[16];
    RAND_bytes(raw, sizeof(raw));
    EVP_EncodeBlock((unsigned char *)sk, raw, sizeof(raw));
    derive_id("openid", app->appid, user, openid);
    remember_session_key(m, app->appid, openid, sk);
    char body[256];
    int n;
    if (user[0] == 'u') {
        derive_id("unionid", "", user, unionid);
        n = snprintf(body, sizeof(body),
                     "{\"session_key\":\"%s\",\"openid\":\"%s\",\"unionid\":\"%s\"}", sk, openid,
                     unionid);
    } else {
        n = snprintf(body, sizeof(body), "{\"session_key\":\"%s\",\"openid\":\"%s\"}", sk, openid);
    }
    /* WeChat labels this JSON text/plain. */
    http_reply(req, 200, "text/plain", body, (size_t)n);
}

void mock_count(struct mock *m, enum mock_counter c)
{
    atomic_fetch_add(&m->counters[c], 1);
}

bool mock_spend(struct mock *m, struct codeset *set, const char *code)
{
    uint64_t key = codeset_key(code, strlen(code));
    pthread_mutex_lock(&m->mu);
    bool used = codeset_get(set, key, loop_clock_ms()) != 0;
    if (!used)
        codeset_put(set, key, 1, loop_clock_ms());
    pthread_mutex_unlock(&m->mu);
    return !used;
}

static void answer_failure(struct http_request *req, const struct mock_directive *fail)
{
    switch (fail->kind) {
    case MOCK_ERR: mock_reply_errcode(req, fail->value); return;
    case MOCK_HTTP: {
        char body[128];
        int n = snprintf(body, sizeof(body),
                         "<html><body><h1>%ld</h1>mock upstream error</body></html>", fail->value);
        http_reply(req, (unsigned)fail->value, "text/html", body, (size_t)n);
        return;
    }
    case MOCK_HTML: {
        static const char page[] = "<!DOCTYPE html><html><head><title>Gateway</title></head>"
                                   "<body>Please log in to the network.</body></html>";
        http_reply(req, 200, "text/html; charset=utf-8", page, sizeof(page) - 1);
        return;
    }
    case MOCK_RESET:
    case MOCK_HANG:
    case MOCK_DELAY:
    case MOCK_WRONGAPP: http_reply_reset(req); return;
    }
}

static void answer(struct mock_pending *p)
{
    if (p->fail != NULL)
        answer_failure(p->req, p->fail);
    else
        p->succeed(p);
}

static void on_pending_timer(void *arg)
{
    answer(arg);
}

static bool code_chars_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= MOCK_CODE_MAX &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

void mock_run_coded(struct mock *m, struct http_request *req, struct mock_app *app,
                    const char *code, mock_succeed_fn *succeed)
{
    struct mock_pending *p = http_request_alloc(req, sizeof(*p));
    if (p == NULL) {
        http_reply_reset(req);
        return;
    }
    if (!code_chars_ok(code) || mock_code_parse(code, &p->code) != 0) {
        mock_reply_errcode(req, 40029);
        return;
    }
    p->req = req;
    p->m = m;
    p->app = app;
    p->succeed = succeed;
    memcpy(p->code_text, code, strlen(code) + 1);

    long n = 1;
    if (p->code.nd > 0) {
        uint64_t key = codeset_key(code, strlen(code));
        pthread_mutex_lock(&m->mu);
        n = (long)codeset_get(m->attempts, key, loop_clock_ms()) + 1;
        codeset_put(m->attempts, key, (uint32_t)n, loop_clock_ms());
        pthread_mutex_unlock(&m->mu);
    }
    long delay = 0;
    for (size_t i = 0; i < p->code.nd; i++) {
        const struct mock_directive *d = &p->code.d[i];
        if (!mock_directive_applies(d, n))
            continue;
        if (d->kind == MOCK_DELAY)
            delay += d->value;
        else if (d->kind == MOCK_WRONGAPP)
            p->wrongapp = true;
        else if (p->fail == NULL)
            p->fail = d;
    }
    if (p->fail != NULL && p->fail->kind == MOCK_HANG)
        delay += HANG_MS;
    if (delay == 0) {
        answer(p);
        return;
    }
    delay_start(&p->delay, http_request_loop(req), http_request_slot(req), (uint64_t)delay,
                on_pending_timer, p);
}

static void c2s_succeed(struct mock_pending *p)
{
    /* Spend the code now, at answer time, so concurrent requests with one code race as they
     * would at WeChat: the first answered wins, the others get 40163. */
    /* Codes belong to one app: spent per app. */
    char key[MOCK_CODE_MAX + 64];
    snprintf(key, sizeof(key), "%s\n%s", p->app->appid, p->code_text);
    if (!mock_spend(p->m, p->m->used, key)) {
        mock_reply_errcode(p->req, 40163);
        return;
    }
    mock_count(p->m, MC_C2S_EXCHANGES);
    reply_session(p->m, p->req, p->app, p->code.user);
}

/* ---- endpoints ---- */

struct mock_app *mock_find_app(struct mock *m, const char *appid)
{
    for (size_t i = 0; i < m->napps; i++)
        if (strcmp(m->apps[i].appid, appid) == 0)
            return &m->apps[i];
    return NULL;
}

long mock_check_app(struct mock *m, const char *appid, const char *secret, struct mock_app **app)
{
    if (appid == NULL || *appid == '\0')
        return 41002;
    *app = mock_find_app(m, appid);
    if (*app == NULL)
        return 40013;
    if (secret == NULL || *secret == '\0')
        return 41004;
    if (strcmp(secret, (*app)->secret) != 0)
        return 40125;
    return 0;
}

/* WeChat's own checks of the query, in its order; 0 when they pass. */
static long check_query(struct mock *m, struct http_request *req, struct mock_app **app)
{
    const char *appid = http_request_query(req, "appid");
    const char *secret = http_request_query(req, "secret");
    const char *js_code = http_request_query(req, "js_code");
    const char *grant = http_request_query(req, "grant_type");
    long ec = mock_check_app(m, appid, secret, app);
    if (ec != 0)
        return ec;
    if (js_code == NULL || *js_code == '\0')
        return 41008;
    if (grant == NULL || strcmp(grant, "authorization_code") != 0)
        return 40002;
    return 0;
}

static void handle_jscode2session(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    struct mock_app *app = NULL;
    mock_count(m, MC_C2S);
    long ec = check_query(m, req, &app);
    if (ec != 0) {
        mock_reply_errcode(req, ec);
        return;
    }
    mock_run_coded(m, req, app, http_request_query(req, "js_code"), c2s_succeed);
}

static void handle_stats(struct http_request *req, void *arg)
{
    struct mock *m = arg;
#define C(i) ((json_int_t)atomic_load(&m->counters[i]))
    json_t *o = json_pack("{s:{s:I, s:I}, s:{s:I}, s:{s:I}, s:{s:I}, s:{s:I}}", "jscode2session",
                          "requests", C(MC_C2S), "exchanges", C(MC_C2S_EXCHANGES), "stable_token",
                          "requests", C(MC_STABLE_TOKEN), "token", "requests", C(MC_TOKEN),
                          "getuserphonenumber", "requests", C(MC_PHONE), "checksession", "requests",
                          C(MC_CHECKSESSION));
#undef C
    http_reply_json(req, 200, o);
}

/* Debug route, mock only: a user's current session_key, so tests can encrypt data the way a
 * phone would. WeChat has nothing like it. */
void mock_session_key(struct mock *m, const char *appid, const char *openid, char out[32])
{
    uint64_t k = user_key(appid, openid);
    out[0] = '\0';
    pthread_mutex_lock(&m->mu);
    uint32_t v = codeset_get(m->users, k, loop_clock_ms());
    if (v != 0 && m->sk_ring[v - 1].owner == k)
        memcpy(out, m->sk_ring[v - 1].sk, 32);
    pthread_mutex_unlock(&m->mu);
}

static void handle_session_key(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    const char *appid = http_request_query(req, "appid");
    const char *openid = http_request_query(req, "openid");
    char sk[32] = "";
    if (appid != NULL && openid != NULL)
        mock_session_key(m, appid, openid, sk);
    if (sk[0] == '\0') {
        http_reply_error(req, 404, "not_found", "no session_key for this appid and openid", "none");
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s}", "session_key", sk));
}

static const struct http_route mock_routes[] = {
    {"POST", "/cgi-bin/stable_token", mock_handle_stable_token},
    {"GET", "/cgi-bin/token", mock_handle_token},
    {"POST", "/wxa/business/getuserphonenumber", mock_handle_phone},
    {"GET", "/wxa/checksession", mock_handle_checksession},
    {"POST", "/mock/token/invalidate", mock_handle_invalidate_token},
    {"GET", "/mock/session_key", handle_session_key},
    {"GET", "/sns/jscode2session", handle_jscode2session},
    {"GET", "/mock/stats", handle_stats},
};

/* ---- workers ---- */

static int mock_init(struct worker *w, void *arg)
{
    struct mock *m = arg;
    struct http_server_opts ho = {
        .listen = m->listen,
        .port = m->port,
        .max_body = 64 * 1024,
        .max_connections = 20000,
        .connection_timeout_s = 60,
        .routes = mock_routes,
        .nroutes = sizeof(mock_routes) / sizeof(mock_routes[0]),
        .handler_arg = m,
    };
    char err[HTTP_ERR_MAX];
    struct http_server *srv = http_server_new(w->loop, &ho, err);
    if (srv == NULL) {
        fprintf(stderr, "wxlogin mock: %s\n", err);
        return -1;
    }
    w->data = srv;
    m->port = http_server_port(srv);
    if (w->id == m->nworkers - 1) {
        char port[8];
        snprintf(port, sizeof(port), "%u", m->port);
        log_kv(LOG_WARN, "wxlogin mock serving", "listen", m->listen, "port", port, NULL);
    }
    return 0;
}

static void mock_stop(struct worker *w)
{
    http_server_free(w->data);
    w->data = NULL;
    loop_stop(w->loop);
}

static void mock_done(struct worker *w)
{
    http_server_free(w->data);
    w->data = NULL;
}

static const struct worker_ops mock_ops = {.init = mock_init, .stop = mock_stop, .done = mock_done};

static const char mock_usage[] =
    "usage: wxlogin mock [--listen ADDR] [--app APPID:SECRET]... [--threads N] "
    "[--token-delay-ms N] [--log-level LEVEL]\n";

static int add_app(struct mock *m, const char *spec)
{
    const char *colon = strchr(spec, ':');
    if (colon == NULL || colon == spec || colon[1] == '\0' || m->napps == MOCK_MAX_APPS)
        return -1;
    m->apps[m->napps].appid = strndup(spec, (size_t)(colon - spec));
    m->apps[m->napps].secret = strdup(colon + 1);
    m->napps++;
    return 0;
}

int mock_main(int argc, char **argv)
{
    struct mock m = {.listen = "127.0.0.1:2021"};
    enum log_level level = LOG_WARN;
    long threads = 0;
    int rc = 2;
    pthread_mutex_init(&m.mu, NULL);

    for (int i = 0; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--listen") == 0 && v != NULL) {
            m.listen = v;
        } else if (strcmp(a, "--app") == 0 && v != NULL) {
            if (add_app(&m, v) != 0) {
                fprintf(stderr, "wxlogin mock: --app wants APPID:SECRET\n");
                goto out;
            }
        } else if (strcmp(a, "--threads") == 0 && v != NULL) {
            char *end;
            threads = strtol(v, &end, 10);
            if (*end != '\0' || threads < 1 || threads > 256) {
                fprintf(stderr, "wxlogin mock: --threads wants 1 to 256\n");
                goto out;
            }
        } else if (strcmp(a, "--token-delay-ms") == 0 && v != NULL) {
            char *end;
            m.token_delay_ms = strtol(v, &end, 10);
            if (*end != '\0' || m.token_delay_ms < 0 || m.token_delay_ms > 60000) {
                fprintf(stderr, "wxlogin mock: --token-delay-ms wants 0 to 60000\n");
                goto out;
            }
        } else if (strcmp(a, "--log-level") == 0 && v != NULL) {
            if (log_level_parse(v, &level) != 0) {
                fprintf(stderr, "wxlogin mock: --log-level wants debug|info|warn|error\n");
                goto out;
            }
        } else {
            fprintf(stderr, "wxlogin mock: unknown argument '%s'\n%s", a, mock_usage);
            goto out;
        }
    }
    if (m.napps == 0)
        add_app(&m, "wx1234567890abcdef:0123456789abcdef0123456789abcdef");
    log_setup(level, LOG_FORMAT_TEXT);

    m.used = codeset_new(CODESET_SLOTS, CODE_LIFETIME_MS);
    m.attempts = codeset_new(CODESET_SLOTS, CODE_LIFETIME_MS);
    m.used_phone = codeset_new(CODESET_SLOTS, CODE_LIFETIME_MS);
    m.users = codeset_new(2 * SK_RING, UINT64_MAX / 2);
    m.sk_ring = calloc(SK_RING, sizeof(*m.sk_ring));
    if (m.used == NULL || m.attempts == NULL || m.used_phone == NULL || m.users == NULL ||
        m.sk_ring == NULL) {
        rc = 1;
        goto out;
    }
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? n : 1;
    }
    m.nworkers = (int)threads;
    rc = workers_run(m.nworkers, &mock_ops, &m) == 0 ? 0 : 1;
out:
    codeset_free(m.used);
    codeset_free(m.attempts);
    codeset_free(m.used_phone);
    codeset_free(m.users);
    free(m.sk_ring);
    for (size_t i = 0; i < m.napps; i++) {
        free(m.apps[i].appid);
        free(m.apps[i].secret);
    }
    pthread_mutex_destroy(&m.mu);
    return rc;
}
