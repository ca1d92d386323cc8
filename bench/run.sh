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
#   BENCH_SESSIONS=100000     sessions seeded into the store for GET /v1/session
#   BENCH_USERS=5000          distinct users those sessions belong to
#   BENCH_NGINX=/usr/sbin/nginx  the nginx for the baseline (Debian's nginx-light)
#   BENCH_KEEP_LOGS=1         keep the temp dir with the logs and raw wrk output
#   WXLOGIN_BIN=path          the binary (default <repo>/build/wxlogin); not passed to the service
#
# Everything listens on 127.0.0.1 only. Every process it starts (mock, service, nginx) is stopped
# on exit, whatever happens.
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
SESSIONS=${BENCH_SESSIONS:-100000}
USERS=${BENCH_USERS:-5000}
NGINX=${BENCH_NGINX:-/usr/sbin/nginx}
PY=/usr/bin/python3

TMP=
MOCK_PID=
SERVE_PID=
WRK_PID=
NGINX_PID=
NGINX_WORKERS=()
MOCK_PORT=
SERVE_PORT=
NGINX_PORT=
TOKENS=
RUN_ID=
RUN_SEQ=0
ROWS=()
NOTES=()
declare -A RPS=() # "NAME@CONNS" -> req/s, for the ratio lines

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
    stop_nginx
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

# ---------------------------------------------------------------- sessions for GET /v1/session

# seed_store: the service creates its schema when it starts, so start it once on the empty store
# and stop it; then insert BENCH_SESSIONS sessions straight into SQLite (seed_sessions.py, one
# transaction) while nothing has the file open. The tokens go to $TOKENS for session.lua.
seed_store() {
    echo "bench: creating the schema, then seeding $SESSIONS sessions ..." >&2
    start_serve
    stop_proc "$SERVE_PID" serve
    SERVE_PID=
    mv -- "$TMP/serve.log" "$TMP/serve-schema.log"
    if [[ -s $TMP/serve-schema.log ]]; then
        NOTES+=("the schema-creating start of the service logged warnings; first ones:")
        while IFS= read -r l; do NOTES+=("    $l"); done < <(head -n 3 "$TMP/serve-schema.log" | cut -c1-300)
    fi
    TOKENS=$TMP/tokens.txt
    "$PY" "$BENCH_DIR/seed_sessions.py" "$TMP/wxlogin.db" "$TOKENS" \
        --sessions "$SESSIONS" --users "$USERS" --appid "$APPID" 2>"$TMP/seed.log" || {
        sed 's/^/    /' "$TMP/seed.log" >&2
        die "seeding the store failed"
    }
    sed 's/^/bench: /' "$TMP/seed.log" >&2
    # session.lua reads these; it splits the tokens among wrk's threads.
    export BENCH_TOKENS=$TOKENS BENCH_WRK_THREADS=$WRK_THREADS
}

# get_session TOKEN HEADERS_FILE: GET /v1/session with TOKEN; prints the status code.
get_session() {
    curl -sS -o /dev/null -D "$2" -w '%{http_code}' --max-time 5 \
        -H "Authorization: Bearer $1" "http://127.0.0.1:$SERVE_PORT/v1/session" || true
}

# check_sessions: a token from a real login, and a seeded one, must verify (200, with the
# identity headers); an unknown token must not (401). Catches a seeding format that does not
# match the service's (then every measured request would be a cheap 401).
check_sessions() {
    local body token code seeded
    body=$(curl -sS --max-time 5 -H 'Content-Type: application/json' \
        -d "{\"code\":\"ubench-${RUN_ID}check\"}" "http://127.0.0.1:$SERVE_PORT/v1/login") ||
        die "sanity check: POST /v1/login failed"
    token=$(grep -o '"token": *"wxl_[A-Za-z0-9_-]*"' <<<"$body" | grep -o 'wxl_[A-Za-z0-9_-]*' || true)
    [[ -n $token ]] || die "sanity check: POST /v1/login answered without a token: $body"
    code=$(get_session "$token" "$TMP/check-login.hdr")
    [[ $code == 200 ]] || die "sanity check: GET /v1/session with a fresh login's token answered $code"
    seeded=$(head -n 1 "$TOKENS")
    code=$(get_session "$seeded" "$TMP/check-seeded.hdr")
    [[ $code == 200 ]] || die "sanity check: GET /v1/session with a seeded token answered $code" \
        "(the seeding does not match the service's token format or schema)"
    if ! grep -qi '^X-WX-OpenID: oBn' "$TMP/check-seeded.hdr" ||
        ! grep -qi '^X-WX-UnionID: uBn' "$TMP/check-seeded.hdr"; then
        die "sanity check: a seeded token's answer lacks the seeded user's X-WX-OpenID/UnionID"
    fi
    code=$(get_session "wxl_$(printf '%043d' 0)" "$TMP/check-unknown.hdr")
    [[ $code == 401 ]] || die "sanity check: GET /v1/session with an unknown token answered $code, not 401"
    echo "bench: sanity check passed (login's token 200, seeded token 200, unknown token 401)" >&2
}

