"""Load for the fault and durability tests (test_durability.py, test_chaos.py).

`Load` runs CLIENTS threads, each on its own keep-alive connection, POSTing fresh login codes
until stopped, and keeps every outcome (send and answer times, status, JSON body, Retry-After,
the tag its code generator gave); `verify` checks tokens with `GET /v1/session` on a few keep-alive
connections. Time is bounded: LOAD_S seconds of load per round (3 s, 2 s in sanitizer builds;
`WXLOGIN_DURABILITY_LOAD_S=10` gives the issue's 10 s rounds).
"""

import gc
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter as Histogram
from typing import NamedTuple, Optional

import pytest

from conftest import SANITIZED, new_code, request

# ASan and ThreadSanitizer builds (make test runs the suite under both) are 2-4x slower:
# shorter rounds keep `make test` in its time budget.
LOAD_S = float(os.environ.get("WXLOGIN_DURABILITY_LOAD_S", "1.5" if SANITIZED else "2"))
ROUNDS = int(os.environ.get("WXLOGIN_DURABILITY_ROUNDS", "2" if SANITIZED else "3"))
CLIENTS = 50
# Client-side slack on top of a server deadline: 50 Python threads share one interpreter lock,
# and sanitizer builds are slower still.
SLACK_S = 1.5 if SANITIZED else 0.8

# The load is 50 clients logging a few users in from one address as fast as they can: the rate
# limits (on by default, test_rate_limits.py) would answer most of it 429. These tests are about
# durability and upstream faults, so their servers turn the limits off.
NO_LIMITS = {"WXLOGIN_RATE_LIMIT_ADDRESS": "off", "WXLOGIN_RATE_LIMIT_OPENID": "off",
             "WXLOGIN_RATE_LIMIT_WECHAT": "off"}

class Outcome(NamedTuple):
    t0: float                  # monotonic time the request was sent
    t1: float                  # ... its answer read (or the transport failed)
    status: Optional[int]      # None: no answer (connection refused, reset, closed)
    body: Optional[dict]       # the JSON answer
    retry_after: Optional[str]  # its Retry-After header
    tag: object                # what the code generator said about the code
    path: str
    failure: str = ""          # the transport error, when status is None

    @property
    def latency(self):
        return self.t1 - self.t0

    @property
    def error(self):
        return (self.body or {}).get("error")


class Load:
    """`clients` threads POSTing fresh codes until stop(); every outcome is kept.

    codes(): (code, tag) for one request (default: a clean code, tag None); paths: the
    endpoints, taken in turn.
    """

    def __init__(self, port, codes=None, paths=("/v1/login",), clients=CLIENTS, timeout=15.0):
        self.port = port
        self.codes = codes or (lambda: (new_code("dura"), None))
        self.paths = paths
        self.clients = clients
        self.timeout = timeout
        self.outcomes = []
        self._stop = threading.Event()
        self._threads = []

    def _run(self, i):
        conn = None
        n = i
        while not self._stop.is_set():
            code, tag = self.codes()
            path = self.paths[n % len(self.paths)]
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            body = json.dumps({"code": code})
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException) as e:
                self.outcomes.append(Outcome(t0, time.monotonic(), None, None, None, tag, path,
                                             type(e).__name__))
                conn.close()
                conn = None
                self._stop.wait(0.01)  # the server is gone: do not spin
                continue
            t1 = time.monotonic()
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = {"error": f"<not JSON: {data[:80]!r}>"}
            if b"session_key" in data:
                parsed = {"error": "<session_key leaked>"}
            self.outcomes.append(Outcome(t0, t1, r.status, parsed, r.getheader("Retry-After"),
                                         tag, path))
        if conn is not None:
            conn.close()

    def start(self):
        _running.append(self)
        # No cyclic garbage collection while the clients run: a full collection over tens of
        # thousands of outcomes holds every client thread, and the server would sit idle then
        # (a kill at that moment would find nothing in flight). Outcomes hold no cycles.
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        if self in _running:
            _running.remove(self)
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        if self._gc_was_enabled:
            gc.enable()
        assert not any(t.is_alive() for t in self._threads), "a client thread is stuck"
        return self

    def acked(self):
        """(token, time acknowledged) of every 200 from /v1/login."""
        return [(o.body["token"], o.t1) for o in self.outcomes
                if o.status == 200 and o.path == "/v1/login"]


_running = []


@pytest.fixture(autouse=True)
def stop_loads():
    """A test that fails mid-load leaves no client threads behind (import this fixture)."""
    yield
    while _running:
        _running[-1].stop()


def run_for(load, seconds):
    load.start()
    time.sleep(seconds)
    return load


def histogram(outcomes, key=lambda o: "no answer" if o.status is None else (o.status, o.error)):
    return dict(sorted(Histogram(key(o) for o in outcomes).items(), key=str))


def verify(port, tokens, threads=8, retry_for=10.0):
    """GET /v1/session for every token, on `threads` keep-alive connections.

    Returns (lost, unknown): tokens answered 401, and tokens never answered 200 or 401 (a 503
    is retried for `retry_for` seconds: the store may still be reconnecting).
    """
    lost, unknown = [], []
    lock = threading.Lock()
    deadline = time.monotonic() + retry_for

    def one(conn, token):
        while True:
            conn.request("GET", "/v1/session", headers={"Authorization": f"Bearer {token}"})
            r = conn.getresponse()
            r.read()
            if r.status in (200, 401) or time.monotonic() > deadline:
                return r.status
            time.sleep(0.05)

    def work(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            for token in chunk:
                st = one(conn, token)
                if st != 200:
                    with lock:
                        (lost if st == 401 else unknown).append(token)
        finally:
            conn.close()

    ts = [threading.Thread(target=work, args=(tokens[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lost, unknown


def login_and_session_ok(port, n=8):
    """n logins in a row (new connections: they spread over the workers) each verify."""
    for _ in range(n):
        r = request(port, "POST", "/v1/login", body=json.dumps({"code": new_code("back")}),
                    headers={"Content-Type": "application/json"}, timeout=10)
        if r.status != 200:
            return False
        tok = r.json()["token"]
        if request(port, "GET", "/v1/session", headers={"Authorization": f"Bearer {tok}"},
                   timeout=10).status != 200:
            return False
    return True


def kill9(proc):
    """SIGKILL a conftest Proc and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)
