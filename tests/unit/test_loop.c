/*
 * Unit tests for loop/loop.h: timer order, stopping and re-arming, cross-thread posts and io
 * watchers (including deletion from inside a callback, which ASan checks).
 *
 * Every test arms an alarm first: a loop that never wakes kills the test instead of hanging it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "loop/loop.h"

#define WATCHDOG_S 10

struct fixture {
    struct loop *loop;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->loop = loop_new();
    if (f->loop == NULL) {
        free(f);
        return -1;
    }
    alarm(WATCHDOG_S);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    alarm(0);
    loop_free(f->loop);
    free(f);
    return 0;
}

static void run(struct loop *loop)
{
    assert_int_equal(loop_run(loop), 0);
}

/* ---- timers ---- */

struct recorder {
    int order[64];
    size_t n;
};

struct rec_timer {
    struct loop_timer t;
    struct recorder *rec;
    int id;
    uint64_t due_ms;
};

static void on_record(void *arg)
{
    struct rec_timer *rt = arg;
    rt->due_ms = rt->t.due_ms;
    if (rt->rec->n < 64)
        rt->rec->order[rt->rec->n++] = rt->id;
}

static void on_stop(void *arg)
{
    loop_stop(arg);
}

static void rec_timer_init(struct rec_timer *rt, struct recorder *rec, int id)
{
    rt->rec = rec;
    rt->id = id;
    rt->due_ms = 0;
    loop_timer_init(&rt->t, on_record, rt);
}

static void test_timers_fire_in_due_order(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer a, b, c;
    struct loop_timer stop;
    rec_timer_init(&a, &rec, 30);
    rec_timer_init(&b, &rec, 10);
    rec_timer_init(&c, &rec, 20);
    loop_timer_init(&stop, on_stop, f->loop);
    loop_timer_start(f->loop, &a.t, 30);
    loop_timer_start(f->loop, &b.t, 10);
    loop_timer_start(f->loop, &c.t, 20);
    loop_timer_start(f->loop, &stop, 50);
    uint64_t start = loop_clock_ms();
    run(f->loop);
    assert_true(loop_clock_ms() - start >= 50);
    assert_int_equal(rec.n, 3);
    assert_int_equal(rec.order[0], 10);
    assert_int_equal(rec.order[1], 20);
    assert_int_equal(rec.order[2], 30);
    assert_false(loop_timer_armed(&a.t));
    assert_false(loop_timer_armed(&stop));
}

static void test_timer_does_not_fire_early(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer a;
    struct loop_timer stop;
    rec_timer_init(&a, &rec, 1);
    loop_timer_init(&stop, on_stop, f->loop);
    uint64_t start = loop_clock_ms();
    loop_timer_start(f->loop, &a.t, 40);
    loop_timer_start(f->loop, &stop, 40);
    run(f->loop);
    assert_int_equal(rec.n, 1);
    assert_true(a.due_ms >= start + 40);
    assert_true(loop_clock_ms() >= start + 40);
}

static void test_timer_stop_prevents_firing(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer a, b;
    struct loop_timer stop;
    rec_timer_init(&a, &rec, 1);
    rec_timer_init(&b, &rec, 2);
    loop_timer_init(&stop, on_stop, f->loop);
    loop_timer_start(f->loop, &a.t, 10);
    loop_timer_start(f->loop, &b.t, 15);
    loop_timer_start(f->loop, &stop, 40);
    assert_true(loop_timer_armed(&a.t));
    loop_timer_stop(f->loop, &a.t);
    assert_false(loop_timer_armed(&a.t));
    loop_timer_stop(f->loop, &a.t); /* stopping twice is harmless */
    run(f->loop);
    assert_int_equal(rec.n, 1);
    assert_int_equal(rec.order[0], 2);
}

static void test_timer_rearm_moves_it(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer a, b;
    struct loop_timer stop;
    rec_timer_init(&a, &rec, 1);
    rec_timer_init(&b, &rec, 2);
    loop_timer_init(&stop, on_stop, f->loop);
    loop_timer_start(f->loop, &a.t, 10);
    loop_timer_start(f->loop, &b.t, 20);
    loop_timer_start(f->loop, &a.t, 40); /* later than b now */
    loop_timer_start(f->loop, &stop, 60);
    run(f->loop);
    assert_int_equal(rec.n, 2);
    assert_int_equal(rec.order[0], 2);
    assert_int_equal(rec.order[1], 1);
}

