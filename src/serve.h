/*
 * serve: `wxlogin serve`, the service. Wires each worker's loop to its HTTP server, its WeChat
 * client and the handlers, and drains in-flight requests on shutdown.
 */
#ifndef WXLOGIN_SERVE_H
#define WXLOGIN_SERVE_H

struct config;

/* Runs the service until SIGINT/SIGTERM. Returns the process exit code. */
int serve_run(const struct config *cfg);

#endif
