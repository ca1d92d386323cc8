/*
 * log: lines are formatted into a stack buffer with util/jsonw's escaper; the timestamp's
 * seconds part is formatted once per second per thread.
 *
 * A line never grows past its buffer and never stops being what it is (a JSON object, or one
 * text line free of control characters): a value that does not fit is cut between whole
 * characters and whole escapes and ends with "…", a field that does not fit at all is left out,
 * and either way the line ends with "truncated":true (text: truncated=true), for which room is
 * always kept. So that one long value cannot crowd out the fields after it (the access line's
 * status and request id after a long path), each value leaves room for the fields that follow
 * it, up to FIELD_RESERVE bytes each.
 */
#include "log/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/jsonw.h"
#include "util/utf8.h"

#define LOG_LINE_MAX 4096
#define BATCH_MAX 4096    /* PIPE_BUF: one write of at most this much is atomic on a pipe */
#define LOG_KV_MAX 32     /* pairs in one log_kv line */
#define FIELD_RESERVE 128 /* room a value leaves for each field after it */

/* Atomic: a reload (SIGHUP) changes it on the main thread while workers log. */
static _Atomic int g_level = LOG_INFO;
static enum log_format g_format = LOG_FORMAT_JSON;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char cut_mark[] = "\xe2\x80\xa6"; /* "…" */
static const char truncated_json[] = ",\"truncated\":true";
static const char truncated_text[] = " truncated=true";

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
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
    g_format = format;
}

void log_set_level(enum log_level level)
{
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < sizeof(level_names) / sizeof(level_names[0]) ? level_names[level]
                                                                          : "?";
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
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
    bool cut; /* a value was cut or a field left out */
};

/* Bytes kept back for the end of a line: the truncation flag, then "}" and the newline (JSON)
 * or the newline (text). */
static size_t tail_len(void)
{
    return g_format == LOG_FORMAT_JSON ? sizeof(truncated_json) - 1 + 2
                                       : sizeof(truncated_text) - 1 + 1;
}

static size_t room_left(const struct line *l)
{
    return sizeof(l->buf) - tail_len() - l->len;
}

