/*
 * Admin routes for internal services, which must get the access token from us instead of
 * fetching their own (which would invalidate ours):
 *   GET  /admin/v1/access-token                 → {"access_token", "expires_in"}
 *   POST /admin/v1/access-token/refresh[?force=true]
 * Both require "Authorization: Bearer <admin_token>". Without admin_token configured they
 * answer 404, as if they did not exist. They belong on a private network (docs/operations.md).
 *
 * Guessing is capped per client address (util/lockout.h): after admin_max_failures failed
 * attempts within admin_lockout_s, the address is answered 429 too_many_attempts, with
 * Retry-After and without its token being looked at, until admin_lockout_s has passed. The
 * address is the TCP peer: behind a proxy, every client of that proxy shares one count.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "handlers/request_body.h"
#include "handlers/user_op.h"
#include "log/log.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "util/jsonw.h"
#include "util/lockout.h"

/* Compares hashes so neither the content nor the length of the admin token leaks through
 * timing. */
static bool admin_authorized(struct http_request *req, const char *admin_token)
{
    const char *h = handlers_bearer_credentials(http_request_header(req, "Authorization"));
    if (h == NULL)
        return false;
    uint8_t a[CRYPTO_HASH_LEN], b[CRYPTO_HASH_LEN];
    crypto_sha256(h, strlen(h), a);
    crypto_sha256(admin_token, strlen(admin_token), b);
    return crypto_equal(a, b, CRYPTO_HASH_LEN);
}

struct admin_attempt {
    struct http_request *req;
    const char *admin_token;
};

static bool check_attempt(void *arg)
{
    const struct admin_attempt *a = arg;
    return admin_authorized(a->req, a->admin_token);
}

/* The audit line of a refused admin call (its client address, the peer the lockout counts). */
static void audit_refused(struct http_request *req, const char *reason)
{
    if (!log_enabled(LOG_INFO))
        return;
    const char *auth = http_request_header(req, "Authorization");
    const struct log_field f[] = {
        LOG_STR("reason", reason != NULL ? reason
                          : auth == NULL ? "missing_token"
                                         : "wrong_token"),
        LOG_STR("peer", http_request_peer(req)),
        LOG_STR("route", http_request_path(req)),
        LOG_STR("request_id", http_request_id(req)),
    };
    log_audit("admin_refused", http_request_client(req), f, sizeof(f) / sizeof(f[0]));
}

/* The audit line of an admin action on an app's access token (never the token). */
static void audit_token(struct http_request *req, const char *event, const struct handlers_app *app,
                        const struct log_field *more, size_t n)
{
    if (!log_enabled(LOG_INFO))
        return;
    struct log_field f[4] = {LOG_STR("app", app->cred.appid)};
    size_t k = 1;
    for (size_t i = 0; i < n && k < 3; i++)
        f[k++] = more[i];
    f[k++] = LOG_STR("request_id", http_request_id(req));
    log_audit(event, http_request_client(req), f, k);
}

/*
 * True when the request carries the admin token. Otherwise answers 401, or 429 while its address
 * is locked out (the token is then not looked at, so a locked-out guesser learns nothing). The
 * warn lines come once per address and window (its first failure, its lockout), not per guess.
 */
