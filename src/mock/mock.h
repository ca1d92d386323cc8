/*
 * mock: `wxlogin-mock`, a local stand-in for WeChat's API (docs/mock.md is its contract).
 *
 * Its own program, built from src/mock/ only: wxlogin's production binary carries none of it,
 * so no configuration of `wxlogin serve` can expose the mock's debug routes (one hands out
 * session keys). Runs on the same runtime as the service (worker threads, one loop and one
 * HTTP server each), so it is fast enough to be the upstream of our benchmarks. State that
 * WeChat keeps globally (spent codes, attempt counters, tokens, counters for tests) is shared
 * by the workers under a mutex.
 */
#ifndef WXLOGIN_MOCK_H
#define WXLOGIN_MOCK_H

/* The --help text. */
extern const char mock_usage[];

/* Runs the mock with its arguments (argv[0] excluded). Returns the process exit code: 0 clean
 * stop, 1 runtime failure, 2 bad usage. */
int mock_main(int argc, char **argv);

#endif
