/*
 * util/lockout: failed attempts per key in a fixed table under one mutex (see lockout.h).
 *
 * The table is small (the admin routes use 1024 entries) and only consulted by rare requests, so
 * a linear scan is simpler than a hash and costs a few microseconds.
 */
#include "util/lockout.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char key[LOCKOUT_KEY_MAX + 1];
    unsigned failures;     /* in the window that began at since_ms */
    uint64_t since_ms;     /* the window's first failure */
    uint64_t locked_until; /* 0: not locked out */
    uint64_t active_ms;    /* the last failure or refusal: eviction order */
};

struct lockout {
    pthread_mutex_t mu;
    unsigned max_failures;
    uint64_t window_ms;
    size_t cap, n;
    struct entry e[];
};

struct lockout *lockout_new(size_t capacity, unsigned max_failures, uint64_t window_ms)
{
    if (capacity == 0 || max_failures == 0 || window_ms == 0)
        return NULL;
    struct lockout *lo = calloc(1, sizeof(*lo) + capacity * sizeof(lo->e[0]));
    if (lo == NULL)
        return NULL;
    if (pthread_mutex_init(&lo->mu, NULL) != 0) {
        free(lo);
        return NULL;
    }
    lo->cap = capacity;
    lo->max_failures = max_failures;
    lo->window_ms = window_ms;
    return lo;
}

void lockout_free(struct lockout *lo)
{
    if (lo == NULL)
        return;
    pthread_mutex_destroy(&lo->mu);
    free(lo);
}

/* Time from then to now; 0 if now is earlier (callers' clocks are monotonic, but the caller's
 * cached now may lag another thread's). */
static uint64_t since(uint64_t now, uint64_t then)
{
    return now > then ? now - then : 0;
}

static struct entry *find(struct lockout *lo, const char *key)
{
    for (size_t i = 0; i < lo->n; i++)
        if (strncmp(lo->e[i].key, key, LOCKOUT_KEY_MAX) == 0)
            return &lo->e[i];
    return NULL;
}

/* How much an entry is worth keeping: 0 holds nothing any more (lockout and window over),
 * 1 is counting failures, 2 is locked out. */
static int weight(const struct lockout *lo, const struct entry *e, uint64_t now)
{
    if (e->locked_until != 0 && now < e->locked_until)
        return 2;
    if (e->locked_until == 0 && e->failures > 0 && since(now, e->since_ms) < lo->window_ms)
        return 1;
    return 0;
}

/* A fresh entry for key: a free slot, else the least worth keeping, least recently active. */
static struct entry *take(struct lockout *lo, const char *key, uint64_t now)
{
    struct entry *e;
    if (lo->n < lo->cap) {
        e = &lo->e[lo->n++];
    } else {
        e = &lo->e[0];
        int ew = weight(lo, e, now);
        for (size_t i = 1; i < lo->n; i++) {
            struct entry *c = &lo->e[i];
            int cw = weight(lo, c, now);
            if (cw < ew || (cw == ew && c->active_ms < e->active_ms)) {
                e = c;
                ew = cw;
            }
        }
    }
    memset(e, 0, sizeof(*e));
    memcpy(e->key, key, strnlen(key, LOCKOUT_KEY_MAX));
    return e;
}

enum lockout_outcome lockout_attempt(struct lockout *lo, const char *key, uint64_t now_ms,
                                     lockout_check_fn *check, void *arg, uint64_t *retry_ms)
{
    enum lockout_outcome out;
    pthread_mutex_lock(&lo->mu);
    struct entry *e = find(lo, key);
    if (e != NULL && e->locked_until != 0) {
        if (now_ms < e->locked_until) {
            e->active_ms = now_ms;
            if (retry_ms != NULL)
                *retry_ms = e->locked_until - now_ms;
            out = LOCKOUT_REFUSED;
            goto out;
        }
        e->locked_until = 0; /* served its time: a new window starts at the next failure */
        e->failures = 0;
    }
    /* Under the mutex: a second attempt from the same key waits for this one's count. */
    if (check(arg)) {
        out = LOCKOUT_PASSED;
        goto out;
    }
    if (e == NULL)
        e = take(lo, key, now_ms);
    if (e->failures == 0 || since(now_ms, e->since_ms) >= lo->window_ms) {
        e->failures = 0;
        e->since_ms = now_ms;
    }
    e->failures++;
    e->active_ms = now_ms;
    if (e->failures >= lo->max_failures) {
        e->locked_until = now_ms + lo->window_ms; /* never 0: window_ms > 0 */
        if (retry_ms != NULL)
            *retry_ms = lo->window_ms;
        out = LOCKOUT_FAILED_LOCK;
    } else {
        out = e->failures == 1 ? LOCKOUT_FAILED_FIRST : LOCKOUT_FAILED;
    }
out:
    pthread_mutex_unlock(&lo->mu);
    return out;
}

size_t lockout_count(struct lockout *lo)
{
    pthread_mutex_lock(&lo->mu);
    size_t n = lo->n;
    pthread_mutex_unlock(&lo->mu);
    return n;
}
