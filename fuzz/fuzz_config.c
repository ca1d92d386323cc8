/* The configuration file (INI through inih), with every key's parser behind it. */
#include <unistd.h>

#include "config/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/wxlogin-fuzz-config-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    struct config cfg;
    char err[CONFIG_ERR_MAX];
    char *const envp[] = {NULL};
    if (config_load(&cfg, path, envp, NULL, NULL, err) == 0) {
        (void)config_check_serve(&cfg, err);
        config_done(&cfg);
    } else {
        FUZZ_CHECK(err[0] != '\0' && strlen(err) < CONFIG_ERR_MAX);
    }
    unlink(path);
    return 0;
}