static void test_timer_rearm_earlier(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer a, b;
    struct loop_timer stop;
    rec_timer_init(&a, &rec, 1);
    rec_timer_init(&b, &rec, 2);
    loop_timer_init(&stop, on_stop, f->loop);
    loop_timer_start(f->loop, &a.t, 1000);
    loop_timer_start(f->loop, &b.t, 20);
    loop_timer_start(f->loop, &a.t, 5);
    loop_timer_start(f->loop, &stop, 40);
    uint64_t start = loop_clock_ms();
    run(f->loop);
    assert_true(loop_clock_ms() - start < 900);
    assert_int_equal(rec.n, 2);
    assert_int_equal(rec.order[0], 1);
    assert_int_equal(rec.order[1], 2);
}

/* Many timers, some stopped from the middle of the heap: the rest fire, in due order. */
#define MANY 48

static void test_many_timers_with_stops_fire_in_order(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer t[MANY];
    struct loop_timer stop;
    loop_timer_init(&stop, on_stop, f->loop);
    for (int i = 0; i < MANY; i++) {
        rec_timer_init(&t[i], &rec, i);
        loop_timer_start(f->loop, &t[i].t, (uint64_t)((i * 37) % 50));
    }
    for (int i = 0; i < MANY; i += 3)
        loop_timer_stop(f->loop, &t[i].t);
    loop_timer_start(f->loop, &stop, 80);
    run(f->loop);
    assert_int_equal(rec.n, MANY - (MANY + 2) / 3);
    uint64_t prev = 0;
    for (size_t k = 0; k < rec.n; k++) {
        int id = rec.order[k];
        assert_true(id % 3 != 0);
        assert_true(t[id].due_ms >= prev);
        prev = t[id].due_ms;
    }
}

struct rearm {
    struct loop_timer t;
    struct loop *loop;
    int left, runs;
    uint64_t at[8]; /* monotonic ms of each run */
};

#define REARM_MS 5

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_rearm(void *arg)
{
    struct rearm *r = arg;
    r->at[r->runs++] = mono_ms();
    if (--r->left > 0)
        loop_timer_start(r->loop, &r->t, REARM_MS);
    else
        loop_stop(r->loop);
}

/* A timer re-armed from its own callback runs again, each time after its delay (not at once,
 * not never). */
static void test_timer_rearmed_from_its_callback(void **state)
{
    struct fixture *f = *state;
    struct rearm r = {.loop = f->loop, .left = 5};
    loop_timer_init(&r.t, on_rearm, &r);
    loop_timer_start(f->loop, &r.t, 0);
    run(f->loop);
    assert_int_equal(r.left, 0);
    assert_int_equal(r.runs, 5);
    for (int i = 1; i < r.runs; i++)
        assert_true(r.at[i] - r.at[i - 1] >= REARM_MS - 1); /* ms clocks round: allow 1 */
    assert_false(loop_timer_armed(&r.t));
}

/*
 * A timer re-armed at 0 from its own callback must run once per loop iteration, after the
 * iteration's io, not again and again inside one pass (which starves io). An always-readable
 * eventfd counts iterations; every run of the timer must see a new one.
 */
struct spin {
    struct loop_timer t;
    struct loop *loop;
    int runs;
    long iteration; /* bumped by the io watcher */
    long seen[64];  /* the iteration each run happened in */
};

static void on_spin_io(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    (void)fd;
    (void)events;
    struct spin *s = arg;
    s->iteration++;
}

static void on_spin_timer(void *arg)
{
    struct spin *s = arg;
    s->seen[s->runs++] = s->iteration;
    if (s->runs == 64)
        loop_stop(s->loop);
    else
        loop_timer_start(s->loop, &s->t, 0);
}

