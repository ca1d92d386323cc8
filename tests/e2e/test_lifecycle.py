"""Signals and lifecycle (issue: run it in production): SIGHUP reloads what can change without a
restart (app secrets and secret files, admin_token, log_level, the rate limits), logs what
changed and what needs a restart, and keeps the running configuration when the file is broken;
`serve --check`; sd_notify (READY=1, RELOADING=1, STOPPING=1) to a NOTIFY_SOCKET; --port-file;
HEAD on /healthz and /readyz; per-command --help, --version with the commit, an option without
its value; the master key's check value in the SQLite store (Redis: tests/e2e/test_redis.py)."""

import base64
import http.client
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (BIN, DEFAULT_APPID, DEFAULT_SECRET, MOCK_BIN, REPO, assert_error,
                      base_env, free_port, login, new_code, request, run_cli, wait_until)

ADMIN_A = "adm-Q7vX2pL9kR4tZ8wN3mB6cF1hJ5sD0gY"
ADMIN_B = "adm-Hc4Wq9Ls2Xe7Rb1Vn6Mk3Pz8Td5Gy0Ju"
WRONG_SECRET = "W7ongW7ongW7ongW7ongW7ongW7ong00"


def write_conf(path, mock, port, **keys):
    lines = [f"listen = 127.0.0.1:{port}", f"appid = {DEFAULT_APPID}",
             f"wechat_base = {mock.base}", "store = sqlite:wxlogin.db"]
    if "secret" not in keys and "secret_file" not in keys:
        keys["secret"] = DEFAULT_SECRET
    lines += [f"{k} = {v}" for k, v in keys.items() if v is not None]
    Path(path).write_text("\n".join(lines) + "\n")


def start(procs, mock, tmp_path, env=None, **keys):
    """serve --config FILE, every key from the file (none from the environment)."""
    conf = tmp_path / "wxlogin.conf"
    port = free_port()
    write_conf(conf, mock, port, **keys)
    s = procs.serve(appid=None, secret=None, args=["--config", str(conf)], config_port=port,
                    env=env)
    return s, conf


def reload(s, conf, mock, **keys):
    """Rewrites the file (same listen), sends SIGHUP, waits for the outcome's log line."""
    before = len(s.log_lines())
    write_conf(conf, mock, s.port, **keys)
    s.popen.send_signal(signal.SIGHUP)
    done = lambda: [l for l in s.log_lines()[before:]
                    if "configuration reloaded" in l or "reload failed" in l]
    lines = wait_until(done, timeout=5)
    assert lines, f"no reload outcome logged:\n{s.log_text()[-2000:]}"
    time.sleep(0.2)  # the workers adopt the new snapshot on their loops
    return lines[0]


def admin_refresh(port, auth):
    return request(port, "POST", "/admin/v1/access-token/refresh",
                   headers={"Authorization": f"Bearer {auth}"})


def admin_get(port, auth):
    return request(port, "GET", "/admin/v1/access-token",
                   headers={"Authorization": f"Bearer {auth}"})


# --------------------------------------------------------------------------
# SIGHUP
# --------------------------------------------------------------------------

def test_sighup_new_secret_is_used_by_the_next_exchange_and_token_fetch(procs, mock, tmp_path):
    s, conf = start(procs, mock, tmp_path, admin_token=ADMIN_A, threads=2)
    assert login(s.port, new_code("rl1")).status == 200
    assert admin_refresh(s.port, ADMIN_A).status == 200

    line = reload(s, conf, mock, secret=WRONG_SECRET, admin_token=ADMIN_A, threads=2)
    assert "configuration reloaded" in line and "secret" in line, line
    # the mock knows the right secret only: WeChat's 40125 from both APIs, on every worker
    for _ in range(4):
        assert_error(login(s.port, new_code("rl2")), 500, "config_error", "none", 40125)
    assert_error(admin_refresh(s.port, ADMIN_A), 500, "config_error", "none", 40125)

    # back to the right one, this time from a secret_file
    sf = tmp_path / "secret"
    sf.write_text(DEFAULT_SECRET + "\n")
    line = reload(s, conf, mock, secret_file=sf, admin_token=ADMIN_A, threads=2)
    assert "secret" in line and "secret_file" in line, line
    for _ in range(4):
        assert login(s.port, new_code("rl3")).status == 200
    # a failed fetch is not repeated for 1 s (anti-storm): the next one after it uses the new secret
    assert wait_until(lambda: admin_refresh(s.port, ADMIN_A).status == 200, timeout=5)

    # the secret file's content changes, its path does not: a reload still reads it
    sf.write_text(WRONG_SECRET + "\n")
    line = reload(s, conf, mock, secret_file=sf, admin_token=ADMIN_A, threads=2)
    assert '"secret' in line or "secret" in line.split("changed")[1], line
    assert_error(login(s.port, new_code("rl4")), 500, "config_error", "none", 40125)
    text = s.log_text()
    for secret in (DEFAULT_SECRET, WRONG_SECRET, ADMIN_A):
        assert secret not in text, "a secret in the log"
    assert s.alive()


