/*
 * Unit tests for wechat/errcode.h: the one table of WeChat's errcodes and the mapping of failed
 * calls to what our client is told.
 *
 *   lookup   the API's own row, then the `any` row, then the API's `other` row, then `other`
 *            for any API; the flags of a row.
 *   mapping  wechat_error_map() for errcodes and for every other way a call fails, at each API;
 *            the cases of the former handlers/upstream_error tests, now the code2session API.
 *   docs     docs/api.md's errcode table (between the errcode-table markers) says what the C
 *            table says, row by row and column by column, in both directions. The check is a
 *            function of the docs text, so it is also fed copies with planted differences,
 *            each of which it must report, naming the row and the column.
 *
 * Runs from tests/unit (the Makefile's working directory for unit tests).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wechat/errcode.h"

#define DOCS_PATH "../../docs/api.md"
#define DOCS_MAX (1024 * 1024)
#define TABLE_BEGIN "<!-- errcode-table:begin -->"
#define TABLE_END "<!-- errcode-table:end -->"
#define NONE "\xe2\x80\x94" /* "—": an empty cell */

static const enum wechat_api all_apis[] = {
    WECHAT_API_ANY,   WECHAT_API_CODE2SESSION, WECHAT_API_TOKEN,
    WECHAT_API_PHONE, WECHAT_API_CHECKSESSION,
};
#define NAPIS (sizeof(all_apis) / sizeof(all_apis[0]))

/* ---- lookup ---- */

struct want_row {
    enum wechat_api api; /* of the row found */
    long errcode;        /* of the row found */
    unsigned status;
    const char *error;
    const char *action;
    unsigned flags;
};

static void check_find(enum wechat_api api, long errcode, const struct want_row *w)
{
    const struct wechat_errcode *r = wechat_errcode_find(api, errcode);
    assert_non_null(r);
    assert_true(r >= wechat_errcodes && r < wechat_errcodes + wechat_nerrcodes);
    assert_int_equal(r->api, w->api);
    assert_true(r->errcode == w->errcode);
    assert_int_equal(r->status, w->status);
    assert_string_equal(r->error, w->error);
    assert_string_equal(r->action, w->action);
    assert_int_equal(r->flags, w->flags);
}

static void test_find_api_row_before_any_row(void **state)
{
    (void)state;
    /* At the token endpoints 40001 means a wrong secret; elsewhere a rejected access token. */
    check_find(
        WECHAT_API_TOKEN, 40001,
        &(struct want_row){WECHAT_API_TOKEN, 40001, 500, "config_error", "none", WECHAT_EC_CONFIG});
    check_find(WECHAT_API_PHONE, 40001,
               &(struct want_row){WECHAT_API_ANY, 40001, 503, "upstream_busy", "retry",
                                  WECHAT_EC_TOKEN_REJECTED});
    check_find(WECHAT_API_CHECKSESSION, 40001,
               &(struct want_row){WECHAT_API_ANY, 40001, 503, "upstream_busy", "retry",
                                  WECHAT_EC_TOKEN_REJECTED});
    check_find(WECHAT_API_CODE2SESSION, 42001,
               &(struct want_row){WECHAT_API_ANY, 42001, 503, "upstream_busy", "retry",
                                  WECHAT_EC_TOKEN_REJECTED});
}

static void test_find_40029_depends_on_the_api(void **state)
{
    (void)state;
    check_find(WECHAT_API_CODE2SESSION, 40029,
               &(struct want_row){WECHAT_API_CODE2SESSION, 40029, 400, "invalid_code", "relogin",
                                  WECHAT_EC_FINAL});
    check_find(WECHAT_API_PHONE, 40029,
               &(struct want_row){WECHAT_API_PHONE, 40029, 400, "invalid_code", "none", 0});
    /* No row of its own at checksession and none for any API: checksession has no `other`
     * row, so `other` for any API. */
    check_find(
        WECHAT_API_CHECKSESSION, 40029,
        &(struct want_row){WECHAT_API_ANY, WECHAT_EC_OTHER, 502, "upstream_error", "relogin", 0});
    /* At the token API: its own `other` row. */
    check_find(
        WECHAT_API_TOKEN, 40029,
        &(struct want_row){WECHAT_API_TOKEN, WECHAT_EC_OTHER, 503, "upstream_busy", "retry", 0});
}

static void test_find_any_row_before_the_apis_other_row(void **state)
{
    (void)state;
    /* The token API has an `other` row, yet the `any` rows come first. */
    check_find(WECHAT_API_TOKEN, 45011,
               &(struct want_row){WECHAT_API_ANY, 45011, 429, "rate_limited", "retry", 0});
    check_find(
        WECHAT_API_TOKEN, -1,
        &(struct want_row){WECHAT_API_ANY, -1, 503, "upstream_busy", "retry", WECHAT_EC_RETRYABLE});
    check_find(
        WECHAT_API_TOKEN, 40013,
        &(struct want_row){WECHAT_API_ANY, 40013, 500, "config_error", "none", WECHAT_EC_CONFIG});
    check_find(WECHAT_API_TOKEN, 40014,
               &(struct want_row){WECHAT_API_ANY, 40014, 503, "upstream_busy", "retry",
                                  WECHAT_EC_TOKEN_REJECTED});
}

static void test_find_unknown_errcode(void **state)
{
    (void)state;
    static const long unknown[] = {40097, 1, -2, 99999, 0, LONG_MAX, LONG_MIN + 1};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        check_find(WECHAT_API_TOKEN, unknown[i],
                   &(struct want_row){WECHAT_API_TOKEN, WECHAT_EC_OTHER, 503, "upstream_busy",
                                      "retry", 0});
        static const enum wechat_api others[] = {WECHAT_API_ANY, WECHAT_API_CODE2SESSION,
                                                 WECHAT_API_PHONE, WECHAT_API_CHECKSESSION};
        for (size_t j = 0; j < sizeof(others) / sizeof(others[0]); j++)
            check_find(others[j], unknown[i],
                       &(struct want_row){WECHAT_API_ANY, WECHAT_EC_OTHER, 502, "upstream_error",
                                          "relogin", 0});
    }
}

