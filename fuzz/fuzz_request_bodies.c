/*
 * The request bodies other than login's (handlers/request_body.h): the first byte picks the
 * body — 'd' /v1/decrypt, 's' /v1/check-signature, 't' the access-token invalidation, 'b' a
 * ban, 'l' /v1/logout, 'r' /v1/refresh (any other byte, its value modulo 6) — the second the
 * jansson allocation that fails counted from '0' ('0' or below: none; '3' the third), and the
 * rest is the body. The body is parsed without a failure first, then with that one.
 */
#include <errno.h>
#include <jansson.h>

#include "crypto/crypto.h"
#include "fuzz.h"
#include "handlers/request_body.h"
#include "util/utf8.h"
#include "wechat/api.h"

#define NOW 1700000000 /* the ban's clock */

static size_t fail_at, allocs; /* the allocation that fails (0: none), allocations so far */

static void *failing_malloc(size_t n)
{
    return ++allocs == fail_at ? NULL : malloc(n);
}

static const char *const decrypt_fields[] = {"encryptedData", "iv", NULL};
static const char *const signature_fields[] = {"rawData", "signature", NULL};
static const char *const token_fields[] = {"access_token", NULL};

/* What one parse gave: enough to compare two runs over the same body. */
struct result {
    int rc;
    char why[REQUEST_BODY_WHY_MAX];
    char fields[REQUEST_BODY_FIELDS_MAX][64]; /* a hash of each accepted field, in hex */
    char reason[STORE_REASON_MAX + 1];
    int64_t until;
    bool all;
};

