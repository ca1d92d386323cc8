/* Store URLs (redis://, redis+unix://) and their redaction for logs. */
#include "fuzz.h"
#include "redis/rconn.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_cstr(data, size);
    if (url == NULL)
        return 0;
    struct rconn_opts o = {0};
    char err[RCONN_ERR_MAX];
    if (rconn_parse_url(url, &o, err) == 0) {
        FUZZ_CHECK((o.host != NULL) != (o.unix_path != NULL));
        FUZZ_CHECK(o.db >= 0);
        rconn_opts_done(&o);
    } else if (o.password != NULL && o.password[0] != '\0' && strlen(o.password) > 3) {
        FUZZ_CHECK(strstr(err, o.password) == NULL);
    }
    char red[512];
    store_url_redacted(url, red, sizeof(red));
    FUZZ_CHECK(strlen(red) < sizeof(red));
    free(url);
    return 0;
}
