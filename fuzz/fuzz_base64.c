/* Base64 from clients (encryptedData, iv) and from WeChat (session_key): strict and lenient. */
#include "crypto/crypto.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    const char *s = (const char *)data;
    uint8_t *strict = malloc(3 * (size / 4) + 1), *lenient = malloc(3 * (size / 4) + 1);
    char *again = malloc(4 * ((size + 2) / 3) + 1);
    if (strict == NULL || lenient == NULL || again == NULL)
        goto out;
    int n = crypto_b64_decode(s, size, strict);
    int m = crypto_b64_decode_lenient(s, size, lenient);
    if (n >= 0) {
        /* What strict accepts, lenient accepts the same way... */
        FUZZ_CHECK(m == n && memcmp(strict, lenient, (size_t)n) == 0);
        /* ...and it is canonical: it re-encodes to the very input. */
        size_t e = crypto_b64_encode(strict, (size_t)n, again);
        FUZZ_CHECK(e == size && memcmp(again, s, size) == 0);
    }
    if (m >= 0) {
        /* Lenient only differs by reading spaces as '+'. */
        size_t e = crypto_b64_encode(lenient, (size_t)m, again);
        FUZZ_CHECK(e == size);
        for (size_t i = 0; i < size; i++)
            FUZZ_CHECK(again[i] == s[i] || (s[i] == ' ' && again[i] == '+'));
    }
out:
    free(strict);
    free(lenient);
    free(again);
    return 0;
}
