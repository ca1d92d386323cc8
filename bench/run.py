#!/usr/bin/python3
"""bench/run.py: load-test wxlogin against the local mock WeChat with wrk, beside a Go net/http
peer and nginx; count its allocations and syscalls per request; and check its memory stays flat
over a million session checks (the soak line). See bench/README.md.

    /usr/bin/python3 bench/run.py      (or `make bench`, which builds build/wxlogin first)

Environment (all optional):
  BENCH_SECONDS=10          duration of each measured wrk run, in seconds
  BENCH_ROUNDS=3            rounds; each runs every scenario once, and the summary gives medians
  BENCH_CONNS=64            connection counts of each round (e.g. "64 512")
  BENCH_WARMUP_SECONDS=2    duration of each warm-up run (0 skips them)
  BENCH_WRK_THREADS=2       wrk -t
  BENCH_WRK_TIMEOUT=2s      wrk --timeout (a slower response counts as a timeout error)
  BENCH_SERVER_THREADS=     WXLOGIN_THREADS for the service, nginx's workers, the Go peer's
                            GOMAXPROCS (unset: the service's default, one per core)
  BENCH_MOCK_THREADS=       --threads for the mock (unset: the mock's default)
  BENCH_SESSIONS=100000     sessions seeded into the store for GET /v1/session
  BENCH_USERS=5000          distinct users those sessions belong to
  BENCH_NGINX=/usr/sbin/nginx  the nginx for the baseline (Debian's nginx-light)
  BENCH_GO=go               the Go toolchain that builds the peer (Debian's golang-go)
  BENCH_REDIS=1             0 skips the Redis store scenario (two instances on one Redis)
  BENCH_METRICS=1           0 skips GET /v1/session with metrics_listen set (its cost)
  BENCH_REDIS_SERVER=/usr/bin/redis-server  the private Redis for it
  BENCH_REDIS_THREADS=1     WXLOGIN_THREADS of each of the two Redis-backed instances
  BENCH_ALLOC_N=2000        requests per allocation count (0 skips the counts)
  BENCH_STRACE_N=1000       requests per syscall count (0 skips the counts)
  BENCH_SOAK_N=1000000      GET /v1/session of the soak line; RSS after a tenth and after all
                            of them (0 skips it)
  BENCH_KEEP_LOGS=1         keep the temp dir with the logs and raw wrk output
  WXLOGIN_BIN=path          the binary (default <repo>/build/wxlogin); not passed to the service
  WXLOGIN_MOCK_BIN=path     the mock WeChat (default: wxlogin-mock beside WXLOGIN_BIN)

Everything listens on 127.0.0.1 only. Every process it starts (mock, services, Go peer, nginx,
Redis, wrk, strace, the request loops) is stopped on exit, whatever happens: the processes come
from tests/harness, the e2e suite's, which stops them with SIGTERM, then SIGKILL. Nothing is
written outside its temp dir but the peer and the allocation counter it builds into build/bench/.
"""

import base64
import hashlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import harness as H  # noqa: E402

BENCH_DIR = ROOT / "bench"
OUT_DIR = ROOT / "build" / "bench"  # the Go peer and the allocation counter, built here
PY = "/usr/bin/python3"
CLK_TCK = os.sysconf("SC_CLK_TCK")
APPID, SECRET = H.DEFAULT_APPID, H.DEFAULT_SECRET
UNKNOWN_TOKEN = "wxl_" + "0" * 43
STAT_CALLS = re.compile(r"^(fcntl|fcntl64|fstat|fstat64|stat|stat64|lstat|lstat64|newfstatat|"
                        r"fstatat64|statx)$")
ROW_FMT = "%-5s %-31s %-5s %-8s %-8s %-7s %-8s %-9s %-7s %s"
SUM_FMT = "%-31s %-5s %-10s %-8s %s"

ROW_OPENID = "POST /openid (wxlogin)"
ROW_OPENID_GO = "POST /openid (go)"
ROW_SESSION = "GET /v1/session (wxlogin)"
ROW_NGINX = "nginx return 200"
ROW_REDIS = "GET /v1/session (redis, 2 inst)"
ROW_SESSION_METRICS = "GET /v1/session (metrics on)"
SESSION_200 = re.compile(r'^wxlogin_http_requests_total\{method="GET",route="/v1/session",'
                         r'status="200"\} [1-9]', re.M)


class BenchError(Exception):
    pass


