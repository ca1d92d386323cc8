/*
 * http/server: libmicrohttpd driven by our loop.
 *
 * MHD in external-epoll mode exposes one epoll fd; our loop watches it and calls MHD_run() when
 * it is readable, and a loop timer follows MHD_get_timeout() for connection timeouts. A resumed
 * connection is only processed by the next MHD_run(), so every resume also "kicks" that timer
 * to zero.
 *
 * Request lifecycle, as MHD drives the access handler:
 *   1st call     headers are in: take a request from the pool, reject a too large
 *                Content-Length.
 *   body calls   append to the body buffer (bounded, in the request's arena).
 *   final call   route and run the handler. If it answered, queue the response; otherwise
 *                arm the deadline and suspend the connection until http_reply() resumes it,
 *                which brings a further final call that queues the stored response.
 *   completed    log the request, cancel what may still be pending, clear the arena and put
 *                the request back in the pool.
 *
 * Requests are pooled per server and their first 2 KiB of scratch memory is inline, so a
 * request that needs no more costs no allocation of ours: the reply body lives in the arena and
 * is handed to MHD without a copy (MHD_RESPMEM_PERSISTENT: MHD is done with it before the
 * completion callback).
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <limits.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "runtime/async.h"
#include "util/addr.h"
#include "util/arena.h"
#include "util/ipaddr.h"
#include "util/jsonw.h"
#include "util/list.h"

#define MAX_REPLY_HEADERS 12
/* Per-connection memory for headers and buffers. MHD zeroes the whole pool between keep-alive
 * requests (MHD_pool_reset), so its size is a memset on every request, not only memory
 * (measured: 64 KiB cost /healthz a quarter of its throughput; at 16 KiB the memset was 6% of
 * a cached session check's CPU). Mini Program requests carry well under 2 KiB of headers; 8 KiB
 * is nginx's large_client_header_buffers default. Bodies do not live here (they are copied out
 * as they arrive). */
#define CONN_MEMORY_LIMIT (8 * 1024)
/* A refused connection's unread input drained before it is shut down, so the kernel does not
 * answer our last words with a reset (which can destroy them in the client's buffer). */
#define DRAIN_MAX (64 * 1024)
/* Requests kept for reuse per server; beyond that they are freed. */
#define POOL_MAX 1024
/* A declared Content-Length up to this is reserved at once; a larger one is not trusted before
 * its bytes arrive (headers alone must not hold max_body_bytes of memory per connection). */
#define BODY_PRESIZE_MAX (16 * 1024)
#define INLINE_ARENA 2048
#define ERROR_BODY_MAX 512

enum req_state {
    REQ_READING, /* headers or body still arriving */
    REQ_PENDING, /* handler called, answer not given yet (connection suspended) */
    REQ_REPLIED, /* answer built, not yet handed to MHD */
    REQ_QUEUED,  /* answer handed to MHD */
    REQ_RESET,   /* close with RST */
    REQ_ABORTED, /* answered by conn_abort(): MHD only has to close the connection */
};

enum client_state {
    CLIENT_UNASKED, /* not computed yet */
    CLIENT_KNOWN,
    CLIENT_UNKNOWN, /* no peer address */
};

/* X-Forwarded-For lines looked at; a request with more is answered as if it had none. */
#define XFF_LINES_MAX 8

struct http_conn;

struct reply_header {
    const char *name, *value; /* in the arena */
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct http_conn *hc;      /* the connection's tracking, NULL when untracked (no memory) */
    const char *method, *path; /* owned by MHD, valid for the request */
    char *peer;                /* http_request_peer(), in the arena once asked for */
    char *client_text;         /* http_request_client(), in the arena once asked for */
    struct ipaddr client;      /* http_request_client_addr(), when client_state is CLIENT_KNOWN */
    struct ipaddr peer_ip;     /* the TCP peer, when client_state is CLIENT_KNOWN */
    uint8_t client_state;      /* enum client_state */
    char id[40];
    struct timespec start;
    enum req_state state;
    bool suspended;
    bool too_large;
    bool dispatched; /* counted in srv->nactive */
    bool headers_in; /* the access handler has seen the headers */
    unsigned refuse; /* decided from the raw request line: 400 (path) or 414 (arguments) */
    const char *params[HTTP_MAX_PARAMS]; /* the path's "*" segments, in the arena */
    size_t nparams;

    char *body; /* in the arena */
    size_t body_len, body_cap, discarded;
    size_t body_mem; /* arena bytes taken for the body, counted in srv->body_mem */

    unsigned status;
    size_t bytes; /* of the answer's body, for the access line */
    char app[HTTP_USER_ID_MAX + 1], openid[HTTP_USER_ID_MAX + 1]; /* http_request_set_user() */
    size_t route; /* index of the route that took it; SIZE_MAX: none (for metrics) */
    struct MHD_Response *resp;
    struct reply_header headers[MAX_REPLY_HEADERS];
    size_t nheaders;

    struct async_slot pending;
    struct loop_timer deadline;
    struct list node; /* the server's live list, or its pool */
    struct arena arena;
    _Alignas(16) char arena0[INLINE_ARENA];
};

/*
 * A client connection, from accept to close. While a request is being received (and between
 * requests) the connection is on its server's `reading` list, oldest first, so one timer finds
 * the ones past read_timeout: MHD's own timeout is an idle timer that every byte resets.
 */
struct http_conn {
    struct http_server *srv;
    struct MHD_Connection *mc;
    int fd;
    uint64_t since_ms;        /* opened, or answered its previous request */
    struct http_request *req; /* from its request line to its completion */
    bool reading;             /* on srv->reading */
    struct list node;         /* srv->reading, or srv->conn_pool */
};

