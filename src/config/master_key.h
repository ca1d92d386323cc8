/*
 * config/master_key: the 32-byte key that seals session keys at rest.
 *
 * From `master_key` (base64), else `master_key_file` (a file holding the base64), else, with the
 * SQLite store, `<database>.key` beside the database: created (mode 0600, 32 random bytes) on
 * first start and read from then on. Losing that file makes every stored session_key unreadable
 * (users simply log in again); copying the database without it reveals no session_key.
 */
#ifndef WXLOGIN_CONFIG_MASTER_KEY_H
#define WXLOGIN_CONFIG_MASTER_KEY_H

#include <stdint.h>

#include "config/config.h"
#include "crypto/crypto.h"

/* Fills key. Returns 0, or -1 with err naming the key or file (never the key's value). */
int master_key_load(const struct config *cfg, uint8_t key[CRYPTO_KEY_LEN],
                    char err[CONFIG_ERR_MAX]);

/* As master_key_load(), but creates nothing (`serve --check`): returns 1, key untouched, when
 * the key file beside the database does not exist yet (the first start creates it). */
int master_key_peek(const struct config *cfg, uint8_t key[CRYPTO_KEY_LEN],
                    char err[CONFIG_ERR_MAX]);

#endif
