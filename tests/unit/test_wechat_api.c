/*
 * Unit tests for wechat/api.h's typed results: every string WeChat returns is taken whole or
 * refused (a malformed answer), never cut, so never cut inside a character; text only (valid
 * UTF-8, no control characters); countryCode as a string or a number. Bodies are built with
 * jansson from JSON text, as the client parses them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wechat/api.h"

#define SK "tiihtNczf5v6AKRyjwEUhQ=="
#define OPENID "oGZUI0egBJY1zhBYw2KhdUfwVJJE"
#define WEI "\xe5\xbe\xae" /* 微: 3 bytes of UTF-8 */

static json_t *g_body;

static int release(void **state)
{
    (void)state;
    json_decref(g_body);
    g_body = NULL;
    return 0;
}

/* Parses text (built with printf-style arguments) the way the client does. */
static const json_t *body(const char *fmt, ...)
{
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    json_decref(g_body);
    json_error_t err;
    g_body = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    if (g_body == NULL)
        fail_msg("test body is not JSON (%s): %s", err.text, text);
    return g_body;
}

/* unit repeated count times, as a C string (static). */
static const char *rep(const char *unit, size_t count)
{
    static char out[2][4096];
    static int which;
    char *o = out[which ^= 1];
    size_t ul = strlen(unit), n = 0;
    for (size_t i = 0; i < count; i++, n += ul) {
        assert_true(n + ul < sizeof(out[0]));
        memcpy(o + n, unit, ul);
    }
    o[n] = '\0';
    return o;
}

/* Every byte of out is as it was wiped (zero) when a parse fails. */
static void assert_wiped(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            fail_msg("byte %zu not wiped", i);
}

/* ---- code2Session ---- */

static bool session_of(const json_t *b, struct wechat_session *s)
{
    const char *why = NULL;
    memset(s, 0x5a, sizeof(*s));
    bool ok = wechat_session_parse(b, s, &why);
    if (!ok) {
        assert_non_null(why);
        assert_wiped(s, sizeof(*s));
    }
    return ok;
}

static void test_session_ok_with_and_without_unionid(void **state)
{
    (void)state;
    struct wechat_session s;
    assert_true(session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s\"}", OPENID, SK), &s));
    assert_string_equal(s.openid, OPENID);
    assert_string_equal(s.session_key, SK);
    assert_string_equal(s.unionid, "");
    assert_true(session_of(
        body("{\"openid\":\"%s\",\"session_key\":\"%s\",\"unionid\":\"u-1_x\"}", OPENID, SK), &s));
    assert_string_equal(s.unionid, "u-1_x");
    assert_true(session_of(
        body("{\"openid\":\"%s\",\"session_key\":\"%s\",\"unionid\":null}", OPENID, SK), &s));
    assert_string_equal(s.unionid, "");
}

static void test_session_ids_of_every_length_whole_or_refused(void **state)
{
    (void)state;
    struct wechat_session s;
    for (size_t n = 1; n <= 200; n++) {
        bool fits = n <= WECHAT_ID_MAX;
        assert_int_equal(
            session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s\"}", rep("o", n), SK), &s),
            fits);
        if (fits)
            assert_int_equal(strlen(s.openid), n);
        assert_int_equal(session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s\",\"unionid\":"
                                         "\"%s\"}",
                                         OPENID, SK, rep("u", n)),
                                    &s),
                         fits);
    }
}

/* Today's bug class: a unionid WeChat sent but we cannot keep whole was dropped silently. */
static void test_session_malformed_unionid_is_a_bad_answer(void **state)
{
    (void)state;
    struct wechat_session s;
    static const char *const bad[] = {
        "\"" WEI WEI "\"", "\"u\\u0001\"", "\"u x\"", "\"u\\u2028\"", "17", "{}", "true",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(session_of(
            body("{\"openid\":\"%s\",\"session_key\":\"%s\",\"unionid\":%s}", OPENID, SK, bad[i]),
            &s));
    for (size_t n = 1; n < 100; n += 7) /* multi-byte ids of many lengths */
        assert_false(
            session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s\",\"unionid\":\"%s\"}", OPENID,
                            SK, rep(WEI, n)),
                       &s));
}

