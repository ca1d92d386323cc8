"""The request core: every request is answered by its deadline, an SQLite store belongs to one
process, and the access line carries numbers as numbers."""

import json
import threading
import time

from conftest import (assert_error, base_env, login, new_code, post_json, request, run_cli,
                      wait_until)


def deadline_env(tmp_path, ms=600):
    # WeChat's own timeout far beyond the request's: only the request deadline can end it.
    return {"WXLOGIN_REQUEST_TIMEOUT_MS": str(ms), "WXLOGIN_UPSTREAM_TIMEOUT_MS": "60000",
            "WXLOGIN_UPSTREAM_RETRIES": "0", "WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"}


def test_request_whose_work_never_completes_is_answered_at_its_deadline(procs, mock, tmp_path):
    s = procs.serve(mock=mock, env=deadline_env(tmp_path))
    t0 = time.monotonic()
    r = login(s.port, new_code("stuck", "hang"), timeout=10)
    took = time.monotonic() - t0
    assert_error(r, 504, "timeout", "retry")
    assert 0.5 <= took < 3.0, f"answered after {took:.2f} s, deadline 0.6 s"
    # the service goes on serving, and the abandoned work left nothing behind
    assert login(s.port, new_code("after")).status == 200
    s.wait_log(lambda t: "request deadline passed" in t)


def test_waiters_on_a_timed_out_exchange_are_answered_too(procs, mock, tmp_path):
    """A double tap on a code whose exchange hangs: the leader is cut by its deadline, and the
    request that waited for it is answered by then as well, never left hanging."""
    s = procs.serve(mock=mock, env=deadline_env(tmp_path))
    code = new_code("twice", "hang")
    results = [None, None]

    def go(i):
        results[i] = login(s.port, code, timeout=10)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    took = time.monotonic() - t0
    assert all(r is not None for r in results), results
    assert took < 3.0, f"answered after {took:.2f} s"
    statuses = sorted(r.status for r in results)
    assert statuses in ([503, 504], [504, 504]), results
    for r in results:
        if r.status == 504:
            assert_error(r, 504, "timeout", "retry")
        else:
            assert_error(r, 503, "aborted", "retry")
    assert login(s.port, new_code("after")).status == 200


def test_wait_for_the_access_token_is_cut_by_the_deadline(procs, tmp_path):
    """/v1/phone waits for an access token that WeChat takes 3 s to give: the request is
    answered 504 at its 0.8 s deadline (its wait is cancelled), the fetch itself goes on, and
    once it is done the token serves the next request at once."""
    from test_token import delayed_mock, phone
    slow = delayed_mock(procs, 3000)
    s = procs.serve(mock=slow, env=deadline_env(tmp_path, 800))
    tok = post_json(s.port, "/v1/login", {"code": new_code("tok")}).json()["token"]
    t0 = time.monotonic()
    r = phone(s.port, tok, new_code("tok"))
    took = time.monotonic() - t0
    assert_error(r, 504, "timeout", "retry")
    assert took < 2.5, f"answered after {took:.2f} s"
    assert wait_until(lambda: slow.stats()["stable_token"]["requests"] >= 1, timeout=5)
    time.sleep(3.0)  # the fetch ends; its token is cached
    t0 = time.monotonic()
    r = phone(s.port, tok, new_code("tok"))
    assert r.status == 200, r
    assert time.monotonic() - t0 < 0.7
    assert slow.stats()["stable_token"]["requests"] == 1


def test_second_process_on_the_same_sqlite_file_is_refused(procs, mock, tmp_path):
    a = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"})
    assert login(a.port, new_code("first")).status == 200
    env = base_env(WXLOGIN_APPID="wx1234567890abcdef",
                   WXLOGIN_SECRET="0123456789abcdef0123456789abcdef",
                   WXLOGIN_WECHAT_BASE=mock.base, WXLOGIN_LISTEN="127.0.0.1:0",
                   WXLOGIN_STORE=f"sqlite:{tmp_path}/wx.db")
    cp = run_cli(["serve"], env=env, timeout=10)
    assert cp.returncode == 1, cp
    assert "in use by another process" in cp.stderr, cp.stderr
    assert "wx.db" in cp.stderr, cp.stderr
    # the first one is untouched
    assert login(a.port, new_code("still")).status == 200
    assert request(a.port, "GET", "/readyz").status == 200


def test_access_line_numbers_are_json_numbers(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "json", "WXLOGIN_LOG_LEVEL": "info"})
    assert request(s.port, "GET", "/healthz").status == 200
    s.wait_log(lambda t: '"path":"/healthz"' in t)
    lines = [json.loads(x) for x in s.log_lines() if '"path":"/healthz"' in x]
    assert lines, s.log_text()
    d = lines[0]
    assert type(d["status"]) is int and d["status"] == 200, d
    assert isinstance(d["duration_ms"], float) and d["duration_ms"] >= 0, d


def test_access_lines_of_a_busy_loop_are_written_whole(procs, mock):
    """Access lines are batched per loop iteration; every line must still arrive whole."""
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "json", "WXLOGIN_LOG_LEVEL": "info"})
    n = 300

    def go():
        for _ in range(n // 3):
            request(s.port, "GET", "/healthz")

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_until(lambda: s.log_text().count('"path":"/healthz"') >= n, timeout=5)
    for line in s.log_lines():
        json.loads(line)  # every line is a whole JSON object


def test_header_limit_is_8k_per_connection(procs, mock):
    """Per-connection buffers are 8 KiB (libmicrohttpd zeroes them on every request): 6 KB of
    headers pass, 9 KB are refused with 431, and the service goes on."""
    s = procs.serve(mock=mock)
    assert request(s.port, "GET", "/healthz", headers={"X-Big": "a" * 6000}).status == 200
    assert request(s.port, "GET", "/healthz", headers={"X-Big": "a" * 9000}).status == 431
    assert request(s.port, "GET", "/healthz").status == 200


def test_deadline_shorter_than_the_wechat_budget_is_warned_about(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_REQUEST_TIMEOUT_MS": "1000"})
    s.wait_log(lambda t: "request_timeout_ms (1000) is not above" in t)
    quiet = procs.serve(mock=mock)  # the defaults: 60 s against 19 s
    assert request(quiet.port, "GET", "/healthz").status == 200
    assert "request_timeout_ms" not in quiet.log_text()
