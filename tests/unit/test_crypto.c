/*
 * Unit tests for crypto/crypto.h: session token shape and uniqueness, SHA-256 vectors, AES-256-GCM
 * sealing (round trips and every way an opened blob must be refused), strict base64 (RFC 4648
 * vectors and the inputs it must reject), HMAC-SHA256 (RFC 4231) and constant-time comparison.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"

#define URL_ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

/* ---- helpers ---- */

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* A valid token to mutate: prefix + 43 characters of the url alphabet. */
static void valid_token(char out[CRYPTO_TOKEN_LEN + 1])
{
    memcpy(out, CRYPTO_TOKEN_PREFIX, 4);
    for (size_t i = 4; i < CRYPTO_TOKEN_LEN; i++)
        out[i] = URL_ALPHABET[i % 64];
    out[CRYPTO_TOKEN_LEN] = '\0';
}

/* ---- tokens ---- */

static void test_token_has_prefix_length_and_url_alphabet(void **state)
{
    (void)state;
    char tok[CRYPTO_TOKEN_LEN + 1];
    memset(tok, 'x', sizeof(tok));
    assert_int_equal(crypto_token_new(tok), 0);
    assert_int_equal(strlen(tok), CRYPTO_TOKEN_LEN);
    assert_int_equal(CRYPTO_TOKEN_LEN, 47);
    assert_memory_equal(tok, "wxl_", 4);
    assert_int_equal(strspn(tok + 4, URL_ALPHABET), CRYPTO_TOKEN_LEN - 4);
    assert_null(strchr(tok, '='));
    assert_true(crypto_token_well_formed(tok));
}

