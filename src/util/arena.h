/*
 * util/arena: scratch memory that dies all at once (h2o's h2o_mem_pool_t).
 *
 * A request's state, its body, its reply and its response headers are carved from one arena
 * and released together when the request ends, so no handler frees anything piecemeal. The
 * first block is provided by the owner (embedded in the request); more come from a per-thread
 * cache of fixed-size chunks, so a request that fits in a few chunks costs no malloc once the
 * cache is warm. Large allocations get a chunk of their own.
 *
 * Everything an arena handed out is wiped when it is cleared: it may have held a session_key or
 * a token. One arena belongs to one thread.
 */
#ifndef WXLOGIN_UTIL_ARENA_H
#define WXLOGIN_UTIL_ARENA_H

#include <stddef.h>

struct arena_chunk;

struct arena {
    char *first; /* the owner's block */
    size_t first_size;
    char *pos, *end; /* free space of the current block */
    struct arena_chunk *chunks;
};

/* Sets a up with the owner's first block (borrowed; may be NULL/0). */
void arena_init(struct arena *a, void *first, size_t size);
/* n bytes aligned to 16, NULL when out of memory. Zeroed with arena_zalloc. */
void *arena_alloc(struct arena *a, size_t n);
void *arena_zalloc(struct arena *a, size_t n);
/* Copies of bytes and strings (NUL-terminated), or NULL. */
void *arena_memdup(struct arena *a, const void *p, size_t n);
char *arena_strdup(struct arena *a, const char *s);
/* Wipes and releases everything; a is ready for reuse with its first block. */
void arena_clear(struct arena *a);

/* Frees the calling thread's chunk cache (thread exit). */
void arena_thread_done(void);

#endif