struct http_server {
    struct loop *loop;
    struct MHD_Daemon *mhd;
    struct loop_io *mhd_io;
    struct loop_timer mhd_timer;
    struct loop_timer drained_timer;
    uint16_t port;
    size_t max_body;
    long request_timeout_ms;
    uint64_t read_timeout_ms;
    size_t body_budget, body_mem; /* bytes of bodies allowed and held; budget 0: no cap */
    struct list reading;          /* connections receiving a request, by since_ms */
    struct list conn_pool;
    size_t nconn_pool;
    struct loop_timer read_timer;
    const struct http_route *routes;
    size_t nroutes;
    http_handler_fn *fallback;
    void *handler_arg;

    const struct ipaddr_net *trusted;
    size_t ntrusted;
    bool warned_xff; /* X-Forwarded-For from an untrusted peer was logged once */
    bool metrics;    /* count requests in metrics/metrics.h */

    struct list live; /* every request between first call and completion */
    struct list pool; /* finished requests kept for reuse */
    size_t npool;
    size_t nactive; /* live requests handed to a handler: what a drain waits for */
    uint32_t id_prefix;
    uint64_t id_counter;

    bool quiescing;
    http_drained_fn *drained_fn;
    void *drained_arg;
};

/* ---- driving MHD from the loop ---- */

static void run_mhd(struct http_server *srv)
{
    MHD_run(srv->mhd);
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(srv->mhd, &t) == MHD_YES)
        loop_timer_start(srv->loop, &srv->mhd_timer, t);
    else
        loop_timer_stop(srv->loop, &srv->mhd_timer);
}

static void on_mhd_io(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    (void)fd;
    (void)events;
    run_mhd(arg);
}

static void on_mhd_timer(void *arg)
{
    run_mhd(arg);
}

static void kick(struct http_server *srv)
{
    loop_timer_start(srv->loop, &srv->mhd_timer, 0);
}

static void on_drained_timer(void *arg)
{
    struct http_server *srv = arg;
    if (srv->nactive == 0 && srv->drained_fn != NULL) {
        http_drained_fn *fn = srv->drained_fn;
        srv->drained_fn = NULL;
        fn(srv->drained_arg);
    }
}

/* ---- requests ---- */

static bool id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* A proxy's X-Request-Id is kept when it is short and plain, so logs can be joined. */
static void set_request_id(struct http_request *req)
{
    const char *in = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (in != NULL) {
        size_t n = strlen(in);
        bool ok = n > 0 && n < sizeof(req->id);
        for (size_t i = 0; ok && i < n; i++)
            ok = id_char_ok(in[i]);
        if (ok) {
            memcpy(req->id, in, n + 1);
            return;
        }
    }
    static const char hex[] = "0123456789abcdef";
    uint32_t p = req->srv->id_prefix;
    uint64_t c = ++req->srv->id_counter;
    for (int i = 0; i < 8; i++)
        req->id[i] = hex[(p >> (28 - 4 * i)) & 15];
    /* the counter in hex, at least 8 digits */
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = hex[c & 15];
        c >>= 4;
    } while (c != 0 || n < 8);
    for (int i = 0; i < n; i++)
        req->id[8 + i] = tmp[n - 1 - i];
    req->id[8 + n] = '\0';
}

static void on_deadline(void *arg);

static struct http_request *request_new(struct http_server *srv, struct MHD_Connection *conn)
{
    struct http_request *req;
    struct list *n = list_first(&srv->pool);
    if (n != NULL) {
        list_unlink(n);
        srv->npool--;
        req = list_item(n, struct http_request, node);
    } else {
        req = malloc(sizeof(*req));
        if (req == NULL)
            return NULL;
    }
    /* Everything but the inline arena block, which arena_clear() left wiped. */
    memset(req, 0, offsetof(struct http_request, arena0));
    req->srv = srv;
    req->conn = conn;
    req->method = "";
    req->path = "";
    req->route = SIZE_MAX;
    req->state = REQ_READING;
    arena_init(&req->arena, req->arena0, sizeof(req->arena0));
    loop_timer_init(&req->deadline, on_deadline, req);
    clock_gettime(CLOCK_MONOTONIC, &req->start);
    list_push_back(&srv->live, &req->node);
    return req;
}

static void request_free(struct http_request *req)
{
    struct http_server *srv = req->srv;
    /* Whatever ended the request, nothing it started may call back into it now. */
    async_cancel(&req->pending);
    loop_timer_stop(srv->loop, &req->deadline);
    list_unlink(&req->node);
    if (req->dispatched)
        srv->nactive--;
    srv->body_mem -= req->body_mem;
    if (req->hc != NULL)
        req->hc->req = NULL;
    if (req->resp != NULL)
        MHD_destroy_response(req->resp);
    arena_clear(&req->arena);
    if (srv->npool < POOL_MAX) {
        list_push_back(&srv->pool, &req->node);
        srv->npool++;
    } else {
        free(req);
    }
    if (srv->nactive == 0 && srv->drained_fn != NULL)
        loop_timer_start(srv->loop, &srv->drained_timer, 0);
}

/* ---- connections: read_timeout, and refusing from outside MHD ---- */

static void on_read_timer(void *arg);

static void conn_unwatch(struct http_conn *c)
{
    if (c->reading) {
        list_unlink(&c->node);
        c->reading = false;
    }
}

/* Starts the connection's clock for its next request. */
static void conn_watch(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    conn_unwatch(c);
    c->since_ms = loop_now_ms(srv->loop);
    if (list_empty(&srv->reading))
        loop_timer_start(srv->loop, &srv->read_timer, srv->read_timeout_ms);
    list_push_back(&srv->reading, &c->node);
    c->reading = true;
}

/*
 * Answers the request being received on c with status (none when 0) and closes the connection,
 * from outside MHD: MHD cannot queue a response while a request is still arriving, nor while it
 * is stuck on a line longer than its buffer (it then stops reading and waits for the idle timer
 * that the client's bytes keep resetting). The answer is written to the socket directly, which
 * is safe because MHD writes nothing while it receives; then the socket is shut down, so MHD
 * reads its end and closes it, and its idle timeout is cut to a second for the stuck case where
 * it does not read at all.
 */
