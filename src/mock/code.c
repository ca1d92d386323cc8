#include "mock/code.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Reads a decimal number (optionally negative) from s; returns the end or NULL. */
static const char *number(const char *s, const char *end, bool allow_neg, long *out)
{
    const char *p = s;
    bool neg = false;
    if (allow_neg && p < end && *p == '-') {
        neg = true;
        p++;
    }
    long v = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9' && p - digits < 9)
        v = v * 10 + (*p++ - '0');
    if (p == digits)
        return NULL;
    *out = neg ? -v : v;
    return p;
}

static bool parse_directive(const char *s, const char *end, struct mock_directive *d)
{
    static const struct {
        const char *name;
        enum mock_kind kind;
        bool has_value, neg;
    } names[] = {
        {"busy", MOCK_ERR, true, false},           {"err", MOCK_ERR, true, true},
        {"delay", MOCK_DELAY, true, false},        {"http", MOCK_HTTP, true, false},
        {"html", MOCK_HTML, false, false},         {"reset", MOCK_RESET, false, false},
        {"hang", MOCK_HANG, false, false},         {"wrongapp", MOCK_WRONGAPP, false, false},
        {"ccnumber", MOCK_CCNUMBER, false, false},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = strlen(names[i].name);
        if ((size_t)(end - s) < n || memcmp(s, names[i].name, n) != 0)
            continue;
        const char *p = s + n;
        *d = (struct mock_directive){.kind = names[i].kind};
        if (names[i].has_value) {
            p = number(p, end, names[i].neg, &d->value);
            if (p == NULL)
                continue;
        }
        if (strcmp(names[i].name, "busy") == 0) { /* busyN = err-1xN */
            d->count = d->value;
            d->value = -1;
            if (d->count == 0)
                continue;
        }
        if (p < end && *p == 'x') {
            p = number(p + 1, end, false, &d->count);
            if (p == NULL || d->count == 0)
                continue;
        }
        if (p == end)
            return true;
    }
    return false;
}

/* A WeChat appid: "wx" and 16 lowercase hex digits. */
static bool is_appid(const char *s, const char *end)
{
    if (end - s != MOCK_APPID_LEN || s[0] != 'w' || s[1] != 'x')
        return false;
    for (const char *p = s + 2; p < end; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int mock_code_parse(const char *code, struct mock_code *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = code;
    for (;;) {
        const char *us = strchr(p, '_');
        if (us == NULL)
            break;
        if (out->app[0] == '\0' && is_appid(p, us)) {
            memcpy(out->app, p, MOCK_APPID_LEN);
            out->app[MOCK_APPID_LEN] = '\0';
        } else if (out->nd == MOCK_MAX_DIRECTIVES || !parse_directive(p, us, &out->d[out->nd])) {
            break;
        } else {
            out->nd++;
        }
        p = us + 1;
    }
    size_t n = strcspn(p, "-");
    if (n == 0 || n > MOCK_USER_MAX)
        return -1;
    memcpy(out->user, p, n);
    out->user[n] = '\0';
    return 0;
}

int mock_directives_parse(const char *s, struct mock_code *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = s;
    while (*p != '\0') {
        const char *us = strchr(p, '_');
        const char *end = us != NULL ? us : p + strlen(p);
        if (out->nd == MOCK_MAX_DIRECTIVES || !parse_directive(p, end, &out->d[out->nd]))
            return -1;
        out->nd++;
        if (us == NULL)
            break;
        p = us + 1;
        if (*p == '\0')
            return -1; /* a trailing "_" */
    }
    return 0;
}

bool mock_directive_applies(const struct mock_directive *d, long n)
{
    return d->count == 0 || n <= d->count;
}
