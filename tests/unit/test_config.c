/*
 * Unit tests for config/config.h: defaults, the INI file, WXLOGIN_* environment overrides,
 * secret_file, error texts (key, file:line, never the secret), the admin token's strength check
 * and the annotated example file.
 *
 * Each test writes its files into a fresh mkdtemp directory (removed by the teardown) and passes
 * its own envp array, so nothing depends on the real environment.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "crypto/crypto.h"

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (strstr(h_, n_) == NULL)                                                                \
            fail_msg("\"%s\" does not contain \"%s\"", h_, n_);                                    \
    } while (0)

#define assert_not_contains(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (strstr(h_, n_) != NULL)                                                                \
            fail_msg("\"%s\" contains \"%s\"", h_, n_);                                            \
    } while (0)

#define MAX_FILES 8

struct fixture {
    char dir[64];
    char *files[MAX_FILES];
    size_t nfiles;
    struct config cfg;
    char err[CONFIG_ERR_MAX];
};

static char *const no_env[] = {NULL};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/wxlogin-test-config-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i < f->nfiles; i++) {
        unlink(f->files[i]);
        free(f->files[i]);
    }
    rmdir(f->dir);
    config_done(&f->cfg);
    free(f);
    return 0;
}

/* Writes content to dir/name and returns the path (owned by the fixture). */
static const char *write_file(struct fixture *f, const char *name, const char *content)
{
    assert_true(f->nfiles < MAX_FILES);
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", f->dir, name) > 0);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(content, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    f->files[f->nfiles++] = path;
    return path;
}

/* Loads path (may be NULL) with env and expects an error; returns the message. */
static const char *load_fails(struct fixture *f, const char *path, char *const *env)
{
    int rc = config_load(&f->cfg, path, env, NULL, NULL, f->err);
    if (rc != -1)
        fail_msg("config_load succeeded, expected an error (%s)", path ? path : "no file");
    assert_true(f->err[0] != '\0');
    /* "cfg is then already released" */
    assert_null(f->cfg.listen);
    assert_null(f->cfg.wechat_base);
    assert_null(f->cfg.store);
    return f->err;
}

static void load_ok(struct fixture *f, const char *path, char *const *env)
{
    int rc = config_load(&f->cfg, path, env, NULL, NULL, f->err);
    if (rc != 0)
        fail_msg("config_load failed: %s", f->err);
}

/* "path:line" as errors from the file name it. */
static void assert_names_line(const char *err, const char *path, int line)
{
    char where[300];
    snprintf(where, sizeof(where), "%s:%d:", path, line);
    assert_contains(err, where);
}

/* ---- defaults and a good file ---- */

static void test_defaults_without_file_or_env(void **state)
{
    struct fixture *f = *state;
    load_ok(f, NULL, no_env);
    assert_string_equal(f->cfg.listen, "127.0.0.1:2020");
    assert_string_equal(f->cfg.wechat_base, "https://api.weixin.qq.com");
    assert_int_equal(f->cfg.upstream_timeout_ms, 5000);
    assert_int_equal(f->cfg.upstream_retries, 2);
    assert_int_equal(f->cfg.log_level, LOG_INFO);
    assert_int_equal(f->cfg.log_format, LOG_FORMAT_JSON);
    assert_int_equal(f->cfg.max_body_bytes, 65536);
    assert_int_equal(f->cfg.threads, 0);
    assert_null(f->cfg.appid);
    assert_null(f->cfg.secret);
    assert_null(f->cfg.secret_file);
    assert_string_equal(f->cfg.store, "sqlite:wxlogin.db");
    assert_int_equal(f->cfg.session_ttl, 604800);
    assert_null(f->cfg.master_key);
    assert_null(f->cfg.master_key_file);
    assert_int_equal(f->cfg.request_timeout_ms, 60000);
    assert_int_equal(f->cfg.code_reuse_window, 60);
    assert_int_equal(f->cfg.exchange_table_size, 200000);
}

static void test_null_envp_is_no_environment(void **state)
{
    struct fixture *f = *state;
    load_ok(f, NULL, NULL);
    assert_string_equal(f->cfg.listen, "127.0.0.1:2020");
}

static void test_good_file_sets_every_key(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "good.conf",
                                  "; a comment\n"
                                  "# another comment\n"
                                  "\n"
                                  "listen = 0.0.0.0:8080\n"
                                  "appid = wx1234567890abcdef\n"
                                  "secret = 0123456789abcdef0123456789abcdef\n"
                                  "wechat_base = http://127.0.0.1:2021\n"
                                  "upstream_timeout_ms = 1500\n"
                                  "upstream_retries = 0\n"
                                  "threads = 4\n"
                                  "log_level = debug\n"
                                  "log_format = text\n"
                                  "max_body_bytes = 1024\n"
                                  "max_connections = 50\n"
                                  "connection_timeout = 7\n"
                                  "shutdown_timeout_ms = 250\n"
                                  "store = sqlite:/var/lib/wxlogin/db.sqlite\n"
                                  "session_ttl = 3600\n"
                                  "master_key_file = /etc/wxlogin/master.key\n");
    load_ok(f, path, no_env);
    assert_string_equal(f->cfg.listen, "0.0.0.0:8080");
    assert_string_equal(f->cfg.appid, "wx1234567890abcdef");
    assert_string_equal(f->cfg.secret, "0123456789abcdef0123456789abcdef");
    assert_string_equal(f->cfg.wechat_base, "http://127.0.0.1:2021");
    assert_int_equal(f->cfg.upstream_timeout_ms, 1500);
    assert_int_equal(f->cfg.upstream_retries, 0);
    assert_int_equal(f->cfg.threads, 4);
    assert_int_equal(f->cfg.log_level, LOG_DEBUG);
    assert_int_equal(f->cfg.log_format, LOG_FORMAT_TEXT);
    assert_int_equal(f->cfg.max_body_bytes, 1024);
    assert_int_equal(f->cfg.max_connections, 50);
    assert_int_equal(f->cfg.connection_timeout, 7);
    assert_int_equal(f->cfg.shutdown_timeout_ms, 250);
    assert_string_equal(f->cfg.store, "sqlite:/var/lib/wxlogin/db.sqlite");
    assert_int_equal(f->cfg.session_ttl, 3600);
    assert_string_equal(f->cfg.master_key_file, "/etc/wxlogin/master.key");
    assert_int_equal(config_thread_count(&f->cfg), 4);
}

