/*
 * Unit tests for token/token.h: the access token shared by every worker, with fake fetchers.
 *
 * A fake fetcher records what token.c asks of it (start and its force flag, cancel,
 * invalidate) and never finishes by itself: the test ends a fetch by calling token_fetched()
 * with the result it wants. Covered: the first get waits for one fetch and is woken on its own
 * loop; a cached token is ready; single flight, also across two and four threads; refreshing
 * early in the background, and not again before expiry when a refresh brings back a token still
 * inside the margin; the 1 s backoff after a failed fetch and the 10 s one after WeChat
 * hands back the token it rejected (lifted by token_accepted); compare-and-swap invalidation;
 * TOKEN_DROP and TOKEN_FORCE (a forced get is never answered by an ordinary fetch already
 * running); a fetch that cannot start; unregistering the fetching worker; cancelled waiters;
 * late results from a fetcher that no longer owns the fetch; token_usable; token_fetches.
 *
 * A loop is run "until drained" by posting loop_stop after everything else: posts run in order,
 * so every wake posted before has run when loop_run returns. Every test arms an alarm first: a
 * wake that never comes kills the test instead of hanging it. The ASan build checks that no
 * waiter leaks, including cancelled ones freed by a later delivery or by loop_free.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop/loop.h"
#include "loop_drain.h"
#include "runtime/async.h"
#include "token/token.h"

#define WATCHDOG_S 15
#define NRECS 8
/* Just over token.c's FAILED_FETCH_BACKOFF_MS (1000). */
#define PAST_FAILURE_BACKOFF_MS 1200
#define LONG_S 7200 /* a fresh token's lifetime */
#define SHORT_S 100 /* under token.c's 300 s refresh margin */

/* ---- the fake fetcher ---- */

struct fake {
    struct token_fetcher base;
    int start_rc; /* what start() returns */
    int starts;
    bool last_force;
    int cancels;
    int invalidates;
    char invalidated[WECHAT_TOKEN_MAX + 1];
};

static struct fake *fake_of(struct token_fetcher *f)
{
    return (struct fake *)(void *)f;
}

static int fake_start(struct token_fetcher *f, bool force)
{
    struct fake *fk = fake_of(f);
    fk->starts++;
    fk->last_force = force;
    return fk->start_rc;
}

static void fake_cancel(struct token_fetcher *f)
{
    fake_of(f)->cancels++;
}

static void fake_invalidate(struct token_fetcher *f, const char *bad)
{
    struct fake *fk = fake_of(f);
    fk->invalidates++;
    snprintf(fk->invalidated, sizeof(fk->invalidated), "%s", bad);
}

static const struct token_fetch_ops fake_ops = {
    .start = fake_start,
    .cancel = fake_cancel,
    .invalidate = fake_invalidate,
};

/* One process: no invalidate op. */
static const struct token_fetch_ops fake_ops_local = {
    .start = fake_start,
    .cancel = fake_cancel,
    .invalidate = NULL,
};

/* ---- waiters ---- */

struct rec {
    struct async_slot slot;
    int calls;
    struct token_result res;
    pthread_t thread;
    bool slot_pending_in_cb; /* the slot must be empty when the callback runs */
    struct loop *stop;       /* when set, the callback stops this loop (its own) */
};

static void on_token(void *arg, const struct token_result *res)
{
    struct rec *r = arg;
    r->calls++;
    r->res = *res;
    r->thread = pthread_self();
    r->slot_pending_in_cb = async_pending(&r->slot);
    if (r->stop != NULL)
        loop_stop(r->stop);
}

/* ---- fixture ---- */

struct fixture {
    struct token *t;
    struct loop *la, *lb;
    struct fake fa, fb;    /* fa on la, fb on lb */
    struct rec rec[NRECS]; /* here, not on a test's stack: a late wake must not scribble */
    struct rec helper;     /* the helpers' own waiter */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    *state = f;
    f->t = token_new();
    f->la = loop_new();
    f->lb = loop_new();
    if (f->t == NULL || f->la == NULL || f->lb == NULL)
        return -1;
    f->fa.base.ops = &fake_ops;
    f->fb.base.ops = &fake_ops;
    token_fetcher_register(f->t, &f->fa.base, f->la);
    token_fetcher_register(f->t, &f->fb.base, f->lb);
    alarm(WATCHDOG_S);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    alarm(0);
    if (f->t != NULL) {
        token_fetcher_unregister(&f->fa.base); /* harmless when already unregistered */
        token_fetcher_unregister(&f->fb.base);
    }
    loop_free(f->la);
    loop_free(f->lb);
    token_free(f->t);
    free(f);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- helpers ---- */

static enum token_wait get(struct fixture *f, struct fake *fk, struct rec *r, unsigned flags,
                           struct token_result *out)
{
    return token_get(f->t, &fk->base, &r->slot, flags, on_token, r, out);
}

static struct token_result ok_result(const char *token, int64_t expires_at)
{
    struct token_result res;
    memset(&res, 0, sizeof(res));
    res.status = TOKEN_OK;
    snprintf(res.token, sizeof(res.token), "%s", token);
    res.expires_at = expires_at;
    return res;
}

static struct token_result failed_result(enum wechat_status ws, long errcode, long http_status)
{
    struct token_result res;
    memset(&res, 0, sizeof(res));
    res.status = TOKEN_FAILED;
    res.wstatus = ws;
    res.errcode = errcode;
    res.http_status = http_status;
    return res;
}

static void fetched(struct fake *fk, const struct token_result *res)
{
    token_fetched(&fk->base, res);
}

static void finish_ok(struct fake *fk, const char *token, int64_t expires_at)
{
    struct token_result res = ok_result(token, expires_at);
    fetched(fk, &res);
}

/* Asserts that a get on fk is ready with token. */
static void assert_ready_token(struct fixture *f, struct fake *fk, const char *token)
{
    struct token_result out;
    struct rec r = {0};
    enum token_wait rc = get(f, fk, &r, 0, &out);
    if (rc == TOKEN_WAIT)
        async_cancel(&r.slot); /* r is on this stack: it must never be called */
    assert_int_equal(rc, TOKEN_READY);
    assert_int_equal(out.status, TOKEN_OK);
    assert_string_equal(out.token, token);
    assert_false(async_pending(&r.slot));
}

/* Asserts that a get on fk is ready with status (not a token). */
static void assert_ready_status(struct fixture *f, struct fake *fk, enum token_status status)
{
    struct token_result out;
    struct rec r = {0};
    enum token_wait rc = get(f, fk, &r, 0, &out);
    if (rc == TOKEN_WAIT)
        async_cancel(&r.slot);
    assert_int_equal(rc, TOKEN_READY);
    assert_int_equal(out.status, status);
    assert_false(async_pending(&r.slot));
}

/* Caches token (through a fetch on fa: one more start) and drains the fetch's waiter. */
static void cache_token(struct fixture *f, const char *token, int64_t expires_at)
{
    struct token_result out;
    struct rec *r = &f->helper;
    memset(r, 0, sizeof(*r));
    int starts = f->fa.starts;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, starts + 1);
    finish_ok(&f->fa, token, expires_at);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->res.status, TOKEN_OK);
    assert_string_equal(r->res.token, token);
    assert_false(token_fetching_on(f->t, &f->fa.base));
}

