/*
 * session_redis: the shared store, for several wxlogin instances behind a load balancer.
 *
 * One connection per worker thread (redis/rconn.h), commands answered asynchronously on the
 * worker's loop. Keys are namespaced by app:
 *   wxlogin:<appid>:u:<openid>       hash: sk, prev_sk, prev_at, unionid, updated
 *   wxlogin:<appid>:s:<sha256 hex>   hash: openid, exp; expires by Redis TTL (EXPIREAT exp)
 *   wxlogin:<appid>:c:<sha256 hex>   a login code's exchange: "" while claimed, then its outcome
 *   wxlogin:<appid>:at               hash: token, exp; the app's access token (PEXPIREAT exp)
 *   wxlogin:<appid>:at:lease         who may fetch a new access token (SET NX PX, random owner)
 * Writes that go together (the user upsert and the new session) are one Lua script, so they are
 * atomic; a login is acknowledged only after Redis answered the script. Redis Cluster is not
 * supported (the scripts touch keys they compute).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis/rconn.h"
#include "session/session.h"

#define KEY_MAX (32 + 2 * SESSION_ID_MAX + 2 * CRYPTO_HASH_LEN)

/* KEYS[1] user, KEYS[2] session (optional); ARGV sealed key, unionid, now, openid, exp. */
static const char login_lua[] =
    "local old = redis.call('HGET', KEYS[1], 'sk')\n"
    "if old then redis.call('HSET', KEYS[1], 'prev_sk', old, 'prev_at', ARGV[3]) end\n"
    "redis.call('HSET', KEYS[1], 'sk', ARGV[1], 'updated', ARGV[3])\n"
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'unionid', ARGV[2]) end\n"
    "if #KEYS > 1 then\n"
    "  redis.call('HSET', KEYS[2], 'openid', ARGV[4], 'exp', ARGV[5])\n"
    "  redis.call('EXPIREAT', KEYS[2], ARGV[5])\n"
    "end\n"
    "return 1\n";

/* KEYS[1] session; ARGV openid, exp. */
static const char put_lua[] = "redis.call('HSET', KEYS[1], 'openid', ARGV[1], 'exp', ARGV[2])\n"
                              "redis.call('EXPIREAT', KEYS[1], ARGV[2])\n"
                              "return 1\n";

/* KEYS[1] session; ARGV user key prefix, now. The TTL removes expired sessions; exp is checked
 * as well because TTLs are only as precise as a second. */
static const char get_lua[] = "local s = redis.call('HMGET', KEYS[1], 'openid', 'exp')\n"
                              "if not s[1] or not s[2] then return false end\n"
                              "if tonumber(s[2]) <= tonumber(ARGV[2]) then return false end\n"
                              "local u = redis.call('HGET', ARGV[1] .. s[1], 'unionid')\n"
                              "return {s[1], s[2], u or ''}\n";

/* KEYS[1] code; ARGV hold ms. Answers nil when claimed now, "" when someone holds it, else the
 * published outcome. */
static const char claim_lua[] = "local v = redis.call('GET', KEYS[1])\n"
                                "if v then return v end\n"
                                "redis.call('SET', KEYS[1], '', 'PX', ARGV[1])\n"
                                "return false\n";

/* KEYS[1] token, KEYS[2] lease; ARGV owner, token ("" = none), exp. The lease is released only
 * by its owner. */
static const char publish_token_lua[] =
    "if ARGV[2] ~= '' then\n"
    "  redis.call('HSET', KEYS[1], 'token', ARGV[2], 'exp', ARGV[3])\n"
    "  redis.call('EXPIREAT', KEYS[1], ARGV[3])\n"
    "end\n"
    "if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end\n"
    "return 1\n";

/* KEYS[1] token; ARGV bad. Compare-and-swap: a newer token is never dropped. */
static const char invalidate_token_lua[] =
    "if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

struct redis_store {
    struct session_store base;
    struct rconn *conn;
};

struct rop {
    session_done_fn *done;
    session_get_fn *get;
    session_user_fn *user;
    void *arg;
    session_claim_fn *claim;
    char appid[SESSION_ID_MAX + 1];
    char openid[SESSION_ID_MAX + 1];
};

