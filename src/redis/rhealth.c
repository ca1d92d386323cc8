/*
 * redis/rhealth: the store's failing/ok state, shared by its connections, and the lines that
 * tell an operator each change of it.
 *
 * State under the mutex: how many connections are down, the command whose error reply holds the
 * store failing (also in an atomic, read without the lock by every successful command), and the
 * reason last logged ("" while ok). A line is written when a report changes the reason logged;
 * a connection that keeps failing for its own same reason (every reconnect attempt) is silent.
 */
#include "redis/rhealth.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log/log.h"

#define TARGET_MAX 512
#define DETAIL_MAX 256

struct rhealth {
    pthread_mutex_t mu;
    _Atomic uint32_t reply_cmd;      /* the command whose error holds the store failing; 0: none */
    unsigned ndown;                  /* connections down */
    char reason[RHEALTH_REASON_MAX]; /* logged last; "" while ok */
    struct timespec since;           /* when the store started failing */
    char target[TARGET_MAX];
};

struct rhealth *rhealth_new(const char *target)
{
    struct rhealth *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        return NULL;
    }
    snprintf(h->target, sizeof(h->target), "%s", target);
    return h;
}

void rhealth_free(struct rhealth *h)
{
    if (h == NULL)
        return;
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* ---- reasons ---- */

static const struct {
    int err;
    const char *name;
} errnos[] = {
    {ECONNREFUSED, "ECONNREFUSED"},
    {ETIMEDOUT, "ETIMEDOUT"},
    {EHOSTUNREACH, "EHOSTUNREACH"},
    {ENETUNREACH, "ENETUNREACH"},
    {ECONNRESET, "ECONNRESET"},
    {ECONNABORTED, "ECONNABORTED"},
    {EPIPE, "EPIPE"},
    {ENOENT, "ENOENT"},
    {EACCES, "EACCES"},
    {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
    {EMFILE, "EMFILE"},
};

static const struct {
    int err;
    const char *name;
} gai_errors[] = {
    {EAI_NONAME, "EAI_NONAME"}, {EAI_AGAIN, "EAI_AGAIN"},   {EAI_FAIL, "EAI_FAIL"},
    {EAI_NODATA, "EAI_NODATA"}, {EAI_FAMILY, "EAI_FAMILY"}, {EAI_ADDRFAMILY, "EAI_ADDRFAMILY"},
};

void rhealth_reason(const char *detail, bool redis_error, char out[RHEALTH_REASON_MAX])
{
    if (redis_error) {
        /* Redis's error codes are an upper-case first word: "WRONGPASS ...", "MISCONF ...". */
        size_t n = 0;
        while (n < RHEALTH_REASON_MAX - 1 &&
               (isupper((unsigned char)detail[n]) || isdigit((unsigned char)detail[n]) ||
                detail[n] == '_'))
            n++;
        bool word = n > 0 && (detail[n] == ' ' || detail[n] == '\0');
        snprintf(out, RHEALTH_REASON_MAX, "%.*s", word ? (int)n : 3, word ? detail : "ERR");
        return;
    }
    /* Our own deadlines (redis/rconn.c), then the texts hiredis copies from strerror() and
     * gai_strerror(). */
    if (strstr(detail, "timed out") != NULL) {
        snprintf(out, RHEALTH_REASON_MAX, "ETIMEDOUT");
        return;
    }
    for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++) {
        if (strstr(detail, strerror(errnos[i].err)) != NULL) {
            snprintf(out, RHEALTH_REASON_MAX, "%s", errnos[i].name);
            return;
        }
    }
    for (size_t i = 0; i < sizeof(gai_errors) / sizeof(gai_errors[0]); i++) {
        if (strstr(detail, gai_strerror(gai_errors[i].err)) != NULL) {
            snprintf(out, RHEALTH_REASON_MAX, "%s", gai_errors[i].name);
            return;
        }
    }
    snprintf(out, RHEALTH_REASON_MAX, "ERROR");
}

/* What an operator can do about a reason. */
static const char *hint(const char *reason)
{
    static const struct {
        const char *reason, *hint;
    } hints[] = {
        {"WRONGPASS", "Redis refused the store URL's password (or ACL user): check "
                      "redis://[user]:password@ against requirepass or the ACL"},
        {"NOAUTH", "Redis wants a password: put it in the store URL (redis://:password@host)"},
        {"NOPERM", "the ACL user lacks a permission wxlogin needs (its commands and scripts, on "
                   "keys wxlogin:*)"},
        {"MISCONF", "Redis cannot persist (see its log) and refuses writes"},
        {"READONLY", "the store URL names a read-only replica: point it at the primary"},
        {"OOM", "Redis reached maxmemory and refuses writes"},
        {"LOADING", "Redis is loading its data set"},
        {"ECONNREFUSED", "nothing listens at the store's address: is Redis running?"},
        {"ETIMEDOUT", "Redis did not answer within store_timeout_ms"},
        {"EAI_NONAME", "the store's host name does not resolve"},
        {"EAI_AGAIN", "the store's host name could not be resolved (DNS)"},
        {"ENOENT", "no Redis socket at that path"},
    };
    for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
        if (strcmp(reason, hints[i].reason) == 0)
            return hints[i].hint;
    return NULL;
}

/* ---- the state ---- */

/* Under the lock: the store is failing for reason (logged when it is news). */
static void set_failing(struct rhealth *h, const char *reason, const char *detail)
{
    if (strcmp(h->reason, reason) == 0)
        return;
    if (h->reason[0] == '\0')
        clock_gettime(CLOCK_MONOTONIC, &h->since);
    snprintf(h->reason, sizeof(h->reason), "%s", reason);
    const struct log_field f[] = {
        LOG_STR("store", h->target),
        LOG_STR("reason", reason),
        LOG_STR("detail", detail),
        LOG_STR("hint", hint(reason)),
    };
    log_fields(LOG_WARN, "store failing", f, sizeof(f) / sizeof(f[0]));
}

/* Under the lock: recovered when nothing holds the store failing any more. */
static void maybe_recovered(struct rhealth *h)
{
    if (h->ndown > 0 || atomic_load_explicit(&h->reply_cmd, memory_order_relaxed) != 0 ||
        h->reason[0] == '\0')
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ms = (long long)(now.tv_sec - h->since.tv_sec) * 1000 +
                   (now.tv_nsec - h->since.tv_nsec) / 1000000;
    const struct log_field f[] = {
        LOG_STR("store", h->target),
        LOG_STR("after", h->reason),
        LOG_INT("failing_ms", ms),
    };
    log_fields(LOG_INFO, "store recovered", f, sizeof(f) / sizeof(f[0]));
    h->reason[0] = '\0';
}

void rhealth_conn_failed(struct rhealth *h, struct rhealth_conn *c, const char *detail,
                         bool redis_error)
{
    if (h == NULL)
        return;
    char reason[RHEALTH_REASON_MAX];
    rhealth_reason(detail, redis_error, reason);
    /* Every reconnect attempt fails the same way: only a change is news. */
    if (c->down && strcmp(c->reason, reason) == 0)
        return;
    char cut[DETAIL_MAX];
    snprintf(cut, sizeof(cut), "%s", detail);
    pthread_mutex_lock(&h->mu);
    if (!c->down)
        h->ndown++;
    c->down = true;
    snprintf(c->reason, sizeof(c->reason), "%s", reason);
    set_failing(h, reason, cut);
    pthread_mutex_unlock(&h->mu);
}

void rhealth_conn_ready(struct rhealth *h, struct rhealth_conn *c)
{
    if (h == NULL || !c->down)
        return;
    pthread_mutex_lock(&h->mu);
    c->down = false;
    c->reason[0] = '\0';
    h->ndown--;
    maybe_recovered(h);
    pthread_mutex_unlock(&h->mu);
}

void rhealth_reply_error(struct rhealth *h, uint32_t cmd, const char *err)
{
    if (h == NULL)
        return;
    char reason[RHEALTH_REASON_MAX], cut[DETAIL_MAX];
    rhealth_reason(err, true, reason);
    snprintf(cut, sizeof(cut), "%s", err);
    pthread_mutex_lock(&h->mu);
    atomic_store_explicit(&h->reply_cmd, cmd, memory_order_relaxed);
    set_failing(h, reason, cut);
    pthread_mutex_unlock(&h->mu);
}

void rhealth_reply_ok(struct rhealth *h, uint32_t cmd)
{
    /* The hot path: every successful command, while nothing fails, is this load. */
    if (h == NULL || atomic_load_explicit(&h->reply_cmd, memory_order_relaxed) != cmd)
        return;
    pthread_mutex_lock(&h->mu);
    if (atomic_load_explicit(&h->reply_cmd, memory_order_relaxed) == cmd) {
        atomic_store_explicit(&h->reply_cmd, 0, memory_order_relaxed);
        maybe_recovered(h);
    }
    pthread_mutex_unlock(&h->mu);
}

static uint32_t fnv1a(uint32_t hash, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hash ^= (unsigned char)toupper((unsigned char)s[i]);
        hash *= 16777619u;
    }
    return hash;
}

uint32_t rhealth_cmd_id(const char *name, size_t name_len, const char *arg1, size_t arg1_len)
{
    uint32_t hash = fnv1a(2166136261u, name, name_len);
    if (arg1 != NULL && name_len == 7 && strncasecmp(name, "EVALSHA", 7) == 0)
        hash = fnv1a(hash, arg1, arg1_len);
    return hash | 1; /* never 0: 0 means "none" */
}
