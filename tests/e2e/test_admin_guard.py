"""The admin routes' guard against guessing (docs/api.md, "Admin routes"): after
admin_max_failures (5) failed attempts from one client address within admin_lockout_s (60 s),
that address is answered 429 too_many_attempts with Retry-After, without its token being looked
at (the right token too), until admin_lockout_s has passed. Other addresses are not affected, a
success resets nothing, and the warn lines come once per address and window, not per guess."""

import http.client
import json
import secrets
import socket
import threading
import time

import pytest

from conftest import request

# from `openssl rand -hex 32`
ADMIN = "b255bc3b62ba2ab3f795b244acd9e7e80d4ea7e6fbd615d9bd4fc347ec2b935d"
TOKEN_PATH = "/admin/v1/access-token"
REFRESH_PATH = "/admin/v1/access-token/refresh"
WINDOW_S = 3


class Client:
    """One keep-alive connection from a chosen loopback source address."""

    def __init__(self, port, source="127.0.0.1"):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15,
                                               source_address=(source, 0))

    def admin(self, token, path=TOKEN_PATH, method="GET"):
        h = {} if token is None else {"Authorization": f"Bearer {token}"}
        self.conn.request(method, path, headers=h)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body

    def close(self):
        self.conn.close()


def loopback_alias_works(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((addr, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def guard_serve(procs, **env):
    m = procs.mock()
    e = {"WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_THREADS": "2"}
    e.update(env)
    return procs.serve(mock=m, env=e)


def assert_unauthorized(resp):
    status, headers, body = resp
    assert status == 401, resp
    assert json.loads(body)["error"] == "unauthorized", resp


def assert_locked_out(resp, window_s):
    """429 too_many_attempts, action retry, Retry-After in whole seconds within the window."""
    status, headers, body = resp
    assert status == 429, resp
    b = json.loads(body)
    assert set(b) == {"error", "message", "action"}, b
    assert b["error"] == "too_many_attempts" and b["action"] == "retry", b
    assert isinstance(b["message"], str) and b["message"], b
    ra = headers.get("retry-after")
    assert ra is not None and ra.isdigit(), resp
    assert 1 <= int(ra) <= window_s, resp
    assert b"access_token" not in body
    return int(ra)


def assert_token(resp):
    status, headers, body = resp
    assert status == 200, resp
    assert json.loads(body)["access_token"], resp


def warn_lines(s):
    out = []
    for line in s.log_lines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("level") == "warn":
            out.append(d)
    return out


def test_guessing_is_capped_then_the_window_passes(procs):
    s = guard_serve(procs, WXLOGIN_ADMIN_LOCKOUT_S=str(WINDOW_S))
    c = Client(s.port)
    guesses = [secrets.token_hex(32) for _ in range(20)]
    answers = [c.admin(g) for g in guesses]
    for r in answers[:5]:
        assert_unauthorized(r)
    for r in answers[5:]:
        assert_locked_out(r, WINDOW_S)
    # locked out: the right token is not even looked at, on either route
    assert_locked_out(c.admin(ADMIN), WINDOW_S)
    retry = assert_locked_out(c.admin(ADMIN, REFRESH_PATH, "POST"), WINDOW_S)
    # other routes are not affected
    assert request(s.port, "GET", "/healthz").status == 200
    time.sleep(retry + 0.3)
    assert_token(c.admin(ADMIN))
    # a new window: 5 more failures allowed
    for _ in range(5):
        assert_unauthorized(c.admin(secrets.token_hex(32)))
    assert_locked_out(c.admin(ADMIN), WINDOW_S)
    c.close()

    assert s.stop() == 0
    warns = [w for w in warn_lines(s) if "admin" in w.get("msg", "")]
    # 2 windows of guessing: the first failure and the lockout of each, not one per guess
    assert len(warns) == 4, warns
    assert all(w.get("peer") == "127.0.0.1" for w in warns), warns
    assert sum("locked out" in w["msg"] for w in warns) == 2, warns
    log = s.log_text()
    assert ADMIN not in log
    for g in guesses:
        assert g not in log, "a guessed token was logged"


def test_default_lockout_is_60_seconds(procs):
    s = guard_serve(procs)
    c = Client(s.port)
    for i in range(5):
        assert_unauthorized(c.admin(None if i == 0 else "x" * i))  # a missing token counts too
    ra = assert_locked_out(c.admin(ADMIN), 60)
    assert ra >= 58, ra
    c.close()


def test_lockout_is_per_address(procs):
    for a in ("127.0.0.2", "127.0.0.3"):
        if not loopback_alias_works(a):
            pytest.skip(f"cannot bind {a}")
    s = guard_serve(procs, WXLOGIN_ADMIN_LOCKOUT_S="30")
    attacker, other = Client(s.port, "127.0.0.2"), Client(s.port, "127.0.0.3")
    for _ in range(5):
        assert_unauthorized(attacker.admin(secrets.token_hex(32)))
    assert_locked_out(attacker.admin(ADMIN), 30)
    # another address is unaffected, and its success does not free the locked one
    assert_token(other.admin(ADMIN))
    assert_unauthorized(other.admin("wrong"))
    assert_token(other.admin(ADMIN, REFRESH_PATH, "POST"))
    assert_locked_out(attacker.admin(ADMIN), 30)
    # nor does a success from 127.0.0.1
    assert request(s.port, "GET", TOKEN_PATH,
                   headers={"Authorization": f"Bearer {ADMIN}"}).status == 200
    assert_locked_out(attacker.admin(ADMIN), 30)
    attacker.close()
    other.close()
    assert s.stop() == 0
    warns = [w for w in warn_lines(s) if "admin" in w.get("msg", "")]
    assert [w.get("peer") for w in warns] == ["127.0.0.2", "127.0.0.2", "127.0.0.3"], warns


def test_a_success_does_not_clear_failures(procs):
    """Failures age out with their window only: a guesser behind the same proxy as a real client
    must not have its count cleared by the client's success."""
    s = guard_serve(procs, WXLOGIN_ADMIN_LOCKOUT_S="30")
    c = Client(s.port)
    for _ in range(4):
        assert_unauthorized(c.admin("wrong"))
    assert_token(c.admin(ADMIN))
    assert_unauthorized(c.admin("wrong"))  # the 5th failure
    assert_locked_out(c.admin(ADMIN), 30)
    c.close()


def test_concurrent_guesses_are_capped(procs):
    """40 guesses at once from one address on several worker threads: exactly 5 are checked."""
    s = guard_serve(procs, WXLOGIN_ADMIN_LOCKOUT_S="30", WXLOGIN_THREADS="4")
    n = 40
    barrier = threading.Barrier(n)
    out = [None] * n

    def guess(i):
        c = Client(s.port)
        barrier.wait()
        out[i] = c.admin(secrets.token_hex(32))
        c.close()

    ts = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    statuses = sorted(r[0] for r in out)
    assert statuses == [401] * 5 + [429] * (n - 5), statuses