static void conn_abort(struct http_conn *c, unsigned status, const char *slug, const char *msg)
{
    struct http_request *req = c->req;
    conn_unwatch(c);
    if (req != NULL && status != 0) {
        if (req->id[0] == '\0') /* its headers are not all in */
            set_request_id(req);
        char body[ERROR_BODY_MAX], out[ERROR_BODY_MAX + 256];
        struct jsonw w;
        jsonw_begin(&w, body, sizeof(body));
        jsonw_str(&w, "error", slug);
        jsonw_str(&w, "message", msg);
        jsonw_str(&w, "action", status == 503 || status == 408 ? "retry" : "none");
        size_t blen = jsonw_end(&w);
        int n = snprintf(out, sizeof(out),
                         "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
                         "Cache-Control: no-store\r\nX-Request-Id: %s\r\nConnection: close\r\n"
                         "Content-Length: %zu\r\n\r\n%.*s",
                         status, MHD_get_reason_phrase_for(status), req->id, blen, (int)blen, body);
        if (n > 0 && (size_t)n < sizeof(out))
            (void)!send(c->fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        req->status = status;
        req->bytes = blen;
        req->state = REQ_ABORTED;
    }
    char sink[4096];
    for (size_t drained = 0; drained < DRAIN_MAX; drained += sizeof(sink))
        if (recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
            break;
    shutdown(c->fd, SHUT_RDWR);
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, 1u);
    kick(c->srv);
}

/* A request that could not be received within read_timeout. */
static void conn_expire(struct http_conn *c)
{
    struct http_request *req = c->req;
    if (req == NULL || req->state != REQ_READING) {
        /* Idle between requests, or not even a request line yet: nothing to answer. */
        conn_abort(c, 0, NULL, NULL);
        return;
    }
    /* Bytes MHD left unread mean it is stuck on a line too long for its buffer (a 20 KiB chunk
     * extension), not waiting for a slow client. */
    int unread = 0;
    if (ioctl(c->fd, FIONREAD, &unread) == 0 && unread > 0)
        conn_abort(c, 400, "bad_request", "a line of the request is longer than accepted");
    else
        conn_abort(c, 408, "request_timeout", "the request did not arrive in time");
}

static void on_read_timer(void *arg)
{
    struct http_server *srv = arg;
    uint64_t now = loop_now_ms(srv->loop);
    struct list *n;
    while ((n = list_first(&srv->reading)) != NULL) {
        struct http_conn *c = list_item(n, struct http_conn, node);
        if (c->since_ms + srv->read_timeout_ms > now) {
            loop_timer_start(srv->loop, &srv->read_timer, c->since_ms + srv->read_timeout_ms - now);
            return;
        }
        conn_expire(c);
    }
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *srv = cls;
    struct http_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct list *n = list_first(&srv->conn_pool);
        if (n != NULL) {
            list_unlink(n);
            srv->nconn_pool--;
            c = list_item(n, struct http_conn, node);
        } else {
            c = malloc(sizeof(*c));
        }
        if (c == NULL || ci == NULL) {
            free(c); /* untracked: only MHD's idle timeout applies to it */
            *socket_context = NULL;
            return;
        }
        memset(c, 0, sizeof(*c));
        c->srv = srv;
        c->mc = mc;
        c->fd = ci->connect_fd;
        conn_watch(c);
        *socket_context = c;
        return;
    }
    if (c == NULL)
        return;
    *socket_context = NULL;
    conn_unwatch(c);
    if (c->req != NULL)
        c->req->hc = NULL;
    if (srv->nconn_pool < POOL_MAX) {
        list_push_back(&srv->conn_pool, &c->node);
        srv->nconn_pool++;
    } else {
        free(c);
    }
}

/*
 * The request line, before MHD decodes it: the request starts here (so read_timeout and the
 * access line cover its headers too), and what only the raw form shows is judged here.
 */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *mc)
{
    struct http_server *srv = cls;
    struct http_request *req = request_new(srv, mc);
    if (req == NULL)
        return NULL; /* on_access tries again */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct http_conn *c = ci != NULL ? ci->socket_context : NULL;
    if (c != NULL) {
        c->req = req;
        req->hc = c;
    }
    const char *q = strchr(uri, '?');
    size_t plen = q != NULL ? (size_t)(q - uri) : strlen(uri);
    /* Routing is on the raw path: a percent-encoded byte would let /%61dmin or /admin%2Fv1 reach
     * a route that an edge filter on the raw path thinks it blocked. Our paths never need one. */
    if (memchr(uri, '%', plen) != NULL)
        req->refuse = 400;
    if (q != NULL) {
        size_t nargs = 1;
        for (const char *p = q; (p = strchr(p + 1, '&')) != NULL;)
            nargs++;
        if (nargs > HTTP_MAX_ARGS) {
            /* MHD 0.9.75 ignores its failure to store an argument (its memory pool is full past
             * ~100 of them) and then waits forever without reading or answering. The line is
             * MHD's own writable buffer, which it hands us before parsing the arguments: ending
             * the query here leaves it nothing to parse, and the request is answered 414. */
            ((char *)q)[1] = '\0';
            req->refuse = 414;
        }
    }
    return req;
}

/*
 * The access line. The client address is the one the rate limits use (X-Forwarded-For believed
 * only from trusted_proxies); the peer is added when it differs (the proxy that forwarded it).
 * Addresses are formatted on the stack: nothing is allocated for the line.
 */
