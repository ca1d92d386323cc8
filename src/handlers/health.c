/* GET /healthz: liveness. 200 for as long as the process serves requests. */
#include "handlers/handlers.h"

void handle_healthz(struct http_request *req, void *arg)
{
    (void)arg;
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}
