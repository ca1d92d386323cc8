/*
 * Unit tests for handlers/login_request.h: the {"code": "..."} body of the login endpoints.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/login_request.h"
#include "wechat/api.h"

/* Parses a NUL-terminated body. */
static int parse(const char *body, char code[LOGIN_CODE_MAX + 1], const char **why)
{
    *why = NULL;
    return login_request_parse(body, strlen(body), code, why);
}

static void expect_ok(const char *body, const char *want)
{
    char code[LOGIN_CODE_MAX + 1];
    const char *why = NULL;
    int rc = parse(body, code, &why);
    if (rc != 0)
        fail_msg("rejected %s: %s", body, why ? why : "(no why)");
    assert_string_equal(code, want);
}

static const char *expect_rejected(const char *body, size_t len)
{
    char code[LOGIN_CODE_MAX + 1] = "untouched";
    const char *why = NULL;
    int rc = login_request_parse(body, len, code, &why);
    if (rc != -1)
        fail_msg("accepted %.*s", (int)(len > 200 ? 200 : len), body);
    assert_non_null(why);
    assert_true(why[0] != '\0');
    return why;
}

static const char *expect_rejected_str(const char *body)
{
    return expect_rejected(body, strlen(body));
}

/* Builds {"code":"<c repeated n times>"}; caller frees. */
static char *body_with_code_of(size_t n, char c)
{
    size_t len = n + 12;
    char *b = malloc(len + 1);
    assert_non_null(b);
    memcpy(b, "{\"code\":\"", 9);
    memset(b + 9, c, n);
    memcpy(b + 9 + n, "\"}", 3);
    return b;
}

static void test_valid_code(void **state)
{
    (void)state;
    expect_ok("{\"code\":\"0a3Xk9-_zZ\"}", "0a3Xk9-_zZ");
}

static void test_valid_code_with_whitespace_and_other_keys(void **state)
{
    (void)state;
    expect_ok(" {\n \"extra\": [1, 2],\n \"code\" : \"abc\" }\n", "abc");
}

static void test_len_is_respected_without_nul(void **state)
{
    (void)state;
    static const char body[] = "{\"code\":\"abc\"}GARBAGE";
    char code[LOGIN_CODE_MAX + 1];
    const char *why = NULL;
    assert_int_equal(login_request_parse(body, 14, code, &why), 0);
    assert_string_equal(code, "abc");
}

static void test_not_json(void **state)
{
    (void)state;
    expect_rejected_str("code=abc");
}

static void test_json_array(void **state)
{
    (void)state;
    expect_rejected_str("[\"abc\"]");
}

static void test_json_string(void **state)
{
    (void)state;
    expect_rejected_str("\"abc\"");
}

static void test_json_number(void **state)
{
    (void)state;
    expect_rejected_str("42");
}

static void test_object_without_code(void **state)
{
    (void)state;
    expect_rejected_str("{\"js_code\":\"abc\"}");
}

static void test_empty_object(void **state)
{
    (void)state;
    expect_rejected_str("{}");
}

static void test_code_number(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":12345}");
}

static void test_code_null(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":null}");
}

static void test_code_object(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":{\"v\":\"abc\"}}");
}

static void test_code_empty(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"\"}");
}

static void test_code_of_512_bytes_accepted(void **state)
{
    (void)state;
    char *body = body_with_code_of(LOGIN_CODE_MAX, 'a');
    char code[LOGIN_CODE_MAX + 1];
    const char *why = NULL;
    int rc = parse(body, code, &why);
    free(body);
    if (rc != 0)
        fail_msg("rejected a 512-byte code: %s", why);
    assert_int_equal(strlen(code), LOGIN_CODE_MAX);
    assert_int_equal(code[0], 'a');
    assert_int_equal(code[LOGIN_CODE_MAX - 1], 'a');
}

static void test_code_of_513_bytes_rejected(void **state)
{
    (void)state;
    char *body = body_with_code_of(LOGIN_CODE_MAX + 1, 'a');
    const char *why = expect_rejected_str(body);
    free(body);
    assert_null(strstr(why, "aaaa"));
}

static void test_code_with_space_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc def\"}");
}

static void test_code_with_dot_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc.def\"}");
}

static void test_code_with_slash_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc/def\"}");
}

static void test_code_with_escaped_slash_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\\/def\"}");
}

static void test_code_with_plus_and_percent_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"a+b\"}");
    expect_rejected_str("{\"code\":\"a%20b\"}");
}

static void test_code_with_unicode_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\xc3\xa9\"}");    /* raw UTF-8 e-acute */
    expect_rejected_str("{\"code\":\"abc\\u00e9\"}");     /* escaped */
    expect_rejected_str("{\"code\":\"\\uff41\\uff42\"}"); /* fullwidth a, b */
}

static void test_code_with_escaped_nul_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\\u0000def\"}");
}

