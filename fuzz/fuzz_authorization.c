/* The Authorization header: a client's bearer token, and the admin token's credentials. */
#include <strings.h>

#include "fuzz.h"
#include "handlers/handlers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *h = fuzz_cstr(data, size);
    if (h == NULL)
        return 0;
    size_t n = strlen(h); /* a header value ends at its first NUL */
    const char *cred = handlers_bearer_credentials(h);
    bool bearer = strncasecmp(h, "Bearer ", 7) == 0;
    FUZZ_CHECK((cred != NULL) == bearer);
    if (cred != NULL) {
        /* What follows the scheme and its spaces, inside the header. */
        FUZZ_CHECK(cred >= h + 7 && cred <= h + n && *cred != ' ');
        for (const char *p = h + 7; p < cred; p++)
            FUZZ_CHECK(*p == ' ');
    }
    const char *why = NULL;
    const char *tok = handlers_bearer_parse(h, &why);
    if (tok != NULL) {
        /* One of our tokens, the whole rest of the header. */
        FUZZ_CHECK(crypto_token_well_formed(tok));
        FUZZ_CHECK(tok == cred && tok + CRYPTO_TOKEN_LEN == h + n);
    } else {
        /* Says why in one of its own words, never with what the client sent. */
        FUZZ_CHECK(why != NULL && (strcmp(why, "malformed token") == 0 ||
                                   strcmp(why, "Authorization must use the Bearer scheme") == 0));
    }
    why = NULL;
    FUZZ_CHECK(handlers_bearer_parse(NULL, &why) == NULL &&
               strcmp(why, "missing Authorization: Bearer token") == 0);
    /* Any token of ours is accepted after the scheme, in any case, with any number of spaces. */
    if (crypto_token_well_formed(h)) {
        char again[CRYPTO_TOKEN_LEN + 16];
        snprintf(again, sizeof(again), "bEaReR   %s", h);
        tok = handlers_bearer_parse(again, &why);
        FUZZ_CHECK(tok != NULL && strcmp(tok, h) == 0);
    }
    free(h);
    return 0;
}
