"""Shared fixtures and helpers for the wxlogin end-to-end suite.

Everything here talks to processes started from the real binaries over
127.0.0.1 only: ``WXLOGIN_BIN`` (default ``<repo>/build/wxlogin``) and the mock
WeChat, ``WXLOGIN_MOCK_BIN`` (default: ``wxlogin-mock`` beside ``WXLOGIN_BIN``).

Process stderr goes to one file per process (``<tmp>/<name>.log``); at
teardown a process whose stderr holds a sanitizer report fails the test.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("WXLOGIN_BIN", str(REPO / "build" / "wxlogin"))
MOCK_BIN = os.environ.get("WXLOGIN_MOCK_BIN", str(Path(BIN).parent / "wxlogin-mock"))

DEFAULT_APPID = "wx1234567890abcdef"
DEFAULT_SECRET = "0123456789abcdef0123456789abcdef"

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "WARNING: ThreadSanitizer", "ThreadSanitizer:")

READY_TIMEOUT = 10.0

# The suite runs once per build flavour (normal, ASan+UBSan, TSan). Tests of what does not
# depend on the flavour (packages, documents, the unit file) run in the normal pass only:
# decorate them with @normal_build_only.
SANITIZED = bool(os.environ.get("WXLOGIN_TSAN")) or any(
    f in Path(BIN).resolve().parent.name for f in ("asan", "tsan"))
normal_build_only = pytest.mark.skipif(SANITIZED, reason="checked in the normal build's pass")


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


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


def base_env(**overrides):
    """The caller's environment without any WXLOGIN_* variable, plus overrides.

    Values of None in overrides remove the variable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXLOGIN_")}
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def sanitizer_report(text):
    """Return an excerpt around the first sanitizer marker in text, or None."""
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            return text[max(0, i - 200): i + 3000]
    return None


def wait_until(pred, timeout=5.0, interval=0.02):
    """Poll pred() until it returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------

class Resp(NamedTuple):
    status: int
    headers: dict  # lower-cased header names
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def request(port, method, path, body=None, headers=None, timeout=15.0):
    """One request on its own connection. Returns Resp(status, headers, body).

    Every response body is checked for the string "session_key": wxlogin must
    never hand the session key (or even its name) to a client.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode("utf-8")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        resp = Resp(r.status, hdrs, data)
    finally:
        conn.close()
    assert b"session_key" not in resp.body, f"session_key leaked in response: {resp}"
    return resp


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

class Proc:
    """A started wxlogin process with stderr (and stdout) captured to a file."""

    def __init__(self, name, argv, env, log_path, port):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(log_path)
        self.port = port
        self._log = open(self.log_path, "wb")
        # its own working directory: serve keeps files (e.g. a default sqlite store)
        # relative to it, and they must not land in the repository
        self.cwd = self.log_path.with_suffix(".cwd")
        self.cwd.mkdir(exist_ok=True)
        self.popen = subprocess.Popen(
            argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=self._log, start_new_session=True)
        self.returncode = None
        self.stop_signal_needed_kill = False

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return [l for l in self.log_text().splitlines() if l.strip()]

    def json_lines(self, pred=lambda d: True):
        """The log lines that are JSON objects and satisfy pred, parsed."""
        out = []
        for line in self.log_lines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and pred(d):
                out.append(d)
        return out

    def wait_log(self, pred, timeout=5.0):
        """Poll the log until pred(text) is truthy; return the text."""
        text = wait_until(lambda: (lambda t: t if pred(t) else None)(self.log_text()),
                          timeout=timeout)
        return text or self.log_text()

    def terminate(self):
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout=10.0):
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop_signal_needed_kill = True
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.returncode = self.popen.returncode
        try:
            self._log.close()
        except Exception:
            pass
        return self.returncode

    def check_sanitizers(self):
        rep = sanitizer_report(self.log_text())
        if rep:
            return f"sanitizer report in {self.name} ({self.log_path}):\n{rep}"
        return None


