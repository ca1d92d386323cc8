/*
 * store/redis: the shared store, for several wxlogin instances behind a load balancer.
 *
 * One connection per worker thread (redis/rconn.h), commands answered asynchronously on the
 * worker's loop. Keys are namespaced by app:
 *   wxlogin:<appid>:u:<openid>       hash: sk, prev_sk, prev_at, unionid, first, updated;
 *                                    expires user_retention after the last login (when set)
 *   wxlogin:<appid>:s:<sha256 hex>   hash: openid, exp, sid, start (the chain's login), ref
 *                                    (refreshed at), next (the successor's hash), client, ua;
 *                                    expires by Redis TTL (EXPIREAT exp). A request that names
 *                                    no app is looked for in every app's namespace, in one
 *                                    script (find_lua)
 *   wxlogin:<appid>:us:<openid>      set: the hashes of the user's tokens (members whose
 *                                    session expired are dropped when the set is read)
 *   wxlogin:<appid>:sid:<sid hex>    the openid a session id belongs to (revocation by id)
 *   wxlogin:<appid>:ban:<openid>     hash: reason, since, until; EXPIREAT until when set
 *   wxlogin:<appid>:uc:<openid>      set: the keys of the code outcomes published for the
 *                                    user (an erasure removes them)
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

/* The session scripts' common part: P is the app's key prefix ("wxlogin:<appid>:"). */
#define LUA_PRELUDE                                                                                \
    "local function gone(P, openid, hex)\n" /* a token's keys, when its session ended */           \
    "  redis.call('DEL', P .. 's:' .. hex)\n"                                                      \
    "  redis.call('SREM', P .. 'us:' .. openid, hex)\n"                                            \
    "end\n"                                                                                        \
    "local function revoke(P, openid, now, sid)\n" /* {live heads ended, tokens} */                \
    "  local n, t, sids = 0, 0, {}\n"                                                              \
    "  for _, h in ipairs(redis.call('SMEMBERS', P .. 'us:' .. openid)) do\n"                      \
    "    local s = redis.call('HMGET', P .. 's:' .. h, 'sid', 'exp', 'next')\n"                    \
    "    if not s[1] then redis.call('SREM', P .. 'us:' .. openid, h)\n"                           \
    "    elseif sid == nil or s[1] == sid then\n"                                                  \
    "      if tonumber(s[2]) > now and not s[3] then n = n + 1 end\n"                              \
    "      t = t + 1\n"                                                                            \
    "      sids[s[1]] = true\n"                                                                    \
    "      gone(P, openid, h)\n"                                                                   \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for k in pairs(sids) do redis.call('DEL', P .. 'sid:' .. k) end\n"                          \
    "  return n, t\n"                                                                              \
    "end\n"                                                                                        \
    "local function keep_until(key, exp, now)\n" /* the key lives at least until exp */            \
    "  local t = redis.call('TTL', key)\n"                                                         \
    "  if t < exp - now then redis.call('EXPIREAT', key, exp) end\n"                               \
    "end\n"

/* ARGV prefix, openid, sealed key, unionid, now, retention (0: none), and for a session: its
 * hash (hex), exp, sid (hex), client, user agent. 'banned' and no write under a ban in force. */
