/*
 * exchange: a chained hash table under one mutex. Every entry is on one of three lists: the
 * exchanges in flight, and the remembered failures and successes, each of the last two in the
 * order they were remembered. Every outcome is remembered for the same ttl, so that order is
 * also expiry order (expired outcomes are dropped from the fronts) and eviction order (a full
 * table drops the front failure, else the front success). The critical sections are a few
 * pointer moves; the WeChat call and the store writes happen outside the lock.
 *
 * Entries are small: an outcome is kept as its few numbers, plus the openid and unionid as
 * strings of their own length in a success's tail (about 60 bytes in practice), not as the two
 * fixed buffers of struct exchange_outcome.
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

enum entry_state {
    E_FLIGHT, /* being exchanged: waiters wait on it */
    E_FAILED, /* a remembered failure */
    E_OK,     /* a remembered success: ids[] holds openid NUL unionid NUL */
};

struct entry {
    uint8_t key[CRYPTO_HASH_LEN];
    uint8_t state;  /* enum entry_state */
    uint8_t kind;   /* enum exchange_kind */
    uint8_t status; /* enum wechat_status */
    bool session;
    uint8_t openid_len;
    uint8_t unionid_len;
    uint64_t expires_ms; /* remembered: monotonic time it is forgotten */
    int64_t exchanged_ms;
    long errcode;
    long http_status;
    struct waitlist waiters; /* in flight */
    struct entry *chain;     /* bucket chain */
    struct list node;        /* the list of its state */
    char ids[];
};

_Static_assert(EXCHANGE_ID_MAX <= UINT8_MAX, "id lengths are kept in a byte");

struct exchange {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets;   /* power of two */
    size_t count;      /* every entry */
    size_t remembered; /* entries on failed and ok */
    size_t bytes;      /* allocated for entries */
    size_t max;        /* bound of remembered + in flight, beyond which remembered ones go */
    uint64_t ttl_ms;
    struct list flight, failed, ok;
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
    list_init(&x->flight);
    list_init(&x->failed);
    list_init(&x->ok);
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

static size_t entry_size(const struct entry *e)
{
    return sizeof(*e) +
           (e->state == E_OK ? (size_t)e->openid_len + 1 + (size_t)e->unionid_len + 1 : 0);
}

/* The link that points at e in its bucket chain. */
static struct entry **link_of(struct exchange *x, const struct entry *e)
{
    struct entry **pp = &x->buckets[bucket_of(x, e->key)];
    while (*pp != e)
        pp = &(*pp)->chain;
    return pp;
}

static void unlink_entry(struct exchange *x, struct entry *e)
{
    struct entry **pp = link_of(x, e);
    *pp = e->chain;
    list_unlink(&e->node);
    x->count--;
    if (e->state != E_FLIGHT)
        x->remembered--;
    x->bytes -= entry_size(e);
    free(e);
}

/* Drops the remembered outcomes of a list whose time is up (its front is the oldest). */
static void expire_list(struct exchange *x, struct list *l, uint64_t now)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, l)
    {
        struct entry *e = list_item(pos, struct entry, node);
        if (e->expires_ms > now)
            break;
        unlink_entry(x, e);
    }
}

/* In-flight entries are never dropped here: their exchange is bounded by the request deadline
 * and ends with exchange_finish(). */
static void expire(struct exchange *x, uint64_t now)
{
    expire_list(x, &x->failed, now);
    expire_list(x, &x->ok, now);
}

/* Makes room for one more entry: forgets the oldest remembered failure, else the oldest
 * remembered success. Exchanges in flight stay whatever their number. */
static void make_room(struct exchange *x)
{
    while (x->count >= x->max && x->remembered > 0) {
        struct list *victim = list_first(&x->failed);
        if (victim == NULL)
            victim = list_first(&x->ok);
        unlink_entry(x, list_item(victim, struct entry, node));
    }
}

size_t exchange_forget_user(struct exchange *x, const char *openid)
{
    size_t n = strlen(openid), gone = 0;
    pthread_mutex_lock(&x->mu);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &x->ok)
    {
        struct entry *e = list_item(pos, struct entry, node);
        if (e->openid_len == n && memcmp(e->ids, openid, n) == 0) {
            unlink_entry(x, e);
            gone++;
        }
    }
    pthread_mutex_unlock(&x->mu);
    return gone;
}

