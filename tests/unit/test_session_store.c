/*
 * The store contract (src/session/session.h), run against every backend: SQLite on a temporary
 * file, and Redis on a redis-server this test starts on a free loopback port (skipped, loudly,
 * when redis-server is not installed). Operations may answer before returning (SQLite) or later
 * on the loop (Redis): the wrappers run the loop until the callback has run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop/loop.h"
#include "session/session.h"

#define APPID "wx0123456789abcdef"
#define OTHER "wxfedcba9876543210"
#define NOW ((int64_t)time(NULL))
#define HOUR 3600

extern char **environ;

static struct loop *L;
static char sqlite_dir[] = "/tmp/wxlogin-store-XXXXXX";
static pid_t redis_pid;
static int redis_port;

struct fixture {
    const char *url;
    struct session_store *st;
    bool redis;
};

/* ---- running the loop until an answer ---- */

struct cap {
    int calls, status;
    struct session_record rec;
    struct session_user user;
    enum session_claim claim;
    char outcome[256];
};

static void on_timeout(void *arg)
{
    (void)arg;
    loop_stop(L);
}

static void wait_for(struct cap *c)
{
    struct loop_timer t;
    loop_timer_init(&t, on_timeout, NULL);
    if (c->calls == 0) {
        loop_timer_start(L, &t, 3000);
        loop_run(L);
        loop_timer_stop(L, &t);
    }
    assert_int_equal(c->calls, 1);
}

static void on_done(int status, void *arg)
{
    struct cap *c = arg;
    c->calls++;
    c->status = status;
    loop_stop(L);
}

static void on_get(int status, const struct session_record *rec, void *arg)
{
    struct cap *c = arg;
    c->calls++;
    c->status = status;
    if (rec != NULL)
        c->rec = *rec;
    loop_stop(L);
}

static void on_user(int status, const struct session_user *u, void *arg)
{
    struct cap *c = arg;
    c->calls++;
    c->status = status;
    if (u != NULL)
        c->user = *u;
    loop_stop(L);
}

static void on_claim(int status, enum session_claim claim, const char *outcome, size_t len,
                     void *arg)
{
    struct cap *c = arg;
    c->calls++;
    c->status = status;
    c->claim = claim;
    snprintf(c->outcome, sizeof(c->outcome), "%.*s", (int)len, outcome ? outcome : "");
    loop_stop(L);
}

static struct session_user make_user(const char *openid, const char *unionid, uint8_t fill)
{
    struct session_user u;
    memset(&u, 0, sizeof(u));
    snprintf(u.appid, sizeof(u.appid), "%s", APPID);
    snprintf(u.openid, sizeof(u.openid), "%s", openid);
    snprintf(u.unionid, sizeof(u.unionid), "%s", unionid);
    memset(u.sealed_key, fill, 45);
    u.sealed_key[3] = 0; /* binary-safe: a NUL inside */
    u.sealed_len = 45;
    return u;
}

static void hash_of(const char *token, uint8_t out[CRYPTO_HASH_LEN])
{
    crypto_sha256(token, strlen(token), out);
}

static int login(struct fixture *f, const struct session_user *u, const uint8_t *h, int64_t exp,
                 int64_t now)
{
    struct cap c = {0};
    f->st->ops->login(f->st, u, h, exp, now, on_done, &c);
    wait_for(&c);
    return c.status;
}

static int get_session(struct fixture *f, const char *appid, const uint8_t *h,
                       struct session_record *rec)
{
    struct cap c = {0};
    f->st->ops->get_session(f->st, appid, h, NOW, on_get, &c);
    wait_for(&c);
    if (rec != NULL)
        *rec = c.rec;
    return c.status;
}

static int delete_session(struct fixture *f, const uint8_t *h)
{
    struct cap c = {0};
    f->st->ops->delete_session(f->st, APPID, h, on_done, &c);
    wait_for(&c);
    return c.status;
}

static int get_user(struct fixture *f, const char *openid, struct session_user *u)
{
    struct cap c = {0};
    f->st->ops->get_user(f->st, APPID, openid, on_user, &c);
    wait_for(&c);
    if (u != NULL)
        *u = c.user;
    return c.status;
}

/* ---- fixtures ---- */

