#!/usr/bin/python3
"""bench/reqloop.py: N sequential requests on one keep-alive connection, for run.py's allocation
and syscall counts (wrk would keep many connections busy; this keeps exactly one request in
flight, so a count over the run divided by N is a count per request).

    reqloop.py PORT session N --token TOKEN        GET /v1/session, the same token every time
    reqloop.py PORT login   N --code-prefix P      POST /v1/login {"code": "P<i>"}, i = 1..N
    reqloop.py PORT openid  N --code-prefix P      POST /openid   {"code": "P<i>"}

Always 127.0.0.1. Every answer must be 200 (the first other one fails the run, with its body).
Prints one line on stderr: the requests, the time, and how many connections it took (1 unless
the service closed the connection). Stdlib only.
"""

import argparse
import http.client
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("port", type=int)
    ap.add_argument("mode", choices=["session", "login", "openid"])
    ap.add_argument("n", type=int)
    ap.add_argument("--token", default="")
    ap.add_argument("--code-prefix", default="")
    a = ap.parse_args()
    if a.mode == "session" and not a.token:
        ap.error("session needs --token")
    if a.mode != "session" and not a.code_prefix:
        ap.error(a.mode + " needs --code-prefix")

    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
    connections = 0
    t0 = time.monotonic()
    for i in range(1, a.n + 1):
        if conn.sock is None:
            conn.connect()
            connections += 1
        if a.mode == "session":
            conn.request("GET", "/v1/session", headers={"Authorization": "Bearer " + a.token})
        else:
            body = ('{"code":"%s%d"}' % (a.code_prefix, i)).encode("ascii")
            path = "/v1/login" if a.mode == "login" else "/openid"
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            print("reqloop: %s request %d answered %d: %s"
                  % (a.mode, i, resp.status, data[:300].decode("utf-8", "replace")), file=sys.stderr)
            return 1
        if resp.will_close:
            conn.close()
    conn.close()
    print("reqloop: %d %s requests in %.2fs on %d connection(s)"
          % (a.n, a.mode, time.monotonic() - t0, connections), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
