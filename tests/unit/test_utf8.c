/*
 * Unit tests for util/utf8.h: the decoder shared by the JSON writer, the log and the checks of
 * WeChat's strings (valid sequences, what is refused, what counts as a control character).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "util/utf8.h"

static size_t len_of(const char *s)
{
    return utf8_char_len((const unsigned char *)s, strlen(s));
}

static void test_char_len_of_valid_sequences(void **state)
{
    (void)state;
    assert_int_equal(len_of("a"), 1);
    assert_int_equal(len_of("\xc3\xa9"), 2);         /* é */
    assert_int_equal(len_of("\xe5\xbe\xae"), 3);     /* 微 */
    assert_int_equal(len_of("\xf0\x9f\x98\x80"), 4); /* 😀 */
    assert_int_equal(len_of("\xf4\x8f\xbf\xbf"), 4); /* U+10FFFF */
}

static void test_char_len_refuses_broken_sequences(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\x80",             /* a continuation byte alone */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* a surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80", /* never a lead byte */
        "\xe5\xbe",         /* cut */
        "\xe5"
        "a"
        "\xae", /* interrupted */
        "\xff",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(len_of(bad[i]), 0);
}

static void test_decode(void **state)
{
    (void)state;
    assert_int_equal(utf8_decode((const unsigned char *)"A", 1), 0x41);
    assert_int_equal(utf8_decode((const unsigned char *)"\xc3\xa9", 2), 0xe9);
    assert_int_equal(utf8_decode((const unsigned char *)"\xe5\xbe\xae", 3), 0x5fae);
    assert_int_equal(utf8_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4), 0x1f600);
}

static void test_controls(void **state)
{
    (void)state;
    static const uint32_t controls[] = {0x00, 0x08, 0x1b, 0x1f,   0x7f,
                                        0x85, 0x9b, 0x9f, 0x2028, 0x2029};
    static const uint32_t text[] = {0x20, 0x41, 0x7e, 0xa0, 0xe9, 0x2027, 0x202a, 0x5fae};
    for (size_t i = 0; i < sizeof(controls) / sizeof(controls[0]); i++)
        assert_true(utf8_is_control(controls[i]));
    for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
        assert_false(utf8_is_control(text[i]));
}

static void test_text_ok(void **state)
{
    (void)state;
    assert_true(utf8_text_ok("", 0));
    assert_true(utf8_text_ok("86", 2));
    assert_true(utf8_text_ok("+1 (202) 555-0100", 17));
    assert_true(utf8_text_ok("\xe5\xbe\xae\xe4\xbf\xa1", 6));
    assert_false(utf8_text_ok("8\x01", 2));
    assert_false(utf8_text_ok("a\0b", 3));
    assert_false(utf8_text_ok("\x1b[31m", 5));
    assert_false(utf8_text_ok("\xc2\x9b", 2));
    assert_false(utf8_text_ok("a\xe2\x80\xa8", 4));
    assert_false(utf8_text_ok("\xe5\xbe\xae\xe5\xbe", 5)); /* the second character cut */
    assert_false(utf8_text_ok("\xff", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_len_of_valid_sequences),
        cmocka_unit_test(test_char_len_refuses_broken_sequences),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_controls),
        cmocka_unit_test(test_text_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
