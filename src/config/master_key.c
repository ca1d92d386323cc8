#include "config/master_key.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define KEY_TEXT_MAX 128

static int decode(const char *text, const char *what, uint8_t key[CRYPTO_KEY_LEN],
                  char err[CONFIG_ERR_MAX])
{
    uint8_t raw[KEY_TEXT_MAX];
    size_t n = strlen(text);
    while (n > 0 && isspace((unsigned char)text[n - 1]))
        n--;
    int len = n <= KEY_TEXT_MAX ? crypto_b64_decode(text, n, raw) : -1;
    if (len != CRYPTO_KEY_LEN) {
        snprintf(err, CONFIG_ERR_MAX,
                 "%s: must be 32 bytes in base64 (e.g. openssl rand -base64 32)", what);
        crypto_wipe(raw, sizeof(raw));
        return -1;
    }
    memcpy(key, raw, CRYPTO_KEY_LEN);
    crypto_wipe(raw, sizeof(raw));
    return 0;
}

static int read_file(const char *path, const char *what, uint8_t key[CRYPTO_KEY_LEN],
                     char err[CONFIG_ERR_MAX])
{
    char text[KEY_TEXT_MAX + 2];
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "%s: cannot open '%.200s': %s", what, path, strerror(errno));
        return -1;
    }
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    int rc = decode(text, what, key, err);
    crypto_wipe(text, sizeof(text));
    return rc;
}

/* Creates path with a new random key, exclusively (two processes starting at once cannot both
 * create it: the loser reads the winner's). */
static int create_file(const char *path, uint8_t key[CRYPTO_KEY_LEN], char err[CONFIG_ERR_MAX])
{
    char text[64];
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? 1 : -1;
    int rc = -1;
    if (crypto_random(key, CRYPTO_KEY_LEN) != 0)
        goto out;
    size_t n = crypto_b64_encode(key, CRYPTO_KEY_LEN, text);
    text[n++] = '\n';
    if (write(fd, text, n) != (ssize_t)n || fsync(fd) != 0)
        goto out;
    rc = 0;
out:
    crypto_wipe(text, sizeof(text));
    close(fd);
    if (rc != 0) {
        unlink(path);
        snprintf(err, CONFIG_ERR_MAX, "master_key: cannot create '%.200s': %s", path,
                 strerror(errno));
    }
    return rc;
}

int master_key_load(const struct config *cfg, uint8_t key[CRYPTO_KEY_LEN], char err[CONFIG_ERR_MAX])
{
    err[0] = '\0';
    if (cfg->master_key != NULL)
        return decode(cfg->master_key, "master_key", key, err);
    if (cfg->master_key_file != NULL)
        return read_file(cfg->master_key_file, "master_key_file", key, err);

    const char *db = strncmp(cfg->store, "sqlite:", 7) == 0 ? cfg->store + 7 : NULL;
    if (db == NULL) {
        snprintf(err, CONFIG_ERR_MAX, "master_key: required with this store");
        return -1;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s.key", db) >= sizeof(path)) {
        snprintf(err, CONFIG_ERR_MAX, "store: path too long");
        return -1;
    }
    int rc = create_file(path, key, err);
    if (rc == 1)
        return read_file(path, "master_key (key file beside the database)", key, err);
    if (rc < 0 && err[0] == '\0')
        snprintf(err, CONFIG_ERR_MAX, "master_key: cannot create '%.200s': %s", path,
                 strerror(errno));
    return rc;
}

int master_key_peek(const struct config *cfg, uint8_t key[CRYPTO_KEY_LEN], char err[CONFIG_ERR_MAX])
{
    err[0] = '\0';
    const char *db = strncmp(cfg->store, "sqlite:", 7) == 0 ? cfg->store + 7 : NULL;
    if (cfg->master_key != NULL || cfg->master_key_file != NULL || db == NULL)
        return master_key_load(cfg, key, err);
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s.key", db) >= sizeof(path)) {
        snprintf(err, CONFIG_ERR_MAX, "store: path too long");
        return -1;
    }
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return 1;
    return read_file(path, "master_key (key file beside the database)", key, err);
}
