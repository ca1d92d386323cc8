/* The Referer WeChat sets on wx.request: https://servicewechat.com/<appid>/<version>/... */
#include "fuzz.h"
#include "handlers/handlers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *ref = fuzz_cstr(data, size);
    if (ref == NULL)
        return 0;
    size_t n = strlen(ref);
    const char *id;
    size_t len;
    bool wechat = handlers_referer_appid(ref, &id, &len);
    FUZZ_CHECK(wechat == (strncmp(ref, "https://servicewechat.com/", 26) == 0));
    FUZZ_CHECK((id == NULL) == (len == 0));
    FUZZ_CHECK(wechat || id == NULL);
    if (id != NULL) {
        /* The path's first segment, whole, inside the input, and an appid we accept. */
        FUZZ_CHECK(id == ref + 26 && id + len <= ref + n);
        FUZZ_CHECK(id[len] == '/' || id[len] == '\0');
        FUZZ_CHECK(memchr(id, '/', len) == NULL);
        FUZZ_CHECK(wechat_id_valid(id, len));
    } else if (wechat) {
        FUZZ_CHECK(!wechat_id_valid(ref + 26, strcspn(ref + 26, "/")));
    }
    FUZZ_CHECK(!handlers_referer_appid(NULL, &id, &len) && id == NULL && len == 0);
    free(ref);
    return 0;
}
