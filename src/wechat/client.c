/*
 * wechat/client: libcurl multi on the worker's loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it
 * (CURLMOPT_TIMERFUNCTION); we forward readiness with curl_multi_socket_action() and collect
 * finished transfers with curl_multi_info_read(). A call keeps its easy handle across retries.
 * Finished calls go back to the client's pool with their easy handle, whose options are set
 * once when it is made (each curl_easy_reset + setopt round costs a dozen allocations), and
 * their URL, body and response buffers, which are wiped, not freed.
 */
#include "wechat/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>

#include "crypto/crypto.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "runtime/async.h"
#include "util/list.h"
#include "version.h"

#define RESPONSE_MAX (64 * 1024)
#define POOL_MAX 256
/* WeChat drops idle keep-alive connections after about 30 s; a pooled connection older than
 * that fails on reuse, so curl must not reuse one that old. */
#define MAX_CONN_AGE_S 25L
/* curl's default cache keeps 4 connections per transfer in progress and closes the rest, so
 * under load it keeps reconnecting (a TLS handshake each time with WeChat). Keep plenty. */
#define MAX_CACHED_CONNS 1024L
#define BACKOFF_BASE_MS 100L
#define BACKOFF_CAP_MS 2000L

struct wechat_client {
    struct loop *loop;
    CURLM *multi;
    struct loop_timer timer;
    char *base;
    size_t base_len;
    struct curl_slist *json_headers;
    long timeout_ms;
    int retries;
    bool no_proxy;      /* no proxy in the environment: tell curl, so it stops looking */
    struct list active; /* calls in progress */
    struct list pool;   /* finished calls kept for reuse */
    size_t npool;
};

/* A growable buffer that is wiped, never just freed: it may hold secrets. */
struct buf {
    char *p;
    size_t len, cap;
};

