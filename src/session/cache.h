/*
 * session/cache: verified sessions kept in memory, shared by the worker threads.
 *
 * GET /v1/session is the hot path (every request of every backend service through nginx
 * auth_request), and a store lookup costs several times the rest of the request. A hit answers
 * from memory; a miss asks the store and remembers the answer. Correctness rests on two rules:
 *   - an entry is never served past its session's expiry;
 *   - a logout replaces the entry with a tombstone before the store delete is acknowledged, so
 *     a lookup that read the store just before the logout cannot put it back.
 * So it is only valid when this process sees every logout: the SQLite store, one wxlogin process
 * per database file. Stores shared by several instances (Redis) must not use it.
 *
 * Set-associative (4 ways) with one lock per 64 sets, so lookups from different threads rarely
 * meet on a lock; a full set replaces its oldest entry. Keys are SHA-256 hashes of tokens.
 */
#ifndef WXLOGIN_SESSION_CACHE_H
#define WXLOGIN_SESSION_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "session/session.h"

struct session_cache;

/* Room for about `entries` sessions (rounded up); 0 → NULL (no cache). */
struct session_cache *session_cache_new(size_t entries);
void session_cache_free(struct session_cache *c);

/* Copies a live entry (expires_at > now) into *out. False on a miss. Accepts NULL c. */
bool session_cache_get(struct session_cache *c, const uint8_t hash[CRYPTO_HASH_LEN], int64_t now,
                       struct session_record *out);
/* Remembers rec for hash (ignored when an id is too long to keep). Accepts NULL c. */
void session_cache_put(struct session_cache *c, const uint8_t hash[CRYPTO_HASH_LEN],
                       const struct session_record *rec);
/* Forgets hash for good (a tombstone). Accepts NULL c. */
void session_cache_del(struct session_cache *c, const uint8_t hash[CRYPTO_HASH_LEN]);

#endif
