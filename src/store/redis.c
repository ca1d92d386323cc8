/*
 * store/redis: the shared store, for several wxlogin instances behind a load balancer.
 *
 * One connection per worker thread (redis/rconn.h), commands answered asynchronously on the
 * worker's loop. Keys are namespaced by app:
 *   wxlogin:<appid>:u:<openid>       hash: sk, prev_sk, prev_at, unionid, updated
 *   wxlogin:<appid>:s:<sha256 hex>   hash: openid, exp; expires by Redis TTL (EXPIREAT exp).
 *                                    A request that names no app is looked for in every
 *                                    app's namespace, in one script (find_lua)
 *   wxlogin:<appid>:c:<sha256 hex>   a login code's exchange: "claim:<owner>" while claimed,
 *                                    then its outcome (JSON)
 *   wxlogin:<appid>:at               hash: token, exp; the app's access token (EXPIREAT exp)
 *   wxlogin:<appid>:at:lease         who may fetch a new access token (SET NX PX, random owner)
 *   wxlogin:<appid>:rl:<kind>:<hex>  a rate limit's bucket (limit/limit.h): its theoretical
 *                                    arrival time in µs, expiring when the bucket is full
 *                                    again; <hex> is a keyed hash, never the address or openid
 *                                    (wxlogin:rl:... for a bucket of no app: a request that names
 *                                    none of several apps)
 * Writes that go together (the user upsert and the new session) are one Lua script, so they are
 * atomic; a login is acknowledged only after Redis answered the script. Scripts run by SHA-1
 * (EVALSHA; rconn loads them on each connection); a NOSCRIPT answer reloads them and sends the
 * operation once more. Redis Cluster is not supported (the scripts touch keys they compute).
 *
 * Each operation is a struct rop from a per-worker pool: rconn calls back exactly once per
 * command, so a cancelled operation waits for that answer (bounded by store_timeout_ms) and then
 * returns to the pool without calling its owner.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis/rconn.h"
#include "redis/rhealth.h"
#include "runtime/async.h"
#include "store/backend.h"
#include "store/seal.h"
#include "util/list.h"

#define KEY_MAX (32 + 2 * STORE_ID_MAX + 2 * CRYPTO_HASH_LEN)
#define POOL_MAX 256
#define CLAIM_PREFIX "claim:"

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

/* ARGV token hash (hex), now, the apps served (a JSON array). get_lua in each app's namespace
 * until the hash is found: a token hash is unique across apps, so the first is the only one. */
static const char find_lua[] =
    "for _, app in ipairs(cjson.decode(ARGV[3])) do\n"
    "  local s = redis.call('HMGET', 'wxlogin:' .. app .. ':s:' .. ARGV[1], 'openid', 'exp')\n"
    "  if s[1] and s[2] then\n"
    "    if tonumber(s[2]) <= tonumber(ARGV[2]) then return false end\n"
    "    local u = redis.call('HGET', 'wxlogin:' .. app .. ':u:' .. s[1], 'unionid')\n"
    "    return {s[1], s[2], u or '', app}\n"
    "  end\n"
    "end\n"
    "return false\n";

/* KEYS[1] code; ARGV hold ms, claim value. Answers nil when claimed now, else what is there
 * ("claim:..." while someone holds it, or the published outcome). */
static const char claim_lua[] = "local v = redis.call('GET', KEYS[1])\n"
                                "if v then return v end\n"
                                "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])\n"
                                "return false\n";

/* KEYS[1] code; ARGV claim value. Only the holder's own claim is released. */
static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"
    "return 1\n";

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

/* KEYS[1] bucket; ARGV interval µs, burst. GCRA on Redis's clock, so every instance agrees
 * whatever its own: the key holds the time the bucket is next full (its theoretical arrival
 * time, µs); a token is taken when that stays within burst intervals of now. Answers 0 when a
 * token was taken, else the µs until one is due. Exactly limit_bucket_take() (limit/limit.c).
 * TIME before a write needs effects replication, the default since Redis 5 (asked for below
 * 5, where it is not). */