struct wechat_call {
    struct async async;
    struct wechat_client *c;
    CURL *easy;
    enum wechat_api api;
    struct buf url, post, resp;
    bool is_post;
    bool in_multi;
    bool aborted; /* marked by abort_transfers() */
    bool nomem;   /* this attempt's answer could not be kept: out of memory in on_write() */
    int attempts;
    uint64_t start_us; /* monotonic, when the call began (for metrics) */
    struct loop_timer backoff;
    wechat_accept_fn *accept;
    wechat_decode_fn *decode;
    void (*done)(void);
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
    struct list node; /* the client's active list or pool */
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- buffers and URLs ---- */

static int buf_set(struct buf *b, const char *a, size_t alen, const char *s, size_t n)
{
    size_t need = alen + n + 1;
    if (need > b->cap) {
        char *p = malloc(need);
        if (p == NULL)
            return -1;
        if (b->p != NULL) {
            crypto_wipe(b->p, b->len);
            free(b->p);
        }
        b->p = p;
        b->cap = need;
    }
    memcpy(b->p, a, alen);
    memcpy(b->p + alen, s, n);
    b->len = alen + n;
    b->p[b->len] = '\0';
    return 0;
}

static void buf_wipe(struct buf *b)
{
    if (b->p != NULL)
        crypto_wipe(b->p, b->len);
    b->len = 0;
}

static void buf_free(struct buf *b)
{
    buf_wipe(b);
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

void wechat_url_init(struct wechat_url *u, const char *path)
{
    size_t n = strlen(path);
    u->overflow = n >= sizeof(u->buf);
    u->len = u->overflow ? 0 : n;
    memcpy(u->buf, path, u->len);
    u->buf[u->len] = '\0';
}

/* RFC 3986 percent-encoding of everything but the unreserved characters: a few lines here
 * spare an allocation per value (curl_easy_escape returns malloc'd strings). */
void wechat_url_arg(struct wechat_url *u, const char *key, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *parts[2] = {key, value};
    if (u->overflow)
        return;
    char sep = memchr(u->buf, '?', u->len) != NULL ? '&' : '?';
    for (int k = 0; k < 2 && !u->overflow; k++) {
        if (u->len + 1 >= sizeof(u->buf)) {
            u->overflow = true;
            break;
        }
        u->buf[u->len++] = k == 0 ? sep : '=';
        for (const unsigned char *s = (const unsigned char *)parts[k]; *s != '\0'; s++) {
            bool plain = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                         (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' || *s == '_' ||
                         *s == '~';
            if (u->len + (plain ? 1 : 3) >= sizeof(u->buf)) {
                u->overflow = true;
                break;
            }
            if (plain) {
                u->buf[u->len++] = (char)*s;
            } else {
                u->buf[u->len++] = '%';
                u->buf[u->len++] = hex[*s >> 4];
                u->buf[u->len++] = hex[*s & 15];
            }
        }
    }
    u->buf[u->overflow ? 0 : u->len] = '\0';
}

void wechat_url_wipe(struct wechat_url *u)
{
    crypto_wipe(u->buf, u->len);
    u->len = 0;
}

void wechat_decode_raw(void (*done)(void), void *arg, const struct wechat_reply *reply)
{
    ((wechat_reply_fn *)done)(arg, reply);
}

/* ---- pure helpers ---- */

bool wechat_retryable(enum wechat_api api, const struct wechat_reply *r)
{
    switch (r->status) {
    case WECHAT_ERRCODE: return (wechat_errcode_flags(api, r->errcode) & WECHAT_EC_RETRYABLE) != 0;
    case WECHAT_HTTP_ERROR: return r->http_status >= 500 && r->http_status <= 599;
    case WECHAT_CONNECT: return true;
    case WECHAT_OK:
    case WECHAT_BAD_BODY:
    case WECHAT_TIMEOUT:
    case WECHAT_INTERNAL: return false;
    }
    return false;
}

long wechat_backoff_ms(int n, uint32_t rnd)
{
    /* "Equal jitter": half the exponential step is fixed, half random, so retries from many
     * requests spread out but none comes back immediately. */
    long step = BACKOFF_BASE_MS;
    for (int i = 1; i < n && step < BACKOFF_CAP_MS; i++)
        step *= 2;
    if (step > BACKOFF_CAP_MS)
        step = BACKOFF_CAP_MS;
    long half = step / 2;
    return half + (long)(rnd % (uint32_t)(half + 1));
}

void wechat_errmsg_rid(const char *errmsg, char out[WECHAT_RID_MAX])
{
    out[0] = '\0';
    if (errmsg == NULL)
        return;
    const char *p = strstr(errmsg, "rid: ");
    size_t skip = 5;
    if (p == NULL) {
        p = strstr(errmsg, "req_id: ");
        skip = 8;
    }
    if (p == NULL)
        return;
    p += skip;
    size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-");
    if (n >= WECHAT_RID_MAX)
        n = WECHAT_RID_MAX - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

void wechat_classify(struct wechat_reply *r, int curl_code, long http_status, const char *body,
                     size_t len, wechat_accept_fn *accept)
{
    r->http_status = http_status;
    r->errcode = 0;
    r->rid[0] = '\0';
    r->body = NULL;
    if (curl_code == CURLE_OPERATION_TIMEDOUT) {
        r->status = WECHAT_TIMEOUT;
        r->detail = "no answer within the deadline";
        return;
    }
    /* Failures of ours, not WeChat's: curl ran out of memory (or we did, keeping the answer:
     * transfer_done() says so with this code), or we stopped the transfer (abort_transfers()).
     * Not retried: the request may have reached WeChat, and a login or phone code is spent
     * there once; another attempt would be told it was used. */
    if (curl_code == CURLE_OUT_OF_MEMORY || curl_code == CURLE_ABORTED_BY_CALLBACK) {
        r->status = WECHAT_INTERNAL;
        r->detail = curl_code == CURLE_OUT_OF_MEMORY ? "out of memory receiving the answer"
                                                     : "transfer stopped: a socket could not "
                                                       "be watched";
        return;
    }
    if (curl_code == CURLE_WRITE_ERROR) {
        r->status = WECHAT_BAD_BODY;
        r->detail = "response too large";
        return;
    }
    if (curl_code != CURLE_OK) {
        r->status = WECHAT_CONNECT;
        r->detail = curl_easy_strerror((CURLcode)curl_code);
        return;
    }
    if (http_status != 200) {
        r->status = WECHAT_HTTP_ERROR;
        r->detail = "unexpected HTTP status";
        return;
    }
    /* WeChat often labels JSON text/plain: the body is parsed whatever Content-Type says. */
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && json_error_code(&jerr) == json_error_out_of_memory) {
        /* WeChat's answer may well have been good: say it was us. */
        r->status = WECHAT_INTERNAL;
        r->detail = "out of memory parsing the answer";
        return;
    }
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        r->status = WECHAT_BAD_BODY;
        r->detail = "body is not a JSON object";
        return;
    }
    json_t *ec = json_object_get(root, "errcode");
    json_t *em = json_object_get(root, "errmsg");
    wechat_errmsg_rid(json_string_value(em), r->rid);
    if (ec != NULL && !json_is_integer(ec)) {
        wechat_body_wipe(root);
        json_decref(root);
        r->status = WECHAT_BAD_BODY;
        r->detail = "errcode is not a number";
        return;
    }
    /* A missing errcode means success (code2Session sends none on success). */
    long code = ec != NULL ? (long)json_integer_value(ec) : 0;
    if (code != 0) {
        r->status = WECHAT_ERRCODE;
        r->errcode = code;
        r->detail = "WeChat returned an error";
        r->body = root;
        return;
    }
    if (accept != NULL && !accept(root)) {
        wechat_body_wipe(root);
        json_decref(root);
        r->status = WECHAT_BAD_BODY;
        r->detail = "body lacks the expected fields";
        return;
    }
    r->status = WECHAT_OK;
    r->detail = "ok";
    r->body = root;
}

void wechat_body_wipe(json_t *body)
{
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_string(body)) {
        /* jansson hands out its own buffer; zeroing it in place before the free is the point. */
        crypto_wipe((char *)json_string_value(body), json_string_length(body));
    } else if (json_is_object(body)) {
        json_object_foreach(body, key, v) wechat_body_wipe(v);
    } else if (json_is_array(body)) {
        json_array_foreach(body, i, v) wechat_body_wipe(v);
    }
}

/* ---- curl <-> loop glue ---- */

static void check_done(struct wechat_client *c);

static void abort_transfers(struct wechat_client *c);

static void on_sock(struct loop_io *io, int fd, uint32_t events, void *arg)
{
    (void)io;
    struct wechat_client *c = arg;
    int flags = 0, running;
    if (events & (EPOLLIN | EPOLLHUP))
        flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (events & EPOLLERR)
        flags |= CURL_CSELECT_ERR;
    if (curl_multi_socket_action(c->multi, fd, flags, &running) == CURLM_ABORTED_BY_CALLBACK)
        abort_transfers(c);
    check_done(c);
}

static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct wechat_client *c = userp;
    struct loop_io *io = socketp;
    if (what == CURL_POLL_REMOVE) {
        loop_io_del(io);
        curl_multi_assign(c->multi, fd, NULL);
        return 0;
    }
    uint32_t ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= EPOLLOUT;
    if (io == NULL) {
        io = loop_io_add(c->loop, fd, ev, on_sock, c);
        if (io == NULL)
            return -1;
        curl_multi_assign(c->multi, fd, io);
        return 0;
    }
    return loop_io_mod(io, ev) == 0 ? 0 : -1;
}

