/*
 * log: lines are formatted into a stack buffer with util/jsonw's escaper; the timestamp's
 * seconds part is formatted once per second per thread.
 */
#include "log/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/jsonw.h"

#define LOG_LINE_MAX 4096
#define BATCH_MAX 4096 /* PIPE_BUF: one write of at most this much is atomic on a pipe */

static enum log_level g_level = LOG_INFO;
static enum log_format g_format = LOG_FORMAT_JSON;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char cut_mark[] = "...(cut)";

struct batch {
    bool on;
    size_t len;
    char buf[BATCH_MAX];
};

static _Thread_local struct batch t_batch;
static _Thread_local time_t t_sec = -1;
static _Thread_local char t_sec_text[24]; /* "2026-12-01T09:27:14" */

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

/* ---- building a line ---- */

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

/* Bytes kept back for the end of a line: "}" and the newline (JSON), the newline (text). */
static size_t room_left(const struct line *l)
{
    size_t reserve = g_format == LOG_FORMAT_JSON ? 2 : 1;
    return sizeof(l->buf) - reserve - l->len;
}

/* Appends raw bytes, cut to what fits. */
static void put(struct line *l, const char *s, size_t n)
{
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

/* A JSON string, cut (at a character boundary, marked) when the line has no room for it. */
static void put_json_string(struct line *l, const char *s)
{
    l->len += jsonw_string(l->buf + l->len, room_left(l), s, strlen(s), cut_mark);
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
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != t_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(t_sec_text, sizeof(t_sec_text), "%Y-%m-%dT%H:%M:%S", &tm);
        t_sec = ts.tv_sec;
    }
    char ms[6];
    long m = ts.tv_nsec / 1000000;
    ms[0] = '.';
    ms[1] = (char)('0' + m / 100);
    ms[2] = (char)('0' + m / 10 % 10);
    ms[3] = (char)('0' + m % 10);
    ms[4] = 'Z';
    puts_(l, t_sec_text);
    put(l, ms, 5);
}

static void begin_line(struct line *l, enum log_level level, const char *msg)
{
    l->len = 0;
    if (g_format == LOG_FORMAT_JSON) {
        puts_(l, "{\"ts\":\"");
        put_time(l);
        puts_(l, "\",\"level\":\"");
        puts_(l, level_names[level]);
        puts_(l, "\",\"msg\":");
        put_json_string(l, msg);
    } else {
        put_time(l);
        puts_(l, " ");
        puts_(l, level_names[level]);
        puts_(l, " ");
        puts_(l, msg);
    }
}

/* Formats a number field's value into out; returns its length. */
static size_t number_text(const struct log_field *f, char out[32])
{
    if (f->type == LOG_F_INT)
        return jsonw_int(out, f->i);
    /* microseconds as milliseconds with three decimals */
    long long us = f->i < 0 ? 0 : f->i;
    size_t n = jsonw_int(out, us / 1000);
    long long frac = us % 1000;
    out[n++] = '.';
    out[n++] = (char)('0' + frac / 100);
    out[n++] = (char)('0' + frac / 10 % 10);
    out[n++] = (char)('0' + frac % 10);
    return n;
}

static void add_field(struct line *l, const struct log_field *f)
{
    if (f->type == LOG_F_STR && f->s == NULL)
        return;
    char num[32];
    size_t nlen = f->type == LOG_F_STR ? 0 : number_text(f, num);
    if (g_format == LOG_FORMAT_JSON) {
        /* A field whose key (and number) does not fit is left out whole, so the line stays
         * JSON; a string value that does not fit is cut and marked. */
        size_t need = strlen(f->key) + 4 + (f->type == LOG_F_STR ? 2 : nlen);
        if (need > room_left(l))
            return;
        puts_(l, ",");
        put_json_string(l, f->key);
        puts_(l, ":");
        if (f->type == LOG_F_STR)
            put_json_string(l, f->s);
        else
            put(l, num, nlen);
    } else {
        puts_(l, " ");
        puts_(l, f->key);
        puts_(l, "=");
        if (f->type == LOG_F_STR)
            put_text_value(l, f->s);
        else
            put(l, num, nlen);
    }
}

static void end_line(struct line *l)
{
    if (g_format == LOG_FORMAT_JSON)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
}

/* ---- writing ---- */

static void write_all(const char *buf, size_t len)
{
    /* One write per line or batch: atomic on pipes under PIPE_BUF, never interleaved mid-line
     * on files opened O_APPEND. A failed log write has nowhere to be reported. */
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}

void log_flush(void)
{
    struct batch *b = &t_batch;
    if (b->len == 0)
        return;
    write_all(b->buf, b->len);
    b->len = 0;
}

void log_batch(bool on)
{
    if (!on)
        log_flush();
    t_batch.on = on;
}

static void emit(enum log_level level, const struct line *l)
{
    struct batch *b = &t_batch;
    if (!b->on) {
        write_all(l->buf, l->len);
        return;
    }
    if (b->len + l->len > sizeof(b->buf))
        log_flush();
    memcpy(b->buf + b->len, l->buf, l->len);
    b->len += l->len;
    /* Warnings and errors are not held back: an operator (or a crash) must not lose them. */
    if (level >= LOG_WARN)
        log_flush();
}

void log_fields(enum log_level level, const char *msg, const struct log_field *fields, size_t n)
{
    if (!log_enabled(level))
        return;
    struct line l;
    begin_line(&l, level, msg);
    for (size_t i = 0; i < n; i++)
        add_field(&l, &fields[i]);
    end_line(&l);
    emit(level, &l);
}

static void emit_kv(enum log_level level, const char *msg, va_list ap)
{
    struct line l;
    begin_line(&l, level, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        struct log_field f = LOG_STR(k, v);
        add_field(&l, &f);
    }
    end_line(&l);
    emit(level, &l);
}

void log_kv(enum log_level level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, msg);
    emit_kv(level, msg, ap);
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
    struct line l;
    begin_line(&l, level, msg);
    end_line(&l);
    emit(level, &l);
}
