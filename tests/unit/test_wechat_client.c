/*
 * Unit tests for the pure helpers of wechat/client.h: query building, the retry policy, backoff,
 * request-id extraction from errmsg and the classification of a finished attempt.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "wechat/client.h"

/* ---- wechat_url ---- */

static struct wechat_url g_url;

static const char *build_url(const char *path, const char *const *kv)
{
    wechat_url_init(&g_url, path);
    for (size_t i = 0; kv[i] != NULL && kv[i + 1] != NULL; i += 2)
        wechat_url_arg(&g_url, kv[i], kv[i + 1]);
    return g_url.overflow ? NULL : g_url.buf;
}

static void expect_query(const char *path, const char *const *kv, const char *want)
{
    const char *got = build_url(path, kv);
    assert_non_null(got);
    if (strcmp(got, want) != 0) {
        print_error("got  %s\nwant %s\n", got, want);
        fail();
    }
    assert_int_equal(g_url.len, strlen(want));
}

static void test_query_plain_pairs_joined(void **state)
{
    (void)state;
    const char *kv[] = {"appid", "wx1", "js_code", "abc-_.~", "grant_type", "authorization_code",
                        NULL};
    expect_query("/sns/jscode2session", kv,
                 "/sns/jscode2session?appid=wx1&js_code=abc-_.~&grant_type=authorization_code");
}

static void test_query_no_pairs_is_path(void **state)
{
    (void)state;
    const char *kv[] = {NULL};
    expect_query("/x", kv, "/x");
}

static void test_query_reserved_characters_encoded(void **state)
{
    (void)state;
    const char *kv[] = {"v", "a b&c=d+e/f?g%h", NULL};
    expect_query("/p", kv, "/p?v=a%20b%26c%3Dd%2Be%2Ff%3Fg%25h");
}

static void test_query_keys_encoded(void **state)
{
    (void)state;
    const char *kv[] = {"k&=", "1", "a b", "2", NULL};
    expect_query("/p", kv, "/p?k%26%3D=1&a%20b=2");
}

static void test_query_utf8_encoded(void **state)
{
    (void)state;
    const char *kv[] = {"name", "\xe5\xbe\xae\xe4\xbf\xa1", NULL}; /* 微信 */
    expect_query("/p", kv, "/p?name=%E5%BE%AE%E4%BF%A1");
}

static void test_query_empty_value(void **state)
{
    (void)state;
    const char *kv[] = {"a", "", "b", "2", NULL};
    expect_query("/p", kv, "/p?a=&b=2");
}

static void test_query_long_values(void **state)
{
    (void)state;
    char big[1001];
    memset(big, '/', 1000);
    big[1000] = '\0';
    const char *kv[] = {"a", big, "b", "x", NULL};
    const char *got = build_url("/p", kv);
    assert_non_null(got);
    assert_int_equal(strlen(got), strlen("/p?a=") + 3 * 1000 + strlen("&b=x"));
    assert_int_equal(strncmp(got, "/p?a=%2F%2F", 11), 0);
    assert_string_equal(got + strlen(got) - 4, "&b=x");
}

/* The URL buffer is bounded (WECHAT_URL_MAX): what does not fit is reported, never cut. */
static void test_query_too_long_is_overflow_not_cut(void **state)
{
    (void)state;
    char big[3001];
    memset(big, '/', 3000);
    big[3000] = '\0';
    const char *kv[] = {"a", big, "b", "x", NULL};
    assert_null(build_url("/p", kv));
    assert_true(g_url.overflow);
    assert_string_equal(g_url.buf, "");
}

/* The URL holds the secret: wiping it leaves nothing behind. */
static void test_url_wipe(void **state)
{
    (void)state;
    const char *kv[] = {"secret", "S3cr3t", NULL};
    assert_non_null(build_url("/p", kv));
    wechat_url_wipe(&g_url);
    assert_int_equal(g_url.len, 0);
    assert_null(memmem(g_url.buf, sizeof(g_url.buf), "S3cr3t", 6));
}

/* ---- wechat_retryable ---- */

static bool retryable(enum wechat_status status, long errcode, long http_status)
{
    struct wechat_reply res = {.status = status, .errcode = errcode, .http_status = http_status};
    return wechat_retryable(WECHAT_API_CODE2SESSION, &res);
}

static void test_retry_errcode_minus1_only(void **state)
{
    (void)state;
    assert_true(retryable(WECHAT_ERRCODE, -1, 200));
    assert_false(retryable(WECHAT_ERRCODE, 40029, 200));
    assert_false(retryable(WECHAT_ERRCODE, 40163, 200));
    assert_false(retryable(WECHAT_ERRCODE, 45011, 200));
    assert_false(retryable(WECHAT_ERRCODE, 40013, 200));
    assert_false(retryable(WECHAT_ERRCODE, -2, 200));
}

