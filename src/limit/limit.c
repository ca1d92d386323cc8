/*
 * limit: GCRA buckets, named by a keyed hash, in the shared store or in a set-associative table
 * of this process (see limit.h).
 */
#include "limit/limit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/async.h"

/* A table this small is one set searched whole; a larger one has sets of WAYS. */
#define ASSOC_MAX 64
#define WAYS 8
#define SETS_PER_LOCK 16
#define TAG_LEN 16
/* The label of the naming key: changing it renames every bucket. */
#define KEY_LABEL "wxlogin rate-limit v1"

struct bucket {
    uint8_t tag[TAG_LEN];
    uint64_t tat_us; /* 0: free */
};

/* Each lock on its own cache line: workers taking different sets do not slow each other. */
struct lock {
    _Alignas(64) pthread_mutex_t mu;
};

struct limit {
    char kind;
    bool shared;
    /* Atomic: a reload (limit_set_rate()) changes them while workers take tokens. */
    _Atomic uint32_t burst;
    _Atomic uint64_t interval_us;
    uint8_t key[LIMIT_KEY_LEN];
    size_t nsets, ways; /* nsets a power of two */
    struct lock *locks;
    size_t nlocks;
    struct bucket *b; /* nsets * ways */
};

int limit_key(const uint8_t master_key[CRYPTO_KEY_LEN], uint8_t out[LIMIT_KEY_LEN])
{
    return crypto_hmac_sha256(master_key, CRYPTO_KEY_LEN, KEY_LABEL, sizeof(KEY_LABEL) - 1, out);
}

uint64_t limit_interval_us(uint32_t burst, uint64_t period_ms)
{
    uint64_t i = burst > 0 ? period_ms * 1000 / burst : period_ms * 1000;
    return i > 0 ? i : 1;
}

bool limit_bucket_take(uint64_t *tat_us, uint64_t now_us, uint64_t interval_us, uint32_t burst,
                       uint64_t *wait_us)
{
    uint64_t tat = *tat_us > now_us ? *tat_us : now_us;
    uint64_t next = tat + interval_us;
    uint64_t room = interval_us * burst; /* how far ahead of now a bucket may be scheduled */
    if (next - now_us > room) {
        *wait_us = next - now_us - room;
        return false;
    }
    *tat_us = next;
    return true;
}

unsigned limit_retry_after_s(uint64_t wait_us)
{
    uint64_t s = (wait_us + 999999) / 1000000;
    if (s == 0)
        return 1;
    return s > 86400 ? 86400 : (unsigned)s;
}

struct limit *limit_new(const struct limit_opts *o)
{
    if (o->burst == 0 || o->period_ms == 0 || o->key == NULL || (!o->shared && o->capacity == 0))
        return NULL;
    struct limit *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->kind = o->kind;
    l->shared = o->shared;
    l->burst = o->burst;
    l->interval_us = limit_interval_us(o->burst, o->period_ms);
    memcpy(l->key, o->key, LIMIT_KEY_LEN);
    if (o->shared)
        return l;
    if (o->capacity <= ASSOC_MAX) {
        l->nsets = 1;
        l->ways = o->capacity;
    } else {
        l->ways = WAYS;
        l->nsets = 1;
        while (l->nsets * WAYS < o->capacity)
            l->nsets *= 2;
    }
    l->nlocks = (l->nsets + SETS_PER_LOCK - 1) / SETS_PER_LOCK;
    l->b = calloc(l->nsets * l->ways, sizeof(*l->b));
    l->locks = aligned_alloc(_Alignof(struct lock), l->nlocks * sizeof(*l->locks));
    if (l->b == NULL || l->locks == NULL) {
        free(l->b);
        free(l->locks);
        free(l);
        return NULL;
    }
    for (size_t i = 0; i < l->nlocks; i++)
        pthread_mutex_init(&l->locks[i].mu, NULL);
    return l;
}

void limit_free(struct limit *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nlocks; i++)
        pthread_mutex_destroy(&l->locks[i].mu);
    free(l->locks);
    free(l->b);
    free(l);
}

size_t limit_capacity(const struct limit *l)
{
    return l->nsets * l->ways;
}