void exchange_free(struct exchange *x)
{
    if (x == NULL)
        return;
    struct list *lists[] = {&x->flight, &x->failed, &x->ok};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        struct list *pos, *tmp;
        list_for_each_safe(pos, tmp, lists[i]) unlink_entry(x, list_item(pos, struct entry, node));
    }
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

size_t exchange_bytes(struct exchange *x)
{
    pthread_mutex_lock(&x->mu);
    size_t n = x->bytes;
    pthread_mutex_unlock(&x->mu);
    return n;
}

/* The remembered outcome of e, whole. */
static void outcome_of(const struct entry *e, struct exchange_outcome *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = (enum exchange_kind)e->kind;
    out->status = (enum wechat_status)e->status;
    out->errcode = e->errcode;
    out->http_status = e->http_status;
    out->session = e->session;
    out->exchanged_ms = e->exchanged_ms;
    if (e->state == E_OK) {
        memcpy(out->openid, e->ids, (size_t)e->openid_len + 1);
        memcpy(out->unionid, e->ids + e->openid_len + 1, (size_t)e->unionid_len + 1);
    }
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
    if (e != NULL && e->state != E_FLIGHT) {
        outcome_of(e, out);
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
    make_room(x);
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto out; /* lead without de-duplication rather than fail the login */
    memcpy(e->key, key, CRYPTO_HASH_LEN);
    e->state = E_FLIGHT;
    waitlist_init(&e->waiters);
    size_t b = bucket_of(x, key);
    e->chain = x->buckets[b];
    x->buckets[b] = e;
    list_push_back(&x->flight, &e->node);
    x->count++;
    x->bytes += entry_size(e);
out:
    pthread_mutex_unlock(&x->mu);
    return role;
}

/*
 * Turns the in-flight entry e into the remembered outcome o. A success gets a new entry with
 * room for its ids in place of e (e's waiters are gone already); when that allocation fails the
 * outcome is forgotten, which only costs a repeat the shortcut. Lock held.
 */
static void remember_outcome(struct exchange *x, struct entry *e, const struct exchange_outcome *o,
                             uint64_t now)
{
    if (o->kind == EXCHANGE_OK) {
        size_t on = strnlen(o->openid, EXCHANGE_ID_MAX), un = strnlen(o->unionid, EXCHANGE_ID_MAX);
        struct entry *r = malloc(sizeof(*r) + on + 1 + un + 1);
        if (r == NULL) {
            unlink_entry(x, e);
            return;
        }
        *r = *e;
        r->state = E_OK;
        r->openid_len = (uint8_t)on;
        r->unionid_len = (uint8_t)un;
        memcpy(r->ids, o->openid, on);
        r->ids[on] = '\0';
        memcpy(r->ids + on + 1, o->unionid, un);
        r->ids[on + 1 + un] = '\0';
        waitlist_init(&r->waiters);
        r->node = (struct list){NULL, NULL};
        *link_of(x, e) = r;
        list_unlink(&e->node);
        x->bytes += entry_size(r) - sizeof(*e);
        free(e);
        e = r;
    } else {
        e->state = E_FAILED;
        list_unlink(&e->node);
    }
    e->kind = (uint8_t)o->kind;
    e->status = (uint8_t)o->status;
    e->errcode = o->errcode;
    e->http_status = o->http_status;
    e->session = o->kind == EXCHANGE_OK && o->session;
    e->exchanged_ms = o->exchanged_ms;
    e->expires_ms = now + x->ttl_ms;
    list_push_back(e->state == E_OK ? &x->ok : &x->failed, &e->node);
    x->remembered++;
}

void exchange_finish(struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN],
                     const struct exchange_outcome *outcome, bool remember)
{
    struct list taken;
    uint64_t now = loop_clock_ms();
    pthread_mutex_lock(&x->mu);
    struct entry *e = find(x, key);
    if (e == NULL || e->state != E_FLIGHT) { /* led without an entry (out of memory) */
        pthread_mutex_unlock(&x->mu);
        return;
    }
    waitlist_take(&e->waiters, outcome, &taken);
    if (remember)
        remember_outcome(x, e, outcome, now);
    else
        unlink_entry(x, e);
    pthread_mutex_unlock(&x->mu);
    waiters_post(&taken);
}
