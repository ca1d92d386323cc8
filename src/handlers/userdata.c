/*
 * Mini Program data opened with the user's session_key, which never leaves the server:
 *   POST /v1/decrypt          encryptedData + iv → the decrypted JSON (watermark checked)
 *   POST /v1/check-signature  rawData + signature → whether SHA-1(rawData + session_key) matches
 *   GET  /v1/session/check    asks WeChat whether the stored session_key is still valid
 * The previous session_key is tried too while inside session_key_grace, so data encrypted just
 * before a re-login still opens.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "crypto/crypto.h"
#include "handlers/request_body.h"
#include "handlers/user_op.h"

static void reply_valid(struct http_request *req, bool valid)
{
    static const char yes[] = "{\"valid\":true}", no[] = "{\"valid\":false}";
    http_reply(req, 200, "application/json", valid ? yes : no,
               valid ? sizeof(yes) - 1 : sizeof(no) - 1);
}

/* ---- POST /v1/decrypt ---- */

/*
 * Decrypts with one session_key string: 0 with *out the JSON object, -1 when the data does not
 * open with this key into a JSON object, -ENOMEM when it could not be tried (which says nothing
 * about the key: never answered as decrypt_failed, whose action is to log in again).
 */
static int try_decrypt(const char *sk, const uint8_t *ct, size_t ctlen, const uint8_t iv[16],
                       json_t **out)
{
    uint8_t key[24];
    int rc = -1;
    /* 24 base64 characters decode to at most 18 bytes: key can hold them. */
    if (strlen(sk) != 24 || crypto_b64_decode(sk, 24, key) != 16) {
        crypto_wipe(key, sizeof(key));
        return -1;
    }
    uint8_t *pt = malloc(ctlen);
    if (pt == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    int n = crypto_aes128cbc_decrypt(key, iv, ct, ctlen, pt);
    if (n == -ENOMEM)
        rc = -ENOMEM;
    if (n > 0) {
        json_error_t jerr;
        json_t *obj = json_loadb((const char *)pt, (size_t)n, 0, &jerr);
        if (obj == NULL && json_error_code(&jerr) == json_error_out_of_memory)
            rc = -ENOMEM;
        else if (json_is_object(obj))
            rc = 0;
        if (rc == 0)
            *out = obj;
        else
            json_decref(obj);
        crypto_wipe(pt, (size_t)n);
    }
    free(pt);
out:
    crypto_wipe(key, sizeof(key));
    return rc;
}

struct decrypt_in {
    uint8_t iv[16];
    uint8_t *ct;
    size_t ctlen;
};

static void decrypt_ready(struct user_op *op)
{
    const char *ed = op->in[0], *ivs = op->in[1];
    uint8_t iv[24];
    size_t edlen = strlen(ed);
    uint8_t *ct = malloc(edlen / 4 * 3 + 3);
    json_t *obj = NULL;
    int ctlen = -1;
    if (ct != NULL && crypto_b64_decode_lenient(ivs, strlen(ivs), iv) == 16)
        ctlen = crypto_b64_decode_lenient(ed, edlen, ct);
    /* The input was checked before and the decoding allocates nothing: only ct's allocation
     * can fail here. */
    if (ct == NULL || ctlen <= 0) {
        free(ct);
        handlers_reply_internal(op->req, "out of memory");
        return;
    }
    int rc = try_decrypt(op->sk, ct, (size_t)ctlen, iv, &obj);
    if (rc == -1 && op->prev_sk[0] != '\0')
        rc = try_decrypt(op->prev_sk, ct, (size_t)ctlen, iv, &obj);
    free(ct);
    if (rc == -ENOMEM) {
        handlers_reply_internal(op->req, "out of memory");
        return;
    }
    if (rc != 0) {
        /* Almost always data encrypted with a session_key a later wx.login replaced. */
        http_reply_error(op->req, 422, "decrypt_failed",
                         "the data does not decrypt with this user's session key", "relogin");
        return;
    }
    const char *wm = json_string_value(json_object_get(json_object_get(obj, "watermark"), "appid"));
    if (wm == NULL || strcmp(wm, op->app->cred.appid) != 0) {
        json_decref(obj);
        http_reply_error(op->req, 422, "watermark_mismatch",
                         "the data was not produced for this app", "none");
        return;
    }
    http_reply_json(op->req, 200, json_pack("{s:o}", "data", obj));
}

void handle_decrypt(struct http_request *req, void *arg)
{
    static const char *const fields[] = {"encryptedData", "iv", NULL};
    const char *in[2];
    if (handlers_parse_fields(req, fields, in) != 0)
        return;
    /* Validate the input before touching the store: bad input changes nothing. */
    const char *ed = in[0], *ivs = in[1];
    const char *why;
    int rc = request_body_decrypt_check(ed, ivs, &why);
    if (handlers_reply_bad_body(req, rc, why))
        return;
    struct user_op *op = user_op_new(req, arg);
    if (op == NULL)
        return;
    op->in[0] = ed;
    op->in[1] = ivs;
    user_op_load(op, decrypt_ready);
}

/* ---- POST /v1/check-signature ---- */

/* 1 when sig is SHA-1(raw + sk), 0 when not, -ENOMEM when the hash could not be computed: no
 * verdict then, either way. */
static int signature_matches(const char *raw, const char *sk, const char *sig)
{
    char want[41];
    if (crypto_sha1_hex2(raw, strlen(raw), sk, strlen(sk), want) != 0)
        return -ENOMEM;
    return crypto_equal(want, sig, 40) ? 1 : 0;
}

static void check_signature_ready(struct user_op *op)
{
    const char *raw = op->in[0], *given = op->in[1];
    char sig[41];
    int valid = 0;
    size_t n = strlen(given);
    if (n == 40 && strspn(given, "0123456789abcdefABCDEF") == 40) {
        for (size_t i = 0; i < 40; i++)
            sig[i] = (char)(given[i] >= 'A' && given[i] <= 'F' ? given[i] + 32 : given[i]);
        sig[40] = '\0';
        valid = signature_matches(raw, op->sk, sig);
        if (valid == 0 && op->prev_sk[0] != '\0')
            valid = signature_matches(raw, op->prev_sk, sig);
    }
    if (valid < 0) {
        handlers_reply_internal(op->req, "out of memory");
        return;
    }
    reply_valid(op->req, valid == 1);
}

void handle_check_signature(struct http_request *req, void *arg)
{
    static const char *const fields[] = {"rawData", "signature", NULL};
    const char *in[2];
    if (handlers_parse_fields(req, fields, in) != 0)
        return;
    struct user_op *op = user_op_new(req, arg);
    if (op == NULL)
        return;
    op->in[0] = in[0];
    op->in[1] = in[1];
    user_op_load(op, check_signature_ready);
}

/* ---- GET /v1/session/check ---- */

static void on_checked(void *arg, const struct wechat_reply *r, bool valid)
{
    struct user_op *op = arg;
    if (user_op_rejected(op, WECHAT_API_CHECKSESSION, r))
        return;
    if (r->status == WECHAT_OK)
        reply_valid(op->req, valid);
    else
        handlers_reply_wechat(op->req, WECHAT_API_CHECKSESSION, r);
}

static int check_call(struct user_op *op, const char *access_token)
{
    return wechat_check_session(op->ctx->wx, http_request_slot(op->req), access_token,
                                op->session.openid, op->sk, on_checked, op);
}

static void session_check_ready(struct user_op *op)
{
    user_op_with_token(op, check_call);
}

void handle_session_check(struct http_request *req, void *arg)
{
    struct user_op *op = user_op_new(req, arg);
    if (op != NULL)
        user_op_load(op, session_check_ready);
}
