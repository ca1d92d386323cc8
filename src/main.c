/*
 * main: the command line. Parses argv, loads the configuration, sets up logging and signals,
 * and hands over to `serve`. The only place that exits. The local WeChat stand-in is another
 * program, `wxlogin-mock` (src/mock/): this binary carries none of its routes.
 *
 * Exit codes: 0 clean stop, 1 runtime failure (e.g. the port is taken), 2 bad usage or config.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config/config.h"
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
    "\n"
    "The local stand-in for WeChat's API used in development and tests is a separate\n"
    "program, wxlogin-mock (wxlogin-mock --help, docs/mock.md).\n"
    "\n"
    "options:\n"
    "  -h, --help              show this help\n"
    "  --version               show the version\n";

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

static int cmd_serve(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        } else {
            fprintf(stderr, "wxlogin serve: unknown argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }

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
    /* A deadline shorter than WeChat's budget cuts exchanges WeChat would still have answered. */
    long budget = wechat_budget_ms(cfg.upstream_timeout_ms, cfg.upstream_retries);
    if (cfg.request_timeout_ms <= budget)
        log_msg(LOG_WARN,
                "request_timeout_ms (%ld) is not above WeChat's budget of %ld ms "
                "(upstream_timeout_ms x (upstream_retries + 1) + 2 s per retry): requests may be "
                "answered 504 while WeChat would still answer",
                cfg.request_timeout_ms, budget);
    int rc = serve_run(&cfg);
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
        printf("wxlogin %s\n", WXLOGIN_VERSION);
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
            fputs(usage, stdout);
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
