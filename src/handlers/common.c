/* Replies and request parsing shared by several handlers. */
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "handlers/handlers.h"
#include "log/log.h"

static void store_call_abandon(void *arg)
{
    struct store_call *sc = arg;
    sc->req = NULL;
}

void store_call_begin(struct store_call *sc, struct http_request *req)
{
    sc->req = req;
    http_request_on_cancel(req, store_call_abandon, sc);
}

struct http_request *store_call_end(struct store_call *sc)
{
    if (sc->req != NULL)
        http_request_on_cancel(sc->req, NULL, NULL);
    return sc->req;
}

static const struct handlers_app *find_app(struct handlers_ctx *ctx, const char *appid, size_t len)
{
    for (size_t i = 0; i < ctx->napps; i++)
        if (strlen(ctx->apps[i].appid) == len && memcmp(ctx->apps[i].appid, appid, len) == 0)
            return &ctx->apps[i];
    return NULL;
}

const struct handlers_app *handlers_app(struct http_request *req, struct handlers_ctx *ctx)
{
    static const char wechat_referer[] = "https://servicewechat.com/";
    const struct handlers_app *app = NULL;
    const char *h = http_request_header(req, "X-WX-AppID");
    const char *ref = http_request_header(req, "Referer");
    if (h != NULL) {
        app = find_app(ctx, h, strlen(h));
    } else if (ref != NULL && strncmp(ref, wechat_referer, sizeof(wechat_referer) - 1) == 0) {
        const char *id = ref + sizeof(wechat_referer) - 1;
        app = find_app(ctx, id, strcspn(id, "/"));
    } else if (ctx->napps == 1) {
        app = &ctx->apps[0];
    }
    if (app == NULL)
        http_reply_error(req, 400, "unknown_app",
                         h != NULL || ref != NULL
                             ? "the request names an app this service does not serve"
                             : "say which app: X-WX-AppID header (several apps are served)",
                         "none");
    return app;
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

int handlers_bearer_hash(struct http_request *req, uint8_t hash[CRYPTO_HASH_LEN], const char **why)
{
    const char *h = http_request_header(req, "Authorization");
    if (h == NULL) {
        *why = "missing Authorization: Bearer token";
        return -1;
    }
    /* RFC 6750: the scheme is case-insensitive; one or more spaces follow it. */
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        *why = "Authorization must use the Bearer scheme";
        return -1;
    }
    h += 7;
    while (*h == ' ')
        h++;
    if (!crypto_token_well_formed(h)) {
        *why = "malformed token";
        return -1;
    }
    crypto_sha256(h, CRYPTO_TOKEN_LEN, hash);
    return 0;
}

bool handlers_authenticate(struct http_request *req, struct handlers_ctx *ctx,
                           const struct handlers_app **app, uint8_t hash[CRYPTO_HASH_LEN])
{
    const char *why;
    *app = handlers_app(req, ctx);
    if (*app == NULL)
        return false;
    if (handlers_bearer_hash(req, hash, &why) != 0) {
        handlers_reply_invalid_token(req, why);
        return false;
    }
    return true;
}