static void test_find_87009_only_at_checksession(void **state)
{
    (void)state;
    check_find(WECHAT_API_CHECKSESSION, 87009,
               &(struct want_row){WECHAT_API_CHECKSESSION, 87009, 200, "", "", 0});
    check_find(
        WECHAT_API_CODE2SESSION, 87009,
        &(struct want_row){WECHAT_API_ANY, WECHAT_EC_OTHER, 502, "upstream_error", "relogin", 0});
}

static void test_find_every_row_finds_itself(void **state)
{
    (void)state;
    for (size_t i = 0; i < wechat_nerrcodes; i++) {
        const struct wechat_errcode *r = &wechat_errcodes[i];
        assert_ptr_equal(wechat_errcode_find(r->api, r->errcode), r);
    }
}

static void test_flags(void **state)
{
    (void)state;
    for (size_t i = 0; i < NAPIS; i++) {
        assert_int_equal(wechat_errcode_flags(all_apis[i], -1), WECHAT_EC_RETRYABLE);
        assert_int_equal(wechat_errcode_flags(all_apis[i], 45011), 0);
        assert_int_equal(wechat_errcode_flags(all_apis[i], 40013), WECHAT_EC_CONFIG);
        assert_int_equal(wechat_errcode_flags(all_apis[i], 41004), WECHAT_EC_CONFIG);
        /* Not listed: 0, even where the API's `other` row would apply. */
        assert_int_equal(wechat_errcode_flags(all_apis[i], 40097), 0);
        assert_int_equal(wechat_errcode_flags(all_apis[i], 0), 0);
    }
    assert_int_equal(wechat_errcode_flags(WECHAT_API_CODE2SESSION, 40029), WECHAT_EC_FINAL);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_CODE2SESSION, 40163), WECHAT_EC_FINAL);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_CODE2SESSION, 40226), WECHAT_EC_FINAL);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_PHONE, 40029), 0);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_CHECKSESSION, 40029), 0);
    static const long rejected[] = {40001, 40014, 42001};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(wechat_errcode_flags(WECHAT_API_PHONE, rejected[i]),
                         WECHAT_EC_TOKEN_REJECTED);
        assert_int_equal(wechat_errcode_flags(WECHAT_API_CHECKSESSION, rejected[i]),
                         WECHAT_EC_TOKEN_REJECTED);
    }
    /* At the token API 40001 is our secret, not a rejected token. */
    assert_int_equal(wechat_errcode_flags(WECHAT_API_TOKEN, 40001), WECHAT_EC_CONFIG);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_TOKEN, 40014), WECHAT_EC_TOKEN_REJECTED);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_TOKEN, 89507), WECHAT_EC_CONFIG);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_PHONE, 89507), 0);
    assert_int_equal(wechat_errcode_flags(WECHAT_API_CHECKSESSION, 87009), 0);
}

static void test_table_is_well_formed(void **state)
{
    (void)state;
    const unsigned known =
        WECHAT_EC_RETRYABLE | WECHAT_EC_FINAL | WECHAT_EC_TOKEN_REJECTED | WECHAT_EC_CONFIG;
    bool any_other = false;
    assert_true(wechat_nerrcodes > 0);
    for (size_t i = 0; i < wechat_nerrcodes; i++) {
        const struct wechat_errcode *r = &wechat_errcodes[i];
        for (size_t j = 0; j < i; j++)
            if (wechat_errcodes[j].api == r->api && wechat_errcodes[j].errcode == r->errcode)
                fail_msg("wechat_errcodes[%zu] repeats row %zu (%ld at %s)", i, j, r->errcode,
                         wechat_api_name(r->api));
        assert_true(r->status >= 200 && r->status <= 599);
        assert_non_null(r->error);
        assert_non_null(r->action);
        assert_non_null(r->message);
        assert_true(r->message[0] != '\0');
        assert_int_equal(r->flags & ~known, 0);
        if (r->flags & WECHAT_EC_CONFIG) {
            assert_int_equal(r->status, 500);
            assert_string_equal(r->error, "config_error");
        }
        if (r->api == WECHAT_API_ANY && r->errcode == WECHAT_EC_OTHER)
            any_other = true;
    }
    assert_true(any_other); /* so wechat_errcode_find never returns NULL */
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(wechat_api_name(WECHAT_API_ANY), "any");
    assert_string_equal(wechat_api_name(WECHAT_API_CODE2SESSION), "code2session");
    assert_string_equal(wechat_api_name(WECHAT_API_TOKEN), "token");
    assert_string_equal(wechat_api_name(WECHAT_API_PHONE), "getuserphonenumber");
    assert_string_equal(wechat_api_name(WECHAT_API_CHECKSESSION), "checksession");
    assert_string_equal(wechat_status_name(WECHAT_OK), "ok");
    assert_string_equal(wechat_status_name(WECHAT_ERRCODE), "errcode");
    assert_string_equal(wechat_status_name(WECHAT_HTTP_ERROR), "http_error");
    assert_string_equal(wechat_status_name(WECHAT_BAD_BODY), "bad_body");
    assert_string_equal(wechat_status_name(WECHAT_CONNECT), "connect");
    assert_string_equal(wechat_status_name(WECHAT_TIMEOUT), "timeout");
    assert_string_equal(wechat_status_name(WECHAT_INTERNAL), "internal");
}

/* ---- mapping ---- */

struct want {
    unsigned status;
    const char *error;
    const char *action;
    bool has_errcode;
    unsigned retry_after;
    bool config;
};

static struct wechat_http_error map(enum wechat_api api, enum wechat_status status, long errcode)
{
    struct wechat_http_error e;
    memset(&e, 0xa5, sizeof(e));
    wechat_error_map(api, status, errcode, &e);
    return e;
}