static void test_retry_http_5xx_not_4xx(void **state)
{
    (void)state;
    assert_true(retryable(WECHAT_HTTP_ERROR, 500, 500));
    assert_true(retryable(WECHAT_HTTP_ERROR, 0, 502));
    assert_true(retryable(WECHAT_HTTP_ERROR, 0, 503));
    assert_true(retryable(WECHAT_HTTP_ERROR, 0, 599));
    assert_false(retryable(WECHAT_HTTP_ERROR, 0, 400));
    assert_false(retryable(WECHAT_HTTP_ERROR, 0, 404));
    assert_false(retryable(WECHAT_HTTP_ERROR, 0, 429));
    assert_false(retryable(WECHAT_HTTP_ERROR, 0, 301));
}

static void test_retry_connect_yes_timeout_no(void **state)
{
    (void)state;
    assert_true(retryable(WECHAT_CONNECT, 0, 0));
    assert_false(retryable(WECHAT_TIMEOUT, 0, 0));
    assert_false(retryable(WECHAT_TIMEOUT, 0, 200));
}

static void test_retry_bad_body_and_ok_no(void **state)
{
    (void)state;
    assert_false(retryable(WECHAT_BAD_BODY, 0, 200));
    assert_false(retryable(WECHAT_OK, 0, 200));
}

/* A failure of ours is never retried: the request may have spent a single-use code. */
static void test_retry_internal_no(void **state)
{
    (void)state;
    assert_false(retryable(WECHAT_INTERNAL, 0, 0));
    assert_false(retryable(WECHAT_INTERNAL, 0, 200));
}

/* ---- wechat_backoff_ms ---- */

static long step_for(int n)
{
    long step = 100;
    for (int i = 1; i < n; i++)
        step *= 2;
    return step > 2000 ? 2000 : step;
}

static void test_backoff_bounds_for_each_retry(void **state)
{
    (void)state;
    static const uint32_t rnds[] = {0, 1, 49, 50, 51, 999, 0x7fffffffu, 0x80000000u, UINT32_MAX};
    for (int n = 1; n <= 6; n++) {
        long step = step_for(n);
        for (size_t i = 0; i < sizeof(rnds) / sizeof(rnds[0]); i++) {
            long ms = wechat_backoff_ms(n, rnds[i]);
            if (ms < step / 2 || ms > step)
                fail_msg("n=%d rnd=%u: %ld not in [%ld, %ld]", n, rnds[i], ms, step / 2, step);
        }
    }
}

static void test_backoff_rnd_zero_is_half_step(void **state)
{
    (void)state;
    assert_int_equal(wechat_backoff_ms(1, 0), 50);
    assert_int_equal(wechat_backoff_ms(2, 0), 100);
    assert_int_equal(wechat_backoff_ms(3, 0), 200);
    assert_int_equal(wechat_backoff_ms(4, 0), 400);
    assert_int_equal(wechat_backoff_ms(5, 0), 800);
    assert_int_equal(wechat_backoff_ms(6, 0), 1000);
}

static void test_backoff_reaches_full_step(void **state)
{
    (void)state;
    for (int n = 1; n <= 6; n++) {
        long step = step_for(n);
        assert_int_equal(wechat_backoff_ms(n, (uint32_t)(step / 2)), step);
    }
}

static void test_backoff_capped_at_2000(void **state)
{
    (void)state;
    for (int n = 6; n <= 40; n++) {
        assert_in_range(wechat_backoff_ms(n, UINT32_MAX), 1000, 2000);
        assert_int_equal(wechat_backoff_ms(n, 0), 1000);
    }
}

static void test_backoff_grows_with_n(void **state)
{
    (void)state;
    for (int n = 1; n < 6; n++) {
        /* both ends of the range grow: the shortest and the longest possible wait */
        long max_n = wechat_backoff_ms(n, (uint32_t)(step_for(n) / 2));
        long max_next = wechat_backoff_ms(n + 1, (uint32_t)(step_for(n + 1) / 2));
        assert_true(wechat_backoff_ms(n + 1, 0) > wechat_backoff_ms(n, 0));
        assert_true(max_next > max_n);
    }
}

static void test_backoff_uses_jitter(void **state)
{
    (void)state;
    long first = wechat_backoff_ms(4, 0);
    bool varied = false;
    for (uint32_t r = 1; r < 1000 && !varied; r += 7)
        varied = wechat_backoff_ms(4, r) != first;
    assert_true(varied);
}