static int open_store(void **state, const char *url, bool redis)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[SESSION_ERR_MAX];
    f->url = url;
    f->redis = redis;
    if (session_open(url, L, 1000, &f->st, err) != 0) {
        fprintf(stderr, "session_open(%s): %s\n", url, err);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup_sqlite(void **state)
{
    static char url[128];
    static int n;
    snprintf(url, sizeof(url), "sqlite:%s/t%d.db", sqlite_dir, n++);
    return open_store(state, url, false);
}

static int setup_redis(void **state)
{
    static char url[64];
    static int db = 1;
    if (redis_pid == 0)
        return -1;
    /* A database per test, so tests never see each other's keys. */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/%d", redis_port, db++ % 16);
    if (open_store(state, url, true) != 0)
        return -1;
    struct fixture *f = *state;
    struct cap c = {0};
    f->st->ops->ping(f->st, on_done, &c);
    wait_for(&c);
    return c.status == SESSION_OK ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    session_close(f->st);
    free(f);
    return 0;
}

/* ---- the contract ---- */

static void test_ping(void **state)
{
    struct fixture *f = *state;
    struct cap c = {0};
    f->st->ops->ping(f->st, on_done, &c);
    wait_for(&c);
    assert_int_equal(c.status, SESSION_OK);
}

static void test_login_then_session(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user("o-1", "u-1", 0x11);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of("wxl_a", h);
    assert_int_equal(login(f, &u, h, NOW + HOUR, NOW), SESSION_OK);
    struct session_record rec;
    assert_int_equal(get_session(f, APPID, h, &rec), SESSION_OK);
    assert_string_equal(rec.appid, APPID);
    assert_string_equal(rec.openid, "o-1");
    assert_string_equal(rec.unionid, "u-1");
    assert_int_equal(rec.expires_at, NOW + HOUR);
}

static void test_unknown_other_app_and_expired_not_found(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user("o-2", "", 0x22);
    uint8_t h[CRYPTO_HASH_LEN], other[CRYPTO_HASH_LEN], old[CRYPTO_HASH_LEN];
    hash_of("wxl_b", h);
    hash_of("wxl_unknown", other);
    hash_of("wxl_old", old);
    assert_int_equal(login(f, &u, h, NOW + HOUR, NOW), SESSION_OK);
    assert_int_equal(get_session(f, APPID, other, NULL), SESSION_NOT_FOUND);
    assert_int_equal(get_session(f, OTHER, h, NULL), SESSION_NOT_FOUND);
    assert_int_equal(login(f, &u, old, NOW - 1, NOW - 10), SESSION_OK);
    assert_int_equal(get_session(f, APPID, old, NULL), SESSION_NOT_FOUND);
}

static void test_delete(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user("o-3", "", 0x33);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of("wxl_c", h);
    assert_int_equal(login(f, &u, h, NOW + HOUR, NOW), SESSION_OK);
    assert_int_equal(delete_session(f, h), SESSION_OK);
    assert_int_equal(get_session(f, APPID, h, NULL), SESSION_NOT_FOUND);
    assert_int_equal(delete_session(f, h), SESSION_NOT_FOUND);
}

static void test_upsert_keeps_previous_key_and_unionid(void **state)
{
    struct fixture *f = *state;
    struct session_user a = make_user("o-4", "u-4", 0x44);
    struct session_user b = make_user("o-4", "", 0x55);
    assert_int_equal(login(f, &a, NULL, 0, NOW - 5), SESSION_OK);
    struct session_user got;
    assert_int_equal(get_user(f, "o-4", &got), SESSION_OK);
    assert_int_equal(got.sealed_len, 45);
    assert_memory_equal(got.sealed_key, a.sealed_key, 45);
    assert_int_equal(got.prev_len, 0);
    assert_int_equal(login(f, &b, NULL, 0, NOW), SESSION_OK);
    assert_int_equal(get_user(f, "o-4", &got), SESSION_OK);
    assert_memory_equal(got.sealed_key, b.sealed_key, 45);
    assert_int_equal(got.prev_len, 45);
    assert_memory_equal(got.prev_sealed_key, a.sealed_key, 45);
    assert_int_equal(got.prev_replaced_at, NOW);
    assert_string_equal(got.unionid, "u-4");
    assert_int_equal(get_user(f, "o-nobody", NULL), SESSION_NOT_FOUND);
}

static void test_put_session_for_existing_user(void **state)
{
    struct fixture *f = *state;
    struct session_user u = make_user("o-5", "u-5", 0x66);
    assert_int_equal(login(f, &u, NULL, 0, NOW), SESSION_OK);
    uint8_t h[CRYPTO_HASH_LEN];
    hash_of("wxl_d", h);
    struct cap c = {0};
    f->st->ops->put_session(f->st, h, APPID, "o-5", NOW + HOUR, NOW, on_done, &c);
    wait_for(&c);
    assert_int_equal(c.status, SESSION_OK);
    struct session_record rec;
    assert_int_equal(get_session(f, APPID, h, &rec), SESSION_OK);
    assert_string_equal(rec.unionid, "u-5");
}

static void test_code_claims(void **state)
{
    struct fixture *f = *state;
    uint8_t k[CRYPTO_HASH_LEN];
    hash_of("code-1", k);
    struct cap c = {0};
    f->st->ops->code_claim(f->st, APPID, k, 5000, on_claim, &c);
    wait_for(&c);
    assert_int_equal(c.status, SESSION_OK);
    assert_int_equal(c.claim, SESSION_CLAIM_MINE);
    if (!f->redis)
        return; /* one process: every claim is its own */
    memset(&c, 0, sizeof(c));
    f->st->ops->code_claim(f->st, APPID, k, 5000, on_claim, &c);
    wait_for(&c);
    assert_int_equal(c.claim, SESSION_CLAIM_BUSY);
    struct cap p = {0};
    f->st->ops->code_publish(f->st, APPID, k, "{\"x\":1}", 7, 60000, on_done, &p);
    wait_for(&p);
    memset(&c, 0, sizeof(c));
    f->st->ops->code_claim(f->st, APPID, k, 5000, on_claim, &c);
    wait_for(&c);
    assert_int_equal(c.claim, SESSION_CLAIM_KNOWN);
    assert_string_equal(c.outcome, "{\"x\":1}");
    memset(&p, 0, sizeof(p));
    f->st->ops->code_publish(f->st, APPID, k, NULL, 0, 0, on_done, &p); /* released */
    wait_for(&p);
    memset(&c, 0, sizeof(c));
    f->st->ops->code_claim(f->st, APPID, k, 5000, on_claim, &c);
    wait_for(&c);
    assert_int_equal(c.claim, SESSION_CLAIM_MINE);
}

/* ---- redis-server ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool redis_answers(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              write(fd, "PING\r\n", 6) == 6;
    char buf[16] = "";
    if (ok)
        ok = read(fd, buf, sizeof(buf) - 1) > 0 && strncmp(buf, "+PONG", 5) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static void start_redis(void)
{
    redis_port = free_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    char *argv[] = {"redis-server", "--port", port,    "--bind",   "127.0.0.1", "--save", "",
                    "--appendonly", "no",     "--dir", sqlite_dir, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0); /* its chatter */
    int rc =
        redis_port > 0 ? posix_spawnp(&redis_pid, "redis-server", &fa, NULL, argv, environ) : -1;
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        redis_pid = 0;
        return;
    }
    for (int i = 0; i < 200 && !redis_answers(redis_port); i++)
        usleep(20000);
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
    }
}

