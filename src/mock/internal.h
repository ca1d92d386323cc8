/*
 * mock/internal: what the mock's files share: its state and how a request is answered.
 * Not an API outside src/mock.
 */
#ifndef WXLOGIN_MOCK_INTERNAL_H
#define WXLOGIN_MOCK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/server.h"
#include "loop/loop.h"
#include "mock/code.h"
#include "mock/codeset.h"
#include "runtime/delay.h"

#define MOCK_MAX_APPS 16
#define MOCK_CODE_MAX 128
/* Real access tokens are 130 to 160 characters (WeChat says: reserve 512). */
#define MOCK_TOKEN_MIN 130
#define MOCK_TOKEN_MAX 160
/* "6949fe38-0627ff0d-47df91c7": the Unix time and two random words, in hex. */
#define MOCK_RID_LEN 26

/* The token endpoints, each with its own fault directives. */
enum mock_token_api { MOCK_STABLE, MOCK_CLASSIC, MOCK_TOKEN_APIS };

/* An app the mock knows, with its access tokens (guarded by mock.mu). */
struct mock_app {
    char *appid;
    char *secret;
    char stable[MOCK_TOKEN_MAX + 1]; /* current stable token, "" before the first */
    int64_t stable_exp;
    /* The one before, still valid until it expires: WeChat renews a stable token in the last
     * 5 minutes of its life and both work meanwhile. "" when none. */
    char stable_prev[MOCK_TOKEN_MAX + 1];
    int64_t stable_prev_exp;
    bool stable_bad;   /* invalidated: APIs answer 40001 to it */
    bool stable_stuck; /* and stable_token keeps handing it back */
    uint64_t last_force_ms;
    int64_t force_day; /* the day (Beijing time) force_count counts */
    int force_count;   /* force_refresh honoured that day */
    char classic[MOCK_TOKEN_MAX + 1];
    int64_t classic_exp;
    char classic_prev[MOCK_TOKEN_MAX + 1];
    int64_t classic_prev_until;
    /* POST /mock/token/fail: directives for each token endpoint, and the requests since set. */
    struct mock_code faults[MOCK_TOKEN_APIS];
    long fault_requests[MOCK_TOKEN_APIS];
};

enum mock_counter {
    MC_C2S,
    MC_C2S_EXCHANGES,
    MC_STABLE_TOKEN,
    MC_TOKEN,
    MC_PHONE,
    MC_CHECKSESSION,
    MC_RID,
    MC_COUNT
};

struct mock_rids; /* the errors answered, by rid (mock/rid.c) */

struct mock {
    struct mock_app apps[MOCK_MAX_APPS];
    size_t napps;
    const char *listen;
    const char *port_file; /* --port-file: NULL, or where the bound port is written */
    uint16_t port;
    int nworkers;
    long token_delay_ms;
    int64_t token_ttl_s;    /* lifetime of every access token (WeChat: 7200) */
    int64_t code_ttl_s;     /* lifetime of a code from its first use (WeChat: 300) */
    bool early_renewal;     /* stable_token renews in a token's last 5 minutes */
    long force_interval_ms; /* force_refresh honoured at most this often (WeChat: 30 s) */
    uint64_t start_ms;      /* loop clock at start: codes' first use is relative to it */

    pthread_mutex_t mu;         /* guards the codesets, the session-key ring and the apps' tokens */
    struct codeset *used;       /* spent login codes */
    struct codeset *used_phone; /* spent phone codes */
    struct codeset *attempts;   /* requests per code with directives */
    struct codeset *seen;       /* when each code was first used, in tenths of a second */

    /* Each user's latest session_key: users maps a user's hash to 1 + its ring slot. */
    struct codeset *users;
    struct mock_sk_slot {
        uint64_t owner;
        char sk[32];
    } * sk_ring;
    uint32_t sk_next;

    struct mock_rids *rids;

    atomic_ulong counters[MC_COUNT];
};

/* A request answered according to its directives, possibly after a delay. */
struct mock_pending;
typedef void mock_succeed_fn(struct mock_pending *p);

struct mock_pending {
    struct http_request *req;
    struct mock *m;
    struct delay delay;
    struct mock_app *app;
    const struct mock_directive *fail; /* into code; NULL = answer normally */
    bool wrongapp;
    bool ccnumber;
    bool force; /* stable_token: force_refresh */
    struct mock_code code;
    char code_text[MOCK_CODE_MAX + 1];
    mock_succeed_fn *succeed;
};

/* Answers code's request per its directives: a failure, or succeed(p) (maybe after a delay).
 * A code that is malformed, issued to another app or past its lifetime answers 40029. kind
 * tells login codes from phone codes ("login", "phone"): each has its own first use. */
void mock_run_coded(struct mock *m, struct http_request *req, struct mock_app *app,
                    const char *kind, const char *code, mock_succeed_fn *succeed);
/* The same for directives that are not in a code (the token endpoints'): n is the request's
 * number (1-based) among those the directives count. p->code must hold them. */
void mock_run_directives(struct mock_pending *p, long n);

/* {"errcode": N, "errmsg": "... rid: ..."} with HTTP 200, as WeChat does; the rid is
 * remembered for /cgi-bin/openapi/rid/get. */
void mock_reply_errcode(struct mock *m, struct http_request *req, long errcode);
struct mock_app *mock_find_app(struct mock *m, const char *appid);
/* WeChat's appid/secret checks, in its order: 0, or 41002, 40013, 41004, 40125. */
long mock_check_app(struct mock *m, const char *appid, const char *secret, struct mock_app **app);
/* The app whose valid token this is: 0, or 41001 (none), 42001 (expired), 40001. Takes mu. */
long mock_check_access_token(struct mock *m, const char *token, struct mock_app **out);
/* What every access-token API starts with: the query's access_token checked (*app set) and the
 * body parsed as a JSON object (the caller releases it). NULL when it answered the errcode. */
json_t *mock_token_api_body(struct mock *m, struct http_request *req, struct mock_app **app);
/* The app a token is or was issued to, valid or not (NULL when unknown). With mu held. */
struct mock_app *mock_token_owner(struct mock *m, const char *token);
/* The user's latest session_key into out ("" when unknown). */
void mock_session_key(struct mock *m, const char *appid, const char *openid, char out[32]);
/* Spends code in set; false when it was spent already. */
bool mock_spend(struct mock *m, struct codeset *set, const char *code);
void mock_count(struct mock *m, enum mock_counter c);

/* mock/rid.c: the errors answered, kept for getRidInfo. */
struct mock_rids *mock_rids_new(void);
void mock_rids_free(struct mock_rids *r);
/* Remembers rid (answered to req with body) and who may look it up. */
void mock_rid_record(struct mock *m, struct http_request *req, const char *rid, const char *body);

/* Routes of mock/tokens.c: the token endpoints, their faults and invalidation. */
void mock_handle_stable_token(struct http_request *req, void *arg);
void mock_handle_token(struct http_request *req, void *arg);
void mock_handle_invalidate_token(struct http_request *req, void *arg);
void mock_handle_token_fail(struct http_request *req, void *arg);
/* Routes of mock/wxa.c: phone numbers, checksession. */
void mock_handle_phone(struct http_request *req, void *arg);
void mock_handle_checksession(struct http_request *req, void *arg);
/* Route of mock/rid.c: POST /cgi-bin/openapi/rid/get. */
void mock_handle_rid_get(struct http_request *req, void *arg);

#endif
