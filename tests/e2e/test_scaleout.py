"""Several instances, one truth (issue: scale out): two `wxlogin serve` on one Redis exchange a
code once, fetch the access token once, and keep several apps apart."""

import threading

from conftest import in_parallel, new_code, post_json, request
from test_redis import MASTER_KEY, db, redis, redis_dir, redis_env  # noqa: F401 (fixtures)
from test_token import delayed_mock

APP_A, SECRET_A = "wxaaaa000000000001", "secretA0000000000000000000000001"
APP_B, SECRET_B = "wxbbbb000000000002", "secretB0000000000000000000000002"
# from `openssl rand -hex 32`: serve refuses a short or predictable admin token
ADMIN = "55b047114b4ff5567acd7bb5efd684b3194045a69d41a3f7b9199f68de1e5477"


def two_instances(procs, mock, redis, db, **env):
    e = redis_env(redis.url(db), WXLOGIN_ADMIN_TOKEN=ADMIN, **env)
    return procs.serve(mock=mock, env=e), procs.serve(mock=mock, env=e)


def login(port, code, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return post_json(port, "/v1/login", {"code": code}, headers=h)


def test_one_code_through_both_instances_is_exchanged_once(procs, mock, redis, db):
    a, b = two_instances(procs, mock, redis, db)
    code = new_code("zoe", "delay300")
    before = mock.requests()
    rs = in_parallel([lambda p=(a if i % 2 else b).port: login(p, code) for i in range(6)])
    assert [r.status for r in rs] == [200] * 6, rs
    assert len({r.json()["openid"] for r in rs}) == 1
    assert mock.requests() - before == 1
    # a repeat later, on either instance, still costs nothing
    assert login(a.port, code).status == 200 and login(b.port, code).status == 200
    assert mock.requests() - before == 1


def test_final_failure_is_shared_between_instances(procs, mock, redis, db):
    a, b = two_instances(procs, mock, redis, db)
    code = new_code("yan", "err40029")
    before = mock.requests()
    assert login(a.port, code).status == 400
    r = login(b.port, code)
    assert r.status == 400 and r.json()["wx_errcode"] == 40029, r
    assert mock.requests() - before == 1


def test_transient_failure_is_not_shared(procs, mock, redis, db):
    a, b = two_instances(procs, mock, redis, db, WXLOGIN_UPSTREAM_RETRIES=0)
    code = new_code("xia", "busy1")
    assert login(a.port, code).status == 503  # -1 once, no retries
    assert login(b.port, code).status == 200  # the claim was released: B exchanges it


def test_twenty_phone_calls_across_both_fetch_one_token(procs, redis, db):
    m = delayed_mock(procs, 300)
    a, b = two_instances(procs, m, redis, db)
    tok = login(a.port, new_code("wes")).json()["token"]
    stable = m.stats()["stable_token"]["requests"]

    def phone(port):
        return post_json(port, "/v1/phone", {"code": new_code("wes")},
                         headers={"Authorization": f"Bearer {tok}",
                                  "Content-Type": "application/json"})

    rs = in_parallel([lambda p=(a if i % 2 else b).port: phone(p) for i in range(20)])
    assert [r.status for r in rs] == [200] * 20, [r for r in rs if r.status != 200][:2]
    assert m.stats()["stable_token"]["requests"] - stable == 1
    # both hand out the same token to internal services
    ta = request(a.port, "GET", "/admin/v1/access-token",
                 headers={"Authorization": f"Bearer {ADMIN}"}).json()["access_token"]
    tb = request(b.port, "GET", "/admin/v1/access-token",
                 headers={"Authorization": f"Bearer {ADMIN}"}).json()["access_token"]
    assert ta == tb
    assert m.stats()["stable_token"]["requests"] - stable == 1

    # WeChat invalidates it: both instances recover with one more fetch between them
    assert request(m.port, "POST", "/mock/token/invalidate?appid=wx1234567890abcdef").status == 200
    rs = in_parallel([lambda p=(a if i % 2 else b).port: phone(p) for i in range(6)])
    assert [r.status for r in rs] == [200] * 6
    assert m.stats()["stable_token"]["requests"] - stable == 2


def test_two_apps_on_redis_are_isolated(procs, redis, db, tmp_path):
    conf = tmp_path / "apps.conf"
    conf.write_text(f'[app "{APP_A}"]\nsecret = {SECRET_A}\n[app "{APP_B}"]\nsecret = {SECRET_B}\n')
    m = procs.mock(apps=[(APP_A, SECRET_A), (APP_B, SECRET_B)])
    s = procs.serve(mock=m, appid=None, secret=None, args=["--config", str(conf)],
                    env=redis_env(redis.url(db)))
    ta = login(s.port, new_code("vic"), {"X-WX-AppID": APP_A}).json()["token"]
    tb = login(s.port, new_code("vic", app=APP_B), {"X-WX-AppID": APP_B}).json()["token"]

    def session(token, app):
        return request(s.port, "GET", "/v1/session",
                       headers={"Authorization": f"Bearer {token}", "X-WX-AppID": app})

    assert session(ta, APP_A).status == 200 and session(tb, APP_B).status == 200
    assert session(ta, APP_B).status == 401 and session(tb, APP_A).status == 401
    with redis.client(db) as c:
        keys = [k.decode() if isinstance(k, bytes) else k for k in c.cmd("KEYS", "*")]
    assert any(k.startswith(f"wxlogin:{APP_A}:s:") for k in keys), keys
    assert any(k.startswith(f"wxlogin:{APP_B}:s:") for k in keys), keys
    assert all(k.startswith((f"wxlogin:{APP_A}:", f"wxlogin:{APP_B}:")) for k in keys), keys