/* The budget bounds the worst case: every attempt times out and every backoff is the longest. */
static void test_budget_covers_attempts_and_backoffs(void **state)
{
    (void)state;
    assert_int_equal(wechat_budget_ms(5000, 0), 5000);
    long worst = 3 * 5000;
    for (int n = 1; n <= 2; n++)
        worst += wechat_backoff_ms(n, UINT32_MAX);
    assert_true(wechat_budget_ms(5000, 2) >= worst);
    assert_int_equal(wechat_budget_ms(5000, 2), 3 * 5000 + 2 * 2000);
}

/* ---- wechat_errmsg_rid ---- */

static void expect_rid(const char *errmsg, const char *want)
{
    char out[WECHAT_RID_MAX];
    memset(out, 'Z', sizeof(out));
    wechat_errmsg_rid(errmsg, out);
    assert_string_equal(out, want);
}

static void test_rid_current_format(void **state)
{
    (void)state;
    expect_rid("invalid code, rid: 652d44d0-1a2b3c4d-5e6f7a8b", "652d44d0-1a2b3c4d-5e6f7a8b");
}

static void test_rid_older_hints_format(void **state)
{
    (void)state;
    expect_rid("invalid code, hints: [ req_id: abc-123 ]", "abc-123");
}

/* Real older req_ids are not hex: "invalid code, hints: [ req_id: 6EkbY7aLRa-se8T9 ]",
 * "code been used, hints: [ req_id: OpwajA01912023 ]" (as quoted in public code2Session
 * clients). The whole id is what WeChat support asks for. */
static void test_rid_older_format_with_letters(void **state)
{
    (void)state;
    expect_rid("invalid code, hints: [ req_id: 6EkbY7aLRa-se8T9 ]", "6EkbY7aLRa-se8T9");
    expect_rid("code been used, hints: [ req_id: OpwajA01912023 ]", "OpwajA01912023");
}

static void test_rid_absent(void **state)
{
    (void)state;
    expect_rid("invalid code", "");
    expect_rid("", "");
    expect_rid("ok", "");
}

static void test_rid_null_errmsg(void **state)
{
    (void)state;
    expect_rid(NULL, "");
}

static void test_rid_overlong_truncated(void **state)
{
    (void)state;
    char msg[200] = "invalid code, rid: ";
    size_t p = strlen(msg);
    for (size_t i = 0; i < 100; i++)
        msg[p + i] = "0123456789abcdef"[i % 16];
    msg[p + 100] = '\0';
    char out[WECHAT_RID_MAX];
    wechat_errmsg_rid(msg, out);
    assert_int_equal(strlen(out), WECHAT_RID_MAX - 1);
    assert_memory_equal(out, msg + p, WECHAT_RID_MAX - 1);
}

/* ---- wechat_classify ---- */

static bool accept_none(const json_t *body)
{
    (void)body;
    return false;
}

static bool accept_needs_openid(const json_t *body)
{
    return json_is_string(json_object_get(body, "openid"));
}

static struct wechat_reply classify(int curl_code, long http_status, const char *body,
                                    wechat_accept_fn *accept)
{
    struct wechat_reply res;
    memset(&res, 0, sizeof(res));
    res.attempts = 3;
    wechat_classify(&res, curl_code, http_status, body, body ? strlen(body) : 0, accept);
    assert_int_equal(res.attempts, 3);
    assert_non_null(res.detail);
    return res;
}

static void test_classify_success_without_errcode_is_ok(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "{\"openid\":\"o1\",\"session_key\":\"k\"}", NULL);
    assert_int_equal(res.status, WECHAT_OK);
    assert_int_equal(res.http_status, 200);
    assert_non_null(res.body);
    assert_string_equal(json_string_value(json_object_get(res.body, "openid")), "o1");
    assert_string_equal(res.rid, "");
    json_decref(res.body);
}

static void test_classify_errcode_zero_is_ok(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "{\"errcode\":0,\"errmsg\":\"ok\"}", NULL);
    assert_int_equal(res.status, WECHAT_OK);
    assert_int_equal(res.errcode, 0);
    assert_non_null(res.body);
    json_decref(res.body);
}

static void test_classify_accept_true_is_ok(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "{\"openid\":\"o1\"}", accept_needs_openid);
    assert_int_equal(res.status, WECHAT_OK);
    json_decref(res.body);
}

