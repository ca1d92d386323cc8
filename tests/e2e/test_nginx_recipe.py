"""The nginx recipe, contrib/nginx/wxlogin-auth.conf, run as shipped (issue 11).

Debian's nginx (/usr/sbin/nginx; the suite is skipped only when it is not installed) runs as the
current user from a private prefix in the test's temp dir (pid, logs and temp paths there),
`daemon off`, on an ephemeral loopback port with a throwaway self-signed certificate. Its
nginx.conf is a few lines around `include <the shipped file>`; the shipped file is copied with
only its addresses and certificate paths replaced (each must be found exactly once, so the test
cannot drift from the recipe). Behind it: `wxlogin serve` against the mock, and a backend (a
Python http.server thread) that answers every request with the headers it received.

Before the recipe, the documented example let a client-sent X-WX-UnionID reach the backend
whenever the user had none, never set X-WX-AppID, and answered a bad token with nginx's HTML 401
and a failing wxlogin with nginx's HTML 500.
"""

import grp
import http.client
import http.server
import json
import os
import pwd
import signal
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import DEFAULT_APPID, REPO, free_port, new_code, request, wait_until

NGINX = "/usr/sbin/nginx"
RECIPE = REPO / "contrib" / "nginx" / "wxlogin-auth.conf"
APPID = "wx1234567890abcdef"
APP_A, SECRET_A = "wxaaaa000000000001", "secretA0000000000000000000000001"
APP_B, SECRET_B = "wxbbbb000000000002", "secretB0000000000000000000000002"

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason=f"{NGINX} is not installed")

IDENTITY = ("x-wx-openid", "x-wx-unionid", "x-wx-appid")


# --------------------------------------------------------------------------
# the backend: answers every request with what it received
# --------------------------------------------------------------------------

