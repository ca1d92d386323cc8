"""wxlogin-mock as a WeChat SDK sees it (issue 13): each test pins one behaviour of WeChat's that
the mock used to get wrong, by talking to the mock directly (docs/mock.md cites the sources).

  1. phone_info.countryCode is the string "86" (the number only with the directive ccnumber);
  2. a code belongs to one app: 40029 at any other;
  3. stable_token renews a token in its last 5 minutes (old and new both valid), unless
     --no-early-renewal; tokens expire (42001);
  4. a wrong method or an unknown API answers HTTP 200 and an errcode (43001/43002/40066);
     jscode2session and /cgi-bin/token read their query whatever the method;
  5. rid is three groups of 8 hex digits, the first the Unix time; /cgi-bin/openapi/rid/get;
  6. access tokens are 130 to 160 characters;
  7. token endpoint faults (/mock/token/fail), force_refresh's 20 a day, codes that expire;
  8. errmsg wording: no comma before the rid at /cgi-bin/ and /wxa/, 40001's current hint.
The production binary carries none of the mock's routes (test_production_binary_has_no_mock).
"""

import http.client
import json
import re
import subprocess
import time
import urllib.parse

import pytest

from conftest import BIN, DEFAULT_APPID, DEFAULT_SECRET, new_code, post_json

APP_A, SECRET_A = "wxaaaa000000000001", "secretA0000000000000000000000001"
APP_B, SECRET_B = "wxbbbb000000000002", "secretB0000000000000000000000002"
RID = re.compile(r"rid: ([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{8})$")


# --------------------------------------------------------------------------
# helpers: raw calls (conftest.request() refuses bodies naming session_key, and the mock's
# code2Session answers carry one)
# --------------------------------------------------------------------------

def call(port, method, path, body=None, headers=None):
    """(status, parsed JSON or None, raw body, content-type)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return r.status, parsed, raw, r.getheader("Content-Type", "")
    finally:
        conn.close()


def q(**kw):
    return urllib.parse.urlencode(kw)


def c2s(port, code, appid=DEFAULT_APPID, secret=DEFAULT_SECRET, method="GET"):
    path = "/sns/jscode2session?" + q(appid=appid, secret=secret, js_code=code,
                                      grant_type="authorization_code")
    return call(port, method, path)


def stable(port, appid=DEFAULT_APPID, secret=DEFAULT_SECRET, force=False):
    return call(port, "POST", "/cgi-bin/stable_token",
                {"grant_type": "client_credential", "appid": appid, "secret": secret,
                 "force_refresh": force})


def stable_token(port, appid=DEFAULT_APPID, secret=DEFAULT_SECRET, force=False):
    st, body, raw, _ = stable(port, appid, secret, force)
    assert st == 200 and "access_token" in body, raw
    return body["access_token"], body["expires_in"]


def classic(port, appid=DEFAULT_APPID, secret=DEFAULT_SECRET, method="GET"):
    return call(port, method, "/cgi-bin/token?" + q(grant_type="client_credential", appid=appid,
                                                     secret=secret))


def phone(port, token, code):
    return call(port, "POST", "/wxa/business/getuserphonenumber?" + q(access_token=token),
                {"code": code})


def fail(port, directives, appid=DEFAULT_APPID, api=None):
    extra = {"api": api} if api else {}
    st, body, raw, _ = call(port, "POST", "/mock/token/fail?" + q(appid=appid, do=directives,
                                                                 **extra))
    assert st == 200, raw
    return body


def assert_errcode(resp, errcode):
    """WeChat's error answer: HTTP 200, {"errcode", "errmsg": "... rid: <rid>"}."""
    st, body, raw, _ = resp
    assert st == 200, raw
    assert isinstance(body, dict) and set(body) == {"errcode", "errmsg"}, raw
    assert body["errcode"] == errcode, raw
    assert RID.search(body["errmsg"]), raw
    return body["errmsg"]


