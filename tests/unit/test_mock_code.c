/*
 * Unit tests for mock/code.h: the grammar of mock login and phone codes (docs/mock.md), the
 * appid a code may name, and directives alone (the token endpoints' faults).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "mock/code.h"

static struct mock_code parse_ok(const char *code)
{
    struct mock_code mc;
    if (mock_code_parse(code, &mc) != 0)
        fail_msg("mock_code_parse(\"%s\") failed", code);
    return mc;
}

static void assert_directive(const struct mock_directive *d, enum mock_kind kind, long value,
                             long count)
{
    assert_int_equal(d->kind, kind);
    assert_int_equal(d->value, value);
    assert_int_equal(d->count, count);
}

static void test_plain_user(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("alice");
    assert_string_equal(mc.user, "alice");
    assert_int_equal(mc.nd, 0);
}

static void test_user_with_nonce(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("alice-7");
    assert_string_equal(mc.user, "alice");
    assert_int_equal(mc.nd, 0);
}

static void test_user_with_long_nonce(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("Bob42-abc-def");
    assert_string_equal(mc.user, "Bob42");
}

static void test_busy_with_count(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("busy2_alice-3");
    assert_string_equal(mc.user, "alice");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_ERR, -1, 2);
}

static void test_err_errcode(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("err40226_bob");
    assert_string_equal(mc.user, "bob");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_ERR, 40226, 0);
}

static void test_err_negative(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("err-1_bob");
    assert_string_equal(mc.user, "bob");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_ERR, -1, 0);
}

static void test_err_negative_with_count_equals_busy(void **state)
{
    (void)state;
    struct mock_code a = parse_ok("err-1x2_bob");
    struct mock_code b = parse_ok("busy2_bob");
    assert_int_equal(a.nd, 1);
    assert_int_equal(b.nd, 1);
    assert_directive(&a.d[0], MOCK_ERR, -1, 2);
    assert_directive(&b.d[0], a.d[0].kind, a.d[0].value, a.d[0].count);
}

static void test_delay(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("delay300_x");
    assert_string_equal(mc.user, "x");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_DELAY, 300, 0);
}

static void test_http_with_count(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("http503x1_carol-2");
    assert_string_equal(mc.user, "carol");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_HTTP, 503, 1);
}

static void test_html(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("html_g");
    assert_string_equal(mc.user, "g");
    assert_int_equal(mc.nd, 1);
    assert_int_equal(mc.d[0].kind, MOCK_HTML);
    assert_int_equal(mc.d[0].count, 0);
}

static void test_reset(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("reset_h");
    assert_string_equal(mc.user, "h");
    assert_int_equal(mc.nd, 1);
    assert_int_equal(mc.d[0].kind, MOCK_RESET);
}

static void test_hang(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("hang_i");
    assert_string_equal(mc.user, "i");
    assert_int_equal(mc.nd, 1);
    assert_int_equal(mc.d[0].kind, MOCK_HANG);
}

static void test_directive_without_value_takes_count(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("resetx3_h");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_RESET, 0, 3);
}

static void test_directives_combined_in_order(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("delay100_busy1_http500x2_err45011_dave-9");
    assert_string_equal(mc.user, "dave");
    assert_int_equal(mc.nd, 4);
    assert_directive(&mc.d[0], MOCK_DELAY, 100, 0);
    assert_directive(&mc.d[1], MOCK_ERR, -1, 1);
    assert_directive(&mc.d[2], MOCK_HTTP, 500, 2);
    assert_directive(&mc.d[3], MOCK_ERR, 45011, 0);
}

static void test_at_most_max_directives(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("html_html_html_html_html_html_html_html_html_bob");
    assert_int_equal(mc.nd, MOCK_MAX_DIRECTIVES);
    /* the ninth segment is no longer read as a directive */
    assert_string_equal(mc.user, "html_bob");
}

/* The header: "Segments that are not directives end the directive list: the rest is the user."
 * docs/mock.md's grammar has user := [A-Za-z0-9]+ and does not say what "foo_bar" is. */
static void test_unknown_segment_ends_directives_rest_is_user(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("foo_bar");
    assert_int_equal(mc.nd, 0);
    assert_string_equal(mc.user, "foo_bar");
}

static void test_unknown_segment_after_directive(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("delay5_foo_bar-1");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_DELAY, 5, 0);
    assert_string_equal(mc.user, "foo_bar");
}

