/*
 * store/cache: the set-associative table, and the decorator that puts it in front of a store.
 */
#include "store/cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "loop/loop.h"
#include "metrics/metrics.h"
#include "runtime/async.h"
#include "store/backend.h"
#include "util/list.h"

#define WAYS 4
#define SETS_PER_LOCK 64
#define ID_MAX 63 /* real appids are 18 characters, openids and unionids 28 */
/* A logout leaves a tombstone this long, so a lookup that read the store just before the
 * logout cannot put the session back. Far longer than any store read takes. */
#define TOMBSTONE_MS 2000

struct slot {
    uint8_t hash[CRYPTO_HASH_LEN];
    bool used;
    bool revoked;        /* a tombstone left by a logout */
    uint64_t revoked_ms; /* monotonic */
    uint64_t stamp;      /* insertion order, for replacement */
    uint64_t epoch;      /* without a unionid: the unionid epoch it was read at */
    int64_t expires_at;
    char appid[ID_MAX + 1];
    char openid[ID_MAX + 1];
    char unionid[ID_MAX + 1];
};

struct store_cache {
    struct slot *slots; /* nsets * WAYS */
    size_t nsets;       /* power of two */
    pthread_mutex_t *locks;
    size_t nlocks;
    atomic_uint_fast64_t clock; /* insertion stamps */
    /* Bumped by every login that stores a unionid: a session cached without one may belong to
     * a user who has one now, and is then read from the store again. */
    atomic_uint_fast64_t unionid_epoch;
    /* The epoch of the last flush: a record read before it is not cached. */
    atomic_uint_fast64_t flush_epoch;
};

struct store_cache *store_cache_new(size_t entries)
{
    if (entries == 0)
        return NULL;
    struct store_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nsets = SETS_PER_LOCK;
    while (c->nsets * WAYS < entries)
        c->nsets *= 2;
    c->nlocks = c->nsets / SETS_PER_LOCK;
    c->slots = calloc(c->nsets * WAYS, sizeof(*c->slots));
    c->locks = calloc(c->nlocks, sizeof(*c->locks));
    if (c->slots == NULL || c->locks == NULL) {
        free(c->slots);
        free(c->locks);
        free(c);
        return NULL;
    }
    for (size_t i = 0; i < c->nlocks; i++)
        pthread_mutex_init(&c->locks[i], NULL);
    return c;
}

void store_cache_free(struct store_cache *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nlocks; i++)
        pthread_mutex_destroy(&c->locks[i]);
    free(c->locks);
    free(c->slots);
    free(c);
}

/* The set of a hash and its lock. A SHA-256 is uniform: its first bytes index well. */
static struct slot *set_of(struct store_cache *c, const uint8_t *hash, pthread_mutex_t **lock)
{
    uint64_t h;
    memcpy(&h, hash, sizeof(h));
    size_t set = (size_t)h & (c->nsets - 1);
    *lock = &c->locks[set / SETS_PER_LOCK];
    return &c->slots[set * WAYS];
}

static struct slot *find(struct slot *set, const uint8_t *hash)
{
    for (int i = 0; i < WAYS; i++)
        if (set[i].used && crypto_equal(set[i].hash, hash, CRYPTO_HASH_LEN))
            return &set[i];
    return NULL;
}

bool store_cache_get(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN], int64_t now,
                     struct store_session *out)
{
    if (c == NULL)
        return false;
    pthread_mutex_t *lock;
    struct slot *set = set_of(c, hash, &lock);
    bool hit = false;
    pthread_mutex_lock(lock);
    struct slot *s = find(set, hash);
    if (s != NULL && !s->revoked && s->unionid[0] == '\0' &&
        s->epoch != atomic_load(&c->unionid_epoch)) {
        s->used = false; /* its user may have a unionid now: ask the store */
        s = NULL;
    }
    if (s != NULL && !s->revoked && s->expires_at > now) {
        memcpy(out->appid, s->appid, sizeof(s->appid));
        memcpy(out->openid, s->openid, sizeof(s->openid));
        memcpy(out->unionid, s->unionid, sizeof(s->unionid));
        out->expires_at = s->expires_at;
        hit = true;
    } else if (s != NULL && !s->revoked) {
        s->used = false; /* expired: make room */
    }
    pthread_mutex_unlock(lock);
    return hit;
}

/* The way a new entry takes in set: a free one, else the oldest that is not a fresh tombstone
 * (NULL when every way is one); *oldest is the oldest way whatever it holds. */
