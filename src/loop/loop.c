/*
 * loop: epoll + a pairing heap of intrusive timers + an eventfd for cross-thread posts.
 *
 * Timers form a pairing heap ordered by (due_ms, seq): insertion is O(1) and never allocates,
 * removal of the earliest or of any timer is O(log n) amortised. A pass over due timers stops
 * at the first timer armed during that pass, so a callback that re-arms itself at 0 cannot
 * starve io.
 *
 * Io watchers removed while events are being dispatched are only marked dead and freed after
 * the batch, so a callback may delete any watcher (its own or another) without leaving a
 * dangling pointer in the pending epoll events.
 */
#include "loop/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/list.h"

#define LOOP_MAX_EVENTS 256

struct loop_io {
    struct loop *loop;
    int fd;
    loop_io_fn *fn;
    void *arg;
    bool dead;
    struct list node; /* on the loop's live or dead list */
};

struct loop {
    int epfd;
    int wakefd;
    bool stopping;
    bool dispatching; /* inside loop_run's handling of one iteration */
    uint64_t now_ms;

    struct loop_timer *timers; /* the heap's root */
    uint64_t timer_seq;

    struct list live; /* registered watchers */
    struct list dead; /* freed after each dispatch batch */
    struct loop_io *wake_io;

    loop_hook_fn *idle_fn;
    void *idle_arg;

    pthread_mutex_t post_mu;
    struct loop_post *post_head, *post_tail;
};

uint64_t loop_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t loop_now_ms(const struct loop *loop)
{
    return loop->now_ms;
}

void loop_set_idle_hook(struct loop *loop, loop_hook_fn *fn, void *arg)
{
    loop->idle_fn = fn;
    loop->idle_arg = arg;
}

/* ---- timers: pairing heap ordered by (due_ms, seq) ---- */

static bool timer_before(const struct loop_timer *a, const struct loop_timer *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

/* Melds two heaps (roots with no siblings); returns the new root. */
static struct loop_timer *meld(struct loop_timer *a, struct loop_timer *b)
{
    if (a == NULL)
        return b;
    if (b == NULL)
        return a;
    if (timer_before(b, a)) {
        struct loop_timer *t = a;
        a = b;
        b = t;
    }
    /* b becomes a's first child; a first child's prev is its parent. */
    b->prev = a;
    b->next = a->child;
    if (a->child != NULL)
        a->child->prev = b;
    a->child = b;
    return a;
}

/* The standard two-pass merge of a sibling list into one heap. */
static struct loop_timer *merge_pairs(struct loop_timer *first)
{
    struct loop_timer *stack = NULL;
    while (first != NULL) {
        struct loop_timer *a = first, *b = first->next;
        first = b != NULL ? b->next : NULL;
        a->next = a->prev = NULL;
        if (b != NULL)
            b->next = b->prev = NULL;
        struct loop_timer *m = meld(a, b);
        m->next = stack; /* the first pass's results, linked through next */
        stack = m;
    }
    struct loop_timer *root = NULL;
    while (stack != NULL) {
        struct loop_timer *next = stack->next;
        stack->next = NULL;
        root = meld(root, stack);
        stack = next;
    }
    return root;
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn, void *arg)
{
    memset(t, 0, sizeof(*t));
    t->fn = fn;
    t->arg = arg;
}

bool loop_timer_armed(const struct loop_timer *t)
{
    return t->armed;
}

void loop_timer_stop(struct loop *loop, struct loop_timer *t)
{
    if (!t->armed)
        return;
    t->armed = false;
    if (t == loop->timers) {
        loop->timers = merge_pairs(t->child);
    } else {
        /* Cut t's subtree out of its parent's child list, then meld its children back. */
        if (t->prev->child == t)
            t->prev->child = t->next;
        else
            t->prev->next = t->next;
        if (t->next != NULL)
            t->next->prev = t->prev;
        loop->timers = meld(loop->timers, merge_pairs(t->child));
    }
    t->child = t->next = t->prev = NULL;
}

void loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t delay_ms)
{
    loop_timer_stop(loop, t);
    /* Outside an iteration (setup, tests) the cached clock may be old: count from now. */
    if (!loop->dispatching)
        loop->now_ms = loop_clock_ms();
    t->due_ms = loop->now_ms + delay_ms;
    t->seq = ++loop->timer_seq;
    t->child = t->next = t->prev = NULL;
    t->armed = true;
    loop->timers = meld(loop->timers, t);
}

/* Runs every timer that was due when the pass started. A timer armed during the pass sorts
 * after every timer armed before it with the same due time, so the pass ends at it. */
static void run_timers(struct loop *loop)
{
    uint64_t now = loop->now_ms, last_seq = loop->timer_seq;
    while (loop->timers != NULL && loop->timers->due_ms <= now && loop->timers->seq <= last_seq) {
        struct loop_timer *t = loop->timers;
        loop_timer_stop(loop, t);
        t->fn(t->arg);
    }
}

