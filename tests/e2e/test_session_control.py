"""Sessions you control (issue 11): renewal, revocation, bans, erasure.

Every behaviour runs on both stores: SQLite (one process, with its in-process session cache,
which must see every revocation at once) and Redis (two instances on one database: what one
instance revokes, the other sees on the next request).
"""

import json
import time

import pytest

from conftest import (DEFAULT_APPID, assert_error, in_parallel, new_code, post_json,
                      request, run_cli, wait_until)
from test_redis import db, keys, redis, redis_dir, redis_env  # noqa: F401 (fixtures)

ADMIN = "k7Qx2mP9vR4tY8wZ3nB6cF1hJ5dL0sGaE"
NO_LIMITS = {"WXLOGIN_RATE_LIMIT_ADDRESS": "off", "WXLOGIN_RATE_LIMIT_OPENID": "off"}


class Pair:
    """Where requests go: a and b are the same process on SQLite, two instances on Redis."""

    def __init__(self, a, b, kind, path=None, redis_url=None):
        self.a, self.b, self.kind, self.path, self.redis_url = a, b, kind, path, redis_url


def start_pair(kind, procs, mock, tmp_path, redis=None, db=None, **env):
    e = {"WXLOGIN_ADMIN_TOKEN": ADMIN, **NO_LIMITS, **{k: str(v) for k, v in env.items()}}
    if kind == "sqlite":
        a = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db", **e})
        return Pair(a, a, kind, path=tmp_path / "wx.db")
    url = redis.url(db)
    a = procs.serve(mock=mock, env=redis_env(url, **e))
    b = procs.serve(mock=mock, env=redis_env(url, **e))
    return Pair(a, b, kind, redis_url=url)


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request):
    return request.param


@pytest.fixture
def make(store_kind, procs, mock, tmp_path, request):
    """make(**env) → Pair on the parametrized store."""
    def mk(**env):
        if store_kind == "redis":
            r = request.getfixturevalue("redis")
            d = request.getfixturevalue("db")
            return start_pair("redis", procs, mock, tmp_path, redis=r, db=d, **env)
        return start_pair("sqlite", procs, mock, tmp_path, **env)
    return mk


def bearer(token, **more):
    return {"Authorization": f"Bearer {token}", **more}


def admin_headers():
    return {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}


def login(port, user, headers=None):
    r = post_json(port, "/v1/login", {"code": new_code(user)}, headers=headers)
    assert r.status == 200, r
    return r.json()


def session(port, token):
    return request(port, "GET", "/v1/session", headers=bearer(token))


def refresh(port, token):
    return request(port, "POST", "/v1/refresh", headers=bearer(token))


def assert_dead(port, token):
    assert_error(session(port, token), 401, "invalid_token", "relogin")


