"""One login code, at most one session (issue 9).

Item 1: a repeat of POST /v1/login with a code already exchanged used to mint a fresh session
every time (one captured code gave 50,580 sessions in 10 s, each valid 7 days and surviving the
victim's logout). Now a repeat within `code_reuse_window` is answered the same session (same
token, same expiry) while it lives; after a logout, an expiry or the window, the code is dead:
400 code_used, as WeChat's 40163 is answered. Within one process and across instances on Redis.

Item 2: filling the exchange table (`exchange_table_size`) with bogus codes used to turn
de-duplication off, so a legitimate double tap failed with code_used. Now remembered failures go
first and an exchange in flight always has its entry.
"""

import sqlite3
import threading
import time

from conftest import in_parallel, Counter, assert_error, new_code, post_json, request
from test_redis import db, keys, redis, redis_dir, redis_env  # noqa: F401 (fixtures)

APPID = "wx1234567890abcdef"


def store_env(tmp_path, **extra):
    env = {"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def login(port, code):
    return post_json(port, "/v1/login", {"code": code})


def openid(port, code):
    return post_json(port, "/openid", {"code": code})


def token_of(resp):
    assert resp.status == 200, resp
    body = resp.json()
    assert body["token"].startswith("wxl_") and len(body["token"]) == 47, body
    return body["token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def session(port, token):
    return request(port, "GET", "/v1/session", headers=bearer(token))


def logout(port, token):
    return request(port, "POST", "/v1/logout", headers=bearer(token))


def assert_code_used(resp):
    """Exactly how WeChat's 40163 is answered (docs/api.md, the errcode table)."""
    body = assert_error(resp, 400, "code_used", "relogin", 40163)
    assert body["message"] == "the login code was already used", body


def sqlite_sessions(srv, tmp_path):
    """Rows of the sessions table (the service holds its database exclusively: stop it)."""
    assert srv.stop() == 0
    conn = sqlite3.connect(f"{tmp_path}/wx.db")
    try:
        return conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    finally:
        conn.close()


# --------------------------------------------------------------------------
# one process (SQLite, with its session cache)
# --------------------------------------------------------------------------

def test_fifty_sequential_repeats_answer_one_session(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path))
    code = new_code("ualice")
    rs, ends = [], []
    with Counter(mock) as c:
        for _ in range(50):
            rs.append(login(srv.port, code))
            ends.append(time.time())
    c.assert_delta(1)
    assert [r.status for r in rs] == [200] * 50, [r for r in rs if r.status != 200][:2]
    assert len({token_of(r) for r in rs}) == 1, "one code must give one session"
    assert len({(r.json()["openid"], r.json()["unionid"]) for r in rs}) == 1
    # the same expiry: expires_in counts down with the clock (whole seconds)
    ats = [t + r.json()["expires_in"] for t, r in zip(ends, rs)]
    assert max(ats) - min(ats) <= 1.5, ats
    assert session(srv.port, token_of(rs[0])).status == 200
    assert sqlite_sessions(srv, tmp_path) == 1


def test_fifty_concurrent_repeats_answer_one_session(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path))
    code = new_code("bob", "delay300")
    with Counter(mock) as c:
        rs = in_parallel([lambda: login(srv.port, code)] * 50)
        # and a second wave, answered from the remembered outcome
        rs += in_parallel([lambda: login(srv.port, code)] * 20)
    c.assert_delta(1)
    assert [r.status for r in rs] == [200] * 70, [r for r in rs if r.status != 200][:2]
    assert len({token_of(r) for r in rs}) == 1
    assert sqlite_sessions(srv, tmp_path) == 1


def test_repeat_after_logout_is_code_used(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path))
    code = new_code("ucarol")
    with Counter(mock) as c:
        tok = token_of(login(srv.port, code))
        assert token_of(login(srv.port, code)) == tok
        assert session(srv.port, tok).status == 200  # now in the session cache too
        assert logout(srv.port, tok).status == 204
        assert_code_used(login(srv.port, code))
        assert session(srv.port, tok).status == 401
        # still dead once the cache's tombstone of the logout has lapsed (2 s): neither the
        # cache nor a repeat brings the session back
        time.sleep(2.3)
        assert_code_used(login(srv.port, code))
        assert session(srv.port, tok).status == 401
        # POST /openid makes no session: its repeat still tells who the code logged in
        o = openid(srv.port, code)
        assert o.status == 200 and set(o.json()) == {"openid", "unionid"}, o
    c.assert_delta(1)
    assert sqlite_sessions(srv, tmp_path) == 0


def test_repeat_after_the_window_is_code_used(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path, WXLOGIN_CODE_REUSE_WINDOW=2))
    code = new_code("dave")
    with Counter(mock) as c:
        first = login(srv.port, code)
        tok = token_of(first)
        assert token_of(login(srv.port, code)) == tok
        time.sleep(2.2)
        assert_code_used(login(srv.port, code))
        assert_code_used(login(srv.port, code))
    c.assert_delta(1)
    # the window ends the code, not the session
    s = session(srv.port, tok)
    assert s.status == 200 and s.json()["openid"] == first.json()["openid"], s
    assert sqlite_sessions(srv, tmp_path) == 1


def test_repeat_after_the_session_expired_is_code_used(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path, WXLOGIN_SESSION_TTL=1))
    code = new_code("erin")
    tok = token_of(login(srv.port, code))
    deadline = time.monotonic() + 5
    while session(srv.port, tok).status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session(srv.port, tok).status == 401
    with Counter(mock) as c:
        assert_code_used(login(srv.port, code))
    c.assert_delta(0)


