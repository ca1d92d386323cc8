/*
 * wechat/client: libcurl multi on the worker's loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to wake it
 * (CURLMOPT_TIMERFUNCTION); we forward readiness with curl_multi_socket_action() and collect
 * finished transfers with curl_multi_info_read(). A call keeps its easy handle across retries;
 * finished handles go back to a small pool so their buffers and TLS session ids are reused.
 */
#include "wechat/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>

#include "loop/loop.h"
#include "version.h"

#define RESPONSE_MAX (64 * 1024)
#define POOL_MAX 64
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
    struct curl_slist *json_headers;
    long timeout_ms;
    int retries;
    CURL *pool[POOL_MAX];
    size_t npool;
    struct wechat_call *calls; /* outstanding, for cancellation at free */
};

struct wechat_call {
    struct wechat_client *c;
    CURL *easy;
    char *url;
    char *post; /* JSON body, NULL for GET */
    char *resp;
    size_t resp_len;
    bool too_large;
    bool in_multi;
    int attempts;
    struct loop_timer backoff;
    wechat_accept_fn *accept;
    wechat_done_fn *done;
    void *arg;
    char errbuf[CURL_ERROR_SIZE];
    struct wechat_call *prev, *next;
};

/* ---- pure helpers ---- */

char *wechat_path_query(const char *path, const char *const *kv)
{
    size_t cap = strlen(path) + 2, len = 0;
    char *out = NULL;
    char *enc[2] = {NULL, NULL};

    out = malloc(cap);
    if (out == NULL)
        return NULL;
    len = (size_t)snprintf(out, cap, "%s", path);
    for (size_t i = 0; kv[i] != NULL && kv[i + 1] != NULL; i += 2) {
        enc[0] = curl_easy_escape(NULL, kv[i], 0);
        enc[1] = curl_easy_escape(NULL, kv[i + 1], 0);
        if (enc[0] == NULL || enc[1] == NULL)
            goto fail;
        size_t need = len + 1 + strlen(enc[0]) + 1 + strlen(enc[1]) + 1;
        if (need > cap) {
            char *n = realloc(out, need);
            if (n == NULL)
                goto fail;
            out = n;
            cap = need;
        }
        len +=
            (size_t)snprintf(out + len, cap - len, "%c%s=%s", i == 0 ? '?' : '&', enc[0], enc[1]);
        curl_free(enc[0]);
        curl_free(enc[1]);
        enc[0] = enc[1] = NULL;
    }
    return out;
fail:
    curl_free(enc[0]);
    curl_free(enc[1]);
    free(out);
    return NULL;
}

