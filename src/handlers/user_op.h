/*
 * handlers/user_op: the steps shared by the endpoints that act for a logged-in user.
 *
 *   user_op_load()       bearer token → session → user → session keys opened with the master
 *                        key (the previous key too, inside session_key_grace);
 *   user_op_call_token() a WeChat call that needs the access token: gets it from the central
 *                        token (wechat/token.h), and when WeChat rejects it (40001, 40014,
 *                        42001) invalidates exactly that token, fetches again and retries once.
 *
 * A handler allocates a user_op with user_op_new(), fills what it needs, and each step ends by
 * calling the handler's next function or by answering the client itself (then freeing the op).
 * The op is freed with user_op_free() by whoever answers last.
 */
#ifndef WXLOGIN_HANDLERS_USER_OP_H
#define WXLOGIN_HANDLERS_USER_OP_H

#include <jansson.h>
#include <stdbool.h>

#include "handlers/handlers.h"
#include "session/session.h"
#include "wechat/client.h"
#include "wechat/token.h"

#define USER_OP_KEY_MAX 64 /* a session_key string (24 characters in practice) */

struct user_op;

typedef void user_op_next_fn(struct user_op *op);
/* Builds and starts the WeChat call for the given access token; NULL when it could not start. */
typedef struct wechat_call *user_op_start_fn(struct user_op *op, const char *access_token);
typedef void user_op_result_fn(struct user_op *op, const struct wechat_result *res);

struct user_op {
    struct http_request *req;
    struct handlers_ctx *ctx;
    const struct handlers_app *app; /* set by user_op_load */
    json_t *in;                     /* the parsed request body, when the handler keeps it */
    struct store_call sc;

    /* filled by user_op_load */
    struct session_record rec;
    char sk[USER_OP_KEY_MAX + 1];      /* current session_key */
    char prev_sk[USER_OP_KEY_MAX + 1]; /* previous one inside the grace period, else "" */

    /* used by user_op_call_token */
    user_op_start_fn *start;
    user_op_result_fn *result;
    char access_token[WECHAT_TOKEN_MAX + 1];
    int token_attempt;
    struct wechat_token_waiter *token_waiter;
    struct wechat_call *call;

    user_op_next_fn *next;
};

/* NULL (and a 503 answered) when out of memory. Takes the reference to in. */
struct user_op *user_op_new(struct http_request *req, struct handlers_ctx *ctx, json_t *in);
void user_op_free(struct user_op *op);

/* Authenticates the request and loads the user's keys, then calls next(op). */
void user_op_load(struct user_op *op, user_op_next_fn *next);

/*
 * Runs op->start with a valid access token, retrying once with a fresh token when WeChat
 * rejects it, then calls op->result with the final result. Token failures are answered here.
 */
void user_op_call_token(struct user_op *op);

/* The done callback op->start must give the WeChat call (with op as its argument). */
void user_op_on_call_done(const struct wechat_result *res, void *arg);

/* Answers a failed access-token fetch (503 upstream_busy, 500 config_error...). */
void handlers_reply_token_error(struct http_request *req, const struct wechat_token_result *res);

/* Parses the body as a JSON object with the given string fields (NULL-terminated names).
 * Returns the object, or NULL with a 400 bad_request answered. */
json_t *handlers_parse_fields(struct http_request *req, const char *const *names);

#endif