static void test_raw_nul_in_body_rejected(void **state)
{
    (void)state;
    static const char body[] = "{\"code\":\"abc\0def\"}";
    expect_rejected(body, sizeof(body) - 1);
}

static void test_code_with_newline_escape_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\\n\"}");
}

static void test_duplicate_keys_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\",\"code\":\"def\"}");
}

static void test_trailing_garbage_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\"}x");
    expect_rejected_str("{\"code\":\"abc\"}{}");
}

static void test_empty_body_rejected(void **state)
{
    (void)state;
    expect_rejected("", 0);
}

static void test_truncated_body_rejected(void **state)
{
    (void)state;
    expect_rejected_str("{\"code\":\"abc\"");
}

static void test_why_never_echoes_the_code(void **state)
{
    (void)state;
    static const char *const bodies[] = {
        "{\"code\":\"SECRETCODE.x\"}",
        "{\"code\":\"SECRETCODE x\"}",
        "{\"code\":\"SECRETCODE\\u0000\"}",
        "{\"code\":\"SECRETCODE\",\"code\":\"SECRETCODE\"}",
        "{\"code\":\"SECRETCODE\"}junk",
        "{\"cod\":\"SECRETCODE\"}",
        "[\"SECRETCODE\"]",
        "SECRETCODE",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        const char *why = expect_rejected_str(bodies[i]);
        if (strstr(why, "SECRETCODE") != NULL)
            fail_msg("why for %s echoes the code: %s", bodies[i], why);
    }
    char *body = body_with_code_of(600, 'Q');
    const char *why = expect_rejected_str(body);
    free(body);
    assert_null(strstr(why, "QQQQ"));
}

/* ---- what wxlogin accepts from WeChat (review finding: a long session_key overflowed the
 * decrypt key buffer; an openid with CR/LF broke the identity headers) ---- */

static void test_session_key_shape(void **state)
{
    (void)state;
    assert_true(wechat_session_key_valid("tiihtNczf5v6AKRyjwEUhQ==", 24));
    assert_false(wechat_session_key_valid("tiihtNczf5v6AKRyjwEUhQ=", 23));
    assert_false(wechat_session_key_valid("tiihtNczf5v6AKRyjwEUhQ==AAAA", 28));
    assert_false(wechat_session_key_valid("tiihtNczf5v6AKRyjwEUh!==", 24));
    /* 24 characters but 18 bytes: not a 16-byte key */
    assert_false(wechat_session_key_valid("AAAAAAAAAAAAAAAAAAAAAAAA", 24));
    char long_key[65];
    memset(long_key, 'A', 64);
    long_key[64] = '\0';
    assert_false(wechat_session_key_valid(long_key, 64));
    assert_false(wechat_session_key_valid("", 0));
}

static void test_id_shape(void **state)
{
    (void)state;
    assert_true(wechat_id_valid("oGZUI0egBJY1zhBYw2KhdUfwVJJE", 28));
    assert_true(wechat_id_valid("o-_9", 4));
    assert_false(wechat_id_valid("", 0));
    assert_false(wechat_id_valid("oAAA\r\nX-Injected: 1", 20));
    assert_false(wechat_id_valid("o AAA", 5));
    char long_id[130];
    memset(long_id, 'a', 129);
    long_id[129] = '\0';
    assert_false(wechat_id_valid(long_id, 129));
    assert_true(wechat_id_valid(long_id, 128));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_key_shape),
        cmocka_unit_test(test_id_shape),
        cmocka_unit_test(test_valid_code),
        cmocka_unit_test(test_valid_code_with_whitespace_and_other_keys),
        cmocka_unit_test(test_len_is_respected_without_nul),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_json_array),
        cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_json_number),
        cmocka_unit_test(test_object_without_code),
        cmocka_unit_test(test_empty_object),
        cmocka_unit_test(test_code_number),
        cmocka_unit_test(test_code_null),
        cmocka_unit_test(test_code_object),
        cmocka_unit_test(test_code_empty),
        cmocka_unit_test(test_code_of_512_bytes_accepted),
        cmocka_unit_test(test_code_of_513_bytes_rejected),
        cmocka_unit_test(test_code_with_space_rejected),
        cmocka_unit_test(test_code_with_dot_rejected),
        cmocka_unit_test(test_code_with_slash_rejected),
        cmocka_unit_test(test_code_with_escaped_slash_rejected),
        cmocka_unit_test(test_code_with_plus_and_percent_rejected),
        cmocka_unit_test(test_code_with_unicode_rejected),
        cmocka_unit_test(test_code_with_escaped_nul_rejected),
        cmocka_unit_test(test_raw_nul_in_body_rejected),
        cmocka_unit_test(test_code_with_newline_escape_rejected),
        cmocka_unit_test(test_duplicate_keys_rejected),
        cmocka_unit_test(test_trailing_garbage_rejected),
        cmocka_unit_test(test_empty_body_rejected),
        cmocka_unit_test(test_truncated_body_rejected),
        cmocka_unit_test(test_why_never_echoes_the_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
