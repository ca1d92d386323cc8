"""wxlogin and its mock WeChat as processes: where the binaries are, how to start `wxlogin
serve` and `wxlogin-mock` ready to use, and a group that stops them all and collects sanitizer
reports.

WXLOGIN_BIN (default <repo>/build/wxlogin) and WXLOGIN_MOCK_BIN (default: wxlogin-mock beside
it) choose the binaries; no other WXLOGIN_* variable of the caller's environment reaches them.
"""

import os
from pathlib import Path

from .procs import Proc, base_env, start
from .web import http_ok, request

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("WXLOGIN_BIN", str(REPO / "build" / "wxlogin"))
MOCK_BIN = os.environ.get("WXLOGIN_MOCK_BIN", str(Path(BIN).parent / "wxlogin-mock"))

DEFAULT_APPID = "wx1234567890abcdef"  # the mock's default app
DEFAULT_SECRET = "0123456789abcdef0123456789abcdef"

# The suites run once per build flavour (normal, ASan+UBSan, TSan).
SANITIZED = bool(os.environ.get("WXLOGIN_TSAN")) or any(
    f in Path(BIN).resolve().parent.name for f in ("asan", "tsan"))


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


def _http_ready(path):
    return lambda p: http_ok(p.port, path)


class ProcessGroup:
    """Starts mocks and serves (and anything else added with add()); close() stops them all,
    newest first, and returns the sanitizer findings in their logs."""

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = []
        self._n = 0

    def _name(self, kind):
        self._n += 1
        return f"{kind}{self._n}"

    def add(self, proc):
        """Let the group stop proc (anything with stop() and check_sanitizers()) at close()."""
        self.procs.append(proc)
        return proc

    def mock(self, apps=None, threads=None, args=None, port=None, name=None):
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
        p = start(MockProc, name or self._name("mock"), mk, self.log_dir,
                  _http_ready("/mock/stats"), fixed_port=port)
        return self.add(p)

    def serve(self, mock=None, env=None, args=None, appid=DEFAULT_APPID,
              secret=DEFAULT_SECRET, wechat_base=None, config_port=None, name=None, bin=None):
        """Start `wxlogin serve` configured by environment; returns once /healthz answers 200.

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
        p = start(ServeProc, name or self._name("serve"), mk, self.log_dir,
                  _http_ready("/healthz"), fixed_port=config_port)
        return self.add(p)

    def pair(self, env=None, mock_args=None, **serve_kw):
        """A fresh mock and a serve using it: (mock, serve)."""
        m = self.mock(args=mock_args)
        return m, self.serve(mock=m, env=env, **serve_kw)

    def close(self):
        problems = []
        for p in reversed(self.procs):
            p.stop(timeout=5 if isinstance(p, MockProc) else 10)
            msg = p.check_sanitizers() if hasattr(p, "check_sanitizers") else None
            if msg:
                problems.append(msg)
        self.procs = []
        return problems
