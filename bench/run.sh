#!/usr/bin/env bash
# bench/run.sh: load-test wxlogin against the local mock WeChat with wrk. See bench/README.md.
#
#   bash bench/run.sh            (or `make bench`, which builds build/wxlogin first)
#
# Environment:
#   BENCH_SECONDS=10          duration of each measured wrk run, in seconds
#   BENCH_WARMUP_SECONDS=2    duration of the warm-up run (0 skips it)
#   BENCH_WRK_THREADS=2       wrk -t
#   BENCH_WRK_TIMEOUT=2s      wrk --timeout (a slower response counts as a timeout error)
#   BENCH_SERVER_THREADS=     WXLOGIN_THREADS for the service (unset: the service's default)
#   BENCH_MOCK_THREADS=       --threads for the mock (unset: the mock's default)
#   BENCH_KEEP_LOGS=1         keep the temp dir with the logs and raw wrk output
#   WXLOGIN_BIN=path          the binary (default <repo>/build/wxlogin); not passed to the service
#
# Everything listens on 127.0.0.1 only. Both processes are stopped on exit, whatever happens.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$ROOT/bench
BIN=${WXLOGIN_BIN:-$ROOT/build/wxlogin}
DURATION=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP_SECONDS:-2}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_TIMEOUT=${BENCH_WRK_TIMEOUT:-2s}
APPID=wx1234567890abcdef # the mock's default app
SECRET=0123456789abcdef0123456789abcdef

TMP=
MOCK_PID=
SERVE_PID=
MOCK_PORT=
SERVE_PORT=
RUN_ID=
RUN_SEQ=0
ROWS=()
NOTES=()

die() {
    echo "bench: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- processes and cleanup

# stop_proc PID NAME: SIGTERM, wait up to 5 s, then SIGKILL. Only ever our own child's PID.
stop_proc() {
    local pid=$1 name=$2 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || true
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench: $name (pid $pid) did not stop after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # The service first, so it does not log upstream errors for a mock that went away.
    stop_proc "$SERVE_PID" serve
    SERVE_PID=
    stop_proc "$MOCK_PID" mock
    MOCK_PID=
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $rc -ne 0 || ${BENCH_KEEP_LOGS:-0} == 1 ]]; then
            echo "bench: logs and raw wrk output kept in $TMP" >&2
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# wait_http URL PID NAME LOG: polls URL until it answers 200, for up to 10 s.
wait_http() {
    local url=$1 pid=$2 name=$3 log=$4 i
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: $name exited during startup; its log:" >&2
            sed 's/^/    /' "$log" >&2 || true
            return 1
        fi
        if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench: $name did not answer $url within 10 s; its log:" >&2
    sed 's/^/    /' "$log" >&2 || true
    return 1
}

# No WXLOGIN_* from the caller's environment may reach the service: only what we set below.
unset_wxlogin_env() {
    local v
    for v in $(compgen -e); do
        [[ $v == WXLOGIN_* ]] && unset "$v"
    done
    return 0
}

start_mock() {
    MOCK_PORT=$(free_port)
    local args=(mock --listen "127.0.0.1:$MOCK_PORT")
    [[ -n ${BENCH_MOCK_THREADS:-} ]] && args+=(--threads "$BENCH_MOCK_THREADS")
    (unset_wxlogin_env && exec "$BIN" "${args[@]}") >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    wait_http "http://127.0.0.1:$MOCK_PORT/mock/stats" "$MOCK_PID" mock "$TMP/mock.log"
}

