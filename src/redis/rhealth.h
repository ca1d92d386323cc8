/*
 * redis/rhealth: why the Redis store fails, said once per change.
 *
 * The connections of one store (one per worker, redis/rconn.h) report here what they see: a
 * connection that could not be made or set up (refused, timed out, a host name that does not
 * resolve, AUTH refused) and a command answered with an error (MISCONF, READONLY, OOM,
 * NOPERM...), and their recoveries. The process-wide state goes ok → failing(reason) →
 * failing(another reason) → ok, and each change is one log line: "store failing" at warn, with
 * the reason's short name ("WRONGPASS", "ECONNREFUSED", ...), the words of Redis or of the
 * system, and a hint; then "store recovered" at info. The same failure seen by every worker and
 * every request is one line, however long it lasts.
 *
 * A connection failure ends when that connection is ready again (and the store recovers when no
 * connection is down). A command's error ends when the same command (the same script) succeeds:
 * under MISCONF, READONLY or OOM reads still succeed while writes fail, and the state must not
 * flap with every request.
 *
 * Thread-safe. A mutex guards the state and is taken only when something changes or may have;
 * a command's success costs one relaxed atomic load while nothing is failing. This module logs:
 * it is the operator's view of the store. It never sees the password (Redis's error texts and
 * the system's do not hold it, and the store URL it is given is redacted).
 */
#ifndef WXLOGIN_REDIS_RHEALTH_H
#define WXLOGIN_REDIS_RHEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RHEALTH_REASON_MAX 32

struct rhealth;

/* What one connection reported last; owned by the connection (zeroed: not failing). */
struct rhealth_conn {
    bool down;
    char reason[RHEALTH_REASON_MAX];
};

/* target: the store as the log names it (a redacted URL), copied. NULL when out of memory. */
struct rhealth *rhealth_new(const char *target);
/* Accepts NULL. */
void rhealth_free(struct rhealth *h);

/*
 * Connection c could not be made, set up or kept: detail is the system's or hiredis's text
 * ("Connection refused") or, with redis_error, the error Redis answered ("WRONGPASS invalid
 * username-password pair..."). h NULL: nothing is done.
 */
void rhealth_conn_failed(struct rhealth *h, struct rhealth_conn *c, const char *detail,
                         bool redis_error);
/* Connection c is ready (connected, authenticated, scripts loaded). */
void rhealth_conn_ready(struct rhealth *h, struct rhealth_conn *c);

/* A command (cmd: rhealth_cmd_id() of its words) answered with Redis error text err. */
void rhealth_reply_error(struct rhealth *h, uint32_t cmd, const char *err);
/* A command answered without an error. */
void rhealth_reply_ok(struct rhealth *h, uint32_t cmd);
/* A command's identity: its name, and for EVALSHA the script's SHA-1. Never 0. */
uint32_t rhealth_cmd_id(const char *name, size_t name_len, const char *arg1, size_t arg1_len);

/* The short name of a failure (exposed for the unit tests): the first word of a Redis error
 * ("WRONGPASS", "ERR" when it has none), else the errno or EAI_ name whose text detail holds
 * ("ECONNREFUSED", "EAI_NONAME"), "ETIMEDOUT" for our own deadlines, "ERROR" otherwise. */
void rhealth_reason(const char *detail, bool redis_error, char out[RHEALTH_REASON_MAX]);

#endif