static void check_map(enum wechat_api api, enum wechat_status status, long errcode,
                      const struct want *w)
{
    struct wechat_http_error e = map(api, status, errcode);
    assert_int_equal(e.status, w->status);
    assert_string_equal(e.error, w->error);
    assert_string_equal(e.action, w->action);
    assert_int_equal(e.has_errcode, w->has_errcode);
    if (w->has_errcode)
        assert_true(e.errcode == errcode);
    assert_int_equal(e.retry_after, w->retry_after);
    assert_int_equal(e.config, w->config);
    assert_non_null(e.message);
    assert_true(e.message[0] != '\0');
}

static void test_map_timeout_is_504_relogin(void **state)
{
    (void)state;
    static const enum wechat_api apis[] = {WECHAT_API_ANY, WECHAT_API_CODE2SESSION,
                                           WECHAT_API_PHONE, WECHAT_API_CHECKSESSION};
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
        check_map(apis[i], WECHAT_TIMEOUT, 0,
                  &(struct want){504, "upstream_timeout", "relogin", false, 0, false});
}

static void test_map_transport_failures_are_502_relogin(void **state)
{
    (void)state;
    static const enum wechat_api apis[] = {WECHAT_API_ANY, WECHAT_API_CODE2SESSION,
                                           WECHAT_API_PHONE, WECHAT_API_CHECKSESSION};
    static const enum wechat_status sts[] = {WECHAT_HTTP_ERROR, WECHAT_BAD_BODY, WECHAT_CONNECT};
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++)
        for (size_t j = 0; j < sizeof(sts) / sizeof(sts[0]); j++)
            check_map(apis[i], sts[j], 0,
                      &(struct want){502, "upstream_error", "relogin", false, 0, false});
    /* Each says what happened. */
    const char *m1 = map(WECHAT_API_PHONE, WECHAT_HTTP_ERROR, 0).message;
    const char *m2 = map(WECHAT_API_PHONE, WECHAT_BAD_BODY, 0).message;
    const char *m3 = map(WECHAT_API_PHONE, WECHAT_CONNECT, 0).message;
    assert_string_not_equal(m1, m2);
    assert_string_not_equal(m1, m3);
    assert_string_not_equal(m2, m3);
}

/* Our own failure (out of memory reading WeChat's answer, a transfer we stopped) is never
 * blamed on WeChat, at any API, whatever errcode is beside it. */
static void test_map_internal_is_503_internal_retry(void **state)
{
    (void)state;
    static const enum wechat_api apis[] = {WECHAT_API_ANY, WECHAT_API_CODE2SESSION,
                                           WECHAT_API_TOKEN, WECHAT_API_PHONE,
                                           WECHAT_API_CHECKSESSION};
    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++) {
        check_map(apis[i], WECHAT_INTERNAL, 0,
                  &(struct want){503, "internal", "retry", false, 0, false});
        check_map(apis[i], WECHAT_INTERNAL, 40029,
                  &(struct want){503, "internal", "retry", false, 0, false});
    }
}

static void test_map_token_api_failures_are_503_retry(void **state)
{
    (void)state;
    static const enum wechat_status sts[] = {WECHAT_TIMEOUT, WECHAT_HTTP_ERROR, WECHAT_BAD_BODY,
                                             WECHAT_CONNECT};
    for (size_t j = 0; j < sizeof(sts) / sizeof(sts[0]); j++) {
        check_map(WECHAT_API_TOKEN, sts[j], 0,
                  &(struct want){503, "upstream_busy", "retry", false, 0, false});
        /* A stale errcode beside a transport failure is not an errcode. */
        check_map(WECHAT_API_TOKEN, sts[j], 40013,
                  &(struct want){503, "upstream_busy", "retry", false, 0, false});
    }
}

static void test_map_token_api_errcodes(void **state)
{
    (void)state;
    check_map(WECHAT_API_TOKEN, WECHAT_ERRCODE, 40001,
              &(struct want){500, "config_error", "none", true, 0, true});
    check_map(WECHAT_API_TOKEN, WECHAT_ERRCODE, 89506,
              &(struct want){500, "config_error", "none", true, 0, true});
    check_map(WECHAT_API_TOKEN, WECHAT_ERRCODE, 40097,
              &(struct want){503, "upstream_busy", "retry", true, 0, false});
    check_map(WECHAT_API_TOKEN, WECHAT_ERRCODE, -1,
              &(struct want){503, "upstream_busy", "retry", true, 0, false});
    check_map(WECHAT_API_TOKEN, WECHAT_ERRCODE, 45011,
              &(struct want){429, "rate_limited", "retry", true, 60, false});
}

static void test_map_errcode_takes_the_row(void **state)
{
    (void)state;
    for (size_t i = 0; i < wechat_nerrcodes; i++) {
        const struct wechat_errcode *r = &wechat_errcodes[i];
        if (r->errcode == WECHAT_EC_OTHER)
            continue;
        struct wechat_http_error e = map(r->api, WECHAT_ERRCODE, r->errcode);
        assert_int_equal(e.status, r->status);
        assert_string_equal(e.error, r->error);
        assert_string_equal(e.action, r->action);
        assert_string_equal(e.message, r->message);
        assert_int_equal(e.retry_after, r->retry_after);
        assert_true(e.has_errcode);
        assert_true(e.errcode == r->errcode);
        assert_int_equal(e.config, (r->flags & WECHAT_EC_CONFIG) != 0);
    }
}

static void test_map_45011_has_retry_after_60_at_every_api(void **state)
{
    (void)state;
    for (size_t i = 0; i < NAPIS; i++)
        check_map(all_apis[i], WECHAT_ERRCODE, 45011,
                  &(struct want){429, "rate_limited", "retry", true, 60, false});
}

static void test_map_token_rejected_at_user_apis(void **state)
{
    (void)state;
    check_map(WECHAT_API_PHONE, WECHAT_ERRCODE, 40001,
              &(struct want){503, "upstream_busy", "retry", true, 0, false});
    check_map(WECHAT_API_CHECKSESSION, WECHAT_ERRCODE, 42001,
              &(struct want){503, "upstream_busy", "retry", true, 0, false});
    check_map(WECHAT_API_PHONE, WECHAT_ERRCODE, 40029,
              &(struct want){400, "invalid_code", "none", true, 0, false});
    check_map(WECHAT_API_PHONE, WECHAT_ERRCODE, 40163,
              &(struct want){502, "upstream_error", "relogin", true, 0, false});
}

