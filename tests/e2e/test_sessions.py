"""Sessions: POST /v1/login, GET /v1/session, POST /v1/logout, /readyz, the SQLite store and the
idempotent, single-flight code exchange (issue: sessions).

The tests on `store_srv` run once per store (sqlite, redis: conftest's `store` fixture); the
rest are about the SQLite store (test_redis.py has Redis's own)."""

import base64
import hashlib
import http.client
import json
import os
import signal
import sqlite3
import stat
import threading
import time

import pytest

from conftest import (DEFAULT_APPID as APPID, Counter, assert_error, new_code, post_json,
                      request, wait_until)


def mock_session_key(mock, openid):
    """The mock's debug route (a raw request: conftest.request() rejects any session_key)."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("GET", f"/mock/session_key?appid=wx1234567890abcdef&openid={openid}")
        r = conn.getresponse()
        assert r.status == 200
        return json.loads(r.read())["session_key"]
    finally:
        conn.close()


def store_env(tmp_path, **extra):
    env = {"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def login(port, code):
    return post_json(port, "/v1/login", {"code": code})


def token_of(resp):
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) <= {"token", "openid", "unionid", "expires_in"}, body
    assert body["token"].startswith("wxl_") and len(body["token"]) == 47, body
    return body["token"]


def session(port, token=None, auth=None):
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request(port, "GET", "/v1/session", headers=headers)


def assert_invalid_token(resp):
    assert_error(resp, 401, "invalid_token", "relogin")
    assert resp.headers.get("www-authenticate") == 'Bearer error="invalid_token"', resp


@pytest.fixture
def srv(procs, mock, tmp_path):
    return procs.serve(mock=mock, env=store_env(tmp_path))


@pytest.fixture
def store_srv(procs, mock, store):
    """A serve on a fresh store, once per backend (conftest's `store`: sqlite, redis)."""
    return procs.serve(mock=mock, env=store.env())


def redis_user_key(openid):
    return f"wxlogin:{APPID}:u:{openid}".encode()


def redis_session_key(token):
    return f"wxlogin:{APPID}:s:{hashlib.sha256(token.encode()).hexdigest()}".encode()


def redis_hash(c, key):
    flat = c.cmd("HGETALL", key)
    return dict(zip(flat[0::2], flat[1::2]))


def test_login_session_logout_cycle(store_srv, store):
    srv = store_srv
    r = login(srv.port, new_code("ubob"))
    tok = token_of(r)
    body = r.json()
    assert body["expires_in"] == 604800
    assert body["openid"] and body["unionid"]

    s = session(srv.port, tok)
    assert s.status == 200, s
    sb = s.json()
    assert sb["openid"] == body["openid"] and sb["unionid"] == body["unionid"]
    assert sb["appid"] == APPID
    assert 604790 <= sb["expires_in"] <= 604800
    assert s.headers["x-wx-openid"] == body["openid"]
    assert s.headers["x-wx-unionid"] == body["unionid"]
    assert s.headers["x-wx-appid"] == APPID

    if store.kind == "redis":  # the documented key layout (docs/operations.md)
        with store.client() as c:
            ukey, skey = redis_user_key(body["openid"]), redis_session_key(tok)
            found = sorted(c.cmd("KEYS", f"wxlogin:{APPID}:u:*") +
                           c.cmd("KEYS", f"wxlogin:{APPID}:s:*"))
            assert found == sorted([ukey, skey])
            u = redis_hash(c, ukey)
            assert {b"sk", b"unionid", b"updated"} <= set(u), u
            assert u[b"unionid"] == body["unionid"].encode()
            assert abs(int(u[b"updated"]) - time.time()) < 60, u
            sess = redis_hash(c, skey)
            assert sess[b"openid"] == body["openid"].encode(), sess
            assert abs(int(sess[b"exp"]) - (time.time() + 604800)) < 60, sess

    out = request(srv.port, "POST", "/v1/logout", headers={"Authorization": f"Bearer {tok}"})
    assert out.status == 204 and out.body == b"", out
    if store.kind == "redis":
        with store.client() as c:
            assert c.cmd("EXISTS", redis_session_key(tok)) == 0, \
                "logout must delete the session key"
            assert c.cmd("EXISTS", redis_user_key(body["openid"])) == 1, "the user stays"
    assert_invalid_token(session(srv.port, tok))
    assert_invalid_token(request(srv.port, "POST", "/v1/logout",
                                 headers={"Authorization": f"Bearer {tok}"}))


def test_user_without_unionid_has_no_unionid_header(store_srv):
    srv = store_srv
    tok = token_of(login(srv.port, new_code("carol")))
    s = session(srv.port, tok)
    assert s.status == 200 and "unionid" not in s.json(), s
    assert "x-wx-unionid" not in s.headers


@pytest.mark.parametrize("auth", [
    None,
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer garbage",
    "Bearer wxl_" + "A" * 43,          # well-formed, unknown
    "Token wxl_" + "A" * 43,
])
def test_401_variants(store_srv, auth):
    r = request(store_srv.port, "GET", "/v1/session",
                headers={} if auth is None else {"Authorization": auth})
    assert_invalid_token(r)


def test_altered_token_is_401(srv):
    tok = token_of(login(srv.port, new_code("dave")))
    last = tok[-1]
    altered = tok[:-1] + ("B" if last != "B" else "C")
    assert_invalid_token(session(srv.port, altered))
    assert_invalid_token(session(srv.port, tok + "x"))
    assert session(srv.port, tok).status == 200


def test_bearer_scheme_is_case_insensitive(srv):
    tok = token_of(login(srv.port, new_code("erin")))
    assert session(srv.port, auth=f"bearer {tok}").status == 200


def test_expired_token_is_401(procs, mock, store):
    s = procs.serve(mock=mock, env=store.env(WXLOGIN_SESSION_TTL=2))
    r = login(s.port, new_code("frank"))
    tok = token_of(r)
    assert r.json()["expires_in"] == 2
    assert session(s.port, tok).status == 200
    if store.kind == "redis":
        with store.client() as c:
            assert 1 <= c.cmd("TTL", redis_session_key(tok)) <= 2
    assert wait_until(lambda: session(s.port, tok).status == 401, timeout=6.0)
    assert_invalid_token(session(s.port, tok))
    if store.kind == "redis":
        with store.client() as c:
            assert wait_until(lambda: c.cmd("EXISTS", redis_session_key(tok)) == 0,
                              timeout=3.0), "an expired session must leave Redis (TTL)"


def test_logout_of_an_expired_token_is_401(procs, mock, tmp_path):
    # Issue 11: an expired session not yet purged (expired rows are deleted once a minute) was
    # deleted by the logout and answered 204, as if it had been live; docs/api.md says 401.
    s = procs.serve(mock=mock, env=store_env(tmp_path, WXLOGIN_SESSION_TTL=1))
    tok = token_of(login(s.port, new_code("ursula")))
    assert wait_until(lambda: session(s.port, tok).status == 401, timeout=5.0)
    assert_invalid_token(request(s.port, "POST", "/v1/logout",
                                 headers={"Authorization": f"Bearer {tok}"}))
    assert_invalid_token(session(s.port, tok))


def test_openid_records_user_without_token(srv, tmp_path):
    r = post_json(srv.port, "/openid", {"code": new_code("ugrace")})
    assert r.status == 200 and set(r.json()) == {"openid", "unionid"}, r
    # The running service holds its database exclusively (one process per SQLite store).
    assert srv.stop() == 0
    db = sqlite3.connect(f"{tmp_path}/wx.db")
    try:
        rows = db.execute("SELECT openid, unionid, length(session_key) FROM users").fetchall()
        sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        db.close()
    assert rows == [(r.json()["openid"], r.json()["unionid"], 24 + 29)], rows
    assert sessions == 0


def test_two_devices_first_login_at_once_make_one_user(srv, tmp_path):
    codes = [new_code("heidi") for _ in range(8)]
    results = []
    barrier = threading.Barrier(len(codes))

    def go(c):
        barrier.wait()
        results.append(login(srv.port, c))

    ts = [threading.Thread(target=go, args=(c,)) for c in codes]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r.status == 200 for r in results), results
    assert len({r.json()["openid"] for r in results}) == 1
    assert srv.stop() == 0  # the service holds its database exclusively while it runs
    db = sqlite3.connect(f"{tmp_path}/wx.db")
    try:
        n = db.execute("SELECT count(*) FROM users").fetchone()[0]
        ns = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        db.close()
    assert n == 1 and ns == len(codes)