static void test_session_bad_openid_or_key_refused(void **state)
{
    (void)state;
    struct wechat_session s;
    assert_false(session_of(body("{\"session_key\":\"%s\"}", SK), &s));
    assert_false(session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s\"}", WEI, SK), &s));
    assert_false(session_of(body("{\"openid\":\"\",\"session_key\":\"%s\"}", SK), &s));
    assert_false(session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s=\"}", OPENID, SK), &s));
    assert_false(session_of(body("{\"openid\":\"%s\",\"session_key\":7}", OPENID), &s));
    assert_false(session_of(body("{\"openid\":\"%s\",\"session_key\":\"%s\"}", OPENID,
                                 rep(WEI, 8)), /* 24 bytes, not base64 */
                            &s));
}

/* ---- getuserphonenumber ---- */

static bool phone_of(const json_t *b, struct wechat_phone *p)
{
    const char *why = NULL;
    memset(p, 0x5a, sizeof(*p));
    bool ok = wechat_phone_parse(b, p, &why);
    if (!ok) {
        assert_non_null(why);
        assert_wiped(p, sizeof(*p));
    }
    return ok;
}

/* A phone_info with countryCode given as JSON text cc (e.g. "\"86\"" or "86"). */
static const json_t *phone_body(const char *number, const char *cc)
{
    return body("{\"errcode\":0,\"errmsg\":\"ok\",\"phone_info\":{\"phoneNumber\":\"%s\","
                "\"purePhoneNumber\":\"%s\"%s%s,\"watermark\":{\"timestamp\":1637744274,"
                "\"appid\":\"wx1234567890abcdef\"}}}",
                number, number, cc != NULL ? ",\"countryCode\":" : "", cc != NULL ? cc : "");
}

static void test_phone_country_code_string_or_number(void **state)
{
    (void)state;
    struct wechat_phone p;
    assert_true(phone_of(phone_body("13800138000", "\"86\""), &p)); /* WeChat's documented type */
    assert_string_equal(p.country_code, "86");
    assert_string_equal(p.phone_number, "13800138000");
    assert_string_equal(p.pure_phone_number, "13800138000");
    assert_string_equal(p.watermark_appid, "wx1234567890abcdef");
    assert_true(phone_of(phone_body("13800138000", "86"), &p)); /* WeChat's own example */
    assert_string_equal(p.country_code, "86");
    assert_true(phone_of(phone_body("13800138000", NULL), &p));
    assert_string_equal(p.country_code, "");
    assert_true(phone_of(phone_body("13800138000", "null"), &p));
    assert_string_equal(p.country_code, "");
    assert_true(phone_of(phone_body("13800138000", "999999999999999"), &p)); /* 15 digits */
    assert_string_equal(p.country_code, "999999999999999");
}

/* The reported bug: a countryCode longer than its 15 bytes, of multi-byte characters. It is
 * taken whole when it fits and refused when it does not; never cut, never dropped to "". */
static void test_phone_multibyte_country_code_of_every_length(void **state)
{
    (void)state;
    struct wechat_phone p;
    for (size_t n = 1; n <= 40; n++) {
        char cc[200];
        snprintf(cc, sizeof(cc), "\"%s\"", rep(WEI, n));
        bool fits = 3 * n < sizeof(p.country_code);
        assert_int_equal(phone_of(phone_body("13800138000", cc), &p), fits);
        if (fits)
            assert_string_equal(p.country_code, rep(WEI, n));
        /* a 2-byte character after ASCII: the cut would fall inside it at 15 bytes */
        snprintf(cc, sizeof(cc), "\"%s\xc3\xa9\"", rep("8", n));
        fits = n + 2 < sizeof(p.country_code);
        assert_int_equal(phone_of(phone_body("13800138000", cc), &p), fits);
    }
}

