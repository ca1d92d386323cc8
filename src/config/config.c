/*
 * config: the key table, value parsers and the three layers (defaults, file, env).
 *
 * The file is read with inih. inih's handler is not told the line it is on, so the handler
 * stops at the first bad key and ini_parse() reports that line: errors read "FILE:LINE: ...".
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "util/addr.h"

#define SECRET_FILE_MAX 4096
#define RATE_COUNT_MAX 1000000
#define RATE_PERIOD_MAX_MS (24L * 3600 * 1000)

enum cfg_type {
    CT_STRING,
    CT_SECRET,
    CT_URL,
    CT_LONG,
    CT_LOG_LEVEL,
    CT_LOG_FORMAT,
    CT_RATE,    /* struct config_rate */
    CT_PROXIES, /* trusted_proxies: a list of networks, "" for none */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t offset;
    const char *def; /* NULL: unset */
    long min, max;   /* CT_LONG bounds */
};

#define OFF(f) offsetof(struct config, f)

static const struct cfg_key keys[] = {
    {"listen", CT_STRING, OFF(listen), "127.0.0.1:2020", 0, 0},
    {"appid", CT_STRING, OFF(appid), NULL, 0, 0},
    {"secret", CT_SECRET, OFF(secret), NULL, 0, 0},
    {"secret_file", CT_STRING, OFF(secret_file), NULL, 0, 0},
    {"wechat_base", CT_URL, OFF(wechat_base), "https://api.weixin.qq.com", 0, 0},
    {"upstream_timeout_ms", CT_LONG, OFF(upstream_timeout_ms), "5000", 50, 120000},
    {"upstream_retries", CT_LONG, OFF(upstream_retries), "2", 0, 10},
    {"threads", CT_LONG, OFF(threads), "0", 0, 256},
    {"log_level", CT_LOG_LEVEL, OFF(log_level), "info", 0, 0},
    {"log_format", CT_LOG_FORMAT, OFF(log_format), "json", 0, 0},
    {"max_body_bytes", CT_LONG, OFF(max_body_bytes), "65536", 64, 16 * 1024 * 1024},
    {"max_connections", CT_LONG, OFF(max_connections), "0", 0, 1000000},
    {"max_connections_per_address", CT_LONG, OFF(max_connections_per_address), "1024", 0, 1000000},
    {"connection_timeout", CT_LONG, OFF(connection_timeout), "30", 1, 3600},
    {"read_timeout", CT_LONG, OFF(read_timeout), "15", 1, 3600},
    {"max_body_memory", CT_LONG, OFF(max_body_memory), "16777216", 65536, 1L << 34},
    {"shutdown_timeout_ms", CT_LONG, OFF(shutdown_timeout_ms), "10000", 0, 600000},
    {"store", CT_STRING, OFF(store), "sqlite:wxlogin.db", 0, 0},
    {"session_ttl", CT_LONG, OFF(session_ttl), "604800", 1, 31536000},
    {"master_key", CT_SECRET, OFF(master_key), NULL, 0, 0},
    {"master_key_file", CT_STRING, OFF(master_key_file), NULL, 0, 0},
    {"session_key_grace", CT_LONG, OFF(session_key_grace), "300", 0, 86400},
    {"access_token_api", CT_STRING, OFF(access_token_api), "stable", 0, 0},
    {"admin_token", CT_SECRET, OFF(admin_token), NULL, 0, 0},
    {"admin_token_file", CT_STRING, OFF(admin_token_file), NULL, 0, 0},
    {"admin_max_failures", CT_LONG, OFF(admin_max_failures), "5", 1, 100},
    {"admin_lockout_s", CT_LONG, OFF(admin_lockout_s), "60", 1, 86400},
    {"session_cache_size", CT_LONG, OFF(session_cache_size), "131072", 0, 16777216},
    {"store_timeout_ms", CT_LONG, OFF(store_timeout_ms), "1000", 10, 60000},
    {"request_timeout_ms", CT_LONG, OFF(request_timeout_ms), "60000", 100, 600000},
    {"code_reuse_window", CT_LONG, OFF(code_reuse_window), "60", 0, 300},
    {"refresh_grace", CT_LONG, OFF(refresh_grace), "60", 0, 3600},
    {"session_max_age", CT_LONG, OFF(session_max_age), "2592000", 1, 31536000},
    {"user_retention", CT_LONG, OFF(user_retention), "0", 0, 10L * 31536000},
    {"exchange_table_size", CT_LONG, OFF(exchange_table_size), "200000", 16, 16777216},
    {"trusted_proxies", CT_PROXIES, OFF(trusted_proxies), "", 0, 0},
    {"rate_limit_address", CT_RATE, OFF(rate_limit_address), "120/min", 0, 0},
    {"rate_limit_openid", CT_RATE, OFF(rate_limit_openid), "30/min", 0, 0},
    {"rate_limit_wechat", CT_RATE, OFF(rate_limit_wechat), "5000/min", 0, 0},
    {"rate_limit_session", CT_RATE, OFF(rate_limit_session), "off", 0, 0},
    {"rate_limit_table_size", CT_LONG, OFF(rate_limit_table_size), "65536", 64, 16777216},
    {"metrics_listen", CT_STRING, OFF(metrics_listen), NULL, 0, 0},
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const struct cfg_key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static void wipe_free(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static int set_string(char **slot, const char *value, bool secret)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return -1;
    if (secret)
        wipe_free(*slot);
    else
        free(*slot);
    *slot = copy;
    return 0;
}

static bool url_ok(const char *v)
{
    return (strncmp(v, "http://", 7) == 0 && v[7] != '\0') ||
           (strncmp(v, "https://", 8) == 0 && v[8] != '\0');
}

/* Sets one key from text. The error message never quotes a secret's value. */
static int set_value(struct config *cfg, const struct cfg_key *k, const char *value,
                     char err[CONFIG_ERR_MAX])
{
    void *slot = (char *)cfg + k->offset;
    switch (k->type) {
    case CT_STRING:
    case CT_SECRET:
        if (*value == '\0') {
            snprintf(err, CONFIG_ERR_MAX, "%s: must not be empty", k->name);
            return -1;
        }
        if (set_string(slot, value, k->type == CT_SECRET) != 0)
            goto oom;
        return 0;
    case CT_URL: {
        char url[512];
        size_t n = strlen(value);
        while (n > 0 && value[n - 1] == '/')
            n--;
        if (n >= sizeof(url)) {
            snprintf(err, CONFIG_ERR_MAX, "%s: URL too long", k->name);
            return -1;
        }
        memcpy(url, value, n);
        url[n] = '\0';
        if (!url_ok(url)) {
            /* The URL may hold a proxy's user:password@ (and a malformed one cannot be
             * redacted reliably): name the problem, not the value, as for the store. */
            snprintf(err, CONFIG_ERR_MAX,
                     "%s: not an http:// or https:// URL (expected http[s]://host[:port])",
                     k->name);
            return -1;
        }
        if (set_string(slot, url, false) != 0)
            goto oom;
        return 0;
    }
    case CT_LONG: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < k->min || v > k->max) {
            snprintf(err, CONFIG_ERR_MAX, "%s: '%s' is not a whole number from %ld to %ld", k->name,
                     value, k->min, k->max);
            return -1;
        }
        *(long *)slot = v;
        return 0;
    }
    case CT_LOG_LEVEL:
        if (log_level_parse(value, slot) != 0) {
            snprintf(err, CONFIG_ERR_MAX, "%s: '%s' is not one of debug, info, warn, error",
                     k->name, value);
            return -1;
        }
        return 0;
    case CT_LOG_FORMAT:
        if (log_format_parse(value, slot) != 0) {
            snprintf(err, CONFIG_ERR_MAX, "%s: '%s' is not one of json, text", k->name, value);
            return -1;
        }
        return 0;
    case CT_RATE:
        if (config_rate_parse(value, slot) != 0) {
            snprintf(err, CONFIG_ERR_MAX,
                     "%s: '%.100s' is not a rate: N/s, N/min, N/h or N/<K>s... (N 1 to %d, "
                     "period 1 s to 24 h; e.g. 120/min, 5/10s), or off",
                     k->name, value, RATE_COUNT_MAX);
            return -1;
        }
        return 0;
    case CT_PROXIES: {
        const char *bad;
        size_t bad_len, n;
        if (ipaddr_net_list_parse(value, cfg->trusted_proxies, CONFIG_MAX_PROXIES, &n, &bad,
                                  &bad_len) != 0) {
            snprintf(err, CONFIG_ERR_MAX,
                     "%s: '%.*s' is not an address or a network (ADDRESS/BITS, with no bit set "
                     "past BITS), or there are more than %d",
                     k->name, (int)(bad_len > 100 ? 100 : bad_len), bad, CONFIG_MAX_PROXIES);
            return -1;
        }
        cfg->ntrusted_proxies = n;
        return 0;
    }
    }
