/* Exchange outcomes as other instances publish them through a shared Redis. */
#include "exchange/exchange.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct exchange_outcome o, again;
    if (exchange_outcome_decode((const char *)data, size, &o) != 0)
        return 0;
    /* A decoded record re-encodes, and that text decodes to the same outcome. */
    char text[2048];
    size_t n = exchange_outcome_encode(&o, text, sizeof(text));
    FUZZ_CHECK(n > 0);
    FUZZ_CHECK(exchange_outcome_decode(text, n, &again) == 0);
    FUZZ_CHECK(again.kind == o.kind && again.status == o.status && again.errcode == o.errcode &&
               again.http_status == o.http_status);
    FUZZ_CHECK(strcmp(again.openid, o.openid) == 0 && strcmp(again.unionid, o.unionid) == 0);
    char text2[2048];
    size_t n2 = exchange_outcome_encode(&again, text2, sizeof(text2));
    FUZZ_CHECK(n2 == n && memcmp(text, text2, n) == 0);
    return 0;
}
