/*
 * config: the service's settings, from defaults, then an INI file, then WXLOGIN_* environment
 * variables (the environment wins).
 *
 * Every key lives in one table in config.c (name, type, default, bounds), in the manner of
 * redis's static_configs[]; wxlogin.conf.example documents the same keys and a test parses it.
 * This module returns errors as text and never logs.
 */
#ifndef WXLOGIN_CONFIG_H
#define WXLOGIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log/log.h"
#include "util/ipaddr.h"

#define CONFIG_ERR_MAX 512

#define CONFIG_MAX_APPS 64
/* Networks trusted_proxies may list. */
#define CONFIG_MAX_PROXIES 64

/* A rate limit: count requests per period_ms (a bucket of count tokens that refills over the
 * period); count 0: off. Written "N/s", "N/min", "N/h" or "N/<K>s", "N/<K>min"... or "off". */
struct config_rate {
    long count;
    long period_ms;
};

/* One Mini Program the service logs users in for. */
struct config_app {
    char *appid;
    char *secret; /* from secret or the contents of secret_file */
    char *secret_file;
    char *access_token_api; /* "stable" or "classic"; the top-level value unless overridden */
};

struct config {
    char *listen;      /* host:port */
    char *appid;       /* NULL when not configured */
    char *secret;      /* from `secret` or the contents of `secret_file`; NULL when neither */
    char *secret_file; /* path, NULL when not configured */
    char *wechat_base; /* scheme://host[:port], without trailing slash */
    long upstream_timeout_ms;
    long upstream_retries;
    long threads; /* 0 = one per core */
    enum log_level log_level;
    enum log_format log_format;
    long max_body_bytes;
    long max_connections;             /* for the whole process; 0 = from the open-file limit */
    long max_connections_per_address; /* 0 = no limit */
    long connection_timeout;          /* seconds an idle client connection may live */
    long read_timeout; /* seconds a client has to deliver a whole request (line, headers, body) */
    long max_body_memory; /* bytes of request bodies buffered at once, process-wide */
    long shutdown_timeout_ms;
    char *store;      /* "sqlite:PATH" */
    long session_ttl; /* seconds */
    char *master_key; /* base64 of 32 bytes; NULL when not configured */
    char *master_key_file;
    long session_key_grace; /* seconds the replaced session_key still opens data */
    char *access_token_api; /* "stable" or "classic" */
    char *admin_token;      /* from admin_token or admin_token_file; NULL: admin routes 404 */
    char *admin_token_file;
    long admin_max_failures;  /* failed admin attempts per address before its lockout */
    long admin_lockout_s;     /* the failure window and the lockout, in seconds */
    long session_cache_size;  /* sessions kept in memory (SQLite store); 0 = none */
    long store_timeout_ms;    /* Redis: connect and command deadline */
    long request_timeout_ms;  /* a request still unanswered this long is answered 504 */
    long code_reuse_window;   /* seconds a repeat of a login code still gets its session */
    long refresh_grace;       /* seconds a refreshed token still works */
    long session_max_age;     /* seconds a session (its refreshes included) may live */
    long user_retention;      /* seconds a user not seen is kept; 0 = for good */
    long exchange_table_size; /* login codes whose outcome is remembered */

    /* Where a request comes from: the TCP peer, or X-Forwarded-For when the peer is one of
     * these (http/server.h, http_request_client()). */
    struct ipaddr_net trusted_proxies[CONFIG_MAX_PROXIES];
    size_t ntrusted_proxies;
    struct config_rate rate_limit_address; /* per client address: /openid, /v1/login, /v1/phone */
    struct config_rate rate_limit_openid;  /* per user: logins, counted after the exchange */
    struct config_rate rate_limit_wechat;  /* per app: calls to WeChat for clients */
    struct config_rate rate_limit_session; /* per client address: GET /v1/session (off) */
    long rate_limit_table_size;            /* buckets each limit keeps in memory (without Redis) */
    /* Where GET /metrics is served (host:port, its own listener); NULL or "": not served. */
    char *metrics_listen;

