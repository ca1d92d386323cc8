/*
 * Unit tests for token/fetch.h: the leased fetcher, against a scripted fake store.
 *
 * The fake store's lease operations never answer by themselves: each records its call and
 * occupies the fetcher's slot, and the test answers it (answer_read, answer_take) with what
 * another instance would have caused. WeChat is a closed port on loopback, so a fetch that
 * reaches it fails fast with a connect error; the tests mostly check that it is not reached.
 * Covered: a usable shared token is taken without the lease; a holder that publishes between
 * our read and our take does not cost a second fetch (we read again after taking); a forced
 * fetch goes to WeChat once it holds the lease, and gives the lease back when WeChat fails; a
 * read that fails while we hold the lease gives it back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop/loop.h"
#include "loop_drain.h"
#include "runtime/async.h"
#include "store/store.h"
#include "token/fetch.h"
#include "token/token.h"
#include "wechat/client.h"

#define WATCHDOG_S 15
#define APPID "wx1234567890abcdef"
#define OLD_TOKEN "token-rejected-by-wechat"
#define NEW_TOKEN "token-published-by-the-other-instance"

/* ---- the fake store: lease operations only ---- */

enum pending { P_NONE, P_READ, P_TAKE };

struct fake_store {
    struct store base;
    struct async async;
    enum pending pending;
    store_token_fn *read_done;
    store_lease_fn *take_done;
    void *arg;
    int reads, takes, publishes, invalidates;
    char published[WECHAT_TOKEN_MAX + 1]; /* the token of the last publish ("" = release only) */
    char publisher[STORE_OWNER_LEN + 1];  /* its owner */
    char taker[STORE_OWNER_LEN + 1];      /* the owner of the last take */
};

static struct fake_store *fs_of(struct store *s)
{
    return (struct fake_store *)(void *)s;
}

static void fs_cancel(struct async *a)
{
    struct fake_store *fs =
        (struct fake_store *)(void *)((char *)a - offsetof(struct fake_store, async));
    fs->pending = P_NONE;
}

static void fs_read(struct store *s, struct async_slot *slot, const char *appid,
                    store_token_fn *done, void *arg)
{
    struct fake_store *fs = fs_of(s);
    assert_string_equal(appid, APPID);
    assert_int_equal(fs->pending, P_NONE);
    fs->reads++;
    fs->pending = P_READ;
    fs->read_done = done;
    fs->arg = arg;
    async_begin(&fs->async, slot, fs_cancel);
}

static void fs_take(struct store *s, struct async_slot *slot, const char *appid, const char *owner,
                    long ms, store_lease_fn *done, void *arg)
{
    struct fake_store *fs = fs_of(s);
    assert_string_equal(appid, APPID);
    assert_int_equal(fs->pending, P_NONE);
    assert_true(ms >= 1000);
    fs->takes++;
    snprintf(fs->taker, sizeof(fs->taker), "%s", owner);
    fs->pending = P_TAKE;
    fs->take_done = done;
    fs->arg = arg;
    async_begin(&fs->async, slot, fs_cancel);
}

static void fs_publish(struct store *s, const char *appid, const char *owner, const char *token,
                       int64_t expires_at)
{
    struct fake_store *fs = fs_of(s);
    (void)expires_at;
    assert_string_equal(appid, APPID);
    fs->publishes++;
    snprintf(fs->published, sizeof(fs->published), "%s", token);
    snprintf(fs->publisher, sizeof(fs->publisher), "%s", owner);
}

static void fs_invalidate(struct store *s, const char *appid, const char *bad)
{
    (void)appid;
    (void)bad;
    fs_of(s)->invalidates++;
}

static const struct store_lease_ops fs_lease_ops = {
    .read = fs_read,
    .take = fs_take,
    .publish = fs_publish,
    .invalidate = fs_invalidate,
};

/* Answers the pending read with the shared token (NULL: none) or a store error. */
static void answer_read(struct fake_store *fs, int status, const char *token, int64_t expires_at)
{
    assert_int_equal(fs->pending, P_READ);
    fs->pending = P_NONE;
    async_end(&fs->async);
    fs->read_done(fs->arg, status, token != NULL ? token : "", token != NULL ? expires_at : 0);
}

