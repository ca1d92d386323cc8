/*
 * mock/code: the grammar of mock login and phone codes (docs/mock.md), parsed. Pure code.
 *
 *   code      := (segment "_")* user ["-" nonce]
 *   segment   := directive | appid
 *   directive := ("busy" N | "err" [-]N | "delay" N | "http" N | "html" | "reset" | "hang" |
 *                 "wrongapp" | "ccnumber")
 *                ["x" COUNT]
 *   appid     := "wx" 16 lowercase hex digits: the app the code was issued to
 *
 * The same directives, joined by "_" and without a user, are the token endpoints' faults
 * (mock_directives_parse).
 */
#ifndef WXLOGIN_MOCK_CODE_H
#define WXLOGIN_MOCK_CODE_H

#include <stdbool.h>
#include <stddef.h>

#define MOCK_MAX_DIRECTIVES 8
#define MOCK_USER_MAX 128
#define MOCK_APPID_LEN 18 /* "wx" and 16 hex digits */

enum mock_kind {
    MOCK_ERR,
    MOCK_DELAY,
    MOCK_HTTP,
    MOCK_HTML,
    MOCK_RESET,
    MOCK_HANG,
    MOCK_WRONGAPP, /* phone numbers: a watermark naming another app */
    MOCK_CCNUMBER, /* phone numbers: countryCode as the number 86 (WeChat's doc example) */
};

struct mock_directive {
    enum mock_kind kind;
    long value; /* errcode, ms or HTTP status */
    long count; /* applies to the first `count` requests; 0 = all */
};

struct mock_code {
    struct mock_directive d[MOCK_MAX_DIRECTIVES];
    size_t nd;
    char app[MOCK_APPID_LEN + 1]; /* the app the code names, "" when it names none */
    char user[MOCK_USER_MAX + 1];
};

/* Parses code. Segments that are not directives end the directive list: the rest is the user.
 * Returns 0, or -1 when the code is empty or its user part is. */
int mock_code_parse(const char *code, struct mock_code *out);

/* Parses a list of directives joined by "_" (no appid, no user): "" is none. Returns 0, or -1
 * when a segment is not a directive or there are more than MOCK_MAX_DIRECTIVES. */
int mock_directives_parse(const char *s, struct mock_code *out);

/* True when directive d applies to the n-th request (1-based) with its code. */
bool mock_directive_applies(const struct mock_directive *d, long n);

#endif
