#include "handlers/request_body.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "util/utf8.h"
#include "wechat/api.h"

int request_body_object(const char *body, size_t len, bool optional, json_t **out, const char **why)
{
    if (len == 0 && optional) {
        *out = NULL;
        return 0;
    }
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL && json_error_code(&jerr) == json_error_out_of_memory) {
        *why = "out of memory"; /* the body may well be good */
        return -ENOMEM;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *why =
            optional ? "the body must be empty or a JSON object" : "the body must be a JSON object";
        return -1;
    }
    *out = j;
    return 0;
}

int request_body_fields(const char *body, size_t len, const char *const *names, json_t **root,
                        const char **vals, char why[REQUEST_BODY_WHY_MAX])
{
    json_error_t jerr;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (o == NULL && json_error_code(&jerr) == json_error_out_of_memory) {
        snprintf(why, REQUEST_BODY_WHY_MAX, "out of memory"); /* the body may well be good */
        return -ENOMEM;
    }
    if (o == NULL || !json_is_object(o)) {
        snprintf(why, REQUEST_BODY_WHY_MAX, "%s",
                 o == NULL ? "body is not valid JSON" : "body must be a JSON object");
        json_decref(o);
        return -1;
    }
    for (size_t i = 0; names[i] != NULL && i < REQUEST_BODY_FIELDS_MAX; i++) {
        const json_t *v = json_object_get(o, names[i]);
        if (v == NULL || !json_is_string(v)) {
            snprintf(why, REQUEST_BODY_WHY_MAX, "%s is required and must be a string", names[i]);
            json_decref(o);
            return -1;
        }
        /* jansson refuses \u0000 (no JSON_ALLOW_NUL): the value is a whole C string. */
        vals[i] = json_string_value(v);
    }
    *root = o;
    return 0;
}

int request_body_decrypt_check(const char *encrypted_data, const char *iv, const char **why)
{
    uint8_t ivb[24];
    size_t edlen = strlen(encrypted_data);
    if (strlen(iv) != 24 || crypto_b64_decode_lenient(iv, 24, ivb) != 16) {
        *why = "iv must be 16 bytes in base64";
        return -1;
    }
    if (edlen == 0) {
        *why = "encryptedData must not be empty";
        return -1;
    }
    uint8_t *ct = malloc(edlen / 4 * 3 + 3);
    if (ct == NULL) {
        *why = "out of memory";
        return -ENOMEM;
    }
    int n = crypto_b64_decode_lenient(encrypted_data, edlen, ct);
    free(ct);
    if (n < 0) {
        *why = "encryptedData is not base64";
        return -1;
    }
    if (n == 0 || n % 16 != 0) {
        *why = "encryptedData must be a non-empty multiple of 16 bytes";
        return -1;
    }
    return 0;
}

int request_body_access_token_check(const char *token, const char **why)
{
    size_t n = strlen(token);
    if (n == 0 || n > WECHAT_TOKEN_MAX) {
        *why = "access_token must be 1 to 512 characters";
        return -1;
    }
    return 0;
}

int request_body_ban(const char *body, size_t len, int64_t now,
                     char reason_out[STORE_REASON_MAX + 1], int64_t *until, const char **why)
{
    json_t *j;
    int rc = request_body_object(body, len, false, &j, why);
    if (rc != 0)
        return rc;
    json_t *reason = json_object_get(j, "reason");
    json_t *u = json_object_get(j, "until");
    rc = -1;
    if (!json_is_string(reason) || json_string_length(reason) == 0 ||
        json_string_length(reason) > STORE_REASON_MAX ||
        !utf8_text_ok(json_string_value(reason), json_string_length(reason)))
        *why = "reason must be text of 1 to 256 bytes, without control characters";
    else if (u != NULL && (!json_is_integer(u) || json_integer_value(u) <= now))
        *why = "until, when given, must be a time in the future (unix seconds)";
    else {
        memcpy(reason_out, json_string_value(reason), json_string_length(reason) + 1);
        *until = u != NULL ? (int64_t)json_integer_value(u) : 0;
        rc = 0;
    }
    json_decref(j);
    return rc;
}

int request_body_logout(const char *body, size_t len, bool *all, const char **why)
{
    json_t *j;
    int rc = request_body_object(body, len, true, &j, why);
    if (rc != 0)
        return rc;
    json_t *a = json_object_get(j, "all");
    if (a != NULL && !json_is_boolean(a)) {
        json_decref(j);
        *why = "\"all\" must be true or false";
        return -1;
    }
    *all = json_is_true(a);
    json_decref(j);
    return 0;
}