# --------------------------------------------------------------------------
# 1. countryCode
# --------------------------------------------------------------------------

def test_phone_country_code_is_the_string_86(mock):
    tok, _ = stable_token(mock.port)
    st, body, raw, _ = phone(mock.port, tok, new_code("pia"))
    assert st == 200 and body["errcode"] == 0 and body["errmsg"] == "ok", raw
    cc = body["phone_info"]["countryCode"]
    assert cc == "86" and isinstance(cc, str), f"countryCode must be the string \"86\": {raw}"
    # the shape of WeChat's doc example, on demand
    st, body, raw, _ = phone(mock.port, tok, new_code("pia", "ccnumber"))
    assert body["phone_info"]["countryCode"] == 86, raw


def test_phone_end_to_end_through_the_string(procs):
    """POST /v1/phone through WeChat's real shape (the string "86"), and through the number of
    its doc example (still accepted): both answer the string "86"."""
    m = procs.mock()
    s = procs.serve(mock=m)
    r = post_json(s.port, "/v1/login", {"code": new_code("sia")})
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {r.json()['token']}"}
    tok, _ = stable_token(m.port)
    for directives in ((), ("ccnumber",)):
        # what the mock answers for such a code...
        raw = phone(m.port, tok, new_code("sia", *directives))[1]["phone_info"]["countryCode"]
        assert raw == ("86" if not directives else 86), raw
        # ...and what wxlogin makes of it
        r = post_json(s.port, "/v1/phone", {"code": new_code("sia", *directives)}, headers=h)
        assert r.status == 200 and r.json()["countryCode"] == "86", r
        assert isinstance(r.json()["countryCode"], str)


# --------------------------------------------------------------------------
# 2. a code belongs to one app
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two(module_procs):
    return module_procs.mock(apps=[(APP_A, SECRET_A), (APP_B, SECRET_B)])


def test_code_of_one_app_is_40029_at_another(two):
    a = new_code("ann", app=APP_A)
    assert_errcode(c2s(two.port, a, APP_B, SECRET_B), 40029)
    st, body, raw, _ = c2s(two.port, a, APP_A, SECRET_A)       # not spent by B's attempt
    assert st == 200 and "openid" in body, raw
    # a code that names no app was issued to the mock's first app
    plain = new_code("ann")
    assert_errcode(c2s(two.port, plain, APP_B, SECRET_B), 40029)
    assert c2s(two.port, plain, APP_A, SECRET_A)[0] == 200
    # naming an app the mock does not know: valid nowhere
    assert_errcode(c2s(two.port, new_code("ann", app="wx0000000000000099"), APP_A, SECRET_A),
                   40029)


def test_phone_code_of_one_app_is_40029_at_another(two):
    tb, _ = stable_token(two.port, APP_B, SECRET_B)
    assert_errcode(phone(two.port, tb, new_code("pat", app=APP_A)), 40029)
    st, body, raw, _ = phone(two.port, tb, new_code("pat", app=APP_B))
    assert st == 200 and body["phone_info"]["watermark"]["appid"] == APP_B, raw


# --------------------------------------------------------------------------
# 3. stable_token renews early; tokens expire
# --------------------------------------------------------------------------

def test_stable_token_renews_in_the_last_5_minutes(procs):
    m = procs.mock(args=["--token-ttl", "302"])
    t1, left = stable_token(m.port)
    assert left == 302
    assert stable_token(m.port)[0] == t1, "the same token while more than 300 s are left"
    time.sleep(2.2)                           # now in its last 300 s
    t2, left2 = stable_token(m.port)
    assert t2 != t1 and left2 == 302, "WeChat hands out a new token in the last 5 minutes"
    assert stable_token(m.port)[0] == t2
    # the old one still works until it expires
    for t in (t1, t2):
        st, body, raw, _ = phone(m.port, t, new_code("ren"))
        assert body["errcode"] == 0, raw


