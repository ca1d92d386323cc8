/*
 * exchange: a chained hash table under one mutex, plus a FIFO of entries in creation order so
 * expired outcomes are dropped from the front (every entry lives the same ttl, so creation
 * order is expiry order). The critical sections are a few pointer moves; the WeChat call and the
 * store writes happen outside the lock.
 */
#include "exchange/exchange.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop/loop.h"
#include "runtime/waitlist.h"
#include "util/jsonw.h"
#include "util/list.h"

struct entry {
    uint8_t key[CRYPTO_HASH_LEN];
    bool done;
    uint64_t expires_ms;
    struct exchange_outcome outcome;
    struct waitlist waiters;
    struct entry *chain; /* bucket chain */
    struct list fifo;
};

struct exchange {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count, max;
    uint64_t ttl_ms;
    struct list fifo; /* creation order */
};

void exchange_key(const char *appid, const char *code, uint8_t key[CRYPTO_HASH_LEN])
{
    char buf[EXCHANGE_ID_MAX + 1 + 1024];
    int n = snprintf(buf, sizeof(buf), "%s\n%s", appid, code);
    if (n < 0 || (size_t)n >= sizeof(buf))
        n = (int)sizeof(buf) - 1;
    crypto_sha256(buf, (size_t)n, key);
    crypto_wipe(buf, sizeof(buf)); /* it held a code */
}

struct exchange *exchange_new(size_t max_entries, uint64_t ttl_ms)
{
    struct exchange *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->nbuckets = 1024;
    while (x->nbuckets < max_entries)
        x->nbuckets *= 2;
    x->buckets = calloc(x->nbuckets, sizeof(*x->buckets));
    if (x->buckets == NULL) {
        free(x);
        return NULL;
    }
    x->max = max_entries;
    x->ttl_ms = ttl_ms;
    list_init(&x->fifo);
    pthread_mutex_init(&x->mu, NULL);
    return x;
}

static size_t bucket_of(const struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & (x->nbuckets - 1);
}

static struct entry *find(struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN])
{
    for (struct entry *e = x->buckets[bucket_of(x, key)]; e != NULL; e = e->chain)
        if (memcmp(e->key, key, CRYPTO_HASH_LEN) == 0)
            return e;
    return NULL;
}

static void unlink_entry(struct exchange *x, struct entry *e)
{
    struct entry **pp = &x->buckets[bucket_of(x, e->key)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    list_unlink(&e->fifo);
    x->count--;
    free(e);
}

/* Drops remembered outcomes whose time is up. In-flight entries are never dropped here: their
 * exchange is bounded by the request deadline and ends with exchange_finish(). */
static void expire(struct exchange *x, uint64_t now)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &x->fifo)
    {
        struct entry *e = list_item(pos, struct entry, fifo);
        if (e->expires_ms > now)
            break;
        if (e->done)
            unlink_entry(x, e);
    }
}

void exchange_free(struct exchange *x)
{
    if (x == NULL)
        return;
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &x->fifo) unlink_entry(x, list_item(pos, struct entry, fifo));
    free(x->buckets);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

size_t exchange_outcome_encode(const struct exchange_outcome *o, char *out, size_t cap)
{
    struct jsonw w;
    jsonw_begin(&w, out, cap);
    jsonw_num(&w, "kind", o->kind);
    jsonw_str(&w, "openid", o->openid);
    jsonw_str(&w, "unionid", o->unionid);
    jsonw_num(&w, "status", o->status);
    jsonw_num(&w, "errcode", o->errcode);
    jsonw_num(&w, "http_status", o->http_status);
    jsonw_num(&w, "session", o->session ? 1 : 0);
    jsonw_num(&w, "at_ms", o->exchanged_ms);
    return jsonw_end(&w);
}

