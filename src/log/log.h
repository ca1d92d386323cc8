/*
 * log: one line per event on stderr, as JSON or as text, safe from any thread.
 *
 * A line is written with a single write(2), so lines from different threads never interleave.
 * Fields are key/value pairs of strings; callers format numbers themselves. Secrets must never
 * be passed here: that is the callers' rule, this module cannot tell a secret from a string.
 */
#ifndef WXLOGIN_LOG_H
#define WXLOGIN_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };

/* Sets the threshold and format. Call before starting threads. */
void log_setup(enum log_level level, enum log_format format);
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

#endif
