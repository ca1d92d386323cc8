/*
 * runtime/workers: N worker threads, one loop each, and the process's signal handling.
 *
 * Workers are set up one by one on the main thread (so a bad listen address is reported before
 * anything runs, and workers after the first can join the port the first one bound), then each
 * runs its loop on its own thread. SIGINT/SIGTERM are taken by the main thread with sigwait();
 * it asks every worker, through loop_post(), to stop, and joins them.
 */
#ifndef WXLOGIN_RUNTIME_WORKERS_H
#define WXLOGIN_RUNTIME_WORKERS_H

struct loop;

struct worker {
    int id;
    struct loop *loop;
    void *data; /* the service's per-worker state */
};

struct worker_ops {
    /* On the main thread, before any worker runs. Returns 0 or -1 (start aborted; done() is
     * still called, so init may leave partial state in w->data). */
    int (*init)(struct worker *w, void *arg);
    /* On the worker's thread when a stop is asked: stop accepting, finish, then loop_stop(). */
    void (*stop)(struct worker *w);
    /* On the main thread after the worker's loop returned; frees w->data. */
    void (*done)(struct worker *w);
};

/*
 * Blocks SIGINT/SIGTERM/SIGPIPE for every thread; call first thing in main, before any thread
 * (libcurl's resolver threads included) exists.
 */
void workers_block_signals(void);

/* Runs n workers until SIGINT or SIGTERM. Returns 0 on a clean stop, -1 if setup failed. */
int workers_run(int n, const struct worker_ops *ops, void *arg);

#endif