static void test_timer_rearmed_at_zero_waits_for_next_iteration(void **state)
{
    struct fixture *f = *state;
    struct spin s = {.loop = f->loop};
    int efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* readable for ever: never drained */
    assert_true(efd >= 0);
    struct loop_io *io = loop_io_add(f->loop, efd, EPOLLIN, on_spin_io, &s);
    assert_non_null(io);
    loop_timer_init(&s.t, on_spin_timer, &s);
    loop_timer_start(f->loop, &s.t, 0);
    run(f->loop);
    assert_int_equal(s.runs, 64);
    for (int i = 1; i < 64; i++)
        assert_true(s.seen[i] > s.seen[i - 1]); /* each run in an iteration of its own */
    loop_io_del(io);
    close(efd);
}

/* Timers armed from inside a pass with the same due time fire in arming order, and the pass
 * leaves them to the next iteration. */
static void test_timers_due_together_fire_in_arming_order(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer t[16];
    struct loop_timer stop;
    loop_timer_init(&stop, on_stop, f->loop);
    for (int i = 0; i < 16; i++) {
        rec_timer_init(&t[i], &rec, i);
        loop_timer_start(f->loop, &t[i].t, 5);
    }
    loop_timer_start(f->loop, &stop, 30);
    run(f->loop);
    assert_int_equal(rec.n, 16);
    for (int i = 0; i < 16; i++)
        assert_int_equal(rec.order[i], i);
}

/* A random mix of arming, re-arming and stopping, checked against what must fire: the heap is
 * intrusive (a pairing heap), so this exercises its cuts and melds. */
static void test_random_arm_stop_rearm_fire_in_order(void **state)
{
    struct fixture *f = *state;
    enum { N = 64 };
    struct recorder rec = {.n = 0};
    struct rec_timer t[N];
    bool live[N];
    struct loop_timer stop;
    unsigned seed = 12345;
    loop_timer_init(&stop, on_stop, f->loop);
    for (int i = 0; i < N; i++) {
        rec_timer_init(&t[i], &rec, i);
        live[i] = false;
    }
    for (int step = 0; step < 2000; step++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % N);
        if ((seed >> 20) % 3 == 0) {
            loop_timer_stop(f->loop, &t[i].t);
            live[i] = false;
        } else {
            loop_timer_start(f->loop, &t[i].t, (seed >> 4) % 40);
            live[i] = true;
        }
        assert_int_equal(loop_timer_armed(&t[i].t), live[i]);
    }
    size_t want = 0;
    for (int i = 0; i < N; i++)
        want += live[i];
    loop_timer_start(f->loop, &stop, 60);
    run(f->loop);
    assert_int_equal(rec.n, want);
    uint64_t prev = 0;
    for (size_t k = 0; k < rec.n; k++) {
        int id = rec.order[k];
        assert_true(live[id]);
        assert_true(t[id].due_ms >= prev);
        prev = t[id].due_ms;
    }
}

static void test_loop_free_with_armed_timer(void **state)
{
    struct fixture *f = *state;
    struct recorder rec = {.n = 0};
    struct rec_timer a;
    rec_timer_init(&a, &rec, 1);
    loop_timer_start(f->loop, &a.t, 100000);
    /* teardown frees the loop with a still armed: must neither fire it nor leak */
    assert_true(loop_timer_armed(&a.t));
    assert_int_equal(rec.n, 0);
}

/* ---- posts ---- */

struct post_ctx {
    struct loop *loop;
    pthread_t loop_thread;
    pthread_t ran_on;
    int runs;
};

static void on_post_stop(void *arg)
{
    struct post_ctx *p = arg;
    p->ran_on = pthread_self();
    p->runs++;
    loop_stop(p->loop);
}

static void *poster(void *arg)
{
    struct post_ctx *p = arg;
    usleep(20 * 1000); /* let the loop block in epoll_wait with no timers */
    if (loop_post(p->loop, on_post_stop, p) != 0)
        return (void *)1;
    return NULL;
}

static void test_post_from_thread_runs_on_loop_thread(void **state)
{
    struct fixture *f = *state;
    struct post_ctx p = {.loop = f->loop, .loop_thread = pthread_self()};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, poster, &p), 0);
    run(f->loop); /* no timers, no io: only the post can wake and stop it */
    void *ret = NULL;
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_null(ret);
    assert_int_equal(p.runs, 1);
    assert_true(pthread_equal(p.ran_on, p.loop_thread));
    assert_false(pthread_equal(p.ran_on, th));
}

struct counter {
    int n;
};

static void on_count(void *arg)
{
    ((struct counter *)arg)->n++;
}

