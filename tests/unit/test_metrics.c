/*
 * Unit tests for metrics/metrics.h: nothing is counted while metrics are off; counts made on
 * several threads (each with its own shard, and threads without one) add up exactly in a
 * render; histogram buckets are cumulative with the right sum and count; statuses, routes and
 * errcodes outside the known sets are counted as "other".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/server.h"
#include "metrics/metrics.h"

static void nop(struct http_request *req, void *arg)
{
    (void)req;
    (void)arg;
}

static const struct http_route routes[] = {
    {"POST", "/openid", nop},
    {"GET", "/v1/session", nop},
};

/* The value of the sample line that starts with prefix (followed by a space), or -1. */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

static char *render(void)
{
    size_t len = 0;
    char *text = metrics_render(&len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_off_counts_nothing(void **state)
{
    (void)state;
    assert_false(metrics_enabled());
    metrics_http_request(0, 200, 10);
    metrics_cache_lookup(true);
    assert_int_equal(metrics_thread_attach(), 0);
    size_t len;
    assert_null(metrics_render(&len));
}

#define PER_THREAD 100000

static void *worker(void *arg)
{
    bool attach = *(bool *)arg;
    if (attach)
        assert_int_equal(metrics_thread_attach(), 0);
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_http_request(1, 200, 150); /* the 250 µs bucket */
        metrics_cache_lookup(i % 4 != 0);
    }
    return NULL;
}

static void test_threads_add_up_exactly(void **state)
{
    (void)state;
    assert_int_equal(metrics_start(routes, 2), 0);
    pthread_t t[4];
    bool attach[4] = {true, true, true, false}; /* the last counts into the shared shard */
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &attach[i]), 0);
    /* Scrapes while they count: never more than what was counted. */
    for (int i = 0; i < 20; i++) {
        char *text = render();
        double v = sample(text, "wxlogin_http_requests_total{method=\"GET\",route=\"/v1/session\","
                                "status=\"200\"}");
        assert_true(v <= 4.0 * PER_THREAD);
        free(text);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *text = render();
    assert_true(sample(text, "wxlogin_http_requests_total{method=\"GET\",route=\"/v1/session\","
                             "status=\"200\"}") == 4.0 * PER_THREAD);
    assert_true(sample(text, "wxlogin_session_cache_lookups_total{result=\"hit\"}") ==
                4.0 * PER_THREAD * 3 / 4);
    assert_true(sample(text, "wxlogin_session_cache_lookups_total{result=\"miss\"}") ==
                4.0 * PER_THREAD / 4);
    /* 150 µs: not in the 100 µs bucket, in every one from 250 µs on */
    assert_true(sample(text, "wxlogin_http_request_duration_seconds_bucket{method=\"GET\",route="
                             "\"/v1/session\",le=\"0.0001\"}") == 0);
    assert_true(sample(text, "wxlogin_http_request_duration_seconds_bucket{method=\"GET\",route="
                             "\"/v1/session\",le=\"0.00025\"}") == 4.0 * PER_THREAD);
    assert_true(sample(text, "wxlogin_http_request_duration_seconds_bucket{method=\"GET\",route="
                             "\"/v1/session\",le=\"+Inf\"}") == 4.0 * PER_THREAD);
    assert_true(sample(text, "wxlogin_http_request_duration_seconds_count{method=\"GET\",route="
                             "\"/v1/session\"}") == 4.0 * PER_THREAD);
    double sum = sample(text, "wxlogin_http_request_duration_seconds_sum{method=\"GET\",route="
                              "\"/v1/session\"}");
    assert_true(sum > 4.0 * PER_THREAD * 150e-6 - 1e-3 && sum < 4.0 * PER_THREAD * 150e-6 + 1e-3);
    /* a route never used has no series */
    assert_null(strstr(text, "route=\"/openid\""));
    free(text);
    metrics_stop();
    assert_false(metrics_enabled());
}

static void test_others_and_build_info(void **state)
{
    (void)state;
    assert_int_equal(metrics_start(routes, 2), 0);
    metrics_http_request(2, 404, 5);        /* no route */
    metrics_http_request(SIZE_MAX, 418, 5); /* no route, an unusual status */
    metrics_http_request(0, 999, 5);
    metrics_wechat_call(WECHAT_API_CODE2SESSION, WECHAT_ERRCODE, 40029, 1000);
    metrics_wechat_call(WECHAT_API_CODE2SESSION, WECHAT_ERRCODE, 987654, 1000);
    metrics_wechat_call(WECHAT_API_TOKEN, WECHAT_TIMEOUT, 0, 20000000); /* past the last bucket */
    metrics_rate_limited(METRICS_LIMIT_OPENID);
    metrics_store_op(METRICS_STORE_GET_SESSION, 1 /* STORE_NOT_FOUND */, 40);
    metrics_store_sent(METRICS_STORE_CLAIM_PUBLISH);
    char *text = render();
    assert_true(sample(text, "wxlogin_http_requests_total{method=\"other\",route=\"other\","
                             "status=\"404\"}") == 1);
    assert_true(sample(text, "wxlogin_http_requests_total{method=\"other\",route=\"other\","
                             "status=\"other\"}") == 1);
    assert_true(sample(text, "wxlogin_http_requests_total{method=\"POST\",route=\"/openid\","
                             "status=\"other\"}") == 1);
    assert_true(sample(text, "wxlogin_wechat_errcodes_total{api=\"code2session\","
                             "errcode=\"40029\"}") == 1);
    assert_true(sample(text, "wxlogin_wechat_errcodes_total{api=\"code2session\","
                             "errcode=\"other\"}") == 1);
    assert_true(sample(text, "wxlogin_wechat_calls_total{api=\"code2session\","
                             "outcome=\"errcode\"}") == 2);
    assert_true(sample(text, "wxlogin_wechat_call_duration_seconds_bucket{api=\"token\","
                             "le=\"10\"}") == 0);
    assert_true(sample(text, "wxlogin_wechat_call_duration_seconds_bucket{api=\"token\","
                             "le=\"+Inf\"}") == 1);
    assert_true(sample(text, "wxlogin_rate_limited_total{limit=\"openid\"}") == 1);
    assert_true(sample(text, "wxlogin_rate_limited_total{limit=\"address\"}") == 0);
    assert_true(sample(text, "wxlogin_store_operations_total{op=\"get_session\","
                             "result=\"not_found\"}") == 1);
    assert_true(sample(text, "wxlogin_store_operations_total{op=\"claim_publish\","
                             "result=\"sent\"}") == 1);
    assert_non_null(strstr(text, "\nwxlogin_build_info{commit=\""));
    assert_true(sample(text, "process_threads") >= 1);
    assert_true(sample(text, "process_open_fds") >= 3);
    assert_true(sample(text, "process_resident_memory_bytes") > 0);
    /* every family has its HELP and TYPE */
    assert_non_null(strstr(text, "# TYPE wxlogin_http_request_duration_seconds histogram\n"));
    assert_non_null(strstr(text, "# TYPE wxlogin_code_claims_total counter\n"));
    free(text);
    metrics_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_counts_nothing),
        cmocka_unit_test(test_threads_add_up_exactly),
        cmocka_unit_test(test_others_and_build_info),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