def test_sighup_log_level_and_admin_token_take_effect(procs, mock, tmp_path):
    s, conf = start(procs, mock, tmp_path, log_level="warn")
    # no admin token: the admin routes do not exist
    assert admin_get(s.port, ADMIN_A).status == 404
    request(s.port, "GET", "/healthz")
    time.sleep(0.2)
    assert not s.json_lines(lambda d: d.get("path") == "/healthz"), "access line at warn"

    line = reload(s, conf, mock, log_level="info", admin_token=ADMIN_A)
    assert "admin_token" in line and "log_level" in line, line
    request(s.port, "GET", "/healthz")
    assert wait_until(lambda: s.json_lines(lambda d: d.get("path") == "/healthz"), timeout=3), \
        "no access line after log_level = info"
    assert admin_get(s.port, ADMIN_A).status == 200

    reload(s, conf, mock, log_level="info", admin_token=ADMIN_B)
    assert admin_get(s.port, ADMIN_A).status == 401
    assert admin_get(s.port, ADMIN_B).status == 200

    reload(s, conf, mock, log_level="info")  # admin_token removed: the routes go away
    assert admin_get(s.port, ADMIN_B).status == 404
    text = s.log_text()
    assert ADMIN_A not in text and ADMIN_B not in text


def test_sighup_rate_limit_change_applies(procs, mock, tmp_path):
    s, conf = start(procs, mock, tmp_path, rate_limit_address="1000/min")
    for _ in range(3):
        assert login(s.port, new_code("rate")).status == 200
    line = reload(s, conf, mock, rate_limit_address="4/min")
    assert "rate_limit_address" in line, line
    # 4 per minute from now on: a burst of about 4, then 429 (at 1000/min all would pass)
    statuses = [login(s.port, new_code("rate")).status for _ in range(6)]
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    reload(s, conf, mock, rate_limit_address="off")
    assert login(s.port, new_code("rate")).status == 200