static void log_request(struct http_request *req)
{
    if (!log_enabled(LOG_INFO) || req->status == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long us = (long long)(now.tv_sec - req->start.tv_sec) * 1000000 +
                   (now.tv_nsec - req->start.tv_nsec) / 1000;
    struct ipaddr client;
    char client_text[IPADDR_TEXT_MAX], peer_text[IPADDR_TEXT_MAX];
    bool has_client = http_request_client_addr(req, &client);
    bool forwarded = has_client && memcmp(&req->peer_ip, &client, sizeof(client)) != 0;
    if (has_client)
        ipaddr_format(&client, client_text);
    if (forwarded)
        ipaddr_format(&req->peer_ip, peer_text);
    const struct log_field f[] = {
        LOG_STR("method", req->method),
        LOG_STR("path", req->path),
        LOG_INT("status", req->status),
        LOG_MS("duration_ms", us),
        LOG_INT("bytes", (long long)req->bytes),
        LOG_STR("client", has_client ? client_text : NULL),
        LOG_STR("peer", forwarded ? peer_text : NULL),
        LOG_STR("app", req->app[0] != '\0' ? req->app : NULL),
        LOG_STR("openid", req->openid[0] != '\0' ? req->openid : NULL),
        LOG_STR("request_id", req->id),
    };
    log_fields(LOG_INFO, "request", f, sizeof(f) / sizeof(f[0]));
}

/* Counted in metrics by route, status and duration (the service's server only). */
static void count_request(const struct http_request *req)
{
    if (!req->srv->metrics || req->status == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t us = (int64_t)(now.tv_sec - req->start.tv_sec) * 1000000 +
                 (now.tv_nsec - req->start.tv_nsec) / 1000;
    metrics_http_request(req->route, req->status, us > 0 ? (uint64_t)us : 0);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    struct http_request *req = *con_cls;
    if (req == NULL)
        return;
    *con_cls = NULL;
    struct http_conn *c = req->hc;
    log_request(req);
    count_request(req);
    request_free(req);
    /* Kept alive: the next request's clock starts now (an error closes the connection). */
    if (c != NULL && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        conn_watch(c);
}

static enum MHD_Result queue_reply(struct http_request *req)
{
    if (req->state == REQ_RESET)
        return MHD_NO;
    req->state = REQ_QUEUED;
    enum MHD_Result r = MHD_queue_response(req->conn, req->status, req->resp);
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    return r;
}

/*
 * Does path match pattern? Each "*" segment of the pattern takes one non-empty segment of the
 * path; their spans go into start/len (HTTP_MAX_PARAMS at most).
 */
static bool path_match(const char *pattern, const char *path, const char **start, size_t *len,
                       size_t *n)
{
    *n = 0;
    for (;;) {
        if (pattern[0] == '*' && (pattern[1] == '/' || pattern[1] == '\0')) {
            size_t seg = strcspn(path, "/");
            if (seg == 0 || *n == HTTP_MAX_PARAMS)
                return false;
            start[*n] = path;
            len[(*n)++] = seg;
            pattern++;
            path += seg;
        } else if (*pattern == *path) {
            if (*pattern == '\0')
                return true;
            pattern++;
            path++;
        } else {
            return false;
        }
    }
}

/* The route's path matches: its parameters, copied where handlers can keep them. */
static bool take_params(struct http_request *req, const char *const *start, const size_t *len,
                        size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *p = arena_alloc(&req->arena, len[i] + 1);
        if (p == NULL)
            return false;
        memcpy(p, start[i], len[i]);
        p[len[i]] = '\0';
        req->params[i] = p;
    }
    req->nparams = n;
    return true;
}

static void route(struct http_request *req)
{
    struct http_server *srv = req->srv;
    char allow[64] = "";
    size_t alen = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct http_route *r = &srv->routes[i];
        const char *start[HTTP_MAX_PARAMS];
        size_t len[HTTP_MAX_PARAMS], nparams;
        if (!path_match(r->path, req->path, start, len, &nparams))
            continue;
        if (strcmp(r->method, req->method) == 0 && !take_params(req, start, len, nparams)) {
            http_reply_error(req, 503, "internal", "out of memory", "retry");
            return;
        }
        if (strcmp(r->method, req->method) == 0) {
            req->route = i;
            r->fn(req, srv->handler_arg);
            return;
        }
        int n = snprintf(allow + alen, sizeof(allow) - alen, "%s%s", alen ? ", " : "", r->method);
        if (n > 0 && (size_t)n < sizeof(allow) - alen)
            alen += (size_t)n;
    }
    if (srv->fallback != NULL) {
        srv->fallback(req, srv->handler_arg);
        return;
    }
    if (alen == 0) {
        http_reply_error(req, 404, "not_found", "no such endpoint", "none");
        return;
    }
    http_add_header(req, "Allow", allow);
    http_reply_error(req, 405, "method_not_allowed", "method not allowed on this endpoint", "none");
}

/* The declared Content-Length, or -1 when there is none. A malformed one never gets here: MHD
 * answers it with 400 itself (and one too large for 64 bits with 413). */
static long long content_length(const struct http_request *req)
{
    const char *cl =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl == NULL)
        return -1;
    errno = 0;
    unsigned long long v = strtoull(cl, NULL, 10);
    return errno != 0 || v > LLONG_MAX ? LLONG_MAX : (long long)v;
}

/* ---- what MHD lets through and we do not ---- */

struct header_scan {
    const char *block, *block_end; /* the request line and headers, as MHD parsed them in place */
    const char *prev_end;          /* the previous header value's end */
    unsigned ncl, nte, nhost;
    const char *cl;
    bool cl_differs, te_chunked, bad_name, bad_value;
};

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool in_block(const struct header_scan *h, const char *p)
{
    return p >= h->block && p <= h->block_end;
}

/*
 * MHD stores header values in place and measures them with strlen, so a NUL inside a value
 * silently cuts it ("Bearer <token>\0junk"). In place, one value's end is followed by its line's
 * terminator (CR LF or LF, both overwritten with NULs) and then the next header's name, or the
 * blank line at the end of the headers: anything more between them is what the NUL hid. Values
 * MHD copied elsewhere (a folded line) are not in the block and fail the check too, which is
 * what RFC 9112 5.2 allows for obsolete line folding.
 */