oom:
    snprintf(err, CONFIG_ERR_MAX, "%s: out of memory", k->name);
    return -1;
}

int config_rate_parse(const char *s, struct config_rate *out)
{
    if (strcmp(s, "off") == 0 || strcmp(s, "0") == 0) {
        *out = (struct config_rate){0, 0};
        return 0;
    }
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno != 0 || n < 1 || n > RATE_COUNT_MAX || *end != '/')
        return -1;
    const char *p = end + 1;
    long k = 1;
    if (*p >= '0' && *p <= '9') {
        errno = 0;
        k = strtol(p, &end, 10);
        if (errno != 0 || k < 1 || k > 86400)
            return -1;
        p = end;
    }
    long unit = strcmp(p, "s") == 0     ? 1000
                : strcmp(p, "min") == 0 ? 60 * 1000
                : strcmp(p, "h") == 0   ? 3600 * 1000
                                        : 0;
    if (unit == 0 || k > RATE_PERIOD_MAX_MS / unit)
        return -1;
    *out = (struct config_rate){n, k * unit};
    return 0;
}

struct file_ctx {
    struct config *cfg;
    char err[CONFIG_ERR_MAX];
};

/* The appid of a section header `app "wx..."`, or NULL. */
static bool section_appid(const char *section, char out[STORE_ID_MAX + 1])
{
    size_t n = strlen(section);
    if (strncmp(section, "app \"", 5) != 0 || n < 7 || section[n - 1] != '"' ||
        n - 6 > STORE_ID_MAX)
        return false;
    memcpy(out, section + 5, n - 6);
    out[n - 6] = '\0';
    return strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n - 6;
}