static int cmp_token(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_token_1000_are_distinct_and_well_formed(void **state)
{
    (void)state;
    enum { N = 1000 };
    char(*toks)[CRYPTO_TOKEN_LEN + 1] = calloc(N, sizeof(*toks));
    assert_non_null(toks);
    bool dash = false, underscore = false;
    for (int i = 0; i < N; i++) {
        assert_int_equal(crypto_token_new(toks[i]), 0);
        assert_true(crypto_token_well_formed(toks[i]));
        dash |= strchr(toks[i] + 4, '-') != NULL;
        underscore |= strchr(toks[i] + 4, '_') != NULL;
    }
    /* 43 random characters each: the url-only characters must turn up somewhere in 1000. */
    assert_true(dash);
    assert_true(underscore);
    qsort(toks, N, sizeof(*toks), cmp_token);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(toks[i - 1], toks[i]);
    free(toks);
}

static void test_token_well_formed_accepts_valid_shape(void **state)
{
    (void)state;
    char tok[CRYPTO_TOKEN_LEN + 1];
    valid_token(tok);
    assert_true(crypto_token_well_formed(tok));
}

static void test_token_well_formed_rejects_wrong_prefix(void **state)
{
    (void)state;
    char tok[CRYPTO_TOKEN_LEN + 1];
    valid_token(tok);
    tok[0] = 'W';
    assert_false(crypto_token_well_formed(tok));
    valid_token(tok);
    tok[3] = '-';
    assert_false(crypto_token_well_formed(tok));
}

static void test_token_well_formed_rejects_one_short_and_one_long(void **state)
{
    (void)state;
    char tok[CRYPTO_TOKEN_LEN + 2];
    valid_token(tok);
    tok[CRYPTO_TOKEN_LEN - 1] = '\0';
    assert_false(crypto_token_well_formed(tok));
    valid_token(tok);
    tok[CRYPTO_TOKEN_LEN] = 'A';
    tok[CRYPTO_TOKEN_LEN + 1] = '\0';
    assert_false(crypto_token_well_formed(tok));
}

static void test_token_well_formed_rejects_std_base64_padding_and_space(void **state)
{
    (void)state;
    const char bad[] = {'+', '/', '=', ' '};
    for (size_t i = 0; i < sizeof(bad); i++) {
        char tok[CRYPTO_TOKEN_LEN + 1];
        valid_token(tok);
        tok[20] = bad[i];
        assert_false(crypto_token_well_formed(tok));
        valid_token(tok);
        tok[CRYPTO_TOKEN_LEN - 1] = bad[i];
        assert_false(crypto_token_well_formed(tok));
    }
}

static void test_token_well_formed_rejects_empty_and_prefix_only(void **state)
{
    (void)state;
    assert_false(crypto_token_well_formed(""));
    assert_false(crypto_token_well_formed("wxl_"));
}

/* ---- SHA-256 ---- */

static void check_sha256(const char *in, const char *want)
{
    uint8_t h[CRYPTO_HASH_LEN];
    char got[2 * CRYPTO_HASH_LEN + 1];
    crypto_sha256(in, strlen(in), h);
    hex(h, sizeof(h), got);
    assert_string_equal(got, want);
}

static void test_sha256_empty(void **state)
{
    (void)state;
    check_sha256("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_sha256_abc(void **state)
{
    (void)state;
    check_sha256("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_sha256_two_blocks(void **state)
{
    (void)state;
    check_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* ---- seal / open ---- */

static const uint8_t key1[CRYPTO_KEY_LEN] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                             12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                             23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const char pt1[] = "session-key-0123456789abcdef";
static const char aad1[] = "wx0123456789abcdef\nopenid-1";

#define PT1_LEN (sizeof(pt1) - 1)
#define AAD1_LEN (sizeof(aad1) - 1)
#define SEALED1_LEN (PT1_LEN + CRYPTO_SEAL_OVERHEAD)

/* Seals pt1 under key1 with aad1 into blob (SEALED1_LEN bytes). */
static void seal1(uint8_t blob[SEALED1_LEN])
{
    assert_int_equal(crypto_seal(key1, aad1, AAD1_LEN, pt1, PT1_LEN, blob), SEALED1_LEN);
}

/* Opens blob with key1/aad, expecting failure and a wiped output buffer. */
static void expect_open_fails_and_wipes(const uint8_t key[CRYPTO_KEY_LEN], const void *aad,
                                        size_t aadlen, const uint8_t *blob, size_t len)
{
    uint8_t out[256];
    assert_true(len >= CRYPTO_SEAL_OVERHEAD && len - CRYPTO_SEAL_OVERHEAD <= sizeof(out));
    memset(out, 0xaa, sizeof(out));
    assert_int_equal(crypto_open(key, aad, aadlen, blob, len, out), -1);
    assert_true(all_zero(out, len - CRYPTO_SEAL_OVERHEAD));
}

static void test_seal_open_round_trip_with_aad(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN], out[PT1_LEN];
    seal1(blob);
    assert_int_equal(blob[0], 1);
    assert_int_equal(crypto_open(key1, aad1, AAD1_LEN, blob, sizeof(blob), out), PT1_LEN);
    assert_memory_equal(out, pt1, PT1_LEN);
}

static void test_seal_open_round_trip_without_aad(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN], out[PT1_LEN];
    assert_int_equal(crypto_seal(key1, NULL, 0, pt1, PT1_LEN, blob), SEALED1_LEN);
    assert_int_equal(crypto_open(key1, NULL, 0, blob, sizeof(blob), out), PT1_LEN);
    assert_memory_equal(out, pt1, PT1_LEN);
}

static void test_seal_open_round_trip_empty_plaintext(void **state)
{
    (void)state;
    uint8_t blob[CRYPTO_SEAL_OVERHEAD], out[1] = {0x55};
    assert_int_equal(crypto_seal(key1, aad1, AAD1_LEN, "", 0, blob), CRYPTO_SEAL_OVERHEAD);
    assert_int_equal(crypto_open(key1, aad1, AAD1_LEN, blob, sizeof(blob), out), 0);
    /* The empty plaintext is still authenticated: other aad fails. */
    assert_int_equal(crypto_open(key1, "x", 1, blob, sizeof(blob), out), -1);
}

static void test_seal_length_is_plaintext_plus_overhead(void **state)
{
    (void)state;
    assert_int_equal(CRYPTO_SEAL_OVERHEAD, 29);
    uint8_t pt[100] = {0}, blob[100 + CRYPTO_SEAL_OVERHEAD];
    for (size_t n = 0; n <= sizeof(pt); n += 7)
        assert_int_equal(crypto_seal(key1, NULL, 0, pt, n, blob), n + CRYPTO_SEAL_OVERHEAD);
}

static void test_seal_twice_differs_random_nonce(void **state)
{
    (void)state;
    uint8_t a[SEALED1_LEN], b[SEALED1_LEN];
    seal1(a);
    seal1(b);
    /* Nonces differ, and so do ciphertexts (same key, different nonce). */
    assert_memory_not_equal(a + 1, b + 1, 12);
    assert_memory_not_equal(a + 13, b + 13, PT1_LEN);
}

static void test_seal_ciphertext_is_not_plaintext(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    seal1(blob);
    assert_null(memmem(blob, sizeof(blob), "session-key", 11));
}

static void test_open_fails_with_wrong_key(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN], key2[CRYPTO_KEY_LEN];
    seal1(blob);
    memcpy(key2, key1, sizeof(key2));
    key2[31] ^= 1;
    expect_open_fails_and_wipes(key2, aad1, AAD1_LEN, blob, sizeof(blob));
}

static void test_open_fails_with_flipped_ciphertext_bit(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    seal1(blob);
    blob[13 + 5] ^= 0x10;
    expect_open_fails_and_wipes(key1, aad1, AAD1_LEN, blob, sizeof(blob));
}

static void test_open_fails_with_flipped_tag_bit(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    seal1(blob);
    blob[SEALED1_LEN - 1] ^= 0x80;
    expect_open_fails_and_wipes(key1, aad1, AAD1_LEN, blob, sizeof(blob));
}

static void test_open_fails_with_flipped_nonce_bit(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    seal1(blob);
    blob[1] ^= 0x01;
    expect_open_fails_and_wipes(key1, aad1, AAD1_LEN, blob, sizeof(blob));
}

static void test_open_fails_with_different_aad(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    seal1(blob);
    char other[sizeof(aad1)];
    memcpy(other, aad1, sizeof(aad1));
    other[AAD1_LEN - 1] ^= 1;
    expect_open_fails_and_wipes(key1, other, AAD1_LEN, blob, sizeof(blob));
    expect_open_fails_and_wipes(key1, NULL, 0, blob, sizeof(blob));
}

static void test_open_fails_with_aad_when_sealed_without(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    assert_int_equal(crypto_seal(key1, NULL, 0, pt1, PT1_LEN, blob), SEALED1_LEN);
    expect_open_fails_and_wipes(key1, aad1, AAD1_LEN, blob, sizeof(blob));
}

static void test_open_fails_with_truncated_blob(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN];
    seal1(blob);
    expect_open_fails_and_wipes(key1, aad1, AAD1_LEN, blob, sizeof(blob) - 1);
    expect_open_fails_and_wipes(key1, aad1, AAD1_LEN, blob, CRYPTO_SEAL_OVERHEAD);
}

static void test_open_fails_with_wrong_version_byte(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN], out[PT1_LEN];
    seal1(blob);
    const uint8_t versions[] = {0, 2, 0xff};
    for (size_t i = 0; i < sizeof(versions); i++) {
        blob[0] = versions[i];
        memset(out, 0, sizeof(out));
        assert_int_equal(crypto_open(key1, aad1, AAD1_LEN, blob, sizeof(blob), out), -1);
        /* Nothing of the plaintext reaches out. */
        assert_true(all_zero(out, sizeof(out)));
    }
}

static void test_open_fails_when_shorter_than_overhead(void **state)
{
    (void)state;
    uint8_t blob[SEALED1_LEN], out[PT1_LEN];
    seal1(blob);
    for (size_t n = 0; n < CRYPTO_SEAL_OVERHEAD; n++)
        assert_int_equal(crypto_open(key1, aad1, AAD1_LEN, blob, n, out), -1);
}

/* ---- base64 ---- */

static void check_b64(const char *raw, const char *enc)
{
    char out[64];
    uint8_t dec[64];
    memset(out, 'x', sizeof(out));
    assert_int_equal(crypto_b64_encode(raw, strlen(raw), out), strlen(enc));
    assert_string_equal(out, enc);
    memset(dec, 0xee, sizeof(dec));
    assert_int_equal(crypto_b64_decode(enc, strlen(enc), dec), (int)strlen(raw));
    assert_memory_equal(dec, raw, strlen(raw));
}

static void test_b64_rfc4648_vectors(void **state)
{
    (void)state;
    check_b64("", "");
    check_b64("f", "Zg==");
    check_b64("fo", "Zm8=");
    check_b64("foo", "Zm9v");
    check_b64("foob", "Zm9vYg==");
    check_b64("fooba", "Zm9vYmE=");
    check_b64("foobar", "Zm9vYmFy");
}

static void test_b64_decode_wechat_session_key(void **state)
{
    (void)state;
    static const uint8_t want[16] = {0xb6, 0x28, 0xa1, 0xb4, 0xd7, 0x33, 0x7f, 0x9b,
                                     0xfa, 0x00, 0xa4, 0x72, 0x8f, 0x01, 0x14, 0x85};
    const char *s = "tiihtNczf5v6AKRyjwEUhQ==";
    uint8_t out[18];
    assert_int_equal(crypto_b64_decode(s, strlen(s), out), 16);
    assert_memory_equal(out, want, 16);
}

static void expect_b64_rejected(const char *s)
{
    uint8_t out[64];
    assert_int_equal(crypto_b64_decode(s, strlen(s), out), -1);
}

static void test_b64_decode_rejects_length_not_multiple_of_4(void **state)
{
    (void)state;
    expect_b64_rejected("Z");
    expect_b64_rejected("Zg");
    expect_b64_rejected("Zg=");
    expect_b64_rejected("Zm9vY");
    expect_b64_rejected("Zm9vYmFy=");
}

static void test_b64_decode_rejects_invalid_chars(void **state)
{
    (void)state;
    expect_b64_rejected("Zm9*");
    expect_b64_rejected("Zm9v\x80mFy");
    expect_b64_rejected("Zm.v");
}

/* Leftover bits under the padding must be zero: "Zh==" decodes like "Zg==" otherwise. */
static void test_b64_decode_rejects_non_canonical_padding_bits(void **state)
{
    (void)state;
    uint8_t out[32];
    assert_int_equal(crypto_b64_decode("Zg==", 4, out), 1);
    assert_int_equal(crypto_b64_decode("Zh==", 4, out), -1);
    assert_int_equal(crypto_b64_decode("Zm8=", 4, out), 2);
    assert_int_equal(crypto_b64_decode("Zm9=", 4, out), -1);
    assert_int_equal(crypto_b64_decode("AAECAwQFBgcICQoLDECAwQF=", 24, out), -1);
    assert_int_equal(crypto_b64_decode_lenient("Zm9=", 4, out), -1);
}

static void test_b64_decode_rejects_embedded_space(void **state)
{
    (void)state;
    expect_b64_rejected("Zm9v YmE");
    expect_b64_rejected(" Zm9");
    expect_b64_rejected("Zm9\n");
}

static void test_b64_decode_rejects_url_alphabet(void **state)
{
    (void)state;
    /* "+/+/" and "-_-_" are the same bytes in the two alphabets; only the first is standard. */
    uint8_t out[3];
    assert_int_equal(crypto_b64_decode("+/+/", 4, out), 3);
    expect_b64_rejected("-_-_");
    expect_b64_rejected("Zm-v");
    expect_b64_rejected("Zm_v");
}

static void test_b64_decode_rejects_padding_in_the_middle(void **state)
{
    (void)state;
    expect_b64_rejected("Zg==Zm8=");
    expect_b64_rejected("Zm=v");
    expect_b64_rejected("Z=g=");
    expect_b64_rejected("Zg=A");
    expect_b64_rejected("====");
    expect_b64_rejected("Z===");
}

static void test_b64_decode_rejects_embedded_nul(void **state)
{
    (void)state;
    uint8_t out[6];
    assert_int_equal(crypto_b64_decode("Zm9v\0mFy", 8, out), -1);
}

/* ---- crypto_equal ---- */

static void test_equal_same_bytes(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 0x5c, sizeof(a));
    memset(b, 0x5c, sizeof(b));
    assert_true(crypto_equal(a, b, sizeof(a)));
}

