/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 (and kept until 4.0): see
 * crypto_sha256() for why the hot path uses them. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "crypto/crypto.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#define SEAL_VERSION 1
#define NONCE_LEN 12
#define TAG_LEN 16

int crypto_random(void *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

int crypto_token_new(char out[CRYPTO_TOKEN_LEN + 1])
{
    uint8_t raw[32];
    if (crypto_random(raw, sizeof(raw)) != 0)
        return -1;
    crypto_token_encode(raw, out);
    crypto_wipe(raw, sizeof(raw));
    return 0;
}

void crypto_token_encode(const uint8_t raw[CRYPTO_HASH_LEN], char out[CRYPTO_TOKEN_LEN + 1])
{
    char b64[48];
    size_t n = crypto_b64_encode(raw, CRYPTO_HASH_LEN, b64);
    /* base64url without padding: 32 bytes → 43 characters. */
    while (n > 0 && b64[n - 1] == '=')
        n--;
    memcpy(out, CRYPTO_TOKEN_PREFIX, 4);
    for (size_t i = 0; i < n; i++)
        out[4 + i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    out[4 + n] = '\0';
    crypto_wipe(b64, sizeof(b64));
}

bool crypto_token_well_formed(const char *s)
{
    if (strncmp(s, CRYPTO_TOKEN_PREFIX, 4) != 0 || strlen(s) != CRYPTO_TOKEN_LEN)
        return false;
    return strspn(s + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
           CRYPTO_TOKEN_LEN - 4;
}

/*
 * AES-256-GCM of every login's session_key uses the algorithm fetched once (EVP_aes_256_gcm()
 * makes OpenSSL 3 look it up on every use) and a context per thread, reinitialised rather than
 * allocated per call. A thread's context is freed when it exits (the key's destructor).
 */
static EVP_MD *sha256_md;
static EVP_CIPHER *gcm_cipher;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

struct crypto_tls {
    EVP_CIPHER_CTX *gcm;
};

static void tls_free(void *p)
{
    struct crypto_tls *t = p;
    EVP_CIPHER_CTX_free(t->gcm);
    free(t);
}

static void tls_setup(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    gcm_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    pthread_key_create(&tls_key, tls_free);
}

/* The calling thread's contexts, NULL when out of memory. */
static struct crypto_tls *tls(void)
{
    pthread_once(&tls_once, tls_setup);
    struct crypto_tls *t = pthread_getspecific(tls_key);
    if (t != NULL)
        return t;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->gcm = EVP_CIPHER_CTX_new();
    if (t->gcm == NULL || pthread_setspecific(tls_key, t) != 0) {
        tls_free(t);
        return NULL;
    }
    return t;
}

/*
 * Every bearer token of every request is hashed here. OpenSSL 3's EVP digest allocates its
 * provider context on each init even when the EVP_MD_CTX is reused (measured: one allocation per
 * hash), while the low-level SHA-256 runs on a stack context with none. Deprecated in 3.0, kept
 * until 4.0; the EVP path is the fallback if it ever fails.
 */
void crypto_sha256(const void *data, size_t len, uint8_t out[CRYPTO_HASH_LEN])
{
    SHA256_CTX c;
    if (SHA256_Init(&c) == 1 && SHA256_Update(&c, data, len) == 1 && SHA256_Final(out, &c) == 1) {
        crypto_wipe(&c, sizeof(c));
        return;
    }
    crypto_wipe(&c, sizeof(c));
    unsigned int n = CRYPTO_HASH_LEN;
    pthread_once(&tls_once, tls_setup);
    EVP_Digest(data, len, out, &n, sha256_md != NULL ? sha256_md : EVP_sha256(), NULL);
}

int crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aadlen, const void *pt,
                size_t ptlen, uint8_t *out)
{
    int n = 0, total;
    struct crypto_tls *t = tls();
    uint8_t *nonce = out + 1, *ct = out + 1 + NONCE_LEN;
    if (t == NULL || gcm_cipher == NULL || ptlen > (size_t)INT32_MAX - CRYPTO_SEAL_OVERHEAD)
        return -1;
    EVP_CIPHER_CTX *ctx = t->gcm;
    out[0] = SEAL_VERSION;
    if (crypto_random(nonce, NONCE_LEN) != 0)
        return -1;
    if (EVP_EncryptInit_ex2(ctx, gcm_cipher, key, nonce, NULL) != 1 ||
        (aadlen > 0 && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1) ||
        EVP_EncryptUpdate(ctx, ct, &n, pt, (int)ptlen) != 1)
        return -1;
    total = n;
    if (EVP_EncryptFinal_ex(ctx, ct + total, &n) != 1)
        return -1;
    total += n;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + total) != 1)
        return -1;
    return 1 + NONCE_LEN + total + TAG_LEN;
}

int crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aadlen,
                const uint8_t *in, size_t inlen, uint8_t *out)
{
    int rc = -1, n = 0, total = 0;
    EVP_CIPHER_CTX *ctx = NULL;
    if (inlen < CRYPTO_SEAL_OVERHEAD || inlen > (size_t)INT32_MAX)
        return -1;
    size_t ctlen = inlen - CRYPTO_SEAL_OVERHEAD;
    if (in[0] != SEAL_VERSION)
        goto out;
    const uint8_t *nonce = in + 1, *ct = in + 1 + NONCE_LEN, *tag = ct + ctlen;
    struct crypto_tls *t = tls();
    if (t == NULL || gcm_cipher == NULL)
        goto out;
    ctx = t->gcm;
    if (EVP_DecryptInit_ex2(ctx, gcm_cipher, key, nonce, NULL) != 1 ||
        (aadlen > 0 && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1) ||
        EVP_DecryptUpdate(ctx, out, &n, ct, (int)ctlen) != 1)
        goto out;
    total = n;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag) != 1 ||
        EVP_DecryptFinal_ex(ctx, out + total, &n) != 1)
        goto out;
    rc = total + n;
out:
    if (rc < 0)
        crypto_wipe(out, ctlen);
    return rc;
}

size_t crypto_b64_encode(const void *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

int crypto_b64_decode(const char *s, size_t len, uint8_t *out)
{
    /* EVP_DecodeBlock accepts leading/trailing whitespace and counts padding as zero bytes;
     * insist on the canonical form first, then correct for the padding. */
    if (len % 4 != 0 || len > (size_t)INT32_MAX)
        return -1;
    size_t pad = 0;
    if (len > 0 && s[len - 1] == '=')
        pad++;
    if (len > 1 && s[len - 2] == '=')
        pad++;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < len - pad; i++)
        if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
            return -1;
    if (len == 0)
        return 0;
    /* The bits the padding leaves over must be zero, or two texts would decode to the same
     * bytes (RFC 4648 3.5; found by fuzz/fuzz_base64). */
    if (pad > 0) {
        int last = (int)(strchr(alphabet, s[len - pad - 1]) - alphabet);
        if ((last & (pad == 1 ? 0x3 : 0xf)) != 0)
            return -1;
    }
    int n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
    if (n < 0)
        return -1;
    return n - (int)pad;
}

/*
 * Through a buffer on the stack, a block of 4-character groups at a time (base64 decodes each
 * group on its own): no allocation, so -1 always means the text, never a lack of memory. Only
 * the last block may carry padding, so this accepts exactly what crypto_b64_decode() does on the
 * whole text with its spaces read as '+'.
 */
int crypto_b64_decode_lenient(const char *s, size_t len, uint8_t *out)
{
    char block[256];
    size_t total = 0, off = 0;
    int rc = -1;
    if (len % 4 != 0 || len > (size_t)INT32_MAX)
        return -1;
    do {
        size_t n = len - off < sizeof(block) ? len - off : sizeof(block);
        for (size_t i = 0; i < n; i++)
            block[i] = s[off + i] == ' ' ? '+' : s[off + i];
        if (off + n < len && memchr(block, '=', n) != NULL)
            goto out;
        int m = crypto_b64_decode(block, n, out + total);
        if (m < 0)
            goto out;
        total += (size_t)m;
        off += n;
    } while (off < len);
    rc = (int)total;
out:
    crypto_wipe(block, sizeof(block));
    return rc;
}

