#include "handlers/user_op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "handlers/upstream_error.h"
#include "log/log.h"

struct user_op *user_op_new(struct http_request *req, struct handlers_ctx *ctx, json_t *in)
{
    struct user_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        json_decref(in);
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return NULL;
    }
    op->req = req;
    op->ctx = ctx;
    op->in = in;
    return op;
}

void user_op_free(struct user_op *op)
{
    if (op == NULL)
        return;
    json_decref(op->in);
    crypto_wipe(op, sizeof(*op));
    free(op);
}

json_t *handlers_parse_fields(struct http_request *req, const char *const *names)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t jerr;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    char msg[96];
    if (o == NULL || !json_is_object(o)) {
        json_decref(o);
        http_reply_error(req, 400, "bad_request",
                         o == NULL ? "body is not valid JSON" : "body must be a JSON object",
                         "none");
        return NULL;
    }
    for (size_t i = 0; names[i] != NULL; i++) {
        const json_t *v = json_object_get(o, names[i]);
        if (v == NULL || !json_is_string(v)) {
            snprintf(msg, sizeof(msg), "%s is required and must be a string", names[i]);
            json_decref(o);
            http_reply_error(req, 400, "bad_request", msg, "none");
            return NULL;
        }
    }
    return o;
}

/* ---- user_op_load ---- */

static void reply_and_free(struct user_op *op, unsigned status, const char *slug, const char *msg,
                           const char *action)
{
    http_reply_error(op->req, status, slug, msg, action);
    user_op_free(op);
}

/* Opens a sealed session_key into out (a NUL-terminated string). */
static bool open_key(const struct user_op *op, const uint8_t *sealed, size_t len,
                     char out[USER_OP_KEY_MAX + 1])
{
    char aad[2 * SESSION_ID_MAX + 2];
    uint8_t pt[SESSION_SEALED_MAX];
    int aadlen = snprintf(aad, sizeof(aad), "%s\n%s", op->rec.appid, op->rec.openid);
    if (len > sizeof(pt) || len < CRYPTO_SEAL_OVERHEAD)
        return false;
    int n = crypto_open(op->ctx->master_key, aad, (size_t)aadlen, sealed, len, pt);
    if (n <= 0 || n > USER_OP_KEY_MAX) {
        crypto_wipe(pt, sizeof(pt));
        return false;
    }
    memcpy(out, pt, (size_t)n);
    out[n] = '\0';
    crypto_wipe(pt, sizeof(pt));
    return true;
}

static void on_user(int status, const struct session_user *u, void *arg)
{
    struct user_op *op = arg;
    if (store_call_end(&op->sc) == NULL) {
        user_op_free(op);
        return;
    }
    if (status == SESSION_ERROR) {
        handlers_reply_store_error(op->req, "get_user");
        user_op_free(op);
        return;
    }
    if (status != SESSION_OK || !open_key(op, u->sealed_key, u->sealed_len, op->sk)) {
        /* No usable key (e.g. the master key changed): only a new login helps. */
        handlers_reply_invalid_token(op->req, "the session has no usable session key");
        user_op_free(op);
        return;
    }
    int64_t now = (int64_t)time(NULL);
    if (u->prev_len > 0 && now - u->prev_replaced_at <= op->ctx->cfg->session_key_grace &&
        !open_key(op, u->prev_sealed_key, u->prev_len, op->prev_sk))
        op->prev_sk[0] = '\0';
    op->next(op);
}

static void on_session(int status, const struct session_record *rec, void *arg)
{
    struct user_op *op = arg;
    if (store_call_end(&op->sc) == NULL) {
        user_op_free(op);
        return;
    }
    if (status == SESSION_ERROR) {
        handlers_reply_store_error(op->req, "get_session");
        user_op_free(op);
        return;
    }
    if (status != SESSION_OK) {
        handlers_reply_invalid_token(op->req, "unknown, expired or logged-out token");
        user_op_free(op);
        return;
    }
    op->rec = *rec;
    store_call_begin(&op->sc, op->req);
    op->ctx->store->ops->get_user(op->ctx->store, rec->appid, rec->openid, on_user, op);
}

void user_op_load(struct user_op *op, user_op_next_fn *next)
{
    uint8_t hash[CRYPTO_HASH_LEN];
    if (!handlers_authenticate(op->req, op->ctx, &op->app, hash)) {
        user_op_free(op);
        return;
    }
    op->next = next;
    store_call_begin(&op->sc, op->req);
    op->ctx->store->ops->get_session(op->ctx->store, op->app->appid, hash, (int64_t)time(NULL),
                                     on_session, op);
}

/* ---- user_op_call_token ---- */

/* Token endpoint errcodes that mean our credentials or IP are wrong, not that WeChat is busy. */
static bool token_config_error(long errcode)
{
    switch (errcode) {
    case 40001: /* at the token endpoint: AppSecret wrong */
    case 40002:
    case 40013:
    case 40125:
    case 40164:
    case 40243:
    case 41002:
    case 41004:
    case 48001:
    case 50004:
    case 50007:
    case 61024:
    case 89501:
    case 89503:
    case 89506:
    case 89507: return true;
    default: return false;
    }
}

