/*
 * metrics: the service's counters and histograms, rendered in Prometheus' text format.
 *
 * Counting must cost nothing a request would notice (GET /v1/session is answered in a few
 * microseconds), so nothing is shared per request: each worker thread owns a shard (allocated
 * once, when the thread attaches) and is the only writer of its cells. An increment is a
 * relaxed atomic load and a relaxed atomic store of the owner's own cell, which compile to a
 * plain load, add and store: no lock, no lock-prefixed read-modify-write, no cache line another
 * thread writes. The scraper (metrics_render(), on whichever thread serves /metrics) reads every
 * shard's cells with relaxed loads and sums them; atomics keep that read race-free, and a cell
 * is at worst an increment behind.
 *
 * Threads that own no shard (the SQLite writer, the main thread) count into one shared shard
 * with atomic read-modify-writes; nothing on a request's path runs there.
 *
 * Until metrics_start(), every counting function returns at once: with metrics off (no
 * metrics_listen) a count costs a call and a test of a thread-local pointer.
 *
 * Histograms have fixed buckets (METRICS_BUCKETS_US) and keep their sum in microseconds.
 */
#ifndef WXLOGIN_METRICS_H
#define WXLOGIN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "wechat/errcode.h"

/* Routes whose requests are counted under their own labels; the rest share "other". */
#define METRICS_ROUTES_MAX 32

/* ---- lifecycle (main thread, before the workers run / after they stopped) ---- */

/*
 * Turns counting on. routes (borrowed, must outlive metrics_stop()) name the HTTP routes
 * counted by index (metrics_http_request()). Returns 0, or -1 when out of memory.
 */
int metrics_start(const struct http_route *routes, size_t nroutes);
/* Frees every shard; counting is off again. After every counting thread is done. */
void metrics_stop(void);
bool metrics_enabled(void);

/*
 * Gives the calling thread a shard of its own (workers call it first thing on their thread).
 * Does nothing when metrics are off. Returns 0, or -1 when out of memory (the thread then
 * counts into the shared shard).
 */
int metrics_thread_attach(void);

/* ---- counting: from any thread ---- */

/* An HTTP request answered with status, route index route (>= nroutes: no route took it),
 * us microseconds from its request line to its completion. */
void metrics_http_request(size_t route, unsigned status, uint64_t us);

/* A WeChat call ended (after its retries): how, with which errcode (status WECHAT_ERRCODE), in
 * how long. */
void metrics_wechat_call(enum wechat_api api, enum wechat_status status, long errcode, uint64_t us);
/* One HTTP attempt of a WeChat call started (the first and each retry). */
void metrics_wechat_attempt(enum wechat_api api);

/* How a login code's exchange was joined (exchange/exchange.h's roles). */
enum metrics_exchange {
    METRICS_EXCHANGE_LEAD,       /* this request called (or asked to call) WeChat */
    METRICS_EXCHANGE_WAITED,     /* in process: waited for the request exchanging it */
    METRICS_EXCHANGE_REMEMBERED, /* in process: its remembered outcome was reused */
    METRICS_EXCHANGE_NKINDS,
};
void metrics_exchange(enum metrics_exchange kind);

/* A claim on a code across instances (store/store.h's enum store_claim answers; error: the
 * store failed). */
enum metrics_claim {
    METRICS_CLAIM_MINE,
    METRICS_CLAIM_BUSY,
    METRICS_CLAIM_KNOWN, /* another instance's outcome reused: a dedup hit across instances */
    METRICS_CLAIM_ERROR,
    METRICS_CLAIM_NKINDS,
};
void metrics_claim(enum metrics_claim kind);

/* The session cache answered a lookup (hit) or sent it to the store (miss). */
void metrics_cache_lookup(bool hit);

/* Store operations, as the store decorator (store/timed.c) sees them. */
enum metrics_store_op {
    METRICS_STORE_PING,
    METRICS_STORE_LOGIN,
    METRICS_STORE_PUT_SESSION,
    METRICS_STORE_GET_SESSION,
    METRICS_STORE_REFRESH,
    METRICS_STORE_REVOKE,
    METRICS_STORE_USER_INFO,
    METRICS_STORE_GET_USER,
    METRICS_STORE_PURGE_EXPIRED,
    METRICS_STORE_CLAIM,
    METRICS_STORE_CLAIM_PUBLISH,
    METRICS_STORE_CLAIM_RELEASE,
    METRICS_STORE_LEASE_READ,
    METRICS_STORE_LEASE_TAKE,
    METRICS_STORE_LEASE_PUBLISH,
    METRICS_STORE_LEASE_INVALIDATE,
    METRICS_STORE_LIMIT_TAKE,
    METRICS_STORE_NOPS,
};
/* status: STORE_OK, STORE_NOT_FOUND or STORE_ERROR; fire-and-forget operations (publish,
 * release, invalidate) are counted with sent = true and no latency. */
void metrics_store_op(enum metrics_store_op op, int status, uint64_t us);
void metrics_store_sent(enum metrics_store_op op);

/* The access token. */
enum metrics_token_fetch {
    METRICS_TOKEN_OK,
    METRICS_TOKEN_FAILED,  /* WeChat or the store refused or failed */
    METRICS_TOKEN_ABORTED, /* could not start, or its worker stopped */
    METRICS_TOKEN_NRESULTS,
};
void metrics_token_fetch(enum metrics_token_fetch result);
/* A background refresh of a token still served began. */
void metrics_token_refresh(void);
/* WeChat rejected a token and it was invalidated. */
void metrics_token_invalidation(void);

/* A request answered 429 because of a rate limit. */
enum metrics_limit {
    METRICS_LIMIT_ADDRESS,
    METRICS_LIMIT_OPENID,
    METRICS_LIMIT_WECHAT,
    METRICS_LIMIT_ADMIN, /* the admin routes' lockout of an address */
    METRICS_LIMIT_NKINDS,
};
void metrics_rate_limited(enum metrics_limit which);

/* ---- scraping ---- */

/*
 * Every metric in Prometheus' text exposition format (version 0.0.4), the process_* ones from
 * /proc/self included. Returns a malloc'd buffer the caller frees and its length in *len, or
 * NULL when out of memory or metrics are off.
 */
char *metrics_render(size_t *len);

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * The listener of GET /metrics (metrics/server.c): an HTTP server of its own on listen
 * (host:port), on loop, answering only that route. Returns NULL and writes err on failure.
 * Freed with http_server_free().
 */
struct http_server *metrics_server_new(struct loop *loop, const char *listen,
                                       char err[HTTP_ERR_MAX]);

#endif
