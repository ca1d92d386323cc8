/*
 * util/jsonw: JSON written straight into a caller's buffer, with no allocation.
 *
 * For the two hot writers of JSON: log lines and the small replies of the hot routes (h2o
 * escapes its access log the same way, append_unsafe_string_json in lib/core/logconf.c).
 * Parsing stays with jansson; this only writes. Strings are escaped per RFC 8259, and so are
 * the C1 controls and U+2028/U+2029 (util/utf8's control characters), so the text is safe for
 * terminals and for readers that split lines there; bytes that are not valid UTF-8 become
 * U+FFFD, so the output is always valid JSON whatever it is given.
 */
#ifndef WXLOGIN_UTIL_JSONW_H
#define WXLOGIN_UTIL_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Writes s (n bytes) as a JSON string, quotes included, into out (cap bytes; no NUL added).
 * When it does not fit whole, writes as many whole characters as fit (never part of a UTF-8
 * sequence or of an escape) followed by `mark` (NULL: none; left out when even the mark does
 * not fit) inside the quotes, and sets *cut (may be NULL). Returns the bytes written, 0 when
 * not even "" fits.
 */
size_t jsonw_string(char *out, size_t cap, const char *s, size_t n, const char *mark, bool *cut);

/* The length jsonw_string would write for the whole of s, quotes included, or limit when that
 * is limit or more (the walk stops there). */
size_t jsonw_string_len(const char *s, size_t n, size_t limit);

/* Decimal text of v into out (at least 21 bytes); returns its length. */
size_t jsonw_int(char *out, long long v);

/* A JSON object being written into a fixed buffer. */
struct jsonw {
    char *buf;
    size_t cap, len;
    bool first;
    bool overflow; /* something did not fit: the text is unusable */
};

void jsonw_begin(struct jsonw *w, char *buf, size_t cap);
void jsonw_str(struct jsonw *w, const char *key, const char *value);
void jsonw_num(struct jsonw *w, const char *key, long long value);
void jsonw_bool(struct jsonw *w, const char *key, bool value);
/* Closes the object; returns its length, or 0 when it overflowed. */
size_t jsonw_end(struct jsonw *w);

#endif
