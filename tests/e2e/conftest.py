"""Shared fixtures and helpers for the wxlogin end-to-end suite.

Everything here talks to processes started from the real binaries over
127.0.0.1 only: ``WXLOGIN_BIN`` (default ``<repo>/build/wxlogin``) and the mock
WeChat, ``WXLOGIN_MOCK_BIN`` (default: ``wxlogin-mock`` beside ``WXLOGIN_BIN``).

Process stderr goes to one file per process (``<tmp>/<name>.log``); at
teardown a process whose stderr holds a sanitizer report fails the test.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

# The process machinery lives in tests/harness (shared with bench/run.py); this file re-exports
# what the tests import from it, so `from conftest import ...` keeps working.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness import (BIN, DEFAULT_APPID, DEFAULT_SECRET, MOCK_BIN, READY_TIMEOUT,  # noqa: E402,F401
                     REPO, SANITIZED, SANITIZER_MARKERS, MockProc, Proc, ProcessGroup,
                     RedisServer, Resp, ServeProc, base_env, free_port, request,
                     sanitizer_report, wait_until)
from harness.web import http_ok as _http_ok  # noqa: E402

# The suite runs once per build flavour (normal, ASan+UBSan, TSan). Tests of what does not
# depend on the flavour (packages, documents, the unit file) run in the normal pass only:
# decorate them with @normal_build_only. (SANITIZED: harness/wxlogin.py.)
normal_build_only = pytest.mark.skipif(SANITIZED, reason="checked in the normal build's pass")


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

def closed_port():
    """A port nothing listens on (best effort: just freed)."""
    return free_port()


def new_code(user="alice", *directives, app=None):
    """A fresh single-use mock code: ``dir1_dir2_user-<nonce>``.

    app: the appid the code is issued to (``<appid>_dir1_..._user-<nonce>``); None gives a
    code of the mock's first app, as a real code belongs to the app that called wx.login.
    """
    nonce = uuid.uuid4().hex[:16]
    return "_".join(([app] if app else []) + list(directives) + [f"{user}-{nonce}"])


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------

def post_json(port, path, obj, headers=None, timeout=15.0):
    """POST obj as JSON (bytes/str are sent verbatim)."""
    if isinstance(obj, (bytes, str)):
        body = obj
    else:
        body = json.dumps(obj)
    h = {"Content-Type": "application/json"}
    if headers is not None:
        h = headers
    return request(port, "POST", path, body=body, headers=h, timeout=timeout)


def login(port, code, timeout=15.0):
    return post_json(port, "/openid", {"code": code}, timeout=timeout)


ABSENT = object()


def assert_json_ct(resp):
    ct = resp.headers.get("content-type", "")
    assert ct.split(";")[0].strip().lower() == "application/json", \
        f"Content-Type {ct!r} is not application/json: {resp}"


def assert_ok(resp, unionid=False):
    """A successful /openid answer: 200 JSON with openid (and unionid iff expected)."""
    assert resp.status == 200, f"expected 200, got {resp}"
    assert_json_ct(resp)
    body = resp.json()
    assert isinstance(body, dict), resp
    expected_keys = {"openid", "unionid"} if unionid else {"openid"}
    assert set(body) == expected_keys, f"unexpected keys {sorted(body)}: {resp}"
    assert isinstance(body["openid"], str) and body["openid"], resp
    if unionid:
        assert isinstance(body["unionid"], str) and body["unionid"], resp
    return body


def assert_error(resp, status, error, action, wx_errcode=ABSENT):
    """An error answer: status, JSON {error, message, action[, wx_errcode]}.

    wx_errcode=ABSENT asserts the key is absent; an int asserts its value.
    """
    assert resp.status == status, f"expected {status} {error}, got {resp}"
    assert_json_ct(resp)
    body = resp.json()
    assert isinstance(body, dict), resp
    allowed = {"error", "message", "action", "wx_errcode"}
    assert set(body) <= allowed, f"unexpected keys {sorted(set(body) - allowed)}: {resp}"
    assert body.get("error") == error, f"expected error {error!r}: {resp}"
    assert body.get("action") == action, f"expected action {action!r}: {resp}"
    assert isinstance(body.get("message"), str) and body["message"], \
        f"message must be a non-empty string: {resp}"
    if wx_errcode is ABSENT:
        assert "wx_errcode" not in body, f"wx_errcode must be absent: {resp}"
    else:
        assert "wx_errcode" in body, f"wx_errcode {wx_errcode} missing: {resp}"
        assert body["wx_errcode"] == wx_errcode and type(body["wx_errcode"]) is int, \
            f"expected wx_errcode {wx_errcode}: {resp}"
    return body


# --------------------------------------------------------------------------
# raw-socket helpers
# --------------------------------------------------------------------------

class HTTPReader:
    """Reads successive HTTP/1.x responses from one socket (keeps bytes that
    belong to the next response, so pipelined answers are not lost)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _more(self, deadline):
        if self.eof:
            return False
        if time.monotonic() > deadline:
            raise socket.timeout("HTTPReader deadline")
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, timeout=5.0):
        """(status, headers, body), or None if the peer closed/reset before a status
        line. Tolerates resets after a complete header block."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while b"\r\n\r\n" not in self.buf:
                if not self._more(deadline):
                    break
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
        if b"\r\n\r\n" not in self.buf:
            if self.buf.startswith(b"HTTP/"):
                try:
                    return int(self.buf.split(b" ", 2)[1]), {}, b""
                except (ValueError, IndexError):
                    return None
            return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (ValueError, IndexError):
            return None
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                k, v = line.split(b":", 1)
                headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        try:
            if "content-length" in headers:
                n = int(headers["content-length"])
                while len(self.buf) < n and self._more(deadline):
                    pass
                body, self.buf = self.buf[:n], self.buf[n:]
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while b"0\r\n\r\n" not in self.buf and self._more(deadline):
                    pass
                raw, _, self.buf = self.buf.partition(b"0\r\n\r\n")
                body = b""
                while raw:
                    size_line, _, raw = raw.partition(b"\r\n")
                    size = int(size_line.split(b";")[0], 16)
                    body += raw[:size]
                    raw = raw[size + 2:]
            else:
                while self._more(deadline):
                    pass
                body, self.buf = self.buf, b""
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            body, self.buf = self.buf, b""
        return status, headers, body


def read_http_response(sock, timeout=5.0):
    """Read one HTTP/1.x response from sock (see HTTPReader.read_response)."""
    return HTTPReader(sock).read_response(timeout)


def raw_exchange(port, data, timeout=5.0, read=True, half_close=False):
    """Connect, send raw bytes (ignoring send errors), optionally read one response.

    half_close: shut down our sending side after the data, so a server waiting
    for more bytes sees EOF instead of keeping us waiting for `timeout`.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        if not read:
            return None
        try:
            return read_http_response(s, timeout=timeout)
        except (socket.timeout, ConnectionResetError):
            return None
    finally:
        s.close()


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

