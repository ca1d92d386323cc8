/* The mock's code grammar: directives then the user ("delay300_fail40029x2_alice-1"). */
#include "fuzz.h"
#include "mock/code.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *code = fuzz_cstr(data, size);
    if (code == NULL)
        return 0;
    struct mock_code mc;
    if (mock_code_parse(code, &mc) == 0) {
        FUZZ_CHECK(mc.nd <= MOCK_MAX_DIRECTIVES);
        FUZZ_CHECK(mc.user[0] != '\0' && strlen(mc.user) <= MOCK_USER_MAX);
        for (size_t i = 0; i < mc.nd; i++)
            (void)mock_directive_applies(&mc.d[i], 1);
    }
    free(code);
    return 0;
}
