/*
 * store/timed: a decorator that counts every operation of the store it wraps, by operation and
 * result, and times those that answer (metrics/metrics.h). It sits between the backend and the
 * session cache (store_open()), so a cache hit never reaches it: what it measures is the store
 * itself. Only put in place when metrics are on.
 *
 * An operation that answers gets a small record from the store's pool (its start time and the
 * caller's callback), occupies the caller's slot and runs the inner operation in its own; the
 * callback counts, frees the record and calls the caller. Cancelling the caller's slot cancels
 * the inner operation.
 */
#include "store/timed.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/metrics.h"
#include "runtime/async.h"
#include "util/list.h"

#define OP_POOL_MAX 256

struct timed_store {
    struct store base;
    struct store *inner;
    struct store_claim_ops claims;
    struct store_lease_ops lease;
    struct store_limit_ops limits;
    struct timed_op *pool;
    size_t npool;
    struct list started; /* operations waiting for the inner store */
};

struct timed_op {
    struct async async;
    struct async_slot inner;
    struct timed_store *ts;
    enum metrics_store_op op;
    uint64_t start_us;
    union {
        store_done_fn *done;
        store_session_fn *session;
        store_user_fn *user;
        store_count_fn *count;
        store_claim_fn *claim;
        store_token_fn *token;
        store_lease_fn *lease;
        store_limit_fn *limit;
        store_revoke_fn *revoke;
        store_info_fn *info;
    } fn;
    void *arg;
    struct timed_op *next;
    struct list node;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void op_put(struct timed_op *op)
{
    struct timed_store *ts = op->ts;
    list_unlink(&op->node);
    if (ts->npool < OP_POOL_MAX) {
        op->next = ts->pool;
        ts->pool = op;
        ts->npool++;
        return;
    }
    free(op);
}

static void op_cancel(struct async *a)
{
    struct timed_op *op = (struct timed_op *)(void *)a;
    async_cancel(&op->inner);
    op_put(op);
}

/* A record for op occupying slot, or NULL (out of memory: the caller runs it untimed). */
static struct timed_op *op_begin(struct store *st, struct async_slot *slot,
                                 enum metrics_store_op kind, void *arg)
{
    struct timed_store *ts = (struct timed_store *)st;
    struct timed_op *op = ts->pool;
    if (op != NULL) {
        ts->pool = op->next;
        ts->npool--;
    } else {
        op = malloc(sizeof(*op));
        if (op == NULL)
            return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->ts = ts;
    op->op = kind;
    op->arg = arg;
    op->start_us = now_us();
    list_push_back(&ts->started, &op->node);
    async_begin(&op->async, slot, op_cancel);
    return op;
}

/* Counts the answer and frees the record; returns the caller's arg. */
static void *op_end(struct timed_op *op, int status)
{
    uint64_t t = now_us();
    metrics_store_op(op->op, status, t > op->start_us ? t - op->start_us : 0);
    async_end(&op->async);
    void *arg = op->arg;
    op_put(op);
    return arg;
}

static struct store *inner_of(struct store *st)
{
    return ((struct timed_store *)st)->inner;
}

/* ---- sessions and users ---- */

static void on_done(void *arg, int status)
{
    struct timed_op *op = arg;
    store_done_fn *fn = op->fn.done;
    fn(op_end(op, status), status);
}

static void t_ping(struct store *st, struct async_slot *slot, store_done_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_PING, arg);
    if (op == NULL) {
        store_ping(inner_of(st), slot, done, arg);
        return;
    }
    op->fn.done = done;
    store_ping(inner_of(st), &op->inner, on_done, op);
}

static void t_login(struct store *st, struct async_slot *slot, const struct store_login *in,
                    store_done_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_LOGIN, arg);
    if (op == NULL) {
        store_login(inner_of(st), slot, in, done, arg);
        return;
    }
    op->fn.done = done;
    store_login(inner_of(st), &op->inner, in, on_done, op);
}

static void t_put_session(struct store *st, struct async_slot *slot,
                          const uint8_t hash[CRYPTO_HASH_LEN], const char *appid,
                          const char *openid, int64_t expires_at, int64_t now, store_done_fn *done,
                          void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_PUT_SESSION, arg);
    if (op == NULL) {
        store_put_session(inner_of(st), slot, hash, appid, openid, expires_at, now, done, arg);
        return;
    }
    op->fn.done = done;
    store_put_session(inner_of(st), &op->inner, hash, appid, openid, expires_at, now, on_done, op);
}

static void on_session(void *arg, int status, const struct store_session *s)
{
    struct timed_op *op = arg;
    store_session_fn *fn = op->fn.session;
    fn(op_end(op, status), status, s);
}

