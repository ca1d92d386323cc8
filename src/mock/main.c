/*
 * mock/main: the `wxlogin-mock` program. A separate binary from `wxlogin`: the mock's routes
 * (among them /mock/session_key, which hands out users' session keys) exist only here.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "mock/mock.h"
#include "runtime/workers.h"
#include "version.h"

/* Benchmarks open many connections: use what the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(mock_usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("wxlogin-mock %s (commit %s)\n", WXLOGIN_VERSION, wxlogin_commit);
            return 0;
        }
    }
    workers_block_signals();
    raise_fd_limit();
    return mock_main(argc - 1, argv + 1);
}
