/*
 * metrics: per-thread shards of counters, summed and rendered at scrape time.
 *
 * A shard is one flat struct of atomic 64-bit cells. Its owner thread reaches it through a
 * thread-local pointer and adds with a relaxed load and a relaxed store (add()); the shared
 * shard of threads without one takes atomic_fetch_add. Shards are never freed before
 * metrics_stop(), so counts of a stopped worker still add up in the last scrape.
 */
#include "metrics/metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/server.h"
#include "store/store.h"
#include "version.h"

#ifndef WXLOGIN_COMMIT
#define WXLOGIN_COMMIT "unknown"
#endif

/* Upper bounds of the histogram buckets, in µs: 100 µs to 10 s (the +Inf bucket follows). */
static const uint64_t buckets_us[] = {100,     250,     500,     1000,    2500,   5000,
                                      10000,   25000,   50000,   100000,  250000, 500000,
                                      1000000, 2500000, 5000000, 10000000};
#define NBUCKETS (sizeof(buckets_us) / sizeof(buckets_us[0]))

/* The statuses counted under their own label; any other is counted as "other". */
static const unsigned statuses[] = {200, 201, 204, 301, 302, 304, 400, 401, 403, 404,
                                    405, 406, 408, 409, 410, 411, 412, 413, 414, 415,
                                    422, 429, 431, 500, 501, 502, 503, 504, 505};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))
#define STATUS_OTHER NSTATUS
#define STATUS_MAX 600

/* One label per WeChat API (enum wechat_api; WECHAT_API_ANY is never called). */
#define NAPI (WECHAT_API_CHECKSESSION + 1)
#define NWXSTATUS (WECHAT_STATUS_LAST + 1)
/* Distinct errcodes of the errcode table labelled as themselves; others are "other". */
#define ERRCODES_MAX 64

#define NROUTES (METRICS_ROUTES_MAX + 1) /* the last: no route */

typedef _Atomic uint64_t cell;

struct hist {
    cell bucket[NBUCKETS + 1]; /* not cumulative; the last is +Inf */
    cell sum_us;
};

struct shard {
    cell http[NROUTES][NSTATUS + 1];
    struct hist http_latency[NROUTES];
    cell wechat_calls[NAPI][NWXSTATUS];
    cell wechat_errcodes[NAPI][ERRCODES_MAX + 1];
    cell wechat_attempts[NAPI];
    struct hist wechat_latency[NAPI];
    cell exchange[METRICS_EXCHANGE_NKINDS];
    cell claims[METRICS_CLAIM_NKINDS];
    cell cache[2];                     /* miss, hit */
    cell store[METRICS_STORE_NOPS][4]; /* ok, not_found, error, sent */
    struct hist store_latency[METRICS_STORE_NOPS];
    cell token_fetches[METRICS_TOKEN_NRESULTS];
    cell token_refreshes, token_invalidations;
    cell limited[METRICS_LIMIT_NKINDS];
    struct shard *next; /* the registry */
};

static _Thread_local struct shard *self;
static struct shard *shared; /* non-NULL while metrics are on */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shard *registry; /* every shard, shared first */
static const struct http_route *routes;
static size_t nroutes;
/* The errcodes labelled as themselves (distinct values of the errcode table). */
static long errcodes[ERRCODES_MAX];
static size_t nerrcodes;
static uint8_t status_index[STATUS_MAX];

/* The shard the caller counts into and whether it is the caller's own; NULL when off. */
static inline struct shard *mine(bool *own)
{
    struct shard *s = self;
    *own = s != NULL;
    return s != NULL ? s : shared;
}

static inline void add(cell *c, uint64_t n, bool own)
{
    if (own)
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void observe(struct hist *h, uint64_t us, bool own)
{
    size_t i = 0;
    while (i < NBUCKETS && us > buckets_us[i])
        i++;
    add(&h->bucket[i], 1, own);
    add(&h->sum_us, us, own);
}

static struct shard *shard_new(void)
{
    /* Its own cache lines: no other thread writes next to it. */
    struct shard *s = aligned_alloc(64, (sizeof(struct shard) + 63) / 64 * 64);
    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&registry_mu);
    s->next = registry;
    registry = s;
    pthread_mutex_unlock(&registry_mu);
    return s;
}

