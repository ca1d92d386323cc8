/*
 * Unit tests for exchange/exchange.h: the single-flight table of login-code exchanges. Roles
 * (lead, wait, known), waking waiters through their own loop (and only there), remembering or
 * forgetting outcomes, expiry, a full table (what it forgets first, and that an exchange in
 * flight always has its entry), the memory an entry costs, cancellation before and after the
 * wake was posted, waiters on two loops in two threads, and the outcome's shared text.
 *
 * A loop is run "until drained" by posting loop_stop after everything else: posts run in order,
 * so every wake posted before has run when loop_run returns. Every test arms an alarm first: a
 * wake that never comes kills the test instead of hanging it. The ASan build checks that no
 * waiter leaks, including one cancelled after its wake was posted and freed by loop_free.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "exchange/exchange.h"
#include "loop/loop.h"
#include "loop_drain.h"
#include "runtime/async.h"

#define WATCHDOG_S 10
#define APPID "wx0123456789abcdef"
#define TTL_MS 100 /* short remembered-outcome lifetime for the expiry tests */

/* Each wait occupies a pending slot of its own (a request's, in the service). */
static struct async_slot g_slots[64];
static size_t g_nslots;

struct fixture {
    struct exchange *x;
    struct loop *loop;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    f->x = exchange_new(16, 60000);
    f->loop = loop_new();
    memset(g_slots, 0, sizeof(g_slots));
    g_nslots = 0;
    *state = f;
    if (f->x == NULL || f->loop == NULL)
        return -1;
    alarm(WATCHDOG_S);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    alarm(0);
    loop_free(f->loop);
    exchange_free(f->x);
    free(f);
    return 0;
}

/* Replaces the fixture's table with one of other bounds. */
static void reset_table(struct fixture *f, size_t max_entries, uint64_t ttl_ms)
{
    exchange_free(f->x);
    f->x = exchange_new(max_entries, ttl_ms);
    assert_non_null(f->x);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- wakes ---- */

struct wake_rec {
    int calls;
    struct exchange_outcome out;
    pthread_t thread;
    struct loop *stop; /* when set, the wake stops this loop (its own) */
};

static void on_wake(const struct exchange_outcome *o, void *arg)
{
    struct wake_rec *r = arg;
    r->calls++;
    r->out = *o;
    r->thread = pthread_self();
    if (r->stop != NULL)
        loop_stop(r->stop);
}

/* ---- helpers ---- */

static void key_of(const char *code, uint8_t key[CRYPTO_HASH_LEN])
{
    exchange_key(APPID, code, key);
}

static enum exchange_role begin(struct fixture *f, const uint8_t *key, struct wake_rec *rec,
                                struct exchange_outcome *out, struct async_slot **w)
{
    assert_true(g_nslots < sizeof(g_slots) / sizeof(g_slots[0]));
    struct async_slot *slot = &g_slots[g_nslots++];
    enum exchange_role role = exchange_begin(f->x, key, f->loop, slot, on_wake, rec, out);
    if (role == EXCHANGE_WAIT) {
        assert_true(async_pending(slot));
        *w = slot;
    } else {
        assert_false(async_pending(slot));
    }
    return role;
}

static struct exchange_outcome ok_outcome(const char *openid, const char *unionid)
{
    struct exchange_outcome o;
    memset(&o, 0, sizeof(o));
    o.kind = EXCHANGE_OK;
    snprintf(o.openid, sizeof(o.openid), "%s", openid);
    snprintf(o.unionid, sizeof(o.unionid), "%s", unionid);
    return o;
}

static struct exchange_outcome wechat_outcome(long errcode)
{
    struct exchange_outcome o;
    memset(&o, 0, sizeof(o));
    o.kind = EXCHANGE_WECHAT;
    o.status = WECHAT_ERRCODE;
    o.errcode = errcode;
    o.http_status = 200;
    return o;
}

/* Leads key (asserting LEAD) and queues one waiter on it (asserting WAIT). */
static struct async_slot *lead_and_wait(struct fixture *f, const uint8_t *key, struct wake_rec *rec)
{
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, key, rec, &out, &w), EXCHANGE_WAIT);
    assert_non_null(w);
    return w;
}

