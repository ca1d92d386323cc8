/*
 * log: formatting is done into a stack buffer; JSON strings are escaped with jansson's encoder
 * (json_dumpb of a json string), so there is no hand-written escaper to get wrong.
 */
#include "log/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static enum log_level g_level = LOG_INFO;
static enum log_format g_format = LOG_FORMAT_JSON;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level level, enum log_format format)
{
    g_level = level;
    g_format = format;
}

bool log_enabled(enum log_level level)
{
    return level >= g_level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (strcmp(s, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else if (strcmp(s, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else
        return -1;
    return 0;
}

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

/* Bytes kept back for the end of a JSON line ("}" and the newline). */
#define LINE_RESERVE 2

static size_t room_left(const struct line *l)
{
    return sizeof(l->buf) - (g_format == LOG_FORMAT_JSON ? LINE_RESERVE : 1) - l->len;
}

static void put(struct line *l, const char *s, size_t n)
{
    /* A line that does not fit is cut, never overflowed. */
    size_t room = room_left(l);
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void puts_(struct line *l, const char *s);

/* Writes s as a JSON string. A string too long for the line is cut (at a UTF-8 boundary) and
 * marked, so the line always stays valid JSON. */
static void put_json_string(struct line *l, const char *s)
{
    static const char cut_mark[] = "...(cut)";
    size_t n = strlen(s);
    for (;;) {
        json_t *js = json_stringn(s, n);
        if (js == NULL) { /* not UTF-8: say so rather than write bytes a JSON reader rejects */
            puts_(l, "\"<invalid utf-8>\"");
            return;
        }
        if (n < strlen(s)) {
            char *t = NULL;
            if (asprintf(&t, "%.*s%s", (int)n, s, cut_mark) < 0) {
                json_decref(js);
                put(l, "\"\"", 2);
                return;
            }
            json_decref(js);
            js = json_string(t);
            free(t);
            if (js == NULL) {
                put(l, "\"\"", 2);
                return;
            }
        }
        size_t room = room_left(l);
        size_t need = json_dumpb(js, NULL, 0, JSON_ENCODE_ANY);
        if (need <= room) {
            l->len += json_dumpb(js, l->buf + l->len, room, JSON_ENCODE_ANY);
            json_decref(js);
            return;
        }
        json_decref(js);
        /* Escaping can grow a byte to six: shrink generously, then back off to a character
         * boundary. */
        size_t target = room > sizeof(cut_mark) + 8 ? (room - sizeof(cut_mark) - 8) / 6 : 0;
        if (target >= n)
            target = n > 0 ? n - 1 : 0;
        while (target > 0 && ((unsigned char)s[target] & 0xC0) == 0x80)
            target--;
        if (target == 0) {
            put(l, "\"\"", 2);
            return;
        }
        n = target;
    }
}

/* Text values are quoted only when they would be ambiguous. */
static void put_text_value(struct line *l, const char *s)
{
    if (*s != '\0' && strpbrk(s, " \t\"=\n\r") == NULL) {
        puts_(l, s);
        return;
    }
    put_json_string(l, s);
}

static void put_time(struct line *l)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof(tbuf) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    puts_(l, tbuf);
}

static void emit(enum log_level level, const char *msg, va_list ap)
{
    struct line l = {.len = 0};
    if (g_format == LOG_FORMAT_JSON) {
        puts_(&l, "{\"ts\":\"");
        put_time(&l);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_names[level]);
        puts_(&l, "\",\"msg\":");
        put_json_string(&l, msg);
    } else {
        put_time(&l);
        puts_(&l, " ");
        puts_(&l, level_names[level]);
        puts_(&l, " ");
        puts_(&l, msg);
    }
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        if (v == NULL)
            continue;
        if (g_format == LOG_FORMAT_JSON) {
            puts_(&l, ",");
            put_json_string(&l, k);
            puts_(&l, ":");
            put_json_string(&l, v);
        } else {
            puts_(&l, " ");
            puts_(&l, k);
            puts_(&l, "=");
            put_text_value(&l, v);
        }
    }
    if (g_format == LOG_FORMAT_JSON)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    /* One write per line: atomic on pipes for lines under PIPE_BUF, never interleaved mid-line
     * on files opened O_APPEND. A failed log write has nowhere to be reported. */
    ssize_t w = write(STDERR_FILENO, l.buf, l.len);
    (void)w;
}

void log_kv(enum log_level level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, msg);
    emit(level, msg, ap);
    va_end(ap);
}

static void emit_msg(enum log_level level, const char *msg, ...)
{
    va_list ap;
    va_start(ap, msg);
    emit(level, msg, ap);
    va_end(ap);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    emit_msg(level, msg, NULL);
}