static struct config_app *app_slot(struct config *cfg, const char *appid)
{
    for (size_t i = 0; i < cfg->napps; i++)
        if (strcmp(cfg->apps[i].appid, appid) == 0)
            return &cfg->apps[i];
    if (cfg->napps == CONFIG_MAX_APPS)
        return NULL;
    struct config_app *a = &cfg->apps[cfg->napps];
    a->appid = strdup(appid);
    if (a->appid == NULL)
        return NULL;
    cfg->napps++;
    return a;
}

static int on_app_key(struct file_ctx *fc, const char *section, const char *name, const char *value)
{
    char appid[STORE_ID_MAX + 1];
    if (!section_appid(section, appid)) {
        snprintf(fc->err, sizeof(fc->err), "unknown section [%.200s] (expected [app \"<appid>\"])",
                 section);
        return 0;
    }
    struct config_app *a = app_slot(fc->cfg, appid);
    if (a == NULL) {
        snprintf(fc->err, sizeof(fc->err), "[app \"%s\"]: too many apps (at most %d)", appid,
                 CONFIG_MAX_APPS);
        return 0;
    }
    char **slot = strcmp(name, "secret") == 0             ? &a->secret
                  : strcmp(name, "secret_file") == 0      ? &a->secret_file
                  : strcmp(name, "access_token_api") == 0 ? &a->access_token_api
                                                          : NULL;
    if (slot == NULL) {
        snprintf(fc->err, sizeof(fc->err),
                 "[app \"%s\"]: unknown key '%.100s' (apps take secret, secret_file, "
                 "access_token_api)",
                 appid, name);
        return 0;
    }
    if (*value == '\0' || set_string(slot, value, slot == &a->secret) != 0) {
        snprintf(fc->err, sizeof(fc->err), "[app \"%s\"]: %s must not be empty", appid, name);
        return 0;
    }
    return 1;
}

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *fc = user;
    /* inih goes on after an error and reports the first bad line: keep the first message. */
    if (fc->err[0] != '\0')
        return 0;
    if (section[0] != '\0')
        return on_app_key(fc, section, name, value);
    const struct cfg_key *k = find_key(name);
    if (k == NULL) {
        snprintf(fc->err, sizeof(fc->err), "unknown key '%s'", name);
        return 0;
    }
    return set_value(fc->cfg, k, value, fc->err) == 0;
}

/* inih (as Debian builds it) cuts lines at INI_MAX_LINE bytes and then reports a confusing
 * syntax error; say what is wrong instead. */
