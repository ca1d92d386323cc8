/*
 * loop: one epoll event loop per thread.
 *
 * Every worker thread owns exactly one loop, and everything that thread serves (its
 * libmicrohttpd daemon, its libcurl multi handle, later its Redis connection) registers file
 * descriptors and timers here. Nothing in a loop is thread-safe except loop_post(), the one way
 * another thread may ask this loop to run something (it wakes the loop through an eventfd).
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

/* A timer is embedded in its owner's struct; the loop never allocates or frees it. */
struct loop_timer {
    loop_timer_fn *fn;
    void *arg;
    uint64_t due_ms; /* monotonic ms */
    size_t heap_idx; /* position in the loop's heap; SIZE_MAX when not armed */
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
 * Watches fd for events (EPOLLIN/EPOLLOUT...). The returned handle is owned by the loop and
 * stays valid until loop_io_del(); the fd stays owned by the caller. Returns NULL on failure.
 */
struct loop_io *loop_io_add(struct loop *loop, int fd, uint32_t events, loop_io_fn *fn, void *arg);
int loop_io_mod(struct loop_io *io, uint32_t events);
/* Stops watching; safe to call from inside the io's own callback. Accepts NULL. */
void loop_io_del(struct loop_io *io);

/* Initialises a timer (not armed). */
void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn, void *arg);
/* (Re)arms t to fire once after delay_ms; 0 fires on the next iteration. */
int loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t delay_ms);
/* Disarms t if armed. */
void loop_timer_stop(struct loop *loop, struct loop_timer *t);
bool loop_timer_armed(const struct loop_timer *t);

/*
 * Thread-safe: queues fn(arg) to run on the loop's thread and wakes it. Returns 0 or -ENOMEM.
 * Calls still queued when the loop is freed run inside loop_free(), so whatever they carry is
 * released; they must not expect the loop to run again.
 */
int loop_post(struct loop *loop, loop_post_fn *fn, void *arg);

#endif
