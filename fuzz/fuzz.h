/*
 * fuzz: what every libFuzzer driver shares. Each fuzz_<name>.c feeds one parser of outside
 * input and, where one exists, checks a property beyond "no crash": FUZZ_CHECK aborts, which
 * libFuzzer reports as a crash with the input that broke it.
 */
#ifndef WXLOGIN_FUZZ_H
#define WXLOGIN_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated copy of the input (the caller frees it), for parsers of C strings. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
    }
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
