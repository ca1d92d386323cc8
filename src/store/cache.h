/*
 * store/cache: verified sessions kept in memory, shared by the worker threads, and the store
 * decorator that uses them.
 *
 * GET /v1/session is the hot path (every request of every backend service through nginx
 * auth_request), and a store lookup costs several times the rest of the request. A hit answers
 * from memory; a miss asks the store and remembers the answer. Correctness rests on two rules:
 *   - an entry is never served past its session's expiry;
 *   - a logout replaces the entry with a tombstone before the store delete is sent, so a lookup
 *     that read the store just before the logout cannot put it back.
 * So it is only valid when this process sees every logout: the SQLite store, one wxlogin process
 * per database file (store/sqlite.c refuses a second). Stores shared by several instances
 * (Redis) must not use it. The decorator (store_cache_wrap) applies the rules itself, so
 * coherence is the store's business, not a call order for its callers to remember.
 *
 * Set-associative (4 ways) with one lock per 64 sets, so lookups from different threads rarely
 * meet on a lock; a full set replaces its oldest entry. Keys are SHA-256 hashes of tokens.
 */
#ifndef WXLOGIN_STORE_CACHE_H
#define WXLOGIN_STORE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "store/store.h"

struct store_cache;

/* Room for about `entries` sessions (rounded up); 0 → NULL (no cache). */
struct store_cache *store_cache_new(size_t entries);
void store_cache_free(struct store_cache *c);

/* Copies a live entry (expires_at > now) into *out. False on a miss. Accepts NULL c. */
bool store_cache_get(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN], int64_t now,
                     struct store_session *out);
/* Remembers s for hash (ignored when an id is too long to keep). Accepts NULL c. */
void store_cache_put(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN],
                     const struct store_session *s);
/*
 * The same, for a record read from the store when the unionid epoch was epoch
 * (store_cache_epoch() before the read): a unionid stored meanwhile makes it stale at once.
 */
void store_cache_put_read_at(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN],
                             const struct store_session *s, uint64_t epoch);
/* The unionid epoch: it moves whenever a login stores a unionid, after which a session cached
 * without one is read from the store again (its user may have one now). */
uint64_t store_cache_epoch(struct store_cache *c);
void store_cache_unionid_stored(struct store_cache *c);
/* Forgets hash for good (a tombstone). Accepts NULL c. */
void store_cache_del(struct store_cache *c, const uint8_t hash[CRYPTO_HASH_LEN]);

/* Forgets every entry; a record read from the store before the call is not cached after it (a
 * revocation too large to name its tokens one by one). Accepts NULL c. */
void store_cache_flush(struct store_cache *c);

/* A store that answers get_session from c when it can and keeps c coherent with the writes it
 * passes to inner. Closing it closes inner. Returns 0 or -1 (out of memory). */
int store_cache_wrap(struct store_cache *c, struct store *inner, struct store **out);

#endif
