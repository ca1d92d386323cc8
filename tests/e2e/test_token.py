"""Phone numbers (POST /v1/phone), the central access token (single-flight fetch, recovery
from a rejected token, anti-storm backoff, stable vs classic API) and the admin routes
GET /admin/v1/access-token, POST /admin/v1/access-token/refresh (issue: Mini Program data)."""

import hashlib
import http.server
import json
import re
import threading
import time

import pytest

from conftest import (DEFAULT_APPID, DEFAULT_SECRET, assert_error, closed_port, free_port,
                      new_code, post_json, request)

ADMIN = "adm-Q7vX2pL9kR4tZ8wN3mB6cF1hJ5sD0gY"
WRONG_SECRET = "W7ongW7ongW7ongW7ongW7ongW7ong00"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def delayed_mock(group, delay_ms):
    """A mock whose token endpoints answer after delay_ms (so concurrent fetches overlap)."""
    return group.mock(args=["--token-delay-ms", str(delay_ms)])


def mock_at(group, port, secret):
    """A mock on a given port knowing the default appid with `secret` (so a test can swap the
    WeChat a running serve talks to)."""
    return group.mock(apps=[(DEFAULT_APPID, secret)], port=port)


def counts(mock):
    s = mock.stats()
    return {"stable": s["stable_token"]["requests"], "classic": s["token"]["requests"],
            "phone": s["getuserphonenumber"]["requests"],
            "check": s["checksession"]["requests"], "c2s": s["jscode2session"]["requests"]}


def delta(mock, before):
    now = counts(mock)
    return {k: now[k] - before[k] for k in now}


def invalidate(mock, stuck=False):
    path = f"/mock/token/invalidate?appid={DEFAULT_APPID}" + ("&stuck=1" if stuck else "")
    r = request(mock.port, "POST", path)
    assert r.status == 200, r


def login(port, user="pat"):
    r = post_json(port, "/v1/login", {"code": new_code(user)})
    assert r.status == 200, r
    return r.json()["token"]


def bearer(token):
    return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}


def phone(port, token, code):
    headers = bearer(token) if token is not None else {"Content-Type": "application/json"}
    body = code if isinstance(code, bytes) else json.dumps({"code": code})
    return post_json(port, "/v1/phone", body, headers=headers)


def session_check(port, token):
    return request(port, "GET", "/v1/session/check", headers={"Authorization": f"Bearer {token}"})


def expected_phone(user):
    """The mock's number for a user: 138 + 8 digits from SHA-256(user)."""
    md = hashlib.sha256(user.encode()).digest()
    return "138%08d" % (int.from_bytes(md[:4], "big") % 100000000)


def assert_phone(resp, user):
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) == {"phoneNumber", "purePhoneNumber", "countryCode"}, body
    assert body["phoneNumber"] == expected_phone(user), body
    assert body["purePhoneNumber"] == expected_phone(user), body
    assert body["countryCode"] == "86" and isinstance(body["countryCode"], str), body
    return body


def assert_busy(resp):
    """503 upstream_busy, action retry (wx_errcode allowed: e.g. the 40001 that caused it)."""
    assert resp.status == 503, resp
    body = resp.json()
    assert body.get("error") == "upstream_busy" and body.get("action") == "retry", resp
    assert isinstance(body.get("message"), str) and body["message"], resp
    assert set(body) <= {"error", "message", "action", "wx_errcode"}, resp


def admin_get(port, auth=ADMIN, raw_header=None):
    h = {}
    if raw_header is not None:
        h["Authorization"] = raw_header
    elif auth is not None:
        h["Authorization"] = f"Bearer {auth}"
    return request(port, "GET", "/admin/v1/access-token", headers=h)


def admin_refresh(port, auth=ADMIN, force=None, raw_header=None):
    h = {}
    if raw_header is not None:
        h["Authorization"] = raw_header
    elif auth is not None:
        h["Authorization"] = f"Bearer {auth}"
    path = "/admin/v1/access-token/refresh" + ("" if force is None else f"?force={force}")
    return request(port, "POST", path, headers=h)


def token_of(resp):
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) == {"access_token", "expires_in"}, body
    assert isinstance(body["access_token"], str) and body["access_token"], body
    assert type(body["expires_in"]) is int and 7000 < body["expires_in"] <= 7200, body
    return body["access_token"]