def _ready(port, path):
    return _http_ok(port, path)


def _finish(group):
    problems = group.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def run_cli(args, env=None, timeout=15.0, cwd=None):
    if cwd is None:
        with tempfile.TemporaryDirectory(prefix="wxlogin-cli-") as d:
            return _run_cli(args, env, timeout, d)
    return _run_cli(args, env, timeout, cwd)


def _run_cli(args, env, timeout, cwd):
    """Run wxlogin to completion. Returns CompletedProcess (text). Fails on sanitizer output.

    A process still running after `timeout` is killed and the test fails (used
    for commands that are expected to exit by themselves, e.g. on a config error).
    """
    e = env if env is not None else base_env()
    try:
        cp = subprocess.run([BIN] + list(args), env=e, cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as ex:
        out = (ex.stderr or b"").decode("utf-8", "replace")
        pytest.fail(f"wxlogin {' '.join(args)} did not exit within {timeout}s; stderr:\n{out[-3000:]}",
                    pytrace=False)
    out = cp.stdout.decode("utf-8", "replace")
    err = cp.stderr.decode("utf-8", "replace")
    rep = sanitizer_report(err) or sanitizer_report(out)
    if rep:
        pytest.fail(f"sanitizer report from wxlogin {' '.join(args)}:\n{rep}", pytrace=False)
    return subprocess.CompletedProcess(cp.args, cp.returncode, out, err)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not os.path.exists(BIN):
        pytest.exit(f"wxlogin binary not found at {BIN} (set WXLOGIN_BIN or run make)", returncode=1)
    if not os.path.exists(MOCK_BIN):
        pytest.exit(f"wxlogin-mock not found at {MOCK_BIN} (set WXLOGIN_MOCK_BIN or run make)",
                    returncode=1)


@pytest.fixture(scope="session")
def session_procs(tmp_path_factory):
    g = ProcessGroup(tmp_path_factory.mktemp("session-procs"))
    yield g
    _finish(g)


@pytest.fixture(scope="session")
def mock(session_procs):
    """The shared mock with the default app. Tests run sequentially, so deltas of
    its /mock/stats counters around one request are exact."""
    return session_procs.mock()


@pytest.fixture(scope="module")
def module_procs(tmp_path_factory, request):
    g = ProcessGroup(tmp_path_factory.mktemp(f"module-{request.module.__name__}"))
    yield g
    _finish(g)


@pytest.fixture(scope="module")
def serve(module_procs, mock):
    """A serve against the shared mock with explicit retries=2 and a 3 s timeout."""
    return module_procs.serve(mock=mock, env={
        "WXLOGIN_UPSTREAM_RETRIES": "2",
        "WXLOGIN_UPSTREAM_TIMEOUT_MS": "3000",
    })


@pytest.fixture
def procs(tmp_path):
    """Factory for per-test processes: procs.mock(...), procs.serve(...)."""
    g = ProcessGroup(tmp_path)
    yield g
    _finish(g)


@pytest.fixture
def mock_factory(procs):
    return procs.mock


@pytest.fixture
def serve_factory(procs):
    return procs.serve


def in_parallel(fns):
    """Runs the callables at once (a barrier releases them together); returns their results."""
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        results[i] = fns[i]()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    return results


class Counter:
    """Counts upstream requests at a mock around a block of code.

        with Counter(mock) as c:
            ...
        c.assert_delta(2)
    """

    def __init__(self, mock):
        self.mock = mock

    def __enter__(self):
        self.before = self.mock.requests()
        return self

    def __exit__(self, *exc):
        return False

    def delta(self):
        return self.mock.requests() - self.before

    def assert_delta(self, expected, settle=0.15, timeout=10.0):
        # The mock counts a request when it arrives. Wait for the expected count (a loaded
        # machine may be slow to get there: no fixed sleep decides it), failing as soon as it
        # is passed; then hold it for `settle` seconds, watching, so a late (wrong) retry shows
        # up as one more instead of passing early (the first retry's backoff is 50-100 ms).
        deadline = time.monotonic() + timeout
        while True:
            got = self.delta()
            assert got <= expected, f"expected exactly {expected} upstream request(s), mock saw {got}"
            if got == expected:
                break
            assert time.monotonic() < deadline, (
                f"expected {expected} upstream request(s), mock saw {got} after {timeout} s"
            )
            time.sleep(0.01)
        settled = time.monotonic() + settle
        while time.monotonic() < settled:
            time.sleep(0.02)
            got = self.delta()
            assert got == expected, (
                f"expected exactly {expected} upstream request(s), mock saw {got} (one came late)"
            )


# --------------------------------------------------------------------------
# stores: one test, run once per backend
# --------------------------------------------------------------------------

STORES = ("sqlite", "redis")
# Redis stores need a master key (SQLite ones make theirs beside the database).
STORE_MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
_STORE_REDIS_DBS = 1024


class StoreURL(str):
    """A WXLOGIN_STORE value (the string itself) with what a test needs beside it:
    kind ("sqlite" or "redis"), env(**extra) for serve, and for Redis client() to inspect its
    db (a RespClient on the right db; close it, or use it in a with block)."""

    def __new__(cls, url, kind, redis=None, db=None):
        s = super().__new__(cls, url)
        s.kind, s.redis, s.db = kind, redis, db
        return s

    def env(self, **extra):
        e = {"WXLOGIN_STORE": str(self)}
        if self.kind == "redis":
            e["WXLOGIN_MASTER_KEY"] = STORE_MASTER_KEY
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def client(self):
        assert self.kind == "redis", "client() is for Redis stores"
        return self.redis.client(self.db)


@pytest.fixture(scope="session")
def store_redis():
    """The redis-server behind the `store` fixture's Redis runs, started on first use."""
    d = tempfile.mkdtemp(prefix="wxl-store-")
    r = RedisServer(Path(d), databases=_STORE_REDIS_DBS).start()
    r.next_db = 0
    yield r
    r.stop()
    shutil.rmtree(d, ignore_errors=True)


def make_store(kind, req, directory):
    """A fresh, empty store of kind: a SQLite file in directory, or the next db (flushed) of the
    session's redis-server. req: the fixture's `request`."""
    if kind == "sqlite":
        return StoreURL(f"sqlite:{directory}/wx.db", kind)
    r = req.getfixturevalue("store_redis")
    r.next_db += 1
    n = r.next_db % _STORE_REDIS_DBS
    with r.client(n) as c:
        c.cmd("FLUSHDB")
    return StoreURL(r.url(n), kind, r, n)


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    """A fresh store URL, once per backend (sqlite, redis): serve(env=store.env())."""
    return make_store(request.param, request, tmp_path)


@pytest.fixture(scope="module", params=STORES)
def module_store(request, tmp_path_factory):
    """As `store`, shared by a module's tests (e.g. one serve per backend for a table)."""
    return make_store(request.param, request, tmp_path_factory.mktemp("store"))
