/*
 * redis/rconn: one asynchronous Redis connection on a worker's loop (hiredis async API).
 *
 * hiredis does the protocol; this module plugs its socket into our epoll loop and adds what
 * hiredis 0.14 lacks: a deadline on connecting and on every command, and reconnection. While
 * Redis is unreachable, commands fail at once (so requests answer 503 instead of waiting); once
 * it is back, the next reconnect attempt (100 ms, doubling to 2 s) restores service without a
 * restart. A command whose deadline passes drops the connection, failing everything in flight
 * with it: a Redis that does not answer one command is not answering the others either.
 *
 * Every command's callback runs exactly once: with the reply, or with NULL on any failure; it
 * may run before rconn_command() returns. Library-like: no logging of its own, last error kept
 * as text; what goes wrong and what recovers is reported to the rhealth it is given
 * (redis/rhealth.h), which tells the operator once per change.
 */
#ifndef WXLOGIN_REDIS_RCONN_H
#define WXLOGIN_REDIS_RCONN_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

struct loop;
struct rconn;
struct rhealth;

#define RCONN_ERR_MAX 256

struct rconn_opts {
    char *host; /* TCP host, NULL with a unix socket */
    int port;
    char *unix_path; /* unix socket path, NULL with TCP */
    char *user;      /* ACL user name (AUTH user password); NULL: the default user */
    char *password;  /* NULL: no AUTH */
    int db;
    long timeout_ms;        /* connect and command deadline */
    struct rhealth *health; /* borrowed, told of failures and recoveries; NULL: none */
};

/*
 * Parses redis://[[user]:password@]host[:port][/db] and redis+unix:///path[?db=N] (through
 * libcurl's URL parser). A user name needs its password. Returns 0, or -1 with err (never
 * quoting the password). Release with rconn_opts_done().
 */
int rconn_parse_url(const char *url, struct rconn_opts *out, char err[RCONN_ERR_MAX]);
void rconn_opts_done(struct rconn_opts *o);

/*
 * A Lua script run by its SHA-1 (EVALSHA), so its text crosses the network once per
 * connection instead of with every call: rconn loads every registered script (SCRIPT LOAD)
 * on each new connection, before any command of the caller's.
 */
struct rconn_script {
    const char *text;
    char sha[41]; /* hex SHA-1 of text */
};
void rconn_script_init(struct rconn_script *s, const char *text);

/* Starts connecting. The opts are copied; scripts (n of them) are borrowed and must outlive
 * the connection. NULL when out of memory. */
struct rconn *rconn_new(struct loop *loop, const struct rconn_opts *opts,
                        const struct rconn_script *const *scripts, size_t nscripts);
/* Closes; commands in flight get their callback with NULL. Accepts NULL. */
void rconn_free(struct rconn *c);

typedef void rconn_reply_fn(const redisReply *reply, void *arg);

/* Sends a command; fn(reply or NULL, arg) runs exactly once. */
void rconn_command(struct rconn *c, rconn_reply_fn *fn, void *arg, int argc, const char **argv,
                   const size_t *lens);
/* Sends SCRIPT LOAD for every script again (after a NOSCRIPT answer: the server lost them,
 * e.g. SCRIPT FLUSH), unless loads are still in flight; commands sent afterwards find them. */
void rconn_reload_scripts(struct rconn *c);
/* True for an error reply that says the script is not loaded. */
bool rconn_noscript(const redisReply *r);
/* True when connected and authenticated. */
bool rconn_ready(const struct rconn *c);
/* The last connection error, "" when none. */
const char *rconn_last_error(const struct rconn *c);

#endif