@pytest.mark.parametrize("bad,why", [
    ("this is not a config line", "syntax error"),
    ("threads = many", "threads"),
    ("admin_token = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "admin_token"),
    ("secret_file = /nonexistent/secret", "secret_file"),
])
def test_sighup_broken_file_keeps_the_running_configuration(procs, mock, tmp_path, bad, why):
    s, conf = start(procs, mock, tmp_path)
    assert login(s.port, new_code("keep")).status == 200
    before = len(s.log_lines())
    text = conf.read_text()
    if bad.startswith("secret_file"):
        text = text.replace(f"secret = {DEFAULT_SECRET}\n", "")
    conf.write_text(text + bad + "\n")
    s.popen.send_signal(signal.SIGHUP)
    lines = wait_until(lambda: [l for l in s.log_lines()[before:] if "reload failed" in l])
    assert lines and why in lines[0] and '"warn"' in lines[0], s.log_text()[-2000:]
    assert "configuration reloaded" not in "".join(s.log_lines()[before:])
    assert login(s.port, new_code("keep")).status == 200
    assert s.alive()
    assert "aaaaaaaaaaaaaaaaaaaaaaa" not in s.log_text()


def test_sighup_listen_change_is_logged_as_needing_a_restart(procs, mock, tmp_path):
    s, conf = start(procs, mock, tmp_path)
    other = free_port()
    before = len(s.log_lines())
    write_conf(conf, mock, other, log_level="debug")
    s.popen.send_signal(signal.SIGHUP)
    lines = wait_until(lambda: [l for l in s.log_lines()[before:] if "reload" in l])
    assert lines, s.log_text()[-2000:]
    text = "\n".join(s.log_lines()[before:])
    ok = [l for l in s.json_lines(lambda d: d.get("msg") == "configuration reloaded")]
    assert ok and ok[-1]["restart_needed"] == "listen" and ok[-1]["changed"] == "log_level", text
    assert wait_until(lambda: "need a restart" in s.log_text()), text
    # still where it was
    assert request(s.port, "GET", "/healthz").status == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", other), timeout=1).close()


def test_sighup_with_nothing_changed(procs, mock, tmp_path):
    s, conf = start(procs, mock, tmp_path)
    line = reload(s, conf, mock)
    assert '"changed":""' in line and '"restart_needed":""' in line, line
    assert login(s.port, new_code("same")).status == 200


# --------------------------------------------------------------------------
# serve --check
# --------------------------------------------------------------------------

def check(tmp_path, conf_text, env=None):
    conf = tmp_path / "c.conf"
    conf.write_text(conf_text)
    return run_cli(["serve", "--check", "--config", str(conf)], env=base_env(**(env or {})),
                   cwd=str(tmp_path))


def test_check_ok_prints_the_configuration_without_secrets(tmp_path):
    mk = base64.b64encode(os.urandom(32)).decode()
    secret2 = "S3cond" + os.urandom(13).hex()
    sf = tmp_path / "s2"
    sf.write_text(secret2 + "\n")
    cp = check(tmp_path, f"""appid = {DEFAULT_APPID}
secret = {DEFAULT_SECRET}
admin_token = {ADMIN_A}
master_key = {mk}
store = redis://wxuser:Redis-Pa55word@127.0.0.1:6390/3
wechat_base = http://proxyuser:Pr0xyPass@127.0.0.1:9
rate_limit_address = 5/10s
trusted_proxies = 10.0.0.0/8, ::1
[app "wxother0000000001"]
secret_file = {sf}
""")
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout + cp.stderr
    for secret in (DEFAULT_SECRET, ADMIN_A, mk, "Redis-Pa55word", "Pr0xyPass", secret2):
        assert secret not in out, f"{secret!r} in --check output"
    assert f"appid = {DEFAULT_APPID}" in cp.stdout
    assert "secret = ***" in cp.stdout and "admin_token = ***" in cp.stdout
    assert "master_key = ***" in cp.stdout
    assert "store = redis://" in cp.stdout and "@127.0.0.1:6390/3" in cp.stdout
    assert "rate_limit_address = 5/10s" in cp.stdout
    assert "trusted_proxies = 10.0.0.0/8, ::1/128" in cp.stdout
    assert '[app "wxother0000000001"]' in cp.stdout and f"secret_file = {sf}" in cp.stdout
    assert "listen = 127.0.0.1:2020" in cp.stdout  # defaults too: the effective configuration
    # it binds nothing and creates nothing
    assert not (tmp_path / "wxlogin.db").exists()


def test_check_creates_no_key_file(tmp_path):
    cp = check(tmp_path, f"appid = {DEFAULT_APPID}\nsecret = {DEFAULT_SECRET}\n")
    assert cp.returncode == 0, cp.stderr
    assert not (tmp_path / "wxlogin.db.key").exists() and not (tmp_path / "wxlogin.db").exists()
    assert "does not exist yet" in cp.stdout


@pytest.mark.parametrize("text,why", [
    (f"appid = {DEFAULT_APPID}\n", "secret"),
    (f"appid = {DEFAULT_APPID}\nsecret = {DEFAULT_SECRET}\nadmin_token = short\n", "admin_token"),
    (f"appid = {DEFAULT_APPID}\nsecret_file = /nonexistent/s\n", "secret_file"),
    (f"appid = {DEFAULT_APPID}\nsecret = {DEFAULT_SECRET}\nthreads = 9999\n", "threads"),
    (f"appid = {DEFAULT_APPID}\nsecret = {DEFAULT_SECRET}\nmaster_key = c2hvcnQ=\n", "master_key"),
    (f"appid = {DEFAULT_APPID}\nsecret = {DEFAULT_SECRET}\nmaster_key_file = /nonexistent/k\n",
     "master_key_file"),
    ("appid = wx1\nsecret = x\nnonsense\n", "syntax error"),
])
def test_check_refuses_with_the_reason(tmp_path, text, why):
    cp = check(tmp_path, text)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert why in cp.stderr, cp.stderr
    assert "configuration OK" not in cp.stdout
    assert DEFAULT_SECRET not in cp.stdout + cp.stderr


def test_check_reads_the_key_file_beside_the_database(tmp_path):
    (tmp_path / "wxlogin.db.key").write_text("not base64 at all!\n")
    cp = check(tmp_path, f"appid = {DEFAULT_APPID}\nsecret = {DEFAULT_SECRET}\n")
    assert cp.returncode == 2 and "master_key" in cp.stderr, cp.stderr


# --------------------------------------------------------------------------
# sd_notify
# --------------------------------------------------------------------------

class NotifySocket:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wxn-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def wait(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.messages):
                if pred(m):
                    del self.messages[: i + 1]
                    return m
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no such notification; got {self.messages}")

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def test_sd_notify_ready_reloading_stopping(procs, mock, tmp_path):
    n = NotifySocket()
    try:
        s, conf = start(procs, mock, tmp_path, env={"NOTIFY_SOCKET": n.path}, threads=3)
        n.wait(lambda m: m.strip() == "READY=1")
        s.popen.send_signal(signal.SIGHUP)
        m = n.wait(lambda m: "RELOADING=1" in m)
        assert re.search(r"^MONOTONIC_USEC=\d+$", m, re.M), m
        n.wait(lambda m: m.strip() == "READY=1")
        s.popen.send_signal(signal.SIGTERM)
        n.wait(lambda m: "STOPPING=1" in m)
        assert s.popen.wait(timeout=10) == 0
    finally:
        n.close()


def test_no_notify_socket_no_notification(procs, mock, tmp_path):
    """Without NOTIFY_SOCKET nothing is sent and nothing fails (the other tests all run so)."""
    s, conf = start(procs, mock, tmp_path)
    s.popen.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "configuration reloaded" in s.log_text())
    assert s.stop() == 0