def test_stable_token_without_early_renewal(procs):
    m = procs.mock(args=["--token-ttl", "302", "--no-early-renewal"])
    t1, _ = stable_token(m.port)
    time.sleep(2.2)
    t, left = stable_token(m.port)
    assert t == t1 and left <= 300, (left, "the same token, with what is left of it")


def test_expired_token_is_42001(procs):
    m = procs.mock(args=["--token-ttl", "1"])
    tok, left = stable_token(m.port)
    assert left == 1
    ctok = json.loads(classic(m.port)[2])["access_token"]
    time.sleep(1.3)
    for t in (tok, ctok):
        errmsg = assert_errcode(phone(m.port, t, new_code("exp")), 42001)
        assert errmsg.startswith("access_token expired rid: "), errmsg


# --------------------------------------------------------------------------
# 4. methods and paths
# --------------------------------------------------------------------------

def test_jscode2session_by_post_with_a_query(mock):
    st, body, raw, ct = c2s(mock.port, new_code("poe"), method="POST")
    assert st == 200 and "openid" in body and "session_key" in body, raw
    assert ct == "text/plain", ct
    # the arguments in a form body are not read: WeChat's 41002
    form = q(appid=DEFAULT_APPID, secret=DEFAULT_SECRET, js_code=new_code("poe"),
             grant_type="authorization_code")
    r = call(mock.port, "POST", "/sns/jscode2session", form,
             {"Content-Type": "application/x-www-form-urlencoded"})
    errmsg = assert_errcode(r, 41002)
    assert errmsg.startswith("appid missing, rid: "), errmsg


def test_cgi_bin_token_by_post_with_a_query(mock):
    st, body, raw, _ = classic(mock.port, method="POST")
    assert st == 200 and body["expires_in"] == 7200, raw


@pytest.mark.parametrize("method,path,errcode", [
    ("GET", "/cgi-bin/stable_token", 43002),
    ("PUT", "/cgi-bin/stable_token", 43002),
    ("GET", "/wxa/business/getuserphonenumber?access_token=x", 43002),
    ("GET", "/cgi-bin/openapi/rid/get?access_token=x", 43002),
    ("POST", "/wxa/checksession?access_token=x", 43001),
    ("GET", "/cgi-bin/nosuchapi", 40066),
    ("POST", "/wxa/business/nosuchapi", 40066),
    ("GET", "/sns/nosuchapi", 40066),
])
def test_wrong_method_or_unknown_api_is_200_and_an_errcode(mock, method, path, errcode):
    st, body, raw, ct = call(mock.port, method, path)
    assert st == 200, f"WeChat answers API mistakes with HTTP 200: {raw}"
    assert_errcode((st, body, raw, ct), errcode)
    assert "allow" not in raw.decode().lower()


def test_mock_routes_keep_json_errors(mock):
    st, body, raw, _ = call(mock.port, "POST", "/mock/stats")
    assert st == 405 and body["error"] == "method_not_allowed", raw
    st, body, raw, _ = call(mock.port, "GET", "/mock/nothing")
    assert st == 404 and body["error"] == "not_found", raw
    st, body, raw, _ = call(mock.port, "GET", "/elsewhere")
    assert st == 404 and body["error"] == "not_found", raw


# --------------------------------------------------------------------------
# 5. rid
# --------------------------------------------------------------------------

def rid_of(errmsg):
    m = RID.search(errmsg)
    assert m, errmsg
    return "-".join(m.groups()), int(m.group(1), 16)


def test_rid_has_wechats_shape(mock):
    before = int(time.time())
    for r in (c2s(mock.port, new_code("rid", "err40029")), stable(mock.port, secret="x" * 32),
              phone(mock.port, "nope", new_code("rid"))):
        _, t = rid_of(r[1]["errmsg"])
        assert before - 2 <= t <= time.time() + 2, f"the first group is the Unix time: {r[2]}"


def rid_get(port, token, rid):
    return call(port, "POST", "/cgi-bin/openapi/rid/get?" + q(access_token=token),
                {"rid": rid} if rid is not None else b"not json")


