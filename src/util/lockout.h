/*
 * util/lockout: caps failed credential checks per client address (the admin token's guard).
 *
 * A key (the client's address as text) that fails max_failures checks within window_ms of its
 * first failure is locked out for window_ms from the failure that reached the limit: its
 * attempts are refused without running the check, so guessing is capped at max_failures per
 * window per address, whatever the request rate. A passing check changes no count, its own
 * address's included: failures age out with their window, so a guesser cannot clear its count
 * by slipping in a good request through the same proxy.
 *
 * The table is process-wide and fixed in size (capacity entries, taken at creation): a new key
 * in a full table replaces the least recently active entry that is not locked out (when all are,
 * the least recently active one), so spraying addresses cannot grow it. One mutex guards it, and
 * the check runs under it, so concurrent attempts from one address cannot overshoot the limit;
 * keep checks short (a constant-time compare). Times are monotonic milliseconds given by the
 * caller. Thread-safe; never logs: the outcome says when a line is worth writing.
 */
#ifndef WXLOGIN_UTIL_LOCKOUT_H
#define WXLOGIN_UTIL_LOCKOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys are cut to this many bytes (an IPv6 address with a zone fits). */
#define LOCKOUT_KEY_MAX 63

struct lockout;

/* A table of capacity keys (at least 1); NULL when out of memory or an argument is 0. */
struct lockout *lockout_new(size_t capacity, unsigned max_failures, uint64_t window_ms);
/* Accepts NULL. */
void lockout_free(struct lockout *lo);

/* The credential check an attempt runs: true when it passes. */
typedef bool lockout_check_fn(void *arg);

enum lockout_outcome {
    LOCKOUT_PASSED,       /* the check passed */
    LOCKOUT_FAILED,       /* the check failed; counted */
    LOCKOUT_FAILED_FIRST, /* the check failed, the key's first failure of its window */
    LOCKOUT_FAILED_LOCK,  /* the check failed and this failure locked the key out */
    LOCKOUT_REFUSED,      /* the key is locked out: the check did not run */
};

/*
 * One attempt by key (borrowed) at now_ms: refused while key is locked out, else runs
 * check(arg) and counts a failure. *retry_ms (when not NULL) is set with LOCKOUT_REFUSED and
 * LOCKOUT_FAILED_LOCK to how long the lockout still lasts (at least 1). FAILED_FIRST and
 * FAILED_LOCK come once per key and window, for a log line that does not repeat per guess.
 */
enum lockout_outcome lockout_attempt(struct lockout *lo, const char *key, uint64_t now_ms,
                                     lockout_check_fn *check, void *arg, uint64_t *retry_ms);

/* Keys the table holds now (at most its capacity). */
size_t lockout_count(struct lockout *lo);

#endif