def assert_admin_refused(resp, leaked=()):
    assert resp.status == 401, resp
    body = resp.json()
    assert body.get("error") == "unauthorized" and isinstance(body.get("message"), str), resp
    for t in leaked:
        assert t.encode() not in resp.body, "a refused admin request got the access token"


def parallel(fns):
    """Runs the callables at once (a barrier releases them together); returns their results."""
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        out[i] = fns[i]()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    return out


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tmock(module_procs):
    """This module's own mock: token state (invalidation, force refresh) stays here."""
    return module_procs.mock()


@pytest.fixture(scope="module")
def tsrv(module_procs, tmock):
    """admin_max_failures at its maximum: test_admin_refused_without_the_admin_token sends 33
    wrong admin requests from 127.0.0.1 and checks each one's 401; the lockout that would follow
    the 5th by default is tested in test_admin_guard.py."""
    return module_procs.serve(mock=tmock, env={"WXLOGIN_ADMIN_TOKEN": ADMIN,
                                               "WXLOGIN_ADMIN_MAX_FAILURES": "100",
                                               "WXLOGIN_THREADS": "4"})


@pytest.fixture(scope="module")
def tok(tsrv):
    """A session token of user 'carol' on tsrv."""
    return login(tsrv.port, "carol")


# --------------------------------------------------------------------------
# POST /v1/phone
# --------------------------------------------------------------------------

def test_phone_success(tsrv, tmock, tok):
    before = counts(tmock)
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    assert delta(tmock, before)["phone"] == 1
    # the number belongs to the code's user, not to the session's
    assert_phone(phone(tsrv.port, tok, new_code("dave")), "dave")
    assert expected_phone("dave") != expected_phone("carol")


def test_phone_needs_a_session_token(tsrv, tmock):
    before = counts(tmock)
    for hdr in [None, "Bearer", "Bearer wxl_" + "A" * 43, f"Bearer {ADMIN}", "Basic YTpi"]:
        h = {"Content-Type": "application/json"}
        if hdr is not None:
            h["Authorization"] = hdr
        r = post_json(tsrv.port, "/v1/phone", {"code": new_code("carol")}, headers=h)
        assert_error(r, 401, "invalid_token", "relogin")
        assert r.headers.get("www-authenticate") == 'Bearer error="invalid_token"', r
    d = delta(tmock, before)
    assert d["phone"] == 0 and d["stable"] == 0, d


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b"{}", json.dumps({"code": 5}).encode(), json.dumps({"code": ""}).encode(),
    json.dumps({"code": "a b"}).encode(), json.dumps({"code": "x" * 513}).encode(),
    json.dumps({"code": None}).encode(),
], ids=["not-json", "array", "no-code", "number", "empty", "space", "too-long", "null"])
def test_phone_bad_request(tsrv, tmock, tok, body):
    before = counts(tmock)
    assert_error(phone(tsrv.port, tok, body), 400, "bad_request", "none")
    assert delta(tmock, before)["phone"] == 0


def test_phone_invalid_code(tsrv, tmock, tok):
    before = counts(tmock)
    r = phone(tsrv.port, tok, new_code("x", "err40029"))
    # action none: the user taps the button again; a new login does not help
    assert_error(r, 400, "invalid_code", "none", 40029)
    assert delta(tmock, before)["phone"] == 1, "40029 is final: not retried"


def test_phone_code_reused(tsrv, tok):
    code = new_code("erin")
    assert_phone(phone(tsrv.port, tok, code), "erin")
    assert_error(phone(tsrv.port, tok, code), 400, "invalid_code", "none", 40029)


def test_phone_wrong_watermark_is_502(tsrv, tok):
    r = phone(tsrv.port, tok, new_code("carol", "wrongapp"))
    assert r.status == 502, r
    body = r.json()
    assert body["error"] == "upstream_error", body
    assert "phoneNumber" not in body and expected_phone("carol").encode() not in r.body


def test_phone_rate_limited(tsrv, tok):
    r = phone(tsrv.port, tok, new_code("carol", "err45011"))
    assert_error(r, 429, "rate_limited", "retry", 45011)
    assert r.headers.get("retry-after") == "60", r


def test_phone_busy_is_retried(tsrv, tmock, tok):
    before = counts(tmock)
    assert_phone(phone(tsrv.port, tok, new_code("carol", "busy1")), "carol")
    assert delta(tmock, before)["phone"] == 2


def test_phone_other_errcode_is_502(tsrv, tok):
    r = phone(tsrv.port, tok, new_code("carol", "err40200"))
    assert r.status == 502, r
    body = r.json()
    assert body["error"] == "upstream_error" and body.get("wx_errcode") == 40200, body