static bool admin_allowed(struct http_request *req, struct handlers_ctx *ctx)
{
    const char *peer = http_request_peer(req);
    struct admin_attempt a = {.req = req, .admin_token = ctx->cfg->admin_token};
    uint64_t retry_ms = 0;
    enum lockout_outcome o =
        lockout_attempt(ctx->admin_lockout, peer, loop_clock_ms(), check_attempt, &a, &retry_ms);
    char num[24];
    switch (o) {
    case LOCKOUT_PASSED: return true;
    case LOCKOUT_REFUSED:
        log_kv(LOG_DEBUG, "admin route refused: address locked out", "peer", peer, "path",
               http_request_path(req), "request_id", http_request_id(req), NULL);
        snprintf(num, sizeof(num), "%" PRIu64, (retry_ms + 999) / 1000);
        metrics_rate_limited(METRICS_LIMIT_ADMIN);
        http_add_header(req, "Retry-After", num);
        audit_refused(req, "locked_out");
        http_reply_error(req, 429, "too_many_attempts",
                         "too many failed admin attempts from this address; retry after "
                         "Retry-After seconds",
                         "retry");
        return false;
    case LOCKOUT_FAILED_LOCK: {
        const struct log_field f[] = {
            LOG_STR("peer", peer),
            LOG_INT("failures", ctx->cfg->admin_max_failures),
            LOG_INT("lockout_s", ctx->cfg->admin_lockout_s),
            LOG_STR("path", http_request_path(req)),
            LOG_STR("request_id", http_request_id(req)),
        };
        log_fields(LOG_WARN, "admin route refused; address locked out", f,
                   sizeof(f) / sizeof(f[0]));
        break;
    }
    case LOCKOUT_FAILED_FIRST:
        log_kv(LOG_WARN, "admin route refused", "peer", peer, "path", http_request_path(req),
               "request_id", http_request_id(req), NULL);
        break;
    case LOCKOUT_FAILED:
        log_kv(LOG_DEBUG, "admin route refused", "peer", peer, "path", http_request_path(req),
               "request_id", http_request_id(req), NULL);
        break;
    }
    audit_refused(req, NULL);
    http_add_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    http_reply_error(req, 401, "unauthorized", "admin token required", "none");
    return false;
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

bool handlers_admin_check(struct http_request *req, struct handlers_ctx *ctx)
{
    if (ctx->cfg->admin_token == NULL) {
        http_reply_error(req, 404, "not_found", "no such endpoint", "none");
        return false;
    }
    return admin_allowed(req, ctx);
}

/* What the access-token routes start with: the admin check, then the app. NULL when the request
 * was answered. */
static const struct handlers_app *admin_app(struct http_request *req, struct handlers_ctx *ctx)
{
    return handlers_admin_check(req, ctx) ? handlers_app(req, ctx) : NULL;
}

/* Answers the app's current token (fetched first when there is none). */
static void reply_token(struct http_request *req, struct handlers_ctx *ctx,
                        const struct handlers_app *app, unsigned flags)
{
    struct token_result res;
    if (token_get(app->token, handlers_fetcher(ctx, app), http_request_slot(req), flags, on_token,
                  req, &res) == TOKEN_READY)
        on_token(req, &res);
    crypto_wipe(&res, sizeof(res));
}

static void get_token(struct http_request *req, struct handlers_ctx *ctx, unsigned flags)
{
    const struct handlers_app *app = admin_app(req, ctx);
    if (app != NULL)
        reply_token(req, ctx, app, flags);
}

void handle_admin_token(struct http_request *req, void *arg)
{
    get_token(req, arg, 0);
}

/*
 * POST /admin/v1/access-token/invalidate {"access_token": "<the token WeChat rejected>"}: a
 * service that got 40001/42001 with the central token reports it. The cached token is dropped
 * only if it is still the one reported (compare-and-drop, here and, on Redis, for every
 * instance), and the answer is the current token, fetched once for every caller: N services that
 * report the same failure cause one fetch, and a report that arrives after the refresh changes
 * nothing.
 */
void handle_admin_token_invalidate(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const struct handlers_app *app = admin_app(req, ctx);
    if (app == NULL)
        return;
    static const char *const fields[] = {"access_token", NULL};
    const char *bad[1];
    if (handlers_parse_fields(req, fields, bad) != 0)
        return;
    const char *why;
    if (request_body_access_token_check(bad[0], &why) != 0) {
        http_reply_error(req, 400, "bad_request", why, "none");
        return;
    }
    token_invalidate(app->token, handlers_fetcher(ctx, app), bad[0]);
    crypto_wipe((char *)bad[0], strlen(bad[0]));
    audit_token(req, "access_token_invalidate", app, NULL, 0);
    reply_token(req, ctx, app, 0);
}

void handle_admin_token_refresh(struct http_request *req, void *arg)
{
    struct handlers_ctx *ctx = arg;
    const char *force = http_request_query(req, "force");
    unsigned flags = TOKEN_DROP;
    if (force != NULL && strcmp(force, "true") == 0)
        flags |= TOKEN_FORCE;
    const struct handlers_app *app = admin_app(req, ctx);
    if (app == NULL)
        return;
    const struct log_field f[] = {LOG_BOOL("force", (flags & TOKEN_FORCE) != 0)};
    audit_token(req, "access_token_refresh", app, f, 1);
    reply_token(req, ctx, app, flags);
}