def test_login_after_openid_with_the_same_code_is_code_used(procs, mock, tmp_path):
    """The first exchange made no session, and a repeat never makes one."""
    srv = procs.serve(mock=mock, env=store_env(tmp_path))
    code = new_code("ufrank")
    with Counter(mock) as c:
        o = openid(srv.port, code)
        assert o.status == 200, o
        assert_code_used(login(srv.port, code))
        assert openid(srv.port, code).json() == o.json()
    c.assert_delta(1)
    assert sqlite_sessions(srv, tmp_path) == 0


def test_codes_tokens_and_keys_stay_out_of_the_log(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path, WXLOGIN_LOG_LEVEL="debug"))
    code = new_code("gina")
    tok = token_of(login(srv.port, code))
    assert token_of(login(srv.port, code)) == tok
    assert logout(srv.port, tok).status == 204
    assert_code_used(login(srv.port, code))
    srv.stop()
    text = srv.log_text()
    assert code not in text and tok not in text and tok[4:] not in text
    assert "repeated login code refused" in text


# --------------------------------------------------------------------------
# several instances on one Redis
# --------------------------------------------------------------------------

def two_instances(procs, mock, redis, db, **env):
    e = redis_env(redis.url(db), **env)
    return procs.serve(mock=mock, env=e), procs.serve(mock=mock, env=e)


def redis_sessions(redis, db):
    with redis.client(db) as c:
        return keys(c, f"wxlogin:{APPID}:s:*")


def test_repeat_on_the_other_instance_gets_the_same_session(procs, mock, redis, db):
    a, b = two_instances(procs, mock, redis, db)
    code = new_code("uhank")
    with Counter(mock) as c:
        tok = token_of(login(a.port, code))
        assert token_of(login(b.port, code)) == tok
        rs = in_parallel([lambda p=(a if i % 2 else b).port: login(p, code) for i in range(20)])
        assert {token_of(r) for r in rs} == {tok}
    c.assert_delta(1)
    assert len(redis_sessions(redis, db)) == 1
    assert session(a.port, tok).status == 200 and session(b.port, tok).status == 200

    # logged out on one instance: the code is dead on both
    assert logout(b.port, tok).status == 204
    assert_code_used(login(a.port, code))
    assert_code_used(login(b.port, code))
    assert session(a.port, tok).status == 401
    assert redis_sessions(redis, db) == []


def test_concurrent_first_logins_on_both_instances_make_one_session(procs, mock, redis, db):
    a, b = two_instances(procs, mock, redis, db)
    code = new_code("ivy", "delay300")
    with Counter(mock) as c:
        rs = in_parallel([lambda p=(a if i % 2 else b).port: login(p, code) for i in range(16)])
    c.assert_delta(1)
    assert [r.status for r in rs] == [200] * 16, [r for r in rs if r.status != 200][:2]
    assert len({token_of(r) for r in rs}) == 1
    assert len(redis_sessions(redis, db)) == 1


def test_the_window_applies_across_instances(procs, mock, redis, db):
    a, b = two_instances(procs, mock, redis, db, WXLOGIN_CODE_REUSE_WINDOW=1)
    code = new_code("jack")
    tok = token_of(login(a.port, code))
    time.sleep(1.2)
    # b never saw the code: it reads a's published outcome, and its time
    assert_code_used(login(b.port, code))
    assert_code_used(login(a.port, code))
    assert session(b.port, tok).status == 200
    assert len(redis_sessions(redis, db)) == 1


# --------------------------------------------------------------------------
# a full exchange table (item 2)
# --------------------------------------------------------------------------

TABLE = 16


def bogus(n):
    """Codes the mock rejects with 40029 (final: each one is remembered as a failure)."""
    return [new_code("bogus", "err40029") for _ in range(n)]


def test_a_full_table_keeps_double_taps_working(procs, mock, tmp_path):
    srv = procs.serve(mock=mock, env=store_env(tmp_path, WXLOGIN_EXCHANGE_TABLE_SIZE=TABLE))
    first_bogus = bogus(1)[0]
    for code in [first_bogus] + bogus(3 * TABLE):
        assert_error(login(srv.port, code), 400, "invalid_code", "relogin", 40029)

    # a legitimate code, then another flood of bogus ones between its two taps
    code = new_code("ukate")
    tok = token_of(login(srv.port, code))
    for b in bogus(3 * TABLE):
        assert_error(login(srv.port, b), 400, "invalid_code", "relogin", 40029)
    with Counter(mock) as c:
        assert token_of(login(srv.port, code)) == tok
        assert openid(srv.port, code).status == 200
    c.assert_delta(0)

    # the table is bounded: the first bogus code was forgotten and goes to WeChat again
    with Counter(mock) as c:
        assert_error(login(srv.port, first_bogus), 400, "invalid_code", "relogin", 40029)
    c.assert_delta(1)

    # a concurrent double tap while the table is full: one exchange, one session
    code2 = new_code("leo", "delay300")
    with Counter(mock) as c:
        rs = in_parallel([lambda: login(srv.port, code2)] * 2)
    c.assert_delta(1)
    assert len({token_of(r) for r in rs}) == 1
    assert sqlite_sessions(srv, tmp_path) == 2