# ---------------------------------------------------------------- nginx baseline

# The baseline: Debian's nginx answering `return 200` on loopback, from a private config and
# prefix in the temp dir (pid, error log, lock and temp paths all there; nothing else written).
# As many worker processes as the service has worker threads.
nginx_workers() {
    if [[ -n ${BENCH_SERVER_THREADS:-} ]]; then
        echo "$BENCH_SERVER_THREADS"
    else # the service's default: online CPUs, sysconf(_SC_NPROCESSORS_ONLN)
        getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1
    fi
}

write_nginx_conf() {
    local dir=$1 port=$2 workers=$3
    cat >"$dir/nginx.conf" <<EOF
# Written by bench/run.sh for one run; deleted with its temp dir.
daemon off;
master_process on;
worker_processes $workers;
pid $dir/nginx.pid;
lock_file $dir/nginx.lock;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port reuseport;
        location / { return 200 "ok\n"; }
    }
}
EOF
}

# nginx_listening: prints "ok" once our nginx answers on NGINX_PORT and (with ss) every listener
# on that port is ours: with reuseport, another process could share the port.
nginx_listening() {
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null || return 0
    if command -v ss >/dev/null; then
        local lines
        lines=$(ss -Hltnp "sport = :$NGINX_PORT" 2>/dev/null || true)
        [[ -n $lines ]] || return 0
        grep -qv "pid=$NGINX_PID," <<<"$lines" && return 0
    fi
    echo ok
}

start_nginx() {
    local dir=$TMP/nginx workers attempt i
    workers=$(nginx_workers)
    mkdir -p "$dir"
    # nginx cannot listen on port 0: pick a free port, and another one if it got taken meanwhile.
    for ((attempt = 1; attempt <= 5; attempt++)); do
        NGINX_PORT=$(free_port)
        write_nginx_conf "$dir" "$NGINX_PORT" "$workers"
        (cd "$dir" && exec "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf") \
            >"$dir/stderr.log" 2>&1 &
        NGINX_PID=$!
        for ((i = 0; i < 100; i++)); do
            kill -0 "$NGINX_PID" 2>/dev/null || break
            [[ -n $(nginx_listening) ]] && break
            sleep 0.1
        done
        if kill -0 "$NGINX_PID" 2>/dev/null && [[ -n $(nginx_listening) ]]; then
            mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_PID" || true)
            echo "bench: nginx on 127.0.0.1:$NGINX_PORT, $workers worker processes" \
                "(as many as the service's worker threads)" >&2
            return 0
        fi
        stop_nginx
        if grep -qs 'Address already in use' "$dir/error.log" "$dir/stderr.log"; then
            : >"$dir/error.log"
            continue
        fi
        echo "bench: nginx did not start; its logs:" >&2
        cat "$dir/stderr.log" "$dir/error.log" 2>/dev/null | sed 's/^/    /' >&2
        die "nginx failed to start (config: $dir/nginx.conf)"
    done
    die "nginx: no free port after 5 attempts"
}

