/*
 * redis/rconn: hiredis async context + our loop.
 *
 * States: DOWN (waiting for the reconnect timer; commands fail at once), CONNECTING (commands are
 * queued in hiredis and sent once connected), READY. hiredis frees its context itself after the
 * disconnect callback, so c->ac is cleared there and never used again.
 */
#include "redis/rconn.h"

#include <curl/curl.h>
#include <errno.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "redis/rhealth.h"
#include "util/list.h"

#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000
/* Spare command records kept per connection (one is needed per command in flight). */
#define SPARE_MAX 256

enum rstate { R_DOWN, R_CONNECTING, R_READY };

struct rcmd {
    struct rconn *c;
    rconn_reply_fn *fn;
    void *arg;
    uint64_t deadline_ms;
    uint32_t id;      /* rhealth_cmd_id() of a caller's command; 0 for our own set-up */
    struct list node; /* the connection's commands in flight */
};

struct rconn {
    struct loop *loop;
    struct rconn_opts opts;
    redisAsyncContext *ac;
    enum rstate state;
    struct loop_io *io;
    uint32_t events;
    struct loop_timer reconnect;
    struct loop_timer deadline; /* the earliest command (or the connect) deadline */
    struct loop_timer kill;     /* drops the connection outside hiredis callbacks */
    uint64_t connect_deadline_ms;
    long backoff_ms;
    struct list cmds;  /* in flight */
    struct list spare; /* answered, kept for the next commands */
    size_t nspare;
    const struct rconn_script *const *scripts;
    size_t nscripts;
    size_t loads_pending; /* SCRIPT LOADs sent and not yet answered */
    char last_error[RCONN_ERR_MAX];
    struct rhealth_conn health; /* what this connection told opts.health last */
    bool setup_refused;         /* Redis refused a set-up command of this attempt */
};

/* ---- URL ---- */

static char *dup_part(CURLU *u, CURLUPart part)
{
    char *v = NULL;
    if (curl_url_get(u, part, &v, CURLU_URLDECODE) != CURLUE_OK)
        return NULL;
    char *copy = strdup(v);
    curl_free(v);
    return copy;
}

void rconn_opts_done(struct rconn_opts *o)
{
    free(o->host);
    free(o->unix_path);
    free(o->user);
    if (o->password != NULL) {
        memset(o->password, 0, strlen(o->password));
        free(o->password);
    }
    memset(o, 0, sizeof(*o));
}

static bool parse_db(const char *s, int *db)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 1000)
        return false;
    *db = (int)v;
    return true;
}