class FakeWeChat:
    """A stand-in WeChat on a thread (standard library HTTP server) for the answers `wxlogin
    mock` never gives: it logs anyone in, hands out a token, and answers getuserphonenumber
    with whatever `phone_info` the test sets (the mock always sends countryCode 86 as a
    number; WeChat's documented type is the string "86")."""

    SESSION = {"openid": "oFakeWeChat0000000000000001", "session_key": "tiihtNczf5v6AKRyjwEUhQ=="}

    def __init__(self):
        self.phone_info = None
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, obj):
                b = json.dumps(obj, ensure_ascii=False).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)

            def do_GET(self):
                if self.path.startswith("/sns/jscode2session"):
                    self.answer(fake.SESSION)
                else:
                    self.answer({"errcode": 40001, "errmsg": "invalid credential"})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/cgi-bin/stable_token"):
                    self.answer({"access_token": "80_fake-token", "expires_in": 7200})
                elif self.path.startswith("/wxa/business/getuserphonenumber"):
                    self.answer({"errcode": 0, "errmsg": "ok", "phone_info": fake.phone_info})
                else:
                    self.answer({"errcode": 40001, "errmsg": "invalid credential"})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_wechat():
    f = FakeWeChat()
    yield f
    f.close()


def phone_info(cc, number="13800138000"):
    info = {"phoneNumber": number, "purePhoneNumber": number,
            "watermark": {"timestamp": 1637744274, "appid": DEFAULT_APPID}}
    if cc is not None:
        info["countryCode"] = cc
    return info


WEI = "\u5fae"  # 3 bytes of UTF-8


@pytest.mark.parametrize("cc,want", [("86", "86"), (86, "86"), (None, ""), (WEI * 5, WEI * 5)],
                         ids=["string", "number", "absent", "15-bytes-multibyte"])
def test_phone_country_code_as_wechat_sends_it(procs, fake_wechat, cc, want):
    s = procs.serve(wechat_base=fake_wechat.base)
    tok = login(s.port, "fake")
    fake_wechat.phone_info = phone_info(cc)
    r = phone(s.port, tok, new_code("fake"))
    assert r.status == 200, r
    body = r.json()
    assert body == {"phoneNumber": "13800138000", "purePhoneNumber": "13800138000",
                    "countryCode": want}, body


@pytest.mark.parametrize("info", [
    phone_info(WEI * 6),                       # 18 bytes: one character too many
    phone_info(WEI * 20),
    phone_info("8" * 14 + "\u00e9"),           # the 15-byte cut would fall inside the é
    phone_info("\u001b[31m"),                  # not text
    phone_info(-86),
    phone_info(10 ** 18),
    phone_info(86.0),
    phone_info("86", number=WEI * 22),         # 66 bytes
    phone_info("86", number="\u0001" * 63),    # 63 bytes, 6 each once escaped
    phone_info("86", number="1380013\u20288000"),
], ids=["cc-6x3-bytes", "cc-20x3-bytes", "cc-cut-inside-char", "cc-control", "cc-negative",
        "cc-huge", "cc-float", "number-66-bytes", "number-controls", "number-u2028"])
def test_phone_malformed_answer_is_502_never_500(procs, fake_wechat, info):
    """A string WeChat returns that does not fit or is not text is a malformed answer: 502
    upstream_error, as any other; never a 500, never cut, never dropped to ""."""
    s = procs.serve(wechat_base=fake_wechat.base, env={"WXLOGIN_LOG_FORMAT": "json"})
    tok = login(s.port, "fake")
    fake_wechat.phone_info = info
    r = phone(s.port, tok, new_code("fake"))
    assert_error(r, 502, "upstream_error", "relogin")
    assert b"phoneNumber" not in r.body
    text = s.wait_log(lambda t: "WeChat call failed" in t)
    [d] = [json.loads(l) for l in text.splitlines() if "WeChat call failed" in l]
    assert d["level"] == "warn" and d["api"] == "getuserphonenumber", d
    # the detail names the field, never its value
    bad_number = info["phoneNumber"] != "13800138000"
    field, value = ("phone number", info["phoneNumber"]) if bad_number else \
        ("countryCode", str(info["countryCode"]))
    assert field in d["detail"] and value not in json.dumps(d, ensure_ascii=False), d


# --------------------------------------------------------------------------
# the central access token
# --------------------------------------------------------------------------