def test_rid_get(two):
    ta, _ = stable_token(two.port, APP_A, SECRET_A)
    tb, _ = stable_token(two.port, APP_B, SECRET_B)
    # an error of app A's (a phone code that is not A's)
    code = new_code("rg", app=APP_B)
    st, body, raw, _ = phone(two.port, ta, code)
    rid, t = rid_of(body["errmsg"])
    st, info, raw2, _ = rid_get(two.port, ta, rid)
    assert st == 200 and info["errcode"] == 0 and info["errmsg"] == "ok", raw2
    req = info["request"]
    assert set(req) == {"invoke_time", "cost_in_ms", "request_url", "request_body",
                        "response_body", "client_ip"}, req
    assert req["invoke_time"] == t and req["response_body"] == raw.decode(), req
    assert req["client_ip"] == "127.0.0.1" and f"access_token={ta}" in req["request_url"], req
    assert req["request_body"] == json.dumps({"code": code}), req
    # only the account that made the call may look it up
    assert_errcode(rid_get(two.port, tb, rid), 76003)
    # a token endpoint's error belongs to the app it names; the secret is not kept
    st, body, raw, _ = stable(two.port, APP_B, "w" * 32)
    rid_b, _ = rid_of(body["errmsg"])
    st, info, raw2, _ = rid_get(two.port, tb, rid_b)
    assert info["errcode"] == 0, raw2
    assert "w" * 32 not in raw2.decode() and '"secret":"***"' in info["request"]["request_body"]
    # code2Session's rids cannot be looked up (/sns/ APIs)
    rid_s, _ = rid_of(c2s(two.port, new_code("rg", "err40029"), APP_A, SECRET_A)[1]["errmsg"])
    assert_errcode(rid_get(two.port, ta, rid_s), 76022)
    assert_errcode(rid_get(two.port, ta, "61725984-6126f6f9-040f19c4"), 76001)
    for bad in ("", "61725984-6126f6f9", "61725984_6126f6f9_040f19c4", 5):
        assert_errcode(rid_get(two.port, ta, bad), 76002)
    assert_errcode(rid_get(two.port, ta, None), 47001)
    assert_errcode(rid_get(two.port, "nope", rid), 40001)


# --------------------------------------------------------------------------
# 6. token length
# --------------------------------------------------------------------------

def test_tokens_have_a_real_tokens_length(procs):
    m = procs.mock()
    lengths = set()
    for _ in range(5):
        for tok in (stable_token(m.port)[0], json.loads(classic(m.port)[2])["access_token"]):
            assert 130 <= len(tok) <= 160, f"{len(tok)} characters: {tok}"
            assert re.fullmatch(r"[0-9]{2}_[A-Za-z0-9_-]+", tok), tok
            lengths.add(len(tok))
    assert len(lengths) > 1, "lengths vary, as WeChat's do"


# --------------------------------------------------------------------------
# 7. token endpoint faults, force_refresh's daily limit, code lifetime
# --------------------------------------------------------------------------

@pytest.mark.parametrize("errcode,text", [
    (-1, "system error"),
    (45009, "reach max api daily quota limit"),
    (40164, "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist"),
    (40243, None),
])
def test_token_fault_errcodes(procs, errcode, text):
    m = procs.mock()
    fail(m.port, f"err{errcode}")
    for r in (stable(m.port), classic(m.port)):
        errmsg = assert_errcode(r, errcode)
        if text is not None:
            assert errmsg.startswith(text + " rid: "), errmsg
    fail(m.port, "")
    assert stable(m.port)[1]["expires_in"] == 7200