static void test_phone_bad_country_code_refused(void **state)
{
    (void)state;
    struct wechat_phone p;
    static const char *const bad[] = {
        "-86",
        "86.0",
        "true",
        "[86]",
        "{}",
        "\"8\\u00016\"",
        "\"\\u001b[31m\"",
        "\"86\\u2028\"",
        "9223372036854775807",
        "1000000000000000", /* 16 digits */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (phone_of(phone_body("13800138000", bad[i]), &p))
            fail_msg("countryCode %s accepted as '%s'", bad[i], p.country_code);
}

static void test_phone_numbers_of_every_length_whole_or_refused(void **state)
{
    (void)state;
    struct wechat_phone p;
    for (size_t n = 1; n <= 30; n++) {
        bool fits = 3 * n < sizeof(p.phone_number);
        assert_int_equal(phone_of(phone_body(rep(WEI, n), "\"86\""), &p), fits);
        if (fits)
            assert_string_equal(p.phone_number, rep(WEI, n));
    }
    for (size_t n = 60; n <= 70; n++)
        assert_int_equal(phone_of(phone_body(rep("1", n), "86"), &p), n < sizeof(p.phone_number));
    /* control characters: a phone number is text (and then fits the reply whatever it holds) */
    assert_false(phone_of(phone_body("1380013\\u00018000", "86"), &p));
    assert_false(phone_of(phone_body(rep("\\u0001", 63), "86"), &p));
    assert_true(phone_of(phone_body("+1 (202) 555-0100", "\"1\""), &p));
    assert_string_equal(p.phone_number, "+1 (202) 555-0100");
}

static void test_phone_watermark(void **state)
{
    (void)state;
    struct wechat_phone p;
    assert_true(phone_of(body("{\"phone_info\":{\"phoneNumber\":\"1\",\"purePhoneNumber\":\"1\","
                              "\"countryCode\":\"86\"}}"),
                         &p));
    assert_string_equal(p.watermark_appid, ""); /* the caller's comparison fails */
    assert_false(phone_of(body("{\"phone_info\":{\"phoneNumber\":\"1\",\"purePhoneNumber\":\"1\","
                               "\"watermark\":{\"appid\":\"%s\"}}}",
                               rep(WEI, 50)),
                          &p));
    assert_false(phone_of(body("{\"phone_info\":{\"purePhoneNumber\":\"1\"}}"), &p));
    assert_false(
        phone_of(body("{\"phone_info\":{\"phoneNumber\":1,\"purePhoneNumber\":\"1\"}}"), &p));
    assert_false(phone_of(body("{}"), &p));
}

/* ---- the access token ---- */

static bool token_of(const json_t *b, struct wechat_token_grant *g)
{
    const char *why = NULL;
    memset(g, 0x5a, sizeof(*g));
    bool ok = wechat_token_parse(b, g, &why);
    if (!ok) {
        assert_non_null(why);
        assert_wiped(g, sizeof(*g));
    }
    return ok;
}

static void test_token_whole_or_refused(void **state)
{
    (void)state;
    struct wechat_token_grant g;
    assert_true(token_of(body("{\"access_token\":\"80_Ab-c\",\"expires_in\":7200}"), &g));
    assert_string_equal(g.token, "80_Ab-c");
    assert_int_equal(g.expires_in, 7200);
    for (size_t n = WECHAT_TOKEN_MAX - 2; n <= WECHAT_TOKEN_MAX + 2; n++) {
        assert_int_equal(
            token_of(body("{\"access_token\":\"%s\",\"expires_in\":7200}", rep("t", n)), &g),
            n <= WECHAT_TOKEN_MAX);
    }
    static const char *const bad[] = {"\"\"",        "\"a b\"", "\"t\\u0001\"", "\"t" WEI "\"",
                                      "\"\\u00e9\"", "42",      "null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(token_of(body("{\"access_token\":%s,\"expires_in\":7200}", bad[i]), &g));
    assert_false(token_of(body("{\"access_token\":\"t\",\"expires_in\":0}"), &g));
    assert_false(token_of(body("{\"access_token\":\"t\",\"expires_in\":86401}"), &g));
    assert_false(token_of(body("{\"access_token\":\"t\"}"), &g));
}

int main(void)
{
#define T(fn) cmocka_unit_test_teardown(fn, release)
    const struct CMUnitTest tests[] = {
        T(test_session_ok_with_and_without_unionid),
        T(test_session_ids_of_every_length_whole_or_refused),
        T(test_session_malformed_unionid_is_a_bad_answer),
        T(test_session_bad_openid_or_key_refused),
        T(test_phone_country_code_string_or_number),
        T(test_phone_multibyte_country_code_of_every_length),
        T(test_phone_bad_country_code_refused),
        T(test_phone_numbers_of_every_length_whole_or_refused),
        T(test_phone_watermark),
        T(test_token_whole_or_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
