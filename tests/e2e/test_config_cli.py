"""Configuration (file + environment) and the command line."""

import os
import subprocess

import pytest

from conftest import (DEFAULT_APPID, DEFAULT_SECRET, Counter, assert_error, assert_ok,
                      base_env, free_port, login, new_code, request, run_cli)


def write_config(path, settings):
    """An INI file without sections: `key = value` per line."""
    lines = ["# written by tests/e2e", ""]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def serve_env(mock, **extra):
    e = {"WXLOGIN_LISTEN": f"127.0.0.1:{free_port()}", "WXLOGIN_APPID": DEFAULT_APPID,
         "WXLOGIN_SECRET": DEFAULT_SECRET,
         "WXLOGIN_WECHAT_BASE": mock.base if mock else "http://127.0.0.1:9"}
    e.update(extra)
    return base_env(**e)


def assert_config_exit(cp, *needles):
    assert cp.returncode == 2, \
        f"expected exit 2, got {cp.returncode}; stderr:\n{cp.stderr[-2000:]}"
    low = cp.stderr.lower()
    for n in needles:
        assert n.lower() in low, f"stderr does not name {n!r}:\n{cp.stderr[-2000:]}"


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def test_help():
    cp = run_cli(["--help"])
    assert cp.returncode == 0, cp
    out = cp.stdout + cp.stderr
    assert "serve" in out and "mock" in out, out


def test_version():
    cp = run_cli(["--version"])
    assert cp.returncode == 0, cp
    assert (cp.stdout + cp.stderr).strip(), "no version printed"


def test_unknown_subcommand_fails():
    cp = run_cli(["frobnicate"])
    assert cp.returncode != 0, cp


def test_unknown_serve_option_fails():
    cp = run_cli(["serve", "--no-such-option"], env=serve_env(None), timeout=10)
    assert cp.returncode == 2, cp


# --------------------------------------------------------------------------
# config errors: exit 2 naming the key
# --------------------------------------------------------------------------

def test_unknown_key_in_config_file(tmp_path, mock):
    cfg = write_config(tmp_path / "wxlogin.conf", {"upstream_retries": 1, "bogus_setting": 7})
    cp = run_cli(["serve", "--config", str(cfg)], env=serve_env(mock), timeout=10)
    assert_config_exit(cp, "bogus_setting")


def test_bad_value_in_config_file(tmp_path, mock):
    cfg = write_config(tmp_path / "wxlogin.conf", {"upstream_timeout_ms": "soon"})
    cp = run_cli(["serve", "--config", str(cfg)], env=serve_env(mock), timeout=10)
    assert_config_exit(cp, "upstream_timeout_ms")


def test_missing_config_file(tmp_path, mock):
    cp = run_cli(["serve", "--config", str(tmp_path / "absent.conf")], env=serve_env(mock),
                 timeout=10)
    assert cp.returncode != 0, cp
    assert "absent.conf" in cp.stderr, cp.stderr


@pytest.mark.parametrize("var,value,key", [
    ("WXLOGIN_UPSTREAM_RETRIES", "abc", "upstream_retries"),
    ("WXLOGIN_UPSTREAM_RETRIES", "-1", "upstream_retries"),
    ("WXLOGIN_UPSTREAM_TIMEOUT_MS", "12abc", "upstream_timeout_ms"),
    ("WXLOGIN_MAX_BODY_BYTES", "lots", "max_body_bytes"),
    ("WXLOGIN_THREADS", "two", "threads"),
    ("WXLOGIN_LOG_LEVEL", "loud", "log_level"),
    ("WXLOGIN_LOG_FORMAT", "xml", "log_format"),
    ("WXLOGIN_WECHAT_BASE", "not a url", "wechat_base"),
    ("WXLOGIN_RATE_LIMIT_ADDRESS", "120/minute", "rate_limit_address"),
    ("WXLOGIN_RATE_LIMIT_OPENID", "0/min", "rate_limit_openid"),
    ("WXLOGIN_RATE_LIMIT_WECHAT", "lots", "rate_limit_wechat"),
    ("WXLOGIN_TRUSTED_PROXIES", "10.0.0.1/8", "trusted_proxies"),
    ("WXLOGIN_TRUSTED_PROXIES", "proxy.internal", "trusted_proxies"),
])
def test_bad_env_value_exits_2_naming_key(mock, var, value, key):
    cp = run_cli(["serve"], env=serve_env(mock, **{var: value}), timeout=10)
    assert_config_exit(cp, key)


def test_bad_listen_address_fails(mock):
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_LISTEN="nonsense"), timeout=10)
    assert cp.returncode == 2, cp
    assert "listen" in cp.stderr.lower(), cp.stderr


def test_serve_without_appid(mock):
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_APPID=None), timeout=10)
    assert_config_exit(cp, "appid")


def test_serve_without_secret(mock):
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_SECRET=None), timeout=10)
    assert_config_exit(cp, "secret")