static void test_busy0_is_not_a_directive(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("busy0_x");
    assert_int_equal(mc.nd, 0);
    assert_string_equal(mc.user, "busy0_x");
}

static void test_count_zero_is_not_a_directive(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("err40029x0_x");
    assert_int_equal(mc.nd, 0);
}

static void test_directive_name_without_number_is_not_a_directive(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("busy_x").nd, 0);
    assert_int_equal(parse_ok("delay_x").nd, 0);
    assert_int_equal(parse_ok("http_x").nd, 0);
    assert_int_equal(parse_ok("err_x").nd, 0);
}

static void test_directive_with_trailing_junk_is_not_a_directive(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("delay300ms_x").nd, 0);
    assert_int_equal(parse_ok("htmlx_x").nd, 0);
    assert_int_equal(parse_ok("hangs_x").nd, 0);
    assert_int_equal(parse_ok("busy-1_x").nd, 0);
}

static void test_overlong_number_is_not_a_directive(void **state)
{
    (void)state;
    /* more digits than the parser reads must not wrap into some other value */
    struct mock_code mc = parse_ok("delay99999999999999999999_x");
    assert_int_equal(mc.nd, 0);
}

static void test_directive_without_user_fails(void **state)
{
    (void)state;
    struct mock_code mc;
    assert_int_equal(mock_code_parse("busy2_", &mc), -1);
    assert_int_equal(mock_code_parse("busy2_-1", &mc), -1);
}

static void test_directive_alone_is_a_user(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("busy2");
    assert_int_equal(mc.nd, 0);
    assert_string_equal(mc.user, "busy2");
}

static void test_empty_code_fails(void **state)
{
    (void)state;
    struct mock_code mc;
    assert_int_equal(mock_code_parse("", &mc), -1);
}

static void test_nonce_only_fails(void **state)
{
    (void)state;
    struct mock_code mc;
    assert_int_equal(mock_code_parse("-x", &mc), -1);
}

static void test_user_at_max_length(void **state)
{
    (void)state;
    char code[MOCK_USER_MAX + 3];
    memset(code, 'u', MOCK_USER_MAX);
    strcpy(code + MOCK_USER_MAX, "-1");
    struct mock_code mc = parse_ok(code);
    assert_int_equal(strlen(mc.user), MOCK_USER_MAX);
}

static void test_user_over_max_length_fails(void **state)
{
    (void)state;
    char code[MOCK_USER_MAX + 2];
    memset(code, 'u', MOCK_USER_MAX + 1);
    code[MOCK_USER_MAX + 1] = '\0';
    struct mock_code mc;
    assert_int_equal(mock_code_parse(code, &mc), -1);
}

static void test_applies_count_zero_always(void **state)
{
    (void)state;
    struct mock_directive d = {.kind = MOCK_ERR, .value = 40226, .count = 0};
    assert_true(mock_directive_applies(&d, 1));
    assert_true(mock_directive_applies(&d, 2));
    assert_true(mock_directive_applies(&d, 3));
    assert_true(mock_directive_applies(&d, 1000));
}

static void test_applies_count_two_first_two_only(void **state)
{
    (void)state;
    struct mock_directive d = {.kind = MOCK_ERR, .value = -1, .count = 2};
    assert_true(mock_directive_applies(&d, 1));
    assert_true(mock_directive_applies(&d, 2));
    assert_false(mock_directive_applies(&d, 3));
}

/* ---- the app a code was issued to ---- */

static void test_appid_segment_names_the_app(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("wxbbbb000000000002_busy1_alice-3");
    assert_string_equal(mc.app, "wxbbbb000000000002");
    assert_string_equal(mc.user, "alice");
    assert_int_equal(mc.nd, 1);
    assert_directive(&mc.d[0], MOCK_ERR, -1, 1);
}

static void test_appid_segment_after_directives(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("delay5_wx1234567890abcdef_bob");
    assert_string_equal(mc.app, "wx1234567890abcdef");
    assert_int_equal(mc.nd, 1);
    assert_string_equal(mc.user, "bob");
}

static void test_no_appid_segment_names_no_app(void **state)
{
    (void)state;
    assert_string_equal(parse_ok("alice-1").app, "");
    assert_string_equal(parse_ok("busy1_alice-1").app, "");
}

