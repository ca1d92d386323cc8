/*
 * loop: one epoll event loop per thread.
 *
 * Every worker thread owns exactly one loop, and everything that thread serves (its
 * libmicrohttpd daemon, its libcurl multi handle, its Redis connection) registers file
 * descriptors and timers here. Nothing in a loop is thread-safe except loop_post(), the one way
 * another thread may ask this loop to run something (it wakes the loop through an eventfd).
 *
 * Timers and posts are intrusive: their storage belongs to the caller, so arming a timer or
 * posting a prepared item cannot fail. A timer's due time counts from the loop's cached clock
 * (taken once per iteration), so a timer re-armed at 0 from a callback runs on the next
 * iteration, after io, never in a spin inside the current one.
 */
#ifndef WXLOGIN_LOOP_H
#define WXLOGIN_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct loop_io;

typedef void loop_io_fn(struct loop_io *io, int fd, uint32_t events, void *arg);
typedef void loop_timer_fn(void *arg);
typedef void loop_post_fn(void *arg);
typedef void loop_hook_fn(void *arg);

/* A timer is embedded in its owner's struct; the loop never allocates or frees it. The fields
 * are the loop's (a pairing-heap node). */
struct loop_timer {
    loop_timer_fn *fn;
    void *arg;
    uint64_t due_ms; /* monotonic ms */
    uint64_t seq;    /* arming order: ties fire first armed, first run */
    struct loop_timer *child, *next, *prev;
    bool armed;
};

/* A post, embedded in whatever it carries; owned by the poster until fn runs. */
struct loop_post {
    loop_post_fn *fn;
    void *arg;
    struct loop_post *next;
    bool heap; /* allocated by loop_post(): freed after fn ran */
};

/* Creates a loop. Returns NULL on failure (errno set). */
struct loop *loop_new(void);
/* Frees the loop. Registered io watchers are freed; armed timers are forgotten. Accepts NULL. */
void loop_free(struct loop *loop);

/*
 * Runs until loop_stop(). Returns 0, or -errno when epoll_wait fails for good.
 */
int loop_run(struct loop *loop);
/* Makes loop_run() return after the current iteration. Only from the loop's own thread. */
void loop_stop(struct loop *loop);

/* Monotonic clock in ms, cached per loop iteration. */
uint64_t loop_now_ms(const struct loop *loop);
/* Uncached monotonic clock in ms. */
uint64_t loop_clock_ms(void);

/*
 * fn(arg) runs each time the loop is about to wait for events (after the timers of an
 * iteration): a place to flush what was batched during the iteration. One hook per loop.
 */
void loop_set_idle_hook(struct loop *loop, loop_hook_fn *fn, void *arg);

/*
 * Watches fd for events (EPOLLIN/EPOLLOUT...). The returned handle is owned by the loop and
 * stays valid until loop_io_del(); the fd stays owned by the caller. Returns NULL on failure.
 */
struct loop_io *loop_io_add(struct loop *loop, int fd, uint32_t events, loop_io_fn *fn, void *arg);
int loop_io_mod(struct loop_io *io, uint32_t events);
/* Stops watching; safe to call from inside the io's own callback. Accepts NULL. */
void loop_io_del(struct loop_io *io);

/* Initialises a timer (not armed). */
void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn, void *arg);
/* (Re)arms t to fire once delay_ms after the loop's cached now; 0 fires on the next
 * iteration. Cannot fail. */
void loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t delay_ms);
/* Disarms t if armed. */
void loop_timer_stop(struct loop *loop, struct loop_timer *t);
bool loop_timer_armed(const struct loop_timer *t);

/*
 * Thread-safe: runs p->fn(p->arg) on the loop's thread and wakes it. p must stay valid until
 * then. Cannot fail. Posts still queued when the loop is freed run inside loop_free(), so
 * whatever they carry is released; they must not expect the loop to run again.
 */
void loop_post_item(struct loop *loop, struct loop_post *p, loop_post_fn *fn, void *arg);
/* As loop_post_item() with an item allocated here. Returns 0 or -ENOMEM. */
int loop_post(struct loop *loop, loop_post_fn *fn, void *arg);
/* From the loop's own thread: runs the posts queued so far, now. For an owner that must know
 * nothing it was posted is still queued before it goes away. */
void loop_run_posts(struct loop *loop);

#endif
