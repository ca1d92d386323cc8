/* The service's routes. Keep docs/api.md in step. */
#include "handlers/handlers.h"

const struct http_route handlers_routes[] = {
    {"POST", "/openid", handle_openid},     {"POST", "/v1/login", handle_login},
    {"GET", "/v1/session", handle_session}, {"POST", "/v1/logout", handle_logout},
    {"GET", "/healthz", handle_healthz},    {"GET", "/readyz", handle_readyz},
};

const size_t handlers_nroutes = sizeof(handlers_routes) / sizeof(handlers_routes[0]);
