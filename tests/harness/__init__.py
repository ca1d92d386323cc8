"""The one place that starts and stops processes for the e2e suite (tests/e2e/conftest.py) and
the bench (bench/run.py): processes with log files and sanitizer-report checks, free ports,
readiness by polling a path or a port, a clean stop (SIGTERM, then SIGKILL), wxlogin and its mock,
and a private redis-server. Python standard library only.

    import sys; sys.path.insert(0, "<repo>/tests")
    from harness import ProcessGroup
    g = ProcessGroup(log_dir)
    mock, serve = g.pair()
    ...
    problems = g.close()   # sanitizer reports found in the logs
"""

from .procs import (READY_TIMEOUT, SANITIZER_MARKERS, Proc, base_env, children, cpu_ticks,
                    free_port, listen_ports, port_open, rss_kib, sanitizer_report, start,
                    wait_until)
from .redisserver import REDIS_SERVER, RedisError, RedisServer, RespClient, redis_ping
from .web import Resp, http_ok, request
from .wxlogin import (BIN, DEFAULT_APPID, DEFAULT_SECRET, MOCK_BIN, REPO, SANITIZED, MockProc,
                      ProcessGroup, ServeProc)

__all__ = [
    "BIN", "DEFAULT_APPID", "DEFAULT_SECRET", "MOCK_BIN", "REDIS_SERVER", "READY_TIMEOUT",
    "REPO", "SANITIZED", "SANITIZER_MARKERS", "MockProc", "Proc", "ProcessGroup", "RedisError",
    "RedisServer", "Resp", "RespClient", "ServeProc", "base_env", "children", "cpu_ticks",
    "free_port", "http_ok", "listen_ports", "port_open", "redis_ping", "request", "rss_kib",
    "sanitizer_report", "start", "wait_until",
]
