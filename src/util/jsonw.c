/*
 * util/jsonw: the escaper walks the input once, decoding UTF-8 (util/utf8) just enough to tell
 * a valid sequence from bytes to replace and a control character from one to pass on.
 */
#include "util/jsonw.h"

#include <string.h>

#include "util/utf8.h"

static const char hex[] = "0123456789abcdef";
static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

/* The escaped form of one character into esc; returns its length and how many input bytes it
 * stands for. */
static size_t escape_one(const unsigned char *s, size_t n, char esc[8], size_t *used)
{
    unsigned char c = s[0];
    *used = 1;
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
        esc[0] = (char)c;
        return 1;
    }
    uint32_t cp = c;
    if (c >= 0x80) {
        size_t len = utf8_char_len(s, n);
        if (len == 0) {
            memcpy(esc, replacement, 3);
            return 3;
        }
        *used = len;
        cp = utf8_decode(s, len);
        if (!utf8_is_control(cp)) {
            memcpy(esc, s, len);
            return len;
        }
        /* C1 controls and U+2028/U+2029: escaped, so that no terminal acts on them and no
         * line reader splits a line there (JSON allows escaping any character). */
    }
    esc[0] = '\\';
    switch (cp) {
    case '"': esc[1] = '"'; return 2;
    case '\\': esc[1] = '\\'; return 2;
    case '\n': esc[1] = 'n'; return 2;
    case '\r': esc[1] = 'r'; return 2;
    case '\t': esc[1] = 't'; return 2;
    case '\b': esc[1] = 'b'; return 2;
    case '\f': esc[1] = 'f'; return 2;
    default:
        esc[1] = 'u';
        esc[2] = hex[cp >> 12 & 15];
        esc[3] = hex[cp >> 8 & 15];
        esc[4] = hex[cp >> 4 & 15];
        esc[5] = hex[cp & 15];
        return 6;
    }
}

static bool plain_byte(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

size_t jsonw_string(char *out, size_t cap, const char *s, size_t n, const char *mark, bool *cut)
{
    const unsigned char *in = (const unsigned char *)s;
    size_t mlen = mark != NULL ? strlen(mark) : 0;
    if (cut != NULL)
        *cut = false;
    if (cap < 2) {
        if (cut != NULL)
            *cut = true;
        return 0;
    }
    if (cap < mlen + 2)
        mlen = 0; /* no room for the mark: cut without it */
    /* The common case, ids and paths: plain ASCII that fits whole. */
    size_t plain = 0;
    while (plain < n && plain_byte(in[plain]))
        plain++;
    if (plain == n && n + 2 <= cap) {
        out[0] = '"';
        memcpy(out + 1, s, n);
        out[n + 1] = '"';
        return n + 2;
    }
    /* cut_at: where the text would end if it had to be cut here (mark and quote still fit).
     * Whole characters and whole escapes only: a cut never splits either. */
    size_t o = 1, i = 0, cut_at = 1;
    out[0] = '"';
    while (i < n) {
        char esc[8];
        size_t used, elen;
        if (plain_byte(in[i])) {
            esc[0] = (char)in[i];
            elen = used = 1;
        } else {
            elen = escape_one(in + i, n - i, esc, &used);
        }
        if (o + elen + 1 > cap) {
            o = cut_at;
            if (mlen > 0)
                memcpy(out + o, mark, mlen);
            o += mlen;
            if (cut != NULL)
                *cut = true;
            break;
        }
        memcpy(out + o, esc, elen);
        o += elen;
        i += used;
        if (o + mlen + 1 <= cap)
            cut_at = o;
    }
    out[o++] = '"';
    return o;
}

size_t jsonw_string_len(const char *s, size_t n, size_t limit)
{
    const unsigned char *in = (const unsigned char *)s;
    size_t o = 2, i = 0;
    while (i < n && o < limit) {
        if (plain_byte(in[i])) {
            o++;
            i++;
            continue;
        }
        char esc[8];
        size_t used;
        o += escape_one(in + i, n - i, esc, &used);
        i += used;
    }
    return o < limit ? o : limit;
}

size_t jsonw_int(char *out, long long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    size_t o = 0;
    if (v < 0)
        out[o++] = '-';
    while (n > 0)
        out[o++] = tmp[--n];
    return o;
}

/* ---- objects ---- */

static void put(struct jsonw *w, const char *s, size_t n)
{
    if (w->overflow || w->len + n > w->cap) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

/* A whole string or an overflow: a value that had to be cut is detected, never sent cut. */
static void put_string(struct jsonw *w, const char *v)
{
    bool cut;
    size_t n =
        w->overflow ? 0 : jsonw_string(w->buf + w->len, w->cap - w->len, v, strlen(v), NULL, &cut);
    if (n == 0 || cut) {
        w->overflow = true;
        return;
    }
    w->len += n;
}

static void key(struct jsonw *w, const char *k)
{
    if (!w->first)
        put(w, ",", 1);
    w->first = false;
    put_string(w, k);
    put(w, ":", 1);
}

void jsonw_begin(struct jsonw *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->first = true;
    w->overflow = false;
    put(w, "{", 1);
}

void jsonw_str(struct jsonw *w, const char *k, const char *value)
{
    key(w, k);
    put_string(w, value);
}

void jsonw_num(struct jsonw *w, const char *k, long long value)
{
    char tmp[24];
    key(w, k);
    put(w, tmp, jsonw_int(tmp, value));
}

void jsonw_bool(struct jsonw *w, const char *k, bool value)
{
    key(w, k);
    put(w, value ? "true" : "false", value ? 4 : 5);
}

size_t jsonw_end(struct jsonw *w)
{
    put(w, "}", 1);
    return w->overflow ? 0 : w->len;
}
