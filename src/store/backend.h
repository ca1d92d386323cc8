/*
 * store/backend: what the files of src/store share. Not an API outside src/store.
 */
#ifndef WXLOGIN_STORE_BACKEND_H
#define WXLOGIN_STORE_BACKEND_H

#include "store/store.h"

struct store_cache;

/* The process-wide part of a store; each backend's own starts with this. */
struct store_shared_ops {
    int (*open)(struct store_shared *sh, struct loop *loop, struct store **out,
                char err[STORE_ERR_MAX]);
    void (*free)(struct store_shared *sh);
};

struct store_shared {
    const struct store_shared_ops *ops;
    struct store_cache *cache; /* NULL: none */
};

int store_sqlite_shared_new(const char *path, const struct store_config *cfg,
                            struct store_shared **out, char err[STORE_ERR_MAX]);
int store_redis_shared_new(const char *url, const struct store_config *cfg,
                           struct store_shared **out, char err[STORE_ERR_MAX]);

/* Copies text from outside (a User-Agent, a ban's reason; NULL reads "") into out (cap bytes):
 * whole characters while they fit, any byte that is not valid UTF-8 or is a control character
 * read as '?', so what the store keeps and later shows is always clean text. */
void store_text_cut(char *out, size_t cap, const char *s);

#endif
