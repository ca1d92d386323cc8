/*
 * loop: epoll + a binary min-heap of timers + an eventfd for cross-thread posts.
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

#define LOOP_MAX_EVENTS 256

struct loop_io {
    struct loop *loop;
    int fd;
    loop_io_fn *fn;
    void *arg;
    bool dead;
    struct loop_io *next_dead;
    struct loop_io *prev, *next; /* the loop's live watchers */
};

struct loop_post_item {
    loop_post_fn *fn;
    void *arg;
    struct loop_post_item *next;
};

struct loop {
    int epfd;
    int wakefd;
    bool stopping;
    uint64_t now_ms;

    struct loop_timer **heap;
    size_t heap_len, heap_cap;

    struct loop_io *live; /* registered watchers */
    struct loop_io *dead; /* freed after each dispatch batch */
    struct loop_io *wake_io;

    pthread_mutex_t post_mu;
    struct loop_post_item *post_head, *post_tail;
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

/* ---- timers: min-heap ordered by due_ms ---- */

static void heap_swap(struct loop *loop, size_t a, size_t b)
{
    struct loop_timer *t = loop->heap[a];
    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->heap_idx = a;
    loop->heap[b]->heap_idx = b;
}

static void heap_up(struct loop *loop, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->due_ms <= loop->heap[i]->due_ms)
            break;
        heap_swap(loop, i, parent);
        i = parent;
    }
}

static void heap_down(struct loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < loop->heap_len && loop->heap[l]->due_ms < loop->heap[m]->due_ms)
            m = l;
        if (r < loop->heap_len && loop->heap[r]->due_ms < loop->heap[m]->due_ms)
            m = r;
        if (m == i)
            return;
        heap_swap(loop, i, m);
        i = m;
    }
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn, void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->due_ms = 0;
    t->heap_idx = SIZE_MAX;
}

bool loop_timer_armed(const struct loop_timer *t)
{
    return t->heap_idx != SIZE_MAX;
}

void loop_timer_stop(struct loop *loop, struct loop_timer *t)
{
    size_t i = t->heap_idx;
    if (i == SIZE_MAX)
        return;
    t->heap_idx = SIZE_MAX;
    loop->heap_len--;
    if (i == loop->heap_len)
        return;
    loop->heap[i] = loop->heap[loop->heap_len];
    loop->heap[i]->heap_idx = i;
    heap_down(loop, i);
    heap_up(loop, i);
}

int loop_timer_start(struct loop *loop, struct loop_timer *t, uint64_t delay_ms)
{
    loop_timer_stop(loop, t);
    if (loop->heap_len == loop->heap_cap) {
        size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        struct loop_timer **h = realloc(loop->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        loop->heap = h;
        loop->heap_cap = cap;
    }
    t->due_ms = loop_clock_ms() + delay_ms;
    t->heap_idx = loop->heap_len;
    loop->heap[loop->heap_len++] = t;
    heap_up(loop, t->heap_idx);
    return 0;
}

/* Runs every timer that is due. A timer re-armed by its own callback for "now" waits for the
 * next iteration, so a zero-delay timer cannot starve io. */
static void run_timers(struct loop *loop)
{
    uint64_t now = loop->now_ms;
    while (loop->heap_len > 0 && loop->heap[0]->due_ms <= now) {
        struct loop_timer *t = loop->heap[0];
        loop_timer_stop(loop, t);
        t->fn(t->arg);
    }
}

static int next_timeout_ms(const struct loop *loop)
{
    if (loop->heap_len == 0)
        return -1;
    uint64_t now = loop_clock_ms();
    uint64_t due = loop->heap[0]->due_ms;
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
    io->next = loop->live;
    if (loop->live != NULL)
        loop->live->prev = io;
    loop->live = io;
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
    struct loop *loop = io->loop;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    if (io->prev != NULL)
        io->prev->next = io->next;
    else
        loop->live = io->next;
    if (io->next != NULL)
        io->next->prev = io->prev;
    io->dead = true;
    io->next_dead = io->loop->dead;
    io->loop->dead = io;
}

static void free_dead(struct loop *loop)
{
    while (loop->dead != NULL) {
        struct loop_io *io = loop->dead;
        loop->dead = io->next_dead;
        free(io);
    }
}

/* ---- cross-thread posts ---- */

static void run_posts(struct loop *loop)
{
    pthread_mutex_lock(&loop->post_mu);
    struct loop_post_item *items = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_mu);

    while (items != NULL) {
        struct loop_post_item *it = items;
        items = it->next;
        it->fn(it->arg);
        free(it);
    }
}

static void on_wake(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    (void)events;
    uint64_t n;
    while (read(fd, &n, sizeof(n)) == (ssize_t)sizeof(n))
        ;
    run_posts(arg);
}

int loop_post(struct loop *loop, loop_post_fn *fn, void *arg)
{
    struct loop_post_item *it = malloc(sizeof(*it));
    if (it == NULL)
        return -ENOMEM;
    it->fn = fn;
    it->arg = arg;
    it->next = NULL;
    pthread_mutex_lock(&loop->post_mu);
    if (loop->post_tail != NULL)
        loop->post_tail->next = it;
    else
        loop->post_head = it;
    loop->post_tail = it;
    pthread_mutex_unlock(&loop->post_mu);

    uint64_t one = 1;
    /* EAGAIN means the counter is saturated: the loop is woken anyway. */
    while (write(loop->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
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
    pthread_mutex_init(&loop->post_mu, NULL);
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        goto fail;
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wakefd < 0)
        goto fail;
    loop->wake_io = loop_io_add(loop, loop->wakefd, EPOLLIN, on_wake, loop);
    if (loop->wake_io == NULL)
        goto fail;
    loop->now_ms = loop_clock_ms();
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
    while (loop->live != NULL)
        loop_io_del(loop->live);
    free_dead(loop);
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    pthread_mutex_destroy(&loop->post_mu);
    free(loop->heap);
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
        int n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, next_timeout_ms(loop));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        loop->now_ms = loop_clock_ms();
        for (int i = 0; i < n; i++) {
            struct loop_io *io = evs[i].data.ptr;
            if (!io->dead)
                io->fn(io, io->fd, evs[i].events, io->arg);
        }
        free_dead(loop);
        run_timers(loop);
        free_dead(loop);
    }
    return 0;
}
