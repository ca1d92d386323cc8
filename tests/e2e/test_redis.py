"""The Redis session store (issue: Redis store).

`WXLOGIN_STORE=redis://[:password@]host:port/db` or `redis+unix:///path?db=N`, with
`WXLOGIN_STORE_TIMEOUT_MS` and a required `WXLOGIN_MASTER_KEY`. Keys:
    wxlogin:<appid>:u:<openid>            hash sk, prev_sk, prev_at, unionid, updated
    wxlogin:<appid>:s:<sha256 hex token>  hash openid, exp; with a Redis TTL

A real `redis-server` (not daemonized, no persistence) is started on a free loopback port for the
module; tests that stop, pause or reconfigure Redis start their own. Redis is inspected over a
tiny RESP client on a plain socket (values are bytes, so sealed keys are seen as they are).
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import (DEFAULT_APPID, Counter, assert_error, base_env, free_port, new_code,
                      post_json, request, run_cli, wait_until)
# the launcher and the RESP client (tests/harness); re-exported for the files that import them here
from harness import REDIS_SERVER, RedisError, RedisServer, RespClient, redis_ping  # noqa: F401

MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
DB_COUNT = 64  # --databases (RedisServer's default): every test gets its own db number


@pytest.fixture(scope="module")
def redis_dir():
    # short (unix socket paths are limited to 107 bytes), removed at the end
    d = tempfile.mkdtemp(prefix="wxl-redis-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def redis(redis_dir):
    if not os.path.exists(REDIS_SERVER):
        pytest.fail(f"{REDIS_SERVER} not found: run scripts/install-deps.sh", pytrace=False)
    r = RedisServer(redis_dir / "main").start()
    yield r
    r.stop()


@pytest.fixture
def own_redis(redis_dir):
    """Factory for per-test redis-servers (stopped at teardown): own_redis(password=..., ...)."""
    started = []

    def make(**kw):
        r = RedisServer(redis_dir / f"own{len(started)}-{os.getpid()}-{time.monotonic_ns()}", **kw)
        started.append(r)
        return r.start()

    yield make
    for r in started:
        r.stop()


_next_db = [1]


@pytest.fixture
def db(redis):
    """A db number of the module's Redis no other test uses (emptied, to be sure)."""
    n = _next_db[0]
    _next_db[0] += 1
    assert n < DB_COUNT, "out of Redis db numbers: raise DB_COUNT"
    with redis.client(n) as c:
        c.cmd("FLUSHDB")
    return n


def redis_env(url, **extra):
    env = {"WXLOGIN_STORE": url, "WXLOGIN_MASTER_KEY": MASTER_KEY}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def srv(procs, mock, redis, db):
    return procs.serve(mock=mock, env=redis_env(redis.url(db)))


# --------------------------------------------------------------------------
# HTTP helpers (as test_sessions.py)
# --------------------------------------------------------------------------

