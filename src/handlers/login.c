/*
 * POST /openid and POST /v1/login: exchange a wx.login code.
 *
 * Both record the user and their newest session_key (sealed with the master key); /v1/login
 * also issues our own session token. The exchange is idempotent and single-flight
 * (exchange/exchange.h): the first request with a code leads and calls WeChat, concurrent ones
 * wait for its outcome, and later repeats reuse the remembered outcome, so one code costs one
 * WeChat call whatever the client does. session_key never leaves the server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "exchange/exchange.h"
#include "handlers/handlers.h"
#include "handlers/login_request.h"
#include "handlers/upstream_error.h"
#include "log/log.h"
#include "loop/loop.h"
#include "session/session.h"
#include "wechat/client.h"

struct login_op {
    struct http_request *req;
    struct handlers_ctx *ctx;
    const struct handlers_app *app;
    bool want_token;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wechat_call *call;       /* leading: WeChat is answering */
    struct exchange_waiter *waiter; /* waiting for another request's exchange */
    struct exchange_outcome out;    /* the identity to answer with */
    struct store_call sc;
    char code[LOGIN_CODE_MAX + 1];
    bool claimed;           /* this request holds the store's claim on the code */
    struct loop_timer poll; /* another instance holds it: ask again */
    uint64_t give_up_ms;
    char token[CRYPTO_TOKEN_LEN + 1];
    int64_t expires_at;
};

/* How long a claim on a code may last: the whole exchange with WeChat, retries included. */
static long claim_hold_ms(const struct handlers_ctx *ctx)
{
    /* attempts, plus each retry's backoff (at most 2 s), plus slack */
    return ctx->cfg->upstream_timeout_ms * (ctx->cfg->upstream_retries + 1) +
           2000 * ctx->cfg->upstream_retries + 5000;
}

#define CLAIM_POLL_MS 100
#define OUTCOME_KEEP_MS (5 * 60 * 1000)

static void op_free(struct login_op *op)
{
    crypto_wipe(op->token, sizeof(op->token));
    crypto_wipe(op->code, sizeof(op->code));
    free(op);
}

/*
 * The leader's outcome: wakes this process's followers and, through the store, tells other
 * instances (remembered outcomes are published, others release the claim).
 */
static void lead_finish(struct login_op *op, const struct exchange_outcome *o, bool remember)
{
    exchange_finish(op->ctx->exchange, op->key, o, remember);
    if (!op->claimed)
        return;
    op->claimed = false;
    char *text = remember ? exchange_outcome_encode(o) : NULL;
    op->ctx->store->ops->code_publish(op->ctx->store, op->app->appid, op->key, text,
                                      text != NULL ? strlen(text) : 0, OUTCOME_KEEP_MS, NULL, NULL);
    free(text);
}

static void reply_success(struct login_op *op)
{
    json_t *body = json_pack("{s:s}", "openid", op->out.openid);
    if (body != NULL && op->out.unionid[0] != '\0')
        json_object_set_new(body, "unionid", json_string(op->out.unionid));
    if (body != NULL && op->want_token) {
        json_object_set_new(body, "token", json_string(op->token));
        json_object_set_new(body, "expires_in", json_integer(op->expires_at - (int64_t)time(NULL)));
    }
    http_reply_json(op->req, 200, body);
    op_free(op);
}

/* Prepares a fresh token and its hash for a new session. */
static int new_token(struct login_op *op, uint8_t hash[CRYPTO_HASH_LEN])
{
    if (crypto_token_new(op->token) != 0)
        return -1;
    crypto_sha256(op->token, CRYPTO_TOKEN_LEN, hash);
    op->expires_at = (int64_t)time(NULL) + op->ctx->cfg->session_ttl;
    return 0;
}

static void reply_internal(struct login_op *op, const char *what)
{
    http_reply_error(op->req, 500, "internal", what, "retry");
    op_free(op);
}

/* ---- followers: the outcome of someone else's exchange ---- */

static void on_session_put(int status, void *arg)
{
    struct login_op *op = arg;
    if (store_call_end(&op->sc) == NULL) {
        op_free(op);
        return;
    }
    if (status != SESSION_OK) {
        handlers_reply_store_error(op->req, "put_session");
        op_free(op);
        return;
    }
    reply_success(op);
}

static void follow(struct login_op *op, const struct exchange_outcome *o)
{
    struct http_request *req = op->req;
    switch (o->kind) {
    case EXCHANGE_OK:
        op->out = *o;
        if (!op->want_token) {
            reply_success(op);
            return;
        }
        uint8_t hash[CRYPTO_HASH_LEN];
        if (new_token(op, hash) != 0) {
            reply_internal(op, "cannot create a token");
            return;
        }
        store_call_begin(&op->sc, req);
        op->ctx->store->ops->put_session(op->ctx->store, hash, op->app->appid, o->openid,
                                         op->expires_at, (int64_t)time(NULL), on_session_put, op);
        return;
    case EXCHANGE_WECHAT: {
        struct wechat_result res = {.status = o->status,
                                    .errcode = o->errcode,
                                    .http_status = o->http_status,
                                    .detail = "outcome shared with an earlier request"};
        upstream_error_reply(req, &res, "code2session");
        break;
    }
    case EXCHANGE_STORE: handlers_reply_store_error(req, "login"); break;
    case EXCHANGE_ABORTED:
        http_reply_error(req, 503, "shutting_down", "the service is shutting down", "retry");
        break;
    }
    op_free(op);
}

