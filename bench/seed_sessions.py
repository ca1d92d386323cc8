#!/usr/bin/python3
"""bench/seed_sessions.py: fills a wxlogin SQLite store with sessions for the GET /v1/session run.

    seed_sessions.py DB TOKENS_FILE --sessions N [--users N] [--appid APPID] [--ttl SECONDS]

DB must already have wxlogin's schema (the service creates it when it starts; run.py starts it
once and stops it before calling this), and no process may have it open while this runs. Writes
N sessions for --users distinct users of --appid, in one transaction, the way the service does:

    token      = "wxl_" + base64url(32 random bytes), no padding     (47 characters)
    token_hash = SHA-256 of the whole token string, "wxl_" included  (32-byte BLOB)
    expires_at = now + --ttl (a year by default: nothing expires during a run)

Every user gets a unionid (so each answer carries X-WX-UnionID too) and a random stand-in for
the sealed session_key (GET /v1/session never reads it). The tokens go to TOKENS_FILE, one per
line, in random order (so walking the file walks the B-tree at random). Stdlib only.
seed_redis.py does the same for the Redis store, with the generators defined here.
"""

import argparse
import base64
import hashlib
import os
import sqlite3
import sys
import time


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# The generators below are shared with seed_redis.py, so both stores get the same kind of data.

def new_token() -> str:
    """A session token exactly like the service's: "wxl_" + base64url(32 random bytes)."""
    return "wxl_" + b64url(os.urandom(32))


def token_hash(tok: str) -> bytes:
    """What the service looks a token up by: SHA-256 of the whole token string."""
    return hashlib.sha256(tok.encode("ascii")).digest()


def new_openids(users: int) -> list:
    """Distinct by construction: a counter in the name, random filler to WeChat's 28 characters."""
    return ["oBn%06d%s" % (i, b64url(os.urandom(15))[:19]) for i in range(users)]


def new_unionid(i: int) -> str:
    return "uBn%06d%s" % (i, b64url(os.urandom(15))[:19])


def write_tokens(path: str, tokens: list) -> None:
    """One token per line, in the order given (random relative to their hashes)."""
    with open(path, "w", encoding="ascii") as f:
        f.write("\n".join(tokens))
        f.write("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("tokens_file")
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

    db = sqlite3.connect(a.db, isolation_level=None)
    try:
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"users", "sessions"} <= have:
            print("seed: %s has no wxlogin schema (tables: %s)" % (a.db, sorted(have)), file=sys.stderr)
            return 1
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO users (appid, openid, unionid, session_key, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (a.appid, o, new_unionid(i), os.urandom(60), now, now)
                for i, o in enumerate(openids)
            ),
        )
        tokens = []

        def rows():
            for i in range(a.sessions):
                tok = new_token()
                tokens.append(tok)
                yield (token_hash(tok), a.appid, openids[i % users], now, expires)

        db.executemany(
            "INSERT INTO sessions (token_hash, appid, openid, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            rows(),
        )
        db.execute("COMMIT")
        n = db.execute("SELECT count(*) FROM sessions WHERE expires_at > ?", (now,)).fetchone()[0]
    finally:
        db.close()  # the last connection checkpoints the WAL into the database file

    if n < a.sessions:
        print("seed: only %d live sessions in the store after inserting %d" % (n, a.sessions), file=sys.stderr)
        return 1
    write_tokens(a.tokens_file, tokens)
    print("seed: %d sessions for %d users in %.1fs (%d live sessions in the store)"
          % (a.sessions, users, time.monotonic() - t0, n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