static void answer_take(struct fake_store *fs, bool got)
{
    assert_int_equal(fs->pending, P_TAKE);
    fs->pending = P_NONE;
    async_end(&fs->async);
    fs->take_done(fs->arg, STORE_OK, got);
}

/* ---- fixture ---- */

struct rec {
    struct async_slot slot;
    int calls;
    struct token_result res;
};

static void on_token(void *arg, const struct token_result *res)
{
    struct rec *r = arg;
    r->calls++;
    r->res = *res;
}

struct fixture {
    struct loop *loop;
    struct token *t;
    struct wechat_client *wx;
    struct fake_store fs;
    struct wechat_app app;
    struct token_fetcher *f;
    struct rec rec;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    *state = fx;
    fx->loop = loop_new();
    fx->t = token_new();
    /* Nothing listens on port 1: a fetch that reaches WeChat fails at once. */
    struct wechat_client_opts o = {.base = "http://127.0.0.1:1", .timeout_ms = 2000, .retries = 0};
    fx->wx = fx->loop != NULL ? wechat_client_new(fx->loop, &o) : NULL;
    if (fx->loop == NULL || fx->t == NULL || fx->wx == NULL)
        return -1;
    fx->fs.base.lease = &fs_lease_ops;
    fx->app.appid = APPID;
    fx->app.secret = "0123456789abcdef0123456789abcdef";
    fx->f = token_fetcher_new(fx->t, &fx->app, WECHAT_TOKEN_STABLE, fx->wx, &fx->fs.base, fx->loop);
    if (fx->f == NULL)
        return -1;
    alarm(WATCHDOG_S);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    alarm(0);
    async_cancel(&fx->rec.slot);
    token_fetcher_free(fx->f);
    wechat_client_free(fx->wx);
    token_free(fx->t);
    loop_free(fx->loop);
    free(fx);
    return 0;
}

static void stop_when_answered(void *arg, const struct token_result *res)
{
    struct fixture *fx = arg;
    on_token(&fx->rec, res);
    loop_stop(fx->loop);
}

/* A get that must wait for the fetcher. */
static void get(struct fixture *fx, unsigned flags, token_fn *fn, void *arg)
{
    struct token_result now;
    assert_int_equal(token_get(fx->t, fx->f, &fx->rec.slot, flags, fn, arg, &now), TOKEN_WAIT);
}

static int64_t later(void)
{
    return (int64_t)time(NULL) + 7200;
}

/* ---- tests ---- */

static void test_usable_share_is_taken_without_the_lease(void **state)
{
    struct fixture *fx = *state;
    get(fx, 0, on_token, &fx->rec);
    assert_int_equal(fx->fs.reads, 1);
    answer_read(&fx->fs, STORE_OK, NEW_TOKEN, later());
    drain(fx->loop);
    assert_int_equal(fx->rec.calls, 1);
    assert_int_equal(fx->rec.res.status, TOKEN_OK);
    assert_string_equal(fx->rec.res.token, NEW_TOKEN);
    assert_int_equal(fx->fs.takes, 0);
    assert_int_equal(fx->fs.publishes, 0);
}

/* The race that cost a second fetch: the holder published (which releases the lease) after our
 * read found nothing and before our take, so the take succeeds although a fresh token waits. */
static void test_token_published_between_read_and_take_is_used(void **state)
{
    struct fixture *fx = *state;
    get(fx, 0, on_token, &fx->rec);
    answer_read(&fx->fs, STORE_OK, NULL, 0);
    assert_int_equal(fx->fs.takes, 1);
    answer_take(&fx->fs, true);
    /* Holding the lease, the fetcher reads again before spending a fetch. */
    assert_int_equal(fx->fs.reads, 2);
    answer_read(&fx->fs, STORE_OK, NEW_TOKEN, later());
    drain(fx->loop);
    assert_int_equal(fx->rec.calls, 1);
    assert_int_equal(fx->rec.res.status, TOKEN_OK);
    assert_string_equal(fx->rec.res.token, NEW_TOKEN);
    /* ... and gives the lease back without publishing anything. */
    assert_int_equal(fx->fs.publishes, 1);
    assert_string_equal(fx->fs.published, "");
    assert_string_equal(fx->fs.publisher, fx->fs.taker);
}

