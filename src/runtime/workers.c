#include "runtime/workers.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "util/arena.h"

struct thread {
    struct worker w;
    const struct worker_ops *ops;
    pthread_t tid;
    bool started;
    struct loop_post stop;
};

void workers_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* Writes to closed sockets must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
}

/* The loop's idle hook: the access lines of an iteration go out in one write. */
static void flush_log(void *arg)
{
    (void)arg;
    log_flush();
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    log_batch(true);
    /* This thread's own counters, before it serves anything (no-op with metrics off). */
    if (metrics_thread_attach() != 0)
        log_msg(LOG_WARN, "worker %d: no memory for its own metrics; sharing", t->w.id);
    loop_set_idle_hook(t->w.loop, flush_log, NULL);
    int rc = loop_run(t->w.loop);
    log_batch(false);
    arena_thread_done();
    if (rc != 0) {
        log_msg(LOG_ERROR, "worker %d: event loop failed: %s", t->w.id, strerror(-rc));
        kill(getpid(), SIGTERM); /* take the whole process down in order */
    }
    return NULL;
}

static void post_stop(void *arg)
{
    struct thread *t = arg;
    t->ops->stop(&t->w);
}

int workers_run(int n, const struct worker_ops *ops, void *arg)
{
    struct thread *ts = calloc((size_t)n, sizeof(*ts));
    int rc = -1, ninit = 0;
    if (ts == NULL)
        return -1;

    for (; ninit < n; ninit++) {
        struct thread *t = &ts[ninit];
        t->ops = ops;
        t->w.id = ninit;
        t->w.loop = loop_new();
        if (t->w.loop == NULL)
            goto out;
        if (ops->init(&t->w, arg) != 0) {
            ops->done(&t->w); /* releases whatever init set up before failing */
            loop_free(t->w.loop);
            goto out;
        }
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]) != 0) {
            log_msg(LOG_ERROR, "cannot start worker thread %d", i);
            break;
        }
        ts[i].started = true;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    if (ts[n - 1].started) {
        if (ops->ready != NULL)
            ops->ready(arg);
        /* SIGHUP without a reload hook is ignored rather than fatal. */
        while (sigwait(&set, &sig) == 0 && sig == SIGHUP) {
            if (ops->reload != NULL)
                ops->reload(arg);
        }
    }
    log_kv(LOG_INFO, "stopping", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM", NULL);
    if (ts[n - 1].started && ops->stopping != NULL)
        ops->stopping(arg);
    for (int i = 0; i < n; i++)
        if (ts[i].started)
            loop_post_item(ts[i].w.loop, &ts[i].stop, post_stop, &ts[i]);
    for (int i = 0; i < n; i++)
        if (ts[i].started)
            pthread_join(ts[i].tid, NULL);
    rc = ts[n - 1].started ? 0 : -1;
out:
    for (int i = 0; i < ninit; i++) {
        ops->done(&ts[i].w);
        loop_free(ts[i].w.loop);
    }
    arena_thread_done(); /* chunks of requests freed on this thread */
    free(ts);
    return rc;
}