static const char login_lua[] = LUA_PRELUDE
    "local P, openid, now = ARGV[1], ARGV[2], tonumber(ARGV[5])\n"
    "local ban = redis.call('HGET', P .. 'ban:' .. openid, 'until')\n"
    "if ban and (ban == '0' or tonumber(ban) > now) then return 'banned' end\n"
    "local U = P .. 'u:' .. openid\n"
    "local old = redis.call('HGET', U, 'sk')\n"
    "if old then redis.call('HSET', U, 'prev_sk', old, 'prev_at', ARGV[5]) end\n"
    "redis.call('HSET', U, 'sk', ARGV[3], 'updated', ARGV[5])\n"
    "redis.call('HSETNX', U, 'first', ARGV[5])\n"
    "if ARGV[4] ~= '' then redis.call('HSET', U, 'unionid', ARGV[4]) end\n"
    "if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', U, ARGV[6]) end\n"
    "if #ARGV > 6 then\n"
    "  local S, exp = P .. 's:' .. ARGV[7], tonumber(ARGV[8])\n"
    "  redis.call('HSET', S, 'openid', openid, 'exp', ARGV[8], 'sid', ARGV[9], 'start', ARGV[5],"
    "             'client', ARGV[10], 'ua', ARGV[11])\n"
    "  redis.call('EXPIREAT', S, exp)\n"
    "  redis.call('SADD', P .. 'us:' .. openid, ARGV[7])\n"
    "  keep_until(P .. 'us:' .. openid, exp, now)\n"
    "  redis.call('SET', P .. 'sid:' .. ARGV[9], openid)\n"
    "  redis.call('EXPIREAT', P .. 'sid:' .. ARGV[9], exp)\n"
    "end\n"
    "return 1\n";

/* ARGV apps (JSON), old hash, new hash (hex), now, grace, ttl, max age. As get_session, the
 * old token is looked for in each app's namespace. Answers the new token's session as
 * find_lua does, or nil. */
static const char refresh_lua[] = LUA_PRELUDE
    "local now = tonumber(ARGV[4])\n"
    "for _, app in ipairs(cjson.decode(ARGV[1])) do\n"
    "  local P = 'wxlogin:' .. app .. ':'\n"
    "  local O = P .. 's:' .. ARGV[2]\n"
    "  local s = redis.call('HMGET', O, 'openid', 'exp', 'sid', 'start', 'next', 'client', 'ua')\n"
    "  if s[1] and s[2] then\n"
    "    if tonumber(s[2]) <= now or not s[3] or not s[4] then return false end\n"
    "    if s[5] then\n"
    "      if s[5] ~= ARGV[3] then return false end\n"
    "    else\n"
    "      local last = tonumber(s[4]) + tonumber(ARGV[7])\n"
    "      if now >= last then return false end\n"
    "      local exp = math.min(now + tonumber(ARGV[6]), last)\n"
    "      local old = math.min(tonumber(s[2]), now + tonumber(ARGV[5]))\n"
    "      redis.call('HSET', O, 'next', ARGV[3], 'exp', old)\n"
    "      redis.call('EXPIREAT', O, old)\n"
    "      local S = P .. 's:' .. ARGV[3]\n"
    "      redis.call('HSET', S, 'openid', s[1], 'exp', exp, 'sid', s[3], 'start', s[4], 'ref',"
    "                 now, 'client', s[6] or '', 'ua', s[7] or '')\n"
    "      redis.call('EXPIREAT', S, exp)\n"
    "      redis.call('SADD', P .. 'us:' .. s[1], ARGV[3])\n"
    "      keep_until(P .. 'us:' .. s[1], exp, now)\n"
    "      keep_until(P .. 'sid:' .. s[3], exp, now)\n"
    "    end\n"
    "    local n = redis.call('HMGET', P .. 's:' .. ARGV[3], 'openid', 'exp')\n"
    "    if not n[1] or not n[2] or tonumber(n[2]) <= now then return false end\n"
    "    local u = redis.call('HGET', P .. 'u:' .. n[1], 'unionid')\n"
    "    return {n[1], n[2], u or '', app}\n"
    "  end\n"
    "end\n"
    "return false\n";

/* ARGV prefix, what, openid, token hash (hex), sid (hex), reason, until, now. Answers {live
 * sessions ended, found}: found 0 when there was nothing to end, lift or erase. */
