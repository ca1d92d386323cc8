/*
 * The operator's controls over users and sessions, scoped to an app (admin token, like the
 * access-token routes; docs/api.md):
 *   GET    /admin/v1/apps/{appid}/users/{openid}          the user, their ban, live sessions
 *   DELETE /admin/v1/apps/{appid}/users/{openid}          erasure: nothing of the openid stays
 *   POST   /admin/v1/apps/{appid}/users/{openid}/logout   ends every session of the user
 *   POST   /admin/v1/apps/{appid}/users/{openid}/ban      {"reason", "until"?}: sessions end,
 *                                                          logins answer 403 user_banned
 *   DELETE /admin/v1/apps/{appid}/users/{openid}/ban      lifts it
 *   DELETE /admin/v1/apps/{appid}/sessions/{session_id}   ends one session
 * Each revocation is one atomic store operation, seen at once by every instance and cache
 * (store/store.h), and one audit line (log_audit()). These routes are rare: they answer through
 * jansson, not the hot paths' fixed buffers.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "exchange/exchange.h"
#include "handlers/handlers.h"
#include "handlers/request_body.h"
#include "log/log.h"
#include "store/store.h"

/* An admin request about one user (or one session) of one app. */
struct user_req {
    struct http_request *req;
    struct handlers_ctx *ctx;
    const char *appid; /* the configured app's, outlives the request */
    const char *openid;
    enum store_revoke_what what; /* the revocation asked for */
    char reason[STORE_REASON_MAX + 1];
    int64_t until;
};

/* The admin check, the app of the path (404 unknown_app), the openid or session id (400); NULL
 * when the request was answered. */
static struct user_req *begin(struct http_request *req, struct handlers_ctx *ctx, bool by_user)
{
    if (!handlers_admin_check(req, ctx))
        return NULL;
    const struct handlers_app *app = handlers_app_by_id(ctx, http_request_param(req, 0));
    if (app == NULL) {
        http_reply_error(req, 404, "unknown_app", "no such app is served here", "none");
        return NULL;
    }
    const char *id = http_request_param(req, 1);
    if (by_user && !wechat_id_valid(id, strlen(id))) {
        http_reply_error(req, 400, "bad_request",
                         "openid must be 1 to 128 characters of [A-Za-z0-9_-]", "none");
        return NULL;
    }
    struct user_req *u = http_request_alloc(req, sizeof(*u));
    if (u == NULL) {
        handlers_reply_internal(req, "out of memory");
        return NULL;
    }
    u->req = req;
    u->ctx = ctx;
    u->appid = app->cred.appid;
    u->openid = by_user ? id : NULL;
    return u;
}

static void audit(const struct user_req *u, const char *event, long sessions)
{
    http_request_set_user(u->req, u->appid, u->openid);
    struct log_field f[5];
    size_t n = 0;
    f[n++] = LOG_STR("app", u->appid);
    if (u->openid != NULL)
        f[n++] = LOG_STR("openid", u->openid);
    else
        f[n++] = LOG_STR("session_id", http_request_param(u->req, 1));
    f[n++] = LOG_INT("sessions", sessions);
    if (u->reason[0] != '\0')
        f[n++] = LOG_STR("reason", u->reason);
    f[n++] = LOG_STR("request_id", http_request_id(u->req));
    log_audit(event, http_request_client(u->req), f, n);
}

/* ---- the user's record ---- */

/* An optional member: o and v are dropped (NULL returned) when either is missing or the member
 * cannot be added, so an allocation failure never answers a record short of a field. */
static json_t *with(json_t *o, const char *key, json_t *v)
{
    if (o == NULL || json_object_set_new(o, key, v) != 0) { /* v is taken either way */
        if (o == NULL)
            json_decref(v);
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *session_json(const struct store_session_info *si)
{
    char id[STORE_SID_TEXT_LEN + 1];
    store_sid_text(si->sid, id);
    json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s}", "id", id, "created", (json_int_t)si->created,
                          "expires", (json_int_t)si->expires, "client", si->client, "user_agent",
                          si->user_agent);
    if (si->refreshed > 0)
        o = with(o, "refreshed", json_integer(si->refreshed));
    return o;
}

/* The whole record, or NULL (out of memory): never one with a member left out. */
static json_t *user_json(const struct user_req *u, const struct store_user_info *info)
{
    json_t *o = json_pack("{s:s, s:s, s:b}", "appid", u->appid, "openid", u->openid, "banned",
                          info->banned);
    if (info->unionid[0] != '\0')
        o = with(o, "unionid", json_string(info->unionid));
    if (info->known) {
        o = with(o, "first_login", json_integer(info->first_login));
        o = with(o, "last_login", json_integer(info->last_login));
    }
    if (info->banned) {
        json_t *ban = json_pack("{s:s, s:I}", "reason", info->ban_reason, "since",
                                (json_int_t)info->ban_since);
        if (info->ban_until > 0)
            ban = with(ban, "until", json_integer(info->ban_until));
        o = with(o, "ban", ban);
    }
    json_t *sessions = json_array();
    for (size_t i = 0; i < info->nsessions && sessions != NULL; i++) {
        if (json_array_append_new(sessions, session_json(&info->sessions[i])) != 0) {
            json_decref(sessions);
            sessions = NULL;
        }
    }
    o = with(o, "sessions", sessions);
    if (info->more_sessions)
        o = with(o, "more_sessions", json_true());
    return o;
}