static void test_classify_errcode_40029_with_rid(void **state)
{
    (void)state;
    struct wechat_reply res = classify(
        0, 200, "{\"errcode\":40029,\"errmsg\":\"invalid code, rid: 652d44d0-1a2b3c4d-5e6f7a8b\"}",
        NULL);
    assert_int_equal(res.status, WECHAT_ERRCODE);
    assert_int_equal(res.errcode, 40029);
    assert_string_equal(res.rid, "652d44d0-1a2b3c4d-5e6f7a8b");
    assert_non_null(res.body);
    json_decref(res.body);
}

static void test_classify_errcode_minus1(void **state)
{
    (void)state;
    struct wechat_reply res =
        classify(0, 200, "{\"errcode\":-1,\"errmsg\":\"system error\"}", NULL);
    assert_int_equal(res.status, WECHAT_ERRCODE);
    assert_int_equal(res.errcode, -1);
    json_decref(res.body);
}

static void test_classify_errcode_as_string_is_bad_body(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "{\"errcode\":\"40029\"}", NULL);
    assert_int_equal(res.status, WECHAT_BAD_BODY);
    assert_null(res.body);
}

static void test_classify_html_is_bad_body(void **state)
{
    (void)state;
    struct wechat_reply res =
        classify(0, 200, "<!DOCTYPE html><html><body>Please log in</body></html>", NULL);
    assert_int_equal(res.status, WECHAT_BAD_BODY);
    assert_null(res.body);
}

static void test_classify_json_array_is_bad_body(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "[{\"openid\":\"o1\"}]", NULL);
    assert_int_equal(res.status, WECHAT_BAD_BODY);
    assert_null(res.body);
}

static void test_classify_empty_body_is_bad_body(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "", NULL);
    assert_int_equal(res.status, WECHAT_BAD_BODY);
    assert_null(res.body);
}

static void test_classify_http_502_is_http_error(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 502, "<html>Bad Gateway</html>", NULL);
    assert_int_equal(res.status, WECHAT_HTTP_ERROR);
    assert_int_equal(res.http_status, 502);
    assert_null(res.body);
}

static void test_classify_http_error_even_with_json_body(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 404, "{\"errcode\":0}", NULL);
    assert_int_equal(res.status, WECHAT_HTTP_ERROR);
    assert_int_equal(res.http_status, 404);
    assert_null(res.body);
}

static void test_classify_timeout(void **state)
{
    (void)state;
    assert_int_equal(CURLE_OPERATION_TIMEDOUT, 28);
    struct wechat_reply res = classify(CURLE_OPERATION_TIMEDOUT, 0, NULL, NULL);
    assert_int_equal(res.status, WECHAT_TIMEOUT);
    assert_int_equal(res.errcode, 0);
    assert_null(res.body);
}

static void test_classify_couldnt_connect_is_connect(void **state)
{
    (void)state;
    assert_int_equal(CURLE_COULDNT_CONNECT, 7);
    struct wechat_reply res = classify(CURLE_COULDNT_CONNECT, 0, NULL, NULL);
    assert_int_equal(res.status, WECHAT_CONNECT);
    assert_null(res.body);
}

static void test_classify_recv_error_is_connect(void **state)
{
    (void)state;
    assert_int_equal(CURLE_RECV_ERROR, 56);
    struct wechat_reply res = classify(CURLE_RECV_ERROR, 0, NULL, NULL);
    assert_int_equal(res.status, WECHAT_CONNECT);
}

static void test_classify_write_error_is_bad_body(void **state)
{
    (void)state;
    assert_int_equal(CURLE_WRITE_ERROR, 23);
    struct wechat_reply res = classify(CURLE_WRITE_ERROR, 200, NULL, NULL);
    assert_int_equal(res.status, WECHAT_BAD_BODY);
    assert_null(res.body);
}

/* Out of memory (curl's, or ours keeping the answer) and a transfer we stopped are ours, not
 * WeChat's, even with a good answer in hand. */
static void test_classify_our_failures_are_internal(void **state)
{
    (void)state;
    static const int codes[] = {CURLE_OUT_OF_MEMORY, CURLE_ABORTED_BY_CALLBACK};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        struct wechat_reply res = classify(codes[i], 200, "{\"openid\":\"o1\"}", NULL);
        assert_int_equal(res.status, WECHAT_INTERNAL);
        assert_null(res.body);
        res = classify(codes[i], 0, NULL, NULL);
        assert_int_equal(res.status, WECHAT_INTERNAL);
    }
}

static void test_classify_curl_error_wins_over_http_200(void **state)
{
    (void)state;
    struct wechat_reply res = classify(CURLE_RECV_ERROR, 200, "{\"openid\":\"o1\"}", NULL);
    assert_int_equal(res.status, WECHAT_CONNECT);
    assert_null(res.body);
}

