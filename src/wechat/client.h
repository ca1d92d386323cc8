/*
 * wechat/client: asynchronous calls to WeChat's server API, one client per worker thread.
 *
 * A client owns a libcurl multi handle driven by the worker's loop (curl's sockets and timer
 * live in the same epoll as the HTTP front), a pool of reusable easy handles and curl's
 * keep-alive connection cache. A call is started, the caller's thread goes on serving, and the
 * done callback runs later on the same thread with a classified result.
 *
 * Retries live here, so every WeChat API gets the same policy: errcode -1, HTTP 5xx and
 * connection failures are retried with jittered exponential backoff; a timed-out attempt never
 * is (the code may already be spent at WeChat), nor is any other errcode.
 * This module returns results and never logs.
 */
#ifndef WXLOGIN_WECHAT_CLIENT_H
#define WXLOGIN_WECHAT_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;
struct wechat_client;
struct wechat_call;

struct wechat_client_opts {
    const char *base; /* e.g. https://api.weixin.qq.com; copied */
    long timeout_ms;  /* per attempt */
    int retries;      /* extra attempts after the first */
};

enum wechat_status {
    WECHAT_OK,         /* HTTP 200, JSON object, errcode absent or 0 */
    WECHAT_ERRCODE,    /* HTTP 200, JSON object with a non-zero errcode */
    WECHAT_HTTP_ERROR, /* HTTP status other than 200 */
    WECHAT_BAD_BODY,   /* not JSON, not an object, too large, or missing what the API promises */
    WECHAT_CONNECT,    /* could not connect, reset, connection died, DNS or TLS failure */
    WECHAT_TIMEOUT,    /* no complete answer within the attempt's deadline */
};

#define WECHAT_RID_MAX 64

struct wechat_result {
    enum wechat_status status;
    long errcode;     /* WECHAT_ERRCODE */
    long http_status; /* last HTTP status seen, 0 if none */
    int attempts;
    char rid[WECHAT_RID_MAX]; /* WeChat's request id from errmsg, "" when none */
    const char *detail;       /* short human text for logs (curl's error, parse error...) */
    json_t *body;             /* WECHAT_OK / WECHAT_ERRCODE: the parsed body, borrowed */
};

typedef void wechat_done_fn(const struct wechat_result *res, void *arg);
/* Extra check of a successful body (e.g. "has an openid"); false turns it into BAD_BODY. */
typedef bool wechat_accept_fn(const json_t *body);

/* Creates a client on loop. Returns NULL on failure. */
struct wechat_client *wechat_client_new(struct loop *loop, const struct wechat_client_opts *opts);
/* Cancels outstanding calls (their callbacks are not called) and frees. Accepts NULL. */
void wechat_client_free(struct wechat_client *c);

/*
 * GET base + path_query. path_query is taken over (freed by the client, wiped first because it
 * may carry the app secret). done(res, arg) is called exactly once unless the call is cancelled.
 * Returns the call handle (valid until done is called or it is cancelled), NULL on failure
 * (out of memory: done is not called).
 */
struct wechat_call *wechat_get(struct wechat_client *c, char *path_query, wechat_accept_fn *accept,
                               wechat_done_fn *done, void *arg);
/* POST base + path_query with a JSON body; path_query and body are taken over (and wiped). */
struct wechat_call *wechat_post_json(struct wechat_client *c, char *path_query, char *body,
                                     wechat_accept_fn *accept, wechat_done_fn *done, void *arg);
/* Stops a call; done will not be called. */
void wechat_call_cancel(struct wechat_call *call);

/* code2Session: GET /sns/jscode2session. A successful body has openid and session_key. */
struct wechat_call *wechat_code2session(struct wechat_client *c, const char *appid,
                                        const char *secret, const char *code, wechat_done_fn *done,
                                        void *arg);

/* ---- pure helpers, exported for the tests ---- */

/*
 * Builds "path?k1=v1&k2=v2..." from NULL-terminated key/value pairs, URL-encoding every key and
 * value. Returns a malloc'd string or NULL.
 */
char *wechat_path_query(const char *path, const char *const *kv);
/* True when a result is worth another attempt. */
bool wechat_retryable(const struct wechat_result *res);
/* Backoff before retry number n (1 = first retry); rnd is uniform random bits. */
long wechat_backoff_ms(int n, uint32_t rnd);
/* Copies WeChat's request id ("..., rid: 652d44d0-...") from errmsg into out; "" when none. */
void wechat_errmsg_rid(const char *errmsg, char out[WECHAT_RID_MAX]);
/* Classifies a finished attempt: curl's code, the HTTP status and the body bytes. */
void wechat_classify(struct wechat_result *res, int curl_code, long http_status, const char *body,
                     size_t len, wechat_accept_fn *accept);

#endif