def admin(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    return request(port, method, f"/admin/v1/apps/{DEFAULT_APPID}{path}", body=data,
                   headers=admin_headers())


# --------------------------------------------------------------------------
# renewal
# --------------------------------------------------------------------------

def test_refresh_gives_a_new_token_and_the_old_one_dies_after_its_grace(make):
    p = make(WXLOGIN_REFRESH_GRACE=2)
    u = login(p.a.port, "urefresh")
    assert session(p.a.port, u["token"]).status == 200  # cached on SQLite
    r = refresh(p.a.port, u["token"])
    assert r.status == 200, r
    n = r.json()
    assert n["token"] != u["token"] and n["token"].startswith("wxl_")
    assert n["openid"] == u["openid"] and 0 < n["expires_in"] <= 604800
    # both work during the grace, on either instance
    assert session(p.b.port, u["token"]).status == 200
    assert session(p.b.port, n["token"]).status == 200
    # the old one, refreshed again within its grace, answers the same successor
    again = refresh(p.b.port, u["token"])
    assert again.status == 200 and again.json()["token"] == n["token"], again
    assert wait_until(lambda: session(p.a.port, u["token"]).status == 401, timeout=6.0)
    assert_dead(p.b.port, u["token"])
    # past its grace the old token cannot be refreshed either
    assert_error(refresh(p.a.port, u["token"]), 401, "invalid_token", "relogin")
    assert session(p.b.port, n["token"]).status == 200


def test_concurrent_refreshes_of_one_token_yield_one_chain(make):
    p = make()
    u = login(p.a.port, "uconc")
    ports = [p.a.port, p.b.port] * 10
    rs = in_parallel([lambda port=port: refresh(port, u["token"]) for port in ports])
    assert all(r.status == 200 for r in rs), rs
    tokens = {r.json()["token"] for r in rs}
    assert len(tokens) == 1, tokens
    info = admin(p.a.port, "GET", f"/users/{u['openid']}").json()
    assert len(info["sessions"]) == 1, info
    assert "refreshed" in info["sessions"][0]


def test_a_chain_cannot_outlive_session_max_age(make):
    p = make(WXLOGIN_SESSION_MAX_AGE=3)
    u = login(p.a.port, "umaxage")
    assert u["expires_in"] <= 3
    r = refresh(p.a.port, u["token"])
    assert r.status == 200 and r.json()["expires_in"] <= 3, r
    t = r.json()["token"]
    assert wait_until(lambda: refresh(p.b.port, t).status == 401, timeout=8.0)
    assert_error(refresh(p.a.port, t), 401, "invalid_token", "relogin")
    assert_dead(p.a.port, t)


def test_refresh_refuses_bad_tokens_and_bodies(make):
    p = make()
    assert_error(request(p.a.port, "POST", "/v1/refresh"), 401, "invalid_token", "relogin")
    assert_error(refresh(p.a.port, "wxl_" + "A" * 43), 401, "invalid_token", "relogin")
    u = login(p.a.port, "ubody")
    bad = request(p.a.port, "POST", "/v1/refresh", body=b"[1]",
                  headers=bearer(u["token"], **{"Content-Type": "application/json"}))
    assert_error(bad, 400, "bad_request", "none")
    assert session(p.a.port, u["token"]).status == 200  # nothing changed


def test_refresh_is_rate_limited_per_address(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db",
                                      "WXLOGIN_RATE_LIMIT_ADDRESS": "3/min"})
    u = login(srv.port, "ulimit")
    token = u["token"]
    statuses = []
    for _ in range(2):
        r = refresh(srv.port, token)
        token = r.json()["token"] if r.status == 200 else token
        statuses.append(r.status)
    assert statuses == [200, 200], statuses  # the login took the first of 3
    r = refresh(srv.port, token)
    assert_error(r, 429, "rate_limited", "retry")
    assert int(r.headers["retry-after"]) >= 1


# --------------------------------------------------------------------------
# revocation
# --------------------------------------------------------------------------

def test_logout_all_ends_every_session_of_the_user(make):
    p = make()
    tokens = [login(p.a.port, "uall")["token"] for _ in range(3)]
    other = login(p.a.port, "uother")["token"]
    for t in tokens:
        assert session(p.a.port, t).status == 200  # now cached (SQLite)
    r = post_json(p.b.port, "/v1/logout", {"all": True}, headers=bearer(tokens[0]))
    assert r.status == 204, r
    for t in tokens:
        assert_dead(p.a.port, t)
        assert_dead(p.b.port, t)
    assert session(p.a.port, other).status == 200


def test_logout_ends_the_whole_chain(make):
    p = make()
    u = login(p.a.port, "uchain")
    n = refresh(p.a.port, u["token"]).json()["token"]
    assert session(p.a.port, u["token"]).status == 200  # still in its grace
    assert request(p.b.port, "POST", "/v1/logout", headers=bearer(n)).status == 204
    assert_dead(p.a.port, u["token"])
    assert_dead(p.a.port, n)


