/* WeChat's answers: code2Session, the access token, the phone number, errmsg's rid. */
#include <jansson.h>

#include "fuzz.h"
#include "util/utf8.h"
#include "wechat/api.h"
#include "wechat/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, 0, &jerr);
    if (body == NULL)
        return 0;
    const char *why;
    struct wechat_session s;
    if (wechat_session_parse(body, &s, &why)) {
        /* Never accept what the validators reject: ids end up in response headers. */
        FUZZ_CHECK(wechat_id_valid(s.openid, strlen(s.openid)));
        FUZZ_CHECK(s.unionid[0] == '\0' || wechat_id_valid(s.unionid, strlen(s.unionid)));
        FUZZ_CHECK(wechat_session_key_valid(s.session_key, strlen(s.session_key)));
    }
    struct wechat_phone p;
    if (wechat_phone_parse(body, &p, &why)) {
        FUZZ_CHECK(utf8_text_ok(p.phone_number, strlen(p.phone_number)));
        FUZZ_CHECK(utf8_text_ok(p.country_code, strlen(p.country_code)));
    }
    struct wechat_token_grant t;
    if (wechat_token_parse(body, &t, &why)) {
        size_t n = strlen(t.token);
        FUZZ_CHECK(n > 0 && t.expires_in > 0);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(t.token[i] > ' ' && t.token[i] < 0x7f);
    }
    json_t *em = json_object_get(body, "errmsg");
    if (json_is_string(em)) {
        char rid[WECHAT_RID_MAX];
        wechat_errmsg_rid(json_string_value(em), rid);
        FUZZ_CHECK(strlen(rid) < WECHAT_RID_MAX);
    }
    json_decref(body);
    return 0;
}