def test_concurrent_phone_calls_fetch_one_token(procs):
    m = delayed_mock(procs, 300)
    s = procs.serve(mock=m, env={"WXLOGIN_THREADS": "4"})
    users = [f"con{i}" for i in range(5)]
    tokens = [login(s.port, u) for u in users]
    before = counts(m)
    t0 = time.monotonic()
    results = parallel([lambda t=t, u=u: phone(s.port, t, new_code(u))
                        for t, u in zip(tokens, users)])
    elapsed = time.monotonic() - t0
    for r, u in zip(results, users):
        assert_phone(r, u)
    assert elapsed >= 0.3, "the token answer was delayed; the calls must have waited for it"
    d = delta(m, before)
    assert d["stable"] == 1, f"expected one token fetch for 5 concurrent calls, mock saw {d}"
    assert d["classic"] == 0 and d["phone"] == 5, d
    # cached from now on
    assert_phone(phone(s.port, tokens[0], new_code(users[0])), users[0])
    assert delta(m, before)["stable"] == 1


def test_concurrent_mixed_routes_fetch_one_token(procs):
    m = delayed_mock(procs, 300)
    s = procs.serve(mock=m, env={"WXLOGIN_THREADS": "4", "WXLOGIN_ADMIN_TOKEN": ADMIN})
    t1, t2 = login(s.port, "mixa"), login(s.port, "mixb")
    before = counts(m)
    results = parallel([
        lambda: phone(s.port, t1, new_code("mixa")),
        lambda: session_check(s.port, t2),
        lambda: admin_get(s.port),
        lambda: admin_get(s.port),
        lambda: session_check(s.port, t1),
    ])
    assert_phone(results[0], "mixa")
    assert results[1].status == 200 and results[1].json() == {"valid": True}, results[1]
    a, b = token_of(results[2]), token_of(results[3])
    assert a == b
    assert results[4].status == 200 and results[4].json() == {"valid": True}, results[4]
    assert delta(m, before)["stable"] == 1


def test_invalidated_token_recovers_by_itself(tsrv, tmock, tok):
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")   # a token is cached
    invalidate(tmock)
    before = counts(tmock)
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    d = delta(tmock, before)
    assert d["stable"] == 1, d
    assert d["phone"] == 2, d   # rejected once (40001), then retried with the new token
    # the new token is cached
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    assert delta(tmock, before)["stable"] == 1


def test_invalidated_token_recovers_for_session_check(tsrv, tmock, tok):
    assert session_check(tsrv.port, tok).json() == {"valid": True}
    invalidate(tmock)
    before = counts(tmock)
    r = session_check(tsrv.port, tok)
    assert r.status == 200 and r.json() == {"valid": True}, r
    d = delta(tmock, before)
    assert d["stable"] == 1 and d["check"] == 2, d


def test_concurrent_rejections_drop_the_token_once(procs):
    """Five calls all holding the token WeChat just invalidated: only the token that failed is
    dropped (compare-and-swap), so one fetch serves all of them."""
    m = delayed_mock(procs, 300)
    s = procs.serve(mock=m, env={"WXLOGIN_THREADS": "4"})
    users = [f"cas{i}" for i in range(5)]
    tokens = [login(s.port, u) for u in users]
    assert_phone(phone(s.port, tokens[0], new_code(users[0])), users[0])
    invalidate(m)
    before = counts(m)
    results = parallel([lambda t=t, u=u: phone(s.port, t, new_code(u))
                        for t, u in zip(tokens, users)])
    for r, u in zip(results, users):
        assert_phone(r, u)
    d = delta(m, before)
    assert d["stable"] == 1, d


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
def test_token_rejection_errcodes_refetch_and_retry_once(procs, tmock, errcode):
    """40001, 40014 and 42001 from an API mean "this access token": drop it, fetch, retry once
    (the phone code's directive makes only the first attempt fail)."""
    s = procs.serve(mock=tmock)
    tok = login(s.port, "rej")
    assert_phone(phone(s.port, tok, new_code("rej")), "rej")       # a token is cached
    before = counts(tmock)
    assert_phone(phone(s.port, tok, new_code("rej", f"err{errcode}x1")), "rej")
    d = delta(tmock, before)
    assert d["stable"] == 1 and d["phone"] == 2, d


def test_other_errcode_does_not_drop_the_token(tsrv, tmock, tok):
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    before = counts(tmock)
    r = phone(tsrv.port, tok, new_code("carol", "err40013"))
    assert r.status == 500 and r.json()["error"] == "config_error", r
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    d = delta(tmock, before)
    assert d["stable"] == 0 and d["phone"] == 2, d