#define ON_SQLITE(t) cmocka_unit_test_setup_teardown(t, setup_sqlite, teardown)
#define ON_REDIS(t) cmocka_unit_test_setup_teardown(t, setup_redis, teardown)

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (mkdtemp(sqlite_dir) == NULL)
        return 1;
    L = loop_new();
    const struct CMUnitTest sqlite_tests[] = {
        ON_SQLITE(test_ping),
        ON_SQLITE(test_login_then_session),
        ON_SQLITE(test_unknown_other_app_and_expired_not_found),
        ON_SQLITE(test_delete),
        ON_SQLITE(test_upsert_keeps_previous_key_and_unionid),
        ON_SQLITE(test_put_session_for_existing_user),
        ON_SQLITE(test_code_claims),
    };
    const struct CMUnitTest redis_tests[] = {
        ON_REDIS(test_ping),
        ON_REDIS(test_login_then_session),
        ON_REDIS(test_unknown_other_app_and_expired_not_found),
        ON_REDIS(test_delete),
        ON_REDIS(test_upsert_keeps_previous_key_and_unionid),
        ON_REDIS(test_put_session_for_existing_user),
        ON_REDIS(test_code_claims),
    };
    int failed = cmocka_run_group_tests_name("store on SQLite", sqlite_tests, NULL, NULL);
    start_redis();
    if (redis_pid == 0 || !redis_answers(redis_port)) {
        fprintf(stderr, "redis-server not available: the Redis store suite cannot run\n");
        failed++;
    } else {
        failed += cmocka_run_group_tests_name("store on Redis", redis_tests, NULL, NULL);
    }
    stop_redis();
    loop_free(L);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", sqlite_dir);
    if (system(cmd) != 0)
        failed++;
    return failed;
}
