"""wxlogin's access token against WeChat's token endpoints as they really behave (issue 13):

  - early refresh, with a WeChat that renews a token in its last 5 minutes and with one that
    hands back the same token until it expires: one fetch either way, not one per request;
  - the token endpoints failing: -1 is retried, 45009 (daily quota, also force_refresh's 20 a
    day), 40164 (IP not whitelisted) and 40243 (frozen secret) are config_error, logged with a
    line that names the cause.

The mock's clock is compressed with --token-ttl: a 302 s token is inside wxlogin's 300 s
refresh margin 2 to 3 s after it is issued.
"""

import json
import time

import pytest

from conftest import DEFAULT_APPID, DEFAULT_SECRET, assert_error, new_code, post_json, request

ADMIN = "adm-R8wY3mK6pL1zX9vQ4nB7cH2jT5sF0gD"


def admin_get(port):
    r = request(port, "GET", "/admin/v1/access-token", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status == 200, r
    body = r.json()
    return body["access_token"], body["expires_in"]


def stable_requests(mock):
    return mock.stats()["stable_token"]["requests"]


def poll(port, seconds, every=0.1):
    """Asks for the token every `every` s for `seconds`: [(token, expires_in)]."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(admin_get(port))
        time.sleep(every)
    return out


def wait_inside_margin(port, first_left):
    """Sleeps until the token served (first_left s at first) has under 300 s left."""
    time.sleep(max(0.0, first_left - 300) + 1.2)


def test_refresh_with_a_wechat_that_renews_early(procs):
    m = procs.mock(args=["--token-ttl", "302"])
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN})
    t1, left = admin_get(s.port)
    assert left >= 300
    before = stable_requests(m)
    wait_inside_margin(s.port, left)
    seen = poll(s.port, 3.0)
    fetches = stable_requests(m) - before
    # Each refresh brings a renewed token with its whole (compressed) life, which enters the
    # margin in its turn 2 to 3 s later: one fetch per token, never one per request.
    renewed = []
    for t, _ in seen:
        if t != t1 and t not in renewed:
            renewed.append(t)
    assert renewed, "the early refresh brought WeChat's renewed token"
    # (a refresh may be on its way when the poll ends: its token not seen yet)
    assert len(renewed) <= fetches <= len(renewed) + 1 <= 3, \
        f"{fetches} stable_token calls in 3 s for {len(seen)} requests, {len(renewed)} renewals"
    assert all(e >= 295 for t, e in seen if t != t1), seen
    # tokens only move forward: once renewed, the old one is not handed out again
    order = [t1] + renewed
    idx = [order.index(t) for t, _ in seen]
    assert idx == sorted(idx), "went back to an older token"


def test_refresh_with_a_wechat_that_does_not_renew_early(procs):
    """The same token comes back, still inside the margin: no refresh again before it expires
    (before the fix, every request in those 5 minutes started one: ~30 calls in 3 s here)."""
    m = procs.mock(args=["--token-ttl", "302", "--no-early-renewal"])
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN})
    t1, left = admin_get(s.port)
    before = stable_requests(m)
    wait_inside_margin(s.port, left)
    seen = poll(s.port, 3.0)
    fetches = stable_requests(m) - before
    assert fetches == 1, \
        f"{fetches} stable_token calls in 3 s for {len(seen)} requests (want 1: back off)"
    assert all(t == t1 for t, _ in seen), "WeChat has only this token: it is served"
    assert all(0 < e < 300 for _, e in seen), seen
    # the requests that need the token work meanwhile
    tok = post_json(s.port, "/v1/login", {"code": new_code("nore")}).json()["token"]
    r = post_json(s.port, "/v1/phone", {"code": new_code("nore")},
                  headers={"Content-Type": "application/json", "Authorization": f"Bearer {tok}"})
    assert r.status == 200 and r.json()["countryCode"] == "86", r
    assert stable_requests(m) - before == 1


def test_expired_token_is_fetched_again(procs):
    """The back-off lasts until the token expires, not longer: then it is fetched anew."""
    m = procs.mock(args=["--token-ttl", "3", "--no-early-renewal"])
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN})
    t1, _ = admin_get(s.port)
    seen = poll(s.port, 4.5, every=0.1)
    tokens = [t for t, _ in seen]
    assert tokens[-1] != t1, "a new token after the first expired"
    # fetches: the first token's (before the poll), at most one refresh of each token, and one
    # per expiry: a handful, never one per request
    assert stable_requests(m) <= 6, (stable_requests(m), len(seen))
    assert all(e > 0 for _, e in seen), seen


# --------------------------------------------------------------------------
# the token endpoints failing
# --------------------------------------------------------------------------

def set_fault(mock, directives):
    r = request(mock.port, "POST",
                f"/mock/token/fail?appid={DEFAULT_APPID}&do={directives}")
    assert r.status == 200, r


def login_token(port, user):
    r = post_json(port, "/v1/login", {"code": new_code(user)})
    assert r.status == 200, r
    return r.json()["token"]


def phone(port, tok, user):
    return post_json(port, "/v1/phone", {"code": new_code(user)},
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {tok}"})


def json_lines(proc, msg):
    return proc.json_lines(lambda d: d.get("msg") == msg)


def test_system_error_at_the_token_endpoint_is_retried(procs):
    m = procs.mock()
    s = procs.serve(mock=m)
    tok = login_token(s.port, "busy")
    set_fault(m, "busy1")
    before = stable_requests(m)
    r = phone(s.port, tok, "busy")
    assert r.status == 200, r
    assert stable_requests(m) - before == 2, "-1 once, then the retry got the token"


@pytest.mark.parametrize("errcode,cause", [
    (45009, "daily quota"),
    (40164, "not whitelisted"),
    (40243, "frozen"),
])
def test_token_endpoint_refusals_are_config_errors_with_a_cause(procs, errcode, cause):
    m = procs.mock()
    s = procs.serve(mock=m, env={"WXLOGIN_LOG_FORMAT": "json", "WXLOGIN_ADMIN_TOKEN": ADMIN})
    tok = login_token(s.port, "cfg")
    set_fault(m, f"err{errcode}")
    before = stable_requests(m)
    assert_error(phone(s.port, tok, "cfg"), 500, "config_error", "none", errcode)
    assert stable_requests(m) - before == 1, "not retried"
    r = request(s.port, "GET", "/admin/v1/access-token",
                headers={"Authorization": f"Bearer {ADMIN}"})
    assert_error(r, 500, "config_error", "none", errcode)
    s.wait_log(lambda t: "WeChat refused to issue an access token" in t)
    lines = json_lines(s, "WeChat refused to issue an access token")
    assert lines, s.log_text()[-3000:]
    d = lines[0]
    assert d["level"] == "error" and str(d["wx_errcode"]) == str(errcode), d
    assert cause in d["cause"], d
    assert len(d.get("wx_rid", "")) == 26, f"WeChat's rid is logged: {d}"
    if errcode == 40164:
        assert d["caller_ip"] == "127.0.0.1", f"the address to whitelist: {d}"
    else:
        assert "caller_ip" not in d, d
    assert s.stop() == 0
    assert DEFAULT_SECRET not in s.log_text(), "the secret is never logged"


def test_force_refresh_past_twenty_a_day_is_45009(procs):
    m = procs.mock(args=["--force-refresh-interval-s", "0"])
    s = procs.serve(mock=m, env={"WXLOGIN_ADMIN_TOKEN": ADMIN, "WXLOGIN_LOG_FORMAT": "json"})
    seen = {admin_get(s.port)[0]}
    for _ in range(20):
        r = request(s.port, "POST", "/admin/v1/access-token/refresh?force=true",
                    headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status == 200, r
        seen.add(r.json()["access_token"])
    assert len(seen) == 21
    r = request(s.port, "POST", "/admin/v1/access-token/refresh?force=true",
                headers={"Authorization": f"Bearer {ADMIN}"})
    assert_error(r, 500, "config_error", "none", 45009)
    s.wait_log(lambda t: "daily quota" in t)
