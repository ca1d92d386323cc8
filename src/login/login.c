/*
 * login: the operation is a small state machine whose every step runs in op->inner (its own
 * pending slot), so cancelling the operation is one async_cancel of that slot plus the undo
 * this module owes the others: waking the waiters and releasing the claim.
 *
 * The code's token is computed when the operation starts (the code is not kept by a follower),
 * and wiped with the operation.
 */
#include "login/login.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "limit/limit.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "runtime/async.h"
#include "runtime/delay.h"
#include "store/store.h"

#define CLAIM_POLL_MS 100
/* A claim lasts the whole exchange with WeChat (retries included) and the write after it. */
#define CLAIM_SLACK_MS 5000
#define POOL_MAX 64
/* The label of the token key: changing it changes every code's token. */
#define TOKEN_KEY_LABEL "wxlogin code-token v1"

struct login_ctx {
    struct login_opts opts;
    struct exchange *x;
    struct wechat_client *wx;
    struct store *store;
    struct loop *loop;
    struct login_op *pool;
    size_t npool;
};

struct login_op {
    struct async async;
    struct async_slot inner; /* the step in progress */
    struct login_ctx *lc;
    const struct wechat_app *app;
    bool want_session;
    bool leading;  /* the exchange entry is ours to finish */
    bool claiming; /* a claim was asked for (granted or not): ours to release */
    uint8_t key[CRYPTO_HASH_LEN];
    char code[WECHAT_CODE_MAX + 1];
    char owner[STORE_OWNER_LEN + 1];
    struct delay poll; /* another instance holds the claim: ask again (in op->inner) */
    uint64_t give_up_ms;
    struct exchange_outcome out;                  /* the identity to answer with */
    char session_key[WECHAT_SESSION_KEY_LEN + 1]; /* from code2Session, until it is stored */
    uint64_t user_wait_us;            /* the user's limit refused the session: for how long */
    char token[CRYPTO_TOKEN_LEN + 1]; /* the code's, with want_session */
    uint8_t token_hash[CRYPTO_HASH_LEN];
    uint8_t sid[STORE_SID_LEN]; /* the new session's id */
    char client[STORE_CLIENT_MAX + 1];
    char user_agent[STORE_UA_MAX + 1];
    int64_t expires_at;
    login_done_fn *done;
    void *arg;
    struct login_op *next;
};

int login_token_key(const uint8_t master_key[CRYPTO_KEY_LEN], uint8_t out[LOGIN_TOKEN_KEY_LEN])
{
    return crypto_hmac_sha256(master_key, CRYPTO_KEY_LEN, TOKEN_KEY_LABEL,
                              sizeof(TOKEN_KEY_LABEL) - 1, out);
}

int login_next_token(const uint8_t token_key[LOGIN_TOKEN_KEY_LEN], const char *token,
                     char next[CRYPTO_TOKEN_LEN + 1], uint8_t next_hash[CRYPTO_HASH_LEN])
{
    char msg[sizeof("refresh\n") + CRYPTO_TOKEN_LEN];
    uint8_t raw[CRYPTO_HASH_LEN];
    int rc = -1;
    int n = snprintf(msg, sizeof(msg), "refresh\n%s", token);
    if (n > 0 && (size_t)n < sizeof(msg) &&
        crypto_hmac_sha256(token_key, LOGIN_TOKEN_KEY_LEN, msg, (size_t)n, raw) == 0) {
        crypto_token_encode(raw, next);
        crypto_sha256(next, CRYPTO_TOKEN_LEN, next_hash);
        rc = 0;
    }
    crypto_wipe(msg, sizeof(msg)); /* the old token */
    crypto_wipe(raw, sizeof(raw)); /* the new one */
    return rc;
}

struct login_ctx *login_ctx_new(const struct login_opts *opts, struct exchange *x,
                                struct wechat_client *wx, struct store *store, struct loop *loop)
{
    if (opts->token_key == NULL)
        return NULL;
    struct login_ctx *lc = calloc(1, sizeof(*lc));
    if (lc == NULL)
        return NULL;
    lc->opts = *opts;
    lc->x = x;
    lc->wx = wx;
    lc->store = store;
    lc->loop = loop;
    return lc;
}