static struct slot *victim(struct slot *set, uint64_t now_ms, struct slot **oldest)
{
    struct slot *s = NULL;
    *oldest = &set[0];
    for (int i = 0; i < WAYS; i++) {
        struct slot *w = &set[i];
        if (!w->used)
            return w;
        if (w->stamp < (*oldest)->stamp)
            *oldest = w;
        if (w->revoked && now_ms - w->revoked_ms < TOMBSTONE_MS)
            continue;
        if (s == NULL || w->stamp < s->stamp)
            s = w;
    }
    return s;
}

uint64_t store_cache_epoch(struct store_cache *c)
{
    return c != NULL ? atomic_load(&c->unionid_epoch) : 0;
}

void store_cache_unionid_stored(struct store_cache *c)
{
    if (c != NULL)
        atomic_fetch_add(&c->unionid_epoch, 1);
}

void store_cache_put(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN],
                     const struct store_session *rec)
{
    store_cache_put_read_at(c, hash, rec, store_cache_epoch(c));
}

void store_cache_put_read_at(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN],
                             const struct store_session *rec, uint64_t epoch)
{
    if (c == NULL || strlen(rec->appid) > ID_MAX || strlen(rec->openid) > ID_MAX ||
        strlen(rec->unionid) > ID_MAX || epoch < atomic_load(&c->flush_epoch))
        return;
    pthread_mutex_t *lock;
    struct slot *set = set_of(c, hash, &lock);
    pthread_mutex_lock(lock);
    uint64_t now_ms = loop_clock_ms();
    struct slot *s = find(set, hash);
    if (s != NULL && s->revoked) { /* logged out meanwhile: this record is stale */
        pthread_mutex_unlock(lock);
        return;
    }
    if (s == NULL) {
        struct slot *oldest;
        s = victim(set, now_ms, &oldest);
        if (s == NULL) { /* every way holds a fresh tombstone: do not cache */
            pthread_mutex_unlock(lock);
            return;
        }
    }
    memcpy(s->hash, hash, CRYPTO_HASH_LEN);
    s->used = true;
    s->revoked = false;
    s->stamp = atomic_fetch_add(&c->clock, 1);
    s->epoch = epoch;
    s->expires_at = rec->expires_at;
    memcpy(s->appid, rec->appid, strlen(rec->appid) + 1);
    memcpy(s->openid, rec->openid, strlen(rec->openid) + 1);
    memcpy(s->unionid, rec->unionid, strlen(rec->unionid) + 1);
    pthread_mutex_unlock(lock);
}

void store_cache_del(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN])
{
    if (c == NULL)
        return;
    pthread_mutex_t *lock;
    struct slot *set = set_of(c, hash, &lock);
    pthread_mutex_lock(lock);
    uint64_t now_ms = loop_clock_ms();
    struct slot *s = find(set, hash);
    if (s == NULL) { /* sparing other fresh tombstones if it can */
        struct slot *oldest;
        s = victim(set, now_ms, &oldest);
        if (s == NULL)
            s = oldest;
    }
    memcpy(s->hash, hash, CRYPTO_HASH_LEN);
    s->used = true;
    s->revoked = true;
    s->revoked_ms = now_ms;
    s->stamp = atomic_fetch_add(&c->clock, 1);
    pthread_mutex_unlock(lock);
}

void store_cache_flush(struct store_cache *c)
{
    if (c == NULL)
        return;
    /* Records read before now must not come back: they may be of a revoked session. */
    atomic_store(&c->flush_epoch, atomic_fetch_add(&c->unionid_epoch, 1) + 1);
    for (size_t l = 0; l < c->nlocks; l++) {
        pthread_mutex_lock(&c->locks[l]);
        for (size_t i = l * SETS_PER_LOCK * WAYS; i < (l + 1) * SETS_PER_LOCK * WAYS; i++)
            c->slots[i].used = false;
        pthread_mutex_unlock(&c->locks[l]);
    }
}

/* ---- the decorator ---- */

#define OP_POOL_MAX 256

struct cache_store {
    struct store base;
    struct store *inner;
    struct store_cache *cache;
    struct cache_op *pool;
    size_t npool;
    struct list started; /* operations waiting for the inner store */
};

/* An operation of the inner store whose answer the cache must see first. */
struct cache_op {
    struct async async;
    struct async_slot inner; /* the inner store's operation */
    struct cache_store *cs;
    uint8_t hash[CRYPTO_HASH_LEN];
    struct store_session rec; /* login: the session to remember once written */
    union {
        store_session_fn *session;
        store_done_fn *done;
        store_revoke_fn *revoke;
    } fn;
    void *arg;
    uint64_t epoch; /* the cache's unionid epoch when a miss asked the store */
    /* A revocation: cancelling it only detaches its owner, for the store may commit it anyway,
     * and the cache must then still forget its tokens. */
    bool revoking, detached;
    struct cache_op *next;
    struct list node; /* its store's started operations */
};