static void test_missing_file_is_an_error_naming_it(void **state)
{
    struct fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/does-not-exist.conf", f->dir);
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, path);
}

/* ---- file errors ---- */

static void test_file_unknown_key_names_key_and_line(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "unknown.conf",
                                  "listen = 127.0.0.1:1\n"
                                  "\n"
                                  "listne = 127.0.0.1:2\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "listne");
    assert_names_line(err, path, 3);
}

/* inih keeps calling the handler after a failed line; the message must still describe the line
 * that the error reports (the first bad one), not a later one. */
static void test_file_two_unknown_keys_first_is_reported(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "two.conf",
                                  "alpha = 1\n"
                                  "listen = 127.0.0.1:1\n"
                                  "omega = 2\n");
    const char *err = load_fails(f, path, no_env);
    assert_names_line(err, path, 1);
    assert_contains(err, "alpha");
    assert_not_contains(err, "omega");
}

static void test_file_unknown_section_is_an_error(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "section.conf",
                                  "appid = wx1\n"
                                  "[server]\n"
                                  "listen = 127.0.0.1:1\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "server");
    assert_names_line(err, path, 3);
}

static void test_file_syntax_error_names_line(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "syntax.conf",
                                  "appid = wx1\n"
                                  "this line has no equals sign\n");
    const char *err = load_fails(f, path, no_env);
    assert_names_line(err, path, 2);
}

static void test_file_bad_int_names_key_and_line(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "int.conf",
                                  "appid = wx1\n"
                                  "upstream_timeout_ms = 5s\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "upstream_timeout_ms");
    assert_names_line(err, path, 2);
}

static void test_file_int_out_of_range_names_key(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "range.conf", "upstream_retries = 11\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "upstream_retries");
    assert_names_line(err, path, 1);
}

static void test_file_negative_int_rejected(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "neg.conf", "max_connections = -1\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "max_connections");
}

static void test_file_int_overflow_rejected(void **state)
{
    struct fixture *f = *state;
    const char *path =
        write_file(f, "overflow.conf", "upstream_timeout_ms = 99999999999999999999\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "upstream_timeout_ms");
}

static void test_file_int_bounds_are_inclusive(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "bounds.conf",
                                  "upstream_timeout_ms = 50\n"
                                  "upstream_retries = 10\n"
                                  "max_body_bytes = 64\n");
    load_ok(f, path, no_env);
    assert_int_equal(f->cfg.upstream_timeout_ms, 50);
    assert_int_equal(f->cfg.upstream_retries, 10);
    assert_int_equal(f->cfg.max_body_bytes, 64);
}

static void test_file_int_just_below_minimum_rejected(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "below.conf", "upstream_timeout_ms = 49\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "upstream_timeout_ms");
}

static void test_file_bad_log_level_names_key(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "level.conf", "log_level = verbose\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "log_level");
    assert_names_line(err, path, 1);
}

static void test_file_bad_log_format_names_key(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "format.conf", "log_format = xml\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "log_format");
}

static void test_file_bad_url_names_key(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "url.conf", "wechat_base = ftp://api.weixin.qq.com\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "wechat_base");
    assert_names_line(err, path, 1);
}

static void test_file_url_without_scheme_rejected(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "noscheme.conf", "wechat_base = api.weixin.qq.com\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "wechat_base");
}

/* wechat_base may carry a proxy's user:password@: a refusal names the key, never the value. */
static void test_bad_url_error_never_quotes_a_password(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {
        "WXLOGIN_WECHAT_BASE=ftp://user:s3cretpw@127.0.0.1:2021",
        "WXLOGIN_WECHAT_BASE=user:s3cretpw@127.0.0.1:2021",
        "WXLOGIN_WECHAT_BASE=http:/user:s3cretpw@127.0.0.1:2021",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *const env[] = {(char *)bad[i], NULL};
        const char *err = load_fails(f, NULL, env);
        assert_contains(err, "wechat_base");
        if (strstr(err, "s3cretpw") != NULL)
            fail_msg("the error quotes the password: %s", err);
    }
    const char *path =
        write_file(f, "proxy.conf", "wechat_base = ftp://user:s3cretpw@127.0.0.1:2021\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "wechat_base");
    assert_names_line(err, path, 1);
    assert_null(strstr(err, "s3cretpw"));
}

static void test_file_empty_string_rejected(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "empty.conf", "appid =\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "appid");
}

/* inih reads lines of at most 200 bytes; a longer line must still load, or fail naming its key
 * (not "syntax error" on a line after the end of the file). */
static void test_file_long_value_loads_or_names_key(void **state)
{
    struct fixture *f = *state;
    char line[400] = "store = sqlite:/";
    size_t n = strlen(line);
    memset(line + n, 'd', 250);
    strcpy(line + n + 250, "\n");
    const char *path = write_file(f, "long.conf", line);
    if (config_load(&f->cfg, path, no_env, NULL, NULL, f->err) == 0) {
        assert_int_equal(strlen(f->cfg.store), strlen(line) - strlen("store = \n"));
        return;
    }
    assert_contains(f->err, "store");
}

/* ---- wechat_base normalisation ---- */

static void test_wechat_base_trailing_slashes_stripped(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "slash.conf", "wechat_base = http://127.0.0.1:2021///\n");
    load_ok(f, path, no_env);
    assert_string_equal(f->cfg.wechat_base, "http://127.0.0.1:2021");
}

static void test_wechat_base_trailing_slash_stripped_from_env(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_WECHAT_BASE=https://example.test/", NULL};
    load_ok(f, NULL, env);
    assert_string_equal(f->cfg.wechat_base, "https://example.test");
}

