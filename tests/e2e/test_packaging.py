"""Install and package (issue 10): `make install` into a DESTDIR, the systemd unit as
`systemd-analyze` sees it, the man page, `make deb` and the packaged binary run from an
extracted tree, and the default database in systemd's $STATE_DIRECTORY.

Most check files and the packaging, not the binary's behaviour under a sanitizer: they run in
the normal build's pass only (@normal_build_only). The two that run the service with the
shipped configuration run in every pass. The .deb is built once per run (`make deb`: Debian's
flags, its own build directory); its time is printed.
"""
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BIN, DEFAULT_APPID, DEFAULT_SECRET, REPO, MockProc, ServeProc, base_env,
                      new_code, normal_build_only, post_json, request, run_cli)
from harness.procs import start
from harness.wxlogin import _http_ready

# The build directory of the binary under test, as the Makefile's B (install copies from it).
B = os.path.relpath(Path(BIN).resolve().parent, REPO)


def run(argv, timeout=120, **kw):
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert cp.returncode == 0, f"{argv} exited {cp.returncode}:\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}"
    return cp


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def version():
    out = run([BIN, "--version"]).stdout
    m = re.match(r"wxlogin (\d+\.\d+\.\d+)", out)
    assert m, out
    return m.group(1)


def make_install(destdir, *args):
    return run(["make", "-s", "-C", str(REPO), f"B={B}", "install", f"DESTDIR={destdir}", *args])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """`make install DESTDIR=... PREFIX=/usr`: the tree."""
    d = tmp_path_factory.mktemp("destdir")
    make_install(d, "PREFIX=/usr")
    return d


# ---------------------------------------------------------------- make install

INSTALLED = {  # path in the tree: mode
    "usr/bin/wxlogin": 0o755,
    "usr/bin/wxlogin-mock": 0o755,
    "etc/wxlogin/wxlogin.conf": 0o640,
    "usr/lib/systemd/system/wxlogin.service": 0o644,
    "usr/lib/sysusers.d/wxlogin.conf": 0o644,
    "usr/share/man/man8/wxlogin.8": 0o644,
    "usr/share/doc/wxlogin/README.md": 0o644,
    "usr/share/doc/wxlogin/LICENSE": 0o644,
    "usr/share/doc/wxlogin/SECURITY.md": 0o644,
    "usr/share/doc/wxlogin/CHANGELOG.md": 0o644,
    "usr/share/doc/wxlogin/operations.md": 0o644,
    "usr/share/doc/wxlogin/config.md": 0o644,
    "usr/share/doc/wxlogin/api.md": 0o644,
    "usr/share/doc/wxlogin/wxlogin.conf.example": 0o644,
    "usr/share/doc/wxlogin/wxlogin-auth.conf": 0o644,
}


