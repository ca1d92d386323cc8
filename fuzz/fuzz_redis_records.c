/*
 * The records wxlogin reads back from a shared Redis, as store/redis.c turns replies into the
 * store's answers: sessions, users (their sealed keys), the access-token share, a user's
 * record (ban and sessions), revocations and code claims.
 *
 * The driver includes store/redis.c to call its static deliver_* functions with a fake
 * operation whose callbacks record what was delivered. The input's first byte picks the
 * record (s session, u user, t token, i info, r revoke, c claim); the rest is a reply in a
 * RESP without lengths, so mutations keep it well formed and the corpus stays readable:
 *   $text\n  string (any bytes but \n)    :123\n  integer    _  nil
 *   -text\n  error    +text\n  status      *N\n  array of the N replies that follow
 *   =N,W\n   N more copies of the W array elements before it (W 1 when left out): a user
 *            with many sessions
 */
#include "store/redis.c"

#include "exchange/exchange.h"
#include "fuzz.h"
#include "token/token.h"
#include "wechat/api.h"

#define DEPTH_MAX 4
#define ELEMENTS_MAX 400

static const uint8_t master_key[CRYPTO_KEY_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

struct cursor {
    const uint8_t *p, *end;
};

static void reply_free(redisReply *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->elements; i++)
        reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* The bytes up to \n (consumed), or false at the end of the input. */
static bool line(struct cursor *c, const uint8_t **s, size_t *n)
{
    const uint8_t *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
    if (nl == NULL)
        return false;
    *s = c->p;
    *n = (size_t)(nl - c->p);
    c->p = nl + 1;
    return true;
}

static long long number(const uint8_t *s, size_t n)
{
    char b[24];
    if (n >= sizeof(b))
        n = sizeof(b) - 1;
    memcpy(b, s, n);
    b[n] = '\0';
    return strtoll(b, NULL, 10);
}

static redisReply *copy_reply(const redisReply *r);

static redisReply *text_reply(int type, const void *s, size_t n)
{
    redisReply *r = calloc(1, sizeof(*r));
    char *str = malloc(n + 1);
    if (r == NULL || str == NULL) {
        free(r);
        free(str);
        return NULL;
    }
    memcpy(str, s, n);
    str[n] = '\0'; /* as hiredis leaves them */
    r->type = type;
    r->str = str;
    r->len = n;
    return r;
}

static redisReply *copy_reply(const redisReply *r)
{
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_ERROR ||
        r->type == REDIS_REPLY_STATUS)
        return text_reply(r->type, r->str, r->len);
    redisReply *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->type = r->type;
    c->integer = r->integer;
    if (r->elements > 0) {
        c->element = calloc(r->elements, sizeof(*c->element));
        if (c->element == NULL) {
            free(c);
            return NULL;
        }
        for (; c->elements < r->elements; c->elements++) {
            c->element[c->elements] = copy_reply(r->element[c->elements]);
            if (c->element[c->elements] == NULL) {
                reply_free(c);
                return NULL;
            }
        }
    }
    return c;
}

