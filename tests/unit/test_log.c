/*
 * Unit tests for log/log.h: level and format parsing, thresholds, and the lines written to
 * stderr (captured by pointing STDERR_FILENO at a temp file for the duration of one call).
 *
 * No cmocka assertion runs while stderr is redirected, so a failure message is never lost.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"

#define LINE_MAX_BYTES 4096

struct capture {
    char path[64];
    int fd;
    int saved;
};

static void capture_begin(struct capture *c)
{
    strcpy(c->path, "/tmp/wxlogin-test-log-XXXXXX");
    c->fd = mkstemp(c->path);
    assert_true(c->fd >= 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(c->fd, STDERR_FILENO) >= 0);
}

/* The last capture and the lines parsed from it; released by the teardown, so a failing
 * assertion leaks nothing. */
static char *g_out;
static json_t *g_json[4];
static size_t g_njson;

/* Restores stderr and returns what was written (NUL-terminated; *len its size). */
static char *capture_end(struct capture *c, size_t *len)
{
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    off_t size = lseek(c->fd, 0, SEEK_END);
    assert_true(size >= 0);
    free(g_out);
    g_out = malloc((size_t)size + 1);
    assert_non_null(g_out);
    assert_int_equal(pread(c->fd, g_out, (size_t)size, 0), size);
    g_out[size] = '\0';
    close(c->fd);
    unlink(c->path);
    *len = (size_t)size;
    return g_out;
}

static int reset_log(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    free(g_out);
    g_out = NULL;
    for (size_t i = 0; i < g_njson; i++)
        json_decref(g_json[i]);
    g_njson = 0;
    return 0;
}

/* Checks out is exactly one newline-terminated line and parses it as a JSON object (borrowed:
 * the teardown releases it). */
static json_t *one_json_line(const char *out, size_t len)
{
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1);
    json_error_t jerr;
    json_t *o = json_loadb(out, len, 0, &jerr);
    if (o == NULL)
        fail_msg("not JSON (%s at %d): %.300s", jerr.text, jerr.position, out);
    assert_true(g_njson < sizeof(g_json) / sizeof(g_json[0]));
    g_json[g_njson++] = o;
    assert_true(json_is_object(o));
    return o;
}

static void assert_field(const json_t *o, const char *key, const char *want)
{
    const char *got = json_string_value(json_object_get(o, key));
    if (got == NULL)
        fail_msg("no string field \"%s\"", key);
    assert_string_equal(got, want);
}

/* ---- parsing and thresholds ---- */

static void test_level_parse(void **state)
{
    (void)state;
    enum log_level l = LOG_ERROR;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOG_DEBUG);
    assert_int_equal(log_level_parse("info", &l), 0);
    assert_int_equal(l, LOG_INFO);
    assert_int_equal(log_level_parse("warn", &l), 0);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("error", &l), 0);
    assert_int_equal(l, LOG_ERROR);
}

static void test_level_parse_rejects_others(void **state)
{
    (void)state;
    enum log_level l = LOG_WARN;
    assert_int_equal(log_level_parse("", &l), -1);
    assert_int_equal(log_level_parse("verbose", &l), -1);
    assert_int_equal(log_level_parse("INFO", &l), -1);
    assert_int_equal(log_level_parse("info ", &l), -1);
    assert_int_equal(log_level_parse("inf", &l), -1);
    assert_int_equal(l, LOG_WARN); /* untouched on failure */
}

static void test_format_parse(void **state)
{
    (void)state;
    enum log_format fmt = LOG_FORMAT_TEXT;
    assert_int_equal(log_format_parse("json", &fmt), 0);
    assert_int_equal(fmt, LOG_FORMAT_JSON);
    assert_int_equal(log_format_parse("text", &fmt), 0);
    assert_int_equal(fmt, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("xml", &fmt), -1);
    assert_int_equal(log_format_parse("JSON", &fmt), -1);
    assert_int_equal(log_format_parse("", &fmt), -1);
    assert_int_equal(fmt, LOG_FORMAT_TEXT);
}