static const char revoke_lua[] = LUA_PRELUDE
    "local P, what, openid, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[8])\n"
    "local sid = nil\n"
    "if what == 'token' then\n"
    "  local s = redis.call('HMGET', P .. 's:' .. ARGV[4], 'openid', 'sid')\n"
    "  if not s[1] then return {0, 0} end\n"
    "  openid = s[1]\n"
    "  sid = s[2] or ''\n"
    "  if sid == '' then gone(P, openid, ARGV[4]) return {1, 1} end\n"
    "elseif what == 'sid' then\n"
    "  openid = redis.call('GET', P .. 'sid:' .. ARGV[5])\n"
    "  if not openid then return {0, 0} end\n"
    "  sid = ARGV[5]\n"
    "elseif what == 'ban' then\n"
    "  redis.call('DEL', P .. 'ban:' .. openid)\n"
    "  redis.call('HSET', P .. 'ban:' .. openid, 'reason', ARGV[6], 'since', ARGV[8], 'until',"
    "             ARGV[7])\n"
    "  if ARGV[7] ~= '0' then redis.call('EXPIREAT', P .. 'ban:' .. openid, ARGV[7]) end\n"
    "elseif what == 'unban' then\n"
    "  local n = redis.call('DEL', P .. 'ban:' .. openid)\n"
    "  return {n, n}\n"
    "end\n"
    "local n, t = revoke(P, openid, now, sid)\n"
    "if what == 'erase' then\n"
    "  local codes = redis.call('SMEMBERS', P .. 'uc:' .. openid)\n"
    "  for _, k in ipairs(codes) do redis.call('DEL', k) end\n"
    "  t = t + redis.call('DEL', P .. 'u:' .. openid, P .. 'ban:' .. openid, P .. 'us:' .. openid,"
    "                     P .. 'uc:' .. openid)\n"
    "end\n"
    "if what == 'ban' then t = 1 end\n"
    "return {n, t > 0 and 1 or 0}\n";

/* ARGV prefix, openid, now. Answers {user found, unionid, first, last, ban reason, since,
 * until, then for each live session: sid, start, exp, ref, client, ua}. */
static const char info_lua[] =
    "local P, openid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local u = redis.call('HMGET', P .. 'u:' .. openid, 'sk', 'unionid', 'first', 'updated')\n"
    "local b = redis.call('HMGET', P .. 'ban:' .. openid, 'reason', 'since', 'until')\n"
    "if b[3] and b[3] ~= '0' and tonumber(b[3]) <= now then b = {false, false, false} end\n"
    "local r = {u[1] and 1 or 0, u[2] or '', u[3] or u[4] or '0', u[4] or '0', b[1] or '',"
    "           b[2] or '0', b[3] or '0'}\n"
    "local rows = {}\n"
    "for _, h in ipairs(redis.call('SMEMBERS', P .. 'us:' .. openid)) do\n"
    "  local s = redis.call('HMGET', P .. 's:' .. h, 'sid', 'start', 'exp', 'ref', 'client', 'ua',"
    "                       'next')\n"
    "  if not s[1] then redis.call('SREM', P .. 'us:' .. openid, h)\n"
    "  elseif tonumber(s[3]) > now and not s[7] then\n"
    "    rows[#rows + 1] = {s[1], s[2] or '0', s[3], s[4] or '0', s[5] or '', s[6] or ''}\n"
    "  end\n"
    "end\n"
    "table.sort(rows, function(a, c) return tonumber(a[2]) < tonumber(c[2]) or"
    " (a[2] == c[2] and a[1] < c[1]) end)\n"
    "for _, row in ipairs(rows) do for _, v in ipairs(row) do r[#r + 1] = v end end\n"
    "return r\n";

/* KEYS[1] code; ARGV outcome, keep ms, the user's code set ("" for none). */
static const char publish_lua[] = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
                                  "if ARGV[3] ~= '' then\n"
                                  "  redis.call('SADD', ARGV[3], KEYS[1])\n"
                                  "  redis.call('PEXPIRE', ARGV[3], ARGV[2])\n"
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
    S_REFRESH,
    S_REVOKE,
    S_INFO,
    S_PUBLISH,
    S_COUNT
};