static void test_equal_differs_in_first_byte(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 0x5c, sizeof(a));
    memset(b, 0x5c, sizeof(b));
    b[0] ^= 1;
    assert_false(crypto_equal(a, b, sizeof(a)));
}

static void test_equal_differs_in_last_byte(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    memset(a, 0x5c, sizeof(a));
    memset(b, 0x5c, sizeof(b));
    b[31] ^= 0x80;
    assert_false(crypto_equal(a, b, sizeof(a)));
    /* ... and only the first n bytes count. */
    assert_true(crypto_equal(a, b, 31));
}

static void test_equal_zero_length_is_equal(void **state)
{
    (void)state;
    assert_true(crypto_equal("a", "b", 0));
}

/* ---- wipe ---- */

static void test_wipe_zeroes_exactly_n_bytes(void **state)
{
    (void)state;
    uint8_t buf[16];
    memset(buf, 0xff, sizeof(buf));
    crypto_wipe(buf, 8);
    assert_true(all_zero(buf, 8));
    assert_int_equal(buf[8], 0xff);
}

/* ---- WeChat's official vectors (../shared/wechat-api.md §2, §5, §6) ---- */

static const char official_ed[] =
    "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+"
    "oNPdbB+"
    "3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/"
    "fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/"
    "1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//"
    "FRAUid1OksQaQx4CMs8LOd"
    "dcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/"
    "8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpo"
    "G20f0"
    "a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

