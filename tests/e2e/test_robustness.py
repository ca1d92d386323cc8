"""Malformed HTTP, body limits, concurrency and graceful shutdown."""

import http.client
import json
import os
import random
import socket
import threading
import time

import pytest

from conftest import (Counter, HTTPReader, assert_ok, login, new_code, raw_exchange,
                      read_http_response, request, wait_until)


def assert_still_serving(serve, mock=None):
    assert serve.alive(), f"serve died; log:\n{serve.log_text()[-3000:]}"
    r = request(serve.port, "GET", "/healthz", timeout=5)
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    if mock is not None:
        assert_ok(login(serve.port, new_code("after")))
    assert serve.alive()


@pytest.fixture
def small_serve(procs, mock):
    """serve with 2 threads (so a stuck thread shows) against the shared mock."""
    return procs.serve(mock=mock, env={"WXLOGIN_THREADS": "2",
                                       "WXLOGIN_UPSTREAM_TIMEOUT_MS": "2000"})


# --------------------------------------------------------------------------
# malformed HTTP on a raw socket
# --------------------------------------------------------------------------

_rng = random.Random(1234)

GARBAGE = {
    "binary-garbage": b"\x00\x01\x02garbage\xff\xfe\x80\r\n\r\n",
    "random-4k": bytes(_rng.getrandbits(8) for _ in range(4096)),
    "not-http": b"HELLO WORLD\r\n\r\n",
    "tls-client-hello": bytes.fromhex("160301020001000" "1fc0303") + b"\x00" * 200,
    "bad-version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "no-version": b"GET /healthz\r\n\r\n",
    "request-line-only-truncated": b"GET /healthz HTTP/1.1\r\n",
    "truncated-header": b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Le",
    "truncated-body": (b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"code\": \"al"),
    "header-without-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBadHeaderLine\r\n\r\n",
    "nul-in-header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "huge-header-1MiB": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20)
                         + b"\r\n\r\n"),
    "many-headers": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n"),
    "huge-url": b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-chunk-size": (b"POST /openid HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nabc\r\n0\r\n\r\n"),
    "huge-chunk-size": (b"POST /openid HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"ffffffffffffffffffff\r\nabc\r\n"),
    "cl-and-te": (b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "unknown-te": (b"POST /openid HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx"),
}


@pytest.mark.parametrize("data", list(GARBAGE.values()), ids=list(GARBAGE))
def test_malformed_request_does_not_kill_server(small_serve, mock, data):
    raw_exchange(small_serve.port, data, timeout=1)
    assert_still_serving(small_serve, mock)


INVALID_CL = {
    "cl-abc": b"abc",
    "cl-negative": b"-1",
    "cl-float": b"1e3",
    "cl-overflow": b"99999999999999999999999999",
    "cl-list": b"10, 20",
    "cl-hex": b"0x10",
}


@pytest.mark.parametrize("value", list(INVALID_CL.values()), ids=list(INVALID_CL))
def test_invalid_content_length(small_serve, mock, value):
    data = (b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + value + b"\r\nConnection: close\r\n\r\n" + b'{"code": "alice-x"}')
    res = raw_exchange(small_serve.port, data, timeout=3, half_close=True)
    if res is not None:
        status = res[0]
        assert 400 <= status < 500, f"invalid Content-Length {value!r} answered {status}: {res}"
    assert_still_serving(small_serve, mock)


def test_conflicting_duplicate_content_length(small_serve, mock):
    data = (b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 19\r\n"
            b"Connection: close\r\n\r\n" + b'{"code": "alice-x"}')
    res = raw_exchange(small_serve.port, data, timeout=3, half_close=True)
    if res is not None:
        assert 400 <= res[0] < 500, res
    assert_still_serving(small_serve, mock)


def test_connect_and_close(small_serve, mock):
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", small_serve.port))
        s.close()
    # connect then half-close without a byte
    s = socket.create_connection(("127.0.0.1", small_serve.port))
    s.shutdown(socket.SHUT_WR)
    s.settimeout(3)
    try:
        s.recv(100)
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    # connect then reset (SO_LINGER 0)
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", small_serve.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    assert_still_serving(small_serve, mock)


def test_client_gone_while_upstream_in_flight(small_serve, mock):
    """The client sends a login that takes 300 ms upstream and leaves (reset) at once."""
    before = mock.exchanges()
    for i in range(10):
        body = json.dumps({"code": new_code("gone", "delay300")}).encode()
        s = socket.create_connection(("127.0.0.1", small_serve.port))
        s.sendall(b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # wait until the mock has answered the abandoned requests (codes spent), then a
    # moment for serve to process those answers
    wait_until(lambda: mock.exchanges() >= before + 10, timeout=2)
    time.sleep(0.2)
    assert_still_serving(small_serve, mock)


def test_idle_and_slow_clients_do_not_block_others(small_serve, mock):
    """20 connections that sent half a request hold no worker: others still get answers."""
    idle = []
    try:
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", small_serve.port))
            if i % 2:
                s.sendall(b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"co")
            else:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            idle.append(s)
        t0 = time.monotonic()
        assert_still_serving(small_serve, mock)
        assert time.monotonic() - t0 < 2, "requests waited behind idle connections"
    finally:
        for s in idle:
            s.close()


def test_pipelined_requests(small_serve):
    """Two requests in one write on a keep-alive connection both get answered, in order."""
    s = socket.create_connection(("127.0.0.1", small_serve.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = HTTPReader(s)
        first = reader.read_response()
        second = reader.read_response()
    finally:
        s.close()
    assert first is not None and first[0] == 200, first
    assert second is not None and second[0] == 404, second


# --------------------------------------------------------------------------
# body size limit
# --------------------------------------------------------------------------

def padded_body(code, size):
    """A valid JSON object {"code": code} padded with whitespace to exactly size bytes."""
    core_a = b'{"code": "' + code.encode() + b'"'
    pad = size - len(core_a) - 1
    assert pad >= 0
    return core_a + b" " * pad + b"}"


def post_raw(port, body, extra_headers=b"", chunked=False, timeout=5):
    head = (b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\n" + extra_headers)
    if chunked:
        chunks = b""
        for i in range(0, len(body), 1000):
            part = body[i:i + 1000]
            chunks += b"%x\r\n" % len(part) + part + b"\r\n"
        data = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    else:
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return raw_exchange(port, data, timeout=timeout)


def assert_413(res, what):
    assert res is not None, f"{what}: connection closed without an answer (expected 413)"
    status, headers, body = res
    assert status == 413, f"{what}: expected 413, got {res}"
    err = json.loads(body)
    assert err.get("error") == "payload_too_large" and err.get("action") == "none", err
    assert "wx_errcode" not in err, err


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_limit_small(procs, mock, chunked):
    s = procs.serve(mock=mock, env={"WXLOGIN_MAX_BODY_BYTES": "1024"})
    with Counter(mock) as c:
        res = post_raw(s.port, padded_body(new_code("big"), 1025), chunked=chunked)
    assert_413(res, f"1025-byte body, limit 1024, chunked={chunked}")
    c.assert_delta(0, settle=0.05)
    # exactly at the limit is fine
    res = post_raw(s.port, padded_body(new_code("fits"), 1024), chunked=chunked)
    assert res is not None and res[0] == 200, f"1024-byte body, limit 1024: {res}"
    assert_still_serving(s, mock)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_limit_default_64k(procs, mock, chunked):
    s = procs.serve(mock=mock)
    res = post_raw(s.port, padded_body(new_code("big"), 65537), chunked=chunked)
    assert_413(res, f"65537-byte body, default limit, chunked={chunked}")
    res = post_raw(s.port, padded_body(new_code("fits"), 65536), chunked=chunked)
    assert res is not None and res[0] == 200, f"65536-byte body, default limit: {res}"
    assert_still_serving(s, mock)


def test_huge_declared_length_answered_without_body(small_serve, mock):
    """Content-Length of 1 GB: 413 at once, without waiting for (or reading) the body."""
    s = socket.create_connection(("127.0.0.1", small_serve.port), timeout=5)
    try:
        s.sendall(b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000000\r\n\r\n{\"code\":")
        t0 = time.monotonic()
        res = read_http_response(s, timeout=4)
    finally:
        s.close()
    assert_413(res, "Content-Length 1e9")
    assert time.monotonic() - t0 < 3
    assert_still_serving(small_serve, mock)


def test_chunked_body_within_limit_accepted(small_serve):
    res = post_raw(small_serve.port, json.dumps({"code": new_code("chunky")}).encode(), chunked=True)
    assert res is not None and res[0] == 200, res
    assert set(json.loads(res[2])) == {"openid"}


# --------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------

def test_300_concurrent_logins_with_300ms_upstream(procs, mock):
    n = 300
    # 300 logins at once from one address: past rate_limit_address's burst (120), so it is off
    s = procs.serve(mock=mock, env={"WXLOGIN_THREADS": "2", "WXLOGIN_RATE_LIMIT_ADDRESS": "off"})
    barrier = threading.Barrier(n + 1)
    results = [None] * n
    conns = []
    for i in range(n):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=15)
        c.connect()
        conns.append(c)

    def worker(i):
        c = conns[i]
        # distinct users (not starting with "u": no unionid) so cross-wired answers show
        body = json.dumps({"code": f"delay300_p{i}-{os.urandom(6).hex()}"})
        try:
            barrier.wait(timeout=30)
            c.request("POST", "/openid", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            results[i] = (r.status, r.read())
        except Exception as e:  # report, don't hang the barrier
            results[i] = ("exception", repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    with Counter(mock) as cnt:
        barrier.wait(timeout=30)
        t0 = time.monotonic()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.monotonic() - t0
    bad = [(i, r) for i, r in enumerate(results) if r is None or r[0] != 200]
    assert not bad, f"{len(bad)} of {n} failed, e.g. {bad[:5]}"
    openids = set()
    for st, body in results:
        d = json.loads(body)
        assert set(d) == {"openid"}, d
        openids.add(d["openid"])
    assert len(openids) == n, "each user pN must get its own openid"
    assert elapsed < 4.0, f"{n} concurrent logins took {elapsed:.2f}s (limit 4s)"
    cnt.assert_delta(n, settle=0.05)
    # no answer went to the wrong client: a sample of users logs in again, one by one
    for i in range(0, n, 15):
        again = assert_ok(login(s.port, f"p{i}-{os.urandom(6).hex()}"))
        assert again["openid"] == json.loads(results[i][1])["openid"], f"user p{i} got another user's openid"
    assert s.alive()


# --------------------------------------------------------------------------
# graceful shutdown
# --------------------------------------------------------------------------

def test_sigterm_drains_in_flight_requests(procs, mock):
    s = procs.serve(mock=mock, env={"WXLOGIN_THREADS": "2"})
    n = 10
    results = [None] * n
    before = mock.requests()

    def worker(i):
        try:
            results[i] = login(s.port, new_code(f"term{i}", "delay800"), timeout=15)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    assert wait_until(lambda: mock.requests() >= before + n, timeout=5), \
        "the 10 requests did not reach the mock"
    s.terminate()
    for t in threads:
        t.join(timeout=15)
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), f"request {i} failed during shutdown: {r!r}"
        assert_ok(r)
    try:
        rc = s.popen.wait(timeout=10)
    except Exception:
        pytest.fail("serve did not exit within 10 s of SIGTERM")
    assert rc == 0, f"serve exited {rc} after SIGTERM; log:\n{s.log_text()[-2000:]}"


def test_sigterm_idle_exits_zero_promptly(procs, mock):
    s = procs.serve(mock=mock)
    assert_ok(login(s.port, new_code("idle")))
    t0 = time.monotonic()
    s.terminate()
    rc = s.popen.wait(timeout=10)
    assert rc == 0, s.log_text()[-2000:]
    assert time.monotonic() - t0 < 3, "idle shutdown took too long"
    # the port is released
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=1).close()


def test_sigterm_not_held_by_half_closed_partial_request(procs, mock):
    """A client sent half a body and then shut down its sending side: that request can
    never complete, so it must not hold up shutdown (nor count as in flight)."""
    s = procs.serve(mock=mock)
    sock = socket.create_connection(("127.0.0.1", s.port))
    try:
        sock.sendall(b"POST /openid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"code\": \"al")
        sock.shutdown(socket.SHUT_WR)
        assert_still_serving(s, mock)
        t0 = time.monotonic()
        s.terminate()
        try:
            rc = s.popen.wait(timeout=4)
        except Exception:
            rc = None
        took = time.monotonic() - t0
    finally:
        sock.close()
    assert rc == 0 and took < 3, f"SIGTERM exit code {rc} after {took:.2f}s (expected 0 within 3s)"