static void test_enabled_thresholds(void **state)
{
    (void)state;
    log_setup(LOG_DEBUG, LOG_FORMAT_JSON);
    assert_true(log_enabled(LOG_DEBUG));
    assert_true(log_enabled(LOG_ERROR));
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    assert_false(log_enabled(LOG_DEBUG));
    assert_true(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    log_setup(LOG_WARN, LOG_FORMAT_JSON);
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));
    log_setup(LOG_ERROR, LOG_FORMAT_JSON);
    assert_false(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));
}

static void test_below_threshold_writes_nothing(void **state)
{
    (void)state;
    log_setup(LOG_WARN, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "quiet", "k", "v", NULL);
    log_msg(LOG_DEBUG, "quiet %d", 1);
    size_t len;
    capture_end(&c, &len);
    assert_int_equal(len, 0);
}

/* ---- JSON lines ---- */

static void test_json_line_is_valid_with_awkward_values(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_JSON);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_WARN, "he said \"hi\"\nthen left", "quote", "a\"b\\c", "newline", "line1\nline2\r\n",
           "utf8", "\xe5\xbe\xae\xe4\xbf\xa1 caf\xc3\xa9", "ctl", "tab\there\x01", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_field(o, "level", "warn");
    assert_field(o, "msg", "he said \"hi\"\nthen left");
    assert_field(o, "quote", "a\"b\\c");
    assert_field(o, "newline", "line1\nline2\r\n");
    assert_field(o, "utf8", "\xe5\xbe\xae\xe4\xbf\xa1 caf\xc3\xa9");
    assert_field(o, "ctl", "tab\there\x01");
    assert_non_null(json_string_value(json_object_get(o, "ts")));
}

static void test_json_timestamp_is_utc_iso8601_ms(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "t", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    const char *ts = json_string_value(json_object_get(o, "ts"));
    assert_non_null(ts);
    /* 2024-01-02T03:04:05.678Z */
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[4], '-');
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
}

static void test_json_null_value_skips_pair(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "a", "1", "skipped", (const char *)NULL, "c", "3", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_field(o, "a", "1");
    assert_field(o, "c", "3");
    assert_null(json_object_get(o, "skipped"));
    assert_int_equal(json_object_size(o), 5); /* ts, level, msg, a, c */
}

static void test_json_invalid_utf8_still_valid_json(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "bad", "\xff\xfe", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_non_null(json_string_value(json_object_get(o, "bad")));
}

static void test_json_log_msg_formats(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_msg(LOG_ERROR, "listening on %s:%d", "127.0.0.1", 2020);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_field(o, "level", "error");
    assert_field(o, "msg", "listening on 127.0.0.1:2020");
}

static char *long_value(size_t n, char ch)
{
    char *v = malloc(n + 1);
    assert_non_null(v);
    memset(v, ch, n);
    v[n] = '\0';
    return v;
}

static void test_json_very_long_value_ends_with_newline(void **state)
{
    (void)state;
    char *big = long_value(3 * LINE_MAX_BYTES, 'v');
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "big", big, NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    free(big);
    assert_true(len > 0);
    assert_true(len <= LINE_MAX_BYTES);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1);
}

/* A line too long for the buffer must still be a JSON object (cut value, or the pair left out),
 * or log shippers drop it. */
static void test_json_very_long_value_line_is_still_json(void **state)
{
    (void)state;
    char *big = long_value(3 * LINE_MAX_BYTES, 'v');
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "before", "1", "big", big, "after", "2", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    free(big);
    json_t *o = one_json_line(out, len);
    assert_field(o, "before", "1");
}

/* ---- lines that do not fit ---- */

#define CUT_MARK "\xe2\x80\xa6" /* "…" */

static char *repeat(const char *unit, size_t count)
{
    size_t ul = strlen(unit);
    char *v = malloc(ul * count + 1);
    assert_non_null(v);
    for (size_t i = 0; i < count; i++)
        memcpy(v + i * ul, unit, ul);
    v[ul * count] = '\0';
    return v;
}

/* The access line as http/server.c writes it, with path. */
static void log_access(const char *path)
{
    const struct log_field f[] = {
        LOG_STR("method", "GET"),
        LOG_STR("path", path),
        LOG_INT("status", 404),
        LOG_MS("duration_ms", 1234),
        LOG_STR("request_id", "5f0c9a2e00000001"),
    };
    log_fields(LOG_INFO, "request", f, sizeof(f) / sizeof(f[0]));
}