start_serve() {
    SERVE_PORT=$(free_port)
    (
        unset_wxlogin_env
        export WXLOGIN_LISTEN="127.0.0.1:$SERVE_PORT"
        export WXLOGIN_APPID="$APPID" WXLOGIN_SECRET="$SECRET"
        export WXLOGIN_WECHAT_BASE="http://127.0.0.1:$MOCK_PORT"
        export WXLOGIN_LOG_LEVEL=warn WXLOGIN_SHUTDOWN_TIMEOUT_MS=2000
        [[ -n ${BENCH_SERVER_THREADS:-} ]] && export WXLOGIN_THREADS="$BENCH_SERVER_THREADS"
        exec "$BIN" serve
    ) >"$TMP/serve.log" 2>&1 &
    SERVE_PID=$!
    wait_http "http://127.0.0.1:$SERVE_PORT/healthz" "$SERVE_PID" serve "$TMP/serve.log"
}

# ---------------------------------------------------------------- wrk runs

raise_fd_limit() {
    local hard want
    hard=$(ulimit -Hn)
    for want in "$hard" 1048576 65536 16384 4096; do
        [[ $want == unlimited ]] && continue
        ulimit -Sn "$want" 2>/dev/null && break
    done
    local soft
    soft=$(ulimit -Sn)
    if [[ $soft != unlimited && $soft -lt 2048 ]]; then
        NOTES+=("open-file limit is only $soft: the 512-connection run may fail to connect")
    fi
}

# next_run_id: a fresh alphanumeric run id per wrk invocation, so no two runs (nor the warm-up)
# ever send the same code to the mock (codes are single use there).
next_run_id() {
    RUN_SEQ=$((RUN_SEQ + 1))
    BENCH_RUN_ID="${RUN_ID}r${RUN_SEQ}"
    export BENCH_RUN_ID
}

# field LINE KEY: the value of KEY=value in a RESULT line ("" if absent).
field() {
    local kv
    for kv in $1; do
        [[ $kv == "$2="* ]] && {
            echo "${kv#*=}"
            return
        }
    done
    echo ""
}

# parse_plain FILE: builds a RESULT line from wrk's own report, for scripts without a done()
# that prints one (e.g. a plain GET). Its "non-2xx" is wrk's "Non-2xx or 3xx" count.
parse_plain() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return (v + 0) / 1000
            if (v ~ /ms$/) return v + 0
            if (v ~ /m$/)  return (v + 0) * 60000
            if (v ~ /s$/)  return (v + 0) * 1000
            return v + 0
        }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { non = $NF }
        /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
        END { printf "RESULT rps=%s p50_ms=%.2f p99_ms=%.2f non2xx=%d errors=%d\n",
                     rps, p50, p99, non, err }
    ' "$1"
}

add_row() {
    ROWS+=("$(printf '%-17s %-7s %-9s %-8s %-8s %-8s %s' "$@")")
}