    /* Every app: the flat appid/secret one first (the single-app shorthand), then each
     * [app "<appid>"] section in file order. */
    struct config_app apps[CONFIG_MAX_APPS];
    size_t napps;
};

/* The app with this appid, or NULL. */
const struct config_app *config_app_find(const struct config *cfg, const char *appid);

/* Called for problems that do not stop the start (unknown WXLOGIN_* variables). */
typedef void config_warn_fn(const char *msg, void *arg);

/*
 * Fills cfg with defaults, then the file at path (NULL: no file), then the environment envp
 * (NULL-terminated "K=V" strings, usually environ). On error returns -1 and writes a message
 * naming the key (and file:line for file errors) to err; cfg is then already released.
 * On success the caller owns cfg and releases it with config_done().
 */
int config_load(struct config *cfg, const char *path, char *const *envp, config_warn_fn *warn,
                void *warn_arg, char err[CONFIG_ERR_MAX]);

/*
 * Checks what `serve` needs beyond well-formed values: at least one app, each with a secret, and
 * an admin token (when set) that config_token_strong() accepts. The message names the key and
 * never quotes a secret.
 */
int config_check_serve(const struct config *cfg, char err[CONFIG_ERR_MAX]);

/* The admin token's minimums (docs/config.md, "The admin token"). */
#define CONFIG_TOKEN_MIN_LEN 32
#define CONFIG_TOKEN_MIN_BITS 128
/* Only this many leading bytes are looked at by the estimate (it is quadratic in the length). */
#define CONFIG_TOKEN_EVAL_MAX 1024

/*
 * An estimate, in bits, of how hard s is to guess, meant to catch tokens typed or pasted by hand
 * rather than to prove random ones good:
 *   bits per character × effective length, where
 *   - bits per character is the lower of the Shannon entropy of s's bytes (from their own
 *     frequencies) and that of the steps between neighbouring bytes (s[i+1] - s[i] mod 256), so
 *     "aaaa..." and "abcdef..." both count near zero;
 *   - the effective length counts each run of 4 or more bytes that repeats bytes seen earlier
 *     (as LZ77 would find it, overlaps allowed) as one, so "abab...", "0123456789" repeated
 *     and a half pasted twice count once.
 * `openssl rand -hex 32` scores about 240 and `openssl rand -base64 32` about 215 (in 50,000
 * draws of each, never under 210 and 185); 16 random bytes in hex score about 115. Pure; reads at
 * most CONFIG_TOKEN_EVAL_MAX bytes of s.
 */
double config_token_entropy_bits(const char *s);

/*
 * True when s is good enough for admin_token: at least CONFIG_TOKEN_MIN_LEN characters and an
 * estimated entropy (config_token_entropy_bits()) of at least CONFIG_TOKEN_MIN_BITS. Otherwise
 * false, and *why (when why is not NULL) says which in a static string that never quotes s.
 */
bool config_token_strong(const char *s, const char **why);

/* Parses a rate limit's text (struct config_rate). Returns 0, or -1 when it is not one. */
int config_rate_parse(const char *s, struct config_rate *out);

/* Releases cfg's strings, wiping the secret. Accepts a zeroed cfg. */
void config_done(struct config *cfg);

/* Number of worker threads to run: cfg->threads, or the number of online cores. */
int config_thread_count(const struct config *cfg);

typedef void config_diff_fn(const char *name, void *arg);

/*
 * Calls fn(name, arg) for each key whose value differs between a and b (a reload: the running
 * configuration and the file read again). Secrets are compared, never passed on: fn gets names
 * only. An app section's keys are named `[app "<appid>"] secret` (secret_file,
 * access_token_api); "apps" when apps were added or removed.
 */
void config_diff(const struct config *a, const struct config *b, config_diff_fn *fn, void *arg);

/* Sets the key called name in dst to its value in src (a reload keeps the running value of a
 * key that needs a restart). Returns 0, or -1 (unknown key, out of memory). */
int config_keep(struct config *dst, const struct config *src, const char *name);

/* Writes cfg as a configuration file to out, every secret (secrets, admin token, master key,
 * passwords in URLs) replaced by "***" (`wxlogin serve --check`). */
void config_print(const struct config *cfg, FILE *out);

#endif
