#!/usr/bin/env bash
# Installs the Debian packages wxlogin needs to build, test and benchmark.
# Idempotent: asks apt only for what is missing, so `make run` and `make test`
# can call it every time at almost no cost.
set -euo pipefail

PKGS=(
    build-essential pkg-config
    libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libjansson-dev
    libsqlite3-dev libhiredis-dev libinih-dev libcmocka-dev
    clang-format clang libclang-rt-14-dev
    python3 python3-pytest redis-server
    curl wrk nginx-light iproute2 openssl golang-go strace
    debhelper dpkg-dev systemd man-db
)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