@normal_build_only
def test_install_tree_files_and_modes(tree):
    for rel, m in INSTALLED.items():
        p = tree / rel
        assert p.is_file(), f"{rel} not installed"
        assert mode(p) == m, f"{rel}: mode {oct(mode(p))}, expected {oct(m)}"
    assert (tree / "usr/bin/wxlogin").read_bytes() == Path(BIN).read_bytes()
    assert (tree / "etc/wxlogin/wxlogin.conf").read_bytes() == \
        (REPO / "contrib/systemd/wxlogin.conf").read_bytes()
    assert (tree / "usr/share/doc/wxlogin/LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()
    out = run([str(tree / "usr/bin/wxlogin"), "--version"]).stdout
    assert out.startswith(f"wxlogin {version()}"), out
    run([str(tree / "usr/bin/wxlogin-mock"), "--help"])


@normal_build_only
def test_install_unit_names_this_install(tree, tmp_path):
    unit = (tree / "usr/lib/systemd/system/wxlogin.service").read_text()
    assert "ExecStart=/usr/bin/wxlogin serve --config /etc/wxlogin/wxlogin.conf\n" in unit
    # another prefix: the unit follows it; the configuration stays in /etc/wxlogin
    make_install(tmp_path, "PREFIX=/usr/local")
    unit = (tmp_path / "usr/local/lib/systemd/system/wxlogin.service").read_text()
    assert "ExecStart=/usr/local/bin/wxlogin serve --config /etc/wxlogin/wxlogin.conf\n" in unit
    assert (tmp_path / "usr/local/bin/wxlogin").is_file()
    assert (tmp_path / "usr/local/share/man/man8/wxlogin.8").is_file()
    assert (tmp_path / "etc/wxlogin/wxlogin.conf").is_file()


@normal_build_only
def test_install_keeps_an_edited_config_and_uninstall_leaves_it(tmp_path):
    make_install(tmp_path, "PREFIX=/usr")
    conf = tmp_path / "etc/wxlogin/wxlogin.conf"
    conf.write_text("appid = wx0000000000000001\n")
    make_install(tmp_path, "PREFIX=/usr")
    assert conf.read_text() == "appid = wx0000000000000001\n"
    run(["make", "-s", "-C", str(REPO), f"B={B}", "uninstall", f"DESTDIR={tmp_path}",
         "PREFIX=/usr"])
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["etc/wxlogin/wxlogin.conf"], left


# ---------------------------------------------------------------- the unit

def unit_settings(text):
    """[Service] and [Unit] settings as (key, value) pairs, in order."""
    return [tuple(l.split("=", 1)) for l in text.splitlines()
            if l and not l.startswith(("#", "[")) and "=" in l]


@normal_build_only
def test_unit_has_the_contract_and_the_hardening():
    s = unit_settings((REPO / "contrib/systemd/wxlogin.service").read_text())
    d = {}
    for k, v in s:
        d.setdefault(k, []).append(v)
    expected = {
        "Type": "notify", "DynamicUser": "yes", "StateDirectory": "wxlogin",
        "ExecReload": "/bin/kill -HUP $MAINPID", "LimitNOFILE": "65536",
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ProtectHome": "yes", "MemoryDenyWriteExecute": "yes", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "ConfigurationDirectory": "wxlogin",
        "EnvironmentFile": "-/etc/wxlogin/wxlogin.env",
    }
    for k, v in expected.items():
        assert d.get(k) == [v], f"{k}={d.get(k)}, expected {v}"
    assert d["SystemCallFilter"][0] == "@system-service"
    assert d["ExecStart"] == ["/usr/bin/wxlogin serve --config /etc/wxlogin/wxlogin.conf"]


@normal_build_only
def test_systemd_analyze_verify_and_security(tree, tmp_path):
    """The installed unit, with ExecStart at the tree's binary (verify needs it to exist) and
    the tree's man page for Documentation=man:wxlogin(8): no output at all, exit 0."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: scripts/install-deps.sh installs systemd")
    text = (tree / "usr/lib/systemd/system/wxlogin.service").read_text()
    unit = tmp_path / "wxlogin.service"
    unit.write_text(text.replace("ExecStart=/usr/bin/wxlogin ",
                                 f"ExecStart={tree}/usr/bin/wxlogin "))
    env = base_env(MANPATH=str(tree / "usr/share/man"), SYSTEMD_LOG_COLOR="0")
    t0 = time.monotonic()
    cp = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                        text=True, timeout=60, env=env, cwd=tmp_path)
    took = time.monotonic() - t0
    out = (cp.stdout + cp.stderr).strip()
    print(f"systemd-analyze verify: {took:.2f} s, exit {cp.returncode}, output: {out!r}")
    assert cp.returncode == 0 and out == "", out

    # A broken copy is caught (the check can fail): an unknown key and a missing binary.
    bad = tmp_path / "bad" / "wxlogin.service"
    bad.parent.mkdir()
    bad.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSytem=yes"))
    cp = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True,
                        timeout=60, env=env, cwd=tmp_path)
    assert "ProtectSytem" in cp.stdout + cp.stderr

    cp = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    m = re.search(r"Overall exposure level for wxlogin.service: (\d+\.\d+)", cp.stdout)
    assert m, cp.stdout[-2000:] + cp.stderr
    print(f"systemd-analyze security: exposure {m.group(1)}")
    assert float(m.group(1)) <= 2.0, cp.stdout


# ---------------------------------------------------------------- the man page

def help_options():
    opts = set()
    for args in (["--help"], ["serve", "--help"]):
        out = run([BIN] + args).stdout
        opts |= set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", out))
    return opts


@normal_build_only
def test_man_page_renders_and_describes_every_option():
    page = REPO / "docs/wxlogin.8"
    env = base_env(MANWIDTH="100", LANG="C", LC_ALL="C", MAN_KEEP_FORMATTING="")
    cp = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                        timeout=30, env=env)
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr.strip() == "", cp.stderr
    text = re.sub(r".\x08", "", cp.stdout)  # no overstrike if a pager would add it
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "ENVIRONMENT", "FILES", "SIGNALS",
                    "EXIT STATUS"):
        assert re.search(rf"^{section}$", text, re.M), f"no {section} section"
    opts = help_options()
    assert {"--config", "--help", "--version"} <= opts, opts
    missing = sorted(o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text))
    assert not missing, f"options in --help the man page does not describe: {missing}"
    assert f"wxlogin {version()}" in text


# ------------------------------------------------- the default database under the unit

def test_unit_config_puts_the_database_in_state_directory(procs, tmp_path):
    """The shipped /etc/wxlogin/wxlogin.conf with what systemd gives the unit: the database and
    its key land in $STATE_DIRECTORY, nothing in the working directory."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    mock = procs.mock()
    s = procs.serve(mock=mock, args=["--config", str(REPO / "contrib/systemd/wxlogin.conf")],
                    env={"STATE_DIRECTORY": str(state)})
    r = post_json(s.port, "/v1/login", {"code": new_code("pkg")})
    assert r.status == 200, r
    assert (state / "wxlogin.db").is_file()
    assert mode(state / "wxlogin.db") == 0o600
    assert mode(state / "wxlogin.db.key") == 0o600
    assert not (s.cwd / "wxlogin.db").exists() and not (s.cwd / "wxlogin.db.key").exists()
    token = r.json()["token"]
    r = request(s.port, "GET", "/v1/session", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, r


def test_shipped_config_holds_no_secret_and_asks_for_an_appid(tmp_path):
    text = (REPO / "contrib/systemd/wxlogin.conf").read_text()
    live = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith(";")]
    for l in live:
        assert not re.match(r"(secret|admin_token|master_key)\s*=", l), l
    cp = run_cli(["serve", "--config", str(REPO / "contrib/systemd/wxlogin.conf")],
                 env=base_env(STATE_DIRECTORY=str(tmp_path)), cwd=tmp_path)
    assert cp.returncode == 2, cp.stderr
    assert "appid: not set" in cp.stderr


# ---------------------------------------------------------------- make deb

@pytest.fixture(scope="module")
def debs():
    if shutil.which("dpkg-buildpackage") is None or shutil.which("dh") is None:
        pytest.fail("dpkg-buildpackage/debhelper missing: scripts/install-deps.sh installs them")
    t0 = time.monotonic()
    cp = subprocess.run(["nice", "make", "-C", str(REPO), "deb"], capture_output=True, text=True,
                        timeout=600)
    took = time.monotonic() - t0
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr[-4000:]
    print(f"\nmake deb: {took:.1f} s")
    v = version()
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    d = REPO / "build" / "deb"
    out = {"wxlogin": d / f"wxlogin_{v}_{arch}.deb",
           "wxlogin-mock": d / f"wxlogin-mock_{v}_{arch}.deb"}
    for p in out.values():
        assert p.is_file(), sorted(os.listdir(d))
    return out


def deb_listing(deb):
    """{path: (mode string, owner)} from dpkg-deb -c."""
    files = {}
    for line in run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines():
        parts = line.split(None, 5)
        files[parts[5].removeprefix("./").split(" -> ")[0]] = (parts[0], parts[1])
    return files


@normal_build_only
def test_deb_control_depends_and_conffile(debs, tmp_path):
    deb = debs["wxlogin"]
    info = run(["dpkg-deb", "-I", str(deb)]).stdout
    f = lambda field: run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()
    assert f("Package") == "wxlogin"
    assert f("Version") == version()
    depends = f("Depends")
    # ${shlibs:Depends}: every library the binary links, as Debian names it
    for lib in ("libc6", "libmicrohttpd12", "libcurl4", "libssl3", "libjansson4",
                "libsqlite3-0", "libhiredis", "libinih1"):
        assert re.search(rf"(^|, ){lib}[\w.]*( \(|,|$)", depends), f"{lib} not in {depends}"
    assert "systemd-sysusers" in depends  # dh_installsysusers: the wxlogin user
    assert "conffiles" in info
    ctl = tmp_path / "control"
    run(["dpkg-deb", "-e", str(deb), str(ctl)])
    assert (ctl / "conffiles").read_text().split() == ["/etc/wxlogin/wxlogin.conf"]
    postinst = (ctl / "postinst").read_text()
    assert "systemd-sysusers" in postinst and "wxlogin.conf" in postinst
    assert "chown root:wxlogin /etc/wxlogin/wxlogin.conf" in postinst
    # installed, not enabled or started before it is configured (dh_installsystemd
    # --no-enable --no-start: the unit is enabled again only where it was enabled before)
    assert "deb-systemd-invoke" not in postinst
    assert "deb-systemd-helper debian-installed 'wxlogin.service'" in postinst


@normal_build_only
def test_deb_contents(debs):
    files = deb_listing(debs["wxlogin"])
    expected = {
        "usr/bin/wxlogin": "-rwxr-xr-x",
        "etc/wxlogin/wxlogin.conf": "-rw-r-----",
        "lib/systemd/system/wxlogin.service": "-rw-r--r--",
        "usr/lib/sysusers.d/wxlogin.conf": "-rw-r--r--",
        "usr/share/man/man8/wxlogin.8.gz": "-rw-r--r--",
        "usr/share/doc/wxlogin/copyright": "-rw-r--r--",
        "usr/share/doc/wxlogin/operations.md": "-rw-r--r--",
        "usr/share/doc/wxlogin/api.md": "-rw-r--r--",
        "usr/share/doc/wxlogin/wxlogin.conf.example": "-rw-r--r--",
        "usr/share/doc/wxlogin/wxlogin-auth.conf": "-rw-r--r--",
    }
    for path, m in expected.items():
        assert path in files, f"{path} not in the package: {sorted(files)}"
        assert files[path][0] == m, f"{path}: {files[path]}"
    assert not any("wxlogin-mock" in p for p in files), "the mock is in its own package"
    mock_files = deb_listing(debs["wxlogin-mock"])
    assert mock_files["usr/bin/wxlogin-mock"][0] == "-rwxr-xr-x"


@normal_build_only
def test_deb_binary_runs_from_an_extracted_tree(debs, procs, tmp_path):
    root = tmp_path / "root"
    for deb in debs.values():
        run(["dpkg-deb", "-x", str(deb), str(root)])
    wx, wxmock = root / "usr/bin/wxlogin", root / "usr/bin/wxlogin-mock"
    out = run([str(wx), "--version"]).stdout
    assert out.startswith(f"wxlogin {version()}"), out

    # built with Debian's hardening flags (dpkg-buildflags, hardening=+all)
    dyn = run(["readelf", "-d", str(wx)]).stdout
    assert "BIND_NOW" in dyn or "(NOW)" in dyn, dyn
    syms = run(["readelf", "--dyn-syms", "-W", str(wx)]).stdout
    assert "__stack_chk_fail" in syms
    assert re.search(r"__\w+_chk\b", syms.replace("__stack_chk_fail", "")), "no _FORTIFY_SOURCE"

    # the packaged service, with its packaged configuration, against the packaged mock
    m = procs.add(start(MockProc, "pkg-mock",
                        lambda p: ([str(wxmock), "--listen", f"127.0.0.1:{p}"], base_env()),
                        tmp_path, _http_ready("/mock/stats")))
    state = tmp_path / "state"
    state.mkdir()
    env = lambda p: ([str(wx), "serve", "--config", str(root / "etc/wxlogin/wxlogin.conf")],
                     base_env(WXLOGIN_LISTEN=f"127.0.0.1:{p}", WXLOGIN_APPID=DEFAULT_APPID,
                              WXLOGIN_SECRET=DEFAULT_SECRET, WXLOGIN_WECHAT_BASE=m.base,
                              STATE_DIRECTORY=str(state)))
    s = procs.add(start(ServeProc, "pkg-serve", env, tmp_path, _http_ready("/healthz")))
    r = request(s.port, "GET", "/healthz")
    assert r.status == 200, r
    r = post_json(s.port, "/openid", {"code": new_code("pkguser")})
    assert r.status == 200, r
    assert r.json()["openid"]
    assert (state / "wxlogin.db").is_file()
