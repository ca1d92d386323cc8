"""Several Mini Programs in one service: [app "<appid>"] sections, app selection by header,
Referer and default, and isolation of sessions, tokens and access tokens per app. Bearer routes
need not name the app: the token says which (issue 11)."""

import hashlib
import http.client
import json
import urllib.parse

import pytest

from conftest import (assert_error, base_env, new_code, post_json, request, run_cli)

APP_A, SECRET_A = "wxaaaa000000000001", "secretA0000000000000000000000001"
APP_B, SECRET_B = "wxbbbb000000000002", "secretB0000000000000000000000002"
# from `openssl rand -hex 32`: serve refuses a short or predictable admin token
ADMIN = "65e9556ed01af052c307a640efcb29679a95bbc8898aa7e1ef0c220376900bfc"


def referer(appid):
    return f"https://servicewechat.com/{appid}/7/page-frame.html"


@pytest.fixture(scope="module")
def two(module_procs, tmp_path_factory):
    d = tmp_path_factory.mktemp("apps")
    (d / "b.secret").write_text(SECRET_B + "\n")
    conf = d / "wxlogin.conf"
    conf.write_text(f'[app "{APP_A}"]\nsecret = {SECRET_A}\n\n'
                    f'[app "{APP_B}"]\nsecret_file = {d / "b.secret"}\n'
                    "access_token_api = classic\n")
    m = module_procs.mock(apps=[(APP_A, SECRET_A), (APP_B, SECRET_B)])
    s = module_procs.serve(mock=m, appid=None, secret=None, args=["--config", str(conf)],
                           env={"WXLOGIN_ADMIN_TOKEN": ADMIN})
    return m, s


def app_of(headers):
    """The app a request names (X-WX-AppID wins over the Referer WeChat sets), or None."""
    if "X-WX-AppID" in headers:
        return headers["X-WX-AppID"]
    ref = headers.get("Referer", "")
    return ref.split("/")[3] if ref.startswith("https://servicewechat.com/") else None


def login(port, user, headers):
    """Logs user in through the app headers name, with a code issued to that app (a WeChat code
    belongs to the app whose Mini Program called wx.login)."""
    h = {"Content-Type": "application/json"}
    h.update(headers)
    app = app_of(headers)
    return post_json(port, "/v1/login", {"code": new_code(user, app=app)}, headers=h)


def session(port, token, headers):
    h = {"Authorization": f"Bearer {token}"}
    h.update(headers)
    return request(port, "GET", "/v1/session", headers=h)


def test_app_by_header_and_by_referer(two):
    m, s = two
    a = login(s.port, "ualice", {"X-WX-AppID": APP_A})
    b = login(s.port, "ualice", {"Referer": referer(APP_B)})
    assert a.status == 200 and b.status == 200, (a, b)
    # openids are per app, unionids per user across apps
    assert a.json()["openid"] != b.json()["openid"]
    assert a.json()["unionid"] == b.json()["unionid"]
    sa = session(s.port, a.json()["token"], {"X-WX-AppID": APP_A})
    assert sa.status == 200 and sa.json()["appid"] == APP_A, sa
    assert sa.headers["x-wx-appid"] == APP_A
    sb = session(s.port, b.json()["token"], {"Referer": referer(APP_B)})
    assert sb.status == 200 and sb.json()["appid"] == APP_B, sb


def test_token_of_one_app_is_refused_by_the_other(two):
    m, s = two
    a = login(s.port, "bob", {"X-WX-AppID": APP_A}).json()["token"]
    r = session(s.port, a, {"X-WX-AppID": APP_B})
    assert_error(r, 401, "invalid_token", "relogin")
    # ...and a logout through app B cannot end app A's session
    out = request(s.port, "POST", "/v1/logout",
                  headers={"Authorization": f"Bearer {a}", "X-WX-AppID": APP_B})
    assert_error(out, 401, "invalid_token", "relogin")
    assert session(s.port, a, {"X-WX-AppID": APP_A}).status == 200


def test_unknown_app_and_no_app_are_400(two):
    m, s = two
    r = login(s.port, "carol", {"X-WX-AppID": "wxnotconfigured0000"})
    assert_error(r, 400, "unknown_app", "none")
    r = login(s.port, "carol", {"Referer": referer("wxnotconfigured0000")})
    assert_error(r, 400, "unknown_app", "none")
    r = login(s.port, "carol", {})  # two apps: the request must say which
    assert_error(r, 400, "unknown_app", "none")
    # Issue 11: a bearer route that names no app takes it from the token, so an unknown token
    # is 401 invalid_token (it was 400 unknown_app, which nginx auth_request turned into a 500).
    r = request(s.port, "GET", "/v1/session", headers={"Authorization": "Bearer wxl_" + "A" * 43})
    assert_error(r, 401, "invalid_token", "relogin")
    # ...but a bearer route that names an app wxlogin does not serve is still 400
    r = request(s.port, "GET", "/v1/session", headers={"Authorization": "Bearer wxl_" + "A" * 43,
                                                       "X-WX-AppID": "wxnotconfigured0000"})
    assert_error(r, 400, "unknown_app", "none")


