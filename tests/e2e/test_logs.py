"""Access log lines, and secrets/codes kept out of the logs."""

import hashlib
import http.client
import json
import re
import urllib.parse
import uuid

import pytest

from conftest import (DEFAULT_APPID, assert_error, assert_ok, login, new_code, post_json, request)

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


# --------------------------------------------------------------------------
# the access line's client, app and openid; numbers as numbers
# --------------------------------------------------------------------------

def login_v1(port, code, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return request(port, "POST", "/v1/login", body=json.dumps({"code": code}), headers=h)


def bearer(token, **more):
    h = {"Authorization": f"Bearer {token}"}
    h.update(more)
    return h


def by_request_id(proc, rid):
    """The access line of the request answered with X-Request-Id rid."""
    lines = proc.json_lines(lambda d: d.get("msg") == "request" and d.get("request_id") == rid)
    assert len(lines) == 1, (rid, lines)
    return lines[0]


def wait_access(proc, *resps):
    """The access lines of these answers (each names its request id), once all are written."""
    rids = [r.headers["x-request-id"] for r in resps]
    proc.wait_log(lambda t: all(f'"request_id":"{rid}"' in t for rid in rids))
    return [by_request_id(proc, rid) for rid in rids]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def test_access_line_client_app_openid_and_numbers(procs, mock):
    """JSON: client (the TCP peer; an X-Forwarded-For from a peer not in trusted_proxies is
    ignored, and no peer field), app and openid on login, session check, refresh and logout,
    and status, bytes and duration_ms as JSON numbers."""
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "json"})
    r_login = login_v1(s.port, new_code("acc"), headers={"X-Forwarded-For": "6.6.6.6"})
    assert r_login.status == 200, r_login
    tok, openid = r_login.json()["token"], r_login.json()["openid"]
    r_check = request(s.port, "GET", "/v1/session", headers=bearer(tok))
    assert r_check.status == 200, r_check
    r_openid = login(s.port, new_code("acc2"))
    assert r_openid.status == 200
    r_bad = request(s.port, "GET", "/v1/session", headers=bearer("wxl_" + "A" * 43))
    assert r_bad.status == 401
    r_ref = request(s.port, "POST", "/v1/refresh", headers=bearer(tok))
    assert r_ref.status == 200, r_ref
    tok = r_ref.json()["token"]
    r_out = request(s.port, "POST", "/v1/logout", headers=bearer(tok))
    assert r_out.status == 204
    r_404 = request(s.port, "GET", "/nope")
    login_l, check_l, openid_l, bad_l, ref_l, out_l, nf_l = wait_access(
        s, r_login, r_check, r_openid, r_bad, r_ref, r_out, r_404)

    for d, r in ((login_l, r_login), (check_l, r_check), (openid_l, r_openid),
                 (bad_l, r_bad), (ref_l, r_ref), (out_l, r_out), (nf_l, r_404)):
        assert d["client"] == "127.0.0.1", d
        assert "peer" not in d, f"no proxy in between: {d}"
        assert is_int(d["status"]) and d["status"] == r.status, d
        assert is_int(d["bytes"]) and d["bytes"] == len(r.body), (d, r)
        assert isinstance(d["duration_ms"], (int, float)) and d["duration_ms"] >= 0, d
    assert "6.6.6.6" not in s.log_text(), "a spoofed X-Forwarded-For reached the log"
    for d in (login_l, check_l, ref_l, out_l):
        assert d["app"] == DEFAULT_APPID and d["openid"] == openid, d
    assert openid_l["app"] == DEFAULT_APPID and openid_l["openid"] == r_openid.json()["openid"]
    # a token that names no session: the app, no user
    assert bad_l["app"] == DEFAULT_APPID and "openid" not in bad_l, bad_l
    assert "app" not in nf_l and "openid" not in nf_l, nf_l