static const char official_pt[] =
    "{\"openId\":\"oGZUI0egBJY1zhBYw2KhdUfwVJJE\",\"nickName\":\"Band\",\"gender\":1,\"language\":"
    "\"zh_CN\",\"city\":\"Guangzhou\",\"province\":\"Guangdong\",\"country\":\"CN\",\"avatarUrl\":"
    "\"http://wx.qlogo.cn/mmopen/vi_32/"
    "aSKcBBPpibyKNicHNTMM0qJVh8Kjgiak2AHWr8MHM4WgMEm7GFhsf8OYrySdbv"
    "AMvTsw3mo8ibKicsnfN5pRjl1p8HQ/0\",\"unionId\":\"ocMvos6NjeKLIBqg5Mr9QjxrP1FA\",\"watermark\":{"
    "\"timestamp\":1477314187,\"appid\":\"wx4f4bc4dec97d474b\"}}";

static int official_decrypt(const char *ed, uint8_t **pt_out)
{
    uint8_t key[24], iv[24];
    assert_int_equal(crypto_b64_decode("tiihtNczf5v6AKRyjwEUhQ==", 24, key), 16);
    assert_int_equal(crypto_b64_decode("r7BXXKkLb8qrSNn05n0qiA==", 24, iv), 16);
    size_t edlen = strlen(ed);
    uint8_t *ct = malloc(edlen);
    assert_non_null(ct);
    int ctlen = crypto_b64_decode_lenient(ed, edlen, ct);
    assert_int_equal(ctlen, 400);
    uint8_t *pt = malloc((size_t)ctlen);
    assert_non_null(pt);
    int n = crypto_aes128cbc_decrypt(key, iv, ct, (size_t)ctlen, pt);
    free(ct);
    *pt_out = pt;
    return n;
}