static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    struct header_scan *h = cls;
    (void)kind;
    if (h->block != NULL) {
        if (h->prev_end != NULL && (!in_block(h, key) || key - h->prev_end > 2))
            h->bad_value = true;
        if (!in_block(h, value))
            h->bad_value = true;
        h->prev_end = value + value_size;
    }
    for (size_t i = 0; i < key_size; i++)
        if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
            h->bad_name = true; /* "Transfer-Encoding : chunked" */
    for (size_t i = 0; i < value_size; i++)
        if (((unsigned char)value[i] < ' ' && value[i] != '\t') || value[i] == 0x7f)
            h->bad_value = true;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (h->ncl++ > 0 && strcmp(h->cl, value) != 0)
            h->cl_differs = true;
        h->cl = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        size_t n = value_size;
        while (n > 0 && ows(value[n - 1]))
            n--;
        h->te_chunked = h->nte++ == 0 && n == 7 && strncasecmp(value, "chunked", 7) == 0;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        h->nhost++;
    }
    return MHD_YES;
}

/*
 * The framing and header checks of a request whose headers are in (server.h lists them).
 * Returns 0, or the status to refuse it with and its message.
 */
static unsigned check_headers(struct http_request *req, const char *version, const char **msg)
{
    struct header_scan h = {0};
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (ci != NULL) {
        h.block = req->method; /* MHD parses the request line in place: it starts the block */
        h.block_end = req->method + ci->header_size;
    }
    MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, scan_header, &h);
    /* The last value is followed by its terminator and the blank line: 2 to 4 bytes. */
    if (h.block != NULL && h.prev_end != NULL && h.block_end - h.prev_end > 4)
        h.bad_value = true;
    if (h.bad_name) {
        *msg = "a header name holds whitespace or a control character";
        return 400;
    }
    if (h.bad_value) {
        *msg = "a header value holds a control character or a folded line";
        return 400;
    }
    if (h.nte > 0 && h.ncl > 0) {
        *msg = "Transfer-Encoding and Content-Length together are ambiguous";
        return 400;
    }
    if (h.cl_differs) {
        *msg = "Content-Length is given twice with different values";
        return 400;
    }
    if (h.nte > 0 && !h.te_chunked) {
        *msg = "the only transfer coding accepted is chunked";
        return 501;
    }
    if (h.nhost > 1 || (h.nhost == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)) {
        *msg = "an HTTP/1.1 request needs exactly one Host header";
        return 400;
    }
    return 0;
}

static void reply_too_large(struct http_request *req)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "request body is larger than %zu bytes", req->srv->max_body);
    http_reply_error(req, 413, "payload_too_large", msg, "none");
}

/*
 * Makes room for want body bytes (and a NUL) in the arena: exactly that when exact (the length
 * is known), else doubling. -ENOBUFS when the server's body memory is spent (every slow client
 * holding a partial body would otherwise hold memory without bound), -ENOMEM when out of it.
 */
static int body_reserve(struct http_request *req, size_t want, bool exact)
{
    struct http_server *srv = req->srv;
    if (want + 1 <= req->body_cap)
        return 0;
    size_t cap = exact ? want + 1 : req->body_cap ? req->body_cap : 256;
    while (cap < want + 1)
        cap *= 2;
    if (cap > srv->max_body + 1)
        cap = srv->max_body + 1;
    if (srv->body_budget != 0 && srv->body_mem + cap > srv->body_budget)
        return -ENOBUFS;
    char *b = arena_alloc(&req->arena, cap);
    if (b == NULL)
        return -ENOMEM;
    if (req->body_len > 0)
        memcpy(b, req->body, req->body_len);
    req->body = b;
    req->body_cap = cap;
    req->body_mem += cap;
    srv->body_mem += cap;
    return 0;
}

/* Closes the connection of a request whose body cannot be held: 503 when the budget is spent. */
static enum MHD_Result body_refused(struct http_request *req, int err)
{
    if (err != -ENOBUFS || req->hc == NULL)
        return MHD_NO;
    conn_abort(req->hc, 503, "overloaded", "too many request bodies are arriving at once");
    return MHD_YES; /* MHD reads the shut-down socket's end and closes it */
}

static enum MHD_Result append_body(struct http_request *req, const char *data, size_t size)
{
    struct http_server *srv = req->srv;
    if (req->too_large || req->body_len + size > srv->max_body) {
        /* Read and dropped, so the 413 reaches a client that writes all before it reads. */
        req->too_large = true;
        req->discarded += size;
        return req->discarded <= HTTP_DISCARD_MAX ? MHD_YES : MHD_NO;
    }
    int rc = body_reserve(req, req->body_len + size, false);
    if (rc != 0)
        return body_refused(req, rc);
    memcpy(req->body + req->body_len, data, size);
    req->body_len += size;
    req->body[req->body_len] = '\0';
    return MHD_YES;
}

static void dispatch(struct http_request *req)
{
    struct http_server *srv = req->srv;
    req->state = REQ_PENDING;
    req->dispatched = true;
    srv->nactive++;
    if (req->hc != NULL) /* received: the request deadline takes over */
        conn_unwatch(req->hc);
}

/* Answers a request refused before its handler, closing the connection when close. */
static enum MHD_Result refuse(struct http_request *req, unsigned status, const char *slug,
                              const char *msg, bool close)
{
    dispatch(req);
    if (close)
        http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
    http_reply_error(req, status, slug, msg, "none");
    return queue_reply(req);
}

static bool expects_continue(const struct http_request *req)
{
    const char *e = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return e != NULL && strncasecmp(e, "100-continue", 12) == 0;
}