static int check_line_lengths(const char *path, char err[CONFIG_ERR_MAX])
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0; /* ini_parse reports it */
    int line = 1, rc = 0;
    size_t len = 0;
    char start[64]; /* the line's beginning, to name its key */
    for (int c = getc(f); c != EOF; c = getc(f)) {
        if (c == '\n') {
            line++;
            len = 0;
            continue;
        }
        if (len < sizeof(start) - 1)
            start[len] = (char)c;
        if (++len >= INI_MAX_LINE) {
            start[sizeof(start) - 1] = '\0';
            char *eq = strchr(start, '=');
            if (eq != NULL)
                *eq = '\0';
            char *k = start + strspn(start, " \t");
            size_t kn = strcspn(k, " \t");
            snprintf(err, CONFIG_ERR_MAX, "%.200s:%d: %.*s: line longer than %d bytes", path, line,
                     (int)(kn > 60 ? 60 : kn), k, INI_MAX_LINE - 1);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

static int load_file(struct config *cfg, const char *path, char err[CONFIG_ERR_MAX])
{
    struct file_ctx fc = {.cfg = cfg, .err = ""};
    if (check_line_lengths(path, err) != 0)
        return -1;
    int rc = ini_parse(path, on_ini, &fc);
    if (rc == 0)
        return 0;
    if (rc == -1)
        snprintf(err, CONFIG_ERR_MAX, "%s: cannot open: %s", path, strerror(errno));
    else if (rc == -2)
        snprintf(err, CONFIG_ERR_MAX, "%s: out of memory", path);
    else if (fc.err[0] != '\0')
        snprintf(err, CONFIG_ERR_MAX, "%.200s:%d: %.280s", path, rc, fc.err);
    else
        snprintf(err, CONFIG_ERR_MAX, "%s:%d: syntax error", path, rc);
    return -1;
}

static int load_env(struct config *cfg, char *const *envp, config_warn_fn *warn, void *warn_arg,
                    char err[CONFIG_ERR_MAX])
{
    static const char prefix[] = "WXLOGIN_";
    for (; envp != NULL && *envp != NULL; envp++) {
        const char *e = *envp;
        if (strncmp(e, prefix, sizeof(prefix) - 1) != 0)
            continue;
        const char *eq = strchr(e, '=');
        if (eq == NULL)
            continue;
        const char *kname = e + sizeof(prefix) - 1;
        char lower[64];
        size_t n = (size_t)(eq - kname);
        const struct cfg_key *k = NULL;
        if (n < sizeof(lower)) {
            for (size_t i = 0; i < n; i++)
                lower[i] = (char)tolower((unsigned char)kname[i]);
            lower[n] = '\0';
            k = find_key(lower);
        }
        if (k == NULL) {
            if (warn != NULL) {
                char msg[160];
                snprintf(msg, sizeof(msg), "ignoring unknown environment variable %.*s",
                         (int)(eq - e) > 100 ? 100 : (int)(eq - e), e);
                warn(msg, warn_arg);
            }
            continue;
        }
        char inner[CONFIG_ERR_MAX];
        if (set_value(cfg, k, eq + 1, inner) != 0) {
            snprintf(err, CONFIG_ERR_MAX, "environment WXLOGIN_%.*s: %.400s",
                     (int)n > 60 ? 60 : (int)n, kname, inner);
            return -1;
        }
    }
    return 0;
}

/* Under systemd with StateDirectory= (contrib/systemd/wxlogin.service) the working directory is
 * "/", read-only under ProtectSystem=strict, so the default database (and the key file created
 * beside it) goes into $STATE_DIRECTORY instead. This is the default layer: a store named in the
 * file or the environment is kept as written. systemd separates several directories with ':'
 * when a unit names several; the first is the service's. */
static int state_directory_store(struct config *cfg, char *const *envp, char err[CONFIG_ERR_MAX])
{
    static const char var[] = "STATE_DIRECTORY=";
    const char *dir = NULL;
    for (; envp != NULL && *envp != NULL; envp++)
        if (strncmp(*envp, var, sizeof(var) - 1) == 0)
            dir = *envp + sizeof(var) - 1;
    if (dir == NULL || dir[0] != '/')
        return 0;
    size_t n = strcspn(dir, ":");
    while (n > 0 && dir[n - 1] == '/')
        n--;
    char *store = NULL;
    if (asprintf(&store, "sqlite:%.*s/wxlogin.db", (int)n, dir) < 0) {
        snprintf(err, CONFIG_ERR_MAX, "store: out of memory");
        return -1;
    }
    free(cfg->store);
    cfg->store = store;
    return 0;
}

/* Reads a secret from a file; trailing whitespace (the usual newline) is not part of it. */
static int read_secret_file(const char *key, const char *path, char **slot,
                            char err[CONFIG_ERR_MAX])
{
    char buf[SECRET_FILE_MAX + 1];
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: cannot open '%.300s': %s", key, path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    int rc = -1;
    if (n > SECRET_FILE_MAX) {
        snprintf(err, CONFIG_ERR_MAX, "%s: '%.300s' is larger than %d bytes", key, path,
                 SECRET_FILE_MAX);
        goto out;
    }
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    buf[n] = '\0';
    if (n == 0 || memchr(buf, '\0', n) != NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: '%.300s' holds no usable secret", key, path);
        goto out;
    }
    if (set_string(slot, buf, true) != 0) {
        snprintf(err, CONFIG_ERR_MAX, "%s: out of memory", key);
        goto out;
    }
    rc = 0;
out:
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

/* A secret given either inline (key) or as a file (key_file), never both. */
static int secret_pair(const char *key, char **value, const char *file_key, const char *file,
                       char err[CONFIG_ERR_MAX])
{
    if (file == NULL)
        return 0;
    if (*value != NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: set either %s or %s, not both", file_key, key, file_key);
        return -1;
    }
    return read_secret_file(file_key, file, value, err);
}

/* Makes the apps list: the flat appid first, then the sections; checks each app's settings. */
static int finish_apps(struct config *cfg, char err[CONFIG_ERR_MAX])
{
    if (cfg->appid != NULL) {
        for (size_t i = 0; i < cfg->napps; i++) {
            if (strcmp(cfg->apps[i].appid, cfg->appid) == 0) {
                snprintf(err, CONFIG_ERR_MAX,
                         "appid: '%.100s' is also an [app] section; configure it once", cfg->appid);
                return -1;
            }
        }
        if (cfg->napps == CONFIG_MAX_APPS) {
            snprintf(err, CONFIG_ERR_MAX, "appid: too many apps");
            return -1;
        }
        memmove(&cfg->apps[1], &cfg->apps[0], cfg->napps * sizeof(cfg->apps[0]));
        memset(&cfg->apps[0], 0, sizeof(cfg->apps[0]));
        cfg->napps++;
        struct config_app *a = &cfg->apps[0];
        a->appid = strdup(cfg->appid);
        if (a->appid == NULL || (cfg->secret != NULL && set_string(&a->secret, cfg->secret, true)))
            goto oom;
    }
    for (size_t i = 0; i < cfg->napps; i++) {
        struct config_app *a = &cfg->apps[i];
        char key[STORE_ID_MAX + 32];
        snprintf(key, sizeof(key), "[app \"%s\"] secret", a->appid);
        if (i > 0 || cfg->appid == NULL) {
            if (secret_pair(key, &a->secret, "secret_file", a->secret_file, err) != 0)
                return -1;
        }
        if (a->access_token_api == NULL &&
            set_string(&a->access_token_api, cfg->access_token_api, false) != 0)
            goto oom;
        if (strcmp(a->access_token_api, "stable") != 0 &&
            strcmp(a->access_token_api, "classic") != 0) {
            snprintf(err, CONFIG_ERR_MAX,
                     "access_token_api: '%.100s' is not one of stable, classic (app %s)",
                     a->access_token_api, a->appid);
            return -1;
        }
    }
    return 0;
oom:
    snprintf(err, CONFIG_ERR_MAX, "apps: out of memory");
    return -1;
}

const struct config_app *config_app_find(const struct config *cfg, const char *appid)
{
    for (size_t i = 0; i < cfg->napps; i++)
        if (strcmp(cfg->apps[i].appid, appid) == 0)
            return &cfg->apps[i];
    return NULL;
}

int config_load(struct config *cfg, const char *path, char *const *envp, config_warn_fn *warn,
                void *warn_arg, char err[CONFIG_ERR_MAX])
{
    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].def != NULL && set_value(cfg, &keys[i], keys[i].def, err) != 0)
            goto fail;
    }
    if (state_directory_store(cfg, envp, err) != 0)
        goto fail;
    if (path != NULL && load_file(cfg, path, err) != 0)
        goto fail;
    if (load_env(cfg, envp, warn, warn_arg, err) != 0)
        goto fail;
    if (secret_pair("secret", &cfg->secret, "secret_file", cfg->secret_file, err) != 0 ||
        secret_pair("admin_token", &cfg->admin_token, "admin_token_file", cfg->admin_token_file,
                    err) != 0)
        goto fail;
    if (finish_apps(cfg, err) != 0)
        goto fail;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (addr_parse(cfg->listen, &ss, &sslen) != 0) {
        snprintf(err, CONFIG_ERR_MAX, "listen: '%.200s' is not host:port or does not resolve",
                 cfg->listen);
        goto fail;
    }
    if (cfg->metrics_listen != NULL && cfg->metrics_listen[0] != '\0' &&
        addr_parse(cfg->metrics_listen, &ss, &sslen) != 0) {
        snprintf(err, CONFIG_ERR_MAX,
                 "metrics_listen: '%.200s' is not host:port or does not resolve",
                 cfg->metrics_listen);
        goto fail;
    }
    if (strcmp(cfg->access_token_api, "stable") != 0 &&
        strcmp(cfg->access_token_api, "classic") != 0) {
        snprintf(err, CONFIG_ERR_MAX, "access_token_api: '%.100s' is not one of stable, classic",
                 cfg->access_token_api);
        goto fail;
    }
    if (cfg->master_key != NULL && cfg->master_key_file != NULL) {
        snprintf(err, CONFIG_ERR_MAX,
                 "master_key_file: set either master_key or master_key_file, not both");
        goto fail;
    }
    char serr[STORE_ERR_MAX];
    if (store_url_check(cfg->store, serr) != 0) {
        /* The URL may hold a password: name the problem, not the value. */
        snprintf(err, CONFIG_ERR_MAX, "store: %.400s", serr);
        goto fail;
    }
    if (store_url_shared(cfg->store) && cfg->master_key == NULL && cfg->master_key_file == NULL) {
        snprintf(err, CONFIG_ERR_MAX,
                 "master_key: required with the Redis store (every instance must share it; "
                 "set master_key or master_key_file)");
        goto fail;
    }
    return 0;
fail:
    config_done(cfg);
    return -1;
}