static struct rop *rop_new(void *arg)
{
    struct rop *op = calloc(1, sizeof(*op));
    if (op != NULL)
        op->arg = arg;
    return op;
}

static void user_key(char out[KEY_MAX], const char *appid, const char *openid)
{
    snprintf(out, KEY_MAX, "wxlogin:%s:u:%s", appid, openid);
}

static void hash_key(char out[KEY_MAX], const char *appid, char kind, const uint8_t *hash)
{
    static const char hex[] = "0123456789abcdef";
    int n = snprintf(out, KEY_MAX, "wxlogin:%s:%c:", appid, kind);
    for (int i = 0; i < CRYPTO_HASH_LEN && n + 2 < KEY_MAX; i++) {
        out[n++] = hex[hash[i] >> 4];
        out[n++] = hex[hash[i] & 15];
    }
    out[n] = '\0';
}

static void session_key(char out[KEY_MAX], const char *appid, const uint8_t *hash)
{
    hash_key(out, appid, 's', hash);
}

static int status_of(const redisReply *r)
{
    return r == NULL || r->type == REDIS_REPLY_ERROR ? SESSION_ERROR : SESSION_OK;
}

/* ---- ops ---- */

static void on_done_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    session_done_fn *done = op->done;
    void *a = op->arg;
    free(op);
    done(status_of(r), a);
}

static void rd_ping(struct session_store *st, session_done_fn *done, void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, arg);
        return;
    }
    op->done = done;
    const char *argv[] = {"PING"};
    rconn_command(s->conn, on_done_reply, op, 1, argv, NULL);
}

static void rd_login(struct session_store *st, const struct session_user *user,
                     const uint8_t *token_hash, int64_t expires_at, int64_t now,
                     session_done_fn *done, void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, arg);
        return;
    }
    op->done = done;
    char ukey[KEY_MAX], skey[KEY_MAX], nows[24], exps[24];
    user_key(ukey, user->appid, user->openid);
    if (token_hash != NULL)
        session_key(skey, user->appid, token_hash);
    snprintf(nows, sizeof(nows), "%lld", (long long)now);
    snprintf(exps, sizeof(exps), "%lld", (long long)expires_at);
    const int nkeys = token_hash != NULL ? 2 : 1;
    const char *argv[11];
    size_t lens[11];
    int n = 0;
    argv[n] = "EVAL", lens[n++] = 4;
    argv[n] = login_lua, lens[n++] = sizeof(login_lua) - 1;
    argv[n] = nkeys == 2 ? "2" : "1", lens[n++] = 1;
    argv[n] = ukey, lens[n++] = strlen(ukey);
    if (nkeys == 2)
        argv[n] = skey, lens[n++] = strlen(skey);
    argv[n] = (const char *)user->sealed_key, lens[n++] = user->sealed_len;
    argv[n] = user->unionid, lens[n++] = strlen(user->unionid);
    argv[n] = nows, lens[n++] = strlen(nows);
    argv[n] = user->openid, lens[n++] = strlen(user->openid);
    argv[n] = exps, lens[n++] = strlen(exps);
    rconn_command(s->conn, on_done_reply, op, n, argv, lens);
}

static void rd_put_session(struct session_store *st, const uint8_t token_hash[CRYPTO_HASH_LEN],
                           const char *appid, const char *openid, int64_t expires_at, int64_t now,
                           session_done_fn *done, void *arg)
{
    (void)now;
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, arg);
        return;
    }
    op->done = done;
    char skey[KEY_MAX], exps[24];
    session_key(skey, appid, token_hash);
    snprintf(exps, sizeof(exps), "%lld", (long long)expires_at);
    const char *argv[] = {"EVAL", put_lua, "1", skey, openid, exps};
    rconn_command(s->conn, on_done_reply, op, 6, argv, NULL);
}

static void copy_str(const redisReply *r, char out[SESSION_ID_MAX + 1])
{
    size_t n = r != NULL && r->type == REDIS_REPLY_STRING ? r->len : 0;
    if (n > SESSION_ID_MAX)
        n = 0;
    if (n > 0)
        memcpy(out, r->str, n);
    out[n] = '\0';
}