def test_no_raw_token_or_session_key_in_database_files(srv, mock, tmp_path):
    tokens, keys = [], []
    for i in range(5):
        r = login(srv.port, new_code(f"ivan{i}"))
        tokens.append(token_of(r))
        keys.append(mock_session_key(mock, r.json()["openid"]))
    srv.stop()  # checkpoint the WAL into the main file too
    blob = b""
    for name in os.listdir(tmp_path):
        if name.startswith("wx.db"):
            blob += (tmp_path / name).read_bytes()
    assert len(blob) > 0
    for secret in tokens + keys:
        assert secret.encode() not in blob, "raw secret found in the database files"
    for k in keys:
        assert base64.b64decode(k) not in blob, "decoded session_key in the database files"


def test_same_code_twice_in_a_row_is_one_exchange(store_srv, mock):
    srv = store_srv
    code = new_code("judy")
    with Counter(mock) as c:
        a = login(srv.port, code)
        b = login(srv.port, code)
        o = post_json(srv.port, "/openid", {"code": code})
    c.assert_delta(1)
    ta, tb = token_of(a), token_of(b)
    # Issue 9: a repeat is answered the first request's session, never a fresh one (it used to
    # get a new token every time).
    assert ta == tb, "a repeat gets the same session"
    assert 0 <= a.json()["expires_in"] - b.json()["expires_in"] <= 1  # the same expiry
    assert a.json()["openid"] == b.json()["openid"] == o.json()["openid"]
    assert "token" not in o.json()
    assert session(srv.port, ta).status == 200


