/*
 * handlers/request_body: the request bodies other than login's (handlers/login_request.h), read
 * and validated without a request: the body's bytes in, the fields or a reason for refusal out.
 * The handlers call these and only choose the answer; fuzz/fuzz_request_bodies.c feeds them.
 * Pure code, no I/O, no logging.
 *
 * Every function returns 0, -1 with *why a message for the client (a fixed text, or one made
 * from the caller's field names: never a byte of the body), or -ENOMEM when the body could not
 * be read for want of memory (not the client's fault: 503, not 400).
 */
#ifndef WXLOGIN_HANDLERS_REQUEST_BODY_H
#define WXLOGIN_HANDLERS_REQUEST_BODY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define REQUEST_BODY_FIELDS_MAX 2 /* string fields request_body_fields() takes */
#define REQUEST_BODY_WHY_MAX 96   /* its messages, with the field's name */

/*
 * The body as a JSON object: *out the object (the caller owns the reference), or NULL for an
 * empty body when optional allows one.
 */
int request_body_object(const char *body, size_t len, bool optional, json_t **out,
                        const char **why);

/*
 * The body as a JSON object with the string fields names (NULL-terminated, at most
 * REQUEST_BODY_FIELDS_MAX) — /v1/decrypt, /v1/check-signature, the access-token invalidation.
 * On success *root is the object (the caller decrefs it) and vals[i] names[i]'s value, borrowed
 * from *root: whole text (jansson refuses \u0000, so no NUL cuts it). On failure
 * the message is written to why.
 */
int request_body_fields(const char *body, size_t len, const char *const *names, json_t **root,
                        const char **vals, char why[REQUEST_BODY_WHY_MAX]);

/* /v1/decrypt's fields: iv 16 bytes and encryptedData a non-empty multiple of 16 bytes, both in
 * base64 (crypto_b64_decode_lenient). */
int request_body_decrypt_check(const char *encrypted_data, const char *iv, const char **why);

/* The access token a service reports rejected: 1 to WECHAT_TOKEN_MAX bytes. */
int request_body_access_token_check(const char *token, const char **why);

/*
 * A ban, {"reason": "...", "until": <unix seconds>}: reason is UTF-8 text of 1 to
 * STORE_REASON_MAX bytes without control characters, copied into reason_out; until, when given,
 * an integer after now, else *until is 0. Outputs are written only on success.
 */
int request_body_ban(const char *body, size_t len, int64_t now,
                     char reason_out[STORE_REASON_MAX + 1], int64_t *until, const char **why);

/* /v1/logout: no body, or an object whose "all", when present, is a boolean (*all; false
 * without it). */
int request_body_logout(const char *body, size_t len, bool *all, const char **why);

#endif
