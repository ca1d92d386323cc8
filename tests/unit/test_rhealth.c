/*
 * Unit tests for redis/rhealth.h (the short names of failures, command identities, the lines
 * each change of state writes) and for the user name in redis/rconn.h's URLs.
 *
 * Log lines are captured by pointing STDERR_FILENO at a temp file; no cmocka assertion runs
 * while it is redirected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "redis/rconn.h"
#include "redis/rhealth.h"

static void reason_is(const char *detail, bool redis_error, const char *want)
{
    char got[RHEALTH_REASON_MAX];
    rhealth_reason(detail, redis_error, got);
    assert_string_equal(got, want);
}

static void test_reasons_of_redis_errors(void **state)
{
    (void)state;
    reason_is("WRONGPASS invalid username-password pair or user is disabled.", true, "WRONGPASS");
    reason_is("NOAUTH Authentication required.", true, "NOAUTH");
    reason_is("MISCONF Redis is configured to save RDB snapshots", true, "MISCONF");
    reason_is("READONLY You can't write against a read only replica.", true, "READONLY");
    reason_is("OOM command not allowed when used memory > 'maxmemory'.", true, "OOM");
    reason_is("NOPERM this user has no permissions to run the 'evalsha' command", true, "NOPERM");
    reason_is("Error in something", true, "ERR"); /* no upper-case code word */
    reason_is("", true, "ERR");
}

static void test_reasons_of_connection_errors(void **state)
{
    (void)state;
    reason_is(strerror(ECONNREFUSED), false, "ECONNREFUSED");
    reason_is(strerror(ENOENT), false, "ENOENT");
    reason_is("connect timed out", false, "ETIMEDOUT");
    reason_is("command timed out", false, "ETIMEDOUT");
    reason_is(gai_strerror(EAI_NONAME), false, "EAI_NONAME");
    reason_is(gai_strerror(EAI_AGAIN), false, "EAI_AGAIN");
    reason_is("something else", false, "ERROR");
}

static void test_command_ids(void **state)
{
    (void)state;
    uint32_t get = rhealth_cmd_id("HGET", 4, "k", 1);
    assert_int_not_equal(get, 0);
    assert_int_equal(get, rhealth_cmd_id("HGET", 4, "other key", 9)); /* the name alone */
    uint32_t a = rhealth_cmd_id("EVALSHA", 7, "aaaa", 4),
             b = rhealth_cmd_id("EVALSHA", 7, "bbbb", 4);
    assert_int_not_equal(a, b); /* each script its own */
    assert_int_equal(a, rhealth_cmd_id("EVALSHA", 7, "aaaa", 4));
}

/* ---- the lines ---- */

static char g_path[64];
static int g_fd = -1, g_saved = -1;

static void capture_begin(void)
{
    strcpy(g_path, "/tmp/wxlogin-test-rhealth-XXXXXX");
    g_fd = mkstemp(g_path);
    assert_true(g_fd >= 0);
    fflush(stderr);
    g_saved = dup(STDERR_FILENO);
    dup2(g_fd, STDERR_FILENO);
}

/* The captured text (malloc'ed). */
static char *capture_end(void)
{
    dup2(g_saved, STDERR_FILENO);
    close(g_saved);
    off_t size = lseek(g_fd, 0, SEEK_END);
    char *out = malloc((size_t)size + 1);
    assert_non_null(out);
    assert_int_equal(pread(g_fd, out, (size_t)size, 0), size);
    out[size] = '\0';
    close(g_fd);
    unlink(g_path);
    return out;
}

