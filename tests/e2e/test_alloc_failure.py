"""Allocation-failure injection (curl's torture mode): every allocation our code makes on a
request's path fails once, and each answer is still a JSON error or the right success.

`wxlogin-failalloc` (built beside wxlogin by `make build`; tests/alloc/failalloc.c) is wxlogin
linked with `ld --wrap` on the allocating functions our code calls (malloc, calloc, realloc,
strdup, aligned_alloc, asprintf; jansson's json_loadb/dumps/pack/string/array/array_append_new;
EVP_MD_CTX_new, EVP_CIPHER_CTX_new; curl_easy_init, curl_slist_append, curl_url;
MHD_create_response_from_buffer, MHD_add_response_header): our calls only, as the linker
rewrites references in our objects and none in the shared libraries. The test arms it through a
shared control file to fail the Nth such call, sends one request, and reads back whether the
Nth call came (and from where). For each route it runs N = 1, 2, ... until a request completes
without reaching N: every call on that route's path has then failed once.

Each failed request must answer (no hang, no dropped connection) with the route's success,
exactly (a 200 that an allocation failure left short of a field, or a verdict computed without
its hash, is wrong), or a JSON 503 (`internal` or `store_unavailable`, action retry; 500
`internal` when the answer itself could not be built). Never a 4xx (the client's request was
good), a 5xx blaming WeChat, or a retried single-use code. The service must answer /healthz right
after, and every route normally at the end. Any wrong answer fails the test; `pytest -s` prints
each route's failed calls (site, function, answer). Under ASan, LeakSanitizer checks at exit that
no failure path leaked (the process group reports it).

Routes: the login and user routes (/openid, /v1/login and a reused code, /v1/session,
/v1/refresh, /v1/logout with and without {"all": true}, /v1/decrypt, /v1/check-signature,
/v1/phone, /v1/session/check), the access-token admin routes, the admin user routes (a user's
record, plain and banned; erasure; logout everywhere; ban and unban; ending one session), and
the health routes.
"""

import hashlib
import http.client
import json
import mmap
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, DEFAULT_APPID, new_code, post_json, request
from loadgen import NO_LIMITS
from test_userdata import mock_session_key, sealed, user_info

FA_BIN = Path(BIN).parent / "wxlogin-failalloc"
ADMIN = "adm-F4iL7aLl0c8xQ2wE5rT9yU3oP6sD1gH"
FNS = [None, "malloc", "calloc", "realloc", "strdup", "aligned_alloc", "asprintf", "json_loadb",
       "json_dumps", "json_pack", "json_string", "json_array", "json_array_append_new",
       "EVP_MD_CTX_new", "EVP_CIPHER_CTX_new", "curl_easy_init", "curl_slist_append", "curl_url",
       "MHD_create_response_from_buffer", "MHD_add_response_header"]
MAGIC, ARMED, FAIL_AT, COUNT, HIT, SITE, FN = range(7)
CTL_MAGIC = 0x77786661696c
MAX_N = 300

pytestmark = pytest.mark.skipif(not FA_BIN.exists(), reason=f"{FA_BIN} not built")


class Injector:
    """The control page of tests/alloc/failalloc.c (int64 slots)."""

    def __init__(self, path):
        path.write_bytes(b"\0" * 4096)
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), 4096)

    def get(self, i):
        return struct.unpack_from("q", self.m, 8 * i)[0]

    def set(self, i, v):
        struct.pack_into("q", self.m, 8 * i, v)

    def arm(self, n):
        self.set(ARMED, 0)
        for i in (COUNT, HIT, SITE, FN):
            self.set(i, 0)
        self.set(FAIL_AT, n)
        self.set(ARMED, 1)

    def disarm(self):
        self.set(ARMED, 0)
        return self.get(HIT) == 1, self.get(SITE), FNS[self.get(FN)], self.get(COUNT)


def bearer(token, json_body=False):
    h = {"Authorization": f"Bearer {token}"}
    if json_body:
        h["Content-Type"] = "application/json"
    return h


def login(port, user):
    r = post_json(port, "/v1/login", {"code": new_code(user)})
    assert r.status == 200, r
    return r.json()


def status_is(*codes):
    return lambda r, s: r.status in codes


# Each route: setup(ctx) -> state (run unarmed before each try), send(ctx, state) -> Resp,
# ok(resp, state) -> whether it is the route's success, exactly (a 200 missing a field that an
# allocation failure dropped is not one).
def _openid():
    return (lambda c: None,
            lambda c, s: post_json(c.port, "/openid", {"code": new_code("fa_openid")}),
            lambda r, s: r.status == 200 and set(r.json()) == {"openid"})