void handlers_reply_token_error(struct http_request *req, const struct wechat_token_result *res)
{
    char ec[24] = "";
    if (res->status == WECHAT_TOKEN_FAILED && res->wstatus == WECHAT_ERRCODE)
        snprintf(ec, sizeof(ec), "%ld", res->errcode);
    bool config = res->status == WECHAT_TOKEN_FAILED && res->wstatus == WECHAT_ERRCODE &&
                  token_config_error(res->errcode);
    log_kv(config ? LOG_ERROR : LOG_WARN,
           config ? "WeChat refused to issue an access token: check appid, secret and the API "
                    "IP whitelist"
                  : "no access token",
           "wx_errcode", ec[0] ? ec : NULL, "reason",
           res->status == WECHAT_TOKEN_THROTTLED ? "throttled: WeChat keeps returning a rejected "
                                                   "token"
           : res->status == WECHAT_TOKEN_ABORTED ? "aborted"
                                                 : "fetch failed",
           "request_id", http_request_id(req), NULL);
    if (res->status == WECHAT_TOKEN_ABORTED) {
        http_reply_error(req, 503, "shutting_down", "the service is shutting down", "retry");
        return;
    }
    json_t *body;
    if (config)
        body = json_pack("{s:s, s:s, s:s}", "error", "config_error", "message",
                         "WeChat refused the service's credentials for an access token", "action",
                         "none");
    else
        body = json_pack("{s:s, s:s, s:s}", "error", "upstream_busy", "message",
                         "WeChat's access token is unavailable right now", "action", "retry");
    if (body != NULL && ec[0] != '\0')
        json_object_set_new(body, "wx_errcode", json_integer(res->errcode));
    http_reply_json(req, config ? 500 : 503, body);
}

static void call_with_token(struct user_op *op);

static void on_cancel(void *arg)
{
    struct user_op *op = arg;
    if (op->call != NULL)
        wechat_call_cancel(op->call);
    if (op->token_waiter != NULL)
        wechat_token_cancel(op->app->token, op->token_waiter);
    user_op_free(op);
}

static void on_call_done(const struct wechat_result *res, void *arg)
{
    struct user_op *op = arg;
    op->call = NULL;
    http_request_on_cancel(op->req, NULL, NULL);
    if (res->status == WECHAT_ERRCODE && wechat_token_rejected(res->errcode)) {
        /* Drop exactly the token that failed; a newer one fetched meanwhile stays. */
        wechat_token_invalidate(op->app->token, op->access_token, op->ctx->store->ops->token_share,
                                op->ctx->store);
        if (op->token_attempt == 0) {
            op->token_attempt = 1;
            user_op_call_token(op);
            return;
        }
        /* A freshly fetched token rejected again: stop here rather than burn the quota. */
        log_kv(LOG_WARN, "WeChat rejected a freshly fetched access token", "request_id",
               http_request_id(op->req), NULL);
        json_t *b = json_pack("{s:s, s:s, s:s, s:I}", "error", "upstream_busy", "message",
                              "WeChat rejected the access token, retry later", "action", "retry",
                              "wx_errcode", (json_int_t)res->errcode);
        http_reply_json(op->req, 503, b);
        user_op_free(op);
        return;
    }
    wechat_token_accepted(op->app->token, op->access_token);
    op->result(op, res);
}

static void call_with_token(struct user_op *op)
{
    op->call = op->start(op, op->access_token);
    if (op->call == NULL) {
        reply_and_free(op, 503, "internal", "cannot start the WeChat call", "retry");
        return;
    }
    http_request_on_cancel(op->req, on_cancel, op);
}

static void on_token(const struct wechat_token_result *res, void *arg)
{
    struct user_op *op = arg;
    op->token_waiter = NULL;
    http_request_on_cancel(op->req, NULL, NULL);
    if (res->status != WECHAT_TOKEN_OK) {
        handlers_reply_token_error(op->req, res);
        user_op_free(op);
        return;
    }
    memcpy(op->access_token, res->token, sizeof(op->access_token));
    call_with_token(op);
}

void user_op_call_token(struct user_op *op)
{
    struct wechat_token_result res;
    switch (wechat_token_get(op->app->token, op->ctx->wx, op->ctx->store->ops->token_share,
                             op->ctx->store, http_request_loop(op->req), 0, on_token, op, &res,
                             &op->token_waiter)) {
    case WECHAT_TOKEN_READY: on_token(&res, op); break;
    case WECHAT_TOKEN_WAIT: http_request_on_cancel(op->req, on_cancel, op); break;
    }
    crypto_wipe(&res, sizeof(res));
}

void user_op_on_call_done(const struct wechat_result *res, void *arg)
{
    on_call_done(res, arg);
}