static const char limit_lua[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval = tonumber(ARGV[1])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "if tat < now then tat = now end\n"
    "local nxt = tat + interval\n"
    "local wait = nxt - now - interval * tonumber(ARGV[2])\n"
    "if wait > 0 then return wait end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000))\n"
    "return 0\n";

enum script_id {
    S_LOGIN,
    S_PUT,
    S_GET,
    S_FIND,
    S_CLAIM,
    S_RELEASE,
    S_PUBLISH_TOKEN,
    S_INVALIDATE,
    S_LIMIT,
    S_COUNT
};

struct rd_shared {
    struct store_shared base;
    struct rconn_opts opts;
    struct rhealth *health; /* why the store fails, logged once per change (every worker's) */
    const uint8_t *master_key;
    char *apps_json; /* the apps served, for find_lua */
    struct rconn_script scripts[S_COUNT];
    const struct rconn_script *script_ptrs[S_COUNT];
};

struct rd_store {
    struct store base;
    struct rd_shared *sh;
    struct rconn *conn;
    struct rop *pool;
    size_t npool;
    struct list started; /* operations sent and not yet answered */
};

/* How a reply is turned into the owner's answer. */
enum rop_kind { K_DONE, K_DEL, K_SESSION, K_USER, K_CLAIM, K_TOKEN, K_LEASE, K_LIMIT, K_NONE };

#define ARGV_MAX 12

struct rop {
    struct async async;
    struct rd_store *st;
    enum rop_kind kind;
    bool cancelled;
    bool resent; /* sent again after NOSCRIPT */
    /* the command, kept for a resend: argv points into buf */
    int argc;
    const char *argv[ARGV_MAX];
    size_t lens[ARGV_MAX];
    char buf[2 * KEY_MAX + STORE_SEALED_MAX + STORE_OUTCOME_MAX + 3 * STORE_ID_MAX + 160];
    size_t used;
    char appid[STORE_ID_MAX + 1], openid[STORE_ID_MAX + 1];
    union {
        store_done_fn *done;
        store_session_fn *session;
        store_user_fn *user;
        store_claim_fn *claim;
        store_token_fn *token;
        store_lease_fn *lease;
        store_limit_fn *limit;
    } fn;
    void *arg;
    struct rop *next;
    struct list node; /* its store's started operations */
};

/* ---- operations ---- */

static struct rop *rop_get(struct rd_store *st, enum rop_kind kind, void *arg)
{
    struct rop *op = st->pool;
    if (op != NULL) {
        st->pool = op->next;
        st->npool--;
    } else {
        op = malloc(sizeof(*op));
        if (op == NULL)
            return NULL;
    }
    op->st = st;
    op->kind = kind;
    op->cancelled = false;
    op->resent = false;
    op->argc = 0;
    op->used = 0;
    op->appid[0] = op->openid[0] = '\0';
    op->arg = arg;
    op->node.next = op->node.prev = NULL;
    list_push_back(&st->started, &op->node);
    return op;
}

static void rop_put(struct rop *op)
{
    struct rd_store *st = op->st;
    list_unlink(&op->node);
    crypto_wipe(op->buf, op->used); /* it held a sealed key or a token */
    if (st->npool < POOL_MAX) {
        op->next = st->pool;
        st->pool = op;
        st->npool++;
        return;
    }
    free(op);
}

static void rop_cancel(struct async *a)
{
    struct rop *op = (struct rop *)(void *)a;
    op->cancelled = true; /* rconn still owes it an answer; on_reply recycles it */
}

/* Appends an argument (copied into the op's buffer). False when it does not fit. */
static bool arg_add(struct rop *op, const void *p, size_t n)
{
    if (op->argc == ARGV_MAX || op->used + n + 1 > sizeof(op->buf))
        return false;
    char *d = op->buf + op->used;
    memcpy(d, p, n);
    d[n] = '\0';
    op->argv[op->argc] = d;
    op->lens[op->argc++] = n;
    op->used += n + 1;
    return true;
}

static bool arg_str(struct rop *op, const char *s)
{
    return arg_add(op, s, strlen(s));
}

/* Appends an argument that outlives the op (not copied). */
static bool arg_ref(struct rop *op, const char *s)
{
    if (op->argc == ARGV_MAX)
        return false;
    op->argv[op->argc] = s;
    op->lens[op->argc++] = strlen(s);
    return true;
}

static bool arg_num(struct rop *op, long long v)
{
    char n[24];
    return arg_add(op, n, (size_t)snprintf(n, sizeof(n), "%lld", v));
}

/* wxlogin:<appid>:<kind>[:<rest>] */
static bool arg_key(struct rop *op, const char *appid, const char *kind, const char *rest)
{
    char k[KEY_MAX];
    int n = snprintf(k, sizeof(k), "wxlogin:%s:%s%s%s", appid, kind, rest[0] ? ":" : "", rest);
    return n > 0 && (size_t)n < sizeof(k) && arg_add(op, k, (size_t)n);
}

static bool arg_hash_key(struct rop *op, const char *appid, const char *kind, const uint8_t *hash)
{
    char h[2 * CRYPTO_HASH_LEN + 1];
    crypto_hex(hash, CRYPTO_HASH_LEN, h);
    return arg_key(op, appid, kind, h);
}

/* EVALSHA <sha> <nkeys> as the command's first arguments. */
static bool arg_script(struct rop *op, enum script_id s, int nkeys)
{
    return arg_str(op, "EVALSHA") && arg_str(op, op->st->sh->scripts[s].sha) && arg_num(op, nkeys);
}

static void copy_str(const redisReply *r, char out[STORE_ID_MAX + 1])
{
    size_t n = r != NULL && r->type == REDIS_REPLY_STRING ? r->len : 0;
    if (n > STORE_ID_MAX)
        n = 0;
    if (n > 0)
        memcpy(out, r->str, n);
    out[n] = '\0';
}

static bool is_error(const redisReply *r)
{
    return r == NULL || r->type == REDIS_REPLY_ERROR;
}

static void deliver_user(struct rop *op, const redisReply *r)
{
    struct store_user u;
    memset(&u, 0, sizeof(u));
    int status = is_error(r) ? STORE_ERROR : STORE_OK;
    if (status == STORE_OK && (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
                               r->element[1]->type != REDIS_REPLY_STRING))
        status = STORE_NOT_FOUND;
    if (status == STORE_OK) {
        const uint8_t *mk = op->st->sh->master_key;
        memcpy(u.appid, op->appid, sizeof(u.appid));
        memcpy(u.openid, op->openid, sizeof(u.openid));
        copy_str(r->element[0], u.unionid);
        const redisReply *sk = r->element[1], *prev = r->element[2], *at = r->element[3];
        bool has_prev = prev->type == REDIS_REPLY_STRING && at->type == REDIS_REPLY_STRING;
        if (!store_user_open(mk, &u, (const uint8_t *)sk->str, sk->len,
                             has_prev ? (const uint8_t *)prev->str : NULL, has_prev ? prev->len : 0,
                             has_prev ? strtoll(at->str, NULL, 10) : 0))
            status = STORE_NOT_FOUND;
    }
    op->fn.user(op->arg, status, status == STORE_OK ? &u : NULL);
    crypto_wipe(&u, sizeof(u));
}

static void deliver_session(struct rop *op, const redisReply *r)
{
    struct store_session s;
    memset(&s, 0, sizeof(s));
    int status = is_error(r) ? STORE_ERROR : STORE_OK;
    if (status == STORE_OK && r->type == REDIS_REPLY_ARRAY &&
        (r->elements == 3 || r->elements == 4)) {
        if (r->elements == 4) /* find_lua: the app it was found in */
            copy_str(r->element[3], s.appid);
        else
            memcpy(s.appid, op->appid, sizeof(s.appid));
        copy_str(r->element[0], s.openid);
        copy_str(r->element[2], s.unionid);
        const redisReply *e = r->element[1];
        s.expires_at = e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
    } else if (status == STORE_OK) {
        status = STORE_NOT_FOUND; /* the script answers nil */
    }
    op->fn.session(op->arg, status, status == STORE_OK ? &s : NULL);
}

static void deliver_claim(struct rop *op, const redisReply *r)
{
    if (is_error(r)) {
        op->fn.claim(op->arg, STORE_ERROR, STORE_CLAIM_BUSY, NULL, 0);
    } else if (r->type == REDIS_REPLY_NIL) {
        op->fn.claim(op->arg, STORE_OK, STORE_CLAIM_MINE, NULL, 0);
    } else if (r->type == REDIS_REPLY_STRING &&
               (r->len == 0 || strncmp(r->str, CLAIM_PREFIX, sizeof(CLAIM_PREFIX) - 1) == 0)) {
        /* Held by someone ("" is how earlier versions marked a claim). */
        op->fn.claim(op->arg, STORE_OK, STORE_CLAIM_BUSY, NULL, 0);
    } else if (r->type == REDIS_REPLY_STRING) {
        op->fn.claim(op->arg, STORE_OK, STORE_CLAIM_KNOWN, r->str, r->len);
    } else {
        op->fn.claim(op->arg, STORE_ERROR, STORE_CLAIM_BUSY, NULL, 0);
    }
}

static void deliver_token(struct rop *op, const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        op->fn.token(op->arg, STORE_ERROR, "", 0);
        return;
    }
    const redisReply *tok = r->element[0], *exp = r->element[1];
    if (tok->type != REDIS_REPLY_STRING || exp->type != REDIS_REPLY_STRING ||
        tok->len > STORE_TOKEN_MAX) {
        op->fn.token(op->arg, STORE_OK, "", 0);
        return;
    }
    op->fn.token(op->arg, STORE_OK, tok->str, strtoll(exp->str, NULL, 10));
}