/* Its decoded "path": the whole path, or (with "truncated":true) a prefix of whole characters
 * followed by the mark; the fields after the path are all there. */
static void check_access_line(const char *out, size_t len, const char *path_decoded)
{
    assert_true(len <= LINE_MAX_BYTES);
    json_t *o = one_json_line(out, len);
    assert_field(o, "method", "GET");
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 404);
    assert_true(json_is_real(json_object_get(o, "duration_ms")));
    assert_field(o, "request_id", "5f0c9a2e00000001");
    const char *got = json_string_value(json_object_get(o, "path"));
    assert_non_null(got);
    json_t *t = json_object_get(o, "truncated");
    if (t == NULL) {
        assert_string_equal(got, path_decoded);
        return;
    }
    assert_true(json_is_true(t));
    size_t gl = strlen(got), ml = strlen(CUT_MARK);
    assert_true(gl >= ml && strcmp(got + gl - ml, CUT_MARK) == 0);
    assert_true(gl - ml < strlen(path_decoded));
    assert_memory_equal(got, path_decoded, gl - ml);
}

/* Found by fuzzing the access line with paths of %01 x n: whatever the length and whatever
 * needs escaping, the line is one JSON object that keeps every field after the path. */
static void test_json_access_line_valid_for_many_lengths_of_escape_heavy_paths(void **state)
{
    (void)state;
    static const char *const units[] = {
        "\x01", "\"", "\\", "\xe5\xbe\xae", "\xf0\x9f\x98\x80", "a\x1b[", "\xe2\x80\xa8"};
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        for (size_t count = 1; count < 1500; count += 23) {
            char *path = repeat(units[u], count);
            struct capture c;
            capture_begin(&c);
            log_access(path);
            size_t len;
            char *out = capture_end(&c, &len);
            check_access_line(out, len, path);
            free(path);
            reset_log(NULL);
        }
    }
}

/* Bytes that are not UTF-8 become U+FFFD (3 bytes for 1), wherever the cut falls. */
static void test_json_access_line_valid_with_invalid_utf8_at_every_length(void **state)
{
    (void)state;
    for (size_t count = 600; count < 1400; count++) {
        char *path = repeat("\xe5\xbe", count); /* a 3-byte character missing its last byte */
        struct capture c;
        capture_begin(&c);
        log_access(path);
        size_t len;
        char *out = capture_end(&c, &len);
        free(path);
        assert_true(len <= LINE_MAX_BYTES);
        json_t *o = one_json_line(out, len);
        assert_int_equal(json_integer_value(json_object_get(o, "status")), 404);
        assert_field(o, "request_id", "5f0c9a2e00000001");
        const char *got = json_string_value(json_object_get(o, "path"));
        assert_non_null(got);
        assert_memory_equal(got, "\xef\xbf\xbd\xef\xbf\xbd", 6);
        reset_log(NULL);
    }
}

static void test_json_many_long_values_still_json_and_flagged(void **state)
{
    (void)state;
    char *a = repeat("\x01", 900), *b = repeat("\"", 1500), *d = repeat("\xe5\xbe\xae", 2000);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_WARN, "m", "a", a, "b", b, "short", "kept", "d", d, "last", "also kept", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    free(a);
    free(b);
    free(d);
    assert_true(len <= LINE_MAX_BYTES);
    json_t *o = one_json_line(out, len);
    assert_true(json_is_true(json_object_get(o, "truncated")));
    assert_field(o, "short", "kept");
    assert_field(o, "last", "also kept");
}

static void test_json_line_that_fits_has_no_truncated_field(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "a", "\x01\x02 \xe5\xbe\xae", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_null(json_object_get(o, "truncated"));
}

/* A long message (log_msg cuts it at 1023 bytes) is flagged too. */
static void test_json_long_message_flagged(void **state)
{
    (void)state;
    char *big = repeat("\x01", 2000);
    struct capture c;
    capture_begin(&c);
    log_msg(LOG_WARN, "%s", big);
    size_t len;
    char *out = capture_end(&c, &len);
    free(big);
    json_t *o = one_json_line(out, len);
    assert_true(json_is_true(json_object_get(o, "truncated")));
}

