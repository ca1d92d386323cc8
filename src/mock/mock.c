/*
 * mock: WeChat's behaviour as seen by a client, on loopback.
 *
 * Faithful where clients trip: errors are HTTP 200 with errcode/errmsg (errmsg carries a rid of
 * WeChat's shape, which /cgi-bin/openapi/rid/get can look up), also for a wrong method or an
 * unknown API; success has no errcode and is labelled text/plain; codes are single use, belong
 * to one app and expire. Everything else is driven by the code itself (mock/code.h), or for the
 * token endpoints by directives set through /mock/token/fail, so tests need no other side
 * channel to make WeChat fail. docs/mock.md is the contract and cites the source of each
 * behaviour.
 */
#include "mock/mock.h"
#include "mock/internal.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/server.h"
#include "log/log.h"
#include "loop/loop.h"
#include "mock/code.h"
#include "mock/codeset.h"
#include "runtime/workers.h"
#include "util/portfile.h"

#define CODESET_SLOTS (1u << 19)
/* Spent and seen codes are remembered at least this long, whatever --code-ttl says. */
#define CODE_MEMORY_MS (5 * 60 * 1000)
#define HANG_MS (120 * 1000)
/* Latest session_key per user, for the debug route; a ring, so memory is bounded. */
#define SK_RING (1u << 18)

/* ---- answers ---- */

/* WeChat's errmsg texts (sources in docs/mock.md). */
static const char *errmsg_for(long errcode)
{
    switch (errcode) {
    case -1: return "system error";
    case 40001:
        return "invalid credential, access_token is invalid or not latest, could get "
               "access_token by getStableAccessToken, more details at "
               "https://mmbizurl.cn/s/JtxxFh33r";
    case 40002: return "invalid grant_type";
    case 40013: return "invalid appid";
    case 40029: return "invalid code";
    case 40066: return "invalid url";
    case 40125: return "invalid appsecret";
    case 40163: return "code been used";
    case 40226: return "code blocked";
    case 40243: return "appsecret is frozen"; /* the mock's wording: WeChat's is unpublished */
    case 41001: return "access_token missing";
    case 41002: return "appid missing";
    case 41004: return "appsecret missing";
    case 41008: return "missing code";
    case 42001: return "access_token expired";
    case 43001: return "require GET method";
    case 43002: return "require POST method";
    case 45009: return "reach max api daily quota limit";
    case 45011: return "api minute-quota reach limit, must slower, retry next minute";
    case 47001: return "data format error";
    case 76001: return "rid not found, please check";
    case 76002: return "rid is error";
    case 76003: return "could not query this rid,no permission";
    case 76022: return "could not query the rid of a /sns/ api"; /* the mock's wording */
    case 87008: return "invalid sig_method";
    case 87009: return "invalid signature";
    default: return "mock error";
    }
}

