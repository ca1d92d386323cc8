#include "mock/codeset.h"

#include <openssl/sha.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    uint64_t key; /* 0 = empty */
    uint32_t value;
};

struct gen {
    struct slot *slots;
    size_t used;
};

struct codeset {
    struct gen cur, prev;
    size_t cap; /* power of two */
    uint64_t rotate_ms, born_ms;
    bool started; /* born_ms is set */
};

uint64_t codeset_key(const char *code, size_t len)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)code, len, md);
    uint64_t k;
    memcpy(&k, md, sizeof(k));
    return k ? k : 1;
}

struct codeset *codeset_new(size_t capacity, uint64_t rotate_ms)
{
    struct codeset *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return NULL;
    cs->cap = capacity;
    cs->rotate_ms = rotate_ms;
    cs->cur.slots = calloc(capacity, sizeof(struct slot));
    cs->prev.slots = calloc(capacity, sizeof(struct slot));
    if (cs->cur.slots == NULL || cs->prev.slots == NULL) {
        codeset_free(cs);
        return NULL;
    }
    return cs;
}

void codeset_free(struct codeset *cs)
{
    if (cs == NULL)
        return;
    free(cs->cur.slots);
    free(cs->prev.slots);
    free(cs);
}

/* Linear probing; the table is never more than half full, so a probe always ends. */
static struct slot *find(const struct codeset *cs, const struct gen *g, uint64_t key)
{
    size_t mask = cs->cap - 1;
    for (size_t i = (size_t)key & mask;; i = (i + 1) & mask) {
        struct slot *s = &g->slots[i];
        if (s->key == key || s->key == 0)
            return s;
    }
}

static void maybe_rotate(struct codeset *cs, uint64_t now_ms)
{
    if (!cs->started) {
        cs->started = true;
        cs->born_ms = now_ms;
    }
    if (cs->cur.used < cs->cap / 2 && now_ms - cs->born_ms < cs->rotate_ms)
        return;
    struct gen old = cs->prev;
    cs->prev = cs->cur;
    memset(old.slots, 0, cs->cap * sizeof(struct slot));
    old.used = 0;
    cs->cur = old;
    cs->born_ms = now_ms;
}

uint32_t codeset_get(struct codeset *cs, uint64_t key, uint64_t now_ms)
{
    maybe_rotate(cs, now_ms);
    struct slot *s = find(cs, &cs->cur, key);
    if (s->key == key)
        return s->value;
    s = find(cs, &cs->prev, key);
    return s->key == key ? s->value : 0;
}

void codeset_put(struct codeset *cs, uint64_t key, uint32_t value, uint64_t now_ms)
{
    maybe_rotate(cs, now_ms);
    struct slot *s = find(cs, &cs->cur, key);
    if (s->key == 0) {
        s->key = key;
        cs->cur.used++;
    }
    s->value = value;
}