/* ---- text lines ---- */

static void test_text_line_quotes_values_with_spaces(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_WARN, "upstream failed", "api", "jscode2session", "detail", "could not connect",
           "eq", "a=b", "empty", "", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_non_null(strstr(out, " warn upstream failed"));
    assert_non_null(strstr(out, " api=jscode2session"));
    assert_non_null(strstr(out, " detail=\"could not connect\""));
    assert_non_null(strstr(out, " eq=\"a=b\""));
    assert_non_null(strstr(out, " empty=\"\""));
}

static void test_text_line_escapes_newlines(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "v", "one\ntwo", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    assert_ptr_equal(strchr(out, '\n'), out + len - 1); /* still one line */
    assert_non_null(strstr(out, " v=\"one\\ntwo\""));
}

static void test_text_null_value_skips_pair(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "a", "1", "skipped", (const char *)NULL, "c", "3", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    assert_non_null(strstr(out, " a=1 c=3\n"));
    assert_null(strstr(out, "skipped"));
}

static void test_text_very_long_value_cut_and_ends_with_newline(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    char *big = long_value(3 * LINE_MAX_BYTES, 'v');
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "big", big, "after", "x", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    free(big);
    assert_int_equal(len, LINE_MAX_BYTES);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1);
    assert_non_null(strstr(out, " big=vvvv"));
}

/* No byte that drives a terminal reaches it: ESC, BS, other C0 controls but the newlines that
 * end lines, DEL, C1 controls. */
static void assert_no_control_bytes(const char *out, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)out[i];
        if ((c < 0x20 && c != '\n') || c == 0x7f)
            fail_msg("control byte 0x%02x at %zu in: %.200s", c, i, out);
        if (c == 0xc2 && (unsigned char)out[i + 1] >= 0x80 && (unsigned char)out[i + 1] <= 0x9f)
            fail_msg("C1 control at %zu in: %.200s", i, out);
    }
    assert_int_equal(out[len - 1], '\n');
}

static void test_text_line_escapes_control_characters(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "request", "path",
           "/\x1b[2J\x1b]0;owned\x07\b\b\x01\x7f\xc2\x9b"
           "31m",
           "ok", "plain", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    assert_no_control_bytes(out, len);
    assert_non_null(strstr(out, " path=\"/\\u001b[2J\\u001b]0;owned\\u0007\\b\\b\\u0001\\u007f"
                                "\\u009b31m\""));
    assert_non_null(strstr(out, " ok=plain"));
}

