#include "session/cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "loop/loop.h"

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
    int64_t expires_at;
    char appid[ID_MAX + 1];
    char openid[ID_MAX + 1];
    char unionid[ID_MAX + 1];
};

struct session_cache {
    struct slot *slots; /* nsets * WAYS */
    size_t nsets;       /* power of two */
    pthread_mutex_t *locks;
    size_t nlocks;
    atomic_uint_fast64_t clock; /* insertion stamps */
};

struct session_cache *session_cache_new(size_t entries)
{
    if (entries == 0)
        return NULL;
    struct session_cache *c = calloc(1, sizeof(*c));
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

void session_cache_free(struct session_cache *c)
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
static struct slot *set_of(struct session_cache *c, const uint8_t *hash, pthread_mutex_t **lock)
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

bool session_cache_get(struct session_cache *c, const uint8_t hash[CRYPTO_HASH_LEN], int64_t now,
                       struct session_record *out)
{
    if (c == NULL)
        return false;
    pthread_mutex_t *lock;
    struct slot *set = set_of(c, hash, &lock);
    bool hit = false;
    pthread_mutex_lock(lock);
    struct slot *s = find(set, hash);
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

void session_cache_put(struct session_cache *c, const uint8_t hash[CRYPTO_HASH_LEN],
                       const struct session_record *rec)
{
    if (c == NULL || strlen(rec->appid) > ID_MAX || strlen(rec->openid) > ID_MAX ||
        strlen(rec->unionid) > ID_MAX)
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
    if (s == NULL) { /* a free way, else the oldest that is not a fresh tombstone */
        for (int i = 0; i < WAYS; i++) {
            struct slot *w = &set[i];
            if (!w->used) {
                s = w;
                break;
            }
            if (w->revoked && now_ms - w->revoked_ms < TOMBSTONE_MS)
                continue;
            if (s == NULL || w->stamp < s->stamp)
                s = w;
        }
        if (s == NULL) { /* every way holds a fresh tombstone: do not cache */
            pthread_mutex_unlock(lock);
            return;
        }
    }
    memcpy(s->hash, hash, CRYPTO_HASH_LEN);
    s->used = true;
    s->revoked = false;
    s->stamp = atomic_fetch_add(&c->clock, 1);
    s->expires_at = rec->expires_at;
    memcpy(s->appid, rec->appid, strlen(rec->appid) + 1);
    memcpy(s->openid, rec->openid, strlen(rec->openid) + 1);
    memcpy(s->unionid, rec->unionid, strlen(rec->unionid) + 1);
    pthread_mutex_unlock(lock);
}

void session_cache_del(struct session_cache *c, const uint8_t hash[CRYPTO_HASH_LEN])
{
    if (c == NULL)
        return;
    pthread_mutex_t *lock;
    struct slot *set = set_of(c, hash, &lock);
    pthread_mutex_lock(lock);
    uint64_t now_ms = loop_clock_ms();
    struct slot *s = find(set, hash);
    if (s == NULL) { /* a free way, else the oldest, sparing other fresh tombstones if it can */
        struct slot *any = &set[0];
        for (int i = 0; i < WAYS; i++) {
            struct slot *w = &set[i];
            if (!w->used) {
                s = w;
                break;
            }
            if (w->stamp < any->stamp)
                any = w;
            if (w->revoked && now_ms - w->revoked_ms < TOMBSTONE_MS)
                continue;
            if (s == NULL || w->stamp < s->stamp)
                s = w;
        }
        if (s == NULL)
            s = any;
    }
    memcpy(s->hash, hash, CRYPTO_HASH_LEN);
    s->used = true;
    s->revoked = true;
    s->revoked_ms = now_ms;
    s->stamp = atomic_fetch_add(&c->clock, 1);
    pthread_mutex_unlock(lock);
}
