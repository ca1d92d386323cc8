/*
 * mock: `wxlogin mock`, a local stand-in for WeChat's API (docs/mock.md is its contract).
 *
 * Runs on the same runtime as the service (worker threads, one loop and one HTTP server each),
 * so it is fast enough to be the upstream of our benchmarks. State that WeChat keeps globally
 * (spent codes, attempt counters, counters for tests) is shared by the workers under a mutex.
 */
#ifndef WXLOGIN_MOCK_H
#define WXLOGIN_MOCK_H

/* Runs the mock with the arguments after "mock". Returns the process exit code. */
int mock_main(int argc, char **argv);

#endif