def test_bearer_routes_without_an_app_take_it_from_the_token(two):
    # Issue 11: with two apps, GET /v1/session naming no app answered 400 unknown_app.
    m, s = two
    a = login(s.port, "uhank", {"X-WX-AppID": APP_A}).json()
    b = login(s.port, "uhank", {"Referer": referer(APP_B)}).json()
    for body, appid in ((a, APP_A), (b, APP_B)):
        r = session(s.port, body["token"], {})
        assert r.status == 200, r
        assert r.json()["appid"] == appid and r.json()["openid"] == body["openid"], r
        assert r.json()["unionid"] == body["unionid"], r
        assert r.headers["x-wx-appid"] == appid
        assert r.headers["x-wx-openid"] == body["openid"]
        assert r.headers["x-wx-unionid"] == body["unionid"]
    # a user without unionid: no X-WX-UnionID
    c = login(s.port, "ivy", {"X-WX-AppID": APP_B}).json()
    r = session(s.port, c["token"], {})
    assert r.status == 200 and r.json()["appid"] == APP_B and "unionid" not in r.json(), r
    assert "x-wx-unionid" not in r.headers


def test_token_of_one_app_is_refused_when_another_app_is_named(two):
    m, s = two
    a = login(s.port, "jack", {"X-WX-AppID": APP_A}).json()["token"]
    assert_error(session(s.port, a, {"Referer": referer(APP_B)}), 401, "invalid_token", "relogin")
    assert_error(session(s.port, a, {"X-WX-AppID": APP_B, "Referer": referer(APP_A)}), 401,
                 "invalid_token", "relogin")
    assert session(s.port, a, {}).status == 200


def test_logout_without_an_app(two):
    m, s = two
    b = login(s.port, "kate", {"X-WX-AppID": APP_B}).json()["token"]
    out = request(s.port, "POST", "/v1/logout", headers={"Authorization": f"Bearer {b}"})
    assert out.status == 204, out
    assert_error(session(s.port, b, {}), 401, "invalid_token", "relogin")
    assert_error(session(s.port, b, {"X-WX-AppID": APP_B}), 401, "invalid_token", "relogin")
    out = request(s.port, "POST", "/v1/logout", headers={"Authorization": f"Bearer {b}"})
    assert_error(out, 401, "invalid_token", "relogin")


def _mock_session_key(mock, appid, openid):
    """The mock's debug route, raw (conftest.request() refuses bodies naming session_key)."""
    q = urllib.parse.urlencode({"appid": appid, "openid": openid})
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=5)
    try:
        conn.request("GET", f"/mock/session_key?{q}")
        r = conn.getresponse()
        assert r.status == 200
        return json.loads(r.read())["session_key"]
    finally:
        conn.close()


def test_user_routes_without_an_app_use_the_tokens_app(two):
    m, s = two
    b = login(s.port, "liam", {"X-WX-AppID": APP_B}).json()
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {b['token']}"}
    # the user's session_key is app B's
    raw = '{"nickName":"Liam"}'
    sk = _mock_session_key(m, APP_B, b["openid"])
    sig = hashlib.sha1((raw + sk).encode()).hexdigest()
    r = post_json(s.port, "/v1/check-signature", {"rawData": raw, "signature": sig}, headers=h)
    assert r.status == 200 and r.json() == {"valid": True}, r
    # ...and the access token is app B's: the mock answers with the user of the token's app, so
    # app A's token would find no such user there (valid: false)
    r = request(s.port, "GET", "/v1/session/check", headers={"Authorization": h["Authorization"]})
    assert r.status == 200 and r.json() == {"valid": True}, r


def test_header_wins_over_referer(two):
    m, s = two
    r = login(s.port, "dave", {"X-WX-AppID": APP_B, "Referer": referer(APP_A)})
    assert r.status == 200
    assert session(s.port, r.json()["token"], {"X-WX-AppID": APP_B}).status == 200
    assert session(s.port, r.json()["token"], {"X-WX-AppID": APP_A}).status == 401