/* "https:///" passes the scheme check, then slash stripping leaves "https:", which is no URL. */
static void test_wechat_base_of_only_slashes_rejected(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_WECHAT_BASE=https:///", NULL};
    int rc = config_load(&f->cfg, NULL, env, NULL, NULL, f->err);
    if (rc == 0)
        fail_msg("accepted wechat_base 'https:///' and kept it as '%s'", f->cfg.wechat_base);
    assert_contains(f->err, "wechat_base");
}

/* ---- environment ---- */

static void test_env_overrides_file(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "base.conf",
                                  "listen = 127.0.0.1:1111\n"
                                  "appid = wxfromfile\n"
                                  "upstream_retries = 1\n");
    char *const env[] = {"PATH=/usr/bin", "WXLOGIN_LISTEN=127.0.0.1:2222",
                         "WXLOGIN_UPSTREAM_RETRIES=5", NULL};
    load_ok(f, path, env);
    assert_string_equal(f->cfg.listen, "127.0.0.1:2222");
    assert_int_equal(f->cfg.upstream_retries, 5);
    assert_string_equal(f->cfg.appid, "wxfromfile");
}

static void test_env_sets_every_kind(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_APPID=wxenv",         "WXLOGIN_SECRET=envsecret",
                         "WXLOGIN_LOG_LEVEL=error",     "WXLOGIN_LOG_FORMAT=text",
                         "WXLOGIN_MAX_BODY_BYTES=4096", NULL};
    load_ok(f, NULL, env);
    assert_string_equal(f->cfg.appid, "wxenv");
    assert_string_equal(f->cfg.secret, "envsecret");
    assert_int_equal(f->cfg.log_level, LOG_ERROR);
    assert_int_equal(f->cfg.log_format, LOG_FORMAT_TEXT);
    assert_int_equal(f->cfg.max_body_bytes, 4096);
}

static void test_env_bad_int_names_key(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_UPSTREAM_TIMEOUT_MS=fast", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "WXLOGIN_UPSTREAM_TIMEOUT_MS");
    assert_contains(err, "upstream_timeout_ms");
}

static void test_env_int_out_of_range_names_key(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_THREADS=257", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "WXLOGIN_THREADS");
}

static void test_env_bad_enum_names_key(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_LOG_LEVEL=loud", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "WXLOGIN_LOG_LEVEL");
    assert_contains(err, "log_level");
}

static void test_env_bad_url_names_key(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_WECHAT_BASE=api.weixin.qq.com", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "WXLOGIN_WECHAT_BASE");
}

static void test_env_error_after_good_file_fails(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "ok.conf", "appid = wx1\n");
    char *const env[] = {"WXLOGIN_LOG_FORMAT=yaml", NULL};
    const char *err = load_fails(f, path, env);
    assert_contains(err, "WXLOGIN_LOG_FORMAT");
}

struct warnings {
    int n;
    char last[256];
};

static void record_warning(const char *msg, void *arg)
{
    struct warnings *w = arg;
    w->n++;
    snprintf(w->last, sizeof(w->last), "%s", msg);
}

static void test_env_unknown_variable_warns_and_loads(void **state)
{
    struct fixture *f = *state;
    struct warnings w = {0};
    char *const env[] = {"HOME=/root", "WXLOGIN_FOO=bar", "WXLOGIN_LISTEN=127.0.0.1:9", NULL};
    int rc = config_load(&f->cfg, NULL, env, record_warning, &w, f->err);
    if (rc != 0)
        fail_msg("config_load failed: %s", f->err);
    assert_int_equal(w.n, 1);
    assert_contains(w.last, "WXLOGIN_FOO");
    assert_not_contains(w.last, "bar");
    assert_string_equal(f->cfg.listen, "127.0.0.1:9");
}

static void test_env_unknown_variable_without_warn_callback(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_FOO=bar", NULL};
    load_ok(f, NULL, env);
}

static void test_env_non_prefixed_variables_ignored_silently(void **state)
{
    struct fixture *f = *state;
    struct warnings w = {0};
    char *const env[] = {"LISTEN=1.2.3.4:5", "XWXLOGIN_LISTEN=1.2.3.4:5", "WXLOGIN", NULL};
    int rc = config_load(&f->cfg, NULL, env, record_warning, &w, f->err);
    if (rc != 0)
        fail_msg("config_load failed: %s", f->err);
    assert_int_equal(w.n, 0);
    assert_string_equal(f->cfg.listen, "127.0.0.1:2020");
}

/* ---- secrets ---- */

static void test_secret_file_read_and_newline_stripped(void **state)
{
    struct fixture *f = *state;
    const char *secret = write_file(f, "secret", "0123456789abcdef0123456789abcdef\n");
    char *conf = NULL;
    assert_true(asprintf(&conf, "secret_file = %s\n", secret) > 0);
    const char *path = write_file(f, "sf.conf", conf);
    free(conf);
    load_ok(f, path, no_env);
    assert_string_equal(f->cfg.secret, "0123456789abcdef0123456789abcdef");
    assert_string_equal(f->cfg.secret_file, secret);
}

static void test_secret_file_crlf_stripped(void **state)
{
    struct fixture *f = *state;
    const char *secret = write_file(f, "secret", "abc123\r\n");
    char env0[200];
    snprintf(env0, sizeof(env0), "WXLOGIN_SECRET_FILE=%s", secret);
    char *const env[] = {env0, NULL};
    load_ok(f, NULL, env);
    assert_string_equal(f->cfg.secret, "abc123");
}

static void test_secret_file_only_whitespace_rejected(void **state)
{
    struct fixture *f = *state;
    const char *secret = write_file(f, "secret", "\n\n");
    char env0[200];
    snprintf(env0, sizeof(env0), "WXLOGIN_SECRET_FILE=%s", secret);
    char *const env[] = {env0, NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "secret_file");
}

static void test_secret_file_missing_is_an_error(void **state)
{
    struct fixture *f = *state;
    char env0[200];
    snprintf(env0, sizeof(env0), "WXLOGIN_SECRET_FILE=%s/no-such-secret", f->dir);
    char *const env[] = {env0, NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "secret_file");
    assert_contains(err, "no-such-secret");
}

