"""Access log lines, and secrets/codes kept out of the logs."""

import json
import re
import urllib.parse
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
    return proc.json_lines(lambda d: d.get("path") == path)


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
    assert re.search(r" duration_ms=[0-9]+(\.[0-9]+)?( |$)", line), f"no duration in {line!r}"
    assert re.search(r" request_id=[0-9a-f]{16}( |$)", line), f"no request id in {line!r}"
    odd_lines = [l for l in lines if odd in l]
    assert len(odd_lines) == 2 and all("status=404" in l for l in odd_lines), odd_lines
    for l in lines:
        try:
            json.loads(l)
            pytest.fail(f"text format wrote a JSON line: {l!r}")
        except ValueError:
            pass


CUT_MARK = "\u2026"  # "…": the end of a value that was cut (docs/operations.md)


def decoded_path(raw):
    """The path as wxlogin sees it: percent-decoded bytes, shown as UTF-8 (U+FFFD for bytes
    that are not)."""
    return urllib.parse.unquote_to_bytes(raw).decode("utf-8", "replace")


def check_access_line(d, want_path):
    """An access line for a 400 GET (a percent-encoded path is refused before routing) of want_path: whole, or cut and flagged."""
    assert d.get("method") == "GET" and num(d.get("status")) == 400, d
    assert num(d.get("duration_ms")) is not None, d
    got = d.get("path")
    assert isinstance(got, str), d
    if d.get("truncated") is True:
        assert got.endswith(CUT_MARK), d
        kept = got[:-len(CUT_MARK)]
        assert len(kept) < len(want_path) and want_path.startswith(kept), \
            f"cut path is not a prefix of whole characters: {kept[-40:]!r}"
    else:
        assert "truncated" not in d, d
        assert got == want_path, (got[-40:], want_path[-40:])


# Escape-heavy path units: 6 bytes per byte once escaped (%01), a quote and a backslash
# (2 bytes), a multi-byte character, a byte that is not UTF-8, U+2028 (a line end to Python's
# splitlines and to JavaScript) and a C1 control (U+009B, a CSI to some terminals).
HEAVY_UNITS = ["%01", "%22", "%5C", "%E5%BE%AE", "%FF", "%E2%80%A8", "%C2%9B"]


def test_json_access_line_escape_heavy_paths_of_many_lengths(procs, mock):
    """Paths of %01 x n for 60 lengths around the 4 KiB line (and other escape-heavy units):
    every stderr line is JSON, and each request's access line keeps its status and request id,
    with the path whole or cut between whole characters and flagged."""
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "json"})
    sent = {}
    lengths = list(range(630, 750, 2))  # 60 lengths; the path no longer fits from about 680
    cases = [("%01", n) for n in lengths]
    cases += [(u, n) for u in HEAVY_UNITS[1:] for n in (1, 250, 700)]
    for i, (unit, n) in enumerate(cases):
        raw = "/" + unit * n
        rid = f"heavy-{i}-{uuid.uuid4().hex[:8]}"
        r = request(s.port, "GET", raw, headers={"X-Request-Id": rid})
        assert r.status == 400, (unit, n, r.status)
        sent[rid] = (unit, n, decoded_path(raw))
    s.wait_log(lambda t: all(rid in t for rid in sent), timeout=10)

    by_id = {}
    bad = []
    for line in s.log_lines():
        try:
            d = json.loads(line)
        except ValueError:
            bad.append(line[:120])
            continue
        assert isinstance(d, dict), line
        if d.get("request_id") in sent:
            by_id[d["request_id"]] = d
    assert not bad, f"{len(bad)} log lines are not JSON, e.g. {bad[:3]}"
    missing = [sent[rid][:2] for rid in sent if rid not in by_id]
    assert not missing, f"no access line (with its request_id) for {len(missing)} paths: " \
                        f"{missing[:5]}"
    cut = 0
    for rid, (unit, n, want) in sent.items():
        check_access_line(by_id[rid], want)
        cut += by_id[rid].get("truncated") is True
    assert cut >= 40, f"only {cut} paths were long enough to be cut: the test lost its point"


def test_text_log_escapes_control_characters(procs, mock):
    """ESC, BS and the other control characters of a request path never reach the terminal
    raw in the text format."""
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "text"})
    tag = uuid.uuid4().hex[:12]
    raw = f"/{tag}%1B%5B2J%1B%5D0;owned%07%08%08%01%7F%C2%9B31m"
    assert request(s.port, "GET", raw).status == 400
    s.wait_log(lambda t: tag in t)
    s.stop()
    data = s.log_path.read_bytes()
    lines = [l for l in data.split(b"\n") if tag.encode() in l]
    assert len(lines) == 1, lines
    for b in (b"\x1b", b"\x07", b"\x08", b"\x01", b"\x7f", b"\xc2\x9b"):
        assert b not in data, f"{b!r} reached the log raw: {lines[0]!r}"
    assert b"\\u001b[2J\\u001b]0;owned\\u0007\\b\\b\\u0001\\u007f\\u009b31m" in lines[0], lines[0]
    assert b" status=400 " in lines[0], lines[0]


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
