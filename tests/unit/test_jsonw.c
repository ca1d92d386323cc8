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
    size_t w = jsonw_string(out, sizeof(out), in, n, NULL, NULL);
    assert_true(w >= 2);
    const char *back = parse_string(out, w);
    assert_memory_equal(back, in, n);
}

static void test_plain_ascii_is_quoted(void **state)
{
    (void)state;
    char out[64];
    size_t n = jsonw_string(out, sizeof(out), "o94S1la-_x", 10, NULL, NULL);
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
        size_t n = jsonw_string(out, sizeof(out), bad[i], strlen(bad[i]), NULL, NULL);
        const char *back = parse_string(out, n);
        assert_non_null(strstr(back, "\xef\xbf\xbd")); /* U+FFFD */
    }
}

static void test_nul_byte_escaped(void **state)
{
    (void)state;
    char out[32];
    size_t n = jsonw_string(out, sizeof(out), "a\0b", 3, NULL, NULL);
    assert_memory_equal(out, "\"a\\u0000b\"", n);
}

static void test_too_long_is_cut_with_mark_and_stays_json(void **state)
{
    (void)state;
    char in[300];
    memset(in, 'v', sizeof(in));
    for (size_t cap = 2; cap < 64; cap++) {
        char out[64];
        size_t n = jsonw_string(out, cap, in, sizeof(in), "...(cut)", NULL);
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
        size_t n = jsonw_string(out, cap, in, sizeof(in), "~", NULL);
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
        size_t n = jsonw_string(out, cap, in, sizeof(in), NULL, NULL);
        assert_true(n <= cap);
        parse_string(out, n);
    }
}

/* Escape-heavy and awkward inputs: each unit becomes 2 to 6 bytes, or is a multi-byte
 * character, or is not UTF-8 at all. */
static const char *const heavy_units[] = {
    "\x01", "\"", "\\", "\n", "\xe5\xbe\xae", "\xf0\x9f\x98\x80", "\xff", "\xe2\x80\xa8", "a\x1b",
};
#define NUNITS (sizeof(heavy_units) / sizeof(heavy_units[0]))

static size_t repeat_unit(char *out, size_t cap, const char *unit, size_t count)
{
    size_t ul = strlen(unit), n = 0;
    for (size_t i = 0; i < count && n + ul <= cap; i++, n += ul)
        memcpy(out + n, unit, ul);
    return n;
}

/* For every unit, many lengths and many buffer sizes: the output is a JSON string, never longer
 * than the buffer; cut exactly when it did not fit, and then a whole-character prefix of the
 * full text followed by the mark. */
static void test_cut_is_whole_and_marked_for_many_lengths(void **state)
{
    (void)state;
    static const char mark[] = "\xe2\x80\xa6";
    for (size_t u = 0; u < NUNITS; u++) {
        for (size_t count = 0; count < 60; count += 7) {
            char in[512], full[2048];
            size_t n = repeat_unit(in, sizeof(in), heavy_units[u], count);
            bool cut = true;
            size_t fn = jsonw_string(full, sizeof(full), in, n, mark, &cut);
            assert_false(cut);
            assert_int_equal(jsonw_string_len(in, n, SIZE_MAX), fn);
            char whole[2048];
            memcpy(whole, parse_string(full, fn), sizeof(whole));
            for (size_t cap = 2; cap <= fn + 2; cap++) {
                char out[2048];
                size_t w = jsonw_string(out, cap, in, n, mark, &cut);
                assert_true(w >= 2 && w <= cap);
                const char *back = parse_string(out, w);
                assert_int_equal(cut, cap < fn);
                if (!cut) {
                    assert_string_equal(back, whole);
                    continue;
                }
                size_t bl = strlen(back);
                if (cap >= 2 + sizeof(mark) - 1) {
                    assert_true(bl >= sizeof(mark) - 1);
                    assert_memory_equal(back + bl - (sizeof(mark) - 1), mark, sizeof(mark) - 1);
                    bl -= sizeof(mark) - 1;
                }
                assert_memory_equal(back, whole, bl); /* a prefix of the whole text */
            }
        }
    }
}

static void test_string_len_stops_at_limit(void **state)
{
    (void)state;
    char in[100];
    memset(in, '\x01', sizeof(in)); /* 600 bytes escaped, 602 with the quotes */
    assert_int_equal(jsonw_string_len(in, sizeof(in), SIZE_MAX), 602);
    assert_int_equal(jsonw_string_len(in, sizeof(in), 50), 50);
    assert_int_equal(jsonw_string_len("", 0, SIZE_MAX), 2);
    assert_int_equal(jsonw_string_len("\xff", 1, SIZE_MAX), 5); /* U+FFFD */
}

/* Line and paragraph separators end a line for JavaScript and for Python's str.splitlines, and
 * C1 controls (U+009B is a CSI) can drive a terminal: none is written raw. */
static void test_separators_and_c1_controls_escaped(void **state)
{
    (void)state;
    static const char in[] = "a\xe2\x80\xa8"
                             "b\xe2\x80\xa9"
                             "c\xc2\x85"
                             "d\xc2\x9b"
                             "e\x7f";
    char out[128];
    size_t n = jsonw_string(out, sizeof(out), in, sizeof(in) - 1, NULL, NULL);
    assert_memory_equal(out, "\"a\\u2028b\\u2029c\\u0085d\\u009be\\u007f\"", n);
    assert_string_equal(parse_string(out, n), in);
    /* U+00A0 and U+2027 are ordinary characters */
    n = jsonw_string(out, sizeof(out), "\xc2\xa0\xe2\x80\xa7", 5, NULL, NULL);
    assert_memory_equal(out, "\"\xc2\xa0\xe2\x80\xa7\"", n);
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
        cmocka_unit_test(test_cut_is_whole_and_marked_for_many_lengths),
        cmocka_unit_test(test_string_len_stops_at_limit),
        cmocka_unit_test(test_separators_and_c1_controls_escaped),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_object_writer),
        cmocka_unit_test(test_object_that_does_not_fit_is_refused_not_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
