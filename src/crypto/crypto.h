/*
 * crypto: the service's few cryptographic operations, all on OpenSSL 3's libcrypto.
 *
 * Session tokens, SHA-256, AES-256-GCM sealing of session keys at rest, base64, constant-time
 * comparison and wiping. No I/O and no logging; every function either succeeds or returns an
 * error without writing its outputs.
 */
#ifndef WXLOGIN_CRYPTO_H
#define WXLOGIN_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_KEY_LEN 32  /* AES-256 master key */
#define CRYPTO_HASH_LEN 32 /* SHA-256 */

/* Session tokens: "wxl_" + base64url(32 random bytes) without padding. The prefix lets secret
 * scanners recognise a leaked token. */
#define CRYPTO_TOKEN_PREFIX "wxl_"
#define CRYPTO_TOKEN_LEN (4 + 43)

/* Sealed blob: version byte, 12-byte nonce, ciphertext, 16-byte tag. */
#define CRYPTO_SEAL_OVERHEAD (1 + 12 + 16)

/* Fills buf with n bytes from the OS CSPRNG. Returns 0 or -1. */
int crypto_random(void *buf, size_t n);

/* Writes a new token (NUL-terminated) into out. Returns 0 or -1. */
int crypto_token_new(char out[CRYPTO_TOKEN_LEN + 1]);
/* The token of 32 bytes of key material (e.g. a PRF's output under a server secret): the same
 * shape as crypto_token_new's. */
void crypto_token_encode(const uint8_t raw[CRYPTO_HASH_LEN], char out[CRYPTO_TOKEN_LEN + 1]);
/* True when s has the exact shape of a token (prefix, length, alphabet). */
bool crypto_token_well_formed(const char *s);

void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_HASH_LEN]);

/*
 * AES-256-GCM with a random nonce; aad is authenticated, not encrypted. out must hold
 * ptlen + CRYPTO_SEAL_OVERHEAD bytes. Returns the sealed length, or -1.
 */
int crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aadlen, const void *pt,
                size_t ptlen, uint8_t *out);
/*
 * Opens a sealed blob. out must hold inlen - CRYPTO_SEAL_OVERHEAD bytes. Returns the plaintext
 * length, or -1 when the blob is malformed or fails authentication (wrong key, tampered data,
 * other aad); out is wiped on failure.
 */
int crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aadlen,
                const uint8_t *in, size_t inlen, uint8_t *out);

/* Standard base64 with padding. out must hold 4 * ((n + 2) / 3) + 1 bytes. Returns the length. */
size_t crypto_b64_encode(const void *in, size_t n, char *out);
/*
 * Strict standard base64 (padding required, no whitespace). out must hold 3 * (len / 4) bytes.
 * Returns the decoded length, or -1 when s is not base64.
 */
int crypto_b64_decode(const char *s, size_t len, uint8_t *out);

/*
 * Base64 as Mini Programs deliver it: standard alphabet, but spaces are read as '+' (a '+' sent
 * unencoded through a URL or form arrives as a space). Otherwise as strict as crypto_b64_decode.
 * Allocates nothing: -1 is always the text's fault.
 */
int crypto_b64_decode_lenient(const char *s, size_t len, uint8_t *out);

/*
 * AES-128-CBC decryption with PKCS#7 padding (WeChat's encryptedData). out must hold len bytes.
 * Returns the plaintext length, -1 when len is not a positive multiple of 16 or the padding is
 * wrong (the usual sign of a wrong key), or -ENOMEM when OpenSSL could not run it (out of
 * memory: nothing is known about the key); out is wiped on failure.
 */
int crypto_aes128cbc_decrypt(const uint8_t key[16], const uint8_t iv[16], const uint8_t *in,
                             size_t len, uint8_t *out);

/* Lowercase hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void crypto_hex(const uint8_t *in, size_t n, char *out);
/* The n bytes whose hex (either case) is the len characters at s. Returns 0, or -1 when s is
 * not exactly that. */
int crypto_unhex(const char *s, size_t len, uint8_t *out, size_t n);
/* Lowercase hex SHA-1 of a followed by b (rawData signatures: SHA-1(rawData + session_key)).
 * Returns 0, or -ENOMEM (out "") when it could not be computed. */
int crypto_sha1_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[41]);
/* HMAC-SHA256(key, msg). Returns 0, or -1 (out untouched). */
int crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                       uint8_t out[CRYPTO_HASH_LEN]);
/* Lowercase hex HMAC-SHA256(key, msg). */
void crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                            char out[65]);

/* Constant-time equality of two n-byte buffers. */
bool crypto_equal(const void *a, const void *b, size_t n);
/* Wipes n bytes in a way the compiler cannot drop. */
void crypto_wipe(void *p, size_t n);

#endif
