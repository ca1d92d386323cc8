/*
 * handlers: one file per resource; the only layer that chooses HTTP status codes.
 *
 * Each worker thread has its own handlers_ctx (its WeChat client, its store, its login context,
 * its token fetchers) so a request never leaves its thread; the apps (with their shared access
 * tokens), the code-exchange table and the session cache are shared by all workers, behind the
 * modules that own them. The route table is shared and read-only.
 *
 * A handler answers at once or starts one asynchronous operation into the request's pending
 * slot (http_request_slot()); its state lives in the request's memory (http_request_alloc()).
 * The HTTP layer ends the request (answer, deadline, shutdown) and cancels what is pending, so
 * no handler frees or cancels anything itself.
 */
#ifndef WXLOGIN_HANDLERS_H
#define WXLOGIN_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "http/server.h"
#include "wechat/api.h"

struct config;
struct exchange;
struct limit;
struct lockout;
struct login_ctx;
struct store;
struct token;
struct token_fetcher;
struct wechat_client;

/* One Mini Program as the handlers see it. */
struct handlers_app {
    struct wechat_app cred; /* borrowed from the configuration */
    enum wechat_token_api token_api;
    struct token *token; /* this app's access token, shared by all workers */
};

/* The rate limits (limit/limit.h), made once and shared by the workers; NULL: that one is off. */
struct handlers_limits {
    struct limit *address; /* per client address: POST /openid, /v1/login, /v1/phone */
    struct limit *session; /* per client address: GET /v1/session (off by default) */
    struct limit *openid;  /* per user and app: logins, once the exchange names the user */
    struct limit *wechat;  /* per app: each call to WeChat made for a client */
};

struct handlers_ctx {
    const struct config *cfg;        /* borrowed, outlives the workers */
    const struct handlers_app *apps; /* every configured app, shared */
    size_t napps;
    struct wechat_client *wx;             /* this worker's */
    struct store *store;                  /* this worker's */
    struct login_ctx *login;              /* this worker's */
    struct token_fetcher **fetchers;      /* this worker's, one per app (same order as apps) */
    struct lockout *admin_lockout;        /* failed admin attempts per address, shared; NULL when
                                             admin_token is not set */
    const struct handlers_limits *limits; /* shared */
    const uint8_t *token_key;             /* derives tokens (login/login.h), shared */
    struct exchange *exchange;            /* the code-exchange table, shared (erasure) */
};

extern const struct http_route handlers_routes[];
extern const size_t handlers_nroutes;

/* Copies the routes this configuration serves into out (cap entries); returns how many. */
size_t handlers_select_routes(const struct config *cfg, struct http_route *out, size_t cap);

void handle_openid(struct http_request *req, void *arg);
void handle_login(struct http_request *req, void *arg);
void handle_session(struct http_request *req, void *arg);
/* GET /v1/session behind rate_limit_session: routed instead of handle_session only when that
 * limit is on, so the unlimited route runs no code of the limits at all. */
void handle_session_limited(struct http_request *req, void *arg);
void handle_logout(struct http_request *req, void *arg);
void handle_decrypt(struct http_request *req, void *arg);
void handle_check_signature(struct http_request *req, void *arg);
void handle_phone(struct http_request *req, void *arg);
void handle_session_check(struct http_request *req, void *arg);
void handle_admin_token(struct http_request *req, void *arg);
void handle_admin_token_refresh(struct http_request *req, void *arg);
void handle_admin_token_invalidate(struct http_request *req, void *arg);
void handle_refresh(struct http_request *req, void *arg);
void handle_admin_user(struct http_request *req, void *arg);
void handle_admin_user_erase(struct http_request *req, void *arg);
void handle_admin_user_logout(struct http_request *req, void *arg);
void handle_admin_user_ban(struct http_request *req, void *arg);
void handle_admin_user_unban(struct http_request *req, void *arg);
void handle_admin_session_end(struct http_request *req, void *arg);
void handle_healthz(struct http_request *req, void *arg);
void handle_readyz(struct http_request *req, void *arg);

/* ---- shared by the handlers ---- */

/*
 * The app a request is for: the X-WX-AppID header, else the Referer WeChat sets on wx.request
 * (https://servicewechat.com/<appid>/<version>/page-frame.html), else the only configured app.
 * NULL, with 400 unknown_app answered, when that names no configured app.
 */
const struct handlers_app *handlers_app(struct http_request *req, struct handlers_ctx *ctx);

/* The configured app with this appid, or NULL. */
const struct handlers_app *handlers_app_by_id(struct handlers_ctx *ctx, const char *appid);
/*
 * The per-address rate limit of a route: runs next(req, ctx) once the request's client address
 * (http_request_client_addr(); an IPv6 client by its /64, which one host usually holds whole)
 * got a token of l for the app the request names (as handlers_app() finds it; one naming none
 * of ours is counted under no app and left to next to answer): at once with this process's
 * buckets, when the store answers with shared ones. Otherwise answers 429 rate_limited with
 * Retry-After (503 store_unavailable when the store failed). l NULL (the limit is off): next at
 * once, nothing looked at. Every route limited per client address
 * starts here: POST /openid, /v1/login, /v1/phone (and POST /v1/refresh, when it exists, with
 * ctx->limits->address, as the issue asks).
 */