static void t_get_session(struct store *st, struct async_slot *slot, const char *appid,
                          const uint8_t hash[CRYPTO_HASH_LEN], int64_t now, store_session_fn *done,
                          void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_GET_SESSION, arg);
    if (op == NULL) {
        store_get_session(inner_of(st), slot, appid, hash, now, done, arg);
        return;
    }
    op->fn.session = done;
    store_get_session(inner_of(st), &op->inner, appid, hash, now, on_session, op);
}

static void t_refresh(struct store *st, struct async_slot *slot, const struct store_refresh *in,
                      store_session_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_REFRESH, arg);
    if (op == NULL) {
        store_refresh(inner_of(st), slot, in, done, arg);
        return;
    }
    op->fn.session = done;
    store_refresh(inner_of(st), &op->inner, in, on_session, op);
}

static void on_revoked(void *arg, int status, const struct store_revoked *r)
{
    struct timed_op *op = arg;
    store_revoke_fn *fn = op->fn.revoke;
    fn(op_end(op, status), status, r);
}

static void t_revoke(struct store *st, struct async_slot *slot, const struct store_revoke *in,
                     store_revoke_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_REVOKE, arg);
    if (op == NULL) {
        store_revoke(inner_of(st), slot, in, done, arg);
        return;
    }
    op->fn.revoke = done;
    store_revoke(inner_of(st), &op->inner, in, on_revoked, op);
}

static void on_info(void *arg, int status, const struct store_user_info *u)
{
    struct timed_op *op = arg;
    store_info_fn *fn = op->fn.info;
    fn(op_end(op, status), status, u);
}

static void t_user_info(struct store *st, struct async_slot *slot, const char *appid,
                        const char *openid, int64_t now, store_info_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_USER_INFO, arg);
    if (op == NULL) {
        store_user_info(inner_of(st), slot, appid, openid, now, done, arg);
        return;
    }
    op->fn.info = done;
    store_user_info(inner_of(st), &op->inner, appid, openid, now, on_info, op);
}

static void on_user(void *arg, int status, const struct store_user *u)
{
    struct timed_op *op = arg;
    store_user_fn *fn = op->fn.user;
    fn(op_end(op, status), status, u);
}

static void t_get_user(struct store *st, struct async_slot *slot, const char *appid,
                       const char *openid, store_user_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_GET_USER, arg);
    if (op == NULL) {
        store_get_user(inner_of(st), slot, appid, openid, done, arg);
        return;
    }
    op->fn.user = done;
    store_get_user(inner_of(st), &op->inner, appid, openid, on_user, op);
}

static void on_count(void *arg, int status, long count)
{
    struct timed_op *op = arg;
    store_count_fn *fn = op->fn.count;
    fn(op_end(op, status), status, count);
}

static void t_purge_expired(struct store *st, struct async_slot *slot, int64_t now, long limit,
                            store_count_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_PURGE_EXPIRED, arg);
    if (op == NULL) {
        store_purge_expired(inner_of(st), slot, now, limit, done, arg);
        return;
    }
    op->fn.count = done;
    store_purge_expired(inner_of(st), &op->inner, now, limit, on_count, op);
}

static bool t_broken(const struct store *st)
{
    const struct store *in = ((const struct timed_store *)st)->inner;
    return in->ops->broken != NULL && in->ops->broken(in);
}

static void t_close(struct store *st)
{
    struct timed_store *ts = (struct timed_store *)st;
    /* The inner store ends its operations without callbacks; so do ours. */
    store_close(ts->inner);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &ts->started)
    {
        struct timed_op *op = list_item(pos, struct timed_op, node);
        async_end(&op->async);
        list_unlink(pos);
        free(op);
    }
    while (ts->pool != NULL) {
        struct timed_op *op = ts->pool;
        ts->pool = op->next;
        free(op);
    }
    free(ts);
}

static const struct store_ops timed_ops = {
    .name = "timed",
    .close = t_close,
    .ping = t_ping,
    .login = t_login,
    .put_session = t_put_session,
    .get_session = t_get_session,
    .refresh = t_refresh,
    .revoke = t_revoke,
    .user_info = t_user_info,
    .get_user = t_get_user,
    .purge_expired = t_purge_expired,
    .broken = t_broken,
};

/* ---- claims ---- */

static void on_claim(void *arg, int status, enum store_claim claim, const char *outcome, size_t len)
{
    struct timed_op *op = arg;
    store_claim_fn *fn = op->fn.claim;
    fn(op_end(op, status), status, claim, outcome, len);
}

