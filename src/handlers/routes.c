/* The service's routes. Keep docs/api.md in step. */
#include <string.h>

#include "config/config.h"
#include "handlers/handlers.h"

/* clang-format off: one route per line reads best */
const struct http_route handlers_routes[] = {
    {"POST", "/openid", handle_openid},
    {"POST", "/v1/login", handle_login},
    {"GET", "/v1/session", handle_session},
    {"POST", "/v1/logout", handle_logout},
    {"POST", "/v1/decrypt", handle_decrypt},
    {"POST", "/v1/check-signature", handle_check_signature},
    {"POST", "/v1/phone", handle_phone},
    {"GET", "/v1/session/check", handle_session_check},
    {"POST", "/v1/refresh", handle_refresh},
    {"GET", "/admin/v1/access-token", handle_admin_token},
    {"POST", "/admin/v1/access-token/refresh", handle_admin_token_refresh},
    {"POST", "/admin/v1/access-token/invalidate", handle_admin_token_invalidate},
    {"GET", "/admin/v1/apps/*/users/*", handle_admin_user},
    {"DELETE", "/admin/v1/apps/*/users/*", handle_admin_user_erase},
    {"POST", "/admin/v1/apps/*/users/*/logout", handle_admin_user_logout},
    {"POST", "/admin/v1/apps/*/users/*/ban", handle_admin_user_ban},
    {"DELETE", "/admin/v1/apps/*/users/*/ban", handle_admin_user_unban},
    {"DELETE", "/admin/v1/apps/*/sessions/*", handle_admin_session_end},
    {"GET", "/healthz", handle_healthz},
    {"HEAD", "/healthz", handle_healthz}, /* MHD sends a HEAD answer's headers, not its body */
    {"GET", "/readyz", handle_readyz},
    {"HEAD", "/readyz", handle_readyz},
};
/* clang-format on */

const size_t handlers_nroutes = sizeof(handlers_routes) / sizeof(handlers_routes[0]);

size_t handlers_select_routes(const struct config *cfg, struct http_route *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < handlers_nroutes && n < cap; i++) {
        /* Without an admin token the admin routes do not exist, for every method: a 405 would
         * tell a prober they are there. */
        if (cfg->admin_token == NULL && strncmp(handlers_routes[i].path, "/admin/", 7) == 0)
            continue;
        out[n] = handlers_routes[i];
        /* A limit on the hot path only when configured: otherwise not one instruction of it. */
        if (out[n].fn == handle_session && cfg->rate_limit_session.count > 0)
            out[n].fn = handle_session_limited;
        n++;
    }
    return n;
}
