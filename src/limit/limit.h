/*
 * limit: rate limits as token buckets — how often one client address, one user or one app may
 * do something, with the answer "not now, retry in so long".
 *
 * A limit of N per period is a bucket of N tokens that gains one every period / N: a burst of N
 * at once, then N per period. It is computed as GCRA (the generic cell rate algorithm, the
 * virtual-scheduling form of a token bucket): a bucket is one number, the time it will be full
 * again (its theoretical arrival time, "tat"), so a bucket that is full again holds nothing and
 * can be forgotten without changing any answer. A refused request takes nothing: hammering a
 * bucket does not push its next token further away.
 *
 * A limiter is one limit (a rate and a kind of key: client address, openid, app) for the whole
 * process, shared by the workers. Its buckets live
 *   - with a store shared by several instances (Redis), in the store: every instance takes from
 *     the same bucket, atomically on the store's side (store_limit_take(), a script run on the
 *     worker's own connection; the caller waits in its pending slot, never blocking its thread);
 *   - otherwise in a fixed table in this process, set-associative, with a mutex per group of
 *     sets. Requests that take tokens (logins, phone numbers) each cost a WeChat round trip and
 *     a store write, and already take the code-exchange table's mutex; a mutex held for a few
 *     dozen instructions is nothing next to that, and it keeps one exact limit for the process
 *     (per-worker buckets would grant a client once per worker its connections reach, or a
 *     single keep-alive connection a worker's share only). GET /v1/session never comes here
 *     unless a limit is configured for it.
 * The table never grows: a new key takes the way of its set whose bucket is fullest (a full one
 * forgets nothing), so spraying keys (addresses) costs the sprayer its own buckets' memory and
 * at worst makes the table forget other sprayed buckets' debt, never grows it.
 *
 * Keys are never kept or sent as they are: a bucket is named by HMAC-SHA256 under a key derived
 * from the master key (limit_key()) of its kind, app and key, cut to 128 bits, so the store
 * holds no address or openid and every instance (sharing the master key) names a bucket alike.
 *
 * Library-like: no logging. Thread-safe.
 */
#ifndef WXLOGIN_LIMIT_H
#define WXLOGIN_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "store/store.h"

struct async_slot;
struct limit;

#define LIMIT_KEY_LEN CRYPTO_HASH_LEN
/* Bytes of a key a bucket is taken for (an address is 16, an openid at most 128). */
#define LIMIT_KEY_MAX 256

/* The key buckets are named with, from the master key (HMAC-SHA256 under a fixed label).
 * Returns 0 or -1. */
int limit_key(const uint8_t master_key[CRYPTO_KEY_LEN], uint8_t out[LIMIT_KEY_LEN]);

/* The interval between two tokens of a bucket of burst tokens per period_ms, in µs (at least
 * 1). */
uint64_t limit_interval_us(uint32_t burst, uint64_t period_ms);

/*
 * The arithmetic of one bucket (pure): takes a token at now_us from the bucket whose
 * theoretical arrival time is *tat_us (0: never used), burst tokens of which one comes back
 * every interval_us. True when taken (*tat_us moves on by one interval); false when the bucket
 * is empty, *wait_us then being how long until a token is due (at least 1) and *tat_us
 * unchanged.
 */
bool limit_bucket_take(uint64_t *tat_us, uint64_t now_us, uint64_t interval_us, uint32_t burst,
                       uint64_t *wait_us);

struct limit_opts {
    char kind;          /* names its buckets: 'a' address, 'o' openid, 'w' WeChat calls... */
    uint32_t burst;     /* tokens per period (at least 1) */
    uint64_t period_ms; /* at least 1 */
    /* true: the buckets are the shared store's (store_limit_take()); false: this process's. */
    bool shared;
    /* Buckets the process's table holds (not shared): up to 64, every one of them is searched
     * for each key (a limiter per app: its buckets are never forgotten while the apps fit);
     * above, sets of 8. */
    size_t capacity;
    const uint8_t *key; /* LIMIT_KEY_LEN bytes from limit_key(), copied */
};

/* NULL when out of memory or an option is out of range. */
struct limit *limit_new(const struct limit_opts *opts);
/* Accepts NULL. */
void limit_free(struct limit *l);
/* Changes the rate (a reload): the buckets stay, each now refills at the new rate. From any
 * thread; a take racing with it sees either rate. Returns 0, or -1 when out of range. */
int limit_set_rate(struct limit *l, uint32_t burst, uint64_t period_ms);

/*
 * Takes a token of the bucket of (appid, key) (appid "" for buckets of no app; key len bytes,
 * at most LIMIT_KEY_MAX). done(arg, status, wait_us) runs once: STORE_OK with wait_us 0 when a
 * token was taken, or with the µs until the next is due; STORE_ERROR when the shared store
 * failed. With the process's table it runs before limit_take() returns, without touching
 * slot; with a shared store, later on the caller's loop through st (the worker's store) unless
 * slot is cancelled first.
 */
void limit_take(struct limit *l, struct store *st, struct async_slot *slot, const char *appid,
                const void *key, size_t len, store_limit_fn *done, void *arg);

/* What limit_take() does with the process's table, at now_us (monotonic µs, > 0); returns
 * wait_us. For the tests. */
uint64_t limit_take_local(struct limit *l, const char *appid, const void *key, size_t len,
                          uint64_t now_us);
/* Buckets of the process's table that are not full at now_us (that hold anything). */
size_t limit_count(struct limit *l, uint64_t now_us);
/* Buckets the process's table can hold. */
size_t limit_capacity(const struct limit *l);

/* Seconds to tell a client to wait (Retry-After) for wait_us: rounded up, at least 1. */
unsigned limit_retry_after_s(uint64_t wait_us);

#endif
