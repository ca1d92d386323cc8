/*
 * main: the command line. Parses argv, loads the configuration, sets up logging and signals,
 * and hands over to `serve`. The only place that exits. The local WeChat stand-in is another
 * program, `wxlogin-mock` (src/mock/): this binary carries none of its routes.
 *
 * Exit codes: 0 clean stop, 1 runtime failure (e.g. the port is taken), 2 bad usage or config.
 */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config/config.h"
#include "config/master_key.h"
#include "crypto/crypto.h"
#include "log/log.h"
#include "runtime/workers.h"
#include "serve.h"
#include "version.h"
#include "wechat/client.h"

extern char **environ;

static const char usage[] =
    "usage: wxlogin <command> [options]\n"
    "\n"
    "WeChat Mini Program login service.\n"
    "\n"
    "commands:\n"
    "  serve [--config FILE]   run the service (default listen 127.0.0.1:2020). Every config\n"
    "                          key can be set in the environment as WXLOGIN_<KEY>; the\n"
    "                          environment wins over the file. See docs/config.md.\n"
    "                          `wxlogin serve --help` lists its options.\n"
    "\n"
    "The local stand-in for WeChat's API used in development and tests is a separate\n"
    "program, wxlogin-mock (wxlogin-mock --help, docs/mock.md).\n"
    "\n"
    "options:\n"
    "  -h, --help              show this help\n"
    "  --version               show the version and the commit it was built from\n";

static const char serve_usage[] =
    "usage: wxlogin serve [--config FILE] [--check] [--port-file FILE]\n"
    "\n"
    "Runs the service. Settings come from defaults, then FILE, then WXLOGIN_<KEY> environment\n"
    "variables (docs/config.md).\n"
    "\n"
    "options:\n"
    "  --config FILE           the configuration file (INI; see wxlogin.conf.example)\n"
    "  --check                 check the configuration as serve would before it binds (values,\n"
    "                          secret files, the admin token's strength, the master key), print\n"
    "                          the effective configuration with every secret shown as ***, and\n"
    "                          exit: 0 when it is good, 2 with the reason when not\n"
    "  --port-file FILE        once listening, write the bound port to FILE (atomically), for\n"
    "                          scripts that listen on port 0\n"
    "  -h, --help              show this help\n"
    "\n"
    "signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration (what can change\n"
    "without a restart; docs/operations.md).\n";

#define MAX_WARNINGS 16

struct warnings {
    char msg[MAX_WARNINGS][160];
    int n;
};

static void collect_warning(const char *msg, void *arg)
{
    struct warnings *w = arg;
    if (w->n < MAX_WARNINGS)
        snprintf(w->msg[w->n++], sizeof(w->msg[0]), "%s", msg);
}

/* Each connection is a file descriptor; the default soft limit (1024) is too small for a
 * server, so use what the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The value of option name at argv[*i] ("--name VALUE" or "--name=VALUE"), or NULL when
 * argv[*i] is not that option. *missing is set when it is, without a value. */
static const char *option_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=') {
        *missing = a[n + 1] == '\0';
        return a + n + 1;
    }
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return a;
    }
    return argv[++*i];
}

/* `serve --check`: what serve checks before it binds, then the effective configuration. */
static int check_config(const struct config *cfg)
{
    uint8_t key[CRYPTO_KEY_LEN];
    char err[CONFIG_ERR_MAX];
    int rc = master_key_peek(cfg, key, err);
    crypto_wipe(key, sizeof(key));
    if (rc < 0) {
        fprintf(stderr, "wxlogin: config error: %s\n", err);
        return 2;
    }
    config_print(cfg, stdout);
    if (rc == 1)
        printf("# the master key file beside the database does not exist yet: the first start "
               "creates it\n");
    printf("# configuration OK\n");
    return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_serve(int argc, char **argv)
{
    const char *path = NULL;
    struct serve_opts opts = {0};
    bool check = false;
    for (int i = 0; i < argc; i++) {
        bool missing = false;
        const char *v;
        if ((v = option_value(argc, argv, &i, "--config", &missing)) != NULL) {
            path = v;
        } else if ((v = option_value(argc, argv, &i, "--port-file", &missing)) != NULL) {
            opts.port_file = v;
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else {
            fprintf(stderr, "wxlogin serve: unknown argument '%s'\n%s", argv[i], serve_usage);
            return 2;
        }
        if (missing) {
            const char *eq = strchr(argv[i], '=');
            int n = eq != NULL ? (int)(eq - argv[i]) : (int)strlen(argv[i]);
            fprintf(stderr, "wxlogin serve: option %.*s needs a value\n", n, argv[i]);
            return 2;
        }
    }
    opts.config_path = path;

    struct config cfg;
    struct warnings warns = {.n = 0};
    char err[CONFIG_ERR_MAX];
    if (config_load(&cfg, path, environ, collect_warning, &warns, err) != 0) {
        fprintf(stderr, "wxlogin: config error: %s\n", err);
        return 2;
    }
    log_setup(cfg.log_level, cfg.log_format);
    for (int i = 0; i < warns.n; i++)
        log_msg(LOG_WARN, "%s", warns.msg[i]);
    if (config_check_serve(&cfg, err) != 0) {
        fprintf(stderr, "wxlogin: config error: %s\n", err);
        config_done(&cfg);
        return 2;
    }
    if (check) {
        int crc = check_config(&cfg);
        config_done(&cfg);
        return crc;
    }
    /* A deadline shorter than WeChat's budget cuts exchanges WeChat would still have answered. */
    long budget = wechat_budget_ms(cfg.upstream_timeout_ms, cfg.upstream_retries);
    if (cfg.request_timeout_ms <= budget)
        log_msg(LOG_WARN,
                "request_timeout_ms (%ld) is not above WeChat's budget of %ld ms "
                "(upstream_timeout_ms x (upstream_retries + 1) + 2 s per retry): requests may be "
                "answered 504 while WeChat would still answer",
                cfg.request_timeout_ms, budget);
    int rc = serve_run(&cfg, &opts);
    config_done(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("wxlogin %s (commit %s)\n", WXLOGIN_VERSION, wxlogin_commit);
        return 0;
    }
    if (strcmp(cmd, "mock") == 0) {
        fprintf(stderr, "wxlogin: the mock is a separate program now: run wxlogin-mock "
                        "(see docs/mock.md)\n");
        return 2;
    }
    if (strcmp(cmd, "serve") != 0) {
        fprintf(stderr, "wxlogin: unknown command '%s'\n%s", cmd, usage);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(serve_usage, stdout);
            return 0;
        }
    }

    workers_block_signals();
    raise_fd_limit();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "wxlogin: cannot initialise libcurl\n");
        return 1;
    }
    int rc = cmd_serve(argc - 2, argv + 2);
    curl_global_cleanup();
    return rc;
}