void mock_reply_errcode(struct mock *m, struct http_request *req, long errcode)
{
    uint32_t r[2];
    RAND_bytes((unsigned char *)r, sizeof(r));
    char rid[MOCK_RID_LEN + 1];
    snprintf(rid, sizeof(rid), "%08x-%08x-%08x", (unsigned)time(NULL), r[0], r[1]);
    char msg[160];
    if (errcode == 40164) {
        /* WeChat names the caller's address, as IPv4 and as IPv6. */
        const char *ip = http_request_peer(req);
        snprintf(msg, sizeof(msg), "invalid ip %s ipv6 %s%s, not in whitelist", ip,
                 strchr(ip, ':') != NULL ? "" : "::ffff:", ip);
    } else {
        snprintf(msg, sizeof(msg), "%s", errmsg_for(errcode));
    }
    /* code2Session's messages have a comma before the rid, the /cgi-bin/ and /wxa/ APIs' not. */
    bool sns = strncmp(http_request_path(req), "/sns/", 5) == 0;
    char body[320];
    int n = snprintf(body, sizeof(body), "{\"errcode\":%ld,\"errmsg\":\"%s%s rid: %s\"}", errcode,
                     msg, sns ? "," : "", rid);
    mock_rid_record(m, req, rid, body);
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

static void answer_failure(struct mock *m, struct http_request *req,
                           const struct mock_directive *fail)
{
    switch (fail->kind) {
    case MOCK_ERR: mock_reply_errcode(m, req, fail->value); return;
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
    case MOCK_WRONGAPP:
    case MOCK_CCNUMBER: http_reply_reset(req); return;
    }
}

static void answer(struct mock_pending *p)
{
    if (p->fail != NULL)
        answer_failure(p->m, p->req, p->fail);
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

void mock_run_directives(struct mock_pending *p, long n)
{
    long delay = 0;
    for (size_t i = 0; i < p->code.nd; i++) {
        const struct mock_directive *d = &p->code.d[i];
        if (!mock_directive_applies(d, n))
            continue;
        if (d->kind == MOCK_DELAY)
            delay += d->value;
        else if (d->kind == MOCK_WRONGAPP)
            p->wrongapp = true;
        else if (d->kind == MOCK_CCNUMBER)
            p->ccnumber = true;
        else if (p->fail == NULL)
            p->fail = d;
    }
    if (p->fail != NULL && p->fail->kind == MOCK_HANG)
        delay += HANG_MS;
    if (delay == 0) {
        answer(p);
        return;
    }
    delay_start(&p->delay, http_request_loop(p->req), http_request_slot(p->req), (uint64_t)delay,
                on_pending_timer, p);
}

/* True when code (of kind) was first used more than the code lifetime ago. Its first use is
 * now if it was never seen. */
static bool code_expired(struct mock *m, const char *kind, const char *code)
{
    char buf[MOCK_CODE_MAX + 16];
    int len = snprintf(buf, sizeof(buf), "%s\n%s", kind, code);
    uint64_t key = codeset_key(buf, (size_t)len);
    uint64_t now = loop_clock_ms();
    /* Tenths of a second since the mock started, + 1 (0 is "never seen"). */
    uint32_t tick = (uint32_t)((now - m->start_ms) / 100) + 1;
    pthread_mutex_lock(&m->mu);
    uint32_t first = codeset_get(m->seen, key, now);
    if (first == 0)
        codeset_put(m->seen, key, tick, now);
    pthread_mutex_unlock(&m->mu);
    return first != 0 && (int64_t)(tick - first) > m->code_ttl_s * 10;
}

void mock_run_coded(struct mock *m, struct http_request *req, struct mock_app *app,
                    const char *kind, const char *code, mock_succeed_fn *succeed)
{
    struct mock_pending *p = http_request_alloc(req, sizeof(*p));
    if (p == NULL) {
        http_reply_reset(req);
        return;
    }
    /* A code is issued to one app (the one it names, else the first the mock knows): WeChat
     * answers 40029 to any other, as to a code past its lifetime. */
    if (!code_chars_ok(code) || mock_code_parse(code, &p->code) != 0 ||
        strcmp(p->code.app[0] != '\0' ? p->code.app : m->apps[0].appid, app->appid) != 0 ||
        code_expired(m, kind, code)) {
        mock_reply_errcode(m, req, 40029);
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
    mock_run_directives(p, n);
}

static void c2s_succeed(struct mock_pending *p)
{
    /* Spend the code now, at answer time, so concurrent requests with one code race as they
     * would at WeChat: the first answered wins, the others get 40163. */
    if (!mock_spend(p->m, p->m->used, p->code_text)) {
        mock_reply_errcode(p->m, p->req, 40163);
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

/* Any method: code2Session reads its query only (published code calls it by POST, and WeChat
 * answers; a POST with the arguments in a form body gets 41002, as they are not read). */
static void handle_jscode2session(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    struct mock_app *app = NULL;
    mock_count(m, MC_C2S);
    long ec = check_query(m, req, &app);
    if (ec != 0) {
        mock_reply_errcode(m, req, ec);
        return;
    }
    mock_run_coded(m, req, app, "login", http_request_query(req, "js_code"), c2s_succeed);
}

static void handle_stats(struct http_request *req, void *arg)
{
    struct mock *m = arg;
#define C(i) ((json_int_t)atomic_load(&m->counters[i]))
    json_t *o = json_pack(
        "{s:{s:I, s:I}, s:{s:I}, s:{s:I}, s:{s:I}, s:{s:I}, s:{s:I}}", "jscode2session", "requests",
        C(MC_C2S), "exchanges", C(MC_C2S_EXCHANGES), "stable_token", "requests", C(MC_STABLE_TOKEN),
        "token", "requests", C(MC_TOKEN), "getuserphonenumber", "requests", C(MC_PHONE),
        "checksession", "requests", C(MC_CHECKSESSION), "rid_get", "requests", C(MC_RID));
#undef C
    http_reply_json(req, 200, o);
}

/* Debug route, mock only: a user's current session_key, so tests can encrypt data the way a
 * phone would. WeChat has nothing like it, and wxlogin's own binary carries no such route. */
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
    {"POST", "/cgi-bin/openapi/rid/get", mock_handle_rid_get},
    {"GET", "/sns/jscode2session", handle_jscode2session},
    {"POST", "/mock/token/invalidate", mock_handle_invalidate_token},
    {"POST", "/mock/token/fail", mock_handle_token_fail},
    {"GET", "/mock/session_key", handle_session_key},
    {"GET", "/mock/stats", handle_stats},
};
#define NROUTES (sizeof(mock_routes) / sizeof(mock_routes[0]))

/*
 * Requests no route takes, answered as WeChat would: its APIs that read only their query take
 * any method; another API asked with the wrong method answers 43001/43002; an unknown path
 * under WeChat's prefixes answers 40066 (all with HTTP 200). The mock's own routes and other
 * paths keep JSON 404/405 errors.
 */
static void mock_fallback(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    const char *path = http_request_path(req);
    if (strcmp(path, "/sns/jscode2session") == 0) {
        handle_jscode2session(req, m);
        return;
    }
    if (strcmp(path, "/cgi-bin/token") == 0) {
        mock_handle_token(req, m);
        return;
    }
    const struct http_route *known = NULL;
    for (size_t i = 0; i < NROUTES && known == NULL; i++)
        if (strcmp(mock_routes[i].path, path) == 0)
            known = &mock_routes[i];
    if (strncmp(path, "/mock/", 6) == 0 || known == NULL) {
        if (strncmp(path, "/cgi-bin/", 9) == 0 || strncmp(path, "/sns/", 5) == 0 ||
            strncmp(path, "/wxa/", 5) == 0) {
            mock_reply_errcode(m, req, 40066);
            return;
        }
        if (known == NULL) {
            http_reply_error(req, 404, "not_found", "no such endpoint", "none");
            return;
        }
        http_add_header(req, "Allow", known->method);
        http_reply_error(req, 405, "method_not_allowed", "method not allowed on this endpoint",
                         "none");
        return;
    }
    mock_reply_errcode(m, req, strcmp(known->method, "GET") == 0 ? 43001 : 43002);
}

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
        .nroutes = NROUTES,
        .fallback = mock_fallback,
        .handler_arg = m,
    };
    char err[HTTP_ERR_MAX];
    struct http_server *srv = http_server_new(w->loop, &ho, err);
    if (srv == NULL) {
        fprintf(stderr, "wxlogin-mock: %s\n", err);
        return -1;
    }
    w->data = srv;
    m->port = http_server_port(srv);
    if (w->id == m->nworkers - 1) {
        char port[8];
        snprintf(port, sizeof(port), "%u", m->port);
        log_kv(LOG_WARN, "wxlogin-mock serving", "listen", m->listen, "port", port, NULL);
        if (m->port_file != NULL && portfile_write(m->port_file, m->port) != 0) {
            fprintf(stderr, "wxlogin-mock: cannot write the port file '%s': %s\n", m->port_file,
                    strerror(errno));
            return -1;
        }
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

const char mock_usage[] =
    "usage: wxlogin-mock [options]\n"
    "\n"
    "A local stand-in for WeChat's server API (api.weixin.qq.com) for development and tests.\n"
    "Point wxlogin's wechat_base at it. See docs/mock.md for codes, directives and routes.\n"
    "\n"
    "options:\n"
    "  --listen ADDR           address to listen on (default 127.0.0.1:2021; port 0 picks one\n"
    "                          and logs it)\n"
    "  --app APPID:SECRET      an app the mock knows; repeat for several (the first owns codes\n"
    "                          that name no app). Default wx1234567890abcdef with secret\n"
    "                          0123456789abcdef0123456789abcdef\n"
    "  --port-file FILE        once listening, write the bound port to FILE (atomically)\n"
    "  --threads N             worker threads (default: number of cores)\n"
    "  --log-level LEVEL       debug, info, warn (default), error\n"
    "\n"
    "time, for tests (WeChat's values are the defaults):\n"
    "  --token-ttl S           lifetime of every access token, seconds (7200)\n"
    "  --code-ttl S            lifetime of a login or phone code from its first use; later\n"
    "                          uses answer 40029 (300)\n"
    "  --no-early-renewal      stable_token hands back the same token until it expires,\n"
    "                          instead of a new one in its last 300 s (WeChat renews early)\n"
    "  --force-refresh-interval-s S\n"
    "                          force_refresh honoured at most every S seconds (30); 20 a\n"
    "                          day (Beijing time), then 45009\n"
    "  --token-delay-ms N      delay every access-token answer by N ms (0)\n"
    "\n"
    "  -h, --help              show this help\n"
    "  --version               show the version\n";

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

/* A whole decimal number in [lo, hi] into *out; -1 otherwise. */
static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

int mock_main(int argc, char **argv)
{
    struct mock m = {
        .listen = "127.0.0.1:2021",
        .token_ttl_s = 7200,
        .code_ttl_s = 300,
        .early_renewal = true,
        .force_interval_ms = 30000,
    };
    enum log_level level = LOG_WARN;
    long threads = 0, v;
    int rc = 2;
    pthread_mutex_init(&m.mu, NULL);

    for (int i = 0; i < argc;) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-early-renewal") == 0) {
            m.early_renewal = false;
            i++;
            continue;
        }
        i += 2; /* every other option takes a value */
        if (val == NULL) {
            if (strncmp(a, "--", 2) == 0 && strstr(mock_usage, a) != NULL)
                fprintf(stderr, "wxlogin-mock: option %s needs a value\n", a);
            else
                fprintf(stderr, "wxlogin-mock: unknown argument '%s'\n%s", a, mock_usage);
            goto out;
        }
        if (strcmp(a, "--listen") == 0) {
            m.listen = val;
        } else if (strcmp(a, "--port-file") == 0) {
            m.port_file = val;
        } else if (strcmp(a, "--app") == 0) {
            if (add_app(&m, val) != 0) {
                fprintf(stderr, "wxlogin-mock: --app wants APPID:SECRET\n");
                goto out;
            }
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_long(val, 1, 256, &threads) != 0) {
                fprintf(stderr, "wxlogin-mock: --threads wants 1 to 256\n");
                goto out;
            }
        } else if (strcmp(a, "--token-delay-ms") == 0) {
            if (parse_long(val, 0, 60000, &m.token_delay_ms) != 0) {
                fprintf(stderr, "wxlogin-mock: --token-delay-ms wants 0 to 60000\n");
                goto out;
            }
        } else if (strcmp(a, "--token-ttl") == 0) {
            if (parse_long(val, 1, 86400, &v) != 0) {
                fprintf(stderr, "wxlogin-mock: --token-ttl wants 1 to 86400 (seconds)\n");
                goto out;
            }
            m.token_ttl_s = v;
        } else if (strcmp(a, "--code-ttl") == 0) {
            if (parse_long(val, 1, 86400, &v) != 0) {
                fprintf(stderr, "wxlogin-mock: --code-ttl wants 1 to 86400 (seconds)\n");
                goto out;
            }
            m.code_ttl_s = v;
        } else if (strcmp(a, "--force-refresh-interval-s") == 0) {
            if (parse_long(val, 0, 86400, &v) != 0) {
                fprintf(stderr, "wxlogin-mock: --force-refresh-interval-s wants 0 to 86400\n");
                goto out;
            }
            m.force_interval_ms = v * 1000;
        } else if (strcmp(a, "--log-level") == 0) {
            if (log_level_parse(val, &level) != 0) {
                fprintf(stderr, "wxlogin-mock: --log-level wants debug|info|warn|error\n");
                goto out;
            }
        } else {
            fprintf(stderr, "wxlogin-mock: unknown argument '%s'\n%s", a, mock_usage);
            goto out;
        }
    }
    if (m.napps == 0)
        add_app(&m, "wx1234567890abcdef:0123456789abcdef0123456789abcdef");
    log_setup(level, LOG_FORMAT_TEXT);

    uint64_t memory_ms = (uint64_t)m.code_ttl_s * 1000;
    if (memory_ms < CODE_MEMORY_MS)
        memory_ms = CODE_MEMORY_MS;
    m.start_ms = loop_clock_ms();
    m.used = codeset_new(CODESET_SLOTS, memory_ms);
    m.attempts = codeset_new(CODESET_SLOTS, memory_ms);
    m.used_phone = codeset_new(CODESET_SLOTS, memory_ms);
    m.seen = codeset_new(CODESET_SLOTS, memory_ms);
    m.users = codeset_new(2 * SK_RING, UINT64_MAX / 2);
    m.sk_ring = calloc(SK_RING, sizeof(*m.sk_ring));
    m.rids = mock_rids_new();
    if (m.used == NULL || m.attempts == NULL || m.used_phone == NULL || m.seen == NULL ||
        m.users == NULL || m.sk_ring == NULL || m.rids == NULL) {
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
    codeset_free(m.seen);
    codeset_free(m.users);
    free(m.sk_ring);
    mock_rids_free(m.rids);
    for (size_t i = 0; i < m.napps; i++) {
        free(m.apps[i].appid);
        free(m.apps[i].secret);
    }
    pthread_mutex_destroy(&m.mu);
    return rc;
}