def test_secret_errors_never_echo_the_secret(tmp_path, mock):
    """A config error next to a secret does not print the secret."""
    secret = "Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq9Zq"
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_SECRET=secret,
                                          WXLOGIN_UPSTREAM_RETRIES="abc"), timeout=10)
    assert cp.returncode == 2
    assert secret not in cp.stderr + cp.stdout


PROXY_PASSWORD = "s3cretpw"


@pytest.mark.parametrize("value", [
    "ftp://user:{pw}@127.0.0.1:{port}",
    "user:{pw}@127.0.0.1:{port}",          # the scheme forgotten
    "http:/user:{pw}@127.0.0.1:{port}",    # a slash missing
    "ftp://user:{pw}@127.0.0.1:{port}/" + "p" * 600,  # and long
])
@pytest.mark.parametrize("where", ["env", "file"])
def test_wechat_base_error_never_echoes_its_password(mock, tmp_path, value, where):
    """A rejected wechat_base is named, never quoted with its user:password@."""
    value = value.format(pw=PROXY_PASSWORD, port=mock.port)
    if where == "env":
        cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_WECHAT_BASE=value), timeout=10)
    else:
        cfg = write_config(tmp_path / "wxlogin.conf", {"wechat_base": value})
        cp = run_cli(["serve", "--config", str(cfg)],
                     env=serve_env(mock, WXLOGIN_WECHAT_BASE=None), timeout=10)
    assert_config_exit(cp, "wechat_base")
    assert PROXY_PASSWORD not in cp.stdout + cp.stderr, cp.stderr


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_wechat_base_password_not_in_start_line(serve_factory, mock, fmt):
    """wechat_base with credentials (a proxy's) works, and its password is redacted in the
    start line like the store's."""
    base = f"http://user:{PROXY_PASSWORD}@127.0.0.1:{mock.port}"
    s = serve_factory(wechat_base=base, env={"WXLOGIN_LOG_FORMAT": fmt,
                                             "WXLOGIN_LOG_LEVEL": "debug"})
    assert_ok(login(s.port, new_code("proxied")))
    s.stop()
    text = s.log_text()
    start = [l for l in text.splitlines() if "wxlogin serving" in l]
    assert len(start) == 1, text[-2000:]
    assert f"http://***@127.0.0.1:{mock.port}" in start[0], start[0]
    assert PROXY_PASSWORD not in text, f"the proxy password was logged:\n{text[-2000:]}"


# --------------------------------------------------------------------------
# the admin token's strength (docs/config.md, "The admin token")
# --------------------------------------------------------------------------

WEAK_ADMIN_TOKENS = [
    "Kp3xY7qZ9wR2mT5v",                           # 16 characters: too short
    "Q7vX2pL9kR4tZ8wN3mB6cF1hJ5sD0gY",            # 31 characters: too short
    "a" * 64,
    "ab" * 32,
    "0123456789" * 4,
    "0123456789abcdef" * 2,
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF",
    "615a49250c8ed10770e1668d295ebffb",           # openssl rand -hex 16: 128 bits, estimated less
]


@pytest.mark.parametrize("token", WEAK_ADMIN_TOKENS)
def test_weak_admin_token_refused_at_start(mock, token):
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_ADMIN_TOKEN=token), timeout=10)
    assert_config_exit(cp, "admin_token:", "openssl rand -hex 32")
    assert ("shorter than 32 characters" if len(token) < 32 else "too predictable") in cp.stderr
    assert token not in cp.stderr + cp.stdout, "the admin token was printed"


def test_weak_admin_token_file_refused_at_start(mock, tmp_path):
    token = "0123456789" * 8
    f = tmp_path / "admin-token"
    f.write_text(token + "\n")
    f.chmod(0o600)
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_ADMIN_TOKEN_FILE=str(f)), timeout=10)
    assert_config_exit(cp, "admin_token_file:", str(f), "too predictable")
    assert "0123456789" not in cp.stderr + cp.stdout, "the admin token was printed"


def openssl_rand(*args):
    """`openssl rand ...` output, or None without the openssl command."""
    try:
        cp = subprocess.run(["openssl", "rand", *args], capture_output=True, text=True,
                            timeout=10)
    except FileNotFoundError:
        return None
    assert cp.returncode == 0, cp
    return cp.stdout.strip()


