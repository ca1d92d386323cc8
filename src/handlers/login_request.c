#include "handlers/login_request.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "wechat/api.h"

int login_request_parse(const char *body, size_t len, char code_out[LOGIN_CODE_MAX + 1],
                        const char **why)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = -1;
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory) {
            *why = "out of memory";
            return -ENOMEM;
        }
        *why = "body is not valid JSON";
        return -1;
    }
    if (!json_is_object(root)) {
        *why = "body must be a JSON object";
        goto out;
    }
    json_t *code = json_object_get(root, "code");
    if (code == NULL) {
        *why = "code is required";
        goto out;
    }
    if (!json_is_string(code)) {
        *why = "code must be a string";
        goto out;
    }
    const char *s = json_string_value(code);
    size_t n = json_string_length(code);
    if (n == 0) {
        *why = "code must not be empty";
        goto out;
    }
    if (n > LOGIN_CODE_MAX) {
        *why = "code is longer than 512 bytes";
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!wechat_plain_char((unsigned char)s[i])) {
            *why = "code may only contain A-Z, a-z, 0-9, '_' and '-'";
            goto out;
        }
    }
    memcpy(code_out, s, n + 1);
    rc = 0;
out:
    json_decref(root);
    return rc;
}
