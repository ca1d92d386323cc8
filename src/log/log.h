/*
 * log: one line per event on stderr, as JSON or as text, safe from any thread.
 *
 * A line is built in a fixed buffer (no allocation) and written whole, so lines from different
 * threads never interleave. Fields are key/value pairs; strings are escaped, numbers written as
 * JSON numbers. A line that does not fit its 4096 bytes stays valid: a value is cut between
 * whole characters and ends with "…", a field with no room is left out, and the line then ends
 * with "truncated":true (text: truncated=true). In the text format, values that need it (and
 * messages with control characters) are quoted JSON strings: no control character is written
 * raw. Secrets must never be passed here: that is the callers' rule, this module cannot
 * tell a secret from a string.
 *
 * Batching: a thread that calls log_batch(true) (the workers, whose loops call log_flush()
 * before each wait for events) keeps its info and debug lines in a per-thread buffer and writes
 * them with one write(2) per loop iteration, or sooner when the buffer is full; a warn or error
 * line flushes at once, after the lines before it. A batch never exceeds PIPE_BUF (4096 bytes),
 * so each write stays atomic on a pipe.
 */
#ifndef WXLOGIN_LOG_H
#define WXLOGIN_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

/* Sets the threshold and format. Call before starting threads. */
void log_setup(enum log_level level, enum log_format format);
/* Changes the level while threads log (a reload). */
void log_set_level(enum log_level level);
/* "debug", "info", "warn" or "error". */
const char *log_level_name(enum log_level level);
bool log_enabled(enum log_level level);

/* Parses "debug|info|warn|error" / "json|text". Return 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);
int log_format_parse(const char *s, enum log_format *out);

/*
 * Writes msg and the NULL-terminated key/value string pairs that follow it, e.g.
 *   log_kv(LOG_INFO, "request", "method", "POST", "status", "200", NULL);
 * A NULL value skips that pair.
 */
void log_kv(enum log_level level, const char *msg, ...) __attribute__((sentinel));

/* printf-style message without fields. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Typed fields, for lines that carry numbers (the access line). */
enum log_field_type {
    LOG_F_STR,  /* s; NULL skips the field */
    LOG_F_INT,  /* i */
    LOG_F_MS,   /* i microseconds, written as milliseconds with three decimals */
    LOG_F_BOOL, /* i: true when non-zero (JSON true/false, text true/false) */
};

struct log_field {
    const char *key;
    enum log_field_type type;
    const char *s;
    long long i;
};

#define LOG_STR(k, v) ((struct log_field){.key = (k), .type = LOG_F_STR, .s = (v)})
#define LOG_INT(k, v) ((struct log_field){.key = (k), .type = LOG_F_INT, .i = (v)})
#define LOG_MS(k, us) ((struct log_field){.key = (k), .type = LOG_F_MS, .i = (us)})
#define LOG_BOOL(k, v) ((struct log_field){.key = (k), .type = LOG_F_BOOL, .i = (v) ? 1 : 0})

void log_fields(enum log_level level, const char *msg, const struct log_field *fields, size_t n);

/*
 * An audit event: an info line whose message is "audit", with "event" (one name per kind of
 * event, listed in docs/operations.md: "login", "logout", "session_revoked"...) and "client"
 * (the client address, NULL when there is none), then the fields. Operators keep these lines
 * (they say who did what to which user, and from where). Written at info, like the access
 * line (log_level warn silences both); they never carry a secret.
 */
#define LOG_AUDIT_FIELDS_MAX 14
void log_audit(const char *event, const char *client, const struct log_field *fields, size_t n);

/* Turns batching on or off for the calling thread (off: pending lines are written first). */
void log_batch(bool on);
/* Writes the calling thread's pending lines, if any. */
void log_flush(void);

#endif
