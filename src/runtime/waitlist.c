#include "runtime/waitlist.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "loop/loop.h"

enum waiter_state { W_QUEUED, W_POSTED, W_CANCELLED };

struct waiter {
    pthread_mutex_t *mu;
    struct loop *loop;
    waiter_fn *trampoline;
    void (*fn)(void);
    void *arg;
    enum waiter_state state; /* guarded by *mu */
    struct waitlist *list;   /* while W_QUEUED */
    struct waiter *next;
    size_t result_size;
    unsigned char result[]; /* the copy handed to fn */
};

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

static void waiter_free(struct waiter *w)
{
    crypto_wipe(w->result, w->result_size); /* results may hold a token */
    free(w);
}

void waitlist_add(struct waitlist *wl, struct waiter *w)
{
    w->list = wl;
    w->next = wl->head;
    wl->head = w;
}

void waitlist_splice(struct waitlist *to, struct waitlist *from)
{
    struct waiter **tail = &to->head;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = from->head;
    for (struct waiter *w = from->head; w != NULL; w = w->next)
        w->list = to;
    from->head = NULL;
}

struct waiter *waitlist_take(struct waitlist *wl, const void *result)
{
    struct waiter *ws = wl->head;
    wl->head = NULL;
    for (struct waiter *w = ws; w != NULL; w = w->next) {
        w->state = W_POSTED;
        memcpy(w->result, result, w->result_size);
    }
    return ws;
}

/* Runs on the waiter's loop. */
static void deliver(void *arg)
{
    struct waiter *w = arg;
    pthread_mutex_lock(w->mu);
    bool cancelled = w->state == W_CANCELLED;
    pthread_mutex_unlock(w->mu);
    if (!cancelled)
        w->trampoline(w->result, w->fn, w->arg);
    waiter_free(w);
}

void waiters_post(struct waiter *ws)
{
    while (ws != NULL) {
        struct waiter *next = ws->next;
        if (loop_post(ws->loop, deliver, ws) != 0) {
            /* Out of memory: the waiter stays until its request is cancelled at shutdown,
             * when waitlist_cancel() frees it. */
            pthread_mutex_lock(ws->mu);
            ws->state = W_CANCELLED;
            ws->next = NULL;
            pthread_mutex_unlock(ws->mu);
        }
        ws = next;
    }
}

void waitlist_cancel(struct waiter *w)
{
    pthread_mutex_lock(w->mu);
    if (w->state == W_POSTED) {
        w->state = W_CANCELLED; /* deliver() is on its way to this thread and frees it */
        pthread_mutex_unlock(w->mu);
        return;
    }
    if (w->state == W_QUEUED) {
        struct waiter **pp = &w->list->head;
        while (*pp != NULL && *pp != w)
            pp = &(*pp)->next;
        if (*pp == w)
            *pp = w->next;
    }
    /* Queued (now unlinked), or left behind by a failed post: nobody else holds it. */
    pthread_mutex_unlock(w->mu);
    waiter_free(w);
}