/* ---- keys ---- */

static void test_key_is_sha256_of_appid_newline_code(void **state)
{
    (void)state;
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN], want[CRYPTO_HASH_LEN];
    exchange_key(APPID, "081abc", k1);
    exchange_key(APPID, "081abc", k2);
    assert_memory_equal(k1, k2, CRYPTO_HASH_LEN);
    const char *s = APPID "\n081abc";
    crypto_sha256(s, strlen(s), want);
    assert_memory_equal(k1, want, CRYPTO_HASH_LEN);
}

static void test_key_differs_by_appid(void **state)
{
    (void)state;
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN];
    exchange_key("wx0123456789abcdef", "081abc", k1);
    exchange_key("wx0123456789abcdee", "081abc", k2);
    assert_memory_not_equal(k1, k2, CRYPTO_HASH_LEN);
}

static void test_key_differs_by_code(void **state)
{
    (void)state;
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN];
    exchange_key(APPID, "081abc", k1);
    exchange_key(APPID, "081abd", k2);
    assert_memory_not_equal(k1, k2, CRYPTO_HASH_LEN);
}

/* ---- roles ---- */

static void test_first_begin_leads(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", key);
    assert_int_equal(exchange_size(f->x), 0);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    assert_null(w);
    assert_int_equal(exchange_size(f->x), 1);
    exchange_finish(f->x, key, &(struct exchange_outcome){.kind = EXCHANGE_ABORTED}, false);
}

static void test_second_begin_same_key_waits(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    key_of("code-1", key);
    struct async_slot *w = lead_and_wait(f, key, &rec);
    assert_int_equal(exchange_size(f->x), 1);
    async_cancel(w);
    exchange_finish(f->x, key, &(struct exchange_outcome){.kind = EXCHANGE_ABORTED}, false);
}

static void test_other_key_leads_while_one_is_in_flight(void **state)
{
    struct fixture *f = *state;
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", k1);
    key_of("code-2", k2);
    assert_int_equal(begin(f, k1, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k2, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 2);
}

/* ---- finishing ---- */

static void test_finish_remember_wakes_waiter_on_its_loop(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    key_of("code-1", key);
    lead_and_wait(f, key, &rec);

    struct exchange_outcome o = ok_outcome("openid-1", "unionid-1");
    exchange_finish(f->x, key, &o, true);
    /* Woken through the loop, never from the leader's call. */
    assert_int_equal(rec.calls, 0);
    drain(f->loop);
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.out.kind, EXCHANGE_OK);
    assert_string_equal(rec.out.openid, "openid-1");
    assert_string_equal(rec.out.unionid, "unionid-1");
    assert_true(pthread_equal(rec.thread, pthread_self()));
    /* Exactly once. */
    drain(f->loop);
    assert_int_equal(rec.calls, 1);
}

static void test_begin_after_remembered_finish_is_known(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec rec = {0};
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    struct exchange_outcome o = ok_outcome("openid-1", "unionid-1");
    exchange_finish(f->x, key, &o, true);

    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(begin(f, key, &rec, &out, &w), EXCHANGE_KNOWN);
    assert_null(w);
    assert_int_equal(out.kind, EXCHANGE_OK);
    assert_string_equal(out.openid, "openid-1");
    assert_string_equal(out.unionid, "unionid-1");
    assert_int_equal(exchange_size(f->x), 1);
    drain(f->loop);
    assert_int_equal(rec.calls, 0);
}

static void test_remembered_final_failure_is_known(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    struct exchange_outcome o = wechat_outcome(40029);
    exchange_finish(f->x, key, &o, true);
    memset(&out, 0, sizeof(out));
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_int_equal(out.kind, EXCHANGE_WECHAT);
    assert_int_equal(out.status, WECHAT_ERRCODE);
    assert_int_equal(out.errcode, 40029);
    assert_int_equal(out.http_status, 200);
}

