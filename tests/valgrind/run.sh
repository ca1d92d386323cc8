#!/usr/bin/env bash
# valgrind memcheck over a representative subset of the e2e suite: every wxlogin process the
# tests start runs under memcheck (through a wrapper given as WXLOGIN_BIN), and the run fails on
# any memcheck error or definite leak. Slow (memcheck is ~30x), so not part of `make test`; and
# the tests' own verdicts are reported but do not decide: those that bound a latency cannot hold
# at memcheck's speed.
#   usage: tests/valgrind/run.sh [pytest args...]   (default: the subset below)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
cat >"$OUT/wxlogin" <<WRAP
#!/bin/sh
exec valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \\
    --show-leak-kinds=definite --log-file="$OUT/vg.%p.log" "$ROOT/build/wxlogin" "\$@"
WRAP
chmod +x "$OUT/wxlogin"
TESTS=("$@")
[ ${#TESTS[@]} -eq 0 ] && TESTS=(tests/e2e/test_openid.py tests/e2e/test_sessions.py
    tests/e2e/test_userdata.py tests/e2e/test_code_reuse.py tests/e2e/test_front_door.py
    -k "not slowloris and not slow_bodies and not open_file_limit")
cd "$ROOT"
rc=0
WXLOGIN_BIN=$OUT/wxlogin WXLOGIN_MOCK_BIN=$ROOT/build/wxlogin-mock WXLOGIN_VALGRIND=1 \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider "${TESTS[@]}" || rc=$?
logs=("$OUT"/vg.*.log)
bad=0
for f in "${logs[@]}"; do
    [ -s "$f" ] || continue
    echo "== $f"; cat "$f"; bad=$((bad + 1))
done
echo "valgrind: ${#logs[@]} wxlogin processes, $bad with memcheck errors or definite leaks"
[ "$rc" -eq 0 ] || echo "valgrind: pytest exited $rc (latency bounds do not hold under memcheck)"
[ "$bad" -eq 0 ]