static void on_wake(const struct exchange_outcome *o, void *arg)
{
    struct login_op *op = arg;
    op->waiter = NULL;
    http_request_on_cancel(op->req, NULL, NULL);
    follow(op, o);
}

/* ---- the leader ---- */

static void on_cancel(void *arg);

/* Final for the code: WeChat will answer the same to any repeat. */
static bool final_failure(const struct wechat_result *res)
{
    return res->status == WECHAT_ERRCODE &&
           (res->errcode == 40029 || res->errcode == 40163 || res->errcode == 40226);
}

static void on_stored(int status, void *arg)
{
    struct login_op *op = arg;
    bool abandoned = store_call_end(&op->sc) == NULL;
    if (status != SESSION_OK) {
        /* Not remembered: the store may be back for a retry (though WeChat will then say the
         * code was used, and the client gets a clear relogin). */
        struct exchange_outcome o = {.kind = EXCHANGE_STORE};
        lead_finish(op, &o, false);
        if (!abandoned)
            handlers_reply_store_error(op->req, "login");
        op_free(op);
        return;
    }
    /* Stored: the outcome stands for followers even if this request was abandoned. */
    lead_finish(op, &op->out, true);
    if (abandoned) {
        op_free(op);
        return;
    }
    reply_success(op);
}

static bool copy_id(const json_t *v, char out[SESSION_ID_MAX + 1])
{
    /* Ids go into response headers (X-WX-OpenID): only WeChat's alphabet passes. */
    if (!json_is_string(v) || json_string_length(v) > SESSION_ID_MAX ||
        !login_id_valid(json_string_value(v), json_string_length(v)))
        return false;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return true;
}

static void store_login(struct login_op *op, const json_t *body)
{
    struct handlers_ctx *ctx = op->ctx;
    struct session_user u;
    uint8_t hash[CRYPTO_HASH_LEN];
    memset(&u, 0, sizeof(u));

    snprintf(u.appid, sizeof(u.appid), "%s", op->app->appid);
    const json_t *sk = json_object_get(body, "session_key");
    if (!copy_id(json_object_get(body, "openid"), u.openid) || !json_is_string(sk) ||
        !login_session_key_valid(json_string_value(sk), json_string_length(sk))) {
        struct wechat_result bad = {.status = WECHAT_BAD_BODY,
                                    .detail = "openid or "
                                              "session_key malformed"};
        struct exchange_outcome o = {.kind = EXCHANGE_WECHAT, .status = WECHAT_BAD_BODY};
        lead_finish(op, &o, false);
        upstream_error_reply(op->req, &bad, "code2session");
        op_free(op);
        return;
    }
    copy_id(json_object_get(body, "unionid"), u.unionid);

    /* The associated data binds the sealed key to its user: a blob copied onto another row
     * does not open. */
    char aad[2 * SESSION_ID_MAX + 2];
    int aadlen = snprintf(aad, sizeof(aad), "%s\n%s", u.appid, u.openid);
    int sealed = crypto_seal(ctx->master_key, aad, (size_t)aadlen, json_string_value(sk),
                             json_string_length(sk), u.sealed_key);
    if (sealed < 0 || (op->want_token && new_token(op, hash) != 0)) {
        struct exchange_outcome o = {.kind = EXCHANGE_STORE};
        lead_finish(op, &o, false);
        reply_internal(op, "cannot seal the session");
        return;
    }
    u.sealed_len = (size_t)sealed;

    op->out.kind = EXCHANGE_OK;
    memcpy(op->out.openid, u.openid, sizeof(u.openid));
    memcpy(op->out.unionid, u.unionid, sizeof(u.unionid));
    store_call_begin(&op->sc, op->req);
    ctx->store->ops->login(ctx->store, &u, op->want_token ? hash : NULL, op->expires_at,
                           (int64_t)time(NULL), on_stored, op);
    crypto_wipe(&u, sizeof(u));
}

static void on_code2session(const struct wechat_result *res, void *arg)
{
    struct login_op *op = arg;
    op->call = NULL;
    http_request_on_cancel(op->req, NULL, NULL);
    if (res->status == WECHAT_OK) {
        store_login(op, res->body);
        return;
    }
    struct exchange_outcome o = {.kind = EXCHANGE_WECHAT,
                                 .status = res->status,
                                 .errcode = res->errcode,
                                 .http_status = res->http_status};
    lead_finish(op, &o, final_failure(res));
    upstream_error_reply(op->req, res, "code2session");
    op_free(op);
}

