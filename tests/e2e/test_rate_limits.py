"""Rate limits and the WeChat quota guard (issue 11): token buckets per client address on
POST /openid, /v1/login and /v1/phone, per user on logins (counted once WeChat named the user),
per app on calls to WeChat; the client address from X-Forwarded-For only when the peer is in
`trusted_proxies`; shared by every instance on one Redis; GET /v1/session untouched unless
configured.

Over a limit the answer is `429 {"error":"rate_limited","action":"retry"}` with `Retry-After`,
and nothing reaches WeChat: the mock's counters prove it. Limits are written N/min so that no
token comes back while a test runs (one every 60/N s), except where a test waits for one.
"""

import http.client
import json
import time

import pytest

from conftest import DEFAULT_APPID, Counter, assert_error, new_code, request
from test_redis import MASTER_KEY, db, redis, redis_dir, redis_env  # noqa: F401 (fixtures)
from test_token import counts, delta, expected_phone

OFF = {"WXLOGIN_RATE_LIMIT_ADDRESS": "off", "WXLOGIN_RATE_LIMIT_OPENID": "off",
       "WXLOGIN_RATE_LIMIT_WECHAT": "off"}


def limits(**kw):
    """Every limit off but those given (rate_limit_<name>=value)."""
    env = dict(OFF)
    env.update({f"WXLOGIN_RATE_LIMIT_{k.upper()}": v for k, v in kw.items()})
    return env