def test_stuck_invalid_token_is_503_without_fetch_storm(procs):
    m = procs.mock()
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN})
    tok = login(s.port, "stuck")
    assert_phone(phone(s.port, tok, new_code("stuck")), "stuck")
    old = token_of(admin_get(s.port))
    invalidate(m, stuck=True)     # WeChat rejects the token and keeps handing it back

    before = counts(m)
    assert_busy(phone(s.port, tok, new_code("stuck")))
    d = delta(m, before)
    assert d["stable"] == 1, f"one fetch after the rejection, then stop: {d}"
    assert d["phone"] <= 2, d

    # immediate further calls: no more fetches (at most one per 10 s while the same
    # rejected token comes back), and no calls with a token known to be bad
    before = counts(m)
    for _ in range(3):
        assert_busy(phone(s.port, tok, new_code("stuck")))
    r = session_check(s.port, tok)
    assert_busy(r)
    assert_busy(admin_get(s.port))
    time.sleep(0.2)
    d = delta(m, before)
    assert d["stable"] == 0 and d["classic"] == 0, f"fetch storm: {d}"
    assert d["phone"] == 0 and d["check"] == 0, f"calls with a rejected token: {d}"

    # WeChat recovers; an operator's refresh fetches right away and everything works again
    invalidate(m, stuck=False)
    new = token_of(admin_refresh(s.port))
    assert new != old
    assert_phone(phone(s.port, tok, new_code("stuck")), "stuck")


def test_stuck_token_fetched_again_after_the_backoff(procs):
    """While the rejected token keeps coming back, the service waits ~10 s before the next
    fetch; requests meanwhile are 503 without reaching WeChat; then it recovers by itself."""
    m = procs.mock()
    s = procs.serve(mock=m)
    tok = login(s.port, "backoff")
    assert_phone(phone(s.port, tok, new_code("backoff")), "backoff")
    invalidate(m, stuck=True)
    assert_busy(phone(s.port, tok, new_code("backoff")))
    t_rejected = time.monotonic()
    invalidate(m, stuck=False)    # WeChat would now hand out a new token, if asked
    before = counts(m)
    ok = None
    while time.monotonic() - t_rejected < 13:
        r = phone(s.port, tok, new_code("backoff"))
        if r.status == 200:
            ok = r
            break
        assert_busy(r)
        time.sleep(0.4)
    waited = time.monotonic() - t_rejected
    assert ok is not None, "no new fetch within 13 s of the rejection"
    assert_phone(ok, "backoff")
    assert waited >= 9.0, f"fetched again after {waited:.1f} s, before the 10 s backoff"
    d = delta(m, before)
    assert d["stable"] == 1 and d["phone"] == 1, d


def test_throttled_answer_is_not_a_stale_fetch_failure(procs):
    """A token fetch failed once (wrong credentials at a WeChat that was later fixed), then
    fetching works for a while. When WeChat later keeps handing back a rejected token, the
    throttled requests must answer 503 upstream_busy, not the old fetch failure."""
    port = free_port()
    bad = mock_at(procs, port, "f" * 32)          # WeChat refuses our secret
    s = procs.serve(wechat_base=f"http://127.0.0.1:{port}",
                    env={"WXLOGIN_ADMIN_TOKEN": ADMIN})
    assert_error(admin_get(s.port), 500, "config_error", "none", 40125)
    bad.stop()
    good = mock_at(procs, port, DEFAULT_SECRET)   # fixed
    time.sleep(1.1)                               # past the 1 s failed-fetch backoff
    token_of(admin_get(s.port))
    tok = login(s.port, "stale")
    assert_phone(phone(s.port, tok, new_code("stale")), "stale")

    invalidate(good, stuck=True)
    assert_busy(phone(s.port, tok, new_code("stale")))
    before = counts(good)
    for _ in range(2):
        assert_busy(phone(s.port, tok, new_code("stale")))
    assert_busy(admin_get(s.port))
    d = delta(good, before)
    assert d["stable"] == 0 and d["phone"] == 0, d


