"""Redis credentials and why the store fails (issue 10, "Logs").

`redis://user:password@host` sends the ACL user name (`AUTH user password`); a failing store
says why in one `warn` line per change of state ("store failing", with `reason`: WRONGPASS,
NOAUTH, ECONNREFUSED, OOM...) and one `info` line when it is back ("store recovered"), never
once per request and never with the password. Each test starts its own redis-server
(test_redis.py's RedisServer), with `requirepass` or an ACL user.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import SANITIZED, login, new_code, request, run_cli, wait_until
from test_redis import (MASTER_KEY, REDIS_SERVER, RedisServer, RespClient,
                        assert_store_unavailable, cli_env, readyz, redis_env, session,
                        session_rkey, token_of, wait_ready)

PASSWORD = "Pw-9dKq2LmZx7Rt4"
ALICE_PW = "Al1ce-Pw-6gHj3Nb8"


class AclRedis(RedisServer):
    """A redis-server whose default user is off: only alice (full rights) gets in."""

    def __init__(self, workdir, user="alice", password=ALICE_PW, rules="~* +@all"):
        super().__init__(workdir)
        self.user, self.user_pw, self.rules = user, password, rules

    def argv(self):
        return super().argv() + ["--user", self.user, "on", f">{self.user_pw}",
                                 *self.rules.split(), "--user", "default", "off"]

    def client(self, db=0):
        c = RespClient(port=self.port)
        c.cmd("AUTH", self.user, self.user_pw)
        if db:
            c.cmd("SELECT", db)
        return c

    def ping(self):
        try:
            with self.client() as c:
                return c.cmd("PING") == b"PONG"
        except Exception:
            return False

    def acl_url(self, db, user=None, password=None):
        return f"redis://{user or self.user}:{password or self.user_pw}@127.0.0.1:{self.port}/{db}"


@pytest.fixture
def rdir():
    d = tempfile.mkdtemp(prefix="wxl-rauth-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def servers(rdir):
    if not os.path.exists(REDIS_SERVER):
        pytest.fail(f"{REDIS_SERVER} not found: run scripts/install-deps.sh", pytrace=False)
    started = []

    def make(cls=RedisServer, **kw):
        r = cls(rdir / f"r{len(started)}", **kw)
        started.append(r)
        return r.start()

    yield make
    for r in started:
        r.stop()


def store_lines(proc, msg):
    return proc.json_lines(lambda d: d.get("msg") == msg)


# Each Redis command's deadline: short, so a stopped Redis is seen quickly, yet never so short
# that a slow (sanitizer) build under the suite's parallel load times out a command Redis does
# answer: that would be a second reason (ETIMEDOUT) before the one a test provokes.
STORE_TIMEOUT_MS = 2000 if SANITIZED else 500


def failing(proc):
    return store_lines(proc, "store failing")


def recovered(proc):
    return store_lines(proc, "store recovered")


def assert_no_password(proc, *passwords):
    log = proc.log_text()
    for pw in passwords:
        assert pw not in log, "a Redis password reached the log: " + \
            next(l for l in log.splitlines() if pw in l)


def test_acl_user_name_is_sent(procs, mock, servers):
    """redis://alice:pw@ authenticates as alice: with the default user off, AUTH with the
    password alone is refused (WRONGPASS), so a served login proves the name was sent."""
    rd = servers(AclRedis)
    with RespClient(port=rd.port) as c:  # the password alone does not get in
        with pytest.raises(Exception, match="WRONGPASS"):
            c.cmd("AUTH", ALICE_PW)
    s = procs.serve(mock=mock, env=redis_env(rd.acl_url(3), WXLOGIN_LOG_FORMAT="json",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    assert wait_ready(s.port), readyz(s.port)
    tok = token_of(request(s.port, "POST", "/v1/login", body=json.dumps(
        {"code": new_code("acl")}), headers={"Content-Type": "application/json"}))
    assert session(s.port, tok).status == 200
    with rd.client(3) as c:
        assert c.cmd("EXISTS", session_rkey(tok)) == 1
        who = c.cmd("CLIENT", "LIST")
    assert b"user=alice" in who and b"user=default" not in who, who
    assert not failing(s), failing(s)
    s.stop()
    assert_no_password(s, ALICE_PW)


def test_user_without_password_refuses_to_start():
    cp = run_cli(["serve"], env=cli_env(WXLOGIN_STORE="redis://alice@127.0.0.1:6379/1",
                                        WXLOGIN_MASTER_KEY=MASTER_KEY), timeout=5)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert "user name needs its password" in cp.stderr, cp.stderr


def burst(port, n=4):
    """Requests that need the store, all refused: readiness checks and logins."""
    for i in range(n):
        assert_store_unavailable(readyz(port, timeout=10))
        assert_store_unavailable(login(port, new_code(f"burst{i}"), timeout=10))


def test_wrong_password_logged_once_then_recovery_once(procs, mock, servers):
    """WRONGPASS: one warn line for 2 workers, many requests and reconnect attempts; once Redis
    takes that password (CONFIG SET requirepass), one "store recovered"."""
    rd = servers(password=PASSWORD)
    wrong = "Wr0ng-" + PASSWORD[::-1]
    s = procs.serve(mock=mock, env=redis_env(rd.url(4, password=wrong), WXLOGIN_THREADS=2,
                                             WXLOGIN_LOG_FORMAT="json",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    burst(s.port)
    time.sleep(1.0)  # reconnect attempts of both workers (100 ms doubling)
    burst(s.port)
    [f] = failing(s)
    assert f["level"] == "warn" and f["reason"] == "WRONGPASS", f
    assert f["detail"].startswith("WRONGPASS"), f
    assert "password" in f["hint"], f
    assert f["store"] == f"redis://***@127.0.0.1:{rd.port}/4", f
    assert not recovered(s)

    with rd.client() as c:
        c.cmd("CONFIG", "SET", "requirepass", wrong)
    assert wait_ready(s.port), readyz(s.port)
    assert login(s.port, new_code("back")).status == 200
    s.wait_log(lambda t: "store recovered" in t)
    time.sleep(2.5)  # both workers are back (the reconnect backoff is at most 2 s)
    for _ in range(4):
        assert readyz(s.port).status == 200
    [r] = recovered(s)
    assert r["level"] == "info" and r["after"] == "WRONGPASS", r
    assert isinstance(r["failing_ms"], int) and r["failing_ms"] >= 1000, r
    assert len(failing(s)) == 1, failing(s)
    s.stop()
    assert_no_password(s, PASSWORD, wrong)


def test_no_password_logs_noauth(procs, mock, servers):
    rd = servers(password=PASSWORD)
    s = procs.serve(mock=mock, env=redis_env(f"redis://127.0.0.1:{rd.port}/4",
                                             WXLOGIN_LOG_FORMAT="text",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    burst(s.port, 3)
    s.wait_log(lambda t: "store failing" in t)
    lines = [l for l in s.log_lines() if "store failing" in l]
    assert len(lines) == 1, lines
    assert " warn " in lines[0] and " reason=NOAUTH " in lines[0], lines


def test_stopped_redis_logs_the_refusal_once_and_recovery_once(procs, mock, servers):
    rd = servers()
    s = procs.serve(mock=mock, env=redis_env(rd.url(2), WXLOGIN_THREADS=2,
                                             WXLOGIN_LOG_FORMAT="json",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    assert wait_ready(s.port)
    assert login(s.port, new_code("up")).status == 200
    rd.stop()
    burst(s.port)
    time.sleep(1.5)
    burst(s.port)
    lines = failing(s)
    assert [d["reason"] for d in lines] == ["ECONNREFUSED"], lines
    assert "Connection refused" in lines[0]["detail"] and "running" in lines[0]["hint"], lines
    assert not recovered(s)
    rd.start()
    assert wait_ready(s.port)
    time.sleep(2.5)  # both workers reconnected
    assert login(s.port, new_code("again")).status == 200
    [r] = recovered(s)
    assert r["after"] == "ECONNREFUSED", r
    assert len(failing(s)) == 1


def test_unresolvable_host_logs_why(procs, mock):
    s = procs.serve(mock=mock, env=redis_env("redis://no-such-host.invalid:6379/1",
                                             WXLOGIN_LOG_FORMAT="json",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    assert_store_unavailable(readyz(s.port, timeout=10))
    s.wait_log(lambda t: "store failing" in t)
    [f] = failing(s)
    assert f["reason"].startswith("EAI_"), f


def test_error_replies_logged_once_while_reads_still_work(procs, mock, servers):
    """OOM (maxmemory reached): writes fail, reads succeed; the store is failing once, without
    flapping at every successful read, and recovers when a write succeeds again."""
    rd = servers()
    s = procs.serve(mock=mock, env=redis_env(rd.url(5), WXLOGIN_THREADS=1,
                                             WXLOGIN_LOG_FORMAT="json",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    assert wait_ready(s.port)
    tok = token_of(request(s.port, "POST", "/v1/login", body=json.dumps(
        {"code": new_code("oom")}), headers={"Content-Type": "application/json"}))
    with rd.client() as c:
        c.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
        c.cmd("CONFIG", "SET", "maxmemory", "1")
    for i in range(3):
        assert_store_unavailable(login(s.port, new_code(f"oom{i}")))
        assert session(s.port, tok).status == 200
        assert readyz(s.port).status == 200
    [f] = failing(s)
    assert f["reason"] == "OOM" and "maxmemory" in f["hint"], f
    assert not recovered(s)
    with rd.client() as c:
        c.cmd("CONFIG", "SET", "maxmemory", "0")
    assert login(s.port, new_code("fine")).status == 200
    s.wait_log(lambda t: "store recovered" in t)
    [r] = recovered(s)
    assert r["after"] == "OOM", r
    assert len(failing(s)) == 1


def test_acl_permission_refused_logs_noperm(procs, mock, servers):
    """An ACL user without EVALSHA: Redis answers NOPERM to every script; said once."""
    rd = servers(AclRedis, user="bob", password="B0b-Pw-4xYz8Qw", rules="~* +@all -evalsha")
    s = procs.serve(mock=mock, env=redis_env(rd.acl_url(6), WXLOGIN_THREADS=1,
                                             WXLOGIN_LOG_FORMAT="json",
                                             WXLOGIN_STORE_TIMEOUT_MS=STORE_TIMEOUT_MS))
    assert wait_ready(s.port)
    for i in range(3):
        assert_store_unavailable(login(s.port, new_code(f"perm{i}")))
    [f] = failing(s)
    assert f["reason"] == "NOPERM" and "evalsha" in f["detail"].lower(), f
    with rd.client() as c:
        c.cmd("ACL", "SETUSER", "bob", "+evalsha")
    assert wait_until(lambda: login(s.port, new_code("perm-ok")).status == 200, timeout=5)
    s.wait_log(lambda t: "store recovered" in t)
    assert [r["after"] for r in recovered(s)] == ["NOPERM"]
    s.stop()
    assert_no_password(s, "B0b-Pw-4xYz8Qw")