bool wechat_retryable(const struct wechat_result *res)
{
    switch (res->status) {
    case WECHAT_ERRCODE: return res->errcode == -1;
    case WECHAT_HTTP_ERROR: return res->http_status >= 500 && res->http_status <= 599;
    case WECHAT_CONNECT: return true;
    case WECHAT_OK:
    case WECHAT_BAD_BODY:
    case WECHAT_TIMEOUT: return false;
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

void wechat_classify(struct wechat_result *res, int curl_code, long http_status, const char *body,
                     size_t len, wechat_accept_fn *accept)
{
    res->http_status = http_status;
    res->errcode = 0;
    res->rid[0] = '\0';
    res->body = NULL;
    if (curl_code == CURLE_OPERATION_TIMEDOUT) {
        res->status = WECHAT_TIMEOUT;
        res->detail = "no answer within the deadline";
        return;
    }
    if (curl_code == CURLE_WRITE_ERROR) {
        res->status = WECHAT_BAD_BODY;
        res->detail = "response too large";
        return;
    }
    if (curl_code != CURLE_OK) {
        res->status = WECHAT_CONNECT;
        res->detail = curl_easy_strerror((CURLcode)curl_code);
        return;
    }
    if (http_status != 200) {
        res->status = WECHAT_HTTP_ERROR;
        res->detail = "unexpected HTTP status";
        return;
    }
    /* WeChat often labels JSON text/plain: the body is parsed whatever Content-Type says. */
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        res->status = WECHAT_BAD_BODY;
        res->detail = "body is not a JSON object";
        return;
    }
    json_t *ec = json_object_get(root, "errcode");
    json_t *em = json_object_get(root, "errmsg");
    wechat_errmsg_rid(json_string_value(em), res->rid);
    if (ec != NULL && !json_is_integer(ec)) {
        json_decref(root);
        res->status = WECHAT_BAD_BODY;
        res->detail = "errcode is not a number";
        return;
    }
    /* A missing errcode means success (code2Session sends none on success). */
    long code = ec != NULL ? (long)json_integer_value(ec) : 0;
    if (code != 0) {
        res->status = WECHAT_ERRCODE;
        res->errcode = code;
        res->detail = "WeChat returned an error";
        res->body = root;
        return;
    }
    if (accept != NULL && !accept(root)) {
        json_decref(root);
        res->status = WECHAT_BAD_BODY;
        res->detail = "body lacks the expected fields";
        return;
    }
    res->status = WECHAT_OK;
    res->detail = "ok";
    res->body = root;
}

/* ---- curl <-> loop glue ---- */

static void check_done(struct wechat_client *c);

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
    curl_multi_socket_action(c->multi, fd, flags, &running);
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
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
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
    size_t n = size * nmemb;
    if (call->resp_len + n > RESPONSE_MAX)
        return 0; /* CURLE_WRITE_ERROR: WeChat's answers are small; this is not WeChat */
    char *b = realloc(call->resp, call->resp_len + n + 1);
    if (b == NULL)
        return 0;
    call->resp = b;
    memcpy(call->resp + call->resp_len, ptr, n);
    call->resp_len += n;
    call->resp[call->resp_len] = '\0';
    return n;
}

static CURL *easy_get(struct wechat_client *c)
{
    if (c->npool > 0) {
        CURL *e = c->pool[--c->npool];
        curl_easy_reset(e);
        return e;
    }
    return curl_easy_init();
}

static void easy_put(struct wechat_client *c, CURL *e)
{
    if (e == NULL)
        return;
    if (c->npool < POOL_MAX)
        c->pool[c->npool++] = e;
    else
        curl_easy_cleanup(e);
}

static void wipe_free(char *s, size_t n)
{
    if (s == NULL)
        return;
    explicit_bzero(s, n);
    free(s);
}

static void call_free(struct wechat_call *call)
{
    struct wechat_client *c = call->c;
    if (call->in_multi)
        curl_multi_remove_handle(c->multi, call->easy);
    loop_timer_stop(c->loop, &call->backoff);
    easy_put(c, call->easy);
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    /* The URL may hold the app secret and the body a session_key. */
    wipe_free(call->url, call->url ? strlen(call->url) : 0);
    wipe_free(call->post, call->post ? strlen(call->post) : 0);
    wipe_free(call->resp, call->resp_len);
    free(call);
}

static int attempt(struct wechat_call *call)
{
    struct wechat_client *c = call->c;
    CURL *e = call->easy;
    wipe_free(call->resp, call->resp_len);
    call->resp = NULL;
    call->resp_len = 0;
    call->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, call->url);
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
    if (call->post != NULL) {
        /* WeChat's POST APIs want a JSON body (form data gets 47001). */
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->post);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(call->post));
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->json_headers);
    }
    call->attempts++;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        return -1;
    call->in_multi = true;
    return 0;
}

static void finish(struct wechat_call *call, struct wechat_result *res)
{
    res->attempts = call->attempts;
    wechat_done_fn *done = call->done;
    void *arg = call->arg;
    json_t *body = res->body;
    done(res, arg);
    if (body != NULL) {
        /* Wipe the session_key before jansson frees its string. */
        json_t *sk = json_object_get(body, "session_key");
        if (json_is_string(sk))
            explicit_bzero((char *)json_string_value(sk), json_string_length(sk));
        json_decref(body);
    }
    call_free(call);
}

static void on_backoff(void *arg)
{
    struct wechat_call *call = arg;
    if (attempt(call) != 0) {
        struct wechat_result res = {.status = WECHAT_CONNECT, .detail = "cannot start transfer"};
        finish(call, &res);
    }
}

