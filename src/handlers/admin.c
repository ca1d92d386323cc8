/*
 * Admin routes for internal services, which must get the access token from us instead of
 * fetching their own (which would invalidate ours):
 *   GET  /admin/v1/access-token                 → {"access_token", "expires_in"}
 *   POST /admin/v1/access-token/refresh[?force=true]
 * Both require "Authorization: Bearer <admin_token>". Without admin_token configured they
 * answer 404, as if they did not exist. They belong on a private network (docs/operations.md).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config/config.h"
#include "handlers/user_op.h"
#include "session/session.h"
#include "log/log.h"

struct admin_op {
    struct http_request *req;
    struct handlers_ctx *ctx;
    const struct handlers_app *app;
    struct wechat_token_waiter *waiter;
};

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

static void reply_token(struct http_request *req, const struct wechat_token_result *res)
{
    if (res->status != WECHAT_TOKEN_OK) {
        handlers_reply_token_error(req, res);
        return;
    }
    int64_t left = res->expires_at - (int64_t)time(NULL);
    http_reply_json(req, 200,
                    json_pack("{s:s, s:I}", "access_token", res->token, "expires_in",
                              (json_int_t)(left > 0 ? left : 0)));
}

static void on_token(const struct wechat_token_result *res, void *arg)
{
    struct admin_op *op = arg;
    http_request_on_cancel(op->req, NULL, NULL);
    reply_token(op->req, res);
    free(op);
}

static void on_cancel(void *arg)
{
    struct admin_op *op = arg;
    wechat_token_cancel(op->app->token, op->waiter);
    free(op);
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
    struct admin_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return;
    }
    op->req = req;
    op->ctx = ctx;
    op->app = app;
    struct wechat_token_result res;
    if (wechat_token_get(app->token, ctx->wx, ctx->store->ops->token_share, ctx->store,
                         http_request_loop(req), flags, on_token, op, &res,
                         &op->waiter) == WECHAT_TOKEN_READY) {
        reply_token(req, &res);
        free(op);
    } else {
        http_request_on_cancel(req, on_cancel, op);
    }
    crypto_wipe(&res, sizeof(res));
}

void handle_admin_token(struct http_request *req, void *arg)
{
    get_token(req, arg, 0);
}

void handle_admin_token_refresh(struct http_request *req, void *arg)
{
    const char *force = http_request_query(req, "force");
    unsigned flags = WECHAT_TOKEN_DROP;
    if (force != NULL && strcmp(force, "true") == 0)
        flags |= WECHAT_TOKEN_FORCE;
    get_token(req, arg, flags);
}