struct rd_shared {
    struct store_shared base;
    struct rconn_opts opts;
    struct rhealth *health; /* why the store fails, logged once per change (every worker's) */
    const uint8_t *master_key;
    long user_retention_s;
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
enum rop_kind {
    K_DONE,
    K_LOGIN,
    K_SESSION,
    K_USER,
    K_REVOKE,
    K_INFO,
    K_CLAIM,
    K_TOKEN,
    K_LEASE,
    K_LIMIT,
    K_NONE
};

#define ARGV_MAX 16

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
        store_revoke_fn *revoke;
        store_info_fn *info;
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

/* An id of a record (appid, openid, unionid) into out; nil is "". False, with out "", when the
 * element is no id: not a string, longer than STORE_ID_MAX, or with a byte that is not printable
 * ASCII or is a space (ids go into response headers, X-WX-OpenID). Never cut: a part of an id
 * is someone else's. */
static bool copy_id(const redisReply *r, char out[STORE_ID_MAX + 1])
{
    out[0] = '\0';
    if (r == NULL || r->type == REDIS_REPLY_NIL)
        return true;
    if (r->type != REDIS_REPLY_STRING || r->len > STORE_ID_MAX)
        return false;
    for (size_t i = 0; i < r->len; i++)
        if ((unsigned char)r->str[i] <= ' ' || (unsigned char)r->str[i] >= 0x7f)
            return false;
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return true;
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
        const redisReply *sk = r->element[1], *prev = r->element[2], *at = r->element[3];
        bool has_prev = prev->type == REDIS_REPLY_STRING && at->type == REDIS_REPLY_STRING;
        /* A record we cannot read whole is as good as none, as is a key that does not open. */
        if (!copy_id(r->element[0], u.unionid) ||
            !store_user_open(mk, &u, (const uint8_t *)sk->str, sk->len,
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
        bool ok = true;
        if (r->elements == 4) /* find_lua: the app it was found in */
            ok = copy_id(r->element[3], s.appid) && s.appid[0] != '\0';
        else
            memcpy(s.appid, op->appid, sizeof(s.appid));
        /* A session whose ids do not read back whole is not one we can answer for (it would
         * name someone, or no one): the client logs in again, which writes a good one. */
        ok = ok && copy_id(r->element[0], s.openid) && s.openid[0] != '\0' &&
             copy_id(r->element[2], s.unionid);
        const redisReply *e = r->element[1];
        s.expires_at = e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
        if (!ok) {
            memset(&s, 0, sizeof(s));
            status = STORE_NOT_FOUND;
        }
    } else if (status == STORE_OK) {
        status = STORE_NOT_FOUND; /* the script answers nil */
    }
    op->fn.session(op->arg, status, status == STORE_OK ? &s : NULL);
}

static int64_t reply_int(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    return r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
}

/* A text element into out (cap bytes); "" when it is not a string or does not fit. */
static void copy_text(const redisReply *r, char *out, size_t cap)
{
    size_t n = r->type == REDIS_REPLY_STRING && r->len < cap ? r->len : 0;
    memcpy(out, n > 0 ? r->str : "", n);
    out[n] = '\0';
}

static void deliver_revoke(struct rop *op, const redisReply *r)
{
    struct store_revoked rv;
    memset(&rv, 0, sizeof(rv));
    if (is_error(r) || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        op->fn.revoke(op->arg, STORE_ERROR, NULL);
        return;
    }
    rv.count = (long)reply_int(r->element[0]);
    op->fn.revoke(op->arg, reply_int(r->element[1]) > 0 ? STORE_OK : STORE_NOT_FOUND,
                  reply_int(r->element[1]) > 0 ? &rv : NULL);
}

#define INFO_HEAD 7 /* elements before the sessions' */
#define INFO_ROW 6  /* elements per session */

static void deliver_info(struct rop *op, const redisReply *r)
{
    if (is_error(r) || r->type != REDIS_REPLY_ARRAY || r->elements < INFO_HEAD ||
        (r->elements - INFO_HEAD) % INFO_ROW != 0) {
        op->fn.info(op->arg, STORE_ERROR, NULL);
        return;
    }
    struct store_user_info *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        op->fn.info(op->arg, STORE_ERROR, NULL);
        return;
    }
    redisReply **e = r->element;
    u->known = reply_int(e[0]) == 1;
    (void)copy_id(e[1], u->unionid); /* one that is no id is shown as none */
    u->first_login = reply_int(e[2]);
    u->last_login = reply_int(e[3]);
    copy_text(e[4], u->ban_reason, sizeof(u->ban_reason));
    u->banned = u->ban_reason[0] != '\0';
    u->ban_since = reply_int(e[5]);
    u->ban_until = reply_int(e[6]);
    for (size_t i = INFO_HEAD; i < r->elements; i += INFO_ROW) {
        if (u->nsessions == STORE_SESSIONS_MAX) {
            u->more_sessions = true;
            break;
        }
        struct store_session_info *si = &u->sessions[u->nsessions];
        if (e[i]->type != REDIS_REPLY_STRING || e[i]->len != 2 * STORE_SID_LEN ||
            crypto_unhex(e[i]->str, e[i]->len, si->sid, STORE_SID_LEN) != 0)
            continue;
        si->created = reply_int(e[i + 1]);
        si->expires = reply_int(e[i + 2]);
        si->refreshed = reply_int(e[i + 3]);
        copy_text(e[i + 4], si->client, sizeof(si->client));
        copy_text(e[i + 5], si->user_agent, sizeof(si->user_agent));
        u->nsessions++;
    }
    int status = u->known || u->banned ? STORE_OK : STORE_NOT_FOUND;
    op->fn.info(op->arg, status, status == STORE_OK ? u : NULL);
    free(u);
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
    /* A token with a NUL inside would be handed on cut, as another token. */
    if (tok->type != REDIS_REPLY_STRING || exp->type != REDIS_REPLY_STRING ||
        tok->len > STORE_TOKEN_MAX || strlen(tok->str) != tok->len) {
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
        case K_LOGIN:
            op->fn.done(op->arg, is_error(r)                     ? STORE_ERROR
                                 : r->type == REDIS_REPLY_STRING ? STORE_BANNED
                                                                 : STORE_OK);
            break;
        case K_REVOKE: deliver_revoke(op, r); break;
        case K_INFO: deliver_info(op, r); break;
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

/* ARGV's first: the app's key prefix, "wxlogin:<appid>:". */
static bool arg_prefix(struct rop *op, const char *appid)
{
    char k[KEY_MAX];
    int n = snprintf(k, sizeof(k), "wxlogin:%s:", appid);
    return n > 0 && (size_t)n < sizeof(k) && arg_add(op, k, (size_t)n);
}

static bool arg_hex(struct rop *op, const uint8_t *b, size_t n)
{
    char h[2 * CRYPTO_HASH_LEN + 1];
    crypto_hex(b, n, h);
    return arg_add(op, h, 2 * n);
}

static void rd_login(struct store *s, struct async_slot *slot, const struct store_login *in,
                     store_done_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_LOGIN, arg, done(arg, STORE_ERROR));
    op->fn.done = done;
    uint8_t sealed[STORE_SEALED_MAX];
    int n = store_seal(st->sh->master_key, in->appid, in->openid, in->session_key, sealed);
    bool ok = n > 0 && arg_script(op, S_LOGIN, 0) && arg_prefix(op, in->appid) &&
              arg_str(op, in->openid) && arg_add(op, sealed, (size_t)n) &&
              arg_str(op, in->unionid) && arg_num(op, in->now) &&
              arg_num(op, st->sh->user_retention_s);
    if (ok && in->token_hash != NULL) {
        char client[STORE_CLIENT_MAX + 1], ua[STORE_UA_MAX + 1];
        store_text_cut(client, sizeof(client), in->client);
        store_text_cut(ua, sizeof(ua), in->user_agent);
        ok = arg_hex(op, in->token_hash, CRYPTO_HASH_LEN) && arg_num(op, in->expires_at) &&
             arg_hex(op, in->sid, STORE_SID_LEN) && arg_str(op, client) && arg_str(op, ua);
    }
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

static void rd_refresh(struct store *s, struct async_slot *slot, const struct store_refresh *in,
                       store_session_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_SESSION, arg, done(arg, STORE_ERROR, NULL));
    op->fn.session = done;
    bool ok;
    if (in->appid == NULL) {
        ok = arg_script(op, S_REFRESH, 0) && arg_ref(op, st->sh->apps_json);
    } else {
        /* One app: the same script over a list of one. */
        char one[STORE_ID_MAX + 8];
        int n = snprintf(one, sizeof(one), "[\"%s\"]", in->appid);
        ok = n > 0 && (size_t)n < sizeof(one) && arg_script(op, S_REFRESH, 0) &&
             arg_add(op, one, (size_t)n);
    }
    start(op, slot,
          ok && arg_hex(op, in->old_hash, CRYPTO_HASH_LEN) &&
              arg_hex(op, in->new_hash, CRYPTO_HASH_LEN) && arg_num(op, in->now) &&
              arg_num(op, in->grace_s) && arg_num(op, in->ttl_s) && arg_num(op, in->max_age_s));
}

static void rd_revoke(struct store *s, struct async_slot *slot, const struct store_revoke *in,
                      store_revoke_fn *done, void *arg)
{
    static const char *const what[] = {
        [STORE_REVOKE_TOKEN] = "token", [STORE_REVOKE_SID] = "sid",
        [STORE_REVOKE_USER] = "user",   [STORE_BAN] = "ban",
        [STORE_UNBAN] = "unban",        [STORE_ERASE] = "erase",
    };
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_REVOKE, arg, done(arg, STORE_ERROR, NULL));
    op->fn.revoke = done;
    uint8_t none[CRYPTO_HASH_LEN] = {0};
    char reason[STORE_REASON_MAX + 1];
    store_text_cut(reason, sizeof(reason), in->reason);
    start(op, slot,
          arg_script(op, S_REVOKE, 0) && arg_prefix(op, in->appid) && arg_str(op, what[in->what]) &&
              arg_str(op, in->openid != NULL ? in->openid : "") &&
              arg_hex(op, in->hash != NULL ? in->hash : none, CRYPTO_HASH_LEN) &&
              arg_hex(op, in->sid != NULL ? in->sid : none, STORE_SID_LEN) && arg_str(op, reason) &&
              arg_num(op, in->until) && arg_num(op, in->now));
}

static void rd_user_info(struct store *s, struct async_slot *slot, const char *appid,
                         const char *openid, int64_t now, store_info_fn *done, void *arg)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_INFO, arg, done(arg, STORE_ERROR, NULL));
    op->fn.info = done;
    start(op, slot,
          arg_script(op, S_INFO, 0) && arg_prefix(op, appid) && arg_str(op, openid) &&
              arg_num(op, now));
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
    .refresh = rd_refresh,
    .revoke = rd_revoke,
    .user_info = rd_user_info,
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
                             const char *openid, const char *outcome, size_t len, long keep_ms)
{
    struct rd_store *st = (struct rd_store *)s;
    GET_OP(st, K_NONE, NULL, (void)0);
    start(op, NULL,
          arg_script(op, S_PUBLISH, 1) && arg_hash_key(op, appid, "c", key) &&
              arg_add(op, outcome, len) && arg_num(op, keep_ms) &&
              (openid[0] != '\0' ? arg_key(op, appid, "uc", openid) : arg_str(op, "")));
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

/* One command on the blocking connection of check_master_key(); NULL when it failed. */
static redisReply *sync_command(redisContext *c, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/*
 * The master key's check value (store/seal.h), one key per app in the URL's db (the prefix its
 * sealed keys live under, wxlogin:<appid>:master_key_check): set if absent, then compared. Checked
 * once at start on a blocking connection of its own, before the workers' connections exist. A Redis
 * that cannot be asked now (down, refusing AUTH) is not a reason to refuse to start, as the service
 * waits for it anyway: that is only warned. Returns 0 or STORE_WRONG_KEY with err.
 */
static int check_master_key(const struct rconn_opts *o, const struct store_config *cfg,
                            char err[STORE_ERR_MAX])
{
    uint8_t want[CRYPTO_HASH_LEN];
    char hex[2 * CRYPTO_HASH_LEN + 1];
    if (store_key_check_value(cfg->master_key, want) != 0)
        return 0;
    crypto_hex(want, sizeof(want), hex);
    struct timeval tv = {.tv_sec = o->timeout_ms / 1000, .tv_usec = (o->timeout_ms % 1000) * 1000};
    redisContext *c = o->unix_path != NULL ? redisConnectUnixWithTimeout(o->unix_path, tv)
                                           : redisConnectWithTimeout(o->host, o->port, tv);
    redisReply *r = NULL;
    const char *why = c == NULL ? "out of memory" : c->err ? c->errstr : NULL;
    int rc = 0;
    if (why == NULL && redisSetTimeout(c, tv) != REDIS_OK)
        why = "cannot set a timeout";
    if (why == NULL && o->password != NULL) {
        const char *argv[] = {"AUTH", o->password};
        r = sync_command(c, 2, argv);
        why = r == NULL ? "AUTH refused" : NULL;
        freeReplyObject(r);
    }
    if (why == NULL && o->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", o->db);
        const char *argv[] = {"SELECT", db};
        r = sync_command(c, 2, argv);
        why = r == NULL ? "SELECT refused" : NULL;
        freeReplyObject(r);
    }
    for (size_t i = 0; why == NULL && rc == 0 && i < cfg->napps; i++) {
        char key[KEY_MAX];
        snprintf(key, sizeof(key), "wxlogin:%s:master_key_check", cfg->apps[i]);
        const char *set[] = {"SET", key, hex, "NX"};
        const char *get[] = {"GET", key};
        freeReplyObject(sync_command(c, 4, set));
        r = sync_command(c, 2, get);
        if (r == NULL || r->type != REDIS_REPLY_STRING)
            why = "no answer to GET";
        else if (r->len != sizeof(hex) - 1 || !crypto_equal(r->str, hex, sizeof(hex) - 1)) {
            snprintf(err, STORE_ERR_MAX, STORE_WRONG_KEY_MSG("this Redis db"));
            rc = STORE_WRONG_KEY;
        }
        freeReplyObject(r);
    }
    if (why != NULL && cfg->warn != NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "cannot check the master key against Redis now (%.100s); starting anyway", why);
        cfg->warn(msg, cfg->warn_arg);
    }
    redisFree(c);
    return rc;
}

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
    sh->user_retention_s = cfg->user_retention_s;
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
        [S_REFRESH] = refresh_lua,
        [S_REVOKE] = revoke_lua,
        [S_INFO] = info_lua,
        [S_PUBLISH] = publish_lua,
    };
    for (int i = 0; i < S_COUNT; i++) {
        rconn_script_init(&sh->scripts[i], texts[i]);
        sh->script_ptrs[i] = &sh->scripts[i];
    }
    int kc = check_master_key(&sh->opts, cfg, err);
    if (kc != 0) {
        rd_shared_free(&sh->base);
        return kc;
    }
    *out = &sh->base;
    return 0;
}
