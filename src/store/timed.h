/*
 * store/timed: the decorator that counts and times a store's operations for metrics (see
 * timed.c). Not an API outside src/store.
 */
#ifndef WXLOGIN_STORE_TIMED_H
#define WXLOGIN_STORE_TIMED_H

#include "store/store.h"

/* Wraps inner (taken: closing the wrapper closes it). Returns 0, or -1 when out of memory (inner
 * is then still the caller's). */
int store_timed_wrap(struct store *inner, struct store **out);

#endif