def test_logout_refuses_a_bad_body(make):
    p = make()
    t = login(p.a.port, "ulogoutbody")["token"]
    for body in (b"[]", b'{"all": "yes"}', b"nope"):
        r = request(p.a.port, "POST", "/v1/logout", body=body,
                    headers=bearer(t, **{"Content-Type": "application/json"}))
        assert_error(r, 400, "bad_request", "none")
    assert session(p.a.port, t).status == 200


def test_admin_lists_a_users_sessions_and_ends_one(make):
    p = make()
    ua = {"User-Agent": "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50"}
    t1 = login(p.a.port, "ulist", headers=ua)
    t2 = login(p.b.port, "ulist")
    assert t1["openid"] == t2["openid"]
    assert session(p.a.port, t1["token"]).status == 200
    r = admin(p.a.port, "GET", f"/users/{t1['openid']}")
    assert r.status == 200, r
    info = r.json()
    assert info["openid"] == t1["openid"] and info["banned"] is False
    assert info["first_login"] <= info["last_login"] <= time.time() + 1
    assert len(info["sessions"]) == 2, info
    ids = [s["id"] for s in info["sessions"]]
    assert all(i.startswith("s_") and len(i) == 24 for i in ids), ids
    assert len(set(ids)) == 2
    for s in info["sessions"]:
        assert s["client"] == "127.0.0.1"
        assert s["created"] <= time.time() + 1 < s["expires"]
    assert ua["User-Agent"] in [s["user_agent"] for s in info["sessions"]]
    body = r.body.decode()
    assert t1["token"] not in body and t2["token"] not in body
    # end the first session (the one with the User-Agent): the other lives on
    sid = next(s["id"] for s in info["sessions"] if s["user_agent"] == ua["User-Agent"])
    assert admin(p.b.port, "DELETE", f"/sessions/{sid}").status == 204
    assert_dead(p.a.port, t1["token"])
    assert session(p.a.port, t2["token"]).status == 200
    assert_error(admin(p.a.port, "DELETE", f"/sessions/{sid}"), 404, "unknown_session", "none")
    assert_error(admin(p.a.port, "DELETE", "/sessions/s_nope"), 400, "bad_request", "none")
    # log out everywhere
    r = admin(p.a.port, "POST", f"/users/{t1['openid']}/logout")
    assert r.status == 200 and r.json() == {"revoked": 1}, r
    assert_dead(p.b.port, t2["token"])
    assert admin(p.a.port, "GET", f"/users/{t1['openid']}").json()["sessions"] == []


def test_admin_user_routes_need_the_admin_token(make):
    p = make(WXLOGIN_ADMIN_MAX_FAILURES=100)  # every wrong attempt is a 401, none a lockout
    u = login(p.a.port, "uguard")
    paths = [("GET", f"/users/{u['openid']}"), ("DELETE", f"/users/{u['openid']}"),
             ("POST", f"/users/{u['openid']}/logout"), ("POST", f"/users/{u['openid']}/ban"),
             ("DELETE", f"/users/{u['openid']}/ban"), ("DELETE", "/sessions/s_AAAAAAAAAAAAAAAAAAAAAA")]
    for method, path in paths:
        for h in ({}, {"Authorization": "Bearer wrong-token-of-some-length-000000"}):
            r = request(p.a.port, method, f"/admin/v1/apps/{DEFAULT_APPID}{path}", headers=h,
                        body=b'{"reason":"x"}' if method == "POST" else None)
            assert_error(r, 401, "unauthorized", "none")
    assert session(p.a.port, u["token"]).status == 200
    r = request(p.a.port, "GET", f"/admin/v1/apps/wxnotourappid000000/users/{u['openid']}",
                headers=admin_headers())
    assert_error(r, 404, "unknown_app", "none")
    assert_error(admin(p.a.port, "GET", "/users/bad!openid"), 400, "bad_request", "none")
    assert_error(admin(p.a.port, "GET", "/users/onobodyatall"), 404, "unknown_user", "none")


