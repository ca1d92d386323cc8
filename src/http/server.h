/*
 * http/server: the HTTP front. One server per worker thread, on that thread's loop.
 *
 * Wraps a libmicrohttpd daemon in external-epoll mode: MHD's epoll fd and its timeout are
 * watched by our loop, so MHD never runs a thread of its own. Every daemon of the process binds
 * the same address with SO_REUSEPORT and the kernel spreads connections across them.
 *
 * The server reads the whole request body (up to max_body), routes by path and method, and
 * calls the route's handler once. The handler answers with http_reply*() either before it returns
 * or later from the same thread: meanwhile the connection is suspended and the request's one
 * pending slot (http_request_slot()) holds the asynchronous operation it waits for.
 *
 * This file owns the request's lifetime, so "every request is answered, and nothing it started
 * outlives it" is a property of this module:
 *   - a request still pending at its deadline (request_timeout_ms) has its pending operation
 *     cancelled and is answered 504 (503 while the server shuts down);
 *   - at shutdown every pending request has its operation cancelled and is answered 503;
 *   - answering cancels whatever is still pending;
 *   - the request's scratch memory (http_request_alloc()) is released when the request ends,
 *     after its answer is sent or the client is gone. Handlers never free request state.
 * Unknown paths, wrong methods (404/405, or the server's fallback handler when it has one: the
 * mock's) and oversized bodies are answered here, and so is everything this module refuses
 * before a handler sees it (libmicrohttpd 0.9.75 is lenient, wxlogin is not):
 *   - framing a proxy could read differently: Transfer-Encoding with Content-Length, Content-Length
 *     twice with different values, a transfer coding other than "chunked", whitespace before a
 *     header's colon, a control character (NUL...) in a header value, HTTP/1.1 without one Host:
 *     400 (501 for an unknown coding), and the connection closed;
 *   - a path with a percent-encoded byte (routing is on the raw path, so /%61dmin is not /admin):
 *     400; more than HTTP_MAX_ARGS query arguments: 414;
 *   - a request whose line, headers and body take longer than read_timeout (slowloris): 408, or
 *     400 when its bytes could not even be parsed (a line longer than the connection's buffer);
 *   - a body when the server's body memory is spent: 503 and the connection closed;
 *   - a body larger than max_body: read and dropped (up to HTTP_DISCARD_MAX), then 413, so a
 *     client that writes its whole body before reading sees the 413 rather than a reset.
 * A header value's trailing whitespace is not part of it (http_request_header()).
 */
#ifndef WXLOGIN_HTTP_SERVER_H
#define WXLOGIN_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct async_slot;
struct ipaddr;
struct ipaddr_net;
struct loop;
struct http_server;
struct http_request;
struct jsonw;

typedef void http_handler_fn(struct http_request *req, void *arg);
typedef void http_drained_fn(void *arg);

struct http_route {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* exact path; a "*" segment takes any one non-empty segment of the
                           request's (http_request_param()) */
    http_handler_fn *fn;
};

struct http_server_opts {
    const char *listen; /* host:port; port 0 picks a free port */
    uint16_t port;      /* when non-zero, overrides listen's port (other workers join port 0's) */
    size_t max_body;
    unsigned max_connections;             /* of this server (worker) */
    unsigned max_connections_per_address; /* of this server; 0 = no limit */
    unsigned connection_timeout_s;        /* idle */
    long read_timeout_ms;    /* a request not fully received this long after its connection opened
                                or its previous answer is answered 408 and closed; 0 = 15 s */
    size_t body_memory;      /* bytes of request bodies this server buffers at once; 0 = no cap */
    long request_timeout_ms; /* a request still pending this long is answered 504 */
    /* Proxies whose X-Forwarded-For is believed (http_request_client()); borrowed, must outlive
     * the server. */
    const struct ipaddr_net *trusted_proxies;
    size_t ntrusted_proxies;
    const struct http_route *routes; /* borrowed, must outlive the server */
    size_t nroutes;
    /* Called instead of the 404/405 answers for a request no route takes (its path is unknown,
     * or no route of that path has its method); NULL keeps them. The mock answers those the
     * way WeChat does (HTTP 200 and an errcode). */
    http_handler_fn *fallback;
    void *handler_arg; /* passed to every handler */
    /* Count every request in metrics/metrics.h by its route's index in routes, its status and
     * its duration (the service's own server; not the one serving /metrics). */
    bool metrics;
};

#define HTTP_ERR_MAX 256
/* Query arguments a request may carry (ours take at most a handful). */
#define HTTP_MAX_ARGS 32
/* Bytes of an oversized body read and dropped before answering 413. */
#define HTTP_DISCARD_MAX (4 * 1024 * 1024)

/* Starts listening. Returns NULL and writes err on failure. */
struct http_server *http_server_new(struct loop *loop, const struct http_server_opts *opts,
                                    char err[HTTP_ERR_MAX]);