static void test_map_ok_is_internal_at_every_api(void **state)
{
    (void)state;
    for (size_t i = 0; i < NAPIS; i++)
        check_map(all_apis[i], WECHAT_OK, 0,
                  &(struct want){500, "internal", "retry", false, 0, false});
}

/* ---- the former tests/unit/test_upstream_error.c: code2session ---- */

static void check_c2s_errcode(long errcode, const struct want *w)
{
    check_map(WECHAT_API_CODE2SESSION, WECHAT_ERRCODE, errcode, w);
}

static void check_c2s_status(enum wechat_status status, const struct want *w)
{
    check_map(WECHAT_API_CODE2SESSION, status, 0, w);
}

static void test_c2s_errcode_minus1_is_503_busy_retry(void **state)
{
    (void)state;
    check_c2s_errcode(-1, &(struct want){503, "upstream_busy", "retry", true, 0, false});
}

static void test_c2s_errcode_40029_is_400_invalid_code_relogin(void **state)
{
    (void)state;
    check_c2s_errcode(40029, &(struct want){400, "invalid_code", "relogin", true, 0, false});
}

static void test_c2s_errcode_40163_is_400_code_used_relogin(void **state)
{
    (void)state;
    check_c2s_errcode(40163, &(struct want){400, "code_used", "relogin", true, 0, false});
}

static void test_c2s_errcode_40226_is_403_user_blocked_none(void **state)
{
    (void)state;
    check_c2s_errcode(40226, &(struct want){403, "user_blocked", "none", true, 0, false});
}

static void test_c2s_errcode_45011_is_429_rate_limited_retry_after_60(void **state)
{
    (void)state;
    check_c2s_errcode(45011, &(struct want){429, "rate_limited", "retry", true, 60, false});
}

static const long config_codes[] = {40013, 40125, 40243, 40164, 41002, 41004, 48001};
#define NCONFIG (sizeof(config_codes) / sizeof(config_codes[0]))

static void test_c2s_config_errcodes_are_500_config_error(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCONFIG; i++)
        check_c2s_errcode(config_codes[i],
                          &(struct want){500, "config_error", "none", true, 0, true});
}

static void test_c2s_config_errcodes_have_distinct_messages(void **state)
{
    (void)state;
    const char *msgs[NCONFIG];
    for (size_t i = 0; i < NCONFIG; i++) {
        msgs[i] = map(WECHAT_API_CODE2SESSION, WECHAT_ERRCODE, config_codes[i]).message;
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(msgs[i], msgs[j]);
    }
}

static void test_c2s_other_errcode_is_502_upstream_error_with_errcode(void **state)
{
    (void)state;
    check_c2s_errcode(40097, &(struct want){502, "upstream_error", "relogin", true, 0, false});
    check_c2s_errcode(1, &(struct want){502, "upstream_error", "relogin", true, 0, false});
    check_c2s_errcode(-2, &(struct want){502, "upstream_error", "relogin", true, 0, false});
}

static void test_c2s_timeout_is_504_relogin_without_errcode(void **state)
{
    (void)state;
    check_c2s_status(WECHAT_TIMEOUT,
                     &(struct want){504, "upstream_timeout", "relogin", false, 0, false});
}