static void test_secret_and_secret_file_both_set_rejected(void **state)
{
    struct fixture *f = *state;
    const char *secret = write_file(f, "secret", "fromthefile\n");
    char *conf = NULL;
    assert_true(asprintf(&conf, "secret = SECRETINTHECONF\nsecret_file = %s\n", secret) > 0);
    const char *path = write_file(f, "both.conf", conf);
    free(conf);
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "secret_file");
    assert_not_contains(err, "SECRETINTHECONF");
    assert_not_contains(err, "fromthefile");
}

static void test_secret_from_env_and_secret_file_from_file_rejected(void **state)
{
    struct fixture *f = *state;
    const char *secret = write_file(f, "secret", "fromthefile\n");
    char *conf = NULL;
    assert_true(asprintf(&conf, "secret_file = %s\n", secret) > 0);
    const char *path = write_file(f, "sf.conf", conf);
    free(conf);
    char *const env[] = {"WXLOGIN_SECRET=SECRETINTHEENV", NULL};
    const char *err = load_fails(f, path, env);
    assert_not_contains(err, "SECRETINTHEENV");
}

static void test_error_never_contains_env_secret(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_SECRET=TOPSECRETVALUE42", "WXLOGIN_UPSTREAM_RETRIES=lots", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "upstream_retries");
    assert_not_contains(err, "TOPSECRETVALUE42");
}

static void test_error_never_contains_file_secret(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "leak.conf",
                                  "secret = TOPSECRETVALUE42\n"
                                  "listen_port = 80\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "listen_port");
    assert_not_contains(err, "TOPSECRETVALUE42");
}

static void test_master_key_and_file_both_set_rejected(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_MASTER_KEY=MASTERKEYVALUE42", "WXLOGIN_MASTER_KEY_FILE=/k", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "master_key");
    assert_not_contains(err, "MASTERKEYVALUE42");
}

static void test_error_never_contains_master_key(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "mk.conf",
                                  "master_key = MASTERKEYVALUE42\n"
                                  "session_ttl = 0\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "session_ttl");
    assert_not_contains(err, "MASTERKEYVALUE42");
}

/* ---- store ---- */

static void test_store_other_than_sqlite_rejected(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_STORE=redis://127.0.0.1:6379", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "store");
}

static void test_store_sqlite_without_path_rejected(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "store.conf", "store = sqlite:\n");
    const char *err = load_fails(f, path, no_env);
    assert_contains(err, "store");
}

/* systemd's StateDirectory=: the default database moves there (contrib/systemd/wxlogin.service
 * runs with "/" as its working directory, read-only); a store that is named stays put. */
static void test_store_default_in_state_directory(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"STATE_DIRECTORY=/var/lib/wxlogin", NULL};
    load_ok(f, NULL, env);
    assert_string_equal(f->cfg.store, "sqlite:/var/lib/wxlogin/wxlogin.db");
}

static void test_store_state_directory_first_of_several_no_trailing_slash(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"STATE_DIRECTORY=/var/lib/wxlogin//:/var/lib/other", NULL};
    load_ok(f, NULL, env);
    assert_string_equal(f->cfg.store, "sqlite:/var/lib/wxlogin/wxlogin.db");
}

static void test_store_state_directory_relative_ignored(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"STATE_DIRECTORY=var/lib/wxlogin", NULL};
    load_ok(f, NULL, env);
    assert_string_equal(f->cfg.store, "sqlite:wxlogin.db");
}

static void test_store_named_in_file_or_env_wins_over_state_directory(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "store.conf", "store = sqlite:/srv/sessions.db\n");
    char *const env[] = {"STATE_DIRECTORY=/var/lib/wxlogin", NULL};
    load_ok(f, path, env);
    assert_string_equal(f->cfg.store, "sqlite:/srv/sessions.db");
    config_done(&f->cfg);
    char *const env2[] = {"STATE_DIRECTORY=/var/lib/wxlogin", "WXLOGIN_STORE=sqlite:other.db",
                          NULL};
    load_ok(f, NULL, env2);
    assert_string_equal(f->cfg.store, "sqlite:other.db");
}

static void test_request_timeout_bounds(void **state)
{
    struct fixture *f = *state;
    char *const low[] = {"WXLOGIN_REQUEST_TIMEOUT_MS=99", NULL};
    assert_contains(load_fails(f, NULL, low), "WXLOGIN_REQUEST_TIMEOUT_MS");
    char *const ok[] = {"WXLOGIN_REQUEST_TIMEOUT_MS=100", NULL};
    load_ok(f, NULL, ok);
    assert_int_equal(f->cfg.request_timeout_ms, 100);
}

/* A code's repeat window cannot outlive the remembered outcome (a code's 5 minutes). */
static void test_code_reuse_window_and_exchange_table_size_bounds(void **state)
{
    struct fixture *f = *state;
    char *const long_window[] = {"WXLOGIN_CODE_REUSE_WINDOW=301", NULL};
    assert_contains(load_fails(f, NULL, long_window), "WXLOGIN_CODE_REUSE_WINDOW");
    char *const tiny_table[] = {"WXLOGIN_EXCHANGE_TABLE_SIZE=15", NULL};
    assert_contains(load_fails(f, NULL, tiny_table), "WXLOGIN_EXCHANGE_TABLE_SIZE");
    const char *path =
        write_file(f, "exchange.conf", "code_reuse_window = 0\nexchange_table_size = 16\n");
    load_ok(f, path, no_env);
    assert_int_equal(f->cfg.code_reuse_window, 0);
    assert_int_equal(f->cfg.exchange_table_size, 16);
}

static void test_session_ttl_out_of_range_rejected(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_SESSION_TTL=31536001", NULL};
    const char *err = load_fails(f, NULL, env);
    assert_contains(err, "WXLOGIN_SESSION_TTL");
}

/* ---- config_check_serve ---- */

static void test_check_serve_without_appid(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_SECRET=s", NULL};
    load_ok(f, NULL, env);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), -1);
    assert_contains(err, "appid");
}

