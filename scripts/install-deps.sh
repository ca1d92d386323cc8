#!/usr/bin/env bash
# Installs the Debian packages wxlogin needs to build, test and benchmark.
# Idempotent: asks apt only for what is missing, so `make run` and `make test`
# can call it every time at almost no cost.
set -euo pipefail

PKGS=(
    build-essential pkg-config
    libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libjansson-dev
    libsqlite3-dev libhiredis-dev libinih-dev libcmocka-dev libsystemd-dev
    clang-format clang libclang-rt-14-dev
    python3 python3-pytest python3-jsonschema python3-yaml redis-server
    curl wrk nginx-light iproute2 openssl golang-go strace
    prometheus # promtool: tests check the /metrics scrape with it
    debhelper dpkg-dev systemd man-db
)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# node and npm (the Mini Program client's tests and dev tools, and the OpenAPI 3.1 validator of
# tests/e2e/test_openapi.py, which Debian packages none of): Debian's nodejs and npm, unless a
# node with its npm is already installed (another node package provides npm itself and
# conflicts with Debian's, so the commands are asked for, not the package names).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    missing+=(nodejs npm)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