def test_freshly_fetched_token_rejected_is_503(procs):
    """The very first token a serve fetches is already rejected (stuck at WeChat): it retries
    once, then gives up with 503 instead of looping."""
    m = procs.mock()
    first = procs.serve(mock=m)                      # makes the mock issue a stable token
    t = login(first.port, "fresh")
    assert_phone(phone(first.port, t, new_code("fresh")), "fresh")
    invalidate(m, stuck=True)
    s = procs.serve(mock=m)
    tok = login(s.port, "fresh")
    before = counts(m)
    assert_busy(phone(s.port, tok, new_code("fresh")))
    d = delta(m, before)
    assert 1 <= d["stable"] <= 2 and d["phone"] <= 2, d
    before = counts(m)
    assert_busy(phone(s.port, tok, new_code("fresh")))
    d = delta(m, before)
    assert d["stable"] == 0 and d["phone"] == 0, d


def test_classic_api_when_configured(procs):
    m = procs.mock()
    s = procs.serve(mock=m, env={"WXLOGIN_ACCESS_TOKEN_API": "classic",
                                 "WXLOGIN_ADMIN_TOKEN": ADMIN})
    tok = login(s.port, "classy")
    before = counts(m)
    assert_phone(phone(s.port, tok, new_code("classy")), "classy")
    assert session_check(s.port, tok).json() == {"valid": True}
    token_of(admin_get(s.port))
    d = delta(m, before)
    assert d["classic"] == 1 and d["stable"] == 0, d
    # recovery works the same way with the classic endpoint
    invalidate(m)
    before = counts(m)
    assert_phone(phone(s.port, tok, new_code("classy")), "classy")
    d = delta(m, before)
    assert d["classic"] == 1 and d["stable"] == 0 and d["phone"] == 2, d


def test_stable_api_is_the_default(tsrv, tmock, tok):
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    assert counts(tmock)["classic"] == 0
    assert counts(tmock)["stable"] >= 1


def _shared_store_serves(procs, mock, tmp_path, **env):
    """Logs in on a serve with the right secret, then starts another serve on the same store
    with env (e.g. a wrong secret): its session token is valid there."""
    store = {"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"}
    a = procs.serve(mock=mock, env=store)
    tok = login(a.port, "cfg")
    assert a.stop() == 0
    wechat_base = env.pop("wechat_base", None)
    secret = env.pop("secret", None)
    kw = {}
    if wechat_base is not None:
        kw["wechat_base"] = wechat_base
    if secret is not None:
        kw["secret"] = secret
    b = procs.serve(mock=mock, env={**store, "WXLOGIN_ADMIN_TOKEN": ADMIN, **env}, **kw)
    assert request(b.port, "GET", "/v1/session",
                   headers={"Authorization": f"Bearer {tok}"}).status == 200
    return b, tok


def test_token_endpoint_config_error(procs, tmp_path):
    m = procs.mock()
    s, tok = _shared_store_serves(procs, m, tmp_path, secret=WRONG_SECRET)
    assert_error(phone(s.port, tok, new_code("cfg")), 500, "config_error", "none", 40125)
    assert_error(session_check(s.port, tok), 500, "config_error", "none", 40125)
    assert_error(admin_get(s.port), 500, "config_error", "none", 40125)
    assert counts(m)["phone"] == 0 and counts(m)["check"] == 0
    log = s.wait_log(lambda t: "40125" in t)
    assert WRONG_SECRET not in log, "the secret must never be logged"


def test_token_endpoint_unreachable_is_503(procs, tmp_path):
    m = procs.mock()
    s, tok = _shared_store_serves(procs, m, tmp_path,
                                  wechat_base=f"http://127.0.0.1:{closed_port()}",
                                  WXLOGIN_UPSTREAM_RETRIES="0")
    assert_error(phone(s.port, tok, new_code("cfg")), 503, "upstream_busy", "retry")
    assert_error(session_check(s.port, tok), 503, "upstream_busy", "retry")
    assert_error(admin_get(s.port), 503, "upstream_busy", "retry")


# --------------------------------------------------------------------------
# admin routes
# --------------------------------------------------------------------------

def test_admin_get_access_token(tsrv, tmock):
    first = token_of(admin_get(tsrv.port))
    before = counts(tmock)
    assert token_of(admin_get(tsrv.port)) == first
    assert delta(tmock, before)["stable"] == 0, "served from the cache"