static void test_check_serve_without_secret(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_APPID=wx1", NULL};
    load_ok(f, NULL, env);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), -1);
    assert_contains(err, "secret");
}

static void test_check_serve_with_appid_and_secret(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_APPID=wx1", "WXLOGIN_SECRET=s", NULL};
    load_ok(f, NULL, env);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), 0);
}

/* ---- the admin token's strength ---- */

#define STRONG_ADMIN "cfd11a510d1071348f15fba06ac4cf3858b22bc69c095d572bae7146eff22741"

static void assert_strong(const char *t)
{
    const char *why = "unset";
    if (!config_token_strong(t, &why))
        fail_msg("'%s' (%.1f bits) refused: %s", t, config_token_entropy_bits(t), why);
    assert_string_equal(why, "unset"); /* written only when refused */
}

static void assert_weak(const char *t, const char *why_contains)
{
    const char *why = NULL;
    if (config_token_strong(t, &why))
        fail_msg("'%s' (%.1f bits) accepted", t, config_token_entropy_bits(t));
    assert_non_null(why);
    assert_contains(why, why_contains);
    if (*t != '\0')
        assert_not_contains(why, t);
}

/* Output of `openssl rand -hex 32` and `openssl rand -base64 32`. */
static void test_admin_token_from_openssl_is_strong(void **state)
{
    (void)state;
    assert_strong(STRONG_ADMIN);
    assert_strong("104881d49b8cc28d0e795379587c227d1a21e9137f8cc036d8e3e6c343207f82");
    assert_strong("1ksaLNayDlvWzVti8nPbVbXcqj+dlEv3QNYqEwg2VbI=");
    assert_strong("Zt+lJU35pT3Z5fGtdv9nm1BrFoHQluMZGAdjlhtD4X8=");
    assert_true(config_token_strong(STRONG_ADMIN, NULL));
}

/* What `openssl rand -hex 32` / `-base64 32` produce, many times over: the estimate must not
 * refuse an unlucky draw (they score about 240 and 215 bits, never near 128 in our trials). */
static void test_admin_token_random_32_bytes_always_strong(void **state)
{
    (void)state;
    for (int i = 0; i < 2000; i++) {
        uint8_t raw[32];
        char hex[65], b64[45];
        assert_int_equal(crypto_random(raw, sizeof(raw)), 0);
        crypto_hex(raw, sizeof(raw), hex);
        crypto_b64_encode(raw, sizeof(raw), b64);
        assert_true(config_token_entropy_bits(hex) > 180);
        assert_true(config_token_entropy_bits(b64) > 160);
        assert_strong(hex);
        assert_strong(b64);
    }
}

static void test_admin_token_shorter_than_32_is_weak(void **state)
{
    (void)state;
    assert_weak("", "shorter than 32");
    assert_weak("x", "shorter than 32");
    assert_weak("a22557d976f21dcaf23a", "shorter than 32");            /* 10 random bytes */
    assert_weak("Zt+lJU35pT3Z5fGtdv9nm1BrFoHQluM", "shorter than 32"); /* 31 characters */
    assert_strong("cfd11a510d1071348f15fba06ac4cf3858b22bc69c0");      /* long enough and random */
}

static void test_admin_token_with_low_entropy_is_weak(void **state)
{
    (void)state;
    static const char *const weak[] = {
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababababababababababababababababababababababababab",
        "0123456789012345678901234567890123456789",
        "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234",
        "0123456789abcdef0123456789abcdef",           /* the hex digits, twice */
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF", /* a run: all distinct, no randomness */
        "passwordpasswordpasswordpassword",
        "Q7vX2pL9kR4tZ8wN3mB6Q7vX2pL9kR4tZ8wN3mB6", /* a random half pasted twice */
        "615a49250c8ed10770e1668d295ebffb",         /* 16 random bytes: too few */
        "admin-admin-admin-admin-admin-admin-admin",
        "                                        ",
    };
    for (size_t i = 0; i < sizeof(weak) / sizeof(weak[0]); i++) {
        assert_true(config_token_entropy_bits(weak[i]) < CONFIG_TOKEN_MIN_BITS);
        assert_weak(weak[i], "too predictable");
    }
}

/* The estimate reads at most CONFIG_TOKEN_EVAL_MAX bytes, so a huge token costs bounded time. */
static void test_admin_token_estimate_of_long_tokens(void **state)
{
    (void)state;
    size_t n = 64 * 1024;
    char *t = malloc(n + 1);
    assert_non_null(t);
    memset(t, 'a', n);
    t[n] = '\0';
    assert_weak(t, "too predictable");
    for (size_t i = 0; i < n; i += 16)
        memcpy(t + i, STRONG_ADMIN, 16);
    assert_weak(t, "too predictable"); /* 16 random hex digits, repeated */
    uint8_t raw[CONFIG_TOKEN_EVAL_MAX];
    assert_int_equal(crypto_random(raw, sizeof(raw)), 0);
    crypto_hex(raw, sizeof(raw) / 2, t);
    assert_strong(t);
    free(t);
}

static void test_check_serve_refuses_a_short_admin_token(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_APPID=wx1", "WXLOGIN_SECRET=s",
                         "WXLOGIN_ADMIN_TOKEN=Kp3xY7qZ9wR2mT5v", NULL};
    load_ok(f, NULL, env);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), -1);
    assert_contains(err, "admin_token:");
    assert_contains(err, "shorter than 32 characters");
    assert_contains(err, "openssl rand -hex 32");
    assert_not_contains(err, "Kp3xY7qZ9wR2mT5v");
    assert_not_contains(err, "16"); /* not even its length */
}

static void test_check_serve_refuses_a_predictable_admin_token(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_APPID=wx1", "WXLOGIN_SECRET=s",
                         "WXLOGIN_ADMIN_TOKEN=0123456789012345678901234567890123456789", NULL};
    load_ok(f, NULL, env);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), -1);
    assert_contains(err, "admin_token:");
    assert_contains(err, "too predictable");
    assert_not_contains(err, "0123456789");
}