static void send_op(struct rop *op);

static void on_reply(const redisReply *r, void *arg)
{
    struct rop *op = arg;
    if (rconn_noscript(r) && !op->resent && !op->cancelled) {
        /* The server lost our scripts (SCRIPT FLUSH, a restart behind a proxy): load them
         * again, and send this once more behind the loads. */
        rconn_reload_scripts(op->st->conn);
        op->resent = true;
        send_op(op);
        return;
    }
    if (!op->cancelled) {
        async_end(&op->async);
        switch (op->kind) {
        case K_DONE: op->fn.done(op->arg, is_error(r) ? STORE_ERROR : STORE_OK); break;
        case K_DEL:
            op->fn.done(op->arg, is_error(r) ? STORE_ERROR
                                 : r->type == REDIS_REPLY_INTEGER && r->integer > 0
                                     ? STORE_OK
                                     : STORE_NOT_FOUND);
            break;
        case K_SESSION: deliver_session(op, r); break;
        case K_USER: deliver_user(op, r); break;
        case K_CLAIM: deliver_claim(op, r); break;
        case K_TOKEN: deliver_token(op, r); break;
        case K_LEASE:
            /* "OK" when set, nil when someone holds it */
            op->fn.lease(op->arg, is_error(r) ? STORE_ERROR : STORE_OK,
                         !is_error(r) && r->type == REDIS_REPLY_STATUS);
            break;
        case K_LIMIT:
            if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= 0)
                op->fn.limit(op->arg, STORE_OK, (uint64_t)r->integer);
            else
                op->fn.limit(op->arg, STORE_ERROR, 0);
            break;
        case K_NONE: break;
        }
    }
    rop_put(op);
}