/* The rejected token found again after taking the lease is not taken: WeChat is asked. */
static void test_rejected_share_after_take_goes_to_wechat(void **state)
{
    struct fixture *fx = *state;
    /* Cache OLD_TOKEN, then reject it. */
    get(fx, 0, on_token, &fx->rec);
    answer_read(&fx->fs, STORE_OK, OLD_TOKEN, later());
    drain(fx->loop);
    assert_string_equal(fx->rec.res.token, OLD_TOKEN);
    token_invalidate(fx->t, fx->f, OLD_TOKEN);
    assert_int_equal(fx->fs.invalidates, 1);

    fx->rec.calls = 0;
    get(fx, 0, stop_when_answered, fx);
    answer_read(&fx->fs, STORE_OK, OLD_TOKEN, later());
    answer_take(&fx->fs, true);
    answer_read(&fx->fs, STORE_OK, OLD_TOKEN, later());
    assert_int_equal(fx->fs.pending, P_NONE); /* now waiting for WeChat */
    assert_int_equal(loop_run(fx->loop), 0);
    assert_int_equal(fx->rec.calls, 1);
    assert_int_equal(fx->rec.res.status, TOKEN_FAILED);
    assert_int_equal(fx->rec.res.wstatus, WECHAT_CONNECT);
    assert_int_equal(fx->fs.publishes, 1); /* the lease given back */
    assert_string_equal(fx->fs.published, "");
}

static void test_forced_fetch_with_the_lease_goes_to_wechat(void **state)
{
    struct fixture *fx = *state;
    get(fx, TOKEN_FORCE, stop_when_answered, fx);
    answer_read(&fx->fs, STORE_OK, NULL, 0);
    answer_take(&fx->fs, true);
    assert_int_equal(fx->fs.reads, 1); /* forced: no second read */
    assert_int_equal(loop_run(fx->loop), 0);
    assert_int_equal(fx->rec.calls, 1);
    assert_int_equal(fx->rec.res.status, TOKEN_FAILED);
    assert_int_equal(fx->fs.publishes, 1);
    assert_string_equal(fx->fs.published, "");
    assert_string_equal(fx->fs.publisher, fx->fs.taker);
}

static void test_failed_read_with_the_lease_gives_it_back(void **state)
{
    struct fixture *fx = *state;
    get(fx, 0, on_token, &fx->rec);
    answer_read(&fx->fs, STORE_OK, NULL, 0);
    answer_take(&fx->fs, true);
    answer_read(&fx->fs, STORE_ERROR, NULL, 0);
    drain(fx->loop);
    assert_int_equal(fx->rec.calls, 1);
    assert_int_equal(fx->rec.res.status, TOKEN_FAILED);
    assert_int_equal(fx->fs.publishes, 1);
    assert_string_equal(fx->fs.published, "");
}

/* Someone else holds the lease: poll until their token appears. */
static void test_lease_held_elsewhere_polls_the_share(void **state)
{
    struct fixture *fx = *state;
    get(fx, 0, on_token, &fx->rec);
    answer_read(&fx->fs, STORE_OK, NULL, 0);
    answer_take(&fx->fs, false);
    assert_int_equal(fx->fs.pending, P_NONE); /* a poll timer, then a read */
    while (fx->fs.pending == P_NONE) {
        assert_int_equal(loop_post(fx->loop, stop_loop, fx->loop), 0);
        usleep(20000);
        assert_int_equal(loop_run(fx->loop), 0);
    }
    assert_int_equal(fx->fs.reads, 2);
    answer_read(&fx->fs, STORE_OK, NEW_TOKEN, later());
    drain(fx->loop);
    assert_int_equal(fx->rec.res.status, TOKEN_OK);
    assert_string_equal(fx->rec.res.token, NEW_TOKEN);
    assert_int_equal(fx->fs.takes, 1);
    assert_int_equal(fx->fs.publishes, 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_usable_share_is_taken_without_the_lease, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_token_published_between_read_and_take_is_used, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rejected_share_after_take_goes_to_wechat, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forced_fetch_with_the_lease_goes_to_wechat, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_read_with_the_lease_gives_it_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lease_held_elsewhere_polls_the_share, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
