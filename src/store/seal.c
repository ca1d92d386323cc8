#include "store/seal.h"

#include <stdio.h>
#include <string.h>

/* The associated data: the user the blob belongs to. */
static int aad_of(const char *appid, const char *openid, char out[2 * STORE_ID_MAX + 2])
{
    int n = snprintf(out, 2 * STORE_ID_MAX + 2, "%s\n%s", appid, openid);
    return n < 0 || n >= 2 * STORE_ID_MAX + 2 ? -1 : n;
}

int store_seal(const uint8_t master[CRYPTO_KEY_LEN], const char *appid, const char *openid,
               const char *session_key, uint8_t out[STORE_SEALED_MAX])
{
    char aad[2 * STORE_ID_MAX + 2];
    int aadlen = aad_of(appid, openid, aad);
    size_t n = strlen(session_key);
    if (aadlen < 0 || n == 0 || n > STORE_KEY_MAX)
        return -1;
    return crypto_seal(master, aad, (size_t)aadlen, session_key, n, out);
}

bool store_unseal(const uint8_t master[CRYPTO_KEY_LEN], const char *appid, const char *openid,
                  const uint8_t *blob, size_t len, char out[STORE_KEY_MAX + 1])
{
    char aad[2 * STORE_ID_MAX + 2];
    uint8_t pt[STORE_SEALED_MAX];
    int aadlen = aad_of(appid, openid, aad);
    out[0] = '\0';
    if (aadlen < 0 || len > sizeof(pt) || len <= CRYPTO_SEAL_OVERHEAD)
        return false;
    int n = crypto_open(master, aad, (size_t)aadlen, blob, len, pt);
    bool ok = n > 0 && n <= STORE_KEY_MAX && memchr(pt, '\0', (size_t)n) == NULL;
    if (ok) {
        memcpy(out, pt, (size_t)n);
        out[n] = '\0';
    }
    crypto_wipe(pt, sizeof(pt));
    return ok;
}

bool store_user_open(const uint8_t master[CRYPTO_KEY_LEN], struct store_user *u, const uint8_t *key,
                     size_t key_len, const uint8_t *prev, size_t prev_len, int64_t prev_at)
{
    if (!store_unseal(master, u->appid, u->openid, key, key_len, u->session_key))
        return false;
    if (prev_len > 0 &&
        store_unseal(master, u->appid, u->openid, prev, prev_len, u->prev_session_key))
        u->prev_replaced_at = prev_at;
    return true;
}

/* Two steps, so the stored value is not a MAC under the master key itself: a key derived for
 * this use only, then a MAC of a fixed label under it. */
#define CHECK_DERIVE_LABEL "wxlogin master-key check v1"
#define CHECK_VALUE_LABEL "wxlogin: the key this store was sealed with"

int store_key_check_value(const uint8_t master[CRYPTO_KEY_LEN], uint8_t out[CRYPTO_HASH_LEN])
{
    uint8_t k[CRYPTO_HASH_LEN];
    int rc = crypto_hmac_sha256(master, CRYPTO_KEY_LEN, CHECK_DERIVE_LABEL,
                                sizeof(CHECK_DERIVE_LABEL) - 1, k);
    if (rc == 0)
        rc =
            crypto_hmac_sha256(k, sizeof(k), CHECK_VALUE_LABEL, sizeof(CHECK_VALUE_LABEL) - 1, out);
    crypto_wipe(k, sizeof(k));
    return rc;
}
