/*
 * Admin routes for internal services, which must get the access token from us instead of
 * fetching their own (which would invalidate ours):
 *   GET  /admin/v1/access-token                 → {"access_token", "expires_in"}
 *   POST /admin/v1/access-token/refresh[?force=true]
 * Both require "Authorization: Bearer <admin_token>". Without admin_token configured they
 * answer 404, as if they did not exist. They belong on a private network (docs/operations.md).
 */
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config/config.h"
#include "handlers/user_op.h"
#include "log/log.h"
#include "util/jsonw.h"

/* Compares hashes so neither the content nor the length of the admin token leaks through
 * timing. */
static bool admin_authorized(struct http_request *req, const char *admin_token)
{
    const char *h = http_request_header(req, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    uint8_t a[CRYPTO_HASH_LEN], b[CRYPTO_HASH_LEN];
    crypto_sha256(h, strlen(h), a);
    crypto_sha256(admin_token, strlen(admin_token), b);
    return crypto_equal(a, b, CRYPTO_HASH_LEN);
}

static void on_token(void *arg, const struct token_result *res)
{
    struct http_request *req = arg;
    if (res->status != TOKEN_OK) {
        handlers_reply_token_error(req, res);
        return;
    }
    int64_t left = res->expires_at - (int64_t)time(NULL);
    char buf[WECHAT_TOKEN_MAX * 2 + 64];
    struct jsonw w;
    jsonw_begin(&w, buf, sizeof(buf));
    jsonw_str(&w, "access_token", res->token);
    jsonw_num(&w, "expires_in", left > 0 ? left : 0);
    http_reply_jsonw(req, 200, &w);
    crypto_wipe(buf, sizeof(buf));
}

static void get_token(struct http_request *req, struct handlers_ctx *ctx, unsigned flags)
{
    if (ctx->cfg->admin_token == NULL) {
        http_reply_error(req, 404, "not_found", "no such endpoint", "none");
        return;
    }
    if (!admin_authorized(req, ctx->cfg->admin_token)) {
        log_kv(LOG_WARN, "admin route refused", "path", http_request_path(req), "request_id",
               http_request_id(req), NULL);
        http_add_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        http_reply_error(req, 401, "unauthorized", "admin token required", "none");
        return;
    }
    const struct handlers_app *app = handlers_app(req, ctx);
    if (app == NULL)
        return;
    struct token_result res;
    if (token_get(app->token, handlers_fetcher(ctx, app), http_request_slot(req), flags, on_token,
                  req, &res) == TOKEN_READY)
        on_token(req, &res);
    crypto_wipe(&res, sizeof(res));
}

void handle_admin_token(struct http_request *req, void *arg)
{
    get_token(req, arg, 0);
}

void handle_admin_token_refresh(struct http_request *req, void *arg)
{
    const char *force = http_request_query(req, "force");
    unsigned flags = TOKEN_DROP;
    if (force != NULL && strcmp(force, "true") == 0)
        flags |= TOKEN_FORCE;
    get_token(req, arg, flags);
}
