"""wxlogin's access token against WeChat's token endpoints as they really behave (issue 13):

  - early refresh, with a WeChat that renews a token in its last 5 minutes and with one that
    hands back the same token until it expires: one fetch either way, not one per request.

The mock's clock is compressed with --token-ttl: a 302 s token is inside wxlogin's 300 s
refresh margin 2 to 3 s after it is issued.
"""

import time

from conftest import new_code, post_json, request

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