static void test_finish_forget_shares_outcome_then_next_begin_leads(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec rec = {0};
    key_of("code-1", key);
    lead_and_wait(f, key, &rec);

    struct exchange_outcome o = wechat_outcome(-1);
    exchange_finish(f->x, key, &o, false);
    assert_int_equal(exchange_size(f->x), 0);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 1);

    /* The waiter of the moment still gets the transient outcome. */
    drain(f->loop);
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.out.kind, EXCHANGE_WECHAT);
    assert_int_equal(rec.out.errcode, -1);
}

static void test_several_waiters_each_woken_once(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec rec[4] = {{0}};
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    for (int i = 0; i < 4; i++)
        assert_int_equal(begin(f, key, &rec[i], &out, &w), EXCHANGE_WAIT);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    drain(f->loop);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rec[i].calls, 1);
        assert_string_equal(rec[i].out.openid, "openid-1");
        assert_string_equal(rec[i].out.unionid, "");
    }
}

static void test_second_finish_keeps_first_outcome(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    struct exchange_outcome o1 = ok_outcome("openid-1", ""), o2 = ok_outcome("openid-2", "");
    exchange_finish(f->x, key, &o1, true);
    exchange_finish(f->x, key, &o2, false);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_string_equal(out.openid, "openid-1");
}

static void test_finish_of_unknown_key_is_harmless(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    key_of("never-begun", key);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    assert_int_equal(exchange_size(f->x), 0);
}

/* ---- expiry and bounds ---- */

static void test_remembered_outcome_expires_after_ttl(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 16, TTL_MS);
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_KNOWN);
    sleep_ms(TTL_MS + 50);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 1);
}

static void test_expired_entries_leave_the_table(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 16, TTL_MS);
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN], k3[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", k1);
    key_of("code-2", k2);
    key_of("code-3", k3);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    assert_int_equal(begin(f, k1, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k2, NULL, &out, &w), EXCHANGE_LEAD);
    exchange_finish(f->x, k1, &o, true);
    exchange_finish(f->x, k2, &o, true);
    assert_int_equal(exchange_size(f->x), 2);
    sleep_ms(TTL_MS + 50);
    assert_int_equal(begin(f, k3, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 1);
}

static void test_in_flight_entry_survives_ttl(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 16, TTL_MS);
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec rec = {0};
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    sleep_ms(TTL_MS + 50);
    /* Still being exchanged: a repeat must wait, not lead a second WeChat call. */
    assert_int_equal(begin(f, key, &rec, &out, &w), EXCHANGE_WAIT);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    drain(f->loop);
    assert_int_equal(rec.calls, 1);
}

/* A full table never turns de-duplication off: a new code still gets its in-flight entry (the
 * table then holds more than its bound: exchanges in flight are bounded by the requests). Before
 * issue 9 the third code led without an entry, and its repeat led a second WeChat call. */
