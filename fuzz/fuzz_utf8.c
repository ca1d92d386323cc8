/* The UTF-8 reader every WeChat string goes through. */
#include "fuzz.h"
#include "util/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool ok = utf8_text_ok((const char *)data, size);
    /* Text is a sequence of whole characters, none a control character or a surrogate. */
    size_t i = 0;
    bool walk = true;
    while (i < size) {
        size_t n = utf8_char_len(data + i, size - i);
        if (n == 0) {
            walk = false;
            break;
        }
        uint32_t cp = utf8_decode(data + i, n);
        if (utf8_is_control(cp) || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            walk = false;
        i += n;
    }
    if (ok)
        FUZZ_CHECK(walk);
    return 0;
}
