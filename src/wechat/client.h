/*
 * wechat/client: asynchronous calls to WeChat's server API, one client per worker thread.
 *
 * A client owns a libcurl multi handle driven by the worker's loop (curl's sockets and timer
 * live in the same epoll as the HTTP front), a pool of reusable calls (each with its easy handle
 * and buffers, set up once) and curl's keep-alive connection cache. A call is started into its
 * owner's pending slot (runtime/async.h), the thread goes on serving, and the done callback runs
 * later on the same thread with a classified reply; cancelling the slot stops the transfer and
 * no callback runs.
 *
 * Retries live here, so every WeChat API gets the same policy: errcodes the table marks
 * retryable (-1), HTTP 5xx and connection failures are retried with jittered exponential
 * backoff; a timed-out attempt never is (the code may already be spent at WeChat), nor is any
 * other errcode, nor a failure of our own (WECHAT_INTERNAL: out of memory, a transfer we had to
 * stop), which is never taken for a bad answer of WeChat's. Typed results per API are
 * wechat/api.h's business; this module returns replies and never logs.
 */
#ifndef WXLOGIN_WECHAT_CLIENT_H
#define WXLOGIN_WECHAT_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wechat/errcode.h"

struct async_slot;
struct loop;
struct wechat_client;

struct wechat_client_opts {
    const char *base; /* e.g. https://api.weixin.qq.com; copied */
    long timeout_ms;  /* per attempt */
    int retries;      /* extra attempts after the first */
};

#define WECHAT_RID_MAX 64
#define WECHAT_URL_MAX 4096

/* A finished call. */
struct wechat_reply {
    enum wechat_status status;
    long errcode;     /* WECHAT_ERRCODE */
    long http_status; /* last HTTP status seen, 0 if none */
    int attempts;
    char rid[WECHAT_RID_MAX]; /* WeChat's request id from errmsg, "" when none */
    const char *detail;       /* short human text for logs (curl's error, parse error...) */
    json_t *body;             /* WECHAT_OK / WECHAT_ERRCODE: the parsed body, borrowed */
};

typedef void wechat_reply_fn(void *arg, const struct wechat_reply *reply);
/*
 * Turns a reply into the typed result of one API and calls done (the API's own callback type,
 * passed as a generic function pointer) with arg. wechat/api.c has one per API;
 * wechat_decode_raw hands the reply itself to a wechat_reply_fn.
 */
typedef void wechat_decode_fn(void (*done)(void), void *arg, const struct wechat_reply *reply);
void wechat_decode_raw(void (*done)(void), void *arg, const struct wechat_reply *reply);
/* Extra check of a successful body (e.g. "has an openid"); false turns it into BAD_BODY. */
typedef bool wechat_accept_fn(const json_t *body);

/* A path with its query, built without allocation; every value is percent-encoded. */
struct wechat_url {
    char buf[WECHAT_URL_MAX];
    size_t len;
    bool overflow;
};
void wechat_url_init(struct wechat_url *u, const char *path);
void wechat_url_arg(struct wechat_url *u, const char *key, const char *value);
/* Wipes it (it may hold the secret or the access token). */
void wechat_url_wipe(struct wechat_url *u);

/* The longest one call can take with these options: every attempt, and the backoff between
 * them. */
long wechat_budget_ms(long timeout_ms, long retries);
long wechat_client_budget_ms(const struct wechat_client *c);

/* Creates a client on loop. Returns NULL on failure. */
struct wechat_client *wechat_client_new(struct loop *loop, const struct wechat_client_opts *opts);
/* Cancels outstanding calls (their callbacks are not called) and frees. Accepts NULL. */
void wechat_client_free(struct wechat_client *c);

/*
 * Calls base + url: a POST of the JSON body post (post_len bytes; both copied) or, with post
 * NULL, a GET. decode(done, arg, reply) runs exactly once on the client's loop unless slot is
 * cancelled first. Returns 0, or when the call could not start (nothing is called) -ENOMEM, or
 * -EINVAL when the URL did not fit its buffer.
 */
int wechat_call(struct wechat_client *c, struct async_slot *slot, enum wechat_api api,
                const struct wechat_url *url, const char *post, size_t post_len,
                wechat_accept_fn *accept, wechat_decode_fn *decode, void (*done)(void), void *arg);

/* ---- pure helpers, exported for the tests ---- */

/* True when a reply of api is worth another attempt. */
bool wechat_retryable(enum wechat_api api, const struct wechat_reply *r);
/* Backoff before retry number n (1 = first retry); rnd is uniform random bits. */
long wechat_backoff_ms(int n, uint32_t rnd);
/* Copies WeChat's request id ("..., rid: 652d44d0-...") from errmsg into out; "" when none. */
void wechat_errmsg_rid(const char *errmsg, char out[WECHAT_RID_MAX]);
/* Classifies a finished attempt: curl's code, the HTTP status and the body bytes.
 * CURLE_OUT_OF_MEMORY and CURLE_ABORTED_BY_CALLBACK (the client stopped the transfer), and a
 * body that could not be parsed for want of memory, are WECHAT_INTERNAL. */
void wechat_classify(struct wechat_reply *r, int curl_code, long http_status, const char *body,
                     size_t len, wechat_accept_fn *accept);
/* Zeroes every string in a parsed body before it is freed (answers carry secrets). */
void wechat_body_wipe(json_t *body);

#endif