static void call_wechat(struct login_op *op)
{
    struct handlers_ctx *ctx = op->ctx;
    op->call = wechat_code2session(ctx->wx, op->app->appid, op->app->secret, op->code,
                                   on_code2session, op);
    if (op->call == NULL) {
        struct exchange_outcome o = {.kind = EXCHANGE_ABORTED};
        lead_finish(op, &o, false);
        http_reply_error(op->req, 503, "internal", "cannot start the WeChat call", "retry");
        op_free(op);
        return;
    }
    http_request_on_cancel(op->req, on_cancel, op);
}

static void on_claim(int status, enum session_claim claim_state, const char *outcome, size_t len,
                     void *arg)
{
    struct login_op *op = arg;
    struct exchange_outcome o;
    if (store_call_end(&op->sc) == NULL) {
        /* Abandoned (shutdown): a claim just granted is released for the next request. */
        op->claimed = status == SESSION_OK && claim_state == SESSION_CLAIM_MINE;
        struct exchange_outcome ab = {.kind = EXCHANGE_ABORTED};
        lead_finish(op, &ab, false);
        op_free(op);
        return;
    }
    if (status != SESSION_OK) {
        struct exchange_outcome st = {.kind = EXCHANGE_STORE};
        lead_finish(op, &st, false);
        handlers_reply_store_error(op->req, "code_claim");
        op_free(op);
        return;
    }
    switch (claim_state) {
    case SESSION_CLAIM_MINE:
        op->claimed = true;
        call_wechat(op);
        return;
    case SESSION_CLAIM_KNOWN:
        /* Another instance exchanged it: its outcome, for us and our local followers. */
        if (exchange_outcome_decode(outcome, len, &o) != 0)
            o = (struct exchange_outcome){.kind = EXCHANGE_STORE};
        lead_finish(op, &o, o.kind != EXCHANGE_STORE);
        follow(op, &o);
        return;
    case SESSION_CLAIM_BUSY: break;
    }
    if (loop_clock_ms() >= op->give_up_ms) {
        struct exchange_outcome ab = {.kind = EXCHANGE_ABORTED};
        lead_finish(op, &ab, false);
        http_reply_error(op->req, 503, "upstream_busy",
                         "another instance is still exchanging this code, retry", "retry");
        op_free(op);
        return;
    }
    loop_timer_start(http_request_loop(op->req), &op->poll, CLAIM_POLL_MS);
    http_request_on_cancel(op->req, on_cancel, op);
}

static void claim(struct login_op *op)
{
    store_call_begin(&op->sc, op->req);
    op->ctx->store->ops->code_claim(op->ctx->store, op->app->appid, op->key, claim_hold_ms(op->ctx),
                                    on_claim, op);
}

static void on_poll(void *arg)
{
    struct login_op *op = arg;
    http_request_on_cancel(op->req, NULL, NULL);
    claim(op);
}

/* Shutdown abandons the request: stop the WeChat call (telling any followers) or the wait. */
static void on_cancel(void *arg)
{
    struct login_op *op = arg;
    if (op->call != NULL || loop_timer_armed(&op->poll)) {
        wechat_call_cancel(op->call);
        loop_timer_stop(http_request_loop(op->req), &op->poll);
        struct exchange_outcome o = {.kind = EXCHANGE_ABORTED};
        lead_finish(op, &o, false);
    }
    if (op->waiter != NULL)
        exchange_cancel(op->ctx->exchange, op->waiter);
    op_free(op);
}

static void start(struct http_request *req, struct handlers_ctx *ctx, bool want_token)
{
    const struct handlers_app *app = handlers_app(req, ctx);
    if (app == NULL)
        return;
    char code[LOGIN_CODE_MAX + 1];
    const char *why;
    size_t len;
    const char *body = http_request_body(req, &len);
    if (login_request_parse(body, len, code, &why) != 0) {
        http_reply_error(req, 400, "bad_request", why, "none");
        return;
    }
    struct login_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        http_reply_error(req, 503, "internal", "out of memory", "retry");
        return;
    }
    op->req = req;
    op->ctx = ctx;
    op->app = app;
    op->want_token = want_token;
    loop_timer_init(&op->poll, on_poll, op);
    exchange_key(app->appid, code, op->key);

    struct exchange_outcome known;
    switch (exchange_begin(ctx->exchange, op->key, http_request_loop(req), on_wake, op, &known,
                           &op->waiter)) {
    case EXCHANGE_KNOWN: follow(op, &known); return;
    case EXCHANGE_WAIT: http_request_on_cancel(req, on_cancel, op); return;
    case EXCHANGE_LEAD: break;
    }
    memcpy(op->code, code, sizeof(op->code));
    op->give_up_ms = loop_clock_ms() + (uint64_t)claim_hold_ms(ctx);
    claim(op);
}

void handle_openid(struct http_request *req, void *arg)
{
    start(req, arg, false);
}

void handle_login(struct http_request *req, void *arg)
{
    start(req, arg, true);
}
