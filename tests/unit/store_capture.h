/*
 * What the store tests share (test_store.c, test_store_sqlite.c, test_store_cache.c): a
 * capture of one operation's answer with its own pending slot, the callbacks that fill it for
 * every kind of store operation, and ways to run a loop until the answers are in. Header-only
 * (static inline), included by each test file.
 */
#ifndef WXLOGIN_TEST_STORE_CAPTURE_H
#define WXLOGIN_TEST_STORE_CAPTURE_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "loop_drain.h"
#include "runtime/async.h"
#include "store/store.h"

#ifndef WAIT_MS
#define WAIT_MS 3000
#endif

/* What one operation answered. Each has its own pending slot. */
struct cap {
    struct loop *loop; /* stopped by the callback */
    struct async_slot slot;
    int calls, status;
    bool pending_in_callback; /* the slot still held the operation when it called back */
    bool has;                 /* a record was passed */
    struct store_session s;
    struct store_user u;
    long count;
    enum store_claim claim;
    char outcome[STORE_OUTCOME_MAX + 1];
    size_t outcome_len;
    char token[STORE_TOKEN_MAX + 1];
    int64_t expires_at;
    bool got;
    uint64_t wait_us;
};

static inline void called(struct cap *c, int status)
{
    c->calls++;
    c->status = status;
    c->pending_in_callback = async_pending(&c->slot);
    if (c->loop != NULL)
        loop_stop(c->loop);
}

static inline void on_done(void *arg, int status)
{
    called(arg, status);
}

static inline void on_session(void *arg, int status, const struct store_session *s)
{
    struct cap *c = arg;
    c->has = s != NULL;
    if (s != NULL)
        c->s = *s;
    called(c, status);
}

static inline void on_user(void *arg, int status, const struct store_user *u)
{
    struct cap *c = arg;
    c->has = u != NULL;
    if (u != NULL)
        c->u = *u;
    called(c, status);
}

static inline void on_count(void *arg, int status, long count)
{
    struct cap *c = arg;
    c->count = count;
    called(c, status);
}

static inline void on_claim(void *arg, int status, enum store_claim claim, const char *outcome,
                            size_t len)
{
    struct cap *c = arg;
    c->claim = claim;
    c->outcome_len = len;
    snprintf(c->outcome, sizeof(c->outcome), "%.*s", (int)len, outcome != NULL ? outcome : "");
    called(c, status);
}

static inline void on_token(void *arg, int status, const char *token, int64_t expires_at)
{
    struct cap *c = arg;
    snprintf(c->token, sizeof(c->token), "%s", token != NULL ? token : "(null)");
    c->expires_at = expires_at;
    called(c, status);
}

static inline void on_lease(void *arg, int status, bool got)
{
    struct cap *c = arg;
    c->got = got;
    called(c, status);
}

static inline void on_limit(void *arg, int status, uint64_t wait_us)
{
    struct cap *c = arg;
    c->wait_us = wait_us;
    called(c, status);
}

static inline void on_revoked(void *arg, int status, const struct store_revoked *r)
{
    struct cap *c = arg;
    c->has = r != NULL;
    c->count = r != NULL ? r->count : 0;
    called(c, status);
}

/* ---- starting operations ---- */

/* Ends the session of hash (a logout) into c's slot. */
static inline void cap_delete_session(struct store *st, struct cap *c, const char *appid,
                                      const uint8_t *hash)
{
    struct store_revoke in = {
        .what = STORE_REVOKE_TOKEN, .appid = appid, .hash = hash, .now = (int64_t)time(NULL)};
    store_revoke(st, &c->slot, &in, on_revoked, c);
}

/* Starts a login into c's slot; c->loop is the loop its callback stops. */
static inline void cap_start_login(struct store *st, struct loop *loop, struct cap *c,
                                   const char *appid, const char *openid, const char *unionid,
                                   const char *key, const uint8_t *hash, int64_t expires_at,
                                   int64_t now)
{
    uint8_t sid[STORE_SID_LEN];
    assert_int_equal(store_sid_new(sid), 0);
    struct store_login in = {.appid = appid,
                             .openid = openid,
                             .unionid = unionid,
                             .session_key = key,
                             .token_hash = hash,
                             .sid = sid,
                             .expires_at = expires_at,
                             .now = now};
    c->loop = loop;
    store_login(st, &c->slot, &in, on_done, c);
}

/* ---- running the loop ---- */

struct deadline {
    struct loop *loop;
    bool passed;
};

static inline void on_deadline(void *arg)
{
    struct deadline *d = arg;
    d->passed = true;
    loop_stop(d->loop);
}

static inline bool all_called(const struct cap *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].calls == 0)
            return false;
    return true;
}

/* Runs loop until c[0..n) all answered (or WAIT_MS passed), then until everything posted so far
 * has run; true when each answered exactly once and found its slot empty. No cmocka asserts:
 * worker threads use it too. */
static inline bool run_until_answered(struct loop *loop, struct cap *c, size_t n)
{
    struct deadline d = {loop, false};
    struct loop_timer t;
    loop_timer_init(&t, on_deadline, &d);
    loop_timer_start(loop, &t, WAIT_MS);
    while (!all_called(c, n) && !d.passed)
        if (loop_run(loop) != 0)
            return false;
    loop_timer_stop(loop, &t);
    if (loop_post(loop, stop_loop, loop) != 0 || loop_run(loop) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (c[i].calls != 1 || c[i].pending_in_callback || async_pending(&c[i].slot))
            return false;
    return true;
}

/* The same, asserting. */
static inline void await_all(struct loop *loop, struct cap *c, size_t n)
{
    assert_true(run_until_answered(loop, c, n));
}

static inline void token_hash(const char *token, uint8_t out[CRYPTO_HASH_LEN])
{
    crypto_sha256(token, strlen(token), out);
}

#endif