static void transfer_done(struct wechat_call *call, CURLcode code)
{
    struct wechat_client *c = call->c;
    long http_status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &http_status);
    curl_multi_remove_handle(c->multi, call->easy);
    call->in_multi = false;

    struct wechat_result res;
    wechat_classify(&res, code, http_status, call->resp, call->resp_len, call->accept);
    if (code != CURLE_OK && call->errbuf[0] != '\0')
        res.detail = call->errbuf;
    if (wechat_retryable(&res) && call->attempts <= c->retries) {
        json_decref(res.body);
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
            rnd = (uint32_t)loop_clock_ms();
        loop_timer_start(c->loop, &call->backoff, (uint64_t)wechat_backoff_ms(call->attempts, rnd));
        return;
    }
    finish(call, &res);
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
        if (call != NULL)
            transfer_done(call, msg->data.result);
    }
}

static struct wechat_call *start_call(struct wechat_client *c, char *path_query, char *post,
                                      wechat_accept_fn *accept, wechat_done_fn *done, void *arg)
{
    struct wechat_call *call = NULL;
    size_t blen = strlen(c->base), plen = strlen(path_query);
    char *url = malloc(blen + plen + 1);
    if (url == NULL)
        goto fail;
    memcpy(url, c->base, blen);
    memcpy(url + blen, path_query, plen + 1);
    call = calloc(1, sizeof(*call));
    if (call == NULL)
        goto fail;
    call->c = c;
    call->url = url;
    url = NULL;
    call->post = post;
    post = NULL;
    call->accept = accept;
    call->done = done;
    call->arg = arg;
    loop_timer_init(&call->backoff, on_backoff, call);
    call->next = c->calls;
    if (c->calls != NULL)
        c->calls->prev = call;
    c->calls = call;
    call->easy = easy_get(c);
    if (call->easy == NULL || attempt(call) != 0)
        goto fail;
    wipe_free(path_query, plen);
    return call;
fail:
    if (call != NULL)
        call_free(call);
    wipe_free(url, blen + plen);
    wipe_free(path_query, plen);
    wipe_free(post, post ? strlen(post) : 0);
    return NULL;
}

struct wechat_call *wechat_get(struct wechat_client *c, char *path_query, wechat_accept_fn *accept,
                               wechat_done_fn *done, void *arg)
{
    return start_call(c, path_query, NULL, accept, done, arg);
}

struct wechat_call *wechat_post_json(struct wechat_client *c, char *path_query, char *body,
                                     wechat_accept_fn *accept, wechat_done_fn *done, void *arg)
{
    return start_call(c, path_query, body, accept, done, arg);
}

void wechat_call_cancel(struct wechat_call *call)
{
    if (call != NULL)
        call_free(call);
}

static bool accept_session(const json_t *body)
{
    return json_is_string(json_object_get(body, "openid")) &&
           json_is_string(json_object_get(body, "session_key"));
}

struct wechat_call *wechat_code2session(struct wechat_client *c, const char *appid,
                                        const char *secret, const char *code, wechat_done_fn *done,
                                        void *arg)
{
    const char *kv[] = {"appid",   appid, "secret",     secret,
                        "js_code", code,  "grant_type", "authorization_code",
                        NULL};
    char *pq = wechat_path_query("/sns/jscode2session", kv);
    if (pq == NULL)
        return NULL;
    return wechat_get(c, pq, accept_session, done, arg);
}

/* ---- client ---- */

struct wechat_client *wechat_client_new(struct loop *loop, const struct wechat_client_opts *opts)
{
    struct wechat_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->loop = loop;
    c->timeout_ms = opts->timeout_ms;
    c->retries = opts->retries;
    loop_timer_init(&c->timer, on_timer, c);
    c->base = strdup(opts->base);
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
    while (c->calls != NULL)
        call_free(c->calls);
    for (size_t i = 0; i < c->npool; i++)
        curl_easy_cleanup(c->pool[i]);
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    loop_timer_stop(c->loop, &c->timer);
    curl_slist_free_all(c->json_headers);
    free(c->base);
    free(c);
}