/* ---- first get, cached token ---- */

static void test_first_get_starts_one_fetch_and_waits(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    int64_t exp = now_s() + LONG_S;
    assert_int_equal(token_fetches(f->t), 0);
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_true(async_pending(&r->slot));
    assert_int_equal(f->fa.starts, 1);
    assert_false(f->fa.last_force);
    assert_int_equal(f->fb.starts, 0);
    assert_int_equal(token_fetches(f->t), 1);
    assert_true(token_fetching_on(f->t, &f->fa.base));
    assert_false(token_fetching_on(f->t, &f->fb.base));

    finish_ok(&f->fa, "tok-1", exp);
    /* Woken through its loop, never from token_fetched itself. */
    assert_int_equal(r->calls, 0);
    assert_false(token_fetching_on(f->t, &f->fa.base));
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_false(r->slot_pending_in_cb);
    assert_false(async_pending(&r->slot));
    assert_true(pthread_equal(r->thread, pthread_self()));
    assert_int_equal(r->res.status, TOKEN_OK);
    assert_string_equal(r->res.token, "tok-1");
    assert_int_equal(r->res.expires_at, exp);
    /* Exactly once. */
    drain(f->la);
    assert_int_equal(r->calls, 1);
}

static void test_waiter_is_woken_on_its_own_loop(void **state)
{
    struct fixture *f = *state;
    struct rec *ra = &f->rec[0], *rb = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, ra, 0, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fb, rb, 0, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_int_equal(ra->calls, 1);
    assert_int_equal(rb->calls, 0); /* fb's waiter belongs to lb */
    drain(f->lb);
    assert_int_equal(rb->calls, 1);
    assert_string_equal(rb->res.token, "tok-1");
}

static void test_cached_token_is_ready_without_fetch(void **state)
{
    struct fixture *f = *state;
    int64_t exp = now_s() + LONG_S;
    cache_token(f, "tok-1", exp);
    struct rec *r = &f->rec[0];
    struct token_result out;
    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_READY);
    assert_int_equal(out.status, TOKEN_OK);
    assert_string_equal(out.token, "tok-1");
    assert_int_equal(out.expires_at, exp);
    assert_false(async_pending(&r->slot));
    assert_ready_token(f, &f->fb, "tok-1");
    assert_int_equal(f->fa.starts, 1);
    assert_int_equal(f->fb.starts, 0);
    assert_int_equal(token_fetches(f->t), 1);
    drain(f->la);
    drain(f->lb);
    assert_int_equal(r->calls, 0); /* READY: the callback is not called */
}

static void test_expired_token_is_not_served(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-old", now_s() - 1);
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 2);
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-new");
}

/* ---- single flight ---- */

static void test_concurrent_gets_share_one_fetch(void **state)
{
    struct fixture *f = *state;
    struct token_result out;
    for (int i = 0; i < 3; i++)
        assert_int_equal(get(f, &f->fa, &f->rec[i], 0, &out), TOKEN_WAIT);
    for (int i = 3; i < 6; i++)
        assert_int_equal(get(f, &f->fb, &f->rec[i], 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 1);
    assert_int_equal(f->fb.starts, 0); /* the fetch stays where it started */
    assert_int_equal(token_fetches(f->t), 1);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    drain(f->lb);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(f->rec[i].calls, 1);
        assert_int_equal(f->rec[i].res.status, TOKEN_OK);
        assert_string_equal(f->rec[i].res.token, "tok-1");
    }
    assert_ready_token(f, &f->fb, "tok-1");
    assert_int_equal(token_fetches(f->t), 1);
}

static void *run_loop_thread(void *arg)
{
    struct loop *loop = arg;
    if (loop_run(loop) != 0)
        abort();
    return NULL;
}

/* A get made on another worker's thread, from inside its loop. */
struct remote_get {
    struct fixture *f;
    struct fake *fk;
    struct rec *rec;
    unsigned flags;
    enum token_wait rc;
    struct token_result out;
    sem_t done;
};

static void do_remote_get(void *arg)
{
    struct remote_get *g = arg;
    g->rc = get(g->f, g->fk, g->rec, g->flags, &g->out);
    sem_post(&g->done);
}

/* Posts a get on fk to loop (run by another thread) and waits until it was made. */
static void remote_get(struct remote_get *g, struct fixture *f, struct loop *loop, struct fake *fk,
                       struct rec *r, unsigned flags)
{
    memset(g, 0, sizeof(*g));
    g->f = f;
    g->fk = fk;
    g->rec = r;
    g->flags = flags;
    assert_int_equal(sem_init(&g->done, 0, 0), 0);
    assert_int_equal(loop_post(loop, do_remote_get, g), 0);
    while (sem_wait(&g->done) != 0)
        ;
    sem_destroy(&g->done);
}

static void test_waiter_on_second_thread_woken_on_its_thread(void **state)
{
    struct fixture *f = *state;
    struct rec *ra = &f->rec[0], *rb = &f->rec[1];
    struct token_result out;
    rb->stop = f->lb;
    pthread_t tb;
    assert_int_equal(pthread_create(&tb, NULL, run_loop_thread, f->lb), 0);

    assert_int_equal(get(f, &f->fa, ra, 0, &out), TOKEN_WAIT);
    struct remote_get g;
    remote_get(&g, f, f->lb, &f->fb, rb, 0);
    assert_int_equal(g.rc, TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 1);
    assert_int_equal(f->fb.starts, 0);

    /* Finished from this (the fetching worker's) thread; rb's wake stops its own loop. */
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    assert_int_equal(pthread_join(tb, NULL), 0);
    assert_int_equal(rb->calls, 1);
    assert_true(pthread_equal(rb->thread, tb));
    assert_string_equal(rb->res.token, "tok-1");
    assert_int_equal(ra->calls, 0);
    drain(f->la);
    assert_int_equal(ra->calls, 1);
    assert_true(pthread_equal(ra->thread, pthread_self()));
    assert_int_equal(token_fetches(f->t), 1);
}

#define NWORKERS 4

struct worker {
    struct fixture *f;
    struct loop *loop;
    struct fake fk;
    struct rec rec;
    enum token_wait rc;
    pthread_barrier_t *before, *after;
    pthread_t thread;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct token_result out;
    pthread_barrier_wait(w->before);
    w->rc = get(w->f, &w->fk, &w->rec, 0, &out);
    pthread_barrier_wait(w->after);
    if (loop_run(w->loop) != 0) /* until the wake stops it */
        abort();
    return NULL;
}

static void finish_on_own_loop(void *arg)
{
    struct worker *w = arg;
    finish_ok(&w->fk, "tok-race", now_s() + LONG_S);
}