def test_access_line_client_behind_trusted_proxies(procs, mock):
    """From a trusted proxy, the client is X-Forwarded-For's rightmost untrusted entry (what
    a client wrote to its left is ignored) and the proxy is the peer field."""
    env = {"WXLOGIN_LOG_FORMAT": "json",
           "WXLOGIN_TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8"}
    s = procs.serve(mock=mock, env=env)
    r1 = request(s.port, "GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    # a client that sent its own X-Forwarded-For through two trusted proxies
    r2 = request(s.port, "GET", "/healthz",
                 headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 10.1.2.3"})
    r3 = request(s.port, "GET", "/healthz")  # the proxy itself
    r4 = request(s.port, "GET", "/healthz", headers={"X-Forwarded-For": "garbage"})
    r5 = login_v1(s.port, new_code("fwd"), headers={"X-Forwarded-For": "2001:db8::7"})
    assert r5.status == 200
    d1, d2, d3, d4, d5 = wait_access(s, r1, r2, r3, r4, r5)
    assert (d1["client"], d1["peer"]) == ("203.0.113.9", "127.0.0.1"), d1
    assert (d2["client"], d2["peer"]) == ("198.51.100.4", "127.0.0.1"), d2
    assert d3["client"] == "127.0.0.1" and "peer" not in d3, d3
    assert d4["client"] == "127.0.0.1" and "peer" not in d4, d4  # proves nothing: the peer
    assert (d5["client"], d5["peer"]) == ("2001:db8::7", "127.0.0.1"), d5
    assert d5["openid"] == r5.json()["openid"], d5
    assert "6.6.6.6" not in s.log_text()
    [audit] = s.json_lines(lambda d: d.get("msg") == "audit" and d.get("event") == "login")
    assert audit["client"] == "2001:db8::7", audit


def test_text_access_line_numbers_unquoted_and_identity(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_LOG_FORMAT": "text"})
    r = login_v1(s.port, new_code("txt"))
    assert r.status == 200
    rid, openid = r.headers["x-request-id"], r.json()["openid"]
    s.wait_log(lambda t: f"request_id={rid}" in t)
    [line] = [l for l in s.log_lines() if f"request_id={rid}" in l and " request " in l]
    assert " status=200 " in line, line
    assert f" bytes={len(r.body)} " in line, line
    assert re.search(r" duration_ms=[0-9]+\.[0-9]{3} ", line), line
    assert " client=127.0.0.1 " in line, line
    assert f" app={DEFAULT_APPID} " in line and f" openid={openid} " in line, line
    assert '"' not in line, f"nothing in this line needs quoting: {line}"


# --------------------------------------------------------------------------
# audit lines
# --------------------------------------------------------------------------

ADMIN = "5f0d3b8e9a4c7e21b6d8f0a3c5e7b9d1f2a4c6e8b0d2f4a6c8e0b2d4f6a8c0e2"


def audits(proc, event=None):
    return proc.json_lines(lambda d: d.get("msg") == "audit" and
                           (event is None or d.get("event") == event))


def mock_session_key(mock, appid, openid):
    """The mock's debug route (raw: conftest.request() refuses any body naming session_key)."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("GET", f"/mock/session_key?appid={appid}&openid={openid}")
        r = conn.getresponse()
        assert r.status == 200
        return json.loads(r.read())["session_key"]
    finally:
        conn.close()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_audit_lines_and_no_secret_in_any_line(procs, fmt):
    """login (new, reused, via /openid), logout, access-token refresh (forced or not) and
    invalidation, refused admin calls (missing, wrong token, locked out): one info line each
    with its event and client address. Then every secret of the run is looked for in the whole
    log: app secret, admin token, guessed admin tokens, session tokens and their hashes,
    session_keys, access tokens."""
    m = procs.mock(apps=[(E2E_APPID, E2E_SECRET)])
    env = {"WXLOGIN_LOG_FORMAT": "json", "WXLOGIN_LOG_LEVEL": "debug",
           "WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_ADMIN_MAX_FAILURES": "3"}
    env["WXLOGIN_LOG_FORMAT"] = fmt
    s = procs.serve(mock=m, appid=E2E_APPID, secret=E2E_SECRET, env=env)
    code = new_code("audi")
    r1 = login_v1(s.port, code)
    r2 = login_v1(s.port, code)  # the same code again: its session, reused
    assert r1.status == 200 and r2.status == 200 and r1.json()["token"] == r2.json()["token"]
    tok, openid = r1.json()["token"], r1.json()["openid"]
    r3 = login(s.port, new_code("audo"))
    assert r3.status == 200
    assert request(s.port, "GET", "/v1/session", headers=bearer(tok)).status == 200
    assert request(s.port, "POST", "/v1/logout", headers=bearer(tok)).status == 204

    adm = {"Authorization": f"Bearer {ADMIN}"}
    at1 = request(s.port, "GET", "/admin/v1/access-token", headers=adm).json()["access_token"]
    r = request(s.port, "POST", "/admin/v1/access-token/refresh?force=true", headers=adm)
    at2 = r.json()["access_token"]
    r = request(s.port, "POST", "/admin/v1/access-token/refresh", headers=adm)
    at3 = r.json()["access_token"]
    r = request(s.port, "POST", "/admin/v1/access-token/invalidate",
                body=json.dumps({"access_token": at3}),
                headers={**adm, "Content-Type": "application/json"})
    assert r.status == 200
    at4 = r.json()["access_token"]

    guesses = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(2)]
    assert request(s.port, "GET", "/admin/v1/access-token").status == 401
    for g in guesses:
        assert request(s.port, "GET", "/admin/v1/access-token",
                       headers={"Authorization": f"Bearer {g}"}).status in (401, 429)
    assert request(s.port, "GET", "/admin/v1/access-token", headers=adm).status == 429
    s.stop()

    log = s.log_text()
    if fmt == "text":
        assert "event=admin_refused" in log and "event=login" in log, log[-2000:]
        lines = [l for l in s.log_lines() if " audit " in l]
        assert len(lines) == 11, lines
        assert all(" info audit event=" in l and " client=127.0.0.1" in l for l in lines), lines
    else:
        logins = audits(s, "login")
        assert [(d["session"], d["route"], d["repeat"]) for d in logins] == [
            ("new", "/v1/login", False), ("reused", "/v1/login", True),
            ("none", "/openid", False)], logins
        assert [d["openid"] for d in logins] == [openid, openid, r3.json()["openid"]]
        [lo] = audits(s, "logout")
        assert lo["openid"] == openid and lo["app"] == E2E_APPID, lo
        refreshes = audits(s, "access_token_refresh")
        assert [d["force"] for d in refreshes] == [True, False], refreshes
        [inv] = audits(s, "access_token_invalidate")
        assert inv["app"] == E2E_APPID, inv
        refused = audits(s, "admin_refused")
        assert [d["reason"] for d in refused] == [
            "missing_token", "wrong_token", "wrong_token", "locked_out"], refused
        every = audits(s)
        assert len(every) == 11, every
        for d in every:
            assert d["level"] == "info" and d["client"] == "127.0.0.1", d
            assert d["request_id"], d
        for d in logins + [lo, inv] + refreshes:
            assert d["app"] == E2E_APPID, d

    secrets_ = [E2E_SECRET, ADMIN, tok, hashlib.sha256(tok.encode()).hexdigest(),
                r3.json().get("token") or "-none-", at1, at2, at3, at4]
    secrets_ += guesses
    secrets_ += [mock_session_key(m, E2E_APPID, openid),
                 mock_session_key(m, E2E_APPID, r3.json()["openid"])]
    for sec in secrets_:
        assert sec not in log, f"a secret reached the log: {sec[:6]}..."
