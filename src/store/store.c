/* store: picks the backend from the store URL's scheme and puts the session cache in front. */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis/rconn.h"
#include "store/backend.h"
#include "store/cache.h"
#include "store/timed.h"
#include "util/utf8.h"
#include "metrics/metrics.h"

const char *store_sqlite_path(const char *url)
{
    return strncmp(url, "sqlite:", 7) == 0 ? url + 7 : NULL;
}

bool store_url_shared(const char *url)
{
    return strncmp(url, "redis://", 8) == 0 || strncmp(url, "redis+unix://", 13) == 0;
}

int store_url_check(const char *url, char err[STORE_ERR_MAX])
{
    const char *path = store_sqlite_path(url);
    if (path != NULL) {
        if (*path != '\0')
            return 0;
        snprintf(err, STORE_ERR_MAX, "sqlite: wants a path");
        return -1;
    }
    if (store_url_shared(url)) {
        struct rconn_opts o;
        char rerr[RCONN_ERR_MAX];
        if (rconn_parse_url(url, &o, rerr) != 0) {
            snprintf(err, STORE_ERR_MAX, "%s", rerr);
            return -1;
        }
        rconn_opts_done(&o);
        return 0;
    }
    snprintf(err, STORE_ERR_MAX, "expected sqlite:PATH, redis:// or redis+unix://");
    return -1;
}

void store_url_redacted(const char *url, char *out, size_t cap)
{
    /* The userinfo ends at the last '@' of the authority, so a password holding '@' is hidden
     * whole. */
    const char *scheme_end = strstr(url, "://");
    const char *auth = scheme_end != NULL ? scheme_end + 3 : NULL;
    const char *end = auth != NULL ? auth + strcspn(auth, "/?#") : NULL;
    const char *at = NULL;
    for (const char *p = auth; p != NULL && p < end; p++)
        if (*p == '@')
            at = p;
    if (at == NULL) {
        snprintf(out, cap, "%s", url);
        return;
    }
    snprintf(out, cap, "%.*s***%s", (int)(auth - url), url, at);
}

int store_shared_new(const struct store_config *cfg, struct store_shared **out,
                     char err[STORE_ERR_MAX])
{
    const char *path = store_sqlite_path(cfg->url);
    int rc;
    if (path != NULL)
        rc = store_sqlite_shared_new(path, cfg, out, err);
    else if (store_url_shared(cfg->url))
        rc = store_redis_shared_new(cfg->url, cfg, out, err);
    else {
        snprintf(err, STORE_ERR_MAX,
                 "store: unsupported store URL (expected sqlite:PATH, redis:// or redis+unix://)");
        return -1;
    }
    if (rc != 0)
        return rc;
    /* Only this process sees the logouts of an SQLite store (the backend refuses a second
     * process): that is what makes an in-memory copy of sessions safe. */
    if (path != NULL && cfg->cache_entries > 0) {
        (*out)->cache = store_cache_new(cfg->cache_entries);
        if ((*out)->cache == NULL) {
            store_shared_free(*out);
            *out = NULL;
            snprintf(err, STORE_ERR_MAX, "store: out of memory for the session cache");
            return -1;
        }
    }
    return 0;
}

void store_shared_free(struct store_shared *sh)
{
    if (sh == NULL)
        return;
    struct store_cache *cache = sh->cache;
    sh->ops->free(sh);
    store_cache_free(cache);
}

int store_open(struct store_shared *sh, struct loop *loop, struct store **out,
               char err[STORE_ERR_MAX])
{
    struct store *st = NULL;
    if (sh->ops->open(sh, loop, &st, err) != 0)
        return -1;
    /* Metrics time the store itself: under the cache, so a cache hit is not a store operation. */
    struct store *timed;
    if (metrics_enabled()) {
        if (store_timed_wrap(st, &timed) != 0) {
            store_close(st);
            snprintf(err, STORE_ERR_MAX, "store: out of memory");
            return -1;
        }
        st = timed;
    }
    if (sh->cache != NULL && store_cache_wrap(sh->cache, st, out) != 0) {
        store_close(st);
        snprintf(err, STORE_ERR_MAX, "store: out of memory");
        return -1;
    }
    if (sh->cache == NULL)
        *out = st;
    return 0;
}

void store_close(struct store *st)
{
    if (st != NULL)
        st->ops->close(st);
}

void store_text_cut(char *out, size_t cap, const char *s)
{
    size_t o = 0, n = s != NULL ? strlen(s) : 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_char_len((const unsigned char *)s + i, n - i);
        bool ok = len > 0 && !utf8_is_control(utf8_decode((const unsigned char *)s + i, len));
        size_t take = ok ? len : 1;
        if (o + (ok ? len : 1) >= cap)
            break;
        if (ok)
            memcpy(out + o, s + i, len);
        else
            out[o] = '?';
        o += ok ? len : 1;
        i += take;
    }
    out[o] = '\0';
}

void store_sid_text(const uint8_t sid[STORE_SID_LEN], char out[STORE_SID_TEXT_LEN + 1])
{
    char b64[4 * ((STORE_SID_LEN + 2) / 3) + 1];
    crypto_b64_encode(sid, STORE_SID_LEN, b64);
    out[0] = 's';
    out[1] = '_';
    /* base64url without its padding: 16 bytes are 22 characters */
    for (size_t i = 0; i < STORE_SID_TEXT_LEN - 2; i++)
        out[2 + i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    out[STORE_SID_TEXT_LEN] = '\0';
}

int store_sid_parse(const char *s, uint8_t sid[STORE_SID_LEN])
{
    if (strlen(s) != STORE_SID_TEXT_LEN || s[0] != 's' || s[1] != '_')
        return -1;
    char b64[STORE_SID_TEXT_LEN + 1];
    for (size_t i = 0; i < STORE_SID_TEXT_LEN - 2; i++) {
        char c = s[2 + i];
        if (c == '+' || c == '/' || c == '=')
            return -1; /* base64url only */
        b64[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    b64[STORE_SID_TEXT_LEN - 2] = '=';
    b64[STORE_SID_TEXT_LEN - 1] = '=';
    b64[STORE_SID_TEXT_LEN] = '\0';
    uint8_t out[18];
    /* Strict: the one text of each id, so an id shown is the id that parses back. */
    if (crypto_b64_decode(b64, STORE_SID_TEXT_LEN, out) != STORE_SID_LEN)
        return -1;
    memcpy(sid, out, STORE_SID_LEN);
    return 0;
}

int store_sid_new(uint8_t sid[STORE_SID_LEN])
{
    return crypto_random(sid, STORE_SID_LEN);
}

int store_owner_new(char out[STORE_OWNER_LEN + 1])
{
    uint8_t r[STORE_OWNER_LEN / 2];
    if (crypto_random(r, sizeof(r)) != 0)
        return -1;
    crypto_hex(r, sizeof(r), out);
    return 0;
}
