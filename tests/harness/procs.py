"""Processes: start one with its output in a log file, wait until it is ready, stop it
(SIGTERM, then SIGKILL), and find sanitizer reports in its log.

Nothing here knows what the process is: wxlogin.py, redisserver.py and bench/run.py build on it.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "WARNING: ThreadSanitizer", "ThreadSanitizer:")

READY_TIMEOUT = 10.0


def free_port():
    """A port nothing listens on right now (the kernel's pick; another process may take it
    before the caller binds it: starters retry, see start())."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


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


def sanitizer_report(text):
    """An excerpt around the first sanitizer marker in text, or None."""
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            return text[max(0, i - 200): i + 3000]
    return None


def base_env(**overrides):
    """The caller's environment without any WXLOGIN_* variable, plus overrides (a value of None
    removes the variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXLOGIN_")}
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


# --------------------------------------------------------------------------
# who listens where: /proc, no ss needed
# --------------------------------------------------------------------------

def _socket_inodes(pid):
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def listen_ports(pid):
    """The TCP ports the process listens on (IPv4 and IPv6), from /proc; empty if unknown."""
    inodes = _socket_inodes(pid)
    ports = set()
    if not inodes:
        return ports
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) > 9 and p[3] == "0A" and p[9] in inodes:
                        ports.add(int(p[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def children(pid):
    """The pids whose parent is pid (e.g. nginx's workers)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        if int(st.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return sorted(out)


def cpu_ticks(*pids):
    """CPU time (user + system, all threads) of the pids, in clock ticks (0 for a gone one)."""
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return t


def rss_kib(pid):
    """Resident set size of pid in KiB (VmRSS), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------

class Proc:
    """A started process with stdout and stderr in one log file, in its own session (so a
    signal to the test's group does not reach it) and its own working directory."""

    def __init__(self, name, argv, env, log_path, port=None, cwd=None, append=False):
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = Path(log_path)
        self.port = port
        self._log = open(self.log_path, "ab" if append else "wb")
        # its own working directory: wxlogin keeps files (e.g. a default sqlite store) relative
        # to it, and they must not land in the repository
        self.cwd = Path(cwd) if cwd is not None else self.log_path.with_suffix(".cwd")
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            self.argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
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
        import json
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

    def signal(self, sig):
        if self.alive():
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        self.signal(signal.SIGTERM)

    def kill9(self):
        """SIGKILL (also when stopped: no SIGCONT first) and reap it."""
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.alive():
            self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.signal(signal.SIGTERM)
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

    def owns_port(self, port=None):
        """True if this process listens on port (its own); also True when /proc cannot tell."""
        port = self.port if port is None else port
        ports = listen_ports(self.pid)
        return port in ports if ports or os.path.isdir(f"/proc/{self.pid}/fd") else True

    def check_sanitizers(self):
        rep = sanitizer_report(self.log_text())
        if rep:
            return f"sanitizer report in {self.name} ({self.log_path}):\n{rep}"
        return None


def start(cls, name, make_argv_env, log_dir, ready, attempts=4, fixed_port=None,
          timeout=READY_TIMEOUT, **kw):
    """Start cls(name, argv, env, log, port) on a free port until ready(proc) holds.

    make_argv_env(port) -> (argv, env). ready(proc) is polled while the process lives; it must
    also check the listener is the process's own (Proc.owns_port), since another program can
    take a free port between free_port() and the bind. A process that exits early is retried on
    another port (the port was taken); one that stays up but never gets ready is an error.
    fixed_port: the process listens there by its own configuration (one attempt).
    """
    last = ""
    if fixed_port is not None:
        attempts = 1
    for attempt in range(attempts):
        port = fixed_port if fixed_port is not None else free_port()
        argv, env = make_argv_env(port)
        log_path = Path(log_dir) / (f"{name}-{attempt}.log" if attempt else f"{name}.log")
        p = cls(name, argv, env, log_path, port, **kw)
        deadline = time.monotonic() + timeout
        taken = False
        while time.monotonic() < deadline:
            if not p.alive():
                break
            if ready(p):
                if p.owns_port():
                    return p
                taken = True  # someone else answered on our port
                break
            time.sleep(0.02)
        if p.alive() and not taken:
            p.stop(timeout=3)
            raise RuntimeError(
                f"{name} was not ready on port {port} within {timeout}s; "
                f"log:\n{p.log_text()[-4000:]}")
        last = p.log_text()
        p.stop(timeout=3)
        rep = sanitizer_report(last)
        if rep:
            raise RuntimeError(f"{name} crashed at start with a sanitizer report:\n{rep}")
    raise RuntimeError(f"{name} failed to start {attempts} times; last log:\n{last[-4000:]}")
