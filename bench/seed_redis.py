#!/usr/bin/python3
"""bench/seed_redis.py: fills a wxlogin Redis store with sessions for the GET /v1/session run.

    seed_redis.py HOST PORT TOKENS_FILE --sessions N [--db N] [--users N] [--appid APPID] [--ttl SECONDS]

The Redis counterpart of seed_sessions.py (and built from its generators: same tokens, openids
and unionids). Writes, over one pipelined connection, the keys the service's Redis store
(src/session/session_redis.c) reads:

    wxlogin:<appid>:u:<openid>          HSET sk <60 random bytes> unionid <uBn...> updated <now>
    wxlogin:<appid>:s:<sha256 hex>      HSET openid <oBn...> exp <now + ttl>;  EXPIREAT exp

where <sha256 hex> is the lowercase hex SHA-256 of the whole token string ("wxl_" included).
GET /v1/session never reads sk, so a random stand-in does (the service would fail to unseal it,
which only a login of that user or the session-key routes would notice).

The commands go out in batches of a few thousand, each batch's replies read and checked before
the next (every reply must be the integer the command answers for a new key: an error or a
surprise fails the seeding). Then DBSIZE must equal sessions + users, and the first token's key
must read back with a TTL. The database must be empty to start with (run.py's Redis is private
and new). The tokens go to TOKENS_FILE, one per line, in random order. Stdlib only.
"""

import argparse
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # no bench/__pycache__ in the working tree
from seed_sessions import new_openids, new_token, new_unionid, token_hash, write_tokens

BATCH = 4000  # sessions (8000 commands, ~1 MB) per round trip


def resp(*args) -> bytes:
    """One command in RESP (an array of bulk strings); args are str or bytes."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Redis:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rf = self.sock.makefile("rb", buffering=1 << 20)

    def close(self):
        self.rf.close()
        self.sock.close()

    def read_reply(self):
        """A reply: int, str (simple or bulk), None, list, or an Exception for an error reply."""
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by Redis mid-reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest.decode("ascii", "replace")
        if kind == b"-":
            return RuntimeError(rest.decode("utf-8", "replace"))
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            return data[:-2].decode("utf-8", "replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise ConnectionError("unexpected reply from Redis: %r" % line[:80])

    def call(self, *args):
        self.sock.sendall(resp(*args))
        r = self.read_reply()
        if isinstance(r, Exception):
            raise r
        return r

    def pipeline(self, payload: bytes, expected: list) -> int:
        """Sends payload (len(expected) commands) and checks each reply; returns the mismatches."""
        self.sock.sendall(payload)
        bad = 0
        for want in expected:
            got = self.read_reply()
            if got != want:
                if bad < 3:
                    print("seed: unexpected reply %r (expected %r)" % (got, want), file=sys.stderr)
                bad += 1
        return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("tokens_file")
    ap.add_argument("--db", type=int, default=0)
    ap.add_argument("--sessions", type=int, default=100000)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--appid", default="wx1234567890abcdef")
    ap.add_argument("--ttl", type=int, default=365 * 24 * 3600)
    a = ap.parse_args()
    if a.sessions < 1 or a.users < 1:
        ap.error("--sessions and --users must be positive")
    users = min(a.users, a.sessions)

    t0 = time.monotonic()
    now = int(time.time())
    expires = now + a.ttl
    openids = new_openids(users)
    prefix = "wxlogin:%s:" % a.appid
    exp_s = str(expires)

    r = Redis(a.host, a.port)
    try:
        if a.db != 0:
            r.call("SELECT", str(a.db))
        if r.call("DBSIZE") != 0:
            print("seed: Redis db %d is not empty" % a.db, file=sys.stderr)
            return 1
        bad = 0
        # Users first (HSET of 3 new fields answers 3).
        for lo in range(0, users, BATCH):
            hi = min(users, lo + BATCH)
            payload = b"".join(
                resp("HSET", prefix + "u:" + openids[i], "sk", os.urandom(60), "unionid", new_unionid(i),
                     "updated", str(now))
                for i in range(lo, hi))
            bad += r.pipeline(payload, [3] * (hi - lo))
        # Sessions: HSET of 2 new fields answers 2, EXPIREAT on an existing key answers 1.
        tokens = []
        for lo in range(0, a.sessions, BATCH):
            hi = min(a.sessions, lo + BATCH)
            parts = []
            for i in range(lo, hi):
                tok = new_token()
                tokens.append(tok)
                key = prefix + "s:" + token_hash(tok).hex()
                parts.append(resp("HSET", key, "openid", openids[i % users], "exp", exp_s))
                parts.append(resp("EXPIREAT", key, exp_s))
            bad += r.pipeline(b"".join(parts), [2, 1] * (hi - lo))
        if bad:
            print("seed: %d commands did not answer as expected" % bad, file=sys.stderr)
            return 1
        n = r.call("DBSIZE")
        key = prefix + "s:" + token_hash(tokens[0]).hex()
        back = r.call("HGETALL", key)
        ttl = r.call("TTL", key)
        mem = r.call("MEMORY", "STATS")
    finally:
        r.close()

    if n != a.sessions + users:
        print("seed: DBSIZE is %d after writing %d sessions and %d users" % (n, a.sessions, users),
              file=sys.stderr)
        return 1
    if back != ["openid", openids[0], "exp", exp_s] or not isinstance(ttl, int) or ttl <= 0:
        print("seed: the first session reads back as %r with TTL %r" % (back, ttl), file=sys.stderr)
        return 1
    used = dict(zip(mem[0::2], mem[1::2])).get("dataset.bytes", 0) if isinstance(mem, list) else 0
    write_tokens(a.tokens_file, tokens)
    print("seed: %d sessions for %d users in Redis in %.1fs (%d keys, dataset %.1f MiB)"
          % (a.sessions, users, time.monotonic() - t0, n, used / 1048576), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
