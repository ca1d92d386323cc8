/*
 * runtime/async: the one shape of every asynchronous operation (a WeChat call, a store
 * operation, a wait for another request's code exchange or for the access token, a timer).
 *
 * An operation is started into its owner's pending slot: an HTTP request has exactly one
 * (http_request_slot()). While the operation runs the slot holds it; just before the operation
 * calls its owner back it empties the slot (async_end()), so the callback may start the next
 * operation into the same slot. async_cancel() empties the slot and guarantees that the
 * operation's callback never runs, whatever state it is in; what the operation still has to
 * undo (a claim to release, a waiter to unlink) is its own business. So whoever ends a request
 * (its answer, its deadline, a shutdown) cancels one slot and may then free everything the
 * request owns.
 *
 * An operation that may finish before its start function returns calls its callback directly,
 * without touching the slot. A start function given no slot (NULL) starts a fire-and-forget
 * operation, whose callback must then be NULL.
 *
 * Only from the thread that owns the slot. Nothing here allocates.
 */
#ifndef WXLOGIN_RUNTIME_ASYNC_H
#define WXLOGIN_RUNTIME_ASYNC_H

#include <stdbool.h>
#include <stddef.h>

struct async;

/* Stops the operation: after it returns, the operation's callback never runs. */
typedef void async_cancel_fn(struct async *a);

/* The owner's one pending slot. Zero-initialised = empty. */
struct async_slot {
    struct async *op;
};

/* Embedded in each operation's own state. */
struct async {
    async_cancel_fn *cancel;
    struct async_slot *slot;
};

/* Starts a: it occupies slot (which must be empty) until async_end() or async_cancel(). */
static inline void async_begin(struct async *a, struct async_slot *slot, async_cancel_fn *cancel)
{
    a->cancel = cancel;
    a->slot = slot;
    if (slot != NULL)
        slot->op = a;
}

/* The operation is about to call back: frees its slot. */
static inline void async_end(struct async *a)
{
    if (a->slot != NULL && a->slot->op == a)
        a->slot->op = NULL;
    a->slot = NULL;
}

/* Cancels whatever occupies slot (nothing when empty). */
static inline void async_cancel(struct async_slot *slot)
{
    struct async *a = slot->op;
    if (a == NULL)
        return;
    slot->op = NULL;
    a->slot = NULL;
    a->cancel(a);
}

static inline bool async_pending(const struct async_slot *slot)
{
    return slot->op != NULL;
}

#endif
