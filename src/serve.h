/*
 * serve: `wxlogin serve`, the service. Wires each worker's loop to its HTTP server, its WeChat
 * client and the handlers, and drains in-flight requests on shutdown.
 */
#ifndef WXLOGIN_SERVE_H
#define WXLOGIN_SERVE_H

struct config;

struct serve_opts {
    const char *config_path; /* read again on SIGHUP; NULL: none (the environment only) */
    const char *port_file;   /* NULL: none; else the bound port is written there */
};

/*
 * Runs the service until SIGINT/SIGTERM; SIGHUP reloads what can change without a restart.
 * cfg is borrowed for the whole run (keys a reload cannot change keep its values). Returns the
 * process exit code (2: the store was sealed with another master key).
 */
int serve_run(const struct config *cfg, const struct serve_opts *opts);

#endif