static void on_get_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    session_get_fn *get = op->get;
    void *a = op->arg;
    struct session_record rec;
    memset(&rec, 0, sizeof(rec));
    int status = status_of(r);
    if (status == SESSION_OK && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        memcpy(rec.appid, op->appid, sizeof(rec.appid));
        copy_str(r->element[0], rec.openid);
        copy_str(r->element[2], rec.unionid);
        const redisReply *e = r->element[1];
        rec.expires_at = e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
    } else if (status == SESSION_OK) {
        status = SESSION_NOT_FOUND; /* the script answers nil */
    }
    free(op);
    get(status, status == SESSION_OK ? &rec : NULL, a);
}

static void rd_get_session(struct session_store *st, const char *appid,
                           const uint8_t token_hash[CRYPTO_HASH_LEN], int64_t now,
                           session_get_fn *done, void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, NULL, arg);
        return;
    }
    op->get = done;
    snprintf(op->appid, sizeof(op->appid), "%s", appid);
    char skey[KEY_MAX], prefix[KEY_MAX], nows[24];
    session_key(skey, appid, token_hash);
    snprintf(prefix, sizeof(prefix), "wxlogin:%s:u:", appid);
    snprintf(nows, sizeof(nows), "%lld", (long long)now);
    const char *argv[] = {"EVAL", get_lua, "1", skey, prefix, nows};
    rconn_command(s->conn, on_get_reply, op, 6, argv, NULL);
}

static void on_del_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    session_done_fn *done = op->done;
    void *a = op->arg;
    free(op);
    int status = status_of(r);
    if (status == SESSION_OK)
        status = r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? SESSION_OK : SESSION_NOT_FOUND;
    done(status, a);
}

static void rd_delete_session(struct session_store *st, const char *appid,
                              const uint8_t token_hash[CRYPTO_HASH_LEN], session_done_fn *done,
                              void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, arg);
        return;
    }
    op->done = done;
    char skey[KEY_MAX];
    session_key(skey, appid, token_hash);
    const char *argv[] = {"DEL", skey};
    rconn_command(s->conn, on_del_reply, op, 2, argv, NULL);
}

static void on_user_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    session_user_fn *user = op->user;
    void *a = op->arg;
    struct session_user u;
    memset(&u, 0, sizeof(u));
    int status = status_of(r);
    if (status == SESSION_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
                                 r->element[1]->type != REDIS_REPLY_STRING))
        status = SESSION_NOT_FOUND;
    if (status == SESSION_OK) {
        memcpy(u.appid, op->appid, sizeof(u.appid));
        memcpy(u.openid, op->openid, sizeof(u.openid));
        copy_str(r->element[0], u.unionid);
        const redisReply *sk = r->element[1], *prev = r->element[2], *at = r->element[3];
        if (sk->len == 0 || sk->len > SESSION_SEALED_MAX) {
            status = SESSION_ERROR;
        } else {
            memcpy(u.sealed_key, sk->str, sk->len);
            u.sealed_len = sk->len;
        }
        if (prev->type == REDIS_REPLY_STRING && prev->len > 0 && prev->len <= SESSION_SEALED_MAX &&
            at->type == REDIS_REPLY_STRING) {
            memcpy(u.prev_sealed_key, prev->str, prev->len);
            u.prev_len = prev->len;
            u.prev_replaced_at = strtoll(at->str, NULL, 10);
        }
    }
    free(op);
    user(status, status == SESSION_OK ? &u : NULL, a);
    crypto_wipe(&u, sizeof(u));
}

static void rd_get_user(struct session_store *st, const char *appid, const char *openid,
                        session_user_fn *done, void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, NULL, arg);
        return;
    }
    op->user = done;
    snprintf(op->appid, sizeof(op->appid), "%s", appid);
    snprintf(op->openid, sizeof(op->openid), "%s", openid);
    char ukey[KEY_MAX];
    user_key(ukey, appid, openid);
    const char *argv[] = {"HMGET", ukey, "unionid", "sk", "prev_sk", "prev_at"};
    rconn_command(s->conn, on_user_reply, op, 6, argv, NULL);
}