def _login():
    return (lambda c: None,
            lambda c, s: post_json(c.port, "/v1/login", {"code": new_code("fa_login")}),
            lambda r, s: r.status == 200 and r.json()["token"].startswith("wxl_"))


def _login_reuse():
    def setup(c):
        code = new_code("fa_reuse")
        r = post_json(c.port, "/v1/login", {"code": code})
        assert r.status == 200, r
        return code, r.json()["token"]
    return (setup,
            lambda c, s: post_json(c.port, "/v1/login", {"code": s[0]}),
            lambda r, s: r.status == 200 and r.json()["token"] == s[1])


def _with_token(method, path, ok, user="fa_user", fresh=False, body=None):
    def setup(c):
        if fresh or "token" not in c.users.get(user, {}):
            c.users[user] = login(c.port, user)
        return c.users[user]

    def send(c, s):
        b = body(c, s) if body else None
        return request(c.port, method, path, body=b, headers=bearer(s["token"], b is not None))
    return setup, send, ok


def _decrypt_body(c, s):
    if "sealed" not in s:
        sk = mock_session_key(c.mock, s["openid"])
        s["data"] = user_info(s["openid"])
        s["sealed"] = json.dumps(sealed(sk, s["data"]))
    return s["sealed"]


def _sig_body(c, s):
    if "sig" not in s:
        sk = mock_session_key(c.mock, s["openid"])
        raw = json.dumps({"nickName": "Band", "gender": 1})
        s["sig"] = json.dumps({"rawData": raw, "signature": hashlib.sha1(
            (raw + sk).encode()).hexdigest()})
    return s["sig"]


def admin_req(c, method, path, body=None):
    h = {"Authorization": f"Bearer {ADMIN}"}
    if body is not None:
        h["Content-Type"] = "application/json"
        body = json.dumps(body)
    return request(c.port, method, path, body=body, headers=h)


def _admin(method, path, body=None):
    return (lambda c: None, lambda c, s: admin_req(c, method, path, body), status_is(200))


# The admin user routes (src/handlers/users.c), on the mock's default app. Users whose name
# starts with "u" get a unionid from the mock, so the record has every optional field.
USERS = f"/admin/v1/apps/{DEFAULT_APPID}/users"


def user_path(s, tail=""):
    return f"{USERS}/{s['openid']}{tail}"


def _admin_user_record(banned):
    """GET .../users/{openid}: the answer must be the record an unarmed request gets, whole."""
    user = "ufa_banned" if banned else "ufa_record"

    def setup(c):
        if user not in c.users:
            u = login(c.port, user)
            login(c.port, user)  # two live sessions
            if banned:
                r = admin_req(c, "POST", user_path(u, "/ban"),
                              {"reason": "fa", "until": int(time.time()) + 86400})
                assert r.status == 200, r
            c.users[user] = u
        s = dict(c.users[user])
        r = admin_req(c, "GET", user_path(s))
        assert r.status == 200, r
        s["record"] = r.json()
        want = {"appid", "openid", "unionid", "banned", "first_login", "last_login", "sessions"}
        assert set(s["record"]) == want | ({"ban"} if banned else set()), s["record"]
        assert len(s["record"]["sessions"]) == (0 if banned else 2), s["record"]
        return s
    return (setup, lambda c, s: admin_req(c, "GET", user_path(s)),
            lambda r, s: r.status == 200 and r.json() == s["record"])


def _admin_user_erase():
    def setup(c):
        return login(c.port, "ufa_erase")
    return (setup, lambda c, s: admin_req(c, "DELETE", user_path(s)), status_is(204))


def _admin_user_logout():
    def setup(c):
        u = login(c.port, "ufa_alllogout")
        # exactly one live session: what an earlier, failed try left is ended first
        r = admin_req(c, "POST", user_path(u, "/logout"))
        assert r.status == 200, r
        return login(c.port, "ufa_alllogout")
    return (setup, lambda c, s: admin_req(c, "POST", user_path(s, "/logout")),
            lambda r, s: r.status == 200 and r.json() == {"revoked": 1})