static int next_timeout_ms(const struct loop *loop)
{
    if (loop->timers == NULL)
        return -1;
    uint64_t now = loop_clock_ms();
    uint64_t due = loop->timers->due_ms;
    if (due <= now)
        return 0;
    uint64_t d = due - now;
    return d > 60000 ? 60000 : (int)d;
}

/* ---- io ---- */

struct loop_io *loop_io_add(struct loop *loop, int fd, uint32_t events, loop_io_fn *fn, void *arg)
{
    struct loop_io *io = calloc(1, sizeof(*io));
    if (io == NULL)
        return NULL;
    io->loop = loop;
    io->fd = fd;
    io->fn = fn;
    io->arg = arg;
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        free(io);
        return NULL;
    }
    list_push_back(&loop->live, &io->node);
    return io;
}

int loop_io_mod(struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    return epoll_ctl(io->loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) == 0 ? 0 : -errno;
}

void loop_io_del(struct loop_io *io)
{
    if (io == NULL || io->dead)
        return;
    /* The fd may already be closed by its owner (curl closes before telling us); ENOENT/EBADF
     * are then expected and harmless. */
    epoll_ctl(io->loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    list_unlink(&io->node);
    io->dead = true;
    list_push_back(&io->loop->dead, &io->node);
}

static void free_dead(struct loop *loop)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &loop->dead)
    {
        list_unlink(pos);
        free(list_item(pos, struct loop_io, node));
    }
}

/* ---- cross-thread posts ---- */

static void run_posts(struct loop *loop)
{
    pthread_mutex_lock(&loop->post_mu);
    struct loop_post *items = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_mu);

    while (items != NULL) {
        struct loop_post *p = items;
        items = p->next;
        bool heap = p->heap;
        p->fn(p->arg);
        if (heap)
            free(p);
    }
}

void loop_run_posts(struct loop *loop)
{
    run_posts(loop);
}

static void on_wake(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    (void)events;
    uint64_t n;
    /* One read takes the whole counter: the eventfd is not readable again until a post. */
    ssize_t r = read(fd, &n, sizeof(n));
    (void)r;
    run_posts(arg);
}

static void enqueue(struct loop *loop, struct loop_post *p, loop_post_fn *fn, void *arg, bool heap)
{
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    p->heap = heap;
    pthread_mutex_lock(&loop->post_mu);
    /* Only the post that makes the queue non-empty wakes the loop: the others find a wake on
     * its way (the loop drains the eventfd before it takes the queue). */
    bool wake = loop->post_head == NULL;
    if (loop->post_tail != NULL)
        loop->post_tail->next = p;
    else
        loop->post_head = p;
    loop->post_tail = p;
    pthread_mutex_unlock(&loop->post_mu);

    if (!wake)
        return;
    uint64_t one = 1;
    /* EAGAIN means the counter is saturated: the loop is woken anyway. */
    while (write(loop->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void loop_post_item(struct loop *loop, struct loop_post *p, loop_post_fn *fn, void *arg)
{
    enqueue(loop, p, fn, arg, false);
}

int loop_post(struct loop *loop, loop_post_fn *fn, void *arg)
{
    struct loop_post *p = malloc(sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    enqueue(loop, p, fn, arg, true);
    return 0;
}

/* ---- lifecycle ---- */

struct loop *loop_new(void)
{
    struct loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL)
        return NULL;
    loop->epfd = -1;
    loop->wakefd = -1;
    list_init(&loop->live);
    list_init(&loop->dead);
    pthread_mutex_init(&loop->post_mu, NULL);
    loop->now_ms = loop_clock_ms();
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        goto fail;
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wakefd < 0)
        goto fail;
    loop->wake_io = loop_io_add(loop, loop->wakefd, EPOLLIN, on_wake, loop);
    if (loop->wake_io == NULL)
        goto fail;
    return loop;
fail:
    loop_free(loop);
    return NULL;
}

void loop_free(struct loop *loop)
{
    if (loop == NULL)
        return;
    run_posts(loop);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &loop->live) loop_io_del(list_item(pos, struct loop_io, node));
    free_dead(loop);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    pthread_mutex_destroy(&loop->post_mu);
    free(loop);
}

void loop_stop(struct loop *loop)
{
    loop->stopping = true;
}

int loop_run(struct loop *loop)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    loop->stopping = false;
    while (!loop->stopping) {
        if (loop->idle_fn != NULL)
            loop->idle_fn(loop->idle_arg);
        int n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, next_timeout_ms(loop));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        loop->now_ms = loop_clock_ms();
        loop->dispatching = true;
        for (int i = 0; i < n; i++) {
            struct loop_io *io = evs[i].data.ptr;
            if (!io->dead)
                io->fn(io, io->fd, evs[i].events, io->arg);
        }
        free_dead(loop);
        run_timers(loop);
        free_dead(loop);
        loop->dispatching = false;
    }
    if (loop->idle_fn != NULL)
        loop->idle_fn(loop->idle_arg);
    return 0;
}
