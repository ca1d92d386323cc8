/*
 * util/arena: a bump allocator over a list of chunks. Standard chunks (CHUNK_SIZE) are recycled
 * through a small per-thread cache; an allocation larger than a quarter of a chunk gets a
 * dedicated chunk, freed (not cached) on clear.
 */
#include "util/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"

#define CHUNK_SIZE 4096
#define CACHE_MAX 64
#define ALIGN 16

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used; /* what was handed out, to wipe on clear */
    _Alignas(ALIGN) char data[];
};

struct chunk_cache {
    struct arena_chunk *head;
    size_t n;
};

static _Thread_local struct chunk_cache t_cache;

static size_t round_up(size_t n)
{
    return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

void arena_init(struct arena *a, void *first, size_t size)
{
    /* The first block is aligned by its owner's declaration; trim it to whole units. */
    a->first = first;
    a->first_size = first != NULL ? size & ~(size_t)(ALIGN - 1) : 0;
    a->pos = a->first;
    a->end = a->first != NULL ? a->first + a->first_size : NULL;
    a->chunks = NULL;
}

static struct arena_chunk *chunk_get(size_t size)
{
    struct chunk_cache *c = &t_cache;
    if (size == CHUNK_SIZE && c->head != NULL) {
        struct arena_chunk *k = c->head;
        c->head = k->next;
        c->n--;
        k->used = 0;
        return k;
    }
    struct arena_chunk *k = malloc(sizeof(*k) + size);
    if (k == NULL)
        return NULL;
    k->size = size;
    k->used = 0;
    return k;
}

static void chunk_put(struct arena_chunk *k)
{
    struct chunk_cache *c = &t_cache;
    crypto_wipe(k->data, k->used);
    if (k->size == CHUNK_SIZE && c->n < CACHE_MAX) {
        k->next = c->head;
        c->head = k;
        c->n++;
        return;
    }
    free(k);
}

/* Records how much of the current chunk was used, for the wipe on clear. */
static void note_used(struct arena *a)
{
    if (a->chunks != NULL && a->pos >= a->chunks->data &&
        a->pos <= a->chunks->data + a->chunks->size)
        a->chunks->used = (size_t)(a->pos - a->chunks->data);
}

void *arena_alloc(struct arena *a, size_t n)
{
    n = round_up(n == 0 ? 1 : n);
    if (a->pos != NULL && (size_t)(a->end - a->pos) >= n) {
        void *p = a->pos;
        a->pos += n;
        return p;
    }
    if (n > CHUNK_SIZE / 4) {
        /* A chunk of its own, kept behind the current one so the current stays in use. */
        struct arena_chunk *k = chunk_get(n);
        if (k == NULL)
            return NULL;
        k->used = n;
        if (a->chunks != NULL) {
            k->next = a->chunks->next;
            a->chunks->next = k;
        } else {
            k->next = NULL;
            a->chunks = k;
            a->pos = a->end = k->data + n; /* no room left in it */
        }
        return k->data;
    }
    note_used(a);
    struct arena_chunk *k = chunk_get(CHUNK_SIZE);
    if (k == NULL)
        return NULL;
    k->next = a->chunks;
    a->chunks = k;
    a->pos = k->data + n;
    a->end = k->data + k->size;
    return k->data;
}

void *arena_zalloc(struct arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
    void *q = arena_alloc(a, n);
    if (q != NULL && n > 0)
        memcpy(q, p, n);
    return q;
}

char *arena_strdup(struct arena *a, const char *s)
{
    size_t n = strlen(s);
    char *q = arena_alloc(a, n + 1);
    if (q != NULL)
        memcpy(q, s, n + 1);
    return q;
}

void arena_clear(struct arena *a)
{
    note_used(a);
    /* The first block: wipe what was used of it (all of it when chunks followed). */
    if (a->first != NULL) {
        size_t used = a->chunks == NULL ? (size_t)(a->pos - a->first) : a->first_size;
        crypto_wipe(a->first, used);
    }
    while (a->chunks != NULL) {
        struct arena_chunk *k = a->chunks;
        a->chunks = k->next;
        chunk_put(k);
    }
    a->pos = a->first;
    a->end = a->first != NULL ? a->first + a->first_size : NULL;
}

void arena_thread_done(void)
{
    struct chunk_cache *c = &t_cache;
    while (c->head != NULL) {
        struct arena_chunk *k = c->head;
        c->head = k->next;
        free(k);
    }
    c->n = 0;
}