def _admin_user_ban():
    until = int(time.time()) + 86400

    def setup(c):
        if "ufa_ban" not in c.users:
            c.users["ufa_ban"] = login(c.port, "ufa_ban")
        # unbanned, with exactly one live session: whatever an earlier try left is undone
        u = c.users["ufa_ban"]
        assert admin_req(c, "DELETE", user_path(u, "/ban")).status == 204
        assert admin_req(c, "POST", user_path(u, "/logout")).status == 200
        return login(c.port, "ufa_ban")
    return (setup,
            lambda c, s: admin_req(c, "POST", user_path(s, "/ban"),
                                   {"reason": "fa ban", "until": until}),
            lambda r, s: r.status == 200 and r.json() == {
                "banned": True, "reason": "fa ban", "revoked": 1, "until": until})


def _admin_user_unban():
    def setup(c):
        if "ufa_unban" not in c.users:
            c.users["ufa_unban"] = login(c.port, "ufa_unban")
        u = c.users["ufa_unban"]
        r = admin_req(c, "POST", user_path(u, "/ban"), {"reason": "fa unban"})
        assert r.status == 200, r
        return u
    return (setup, lambda c, s: admin_req(c, "DELETE", user_path(s, "/ban")), status_is(204))


def _admin_session_end():
    def setup(c):
        u = login(c.port, "ufa_sid")
        r = admin_req(c, "GET", user_path(u))
        assert r.status == 200, r
        # the session just made: the newest
        u["sid"] = max(r.json()["sessions"], key=lambda x: x["created"])["id"]
        return u
    return (setup,
            lambda c, s: admin_req(c, "DELETE", f"/admin/v1/apps/{DEFAULT_APPID}/sessions/"
                                   f"{s['sid']}"),
            status_is(204))


ROUTES = {
    "POST /openid": _openid(),
    "POST /v1/login": _login(),
    "POST /v1/login (reused code)": _login_reuse(),
    "GET /v1/session": _with_token("GET", "/v1/session", status_is(200)),
    "POST /v1/refresh": _with_token(
        "POST", "/v1/refresh",
        lambda r, s: r.status == 200 and r.json()["token"].startswith("wxl_") and
        r.json()["token"] != s["token"] and r.json()["openid"] == s["openid"],
        user="fa_refresh", fresh=True, body=lambda c, s: "{}"),
    "POST /v1/logout": _with_token("POST", "/v1/logout", status_is(200, 204),
                                   user="fa_logout", fresh=True),
    "POST /v1/logout {all}": _with_token("POST", "/v1/logout", status_is(204),
                                         user="fa_logout_all", fresh=True,
                                         body=lambda c, s: '{"all": true}'),
    "POST /v1/decrypt": _with_token(
        "POST", "/v1/decrypt", lambda r, s: r.status == 200 and r.json() == {"data": s["data"]},
        user="fa_decrypt", body=_decrypt_body),
    "POST /v1/check-signature": _with_token(
        "POST", "/v1/check-signature",
        lambda r, s: r.status == 200 and r.json() == {"valid": True},
        user="fa_sig", body=_sig_body),
    "POST /v1/phone": _with_token(
        "POST", "/v1/phone", lambda r, s: r.status == 200 and "phoneNumber" in r.json(),
        user="fa_phone", body=lambda c, s: json.dumps({"code": new_code("fa_phone")})),
    "GET /v1/session/check": _with_token("GET", "/v1/session/check", status_is(200),
                                         user="fa_check"),
    "GET /admin/v1/access-token": _admin("GET", "/admin/v1/access-token"),
    "POST /admin/v1/access-token/refresh": _admin("POST",
                                                  "/admin/v1/access-token/refresh?force=1"),
    "GET /admin/v1/apps/*/users/*": _admin_user_record(banned=False),
    "GET /admin/v1/apps/*/users/* (banned)": _admin_user_record(banned=True),
    "DELETE /admin/v1/apps/*/users/*": _admin_user_erase(),
    "POST /admin/v1/apps/*/users/*/logout": _admin_user_logout(),
    "POST /admin/v1/apps/*/users/*/ban": _admin_user_ban(),
    "DELETE /admin/v1/apps/*/users/*/ban": _admin_user_unban(),
    "DELETE /admin/v1/apps/*/sessions/*": _admin_session_end(),
    "GET /healthz": (lambda c: None, lambda c, s: request(c.port, "GET", "/healthz"),
                     status_is(200)),
    "GET /readyz": (lambda c: None, lambda c, s: request(c.port, "GET", "/readyz"),
                    status_is(200)),
}


class Ctx:
    def __init__(self, srv, mock, inj):
        self.srv, self.port, self.mock, self.inj = srv, srv.port, mock, inj
        self.users = {}


