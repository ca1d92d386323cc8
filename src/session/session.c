/* session: picks the backend from the store URL's scheme. */
#include "session/session.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *prefix;
    const struct session_ops *ops;
} backends[] = {
    {"sqlite:", &session_sqlite_ops},
};

const char *session_sqlite_path(const char *url)
{
    return strncmp(url, "sqlite:", 7) == 0 ? url + 7 : NULL;
}

int session_open(const char *url, struct loop *loop, struct session_store **out,
                 char err[SESSION_ERR_MAX])
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        size_t n = strlen(backends[i].prefix);
        if (strncmp(url, backends[i].prefix, n) == 0)
            return backends[i].ops->open(url + n, loop, out, err);
    }
    snprintf(err, SESSION_ERR_MAX, "store: unsupported store URL (expected sqlite:PATH)");
    return -1;
}

void session_close(struct session_store *st)
{
    if (st != NULL)
        st->ops->close(st);
}