static bool fixed_message(const char *why, const char *const *names)
{
    static const char *const fixed[] = {
        "out of memory",
        "body is not valid JSON",
        "body must be a JSON object",
        "the body must be a JSON object",
        "the body must be empty or a JSON object",
        "iv must be 16 bytes in base64",
        "encryptedData must not be empty",
        "encryptedData is not base64",
        "encryptedData must be a non-empty multiple of 16 bytes",
        "access_token must be 1 to 512 characters",
        "reason must be text of 1 to 256 bytes, without control characters",
        "until, when given, must be a time in the future (unix seconds)",
        "\"all\" must be true or false",
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (strcmp(why, fixed[i]) == 0)
            return true;
    char m[REQUEST_BODY_WHY_MAX];
    for (size_t i = 0; names != NULL && names[i] != NULL; i++) {
        snprintf(m, sizeof(m), "%s is required and must be a string", names[i]);
        if (strcmp(why, m) == 0)
            return true;
    }
    return false;
}

/* A refusal by the JSON reader, which an allocation failing inside jansson can also give. */
static bool json_reader_message(const char *why)
{
    return strcmp(why, "body is not valid JSON") == 0 ||
           strcmp(why, "the body must be a JSON object") == 0 ||
           strcmp(why, "the body must be empty or a JSON object") == 0;
}

/* The string fields: each accepted one is its JSON string whole, a C string of that length. */
static void fields(const char *body, size_t len, const char *const *names, char kind,
                   struct result *r)
{
    json_t *root;
    const char *vals[REQUEST_BODY_FIELDS_MAX];
    r->rc = request_body_fields(body, len, names, &root, vals, r->why);
    if (r->rc != 0)
        return;
    for (size_t i = 0; names[i] != NULL; i++) {
        const json_t *v = json_object_get(root, names[i]);
        FUZZ_CHECK(json_is_string(v) && json_string_value(v) == vals[i]);
        FUZZ_CHECK(strlen(vals[i]) == json_string_length(v));
        uint8_t h[CRYPTO_HASH_LEN];
        crypto_sha256(vals[i], strlen(vals[i]), h);
        for (size_t k = 0; k < 16; k++)
            snprintf(r->fields[i] + 2 * k, 3, "%02x", h[k]);
    }
    const char *why = NULL;
    if (kind == 'd') {
        r->rc = request_body_decrypt_check(vals[0], vals[1], &why);
        if (r->rc == 0) {
            uint8_t iv[24], *ct = malloc(strlen(vals[0]) / 4 * 3 + 3);
            FUZZ_CHECK(strlen(vals[1]) == 24 && crypto_b64_decode_lenient(vals[1], 24, iv) == 16);
            int n = crypto_b64_decode_lenient(vals[0], strlen(vals[0]), ct);
            FUZZ_CHECK(n > 0 && n % 16 == 0);
            free(ct);
        }
    } else if (kind == 't') {
        r->rc = request_body_access_token_check(vals[0], &why);
        if (r->rc == 0)
            FUZZ_CHECK(strlen(vals[0]) >= 1 && strlen(vals[0]) <= WECHAT_TOKEN_MAX);
    }
    if (why != NULL)
        snprintf(r->why, sizeof(r->why), "%s", why);
    json_decref(root);
}

static void parse(char kind, const char *body, size_t len, struct result *r)
{
    memset(r, 0, sizeof(*r));
    const char *why = NULL;
    json_t *j = NULL;
    switch (kind) {
    case 'd': return fields(body, len, decrypt_fields, kind, r);
    case 's': return fields(body, len, signature_fields, kind, r);
    case 't': return fields(body, len, token_fields, kind, r);
    case 'b':
        r->rc = request_body_ban(body, len, NOW, r->reason, &r->until, &why);
        if (r->rc == 0) {
            size_t n = strlen(r->reason);
            FUZZ_CHECK(n >= 1 && n <= STORE_REASON_MAX && utf8_text_ok(r->reason, n));
            FUZZ_CHECK(r->until == 0 || r->until > NOW);
        }
        break;
    case 'l': r->rc = request_body_logout(body, len, &r->all, &why); break;
    default:
        r->rc = request_body_object(body, len, true, &j, &why);
        if (r->rc == 0)
            FUZZ_CHECK(j == NULL ? len == 0 : json_is_object(j));
        json_decref(j);
        break;
    }
    if (why != NULL)
        snprintf(r->why, sizeof(r->why), "%s", why);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char kinds[] = "dstblr";
    if (size < 2)
        return 0;
    char kind =
        strchr(kinds, data[0]) != NULL && data[0] != '\0' ? (char)data[0] : kinds[data[0] % 6];
    const char *const *names = kind == 'd'   ? decrypt_fields
                               : kind == 's' ? signature_fields
                               : kind == 't' ? token_fields
                                             : NULL;
    const char *body = (const char *)data + 2;
    size_t len = size - 2;

    json_set_alloc_funcs(failing_malloc, free);
    struct result ok, oom;
    fail_at = 0;
    allocs = 0;
    parse(kind, body, len, &ok);
    /* Memory never runs out here: every refusal is the body's, in one of the fixed words. */
    FUZZ_CHECK(ok.rc == 0 || ok.rc == -1);
    if (ok.rc != 0)
        FUZZ_CHECK(ok.why[0] != '\0' && fixed_message(ok.why, names));
    size_t nth = data[1] > '0' ? (size_t)(data[1] - '0') : 0;
    /* Off unless FUZZ_JANSSON_OOM is set: the system's jansson 2.14 aborts on assert(0) in
     * lex_scan_string when an allocation fails there (fuzz/README.md). */
    if (getenv("FUZZ_JANSSON_OOM") != NULL && nth > 0 && nth <= allocs) {
        /* One allocation fails: the answer is the same, or "out of memory" — never a bad body
         * accepted, nor other fields. jansson 2.14 reports most failures inside json_loadb as
         * syntax errors (json_error_unknown or invalid_syntax, not out_of_memory: fuzz/README.md),
         * so a good body may still be refused, but only by the JSON reader's own words. */
        fail_at = nth;
        allocs = 0;
        parse(kind, body, len, &oom);
        if (oom.rc == -ENOMEM)
            FUZZ_CHECK(strcmp(oom.why, "out of memory") == 0);
        else if (memcmp(&ok, &oom, sizeof(ok)) != 0)
            FUZZ_CHECK(oom.rc == -1 && json_reader_message(oom.why));
    }
    fail_at = 0;
    allocs = 0;
    json_set_alloc_funcs(malloc, free);
    return 0;
}
