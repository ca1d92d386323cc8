"""Prometheus metrics (issue 10): GET /metrics on metrics_listen only.

A scrape is taken before and after a known sequence of requests (logins, failures made by mock
directives, session checks, repeats of a code, phone numbers with a rejected access token, rate
limits) and every counter the sequence touches must have moved by exactly its amount; the
scrape passes `promtool check metrics`; the public listener has no /metrics and the metrics
listener serves nothing else; every expression of contrib/grafana/wxlogin.json uses only
metrics a real scrape has; two instances on one Redis count the claim of a code across
instances.
"""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (REPO, Counter, free_port, in_parallel, new_code, post_json, request,
                      wait_until)
from test_redis import MASTER_KEY, db, redis, redis_dir, redis_env  # noqa: F401 (fixtures)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DASHBOARD = REPO / "contrib" / "grafana" / "wxlogin.json"

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# --------------------------------------------------------------------------
# scraping
# --------------------------------------------------------------------------

def scrape_text(mport):
    r = request(mport, "GET", "/metrics", timeout=10)
    assert r.status == 200, r
    ct = r.headers.get("content-type", "")
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, ct
    return r.body.decode("utf-8")


def parse(text):
    """{(name, frozenset(labels.items())): float} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def counters_only(samples):
    """What a finished request sequence leaves still: the wxlogin_* counts (not durations, not
    the process' own gauges)."""
    return {k: v for k, v in samples.items()
            if k[0].startswith("wxlogin_") and not k[0].endswith(("_sum", "_bucket"))}


def scrape(mport):
    """A scrape once the counts stopped moving: a request is counted when libmicrohttpd reports
    it complete, just after its answer was sent, so a scrape right after the answer may come a
    moment before the count."""
    last = [None]

    def stable():
        s = parse(scrape_text(mport))
        c = counters_only(s)
        same = last[0] is not None and c == last[0]
        last[0] = c
        return s if same else None

    s = wait_until(stable, timeout=10, interval=0.15)
    assert s, "the counters kept moving for 10 s after the sequence ended"
    return s


def val(s, name, **labels):
    return s.get((name, frozenset(labels.items())), 0.0)


class Delta:
    def __init__(self, before, after):
        self.before, self.after = before, after

    def __call__(self, name, **labels):
        return val(self.after, name, **labels) - val(self.before, name, **labels)


def metrics_serve(procs, mock, env=None):
    mport = free_port()
    e = {"WXLOGIN_METRICS_LISTEN": f"127.0.0.1:{mport}"}
    e.update(env or {})
    s = procs.serve(mock=mock, env=e)
    assert wait_until(lambda: _answers(mport)), "the metrics listener does not answer"
    s.mport = mport
    return s


def _answers(port):
    try:
        return request(port, "GET", "/metrics", timeout=2).status == 200
    except OSError:
        return False


# --------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------

def v1_login(port, code):
    return post_json(port, "/v1/login", {"code": code})


def openid(port, code):
    return post_json(port, "/openid", {"code": code})


def session(port, token):
    return request(port, "GET", "/v1/session", headers={"Authorization": f"Bearer {token}"})


def phone(port, token, code):
    return post_json(port, "/v1/phone", {"code": code},
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {token}"})


def promtool_check(text):
    assert Path(PROMTOOL).exists(), \
        f"{PROMTOOL} not found: run scripts/install-deps.sh (Debian package prometheus)"
    cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                        capture_output=True, timeout=30)
    out = (cp.stdout + cp.stderr).decode("utf-8", "replace")
    assert cp.returncode == 0 and not out.strip(), f"promtool check metrics:\n{out}"


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

def test_counters_move_by_exactly_what_happened(procs, mock):
    s = metrics_serve(procs, mock, env={"WXLOGIN_THREADS": "2"})
    port = s.port
    before = scrape(s.mport)
    with Counter(mock) as upstream:
        # N = 3 logins
        tokens = []
        for _ in range(3):
            r = v1_login(port, new_code("mal"))
            assert r.status == 200, r
            tokens.append(r.json()["token"])
        # M failures: two 40029, one 45011 (WeChat's own rate limit: not ours), one -1 retried
        # once and then logged in (2 attempts, 1 call)
        for d in ("err40029", "err40029", "err45011"):
            r = openid(port, new_code("mfail", d))
            assert r.status in (400, 429), r
        assert openid(port, new_code("mbusy", "busy1")).status == 200
    upstream.assert_delta(3 + 3 + 2)
    mid = scrape(s.mport)
    d = Delta(before, mid)

    assert d("wxlogin_wechat_calls_total", api="code2session", outcome="ok") == 4
    assert d("wxlogin_wechat_calls_total", api="code2session", outcome="errcode") == 3
    assert d("wxlogin_wechat_errcodes_total", api="code2session", errcode="40029") == 2
    assert d("wxlogin_wechat_errcodes_total", api="code2session", errcode="45011") == 1
    assert d("wxlogin_wechat_attempts_total", api="code2session") == 8
    assert d("wxlogin_wechat_call_duration_seconds_count", api="code2session") == 7
    assert d("wxlogin_http_requests_total", method="POST", route="/v1/login", status="200") == 3
    assert d("wxlogin_http_requests_total", method="POST", route="/openid", status="400") == 2
    assert d("wxlogin_http_requests_total", method="POST", route="/openid", status="429") == 1
    assert d("wxlogin_http_requests_total", method="POST", route="/openid", status="200") == 1
    assert d("wxlogin_http_request_duration_seconds_count", method="POST",
             route="/openid") == 4
    assert d("wxlogin_code_exchanges_total", role="lead") == 7
    assert d("wxlogin_store_operations_total", op="login", result="ok") == 4
    assert d("wxlogin_store_operation_duration_seconds_count", op="login") == 4
    # WeChat's 45011 is answered 429 but is not one of our rate limits
    for lim in ("address", "openid", "wechat", "admin"):
        assert d("wxlogin_rate_limited_total", limit=lim) == 0, lim

    # K session checks: the first of each token misses the cache (the user has no unionid, so
    # the login did not fill it) and reads the store; the next ones hit
    for t in tokens:
        assert session(port, t).status == 200
    after1 = scrape(s.mport)
    d = Delta(mid, after1)
    assert d("wxlogin_session_cache_lookups_total", result="miss") == 3
    assert d("wxlogin_session_cache_lookups_total", result="hit") == 0
    assert d("wxlogin_store_operations_total", op="get_session", result="ok") == 3
    K = 7
    for i in range(K):
        assert session(port, tokens[i % 3]).status == 200
    unknown = "wxl_" + "A" * 43
    assert session(port, unknown).status == 401
    assert request(port, "GET", "/no/such/path").status == 404
    after2 = scrape(s.mport)
    d = Delta(after1, after2)
    assert d("wxlogin_session_cache_lookups_total", result="hit") == K
    assert d("wxlogin_session_cache_lookups_total", result="miss") == 1
    assert d("wxlogin_store_operations_total", op="get_session", result="ok") == 0
    assert d("wxlogin_store_operations_total", op="get_session", result="not_found") == 1
    assert d("wxlogin_http_requests_total", method="GET", route="/v1/session",
             status="200") == K
    assert d("wxlogin_http_requests_total", method="GET", route="/v1/session",
             status="401") == 1
    assert d("wxlogin_http_requests_total", method="other", route="other", status="404") == 1
    assert d("wxlogin_wechat_attempts_total", api="code2session") == 0

    # Repeats of a code: one in flight (waiters), then one remembered
    code = new_code("mdup", "delay300")
    with Counter(mock) as upstream:
        rs = in_parallel([lambda: openid(port, code)] * 4)
        assert all(r.status == 200 for r in rs), rs
        assert openid(port, code).status == 200
    upstream.assert_delta(1)
    after3 = scrape(s.mport)
    d = Delta(after2, after3)
    assert d("wxlogin_code_exchanges_total", role="lead") == 1
    assert d("wxlogin_code_exchanges_total", role="waited") + \
        d("wxlogin_code_exchanges_total", role="remembered") == 4
    assert d("wxlogin_code_exchanges_total", role="remembered") >= 1
    assert d("wxlogin_wechat_calls_total", api="code2session", outcome="ok") == 1

    promtool_check(scrape_text(s.mport))


def test_access_token_fetches_and_invalidations(procs, mock):
    s = metrics_serve(procs, mock)
    r = v1_login(s.port, new_code("mtok"))
    assert r.status == 200, r
    tok = r.json()["token"]
    before = scrape(s.mport)
    # the first phone number fetches the app's access token; the second is refused 40001 once
    # (that token is dropped, a new one fetched and the call retried)
    assert phone(s.port, tok, new_code("mtok")).status == 200
    assert phone(s.port, tok, new_code("mtok", "err40001x1")).status == 200
    d = Delta(before, scrape(s.mport))
    assert d("wxlogin_access_token_fetches_total", result="ok") == 2
    assert d("wxlogin_access_token_fetches_total", result="failed") == 0
    assert d("wxlogin_access_token_invalidations_total") == 1
    assert d("wxlogin_wechat_calls_total", api="token", outcome="ok") == 2
    assert d("wxlogin_wechat_calls_total", api="getuserphonenumber", outcome="ok") == 2
    assert d("wxlogin_wechat_errcodes_total", api="getuserphonenumber", errcode="40001") == 1
    assert d("wxlogin_http_requests_total", method="POST", route="/v1/phone", status="200") == 2


def test_rate_limited_requests_are_counted(procs, mock):
    s = metrics_serve(procs, mock, env={"WXLOGIN_RATE_LIMIT_ADDRESS": "2/min"})
    before = scrape(s.mport)
    statuses = [openid(s.port, new_code("mlim")).status for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429], statuses
    d = Delta(before, scrape(s.mport))
    assert d("wxlogin_rate_limited_total", limit="address") == 3
    assert d("wxlogin_rate_limited_total", limit="openid") == 0
    assert d("wxlogin_http_requests_total", method="POST", route="/openid", status="429") == 3
    assert d("wxlogin_wechat_calls_total", api="code2session", outcome="ok") == 2


def test_metrics_are_not_public_and_the_listener_serves_nothing_else(procs, mock):
    s = metrics_serve(procs, mock)
    # the public listener has no /metrics
    for method in ("GET", "HEAD", "POST"):
        assert request(s.port, method, "/metrics").status == 404, method
    # the metrics listener has nothing but GET /metrics
    for method, path in [("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/openid"),
                         ("GET", "/v1/session"), ("GET", "/admin/v1/access-token"),
                         ("GET", "/metrics/"), ("GET", "/")]:
        assert request(s.mport, method, path).status == 404, (method, path)
    assert request(s.mport, "POST", "/metrics").status == 405
    # and its own requests are never counted among the service's
    def total(sc):
        return sum(v for k, v in sc.items() if k[0] == "wxlogin_http_requests_total")
    before = scrape(s.mport)
    for _ in range(3):
        scrape_text(s.mport)
    request(s.mport, "GET", "/healthz")
    assert total(scrape(s.mport)) == total(before)


def test_metrics_are_off_by_default(procs, mock):
    s = procs.serve(mock=mock)
    assert request(s.port, "GET", "/metrics").status == 404
    assert "metrics served" not in s.log_text()


def test_bad_metrics_listen_is_refused(procs, mock):
    from conftest import run_cli, base_env
    cp = run_cli(["serve"], env=base_env(WXLOGIN_APPID="wx1234567890abcdef",
                                         WXLOGIN_SECRET="0123456789abcdef0123456789abcdef",
                                         WXLOGIN_METRICS_LISTEN="not an address"))
    assert cp.returncode == 2, cp
    assert "metrics_listen" in cp.stderr + cp.stdout


# --------------------------------------------------------------------------
# the Grafana dashboard
# --------------------------------------------------------------------------

PROMQL_WORDS = {
    # functions and aggregations
    "sum", "rate", "irate", "increase", "histogram_quantile", "avg", "max", "min", "count",
    "topk", "bottomk", "clamp_min", "clamp_max", "abs", "time", "vector", "scalar", "label_replace",
    "sort", "sort_desc", "delta", "deriv", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "changes", "resets", "absent", "round", "ceil", "floor", "or", "and",
    "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
}


def exprs_of(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs_of(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs_of(v)


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                # label values
    e = re.sub(r"\{[^}]*\}", "", e)                               # matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                              # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)                             # Grafana variables
    e = re.sub(r"(?<![\w:])\d+(\.\d*)?([eE][-+]?\d+)?", "", e)          # numbers (1e-9)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if word in PROMQL_WORDS or rest.startswith("("):
            continue
        names.add(word)
    return names


def test_grafana_dashboard_uses_only_exported_metrics(procs, mock):
    dash = json.loads(DASHBOARD.read_text())
    exprs = list(exprs_of(dash))
    assert len(exprs) >= 10, exprs
    used = set()
    for e in exprs:
        names = metric_names(e)
        assert names, f"no metric in expression {e!r}"
        used |= names

    # a scrape after requests that exercise every family the dashboard shows
    s = metrics_serve(procs, mock)
    r = v1_login(s.port, new_code("mgraf"))
    tok = r.json()["token"]
    for _ in range(2):
        assert session(s.port, tok).status == 200
    assert openid(s.port, new_code("mgraf", "err40029")).status == 400
    assert phone(s.port, tok, new_code("mgraf")).status == 200
    exported = {name for name, _ in scrape(s.mport)}
    missing = sorted(used - exported)
    assert not missing, f"dashboard expressions use metrics the service does not export: {missing}"
    # and it shows what an operator needs
    for want in ("wxlogin_http_requests_total", "wxlogin_http_request_duration_seconds_bucket",
                 "wxlogin_wechat_calls_total", "wxlogin_session_cache_lookups_total",
                 "wxlogin_store_operation_duration_seconds_bucket",
                 "wxlogin_access_token_fetches_total", "wxlogin_rate_limited_total",
                 "process_resident_memory_bytes", "process_open_fds"):
        assert want in used, f"the dashboard has no panel on {want}"


# --------------------------------------------------------------------------
# several instances on Redis
# --------------------------------------------------------------------------

def test_claims_across_instances_on_redis(procs, mock, redis, db):
    e = redis_env(redis.url(db))
    a = metrics_serve(procs, mock, env=e)
    b = metrics_serve(procs, mock, env=e)
    ba, bb = scrape(a.mport), scrape(b.mport)
    code = new_code("mred")
    with Counter(mock) as upstream:
        assert openid(a.port, code).status == 200   # A claims it and asks WeChat
        assert openid(b.port, code).status == 200   # B finds A's published outcome
    upstream.assert_delta(1)
    da, db_ = Delta(ba, scrape(a.mport)), Delta(bb, scrape(b.mport))
    assert da("wxlogin_code_claims_total", result="mine") == 1
    assert da("wxlogin_code_claims_total", result="known") == 0
    assert db_("wxlogin_code_claims_total", result="known") == 1
    assert db_("wxlogin_code_claims_total", result="mine") == 0
    assert da("wxlogin_wechat_calls_total", api="code2session", outcome="ok") == 1
    assert db_("wxlogin_wechat_calls_total", api="code2session", outcome="ok") == 0
    # the store is timed under its own names on Redis too
    assert da("wxlogin_store_operations_total", op="claim", result="ok") == 1
    assert da("wxlogin_store_operations_total", op="claim_publish", result="sent") == 1
    assert db_("wxlogin_store_operations_total", op="claim", result="ok") == 1
    # no session cache with Redis
    t = v1_login(a.port, new_code("mred")).json()["token"]
    before = scrape(b.mport)
    assert session(b.port, t).status == 200
    d = Delta(before, scrape(b.mport))
    assert d("wxlogin_store_operations_total", op="get_session", result="ok") == 1
    assert d("wxlogin_session_cache_lookups_total", result="hit") == 0
    assert d("wxlogin_session_cache_lookups_total", result="miss") == 0