static size_t count(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(text, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

static void test_one_line_per_change(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct rhealth *h = rhealth_new("redis://***@db:6379/0");
    assert_non_null(h);
    struct rhealth_conn c1 = {0}, c2 = {0};
    uint32_t write = rhealth_cmd_id("EVALSHA", 7, "w", 1), read = rhealth_cmd_id("GET", 3, "", 0);

    capture_begin();
    rhealth_reply_ok(h, read); /* ok: nothing */
    rhealth_conn_failed(h, &c1, strerror(ECONNREFUSED), false);
    rhealth_conn_failed(h, &c1, strerror(ECONNREFUSED), false); /* its next attempt */
    rhealth_conn_failed(h, &c2, strerror(ECONNREFUSED), false); /* another worker */
    rhealth_conn_ready(h, &c1);                                 /* c2 still down */
    rhealth_conn_ready(h, &c2);                                 /* recovered */
    rhealth_conn_ready(h, &c2);                                 /* nothing */
    rhealth_reply_error(h, write, "OOM command not allowed");
    rhealth_reply_ok(h, read); /* a read succeeds: still failing */
    rhealth_reply_error(h, write, "OOM command not allowed");
    rhealth_reply_ok(h, write); /* recovered */
    char *out = capture_end();

    assert_int_equal(count(out, "\"msg\":\"store failing\""), 2);
    assert_int_equal(count(out, "\"msg\":\"store recovered\""), 2);
    assert_int_equal(count(out, "\"reason\":\"ECONNREFUSED\""), 1);
    assert_int_equal(count(out, "\"reason\":\"OOM\""), 1);
    assert_int_equal(count(out, "\"after\":\"ECONNREFUSED\""), 1);
    assert_int_equal(count(out, "\"after\":\"OOM\""), 1);
    assert_non_null(strstr(out, "\"store\":\"redis://***@db:6379/0\""));
    /* the order: failing, recovered, failing, recovered */
    const char *f1 = strstr(out, "store failing"), *r1 = strstr(out, "store recovered");
    assert_true(f1 < r1 && strstr(r1, "store failing") != NULL);
    free(out);
    rhealth_free(h);
}

static void test_reason_change_is_a_line(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct rhealth *h = rhealth_new("redis://db:6379/0");
    struct rhealth_conn c = {0};
    capture_begin();
    rhealth_conn_failed(h, &c, "command timed out", false);
    rhealth_conn_failed(h, &c, strerror(ECONNREFUSED), false);
    rhealth_conn_failed(h, &c, strerror(ECONNREFUSED), false);
    char *out = capture_end();
    assert_int_equal(count(out, "store failing"), 2);
    assert_non_null(strstr(out, "\"reason\":\"ETIMEDOUT\""));
    assert_non_null(strstr(out, "\"reason\":\"ECONNREFUSED\""));
    free(out);
    rhealth_free(h);
}

/* ---- URLs ---- */

static void test_url_user_and_password(void **state)
{
    (void)state;
    struct rconn_opts o;
    char err[RCONN_ERR_MAX];
    assert_int_equal(rconn_parse_url("redis://alice:s%40cret@db:6380/2", &o, err), 0);
    assert_string_equal(o.user, "alice");
    assert_string_equal(o.password, "s@cret");
    assert_string_equal(o.host, "db");
    assert_int_equal(o.port, 6380);
    assert_int_equal(o.db, 2);
    rconn_opts_done(&o);

    assert_int_equal(rconn_parse_url("redis://:pw@db/1", &o, err), 0);
    assert_null(o.user); /* the default user */
    assert_string_equal(o.password, "pw");
    rconn_opts_done(&o);

    assert_int_equal(rconn_parse_url("redis://db", &o, err), 0);
    assert_null(o.user);
    assert_null(o.password);
    rconn_opts_done(&o);

    /* a user without a password: refused, and the message quotes nothing of the URL */
    assert_int_equal(rconn_parse_url("redis://Secretish@db/1", &o, err), -1);
    assert_non_null(strstr(err, "needs its password"));
    assert_null(strstr(err, "Secretish"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reasons_of_redis_errors),
        cmocka_unit_test(test_reasons_of_connection_errors),
        cmocka_unit_test(test_command_ids),
        cmocka_unit_test(test_one_line_per_change),
        cmocka_unit_test(test_reason_change_is_a_line),
        cmocka_unit_test(test_url_user_and_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