static void test_posts_run_in_order_before_stop(void **state)
{
    struct fixture *f = *state;
    struct counter c = {0};
    struct post_ctx p = {.loop = f->loop, .loop_thread = pthread_self()};
    for (int i = 0; i < 100; i++)
        assert_int_equal(loop_post(f->loop, on_count, &c), 0);
    assert_int_equal(loop_post(f->loop, on_post_stop, &p), 0);
    assert_int_equal(c.n, 0); /* nothing runs until the loop does */
    run(f->loop);
    assert_int_equal(c.n, 100);
    assert_int_equal(p.runs, 1);
}

/* "Calls still queued when the loop is freed run inside loop_free()" */
/* A post embedded in its owner (loop_post_item) belongs to the owner: whatever bytes its
 * storage held before, the loop runs it and never frees it (ASan checks). */
static void test_embedded_post_runs_and_is_not_freed(void **state)
{
    struct fixture *f = *state;
    struct post_ctx p = {.loop = f->loop, .loop_thread = pthread_self()};
    struct {
        struct loop_post item;
        int canary;
    } *owner = malloc(sizeof(*owner));
    assert_non_null(owner);
    memset(owner, 0xa5, sizeof(*owner)); /* storage that was never zeroed */
    owner->canary = 7;
    loop_post_item(f->loop, &owner->item, on_post_stop, &p);
    run(f->loop);
    assert_int_equal(p.runs, 1);
    assert_int_equal(owner->canary, 7);
    free(owner);
}

static void test_posts_still_queued_at_free_run_in_free(void **state)
{
    struct fixture *f = *state;
    struct counter c = {0};
    assert_int_equal(loop_post(f->loop, on_count, &c), 0);
    assert_int_equal(loop_post(f->loop, on_count, &c), 0);
    assert_int_equal(c.n, 0);
    loop_free(f->loop);
    f->loop = NULL;
    assert_int_equal(c.n, 2);
}

/* ---- io ---- */

struct io_ctx {
    struct loop *loop;
    struct loop_io *io;
    struct loop_io *other;
    int fd;
    int calls;
    uint32_t events;
};

static void on_readable_del_self(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    struct io_ctx *c = arg;
    char buf[16];
    c->calls++;
    c->events = events;
    assert_true(fd == c->fd);
    assert_true(io == c->io);
    (void)!read(fd, buf, sizeof(buf));
    loop_io_del(io);
    loop_io_del(io); /* twice is harmless */
    loop_stop(c->loop);
}

static void test_io_fires_and_del_inside_callback(void **state)
{
    struct fixture *f = *state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct io_ctx c = {.loop = f->loop, .fd = p[0]};
    c.io = loop_io_add(f->loop, p[0], EPOLLIN, on_readable_del_self, &c);
    assert_non_null(c.io);
    assert_int_equal(write(p[1], "x", 1), 1);
    run(f->loop);
    assert_int_equal(c.calls, 1);
    assert_true(c.events & EPOLLIN);
    /* deleted: more data must not call it again */
    assert_int_equal(write(p[1], "y", 1), 1);
    struct loop_timer stop;
    loop_timer_init(&stop, on_stop, f->loop);
    loop_timer_start(f->loop, &stop, 30);
    run(f->loop);
    assert_int_equal(c.calls, 1);
    close(p[0]);
    close(p[1]);
}

static void on_eventfd(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)events;
    struct io_ctx *c = arg;
    uint64_t v;
    assert_int_equal(read(fd, &v, sizeof(v)), (ssize_t)sizeof(v));
    c->calls += (int)v;
    loop_io_del(io);
    loop_stop(c->loop);
}

static void test_io_eventfd(void **state)
{
    struct fixture *f = *state;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(efd >= 0);
    struct io_ctx c = {.loop = f->loop, .fd = efd};
    c.io = loop_io_add(f->loop, efd, EPOLLIN, on_eventfd, &c);
    assert_non_null(c.io);
    uint64_t three = 3;
    assert_int_equal(write(efd, &three, sizeof(three)), (ssize_t)sizeof(three));
    run(f->loop);
    assert_int_equal(c.calls, 3);
    close(efd);
}