static void test_official_decrypt_sample(void **state)
{
    (void)state;
    uint8_t *pt = NULL;
    int n = official_decrypt(official_ed, &pt);
    assert_int_equal(n, 393);
    assert_int_equal(strlen(official_pt), 393);
    assert_memory_equal(pt, official_pt, 393);
    free(pt);
}

static void test_official_decrypt_with_spaces_for_plus(void **state)
{
    (void)state;
    char mangled[sizeof(official_ed)];
    memcpy(mangled, official_ed, sizeof(official_ed));
    for (char *p = mangled; *p; p++)
        if (*p == '+')
            *p = ' ';
    uint8_t *pt = NULL;
    assert_int_equal(official_decrypt(mangled, &pt), 393);
    assert_memory_equal(pt, official_pt, 393);
    free(pt);
}

static void test_decrypt_wrong_key_fails_and_wipes(void **state)
{
    (void)state;
    uint8_t key[16] = {0}, iv[16] = {0}, ct[400], pt[400];
    size_t edlen = strlen(official_ed);
    uint8_t *buf = malloc(edlen);
    assert_non_null(buf);
    assert_int_equal(crypto_b64_decode(official_ed, edlen, buf), 400);
    memcpy(ct, buf, sizeof(ct));
    free(buf);
    memset(pt, 0xAA, sizeof(pt));
    /* An all-zero key almost surely yields bad padding; the contract is -1 and a wiped out. */
    int n = crypto_aes128cbc_decrypt(key, iv, ct, sizeof(ct), pt);
    if (n < 0) {
        for (size_t i = 0; i < sizeof(pt); i++)
            assert_int_equal(pt[i], 0);
    } else {
        assert_true(n <= 400);
        assert_memory_not_equal(pt, official_pt, 16);
    }
}