static void on_timer(void *arg)
{
    struct wechat_client *c = arg;
    int running;
    if (curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running) ==
        CURLM_ABORTED_BY_CALLBACK)
        abort_transfers(c);
    check_done(c);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct wechat_client *c = userp;
    if (timeout_ms < 0)
        loop_timer_stop(c->loop, &c->timer);
    else
        loop_timer_start(c->loop, &c->timer, (uint64_t)timeout_ms);
    return 0;
}

/* ---- calls ---- */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct wechat_call *call = userdata;
    struct buf *b = &call->resp;
    size_t n = size * nmemb;
    if (b->len + n > RESPONSE_MAX)
        return 0; /* CURLE_WRITE_ERROR: WeChat's answers are small; this is not WeChat */
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = malloc(cap);
        if (p == NULL) {
            call->nomem = true; /* not "too large": see transfer_done() */
            return 0;
        }
        if (b->p != NULL) {
            memcpy(p, b->p, b->len);
            crypto_wipe(b->p, b->len);
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, ptr, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

static void on_backoff(void *arg);

/* A new call with its easy handle, whose fixed options are set here once. */
static struct wechat_call *call_make(struct wechat_client *c)
{
    struct wechat_call *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return NULL;
    call->c = c;
    call->easy = curl_easy_init();
    if (call->easy == NULL) {
        free(call);
        return NULL;
    }
    loop_timer_init(&call->backoff, on_backoff, call);
    CURL *e = call->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, call);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, MAX_CONN_AGE_S);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "wxlogin/" WXLOGIN_VERSION);
    /* curl allocates its receive buffer for every transfer; WeChat's answers are a few hundred
     * bytes, and a buffer this small is recycled by malloc's per-thread cache instead of
     * costing a trip through the main heap (16 KiB by default). */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 1024L);
    /* curl reads the proxy variables of the environment on every transfer; when there are
     * none at start-up, say so once ("" = no proxy). With one set, curl keeps honouring it. */
    if (c->no_proxy)
        curl_easy_setopt(e, CURLOPT_PROXY, "");
    return call;
}