def test_admin_refused_without_the_admin_token(tsrv, tmock, tok):
    good = token_of(admin_get(tsrv.port))
    before = counts(tmock)
    for hdr in [None, "", "Bearer", "Bearer ", f"Bearer {ADMIN}x", f"Bearer {ADMIN[:-1]}",
                f"Bearer {ADMIN.upper()}", f"Basic {ADMIN}", ADMIN, f"Bearer {tok}",
                f"Bearer {good}"]:
        for fn in (admin_get, admin_refresh):
            if hdr is None:
                r = fn(tsrv.port, auth=None)
            else:
                r = fn(tsrv.port, raw_header=hdr)
            assert_admin_refused(r, leaked=[good])
        assert_admin_refused(admin_refresh(tsrv.port, force="true", raw_header=hdr or "x"),
                             leaked=[good])
    assert delta(tmock, before)["stable"] == 0, "a refused refresh must not fetch"
    assert token_of(admin_get(tsrv.port)) == good, "a refused refresh must not drop the token"


def test_admin_token_is_not_a_session_token(tsrv):
    for path in ("/v1/session", "/v1/session/check"):
        r = request(tsrv.port, "GET", path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert_error(r, 401, "invalid_token", "relogin")


def test_admin_refresh_keeps_then_force_replaces(tsrv, tmock, tok):
    t0 = token_of(admin_get(tsrv.port))
    before = counts(tmock)
    t1 = token_of(admin_refresh(tsrv.port))
    assert delta(tmock, before)["stable"] == 1, "refresh fetches again"
    assert t1 == t0, "without force, WeChat's stable token is still the same"
    assert token_of(admin_get(tsrv.port)) == t0
    assert delta(tmock, before)["stable"] == 1

    before = counts(tmock)
    t2 = token_of(admin_refresh(tsrv.port, force="true"))
    assert delta(tmock, before)["stable"] == 1
    assert t2 != t0, "force=true must ask WeChat for a new token (force_refresh)"
    assert token_of(admin_get(tsrv.port)) == t2
    # the service uses the new one (the mock accepts only its current stable token)
    before = counts(tmock)
    assert_phone(phone(tsrv.port, tok, new_code("carol")), "carol")
    d = delta(tmock, before)
    assert d["stable"] == 0 and d["phone"] == 1, d


def admin_invalidate(port, body, auth=ADMIN):
    h = {"Content-Type": "application/json"}
    if auth is not None:
        h["Authorization"] = f"Bearer {auth}"
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return request(port, "POST", "/admin/v1/access-token/invalidate", body=data, headers=h)


def test_admin_invalidate_is_compare_and_drop_with_one_fetch(procs):
    """20 services that saw the central token rejected report it at once: one fetch, every one
    of them gets the same new token; a late report of the old token fetches nothing."""
    m = delayed_mock(procs, 200)
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_THREADS": "2"})
    old = token_of(admin_get(s.port))
    invalidate(m)  # WeChat stops accepting it
    before = counts(m)
    got = parallel([lambda: admin_invalidate(s.port, {"access_token": old})] * 20)
    new = {token_of(r) for r in got}
    assert len(new) == 1 and old not in new, new
    assert delta(m, before)["stable"] == 1, delta(m, before)
    before = counts(m)
    assert token_of(admin_invalidate(s.port, {"access_token": old})) in new
    assert token_of(admin_invalidate(s.port, {"access_token": "not-the-token"})) in new
    assert delta(m, before)["stable"] == 0
    assert old not in s.log_text() and next(iter(new)) not in s.log_text()


def test_admin_invalidate_refuses_bad_requests(tsrv):
    assert_admin_refused(admin_invalidate(tsrv.port, {"access_token": "x"}, auth=None))
    for body in (b"nope", {"token": "x"}, {"access_token": 7}, {"access_token": ""},
                 {"access_token": "x" * 513}):
        r = admin_invalidate(tsrv.port, body)
        assert r.status == 400 and r.json()["error"] == "bad_request", (body, r)


def test_admin_force_refresh_during_a_fetch_still_forces(procs):
    """refresh?force=true while another fetch is on its way (here a plain refresh) must still
    end with a new token from WeChat (force_refresh), not with the one being fetched: it is
    what an operator does when the token leaked."""
    m = delayed_mock(procs, 400)
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_THREADS": "2"})
    t0 = token_of(admin_get(s.port))
    before = counts(m)
    plain = {}
    th = threading.Thread(target=lambda: plain.setdefault("r", admin_refresh(s.port)))
    th.start()
    time.sleep(0.1)                         # the plain refresh's fetch is under way
    forced = token_of(admin_refresh(s.port, force="true"))
    th.join(timeout=10)
    assert token_of(plain["r"]) in (t0, forced)
    assert forced != t0, "force=true answered the token that was to be replaced"
    assert token_of(admin_get(s.port)) == forced
    d = delta(m, before)
    assert d["stable"] == 2, d


def test_admin_routes_404_when_not_configured(procs, tmock):
    s = procs.serve(mock=tmock)
    before = counts(tmock)
    for hdr in [None, f"Bearer {ADMIN}", "Bearer x"]:
        for r in (admin_get(s.port, raw_header=hdr) if hdr else admin_get(s.port, auth=None),
                  admin_refresh(s.port, raw_header=hdr) if hdr else admin_refresh(s.port,
                                                                                  auth=None),
                  admin_refresh(s.port, force="true", raw_header=hdr or "Bearer y")):
            assert_error(r, 404, "not_found", "none")
    assert delta(tmock, before)["stable"] == 0


def test_admin_token_file(procs, tmock, tmp_path):
    f = tmp_path / "admin.token"
    f.write_text(ADMIN + "\n")
    f.chmod(0o600)
    s = procs.serve(mock=tmock, env={"WXLOGIN_ADMIN_TOKEN_FILE": str(f)})
    token_of(admin_get(s.port))          # the file's trailing newline is not part of it
    assert_admin_refused(admin_get(s.port, auth="x"))
    assert_admin_refused(admin_get(s.port, auth=None))


def test_admin_token_never_logged(procs):
    m = procs.mock()
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_LOG_LEVEL": "debug"})
    tok = login(s.port, "logger")
    token_of(admin_get(s.port))
    assert_admin_refused(admin_get(s.port, auth=ADMIN + "x"))
    assert_admin_refused(admin_refresh(s.port, auth=ADMIN[:-1]))
    token_of(admin_refresh(s.port))
    token_of(admin_refresh(s.port, force="true"))
    assert_phone(phone(s.port, tok, new_code("logger")), "logger")
    invalidate(m, stuck=True)
    assert_busy(phone(s.port, tok, new_code("logger")))
    assert s.stop() == 0
    log = s.log_text()
    assert "/admin/v1/access-token" in log, "the admin requests should be in the access log"
    for secret in (ADMIN, ADMIN + "x", ADMIN[:-1], ADMIN[4:20]):
        assert secret not in log, f"admin token (or a near miss) in the log: {secret!r}"


def test_access_token_never_logged(procs):
    m = procs.mock()
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_LOG_LEVEL": "debug"})
    tok = login(s.port, "logger")
    seen = {token_of(admin_get(s.port))}
    assert_phone(phone(s.port, tok, new_code("logger")), "logger")
    assert_error(phone(s.port, tok, new_code("logger", "err45011")), 429, "rate_limited",
                 "retry", 45011)
    assert session_check(s.port, tok).json() == {"valid": True}
    invalidate(m)
    assert_phone(phone(s.port, tok, new_code("logger")), "logger")
    seen.add(token_of(admin_get(s.port)))
    assert len(seen) == 2
    assert s.stop() == 0
    log = s.log_text()
    for t in seen:
        # a real token's shape and length (the mock's tokens were 53 characters once)
        assert re.fullmatch(r"[0-9]{2}_[A-Za-z0-9_-]{127,157}", t), t
        assert t not in log, "the access token is a credential for the whole app: never log it"


def test_passing_rejection_does_not_start_the_backoff(procs):
    """A token rejected once (42001 for one call) that works on the retry proved good: a real
    invalidation right after must recover at once, not wait out the 10 s same-token backoff."""
    m = procs.mock()
    s = procs.serve(mock=m)
    tok = login(s.port, "passing")
    assert_phone(phone(s.port, tok, new_code("passing")), "passing")
    assert_phone(phone(s.port, tok, new_code("passing", "err42001x1")), "passing")
    invalidate(m, stuck=False)
    before = counts(m)
    assert_phone(phone(s.port, tok, new_code("passing")), "passing")
    assert delta(m, before)["stable"] == 1


def test_admin_routes_invisible_when_not_configured(procs):
    """Without an admin token the admin routes do not exist: 404 for every method, never a
    405 that would reveal them."""
    m = procs.mock()
    s = procs.serve(mock=m)
    for method, path in [("GET", "/admin/v1/access-token"), ("POST", "/admin/v1/access-token"),
                         ("GET", "/admin/v1/access-token/refresh"),
                         ("POST", "/admin/v1/access-token/refresh")]:
        r = request(s.port, method, path)
        assert r.status == 404, (method, path, r)