def call(port, method, path, body=None, headers=None, source="127.0.0.1"):
    """One request from the given local source address (127.0.0.0/8 is all ours)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15,
                                      source_address=(source, 0))
    try:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def login(port, user, path="/v1/login", source="127.0.0.1", headers=None, code=None):
    return call(port, "POST", path, {"code": code or new_code(user)}, headers, source)


def assert_limited(resp, max_retry_after):
    status, headers, body = resp
    assert status == 429, resp
    assert headers.get("content-type", "").startswith("application/json"), resp
    d = json.loads(body)
    assert d["error"] == "rate_limited" and d["action"] == "retry", d
    assert isinstance(d["message"], str) and d["message"], d
    assert "wx_errcode" not in d, d  # this is us, not WeChat
    ra = headers.get("retry-after")
    assert ra is not None and ra.isdigit(), resp
    assert 1 <= int(ra) <= max_retry_after, resp
    return d


def ok(resp):
    assert resp[0] == 200, resp
    return json.loads(resp[2])


# --------------------------------------------------------------------------
# per client address
# --------------------------------------------------------------------------

def test_the_n_plus_first_login_from_one_address_is_refused_before_wechat(procs, mock):
    s = procs.serve(mock=mock, env=limits(address="5/min"))
    with Counter(mock) as c:
        for i in range(5):
            ok(login(s.port, f"addr{i}"))
        d = assert_limited(login(s.port, "addr5"), 12)  # one token every 12 s
        assert "address" in d["message"], d
        # every route of the limit draws from the same bucket, and none reaches WeChat
        assert_limited(login(s.port, "addr6", path="/openid"), 12)
        assert_limited(login(s.port, "addr7"), 12)
    c.assert_delta(5)


def test_another_address_has_its_own_bucket(procs, mock):
    s = procs.serve(mock=mock, env=limits(address="2/min"))
    for i in range(2):
        ok(login(s.port, f"one{i}"))
    assert_limited(login(s.port, "one2"), 30)
    with Counter(mock) as c:
        for i in range(2):
            ok(login(s.port, f"two{i}", source="127.0.0.2"))
        assert_limited(login(s.port, "two2", source="127.0.0.2"), 30)
    c.assert_delta(2)


def test_a_token_comes_back_after_retry_after(procs, mock):
    s = procs.serve(mock=mock, env=limits(address="2/2s"))  # a burst of 2, then one a second
    rs = []
    while len(rs) < 20 and (not rs or rs[-1][0] == 200):
        rs.append(login(s.port, f"back{len(rs)}"))
    assert [r[0] for r in rs[:2]] == [200, 200], rs
    assert_limited(rs[-1], 1)
    time.sleep(int(rs[-1][1]["retry-after"]) + 0.05)
    ok(login(s.port, "back-again"))


def test_phone_numbers_are_limited_per_address(procs, mock):
    s = procs.serve(mock=mock, env=limits(address="3/min"))
    token = ok(login(s.port, "ph"))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    before = counts(mock)
    for _ in range(2):
        r = call(s.port, "POST", "/v1/phone", {"code": new_code("ph")}, auth)
        assert ok(r)["phoneNumber"] == expected_phone("ph"), r
    assert_limited(call(s.port, "POST", "/v1/phone", {"code": new_code("ph")}, auth), 20)
    assert delta(mock, before)["phone"] == 2


def test_ipv6_clients_share_their_64(procs, mock):
    """A host holds a whole /64: its addresses are one client (seen through a trusted proxy)."""
    env = limits(address="2/min")
    env["WXLOGIN_TRUSTED_PROXIES"] = "127.0.0.1"
    s = procs.serve(mock=mock, env=env)
    ok(login(s.port, "v6a", headers={"X-Forwarded-For": "2001:db8:1:2::1"}))
    ok(login(s.port, "v6b", headers={"X-Forwarded-For": "2001:db8:1:2:ffff::9"}))
    assert_limited(login(s.port, "v6c", headers={"X-Forwarded-For": "2001:db8:1:2::3"}), 30)
    ok(login(s.port, "v6d", headers={"X-Forwarded-For": "2001:db8:1:3::1"}))  # the next /64


# --------------------------------------------------------------------------
# the client address behind proxies
# --------------------------------------------------------------------------

def test_trusted_proxy_forwards_the_client_address(procs, mock):
    env = limits(address="2/min")
    env["WXLOGIN_TRUSTED_PROXIES"] = "127.0.0.1/32, 10.0.0.0/8"
    s = procs.serve(mock=mock, env=env)
    xff = {"X-Forwarded-For": "203.0.113.9"}
    with Counter(mock) as c:
        ok(login(s.port, "tp0", headers=xff))
        ok(login(s.port, "tp1", headers=xff))
        assert_limited(login(s.port, "tp2", headers=xff), 30)
        # a chain: the rightmost address that is not a trusted proxy is the client
        assert_limited(login(s.port, "tp3", headers={"X-Forwarded-For": "198.51.100.1, "
                                                      "203.0.113.9, 10.1.2.3"}), 30)
    c.assert_delta(2)
    # another client behind the same proxy, and the proxy itself, are not limited with it
    ok(login(s.port, "tp4", headers={"X-Forwarded-For": "203.0.113.10"}))
    ok(login(s.port, "tp5"))
    # a header that proves nothing: the proxy is the client
    ok(login(s.port, "tp6", headers={"X-Forwarded-For": "203.0.113.9, unknown"}))
    assert_limited(login(s.port, "tp7", headers={"X-Forwarded-For": "garbage"}), 30)


def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(procs, mock):
    env = limits(address="2/min")
    env["WXLOGIN_TRUSTED_PROXIES"] = "127.0.0.1"
    env["WXLOGIN_THREADS"] = "1"
    s = procs.serve(mock=mock, env=env)
    # 127.0.0.2 is not a proxy of ours: whatever it claims, it is 127.0.0.2
    with Counter(mock) as c:
        for i in range(2):
            ok(login(s.port, f"sp{i}", source="127.0.0.2",
                     headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}))
        assert_limited(login(s.port, "sp2", source="127.0.0.2",
                             headers={"X-Forwarded-For": "198.51.100.3"}), 30)
    c.assert_delta(2)
    # and it spent nobody else's bucket: the address it named is still free through the proxy
    ok(login(s.port, "sp3", headers={"X-Forwarded-For": "198.51.100.1"}))
    ok(login(s.port, "sp4", headers={"X-Forwarded-For": "198.51.100.1"}))
    # the operator hears of the ignored header once (one worker here), not per request
    text = s.wait_log(lambda t: "X-Forwarded-For ignored" in t)
    lines = [json.loads(l) for l in text.splitlines()
             if l.startswith("{") and "X-Forwarded-For ignored" in l]
    assert len(lines) == 1 and lines[0]["peer"] == "127.0.0.2", lines


# --------------------------------------------------------------------------
# per user
# --------------------------------------------------------------------------

def test_the_users_limit_is_counted_after_the_exchange(procs, mock):
    s = procs.serve(mock=mock, env=limits(openid="2/min"))
    with Counter(mock) as c:
        ok(login(s.port, "olga"))
        ok(login(s.port, "olga", path="/openid"))
        code = new_code("olga")
        r = login(s.port, "olga", code=code)
        d = assert_limited(r, 30)
        assert "user" in d["message"], d
        assert b"token" not in r[2]
        # the code was exchanged (the openid is known only then), and made no session: a repeat
        # of it is a used code, not a second chance
        assert_error_tuple(login(s.port, "olga", code=code), 400, "code_used")
        ok(login(s.port, "otto"))  # another user
    c.assert_delta(4)


def assert_error_tuple(resp, status, error):
    assert resp[0] == status, resp
    assert json.loads(resp[2])["error"] == error, resp


# --------------------------------------------------------------------------
# per app: the ceiling on calls to WeChat
# --------------------------------------------------------------------------

def test_the_wechat_ceiling_refuses_before_wechat(procs, mock):
    s = procs.serve(mock=mock, env=limits(wechat="3/min"))
    first = new_code("wc0")
    with Counter(mock) as c:
        ok(login(s.port, "wc", code=first))
        ok(login(s.port, "wc1"))
        ok(login(s.port, "wc2"))
        for path in ("/v1/login", "/openid"):
            d = assert_limited(login(s.port, "wc3", path=path), 20)
            assert "WeChat" in d["message"], d
        # the same address from elsewhere changes nothing: the ceiling is the app's
        assert_limited(login(s.port, "wc4", source="127.0.0.3"), 20)
        # a repeat of an exchanged code needs no WeChat call, and takes nothing
        assert ok(login(s.port, "wc", code=first))["token"]
    c.assert_delta(3)


def test_the_wechat_ceiling_covers_phone_numbers(procs, mock):
    s = procs.serve(mock=mock, env=limits(wechat="2/min"))
    token = ok(login(s.port, "wp"))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    before = counts(mock)
    assert ok(call(s.port, "POST", "/v1/phone", {"code": new_code("wp")}, auth))
    assert_limited(call(s.port, "POST", "/v1/phone", {"code": new_code("wp")}, auth), 30)
    assert_limited(login(s.port, "wp2"), 30)
    d = delta(mock, before)
    assert d["phone"] == 1 and d["c2s"] == 0, d


def test_the_wechat_ceiling_is_per_app(procs, tmp_path):
    a, sa = "wxaaaa000000000011", "secretA0000000000000000000000011"
    b, sb = "wxbbbb000000000012", "secretB0000000000000000000000012"
    conf = tmp_path / "apps.conf"
    conf.write_text(f'[app "{a}"]\nsecret = {sa}\n[app "{b}"]\nsecret = {sb}\n')
    m = procs.mock(apps=[(a, sa), (b, sb)])
    s = procs.serve(mock=m, appid=None, secret=None, args=["--config", str(conf)],
                    env=limits(wechat="1/min"))
    ok(login(s.port, "pa", headers={"X-WX-AppID": a}))
    assert_limited(login(s.port, "pa", headers={"X-WX-AppID": a}), 60)
    ok(login(s.port, "pb", headers={"X-WX-AppID": b}, code=new_code("pb", app=b)))
    # naming no app among several is still that error, whatever the limits
    assert_error_tuple(login(s.port, "pn"), 400, "unknown_app")


# --------------------------------------------------------------------------
# several instances on one Redis
# --------------------------------------------------------------------------

def test_limits_are_shared_by_instances_on_redis(procs, mock, redis, db):
    e = redis_env(redis.url(db), **limits(address="4/min", wechat="6/min"))
    a, b = procs.serve(mock=mock, env=e), procs.serve(mock=mock, env=e)
    with Counter(mock) as c:
        ok(login(a.port, "sh0"))
        ok(login(b.port, "sh1"))
        ok(login(a.port, "sh2"))
        ok(login(b.port, "sh3"))
        assert_limited(login(a.port, "sh4"), 15)
        assert_limited(login(b.port, "sh5"), 15)
        # the app's ceiling too: 2 left of 6, whichever instance spends them
        ok(login(a.port, "sh6", source="127.0.0.2"))
        ok(login(b.port, "sh7", source="127.0.0.3"))
        d = assert_limited(login(a.port, "sh8", source="127.0.0.4"), 10)
        assert "WeChat" in d["message"], d
    c.assert_delta(6)
    # the buckets are the app's keys, named by a keyed hash: no address in Redis
    with redis.client(db) as r:
        keys = [k.decode() for k in r.cmd("KEYS", "*rl*")]
        blob = b"".join(r.cmd("DUMP", k) or b"" for k in keys)
    assert keys and all(k.startswith(f"wxlogin:{DEFAULT_APPID}:rl:") for k in keys), keys
    assert not any("127.0.0" in k for k in keys) and b"127.0.0" not in blob, keys


def test_users_limit_is_shared_by_instances_on_redis(procs, mock, redis, db):
    e = redis_env(redis.url(db), **limits(openid="2/min"))
    a, b = procs.serve(mock=mock, env=e), procs.serve(mock=mock, env=e)
    ok(login(a.port, "rita"))
    ok(login(b.port, "rita"))
    assert_limited(login(a.port, "rita"), 30)
    assert_limited(login(b.port, "rita"), 30)
    ok(login(b.port, "rolf"))


# --------------------------------------------------------------------------
# GET /v1/session
# --------------------------------------------------------------------------

def test_session_checks_are_not_limited_by_default(procs, mock):
    s = procs.serve(mock=mock, env=limits(address="1/min"))
    token = ok(login(s.port, "sess"))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(200):
        r = request(s.port, "GET", "/v1/session", headers=auth)
        assert r.status == 200, r
    # while the same address is limited where it is meant to be
    assert_limited(login(s.port, "sess2"), 60)


def test_session_checks_limited_when_configured(procs, mock):
    s = procs.serve(mock=mock, env=limits(session="3/min"))
    token = ok(login(s.port, "sesl"))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(3):
        assert call(s.port, "GET", "/v1/session", headers=auth)[0] == 200
    assert_limited(call(s.port, "GET", "/v1/session", headers=auth), 20)
    assert call(s.port, "GET", "/v1/session", headers=auth, source="127.0.0.2")[0] == 200


# --------------------------------------------------------------------------
# the defaults
# --------------------------------------------------------------------------

def test_defaults_are_on(procs, mock):
    """Without any rate_limit_* setting: 120 logins a minute from one address (a burst of
    120), 30 a minute per user, 5000 WeChat calls a minute per app."""
    s = procs.serve(mock=mock, env={"WXLOGIN_THREADS": "2"})

    def until_refused(send, most):
        t0, out = time.monotonic(), []
        while len(out) < most and 429 not in out:
            out.append(send(len(out))[0])
        return out, time.monotonic() - t0

    with Counter(mock) as c:
        st, took = until_refused(lambda i: login(s.port, f"df{i}", path="/openid"), 400)
        assert st[:120] == [200] * 120 and st[-1] == 429, st
        # the burst, and a token every 0.5 s while they were sent
        assert st.count(200) <= 120 + took / 0.5 + 1, (st.count(200), took)
        assert c.delta() == st.count(200)
    # per user: 30, then one every 2 s (from another address, whose bucket is full)
    st, took = until_refused(lambda i: login(s.port, "dfuser", source="127.0.0.2"), 100)
    assert st[:30] == [200] * 30 and st[-1] == 429, st
    assert st.count(200) <= 30 + took / 2 + 1, (st.count(200), took)
