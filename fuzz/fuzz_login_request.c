/* The body of POST /openid and POST /v1/login: {"code": "..."}. */
#include "fuzz.h"
#include "handlers/login_request.h"
#include "wechat/api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char code[LOGIN_CODE_MAX + 1];
    const char *why = NULL;
    if (login_request_parse((const char *)data, size, code, &why) == 0) {
        /* An accepted code is plain text of the characters WeChat's codes are made of. */
        size_t n = strlen(code);
        FUZZ_CHECK(n > 0 && n <= LOGIN_CODE_MAX);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(wechat_plain_char((unsigned char)code[i]));
    } else {
        FUZZ_CHECK(why != NULL && why[0] != '\0');
    }
    return 0;
}