static void rd_purge_expired(struct session_store *st, int64_t now, long limit,
                             session_count_fn *done, void *arg)
{
    (void)st;
    (void)now;
    (void)limit;
    done(SESSION_OK, 0, arg); /* Redis expires sessions by their TTL */
}

static void on_claim_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    session_claim_fn *claim = op->claim;
    void *a = op->arg;
    free(op);
    int status = status_of(r);
    if (status != SESSION_OK) {
        claim(status, SESSION_CLAIM_BUSY, NULL, 0, a);
        return;
    }
    if (r->type == REDIS_REPLY_NIL)
        claim(SESSION_OK, SESSION_CLAIM_MINE, NULL, 0, a);
    else if (r->type == REDIS_REPLY_STRING && r->len == 0)
        claim(SESSION_OK, SESSION_CLAIM_BUSY, NULL, 0, a);
    else if (r->type == REDIS_REPLY_STRING)
        claim(SESSION_OK, SESSION_CLAIM_KNOWN, r->str, r->len, a);
    else
        claim(SESSION_ERROR, SESSION_CLAIM_BUSY, NULL, 0, a);
}

static void rd_code_claim(struct session_store *st, const char *appid,
                          const uint8_t code_key[CRYPTO_HASH_LEN], long hold_ms,
                          session_claim_fn *done, void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        done(SESSION_ERROR, SESSION_CLAIM_BUSY, NULL, 0, arg);
        return;
    }
    op->claim = done;
    char key[KEY_MAX], hold[24];
    hash_key(key, appid, 'c', code_key);
    snprintf(hold, sizeof(hold), "%ld", hold_ms);
    const char *argv[] = {"EVAL", claim_lua, "1", key, hold};
    rconn_command(s->conn, on_claim_reply, op, 5, argv, NULL);
}

static void on_publish_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    session_done_fn *done = op->done;
    void *a = op->arg;
    free(op);
    if (done != NULL)
        done(status_of(r), a);
}

static void rd_code_publish(struct session_store *st, const char *appid,
                            const uint8_t code_key[CRYPTO_HASH_LEN], const char *outcome,
                            size_t len, long keep_ms, session_done_fn *done, void *arg)
{
    struct redis_store *s = (struct redis_store *)st;
    struct rop *op = rop_new(arg);
    if (op == NULL) {
        if (done != NULL)
            done(SESSION_ERROR, arg);
        return;
    }
    op->done = done;
    char key[KEY_MAX], keep[24];
    hash_key(key, appid, 'c', code_key);
    if (outcome == NULL) {
        const char *argv[] = {"DEL", key};
        rconn_command(s->conn, on_publish_reply, op, 2, argv, NULL);
        return;
    }
    snprintf(keep, sizeof(keep), "%ld", keep_ms);
    const char *argv[] = {"SET", key, outcome, "PX", keep};
    size_t lens[] = {3, strlen(key), len, 2, strlen(keep)};
    rconn_command(s->conn, on_publish_reply, op, 5, argv, lens);
}

/* ---- the shared access token ---- */

struct share_op {
    wechat_share_read_fn *read;
    wechat_share_lease_fn *lease;
    void *arg;
};

static void on_token_read(const redisReply *r, void *arg)
{
    struct share_op *op = arg;
    wechat_share_read_fn *cb = op->read;
    void *a = op->arg;
    free(op);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        cb(-1, "", 0, a);
        return;
    }
    const redisReply *tok = r->element[0], *exp = r->element[1];
    if (tok->type != REDIS_REPLY_STRING || exp->type != REDIS_REPLY_STRING) {
        cb(0, "", 0, a);
        return;
    }
    cb(0, tok->str, strtoll(exp->str, NULL, 10), a);
}

static void share_read(void *ctx, const char *appid, wechat_share_read_fn *cb, void *arg)
{
    struct redis_store *s = ctx;
    struct share_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        cb(-1, "", 0, arg);
        return;
    }
    op->read = cb;
    op->arg = arg;
    char key[KEY_MAX];
    snprintf(key, sizeof(key), "wxlogin:%s:at", appid);
    const char *argv[] = {"HMGET", key, "token", "exp"};
    rconn_command(s->conn, on_token_read, op, 4, argv, NULL);
}