static struct cache_op *op_get(struct cache_store *cs, void *arg)
{
    struct cache_op *op = cs->pool;
    if (op != NULL) {
        cs->pool = op->next;
        cs->npool--;
    } else {
        op = malloc(sizeof(*op));
        if (op == NULL)
            return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->cs = cs;
    op->arg = arg;
    list_push_back(&cs->started, &op->node);
    return op;
}

static void op_put(struct cache_op *op)
{
    struct cache_store *cs = op->cs;
    list_unlink(&op->node);
    if (cs->npool < OP_POOL_MAX) {
        op->next = cs->pool;
        cs->pool = op;
        cs->npool++;
        return;
    }
    free(op);
}

static void op_cancel(struct async *a)
{
    struct cache_op *op = (struct cache_op *)(void *)a;
    if (op->revoking) {
        op->detached = true; /* on_inner_revoke still runs, and tells nobody */
        return;
    }
    async_cancel(&op->inner);
    op_put(op);
}

static void on_inner_session(void *arg, int status, const struct store_session *s)
{
    struct cache_op *op = arg;
    /* Remembered as of when the store was asked: a unionid stored since makes it stale. */
    if (status == STORE_OK)
        store_cache_put_read_at(op->cs->cache, op->hash, s, op->epoch);
    async_end(&op->async);
    store_session_fn *fn = op->fn.session;
    void *a = op->arg;
    op_put(op);
    fn(a, status, s);
}

static void c_get_session(struct store *st, struct async_slot *slot, const char *appid,
                          const uint8_t hash[CRYPTO_HASH_LEN], int64_t now, store_session_fn *done,
                          void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    struct store_session s;
    if (cs->inner->ops->broken != NULL && cs->inner->ops->broken(cs->inner)) {
        done(arg, STORE_ERROR, NULL);
        return;
    }
    bool hit = store_cache_get(cs->cache, hash, now, &s);
    metrics_cache_lookup(hit);
    if (hit) {
        /* Tokens are bound to their app, in memory as in the store (NULL: any app). */
        if (appid != NULL && strcmp(s.appid, appid) != 0)
            done(arg, STORE_NOT_FOUND, NULL);
        else
            done(arg, STORE_OK, &s);
        return;
    }
    struct cache_op *op = op_get(cs, arg);
    if (op == NULL) {
        done(arg, STORE_ERROR, NULL);
        return;
    }
    memcpy(op->hash, hash, CRYPTO_HASH_LEN);
    op->fn.session = done;
    op->epoch = store_cache_epoch(cs->cache);
    async_begin(&op->async, slot, op_cancel);
    store_get_session(cs->inner, &op->inner, appid, hash, now, on_inner_session, op);
}

static void c_refresh(struct store *st, struct async_slot *slot, const struct store_refresh *in,
                      store_session_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    /* The old token's expiry is about to shrink to its grace: forget it, so the next check
     * reads the new expiry from the store. */
    store_cache_del(cs->cache, in->old_hash);
    store_refresh(cs->inner, slot, in, done, arg);
}

static void on_inner_revoke(void *arg, int status, const struct store_revoked *r)
{
    struct cache_op *op = arg;
    /* Every token the store removed is forgotten here too, before anyone hears of it; a
     * lookup that read the store before the revocation cannot bring one back (tombstones). */
    if (r != NULL) {
        for (size_t i = 0; i < r->nhashes; i++)
            store_cache_del(op->cs->cache, r->hashes[i]);
        if (r->more)
            store_cache_flush(op->cs->cache);
    }
    if (op->detached) {
        op_put(op);
        return;
    }
    async_end(&op->async);
    store_revoke_fn *fn = op->fn.revoke;
    void *a = op->arg;
    op_put(op);
    fn(a, status, r);
}

static void c_revoke(struct store *st, struct async_slot *slot, const struct store_revoke *in,
                     store_revoke_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    /* A logout's own token is forgotten before the store is asked (the tombstone rule); the
     * other tokens of its chain, and every token of the other revocations, once the store
     * says which they were. */
    if (in->what == STORE_REVOKE_TOKEN)
        store_cache_del(cs->cache, in->hash);
    struct cache_op *op = op_get(cs, arg);
    if (op == NULL) {
        done(arg, STORE_ERROR, NULL);
        return;
    }
    op->fn.revoke = done;
    op->revoking = true;
    async_begin(&op->async, slot, op_cancel);
    store_revoke(cs->inner, &op->inner, in, on_inner_revoke, op);
}

static void c_user_info(struct store *st, struct async_slot *slot, const char *appid,
                        const char *openid, int64_t now, store_info_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    store_user_info(cs->inner, slot, appid, openid, now, done, arg);
}

static void on_inner_login(void *arg, int status)
{
    struct cache_op *op = arg;
    if (status == STORE_OK) {
        /* Sessions of this user cached without a unionid are stale now. */
        store_cache_unionid_stored(op->cs->cache);
        /* Written and durable: remember the new session (when there is one). */
        if (op->rec.appid[0] != '\0')
            store_cache_put(op->cs->cache, op->hash, &op->rec);
    }
    async_end(&op->async);
    store_done_fn *fn = op->fn.done;
    void *a = op->arg;
    op_put(op);
    fn(a, status);
}

static bool fits(const char *s)
{
    return strlen(s) <= STORE_ID_MAX;
}

static void c_login(struct store *st, struct async_slot *slot, const struct store_login *in,
                    store_done_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    /* Without a unionid the login changes nothing the cache holds (the stored unionid, kept
     * from an earlier login, is not known here: such a session is not remembered either). */
    if (in->unionid[0] == '\0') {
        store_login(cs->inner, slot, in, done, arg);
        return;
    }
    struct cache_op *op = op_get(cs, arg);
    if (op == NULL) {
        /* Out of memory: mark sessions without a unionid stale now rather than never (one read
         * before the write commits may still cache the old record). */
        store_cache_unionid_stored(cs->cache);
        store_login(cs->inner, slot, in, done, arg);
        return;
    }
    /* The whole record is known: the new session's first check is answered from memory. */
    if (in->token_hash != NULL && fits(in->appid) && fits(in->openid) && fits(in->unionid)) {
        memcpy(op->hash, in->token_hash, CRYPTO_HASH_LEN);
        strcpy(op->rec.appid, in->appid);
        strcpy(op->rec.openid, in->openid);
        strcpy(op->rec.unionid, in->unionid);
        op->rec.expires_at = in->expires_at;
    }
    op->fn.done = done;
    async_begin(&op->async, slot, op_cancel);
    store_login(cs->inner, &op->inner, in, on_inner_login, op);
}

static void c_ping(struct store *st, struct async_slot *slot, store_done_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    store_ping(cs->inner, slot, done, arg);
}

static void c_put_session(struct store *st, struct async_slot *slot,
                          const uint8_t hash[CRYPTO_HASH_LEN], const char *appid,
                          const char *openid, int64_t expires_at, int64_t now, store_done_fn *done,
                          void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    store_put_session(cs->inner, slot, hash, appid, openid, expires_at, now, done, arg);
}

static void c_get_user(struct store *st, struct async_slot *slot, const char *appid,
                       const char *openid, store_user_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    store_get_user(cs->inner, slot, appid, openid, done, arg);
}

static void c_purge_expired(struct store *st, struct async_slot *slot, int64_t now, long limit,
                            store_count_fn *done, void *arg)
{
    struct cache_store *cs = (struct cache_store *)st;
    store_purge_expired(cs->inner, slot, now, limit, done, arg);
}

static bool c_broken(const struct store *st)
{
    const struct cache_store *cs = (const struct cache_store *)st;
    return cs->inner->ops->broken != NULL && cs->inner->ops->broken(cs->inner);
}

static void c_close(struct store *st)
{
    struct cache_store *cs = (struct cache_store *)st;
    /* The inner store ends its operations without callbacks; so do ours. */
    store_close(cs->inner);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &cs->started)
    {
        struct cache_op *op = list_item(pos, struct cache_op, node);
        async_end(&op->async);
        list_unlink(pos);
        free(op);
    }
    while (cs->pool != NULL) {
        struct cache_op *op = cs->pool;
        cs->pool = op->next;
        free(op);
    }
    free(cs);
}

static const struct store_ops cache_ops = {
    .name = "cache",
    .close = c_close,
    .ping = c_ping,
    .login = c_login,
    .put_session = c_put_session,
    .get_session = c_get_session,
    .refresh = c_refresh,
    .revoke = c_revoke,
    .user_info = c_user_info,
    .get_user = c_get_user,
    .purge_expired = c_purge_expired,
    .broken = c_broken,
};

int store_cache_wrap(struct store_cache *c, struct store *inner, struct store **out)
{
    struct cache_store *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return -1;
    cs->base.ops = &cache_ops;
    cs->base.claims = inner->claims;
    cs->base.lease = inner->lease;
    cs->base.limits = inner->limits;
    cs->inner = inner;
    cs->cache = c;
    list_init(&cs->started);
    *out = &cs->base;
    return 0;
}
