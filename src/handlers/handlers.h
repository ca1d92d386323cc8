/*
 * handlers: one file per resource; the only layer that chooses HTTP status codes.
 *
 * Each worker thread has its own handlers_ctx (its WeChat client) so a request never leaves its
 * thread. The route table is shared and read-only.
 */
#ifndef WXLOGIN_HANDLERS_H
#define WXLOGIN_HANDLERS_H

#include <stddef.h>

#include "http/server.h"

struct config;
struct wechat_client;

struct handlers_ctx {
    const struct config *cfg; /* borrowed, outlives the workers */
    struct wechat_client *wx; /* this worker's client */
};

extern const struct http_route handlers_routes[];
extern const size_t handlers_nroutes;

void handle_openid(struct http_request *req, void *arg);
void handle_healthz(struct http_request *req, void *arg);

#endif