def test_token_fault_counts_delays_http_and_api(procs):
    m = procs.mock()
    fail(m.port, "busy1_delay400x1")
    t0 = time.monotonic()
    assert_errcode(stable(m.port), -1)
    assert time.monotonic() - t0 >= 0.4
    assert "access_token" in stable(m.port)[1], "busy1: the next request works"
    fail(m.port, "http503x1", api="token")
    assert stable(m.port)[0] == 200
    st, _, raw, ct = classic(m.port)
    assert st == 503 and ct.startswith("text/html"), raw
    assert classic(m.port)[0] == 200
    st, body, raw, _ = call(m.port, "POST", "/mock/token/fail?" + q(appid=DEFAULT_APPID,
                                                                   do="alice"))
    assert st == 400, raw
    st, body, raw, _ = call(m.port, "POST", "/mock/token/fail?" + q(appid="wxnope", do=""))
    assert st == 404, raw


def test_force_refresh_twenty_a_day(procs):
    m = procs.mock(args=["--force-refresh-interval-s", "0"])
    seen = {stable_token(m.port)[0]}
    for _ in range(20):
        seen.add(stable_token(m.port, force=True)[0])
    assert len(seen) == 21, "each force_refresh replaces the token"
    errmsg = assert_errcode(stable(m.port, force=True), 45009)
    assert errmsg.startswith("reach max api daily quota limit rid: "), errmsg
    assert stable_token(m.port)[0] in seen, "without force_refresh it still answers"


def test_force_refresh_at_most_every_30_s(procs):
    m = procs.mock()
    t0, _ = stable_token(m.port)
    t1, _ = stable_token(m.port, force=True)
    assert t1 != t0
    t2, _ = stable_token(m.port, force=True)
    assert t2 == t1, "a second force_refresh within 30 s changes nothing"


def test_codes_expire(procs):
    m = procs.mock(args=["--code-ttl", "1"])
    code = new_code("old", "http503x1")
    assert c2s(m.port, code)[0] == 503                   # first use: not spent
    time.sleep(1.3)
    assert_errcode(c2s(m.port, code), 40029)
    tok, _ = stable_token(m.port)
    pcode = new_code("old", "http503x1")
    assert phone(m.port, tok, pcode)[0] == 503
    time.sleep(1.3)
    assert_errcode(phone(m.port, tok, pcode), 40029)
    # within its lifetime a code works
    assert c2s(m.port, new_code("young"))[0] == 200


# --------------------------------------------------------------------------
# 8. errmsg wording
# --------------------------------------------------------------------------

def test_errmsg_wording(mock):
    # code2Session: a comma before the rid
    errmsg = assert_errcode(c2s(mock.port, new_code("w"), secret="x" * 32), 40125)
    assert re.fullmatch(r"invalid appsecret, rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}", errmsg)
    # the token endpoints: none
    for r in (stable(mock.port, secret="x" * 32), classic(mock.port, secret="x" * 32)):
        errmsg = assert_errcode(r, 40125)
        assert re.fullmatch(r"invalid appsecret rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}", errmsg)
    errmsg = assert_errcode(stable(mock.port, appid=""), 41002)
    assert errmsg.startswith("appid missing rid: "), errmsg
    # 40001's current text points at getStableAccessToken
    errmsg = assert_errcode(phone(mock.port, "nope", new_code("w")), 40001)
    assert errmsg.startswith("invalid credential, access_token is invalid or not latest, could "
                             "get access_token by getStableAccessToken, more details at "
                             "https://mmbizurl.cn/s/JtxxFh33r rid: "), errmsg


# --------------------------------------------------------------------------
# the production binary
# --------------------------------------------------------------------------

def test_production_binary_has_no_mock():
    """wxlogin carries no route that hands out session keys: the mock is its own program."""
    with open(BIN, "rb") as f:
        image = f.read()
    for route in (b"/mock/session_key", b"/mock/token/invalidate", b"/mock/stats"):
        assert route not in image, f"{route.decode()} is compiled into {BIN}"
    cp = subprocess.run([BIN, "mock", "--listen", "127.0.0.1:0"], capture_output=True, timeout=10,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode == 2 and b"wxlogin-mock" in cp.stderr, cp
