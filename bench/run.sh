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
set -Eeuo pipefail

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
WRK_PID=
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
    trap - EXIT INT TERM HUP
    if [[ -n $WRK_PID ]]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
        WRK_PID=
    fi
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
trap 'echo "bench: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Ports: both processes listen on 127.0.0.1 port 0, so the kernel picks a free port and no
# other process can take it between "find a free port" and "bind it" (on a busy machine, with
# test suites running and thousands of outgoing loopback connections, that race does happen).
# The mock logs the port it got; the service's port is read from `ss -p` by its pid.

# free_port: a port nothing listens on right now; only used when `ss` is missing. Picked below
# the kernel's ephemeral range, where outgoing connections (thousands per second during a run)
# take their local ports, so only another listener can race for it.
free_port() {
    local lo=32768 p i
    read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    ((lo > 12000)) || lo=32768
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# listen_port PID: the TCP port PID listens on, per `ss -ltnp`; empty if none (yet).
listen_port() {
    ss -Hltnp 2>/dev/null |
        awk -v pat="pid=$1," 'index($0, pat) { n = split($4, a, ":"); print a[n]; exit }'
}

# wait_for NAME PID LOG CMD...: runs CMD (which prints something once ready) every 0.1 s for
# up to 10 s, while PID is alive; prints CMD's output. Fails with NAME's log if it never does.
wait_for() {
    local name=$1 pid=$2 log=$3 i out
    shift 3
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "bench: $name exited during startup; its log:" >&2
            sed 's/^/    /' "$log" >&2 || true
            return 1
        fi
        out=$("$@" 2>/dev/null || true)
        if [[ -n $out ]]; then
            echo "$out"
            return 0
        fi
        sleep 0.1
    done
    echo "bench: $name not ready after 10 s ($*); its log:" >&2
    sed 's/^/    /' "$log" >&2 || true
    return 1
}

mock_port_from_log() {
    grep -o 'port=[0-9]*' "$TMP/mock.log" | head -n 1 | cut -d= -f2
}

http_ok() {
    curl -fsS -o /dev/null --max-time 1 "$1" && echo ok
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
    local args=(mock --listen 127.0.0.1:0)
    [[ -n ${BENCH_MOCK_THREADS:-} ]] && args+=(--threads "$BENCH_MOCK_THREADS")
    (cd "$TMP" && unset_wxlogin_env && exec "$BIN" "${args[@]}") >"$TMP/mock.log" 2>&1 &
    MOCK_PID=$!
    MOCK_PORT=$(wait_for mock "$MOCK_PID" "$TMP/mock.log" mock_port_from_log)
    wait_for mock "$MOCK_PID" "$TMP/mock.log" \
        http_ok "http://127.0.0.1:$MOCK_PORT/mock/stats" >/dev/null
}

start_serve() {
    local listen=127.0.0.1:0
    command -v ss >/dev/null || listen=127.0.0.1:$(free_port)
    (
        # Run in the temp dir, and keep the SQLite store (and the master key the service creates
        # beside it) there: nothing lands in the caller's directory, each run starts empty.
        cd "$TMP"
        unset_wxlogin_env
        export WXLOGIN_STORE="sqlite:$TMP/wxlogin.db"
        export WXLOGIN_LISTEN="$listen"
        export WXLOGIN_APPID="$APPID" WXLOGIN_SECRET="$SECRET"
        export WXLOGIN_WECHAT_BASE="http://127.0.0.1:$MOCK_PORT"
        export WXLOGIN_LOG_LEVEL=warn WXLOGIN_SHUTDOWN_TIMEOUT_MS=2000
        [[ -n ${BENCH_SERVER_THREADS:-} ]] && export WXLOGIN_THREADS="$BENCH_SERVER_THREADS"
        exec "$BIN" serve
    ) >"$TMP/serve.log" 2>&1 &
    SERVE_PID=$!
    if [[ ${listen##*:} == 0 ]]; then
        SERVE_PORT=$(wait_for serve "$SERVE_PID" "$TMP/serve.log" listen_port "$SERVE_PID")
    else
        SERVE_PORT=${listen##*:}
    fi
    wait_for serve "$SERVE_PID" "$TMP/serve.log" \
        http_ok "http://127.0.0.1:$SERVE_PORT/healthz" >/dev/null
    # Whoever answered must be our process, not something that took the port first.
    kill -0 "$SERVE_PID" 2>/dev/null || die "serve exited during startup (log: $TMP/serve.log)"
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

# wrk_to OUT ARGS...: runs wrk with its output in OUT. In the background and waited for, so a
# SIGINT/SIGTERM to this script runs the cleanup at once instead of after wrk's run ends.
wrk_to() {
    local out=$1 rc=0
    shift
    wrk "$@" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=
    return "$rc"
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
    if ! wrk_to "$out" "${args[@]}" "$url"; then
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
    wrk_to "$TMP/wrk-warmup.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" -s "$BENCH_DIR/openid.lua" \
        "http://127.0.0.1:$SERVE_PORT/openid" ||
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