static void on_info(void *arg, int status, const struct store_user_info *info)
{
    struct user_req *u = arg;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(u->req, "user_info");
    } else if (status != STORE_OK) {
        http_reply_error(u->req, 404, "unknown_user", "no such user of this app", "none");
    } else {
        json_t *o = user_json(u, info);
        if (o == NULL)
            handlers_reply_internal(u->req, "out of memory");
        else
            http_reply_json(u->req, 200, o);
    }
}

void handle_admin_user(struct http_request *req, void *arg)
{
    struct user_req *u = begin(req, arg, true);
    if (u != NULL)
        store_user_info(u->ctx->store, http_request_slot(req), u->appid, u->openid,
                        (int64_t)time(NULL), on_info, u);
}

/* ---- revocations ---- */

/* The audit event of each revocation. */
static const char *const events[] = {
    [STORE_REVOKE_TOKEN] = "logout",         [STORE_REVOKE_SID] = "session_revoked",
    [STORE_REVOKE_USER] = "user_logout_all", [STORE_BAN] = "user_banned",
    [STORE_UNBAN] = "user_unbanned",         [STORE_ERASE] = "user_erased",
};

static void on_revoked(void *arg, int status, const struct store_revoked *r)
{
    struct user_req *u = arg;
    struct http_request *req = u->req;
    if (status == STORE_ERROR) {
        handlers_reply_store_error(req, "revoke");
        return;
    }
    long count = r != NULL ? r->count : 0;
    json_t *o = NULL;
    switch (u->what) {
    case STORE_ERASE:
        /* What this process remembers of the user's codes goes too (the store took its own). */
        if (exchange_forget_user(u->ctx->exchange, u->openid) == 0 && status != STORE_OK) {
            http_reply_error(req, 404, "unknown_user", "no such user of this app", "none");
            return;
        }
        break;
    case STORE_REVOKE_SID:
        if (status != STORE_OK) {
            http_reply_error(req, 404, "unknown_session", "no such session of this app", "none");
            return;
        }
        break;
    case STORE_UNBAN:
        if (status != STORE_OK) { /* lifting no ban is no error, and no event */
            http_reply(req, 204, NULL, NULL, 0);
            return;
        }
        break;
    case STORE_BAN:
        o = json_pack("{s:b, s:s, s:I}", "banned", 1, "reason", u->reason, "revoked",
                      (json_int_t)count);
        break;
    case STORE_REVOKE_USER: o = json_pack("{s:I}", "revoked", (json_int_t)count); break;
    case STORE_REVOKE_TOKEN: break; /* not an admin route */
    }
    audit(u, events[u->what], u->what == STORE_UNBAN ? 0 : count);
    if (u->what != STORE_BAN && u->what != STORE_REVOKE_USER) {
        http_reply(req, 204, NULL, NULL, 0);
        return;
    }
    if (u->until > 0)
        o = with(o, "until", json_integer(u->until));
    if (o == NULL)
        handlers_reply_internal(req, "out of memory");
    else
        http_reply_json(req, 200, o);
}

static void revoke(struct user_req *u, enum store_revoke_what what, const uint8_t *sid)
{
    u->what = what;
    struct store_revoke in = {.what = what,
                              .appid = u->appid,
                              .openid = u->openid,
                              .sid = sid,
                              .reason = u->reason,
                              .until = u->until,
                              .now = (int64_t)time(NULL)};
    store_revoke(u->ctx->store, http_request_slot(u->req), &in, on_revoked, u);
}

void handle_admin_user_erase(struct http_request *req, void *arg)
{
    struct user_req *u = begin(req, arg, true);
    if (u != NULL)
        revoke(u, STORE_ERASE, NULL);
}

void handle_admin_user_logout(struct http_request *req, void *arg)
{
    struct user_req *u = begin(req, arg, true);
    if (u != NULL)
        revoke(u, STORE_REVOKE_USER, NULL);
}

void handle_admin_user_unban(struct http_request *req, void *arg)
{
    struct user_req *u = begin(req, arg, true);
    if (u != NULL)
        revoke(u, STORE_UNBAN, NULL);
}

/* {"reason": "...", "until": <unix seconds, in the future>} into u; 0, or -1 answered 400 (503
 * when out of memory). */
static int ban_body(struct user_req *u)
{
    size_t len;
    const char *body = http_request_body(u->req, &len);
    const char *why;
    int rc = request_body_ban(body, len, (int64_t)time(NULL), u->reason, &u->until, &why);
    return handlers_reply_bad_body(u->req, rc, why) ? -1 : 0;
}

void handle_admin_user_ban(struct http_request *req, void *arg)
{
    struct user_req *u = begin(req, arg, true);
    if (u != NULL && ban_body(u) == 0)
        revoke(u, STORE_BAN, NULL);
}

void handle_admin_session_end(struct http_request *req, void *arg)
{
    struct user_req *u = begin(req, arg, false);
    if (u == NULL)
        return;
    uint8_t *sid = http_request_alloc(req, STORE_SID_LEN);
    if (sid == NULL) {
        handlers_reply_internal(req, "out of memory");
        return;
    }
    if (store_sid_parse(http_request_param(req, 1), sid) != 0) {
        http_reply_error(req, 400, "bad_request", "a session id is s_ and 22 characters", "none");
        return;
    }
    revoke(u, STORE_REVOKE_SID, sid);
}