static void call_destroy(struct wechat_call *call)
{
    curl_easy_cleanup(call->easy);
    buf_free(&call->url);
    buf_free(&call->post);
    buf_free(&call->resp);
    free(call);
}

/* The call is over (answered or cancelled): back to the pool, its secrets wiped. */
static void call_release(struct wechat_call *call)
{
    struct wechat_client *c = call->c;
    if (call->in_multi) {
        curl_multi_remove_handle(c->multi, call->easy);
        call->in_multi = false;
    }
    loop_timer_stop(c->loop, &call->backoff);
    list_unlink(&call->node);
    /* The URL may hold the app secret or the access token, the body a session_key. */
    buf_wipe(&call->url);
    buf_wipe(&call->post);
    buf_wipe(&call->resp);
    call->done = NULL;
    if (c->npool < POOL_MAX) {
        list_push_back(&c->pool, &call->node);
        c->npool++;
        return;
    }
    call_destroy(call);
}

static void call_cancel(struct async *a)
{
    call_release((struct wechat_call *)(void *)((char *)a - offsetof(struct wechat_call, async)));
}

static int attempt(struct wechat_call *call)
{
    struct wechat_client *c = call->c;
    CURL *e = call->easy;
    buf_wipe(&call->resp);
    call->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, call->url.p);
    if (call->is_post) {
        /* WeChat's POST APIs want a JSON body (form data gets 47001). */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->post.p);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)call->post.len);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->json_headers);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    }
    call->attempts++;
    metrics_wechat_attempt(call->api);
    call->aborted = false;
    call->nomem = false;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        return -1;
    call->in_multi = true;
    return 0;
}

static void finish(struct wechat_call *call, struct wechat_reply *r)
{
    r->attempts = call->attempts;
    uint64_t now = mono_us();
    metrics_wechat_call(call->api, r->status, r->errcode,
                        now > call->start_us ? now - call->start_us : 0);
    wechat_decode_fn *decode = call->decode;
    void (*done)(void) = call->done;
    void *arg = call->arg;
    json_t *body = r->body;
    async_end(&call->async);
    call_release(call); /* before the callback: it may start the next call */
    decode(done, arg, r);
    if (body != NULL) {
        wechat_body_wipe(body);
        json_decref(body);
    }
}

static void on_backoff(void *arg)
{
    struct wechat_call *call = arg;
    if (attempt(call) != 0) {
        /* curl out of memory, or refusing handles: ours, not WeChat's. */
        struct wechat_reply r = {.status = WECHAT_INTERNAL, .detail = "cannot start transfer"};
        finish(call, &r);
    }
}

static void transfer_done(struct wechat_call *call, CURLcode code)
{
    struct wechat_client *c = call->c;
    long http_status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &http_status);
    curl_multi_remove_handle(c->multi, call->easy);
    call->in_multi = false;

    struct wechat_reply r;
    char detail[CURL_ERROR_SIZE];
    /* on_write() stopped the transfer for want of memory, not because the answer was too
     * large: the answer is not WeChat's fault. */
    if (code == CURLE_WRITE_ERROR && call->nomem)
        code = CURLE_OUT_OF_MEMORY;
    wechat_classify(&r, code, http_status, call->resp.p != NULL ? call->resp.p : "", call->resp.len,
                    call->accept);
    /* curl's own words are better than its code's for a transport failure; copied, as the call
     * is released before the callback runs. */
    if ((r.status == WECHAT_CONNECT || r.status == WECHAT_TIMEOUT) && call->errbuf[0] != '\0') {
        memcpy(detail, call->errbuf, sizeof(detail));
        detail[sizeof(detail) - 1] = '\0';
        r.detail = detail;
    }
    if (wechat_retryable(call->api, &r) && call->attempts <= c->retries) {
        if (r.body != NULL) {
            wechat_body_wipe(r.body);
            json_decref(r.body);
        }
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
            rnd = (uint32_t)loop_clock_ms();
        loop_timer_start(c->loop, &call->backoff, (uint64_t)wechat_backoff_ms(call->attempts, rnd));
        return;
    }
    finish(call, &r);
}