static void send_op(struct rop *op)
{
    rconn_command(op->st->conn, on_reply, op, op->argc, op->argv, op->lens);
}

/* Starts op in slot (NULL: fire and forget), or fails it at once when its arguments did not
 * fit (they are bounded by what the callers validate; this is a safety net). */
static void start(struct rop *op, struct async_slot *slot, bool args_ok)
{
    if (!args_ok) {
        op->cancelled = false;
        async_begin(&op->async, NULL, rop_cancel);
        on_reply(NULL, op);
        return;
    }
    async_begin(&op->async, slot, rop_cancel);
    send_op(op);
}

#define GET_OP(st, kind, arg, fail)                                                                \
    struct rop *op = rop_get(st, kind, arg);                                                       \
    if (op == NULL) {                                                                              \
        fail;                                                                                      \
        return;                                                                                    \
    }

static void rd_ping(struct store *s, struct async_slot *slot, store_done_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_DONE, arg, done(arg, STORE_ERROR));
    op->fn.done = done;
    start(op, slot, arg_str(op, "PING"));
}

static void rd_login(struct store *s, struct async_slot *slot, const struct store_login *in,
                     store_done_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_DONE, arg, done(arg, STORE_ERROR));
    op->fn.done = done;
    uint8_t sealed[STORE_SEALED_MAX];
    int n = store_seal(st->sh->master_key, in->appid, in->openid, in->session_key, sealed);
    bool ok = n > 0 && arg_script(op, S_LOGIN, in->token_hash != NULL ? 2 : 1) &&
              arg_key(op, in->appid, "u", in->openid) &&
              (in->token_hash == NULL || arg_hash_key(op, in->appid, "s", in->token_hash)) &&
              arg_add(op, sealed, (size_t)n) && arg_str(op, in->unionid) && arg_num(op, in->now) &&
              arg_str(op, in->openid) && arg_num(op, in->expires_at);
    crypto_wipe(sealed, sizeof(sealed));
    start(op, slot, ok);
}