int rconn_parse_url(const char *url, struct rconn_opts *out, char err[RCONN_ERR_MAX])
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    out->timeout_ms = 1000;
    bool is_unix = strncmp(url, "redis+unix://", 13) == 0;
    if (!is_unix && strncmp(url, "redis://", 8) != 0) {
        snprintf(err, RCONN_ERR_MAX, "not a redis:// or redis+unix:// URL");
        return -1;
    }
    CURLU *u = curl_url();
    char *path = NULL, *query = NULL, *port = NULL, *as_file = NULL;
    int rc = -1;
    if (u == NULL)
        goto oom;
    if (is_unix) {
        /* libcurl reads an unknown scheme's "///a/b" as host "a": parse it as the file: URL it
         * looks like instead (no host, an absolute path, a query). */
        if (asprintf(&as_file, "file://%s", url + 13) < 0)
            goto oom;
        if (curl_url_set(u, CURLUPART_URL, as_file, 0) != CURLUE_OK) {
            snprintf(err, RCONN_ERR_MAX, "malformed Redis URL");
            goto out;
        }
        path = dup_part(u, CURLUPART_PATH);
        query = dup_part(u, CURLUPART_QUERY);
        if (path == NULL || path[0] != '/' || path[1] == '\0' || url[13] != '/') {
            snprintf(err, RCONN_ERR_MAX, "redis+unix:// wants an absolute socket path");
            goto out;
        }
        out->unix_path = path;
        path = NULL;
        if (query != NULL && strncmp(query, "db=", 3) == 0 && !parse_db(query + 3, &out->db)) {
            snprintf(err, RCONN_ERR_MAX, "db must be a number from 0 to 1000");
            goto out;
        }
        rc = 0;
        goto out;
    }
    /* An empty authority would be "fixed" by libcurl into some address: refuse it here. */
    const char *auth = url + 8, *end = auth + strcspn(auth, "/?#");
    const char *at = memchr(auth, '@', (size_t)(end - auth));
    if ((at != NULL ? end - at - 1 : end - auth) <= 0) {
        snprintf(err, RCONN_ERR_MAX, "redis:// wants a host");
        goto out;
    }
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        snprintf(err, RCONN_ERR_MAX, "malformed Redis URL");
        goto out;
    }
    out->password = dup_part(u, CURLUPART_PASSWORD);
    out->user = dup_part(u, CURLUPART_USER);
    if (out->user != NULL && out->user[0] == '\0') { /* redis://:password@: the default user */
        free(out->user);
        out->user = NULL;
    }
    if (out->user != NULL && out->password == NULL) {
        /* A lone password written where the user goes would be sent as a user name: refuse. */
        snprintf(err, RCONN_ERR_MAX,
                 "a Redis user name needs its password (redis://user:password@host); a password "
                 "alone is written redis://:password@host");
        goto out;
    }
    path = dup_part(u, CURLUPART_PATH);
    out->host = dup_part(u, CURLUPART_HOST);
    if (out->host == NULL || out->host[0] == '\0') {
        snprintf(err, RCONN_ERR_MAX, "redis:// wants a host");
        goto out;
    }
    port = dup_part(u, CURLUPART_PORT);
    if (port != NULL && ((out->port = atoi(port)) <= 0 || out->port > 65535)) {
        snprintf(err, RCONN_ERR_MAX, "bad port");
        goto out;
    }
    if (path != NULL && path[0] == '/' && path[1] != '\0' && !parse_db(path + 1, &out->db)) {
        snprintf(err, RCONN_ERR_MAX, "the path must be a db number from 0 to 1000");
        goto out;
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, RCONN_ERR_MAX, "out of memory");
out:
    free(path);
    free(query);
    free(port);
    free(as_file);
    curl_url_cleanup(u);
    if (rc != 0)
        rconn_opts_done(out);
    return rc;
}

/* ---- hiredis <-> loop ---- */