static void t_claim(struct store *st, struct async_slot *slot, const char *appid,
                    const uint8_t key[CRYPTO_HASH_LEN], const char *owner, long hold_ms,
                    store_claim_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_CLAIM, arg);
    if (op == NULL) {
        store_claim(inner_of(st), slot, appid, key, owner, hold_ms, done, arg);
        return;
    }
    op->fn.claim = done;
    store_claim(inner_of(st), &op->inner, appid, key, owner, hold_ms, on_claim, op);
}

static void t_claim_publish(struct store *st, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                            const char *openid, const char *outcome, size_t len, long keep_ms)
{
    metrics_store_sent(METRICS_STORE_CLAIM_PUBLISH);
    store_claim_publish(inner_of(st), appid, key, openid, outcome, len, keep_ms);
}

static void t_claim_release(struct store *st, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                            const char *owner)
{
    metrics_store_sent(METRICS_STORE_CLAIM_RELEASE);
    store_claim_release(inner_of(st), appid, key, owner);
}

/* ---- the access-token lease ---- */

static void on_token(void *arg, int status, const char *token, int64_t expires_at)
{
    struct timed_op *op = arg;
    store_token_fn *fn = op->fn.token;
    fn(op_end(op, status), status, token, expires_at);
}

static void t_lease_read(struct store *st, struct async_slot *slot, const char *appid,
                         store_token_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_LEASE_READ, arg);
    if (op == NULL) {
        store_lease_read(inner_of(st), slot, appid, done, arg);
        return;
    }
    op->fn.token = done;
    store_lease_read(inner_of(st), &op->inner, appid, on_token, op);
}

static void on_lease(void *arg, int status, bool got)
{
    struct timed_op *op = arg;
    store_lease_fn *fn = op->fn.lease;
    fn(op_end(op, status), status, got);
}

static void t_lease_take(struct store *st, struct async_slot *slot, const char *appid,
                         const char *owner, long ms, store_lease_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_LEASE_TAKE, arg);
    if (op == NULL) {
        store_lease_take(inner_of(st), slot, appid, owner, ms, done, arg);
        return;
    }
    op->fn.lease = done;
    store_lease_take(inner_of(st), &op->inner, appid, owner, ms, on_lease, op);
}

static void t_lease_publish(struct store *st, const char *appid, const char *owner,
                            const char *token, int64_t expires_at)
{
    metrics_store_sent(METRICS_STORE_LEASE_PUBLISH);
    store_lease_publish(inner_of(st), appid, owner, token, expires_at);
}

static void t_lease_invalidate(struct store *st, const char *appid, const char *bad)
{
    metrics_store_sent(METRICS_STORE_LEASE_INVALIDATE);
    store_lease_invalidate(inner_of(st), appid, bad);
}

/* ---- shared rate limits ---- */

static void on_limit(void *arg, int status, uint64_t wait_us)
{
    struct timed_op *op = arg;
    store_limit_fn *fn = op->fn.limit;
    fn(op_end(op, status), status, wait_us);
}

static void t_limit_take(struct store *st, struct async_slot *slot, const char *appid,
                         const char *name, uint64_t interval_us, uint32_t burst,
                         store_limit_fn *done, void *arg)
{
    struct timed_op *op = op_begin(st, slot, METRICS_STORE_LIMIT_TAKE, arg);
    if (op == NULL) {
        store_limit_take(inner_of(st), slot, appid, name, interval_us, burst, done, arg);
        return;
    }
    op->fn.limit = done;
    store_limit_take(inner_of(st), &op->inner, appid, name, interval_us, burst, on_limit, op);
}

int store_timed_wrap(struct store *inner, struct store **out)
{
    struct timed_store *ts = calloc(1, sizeof(*ts));
    if (ts == NULL)
        return -1;
    ts->base.ops = &timed_ops;
    ts->inner = inner;
    ts->claims = (struct store_claim_ops){
        .claim = t_claim, .publish = t_claim_publish, .release = t_claim_release};
    ts->lease = (struct store_lease_ops){.read = t_lease_read,
                                         .take = t_lease_take,
                                         .publish = t_lease_publish,
                                         .invalidate = t_lease_invalidate};
    ts->limits = (struct store_limit_ops){.take = t_limit_take};
    ts->base.claims = inner->claims != NULL ? &ts->claims : NULL;
    ts->base.lease = inner->lease != NULL ? &ts->lease : NULL;
    ts->base.limits = inner->limits != NULL ? &ts->limits : NULL;
    list_init(&ts->started);
    *out = &ts->base;
    return 0;
}
