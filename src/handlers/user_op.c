#include "handlers/user_op.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "handlers/request_body.h"
#include "limit/limit.h"
#include "log/log.h"
#include "wechat/errcode.h"

struct user_op *user_op_new(struct http_request *req, struct handlers_ctx *ctx)
{
    struct user_op *op = http_request_alloc(req, sizeof(*op));
    if (op == NULL) {
        handlers_reply_internal(req, "out of memory");
        return NULL;
    }
    op->req = req;
    op->ctx = ctx;
    return op;
}

int handlers_parse_fields(struct http_request *req, const char *const *names, const char **out)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    json_t *root;
    const char *vals[REQUEST_BODY_FIELDS_MAX];
    char why[REQUEST_BODY_WHY_MAX];
    int rc = request_body_fields(body, len, names, &root, vals, why);
    if (handlers_reply_bad_body(req, rc, why))
        return -1;
    for (size_t i = 0; names[i] != NULL && rc == 0; i++) {
        size_t n = strlen(vals[i]);
        char *copy = http_request_alloc(req, n + 1);
        if (copy == NULL) {
            handlers_reply_internal(req, "out of memory");
            rc = -1;
        } else {
            memcpy(copy, vals[i], n + 1);
            out[i] = copy;
        }
    }
    json_decref(root);
    return rc;
}

/* ---- user_op_load ---- */

static void on_user(void *arg, int status, const struct store_user *u)
{
    struct user_op *op = arg;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(op->req, "get_user");
        return;
    }
    if (status != STORE_OK) {
        /* No usable key (e.g. the master key changed): only a new login helps. */
        handlers_reply_invalid_token(op->req, "the session has no usable session key");
        return;
    }
    memcpy(op->sk, u->session_key, sizeof(op->sk));
    int64_t now = (int64_t)time(NULL);
    if (u->prev_session_key[0] != '\0' &&
        now - u->prev_replaced_at <= op->ctx->cfg->session_key_grace)
        memcpy(op->prev_sk, u->prev_session_key, sizeof(op->prev_sk));
    op->next(op);
}

static void on_session(void *arg, int status, const struct store_session *s)
{
    struct user_op *op = arg;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(op->req, "get_session");
        return;
    }
    if (status == STORE_OK && op->app == NULL) /* named by the token */
        op->app = handlers_app_by_id(op->ctx, s->appid);
    if (status != STORE_OK || op->app == NULL) {
        handlers_reply_invalid_token(op->req, "unknown, expired or logged-out token");
        return;
    }
    http_request_set_user(op->req, s->appid, s->openid);
    op->session = *s;
    store_get_user(op->ctx->store, http_request_slot(op->req), s->appid, s->openid, on_user, op);
}

void user_op_load(struct user_op *op, user_op_next_fn *next)
{
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(op->req, op->ctx, &op->app, hash))
        return;
    op->next = next;
    store_get_session(op->ctx->store, http_request_slot(op->req),
                      op->app != NULL ? op->app->cred.appid : NULL, hash, (int64_t)time(NULL),
                      on_session, op);
}

/* ---- the access token ---- */

void handlers_reply_token_error(struct http_request *req, const struct token_result *res)
{
    if (res->status == TOKEN_NOMEM) {
        handlers_reply_internal(req, "out of memory");
        return;
    }
    if (res->status == TOKEN_ABORTED) {
        log_kv(LOG_WARN, "no access token", "reason", "aborted", "request_id", http_request_id(req),
               NULL);
        http_reply_error(req, 503, "shutting_down", "the service is shutting down", "retry");
        return;
    }
    struct wechat_http_error e;
    /* Throttled: the token WeChat keeps handing back is the one it rejects; like a fetch that
     * failed for now. */
    enum wechat_status ws = res->status == TOKEN_FAILED ? res->wstatus : WECHAT_CONNECT;
    wechat_error_map(WECHAT_API_TOKEN, ws, res->errcode, &e);
    /* The cause in words (the errcode table's message: "the service's IP is not whitelisted
     * at WeChat", "WeChat's daily quota...") with WeChat's rid, and for 40164 the address to
     * whitelist. */
    bool failed = res->status == TOKEN_FAILED;
    struct log_field f[7] = {
        LOG_STR("cause", e.message),
        LOG_STR("wx_rid", failed && res->rid[0] ? res->rid : NULL),
        LOG_STR("caller_ip", failed && res->caller_ip[0] ? res->caller_ip : NULL),
        LOG_STR("reason", res->status == TOKEN_THROTTLED
                              ? "throttled: WeChat keeps returning a rejected token"
                              : "fetch failed"),
        LOG_STR("request_id", http_request_id(req)),
    };
    size_t n = 5;
    if (e.has_errcode)
        f[n++] = LOG_INT("wx_errcode", res->errcode);
    log_fields(e.config ? LOG_ERROR : LOG_WARN,
               e.config ? "WeChat refused to issue an access token" : "no access token", f, n);
    handlers_reply_mapped(req, &e);
}

static void on_token(void *arg, const struct token_result *res)
{
    struct user_op *op = arg;
    if (res->status != TOKEN_OK) {
        handlers_reply_token_error(op->req, res);
        return;
    }
    memcpy(op->access_token, res->token, sizeof(op->access_token));
    if (op->call(op, op->access_token) != 0)
        handlers_reply_internal(op->req, "cannot start the WeChat call");
}

static void get_token(struct user_op *op)
{
    struct token_result res;
    if (token_get(op->app->token, handlers_fetcher(op->ctx, op->app), http_request_slot(op->req), 0,
                  on_token, op, &res) == TOKEN_READY)
        on_token(op, &res);
    crypto_wipe(&res, sizeof(res));
}

static void on_wechat_token(void *arg, int status, uint64_t wait_us)
{
    struct user_op *op = arg;
    if (status != STORE_OK)
        handlers_reply_store_error(op->req, "rate_limit");
    else if (wait_us > 0)
        handlers_reply_limited(op->req, HANDLERS_LIMIT_WECHAT, wait_us);
    else
        get_token(op);
}

void user_op_with_token(struct user_op *op, user_op_call_fn *call)
{
    op->call = call;
    struct limit *l = op->ctx->limits->wechat;
    if (l == NULL) {
        get_token(op);
        return;
    }
    /* The app's ceiling on calls to WeChat, before anything goes there (the token fetch is not
     * counted: one at a time per app, with its own backoff). */
    limit_take(l, op->ctx->store, http_request_slot(op->req), op->app->cred.appid, "", 0,
               on_wechat_token, op);
}

bool user_op_rejected(struct user_op *op, enum wechat_api api, const struct wechat_reply *r)
{
    struct token *t = op->app->token;
    if (r->status != WECHAT_ERRCODE ||
        !(wechat_errcode_flags(api, r->errcode) & WECHAT_EC_TOKEN_REJECTED)) {
        token_accepted(t, op->access_token);
        return false;
    }
    /* Drop exactly the token that failed; a newer one fetched meanwhile stays. */
    token_invalidate(t, handlers_fetcher(op->ctx, op->app), op->access_token);
    if (op->token_attempt == 0) {
        op->token_attempt = 1;
        user_op_with_token(op, op->call);
        return true;
    }
    /* A freshly fetched token rejected again: stop here rather than burn the quota. */
    log_kv(LOG_WARN, "WeChat rejected a freshly fetched access token", "request_id",
           http_request_id(op->req), NULL);
    handlers_reply_wechat(op->req, api, r);
    return true;
}