/* Shannon entropy, in bits per symbol, of n symbols with these counts. */
static double shannon(const unsigned counts[256], size_t n)
{
    double h = 0;
    for (int i = 0; i < 256; i++) {
        if (counts[i] == 0)
            continue;
        double p = (double)counts[i] / (double)n;
        h -= p * log2(p);
    }
    return h;
}

#define STR_(x) #x
#define STR(x) STR_(x)

/* A repeat this long or longer counts as one character of the effective length. */
#define REPEAT_MIN 4

/* The length of s[0..n) once every repeat of REPEAT_MIN or more bytes seen earlier counts as
 * one: a greedy LZ77 parse (longest earlier match, overlaps allowed) counting its tokens. */
static size_t effective_length(const unsigned char *s, size_t n)
{
    size_t units = 0;
    for (size_t i = 0; i < n; units++) {
        size_t best = 0;
        for (size_t j = 0; j < i && best < n - i; j++) {
            size_t m = 0;
            while (i + m < n && s[j + m] == s[i + m])
                m++;
            if (m > best)
                best = m;
        }
        i += best >= REPEAT_MIN ? best : 1;
    }
    return units;
}

double config_token_entropy_bits(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strnlen(s, CONFIG_TOKEN_EVAL_MAX);
    if (n < 2)
        return 0;
    unsigned bytes[256] = {0}, steps[256] = {0};
    for (size_t i = 0; i < n; i++) {
        bytes[u[i]]++;
        if (i + 1 < n)
            steps[(unsigned char)(u[i + 1] - u[i])]++;
    }
    double hb = shannon(bytes, n), hs = shannon(steps, n - 1);
    return (hb < hs ? hb : hs) * (double)effective_length(u, n);
}

