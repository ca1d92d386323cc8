/* session: picks the backend from the store URL's scheme. */
#include "session/session.h"

#include <stdio.h>
#include <string.h>

#include "redis/rconn.h"

static const struct {
    const char *prefix;
    const struct session_ops *ops;
} backends[] = {
    {"sqlite:", &session_sqlite_ops},
    {"redis://", &session_redis_ops},
    {"redis+unix://", &session_redis_ops},
};

const char *session_sqlite_path(const char *url)
{
    return strncmp(url, "sqlite:", 7) == 0 ? url + 7 : NULL;
}

int session_open(const char *url, struct loop *loop, long timeout_ms, struct session_store **out,
                 char err[SESSION_ERR_MAX])
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        size_t n = strlen(backends[i].prefix);
        if (strncmp(url, backends[i].prefix, n) == 0)
            /* Redis wants its whole URL back; SQLite only the path. */
            return backends[i].ops->open(backends[i].ops == &session_sqlite_ops ? url + n : url,
                                         loop, timeout_ms, out, err);
    }
    snprintf(err, SESSION_ERR_MAX,
             "store: unsupported store URL (expected sqlite:PATH, redis:// or redis+unix://)");
    return -1;
}

int session_url_check(const char *url, char err[SESSION_ERR_MAX])
{
    if (strncmp(url, "sqlite:", 7) == 0) {
        if (url[7] != '\0')
            return 0;
        snprintf(err, SESSION_ERR_MAX, "sqlite: wants a path");
        return -1;
    }
    if (session_url_shared(url)) {
        struct rconn_opts o;
        char rerr[RCONN_ERR_MAX];
        if (rconn_parse_url(url, &o, rerr) != 0) {
            snprintf(err, SESSION_ERR_MAX, "%s", rerr);
            return -1;
        }
        rconn_opts_done(&o);
        return 0;
    }
    snprintf(err, SESSION_ERR_MAX, "expected sqlite:PATH, redis:// or redis+unix://");
    return -1;
}

bool session_url_shared(const char *url)
{
    return strncmp(url, "redis://", 8) == 0 || strncmp(url, "redis+unix://", 13) == 0;
}

void session_close(struct session_store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

void session_url_redacted(const char *url, char *out, size_t cap)
{
    const char *scheme_end = strstr(url, "://");
    const char *auth = scheme_end != NULL ? scheme_end + 3 : NULL;
    const char *end = auth != NULL ? auth + strcspn(auth, "/?#") : NULL;
    const char *at = auth != NULL ? memchr(auth, '@', (size_t)(end - auth)) : NULL;
    if (at == NULL) {
        snprintf(out, cap, "%s", url);
        return;
    }
    snprintf(out, cap, "%.*s***%s", (int)(auth - url), url, at);
}