static void rd_put_session(struct store *s, struct async_slot *slot,
                           const uint8_t hash[CRYPTO_HASH_LEN], const char *appid,
                           const char *openid, int64_t expires_at, int64_t now, store_done_fn *done,
                           void *arg)
{
    (void)now;
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_DONE, arg, done(arg, STORE_ERROR));
    op->fn.done = done;
    start(op, slot,
          arg_script(op, S_PUT, 1) && arg_hash_key(op, appid, "s", hash) && arg_str(op, openid) &&
              arg_num(op, expires_at));
}

static void rd_get_session(struct store *s, struct async_slot *slot, const char *appid,
                           const uint8_t hash[CRYPTO_HASH_LEN], int64_t now, store_session_fn *done,
                           void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_SESSION, arg, done(arg, STORE_ERROR, NULL));
    op->fn.session = done;
    if (appid == NULL) {
        char h[2 * CRYPTO_HASH_LEN + 1];
        crypto_hex(hash, CRYPTO_HASH_LEN, h);
        start(op, slot,
              arg_script(op, S_FIND, 0) && arg_str(op, h) && arg_num(op, now) &&
                  arg_ref(op, st->sh->apps_json));
        return;
    }
    snprintf(op->appid, sizeof(op->appid), "%s", appid);
    char prefix[KEY_MAX];
    snprintf(prefix, sizeof(prefix), "wxlogin:%s:u:", appid);
    start(op, slot,
          arg_script(op, S_GET, 1) && arg_hash_key(op, appid, "s", hash) && arg_str(op, prefix) &&
              arg_num(op, now));
}

static void rd_delete_session(struct store *s, struct async_slot *slot, const char *appid,
                              const uint8_t hash[CRYPTO_HASH_LEN], store_done_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_DEL, arg, done(arg, STORE_ERROR));
    op->fn.done = done;
    start(op, slot, arg_str(op, "DEL") && arg_hash_key(op, appid, "s", hash));
}

static void rd_get_user(struct store *s, struct async_slot *slot, const char *appid,
                        const char *openid, store_user_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_USER, arg, done(arg, STORE_ERROR, NULL));
    op->fn.user = done;
    snprintf(op->appid, sizeof(op->appid), "%s", appid);
    snprintf(op->openid, sizeof(op->openid), "%s", openid);
    start(op, slot,
          arg_str(op, "HMGET") && arg_key(op, appid, "u", openid) && arg_str(op, "unionid") &&
              arg_str(op, "sk") && arg_str(op, "prev_sk") && arg_str(op, "prev_at"));
}

static void rd_purge_expired(struct store *s, struct async_slot *slot, int64_t now, long limit,
                             store_count_fn *done, void *arg)
{
    (void)s;
    (void)slot;
    (void)now;
    (void)limit;
    done(arg, STORE_OK, 0); /* Redis expires sessions by their TTL */
}

static void rd_close(struct store *s)
{
    struct rd_store *st = (struct rd_store *)s;
    /* Operations in flight end without their callbacks: rconn_free() answers every command
     * NULL, and their ops return to the pool. */
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &st->started)
    {
        struct rop *op = list_item(pos, struct rop, node);
        async_end(&op->async);
        op->cancelled = true;
    }
    rconn_free(st->conn);
    while (st->pool != NULL) {
        struct rop *op = st->pool;
        st->pool = op->next;
        free(op);
    }
    free(st);
}