class Backend:
    def __init__(self):
        self.seen = []
        backend = self

        class Echo(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                rec = {"method": self.command, "path": self.path,
                       "headers": [[k.lower(), v] for k, v in self.headers.items()],
                       "body": body.decode("utf-8", "replace")}
                backend.seen.append(rec)
                out = json.dumps(rec).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------
# nginx with the shipped recipe
# --------------------------------------------------------------------------

def render_recipe(wxlogin_port, backend_port, port, crt, key):
    """The shipped file with its addresses and certificate replaced, nothing else."""
    text = RECIPE.read_text()
    for old, new in [
        ("server 127.0.0.1:2020;", f"server 127.0.0.1:{wxlogin_port};"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{backend_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("/etc/nginx/tls/api.example.com.crt;", f"{crt};"),
        ("/etc/nginx/tls/api.example.com.key;", f"{key};"),
    ]:
        assert text.count(old) == 1, f"{RECIPE} no longer holds {old!r} exactly once"
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, d, wxlogin_port, backend_port, crt, key):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        user = ""
        if os.geteuid() == 0:  # workers would switch to nobody: stay the current user
            user = (f"user {pwd.getpwuid(os.getuid()).pw_name} "
                    f"{grp.getgrgid(os.getgid()).gr_name};")
        d = self.dir
        (d / "nginx.conf").write_text(f"""
daemon off;
master_process on;
worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/wxlogin-auth.conf;
}}
""")
        argv = [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")]
        self.log = open(d / "stderr.log", "ab")
        for _ in range(3):  # a free port can be taken before nginx binds it: take another
            self.port = free_port()
            (d / "wxlogin-auth.conf").write_text(
                render_recipe(wxlogin_port, backend_port, self.port, crt, key))
            t = subprocess.run(argv + ["-t"], capture_output=True, text=True, timeout=30)
            assert t.returncode == 0, f"nginx -t refused the recipe:\n{t.stderr}"
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                          stderr=self.log, start_new_session=True)
            if wait_until(self._answers, timeout=10.0) and self.popen.poll() is None:
                return
            self.stop(close=False)
            if "Address already in use" not in self.error_log():
                break
        self.log.close()
        pytest.fail(f"nginx did not start:\n{self.error_log()}", pytrace=False)

    def _answers(self):
        if self.popen.poll() is not None:
            return True  # exited: reported by the caller
        try:
            return https(self.port, "GET", "/healthcheck-nothing-here").status == 404
        except OSError:
            return False

    def error_log(self):
        out = ""
        for name in ("stderr.log", "error.log"):
            p = self.dir / name
            if p.exists():
                out += p.read_text(errors="replace")[-3000:]
        return out

    def stop(self, close=True):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        if close:
            self.log.close()


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # [(lower-case name, value)] as received
        self.body = body

    def header(self, name):
        vals = [v for k, v in self.headers if k == name]
        assert len(vals) <= 1, f"{name} sent {len(vals)} times: {self}"
        return vals[0] if vals else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Resp({self.status}, {self.headers}, {self.body[:600]!r})"


def https(port, method, path, headers=(), body=None, chunked=False, timeout=15.0):
    """One request over TLS (certificate not checked: it is the test's own). headers: pairs,
    sent as given (repeats and odd names included); body sent chunked when asked."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            else:
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, [(k.lower(), v) for k, v in r.getheaders()], data)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "api.crt", d / "api.key"
    cp = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                         "/CN=api.example.com", "-keyout", str(key), "-out", str(crt)],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    return crt, key


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


@pytest.fixture
def front(procs, mock, backend, cert, tmp_path):
    """start(wxlogin=None) → (nginx, wxlogin): the recipe in front of a wxlogin (a fresh one
    on its own SQLite file unless given) and the echo backend."""
    started = []

    def start(wxlogin=None):
        if wxlogin is None:
            wxlogin = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db"})
        n = Nginx(tmp_path / f"nginx{len(started)}", wxlogin.port, backend.port, *cert)
        started.append(n)
        return n, wxlogin

    yield start
    for n in started:
        n.stop()


def login_through(nginx, user, headers=(), app=None):
    r = https(nginx.port, "POST", "/v1/login", headers=headers,
              body=json.dumps({"code": new_code(user, app=app)}).encode())
    assert r.status == 200, r
    return r.json()


def bearer(token):
    return ("Authorization", f"Bearer {token}")


def seen_identity(rec):
    """Every header the backend got whose name is an identity header's, in any spelling that a
    backend could read as one (case, '_' for '-')."""
    out = []
    for k, v in rec["headers"]:
        if k.replace("_", "-") in IDENTITY:
            out.append((k, v))
    return sorted(out)


def assert_relogin_401(r):
    assert r.status == 401, r
    assert r.header("content-type").split(";")[0] == "application/json", r
    body = r.json()
    assert body["error"] == "invalid_token" and body["action"] == "relogin", r
    assert isinstance(body.get("message"), str) and body["message"], r
    assert r.header("www-authenticate") == 'Bearer error="invalid_token"', r


def assert_unavailable_503(r):
    assert r.status == 503, r
    assert r.header("content-type").split(";")[0] == "application/json", r
    body = r.json()
    assert body["error"] == "auth_unavailable" and body["action"] == "retry", r
    assert isinstance(body.get("message"), str) and body["message"], r


SPOOFED = [("X-WX-OpenID", "oSPOOFED-openid"), ("X-WX-UnionID", "oSPOOFED-unionid"),
           ("X-WX-AppID", "wxSPOOFED"), ("x-wx-unionid", "oSPOOFED-lower"),
           ("X-WX-UnionID", "oSPOOFED-twice"), ("X_WX_UnionID", "oSPOOFED-underscore"),
           ("X_WX_OpenID", "oSPOOFED-underscore"), ("X-Wx-Appid", "wxSPOOFED-case")]


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

def test_valid_token_passes_with_the_identity(front, backend):
    nginx, _ = front()
    u = login_through(nginx, "ualice")
    r = https(nginx.port, "POST", "/api/orders?x=1", headers=[bearer(u["token"])],
              body=b'{"item":1}')
    assert r.status == 200, r
    rec = r.json()
    assert rec["method"] == "POST" and rec["path"] == "/api/orders?x=1" and rec["body"] == '{"item":1}'
    assert seen_identity(rec) == sorted([("x-wx-openid", u["openid"]),
                                         ("x-wx-unionid", u["unionid"]),
                                         ("x-wx-appid", APPID)]), rec
    # the backend trusts the headers and never sees the token
    assert all(k != "authorization" for k, _ in rec["headers"]), rec
    # a chunked body: the check sends wxlogin neither it nor its framing
    r = https(nginx.port, "PUT", "/api/orders/1", headers=[bearer(u["token"])],
              body=b'{"item":2}', chunked=True)
    assert r.status == 200 and r.json()["body"] == '{"item":2}', r
    assert len(backend.seen) == 2


@pytest.mark.parametrize("user, has_unionid", [("ubob", True), ("carol", False)])
def test_spoofed_identity_headers_never_reach_the_backend(front, backend, user, has_unionid):
    nginx, _ = front()
    u = login_through(nginx, user)
    assert ("unionid" in u) == has_unionid
    r = https(nginx.port, "GET", "/api/me", headers=[bearer(u["token"])] + SPOOFED)
    assert r.status == 200, r
    want = [("x-wx-appid", APPID), ("x-wx-openid", u["openid"])]
    if has_unionid:
        want.append(("x-wx-unionid", u["unionid"]))
    # exactly wxlogin's values; for a user without unionid no X-WX-UnionID at all
    assert seen_identity(r.json()) == sorted(want), r.json()
    assert "SPOOFED" not in json.dumps(r.json()), r.json()


def test_missing_or_bad_token_is_wxlogins_json_401(front, backend):
    nginx, _ = front()
    cases = [[], [("Authorization", "Bearer wxl_" + "A" * 43)], [("Authorization", "Bearer x")],
             [("Authorization", "Basic dXNlcjpwYXNz")]]
    for headers in cases:
        for method, body, chunked in (("GET", None, False), ("POST", b'{"a":1}', False),
                                      ("PUT", b'{"a":2}', True)):
            r = https(nginx.port, method, "/api/orders", headers=headers + SPOOFED, body=body,
                      chunked=chunked)
            assert_relogin_401(r)
            assert r.header("cache-control") == "no-store", r
    assert backend.seen == []


def test_logout_takes_effect_on_the_next_request(front, backend):
    nginx, _ = front()
    u = login_through(nginx, "udave")
    assert https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]).status == 200
    out = https(nginx.port, "POST", "/v1/logout", headers=[bearer(u["token"])])
    assert out.status == 204, out
    assert_relogin_401(https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]))
    assert len(backend.seen) == 1


def test_ban_takes_effect_on_the_next_request(front, backend, procs, mock, tmp_path):
    """An operator bans the user (admin route, straight to wxlogin): the next request through
    nginx is wxlogin's JSON 401, and a new login through nginx is the JSON 403 user_banned."""
    admin = "k7Qx2mP9vR4tY8wZ3nB6cF1hJ5dL0sGaE"
    wx = procs.serve(mock=mock, env={"WXLOGIN_STORE": f"sqlite:{tmp_path}/wx.db",
                                     "WXLOGIN_ADMIN_TOKEN": admin})
    nginx, _ = front(wx)
    u = login_through(nginx, "ufrank")
    assert https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]).status == 200
    r = request(wx.port, "POST", f"/admin/v1/apps/{DEFAULT_APPID}/users/{u['openid']}/ban",
                body=json.dumps({"reason": "abuse"}).encode(),
                headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    assert r.status == 200 and r.json()["revoked"] == 1, r
    assert_relogin_401(https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]))
    again = https(nginx.port, "POST", "/v1/login",
                  body=json.dumps({"code": new_code("ufrank")}).encode())
    assert again.status == 403 and again.json()["error"] == "user_banned", again
    assert again.json()["action"] == "none"
    assert len(backend.seen) == 1