static void test_decrypt_rejects_bad_lengths(void **state)
{
    (void)state;
    uint8_t key[16] = {1}, iv[16] = {2}, in[32] = {0}, out[32];
    assert_int_equal(crypto_aes128cbc_decrypt(key, iv, in, 0, out), -1);
    assert_int_equal(crypto_aes128cbc_decrypt(key, iv, in, 15, out), -1);
    assert_int_equal(crypto_aes128cbc_decrypt(key, iv, in, 17, out), -1);
}

static void test_official_rawdata_signature(void **state)
{
    (void)state;
    static const char raw[] =
        "{\"nickName\":\"Band\",\"gender\":1,\"language\":\"zh_CN\",\"city\":\"Guangzhou\","
        "\"province\":\"Guangdong\",\"country\":\"CN\",\"avatarUrl\":\"http://wx.qlogo.cn/mmopen/"
        "vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5"
        "ibXQ/0\"}";
    static const char sk[] = "HyVFkGl5F5OQWJZZaNzBBg==";
    char out[41];
    assert_int_equal(crypto_sha1_hex2(raw, strlen(raw), sk, strlen(sk), out), 0);
    assert_string_equal(out, "75e81ceda165f4ffa64f4068af58c64b8f54b88c");
}

static void test_checksession_hmac_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *sk, *hex;
    } v[] = {
        {"tiihtNczf5v6AKRyjwEUhQ==",
         "7154f9f8b4b76b92f541cbf0e37d48840fa06e5e42da92a6f80168a1516a4735"},
        {"HyVFkGl5F5OQWJZZaNzBBg==",
         "252b75c92698025afe925b29cca5517fdf9ee67aae072cf3225ebf3a53783058"},
        {"o0q0otL8aEzpcZL/FT9WsQ==",
         "46e043c5525c2d817c44be603d30837a808a1d930d038f6fdc3e62a201fed128"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char out[65];
        /* Keyed with the session_key string as received, not its decoding. */
        crypto_hmac_sha256_hex(v[i].sk, strlen(v[i].sk), "", 0, out);
        assert_string_equal(out, v[i].hex);
    }
}

static void test_official_login_state_signature(void **state)
{
    (void)state;
    char out[65];
    crypto_hmac_sha256_hex("o0q0otL8aEzpcZL/FT9WsQ==", 24, "{\"foo\":\"bar\"}", 13, out);
    assert_string_equal(out, "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b");
}