static void test_text_message_escapes_control_characters(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_msg(LOG_WARN, "ignoring unknown environment variable WXLOGIN_\x1b[31mX");
    log_kv(LOG_WARN, "plain message stays plain", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    assert_no_control_bytes(out, len);
    assert_non_null(
        strstr(out, " warn \"ignoring unknown environment variable WXLOGIN_\\u001b[31mX\"\n"));
    assert_non_null(strstr(out, " warn plain message stays plain\n"));
}

static void test_text_invalid_utf8_replaced(void **state)
{
    (void)state;
    log_setup(LOG_INFO, LOG_FORMAT_TEXT);
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "m", "bad", "a\xff\xe5\xbe", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    /* one U+FFFD per byte that starts no valid sequence: ff, e5 (its sequence is cut), be */
    assert_non_null(strstr(out, " bad=\"a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"\n"));
}

/* Cut text lines keep whole characters and escapes, end with the mark and say so; the
 * fields after the long value are kept. */
static void test_text_long_escape_heavy_values_for_many_lengths(void **state)
{
    (void)state;
    static const char *const units[] = {"\x01", "\xe5\xbe\xae", "\x1b", "v"};
    for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
        for (size_t count = 500; count < 4200; count += 97) {
            log_setup(LOG_INFO, LOG_FORMAT_TEXT);
            char *v = repeat(units[u], count);
            struct capture c;
            capture_begin(&c);
            const struct log_field f[] = {LOG_STR("path", v), LOG_INT("status", 404),
                                          LOG_STR("request_id", "5f0c9a2e00000001")};
            log_fields(LOG_INFO, "request", f, 3);
            size_t len;
            char *out = capture_end(&c, &len);
            free(v);
            assert_true(len <= LINE_MAX_BYTES);
            assert_no_control_bytes(out, len);
            assert_ptr_equal(strchr(out, '\n'), out + len - 1);
            assert_non_null(strstr(out, " status=404 request_id=5f0c9a2e00000001"));
            if (strstr(out, " truncated=true\n") != NULL) {
                const char *mark = strstr(out, CUT_MARK);
                assert_non_null(mark);
                /* the value's last escape before the mark is whole: \u0001, never \u00 */
                if (units[u][0] == '\x01' || units[u][0] == '\x1b')
                    assert_memory_equal(mark - 6, units[u][0] == '\x01' ? "\\u0001" : "\\u001b", 6);
            }
        }
    }
}

static void test_lines_from_successive_calls_are_separate(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_kv(LOG_INFO, "one", NULL);
    log_kv(LOG_ERROR, "two", NULL);
    size_t len;
    char *out = capture_end(&c, &len);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    json_t *a = one_json_line(out, (size_t)(nl + 1 - out));
    json_t *b = one_json_line(nl + 1, len - (size_t)(nl + 1 - out));
    assert_field(a, "msg", "one");
    assert_field(b, "msg", "two");
    assert_field(b, "level", "error");
}

static void test_bool_fields_json_and_text(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    const struct log_field f[] = {LOG_BOOL("yes", 7), LOG_BOOL("no", 0), LOG_INT("n", -3)};
    log_fields(LOG_INFO, "flags", f, 3);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_true(json_is_true(json_object_get(o, "yes")));
    assert_true(json_is_false(json_object_get(o, "no")));
    assert_int_equal(json_integer_value(json_object_get(o, "n")), -3);

    log_setup(LOG_DEBUG, LOG_FORMAT_TEXT);
    capture_begin(&c);
    log_fields(LOG_INFO, "flags", f, 3);
    out = capture_end(&c, &len);
    assert_non_null(strstr(out, " flags yes=true no=false n=-3\n"));
}

static void test_audit_line_event_client_fields(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    const struct log_field f[] = {LOG_STR("app", "wx1"), LOG_BOOL("force", 1)};
    log_audit("access_token_refresh", "203.0.113.9", f, 2);
    size_t len;
    char *out = capture_end(&c, &len);
    json_t *o = one_json_line(out, len);
    assert_field(o, "level", "info");
    assert_field(o, "msg", "audit");
    assert_field(o, "event", "access_token_refresh");
    assert_field(o, "client", "203.0.113.9");
    assert_field(o, "app", "wx1");
    assert_true(json_is_true(json_object_get(o, "force")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, reset_log, reset_log)
        T(test_level_parse),
        T(test_level_parse_rejects_others),
        T(test_format_parse),
        T(test_enabled_thresholds),
        T(test_below_threshold_writes_nothing),
        T(test_json_line_is_valid_with_awkward_values),
        T(test_json_timestamp_is_utc_iso8601_ms),
        T(test_json_null_value_skips_pair),
        T(test_json_invalid_utf8_still_valid_json),
        T(test_json_log_msg_formats),
        T(test_json_very_long_value_ends_with_newline),
        T(test_json_very_long_value_line_is_still_json),
        T(test_text_line_quotes_values_with_spaces),
        T(test_text_line_escapes_newlines),
        T(test_text_null_value_skips_pair),
        T(test_text_very_long_value_cut_and_ends_with_newline),
        T(test_json_access_line_valid_for_many_lengths_of_escape_heavy_paths),
        T(test_json_access_line_valid_with_invalid_utf8_at_every_length),
        T(test_json_many_long_values_still_json_and_flagged),
        T(test_json_line_that_fits_has_no_truncated_field),
        T(test_json_long_message_flagged),
        T(test_text_line_escapes_control_characters),
        T(test_text_message_escapes_control_characters),
        T(test_text_invalid_utf8_replaced),
        T(test_text_long_escape_heavy_values_for_many_lengths),
        T(test_lines_from_successive_calls_are_separate),
        T(test_bool_fields_json_and_text),
        T(test_audit_line_event_client_fields),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
