/*
 * exchange: idempotent, single-flight exchange of login codes, shared by every worker thread.
 *
 * A wx.login code can be exchanged with WeChat once; a second exchange fails with 40163. Yet the
 * same code reaches us twice all the time (double taps, client retries after a lost response,
 * two pages logging in at once). This table, keyed by SHA-256 of the code (never the code),
 * makes the first request the leader that calls WeChat; concurrent requests with the same code
 * wait for its outcome, and the outcome is remembered for the code's lifetime so a later repeat
 * is answered without calling WeChat. Transient failures are shared with the waiters of the
 * moment but not remembered. The protocol around it (claims across instances, the WeChat call,
 * the store, what a repeat may be answered) is login/login.h's.
 *
 * The table is bounded without ever changing the answer to a legitimate repeat: an exchange in
 * flight always gets its entry (they are bounded by the requests in flight) and is never
 * dropped; when the remembered outcomes reach the bound, the oldest remembered failure goes
 * first, and a remembered success only when no failure is left. So a flood of bogus codes (each
 * a remembered 40029) pushes out other bogus codes, not the successes double taps depend on.
 *
 * Waiters may live on other threads than the leader: each waits in its request's pending slot
 * and is woken through loop_post on its own loop, never touched from the leader's thread.
 */
#ifndef WXLOGIN_EXCHANGE_H
#define WXLOGIN_EXCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "wechat/errcode.h"

struct async_slot;
struct loop;
struct exchange;

#define EXCHANGE_ID_MAX 128

enum exchange_kind {
    EXCHANGE_OK,      /* WeChat exchanged the code and the user is stored */
    EXCHANGE_WECHAT,  /* WeChat failed: status/errcode/http_status say how */
    EXCHANGE_STORE,   /* WeChat succeeded but the store failed */
    EXCHANGE_ABORTED, /* the leader was cancelled (shutdown, deadline) */
    EXCHANGE_LIMITED, /* the app's ceiling on WeChat calls refused it: nothing was sent; never
                         remembered nor published */
    EXCHANGE_BANNED,  /* WeChat named a user who is banned here: nothing was stored; never
                         remembered nor published */
};

struct exchange_outcome {
    enum exchange_kind kind;
    /* EXCHANGE_OK */
    char openid[EXCHANGE_ID_MAX + 1];
    char unionid[EXCHANGE_ID_MAX + 1]; /* "" when none */
    bool session;         /* the leader stored a session for the code (POST /v1/login) */
    int64_t exchanged_ms; /* wall-clock ms when WeChat exchanged the code; 0: unknown */
    /* EXCHANGE_WECHAT */
    enum wechat_status status;
    long errcode;
    long http_status;
    /* EXCHANGE_LIMITED: µs until the ceiling has room again */
    uint64_t wait_us;
};

enum exchange_role {
    EXCHANGE_LEAD,  /* nobody is exchanging this code: do it, then exchange_finish() */
    EXCHANGE_WAIT,  /* someone is: wake() will run on the caller's loop with the outcome */
    EXCHANGE_KNOWN, /* the outcome is remembered and was copied out */
};

typedef void exchange_wake_fn(const struct exchange_outcome *outcome, void *arg);

/*
 * max_entries bounds the remembered outcomes (exchanges in flight come on top); ttl_ms is how
 * long an outcome is remembered after exchange_finish(). NULL on failure.
 */
struct exchange *exchange_new(size_t max_entries, uint64_t ttl_ms);
/* Frees the table. No waiter may be left (the workers have stopped). Accepts NULL. */
void exchange_free(struct exchange *x);

/* Key for a code of an app: SHA-256(appid "\n" code). */
void exchange_key(const char *appid, const char *code, uint8_t key[CRYPTO_HASH_LEN]);

/*
 * Joins the exchange of key. On EXCHANGE_WAIT the wait occupies slot and wake(outcome, arg)
 * will run exactly once on loop unless the slot is cancelled first. On EXCHANGE_KNOWN, *out
 * holds the outcome. A new code always gets an entry (a full table forgets a remembered outcome
 * for it: the oldest failure, else the oldest success); only when memory for the entry runs out
 * does the caller lead without de-duplication. When memory for a waiter runs out, the outcome is
 * EXCHANGE_ABORTED.
 */
enum exchange_role exchange_begin(struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN],
                                  struct loop *loop, struct async_slot *slot,
                                  exchange_wake_fn *wake, void *arg, struct exchange_outcome *out);

/*
 * The leader's outcome: wakes every waiter with it, and remembers it for ttl_ms when remember
 * is true (success, and failures that are final for the code), else forgets the code.
 */
void exchange_finish(struct exchange *x, const uint8_t key[CRYPTO_HASH_LEN],
                     const struct exchange_outcome *outcome, bool remember);

/*
 * Outcomes as text, for sharing them between instances through the store (JSON; no secret in
 * it: ids, error codes, whether a session was stored and when). encode writes at most cap bytes
 * and returns the length (0 when it does not fit); decode returns 0 or -1 for anything but a
 * well-typed record. A record of an earlier version, without "session" and "at_ms", decodes
 * with no session and an unknown time: no repeat may be answered a session from it.
 */
size_t exchange_outcome_encode(const struct exchange_outcome *o, char *out, size_t cap);
int exchange_outcome_decode(const char *s, size_t len, struct exchange_outcome *out);

/* Forgets every remembered success that names openid (an erased user: nothing of them stays,
 * and a repeat of their code is then refused as used). A scan of the remembered successes,
 * for a rare operator action. Returns how many went. */
size_t exchange_forget_user(struct exchange *x, const char *openid);

/* Number of codes in the table (in flight or remembered). */
size_t exchange_size(struct exchange *x);
/* Bytes of memory the table holds for its entries (not counting the bucket array). */
size_t exchange_bytes(struct exchange *x);

#endif
