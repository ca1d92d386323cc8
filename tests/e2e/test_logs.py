"""Access log lines, and secrets/codes kept out of the logs."""

import json
import re
import uuid

import pytest

from conftest import (assert_error, assert_ok, login, new_code, post_json, request)

E2E_APPID = "wxe2e0000000000001"
E2E_SECRET = "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3t00"
WRONG_SECRET = "W7ongW7ongW7ongW7ongW7ongW7ong00"


def num(v):
    """A number, or a string holding one (docs/operations.md logs numbers as strings)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return float(v) if "." in v else int(v)
        except ValueError:
            return None
    return None


def access_lines_json(proc, path):
    out = []
    for line in proc.log_lines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("path") == path:
            out.append(d)
    return out


def test_json_log_every_line_parses_and_access_fields(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "json", "WXLOGIN_LOG_LEVEL": "info"})
    assert_ok(login(s.port, new_code("logan")))
    assert_error(post_json(s.port, "/openid", b"nope"), 400, "bad_request", "none")
    odd = f"/nope-{uuid.uuid4().hex}"
    for _ in range(3):
        assert request(s.port, "GET", odd).status == 404

    s.wait_log(lambda t: t.count(odd) >= 3 and "/openid" in t)
    lines = s.log_lines()
    assert lines, "no log output"
    for line in lines:
        try:
            d = json.loads(line)
        except ValueError:
            pytest.fail(f"log line is not JSON: {line!r}")
        assert isinstance(d, dict), line

    # exactly one line per request
    odd_lines = access_lines_json(s, odd)
    assert len(odd_lines) == 3, f"expected 3 access lines for {odd}, got {odd_lines}"
    openid_lines = access_lines_json(s, "/openid")
    assert len(openid_lines) == 2, f"expected 2 access lines for /openid, got {openid_lines}"

    for d in odd_lines + openid_lines:
        for k in ("method", "path", "status", "duration_ms", "request_id"):
            assert k in d, f"access line lacks {k!r}: {d}"
        assert num(d["status"]) is not None, d
        assert num(d["duration_ms"]) is not None and num(d["duration_ms"]) >= 0, d
        assert isinstance(d["request_id"], str) and d["request_id"], d
    assert {d["method"] for d in odd_lines} == {"GET"}
    assert {num(d["status"]) for d in odd_lines} == {404}
    assert sorted(num(d["status"]) for d in openid_lines) == [200, 400]
    assert {d["method"] for d in openid_lines} == {"POST"}
    ids = [d["request_id"] for d in odd_lines + openid_lines]
    assert len(set(ids)) == len(ids), f"request ids not unique: {ids}"


def test_json_log_upstream_duration_visible(procs, mock):
    """duration_ms reflects the time spent (a 300 ms upstream delay)."""
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "json"})
    assert_ok(login(s.port, new_code("slowlog", "delay300")))
    s.wait_log(lambda t: '"/openid"' in t)
    [d] = access_lines_json(s, "/openid")
    assert num(d["duration_ms"]) >= 250, d


def test_text_log_access_line(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "text", "WXLOGIN_LOG_LEVEL": "info"})
    assert_ok(login(s.port, new_code("texas")))
    odd = f"/nope-{uuid.uuid4().hex}"
    for _ in range(2):
        request(s.port, "GET", odd)
    s.wait_log(lambda t: "status=200" in t and t.count(odd) >= 2)
    lines = s.log_lines()
    ok = [l for l in lines if "status=200" in l and "/openid" in l]
    assert len(ok) == 1, "expected one access line with status=200 for /openid:\n" + "\n".join(lines)
    line = ok[0]
    assert "POST" in line, line
    assert re.search(r"dur", line), f"no duration in {line!r}"
    assert re.search(r"req", line), f"no request id in {line!r}"
    odd_lines = [l for l in lines if odd in l]
    assert len(odd_lines) == 2 and all("status=404" in l for l in odd_lines), odd_lines
    for l in lines:
        try:
            json.loads(l)
            pytest.fail(f"text format wrote a JSON line: {l!r}")
        except ValueError:
            pass


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secret_and_codes_never_logged(procs, fmt):
    m = procs.mock(apps=[(E2E_APPID, E2E_SECRET)])
    env = {"WXLOGIN_LOG_FORMAT": fmt, "WXLOGIN_LOG_LEVEL": "debug",
           "WXLOGIN_UPSTREAM_TIMEOUT_MS": "400", "WXLOGIN_UPSTREAM_RETRIES": "1"}
    s = procs.serve(mock=m, appid=E2E_APPID, secret=E2E_SECRET, env=env)
    bad = procs.serve(mock=m, appid=E2E_APPID, secret=WRONG_SECRET, env=env)

    codes = []
    bodies = []

    def go(port, code, check):
        codes.append(code)
        r = login(port, code)
        bodies.append(r.body)
        check(r)

    go(s.port, new_code("alice"), assert_ok)
    go(s.port, new_code("ubob"), lambda r: assert_ok(r, unionid=True))
    go(s.port, new_code("carl", "busy1"), assert_ok)
    go(s.port, new_code("dina", "err40029"),
       lambda r: assert_error(r, 400, "invalid_code", "relogin", 40029))
    go(s.port, new_code("eric", "err40164"),
       lambda r: assert_error(r, 500, "config_error", "none", 40164))
    go(s.port, new_code("fred", "http500"),
       lambda r: assert_error(r, 502, "upstream_error", "relogin"))
    go(s.port, new_code("gail", "delay1000"),
       lambda r: assert_error(r, 504, "upstream_timeout", "relogin"))
    go(s.port, new_code("hugo", "err40163"),
       lambda r: assert_error(r, 400, "code_used", "relogin", 40163))
    go(s.port, new_code("ivan", "err40226"),
       lambda r: assert_error(r, 403, "user_blocked", "none", 40226))
    go(s.port, new_code("jane", "err45011"),
       lambda r: assert_error(r, 429, "rate_limited", "retry", 45011))
    used = new_code("karl")
    go(s.port, used, assert_ok)
    go(s.port, used, lambda r: None)  # a repeated code (answer checked in test_openid)
    go(bad.port, new_code("iris"),
       lambda r: assert_error(r, 500, "config_error", "none", 40125))
    # a malformed code (bad_request) is client input, also kept out of the logs
    bad_code = "jill!" + uuid.uuid4().hex
    r = post_json(s.port, "/openid", {"code": bad_code})
    assert_error(r, 400, "bad_request", "none")
    bodies.append(r.body)

    # stopping flushes whatever the processes still had to write
    s.stop()
    bad.stop()

    for p in (s, bad):
        log = p.log_text()
        assert log.strip(), f"{p.name} wrote no log at debug level"
        for secret in (E2E_SECRET, WRONG_SECRET):
            assert secret not in log, f"{p.name} logged the app secret {secret}"
            assert secret[:16] not in log, f"{p.name} logged part of the app secret"
        for code in codes:
            assert code not in log, f"{p.name} logged the login code {code}"
        assert bad_code not in log, f"{p.name} logged a (malformed) login code {bad_code}"
    for b in bodies:
        assert E2E_SECRET.encode() not in b and WRONG_SECRET.encode() not in b