# run_wrk NAME CONNS URL [SCRIPT]: one measured wrk run; appends a row to the table.
# SCRIPT is a path relative to the repo root (or absolute); empty means plain GET.
run_wrk() {
    local name=$1 conns=$2 url=$3 script=${4:-}
    local out="$TMP/wrk-$RUN_SEQ-$conns.txt"
    local args=(-t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout "$WRK_TIMEOUT" --latency)
    if [[ -n $script ]]; then
        [[ $script == /* ]] || script=$ROOT/$script
        args+=(-s "$script")
    fi
    next_run_id
    echo "bench: $name, $conns connections, ${DURATION}s ..." >&2
    if ! wrk "${args[@]}" "$url" >"$out" 2>&1; then
        echo "bench: wrk failed for $name at $conns connections:" >&2
        sed 's/^/    /' "$out" >&2
        add_row "$name" "$conns" FAILED - - - -
        return 0
    fi
    local res
    res=$(grep '^RESULT ' "$out" | tail -n 1 || true)
    [[ -n $res ]] || res=$(parse_plain "$out")
    add_row "$name" "$conns" \
        "$(printf '%.0f' "$(field "$res" rps)")" \
        "$(field "$res" p50_ms)" "$(field "$res" p99_ms)" \
        "$(field "$res" non2xx)" "$(field "$res" errors)"
    local max non errs
    max=$(field "$res" max_ms)
    non=$(field "$res" non2xx)
    errs=$(field "$res" errors)
    [[ -n $max ]] && NOTES+=("$name @$conns: p90 $(field "$res" p90_ms) ms, max $max ms, $(field "$res" requests) requests")
    if [[ ${non:-0} != 0 ]]; then
        NOTES+=("$name @$conns: $non non-2xx responses")
        while IFS= read -r l; do NOTES+=("    $l"); done < <(grep '^NON2XX ' "$out" || true)
    fi
    if [[ ${errs:-0} != 0 ]]; then
        NOTES+=("$name @$conns: socket errors: $(grep -o 'connect=[0-9]* read=[0-9]* write=[0-9]* timeout=[0-9]*' <<<"$res" || grep 'Socket errors' "$out")")
    fi
    # Cheap liveness check: a run that killed the service should not be blamed on the next one.
    kill -0 "$SERVE_PID" 2>/dev/null || die "the service died during $name @$conns (log: $TMP/serve.log)"
    kill -0 "$MOCK_PID" 2>/dev/null || die "the mock died during $name @$conns (log: $TMP/mock.log)"
}

warm_up() {
    [[ $WARMUP == 0 ]] && return 0
    next_run_id
    echo "bench: warming up (${WARMUP}s) ..." >&2
    wrk -t"$WRK_THREADS" -c16 -d"${WARMUP}s" -s "$BENCH_DIR/openid.lua" \
        "http://127.0.0.1:$SERVE_PORT/openid" >"$TMP/wrk-warmup.txt" 2>&1 ||
        die "warm-up failed: $(cat "$TMP/wrk-warmup.txt")"
}

# ---------------------------------------------------------------- scenarios
# One function per scenario; add new ones here and call them from main.

scenario_openid() {
    local url="http://127.0.0.1:$SERVE_PORT/openid"
    run_wrk "POST /openid" 64 "$url" bench/openid.lua
    run_wrk "POST /openid" 512 "$url" bench/openid.lua
}

# ---------------------------------------------------------------- report

mock_stats() {
    curl -fsS --max-time 2 "http://127.0.0.1:$MOCK_PORT/mock/stats" 2>/dev/null || echo "(unavailable)"
}

report() {
    echo
    printf '%-17s %-7s %-9s %-8s %-8s %-8s %s\n' scenario conns "req/s" "p50 ms" "p99 ms" non-2xx errors
    local r
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo
    echo "mock /mock/stats: $(mock_stats)"
    local n
    n=$(wc -l <"$TMP/serve.log")
    if [[ $n -gt 0 ]]; then
        echo "serve log: $n line(s) at warn or above; first ones:"
        head -n 5 "$TMP/serve.log" | cut -c1-300 | sed 's/^/    /'
    else
        echo "serve log: empty (no warnings)"
    fi
    for r in "${NOTES[@]}"; do echo "note: $r"; done
}

main() {
    [[ -x $BIN ]] || die "$BIN not found; run 'make build' first (or 'make bench')"
    command -v wrk >/dev/null || die "wrk is not installed (Debian/Ubuntu: apt-get install wrk)"
    command -v curl >/dev/null || die "curl is not installed"
    [[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive whole number"
    [[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP_SECONDS must be a whole number"

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-bench.XXXXXX")
    RUN_ID=$(printf '%x%04x%04x' "$(date +%s)" "$$" "$RANDOM")
    raise_fd_limit

    start_mock
    start_serve
    echo "bench: wxlogin on 127.0.0.1:$SERVE_PORT, mock on 127.0.0.1:$MOCK_PORT," \
        "$(nproc 2>/dev/null || echo '?') cores, wrk -t$WRK_THREADS, ${DURATION}s per run," \
        "fd limit $(ulimit -Sn)" >&2

    warm_up
    scenario_openid

    report
}

main "$@"