# --------------------------------------------------------------------------
# --port-file
# --------------------------------------------------------------------------

def wait_port_file(path, proc):
    def read():
        assert proc.poll() is None, "exited"
        try:
            t = Path(path).read_text()
        except FileNotFoundError:
            return None
        return int(t) if t.endswith("\n") else None
    return wait_until(read, timeout=10)


def test_port_file_serve_and_mock(tmp_path):
    mpf, spf = tmp_path / "mock.port", tmp_path / "serve.port"
    m = subprocess.Popen([MOCK_BIN, "--listen", "127.0.0.1:0", "--port-file", str(mpf)],
                         env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = None
    try:
        mport = wait_port_file(mpf, m)
        assert mport and request(mport, "GET", "/mock/stats").status == 200
        env = base_env(WXLOGIN_LISTEN="127.0.0.1:0", WXLOGIN_APPID=DEFAULT_APPID,
                       WXLOGIN_SECRET=DEFAULT_SECRET, WXLOGIN_WECHAT_BASE=f"http://127.0.0.1:{mport}")
        s = subprocess.Popen([BIN, "serve", "--port-file", str(spf)], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sport = wait_port_file(spf, s)
        assert sport and sport != mport
        assert request(sport, "GET", "/healthz").status == 200
        assert login(sport, new_code("pf")).status == 200
        assert not list(tmp_path.glob("*.tmp")), "the temporary file was left"
    finally:
        for p in (s, m):
            if p is not None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)


def test_port_file_unwritable_fails_the_start(tmp_path):
    cp = run_cli(["serve", "--port-file", "/nonexistent/dir/port"],
                 env=base_env(WXLOGIN_LISTEN="127.0.0.1:0", WXLOGIN_APPID=DEFAULT_APPID,
                              WXLOGIN_SECRET=DEFAULT_SECRET), cwd=str(tmp_path))
    assert cp.returncode == 1 and "port file" in cp.stderr, cp.stderr


# --------------------------------------------------------------------------
# HEAD
# --------------------------------------------------------------------------

def raw(port, method, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read()
    headers = {k.lower(): v for k, v in r.getheaders()}
    c.close()
    return r.status, headers, body


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_health(serve, path):
    gs, gh, gb = raw(serve.port, "GET", path)
    hs, hh, hb = raw(serve.port, "HEAD", path)
    assert gs == hs == 200 and gb and hb == b""
    assert hh["content-type"] == gh["content-type"] == "application/json"
    assert hh["content-length"] == gh["content-length"] == str(len(gb))
    ps, ph, _ = raw(serve.port, "PUT", path)
    assert ps == 405 and ph["allow"] == "GET, HEAD", ph


def test_head_elsewhere_is_still_405(serve):
    s, h, b = raw(serve.port, "HEAD", "/v1/session")
    assert s == 405 and b == b"" and h["allow"] == "GET"


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------

def test_serve_help_lists_its_own_options():
    cp = run_cli(["serve", "--help"])
    assert cp.returncode == 0
    for opt in ("--config FILE", "--check", "--port-file FILE", "SIGHUP"):
        assert opt in cp.stdout, cp.stdout
    assert "commands:" not in cp.stdout
    top = run_cli(["--help"])
    assert top.returncode == 0 and "commands:" in top.stdout and "serve --help" in top.stdout


def test_mock_help_lists_its_own_options():
    cp = subprocess.run([MOCK_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert cp.returncode == 0 and "--port-file FILE" in cp.stdout and "--app" in cp.stdout


@pytest.mark.parametrize("args,opt", [
    (["serve", "--config"], "--config"),
    (["serve", "--port-file"], "--port-file"),
    (["serve", "--config="], "--config"),
    (["serve", "--check", "--config"], "--config"),
])
def test_option_without_its_value(args, opt):
    cp = run_cli(args)
    assert cp.returncode == 2, cp
    assert f"option {opt} needs a value" in cp.stderr and "unknown argument" not in cp.stderr


def test_mock_option_without_its_value():
    cp = subprocess.run([MOCK_BIN, "--listen"], capture_output=True, text=True, timeout=10)
    assert cp.returncode == 2 and "option --listen needs a value" in cp.stderr, cp.stderr
    cp = subprocess.run([MOCK_BIN, "--bogus"], capture_output=True, text=True, timeout=10)
    assert cp.returncode == 2 and "unknown argument" in cp.stderr, cp.stderr


def test_version_has_the_commit():
    for argv in ([BIN, "--version"], [MOCK_BIN, "--version"]):
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        assert cp.returncode == 0
        m = re.fullmatch(r"wxlogin(-mock)? \d+\.\d+\.\d+ \(commit ([0-9a-z.-]+)\)\n", cp.stdout)
        assert m, cp.stdout
        commit = m.group(2)
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--git-dir"],
                             capture_output=True, timeout=10)
        if git.returncode != 0:
            assert commit == "unknown"
            continue
        h = re.match(r"(?:.*-g)?([0-9a-f]{7,})(-dirty)?$", commit)
        assert h, commit
        # a commit of this repository
        assert subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", h.group(1) + "^{commit}"],
                              timeout=10).returncode == 0, commit


# --------------------------------------------------------------------------
# the master key's check value (SQLite; Redis: test_redis.py)
# --------------------------------------------------------------------------

def test_sqlite_sealed_with_another_master_key_refuses(procs, mock, tmp_path):
    key_a = base64.b64encode(os.urandom(32)).decode()
    key_b = base64.b64encode(os.urandom(32)).decode()
    db = tmp_path / "sealed.db"
    s = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{db}", "WXLOGIN_MASTER_KEY": key_a})
    assert login(s.port, new_code("mk")).status == 200
    assert s.stop() == 0
    env = base_env(WXLOGIN_STORE=f"sqlite:{db}", WXLOGIN_MASTER_KEY=key_b,
                   WXLOGIN_APPID=DEFAULT_APPID, WXLOGIN_SECRET=DEFAULT_SECRET,
                   WXLOGIN_LISTEN=f"127.0.0.1:{free_port()}")
    cp = run_cli(["serve"], env=env, cwd=str(tmp_path))
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert "different master key" in cp.stderr, cp.stderr
    assert key_a not in cp.stderr and key_b not in cp.stderr
    # the right key still opens it
    s = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{db}", "WXLOGIN_MASTER_KEY": key_a})
    assert login(s.port, new_code("mk")).status == 200


def test_database_restored_without_its_key_file_refuses(procs, mock, tmp_path):
    """The case that used to start silently with a new key and answer every decrypt 401."""
    s = procs.serve(mock=mock)
    assert login(s.port, new_code("mk2")).status == 200
    assert s.stop() == 0
    (s.cwd / "wxlogin.db.key").unlink()
    env = base_env(WXLOGIN_APPID=DEFAULT_APPID, WXLOGIN_SECRET=DEFAULT_SECRET,
                   WXLOGIN_LISTEN=f"127.0.0.1:{free_port()}")
    cp = run_cli(["serve"], env=env, cwd=str(s.cwd))
    assert cp.returncode == 2 and "different master key" in cp.stderr, cp.stderr