def mock_session_key(mock, openid):
    """The mock's debug route (a raw request: conftest.request() rejects any session_key)."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("GET", f"/mock/session_key?appid={DEFAULT_APPID}&openid={openid}")
        r = conn.getresponse()
        assert r.status == 200
        return json.loads(r.read())["session_key"]
    finally:
        conn.close()


def login(port, code, timeout=15.0):
    return post_json(port, "/v1/login", {"code": code}, timeout=timeout)


def token_of(resp):
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) <= {"token", "openid", "unionid", "expires_in"}, body
    assert body["token"].startswith("wxl_") and len(body["token"]) == 47, body
    return body["token"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def session(port, token=None, auth=None, timeout=15.0):
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request(port, "GET", "/v1/session", headers=headers, timeout=timeout)


def logout(port, token):
    return request(port, "POST", "/v1/logout", headers=bearer(token))


def readyz(port, timeout=15.0):
    return request(port, "GET", "/readyz", timeout=timeout)


def assert_invalid_token(resp):
    assert_error(resp, 401, "invalid_token", "relogin")
    assert resp.headers.get("www-authenticate") == 'Bearer error="invalid_token"', resp


def assert_store_unavailable(resp):
    assert_error(resp, 503, "store_unavailable", "retry")


def timed(fn, *a, **kw):
    t0 = time.monotonic()
    r = fn(*a, **kw)
    return r, time.monotonic() - t0


def wait_ready(port, timeout=8.0):
    return wait_until(lambda: readyz(port, timeout=5).status == 200, timeout=timeout, interval=0.05)


def all_ok_for_a_while(port, mock_user, n=12):
    """n consecutive login + session round trips succeed (each on a new connection, so they
    spread over the workers)."""
    for i in range(n):
        r = login(port, new_code(mock_user))
        if r.status != 200:
            return False
        if session(port, r.json()["token"]).status != 200:
            return False
    return True


def aes_encrypt(sk_b64, plaintext):
    key = base64.b64decode(sk_b64)
    iv = os.urandom(16)
    cp = subprocess.run(["openssl", "enc", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()],
                        input=plaintext.encode(), capture_output=True, timeout=10)
    assert cp.returncode == 0, cp.stderr
    return {"encryptedData": base64.b64encode(cp.stdout).decode(),
            "iv": base64.b64encode(iv).decode()}


def user_info(openid):
    return {"openId": openid, "nickName": "Band", "watermark":
            {"appid": DEFAULT_APPID, "timestamp": int(time.time())}}


def decrypt(port, token, fields):
    h = {"Content-Type": "application/json", **bearer(token)}
    return post_json(port, "/v1/decrypt", fields, headers=h)


def sign(raw, sk):
    return hashlib.sha1(raw.encode() + sk.encode()).hexdigest()


def check_signature(port, token, raw, sig):
    h = {"Content-Type": "application/json", **bearer(token)}
    return post_json(port, "/v1/check-signature", {"rawData": raw, "signature": sig}, headers=h)


# --------------------------------------------------------------------------
# Redis inspection
# --------------------------------------------------------------------------

def user_key(openid, appid=DEFAULT_APPID):
    return f"wxlogin:{appid}:u:{openid}".encode()


def session_rkey(token, appid=DEFAULT_APPID):
    return f"wxlogin:{appid}:s:{hashlib.sha256(token.encode()).hexdigest()}".encode()


def keys(c, pattern="*"):
    return sorted(c.cmd("KEYS", pattern))


def user_session_keys(c, appid=DEFAULT_APPID):
    """The user and session keys (other kinds, e.g. code-exchange records, are left out)."""
    return sorted(keys(c, f"wxlogin:{appid}:u:*") + keys(c, f"wxlogin:{appid}:s:*"))


def hgetall(c, key):
    flat = c.cmd("HGETALL", key)
    return dict(zip(flat[0::2], flat[1::2]))


def dump_db(c):
    """Every key with its type, fields and values, DUMP and TTL: one blob to search."""
    blob = b""
    for k in keys(c):
        blob += b"\nKEY " + k
        t = c.cmd("TYPE", k)
        if t == b"hash":
            for f, v in hgetall(c, k).items():
                blob += b"\n" + f + b"=" + v
        elif t == b"string":
            blob += b"\n" + (c.cmd("GET", k) or b"")
        d = c.cmd("DUMP", k)
        blob += b"\nDUMP " + (d or b"")
    return blob


def token_bytes(token):
    s = token[4:]
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# --------------------------------------------------------------------------
# sessions on Redis (the tests common to both stores are in test_sessions.py, run on each)
# --------------------------------------------------------------------------

def test_altered_token_and_foreign_session_key_are_401(srv, redis, db):
    tok = token_of(login(srv.port, new_code("dave")))
    altered = tok[:-1] + ("B" if tok[-1] != "B" else "C")
    assert_invalid_token(session(srv.port, altered))
    assert_invalid_token(session(srv.port, tok + "x"))
    assert session(srv.port, tok).status == 200
    # a session hash without the fields wxlogin writes, or with exp in the past, is no session
    forged = "wxl_" + "Z" * 43
    with redis.client(db) as c:
        c.cmd("HSET", session_rkey(forged), "openid", "ohacker")
    assert_invalid_token(session(srv.port, forged))
    with redis.client(db) as c:
        c.cmd("HSET", session_rkey(forged), "exp", int(time.time()) - 10)
    assert_invalid_token(session(srv.port, forged))


def test_sessions_have_a_redis_ttl(procs, mock, redis, db):
    s = procs.serve(mock=mock, env=redis_env(redis.url(db), WXLOGIN_SESSION_TTL=3600))
    r = login(s.port, new_code("ttluser"))
    tok = token_of(r)
    assert r.json()["expires_in"] == 3600
    with redis.client(db) as c:
        sk = keys(c, f"wxlogin:{DEFAULT_APPID}:s:*")
        assert sk == [session_rkey(tok)], sk
        ttl = c.cmd("TTL", sk[0])
        assert 3590 <= ttl <= 3600, f"session TTL {ttl}, expected about 3600"
        assert abs(int(hgetall(c, sk[0])[b"exp"]) - (time.time() + 3600)) <= 5


def test_default_ttl_is_session_ttl(srv, redis, db):
    tok = token_of(login(srv.port, new_code("ttl2")))
    with redis.client(db) as c:
        ttl = c.cmd("TTL", session_rkey(tok))
    assert 604790 <= ttl <= 604800, ttl


def test_openid_records_user_without_session(srv, mock, redis, db):
    r = post_json(srv.port, "/openid", {"code": new_code("ugrace")})
    assert r.status == 200 and set(r.json()) == {"openid", "unionid"}, r
    with redis.client(db) as c:
        assert user_session_keys(c) == [user_key(r.json()["openid"])]
        u = hgetall(c, user_key(r.json()["openid"]))
    assert u[b"unionid"] == r.json()["unionid"].encode()
    assert len(u[b"sk"]) > 16


def test_eight_devices_first_login_at_once_make_one_user(srv, redis, db):
    codes = [new_code("uheidi") for _ in range(8)]
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
    openids = {r.json()["openid"] for r in results}
    assert len(openids) == 1
    with redis.client(db) as c:
        users = keys(c, f"wxlogin:{DEFAULT_APPID}:u:*")
        sessions = keys(c, f"wxlogin:{DEFAULT_APPID}:s:*")
        u = hgetall(c, users[0]) if users else {}
    assert users == [user_key(openids.pop())], users
    assert sessions == sorted(session_rkey(r.json()["token"]) for r in results)
    assert b"unionid" in u and b"sk" in u, u
    for r in results:
        assert session(srv.port, r.json()["token"]).status == 200


def test_decrypt_and_signature_with_a_redis_stored_user(srv, mock):
    r = login(srv.port, new_code("ivy"))
    tok, openid = token_of(r), r.json()["openid"]
    sk = mock_session_key(mock, openid)
    info = user_info(openid)
    d = decrypt(srv.port, tok, aes_encrypt(sk, json.dumps(info)))
    assert d.status == 200, d
    assert d.json() == {"data": info}
    raw = json.dumps({"nickName": "Band"})
    v = check_signature(srv.port, tok, raw, sign(raw, sk))
    assert v.status == 200 and v.json() == {"valid": True}, v
    v = check_signature(srv.port, tok, raw, sign(raw + " ", sk))
    assert v.status == 200 and v.json() == {"valid": False}, v

    # A re-login replaces the key; data sealed with the old one still opens (prev_sk, grace).
    r2 = login(srv.port, new_code("ivy"))
    tok2 = token_of(r2)
    sk2 = mock_session_key(mock, openid)
    assert sk2 != sk
    d = decrypt(srv.port, tok2, aes_encrypt(sk, json.dumps(info)))
    assert d.status == 200 and d.json() == {"data": info}, d
    d = decrypt(srv.port, tok2, aes_encrypt(sk2, json.dumps(info)))
    assert d.status == 200 and d.json() == {"data": info}, d


def test_no_raw_token_or_session_key_in_redis(srv, mock, redis, db):
    tokens, sks, codes = [], [], []
    for i in range(5):
        codes.append(new_code(f"uivan{i}"))
        r = login(srv.port, codes[-1])
        tokens.append(token_of(r))
        sks.append(mock_session_key(mock, r.json()["openid"]))
    # a second login for one user: prev_sk is written too
    codes.append(new_code("uivan0"))
    r = login(srv.port, codes[-1])
    tokens.append(token_of(r))
    sks.append(mock_session_key(mock, r.json()["openid"]))
    with redis.client(db) as c:
        ks = user_session_keys(c)
        assert len(ks) == 5 + 6, ks
        assert all(k.startswith(f"wxlogin:{DEFAULT_APPID}:".encode()) for k in keys(c)), keys(c)
        assert hgetall(c, user_key(r.json()["openid"])).get(b"prev_sk"), "prev_sk not kept"
        blob = dump_db(c)
    assert len(blob) > 1000
    for t in tokens:
        assert t.encode() not in blob, "raw token found in Redis"
        assert t[4:].encode() not in blob, "token body found in Redis"
        assert token_bytes(t) not in blob, "decoded token found in Redis"
    for k in sks:
        assert k.encode() not in blob, "raw session_key found in Redis"
        assert base64.b64decode(k) not in blob, "decoded session_key found in Redis"
        assert base64.b64decode(k).hex().encode() not in blob, "hex session_key found in Redis"
    for code in codes:  # only SHA-256 hashes of codes are kept (docs/api.md)
        assert code.encode() not in blob, "raw login code found in Redis"


# --------------------------------------------------------------------------
# two instances on one Redis
# --------------------------------------------------------------------------

def test_two_instances_share_sessions(procs, mock, redis, db):
    env = redis_env(redis.url(db))
    a = procs.serve(mock=mock, env=env)
    b = procs.serve(mock=mock, env=env)
    r = login(a.port, new_code("uzoe"))
    tok = token_of(r)
    sb = session(b.port, tok)
    assert sb.status == 200, sb
    assert sb.json()["openid"] == r.json()["openid"]
    assert sb.json()["unionid"] == r.json()["unionid"]
    # the session_key sealed by A opens on B (same master key)
    sk = mock_session_key(mock, r.json()["openid"])
    info = user_info(r.json()["openid"])
    d = decrypt(b.port, tok, aes_encrypt(sk, json.dumps(info)))
    assert d.status == 200 and d.json() == {"data": info}, d

    assert session(a.port, tok).status == 200  # A has seen it (a cache would now hold it)
    out = logout(b.port, tok)
    assert out.status == 204, out
    assert_invalid_token(session(a.port, tok))
    assert_invalid_token(logout(a.port, tok))
    assert_invalid_token(session(b.port, tok))

    # and the other way round
    tok2 = token_of(login(b.port, new_code("uzoe")))
    assert session(a.port, tok2).status == 200
    assert logout(a.port, tok2).status == 204
    assert_invalid_token(session(b.port, tok2))


def test_two_apps_bearer_routes_find_the_app_from_the_token(procs, redis, db, tmp_path):
    """Issue 11: with several apps, a request that names none is looked up in every app's
    namespace (one script); naming another app is still 401."""
    app_a, secret_a = "wxaaaa000000000001", "secretA0000000000000000000000001"
    app_b, secret_b = "wxbbbb000000000002", "secretB0000000000000000000000002"
    conf = tmp_path / "apps.conf"
    conf.write_text(f'[app "{app_a}"]\nsecret = {secret_a}\n[app "{app_b}"]\nsecret = {secret_b}\n')
    m = procs.mock(apps=[(app_a, secret_a), (app_b, secret_b)])
    s = procs.serve(mock=m, appid=None, secret=None, args=["--config", str(conf)],
                    env=redis_env(redis.url(db)))
    h = {"Content-Type": "application/json"}
    a = post_json(s.port, "/v1/login", {"code": new_code("umax", app=app_a)}, headers={**h, "X-WX-AppID": app_a})
    b = post_json(s.port, "/v1/login", {"code": new_code("nina", app=app_b)}, headers={**h, "X-WX-AppID": app_b})
    ta, tb = token_of(a), token_of(b)
    ra, rb = session(s.port, ta), session(s.port, tb)
    assert ra.status == 200 and rb.status == 200, (ra, rb)
    assert ra.json()["appid"] == app_a and ra.json()["unionid"] == a.json()["unionid"], ra
    assert rb.json()["appid"] == app_b and "unionid" not in rb.json(), rb
    assert rb.headers["x-wx-appid"] == app_b and "x-wx-unionid" not in rb.headers
    assert_invalid_token(request(s.port, "GET", "/v1/session",
                                 headers={**bearer(ta), "X-WX-AppID": app_b}))
    assert_invalid_token(session(s.port, "wxl_" + "A" * 43))
    assert logout(s.port, tb).status == 204
    assert_invalid_token(session(s.port, tb))
    with redis.client(db) as c:
        assert c.cmd("EXISTS", session_rkey(tb, app_b)) == 0


def test_other_master_key_cannot_open_session_keys(procs, mock, redis, db):
    """Instances must share the master key: one with another key still verifies tokens (they
    are hashes) but cannot open the sealed session_key, and must not crash or leak it."""
    a = procs.serve(mock=mock, env=redis_env(redis.url(db)))
    other = base64.b64encode(os.urandom(32)).decode()
    # Such an instance is now refused at start (test_other_master_key_refused_at_start); with
    # the check value gone (deleted by hand), the sealed keys must still not open.
    with redis.client(db) as c:
        assert c.cmd("DEL", f"wxlogin:{DEFAULT_APPID}:master_key_check") == 1
    b = procs.serve(mock=mock, env=redis_env(redis.url(db), WXLOGIN_MASTER_KEY=other))
    r = login(a.port, new_code("wanda"))
    tok = token_of(r)
    sk = mock_session_key(mock, r.json()["openid"])
    assert session(b.port, tok).status == 200
    d = decrypt(b.port, tok, aes_encrypt(sk, json.dumps(user_info(r.json()["openid"]))))
    # the sealed key does not open: the session is unusable for data, so the client logs in again
    assert d.status == 401, d
    assert d.json()["error"] == "invalid_token" and d.json()["action"] == "relogin", d
    assert b.alive()
    assert other not in b.log_text()


def test_other_master_key_refused_at_start(procs, mock, redis, db):
    """The check value of the app's prefix (wxlogin:<appid>:master_key_check, set by the first
    instance) is not the key nor its hash; an instance with another key exits 2 and says why."""
    a = procs.serve(mock=mock, env=redis_env(redis.url(db)))
    assert login(a.port, new_code("mkr")).status == 200
    with redis.client(db) as c:
        check = c.cmd("GET", f"wxlogin:{DEFAULT_APPID}:master_key_check")
    assert check and len(check) == 64 and MASTER_KEY.encode() not in check
    assert hashlib.sha256(base64.b64decode(MASTER_KEY)).hexdigest().encode() != check
    other = base64.b64encode(os.urandom(32)).decode()
    env = base_env(**redis_env(redis.url(db), WXLOGIN_MASTER_KEY=other,
                               WXLOGIN_APPID=DEFAULT_APPID, WXLOGIN_SECRET="x" * 32,
                               WXLOGIN_LISTEN=f"127.0.0.1:{free_port()}"))
    cp = run_cli(["serve"], env=env)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert "different master key" in cp.stderr, cp.stderr
    assert other not in cp.stderr and MASTER_KEY not in cp.stderr
    with redis.client(db) as c:  # untouched
        assert c.cmd("GET", f"wxlogin:{DEFAULT_APPID}:master_key_check") == check


def test_master_key_check_skipped_while_redis_is_down(procs, mock, own_redis):
    """Redis down at start is not a reason to refuse (the service waits for it): warned."""
    rd = own_redis()
    url = rd.url(1)
    rd.stop()
    s = procs.serve(mock=mock, env=redis_env(url, WXLOGIN_STORE_TIMEOUT_MS=300))
    assert "cannot check the master key against Redis" in s.log_text()
    assert s.alive()


# --------------------------------------------------------------------------
# Redis outages
# --------------------------------------------------------------------------

def test_redis_stopped_then_restarted(procs, mock, own_redis):
    rd = own_redis()
    s = procs.serve(mock=mock, env=redis_env(rd.url(2), WXLOGIN_STORE_TIMEOUT_MS=300,
                                             WXLOGIN_THREADS=2))
    assert wait_ready(s.port), "readyz never 200 with Redis up"
    old = token_of(login(s.port, new_code("olga")))
    assert session(s.port, old).status == 200

    rd.stop()
    r, dt = timed(session, s.port, old, timeout=10)
    assert_store_unavailable(r)
    assert dt < 2.0, f"/v1/session took {dt:.2f}s with Redis down"
    r, dt = timed(login, s.port, new_code("olga"), timeout=10)
    assert_store_unavailable(r)
    assert dt < 2.0, f"/v1/login took {dt:.2f}s with Redis down"
    r, dt = timed(readyz, s.port, timeout=10)
    assert_store_unavailable(r)
    assert dt < 2.0, f"/readyz took {dt:.2f}s with Redis down"
    for _ in range(6):  # every worker, several times
        assert_store_unavailable(session(s.port, old, timeout=10))
    assert request(s.port, "GET", "/healthz").status == 200
    assert s.alive()

    rd.start()  # same port, empty
    t0 = time.monotonic()
    assert wait_ready(s.port, timeout=6.0), "readyz not 200 again after Redis came back"
    # every worker reconnects by itself within its backoff (2 s at most)
    assert wait_until(lambda: all_ok_for_a_while(s.port, "olga"), timeout=6.0, interval=0.2), \
        "logins/sessions do not work again after Redis came back"
    assert time.monotonic() - t0 < 8.0
    assert_invalid_token(session(s.port, old))  # the restarted Redis lost it: 401, not 503
    assert s.alive()
    assert s.popen.pid == s.pid


def test_redis_paused_answers_503_within_store_timeout_and_recovers(procs, mock, own_redis):
    rd = own_redis()
    s = procs.serve(mock=mock, env=redis_env(rd.url(3), WXLOGIN_STORE_TIMEOUT_MS=300,
                                             WXLOGIN_THREADS=2))
    assert wait_ready(s.port)
    before = token_of(login(s.port, new_code("ubea")))
    assert session(s.port, before).status == 200

    rd.pause()
    try:
        worst = 0.0
        for _ in range(4):
            r, dt = timed(session, s.port, before, timeout=10)
            assert_store_unavailable(r)
            worst = max(worst, dt)
        r, dt = timed(login, s.port, new_code("ubea"), timeout=10)
        assert_store_unavailable(r)
        worst = max(worst, dt)
        r, dt = timed(readyz, s.port, timeout=10)
        assert_store_unavailable(r)
        worst = max(worst, dt)
        assert worst < 1.2, f"a request took {worst:.2f}s with Redis frozen (store timeout 300 ms)"
        # several at once: none waits much longer than the deadline either
        results = []

        def go():
            results.append(timed(session, s.port, before, timeout=10))

        ts = [threading.Thread(target=go) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for r, dt in results:
            assert_store_unavailable(r)
            assert dt < 1.5, f"a concurrent request took {dt:.2f}s with Redis frozen"
        assert request(s.port, "GET", "/healthz").status == 200
        assert s.alive()
    finally:
        rd.resume()

    t0 = time.monotonic()
    assert wait_ready(s.port, timeout=6.0), "readyz not 200 after SIGCONT"
    # each worker reconnects on its own backoff (at most 2 s + the connect deadline)
    assert wait_until(lambda: all(session(s.port, before).status == 200 for _ in range(8)),
                      timeout=6.0, interval=0.1), \
        "a session from before the freeze does not verify (every time) after it"
    assert all_ok_for_a_while(s.port, "ubea", n=6)
    assert time.monotonic() - t0 < 6.0
    assert s.alive()


def test_dropped_connections_are_replaced(procs, mock, own_redis):
    """Redis closes wxlogin's connections (CLIENT KILL, an idle timeout, a proxy): Redis itself is
    fine, so service resumes after the first reconnect (100 ms backoff), without a restart."""
    rd = own_redis()
    s = procs.serve(mock=mock, env=redis_env(rd.url(8), WXLOGIN_THREADS=2))
    tok = token_of(login(s.port, new_code("kira")))
    assert session(s.port, tok).status == 200
    with rd.client() as c:
        killed = c.cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1, killed
    t0 = time.monotonic()
    assert wait_until(lambda: all(session(s.port, tok).status == 200 for _ in range(8)),
                      timeout=3.0, interval=0.02), "sessions do not verify again"
    assert time.monotonic() - t0 < 1.5
    assert all_ok_for_a_while(s.port, "kira", n=4)
    assert s.alive()


def test_redis_down_at_start_then_up(procs, mock, redis_dir):
    rd = RedisServer(redis_dir / f"late-{time.monotonic_ns()}")
    try:
        s = procs.serve(mock=mock, env=redis_env(rd.url(4), WXLOGIN_STORE_TIMEOUT_MS=300,
                                                 WXLOGIN_THREADS=2))
        r, dt = timed(readyz, s.port, timeout=10)
        assert_store_unavailable(r)
        assert dt < 2.0
        r, dt = timed(login, s.port, new_code("late"), timeout=10)
        assert_store_unavailable(r)
        assert dt < 2.0
        assert s.alive()
        rd.start()
        assert wait_ready(s.port, timeout=6.0), "readyz not 200 once Redis is up"
        assert wait_until(lambda: all_ok_for_a_while(s.port, "late", n=6), timeout=6.0,
                          interval=0.2)
    finally:
        rd.stop()


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------

def cli_env(**extra):
    e = {"WXLOGIN_APPID": DEFAULT_APPID, "WXLOGIN_SECRET": "0123456789abcdef0123456789abcdef",
         "WXLOGIN_LISTEN": f"127.0.0.1:{free_port()}"}
    e.update(extra)
    return base_env(**e)


def test_redis_store_without_master_key_refuses_to_start(redis):
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE=redis.url(1)), timeout=5)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert "master_key" in cp.stderr, cp.stderr
    # same through redis+unix://
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE="redis+unix:///tmp/nowhere.sock?db=1"),
                 timeout=5)
    assert cp.returncode == 2 and "master_key" in cp.stderr, (cp.returncode, cp.stderr)


@pytest.mark.parametrize("url", [
    "redis://",
    "redis:///3",
    "redis://127.0.0.1:6379/abc",
    "redis://127.0.0.1:6379/-1",
    "redis://127.0.0.1:notaport/1",
    "redis+unix://",
    "redis+unix:///",
    "redis+unix:///tmp/r.sock?db=x",
    "rediss://127.0.0.1:6379/0",
    "redis:/127.0.0.1:6379",
])
def test_bad_redis_url_refuses_to_start(url):
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE=url, WXLOGIN_MASTER_KEY=MASTER_KEY),
                 timeout=5)
    assert cp.returncode == 2, (url, cp.returncode, cp.stderr[-2000:])
    assert "store" in cp.stderr, cp.stderr


def test_store_timeout_out_of_range_refuses_to_start(redis):
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE=redis.url(1), WXLOGIN_MASTER_KEY=MASTER_KEY,
                                        WXLOGIN_STORE_TIMEOUT_MS="5"), timeout=5)
    assert cp.returncode == 2 and "store_timeout_ms" in cp.stderr, (cp.returncode, cp.stderr)


PASSWORD = "Pw-7hQz2kLmX9vR4"


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@/1",                        # no host
    f"redis://:{PASSWORD}@127.0.0.1:6379/abc",        # bad db
    f"redis://:{PASSWORD}@127.0.0.1:0/1",             # bad port
    f"redis+unix://:{PASSWORD}@/",                    # no path
])
def test_password_not_in_stderr_on_url_errors(url):
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE=url, WXLOGIN_MASTER_KEY=MASTER_KEY),
                 timeout=5)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert PASSWORD not in cp.stderr + cp.stdout, cp.stderr


def test_password_not_in_stderr_without_master_key():
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/1"
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE=url), timeout=5)
    assert cp.returncode == 2 and "master_key" in cp.stderr, (cp.returncode, cp.stderr)
    assert PASSWORD not in cp.stderr + cp.stdout, cp.stderr


def test_auth_with_password_works(procs, mock, own_redis):
    rd = own_redis(password=PASSWORD)
    s = procs.serve(mock=mock, env=redis_env(rd.url(5)))
    assert wait_ready(s.port), readyz(s.port)
    r = login(s.port, new_code("upam"))
    tok = token_of(r)
    assert session(s.port, tok).status == 200
    with rd.client(5) as c:
        assert c.cmd("EXISTS", session_rkey(tok)) == 1
        assert c.cmd("EXISTS", user_key(r.json()["openid"])) == 1
    assert logout(s.port, tok).status == 204
    assert_invalid_token(session(s.port, tok))


def test_password_with_url_escapes(procs, mock, own_redis):
    raw = "p@ss:w/rd%x#1"
    rd = own_redis(password=raw)
    enc = "p%40ss%3Aw%2Frd%25x%231"
    s = procs.serve(mock=mock, env=redis_env(f"redis://:{enc}@127.0.0.1:{rd.port}/6"))
    assert wait_ready(s.port), readyz(s.port)
    tok = token_of(login(s.port, new_code("esc")))
    assert session(s.port, tok).status == 200


def test_wrong_password_is_503_not_a_crash(procs, mock, own_redis):
    rd = own_redis(password=PASSWORD)
    wrong = "Wrong-" + PASSWORD[::-1]
    s = procs.serve(mock=mock, env=redis_env(rd.url(5, password=wrong),
                                             WXLOGIN_STORE_TIMEOUT_MS=300))
    for _ in range(4):
        r, dt = timed(readyz, s.port, timeout=10)
        assert_store_unavailable(r)
        assert dt < 2.0
    r, dt = timed(login, s.port, new_code("wrongpw"), timeout=10)
    assert_store_unavailable(r)
    assert dt < 2.0
    assert_store_unavailable(session(s.port, "wxl_" + "A" * 43, timeout=10))
    time.sleep(0.5)  # a few reconnect attempts
    assert request(s.port, "GET", "/healthz").status == 200
    assert s.alive()
    # (the start-up line is test_password_never_in_serve_log's business)
    errors = [l for l in s.log_lines() if "wxlogin serving" not in l]
    assert not [l for l in errors if wrong in l], "the Redis password appears in an error line"


def test_no_password_when_redis_wants_one_is_503(procs, mock, own_redis):
    rd = own_redis(password=PASSWORD)
    s = procs.serve(mock=mock, env=redis_env(f"redis://127.0.0.1:{rd.port}/5",
                                             WXLOGIN_STORE_TIMEOUT_MS=300))
    assert_store_unavailable(readyz(s.port, timeout=10))
    assert_store_unavailable(login(s.port, new_code("nopw"), timeout=10))
    assert s.alive()


def test_password_never_in_serve_log(procs, mock, own_redis):
    """Neither at start (the 'serving' line names the store) nor while Redis refuses it nor
    when Redis goes away."""
    rd = own_redis(password=PASSWORD)
    s = procs.serve(mock=mock, env=redis_env(rd.url(7), WXLOGIN_LOG_LEVEL="debug",
                                             WXLOGIN_STORE_TIMEOUT_MS=300))
    assert wait_ready(s.port)
    token_of(login(s.port, new_code("logpw")))
    rd.stop()
    assert_store_unavailable(readyz(s.port, timeout=10))
    rd.start()
    assert wait_ready(s.port)
    log = s.log_text()
    assert "serving" in log, log[-2000:]
    assert PASSWORD not in log, \
        "the Redis password appears in the serve log: " + \
        next(l for l in log.splitlines() if PASSWORD in l)


# --------------------------------------------------------------------------
# redis+unix://
# --------------------------------------------------------------------------

def test_unix_socket_url(procs, mock, own_redis, redis_dir):
    sock = redis_dir / f"r{time.monotonic_ns() % 100000}.sock"
    rd = own_redis(unixsocket=sock)
    assert (sock.stat().st_mode & 0o777) == 0o700
    s = procs.serve(mock=mock, env=redis_env(f"redis+unix://{sock}?db=9"))
    assert wait_ready(s.port, timeout=5.0), readyz(s.port)
    r = login(s.port, new_code("usock"))
    tok = token_of(r)
    assert session(s.port, tok).status == 200
    with RespClient(unix=str(sock), db=9) as c:
        assert user_session_keys(c) == sorted([user_key(r.json()["openid"]), session_rkey(tok)])
    with RespClient(unix=str(sock)) as c:
        assert keys(c) == [], "db=9 was not selected"
    assert logout(s.port, tok).status == 204
    assert_invalid_token(session(s.port, tok))

    # without ?db: db 0
    s0 = procs.serve(mock=mock, env=redis_env(f"redis+unix://{sock}"))
    tok0 = token_of(login(s0.port, new_code("usock")))
    with RespClient(unix=str(sock)) as c:
        assert c.cmd("EXISTS", session_rkey(tok0)) == 1
    assert session(s0.port, tok0).status == 200


def test_unix_socket_missing_is_503(procs, mock, redis_dir):
    s = procs.serve(mock=mock, env=redis_env(f"redis+unix://{redis_dir}/absent.sock",
                                             WXLOGIN_STORE_TIMEOUT_MS=300))
    assert_store_unavailable(readyz(s.port, timeout=10))
    assert_store_unavailable(login(s.port, new_code("nosock"), timeout=10))
    assert s.alive()


def test_scripts_run_by_sha_and_survive_a_script_flush(srv, mock, redis, db):
    """The Lua scripts cross the network once per connection (EVALSHA, loaded by SCRIPT LOAD),
    and when Redis forgets them (SCRIPT FLUSH) the next request still succeeds: the NOSCRIPT
    answer reloads them and the command is sent once more."""
    with redis.client(db) as c:
        c.cmd("CONFIG", "RESETSTAT")
    tok = token_of(login(srv.port, new_code("ufaith")))
    assert session(srv.port, tok).status == 200
    with redis.client(db) as c:
        stats = c.cmd("INFO", "commandstats").decode()
        assert "cmdstat_evalsha:" in stats, stats
        assert "cmdstat_eval:" not in stats, stats
        c.cmd("SCRIPT", "FLUSH")
    for _ in range(3):  # every worker's connection meets the flush
        assert session(srv.port, tok).status == 200
    tok2 = token_of(login(srv.port, new_code("ufaith2")))
    assert session(srv.port, tok2).status == 200
    with redis.client(db) as c:
        stats = c.cmd("INFO", "commandstats").decode()
        assert "cmdstat_eval:" not in stats, stats


def _script_loads(c):
    """SCRIPT LOAD calls so far (Redis 7 counts subcommands as cmdstat_script|load)."""
    for line in c.cmd("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_script|load:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def test_a_script_flush_reloads_the_scripts_once_per_connection(procs, mock, redis, db):
    """Requests in flight when Redis forgets the scripts all meet NOSCRIPT; the scripts are
    loaded again once per connection, not once per request."""
    threads = 2
    srv = procs.serve(mock=mock, env=redis_env(redis.url(db), WXLOGIN_THREADS=str(threads)))
    tok = token_of(login(srv.port, new_code("uflood")))
    for _ in range(4):
        assert session(srv.port, tok).status == 200
    n = 64
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(n)]
    try:
        with redis.client(db) as c:
            c.cmd("SCRIPT", "FLUSH")
            before = _script_loads(c)
        # all sent before any is answered, so each worker has many commands in flight
        req = (f"GET /v1/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
               "Connection: close\r\n\r\n").encode()
        for s in socks:
            s.sendall(req)
        statuses = []
        for s in socks:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            statuses.append(int(data.split(b" ", 2)[1]))
    finally:
        for s in socks:
            s.close()
    assert statuses == [200] * n
    with redis.client(db) as c:
        loads = _script_loads(c) - before
    # one reload per worker connection at most (9 scripts each: the store's 7, issue 11's look-up
    # of a token in every app, and the rate limits' one), whatever the requests in flight
    assert 0 < loads <= 9 * threads, loads