bool config_token_strong(const char *s, const char **why)
{
    const char *w = NULL;
    if (strnlen(s, CONFIG_TOKEN_MIN_LEN) < CONFIG_TOKEN_MIN_LEN)
        w = "shorter than " STR(CONFIG_TOKEN_MIN_LEN) " characters";
    else if (config_token_entropy_bits(s) < CONFIG_TOKEN_MIN_BITS)
        w = "too predictable (estimated entropy under " STR(
            CONFIG_TOKEN_MIN_BITS) " bits: repeats, runs or few distinct characters)";
    if (w != NULL && why != NULL)
        *why = w;
    return w == NULL;
}

int config_check_serve(const struct config *cfg, char err[CONFIG_ERR_MAX])
{
    if (cfg->napps == 0) {
        snprintf(err, CONFIG_ERR_MAX,
                 "appid: not set (config key appid or WXLOGIN_APPID, or [app \"<appid>\"] "
                 "sections)");
        return -1;
    }
    for (size_t i = 0; i < cfg->napps; i++) {
        if (cfg->apps[i].secret == NULL) {
            if (i == 0 && cfg->appid != NULL)
                snprintf(err, CONFIG_ERR_MAX,
                         "secret: not set (config key secret or secret_file, or WXLOGIN_SECRET)");
            else
                snprintf(err, CONFIG_ERR_MAX, "[app \"%.100s\"]: secret or secret_file not set",
                         cfg->apps[i].appid);
            return -1;
        }
    }
    if (cfg->user_retention > 0 && cfg->user_retention < cfg->session_max_age) {
        /* A purged user would still have live sessions, of a user the store no longer knows. */
        snprintf(err, CONFIG_ERR_MAX,
                 "user_retention: %ld is under session_max_age (%ld): users must be kept at "
                 "least as long as their sessions may live (0 keeps them for good)",
                 cfg->user_retention, cfg->session_max_age);
        return -1;
    }
    const char *why;
    if (cfg->admin_token != NULL && !config_token_strong(cfg->admin_token, &why)) {
        /* Name where the token came from, never the token (nor its length). */
        if (cfg->admin_token_file != NULL)
            snprintf(err, CONFIG_ERR_MAX,
                     "admin_token_file: the admin token in '%.200s' is %s; generate one with "
                     "`openssl rand -hex 32`",
                     cfg->admin_token_file, why);
        else
            snprintf(err, CONFIG_ERR_MAX,
                     "admin_token: %s; generate one with `openssl rand -hex 32`", why);
        return -1;
    }
    return 0;
}