void login_ctx_set_limits(struct login_ctx *lc, struct limit *user_limit,
                          struct limit *wechat_limit)
{
    lc->opts.user_limit = user_limit;
    lc->opts.wechat_limit = wechat_limit;
}

void login_ctx_free(struct login_ctx *lc)
{
    if (lc == NULL)
        return;
    while (lc->pool != NULL) {
        struct login_op *op = lc->pool;
        lc->pool = op->next;
        free(op);
    }
    free(lc);
}

static long claim_hold_ms(const struct login_ctx *lc)
{
    return wechat_client_budget_ms(lc->wx) + CLAIM_SLACK_MS;
}

static void op_free(struct login_op *op)
{
    struct login_ctx *lc = op->lc;
    crypto_wipe(op, sizeof(*op)); /* the code and the token */
    if (lc->npool < POOL_MAX) {
        op->next = lc->pool;
        lc->pool = op;
        lc->npool++;
        return;
    }
    free(op);
}

/* Tells the operation's owner and ends it. */
static void reply(struct login_op *op, const struct login_result *r)
{
    login_done_fn *done = op->done;
    void *arg = op->arg;
    async_end(&op->async);
    done(arg, r);
    op_free(op);
}

static void reply_status(struct login_op *op, enum login_status status)
{
    struct login_result r = {.status = status};
    reply(op, &r);
}

static void reply_ok(struct login_op *op, bool repeat)
{
    struct login_result r = {.status = LOGIN_OK,
                             .openid = op->out.openid,
                             .unionid = op->out.unionid,
                             .token = op->want_session ? op->token : NULL,
                             .expires_at = op->expires_at,
                             .repeat = repeat};
    reply(op, &r);
}

static void reply_wechat(struct login_op *op, const struct wechat_reply *wr)
{
    struct login_result r = {.status = LOGIN_WECHAT, .reply = wr};
    reply(op, &r);
}

static void reply_limited(struct login_op *op, bool user, uint64_t wait_us)
{
    struct login_result r = {.status = LOGIN_LIMITED, .limited_user = user, .wait_us = wait_us};
    reply(op, &r);
}

/*
 * The leader's outcome: wakes this process's waiters and, through the store, tells the other
 * instances (a remembered outcome is published; otherwise the claim is released so the next
 * request tries again).
 */
static void lead_finish(struct login_op *op, const struct exchange_outcome *o, bool remember)
{
    struct login_ctx *lc = op->lc;
    if (!op->leading)
        return;
    op->leading = false;
    exchange_finish(lc->x, op->key, o, remember);
    if (!op->claiming)
        return;
    op->claiming = false;
    char text[STORE_OUTCOME_MAX];
    size_t n = remember ? exchange_outcome_encode(o, text, sizeof(text)) : 0;
    if (n > 0)
        store_claim_publish(lc->store, op->app->appid, op->key,
                            o->kind == EXCHANGE_OK ? o->openid : "", text, n,
                            lc->opts.outcome_keep_ms);
    else
        store_claim_release(lc->store, op->app->appid, op->key, op->owner);
}

static void lead_abort(struct login_op *op, enum exchange_kind kind)
{
    struct exchange_outcome o = {.kind = kind};
    lead_finish(op, &o, false);
}