static void on_io(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    (void)fd;
    struct rconn *c = arg;
    if (c->ac != NULL && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        redisAsyncHandleRead(c->ac);
    if (c->ac != NULL && (events & EPOLLOUT))
        redisAsyncHandleWrite(c->ac);
}

static void update_events(struct rconn *c, uint32_t events)
{
    c->events = events;
    if (c->ac == NULL)
        return;
    if (c->io == NULL) {
        c->io = loop_io_add(c->loop, c->ac->c.fd, events, on_io, c);
        return;
    }
    loop_io_mod(c->io, events);
}

static void ev_add_read(void *p)
{
    struct rconn *c = p;
    update_events(c, c->events | EPOLLIN);
}

static void ev_del_read(void *p)
{
    struct rconn *c = p;
    update_events(c, c->events & ~(uint32_t)EPOLLIN);
}

static void ev_add_write(void *p)
{
    struct rconn *c = p;
    update_events(c, c->events | EPOLLOUT);
}

static void ev_del_write(void *p)
{
    struct rconn *c = p;
    update_events(c, c->events & ~(uint32_t)EPOLLOUT);
}

static void ev_cleanup(void *p)
{
    struct rconn *c = p;
    loop_io_del(c->io);
    c->io = NULL;
    c->events = 0;
}

/* ---- commands and deadlines ---- */

static struct rcmd *cmd_get(struct rconn *c)
{
    struct list *n = list_first(&c->spare);
    if (n == NULL)
        return calloc(1, sizeof(struct rcmd));
    list_unlink(n);
    c->nspare--;
    return list_item(n, struct rcmd, node);
}

/* Unlinks k from the commands in flight and keeps or frees it. */
static void cmd_put(struct rcmd *k)
{
    struct rconn *c = k->c;
    list_unlink(&k->node);
    if (c->nspare < SPARE_MAX) {
        list_push_back(&c->spare, &k->node);
        c->nspare++;
        return;
    }
    free(k);
}

/* Every command gets the same timeout and loop time only grows: the oldest command in flight
 * has the earliest deadline. */
static struct rcmd *oldest(const struct rconn *c)
{
    struct list *first = list_first(&c->cmds);
    return first != NULL ? list_item(first, struct rcmd, node) : NULL;
}

static void arm_deadline(struct rconn *c)
{
    uint64_t due = UINT64_MAX;
    if (c->state == R_CONNECTING)
        due = c->connect_deadline_ms;
    struct rcmd *k = oldest(c);
    if (k != NULL && k->deadline_ms < due)
        due = k->deadline_ms;
    if (due == UINT64_MAX) {
        loop_timer_stop(c->loop, &c->deadline);
        return;
    }
    uint64_t now = loop_now_ms(c->loop);
    loop_timer_start(c->loop, &c->deadline, due > now ? due - now : 0);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct rcmd *k = privdata;
    rconn_reply_fn *fn = k->fn;
    void *arg = k->arg;
    const redisReply *reply = r;
    /* A caller's command answered: an error (but NOSCRIPT, which the caller mends by loading
     * the scripts again) is the store failing; a success may end that. */
    if (reply != NULL && k->id != 0) {
        struct rhealth *h = k->c->opts.health;
        if (reply->type != REDIS_REPLY_ERROR)
            rhealth_reply_ok(h, k->id);
        else if (!rconn_noscript(reply))
            rhealth_reply_error(h, k->id, reply->str);
    }
    cmd_put(k);
    fn(r, arg);
}

static void schedule_reconnect(struct rconn *c);

static void drop(struct rconn *c, const char *why)
{
    if (why != NULL)
        snprintf(c->last_error, sizeof(c->last_error), "%s", why);
    if (c->ac == NULL)
        return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    /* Fails every command in flight (their callbacks get NULL); hiredis calls on_disconnect only
     * for a connection that was up, so a reconnect is scheduled here if it did not. */
    redisAsyncFree(ac);
    if (c->state != R_DOWN)
        schedule_reconnect(c);
}

static void on_kill(void *arg)
{
    drop(arg, NULL);
}

static void on_deadline(void *arg)
{
    struct rconn *c = arg;
    uint64_t now = loop_now_ms(c->loop);
    if (c->state == R_CONNECTING && now >= c->connect_deadline_ms) {
        rhealth_conn_failed(c->opts.health, &c->health, "connect timed out", false);
        drop(c, "connect timed out");
        return;
    }
    struct rcmd *k = oldest(c);
    if (k != NULL && now >= k->deadline_ms) {
        rhealth_conn_failed(c->opts.health, &c->health, "command timed out", false);
        drop(c, "command timed out");
        return;
    }
    arm_deadline(c); /* the timer was armed for a command answered since */
}

static void start_connect(struct rconn *c);

static void on_reconnect(void *arg)
{
    start_connect(arg);
}

static void schedule_reconnect(struct rconn *c)
{
    /* A connection that was working is replaced at once (Redis closed an idle connection, or
     * CLIENT KILL); only repeated failures back off. */
    bool was_ready = c->state == R_READY;
    c->state = R_DOWN;
    if (was_ready)
        c->backoff_ms = RECONNECT_MIN_MS;
    loop_timer_start(c->loop, &c->reconnect, was_ready ? 0 : (uint64_t)c->backoff_ms);
    if (!was_ready)
        c->backoff_ms = c->backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : c->backoff_ms * 2;
    arm_deadline(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct rconn *c = ac->data;
    if (ac->errstr != NULL && ac->err != 0)
        snprintf(c->last_error, sizeof(c->last_error), "%s", ac->errstr);
    c->ac = NULL; /* hiredis frees it after this callback */
    if (c->loop != NULL)
        schedule_reconnect(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rconn *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback, without a disconnect callback. */
        snprintf(c->last_error, sizeof(c->last_error), "%s",
                 ac->errstr != NULL ? ac->errstr : "connect failed");
        rhealth_conn_failed(c->opts.health, &c->health, c->last_error, false);
        c->ac = NULL;
        schedule_reconnect(c);
        return;
    }
}

/* AUTH / SELECT answers: an error means this connection is no use. */
static void on_setup(const redisReply *r, void *arg)
{
    struct rconn *c = arg;
    if (r == NULL)
        return; /* the connection is already going */
    if (r->type == REDIS_REPLY_ERROR) {
        /* The first refusal says why: after a refused AUTH, the set-up commands queued behind
         * it are all refused NOAUTH. */
        if (c->setup_refused)
            return;
        c->setup_refused = true;
        snprintf(c->last_error, sizeof(c->last_error), "setup refused: %.200s", r->str);
        rhealth_conn_failed(c->opts.health, &c->health, r->str, true);
        loop_timer_start(c->loop, &c->kill, 0);
        return;
    }
}

static void on_ready_check(const redisReply *r, void *arg)
{
    struct rconn *c = arg;
    if (r != NULL && r->type != REDIS_REPLY_ERROR && c->ac != NULL) {
        c->state = R_READY;
        c->backoff_ms = RECONNECT_MIN_MS;
        c->last_error[0] = '\0';
        rhealth_conn_ready(c->opts.health, &c->health);
        arm_deadline(c);
    }
}

static void send_cmd(struct rconn *c, rconn_reply_fn *fn, void *arg, int argc, const char **argv,
                     const size_t *lens, uint32_t id)
{
    struct rcmd *k = cmd_get(c);
    if (k == NULL) {
        fn(NULL, arg);
        return;
    }
    k->c = c;
    k->fn = fn;
    k->arg = arg;
    k->id = id;
    k->deadline_ms = loop_now_ms(c->loop) + (uint64_t)c->opts.timeout_ms;
    bool first = list_empty(&c->cmds);
    list_push_back(&c->cmds, &k->node);
    if (redisAsyncCommandArgv(c->ac, on_reply, k, argc, argv, lens) != REDIS_OK) {
        cmd_put(k);
        fn(NULL, arg);
        return;
    }
    /* Behind others, it is due after them: the timer armed for the oldest covers it. */
    if (first)
        arm_deadline(c);
}

static void start_connect(struct rconn *c)
{
    redisAsyncContext *ac = c->opts.unix_path != NULL
                                ? redisAsyncConnectUnix(c->opts.unix_path)
                                : redisAsyncConnect(c->opts.host, c->opts.port);
    if (ac == NULL || ac->err) {
        snprintf(c->last_error, sizeof(c->last_error), "%s",
                 ac != NULL && ac->errstr != NULL ? ac->errstr : "cannot connect");
        rhealth_conn_failed(c->opts.health, &c->health, c->last_error, false);
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->state = R_CONNECTING;
    c->setup_refused = false;
    c->connect_deadline_ms = loop_now_ms(c->loop) + (uint64_t)c->opts.timeout_ms;
    /* Queued now, sent as soon as the connection is up; a reply to the last one means ready. */
    if (c->opts.password != NULL && c->opts.user != NULL) {
        /* An ACL user (Redis 6): AUTH with both, or Redis would take the default user's. */
        const char *argv[] = {"AUTH", c->opts.user, c->opts.password};
        send_cmd(c, on_setup, c, 3, argv, NULL, 0);
    } else if (c->opts.password != NULL) {
        const char *argv[] = {"AUTH", c->opts.password};
        send_cmd(c, on_setup, c, 2, argv, NULL, 0);
    }
    if (c->opts.db != 0 && c->ac != NULL) {
        char db[16];
        snprintf(db, sizeof(db), "%d", c->opts.db);
        const char *argv[] = {"SELECT", db};
        send_cmd(c, on_setup, c, 2, argv, NULL, 0);
    }
    if (c->ac != NULL)
        rconn_reload_scripts(c);
    if (c->ac != NULL) {
        const char *argv[] = {"PING"};
        send_cmd(c, on_ready_check, c, 1, argv, NULL, 0);
    }
    /* hiredis only learns the connect finished from a write event. */
    ev_add_write(c);
}

/* ---- public ---- */

void rconn_script_init(struct rconn_script *s, const char *text)
{
    s->text = text;
    crypto_sha1_hex2(text, strlen(text), "", 0, s->sha);
}

static void on_script_loaded(const redisReply *r, void *arg)
{
    struct rconn *c = arg;
    c->loads_pending--; /* answered, or failed with the connection (r NULL) */
    on_setup(r, arg);
}

void rconn_reload_scripts(struct rconn *c)
{
    /* Loads already queued run before anything sent now: every operation that met NOSCRIPT
     * in the same burst (a SCRIPT FLUSH) shares them. */
    if (c->loads_pending > 0)
        return;
    for (size_t i = 0; i < c->nscripts && c->ac != NULL; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", c->scripts[i]->text};
        c->loads_pending++;
        send_cmd(c, on_script_loaded, c, 3, argv, NULL, 0);
    }
}

bool rconn_noscript(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

struct rconn *rconn_new(struct loop *loop, const struct rconn_opts *opts,
                        const struct rconn_script *const *scripts, size_t nscripts)
{
    struct rconn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->scripts = scripts;
    c->nscripts = nscripts;
    list_init(&c->cmds);
    list_init(&c->spare);
    c->opts = *opts;
    c->opts.host = opts->host != NULL ? strdup(opts->host) : NULL;
    c->opts.unix_path = opts->unix_path != NULL ? strdup(opts->unix_path) : NULL;
    c->opts.user = opts->user != NULL ? strdup(opts->user) : NULL;
    c->opts.password = opts->password != NULL ? strdup(opts->password) : NULL;
    c->backoff_ms = RECONNECT_MIN_MS;
    loop_timer_init(&c->reconnect, on_reconnect, c);
    loop_timer_init(&c->deadline, on_deadline, c);
    loop_timer_init(&c->kill, on_kill, c);
    start_connect(c);
    return c;
}

void rconn_free(struct rconn *c)
{
    if (c == NULL)
        return;
    struct loop *loop = c->loop;
    loop_timer_stop(loop, &c->reconnect);
    loop_timer_stop(loop, &c->deadline);
    loop_timer_stop(loop, &c->kill);
    c->loop = NULL; /* no reconnect from on_disconnect */
    if (c->ac != NULL)
        redisAsyncFree(c->ac); /* every command in flight gets NULL */
    c->loop = loop;
    loop_timer_stop(loop, &c->reconnect);
    loop_timer_stop(loop, &c->deadline);
    rconn_opts_done(&c->opts);
    while (!list_empty(&c->spare)) {
        struct list *n = list_first(&c->spare);
        list_unlink(n);
        free(list_item(n, struct rcmd, node));
    }
    free(c);
}

void rconn_command(struct rconn *c, rconn_reply_fn *fn, void *arg, int argc, const char **argv,
                   const size_t *lens)
{
    if (c->state == R_DOWN || c->ac == NULL) {
        fn(NULL, arg);
        return;
    }
    size_t n0 = lens != NULL ? lens[0] : strlen(argv[0]);
    size_t n1 = argc > 1 ? (lens != NULL ? lens[1] : strlen(argv[1])) : 0;
    send_cmd(c, fn, arg, argc, argv, lens,
             rhealth_cmd_id(argv[0], n0, argc > 1 ? argv[1] : NULL, n1));
}

bool rconn_ready(const struct rconn *c)
{
    return c->state == R_READY;
}

const char *rconn_last_error(const struct rconn *c)
{
    return c->last_error;
}