def acceptable_failure(r):
    """A request whose allocation failed: a JSON 503 the client retries (500 when the answer
    itself could not be built: http_reply's fallback)."""
    if r.status not in (500, 503):
        return False
    try:
        b = r.json()
    except ValueError:
        return False
    if r.status == 500:
        return b.get("error") == "internal" and b.get("action") == "retry"
    return b.get("error") in ("internal", "store_unavailable") and b.get("action") == "retry"


def symbolize(offsets):
    """Function and file:line of each call site (offsets in the executable)."""
    if not offsets:
        return {}
    offs = sorted(offsets)
    cp = subprocess.run(["addr2line", "-f", "-C", "-e", str(FA_BIN)] +
                        [hex(o - 1) for o in offs], capture_output=True, text=True, timeout=30)
    lines = cp.stdout.splitlines()
    out = {}
    for i, o in enumerate(offs):
        fn = lines[2 * i] if 2 * i < len(lines) else "?"
        loc = lines[2 * i + 1] if 2 * i + 1 < len(lines) else "?"
        out[o] = f"{fn} {loc.split('/src/')[-1]}"
    return out


def run_route(ctx, name):
    """Fails call 1, 2, ... of the route's path until a request reaches none. Returns the
    number of calls and, for each failed one, (n, site, function, outcome, answered right)."""
    setup, send, ok = ROUTES[name]
    failures = []
    for n in range(1, MAX_N):
        state = setup(ctx)
        ctx.inj.arm(n)
        try:
            r = send(ctx, state)
        except (OSError, http.client.HTTPException) as e:
            r = e
        hit, site, fn, count = ctx.inj.disarm()
        assert ctx.srv.alive(), f"{name}: wxlogin died when call {n} ({fn}) failed"
        if not hit:
            assert not isinstance(r, Exception), f"{name}: no answer without a failure: {r!r}"
            assert ok(r, state), f"{name}: unexpected answer with no failure (call {n}): {r}; " \
                f"failed before: {[(f[0], f[2], f[3]) for f in failures]}"
            return n - 1, failures
        answered = not isinstance(r, Exception)
        outcome = (f"dropped ({type(r).__name__})" if not answered else
                   f"{r.status}" + (f" {r.json().get('error')}" if r.status >= 400 and
                                    r.body[:1] == b"{" else ""))
        right = answered and (ok(r, state) or acceptable_failure(r))
        failures.append((n, site, fn, outcome, right))
        h = request(ctx.port, "GET", "/healthz")
        assert h.status == 200, f"{name}: /healthz after failing call {n} ({fn}): {h}"
    pytest.fail(f"{name}: still failing allocations after {MAX_N} calls")


@pytest.fixture(scope="module")
def ctx(module_procs, mock, tmp_path_factory):
    ctl = tmp_path_factory.mktemp("failalloc") / "ctl"
    inj = Injector(ctl)
    srv = module_procs.serve(mock=mock, bin=str(FA_BIN), env={
        "WXLOGIN_FAILALLOC": str(ctl), "WXLOGIN_ADMIN_TOKEN": ADMIN,
        "WXLOGIN_UPSTREAM_TIMEOUT_MS": "3000", **NO_LIMITS})
    assert inj.get(MAGIC) == CTL_MAGIC, "wxlogin-failalloc did not map its control file"
    return Ctx(srv, mock, inj)


@pytest.mark.parametrize("name", list(ROUTES))
def test_every_allocation_failure_is_answered(ctx, name):
    calls, failures = run_route(ctx, name)
    syms = symbolize({f[1] for f in failures})
    lines = [f"{name:38} #{n:<3} {fn:32} {syms.get(site, '?'):60} -> {outcome}"
             + ("" if right else "   WRONG")
             for n, site, fn, outcome, right in failures]
    seen = {}
    for f in failures:
        seen[f[3]] = seen.get(f[3], 0) + 1
    print(f"\n{name}: {len(failures)} allocations failed, one at a time: "
          + ", ".join(f"{k} x{v}" for k, v in sorted(seen.items())) + "\n" + "\n".join(lines))
    bad = [(n, fn, syms.get(site), outcome) for n, site, fn, outcome, right in failures
           if not right]
    assert not bad, f"{name}: failed allocations answered wrongly: {bad}"
    # run_route ended on a clean request: the route works normally after its failures
    assert calls > 0, f"{name}: no allocation of ours on its path?"