def test_same_code_ten_times_concurrently_is_one_exchange(store_srv, mock):
    srv = store_srv
    code = new_code("kim", "delay300")
    results = []
    barrier = threading.Barrier(10)

    def go():
        barrier.wait()
        results.append(login(srv.port, code))

    with Counter(mock) as c:
        ts = [threading.Thread(target=go) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    c.assert_delta(1)
    assert [r.status for r in results] == [200] * 10, results
    assert len({r.json()["openid"] for r in results}) == 1
    # Issue 9: one code, one session (it used to be one per request)
    assert len({r.json()["token"] for r in results}) == 1
    for r in results:
        assert session(srv.port, r.json()["token"]).status == 200


def test_final_failure_is_remembered_transient_is_not(srv, mock):
    bad = new_code("leo", "err40029")
    with Counter(mock) as c:
        assert_error(login(srv.port, bad), 400, "invalid_code", "relogin", 40029)
        assert_error(login(srv.port, bad), 400, "invalid_code", "relogin", 40029)
    c.assert_delta(1)
    limited = new_code("mia", "err45011x1")
    with Counter(mock) as c:
        assert_error(login(srv.port, limited), 429, "rate_limited", "retry", 45011)
        assert login(srv.port, limited).status == 200
    c.assert_delta(2)


def test_50_logins_survive_sigkill(procs, mock, tmp_path):
    s = procs.serve(mock=mock, env=store_env(tmp_path))
    tokens = [token_of(login(s.port, new_code(f"n{i}"))) for i in range(50)]
    os.kill(s.pid, signal.SIGKILL)
    s.popen.wait(timeout=5)
    s2 = procs.serve(mock=mock, env=store_env(tmp_path))
    for t in tokens:
        assert session(s2.port, t).status == 200


def test_sessions_survive_sigterm_restart(procs, mock, tmp_path):
    s = procs.serve(mock=mock, env=store_env(tmp_path))
    tok = token_of(login(s.port, new_code("oscar")))
    assert s.stop() == 0
    s2 = procs.serve(mock=mock, env=store_env(tmp_path))
    r = session(s2.port, tok)
    assert r.status == 200, r


def test_master_key_file_created_0600_and_reused(procs, mock, tmp_path):
    s = procs.serve(mock=mock, env=store_env(tmp_path))
    key = tmp_path / "wx.db.key"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    before = key.read_bytes()
    token_of(login(s.port, new_code("pat")))
    s.stop()
    procs.serve(mock=mock, env=store_env(tmp_path))
    assert key.read_bytes() == before


def private_modes(tmp_path):
    """{name: mode} of the database and the files beside it (the key excluded)."""
    return {n: stat.S_IMODE(os.stat(tmp_path / n).st_mode) for n in os.listdir(tmp_path)
            if n.startswith("wx.db") and not n.endswith(".key")}


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_database_files_private_whatever_the_umask(procs, mock, tmp_path, umask):
    """wx.db and its -wal (-shm, -journal if SQLite makes them) hold every openid, unionid and
    sealed key: 0600 however permissive (or strict) the umask the service starts with."""
    old = os.umask(umask)
    try:
        s = procs.serve(mock=mock, env=store_env(tmp_path))
    finally:
        os.umask(old)
    token_of(login(s.port, new_code("umask")))
    running = private_modes(tmp_path)
    assert {"wx.db", "wx.db-wal"} <= set(running), running
    assert all(m == 0o600 for m in running.values()), {n: oct(m) for n, m in running.items()}
    assert s.stop() == 0
    stopped = private_modes(tmp_path)
    assert stopped and all(m == 0o600 for m in stopped.values()), \
        {n: oct(m) for n, m in stopped.items()}


def test_database_readable_by_others_is_tightened_with_a_warning(procs, mock, tmp_path):
    """A database left 0644 (by an older version, or by hand) is made 0600 at start, the log
    says so, and nothing in it is lost."""
    s = procs.serve(mock=mock, env=store_env(tmp_path))
    tok = token_of(login(s.port, new_code("wide")))
    assert s.stop() == 0
    os.chmod(tmp_path / "wx.db", 0o644)
    s2 = procs.serve(mock=mock, env=store_env(tmp_path))
    assert stat.S_IMODE(os.stat(tmp_path / "wx.db").st_mode) == 0o600
    text = s2.wait_log(lambda t: "readable by others" in t)
    warns = [l for l in text.splitlines() if "readable by others" in l]
    assert len(warns) == 1 and '"level":"warn"' in warns[0] and "wx.db" in warns[0], text[-2000:]
    assert session(s2.port, tok).status == 200


def test_readyz_and_store_failure(srv, tmp_path):
    assert request(srv.port, "GET", "/readyz").status == 200
    tok = token_of(login(srv.port, new_code("quinn")))
    # The database file is replaced under the running service.
    for name in os.listdir(tmp_path):
        if name.startswith("wx.db") and not name.endswith(".key"):
            os.rename(tmp_path / name, tmp_path / f"moved-{name}")
    (tmp_path / "wx.db").write_bytes(b"not a database")
    assert_error(request(srv.port, "GET", "/readyz"), 503, "store_unavailable", "retry")
    assert_error(session(srv.port, tok), 503, "store_unavailable", "retry")
    assert_error(login(srv.port, new_code("quinn")), 503, "store_unavailable", "retry")
    assert request(srv.port, "GET", "/healthz").status == 200
    assert srv.alive()


def test_bad_master_key_refuses_to_start(procs, mock, tmp_path):
    from conftest import run_cli, base_env
    env = base_env(WXLOGIN_APPID="wx1234567890abcdef", WXLOGIN_SECRET="s",
                   WXLOGIN_LISTEN="127.0.0.1:0", WXLOGIN_STORE=f"sqlite:{tmp_path}/x.db",
                   WXLOGIN_MASTER_KEY="c2hvcnQ=")
    cp = run_cli(["serve"], env=env)
    assert cp.returncode != 0
    assert "master_key" in cp.stderr and "c2hvcnQ" not in cp.stderr