/* The first call: the headers are in. */
static enum MHD_Result on_headers(struct http_request *req, const char *url, const char *method,
                                  const char *version)
{
    struct http_server *srv = req->srv;
    req->headers_in = true;
    req->method = method;
    req->path = url;
    set_request_id(req);
    const char *msg;
    unsigned status = check_headers(req, version, &msg);
    if (status != 0)
        return refuse(req, status, status == 501 ? "not_implemented" : "bad_request", msg, true);
    if (req->refuse == 400)
        return refuse(req, 400, "bad_request", "the path holds a percent-encoded byte", false);
    if (req->refuse == 414)
        return refuse(req, 414, "uri_too_long", "the query has too many arguments", false);
    long long cl = content_length(req);
    if (cl > (long long)srv->max_body) {
        /* A client waiting for 100 Continue, or one announcing more than we would read through,
         * is answered now (MHD then closes the connection); others are read and answered 413. */
        if (expects_continue(req) || cl - (long long)srv->max_body > HTTP_DISCARD_MAX) {
            dispatch(req);
            reply_too_large(req);
            return queue_reply(req);
        }
        req->too_large = true;
        return MHD_YES;
    }
    /* Size the body buffer once when the length is known (and small). */
    if (cl > 0) {
        int rc = body_reserve(req, (size_t)(cl < BODY_PRESIZE_MAX ? cl : BODY_PRESIZE_MAX), true);
        if (rc != 0)
            return body_refused(req, rc);
    }
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;

    if (req == NULL) { /* on_request_line ran out of memory */
        req = request_new(srv, conn);
        if (req == NULL)
            return MHD_NO;
        *con_cls = req;
    }
    if (!req->headers_in)
        return on_headers(req, url, method, version);

    switch (req->state) {
    case REQ_READING: break;
    case REQ_REPLIED:
    case REQ_RESET: req->suspended = false; return queue_reply(req);
    case REQ_ABORTED: return MHD_NO;
    case REQ_PENDING:
    case REQ_QUEUED:
        /* Cannot happen: a pending request is suspended and a queued one is done reading. */
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return append_body(req, upload_data, n);
    }

    dispatch(req);
    if (req->too_large)
        reply_too_large(req);
    else
        route(req);
    if (req->state == REQ_REPLIED || req->state == REQ_RESET)
        return queue_reply(req);
    /* The answer will come later: bound the wait. */
    loop_timer_start(srv->loop, &req->deadline, (uint64_t)srv->request_timeout_ms);
    MHD_suspend_connection(conn);
    req->suspended = true;
    return MHD_YES;
}

/* The deadline: whatever the request waits for is abandoned and the client told. */
static void on_deadline(void *arg)
{
    struct http_request *req = arg;
    if (req->state != REQ_PENDING)
        return;
    /* The answer cancels what is pending (http_reply). */
    log_kv(LOG_WARN, "request deadline passed", "path", req->path, "request_id", req->id, NULL);
    if (req->srv->quiescing)
        http_reply_error(req, 503, "shutting_down", "the service is shutting down", "retry");
    else
        http_reply_error(req, 504, "timeout", "the request could not be completed in time",
                         "retry");
}

/* ---- public request API ---- */

const char *http_request_method(const struct http_request *req)
{
    return req->method;
}

const char *http_request_param(const struct http_request *req, size_t i)
{
    return i < req->nparams ? req->params[i] : NULL;
}

const char *http_request_path(const struct http_request *req)
{
    return req->path;
}

const char *http_request_id(const struct http_request *req)
{
    return req->id;
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
    *len = req->body_len;
    return req->body != NULL ? req->body : "";
}

const char *http_request_header(struct http_request *req, const char *name)
{
    const char *v = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
    if (v == NULL)
        return NULL;
    /* MHD drops leading whitespace but keeps trailing (RFC 9110 5.5: neither is the value's). */
    size_t n = strlen(v);
    if (n == 0 || !ows(v[n - 1]))
        return v;
    while (n > 0 && ows(v[n - 1]))
        n--;
    char *t = arena_alloc(&req->arena, n + 1);
    if (t == NULL)
        return v;
    memcpy(t, v, n);
    t[n] = '\0';
    return t;
}

const char *http_request_query(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct loop *http_request_loop(const struct http_request *req)
{
    return req->srv->loop;
}

long http_request_age_ms(const struct http_request *req)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)((now.tv_sec - req->start.tv_sec) * 1000 +
                  (now.tv_nsec - req->start.tv_nsec) / 1000000);
}

const char *http_request_peer(struct http_request *req)
{
    if (req->peer != NULL)
        return req->peer;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char buf[INET6_ADDRSTRLEN] = "";
    if (ci != NULL && ci->client_addr != NULL) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                      sizeof(buf));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                      sizeof(buf));
    }
    req->peer = arena_strdup(&req->arena, buf);
    return req->peer != NULL ? req->peer : "";
}

struct xff_lines {
    const char *v[XFF_LINES_MAX];
    size_t n;
    bool too_many;
};

static enum MHD_Result collect_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct xff_lines *x = cls;
    (void)kind;
    if (strcasecmp(key, "X-Forwarded-For") != 0)
        return MHD_YES;
    if (x->n == XFF_LINES_MAX) {
        x->too_many = true;
        return MHD_NO;
    }
    x->v[x->n++] = value;
    return MHD_YES;
}

bool http_request_client_addr(struct http_request *req, struct ipaddr *out)
{
    if (req->client_state == CLIENT_UNASKED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        struct ipaddr peer;
        req->client_state = CLIENT_UNKNOWN;
        if (ci != NULL && ci->client_addr != NULL && ipaddr_from_sockaddr(ci->client_addr, &peer)) {
            struct http_server *srv = req->srv;
            struct xff_lines x = {.n = 0};
            MHD_get_connection_values(req->conn, MHD_HEADER_KIND, collect_xff, &x);
            if (x.too_many)
                x.n = 0;
            ipaddr_forwarded(&peer, srv->trusted, srv->ntrusted, x.v, x.n, &req->client);
            req->peer_ip = peer;
            req->client_state = CLIENT_KNOWN;
            if (x.n > 0 && !srv->warned_xff && !ipaddr_in(&peer, srv->trusted, srv->ntrusted)) {
                srv->warned_xff = true;
                char p[IPADDR_TEXT_MAX];
                ipaddr_format(&peer, p);
                log_kv(LOG_WARN,
                       "X-Forwarded-For ignored: the peer is not in trusted_proxies, so it is the "
                       "client (behind a proxy, list the proxy in trusted_proxies, or every "
                       "client shares its rate limits); logged once per worker",
                       "peer", p, "request_id", req->id, NULL);
            }
        }
    }
    if (req->client_state != CLIENT_KNOWN)
        return false;
    *out = req->client;
    return true;
}