static void test_full_table_still_makes_in_flight_entries(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 2, 60000);
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN], k3[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec rec = {0};
    key_of("code-1", k1);
    key_of("code-2", k2);
    key_of("code-3", k3);
    assert_int_equal(begin(f, k1, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k2, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k3, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 3);
    /* k3 has its entry: a repeat waits for the leader instead of leading again. */
    assert_int_equal(begin(f, k3, &rec, &out, &w), EXCHANGE_WAIT);
    assert_non_null(w);

    struct exchange_outcome o = ok_outcome("openid-3", "");
    exchange_finish(f->x, k3, &o, true);
    drain(f->loop);
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.out.openid, "openid-3");
    assert_int_equal(begin(f, k3, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_string_equal(out.openid, "openid-3");
    assert_int_equal(exchange_size(f->x), 3);

    /* Room again once exchanges end: k1 forgotten, k2 remembered; a new code then forgets
     * the oldest remembered outcome (k3) to stay within the bound. */
    exchange_finish(f->x, k1, &o, false);
    exchange_finish(f->x, k2, &o, true);
    assert_int_equal(exchange_size(f->x), 2);
    assert_int_equal(begin(f, k1, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 2);
    assert_int_equal(begin(f, k2, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_int_equal(begin(f, k1, NULL, &out, &w), EXCHANGE_WAIT);
    async_cancel(w);
}

/* Leads key and finishes it with o, remembered (a leader occupies no slot: no g_slots used). */
static void remember(struct fixture *f, const uint8_t *key, const struct exchange_outcome *o)
{
    struct exchange_outcome out;
    struct async_slot slot = {NULL};
    assert_int_equal(exchange_begin(f->x, key, f->loop, &slot, on_wake, NULL, &out), EXCHANGE_LEAD);
    exchange_finish(f->x, key, o, true);
}

static void keys_of(const char *prefix, int n, uint8_t (*keys)[CRYPTO_HASH_LEN])
{
    for (int i = 0; i < n; i++) {
        char code[64];
        snprintf(code, sizeof(code), "%s-%d", prefix, i);
        key_of(code, keys[i]);
    }
}

/*
 * Under pressure the table forgets remembered failures before remembered successes, the oldest
 * first in each class (oldest: remembered first), and never an exchange in flight.
 */
static void test_full_table_forgets_failures_first_then_oldest_success(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 4, 60000);
    uint8_t k[10][CRYPTO_HASH_LEN];
    keys_of("evict", 10, k);
    struct exchange_outcome out, ok = ok_outcome("openid-1", ""), bad = wechat_outcome(40029);
    struct async_slot *w = NULL;

    /* Begun in order 0..3, remembered in order 2 (ok), 1 (failed), 0 (ok), 3 (failed). */
    for (int i = 0; i < 4; i++)
        assert_int_equal(begin(f, k[i], NULL, &out, &w), EXCHANGE_LEAD);
    exchange_finish(f->x, k[2], &ok, true);
    exchange_finish(f->x, k[1], &bad, true);
    exchange_finish(f->x, k[0], &ok, true);
    exchange_finish(f->x, k[3], &bad, true);
    assert_int_equal(exchange_size(f->x), 4);

    /* k4 in flight: the oldest failure (k1) goes. */
    assert_int_equal(begin(f, k[4], NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 4);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            assert_int_equal(begin(f, k[i], NULL, &out, &w), EXCHANGE_KNOWN);
    /* k5: the other failure (k3), not a success. */
    assert_int_equal(begin(f, k[5], NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k[0], NULL, &out, &w), EXCHANGE_KNOWN);
    assert_int_equal(begin(f, k[2], NULL, &out, &w), EXCHANGE_KNOWN);
    /* k6: no failure left: the oldest success, k2 (remembered before k0). */
    assert_int_equal(begin(f, k[6], NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k[0], NULL, &out, &w), EXCHANGE_KNOWN);
    assert_string_equal(out.openid, "openid-1");
    assert_int_equal(exchange_size(f->x), 4);

    /* A failure remembered after k0 still goes before it. */
    exchange_finish(f->x, k[4], &bad, true);
    assert_int_equal(begin(f, k[7], NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k[0], NULL, &out, &w), EXCHANGE_KNOWN);
    assert_int_equal(exchange_size(f->x), 4);

    /* k8 forgets k0, the last remembered outcome; then only exchanges in flight are left
     * (k5..k8), and k9 gets its entry beyond the bound: none is dropped. */
    assert_int_equal(begin(f, k[8], NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(begin(f, k[9], NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 5);
    struct wake_rec rec[5] = {{0}};
    for (int i = 5; i < 10; i++) {
        assert_int_equal(begin(f, k[i], &rec[i - 5], &out, &w), EXCHANGE_WAIT);
        exchange_finish(f->x, k[i], &ok, true);
    }
    drain(f->loop);
    for (int i = 0; i < 5; i++)
        assert_int_equal(rec[i].calls, 1);
    /* Every evicted code leads again (k1, k3, k2, k4 and k0 were forgotten). */
    int lead[] = {1, 3, 2, 4, 0};
    for (size_t i = 0; i < sizeof(lead) / sizeof(lead[0]); i++)
        assert_int_equal(begin(f, k[lead[i]], NULL, &out, &w), EXCHANGE_LEAD);
}

/* Issue 9: a flood of bogus codes (each a remembered 40029) never pushes out a success, so the
 * double tap of a real code is still answered from the table. */
static void test_flood_of_failures_keeps_successes(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 16, 60000);
    uint8_t good[CRYPTO_HASH_LEN], bogus[CRYPTO_HASH_LEN];
    struct exchange_outcome out, ok = ok_outcome("openid-good", "unionid-good");
    ok.session = true;
    ok.exchanged_ms = 1234567890123;
    struct exchange_outcome bad = wechat_outcome(40029);
    struct async_slot *w = NULL;
    key_of("good", good);
    remember(f, good, &ok);
    for (int i = 0; i < 2000; i++) {
        char code[32];
        snprintf(code, sizeof(code), "err40029_bogus-%d", i);
        key_of(code, bogus);
        remember(f, bogus, &bad);
        assert_true(exchange_size(f->x) <= 16);
    }
    assert_int_equal(begin(f, good, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_int_equal(out.kind, EXCHANGE_OK);
    assert_string_equal(out.openid, "openid-good");
    assert_string_equal(out.unionid, "unionid-good");
    assert_true(out.session);
    assert_true(out.exchanged_ms == 1234567890123);
    /* The last bogus code is still remembered too, the first long gone. */
    assert_int_equal(begin(f, bogus, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_int_equal(out.errcode, 40029);
    key_of("err40029_bogus-0", bogus);
    assert_int_equal(begin(f, bogus, NULL, &out, &w), EXCHANGE_LEAD);
}

/* What a remembered outcome costs: its few numbers, and a success's ids at their length, not
 * two 129-byte buffers (an entry cost over 370 bytes before issue 9). */
static void test_remembered_entries_are_compact(void **state)
{
    struct fixture *f = *state;
    reset_table(f, 1000, 60000);
    uint8_t k[200][CRYPTO_HASH_LEN];
    keys_of("mem", 200, k);
    struct exchange_outcome ok = ok_outcome("oGZUI0egBJY1zhBYw2KhdUfwVJJE",
                                            "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"),
                            bad = wechat_outcome(40029);
    for (int i = 0; i < 100; i++)
        remember(f, k[i], &bad);
    size_t failed = exchange_bytes(f->x);
    assert_true(failed / 100 <= 128);
    for (int i = 100; i < 200; i++)
        remember(f, k[i], &ok);
    size_t succeeded = exchange_bytes(f->x) - failed;
    assert_true(succeeded / 100 <= 128 + 2 * 29);
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    assert_int_equal(begin(f, k[150], NULL, &out, &w), EXCHANGE_KNOWN);
    assert_string_equal(out.openid, "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
    assert_string_equal(out.unionid, "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
    /* Ids of the longest length are kept whole. */
    char id[EXCHANGE_ID_MAX + 1];
    memset(id, 'o', EXCHANGE_ID_MAX);
    id[EXCHANGE_ID_MAX] = '\0';
    struct exchange_outcome big = ok_outcome(id, id);
    uint8_t kb[CRYPTO_HASH_LEN];
    key_of("big", kb);
    remember(f, kb, &big);
    assert_int_equal(begin(f, kb, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_string_equal(out.openid, id);
    assert_string_equal(out.unionid, id);
}

static void test_size_counts_in_flight_and_remembered(void **state)
{
    struct fixture *f = *state;
    uint8_t k1[CRYPTO_HASH_LEN], k2[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec rec = {0};
    key_of("code-1", k1);
    key_of("code-2", k2);
    assert_int_equal(exchange_size(f->x), 0);
    assert_int_equal(begin(f, k1, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 1);
    assert_int_equal(begin(f, k2, NULL, &out, &w), EXCHANGE_LEAD);
    assert_int_equal(exchange_size(f->x), 2);
    assert_int_equal(begin(f, k1, &rec, &out, &w), EXCHANGE_WAIT);
    assert_int_equal(exchange_size(f->x), 2);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, k1, &o, true);
    assert_int_equal(exchange_size(f->x), 2);
    exchange_finish(f->x, k2, &o, false);
    assert_int_equal(exchange_size(f->x), 1);
    drain(f->loop);
}

/* ---- cancellation ---- */

static void test_cancel_queued_waiter_is_never_woken(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w[4] = {NULL};
    struct wake_rec rec[4] = {{0}};
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w[0]), EXCHANGE_LEAD);
    for (int i = 0; i < 4; i++)
        assert_int_equal(begin(f, key, &rec[i], &out, &w[i]), EXCHANGE_WAIT);
    /* One in the middle of the queue and the newest: the others must still be woken. */
    async_cancel(w[1]);
    async_cancel(w[3]);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    drain(f->loop);
    assert_int_equal(rec[0].calls, 1);
    assert_int_equal(rec[1].calls, 0);
    assert_int_equal(rec[2].calls, 1);
    assert_int_equal(rec[3].calls, 0);
}

static void test_cancel_every_waiter_then_finish(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w[2] = {NULL};
    struct wake_rec rec[2] = {{0}};
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w[0]), EXCHANGE_LEAD);
    for (int i = 0; i < 2; i++)
        assert_int_equal(begin(f, key, &rec[i], &out, &w[i]), EXCHANGE_WAIT);
    async_cancel(w[0]);
    async_cancel(w[1]);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    drain(f->loop);
    assert_int_equal(rec[0].calls + rec[1].calls, 0);
    assert_int_equal(begin(f, key, NULL, &out, &w[0]), EXCHANGE_KNOWN);
}

static void test_cancel_after_finish_before_loop_ran_is_never_woken(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    key_of("code-1", key);
    struct async_slot *w = lead_and_wait(f, key, &rec);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    async_cancel(w);
    drain(f->loop);
    assert_int_equal(rec.calls, 0);
}

static void test_cancel_after_forgetting_finish_is_never_woken(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    key_of("code-1", key);
    struct async_slot *w = lead_and_wait(f, key, &rec);
    struct exchange_outcome o = wechat_outcome(-1);
    /* The entry is freed by the finish; the posted waiter must not need it. */
    exchange_finish(f->x, key, &o, false);
    async_cancel(w);
    drain(f->loop);
    assert_int_equal(rec.calls, 0);
}

static void test_loop_free_frees_posted_cancelled_waiter(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    key_of("code-1", key);
    struct async_slot *w = lead_and_wait(f, key, &rec);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    async_cancel(w);
    /* The loop never runs again: loop_free runs the queued delivery, which frees the waiter
     * (ASan reports a leak otherwise) without waking it. */
    loop_free(f->loop);
    f->loop = NULL;
    assert_int_equal(rec.calls, 0);
}

static void test_loop_free_delivers_posted_wake(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    key_of("code-1", key);
    lead_and_wait(f, key, &rec);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    exchange_finish(f->x, key, &o, true);
    loop_free(f->loop);
    f->loop = NULL;
    assert_int_equal(rec.calls, 1);
    assert_string_equal(rec.out.openid, "openid-1");
}

/* ---- threads ---- */

static void *run_loop_thread(void *arg)
{
    struct loop *loop = arg;
    if (loop_run(loop) != 0)
        abort();
    return NULL;
}

static void test_waiters_on_two_loops_woken_on_their_own_threads(void **state)
{
    struct fixture *f = *state;
    struct loop *la = loop_new(), *lb = loop_new();
    assert_non_null(la);
    assert_non_null(lb);
    uint8_t key[CRYPTO_HASH_LEN];
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    struct wake_rec ra = {.stop = la}, rb = {.stop = lb};
    key_of("code-1", key);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_LEAD);
    struct async_slot sa = {NULL}, sb = {NULL};
    assert_int_equal(exchange_begin(f->x, key, la, &sa, on_wake, &ra, &out), EXCHANGE_WAIT);
    assert_int_equal(exchange_begin(f->x, key, lb, &sb, on_wake, &rb, &out), EXCHANGE_WAIT);

    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, run_loop_thread, la), 0);
    assert_int_equal(pthread_create(&tb, NULL, run_loop_thread, lb), 0);
    struct exchange_outcome o = ok_outcome("openid-1", "unionid-1");
    /* Finished from this (the leader's) thread; each wake stops its own loop. */
    exchange_finish(f->x, key, &o, true);
    assert_int_equal(pthread_join(ta, NULL), 0);
    assert_int_equal(pthread_join(tb, NULL), 0);

    assert_int_equal(ra.calls, 1);
    assert_int_equal(rb.calls, 1);
    assert_true(pthread_equal(ra.thread, ta));
    assert_true(pthread_equal(rb.thread, tb));
    assert_string_equal(ra.out.openid, "openid-1");
    assert_string_equal(rb.out.unionid, "unionid-1");
    loop_free(la);
    loop_free(lb);
}

/* Outcomes shared between instances through the store: text that decodes to itself. */
static void test_outcome_encode_decode_round_trip(void **state)
{
    (void)state;
    struct exchange_outcome in[3] = {ok_outcome("o\"quoted\"", "u1"), wechat_outcome(40163),
                                     ok_outcome("o2", "")};
    in[2].session = true;
    in[2].exchanged_ms = 1764587742123;
    for (int i = 0; i < 3; i++) {
        char text[512];
        size_t n = exchange_outcome_encode(&in[i], text, sizeof(text));
        assert_true(n > 0);
        struct exchange_outcome out;
        assert_int_equal(exchange_outcome_decode(text, n, &out), 0);
        assert_int_equal(out.kind, in[i].kind);
        assert_string_equal(out.openid, in[i].openid);
        assert_string_equal(out.unionid, in[i].unionid);
        assert_int_equal(out.status, in[i].status);
        assert_int_equal(out.errcode, in[i].errcode);
        assert_int_equal(out.http_status, in[i].http_status);
        assert_int_equal(out.session, in[i].session);
        assert_true(out.exchanged_ms == in[i].exchanged_ms);
    }
    char small[16];
    assert_int_equal(exchange_outcome_encode(&in[0], small, sizeof(small)), 0);
    struct exchange_outcome out;
    assert_int_equal(exchange_outcome_decode("{\"kind\":9}", 10, &out), -1);
    assert_int_equal(exchange_outcome_decode("nope", 4, &out), -1);
}

/* Records an earlier version published (no "session", no "at_ms") still decode, as outcomes no
 * repeat may be answered a session from; anything else ill-typed is refused. */
static void test_outcome_decode_old_records_and_bad_new_fields(void **state)
{
    (void)state;
    struct exchange_outcome out;
    const char *old = "{\"kind\":0,\"openid\":\"o1\",\"unionid\":\"\",\"status\":0,"
                      "\"errcode\":0,\"http_status\":200}";
    memset(&out, 0xa5, sizeof(out));
    assert_int_equal(exchange_outcome_decode(old, strlen(old), &out), 0);
    assert_int_equal(out.kind, EXCHANGE_OK);
    assert_string_equal(out.openid, "o1");
    assert_false(out.session);
    assert_true(out.exchanged_ms == 0);
    static const char *const bad[] = {
        /* session not 0 or 1, not a number, or claimed for a failure */
        "{\"kind\":0,\"openid\":\"o1\",\"unionid\":\"\",\"status\":0,\"errcode\":0,"
        "\"http_status\":200,\"session\":2,\"at_ms\":1}",
        "{\"kind\":0,\"openid\":\"o1\",\"unionid\":\"\",\"status\":0,\"errcode\":0,"
        "\"http_status\":200,\"session\":\"1\",\"at_ms\":1}",
        "{\"kind\":1,\"openid\":\"\",\"unionid\":\"\",\"status\":1,\"errcode\":40029,"
        "\"http_status\":200,\"session\":1,\"at_ms\":1}",
        /* at_ms negative or not an integer */
        "{\"kind\":0,\"openid\":\"o1\",\"unionid\":\"\",\"status\":0,\"errcode\":0,"
        "\"http_status\":200,\"session\":1,\"at_ms\":-5}",
        "{\"kind\":0,\"openid\":\"o1\",\"unionid\":\"\",\"status\":0,\"errcode\":0,"
        "\"http_status\":200,\"session\":1,\"at_ms\":1.5}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(exchange_outcome_decode(bad[i], strlen(bad[i]), &out), -1);
}

/* Waiters and later repeats get the whole outcome, whether a session was made and when. */
static void test_session_and_time_reach_waiters_and_repeats(void **state)
{
    struct fixture *f = *state;
    uint8_t key[CRYPTO_HASH_LEN];
    struct wake_rec rec = {0};
    struct exchange_outcome out;
    struct async_slot *w = NULL;
    key_of("code-1", key);
    lead_and_wait(f, key, &rec);
    struct exchange_outcome o = ok_outcome("openid-1", "");
    o.session = true;
    o.exchanged_ms = 1764587742123;
    exchange_finish(f->x, key, &o, true);
    drain(f->loop);
    assert_int_equal(rec.calls, 1);
    assert_true(rec.out.session);
    assert_true(rec.out.exchanged_ms == 1764587742123);
    assert_int_equal(begin(f, key, NULL, &out, &w), EXCHANGE_KNOWN);
    assert_true(out.session);
    assert_true(out.exchanged_ms == 1764587742123);
}

static void test_free_accepts_null(void **state)
{
    (void)state;
    exchange_free(NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_key_is_sha256_of_appid_newline_code),
        T(test_key_differs_by_appid),
        T(test_key_differs_by_code),
        T(test_first_begin_leads),
        T(test_second_begin_same_key_waits),
        T(test_other_key_leads_while_one_is_in_flight),
        T(test_finish_remember_wakes_waiter_on_its_loop),
        T(test_begin_after_remembered_finish_is_known),
        T(test_remembered_final_failure_is_known),
        T(test_finish_forget_shares_outcome_then_next_begin_leads),
        T(test_several_waiters_each_woken_once),
        T(test_second_finish_keeps_first_outcome),
        T(test_finish_of_unknown_key_is_harmless),
        T(test_remembered_outcome_expires_after_ttl),
        T(test_expired_entries_leave_the_table),
        T(test_in_flight_entry_survives_ttl),
        T(test_full_table_still_makes_in_flight_entries),
        T(test_full_table_forgets_failures_first_then_oldest_success),
        T(test_flood_of_failures_keeps_successes),
        T(test_remembered_entries_are_compact),
        T(test_size_counts_in_flight_and_remembered),
        T(test_cancel_queued_waiter_is_never_woken),
        T(test_cancel_every_waiter_then_finish),
        T(test_cancel_after_finish_before_loop_ran_is_never_woken),
        T(test_cancel_after_forgetting_finish_is_never_woken),
        T(test_loop_free_frees_posted_cancelled_waiter),
        T(test_loop_free_delivers_posted_wake),
        T(test_waiters_on_two_loops_woken_on_their_own_threads),
        T(test_outcome_encode_decode_round_trip),
        T(test_outcome_decode_old_records_and_bad_new_fields),
        T(test_session_and_time_reach_waiters_and_repeats),
        T(test_free_accepts_null),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
