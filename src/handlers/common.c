/* Replies and request parsing shared by several handlers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "handlers/handlers.h"
#include "handlers/request_body.h"
#include "limit/limit.h"
#include "log/log.h"
#include "metrics/metrics.h"
#include "util/ipaddr.h"
#include "wechat/api.h"
#include "wechat/errcode.h"

static const struct handlers_app *find_app(struct handlers_ctx *ctx, const char *appid, size_t len)
{
    for (size_t i = 0; i < ctx->napps; i++)
        if (strlen(ctx->apps[i].cred.appid) == len &&
            memcmp(ctx->apps[i].cred.appid, appid, len) == 0)
            return &ctx->apps[i];
    return NULL;
}

const struct handlers_app *handlers_app_by_id(struct handlers_ctx *ctx, const char *appid)
{
    return find_app(ctx, appid, strlen(appid));
}

bool handlers_referer_appid(const char *referer, const char **appid, size_t *len)
{
    static const char wechat_referer[] = "https://servicewechat.com/";
    *appid = NULL;
    *len = 0;
    if (referer == NULL || strncmp(referer, wechat_referer, sizeof(wechat_referer) - 1) != 0)
        return false;
    const char *id = referer + sizeof(wechat_referer) - 1;
    size_t n = strcspn(id, "/");
    if (wechat_id_valid(id, n)) {
        *appid = id;
        *len = n;
    }
    return true;
}

/* The app the request names (or the only one). *named: whether it names one at all. */
static const struct handlers_app *request_app(struct http_request *req, struct handlers_ctx *ctx,
                                              bool *named)
{
    const char *h = http_request_header(req, "X-WX-AppID");
    const char *ref = h == NULL ? http_request_header(req, "Referer") : NULL;
    const char *id;
    size_t n;
    *named = true;
    if (h != NULL)
        return find_app(ctx, h, strlen(h));
    if (handlers_referer_appid(ref, &id, &n))
        return id != NULL ? find_app(ctx, id, n) : NULL;
    *named = false;
    return ctx->napps == 1 ? &ctx->apps[0] : NULL;
}

static void reply_unknown_app(struct http_request *req, bool named)
{
    http_reply_error(req, 400, "unknown_app",
                     named ? "the request names an app this service does not serve"
                           : "say which app: X-WX-AppID header (several apps are served)",
                     "none");
}

const struct handlers_app *handlers_app(struct http_request *req, struct handlers_ctx *ctx)
{
    bool named;
    const struct handlers_app *app = request_app(req, ctx, &named);
    if (app == NULL)
        reply_unknown_app(req, named);
    else
        http_request_set_user(req, app->cred.appid, NULL);
    return app;
}

struct token_fetcher *handlers_fetcher(struct handlers_ctx *ctx, const struct handlers_app *app)
{
    return ctx->fetchers[app - ctx->apps];
}

void handlers_reply_store_error(struct http_request *req, const char *op)
{
    log_kv(LOG_ERROR, "store failed", "op", op, "request_id", http_request_id(req), NULL);
    http_reply_error(req, 503, "store_unavailable", "the session store is unavailable", "retry");
}

void handlers_reply_invalid_token(struct http_request *req, const char *why)
{
    http_add_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    http_reply_error(req, 401, "invalid_token", why, "relogin");
}

void handlers_reply_internal(struct http_request *req, const char *what)
{
    log_kv(LOG_ERROR, "cannot serve the request", "detail", what, "request_id",
           http_request_id(req), NULL);
    http_reply_error(req, 503, "internal", what, "retry");
}

void handlers_reply_mapped(struct http_request *req, const struct wechat_http_error *e)
{
    if (e->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", e->retry_after);
        http_add_header(req, "Retry-After", ra);
    }
    http_reply_error_num(req, e->status, e->error, e->message, e->action,
                         e->has_errcode ? "wx_errcode" : NULL, e->errcode);
}

void handlers_reply_wechat(struct http_request *req, enum wechat_api api,
                           const struct wechat_reply *r)
{
    struct wechat_http_error e;
    wechat_error_map(api, r->status, r->errcode, &e);
    /* Numbers as numbers; a field that does not apply is left out (the optional ones last). */
    struct log_field f[9] = {
        LOG_STR("api", wechat_api_name(api)),
        LOG_STR("error", e.error),
        LOG_INT("status", e.status),
        LOG_INT("attempts", r->attempts),
        LOG_STR("wx_rid", r->rid[0] ? r->rid : NULL),
        LOG_STR("detail", r->detail),
        LOG_STR("request_id", http_request_id(req)),
    };
    size_t n = 7;
    if (e.has_errcode)
        f[n++] = LOG_INT("wx_errcode", r->errcode);
    if (r->http_status != 0)
        f[n++] = LOG_INT("upstream_http_status", r->http_status);
    log_fields(e.config ? LOG_ERROR : LOG_WARN,
               e.config ? "WeChat rejected the service's configuration: check appid, secret and "
                          "the API IP whitelist"
                        : "WeChat call failed",
               f, n);
    handlers_reply_mapped(req, &e);
}

const char *handlers_bearer_credentials(const char *header)
{
    /* RFC 6750: the scheme is case-insensitive; one or more spaces follow it. */
    if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
        return NULL;
    header += 7;
    while (*header == ' ')
        header++;
    return header;
}