/* Port actually bound (useful with port 0). */
uint16_t http_server_port(const struct http_server *srv);
/* Routes requests by this table from now on (a reload); from the server's thread. Borrowed: it
 * must outlive the server or the next call. A request already routed is not affected. */
void http_server_set_routes(struct http_server *srv, const struct http_route *routes,
                            size_t nroutes);
/*
 * Stops accepting connections; requests already received are still answered and every response
 * from now on closes its connection. drained(arg) runs (from the loop, once) when no request
 * handed to a handler is left. Requests still sending their headers or body are not waited
 * for: a client that half-closed mid-body would otherwise hold the shutdown.
 */
void http_server_quiesce(struct http_server *srv, http_drained_fn *drained, void *arg);
/*
 * Stops the server: pending requests get their operation cancelled and are answered 503, then
 * every connection is closed. Accepts NULL.
 */
void http_server_free(struct http_server *srv);

/* ---- the request, as handlers see it; every pointer is borrowed from the request ---- */
const char *http_request_method(const struct http_request *req);
const char *http_request_path(const struct http_request *req);
const char *http_request_id(const struct http_request *req);
/* Body bytes (NUL-terminated for convenience; may contain NULs). */
const char *http_request_body(const struct http_request *req, size_t *len);
/* Request header or NULL, without trailing whitespace. */
const char *http_request_header(struct http_request *req, const char *name);
/* The request path's segment that the route's i-th "*" took (from 0), or NULL. */
#define HTTP_MAX_PARAMS 4
const char *http_request_param(const struct http_request *req, size_t i);
/* Query-string argument or NULL. */
const char *http_request_query(const struct http_request *req, const char *name);
struct loop *http_request_loop(const struct http_request *req);
/* Milliseconds since the request began (its request line arrived). */
long http_request_age_ms(const struct http_request *req);
/* The peer's address as text ("203.0.113.7", "2001:db8::1"): the TCP peer, which is the proxy
 * when one is in front. Computed once per request; "" when unknown. */
const char *http_request_peer(struct http_request *req);
/*
 * The client's address: the TCP peer, unless the peer is one of the server's trusted_proxies;
 * then the address X-Forwarded-For gives (every line of it, in order): the rightmost entry that
 * is not itself a trusted proxy (util/ipaddr.h, ipaddr_forwarded(); a malformed header: the
 * peer). Rate limits and anything else that must not be fooled by a client-sent header use
 * this. Computed once per request, and only when asked for. False (out untouched) when the
 * peer's address is unknown. The first time a worker sees X-Forwarded-For from a peer it does
 * not trust, it logs a warning (a proxy missing from trusted_proxies makes every client one).
 */
bool http_request_client_addr(struct http_request *req, struct ipaddr *out);
/* The same as text ("203.0.113.9"), "" when unknown. */
const char *http_request_client(struct http_request *req);

/*
 * Names the app and the user the request acts for, for its access line ("app", "openid"): a
 * handler calls it as soon as it knows them (the app once resolved, the openid once a login or a
 * session said whose it is). NULL leaves that one as it was. Copied into the request itself (no
 * allocation); a value longer than HTTP_USER_ID_MAX bytes is cut. Never pass a secret here.
 */
#define HTTP_USER_ID_MAX 128
void http_request_set_user(struct http_request *req, const char *appid, const char *openid);

/* The request's one pending slot: every asynchronous operation a handler starts goes here. */
struct async_slot *http_request_slot(struct http_request *req);

/* n zeroed bytes of request-lifetime memory (16-aligned), NULL when out of memory. */
void *http_request_alloc(struct http_request *req, size_t n);

/* ---- answering: exactly one http_reply*() per request ---- */
/* Adds a response header (copied). Call before the reply. */
int http_add_header(struct http_request *req, const char *name, const char *value);
/* Answers with body (copied); content_type NULL sends none (e.g. 204). */
int http_reply(struct http_request *req, unsigned status, const char *content_type,
               const void *body, size_t len);
/* Answers with the JSON object w holds (util/jsonw.h: closed here); one that overflowed its
 * buffer is answered 500 rather than sent cut or empty. */
int http_reply_jsonw(struct http_request *req, unsigned status, struct jsonw *w);
/* Answers with body serialised as JSON; takes the reference to body. */
int http_reply_json(struct http_request *req, unsigned status, json_t *body);
/* Answers {"error": slug, "message": message, "action": action}. */
int http_reply_error(struct http_request *req, unsigned status, const char *slug,
                     const char *message, const char *action);
/* The same with one more numeric member (e.g. "wx_errcode"); key NULL adds none. */
int http_reply_error_num(struct http_request *req, unsigned status, const char *slug,
                         const char *message, const char *action, const char *key, long long value);
/* Closes the connection without an answer, with a TCP reset (the mock uses it). */
void http_reply_reset(struct http_request *req);

#endif
