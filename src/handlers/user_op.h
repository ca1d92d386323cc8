/*
 * handlers/user_op: the steps shared by the endpoints that act for a logged-in user.
 *
 *   user_op_load()         bearer token → session → user with their session keys (the
 *                          previous key too, inside session_key_grace);
 *   user_op_with_token()   takes a token of the app's ceiling on WeChat calls (rate_limit_wechat:
 *                          429 rate_limited past it) and gets the app's access token
 *                          (token/token.h) for the call;
 *   user_op_rejected()     in that call's callback: when WeChat rejected the token (the errcode
 *                          table's token-rejected rows), invalidates exactly that token and
 *                          starts over once with a fresh one.
 *
 * A handler allocates a user_op in the request's memory with user_op_new(), and each step ends
 * by calling the handler's next function or by answering the client itself. Every step runs in
 * the request's pending slot.
 */
#ifndef WXLOGIN_HANDLERS_USER_OP_H
#define WXLOGIN_HANDLERS_USER_OP_H

#include <stdbool.h>

#include "handlers/handlers.h"
#include "store/store.h"
#include "token/token.h"

struct user_op;

typedef void user_op_next_fn(struct user_op *op);
/* Starts the WeChat call with access_token into the request's slot; -1 when it could not. */
typedef int user_op_call_fn(struct user_op *op, const char *access_token);

struct user_op {
    struct http_request *req;
    struct handlers_ctx *ctx;
    const struct handlers_app *app; /* set by user_op_load (the token's when none is named) */
    const char *in[2];              /* the request's fields the handler keeps (request memory) */

    /* filled by user_op_load */
    struct store_session session;
    char sk[STORE_KEY_MAX + 1];      /* current session_key */
    char prev_sk[STORE_KEY_MAX + 1]; /* previous one inside the grace period, else "" */

    /* used by user_op_with_token */
    user_op_call_fn *call;
    char access_token[WECHAT_TOKEN_MAX + 1];
    int token_attempt;

    user_op_next_fn *next;
};

/* NULL (and a 503 answered) when out of memory. */
struct user_op *user_op_new(struct http_request *req, struct handlers_ctx *ctx);

/* Authenticates the request and loads the user's keys, then calls next(op). */
void user_op_load(struct user_op *op, user_op_next_fn *next);

/* Runs call with a valid access token, within the app's ceiling on WeChat calls; token
 * failures and the ceiling are answered here. */
void user_op_with_token(struct user_op *op, user_op_call_fn *call);

/* First thing in the WeChat call's callback: true when the reply was a token rejection that is
 * handled here (a retry with a fresh token is under way, or the answer was given). */
bool user_op_rejected(struct user_op *op, enum wechat_api api, const struct wechat_reply *r);

/* Answers a failed access-token fetch (503 upstream_busy, 500 config_error...). */
void handlers_reply_token_error(struct http_request *req, const struct token_result *res);

/* Parses the body as a JSON object with the given string fields (NULL-terminated names, at
 * most 2) and copies them into out, in request memory. Returns 0, or -1 with a 400 bad_request
 * (or 503 when out of memory) answered. */
int handlers_parse_fields(struct http_request *req, const char *const *names, const char **out);

#endif