const char *handlers_bearer_parse(const char *header, const char **why)
{
    const char *t = handlers_bearer_credentials(header);
    if (t == NULL) {
        *why = header == NULL ? "missing Authorization: Bearer token"
                              : "Authorization must use the Bearer scheme";
        return NULL;
    }
    if (!crypto_token_well_formed(t)) {
        *why = "malformed token";
        return NULL;
    }
    return t;
}

const char *handlers_bearer_token(struct http_request *req, const char **why)
{
    return handlers_bearer_parse(http_request_header(req, "Authorization"), why);
}

int handlers_bearer_hash(struct http_request *req, uint8_t hash[CRYPTO_HASH_LEN], const char **why)
{
    const char *t = handlers_bearer_token(req, why);
    if (t == NULL)
        return -1;
    crypto_sha256(t, CRYPTO_TOKEN_LEN, hash);
    return 0;
}

void handlers_reply_banned(struct http_request *req)
{
    http_reply_error(req, 403, "user_banned", "this user is banned from this app", "none");
}

bool handlers_authenticate(struct http_request *req, struct handlers_ctx *ctx,
                           const struct handlers_app **app, uint8_t hash[CRYPTO_HASH_LEN])
{
    const char *why;
    bool named;
    *app = request_app(req, ctx, &named);
    if (*app == NULL && named) {
        reply_unknown_app(req, true);
        return false;
    }
    if (*app != NULL)
        http_request_set_user(req, (*app)->cred.appid, NULL);
    /* Several apps and none named: the token says which (the store looks it up). */
    if (handlers_bearer_hash(req, hash, &why) != 0) {
        handlers_reply_invalid_token(req, why);
        return false;
    }
    return true;
}

void handlers_reply_limited(struct http_request *req, enum handlers_limit which, uint64_t wait_us)
{
    static const struct {
        const char *name, *message;
    } limits[] = {
        [HANDLERS_LIMIT_ADDRESS] = {"address", "too many requests from this address; retry after "
                                               "Retry-After seconds"},
        [HANDLERS_LIMIT_OPENID] = {"openid", "too many logins of this user; log in again after "
                                             "Retry-After seconds"},
        [HANDLERS_LIMIT_WECHAT] = {"wechat", "this app's calls to WeChat are at the service's "
                                             "ceiling; retry after Retry-After seconds"},
    };
    char ra[16];
    snprintf(ra, sizeof(ra), "%u", limit_retry_after_s(wait_us));
    metrics_rate_limited(which == HANDLERS_LIMIT_OPENID   ? METRICS_LIMIT_OPENID
                         : which == HANDLERS_LIMIT_WECHAT ? METRICS_LIMIT_WECHAT
                                                          : METRICS_LIMIT_ADDRESS);
    const struct log_field f[] = {
        LOG_STR("limit", limits[which].name),
        LOG_INT("retry_after", limit_retry_after_s(wait_us)),
        LOG_STR("path", http_request_path(req)),
        LOG_STR("request_id", http_request_id(req)),
    };
    log_fields(LOG_DEBUG, "rate limited", f, sizeof(f) / sizeof(f[0]));
    http_add_header(req, "Retry-After", ra);
    http_reply_error(req, 429, "rate_limited", limits[which].message, "retry");
}

/* A per-address step in the request's memory: the store may answer later. */
struct limit_step {
    struct http_request *req;
    struct handlers_ctx *ctx;
    http_handler_fn *next;
};

static void on_client_token(void *arg, int status, uint64_t wait_us)
{
    struct limit_step *ls = arg;
    if (status != STORE_OK)
        handlers_reply_store_error(ls->req, "rate_limit");
    else if (wait_us > 0)
        handlers_reply_limited(ls->req, HANDLERS_LIMIT_ADDRESS, wait_us);
    else
        ls->next(ls->req, ls->ctx);
}

void handlers_limit_client(struct http_request *req, struct handlers_ctx *ctx, struct limit *l,
                           http_handler_fn *next)
{
    if (l == NULL) {
        next(req, ctx);
        return;
    }
    /* Buckets are per app, so the store's keys belong to apps. A request that names no app we
     * serve is counted under none: what it is for is for next to decide (400 unknown_app, or
     * the app its bearer token belongs to). */
    bool named;
    const struct handlers_app *app = request_app(req, ctx, &named);
    struct ipaddr a;
    memset(&a, 0, sizeof(a)); /* an unknown address (not on TCP): one bucket for them all */
    if (http_request_client_addr(req, &a) && !ipaddr_is_v4(&a))
        memset(a.b + 8, 0, 8); /* its /64 */
    struct limit_step *ls = http_request_alloc(req, sizeof(*ls));
    if (ls == NULL) {
        handlers_reply_internal(req, "out of memory");
        return;
    }
    ls->req = req;
    ls->ctx = ctx;
    ls->next = next;
    limit_take(l, ctx->store, http_request_slot(req), app != NULL ? app->cred.appid : "", a.b,
               sizeof(a.b), on_client_token, ls);
}

json_t *handlers_body_object(struct http_request *req, bool optional, bool *answered)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    json_t *j = NULL;
    const char *why;
    int rc = request_body_object(body, len, optional, &j, &why); /* sets why: call it first */
    *answered = handlers_reply_bad_body(req, rc, why);
    return j;
}

bool handlers_reply_bad_body(struct http_request *req, int rc, const char *why)
{
    if (rc == -ENOMEM)
        handlers_reply_internal(req, why); /* the body may well be good */
    else if (rc != 0)
        http_reply_error(req, 400, "bad_request", why, "none");
    return rc != 0;
}
