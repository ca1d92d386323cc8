/*
 * token/fetch: how a worker fetches an app's access token (the fetchers of token/token.h).
 *
 *   direct  one process: ask WeChat (stable_token or the classic /cgi-bin/token).
 *   leased  several instances sharing a store: read the token they share; only if it is
 *           missing, rejected or short, take the store's lease, read once more (the holder
 *           before may have published just before our take), ask WeChat, then publish the
 *           result for the others; an instance that finds the lease taken reads again every
 *           100 ms until the holder has published (or the lease could have lapsed). So N
 *           instances cause one fetch.
 * Each fetch step runs in the fetcher's own pending slot on its worker's loop.
 */
#ifndef WXLOGIN_TOKEN_FETCH_H
#define WXLOGIN_TOKEN_FETCH_H

#include "token/token.h"
#include "wechat/api.h"

struct loop;
struct store;
struct wechat_client;

/*
 * A fetcher for app on this worker, registered with t: leased when store is shared by several
 * instances, else direct. app is borrowed. NULL when out of memory.
 */
struct token_fetcher *token_fetcher_new(struct token *t, const struct wechat_app *app,
                                        enum wechat_token_api api, struct wechat_client *wx,
                                        struct store *store, struct loop *loop);
/* Unregisters (aborting a fetch in progress) and frees. Accepts NULL. */
void token_fetcher_free(struct token_fetcher *f);

#endif
