/*
 * store/seal: session keys at rest, the one place that knows how they are sealed.
 *
 * A session_key is sealed with AES-256-GCM under the master key (crypto_seal: random nonce per
 * write) with "appid\nopenid" as associated data, which binds the blob to its user: a blob
 * copied onto another user's row does not open. Every backend stores only what this makes.
 * Pure code, no I/O.
 */
#ifndef WXLOGIN_STORE_SEAL_H
#define WXLOGIN_STORE_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "store/store.h"

#define STORE_SEALED_MAX (STORE_KEY_MAX + CRYPTO_SEAL_OVERHEAD)

/* Seals session_key for (appid, openid) into out. Returns the sealed length, or -1. */
int store_seal(const uint8_t master[CRYPTO_KEY_LEN], const char *appid, const char *openid,
               const char *session_key, uint8_t out[STORE_SEALED_MAX]);

/* Opens a sealed key into out (NUL-terminated). False when it does not open: another master
 * key, another user's blob, tampering, or a malformed blob; out is then "". */
bool store_unseal(const uint8_t master[CRYPTO_KEY_LEN], const char *appid, const char *openid,
                  const uint8_t *blob, size_t len, char out[STORE_KEY_MAX + 1]);

/* Opens a user's keys into u (whose appid and openid are set): the current one, and the
 * previous one (prev_len 0: none) with the time it was replaced. False when the current key
 * does not open: such a user is as good as none. */
bool store_user_open(const uint8_t master[CRYPTO_KEY_LEN], struct store_user *u, const uint8_t *key,
                     size_t key_len, const uint8_t *prev, size_t prev_len, int64_t prev_at);

/*
 * The master key's check value: HMAC-SHA256 of a fixed label under a key derived from the master
 * key (never the key, nor a plain hash of it). A store keeps the value of the key it was first
 * sealed with and refuses to start with another (store_shared_new(): STORE_WRONG_KEY), instead
 * of answering every decrypt 401. Returns 0 or -1.
 */
int store_key_check_value(const uint8_t master[CRYPTO_KEY_LEN], uint8_t out[CRYPTO_HASH_LEN]);

/* The message for STORE_WRONG_KEY: what happened and how to fix it (what names the store). */
#define STORE_WRONG_KEY_MSG(what)                                                                  \
    "store: " what " was sealed with a different master key; start with the key it was sealed "    \
    "with, or move it aside to start empty (docs/operations.md, master key rotation)"

#endif