static void test_gets_racing_on_four_threads_cause_one_fetch(void **state)
{
    struct fixture *f = *state;
    struct worker w[NWORKERS];
    pthread_barrier_t before, after;
    memset(w, 0, sizeof(w));
    assert_int_equal(pthread_barrier_init(&before, NULL, NWORKERS + 1), 0);
    assert_int_equal(pthread_barrier_init(&after, NULL, NWORKERS + 1), 0);
    for (int i = 0; i < NWORKERS; i++) {
        w[i].f = f;
        w[i].loop = loop_new();
        assert_non_null(w[i].loop);
        w[i].fk.base.ops = &fake_ops;
        w[i].rec.stop = w[i].loop;
        w[i].before = &before;
        w[i].after = &after;
        token_fetcher_register(f->t, &w[i].fk.base, w[i].loop);
    }
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    pthread_barrier_wait(&before);
    pthread_barrier_wait(&after);

    int starts = 0;
    struct worker *owner = NULL;
    for (int i = 0; i < NWORKERS; i++) {
        assert_int_equal(w[i].rc, TOKEN_WAIT);
        starts += w[i].fk.starts;
        if (w[i].fk.starts > 0)
            owner = &w[i];
    }
    assert_int_equal(starts, 1);
    assert_non_null(owner);
    assert_true(token_fetching_on(f->t, &owner->fk.base));
    /* The fetch ends on its fetcher's loop, as a real fetcher's would. */
    assert_int_equal(loop_post(owner->loop, finish_on_own_loop, owner), 0);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(pthread_join(w[i].thread, NULL), 0);
    for (int i = 0; i < NWORKERS; i++) {
        assert_int_equal(w[i].rec.calls, 1);
        assert_true(pthread_equal(w[i].rec.thread, w[i].thread));
        assert_string_equal(w[i].rec.res.token, "tok-race");
        token_fetcher_unregister(&w[i].fk.base);
        assert_int_equal(w[i].fk.cancels, 0);
        loop_free(w[i].loop);
    }
    assert_int_equal(token_fetches(f->t), 1);
    pthread_barrier_destroy(&before);
    pthread_barrier_destroy(&after);
}

/* ---- refreshing early ---- */

static void test_short_token_is_served_and_refreshed_once_in_background(void **state)
{
    struct fixture *f = *state;
    int64_t exp = now_s() + SHORT_S;
    cache_token(f, "tok-short", exp);
    assert_int_equal(f->fa.starts, 1);

    struct token_result out;
    struct rec *r = &f->rec[0];
    /* Asked from fb's worker: the refresh runs on fb. */
    assert_int_equal(get(f, &f->fb, r, 0, &out), TOKEN_READY);
    assert_int_equal(out.status, TOKEN_OK);
    assert_string_equal(out.token, "tok-short");
    assert_int_equal(out.expires_at, exp);
    assert_false(async_pending(&r->slot));
    assert_int_equal(f->fb.starts, 1);
    assert_false(f->fb.last_force);
    assert_true(token_fetching_on(f->t, &f->fb.base));
    assert_int_equal(token_fetches(f->t), 2);

    /* Only one refresh, whoever asks meanwhile. */
    assert_ready_token(f, &f->fa, "tok-short");
    assert_ready_token(f, &f->fb, "tok-short");
    assert_int_equal(f->fa.starts, 1);
    assert_int_equal(f->fb.starts, 1);
    assert_int_equal(token_fetches(f->t), 2);

    finish_ok(&f->fb, "tok-new", now_s() + LONG_S);
    assert_false(token_fetching_on(f->t, &f->fb.base));
    assert_ready_token(f, &f->fa, "tok-new");
    assert_int_equal(token_fetches(f->t), 2);
    drain(f->la);
    drain(f->lb);
    assert_int_equal(r->calls, 0);
}

static void test_failed_refresh_keeps_serving_and_waits_before_retrying(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short");
    assert_int_equal(f->fa.starts, 2);
    struct token_result bad = failed_result(WECHAT_TIMEOUT, 0, 0);
    fetched(&f->fa, &bad);
    /* The old token is still good: served, and the refresh is not repeated at once. */
    assert_ready_token(f, &f->fa, "tok-short");
    assert_ready_token(f, &f->fb, "tok-short");
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    sleep_ms(PAST_FAILURE_BACKOFF_MS);
    assert_ready_token(f, &f->fa, "tok-short");
    assert_int_equal(f->fa.starts, 3);
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    assert_ready_token(f, &f->fb, "tok-new");
}

/* WeChat without early renewal hands back the same token until it expires: a refresh that
 * brings it back (still inside the margin) must not be repeated on every get until then. */
static void test_refresh_returning_the_same_short_token_backs_off_until_expiry(void **state)
{
    struct fixture *f = *state;
    int64_t exp = now_s() + 2;
    cache_token(f, "tok-short", exp);
    assert_ready_token(f, &f->fb, "tok-short"); /* the refresh */
    assert_int_equal(f->fb.starts, 1);
    finish_ok(&f->fb, "tok-short", exp);
    /* Many gets, on both workers: served, and no refresh until it expires. */
    for (int i = 0; i < 20; i++) {
        assert_ready_token(f, &f->fa, "tok-short");
        assert_ready_token(f, &f->fb, "tok-short");
    }
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    assert_int_equal(token_fetches(f->t), 2);
    /* Expired: the next get fetches (and waits), nothing holds it back. */
    sleep_ms(2100);
    struct token_result out;
    struct rec *r = &f->rec[0];
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 2);
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_string_equal(r->res.token, "tok-new");
}