/* Two watchers ready in one batch; whichever runs first deletes both: the other must not run. */
static void on_ready_del_both(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    (void)fd;
    (void)events;
    struct io_ctx *c = arg;
    c->calls++;
    loop_io_del(c->io);
    loop_io_del(c->other);
    loop_stop(c->loop);
}

static void test_io_del_other_watcher_in_same_batch(void **state)
{
    struct fixture *f = *state;
    int a[2], b[2];
    assert_int_equal(pipe(a), 0);
    assert_int_equal(pipe(b), 0);
    struct io_ctx ca = {.loop = f->loop, .fd = a[0]}, cb = {.loop = f->loop, .fd = b[0]};
    ca.io = loop_io_add(f->loop, a[0], EPOLLIN, on_ready_del_both, &ca);
    cb.io = loop_io_add(f->loop, b[0], EPOLLIN, on_ready_del_both, &cb);
    assert_non_null(ca.io);
    assert_non_null(cb.io);
    ca.other = cb.io;
    cb.other = ca.io;
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "x", 1), 1);
    run(f->loop);
    assert_int_equal(ca.calls + cb.calls, 1);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

static void on_writable(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)fd;
    struct io_ctx *c = arg;
    c->calls++;
    c->events = events;
    loop_io_del(io);
    loop_stop(c->loop);
}

static void test_io_mod_switches_events(void **state)
{
    struct fixture *f = *state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct io_ctx c = {.loop = f->loop, .fd = p[1]};
    /* the write end is never readable: watching EPOLLIN alone would wait forever */
    c.io = loop_io_add(f->loop, p[1], EPOLLIN, on_writable, &c);
    assert_non_null(c.io);
    assert_int_equal(loop_io_mod(c.io, EPOLLOUT), 0);
    run(f->loop);
    assert_int_equal(c.calls, 1);
    assert_true(c.events & EPOLLOUT);
    close(p[0]);
    close(p[1]);
}

static void test_io_watcher_left_at_free_is_freed(void **state)
{
    struct fixture *f = *state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct io_ctx c = {.loop = f->loop, .fd = p[0]};
    c.io = loop_io_add(f->loop, p[0], EPOLLIN, on_readable_del_self, &c);
    assert_non_null(c.io);
    /* "Registered io watchers are freed": teardown's loop_free must not leak it (ASan) */
    loop_free(f->loop);
    f->loop = NULL;
    close(p[0]);
    close(p[1]);
}

static void test_io_add_bad_fd_fails(void **state)
{
    struct fixture *f = *state;
    struct io_ctx c = {.loop = f->loop};
    assert_null(loop_io_add(f->loop, -1, EPOLLIN, on_readable_del_self, &c));
}

static void test_loop_del_null_and_free_null(void **state)
{
    (void)state;
    loop_io_del(NULL);
    loop_free(NULL);
}

static void test_clock_is_monotonic_ms(void **state)
{
    struct fixture *f = *state;
    uint64_t a = loop_clock_ms();
    usleep(15 * 1000);
    uint64_t b = loop_clock_ms();
    assert_true(b - a >= 14 && b - a < 5000);
    assert_true(loop_now_ms(f->loop) <= b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_timers_fire_in_due_order),
        T(test_timer_does_not_fire_early),
        T(test_timer_stop_prevents_firing),
        T(test_timer_rearm_moves_it),
        T(test_timer_rearm_earlier),
        T(test_many_timers_with_stops_fire_in_order),
        T(test_timer_rearmed_from_its_callback),
        T(test_timer_rearmed_at_zero_waits_for_next_iteration),
        T(test_timers_due_together_fire_in_arming_order),
        T(test_random_arm_stop_rearm_fire_in_order),
        T(test_loop_free_with_armed_timer),
        T(test_post_from_thread_runs_on_loop_thread),
        T(test_posts_run_in_order_before_stop),
        T(test_embedded_post_runs_and_is_not_freed),
        T(test_posts_still_queued_at_free_run_in_free),
        T(test_io_fires_and_del_inside_callback),
        T(test_io_eventfd),
        T(test_io_del_other_watcher_in_same_batch),
        T(test_io_mod_switches_events),
        T(test_io_watcher_left_at_free_is_freed),
        T(test_io_add_bad_fd_fails),
        T(test_loop_del_null_and_free_null),
        T(test_clock_is_monotonic_ms),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