int crypto_aes128cbc_decrypt(const uint8_t key[16], const uint8_t iv[16], const uint8_t *in,
                             size_t len, uint8_t *out)
{
    int rc = -ENOMEM, n = 0, total;
    if (len == 0 || len % 16 != 0 || len > (size_t)INT32_MAX)
        return -1;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return -ENOMEM;
    /* Any key and any blocks of the right length go through these: their failing says nothing
     * about the key, only that OpenSSL could not run (out of memory). */
    if (EVP_DecryptInit_ex(ctx, EVP_aes_128_cbc(), NULL, key, iv) != 1 ||
        EVP_DecryptUpdate(ctx, out, &n, in, (int)len) != 1)
        goto out;
    rc = -1;
    total = n;
    if (EVP_DecryptFinal_ex(ctx, out + total, &n) != 1) /* checks the PKCS#7 padding */
        goto out;
    rc = total + n;
out:
    if (rc < 0)
        crypto_wipe(out, len);
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

void crypto_hex(const uint8_t *md, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * n] = '\0';
}

int crypto_unhex(const char *s, size_t len, uint8_t *out, size_t n)
{
    char text[2 * 64 + 1];
    size_t got = 0;
    if (len != 2 * n || len >= sizeof(text))
        return -1;
    memcpy(text, s, len); /* OpenSSL wants it NUL-terminated */
    text[len] = '\0';
    return OPENSSL_hexstr2buf_ex(out, n, &got, text, '\0') == 1 && got == n ? 0 : -1;
}

int crypto_sha1_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[41])
{
    uint8_t md[20];
    unsigned int n = sizeof(md);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, a, alen) != 1 || EVP_DigestUpdate(ctx, b, blen) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &n) != 1) {
        /* Only on allocation failure. The caller must not take "" for a hash: a verdict on a
         * signature needs one. */
        out[0] = '\0';
        EVP_MD_CTX_free(ctx);
        return -ENOMEM;
    }
    EVP_MD_CTX_free(ctx);
    crypto_hex(md, sizeof(md), out);
    return 0;
}

/*
 * RFC 2104 over the allocation-free SHA-256 above: OpenSSL 3's HMAC() fetches a MAC and builds a
 * context on every call (14 allocations), and a login computes one per request.
 */
int crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                       uint8_t out[CRYPTO_HASH_LEN])
{
    enum { BLOCK = 64 };
    uint8_t k[BLOCK] = {0}, pad[BLOCK], inner[CRYPTO_HASH_LEN];
    SHA256_CTX c;
    int rc = -1;
    if (keylen > BLOCK)
        crypto_sha256(key, keylen, k);
    else if (keylen > 0)
        memcpy(k, key, keylen);
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    if (SHA256_Init(&c) != 1 || SHA256_Update(&c, pad, BLOCK) != 1 ||
        SHA256_Update(&c, msg, msglen) != 1 || SHA256_Final(inner, &c) != 1)
        goto out;
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    if (SHA256_Init(&c) != 1 || SHA256_Update(&c, pad, BLOCK) != 1 ||
        SHA256_Update(&c, inner, sizeof(inner)) != 1 || SHA256_Final(out, &c) != 1)
        goto out;
    rc = 0;
out:
    crypto_wipe(k, sizeof(k));
    crypto_wipe(pad, sizeof(pad));
    crypto_wipe(inner, sizeof(inner));
    crypto_wipe(&c, sizeof(c));
    return rc;
}

void crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                            char out[65])
{
    uint8_t md[CRYPTO_HASH_LEN];
    if (crypto_hmac_sha256(key, keylen, msg, msglen, md) != 0) {
        out[0] = '\0';
        return;
    }
    crypto_hex(md, sizeof(md), out);
    crypto_wipe(md, sizeof(md));
}

bool crypto_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void crypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}
