/*
 * Unit tests for util/jsonw.h: JSON strings escaped into a fixed buffer (valid JSON whatever the
 * input, cut with a mark when too long) and the small object writer of the hot replies. Every
 * output is checked by parsing it back with jansson.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "util/jsonw.h"

/* Parses a JSON string value written by jsonw_string; returns its UTF-8 text (static). */
static const char *parse_string(const char *out, size_t n)
{
    static char text[8192];
    json_error_t err;
    json_t *j = json_loadb(out, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (j == NULL)
        fail_msg("not JSON (%s): %.*s", err.text, (int)n, out);
    assert_true(json_is_string(j));
    size_t len = json_string_length(j);
    assert_true(len < sizeof(text));
    memcpy(text, json_string_value(j), len + 1);
    json_decref(j);
    return text;
}

static void check_round_trip(const char *in, size_t n)
{
    char out[1024];
    size_t w = jsonw_string(out, sizeof(out), in, n, NULL);
    assert_true(w >= 2);
    const char *back = parse_string(out, w);
    assert_memory_equal(back, in, n);
}

static void test_plain_ascii_is_quoted(void **state)
{
    (void)state;
    char out[64];
    size_t n = jsonw_string(out, sizeof(out), "o94S1la-_x", 10, NULL);
    assert_int_equal(n, 12);
    assert_memory_equal(out, "\"o94S1la-_x\"", 12);
}

static void test_escapes_round_trip(void **state)
{
    (void)state;
    static const char in[] = "quote\" backslash\\ nl\n cr\r tab\t bs\b ff\f ctl\x01\x1f del\x7f";
    check_round_trip(in, sizeof(in) - 1);
}

static void test_utf8_kept(void **state)
{
    (void)state;
    static const char in[] = "\xe5\xbe\xae\xe4\xbf\xa1 caf\xc3\xa9 \xf0\x9f\x98\x80";
    check_round_trip(in, sizeof(in) - 1);
}

static void test_invalid_utf8_becomes_replacement_character(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xff",             /* never valid */
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xe5\xbe",         /* cut sequence */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[64];
        size_t n = jsonw_string(out, sizeof(out), bad[i], strlen(bad[i]), NULL);
        const char *back = parse_string(out, n);
        assert_non_null(strstr(back, "\xef\xbf\xbd")); /* U+FFFD */
    }
}

static void test_nul_byte_escaped(void **state)
{
    (void)state;
    char out[32];
    size_t n = jsonw_string(out, sizeof(out), "a\0b", 3, NULL);
    assert_memory_equal(out, "\"a\\u0000b\"", n);
}

static void test_too_long_is_cut_with_mark_and_stays_json(void **state)
{
    (void)state;
    char in[300];
    memset(in, 'v', sizeof(in));
    for (size_t cap = 2; cap < 64; cap++) {
        char out[64];
        size_t n = jsonw_string(out, cap, in, sizeof(in), "...(cut)");
        assert_true(n <= cap);
        assert_true(n >= 2);
        const char *back = parse_string(out, n);
        if (cap >= 2 + 8)
            assert_non_null(strstr(back, "...(cut)"));
    }
}

static void test_cut_never_splits_a_character(void **state)
{
    (void)state;
    char in[90];
    for (size_t i = 0; i < 30; i++)
        memcpy(in + 3 * i, "\xe5\xbe\xae", 3); /* 微 x 30 */
    for (size_t cap = 2; cap < 40; cap++) {
        char out[64];
        size_t n = jsonw_string(out, cap, in, sizeof(in), "~");
        assert_true(n <= cap);
        parse_string(out, n); /* valid JSON, so valid UTF-8: no split sequence */
    }
}

static void test_escape_is_never_split(void **state)
{
    (void)state;
    char in[40];
    memset(in, '\n', sizeof(in)); /* each becomes \n, two bytes */
    for (size_t cap = 2; cap < 30; cap++) {
        char out[64];
        size_t n = jsonw_string(out, cap, in, sizeof(in), NULL);
        assert_true(n <= cap);
        parse_string(out, n);
    }
}

static void test_int(void **state)
{
    (void)state;
    char out[24];
    assert_int_equal(jsonw_int(out, 0), 1);
    assert_memory_equal(out, "0", 1);
    assert_int_equal(jsonw_int(out, -42), 3);
    assert_memory_equal(out, "-42", 3);
    size_t n = jsonw_int(out, INT64_MIN);
    assert_memory_equal(out, "-9223372036854775808", n);
    n = jsonw_int(out, INT64_MAX);
    assert_memory_equal(out, "9223372036854775807", n);
}

static void test_object_writer(void **state)
{
    (void)state;
    char buf[256];
    struct jsonw w;
    jsonw_begin(&w, buf, sizeof(buf));
    jsonw_str(&w, "openid", "o1\"x");
    jsonw_num(&w, "expires_in", 604800);
    jsonw_bool(&w, "valid", true);
    size_t n = jsonw_end(&w);
    assert_true(n > 0);
    json_error_t err;
    json_t *j = json_loadb(buf, n, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "openid")), "o1\"x");
    assert_int_equal(json_integer_value(json_object_get(j, "expires_in")), 604800);
    assert_true(json_is_true(json_object_get(j, "valid")));
    json_decref(j);
}

static void test_object_that_does_not_fit_is_refused_not_cut(void **state)
{
    (void)state;
    char big[200];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (size_t cap = 1; cap < 230; cap++) {
        char buf[256];
        struct jsonw w;
        jsonw_begin(&w, buf, cap);
        jsonw_str(&w, "a", big);
        size_t n = jsonw_end(&w);
        if (cap >= 207)
            assert_int_equal(n, 207); /* {"a":"<199 x>"} */
        else
            assert_int_equal(n, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_ascii_is_quoted),
        cmocka_unit_test(test_escapes_round_trip),
        cmocka_unit_test(test_utf8_kept),
        cmocka_unit_test(test_invalid_utf8_becomes_replacement_character),
        cmocka_unit_test(test_nul_byte_escaped),
        cmocka_unit_test(test_too_long_is_cut_with_mark_and_stays_json),
        cmocka_unit_test(test_cut_never_splits_a_character),
        cmocka_unit_test(test_escape_is_never_split),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_object_writer),
        cmocka_unit_test(test_object_that_does_not_fit_is_refused_not_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