static void test_check_serve_names_admin_token_file(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "admin", "abababababababababababababababab\n");
    char *env[] = {"WXLOGIN_APPID=wx1", "WXLOGIN_SECRET=s", NULL, NULL};
    char *kv = NULL;
    assert_true(asprintf(&kv, "WXLOGIN_ADMIN_TOKEN_FILE=%s", path) > 0);
    env[2] = kv;
    load_ok(f, NULL, env);
    free(kv);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), -1);
    assert_contains(err, "admin_token_file:");
    assert_contains(err, path);
    assert_not_contains(err, "abab");
}

static void test_check_serve_accepts_a_strong_admin_token(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_APPID=wx1", "WXLOGIN_SECRET=s",
                         "WXLOGIN_ADMIN_TOKEN=" STRONG_ADMIN, NULL};
    load_ok(f, NULL, env);
    char err[CONFIG_ERR_MAX] = "";
    assert_int_equal(config_check_serve(&f->cfg, err), 0);
}

static void test_admin_lockout_keys(void **state)
{
    struct fixture *f = *state;
    load_ok(f, NULL, no_env);
    assert_int_equal(f->cfg.admin_max_failures, 5);
    assert_int_equal(f->cfg.admin_lockout_s, 60);
    config_done(&f->cfg);
    char *const ok[] = {"WXLOGIN_ADMIN_LOCKOUT_S=1", "WXLOGIN_ADMIN_MAX_FAILURES=100", NULL};
    load_ok(f, NULL, ok);
    assert_int_equal(f->cfg.admin_lockout_s, 1);
    assert_int_equal(f->cfg.admin_max_failures, 100);
    config_done(&f->cfg);
    char *const zero[] = {"WXLOGIN_ADMIN_LOCKOUT_S=0", NULL};
    assert_contains(load_fails(f, NULL, zero), "ADMIN_LOCKOUT_S");
    char *const none[] = {"WXLOGIN_ADMIN_MAX_FAILURES=0", NULL};
    assert_contains(load_fails(f, NULL, none), "ADMIN_MAX_FAILURES");
    char *const many[] = {"WXLOGIN_ADMIN_MAX_FAILURES=101", NULL};
    assert_contains(load_fails(f, NULL, many), "ADMIN_MAX_FAILURES");
}

/* ---- rate limits and trusted proxies ---- */

static void test_rate_limit_defaults(void **state)
{
    struct fixture *f = *state;
    load_ok(f, NULL, no_env);
    assert_int_equal(f->cfg.rate_limit_address.count, 120);
    assert_int_equal(f->cfg.rate_limit_address.period_ms, 60000);
    assert_int_equal(f->cfg.rate_limit_openid.count, 30);
    assert_int_equal(f->cfg.rate_limit_openid.period_ms, 60000);
    assert_int_equal(f->cfg.rate_limit_wechat.count, 5000);
    assert_int_equal(f->cfg.rate_limit_wechat.period_ms, 60000);
    assert_int_equal(f->cfg.rate_limit_session.count, 0); /* the auth_request hot path: off */
    assert_int_equal(f->cfg.rate_limit_table_size, 65536);
    assert_int_equal(f->cfg.ntrusted_proxies, 0);
}

static void test_rate_forms(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long count, period_ms;
    } good[] = {
        {"10/s", 10, 1000},         {"120/min", 120, 60000}, {"1000/h", 1000, 3600000},
        {"5/10s", 5, 10000},        {"1/24h", 1, 86400000},  {"1000000/min", 1000000, 60000},
        {"3/1440min", 3, 86400000}, {"off", 0, 0},           {"0", 0, 0},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct config_rate r = {-1, -1};
        if (config_rate_parse(good[i].text, &r) != 0)
            fail_msg("'%s' was refused", good[i].text);
        assert_int_equal(r.count, good[i].count);
        assert_int_equal(r.period_ms, good[i].period_ms);
    }
    static const char *const bad[] = {"",          "10",
                                      "10/",       "/min",
                                      "0/min",     "-1/min",
                                      "+5/min",    " 5/min",
                                      "5/min ",    "10/day",
                                      "10/0s",     "10/25h",
                                      "10/86401s", "1000001/s",
                                      "5/m",       "5/ min",
                                      "5/-1s",     "5.5/s",
                                      "off ",      "OFF",
                                      "5/1e3s",    "99999999999999999999/s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config_rate r = {-1, -1};
        if (config_rate_parse(bad[i], &r) == 0)
            fail_msg("'%s' was accepted as a rate", bad[i]);
        assert_int_equal(r.count, -1); /* untouched */
    }
}

static void test_rate_limit_keys_from_file_and_env(void **state)
{
    struct fixture *f = *state;
    const char *path = write_file(f, "w.conf",
                                  "rate_limit_address = 5/10s\n"
                                  "rate_limit_openid = off\n"
                                  "rate_limit_session = 100/s\n");
    char *const env[] = {"WXLOGIN_RATE_LIMIT_WECHAT=600/min", NULL};
    load_ok(f, path, env);
    assert_int_equal(f->cfg.rate_limit_address.count, 5);
    assert_int_equal(f->cfg.rate_limit_address.period_ms, 10000);
    assert_int_equal(f->cfg.rate_limit_openid.count, 0);
    assert_int_equal(f->cfg.rate_limit_session.count, 100);
    assert_int_equal(f->cfg.rate_limit_wechat.count, 600);
    config_done(&f->cfg);
    const char *bad = write_file(f, "b.conf", "\nrate_limit_address = 120/minute\n");
    const char *err = load_fails(f, bad, no_env);
    assert_names_line(err, bad, 2);
    assert_contains(err, "rate_limit_address");
    assert_contains(err, "120/minute");
    char *const bad_env[] = {"WXLOGIN_RATE_LIMIT_OPENID=lots", NULL};
    assert_contains(load_fails(f, NULL, bad_env), "RATE_LIMIT_OPENID");
    char *const small[] = {"WXLOGIN_RATE_LIMIT_TABLE_SIZE=63", NULL};
    assert_contains(load_fails(f, NULL, small), "RATE_LIMIT_TABLE_SIZE");
}

