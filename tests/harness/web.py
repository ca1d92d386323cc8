"""HTTP on loopback: one request per connection, and readiness by polling a path."""

import http.client
import json
from typing import NamedTuple


class Resp(NamedTuple):
    status: int
    headers: dict  # lower-cased header names
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def request(port, method, path, body=None, headers=None, timeout=15.0, host="127.0.0.1"):
    """One request on its own connection. Returns Resp(status, headers, body).

    Every response body is checked for the string "session_key": wxlogin must never hand the
    session key (or even its name) to a client.
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
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


def http_ok(port, path, timeout=1.0):
    """True if GET path on 127.0.0.1:port answers 200."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        conn.close()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False
