/*
 * runtime/waitlist: requests on any worker thread waiting for work another thread finishes.
 *
 * The owner of the work (the code-exchange table, the access token) keeps a waitlist under its
 * own mutex. When the work is done it takes the waiters (copying the result into each) and
 * posts them: each waiter's callback then runs on the waiter's own loop, through loop_post,
 * never on the finishing thread. A waiter is an asynchronous operation in its request's pending
 * slot (runtime/async.h): cancelling the slot, at any time until its callback has run, means
 * the callback never runs; a cancelled waiter is freed by whoever holds it last.
 *
 * Locking: every function taking `mu` is called with it NOT held; the others with it held.
 */
#ifndef WXLOGIN_RUNTIME_WAITLIST_H
#define WXLOGIN_RUNTIME_WAITLIST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/list.h"

struct async_slot;
struct loop;
struct waiter;

/*
 * The owner's trampoline: calls fn (the owner's typed callback, stored as a generic function
 * pointer) with result, a copy of what waitlist_take() was given, valid during the call.
 */
typedef void waiter_fn(const void *result, void (*fn)(void), void *arg);

struct waitlist {
    struct list waiters;
};

void waitlist_init(struct waitlist *wl);
/* Lock held: true when nobody waits (cancelled waiters are gone from the list). */
bool waitlist_empty(const struct waitlist *wl);

/* A waiter for a result of result_size bytes, to be woken on loop by trampoline(result, fn,
 * arg). mu is the owner's mutex. NULL when out of memory. */
struct waiter *waiter_new(pthread_mutex_t *mu, struct loop *loop, waiter_fn *trampoline,
                          void (*fn)(void), void *arg, size_t result_size);

/* Lock held, from the waiter's own thread: adds w, which now occupies slot. */
void waitlist_add(struct waitlist *wl, struct waiter *w, struct async_slot *slot);
/* Lock held: detaches every waiter, giving each a copy of result; returns them (a list anchor
 * filled here) for waiters_post(). */
void waitlist_take(struct waitlist *wl, const void *result, struct list *taken);
/* Lock held: moves every waiter of from to the end of to (both under the same lock). */
void waitlist_splice(struct waitlist *to, struct waitlist *from);
/* Lock not held: posts each taken waiter to its loop. Cannot fail. */
void waiters_post(struct list *taken);

#endif