int exchange_outcome_decode(const char *s, size_t len, struct exchange_outcome *out)
{
    json_error_t jerr;
    json_t *j = json_loadb(s, len, 0, &jerr);
    int kind, status;
    json_int_t errcode, http_status, session = 0, at_ms = 0;
    const char *openid, *unionid;
    int rc = -1;
    /* "session" and "at_ms" came later: a record without them is an earlier version's. */
    if (j == NULL ||
        json_unpack(j, "{s:i, s:s, s:s, s:i, s:I, s:I, s?I, s?I}", "kind", &kind, "openid", &openid,
                    "unionid", &unionid, "status", &status, "errcode", &errcode, "http_status",
                    &http_status, "session", &session, "at_ms", &at_ms) != 0)
        goto out;
    if (kind < EXCHANGE_OK || kind > EXCHANGE_ABORTED || strlen(openid) > EXCHANGE_ID_MAX ||
        strlen(unionid) > EXCHANGE_ID_MAX || status < WECHAT_OK || status > WECHAT_TIMEOUT ||
        (session != 0 && session != 1) || (session == 1 && kind != EXCHANGE_OK) || at_ms < 0)
        goto out;
    memset(out, 0, sizeof(*out));
    out->kind = (enum exchange_kind)kind;
    memcpy(out->openid, openid, strlen(openid) + 1);
    memcpy(out->unionid, unionid, strlen(unionid) + 1);
    out->status = (enum wechat_status)status;
    out->errcode = (long)errcode;
    out->http_status = (long)http_status;
    out->session = session == 1;
    out->exchanged_ms = (int64_t)at_ms;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

size_t exchange_size(struct exchange *x)
{
    pthread_mutex_lock(&x->mu);
    size_t n = x->count;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static void wake_trampoline(const void *result, void (*fn)(void), void *arg)
{
    ((exchange_wake_fn *)fn)(result, arg);
}

enum exchange_role exchange_begin(struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN],
                                  struct loop *loop, struct async_slot *slot,
                                  exchange_wake_fn *wake, void *arg, struct exchange_outcome *out)
{
    uint64_t now = loop_clock_ms();
    enum exchange_role role = EXCHANGE_LEAD;

    pthread_mutex_lock(&x->mu);
    expire(x, now);
    struct entry *e = find(x, key);
    if (e != NULL && e->done) {
        *out = e->outcome;
        role = EXCHANGE_KNOWN;
        goto out;
    }
    if (e != NULL) {
        struct waiter *w = waiter_new(&x->mu, loop, wake_trampoline, (void (*)(void))wake, arg,
                                      sizeof(struct exchange_outcome));
        if (w == NULL) {
            /* It cannot wait, and must not lead: a second leader of the same code would
             * finish the first one's entry with its own outcome (40163, the code used). */
            memset(out, 0, sizeof(*out));
            out->kind = EXCHANGE_ABORTED;
            role = EXCHANGE_KNOWN;
            goto out;
        }
        waitlist_add(&e->waiters, w, slot);
        role = EXCHANGE_WAIT;
        goto out;
    }
    if (x->count >= x->max)
        goto out;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto out;
    memcpy(e->key, key, CRYPTO_HASH_LEN);
    e->expires_ms = now + x->ttl_ms;
    waitlist_init(&e->waiters);
    size_t b = bucket_of(x, key);
    e->chain = x->buckets[b];
    x->buckets[b] = e;
    list_push_back(&x->fifo, &e->fifo);
    x->count++;
out:
    pthread_mutex_unlock(&x->mu);
    return role;
}

void exchange_finish(struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN],
                     const struct exchange_outcome *outcome, bool remember)
{
    struct list taken;
    pthread_mutex_lock(&x->mu);
    struct entry *e = find(x, key);
    if (e == NULL || e->done) { /* led without an entry (table was full) */
        pthread_mutex_unlock(&x->mu);
        return;
    }
    waitlist_take(&e->waiters, outcome, &taken);
    if (remember) {
        e->done = true;
        e->outcome = *outcome;
    } else {
        unlink_entry(x, e);
    }
    pthread_mutex_unlock(&x->mu);
    waiters_post(&taken);
}