const char *http_request_client(struct http_request *req)
{
    if (req->client_text != NULL)
        return req->client_text;
    struct ipaddr a;
    char buf[IPADDR_TEXT_MAX] = "";
    if (http_request_client_addr(req, &a))
        ipaddr_format(&a, buf);
    req->client_text = arena_strdup(&req->arena, buf);
    return req->client_text != NULL ? req->client_text : "";
}

/* Copies s into out (HTTP_USER_ID_MAX bytes and the NUL), cut if longer. */
static void copy_id(char out[HTTP_USER_ID_MAX + 1], const char *s)
{
    size_t n = strnlen(s, HTTP_USER_ID_MAX);
    memcpy(out, s, n);
    out[n] = '\0';
}

void http_request_set_user(struct http_request *req, const char *appid, const char *openid)
{
    if (appid != NULL)
        copy_id(req->app, appid);
    if (openid != NULL)
        copy_id(req->openid, openid);
}

struct async_slot *http_request_slot(struct http_request *req)
{
    return &req->pending;
}

void *http_request_alloc(struct http_request *req, size_t n)
{
    return arena_zalloc(&req->arena, n);
}

int http_add_header(struct http_request *req, const char *name, const char *value)
{
    if (req->nheaders == MAX_REPLY_HEADERS)
        return -ENOSPC;
    char *n = arena_strdup(&req->arena, name), *v = arena_strdup(&req->arena, value);
    if (n == NULL || v == NULL)
        return -ENOMEM;
    req->headers[req->nheaders].name = n;
    req->headers[req->nheaders].value = v;
    req->nheaders++;
    return 0;
}

/* Marks the request answered and, when its connection waits suspended, wakes it. */
static void finish(struct http_request *req)
{
    loop_timer_stop(req->srv->loop, &req->deadline);
    if (req->suspended) {
        MHD_resume_connection(req->conn);
        kick(req->srv);
    }
}

/* The answer when the real one cannot be built: a header MHD refused, or no memory. */
static struct MHD_Response *internal_error_response(size_t *len)
{
    static const char err[] = "{\"error\":\"internal\",\"message\":\"the answer could not be "
                              "built\",\"action\":\"retry\"}";
    *len = sizeof(err) - 1;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(sizeof(err) - 1, (void *)err, MHD_RESPMEM_PERSISTENT);
    if (resp != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return resp;
}

int http_reply(struct http_request *req, unsigned status, const char *content_type,
               const void *body, size_t len)
{
    if (req->state != REQ_PENDING)
        return -EALREADY;
    /* Answering ends the request's wait for anything. */
    async_cancel(&req->pending);
    void *copy = len > 0 ? arena_memdup(&req->arena, body, len) : NULL;
    struct MHD_Response *resp =
        len == 0 || copy != NULL
            ? MHD_create_response_from_buffer(len, copy, MHD_RESPMEM_PERSISTENT)
            : NULL;
    int rc = 0;
    if (resp != NULL) {
        bool ok = true;
        if (content_type != NULL)
            ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) ==
                  MHD_YES;
        ok &= MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES;
        ok &= MHD_add_response_header(resp, "X-Request-Id", req->id) == MHD_YES;
        for (size_t i = 0; i < req->nheaders; i++)
            ok &= MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value) ==
                  MHD_YES;
        if (!ok) {
            /* A header MHD refused (CR/LF in a value) must not vanish silently: for an
             * auth_request target, a 200 without its identity headers would be a pass. */
            MHD_destroy_response(resp);
            resp = NULL;
            rc = -EINVAL;
        }
    } else {
        rc = -ENOMEM;
    }
    if (resp == NULL) {
        resp = internal_error_response(&len);
        status = 500;
        if (resp == NULL) {
            /* Out of memory: the best left is to drop the connection. */
            req->state = REQ_RESET;
            finish(req);
            return -ENOMEM;
        }
    }
    if (req->srv->quiescing)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    req->resp = resp;
    req->status = status;
    req->bytes = len;
    req->state = REQ_REPLIED;
    finish(req);
    return rc;
}

int http_reply_jsonw(struct http_request *req, unsigned status, struct jsonw *w)
{
    size_t n = jsonw_end(w);
    if (n == 0)
        return http_reply_error(req, 500, "internal", "the reply did not fit its buffer", "retry");
    return http_reply(req, status, "application/json", w->buf, n);
}

int http_reply_json(struct http_request *req, unsigned status, json_t *body)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\","
                                  "\"action\":\"retry\"}";
        return http_reply(req, 500, "application/json", oom, sizeof(oom) - 1);
    }
    int rc = http_reply(req, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

int http_reply_error_num(struct http_request *req, unsigned status, const char *slug,
                         const char *message, const char *action, const char *key, long long value)
{
    char buf[ERROR_BODY_MAX];
    struct jsonw w;
    jsonw_begin(&w, buf, sizeof(buf));
    jsonw_str(&w, "error", slug);
    jsonw_str(&w, "message", message);
    jsonw_str(&w, "action", action);
    if (key != NULL)
        jsonw_num(&w, key, value);
    size_t n = jsonw_end(&w);
    if (n == 0) { /* a message too long for the buffer: keep the slug, drop the text */
        jsonw_begin(&w, buf, sizeof(buf));
        jsonw_str(&w, "error", slug);
        jsonw_str(&w, "action", action);
        n = jsonw_end(&w);
    }
    return http_reply(req, status, "application/json", buf, n);
}

int http_reply_error(struct http_request *req, unsigned status, const char *slug,
                     const char *message, const char *action)
{
    return http_reply_error_num(req, status, slug, message, action, NULL, 0);
}

void http_reply_reset(struct http_request *req)
{
    if (req->state != REQ_PENDING)
        return;
    async_cancel(&req->pending);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci != NULL) {
        /* Linger 0 turns MHD's close() into a TCP RST. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(ci->connect_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    req->state = REQ_RESET;
    finish(req);
}

/* ---- server lifecycle ---- */

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (!log_enabled(LOG_DEBUG))
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_kv(LOG_DEBUG, "libmicrohttpd", "detail", msg, NULL);
}

static uint16_t sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
}