int metrics_start(const struct http_route *r, size_t n)
{
    routes = r;
    nroutes = n < METRICS_ROUTES_MAX ? n : METRICS_ROUTES_MAX;
    memset(status_index, STATUS_OTHER, sizeof(status_index));
    for (size_t i = 0; i < NSTATUS; i++)
        status_index[statuses[i]] = (uint8_t)i;
    nerrcodes = 0;
    for (size_t i = 0; i < wechat_nerrcodes && nerrcodes < ERRCODES_MAX; i++) {
        long e = wechat_errcodes[i].errcode;
        bool seen = e == WECHAT_EC_OTHER;
        for (size_t j = 0; j < nerrcodes && !seen; j++)
            seen = errcodes[j] == e;
        if (!seen)
            errcodes[nerrcodes++] = e;
    }
    shared = shard_new();
    return shared != NULL ? 0 : -1;
}

void metrics_stop(void)
{
    pthread_mutex_lock(&registry_mu);
    struct shard *s = registry;
    registry = NULL;
    shared = NULL;
    pthread_mutex_unlock(&registry_mu);
    while (s != NULL) {
        struct shard *next = s->next;
        free(s);
        s = next;
    }
    self = NULL;
}

bool metrics_enabled(void)
{
    return shared != NULL;
}

int metrics_thread_attach(void)
{
    if (shared == NULL || self != NULL)
        return 0;
    self = shard_new();
    return self != NULL ? 0 : -1;
}

/* ---- counting ---- */

void metrics_http_request(size_t route, unsigned status, uint64_t us)
{
    bool own;
    struct shard *s = mine(&own);
    if (s == NULL)
        return;
    if (route >= nroutes)
        route = nroutes;
    size_t st = status < STATUS_MAX ? status_index[status] : STATUS_OTHER;
    add(&s->http[route][st], 1, own);
    observe(&s->http_latency[route], us, own);
}

static size_t errcode_index(long errcode)
{
    for (size_t i = 0; i < nerrcodes; i++)
        if (errcodes[i] == errcode)
            return i;
    return ERRCODES_MAX;
}

void metrics_wechat_call(enum wechat_api api, enum wechat_status status, long errcode, uint64_t us)
{
    bool own;
    struct shard *s = mine(&own);
    if (s == NULL || (unsigned)api >= NAPI || (unsigned)status >= NWXSTATUS)
        return;
    add(&s->wechat_calls[api][status], 1, own);
    if (status == WECHAT_ERRCODE)
        add(&s->wechat_errcodes[api][errcode_index(errcode)], 1, own);
    observe(&s->wechat_latency[api], us, own);
}

void metrics_wechat_attempt(enum wechat_api api)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL && (unsigned)api < NAPI)
        add(&s->wechat_attempts[api], 1, own);
}

void metrics_exchange(enum metrics_exchange kind)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL && (unsigned)kind < METRICS_EXCHANGE_NKINDS)
        add(&s->exchange[kind], 1, own);
}

void metrics_claim(enum metrics_claim kind)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL && (unsigned)kind < METRICS_CLAIM_NKINDS)
        add(&s->claims[kind], 1, own);
}

void metrics_cache_lookup(bool hit)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL)
        add(&s->cache[hit ? 1 : 0], 1, own);
}

void metrics_store_op(enum metrics_store_op op, int status, uint64_t us)
{
    bool own;
    struct shard *s = mine(&own);
    if (s == NULL || (unsigned)op >= METRICS_STORE_NOPS)
        return;
    /* A login refused for a ban is the store answering, as it should: "ok". */
    int r = status == STORE_OK || status == STORE_BANNED ? 0 : status == STORE_NOT_FOUND ? 1 : 2;
    add(&s->store[op][r], 1, own);
    observe(&s->store_latency[op], us, own);
}

void metrics_store_sent(enum metrics_store_op op)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL && (unsigned)op < METRICS_STORE_NOPS)
        add(&s->store[op][3], 1, own);
}

void metrics_token_fetch(enum metrics_token_fetch result)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL && (unsigned)result < METRICS_TOKEN_NRESULTS)
        add(&s->token_fetches[result], 1, own);
}