class MockProc(Proc):
    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def stats(self):
        r = request(self.port, "GET", "/mock/stats", timeout=5)
        assert r.status == 200, r
        return r.json()

    def requests(self):
        return self.stats()["jscode2session"]["requests"]

    def exchanges(self):
        return self.stats()["jscode2session"]["exchanges"]


class ServeProc(Proc):
    pass


def _ready(port, path):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        conn.close()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False


def _start(cls, name, make_argv_env, log_dir, ready_path, attempts=4, fixed_port=None):
    """Start a process on a fresh port; retry with another port if it exits early.

    fixed_port: the process listens there by its own configuration (one attempt).
    """
    last = ""
    if fixed_port is not None:
        attempts = 1
    for attempt in range(attempts):
        port = fixed_port if fixed_port is not None else free_port()
        argv, env = make_argv_env(port)
        log_path = Path(log_dir) / f"{name}-{attempt}.log" if attempt else Path(log_dir) / f"{name}.log"
        p = cls(name, argv, env, log_path, port)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not p.alive():
                break
            if _ready(port, ready_path):
                return p
            time.sleep(0.02)
        if p.alive():
            p.stop(timeout=3)
            raise RuntimeError(
                f"{name} did not answer GET {ready_path} on port {port} within "
                f"{READY_TIMEOUT}s; log:\n{p.log_text()[-4000:]}")
        last = p.log_text()
        p.stop()
        rep = sanitizer_report(last)
        if rep:
            raise RuntimeError(f"{name} crashed at start with a sanitizer report:\n{rep}")
    raise RuntimeError(f"{name} exited at start {attempts} times; last log:\n{last[-4000:]}")


class ProcessGroup:
    """Starts mocks and serves; stops them all at teardown and reports sanitizer findings."""

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.procs = []
        self._n = 0

    def _name(self, kind):
        self._n += 1
        return f"{kind}{self._n}"

    def mock(self, apps=None, threads=None, args=None, port=None):
        """Start ``wxlogin-mock``: apps [(appid, secret)], extra args (e.g. ["--token-ttl",
        "305"]), port: a fixed port (else a free one)."""
        def mk(p):
            argv = [MOCK_BIN, "--listen", f"127.0.0.1:{p}"]
            for appid, secret in (apps or []):
                argv += ["--app", f"{appid}:{secret}"]
            if threads:
                argv += ["--threads", str(threads)]
            argv += list(args or [])
            return argv, base_env()
        p = _start(MockProc, self._name("mock"), mk, self.log_dir, "/mock/stats",
                   fixed_port=port)
        self.procs.append(p)
        return p

    def serve(self, mock=None, env=None, args=None, appid=DEFAULT_APPID,
              secret=DEFAULT_SECRET, wechat_base=None, config_port=None, bin=None):
        """Start `wxlogin serve` configured by environment.

        bin: another wxlogin binary (e.g. wxlogin-failalloc) instead of WXLOGIN_BIN.

        env: extra WXLOGIN_* (or other) variables; a value of None removes it.
        appid/secret/wechat_base: None leaves the variable unset.
        config_port: the port a --config file sets `listen` to; WXLOGIN_LISTEN is
        then not set and readiness is polled there.
        """
        def mk(port):
            e = {} if config_port is not None else {"WXLOGIN_LISTEN": f"127.0.0.1:{port}"}
            if appid is not None:
                e["WXLOGIN_APPID"] = appid
            if secret is not None:
                e["WXLOGIN_SECRET"] = secret
            if wechat_base is not None:
                e["WXLOGIN_WECHAT_BASE"] = wechat_base
            elif mock is not None:
                e["WXLOGIN_WECHAT_BASE"] = mock.base
            e.update(env or {})
            return [bin or BIN, "serve"] + list(args or []), base_env(**e)
        p = _start(ServeProc, self._name("serve"), mk, self.log_dir, "/healthz",
                   fixed_port=config_port)
        self.procs.append(p)
        return p

    def close(self):
        problems = []
        for p in reversed(self.procs):
            p.stop(timeout=5 if isinstance(p, MockProc) else 10)
            msg = p.check_sanitizers()
            if msg:
                problems.append(msg)
        self.procs = []
        return problems


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
