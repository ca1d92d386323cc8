/* The service's routes. Keep docs/api.md in step. */
#include "handlers/handlers.h"

const struct http_route handlers_routes[] = {
    {"POST", "/openid", handle_openid},
    {"GET", "/healthz", handle_healthz},
};

const size_t handlers_nroutes = sizeof(handlers_routes) / sizeof(handlers_routes[0]);