def test_same_code_in_two_apps_is_two_exchanges(two):
    """A code is exchanged per app: the one app A's exchange answered is not replayed for app B,
    which asks WeChat itself. WeChat answers B 40029: the code was issued to A (this test used
    to expect 200 for both, which only the old mock allowed: it accepted any code at any app)."""
    m, s = two
    code = new_code("erin", app=APP_A)
    before = m.requests()
    h = {"Content-Type": "application/json"}
    a = post_json(s.port, "/openid", {"code": code}, headers={**h, "X-WX-AppID": APP_A})
    b = post_json(s.port, "/openid", {"code": code}, headers={**h, "X-WX-AppID": APP_B})
    assert a.status == 200, a
    assert_error(b, 400, "invalid_code", "relogin", 40029)
    assert m.requests() - before == 2


@pytest.mark.parametrize("route", ["/openid", "/v1/login"])
def test_code_of_app_a_at_app_b_is_40029(two, route):
    """The multi-app routing bug (a request of app A's Mini Program sent to app B): WeChat
    answers 40029, and so does the mock now; wxlogin says invalid_code (relogin)."""
    m, s = two
    before = m.stats()["jscode2session"]
    h = {"Content-Type": "application/json", "X-WX-AppID": APP_B}
    for code in (new_code("gil", app=APP_A), new_code("gil")):   # named, or the first app's
        assert_error(post_json(s.port, route, {"code": code}, headers=h), 400, "invalid_code",
                     "relogin", 40029)
    after = m.stats()["jscode2session"]
    assert after["requests"] - before["requests"] == 2
    assert after["exchanges"] == before["exchanges"], "no code was spent"
    # a code issued to app B works there
    r = post_json(s.port, route, {"code": new_code("gil", app=APP_B)}, headers=h)
    assert r.status == 200, r


def test_access_tokens_are_per_app(two):
    m, s = two
    ta = request(s.port, "GET", "/admin/v1/access-token",
                 headers={"Authorization": f"Bearer {ADMIN}", "X-WX-AppID": APP_A})
    tb = request(s.port, "GET", "/admin/v1/access-token",
                 headers={"Authorization": f"Bearer {ADMIN}", "X-WX-AppID": APP_B})
    assert ta.status == 200 and tb.status == 200, (ta, tb)
    assert ta.json()["access_token"] != tb.json()["access_token"]
    stats = m.stats()
    # app A uses the default stable API, app B was configured for the classic one
    assert stats["stable_token"]["requests"] >= 1 and stats["token"]["requests"] >= 1


def _serve_env(**extra):
    env = base_env(WXLOGIN_LISTEN="127.0.0.1:0")
    env.update(extra)
    return env


def test_config_errors_in_app_sections(tmp_path):
    bad_key = tmp_path / "k.conf"
    bad_key.write_text(f'[app "{APP_A}"]\nsecret = x\ncolour = blue\n')
    cp = run_cli(["serve", "--config", str(bad_key)], env=_serve_env())
    assert cp.returncode == 2 and "colour" in cp.stderr, cp

    no_secret = tmp_path / "n.conf"
    no_secret.write_text(f'[app "{APP_A}"]\naccess_token_api = stable\n')
    cp = run_cli(["serve", "--config", str(no_secret)], env=_serve_env())
    assert cp.returncode == 2 and APP_A in cp.stderr, cp

    twice = tmp_path / "t.conf"
    twice.write_text(f'appid = {APP_A}\nsecret = x\n[app "{APP_A}"]\nsecret = y\n')
    cp = run_cli(["serve", "--config", str(twice)], env=_serve_env())
    assert cp.returncode == 2 and "appid" in cp.stderr, cp

    bad_section = tmp_path / "s.conf"
    bad_section.write_text("[apps]\nsecret = x\n")
    cp = run_cli(["serve", "--config", str(bad_section)], env=_serve_env())
    assert cp.returncode == 2 and "section" in cp.stderr, cp


def test_flat_appid_and_sections_together(module_procs, tmp_path):
    conf = tmp_path / "mix.conf"
    conf.write_text(f'appid = {APP_A}\nsecret = {SECRET_A}\n[app "{APP_B}"]\nsecret = {SECRET_B}\n')
    m = module_procs.mock(apps=[(APP_A, SECRET_A), (APP_B, SECRET_B)])
    s = module_procs.serve(mock=m, appid=None, secret=None, args=["--config", str(conf)])
    assert login(s.port, "fay", {"X-WX-AppID": APP_A}).status == 200
    assert login(s.port, "fay", {"X-WX-AppID": APP_B}).status == 200
