/*
 * Unit tests for handlers/upstream_error.h: upstream_error_map(), the table from a failed WeChat
 * call to our HTTP status, error slug and action hint (docs/api.md documents the same table).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "handlers/upstream_error.h"

struct want {
    unsigned status;
    const char *slug;
    const char *action;
    bool has_errcode;
    unsigned retry_after;
    bool config;
};

static void check(const struct wechat_result *res, const struct want *w)
{
    struct upstream_error e;
    memset(&e, 0xa5, sizeof(e));
    upstream_error_map(res, &e);
    assert_int_equal(e.status, w->status);
    assert_string_equal(e.slug, w->slug);
    assert_string_equal(e.action, w->action);
    assert_int_equal(e.has_errcode, w->has_errcode);
    assert_int_equal(e.retry_after, w->retry_after);
    assert_int_equal(e.config, w->config);
    assert_non_null(e.message);
    assert_true(e.message[0] != '\0');
}

static void check_errcode(long errcode, const struct want *w)
{
    struct wechat_result res = {.status = WECHAT_ERRCODE, .errcode = errcode, .http_status = 200};
    check(&res, w);
}

static void check_status(enum wechat_status status, long http_status, const struct want *w)
{
    struct wechat_result res = {.status = status, .http_status = http_status};
    check(&res, w);
}

static void test_errcode_minus1_is_503_busy_retry(void **state)
{
    (void)state;
    check_errcode(-1, &(struct want){503, "upstream_busy", "retry", true, 0, false});
}

static void test_errcode_40029_is_400_invalid_code_relogin(void **state)
{
    (void)state;
    check_errcode(40029, &(struct want){400, "invalid_code", "relogin", true, 0, false});
}

static void test_errcode_40163_is_400_code_used_relogin(void **state)
{
    (void)state;
    check_errcode(40163, &(struct want){400, "code_used", "relogin", true, 0, false});
}

static void test_errcode_40226_is_403_user_blocked_none(void **state)
{
    (void)state;
    check_errcode(40226, &(struct want){403, "user_blocked", "none", true, 0, false});
}

static void test_errcode_45011_is_429_rate_limited_retry_after_60(void **state)
{
    (void)state;
    check_errcode(45011, &(struct want){429, "rate_limited", "retry", true, 60, false});
}

static void test_config_errcodes_are_500_config_error(void **state)
{
    (void)state;
    static const long codes[] = {40013, 40125, 40243, 40164, 41002, 41004};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        check_errcode(codes[i], &(struct want){500, "config_error", "none", true, 0, true});
}

static void test_config_errcodes_have_distinct_messages(void **state)
{
    (void)state;
    static const long codes[] = {40013, 40125, 40243, 40164, 41002, 41004};
    const char *msgs[6];
    for (size_t i = 0; i < 6; i++) {
        struct wechat_result res = {.status = WECHAT_ERRCODE, .errcode = codes[i]};
        struct upstream_error e;
        upstream_error_map(&res, &e);
        msgs[i] = e.message;
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(msgs[i], msgs[j]);
    }
}

static void test_other_errcode_is_502_upstream_error_with_errcode(void **state)
{
    (void)state;
    check_errcode(40097, &(struct want){502, "upstream_error", "relogin", true, 0, false});
    check_errcode(1, &(struct want){502, "upstream_error", "relogin", true, 0, false});
    check_errcode(-2, &(struct want){502, "upstream_error", "relogin", true, 0, false});
}

static void test_timeout_is_504_relogin_without_errcode(void **state)
{
    (void)state;
    check_status(WECHAT_TIMEOUT, 0,
                 &(struct want){504, "upstream_timeout", "relogin", false, 0, false});
}

static void test_http_error_is_502_relogin_without_errcode(void **state)
{
    (void)state;
    check_status(WECHAT_HTTP_ERROR, 503,
                 &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

static void test_bad_body_is_502_relogin_without_errcode(void **state)
{
    (void)state;
    check_status(WECHAT_BAD_BODY, 200,
                 &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

static void test_connect_is_502_relogin_without_errcode(void **state)
{
    (void)state;
    check_status(WECHAT_CONNECT, 0,
                 &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

/* A stale errcode in a transport failure must not leak into the mapping. */
static void test_transport_failure_ignores_stale_errcode(void **state)
{
    (void)state;
    struct wechat_result res = {.status = WECHAT_CONNECT, .errcode = 40029};
    check(&res, &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

static void test_ok_is_not_an_upstream_error(void **state)
{
    (void)state;
    check_status(WECHAT_OK, 200, &(struct want){500, "internal", "retry", false, 0, false});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errcode_minus1_is_503_busy_retry),
        cmocka_unit_test(test_errcode_40029_is_400_invalid_code_relogin),
        cmocka_unit_test(test_errcode_40163_is_400_code_used_relogin),
        cmocka_unit_test(test_errcode_40226_is_403_user_blocked_none),
        cmocka_unit_test(test_errcode_45011_is_429_rate_limited_retry_after_60),
        cmocka_unit_test(test_config_errcodes_are_500_config_error),
        cmocka_unit_test(test_config_errcodes_have_distinct_messages),
        cmocka_unit_test(test_other_errcode_is_502_upstream_error_with_errcode),
        cmocka_unit_test(test_timeout_is_504_relogin_without_errcode),
        cmocka_unit_test(test_http_error_is_502_relogin_without_errcode),
        cmocka_unit_test(test_bad_body_is_502_relogin_without_errcode),
        cmocka_unit_test(test_connect_is_502_relogin_without_errcode),
        cmocka_unit_test(test_transport_failure_ignores_stale_errcode),
        cmocka_unit_test(test_ok_is_not_an_upstream_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