static const struct store_ops rd_ops = {
    .name = "redis",
    .close = rd_close,
    .ping = rd_ping,
    .login = rd_login,
    .put_session = rd_put_session,
    .get_session = rd_get_session,
    .delete_session = rd_delete_session,
    .get_user = rd_get_user,
    .purge_expired = rd_purge_expired,
};

/* ---- claims ---- */

static void rd_claim(struct store *s, struct async_slot *slot, const char *appid,
                     const uint8_t key[CRYPTO_HASH_LEN], const char *owner, long hold_ms,
                     store_claim_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_CLAIM, arg, done(arg, STORE_ERROR, STORE_CLAIM_BUSY, NULL, 0));
    op->fn.claim = done;
    char value[sizeof(CLAIM_PREFIX) + STORE_OWNER_LEN];
    snprintf(value, sizeof(value), CLAIM_PREFIX "%s", owner);
    start(op, slot,
          arg_script(op, S_CLAIM, 1) && arg_hash_key(op, appid, "c", key) && arg_num(op, hold_ms) &&
              arg_str(op, value));
}

static void rd_claim_publish(struct store *s, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                             const char *outcome, size_t len, long keep_ms)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_NONE, NULL, (void)0);
    start(op, NULL,
          arg_str(op, "SET") && arg_hash_key(op, appid, "c", key) && arg_add(op, outcome, len) &&
              arg_str(op, "PX") && arg_num(op, keep_ms));
}

static void rd_claim_release(struct store *s, const char *appid, const uint8_t key[CRYPTO_HASH_LEN],
                             const char *owner)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_NONE, NULL, (void)0);
    char value[sizeof(CLAIM_PREFIX) + STORE_OWNER_LEN];
    snprintf(value, sizeof(value), CLAIM_PREFIX "%s", owner);
    start(op, NULL,
          arg_script(op, S_RELEASE, 1) && arg_hash_key(op, appid, "c", key) && arg_str(op, value));
}

static const struct store_claim_ops rd_claim_ops = {
    .claim = rd_claim,
    .publish = rd_claim_publish,
    .release = rd_claim_release,
};

/* ---- the access-token lease ---- */

static void rd_lease_read(struct store *s, struct async_slot *slot, const char *appid,
                          store_token_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_TOKEN, arg, done(arg, STORE_ERROR, "", 0));
    op->fn.token = done;
    start(op, slot,
          arg_str(op, "HMGET") && arg_key(op, appid, "at", "") && arg_str(op, "token") &&
              arg_str(op, "exp"));
}

static void rd_lease_take(struct store *s, struct async_slot *slot, const char *appid,
                          const char *owner, long ms, store_lease_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_LEASE, arg, done(arg, STORE_ERROR, false));
    op->fn.lease = done;
    start(op, slot,
          arg_str(op, "SET") && arg_key(op, appid, "at", "lease") && arg_str(op, owner) &&
              arg_str(op, "NX") && arg_str(op, "PX") && arg_num(op, ms));
}

static void rd_lease_publish(struct store *s, const char *appid, const char *owner,
                             const char *token, int64_t expires_at)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_NONE, NULL, (void)0);
    start(op, NULL,
          arg_script(op, S_PUBLISH_TOKEN, 2) && arg_key(op, appid, "at", "") &&
              arg_key(op, appid, "at", "lease") && arg_str(op, owner) && arg_str(op, token) &&
              arg_num(op, expires_at));
}

static void rd_lease_invalidate(struct store *s, const char *appid, const char *bad)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_NONE, NULL, (void)0);
    start(op, NULL,
          arg_script(op, S_INVALIDATE, 1) && arg_key(op, appid, "at", "") && arg_str(op, bad));
}

static const struct store_lease_ops rd_lease_ops = {
    .read = rd_lease_read,
    .take = rd_lease_take,
    .publish = rd_lease_publish,
    .invalidate = rd_lease_invalidate,
};

/* ---- rate limits ---- */