# stop_nginx: SIGTERM to the master, which stops its workers; then SIGKILL, by pid, to any of
# its workers that outlived it (a master killed with SIGKILL leaves them running).
stop_nginx() {
    stop_proc "$NGINX_PID" nginx
    NGINX_PID=
    local p
    for p in "${NGINX_WORKERS[@]}"; do
        if kill -0 "$p" 2>/dev/null && grep -qa '^nginx: worker' "/proc/$p/cmdline" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    NGINX_WORKERS=()
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
    RPS["$name@$conns"]=$(field "$res" rps)
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
    [[ -z $NGINX_PID ]] || kill -0 "$NGINX_PID" 2>/dev/null ||
        die "nginx died during $name @$conns (log: $TMP/nginx/error.log)"
}

warm_up() {
    [[ $WARMUP == 0 ]] && return 0
    next_run_id
    echo "bench: warming up (${WARMUP}s) ..." >&2
    wrk_to "$TMP/wrk-warmup.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" -s "$BENCH_DIR/openid.lua" \
        "http://127.0.0.1:$SERVE_PORT/openid" ||
        die "warm-up failed: $(cat "$TMP/wrk-warmup.txt")"
    # The session lookups too, so the first measured run does not pay for a cold page cache.
    wrk_to "$TMP/wrk-warmup-session.txt" -t"$WRK_THREADS" -c16 -d"${WARMUP}s" \
        -s "$BENCH_DIR/session.lua" "http://127.0.0.1:$SERVE_PORT/v1/session" ||
        die "session warm-up failed: $(cat "$TMP/wrk-warmup-session.txt")"
}

# ---------------------------------------------------------------- scenarios
# One function per scenario; add new ones here and call them from main.

scenario_openid() {
    local url="http://127.0.0.1:$SERVE_PORT/openid"
    run_wrk "POST /openid" 64 "$url" bench/openid.lua
    run_wrk "POST /openid" 512 "$url" bench/openid.lua
}

# GET /v1/session with valid tokens over the seeded store; each connection count is followed at
# once by nginx's `return 200` driven by the same script (same requests, same cost to wrk), so a
# change in the machine's load hits both sides of a ratio alike.
scenario_session() {
    local conns
    for conns in 64 512; do
        run_wrk "GET /v1/session" "$conns" "http://127.0.0.1:$SERVE_PORT/v1/session" bench/session.lua
        run_wrk "nginx return 200" "$conns" "http://127.0.0.1:$NGINX_PORT/v1/session" bench/session.lua
    done
}

# ratio_lines: GET /v1/session's throughput over nginx's, per connection count.
ratio_lines() {
    local conns a b
    for conns in 64 512; do
        a=${RPS["GET /v1/session@$conns"]:-}
        b=${RPS["nginx return 200@$conns"]:-}
        if [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] && awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
            awk -v a="$a" -v b="$b" -v c="$conns" 'BEGIN {
                r = a / b
                printf("ratio wxlogin/nginx @%s: %.2f   (goal >= 0.70%s)\n", c, r, (r >= 0.7) ? "" : ": below")
            }'
        else
            echo "ratio wxlogin/nginx @$conns: n/a (a run failed)"
        fi
    done
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
    ratio_lines
    echo
    echo "store: $SESSIONS seeded sessions of $USERS users in SQLite ($(du -k "$TMP/wxlogin.db" | cut -f1) KiB);" \
        "nginx: $(nginx_workers) worker processes"
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
    [[ $SESSIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SESSIONS must be a positive whole number"
    [[ $USERS =~ ^[1-9][0-9]*$ ]] || die "BENCH_USERS must be a positive whole number"
    [[ -x $PY ]] || die "$PY not found (it seeds the session store)"
    [[ -x $NGINX ]] || die "$NGINX not found (Debian: apt-get install nginx-light, or 'make deps')"

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/wxlogin-bench.XXXXXX")
    RUN_ID=$(printf '%x%04x%04x' "$(date +%s)" "$$" "$RANDOM")
    raise_fd_limit

    start_mock
    seed_store
    start_serve
    echo "bench: wxlogin on 127.0.0.1:$SERVE_PORT, mock on 127.0.0.1:$MOCK_PORT," \
        "$(nproc 2>/dev/null || echo '?') cores, wrk -t$WRK_THREADS, ${DURATION}s per run," \
        "fd limit $(ulimit -Sn)" >&2
    check_sessions
    start_nginx

    warm_up
    scenario_openid
    scenario_session

    report
}

main "$@"