void metrics_token_refresh(void)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL)
        add(&s->token_refreshes, 1, own);
}

void metrics_token_invalidation(void)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL)
        add(&s->token_invalidations, 1, own);
}

void metrics_rate_limited(enum metrics_limit which)
{
    bool own;
    struct shard *s = mine(&own);
    if (s != NULL && (unsigned)which < METRICS_LIMIT_NKINDS)
        add(&s->limited[which], 1, own);
}

/* ---- rendering ---- */

struct out {
    char *buf;
    size_t len, cap;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *b = realloc(o->buf, cap);
        if (b == NULL) {
            o->oom = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Sums of every shard: the same struct, of plain numbers read once. */
static uint64_t rd(const cell *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void sum_cells(cell *dst, const cell *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&dst[i], rd(&dst[i]) + rd(&src[i]), memory_order_relaxed);
}

static uint64_t hist_count(const struct hist *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= NBUCKETS; i++)
        n += rd(&h->bucket[i]);
    return n;
}

/* Writes a histogram's series; labels is "" or `a="b",` (ending with a comma). */
static void put_hist(struct out *o, const char *name, const char *labels, const struct hist *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += rd(&h->bucket[i]);
        put(o, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, (double)buckets_us[i] / 1e6,
            (unsigned long long)cum);
    }
    cum += rd(&h->bucket[NBUCKETS]);
    put(o, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    /* Drop the label list's trailing comma for _sum and _count. */
    int ll = (int)strlen(labels);
    if (ll > 0)
        ll--;
    put(o, "%s_sum{%.*s} %.6f\n", name, ll, labels, (double)rd(&h->sum_us) / 1e6);
    put(o, "%s_count{%.*s} %llu\n", name, ll, labels, (unsigned long long)cum);
}

static const char *route_label(size_t i, const char **method)
{
    if (i < nroutes) {
        *method = routes[i].method;
        return routes[i].path;
    }
    *method = "other";
    return "other";
}

static void render_http(struct out *o, const struct shard *t)
{
    head(o, "wxlogin_http_requests_total", "counter",
         "HTTP requests answered, by route (other: no route took it) and status.");
    for (size_t r = 0; r <= nroutes; r++) {
        const char *method;
        const char *path = route_label(r, &method);
        for (size_t st = 0; st <= NSTATUS; st++) {
            uint64_t v = rd(&t->http[r][st]);
            if (v == 0)
                continue;
            char code[8];
            if (st < NSTATUS)
                snprintf(code, sizeof(code), "%u", statuses[st]);
            else
                snprintf(code, sizeof(code), "other");
            put(o, "wxlogin_http_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} %llu\n",
                method, path, code, (unsigned long long)v);
        }
    }
    head(o, "wxlogin_http_request_duration_seconds", "histogram",
         "Time from a request's first line to its completion, by route.");
    for (size_t r = 0; r <= nroutes; r++) {
        if (hist_count(&t->http_latency[r]) == 0)
            continue;
        const char *method;
        const char *path = route_label(r, &method);
        char labels[160];
        snprintf(labels, sizeof(labels), "method=\"%s\",route=\"%s\",", method, path);
        put_hist(o, "wxlogin_http_request_duration_seconds", labels, &t->http_latency[r]);
    }
}

static void render_wechat(struct out *o, const struct shard *t)
{
    head(o, "wxlogin_wechat_calls_total", "counter",
         "Calls to WeChat's API that ended (after retries), by API and outcome.");
    for (unsigned a = 1; a < NAPI; a++)
        for (unsigned s = 0; s < NWXSTATUS; s++) {
            uint64_t v = rd(&t->wechat_calls[a][s]);
            if (v != 0)
                put(o, "wxlogin_wechat_calls_total{api=\"%s\",outcome=\"%s\"} %llu\n",
                    wechat_api_name((enum wechat_api)a), wechat_status_name((enum wechat_status)s),
                    (unsigned long long)v);
        }
    head(o, "wxlogin_wechat_errcodes_total", "counter",
         "Calls to WeChat that ended with an errcode, by API and errcode.");
    for (unsigned a = 1; a < NAPI; a++)
        for (size_t e = 0; e <= ERRCODES_MAX; e++) {
            uint64_t v = rd(&t->wechat_errcodes[a][e]);
            if (v == 0)
                continue;
            char code[24];
            if (e < nerrcodes)
                snprintf(code, sizeof(code), "%ld", errcodes[e]);
            else
                snprintf(code, sizeof(code), "other");
            put(o, "wxlogin_wechat_errcodes_total{api=\"%s\",errcode=\"%s\"} %llu\n",
                wechat_api_name((enum wechat_api)a), code, (unsigned long long)v);
        }
    head(o, "wxlogin_wechat_attempts_total", "counter",
         "HTTP attempts sent to WeChat (first attempts and retries), by API.");
    for (unsigned a = 1; a < NAPI; a++)
        put(o, "wxlogin_wechat_attempts_total{api=\"%s\"} %llu\n",
            wechat_api_name((enum wechat_api)a), (unsigned long long)rd(&t->wechat_attempts[a]));
    head(o, "wxlogin_wechat_call_duration_seconds", "histogram",
         "Duration of calls to WeChat, retries and backoff included, by API.");
    for (unsigned a = 1; a < NAPI; a++) {
        if (hist_count(&t->wechat_latency[a]) == 0)
            continue;
        char labels[64];
        snprintf(labels, sizeof(labels), "api=\"%s\",", wechat_api_name((enum wechat_api)a));
        put_hist(o, "wxlogin_wechat_call_duration_seconds", labels, &t->wechat_latency[a]);
    }
}

static const char *const exchange_names[] = {"lead", "waited", "remembered"};
static const char *const claim_names[] = {"mine", "busy", "known", "error"};
static const char *const store_op_names[] = {
    "ping",          "login",      "put_session",   "get_session",
    "refresh",       "revoke",     "user_info",     "get_user",
    "purge_expired", "claim",      "claim_publish", "claim_release",
    "lease_read",    "lease_take", "lease_publish", "lease_invalidate",
    "limit_take"};
static const char *const store_results[] = {"ok", "not_found", "error", "sent"};
static const char *const token_results[] = {"ok", "failed", "aborted"};
static const char *const limit_names[] = {"address", "openid", "wechat", "admin"};

static void render_state(struct out *o, const struct shard *t)
{
    head(o, "wxlogin_code_exchanges_total", "counter",
         "Login codes joined in this process: lead (asked WeChat or another instance), waited "
         "(for a request of this process exchanging it) or remembered (its outcome reused).");
    for (size_t i = 0; i < METRICS_EXCHANGE_NKINDS; i++)
        put(o, "wxlogin_code_exchanges_total{role=\"%s\"} %llu\n", exchange_names[i],
            (unsigned long long)rd(&t->exchange[i]));
    head(o, "wxlogin_code_claims_total", "counter",
         "Claims of login codes across instances (Redis store): mine, busy (polled again), known "
         "(another instance's outcome reused) or error.");
    for (size_t i = 0; i < METRICS_CLAIM_NKINDS; i++)
        put(o, "wxlogin_code_claims_total{result=\"%s\"} %llu\n", claim_names[i],
            (unsigned long long)rd(&t->claims[i]));
    head(o, "wxlogin_session_cache_lookups_total", "counter",
         "Session lookups of the in-memory session cache (SQLite store), by result.");
    put(o, "wxlogin_session_cache_lookups_total{result=\"hit\"} %llu\n",
        (unsigned long long)rd(&t->cache[1]));
    put(o, "wxlogin_session_cache_lookups_total{result=\"miss\"} %llu\n",
        (unsigned long long)rd(&t->cache[0]));

    head(o, "wxlogin_store_operations_total", "counter",
         "Operations of the session store, by operation and result (sent: fire and forget).");
    for (size_t op = 0; op < METRICS_STORE_NOPS; op++)
        for (size_t r = 0; r < 4; r++) {
            uint64_t v = rd(&t->store[op][r]);
            if (v != 0)
                put(o, "wxlogin_store_operations_total{op=\"%s\",result=\"%s\"} %llu\n",
                    store_op_names[op], store_results[r], (unsigned long long)v);
        }
    head(o, "wxlogin_store_operation_duration_seconds", "histogram",
         "Duration of store operations that answer, by operation.");
    for (size_t op = 0; op < METRICS_STORE_NOPS; op++) {
        if (hist_count(&t->store_latency[op]) == 0)
            continue;
        char labels[64];
        snprintf(labels, sizeof(labels), "op=\"%s\",", store_op_names[op]);
        put_hist(o, "wxlogin_store_operation_duration_seconds", labels, &t->store_latency[op]);
    }

    head(o, "wxlogin_access_token_fetches_total", "counter",
         "Access-token fetches that ended, by result.");
    for (size_t i = 0; i < METRICS_TOKEN_NRESULTS; i++)
        put(o, "wxlogin_access_token_fetches_total{result=\"%s\"} %llu\n", token_results[i],
            (unsigned long long)rd(&t->token_fetches[i]));
    head(o, "wxlogin_access_token_refreshes_total", "counter",
         "Background refreshes of an access token still served (started).");
    put(o, "wxlogin_access_token_refreshes_total %llu\n",
        (unsigned long long)rd(&t->token_refreshes));
    head(o, "wxlogin_access_token_invalidations_total", "counter",
         "Access tokens invalidated because WeChat rejected them.");
    put(o, "wxlogin_access_token_invalidations_total %llu\n",
        (unsigned long long)rd(&t->token_invalidations));

    head(o, "wxlogin_rate_limited_total", "counter",
         "Requests answered 429 by a rate limit, by limit.");
    for (size_t i = 0; i < METRICS_LIMIT_NKINDS; i++)
        put(o, "wxlogin_rate_limited_total{limit=\"%s\"} %llu\n", limit_names[i],
            (unsigned long long)rd(&t->limited[i]));
}

/* /proc/self, as the Prometheus client libraries report it. */
static void render_process(struct out *o)
{
    long page = sysconf(_SC_PAGESIZE), tck = sysconf(_SC_CLK_TCK);
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    long threads = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        char line[1024];
        if (fgets(line, sizeof(line), f) != NULL) {
            /* After the command's closing parenthesis: field 3 (state) onwards. */
            const char *p = strrchr(line, ')');
            if (p != NULL &&
                sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                       "%ld %*d %llu %llu %llu",
                       &utime, &stime, &threads, &start, &vsize, &rss) != 6)
                threads = 0;
        }
        fclose(f);
    }
    unsigned long long btime = 0;
    f = fopen("/proc/stat", "r");
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        fclose(f);
    }
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    unsigned long long max_fds = 0;
    f = fopen("/proc/self/limits", "r");
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "Max open files %llu", &max_fds) == 1)
                break;
        fclose(f);
    }
    if (tck <= 0)
        tck = 100;
    head(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time in seconds.");
    put(o, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tck);
    head(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    put(o, "process_open_fds %ld\n", fds);
    head(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    put(o, "process_max_fds %llu\n", max_fds);
    head(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(o, "process_virtual_memory_bytes %llu\n", vsize);
    head(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
    head(o, "process_start_time_seconds", "gauge",
         "Start time of the process since the Unix epoch in seconds.");
    put(o, "process_start_time_seconds %.2f\n", (double)btime + (double)start / (double)tck);
    head(o, "process_threads", "gauge", "Number of OS threads in the process.");
    put(o, "process_threads %ld\n", threads);
}

char *metrics_render(size_t *len)
{
    struct shard *t = calloc(1, sizeof(*t));
    struct out o = {.cap = 64 * 1024};
    o.buf = malloc(o.cap);
    if (t == NULL || o.buf == NULL || shared == NULL) {
        free(t);
        free(o.buf);
        return NULL;
    }
    pthread_mutex_lock(&registry_mu);
    for (struct shard *s = registry; s != NULL; s = s->next)
        sum_cells((cell *)t, (const cell *)s, offsetof(struct shard, next) / sizeof(cell));
    pthread_mutex_unlock(&registry_mu);

    head(&o, "wxlogin_build_info", "gauge", "Always 1: the version and commit running.");
    put(&o, "wxlogin_build_info{commit=\"%s\",version=\"%s\"} 1\n", WXLOGIN_COMMIT,
        WXLOGIN_VERSION);
    render_http(&o, t);
    render_wechat(&o, t);
    render_state(&o, t);
    render_process(&o);
    free(t);
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