/* RFC 4231, test cases 1 and 2: the raw HMAC that derives login codes' session tokens. */
static void test_hmac_sha256_rfc4231_vectors(void **state)
{
    (void)state;
    uint8_t k20[20], md[CRYPTO_HASH_LEN];
    char out[2 * CRYPTO_HASH_LEN + 1];
    memset(k20, 0x0b, sizeof(k20));
    assert_int_equal(crypto_hmac_sha256(k20, sizeof(k20), "Hi There", 8, md), 0);
    hex(md, sizeof(md), out);
    assert_string_equal(out, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    assert_int_equal(crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, md), 0);
    hex(md, sizeof(md), out);
    assert_string_equal(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* test case 6: a key longer than SHA-256's block is hashed first */
    uint8_t k131[131];
    memset(k131, 0xaa, sizeof(k131));
    static const char m6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    assert_int_equal(crypto_hmac_sha256(k131, sizeof(k131), m6, sizeof(m6) - 1, md), 0);
    hex(md, sizeof(md), out);
    assert_string_equal(out, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    /* a key of exactly one block, and an empty key */
    uint8_t k64[64];
    memset(k64, 0x61, sizeof(k64));
    uint8_t ref[CRYPTO_HASH_LEN];
    unsigned int n = sizeof(ref);
    HMAC(EVP_sha256(), k64, sizeof(k64), (const uint8_t *)"abc", 3, ref, &n);
    assert_int_equal(crypto_hmac_sha256(k64, sizeof(k64), "abc", 3, md), 0);
    assert_memory_equal(md, ref, sizeof(ref));
    HMAC(EVP_sha256(), "", 0, (const uint8_t *)"abc", 3, ref, &n);
    assert_int_equal(crypto_hmac_sha256("", 0, "abc", 3, md), 0);
    assert_memory_equal(md, ref, sizeof(ref));
}

/* A derived token has exactly the shape of a random one: prefix, base64url, no padding. */
static void test_token_encode_vectors(void **state)
{
    (void)state;
    uint8_t raw[CRYPTO_HASH_LEN];
    char tok[CRYPTO_TOKEN_LEN + 1], want[CRYPTO_TOKEN_LEN + 1];
    memset(raw, 0, sizeof(raw));
    crypto_token_encode(raw, tok);
    snprintf(want, sizeof(want), "wxl_%.43s", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_string_equal(tok, want);
    assert_true(crypto_token_well_formed(tok));
    memset(raw, 0xff, sizeof(raw));
    crypto_token_encode(raw, tok);
    assert_string_equal(tok, "wxl_"
                             "__________________________________________8");
    assert_true(crypto_token_well_formed(tok));
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(0xf8 + i);
    crypto_token_encode(raw, tok);
    assert_true(crypto_token_well_formed(tok));
    assert_non_null(strchr(tok + 4, '-')); /* '+' and '/' of standard base64 are never sent */
}

static void test_b64_lenient_edge_cases(void **state)
{
    (void)state;
    uint8_t out[16];
    /* a space is a '+' */
    assert_int_equal(crypto_b64_decode_lenient("a Y=", 4, out), 2);
    uint8_t strict[16];
    assert_int_equal(crypto_b64_decode("a+Y=", 4, strict), 2);
    assert_memory_equal(out, strict, 2);
    /* otherwise as strict as ever */
    assert_int_equal(crypto_b64_decode_lenient("a\tb=", 4, out), -1);
    assert_int_equal(crypto_b64_decode_lenient("abc", 3, out), -1);
    assert_int_equal(crypto_b64_decode_lenient("ab_-", 4, out), -1);
    assert_int_equal(crypto_b64_decode_lenient("", 0, out), 0);
    assert_int_equal(crypto_b64_decode_lenient("    ", 4, out), 3); /* "++++" */
}

/* Long texts (encryptedData of a few KiB) decode through blocks: the same bytes as the strict
 * decoder on the whole text, padding only at the very end, a bad character anywhere refused. */
static void test_b64_lenient_long_text_as_strict(void **state)
{
    (void)state;
    enum { RAW = 3000 };
    static uint8_t raw[RAW], a[RAW + 3], b[RAW + 3];
    static char text[4 * (RAW / 3 + 1) + 1], spaced[sizeof(text)];
    for (size_t i = 0; i < RAW; i++)
        raw[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 1; n <= RAW; n += n < 300 ? 1 : 97) {
        size_t len = crypto_b64_encode(raw, n, text);
        memcpy(spaced, text, len + 1);
        for (size_t i = 0; i < len; i++)
            if (spaced[i] == '+')
                spaced[i] = ' ';
        assert_int_equal(crypto_b64_decode(text, len, a), (int)n);
        assert_int_equal(crypto_b64_decode_lenient(spaced, len, b), (int)n);
        assert_memory_equal(a, raw, n);
        assert_memory_equal(b, raw, n);
    }
    size_t len = crypto_b64_encode(raw, 999, text); /* 1332 characters, no padding */
    /* padding inside, in the first block or at a block's end: refused, as by the strict decoder */
    const size_t ats[] = {2, 255, 256, 511, 1279, 1300, len - 3};
    for (size_t i = 0; i < sizeof(ats) / sizeof(ats[0]); i++) {
        size_t at = ats[i];
        char saved = text[at];
        text[at] = '=';
        assert_int_equal(crypto_b64_decode(text, len, a), -1);
        assert_int_equal(crypto_b64_decode_lenient(text, len, b), -1);
        text[at] = saved;
    }
    text[len - 1] = '\t';
    assert_int_equal(crypto_b64_decode_lenient(text, len, b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_has_prefix_length_and_url_alphabet),
        cmocka_unit_test(test_token_1000_are_distinct_and_well_formed),
        cmocka_unit_test(test_token_well_formed_accepts_valid_shape),
        cmocka_unit_test(test_token_well_formed_rejects_wrong_prefix),
        cmocka_unit_test(test_token_well_formed_rejects_one_short_and_one_long),
        cmocka_unit_test(test_token_well_formed_rejects_std_base64_padding_and_space),
        cmocka_unit_test(test_token_well_formed_rejects_empty_and_prefix_only),
        cmocka_unit_test(test_sha256_empty),
        cmocka_unit_test(test_sha256_abc),
        cmocka_unit_test(test_sha256_two_blocks),
        cmocka_unit_test(test_seal_open_round_trip_with_aad),
        cmocka_unit_test(test_seal_open_round_trip_without_aad),
        cmocka_unit_test(test_seal_open_round_trip_empty_plaintext),
        cmocka_unit_test(test_seal_length_is_plaintext_plus_overhead),
        cmocka_unit_test(test_seal_twice_differs_random_nonce),
        cmocka_unit_test(test_seal_ciphertext_is_not_plaintext),
        cmocka_unit_test(test_open_fails_with_wrong_key),
        cmocka_unit_test(test_open_fails_with_flipped_ciphertext_bit),
        cmocka_unit_test(test_open_fails_with_flipped_tag_bit),
        cmocka_unit_test(test_open_fails_with_flipped_nonce_bit),
        cmocka_unit_test(test_open_fails_with_different_aad),
        cmocka_unit_test(test_open_fails_with_aad_when_sealed_without),
        cmocka_unit_test(test_open_fails_with_truncated_blob),
        cmocka_unit_test(test_open_fails_with_wrong_version_byte),
        cmocka_unit_test(test_open_fails_when_shorter_than_overhead),
        cmocka_unit_test(test_b64_rfc4648_vectors),
        cmocka_unit_test(test_b64_decode_wechat_session_key),
        cmocka_unit_test(test_b64_decode_rejects_length_not_multiple_of_4),
        cmocka_unit_test(test_b64_decode_rejects_invalid_chars),
        cmocka_unit_test(test_b64_decode_rejects_embedded_space),
        cmocka_unit_test(test_b64_decode_rejects_non_canonical_padding_bits),
        cmocka_unit_test(test_b64_decode_rejects_url_alphabet),
        cmocka_unit_test(test_b64_decode_rejects_padding_in_the_middle),
        cmocka_unit_test(test_b64_decode_rejects_embedded_nul),
        cmocka_unit_test(test_equal_same_bytes),
        cmocka_unit_test(test_equal_differs_in_first_byte),
        cmocka_unit_test(test_equal_differs_in_last_byte),
        cmocka_unit_test(test_equal_zero_length_is_equal),
        cmocka_unit_test(test_wipe_zeroes_exactly_n_bytes),
        cmocka_unit_test(test_official_decrypt_sample),
        cmocka_unit_test(test_official_decrypt_with_spaces_for_plus),
        cmocka_unit_test(test_decrypt_wrong_key_fails_and_wipes),
        cmocka_unit_test(test_decrypt_rejects_bad_lengths),
        cmocka_unit_test(test_official_rawdata_signature),
        cmocka_unit_test(test_checksession_hmac_vectors),
        cmocka_unit_test(test_official_login_state_signature),
        cmocka_unit_test(test_hmac_sha256_rfc4231_vectors),
        cmocka_unit_test(test_token_encode_vectors),
        cmocka_unit_test(test_b64_lenient_edge_cases),
        cmocka_unit_test(test_b64_lenient_long_text_as_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