/*
 * sock_cb failed (no memory to watch a socket): curl then stops every transfer of the multi
 * handle, reports none of them done, and refuses new ones while any is still added
 * (CURLM_ABORTED_BY_CALLBACK). End each as failed on our side (WECHAT_INTERNAL, never retried:
 * its request may have reached WeChat, and a retried code2Session or phone call would find its
 * code used), so nothing waits for an answer that cannot come and the handle works again. The
 * calls are marked first: the callbacks may start new transfers, which are not to be ended.
 */
static void abort_transfers(struct wechat_client *c)
{
    struct list *pos, *tmp;
    list_for_each_safe(pos, tmp, &c->active)
    {
        struct wechat_call *call = list_item(pos, struct wechat_call, node);
        call->aborted = call->in_multi;
    }
    for (;;) {
        struct wechat_call *next = NULL;
        list_for_each_safe(pos, tmp, &c->active)
        {
            struct wechat_call *call = list_item(pos, struct wechat_call, node);
            if (call->aborted) {
                next = call;
                break;
            }
        }
        if (next == NULL)
            return;
        next->aborted = false;
        if (next->in_multi)
            transfer_done(next, CURLE_ABORTED_BY_CALLBACK);
    }
}

static void check_done(struct wechat_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct wechat_call *call = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
        if (call != NULL && call->in_multi)
            transfer_done(call, msg->data.result);
    }
}

int wechat_call(struct wechat_client *c, struct async_slot *slot, enum wechat_api api,
                const struct wechat_url *url, const char *post, size_t post_len,
                wechat_accept_fn *accept, wechat_decode_fn *decode, void (*done)(void), void *arg)
{
    if (url->overflow)
        return -EINVAL;
    struct wechat_call *call;
    struct list *n = list_first(&c->pool);
    if (n != NULL) {
        list_unlink(n);
        c->npool--;
        call = list_item(n, struct wechat_call, node);
    } else {
        call = call_make(c);
        if (call == NULL)
            return -ENOMEM;
    }
    call->api = api;
    call->attempts = 0;
    call->start_us = mono_us();
    call->accept = accept;
    call->decode = decode;
    call->done = done;
    call->arg = arg;
    call->is_post = post != NULL;
    list_push_back(&c->active, &call->node);
    if (buf_set(&call->url, c->base, c->base_len, url->buf, url->len) != 0 ||
        (post != NULL && buf_set(&call->post, "", 0, post, post_len) != 0) || attempt(call) != 0) {
        call_release(call);
        return -ENOMEM;
    }
    async_begin(&call->async, slot, call_cancel);
    return 0;
}

/* ---- client ---- */

long wechat_budget_ms(long timeout_ms, long retries)
{
    return timeout_ms * (retries + 1) + BACKOFF_CAP_MS * retries;
}

long wechat_client_budget_ms(const struct wechat_client *c)
{
    return wechat_budget_ms(c->timeout_ms, c->retries);
}

struct wechat_client *wechat_client_new(struct loop *loop, const struct wechat_client_opts *opts)
{
    struct wechat_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->timeout_ms = opts->timeout_ms;
    c->retries = opts->retries;
    list_init(&c->active);
    list_init(&c->pool);
    loop_timer_init(&c->timer, on_timer, c);
    c->base = strdup(opts->base);
    c->base_len = c->base != NULL ? strlen(c->base) : 0;
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                             "all_proxy",  "ALL_PROXY",   NULL};
    c->no_proxy = true;
    for (size_t i = 0; proxy_vars[i] != NULL; i++)
        if (getenv(proxy_vars[i]) != NULL)
            c->no_proxy = false;
    c->multi = curl_multi_init();
    c->json_headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (c->base == NULL || c->multi == NULL || c->json_headers == NULL) {
        wechat_client_free(c);
        return NULL;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, MAX_CACHED_CONNS);
    return c;
}

void wechat_client_free(struct wechat_client *c)
{
    if (c == NULL)
        return;
    struct list *pos, *tmp;
    /* Outstanding calls: their owners are gone or going; no callback. */
    list_for_each_safe(pos, tmp, &c->active)
    {
        struct wechat_call *call = list_item(pos, struct wechat_call, node);
        async_end(&call->async);
        call_release(call);
    }
    list_for_each_safe(pos, tmp, &c->pool)
    {
        list_unlink(pos);
        call_destroy(list_item(pos, struct wechat_call, node));
    }
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    loop_timer_stop(c->loop, &c->timer);
    curl_slist_free_all(c->json_headers);
    free(c->base);
    free(c);
}
