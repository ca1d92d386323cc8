/*
 * util/jsonw: the escaper walks the input once, decoding UTF-8 just enough to tell a valid
 * sequence (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF) from bytes to
 * replace.
 */
#include "util/jsonw.h"

#include <string.h>

static const char hex[] = "0123456789abcdef";
static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 when s[0] starts none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* The escaped form of one character into esc; returns its length and how many input bytes it
 * stands for. */
static size_t escape_one(const unsigned char *s, size_t n, char esc[8], size_t *used)
{
    unsigned char c = s[0];
    *used = 1;
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
        esc[0] = (char)c;
        return 1;
    }
    if (c >= 0x80) {
        size_t len = utf8_len(s, n);
        if (len == 0) {
            memcpy(esc, replacement, 3);
            return 3;
        }
        memcpy(esc, s, len);
        *used = len;
        return len;
    }
    esc[0] = '\\';
    switch (c) {
    case '"': esc[1] = '"'; return 2;
    case '\\': esc[1] = '\\'; return 2;
    case '\n': esc[1] = 'n'; return 2;
    case '\r': esc[1] = 'r'; return 2;
    case '\t': esc[1] = 't'; return 2;
    case '\b': esc[1] = 'b'; return 2;
    case '\f': esc[1] = 'f'; return 2;
    default:
        memcpy(esc + 1, "u00", 3);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        return 6;
    }
}

size_t jsonw_string(char *out, size_t cap, const char *s, size_t n, const char *mark)
{
    const unsigned char *in = (const unsigned char *)s;
    size_t mlen = mark != NULL ? strlen(mark) : 0;
    if (cap < 2)
        return 0;
    if (cap < mlen + 2)
        mlen = 0; /* no room for the mark: cut without it */
    /* The common case, ids and paths: plain ASCII that fits whole. */
    size_t plain = 0;
    while (plain < n && in[plain] >= 0x20 && in[plain] < 0x80 && in[plain] != '"' &&
           in[plain] != '\\')
        plain++;
    if (plain == n && n + 2 <= cap) {
        out[0] = '"';
        memcpy(out + 1, s, n);
        out[n + 1] = '"';
        return n + 2;
    }
    /* cut_at: where the text would end if it had to be cut here (mark and quote still fit). */
    size_t o = 1, i = 0, cut_at = 1;
    out[0] = '"';
    while (i < n) {
        char esc[8];
        size_t used, elen;
        if (in[i] >= 0x20 && in[i] < 0x80 && in[i] != '"' && in[i] != '\\') {
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

/* A whole string or an overflow: written with a mark that cannot occur in escaped output, so a
 * value that had to be cut is detected, never sent cut. */
static void put_string(struct jsonw *w, const char *v)
{
    if (w->overflow || w->cap - w->len < 3) { /* room for "" and the mark */
        w->overflow = true;
        return;
    }
    size_t n = jsonw_string(w->buf + w->len, w->cap - w->len, v, strlen(v), "\x01");
    if (n == 0 || memchr(w->buf + w->len, '\x01', n) != NULL) {
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
