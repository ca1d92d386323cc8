/*
 * Unit tests for util/arena.h: alignment, the owner's first block, chunks and large blocks,
 * clearing (memory wiped and reusable), and the per-thread chunk cache (no malloc once warm;
 * the ASan build checks that nothing leaks or is used after a clear).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/arena.h"

static int teardown(void **state)
{
    (void)state;
    arena_thread_done();
    return 0;
}

static void test_allocations_are_aligned_and_distinct(void **state)
{
    (void)state;
    _Alignas(16) char first[256];
    struct arena a;
    arena_init(&a, first, sizeof(first));
    char *prev = NULL;
    for (size_t n = 1; n < 300; n += 7) {
        char *p = arena_alloc(&a, n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0x5a, n); /* ASan: the whole block is usable */
        assert_true(p != prev);
        prev = p;
    }
    arena_clear(&a);
}

static void test_first_block_is_used_first(void **state)
{
    (void)state;
    _Alignas(16) char first[256];
    struct arena a;
    arena_init(&a, first, sizeof(first));
    char *p = arena_alloc(&a, 32);
    assert_true(p >= first && p < first + sizeof(first));
    arena_clear(&a);
    char *q = arena_alloc(&a, 32);
    assert_ptr_equal(p, q); /* a cleared arena starts over in its first block */
    arena_clear(&a);
}

static void test_clear_wipes_the_first_block(void **state)
{
    (void)state;
    _Alignas(16) char first[256];
    struct arena a;
    arena_init(&a, first, sizeof(first));
    char *s = arena_strdup(&a, "wxl_secret_token");
    assert_string_equal(s, "wxl_secret_token");
    arena_clear(&a);
    assert_null(memmem(first, sizeof(first), "secret", 6));
}

static void test_large_and_many_allocations(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, NULL, 0); /* no first block at all */
    void *big = arena_alloc(&a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    for (int i = 0; i < 1000; i++) {
        char *p = arena_zalloc(&a, 100);
        assert_non_null(p);
        for (int k = 0; k < 100; k++)
            assert_int_equal(p[k], 0);
        memset(p, 2, 100);
    }
    void *big2 = arena_memdup(&a, big, 100000);
    assert_memory_equal(big2, big, 100000);
    arena_clear(&a);
    arena_clear(&a); /* twice is fine */
}

static void test_zero_size_and_copies(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, NULL, 0);
    assert_non_null(arena_alloc(&a, 0));
    assert_non_null(arena_memdup(&a, "", 0));
    char *s = arena_strdup(&a, "");
    assert_non_null(s);
    assert_string_equal(s, "");
    arena_clear(&a);
}

/* The chunk cache serves the next arena: counting mallocs is not possible here, but a chunk
 * given back and taken again must be wiped and whole. */
static void test_recycled_chunks_are_wiped(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, NULL, 0);
    char *p = arena_alloc(&a, 512);
    memcpy(p, "session_key=abc", 16);
    arena_clear(&a);
    arena_init(&a, NULL, 0);
    char *q = arena_alloc(&a, 512);
    if (q == p) /* the same chunk came back from the cache */
        assert_null(memmem(q, 512, "session_key", 11));
    arena_clear(&a);
}

static void *thread_use(void *arg)
{
    (void)arg;
    struct arena a;
    arena_init(&a, NULL, 0);
    for (int i = 0; i < 100; i++)
        assert_non_null(arena_alloc(&a, 1000));
    arena_clear(&a);
    arena_thread_done(); /* the thread's cache goes with it */
    return NULL;
}

static void test_each_thread_has_its_cache(void **state)
{
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_use, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_teardown(fn, teardown)
        T(test_allocations_are_aligned_and_distinct),
        T(test_first_block_is_used_first),
        T(test_clear_wipes_the_first_block),
        T(test_large_and_many_allocations),
        T(test_zero_size_and_copies),
        T(test_recycled_chunks_are_wiped),
        T(test_each_thread_has_its_cache),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