static void test_classify_accept_false_is_bad_body(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "{\"openid\":\"o1\"}", accept_none);
    assert_int_equal(res.status, WECHAT_BAD_BODY);
    assert_null(res.body);
}

static void test_classify_accept_not_consulted_for_errcode(void **state)
{
    (void)state;
    struct wechat_reply res = classify(0, 200, "{\"errcode\":40163,\"errmsg\":\"x\"}", accept_none);
    assert_int_equal(res.status, WECHAT_ERRCODE);
    assert_int_equal(res.errcode, 40163);
    json_decref(res.body);
}

static void test_classify_resets_previous_attempt(void **state)
{
    (void)state;
    struct wechat_reply res;
    memset(&res, 0, sizeof(res));
    static const char busy[] = "{\"errcode\":-1,\"errmsg\":\"busy, rid: abc\"}";
    wechat_classify(&res, 0, 200, busy, sizeof(busy) - 1, NULL);
    assert_int_equal(res.status, WECHAT_ERRCODE);
    assert_string_equal(res.rid, "abc");
    json_decref(res.body);
    wechat_classify(&res, CURLE_OPERATION_TIMEDOUT, 0, NULL, 0, NULL);
    assert_int_equal(res.status, WECHAT_TIMEOUT);
    assert_int_equal(res.errcode, 0);
    assert_string_equal(res.rid, "");
    assert_null(res.body);
    assert_int_equal(res.http_status, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_plain_pairs_joined),
        cmocka_unit_test(test_query_no_pairs_is_path),
        cmocka_unit_test(test_query_reserved_characters_encoded),
        cmocka_unit_test(test_query_keys_encoded),
        cmocka_unit_test(test_query_utf8_encoded),
        cmocka_unit_test(test_query_empty_value),
        cmocka_unit_test(test_query_long_values),
        cmocka_unit_test(test_query_too_long_is_overflow_not_cut),
        cmocka_unit_test(test_url_wipe),
        cmocka_unit_test(test_retry_errcode_minus1_only),
        cmocka_unit_test(test_retry_http_5xx_not_4xx),
        cmocka_unit_test(test_retry_connect_yes_timeout_no),
        cmocka_unit_test(test_retry_bad_body_and_ok_no),
        cmocka_unit_test(test_retry_internal_no),
        cmocka_unit_test(test_backoff_bounds_for_each_retry),
        cmocka_unit_test(test_backoff_rnd_zero_is_half_step),
        cmocka_unit_test(test_backoff_reaches_full_step),
        cmocka_unit_test(test_backoff_capped_at_2000),
        cmocka_unit_test(test_backoff_grows_with_n),
        cmocka_unit_test(test_backoff_uses_jitter),
        cmocka_unit_test(test_budget_covers_attempts_and_backoffs),
        cmocka_unit_test(test_rid_current_format),
        cmocka_unit_test(test_rid_older_hints_format),
        cmocka_unit_test(test_rid_older_format_with_letters),
        cmocka_unit_test(test_rid_absent),
        cmocka_unit_test(test_rid_null_errmsg),
        cmocka_unit_test(test_rid_overlong_truncated),
        cmocka_unit_test(test_classify_success_without_errcode_is_ok),
        cmocka_unit_test(test_classify_errcode_zero_is_ok),
        cmocka_unit_test(test_classify_accept_true_is_ok),
        cmocka_unit_test(test_classify_errcode_40029_with_rid),
        cmocka_unit_test(test_classify_errcode_minus1),
        cmocka_unit_test(test_classify_errcode_as_string_is_bad_body),
        cmocka_unit_test(test_classify_html_is_bad_body),
        cmocka_unit_test(test_classify_json_array_is_bad_body),
        cmocka_unit_test(test_classify_empty_body_is_bad_body),
        cmocka_unit_test(test_classify_http_502_is_http_error),
        cmocka_unit_test(test_classify_http_error_even_with_json_body),
        cmocka_unit_test(test_classify_timeout),
        cmocka_unit_test(test_classify_couldnt_connect_is_connect),
        cmocka_unit_test(test_classify_recv_error_is_connect),
        cmocka_unit_test(test_classify_write_error_is_bad_body),
        cmocka_unit_test(test_classify_our_failures_are_internal),
        cmocka_unit_test(test_classify_curl_error_wins_over_http_200),
        cmocka_unit_test(test_classify_accept_false_is_bad_body),
        cmocka_unit_test(test_classify_accept_not_consulted_for_errcode),
        cmocka_unit_test(test_classify_resets_previous_attempt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