@pytest.mark.parametrize("args", [["-hex", "32"], ["-base64", "32"]], ids=["hex", "base64"])
def test_openssl_admin_tokens_start(serve_factory, mock, args):
    """What docs/operations.md tells operators to run is accepted (a few draws of each)."""
    token = openssl_rand(*args)
    if token is None:
        pytest.skip("no openssl command")
    for _ in range(3):
        token = openssl_rand(*args)
        s = serve_factory(mock=mock, env={"WXLOGIN_ADMIN_TOKEN": token})
        r = request(s.port, "GET", "/admin/v1/access-token",
                    headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, r
        s.stop()
        assert token not in s.log_text()


@pytest.mark.parametrize("var,value", [
    ("WXLOGIN_ADMIN_LOCKOUT_S", "0"),
    ("WXLOGIN_ADMIN_LOCKOUT_S", "86401"),
    ("WXLOGIN_ADMIN_MAX_FAILURES", "0"),
    ("WXLOGIN_ADMIN_MAX_FAILURES", "101"),
])
def test_admin_lockout_settings_bounds(mock, var, value):
    cp = run_cli(["serve"], env=serve_env(mock, **{var: value}), timeout=10)
    assert_config_exit(cp, var)


# --------------------------------------------------------------------------
# config that starts
# --------------------------------------------------------------------------

def test_unknown_env_var_only_warns(serve_factory, mock):
    s = serve_factory(mock=mock, env={"WXLOGIN_FOO": "1"})
    assert_ok(login(s.port, new_code("foo")))
    text = s.wait_log(lambda t: "WXLOGIN_FOO" in t, timeout=2)
    assert "WXLOGIN_FOO" in text, f"no warning naming WXLOGIN_FOO:\n{text[-2000:]}"


def test_config_file_is_applied(serve_factory, mock, tmp_path):
    """Every setting from the file alone (no WXLOGIN_* except the file's path)."""
    port = free_port()
    cfg = write_config(tmp_path / "wxlogin.conf", {
        "listen": f"127.0.0.1:{port}",
        "appid": DEFAULT_APPID,
        "secret": DEFAULT_SECRET,
        "wechat_base": mock.base,
        "upstream_retries": 0,
        "log_format": "text",
    })
    serve_factory(mock=None, appid=None, secret=None, args=["--config", str(cfg)],
                  config_port=port)
    r = request(port, "GET", "/healthz")
    assert r.status == 200, r
    assert_ok(login(port, new_code("filed")))
    with Counter(mock) as c:
        r = login(port, new_code("filed", "busy1"))
    assert_error(r, 503, "upstream_busy", "retry", -1)  # upstream_retries = 0 from the file
    c.assert_delta(1)


def test_env_wins_over_file(serve_factory, mock, tmp_path):
    file_port = free_port()
    cfg = write_config(tmp_path / "wxlogin.conf", {
        "listen": f"127.0.0.1:{file_port}",
        "appid": DEFAULT_APPID,
        "secret": "ffffffffffffffffffffffffffffffff",   # wrong; env fixes it
        "wechat_base": "http://127.0.0.1:9",          # wrong; env fixes it
        "upstream_retries": 0,
    })
    s = serve_factory(mock=mock, args=["--config", str(cfg)],
                      env={"WXLOGIN_UPSTREAM_RETRIES": "1"})
    # listening where the environment says, not where the file says
    assert s.port != file_port
    assert request(s.port, "GET", "/healthz").status == 200
    assert_ok(login(s.port, new_code("envy")))            # secret + wechat_base from env
    with Counter(mock) as c:
        r = login(s.port, new_code("envy", "busy1"))      # retries=1 from env
    assert_ok(r)
    c.assert_delta(2)


@pytest.mark.parametrize("content", [DEFAULT_SECRET, DEFAULT_SECRET + "\n"],
                         ids=["no-newline", "trailing-newline"])
def test_secret_file_env(serve_factory, mock, tmp_path, content):
    sf = tmp_path / "secret"
    sf.write_text(content)
    os.chmod(sf, 0o600)
    s = serve_factory(mock=mock, secret=None, env={"WXLOGIN_SECRET_FILE": str(sf)})
    assert_ok(login(s.port, new_code("sfile")))


def test_secret_file_in_config_file(serve_factory, mock, tmp_path):
    sf = tmp_path / "secret"
    sf.write_text(DEFAULT_SECRET + "\n")
    cfg = write_config(tmp_path / "wxlogin.conf", {"secret_file": str(sf)})
    s = serve_factory(mock=mock, secret=None, args=["--config", str(cfg)])
    assert_ok(login(s.port, new_code("sfile")))


def test_secret_file_missing_exits_2(mock, tmp_path):
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_SECRET=None,
                                          WXLOGIN_SECRET_FILE=str(tmp_path / "nope")),
                 timeout=10)
    assert_config_exit(cp, "secret_file")


def test_default_retries_is_2(serve_factory, mock):
    s = serve_factory(mock=mock)
    with Counter(mock) as c:
        r = login(s.port, new_code("defo", "busy2"))
    assert_ok(r)
    c.assert_delta(3)
    with Counter(mock) as c:
        r = login(s.port, new_code("defo", "busy3"))
    assert_error(r, 503, "upstream_busy", "retry", -1)
    c.assert_delta(3)


def test_listen_port_in_use_fails(serve_factory, mock):
    """A second serve on a port already taken must not start (docs/operations.md: exit 1)."""
    s = serve_factory(mock=mock)
    cp = run_cli(["serve"], env=serve_env(mock, WXLOGIN_LISTEN=f"127.0.0.1:{s.port}"), timeout=3)
    assert cp.returncode == 1, cp
    assert s.alive()