void config_done(struct config *cfg)
{
    free(cfg->listen);
    free(cfg->appid);
    wipe_free(cfg->secret);
    free(cfg->secret_file);
    free(cfg->wechat_base);
    wipe_free(cfg->store); /* a Redis URL may carry a password */
    wipe_free(cfg->master_key);
    free(cfg->master_key_file);
    free(cfg->access_token_api);
    wipe_free(cfg->admin_token);
    free(cfg->admin_token_file);
    free(cfg->metrics_listen);
    for (size_t i = 0; i < cfg->napps; i++) {
        free(cfg->apps[i].appid);
        wipe_free(cfg->apps[i].secret);
        free(cfg->apps[i].secret_file);
        free(cfg->apps[i].access_token_api);
    }
    memset(cfg, 0, sizeof(*cfg));
}

int config_thread_count(const struct config *cfg)
{
    if (cfg->threads > 0)
        return (int)cfg->threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- reload and `serve --check` ---- */

/* The size of a key's value in struct config, for the types compared byte for byte. */
static size_t value_size(enum cfg_type t)
{
    switch (t) {
    case CT_LONG: return sizeof(long);
    case CT_LOG_LEVEL: return sizeof(enum log_level);
    case CT_LOG_FORMAT: return sizeof(enum log_format);
    case CT_RATE: return sizeof(struct config_rate);
    default: return 0;
    }
}

static bool str_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool key_equal(const struct config *a, const struct config *b, const struct cfg_key *k)
{
    const void *sa = (const char *)a + k->offset, *sb = (const char *)b + k->offset;
    switch (k->type) {
    case CT_STRING:
    case CT_SECRET:
    case CT_URL: return str_equal(*(char *const *)sa, *(char *const *)sb);
    case CT_PROXIES:
        return a->ntrusted_proxies == b->ntrusted_proxies &&
               memcmp(a->trusted_proxies, b->trusted_proxies,
                      a->ntrusted_proxies * sizeof(a->trusted_proxies[0])) == 0;
    default: return memcmp(sa, sb, value_size(k->type)) == 0;
    }
}

void config_diff(const struct config *a, const struct config *b, config_diff_fn *fn, void *arg)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!key_equal(a, b, &keys[i]))
            fn(keys[i].name, arg);
    /* The flat app (apps[0] when appid is set) is covered by the keys above. */
    bool apps_differ = a->napps != b->napps;
    for (size_t i = b->appid != NULL ? 1 : 0; i < b->napps; i++) {
        const struct config_app *nb = &b->apps[i];
        const struct config_app *na = config_app_find(a, nb->appid);
        if (na == NULL || (a->appid != NULL && strcmp(a->appid, nb->appid) == 0)) {
            apps_differ = true;
            continue;
        }
        char name[STORE_ID_MAX + 48];
        if (!str_equal(na->secret, nb->secret)) {
            snprintf(name, sizeof(name), "[app \"%s\"] secret", nb->appid);
            fn(name, arg);
        }
        if (!str_equal(na->secret_file, nb->secret_file)) {
            snprintf(name, sizeof(name), "[app \"%s\"] secret_file", nb->appid);
            fn(name, arg);
        }
        if (!str_equal(na->access_token_api, nb->access_token_api)) {
            snprintf(name, sizeof(name), "[app \"%s\"] access_token_api", nb->appid);
            fn(name, arg);
        }
    }
    if (apps_differ)
        fn("apps", arg);
}