/* Appends raw bytes the caller made sure fit (ASCII: a cut would split nothing). */
static void put(struct line *l, const char *s, size_t n)
{
    size_t room = room_left(l);
    if (n > room) {
        n = room;
        l->cut = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* A JSON string of at most cap bytes: cut (between whole characters, marked) when longer. */
static void put_json_string(struct line *l, const char *s, size_t n, size_t cap)
{
    bool cut;
    if (cap > room_left(l))
        cap = room_left(l);
    l->len += jsonw_string(l->buf + l->len, cap, s, n, cut_mark, &cut);
    l->cut |= cut;
}

/*
 * True when the text format can show s as it is: valid UTF-8 without control characters
 * (util/utf8: C0, DEL, C1, U+2028/U+2029; ESC and BS must never reach a terminal) and, for a
 * value, not empty and without what would make `key=value` ambiguous. Anything else is
 * written as a quoted, escaped JSON string.
 */
static bool text_plain(const char *s, size_t n, bool value)
{
    if (value && (n == 0 || strpbrk(s, " \"=\\") != NULL))
        return false;
    return utf8_text_ok(s, n);
}

/* Plain text of at most cap bytes: cut before a whole character and marked when longer. */
static void put_text_plain(struct line *l, const char *s, size_t n, size_t cap)
{
    if (cap > room_left(l))
        cap = room_left(l);
    if (n <= cap) {
        put(l, s, n);
        return;
    }
    size_t mlen = sizeof(cut_mark) - 1;
    if (cap < mlen)
        mlen = 0;
    size_t keep = cap - mlen;
    while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80)
        keep--; /* s is valid UTF-8: back to the start of the character cut in two */
    memcpy(l->buf + l->len, s, keep);
    memcpy(l->buf + l->len + keep, cut_mark, mlen);
    l->len += keep + mlen;
    l->cut = true;
}

/* A string value (or the message) of at most cap bytes, in the line's format. */
static void put_string(struct line *l, const char *s, size_t cap, bool value)
{
    size_t n = strlen(s);
    if (g_format == LOG_FORMAT_TEXT && text_plain(s, n, value))
        put_text_plain(l, s, n, cap);
    else
        put_json_string(l, s, n, cap);
}

/* The bytes s takes written whole as a value (or the message), or limit if that is more. */
static size_t string_size(const char *s, size_t limit, bool value)
{
    size_t n = strlen(s);
    if (g_format == LOG_FORMAT_TEXT && text_plain(s, n, value))
        return n < limit ? n : limit;
    return jsonw_string_len(s, n, limit);
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

/* Formats a number field's value into out; returns its length. */
static size_t number_text(const struct log_field *f, char out[32])
{
    if (f->type == LOG_F_INT)
        return jsonw_int(out, f->i);
    if (f->type == LOG_F_BOOL) {
        size_t n = f->i != 0 ? 4 : 5;
        memcpy(out, f->i != 0 ? "true" : "false", n);
        return n;
    }
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

/* `,"key":` or ` key=`: its size. */
static size_t key_size(const char *key)
{
    size_t n = strlen(key);
    return 2 + (g_format == LOG_FORMAT_JSON ? jsonw_string_len(key, n, SIZE_MAX) : n);
}

/* The room a field after the one being written is sure to get: its size, up to
 * FIELD_RESERVE. */
static size_t field_reserve(const struct log_field *f)
{
    if (f->type == LOG_F_STR && f->s == NULL)
        return 0;
    size_t k = key_size(f->key);
    if (k >= FIELD_RESERVE)
        return FIELD_RESERVE;
    if (f->type != LOG_F_STR) {
        char num[32];
        size_t n = k + number_text(f, num);
        return n < FIELD_RESERVE ? n : FIELD_RESERVE;
    }
    return k + string_size(f->s, FIELD_RESERVE - k, true);
}

/* The room a value may take: what is left after `reserve` for the fields after it, but at least
 * enough for a cut value ("…", quoted or not), when the line has that much. */
static size_t value_cap(const struct line *l, size_t reserve)
{
    size_t room = room_left(l);
    size_t least = 2 + sizeof(cut_mark) - 1;
    if (least > room)
        least = room;
    return room > reserve && room - reserve > least ? room - reserve : least;
}

static void begin_line(struct line *l, enum log_level level, const char *msg, size_t reserve)
{
    l->len = 0;
    l->cut = false;
    if (g_format == LOG_FORMAT_JSON) {
        puts_(l, "{\"ts\":\"");
        put_time(l);
        puts_(l, "\",\"level\":\"");
        puts_(l, level_names[level]);
        puts_(l, "\",\"msg\":");
    } else {
        put_time(l);
        puts_(l, " ");
        puts_(l, level_names[level]);
        puts_(l, " ");
    }
    put_string(l, msg, value_cap(l, reserve), false);
}

static void add_field(struct line *l, const struct log_field *f, size_t reserve)
{
    if (f->type == LOG_F_STR && f->s == NULL)
        return;
    char num[32];
    size_t nlen = f->type == LOG_F_STR ? 0 : number_text(f, num);
    /* A field whose key and number (or the least of its string: "", or a plain text value of
     * one byte) do not fit is left out whole. */
    size_t need = key_size(f->key) + (f->type == LOG_F_STR ? string_size(f->s, 2, true) : nlen);
    if (need > room_left(l)) {
        l->cut = true;
        return;
    }
    if (g_format == LOG_FORMAT_JSON) {
        puts_(l, ",");
        put_json_string(l, f->key, strlen(f->key), SIZE_MAX);
        puts_(l, ":");
    } else {
        puts_(l, " ");
        puts_(l, f->key);
        puts_(l, "=");
    }
    if (f->type == LOG_F_STR)
        put_string(l, f->s, value_cap(l, reserve), true);
    else
        put(l, num, nlen);
}

static void end_line(struct line *l)
{
    /* room_left() always kept this much */
    if (l->cut) {
        const char *t = g_format == LOG_FORMAT_JSON ? truncated_json : truncated_text;
        size_t n = strlen(t);
        memcpy(l->buf + l->len, t, n);
        l->len += n;
    }
    if (g_format == LOG_FORMAT_JSON)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
}

/* The whole line: each part leaves room for the parts after it. */
static void format_line(struct line *l, enum log_level level, const char *msg,
                        const struct log_field *fields, size_t n, bool cut)
{
    size_t reserve[LOG_KV_MAX + 1]; /* reserve[i]: for the fields from i on */
    size_t nres = n < LOG_KV_MAX ? n : LOG_KV_MAX;
    reserve[nres] = 0;
    for (size_t i = nres; i > 0; i--)
        reserve[i - 1] = reserve[i] + field_reserve(&fields[i - 1]);
    begin_line(l, level, msg, reserve[0]);
    for (size_t i = 0; i < n; i++)
        add_field(l, &fields[i], i < nres ? reserve[i + 1] : 0);
    l->cut |= cut;
    end_line(l);
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
    format_line(&l, level, msg, fields, n, false);
    emit(level, &l);
}

void log_audit(const char *event, const char *client, const struct log_field *fields, size_t n)
{
    if (!log_enabled(LOG_INFO))
        return;
    struct log_field f[2 + LOG_AUDIT_FIELDS_MAX];
    size_t k = 0;
    f[k++] = LOG_STR("event", event);
    f[k++] = LOG_STR("client", client);
    bool more = n > LOG_AUDIT_FIELDS_MAX;
    for (size_t i = 0; i < n && i < LOG_AUDIT_FIELDS_MAX; i++)
        f[k++] = fields[i];
    struct line l;
    format_line(&l, LOG_INFO, "audit", f, k, more);
    emit(LOG_INFO, &l);
}

static void emit_kv(enum log_level level, const char *msg, va_list ap)
{
    struct log_field f[LOG_KV_MAX];
    size_t n = 0;
    bool more = false; /* pairs beyond LOG_KV_MAX: left out, and the line says so */
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (k == NULL)
            break;
        const char *v = va_arg(ap, const char *);
        if (n < LOG_KV_MAX)
            f[n++] = LOG_STR(k, v);
        else
            more = true;
    }
    struct line l;
    format_line(&l, level, msg, f, n, more);
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
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct line l;
    /* A message longer than msg was cut by vsnprintf (a character it split is written as
     * U+FFFD): the line says so. */
    format_line(&l, level, msg, NULL, 0, n >= (int)sizeof(msg));
    emit(level, &l);
}