def test_admin_user_routes_absent_without_an_admin_token(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"})
    r = request(srv.port, "GET", f"/admin/v1/apps/{DEFAULT_APPID}/users/oabc",
                headers=admin_headers())
    assert_error(r, 404, "not_found", "none")


# --------------------------------------------------------------------------
# bans
# --------------------------------------------------------------------------

def test_ban_ends_sessions_and_refuses_logins_until_lifted(make, mock):
    p = make()
    u = login(p.a.port, "uban")
    assert session(p.a.port, u["token"]).status == 200
    r = admin(p.b.port, "POST", f"/users/{u['openid']}/ban", {"reason": "fraud"})
    assert r.status == 200, r
    assert r.json() == {"banned": True, "reason": "fraud", "revoked": 1}
    assert_dead(p.a.port, u["token"])
    assert_dead(p.b.port, u["token"])
    for port in (p.a.port, p.b.port):
        for path in ("/v1/login", "/openid"):
            r = post_json(port, path, {"code": new_code("uban")})
            assert_error(r, 403, "user_banned", "none")
    info = admin(p.a.port, "GET", f"/users/{u['openid']}").json()
    assert info["banned"] is True and info["ban"]["reason"] == "fraud", info
    assert "until" not in info["ban"]
    assert admin(p.a.port, "DELETE", f"/users/{u['openid']}/ban").status == 204
    assert login(p.b.port, "uban")["openid"] == u["openid"]
    assert admin(p.a.port, "DELETE", f"/users/{u['openid']}/ban").status == 204  # idempotent


def test_a_ban_until_lapses_by_itself(make):
    p = make()
    u = login(p.a.port, "uuntil")
    until = int(time.time()) + 3
    r = admin(p.a.port, "POST", f"/users/{u['openid']}/ban", {"reason": "cool off", "until": until})
    assert r.status == 200 and r.json()["until"] == until, r
    assert_error(post_json(p.b.port, "/v1/login", {"code": new_code("uuntil")}), 403,
                 "user_banned", "none")
    assert wait_until(lambda: post_json(p.b.port, "/v1/login",
                                        {"code": new_code("uuntil")}).status == 200, timeout=8.0)


def test_a_user_never_seen_can_be_banned(make):
    p = make()
    r = admin(p.a.port, "POST", "/users/ofutureuser/ban", {"reason": "known bad"})
    assert r.status == 200 and r.json()["revoked"] == 0, r
    info = admin(p.a.port, "GET", "/users/ofutureuser")
    assert info.status == 200 and info.json()["banned"] is True, info


def test_ban_refuses_bad_bodies_and_changes_nothing(make):
    p = make()
    u = login(p.a.port, "ubadban")
    for body in ({}, {"reason": ""}, {"reason": 5}, {"reason": "x" * 257},
                 {"reason": "x", "until": 1}, {"reason": "x", "until": "soon"}):
        r = admin(p.a.port, "POST", f"/users/{u['openid']}/ban", body)
        assert_error(r, 400, "bad_request", "none")
    assert session(p.a.port, u["token"]).status == 200
    assert admin(p.a.port, "GET", f"/users/{u['openid']}").json()["banned"] is False


# --------------------------------------------------------------------------
# erasure
# --------------------------------------------------------------------------

def test_erasure_leaves_no_trace_and_the_next_login_is_a_new_user(make, store_kind, request):
    p = make()
    u = login(p.a.port, "uerase")
    login(p.b.port, "uerase")
    admin(p.a.port, "POST", f"/users/{u['openid']}/ban", {"reason": "then erased"})
    assert admin(p.b.port, "DELETE", f"/users/{u['openid']}").status == 204
    assert_dead(p.a.port, u["token"])
    assert_error(admin(p.a.port, "GET", f"/users/{u['openid']}"), 404, "unknown_user", "none")
    assert_error(admin(p.b.port, "DELETE", f"/users/{u['openid']}"), 404, "unknown_user", "none")
    openid = u["openid"].encode()
    if store_kind == "redis":
        r = request.getfixturevalue("redis")
        d = request.getfixturevalue("db")
        with r.client(d) as c:
            names = [k.decode() if isinstance(k, bytes) else k for k in keys(c)]
            assert names, "the store holds other keys (the second login's code outcome)"
            assert not [k for k in names if openid.decode() in k], names
            for k in names:  # nor in any value a key holds
                if c.cmd("TYPE", k) in (b"string", "string"):
                    v = c.cmd("GET", k)
                    assert openid not in (v if isinstance(v, bytes) else str(v).encode()), k
    else:
        assert p.a.stop() == 0
        for f in p.path.parent.glob("wx.db*"):
            assert openid not in f.read_bytes(), f
        p.a = p.b = None
        return
    # the next login starts a new user (first_login anew, not banned)
    time.sleep(1.1)
    again = login(p.a.port, "uerase")
    info = admin(p.a.port, "GET", f"/users/{again['openid']}").json()
    assert info["banned"] is False and len(info["sessions"]) == 1


# --------------------------------------------------------------------------
# retention
# --------------------------------------------------------------------------

def test_user_retention_must_cover_session_max_age(procs, tmp_path):
    r = run_cli(["serve", "--check"], env={"WXLOGIN_APPID": DEFAULT_APPID,
                                          "WXLOGIN_SECRET": "0123456789abcdef0123456789abcdef",
                                          "WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db",
                                          "WXLOGIN_SESSION_MAX_AGE": "100",
                                          "WXLOGIN_USER_RETENTION": "99"})
    assert r.returncode == 2 and "user_retention" in r.stderr, r


def test_redis_user_records_expire_after_user_retention(procs, mock, redis, db):
    p = start_pair("redis", procs, mock, None, redis=redis, db=db,
                   WXLOGIN_SESSION_MAX_AGE=50, WXLOGIN_USER_RETENTION=60)
    u = login(p.a.port, "uretain")
    with redis.client(db) as c:
        ttl = c.cmd("TTL", f"wxlogin:{DEFAULT_APPID}:u:{u['openid']}")
    assert 0 < int(ttl) <= 60, ttl


def test_every_revocation_is_an_audit_line(procs, mock, tmp_path):
    p = start_pair("sqlite", procs, mock, tmp_path)
    u = login(p.a.port, "uaudit")
    refreshed = refresh(p.a.port, u["token"]).json()["token"]
    sid = admin(p.a.port, "GET", f"/users/{u['openid']}").json()["sessions"][0]["id"]
    assert admin(p.a.port, "DELETE", f"/sessions/{sid}").status == 204
    t = login(p.a.port, "uaudit")["token"]
    assert post_json(p.a.port, "/v1/logout", {"all": True}, headers=bearer(t)).status == 204
    assert admin(p.a.port, "POST", f"/users/{u['openid']}/logout").status == 200
    assert admin(p.a.port, "POST", f"/users/{u['openid']}/ban", {"reason": "audit me"}).status == 200
    assert admin(p.a.port, "DELETE", f"/users/{u['openid']}/ban").status == 204
    assert admin(p.a.port, "DELETE", f"/users/{u['openid']}").status == 204

    def events():
        return [d for d in p.a.json_lines(lambda d: d.get("msg") == "audit")]
    want = ["refresh", "session_revoked", "user_logout_all", "user_logout_all", "user_banned",
            "user_unbanned", "user_erased"]
    assert wait_until(lambda: [e["event"] for e in events() if e["event"] in want] == want,
                      timeout=5.0), [e["event"] for e in events()]
    for e in events():
        assert e["client"] == "127.0.0.1" and e["app"] == DEFAULT_APPID, e
        assert u["token"] not in json.dumps(e) and refreshed not in json.dumps(e)
    banned = next(e for e in events() if e["event"] == "user_banned")
    assert banned["openid"] == u["openid"] and banned["reason"] == "audit me"
    assert next(e for e in events() if e["event"] == "session_revoked")["session_id"] == sid