int config_keep(struct config *dst, const struct config *src, const char *name)
{
    const struct cfg_key *k = find_key(name);
    if (k == NULL)
        return -1;
    void *sd = (char *)dst + k->offset;
    const void *ss = (const char *)src + k->offset;
    switch (k->type) {
    case CT_STRING:
    case CT_SECRET:
    case CT_URL: {
        const char *v = *(char *const *)ss;
        char *copy = v != NULL ? strdup(v) : NULL;
        if (v != NULL && copy == NULL)
            return -1;
        wipe_free(*(char **)sd);
        *(char **)sd = copy;
        return 0;
    }
    case CT_PROXIES:
        memcpy(dst->trusted_proxies, src->trusted_proxies, sizeof(dst->trusted_proxies));
        dst->ntrusted_proxies = src->ntrusted_proxies;
        return 0;
    default: memcpy(sd, ss, value_size(k->type)); return 0;
    }
}

static void print_rate(FILE *out, const char *name, const struct config_rate *r)
{
    if (r->count == 0)
        fprintf(out, "%s = off\n", name);
    else if (r->period_ms % 1000 == 0)
        fprintf(out, "%s = %ld/%lds\n", name, r->count, r->period_ms / 1000);
    else
        fprintf(out, "%s = %ld/%ldms\n", name, r->count, r->period_ms);
}

static void print_proxies(FILE *out, const struct config *cfg)
{
    fputs("trusted_proxies =", out);
    for (size_t i = 0; i < cfg->ntrusted_proxies; i++) {
        const struct ipaddr_net *n = &cfg->trusted_proxies[i];
        char text[IPADDR_TEXT_MAX];
        ipaddr_format(&n->addr, text);
        bool v4 = ipaddr_is_v4(&n->addr);
        fprintf(out, "%s%s/%u", i ? ", " : " ", text, v4 ? n->bits - 96 : n->bits);
    }
    fputc('\n', out);
}

void config_print(const struct config *cfg, FILE *out)
{
    fputs("# the effective configuration (file, then environment); secrets are shown as ***\n",
          out);
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        const void *slot = (const char *)cfg + k->offset;
        const char *s = NULL;
        char url[512];
        switch (k->type) {
        case CT_STRING:
        case CT_URL:
            s = *(char *const *)slot;
            if (s != NULL && (k->type == CT_URL || strcmp(k->name, "store") == 0)) {
                store_url_redacted(s, url, sizeof(url)); /* a password in the URL */
                s = url;
            }
            break;
        case CT_SECRET: s = *(char *const *)slot != NULL ? "***" : NULL; break;
        case CT_LONG: fprintf(out, "%s = %ld\n", k->name, *(const long *)slot); continue;
        case CT_LOG_LEVEL: s = log_level_name(cfg->log_level); break;
        case CT_LOG_FORMAT: s = cfg->log_format == LOG_FORMAT_TEXT ? "text" : "json"; break;
        case CT_RATE: print_rate(out, k->name, slot); continue;
        case CT_PROXIES: print_proxies(out, cfg); continue;
        }
        if (s == NULL)
            fprintf(out, "# %s is not set\n", k->name);
        else
            fprintf(out, "%s = %s\n", k->name, s);
    }
    for (size_t i = cfg->appid != NULL ? 1 : 0; i < cfg->napps; i++) {
        const struct config_app *a = &cfg->apps[i];
        fprintf(out, "\n[app \"%s\"]\n", a->appid);
        if (a->secret != NULL)
            fputs("secret = ***\n", out);
        if (a->secret_file != NULL)
            fprintf(out, "secret_file = %s\n", a->secret_file);
        fprintf(out, "access_token_api = %s\n", a->access_token_api);
    }
}
