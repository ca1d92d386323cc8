/*
 * mock/codeset: a bounded memory of codes (by their hash) with a small counter each.
 *
 * Two generations: lookups see both, inserts go to the current one, and the current one becomes
 * the previous one when it is half full or older than the rotation age. So a code is remembered
 * for at least that age unless more than capacity/2 codes arrive meanwhile, and memory never
 * grows. Not thread-safe: the mock holds its lock around it.
 */
#ifndef WXLOGIN_MOCK_CODESET_H
#define WXLOGIN_MOCK_CODESET_H

#include <stddef.h>
#include <stdint.h>

struct codeset;

/* capacity: slots per generation (a power of two); rotate_ms: generation age. */
struct codeset *codeset_new(size_t capacity, uint64_t rotate_ms);
void codeset_free(struct codeset *cs);

/* Hash of a code as used for keys (SHA-256, truncated; never 0). */
uint64_t codeset_key(const char *code, size_t len);

/* Value stored for key, 0 when unknown. */
uint32_t codeset_get(struct codeset *cs, uint64_t key, uint64_t now_ms);
/* Stores value for key. */
void codeset_put(struct codeset *cs, uint64_t key, uint32_t value, uint64_t now_ms);

#endif