/* One reply from the input, or NULL when the input is not one. */
static redisReply *decode(struct cursor *c, int depth)
{
    if (c->p == c->end)
        return NULL;
    uint8_t tag = *c->p++;
    const uint8_t *s;
    size_t n;
    redisReply *r;
    switch (tag) {
    case '$': return line(c, &s, &n) ? text_reply(REDIS_REPLY_STRING, s, n) : NULL;
    case '-': return line(c, &s, &n) ? text_reply(REDIS_REPLY_ERROR, s, n) : NULL;
    case '+': return line(c, &s, &n) ? text_reply(REDIS_REPLY_STATUS, s, n) : NULL;
    case '_':
        r = calloc(1, sizeof(*r));
        if (r != NULL)
            r->type = REDIS_REPLY_NIL;
        return r;
    case ':':
        if (!line(c, &s, &n))
            return NULL;
        r = calloc(1, sizeof(*r));
        if (r != NULL) {
            r->type = REDIS_REPLY_INTEGER;
            r->integer = number(s, n);
        }
        return r;
    case '*': break;
    default: return NULL;
    }
    long long want;
    if (depth == DEPTH_MAX || !line(c, &s, &n) || (want = number(s, n)) < 0 || want > ELEMENTS_MAX)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->type = REDIS_REPLY_ARRAY;
    r->element = calloc((size_t)want + 1, sizeof(*r->element));
    if (r->element == NULL)
        goto bad;
    while (r->elements < (size_t)want) {
        if (c->p < c->end && *c->p == '=') { /* copies of the elements before */
            c->p++;
            if (!line(c, &s, &n))
                goto bad;
            const uint8_t *comma = memchr(s, ',', n);
            long long k = number(s, n),
                      w = comma != NULL ? number(comma + 1, (size_t)(s + n - comma - 1)) : 1;
            size_t have = r->elements;
            if (k < 0 || w < 1 || (size_t)w > have || k > (want - (long long)have) / w)
                goto bad;
            for (size_t i = 0; i < (size_t)(k * w); i++) {
                r->element[r->elements] = copy_reply(r->element[have - (size_t)w + i % (size_t)w]);
                if (r->element[r->elements] == NULL)
                    goto bad;
                r->elements++;
            }
            continue;
        }
        r->element[r->elements] = decode(c, depth + 1);
        if (r->element[r->elements] == NULL)
            goto bad;
        r->elements++;
    }
    return r;
bad:
    reply_free(r);
    return NULL;
}

/* ---- what was delivered, and the properties it must have ---- */

static int calls;
static const redisReply *reply;
static struct token *share;

/* A NUL-terminated text of at most max bytes. */
static bool bounded(const char *s, size_t max)
{
    return memchr(s, '\0', max + 1) != NULL;
}

/* An id fit for a response header: 1 to STORE_ID_MAX printable ASCII characters, no space. */
static bool header_safe_id(const char *s)
{
    if (!bounded(s, STORE_ID_MAX) || s[0] == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s <= ' ' || *s >= 0x7f)
            return false;
    return true;
}

/* What was delivered is the element's text exactly, not a part of it or a stand-in (nil: ""). */
static bool is_element(const char *s, const redisReply *e)
{
    if (e->type == REDIS_REPLY_NIL)
        return s[0] == '\0';
    return e->type == REDIS_REPLY_STRING && strlen(s) == e->len && memcmp(s, e->str, e->len) == 0;
}

static void on_session(void *arg, int status, const struct store_session *s)
{
    (void)arg;
    calls++;
    FUZZ_CHECK(status == STORE_OK || status == STORE_NOT_FOUND || status == STORE_ERROR);
    FUZZ_CHECK((status == STORE_OK) == (s != NULL));
    if (s == NULL)
        return;
    FUZZ_CHECK(header_safe_id(s->appid) && header_safe_id(s->openid));
    FUZZ_CHECK(s->unionid[0] == '\0' || header_safe_id(s->unionid));
    FUZZ_CHECK(is_element(s->openid, reply->element[0]));
    FUZZ_CHECK(is_element(s->unionid, reply->element[2]));
    FUZZ_CHECK(reply->elements == 3 ? strcmp(s->appid, "wxapp") == 0
                                    : is_element(s->appid, reply->element[3]));
}

static void on_user(void *arg, int status, const struct store_user *u)
{
    (void)arg;
    calls++;
    FUZZ_CHECK(status == STORE_OK || status == STORE_NOT_FOUND || status == STORE_ERROR);
    FUZZ_CHECK((status == STORE_OK) == (u != NULL));
    if (u == NULL)
        return;
    FUZZ_CHECK(strcmp(u->appid, "wxapp") == 0 && strcmp(u->openid, "oUser") == 0);
    FUZZ_CHECK(u->unionid[0] == '\0' || header_safe_id(u->unionid));
    FUZZ_CHECK(u->unionid[0] == '\0' || is_element(u->unionid, reply->element[0]));
    FUZZ_CHECK(bounded(u->session_key, STORE_KEY_MAX) && u->session_key[0] != '\0');
    FUZZ_CHECK(bounded(u->prev_session_key, STORE_KEY_MAX));
}