static void test_not_an_appid_is_the_user(void **state)
{
    (void)state;
    /* uppercase hex, 15 or 17 digits, another prefix: not WeChat's shape, so the user */
    static const char *const codes[] = {"wxBBBB000000000002_a", "wx000000000000002_a",
                                        "wx00000000000000002_a", "xw0000000000000002_a"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        struct mock_code mc = parse_ok(codes[i]);
        assert_string_equal(mc.app, "");
        assert_int_equal(mc.nd, 0);
        assert_int_equal(strncmp(mc.user, codes[i], strlen(codes[i])), 0);
    }
}

static void test_second_appid_segment_starts_the_user(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("wx0000000000000001_wx0000000000000002_c");
    assert_string_equal(mc.app, "wx0000000000000001");
    assert_string_equal(mc.user, "wx0000000000000002_c");
}

static void test_ccnumber(void **state)
{
    (void)state;
    struct mock_code mc = parse_ok("ccnumber_dave");
    assert_int_equal(mc.nd, 1);
    assert_int_equal(mc.d[0].kind, MOCK_CCNUMBER);
}

/* ---- directives alone (the token endpoints' faults) ---- */

static void test_directives_parse(void **state)
{
    (void)state;
    struct mock_code mc;
    assert_int_equal(mock_directives_parse("err45009x2_delay300", &mc), 0);
    assert_int_equal(mc.nd, 2);
    assert_directive(&mc.d[0], MOCK_ERR, 45009, 2);
    assert_directive(&mc.d[1], MOCK_DELAY, 300, 0);
    assert_int_equal(mock_directives_parse("busy1", &mc), 0);
    assert_directive(&mc.d[0], MOCK_ERR, -1, 1);
    assert_int_equal(mock_directives_parse("", &mc), 0);
    assert_int_equal(mc.nd, 0);
}

static void test_directives_parse_refuses_what_is_not_a_directive(void **state)
{
    (void)state;
    struct mock_code mc;
    static const char *const bad[] = {"alice",
                                      "err40164_",
                                      "_err1",
                                      "err1__err2",
                                      "wx1234567890abcdef",
                                      "busy0",
                                      "html_html_html_html_html_html_html_html_html"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (mock_directives_parse(bad[i], &mc) == 0)
            fail_msg("mock_directives_parse(\"%s\") accepted it", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_user),
        cmocka_unit_test(test_user_with_nonce),
        cmocka_unit_test(test_user_with_long_nonce),
        cmocka_unit_test(test_busy_with_count),
        cmocka_unit_test(test_err_errcode),
        cmocka_unit_test(test_err_negative),
        cmocka_unit_test(test_err_negative_with_count_equals_busy),
        cmocka_unit_test(test_delay),
        cmocka_unit_test(test_http_with_count),
        cmocka_unit_test(test_html),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_hang),
        cmocka_unit_test(test_directive_without_value_takes_count),
        cmocka_unit_test(test_directives_combined_in_order),
        cmocka_unit_test(test_at_most_max_directives),
        cmocka_unit_test(test_unknown_segment_ends_directives_rest_is_user),
        cmocka_unit_test(test_unknown_segment_after_directive),
        cmocka_unit_test(test_busy0_is_not_a_directive),
        cmocka_unit_test(test_count_zero_is_not_a_directive),
        cmocka_unit_test(test_directive_name_without_number_is_not_a_directive),
        cmocka_unit_test(test_directive_with_trailing_junk_is_not_a_directive),
        cmocka_unit_test(test_overlong_number_is_not_a_directive),
        cmocka_unit_test(test_directive_without_user_fails),
        cmocka_unit_test(test_directive_alone_is_a_user),
        cmocka_unit_test(test_empty_code_fails),
        cmocka_unit_test(test_nonce_only_fails),
        cmocka_unit_test(test_user_at_max_length),
        cmocka_unit_test(test_user_over_max_length_fails),
        cmocka_unit_test(test_applies_count_zero_always),
        cmocka_unit_test(test_applies_count_two_first_two_only),
        cmocka_unit_test(test_appid_segment_names_the_app),
        cmocka_unit_test(test_appid_segment_after_directives),
        cmocka_unit_test(test_no_appid_segment_names_no_app),
        cmocka_unit_test(test_not_an_appid_is_the_user),
        cmocka_unit_test(test_second_appid_segment_starts_the_user),
        cmocka_unit_test(test_ccnumber),
        cmocka_unit_test(test_directives_parse),
        cmocka_unit_test(test_directives_parse_refuses_what_is_not_a_directive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
