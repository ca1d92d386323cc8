/*
 * runtime/workers: N worker threads, one loop each, and the process's signal handling.
 *
 * Workers are set up one by one on the main thread (so a bad listen address is reported before
 * anything runs, and workers after the first can join the port the first one bound), then each
 * runs its loop on its own thread. SIGINT/SIGTERM/SIGHUP are taken by the main thread with
 * sigwait(): SIGHUP calls the service's reload hook there (the workers run on); SIGINT/SIGTERM
 * ask every worker, through loop_post(), to stop, and it joins them.
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
    /* Optional, on the main thread (arg as given to workers_run()): every worker's thread runs,
     * after every init() bound its listener; the service is ready. */
    void (*ready)(void *arg);
    /* Optional, on the main thread: SIGHUP arrived (reload). */
    void (*reload)(void *arg);
    /* Optional, on the main thread: SIGINT/SIGTERM arrived, before the workers are told. */
    void (*stopping)(void *arg);
};

/*
 * Blocks SIGINT/SIGTERM/SIGHUP for every thread and ignores SIGPIPE; call first thing in main,
 * before any thread (libcurl's resolver threads included) exists.
 */
void workers_block_signals(void);

/* Runs n workers until SIGINT or SIGTERM (SIGHUP: ops->reload). Returns 0 on a clean stop, -1 if
 * setup failed. */
int workers_run(int n, const struct worker_ops *ops, void *arg);

#endif