static void test_trusted_proxies(void **state)
{
    struct fixture *f = *state;
    char *const env[] = {"WXLOGIN_TRUSTED_PROXIES=10.0.0.0/8, 127.0.0.1 ::1/128,2001:db8::/32",
                         NULL};
    load_ok(f, NULL, env);
    assert_int_equal(f->cfg.ntrusted_proxies, 4);
    struct ipaddr a;
    assert_true(ipaddr_parse("10.1.2.3", 8, &a));
    assert_true(ipaddr_in(&a, f->cfg.trusted_proxies, f->cfg.ntrusted_proxies));
    assert_true(ipaddr_parse("11.1.2.3", 8, &a));
    assert_false(ipaddr_in(&a, f->cfg.trusted_proxies, f->cfg.ntrusted_proxies));
    config_done(&f->cfg);
    /* the environment replaces the file's list; empty means none */
    const char *path = write_file(f, "p.conf", "trusted_proxies = 10.0.0.0/8\n");
    char *const none[] = {"WXLOGIN_TRUSTED_PROXIES=", NULL};
    load_ok(f, path, none);
    assert_int_equal(f->cfg.ntrusted_proxies, 0);
    config_done(&f->cfg);
    /* host bits past the prefix: refused, naming the entry */
    char *const typo[] = {"WXLOGIN_TRUSTED_PROXIES=127.0.0.1, 10.0.0.1/8", NULL};
    const char *err = load_fails(f, NULL, typo);
    assert_contains(err, "TRUSTED_PROXIES");
    assert_contains(err, "'10.0.0.1/8'");
    char *const name[] = {"WXLOGIN_TRUSTED_PROXIES=proxy.internal", NULL};
    assert_contains(load_fails(f, NULL, name), "'proxy.internal'");
    /* at most CONFIG_MAX_PROXIES */
    char many[CONFIG_MAX_PROXIES * 16 + 64] = "WXLOGIN_TRUSTED_PROXIES=";
    for (int i = 0; i <= CONFIG_MAX_PROXIES; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "10.0.%d.0/24 ", i);
    char *const too_many[] = {many, NULL};
    assert_contains(load_fails(f, NULL, too_many), "more than 64");
}

static void test_config_done_twice_is_safe(void **state)
{
    struct fixture *f = *state;
    load_ok(f, NULL, no_env);
    config_done(&f->cfg);
    assert_null(f->cfg.listen);
    config_done(&f->cfg);
}

/* ---- the annotated example ---- */

/* The example beside the repository's root, found from this binary (<root>/<build>/tests/),
 * so the tests run from any directory and never skip for want of it. */
static const char *example_path(void)
{
    static char path[4096];
    if (path[0] != '\0')
        return path;
    char exe[2048];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    for (int up = 0; up < 3; up++) {
        char *slash = strrchr(exe, '/');
        assert_non_null(slash);
        *slash = '\0';
    }
    snprintf(path, sizeof(path), "%s/wxlogin.conf.example", exe);
    return path;
}
#define EXAMPLE example_path()

static void test_example_file_loads(void **state)
{
    struct fixture *f = *state;
    if (access(EXAMPLE, R_OK) != 0)
        fail_msg("%s: not found", EXAMPLE);
    int rc = config_load(&f->cfg, EXAMPLE, no_env, NULL, NULL, f->err);
    if (rc != 0)
        fail_msg("%s does not load: %s", EXAMPLE, f->err);
}

/* The example with its secret_file (a deployment path) pointed at a temp file: every other key
 * and value in it must be known and valid. */
static void test_example_file_keys_are_all_valid(void **state)
{
    struct fixture *f = *state;
    FILE *in = fopen(EXAMPLE, "r");
    if (in == NULL)
        fail_msg("%s: not found", EXAMPLE);
    const char *secret = write_file(f, "secret", "examplesecret\n");
    char *text = NULL;
    size_t cap = 0;
    FILE *out = open_memstream(&text, &cap);
    assert_non_null(out);
    char line[1024];
    while (fgets(line, sizeof(line), in) != NULL) {
        if (strncmp(line, "secret_file", 11) == 0)
            fprintf(out, "secret_file = %s\n", secret);
        else
            fputs(line, out);
    }
    fclose(in);
    fclose(out);
    const char *path = write_file(f, "example.conf", text);
    free(text);
    load_ok(f, path, no_env);
    assert_non_null(f->cfg.listen);
}

/* ---- reload (config_diff, config_keep) and serve --check (config_print) ---- */

struct names {
    char list[1024];
};

static void collect_name(const char *name, void *arg)
{
    struct names *n = arg;
    size_t len = strlen(n->list);
    snprintf(n->list + len, sizeof(n->list) - len, "%s;", name);
}

static void test_diff_names_changed_keys_never_values(void **state)
{
    struct fixture *f = *state;
    const char *sa = write_file(f, "sa", "Secr3tOfAppA-1\n");
    const char *a = write_file(f, "a.conf",
                               "appid = wx1\nsecret = s3cretOne\nlisten = 127.0.0.1:1\n"
                               "rate_limit_openid = 5/min\n[app \"wx2\"]\nsecret = first2\n");
    char *b_text = NULL;
    assert_true(
        asprintf(&b_text,
                 "appid = wx1\nsecret = s3cretTwo\nlisten = 127.0.0.1:2\n"
                 "rate_limit_openid = 5/min\nadmin_token = aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI\n"
                 "[app \"wx2\"]\nsecret_file = %s\n[app \"wx3\"]\nsecret = x\n",
                 sa) > 0);
    const char *b = write_file(f, "b.conf", b_text);
    free(b_text);
    struct config ca, cb;
    assert_int_equal(config_load(&ca, a, no_env, NULL, NULL, f->err), 0);
    assert_int_equal(config_load(&cb, b, no_env, NULL, NULL, f->err), 0);
    struct names n = {""};
    config_diff(&ca, &cb, collect_name, &n);
    assert_string_equal(n.list, "listen;secret;admin_token;[app \"wx2\"] secret;"
                                "[app \"wx2\"] secret_file;apps;");
    struct names none = {""};
    config_diff(&ca, &ca, collect_name, &none);
    assert_string_equal(none.list, "");
    /* keep: the running value comes back, the others stay */
    assert_int_equal(config_keep(&cb, &ca, "listen"), 0);
    assert_string_equal(cb.listen, "127.0.0.1:1");
    assert_string_equal(cb.secret, "s3cretTwo");
    assert_int_equal(config_keep(&cb, &ca, "rate_limit_openid"), 0);
    assert_int_equal(config_keep(&cb, &ca, "no_such_key"), -1);
    config_done(&ca);
    config_done(&cb);
}

