/*
 * mock/internal: what the mock's files share: its state and how a coded request is answered.
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
#include "runtime/delay.h"
#include "mock/codeset.h"

#define MOCK_MAX_APPS 16
#define MOCK_CODE_MAX 128
#define MOCK_TOKEN_MAX 64

/* An app the mock knows, with its access tokens (guarded by mock.mu). */
struct mock_app {
    char *appid;
    char *secret;
    char stable[MOCK_TOKEN_MAX + 1]; /* current stable token, "" before the first */
    int64_t stable_exp;
    bool stable_bad;   /* invalidated: APIs answer 40001 to it */
    bool stable_stuck; /* and stable_token keeps handing it back */
    uint64_t last_force_ms;
    char classic[MOCK_TOKEN_MAX + 1];
    char classic_prev[MOCK_TOKEN_MAX + 1];
    int64_t classic_prev_until;
};

enum mock_counter {
    MC_C2S,
    MC_C2S_EXCHANGES,
    MC_STABLE_TOKEN,
    MC_TOKEN,
    MC_PHONE,
    MC_CHECKSESSION,
    MC_COUNT
};

struct mock {
    struct mock_app apps[MOCK_MAX_APPS];
    size_t napps;
    const char *listen;
    uint16_t port;
    int nworkers;
    long token_delay_ms;

    pthread_mutex_t mu;         /* guards the codesets, the session-key ring and the apps' tokens */
    struct codeset *used;       /* spent login codes */
    struct codeset *used_phone; /* spent phone codes */
    struct codeset *attempts;   /* requests per code with directives */

    /* Each user's latest session_key: users maps a user's hash to 1 + its ring slot. */
    struct codeset *users;
    struct mock_sk_slot {
        uint64_t owner;
        char sk[32];
    } * sk_ring;
    uint32_t sk_next;

    atomic_ulong counters[MC_COUNT];
};

/* A request answered according to its code's directives, possibly after a delay. */
struct mock_pending;
typedef void mock_succeed_fn(struct mock_pending *p);

struct mock_pending {
    struct http_request *req;
    struct mock *m;
    struct delay delay;
    struct mock_app *app;
    const struct mock_directive *fail; /* into code; NULL = answer normally */
    bool wrongapp;
    struct mock_code code;
    char code_text[MOCK_CODE_MAX + 1];
    mock_succeed_fn *succeed;
};

/* Answers code's request per its directives: a failure, or succeed(p) (maybe after a delay).
 * An invalid code answers 40029. */
void mock_run_coded(struct mock *m, struct http_request *req, struct mock_app *app,
                    const char *code, mock_succeed_fn *succeed);

/* {"errcode": N, "errmsg": "..., rid: ..."} with HTTP 200, as WeChat does. */
void mock_reply_errcode(struct http_request *req, long errcode);
struct mock_app *mock_find_app(struct mock *m, const char *appid);
/* WeChat's appid/secret checks, in its order: 0, or 41002, 40013, 41004, 40125. */
long mock_check_app(struct mock *m, const char *appid, const char *secret, struct mock_app **app);
/* The user's latest session_key into out ("" when unknown). */
void mock_session_key(struct mock *m, const char *appid, const char *openid, char out[32]);
/* Spends code in set; false when it was spent already. */
bool mock_spend(struct mock *m, struct codeset *set, const char *code);
void mock_count(struct mock *m, enum mock_counter c);

/* Routes of mock/wxa.c: tokens, phone numbers, checksession, token invalidation. */
void mock_handle_stable_token(struct http_request *req, void *arg);
void mock_handle_token(struct http_request *req, void *arg);
void mock_handle_phone(struct http_request *req, void *arg);
void mock_handle_checksession(struct http_request *req, void *arg);
void mock_handle_invalidate_token(struct http_request *req, void *arg);

#endif