/* The code's token and its hash: HMAC-SHA256(token key, appid "\n" code), encoded. */
static int code_token(struct login_op *op, const char *code)
{
    char msg[WECHAT_ID_MAX + 1 + WECHAT_CODE_MAX + 1];
    uint8_t raw[CRYPTO_HASH_LEN];
    int rc = -1;
    int n = snprintf(msg, sizeof(msg), "%s\n%s", op->app->appid, code);
    if (n < 0 || (size_t)n >= sizeof(msg))
        goto out;
    if (crypto_hmac_sha256(op->lc->opts.token_key, LOGIN_TOKEN_KEY_LEN, msg, (size_t)n, raw) != 0)
        goto out;
    crypto_token_encode(raw, op->token);
    crypto_sha256(op->token, CRYPTO_TOKEN_LEN, op->token_hash);
    rc = 0;
out:
    crypto_wipe(msg, sizeof(msg)); /* the code */
    crypto_wipe(raw, sizeof(raw)); /* the token */
    return rc;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void op_cancel(struct async *a)
{
    struct login_op *op = (struct login_op *)(void *)a;
    async_cancel(&op->inner);
    lead_abort(op, EXCHANGE_ABORTED);
    op_free(op);
}

/* ---- followers: the outcome of someone else's exchange ---- */

/* The code's session, stored by its leader: answered while it lives, else the code is used. */
static void on_session_found(void *arg, int status, const struct store_session *s)
{
    struct login_op *op = arg;
    if (status == STORE_ERROR) {
        reply_status(op, LOGIN_STORE);
        return;
    }
    if (status != STORE_OK || strcmp(s->openid, op->out.openid) != 0) {
        reply_status(op, LOGIN_CODE_USED); /* logged out, expired or purged */
        return;
    }
    op->expires_at = s->expires_at;
    reply_ok(op, true);
}

/* True while a repeat of the code may still be answered its session. */
static bool within_window(const struct login_op *op, const struct exchange_outcome *o)
{
    return o->session && o->exchanged_ms > 0 &&
           wall_ms() - o->exchanged_ms < op->lc->opts.reuse_window_ms;
}

static void follow(struct login_op *op, const struct exchange_outcome *o)
{
    switch (o->kind) {
    case EXCHANGE_OK:
        op->out = *o;
        if (!op->want_session) {
            reply_ok(op, true);
            return;
        }
        /* Never a second session: the leader's one, looked up by the code's token, or none. */
        if (!within_window(op, o)) {
            reply_status(op, LOGIN_CODE_USED);
            return;
        }
        store_get_session(op->lc->store, &op->inner, op->app->appid, op->token_hash,
                          (int64_t)time(NULL), on_session_found, op);
        return;
    case EXCHANGE_WECHAT: {
        struct wechat_reply wr = {.status = o->status,
                                  .errcode = o->errcode,
                                  .http_status = o->http_status,
                                  .detail = "outcome shared with an earlier request"};
        reply_wechat(op, &wr);
        return;
    }
    case EXCHANGE_STORE: reply_status(op, LOGIN_STORE); return;
    case EXCHANGE_ABORTED: reply_status(op, LOGIN_ABORTED); return;
    case EXCHANGE_LIMITED: reply_limited(op, false, o->wait_us); return;
    case EXCHANGE_BANNED: reply_status(op, LOGIN_BANNED); return;
    }
}

static void on_wake(const struct exchange_outcome *o, void *arg)
{
    follow(arg, o);
}

/* ---- the leader ---- */

static void on_stored(void *arg, int status)
{
    struct login_op *op = arg;
    if (status == STORE_BANNED) {
        /* Told to the waiters, not remembered: the ban may be lifted before the code expires. */
        lead_abort(op, EXCHANGE_BANNED);
        reply_status(op, LOGIN_BANNED);
        return;
    }
    if (status != STORE_OK) {
        /* Not remembered: the store may be back for a retry (though WeChat will then say the
         * code was used, and the client gets a clear relogin). */
        lead_abort(op, EXCHANGE_STORE);
        reply_status(op, LOGIN_STORE);
        return;
    }
    lead_finish(op, &op->out, true);
    if (op->user_wait_us > 0)
        reply_limited(op, true, op->user_wait_us);
    else
        reply_ok(op, false);
}

/* The user and their new session_key, and the code's session unless the user's limit said no. */
static void store_user(struct login_op *op)
{
    bool session = op->want_session && op->user_wait_us == 0;
    op->out.session = session;
    struct store_login in = {.appid = op->app->appid,
                             .openid = op->out.openid,
                             .unionid = op->out.unionid,
                             .session_key = op->session_key,
                             .token_hash = session ? op->token_hash : NULL,
                             .sid = op->sid,
                             .client = op->client,
                             .user_agent = op->user_agent,
                             .expires_at = op->expires_at,
                             .now = (int64_t)time(NULL)};
    store_login(op->lc->store, &op->inner, &in, on_stored, op);
}

static void on_user_token(void *arg, int status, uint64_t wait_us)
{
    struct login_op *op = arg;
    if (status != STORE_OK) {
        lead_abort(op, EXCHANGE_STORE);
        reply_status(op, LOGIN_STORE);
        return;
    }
    op->user_wait_us = wait_us;
    store_user(op);
}

static void on_code2session(void *arg, const struct wechat_reply *wr,
                            const struct wechat_session *s)
{
    struct login_op *op = arg;
    if (s == NULL) {
        struct exchange_outcome o = {.kind = EXCHANGE_WECHAT,
                                     .status = wr->status,
                                     .errcode = wr->errcode,
                                     .http_status = wr->http_status};
        bool final =
            wr->status == WECHAT_ERRCODE &&
            (wechat_errcode_flags(WECHAT_API_CODE2SESSION, wr->errcode) & WECHAT_EC_FINAL) != 0;
        lead_finish(op, &o, final);
        reply_wechat(op, wr);
        return;
    }
    struct login_ctx *lc = op->lc;
    op->out.kind = EXCHANGE_OK;
    snprintf(op->out.openid, sizeof(op->out.openid), "%s", s->openid);
    snprintf(op->out.unionid, sizeof(op->out.unionid), "%s", s->unionid);
    snprintf(op->session_key, sizeof(op->session_key), "%s", s->session_key);
    op->out.exchanged_ms = wall_ms();
    op->expires_at =
        (int64_t)time(NULL) +
        (lc->opts.session_ttl_s < lc->opts.max_age_s ? lc->opts.session_ttl_s : lc->opts.max_age_s);
    if (lc->opts.user_limit == NULL) {
        store_user(op);
        return;
    }
    /* Counted now that WeChat named the user (the request could not say who it was for). */
    limit_take(lc->opts.user_limit, lc->store, &op->inner, op->app->appid, op->out.openid,
               strlen(op->out.openid), on_user_token, op);
}

static void send_code(struct login_op *op)
{
    if (wechat_code2session(op->lc->wx, &op->inner, op->app, op->code, on_code2session, op) != 0) {
        lead_abort(op, EXCHANGE_ABORTED);
        reply_status(op, LOGIN_INTERNAL);
    }
}

static void on_ceiling(void *arg, int status, uint64_t wait_us)
{
    struct login_op *op = arg;
    if (status != STORE_OK) {
        lead_abort(op, EXCHANGE_STORE);
        reply_status(op, LOGIN_STORE);
    } else if (wait_us > 0) {
        /* Nothing went to WeChat: the code is still good, for a retry after wait_us; the
         * waiters are refused alike, and nothing is remembered. */
        struct exchange_outcome o = {.kind = EXCHANGE_LIMITED, .wait_us = wait_us};
        lead_finish(op, &o, false);
        reply_limited(op, false, wait_us);
    } else {
        send_code(op);
    }
}

/* code2Session, within the app's ceiling on WeChat calls. */
static void call_wechat(struct login_op *op)
{
    struct login_ctx *lc = op->lc;
    if (lc->opts.wechat_limit == NULL) {
        send_code(op);
        return;
    }
    limit_take(lc->opts.wechat_limit, lc->store, &op->inner, op->app->appid, "", 0, on_ceiling, op);
}

static void claim(struct login_op *op);

static void on_poll(void *arg)
{
    claim(arg);
}

static void on_claim(void *arg, int status, enum store_claim state, const char *outcome, size_t len)
{
    struct login_op *op = arg;
    struct exchange_outcome o;
    metrics_claim(status != STORE_OK          ? METRICS_CLAIM_ERROR
                  : state == STORE_CLAIM_MINE ? METRICS_CLAIM_MINE
                  : state == STORE_CLAIM_BUSY ? METRICS_CLAIM_BUSY
                                              : METRICS_CLAIM_KNOWN);
    if (status != STORE_OK) {
        lead_abort(op, EXCHANGE_STORE);
        reply_status(op, LOGIN_STORE);
        return;
    }
    switch (state) {
    case STORE_CLAIM_MINE: call_wechat(op); return;
    case STORE_CLAIM_KNOWN:
        /* Another instance exchanged it: its outcome, for us and our local waiters. */
        op->claiming = false; /* nothing of ours to release */
        if (exchange_outcome_decode(outcome, len, &o) != 0)
            o = (struct exchange_outcome){.kind = EXCHANGE_STORE};
        lead_finish(op, &o, o.kind != EXCHANGE_STORE);
        follow(op, &o);
        return;
    case STORE_CLAIM_BUSY: break;
    }
    if (loop_now_ms(op->lc->loop) >= op->give_up_ms) {
        lead_abort(op, EXCHANGE_ABORTED);
        reply_status(op, LOGIN_BUSY);
        return;
    }
    delay_start(&op->poll, op->lc->loop, &op->inner, CLAIM_POLL_MS, on_poll, op);
}

static void claim(struct login_op *op)
{
    struct login_ctx *lc = op->lc;
    op->claiming = true;
    store_claim(lc->store, &op->inner, op->app->appid, op->key, op->owner, claim_hold_ms(lc),
                on_claim, op);
}

int login_code(struct login_ctx *lc, struct async_slot *slot, const struct wechat_app *app,
               const char *code, bool want_session, const struct login_origin *origin,
               login_done_fn *done, void *arg)
{
    size_t n = strlen(code);
    if (n > WECHAT_CODE_MAX)
        return -1;
    struct login_op *op = lc->pool;
    if (op != NULL) {
        lc->pool = op->next;
        lc->npool--;
    } else {
        op = malloc(sizeof(*op));
        if (op == NULL)
            return -1;
    }
    memset(op, 0, sizeof(*op));
    op->lc = lc;
    op->app = app;
    op->want_session = want_session;
    op->done = done;
    op->arg = arg;
    if (want_session && (code_token(op, code) != 0 || store_sid_new(op->sid) != 0)) {
        op_free(op);
        return -1;
    }
    /* Cut to what the store keeps (a character cut in two is cleaned by the store). */
    if (origin != NULL && origin->client != NULL)
        snprintf(op->client, sizeof(op->client), "%s", origin->client);
    if (origin != NULL && origin->user_agent != NULL)
        snprintf(op->user_agent, sizeof(op->user_agent), "%s", origin->user_agent);
    exchange_key(app->appid, code, op->key);
    async_begin(&op->async, slot, op_cancel);

    struct exchange_outcome known;
    switch (exchange_begin(lc->x, op->key, lc->loop, &op->inner, on_wake, op, &known)) {
    case EXCHANGE_KNOWN:
        metrics_exchange(METRICS_EXCHANGE_REMEMBERED);
        follow(op, &known);
        return 0;
    case EXCHANGE_WAIT: metrics_exchange(METRICS_EXCHANGE_WAITED); return 0;
    case EXCHANGE_LEAD: metrics_exchange(METRICS_EXCHANGE_LEAD); break;
    }
    op->leading = true;
    memcpy(op->code, code, n + 1);
    if (!store_is_shared(lc->store)) {
        /* One process owns the store: the exchange table is the whole truth. */
        call_wechat(op);
        return 0;
    }
    if (store_owner_new(op->owner) != 0) {
        lead_abort(op, EXCHANGE_ABORTED);
        reply_status(op, LOGIN_INTERNAL);
        return 0;
    }
    op->give_up_ms = loop_now_ms(lc->loop) + (uint64_t)claim_hold_ms(lc);
    claim(op);
    return 0;
}