static void on_token(void *arg, int status, const char *token, int64_t expires_at)
{
    (void)arg;
    (void)expires_at;
    calls++;
    FUZZ_CHECK(status == STORE_OK || status == STORE_ERROR);
    FUZZ_CHECK(token != NULL && bounded(token, STORE_TOKEN_MAX));
    if (token[0] == '\0')
        return;
    FUZZ_CHECK(status == STORE_OK && is_element(token, reply->element[0]));
    /* The share's gate: a token handed on to WeChat and to the admin route's clients is one
     * WeChat could have issued. */
    if (token_usable(share, token, 1000, 0))
        FUZZ_CHECK(wechat_token_valid(token, strlen(token)));
}

static void on_info(void *arg, int status, const struct store_user_info *u)
{
    (void)arg;
    calls++;
    FUZZ_CHECK(status == STORE_OK || status == STORE_NOT_FOUND || status == STORE_ERROR);
    FUZZ_CHECK((status == STORE_OK) == (u != NULL));
    if (u == NULL)
        return;
    FUZZ_CHECK(u->known || u->banned);
    FUZZ_CHECK(u->unionid[0] == '\0' || header_safe_id(u->unionid));
    FUZZ_CHECK(bounded(u->ban_reason, STORE_REASON_MAX));
    FUZZ_CHECK(u->banned == (u->ban_reason[0] != '\0'));
    FUZZ_CHECK(u->nsessions <= STORE_SESSIONS_MAX);
    FUZZ_CHECK(!u->more_sessions || u->nsessions == STORE_SESSIONS_MAX);
    for (size_t i = 0; i < u->nsessions; i++) {
        FUZZ_CHECK(bounded(u->sessions[i].client, STORE_CLIENT_MAX));
        FUZZ_CHECK(bounded(u->sessions[i].user_agent, STORE_UA_MAX));
    }
}

static void on_revoke(void *arg, int status, const struct store_revoked *rv)
{
    (void)arg;
    calls++;
    FUZZ_CHECK(status == STORE_OK || status == STORE_NOT_FOUND || status == STORE_ERROR);
    FUZZ_CHECK((status == STORE_OK) == (rv != NULL));
    FUZZ_CHECK(rv == NULL || rv->nhashes <= STORE_REVOKED_MAX);
}

static void on_claim(void *arg, int status, enum store_claim claim, const char *outcome, size_t len)
{
    (void)arg;
    calls++;
    FUZZ_CHECK(status == STORE_OK || status == STORE_ERROR);
    FUZZ_CHECK(claim == STORE_CLAIM_MINE || claim == STORE_CLAIM_BUSY ||
               claim == STORE_CLAIM_KNOWN);
    FUZZ_CHECK((claim == STORE_CLAIM_KNOWN) == (outcome != NULL));
    if (outcome == NULL)
        return;
    FUZZ_CHECK(status == STORE_OK && len > 0 &&
               strncmp(outcome, CLAIM_PREFIX, sizeof(CLAIM_PREFIX) - 1) != 0);
    /* What the exchange does with it next (fuzzed on its own by fuzz_exchange_outcome). */
    struct exchange_outcome o;
    (void)exchange_outcome_decode(outcome, len, &o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (share == NULL)
        share = token_new();
    struct cursor c = {data + 1, data + size};
    redisReply *r = decode(&c, 0);
    if (r == NULL)
        return 0;
    struct rd_shared sh = {.master_key = master_key};
    struct rd_store st = {.sh = &sh};
    struct rop op = {.st = &st};
    snprintf(op.appid, sizeof(op.appid), "wxapp");
    snprintf(op.openid, sizeof(op.openid), "oUser");
    reply = r;
    calls = 0;
    switch (data[0]) {
    case 's': op.fn.session = on_session, deliver_session(&op, r); break;
    case 'u': op.fn.user = on_user, deliver_user(&op, r); break;
    case 't': op.fn.token = on_token, deliver_token(&op, r); break;
    case 'i': op.fn.info = on_info, deliver_info(&op, r); break;
    case 'r': op.fn.revoke = on_revoke, deliver_revoke(&op, r); break;
    case 'c': op.fn.claim = on_claim, deliver_claim(&op, r); break;
    default: calls = 1; break;
    }
    FUZZ_CHECK(calls == 1); /* exactly one answer per reply */
    reply_free(r);
    return 0;
}