void handlers_limit_client(struct http_request *req, struct handlers_ctx *ctx, struct limit *l,
                           http_handler_fn *next);

enum handlers_limit {
    HANDLERS_LIMIT_ADDRESS, /* the client address's bucket */
    HANDLERS_LIMIT_OPENID,  /* the user's */
    HANDLERS_LIMIT_WECHAT,  /* the app's calls to WeChat */
};

/* 429 {"error":"rate_limited","message":...,"action":"retry"} with Retry-After (seconds, rounded
 * up) for wait_us; which limit is logged at debug (the access line shows the 429). */
void handlers_reply_limited(struct http_request *req, enum handlers_limit which, uint64_t wait_us);

/*
 * What every admin route starts with: 404 when no admin token is configured (the routes do not
 * exist), then the admin token checked, failures capped per address (429 too_many_attempts).
 * False when the request was answered.
 */
bool handlers_admin_check(struct http_request *req, struct handlers_ctx *ctx);

/* This worker's token fetcher for app. */
struct token_fetcher *handlers_fetcher(struct handlers_ctx *ctx, const struct handlers_app *app);

/* 503 store_unavailable, action retry (and a log line). */
void handlers_reply_store_error(struct http_request *req, const char *op);

/* 401 invalid_token with WWW-Authenticate. */
void handlers_reply_invalid_token(struct http_request *req, const char *why);

/* 503 internal, action retry: out of memory and the like. */
void handlers_reply_internal(struct http_request *req, const char *what);

/* Answers what the errcode table says (wechat_error_map()): the error body with wx_errcode
 * when there is one, and Retry-After. */
struct wechat_http_error;
void handlers_reply_mapped(struct http_request *req, const struct wechat_http_error *e);

/* Logs a failed WeChat call of api (never the code or the secret) and answers the client per
 * the errcode table (wechat/errcode.h). */
void handlers_reply_wechat(struct http_request *req, enum wechat_api api,
                           const struct wechat_reply *r);

/*
 * The app of the request (handlers_app()) and the hash of its bearer token. False when the
 * request names an app not served or the token is missing or malformed, with the answer (400
 * unknown_app or 401 invalid_token) already given. *app is NULL when several apps are served
 * and the request names none: the token's session says which (store_get_session() with no
 * app, then handlers_app_by_id() on its appid), so a client need not name the app it holds a
 * token of. A token presented with another app named is 401, as the store binds it.
 */
bool handlers_authenticate(struct http_request *req, struct handlers_ctx *ctx,
                           const struct handlers_app **app, uint8_t hash[CRYPTO_HASH_LEN]);

/*
 * Reads "Authorization: Bearer <token>" and hashes a well-formed token into hash. Returns 0, or
 * -1 with *why set when the header is missing, not Bearer, or not one of our tokens.
 */
int handlers_bearer_hash(struct http_request *req, uint8_t hash[CRYPTO_HASH_LEN], const char **why);
/* The well-formed token of "Authorization: Bearer <token>" (borrowed from the request), or NULL
 * with *why. */
const char *handlers_bearer_token(struct http_request *req, const char **why);
/* handlers_bearer_token()'s parser, on the header's value (NULL: no header): the well-formed
 * token in it (borrowed from header), or NULL with *why. Pure. */
const char *handlers_bearer_parse(const char *header, const char **why);
/* The credentials of a Bearer Authorization header: what follows "Bearer" (any case) and its
 * spaces, borrowed from header; NULL when header is NULL or of another scheme. Pure: the
 * admin token's check reads them as they are, handlers_bearer_parse() wants one of our tokens. */
const char *handlers_bearer_credentials(const char *header);
/*
 * Whether referer is a Referer WeChat sets on wx.request (it starts with
 * https://servicewechat.com/); if so, *appid and *len are the appid it names (borrowed from
 * referer: the path's first segment), or NULL and 0 when that segment is not a valid appid
 * (wechat_id_valid()). Pure.
 */
bool handlers_referer_appid(const char *referer, const char **appid, size_t *len);

/*
 * The request's body as a JSON object (the caller owns the reference), or NULL: with *answered
 * false, an empty body that optional allows; with *answered true, the request was answered (400
 * bad_request for a body that is not an object, 503 internal when it could not be parsed for
 * want of memory).
 */
json_t *handlers_body_object(struct http_request *req, bool optional, bool *answered);

/* After a body parser (handlers/request_body.h): true, with the request answered, when it
 * refused the body (rc -1: 400 bad_request with why; -ENOMEM: 503 internal); false for rc 0. */
bool handlers_reply_bad_body(struct http_request *req, int rc, const char *why);

/* 403 user_banned, action none: a banned user's login (distinct from WeChat's own 40226,
 * user_blocked). */
void handlers_reply_banned(struct http_request *req);

#endif