static void test_c2s_http_error_is_502_relogin_without_errcode(void **state)
{
    (void)state;
    check_c2s_status(WECHAT_HTTP_ERROR,
                     &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

static void test_c2s_bad_body_is_502_relogin_without_errcode(void **state)
{
    (void)state;
    check_c2s_status(WECHAT_BAD_BODY,
                     &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

static void test_c2s_connect_is_502_relogin_without_errcode(void **state)
{
    (void)state;
    check_c2s_status(WECHAT_CONNECT,
                     &(struct want){502, "upstream_error", "relogin", false, 0, false});
}

/* A stale errcode in a transport failure must not leak into the mapping. */
static void test_c2s_transport_failure_ignores_stale_errcode(void **state)
{
    (void)state;
    check_map(WECHAT_API_CODE2SESSION, WECHAT_CONNECT, 40029,
              &(struct want){502, "upstream_error", "relogin", false, 0, false});
    check_map(WECHAT_API_CODE2SESSION, WECHAT_TIMEOUT, 45011,
              &(struct want){504, "upstream_timeout", "relogin", false, 0, false});
}

static void test_c2s_ok_is_not_an_upstream_error(void **state)
{
    (void)state;
    check_c2s_status(WECHAT_OK, &(struct want){500, "internal", "retry", false, 0, false});
}

/* ---- the docs check ---- */

enum { COL_ERRCODE, COL_API, COL_STATUS, COL_ERROR, COL_ACTION, COL_HANDLING, COL_MESSAGE, NCOLS };
static const char *const col_names[NCOLS] = {"errcode", "API",      "status", "error",
                                             "action",  "handling", "message"};

#define CELL_MAX 512
#define ROWS_MAX 256

struct docs_row {
    int line; /* in the docs text, from 1 */
    char cell[NCOLS][CELL_MAX];
};

struct docs_table {
    struct docs_row rows[ROWS_MAX];
    size_t n;
};

/* What the check found: every problem, one per line. */
struct report {
    char text[16384];
    size_t len;
    int count;
};

static void report_add(struct report *rep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void report_add(struct report *rep, const char *fmt, ...)
{
    rep->count++;
    if (rep->len >= sizeof(rep->text) - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(rep->text + rep->len, sizeof(rep->text) - rep->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    rep->len += (size_t)n;
    if (rep->len >= sizeof(rep->text) - 1)
        rep->len = sizeof(rep->text) - 1;
    else
        rep->text[rep->len++] = '\n';
    rep->text[rep->len] = '\0';
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    size_t i = 0;
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    memmove(s, s + i, n - i + 1);
}

/* Splits "| a | b |" (len bytes, no newline) into trimmed cells, unescaping "\|". Returns the
 * number of cells, or -1 when it is not a table row or a cell is too long. */
static int split_row(const char *line, size_t len, char cells[][CELL_MAX], int max)
{
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\r'))
        len--;
    if (len < 2 || line[0] != '|' || line[len - 1] != '|' || line[len - 2] == '\\')
        return -1;
    int n = 0;
    size_t k = 0;
    char cur[CELL_MAX];
    for (size_t i = 1; i < len; i++) {
        if (line[i] == '\\' && i + 1 < len && line[i + 1] == '|') {
            if (k + 1 >= sizeof(cur))
                return -1;
            cur[k++] = '|';
            i++;
            continue;
        }
        if (line[i] == '|') {
            cur[k] = '\0';
            if (n < max) {
                trim(cur);
                memcpy(cells[n], cur, strlen(cur) + 1);
            }
            n++;
            k = 0;
            continue;
        }
        if (k + 1 >= sizeof(cur))
            return -1;
        cur[k++] = line[i];
    }
    return n;
}

/*
 * Reads the table between the errcode-table markers of text: the header row (checked: the
 * columns this test knows, in this order), the separator row, then the data rows. Problems go
 * to rep; returns 0 when the table could be read.
 */
static int docs_parse(const char *text, struct docs_table *tab, struct report *rep)
{
    tab->n = 0;
    const char *begin = strstr(text, TABLE_BEGIN);
    const char *end = strstr(text, TABLE_END);
    if (begin == NULL || end == NULL || end < begin) {
        report_add(rep, "docs: no table between \"%s\" and \"%s\"", TABLE_BEGIN, TABLE_END);
        return -1;
    }
    int line = 1;
    for (const char *c = text; c < begin; c++)
        line += *c == '\n';
    const char *p = strchr(begin, '\n');
    int seen = 0; /* lines of the table read so far */
    while (p != NULL && p + 1 < end) {
        p++;
        line++;
        const char *eol = strchr(p, '\n');
        if (eol == NULL || eol > end)
            eol = end;
        size_t len = (size_t)(eol - p);
        char cells[NCOLS + 1][CELL_MAX];
        int n = split_row(p, len, cells, NCOLS + 1);
        if (n != NCOLS) {
            report_add(rep, "docs line %d: not a table row of %d columns (%d cells): \"%.*s\"",
                       line, NCOLS, n, (int)len, p);
            return -1;
        }
        if (seen == 0) {
            for (int c = 0; c < NCOLS; c++)
                if (strcmp(cells[c], col_names[c]) != 0) {
                    report_add(rep, "docs line %d: header column %d is \"%s\", expected \"%s\"",
                               line, c + 1, cells[c], col_names[c]);
                    return -1;
                }
        } else if (seen == 1) {
            for (int c = 0; c < NCOLS; c++)
                if (cells[c][0] == '\0' || strspn(cells[c], "-:") != strlen(cells[c])) {
                    report_add(rep, "docs line %d: not the separator row", line);
                    return -1;
                }
        } else {
            if (tab->n == ROWS_MAX) {
                report_add(rep, "docs line %d: more than %d rows", line, ROWS_MAX);
                return -1;
            }
            struct docs_row *r = &tab->rows[tab->n++];
            r->line = line;
            memcpy(r->cell, cells, sizeof(r->cell));
        }
        seen++;
        p = eol;
    }
    if (seen < 2) {
        report_add(rep, "docs: the errcode table has no header and separator rows");
        return -1;
    }
    return 0;
}

/* The errcode column as a number; false when it is neither a number nor `other`. */
static bool docs_errcode(const char *cell, long *out)
{
    if (strcmp(cell, "other") == 0) {
        *out = WECHAT_EC_OTHER;
        return true;
    }
    if (cell[0] == '\0')
        return false;
    char *endp;
    long v = strtol(cell, &endp, 10);
    if (*endp != '\0' || v == WECHAT_EC_OTHER)
        return false;
    *out = v;
    return true;
}

static void key_text(long errcode, enum wechat_api api, char *buf, size_t size)
{
    if (errcode == WECHAT_EC_OTHER)
        snprintf(buf, size, "other/%s", wechat_api_name(api));
    else
        snprintf(buf, size, "%ld/%s", errcode, wechat_api_name(api));
}

static void expect_text(const char *s, bool quote, char *buf, size_t size)
{
    if (s[0] == '\0')
        snprintf(buf, size, "%s", NONE);
    else if (quote)
        snprintf(buf, size, "`%s`", s);
    else
        snprintf(buf, size, "%s", s);
}

#define HANDLING_MAX 8

/* The handling column the C row calls for, as a set of items. */
static int expected_handling(const struct wechat_errcode *r, char items[][32])
{
    int n = 0;
    if (r->flags & WECHAT_EC_RETRYABLE)
        snprintf(items[n++], 32, "retried");
    if (r->flags & WECHAT_EC_FINAL)
        snprintf(items[n++], 32, "final");
    if (r->flags & WECHAT_EC_TOKEN_REJECTED)
        snprintf(items[n++], 32, "token-rejected");
    if (r->flags & WECHAT_EC_CONFIG)
        snprintf(items[n++], 32, "config");
    if (r->retry_after != 0)
        snprintf(items[n++], 32, "retry-after %u", r->retry_after);
    return n;
}

static bool in_set(char items[][32], int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (strcmp(items[i], s) == 0)
            return true;
    return false;
}

static void compare_handling(const char *key, const struct docs_row *d,
                             const struct wechat_errcode *r, struct report *rep)
{
    const unsigned known =
        WECHAT_EC_RETRYABLE | WECHAT_EC_FINAL | WECHAT_EC_TOKEN_REJECTED | WECHAT_EC_CONFIG;
    if (r->flags & ~known)
        report_add(rep, "row %s: column handling: the code has flags 0x%x the docs cannot show",
                   key, r->flags & ~known);
    char want[HANDLING_MAX][32], have[HANDLING_MAX][32];
    int nwant = expected_handling(r, want), nhave = 0;
    const char *cell = d->cell[COL_HANDLING];
    if (cell[0] == '\0') {
        report_add(rep, "row %s (docs line %d): column handling: empty (write %s for none)", key,
                   d->line, NONE);
    } else if (strcmp(cell, NONE) != 0) {
        char buf[CELL_MAX];
        snprintf(buf, sizeof(buf), "%s", cell);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
            char item[CELL_MAX];
            snprintf(item, sizeof(item), "%s", tok);
            trim(item);
            if (strlen(item) >= 32 || nhave == HANDLING_MAX) {
                report_add(rep, "row %s (docs line %d): column handling: \"%s\" is no item", key,
                           d->line, item);
                continue;
            }
            if (in_set(have, nhave, item))
                report_add(rep, "row %s (docs line %d): column handling: \"%s\" twice", key,
                           d->line, item);
            memcpy(have[nhave++], item, strlen(item) + 1); /* checked: under 32 */
        }
    }
    for (int i = 0; i < nhave; i++)
        if (!in_set(want, nwant, have[i]))
            report_add(rep,
                       "row %s (docs line %d): column handling: docs say \"%s\", the code does not",
                       key, d->line, have[i]);
    for (int i = 0; i < nwant; i++)
        if (!in_set(have, nhave, want[i]))
            report_add(rep,
                       "row %s (docs line %d): column handling: the code says \"%s\", docs do not",
                       key, d->line, want[i]);
}

static void compare_cell(const char *key, const struct docs_row *d, int col, const char *want,
                         struct report *rep)
{
    if (strcmp(d->cell[col], want) != 0)
        report_add(rep, "row %s (docs line %d): column %s: docs say \"%s\", the code \"%s\"", key,
                   d->line, col_names[col], d->cell[col], want);
}

static void compare_row(const struct docs_row *d, const struct wechat_errcode *r,
                        struct report *rep)
{
    char key[64], want[CELL_MAX];
    key_text(r->errcode, r->api, key, sizeof(key));
    snprintf(want, sizeof(want), "%u", r->status);
    compare_cell(key, d, COL_STATUS, want, rep);
    expect_text(r->error, true, want, sizeof(want));
    compare_cell(key, d, COL_ERROR, want, rep);
    expect_text(r->action, false, want, sizeof(want));
    compare_cell(key, d, COL_ACTION, want, rep);
    compare_handling(key, d, r, rep);
    expect_text(r->message, false, want, sizeof(want));
    compare_cell(key, d, COL_MESSAGE, want, rep);
}

/* Does docs row d name the C row r (errcode and API)? */
static bool same_key(const struct docs_row *d, const struct wechat_errcode *r)
{
    long ec;
    return docs_errcode(d->cell[COL_ERRCODE], &ec) && ec == r->errcode &&
           strcmp(d->cell[COL_API], wechat_api_name(r->api)) == 0;
}

/* Compares the docs table with wechat_errcodes[] both ways. Returns the number of problems. */
static int docs_compare(const struct docs_table *tab, struct report *rep)
{
    int before = rep->count;
    if (tab->n != wechat_nerrcodes)
        report_add(rep, "docs: %zu rows, wechat_errcodes[]: %zu", tab->n, wechat_nerrcodes);
    for (size_t i = 0; i < wechat_nerrcodes; i++) {
        const struct wechat_errcode *r = &wechat_errcodes[i];
        char key[64];
        key_text(r->errcode, r->api, key, sizeof(key));
        const struct docs_row *match = NULL;
        int matches = 0;
        for (size_t j = 0; j < tab->n; j++)
            if (same_key(&tab->rows[j], r)) {
                matches++;
                if (match == NULL)
                    match = &tab->rows[j];
            }
        if (matches == 0) {
            report_add(rep,
                       "row %s (wechat_errcodes[%zu]): no docs row with this errcode and API "
                       "(columns errcode, API)",
                       key, i);
            continue;
        }
        if (matches > 1)
            report_add(rep, "row %s: %d docs rows with this errcode and API (columns errcode, API)",
                       key, matches);
        compare_row(match, r, rep);
    }
    for (size_t j = 0; j < tab->n; j++) {
        const struct docs_row *d = &tab->rows[j];
        long ec;
        if (!docs_errcode(d->cell[COL_ERRCODE], &ec)) {
            report_add(rep,
                       "docs line %d: column errcode: \"%s\" is neither a number nor \"other\"",
                       d->line, d->cell[COL_ERRCODE]);
            continue;
        }
        bool found = false;
        for (size_t i = 0; i < wechat_nerrcodes && !found; i++)
            found = same_key(d, &wechat_errcodes[i]);
        if (!found)
            report_add(rep,
                       "docs line %d (%s/%s): no row of wechat_errcodes[] has this errcode and "
                       "API (columns errcode, API)",
                       d->line, d->cell[COL_ERRCODE], d->cell[COL_API]);
    }
    return rep->count - before;
}

/* The whole check on a docs text: the number of problems, described in rep. */
static int docs_check(const char *text, struct report *rep)
{
    struct docs_table *tab = calloc(1, sizeof(*tab));
    assert_non_null(tab);
    int problems = docs_parse(text, tab, rep) != 0 ? rep->count : docs_compare(tab, rep);
    free(tab);
    return problems;
}

static char *read_docs(void)
{
    FILE *fp = fopen(DOCS_PATH, "rb");
    if (fp == NULL)
        fail_msg("cannot open %s (run from tests/unit)", DOCS_PATH);
    char *buf = malloc(DOCS_MAX + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, DOCS_MAX + 1, fp);
    fclose(fp);
    assert_true(n <= DOCS_MAX);
    buf[n] = '\0';
    return buf;
}

static void test_docs_table_matches_the_code(void **state)
{
    (void)state;
    char *text = read_docs();
    struct report rep = {0};
    int problems = docs_check(text, &rep);
    free(text);
    if (problems != 0)
        fail_msg("docs/api.md's errcode table and src/wechat/errcode.c differ (%d):\n%s", problems,
                 rep.text);
}

/* ---- planting differences in a copy of the docs ---- */

/* The start of line `line` (from 1) in text, and its length. */
static const char *find_line(const char *text, int line, size_t *len)
{
    const char *p = text;
    for (int i = 1; i < line; i++) {
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    const char *eol = strchr(p, '\n');
    *len = eol != NULL ? (size_t)(eol - p) : strlen(p);
    return p;
}

/* A copy of text with line `line` replaced by repl (NULL: deleted; insert: repl goes before it
 * and the line stays). */
static char *edit_line(const char *text, int line, const char *repl, bool insert)
{
    size_t len;
    const char *p = find_line(text, line, &len);
    size_t head = (size_t)(p - text);
    const char *tail = insert ? p : p + len + (p[len] == '\n' ? 1 : 0);
    size_t rlen = repl != NULL ? strlen(repl) + 1 : 0;
    char *out = malloc(head + rlen + strlen(tail) + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    if (repl != NULL) {
        memcpy(out + head, repl, rlen - 1);
        out[head + rlen - 1] = '\n';
    }
    strcpy(out + head + rlen, tail);
    return out;
}

static void render_row(char cells[][CELL_MAX], char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int c = 0; c < NCOLS; c++)
        n += (size_t)snprintf(buf + n, size - n, "| %s ", cells[c]);
    snprintf(buf + n, size - n, "|");
}

/* The parsed table of the real docs (asserting it parses). */
static struct docs_table *parse_real(const char *text)
{
    struct docs_table *tab = calloc(1, sizeof(*tab));
    assert_non_null(tab);
    struct report rep = {0};
    if (docs_parse(text, tab, &rep) != 0)
        fail_msg("%s", rep.text);
    assert_int_equal(tab->n, wechat_nerrcodes);
    return tab;
}

/* A copy of text with cell (row, col) of the table set to value. */
static char *plant_cell(const char *text, const struct docs_table *tab, size_t row, int col,
                        const char *value)
{
    char cells[NCOLS][CELL_MAX];
    memcpy(cells, tab->rows[row].cell, sizeof(cells));
    snprintf(cells[col], CELL_MAX, "%s", value);
    char line[NCOLS * CELL_MAX + 64];
    render_row(cells, line, sizeof(line));
    return edit_line(text, tab->rows[row].line, line, false);
}

/* Checks a planted copy: the check must fail, and its report mention every string of want. */
static void expect_detected(char *planted, const char *what, const char *const *want, size_t n)
{
    struct report rep = {0};
    int problems = docs_check(planted, &rep);
    free(planted);
    if (problems == 0)
        fail_msg("planted difference not detected: %s", what);
    for (size_t i = 0; i < n; i++)
        if (strstr(rep.text, want[i]) == NULL)
            fail_msg("planted difference %s: the report does not name \"%s\":\n%s", what, want[i],
                     rep.text);
}

static void test_docs_check_detects_every_changed_cell(void **state)
{
    (void)state;
    char *text = read_docs();
    struct docs_table *tab = parse_real(text);
    /* Unchanged cells re-rendered: still no difference (the planting itself is sound). */
    for (size_t row = 0; row < tab->n; row++) {
        char *same = plant_cell(text, tab, row, COL_MESSAGE, tab->rows[row].cell[COL_MESSAGE]);
        struct report rep = {0};
        int problems = docs_check(same, &rep);
        free(same);
        if (problems != 0)
            fail_msg("re-rendered docs row %zu differs:\n%s", row, rep.text);
    }
    for (size_t row = 0; row < tab->n; row++) {
        char key[64];
        snprintf(key, sizeof(key), "%s/%s", tab->rows[row].cell[COL_ERRCODE],
                 tab->rows[row].cell[COL_API]);
        for (int col = 0; col < NCOLS; col++) {
            char value[CELL_MAX + 2], what[CELL_MAX + 256];
            snprintf(value, sizeof(value), "%sx", tab->rows[row].cell[col]);
            snprintf(what, sizeof(what), "row %s column %s = \"%s\"", key, col_names[col], value);
            const char *want[] = {key, col_names[col]};
            expect_detected(plant_cell(text, tab, row, col, value), what, want, 2);
        }
    }
    free(tab);
    free(text);
}

/* Finds the docs row errcode/api; fails when the docs have none. */
static size_t row_of(const struct docs_table *tab, const char *errcode, const char *api)
{
    for (size_t i = 0; i < tab->n; i++)
        if (strcmp(tab->rows[i].cell[COL_ERRCODE], errcode) == 0 &&
            strcmp(tab->rows[i].cell[COL_API], api) == 0)
            return i;
    fail_msg("docs have no row %s/%s", errcode, api);
    return 0;
}

static void test_docs_check_detects_planted_differences(void **state)
{
    (void)state;
    char *text = read_docs();
    struct docs_table *tab = parse_real(text);
    struct plant {
        const char *errcode, *api;
        int col;
        const char *value;
        const char *want[2];
    } plants[] = {
        {"45011", "any", COL_STATUS, "428", {"45011/any", "status"}},
        {"45011", "any", COL_HANDLING, "retry-after 30", {"45011/any", "handling"}},
        {"45011", "any", COL_HANDLING, NONE, {"45011/any", "handling"}},
        {"-1", "any", COL_HANDLING, "retried, final", {"-1/any", "handling"}},
        {"-1", "any", COL_HANDLING, "retried, retried", {"-1/any", "handling"}},
        {"40029", "code2session", COL_HANDLING, NONE, {"40029/code2session", "handling"}},
        {"40029", "code2session", COL_ACTION, "none", {"40029/code2session", "action"}},
        {"40029",
         "getuserphonenumber",
         COL_API,
         "code2session",
         {"40029/getuserphonenumber", "API"}},
        {"40001", "token", COL_HANDLING, "config, token-rejected", {"40001/token", "handling"}},
        {"40001", "token", COL_STATUS, "503", {"40001/token", "status"}},
        {"87009", "checksession", COL_ERROR, "``", {"87009/checksession", "error"}},
        {"87009", "checksession", COL_ACTION, "", {"87009/checksession", "action"}},
        {"40013", "any", COL_ERROR, "config_error", {"40013/any", "error"}},
        {"40013",
         "any",
         COL_MESSAGE,
         "the service's WeChat app id is invalid.",
         {"40013/any", "message"}},
        {"other", "any", COL_ERRCODE, "0", {"other/any", "errcode"}},
        {"other", "token", COL_STATUS, "502", {"other/token", "status"}},
    };
    for (size_t i = 0; i < sizeof(plants) / sizeof(plants[0]); i++) {
        const struct plant *p = &plants[i];
        char what[128];
        snprintf(what, sizeof(what), "%s/%s %s = \"%s\"", p->errcode, p->api, col_names[p->col],
                 p->value);
        size_t row = row_of(tab, p->errcode, p->api);
        expect_detected(plant_cell(text, tab, row, p->col, p->value), what, p->want, 2);
    }

    /* A row missing, a row twice, a row the code does not have. */
    size_t row = row_of(tab, "40163", "code2session");
    int line = tab->rows[row].line;
    expect_detected(edit_line(text, line, NULL, false), "40163/code2session deleted",
                    (const char *[]){"40163/code2session", "errcode"}, 2);
    size_t len;
    const char *p = find_line(text, line, &len);
    char dup[NCOLS * CELL_MAX + 64];
    snprintf(dup, sizeof(dup), "%.*s", (int)len, p);
    expect_detected(edit_line(text, line, dup, true), "40163/code2session twice",
                    (const char *[]){"40163/code2session", "rows"}, 2);
    expect_detected(edit_line(text, line,
                              "| 40164 | code2session | 500 | `config_error` | none | config | "
                              "the service's IP is not whitelisted at WeChat |",
                              true),
                    "a row 40164/code2session the code lacks",
                    (const char *[]){"40164/code2session", "errcode"}, 2);
    free(tab);
    free(text);
}

static void test_docs_check_rejects_a_broken_table(void **state)
{
    (void)state;
    static const char *const broken[] = {
        "no table here\n",
        "<!-- errcode-table:begin -->\n| errcode | API | status | error | action | handling | "
        "message |\n|---|---|---|---|---|---|---|\n",
        "<!-- errcode-table:end -->\n<!-- errcode-table:begin -->\n",
        "<!-- errcode-table:begin -->\n<!-- errcode-table:end -->\n",
        "<!-- errcode-table:begin -->\n| errcode | api | status | error | action | handling | "
        "message |\n|---|---|---|---|---|---|---|\n<!-- errcode-table:end -->\n",
        "<!-- errcode-table:begin -->\n| errcode | API | status | error | action | handling | "
        "message |\n| errcode | API | status | error | action | handling | message |\n"
        "<!-- errcode-table:end -->\n",
        "<!-- errcode-table:begin -->\n| errcode | API | status | error | action | handling | "
        "message |\n|---|---|---|---|---|---|---|\n| -1 | any | 503 | `upstream_busy` | retry "
        "| retried |\n<!-- errcode-table:end -->\n",
        "<!-- errcode-table:begin -->\n| errcode | API | status | error | action | handling | "
        "message |\n|---|---|---|---|---|---|---|\n\n<!-- errcode-table:end -->\n",
    };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        struct report rep = {0};
        if (docs_check(broken[i], &rep) == 0)
            fail_msg("broken table %zu not reported", i);
    }
    /* A table of the right shape but no rows: every C row is missing. */
    struct report rep = {0};
    int problems = docs_check("<!-- errcode-table:begin -->\n| errcode | API | status | error | "
                              "action | handling | message |\n|---|---|---|---|---|---|---|\n"
                              "<!-- errcode-table:end -->\n",
                              &rep);
    assert_int_equal(problems, (int)wechat_nerrcodes + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_api_row_before_any_row),
        cmocka_unit_test(test_find_40029_depends_on_the_api),
        cmocka_unit_test(test_find_any_row_before_the_apis_other_row),
        cmocka_unit_test(test_find_unknown_errcode),
        cmocka_unit_test(test_find_87009_only_at_checksession),
        cmocka_unit_test(test_find_every_row_finds_itself),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_table_is_well_formed),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_map_timeout_is_504_relogin),
        cmocka_unit_test(test_map_transport_failures_are_502_relogin),
        cmocka_unit_test(test_map_internal_is_503_internal_retry),
        cmocka_unit_test(test_map_token_api_failures_are_503_retry),
        cmocka_unit_test(test_map_token_api_errcodes),
        cmocka_unit_test(test_map_errcode_takes_the_row),
        cmocka_unit_test(test_map_45011_has_retry_after_60_at_every_api),
        cmocka_unit_test(test_map_token_rejected_at_user_apis),
        cmocka_unit_test(test_map_ok_is_internal_at_every_api),
        cmocka_unit_test(test_c2s_errcode_minus1_is_503_busy_retry),
        cmocka_unit_test(test_c2s_errcode_40029_is_400_invalid_code_relogin),
        cmocka_unit_test(test_c2s_errcode_40163_is_400_code_used_relogin),
        cmocka_unit_test(test_c2s_errcode_40226_is_403_user_blocked_none),
        cmocka_unit_test(test_c2s_errcode_45011_is_429_rate_limited_retry_after_60),
        cmocka_unit_test(test_c2s_config_errcodes_are_500_config_error),
        cmocka_unit_test(test_c2s_config_errcodes_have_distinct_messages),
        cmocka_unit_test(test_c2s_other_errcode_is_502_upstream_error_with_errcode),
        cmocka_unit_test(test_c2s_timeout_is_504_relogin_without_errcode),
        cmocka_unit_test(test_c2s_http_error_is_502_relogin_without_errcode),
        cmocka_unit_test(test_c2s_bad_body_is_502_relogin_without_errcode),
        cmocka_unit_test(test_c2s_connect_is_502_relogin_without_errcode),
        cmocka_unit_test(test_c2s_transport_failure_ignores_stale_errcode),
        cmocka_unit_test(test_c2s_ok_is_not_an_upstream_error),
        cmocka_unit_test(test_docs_table_matches_the_code),
        cmocka_unit_test(test_docs_check_detects_every_changed_cell),
        cmocka_unit_test(test_docs_check_detects_planted_differences),
        cmocka_unit_test(test_docs_check_rejects_a_broken_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
