"""A private redis-server for tests and the bench, and a tiny RESP client to inspect it.

RedisServer runs in the foreground as our child (not daemonized), on 127.0.0.1 and/or a unix
socket, without persistence unless asked (appendfsync=...), its output in a log file.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .procs import free_port, listen_ports

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisError(Exception):
    pass


class RespClient:
    """Blocking RESP2 client over TCP or a unix socket. Replies: bytes, int, list, None;
    an error reply raises RedisError."""

    def __init__(self, port=None, unix=None, password=None, db=0, timeout=5.0):
        if unix is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.cmd("AUTH", password)
        if db:
            self.cmd("SELECT", db)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            out = []
            err = None
            for _ in range(n):
                try:
                    out.append(self._reply())
                except RedisError as e:  # keep the stream in sync
                    err = err or e
                    out.append(e)
            return out
        raise RedisError(f"unexpected RESP line {line!r}")

    def cmd(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))
        return self._reply()


def redis_ping(port=None, unix=None, password=None):
    try:
        with RespClient(port=port, unix=unix, password=password, timeout=0.5) as c:
            return c.cmd("PING") == b"PONG"
    except (OSError, ConnectionError, RedisError):
        return False


class RedisServer:
    """A redis-server on 127.0.0.1:port (port 0: unix socket only), stderr/stdout to a log.

    stop()/start() restart it on the same port (and socket); without appendfsync data is lost
    (no persistence); with appendfsync ("always", "everysec", "no") it runs with an append-only
    file in its directory, which a start() after kill9() replays.
    pause()/resume() freeze it with SIGSTOP/SIGCONT (connections and data survive).
    """

    _n = 0

    def __init__(self, workdir, port=None, password=None, unixsocket=None, databases=64,
                 appendfsync=None, binary=None):
        RedisServer._n += 1
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pick_port = port is None
        self.port = free_port() if port is None else port
        self.password = password
        self.unixsocket = unixsocket
        self.databases = databases
        self.fsync = appendfsync
        self.binary = binary or REDIS_SERVER
        self.log_path = self.dir / f"redis-{RedisServer._n}.log"
        self.popen = None
        self.paused = False

    @property
    def pid(self):
        return self.popen.pid if self.popen is not None else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def argv(self):
        a = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes" if self.fsync else "no", "--dir", str(self.dir),
             "--daemonize", "no", "--databases", str(self.databases), "--logfile", ""]
        if self.fsync:
            a += ["--appendfsync", self.fsync]
        if self.password is not None:
            a += ["--requirepass", self.password]
        if self.unixsocket is not None:
            a += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        return a

    def ping(self):
        if self.port:
            return redis_ping(port=self.port, password=self.password)
        return redis_ping(unix=str(self.unixsocket), password=self.password)

    def _start_once(self, timeout):
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=log, start_new_session=True)
        finally:
            log.close()
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                return False
            # whoever answers must be our redis-server, not a program that took the port
            if self.ping() and (not self.port or self.port in listen_ports(self.popen.pid)):
                return True
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}")

    def start(self, timeout=10.0):
        """Start it and wait for PING. A first start on a port picked here moves to another
        port if that one got taken meanwhile; a restart keeps its port."""
        assert not self.alive(), "redis already running"
        for _ in range(5 if self._pick_port else 1):
            if self._start_once(timeout):
                self._pick_port = False  # from now on: the same port on every restart
                return self
            if not (self._pick_port and "Address already in use" in self.log_text()):
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server exited at start ({self.popen.returncode}):\n"
                           f"{self.log_text()[-3000:]}")

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pause(self):
        os.kill(self.popen.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.paused and self.alive():
            os.kill(self.popen.pid, signal.SIGCONT)
        self.paused = False

    def kill9(self):
        """SIGKILL, also when frozen (no SIGCONT first: it would let Redis run once more)."""
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.paused = False

    def stop(self, timeout=5.0):
        """SIGTERM (after SIGCONT if paused), then SIGKILL after timeout."""
        if self.popen is None:
            return
        self.resume()
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        # the port is free again once the process is gone (SO_REUSEADDR on restart)

    def restart(self):
        self.stop()
        return self.start()

    def client(self, db=0):
        if self.port:
            return RespClient(port=self.port, password=self.password, db=db)
        return RespClient(unix=str(self.unixsocket), password=self.password, db=db)

    def info(self, section):
        with self.client() as c:
            text = c.cmd("INFO", section).decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def url(self, db=None, password=None):
        pw = self.password if password is None else password
        auth = f":{pw}@" if pw is not None else ""
        path = f"/{db}" if db is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}{path}"