static void test_print_redacts_every_secret(void **state)
{
    struct fixture *f = *state;
    const char *p = write_file(
        f, "p.conf",
        "appid = wx1\nsecret = S3cretValue\nadmin_token = aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI\n"
        "master_key = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
        "store = redis://u:RedisPass@127.0.0.1:6379/2\n"
        "wechat_base = http://p:ProxyPass@127.0.0.1:9\nrate_limit_wechat = 7/10s\n"
        "trusted_proxies = 10.0.0.0/8\n[app \"wx2\"]\nsecret = S3condSecret\n");
    load_ok(f, p, no_env);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    config_print(&f->cfg, out);
    assert_int_equal(fclose(out), 0);
    assert_not_contains(buf, "S3cretValue");
    assert_not_contains(buf, "S3condSecret");
    assert_not_contains(buf, "aB3dE5gH7jK9");
    assert_not_contains(buf, "AAECAwQF");
    assert_not_contains(buf, "RedisPass");
    assert_not_contains(buf, "ProxyPass");
    assert_contains(buf, "\nsecret = ***\n");
    assert_contains(buf, "\nadmin_token = ***\n");
    assert_contains(buf, "\nmaster_key = ***\n");
    assert_contains(buf, "\nrate_limit_wechat = 7/10s\n");
    assert_contains(buf, "\ntrusted_proxies = 10.0.0.0/8\n");
    assert_contains(buf, "[app \"wx2\"]\nsecret = ***\n");
    /* what it prints parses back to the same settings, secrets aside */
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_diff_names_changed_keys_never_values),
        T(test_print_redacts_every_secret),
        T(test_defaults_without_file_or_env),
        T(test_null_envp_is_no_environment),
        T(test_good_file_sets_every_key),
        T(test_missing_file_is_an_error_naming_it),
        T(test_file_unknown_key_names_key_and_line),
        T(test_file_two_unknown_keys_first_is_reported),
        T(test_file_unknown_section_is_an_error),
        T(test_file_syntax_error_names_line),
        T(test_file_bad_int_names_key_and_line),
        T(test_file_int_out_of_range_names_key),
        T(test_file_negative_int_rejected),
        T(test_file_int_overflow_rejected),
        T(test_file_int_bounds_are_inclusive),
        T(test_file_int_just_below_minimum_rejected),
        T(test_file_bad_log_level_names_key),
        T(test_file_bad_log_format_names_key),
        T(test_file_bad_url_names_key),
        T(test_file_url_without_scheme_rejected),
        T(test_file_empty_string_rejected),
        T(test_file_long_value_loads_or_names_key),
        T(test_bad_url_error_never_quotes_a_password),
        T(test_wechat_base_trailing_slashes_stripped),
        T(test_wechat_base_trailing_slash_stripped_from_env),
        T(test_wechat_base_of_only_slashes_rejected),
        T(test_env_overrides_file),
        T(test_env_sets_every_kind),
        T(test_env_bad_int_names_key),
        T(test_env_int_out_of_range_names_key),
        T(test_env_bad_enum_names_key),
        T(test_env_bad_url_names_key),
        T(test_env_error_after_good_file_fails),
        T(test_env_unknown_variable_warns_and_loads),
        T(test_env_unknown_variable_without_warn_callback),
        T(test_env_non_prefixed_variables_ignored_silently),
        T(test_secret_file_read_and_newline_stripped),
        T(test_secret_file_crlf_stripped),
        T(test_secret_file_only_whitespace_rejected),
        T(test_secret_file_missing_is_an_error),
        T(test_secret_and_secret_file_both_set_rejected),
        T(test_secret_from_env_and_secret_file_from_file_rejected),
        T(test_error_never_contains_env_secret),
        T(test_error_never_contains_file_secret),
        T(test_master_key_and_file_both_set_rejected),
        T(test_error_never_contains_master_key),
        T(test_store_other_than_sqlite_rejected),
        T(test_store_sqlite_without_path_rejected),
        T(test_store_default_in_state_directory),
        T(test_store_state_directory_first_of_several_no_trailing_slash),
        T(test_store_state_directory_relative_ignored),
        T(test_store_named_in_file_or_env_wins_over_state_directory),
        T(test_session_ttl_out_of_range_rejected),
        T(test_code_reuse_window_and_exchange_table_size_bounds),
        T(test_request_timeout_bounds),
        T(test_check_serve_without_appid),
        T(test_check_serve_without_secret),
        T(test_check_serve_with_appid_and_secret),
        T(test_admin_token_from_openssl_is_strong),
        T(test_admin_token_random_32_bytes_always_strong),
        T(test_admin_token_shorter_than_32_is_weak),
        T(test_admin_token_with_low_entropy_is_weak),
        T(test_admin_token_estimate_of_long_tokens),
        T(test_check_serve_refuses_a_short_admin_token),
        T(test_check_serve_refuses_a_predictable_admin_token),
        T(test_check_serve_names_admin_token_file),
        T(test_check_serve_accepts_a_strong_admin_token),
        T(test_admin_lockout_keys),
        T(test_rate_limit_defaults),
        T(test_rate_forms),
        T(test_rate_limit_keys_from_file_and_env),
        T(test_trusted_proxies),
        T(test_config_done_twice_is_safe),
        T(test_example_file_loads),
        T(test_example_file_keys_are_all_valid),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