def test_wxlogin_failing_is_a_json_503(front, backend, tmp_path):
    """wxlogin answers 503 store_unavailable (its database file was removed under it):
    auth_request makes that a 500; the recipe answers JSON 503."""
    nginx, wx = front()
    u = login_through(nginx, "uerin")
    assert https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]).status == 200
    os.unlink(tmp_path / "wx.db")
    assert wait_until(lambda: request(wx.port, "GET", "/readyz").status == 503, timeout=5.0)
    direct = request(wx.port, "GET", "/v1/session", headers={"Authorization": f"Bearer {u['token']}"})
    assert direct.status == 503, direct  # what the check gets
    assert_unavailable_503(https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]))
    assert len(backend.seen) == 1


def test_wxlogin_stopped_is_a_json_503(front, backend):
    nginx, wx = front()
    u = login_through(nginx, "ufrank")
    assert https(nginx.port, "GET", "/api/a", headers=[bearer(u["token"])]).status == 200
    assert wx.stop() == 0
    for headers in ([bearer(u["token"])], [bearer("wxl_" + "A" * 43)], []):
        assert_unavailable_503(https(nginx.port, "GET", "/api/a", headers=headers))
    assert len(backend.seen) == 1


def test_two_apps_behind_the_recipe(front, backend, procs, tmp_path):
    """wxlogin serving two Mini Programs: the check names no app (the recipe sends the token
    alone), wxlogin takes it from the token (before issue 11: 400 unknown_app, a 500 from
    nginx), and the backend learns which app in X-WX-AppID whatever the client claims."""
    conf = tmp_path / "apps.conf"
    conf.write_text(f"store = sqlite:{tmp_path}/apps.db\n"
                    f'[app "{APP_A}"]\nsecret = {SECRET_A}\n[app "{APP_B}"]\nsecret = {SECRET_B}\n')
    m = procs.mock(apps=[(APP_A, SECRET_A), (APP_B, SECRET_B)])
    wx = procs.serve(mock=m, appid=None, secret=None, args=["--config", str(conf)])
    nginx, _ = front(wx)
    for appid in (APP_A, APP_B):
        other = APP_B if appid == APP_A else APP_A
        u = login_through(nginx, "ugina", headers=[("X-WX-AppID", appid)], app=appid)
        r = https(nginx.port, "GET", "/api/me",
                  headers=[bearer(u["token"]), ("X-WX-AppID", other)])
        assert r.status == 200, r
        assert seen_identity(r.json()) == sorted([("x-wx-appid", appid),
                                                  ("x-wx-openid", u["openid"]),
                                                  ("x-wx-unionid", u["unionid"])]), r.json()
    assert_relogin_401(https(nginx.port, "GET", "/api/me", headers=[bearer("wxl_" + "B" * 43)]))


def test_wxlogins_routes_are_published_and_admin_is_not(front):
    nginx, wx = front()
    r = https(nginx.port, "POST", "/openid", body=json.dumps({"code": new_code("hal")}).encode())
    assert r.status == 200 and set(r.json()) == {"openid"}, r
    assert https(nginx.port, "GET", "/admin/v1/access-token").status == 404
    # the request id is one from nginx to wxlogin and the backend
    u = login_through(nginx, "uivy")
    r = https(nginx.port, "GET", "/v1/session", headers=[bearer(u["token"])])
    assert r.status == 200 and r.json()["openid"] == u["openid"], r
    assert len(r.header("x-request-id")) == 32
