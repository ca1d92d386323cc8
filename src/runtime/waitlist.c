#include "runtime/waitlist.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "runtime/async.h"

enum waiter_state { W_QUEUED, W_POSTED, W_CANCELLED };

struct waiter {
    struct async async;
    pthread_mutex_t *mu;
    struct loop *loop;
    waiter_fn *trampoline;
    void (*fn)(void);
    void *arg;
    enum waiter_state state; /* guarded by *mu */
    struct list node;        /* on a waitlist, or taken */
    struct loop_post post;
    size_t result_size;
    unsigned char result[]; /* the copy handed to fn */
};

void waitlist_init(struct waitlist *wl)
{
    list_init(&wl->waiters);
}

bool waitlist_empty(const struct waitlist *wl)
{
    return list_empty(&wl->waiters);
}

static void waiter_free(struct waiter *w)
{
    crypto_wipe(w->result, w->result_size); /* results may hold a token */
    free(w);
}

/* From the waiter's thread (async_cancel). */
static void waiter_cancel(struct async *a)
{
    struct waiter *w = (struct waiter *)(void *)a;
    pthread_mutex_lock(w->mu);
    if (w->state == W_POSTED) {
        w->state = W_CANCELLED; /* deliver() is on its way to this thread and frees it */
        pthread_mutex_unlock(w->mu);
        return;
    }
    list_unlink(&w->node);
    pthread_mutex_unlock(w->mu);
    waiter_free(w);
}

struct waiter *waiter_new(pthread_mutex_t *mu, struct loop *loop, waiter_fn *trampoline,
                          void (*fn)(void), void *arg, size_t result_size)
{
    struct waiter *w = calloc(1, sizeof(*w) + result_size);
    if (w == NULL)
        return NULL;
    w->mu = mu;
    w->loop = loop;
    w->trampoline = trampoline;
    w->fn = fn;
    w->arg = arg;
    w->state = W_QUEUED;
    w->result_size = result_size;
    return w;
}

void waitlist_add(struct waitlist *wl, struct waiter *w, struct async_slot *slot)
{
    list_push_back(&wl->waiters, &w->node);
    async_begin(&w->async, slot, waiter_cancel);
}

void waitlist_splice(struct waitlist *to, struct waitlist *from)
{
    list_splice(&to->waiters, &from->waiters);
}

void waitlist_take(struct waitlist *wl, const void *result, struct list *taken)
{
    list_init(taken);
    list_splice(taken, &wl->waiters);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, taken)
    {
        struct waiter *w = list_item(pos, struct waiter, node);
        w->state = W_POSTED;
        memcpy(w->result, result, w->result_size);
    }
}

/* Runs on the waiter's loop. */
static void deliver(void *arg)
{
    struct waiter *w = arg;
    pthread_mutex_lock(w->mu);
    bool cancelled = w->state == W_CANCELLED;
    pthread_mutex_unlock(w->mu);
    if (!cancelled) {
        async_end(&w->async);
        w->trampoline(w->result, w->fn, w->arg);
    }
    waiter_free(w);
}

void waiters_post(struct list *taken)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, taken)
    {
        struct waiter *w = list_item(pos, struct waiter, node);
        list_unlink(pos);
        loop_post_item(w->loop, &w->post, deliver, w);
    }
}
