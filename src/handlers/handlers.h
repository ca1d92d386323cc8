/*
 * handlers: one file per resource; the only layer that chooses HTTP status codes.
 *
 * Each worker thread has its own handlers_ctx (its WeChat client, its store connection) so a
 * request never leaves its thread; the code-exchange table is the one thing shared by all
 * workers (see exchange/exchange.h). The route table is shared and read-only.
 */
#ifndef WXLOGIN_HANDLERS_H
#define WXLOGIN_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "http/server.h"

struct config;
struct exchange;
struct session_cache;
struct session_store;
struct wechat_client;
struct wechat_token;

/* One Mini Program as the handlers see it. */
struct handlers_app {
    const char *appid;          /* borrowed from the config */
    const char *secret;         /* borrowed from the config */
    struct wechat_token *token; /* this app's access token, shared by all workers */
};

struct handlers_ctx {
    const struct config *cfg;        /* borrowed, outlives the workers */
    const uint8_t *master_key;       /* CRYPTO_KEY_LEN bytes, borrowed */
    struct exchange *exchange;       /* shared by all workers */
    const struct handlers_app *apps; /* every configured app, shared */
    size_t napps;
    struct wechat_client *wx;    /* this worker's */
    struct session_store *store; /* this worker's */
    struct session_cache *cache; /* shared; NULL when the store is shared by instances */
};

extern const struct http_route handlers_routes[];
extern const size_t handlers_nroutes;

/* Copies the routes this configuration serves into out (cap entries); returns how many. */
size_t handlers_select_routes(const struct config *cfg, struct http_route *out, size_t cap);

void handle_openid(struct http_request *req, void *arg);
void handle_login(struct http_request *req, void *arg);
void handle_session(struct http_request *req, void *arg);
void handle_logout(struct http_request *req, void *arg);
void handle_decrypt(struct http_request *req, void *arg);
void handle_check_signature(struct http_request *req, void *arg);
void handle_phone(struct http_request *req, void *arg);
void handle_session_check(struct http_request *req, void *arg);
void handle_admin_token(struct http_request *req, void *arg);
void handle_admin_token_refresh(struct http_request *req, void *arg);
void handle_healthz(struct http_request *req, void *arg);
void handle_readyz(struct http_request *req, void *arg);

/* ---- shared by the handlers ---- */

/*
 * A store operation made for a request. A store may answer later (Redis), and the request may
 * be abandoned meanwhile (shutdown answers it and frees it): the answer must then not touch it.
 * store_call_begin() before calling the store; store_call_end() first thing in the callback,
 * which returns the request, or NULL when it was abandoned.
 */
struct store_call {
    struct http_request *req;
};
void store_call_begin(struct store_call *sc, struct http_request *req);
struct http_request *store_call_end(struct store_call *sc);

/*
 * The app a request is for: the X-WX-AppID header, else the Referer WeChat sets on wx.request
 * (https://servicewechat.com/<appid>/<version>/page-frame.html), else the only configured app.
 * NULL, with 400 unknown_app answered, when that names no configured app.
 */
const struct handlers_app *handlers_app(struct http_request *req, struct handlers_ctx *ctx);

/* 503 store_unavailable, action retry (and a log line). */
void handlers_reply_store_error(struct http_request *req, const char *op);

/* 401 invalid_token with WWW-Authenticate. */
void handlers_reply_invalid_token(struct http_request *req, const char *why);

/*
 * The app of the request and the hash of its bearer token. False when either is missing or
 * malformed, with the answer (400 unknown_app or 401 invalid_token) already given.
 */
bool handlers_authenticate(struct http_request *req, struct handlers_ctx *ctx,
                           const struct handlers_app **app, uint8_t hash[CRYPTO_HASH_LEN]);

/*
 * Reads "Authorization: Bearer <token>" and hashes a well-formed token into hash. Returns 0, or
 * -1 with *why set when the header is missing, not Bearer, or not one of our tokens.
 */
int handlers_bearer_hash(struct http_request *req, uint8_t hash[CRYPTO_HASH_LEN], const char **why);

#endif
