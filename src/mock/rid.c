/*
 * mock/rid: the errors the mock answered, by rid, and getRidInfo
 * (POST /cgi-bin/openapi/rid/get?access_token=..., body {"rid": "..."}).
 *
 * WeChat keeps a rid 7 days and lets only the account that made the call look it up (76003
 * otherwise); rids of /sns/ APIs (code2Session) cannot be looked up (76022); an unknown rid is
 * 76001, a malformed one 76002. The mock keeps the last RID_RING errors. What it records of a
 * request: the query arguments it reads and the body, with the app secret replaced by "***"
 * (they are test values, but the habit is worth keeping); the answer; the peer's address.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mock/internal.h"

#define RID_RING 1024
#define RID_KEEP_S (7 * 86400)
#define FIELD_MAX 512

struct rid_entry {
    char rid[MOCK_RID_LEN + 1];
    int64_t invoke_time;
    long cost_ms;
    bool sns;                        /* from a /sns/ API */
    char owner[MOCK_APPID_LEN + 16]; /* appid of the app that made the call, "" when none */
    char url[FIELD_MAX];
    char body[FIELD_MAX];
    char response[FIELD_MAX];
    char client_ip[48];
};

struct mock_rids {
    pthread_mutex_t mu;
    struct rid_entry *ring;
    size_t next;
};

struct mock_rids *mock_rids_new(void)
{
    struct mock_rids *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->ring = calloc(RID_RING, sizeof(*r->ring));
    if (r->ring == NULL) {
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void mock_rids_free(struct mock_rids *r)
{
    if (r == NULL)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r->ring);
    free(r);
}

/* The query arguments the mock's APIs read, as "k=v&k=v", the secret masked. */
static void request_url(struct http_request *req, char out[FIELD_MAX])
{
    static const char *const keys[] = {"access_token", "appid",     "secret", "js_code",
                                       "grant_type",   "signature", "openid", "sig_method"};
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = http_request_query(req, keys[i]);
        if (v == NULL)
            continue;
        if (strcmp(keys[i], "secret") == 0)
            v = "***";
        int w = snprintf(out + n, FIELD_MAX - n, "%s%s=%s", n ? "&" : "", keys[i], v);
        if (w < 0 || (size_t)w >= FIELD_MAX - n) {
            out[n] = '\0';
            return;
        }
        n += (size_t)w;
    }
}

/* The body as received, a JSON body's "secret" masked; and its "appid" into appid. */
static void request_body(struct http_request *req, char out[FIELD_MAX], char *appid, size_t cap)
{
    size_t len;
    const char *body = http_request_body(req, &len);
    out[0] = '\0';
    json_error_t jerr;
    json_t *in = len > 0 ? json_loadb(body, len, 0, &jerr) : NULL;
    if (json_is_object(in)) {
        const char *a = json_string_value(json_object_get(in, "appid"));
        if (a != NULL && appid[0] == '\0')
            snprintf(appid, cap, "%s", a);
        if (json_object_get(in, "secret") != NULL) {
            json_object_set_new(in, "secret", json_string("***"));
            char *text = json_dumps(in, JSON_COMPACT);
            if (text != NULL)
                snprintf(out, FIELD_MAX, "%s", text);
            free(text);
            json_decref(in);
            return;
        }
    }
    json_decref(in);
    if (len > 0)
        snprintf(out, FIELD_MAX, "%.*s", (int)(len < FIELD_MAX ? len : FIELD_MAX - 1), body);
}

/* Printable ASCII only (what is kept may be cut anywhere, and must stay a JSON string). */
static void printable(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

void mock_rid_record(struct mock *m, struct http_request *req, const char *rid, const char *body)
{
    struct rid_entry e;
    memset(&e, 0, sizeof(e));
    snprintf(e.rid, sizeof(e.rid), "%s", rid);
    e.invoke_time = (int64_t)time(NULL);
    e.cost_ms = http_request_age_ms(req);
    e.sns = strncmp(http_request_path(req), "/sns/", 5) == 0;
    request_url(req, e.url);
    /* The app that made the call: the one it names (query or JSON body), else the one its
     * access token belongs to. */
    const char *appid = http_request_query(req, "appid");
    if (appid != NULL)
        snprintf(e.owner, sizeof(e.owner), "%s", appid);
    request_body(req, e.body, e.owner, sizeof(e.owner));
    if (e.owner[0] == '\0') {
        pthread_mutex_lock(&m->mu);
        const struct mock_app *a = mock_token_owner(m, http_request_query(req, "access_token"));
        if (a != NULL)
            snprintf(e.owner, sizeof(e.owner), "%s", a->appid);
        pthread_mutex_unlock(&m->mu);
    }
    snprintf(e.response, sizeof(e.response), "%s", body);
    snprintf(e.client_ip, sizeof(e.client_ip), "%s", http_request_peer(req));
    printable(e.url);
    printable(e.body);
    printable(e.response);
    printable(e.owner);

    struct mock_rids *r = m->rids;
    pthread_mutex_lock(&r->mu);
    r->ring[r->next++ % RID_RING] = e;
    pthread_mutex_unlock(&r->mu);
}

static bool rid_shape(const char *s)
{
    if (strlen(s) != MOCK_RID_LEN)
        return false;
    for (int i = 0; i < MOCK_RID_LEN; i++) {
        bool dash = i == 8 || i == 17;
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

void mock_handle_rid_get(struct http_request *req, void *arg)
{
    struct mock *m = arg;
    mock_count(m, MC_RID);
    struct mock_app *app = NULL;
    json_t *in = mock_token_api_body(m, req, &app);
    if (in == NULL)
        return;
    char want[MOCK_RID_LEN + 1] = "";
    const char *rid = json_string_value(json_object_get(in, "rid"));
    bool shaped = rid != NULL && rid_shape(rid);
    if (shaped)
        memcpy(want, rid, sizeof(want));
    json_decref(in);
    if (!shaped) {
        mock_reply_errcode(m, req, 76002);
        return;
    }

    struct mock_rids *r = m->rids;
    struct rid_entry *e = malloc(sizeof(*e));
    if (e == NULL) {
        http_reply_reset(req);
        return;
    }
    bool found = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < RID_RING && !found; i++) {
        if (strcmp(r->ring[i].rid, want) == 0) {
            *e = r->ring[i];
            found = true;
        }
    }
    pthread_mutex_unlock(&r->mu);
    long ec = 0;
    if (!found || (int64_t)time(NULL) - e->invoke_time > RID_KEEP_S)
        ec = 76001;
    else if (e->sns)
        ec = 76022;
    else if (strcmp(e->owner, app->appid) != 0)
        ec = 76003;
    if (ec != 0) {
        free(e);
        mock_reply_errcode(m, req, ec);
        return;
    }
    json_t *o = json_pack("{s:i, s:s, s:{s:I, s:I, s:s, s:s, s:s, s:s}}", "errcode", 0, "errmsg",
                          "ok", "request", "invoke_time", (json_int_t)e->invoke_time, "cost_in_ms",
                          (json_int_t)e->cost_ms, "request_url", e->url, "request_body", e->body,
                          "response_body", e->response, "client_ip", e->client_ip);
    free(e);
    http_reply_json(req, 200, o);
}