static void on_lease_reply(const redisReply *r, void *arg)
{
    struct share_op *op = arg;
    wechat_share_lease_fn *cb = op->lease;
    void *a = op->arg;
    free(op);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        cb(-1, false, a);
        return;
    }
    cb(0, r->type == REDIS_REPLY_STATUS, a); /* "OK" when set, nil when someone holds it */
}

static void share_lease(void *ctx, const char *appid, const char *owner, long ms,
                        wechat_share_lease_fn *cb, void *arg)
{
    struct redis_store *s = ctx;
    struct share_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        cb(-1, false, arg);
        return;
    }
    op->lease = cb;
    op->arg = arg;
    char key[KEY_MAX], msb[24];
    snprintf(key, sizeof(key), "wxlogin:%s:at:lease", appid);
    snprintf(msb, sizeof(msb), "%ld", ms);
    const char *argv[] = {"SET", key, owner, "NX", "PX", msb};
    rconn_command(s->conn, on_lease_reply, op, 6, argv, NULL);
}

static void ignore_reply(const redisReply *r, void *arg)
{
    (void)r;
    (void)arg;
}

static void share_publish(void *ctx, const char *appid, const char *owner, const char *token,
                          int64_t expires_at)
{
    struct redis_store *s = ctx;
    char tkey[KEY_MAX], lkey[KEY_MAX], exps[24];
    snprintf(tkey, sizeof(tkey), "wxlogin:%s:at", appid);
    snprintf(lkey, sizeof(lkey), "wxlogin:%s:at:lease", appid);
    snprintf(exps, sizeof(exps), "%lld", (long long)expires_at);
    const char *argv[] = {"EVAL", publish_token_lua, "2", tkey, lkey, owner, token, exps};
    rconn_command(s->conn, ignore_reply, NULL, 8, argv, NULL);
}

static void share_invalidate(void *ctx, const char *appid, const char *bad)
{
    struct redis_store *s = ctx;
    char tkey[KEY_MAX];
    snprintf(tkey, sizeof(tkey), "wxlogin:%s:at", appid);
    const char *argv[] = {"EVAL", invalidate_token_lua, "1", tkey, bad};
    rconn_command(s->conn, ignore_reply, NULL, 5, argv, NULL);
}

static const struct wechat_token_share redis_token_share = {
    .read = share_read,
    .lease = share_lease,
    .publish = share_publish,
    .invalidate = share_invalidate,
};

static void rd_close(struct session_store *st)
{
    struct redis_store *s = (struct redis_store *)st;
    rconn_free(s->conn);
    free(s);
}

static int rd_open(const char *spec, struct loop *loop, long timeout_ms, struct session_store **out,
                   char err[SESSION_ERR_MAX])
{
    struct rconn_opts opts;
    char perr[RCONN_ERR_MAX];
    if (rconn_parse_url(spec, &opts, perr) != 0) {
        snprintf(err, SESSION_ERR_MAX, "store: %.200s", perr);
        return -1;
    }
    opts.timeout_ms = timeout_ms;
    struct redis_store *s = calloc(1, sizeof(*s));
    if (s != NULL) {
        s->base.ops = &session_redis_ops;
        s->conn = rconn_new(loop, &opts);
    }
    rconn_opts_done(&opts);
    if (s == NULL || s->conn == NULL) {
        free(s);
        snprintf(err, SESSION_ERR_MAX, "store: out of memory");
        return -1;
    }
    *out = &s->base;
    return 0;
}

const struct session_ops session_redis_ops = {
    .name = "redis",
    .open = rd_open,
    .close = rd_close,
    .ping = rd_ping,
    .login = rd_login,
    .put_session = rd_put_session,
    .get_session = rd_get_session,
    .delete_session = rd_delete_session,
    .get_user = rd_get_user,
    .purge_expired = rd_purge_expired,
    .code_claim = rd_code_claim,
    .code_publish = rd_code_publish,
    .token_share = &redis_token_share,
};