/*
 * Our daemons share their port through SO_REUSEPORT, which would also let this process join a
 * port another program (or another wxlogin) already serves, silently splitting its traffic.
 * The first daemon therefore checks with a plain bind that the address is free.
 */
static bool address_free(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return true; /* let MHD report the real problem */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* TIME_WAIT is fine */
    bool ok = bind(fd, (const struct sockaddr *)ss, len) == 0 || errno != EADDRINUSE;
    close(fd);
    return ok;
}

struct http_server *http_server_new(struct loop *loop, const struct http_server_opts *opts,
                                    char err[HTTP_ERR_MAX])
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (addr_parse(opts->listen, &ss, &sslen) != 0) {
        snprintf(err, HTTP_ERR_MAX, "listen: cannot parse or resolve '%s'", opts->listen);
        return NULL;
    }
    if (opts->port != 0)
        sockaddr_set_port(&ss, opts->port);
    else if (sockaddr_port(&ss) != 0 && !address_free(&ss, sslen)) {
        snprintf(err, HTTP_ERR_MAX, "listen: %s is already in use", opts->listen);
        return NULL;
    }

    struct http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        snprintf(err, HTTP_ERR_MAX, "out of memory");
        return NULL;
    }
    srv->loop = loop;
    srv->max_body = opts->max_body;
    srv->request_timeout_ms = opts->request_timeout_ms > 0 ? opts->request_timeout_ms : 60000;
    srv->read_timeout_ms = opts->read_timeout_ms > 0 ? (uint64_t)opts->read_timeout_ms : 15000;
    srv->body_budget = opts->body_memory;
    srv->routes = opts->routes;
    srv->nroutes = opts->nroutes;
    srv->fallback = opts->fallback;
    srv->handler_arg = opts->handler_arg;
    srv->trusted = opts->trusted_proxies;
    srv->ntrusted = opts->ntrusted_proxies;
    srv->metrics = opts->metrics;
    list_init(&srv->live);
    list_init(&srv->pool);
    list_init(&srv->reading);
    list_init(&srv->conn_pool);
    loop_timer_init(&srv->read_timer, on_read_timer, srv);
    loop_timer_init(&srv->mhd_timer, on_mhd_timer, srv);
    loop_timer_init(&srv->drained_timer, on_drained_timer, srv);
    if (getrandom(&srv->id_prefix, sizeof(srv->id_prefix), 0) != sizeof(srv->id_prefix))
        srv->id_prefix = (uint32_t)time(NULL);

    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->mhd = MHD_start_daemon(
        flags, sockaddr_port(&ss), NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        srv, MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
        MHD_OPTION_CONNECTION_LIMIT, opts->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        opts->connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, opts->max_connections_per_address,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_URI_LOG_CALLBACK,
        on_request_line, srv, MHD_OPTION_END);
    if (srv->mhd == NULL) {
        snprintf(err, HTTP_ERR_MAX, "listen: cannot listen on %s (address in use?)", opts->listen);
        goto fail;
    }
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = pi != NULL ? pi->port : sockaddr_port(&ss);
    const union MHD_DaemonInfo *ei = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (ei == NULL) {
        snprintf(err, HTTP_ERR_MAX, "libmicrohttpd has no epoll support");
        goto fail;
    }
    srv->mhd_io = loop_io_add(loop, ei->epoll_fd, EPOLLIN, on_mhd_io, srv);
    if (srv->mhd_io == NULL) {
        snprintf(err, HTTP_ERR_MAX, "cannot watch the HTTP daemon: %s", strerror(errno));
        goto fail;
    }
    kick(srv);
    return srv;
fail:
    http_server_free(srv);
    return NULL;
}

void http_server_set_routes(struct http_server *srv, const struct http_route *routes,
                            size_t nroutes)
{
    srv->routes = routes;
    srv->nroutes = nroutes;
}

uint16_t http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_quiesce(struct http_server *srv, http_drained_fn *drained, void *arg)
{
    if (!srv->quiescing) {
        srv->quiescing = true;
        MHD_socket s = MHD_quiesce_daemon(srv->mhd);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
    srv->drained_fn = drained;
    srv->drained_arg = arg;
    loop_timer_start(srv->loop, &srv->drained_timer, 0);
}

void http_server_free(struct http_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->mhd != NULL) {
        /* MHD must not be stopped with suspended connections: abandon every pending answer
         * (cancelling what it waits for) and answer it here. */
        srv->quiescing = true;
        struct list *pos, *tmp;
        list_for_each_safe(pos, tmp, &srv->live)
        {
            struct http_request *req = list_item(pos, struct http_request, node);
            if (req->state == REQ_PENDING)
                http_reply_error(req, 503, "shutting_down", "the service is shutting down",
                                 "retry");
        }
        MHD_run(srv->mhd);
        MHD_stop_daemon(srv->mhd);
    }
    loop_io_del(srv->mhd_io);
    loop_timer_stop(srv->loop, &srv->mhd_timer);
    loop_timer_stop(srv->loop, &srv->drained_timer);
    loop_timer_stop(srv->loop, &srv->read_timer);
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &srv->pool)
    {
        list_unlink(pos);
        free(list_item(pos, struct http_request, node));
    }
    list_for_each_safe(pos, tmp, &srv->conn_pool)
    {
        list_unlink(pos);
        free(list_item(pos, struct http_conn, node));
    }
    free(srv);
}