def say(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def die(msg):
    raise BenchError(msg)


def indent(text, n=20, width=300):
    return "\n".join("    " + l[:width] for l in text.splitlines()[-n:])


# ---------------------------------------------------------------- settings

def env_int(name, default, minimum):
    v = os.environ.get(name, "") or str(default)
    if not re.fullmatch(r"[0-9]+", v) or int(v) < minimum:
        die(f"{name} must be a whole number >= {minimum}")
    return int(v)


class Settings:
    def __init__(self):
        e = os.environ.get
        self.bin = H.BIN
        self.mock_bin = H.MOCK_BIN
        self.duration = env_int("BENCH_SECONDS", 10, 1)
        self.rounds = env_int("BENCH_ROUNDS", 3, 1)
        conns = e("BENCH_CONNS", "") or "64"
        if not re.fullmatch(r"\s*[1-9][0-9]*(\s+[1-9][0-9]*)*\s*", conns):
            die('BENCH_CONNS must be connection counts separated by spaces, e.g. "64 512"')
        self.conns = [int(c) for c in conns.split()]
        self.warmup = env_int("BENCH_WARMUP_SECONDS", 2, 0)
        self.wrk_threads = env_int("BENCH_WRK_THREADS", 2, 1)
        self.wrk_timeout = e("BENCH_WRK_TIMEOUT", "") or "2s"
        self.server_threads = e("BENCH_SERVER_THREADS", "")
        if self.server_threads and not self.server_threads.isdigit():
            die("BENCH_SERVER_THREADS must be a whole number")
        self.mock_threads = e("BENCH_MOCK_THREADS", "")
        self.sessions = env_int("BENCH_SESSIONS", 100000, 1)
        self.users = env_int("BENCH_USERS", 5000, 1)
        self.nginx = e("BENCH_NGINX", "") or "/usr/sbin/nginx"
        self.go = e("BENCH_GO", "") or "go"
        self.redis = e("BENCH_REDIS", "") or "1"
        if self.redis not in ("0", "1"):
            die("BENCH_REDIS must be 0 or 1")
        self.redis = self.redis == "1"
        self.redis_server = e("BENCH_REDIS_SERVER", "") or "/usr/bin/redis-server"
        self.redis_threads = env_int("BENCH_REDIS_THREADS", 1, 1)
        self.metrics = e("BENCH_METRICS", "") or "1"
        if self.metrics not in ("0", "1"):
            die("BENCH_METRICS must be 0 or 1")
        self.metrics = self.metrics == "1"
        self.alloc_n = env_int("BENCH_ALLOC_N", 2000, 0)
        self.strace_n = env_int("BENCH_STRACE_N", 1000, 0)
        self.soak_n = env_int("BENCH_SOAK_N", 1000000, 0)
        self.keep_logs = e("BENCH_KEEP_LOGS", "") == "1"

    def check(self):
        for path, what in ((self.bin, "run 'make build' first (or 'make bench')"),
                           (self.mock_bin, "run 'make build' first (or 'make bench')"),
                           (PY, "it seeds the session store"),
                           (self.nginx, "Debian: apt-get install nginx-light, or 'make deps'")):
            if not os.access(path, os.X_OK):
                die(f"{path} not found ({what})")
        if not shutil.which("wrk"):
            die("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
        if self.redis:
            if not os.access(self.redis_server, os.X_OK):
                die(f"{self.redis_server} not found (Debian: apt-get install redis-server; "
                    "BENCH_REDIS=0 skips the Redis scenario)")
            if min(self.conns) < 2:
                die("BENCH_CONNS: the Redis pair needs at least 2 connections (1 per instance)")
        # LD_PRELOAD splits its list at spaces and colons.
        if self.alloc_n and re.search(r"[\s:]", str(OUT_DIR)):
            die(f"the allocation counter cannot be preloaded from {OUT_DIR} (a space or ':' in "
                "the path); BENCH_ALLOC_N=0 skips it")

    def nginx_workers(self):
        # the service's default: online CPUs, sysconf(_SC_NPROCESSORS_ONLN)
        return int(self.server_threads) if self.server_threads else os.cpu_count() or 1


# ---------------------------------------------------------------- wrk results

def parse_result(line):
    """A RESULT line ("RESULT k=v ...") as a dict of floats; {} if none."""
    out = {}
    for kv in line.split()[1:]:
        k, _, v = kv.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def _ms(v):
    for suf, f in (("us", 0.001), ("ms", 1.0), ("m", 60000.0), ("s", 1000.0)):
        if v.endswith(suf):
            return float(v[:-len(suf)]) * f
    return float(v)


def parse_plain(text):
    """A RESULT dict from wrk's own report, for a run without a script that prints one."""
    r = {"requests": 0, "duration_s": 0, "rps": 0, "p50_ms": 0, "p99_ms": 0, "non2xx": 0,
         "errors": 0}
    for line in text.splitlines():
        f = line.split()
        if f[:1] == ["50%"]:
            r["p50_ms"] = _ms(f[1])
        elif f[:1] == ["99%"]:
            r["p99_ms"] = _ms(f[1])
        elif len(f) > 4 and f[1] == "requests" and f[2] == "in":
            r["requests"] = float(f[0])
            r["duration_s"] = _ms(f[3].rstrip(",")) / 1000
        elif f[:1] == ["Requests/sec:"]:
            r["rps"] = float(f[1])
        elif "Non-2xx or 3xx responses:" in line:
            r["non2xx"] = float(f[-1])
        elif "Socket errors:" in line:
            n = [int(x) for x in re.findall(r"\d+", line)]
            r["errors"] = float(sum(n))
    return r


def result_of(out_path):
    text = Path(out_path).read_text(errors="replace")
    lines = [l for l in text.splitlines() if l.startswith("RESULT ")]
    return parse_result(lines[-1]) if lines else parse_plain(text)


def good_rps(res):
    """2xx answers per second: req/s scaled by the share of good answers (errors taken off too:
    a request that timed out may still have completed, so a lower bound)."""
    if "good_rps" in res:
        return res["good_rps"]
    r = res.get("requests", 0)
    g = max(0.0, r - res.get("non2xx", 0) - res.get("errors", 0))
    return res.get("rps", 0) * g / r if r > 0 else 0.0


def median(vals):
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------- the bench

class Bench:
    def __init__(self, s):
        self.s = s
        self.tmp = Path(tempfile.mkdtemp(prefix="wxlogin-bench.", dir=os.environ.get("TMPDIR")))
        self.group = H.ProcessGroup(self.tmp)
        self.run_id = "%x%04x%04x" % (int(time.time()), os.getpid() & 0xffff,
                                      int.from_bytes(os.urandom(2), "big"))
        self.run_seq = 0
        self.round = 0
        self.children = []  # wrk, strace, request loops: stopped first at cleanup
        self.rows, self.notes, self.cpu_lines = [], [], []
        self.alloc_lines, self.syscall_lines, self.summary_lines = [], [], []
        self.allocs, self.allocs_mhd = {}, {}
        self.good, self.p99, self.srv_us = {}, {}, {}
        self.row_keys = []
        self.mock = self.serve = self.peer = self.nginx = self.redis = None
        self.ra = self.rb = None
        self.ms = None  # the SQLite-backed service with metrics_listen set (a copy of the store)
        self.ms_metrics_port = None
        self.nginx_workers = []
        self.peer_bin = OUT_DIR / "openidpeer"
        self.alloc_so = OUT_DIR / "alloccount.so"

    # ------------------------------------------------------------ processes

    def common_env(self, threads):
        e = {"WXLOGIN_SHUTDOWN_TIMEOUT_MS": "2000",
             # One load generator on one address logging one user in thousands of times a second
             # is what the rate limits exist to refuse: they stay on (their cost is measured) but
             # far above anything the bench sends, so none ever refuses.
             "WXLOGIN_RATE_LIMIT_ADDRESS": "1000000/s", "WXLOGIN_RATE_LIMIT_OPENID": "1000000/s",
             "WXLOGIN_RATE_LIMIT_WECHAT": "1000000/s"}
        if threads:
            e["WXLOGIN_THREADS"] = str(threads)
        return e

    def launch_serve(self, name, threads, **env):
        """`wxlogin serve` at the default configuration but for the mock upstream, loopback,
        the rate limits and the given settings; returns once /healthz answers."""
        e = self.common_env(threads)
        e.update(env)
        return self.group.serve(mock=self.mock, env=e, name=name)

    def stop(self, p):
        if p is None:
            return
        p.stop(timeout=5)
        if p in self.group.procs:
            self.group.procs.remove(p)
        rep = p.check_sanitizers() if hasattr(p, "check_sanitizers") else None
        if rep:
            self.notes.append(rep)

    def run_child(self, argv, out, env=None, what="", **kw):
        """A helper process (wrk, a request loop) run to its end; stopped at cleanup if we
        are interrupted meanwhile. Returns its exit code."""
        with open(out, "ab") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                                 stdin=subprocess.DEVNULL, **kw)
        self.children.append(p)
        try:
            return p.wait()
        finally:
            self.release(p)

    def release(self, p):
        """p is no longer ours to wait for: stop it if it still runs (we were interrupted)."""
        if p.poll() is None:
            p.send_signal(signal.SIGINT if p.args[0] == "strace" else signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.children:
            self.children.remove(p)

    def cleanup(self, failed):
        for p in sorted(self.children, key=lambda p: p.args[0] != "strace"):
            self.release(p)  # strace first: it detaches from the service on SIGINT
        workers = list(self.nginx_workers)
        problems = self.group.close()
        for w in workers:  # workers an nginx master killed with SIGKILL would leave behind
            try:
                with open(f"/proc/{w}/cmdline", "rb") as f:
                    if f.read().startswith(b"nginx: worker"):
                        os.kill(w, signal.SIGKILL)
            except OSError:
                pass
        for p in problems:
            print(p, file=sys.stderr)
        if failed or problems or self.s.keep_logs:
            say(f"logs and raw wrk output kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return bool(problems)

    # ------------------------------------------------------------ builds

    def go_env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("GOTOOLCHAIN", "GOGC", "GODEBUG", "GOMEMLIMIT", "GOMAXPROCS")}
        env.update(GOENV="off", GOWORK="off", GO111MODULE="on", GOFLAGS="-mod=mod",
                   GOPROXY="off", GOCACHE=str(OUT_DIR / "go-cache"),
                   GOPATH=str(OUT_DIR / "go-path"), CGO_ENABLED="0")
        return env

    def build_peer(self):
        """build/bench/openidpeer from bench/peers/go-openid, when its source is newer."""
        src = BENCH_DIR / "peers" / "go-openid"
        b = self.peer_bin
        if b.exists() and all(b.stat().st_mtime >= (src / f).stat().st_mtime
                              for f in ("main.go", "go.mod")):
            return
        if not shutil.which(self.s.go):
            die(f"{self.s.go} not found: the Go peer needs Debian's golang-go "
                "(apt-get install golang-go, or 'make deps')")
        say("building the Go peer ...")
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        log = self.tmp / "go-build.log"
        if self.run_child([self.s.go, "build", "-o", f"{b}.tmp", "."], log, env=self.go_env(),
                          cwd=src) != 0:
            die("building the Go peer failed:\n" + indent(log.read_text()))
        os.replace(f"{b}.tmp", b)

    def build_alloccount(self):
        """build/bench/alloccount.so from bench/alloccount.c, when the source is newer."""
        so, src = self.alloc_so, BENCH_DIR / "alloccount.c"
        if so.exists() and so.stat().st_mtime >= src.stat().st_mtime:
            return
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        log = self.tmp / "alloccount-build.log"
        cc = os.environ.get("CC") or "cc"
        if self.run_child([cc, "-O2", "-Wall", "-shared", "-fPIC", "-o", f"{so}.tmp", str(src),
                           "-ldl"], log) != 0:
            die("building the allocation counter failed:\n" + indent(log.read_text()))
        os.replace(f"{so}.tmp", so)

    # ------------------------------------------------------------ the Go peer and nginx

    def start_peer(self):
        """The Go peer on 127.0.0.1 port 0 (it prints the address it got first), the mock as
        its WeChat; GOMAXPROCS = BENCH_SERVER_THREADS when set, else Go's default."""
        env = self.go_env()
        for k in ("GOENV", "GOWORK", "GO111MODULE", "GOFLAGS", "GOPROXY", "GOCACHE", "GOPATH",
                  "CGO_ENABLED"):
            env.pop(k, None)
        env = {k: v for k, v in env.items() if not k.startswith("WXLOGIN_")}
        if self.s.server_threads:
            env["GOMAXPROCS"] = self.s.server_threads
        argv = [str(self.peer_bin), "-listen", "127.0.0.1:0", "-wechat-base", self.mock.base,
                "-appid", APPID, "-secret", SECRET]
        p = self.group.add(H.Proc("peer", argv, env, self.tmp / "peer.log", cwd=self.tmp))
        m = H.wait_until(lambda: re.match(r"127\.0\.0\.1:(\d+)$",
                                          (p.log_lines() or [""])[0]) or not p.alive(), 10)
        if not (m and p.alive()):
            die("the Go peer did not start; its log:\n" + indent(p.log_text()))
        p.port = int(m.group(1))
        if not H.wait_until(lambda: p.owns_port(), 5):
            die(f"the Go peer's listener is not on the port it printed ({p.port})")
        self.peer = p

    def start_nginx(self):
        """Debian's nginx answering `return 200` from a private config and prefix in the temp
        dir, as many workers as the service has worker threads. It cannot listen on port 0:
        harness.start() picks a free port, and another if it got taken meanwhile."""
        d = self.tmp / "nginx"
        d.mkdir(exist_ok=True)
        workers = self.s.nginx_workers()

        def mk(port):
            (d / "nginx.conf").write_text(f"""# Written by bench/run.py for one run; deleted with its temp dir.
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
            return [self.s.nginx, "-p", f"{d}/", "-e", f"{d}/error.log", "-c",
                    f"{d}/nginx.conf"], dict(os.environ)

        self.nginx = self.group.add(H.start(H.Proc, "nginx", mk, d,
                                            lambda p: H.http_ok(p.port, "/"), attempts=5,
                                            cwd=d))
        self.nginx_workers = H.wait_until(
            lambda: (lambda c: c if len(c) >= workers else None)(H.children(self.nginx.pid)), 5) \
            or H.children(self.nginx.pid)
        say(f"nginx on 127.0.0.1:{self.nginx.port}, {workers} worker processes "
            "(as many as the service's worker threads)")

    # ------------------------------------------------------------ requests

    def openid_of(self, port, code):
        r = H.request(port, "POST", "/openid", body=f'{{"code":"{code}"}}',
                      headers={"Content-Type": "application/json"}, timeout=5)
        try:
            return r.status, r.json().get("openid", "")
        except ValueError:
            return r.status, ""

    def login_token(self, port, code):
        r = H.request(port, "POST", "/v1/login", body=f'{{"code":"{code}"}}',
                      headers={"Content-Type": "application/json"}, timeout=5)
        tok = r.json().get("token", "") if r.status == 200 else ""
        if not tok.startswith("wxl_"):
            die(f"sanity check: POST /v1/login on port {port} answered without a token: {r}")
        return tok

    def get_session(self, port, token):
        return H.request(port, "GET", "/v1/session",
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)

    def check_peer(self):
        a = self.openid_of(self.serve.port, f"pcheck-{self.run_id}w")
        b = self.openid_of(self.peer.port, f"pcheck-{self.run_id}p")
        if not (a[0] == 200 and a[1] and a == b):
            die(f"sanity check: POST /openid for the same user answered {a} on wxlogin, {b} on "
                "the Go peer")
        r = H.request(self.peer.port, "POST", "/openid", body='{"code":', timeout=5)
        if r.status != 400:
            die(f"sanity check: the Go peer answered {r.status} to a bad body, not 400")
        say(f"Go peer on 127.0.0.1:{self.peer.port}; sanity check passed (same openid as "
            "wxlogin, 400 on a bad body)")

    def check_seeded(self, port, seeded, where):
        r = self.get_session(port, seeded)
        if r.status != 200:
            die(f"sanity check: GET /v1/session on port {port} with a token seeded into {where} "
                f"answered {r.status} (the seeding does not match the service's format)")
        if not (r.headers.get("x-wx-openid", "").startswith("oBn")
                and r.headers.get("x-wx-unionid", "").startswith("uBn")):
            die(f"sanity check: a seeded token's answer on port {port} lacks the seeded user's "
                "X-WX-OpenID/UnionID")
        r = self.get_session(port, UNKNOWN_TOKEN)
        if r.status != 401:
            die(f"sanity check: GET /v1/session on port {port} with an unknown token answered "
                f"{r.status}, not 401")

    # ------------------------------------------------------------ the stores

    def warn_lines(self, path):
        """A service log's lines at warn or error, and any line that is not a JSON log line
        (a library or the loader writing to stderr), except the allocation counter's."""
        out = []
        try:
            text = Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return out
        for l in text.splitlines():
            if re.match(r"^ALLOC(COUNT|MHD) [0-9]+$", l) or not l.strip():
                continue
            if l.startswith("{"):
                if re.search(r'"level": *"(warn|error)"', l):
                    out.append(l)
                continue
            out.append(l)
        return out

    def seed_store(self):
        """The service creates its schema when it starts: start it once on the empty store and
        stop it; then seed_sessions.py inserts the sessions while nothing has the file open."""
        s = self.s
        say(f"creating the schema, then seeding {s.sessions} sessions ...")
        db = self.tmp / "wxlogin.db"
        p = self.launch_serve("serve-schema", s.server_threads, WXLOGIN_STORE=f"sqlite:{db}")
        self.stop(p)
        w = self.warn_lines(p.log_path)
        if w:
            self.notes.append("the schema-creating start of the service logged warnings; first "
                              "ones:")
            self.notes += ["    " + l[:300] for l in w[:3]]
        self.tokens = self.tmp / "tokens.txt"
        log = self.tmp / "seed.log"
        if self.run_child([PY, str(BENCH_DIR / "seed_sessions.py"), str(db), str(self.tokens),
                           "--sessions", str(s.sessions), "--users", str(s.users),
                           "--appid", APPID], log) != 0:
            die("seeding the store failed:\n" + indent(log.read_text()))
        for l in log.read_text().splitlines():
            say(l)
        # The soak and metrics instances get their own copies of the seeded store (SQLite
        # belongs to one process), taken while nothing has it open.
        for want, d in ((s.soak_n, "soak"), (s.metrics, "metrics")):
            if want:
                (self.tmp / d).mkdir()
                for f in self.tmp.glob("wxlogin.db*"):
                    shutil.copy2(f, self.tmp / d / f.name)

    def start_serve(self):
        self.serve = self.launch_serve("serve", self.s.server_threads,
                                       WXLOGIN_STORE=f"sqlite:{self.tmp}/wxlogin.db")

    def start_metrics_serve(self):
        """The same service with metrics_listen set, on its copy of the seeded store, for the
        cost of counting on GET /v1/session. The metrics listener takes port 0: the port it got
        is in its "metrics served" log line (no free port to race for)."""
        p = self.launch_serve("serve-metrics", self.s.server_threads,
                              WXLOGIN_STORE=f"sqlite:{self.tmp}/metrics/wxlogin.db",
                              WXLOGIN_METRICS_LISTEN="127.0.0.1:0")
        self.ms = p
        lines = H.wait_until(lambda: p.json_lines(lambda d: d.get("msg") == "metrics served"),
                             5)
        if not lines or not str(lines[0].get("port", "")).isdigit():
            die(f"the metrics instance did not log the port of its metrics listener (log: "
                f"{p.log_path})")
        self.ms_metrics_port = int(lines[0]["port"])
        if self.ms_metrics_port == p.port or not p.owns_port(self.ms_metrics_port):
            die(f"the metrics instance's ports got mixed up ({p.port}, metrics "
                f"{self.ms_metrics_port})")
        say(f"wxlogin with metrics on 127.0.0.1:{p.port}, /metrics on 127.0.0.1:"
            f"{self.ms_metrics_port}")

    def check_metrics_serve(self):
        """A seeded token verifies there too, and its scrape counts it."""
        r = self.get_session(self.ms.port, self.tokens.read_text().split()[0])
        if r.status != 200:
            die(f"sanity check: GET /v1/session on the metrics instance answered {r.status}")
        m = H.request(self.ms_metrics_port, "GET", "/metrics", timeout=5)
        if m.status != 200 or len(SESSION_200.findall(m.body.decode(errors="replace"))) != 1:
            die("sanity check: the metrics instance's /metrics does not count GET /v1/session")
        say("sanity check passed (metrics instance: seeded token 200, counted in /metrics)")

    def check_sessions(self):
        """A real login's token and a seeded one verify (200, identity headers); an unknown
        token does not (401): a seeding that does not match the service would make every
        measured request a cheap 401."""
        tok = self.login_token(self.serve.port, f"ubench-{self.run_id}check")
        r = self.get_session(self.serve.port, tok)
        if r.status != 200:
            die(f"sanity check: GET /v1/session with a fresh login's token answered {r.status}")
        self.check_seeded(self.serve.port, self.tokens.read_text().split()[0], "SQLite")
        say("sanity check passed (login's token 200, seeded token 200, unknown token 401)")

    def start_redis(self):
        """A private redis-server without persistence, its dir and log in the temp dir."""
        self.redis = self.group.add(H.RedisServer(self.tmp / "redis", databases=1,
                                                  binary=self.s.redis_server).start())
        say(f"redis-server {self.redis.info('server').get('redis_version', '?').strip()} on "
            f"127.0.0.1:{self.redis.port} (no persistence)")

    def seed_redis(self):
        """The sessions straight into Redis; each half of the tokens to one instance's wrk."""
        s = self.s
        say(f"seeding {s.sessions} sessions into Redis ...")
        self.redis_tokens = self.tmp / "tokens-redis.txt"
        log = self.tmp / "seed-redis.log"
        if self.run_child([PY, str(BENCH_DIR / "seed_redis.py"), "127.0.0.1",
                           str(self.redis.port), str(self.redis_tokens), "--sessions",
                           str(s.sessions), "--users", str(s.users), "--appid", APPID],
                          log) != 0:
            die("seeding Redis failed:\n" + indent(log.read_text()))
        for l in log.read_text().splitlines():
            say(l)
        toks = self.redis_tokens.read_text().splitlines()
        half = len(toks) // 2 if len(toks) >= 2 else len(toks)
        (self.tmp / "tokens-a.txt").write_text("\n".join(toks[:half]) + "\n")
        (self.tmp / "tokens-b.txt").write_text("\n".join(toks[half:] or toks) + "\n")

    def start_redis_serves(self):
        """Two instances on the same Redis, one fresh shared master key, BENCH_REDIS_THREADS
        worker threads each."""
        key = base64.b64encode(os.urandom(32)).decode()
        kw = {"WXLOGIN_STORE": self.redis.url(0), "WXLOGIN_MASTER_KEY": key}
        self.ra = self.launch_serve("serve-redis-a", self.s.redis_threads, **kw)
        self.rb = self.launch_serve("serve-redis-b", self.s.redis_threads, **kw)
        say(f"Redis-backed wxlogin A on 127.0.0.1:{self.ra.port}, B on 127.0.0.1:"
            f"{self.rb.port}, {self.s.redis_threads} thread(s) each")

    def check_redis_sessions(self):
        """A login on A verifies on B (and A) and its session is in Redis under the documented
        key; a seeded token verifies on both; an unknown token is 401 on both."""
        tok = self.login_token(self.ra.port, f"ubench-{self.run_id}rcheck")
        key = f"wxlogin:{APPID}:s:{hashlib.sha256(tok.encode()).hexdigest()}"
        with self.redis.client() as c:
            if c.cmd("EXISTS", key) != 1:
                die(f"sanity check: A's login left no wxlogin:{APPID}:s:<sha256> key in Redis")
        seeded = self.redis_tokens.read_text().split()[0]
        for p in (self.rb, self.ra):
            r = self.get_session(p.port, tok)
            if r.status != 200:
                die(f"sanity check: GET /v1/session on port {p.port} with the token of a login "
                    f"on A answered {r.status}")
            self.check_seeded(p.port, seeded, "Redis")
        say("Redis sanity check passed (A's login token 200 on B and A, seeded token 200 on "
            "both, unknown token 401 on both)")

    # ------------------------------------------------------------ wrk runs

    def next_run_env(self, **extra):
        """A fresh alphanumeric run id per wrk invocation, so no two runs ever send the same
        code to the mock (codes are single use there)."""
        self.run_seq += 1
        env = dict(os.environ)
        env.update(BENCH_RUN_ID=f"{self.run_id}r{self.run_seq}", BENCH_TOKENS=str(self.tokens),
                   BENCH_WRK_THREADS=str(self.s.wrk_threads))
        env.update(extra)
        return env

    def wrk_argv(self, threads, conns, seconds, script, url):
        a = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout",
             self.s.wrk_timeout, "--latency"]
        if script:
            a += ["-s", str(script if os.path.isabs(script) else ROOT / script)]
        return a + [url]

    def cpu_snapshot(self, watch, server_pids):
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"watch": {label: H.cpu_ticks(*pids) for label, pids in watch},
                "srv": H.cpu_ticks(*server_pids), "wrk": ru.ru_utime + ru.ru_stime,
                "t": time.monotonic()}

    def server_us(self, c0, c1, requests, server_pids):
        if not server_pids or requests <= 0:
            return None
        return (c1["srv"] - c0["srv"]) * 1e6 / CLK_TCK / requests

    def cpu_line(self, name, conns, requests, c0, c1, watch):
        wall = c1["t"] - c0["t"]
        if requests <= 0 or wall <= 0:
            return
        line = "r%-2s %-31s %-4s" % (self.round, name, conns)
        for label, _ in watch:
            s = (c1["watch"][label] - c0["watch"][label]) / CLK_TCK
            line += "  %s %.1f us (%.2f cores)" % (label, s * 1e6 / requests, s / wall)
        s = c1["wrk"] - c0["wrk"]
        line += "  wrk %.1f us (%.2f cores)" % (s * 1e6 / requests, s / wall)
        self.cpu_lines.append(line)

    def add_row(self, *cols):
        self.rows.append(ROW_FMT % cols)

    def record_row(self, name, conns, res, srv):
        key = (name, conns)
        if key not in self.row_keys:
            self.row_keys.append(key)
        if not res:
            self.add_row(self.round, name, conns, "FAILED", "-", "-", "-", "-", "-", "-")
            return
        g = good_rps(res)
        self.good[(self.round, key)] = g
        self.p99[(self.round, key)] = res.get("p99_ms", 0)
        if srv is not None:
            self.srv_us[(self.round, key)] = srv
        self.add_row(self.round, name, conns, "%.0f" % res.get("rps", 0), "%.0f" % g,
                     "%.2f" % res.get("p50_ms", 0), "%.2f" % res.get("p99_ms", 0),
                     "-" if srv is None else "%.1f" % srv, "%d" % res.get("non2xx", 0),
                     "%d" % res.get("errors", 0))

    def note_run(self, tag, res, out):
        if "max_ms" in res:
            self.notes.append(f"{tag}: p90 {res.get('p90_ms', 0):.2f} ms, max "
                              f"{res['max_ms']:.2f} ms, {res.get('requests', 0):.0f} requests")
        if res.get("non2xx"):
            self.notes.append(f"{tag}: {res['non2xx']:.0f} non-2xx responses")
            self.notes += ["    " + l for l in Path(out).read_text(errors="replace").splitlines()
                           if l.startswith("NON2XX ")]
        if res.get("errors"):
            self.notes.append(f"{tag}: socket errors: connect={res.get('connect', 0):.0f} "
                              f"read={res.get('read', 0):.0f} write={res.get('write', 0):.0f} "
                              f"timeout={res.get('timeout', 0):.0f}")

    def check_alive(self, name, conns):
        """A run that killed a process should not be blamed on the next one."""
        for p, what in ((self.serve, "the service"), (self.mock, "the mock"),
                        (self.peer, "the Go peer"), (self.nginx, "nginx"),
                        (self.redis, "redis-server"), (self.ra, "Redis-backed instance A"),
                        (self.rb, "Redis-backed instance B"),
                        (self.ms, "the metrics instance")):
            if p is not None and not p.alive():
                die(f"{what} died during {name} @{conns} (log: {p.log_path})")

    def run_wrk(self, name, conns, url, script, watch, server_pids):
        """One measured wrk run; appends a row to the round's table."""
        out = self.tmp / f"wrk-{self.run_seq + 1}-{conns}.txt"
        tag = f"r{self.round} {name} @{conns}"
        say(f"round {self.round}: {name}, {conns} connections, {self.s.duration}s ...")
        env = self.next_run_env()
        c0 = self.cpu_snapshot(watch, server_pids)
        rc = self.run_child(self.wrk_argv(self.s.wrk_threads, conns, self.s.duration, script,
                                          url), out, env=env)
        c1 = self.cpu_snapshot(watch, server_pids)
        if rc != 0:
            say(f"wrk failed for {name} at {conns} connections:\n" + indent(out.read_text()))
            self.record_row(name, conns, None, None)
            self.check_alive(name, conns)
            return
        res = result_of(out)
        srv = self.server_us(c0, c1, res.get("requests", 0), server_pids)
        self.record_row(name, conns, res, srv)
        self.note_run(tag, res, out)
        self.cpu_line(name, conns, res.get("requests", 0), c0, c1, watch)
        self.check_alive(name, conns)

    def wrk_pair(self, outa, outb, conns_each, seconds):
        """GET /v1/session on the two Redis-backed instances at once: one wrk -t1 per
        instance, its half of the tokens, started together."""
        procs = []
        for p, out, toks in ((self.ra, outa, "tokens-a.txt"), (self.rb, outb, "tokens-b.txt")):
            env = self.next_run_env(BENCH_TOKENS=str(self.tmp / toks), BENCH_WRK_THREADS="1")
            with open(out, "wb") as f:
                w = subprocess.Popen(self.wrk_argv(1, conns_each, seconds, BENCH_DIR /
                                                   "session.lua",
                                                   f"http://127.0.0.1:{p.port}/v1/session"),
                                     stdout=f, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
            procs.append(w)
            self.children.append(w)
        try:
            return all([w.wait() == 0 for w in procs])
        finally:
            for w in procs:
                self.release(w)

    def run_wrk_pair(self, name, conns, watch, server_pids):
        """One measured run against both Redis-backed instances, conns in total: req/s and
        good req/s summed, p50/p99 the worse of the two, non-2xx and errors summed."""
        half = conns // 2
        self.run_seq += 1
        outa = self.tmp / f"wrk-{self.run_seq}-{conns}-a.txt"
        outb = self.tmp / f"wrk-{self.run_seq}-{conns}-b.txt"
        tag = f"r{self.round} {name} @{conns}"
        say(f"round {self.round}: {name}, {conns} connections (2 x wrk -t1 -c{half}), "
            f"{self.s.duration}s ...")
        with self.redis.client() as c:
            c.cmd("CONFIG", "RESETSTAT")
        c0 = self.cpu_snapshot(watch, server_pids)
        ok = self.wrk_pair(outa, outb, half, self.s.duration)
        c1 = self.cpu_snapshot(watch, server_pids)
        if not ok:
            say(f"wrk failed for {name} at {conns} connections:\n    A: "
                + indent(outa.read_text()) + "\n    B: " + indent(outb.read_text()))
            self.record_row(name, conns, None, None)
            self.check_alive(name, conns)
            return
        ra, rb = result_of(outa), result_of(outb)
        if "max_ms" not in ra or "max_ms" not in rb:
            say(f"no RESULT line from wrk for {name} at {conns} connections")
            self.record_row(name, conns, None, None)
            return
        res = {"requests": ra["requests"] + rb["requests"],
               "duration_s": max(ra["duration_s"], rb["duration_s"]),
               "rps": ra["rps"] + rb["rps"], "good_rps": good_rps(ra) + good_rps(rb),
               "p50_ms": max(ra["p50_ms"], rb["p50_ms"]),
               "p99_ms": max(ra["p99_ms"], rb["p99_ms"]),
               "non2xx": ra["non2xx"] + rb["non2xx"], "errors": ra["errors"] + rb["errors"]}
        srv = self.server_us(c0, c1, res["requests"], server_pids)
        self.record_row(name, conns, res, srv)
        for side, r, out in (("A", ra, outa), ("B", rb, outb)):
            self.notes.append(
                f"{tag}, instance {side} (wrk -t1 -c{half}): {r['rps']:.0f} req/s, p50 "
                f"{r['p50_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max "
                f"{r['max_ms']:.2f} ms, {r['requests']:.0f} requests")
            self.note_run(f"{tag}, instance {side}", {k: v for k, v in r.items()
                                                     if k != "max_ms"}, out)
        self.cpu_line(name, conns, res["requests"], c0, c1, watch)
        # Redis's own view: EVAL calls (one per GET /v1/session) and the time each took.
        with self.redis.client() as c:
            stats = c.cmd("INFO", "commandstats").decode()
        m = re.search(r"^cmdstat_eval:calls=(\d+),usec=\d+,usec_per_call=([0-9.]+)", stats,
                      re.M)
        if m:
            calls = int(m.group(1))
            self.notes.append(f"{tag}: Redis ran {calls} EVAL ("
                              f"{calls / res['requests'] if res['requests'] else 0:.2f} per "
                              f"counted request), {float(m.group(2)):.1f} us each inside Redis")
        self.check_alive(name, conns)

    def warm_up(self):
        """Every server once at 16 connections before the first round (connection pools, the
        page cache, Redis's script cache, the Go runtime's heap); nginx needs none."""
        if not self.s.warmup:
            return
        say(f"warming up ({self.s.warmup}s per server) ...")
        runs = [(self.serve.port, "openid.lua", "/openid"), (self.peer.port, "openid.lua",
                                                              "/openid"),
                (self.serve.port, "session.lua", "/v1/session")]
        if self.s.metrics:
            runs.append((self.ms.port, "session.lua", "/v1/session"))
        for port, script, path in runs:
            out = self.tmp / f"wrk-warmup-{port}{path.replace('/', '-')}.txt"
            if self.run_child(self.wrk_argv(self.s.wrk_threads, 16, self.s.warmup,
                                            BENCH_DIR / script, f"http://127.0.0.1:{port}{path}"),
                              out, env=self.next_run_env()) != 0:
                die("warm-up failed: " + out.read_text())
        if self.s.redis:
            a, b = self.tmp / "wrk-warmup-redis-a.txt", self.tmp / "wrk-warmup-redis-b.txt"
            if not self.wrk_pair(a, b, 8, self.s.warmup):
                die("Redis session warm-up failed: " + a.read_text() + b.read_text())

    # ------------------------------------------------------------ scenarios

    def run_openid(self, conns):
        self.run_wrk(ROW_OPENID, conns, f"http://127.0.0.1:{self.serve.port}/openid",
                     "bench/openid.lua", [("wxlogin", [self.serve.pid]),
                                          ("mock", [self.mock.pid])], [self.serve.pid])

    def run_openid_go(self, conns):
        self.run_wrk(ROW_OPENID_GO, conns, f"http://127.0.0.1:{self.peer.port}/openid",
                     "bench/openid.lua", [("go peer", [self.peer.pid]),
                                          ("mock", [self.mock.pid])], [self.peer.pid])

    def run_session(self, conns):
        self.run_wrk(ROW_SESSION, conns, f"http://127.0.0.1:{self.serve.port}/v1/session",
                     "bench/session.lua", [("wxlogin", [self.serve.pid])], [self.serve.pid])

    def run_session_metrics(self, conns):
        """The same with metrics_listen set: counting on every request, and a scrape every
        second during the run (as a Prometheus scraping this often would; it reads every
        worker's counters)."""
        stop = threading.Event()

        def scrape():
            while not stop.wait(1):
                try:
                    H.request(self.ms_metrics_port, "GET", "/metrics", timeout=2)
                except OSError:
                    pass  # a failed scrape is not the row's business; check_alive is

        t = threading.Thread(target=scrape, name="scraper", daemon=True)
        t.start()
        try:
            self.run_wrk(ROW_SESSION_METRICS, conns,
                         f"http://127.0.0.1:{self.ms.port}/v1/session", "bench/session.lua",
                         [("wxlogin", [self.ms.pid])], [self.ms.pid])
        finally:
            stop.set()
            t.join()

    def run_nginx(self, conns):
        w = self.nginx_workers
        self.run_wrk(ROW_NGINX, conns, f"http://127.0.0.1:{self.nginx.port}/v1/session",
                     "bench/session.lua", [("nginx", w)] if w else [], w)

    def run_redis_pair(self, conns):
        self.run_wrk_pair(ROW_REDIS, conns, [("wxlogin A", [self.ra.pid]),
                                             ("wxlogin B", [self.rb.pid]),
                                             ("redis-server", [self.redis.pid])],
                          [self.ra.pid, self.rb.pid])

    def run_round(self, r):
        """Every row once per connection count. The two runs of each ratio go back to back;
        even rounds swap their order, so a drift in the machine (or in the mock, which
        remembers every code it has spent) does not always favour the same side."""
        self.round = r
        say(f"round {r} of {self.s.rounds}")
        for conns in self.s.conns:
            # metrics on goes on the far side of GET /v1/session (wxlogin) from nginx, so both
            # of that row's ratios compare runs that went back to back
            m = (self.run_session_metrics,) if self.s.metrics else ()
            if r % 2:
                order = (self.run_openid, self.run_openid_go) + m + (self.run_session,
                                                                     self.run_nginx)
            else:
                order = (self.run_openid_go, self.run_openid, self.run_nginx,
                         self.run_session) + m
            for f in order:
                f(conns)
            if self.s.redis:
                self.run_redis_pair(conns)

    # ------------------------------------------------------------ allocations and syscalls

    def reqloop(self, port, mode, n, *args):
        """bench/reqloop.py: n sequential requests on one keep-alive connection."""
        log = self.tmp / "reqloop.log"
        if self.run_child([PY, str(BENCH_DIR / "reqloop.py"), str(port), mode, str(n)]
                          + list(args), log) != 0:
            die(f"request loop failed: {mode} on port {port}:\n" + indent(log.read_text(), 3))

    def warm_one(self, port, token, prefix):
        """Before counting: the token into the session cache, the connections to the mock,
        SQLite's page and statement caches."""
        self.reqloop(port, "session", 200, "--token", token)
        self.reqloop(port, "login", 100, "--code-prefix", f"{prefix}-wl-")
        self.reqloop(port, "openid", 100, "--code-prefix", f"{prefix}-wo-")

    def alloc_count(self, p):
        """(all, libmicrohttpd's) allocations of the counting instance so far: SIGUSR2 makes
        alloccount.so write "ALLOCMHD <n>" and "ALLOCCOUNT <n>" to its stderr (its log)."""
        def counts(key):
            return [int(l.split()[1]) for l in p.log_lines()
                    if re.fullmatch(key + r" [0-9]+", l)]
        before = len(counts("ALLOCCOUNT"))
        os.kill(p.pid, signal.SIGUSR2)
        if not H.wait_until(lambda: len(counts("ALLOCCOUNT")) > before, 5, 0.05):
            die(f"the allocation counter did not answer SIGUSR2 (log: {p.log_path})")
        mhd = counts("ALLOCMHD")
        return counts("ALLOCCOUNT")[before], (mhd[before] if len(mhd) > before else 0)

    def alloc_per(self, p, label, mode, *args):
        n = self.s.alloc_n
        c0, m0 = self.alloc_count(p)
        self.reqloop(p.port, mode, n, *args)
        c1, m1 = self.alloc_count(p)
        per, mhd = (c1 - c0) / n, (m1 - m0) / n
        self.alloc_lines.append("%-24s %7.1f per request  (%d over %d requests; libmicrohttpd "
                                "%.1f per request, the rest %.1f)"
                                % (label, per, c1 - c0, n, mhd, per - mhd))
        self.allocs[mode], self.allocs_mhd[mode] = per, mhd

    def measure_allocs(self):
        """A separate instance at the default configuration with the counter preloaded, its own
        store; ALLOC_N requests of each kind, counted before and after."""
        if not self.s.alloc_n:
            return
        say(f"allocations: a wxlogin instance with alloccount.so preloaded, {self.s.alloc_n} "
            "requests per count ...")
        (self.tmp / "alloc").mkdir(exist_ok=True)
        p = self.launch_serve("serve-alloc", self.s.server_threads,
                              WXLOGIN_STORE=f"sqlite:{self.tmp}/alloc/wxlogin.db",
                              LD_PRELOAD=str(self.alloc_so))
        # Without the counter loaded, SIGUSR2 would kill it.
        if "alloccount.so" not in Path(f"/proc/{p.pid}/maps").read_text():
            die(f"alloccount.so is not loaded in the counting instance (log: {p.log_path})")
        tok = self.login_token(p.port, f"alloc-{self.run_id}-t")
        self.warm_one(p.port, tok, f"alloc-{self.run_id}")
        self.alloc_per(p, "cached GET /v1/session", "session", "--token", tok)
        self.alloc_per(p, "POST /v1/login", "login", "--code-prefix", f"alloc-{self.run_id}-l-")
        self.alloc_per(p, "POST /openid", "openid", "--code-prefix", f"alloc-{self.run_id}-o-")
        c0, _ = self.alloc_count(p)
        time.sleep(1)
        c1, _ = self.alloc_count(p)
        self.alloc_lines.append("%-24s %7s in 1 s without requests" % ("idle", c1 - c0))
        m, mhd = self.allocs["session"], self.allocs_mhd["session"]
        self.summary_lines.append(
            f"allocations per cached GET /v1/session: {m:.1f} (goal <= 8: "
            f"{'met' if round(m, 1) <= 8 else 'below'}; libmicrohttpd's own: {mhd:.1f}, "
            f"wxlogin's: {m - mhd:.1f})")
        self.summary_lines.append(f"allocations per POST /v1/login: {self.allocs['login']:.1f}"
                                  f", per POST /openid: {self.allocs['openid']:.1f}")
        self.alloc_log = p.log_path
        self.stop(p)

    def strace_start(self, out):
        """strace -f -c on the SQLite-backed service, all its threads; True once attached."""
        ntask = len(os.listdir(f"/proc/{self.serve.pid}/task"))
        err = open(f"{out}.err", "wb")
        st = subprocess.Popen(["strace", "-f", "-c", "-U", "calls,name", "-S", "calls", "-o",
                               str(out), "-p", str(self.serve.pid)], stdout=subprocess.DEVNULL,
                              stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        self.children.append(st)
        self.strace = st

        def attached():
            t = Path(f"{out}.err").read_text(errors="replace")
            return (re.search(r" attached with [0-9]+ threads$", t, re.M)
                    or t.count(" attached\n") >= ntask or st.poll() is not None)
        H.wait_until(attached, 10, 0.1)
        if st.poll() is not None:
            self.release(st)
            return False
        return True

    def strace_stop(self):
        """SIGINT, as at a terminal: strace detaches and writes its summary."""
        st = self.strace
        st.send_signal(signal.SIGINT)
        try:
            st.wait(timeout=10)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
        self.release(st)

    def syscalls_per(self, label, mode, *args):
        n = self.s.strace_n
        out = self.tmp / f"strace-{mode}.txt"
        if not self.strace_start(out):
            first = (Path(f"{out}.err").read_text(errors="replace").splitlines() or [""])[0]
            self.syscall_lines.append(f"skipped: strace could not attach to the service: "
                                      f"{first[:200]}")
            return False
        self.reqloop(self.serve.port, mode, n, *args)
        self.strace_stop()
        if not self.serve.alive():
            die(f"the service died under strace (log: {self.serve.log_path})")
        calls = []
        for l in out.read_text().splitlines():
            f = l.split()
            if len(f) == 2 and f[0].isdigit() and f[1] != "total":
                calls.append((int(f[0]), f[1]))
        total = sum(c for c, _ in calls)
        line = "%-24s %6.1f syscalls per request:" % (label, total / n)
        line += "".join(" %s %.2f" % (name, c / n) for c, name in calls if c / n >= 0.05)
        self.syscall_lines.append(line)
        fs = "".join(" %s %.2f" % (name, c / n) for c, name in calls
                     if STAT_CALLS.match(name) and c / n >= 0.5)
        self.summary_lines.append(f"fcntl/stat per request, {label}: none (goal: none: met)"
                                  if not fs else
                                  f"fcntl/stat per request, {label}:{fs} (goal: none: not met)")
        return True

    def measure_syscalls(self):
        """strace on the SQLite-backed service (default configuration, nothing preloaded), over
        STRACE_N requests of each kind on one connection; only the counts are reported."""
        if not self.s.strace_n:
            return
        if not shutil.which("strace"):
            self.syscall_lines.append("skipped: strace is not installed (Debian: apt-get install"
                                      " strace)")
            return
        say(f"syscalls: strace -f -c on the service, {self.s.strace_n} requests per count ...")
        tok = self.login_token(self.serve.port, f"strace-{self.run_id}-t")
        self.warm_one(self.serve.port, tok, f"strace-{self.run_id}")
        for label, mode, args in (
                ("cached GET /v1/session", "session", ("--token", tok)),
                ("POST /v1/login", "login", ("--code-prefix", f"strace-{self.run_id}-l-")),
                ("POST /openid", "openid", ("--code-prefix", f"strace-{self.run_id}-o-"))):
            if not self.syscalls_per(label, mode, *args):
                return

    # ------------------------------------------------------------ the soak line

    def wrk_count(self, port, n, out):
        """GET /v1/session until about n answers (session.lua's BENCH_MAX_REQUESTS: each wrk
        thread stops itself after its share; wrk's main thread then only sleeps out -d, so it
        is interrupted once the workers are gone). Returns the requests wrk counted."""
        env = self.next_run_env(BENCH_MAX_REQUESTS=str(n))
        with open(out, "wb") as f:
            w = subprocess.Popen(self.wrk_argv(self.s.wrk_threads, 64, 24 * 3600,
                                               BENCH_DIR / "session.lua",
                                               f"http://127.0.0.1:{port}/v1/session"),
                                 stdout=f, stderr=subprocess.STDOUT, env=env,
                                 stdin=subprocess.DEVNULL)
        self.children.append(w)
        try:
            # wrk's main thread plus one per -t once started; the workers exit after their share
            def tasks():
                try:
                    return len(os.listdir(f"/proc/{w.pid}/task"))
                except OSError:
                    return 0
            H.wait_until(lambda: w.poll() is not None or tasks() > 1, 30, 0.01)
            H.wait_until(lambda: w.poll() is not None or tasks() <= 1, 24 * 3600, 0.2)
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
            w.wait(timeout=30)
        finally:
            self.release(w)
        res = result_of(out)
        if res.get("non2xx") or res.get("errors"):
            die(f"soak: {res.get('non2xx', 0):.0f} non-2xx answers, {res.get('errors', 0):.0f} "
                f"socket errors (see {out})")
        return int(res.get("requests", 0))

    def measure_soak(self):
        """RSS of a fresh SQLite-backed wxlogin (default configuration, its own copy of the
        seeded store) after a tenth of BENCH_SOAK_N GET /v1/session, and after all of them:
        memory that keeps growing with requests is a leak (goal: within 10 %)."""
        n = self.s.soak_n
        if not n:
            return
        first = max(1, n // 10)
        say(f"soak: RSS of a fresh wxlogin after {first} and after {n} GET /v1/session ...")
        p = self.launch_serve("serve-soak", self.s.server_threads,
                              WXLOGIN_STORE=f"sqlite:{self.tmp}/soak/wxlogin.db")
        done = first_done = self.wrk_count(p.port, first, self.tmp / "wrk-soak-1.txt")
        rss1 = H.rss_kib(p.pid)
        done += self.wrk_count(p.port, n - done, self.tmp / "wrk-soak-2.txt") if n > done else 0
        rss2 = H.rss_kib(p.pid)
        if not p.alive() or rss1 is None or rss2 is None:
            die(f"soak: the service died (log: {p.log_path})")
        ratio = rss2 / rss1
        self.summary_lines.append(
            f"soak: RSS after {first_done} GET /v1/session: {rss1 / 1024:.1f} MiB, after {done}: "
            f"{rss2 / 1024:.1f} MiB, ratio {ratio:.3f} (goal <= 1.10: "
            f"{'met' if ratio <= 1.10 else 'not met'})")
        self.soak_log = p.log_path
        self.stop(p)

    # ------------------------------------------------------------ report

    def log_summary(self, name, path):
        try:
            n = len(Path(path).read_text(errors="replace").splitlines())
        except FileNotFoundError:
            return
        w = self.warn_lines(path)
        if w:
            print(f"{name} log: {n} lines, {len(w)} at warn or error; first ones:")
            for l in w[:5]:
                print("    " + l[:300])
        else:
            print(f"{name} log: {n} lines, none at warn or error")

    def ratio_line(self, label, a, b, conns, goal=None):
        ratios = []
        for r in range(1, self.s.rounds + 1):
            x, y = self.good.get((r, (a, conns))), self.good.get((r, (b, conns)))
            if x is not None and y:
                ratios.append(round(x / y, 2))
        if not ratios:
            return f"ratio {label} @{conns}: n/a (a run failed)"
        m = round(median(ratios), 2)
        line = f"ratio {label} @{conns}: {m:.2f}"
        if goal is not None:
            line += f" (goal >= {goal}: {'met' if m >= goal else 'below'})"
        return line + "  per round: " + " ".join(f"{x:.2f}" for x in ratios)

    def summary(self):
        s = self.s
        print(f"summary: median of {s.rounds} round(s), {s.duration}s per run; good req/s = 2xx "
              "answers per second, server CPU = the server process(es)' user + system time per "
              "request")
        print(SUM_FMT % ("scenario", "conns", "good req/s", "p99 ms", "server CPU us/req"))
        for key in self.row_keys:
            rs = range(1, s.rounds + 1)
            g = median([self.good[(r, key)] for r in rs if (r, key) in self.good])
            p = median([self.p99[(r, key)] for r in rs if (r, key) in self.p99])
            u = median([self.srv_us[(r, key)] for r in rs if (r, key) in self.srv_us])
            print(SUM_FMT % (key[0], key[1], "n/a" if g is None else "%.0f" % g,
                             "n/a" if p is None else "%.2f" % p,
                             "n/a" if u is None else "%.1f" % u))
        print()
        for conns in s.conns:
            g1, g2 = (1.5, 0.8) if conns == 64 else (None, None)
            print(self.ratio_line("wxlogin/go POST /openid", ROW_OPENID, ROW_OPENID_GO, conns,
                                  g1))
            print(self.ratio_line("wxlogin/nginx GET /v1/session", ROW_SESSION, ROW_NGINX,
                                  conns, g2))
            if s.redis:
                print(self.ratio_line("redis/sqlite GET /v1/session", ROW_REDIS, ROW_SESSION,
                                      conns))
            if s.metrics:
                print(self.ratio_line("metrics on/off GET /v1/session", ROW_SESSION_METRICS,
                                      ROW_SESSION, conns))
        if self.summary_lines:
            print()
            for l in self.summary_lines:
                print(l)

    def report(self):
        s = self.s
        print()
        print("every run (good/s: 2xx answers per second; srv us: the server's CPU per request, "
              "in us):")
        print(ROW_FMT % ("round", "scenario", "conns", "req/s", "good/s", "p50 ms", "p99 ms",
                         "srv us", "non-2xx", "errors"))
        for r in self.rows:
            print(r)
        print()
        go_version = "?"
        try:
            out = subprocess.run([s.go, "version", str(self.peer_bin)], capture_output=True,
                                 text=True, env=self.go_env(), timeout=30).stdout.split()
            go_version = out[1] if len(out) > 1 else "?"
        except (OSError, subprocess.TimeoutExpired):
            pass
        print(f"store: {s.sessions} seeded sessions of {s.users} users in SQLite "
              f"({(self.tmp / 'wxlogin.db').stat().st_size // 1024} KiB); nginx: "
              f"{len(self.nginx_workers)} worker processes; Go peer built with {go_version}, "
              f"GOMAXPROCS {s.server_threads or 'default (cores)'}")
        if s.redis:
            mem = self.redis.info("memory").get("used_memory_human", "?").strip()
            with self.redis.client() as c:
                keys = c.cmd("DBSIZE")
            print(f"redis: {s.sessions} seeded sessions of {s.users} users in a private "
                  f"redis-server ({mem} used, {keys} keys); 2 wxlogin instances x "
                  f"{s.redis_threads} thread(s), SQLite-backed one: "
                  f"{s.server_threads or s.nginx_workers()} thread(s)")
        try:
            print(f"mock /mock/stats: {self.mock.stats()}")
        except Exception:  # noqa: BLE001 - the report goes on without it
            print("mock /mock/stats: (unavailable)")
        self.log_summary("serve", self.serve.log_path)
        if s.metrics:
            self.log_summary("serve (metrics)", self.ms.log_path)
        if s.redis:
            self.log_summary("serve (redis A)", self.ra.log_path)
            self.log_summary("serve (redis B)", self.rb.log_path)
        if getattr(self, "alloc_log", None):
            self.log_summary("serve (allocation count)", self.alloc_log)
        if getattr(self, "soak_log", None):
            self.log_summary("serve (soak)", self.soak_log)
        rest = self.peer.log_lines()[1:]
        if rest:
            print(f"Go peer log: {len(rest)} line(s) after its address; first ones:")
            for l in rest[:5]:
                print("    " + l[:300])
        else:
            print("Go peer log: empty but for its address")
        if self.cpu_lines:
            print("CPU per completed request (and cores busy over the run; wrk's includes "
                  "loading its tokens):")
            for l in self.cpu_lines:
                print("    " + l)
        for n in self.notes:
            print(f"note: {n}")
        if s.alloc_n:
            print()
            print("heap allocations per request (malloc, calloc, realloc, *memalign, *valloc "
                  "calls; LD_PRELOAD counter; one keep-alive connection; default configuration):")
            for l in self.alloc_lines:
                print("    " + l)
        if s.strace_n:
            print()
            print(f"syscalls per request (strace -f -c on the service, all threads, {s.strace_n} "
                  "sequential requests on one keep-alive connection):")
            for l in self.syscall_lines:
                print("    " + l)
        print()
        self.summary()
        sys.stdout.flush()

    # ------------------------------------------------------------ main

    def raise_fd_limit(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        for want in (hard, 1048576, 65536, 16384, 4096):
            if want == resource.RLIM_INFINITY:
                continue
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                break
            except (ValueError, OSError):
                continue
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and soft < 2048:
            self.notes.append(f"open-file limit is only {soft}: runs with many connections may "
                              "fail to connect")
        return soft

    def run(self):
        s = self.s
        fds = self.raise_fd_limit()
        self.build_peer()
        if s.alloc_n:
            self.build_alloccount()
        self.mock = self.group.mock(threads=s.mock_threads or None, name="mock")
        self.seed_store()
        self.start_serve()
        say(f"wxlogin on 127.0.0.1:{self.serve.port}, mock on 127.0.0.1:{self.mock.port}, "
            f"{os.cpu_count()} cores, wrk -t{s.wrk_threads}, {s.duration}s per run, "
            f"{s.rounds} round(s) at {' '.join(map(str, s.conns))} connections, fd limit {fds}")
        self.check_sessions()
        if s.metrics:
            self.start_metrics_serve()
            self.check_metrics_serve()
        self.start_peer()
        self.check_peer()
        self.start_nginx()
        if s.redis:
            self.start_redis()
            self.seed_redis()
            self.start_redis_serves()
            self.check_redis_sessions()
        self.warm_up()
        for r in range(1, s.rounds + 1):
            self.run_round(r)
        self.measure_allocs()
        self.measure_syscalls()
        self.measure_soak()
        self.report()


def main():
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        s = Settings()
        s.check()
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    b = Bench(s)
    failed = True
    rc = 1
    try:
        b.run()
        failed, rc = False, 0
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        rc = 130
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup runs to its end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if b.cleanup(failed):
            rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