/* The bucket's name: HMAC-SHA256(key, kind "\n" appid "\n" key bytes), cut to TAG_LEN. */
static int bucket_tag(const struct limit *l, const char *appid, const void *key, size_t len,
                      uint8_t tag[TAG_LEN])
{
    char msg[2 + STORE_ID_MAX + 1 + LIMIT_KEY_MAX];
    size_t alen = strnlen(appid, STORE_ID_MAX + 1);
    if (alen > STORE_ID_MAX || len > LIMIT_KEY_MAX)
        return -1;
    size_t n = 0;
    msg[n++] = l->kind;
    msg[n++] = '\n';
    memcpy(msg + n, appid, alen);
    n += alen;
    msg[n++] = '\n';
    memcpy(msg + n, key, len);
    n += len;
    uint8_t mac[CRYPTO_HASH_LEN];
    int rc = crypto_hmac_sha256(l->key, LIMIT_KEY_LEN, msg, n, mac);
    crypto_wipe(msg, n); /* an address or an openid */
    if (rc == 0)
        memcpy(tag, mac, TAG_LEN);
    return rc;
}

static uint64_t take_tagged(struct limit *l, const uint8_t tag[TAG_LEN], uint64_t now_us)
{
    uint64_t h;
    memcpy(&h, tag, sizeof(h));
    size_t set = (size_t)h & (l->nsets - 1);
    struct bucket *s = &l->b[set * l->ways];
    pthread_mutex_t *mu = &l->locks[set / SETS_PER_LOCK].mu;
    uint64_t wait = 0;
    pthread_mutex_lock(mu);
    struct bucket *b = NULL, *victim = &s[0];
    for (size_t i = 0; i < l->ways; i++) {
        if (s[i].tat_us != 0 && memcmp(s[i].tag, tag, TAG_LEN) == 0) {
            b = &s[i];
            break;
        }
        /* The fullest bucket (earliest tat; a free one has 0) is the cheapest to forget: one
         * whose tat has passed is full, and forgetting it changes no answer. */
        if (s[i].tat_us < victim->tat_us)
            victim = &s[i];
    }
    if (b == NULL) {
        b = victim;
        memcpy(b->tag, tag, TAG_LEN);
        b->tat_us = 0;
    }
    if (limit_bucket_take(&b->tat_us, now_us,
                          atomic_load_explicit(&l->interval_us, memory_order_relaxed),
                          atomic_load_explicit(&l->burst, memory_order_relaxed), &wait))
        wait = 0;
    pthread_mutex_unlock(mu);
    return wait;
}

uint64_t limit_take_local(struct limit *l, const char *appid, const void *key, size_t len,
                          uint64_t now_us)
{
    uint8_t tag[TAG_LEN];
    if (l->b == NULL || bucket_tag(l, appid, key, len, tag) != 0)
        return 0; /* a key out of bounds is a caller's bug: never refuse for it */
    return take_tagged(l, tag, now_us);
}

size_t limit_count(struct limit *l, uint64_t now_us)
{
    size_t n = 0;
    for (size_t set = 0; set < l->nsets; set++) {
        pthread_mutex_t *mu = &l->locks[set / SETS_PER_LOCK].mu;
        pthread_mutex_lock(mu);
        for (size_t i = 0; i < l->ways; i++)
            n += l->b[set * l->ways + i].tat_us > now_us;
        pthread_mutex_unlock(mu);
    }
    return n;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000 + 1; /* never 0 */
}

void limit_take(struct limit *l, struct store *st, struct async_slot *slot, const char *appid,
                const void *key, size_t len, store_limit_fn *done, void *arg)
{
    if (!l->shared) {
        done(arg, STORE_OK, limit_take_local(l, appid, key, len, now_us()));
        return;
    }
    uint8_t tag[TAG_LEN];
    if (st->limits == NULL || bucket_tag(l, appid, key, len, tag) != 0) {
        done(arg, STORE_ERROR, 0);
        return;
    }
    char name[4 + 2 * TAG_LEN + 1];
    name[0] = l->kind;
    name[1] = ':';
    crypto_hex(tag, TAG_LEN, name + 2);
    store_limit_take(st, slot, appid, name,
                     atomic_load_explicit(&l->interval_us, memory_order_relaxed),
                     atomic_load_explicit(&l->burst, memory_order_relaxed), done, arg);
}

int limit_set_rate(struct limit *l, uint32_t burst, uint64_t period_ms)
{
    if (burst == 0 || period_ms == 0)
        return -1;
    atomic_store_explicit(&l->burst, burst, memory_order_relaxed);
    atomic_store_explicit(&l->interval_us, limit_interval_us(burst, period_ms),
                          memory_order_relaxed);
    return 0;
}