static void test_refresh_returning_another_short_token_backs_off_too(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short");
    finish_ok(&f->fa, "tok-short-2", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short-2");
    assert_ready_token(f, &f->fb, "tok-short-2");
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
}

static void test_refresh_returning_a_renewed_token_does_not_back_off(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short");
    /* WeChat renews early: a new token with its whole life. */
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    assert_ready_token(f, &f->fb, "tok-new");
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    /* ...and when that one runs short in its turn, it is refreshed as usual. */
    struct token_result out;
    assert_int_equal(get(f, &f->fa, &f->rec[0], TOKEN_DROP, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-new-short", now_s() + SHORT_S);
    drain(f->la);
    assert_ready_token(f, &f->fb, "tok-new-short");
    assert_int_equal(f->fb.starts, 1);
}

static void test_drop_lifts_the_short_token_backoff(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short");
    finish_ok(&f->fa, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short");
    assert_int_equal(f->fa.starts, 2);
    struct token_result out;
    assert_int_equal(get(f, &f->fa, &f->rec[0], TOKEN_DROP, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 3);
    finish_ok(&f->fa, "tok-short", now_s() + SHORT_S);
    drain(f->la);
    /* the operator's fetch was the first after a drop, not a refresh: one refresh may follow */
    assert_ready_token(f, &f->fb, "tok-short");
    assert_int_equal(f->fb.starts, 1);
}

/* ---- failed fetches ---- */

static void test_failed_fetch_is_shared_for_one_second_then_retried(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    struct token_result bad = failed_result(WECHAT_ERRCODE, 40013, 200);
    fetched(&f->fa, &bad);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->res.status, TOKEN_FAILED);
    assert_int_equal(r->res.wstatus, WECHAT_ERRCODE);
    assert_int_equal(r->res.errcode, 40013);
    assert_int_equal(r->res.http_status, 200);

    /* Within the backoff: the same failure at once, from either worker, without a fetch. */
    struct fake *fks[2] = {&f->fa, &f->fb};
    for (int i = 0; i < 2; i++) {
        struct rec *r2 = &f->rec[2 + i];
        memset(&out, 0, sizeof(out));
        assert_int_equal(get(f, fks[i], r2, 0, &out), TOKEN_READY);
        assert_false(async_pending(&r2->slot));
        assert_int_equal(out.status, TOKEN_FAILED);
        assert_int_equal(out.wstatus, WECHAT_ERRCODE);
        assert_int_equal(out.errcode, 40013);
        assert_int_equal(out.http_status, 200);
    }
    assert_int_equal(f->fa.starts + f->fb.starts, 1);
    assert_int_equal(token_fetches(f->t), 1);

    sleep_ms(PAST_FAILURE_BACKOFF_MS);
    struct rec *r3 = &f->rec[1];
    assert_int_equal(get(f, &f->fb, r3, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fb.starts, 1);
    assert_int_equal(token_fetches(f->t), 2);
    finish_ok(&f->fb, "tok-1", now_s() + LONG_S);
    drain(f->lb);
    assert_int_equal(r3->calls, 1);
    assert_string_equal(r3->res.token, "tok-1");
}

static void test_latest_failure_is_the_one_returned(void **state)
{
    struct fixture *f = *state;
    struct token_result out;
    assert_int_equal(get(f, &f->fa, &f->rec[0], 0, &out), TOKEN_WAIT);
    struct token_result bad1 = failed_result(WECHAT_HTTP_ERROR, 0, 502);
    fetched(&f->fa, &bad1);
    sleep_ms(PAST_FAILURE_BACKOFF_MS);
    assert_int_equal(get(f, &f->fa, &f->rec[1], 0, &out), TOKEN_WAIT);
    struct token_result bad2 = failed_result(WECHAT_CONNECT, 0, 0);
    fetched(&f->fa, &bad2);
    drain(f->la);
    assert_int_equal(get(f, &f->fa, &f->rec[2], 0, &out), TOKEN_READY);
    assert_int_equal(out.status, TOKEN_FAILED);
    assert_int_equal(out.wstatus, WECHAT_CONNECT);
    assert_int_equal(out.http_status, 0);
}

static void test_aborted_fetch_does_not_back_off(void **state)
{
    struct fixture *f = *state;
    struct token_result out;
    struct rec *r = &f->rec[0];
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    struct token_result ab = {.status = TOKEN_ABORTED};
    fetched(&f->fa, &ab);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->res.status, TOKEN_ABORTED);
    assert_int_equal(get(f, &f->fa, &f->rec[1], 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 2);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(f->rec[1].res.token, "tok-1");
}

static void test_drop_lets_a_fetch_through_the_failure_backoff(void **state)
{
    struct fixture *f = *state;
    struct token_result out;
    assert_int_equal(get(f, &f->fa, &f->rec[0], 0, &out), TOKEN_WAIT);
    struct token_result bad = failed_result(WECHAT_TIMEOUT, 0, 0);
    fetched(&f->fa, &bad);
    assert_ready_status(f, &f->fa, TOKEN_FAILED);
    struct rec *r = &f->rec[1];
    assert_int_equal(get(f, &f->fa, r, TOKEN_DROP, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 2);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-1");
}

/* ---- a fetch that cannot start ---- */

static void test_start_failure_is_nomem_and_not_held_back(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    f->fa.start_rc = -1;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 1);
    assert_false(token_fetching_on(f->t, &f->fa.base));
    drain(f->la);
    assert_int_equal(r->calls, 1);
    /* Our failure (out of memory), not a shutdown nor WeChat's: answered 503 internal. */
    assert_int_equal(r->res.status, TOKEN_NOMEM);
    assert_false(async_pending(&r->slot));

    /* Nothing reached WeChat, so nothing is held back: the very next get fetches again (a
     * backoff would answer every request of the next second for one failed allocation)... */
    f->fa.start_rc = 0;
    assert_int_equal(get(f, &f->fa, &f->rec[1], 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 2);
    assert_true(token_fetching_on(f->t, &f->fa.base));
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(f->rec[1].res.token, "tok-1");
    /* ...and a failed start left no failure behind to be served later. */
    assert_int_equal(get(f, &f->fa, &f->rec[2], 0, &out), TOKEN_READY);
    assert_int_equal(out.status, TOKEN_OK);
    assert_string_equal(out.token, "tok-1");
}

/* A fetch that failed on our side (out of memory reading WeChat's answer): its waiters are told
 * (503 internal), but no failure is kept and served for a second: the next get fetches. */
static void test_fetch_failed_on_our_side_is_not_held_back(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    struct token_result ours = failed_result(WECHAT_INTERNAL, 0, 200);
    fetched(&f->fa, &ours);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->res.status, TOKEN_FAILED);
    assert_int_equal(r->res.wstatus, WECHAT_INTERNAL);
    assert_int_equal(get(f, &f->fb, &f->rec[1], 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fb.starts, 1);
    finish_ok(&f->fb, "tok-1", now_s() + LONG_S);
    drain(f->lb);
    assert_string_equal(f->rec[1].res.token, "tok-1");
    /* WeChat's own failure still is held back, as before. */
    assert_int_equal(get(f, &f->fa, &f->rec[2], TOKEN_DROP, &out), TOKEN_WAIT);
    struct token_result theirs = failed_result(WECHAT_HTTP_ERROR, 0, 502);
    fetched(&f->fa, &theirs);
    drain(f->la);
    assert_ready_status(f, &f->fb, TOKEN_FAILED);
}

/* An early refresh that failed on our side: the token is still served, and the refresh is not
 * repeated on every get. */
static void test_refresh_failed_on_our_side_keeps_serving_and_waits(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short"); /* starts the refresh */
    assert_int_equal(f->fa.starts, 2);
    struct token_result ours = failed_result(WECHAT_INTERNAL, 0, 200);
    fetched(&f->fa, &ours);
    assert_ready_token(f, &f->fa, "tok-short");
    assert_ready_token(f, &f->fb, "tok-short");
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    sleep_ms(PAST_FAILURE_BACKOFF_MS);
    assert_ready_token(f, &f->fb, "tok-short");
    assert_int_equal(f->fb.starts, 1);
    finish_ok(&f->fb, "tok-new", now_s() + LONG_S);
    assert_ready_token(f, &f->fa, "tok-new");
}

static void test_refresh_that_cannot_start_still_serves_the_token(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    f->fb.start_rc = -1;
    assert_ready_token(f, &f->fb, "tok-short");
    assert_int_equal(f->fb.starts, 1);
    assert_false(token_fetching_on(f->t, &f->fb.base));
    assert_ready_token(f, &f->fa, "tok-short");
    assert_int_equal(f->fa.starts, 1); /* only the caching fetch: not at once, it would fail */
    sleep_ms(PAST_FAILURE_BACKOFF_MS);
    assert_ready_token(f, &f->fa, "tok-short");
    assert_int_equal(f->fa.starts, 2); /* a later get tries the refresh again */
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    assert_ready_token(f, &f->fb, "tok-new");
}

/* ---- invalidation ---- */

static void test_invalidate_is_compare_and_swap(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-1", now_s() + LONG_S);

    /* A late rejection of an older token leaves the cached one alone... */
    token_invalidate(f->t, &f->fb.base, "tok-0");
    assert_int_equal(f->fb.invalidates, 1);
    assert_string_equal(f->fb.invalidated, "tok-0");
    assert_ready_token(f, &f->fa, "tok-1");
    assert_int_equal(token_fetches(f->t), 1);

    /* ...but still tells the other instances. The right one is dropped. */
    token_invalidate(f->t, &f->fb.base, "tok-1");
    assert_int_equal(f->fb.invalidates, 2);
    assert_string_equal(f->fb.invalidated, "tok-1");
    assert_int_equal(f->fa.invalidates, 0);
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fb, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fb.starts, 1);
    finish_ok(&f->fb, "tok-2", now_s() + LONG_S);
    drain(f->lb);
    assert_string_equal(r->res.token, "tok-2");

    /* The rejected one is no longer worth taking from a share. */
    assert_false(token_usable(f->t, "tok-1", now_s() + LONG_S, now_s()));
    assert_true(token_usable(f->t, "tok-2", now_s() + LONG_S, now_s()));
    /* Invalidating it again changes nothing. */
    token_invalidate(f->t, &f->fb.base, "tok-1");
    assert_ready_token(f, &f->fa, "tok-2");
}

static void test_invalidate_with_no_token_or_no_op(void **state)
{
    struct fixture *f = *state;
    token_invalidate(f->t, &f->fa.base, "tok-x"); /* nothing cached */
    assert_int_equal(f->fa.invalidates, 1);
    assert_int_equal(token_fetches(f->t), 0);

    /* One process: a fetcher without invalidate op. */
    struct fake local = {0};
    local.base.ops = &fake_ops_local;
    token_fetcher_register(f->t, &local.base, f->la);
    cache_token(f, "tok-1", now_s() + LONG_S);
    token_invalidate(f->t, &local.base, "tok-1");
    struct token_result out;
    assert_int_equal(get(f, &local, &f->rec[0], 0, &out), TOKEN_WAIT);
    assert_int_equal(local.starts, 1);
    finish_ok(&local, "tok-2", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(f->rec[0].res.token, "tok-2");
    token_fetcher_unregister(&local.base);
    assert_int_equal(local.cancels, 0);
}

static void test_invalidate_during_fetch_keeps_the_fetch(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_ready_token(f, &f->fa, "tok-short"); /* background refresh on fa */
    token_invalidate(f->t, &f->fb.base, "tok-short");
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fb, r, 0, &out), TOKEN_WAIT); /* joins the refresh */
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    drain(f->lb);
    assert_string_equal(r->res.token, "tok-new");
}

/* ---- the rejected token handed back ---- */

/* Caches tok-1, rejects it, and has the next fetch hand it back. */
static void hand_back_rejected(struct fixture *f, int64_t expires_at)
{
    cache_token(f, "tok-1", now_s() + LONG_S);
    token_invalidate(f->t, &f->fa.base, "tok-1");
    struct rec *r = &f->helper;
    memset(r, 0, sizeof(*r));
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 2);
    finish_ok(&f->fa, "tok-1", expires_at);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->res.status, TOKEN_OK);
    assert_string_equal(r->res.token, "tok-1");
}

static void test_rejected_token_handed_back_throttles_fetches(void **state)
{
    struct fixture *f = *state;
    hand_back_rejected(f, now_s() + LONG_S);
    /* It is what WeChat gave: served, and if rejected again, no fetch for 10 s. */
    assert_ready_token(f, &f->fa, "tok-1");
    token_invalidate(f->t, &f->fa.base, "tok-1");
    assert_ready_status(f, &f->fa, TOKEN_THROTTLED);
    assert_ready_status(f, &f->fb, TOKEN_THROTTLED);
    /* Longer than the failed-fetch backoff. */
    sleep_ms(PAST_FAILURE_BACKOFF_MS);
    assert_ready_status(f, &f->fb, TOKEN_THROTTLED);
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    assert_int_equal(token_fetches(f->t), 2);

    /* Only that token's acceptance lifts it. */
    token_accepted(f->t, "tok-other");
    assert_ready_status(f, &f->fa, TOKEN_THROTTLED);
    token_accepted(f->t, "tok-1");
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 3);
    finish_ok(&f->fa, "tok-2", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-2");
}

static void test_rejected_token_handed_back_is_not_refreshed_early(void **state)
{
    struct fixture *f = *state;
    hand_back_rejected(f, now_s() + SHORT_S);
    /* Short, but WeChat would only hand it back again: no refresh during the backoff. */
    assert_ready_token(f, &f->fa, "tok-1");
    assert_ready_token(f, &f->fb, "tok-1");
    assert_int_equal(f->fa.starts + f->fb.starts, 2);
    assert_false(token_usable(f->t, "tok-1", now_s() + LONG_S, now_s()));

    /* It worked after all: the backoff ends and the early refresh happens. */
    token_accepted(f->t, "tok-1");
    assert_true(token_usable(f->t, "tok-1", now_s() + LONG_S, now_s()));
    assert_ready_token(f, &f->fb, "tok-1");
    assert_int_equal(f->fb.starts, 1);
    assert_true(token_fetching_on(f->t, &f->fb.base));
    finish_ok(&f->fb, "tok-2", now_s() + LONG_S);
    assert_ready_token(f, &f->fa, "tok-2");
}

static void test_drop_lets_a_fetch_through_the_same_token_backoff(void **state)
{
    struct fixture *f = *state;
    hand_back_rejected(f, now_s() + LONG_S);
    token_invalidate(f->t, &f->fa.base, "tok-1");
    assert_ready_status(f, &f->fa, TOKEN_THROTTLED);
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, TOKEN_DROP, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 3);
    finish_ok(&f->fa, "tok-2", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-2");
}

static void test_throttle_after_an_old_failure_says_throttled(void **state)
{
    struct fixture *f = *state;
    struct token_result out;
    assert_int_equal(get(f, &f->fa, &f->rec[0], 0, &out), TOKEN_WAIT);
    struct token_result bad = failed_result(WECHAT_HTTP_ERROR, 0, 502);
    fetched(&f->fa, &bad);
    /* Through the failure backoff (an operator), then the token is rejected and handed back. */
    assert_int_equal(get(f, &f->fa, &f->rec[1], TOKEN_DROP, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    token_invalidate(f->t, &f->fa.base, "tok-1");
    assert_int_equal(get(f, &f->fa, &f->rec[2], 0, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    token_invalidate(f->t, &f->fa.base, "tok-1");
    drain(f->la);
    assert_string_equal(f->rec[2].res.token, "tok-1");
    /* Only the latest fetch counts: not the failure before it. */
    assert_ready_status(f, &f->fb, TOKEN_THROTTLED);
    assert_int_equal(f->fa.starts, 3);
}

/* ---- TOKEN_DROP, TOKEN_FORCE ---- */

static void test_drop_forgets_the_cached_token_and_fetches(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-1", now_s() + LONG_S);
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fb, r, TOKEN_DROP, &out), TOKEN_WAIT);
    assert_int_equal(f->fb.starts, 1);
    assert_false(f->fb.last_force);
    /* Dropped for everyone: an ordinary get now waits for the same fetch. */
    struct rec *r2 = &f->rec[1];
    assert_int_equal(get(f, &f->fa, r2, 0, &out), TOKEN_WAIT);
    assert_int_equal(token_fetches(f->t), 2);
    finish_ok(&f->fb, "tok-2", now_s() + LONG_S);
    drain(f->la);
    drain(f->lb);
    assert_string_equal(r->res.token, "tok-2");
    assert_string_equal(r2->res.token, "tok-2");
    assert_ready_token(f, &f->fa, "tok-2");
}

static void test_force_starts_a_forced_fetch(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, TOKEN_FORCE, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 1);
    assert_true(f->fa.last_force);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-1");

    /* The admin refresh with ?force=true: drop and force. */
    struct rec *r2 = &f->rec[1];
    assert_int_equal(get(f, &f->fb, r2, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    assert_int_equal(f->fb.starts, 1);
    assert_true(f->fb.last_force);
    finish_ok(&f->fb, "tok-2", now_s() + LONG_S);
    drain(f->lb);
    assert_string_equal(r2->res.token, "tok-2");
    assert_int_equal(token_fetches(f->t), 2);
}

static void test_forced_get_during_fetch_waits_for_a_forced_fetch(void **state)
{
    struct fixture *f = *state;
    struct rec *plain = &f->rec[0], *forced = &f->rec[1], *forced2 = &f->rec[2], *late = &f->rec[3];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, plain, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, 1);
    assert_false(f->fa.last_force);
    /* Forced gets from another worker while the ordinary fetch runs: no second fetch yet. */
    assert_int_equal(get(f, &f->fb, forced, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fb, forced2, TOKEN_FORCE, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts + f->fb.starts, 1);
    assert_int_equal(token_fetches(f->t), 1);

    /* The ordinary fetch answers its own waiters only, and one forced fetch follows at once. */
    finish_ok(&f->fa, "tok-old", now_s() + LONG_S);
    assert_int_equal(f->fa.starts, 2);
    assert_true(f->fa.last_force);
    assert_int_equal(f->fb.starts, 0);
    assert_int_equal(token_fetches(f->t), 2);
    assert_true(token_fetching_on(f->t, &f->fa.base));
    drain(f->la);
    drain(f->lb);
    assert_int_equal(plain->calls, 1);
    assert_string_equal(plain->res.token, "tok-old");
    assert_int_equal(forced->calls, 0);
    assert_int_equal(forced2->calls, 0);

    /* The token it fetched is cached meanwhile; a waiter now joins the forced fetch. */
    assert_int_equal(get(f, &f->fa, late, TOKEN_DROP, &out), TOKEN_WAIT);
    assert_int_equal(token_fetches(f->t), 2);
    finish_ok(&f->fa, "tok-brand-new", now_s() + LONG_S);
    assert_int_equal(f->fa.starts, 2);
    drain(f->la);
    drain(f->lb);
    assert_int_equal(forced->calls, 1);
    assert_int_equal(forced2->calls, 1);
    assert_int_equal(late->calls, 1);
    assert_string_equal(forced->res.token, "tok-brand-new");
    assert_string_equal(forced2->res.token, "tok-brand-new");
    assert_string_equal(late->res.token, "tok-brand-new");
    assert_false(token_fetching_on(f->t, &f->fa.base));
    assert_ready_token(f, &f->fb, "tok-brand-new");
}

static void test_forced_fetch_that_cannot_start_fails_its_waiters(void **state)
{
    struct fixture *f = *state;
    struct rec *plain = &f->rec[0], *forced = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, plain, 0, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fb, forced, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    f->fa.start_rc = -1;
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    assert_int_equal(f->fa.starts, 2);
    assert_false(token_fetching_on(f->t, &f->fa.base));
    drain(f->la);
    drain(f->lb);
    assert_string_equal(plain->res.token, "tok-1");
    assert_int_equal(forced->calls, 1);
    assert_int_equal(forced->res.status, TOKEN_NOMEM); /* ours: 503 internal, not shutting_down */
}

/* ---- unregistering ---- */

static void test_unregister_of_fetching_fetcher_aborts_waiters_on_every_loop(void **state)
{
    struct fixture *f = *state;
    struct rec *ra = &f->rec[0], *rb = &f->rec[1], *rforced = &f->rec[2];
    struct token_result out;
    rb->stop = f->lb;
    pthread_t tb;
    assert_int_equal(pthread_create(&tb, NULL, run_loop_thread, f->lb), 0);

    assert_int_equal(get(f, &f->fa, ra, 0, &out), TOKEN_WAIT);
    struct remote_get g;
    remote_get(&g, f, f->lb, &f->fb, rb, 0);
    assert_int_equal(g.rc, TOKEN_WAIT);
    /* A forced get waiting for the fetch after this one is aborted too. */
    assert_int_equal(get(f, &f->fa, rforced, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);

    token_fetcher_unregister(&f->fa.base);
    assert_int_equal(f->fa.cancels, 1);
    assert_int_equal(f->fa.starts, 1); /* no forced fetch follows */
    assert_false(token_fetching_on(f->t, &f->fa.base));
    assert_int_equal(pthread_join(tb, NULL), 0);
    assert_int_equal(rb->calls, 1);
    assert_true(pthread_equal(rb->thread, tb));
    assert_int_equal(rb->res.status, TOKEN_ABORTED);
    drain(f->la);
    assert_int_equal(ra->calls, 1);
    assert_int_equal(ra->res.status, TOKEN_ABORTED);
    assert_int_equal(rforced->calls, 1);
    assert_int_equal(rforced->res.status, TOKEN_ABORTED);

    /* Nothing held: the next get fetches on a remaining fetcher. */
    struct rec *r = &f->rec[3];
    assert_int_equal(get(f, &f->fb, r, 0, &out), TOKEN_WAIT);
    assert_int_equal(f->fb.starts, 1);
    finish_ok(&f->fb, "tok-1", now_s() + LONG_S);
    drain(f->lb);
    assert_string_equal(r->res.token, "tok-1");
}

static void test_unregister_of_idle_fetcher_is_quiet(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    token_fetcher_unregister(&f->fb.base); /* not fetching */
    assert_int_equal(f->fb.cancels, 0);
    assert_int_equal(f->fa.cancels, 0);
    assert_true(token_fetching_on(f->t, &f->fa.base));
    drain(f->la);
    assert_int_equal(r->calls, 0);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_int_equal(r->calls, 1);
    assert_string_equal(r->res.token, "tok-1");

    /* With no fetch at all. */
    token_fetcher_unregister(&f->fa.base);
    assert_int_equal(f->fa.cancels, 0);
}

static void test_late_result_from_former_owner_is_ignored(void **state)
{
    struct fixture *f = *state;
    struct rec *ra = &f->rec[0], *rb = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, ra, 0, &out), TOKEN_WAIT);
    token_fetcher_unregister(&f->fa.base);
    drain(f->la);
    assert_int_equal(ra->res.status, TOKEN_ABORTED);

    assert_int_equal(get(f, &f->fb, rb, 0, &out), TOKEN_WAIT);
    /* fa's cancelled fetch answers anyway: not its fetch any more. */
    finish_ok(&f->fa, "tok-stale", now_s() + LONG_S);
    assert_true(token_fetching_on(f->t, &f->fb.base));
    drain(f->lb);
    assert_int_equal(rb->calls, 0);
    finish_ok(&f->fb, "tok-1", now_s() + LONG_S);
    drain(f->lb);
    assert_int_equal(rb->calls, 1);
    assert_string_equal(rb->res.token, "tok-1");
    assert_int_equal(ra->calls, 1);
}

static void test_result_with_no_fetch_running_is_ignored(void **state)
{
    struct fixture *f = *state;
    cache_token(f, "tok-1", now_s() + LONG_S);
    finish_ok(&f->fa, "tok-dup", now_s() + LONG_S); /* a second end of the same fetch */
    finish_ok(&f->fb, "tok-other", now_s() + LONG_S);
    struct token_result bad = failed_result(WECHAT_TIMEOUT, 0, 0);
    fetched(&f->fb, &bad);
    assert_ready_token(f, &f->fa, "tok-1");
    assert_int_equal(token_fetches(f->t), 1);
}

static void test_result_from_a_fetcher_not_fetching_is_ignored(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    finish_ok(&f->fb, "tok-wrong", now_s() + LONG_S);
    assert_true(token_fetching_on(f->t, &f->fa.base));
    drain(f->la);
    assert_int_equal(r->calls, 0);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-1");
}

/* ---- cancelled waiters ---- */

static void test_cancel_before_fetch_ends_is_never_called(void **state)
{
    struct fixture *f = *state;
    struct token_result out;
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(f, &f->fa, &f->rec[i], 0, &out), TOKEN_WAIT);
    /* The first, one in the middle and the newest. */
    async_cancel(&f->rec[0].slot);
    async_cancel(&f->rec[2].slot);
    async_cancel(&f->rec[3].slot);
    assert_false(async_pending(&f->rec[0].slot));
    assert_true(token_fetching_on(f->t, &f->fa.base)); /* the fetch goes on */
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    drain(f->la);
    assert_int_equal(f->rec[0].calls, 0);
    assert_int_equal(f->rec[1].calls, 1);
    assert_int_equal(f->rec[2].calls, 0);
    assert_int_equal(f->rec[3].calls, 0);
    assert_int_equal(f->fa.cancels, 0);
}

static void test_cancel_after_fetch_ended_before_loop_ran_is_never_called(void **state)
{
    struct fixture *f = *state;
    struct rec *ra = &f->rec[0], *rb = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, ra, 0, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fa, rb, 0, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    async_cancel(&ra->slot);
    drain(f->la);
    assert_int_equal(ra->calls, 0);
    assert_int_equal(rb->calls, 1);
}

static void test_cancel_after_abort_before_loop_ran_is_never_called(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fb, r, 0, &out), TOKEN_WAIT);
    token_fetcher_unregister(&f->fb.base);
    async_cancel(&r->slot);
    drain(f->lb);
    assert_int_equal(r->calls, 0);
}

static void test_cancel_forced_waiter_is_never_called(void **state)
{
    struct fixture *f = *state;
    struct rec *plain = &f->rec[0], *forced = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, plain, 0, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fa, forced, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    async_cancel(&forced->slot);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    if (token_fetching_on(f->t, &f->fa.base)) /* a forced fetch nobody waits for may still run */
        finish_ok(&f->fa, "tok-2", now_s() + LONG_S);
    drain(f->la);
    assert_int_equal(plain->calls, 1);
    assert_int_equal(forced->calls, 0);
}

/* A forced fetch spends one of WeChat's 20 a day: none for waiters that all left. */
static void test_forced_fetch_nobody_waits_for_any_more_does_not_run(void **state)
{
    struct fixture *f = *state;
    struct rec *plain = &f->rec[0], *forced = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, plain, 0, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fb, forced, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    async_cancel(&forced->slot);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    assert_false(token_fetching_on(f->t, &f->fa.base));
    assert_int_equal(f->fa.starts + f->fb.starts, 1);
    assert_int_equal(token_fetches(f->t), 1);
    drain(f->la);
    drain(f->lb);
    assert_int_equal(plain->calls, 1);
    assert_int_equal(forced->calls, 0);
}

/* Two operators forcing at once: the second joins the running forced fetch, which is exactly
 * what it asked for, instead of queueing another (WeChat refuses force_refresh within 30 s). */
static void test_forced_get_during_a_forced_fetch_joins_it(void **state)
{
    struct fixture *f = *state;
    struct rec *a = &f->rec[0], *b = &f->rec[1];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, a, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    assert_int_equal(get(f, &f->fb, b, TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-forced", now_s() + LONG_S);
    assert_false(token_fetching_on(f->t, &f->fa.base));
    assert_int_equal(f->fa.starts + f->fb.starts, 1);
    drain(f->la);
    drain(f->lb);
    assert_string_equal(a->res.token, "tok-forced");
    assert_string_equal(b->res.token, "tok-forced");
}

/* TOKEN_FORCE asks for a brand-new token even when one is cached (it is not DROP's job). */
static void test_force_alone_does_not_answer_from_the_cache(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    cache_token(f, "tok-cached", now_s() + LONG_S);
    int before = f->fa.starts;
    assert_int_equal(get(f, &f->fa, r, TOKEN_FORCE, &out), TOKEN_WAIT);
    assert_int_equal(f->fa.starts, before + 1);
    assert_true(f->fa.last_force);
    finish_ok(&f->fa, "tok-new", now_s() + LONG_S);
    drain(f->la);
    assert_string_equal(r->res.token, "tok-new");
}

static void test_loop_free_frees_a_posted_cancelled_waiter(void **state)
{
    struct fixture *f = *state;
    struct rec *r = &f->rec[0];
    struct token_result out;
    assert_int_equal(get(f, &f->fa, r, 0, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-1", now_s() + LONG_S);
    async_cancel(&r->slot);
    /* The loop never runs again: loop_free runs the queued delivery, which frees the waiter
     * (ASan reports a leak otherwise) without calling it. */
    loop_free(f->la);
    f->la = NULL;
    assert_int_equal(r->calls, 0);
}

/* ---- token_usable, token_fetches, free ---- */

static void test_token_usable(void **state)
{
    struct fixture *f = *state;
    int64_t now = now_s();
    char longest[WECHAT_TOKEN_MAX + 2];
    memset(longest, 'a', WECHAT_TOKEN_MAX);
    longest[WECHAT_TOKEN_MAX] = '\0';
    assert_true(token_usable(f->t, "tok-1", now + LONG_S, now));
    assert_true(token_usable(f->t, longest, now + LONG_S, now));
    longest[WECHAT_TOKEN_MAX] = 'a';
    longest[WECHAT_TOKEN_MAX + 1] = '\0';
    assert_false(token_usable(f->t, longest, now + LONG_S, now)); /* too long */
    assert_false(token_usable(f->t, "", now + LONG_S, now));
    assert_false(token_usable(f->t, NULL, now + LONG_S, now));
    /* Not of WeChat's shape (a shared record written by something else): never handed on. */
    assert_false(token_usable(f->t, "tok 1", now + LONG_S, now));
    assert_false(token_usable(f->t, "tok-1\r\nX-Evil: 1", now + LONG_S, now));
    assert_false(token_usable(f->t, "tok-\x01", now + LONG_S, now));
    assert_false(token_usable(f->t, "tok-\xc3\xa9", now + LONG_S, now));
    /* Short: it would be refreshed at once. */
    assert_true(token_usable(f->t, "tok-1", now + 300, now));
    assert_false(token_usable(f->t, "tok-1", now + 299, now));
    assert_false(token_usable(f->t, "tok-1", now + SHORT_S, now));
    assert_false(token_usable(f->t, "tok-1", now - 1, now));
    assert_false(token_usable(f->t, "tok-1", 0, now));
    /* Measured from the now given. */
    assert_true(token_usable(f->t, "tok-1", now + SHORT_S, now - 1000));

    /* The token WeChat rejected is not worth taking; another is. */
    cache_token(f, "tok-bad", now + LONG_S);
    assert_true(token_usable(f->t, "tok-bad", now + LONG_S, now));
    token_invalidate(f->t, &f->fa.base, "tok-bad");
    assert_false(token_usable(f->t, "tok-bad", now + LONG_S, now));
    assert_true(token_usable(f->t, "tok-1", now + LONG_S, now));
    assert_true(token_usable(f->t, "tok-ba", now + LONG_S, now));
}

static void test_fetches_counts_every_fetch_started(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(token_fetches(f->t), 0);
    cache_token(f, "tok-short", now_s() + SHORT_S);
    assert_int_equal(token_fetches(f->t), 1);
    assert_ready_token(f, &f->fb, "tok-short"); /* background refresh */
    assert_int_equal(token_fetches(f->t), 2);
    assert_ready_token(f, &f->fa, "tok-short");
    assert_int_equal(token_fetches(f->t), 2);
    finish_ok(&f->fb, "tok-1", now_s() + LONG_S);
    assert_ready_token(f, &f->fa, "tok-1");
    assert_int_equal(token_fetches(f->t), 2);
    struct token_result out;
    assert_int_equal(get(f, &f->fa, &f->rec[0], TOKEN_DROP, &out), TOKEN_WAIT);
    assert_int_equal(token_fetches(f->t), 3);
    assert_int_equal(get(f, &f->fb, &f->rec[1], TOKEN_DROP | TOKEN_FORCE, &out), TOKEN_WAIT);
    finish_ok(&f->fa, "tok-2", now_s() + LONG_S); /* the forced one follows */
    assert_int_equal(token_fetches(f->t), 4);
    finish_ok(&f->fa, "tok-3", now_s() + LONG_S);
    drain(f->la);
    drain(f->lb);
    assert_int_equal(token_fetches(f->t), 4);
    assert_int_equal(f->fa.starts + f->fb.starts, 4);
}

static void test_free_accepts_null(void **state)
{
    (void)state;
    token_free(NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_first_get_starts_one_fetch_and_waits),
        T(test_waiter_is_woken_on_its_own_loop),
        T(test_cached_token_is_ready_without_fetch),
        T(test_expired_token_is_not_served),
        T(test_concurrent_gets_share_one_fetch),
        T(test_waiter_on_second_thread_woken_on_its_thread),
        T(test_gets_racing_on_four_threads_cause_one_fetch),
        T(test_short_token_is_served_and_refreshed_once_in_background),
        T(test_refresh_returning_the_same_short_token_backs_off_until_expiry),
        T(test_refresh_returning_another_short_token_backs_off_too),
        T(test_refresh_returning_a_renewed_token_does_not_back_off),
        T(test_drop_lifts_the_short_token_backoff),
        T(test_failed_refresh_keeps_serving_and_waits_before_retrying),
        T(test_failed_fetch_is_shared_for_one_second_then_retried),
        T(test_latest_failure_is_the_one_returned),
        T(test_aborted_fetch_does_not_back_off),
        T(test_drop_lets_a_fetch_through_the_failure_backoff),
        T(test_start_failure_is_nomem_and_not_held_back),
        T(test_fetch_failed_on_our_side_is_not_held_back),
        T(test_refresh_failed_on_our_side_keeps_serving_and_waits),
        T(test_refresh_that_cannot_start_still_serves_the_token),
        T(test_invalidate_is_compare_and_swap),
        T(test_invalidate_with_no_token_or_no_op),
        T(test_invalidate_during_fetch_keeps_the_fetch),
        T(test_rejected_token_handed_back_throttles_fetches),
        T(test_rejected_token_handed_back_is_not_refreshed_early),
        T(test_drop_lets_a_fetch_through_the_same_token_backoff),
        T(test_throttle_after_an_old_failure_says_throttled),
        T(test_drop_forgets_the_cached_token_and_fetches),
        T(test_force_starts_a_forced_fetch),
        T(test_forced_get_during_fetch_waits_for_a_forced_fetch),
        T(test_forced_fetch_that_cannot_start_fails_its_waiters),
        T(test_unregister_of_fetching_fetcher_aborts_waiters_on_every_loop),
        T(test_unregister_of_idle_fetcher_is_quiet),
        T(test_late_result_from_former_owner_is_ignored),
        T(test_result_with_no_fetch_running_is_ignored),
        T(test_result_from_a_fetcher_not_fetching_is_ignored),
        T(test_cancel_before_fetch_ends_is_never_called),
        T(test_cancel_after_fetch_ended_before_loop_ran_is_never_called),
        T(test_cancel_after_abort_before_loop_ran_is_never_called),
        T(test_cancel_forced_waiter_is_never_called),
        T(test_forced_fetch_nobody_waits_for_any_more_does_not_run),
        T(test_forced_get_during_a_forced_fetch_joins_it),
        T(test_force_alone_does_not_answer_from_the_cache),
        T(test_loop_free_frees_a_posted_cancelled_waiter),
        T(test_token_usable),
        T(test_fetches_counts_every_fetch_started),
        T(test_free_accepts_null),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