static void rd_limit_take(struct store *s, struct async_slot *slot, const char *appid,
                          const char *name, uint64_t interval_us, uint32_t burst,
                          store_limit_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_LIMIT, arg, done(arg, STORE_ERROR, 0));
    op->fn.limit = done;
    char k[KEY_MAX];
    int n = appid[0] != '\0' ? snprintf(k, sizeof(k), "wxlogin:%s:rl:%s", appid, name)
                             : snprintf(k, sizeof(k), "wxlogin:rl:%s", name);
    start(op, slot,
          n > 0 && (size_t)n < sizeof(k) && arg_script(op, S_LIMIT, 1) &&
              arg_add(op, k, (size_t)n) && arg_num(op, (long long)interval_us) &&
              arg_num(op, burst));
}

static const struct store_limit_ops rd_limit_ops = {.take = rd_limit_take};

/* ---- opening ---- */

static void rd_shared_free(struct store_shared *base)
{
    struct rd_shared *sh = (struct rd_shared *)base;
    if (sh == NULL)
        return;
    rconn_opts_done(&sh->opts);
    rhealth_free(sh->health);
    free(sh->apps_json);
    free(sh);
}

static int rd_open(struct store_shared *base, struct loop *loop, struct store **out,
                   char err[STORE_ERR_MAX])
{
    struct rd_shared *sh = (struct rd_shared *)base;
    struct rd_store *st = calloc(1, sizeof(*st));
    if (st != NULL) {
        st->base.ops = &rd_ops;
        st->base.claims = &rd_claim_ops;
        st->base.lease = &rd_lease_ops;
        st->base.limits = &rd_limit_ops;
        st->sh = sh;
        list_init(&st->started);
        st->conn = rconn_new(loop, &sh->opts, sh->script_ptrs, S_COUNT);
    }
    if (st == NULL || st->conn == NULL) {
        free(st);
        snprintf(err, STORE_ERR_MAX, "store: out of memory");
        return -1;
    }
    *out = &st->base;
    return 0;
}

static const struct store_shared_ops rd_shared_ops = {.open = rd_open, .free = rd_shared_free};

int store_redis_shared_new(const char *url, const struct store_config *cfg,
                           struct store_shared **out, char err[STORE_ERR_MAX])
{
    struct rd_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL) {
        snprintf(err, STORE_ERR_MAX, "store: out of memory");
        return -1;
    }
    char perr[RCONN_ERR_MAX];
    if (rconn_parse_url(url, &sh->opts, perr) != 0) {
        snprintf(err, STORE_ERR_MAX, "store: %.200s", perr);
        free(sh);
        return -1;
    }
    sh->base.ops = &rd_shared_ops;
    sh->opts.timeout_ms = cfg->timeout_ms;
    char target[512];
    store_url_redacted(url, target, sizeof(target));
    sh->health = rhealth_new(target);
    sh->opts.health = sh->health;
    sh->master_key = cfg->master_key;
    json_t *apps = json_array();
    for (size_t i = 0; apps != NULL && i < cfg->napps; i++)
        if (json_array_append_new(apps, json_string(cfg->apps[i])) != 0) {
            json_decref(apps);
            apps = NULL;
        }
    sh->apps_json = apps != NULL ? json_dumps(apps, JSON_COMPACT) : NULL;
    json_decref(apps);
    if (sh->apps_json == NULL || sh->health == NULL) { /* out of memory, or an appid that is
                                                           not UTF-8 */
        snprintf(err, STORE_ERR_MAX, "store: cannot list the apps served for Redis");
        rd_shared_free(&sh->base);
        return -1;
    }
    static const char *const texts[S_COUNT] = {
        [S_LOGIN] = login_lua,
        [S_PUT] = put_lua,
        [S_GET] = get_lua,
        [S_FIND] = find_lua,
        [S_CLAIM] = claim_lua,
        [S_RELEASE] = release_lua,
        [S_PUBLISH_TOKEN] = publish_token_lua,
        [S_INVALIDATE] = invalidate_token_lua,
        [S_LIMIT] = limit_lua,
    };
    for (int i = 0; i < S_COUNT; i++) {
        rconn_script_init(&sh->scripts[i], texts[i]);
        sh->script_ptrs[i] = &sh->scripts[i];
    }
    *out = &sh->base;
    return 0;
}
